"""The ledger and the connection, end to end with the real bootstrap and the test
Postgres: the (slot, SentTimestamp, messageId) key catches redeliveries, ids that are not
SQS's lowercase UUIDs stay distinct; retention truncates the expired day slot (or sweeps
it by DELETE) and is held up by no lock; the earlier ledger layouts keep exactly-once
through an upgrade; a schema that lacks what exactly-once needs is refused; nothing the
function sends changes session state; a deadline far away does not overflow the server's
timeouts."""
import datetime
import json
import os
import re
import subprocess
import time

from events.generate import event_bytes, make_event, make_messages
from rig import exactly_once, expect, harness, ledger, pg
from rig.harness import Etl, row_key, wait_for

LEDGER = ledger.LEDGER
DAY_MS = 86400000
V2_DDL = ("CREATE TABLE login_etl_ledger_v2 (sent_at timestamptz NOT NULL, "
          "message_id text COLLATE \"C\" NOT NULL, committed_at timestamptz NOT NULL DEFAULT now(), "
          "PRIMARY KEY (sent_at, message_id))")
LEGACY_DDL = ("CREATE TABLE login_etl_ledger (message_id text COLLATE \"C\" PRIMARY KEY, "
              "committed_at timestamptz NOT NULL DEFAULT now())")
USER_LOGINS_DDL = ("CREATE TABLE user_logins (user_id varchar(128), device_type varchar(32), "
                   "masked_ip varchar(256), masked_device_id varchar(256), locale varchar(32), "
                   "app_version integer, create_date date)")


def _valid(messages):
    return [m for m in messages if exactly_once.is_valid(m)]


def _without_sent_timestamp(event):
    for r in event["Records"]:
        del r["attributes"]["SentTimestamp"]
    return event


def _logged(etl, message):
    return [l for l in etl.boot.logs() if isinstance(l, dict) and l.get("message") == message]


def _logged_once(etl, message, sqlstate):
    """`message` was logged exactly once, with this SQLSTATE."""
    lines = _logged(etl, message)
    assert len(lines) == 1 and lines[0]["sqlstate"] == sqlstate, lines


def test_ledger_is_keyed_by_sent_timestamp_and_message_id_and_catches_redeliveries():
    messages = make_messages(300, seed=81, invalid_rate=0)
    book = exactly_once.Sent()
    with Etl() as etl:
        assert etl.answer(event_bytes(make_event(messages[:200]))) == set()
        book.add(messages[:200])
        # A redelivery (receive count 2) of part of it, with new messages.
        assert etl.answer(event_bytes(make_event(messages[100:300], receive_count=2))) == set()
        book.add(messages[100:300])
        exactly_once.assert_database(etl.db, book)
        got = {r["message_id"]: (r["slot"], r["ms"]) for r in etl.db.query(
            f"SELECT message_id, slot, (extract(epoch FROM sent_at) * 1000)::int8 AS ms "
            f"FROM {LEDGER}")}
        assert got == {m["messageId"]: (ledger.slot(m["sentTimestamp"]), m["sentTimestamp"])
                       for m in messages}
        m = etl.boot.metrics()[-1]
        assert (m["RecordsWritten"], m["RecordsDuplicate"]) == (100, 100), m


def test_messages_without_sent_timestamp_are_written_once():
    messages = make_messages(40, seed=82, invalid_rate=0)
    with Etl() as etl:
        event = event_bytes(_without_sent_timestamp(make_event(messages)))
        assert etl.answer(event) == set()
        assert etl.answer(event) == set()
        assert etl.count() == 40
        assert etl.db.scalar(f"SELECT count(*) FROM {LEDGER} WHERE sent_at = '-infinity' "
                             "AND slot = 18") == "40"
        # Without SentTimestamp, create_date is the date of processing.
        today = etl.db.scalar("SELECT (now() AT TIME ZONE 'UTC')::date")
        assert {r["create_date"] for r in etl.rows()} <= {today, str(
            etl.db.scalar("SELECT (now() AT TIME ZONE 'UTC')::date - 1"))}


