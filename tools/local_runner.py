#!/usr/bin/env python3
"""The local runner: Lambda's SQS event source mapping on one machine, without
Docker.  It feeds SQS messages to the real `bootstrap` through a Lambda
Runtime API emulator (tests/rig/runtime_api.py) the way the mapping does:

- batches of up to --batch-size messages, gathered for at most --window seconds;
- the answer's batchItemFailures stay on the queue and come back later with a
  higher ApproximateReceiveCount; the others are deleted;
- an invocation error returns the whole batch to the queue;
- a message received more than --max-receive-count times goes to the
  dead-letter queue instead (SQS's RedrivePolicy).

Two sources:
- a real SQS API (moto's server, LocalStack, or AWS itself) given by
  --queue-url (and --endpoint-url): messages are received and deleted there,
  and SQS's own redrive moves messages to the dead-letter queue;
- a file of message dicts (events/generate.py's make_messages format) held in
  an in-memory queue that follows the same rules (--messages FILE).

    python3 tools/local_runner.py --messages msgs.json --bootstrap build/bootstrap

The function's own log goes to the file LOGIN_ETL_LOG names (else nowhere).
Options, output and examples: docs/local-runner.md.
"""
import argparse
import json
import os
import subprocess
import sys
import time
from collections import deque
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

from events.generate import event_bytes, sqs_record  # noqa: E402
from rig import proc, runtime_api  # noqa: E402


class Stats:
    def __init__(self):
        self.received = 0          # deliveries (a redelivered message counts again)
        self.messages = set()      # distinct messageIds seen
        self.succeeded = 0         # deliveries answered as done (written or duplicate)
        self.listed = 0            # deliveries listed in batchItemFailures
        self.invocation_errors = 0
        self.invocations = 0
        self.dead_lettered = 0
        self.busy_seconds = 0.0    # time inside invocations (the function's own work)
        self.first_batch = None    # the records of the first invocation, as delivered
        self.started = time.monotonic()


class Function:
    """The bootstrap behind a Runtime API emulator, invoked synchronously."""

    def __init__(self, bootstrap, env, timeout_s):
        self.emu = runtime_api.Emulator()
        self.timeout_s = timeout_s
        full_env = {"PATH": "/usr/bin:/bin", "AWS_LAMBDA_RUNTIME_API": self.emu.address,
                    "AWS_LAMBDA_FUNCTION_NAME": "login-etl-local"}
        full_env.update(env)
        self.log = open(env.get("LOGIN_ETL_LOG", os.devnull), "ab")
        self.proc = subprocess.Popen([str(bootstrap)], env=full_env, stdout=self.log,
                                     stderr=self.log, stdin=subprocess.DEVNULL)

    def invoke(self, records):
        """Returns (failed messageIds, or None for an invocation error)."""
        if self.proc.poll() is not None:
            raise RuntimeError(f"bootstrap exited with {self.proc.returncode}")
        rid = self.emu.enqueue(event_bytes({"Records": records}), timeout_s=self.timeout_s)
        res = self.emu.wait_result(rid, timeout=self.timeout_s + 30)
        if res.kind != "response":
            return None
        return {f["itemIdentifier"] for f in res.json()["batchItemFailures"]}

    def close(self):
        proc.terminate(self.proc)
        self.emu.close()
        self.log.close()


_last_progress = [0.0]


def _progress(stats, total, final=False, refresh=None):
    """A progress line: rewritten in place on a terminal, every 2 s otherwise.
    total: the messages expected (more may arrive: the line shows what was seen
    when that is more).  refresh: called before a line is written (reads the
    dead-letter queue's count into stats)."""
    tty = sys.stderr.isatty()
    now = time.monotonic()
    if not final and not tty and now - _last_progress[0] < 2:
        return
    _last_progress[0] = now
    if refresh:
        refresh()
    rate = stats.received / max(now - stats.started, 1e-9)
    seen = len(stats.messages)
    line = (f"  {seen:>7}/{max(total, seen)} messages, {stats.invocations} invocations, "
            f"{stats.listed} listed, {stats.dead_lettered} dead-lettered, {rate:,.0f} deliveries/s")
    end = "\n" if final or not tty else ""
    print(("\r" if tty else "") + line, end=end, flush=True, file=sys.stderr)


