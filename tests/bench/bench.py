#!/usr/bin/env python3
"""`make bench`: throughput and resource figures of the real bootstrap, next to
what the database itself can do.  It reports; it never fails on a figure.

    tests/bench/bench.py                 the full run (about 10 minutes)
    tests/bench/bench.py --quick         fewer repeats, 20,000 records, no fsync=on pass
    tests/bench/bench.py --fleet         only the fleet figures (7); --history: only 8;
                                         --rekey: only 9 (make bench BENCH=rekey)
    tests/bench/bench.py --cost          only the cost inputs (10), to build/bench/cost.json
                                         (make bench BENCH=cost)
    tests/bench/bench.py --throughput    only 1-2 at fsync=off and 4 (a minute or two)
    tests/bench/bench.py --refused       only 5 and 5c (memory, refused rows)
    tests/bench/bench.py --profile       also a perf profile of one end-to-end pass (also with
                                         --throughput; the data stays in build/bench/perf.data)
    tests/bench/bench.py --json FILE     also write every figure as JSON

What it measures (tests/bench/README.md says more):
 1. end to end: 100,000 realistic records (events/generate.py, seed 1) through
    the release bootstrap, the Runtime API emulator and a private PostgreSQL,
    from the first event queued to the last answer received;
 2. the floors: the same rows COPY'd from a file server-side (rows only; rows
    plus the message ids into a keyed ledger, in one transaction as the
    function does), and the function's ratio to each;
 3. the usual ETL script: one INSERT and one commit per message (psql);
 4. time per stage for a 10,000-record event (tests/bench/stages.c, linked
    against the release objects);
 5. peak resident memory on 6 MB events, after 1,000 small invocations, and on
    6 MB events of the tiniest records; 5b. the id set on plain and colliding ids;
 5c. isolating rows the database refuses: an 8,000-row batch with one row a CHECK
    constraint refuses (found by the error's COPY line) and one a deferred constraint
    trigger refuses at COMMIT (found by writing parts again), each against the same batch
    clean (goal: under 2x); and 1% of the rows refused;
 6. process start to the first /next; stripped binary and zip sizes;
 7. a fleet: 1, 2, 4 and 8 functions at once on one server, directly and
    through pgbouncer (tests/bench/fleet.py; alone: --fleet);
 8. the ledger's history: the next 80,000 records on an empty database and
    after 5,000,000 committed messages (tests/bench/fleet.py; alone: --history);
 9. the rekey after a key rotation: 1,000,000 rows re-masked alone and while the
    function loads, and the function's rate meanwhile against its rate alone
    (tests/bench/rekey_bench.py; alone: --rekey);
10. cost inputs: milliseconds per invocation of a 1,000-message batch (the template's
    BatchSize) at the whole CPU and at Lambda's CPU share of 128, 256 and 512 MB (a cgroup
    CPU quota where the machine allows one), against a server with fsync=on, and the
    dollars per million messages they make (tests/bench/cost.py; alone: --cost).

The 6 MB limit: a realistic record (a 188-character receipt handle, as SQS's
are 180-400) is about 820 bytes of event JSON, so an invocation holds about
7,660 records, not SQS's nominal 10,000.  The 100,000 records therefore go as
events filled to the 6 MB limit, the way Lambda's event source mapping fills
a batch (13 of about 7,660 and one of the rest).  The stage timings use a
10,000-record event (8.2 MB) fed to the code directly, where no cap applies.
"""
import argparse
import json
import math
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))  # fleet.py, when imported rather than run

from events.generate import (  # noqa: E402
    event_bytes, fill_events, fit_event, make_event, make_messages, tiny_event)
from rig import paths, pg, proc, runtime_api  # noqa: E402

import cost  # noqa: E402  (tests/bench/cost.py)
import fleet  # noqa: E402  (tests/bench/fleet.py)
import rekey_bench  # noqa: E402  (tests/bench/rekey_bench.py)

BUILD = ROOT / "build"
OUT = BUILD / "bench"
RELEASE = paths.RELEASE  # stripped, static: what ships
BOOTSTRAP = RELEASE  # what is run (--bootstrap: a candidate build to compare)
STAGES = None  # the stage harness (--stages: a candidate's), default build/bench/stages
RELEASE_SYMBOLS = BUILD / "release" / "bootstrap"  # the same code with symbols
CC = os.environ.get("CC", "gcc")
# The release build's flags (Makefile RELEASE_CFLAGS), warnings included.
CFLAGS = ["-std=c11", "-D_POSIX_C_SOURCE=200809L", "-O2", "-g", "-Wall", "-Wextra", "-Werror",
          "-Wshadow", "-Wstrict-prototypes", "-Wmissing-prototypes", "-Wwrite-strings",
          "-Wformat=2", "-Wconversion", "-Wno-sign-conversion", "-Ibase", "-Iruntime", "-Ifunction",
          f"-I{BUILD}/deps/include"]
LIBS = [f"-L{BUILD}/deps/lib", "-lpq", "-lpgcommon", "-lpgport", "-lssl", "-lcrypto", "-lm",
        "-pthread"]

figures = {}  # everything measured, for --json


def say(*a):
    print(*a, flush=True)


def note(msg):
    print(f"  . {msg}", flush=True)


# --- small tools ---------------------------------------------------------------------------
def build_tools():
    """Compiles the stage harness (against the release objects, -O2, static like
    the bootstrap) and the null runtime client into build/bench/."""
    OUT.mkdir(parents=True, exist_ok=True)
    objs = sorted(str(p) for d in ("base", "runtime")
                  for p in (BUILD / "release").glob(f"{d}/*.o"))
    objs += sorted(str(p) for p in (BUILD / "release").glob("function/*.o")
                   if p.name != "main.o")
    objs.append(str(BUILD / "release" / "cJSON.o"))
    missing = [o for o in objs if not Path(o).exists()] or not objs
    if missing:
        sys.exit("bench: the release objects are missing: run `make test-build` first")
    for name, extra in (("stages", objs + LIBS), ("null_next", []), ("idset_bench", objs + LIBS)):
        src = HERE / f"{name}.c"
        exe = OUT / name
        if exe.exists() and all(exe.stat().st_mtime >= Path(p).stat().st_mtime
                                for p in [src] + [o for o in extra if o.endswith(".o")]):
            continue
        r = subprocess.run([CC] + CFLAGS + ["-static", "-o", str(exe), str(src)] + extra,
                           cwd=ROOT, capture_output=True, text=True)
        if r.returncode != 0:
            sys.exit(f"bench: cannot build {name}:\n{r.stderr}")


def cpu_of(pid):
    """CPU seconds a process has run (all its threads), or 0 when it is gone."""
    try:
        with open(f"/proc/{pid}/schedstat") as f:
            own = int(f.read().split()[0]) / 1e9
        total = 0.0
        for t in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{t}/schedstat") as f:
                total += int(f.read().split()[0]) / 1e9
        return max(own, total)
    except (OSError, ValueError, IndexError):
        return 0.0


def server_pids(srv):
    """The postmaster and all its children."""
    with open(os.path.join(srv.data, "postmaster.pid")) as f:
        master = int(f.readline())
    pids = [master]
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                with open(f"/proc/{p}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == master:
                        pids.append(int(p))
            except (OSError, ValueError, IndexError):
                pass
    return pids


def server_cpu(srv):
    return sum(cpu_of(p) for p in server_pids(srv))


def machine_busy():
    """(busy, total) CPU seconds of the whole machine so far, from /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:9]]
    hz = os.sysconf("SC_CLK_TCK")
    total = sum(v) / hz
    idle = (v[3] + v[4]) / hz
    return total - idle, total


def proc_status(pid):
    """VmHWM and VmRSS of a process, in MiB."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmHWM", "VmRSS"):
                out[k] = int(v.split()[0]) / 1024
    return out


