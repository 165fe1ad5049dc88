"""user_logins partitioned by create_date, as docs/operations.md ("Partitioning
user_logins") tells an operator to set it up: the table is created by the operator before the function
first runs (the function creates its tables only when they are missing, and
never alters one), with the same columns, as a table PARTITIONED BY RANGE
(create_date) with monthly partitions and a DEFAULT one.  The real bootstrap
writes into it with its usual COPY; rows must land in the partition of their
day, exactly once, also when batches are delivered again."""
import datetime

from events.generate import event_bytes, make_event, make_messages
from rig import exactly_once
from rig.harness import Etl

# The same columns as the table the function creates, in the same order.
PARTITIONED_DDL = """
CREATE TABLE user_logins(
    user_id             varchar(128),
    device_type         varchar(32),
    masked_ip           varchar(256),
    masked_device_id    varchar(256),
    locale              varchar(32),
    app_version         integer,
    create_date         date
) PARTITION BY RANGE (create_date);
CREATE TABLE user_logins_2024_06 PARTITION OF user_logins
    FOR VALUES FROM ('2024-06-01') TO ('2024-07-01');
CREATE TABLE user_logins_2024_07 PARTITION OF user_logins
    FOR VALUES FROM ('2024-07-01') TO ('2024-08-01');
CREATE TABLE user_logins_default PARTITION OF user_logins DEFAULT;
"""


def _ms(y, m, d, h=0):
    return int(datetime.datetime(y, m, d, h, tzinfo=datetime.timezone.utc).timestamp() * 1000)


def test_rows_land_in_create_date_partitions_exactly_once():
    # Three days: the last minutes of June 30 (UTC), July 1, and August 2,
    # which no monthly partition covers yet (the DEFAULT partition catches it).
    groups = [make_messages(150, seed=s, invalid_rate=0.04, start_ms=start)
              for s, start in ((31, _ms(2024, 6, 30, 23) + 55 * 60_000),
                               (32, _ms(2024, 7, 1, 9)), (33, _ms(2024, 8, 2, 12)))]
    messages = [m for g in groups for m in g]
    days = {datetime.datetime.fromtimestamp(m["sentTimestamp"] / 1000,
                                            datetime.timezone.utc).date().isoformat()[:7]
            for m in messages}
    assert days == {"2024-06", "2024-07", "2024-08"}, days
    book = exactly_once.Sent()
    book.add(messages)
    with Etl() as etl:
        etl.db.psql(PARTITIONED_DDL)
        # Batches that straddle the month boundary, then all of them again (a
        # redelivery) and a mixed overlap.
        for batch in (messages[:200], messages[200:], messages[100:300], messages):
            listed = etl.answer(event_bytes(make_event(batch)))
            assert listed == exactly_once.listed_for(batch)
        kind = etl.db.scalar("SELECT relkind FROM pg_class WHERE relname = 'user_logins'")
        assert kind == "p", "the function replaced the operator's partitioned table"
        exactly_once.assert_database(etl.db, book, "partitioned user_logins")
        placed = etl.db.query(
            "SELECT tableoid::regclass::text AS part, to_char(create_date, 'YYYY-MM') AS month, "
            "count(*) AS n FROM user_logins GROUP BY 1, 2 ORDER BY 1, 2")
        want = {"2024-06": "user_logins_2024_06", "2024-07": "user_logins_2024_07",
                "2024-08": "user_logins_default"}
        for p in placed:
            assert want[p["month"]] == p["part"], p
        assert {p["month"] for p in placed} == set(want), placed
        assert sum(p["n"] for p in placed) == len(book.valid())
        # Nothing went to the parent itself (a partitioned table has no storage).
        only = int(etl.db.scalar("SELECT count(*) FROM ONLY user_logins"))
        assert only == 0
        # The operator's monthly step: the next month's partition, created ahead
        # while the function keeps writing (the DEFAULT partition must not hold
        # rows of that range, so August's rows move out of it in the same step).
        etl.db.psql("""BEGIN;
            CREATE TABLE user_logins_2024_08 (LIKE user_logins);
            ALTER TABLE user_logins DETACH PARTITION user_logins_default;
            INSERT INTO user_logins_2024_08 SELECT * FROM user_logins_default
                WHERE create_date >= '2024-08-01' AND create_date < '2024-09-01';
            DELETE FROM user_logins_default
                WHERE create_date >= '2024-08-01' AND create_date < '2024-09-01';
            ALTER TABLE user_logins ATTACH PARTITION user_logins_2024_08
                FOR VALUES FROM ('2024-08-01') TO ('2024-09-01');
            ALTER TABLE user_logins ATTACH PARTITION user_logins_default DEFAULT;
            COMMIT;""")
        later = make_messages(40, seed=34, invalid_rate=0, start_ms=_ms(2024, 8, 3))
        book.add(later)
        assert etl.answer(event_bytes(make_event(later))) == set()
        exactly_once.assert_database(etl.db, book, "after the August partition was added")
        aug = int(etl.db.scalar("SELECT count(*) FROM user_logins_2024_08"))
        assert aug == len([m for m in groups[2] if exactly_once.is_valid(m)]) + 40
        assert int(etl.db.scalar("SELECT count(*) FROM user_logins_default")) == 0
        # The usual monthly step, ahead of time: the next month as a plain table,
        # then attached (which does not lock out the functions' COPY, unlike
        # CREATE TABLE ... PARTITION OF).
        etl.db.psql("CREATE TABLE user_logins_2024_09 (LIKE user_logins INCLUDING ALL); "
                    "ALTER TABLE user_logins ATTACH PARTITION user_logins_2024_09 "
                    "FOR VALUES FROM ('2024-09-01') TO ('2024-10-01')")
        september = make_messages(30, seed=35, invalid_rate=0, start_ms=_ms(2024, 9, 1, 0))
        book.add(september)
        assert etl.answer(event_bytes(make_event(september))) == set()
        exactly_once.assert_database(etl.db, book, "after September was attached")
        assert int(etl.db.scalar("SELECT count(*) FROM user_logins_2024_09")) == 30
        assert int(etl.db.scalar("SELECT count(*) FROM user_logins_default")) == 0
        # Dropping a month is one statement and leaves the other months alone.
        etl.db.psql("ALTER TABLE user_logins DETACH PARTITION user_logins_2024_06; "
                    "DROP TABLE user_logins_2024_06")
        left = int(etl.db.scalar("SELECT count(*) FROM user_logins"))
        assert left == len(book.valid()) - len(
            [m for m in groups[0] if exactly_once.is_valid(m)])


