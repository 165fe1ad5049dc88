"""Rows the database refuses: a trigger's RAISE EXCEPTION, a CHECK constraint an operator
added, a trigger on the ledger, a deferred constraint trigger that fails at COMMIT.
Each time exactly the refused records are listed (reason database_rejected), the rest of the
batch is committed in the same invocation, a redelivery writes nothing more, and the
server's error text (which can quote a user_id) reaches no output; every line printed is
one JSON object."""
import contextlib
import json
import random
import string
import subprocess
import time

from events.generate import event_bytes, make_event, tiny_event
from rig import expect, harness, ledger, pg
from rig.harness import Etl, row_key
from rig.messages import msg


def _refusing_trigger(name, table, refuse_if, error, when):
    """SQL creating the row trigger `name` on INSERT into `table` that raises `error` (RAISE
    EXCEPTION's arguments) for the rows where `refuse_if` holds; `when` is "BEFORE" (the
    error names the COPY's line), "AFTER" (fired at the end of the COPY statement: it names
    no line) or "DEFERRED" (a constraint trigger fired at COMMIT: no line either)."""
    create = {"BEFORE": f"CREATE TRIGGER {name} BEFORE INSERT ON {table}",
              "AFTER": f"CREATE TRIGGER {name} AFTER INSERT ON {table}",
              "DEFERRED": f"CREATE CONSTRAINT TRIGGER {name} AFTER INSERT ON {table}\n"
                          "  DEFERRABLE INITIALLY DEFERRED"}[when]
    return f"""
CREATE OR REPLACE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF {refuse_if} THEN
    RAISE EXCEPTION {error};
  END IF;
  RETURN {"NEW" if when == "BEFORE" else "NULL"};
END $$;
{create} FOR EACH ROW EXECUTE FUNCTION {name}();
"""


# Refuses the rows of users whose id starts with "refuse-", naming the user_id in the
# message (as a careless trigger would): that text must never be printed.
REFUSED_USER = "NEW.user_id LIKE 'refuse-%'"
NAMING_USER = "'refused row for %', NEW.user_id"
REFUSE_TRIGGER = _refusing_trigger("refuse_row", "user_logins", REFUSED_USER, NAMING_USER, "BEFORE")

# The same check made at COMMIT: the error names no COPY line.
DEFERRED_TRIGGER = _refusing_trigger("refuse_late", "user_logins", REFUSED_USER, NAMING_USER,
                                     "DEFERRED")

# An AFTER ROW trigger fires at the end of the COPY statement: its error names no line either.
AFTER_TRIGGER = _refusing_trigger("refuse_late", "user_logins", REFUSED_USER, NAMING_USER,
                                  "AFTER")

# The ledger keys of the messageIds the ledger triggers below refuse (ids starting "bad-").
BAD_IDS = ("bad-id9", "bad-id30", "bad-9", "bad-4")
BAD_KEYS = "ARRAY[" + ", ".join(f"'{ledger.key(i)}'" for i in BAD_IDS) + "]::uuid[]"
REFUSED_ID = f"NEW.message_id = ANY({BAD_KEYS})"
NAMING_ID = "'refused id %', NEW.message_id"

# An AFTER ROW trigger on the ledger: its error names no line, and SET CONSTRAINTS cannot
# move it, so the rows are isolated one transaction per part.
LEDGER_TRIGGER = _refusing_trigger("refuse_id", "login_etl_ledger_v3", REFUSED_ID, NAMING_ID,
                                   "AFTER")

# The same as a BEFORE ROW trigger: its error names the ledger COPY's line.
LEDGER_BEFORE_TRIGGER = _refusing_trigger("refuse_id", "login_etl_ledger_v3", REFUSED_ID,
                                          NAMING_ID, "BEFORE")

# The same deferred to COMMIT: its events were queued by the ledger COPY.
DEFERRED_LEDGER_TRIGGER = _refusing_trigger("refuse_id_late", "login_etl_ledger_v3", REFUSED_ID,
                                            NAMING_ID, "DEFERRED")

