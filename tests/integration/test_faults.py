"""Fault injection: the real bootstrap, the real test Postgres and the Runtime API
emulator, with something breaking in the middle.  After each: no row lost, none written
twice (user_logins and the ledger compared with the expected set, tests/rig/exactly_once.py),
and the process alive (or, for a failure at start, an init error and a clean exit).

- Postgres killed (SIGKILL) while the rows of a batch of thousands stream in, and
  restarted; then killed between the ledger COPY and the rows COPY (made deterministic by
  a lock on user_logins).  The invocation ends before its deadline; SQS's redelivery
  lands every record once.
- The Runtime API cuts the connection in the middle of an event's body: the event is
  served again and processed once.
- The answer to a batch is lost after the commit: the redelivered batch is answered with
  the same list and adds no rows.
- Every allocation failing in turn (tests/rig/preload/failmalloc.c, preloaded into the
  plain build): each allocation of a warmed-up invocation, and each allocation point
  (distinct call stack, first and last time) of the start and first invocation.  Each
  gets an exact answer, an /error, or (at start) an init error; the next invocation is
  answered exactly; nothing crashes or waits for its deadline.  Leaks: the shim counts
  the blocks left at exit; a run that leaves more than a run without a failure is run
  again under valgrind, as is a fixed sample of runs, and valgrind must find no error
  and no definite or indirect leak.

    python3 tests/run.py --only integration -k test_faults
"""
import atexit
import collections
import os
import re
import shutil
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

from events.generate import event_bytes, fit_event, make_event, make_messages
from rig import exactly_once, paths, pg, proc, runtime_api, valgrind
from rig.harness import Etl, wait_for
from rig.messages import msg

SHIM_SRC = paths.ROOT / "tests" / "rig" / "preload" / "failmalloc.c"
SHIM = paths.BUILD / "plain" / "rig" / "failmalloc.so"
WORKERS = 3          # bootstrap processes at once in the allocation tests
RUN_TIMEOUT = 60     # seconds a fault-injected run may take (valgrind: 4x)
DEADLINE_S = 20      # the invocations' Lambda timeout in those runs
ERROR_TYPES = {"Runtime.OutOfMemory", "MaskingFailed", "DatabaseUnavailable"}


# ---- Postgres killed ---------------------------------------------------------------------

# Returns (through a NOTICE) as soon as a COPY into user_logins has stored some rows.
WATCH_COPY = """
DO $$
DECLARE n bigint;
BEGIN
  FOR i IN 1..30000 LOOP
    PERFORM pg_stat_clear_snapshot();
    SELECT tuples_processed INTO n FROM pg_stat_progress_copy
     WHERE relid = 'user_logins'::regclass AND tuples_processed > 0;
    IF n IS NOT NULL THEN
      RAISE NOTICE 'copying % rows', n;
      RETURN;
    END IF;
    PERFORM pg_sleep(0.001);
  END LOOP;
END $$;
"""


def _kill_and_restart(db):
    db.kill()
    db.start()


