"""`make demo` keeps working: the demo script, end to end, in a directory of
its own (its Postgres is stopped afterwards)."""
import os
import shutil
import subprocess
import sys
import tempfile

from rig import paths, pg


def test_demo_runs_end_to_end():
    subprocess.run(["make", "-C", str(paths.ROOT), "--no-print-directory", "build/bootstrap"],
                   check=True, capture_output=True)
    d = tempfile.mkdtemp(prefix="demo-")
    os.chmod(d, 0o755)  # the server runs as the postgres user
    try:
        r = subprocess.run([sys.executable, str(paths.ROOT / "tools" / "demo.py"),
                            "--messages", "1000"], env=dict(os.environ, LOGIN_ETL_DEMO_DIR=d),
                           capture_output=True, text=True, timeout=280)
        out = r.stdout + r.stderr
        assert r.returncode == 0 and "demo: OK" in out, out[-4000:]
        for needle in ("rows written", "dead-lettered", "duplicate groups", "GROUP BY",
                       "throughput", "make psql"):
            assert needle in out, needle
    finally:
        if os.path.exists(os.path.join(d, "pg", "data", "PG_VERSION")):
            pg.Server(directory=os.path.join(d, "pg")).stop()
        shutil.rmtree(d, ignore_errors=True)
