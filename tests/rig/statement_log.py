"""What the function sent to the server, read back from the server's own statement
log, and the statements in it that would leave state in a session.

A pooler in transaction mode (pgbouncer, RDS Proxy) hands a server connection to
another client after each transaction; anything a client leaves in the session
(a SET, a named prepared statement, a temporary table, an advisory lock, a
LISTEN, a cursor WITH HOLD) then leaks into another client's transactions, and
RDS Proxy "pins" the client to its own server connection instead, which ends
the multiplexing.  So the function may only send transaction-scoped state: SET
LOCAL after BEGIN, pg_advisory_xact_lock, unnamed statements.

    srv = pg.Server(conf=statement_log.SERVER_CONF)
    ...                                     # run the function against srv (or a pooler)
    log = statement_log.read(srv)           # every logged statement, in order
    bad = statement_log.session_state(log)  # [(session, statement, why)]; [] is clean

The server writes its log as CSV (one record per statement, multi-line SQL
quoted), so no line guessing is needed; each record names its backend
(session_id) and the application_name in force when it was logged.
"""
import csv
import glob
import os
import re

APP = "login-etl"  # the function's application_name (function/pg_conn.c)

SERVER_CONF = [
    "logging_collector = on",
    "log_destination = 'csvlog'",
    "log_directory = 'statements'",
    "log_filename = 'postgres'",
    "log_file_mode = 0644",
    "log_rotation_age = 0",
    "log_rotation_size = 0",
    "log_statement = 'all'",
    "log_connections = on",
]

# csvlog columns (the same in PostgreSQL 14 to 17)
_USER, _SESSION, _SEVERITY, _MESSAGE, _APP = 1, 5, 11, 13, 22

# What a pooler itself sends when it hands a server connection to a client whose
# startup parameters differ from the connection's (pgbouncer's "varcache"):
# SET of the parameters it tracks, logged before the SET takes effect, so under
# the previous application_name.  They are the pooler's, not the client's.
_POOLER_SET = re.compile(
    r"^(SET (application_name|client_encoding|DateStyle|TimeZone|"
    r"standard_conforming_strings)='[^']*';)+$", re.I)


class Entry:
    __slots__ = ("session", "user", "app", "kind", "sql")

    def __init__(self, session, user, app, kind, sql):
        self.session, self.user, self.app, self.kind, self.sql = session, user, app, kind, sql

    def __repr__(self):
        return f"[{self.session} {self.user} app={self.app}] {self.kind}: {self.sql[:200]!r}"


def read(srv):
    """Every statement the server logged, in order, as Entry objects.  kind is
    "statement" (simple query), "execute <name>" (extended protocol; <unnamed>
    for an unnamed statement), or "connect"."""
    out = []
    for path in sorted(glob.glob(os.path.join(srv.data, "statements", "*.csv"))):
        with open(path, newline="", encoding="utf-8", errors="replace") as f:
            for rec in csv.reader(f):
                if len(rec) <= _APP or rec[_SEVERITY] != "LOG":
                    continue
                msg = rec[_MESSAGE]
                if msg.startswith("connection authorized"):
                    out.append(Entry(rec[_SESSION], rec[_USER], rec[_APP], "connect", ""))
                    continue
                m = re.match(r"^(statement|execute [^:]+|bind [^:]+|parse [^:]+): (.*)$", msg,
                             re.S)
                if m:
                    out.append(Entry(rec[_SESSION], rec[_USER], rec[_APP], m.group(1),
                                     m.group(2)))
    return out


def split_sql(sql):
    """The statements of a simple query string, split at top-level semicolons
    (quotes, dollar quotes, quoted identifiers and comments respected),
    stripped, empty ones dropped."""
    out, cur, i, n = [], [], 0, len(sql)
    while i < n:
        c = sql[i]
        if c in "'\"":
            j = i + 1
            while j < n:
                if sql[j] == c:
                    if j + 1 < n and sql[j + 1] == c:
                        j += 2
                        continue
                    break
                j += 1
            cur.append(sql[i:j + 1])
            i = j + 1
        elif c == "$":
            m = re.match(r"\$([A-Za-z_][A-Za-z_0-9]*)?\$", sql[i:])
            if m:
                tag = m.group(0)
                j = sql.find(tag, i + len(tag))
                j = n if j < 0 else j + len(tag)
                cur.append(sql[i:j])
                i = j
            else:
                cur.append(c)
                i += 1
        elif sql.startswith("--", i):
            j = sql.find("\n", i)
            i = n if j < 0 else j
        elif sql.startswith("/*", i):
            j = sql.find("*/", i + 2)
            i = n if j < 0 else j + 2
            cur.append(" ")
        elif c == ";":
            out.append("".join(cur).strip())
            cur = []
            i += 1
        else:
            cur.append(c)
            i += 1
    out.append("".join(cur).strip())
    return [s for s in out if s]


