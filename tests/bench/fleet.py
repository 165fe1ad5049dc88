"""The fleet figures of `make bench` (tests/bench/README.md, "Fleet"):

 7. 1, 2, 4 and 8 release bootstraps at once against one server, each behind its
    own Runtime API emulator, connected directly and through pgbouncer
    (pool_mode = transaction, fewer server connections than functions):
    aggregate records/s, server CPU-seconds per 100,000 records, lock waits,
    retries, rows lost or doubled; and once with every batch delivered twice
    at once (to two functions, in opposite record orders), the worst case of
    SQS redelivering while the first delivery is still being handled.
 8. History: the cost of the next 80,000 records on an empty database and with
    5,000,000 messages already committed in the ledger (a preload done with SQL,
    in the shape of the ledger the function created).

Run alone: tests/bench/bench.py --fleet (7), --history (8), or both flags.
The functions of the bench module (Runner, cpu_of, server_pids, ...) are
passed in as `B` so that nothing is copied.
"""
import collections
import json
import os
import re
import statistics
import threading
import time

from events.generate import event_bytes, fill_events, fit_event, make_event, make_messages
from rig import expect, pg, pgbouncer

COUNTS = (1, 2, 4, 8)
POOL = 3  # pgbouncer server connections: fewer than functions from 4 on
PER_EVENT = 2500  # records per event: 32 events share evenly among 1, 2, 4 and 8
LOCK_WAIT_MS = 20  # deadlock_timeout: a lock wait longer than this is logged

# The bench's servers trade durability for speed like the main bench's
# (fsync off, asynchronous commit); lock waits over LOCK_WAIT_MS are logged.
FLEET_CONF = ["log_lock_waits = on", f"deadlock_timeout = '{LOCK_WAIT_MS}ms'",
              "max_connections = 50"]


def _now_ms():
    return int(time.time() * 1000)


# --- data --------------------------------------------------------------------------------
def _copy_text(v):
    """A value as COPY's text format writes it."""
    if v is None:
        return "\\N"
    return (str(v).replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n")
            .replace("\r", "\\r"))


def expected_rows(msgs):
    """The multiset of user_logins rows, as COPY text lines, the messages must
    produce (computed independently of the C code by tests/rig/expect.py)."""
    out = collections.Counter()
    for m in msgs:
        r = expect.row(m["body"], m["sentTimestamp"])
        if r is not None:
            out["\t".join(_copy_text(r[c]) for c in ("user_id", "device_type", "masked_ip",
                                                      "masked_device_id", "locale",
                                                      "app_version", "create_date"))] += 1
    return out


def fleet_data(records, seed):
    """Recent messages (sent within the last hour, as a live queue's are), cut
    into events of PER_EVENT records."""
    msgs = make_messages(records, seed=seed, start_ms=_now_ms() - 3_600_000)
    events = [event_bytes(make_event(msgs[i:i + PER_EVENT]))
              for i in range(0, len(msgs), PER_EVENT)]
    reversed_events = [event_bytes(make_event(msgs[i:i + PER_EVENT][::-1], receive_count=2))
                       for i in range(0, len(msgs), PER_EVENT)]
    return msgs, events, reversed_events


def check_rows(srv, want):
    """(lost, doubled) rows of user_logins against the expected multiset."""
    out = B.superuser_psql(srv, "COPY user_logins (user_id, device_type, masked_ip, "
                                "masked_device_id, locale, app_version, create_date) TO STDOUT")
    got = collections.Counter(out.splitlines())
    lost = sum((want - got).values())
    extra = got - want
    return lost, sum(extra.values())


def ledger_table(srv):
    """The function's ledger table: the newest layout's when several exist (an
    upgraded database keeps the earlier one beside it)."""
    name = B.superuser_psql(srv, "SELECT relname FROM pg_class WHERE relname LIKE "
                                 "'login\\_etl\\_ledger%' AND relkind IN ('r', 'p') "
                                 "AND NOT relispartition ORDER BY relname DESC LIMIT 1").strip()
    if not name:
        raise RuntimeError("bench: the function created no ledger table")
    return name


def empty_tables(srv, extra=""):
    """TRUNCATE of user_logins and the function's ledger (then `extra` SQL)."""
    B.superuser_psql(srv, f"TRUNCATE user_logins, {ledger_table(srv)};{extra}")


# --- measurement helpers -----------------------------------------------------------------
class CpuSampler:
    """CPU seconds used by a set of processes (the server's, found anew at each
    sample, and any given pids) between start() and stop(), sampled every
    0.2 s so that a process that exits during the run still counts (up to
    its last sample)."""

    def __init__(self, srv, extra_pids=()):
        self.srv, self.extra = srv, list(extra_pids)
        self.first, self.last = {}, {}
        self.kind = {}  # pid -> the server process's kind, from its title
        self._stop = threading.Event()
        self._thread = None

    def _sample(self, initial=False):
        for group, pids in (("server", B.server_pids(self.srv)), ("extra", self.extra)):
            for p in pids:
                c = B.cpu_of(p)
                key = (group, p)
                if key not in self.first:
                    # A process born during the run counts from zero.
                    self.first[key] = c if initial else 0.0
                    self.kind[p] = _process_kind(p)
                if c >= self.last.get(key, 0.0):
                    self.last[key] = c

    def start(self):
        self._sample(initial=True)
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self):
        while not self._stop.wait(0.2):
            self._sample()

    def stop(self):
        self._stop.set()
        self._thread.join()
        self._sample()
        out = {"server": 0.0, "extra": 0.0, "by_kind": collections.Counter()}
        for key, c in self.last.items():
            out[key[0]] += c - self.first[key]
            if key[0] == "server":
                out["by_kind"][self.kind.get(key[1], "?")] += c - self.first[key]
        return out