def test_postgres_killed_while_rows_stream_and_restarted():
    """SIGKILL of the postmaster while a batch of ~9,000 records is streaming, then a
    restart at once; the invocation answers (all listed) or fails before its deadline,
    the process stays up, and SQS's redelivery lands every record exactly once."""
    book = exactly_once.Sent()
    landed = []
    with Etl() as etl:
        db = etl.db
        # the tables exist before the watcher asks about them
        warm = make_messages(3, seed=901)
        assert etl.answer(event_bytes(make_event(warm))) == exactly_once.listed_for(warm)
        book.add(warm)
        # A faster write leaves a shorter window for the kill: try a few more batches.
        for attempt in range(8):
            msgs = make_messages(9300, seed=910 + attempt, invalid_rate=0.02)
            event, n = fit_event(msgs)
            msgs = msgs[:n]
            assert n > 7000, n
            book.add(msgs)
            watcher = subprocess.Popen(["psql", "-X", "-q", "-c", WATCH_COPY],
                                       env=db.superuser_env(), stdout=subprocess.PIPE,
                                       stderr=subprocess.PIPE, text=True)
            time.sleep(0.2)  # the watcher is connected and looking
            t0 = time.monotonic()
            rid = etl.emu.enqueue(event_bytes(event), timeout_s=DEADLINE_S)
            _, err = watcher.communicate(timeout=60)
            seen = re.search(r"copying (\d+) rows", err)
            if seen:
                _kill_and_restart(db)
            res = etl.emu.wait_result(rid, timeout=DEADLINE_S + 10)
            took = res.time - t0
            assert took < DEADLINE_S, f"answered {took:.1f}s after the event was queued"
            assert etl.boot.alive(), etl.boot.output()[-3000:]
            exact = res.kind == "response" and res.failures() == exactly_once.listed_for(msgs)
            hit = any(isinstance(l, dict) and l.get("requestId") == rid and
                      l.get("message") == "database attempt failed" for l in etl.boot.logs())
            if exact and not hit:
                continue  # committed before the kill: try again
            assert seen, f"a batch failed without a kill: {res.body[:300]!r}"
            if exact:
                outcome, again = "answer after a retry on the restarted server", []
            elif res.kind == "error":
                assert res.json()["errorType"] == "DatabaseUnavailable", res.body
                outcome, again = "invocation error", msgs
            else:
                assert res.failures() >= exactly_once.listed_for(msgs)
                outcome = "answer listing the batch"
                again = [m for m in msgs if m["messageId"] in res.failures()]
            landed.append((int(seen.group(1)), n, outcome, round(took, 2)))
            # SQS redelivers what failed (all of it after an invocation error)
            if again:
                event2 = make_event(again, receive_count=2)
                assert etl.answer(event_bytes(event2), timeout_s=60) == \
                    exactly_once.listed_for(again)
            exactly_once.assert_database(db, book, f"after kill {len(landed)}")
            if len(landed) >= 2:
                break
        assert landed, "the kill never landed while the rows were streaming"
        # the process goes on
        last = make_messages(20, seed=990)
        book.add(last)
        assert etl.answer(event_bytes(make_event(last))) == exactly_once.listed_for(last)
        exactly_once.assert_database(db, book)
    for rows, total, outcome, took in landed:
        print(f"     killed after {rows} of {total} rows had reached the server: {outcome} "
              f"{took}s after the event was queued")


test_postgres_killed_while_rows_stream_and_restarted.time_limit = 400


def test_postgres_killed_between_the_ledger_and_the_rows():
    """A lock on user_logins holds the batch after its ledger COPY, before the rows COPY:
    the kill lands exactly there; nothing of the batch may survive, and the redelivery
    writes it once."""
    book = exactly_once.Sent()
    with Etl() as etl:
        db = etl.db
        warm = make_messages(5, seed=921)
        assert etl.answer(event_bytes(make_event(warm))) == exactly_once.listed_for(warm)
        book.add(warm)
        msgs = make_messages(2000, seed=922, invalid_rate=0.05)
        book.add(msgs)
        locker = db.hold_lock("user_logins", "SHARE", 60)
        try:
            t0 = time.monotonic()
            rid = etl.emu.enqueue(event_bytes(make_event(msgs)), timeout_s=DEADLINE_S)
            assert wait_for(lambda: db.scalar(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                "AND query LIKE '%COPY user_logins%'") == "1", timeout=30), \
                "the batch never waited for user_logins after its ledger COPY"
            _kill_and_restart(db)
        finally:
            locker.kill()
            locker.wait()
        res = etl.emu.wait_result(rid, timeout=DEADLINE_S + 10)
        assert res.time - t0 < DEADLINE_S
        if res.kind == "error":
            assert res.json()["errorType"] == "DatabaseUnavailable", res.body
            again = msgs
        else:
            again = [m for m in msgs if m["messageId"] in res.failures()]
            assert res.failures() >= exactly_once.listed_for(msgs)
        # Either the batch died with the server (nothing of it in the ledger), or a retry
        # after the restart committed it whole: then the answer was exact.
        in_ledger = int(db.scalar("SELECT count(*) FROM login_etl_ledger_v3"))
        warm_valid = sum(exactly_once.is_valid(m) for m in warm)
        if res.kind == "response" and res.failures() == exactly_once.listed_for(msgs):
            assert in_ledger == warm_valid + sum(exactly_once.is_valid(m) for m in msgs)
        else:
            assert in_ledger == warm_valid, "part of a killed batch was committed"
        assert etl.answer(event_bytes(make_event(again, receive_count=2)), timeout_s=60) == \
            exactly_once.listed_for(again)
        exactly_once.assert_database(db, book)
    outcome = ("invocation error" if res.kind == "error" else
               "answer listing the batch" if again else "answer after a retry")
    print(f"     killed while the batch waited for user_logins: {outcome} "
          f"{res.time - t0:.2f}s after the event was queued")


