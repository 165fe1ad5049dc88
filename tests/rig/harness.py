"""One ETL session for a test: the shared test Postgres (emptied), a Runtime
API emulator and the real bootstrap behind it.

    with harness.Etl() as etl:
        failed = etl.answer(event)        # the messageIds in batchItemFailures
        rows = etl.rows()                 # user_logins, as dicts
"""
import json
import time

from events.generate import event_bytes, make_event

from . import ledger, pg, proc, runtime_api

ROW_COLUMNS = ("user_id", "device_type", "masked_ip", "masked_device_id", "locale",
               "app_version", "create_date")


def row_key(r):
    """A sortable tuple of a row dict, NULLs first."""
    return tuple((v is not None, "" if v is None else str(v)) for v in (r[c] for c in ROW_COLUMNS))


class Etl:
    def __init__(self, env=None, binary=None, reset_db=True, max_invocations=None, key=True,
                 valgrind=False, **emulator_options):
        self.db = pg.server()
        if reset_db:
            self.db.reset()
        self.emu = runtime_api.Emulator()
        for k, v in emulator_options.items():
            setattr(self.emu, k, v)
        self.boot = proc.Bootstrap(self.emu.address, db=self.db, env=env, binary=binary,
                                   max_invocations=max_invocations, key=key, valgrind=valgrind)

    def invoke(self, event, timeout=120, deadline_ms=None, timeout_s=60):
        """Sends one event; returns the emulator's Result (.kind, .json(), ...)."""
        rid = self.emu.enqueue(event, deadline_ms=deadline_ms, timeout_s=timeout_s)
        return self.emu.wait_result(rid, timeout=timeout)

    def answer(self, event, **kw):
        """Sends one event that must be answered (not an invocation error);
        returns the set of messageIds listed in batchItemFailures."""
        res = self.invoke(event, **kw)
        assert res.kind == "response", f"expected an answer, got {res.kind}: {res.body[:300]!r}"
        doc = res.json()
        assert set(doc) == {"batchItemFailures"}, doc
        ids = [f["itemIdentifier"] for f in doc["batchItemFailures"]]
        assert all(set(f) == {"itemIdentifier"} for f in doc["batchItemFailures"]), doc
        assert len(ids) == len(set(ids)), f"an id is listed twice: {ids}"
        return set(ids)

    def rows(self):
        return self.db.query("SELECT user_id, device_type, masked_ip, masked_device_id, locale, "
                             "app_version, create_date::text AS create_date FROM user_logins")

    def count(self):
        return int(self.db.scalar("SELECT count(*) FROM user_logins"))

    def close(self, expect_alive=True):
        alive = self.boot.alive()
        status = self.boot.stop()
        self.emu.close()
        report = self.boot.sanitizer_report()
        assert report is None, f"sanitizer report:\n{report}"
        if expect_alive:
            assert alive, f"bootstrap exited early with {status}:\n{self.boot.output()[-3000:]}"

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *rest):
        if exc_type is None:
            self.close()
        else:
            try:
                self.close()
            except AssertionError:
                pass


def tables_by_owner(messages):
    """Empties the test database and has the function, connected as the tables' owner,
    create its tables by writing `messages` (none may be listed); returns the server, for
    a test that goes on as a role granted less (etl_role)."""
    db = pg.server()
    db.reset()
    with Etl(reset_db=False) as etl:
        assert etl.answer(event_bytes(make_event(messages))) == set()
    return db


def etl_role(db, name, ledger_privileges):
    """Creates (once: the server is shared by the session's tests) the login role `name`
    (password name + "-password") as an operator would for the function on tables made
    upstream: INSERT on user_logins and `ledger_privileges` on the ledger, nothing else.
    Returns the environment that has the bootstrap connect as that role."""
    password = f"{name}-password"
    db.superuser(f"DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{name}') "
                 f"THEN CREATE ROLE {name} LOGIN PASSWORD '{password}'; END IF; END $$")
    db.psql(f"GRANT INSERT ON user_logins TO {name}; "
            f"GRANT {ledger_privileges} ON {ledger.LEDGER} TO {name}")
    return {"PGUSER": name, "PGPASSWORD": password}


def assert_no_pii(output, messages):
    """No raw ip or device_id of any message appears in what was printed."""
    for m in messages:
        try:
            body = json.loads(m["body"])
        except ValueError:
            continue
        if not isinstance(body, dict):
            continue
        for field in ("ip", "device_id"):
            v = body.get(field)
            if isinstance(v, str) and len(v) >= 4:
                assert v not in output, f"a raw {field} of message {m['messageId']} was printed"


def wait_for(cond, timeout=10, step=0.05):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(step)
    return cond()