def _process_kind(pid):
    """A server process's kind from its title ("postgres: walwriter" ->
    "walwriter"; a client backend -> "backend"), or "?"."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            title = f.read().split(b"\0")[0].decode("utf-8", "replace")
    except OSError:
        return "?"
    if not title.startswith("postgres: "):
        return "postmaster"
    rest = title[len("postgres: "):]
    known = ("checkpointer", "background writer", "walwriter", "autovacuum", "logical",
             "stats", "archiver")
    return next((k for k in known if rest.startswith(k)), "backend")


def _log_size(srv):
    try:
        return os.path.getsize(srv.log)
    except OSError:
        return 0


def lock_events(srv, since):
    """Lock waits longer than LOCK_WAIT_MS and deadlocks, from the server log
    written after offset `since`: (waits, deadlocks, {what was waited for: count}),
    e.g. "transaction" (a row another transaction inserted: a shared message id),
    "extension of relation" (backends growing the same table at once)."""
    with open(srv.log, "rb") as f:
        f.seek(since)
        text = f.read().decode("utf-8", "replace")
    kinds = collections.Counter(
        m.group(1) for m in re.finditer(r"still waiting for \w+ on (extension of relation|"
                                        r"transaction|tuple|relation|advisory lock|\w+)", text))
    return sum(kinds.values()), text.count("deadlock detected"), dict(kinds)


def read_log(path):
    """The JSON log lines a function printed (its output file), as dicts."""
    out = []
    with open(path, "rb") as f:
        for raw in f.read().decode("utf-8", "replace").splitlines():
            if raw.startswith("{"):
                try:
                    out.append(json.loads(raw))
                except ValueError:
                    pass
    return out


# --- 7. the fleet ------------------------------------------------------------------------
def one_config(tmp, srv, bouncer, n, events, doubled_events, want, valid, label):
    """n functions at once on `events` shared round-robin (and, when
    doubled_events, each event also to the next function, its records in
    reverse order).  Returns the figures of the run."""
    env = bouncer.env() if bouncer else None
    runners = []
    try:
        for i in range(n):
            runners.append(B.Runner(tmp, srv, env=env, name=f"fleet-{label}-{n}-{i}"))
        # Steady state, as between invocations: each function has its
        # connection open (through the pooler: has logged in to it).
        for i, r in enumerate(runners):
            warm = make_messages(1, seed=2_000_000 + i, invalid_rate=0,
                                 start_ms=_now_ms() - 60_000)
            r.run([event_bytes(fit_event(warm)[0])])
        empty_tables(srv, " CHECKPOINT;")
        skip = [len(read_log(r.out_path)) for r in runners]
        pids = [r.proc.pid for r in runners]
        bouncer_pids = [bouncer.pid()] if bouncer else []
        cpu_srv = CpuSampler(srv, bouncer_pids)
        log0 = _log_size(srv)
        busy0, _ = B.machine_busy()
        f0 = sum(B.cpu_of(p) for p in pids)
        e0 = time.process_time()
        cpu_srv.start()
        t0 = time.monotonic()
        queued = []
        for k, ev in enumerate(events):
            queued.append(runners[k % n].emu.enqueue(ev, timeout_s=900))
            if doubled_events:
                queued.append(runners[(k + 1) % n].emu.enqueue(doubled_events[k],
                                                               timeout_s=900))
        results = []
        for k in range(len(events)):
            for j, who in enumerate((k % n, (k + 1) % n) if doubled_events else (k % n,)):
                rid = queued[k * (2 if doubled_events else 1) + j]
                results.append(runners[who].emu.wait_result(rid, timeout=600))
        secs = max(r.time for r in results) - t0
        f1 = sum(B.cpu_of(p) for p in pids)
        e1 = time.process_time()
        cpu = cpu_srv.stop()
        busy1, _ = B.machine_busy()
        waits, deadlocks, wait_kinds = lock_events(srv, log0)
    finally:
        for r in runners:
            r.close()
    errors = sum(1 for r in results if r.kind != "response")
    listed = sum(len(r.json()["batchItemFailures"]) for r in results if r.kind == "response")
    rows = int(B.superuser_psql(srv, "SELECT count(*) FROM user_logins").strip())
    lost, doubled = check_rows(srv, want)
    ledger = int(B.superuser_psql(srv, f"SELECT count(*) FROM {ledger_table(srv)}").strip())
    batches, extra_attempts, failed = 0, 0, 0
    for r, s in zip(runners, skip):
        lines = read_log(r.out_path)[s:]
        batches += sum(1 for l in lines if l.get("message") == "batch done")
        extra_attempts += sum(max(0, int(l.get("attempts", 1)) - 1) for l in lines
                              if l.get("message") == "batch done")
        failed += sum(1 for l in lines if l.get("message") == "database attempt failed")
    own = (f1 - f0) + cpu["server"] + cpu["extra"] + (e1 - e0)
    out = {"functions": n, "via": label, "seconds": secs, "invocation_errors": errors,
           "listed": listed, "rows": rows, "ledger": ledger, "lost": lost, "doubled": doubled,
           "valid": valid, "server_cpu_s": cpu["server"], "pooler_cpu_s": cpu["extra"],
           "functions_cpu_s": f1 - f0, "emulator_cpu_s": e1 - e0,
           "other_cpu_s": max(0.0, (busy1 - busy0) - own), "lock_waits": waits,
           "lock_wait_kinds": wait_kinds,
           "deadlocks": deadlocks, "batches": batches, "extra_attempts": extra_attempts,
           "failed_attempts": failed, "doubled_delivery": bool(doubled_events)}
    return out


def fleet(tmp, records, seed, repeats):
    """Figure 7.  Returns its dict."""
    B.say(f"\n[fleet] {records:,} records as events of {PER_EVENT:,}, shared among 1, 2, 4 and "
          f"8 functions; directly and through pgbouncer (transaction pooling, {POOL} server "
          "connections)")
    msgs, events, rev = fleet_data(records, seed)
    want = expected_rows(msgs)
    valid = sum(want.values())
    srv = pg.Server(async_commit=True, conf=FLEET_CONF)
    bouncer = None
    out = {"records": records, "per_event": PER_EVENT, "events": len(events), "valid": valid,
           "pool": POOL, "repeats": repeats, "runs": [],
           "load_start": [round(x, 2) for x in os.getloadavg()]}
    try:
        out["server_version"] = srv.scalar("SHOW server_version")
        bouncer = pgbouncer.Bouncer(srv, pool_size=POOL)
        out["pgbouncer_version"] = bouncer.version()
        # The function creates its tables (one function, one message) before
        # anything is timed.
        r = B.Runner(tmp, srv, name="fleet-create")
        try:
            r.run([event_bytes(fit_event(make_messages(1, seed=3_000_000, invalid_rate=0,
                                                       start_ms=_now_ms()))[0])])
        finally:
            r.close()
        plan = [(n, via) for via in ("direct", "pgbouncer") for n in COUNTS]
        plan.append((8, "pgbouncer, every batch twice"))
        for n, via in plan:
            runs = []
            for rep in range(repeats):
                x = one_config(tmp, srv, bouncer if via != "direct" else None, n, events,
                               rev if "twice" in via else None, want, valid,
                               via.split(",")[0] + ("-twice" if "twice" in via else ""))
                x["via"] = via
                runs.append(x)
                B.note(f"{via:>28}, {n} function{'s' if n > 1 else ' '}: {x['seconds']:.2f} s, "
                       f"{records / x['seconds']:,.0f} records/s, server "
                       f"{x['server_cpu_s']:.2f} CPU-s, lock waits {x['lock_waits']}, "
                       f"deadlocks {x['deadlocks']}, extra attempts {x['extra_attempts']}, "
                       f"lost {x['lost']}, doubled {x['doubled']}"
                       + (f", {x['invocation_errors']} invocation errors"
                          if x["invocation_errors"] else ""))
            med = sorted(runs, key=lambda x: x["seconds"])[len(runs) // 2]
            med = dict(med, all_seconds=[x["seconds"] for x in runs],
                       all_server_cpu_s=[x["server_cpu_s"] for x in runs],
                       lost=max(x["lost"] for x in runs), doubled=max(x["doubled"] for x in runs),
                       lock_waits=sum(x["lock_waits"] for x in runs),
                       lock_wait_kinds=dict(sum((collections.Counter(x["lock_wait_kinds"])
                                                 for x in runs), collections.Counter())),
                       deadlocks=sum(x["deadlocks"] for x in runs),
                       extra_attempts=sum(x["extra_attempts"] for x in runs),
                       failed_attempts=sum(x["failed_attempts"] for x in runs),
                       invocation_errors=sum(x["invocation_errors"] for x in runs))
            out["runs"].append(med)
    finally:
        if bouncer:
            bouncer.destroy()
        srv.destroy()
    out["load_end"] = [round(x, 2) for x in os.getloadavg()]
    return out


# --- 8. history ----------------------------------------------------------------------------
HISTORY_CONF = ["full_page_writes = on"]  # as on RDS: the first change of a page after a
# checkpoint writes the whole page to WAL, which is what makes random index inserts dear


DAY_MS = 86_400_000


def sink_source():
    """The Postgres sink's source, function/pg*.c and pg*.h, as one text: the bench reads
    a few of its constants, wherever in the sink's files they are defined."""
    return "\n".join(p.read_text() for p in sorted((B.ROOT / "function").glob("pg*.[ch]")))