# ---- the Runtime API misbehaving ---------------------------------------------------------

def test_runtime_api_cuts_the_connection_in_the_middle_of_a_body():
    book = exactly_once.Sent()
    with Etl() as etl:
        for i, settings in enumerate(({}, {"chunked": True}, {"chunked": True,
                                                             "close_after_response": True})):
            for k, v in settings.items():
                setattr(etl.emu, k, v)
            msgs = make_messages(300, seed=930 + i, invalid_rate=0.05)
            book.add(msgs)
            etl.emu.drop_mid_body_once = True
            assert etl.answer(event_bytes(make_event(msgs))) == exactly_once.listed_for(msgs)
            assert not etl.emu.drop_mid_body_once, "the body was not cut"
            cut = [e for e in etl.emu.requests_log if e[0] == "GET" and e[2] == 0]
            assert len(cut) == i + 1, f"{len(cut)} bodies cut, {i + 1} expected"
            exactly_once.assert_database(etl.db, book, f"cut body {settings}")
        metrics = etl.boot.metrics()
        assert len(metrics) == 3, "an event was handled twice (or not at all)"


def test_an_answer_lost_after_the_commit_is_redelivered_and_adds_no_rows():
    book = exactly_once.Sent()
    with Etl() as etl:
        for i, settings in enumerate(({}, {"chunked": True, "lowercase_headers": True})):
            for k, v in settings.items():
                setattr(etl.emu, k, v)
            # the second batch all valid: its redelivery is answered with an empty list
            msgs = make_messages(400, seed=940 + i, invalid_rate=0.05 if i == 0 else 0)
            book.add(msgs)
            before = len(etl.boot.metrics())
            etl.emu.fail_response_once = True
            rid = etl.emu.enqueue(event_bytes(make_event(msgs)))
            again = etl.emu.wait_redelivery(rid, timeout=60)
            res = etl.emu.wait_result(again, timeout=60)
            assert rid not in etl.emu.results, "the lost answer was recorded"
            assert res.failures() == exactly_once.listed_for(msgs)
            exactly_once.assert_database(etl.db, book, f"lost answer {settings}")
            first, second = etl.boot.metrics()[before:before + 2]
            valid = sum(exactly_once.is_valid(m) for m in msgs)
            assert first["RecordsWritten"] == valid and second["RecordsWritten"] == 0
            assert second["RecordsDuplicate"] == valid
        # the runtime heard "Invalid request ID" for its resent answer and went on
        assert etl.boot.alive()


# ---- every allocation failing in turn ----------------------------------------------------

def _shim():
    """Compiles the fault-injection shim (once; again when its source changes)."""
    if not SHIM.exists() or SHIM.stat().st_mtime < SHIM_SRC.stat().st_mtime:
        SHIM.parent.mkdir(parents=True, exist_ok=True)
        tmp = SHIM.with_suffix(".tmp")
        subprocess.run(["gcc", "-std=c11", "-O1", "-g", "-Wall", "-Wextra", "-Werror",
                        "-shared", "-fPIC", "-o", str(tmp), str(SHIM_SRC), "-ldl"], check=True)
        os.replace(tmp, SHIM)
    return SHIM


_SCRATCH = []


