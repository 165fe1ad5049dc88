"""The sample events in events/ and the generator events/generate.py.

Checks that every sample is an SQS event exactly as Lambda delivers it (shape, types, the
real MD5 of each body, UUID messageIds unique per file), that each sample holds what
events/README.md says it holds and that its documented answer follows from docs/behaviour.md
rules, and that the generator is deterministic, stays under the 6 MB invocation limit and
makes the mix it is asked for. Message validity is judged here by an implementation of
docs/behaviour.md, "Field rules" written independently of the generator.

Standalone: python3 tests/integration/test_events.py
"""
import datetime
import hashlib
import ipaddress
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
EVENTS = ROOT / "events"
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from events import generate  # noqa: E402

LIMIT = 6_291_456
UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
RECORD_KEYS = ["messageId", "receiptHandle", "body", "attributes", "messageAttributes",
               "md5OfBody", "eventSource", "eventSourceARN", "awsRegion"]
STD_ATTRS = {"ApproximateReceiveCount", "SentTimestamp", "SenderId",
             "ApproximateFirstReceiveTimestamp"}
FIFO_ATTRS = STD_ATTRS | {"MessageGroupId", "SequenceNumber", "MessageDeduplicationId"}
SAMPLES = ["batch.json", "fifo.json", "empty.json", "replay.json"]


# --- docs/behaviour.md, "Field rules", independently ---------------------------------------
def _no_constants(name):
    raise ValueError(f"{name} is not JSON")


def contract_reason(body):
    """None when the body makes a valid row under docs/behaviour.md ("Field rules"), else the
    reason, named like function/login.h's codes (for a message with a single defect they must agree)."""
    try:
        obj = json.loads(body, parse_constant=_no_constants)
    except ValueError:
        return "body_not_json"
    if not isinstance(obj, dict):
        return "body_not_object"
    if "\x00" in body or "\\u0000" in body:
        return "body_nul"

    def text(key, lo, hi, required=False):
        v = obj.get(key)
        if v is None:
            return "missing" if required else None
        if not isinstance(v, str):
            return "not_string"
        return None if lo <= len(v) <= hi else "length"

    for key, lo, hi, req in (("user_id", 1, 128, True), ("device_type", 0, 32, False),
                             ("locale", 0, 32, False), ("device_id", 1, 128, False)):
        r = text(key, lo, hi, req)
        if r:
            return f"{key}_{r}"
    ip = obj.get("ip")
    if ip is not None:
        if not isinstance(ip, str):
            return "ip_not_string"
        try:
            ipaddress.ip_address(ip)
        except ValueError:
            return "ip_invalid"
        if "%" in ip or ip != ip.strip():
            return "ip_invalid"
    v = obj.get("app_version")
    if v is not None:
        if isinstance(v, bool) or not isinstance(v, (int, float, str)):
            return "app_version_type"
        if isinstance(v, float):
            return "app_version_format"  # a JSON number, but not an integer
        if isinstance(v, int):
            if v < 0 or v * 1_000_000 > 2**31 - 1:
                return "app_version_range"
        else:
            m = re.fullmatch(r"([0-9]+)(?:\.([0-9]+))?(?:\.([0-9]+))?", v)
            if not m:
                return "app_version_format"
            major, minor, patch = (int(g) if g else 0 for g in m.groups())
            if minor > 999 or patch > 999 or major * 1_000_000 + minor * 1000 + patch > 2**31 - 1:
                return "app_version_range"
    return None


def app_version_int(v):
    if v is None:
        return None
    if isinstance(v, int):
        return v * 1_000_000
    parts = [int(p) for p in v.split(".")] + [0, 0]
    return parts[0] * 1_000_000 + parts[1] * 1000 + parts[2]


def expected_answer(event):
    """The batchItemFailures docs/behaviour.md, "Answers" asks for, on a fresh database."""
    recs = event["Records"]
    fifo = any(r["eventSourceARN"].endswith(".fifo") for r in recs)
    out = []
    for r in recs:
        if out and fifo:
            out.append(r["messageId"])
        elif contract_reason(r["body"]):
            out.append(r["messageId"])
    return out


# --- helpers --------------------------------------------------------------------------------
def load(name):
    return json.loads((EVENTS / name).read_text(encoding="utf-8"))


