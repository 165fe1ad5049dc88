"""The ledger and the connection, end to end with the real bootstrap and the test
Postgres: the (SentTimestamp, messageId) key catches redeliveries; retention deletes
what expired; an earlier ledger layout keeps exactly-once through an upgrade; a schema
that lacks what exactly-once needs is refused; nothing the function sends changes
session state; a deadline far away does not overflow the server's timeouts."""
import json
import os
import re
import subprocess
import time

from events.generate import event_bytes, make_event, make_messages
from rig import exactly_once, expect, pg
from rig.harness import Etl, row_key, wait_for

LEDGER = "login_etl_ledger_v2"
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
        got = {r["message_id"]: r["ms"] for r in etl.db.query(
            f"SELECT message_id, (extract(epoch FROM sent_at) * 1000)::int8 AS ms FROM {LEDGER}")}
        assert got == {m["messageId"]: m["sentTimestamp"] for m in messages}
        m = etl.boot.metrics()[-1]
        assert (m["RecordsWritten"], m["RecordsDuplicate"]) == (100, 100), m


def test_messages_without_sent_timestamp_are_written_once():
    messages = make_messages(40, seed=82, invalid_rate=0)
    with Etl() as etl:
        event = event_bytes(_without_sent_timestamp(make_event(messages)))
        assert etl.answer(event) == set()
        assert etl.answer(event) == set()
        assert etl.count() == 40
        assert etl.db.scalar(f"SELECT count(*) FROM {LEDGER} WHERE sent_at = '-infinity'") == "40"
        # Without SentTimestamp, create_date is the date of processing.
        today = etl.db.scalar("SELECT (now() AT TIME ZONE 'UTC')::date")
        assert {r["create_date"] for r in etl.rows()} <= {today, str(
            etl.db.scalar("SELECT (now() AT TIME ZONE 'UTC')::date - 1"))}


def test_retention_deletes_expired_entries_a_bounded_number_per_batch():
    db = pg.server()
    now_ms = int(time.time() * 1000)
    with Etl() as etl:  # creates the tables
        first = make_messages(5, seed=83, invalid_rate=0, start_ms=now_ms)
        assert etl.answer(event_bytes(make_event(first))) == set()
    # History: 2,500 entries sent 17 days ago and committed 16 days ago (expired);
    # 300 sent 15 days ago (still needed); 1,500 sent 30 days ago but committed only
    # yesterday (late arrivals: needed for 14 more days), below them in key order.
    db.psql(f"INSERT INTO {LEDGER} (sent_at, message_id, committed_at) "
            "SELECT now() - interval '17 days' + g * interval '1 ms', 'old-' || g, "
            "now() - interval '16 days' FROM generate_series(1, 2500) g; "
            f"INSERT INTO {LEDGER} (sent_at, message_id, committed_at) "
            "SELECT now() - interval '15 days', 'young-' || g, now() - interval '14 days' "
            "FROM generate_series(1, 300) g; "
            f"INSERT INTO {LEDGER} (sent_at, message_id, committed_at) "
            "SELECT now() - interval '30 days' + g * interval '1 s', 'late-' || g, "
            "now() - interval '1 day' FROM generate_series(1, 1500) g")
    def count(kind):
        return int(db.scalar(f"SELECT count(*) FROM {LEDGER} WHERE message_id LIKE '{kind}-%'"))

    with Etl(reset_db=False) as etl:
        # Each batch's sweep step goes over max(1,000, twice the rows written) entries in
        # key order: the late arrivals first (kept), then the expired ones (deleted).  The
        # step runs on the server after the batch's COMMIT, while the answer goes out.
        counts = []
        for i, want in enumerate((2500, 2000, 1000, 0, 0)):
            batch = make_messages(10, seed=840 + i, invalid_rate=0, start_ms=now_ms + i * 10**6)
            assert etl.answer(event_bytes(make_event(batch))) == set()
            wait_for(lambda: count("old") == want, timeout=5)
            counts.append(count("old"))
        assert counts == [2500, 2000, 1000, 0, 0], counts
        for kind, n in (("young", 300), ("late", 1500)):
            assert db.scalar(f"SELECT count(*) FROM {LEDGER} WHERE message_id LIKE '{kind}-%'") \
                == str(n), kind
        assert db.scalar(f"SELECT count(*) FROM {LEDGER} WHERE message_id !~ "
                         "'^(old|young|late)-'") == "55"  # the messages of the two processes
    # Fifteen days later the late arrivals have expired too: a sweep from the oldest
    # entry (a new connection's first, or every 256th) deletes them.
    db.psql(f"UPDATE {LEDGER} SET committed_at = now() - interval '16 days' "
            "WHERE message_id LIKE 'late-%'")
    with Etl(reset_db=False) as etl:
        late = []
        for i, want in enumerate((500, 0)):
            batch = make_messages(10, seed=850 + i, invalid_rate=0, start_ms=now_ms + 10**8)
            assert etl.answer(event_bytes(make_event(batch))) == set()
            wait_for(lambda: count("late") == want, timeout=5)
            late.append(count("late"))
        assert late == [500, 0], late