def test_ids_that_are_not_lowercase_uuids_stay_distinct_and_meet_their_redeliveries():
    # SQS's ids are stored as the uuid they are; any other id (upper case, hand-made) is
    # mapped to a uuid by SHA-256, so ids that differ only in case are two messages.
    base = make_messages(6, seed=80, invalid_rate=0)
    lower = base[0]["messageId"]
    ids = [lower, lower.upper(), "abc", "ABC", "00000000-0000-0000-0000-000000000000",
           "00000000-0000-0000-0000-000000000001"]
    messages = [dict(m, messageId=i) for m, i in zip(base, ids)]
    with Etl() as etl:
        assert etl.answer(event_bytes(make_event(messages))) == set()
        assert etl.answer(event_bytes(make_event(messages, receive_count=2))) == set()
        assert etl.count() == 6
        got = ledger.ids(etl.db)
        assert sorted(got) == sorted(ledger.key(i) for i in ids), got
        assert len(set(got)) == 6 and lower in got
        # The version-0 uuids are the ledger's markers: those ids were hashed.
        assert not set(got) & set(ledger.MARKERS)
        m = etl.boot.metrics()[-1]
        assert (m["RecordsWritten"], m["RecordsDuplicate"]) == (0, 6), m


def _slot_of_day(day):
    return day % ledger.SLOTS


def _fill_old_slot(db, n, committed="sent_at + interval '1 hour'", prefix="old"):
    """n entries in the slot retention clears today, (today + 2) mod 18: entries of the
    day 16 days ago, by the server's clock.  Returns that slot."""
    today = int(db.scalar("SELECT floor(extract(epoch FROM now()) * 1000 / 86400000)::int8"))
    slot = _slot_of_day(today + 2)
    db.psql(f"INSERT INTO {LEDGER} (slot, sent_at, message_id, committed_at) "
            f"SELECT {slot}, to_timestamp({(today - 16) * 86400}) + g * interval '1 s', "
            f"md5('{prefix}' || g)::uuid, to_timestamp({(today - 16) * 86400}) + g * interval '1 s'"
            f" FROM generate_series(1, {n}) g; "
            f"UPDATE {LEDGER} SET committed_at = {committed} WHERE slot = {slot}")
    return slot


def _old_slot_for(role, ledger_privileges, seed, n):
    """Tables made by their owner (one message of this seed written), n entries in the slot
    retention clears today, and the function's login role `role` granted these privileges
    on the ledger.  Returns (the server, that slot, the role's environment)."""
    db = harness.tables_by_owner(make_messages(1, seed=seed))
    slot = _fill_old_slot(db, n)
    return db, slot, harness.etl_role(db, role, ledger_privileges)


def _slot_count(db, slot):
    return int(db.scalar(f"SELECT count(*) FROM {LEDGER} WHERE slot = {slot}"))


def _run_batches(etl, count, seed, done=lambda: False):
    """Batches of fresh messages, each answered at once; retention's steps go after
    their COMMITs.  Stops early once done()."""
    for i in range(count):
        assert etl.answer(event_bytes(make_event(make_messages(
            4, seed=seed + i, invalid_rate=0)))) == set()
        if done():
            return


def test_retention_truncates_the_expired_day_slot_and_sweeps_slot_18():
    db = harness.tables_by_owner(make_messages(2, seed=300))
    slot = _fill_old_slot(db, 3000)
    young = (slot + 1) % ledger.SLOTS  # 15 days ago: still needed
    db.psql(f"INSERT INTO {LEDGER} (slot, sent_at, message_id, committed_at) "
            f"SELECT {young}, now() - interval '15 days', md5('young' || g)::uuid, "
            "now() - interval '15 days' FROM generate_series(1, 100) g; "
            # Slot 18 (no SentTimestamp): 50 expired entries, 20 young, and an upgrade marker.
            f"INSERT INTO {LEDGER} (slot, sent_at, message_id, committed_at) "
            "SELECT 18, '-infinity', md5('none' || g)::uuid, "
            "now() - CASE WHEN g <= 50 THEN interval '16 days' ELSE interval '1 day' END "
            "FROM generate_series(1, 70) g; "
            f"INSERT INTO {LEDGER} (slot, sent_at, message_id, committed_at) "
            f"VALUES (18, '-infinity', '{ledger.MARKER_V1}', now() - interval '30 days')")
    with Etl(reset_db=False) as etl:
        # The first batch's retention step finds the slot full (and sweeps slot 18); the
        # second's truncates it; the third reads that answer.
        _run_batches(etl, 5, 310, done=lambda: _slot_count(db, slot) == 0)
        assert _slot_count(db, slot) == 0
        _run_batches(etl, 1, 319)  # reads the TRUNCATE's answer
        assert _slot_count(db, young) == 100
        assert db.scalar(f"SELECT count(*) FROM {LEDGER} WHERE slot = 18") == "21"
        assert db.scalar(f"SELECT count(*) FROM {LEDGER} WHERE message_id = "
                         f"'{ledger.MARKER_V1}'") == "1"
        wait_for(lambda: _logged(etl, "ledger slot cleared"), timeout=5)
        assert _logged(etl, "ledger slot cleared")[0]["slot"] == slot
        # Once a day: later batches do not look at the slot again.
        _fill_old_slot(db, 10, prefix="again")
        _run_batches(etl, 3, 320)
        assert _slot_count(db, slot) == 10
        assert len(_logged(etl, "ledger slot cleared")) == 1


