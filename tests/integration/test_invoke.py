"""`make invoke EVENT=...` (one event through the real bootstrap against the
demo database, printed like `sam local invoke`) and `make demo-stop`, in a demo
directory of their own."""
import json
import os
import re
import shutil
import subprocess
import tempfile

from events.generate import SAMPLE_ANSWERS
from rig import paths, pg


def _make(demo_dir, *args, timeout=240):
    return subprocess.run(["make", "-C", str(paths.ROOT), "--no-print-directory", *args],
                          env=dict(os.environ, LOGIN_ETL_DEMO_DIR=demo_dir),
                          capture_output=True, text=True, timeout=timeout)


def _answer_ids(stdout):
    doc = json.loads(stdout)
    return [f["itemIdentifier"] for f in doc["batchItemFailures"]]


def test_make_invoke_and_demo_stop():
    # An out-of-date bootstrap is rebuilt first, and the build's lines stay off stdout.
    (paths.BUILD / "release" / "function" / "main.o").touch()
    d = tempfile.mkdtemp(prefix="demo-")
    os.chmod(d, 0o755)  # the server runs as the postgres user
    pid_file = os.path.join(d, "pg", "data", "postmaster.pid")
    try:
        r = _make(d, "invoke", "EVENT=events/batch.json")
        assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
        # stdout: the answer alone, as sam local invoke prints it.  The function's default
        # quarantines the rejected record (SAMPLE_ANSWERS are REJECTED_RECORDS=retry's).
        assert SAMPLE_ANSWERS["batch.json"] and _answer_ids(r.stdout) == []
        m = re.search(r"^START RequestId: (\S+) Version: \$LATEST$", r.stderr, re.M)
        assert m, r.stderr
        rid = m.group(1)
        assert re.search(rf"^END RequestId: {rid}$", r.stderr, re.M), r.stderr
        report = re.search(rf"^REPORT RequestId: {rid}\tInit Duration: [0-9.]+ ms\tDuration: "
                           r"([0-9.]+) ms\tBilled Duration: (\d+) ms\tMemory Size: \d+ MB\t"
                           r"Max Memory Used: (\d+) MB$", r.stderr, re.M)
        assert report, r.stderr
        assert int(report.group(2)) >= float(report.group(1)) and int(report.group(3)) > 0
        # The function's own log lines sit between START and END, with this request id.
        body = r.stderr[r.stderr.index("START"):r.stderr.index("END RequestId")]
        assert '"message":"batch done"' in body and f'"requestId":"{rid}"' in body
        assert os.path.exists(pid_file), "the demo database keeps running"
        db = pg.Server(directory=os.path.join(d, "pg"))
        assert db.scalar("SELECT count(*) FROM user_logins") == "10"
        assert db.scalar("SELECT message_id FROM login_etl_rejected") == \
            SAMPLE_ANSWERS["batch.json"][0]
        # The replay sample against the same database: same answer, nothing added.
        r = _make(d, "invoke", "EVENT=events/replay.json")
        assert r.returncode == 0, r.stderr[-3000:]
        assert _answer_ids(r.stdout) == []
        assert db.scalar("SELECT count(*) FROM user_logins") == "10"
        assert db.scalar("SELECT count(*) FROM login_etl_rejected") == "1"
        # An event file that is not JSON is refused before anything runs.
        bad = os.path.join(d, "bad.json")
        with open(bad, "w") as f:
            f.write("{not json")
        r = _make(d, "invoke", f"EVENT={bad}")
        assert r.returncode != 0 and "not JSON" in r.stderr, r.stderr
        # demo-stop stops it; a second one says there is nothing to stop.
        r = _make(d, "demo-stop")
        assert r.returncode == 0 and "stopped" in r.stdout, r.stdout + r.stderr
        assert not os.path.exists(pid_file)
        r = _make(d, "demo-stop")
        assert r.returncode == 0 and "not running" in r.stdout, r.stdout + r.stderr
    finally:
        if os.path.exists(pid_file):
            pg.Server(directory=os.path.join(d, "pg")).stop()
        shutil.rmtree(d, ignore_errors=True)
