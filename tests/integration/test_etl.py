"""The ETL end to end: the real bootstrap, through the Runtime API emulator,
into the real test Postgres; rows compared column by column with values
computed independently (tests/rig/expect.py)."""
import json
import time

from events.generate import event_bytes, make_event, make_messages
from rig import expect, harness, pg
from rig.harness import Etl, assert_no_pii, row_key
from rig.messages import msg


def _expected(messages):
    """(expected rows sorted, ids that must be listed) for messages with unique ids."""
    rows, rejected = [], set()
    for m in messages:
        r = expect.row(m["body"], m["sentTimestamp"])
        if r is None:
            rejected.add(m["messageId"])
        else:
            rows.append(r)
    return sorted(rows, key=row_key), rejected


def test_realistic_batches_match_independent_computation():
    messages = make_messages(1200, seed=11, invalid_rate=0.05, duplicate_rate=0.1)
    want_rows, want_rejected = _expected(messages)
    assert 30 < len(want_rejected) < 120 and any(m["duplicate"] for m in messages)
    assert any(":" in (json.loads(m["body"]).get("ip") or "") for m in messages
               if m["kind"] == "valid"), "the sample should hold IPv6 addresses"
    with Etl() as etl:
        listed = set()
        for i in range(0, len(messages), 300):
            listed |= etl.answer(event_bytes(make_event(messages[i:i + 300])))
        assert listed == want_rejected
        got = sorted(etl.rows(), key=row_key)
        assert len(got) == len(want_rows)
        for g, w in zip(got, want_rows):
            assert g == w, f"row differs:\n got  {g}\n want {w}"
        # The generator's own idea of each bad message agrees with the reason logged.
        logged = {l["messageId"]: l["reason"] for l in etl.boot.logs()
                  if isinstance(l, dict) and l.get("message") == "record rejected"}
        for m in messages:
            if m["reason"]:
                assert logged.get(m["messageId"]) == m["reason"], (m["kind"], logged.get(m["messageId"]))
        assert_no_pii(etl.boot.output(), messages)
        metrics = etl.boot.metrics()
        assert len(metrics) == 4
        assert sum(m["RecordsWritten"] for m in metrics) == len(want_rows)
        assert sum(m["RecordsRejected"] for m in metrics) == len(want_rejected)


# Every rejection rule: (body, the reason code the log must give).
REJECTIONS = [
    ('{"foo": "oops_wrong_msg_type", "bar": "123"}', "user_id_missing"),
    ('{"user_id": null}', "user_id_missing"),
    ('{"user_id": 5}', "user_id_not_string"),
    ('{"user_id": ""}', "user_id_length"),
    (json.dumps({"user_id": "u" * 129}), "user_id_length"),
    (json.dumps({"user_id": "é" * 129}), "user_id_length"),
    ('{"USER_ID": "a"}', "user_id_missing"),
    ('{"user_id": "a", "device_type": 3}', "device_type_not_string"),
    (json.dumps({"user_id": "a", "device_type": "x" * 33}), "device_type_length"),
    ('{"user_id": "a", "locale": ["RU"]}', "locale_not_string"),
    (json.dumps({"user_id": "a", "locale": "l" * 33}), "locale_length"),
    ('{"user_id": "a", "ip": 1234}', "ip_not_string"),
    ('{"user_id": "a", "ip": "256.1.1.1"}', "ip_invalid"),
    ('{"user_id": "a", "ip": "fe80::1%eth0"}', "ip_invalid"),
    ('{"user_id": "a", "ip": " 1.2.3.4"}', "ip_invalid"),
    ('{"user_id": "a", "device_id": {}}', "device_id_not_string"),
    ('{"user_id": "a", "device_id": ""}', "device_id_length"),
    (json.dumps({"user_id": "a", "device_id": "d" * 129}), "device_id_length"),
    ('{"user_id": "a", "app_version": true}', "app_version_type"),
    ('{"user_id": "a", "app_version": 2.5}', "app_version_format"),
    ('{"user_id": "a", "app_version": 1e3}', "app_version_format"),
    ('{"user_id": "a", "app_version": -1}', "app_version_range"),
    ('{"user_id": "a", "app_version": "2.3.0-beta"}', "app_version_format"),
    ('{"user_id": "a", "app_version": "1..2"}', "app_version_format"),
    ('{"user_id": "a", "app_version": "1.1000"}', "app_version_range"),
    ('{"user_id": "a", "app_version": "2147.483.648"}', "app_version_range"),
    ('[1, 2]', "body_not_object"),
    ('{"user_id": "a"', "body_not_json"),
    ('', "body_not_json"),
    ('{"user_id": "a\\u0000b"}', "body_nul_character"),
    ('{"user_id": "a\\ud800"}', "body_invalid_utf8"),
]