class Feeder:
    """The producer side: sends messages to the queue as the function drains
    it, keeping about `depth` in flight, as a steady stream of logins would.
    (It also keeps moto's server fast: its calls cost time in proportion to
    the queue's length.)"""

    def __init__(self, sqs, queue_url, messages, depth=50):
        self.sqs, self.url, self.messages, self.depth = sqs, queue_url, messages, depth
        self.sent = 0

    def top_up(self, done):
        while self.sent < len(self.messages) and self.sent - done < self.depth:
            chunk = self.messages[self.sent:self.sent + 10]
            self.sqs.send_message_batch(QueueUrl=self.url, Entries=[
                {"Id": str(j), "MessageBody": m["body"]} for j, m in enumerate(chunk)])
            self.sent += len(chunk)

    def finished(self):
        return self.sent >= len(self.messages)


def _invoke(function, records, stats):
    """One invocation on a batch of SQS records, booked in stats.  Returns the
    messageIds to deliver again: those listed, or all after an invocation error."""
    ids = [r["messageId"] for r in records]
    stats.first_batch = stats.first_batch or records
    t0 = time.monotonic()
    failed = function.invoke(records)
    stats.busy_seconds += time.monotonic() - t0
    stats.invocations += 1
    stats.received += len(records)
    stats.messages.update(ids)
    if failed is None:
        stats.invocation_errors += 1
        failed = set(ids)
    return failed


def run_memory(function, messages, batch_size, max_receive, queue_arn, progress=True):
    """An in-memory queue with SQS's redrive rule.  Returns (Stats, dead letters)."""
    queue = deque((m, 0) for m in messages)
    dlq = []
    stats = Stats()
    index = 0
    while queue:
        batch = []
        while queue and len(batch) < batch_size:
            m, count = queue.popleft()
            if count >= max_receive:
                dlq.append(m)          # received max_receive times already: redriven
                stats.dead_lettered += 1
                continue
            batch.append((m, count + 1))
        if not batch:
            continue
        records = [sqs_record(m, index + i, receive_count=c, queue_arn=queue_arn)
                   for i, (m, c) in enumerate(batch)]
        index += len(batch)
        failed = _invoke(function, records, stats)
        for m, c in batch:
            if m["messageId"] in failed:
                stats.listed += 1
                queue.append((m, c))   # visible again later, as after the visibility timeout
            else:
                stats.succeeded += 1
        if progress:
            _progress(stats, len(messages))
    if progress:
        _progress(stats, len(messages), final=True)
    return stats, dlq


_DEPTH = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible",
          "ApproximateNumberOfMessagesDelayed"]


def _depth(sqs, queue_url):
    """The messages a queue holds: visible, in flight and delayed."""
    attrs = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=_DEPTH)["Attributes"]
    return sum(int(attrs.get(a, 0)) for a in _DEPTH)


def dead_letter_queue(sqs, queue_url):
    """The URL of the queue's dead-letter queue (its RedrivePolicy), or None."""
    attrs = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["RedrivePolicy"])
    policy = attrs.get("Attributes", {}).get("RedrivePolicy")
    if not policy:
        return None
    arn = json.loads(policy)["deadLetterTargetArn"].split(":")
    return sqs.get_queue_url(QueueName=arn[5], QueueOwnerAWSAccountId=arn[4])["QueueUrl"]