# Says something about every row, quoting its user_id.
NOTICE_TRIGGER = """
CREATE OR REPLACE FUNCTION talk() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  RAISE NOTICE 'looking at %', NEW.user_id;
  RAISE WARNING 'still looking at %', NEW.user_id;
  RETURN NEW;
END $$;
CREATE TRIGGER talk BEFORE INSERT ON user_logins FOR EACH ROW EXECUTE FUNCTION talk();
"""


def _msg(mid, user_id, **fields):
    """A valid login of this user (fields replace the defaults)."""
    body = {"user_id": user_id, "device_type": "ios", "ip": "192.0.2.7",
            "device_id": f"dev-{mid[:40]}", "locale": "en_US", "app_version": "3.1.4"}
    body.update(fields)
    return msg(mid, body)


def _batch(n, refused, prefix="m"):
    """n messages; those at the indexes in `refused` have a user_id the trigger refuses."""
    return [_msg(f"{prefix}{i}", (f"refuse-secret-{i}" if i in refused else f"user-{i}"))
            for i in range(n)]


def _prepare(etl):
    """Creates the tables (one write) and empties them."""
    assert etl.answer(event_bytes(make_event([_msg("warm-up", "user-warm")]))) == set()
    etl.db.psql("DELETE FROM user_logins; DELETE FROM login_etl_ledger_v3")


@contextlib.contextmanager
def _refusing(sql, undo=None, **etl_options):
    """An ETL session (Etl's options) on emptied tables to which `sql` was added as the
    superuser (a trigger, a constraint); `undo` (SQL) is run when it ends, failed or not."""
    with Etl(**etl_options) as etl:
        _prepare(etl)
        etl.db.superuser(sql)
        try:
            yield etl
        finally:
            if undo:
                etl.db.superuser(undo)


def _assert_written(etl, messages):
    """user_logins and the ledger hold exactly these messages, once each."""
    want = sorted((expect.row(m["body"], m["sentTimestamp"]) for m in messages), key=row_key)
    assert sorted(etl.rows(), key=row_key) == want
    assert sorted(ledger.ids(etl.db)) == sorted(ledger.key(m["messageId"]) for m in messages)


def _delivered(etl, msgs, listed, **event):
    """Sends msgs as one event (make_event's options); asserts that exactly `listed` is
    answered and that the tables then hold exactly the other messages, once each."""
    assert etl.answer(event_bytes(make_event(msgs, **event))) == listed
    _assert_written(etl, [m for m in msgs if m["messageId"] not in listed])


def _json_lines(etl):
    """Every line the process printed (stdout and stderr), each parsed as one JSON object."""
    lines = []
    for path in (etl.boot.out_path, etl.boot.err_path):
        with open(path, "rb") as f:
            for raw in f.read().decode("utf-8").splitlines():
                doc = json.loads(raw)  # raises on anything that is not JSON
                assert isinstance(doc, dict), raw
                lines.append(doc)
    return lines


def _rejected(etl):
    return {l["messageId"] for l in etl.boot.logs() if isinstance(l, dict)
            and l.get("message") == "record rejected" and l.get("reason") == "database_rejected"}


def test_a_trigger_refusing_one_row_of_20_lists_it_and_writes_the_19():
    msgs = _batch(20, {7})
    with _refusing(REFUSE_TRIGGER) as etl:
        assert etl.answer(event_bytes(make_event(msgs))) == {"m7"}
        good = [m for m in msgs if m["messageId"] != "m7"]
        _assert_written(etl, good)
        # Redelivered: the refused record is refused again, nothing is written twice.
        assert etl.answer(event_bytes(make_event(msgs, receive_count=2))) == {"m7"}
        # Its own redelivery, alone: refused again, never written.
        assert etl.answer(event_bytes(make_event(msgs[7:8], receive_count=3))) == {"m7"}
        _assert_written(etl, good)
        metrics = etl.boot.metrics()[-3:]
        assert [(m["RecordsWritten"], m["RecordsDuplicate"], m["RecordsRejected"])
                for m in metrics] == [(19, 0, 1), (0, 19, 1), (0, 0, 1)]
        assert _rejected(etl) == {"m7"}
        refusals = [l for l in etl.boot.logs() if isinstance(l, dict)
                    and l.get("message") == "database refused a row"]
        assert refusals and all("SQLSTATE P0001" in l["reason"] for l in refusals), refusals
        out = etl.boot.output()
        assert "refuse-secret" not in out and "refused row for" not in out
        _json_lines(etl)