def test_retention_without_delete_privilege_is_skipped_and_writing_goes_on():
    db = pg.server()
    db.reset()
    with Etl() as etl:  # creates the tables as their owner
        assert etl.answer(event_bytes(make_event(make_messages(1, seed=85)))) == set()
    db.psql("DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'etl_nodelete') "
            "THEN CREATE ROLE etl_nodelete LOGIN PASSWORD 'nodelete-password'; END IF; END $$",
            user=pg.SUPERUSER, password=pg.SUPERPASS)
    db.psql(f"GRANT INSERT ON user_logins TO etl_nodelete; "
            f"GRANT SELECT, INSERT ON {LEDGER} TO etl_nodelete")
    env = {"PGUSER": "etl_nodelete", "PGPASSWORD": "nodelete-password"}
    with Etl(reset_db=False, env=env) as etl:
        for seed in (86, 87):
            msgs = make_messages(20, seed=seed, invalid_rate=0)
            assert etl.answer(event_bytes(make_event(msgs))) == set()
            assert etl.answer(event_bytes(make_event(msgs))) == set()
        assert etl.count() == 41
        refused = _logged(etl, "ledger retention refused (no DELETE privilege): not tried again")
        assert len(refused) == 1 and refused[0]["sqlstate"] == "42501", refused


def test_upgrade_from_the_earlier_ledger_layout_keeps_exactly_once():
    db = pg.server()
    db.reset()
    # A database as the earlier version left it: its ledger keyed by message_id
    # alone, holding the ids of the rows it committed.
    old = make_messages(120, seed=88, invalid_rate=0)
    new = make_messages(80, seed=89, invalid_rate=0)
    db.psql(USER_LOGINS_DDL + "; " + LEGACY_DDL)
    cols = ("user_id", "device_type", "masked_ip", "masked_device_id", "locale", "app_version",
            "create_date")
    lines = []
    for m in old:
        r = expect.row(m["body"], m["sentTimestamp"])
        lines.append("\t".join("\\N" if r[c] is None else str(r[c]) for c in cols))
    db.psql(f"COPY user_logins ({', '.join(cols)}) FROM STDIN", input="\n".join(lines) + "\n")
    db.psql("COPY login_etl_ledger (message_id) FROM STDIN",
            input="".join(m["messageId"] + "\n" for m in old))
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
        assert _logged(etl, "the earlier ledger is consulted until its entries expire")
        # The new ledger holds the new messages and the moment of the upgrade.
        assert db.scalar(f"SELECT count(*) FROM {LEDGER} WHERE message_id <> ''") == "80"
        assert db.scalar(f"SELECT count(*) FROM {LEDGER} WHERE message_id = '' "
                         "AND committed_at > now() - interval '1 hour'") == "1"
    # Fifteen days after the upgrade the earlier ledger cannot matter any more.
    db.psql(f"UPDATE {LEDGER} SET committed_at = now() - interval '15 days 1 minute' "
            "WHERE message_id = ''")
    with Etl(reset_db=False) as etl:
        assert etl.answer(event_bytes(make_event(make_messages(3, seed=90)))) == set()
        assert _logged(etl, "the earlier ledger no longer matters and may be dropped")
        # The marker is kept (retention never deletes it), so this stays decided.
        assert db.scalar(f"SELECT count(*) FROM {LEDGER} WHERE message_id = ''") == "1"