def run_sqs(function, sqs, queue_url, batch_size, window_s, total=None, progress=True,
            feeder=None):
    """Receives from a real SQS API until the queue is drained (and the feeder,
    if any, has sent everything); deletes what the function did not list.
    SQS's RedrivePolicy does the dead-lettering: stats.dead_lettered is what
    its dead-letter queue gained meanwhile.  total: the messages expected, for
    the progress line (None: what the queue holds at the start)."""
    arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])[
        "Attributes"]["QueueArn"]
    region = arn.split(":")[3]
    stats = Stats()
    if total is None:
        total = _depth(sqs, queue_url)
    dlq = dead_letter_queue(sqs, queue_url)
    dlq_before = _depth(sqs, dlq) if dlq else 0

    def count_dead_letters():
        if dlq:
            stats.dead_lettered = max(0, _depth(sqs, dlq) - dlq_before)

    while True:
        if feeder:
            feeder.top_up(stats.succeeded)
        batch, t_end = [], time.monotonic() + window_s
        while len(batch) < batch_size and time.monotonic() < t_end:
            got = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10,
                                      AttributeNames=["All"], MessageAttributeNames=["All"],
                                      WaitTimeSeconds=0).get("Messages", [])
            if not got:
                break
            batch.extend(got)
        if not batch:
            attrs = sqs.get_queue_attributes(
                QueueUrl=queue_url, AttributeNames=["ApproximateNumberOfMessages",
                                                    "ApproximateNumberOfMessagesNotVisible"])
            waiting = sum(int(v) for v in attrs["Attributes"].values())
            if waiting == 0 and (not feeder or feeder.finished()):
                break
            time.sleep(0.2)            # failures become visible after the visibility timeout
            continue
        records = [{"messageId": m["MessageId"], "receiptHandle": m["ReceiptHandle"],
                    "body": m["Body"], "attributes": m.get("Attributes", {}),
                    "messageAttributes": m.get("MessageAttributes", {}),
                    "md5OfBody": m["MD5OfBody"], "eventSource": "aws:sqs",
                    "eventSourceARN": arn, "awsRegion": region} for m in batch]
        failed = _invoke(function, records, stats)
        done = [m for m in batch if m["MessageId"] not in failed]
        stats.succeeded += len(done)
        stats.listed += len(batch) - len(done)
        for i in range(0, len(done), 10):
            sqs.delete_message_batch(QueueUrl=queue_url, Entries=[
                {"Id": str(j), "ReceiptHandle": m["ReceiptHandle"]}
                for j, m in enumerate(done[i:i + 10])])
        if progress:
            _progress(stats, total, refresh=count_dead_letters)
    count_dead_letters()
    if progress:
        _progress(stats, total, final=True)
    return stats


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 epilog="The function's log: LOGIN_ETL_LOG=FILE. "
                                        "See docs/local-runner.md.")
    ap.add_argument("--bootstrap", default=str(ROOT / "build" / "bootstrap"),
                    help="the function to run (default: build/bootstrap)")
    ap.add_argument("--messages", help="a JSON file: a list of message dicts (in-memory queue)")
    ap.add_argument("--queue-url", help="receive from this SQS queue instead")
    ap.add_argument("--endpoint-url", default=os.environ.get("AWS_ENDPOINT_URL"),
                    help="the SQS API (moto, LocalStack); default AWS_ENDPOINT_URL, else AWS")
    ap.add_argument("--batch-size", type=int, default=1000, help="records per invocation at most")
    ap.add_argument("--window", type=float, default=1.0,
                    help="seconds to gather a batch (SQS source)")
    ap.add_argument("--max-receive-count", type=int, default=3,
                    help="receives before dead-lettering (in-memory queue; SQS uses the "
                         "queue's RedrivePolicy)")
    ap.add_argument("--timeout", type=int, default=60, help="the function's timeout, seconds")
    args = ap.parse_args()
    if bool(args.messages) == bool(args.queue_url):
        ap.error("give one of --messages FILE or --queue-url URL")
    env = {k: v for k, v in os.environ.items()
           if k.startswith(("PG", "MASKING_KEY", "DATABASE_URL", "AWS_LAMBDA_LOG", "LOGIN_ETL",
                            "REJECTED_RECORDS"))}
    function = Function(args.bootstrap, env, args.timeout)
    try:
        if args.queue_url:
            import boto3
            sqs = boto3.client("sqs", endpoint_url=args.endpoint_url)
            stats = run_sqs(function, sqs, args.queue_url, args.batch_size, args.window)
        else:
            messages = json.loads(Path(args.messages).read_text())
            stats, _ = run_memory(function, messages, args.batch_size, args.max_receive_count,
                                  "arn:aws:sqs:us-east-1:000000000000:login-queue")
    finally:
        function.close()
    print(json.dumps({"deliveries": stats.received, "messages": len(stats.messages),
                      "succeeded": stats.succeeded, "listed": stats.listed,
                      "dead_lettered": stats.dead_lettered, "invocations": stats.invocations}))


if __name__ == "__main__":
    main()
