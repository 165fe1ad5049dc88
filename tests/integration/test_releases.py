"""Any release after any other, and beside it: the previous release (built from its source,
tests/rig/releases.py) and the current build take turns on one database, alone and both at
once, redelivering each other's messages, while the database ages past every time limit
the code has. Every valid message is one row, and one ledger entry, after every round.
docs/releases.md ("Compatibility") is the rule this checks."""
import datetime
import random
import subprocess
import sys
import tempfile
import threading

from events.generate import event_bytes, make_event, make_messages
from rig import exactly_once, expect, ledger, pg, releases
from rig.harness import Etl

DAY_MS = 86400000
SQS_KEEPS_MS = 14 * DAY_MS - 3600_000  # a message older than this is never redelivered
V2_DDL = ("CREATE TABLE login_etl_ledger_v2 (sent_at timestamptz NOT NULL, "
          "message_id text COLLATE \"C\" NOT NULL, committed_at timestamptz NOT NULL DEFAULT "
          "now(), PRIMARY KEY (sent_at, message_id))")
COLS = ("user_id", "device_type", "masked_ip", "masked_device_id", "locale", "app_version",
        "create_date")
# (who runs the round, days the world moves on after it). The ages cross the ledger's
# 15-day retention and the earlier ledger's 15 days (16, 15, 18: after those a round's
# own entries are past them), and a full turn of the 18 day slots (18).
# The current build quarantines the records it rejects (its default): their ids go into the
# ledger and their bodies into login_etl_rejected, which the previous release knows nothing
# of; it keeps listing them.
CURRENT = {"REJECTED_RECORDS": None}
ROUNDS = [("previous", 1), ("current", 16), ("both", 2), ("previous", 13), ("current", 18),
          ("both", 1), ("previous", 15), ("current", 0)]


def _now_ms():
    return int(datetime.datetime.now(datetime.timezone.utc).timestamp() * 1000)


def _earlier_ledger(db, messages):
    """The database as a build before the day-slot ledger left it: rows, and a v2 ledger
    holding their ids (which both releases consult for 15 days after finding it)."""
    db.psql("CREATE TABLE user_logins (user_id varchar(128), device_type varchar(32), "
            "masked_ip varchar(256), masked_device_id varchar(256), locale varchar(32), "
            "app_version integer, create_date date); " + V2_DDL)
    lines = []
    for m in messages:
        r = expect.row(m["body"], m["sentTimestamp"])
        lines.append("\t".join("\\N" if r[c] is None else str(r[c]) for c in COLS))
    db.psql(f"COPY user_logins ({', '.join(COLS)}) FROM STDIN", input="\n".join(lines) + "\n")
    db.psql("COPY login_etl_ledger_v2 (sent_at, message_id) FROM STDIN", input="".join(
        datetime.datetime.fromtimestamp(m["sentTimestamp"] / 1000, datetime.timezone.utc)
        .isoformat() + "\t" + m["messageId"] + "\n" for m in messages))


def _age(db, book, days):
    """The world moves on by `days`: every time the database holds goes back that far
    (ledger entries keep their slot rule: the day of sent_at modulo 18), and so does the
    SentTimestamp of every message sent, which a redelivery carries."""
    if days == 0:
        return
    shift = f"interval '{days} days'"
    db.psql(f"BEGIN; UPDATE {ledger.LEDGER} SET committed_at = committed_at - {shift}, "
            f"sent_at = sent_at - {shift}, slot = CASE WHEN sent_at = '-infinity' THEN slot "
            f"ELSE (floor(extract(epoch FROM sent_at - {shift}) * 1000 / {DAY_MS})::int8 "
            f"% {ledger.SLOTS})::int2 END; "
            f"UPDATE login_etl_ledger_v2 SET sent_at = sent_at - {shift}, "
            f"committed_at = committed_at - {shift}; "
            f"UPDATE user_logins SET create_date = create_date - {days}; COMMIT")
    for m in book.messages.values():
        m["sentTimestamp"] -= days * DAY_MS


def _deliver(etl, messages, receive_count=1):
    """One event through one process; the previous release's answer lists exactly the
    invalid records, the current build's (which quarantines them) none."""
    listed = etl.answer(event_bytes(make_event(messages, receive_count=receive_count)))
    want = set() if etl.boot.env.get("REJECTED_RECORDS") is None else \
        exactly_once.listed_for(messages)
    assert listed == want, f"{len(listed ^ want)} records answered wrongly"


def _assert_once(db, book, earlier, where):
    """One row per valid message sent; one ledger entry per valid message SQS may still
    deliver (older ones may have expired), except those the earlier ledger holds; no entry
    twice, none for a message never sent."""
    exactly_once.assert_rows(db, book, where)
    ids = ledger.ids(db)
    assert len(ids) == len(set(ids)), f"{where}: an id is in the ledger twice"
    invalid = {m["messageId"] for m in book.messages.values() if m["reason"]}
    quarantined = db.psql("SELECT message_id FROM login_etl_rejected").split() \
        if db.scalar("SELECT to_regclass('login_etl_rejected') IS NOT NULL") == "t" else []
    assert len(quarantined) == len(set(quarantined)), f"{where}: a record quarantined twice"
    assert set(quarantined) <= invalid, f"{where}: a valid message in quarantine"
    valid = ledger.keys(m for m in book.valid() if m["messageId"] not in earlier)
    valid |= ledger.keys(book.messages[i] for i in quarantined)
    now = _now_ms()
    deliverable = ledger.keys(m for m in book.valid() if m["messageId"] not in earlier
                              and now - m["sentTimestamp"] < SQS_KEEPS_MS)
    assert set(ids) <= valid, f"{where}: {len(set(ids) - valid)} ledger ids of no message sent"
    assert deliverable <= set(ids), (
        f"{where}: {len(deliverable - set(ids))} messages SQS may still deliver have no entry")