def test_every_rejection_rule_gives_its_reason_and_the_exact_failure_list():
    messages = [msg(f"bad-{i:02d}", body) for i, (body, _) in enumerate(REJECTIONS)]
    good = msg("good-1", {"user_id": "u1", "ip": "2001:DB8::1", "device_id": "123-45-6789",
                          "app_version": "0.96", "locale": None, "device_type": "ios"})
    good2 = msg("good-2", {"user_id": "u2", "ip": "2001:db8:0:0:0:0:0:1", "app_version": 3})
    event = make_event(messages + [good, good2])
    with Etl() as etl:
        listed = etl.answer(event_bytes(event))
        assert listed == {m["messageId"] for m in messages}
        logged = {l["messageId"]: l["reason"] for l in etl.boot.logs()
                  if isinstance(l, dict) and l.get("message") == "record rejected"}
        for m, (_, reason) in zip(messages, REJECTIONS):
            assert logged.get(m["messageId"]) == reason, (m["body"], logged.get(m["messageId"]), reason)
        rows = sorted(etl.rows(), key=lambda r: r["user_id"])
        assert [r["user_id"] for r in rows] == ["u1", "u2"]
        assert rows[0]["masked_ip"] == rows[1]["masked_ip"] == expect.mask("2001:db8::1")
        assert rows[0]["locale"] is None and rows[0]["app_version"] == 96000
        assert rows[1]["app_version"] == 3000000 and rows[1]["masked_device_id"] is None


def test_raw_nul_and_invalid_utf8_in_a_body_reject_only_that_record():
    # Built by hand: a raw U+0000 and a lone surrogate inside the event's own body strings.
    ok = make_event([msg("ok", {"user_id": "u"})])["Records"][0]
    recs = []
    for mid, body_json in (("nul", '"{\\"user_id\\": \\"a\\u0000\\"}"'),
                           ("surrogate", '"{\\"user_id\\": \\"\\udc00\\"}"')):
        r = dict(ok, messageId=mid)
        text = json.dumps(r).replace(json.dumps(ok["body"]), body_json)
        recs.append(text)
    raw_bad = json.dumps(dict(ok, messageId="raw")).replace(
        json.dumps(ok["body"]), '"{\\"user_id\\": \\"\xff\\"}"')
    event = ('{"Records":[' + ",".join(recs) + "," + json.dumps(ok) + "," + raw_bad + "]}")
    with Etl() as etl:
        data = event.encode("latin-1") if "\xff" in event else event.encode()
        assert etl.answer(data) == {"nul", "surrogate", "raw"}
        assert [r["user_id"] for r in etl.rows()] == ["u"]


def test_replayed_batches_add_no_rows_and_repeats_in_a_batch_give_one_row():
    messages = make_messages(400, seed=5, invalid_rate=0.03)
    _, want_rejected = _expected(messages)
    with Etl() as etl:
        first = etl.answer(event_bytes(make_event(messages[:250])))
        n1 = etl.count()
        # A replay of everything, and the first 250 again inside a larger batch.
        assert etl.answer(event_bytes(make_event(messages[:250], receive_count=2))) == first
        assert etl.count() == n1
        mixed = etl.answer(event_bytes(make_event(messages[100:400] + messages[300:400])))
        assert mixed == {m["messageId"] for m in messages[100:400]} & want_rejected
        assert etl.count() == len(messages) - len(want_rejected)
        ledger = int(etl.db.scalar("SELECT count(*) FROM login_etl_ledger_v3"))
        assert ledger == etl.count()
        m = etl.boot.metrics()
        assert m[1]["RecordsDuplicate"] == 250 - len(first) and m[1]["RecordsWritten"] == 0


def test_content_duplicates_with_different_ids_are_all_written():
    body = {"user_id": "u", "ip": "10.0.0.1", "device_id": "111-22-3333"}
    with Etl() as etl:
        assert etl.answer(event_bytes(make_event([msg(f"m{i}", body) for i in range(5)]))) == set()
        rows = etl.rows()
        assert len(rows) == 5 and len({r["masked_ip"] for r in rows}) == 1


def test_empty_batch_and_events_that_are_not_sqs():
    good = event_bytes(make_event([msg("after", {"user_id": "u"})]))
    with Etl() as etl:
        assert etl.answer(b'{"Records": []}') == set()
        for bad in (b"not json", b"[]", b"{}", b'{"Records": {}}', b'{"Records": [1]}',
                    b'{"Records": [{"body": "{}"}]}', b'{"Records": [{"messageId": "", "body": "{}"}]}'):
            res = etl.invoke(bad)
            assert res.kind == "error", bad
            assert res.json()["errorType"] == "InvalidEvent" and res.json()["errorMessage"]
            assert res.headers.get("lambda-runtime-function-error-type") == "InvalidEvent"
        assert etl.answer(good) == set()
        assert etl.count() == 1


