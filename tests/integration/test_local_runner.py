"""tools/local_runner.py, run as docs/local-runner.md tells a user to: from a file of
messages (its in-memory queue) and from an SQS API (moto's server) with a dead-letter
queue.  Its progress line counts against the messages there are, its summary's
dead_lettered is what went to the dead-letter queue, and LOGIN_ETL_LOG holds the
function's own log."""
import json
import os
import subprocess
import sys
import tempfile

from events.generate import make_messages
from integration.test_localstack_init import moto_server
from rig import paths, pg, proc

RUNNER = paths.ROOT / "tools" / "local_runner.py"


def _messages():
    """Ten valid logins and one that is not a login record (rejected on every receive)."""
    good = make_messages(10, seed=71, invalid_rate=0)
    bad = make_messages(1, seed=72, invalid_rate=1, bad_kinds=["not_login"])
    return good + bad


def _run(args, log, extra_env=None, reset=True):
    db = pg.server()
    if reset:
        db.reset()
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PG", "AWS_", "LOGIN_ETL", "MASKING_KEY", "DATABASE_URL"))}
    # The bad message dead-letters only when rejected records are listed for a retry.
    env.update(db.env(), MASKING_KEY=proc.MASKING_KEY, MASKING_KEY_ID=proc.MASKING_KEY_ID,
               LOGIN_ETL_LOG=log, REJECTED_RECORDS="retry", **(extra_env or {}))
    r = subprocess.run([sys.executable, str(RUNNER), "--bootstrap", str(paths.RELEASE), *args],
                       env=env, capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    progress = [l.strip() for l in r.stderr.splitlines() if " messages, " in l]
    assert progress, r.stderr[-2000:]
    return db, summary, progress[-1]


def _function_log(log):
    with open(log, encoding="utf-8") as f:
        lines = [json.loads(l) for l in f]
    assert any(l.get("message") == "batch done" for l in lines), lines[-5:]
    assert any(l.get("message") == "record rejected" for l in lines), lines[-5:]
    return lines


def test_local_runner_from_a_file_of_messages():
    msgs = _messages()
    with tempfile.TemporaryDirectory() as d:
        path, log = os.path.join(d, "msgs.json"), os.path.join(d, "function.log")
        with open(path, "w") as f:
            json.dump(msgs, f)
        db, summary, progress = _run(["--messages", path, "--max-receive-count", "2",
                                      "--batch-size", "4"], log)
        _function_log(log)
    assert summary["messages"] == 11 and summary["dead_lettered"] == 1, summary
    assert summary["succeeded"] == 10 and summary["listed"] == 2, summary
    assert progress.startswith("11/11 messages"), progress
    assert "1 dead-lettered" in progress, progress
    assert db.scalar("SELECT count(*) FROM user_logins") == "10"


def test_local_runner_from_an_sqs_queue_with_a_dead_letter_queue():
    import boto3
    msgs = _messages()
    with tempfile.TemporaryDirectory() as d, moto_server() as endpoint:
        creds = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
                 "AWS_DEFAULT_REGION": "us-east-1"}
        sqs = boto3.client("sqs", endpoint_url=endpoint, region_name="us-east-1",
                           aws_access_key_id="test", aws_secret_access_key="test")
        dlq = sqs.create_queue(QueueName="runner-dlq")["QueueUrl"]
        dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])[
            "Attributes"]["QueueArn"]
        src = sqs.create_queue(QueueName="runner-src", Attributes={
            "VisibilityTimeout": "1",
            "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn,
                                         "maxReceiveCount": "2"})})["QueueUrl"]
        for i in range(0, len(msgs), 10):
            sqs.send_message_batch(QueueUrl=src, Entries=[
                {"Id": str(j), "MessageBody": m["body"]} for j, m in enumerate(msgs[i:i + 10])])
        log = os.path.join(d, "function.log")
        db, summary, progress = _run(["--queue-url", src, "--endpoint-url", endpoint,
                                      "--window", "0.2"], log, creds)
        in_dlq = int(sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=[
            "ApproximateNumberOfMessages"])["Attributes"]["ApproximateNumberOfMessages"])
        _function_log(log)
    assert in_dlq == 1, in_dlq
    assert progress.startswith("11/11 messages"), progress
    assert summary["messages"] == 11 and summary["dead_lettered"] == 1, summary
    assert db.scalar("SELECT count(*) FROM user_logins") == "10"