def test_a_check_constraint_added_by_an_operator_refuses_only_its_rows():
    bad = {0, 13, 29}
    msgs = [_msg(f"c{i}", f"user-{i}", app_version="1.0.0" if i in bad else "4.2.0")
            for i in range(30)]
    with _refusing("ALTER TABLE user_logins ADD CONSTRAINT modern_app "
                   "CHECK (app_version >= 2000000)") as etl:
        _delivered(etl, msgs, {f"c{i}" for i in bad})
        reasons = {l["reason"] for l in etl.boot.logs() if isinstance(l, dict)
                   and l.get("message") == "database refused a row"}
        assert reasons == {"copy rows: SQLSTATE 23514 table user_logins constraint modern_app"}
        _delivered(etl, msgs, {f"c{i}" for i in bad}, receive_count=2)


def test_a_message_id_over_the_btree_limit_is_written_once():
    # The ledger keeps a 16-byte key for any id, so a long id (over the b-tree entry limit
    # as text) is an ordinary message.
    rnd = random.Random(5)
    long_id = "".join(rnd.choice(string.ascii_letters + string.digits) for _ in range(3000))
    msgs = [_msg(f"b{i}", f"user-{i}") for i in range(10)]
    msgs[4] = _msg(long_id, "user-long")
    with Etl() as etl:
        _prepare(etl)
        for delivery in (1, 2):
            _delivered(etl, msgs, set(), receive_count=delivery)


def _ledger_entry_refused_alone(trigger, name, n, bad, prefix):
    """n messages with ids prefix + i, except "bad-{bad}" at index bad (an id the ledger
    trigger `name` refuses): each of two deliveries lists that one alone and writes the
    rest, once.  The trigger is dropped at the end; returns the function's log lines."""
    msgs = [_msg(("bad-" if i == bad else prefix) + str(i), f"user-{i}") for i in range(n)]
    with _refusing(trigger, undo=f"DROP TRIGGER {name} ON login_etl_ledger_v3") as etl:
        for delivery in (1, 2):
            _delivered(etl, msgs, {f"bad-{bad}"}, receive_count=delivery)
    return etl.boot.logs()


def test_a_ledger_entry_refused_by_its_line_is_refused_alone():
    # A BEFORE trigger on the ledger names the ledger COPY's line: the transaction is
    # void, the row is marked and the batch written again without it.
    logs = _ledger_entry_refused_alone(LEDGER_BEFORE_TRIGGER, "refuse_id", 10, 4, "b")
    assert any(isinstance(l, dict) and l.get("message") == "database refused a row"
               and "SQLSTATE P0001" in l["reason"] for l in logs)
    assert not any(isinstance(l, dict) and l.get("message") == "isolating by transactions"
                   for l in logs)


def test_a_deferred_trigger_failing_at_commit_is_isolated_in_parts():
    for trigger in (DEFERRED_TRIGGER, AFTER_TRIGGER):
        _isolated_in_parts(trigger)


def _isolated_in_parts(trigger):
    msgs = _batch(40, {5, 31}, prefix="d")
    with _refusing(trigger) as etl:
        _delivered(etl, msgs, {"d5", "d31"})
        logged = [l.get("message") for l in etl.boot.logs() if isinstance(l, dict)]
        assert "a row was refused without its line: isolating it" in logged
        # Made immediate, the constraint names its rows in one transaction.
        assert "isolating by transactions" not in logged
        _delivered(etl, msgs, {"d5", "d31"}, receive_count=2)
        assert "refuse-secret" not in etl.boot.output()
        _json_lines(etl)


