"""Quarantine, the default (REJECTED_RECORDS unset): a record the function will never
accept (any rejection reason, and a row the database refuses) is stored in
login_etl_rejected by the batch's own transaction, its whole body masked (the oracle and
`bootstrap unmask` recover it), and answered done, so SQS deletes it; a replay adds
nothing; a FIFO group goes on past it; RecordsQuarantined counts each message once.
REJECTED_RECORDS=retry keeps listing them."""
import json
import subprocess

from events.generate import event_bytes, make_event
from rig import keys, paths, proc
from rig.harness import Etl
from rig.messages import msg

QUARANTINE = {"REJECTED_RECORDS": None}  # the function's default
KEYRING = [keys.OLD]


def _valid(mid, user="user-1", **fields):
    body = {"user_id": user, "device_type": "ios", "ip": "192.0.2.7", "device_id": "d-1",
            "locale": "en_US", "app_version": "3.1.4"}
    body.update(fields)
    return msg(mid, body)


# One record per kind of rejection, with its reason code.
REJECTED = [
    (msg("bad-ip", {"user_id": "u-ip", "ip": "999.1.1.1"}), "ip_invalid"),
    (msg("not-json", "this is {not json"), "body_not_json"),
    (msg("no-user", {"ip": "192.0.2.8"}), "user_id_missing"),
    (msg("not-object", [1, 2, 3]), "body_not_object"),
]


def _quarantine(etl):
    return {r["message_id"]: r for r in etl.db.query(
        "SELECT message_id, reason, masked_body AS body, sent_at::text AS sent_at, received_at::text AS "
        "received_at FROM login_etl_rejected")}


def _last_metrics(etl):
    return etl.boot.metrics()[-1]


def test_rejected_records_are_quarantined_masked_and_answered_done():
    good = [_valid(f"ok-{i}", user=f"user-{i}") for i in range(3)]
    bad = [m for m, _ in REJECTED]
    event = event_bytes(make_event(good[:1] + bad[:2] + good[1:] + bad[2:]))
    with Etl(env=QUARANTINE) as etl:
        assert etl.answer(event) == set()
        assert sorted(r["user_id"] for r in etl.rows()) == ["user-0", "user-1", "user-2"]
        stored = _quarantine(etl)
        assert set(stored) == {m["messageId"] for m in bad}
        for m, reason in REJECTED:
            row = stored[m["messageId"]]
            assert row["reason"] == reason
            assert row["sent_at"] is not None and row["received_at"] is not None
            # Nothing raw: the body is the masked form, recovered with the key alone.
            assert m["body"] not in row["body"]
            assert row["body"].startswith(keys.OLD.id + ":")
            assert keys.unmask(KEYRING, row["body"]) == m["body"]
            assert row["body"] == keys.mask(keys.OLD, m["body"])
        # The ledger holds every message: a replay writes and stores nothing more.
        assert etl.answer(event) == set()
        assert etl.count() == 3 and len(_quarantine(etl)) == len(bad)
        first, replay = etl.boot.metrics()[-2:]
        assert (first["RecordsReceived"], first["RecordsWritten"], first["RecordsRejected"],
                first["RecordsQuarantined"], first["RecordsFailed"]) == (7, 3, 4, 4, 0)
        assert (replay["RecordsDuplicate"], replay["RecordsQuarantined"],
                replay["RecordsRejected"]) == (7, 0, 0)
        for m in (first, replay):
            assert m["RecordsReceived"] == (m["RecordsWritten"] + m["RecordsDuplicate"]
                                            + m["RecordsRejected"] + m["RecordsFailed"])
        out = etl.boot.output()
    for m, _ in REJECTED:
        assert m["body"] not in out


def test_bootstrap_unmask_recovers_a_quarantined_body():
    big = {"user_id": "u", "ip": "not-an-ip", "note": "x" * 3000}
    with Etl(env=QUARANTINE) as etl:
        assert etl.answer(event_bytes(make_event([msg("big", big)]))) == set()
        (row,) = _quarantine(etl).values()
    r = subprocess.run([str(paths.ASAN), "unmask", "-"], input=row["body"] + "\n",
                       capture_output=True, text=True,
                       env={"MASKING_KEY": proc.MASKING_KEY, "MASKING_KEY_ID": proc.MASKING_KEY_ID,
                            "PATH": "/usr/bin:/bin"})
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == big


def test_a_batch_of_rejected_records_only_is_quarantined_once():
    event = event_bytes(make_event([m for m, _ in REJECTED]))
    with Etl(env=QUARANTINE) as etl:
        assert etl.answer(event) == set()
        assert etl.answer(event) == set()
        assert len(_quarantine(etl)) == len(REJECTED) and etl.count() == 0
        assert [m["RecordsQuarantined"] for m in etl.boot.metrics()] == [4, 0]