def _logged(etls, message):
    return [l for e in etls for l in e.boot.logs() if isinstance(l, dict)
            and l.get("message") == message]


def test_the_previous_release_and_this_one_take_turns_and_run_together_as_the_database_ages():
    tag, commit = releases.previous()
    previous = releases.build(tag, commit)
    rng = random.Random(77)
    db = pg.server()
    db.reset()
    book = exactly_once.Sent()
    start = _now_ms()
    ancient = make_messages(40, seed=700, invalid_rate=0, start_ms=start - 2 * 3600_000)
    _earlier_ledger(db, ancient)
    book.add(ancient)
    last_round = list(ancient)
    seen = []  # every process, for what it logged
    try:
        for k, (who, days) in enumerate(ROUNDS):
            now = _now_ms()
            fresh = make_messages(80, seed=710 + k, invalid_rate=0.05,
                                  start_ms=now - 3 * 3600_000)
            # First delivered now, sent 13 days ago (a backlog): in a slot far from today's.
            late = make_messages(20, seed=740 + k, invalid_rate=0, start_ms=now - 13 * DAY_MS)
            live = [m for m in book.messages.values() if now - m["sentTimestamp"] < SQS_KEEPS_MS]
            again = rng.sample(live, min(40, len(live)))
            again += [m for m in last_round if m in live and m not in again][:20]
            book.add(fresh + late)
            first = fresh[:50] + again[:30]
            second = fresh[30:] + late + again[30:]
            rng.shuffle(first)
            rng.shuffle(second)
            if who == "both":
                # A canary: both releases at once, the overlap of the two events handed to
                # each (SQS delivers a message again when a visibility timeout runs out).
                with Etl(reset_db=False, binary=previous) as a, \
                        Etl(reset_db=False, env=CURRENT) as b:
                    seen += [a, b]
                    errors = []
                    threads = [threading.Thread(target=_catch, args=(errors, _deliver, e, batch))
                               for e, batch in ((a, first), (b, second))]
                    for t in threads:
                        t.start()
                    for t in threads:
                        t.join()
                    assert not errors, errors[0]
                    _deliver(a, second, receive_count=2)
                    _deliver(b, first, receive_count=2)
            else:
                with Etl(reset_db=False, binary=previous if who == "previous" else None,
                         env=None if who == "previous" else CURRENT) as e:
                    seen.append(e)
                    _deliver(e, first, receive_count=2)
                    _deliver(e, second, receive_count=2)
                    _deliver(e, first + second, receive_count=3)
            _assert_once(db, book, {m["messageId"] for m in ancient},
                         f"round {k} ({who}, {tag} and this build)")
            last_round = first + second
            _age(db, book, days)
        # The ages did cross the limits: expired days were truncated, and the earlier
        # ledger was found no longer needed (by the current build at least).
        assert _logged(seen, "ledger slot cleared"), "no expired ledger day was cleared"
        assert _logged(seen, "the earlier ledger no longer matters and may be dropped")
        assert _logged(seen, "the earlier ledger is consulted until its entries expire")
    finally:
        db.reset()


def _catch(errors, f, *args):
    """f(*args) in a thread; what it raises is kept for the main thread to report."""
    try:
        f(*args)
    except BaseException as e:  # noqa: BLE001
        errors.append(e)


test_the_previous_release_and_this_one_take_turns_and_run_together_as_the_database_ages \
    .time_limit = 3000


def test_the_release_table_agrees_with_the_tags():
    listed = releases.known()
    assert "v1.0.0" in listed
    for tag, commit in listed.items():
        assert releases.order(tag)
        # Each listed commit is in this clone's history (a release is never rewritten).
        r = releases._git("merge-base", "--is-ancestor", commit, "HEAD", check=False)
        assert r.returncode == 0, f"{tag}'s commit {commit} is not an ancestor of HEAD"
    # A clone without tags finds the previous release from the table alone.
    with tempfile.TemporaryDirectory() as d:
        subprocess.run(["git", "clone", "-q", "--no-tags", str(releases.paths.ROOT), d],
                       check=True, capture_output=True)
        assert subprocess.run(["git", "-C", d, "tag"], capture_output=True, text=True,
                              check=True).stdout == ""
        r = subprocess.run([sys.executable, "-c", "import sys; sys.path.insert(0, 'tests'); "
                            "from rig import releases; print(*releases.previous())"], cwd=d,
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        tag, commit = r.stdout.split()
        assert listed[tag] == commit and tag == releases.previous()[0]
