#!/usr/bin/env python3
"""`make demo`: the whole job end to end on an embedded default.

Starts a private PostgreSQL server (kept in .demo/, or in /var/tmp when the
server's user cannot enter the clone: server_dir(); left running for
`make psql`), generates a realistic data set (logins with content duplicates,
bad messages), feeds it through the real static `bootstrap` via the local
runner (tools/local_runner.py), which behaves like Lambda's SQS event source
mapping, and prints what happened and the SQL an analyst would run.

With moto's SQS server available (the Python on PATH has it on the CI
machines) the messages go through a real SQS API: sent, received, deleted,
redriven to a dead-letter queue by SQS itself.  Otherwise an in-memory queue
follows the same rules.  --endpoint-url points it at LocalStack or AWS.
"""
import argparse
import hashlib
import json
import os
import shlex
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))
# moto_server is the one next to this interpreter (build/venv/bin under `make demo`).
os.environ["PATH"] = os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")

import local_runner  # noqa: E402
from events.generate import make_messages  # noqa: E402
from rig import pg  # noqa: E402

DEMO_DIR = Path(os.environ.get("LOGIN_ETL_DEMO_DIR", ROOT / ".demo")).absolute()
DEMO_KEY_FILE = DEMO_DIR / "masking-key"


def server_dir():
    """Where the demo's PostgreSQL server lives: DEMO_DIR/pg, next to the key.  Run
    as root, the server runs as the postgres user, which must be able to enter
    that directory; a clone inside /root (0700 on Debian and Ubuntu) is closed
    to it.  Then the server goes to /var/tmp/login-etl-demo-<hash of DEMO_DIR>
    (a directory every user may enter, kept across reboots), one per demo
    directory, and the masking key stays in DEMO_DIR, readable by root alone."""
    inside = DEMO_DIR / "pg"
    if os.geteuid() != 0 or pg.reachable_by(inside, "postgres"):
        return inside
    tag = hashlib.sha256(str(DEMO_DIR).encode()).hexdigest()[:12]
    outside = Path("/var/tmp") / f"login-etl-demo-{tag}"
    outside.mkdir(mode=0o755, exist_ok=True)
    return outside / "pg"


def shown(path):
    """A path as a user types it from the current directory: relative below it."""
    rel = os.path.relpath(path)
    return rel if not rel.startswith("..") else str(path)
BATCH_SIZE = 500
MAX_RECEIVE = 3

DUPLICATES_SQL = """\
SELECT masked_device_id, masked_ip,
       count(*)                AS logins,
       count(DISTINCT user_id) AS users
FROM user_logins
WHERE masked_device_id IS NOT NULL AND masked_ip IS NOT NULL
GROUP BY masked_device_id, masked_ip
HAVING count(DISTINCT user_id) > 1
ORDER BY users DESC, logins DESC"""


def demo_db():
    return pg.Server(directory=str(server_dir()))


def demo_key():
    """The demo's own masking key, made once (never a production key)."""
    DEMO_DIR.mkdir(parents=True, exist_ok=True)
    if not DEMO_KEY_FILE.exists():
        DEMO_KEY_FILE.write_text(os.urandom(64).hex() + "\n")
        DEMO_KEY_FILE.chmod(0o600)
    return DEMO_KEY_FILE.read_text().strip()


def stop_demo_db():
    """`make demo-stop`: stops the demo's PostgreSQL server if it runs; its data
    stays in .demo/ for the next `make demo`, `make invoke` or `make psql`."""
    where = server_dir()
    if not (where / "data" / "postmaster.pid").exists():
        print(f"demo database: not running ({where})")
        return 0
    db = demo_db()  # finds the running server; does not start another
    db.stop()
    forget = f"rm -rf {DEMO_DIR}" + (f" {where.parent}" if where.parent != DEMO_DIR else "")
    print(f"demo database: stopped ({where}; `{forget}` forgets it)")
    return 0


def psql(db):
    env = dict(os.environ, PGHOST="127.0.0.1", PGPORT=str(db.port), PGUSER=pg.USER,
               PGPASSWORD=pg.PASSWORD, PGDATABASE=pg.DATABASE, PGSSLMODE="disable")
    os.execvpe("psql", ["psql", "-X"], env)