def _scratch():
    """A directory for the runs' logs, removed when the tests end."""
    if not _SCRATCH:
        _SCRATCH.append(tempfile.mkdtemp(prefix="login-etl-faults-"))
        atexit.register(shutil.rmtree, _SCRATCH[0], True)
    return _SCRATCH[0]


def _records(tag):
    """Three records of fixed shape (so every run allocates alike): a valid IPv4 login,
    a message that is not a login record, a valid IPv6 login."""
    def one(i, body):
        return msg(f"fm-{tag}-{i}", body)
    return [one(0, {"user_id": f"fm-{tag}-0", "app_version": "2.3.0", "device_type": "android",
                    "ip": "199.172.111.135", "locale": None, "device_id": "593-47-5928"}),
            one(1, {"foo": "oops_wrong_msg_type", "bar": "123"}),
            one(2, {"user_id": f"fm-{tag}-2", "app_version": 3, "device_type": "ios",
                    "ip": "2001:DB8::1", "locale": "RU", "device_id": "111-22-3333"})]


class Run:
    """One bootstrap process with the shim: invocations ("w",) "a", "b" of three
    records each, then it exits by itself.  tag: 6 characters, unique in the test."""

    def __init__(self, tag, env, warm, db, vg=False):
        self.tag, self.env, self.warm, self.vg = tag, dict(env), warm, vg
        self.names = (["w"] if warm else []) + ["a", "b"]
        self.events = {n: _records(tag + n) for n in self.names}
        self.dir = tempfile.mkdtemp(prefix=f"{tag}-", dir=_scratch())
        self.log_path = os.path.join(self.dir, "shim.log")
        self.vg_log = os.path.join(self.dir, "valgrind.log")
        emu = runtime_api.Emulator()
        try:
            rids = {n: emu.enqueue(event_bytes(make_event(self.events[n])), timeout_s=DEADLINE_S)
                    for n in self.names}
            env = {"LD_PRELOAD": str(SHIM), "FAILMALLOC_LOG": self.log_path, **self.env}
            t0 = time.monotonic()
            wrapper = valgrind.command(self.vg_log, suppress=True) if vg else None
            boot = proc.Bootstrap(emu.address, env=env, binary=paths.PLAIN, db=db,
                                  max_invocations=len(self.names), wrapper=wrapper)
            try:
                self.status = boot.wait(RUN_TIMEOUT * (4 if vg else 1))
            except subprocess.TimeoutExpired:
                self.status = None
                boot.stop()
            self.seconds = time.monotonic() - t0
            results = emu.results
            self.results = {n: results.get(rids[n]) for n in self.names}
            try:
                emu.wait_init_error(timeout=0)
                self.init_error = True
            except TimeoutError:
                self.init_error = False
            self.output = boot.output()
            shutil.rmtree(boot.dir, ignore_errors=True)
        finally:
            emu.close()
        with open(self.log_path) as f:
            lines = f.read().splitlines()
        self.marks = [(l.split()[1], int(l.split()[2])) for l in lines if l.startswith("mark ")]
        self.trace = [l.split(" ", 3) for l in lines if l.startswith("a ")]
        fail = [l.split(" ", 3) for l in lines if l.startswith("fail ")]
        self.fail_index = int(fail[0][1]) if fail else None
        self.fail_sig = fail[0][3] if fail else None
        nth = [int(l.split()[1]) for l in lines if l.startswith("failnth ")]
        self.fail_nth = nth[0] if nth else None
        self.live = {l.split()[1]: int(l.split()[2]) for l in lines if l.startswith("live ")}
        self.exited = any(l.startswith("exit ") for l in lines)

    def expected_status(self):
        """0 after serving; 1 after a failure at start."""
        return 0 if any(self.results[n] is not None for n in self.names) else 1

    def sends(self):
        return [c for what, c in self.marks if what == "sendmsg"]

    def expected(self, n):
        return exactly_once.listed_for(self.events[n])

    def exact(self, n):
        r = self.results[n]
        return r is not None and r.kind == "response" and r.failures() == self.expected(n)

    def redeliver(self):
        """What SQS would deliver again: the listed records of an answer, every record
        of a failed or unanswered invocation."""
        out = []
        for n in self.names:
            r = self.results[n]
            if r is not None and r.kind == "response":
                out += [m for m in self.events[n] if m["messageId"] in r.failures()]
            else:
                out += self.events[n]
        return out

    def problems(self):
        """What is wrong with this run (an empty list when nothing)."""
        out = []
        if self.status is None:
            return ["hung: still running after the time limit"]
        if self.status < 0:
            return [f"killed by signal {-self.status}"]
        if "deadline" in self.output:
            out.append("an invocation ran into its deadline")
        if not self.exited:
            out.append("the shim did not see the exit")
        answered = [n for n in self.names if self.results[n] is not None]
        if not answered:
            # a failure at start: an init error (or, before the Runtime API client
            # exists, a FATAL log line) and a non-zero exit
            if self.status == 0:
                out.append("exited 0 without serving anything")
            if not self.init_error and "FATAL" not in self.output:
                out.append("no init error and no FATAL line")
            return out
        if self.status != 0:
            out.append(f"exit status {self.status} after serving")
        deviating = []
        for n in self.names:
            r = self.results[n]
            if r is None:
                out.append(f"invocation {n} was never answered")
            elif self.exact(n):
                continue
            elif r.kind == "error":
                if r.json().get("errorType") not in ERROR_TYPES:
                    out.append(f"invocation {n}: unexpected error {r.body[:200]!r}")
                deviating.append(n)
            else:
                if not r.failures() >= self.expected(n):
                    out.append(f"invocation {n}: a rejected record is not listed: {r.body!r}")
                deviating.append(n)
        if len(deviating) > 1:
            out.append(f"{len(deviating)} invocations failed for one failed allocation: "
                       f"{deviating}")
        if self.fail_index is None and deviating:
            out.append(f"no allocation failed, yet {deviating} failed")
        if self.warm and "w" in deviating:
            out.append("the warm-up invocation failed")
        return out