def pctl(values, p):
    v = sorted(values)
    k = (len(v) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (k - lo)


class Runner:
    """One bootstrap behind one emulator, with its output in the bench's temp dir."""

    def __init__(self, tmp, srv, binary=None, env=None, name="bootstrap"):
        self.emu = runtime_api.Emulator()
        # The figures before the quarantine list rejected records (REJECTED_RECORDS=retry);
        # figure 5d (quarantine()) compares the two.
        e = {"PATH": "/usr/bin:/bin", "AWS_LAMBDA_RUNTIME_API": self.emu.address,
             "AWS_LAMBDA_FUNCTION_NAME": "login-etl-bench",
             "MASKING_KEY": proc.MASKING_KEY, "MASKING_KEY_ID": proc.MASKING_KEY_ID,
             "REJECTED_RECORDS": "retry"}
        if srv is not None:
            e.update(srv.env())
        e.update(env or {})
        e = {k: v for k, v in e.items() if v is not None}  # None: unset
        self.out_path = os.path.join(tmp, f"{name}.out")
        self.out = open(self.out_path, "ab")
        self.proc = subprocess.Popen([str(binary or BOOTSTRAP)], env=e, stdout=self.out,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.emu.wait_polling(1, timeout=30)

    def run(self, events, timeout=300):
        """Queues every event at once; returns (seconds from the first queued to the
        last answer received, [Result])."""
        t0 = time.monotonic()
        rids = [self.emu.enqueue(e, timeout_s=900) for e in events]
        results = [self.emu.wait_result(r, timeout=timeout) for r in rids]
        return max(r.time for r in results) - t0, results

    def durations_ms(self):
        """The Duration of every invocation's metrics line so far."""
        out = []
        with open(self.out_path, "rb") as f:
            for line in f.read().decode("utf-8", "replace").splitlines():
                if '"_aws"' in line:
                    try:
                        out.append(json.loads(line)["Duration"])
                    except (ValueError, KeyError):
                        pass
        return out

    def close(self):
        proc.terminate(self.proc)
        self.out.close()
        self.emu.close()


def superuser_psql(srv, script, timing=False):
    """Runs a psql script as the superuser; returns stdout (with \\timing lines)."""
    r = subprocess.run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-At"], input=script,
                       env=srv.superuser_env(), capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"psql failed: {r.stderr.strip()}")
    return r.stdout


def timings(out):
    return [float(x) / 1000 for x in re.findall(r"^Time: ([\d.]+) ms", out, re.M)]


# --- 0. the data ---------------------------------------------------------------------------
def make_data(n, seed):
    t = time.monotonic()
    msgs = make_messages(n, seed=seed)
    events, counts = fill_events(msgs)
    valid = sum(1 for m in msgs if m["kind"] == "valid")
    rh = len(fit_event(msgs[:1])[0]["Records"][0]["receiptHandle"])
    ten_k, _ = fit_event(msgs[:10000], max_bytes=0)
    ten_k = event_bytes(ten_k)
    d = {"records": n, "valid": valid, "rejected": n - valid, "events": len(events),
         "records_per_event": counts, "bytes": sum(len(e) for e in events),
         "receipt_handle_chars": rh, "generate_s": time.monotonic() - t,
         "stage_event_bytes": len(ten_k), "stage_event_records": min(n, 10000)}
    return msgs, events, ten_k, d


# --- 1. end to end -------------------------------------------------------------------------
def end_to_end(tmp, srv, events, data, repeats, label, binary=None):
    runs = []
    for r in range(repeats):
        srv.reset()
        run = Runner(tmp, srv, binary=binary, name=f"e2e-{label}-{r}")
        try:
            # Steady state, as between invocations in Lambda: the connection is
            # open and the tables exist (one record written, then removed).
            warm = fit_event(make_messages(1, seed=10**6 + r, invalid_rate=0))[0]
            run.run([event_bytes(warm)])
            srv.psql("TRUNCATE user_logins, login_etl_ledger_v3")
            skip = len(run.durations_ms())
            busy0, tot0 = machine_busy()
            b0, s0, p0 = cpu_of(run.proc.pid), server_cpu(srv), time.process_time()
            secs, results = run.run(events)
            b1, s1, p1 = cpu_of(run.proc.pid), server_cpu(srv), time.process_time()
            busy1, tot1 = machine_busy()
            bad = [x for x in results if x.kind != "response"]
            failed = sum(len(x.json()["batchItemFailures"]) for x in results if not bad)
            rows = int(srv.scalar("SELECT count(*) FROM user_logins"))
            dur = run.durations_ms()[skip:]
        finally:
            run.close()
        ok = not bad and rows == data["valid"] and failed == data["rejected"]
        if not ok:
            note(f"WARNING run {r + 1}: {len(bad)} invocation errors, {rows} rows written "
                 f"(expected {data['valid']}), {failed} listed (expected {data['rejected']})")
        own = (b1 - b0) + (s1 - s0) + (p1 - p0)
        runs.append({"seconds": secs, "rows": rows, "ok": ok,
                     "handler_s": sum(dur) / 1000, "bootstrap_cpu_s": b1 - b0,
                     "postgres_cpu_s": s1 - s0, "emulator_cpu_s": p1 - p0,
                     "other_cpu_s": max(0.0, (busy1 - busy0) - own),
                     "machine_cpu_s": (tot1 - tot0)})
        note(f"{label} run {r + 1}: {secs:.3f} s, {data['records'] / secs:,.0f} records/s "
             f"(bootstrap CPU {b1 - b0:.2f} s, postgres {s1 - s0:.2f} s, emulator "
             f"{p1 - p0:.2f} s, other processes {runs[-1]['other_cpu_s']:.2f} s)")
    best = sorted(runs, key=lambda x: x["seconds"])[len(runs) // 2]  # the median run
    best = dict(best, all_seconds=[x["seconds"] for x in runs])
    return best


def dump_rows(srv, tmp):
    """The rows and ledger ids the function wrote, as files the server can read."""
    d = srv.readable_dir("bench")
    f = {k: os.path.join(d, k) for k in ("rows.bin", "rows.txt", "ids.bin")}
    superuser_psql(srv, f"COPY user_logins TO '{f['rows.bin']}' (FORMAT binary);\n"
                        f"COPY user_logins TO '{f['rows.txt']}';\n"
                        f"COPY (SELECT message_id::text FROM login_etl_ledger_v3 WHERE slot < 18) "
                        f"TO '{f['ids.bin']}' (FORMAT binary);\n")
    return f


# The naive exactly-once floor's ledger: keyed by the message id alone, as text in
# the C collation (the function's own ledger is keyed by (SentTimestamp, id)).
FLOOR_DDL = """DROP TABLE IF EXISTS floor_rows, floor_ledger;
CREATE TABLE floor_rows (LIKE user_logins);
CREATE TABLE floor_ledger (message_id text COLLATE "C" PRIMARY KEY,
                           committed_at timestamptz NOT NULL DEFAULT now());
CHECKPOINT;
"""


def floors(srv, files, repeats):
    """Server-side COPY from files into fresh tables identical to the function's,
    timed per statement by psql's \\timing (round trip of each statement on an
    open connection: psql's start and connect are not in it)."""
    res = {"rows": [], "rows_text": [], "rows_ledger": []}
    variants = [("rows", "binary", files["rows.bin"], False),
                ("rows_text", "text", files["rows.txt"], False),
                ("rows_ledger", "binary", files["rows.bin"], True)]
    # RDS creates databases in en_US.UTF-8, where a text key compares by
    # collation rules, not bytes; this machine has no glibc en_US locale, so
    # ICU's en-US stands in for it.
    icu = superuser_psql(srv, "SELECT count(*) FROM pg_collation WHERE collname = 'en-US-x-icu'")
    if icu.strip() == "1":
        res["rows_ledger_icu"] = []
        variants.append(("rows_ledger_icu", "binary", files["rows.bin"], True))
    cpu = {k: [] for k in res}
    # The backend's own CPU time (ns), read by itself before and after the timed
    # statements: a figure that the load of a shared machine moves less than times.
    schedstat = "SELECT 'cpu:' || split_part(pg_read_file('/proc/self/schedstat'), ' ', 1);\n"
    for _ in range(repeats):
        for key, fmt, path, ledger in variants:
            script = FLOOR_DDL
            if key == "rows_ledger_icu":
                script += ("ALTER TABLE floor_ledger ALTER COLUMN message_id "
                           "TYPE text COLLATE \"en-US-x-icu\";\nCHECKPOINT;\n")
            script += schedstat + "\\timing on\nBEGIN;\n" + \
                f"COPY floor_rows FROM '{path}' (FORMAT {fmt});\n"
            if ledger:
                script += f"COPY floor_ledger (message_id) FROM '{files['ids.bin']}' (FORMAT binary);\n"
            script += "COMMIT;\n\\timing off\n" + schedstat
            out = superuser_psql(srv, script)
            res[key].append(sum(timings(out)))
            ns = [int(x) for x in re.findall(r"^cpu:(\d+)$", out, re.M)]
            cpu[key].append((ns[-1] - ns[0]) / 1e9 if len(ns) == 2 else float("nan"))
    superuser_psql(srv, "DROP TABLE IF EXISTS floor_rows, floor_ledger;")
    return {k: {"seconds": statistics.median(v), "all_seconds": v,
                "backend_cpu_s": statistics.median(cpu[k])} for k, v in res.items()}


def naive_inserts(srv, tmp, limit):
    """One INSERT and one commit per message: a generated SQL file (the function's
    own rows, masked already) piped through one psql session in autocommit mode,
    net of an empty psql run.  Returns (seconds for `count` rows, count)."""
    total = int(srv.scalar("SELECT count(*) FROM user_logins"))
    count = min(total, limit) if limit else total
    srv.psql("DROP TABLE IF EXISTS naive_logins; CREATE TABLE naive_logins (LIKE user_logins)")
    script = srv.psql(
        "SELECT format('INSERT INTO naive_logins VALUES (%L, %L, %L, %L, %L, %s, %L);', "
        "user_id, device_type, masked_ip, masked_device_id, locale, "
        f"coalesce(app_version::text, 'NULL'), create_date) FROM user_logins LIMIT {count}")
    path = os.path.join(tmp, "naive.sql")
    with open(path, "w") as f:
        f.write(script)
    env = dict(os.environ, PGPASSWORD=pg.PASSWORD, PGHOST="127.0.0.1", PGPORT=str(srv.port),
               PGUSER=pg.USER, PGDATABASE=pg.DATABASE, PGSSLMODE="disable")
    cmd = ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-f"]
    empty = []
    for _ in range(3):
        t = time.monotonic()
        subprocess.run(cmd + ["/dev/null"], env=env, check=True)
        empty.append(time.monotonic() - t)
    t = time.monotonic()
    subprocess.run(cmd + [path], env=env, check=True, stdout=subprocess.DEVNULL)
    secs = time.monotonic() - t - min(empty)
    got = int(srv.scalar("SELECT count(*) FROM naive_logins"))
    srv.psql("DROP TABLE naive_logins")
    os.unlink(path)
    if got != count:
        note(f"WARNING: the INSERT script wrote {got} rows, not {count}")
    return secs, count


def throughput(tmp, events, data, fsync, repeats, naive_limit, naive=True):
    label = "fsync=on" if fsync else "fsync=off"
    say(f"\n[{label}] a fresh private PostgreSQL server")
    srv = pg.Server(fsync=fsync, async_commit=not fsync)
    try:
        out = {"server_version": srv.scalar("SHOW server_version")}
        out["e2e"] = end_to_end(tmp, srv, events, data, repeats, label)
        files = dump_rows(srv, tmp)
        out["floors"] = floors(srv, files, max(repeats, 3))
        f = out["floors"]
        note(f"{label} floors: rows {f['rows']['seconds']:.3f} s, rows text "
             f"{f['rows_text']['seconds']:.3f} s, rows + ledger {f['rows_ledger']['seconds']:.3f} s")
        if not naive:
            return out, srv
        secs, count = naive_inserts(srv, tmp, naive_limit)
        rows = out["e2e"]["rows"]
        out["naive"] = {"seconds_measured": secs, "rows_measured": count,
                        "seconds": secs * rows / count, "extrapolated": count < rows}
        note(f"{label} INSERT per message: {count:,} rows in {secs:.2f} s "
             f"({count / secs:,.0f} rows/s)")
        return out, srv
    except BaseException:
        srv.destroy()
        raise


# --- 4. stages -----------------------------------------------------------------------------
def stages(tmp, srv, ten_k, repeats):
    path = os.path.join(tmp, "event-10000.json")
    with open(path, "wb") as f:
        f.write(ten_k)
    env = dict(os.environ, MASKING_KEY=proc.MASKING_KEY, MASKING_KEY_ID=proc.MASKING_KEY_ID,
               **srv.env())
    srv.reset()
    r = subprocess.run([str(STAGES or OUT / "stages"), path, str(repeats)], env=env,
                       capture_output=True, text=True, timeout=600)
    if r.returncode != 0:
        raise RuntimeError(f"stages failed: {r.stderr}")
    os.unlink(path)
    srv.reset()
    return {d["stage"]: d for d in (json.loads(x) for x in r.stdout.splitlines() if x.strip())}


# --- 5. memory -----------------------------------------------------------------------------
def memory(tmp, srv, events, msgs, small_count):
    out = {}
    srv.reset()
    big = sorted(events, key=len)[-5:]  # the five largest events (just under 6 MB)
    run = Runner(tmp, srv, name="memory-big")
    try:
        out["idle"] = proc_status(run.proc.pid)
        run.run(big[:1])
        out["after_1_big"] = proc_status(run.proc.pid)
        run.run(big[1:])
        out["after_5_big"] = proc_status(run.proc.pid)
        out["big_event_bytes"] = len(big[-1])
    finally:
        run.close()
    srv.reset()
    small = []
    for i in range(small_count):
        ev, _ = fit_event(msgs[i * 10:(i + 1) * 10])
        small.append(event_bytes(ev))
    run = Runner(tmp, srv, name="memory-small")
    try:
        run.run(small[:10])
        out["after_10_small"] = proc_status(run.proc.pid)
        _, results = run.run(small[10:])
        out["after_n_small"] = proc_status(run.proc.pid)
        out["small_count"] = small_count
        out["small_errors"] = sum(1 for r in results if r.kind != "response")
    finally:
        run.close()
    srv.reset()
    # The most records a 6 MB event can hold: tiny ones, each with a per-record
    # cost (record, id set, status) and nothing to amortise it over.  All of
    # them are rejected (an empty body object), so every id is also listed in
    # the answer; then 115,000 that are valid (the smallest valid body).
    # Then the valid ones delivered again (every id a duplicate the ledger lookup finds),
    # and 111,598 tiny valid records filling 6.29 MB (Lambda's limit) that a BEFORE
    # trigger refuses one by one (each refused row a COPY rolled back to its savepoint).
    run = Runner(tmp, srv, name="memory-tiny")
    try:
        for key, n, body in (("tiny_rejected", 170000, '"{}"'),
                             ("tiny_valid", 115000, '"{\\"user_id\\":\\"u\\"}"')):
            ev = ('{"Records":[' + ",".join('{"messageId":"%06d","body":%s}' % (i, body)
                                            for i in range(n)) + ']}').encode()
            _, results = run.run([ev])
            out[key] = dict(proc_status(run.proc.pid), records=n, bytes=len(ev),
                            answered=results[0].kind == "response")
        _, results = run.run([ev])
        out["tiny_replayed"] = dict(proc_status(run.proc.pid), records=n, bytes=len(ev),
                                    answered=results[0].kind == "response")
        n = 111_598
        ev = tiny_event(n, PAYLOAD_MAX)
        superuser_psql(srv, REFUSE_ALL)
        try:
            _, results = run.run([ev])
        finally:
            superuser_psql(srv, "DROP TRIGGER IF EXISTS bench_refuse_all ON user_logins;")
        out["tiny_refused"] = dict(proc_status(run.proc.pid), records=n, bytes=len(ev),
                                   answered=results[0].kind == "response",
                                   listed=len(results[0].json()["batchItemFailures"])
                                   if results[0].kind == "response" else -1)
    finally:
        run.close()
    srv.reset()
    return out


PAYLOAD_MAX = 6 * 1024 * 1024  # Lambda's invocation payload limit
REFUSE_ALL = """
CREATE OR REPLACE FUNCTION bench_refuse_all() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN RAISE EXCEPTION 'refused'; END $$;
CREATE TRIGGER bench_refuse_all BEFORE INSERT ON user_logins
  FOR EACH ROW EXECUTE FUNCTION bench_refuse_all();
"""


# --- 5c. refused rows ----------------------------------------------------------------------
REFUSE_LATE = """
CREATE OR REPLACE FUNCTION bench_refuse_late() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF NEW.user_id LIKE 'refuse-%' THEN RAISE EXCEPTION 'refused'; END IF;
  RETURN NULL;
END $$;
CREATE CONSTRAINT TRIGGER bench_refuse_late AFTER INSERT ON user_logins
  DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION bench_refuse_late();
"""


def refusing_trigger(when):
    """A row trigger refusing the rows whose user_id starts with "refuse-": BEFORE (the
    error names the COPY line), AFTER (fired at the end of the COPY: no line) or DEFERRED
    (a constraint trigger fired at COMMIT: no line); or CHECK, the same rule as a CHECK
    constraint (its error names the line)."""
    if when == "CHECK":
        return ("ALTER TABLE user_logins ADD CONSTRAINT bench_refuse_kind "
                "CHECK (user_id NOT LIKE 'refuse-%');")
    create = {"BEFORE": "CREATE TRIGGER bench_refuse_kind BEFORE INSERT ON user_logins",
              "AFTER": "CREATE TRIGGER bench_refuse_kind AFTER INSERT ON user_logins",
              "DEFERRED": "CREATE CONSTRAINT TRIGGER bench_refuse_kind AFTER INSERT ON "
                          "user_logins DEFERRABLE INITIALLY DEFERRED"}[when]
    return f"""
CREATE OR REPLACE FUNCTION bench_refuse_kind() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF NEW.user_id LIKE 'refuse-%' THEN RAISE EXCEPTION 'refused'; END IF;
  RETURN {"NEW" if when == "BEFORE" else "NULL"};
END $$;
{create} FOR EACH ROW EXECUTE FUNCTION bench_refuse_kind();
"""


REFUSED_KINDS = ("BEFORE", "AFTER", "DEFERRED", "CHECK")
REFUSED_SHARES = (("1pct", 100), ("30pct", 3), ("all", 1))  # (name, one row in every k)


def refused(tmp, srv, repeats, n=8000, matrix_repeats=3):
    """Handler time (metric Duration) of an n-row batch with one row refused in the
    middle, against the same batch without it, for each way of finding the row; and with
    1% of the rows refused (spread evenly).  Then each kind of rule (BEFORE, AFTER,
    DEFERRED trigger, CHECK) refusing 1%, 30% and all of the rows, against the clean batch, with the peak
    of transaction-id locks the function's backend held.  Clean and refused runs alternate
    on one warm bootstrap; medians."""
    check = "ALTER TABLE user_logins ADD CONSTRAINT bench_refuse CHECK (user_id NOT LIKE 'refuse-%');"

    def batch(tag, bad):
        msgs = []
        for i in range(n):
            body = {"user_id": ("refuse-" if i in bad else "user-") + f"{tag}-{i}",
                    "device_type": "ios", "ip": f"10.{i % 250}.{i // 250 % 250}.7",
                    "device_id": f"device-{i}", "locale": "en_US", "app_version": "3.1.4"}
            msgs.append({"messageId": f"{tag}-{i:05d}", "body": json.dumps(body),
                         "sentTimestamp": 1_718_006_400_000})
        ev, k = fit_event(msgs)
        assert k == n, f"{n} records do not fit one event"
        return event_bytes(ev)

    out = {"rows": n}
    srv.reset()
    run = Runner(tmp, srv, name="refused")
    try:
        run.run([batch("warm", set())])
        for how, setup, bad_rows in (("line", check, {n // 2}), ("parts", REFUSE_LATE, {n // 2}),
                                     ("line_1pct", check, set(range(50, n, 100)))):
            superuser_psql(srv, "TRUNCATE user_logins, login_etl_ledger_v3;\n" + setup)
            clean, bad = [], []
            for r in range(repeats):
                for rows, into in ((set(), clean), (bad_rows, bad)):
                    skip = len(run.durations_ms())
                    _, results = run.run([batch(f"{how}{r}{'b' if rows else 'c'}", rows)])
                    listed = len(results[0].json()["batchItemFailures"]) \
                        if results[0].kind == "response" else -1
                    if listed != len(rows):
                        note(f"WARNING {how}: {listed} records listed, expected {len(rows)}")
                    into.append(run.durations_ms()[skip:][0])
            superuser_psql(srv, "ALTER TABLE user_logins DROP CONSTRAINT IF EXISTS bench_refuse;"
                                "DROP TRIGGER IF EXISTS bench_refuse_late ON user_logins;")
            out[how] = {"clean_ms": statistics.median(clean), "refused_ms": statistics.median(bad),
                        "all_clean_ms": clean, "all_refused_ms": bad}
            out[how]["ratio"] = out[how]["refused_ms"] / out[how]["clean_ms"]
            note(f"{how}: clean {out[how]['clean_ms']:.0f} ms, one refused "
                 f"{out[how]['refused_ms']:.0f} ms, ratio {out[how]['ratio']:.2f}")
        out["kinds"] = {}
        for when in REFUSED_KINDS:
            superuser_psql(srv, "TRUNCATE user_logins, login_etl_ledger_v3;\n"
                           + refusing_trigger(when))
            for share, every in REFUSED_SHARES:
                bad_rows = set(range(every // 2, n, every)) if every > 1 else set(range(n))
                clean, bad, locks, wrong = [], [], [], 0
                for r in range(matrix_repeats):
                    for rows, into in ((set(), clean), (bad_rows, bad)):
                        skip = len(run.durations_ms())
                        watch = LockWatch(srv) if rows else None
                        try:
                            _, results = run.run([batch(f"{when[0]}{every}{r}{'b' if rows else 'c'}",
                                                        rows)])
                        finally:
                            if watch:
                                locks.append(watch.stop())
                        ok = results[0].kind == "response" and \
                            len(results[0].json()["batchItemFailures"]) == len(rows)
                        wrong += not ok
                        into.append(run.durations_ms()[skip:][0])
                key = f"{when}_{share}"
                out["kinds"][key] = {
                    "clean_ms": statistics.median(clean), "refused_ms": statistics.median(bad),
                    "refused_rows": len(bad_rows), "peak_xid_locks": max(locks),
                    "wrong_answers": wrong}
                out["kinds"][key]["ratio"] = out["kinds"][key]["refused_ms"] / \
                    out["kinds"][key]["clean_ms"]
                note(f"{when} {share}: clean {out['kinds'][key]['clean_ms']:.0f} ms, refused "
                     f"{out['kinds'][key]['refused_ms']:.0f} ms, ratio "
                     f"{out['kinds'][key]['ratio']:.2f}, peak {max(locks)} xid locks"
                     + (f", {wrong} WRONG ANSWERS" if wrong else ""))
            superuser_psql(srv, "DROP TRIGGER IF EXISTS bench_refuse_kind ON user_logins;"
                                "ALTER TABLE user_logins DROP CONSTRAINT IF EXISTS bench_refuse_kind;")
    finally:
        run.close()
    srv.reset()
    return out


# --- 5d. quarantine ------------------------------------------------------------------------
def quarantine(tmp, srv, repeats, n=8000, shares=(0.01, 0.30)):
    """Handler time (metric Duration) of an n-record batch with a share of its records
    rejected by the rules (ip_invalid, spread evenly), quarantined (the default) against
    listed for a retry (REJECTED_RECORDS=retry), each on a warm bootstrap of its own;
    the two alternate batch by batch; medians."""
    def batch(tag, share):
        step = round(1 / share)
        msgs = []
        for i in range(n):
            body = {"user_id": f"user-{tag}-{i}", "device_type": "ios",
                    "ip": "999.1.1.1" if i % step == step // 2 else
                    f"10.{i % 250}.{i // 250 % 250}.7",
                    "device_id": f"device-{i}", "locale": "en_US", "app_version": "3.1.4"}
            msgs.append({"messageId": f"{tag}-{i:05d}", "body": json.dumps(body),
                         "sentTimestamp": 1_718_006_400_000})
        ev, k = fit_event(msgs)
        assert k == n, f"{n} records do not fit one event"
        return event_bytes(ev), sum(1 for i in range(n) if i % step == step // 2)

    out = {"records": n}
    srv.reset()
    runs = {"quarantine": Runner(tmp, srv, env={"REJECTED_RECORDS": None}, name="quarantine"),
            "retry": Runner(tmp, srv, name="quarantine-retry")}
    try:
        for mode, run in runs.items():
            run.run([batch(f"w{mode[0]}", 0.5)[0]])
        for share in shares:
            key = f"{round(share * 100)}pct"
            times = {mode: [] for mode in runs}
            for r in range(repeats):
                for mode, run in runs.items():
                    ev, bad = batch(f"{key[:2]}{mode[0]}{r}", share)
                    skip = len(run.durations_ms())
                    _, results = run.run([ev])
                    listed = len(results[0].json()["batchItemFailures"]) \
                        if results[0].kind == "response" else -1
                    want = 0 if mode == "quarantine" else bad
                    if listed != want:
                        note(f"WARNING {mode} {key}: {listed} listed, expected {want}")
                    times[mode].append(run.durations_ms()[skip:][0])
            out[key] = {f"{m}_ms": statistics.median(v) for m, v in times.items()}
            out[key].update({f"all_{m}_ms": v for m, v in times.items()}, rejected=bad)
            out[key]["ratio"] = out[key]["quarantine_ms"] / out[key]["retry_ms"]
            note(f"{key} rejected: quarantine {out[key]['quarantine_ms']:.0f} ms, retry "
                 f"{out[key]['retry_ms']:.0f} ms, ratio {out[key]['ratio']:.2f}")
        out["quarantined_rows"] = int(srv.scalar("SELECT count(*) FROM login_etl_rejected"))
    finally:
        for run in runs.values():
            run.close()
    srv.reset()
    return out


class LockWatch:
    """The most transaction-id locks the function's backend held at once (one for its
    transaction, one per subtransaction that wrote), sampled while it runs."""

    def __init__(self, srv):
        import threading
        self.srv, self.peak, self._stop = srv, 0, False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        sql = ("SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
               "WHERE a.application_name = 'login-etl' AND l.locktype = 'transactionid';")
        while not self._stop:
            try:
                self.peak = max(self.peak, int(superuser_psql(srv=self.srv, script=sql).strip()))
            except (RuntimeError, ValueError):
                pass

    def stop(self):
        self._stop = True
        self._thread.join()
        return self.peak


# --- 5b. the id set ------------------------------------------------------------------------
def idset_figures():
    """CPU time to put 100,000 plain and 100,000 FNV-colliding ids (tests/bench/idset_bench.c)."""
    r = subprocess.run([str(OUT / "idset_bench")], capture_output=True, text=True, timeout=600)
    if r.returncode != 0:
        raise RuntimeError(f"idset_bench failed: {r.stderr}")
    return json.loads(r.stdout)


# --- 6. start-up and size ------------------------------------------------------------------
def startup(tmp, runs):
    """Popen to the emulator's receipt of the first /next, for the bootstrap and
    for the null client (the rig's own floor)."""
    emu = runtime_api.Emulator()
    out = {}
    try:
        for name, binary in (("bootstrap", BOOTSTRAP), ("null_next", OUT / "null_next")):
            env = {"PATH": "/usr/bin:/bin", "AWS_LAMBDA_RUNTIME_API": emu.address,
                   "AWS_LAMBDA_FUNCTION_NAME": "login-etl-bench",
                   "MASKING_KEY": proc.MASKING_KEY, "MASKING_KEY_ID": proc.MASKING_KEY_ID,
                   "PGHOST": "127.0.0.1", "PGUSER": "nobody"}
            times, cpu = [], []
            for _ in range(runs):
                seen = len(emu.next_requests)
                t = time.monotonic()
                p = subprocess.Popen([str(binary)], env=env, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
                try:
                    emu.wait_polling(seen + 1, timeout=10)
                    times.append(emu.next_requests[seen][0] - t)
                    # it now waits for an event: what it used so far is its start-up
                    time.sleep(0.002)
                    cpu.append(cpu_of(p.pid))
                finally:
                    p.kill()
                    p.wait()
            out[name] = {"median_ms": statistics.median(times) * 1e3,
                         "p90_ms": pctl(times, 90) * 1e3, "min_ms": min(times) * 1e3,
                         "cpu_ms": statistics.median(cpu) * 1e3, "runs": runs}
    finally:
        emu.close()
    return out


def sizes():
    z = BUILD / "function.zip"
    out = {"stripped_bytes": RELEASE.stat().st_size,
           "unstripped_bytes": RELEASE_SYMBOLS.stat().st_size if RELEASE_SYMBOLS.exists() else 0}
    if z.exists():
        with zipfile.ZipFile(z) as zf:
            out["zip_bytes"] = z.stat().st_size
            out["zip_entries"] = [i.filename for i in zf.infolist()]
            out["zip_bootstrap_compressed"] = sum(i.compress_size for i in zf.infolist()
                                                  if i.filename == "bootstrap")
    return out


# --- optional profile ----------------------------------------------------------------------
SERVER_GROUPS = [
    ("ledger b-tree (insert, text compare)",
     r"^(_bt|bt|varstr|text|lc_collate|FunctionCall2Coll|index_|ucol_|u_|icu|strcoll)"),
    ("COPY input parsing", r"^(NextCopyFrom|CopyFrom|CopyRead|CopyGet|CopyMulti|pq_|varcharrecv|"
                           r"int4recv|date_recv|ReceiveCopy|InputFunctionCall|ReceiveFunctionCall)"),
    ("heap insert", r"^(heap_|RelationPutHeapTuple|PageAdd|RelationGetBufferForTuple|"
                    r"ExecStore|slot_|tts_)"),
    ("WAL", r"^(XLog|pg_comp_crc32c|log_heap|log_newpage)"),
    ("buffers, locks, resource owners",
     r"^(ReadBuffer|LockBuffer|MarkBufferDirty|LWLock|hash_search|hash_bytes|BufTable|PinBuffer|"
     r"UnpinBuffer|ResourceOwner|ReleaseBuffer|StartBufferIO|BufferAlloc|GetVictimBuffer)"),
    ("palloc/pfree", r"^(palloc|pfree|AllocSet|MemoryContext|repalloc)"),
]

PROFILE_GROUPS = [
    ("masking (OpenSSL AES-SIV, context copies)",
     r"^(EVP_|OPENSSL_|CRYPTO_|ossl_|aes|cipher_|CMAC|evp_|mask_|siv_|OSSL_|ENGINE_|ERR_|"
     r"get_size_t_ctx_param|int_ctx)"),
    ("JSON tokenizer (event and bodies)",
     r"^(json_|scan_|read_escape|find$|find_members|get_text|sqs_|skip_|utf8)"),
    ("login rules", r"^(apply_rules|read_body|login_|inet_|__inet_|num_|version_|get_digits)"),
    ("COPY encoding and streaming", r"^(stream_rows|buf_|pg_|put_|PQ|pq|grow)"),
    ("malloc/free", r"^(malloc|free|_int_|cfree|calloc|realloc|tcache|unlink_chunk)"),
    ("memcpy/memcmp/strlen", r"^(__mem|__str|memcpy|memmove|strlen)"),
]


def profile(tmp, srv, events):
    """perf record of the whole machine during one end-to-end pass with the
    unstripped release binary; prints where the bootstrap and the server spend."""
    if not shutil.which("perf"):
        note("perf is not installed: no profile")
        return None
    srv.reset()
    data = os.path.join(tmp, "perf.data")
    run = Runner(tmp, srv, binary=RELEASE_SYMBOLS, name="profile")
    try:
        run.run(events[:1])
        perf = subprocess.Popen(["perf", "record", "-F", "1999", "-a", "-o", data],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.5)
        run.run(events[1:])
        perf.send_signal(signal.SIGINT)
        perf.wait()
    finally:
        run.close()
    shutil.copy(data, OUT / "perf.data")  # for a closer look: perf report -i build/bench/perf.data
    out = {}
    for comm in ("bootstrap", "postgres"):
        rep = subprocess.run(["perf", "report", "-i", data, "--no-children", "--comm", comm,
                              "--sort", "sym", "-g", "none", "--stdio", "--percentage",
                              "relative"], capture_output=True, text=True).stdout
        syms = []
        for line in rep.splitlines():
            m = re.match(r"\s+([\d.]+)%\s+\[(.)\]\s+(.*)", line)
            if m:
                syms.append((float(m.group(1)), m.group(2), m.group(3).strip()))
        groups = {}
        rules = PROFILE_GROUPS if comm == "bootstrap" else SERVER_GROUPS
        for pct, kind, sym in syms:
            g = "kernel" if kind == "k" else next(
                (name for name, rx in rules if re.match(rx, sym)), "other")
            groups[g] = groups.get(g, 0) + pct
        out[comm] = {"groups": groups, "top": syms[:15]}
    return out


# --- the report ----------------------------------------------------------------------------
# --- 10. cost inputs -----------------------------------------------------------------------
COST_BATCH = 1000          # messages per invocation: the template's BatchSize default
COST_MEMORIES = (128, 256, 512)
FULL_CPU_MB = 1769         # Lambda gives a function one full vCPU at this memory size
CGROUP_CPU = Path("/sys/fs/cgroup/cpu")  # cgroup v1's cpu controller, where writable


def cpu_share_cgroup(mb):
    """A cgroup holding its processes to Lambda's CPU share at mb MB (mb/1769 of one CPU,
    by the CFS quota), or None where this machine does not allow one."""
    if not (CGROUP_CPU / "cpu.cfs_quota_us").exists():
        return None
    path = CGROUP_CPU / f"login-etl-bench-{os.getpid()}-{mb}"
    try:
        path.mkdir()
        period = int((path / "cpu.cfs_period_us").read_text())
        (path / "cpu.cfs_quota_us").write_text(str(max(1000, period * mb // FULL_CPU_MB)))
    except OSError:
        try:
            path.rmdir()
        except OSError:
            pass
        return None
    return path


def cost_inputs(tmp, batches):
    """Milliseconds per invocation of a full batch (as Lambda bills it: the event handed
    over to the answer received), at the whole CPU and at Lambda's CPU share of 128, 256 and
    512 MB, against a server that flushes its commits (fsync=on, as RDS does). Also the
    bootstrap's CPU time and the bytes it logs per invocation."""
    msgs = make_messages(COST_BATCH * (batches + 1), seed=9)
    events = [event_bytes(make_event(msgs[i * COST_BATCH:(i + 1) * COST_BATCH]))
              for i in range(batches + 1)]
    srv = pg.Server(fsync=True)
    out = {"batch": COST_BATCH, "batches": batches, "runs": {}}
    try:
        for mb in (None,) + COST_MEMORIES:
            label = str(mb) if mb else "full"
            cgroup = cpu_share_cgroup(mb) if mb else None
            if mb and cgroup is None:
                continue
            srv.reset()
            run = Runner(tmp, srv, name=f"cost-{label}")
            try:
                if cgroup:
                    (cgroup / "tasks").write_text(str(run.proc.pid))
                t0 = time.monotonic()
                (first,) = run.run([events[0]])[1]
                cold = (first.time - t0) * 1000
                size0 = os.path.getsize(run.out_path)
                cpu0, server0 = cpu_of(run.proc.pid), server_cpu(srv)
                walls = []
                for e in events[1:]:
                    t0 = time.monotonic()
                    res = run.emu.wait_result(run.emu.enqueue(e, timeout_s=900), timeout=600)
                    walls.append((res.time - t0) * 1000)
                cpu1, server1 = cpu_of(run.proc.pid), server_cpu(srv)
                handler = run.durations_ms()[1:]
                logged = os.path.getsize(run.out_path) - size0
            finally:
                run.close()
                if cgroup:
                    cgroup.rmdir()
            # Lambda bills each invocation rounded up to the millisecond, and a bill is a
            # sum: the mean of the rounded-up times, not the median.
            out["runs"][label] = {
                "invocation_ms": statistics.mean(math.ceil(w) for w in walls),
                "invocation_median_ms": statistics.median(walls),
                "handler_ms": statistics.median(handler),
                "cpu_ms": (cpu1 - cpu0) * 1000 / batches, "first_invocation_ms": cold,
                # Every postgres process, per 100,000 messages: what RDS's CPU bears.
                "server_cpu_s_per_100k": (server1 - server0) * 1e5 / (batches * COST_BATCH),
                "how": "cgroup CPU quota" if cgroup else "the whole CPU"}
            out["log_bytes_per_invocation"] = round(logged / batches)
            note(f"cost, {label}: {out['runs'][label]['invocation_ms']:.1f} ms billed per "
                 f"invocation of {COST_BATCH:,} messages (median {statistics.median(walls):.1f}, "
                 f"handler {statistics.median(handler):.1f} ms)")
        full = out["runs"]["full"]
        for mb in COST_MEMORIES:
            if str(mb) not in out["runs"]:
                # No cgroup here: the CPU part stretched by the share, the waiting part as is.
                out["runs"][str(mb)] = {
                    "invocation_ms": full["cpu_ms"] * FULL_CPU_MB / mb +
                    max(0.0, full["invocation_ms"] - full["cpu_ms"]),
                    "how": "modelled from the whole CPU's figures (no cgroup here)"}
    finally:
        srv.destroy()
    return out


def cost_report(c):
    runs = c["runs"]
    full = runs["full"]
    say(f"\n10. Cost inputs: ms per 1,000 messages, billed ({c['batch']:,}-message batches, "
        f"mean of {c['batches']} rounded up to the ms, PostgreSQL fsync=on; "
        f"tests/bench/cost.py turns them into dollars)")
    say(f"cost inputs: batch {c['batch']} " + " ".join(
        f"{k}={runs[k]['invocation_ms']:.1f}" for k in ["full"] + [str(m) for m in COST_MEMORIES])
        + f" ms per invocation; handler {full['handler_ms']:.1f} ms, bootstrap CPU "
        f"{full['cpu_ms']:.1f} ms, first invocation {full['first_invocation_ms']:.1f} ms; "
        f"server CPU-s per 100,000 messages {full['server_cpu_s_per_100k']:.2f}; "
        f"log bytes per invocation {c['log_bytes_per_invocation']}")
    for m in COST_MEMORIES:
        say(f"  {m} MB: {runs[str(m)]['how']}")
    ms = {m: runs[str(m)]["invocation_ms"] for m in COST_MEMORIES}
    say("")
    say(cost.table(ms, c["batch"], c["log_bytes_per_invocation"]))


def table(rows, head):
    widths = [max(len(str(r[i])) for r in rows + [head] if r is not None)
              for i in range(len(head))]
    line = "  ".join("-" * w for w in widths)
    say("  ".join(str(h).ljust(w) for h, w in zip(head, widths)))
    say(line)
    for r in rows:
        if r is None:
            say(line)
            continue
        cells = []
        for i, (c, w) in enumerate(zip(r, widths)):
            cells.append(str(c).ljust(w) if i == 0 or i == len(r) - 1 else str(c).rjust(w))
        say("  ".join(cells).rstrip())


def fmt_s(s):
    return f"{s:.3f} s" if s < 10 else f"{s:.1f} s"


def report(f):
    if "data" not in f:  # --fleet / --history / --rekey / --cost alone
        if f.get("cost"):
            cost_report(f["cost"])
        fleet.report(f)
        rekey_bench.report(f)
        return
    d = f["data"]
    say("\n" + "=" * 100)
    say("login-etl benchmark: " + f["machine"])
    say(f"data: {d['records']:,} records (events/generate.py seed {f['seed']}): {d['valid']:,} "
        f"valid, {d['rejected']:,} rejected; receipt handles of {d['receipt_handle_chars']} "
        f"characters, ~{d['bytes'] / d['records']:.0f} bytes a record")
    per = d["records_per_event"]
    say(f"      sent as {d['events']} events filled to the 6 MB limit "
        f"({', '.join(str(x) for x in sorted(set(per), reverse=True)[:3])}... records; "
        f"{d['bytes'] / 1e6:.1f} MB in all): a 10,000-record event of such records is "
        f"{d['stage_event_bytes'] / 1e6:.1f} MB, over Lambda's 6 MB")
    rows_out, disturbed = [], []
    for key, label in (("off", "fsync=off"), ("on", "fsync=on")):
        t = f.get("throughput_" + key)
        if not t:
            continue
        e = t["e2e"]
        n, rows = d["records"], e["rows"]
        fl = t["floors"]
        spread = ", ".join(f"{x:.2f}" for x in e["all_seconds"])
        rows_out.append([f"[{label}] function end to end (release bootstrap + emulator)",
                         fmt_s(e["seconds"]), f"{n / e['seconds']:,.0f}", "1.00",
                         f"median of {len(e['all_seconds'])} ({spread} s)" if len(
                             e["all_seconds"]) > 1 else "one run"])
        rows_out.append(["  of which inside the handler (sum of metric Duration)",
                         fmt_s(e["handler_s"]), f"{n / e['handler_s']:,.0f}",
                         f"{e['handler_s'] / e['seconds']:.2f}",
                         "the rest: runtime HTTP and the emulator"])
        rows_out.append([f"  floor: COPY rows only (binary, from a file)",
                         fmt_s(fl["rows"]["seconds"]), f"{rows / fl['rows']['seconds']:,.0f}",
                         f"{e['seconds'] / fl['rows']['seconds']:.2f}",
                         f"{rows:,} rows; function/floor"])
        rows_out.append([f"  floor: COPY rows only (text format)",
                         fmt_s(fl["rows_text"]["seconds"]),
                         f"{rows / fl['rows_text']['seconds']:,.0f}",
                         f"{e['seconds'] / fl['rows_text']['seconds']:.2f}", "for reference"])
        rows_out.append([f"  floor: COPY rows + COPY ids into text-keyed ledger, one txn",
                         fmt_s(fl["rows_ledger"]["seconds"]),
                         f"{rows / fl['rows_ledger']['seconds']:,.0f}",
                         f"{e['seconds'] / fl['rows_ledger']['seconds']:.2f}",
                         "the exactly-once floor; goal <= 1.3"])
        if "rows_ledger_icu" in fl:
            rows_out.append([f"  floor: the same, ledger key in ICU en-US collation",
                             fmt_s(fl["rows_ledger_icu"]["seconds"]),
                             f"{rows / fl['rows_ledger_icu']['seconds']:,.0f}",
                             f"{e['seconds'] / fl['rows_ledger_icu']['seconds']:.2f}",
                             "as RDS's default en_US.UTF-8 would compare keys"])
        nv = t.get("naive")
        if nv:
            rows_out.append([f"  usual ETL: one INSERT + one commit per message (psql)",
                             fmt_s(nv["seconds"]), f"{rows / nv['seconds']:,.0f}",
                             f"{e['seconds'] / nv['seconds']:.2f}",
                             (f"extrapolated from {nv['rows_measured']:,} rows" if nv["extrapolated"]
                              else "all rows") + f"; function {nv['seconds'] / e['seconds']:.0f}x faster"])
        rows_out.append(["  CPU during the run: bootstrap / postgres / emulator / other",
                         "", "", "", f"{e['bootstrap_cpu_s']:.2f} / {e['postgres_cpu_s']:.2f} / "
                         f"{e['emulator_cpu_s']:.2f} / {e['other_cpu_s']:.2f} s "
                         f"(of {e['machine_cpu_s']:.1f} CPU-s)"])
        rows_out.append(None)
        if e["other_cpu_s"] > 0.2 * e["machine_cpu_s"]:
            disturbed.append(f"{label}: other processes used {e['other_cpu_s']:.1f} of "
                             f"{e['machine_cpu_s']:.1f} CPU-s during the run")
    if rows_out:
        say(f"\n1-3. Throughput, {d['records']:,} records; ratio = function time / that time")
        table(rows_out[:-1], ["figure", "time", "records/s", "ratio", "note"])
        t = f["throughput_off"]
        e, fl = t["e2e"], t["floors"]
        r1 = e["seconds"] / fl["rows"]["seconds"]
        r2 = e["seconds"] / fl["rows_ledger"]["seconds"]
        say(f"  goal ratio <= 1.3: against rows only {r1:.2f} ({'met' if r1 <= 1.3 else 'not met'}); "
            f"against rows + ledger {r2:.2f} ({'met' if r2 <= 1.3 else 'not met'}); fsync=off")
        r3 = e["handler_s"] / fl["rows_ledger"]["seconds"]
        say(f"  goal net ratio <= 1.0: the function's time net of the emulator (handler) against "
            f"rows + text-keyed ledger ids {r3:.2f} ({'met' if r3 <= 1.0 else 'not met'}); fsync=off")
        fc = fl["rows_ledger"].get("backend_cpu_s")
        if fc:
            say(f"  in server CPU-s (less moved by other load): the function's server "
                f"{e['postgres_cpu_s']:.2f} (all postgres processes) against the floor's backend "
                f"{fc:.2f}: {e['postgres_cpu_s'] / fc:.2f}; with the bootstrap's own CPU "
                f"{(e['postgres_cpu_s'] + e['bootstrap_cpu_s']) / fc:.2f}")
        for line in disturbed:
            say(f"  WARNING, disturbed run: {line}; run again on a quiet machine")

    s = f.get("stages")
    if s:
        n = s["parse"]["records"]
        say(f"\n4. Time per stage, one {n:,}-record event ({d['stage_event_bytes'] / 1e6:.1f} MB, "
            f"{s['validate'].get('valid', 0):,} valid rows), median of {s['parse']['repeats']} "
            "(tests/bench/stages.c, release objects)")
        rows = []
        for key, label in (("parse", "parse: sqs_parse of the event"),
                           ("dedupe", "dedupe: messageIds within the batch (idset)"),
                           ("validate", "validate: login_parse of every body"),
                           ("mask", "mask: mask_value of ip and device_id"),
                           ("encode", "encode: binary COPY tuples (pg_batch_add, no server)")):
            x = s[key]
            rows.append([label, f"{x['ms']:.1f}", f"{x['ms'] * 1000 / n:.2f}", ""])
        cpu = sum(s[k]["ms"] for k in ("parse", "dedupe", "validate", "mask", "encode"))
        rows.append(["  sum of the CPU stages", f"{cpu:.1f}", f"{cpu * 1000 / n:.2f}", ""])
        w = s["write"]
        rows.append(["write: finished rows -> rows COPY, ledger COPY, COMMIT",
                     f"{w['ms']:.1f}", f"{w['ms'] * 1000 / n:.2f}",
                     f"server CPU {w['server_cpu_ms']:.0f} ms, client {w['client_cpu_ms']:.0f} ms"])
        h = s["handler"]
        rows.append(["handler: etl_handle, stages overlapped with the server",
                     f"{h['ms']:.1f}", f"{h['ms'] * 1000 / n:.2f}",
                     f"server CPU {h['server_cpu_ms']:.0f} ms, client {h['client_cpu_ms']:.0f} ms"])
        table(rows, ["stage", "ms/event", "us/record", "note"])
        say(f"  serial sum (CPU stages + write) {cpu + w['ms']:.1f} ms vs handler {h['ms']:.1f} ms: "
            f"overlap saves {cpu + w['ms'] - h['ms']:.1f} ms")

    m = f.get("memory")
    if m:
        say("\n5. Resident memory of the release bootstrap (MiB; goal: peak <= 48 on a 6 MB event)")
        table([["after start, before any event", f"{m['idle']['VmHWM']:.1f}",
                f"{m['idle']['VmRSS']:.1f}", ""],
               [f"after one {m['big_event_bytes']:,}-byte event", f"{m['after_1_big']['VmHWM']:.1f}",
                f"{m['after_1_big']['VmRSS']:.1f}",
                "met" if m["after_1_big"]["VmHWM"] <= 48 else "NOT met"],
               ["after five such events", f"{m['after_5_big']['VmHWM']:.1f}",
                f"{m['after_5_big']['VmRSS']:.1f}", ""],
               ["after 10 small invocations (10 records)", f"{m['after_10_small']['VmHWM']:.1f}",
                f"{m['after_10_small']['VmRSS']:.1f}", "another process"],
               [f"after {m['small_count']:,} small invocations",
                f"{m['after_n_small']['VmHWM']:.1f}", f"{m['after_n_small']['VmRSS']:.1f}",
                f"growth {m['after_n_small']['VmRSS'] - m['after_10_small']['VmRSS']:+.2f} MiB RSS"]]
              + [[f"{m[k]['records']:,} tiny {what} records ({m[k]['bytes']:,} bytes), "
                  "another process", f"{m[k]['VmHWM']:.1f}", f"{m[k]['VmRSS']:.1f}",
                  "met" if m[k]["VmHWM"] <= 48 else "NOT met"]
                 for k, what in (("tiny_rejected", "rejected"), ("tiny_valid", "valid"),
                                 ("tiny_replayed", "valid delivered again (all duplicates)"),
                                 ("tiny_refused", "valid, all refused by a BEFORE trigger"))
                 if k in m],
              ["when", "VmHWM", "VmRSS", "note"])

    qf = f.get("quarantine")
    if qf:
        say(f"\n5d. Rejected records in a {qf['records']:,}-record batch, quarantined (the "
            "default) against listed for a retry: handler time (metric Duration), median")
        table([[k, str(qf[k]["rejected"]), f"{qf[k]['quarantine_ms']:.0f}",
                f"{qf[k]['retry_ms']:.0f}", f"{qf[k]['ratio']:.2f}x"]
               for k in ("1pct", "30pct") if k in qf],
              ["rejected", "records", "quarantine ms", "retry ms", "ratio"])

    rf = f.get("refused")
    if rf:
        say(f"\n5c. Refused rows in a {rf['rows']:,}-row batch (one in the middle, or 1%): "
            "handler time (metric Duration), median; goal for one: under 2x the clean batch")
        rows = []
        for key, label in (("line", "CHECK constraint (the error's COPY line names the row)"),
                           ("parts", "deferred trigger at COMMIT (isolated by parts)"),
                           ("line_1pct", "CHECK constraint, 1% of the rows refused (for scale)")):
            x = rf.get(key)
            if not x:
                continue
            goal = "" if key == "line_1pct" else "met" if x["ratio"] < 2 else "NOT met"
            rows.append([label, f"{x['clean_ms']:.0f}", f"{x['refused_ms']:.0f}",
                         f"{x['ratio']:.2f}", goal])
        table(rows, ["how the rows are found", "clean ms", "refused ms", "ratio", "goal < 2"])
        if rf.get("kinds"):
            say(f"\n    By trigger kind and share refused ({rf['rows']:,} rows; handler time against "
                "the clean batch, median of 3; peak transaction-id locks of the function's "
                "backend, goal <= 66)")
            rows = []
            for when in REFUSED_KINDS:
                for share, _ in REFUSED_SHARES:
                    x = rf["kinds"].get(f"{when}_{share}")
                    if not x:
                        continue
                    rows.append([when, f"{x['refused_rows']:,}", f"{x['clean_ms']:.0f}",
                                 f"{x['refused_ms']:.0f}", f"{x['ratio']:.2f}",
                                 str(x["peak_xid_locks"]),
                                 "" if not x["wrong_answers"] else
                                 f"{x['wrong_answers']} wrong answers"])
            table(rows, ["trigger", "refused", "clean ms", "refused ms", "ratio", "xid locks",
                         "note"])

    i = f.get("idset")
    if i:
        say(f"\n5b. The id set (tests/bench/idset_bench.c): CPU ms to put {i['ids']:,} ids, best of 5")
        table([["plain ids (random UUIDs)", f"{i['plain_ms']:.1f}"],
               ["ids chosen to collide under the former unkeyed FNV-1a hash",
                f"{i['fnv_colliding_ms']:.1f}"]], ["ids", "ms"])

    st = f.get("startup")
    z = f.get("sizes")
    if st or z:
        say("\n6. Start-up and size")
        rows = []
        if st:
            b, nn = st["bootstrap"], st["null_next"]
            net = b["median_ms"] - nn["median_ms"]
            verdict = "met" if b["median_ms"] < 5 else \
                "not met" + (" (met net of the rig)" if net < 5 else "")
            rows.append(["process start -> first /next, bootstrap", f"{b['median_ms']:.2f} ms",
                         f"{b['p90_ms']:.2f} ms", f"{b['runs']} runs; goal < 5 ms: {verdict}"])
            rows.append(["  the same for a null client (rig overhead)", f"{nn['median_ms']:.2f} ms",
                         f"{nn['p90_ms']:.2f} ms", "fork/exec from Python, emulator accept"])
            rows.append(["  bootstrap net of the rig", f"{b['median_ms'] - nn['median_ms']:.2f} ms",
                         f"{b['p90_ms'] - nn['p90_ms']:.2f} ms", ""])
            if "cpu_ms" in b:
                rows.append(["  CPU time the bootstrap used before its first /next",
                             f"{b['cpu_ms']:.2f} ms", "", "exec, libc, OpenSSL and key set-up; "
                             "insensitive to load"])
        if z:
            rows.append(["stripped static bootstrap", f"{z['stripped_bytes'] / 1e6:.2f} MB", "",
                         f"{z['stripped_bytes']:,} bytes"])
            if "zip_bytes" in z:
                rows.append(["function.zip (make package)", f"{z['zip_bytes'] / 1e6:.2f} MB", "",
                             f"{z['zip_bytes']:,} bytes: {', '.join(z['zip_entries'])}"])
        table(rows, ["figure", "median", "p90", "note"])

    p = f.get("profile")
    if p:
        say("\n   Profile (perf, one end-to-end pass; share of each process's own samples)")
        for comm in ("bootstrap", "postgres"):
            g = sorted(p[comm]["groups"].items(), key=lambda kv: -kv[1])
            say(f"   {comm}: " + "; ".join(f"{k} {v:.0f}%" for k, v in g if v >= 1))
            say("      top: " + ", ".join(f"{s} {pct:.1f}%" for pct, _, s in p[comm]["top"][:8]))
    if f.get("cost"):
        cost_report(f["cost"])
    fleet.report(f)
    rekey_bench.report(f)
    say(f"\nload average at start {f['load_start']}, at end {f['load_end']}; "
        f"bench took {f['bench_seconds']:.0f} s")
    if f["load_start"][0] > 0.5:
        say("note: the machine was not idle at the start; figures from a shared machine vary "
            "by 20-50% run to run (see 'other' CPU above)")


# --- the table of current figures in tests/bench/README.md ---------------------------------
README = HERE / "README.md"
TABLE_BEGIN = "<!-- make bench writes the lines from here to the end marker; edit bench.py instead -->"
TABLE_END = "<!-- end of the lines make bench writes -->"
MISSING = "\u2014"  # a figure the run did not measure


def _pair(x, y, fmt, sep=" / "):
    return fmt.format(x) + sep + fmt.format(y)


def _fleet_run(f, via, n):
    return next(x for x in f["fleet"]["runs"] if x["via"] == via and x["functions"] == n)


def _fleet_rate(f, via, n):
    return f["fleet"]["records"] / _fleet_run(f, via, n)["seconds"]


def _summary_rows(f):
    """(figure, how to read it from the run's figures, goal) for each row of the README's
    table; the second item is a function of no argument, so that a figure the run lacks (a
    KeyError and the like) becomes MISSING instead of failing the whole table."""
    def e2e(t):
        return (f"{t['e2e']['seconds']:.3f} s, "
                f"{f['data']['records'] / t['e2e']['seconds']:,.0f} records/s")

    def vs_floor(key):
        t = f["throughput_off"]
        return f"{t['e2e'][key] / t['floors']['rows_ledger']['seconds']:.2f}"

    def server_cpu():
        t = f["throughput_off"]
        return f"{t['e2e']['postgres_cpu_s'] / t['floors']['rows_ledger']['backend_cpu_s']:.2f}"

    def naive():
        t = f["throughput_off"]
        return (f"{t['naive']['seconds']:.1f} s (function "
                f"{t['naive']['seconds'] / t['e2e']['seconds']:.0f}x faster)")

    def stages(*keys):
        return " / ".join(f"{f['stages'][k]['ms']:.1f}" for k in keys)

    def mem(a, b, field):
        m = f["memory"]
        return _pair(m[a][field], m[b][field], "{:.1f}") + " MiB"

    def refused(*keys):
        return " / ".join(f"{f['refused'][k]['ratio']:.2f}x" for k in keys)

    def eight_vs_one():
        return _pair(_fleet_rate(f, "direct", 8) / _fleet_rate(f, "direct", 1),
                     _fleet_rate(f, "pgbouncer", 8) / _fleet_rate(f, "pgbouncer", 1), "{:.2f}x")

    def fleet_cpu():
        per = 1e5 / f["fleet"]["records"]
        return _pair(_fleet_run(f, "direct", 1)["server_cpu_s"] * per,
                     _fleet_run(f, "direct", 8)["server_cpu_s"] * per, "{:.2f}")

    def twice():
        via = "pgbouncer, every batch twice"
        return f"{_fleet_rate(f, via, 8):,.0f}, {_fleet_run(f, via, 8)['deadlocks']}"

    def lost_doubled():
        runs = f["fleet"]["runs"]
        return _pair(sum(x["lost"] for x in runs), sum(x["doubled"] for x in runs), "{}")

    def truncate():
        s = fleet.steady_state(f["history"])
        return f"{s['truncate_s'] * 1000:.1f} ms for {s['entries']:,} entries"

    def ledger_copy():
        lc = f["history"]["ledger_copy"]
        return f"{lc['function']['backend_cpu_s'] / lc['text_floor']['backend_cpu_s']:.2f}x"

    def ledger_bytes():
        h = f["history"]
        return f"{h['function_ledger_bytes'] / h['function_ledger_rows']:.0f}"

    def cost_per_million():
        c = f["cost"]
        ms = {m: c["runs"][str(m)]["invocation_ms"] for m in cost.MEMORIES}
        terms = cost.per_million(ms, c["batch"], c["log_bytes_per_invocation"])[(512, "x86_64")]
        return f"${sum(terms.values()):.4f}"

    m, st, sz = f.get("memory"), f.get("startup"), f.get("sizes")
    return [
        ("1. end to end, fsync=off (release bootstrap + emulator)",
         lambda: e2e(f["throughput_off"]), ""),
        ("1. the same, fsync=on", lambda: e2e(f["throughput_on"]), ""),
        ("2. handler time / naive exactly-once floor (rows + text-keyed ledger), fsync=off",
         lambda: vs_floor("handler_s"), "<= 1.0"),
        ("2. end to end / the same floor, fsync=off", lambda: vs_floor("seconds"), "<= 1.3"),
        ("2. server CPU: every postgres process / the floor's backend", server_cpu, ""),
        ("3. one INSERT and one commit per message, fsync=off", naive, ""),
        ("4. ms per 10,000-record event: parse / dedupe / validate / mask / encode",
         lambda: stages("parse", "dedupe", "validate", "mask", "encode"), ""),
        ("4. ms per 10,000-record event: write (COPYs + COMMIT) / handler (overlapped)",
         lambda: stages("write", "handler"), ""),
        ("5. peak RSS, one realistic event just under 6 MB",
         lambda: f"{m['after_1_big']['VmHWM']:.1f} MiB", "<= 48 MiB"),
        ("5. RSS after 10 / after 1,000 small invocations",
         lambda: mem("after_10_small", "after_n_small", "VmRSS"), "no growth"),
        ("5. peak RSS, 6 MB of tiny records: all rejected / all valid",
         lambda: mem("tiny_rejected", "tiny_valid", "VmHWM"), "<= 48 MiB"),
        ("5b. id set, CPU ms for 100,000 ids: plain / built to collide under FNV-1a",
         lambda: _pair(f["idset"]["plain_ms"], f["idset"]["fnv_colliding_ms"], "{:.1f}"),
         "alike"),
        ("5c. one refused row in 8,000, vs clean: named by its COPY line / deferred trigger",
         lambda: refused("line", "parts"), "< 2x"),
        ("5c. 1% of the rows refused, vs clean", lambda: refused("line_1pct"), ""),
        ("5d. 8,000 records, 1% / 30% rejected: handler time quarantined vs listed (retry)",
         lambda: " / ".join(f"{f['quarantine'][k]['quarantine_ms']:.0f} vs "
                            f"{f['quarantine'][k]['retry_ms']:.0f} ms"
                            for k in ("1pct", "30pct")), ""),
        ("6. process start to first /next, median / p90",
         lambda: _pair(st["bootstrap"]["median_ms"], st["bootstrap"]["p90_ms"], "{:.2f}")
         + " ms", "< 5 ms"),
        ("6. stripped bootstrap / function.zip",
         lambda: _pair(sz["stripped_bytes"] / 1e6, sz["zip_bytes"] / 1e6, "{:.2f}") + " MB", ""),
        ("7. fleet: 8 functions' records/s vs 1, direct / through pgbouncer", eight_vs_one,
         ">= 0.8x"),
        ("7. fleet: server CPU-s per 100,000 records, 1 / 8 functions, direct", fleet_cpu,
         "flat"),
        ("7. fleet, every batch to 2 of 8 functions at once: records/s, deadlocks", twice, ""),
        ("7. rows lost / doubled, every fleet run", lost_doubled, "0 / 0"),
        ("8. ledger history: steady-state server CPU, full ledger vs empty",
         lambda: f"{fleet.steady_state(f['history'])['ratio']:.2f}x", "<= 1.15x"),
        ("8. the daily TRUNCATE of a full slot", truncate, ""),
        ("8. ledger COPY alone, server CPU vs the text-keyed floor's", ledger_copy, ""),
        ("8. ledger bytes per message as the function writes it", ledger_bytes, ""),
        ("9. rekey alone: rows re-masked per second, longest transaction",
         lambda: rekey_bench.alone_summary(f["rekey"]), ">= 50,000 rows/s"),
        ("9. the function while the rekey runs, vs alone (the rekey's rows/s meanwhile)",
         lambda: rekey_bench.both_summary(f["rekey"], "both"), ">= 0.8x"),
        ("9. the same with rekey --busy-share 100 (it never pauses)",
         lambda: rekey_bench.both_summary(f["rekey"], "unyielding"), ""),
        ("10. ms billed per 1,000-message invocation, fsync=on: whole CPU / 128 / 256 / 512 MB",
         lambda: " / ".join(f"{f['cost']['runs'][k]['invocation_ms']:.1f}"
                            for k in ("full", "128", "256", "512")), ""),
        ("10. server CPU-s per 100,000 messages in 1,000-message batches, fsync=on",
         lambda: f"{f['cost']['runs']['full']['server_cpu_s_per_100k']:.2f}", ""),
        ("10. dollars per million messages, 512 MB x86_64 (docs/cost.md)", cost_per_million,
         ""),
    ]


def summary_table(f):
    """The README's table of current figures, as Markdown lines (with the line that says
    when and where they were measured)."""
    try:
        data = f"{f['data']['records']:,} records as {f['data']['events']} events"
    except (KeyError, TypeError):
        data = MISSING
    def load(key):  # the 1-minute load average
        return f"{f[key][0]:.1f}" if f.get(key) else MISSING

    lines = [f"Measured by `make bench` on {f.get('date', MISSING)}: {data}; "
             f"{f.get('machine', MISSING)}; load average {load('load_start')} at start, "
             f"{load('load_end')} at end.", "",
             "| figure | this run | goal |", "|---|---|---|"]
    for label, value, goal in _summary_rows(f):
        try:
            v = value()
        except (KeyError, TypeError, IndexError, ZeroDivisionError, StopIteration):
            v = MISSING
        lines.append(f"| {label} | {v} | {goal} |")
    return lines


def write_readme_table(f, path=README):
    """Replaces the lines between TABLE_BEGIN and TABLE_END in path with summary_table(f);
    everything else in the file stays as it is.  Fails when the markers are missing."""
    text = Path(path).read_text(encoding="utf-8")
    head, sep, rest = text.partition(TABLE_BEGIN + "\n")
    mid, sep2, tail = rest.partition(TABLE_END)
    if not sep or not sep2:
        raise SystemExit(f"bench: {path} has no table markers ({TABLE_BEGIN} ... {TABLE_END})")
    Path(path).write_text(head + TABLE_BEGIN + "\n" + "\n".join(summary_table(f)) + "\n"
                          + TABLE_END + tail, encoding="utf-8")


# --- a baseline: another commit's build, measured in the same run ---------------------------
def build_baseline(ref):
    """REF's release bootstrap, built from `git archive REF` in build/baseline/<commit>/
    with this tree's static libraries (kept: the next run against REF reuses it).
    Returns (commit, path)."""
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--verify", f"{ref}^{{commit}}"],
                            capture_output=True, text=True, check=True).stdout.strip()
    top = BUILD / "baseline" / commit[:12]
    binary = top / "build" / "bootstrap"
    if binary.exists():
        return commit, binary
    say(f"building the baseline {ref} ({commit[:12]}) in {top} ...")
    shutil.rmtree(top, ignore_errors=True)
    (top / "build").mkdir(parents=True)
    archive = subprocess.Popen(["git", "-C", str(ROOT), "archive", commit], stdout=subprocess.PIPE)
    subprocess.run(["tar", "-x", "-C", str(top)], stdin=archive.stdout, check=True)
    if archive.wait() != 0:
        sys.exit(f"bench: git archive {ref} failed")
    (top / "VERSION").write_text(f"baseline-{commit[:12]}\n")  # no .git there: tools/version.sh
    os.symlink(BUILD / "deps", top / "build" / "deps")
    subprocess.run(["make", "-C", str(top), "--no-print-directory", f"-j{min(2, os.cpu_count())}",
                    "build/bootstrap"], check=True, stdout=subprocess.DEVNULL)
    return commit, binary


# The end-to-end figures the comparison puts side by side: (key, what it is).
COMPARED = [("seconds", "end to end, s"), ("handler_s", "handler time, s"),
            ("bootstrap_cpu_s", "bootstrap CPU, s"), ("postgres_cpu_s", "server CPU, s")]


def compare(args):
    """--baseline REF: the end-to-end figure (1, fsync=off) of this build and of REF's,
    run in turn on the same server and data (ABBA order), and their ratios."""
    if not BOOTSTRAP.exists():
        sys.exit("bench: build/bootstrap is missing: run `make bench` (or `make test-build`)")
    commit, base = build_baseline(args.baseline)
    t_start = time.monotonic()
    figures["load_start"] = [round(x, 2) for x in os.getloadavg()]
    OUT.mkdir(parents=True, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix="login-etl-bench-")
    runs = {"baseline": [], "this build": []}
    srv = None
    try:
        say(f"generating {args.records:,} records ...")
        msgs, events, ten_k, data = make_data(args.records, args.seed)
        srv = pg.Server(fsync=False, async_commit=True)
        for r in range(args.repeats):
            order = [("baseline", base), ("this build", BOOTSTRAP)]
            for label, binary in order if r % 2 == 0 else order[::-1]:
                runs[label].append(end_to_end(tmp, srv, events, data, 1, f"{label}-{r}", binary))
    finally:
        if srv is not None:
            srv.destroy()
        shutil.rmtree(tmp, ignore_errors=True)
    med = {label: {k: statistics.median(x[k] for x in rs) for k, _ in COMPARED}
           for label, rs in runs.items()}
    figures.update(baseline={"ref": args.baseline, "commit": commit, "runs": runs,
                             "medians": med, "records": args.records, "repeats": args.repeats},
                   load_end=[round(x, 2) for x in os.getloadavg()],
                   bench_seconds=time.monotonic() - t_start)
    for path in filter(None, (OUT / "baseline.json", args.json)):
        with open(path, "w") as f:
            json.dump(figures, f, indent=1)
    say(f"\nthis build against {args.baseline} ({commit[:12]}): {args.records:,} records, "
        f"medians of {args.repeats} runs each, taken in turn")
    table([[what, f"{med['baseline'][k]:.3f}", f"{med['this build'][k]:.3f}",
            f"{med['this build'][k] / med['baseline'][k]:.2f}" if med["baseline"][k] else "—"]
           for k, what in COMPARED], ["figure", "baseline", "this build", "ratio"])
    ok = all(x["ok"] for rs in runs.values() for x in rs)
    say(f"every run wrote the expected rows: {'yes' if ok else 'NO (see the warnings)'}; load "
        f"average at start {figures['load_start']}, at end {figures['load_end']}; figures "
        f"written to {args.json or OUT / 'baseline.json'}")
    return 0


def fleet_only(args):
    """--fleet, --history and/or --rekey: those figures alone, to build/bench/fleet.json
    (rekey.json for --rekey alone)."""
    if not RELEASE.exists():
        sys.exit("bench: build/bootstrap is missing: run `make bench` (or `make test-build`)")
    t_start = time.monotonic()
    figures["load_start"] = [round(x, 2) for x in os.getloadavg()]
    OUT.mkdir(parents=True, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix="login-etl-bench-")
    try:
        if args.fleet:
            figures["fleet"] = fleet.fleet(tmp, args.fleet_records, args.seed,
                                           args.fleet_repeats)
        if args.history:
            figures["history"] = fleet.history(tmp, args.history_preload, args.history_records,
                                               args.history_repeats)
        if args.rekey:
            figures["rekey"] = rekey_bench.rekey(tmp, args.rekey_rows, args.rekey_records,
                                                 args.seed)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    figures["load_end"] = [round(x, 2) for x in os.getloadavg()]
    figures["bench_seconds"] = time.monotonic() - t_start
    name = "rekey.json" if args.rekey and not (args.fleet or args.history) else "fleet.json"
    for path in filter(None, (OUT / name, args.json)):
        with open(path, "w") as f:
            json.dump(figures, f, indent=1)
    report(figures)
    say(f"\nload average at start {figures['load_start']}, at end {figures['load_end']}; "
        f"took {figures['bench_seconds']:.0f} s; figures written to "
        f"{args.json or OUT / name}")
    return 0


def quarantine_only(args):
    """Figure 5d alone (a targeted run): a server of its own, the figures printed and
    written to build/bench/quarantine.json."""
    build_tools()
    tmp = tempfile.mkdtemp(prefix="login-etl-bench-")
    srv = pg.Server(fsync=False, async_commit=True)  # as the throughput figures' fsync=off
    try:
        q = quarantine(tmp, srv, max(args.repeats, 5))
    finally:
        srv.destroy()
        shutil.rmtree(tmp, ignore_errors=True)
    with open(OUT / "quarantine.json", "w") as f:
        json.dump({"quarantine": q, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                   "load": [round(x, 2) for x in os.getloadavg()]}, f, indent=1)
    for key in ("1pct", "30pct"):
        say(f"5d. {key} rejected of {q['records']}: quarantine {q[key]['quarantine_ms']:.0f} ms, "
            f"retry {q[key]['retry_ms']:.0f} ms, {q[key]['ratio']:.2f}x")
    return 0


def cost_only(args):
    """--cost: the cost inputs alone, to build/bench/cost.json."""
    if not RELEASE.exists():
        sys.exit("bench: build/bootstrap is missing: run `make bench` (or `make test-build`)")
    t_start = time.monotonic()
    figures["load_start"] = [round(x, 2) for x in os.getloadavg()]
    OUT.mkdir(parents=True, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix="login-etl-bench-")
    try:
        figures["cost"] = cost_inputs(tmp, args.cost_batches)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    figures["load_end"] = [round(x, 2) for x in os.getloadavg()]
    figures["bench_seconds"] = time.monotonic() - t_start
    with open(args.json or OUT / "cost.json", "w") as f:
        json.dump(figures, f, indent=1)
    cost_report(figures["cost"])
    say(f"\nload average at start {figures['load_start']}, at end {figures['load_end']}; "
        f"took {figures['bench_seconds']:.0f} s; figures written to "
        f"{args.json or OUT / 'cost.json'}")
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--records", type=int, default=100000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3, help="end-to-end runs and floor runs")
    ap.add_argument("--stage-repeats", type=int, default=7)
    ap.add_argument("--small", type=int, default=1000, help="small invocations for memory")
    ap.add_argument("--startup-runs", type=int, default=100)
    ap.add_argument("--no-fsync-on", action="store_true", help="skip the fsync=on pass")
    ap.add_argument("--profile", action="store_true", help="perf profile of one pass")
    ap.add_argument("--quick", action="store_true", help="a smoke run of the bench itself")
    ap.add_argument("--json", help="also write the figures as JSON to this file "
                    "(they always go to build/bench/last.json)")
    ap.add_argument("--report", metavar="FILE", help="print the table of a saved JSON and exit "
                    "(with --readme, also write that run's figures into the README's table)")
    ap.add_argument("--readme", metavar="PATH", nargs="?", const=str(README),
                    help="write the table of current figures into PATH (default "
                    "tests/bench/README.md); a full run with the default options does so "
                    "unless --no-readme")
    ap.add_argument("--no-readme", action="store_true", help="leave the README's table alone")
    ap.add_argument("--bootstrap", metavar="PATH", help="run this binary instead of "
                    "build/bootstrap (a candidate change; sizes still describe build/)")
    ap.add_argument("--stages", metavar="PATH", help="run this stage harness instead of "
                    "build/bench/stages (one linked against a candidate's objects)")
    ap.add_argument("--fleet", action="store_true", help="only the fleet figures (7); with "
                    "--history, both (figures go to build/bench/fleet.json)")
    ap.add_argument("--history", action="store_true", help="only the history figure (8)")
    ap.add_argument("--throughput", action="store_true", help="only end to end and the floors "
                    "at fsync=off (1-2), then the stages (4) unless --stage-repeats 0: a quick "
                    "loop for work on the handler's speed")
    ap.add_argument("--refused", action="store_true", help="only the refused rows (5c) and "
                    "memory (5) figures: a quick loop for work on isolation and memory")
    ap.add_argument("--cost", action="store_true", help="only the cost inputs (10): ms per "
                    "invocation of 1,000 messages at the whole CPU and Lambda's CPU share of "
                    "128/256/512 MB (figures go to build/bench/cost.json)")
    ap.add_argument("--cost-batches", type=int, default=20)
    ap.add_argument("--fleet-records", type=int, default=80000)
    ap.add_argument("--fleet-repeats", type=int, default=3)
    ap.add_argument("--history-preload", type=int, default=5_000_000)
    ap.add_argument("--history-records", type=int, default=80000)
    ap.add_argument("--history-repeats", type=int, default=5)
    ap.add_argument("--quarantine", action="store_true", help="only the quarantine figure "
                    "(5d), to build/bench/quarantine.json")
    ap.add_argument("--rekey", action="store_true", help="only the rekey figure (9), to "
                    "build/bench/rekey.json (make bench BENCH=rekey)")
    ap.add_argument("--baseline", metavar="REF", help="only the end-to-end figure of this "
                    "build against REF's (a commit, branch or tag; built into build/baseline/), "
                    "run in turn, and their ratios")
    ap.add_argument("--rekey-rows", type=int, default=1_000_000)
    ap.add_argument("--rekey-records", type=int, default=100_000,
                    help="records a pass of the function loads during figure 9")
    args = ap.parse_args()
    global BOOTSTRAP, STAGES
    if args.bootstrap:
        BOOTSTRAP = Path(args.bootstrap).resolve()
    if args.stages:
        STAGES = Path(args.stages).resolve()
    fleet.B = sys.modules[__name__]  # fleet.py reports through this module's helpers
    rekey_bench.B = fleet.B  # and so does rekey_bench.py
    if args.report:
        with open(args.report) as f:
            saved = json.load(f)
        report(saved)
        if args.readme:
            write_readme_table(saved, args.readme)
            say(f"table of current figures written to {args.readme}")
        return 0
    if args.quick:
        args.records, args.repeats, args.stage_repeats = 20000, 1, 3
        args.small, args.startup_runs, args.no_fsync_on = 100, 20, True
        args.fleet_records, args.fleet_repeats = 20000, 1
        args.history_preload, args.history_records, args.history_repeats = 500_000, 20000, 1
        args.rekey_rows, args.rekey_records = 100_000, 20000
    if args.baseline:
        return compare(args)
    if args.fleet or args.history or args.rekey:
        return fleet_only(args)
    if args.quarantine:
        return quarantine_only(args)
    if args.cost:
        return cost_only(args)
    if not RELEASE.exists():
        sys.exit("bench: build/bootstrap is missing: run `make bench` (or `make test-build`)")
    t_start = time.monotonic()
    figures["load_start"] = [round(x, 2) for x in os.getloadavg()]
    figures["date"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    build_tools()
    tmp = tempfile.mkdtemp(prefix="login-etl-bench-")
    srv = None
    try:
        say(f"generating {args.records:,} records ...")
        msgs, events, ten_k, figures["data"] = make_data(args.records, args.seed)
        note(f"{len(events)} events in {figures['data']['generate_s']:.1f} s")
        if args.refused:
            srv = pg.Server()
            figures["machine"] = f"{os.cpu_count()} CPUs ({cpu}), PostgreSQL on loopback"
            say("\n[refused] refused rows in an 8,000-row batch")
            figures["refused"] = refused(tmp, srv, max(args.repeats, 3))
            say("\n[memory] 6 MB events, then small invocations")
            figures["memory"] = memory(tmp, srv, events, msgs, args.small)
            args.throughput, args.stage_repeats = True, 0  # nothing else
        else:
            figures["throughput_off"], srv = throughput(tmp, events, figures["data"], False,
                                                        args.repeats, 0, not args.throughput)
        if "throughput_off" in figures:
            figures["machine"] = (f"{os.cpu_count()} CPUs ({cpu}), PostgreSQL "
                                  f"{figures['throughput_off']['server_version']} on loopback")
        if args.throughput and args.profile:
            say("\n[profile] perf record during one end-to-end pass")
            figures["profile"] = profile(tmp, srv, events)
        if not args.throughput or args.stage_repeats:
            say("\n[stages] a 10,000-record event through tests/bench/stages.c")
            figures["stages"] = stages(tmp, srv, ten_k, args.stage_repeats)
        if not args.throughput:
            say("\n[refused] one refused row in an 8,000-row batch")
            figures["refused"] = refused(tmp, srv, max(args.repeats, 3),
                                         matrix_repeats=1 if args.quick else 3)
            say("\n[quarantine] 1% and 30% rejected, quarantined vs listed")
            figures["quarantine"] = quarantine(tmp, srv, max(args.repeats, 3))
            say("\n[memory] 6 MB events, then small invocations")
            figures["memory"] = memory(tmp, srv, events, msgs, args.small)
            say("\n[id set] plain and colliding message ids")
            figures["idset"] = idset_figures()
            if args.profile:
                say("\n[profile] perf record during one end-to-end pass")
                figures["profile"] = profile(tmp, srv, events)
            srv.destroy()
            srv = None
            if not args.no_fsync_on:
                figures["throughput_on"], srv = throughput(tmp, events, figures["data"], True, 1,
                                                           10000)
                srv.destroy()
                srv = None
            say("\n[start-up] process start to the first /next")
            figures["startup"] = startup(tmp, args.startup_runs)
            figures["sizes"] = sizes()
            say("\n[cost] 1,000-message batches at Lambda's CPU shares")
            figures["cost"] = cost_inputs(tmp, args.cost_batches)
            figures["fleet"] = fleet.fleet(tmp, args.fleet_records, args.seed, args.fleet_repeats)
            figures["history"] = fleet.history(tmp, args.history_preload, args.history_records,
                                               args.history_repeats)
            figures["rekey"] = rekey_bench.rekey(tmp, args.rekey_rows, args.rekey_records,
                                                 args.seed)
    finally:
        if srv is not None:
            srv.destroy()
        shutil.rmtree(tmp, ignore_errors=True)
    figures["load_end"] = [round(x, 2) for x in os.getloadavg()]
    figures["bench_seconds"] = time.monotonic() - t_start
    figures["seed"] = args.seed
    last = OUT / ("refused.json" if args.refused else
                  "throughput.json" if args.throughput else "last.json")
    for path in filter(None, (last, args.json)):
        with open(path, "w") as f:
            json.dump(figures, f, indent=1)
    report(figures)
    say(f"figures written to {args.json or last} "
        f"(tests/bench/bench.py --report FILE prints them again)")
    # Only a full run with the default data and the shipped build speaks for the project.
    standard = not (args.quick or args.throughput or args.refused or args.bootstrap
                    or args.stages or args.no_fsync_on) and (args.records, args.seed) == (100000, 1)
    target = args.readme or (str(README) if standard and not args.no_readme else None)
    if target:
        write_readme_table(figures, target)
        say(f"table of current figures written to {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
