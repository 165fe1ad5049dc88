"""A CloudWatch Logs Insights query, run over log lines here: the subset of the query
language docs/operations.md uses, so that the tests can run each documented query against
what the real bootstrap printed and check that it shows the cause.

    rows = insights.run(query, lines)     # lines: the log lines (JSON text or dicts)

Supported, as CloudWatch defines them: commands separated by `|`; `fields a, b`;
`filter` with `=`, `!=`, `<`, `<=`, `>`, `>=` against a "string" or a number, `like /re/`
and `like "text"`, `in ["a", "b"]`, `ispresent(f)`, `not`, `and`, `or` and parentheses;
`stats` with count(*), count(f), sum, avg, min, max, latest, earliest (`as name`), `by`
fields or bin(Nm|Ns|Nh); `sort f [asc|desc]`; `limit N`; `# comments`. Fields are the
JSON line's top-level keys (nested ones as a.b), @timestamp (from "timestamp", or the
EMF line's _aws.Timestamp) and @message (the line). Anything else raises
UnsupportedQuery, so a documented query that could not be checked fails its test.
"""
import datetime
import json
import re


class UnsupportedQuery(Exception):
    pass


_TOKEN = re.compile(r"""\s*(?:
    (?P<str>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
  | (?P<re>/(?:[^/\\]|\\.)+/)
  | (?P<num>-?\d+(?:\.\d+)?)
  | (?P<op><=|>=|!=|=|<|>|\(|\)|,|\[|\]|\*)
  | (?P<word>[@A-Za-z_][A-Za-z0-9_.@]*)
)""", re.X)


def _tokens(text):
    out, pos = [], 0
    text = text.strip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise UnsupportedQuery(f"cannot read {text[pos:pos + 30]!r}")
        kind = m.lastgroup
        val = m.group(kind)
        if kind == "str":
            val = json.loads(val) if val[0] == '"' else val[1:-1].replace("\\'", "'")
        elif kind == "num":
            val = float(val)
        elif kind == "re":
            val = re.compile(val[1:-1])
        out.append((kind, val))
        pos = m.end()
    return out


def _split_pipes(query):
    """The commands of a query: comments dropped, split at | outside strings and regexes."""
    text = "\n".join(line for line in query.splitlines() if not line.strip().startswith("#"))
    parts, cur, quote = [], "", None
    for ch in text:
        if quote:
            cur += ch
            if ch == quote and not cur.endswith("\\" + ch):
                quote = None
        elif ch in "\"'/":
            quote = ch
            cur += ch
        elif ch == "|":
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    parts.append(cur)
    return [p.strip() for p in parts if p.strip()]


def _value(rec, name):
    if name in rec:
        return rec[name]
    cur = rec
    for part in name.split("."):
        if not isinstance(cur, dict) or part not in cur:
            return None
        cur = cur[part]
    return cur


class _Parser:
    """filter expressions: or > and > not > comparison."""

    def __init__(self, tokens):
        self.t, self.i = tokens, 0

    def peek(self, val=None):
        if self.i >= len(self.t):
            return None
        tok = self.t[self.i]
        return tok if val is None or tok[1] == val else None

    def take(self, val=None):
        tok = self.peek(val)
        if tok is None:
            raise UnsupportedQuery(f"expected {val or 'more'} at token {self.i}")
        self.i += 1
        return tok

    def expr(self):
        left = self.conj()
        while self.peek("or"):
            self.take()
            a, b = left, self.conj()
            left = lambda r, a=a, b=b: a(r) or b(r)
        return left

    def conj(self):
        left = self.neg()
        while self.peek("and"):
            self.take()
            a, b = left, self.neg()
            left = lambda r, a=a, b=b: a(r) and b(r)
        return left

    def neg(self):
        if self.peek("not"):
            self.take()
            inner = self.neg()
            return lambda r: not inner(r)
        return self.atom()

    def atom(self):
        if self.peek("("):
            self.take()
            e = self.expr()
            self.take(")")
            return e
        kind, name = self.take()
        if kind != "word":
            raise UnsupportedQuery(f"a field name expected, got {name!r}")
        if name == "ispresent":
            self.take("(")
            _, field = self.take()
            self.take(")")
            return lambda r: _value(r, field) is not None
        if self.peek("like"):
            self.take()
            kind, pat = self.take()
            if kind == "str":
                return lambda r: isinstance(_value(r, name), str) and pat in _value(r, name)
            if kind == "re":
                return lambda r: isinstance(_value(r, name), str) and \
                    pat.search(_value(r, name)) is not None
            raise UnsupportedQuery("like takes a string or a /regex/")
        if self.peek("in"):
            self.take()
            self.take("[")
            vals = []
            while not self.peek("]"):
                vals.append(self.take()[1])
                if self.peek(","):
                    self.take()
            self.take("]")
            return lambda r: _value(r, name) in vals
        op = self.take()[1]
        kind, want = self.take()
        if op not in ("=", "!=", "<", "<=", ">", ">=") or kind not in ("str", "num"):
            raise UnsupportedQuery(f"comparison {op} {want!r}")

        def cmp(r):
            v = _value(r, name)
            if v is None or isinstance(v, bool):
                return op == "!=" and v is None
            if kind == "num" and not isinstance(v, (int, float)):
                return False
            if kind == "str" and not isinstance(v, str):
                return False
            return {"=": v == want, "!=": v != want, "<": v < want, "<=": v <= want,
                    ">": v > want, ">=": v >= want}[op]
        return cmp