def test_fifo_stops_at_the_refused_row_and_keeps_the_order():
    for trigger in (REFUSE_TRIGGER, DEFERRED_TRIGGER):
        msgs = _batch(8, {3}, prefix="f")
        with _refusing(trigger) as etl:
            after = {f"f{i}" for i in range(3, 8)}
            _delivered(etl, msgs, after, fifo=True)
            # Redelivered from the refused record on: refused again, nothing after it written.
            assert etl.answer(event_bytes(make_event(msgs[3:], fifo=True, receive_count=2))) \
                == after
            _assert_written(etl, msgs[:3])
            assert _rejected(etl) == {"f3"}
            # The operator drops the trigger: the rest lands, once.
            etl.db.superuser("DROP TRIGGER IF EXISTS refuse_row ON user_logins; "
                               "DROP TRIGGER IF EXISTS refuse_late ON user_logins")
            assert etl.answer(event_bytes(make_event(msgs[3:], fifo=True, receive_count=3))) \
                == set()
            _assert_written(etl, msgs)


def test_notices_and_server_errors_print_only_json_and_no_server_text():
    msgs = _batch(12, {2, 9}, prefix="n")
    env = {"AWS_LAMBDA_LOG_FORMAT": "JSON", "AWS_LAMBDA_LOG_LEVEL": "DEBUG"}
    with _refusing(NOTICE_TRIGGER + REFUSE_TRIGGER, env=env) as etl:
        _delivered(etl, msgs, {"n2", "n9"})
        lines = _json_lines(etl)
        notices = [l for l in lines if l.get("message") == "database notice"]
        assert {(l["severity"], l["sqlstate"]) for l in notices} == \
            {("NOTICE", "00000"), ("WARNING", "01000")}, notices
        out = etl.boot.output()
        assert "looking at" not in out and "refuse-secret" not in out and "user-1" not in out
    # A server error at connect (a wrong password) is reported by its SQLSTATE.
    db = pg.server()
    with Etl(env={"PGPASSWORD": "not-the-password"}, reset_db=False) as etl:
        res = etl.invoke(event_bytes(make_event(msgs[:1])), timeout_s=5)
        assert res.kind == "error" and res.json()["errorType"] == "DatabaseUnavailable"
        message = res.json()["errorMessage"]
        assert "28P01" in message and "authentication failed" not in message, message
        assert "authentication failed" not in etl.boot.output()
        _json_lines(etl)
    assert db.running


def test_many_refused_rows_with_replayed_ids_in_the_same_batch():
    # Half the batch was committed before (the ledger's unique key finds them); of the
    # rest a CHECK constraint refuses every third row of the first 60, then two far apart
    # (the rows after a refusal go in parts of growing size), and the last.
    def bad(i):
        return (i < 60 and i % 3 == 0) or i in (150, 240, 299)
    msgs = [_msg(f"r{i}", f"user-{i}", locale="xx" if bad(i) else "en_US") for i in range(300)]
    refused = {f"r{i}" for i in range(300) if bad(i)}
    early = [m for i, m in enumerate(msgs) if i % 2 == 1 and m["messageId"] not in refused]
    with Etl() as etl:
        _prepare(etl)
        assert etl.answer(event_bytes(make_event(early))) == set()
        etl.db.superuser("ALTER TABLE user_logins ADD CONSTRAINT known_locale "
                           "CHECK (locale <> 'xx')")
        _delivered(etl, msgs, refused, receive_count=2)
        m = etl.boot.metrics()[-1]
        assert (m["RecordsWritten"], m["RecordsDuplicate"], m["RecordsRejected"]) == \
            (len(msgs) - len(refused) - len(early), len(early), len(refused))
        _delivered(etl, msgs, refused, receive_count=3)


def test_a_ledger_trigger_without_line_is_isolated_one_transaction_per_part():
    for fifo in (False, True):
        msgs = [_msg(("bad-" if i in (9, 30) else "") + f"id{i}", f"user-{i}") for i in range(40)]
        refused = {"bad-id9", "bad-id30"}
        listed = refused if not fifo else {m["messageId"] for m in msgs[9:]}
        with _refusing(LEDGER_TRIGGER) as etl:
            _delivered(etl, msgs, listed, fifo=fifo)
            assert _rejected(etl) == (refused if not fifo else {"bad-id9"})
            assert any(isinstance(l, dict) and l.get("message") == "isolating by transactions"
                       for l in etl.boot.logs())
            _delivered(etl, msgs, listed, fifo=fifo, receive_count=2)


