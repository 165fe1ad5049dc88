"""`bootstrap reprocess`: the quarantined records validated again under the current rules,
the now-valid ones loaded into user_logins exactly once and taken out of quarantine, the
rest left; --dry-run counts by reason and changes nothing. The rule change here is a CHECK
constraint on user_logins that refused rows (database_rejected) and is then dropped."""
import subprocess

from events.generate import event_bytes, make_event
from rig import keys, paths, proc
from rig.harness import Etl
from rig.messages import msg

QUARANTINE = {"REJECTED_RECORDS": None}


def _login(mid, user, **fields):
    body = {"user_id": user, "device_type": "ios", "ip": "192.0.2.7", "device_id": f"d-{mid}",
            "locale": "en_US", "app_version": "3.1.4"}
    body.update(fields)
    return msg(mid, body)


def _reprocess(db, *args):
    env = dict(db.env(), PATH="/usr/bin:/bin", MASKING_KEY=proc.MASKING_KEY,
               MASKING_KEY_ID=proc.MASKING_KEY_ID)
    return subprocess.run([str(paths.ASAN), "reprocess", *args], env=env, capture_output=True,
                          text=True, timeout=120)


def _counts(out):
    """The summary's rows: reason -> (stored, loaded/would, invalid, refused)."""
    rows = {}
    for line in out.splitlines()[1:]:
        f = line.split()
        if len(f) == 5 and f[1].isdigit():
            rows[f[0]] = tuple(int(x) for x in f[1:])
    return rows


def test_a_rule_change_lets_reprocess_load_the_quarantined_rows_once():
    refused = [_login(f"r{i}", f"refuse-{i}") for i in range(3)]
    bad_ip = _login("bad-ip", "u-ip", ip="999.1.1.1")
    ev = make_event([_login("ok", "user-ok")] + refused + [bad_ip, _login("bad-sent", "u-sent")])
    ev["Records"][-1]["attributes"]["SentTimestamp"] = "yesterday"  # sent_timestamp_invalid
    event = event_bytes(ev)
    with Etl(env=QUARANTINE) as etl:
        db = etl.db
        assert etl.answer(event_bytes(make_event([_login("warm", "user-warm")]))) == set()
        db.superuser("ALTER TABLE user_logins ADD CONSTRAINT no_refuse "
                     "CHECK (user_id NOT LIKE 'refuse-%')")
        assert etl.answer(event) == set()
        assert db.scalar("SELECT count(*) FROM login_etl_rejected") == "5"

        # Still refused: the dry run says so and changes nothing.
        r = _reprocess(db, "--dry-run")
        assert r.returncode == 0, r.stderr
        assert _counts(r.stdout) == {"database_rejected": (3, 0, 0, 3), "ip_invalid": (1, 0, 1, 0),
                                   "sent_timestamp_invalid": (1, 0, 1, 0)}

        db.superuser("ALTER TABLE user_logins DROP CONSTRAINT no_refuse")
        r = _reprocess(db, "--dry-run")
        assert _counts(r.stdout) == {"database_rejected": (3, 3, 0, 0), "ip_invalid": (1, 0, 1, 0),
                                   "sent_timestamp_invalid": (1, 0, 1, 0)}
        assert db.scalar("SELECT count(*) FROM login_etl_rejected") == "5"
        assert etl.count() == 2

        r = _reprocess(db)
        assert r.returncode == 0, r.stderr
        assert _counts(r.stdout) == {"database_rejected": (3, 3, 0, 0), "ip_invalid": (1, 0, 1, 0),
                                   "sent_timestamp_invalid": (1, 0, 1, 0)}
        rows = {x["user_id"]: x for x in etl.rows()}
        assert sorted(rows) == ["refuse-0", "refuse-1", "refuse-2", "user-ok", "user-warm"]
        assert rows["refuse-1"]["masked_ip"] == keys.mask(keys.OLD, "192.0.2.7")
        assert rows["refuse-1"]["masked_device_id"] == keys.mask(keys.OLD, "d-r1")
        assert rows["refuse-1"]["create_date"] == "2024-06-10"
        assert rows["refuse-1"]["app_version"] == 3001004
        assert sorted(x["message_id"] for x in db.query(
            "SELECT message_id FROM login_etl_rejected")) == ["bad-ip", "bad-sent"]

        # Again: nothing more; and the queue bringing the messages back writes nothing.
        r = _reprocess(db)
        assert _counts(r.stdout) == {"ip_invalid": (1, 0, 1, 0),
                                     "sent_timestamp_invalid": (1, 0, 1, 0)}
        assert etl.answer(event) == set()
        assert etl.count() == 5
        assert db.scalar("SELECT count(*) FROM login_etl_rejected") == "2"
        assert "refuse-" not in r.stdout + r.stderr


def test_reprocess_pages_through_a_large_quarantine_and_a_second_run_finds_nothing():
    """1,200 records (three pages of 500, all stored in one transaction, so with one
    received_at: the pages are told apart by message_id)."""
    msgs = [_login(f"p{i:04d}", f"refuse-{i}") for i in range(1200)]
    with Etl(env=QUARANTINE) as etl:
        db = etl.db
        assert etl.answer(event_bytes(make_event([_login("warm", "user-warm")]))) == set()
        db.superuser("ALTER TABLE user_logins ADD CONSTRAINT no_refuse "
                     "CHECK (user_id NOT LIKE 'refuse-%')")
        assert etl.answer(event_bytes(make_event(msgs))) == set()
        assert db.scalar("SELECT count(DISTINCT received_at) FROM login_etl_rejected") == "1"
        db.superuser("ALTER TABLE user_logins DROP CONSTRAINT no_refuse")
        r = _reprocess(db)
        assert r.returncode == 0, r.stderr
        assert _counts(r.stdout) == {"database_rejected": (1200, 1200, 0, 0)}
        assert etl.count() == 1201
        assert db.scalar("SELECT count(DISTINCT user_id) FROM user_logins") == "1201"
        r = _reprocess(db)
        assert r.returncode == 0 and _counts(r.stdout) == {}, r.stdout


def test_two_reprocess_runs_at_once_load_each_record_once():
    msgs = [_login(f"c{i:04d}", f"refuse-{i}") for i in range(800)]
    with Etl(env=QUARANTINE) as etl:
        db = etl.db
        assert etl.answer(event_bytes(make_event([_login("warm", "user-warm")]))) == set()
        db.superuser("ALTER TABLE user_logins ADD CONSTRAINT no_refuse "
                     "CHECK (user_id NOT LIKE 'refuse-%')")
        assert etl.answer(event_bytes(make_event(msgs))) == set()
        db.superuser("ALTER TABLE user_logins DROP CONSTRAINT no_refuse")
        env = dict(db.env(), PATH="/usr/bin:/bin", MASKING_KEY=proc.MASKING_KEY,
                   MASKING_KEY_ID=proc.MASKING_KEY_ID)
        runs = [subprocess.Popen([str(paths.ASAN), "reprocess"], env=env, text=True,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                for _ in range(2)]
        outs = [p.communicate(timeout=120) for p in runs]
        assert [p.returncode for p in runs] == [0, 0], outs
        loaded = sum(_counts(o)["database_rejected"][1] for o, _ in outs if _counts(o))
        assert loaded == 800, outs
        assert etl.count() == 801
        assert db.scalar("SELECT count(DISTINCT user_id) FROM user_logins") == "801"
        assert db.scalar("SELECT count(*) FROM login_etl_rejected") == "0"