def _timestamp(rec):
    t = rec.get("timestamp")
    if isinstance(t, str):
        return datetime.datetime.strptime(t, "%Y-%m-%dT%H:%M:%S.%fZ").replace(
            tzinfo=datetime.timezone.utc).timestamp()
    aws = rec.get("_aws")
    if isinstance(aws, dict) and isinstance(aws.get("Timestamp"), (int, float)):
        return aws["Timestamp"] / 1000
    return 0.0


def _records(lines):
    out = []
    for n, line in enumerate(lines):
        if isinstance(line, dict):
            rec, raw = dict(line), json.dumps(line)
        else:
            try:
                rec = json.loads(line)
            except ValueError:
                rec = {}
            raw = line
            if not isinstance(rec, dict):
                rec = {}
        rec["@message"] = raw
        rec["@timestamp"] = _timestamp(rec)
        rec["@n"] = n
        out.append(rec)
    return out


_AGG = {"count", "sum", "avg", "min", "max", "latest", "earliest"}


def _stats(spec, recs):
    toks = _tokens(spec)
    p = _Parser(toks)
    aggs = []
    while True:
        _, fn = p.take()
        if fn not in _AGG:
            raise UnsupportedQuery(f"stats function {fn}")
        p.take("(")
        kind, arg = p.take()
        p.take(")")
        name = f"{fn}({arg})" if kind == "word" else f"{fn}(*)"
        if p.peek("as"):
            p.take()
            name = p.take()[1]
        aggs.append((fn, None if arg == "*" else arg, name))
        if not p.peek(","):
            break
        p.take()
    groups = []
    if p.peek("by"):
        p.take()
        while True:
            _, g = p.take()
            if g == "bin":
                p.take("(")
                span = ""
                while not p.peek(")"):
                    v = p.take()[1]
                    span += str(int(v)) if isinstance(v, float) else str(v)
                p.take(")")
                m = re.fullmatch(r"(\d+)([smh])", span)
                if not m:
                    raise UnsupportedQuery(f"bin({span})")
                secs = int(m.group(1)) * {"s": 1, "m": 60, "h": 3600}[m.group(2)]
                groups.append((f"bin({span})",
                               lambda r, s=secs: r["@timestamp"] // s * s))
            else:
                groups.append((g, lambda r, g=g: _value(r, g)))
            if not p.peek(","):
                break
            p.take()
    if p.peek() is not None:
        raise UnsupportedQuery(f"stats: unread {toks[p.i:]}")
    buckets = {}
    for r in recs:
        key = tuple(f(r) for _, f in groups)
        buckets.setdefault(key, []).append(r)
    out = []
    for key, rs in buckets.items():
        row = {name: k for (name, _), k in zip(groups, key)}
        for fn, arg, name in aggs:
            vals = [_value(r, arg) for r in rs] if arg else rs
            present = [v for v in vals if v is not None]
            nums = [v for v in present if isinstance(v, (int, float)) and not isinstance(v, bool)]
            if fn == "count":
                row[name] = len(present)
            elif fn == "sum":
                row[name] = sum(nums)
            elif fn == "avg":
                row[name] = sum(nums) / len(nums) if nums else None
            elif fn in ("min", "max"):
                row[name] = (min if fn == "min" else max)(nums) if nums else None
            else:
                ordered = sorted((r for r in rs if _value(r, arg) is not None),
                                 key=lambda r: (r["@timestamp"], r["@n"]))
                pick = (ordered[-1] if fn == "latest" else ordered[0]) if ordered else None
                row[name] = _value(pick, arg) if pick else None
        row["@timestamp"] = max(r["@timestamp"] for r in rs)
        row["@n"] = max(r["@n"] for r in rs)
        out.append(row)
    return out


def run(query, lines):
    """The rows the query returns over these log lines: dicts of the fields it shows."""
    recs = _records(lines)
    shown = None
    for cmd in _split_pipes(query):
        word, _, rest = cmd.partition(" ")
        rest = rest.strip()
        if word == "fields":
            shown = [t[1] for t in _tokens(rest) if t[0] == "word"]
        elif word == "filter":
            p = _Parser(_tokens(rest))
            pred = p.expr()
            if p.peek() is not None:
                raise UnsupportedQuery(f"filter: unread {p.t[p.i:]}")
            recs = [r for r in recs if pred(r)]
        elif word == "stats":
            recs = _stats(rest, recs)
            shown = [k for k in recs[0] if not k.startswith("@")] if recs else []
        elif word == "sort":
            toks = _tokens(rest)
            field = toks[0][1]
            desc = len(toks) > 1 and toks[1][1] == "desc"
            recs = sorted(recs, key=lambda r: (_value(r, field) is None, _value(r, field) or 0),
                          reverse=desc)
            if desc:  # missing values last either way
                recs = [r for r in recs if _value(r, field) is not None] + \
                    [r for r in recs if _value(r, field) is None]
        elif word == "limit":
            recs = recs[:int(rest)]
        else:
            raise UnsupportedQuery(f"command {word!r}")
    if shown is None:
        shown = ["@timestamp", "@message"]
    return [{f: _value(r, f) for f in shown} for r in recs]
