#!/usr/bin/env python3
"""Realistic SQS events of user-login messages, for tests, the demo and the benchmark.

    python3 events/generate.py --records 10000 --seed 1 > big.json
    python3 events/generate.py --records 9000 --count 20 --out-dir /tmp/events
    python3 events/generate.py --records 10 --fifo --pretty
    python3 events/generate.py --write-samples        # rewrites events/{batch,fifo,empty,replay}.json

An event has exactly the shape Lambda's SQS event source mapping delivers (docs/behaviour.md,
"Input"), so it works with `sam local invoke -e FILE`. The messages look like the upstream
producer's: UUID user ids, ddd-dd-dddd device ids, mostly IPv4 with some IPv6, `locale`
often null, app versions such as "2.3.0", "0.96" and "3.7"; some share an ip and a
device_id with another user's login (content duplicates); a small share are bad in one of
the ways real traffic is (not a login record, an invalid ip, "2.3.0-beta", a fraction, ...).
What went in is reported on stderr. Everything is deterministic for a given --seed.

Lambda refuses an invocation payload over 6 MB (6,291,456 bytes), which at ~660 bytes a
record is ~9,500 records: an event that would be larger is cut to the records that fit,
and stderr says so (--max-bytes 0 turns the cap off, for testing the function's limits).

As a module (Python 3 standard library only):

    from events.generate import make_messages, make_event, event_bytes
    msgs = make_messages(1000, seed=1)          # list of message dicts, see make_messages
    event = make_event(msgs)                    # the SQS event dict
    data = event_bytes(event)                   # compact UTF-8 JSON, as Lambda sends it
"""
import argparse
import base64
import collections
import hashlib
import ipaddress
import json
import random
import sys
import uuid
from pathlib import Path

REGION = "us-east-1"
QUEUE_ARN = "arn:aws:sqs:us-east-1:000000000000:login-queue"
FIFO_QUEUE_ARN = QUEUE_ARN + ".fifo"
SENDER_ID = "AROAZ6UH4CJGNJ7EXAMPL:login-producer"
FIFO_GROUP_ID = "login-events"
# Lambda's limit for a synchronous invocation payload, i.e. for the whole event.
LAMBDA_PAYLOAD_LIMIT = 6_291_456
# 2024-06-10T08:00:00Z: generated messages are sent from here on, ~35 ms apart.
DEFAULT_START_MS = 1_718_006_400_000
STEP_MS = 35

# The bad messages the generator can make: kind -> (the reason code the function should
# log, per function/login.h, and what is wrong).
BAD_KINDS = {
    "not_login": ("user_id_missing", 'not a login record: {"foo": "oops_wrong_msg_type", ...}'),
    "body_not_json": ("body_not_json", "the body is cut off mid-JSON"),
    "body_not_object": ("body_not_object", "the body is JSON but an array"),
    "user_id_not_string": ("user_id_not_string", "user_id is a number"),
    "user_id_too_long": ("user_id_length", "user_id of 129 characters"),
    "locale_too_long": ("locale_length", "locale of 33 characters"),
    "ip_invalid": ("ip_invalid", 'ip such as "256.12.7.1" or "2001:db8::g1"'),
    "app_version_prerelease": ("app_version_format", 'app_version "2.3.0-beta"'),
    "app_version_fraction": ("app_version_format", "app_version 2.5 (a JSON number, not an integer)"),
    "app_version_boolean": ("app_version_type", "app_version true"),
    "app_version_out_of_range": ("app_version_range", 'app_version "1.1000" (minor over 999)'),
}

_LOCALES = ["RU", "PH", "US", "DE", "BR", "IN", "ID", "FR", "GB", "JP", "MX", "TR", "en_US", "pt_BR"]
# (app_version as the producer sends it, weight); an int is "N" read as N.0.0.
_APP_VERSIONS = [("2.3.0", 30), ("0.96", 14), ("3.7", 20), ("2.3.1", 10), ("3.7.2", 9),
                 ("2.4", 6), ("1.0.12", 4), (3, 3), (None, 4)]
_BAD_IPS = ["256.12.7.1", "10.0.0", "1.2.3.4.5", "not-an-ip", "2001:db8::g1", "192.168.1.1/24",
            "::ffff:999.1.1.1", " 8.8.8.8"]


# --- realistic values ------------------------------------------------------------------------
def _uuid(rng):
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _device_id(rng):
    return f"{rng.randrange(1000):03d}-{rng.randrange(100):02d}-{rng.randrange(10000):04d}"


