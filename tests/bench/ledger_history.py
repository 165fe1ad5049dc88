#!/usr/bin/env python3
"""The ledger's cost against its history: the same records through the release bootstrap
on an empty database, then on one whose ledger already holds millions of committed
messages, plus expired ones in the day slot that the function's retention truncates
during the runs (once per process and day).  Reports the function's time net of the Runtime API emulator (the sum of
the metrics lines' Duration) in both, and their ratio (goal <= 1.15).  It reports; it
never fails on a figure.  Not part of `make test` (the preload takes a minute or two).

    tests/bench/ledger_history.py                      5,000,000 entries, 80,000 records, 5 runs
    tests/bench/ledger_history.py --history 500000 --records 20000 --repeats 1   a smoke run

The server has fsync and full_page_writes on (as RDS has): after each checkpoint the first
change to a page writes the whole page to WAL, which is what made a randomly keyed ledger
cost more as it grew.
"""
import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

from events.generate import event_bytes, fill_events, fit_event, make_messages  # noqa: E402
from rig import pg  # noqa: E402
import bench  # noqa: E402

LEDGER = "login_etl_ledger_v3"


def events_of(records, seed, start_ms):
    msgs = make_messages(records, seed=seed, start_ms=start_ms)
    events = fill_events(msgs)[0]
    valid = sum(1 for m in msgs if m["kind"] == "valid")
    return events, valid


def one_run(tmp, srv, runner, events, valid, label):
    """Queues the events on a running bootstrap; returns (handler s, end-to-end s,
    server CPU s): wall times move with the load of a shared machine, CPU time less."""
    bench.superuser_psql(srv, "CHECKPOINT;")
    skip = len(runner.durations_ms())
    before = int(srv.scalar("SELECT count(*) FROM user_logins"))
    cpu0 = bench.server_cpu(srv)
    entries0 = int(srv.scalar(f"SELECT count(*) FROM {LEDGER}"))
    secs, results = runner.run(events)
    cpu = bench.server_cpu(srv) - cpu0
    bad = [r for r in results if r.kind != "response"]
    rows = int(srv.scalar("SELECT count(*) FROM user_logins")) - before
    if bad or rows != valid:
        bench.note(f"WARNING {label}: {len(bad)} invocation errors, {rows} rows (expected {valid})")
    handler = sum(runner.durations_ms()[skip:]) / 1000
    deleted = entries0 + rows - int(srv.scalar(f"SELECT count(*) FROM {LEDGER}"))
    bench.note(f"{label}: handler {handler:.3f} s, end to end {secs:.3f} s, "
               f"server CPU {cpu:.3f} s, {deleted:,} expired entries deleted")
    return handler, secs, cpu, deleted