def test_a_row_the_database_refuses_is_quarantined_and_a_replay_adds_nothing():
    msgs = [_valid("a"), _valid("b", user="refuse-me"), _valid("c", user="user-3")]
    event = event_bytes(make_event(msgs))
    with Etl(env=QUARANTINE) as etl:
        assert etl.answer(event_bytes(make_event([_valid("warm")]))) == set()
        etl.db.superuser("ALTER TABLE user_logins ADD CONSTRAINT no_refuse "
                         "CHECK (user_id NOT LIKE 'refuse-%')")
        assert etl.answer(event) == set()
        stored = _quarantine(etl)
        assert list(stored) == ["b"] and stored["b"]["reason"] == "database_rejected"
        assert keys.unmask(KEYRING, stored["b"]["body"]) == msgs[1]["body"]
        assert etl.answer(event) == set()
        assert len(_quarantine(etl)) == 1
        assert sorted(r["user_id"] for r in etl.rows()) == ["user-1", "user-1", "user-3"]
        m = etl.boot.metrics()[-2]
        assert (m["RecordsWritten"], m["RecordsRejected"], m["RecordsQuarantined"]) == (2, 1, 1)
        assert "refuse-me" not in etl.boot.output()


def test_a_fifo_group_goes_on_past_a_quarantined_record():
    msgs = [_valid("f1", user="u1"), REJECTED[0][0], _valid("f3", user="u3"),
            _valid("f4", user="refuse-4"), _valid("f5", user="u5")]
    with Etl(env=QUARANTINE) as etl:
        assert etl.answer(event_bytes(make_event([_valid("warm")]))) == set()
        etl.db.superuser("ALTER TABLE user_logins ADD CONSTRAINT no_refuse "
                         "CHECK (user_id NOT LIKE 'refuse-%')")
        assert etl.answer(event_bytes(make_event(msgs, fifo=True))) == set()
        assert sorted(r["user_id"] for r in etl.rows()) == ["u1", "u3", "u5", "user-1"]
        assert set(_quarantine(etl)) == {"bad-ip", "f4"}


def test_retry_keeps_listing_rejected_records():
    event = event_bytes(make_event([_valid("ok")] + [m for m, _ in REJECTED]))
    with Etl(env={"REJECTED_RECORDS": "retry"}) as etl:
        assert etl.answer(event) == {m["messageId"] for m, _ in REJECTED}
        assert _quarantine(etl) == {}
        assert _last_metrics(etl)["RecordsQuarantined"] == 0


def test_a_trigger_on_the_ledger_refusing_ids_leaves_only_those_for_a_retry():
    """An operator's trigger on the ledger refuses some ids: their rows are refused, and
    so is storing them in the quarantine (their ids go into the ledger too); they alone
    are listed, and everything else, a record quarantined among them, is done once."""
    from integration.test_refused import LEDGER_BEFORE_TRIGGER, LEDGER_TRIGGER
    for trigger in (LEDGER_BEFORE_TRIGGER, LEDGER_TRIGGER):
        msgs = [_valid(("bad-" if i in (9, 30) else "") + f"id{i}", user=f"user-{i}")
                for i in range(40)]
        msgs.append(REJECTED[0][0])
        event = event_bytes(make_event(msgs))
        with Etl(env=QUARANTINE) as etl:
            assert etl.answer(event_bytes(make_event([_valid("warm")]))) == set()
            etl.db.psql("DELETE FROM user_logins; DELETE FROM login_etl_ledger_v3")
            etl.db.superuser(trigger)
            try:
                for _ in range(2):
                    assert etl.answer(event) == {"bad-id9", "bad-id30"}
                    assert etl.count() == 38
                    assert list(_quarantine(etl)) == ["bad-ip"]
                logged = [l.get("message") for l in etl.boot.logs() if isinstance(l, dict)]
                assert "the quarantine was refused: storing its records one by one" in logged
            finally:
                etl.db.superuser("DROP TRIGGER IF EXISTS refuse_id ON login_etl_ledger_v3")


def test_a_user_without_insert_on_the_quarantine_lists_rejected_records_for_a_retry():
    """A release upgraded before the quarantine's grant (docs/releases.md): the table is
    there, the function's user may not insert into it; rejected records are listed, as
    with REJECTED_RECORDS=retry, and the valid ones written once."""
    from rig import harness, pg
    db = pg.server()
    db.reset()
    with Etl(reset_db=False, env=QUARANTINE) as etl:
        assert etl.answer(event_bytes(make_event([_valid("warm")]))) == set()
    env = dict(harness.etl_role(db, "etl_noquarantine", "SELECT, INSERT, DELETE"), **QUARANTINE)
    msgs = [_valid("a", user="user-a"), REJECTED[0][0], _valid("b", user="user-b")]
    with Etl(reset_db=False, env=env) as etl:
        for _ in range(2):
            assert etl.answer(event_bytes(make_event(msgs))) == {"bad-ip"}
        assert sorted(r["user_id"] for r in etl.rows()) == ["user-1", "user-a", "user-b"]
        assert _quarantine(etl) == {}
        warned = [l for l in etl.boot.logs() if isinstance(l, dict) and
                  l.get("message", "").startswith("no INSERT on login_etl_rejected")]
        assert len(warned) == 1, warned


