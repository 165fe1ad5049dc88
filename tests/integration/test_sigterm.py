"""SIGTERM, as Lambda sends it at shutdown when an extension is registered (then SIGKILL
500 ms later): idle in /next, the runtime closes its database connection and exits 0 with
a log line; in the middle of a batch, the batch runs to its answer (which lists exactly
what was not committed) and the process exits without taking another invocation."""
import signal
import time

from events.generate import event_bytes, make_event, make_messages
from rig import paths, pg
from rig.harness import Etl, wait_for


def _function_backends(db):
    return int(db.scalar("SELECT count(*) FROM pg_stat_activity "
                         "WHERE application_name = 'login-etl'"))


def _json_lines_only(boot):
    lines = boot.logs()
    assert all(isinstance(l, dict) for l in lines), [l for l in lines if not isinstance(l, dict)]
    return lines


def test_sigterm_while_idle_closes_the_connection_and_exits_0():
    for binary in (paths.RELEASE, paths.ASAN):
        etl = Etl(binary=binary)
        try:
            msgs = make_messages(20, seed=61, invalid_rate=0)
            assert etl.answer(event_bytes(make_event(msgs))) == set()
            assert _function_backends(etl.db) == 1
            # Blocked in /next again.
            assert wait_for(lambda: len(etl.emu.next_requests) == 2)
            time.sleep(0.1)
            t0 = time.monotonic()
            etl.boot.proc.send_signal(signal.SIGTERM)
            status = etl.boot.wait(timeout=10)
            took_ms = (time.monotonic() - t0) * 1000
            print(f"{binary.name}: SIGTERM while idle to exit: {took_ms:.0f} ms")
            assert status == 0, etl.boot.output()[-2000:]
            lines = _json_lines_only(etl.boot)
            assert lines[-1]["message"].startswith("shut down on SIGTERM"), lines[-3:]
            assert any(l.get("message", "").startswith("SIGTERM while waiting") for l in lines)
            assert wait_for(lambda: _function_backends(etl.db) == 0, timeout=5)
            assert etl.count() == 20
        finally:
            etl.close(expect_alive=False)


def test_sigterm_mid_batch_answers_only_what_was_committed():
    """The batch waits on a lock when SIGTERM comes.  (a) The lock goes: the batch commits,
    its answer lists nothing, the process exits 0.  (b) The lock stays past the deadline:
    nothing is committed, the answer lists every record, the process exits 0.  In both,
    no further invocation is taken."""
    for release_lock in (True, False):
        etl = Etl(binary=paths.RELEASE)
        locker = None
        try:
            db = etl.db
            warm = make_messages(1, seed=62, invalid_rate=0)
            assert etl.answer(event_bytes(make_event(warm))) == set()  # the tables exist
            locker = db.hold_lock("user_logins", "SHARE", 60)
            msgs = make_messages(300, seed=63 + release_lock, invalid_rate=0)
            deadline = int(time.time() * 1000) + 4000
            rid = etl.emu.enqueue(event_bytes(make_event(msgs)), deadline_ms=deadline)
            later = etl.emu.enqueue(event_bytes(make_event(make_messages(5, seed=65))))
            assert wait_for(lambda: db.scalar(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                "AND query LIKE '%COPY user_logins%'") == "1", timeout=10)
            etl.boot.proc.send_signal(signal.SIGTERM)
            time.sleep(0.3)
            assert etl.boot.alive(), "SIGTERM ended the process in the middle of a batch"
            t0 = time.monotonic()
            if release_lock:
                db.psql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE application_name = 'locker'", user=pg.SUPERUSER,
                        password=pg.SUPERPASS)
            res = etl.emu.wait_result(rid, timeout=15)
            status = etl.boot.wait(timeout=10)
            took_ms = (time.monotonic() - t0) * 1000
            print(f"mid-batch, lock {'released' if release_lock else 'held'}: "
                  f"to answer and exit {took_ms:.0f} ms")
            assert status == 0, etl.boot.output()[-2000:]
            listed = res.failures()
            committed = int(db.scalar("SELECT count(*) FROM user_logins",
                                      user=pg.SUPERUSER, password=pg.SUPERPASS))
            if release_lock:
                assert listed == set() and committed == 301, (len(listed), committed)
            else:
                assert listed == {m["messageId"] for m in msgs}, len(listed)
                assert committed == 1
            # The queued invocation was not taken.
            try:
                etl.emu.wait_result(later, timeout=0.5)
                assert False, "an invocation was taken after SIGTERM"
            except TimeoutError:
                pass
            assert len(etl.emu.next_requests) == 2, etl.emu.next_requests
            lines = _json_lines_only(etl.boot)
            assert lines[-1]["message"].startswith("shut down on SIGTERM"), lines[-3:]
        finally:
            if locker and locker.poll() is None:
                locker.kill()
                locker.wait()
            etl.close(expect_alive=False)
