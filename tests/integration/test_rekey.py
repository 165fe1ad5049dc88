"""`bootstrap rekey` (function/rekey.h) through the real bootstrap against the test
Postgres, checked from outside: every value is compared with Python's AESSIV
(tests/rig/keys.py), the README's duplicate-group query (tools/demo.py, DUPLICATES_SQL) must
return the same groups across the rotation, runs are killed with SIGKILL at random moments
and run again, and the real function keeps ingesting new messages and replays meanwhile."""
import ast
import collections
import csv
import io
import os
import random
import signal
import subprocess
import tempfile
import time

from events.generate import event_bytes, make_event, make_messages
from rig import expect, keys, ledger, paths, pg, proc
from rig.harness import ROW_COLUMNS, Etl, wait_for
from rig.keys import NEW, NEWER, OLD

ROTATED = keys.env(NEW, [OLD])  # after the rotation: NEW masks, OLD recovers the old rows
MASKED = ("masked_ip", "masked_device_id")

DDL = """CREATE TABLE user_logins(
    user_id             varchar(128),
    device_type         varchar(32),
    masked_ip           varchar(256),
    masked_device_id    varchar(256),
    locale              varchar(32),
    app_version         integer,
    create_date         date
)"""

PARTITIONED_DDL = DDL + """ PARTITION BY RANGE (create_date);
CREATE TABLE user_logins_2024_06 PARTITION OF user_logins
    FOR VALUES FROM ('2024-06-01') TO ('2024-07-01');
CREATE TABLE user_logins_2024_07 PARTITION OF user_logins
    FOR VALUES FROM ('2024-07-01') TO ('2024-08-01') PARTITION BY RANGE (create_date);
CREATE TABLE user_logins_2024_07a PARTITION OF user_logins_2024_07
    FOR VALUES FROM ('2024-07-01') TO ('2024-07-16');
CREATE TABLE user_logins_2024_07b PARTITION OF user_logins_2024_07
    FOR VALUES FROM ('2024-07-16') TO ('2024-08-01');
CREATE TABLE user_logins_default PARTITION OF user_logins DEFAULT;
"""