_BEGIN = re.compile(r"^(BEGIN|START\s+TRANSACTION)\b", re.I)
_END = re.compile(r"^(COMMIT|END|ROLLBACK|ABORT)\b(?!\s+PREPARED)", re.I)
# Each rule: (pattern, why).  Checked against one statement, comments removed.
_RULES = [
    # SET CONSTRAINTS, like SET LOCAL and SET TRANSACTION, lasts until the
    # transaction ends (checked below to be inside one).
    (re.compile(r"^SET\s+(?!LOCAL\b)(?!TRANSACTION\b)(?!CONSTRAINTS\b)", re.I),
     "a session SET (only SET LOCAL, inside a transaction, ends with it)"),
    (re.compile(r"^RESET\b", re.I), "RESET changes session state"),
    (re.compile(r"^DISCARD\b", re.I), "DISCARD is the pooler's business"),
    (re.compile(r"^(PREPARE|DEALLOCATE)\b", re.I), "a named prepared statement"),
    (re.compile(r"\bCREATE\s+(GLOBAL\s+|LOCAL\s+)?(TEMP|TEMPORARY)\b", re.I),
     "a temporary table lives as long as the session"),
    (re.compile(r"\bpg_(try_)?advisory_lock(_shared)?\s*\(", re.I),
     "a session-level advisory lock (pg_advisory_xact_lock ends with the transaction)"),
    (re.compile(r"^(LISTEN|UNLISTEN)\b", re.I), "LISTEN holds the session"),
    (re.compile(r"\bWITH\s+HOLD\b", re.I), "a cursor WITH HOLD outlives the transaction"),
    (re.compile(r"\bset_config\s*\([^)]*,\s*false\s*\)", re.I),
     "set_config(..., false) is a session SET"),
    (re.compile(r"^LOAD\b", re.I), "LOAD changes the session"),
]


def function_sessions(entries):
    """The backends that served the function: any statement logged under its
    application_name (directly connected, or through a pooler)."""
    return {e.session for e in entries if e.app == APP and e.kind != "connect"}


def session_state(entries):
    """The statements of the function's backends that change session state, as
    [(session, statement, why)].  Statements of those backends logged under
    another application_name must be a pooler's parameter sync, or they are
    reported too (someone else used the function's connection)."""
    sessions = function_sessions(entries)
    in_txn = {}
    bad = []
    for e in entries:
        if e.session not in sessions or e.kind == "connect":
            continue
        if e.app != APP:
            if e.kind == "statement" and _POOLER_SET.match(e.sql.strip()):
                continue
            bad.append((e.session, e.sql, f"sent under application_name {e.app!r}, not the "
                                          "function's and not a pooler's parameter sync"))
            continue
        if e.kind.startswith("execute ") and e.kind != "execute <unnamed>":
            bad.append((e.session, e.sql, f"a named prepared statement ({e.kind})"))
        if e.kind.startswith(("bind ", "parse ")) and not e.kind.endswith("<unnamed>"):
            bad.append((e.session, e.sql, f"a named prepared statement ({e.kind})"))
        for stmt in split_sql(e.sql):
            if _BEGIN.match(stmt):
                in_txn[e.session] = True
            elif _END.match(stmt):
                in_txn[e.session] = False
            elif re.match(r"^SET\s+(LOCAL|CONSTRAINTS)\b", stmt, re.I) and \
                    not in_txn.get(e.session):
                bad.append((e.session, stmt, "SET LOCAL or SET CONSTRAINTS outside a "
                                             "transaction block does nothing (and warns)"))
            for rx, why in _RULES:
                if rx.search(stmt):
                    bad.append((e.session, stmt, why))
    return bad


def describe(bad, limit=8):
    return "\n".join(f"  {why}: {stmt[:160]!r}" for _, stmt, why in bad[:limit]) + (
        f"\n  ... and {len(bad) - limit} more" if len(bad) > limit else "")
