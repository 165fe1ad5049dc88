"""The batch streamed while the event is parsed: each record's ledger key goes
to the server as soon as its object closes, before the rest of the event is
read, and the rows follow while they are validated and masked.  So the keys
of records that get no row (rejected, cut by a FIFO failure or by the
deadline) and of events found invalid late have reached the ledger COPY of
the open transaction: these tests read the tables directly to check that
none of them is committed, and that the connection survives the rollback."""
import json
import time

from events.generate import event_bytes, make_event, make_messages
from rig import harness, ledger, pg
from rig.harness import Etl
from rig.messages import START_MS, msg


def _ledger(db):
    """The ledger's keys (markers left out)."""
    return set(ledger.ids(db))


def _keys(ids):
    """The ledger keys of these messageIds."""
    return {ledger.key(i) for i in ids}


def _backend(db):
    """The function's server process (its connection), or None."""
    rows = db.query("SELECT pid FROM pg_stat_activity WHERE application_name = 'login-etl'")
    assert len(rows) <= 1, rows
    return rows[0]["pid"] if rows else None


def test_an_event_found_invalid_after_many_good_records_writes_nothing():
    good = make_messages(3000, seed=81, invalid_rate=0)
    text = event_bytes(make_event(good))
    assert text.endswith(b"]}")
    tails = {
        # a record without a messageId after 3000 good ones
        "record": text[:-2] + b',{"body":"{}"}]}',
        # the text breaks off
        "truncated": text[:-40],
        # trailing garbage after the root object
        "trailing": text + b" x",
    }
    with Etl() as etl:
        assert etl.answer(event_bytes(make_event([msg("warm", {"user_id": "u"})]))) == set()
        pid = _backend(etl.db)
        assert pid is not None
        for name, event in tails.items():
            res = etl.invoke(event)
            assert res.kind == "error", (name, res.body[:300])
            assert res.json()["errorType"] == "InvalidEvent", (name, res.body[:300])
            assert etl.count() == 1, name
            assert _ledger(etl.db) == _keys({"warm"}), name
            # The keys that went out were rolled back on the same connection.
            assert _backend(etl.db) == pid, name
            assert etl.db.scalar("SELECT count(*) FROM pg_stat_activity WHERE application_name "
                                 "= 'login-etl' AND state <> 'idle'") == "0", name
        # The good records, delivered again as a valid event, land once.
        assert etl.answer(text) == set()
        assert etl.count() == 3001
        assert _ledger(etl.db) == _keys({"warm"} | {m["messageId"] for m in good})
        assert _backend(etl.db) == pid


def test_a_later_records_member_wins_over_the_keys_already_sent():
    # With duplicate keys the last one wins (as json_get): the first array's
    # records went to the sink while it was parsed, and must leave nothing.
    first = make_messages(2000, seed=82, invalid_rate=0)
    second = [msg(f"second-{i}", {"user_id": f"s{i}"}) for i in range(5)]
    a = json.dumps(make_event(first)["Records"], separators=(",", ":"))
    b = json.dumps(make_event(second)["Records"], separators=(",", ":"))
    event = ('{"Records":' + a + ',"Records":' + b + "}").encode()
    with Etl() as etl:
        assert etl.answer(event) == set()
        assert _ledger(etl.db) == _keys({m["messageId"] for m in second})
        assert sorted(r["user_id"] for r in etl.rows()) == [f"s{i}" for i in range(5)]


def test_rejected_records_leave_no_ledger_entry():
    msgs = make_messages(2000, seed=83, invalid_rate=0.1)
    valid = {m["messageId"] for m in msgs if m["kind"] == "valid"}
    rejected = {m["messageId"] for m in msgs} - valid
    assert len(rejected) > 100
    with Etl() as etl:
        assert etl.answer(event_bytes(make_event(msgs))) == rejected
        assert _ledger(etl.db) == _keys(valid)
        assert etl.count() == len(valid)
        m = etl.boot.metrics()[-1]
        assert (m["RecordsWritten"], m["RecordsRejected"]) == (len(valid), len(rejected)), m
        # Redelivered, the rejected ones are rejected again (not taken for
        # duplicates) and nothing is written twice.
        assert etl.answer(event_bytes(make_event(msgs, receive_count=2))) == rejected
        assert _ledger(etl.db) == _keys(valid) and etl.count() == len(valid)
        m = etl.boot.metrics()[-1]
        assert (m["RecordsDuplicate"], m["RecordsRejected"]) == (len(valid), len(rejected)), m