def _db_ready(db):
    """Tables in place and the session warm, so that every run allocates alike."""
    db.reset()
    _shim()
    valgrind.plain_bootstrap()
    r = Run("prime0", {}, False, db)
    assert not r.problems() and r.exact("a") and r.exact("b"), (r.problems(), r.output[-2000:])
    return r


def _run_all(plan, db, workers=WORKERS, vg=False):
    """Runs Run(tag, env, warm) for each (tag, env, warm) of plan, a few at a time."""
    pool = ThreadPoolExecutor(workers)
    try:
        return list(pool.map(lambda p: Run(p[0], p[1], p[2], db, vg=vg), plan))
    finally:
        # on the runner's time limit, do not start what is still queued
        pool.shutdown(wait=True, cancel_futures=True)


def _symbolize(offsets):
    """{hex offset: (function, file:line)} for return addresses in the plain build."""
    offs = sorted(set(offsets))
    if not offs:
        return {}
    out = subprocess.run(["addr2line", "-f", "-e", str(paths.PLAIN)] +
                         [hex(int(o, 16) - 1) for o in offs],
                         capture_output=True, text=True, check=True).stdout.splitlines()
    return {o: (fn, loc.rsplit("/", 1)[-1].split(" ")[0])
            for o, fn, loc in zip(offs, out[0::2], out[1::2])}


def _own_point(sig, sym):
    """The innermost frame of the project's own code in a signature, the buffer helpers
    of buf.c left out: "function file:line" (for a failure inside libpq or OpenSSL:
    the call into them)."""
    own = re.compile(r"^(http|log|num|result|rt|config|etl|idset|json|login|main|mask|"
                     r"mask_cli|pg|secrets|siv|sqs)\.c:")
    for o in sig.split()[2:]:
        fn, loc = sym.get(o, ("?", "?"))
        if own.match(loc):
            return f"{fn} {loc}"
    return "?"