def test_rows_refused_without_a_line_are_quarantined_once():
    """A deferred constraint trigger (fires at COMMIT, names no row) and an AFTER trigger
    (end of the COPY): the rows are isolated in parts, the refused ones quarantined."""
    from integration.test_refused import AFTER_TRIGGER, DEFERRED_TRIGGER
    for trigger in (DEFERRED_TRIGGER, AFTER_TRIGGER):
        msgs = [_valid(f"d{i}", user=("refuse-secret-" if i in (5, 31) else "user-") + str(i))
                for i in range(40)]
        event = event_bytes(make_event(msgs))
        with Etl(env=QUARANTINE) as etl:
            assert etl.answer(event_bytes(make_event([_valid("warm")]))) == set()
            etl.db.psql("DELETE FROM user_logins; DELETE FROM login_etl_ledger_v3")
            etl.db.superuser(trigger)
            try:
                for _ in range(2):
                    assert etl.answer(event) == set()
                    assert etl.count() == 38
                    stored = _quarantine(etl)
                    assert sorted(stored) == ["d31", "d5"]
                    assert {r["reason"] for r in stored.values()} == {"database_rejected"}
                assert "refuse-secret" not in etl.boot.output()
            finally:
                etl.db.superuser("DROP TRIGGER IF EXISTS refuse_late ON user_logins")


def test_two_invocations_holding_the_same_rejected_records_quarantine_each_once():
    """Two processes given the same event at once (a visibility timeout ran out): the
    ledger's unique key makes one of them store each rejected record, the other answer it
    done as a duplicate."""
    import threading
    from rig import pg
    db = pg.server()
    db.reset()
    for rnd in range(3):
        msgs = [msg(f"c{rnd}-{i}", {"user_id": f"u{i}", "ip": "999.0.0.1"}) for i in range(30)]
        msgs += [_valid(f"c{rnd}-ok{i}", user=f"user-{i}") for i in range(30)]
        event = event_bytes(make_event(msgs))
        with Etl(reset_db=False, env=QUARANTINE) as a, Etl(reset_db=False, env=QUARANTINE) as b:
            answers = {}
            threads = [threading.Thread(target=lambda e=e: answers.__setitem__(e, e.answer(event)))
                       for e in (a, b)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            assert list(answers.values()) == [set(), set()], answers
            q = [m["RecordsQuarantined"] for e in (a, b) for m in e.boot.metrics()]
            assert sum(q) == 30, q
        ids = db.psql(f"SELECT message_id FROM login_etl_rejected WHERE message_id LIKE "
                      f"'c{rnd}-%'").split()
        assert sorted(ids) == sorted(f"c{rnd}-{i}" for i in range(30))
        assert db.scalar(f"SELECT count(*) FROM user_logins WHERE user_id LIKE 'user-%'") == \
            str(30 * (rnd + 1))


def test_the_quarantine_path_under_valgrind():
    """Rejected, refused, replayed, a batch of rejected records only, a body of 200 KB:
    no memcheck error and no leak in the quarantine's code (tests/rig/valgrind.py)."""
    from rig import valgrind
    valgrind.require()
    big = msg("big", {"user_id": "u", "ip": "bad", "pad": "x" * 200_000})
    batches = [[_valid("v1"), REJECTED[0][0], REJECTED[1][0]],
               [_valid("v2", user="refuse-2"), _valid("v3", user="user-3")],
               [m for m, _ in REJECTED], [big], [_valid("v1"), REJECTED[0][0], big]]
    with Etl(env=QUARANTINE) as etl:  # the tables, and the constraint the second batch meets
        assert etl.answer(event_bytes(make_event([_valid("warm")]))) == set()
        etl.db.superuser("ALTER TABLE user_logins ADD CONSTRAINT no_refuse "
                         "CHECK (user_id NOT LIKE 'refuse-%')")
    etl = Etl(binary=valgrind.plain_bootstrap(), valgrind=True, reset_db=False, env=QUARANTINE,
              max_invocations=len(batches))
    for b in batches:
        assert etl.answer(event_bytes(make_event(b)), timeout=300) == set()
    status = etl.boot.wait(300)
    etl.close(expect_alive=False)
    valgrind.assert_clean(etl.boot.valgrind_log, status)
    assert len(_quarantine(etl)) == 6