def _refusal(res):
    assert res.kind == "error", res
    doc = res.json()
    assert doc["errorType"] == "DatabaseUnavailable", doc
    return doc["errorMessage"]


def test_a_ledger_without_its_unique_key_is_refused_before_anything_is_written():
    db = pg.server()
    db.reset()
    db.psql(f"CREATE TABLE {LEDGER} (sent_at timestamptz, message_id text, "
            "committed_at timestamptz NOT NULL DEFAULT now()); "
            f"CREATE INDEX ON {LEDGER} (committed_at)")
    messages = make_messages(20, seed=91, invalid_rate=0)
    with Etl(reset_db=False) as etl:
        for _ in range(2):
            msg = _refusal(etl.invoke(event_bytes(make_event(messages))))
            assert f"{LEDGER}: no unique index or primary key on (sent_at, message_id)" in msg, msg
        assert etl.count() == 0
        assert db.scalar(f"SELECT count(*) FROM {LEDGER}") == "0"
    # A unique key on other columns is no better.
    db.psql(f"CREATE UNIQUE INDEX ON {LEDGER} (message_id, committed_at)")
    with Etl(reset_db=False) as etl:
        msg = _refusal(etl.invoke(event_bytes(make_event(messages))))
        assert "no unique index or primary key on (sent_at, message_id)" in msg, msg
    # With the key, the same batch twice writes 20 rows.
    db.psql(f"ALTER TABLE {LEDGER} ADD PRIMARY KEY (message_id, sent_at)")
    with Etl(reset_db=False) as etl:
        assert etl.answer(event_bytes(make_event(messages))) == set()
        assert etl.answer(event_bytes(make_event(messages))) == set()
        assert etl.count() == 20


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
    assert any("COPY login_etl_ledger_v2" in s for s in statements), log[-2000:]
    begins = [s for s in statements if s.startswith("BEGIN")]
    assert len(begins) >= 3, begins
    for s in begins:
        # A batch's transaction, or a retention step's (bounded by its own timeouts).
        if re.match(r"BEGIN; SET LOCAL lock_timeout = 1000; SET LOCAL statement_timeout = 10000; "
                    r"WITH .*DELETE FROM login_etl_ledger_v2 .*; COMMIT$", s, re.S):
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


def test_a_lock_on_an_expired_entry_holds_up_no_batch():
    # An operator's open transaction locks an expired ledger entry (deleting old entries by
    # hand, say). The retention step that meets it gives up after its own lock_timeout in a
    # transaction of its own; the batches that come meanwhile commit and answer at once.
    db = pg.server()
    db.reset()
    now_ms = int(time.time() * 1000)
    with Etl(reset_db=False) as etl:
        assert etl.answer(event_bytes(make_event(make_messages(
            2, seed=1, invalid_rate=0, start_ms=now_ms)))) == set()
    db.psql(f"INSERT INTO {LEDGER} (sent_at, message_id, committed_at) VALUES "
            "(now() - interval '20 days', 'old-1', now() - interval '20 days')")
    locker = subprocess.Popen(
        ["psql", "-X", "-q", "-c", f"BEGIN; SELECT 1 FROM {LEDGER} WHERE message_id = 'old-1' "
         "FOR UPDATE; SELECT pg_sleep(60); COMMIT;"],
        env=dict(os.environ, **db.env(), PGAPPNAME="locker"), stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL)
    try:
        assert wait_for(lambda: db.scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'locker' "
            "AND query LIKE '%pg_sleep%'", user=pg.SUPERUSER, password=pg.SUPERPASS) == "1",
            timeout=10)
        with Etl(reset_db=False) as etl:
            for i in range(4):
                msgs = make_messages(3, seed=100 + i, invalid_rate=0, start_ms=now_ms)
                t0 = time.monotonic()
                res = etl.invoke(event_bytes(make_event(msgs)),
                                 deadline_ms=int(time.time() * 1000) + 3000)
                took = time.monotonic() - t0
                assert res.kind == "response" and res.json()["batchItemFailures"] == [], res
                assert took < 2.0, f"batch {i} took {took:.2f}s behind the locked entry"
            assert etl.count() == 2 + 12
    finally:
        locker.kill()
        db.psql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE application_name = 'locker'", user=pg.SUPERUSER, password=pg.SUPERPASS)


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