def test_isolation_stops_at_the_deadline_and_the_redelivery_completes_it():
    slow = DEFERRED_TRIGGER.replace("BEGIN\n  IF", "BEGIN\n  PERFORM pg_sleep(0.03);\n  IF")
    assert slow != DEFERRED_TRIGGER
    msgs = _batch(60, {40}, prefix="t")
    with _refusing(slow) as etl:
        deadline = int(time.time() * 1000) + 2500
        rid = etl.emu.enqueue(event_bytes(make_event(msgs)), deadline_ms=deadline)
        res = etl.emu.wait_result(rid, timeout=10)
        answered = int(time.time() * 1000)
        assert answered < deadline, f"answered {answered - deadline} ms after the deadline"
        listed = res.failures()
        written = set(ledger.ids(etl.db))
        # Whatever was committed is not listed, and everything else is.
        assert {ledger.key(i) for i in listed} | written == ledger.keys(msgs)
        assert not {ledger.key(i) for i in listed} & written
        assert "t40" in listed and etl.count() == len(written)
        _delivered(etl, msgs, {"t40"}, receive_count=2)


def test_a_user_without_delete_on_the_ledger_still_gets_exact_answers():
    # The upstream environment owns the tables; the function's user may insert rows and
    # insert and read its ledger, not delete from it: the refused rows' ids cannot be
    # taken out of the ledger, so the batch is written again without them.
    db = pg.server()
    db.reset()
    with Etl(reset_db=False) as etl:
        _prepare(etl)
    env = harness.etl_role(db, "etl_nodelete", "SELECT, INSERT")
    db.superuser("ALTER TABLE user_logins ADD CONSTRAINT modern_app "
                   "CHECK (app_version >= 2000000)" + ";" + DEFERRED_TRIGGER)
    bad = {3, 17}  # refused by the CHECK constraint (line) and the trigger (no line)
    msgs = [_msg(f"p{i}", ("refuse-secret-" if i == 17 else "user-") + str(i),
                 app_version="1.0.0" if i == 3 else "4.2.0") for i in range(25)]
    with Etl(reset_db=False, env=env) as etl:
        for delivery in (1, 2):
            _delivered(etl, msgs, {f"p{i}" for i in bad}, receive_count=delivery)
        assert any(isinstance(l, dict) and l.get("message", "").startswith("no DELETE")
                   for l in etl.boot.logs())


def test_rows_refused_with_and_without_a_line_in_one_batch():
    # The CHECK constraint names its row (30), the deferred trigger does not (2): the first
    # try takes 30 out and fails at COMMIT; isolation finds 2 and meets 30 again by its line.
    for fifo in (False, True):
        msgs = [_msg(f"x{i}", ("refuse-secret-" if i == 2 else "user-") + str(i),
                     app_version="1.0.0" if i == 30 else "4.2.0") for i in range(40)]
        listed = {"x2", "x30"} if not fifo else {f"x{i}" for i in range(2, 40)}
        with _refusing("ALTER TABLE user_logins ADD CONSTRAINT modern_app "
                       "CHECK (app_version >= 2000000);" + DEFERRED_TRIGGER) as etl:
            _delivered(etl, msgs, listed, fifo=fifo)
            assert _rejected(etl) == ({"x2", "x30"} if not fifo else {"x2"})
            _delivered(etl, msgs, listed, fifo=fifo, receive_count=2)


def test_a_deferred_trigger_on_the_ledger_refuses_its_record_alone():
    # Its events were queued by the ledger COPY, before the rows' savepoint, so returning to
    # that savepoint cannot drop them: the row is found by transactions of their own.
    _ledger_entry_refused_alone(DEFERRED_LEDGER_TRIGGER, "refuse_id_late", 20, 9, "g")


# An operator's second uniqueness rule on the ledger: one message id a day slot, whatever
# its SentTimestamp.  As an index, as a deferred unique constraint (checked at COMMIT), and
# as triggers raising 23505 (unique_violation) for an id the slot already holds under
# another SentTimestamp: BEFORE (the error names the ledger COPY's line) and AFTER (it
# names none).
SECOND_UNIQUE_INDEX = "CREATE UNIQUE INDEX one_id_a_slot ON login_etl_ledger_v3 (slot, message_id)"
# The same checked at COMMIT: its error names no line, and comes after the rows are in.
SECOND_UNIQUE_DEFERRED = ("ALTER TABLE login_etl_ledger_v3 ADD CONSTRAINT one_id_a_slot "
                          "UNIQUE (slot, message_id) DEFERRABLE INITIALLY DEFERRED")
