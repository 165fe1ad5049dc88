"""docs/operations.md, as written: every alarm of the template has its entry; every Logs
Insights query there, run over what the real bootstrap logs in the failure it explains
(tests/rig/insights.py), shows the cause; every command not marked `# needs AWS` runs as
written against a database set up as docs/deploy.md says (tests/rig/deployed.py), with the
release bootstrap on the PATH; the marked ones are at least valid shell."""
import atexit
import json
import os
import re
import subprocess
import tempfile
import threading
import time

from events.generate import event_bytes, make_event, make_messages
from rig import deployed, docblocks, expect, insights, ledger, paths, proc
from rig.harness import Etl, wait_for

from . import test_template

DOC = "docs/operations.md"
USER = "424cdd21-063a-43a7-b91b-7ca1a833afae"  # a user of events/batch.json
_state = {}


def _release(binary=paths.RELEASE):
    out = subprocess.run([str(binary), "--version"], capture_output=True, text=True, check=True)
    return out.stdout.split()[1]


def _hold_lock(db, mode, seconds):
    """A master user's session holding user_logins in `mode` for `seconds`, in the
    background; returns the thread (joined by the caller)."""
    t = threading.Thread(target=db.run_file, args=(
        f"BEGIN; LOCK TABLE user_logins IN {mode} MODE; SELECT pg_sleep({seconds}); COMMIT;",
        deployed.MASTER))
    t.start()
    assert wait_for(lambda: db.scalar(
        "SELECT count(*) FROM pg_locks WHERE relation = 'user_logins'::regclass AND granted "
        f"AND mode = '{mode.title().replace(' ', '')}Lock'") == "1", timeout=10)
    return t


def _setup():
    """The deployed database and the log lines of each failure the runbook explains,
    made once for the module (not kept when making them fails)."""
    if _state:
        return _state
    db = deployed.Database(auth="secret")
    atexit.register(db.destroy)
    env = db.env("login_etl")
    logs = {}
    try:
        # Normal work: the sample batch and generated ones with rejected records.
        normal = make_messages(300, seed=901, invalid_rate=0.1)
        with Etl(reset_db=False, env=env) as etl:
            etl.answer((paths.EVENTS / "batch.json").read_bytes())
            for i in range(0, 300, 100):
                etl.answer(event_bytes(make_event(normal[i:i + 100])))
            logs["normal"] = etl.boot.logs()
        # One bad message on each of MaxReceiveCount receives: dead-lettered.
        bad = make_messages(30, seed=902, invalid_rate=1.0, bad_kinds=["ip_invalid"])[:1]
        with Etl(reset_db=False, env=env) as etl:
            for receive in range(1, 6):
                etl.answer(event_bytes(make_event(bad + make_messages(
                    3, seed=903 + receive, invalid_rate=0), receive_count=receive)))
            logs["dead_lettered"] = etl.boot.logs()
        # The database stopped: whole invocations fail.
        with Etl(reset_db=False, env=env) as etl:
            db.srv.stop()
            try:
                res = etl.invoke(event_bytes(make_event(make_messages(5, seed=910))),
                                 deadline_ms=int(time.time() * 1000) + 8000)
                assert res.kind == "error", res
            finally:
                db.srv.start()
            logs["database_down"] = etl.boot.logs()
        # A lock held on user_logins past the deadline: records left for a retry.
        with Etl(reset_db=False, env=env) as etl:
            etl.answer(event_bytes(make_event(make_messages(2, seed=920, invalid_rate=0))))
            locker = _hold_lock(db, "ACCESS EXCLUSIVE", 6)
            try:
                res = etl.invoke(event_bytes(make_event(make_messages(
                    40, seed=921, invalid_rate=0))), deadline_ms=int(time.time() * 1000) + 2500)
                assert res.kind == "response" and res.json()["batchItemFailures"], res
            finally:
                locker.join()
            logs["deadline"] = etl.boot.logs()
    except BaseException:
        db.destroy()
        raise
    _state.update(db=db, logs=logs, normal=normal, bad=bad)
    return _state