def _check_runs(runs, baseline, db, what):
    """Fails on any run's problems; then runs the leak filter's suspects again under
    valgrind, failing on what valgrind finds.  Returns those valgrind runs (each with
    .reproduced: the same allocation failed as in the first run)."""
    bad = [f"{r.tag} ({r.fail_sig}): {p}" for r in runs for p in r.problems()]
    assert not bad, f"{what}: {len(bad)} problems:\n" + "\n".join(bad[:30])
    # Leak filter.  Blocks left at exit by the executable (our code, libpq, cJSON) or by
    # glibc on its behalf: no more than a run without a failure leaves.  Blocks of
    # OpenSSL: after an error it keeps per-thread error state until exit, so the bar is
    # what most runs with the same outcome leave.  Suspects are run again under valgrind.
    def crypto(r):
        return sum(v for m, v in r.live.items() if m.startswith("libcrypto"))
    usual = collections.defaultdict(collections.Counter)
    for r in runs:
        usual[_outcome(r)][crypto(r)] += 1
    suspects = [r for r in runs
                if crypto(r) > usual[_outcome(r)].most_common(1)[0][0]
                or any(v > baseline.live.get(m, 0) for m, v in r.live.items()
                       if not m.startswith("libcrypto"))]
    confirmed = []
    again = _run_all([("v" + r.tag[1:], _same_failure(r), r.warm) for r in suspects], db,
                     workers=2, vg=True)
    for r, first in zip(again, suspects):
        try:
            valgrind.assert_clean(r.vg_log, r.status, r.expected_status())
            assert not r.problems(), r.problems()
            r.reproduced = r.fail_sig == first.fail_sig
        except AssertionError as e:
            confirmed.append(f"{r.tag} ({first.fail_sig}): {str(e)[:3000]}")
    assert not confirmed, (f"{what}: {len(confirmed)} runs with leaks or errors under "
                           f"valgrind; the first:\n" + "\n".join(confirmed[:3]))
    return again


def _same_failure(r):
    """The environment that fails the allocation r failed, whatever the order of the
    others (a run counted by index is told the site and its occurrence instead)."""
    if "FAILMALLOC_FAIL" in r.env and r.fail_nth is not None:
        return {"FAILMALLOC_AFTER": r.env["FAILMALLOC_AFTER"], "FAILMALLOC_SITE": r.fail_sig,
                "FAILMALLOC_NTH": str(r.fail_nth)}
    return r.env


def _redeliver_and_check(runs, db, what):
    book = exactly_once.Sent()
    pending = []
    for r in runs:
        for n in r.names:
            book.add(r.events[n])
        pending += r.redeliver()
    with Etl(reset_db=False) as etl:
        for i in range(0, len(pending), 600):
            chunk = pending[i:i + 600]
            assert etl.answer(event_bytes(make_event(chunk, receive_count=2))) == \
                exactly_once.listed_for(chunk)
    exactly_once.assert_database(db, book, what)


def _outcome(r):
    """What happened to a run, in a few words."""
    if all(r.results[n] is None for n in r.names):
        return "init error, exit 1"
    if r.fail_index is None:
        return "no allocation failed (not reached)"
    a = r.results["a"]
    if r.exact("a"):
        return "answered exactly" if r.exact("b") else "exact, the next one failed"
    if a.kind == "error":
        return f"/error {a.json()['errorType']}"
    return "answer listing more"


def _outcomes(runs):
    c = collections.Counter(_outcome(r) for r in runs)
    return ", ".join(f"{v} {k}" for k, v in c.most_common())