def retention_days():
    """How old, in days, a ledger entry must be for the function's retention to
    delete it: the largest of the ages the sink defines for it
    (LEDGER_RETENTION since commit, LEDGER_SWEEP_AFTER since sending, where
    defined), or None when the function keeps no retention.  Read from the
    source so that the bench follows the function."""
    src = sink_source()
    days = [int(d) for d in re.findall(
        r'#define\s+LEDGER_(?:RETENTION|SWEEP_AFTER)\s+"(\d+) days"', src)]
    return max(days) if days else None


def ledger_layout(srv, table):
    """The ledger's columns [(name, type, default)], its key columns and
    whether it is partitioned, as the function created it."""
    cols = B.superuser_psql(srv, "SELECT attname || '|' || format_type(atttypid, atttypmod) "
                                 "|| '|' || coalesce(pg_get_expr(adbin, adrelid), '') "
                                 "FROM pg_attribute LEFT JOIN pg_attrdef "
                                 "ON adrelid = attrelid AND adnum = attnum "
                                 f"WHERE attrelid = '{table}'::regclass AND attnum > 0 "
                                 "AND NOT attisdropped ORDER BY attnum").split("\n")
    cols = [tuple(c.split("|", 2)) for c in cols if c]
    key = B.superuser_psql(srv, "SELECT a.attname FROM pg_index i CROSS JOIN LATERAL "
                                "unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, pos) "
                                "JOIN pg_attribute a ON a.attrelid = i.indrelid "
                                "AND a.attnum = k.attnum "
                                f"WHERE i.indrelid = '{table}'::regclass AND i.indisprimary "
                                "ORDER BY k.pos").split()
    kind = B.superuser_psql(srv, f"SELECT relkind FROM pg_class WHERE oid = '{table}'::regclass")
    return cols, key, kind.strip() == "p"