# --- the alarms ----------------------------------------------------------------------------
def test_every_alarm_of_the_template_has_its_entry():
    text = (paths.ROOT / DOC).read_text()
    alarms = sorted(k for k, v in test_template.RES.items() if v["Type"] == "AWS::CloudWatch::Alarm")
    entries = sorted(re.findall(r"^### (\w+Alarm)$", text, re.M))
    assert entries == alarms, (entries, alarms)
    words = {"six": 6, "seven": 7, "eight": 8, "nine": 9, "ten": 10, "eleven": 11, "twelve": 12}
    m = re.search(r"^(\w+) CloudWatch alarms", text, re.M)
    assert m and words.get(m.group(1).lower()) == len(alarms), (m and m.group(0), len(alarms))
    # Each entry says what it means, what to do, and has its query (or names the one to use).
    sections = re.split(r"^### ", text.split("## Alarms", 1)[1].split("\n## ", 1)[0], flags=re.M)
    for sec in sections[1:]:
        name = sec.split("\n", 1)[0]
        assert "**Means:**" in sec, name
        assert "```logs-insights" in sec or re.search(r"as\s+\[\w+Alarm\]", sec), name


# --- the Logs Insights queries -------------------------------------------------------------
def _check_query(key, rows, st):
    """What each query must show in its failure; returns nothing, raises if it does not."""
    release = _release(paths.ASAN)
    if key == "Versions":
        assert rows and all(r["version"] == release for r in rows), rows
        assert sum(r["batches"] for r in rows) == 4 and sum(r["written"] for r in rows) > 250
    elif key == "DeadLetterQueueDepthAlarm":
        assert rows[0]["messageId"] == st["bad"][0]["messageId"], rows[:2]
        assert (rows[0]["receives"], rows[0]["reason"]) == (5, "ip_invalid"), rows[0]
    elif key in ("FunctionErrorsAlarm", "DeployNewVersionErrorsAlarm"):
        by_message = {r["message"]: r for r in rows}
        assert "database write failed" in by_message, rows
        row = by_message["database write failed"]
        assert row["version"] == release and row["lines"] >= 1, row
        assert row["last_error"], row
    elif key == "QueueBacklogAgeAlarm":
        assert sum(r["invocations"] for r in rows) == 4, rows
        assert sum(r["records"] for r in rows) == 300 + 11, rows
    elif key == "RecordsRejectedAlarm":
        want = {m["reason"] for m in st["normal"] if m["reason"]}
        got = {r["reason"] for r in rows}
        assert want <= got and sum(r["records"] for r in rows) >= len(
            [m for m in st["normal"] if m["reason"]]), (want, rows)
        assert all(r["example"] for r in rows)
    elif key == "RecordsDriftedAlarm":
        assert rows and sum(r["records"] for r in rows) > 0, rows
        # The bodies that are no login record ({"foo", "bar"}) drifted: unknown names,
        # with the known fields they left out.
        assert any(r["unknown"] and r["missing"] for r in rows), rows
    elif key == "RecordsFailedAlarm":
        assert any((r["RecordsFailed"] or 0) > 0 for r in rows), rows
        assert any(r["message"] == "deadline reached before commit: nothing written"
                   for r in rows), rows
    elif key == "DurationNearTimeoutAlarm":
        durations = [r["durationMs"] for r in rows]
        assert durations and durations == sorted(durations, reverse=True), rows
        assert all(r["received"] and r["attempts"] >= 1 and r["version"] == release for r in rows)
    else:
        raise AssertionError(f"no check for the query {key!r}")


SCENARIO = {"Versions": "normal", "DeadLetterQueueDepthAlarm": "dead_lettered",
            "FunctionErrorsAlarm": "database_down", "DeployNewVersionErrorsAlarm": "database_down",
            "QueueBacklogAgeAlarm": "normal", "RecordsRejectedAlarm": "normal",
            "RecordsDriftedAlarm": "normal",
            "RecordsFailedAlarm": "deadline", "DurationNearTimeoutAlarm": "normal"}


def test_each_logs_insights_query_shows_the_cause_in_the_functions_own_lines():
    st = _setup()
    queries = docblocks.blocks(DOC, "logs-insights")
    assert len(queries) >= 9, queries
    ran = set()
    for q in queries:
        if q.needs_aws:
            continue
        key = q.first.lstrip("# ").split(":", 1)[0]
        assert key in SCENARIO, f"{q.where()}: no failure is known for the query {key!r}"
        rows = insights.run(q.text, st["logs"][SCENARIO[key]])
        try:
            _check_query(key, rows, st)
        except AssertionError as e:
            raise AssertionError(f"{q.where()} ({key}) does not show the cause: {e}") from None
        ran.add(key)
    assert ran == set(SCENARIO), set(SCENARIO) - ran