def test_a_slot_with_a_young_entry_is_not_truncated_but_swept():
    # A message committed long after it was sent (the function was down for days) leaves
    # a young entry in the old slot: TRUNCATE is refused under its lock, and the slot is
    # swept by DELETE of what is old, in bounded steps.
    db = harness.tables_by_owner(make_messages(2, seed=330))
    slot = _fill_old_slot(db, 2500)
    db.psql(f"UPDATE {LEDGER} SET committed_at = now() - interval '1 day' "
            f"WHERE slot = {slot} AND message_id = md5('old1')::uuid")
    with Etl(reset_db=False) as etl:
        _run_batches(etl, 8, 340, done=lambda: _slot_count(db, slot) == 1)
        assert _slot_count(db, slot) == 1
        assert db.scalar(f"SELECT message_id = md5('old1')::uuid FROM {LEDGER} "
                         f"WHERE slot = {slot}") == "t"
        _logged_once(etl, "the ledger slot holds young entries: swept by DELETE", "55000")
        assert not _logged(etl, "ledger slot cleared")


def test_without_truncate_privilege_the_slot_is_swept_by_delete():
    db, slot, env = _old_slot_for("etl_notrunc", "SELECT, INSERT, DELETE", seed=350, n=1500)
    with Etl(reset_db=False, env=env) as etl:
        _run_batches(etl, 6, 360, done=lambda: _slot_count(db, slot) == 0)
        assert _slot_count(db, slot) == 0
        _logged_once(etl, "no TRUNCATE on the ledger's slots: they are swept by DELETE", "42501")
    # With docs/deploy.md's grants (SELECT, TRUNCATE on each slot's partition) the same user
    # clears the slot with one TRUNCATE.
    slot = _fill_old_slot(db, 500, prefix="granted")
    db.psql("DO $$ BEGIN FOR i IN 0..18 LOOP EXECUTE format('GRANT SELECT, TRUNCATE ON %I "
            f"TO etl_notrunc', '{LEDGER}_s' || lpad(i::text, 2, '0')); END LOOP; END $$")
    with Etl(reset_db=False, env=env) as etl:
        _run_batches(etl, 6, 370, done=lambda: _slot_count(db, slot) == 0)
        assert _slot_count(db, slot) == 0
        _run_batches(etl, 1, 379)
        assert _logged(etl, "ledger slot cleared")
        assert not _logged(etl, "no TRUNCATE on the ledger's slots: they are swept by DELETE")


def test_without_delete_or_truncate_a_full_slot_is_left_and_writing_goes_on():
    db, slot, env = _old_slot_for("etl_nodelete", "SELECT, INSERT", seed=380, n=300)
    with Etl(reset_db=False, env=env) as etl:
        _run_batches(etl, 5, 381)
        assert etl.count() == 1 + 5 * 4
        assert _slot_count(db, slot) == 300
        _logged_once(etl, "ledger retention refused (no DELETE privilege): not tried again",
                     "42501")
        no_trunc = _logged(etl, "no TRUNCATE on the ledger's slots: they are swept by DELETE")
        assert len(no_trunc) == 1, no_trunc
        assert not _logged(etl, "ledger retention failed; the batch is committed")


def test_retention_without_delete_privilege_is_skipped_and_writing_goes_on():
    db = harness.tables_by_owner(make_messages(1, seed=85))
    env = harness.etl_role(db, "etl_nodelete", "SELECT, INSERT")
    with Etl(reset_db=False, env=env) as etl:
        for seed in (86, 87):
            msgs = make_messages(20, seed=seed, invalid_rate=0)
            assert etl.answer(event_bytes(make_event(msgs))) == set()
            assert etl.answer(event_bytes(make_event(msgs))) == set()
        assert etl.count() == 41
        _logged_once(etl, "ledger retention refused (no DELETE privilege): not tried again",
                     "42501")