def test_draining_the_dead_letter_queue_into_the_function_writes_a_committed_message_once():
    """docs/operations.md, "Draining the dead-letter queue": a message is committed but its
    answer is lost (SQS never deletes it); the database goes down and it is dead-lettered
    with another message; after the recovery the DLQ is drained into the function as the
    DLQ's event source mapping does it, each message with its original messageId and
    SentTimestamp: the ledger knows the committed one, and each is one row."""
    import boto3
    from events.generate import event_bytes, make_event
    from rig.harness import Etl
    good = make_messages(2, seed=73, invalid_rate=0)
    with tempfile.TemporaryDirectory() as d, moto_server() as endpoint:
        creds = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
                 "AWS_DEFAULT_REGION": "us-east-1"}
        sqs = boto3.client("sqs", endpoint_url=endpoint, region_name="us-east-1",
                           aws_access_key_id="test", aws_secret_access_key="test")
        dlq = sqs.create_queue(QueueName="drain-dlq", Attributes={"VisibilityTimeout": "1"})[
            "QueueUrl"]
        dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])[
            "Attributes"]["QueueArn"]
        src = sqs.create_queue(QueueName="drain-src", Attributes={
            "VisibilityTimeout": "1",
            "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn,
                                         "maxReceiveCount": "2"})})["QueueUrl"]
        sqs.send_message(QueueUrl=src, MessageBody=good[0]["body"])
        # Received once and committed; the answer never reached SQS, which keeps it.
        (m,) = sqs.receive_message(QueueUrl=src, AttributeNames=["All"])["Messages"]
        committed_id = m["MessageId"]
        db = pg.server()
        db.reset()
        with Etl(reset_db=False) as etl:
            assert etl.answer(event_bytes(make_event([{
                "messageId": committed_id, "body": m["Body"],
                "sentTimestamp": int(m["Attributes"]["SentTimestamp"])}]))) == set()
        assert db.scalar("SELECT count(*) FROM user_logins") == "1"
        sqs.send_message(QueueUrl=src, MessageBody=good[1]["body"])
        # The database is down (nothing listens on its port): both dead-letter.
        down = dict(creds, PGPORT="1")
        _, summary, _ = _run(["--queue-url", src, "--endpoint-url", endpoint, "--window", "0.2",
                              "--timeout", "5"], os.path.join(d, "down.log"), down, reset=False)
        assert summary["succeeded"] == 0 and summary["dead_lettered"] == 2, summary
        # Recovered: the DLQ drained into the function, messages as they are.
        db, summary, _ = _run(["--queue-url", dlq, "--endpoint-url", endpoint, "--window",
                               "0.2"], os.path.join(d, "drain.log"), creds, reset=False)
        assert summary["succeeded"] == 2 and summary["messages"] == 2, summary
        drained = [json.loads(l) for l in open(os.path.join(d, "drain.log"))]
        metrics = [l for l in drained if "_aws" in l and "RecordsDuplicate" in l]
        assert sum(x["RecordsDuplicate"] for x in metrics) == 1, metrics
        assert sum(x["RecordsWritten"] for x in metrics) == 1, metrics
    assert db.scalar("SELECT count(*) FROM user_logins") == "2"
    assert sorted(r["user_id"] for r in db.query("SELECT user_id FROM user_logins")) == sorted(
        json.loads(g["body"])["user_id"] for g in good)