def test_a_batch_whose_records_are_all_rejected_leaves_nothing_and_keeps_the_connection():
    bad = [msg(f"bad-{i}", {"user_id": i}) for i in range(300)]
    with Etl() as etl:
        assert etl.answer(event_bytes(make_event([msg("warm", {"user_id": "u"})]))) == set()
        pid = _backend(etl.db)
        assert etl.answer(event_bytes(make_event(bad))) == {m["messageId"] for m in bad}
        assert _ledger(etl.db) == _keys({"warm"}) and etl.count() == 1
        assert _backend(etl.db) == pid


def test_fifo_cut_records_leave_no_ledger_entry():
    # Enough records that most keys after the failure went out while the
    # event was parsed, before the failure was found.
    n = 6000
    msgs = [msg(f"f{i}", {"user_id": f"u{i}"}) for i in range(n)]
    msgs[150] = msg("f150", {"user_id": 7})
    with Etl() as etl:
        listed = etl.answer(event_bytes(make_event(msgs, fifo=True)))
        assert listed == {f"f{i}" for i in range(150, n)}
        assert _ledger(etl.db) == _keys({f"f{i}" for i in range(150)})
        assert etl.count() == 150
        # Redelivered with the bad one fixed, the rest lands, once.
        msgs[150] = msg("f150", {"user_id": "u150"})
        assert etl.answer(event_bytes(make_event(msgs[150:], fifo=True))) == set()
        assert _ledger(etl.db) == _keys({f"f{i}" for i in range(n)})
        assert etl.count() == n


def test_records_cut_by_the_deadline_leave_no_ledger_entry():
    # The margin puts the moment to stop transforming before the invocation
    # starts, while the database may still be written to: the keys went out
    # during parsing, no row follows, and the batch comes back whole.
    msgs = make_messages(6000, seed=84, invalid_rate=0)
    env = {"LOGIN_ETL_DEADLINE_MARGIN_MS": "1500"}
    with Etl(env=env) as etl:
        assert etl.answer(event_bytes(make_event([msg("warm", {"user_id": "u"})]))) == set()
        deadline = int(time.time() * 1000) + 2500
        res = etl.invoke(event_bytes(make_event(msgs)), deadline_ms=deadline)
        listed = res.failures()
        assert listed == {m["messageId"] for m in msgs}
        assert _ledger(etl.db) == _keys({"warm"}) and etl.count() == 1
        assert any(isinstance(l, dict) and l.get("message", "").startswith("deadline near")
                   for l in etl.boot.logs())
        # Retried in time, all of it lands.
        assert etl.answer(event_bytes(make_event(msgs, receive_count=2))) == set()
        assert etl.count() == len(msgs) + 1


def test_a_user_without_delete_on_the_ledger_leaves_no_entry_for_rejected_records():
    # The keys of rejected records cannot be deleted: the batch is written again
    # without them.
    db = harness.tables_by_owner([msg("seed", {"user_id": "u0"})])
    env = harness.etl_role(db, "etl_nodelete", "SELECT, INSERT")
    # Big enough that keys of rejected records went out while it was parsed.
    msgs = make_messages(5000, seed=85, invalid_rate=0.1)
    valid = {m["messageId"] for m in msgs if m["kind"] == "valid"}
    with Etl(reset_db=False, env=env) as etl:
        for delivery in (1, 2):
            listed = etl.answer(event_bytes(make_event(msgs, receive_count=delivery)))
            assert listed == {m["messageId"] for m in msgs} - valid
            assert _ledger(etl.db) == _keys(valid | {"seed"})
            assert etl.count() == len(valid) + 1
        # Known to lack DELETE (found when the ids of rejected records had gone out
        # before their bodies were validated, as they do in a batch this big unless
        # the machine is very busy), the function holds each key back until its row
        # is known: a fresh batch with rejected records is written in one attempt.
        more = make_messages(5000, seed=87, invalid_rate=0.1)
        more_valid = {m["messageId"] for m in more if m["kind"] == "valid"}
        assert etl.answer(event_bytes(make_event(more))) == \
            {m["messageId"] for m in more} - more_valid
        assert _ledger(etl.db) == _keys(valid | more_valid | {"seed"})
        done = [l for l in etl.boot.logs() if isinstance(l, dict)
                and l.get("message") == "batch done"]
        assert done[-1]["attempts"] == 1, done[-1]