def test_missing_partition_without_default_fails_the_batch_and_writes_nothing():
    """Why docs/operations.md asks for a DEFAULT partition: without one, a row whose
    month has no partition fails the COPY, so the whole batch fails (the
    invocation reports DatabaseUnavailable and SQS delivers it again) and
    nothing of it is written, the rows of months that do have a partition
    included.  Once the partition exists, the redelivery goes through."""
    june = make_messages(20, seed=41, invalid_rate=0, start_ms=_ms(2024, 6, 20))
    july = make_messages(20, seed=42, invalid_rate=0, start_ms=_ms(2024, 7, 20))
    book = exactly_once.Sent()
    book.add(june + july)
    ddl = PARTITIONED_DDL.split("CREATE TABLE user_logins_2024_07")[0]
    with Etl() as etl:
        etl.db.psql(ddl)
        res = etl.invoke(event_bytes(make_event(june + july)))
        assert res.kind == "error" and res.json()["errorType"] == "DatabaseUnavailable", res
        # Named by SQLSTATE and table only (the server's text can quote a row's values):
        # a check violation that names no constraint.
        msg = res.json()["errorMessage"]
        assert "23514" in msg and "user_logins" in msg and "constraint" not in msg, msg
        assert etl.count() == 0
        etl.db.psql("CREATE TABLE user_logins_2024_07 PARTITION OF user_logins "
                    "FOR VALUES FROM ('2024-07-01') TO ('2024-08-01')")
        assert etl.answer(event_bytes(make_event(june + july, receive_count=2))) == set()
        exactly_once.assert_database(etl.db, book, "after the missing partition was created")