def duplicates_sql():
    """The analysts' duplicate-group query, as the README and `make demo` give it."""
    tree = ast.parse((paths.ROOT / "tools" / "demo.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "DUPLICATES_SQL":
            return ast.literal_eval(node.value)
    raise AssertionError("tools/demo.py has no DUPLICATES_SQL")


def rekey_env(db, settings=ROTATED):
    env = {"PATH": "/usr/bin:/bin", "ASAN_OPTIONS": proc.ASAN_OPTIONS,
           "UBSAN_OPTIONS": proc.UBSAN_OPTIONS}
    env.update(db.env())
    env.update({k: v for k, v in settings.items() if v is not None})
    return env


def run_rekey(db, *args, settings=ROTATED, timeout=600):
    """Runs `bootstrap rekey ARGS` to its end; returns the CompletedProcess (text)."""
    r = subprocess.run([str(paths.ASAN), "rekey", *args], env=rekey_env(db, settings),
                       capture_output=True, text=True, timeout=timeout)
    keys.assert_no_key(r.stdout + r.stderr, f"rekey {args}")
    assert "AddressSanitizer" not in r.stderr and "runtime error" not in r.stderr, r.stderr
    return r


def start_rekey(db, *args, settings=ROTATED):
    """Starts `bootstrap rekey ARGS`; returns the Popen, its output in temporary files."""
    out = tempfile.TemporaryFile()
    err = tempfile.TemporaryFile()
    p = subprocess.Popen([str(paths.ASAN), "rekey", *args], env=rekey_env(db, settings),
                         stdout=out, stderr=err, stdin=subprocess.DEVNULL)
    p.out, p.err = out, err
    return p


# Samples, every 2 ms until the rekey's session has come and gone (at most 5 minutes), the
# lock modes the rekey's sessions hold or wait for on any relation; prints "mode|samples".
LOCK_WATCH_SQL = """
CREATE TEMP TABLE rekey_locks (mode text);
DO $$ DECLARE t0 timestamptz := clock_timestamp(); seen bool := false; n int; BEGIN
  LOOP
    PERFORM pg_stat_clear_snapshot();
    INSERT INTO rekey_locks SELECT l.mode FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
      WHERE a.application_name = 'login-etl-rekey' AND l.locktype = 'relation';
    SELECT count(*) INTO n FROM pg_stat_activity WHERE application_name = 'login-etl-rekey';
    EXIT WHEN (seen AND n = 0) OR clock_timestamp() - t0 > interval '5 minutes';
    seen := seen OR n > 0;
    PERFORM pg_sleep(0.002);
  END LOOP; END $$;
SELECT mode, count(*) FROM rekey_locks GROUP BY 1;
"""


def watch_rekey_locks(db):
    """Starts LOCK_WATCH_SQL in psql; its answer comes from locks_seen()."""
    return subprocess.Popen(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-At", "-c",
                             LOCK_WATCH_SQL], env=db.superuser_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def locks_seen(watch):
    """{lock mode: samples} from a watch_rekey_locks() whose rekey has ended."""
    out, err = watch.communicate(timeout=60)
    assert watch.returncode == 0, err
    return {m: int(n) for m, n in (line.split("|") for line in out.split())}


def output_of(p):
    p.out.seek(0)
    p.err.seek(0)
    return p.out.read().decode(), p.err.read().decode()


def rows(db, table="user_logins"):
    cols = ", ".join(ROW_COLUMNS).replace("create_date", "create_date::text AS create_date")
    return db.query(f"SELECT {cols} FROM {table}")


def originals(db_rows, keyring=(OLD, NEW)):
    """The rows with each masked value recovered, as a multiset; a value that does not
    authenticate under the key its prefix names fails the test."""
    out = collections.Counter()
    for r in db_rows:
        r = dict(r)
        for c in MASKED:
            if r[c] is not None:
                r[c] = keys.unmask(keyring, r[c])
        out[tuple(r[c] for c in ROW_COLUMNS)] += 1
    return out


def under(key, counter):
    """A multiset of original rows, masked again under key: what the table must hold."""
    out = collections.Counter()
    idx = [ROW_COLUMNS.index(c) for c in MASKED]
    for row, n in counter.items():
        row = list(row)
        for i in idx:
            if row[i] is not None:
                row[i] = keys.mask(key, row[i])
        out[tuple(row)] += n
    return out


def as_counter(db_rows):
    return collections.Counter(tuple(r[c] for c in ROW_COLUMNS) for r in db_rows)


def load(db, messages, ddl=DDL, key=OLD):
    """Creates user_logins with ddl and loads the rows of the valid messages, masked under
    key by the oracle (faster than the function for tens of thousands of rows); returns
    their originals."""
    db.reset()
    db.psql(ddl)
    buf = io.StringIO()
    w = csv.writer(buf)
    want = collections.Counter()
    for m in messages:
        row = expect.row(m["body"], m["sentTimestamp"])
        if row is None:
            continue
        orig = {c: row[c] for c in ROW_COLUMNS}
        for c in MASKED:
            if row[c] is not None:
                orig[c] = keys.unmask([OLD], row[c])
                row[c] = keys.mask(key, orig[c])
        want[tuple(orig[c] for c in ROW_COLUMNS)] += 1
        w.writerow(["" if row[c] is None else row[c] for c in ROW_COLUMNS])
    db.psql("COPY user_logins FROM STDIN (FORMAT csv)", input=buf.getvalue())
    return want


def summary(r):
    lines = [l for l in r.stdout.splitlines() if l.startswith("rekey:")]
    assert len(lines) == 1, r.stdout
    return lines[0]


def test_rekey_remasks_every_value_and_keeps_the_duplicate_groups():
    """Rows loaded by the real function under the old key; after the rekey every value is
    the new key's mask of its original (AESSIV), nothing else changed, --verify passes, and
    the duplicate-group query returns the same groups, values mapped to the new key."""
    messages = make_messages(3000, seed=71, invalid_rate=0.02, duplicate_rate=0.2)
    with Etl() as etl:  # the rig's key, OLD: the key before the rotation
        for i in range(0, len(messages), 500):
            etl.answer(event_bytes(make_event(messages[i:i + 500])))
        db = etl.db
    # Nothing else may write while the rekey runs, so that it must not pause: autovacuum's
    # ANALYZE, which the rekey's own updates would start, takes a transaction id too.
    db.superuser("ALTER TABLE user_logins SET (autovacuum_enabled = false)")
    before = rows(db)
    want = originals(before, [OLD])
    groups_before = db.query(duplicates_sql())
    assert len(groups_before) > 20, "the data should hold duplicate groups"

    dry = run_rekey(db, "--dry-run")
    assert dry.returncode == 0, dry.stdout + dry.stderr
    n_ip = sum(1 for r in before if r["masked_ip"] is not None)
    n_dev = sum(1 for r in before if r["masked_device_id"] is not None)
    assert f"{len(before):,} rows, {len(before):,} with a value not under the current key k2" \
        in dry.stdout, dry.stdout
    line = next(l for l in dry.stdout.splitlines() if l.strip().startswith(f"{OLD.id} ("))
    assert line.split() == [OLD.id, "(retired)", f"{n_ip:,}", f"{n_dev:,}"], line
    assert as_counter(rows(db)) == as_counter(before), "--dry-run changed the table"
    v = run_rekey(db, "--verify")
    assert v.returncode == 1 and "FAILED" in v.stdout, v.stdout

    r = run_rekey(db, "--batch", "400")
    assert r.returncode == 0, r.stdout + r.stderr
    assert summary(r).startswith(f"rekey: done: {len(before):,} rows re-masked "
                                 f"({n_ip + n_dev:,} values) to key k2"), r.stdout
    assert "every value is under the current key" in summary(r)
    assert f"{len(before):,} of {len(before):,} rows (100.0%)" in r.stderr, r.stderr
    assert "paused" not in r.stdout and "are writing" not in r.stderr, "nothing else wrote"
    after = rows(db)
    assert as_counter(after) == under(NEW, want)
    assert all(r[c] is None or r[c].startswith("k2:") for r in after for c in MASKED)

    groups_after = db.query(duplicates_sql())

    def mapped(g):
        return (keys.mask(NEW, keys.unmask([OLD], g["masked_device_id"])),
                keys.mask(NEW, keys.unmask([OLD], g["masked_ip"])), g["logins"], g["users"])

    assert sorted(map(mapped, groups_before)) == sorted(
        (g["masked_device_id"], g["masked_ip"], g["logins"], g["users"]) for g in groups_after)
    assert run_rekey(db, "--verify").returncode == 0
    again = run_rekey(db)
    assert again.returncode == 0 and summary(again).startswith("rekey: done: 0 rows"), again.stdout
    assert as_counter(rows(db)) == as_counter(after), "a second run changed something"


def test_rekey_of_a_partitioned_table():
    """user_logins partitioned by create_date, two levels deep, with a DEFAULT partition:
    every partition is re-masked."""
    months = [make_messages(700, seed=72 + i, invalid_rate=0, start_ms=start)
              for i, start in enumerate((1_718_006_400_000, 1_719_900_000_000, 1_721_500_000_000,
                                         1_725_000_000_000))]
    messages = [m for g in months for m in g]
    db = pg.server()
    want = load(db, messages, PARTITIONED_DDL)
    placed = db.query("SELECT tableoid::regclass::text AS p, count(*) AS n FROM user_logins "
                      "GROUP BY 1")
    assert len(placed) == 4, placed  # June, July's two halves, the DEFAULT partition
    r = run_rekey(db, "--batch", "300")
    assert r.returncode == 0, r.stdout + r.stderr
    assert as_counter(rows(db)) == under(NEW, want)
    d = run_rekey(db, "--dry-run")
    assert "user_logins (4 heap relations)" in d.stdout, d.stdout


def test_rekey_killed_at_random_moments_then_finishes():
    """SIGKILL at random moments of runs slowed down so that the kills land mid-run (and
    one SIGTERM, which ends the run after the batch in progress with exit 3): after each,
    every value is its original under the old or the new key, nothing lost or added, and no
    run went faster than --max-rate (also one that starts past the blocks an earlier run
    re-masked, where its ranges grow wide); a last run finishes with every value the new
    key's mask of its original."""
    messages = make_messages(16000, seed=73, invalid_rate=0, duplicate_rate=0.1)
    db = pg.server()
    want = load(db, messages)
    total = sum(want.values())
    rnd = random.Random(7301)
    kills, mixed = 0, 0
    rate, batch = 3000, 300
    def done_now():
        return int(db.scalar("SELECT count(*) FROM user_logins WHERE masked_ip LIKE 'k2:%'"))

    for attempt in range(6):
        before = done_now()
        t0 = time.monotonic()
        p = start_rekey(db, "--batch", str(batch), "--max-rate", str(rate))
        # Each interruption lands mid-run whatever the machine's load: once this run has
        # committed something, after a random further moment.
        wait_for(lambda: done_now() > before or p.poll() is not None, timeout=60)
        time.sleep(rnd.uniform(0.0, 0.8))
        if attempt == 1:  # early, while most of the table is still to do
            p.send_signal(signal.SIGTERM)
            assert p.wait(timeout=60) == 3
            out, err = output_of(p)
            assert "rekey: stopped: interrupted" in out, out + err
        else:
            p.send_signal(signal.SIGKILL)
            p.wait(timeout=60)
            kills += p.returncode == -signal.SIGKILL
        took = time.monotonic() - t0
        now = rows(db)
        assert originals(now) == want, f"after interruption {attempt + 1} the rows differ"
        done = sum(1 for r in now if (r["masked_ip"] or "k2:").startswith("k2:"))
        # Paced after each transaction: at most one batch ahead of the rate, also in a run
        # whose first ranges, over rows an earlier run re-masked, grew wide.
        assert done - before <= rate * took + batch, (
            f"run {attempt + 1} re-masked {done - before} rows in {took:.2f} s, over --max-rate")
        mixed += 0 < done < total
        if done == total:
            break
    assert kills >= 2 and mixed >= 2, f"{kills} runs killed, {mixed} left the table half done"
    r = run_rekey(db)
    assert r.returncode == 0, r.stdout + r.stderr
    assert as_counter(rows(db)) == under(NEW, want)
    assert run_rekey(db, "--verify").returncode == 0


def test_two_runs_at_once_remask_each_row_once():
    """Two runs over the same rows at the same time: each row is re-masked by one of them
    (the compare-and-set write leaves a row another run changed), the counts of both add up
    to the rows, and every value is right."""
    messages = make_messages(8000, seed=74, invalid_rate=0)
    db = pg.server()
    want = load(db, messages)
    a = start_rekey(db, "--batch", "200")
    b = start_rekey(db, "--batch", "200")
    assert a.wait(timeout=300) == 0 and b.wait(timeout=300) == 0
    written = 0
    for p in (a, b):
        out, err = output_of(p)
        line = [l for l in out.splitlines() if l.startswith("rekey: done: ")][0]
        written += int(line.split()[2].replace(",", ""))
    assert written == sum(want.values()), written
    assert as_counter(rows(db)) == under(NEW, want)


def test_new_messages_and_replays_during_the_rekey_stay_exactly_once():
    """The rotation as it happens: messages loaded under the old key; the function deployed
    with the new keyset; while the rekey runs, the real function ingests new messages,
    replays of old batches and of new ones.  Afterwards each valid message is one row,
    every value the new key's mask, the ledger holds each id once, --verify passes; the
    rekey held no lock stronger than ROW EXCLUSIVE meanwhile."""
    old = make_messages(3000, seed=75, invalid_rate=0.02, duplicate_rate=0.15)
    new = make_messages(3000, seed=76, invalid_rate=0.02, duplicate_rate=0.15,
                        start_ms=old[-1]["sentTimestamp"] + 1000)
    with Etl() as etl:
        for i in range(0, len(old), 500):
            etl.answer(event_bytes(make_event(old[i:i + 500])))
    with Etl(env=ROTATED, reset_db=False) as etl:
        db = etl.db
        watch = watch_rekey_locks(db)
        p = start_rekey(db, "--batch", "100", "--max-rate", "600")
        running = []
        for i in range(0, len(new), 250):
            running.append(p.poll() is None)
            etl.answer(event_bytes(make_event(new[i:i + 250])))
            j = (i * 7) % len(old)
            etl.answer(event_bytes(make_event(old[j:j + 250], receive_count=2)))  # a replay
            if i >= 500:
                etl.answer(event_bytes(make_event(new[i - 500:i - 250], receive_count=2)))
        assert p.wait(timeout=300) == 0, output_of(p)
        out, err = output_of(p)
        # It noticed the function loading, and paused for it.
        assert "s paused while other sessions wrote" in out, out + err
        assert "s paused while other sessions wrote" in out, out
        assert all(running[:len(running) // 2]), \
            f"the rekey ended before half the ingestion: slow it down further ({running})"
        # It takes no lock that holds the function's COPY back (docs/operations.md): only
        # the reads' ACCESS SHARE and the writers' ROW EXCLUSIVE, which it was seen holding.
        modes = locks_seen(watch)
        assert set(modes) <= {"AccessShareLock", "RowExclusiveLock"}, modes
        assert modes.get("RowExclusiveLock", 0) > 0, modes
        got = rows(db)
    valid = [m for m in old + new if expect.row(m["body"], m["sentTimestamp"]) is not None]
    want = collections.Counter()
    for m in valid:
        row = expect.row(m["body"], m["sentTimestamp"])
        for c in MASKED:
            if row[c] is not None:
                row[c] = keys.mask(NEW, keys.unmask([OLD], row[c]))
        want[tuple(row[c] for c in ROW_COLUMNS)] += 1
    assert as_counter(got) == want
    ids = ledger.ids(db)
    assert len(ids) == len(set(ids)) and set(ids) == ledger.keys(valid)
    assert run_rekey(db, "--verify").returncode == 0


def test_what_cannot_be_remasked_is_left_and_reported():
    """Values under a key id the set lacks, values that are not masked at all (never
    printed), and values under a retired id that do not authenticate with the set's key
    for it are left as they are; the run says how many and exits 1, and so does --verify
    while the foreign ids remain."""
    db = pg.server()
    db.reset()
    db.psql(DDL)
    stray = keys.Key("k9", NEWER.hex)
    wrong = keys.Key(OLD.id, NEWER.hex)  # the retired id, another key
    secret_ip = "203.0.113.77"
    data = [("a", keys.mask(OLD, "1.1.1.1"), keys.mask(OLD, "111-11-1111")),
            ("b", keys.mask(stray, "2.2.2.2"), keys.mask(OLD, "222-22-2222")),
            ("c", secret_ip, None),
            ("d", keys.mask(wrong, "4.4.4.4"), None),
            ("e", None, keys.mask(NEW, "555-55-5555")),
            ("f", "2001:db8::1", keys.mask(OLD, "666-66-6666"))]
    buf = io.StringIO()
    csv.writer(buf).writerows([[u, "ios", ip or "", dev or "", "", "", "2024-06-10"]
                               for u, ip, dev in data])
    db.psql("COPY user_logins FROM STDIN (FORMAT csv)", input=buf.getvalue())
    d = run_rekey(db, "--dry-run")
    assert d.returncode == 0
    assert "k9 (not in the set)" in d.stdout and "(not masked values)" in d.stdout, d.stdout
    r = run_rekey(db)
    assert r.returncode == 1, r.stdout + r.stderr
    s = summary(r)
    assert s.startswith("rekey: incomplete: 3 rows re-masked (4 values)"), s
    assert "1 values do not authenticate" in s and "1 values under key ids not in the set" in s
    assert "values left under other key ids" in s, s
    for text in (d.stdout, d.stderr, r.stdout, r.stderr):
        assert secret_ip not in text and "2001:db8" not in text
    got = {x["user_id"]: x for x in rows(db)}
    assert got["a"]["masked_ip"] == keys.mask(NEW, "1.1.1.1")
    assert got["b"]["masked_ip"] == keys.mask(stray, "2.2.2.2")
    assert got["b"]["masked_device_id"] == keys.mask(NEW, "222-22-2222")
    assert got["c"]["masked_ip"] == secret_ip
    assert got["d"]["masked_ip"] == keys.mask(wrong, "4.4.4.4")
    assert got["e"]["masked_device_id"] == keys.mask(NEW, "555-55-5555")
    assert got["f"]["masked_ip"] == "2001:db8::1"
    assert got["f"]["masked_device_id"] == keys.mask(NEW, "666-66-6666")
    assert run_rekey(db, "--verify").returncode == 1
    # With k9 in the set, its value is re-masked too; the bad one under t1 stays.
    r = run_rekey(db, settings=keys.env(NEW, [OLD, stray]))
    assert r.returncode == 1 and summary(r).startswith("rekey: incomplete: 1 rows re-masked (1 "
                                                       "values)"), summary(r)
    assert {x["user_id"]: x for x in rows(db)}["b"]["masked_ip"] == keys.mask(NEW, "2.2.2.2")


def test_quarantine_table_bodies_are_remasked_too():
    """login_etl_rejected (the quarantine of rejected records, when it exists): its masked_*
    columns are re-masked like user_logins'."""
    db = pg.server()
    load(db, make_messages(50, seed=77, invalid_rate=0))
    db.psql("DROP TABLE IF EXISTS login_etl_rejected; CREATE TABLE login_etl_rejected("
            "message_id uuid, sent_at timestamptz, received_at timestamptz, reason text, "
            "masked_body text)")
    bodies = [m["body"] for m in make_messages(40, seed=78, invalid_rate=1.0)
              if len(m["body"].encode()) <= 512]
    buf = io.StringIO()
    csv.writer(buf).writerows([[f"00000000-0000-4000-8000-{i:012d}", "2024-06-10 08:00:00+00",
                                "2024-06-10 08:00:01+00", "user_id_missing",
                                keys.mask(OLD, b)] for i, b in enumerate(bodies)])
    db.psql("COPY login_etl_rejected FROM STDIN (FORMAT csv)", input=buf.getvalue())
    try:
        d = run_rekey(db, "--dry-run")
        assert "login_etl_rejected (1 heap relation)" in d.stdout, d.stdout
        r = run_rekey(db)
        assert r.returncode == 0, r.stdout + r.stderr
        got = sorted(x["masked_body"] for x in db.query("SELECT masked_body FROM login_etl_rejected"))
        assert got == sorted(keys.mask(NEW, b) for b in bodies)
    finally:
        db.psql("DROP TABLE login_etl_rejected")


def test_settings_usage_and_failures():
    db = pg.server()
    load(db, make_messages(20, seed=79, invalid_rate=0))
    cases = [
        (["--bogus"], ROTATED, 2, "unknown or repeated option"),
        (["--batch", "5"], ROTATED, 2, "--batch takes a number from 100"),
        (["--max-rate"], ROTATED, 2, "--max-rate takes a number"),
        (["--dry-run", "--verify"], ROTATED, 2, "unknown or repeated option"),
        ([], {"MASKING_KEY": None, "MASKING_KEY_ID": None}, 2, "no masking key"),
        ([], dict(ROTATED, MASKING_KEYS_RETIRED=f"k2={OLD.hex}"), 2, "is the current key's"),
        ([], dict(ROTATED, MASKING_KEY=None, MASKING_KEY_SECRET_ID="arn:x"), 2,
         "set MASKING_KEY to the secret's value"),
        ([], dict(ROTATED, DB_SECRET_ID="arn:y"), 2, "give DATABASE_URL or the PG* variables"),
    ]
    for args, settings, status, needle in cases:
        r = run_rekey(db, *args, settings=settings)
        assert r.returncode == status and needle in r.stderr + r.stdout, (args, r.returncode,
                                                                         r.stdout, r.stderr)
    h = run_rekey(db, "--help")
    assert h.returncode == 0 and "--dry-run" in h.stdout and "exit status" in h.stdout
    # No database there: stopped, exit 3, libpq's words and no password.
    env_down = dict(ROTATED, PGPORT=str(pg.free_port()))
    r = subprocess.run([str(paths.ASAN), "rekey"], env=dict(rekey_env(db), **env_down),
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 3 and "rekey: stopped: connect:" in r.stdout, r.stdout + r.stderr
    assert pg.PASSWORD not in r.stdout + r.stderr
    # A role that may read but not update: stopped, with the SQLSTATE and what it needs.
    db.psql("DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'rekey_ro') "
            "THEN CREATE ROLE rekey_ro LOGIN PASSWORD 'rekey-ro-password'; END IF; END $$",
            user=pg.SUPERUSER, password=pg.SUPERPASS)
    db.psql("GRANT SELECT ON user_logins TO rekey_ro")
    r = run_rekey(db, settings=dict(ROTATED, PGUSER="rekey_ro", PGPASSWORD="rekey-ro-password"))
    assert r.returncode == 3 and "42501" in r.stdout and "UPDATE" in r.stdout, r.stdout
    # No user_logins: the wrong database.
    db.reset()
    r = run_rekey(db)
    assert r.returncode == 2 and "user_logins not found" in r.stderr, r.stderr


def test_rekey_and_keyset_commands_under_valgrind():
    """The plain build under memcheck: a dry run, a run, a verify, a refused keyset and an
    unmask under a retired key; no error, nothing lost."""
    from rig import valgrind
    valgrind.require()
    if not paths.PLAIN.exists():
        subprocess.run(["make", "-C", str(paths.ROOT), "--no-print-directory",
                        "build/plain/bootstrap"], check=True, stdout=subprocess.DEVNULL)
    db = pg.server()
    want = load(db, make_messages(1500, seed=80, invalid_rate=0))
    runs = [(["rekey", "--dry-run"], ROTATED, 0), (["rekey", "--batch", "300"], ROTATED, 0),
            (["rekey", "--verify"], ROTATED, 0),
            (["rekey"], dict(ROTATED, MASKING_KEYS_RETIRED=f"k2={OLD.hex}"), 2),
            (["unmask", keys.mask(OLD, "1.2.3.4")], keys.env(NEW, [OLD], as_document=True), 0)]
    with tempfile.TemporaryDirectory() as tmp:
        for i, (args, settings, status) in enumerate(runs):
            log = os.path.join(tmp, f"valgrind-{i}.log")
            env = rekey_env(db, settings)
            r = subprocess.run(valgrind.command(log) + [str(paths.PLAIN)] + args, env=env,
                               capture_output=True, text=True, timeout=600)
            valgrind.assert_clean(log, r.returncode, expect_status=status)
    assert as_counter(rows(db)) == under(NEW, want)


def test_quarantined_bodies_of_any_length_are_remasked_by_the_function_s_table():
    """The quarantine the function itself keeps (login_etl_rejected.masked_body, whole
    bodies masked, some far over the 512 bytes of a column's value): rekey re-masks every
    one under the current key, and the result is the current key's mask of the body."""
    db = pg.server()
    db.reset()
    bodies = ['{"user_id": "u1", "ip": "not-an-ip"}',
              '{"user_id": "u2", "ip": "999.1.1.1", "note": "' + "n" * 600 + '"}',
              '{"user_id": "u3", "ip": "bad", "pad": "' + "p" * 40000 + '"}']
    with Etl(reset_db=False, env=dict(keys.env(OLD), REJECTED_RECORDS=None)) as etl:
        assert etl.answer(event_bytes(make_event(
            [{"messageId": f"q{i}", "body": b, "sentTimestamp": 1718006400000}
             for i, b in enumerate(bodies)]))) == set()
    got = db.query("SELECT message_id, masked_body FROM login_etl_rejected ORDER BY message_id")
    assert [g["masked_body"] for g in got] == [keys.mask(OLD, b) for b in bodies]
    r = run_rekey(db)
    assert r.returncode == 0, r.stdout + r.stderr
    got = db.query("SELECT message_id, masked_body FROM login_etl_rejected ORDER BY message_id")
    assert [g["masked_body"] for g in got] == [keys.mask(NEW, b) for b in bodies]
    assert run_rekey(db, "--verify").returncode == 0
    db.reset()