def test_a_lock_held_on_the_old_slot_holds_up_no_batch():
    # An operator holds the slot retention wants to clear (ACCESS EXCLUSIVE: a TRUNCATE of
    # their own in a transaction left open). Retention's steps give up after their
    # lock_timeout in a transaction of their own; the batches that come meanwhile, a
    # replay's duplicate lookup among them, commit and answer at once.
    now_ms = int(time.time() * 1000)
    db = harness.tables_by_owner(make_messages(2, seed=1, invalid_rate=0, start_ms=now_ms))
    slot = _fill_old_slot(db, 100)
    locker = subprocess.Popen(
        ["psql", "-X", "-q", "-c", f"BEGIN; LOCK TABLE {LEDGER}_s{slot:02d} IN ACCESS "
         "EXCLUSIVE MODE; SELECT pg_sleep(60); COMMIT;"],
        env=dict(os.environ, **db.env(), PGAPPNAME="locker"), stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL)

    def release():
        locker.kill()
        db.psql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE application_name = 'locker'", user=pg.SUPERUSER, password=pg.SUPERPASS)

    try:
        assert wait_for(lambda: db.scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'locker' "
            "AND query LIKE '%pg_sleep%'", user=pg.SUPERUSER, password=pg.SUPERPASS) == "1",
            timeout=10)
        with Etl(reset_db=False) as etl:
            for i in range(4):
                msgs = make_messages(3, seed=100 + i % 2, invalid_rate=0, start_ms=now_ms)
                t0 = time.monotonic()
                res = etl.invoke(event_bytes(make_event(msgs)),
                                 deadline_ms=int(time.time() * 1000) + 3000)
                took = time.monotonic() - t0
                assert res.kind == "response" and res.json()["batchItemFailures"] == [], \
                    (res, etl.boot.logs()[-5:])
                assert took < 1.5, f"batch {i} took {took:.2f}s behind the locked slot"
            assert etl.count() == 2 + 6
            failed = _logged(etl, "ledger retention failed; the batch is committed")
            assert failed and failed[0]["sqlstate"] == "55P03", failed
            # Counting the slot's entries needs the operator's lock gone.
            release()
            assert _slot_count(db, slot) == 100
    finally:
        release()


def _earlier_database(db, old, ddl, ledger_copy):
    """A database as an earlier version left it: user_logins with the rows of `old`, and
    its ledger (ddl) holding their ids (ledger_copy: COPY target and one line per message)."""
    db.psql(USER_LOGINS_DDL + "; " + ddl)
    cols = ("user_id", "device_type", "masked_ip", "masked_device_id", "locale", "app_version",
            "create_date")
    lines = []
    for m in old:
        r = expect.row(m["body"], m["sentTimestamp"])
        lines.append("\t".join("\\N" if r[c] is None else str(r[c]) for c in cols))
    db.psql(f"COPY user_logins ({', '.join(cols)}) FROM STDIN", input="\n".join(lines) + "\n")
    target, line = ledger_copy
    db.psql(f"COPY {target} FROM STDIN", input="".join(line(m) + "\n" for m in old))


def _upgrade_keeps_exactly_once(table, ddl, ledger_copy, marker, seed):
    db = pg.server()
    db.reset()
    old = make_messages(120, seed=seed, invalid_rate=0)
    new = make_messages(80, seed=seed + 1, invalid_rate=0)
    _earlier_database(db, old, ddl, ledger_copy)
    book = exactly_once.Sent()
    book.add(old)
    with Etl(reset_db=False) as etl:
        # A redelivery of everything the earlier version committed, mixed with new
        # messages, then the same again: nothing is written twice.
        event = event_bytes(make_event(old[60:] + new + old[:60], receive_count=3))
        assert etl.answer(event) == set()
        assert etl.answer(event) == set()
        book.add(new)
        got = sorted(etl.rows(), key=row_key)
        assert got == book.expected_rows()
        m = etl.boot.metrics()
        assert (m[0]["RecordsWritten"], m[0]["RecordsDuplicate"]) == (80, 120), m[0]
        assert (m[1]["RecordsWritten"], m[1]["RecordsDuplicate"]) == (0, 200), m[1]
        consulted = _logged(etl, "the earlier ledger is consulted until its entries expire")
        assert [l["table"] for l in consulted] == [table], consulted
        # The new ledger holds the new messages and the moment of the upgrade.
        assert sorted(ledger.ids(db)) == sorted(ledger.keys(new))
        assert db.scalar(f"SELECT count(*) FROM {LEDGER} WHERE slot = 18 AND message_id = "
                         f"'{marker}' AND committed_at > now() - interval '1 hour'") == "1"
    # Fifteen days after the upgrade, with nothing committed there since, the earlier
    # ledger cannot matter any more.
    db.psql(f"UPDATE {LEDGER} SET committed_at = now() - interval '15 days 1 minute' "
            f"WHERE message_id = '{marker}'; UPDATE {table} SET committed_at = "
            "committed_at - interval '15 days 1 minute'")
    with Etl(reset_db=False) as etl:
        assert etl.answer(event_bytes(make_event(make_messages(3, seed=seed + 2)))) == set()
        done = _logged(etl, "the earlier ledger no longer matters and may be dropped")
        assert [l["table"] for l in done] == [table], done
        # The marker is kept (retention never deletes it), so this stays decided.
        assert db.scalar(f"SELECT count(*) FROM {LEDGER} WHERE message_id = '{marker}'") == "1"


