"""Figure 9 of `make bench`: `bootstrap rekey` after a rotation of the masking key.

    tests/bench/bench.py --rekey        this figure alone (make bench BENCH=rekey)

A private PostgreSQL (fsync off, asynchronous commit, like the other figures' servers)
holds 1,000,000 rows of user_logins masked under the old key (k1's place is taken by the
test key t1): realistic rows drawn from 50,000 ips and 50,000 device ids, so that duplicate
groups exist, loaded by COPY and vacuumed, as an old table is.  The release bootstrap runs:

  rekey alone      the rekey of the whole table, with nothing else running;
  ingest alone     the function (the release bootstrap behind the Runtime API emulator,
                   deployed with the new keyset) loading passes of 100,000 realistic records
                   (the events of figure 1, each pass under new message ids);
  both at once     the table loaded again, the rekey started, and the function loading passes
                   for as long as it runs, paired: every other pass runs with the rekey
                   stopped (SIGSTOP, then SIGCONT), so that the function's rate with the
                   rekey and without it are taken in turn under the same load of the
                   machine; the ratio is that of the two medians.  A stopped rekey holds
                   its transaction's row locks on rows the function never touches, and
                   its connection idle; its reported rate then counts the stopped time as
                   pause;
  both, no yield   the same with `--busy-share 100`: the rekey does not pause while the
                   function loads (by default it works a fifth of the time then).

For each: the rekey's own rate (rows re-masked per second of its work, from its summary line,
without the counts before and after) and wall time with them, its longest transaction, the
function's records per second and their ratio to its rate alone, the invocations' handler
time (median and longest), the server's CPU, and lock waits over 20 ms in the server log.
After every rekey, `bootstrap rekey --verify` must pass.  The functions of the bench module
are passed in as `B`, as for fleet.py.
"""
import itertools
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import time

from rig import keys, pg
from rig.keys import NEW, OLD

B = None  # tests/bench/bench.py, set by it

ROTATED = keys.env(NEW, [OLD])  # the keyset deployed for the rotation
CONF = ["log_lock_waits = on", "deadlock_timeout = '20ms'"]