def check_event_shape(event, where):
    assert isinstance(event, dict) and list(event) == ["Records"], f"{where}: top level"
    assert isinstance(event["Records"], list), f"{where}: Records is not a list"
    ids = []
    for i, r in enumerate(event["Records"], 1):
        at = f"{where} record {i}"
        assert list(r) == RECORD_KEYS, f"{at}: keys {list(r)}"
        assert UUID_RE.match(r["messageId"]), f"{at}: messageId {r['messageId']!r} is not a UUID"
        assert isinstance(r["receiptHandle"], str) and len(r["receiptHandle"]) >= 20, at
        assert isinstance(r["body"], str) and r["body"], f"{at}: body"
        assert r["md5OfBody"] == hashlib.md5(r["body"].encode()).hexdigest(), f"{at}: md5OfBody"
        assert r["messageAttributes"] == {}, at
        assert r["eventSource"] == "aws:sqs", at
        assert r["awsRegion"] == "us-east-1", at
        arn = r["eventSourceARN"]
        fifo = arn.endswith(".fifo")
        assert re.fullmatch(r"arn:aws:sqs:us-east-1:000000000000:login-queue(\.fifo)?", arn), at
        a = r["attributes"]
        assert set(a) == (FIFO_ATTRS if fifo else STD_ATTRS), f"{at}: attributes {sorted(a)}"
        assert all(isinstance(v, str) for v in a.values()), f"{at}: attribute values are strings"
        for k in ("ApproximateReceiveCount", "SentTimestamp", "ApproximateFirstReceiveTimestamp"):
            assert a[k].isdigit(), f"{at}: {k}"
        assert int(a["ApproximateFirstReceiveTimestamp"]) >= int(a["SentTimestamp"]), at
        assert 1_600_000_000_000 < int(a["SentTimestamp"]) < 2_000_000_000_000, at
        if fifo:
            assert len(a["SequenceNumber"]) == 20 and a["SequenceNumber"].isdigit(), at
            assert a["MessageGroupId"], at
            assert a["MessageDeduplicationId"] == hashlib.sha256(r["body"].encode()).hexdigest(), at
        ids.append(r["messageId"])
    return ids


def bodies(event):
    return [json.loads(r["body"]) for r in event["Records"]]


def run_generator(*args):
    r = subprocess.run([sys.executable, str(EVENTS / "generate.py"), *args],
                       capture_output=True, timeout=120)
    assert r.returncode == 0, f"generate.py {args} exited {r.returncode}: {r.stderr.decode()}"
    return r.stdout, r.stderr.decode()


# --- the samples ----------------------------------------------------------------------------
def test_samples_are_lambda_sqs_events():
    for name in SAMPLES:
        event = load(name)
        ids = check_event_shape(event, name)
        assert len(ids) == len(set(ids)), f"{name}: duplicate messageIds"
        if event["Records"]:
            assert not event["Records"][0]["eventSourceARN"].endswith(".fifo") or name == "fifo.json"


def test_samples_match_the_generator():
    # The files are what `generate.py --write-samples` writes: nobody hand-edited a body
    # without its md5, and the documented answers describe these very files.
    built = generate.build_samples()
    for name in SAMPLES:
        assert load(name) == built[name], f"{name} differs from generate.build_samples()"
        written = (EVENTS / name).read_bytes()
        assert written == generate.event_bytes(built[name], pretty=True), f"{name}: formatting"


def test_documented_answers_follow_from_the_contract():
    readme = (EVENTS / "README.md").read_text(encoding="utf-8")
    sections = re.split(r"^## ", readme, flags=re.M)
    for name in SAMPLES:
        section = next(s for s in sections if s.startswith(name))
        block = re.search(r"```json\n(.*?)\n```", section, re.S).group(1)
        documented = [f["itemIdentifier"] for f in json.loads(block)["batchItemFailures"]]
        assert documented == generate.SAMPLE_ANSWERS[name], f"README answer for {name}"
        if name == "replay.json":
            # After batch.json: valid messageIds are already committed, the bad one fails again.
            assert documented == expected_answer(load("batch.json"))
        else:
            assert documented == expected_answer(load(name)), f"{name}: answer vs docs/behaviour.md"