def _v2_line(m):
    """A v2 ledger entry as COPY text: SentTimestamp as a timestamptz, the id as text."""
    sent = datetime.datetime.fromtimestamp(m["sentTimestamp"] / 1000, datetime.timezone.utc)
    return f"{sent.isoformat()}\t{m['messageId']}"


def test_upgrade_from_the_first_ledger_layout_keeps_exactly_once():
    _upgrade_keeps_exactly_once(
        "login_etl_ledger", LEGACY_DDL,
        ("login_etl_ledger (message_id)", lambda m: m["messageId"]), ledger.MARKER_V1, 88)


def test_upgrade_from_the_v2_ledger_layout_keeps_exactly_once():
    # The v2 layout as the previous version created and wrote it: (SentTimestamp, text id),
    # with its own upgrade marker (an empty message_id) that is no message.
    _upgrade_keeps_exactly_once(
        "login_etl_ledger_v2",
        V2_DDL + "; INSERT INTO login_etl_ledger_v2 (sent_at, message_id) VALUES "
        "('-infinity', '')",
        ("login_etl_ledger_v2 (sent_at, message_id)", _v2_line),
        ledger.MARKER_V2, 188)


def test_a_database_with_both_earlier_layouts_consults_both():
    db = pg.server()
    db.reset()
    a = make_messages(30, seed=190, invalid_rate=0)
    b = make_messages(30, seed=191, invalid_rate=0)
    _earlier_database(db, a, LEGACY_DDL, ("login_etl_ledger (message_id)",
                                          lambda m: m["messageId"]))
    c = make_messages(10, seed=192, invalid_rate=0)
    db.psql(V2_DDL)
    db.psql("COPY login_etl_ledger_v2 (sent_at, message_id) FROM STDIN",
            input="".join(_v2_line(m) + "\n" for m in b))
    with Etl(reset_db=False) as etl:
        # The first layout's messages, the second's and new ones, twice.
        for _ in range(2):
            assert etl.answer(event_bytes(make_event(a + b + c, receive_count=2))) == set()
        m = etl.boot.metrics()
        assert (m[0]["RecordsWritten"], m[0]["RecordsDuplicate"]) == (10, 60), m[0]
        assert (m[1]["RecordsWritten"], m[1]["RecordsDuplicate"]) == (0, 70), m[1]
        assert sorted(ledger.ids(db)) == sorted(ledger.keys(c))
        assert db.scalar(f"SELECT count(*) FROM {LEDGER} WHERE slot = 18") == "2"

def _refusal(res):
    assert res.kind == "error", res
    doc = res.json()
    assert doc["errorType"] == "DatabaseUnavailable", doc
    return doc["errorMessage"]