def test_fifo_stops_at_the_first_failure():
    msgs = [msg(f"f{i}", {"user_id": f"u{i}"}) for i in range(6)]
    msgs[2] = msg("f2", {"user_id": 7})
    with Etl() as etl:
        listed = etl.answer(event_bytes(make_event(msgs, fifo=True)))
        assert listed == {"f2", "f3", "f4", "f5"}
        assert sorted(r["user_id"] for r in etl.rows()) == ["u0", "u1"]
        # Redelivered with the bad one fixed, the rest lands in order, once.
        msgs[2] = msg("f2", {"user_id": "u2"})
        assert etl.answer(event_bytes(make_event(msgs[2:], fifo=True))) == set()
        assert sorted(r["user_id"] for r in etl.rows()) == [f"u{i}" for i in range(6)]


def test_a_repeat_after_a_fifo_stop_is_listed_once():
    """A FIFO batch cut by a rejected record: a later messageId that occurs twice is
    listed once in the answer (SQS takes each id once), and counted once per record."""
    msgs = [msg("g0", {"user_id": "u0"}), msg("g1", {"user_id": 7}),
            msg("g2", {"user_id": "u2"}), msg("g2", {"user_id": "u2"}),
            msg("g3", {"user_id": "u3"})]
    with Etl() as etl:
        res = etl.invoke(event_bytes(make_event(msgs, fifo=True)))
        ids = [f["itemIdentifier"] for f in res.json()["batchItemFailures"]]
        assert ids == ["g1", "g2", "g3"], ids
        m = etl.boot.metrics()[-1]
        assert (m["RecordsReceived"], m["RecordsWritten"], m["RecordsRejected"],
                m["RecordsFailed"]) == (5, 1, 1, 3), m


def test_database_outage_fails_the_batch_and_the_next_one_recovers():
    a = make_messages(200, seed=21, invalid_rate=0)
    b = make_messages(200, seed=22, invalid_rate=0)
    with Etl() as etl:
        assert etl.answer(event_bytes(make_event(a))) == set()
        etl.db.stop()
        try:
            t0 = time.monotonic()
            res = etl.invoke(event_bytes(make_event(b)), timeout_s=5)
            assert res.kind == "error" and res.json()["errorType"] == "DatabaseUnavailable", res.body
            assert time.monotonic() - t0 < 5
            assert etl.boot.alive()
        finally:
            etl.db.start()
        # SQS delivers both batches again: each lands exactly once.
        assert etl.answer(event_bytes(make_event(b, receive_count=2))) == set()
        assert etl.answer(event_bytes(make_event(a, receive_count=2))) == set()
        assert etl.count() == 400
        assert_no_pii(etl.boot.output(), a + b)


def test_a_held_table_lock_answers_before_the_deadline_and_writes_nothing():
    msgs = make_messages(100, seed=31, invalid_rate=0)
    with Etl() as etl:
        assert etl.answer(event_bytes(make_event(msgs[:1]))) == set()  # creates the table
        db = etl.db
        locker = db.hold_lock("user_logins", "ACCESS EXCLUSIVE", 8)
        try:
            deadline = int(time.time() * 1000) + 3000
            rid = etl.emu.enqueue(event_bytes(make_event(msgs[1:])), deadline_ms=deadline)
            res = etl.emu.wait_result(rid, timeout=10)
            answered = int(time.time() * 1000)
            assert answered < deadline, f"answered {answered - deadline} ms after the deadline"
            listed = res.failures()
            assert listed == {m["messageId"] for m in msgs[1:]}
        finally:
            locker.wait(timeout=20)
        assert etl.count() == 1
        # Afterwards the same batch lands.
        assert etl.answer(event_bytes(make_event(msgs[1:], receive_count=2))) == set()
        assert etl.count() == 100


def test_settings_checked_at_start_are_init_errors():
    from rig import proc, runtime_api
    cases = [
        ({"MASKING_KEY": None}, "MASKING_KEY"),
        ({"MASKING_KEY": "00" * 63}, "128"),
        ({"MASKING_KEY": "zz" * 64}, "hex"),
        ({"MASKING_KEY_ID": "toolongid"}, "MASKING_KEY_ID"),
        ({"MASKING_KEY_ID": "k-1"}, "MASKING_KEY_ID"),
        ({"MASKING_KEY_ID": ""}, "MASKING_KEY_ID"),  # set but empty: not the default
        ({"PGUSER": None}, "user"),
    ]
    db = pg.server()
    for env, needle in cases:
        with runtime_api.Emulator() as emu:
            boot = proc.Bootstrap(emu.address, db=db, env=env)
            err = emu.wait_init_error(timeout=20)
            status = boot.wait(timeout=20)
            assert status != 0, env
            doc = err.json()
            assert doc["errorType"] == "InvalidConfiguration", doc
            assert needle.lower() in doc["errorMessage"].lower(), (env, doc)
            assert proc.MASKING_KEY not in boot.output()
            assert boot.sanitizer_report() is None