def _ipv4(rng):
    # Public-looking unicast: no 0/8, 10/8, 127/8, 169.254/16, 172.16/12, 192.168/16 or 224+.
    while True:
        a = rng.randrange(1, 224)
        b = rng.randrange(256)
        if a in (10, 127) or (a == 169 and b == 254) or (a == 172 and 16 <= b < 32) or \
                (a == 192 and b == 168):
            continue
        return f"{a}.{b}.{rng.randrange(256)}.{rng.randrange(1, 255)}"


def _ipv6(rng):
    # Global unicast (2000::/3) as mobile carriers hand out: a /64 prefix and an interface id,
    # usually in the compressed form, sometimes written out in full or in upper case (the
    # function must canonicalise those so they mask the same).
    prefix = rng.choice([0x2a02, 0x2600, 0x2001, 0x2607, 0x2a01, 0x2804, 0x240e])
    groups = [prefix, rng.randrange(0x10000), rng.randrange(0x10000), rng.randrange(0x10000)]
    groups += [0, 0, 0, rng.randrange(1, 0x10000)] if rng.random() < 0.5 else \
        [rng.randrange(0x10000) for _ in range(4)]
    addr = ipaddress.IPv6Address(":".join(f"{g:x}" for g in groups))
    r = rng.random()
    if r < 0.1:
        return addr.exploded
    if r < 0.15:
        return str(addr).upper()
    return str(addr)


def _weighted(rng, pairs):
    values, weights = zip(*pairs)
    return rng.choices(values, weights=weights)[0]


def _body(user_id, app_version, device_type, ip, locale, device_id):
    # Key order and spacing as the upstream producer writes them (Python's json.dumps).
    return json.dumps({"user_id": user_id, "app_version": app_version, "device_type": device_type,
                       "ip": ip, "locale": locale, "device_id": device_id})


def _new_user(rng):
    return {
        "user_id": _uuid(rng),
        "device_type": "android" if rng.random() < 0.6 else "ios",
        "device_id": _device_id(rng),
        "ip": _ipv6(rng) if rng.random() < 0.06 else _ipv4(rng),
        "locale": None if rng.random() < 0.6 else rng.choice(_LOCALES),
        "app_version": _weighted(rng, _APP_VERSIONS),
    }


def _bad_body(rng, kind, user):
    fields = dict(user)
    if kind == "not_login":
        return json.dumps({"foo": "oops_wrong_msg_type", "bar": str(rng.randrange(1000))})
    if kind == "body_not_json":
        whole = _body(**fields)
        return whole[: rng.randrange(10, len(whole) - 5)]
    if kind == "body_not_object":
        return json.dumps([fields["user_id"], fields["ip"]])
    if kind == "user_id_not_string":
        fields["user_id"] = rng.randrange(10**6, 10**9)
    elif kind == "user_id_too_long":
        fields["user_id"] = (fields["user_id"] * 4)[:129]
    elif kind == "locale_too_long":
        fields["locale"] = "en_US-x-" + "a" * 25
    elif kind == "ip_invalid":
        fields["ip"] = rng.choice(_BAD_IPS)
    elif kind == "app_version_prerelease":
        fields["app_version"] = "2.3.0-beta"
    elif kind == "app_version_fraction":
        fields["app_version"] = 2.5
    elif kind == "app_version_boolean":
        fields["app_version"] = True
    elif kind == "app_version_out_of_range":
        fields["app_version"] = "1.1000"
    else:
        raise ValueError(f"unknown bad kind {kind!r}")
    return _body(**fields)