def test_a_ledger_without_its_unique_key_is_refused_before_anything_is_written():
    db = pg.server()
    db.reset()
    db.psql(f"CREATE TABLE {LEDGER} (slot smallint NOT NULL, sent_at timestamptz NOT NULL, "
            "message_id uuid NOT NULL, committed_at timestamptz NOT NULL DEFAULT now()) "
            "PARTITION BY LIST (slot); "
            "DO $$ BEGIN FOR i IN 0..18 LOOP EXECUTE format('CREATE TABLE %I PARTITION OF "
            f"{LEDGER} FOR VALUES IN (%s)', '{LEDGER}_s' || lpad(i::text, 2, '0'), i); "
            "END LOOP; END $$")
    messages = make_messages(20, seed=91, invalid_rate=0)
    key_missing = f"{LEDGER}: no unique index or primary key on (slot, sent_at, message_id)"
    with Etl(reset_db=False) as etl:
        for _ in range(2):
            msg = _refusal(etl.invoke(event_bytes(make_event(messages))))
            assert key_missing in msg, msg
        assert etl.count() == 0
        assert db.scalar(f"SELECT count(*) FROM {LEDGER}") == "0"
    # A unique key on other columns is no better.
    db.psql(f"CREATE UNIQUE INDEX ON {LEDGER} (slot, message_id, committed_at)")
    with Etl(reset_db=False) as etl:
        msg = _refusal(etl.invoke(event_bytes(make_event(messages))))
        assert key_missing in msg, msg
    # With the key, the same batch twice writes 20 rows.
    db.psql(f"ALTER TABLE {LEDGER} ADD PRIMARY KEY (message_id, sent_at, slot)")
    with Etl(reset_db=False) as etl:
        assert etl.answer(event_bytes(make_event(messages))) == set()
        assert etl.answer(event_bytes(make_event(messages))) == set()
        assert etl.count() == 20


def test_a_ledger_without_its_slot_partitions_is_refused_naming_them():
    db = pg.server()
    db.reset()
    ddl = (f"CREATE TABLE {LEDGER} (slot smallint NOT NULL, sent_at timestamptz NOT NULL, "
           "message_id uuid NOT NULL, committed_at timestamptz NOT NULL DEFAULT now(), "
           "PRIMARY KEY (slot, sent_at, message_id))")
    db.psql(ddl)  # not partitioned
    messages = make_messages(5, seed=96, invalid_rate=0)
    with Etl(reset_db=False) as etl:
        msg = _refusal(etl.invoke(event_bytes(make_event(messages))))
        assert f"{LEDGER}: not partitioned BY LIST (slot)" in msg, msg
    db.psql(f"DROP TABLE {LEDGER}; {ddl} PARTITION BY LIST (slot); "
            "DO $$ BEGIN FOR i IN 0..18 LOOP IF i NOT IN (4, 17) THEN EXECUTE format("
            f"'CREATE TABLE %I PARTITION OF {LEDGER} FOR VALUES IN (%s)', "
            f"'{LEDGER}_s' || lpad(i::text, 2, '0'), i); END IF; END LOOP; END $$")
    with Etl(reset_db=False) as etl:
        msg = _refusal(etl.invoke(event_bytes(make_event(messages))))
        assert f"{LEDGER}: partitions missing for slot 4, 17 ({LEDGER}_sNN FOR VALUES IN (N)" \
            in msg, msg
        assert etl.count() == 0


def test_user_logins_without_the_columns_it_must_have_is_refused():
    db = pg.server()
    db.reset()
    db.psql("CREATE TABLE user_logins (user_id varchar(128), device_type varchar(32), "
            "masked_ip text, masked_device_id varchar(256), app_version bigint, create_date date)")
    with Etl(reset_db=False) as etl:
        msg = _refusal(etl.invoke(event_bytes(make_event(make_messages(5, seed=92)))))
        assert "user_logins: column locale is missing" in msg, msg
        assert "user_logins: column app_version is bigint, not integer" in msg, msg
        assert "masked_ip" not in msg, msg  # text takes text
        assert etl.count() == 0


def _keepalive_timers(port):
    """The keepalive timers of the established TCP connections to the server, as ss
    shows them (e.g. 'timer:(keepalive,14sec,0)')."""
    out = subprocess.run(["ss", "-tno", "state", "established", f"( dport = :{port} )"],
                         capture_output=True, text=True).stdout
    return re.findall(r"timer:\((\w+),([\d.]+)(m?s|min|sec)", out)