# --- the commands --------------------------------------------------------------------------
def _bin_dir():
    d = tempfile.mkdtemp(prefix="ops-bin-")
    atexit.register(subprocess.run, ["rm", "-rf", d])
    os.symlink(paths.RELEASE, os.path.join(d, "bootstrap"))
    return d


def _sh(block, role, db, extra=None):
    env = dict(os.environ, PATH=f"{_bin_dir()}:/usr/bin:/bin", **db.env(role),
               MASKING_KEY=proc.MASKING_KEY, MASKING_KEY_ID=proc.MASKING_KEY_ID, **(extra or {}))
    r = subprocess.run(["bash", "-euo", "pipefail", "-c", block.text], env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, f"{block.where()} failed as written:\n{r.stderr}"
    return r.stdout


def _sql(block, role, db, extra=None):
    r = db.run_file(block.text, role, extra_env=extra)
    assert r.returncode == 0, f"{block.where()} failed as written:\n{r.stderr}"
    return r.stdout


def _user_values():
    """USER's raw ip addresses (canonical) and device ids in events/batch.json."""
    event = json.loads((paths.EVENTS / "batch.json").read_text())
    ips, devices = set(), set()
    for r in event["Records"]:
        try:
            body = json.loads(r["body"])
        except ValueError:
            continue
        if isinstance(body, dict) and body.get("user_id") == USER:
            ips.add(expect.canonical_ip(body["ip"]))
            devices.add(body["device_id"])
    assert ips and devices
    return ips, devices


def _partitioned(db):
    """A schema `part` with user_logins partitioned by create_date as README says: this
    month, a month 13 months back, DEFAULT. Returns the settings that make it the one
    unqualified names find."""
    db.psql("DROP SCHEMA IF EXISTS part CASCADE; CREATE SCHEMA part; "
            "CREATE TABLE part.user_logins (LIKE public.user_logins) PARTITION BY RANGE (create_date); "
            "CREATE TABLE part.user_logins_default PARTITION OF part.user_logins DEFAULT; "
            "DO $$ DECLARE m date; BEGIN FOREACH m IN ARRAY ARRAY[date_trunc('month', now())::date, "
            "date_trunc('month', now() - interval '13 months')::date] LOOP "
            "EXECUTE format('CREATE TABLE part.%I PARTITION OF part.user_logins FOR VALUES FROM "
            "(%L) TO (%L)', 'user_logins_' || to_char(m, 'YYYY_MM'), m, "
            "(m + interval '1 month')::date); END LOOP; END $$")
    return {"PGOPTIONS": "-c search_path=part"}


def _partitions(db):
    return set(db.psql("SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                       "WHERE i.inhparent = 'part.user_logins'::regclass").split())


QUARANTINE_BLOCKS = ("-- as the master user: the quarantine by reason",
                     "# as the master user with the masking key: the body of the oldest",
                     "-- as the master user: the reprocess's role",
                     "# as the master user with the masking key: what reprocess would load",
                     "-- as the master user: purge the quarantine")


def _quarantined(st):
    """Records the function (quarantine, its default) stored in the deployed database's
    login_etl_rejected, made once: the generated messages that break a rule."""
    if "quarantined" not in st:
        messages = make_messages(40, seed=940, invalid_rate=0.3)
        with Etl(reset_db=False, env=dict(st["db"].env("login_etl"), REJECTED_RECORDS=None)) as etl:
            assert etl.answer(event_bytes(make_event(messages))) == set()
        st["quarantined"] = {m["messageId"]: m for m in messages if m["reason"]}
    return st["quarantined"]


def _run_quarantine_block(b, st):
    db, first = st["db"], b.first
    bad = _quarantined(st)
    if first.startswith("-- as the master user: the quarantine by reason"):
        out = _sql(b, deployed.MASTER, db).splitlines()
        by_reason = {line.split("|")[0]: int(line.split("|")[1]) for line in out}
        want = {}
        for m in bad.values():
            want[m["reason"]] = want.get(m["reason"], 0) + 1
        assert by_reason == want, (by_reason, want)
    elif first.startswith("# as the master user with the masking key: the body"):
        out = _sh(b, deployed.MASTER, db)
        assert out[:-1] in {m["body"] for m in bad.values()}, out[:200]
    elif first.startswith("-- as the master user: the reprocess's role"):
        _sql(b, deployed.MASTER, db)
        try:
            for table, priv in (("login_etl_rejected", "SELECT, DELETE"), ("user_logins", "INSERT")):
                assert db.scalar(f"SELECT has_table_privilege('login_etl_reprocess', '{table}', "
                                 f"'{priv}')") == "t", (table, priv)
        finally:
            db.psql("REVOKE ALL ON login_etl_rejected, user_logins FROM login_etl_reprocess; "
                    "DROP ROLE login_etl_reprocess")
    elif first.startswith("# as the master user with the masking key: what reprocess"):
        out = _sh(b, deployed.MASTER, db).splitlines()
        assert out[0].split()[:2] == ["reason", "stored"], out
        stored = sum(int(line.split()[1]) for line in out[1:] if len(line.split()) == 5)
        assert stored == len(bad), (out, len(bad))
    else:
        old = sorted(bad)[0]
        db.psql("UPDATE login_etl_rejected SET received_at = now() - interval '31 days' "
                f"WHERE message_id = '{old}'")
        _sql(b, deployed.MASTER, db)
        left = set(db.psql("SELECT message_id FROM login_etl_rejected").split())
        assert left == set(bad) - {old}, left


def test_every_command_runs_as_written_or_is_marked_as_needing_aws():
    st = _setup()
    db = st["db"]
    unrun = []
    for b in docblocks.blocks(DOC):
        if b.lang in ("logs-insights", "json", ""):
            continue
        if b.needs_aws:
            if b.lang == "sh":
                r = subprocess.run(["bash", "-n", "-c", b.text], capture_output=True, text=True)
                assert r.returncode == 0, f"{b.where()} is not valid shell: {r.stderr}"
            continue
        first = b.first
        if b.lang == "sh" and first.startswith("# the release of a bootstrap"):
            out = _sh(b, "login_etl", db)
            assert out.splitlines()[0] == f"login-etl {_release()} ({paths.HOST_ARCH})", out
        elif b.lang == "sh" and first.startswith("# as an analyst with the masking key: one user"):
            out = _sh(b, "alice", db).splitlines()
            ips, devices = _user_values()
            assert sorted(out) == sorted(ips | devices), (out, ips, devices)
        elif b.lang == "sh" and first.startswith("# as an analyst with the masking key: the logins"):
            out = _sh(b, "alice", db).splitlines()
            assert out and all(line.startswith(USER + "|") for line in out), out
        elif b.lang == "sql" and first.startswith("-- as the master user: who holds"):
            locker = _hold_lock(db, "SHARE", 3)
            try:
                out = _sql(b, deployed.MASTER, db)
            finally:
                locker.join()
            assert any("|ShareLock|t|" in line for line in out.splitlines()), out
        elif b.lang == "sql" and first.startswith("-- as the master user (psql 15 or later): the new"):
            new = "rotated-test-password"
            _sql(b, deployed.MASTER, db, {"NEW_LOGIN_ETL_PASSWORD": new})
            try:
                ok = subprocess.run(["psql", "-X", "-Atc", "SELECT current_user"], capture_output=True,
                                    text=True, env=dict(os.environ, **dict(db.env("login_etl"),
                                                                         PGPASSWORD=new)))
                assert ok.stdout.strip() == "login_etl", ok.stderr
                assert "password authentication failed" in db.refused("SELECT 1", "login_etl")
            finally:
                db.psql(f"ALTER ROLE login_etl PASSWORD '{deployed.PASSWORDS['login_etl']}'")
        elif b.lang == "sql" and first.startswith("-- as the master user: which of the dead-lettered"):
            ids = re.findall(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", b.text)
            assert len(ids) >= 2, ids
            committed = make_messages(1, seed=930, invalid_rate=0)[0]
            committed["messageId"] = ids[0]
            with Etl(reset_db=False, env=db.env("login_etl")) as etl:
                assert etl.answer(event_bytes(make_event([committed]))) == set()
            assert _sql(b, deployed.MASTER, db).split() == [ids[0]]
        elif b.lang == "sql" and first.startswith("-- as the master user: the ledger's entries"):
            out = _sql(b, deployed.MASTER, db).splitlines()
            assert sum(int(line.split("|")[1]) for line in out) == int(
                db.scalar(f"SELECT count(*) FROM {ledger.LEDGER}")) > 0, out
        elif b.lang == "sh" and first.startswith("# on the demo's rows (make demo)"):
            # In a directory laid out like the repository after `make demo`.
            with tempfile.TemporaryDirectory() as d:
                os.makedirs(os.path.join(d, ".demo"))
                os.makedirs(os.path.join(d, "build"))
                with open(os.path.join(d, ".demo", "masking-key"), "w") as f:
                    f.write(proc.MASKING_KEY + "\n")
                os.symlink(paths.RELEASE, os.path.join(d, "build", "bootstrap"))
                r = subprocess.run(["bash", "-euo", "pipefail", "-c", b.text], cwd=d,
                                   capture_output=True, text=True, timeout=60)
                assert r.returncode == 0, f"{b.where()} failed as written:\n{r.stderr}"
                out = r.stdout.split()
                assert out[0] == expect.mask("199.172.111.135", key_id="demo"), out
                assert out[1:] == ["199.172.111.135", "203.0.113.42"], out
        elif b.lang == "sh" and first.startswith("# the new key, 128 hex characters"):
            with tempfile.TemporaryDirectory() as d:
                r = subprocess.run(["bash", "-euo", "pipefail", "-c", b.text], cwd=d,
                                   env=dict(os.environ, HOME=d), capture_output=True, text=True,
                                   timeout=60)
                assert r.returncode == 0, f"{b.where()} failed as written:\n{r.stderr}"
                key = os.path.join(d, "new-key.hex")
                assert re.fullmatch(r"[0-9a-f]{128}", open(key).read()), b.where()
                assert os.stat(key).st_mode & 0o077 == 0, oct(os.stat(key).st_mode)
        elif b.lang == "sql" and first.startswith("-- as the master user: the rekey's role"):
            # Without the quarantine table (set aside, as a database set up before it has
            # none), then with it as deploy.md made it: the rekey re-masks it too.
            for quarantine in (False, True):
                if not quarantine:
                    db.psql("ALTER TABLE login_etl_rejected RENAME TO login_etl_rejected_aside")
                try:
                    _sql(b, deployed.MASTER, db)
                    assert db.scalar("SELECT has_table_privilege('login_etl_rekey', 'user_logins', "
                                     "'SELECT, UPDATE')") == "t", b.where()
                    if quarantine:
                        assert db.scalar("SELECT has_table_privilege('login_etl_rekey', "
                                         "'login_etl_rejected', 'SELECT, UPDATE')") == "t", b.where()
                finally:
                    if not quarantine:
                        db.psql("ALTER TABLE login_etl_rejected_aside RENAME TO login_etl_rejected")
                    db.psql("REVOKE ALL ON user_logins, login_etl_rejected FROM login_etl_rekey; "
                            "DROP ROLE login_etl_rekey")
        elif b.lang == "sql" and first.startswith("-- as the master user, before the first function"):
            # In a schema of its own, so the deployed user_logins stays as it is.
            db.psql("DROP SCHEMA IF EXISTS ddl CASCADE; CREATE SCHEMA ddl")
            _sql(b, deployed.MASTER, db, {"PGOPTIONS": "-c search_path=ddl"})
            parts = db.psql("SELECT count(*) FROM pg_inherits WHERE inhparent = "
                            "'ddl.user_logins'::regclass")
            db.psql("DROP SCHEMA ddl CASCADE")
            assert parts.strip() == "3", parts
        elif b.lang == "sql" and "on a user_logins partitioned by create_date" in first:
            extra = st.setdefault("part", _partitioned(db))
            months = db.psql("SELECT to_char(now() + interval '1 month', 'YYYY_MM'), "
                             "to_char(now() - interval '13 months', 'YYYY_MM')").split("|")
            nxt, old = (f"user_logins_{m.strip()}" for m in months)
            if "next month's partition" in first:
                for _ in range(2):  # again: nothing to do
                    _sql(b, deployed.MASTER, db, extra)
                    assert nxt in _partitions(db), _partitions(db)
            elif "drop the month 13 months back" in first:
                assert old in _partitions(db)
                _sql(b, deployed.MASTER, db, extra)
                assert old not in _partitions(db)
                assert db.scalar(f"SELECT to_regclass('part.{old}') IS NULL") == "t"
            elif "rows no month took" in first:
                assert _sql(b, deployed.MASTER, db, extra).strip() == "0"
            else:
                unrun.append(b)
        elif first.startswith(QUARANTINE_BLOCKS):
            _run_quarantine_block(b, st)
        else:
            unrun.append(b)
    assert not unrun, f"blocks neither run by this test nor marked `# needs AWS`: {unrun}"
    assert "part" in st, "the partition upkeep blocks were not found"