def test_batch_holds_the_documented_mix():
    event = load("batch.json")
    recs = event["Records"]
    b = bodies(event)
    assert len(recs) == 11
    not_login = [x for x in b if "user_id" not in x]
    assert not_login == [{"foo": "oops_wrong_msg_type", "bar": "123"}]
    logins = [x for x in b if "user_id" in x]
    assert all(contract_reason(r["body"]) is None for r in recs if "user_id" in json.loads(r["body"]))
    assert sum(1 for x in logins if ":" in x["ip"]) == 1, "one IPv6 address"
    assert sum(1 for x in logins if x["locale"] is None) >= 4, "locale is often null"
    assert {"2.3.0", "0.96", "3.7"} <= {x["app_version"] for x in logins}
    assert {x["device_type"] for x in logins} == {"android", "ios"}
    assert all(re.fullmatch(r"\d{3}-\d{2}-\d{4}", x["device_id"]) for x in logins)
    assert all(UUID_RE.match(x["user_id"]) for x in logins)
    # An exact ip/device_id duplicate across two different users.
    by_pair = {}
    for x in logins:
        by_pair.setdefault((x["ip"], x["device_id"]), set()).add(x["user_id"])
    assert any(len(users) >= 2 for users in by_pair.values()), "no ip/device_id shared by two users"
    # The README's app_version integers and create_dates.
    assert [app_version_int(x["app_version"]) for x in logins] == \
        [2003000, 96000, 3007000, 2003000, 2003001, 3007000, 2003000, 96000, 3007000, 2003000]
    dates = [datetime.datetime.fromtimestamp(int(r["attributes"]["SentTimestamp"]) / 1000,
                                             datetime.timezone.utc).date().isoformat() for r in recs]
    assert dates == ["2024-06-10"] * 3 + ["2024-06-11"] * 8


def test_fifo_sample_fails_from_the_third_record():
    event = load("fifo.json")
    recs = event["Records"]
    assert len(recs) == 5
    assert all(r["eventSourceARN"].endswith(".fifo") for r in recs)
    seq = [int(r["attributes"]["SequenceNumber"]) for r in recs]
    assert seq == sorted(seq) and len(set(seq)) == 5, "sequence numbers grow"
    assert len({r["attributes"]["MessageGroupId"] for r in recs}) == 1
    reasons = [contract_reason(r["body"]) for r in recs]
    assert reasons == [None, None, "app_version_format", None, None], reasons
    assert expected_answer(event) == [r["messageId"] for r in recs[2:]]


def test_empty_and_replay():
    assert load("empty.json") == {"Records": []}
    batch, replay = load("batch.json"), load("replay.json")
    assert [r["messageId"] for r in replay["Records"]] == [r["messageId"] for r in batch["Records"]]
    for b, r in zip(batch["Records"], replay["Records"]):
        assert r["body"] == b["body"] and r["md5OfBody"] == b["md5OfBody"]
        assert r["attributes"]["ApproximateReceiveCount"] == "2"
        assert b["attributes"]["ApproximateReceiveCount"] == "1"
        assert r["attributes"]["SentTimestamp"] == b["attributes"]["SentTimestamp"]
        assert r["receiptHandle"] != b["receiptHandle"], "a redelivery has a new receipt handle"


# --- the generator --------------------------------------------------------------------------
def test_generator_is_deterministic():
    a = generate.make_messages(3000, seed=7)
    b = generate.make_messages(3000, seed=7)
    c = generate.make_messages(3000, seed=8)
    assert a == b
    assert [m["body"] for m in a] != [m["body"] for m in c]
    assert generate.event_bytes(generate.make_event(a)) == generate.event_bytes(generate.make_event(b))
    out1, _ = run_generator("--records", "500", "--seed", "3")
    out2, _ = run_generator("--records", "500", "--seed", "3")
    assert out1 == out2 and out1