def start_moto():
    """moto's SQS server on a free port, or None when moto is not installed."""
    exe = shutil.which("moto_server")
    if not exe:
        return None, None
    port = pg.free_port()
    proc = subprocess.Popen([exe, "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc, f"http://127.0.0.1:{port}"
        except OSError:
            time.sleep(0.1)
    proc.kill()
    return None, None


def make_queues(sqs, visibility_s):
    """Creates the source queue and its dead-letter queue, empty."""
    dlq = sqs.create_queue(QueueName="login-queue-dlq",
                           Attributes={"MessageRetentionPeriod": "1209600"})["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])[
        "Attributes"]["QueueArn"]
    src = sqs.create_queue(QueueName="login-queue", Attributes={
        "VisibilityTimeout": str(visibility_s),
        "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn,
                                     "maxReceiveCount": str(MAX_RECEIVE)})})["QueueUrl"]
    for q in (src, dlq):
        sqs.purge_queue(QueueUrl=q)
    return src, dlq


def main():
    ap = argparse.ArgumentParser(description="login-etl end to end on a private Postgres")
    # moto's server slows down as its queue grows (each call scans it), so the
    # default stays at a size it serves in seconds; --source memory takes more.
    ap.add_argument("--messages", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=2024)
    ap.add_argument("--source", choices=["auto", "sqs", "memory"], default="auto")
    ap.add_argument("--endpoint-url", help="an SQS endpoint (LocalStack, AWS) instead of moto")
    ap.add_argument("--bootstrap", default=str(ROOT / "build" / "bootstrap"))
    ap.add_argument("--psql", action="store_true", help="open psql on the demo database")
    ap.add_argument("--stop", action="store_true", help="stop the demo database (make demo-stop)")
    args = ap.parse_args()
    if args.stop:
        return stop_demo_db()

    print(f"== database: a private PostgreSQL server in {server_dir()}")
    db = demo_db()
    if args.psql:
        psql(db)
    db.psql("DROP TABLE IF EXISTS user_logins, login_etl_ledger, login_etl_ledger_v2, "
              "login_etl_ledger_v3, login_etl_rejected")
    print(f"   {db.url().replace(pg.PASSWORD, '***')} (previous demo data cleared)")

    messages = make_messages(args.messages, seed=args.seed, invalid_rate=0.03, duplicate_rate=0.08)
    bad = sum(1 for m in messages if m["kind"] != "valid")
    print(f"== data: {len(messages)} login messages, {bad} of them bad "
          f"(not a login record, invalid ip, app_version \"2.3.0-beta\", ...), "
          f"{sum(m['duplicate'] for m in messages)} sharing a device and ip with another user")

    env = dict(db.env(), MASKING_KEY=demo_key(), MASKING_KEY_ID="demo",
               LOGIN_ETL_LOG=str(DEMO_DIR / "bootstrap.log"))
    (DEMO_DIR / "bootstrap.log").unlink(missing_ok=True)
    function = local_runner.Function(args.bootstrap, env, timeout_s=60)
    moto = None
    t0 = time.monotonic()
    try:
        endpoint = args.endpoint_url
        if args.source in ("auto", "sqs") and not endpoint:
            moto, endpoint = start_moto()
            if not endpoint and args.source == "sqs":
                sys.exit("moto_server is not available; use --source memory or --endpoint-url")
        if endpoint and args.source != "memory":
            import boto3
            os.environ.setdefault("AWS_ACCESS_KEY_ID", "demo")
            os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "demo")
            sqs = boto3.client("sqs", endpoint_url=endpoint, region_name="us-east-1")
            print(f"== queue: SQS API at {endpoint} ({'moto' if moto else 'given'}), "
                  f"redrive to a dead-letter queue after {MAX_RECEIVE} receives")
            src, dlq = make_queues(sqs, visibility_s=1)
            feeder = local_runner.Feeder(sqs, src, messages)
            print(f"== running: a producer sends the messages, the runner receives batches of up "
                  f"to {BATCH_SIZE} and invokes the real bootstrap")
            stats = local_runner.run_sqs(function, sqs, src, BATCH_SIZE, 0.5, len(messages),
                                         feeder=feeder)
            dead = int(sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=[
                "ApproximateNumberOfMessages"])["Attributes"]["ApproximateNumberOfMessages"])
        else:
            print(f"== queue: in memory (no SQS API here), redrive after {MAX_RECEIVE} receives")
            print(f"== running: batches of up to {BATCH_SIZE}, through the real bootstrap")
            stats, dlq_msgs = local_runner.run_memory(
                function, messages, BATCH_SIZE, MAX_RECEIVE,
                "arn:aws:sqs:us-east-1:000000000000:login-queue")
            dead = len(dlq_msgs)
        wall = time.monotonic() - t0
        # At-least-once delivery: the first batch arrives again, as it does when an
        # answer is lost; the ledger makes it add nothing.
        replay = [dict(r, attributes=dict(r["attributes"], ApproximateReceiveCount="2"))
                  for r in stats.first_batch]
        before = int(db.scalar("SELECT count(*) FROM user_logins"))
        failed = function.invoke(replay)
        added_by_replay = int(db.scalar("SELECT count(*) FROM user_logins")) - before
        bodies_bad = {r["messageId"] for r in replay
                      if r["body"] in {m["body"] for m in messages if m["kind"] != "valid"}}
    finally:
        function.close()
        if moto:
            moto.kill()

    rows = int(db.scalar("SELECT count(*) FROM user_logins"))
    quarantined = int(db.scalar("SELECT count(*) FROM login_etl_rejected"))
    groups = db.query(DUPLICATES_SQL)
    print()
    print("== what happened")
    print(f"   messages received      {len(stats.messages)} ({stats.received} deliveries in "
          f"{stats.invocations} invocations)")
    print(f"   rows written           {rows}")
    print(f"   quarantined            {quarantined} of "
          f"{len({m['messageId'] for m in messages if m['kind'] != 'valid'})} bad messages, "
          f"masked, in login_etl_rejected ({stats.listed} deliveries listed)")
    print(f"   dead-lettered          {dead}")
    print(f"   invocation errors      {stats.invocation_errors}")
    print(f"   replayed batch         {len(replay)} messages delivered again: "
          f"{added_by_replay} rows added, {len(failed or [])} listed")
    print(f"   throughput             {stats.received / max(stats.busy_seconds, 1e-9):,.0f} "
          f"records/s inside the function, {stats.received / wall:,.0f} records/s end to end")
    print("                          (the end-to-end rate is the local SQS emulator's and the "
          "runner's, not the")
    print("                          function's: `make bench` measures the function)")
    print()
    print("== duplicate groups: the same device and ip used by different users, found through")
    print("   the masked columns (no raw value needed):")
    print("   " + DUPLICATES_SQL.replace("\n", "\n   ") + ";")
    print(f"   -> {len(groups)} groups")
    for g in groups[:5]:
        print(f"      {g['masked_device_id'][:24]}...  {g['masked_ip'][:24]}...  "
              f"{g['logins']} logins by {g['users']} users")
    print()
    print("== a few rows, one a user")
    for r in db.query("SELECT DISTINCT ON (user_id) * FROM user_logins "
                      "ORDER BY user_id, create_date LIMIT 4"):
        print("   " + json.dumps(r))
    print()
    print(f"The database is still running: `make psql` opens it, `make demo-stop` stops it. "
          f"Logs: {DEMO_DIR}/bootstrap.log")
    print(f"Recover a masked value:  MASKING_KEY=$(cat {shlex.quote(shown(DEMO_KEY_FILE))}) "
          f"MASKING_KEY_ID=demo {shlex.quote(shown(args.bootstrap))} unmask 'demo:...'")
    # The bad messages are quarantined (the function's default), once: none is listed,
    # none dead-lettered, and the replay of the first batch finds them all in the ledger.
    ok = (rows == len(messages) - bad and added_by_replay == 0 and dead == 0
          and quarantined == bad and failed == set() and bodies_bad is not None)
    print("demo: OK" if ok else "demo: UNEXPECTED RESULT (see above)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