def preload_sql(table, cols, key, count, span_ms, end_ms_ago=0):
    """INSERT ... SELECT generate_series of `count` ledger entries of the
    function's layout, sent and committed evenly over `span_ms` ending
    `end_ms_ago` before now (oldest first, in key order, so that the load is an
    append).  The entries look like SQS's: random UUID message ids,
    millisecond send times; every time column gets the entry's time."""
    step = span_ms / count
    t_ms = (f"(floor(extract(epoch FROM now()) * 1000)::bigint - {end_ms_ago + span_ms} "
            f"+ (g * {step})::bigint)")
    exprs, names = [], []
    for name, typ, default in cols:
        low = name.lower()
        if typ == "smallint" and low == "slot":
            # The day slot: the UTC day of the send time modulo the slots
            # (function/pg.c, ledger_slot).
            e = f"(({t_ms}) / {DAY_MS} % {slots()})::smallint"
        elif typ == "uuid":
            e = "gen_random_uuid()"
        elif typ == "text" or typ.startswith("character varying"):
            if "id" not in low:
                raise RuntimeError(f"preload: unknown text ledger column {name}")
            e = "gen_random_uuid()::text"
        elif typ.startswith("timestamp"):
            e = f"to_timestamp({t_ms} / 1000.0)"
        elif typ == "bigint":
            e = t_ms
        elif typ == "date":
            e = f"(to_timestamp({t_ms} / 1000.0) AT TIME ZONE 'UTC')::date"
        elif default:
            continue
        else:
            raise RuntimeError(f"preload: cannot fill ledger column {name} ({typ}); "
                               "teach tests/bench/fleet.py preload_sql its shape")
        exprs.append(f"{e} AS {name}")
        names.append(name)
    order = ", ".join(k for k in key if k in names) or "1"
    return (f"INSERT INTO {table} ({', '.join(names)}) SELECT * FROM ("
            f"SELECT {', '.join(exprs)} FROM generate_series(1, {count}) g) t ORDER BY {order}")


def slots():
    """The ledger's day slots (LEDGER_SLOTS in the sink, function/pg*)."""
    m = re.search(r"#define\s+LEDGER_SLOTS\s+(\d+)", sink_source())
    return int(m.group(1)) if m else 18


def expired_slot(srv, table, cols, key, entries):
    """Fills the slot the function's retention clears today, (today + 2) mod
    slots: `entries` entries sent (and committed) over the day 16 days ago,
    vacuumed (entries that old were vacuumed long ago).  Returns (slot,
    seconds the fill took)."""
    today = int(time.time() * 1000) // DAY_MS
    end_ago = int(time.time() * 1000) - (today - 15) * DAY_MS
    t = time.monotonic()
    B.superuser_psql(srv, preload_sql(table, cols, key, entries, DAY_MS - 1000, end_ago + 500)
                     + f";\nVACUUM ANALYZE {table};")
    return (today + 2) % slots(), time.monotonic() - t


def truncate_alone(srv, table, slot, repeats, fill):
    """The TRUNCATE step the function sends (LOCK, a re-check under the lock,
    TRUNCATE, one transaction: RET_TRUNCATE_SQL in function/pg.c), measured alone on a full slot: wall time and the
    server's CPU, `repeats` times, the slot filled again (fill()) before each."""
    out = []
    part = f"{table}_s{slot:02d}"
    for _ in range(repeats):
        fill()
        B.superuser_psql(srv, "CHECKPOINT;")
        n = int(B.superuser_psql(srv, f"SELECT count(*) FROM {part}").strip())
        # psql's \\timing: the statements' round trips on an open connection,
        # without psql's start and connect; the backend's own CPU (schedstat):
        # a session this short can start and end between two samples of
        # CpuSampler.
        schedstat = "SELECT 'cpu:' || split_part(pg_read_file('/proc/self/schedstat'), ' ', 1);\n"
        got = B.superuser_psql(srv, schedstat + "\\timing on\nBEGIN;\nSET LOCAL lock_timeout = 200;\n"
                                    f"LOCK TABLE {part} IN ACCESS EXCLUSIVE MODE;\n"
                                    f"DO $$ BEGIN IF (SELECT max(sent_at) FROM {part} "
                                    f"WHERE slot = {slot}) >= now() - interval '15 days' OR "
                                    f"(SELECT max(committed_at) FROM {part}) >= now() - "
                                    f"interval '15 days' OR EXISTS (SELECT 1 FROM {part} WHERE "
                                    f"slot < {slot} OR slot > {slot}) THEN RAISE SQLSTATE "
                                    "'55000'; END IF; END $$;\n"
                                    f"TRUNCATE {part};\nCOMMIT;\n\\timing off\n" + schedstat)
        secs = sum(B.timings(got))
        ns = [int(x) for x in re.findall(r"^cpu:(\d+)$", got, re.M)]
        out.append({"entries": n, "seconds": secs, "server_cpu_s": (ns[-1] - ns[0]) / 1e9})
    return out