def test_least_privilege_user_with_tables_made_upstream():
    # The upstream environment owns the tables; the function's user may only
    # insert (and read its ledger), with no CREATE on the schema.
    db = harness.tables_by_owner([msg("seed", {"user_id": "u0"})])
    env = harness.etl_role(db, "etl_min", "SELECT, INSERT, DELETE")
    assert db.scalar("SELECT has_schema_privilege('etl_min', 'public', 'CREATE')") == "f"
    with Etl(reset_db=False, env=env) as etl:
        msgs = make_messages(50, seed=51, invalid_rate=0)
        assert etl.answer(event_bytes(make_event(msgs))) == set()
        assert etl.answer(event_bytes(make_event(msgs))) == set()  # a replay, too
        assert etl.count() == 51


def test_two_invocations_racing_on_the_same_messages_write_each_once():
    # SQS can hand the same message to two pollers (a visibility timeout that ran
    # out): two processes, the same batches, at the same time.
    from rig import proc, runtime_api
    messages = make_messages(3000, seed=61, invalid_rate=0)
    events = [event_bytes(make_event(messages[i:i + 1000])) for i in range(0, 3000, 1000)]
    db = pg.server()
    db.reset()
    with runtime_api.Emulator() as a, runtime_api.Emulator() as b:
        pa, pb = proc.Bootstrap(a.address, db=db), proc.Bootstrap(b.address, db=db)
        try:
            rids = [(a.enqueue(e), b.enqueue(e)) for e in events]
            for ra, rb in rids:
                for emu, rid in ((a, ra), (b, rb)):
                    res = emu.wait_result(rid, timeout=60)
                    assert res.kind == "response", res.body
                    assert res.json() == {"batchItemFailures": []}, res.body
        finally:
            pa.stop()
            pb.stop()
        for p in (pa, pb):
            assert p.sanitizer_report() is None
    assert int(db.scalar("SELECT count(*) FROM user_logins")) == 3000
    assert int(db.scalar("SELECT count(*) FROM login_etl_ledger_v3")) == 3000
    written = sum(m["RecordsWritten"] for p in (pa, pb) for m in p.metrics())
    duplicate = sum(m["RecordsDuplicate"] for p in (pa, pb) for m in p.metrics())
    assert (written, duplicate) == (3000, 3000), (written, duplicate)


def test_large_batch_with_replayed_ids_in_the_middle_and_at_the_end():
    # The ledger COPY streams while the batch is parsed; a replayed id found
    # anywhere in it voids the attempt, and the retry skips exactly the replays.
    messages = make_messages(6000, seed=71, invalid_rate=0.02)
    want_rows, want_rejected = _expected(messages)
    with Etl() as etl:
        # Ids from the middle and the end of the big batch are committed first.
        early = messages[2500:2600] + messages[5900:]
        assert etl.answer(event_bytes(make_event(early))) == \
            {m["messageId"] for m in early} & want_rejected
        listed = etl.answer(event_bytes(make_event(messages)), timeout_s=120)
        assert listed == want_rejected
        got = sorted(etl.rows(), key=row_key)
        assert got == want_rows
        m = etl.boot.metrics()[-1]
        early_valid = sum(1 for x in early if x["messageId"] not in want_rejected)
        assert m["RecordsDuplicate"] == early_valid, m
        assert m["RecordsWritten"] == len(want_rows) - early_valid, m


def test_a_repeated_message_id_is_counted_by_the_fate_it_shares():
    """Within one batch a repeated messageId shares the fate of its first record: the repeat
    of a rejected record is rejected (not a duplicate), the repeat of a written one is a
    duplicate, and every record is counted once: received = written + duplicate + rejected
    + failed."""
    good = {"user_id": "u", "ip": "10.0.0.1", "device_id": "111-22-3333"}
    bad = {"user_id": "", "ip": "10.0.0.1"}
    msgs = [msg("a", good), msg("r", bad), msg("r", good), msg("a", bad), msg("r", good),
            msg("b", good)]
    with Etl() as etl:
        assert etl.answer(event_bytes(make_event(msgs))) == {"r"}
        assert etl.count() == 2
        m = etl.boot.metrics()[-1]
        got = {k: m[k] for k in ("RecordsReceived", "RecordsWritten", "RecordsDuplicate",
                                 "RecordsRejected", "RecordsFailed")}
        assert got == {"RecordsReceived": 6, "RecordsWritten": 2, "RecordsDuplicate": 1,
                       "RecordsRejected": 3, "RecordsFailed": 0}, got