def test_nothing_changes_session_state_and_timeouts_go_with_each_transaction():
    db = pg.server()
    db.reset()
    db.psql(f"ALTER ROLE {pg.USER} SET log_statement = 'all'", user=pg.SUPERUSER,
            password=pg.SUPERPASS)
    try:
        with open(db.log, "rb") as f:
            start = len(f.read())
        messages = make_messages(300, seed=93, invalid_rate=0)
        with Etl(reset_db=False) as etl:
            assert etl.answer(event_bytes(make_event(messages[:200]))) == set()
            # A replay takes the duplicate lookup and a second transaction.
            assert etl.answer(event_bytes(make_event(messages[100:]))) == set()
            assert etl.count() == 300
            # TCP keepalives are on the function's socket (libpq parameters, no SET).
            timers = _keepalive_timers(db.port)
            assert any(kind == "keepalive" for kind, _, _ in timers), timers
        time.sleep(0.3)
        with open(db.log, "rb") as f:
            log = f.read()[start:].decode("utf-8", "replace")
    finally:
        db.psql(f"ALTER ROLE {pg.USER} RESET log_statement", user=pg.SUPERUSER,
                password=pg.SUPERPASS)
    statements = re.findall(r"LOG:  (?:statement|execute [^:]*): (.*)", log)
    assert any("COPY login_etl_ledger_v3" in s for s in statements), log[-2000:]
    begins = [s for s in statements if s.startswith("BEGIN")]
    assert len(begins) >= 3, begins
    for s in begins:
        # A batch's transaction, or a retention step's (bounded by its own timeouts).
        if re.match(r"BEGIN; SET LOCAL lock_timeout = 200; SET LOCAL statement_timeout = 10000; "
                    r"SELECT 'slot', .*; COMMIT$", s, re.S):
            continue
        m = re.match(r"BEGIN; SET LOCAL statement_timeout = (\d+); "
                     r"SET LOCAL idle_in_transaction_session_timeout = (\d+); COPY ", s)
        assert m, s
        assert 0 < int(m.group(1)) <= 15 * 60 * 1000 and 0 < int(m.group(2)) <= 60000, s
    for s in statements:
        # SET CONSTRAINTS lasts until the transaction ends, like SET LOCAL.
        session_set = re.search(r"(^|;)\s*(SET|RESET)\s+(?!LOCAL\b)(?!CONSTRAINTS\b)", s, re.I)
        assert not session_set, f"a session SET was sent: {s}"
        for bad in ("PREPARE", "TEMP", "pg_advisory", "LISTEN", "WITH HOLD"):
            assert bad.lower() not in s.lower(), f"session state ({bad}): {s}"
    # Extended-protocol statements are unnamed: no named prepared statement.
    assert not re.search(r"LOG:  execute (?!<unnamed>)", log), log


def test_a_deadline_weeks_away_does_not_overflow_the_server_timeouts():
    # The server takes timeouts in int milliseconds (at most ~24.8 days); Lambda's
    # longest timeout is 15 minutes, so the function clamps to that.
    now_ms = int(time.time() * 1000)
    with Etl() as etl:
        for i, days in enumerate((30, 400)):
            msgs = make_messages(30, seed=95 + i, invalid_rate=0)
            res = etl.invoke(event_bytes(make_event(msgs)), deadline_ms=now_ms + days * 86400000)
            assert res.kind == "response", res.body[:300]
            assert res.json() == {"batchItemFailures": []}
        assert etl.count() == 60


def test_dropping_the_earlier_ledger_under_a_warm_process_fails_no_batch():
    # The function logs that the earlier ledger "may be dropped" once its entries expired; a
    # process that still consults it must go on when an operator drops it.
    db = pg.server()
    db.reset()
    db.psql(USER_LOGINS_DDL + "; " + LEGACY_DDL)
    db.psql("INSERT INTO login_etl_ledger (message_id) VALUES ('old-1')")
    with Etl(reset_db=False) as etl:
        assert etl.answer(event_bytes(make_event(make_messages(3, seed=1, invalid_rate=0)))) \
            == set()
        db.psql("DROP TABLE login_etl_ledger", user=pg.SUPERUSER, password=pg.SUPERPASS)
        for k in range(2):
            msgs = make_messages(3, seed=10 + k, invalid_rate=0)
            assert etl.answer(event_bytes(make_event(msgs))) == set()
        assert etl.count() == 9
        assert _logged(etl, "the earlier ledger was dropped: no longer consulted")


def _earlier_version_commits(db, messages):
    """What the v2 version leaves of a batch it wrote: the rows in user_logins, the ids in
    login_etl_ledger_v2."""
    cols = ("user_id", "device_type", "masked_ip", "masked_device_id", "locale", "app_version",
            "create_date")
    rows = []
    for m in messages:
        r = expect.row(m["body"], m["sentTimestamp"])
        rows.append("\t".join("\\N" if r[c] is None else str(r[c]) for c in cols))
    db.psql(f"COPY user_logins ({', '.join(cols)}) FROM STDIN", input="\n".join(rows) + "\n")
    db.psql("COPY login_etl_ledger_v2 (sent_at, message_id) FROM STDIN",
            input="".join(_v2_line(m) + "\n" for m in messages))