# --- messages and events ---------------------------------------------------------------------
def make_messages(count, seed=1, invalid_rate=0.02, duplicate_rate=0.05,
                  start_ms=DEFAULT_START_MS, bad_kinds=None):
    """Returns `count` message dicts, deterministic for a given seed:

        {"messageId": "<uuid>", "body": "<the login JSON text>", "sentTimestamp": <ms>,
         "kind": "valid" or a key of BAD_KINDS,
         "reason": None or the reason code the function should log (BAD_KINDS),
         "duplicate": True when a valid login reuses the ip and device_id of another user}

    invalid_rate is the chance that a message is bad (kinds drawn evenly from bad_kinds,
    default all of BAD_KINDS); duplicate_rate the chance that a valid login takes the ip and
    device_id of an earlier login by a different user. Users log in repeatedly (a pool of
    about count/3 users), keeping their device and, mostly, their ip."""
    if count < 0:
        raise ValueError("count must be >= 0")
    if not 0 <= invalid_rate <= 1 or not 0 <= duplicate_rate <= 1:
        raise ValueError("rates must be between 0 and 1")
    kinds = list(bad_kinds or BAD_KINDS)
    for k in kinds:
        if k not in BAD_KINDS:
            raise ValueError(f"unknown bad kind {k!r}")
    rng = random.Random(seed)
    users = []
    seen = []  # (user_id, ip, device_id) of valid logins so far, for content duplicates
    pool = max(8, count // 3)
    out = []
    t = start_ms
    for _ in range(count):
        t += rng.randrange(1, 2 * STEP_MS)
        if len(users) < pool and (not users or rng.random() < 0.5):
            users.append(_new_user(rng))
            user = users[-1]
        else:
            user = rng.choice(users)
            if rng.random() < 0.2:  # a new network since last time
                user["ip"] = _ipv6(rng) if rng.random() < 0.06 else _ipv4(rng)
        msg = {"messageId": _uuid(rng), "sentTimestamp": t, "kind": "valid", "reason": None,
               "duplicate": False}
        if rng.random() < invalid_rate:
            kind = rng.choice(kinds)
            msg.update(kind=kind, reason=BAD_KINDS[kind][0], body=_bad_body(rng, kind, user))
        else:
            ip, device_id = user["ip"], user["device_id"]
            others = [s for s in seen[-500:] if s[0] != user["user_id"]]
            if others and rng.random() < duplicate_rate:
                _, ip, device_id = rng.choice(others)
                msg["duplicate"] = True
            msg["body"] = _body(user["user_id"], user["app_version"], user["device_type"], ip,
                                user["locale"], device_id)
            seen.append((user["user_id"], ip, device_id))
        out.append(msg)
    return out


def _receipt_handle(message_id, receive_count):
    # Opaque and different on every delivery, like SQS's (which are ~180-400 characters).
    seed = f"{message_id}/{receive_count}".encode()
    raw = b"".join(hashlib.sha256(seed + bytes([i])).digest() for i in range(5))[:138]
    return "AQEB" + base64.b64encode(raw).decode()


def sqs_record(message, index=0, fifo=False, receive_count=1, queue_arn=None, region=REGION):
    """One record of an SQS event for a message dict (make_messages); index is its position
    in the queue (FIFO sequence numbers grow with it)."""
    body = message["body"]
    sent = int(message["sentTimestamp"])
    first_receive = sent + 5 + int(hashlib.sha256(message["messageId"].encode()).hexdigest()[:4], 16) % 900
    attrs = {"ApproximateReceiveCount": str(receive_count), "SentTimestamp": str(sent)}
    if fifo:
        attrs["SequenceNumber"] = str(18_849_496_460_467_696_128 + index * 65_536)
        attrs["MessageGroupId"] = FIFO_GROUP_ID
    attrs["SenderId"] = SENDER_ID
    if fifo:
        # What content-based deduplication uses: the SHA-256 of the body.
        attrs["MessageDeduplicationId"] = hashlib.sha256(body.encode()).hexdigest()
    attrs["ApproximateFirstReceiveTimestamp"] = str(first_receive)
    return {
        "messageId": message["messageId"],
        "receiptHandle": _receipt_handle(message["messageId"], receive_count),
        "body": body,
        "attributes": attrs,
        "messageAttributes": {},
        "md5OfBody": hashlib.md5(body.encode()).hexdigest(),
        "eventSource": "aws:sqs",
        "eventSourceARN": queue_arn or (FIFO_QUEUE_ARN if fifo else QUEUE_ARN),
        "awsRegion": region,
    }


def make_event(messages, fifo=False, receive_count=1, queue_arn=None, region=REGION, first_index=0):
    """The SQS event dict {"Records": [...]} for a list of message dicts, in order."""
    return {"Records": [sqs_record(m, first_index + i, fifo, receive_count, queue_arn, region)
                        for i, m in enumerate(messages)]}


def event_bytes(event, pretty=False):
    """The event as UTF-8 JSON: compact, as Lambda sends it, unless pretty."""
    if pretty:
        return (json.dumps(event, indent=2, ensure_ascii=False) + "\n").encode()
    return json.dumps(event, separators=(",", ":"), ensure_ascii=False).encode()


def fit_event(messages, max_bytes=LAMBDA_PAYLOAD_LIMIT, fifo=False, receive_count=1,
              queue_arn=None, region=REGION, first_index=0):
    """Returns (event, n): the event of the longest prefix of messages whose compact JSON is
    at most max_bytes (all of them when max_bytes is 0 or None)."""
    event = make_event(messages, fifo, receive_count, queue_arn, region, first_index)
    if not max_bytes:
        return event, len(messages)
    size = len(b'{"Records":[]}')
    for n, rec in enumerate(event["Records"]):
        size += len(json.dumps(rec, separators=(",", ":"), ensure_ascii=False).encode()) + (n > 0)
        if size > max_bytes:
            event["Records"] = event["Records"][:n]
            return event, n
    return event, len(messages)


def fill_events(messages, max_bytes=LAMBDA_PAYLOAD_LIMIT):
    """Cuts messages into events of at most 10,000 records, each filled up to max_bytes, the
    way Lambda's event source mapping fills a batch.  Returns (events as bytes, the number of
    records in each)."""
    events, counts, i = [], [], 0
    while i < len(messages):
        event, n = fit_event(messages[i:i + 10000], max_bytes)
        events.append(event_bytes(event))
        counts.append(n)
        i += n
    return events, counts


def summarize(messages):
    """Counts of what a list of message dicts holds, for reports."""
    c = collections.Counter(m["kind"] for m in messages)
    ipv6 = 0
    for m in messages:
        if m["kind"] == "valid":
            ip = json.loads(m["body"]).get("ip")
            ipv6 += isinstance(ip, str) and ":" in ip
    return {"total": len(messages), "valid": c.pop("valid", 0), "invalid": sum(c.values()),
            "invalid_by_kind": dict(sorted(c.items())),
            "duplicates": sum(1 for m in messages if m["duplicate"]), "ipv6": ipv6}


# --- the four sample events in this directory ------------------------------------------------
# Sent across midnight UTC: the first three records have create_date 2024-06-10, the rest
# 2024-06-11.
_SAMPLE_START_MS = 1_718_063_998_000  # 2024-06-10T23:59:58Z

# (messageId, body) of events/batch.json, in order. Records 2 and 5 share ip and device_id
# (two users on one device: a content duplicate, both rows are written); record 6 is not a
# login record; record 3 has an IPv6 address.
_BATCH = [
    ("6f1c2b3a-8d4e-4f5a-9b6c-7d8e9f0a1b2c",
     _body("424cdd21-063a-43a7-b91b-7ca1a833afae", "2.3.0", "android", "199.172.111.135", "RU", "593-47-5928")),
    ("0a7e5c1d-2b3f-4a6e-8c9d-1e2f3a4b5c6d",
     _body("c0ffee00-1d2e-4b3c-9a8b-7c6d5e4f3a2b", "0.96", "ios", "203.0.113.42", None, "111-22-3333")),
    ("9d8c7b6a-5f4e-4d3c-8b2a-1f0e9d8c7b6a",
     _body("5b1f9e2a-7c3d-4e8f-a1b2-c3d4e5f6a7b8", "3.7", "android", "2001:db8:85a3::8a2e:370:7334", None, "402-18-7765")),
    ("3e4f5a6b-7c8d-4e9f-a0b1-c2d3e4f5a6b7",
     _body("e7d6c5b4-a392-4817-b6a5-948372615abc", "2.3.0", "ios", "198.51.100.7", "PH", "778-09-1234")),
    ("b1c2d3e4-f5a6-4b7c-8d9e-0f1a2b3c4d5e",
     _body("1a2b3c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d", "2.3.1", "android", "203.0.113.42", None, "111-22-3333")),
    ("7a8b9c0d-1e2f-4a3b-9c4d-5e6f7a8b9c0d",
     json.dumps({"foo": "oops_wrong_msg_type", "bar": "123"})),
    ("c3d4e5f6-a7b8-4c9d-8e0f-1a2b3c4d5e6f",
     _body("9f8e7d6c-5b4a-4392-8170-6f5e4d3c2b1a", "3.7", "android", "91.198.174.192", "DE", "205-61-0093")),
    ("d4e5f6a7-b8c9-4d0e-9f1a-2b3c4d5e6f7a",
     _body("424cdd21-063a-43a7-b91b-7ca1a833afae", "2.3.0", "android", "199.172.111.135", "RU", "593-47-5928")),
    ("e5f6a7b8-c9d0-4e1f-8a2b-3c4d5e6f7a8b",
     _body("2c3d4e5f-6a7b-4c8d-9e0f-a1b2c3d4e5f6", "0.96", "ios", "185.220.101.33", None, "930-44-5512")),
    ("f6a7b8c9-d0e1-4f2a-9b3c-4d5e6f7a8b9c",
     _body("8e9f0a1b-2c3d-4e4f-a5b6-c7d8e9f0a1b2", "3.7", "ios", "177.54.148.201", "BR", "318-72-4406")),
    ("a7b8c9d0-e1f2-4a3b-8c4d-5e6f7a8b9c0d",
     _body("6d7e8f9a-0b1c-4d2e-b3f4-a5b6c7d8e9f0", "2.3.0", "android", "49.36.112.18", None, "664-30-9187")),
]
_BATCH_BAD = ["7a8b9c0d-1e2f-4a3b-9c4d-5e6f7a8b9c0d"]

# events/fifo.json: five records of one message group; the third has app_version
# "2.3.0-beta", so the third, fourth and fifth must all be listed and none written.
_FIFO = [
    ("11111111-aaaa-4bbb-8ccc-000000000001",
     _body("424cdd21-063a-43a7-b91b-7ca1a833afae", "2.3.0", "android", "199.172.111.135", "RU", "593-47-5928")),
    ("11111111-aaaa-4bbb-8ccc-000000000002",
     _body("c0ffee00-1d2e-4b3c-9a8b-7c6d5e4f3a2b", "0.96", "ios", "203.0.113.42", None, "111-22-3333")),
    ("11111111-aaaa-4bbb-8ccc-000000000003",
     _body("5b1f9e2a-7c3d-4e8f-a1b2-c3d4e5f6a7b8", "2.3.0-beta", "android", "198.51.100.23", None, "402-18-7765")),
    ("11111111-aaaa-4bbb-8ccc-000000000004",
     _body("e7d6c5b4-a392-4817-b6a5-948372615abc", "3.7", "ios", "2001:db8::1", "PH", "778-09-1234")),
    ("11111111-aaaa-4bbb-8ccc-000000000005",
     _body("1a2b3c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d", "2.3.1", "android", "91.198.174.192", None, "205-61-0093")),
]
_FIFO_BAD = ["11111111-aaaa-4bbb-8ccc-000000000003", "11111111-aaaa-4bbb-8ccc-000000000004",
             "11111111-aaaa-4bbb-8ccc-000000000005"]

# The answer each sample must get (batchItemFailures itemIdentifiers, in order), on a
# database that has not seen these messageIds, except replay.json, which is meant to follow
# batch.json (on a fresh database it would write the same ten rows batch.json writes).
SAMPLE_ANSWERS = {
    "batch.json": _BATCH_BAD,
    "fifo.json": _FIFO_BAD,
    "empty.json": [],
    "replay.json": _BATCH_BAD,
}


def _sample_messages(pairs):
    return [{"messageId": mid, "body": body, "sentTimestamp": _SAMPLE_START_MS + 700 * i,
             "kind": "valid", "reason": None, "duplicate": False}
            for i, (mid, body) in enumerate(pairs)]


def build_samples():
    """The sample events of this directory: {"batch.json": event, ...}."""
    batch = _sample_messages(_BATCH)
    return {
        "batch.json": make_event(batch),
        "fifo.json": make_event(_sample_messages(_FIFO), fifo=True),
        "empty.json": {"Records": []},
        "replay.json": make_event(batch, receive_count=2),
    }


def write_samples(directory):
    directory = Path(directory)
    for name, event in build_samples().items():
        (directory / name).write_bytes(event_bytes(event, pretty=True))
        print(f"generate: wrote {directory / name}", file=sys.stderr)


# --- command line ----------------------------------------------------------------------------
def _report(label, messages, n_asked, size, capped, max_bytes):
    s = summarize(messages)
    err = sys.stderr
    print(f"generate: {label}: {s['total']:,} records, {size:,} bytes: {s['valid']:,} valid "
          f"({s['duplicates']:,} content duplicates sharing ip and device_id with another "
          f"user, {s['ipv6']:,} IPv6), {s['invalid']:,} invalid", file=err)
    if s["invalid_by_kind"]:
        kinds = ", ".join(f"{k} {v}" for k, v in s["invalid_by_kind"].items())
        print(f"generate:   invalid by kind: {kinds}", file=err)
    if capped:
        print(f"generate:   capped at {len(messages):,} of {n_asked:,} records so that the event "
              f"stays within {max_bytes:,} bytes (Lambda's invocation payload limit is "
              f"{LAMBDA_PAYLOAD_LIMIT:,}); the other {n_asked - len(messages):,} were left "
              f"out. Use fewer --records, or --max-bytes 0 to disable the cap.", file=err)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=1000, help="records per event (default 1000)")
    ap.add_argument("--seed", type=int, default=1, help="same seed, same events (default 1)")
    ap.add_argument("--invalid-rate", type=float, default=0.02,
                    help="share of bad messages, kinds drawn evenly (default 0.02)")
    ap.add_argument("--duplicate-rate", type=float, default=0.05,
                    help="share of valid logins reusing the ip and device_id of another "
                    "user (default 0.05)")
    ap.add_argument("--fifo", action="store_true", help="a FIFO queue's event (.fifo ARN, "
                    "MessageGroupId, SequenceNumber, MessageDeduplicationId)")
    ap.add_argument("--receive-count", type=int, default=1, help="ApproximateReceiveCount")
    ap.add_argument("--max-bytes", type=int, default=LAMBDA_PAYLOAD_LIMIT,
                    help="cap each event at this many bytes (default: Lambda's 6 MB "
                    "invocation limit, 6291456); 0 for no cap")
    ap.add_argument("--count", type=int, default=1, help="number of events (needs --out-dir "
                    "when more than 1); each gets different messages")
    ap.add_argument("--out-dir", help="write event-0001.json ... here instead of to stdout")
    ap.add_argument("--pretty", action="store_true", help="indented JSON, for reading (the "
                    "cap still applies to the compact form Lambda receives)")
    ap.add_argument("--write-samples", nargs="?", const=str(Path(__file__).resolve().parent),
                    metavar="DIR", help="rewrite the sample events (batch, fifo, empty, "
                    "replay) in DIR (default: this directory) and exit")
    a = ap.parse_args(argv)
    if a.write_samples:
        write_samples(a.write_samples)
        return 0
    if a.records < 0 or a.count < 1 or a.max_bytes < 0 or a.receive_count < 1:
        ap.error("--records >= 0, --count >= 1, --max-bytes >= 0 and --receive-count >= 1")
    if a.count > 1 and not a.out_dir:
        ap.error("--count above 1 needs --out-dir")
    if not (0 <= a.invalid_rate <= 1 and 0 <= a.duplicate_rate <= 1):
        ap.error("--invalid-rate and --duplicate-rate must be between 0 and 1")
    if a.fifo and a.records > 10:
        print("generate: note: Lambda delivers at most 10 records per batch from a FIFO queue;"
              f" generating {a.records:,} anyway", file=sys.stderr)
    messages = make_messages(a.records * a.count, a.seed, a.invalid_rate, a.duplicate_rate)
    out_dir = Path(a.out_dir) if a.out_dir else None
    if out_dir:
        out_dir.mkdir(parents=True, exist_ok=True)
    for e in range(a.count):
        chunk = messages[e * a.records:(e + 1) * a.records]
        event, n = fit_event(chunk, a.max_bytes, a.fifo, a.receive_count,
                             first_index=e * a.records)
        data = event_bytes(event, a.pretty)
        label = f"event {e + 1} of {a.count}" if a.count > 1 else "event"
        if out_dir:
            path = out_dir / f"event-{e + 1:04d}.json"
            path.write_bytes(data)
            label += f" ({path})"
        else:
            sys.stdout.buffer.write(data)
            sys.stdout.buffer.flush()
        _report(label, chunk[:n], len(chunk), len(data), n < len(chunk), a.max_bytes)
    return 0


if __name__ == "__main__":
    sys.exit(main())


def tiny_event(n, size):
    """An event of n of the smallest valid records, `size` bytes long or a little less: ids
    of 10 digits, some of 11 to fill it."""
    record = '{"messageId":"%s","body":"{\\"user_id\\":\\"u\\"}"}'
    base = len('{"Records":[]}') + n * (len(record % ("0" * 10)) + 1) - 1
    longer = max(0, min(n, size - base))
    return ('{"Records":[' + ",".join(record % ("%011d" % i if i < longer else "%010d" % i)
                                      for i in range(n)) + ']}').encode()