def test_each_allocation_of_an_invocation_failing_in_turn():
    """A warmed-up process (one invocation done, the connection open, the buffers
    grown): every allocation of the next invocation, from the end of the previous answer
    to the request for the one after, fails in turn, each in a fresh process."""
    valgrind.require()
    db = pg.server()
    prime = _db_ready(db)
    count = Run("wcount", {}, True, db)
    assert not count.problems() and all(count.exact(n) for n in count.names), count.problems()
    sends = count.sends()
    # sendmsg: 1 GET w, 2 POST w, 3 GET a, 4 POST a, 5 GET b
    first, last = sends[1], sends[4]
    n = last - first
    assert 5 < n < 2000, (sends, n)
    plan = [(f"w{k:05d}", {"FAILMALLOC_AFTER": "2", "FAILMALLOC_FAIL": str(k)}, True)
            for k in range(n + 1)]
    t0 = time.monotonic()
    runs = _run_all(plan, db)
    again = _check_runs(runs, count, db, "warm invocation")
    # a fixed sample under valgrind too: every 8th allocation
    sample = _run_all([("x" + tag[1:], env, True) for tag, env, _ in plan[3::8]], db,
                      workers=2, vg=True)
    for r in sample:
        valgrind.assert_clean(r.vg_log, r.status, r.expected_status())
        assert not r.problems(), (r.tag, r.problems())
    _redeliver_and_check([prime, count] + runs + again + sample, db, "warm invocation")
    failed = [r for r in runs if r.fail_index is not None]
    sym = _symbolize(o for r in failed for o in r.fail_sig.split()[2:])
    points = {_own_point(r.fail_sig, sym) for r in failed}
    print(f"     {n} allocations of a warm 3-record invocation, each failed in turn "
          f"({len(failed)} failures injected, at {len(points)} points of our code) in "
          f"{time.monotonic() - t0:.0f}s: {_outcomes(runs)}; {len(again)} left more blocks "
          f"than usual (valgrind on the same failure, {sum(r.reproduced for r in again)} "
          f"reproduced: no leak of ours); {len(sample)} more under valgrind: clean")


test_each_allocation_of_an_invocation_failing_in_turn.time_limit = 600


def test_each_allocation_point_of_a_cold_start_failing():
    """A fresh process: init (configuration, keys, OpenSSL), the first /next, the first
    connection to Postgres (SCRAM) and the first batch.  Every distinct allocation
    point (call stack) up to the request for the second invocation fails, the first and
    the last time it is reached, each in a fresh process."""
    valgrind.require()
    db = pg.server()
    prime = _db_ready(db)
    count = Run("ccount", {"FAILMALLOC_TRACE": "1"}, False, db)
    assert not count.problems() and count.exact("a") and count.exact("b"), count.problems()
    end = count.sends()[2]  # 1 GET a, 2 POST a, 3 GET b
    sites = collections.OrderedDict()
    for _, k, _, sig in count.trace:
        if int(k) < end:
            sites.setdefault(sig, []).append(int(k))
    plan = []
    for sig, ks in sites.items():
        for nth in sorted({0, len(ks) - 1}):
            plan.append((f"c{len(plan):05d}", {"FAILMALLOC_SITE": sig, "FAILMALLOC_NTH": str(nth)},
                         False))
    t0 = time.monotonic()
    runs = _run_all(plan, db)
    again = _check_runs(runs, count, db, "cold start")
    # valgrind on one run per point of our code (the first failure there)
    sym = _symbolize(o for sig in sites for o in sig.split()[2:])
    by_point = collections.OrderedDict()
    for (tag, env, warm), r in zip(plan, runs):
        if r.fail_sig:
            by_point.setdefault(_own_point(r.fail_sig, sym), (tag, env, warm))
    picks = list(by_point.values())
    picks = picks[::max(1, len(picks) // 12)][:12]
    sample = _run_all([("y" + tag[1:], env, warm) for tag, env, warm in picks], db, workers=2,
                      vg=True)
    for r in sample:
        valgrind.assert_clean(r.vg_log, r.status, r.expected_status())
        assert not r.problems(), (r.tag, r.problems())
    _redeliver_and_check([prime, count] + runs + again + sample, db, "cold start")
    failed = [r for r in runs if r.fail_index is not None]
    print(f"     {len(count.trace)} allocations from main to the second /next, {end} before "
          f"it at {len(sites)} distinct call stacks ({len(by_point)} points of our code); "
          f"{len(plan)} runs, {len(failed)} failures injected, in "
          f"{time.monotonic() - t0:.0f}s: {_outcomes(runs)}; {len(again)} left more blocks "
          f"than usual (valgrind on the same failure, {sum(r.reproduced for r in again)} "
          f"reproduced: no leak of ours); {len(sample)} more under valgrind: clean")


test_each_allocation_point_of_a_cold_start_failing.time_limit = 600
