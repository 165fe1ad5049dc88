"""`make demo` keeps working: the demo script, end to end, in a directory of
its own (its Postgres is stopped afterwards)."""
import os
import re
import shutil
import subprocess
import sys
import tempfile

from rig import paths


def _demo(demo_dir, *args, timeout=280):
    return subprocess.run([sys.executable, str(paths.ROOT / "tools" / "demo.py"), *args],
                          env=dict(os.environ, LOGIN_ETL_DEMO_DIR=demo_dir),
                          capture_output=True, text=True, timeout=timeout)


def test_demo_runs_end_to_end():
    """The demo directory inside a directory only its owner may enter, as a clone in
    /root is on Debian: run as root, the server (as the postgres user) lives
    where that user can reach it, the demo ends OK, and its closing hint names
    the masking key where it really is."""
    subprocess.run(["make", "-C", str(paths.ROOT), "--no-print-directory", "build/bootstrap"],
                   check=True, capture_output=True)
    home = tempfile.mkdtemp(prefix="demo-home-")  # 0700, like /root
    d = os.path.join(home, "clone", ".demo")
    where = None
    try:
        r = _demo(d, "--messages", "1000")
        out = r.stdout + r.stderr
        m = re.search(r"^== database: a private PostgreSQL server in (\S+)$", out, re.M)
        where = m and m.group(1)
        assert r.returncode == 0 and "demo: OK" in out, out[-4000:]
        for needle in ("rows written", "dead-lettered", "duplicate groups", "GROUP BY",
                       "throughput", "make psql"):
            assert needle in out, needle
        key = os.path.join(d, "masking-key")
        assert f"MASKING_KEY=$(cat {key})" in out, out[-600:]
        assert os.stat(key).st_mode & 0o077 == 0, "the demo's key is its owner's alone"
        if os.geteuid() == 0:
            assert not where.startswith(home), f"the postgres user cannot enter {where}"
    finally:
        r = _demo(d, "--stop", timeout=60)
        assert r.returncode == 0, r.stdout + r.stderr
        if where and not where.startswith(home):
            shutil.rmtree(os.path.dirname(where), ignore_errors=True)
        shutil.rmtree(home, ignore_errors=True)