def ledger_copy(srv, table, repeats):
    """The server's cost of the ledger COPY alone: the ids the function wrote
    (dumped from its ledger), by server-side binary COPY into (a) the function's
    ledger, emptied, and (b) the naive floor's ledger keyed by the id as text
    in the C collation (bench.py, FLOOR_DDL), in one transaction each; psql's
    \\timing and the backend's own CPU time (schedstat).  Returns
    {kind: {"seconds", "backend_cpu_s", "ids"}}."""
    d = srv.readable_dir("bench")
    own, text = os.path.join(d, "ledger.bin"), os.path.join(d, "ids-text.bin")
    cols = "slot, sent_at, message_id" if table.endswith("_v3") else "sent_at, message_id"
    where = "WHERE slot < 18" if table.endswith("_v3") else "WHERE message_id::text <> ''"
    B.superuser_psql(srv, f"COPY (SELECT {cols} FROM {table} {where}) TO '{own}' (FORMAT binary);\n"
                          f"COPY (SELECT message_id::text FROM {table} {where}) TO '{text}' "
                          "(FORMAT binary);")
    ids = int(B.superuser_psql(srv, f"SELECT count(*) FROM {table} {where}").strip())
    schedstat = "SELECT 'cpu:' || split_part(pg_read_file('/proc/self/schedstat'), ' ', 1);\n"
    res = {"function": [], "text_floor": []}
    for _ in range(repeats):
        for kind in res:
            if kind == "function":
                setup = f"TRUNCATE {table};\nCHECKPOINT;\n"
                copy = f"COPY {table} ({cols}) FROM '{own}' (FORMAT binary);\n"
            else:
                setup = ("DROP TABLE IF EXISTS floor_ledger;\nCREATE TABLE floor_ledger "
                         "(message_id text COLLATE \"C\" PRIMARY KEY, committed_at timestamptz "
                         "NOT NULL DEFAULT now());\nCHECKPOINT;\n")
                copy = f"COPY floor_ledger (message_id) FROM '{text}' (FORMAT binary);\n"
            out = B.superuser_psql(srv, setup + schedstat + "\\timing on\nBEGIN;\n" + copy +
                                   "COMMIT;\n\\timing off\n" + schedstat)
            ns = [int(x) for x in re.findall(r"^cpu:(\d+)$", out, re.M)]
            res[kind].append((sum(B.timings(out)), (ns[-1] - ns[0]) / 1e9))
    B.superuser_psql(srv, "DROP TABLE IF EXISTS floor_ledger;")
    return {k: {"seconds": statistics.median(x[0] for x in v),
                "backend_cpu_s": statistics.median(x[1] for x in v),
                "all_seconds": [x[0] for x in v], "ids": ids} for k, v in res.items()}


# Table, indexes and TOAST of a table and of any partitions it has.
def table_bytes_sql(table):
    return (f"SELECT coalesce((SELECT sum(pg_total_relation_size(relid)) FROM "
            f"pg_partition_tree('{table}') WHERE isleaf), pg_total_relation_size('{table}'))")


def history_run(srv, runner, table, events):
    """One measured pass of `events` through the running function: handler
    time (sum of metric Duration, i.e. net of the Runtime API and the
    emulator), wall time, server CPU, and ledger entries before and after;
    autovacuum runs that started during it."""
    # VACUUM first: autovacuum of the entries earlier runs inserted (or loaded)
    # would otherwise start at any moment, inside one run and not another;
    # it is the same work for every layout and left out of every run.
    B.superuser_psql(srv, f"TRUNCATE user_logins; VACUUM {table}; CHECKPOINT;")
    before = int(B.superuser_psql(srv, f"SELECT count(*) FROM {table}").strip())
    autovac = ("SELECT sum(autovacuum_count + autoanalyze_count) FROM pg_stat_all_tables")
    av0 = int(B.superuser_psql(srv, autovac).strip() or 0)
    skip = len(runner.durations_ms())
    cpu = CpuSampler(srv)
    cpu.start()
    secs, results = runner.run(events)
    c = cpu.stop()
    dur = runner.durations_ms()[skip:]
    after = int(B.superuser_psql(srv, f"SELECT count(*) FROM {table}").strip())
    written = int(B.superuser_psql(srv, "SELECT count(*) FROM user_logins").strip())
    return {"seconds": secs, "handler_s": sum(dur) / 1000, "server_cpu_s": c["server"],
            "server_by_kind": {k: round(v, 3) for k, v in c["by_kind"].items() if v >= 0.001},
            "invocation_errors": sum(1 for r in results if r.kind != "response"),
            "written": written, "pruned": before + written - after,
            "autovacuums": int(B.superuser_psql(srv, autovac).strip() or 0) - av0}