def test_a_ledger_line_refused_after_keys_without_rows_names_the_right_record():
    # A BEFORE trigger on the ledger refuses one key, and the error names its
    # line of the ledger COPY; by then, keys before it that went out may have
    # been found to have no row (rejected records): they are ledger lines all
    # the same, so the count must include them.
    bad_id = "refused-by-the-ledger"
    # Near the end of a big batch: the server reaches it while the records
    # before it are being validated.
    msgs = make_messages(7000, seed=86, invalid_rate=0.1)
    msgs[6990] = msg(bad_id, {"user_id": "long"})
    valid = {m["messageId"] for m in msgs if m.get("kind", "valid") == "valid"} - {bad_id}
    rejected = {m["messageId"] for m in msgs} - valid
    trigger = f"""
CREATE OR REPLACE FUNCTION refuse_one() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF NEW.message_id = '{ledger.key(bad_id)}'::uuid THEN
    RAISE EXCEPTION 'refused';
  END IF;
  RETURN NEW;
END $$;
CREATE TRIGGER refuse_one BEFORE INSERT ON {ledger.LEDGER}
    FOR EACH ROW EXECUTE FUNCTION refuse_one();
"""
    with Etl() as etl:
        # The tables exist once a batch is written; then they are emptied.
        assert etl.answer(event_bytes(make_event([msg("warm", {"user_id": "u"})]))) == set()
        etl.db.psql(f"DELETE FROM user_logins; DELETE FROM {ledger.LEDGER}")
        etl.db.psql(trigger, user=pg.SUPERUSER, password=pg.SUPERPASS)
        try:
            for delivery in (1, 2):
                assert etl.answer(event_bytes(make_event(msgs, receive_count=delivery))) == \
                    rejected
                assert _ledger(etl.db) == _keys(valid)
                assert etl.count() == len(valid)
            # Found by its line, not by writing the batch again in parts.
            logs = [l for l in etl.boot.logs() if isinstance(l, dict)]
            assert not any(l.get("message") == "isolating by transactions" for l in logs)
            assert sum(1 for l in logs if l.get("message") == "database refused a row") == 2
        finally:
            etl.db.psql(f"DROP TRIGGER IF EXISTS refuse_one ON {ledger.LEDGER}",
                        user=pg.SUPERUSER, password=pg.SUPERPASS)


def test_rejected_records_leave_no_entry_when_the_batch_spans_two_slots():
    # The ledger is partitioned by day slot: entries of one batch in two
    # partitions share row addresses, so the ids of rejected records must be
    # deleted by partition and address together, or a valid record's entry
    # could go with them.
    half = make_messages(2500, seed=88, invalid_rate=0.1, start_ms=START_MS)
    other = make_messages(2500, seed=89, invalid_rate=0.1, start_ms=START_MS + 86_400_000)
    # Interleaved, so that each partition's entries fill its pages alike.
    msgs = [m for pair in zip(half, other) for m in pair]
    valid = {m["messageId"] for m in msgs if m["kind"] == "valid"}
    with Etl() as etl:
        assert etl.answer(event_bytes(make_event(msgs))) == {m["messageId"] for m in msgs} - valid
        assert _ledger(etl.db) == _keys(valid)
        parts = etl.db.query(f"SELECT tableoid::regclass::text AS p, count(*) AS n "
                             f"FROM {ledger.LEDGER} GROUP BY 1 ORDER BY 1")
        want = sorted(f"{ledger.LEDGER}_s{ledger.slot(t):02d}"
                      for t in (START_MS, START_MS + 86_400_000))
        assert [p["p"] for p in parts] == want, parts
        assert etl.count() == len(valid)


def test_a_rejected_records_key_never_reaches_the_ledger():
    # Bodies are validated as the records are parsed, before their keys go out:
    # the ledger COPY never carries a rejected record's key, so there is nothing
    # to delete before COMMIT.  An audit trigger sees every key the server was
    # handed, whether or not it was deleted again.
    msgs = make_messages(3000, seed=90, invalid_rate=0.1)
    valid = {m["messageId"] for m in msgs if m["kind"] == "valid"}
    assert len(valid) < len(msgs) - 100
    audit = f"""
CREATE TABLE IF NOT EXISTS ledger_audit (message_id uuid);
TRUNCATE ledger_audit;
CREATE OR REPLACE FUNCTION audit_key() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER AS $$
BEGIN
  INSERT INTO ledger_audit VALUES (NEW.message_id);
  RETURN NEW;
END $$;
CREATE TRIGGER audit_key BEFORE INSERT ON {ledger.LEDGER}
    FOR EACH ROW EXECUTE FUNCTION audit_key();
"""
    su = dict(user=pg.SUPERUSER, password=pg.SUPERPASS)
    with Etl() as etl:
        assert etl.answer(event_bytes(make_event([msg("warm", {"user_id": "u"})]))) == set()
        etl.db.psql(audit, **su)
        try:
            assert etl.answer(event_bytes(make_event(msgs))) == {m["messageId"] for m in msgs} - valid
            assert _ledger(etl.db) == _keys(valid | {"warm"})
            seen = {r["message_id"] for r in etl.db.query(
                "SELECT message_id::text AS message_id FROM ledger_audit", **su)}
            assert seen == _keys(valid)
        finally:
            etl.db.psql(f"DROP TRIGGER IF EXISTS audit_key ON {ledger.LEDGER}; "
                        "DROP TABLE IF EXISTS ledger_audit", **su)