def test_generator_messages_are_what_they_claim():
    msgs = generate.make_messages(20000, seed=11, invalid_rate=0.05, duplicate_rate=0.05)
    ids = [m["messageId"] for m in msgs]
    assert len(set(ids)) == len(ids) and all(UUID_RE.match(i) for i in ids)
    for m in msgs:
        reason = contract_reason(m["body"])
        if m["kind"] == "valid":
            assert reason is None, f"generated 'valid' message is invalid ({reason}): {m['body']}"
        else:
            assert reason is not None, f"generated {m['kind']} message is valid: {m['body']}"
            assert m["reason"] == generate.BAD_KINDS[m["kind"]][0] == reason, \
                f"{m['kind']}: generator says {m['reason']}, the contract {reason}"
    kinds = {m["kind"] for m in msgs} - {"valid"}
    assert kinds == set(generate.BAD_KINDS), f"missing kinds: {set(generate.BAD_KINDS) - kinds}"
    invalid = sum(m["kind"] != "valid" for m in msgs)
    assert 0.04 * len(msgs) < invalid < 0.06 * len(msgs), invalid
    valid = [json.loads(m["body"]) for m in msgs if m["kind"] == "valid"]
    dup = [m for m in msgs if m["duplicate"]]
    assert 0.03 * len(valid) < len(dup) < 0.07 * len(valid), len(dup)
    # A duplicate's (ip, device_id) really belongs to an earlier login of another user.
    owners = {}
    for m in msgs:
        if m["kind"] != "valid":
            continue
        x = json.loads(m["body"])
        pair = (x["ip"], x["device_id"])
        if m["duplicate"]:
            assert owners.get(pair, set()) - {x["user_id"]}, "duplicate of nobody else"
        owners.setdefault(pair, set()).add(x["user_id"])
    ipv6 = sum(1 for x in valid if ":" in x["ip"])
    assert 0.02 * len(valid) < ipv6 < 0.15 * len(valid), ipv6
    assert any(x["ip"] != str(ipaddress.ip_address(x["ip"])) for x in valid if ":" in x["ip"]), \
        "some IPv6 addresses in a non-canonical form"
    assert 0.4 < sum(x["locale"] is None for x in valid) / len(valid) < 0.8
    assert {"2.3.0", "0.96", "3.7"} <= {x["app_version"] for x in valid}
    assert all(re.fullmatch(r"\d{3}-\d{2}-\d{4}", x["device_id"]) for x in valid)
    # Users come back: fewer distinct users than logins.
    assert len({x["user_id"] for x in valid}) < 0.6 * len(valid)


def test_generator_respects_rates_of_zero():
    msgs = generate.make_messages(2000, seed=2, invalid_rate=0, duplicate_rate=0)
    assert all(m["kind"] == "valid" and not m["duplicate"] for m in msgs)
    bad = generate.make_messages(500, seed=2, invalid_rate=1, bad_kinds=["not_login"])
    assert all(m["kind"] == "not_login" for m in bad)


def test_generator_caps_at_the_invocation_limit():
    out, err = run_generator("--records", "10000", "--seed", "1")
    assert 0 < len(out) <= LIMIT, len(out)
    event = json.loads(out)
    ids = check_event_shape(event, "generated event")
    assert len(ids) == len(set(ids))
    n = len(event["Records"])
    assert 7000 < n < 10000, n
    assert f"capped at {n:,} of 10,000 records" in err, err
    assert "6,291,456" in err
    # The next record would not have fitted: the cap is tight, not arbitrary.
    msgs = generate.make_messages(10000, seed=1)
    bigger = generate.event_bytes(generate.make_event(msgs[:n + 1]))
    assert len(bigger) > LIMIT
    # And the report counts what is in the event.
    m = re.search(r"([\d,]+) valid .*?([\d,]+) invalid", err)
    valid, invalid = (int(g.replace(",", "")) for g in m.groups())
    assert valid + invalid == n
    assert invalid == sum(1 for r in event["Records"] if contract_reason(r["body"]))


def test_generator_without_cap_and_small_events():
    out, err = run_generator("--records", "9000", "--seed", "4", "--max-bytes", "0")
    assert len(out) > LIMIT and len(json.loads(out)["Records"]) == 9000
    assert "capped" not in err
    out, err = run_generator("--records", "100", "--seed", "4")
    assert "capped" not in err and len(json.loads(out)["Records"]) == 100
    assert "invalid by kind" in err or " 0 invalid" in err


def test_generator_out_dir_and_fifo():
    with tempfile.TemporaryDirectory() as d:
        _, err = run_generator("--records", "200", "--count", "3", "--out-dir", d, "--seed", "5")
        files = sorted(Path(d).glob("event-*.json"))
        assert [f.name for f in files] == ["event-0001.json", "event-0002.json", "event-0003.json"]
        all_ids = []
        for f in files:
            ev = json.loads(f.read_bytes())
            all_ids += check_event_shape(ev, f.name)
            assert len(ev["Records"]) == 200
        assert len(set(all_ids)) == 600, "events of one run share no messageId"
        assert err.count("generate: event ") == 3
        _, err = run_generator("--records", "20", "--fifo", "--out-dir", d, "--seed", "5")
        ev = json.loads((Path(d) / "event-0001.json").read_bytes())
        check_event_shape(ev, "fifo event")
        assert all(r["eventSourceARN"].endswith(".fifo") for r in ev["Records"])
        assert "at most 10 records" in err
    r = subprocess.run([sys.executable, str(EVENTS / "generate.py"), "--count", "2"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "--out-dir" in r.stderr