_SAME_ID_OTHER_TIME = ("EXISTS (SELECT 1 FROM login_etl_ledger_v3 o WHERE o.slot = NEW.slot "
                       "AND o.message_id = NEW.message_id AND o.sent_at <> NEW.sent_at)")
SECOND_UNIQUE_TRIGGERS = {
    when: _refusing_trigger("one_id_a_slot", "login_etl_ledger_v3", _SAME_ID_OTHER_TIME,
                            "'id % seen already', NEW.message_id USING ERRCODE = 'unique_violation'",
                            when)
    for when in ("BEFORE", "AFTER")}


def test_a_second_unique_rule_on_the_ledger_refuses_only_the_records_it_names():
    """Five ids committed, then back with another SentTimestamp the same day (new messages
    by the ledger's rule, which the operator's rule refuses) among 40 new ones: the five
    are refused (database_rejected) and the 40 written, on every delivery."""
    first = [_msg(f"u{i}", f"user-u{i}") for i in range(5)]
    again = [dict(m, sentTimestamp=m["sentTimestamp"] + 60_000) for m in first]
    new = [_msg(f"n{i}", f"user-n{i}") for i in range(40)]
    batch = new[:10] + again[:2] + new[10:30] + again[2:] + new[30:]
    refused = {m["messageId"] for m in again}
    cases = [("index", SECOND_UNIQUE_INDEX, "DROP INDEX one_id_a_slot"),
             ("deferred constraint", SECOND_UNIQUE_DEFERRED,
              "ALTER TABLE login_etl_ledger_v3 DROP CONSTRAINT one_id_a_slot")] + [
        (f"{when} trigger", sql, "DROP TRIGGER one_id_a_slot ON login_etl_ledger_v3")
        for when, sql in SECOND_UNIQUE_TRIGGERS.items()]
    for name, sql, undo in cases:
        with _refusing(sql, undo=undo) as etl:
            _delivered(etl, first, set())
            for delivery in (1, 2):
                assert etl.answer(event_bytes(make_event(batch, receive_count=delivery))) \
                    == refused, name
                _assert_written(etl, first + new)
            assert _rejected(etl) == refused, name
            refusals = [l["reason"] for l in etl.boot.logs() if isinstance(l, dict)
                        and l.get("message") == "database refused a row"]
            assert refusals and all("SQLSTATE 23505" in r for r in refusals), (name, refusals)
            assert "seen already" not in etl.boot.output()
            _json_lines(etl)


class _LockWatch:
    """Samples, every few milliseconds while it runs, the locks the function's backend
    holds on transaction ids: one for its transaction and one for each subtransaction
    that wrote and is not rolled back."""

    def __init__(self, db):
        import threading
        self.db, self.peak, self.samples, self._stop = db, 0, 0, False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        sql = ("SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
               "WHERE a.application_name = 'login-etl' AND l.locktype = 'transactionid'")
        while not self._stop:
            try:
                self.peak = max(self.peak, int(self.db.superuser(sql).strip() or 0))
                self.samples += 1
            except Exception:  # a sample lost to a busy server is no verdict
                pass

    def stop(self):
        self._stop = True
        self._thread.join()
        return self.peak


# Savepoints nested one inside the other give every open subtransaction an id and a lock
# as soon as the innermost writes: by thousands, they exhaust the lock table (SQLSTATE
# 53200).  Ended one by one, they hold none but the one in flight.
XID_LOCKS_MAX = 64 + 2