def history(tmp, preload, records, repeats):
    """Figure 8.  Returns its dict."""
    days = retention_days()
    B.say(f"\n[history] the next {records:,} records on an empty ledger and after "
          f"{preload:,} committed messages (full_page_writes on, CHECKPOINT before each run)")
    srv = pg.Server(async_commit=True, conf=FLEET_CONF + HISTORY_CONF)
    out = {"preload": preload, "records": records, "repeats": repeats, "retention_days": days,
           "load_start": [round(x, 2) for x in os.getloadavg()]}
    runner = None
    try:
        runner = B.Runner(tmp, srv, name="history")
        runner.run([event_bytes(fit_event(make_messages(1, seed=4_000_000, invalid_rate=0,
                                                        start_ms=_now_ms()))[0])])
        table = ledger_table(srv)
        cols, key, partitioned = ledger_layout(srv, table)
        out.update(ledger_table=table, ledger_columns=[f"{n} {t}" for n, t, _ in cols],
                   ledger_key=key, ledger_partitioned=partitioned)

        newest = [0]  # the newest SentTimestamp a run has sent so far

        def data(seed):
            # A run's messages were sent in the last 10 minutes, after any that
            # an earlier run sent, in the generator's order: as time goes on for
            # a real queue, each run's entries come after those already in the
            # ledger, in every phase alike.  (Generated as they are, 80,000
            # messages span about 47 minutes from 10 minutes ago: each run
            # would interleave with the previous run's entries in a ledger that
            # keeps them, and with none in one emptied before each run.)
            msgs = make_messages(records, seed=seed, start_ms=_now_ms() - 600_000)
            now = _now_ms()
            lo = max(now - 600_000, newest[0] + 1)
            t0, t1 = msgs[0]["sentTimestamp"], msgs[-1]["sentTimestamp"]
            for m in msgs:
                m["sentTimestamp"] = lo + (m["sentTimestamp"] - t0) * (now - lo) // max(1, t1 - t0)
            newest[0] = max(newest[0], msgs[-1]["sentTimestamp"])
            return fill_events(msgs)[0]

        # "history": the ledger's insert cost alone (nothing has expired);
        # "retention": the same history, and the function's retention busy.
        # The history's entries are spread over the days the ledger keeps: from
        # the start of the UTC day 15 days ago to now (with day slots, the days
        # whose slots are live; the slot retention clears today stays empty).
        now_ms = int(time.time() * 1000)
        span = now_ms - (now_ms // DAY_MS - 15) * DAY_MS
        day_entries = round(preload * DAY_MS / span)
        last_end = time.time()
        # "empty_again": the empty runs once more at the end, with the same
        # data: on a shared machine the load drifts over the minutes the
        # phases take, and this shows by how much.
        for phase in ("empty", "history") + (("retention",) if days else ()) + ("empty_again",):
            if phase != "retention":
                B.superuser_psql(srv, f"TRUNCATE user_logins, {table}; VACUUM ANALYZE;")
            if phase == "history":
                t = time.monotonic()
                B.superuser_psql(srv, preload_sql(table, cols, key, preload, span)
                                 + ";\nVACUUM ANALYZE;")
                out["preload_s"] = time.monotonic() - t
                out["ledger_bytes"] = int(B.superuser_psql(srv, table_bytes_sql(table)).strip())
                out["ledger_rows"] = int(B.superuser_psql(
                    srv, f"SELECT count(*) FROM {table}").strip())
                B.note(f"preloaded {out['ledger_rows']:,} ledger entries in "
                       f"{out['preload_s']:.0f} s: {out['ledger_bytes'] / 1e6:.0f} MB, "
                       f"{out['ledger_bytes'] / max(1, out['ledger_rows']):.0f} bytes each")
            runs = []
            for rep in range(repeats):
                if phase in ("empty", "empty_again"):
                    B.superuser_psql(srv, f"TRUNCATE {table};")
                elif phase == "retention" and partitioned:
                    # The steady state with day slots: inserts, and once a day
                    # a TRUNCATE of the slot of 16 days ago, full (a day's
                    # entries).  Each run is a fresh process (retention is
                    # once a day per process), warmed by one event whose
                    # retention step finds the slot full; the run's first
                    # batch sends the TRUNCATE: the whole day's clearing
                    # falls in this one run.
                    slot, fill_s = expired_slot(srv, table, cols, key, day_entries)
                    runner.close()
                    runner = B.Runner(tmp, srv, name=f"history-{rep}")
                    runner.run([event_bytes(fit_event(make_messages(
                        1, seed=4_000_001 + rep, invalid_rate=0, start_ms=_now_ms()))[0])])
                elif phase == "retention":
                    # The steady state of a full window: as many entries have
                    # passed the retention since the previous run ended as the
                    # run writes, for the function's own retention to delete.
                    # They are spread over that time (not bunched on one
                    # instant, which real traffic never is), all after where
                    # the previous run's retention stopped.
                    while time.time() - last_end < 3:
                        time.sleep(0.1)
                    span = int((time.time() - last_end) * 1000) - 50
                    # VACUUM: entries that old were vacuumed long ago (all-visible,
                    # hint bits set), as autovacuum does to a table that grows; and
                    # the previous run's deleted entries are gone, as autovacuum at
                    # the README's threshold would have removed them by then.
                    B.superuser_psql(srv, preload_sql(table, cols, key, records, span,
                                                      days * 86_400_000 + 10)
                                     + f";\nVACUUM {table};")
                evs = data(5_000 + rep + {"empty": 0, "history": 100, "retention": 200,
                                          "empty_again": 0}[phase])
                x = history_run(srv, runner, table, evs)
                last_end = time.time()
                runs.append(x)
                B.note(f"{phase}, run {rep + 1}: handler {x['handler_s']:.3f} s, wall "
                       f"{x['seconds']:.3f} s, server {x['server_cpu_s']:.2f} CPU-s, "
                       f"{x['written']:,} written, {x['pruned']:,} expired entries deleted, "
                       f"{x['autovacuums']} autovacuum/analyze runs meanwhile; server CPU by "
                       f"process {x['server_by_kind']}")
            if phase == "empty":
                # The ledger as the function itself wrote it (the last run's).
                out["function_ledger_bytes"] = int(B.superuser_psql(
                    srv, table_bytes_sql(table)).strip())
                out["function_ledger_rows"] = int(B.superuser_psql(
                    srv, f"SELECT count(*) FROM {table}").strip())
                # The ledger COPY of those ids alone against the text-keyed floor's.
                out["ledger_copy"] = ledger_copy(srv, table, repeats)
                lc = out["ledger_copy"]
                B.note(f"ledger COPY of {lc['function']['ids']:,} ids: the function's "
                       f"{lc['function']['seconds']:.3f} s ({lc['function']['backend_cpu_s']:.3f} "
                       f"CPU-s), text-keyed floor {lc['text_floor']['seconds']:.3f} s "
                       f"({lc['text_floor']['backend_cpu_s']:.3f} CPU-s)")
            if phase == "retention" and partitioned:
                slot = (int(time.time() * 1000) // DAY_MS + 2) % slots()
                out["day_entries"] = day_entries
                out["truncate"] = truncate_alone(
                    srv, table, slot, repeats,
                    lambda: expired_slot(srv, table, cols, key, day_entries))
                for t in out["truncate"]:
                    B.note(f"TRUNCATE of a full slot ({t['entries']:,} entries) alone: "
                           f"{t['seconds'] * 1000:.1f} ms, server {t['server_cpu_s']:.3f} CPU-s")
            out[phase] = {k: statistics.median(r[k] for r in runs)
                          for k in ("seconds", "handler_s", "server_cpu_s")}
            out[phase]["all_handler_s"] = [r["handler_s"] for r in runs]
            out[phase]["all_server_cpu_s"] = [r["server_cpu_s"] for r in runs]
            out[phase]["pruned"] = [r["pruned"] for r in runs]
            out[phase]["invocation_errors"] = sum(r["invocation_errors"] for r in runs)
    finally:
        if runner:
            runner.close()
        srv.destroy()
    out["load_end"] = [round(x, 2) for x in os.getloadavg()]
    return out


# --- the report ----------------------------------------------------------------------------
def steady_state(h):
    """The history figure's steady state, with retention's daily TRUNCATE spread over the
    day's entries: {"truncate_s", "truncate_cpu_s", "entries", "per_run_cpu_s",
    "server_cpu_s", "ratio"} (ratio: against the empty database), or None when the run
    measured no TRUNCATE."""
    if not h.get("truncate"):
        return None
    t, e, hx = h["truncate"], h["empty"], h["history"]
    tc = statistics.median(x["server_cpu_s"] for x in t)
    per_run = tc * h["records"] / h["day_entries"]
    return {"truncate_s": statistics.median(x["seconds"] for x in t), "truncate_cpu_s": tc,
            "entries": t[0]["entries"], "per_run_cpu_s": per_run,
            "server_cpu_s": hx["server_cpu_s"] + per_run,
            "ratio": (hx["server_cpu_s"] + per_run) / e["server_cpu_s"]}


def report(f):
    fl = f.get("fleet")
    if fl:
        B.say(f"\n7. Fleet: {fl['records']:,} records ({fl['valid']:,} valid) as {fl['events']} "
              f"events of {fl['per_event']:,}, shared among the functions; one PostgreSQL "
              f"{fl.get('server_version', '')}, pgbouncer {fl.get('pgbouncer_version', '')} "
              f"in transaction mode with {fl['pool']} server connections; median of "
              f"{fl['repeats']} (lock waits, attempts: totals over the runs)")
        rows = []
        base = {}
        for x in fl["runs"]:
            rate = fl["records"] / x["seconds"]
            base.setdefault(x["via"].split(",")[0], rate)
            ratio = rate / base[x["via"].split(",")[0]]
            plural = "s" if x["functions"] > 1 else ""
            rows.append([f"{x['via']}, {x['functions']} function{plural}",
                         f"{rate:,.0f}", f"{ratio:.2f}",
                         f"{x['server_cpu_s'] * 100000 / fl['records']:.2f}",
                         f"{x['functions_cpu_s'] * 100000 / fl['records']:.2f}",
                         str(x["lock_waits"]), str(x["deadlocks"]),
                         f"{x['extra_attempts']}/{x['failed_attempts']}",
                         f"{x['lost']}/{x['doubled']}",
                         ", ".join(f"{s:.2f}" for s in x["all_seconds"]) + " s" +
                         (f"; {x['invocation_errors']} invocation errors"
                          if x["invocation_errors"] else "") +
                         (f"; pooler {x['pooler_cpu_s']:.2f} CPU-s" if x["via"] != "direct"
                          else "") +
                         (f"; other {x['other_cpu_s']:.1f} CPU-s" if x["other_cpu_s"] > 1 else "")])
        B.table(rows, ["functions", "records/s", "vs 1", "server CPU-s/100k",
                       "function CPU-s/100k", "lock waits", "deadlocks", "retries/failed",
                       "lost/doubled", "runs"])
        for via in ("direct", "pgbouncer"):
            r1 = next((x for x in fl["runs"] if x["via"] == via and x["functions"] == 1), None)
            r8 = next((x for x in fl["runs"] if x["via"] == via and x["functions"] == 8), None)
            if r1 and r8:
                q = r1["seconds"] / r8["seconds"]
                B.say(f"  {via}: 8 functions at {q:.2f}x the rate of 1 (goal >= 0.8 on 2 cores: "
                      f"{'met' if q >= 0.8 else 'NOT met'})")
        bad = [x for x in fl["runs"] if x["lost"] or x["doubled"]]
        B.say("  rows lost or doubled: " + ("none in any run" if not bad else
                                            f"IN {len(bad)} CONFIGURATIONS"))
        kinds = collections.Counter()
        for x in fl["runs"]:
            kinds.update(x.get("lock_wait_kinds", {}))
        if kinds:
            B.say("  lock waits by what was waited for: " +
                  ", ".join(f"{k} {v}" for k, v in kinds.most_common()))
        B.say(f"  lock waits: longer than {LOCK_WAIT_MS} ms (log_lock_waits, deadlock_timeout); "
              "retries: attempts beyond a batch's first (a unique violation on an id another "
              "function committed, or a deadlock); failed: 'database attempt failed' lines")
        B.say(f"  load average {fl['load_start']} at start, {fl['load_end']} at end")
    h = f.get("history")
    if h:
        B.say(f"\n8. History: the next {h['records']:,} records (one function), median of "
              f"{h['repeats']}; ledger {h.get('ledger_table', '')} "
              f"({', '.join(h['ledger_columns'])}), key "
              f"({', '.join(h['ledger_key'])}){', partitioned' if h['ledger_partitioned'] else ''}")
        e = h["empty"]
        rows = [["empty database", f"{e['handler_s']:.3f} s", "1.00",
                 f"{e['server_cpu_s']:.2f}", "1.00", f"{e['seconds']:.3f} s",
                 ", ".join(f"{v:.3f}" for v in e["all_handler_s"])]]
        labels = {"history": f"after {h['ledger_rows']:,} committed messages",
                  "retention": "the same, retention deleting as many as written"}
        if h.get("truncate"):
            labels["retention"] = (f"the same, a fresh process truncating a full expired slot "
                                   f"({h['day_entries']:,} entries) in the run")
        labels["empty_again"] = "empty database again, after the others (the machine's drift)"
        for phase in ("history", "retention", "empty_again"):
            x = h.get(phase)
            if not x:
                continue
            rows.append([labels[phase], f"{x['handler_s']:.3f} s",
                         f"{x['handler_s'] / e['handler_s']:.2f}", f"{x['server_cpu_s']:.2f}",
                         f"{x['server_cpu_s'] / e['server_cpu_s']:.2f}", f"{x['seconds']:.3f} s",
                         ", ".join(f"{v:.3f}" for v in x["all_handler_s"])])
        B.table(rows, ["ledger", "handler time", "ratio", "server CPU-s", "ratio", "wall",
                       "runs (handler)"])
        B.say("  goal: at most 1.15x the empty database's cost with the history")
        if h.get("truncate"):
            t = h["truncate"]
            w = statistics.median(h["retention"]["pruned"]) if h["retention"]["pruned"] else 0
            s = steady_state(h)
            tc, ts, per_run, steady = s["truncate_cpu_s"], s["truncate_s"], s["per_run_cpu_s"], \
                s["ratio"]
            runs = ", ".join(f"{x['seconds'] * 1000:.0f} ms/{x['server_cpu_s']:.3f}" for x in t)
            B.say(f"  retention: one TRUNCATE of the slot of 16 days ago per day; in each run of "
                  f"the last row the function cleared {', '.join(f'{p:,}' for p in h['retention']['pruned'])} "
                  f"entries (a whole day's, all in that run; median {w:,.0f})")
            B.say(f"  the TRUNCATE step alone on a full slot ({t[0]['entries']:,} entries): "
                  f"{ts * 1000:.1f} ms, {tc:.3f} server CPU-s (runs "
                  f"{runs}); "
                  f"amortized over a day's {h['day_entries']:,} entries: "
                  f"{tc / h['day_entries'] * 1e9:.0f} ns CPU per entry, {per_run:.4f} CPU-s per "
                  f"{h['records']:,} records")
            both = e["server_cpu_s"]
            if h.get("empty_again"):
                both = (e["server_cpu_s"] + h["empty_again"]["server_cpu_s"]) / 2
            B.say(f"  steady state (history run + amortized TRUNCATE), server CPU: "
                  f"{s['server_cpu_s']:.3f} CPU-s, {steady:.2f}x the empty database, "
                  f"{s['server_cpu_s'] / both:.2f}x the mean of the two empty "
                  f"phases (goal 1.15: {'met' if steady <= 1.15 else 'NOT met'})")
        elif h.get("retention"):
            B.say(f"  retention (after {h['retention_days']} days): before each run of the last "
                  "row, "
                  f"{h['records']:,} entries that had just expired were added for the function "
                  "to delete; it deleted "
                  f"{', '.join(f'{p:,}' for p in h['retention']['pruned'])}")
        else:
            B.say("  the function keeps no retention (no LEDGER_RETENTION in function/pg*)")
        B.say(f"  preload: {h['ledger_rows']:,} entries by INSERT ... SELECT generate_series in "
              f"{h['preload_s']:.0f} s, {h['ledger_bytes'] / 1e6:.0f} MB "
              f"({h['ledger_bytes'] / h['ledger_rows']:.0f} bytes per message, table and indexes)")
        if h.get("function_ledger_rows"):
            B.say(f"  the ledger as the function wrote it: {h['function_ledger_rows']:,} entries, "
                  f"{h['function_ledger_bytes'] / 1e6:.1f} MB "
                  f"({h['function_ledger_bytes'] / h['function_ledger_rows']:.0f} bytes per "
                  "message)")
        lc = h.get("ledger_copy")
        if lc:
            fn, fl_ = lc["function"], lc["text_floor"]
            B.say(f"  the ledger COPY alone, {fn['ids']:,} ids (server-side binary COPY, one "
                  f"transaction, median of {h['repeats']}): the function's ledger "
                  f"{fn['seconds']:.3f} s, {fn['backend_cpu_s']:.3f} CPU-s; the text-keyed "
                  f"floor's (id text COLLATE \"C\" PRIMARY KEY) {fl_['seconds']:.3f} s, "
                  f"{fl_['backend_cpu_s']:.3f} CPU-s ({fn['seconds'] / fl_['seconds']:.2f}x)")
        B.say(f"  load average {h['load_start']} at start, {h['load_end']} at end")


B = None  # the bench module, set by bench.py before anything here runs