def _row_file(srv, n, seed):
    """Writes n user_logins rows masked under OLD, in COPY text format, where the server
    can read them; returns the path."""
    d = os.path.join(srv.dir, "bench")
    os.makedirs(d, exist_ok=True)
    path = os.path.join(d, "rekey-rows.txt")
    rnd = random.Random(seed)
    ips = [keys.mask(OLD, f"{rnd.randrange(1, 224)}.{rnd.randrange(256)}.{rnd.randrange(256)}."
                          f"{rnd.randrange(1, 255)}") for _ in range(50000)]
    devs = [keys.mask(OLD, f"{rnd.randrange(1000):03d}-{rnd.randrange(100):02d}-"
                           f"{rnd.randrange(10000):04d}") for _ in range(50000)]
    users = [f"{rnd.getrandbits(128):032x}" for _ in range(n // 3)]
    null = "\\N"  # COPY's NULL
    with open(path, "w") as f:
        for i in range(n):
            u = users[rnd.randrange(len(users))]
            uid = f"{u[:8]}-{u[8:12]}-4{u[13:16]}-a{u[17:20]}-{u[20:32]}"
            ip = ips[rnd.randrange(len(ips))] if rnd.random() > 0.01 else null
            locale = null if i % 3 else "RU"
            f.write(f"{uid}\t{'android' if i % 5 < 3 else 'ios'}\t{ip}\t"
                    f"{devs[rnd.randrange(len(devs))]}\t{locale}\t2003000\t"
                    f"2024-06-{1 + i % 30:02d}\n")
    if srv.as_user:
        shutil.chown(d, srv.as_user, srv.as_user)
        shutil.chown(path, srv.as_user, srv.as_user)
    return path


def _reload(srv, path):
    """The table as before the rotation: emptied, loaded, vacuumed, checkpointed."""
    B.superuser_psql(srv, f"TRUNCATE user_logins;\nCOPY user_logins FROM '{path}';\n"
                          "VACUUM (ANALYZE) user_logins;\nCHECKPOINT;\n")


def _server_cpu(srv):
    """CPU seconds of the server: its live processes (B.server_cpu), plus those of the
    backends that ended, which the postmaster reaped (its cutime and cstime): a rekey's
    backend ends with it."""
    with open(os.path.join(srv.data, "postmaster.pid")) as f:
        pm = int(f.readline())
    with open(f"/proc/{pm}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    reaped = (int(fields[13]) + int(fields[14])) / os.sysconf("SC_CLK_TCK")
    return B.server_cpu(srv) + reaped


def _env(srv):
    env = {"PATH": "/usr/bin:/bin"}
    env.update(srv.env())
    env.update({k: v for k, v in ROTATED.items() if v is not None})
    return env


class Rekey:
    """A `bootstrap rekey` run of the release binary, its output in the bench's tmp."""

    def __init__(self, tmp, srv, *args, name="rekey"):
        self.out_path = os.path.join(tmp, f"{name}.out")
        self.err_path = os.path.join(tmp, f"{name}.err")
        self.t0 = time.monotonic()
        self.proc = subprocess.Popen([str(B.BOOTSTRAP), "rekey", *args], env=_env(srv),
                                     stdout=open(self.out_path, "wb"),
                                     stderr=open(self.err_path, "wb"), stdin=subprocess.DEVNULL)
        self.status = None
        self.cpu_s = 0.0
        self.wall_s = None

    def poll(self):
        """True while it runs; reaps it (with its CPU time) once it ended."""
        if self.status is not None:
            return False
        pid, st, ru = os.wait4(self.proc.pid, os.WNOHANG)
        if pid == 0:
            return True
        self._reaped(st, ru)
        return False

    def wait(self):
        if self.status is None:
            _, st, ru = os.wait4(self.proc.pid, 0)
            self._reaped(st, ru)
        return self.status

    def _reaped(self, st, ru):
        self.wall_s = time.monotonic() - self.t0
        self.status = os.waitstatus_to_exitcode(st)
        self.proc.returncode = self.status
        self.cpu_s = ru.ru_utime + ru.ru_stime

    def summary(self):
        """The summary line's figures: rows, values, seconds, rows/s, longest txn ms."""
        with open(self.out_path) as f:
            text = f.read()
        m = re.search(r"rekey: (\w+): ([\d,]+) rows re-masked \(([\d,]+) values\) to key \S+ in "
                      r"([\d.]+) s, ([\d,]+) rows/s; longest transaction (\d+) ms", text)
        if not m:
            return {"line": text.strip()[-300:], "ok": False}
        n = lambda s: int(s.replace(",", ""))  # noqa: E731
        return {"ok": m.group(1) == "done", "rows": n(m.group(2)), "values": n(m.group(3)),
                "work_s": float(m.group(4)), "rows_per_s": n(m.group(5)),
                "longest_txn_ms": int(m.group(6))}


def _ingest_parts(events):
    """Each event cut around its messageIds' first 8 hex digits, so that a pass can send
    the same records under new ids (the ledger would otherwise find them all done)."""
    marker = b'"messageId":"'
    out = []
    for e in events:
        pieces, pos = [], 0
        while (i := e.find(marker, pos)) >= 0:
            pieces.append(e[pos:i + len(marker)])
            pos = i + len(marker) + 8
        pieces.append(e[pos:])
        out.append(pieces)
    return out


def _pass(runner, parts, k, records):
    """One pass of the records under ids tagged k; returns (seconds, ok)."""
    tag = f"{k:08x}".encode()
    secs, results = runner.run([tag.join(p) for p in parts])
    ok = all(r.kind == "response" for r in results)
    return secs, ok


_passes = itertools.count(1)  # each pass's message ids are tagged with the next number


def _phase(tmp, srv, runner, parts, data, label, rekey_args=None, passes=3, paired=False):
    """One phase: the rekey (rekey_args not None), the function's passes (passes > 0 when
    alone; while the rekey runs when both), or both at once; paired: every other pass with
    the rekey stopped, for the solo rate under the same load.  Returns its figures."""
    out = {"label": label}
    log0 = os.path.getsize(srv.log) if os.path.exists(srv.log) else 0
    s0 = _server_cpu(srv)
    d0 = len(runner.durations_ms()) if runner else 0
    busy0, tot0 = B.machine_busy()
    rk = Rekey(tmp, srv, *rekey_args, name=label.replace(" ", "-")) if rekey_args is not None \
        else None
    rates, solo, bad = [], [], 0
    turn = itertools.count()
    while runner and (rk.poll() if rk else len(rates) < passes):
        stopped = paired and rk is not None and next(turn) % 2 == 0
        if stopped:
            os.kill(rk.proc.pid, signal.SIGSTOP)
        try:
            secs, ok = _pass(runner, parts, next(_passes), data["records"])
        finally:
            if stopped:
                os.kill(rk.proc.pid, signal.SIGCONT)
        bad += not ok
        if stopped:
            solo.append(data["records"] / secs)  # the same moment's rate without the rekey
        elif rk is None or rk.poll():
            rates.append(data["records"] / secs)  # a pass that ended while the rekey ran
    if rk:
        rk.wait()
        out["rekey"] = dict(rk.summary(), status=rk.status, wall_s=rk.wall_s, cpu_s=rk.cpu_s)
        v = subprocess.run([str(B.BOOTSTRAP), "rekey", "--verify"], env=_env(srv),
                           capture_output=True, text=True)
        out["verified"] = v.returncode == 0
        if not out["verified"] or rk.status != 0:
            B.note(f"WARNING {label}: rekey exit {rk.status}, --verify exit {v.returncode}: "
                   f"{v.stdout.strip()[-200:]}")
    if runner:
        dur = runner.durations_ms()[d0:]
        out.update(passes=len(rates), records_per_s=statistics.median(rates) if rates else None,
                   paired_solo_per_s=statistics.median(solo) if solo else None,
                   paired_solo_passes=len(solo),
                   all_rates=rates, failed_passes=bad,
                   handler_ms_median=statistics.median(dur) if dur else None,
                   handler_ms_max=max(dur) if dur else None)
    busy1, tot1 = B.machine_busy()
    out["server_cpu_s"] = _server_cpu(srv) - s0
    out["machine_busy_share"] = (busy1 - busy0) / max(tot1 - tot0, 1e-9)
    with open(srv.log, "rb") as f:
        f.seek(log0)
        text = f.read().decode("utf-8", "replace")
    out["lock_waits"] = text.count("still waiting for")
    out["deadlocks"] = text.count("deadlock detected")
    out["load"] = [round(x, 2) for x in os.getloadavg()]
    r = out.get("rekey", {})
    B.note(f"{label}: " + (f"rekey {r.get('rows_per_s', 0):,} rows/s ({r.get('wall_s', 0):.1f} s "
                           f"with the counts), longest transaction {r.get('longest_txn_ms')} ms; "
                           if r else "") +
           (f"function {out['records_per_s']:,.0f} records/s over {out['passes']} passes"
            if runner and out.get("records_per_s") else "") +
           f"; load {out['load']}")
    return out


def rekey(tmp, rows, records, seed):
    """Figure 9.  Returns its dict."""
    B.say(f"\n[rekey] {rows:,} rows re-masked after a key rotation, alone and while the "
          f"function loads")
    srv = pg.Server(async_commit=True, conf=CONF)
    out = {"rows": rows, "records": records, "load_start": [round(x, 2) for x in os.getloadavg()],
           "server_version": srv.scalar("SHOW server_version")}
    runner = None
    try:
        t = time.monotonic()
        path = _row_file(srv, rows, seed)
        _, events, _, data = B.make_data(records, seed)
        parts = _ingest_parts(events)
        B.note(f"{rows:,} rows and {records:,} records generated in {time.monotonic() - t:.0f} s")
        env = {k: v for k, v in ROTATED.items() if v is not None}
        runner = B.Runner(tmp, srv, env=env, name="rekey-function")
        _pass(runner, parts, 0, records)  # creates the tables; warms the connection
        _reload(srv, path)
        out["alone"] = _phase(tmp, srv, None, parts, data, "rekey alone", [])
        out["ingest"] = _phase(tmp, srv, runner, parts, data, "ingest alone", None, passes=3)
        _reload(srv, path)
        out["both"] = _phase(tmp, srv, runner, parts, data, "both at once", [], paired=True)
        _reload(srv, path)
        out["unyielding"] = _phase(tmp, srv, runner, parts, data, "both no yield",
                                   ["--busy-share", "100"], paired=True)
        out["ingest_after"] = _phase(tmp, srv, runner, parts, data, "ingest alone again", None,
                                     passes=3)
    finally:
        if runner:
            runner.close()
        srv.destroy()
    out["load_end"] = [round(x, 2) for x in os.getloadavg()]
    return out


def solo_rate(r):
    """The function's records/s alone: the mean of the solo phases before and after."""
    return statistics.mean(x for x in (r["ingest"]["records_per_s"],
                                       r["ingest_after"]["records_per_s"]) if x)


def alone_summary(r):
    """The README table's value of the rekey alone."""
    a = r["alone"]["rekey"]
    return f"{a['rows_per_s']:,} rows/s, {a['longest_txn_ms']} ms"


def phase_solo(r, key):
    """The function's rate alone to compare a phase with: the passes of the same phase with
    the rekey stopped (paired), else the solo phases' mean."""
    return r[key].get("paired_solo_per_s") or solo_rate(r)


def both_summary(r, key):
    """The README table's value of a phase with both at once."""
    x = r[key]
    return f"{x['records_per_s'] / phase_solo(r, key):.2f}x ({x['rekey']['rows_per_s']:,} rows/s)"


def report(f):
    r = f.get("rekey")
    if not r:
        return
    B.say(f"\n9. Rekey: {r['rows']:,} rows of user_logins under the old key, re-masked by "
          f"`bootstrap rekey` (release build) on PostgreSQL {r['server_version']}; the function "
          f"loads passes of {r['records']:,} records under new message ids")
    solo = solo_rate(r)
    rows = []
    for key in ("alone", "ingest", "both", "unyielding", "ingest_after"):
        x = r[key]
        k = x.get("rekey")
        label = {"alone": "rekey alone", "ingest": "function alone",
                 "both": "both at once", "unyielding": "both, rekey --busy-share 100",
                 "ingest_after": "function alone, again"}[key]
        rows.append([label,
                     f"{k['rows_per_s']:,}" if k and k.get("ok") else ("-" if not k else "FAILED"),
                     f"{k['wall_s']:.1f} s" if k else "-",
                     (f"{k['longest_txn_ms']} ms" + ("*" if x.get("paired_solo_passes") else ""))
                     if k and k.get("ok") else "-",
                     f"{x['records_per_s']:,.0f}" if x.get("records_per_s") else "-",
                     f"{x['records_per_s'] / phase_solo(r, key):.2f}"
                     if x.get("records_per_s") else "-",
                     f"{x['handler_ms_median']:.0f} / {x['handler_ms_max']:.0f} ms"
                     if x.get("handler_ms_median") is not None else "-",
                     f"{x['server_cpu_s']:.1f}", f"{x['lock_waits']}/{x['deadlocks']}",
                     ("verified" if x.get("verified") else "NOT VERIFIED") if k else
                     f"{x.get('passes', 0)} passes; load {x['load']}"])
    B.table(rows, ["phase", "rekey rows/s", "rekey wall", "longest txn", "function records/s",
                   "vs alone", "handler median/max", "server CPU-s", "lock waits/deadlocks",
                   "check"])
    a = r["alone"]["rekey"]
    both = r["both"].get("records_per_s")
    if a.get("ok"):
        B.say(f"  rekey alone: {a['rows_per_s']:,} rows/s (goal >= 50,000: "
              f"{'met' if a['rows_per_s'] >= 50000 else 'NOT met'})")
    if both:
        q = both / phase_solo(r, "both")
        B.say(f"  the function while the rekey runs: {q:.2f}x its rate alone (goal >= 0.8: "
              f"{'met' if q >= 0.8 else 'NOT met'}); with --busy-share 100 (no pause): "
              f"{(r['unyielding'].get('records_per_s') or 0) / phase_solo(r, 'unyielding'):.2f}x")
    B.say("  * a phase with both stops the rekey for every other pass: its longest transaction "
          "and its rows/s count the moments it was stopped (see 'rekey alone' for its own)")
    B.say(f"  'vs alone' of a phase with both: against the same phase's passes with the rekey "
          f"stopped ({r['both'].get('paired_solo_passes', 0)} and "
          f"{r['unyielding'].get('paired_solo_passes', 0)} passes), taken in turn; of a solo "
          f"phase: against the mean of the two solo phases; load average {r['load_start']} "
          f"at start, {r['load_end']} at end")