def test_a_flood_of_refusals_holds_few_locks_and_every_record_gets_its_answer():
    """7,400 rows, all or 30% of them refused by a BEFORE, an AFTER or a deferred trigger:
    every refused record is listed and logged database_rejected, the rest is written once,
    the answer comes before the deadline, and the function's transaction never holds more
    than XID_LOCKS_MAX transaction-id locks (one per subtransaction that wrote)."""
    n = 7400
    for when in ("DEFERRED", "AFTER", "BEFORE"):
        for share_every in (1, 3):
            bad = set(range(0, n, share_every))
            msgs = _batch(n, bad, prefix=f"{when[0]}{share_every}-")
            refused = {m["messageId"] for i, m in enumerate(msgs) if i in bad}
            trigger = _refusing_trigger("refuse_many", "user_logins", REFUSED_USER, NAMING_USER,
                                        when)
            with _refusing(trigger) as etl:
                watch = _LockWatch(etl.db)
                deadline = int(time.time() * 1000) + 60_000
                try:
                    rid = etl.emu.enqueue(event_bytes(make_event(msgs)), deadline_ms=deadline)
                    res = etl.emu.wait_result(rid, timeout=90)
                finally:
                    peak = watch.stop()
                answered = int(time.time() * 1000)
                case = f"{when}, {len(bad)} of {n} refused"
                print(f"{case}: answered {deadline - answered} ms before the deadline, "
                      f"peak {peak} transaction-id locks in {watch.samples} samples")
                assert res.kind == "response", (case, res.body[:300])
                assert res.failures() == refused, (case, len(res.failures()))
                assert answered < deadline, case
                assert _rejected(etl) == refused, (case, len(_rejected(etl)))
                _assert_written(etl, [m for m in msgs if m["messageId"] not in refused])
                assert watch.samples > 0 and peak <= XID_LOCKS_MAX, (case, peak)


test_a_flood_of_refusals_holds_few_locks_and_every_record_gets_its_answer.time_limit = 900