def test_a_rollback_at_any_age_of_the_upgrade_writes_nothing_twice():
    """The v2 ledger was upgraded from 1 day, 16 days or 400 days ago; then the v2 version
    runs again (a rollback) and commits messages; then the current version comes back and
    those messages are redelivered: they are duplicates, not second rows."""
    now_ms = int(time.time() * 1000)
    for age_days in (16, 1, 400):
        db = pg.server()
        db.reset()
        seed = 300 + age_days
        old = make_messages(20, seed=seed, invalid_rate=0, start_ms=now_ms - 60 * DAY_MS)
        _earlier_database(db, old, V2_DDL + "; INSERT INTO login_etl_ledger_v2 (sent_at, "
                          "message_id) VALUES ('-infinity', '')",
                          ("login_etl_ledger_v2 (sent_at, message_id)", _v2_line))
        book = exactly_once.Sent()
        book.add(old)
        first = make_messages(10, seed=seed + 1, invalid_rate=0, start_ms=now_ms - 3 * 3600_000)
        with Etl(reset_db=False) as etl:  # the upgrade
            assert etl.answer(event_bytes(make_event(first))) == set()
        book.add(first)
        db.psql(f"UPDATE {LEDGER} SET committed_at = now() - interval '{age_days} days' "
                f"WHERE message_id = '{ledger.MARKER_V2}'")
        # The rollback: the earlier version commits messages sent an hour ago.
        rolled = make_messages(15, seed=seed + 2, invalid_rate=0, start_ms=now_ms - 3600_000)
        _earlier_version_commits(db, rolled)
        book.add(rolled)
        with Etl(reset_db=False) as etl:  # the current version again
            event = event_bytes(make_event(rolled + first, receive_count=2))
            assert etl.answer(event) == set(), age_days
            got = sorted(etl.rows(), key=row_key)
            assert got == book.expected_rows(), \
                (age_days, len(got), len(book.expected_rows()))
            m = etl.boot.metrics()[-1]
            assert (m["RecordsWritten"], m["RecordsDuplicate"]) == (0, 25), (age_days, m)


def test_a_warm_process_sees_a_rollback_write_the_earlier_ledger_again():
    """A process finds the v2 ledger no longer matters (its marker and its entries older
    than 15 days).  Then the earlier version runs again (a rollback) and commits messages
    there, and this release comes back while that process is still warm: once it connects
    again (its connection ended meanwhile, as a proxy's idle timeout ends it) it looks at
    the earlier ledger again, and the messages redelivered to it are duplicates."""
    now_ms = int(time.time() * 1000)
    db = pg.server()
    db.reset()
    old = make_messages(20, seed=420, invalid_rate=0, start_ms=now_ms - 60 * DAY_MS)
    _earlier_database(db, old, V2_DDL, ("login_etl_ledger_v2 (sent_at, message_id)", _v2_line))
    book = exactly_once.Sent()
    book.add(old)
    first = make_messages(10, seed=421, invalid_rate=0, start_ms=now_ms - 3 * 3600_000)
    with Etl(reset_db=False) as etl:  # the upgrade
        assert etl.answer(event_bytes(make_event(first))) == set()
    book.add(first)
    db.psql(f"UPDATE {LEDGER} SET committed_at = now() - interval '16 days' WHERE message_id "
            f"= '{ledger.MARKER_V2}'; UPDATE login_etl_ledger_v2 SET committed_at = "
            "committed_at - interval '16 days'")
    with Etl(reset_db=False) as etl:
        more = make_messages(5, seed=422, invalid_rate=0, start_ms=now_ms - 2 * 3600_000)
        assert etl.answer(event_bytes(make_event(more))) == set()
        book.add(more)
        assert _logged(etl, "the earlier ledger no longer matters and may be dropped")
        # The rollback: the earlier version commits messages sent an hour ago.
        rolled = make_messages(15, seed=423, invalid_rate=0, start_ms=now_ms - 3600_000)
        _earlier_version_commits(db, rolled)
        book.add(rolled)
        db.superuser("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                     "WHERE application_name = 'login-etl'")
        assert etl.answer(event_bytes(make_event(rolled, receive_count=2))) == set()
        got = sorted(etl.rows(), key=row_key)
        assert got == book.expected_rows(), (len(got), len(book.expected_rows()))
        m = etl.boot.metrics()[-1]
        assert (m["RecordsWritten"], m["RecordsDuplicate"]) == (0, 15), m
        assert _logged(etl, "the earlier ledger is consulted until its entries expire")
