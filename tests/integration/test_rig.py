"""The test rig itself: the shared PostgreSQL server survives what a test does to it.

A test that kills or breaks the shared server must fail alone, never every test
after it: pg.server() notices a dead server and starts it again.  The tests here
run in this order (the runner takes a file's tests in the order they are written).
"""
import os
import signal
import tempfile
import time

from rig import pg


def test_kill_needs_no_external_tool():
    """kill() finds the server's processes through /proc: with nothing on PATH (a
    minimal Debian has no procps, so no pgrep) it still kills the postmaster and
    every child, and the server starts again on the same data directory."""
    srv = pg.server()
    assert pg.processes_in(srv.data), "the running server has no process in its data directory"
    saved = os.environ.get("PATH")
    os.environ["PATH"] = tempfile.mkdtemp(prefix="empty-path-")
    try:
        srv.kill()
    finally:
        os.environ["PATH"] = saved
    assert not srv.alive() and pg.processes_in(srv.data) == [], pg.processes_in(srv.data)
    assert pg.server().scalar("SELECT 1") == "1"


def test_shared_server_killed_behind_the_rigs_back():
    """SIGKILL to the shared server's postmaster and children without telling the rig,
    as a crash or a test that fails half way through an outage leaves it.  The
    server stays dead for the next test."""
    srv = pg.server()
    for p in pg.processes_in(srv.data):
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass  # a child that ended on its own meanwhile (the start-up process does)
    for _ in range(200):
        if not srv.alive():
            break
        time.sleep(0.025)
    assert not srv.alive()
    assert srv.running, "the rig was told nothing"


def test_a_later_test_finds_the_shared_server_running():
    """The test after the one above: pg.server() noticed the dead server and started it
    again, so this one passes (before the fix, it and every later test failed with
    "Connection refused")."""
    srv = pg.server()
    assert srv.alive()
    srv.reset()
    srv.psql("CREATE TABLE rig_probe (x int); INSERT INTO rig_probe VALUES (7)")
    assert srv.scalar("SELECT x FROM rig_probe") == "7"
    srv.psql("DROP TABLE rig_probe")