def _peak_mib(etl):
    with open(f"/proc/{etl.boot.proc.pid}/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("VmHWM")) / 1024


# The memory goal for any event up to Lambda's 6 MB payload limit (tests/bench/README.md).
PEAK_MIB_MAX = 48
# The goal is the deployable build's: the build image (and this kind of machine) links
# Debian 12's OpenSSL 3.0 statically.  A build against Debian 13's OpenSSL 3.5 (and the
# zlib and zstd it needs) is a 2.7 MB larger binary whose start-up keeps more resident:
# it measured 47.3 to 49.1 MiB for the refused shape, 45.1 for the deployable build.
# Such a build is held to the goal plus this much, and the gap is reported.
OTHER_OPENSSL_MIB = 2


def _peak_ceiling(binary):
    """PEAK_MIB_MAX for a build that links OpenSSL 3.0 (Debian 12's, the deployable one),
    PEAK_MIB_MAX + OTHER_OPENSSL_MIB for another."""
    out = subprocess.run([str(binary), "--version"], capture_output=True, text=True,
                         check=True).stdout
    return PEAK_MIB_MAX if "\nOpenSSL 3.0." in out else PEAK_MIB_MAX + OTHER_OPENSSL_MIB


def test_a_6_mb_event_replayed_or_refused_stays_within_the_memory_goal():
    """111,598 tiny valid records in 6.29 MB (Lambda's 6 MB payload limit): written, then
    delivered again (every id a duplicate, looked up in the ledger); and, in another
    process, every one refused by a BEFORE trigger, one refusal at a time, every id then
    taken back out of the ledger.  The release bootstrap's peak resident memory stays
    within PEAK_MIB_MAX, and the lookup of duplicates costs no more than the write (within
    2 MiB): the keys it sends and the answer it reads go a chunk at a time."""
    from rig import paths
    n = 111_598
    event = tiny_event(n, 6 * 1024 * 1024)
    assert 6_290_000 < len(event) <= 6 * 1024 * 1024, len(event)
    peaks = {}
    for case in ("written", "refused"):
        with Etl(binary=paths.RELEASE) as etl:
            _prepare(etl)
            if case == "refused":
                etl.db.superuser(_refusing_trigger("refuse_all", "user_logins", "true",
                                                   "'refused'", "BEFORE"))
            for delivery in (1, 2) if case == "written" else (1,):
                deadline = int(time.time() * 1000) + 280_000
                rid = etl.emu.enqueue(event, deadline_ms=deadline)
                res = etl.emu.wait_result(rid, timeout=300)
                assert res.kind == "response", res.body[:300]
                assert len(res.failures()) == (n if case == "refused" else 0)
                assert etl.count() == (0 if case == "refused" else n)
                peaks[case if delivery == 1 else "replayed"] = _peak_mib(etl)
    print("peak RSS (MiB): " + ", ".join(f"{k} {v:.1f}" for k, v in peaks.items()))
    assert peaks["replayed"] <= peaks["written"] + 2, peaks
    ceiling = _peak_ceiling(paths.RELEASE)
    if ceiling != PEAK_MIB_MAX:
        print(f"not the deployable build's OpenSSL: held to {ceiling} MiB, the goal is "
              f"{PEAK_MIB_MAX}")
    assert max(peaks.values()) <= ceiling, peaks


test_a_6_mb_event_replayed_or_refused_stays_within_the_memory_goal.time_limit = 600


def test_a_batch_more_than_the_lock_table_holds_in_one_transaction_is_written_in_parts():
    """user_logins partitioned by day into 300 partitions on a server whose lock table is
    small (max_locks_per_transaction = 10): a batch of 1,200 logins over those 300 days
    needs a lock on every partition, more than one transaction may hold, and its rows COPY
    fails for lock memory (SQLSTATE 53200).  That is no refused row: the batch is cut into
    parts, in transactions of their own at need, and every record is written, none listed
    or logged database_rejected."""
    import atexit
    from rig import proc, runtime_api
    days, n = 800, 1600
    srv = pg.Server(conf=["max_locks_per_transaction = 10", "max_connections = 5",
                          "max_wal_senders = 0", "wal_level = minimal",
                          "max_worker_processes = 2", "autovacuum_max_workers = 1"])
    atexit.register(srv.destroy)
    srv.psql("CREATE TABLE user_logins (user_id varchar(128), device_type varchar(32), "
             "masked_ip varchar(256), masked_device_id varchar(256), locale varchar(32), "
             "app_version integer, create_date date) PARTITION BY RANGE (create_date)")
    for first in range(0, days, 20):  # a few partitions a transaction: the locks are few
        srv.psql("; ".join(
            f"CREATE TABLE user_logins_d{d} PARTITION OF user_logins FOR VALUES FROM "
            f"('2024-01-01'::date + {d}) TO ('2024-01-01'::date + {d + 1})"
            for d in range(first, first + 20)))
    day0 = 1_704_067_200_000  # 2024-01-01T00:00:00Z
    msgs = [dict(_msg(f"p{i}", f"user-{i}"), sentTimestamp=day0 + (i * days // n) * 86_400_000
                 + 3_600_000) for i in range(n)]
    emu = runtime_api.Emulator()
    boot = proc.Bootstrap(emu.address, db=srv)
    try:
        for delivery in (1, 2):
            rid = emu.enqueue(event_bytes(make_event(msgs, receive_count=delivery)),
                              deadline_ms=int(time.time() * 1000) + 120_000)
            res = emu.wait_result(rid, timeout=150)
            assert res.kind == "response", res.body[:300]
            assert res.failures() == set(), len(res.failures())
        # Counted 100 days at a time: all the partitions at once are more than the server's
        # lock table holds in one transaction.
        assert sum(int(srv.scalar(
            f"SELECT count(*) FROM user_logins WHERE create_date >= '2024-01-01'::date + {d} "
            f"AND create_date < '2024-01-01'::date + {d + 100}")) for d in range(0, days, 100)) == n
        assert srv.scalar("SELECT count(DISTINCT message_id) FROM login_etl_ledger_v3 "
                          "WHERE slot < 18") == str(n)
        reasons = [l.get("reason", "") for l in boot.logs() if isinstance(l, dict)]
        assert any("53200" in r for r in reasons), "the lock table was never short"
        assert not [l for l in boot.logs() if isinstance(l, dict)
                    and l.get("message") in ("record rejected", "database refused a row")]
        m = boot.metrics()
        assert [(x["RecordsWritten"], x["RecordsDuplicate"]) for x in m] == [(n, 0), (0, n)], m
    finally:
        boot.stop()
        emu.close()