def preload(srv, history, expired):
    """`history` ledger entries whose SentTimestamps are spread over the UTC days the
    ledger keeps (from the start of the day 15 days ago to now), in order (the order they
    would have been written in), each committed a moment after it was sent; and `expired`
    more sent on the day 16 days ago, whose day slot the function's retention truncates
    during the runs (once per process and day).  The slot is the UTC day modulo 18
    (function/pg.c, ledger_slot)."""
    t = time.monotonic()
    day0 = "(date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC')"
    bench.superuser_psql(srv, f"""
INSERT INTO {LEDGER} (slot, sent_at, message_id, committed_at)
SELECT (floor(extract(epoch FROM s) / 86400)::int8 % 18)::smallint, s, gen_random_uuid(),
       s + random() * interval '5 seconds'
  FROM (SELECT {day0} - interval '16 days' + g * (interval '1 day' / {max(expired, 1) + 1}) AS s
          FROM generate_series(1, {expired}) g
        UNION ALL
        SELECT {day0} - interval '15 days' + g * ((now() - interval '1 minute' - ({day0}
               - interval '15 days')) / {history})
          FROM generate_series(1, {history}) g) x ORDER BY 1, 2;
VACUUM ANALYZE {LEDGER};
CHECKPOINT;
""")
    bench.note(f"preloaded {history:,} ledger entries and {expired:,} expired ones in "
               f"{time.monotonic() - t:.0f} s")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--history", type=int, default=5_000_000)
    ap.add_argument("--records", type=int, default=80_000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--fsync-off", action="store_true",
                    help="a server with fsync and full_page_writes off (the main bench's)")
    ap.add_argument("--expired", type=int, default=None,
                    help="expired entries in the preload (default: the records of all runs, "
                    "so retention deletes as many as the runs add)")
    args = ap.parse_args()
    if not bench.RELEASE.exists():
        sys.exit("ledger_history: build/bootstrap is missing: run `make`")
    load0 = os.getloadavg()
    tmp = tempfile.mkdtemp(prefix="login-etl-history-")
    # Two servers alike, one empty and one with the history, and their runs taken in
    # turn: the load of a shared machine drifts over minutes, and alternating puts the
    # same drift on both.
    servers = {}
    runners = {}
    out = {}
    try:
        now_ms = int(time.time() * 1000)
        sets = [events_of(args.records, 500 + r, now_ms + r * 10_000_000)
                for r in range(args.repeats)]
        bench.note(f"{len(sets)} sets of {args.records:,} records "
                   f"({len(sets[0][0])} events each)")
        warm = fit_event(make_messages(1, seed=10**6, start_ms=now_ms))[0]
        for phase in ("empty", "history"):
            srv = servers[phase] = pg.Server(fsync=not args.fsync_off,
                                             async_commit=args.fsync_off)
            # A first process creates the tables; the history goes in; the measured
            # process starts after it (as a Lambda environment would) and is warm:
            # connected, one message written.
            first = bench.Runner(tmp, srv, name=f"history-{phase}-first")
            try:
                first.run([event_bytes(warm)])
            finally:
                first.close()
            srv.psql(f"TRUNCATE user_logins, {LEDGER}")
            if phase == "history":
                preload(srv, args.history, args.records * args.repeats if args.expired is None
                        else args.expired)
            runners[phase] = bench.Runner(tmp, srv, name=f"history-{phase}")
            runners[phase].run([event_bytes(warm)])
            out[phase] = {"handler": [], "e2e": [], "cpu": [], "deleted": [],
                          "entries_before": int(srv.scalar(f"SELECT count(*) FROM {LEDGER}"))}
        for r, (events, valid) in enumerate(sets):
            for phase in ("empty", "history"):
                srv = servers[phase]
                if phase == "empty" and r:
                    srv.psql(f"TRUNCATE user_logins, {LEDGER}")
                h, e2e, cpu, deleted = one_run(tmp, srv, runners[phase], events, valid,
                                               f"{phase} run {r + 1}")
                for k, v in (("handler", h), ("e2e", e2e), ("cpu", cpu), ("deleted", deleted)):
                    out[phase][k].append(v)
        srv = servers["history"]
        out["history"]["entries_after"] = int(srv.scalar(f"SELECT count(*) FROM {LEDGER}"))
        out["history"]["expired_left"] = int(srv.scalar(
            f"SELECT count(*) FROM {LEDGER} WHERE slot = "
            "(floor(extract(epoch FROM now()) / 86400)::int8 + 2) % 18"))
    finally:
        for run in runners.values():
            run.close()
        for srv in servers.values():
            srv.destroy()
        shutil.rmtree(tmp, ignore_errors=True)
    e, h = out["empty"], out["history"]
    me, mh = statistics.median(e["handler"]), statistics.median(h["handler"])
    added = sum(v for _, v in sets)  # the valid records of every run: one entry each
    deleted = h["entries_before"] + added - h["entries_after"]
    print("\nledger cost against history (release bootstrap, "
          + ("fsync=off, full_page_writes=off)" if args.fsync_off
             else "fsync=on, full_page_writes=on)"))
    print(f"  {args.records:,} records a run, median of {args.repeats}; time net of the "
          "emulator (sum of handler Duration)")
    print(f"  empty database:            {me:.3f} s  (runs {', '.join(f'{x:.3f}' for x in e['handler'])})")
    print(f"  {args.history:,} entries before: {mh:.3f} s  "
          f"(runs {', '.join(f'{x:.3f}' for x in h['handler'])})")
    print(f"  ratio {mh / me:.2f} (goal <= 1.15: {'met' if mh / me <= 1.15 else 'not met'})")
    ce, ch = statistics.median(e["cpu"]), statistics.median(h["cpu"])
    print(f"  server CPU-s, the same runs: empty {ce:.3f}, with history {ch:.3f}, "
          f"ratio {ch / ce:.2f} (less sensitive to the machine's load than the times)")
    # Retention deletes up to twice a batch's rows while expired entries wait, so the
    # early runs do the deleting and the later ones none: the sums over all runs are
    # the figure of a ledger that deletes as many entries as it adds.
    te, th = sum(e["handler"]), sum(h["handler"])
    ue, uh = sum(e["cpu"]), sum(h["cpu"])
    print(f"  all runs together (retention deleting as many as they add): time {th / te:.2f}x, "
          f"server CPU {uh / ue:.2f}x; the runs that deleted nothing: server CPU "
          + (", ".join(f"{c:.3f} (empty {ec:.3f})" for c, d, ec
                       in zip(h["cpu"], h["deleted"], e["cpu"]) if d < args.records // 100)
             or "none"))
    print(f"  retention during the history runs: the ledger went from {h['entries_before']:,} "
          f"to {h['entries_after']:,} entries with {added:,} added: {deleted:,} expired ones "
          f"deleted by the function; {h['expired_left']:,} expired left")
    load1 = os.getloadavg()
    print(f"  load average at start {load0[0]:.2f}, at end {load1[0]:.2f} "
          "(a shared machine: compare medians of several runs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
