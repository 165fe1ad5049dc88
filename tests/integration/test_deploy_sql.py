"""docs/deploy.md's database set-up, as written: its SQL blocks, run in order on a fresh
PostgreSQL by a master user that is no superuser (tests/rig/deployed.py), make the roles
and tables; then the real bootstrap, logged in as the function's role, works with exactly
those grants (writes, meets a redelivery, clears an expired ledger day with TRUNCATE) and
can do nothing else, and an analyst reads the rows and writes nothing."""
from events.generate import event_bytes, make_event, make_messages
from rig import deployed, exactly_once, ledger
from rig.harness import Etl, wait_for

# What each role may do to each table, as has_table_privilege says.
PRIVILEGES = ("SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE")
TABLES = ("user_logins", ledger.LEDGER, f"{ledger.LEDGER}_s05", "login_etl_rejected")


def _privileges(db, role):
    return {(t, p): db.scalar(f"SELECT has_table_privilege('{role}', '{t}', '{p}')") == "t"
            for t in TABLES for p in PRIVILEGES}


def _expected(role):
    if role == "login_etl":
        allowed = {("user_logins", "INSERT")} | {(ledger.LEDGER, p) for p in
                                                  ("SELECT", "INSERT", "DELETE")} | \
            {(f"{ledger.LEDGER}_s05", p) for p in ("SELECT", "TRUNCATE")} | \
            {("login_etl_rejected", "INSERT")}
    else:
        allowed = {("user_logins", "SELECT")}
    return {(t, p): (t, p) in allowed for t in TABLES for p in PRIVILEGES}


def _fill_expired_slot(db, n):
    """n ledger entries sent and committed 16 days ago, in the slot retention clears today;
    returns the slot."""
    today = int(db.scalar("SELECT floor(extract(epoch FROM now()) * 1000 / 86400000)::int8"))
    slot = (today + 2) % ledger.SLOTS
    db.psql(f"INSERT INTO {ledger.LEDGER} (slot, sent_at, message_id, committed_at) "
            f"SELECT {slot}, to_timestamp({(today - 16) * 86400}) + g * interval '1 s', "
            f"md5('expired' || g)::uuid, to_timestamp({(today - 16) * 86400}) + g * interval '1 s'"
            f" FROM generate_series(1, {n}) g")
    return slot


def test_deploy_sql_runs_as_written_and_the_function_works_with_exactly_its_grants():
    db = deployed.Database(auth="secret")
    try:
        assert _privileges(db, "login_etl") == _expected("login_etl")
        assert _privileges(db, "login_etl_read") == _expected("login_etl_read")
        # Owned by the master user: the function can neither alter nor create tables.
        assert db.scalar("SELECT string_agg(DISTINCT tableowner, ',') FROM pg_tables "
                         "WHERE schemaname = 'public'") == deployed.MASTER
        for sql in ("CREATE TABLE scratch (a int)", "SELECT count(*) FROM user_logins",
                    "DROP TABLE user_logins", f"ALTER TABLE {ledger.LEDGER} ADD COLUMN x int",
                    "TRUNCATE user_logins"):
            err = db.refused(sql, "login_etl")
            assert "permission denied" in err or "must be owner" in err, (sql, err)
        messages = make_messages(120, seed=501, invalid_rate=0.1)
        book = exactly_once.Sent()
        book.add(messages)
        with Etl(reset_db=False, env=db.env("login_etl")) as etl:
            event = event_bytes(make_event(messages))
            assert etl.answer(event) == exactly_once.listed_for(messages)
            # A redelivery of the whole batch: the ledger (SELECT on it) finds every one.
            assert etl.answer(event) == exactly_once.listed_for(messages)
            m = etl.boot.metrics()[-1]
            assert m["RecordsWritten"] == 0 and m["RecordsDuplicate"] == len(book.valid()), m
        exactly_once.assert_database(db, book, "deploy.md's grants")
        # Retention with those grants: an expired day goes with one TRUNCATE.
        slot = _fill_expired_slot(db, 300)
        with Etl(reset_db=False, env=db.env("login_etl")) as etl:
            for i in range(6):
                etl.answer(event_bytes(make_event(make_messages(3, seed=510 + i,
                                                                invalid_rate=0))))
                if db.scalar(f"SELECT count(*) FROM {ledger.LEDGER} WHERE slot = {slot}") == "0":
                    break
            etl.answer(event_bytes(make_event(make_messages(3, seed=520, invalid_rate=0))))
            assert db.scalar(f"SELECT count(*) FROM {ledger.LEDGER} WHERE slot = {slot}") == "0"
            assert wait_for(lambda: any(isinstance(l, dict) and l.get("message") ==
                                        "ledger slot cleared" for l in etl.boot.logs()), 5)
            assert not [l for l in etl.boot.logs() if isinstance(l, dict) and l.get("level")
                        in ("WARN", "ERROR") and "retention" in l.get("message", "")]
        # The analyst: the rows, read-only; not the ledger.
        rows = db.psql("SELECT count(*) FROM user_logins", role="alice").strip()
        assert rows == db.scalar("SELECT count(*) FROM user_logins") and int(rows) > 100
        for sql in ("INSERT INTO user_logins (user_id) VALUES ('x')", "DELETE FROM user_logins",
                    f"SELECT count(*) FROM {ledger.LEDGER}", "CREATE TABLE scratch (a int)"):
            assert "permission denied" in db.refused(sql, "alice"), sql
    finally:
        db.destroy()


def test_deploy_sql_with_iam_authentication_grants_the_same():
    db = deployed.Database(auth="iam")
    try:
        assert db.scalar("SELECT pg_has_role('login_etl', 'rds_iam', 'MEMBER')") == "t"
        assert _privileges(db, "login_etl") == _expected("login_etl")
        assert _privileges(db, "login_etl_read") == _expected("login_etl_read")
    finally:
        db.destroy()


def test_with_those_grants_rejected_records_are_quarantined_once():
    db = deployed.Database(auth="secret")
    try:
        messages = make_messages(60, seed=531, invalid_rate=0.3)
        invalid = {m["messageId"] for m in messages if m["reason"]}
        assert invalid
        env = dict(db.env("login_etl"), REJECTED_RECORDS=None)  # the default: quarantine
        with Etl(reset_db=False, env=env) as etl:
            event = event_bytes(make_event(messages))
            assert etl.answer(event) == set()
            assert etl.answer(event) == set()
        got = db.psql("SELECT message_id FROM login_etl_rejected").split()
        assert sorted(got) == sorted(invalid)
        err = db.refused("SELECT count(*) FROM login_etl_rejected", "login_etl")
        assert "permission denied" in err, err
    finally:
        db.destroy()
