"""A fleet on one database: many bootstraps at once, behind a transaction-mode
pooler with fewer server connections than functions, on overlapping batches.

Each bootstrap has its own Runtime API emulator (as each Lambda execution
environment has its own); all of them reach the server through one pgbouncer
(pool_mode = transaction, 3 server connections for 8 functions), so server
connections pass from one function to another between transactions.  That is
only safe, and RDS Proxy only multiplexes, when the function keeps nothing in
the session: the server's own statement log is read back and every statement
of the function's backends is checked (tests/rig/statement_log.py)."""
import atexit
import subprocess

from events.generate import event_bytes, make_event, make_messages
from rig import exactly_once, pg, pgbouncer, proc, runtime_api, statement_log

FUNCTIONS = 8
POOL = 3
PER_EVENT = 200

_srv = None


def _server():
    """This module's own server (not the shared one): its statement log must hold
    only what these tests sent.  deadlock_timeout is short because batches that
    share messages in opposite orders can deadlock, which the function retries."""
    global _srv
    if _srv is None:
        _srv = pg.Server(conf=statement_log.SERVER_CONF + ["deadlock_timeout = '100ms'"])
        atexit.register(_srv.destroy)
    return _srv


def _batches(messages):
    """Two events per function, every message in exactly two events of two
    different functions.  Function b gets E_b (messages [200b, 200b+200)) and F,
    the 200 messages from the middle of E_{b+4} to the middle of E_{b+5}, in
    reverse order (so that two transactions lock shared ids in opposite orders);
    odd functions take F first."""
    n = len(messages)
    plan = []
    for b in range(FUNCTIONS):
        e = messages[b * PER_EVENT:(b + 1) * PER_EVENT]
        start = ((b + 4) % FUNCTIONS) * PER_EVENT + PER_EVENT // 2
        f = [messages[(start + i) % n] for i in range(PER_EVENT)][::-1]
        plan.append([e, f] if b % 2 == 0 else [f, e])
    return plan


def _run_fleet(db_env, messages):
    """Runs FUNCTIONS bootstraps on the plan of _batches with db_env as their
    database; as SQS would, delivers again whatever an answer listed that is valid,
    and the whole batch of an invocation that failed, until nothing valid is
    left.  Returns (bootstraps, emulators, rounds, invocation errors)."""
    plan = _batches(messages)
    emus = [runtime_api.Emulator() for _ in range(FUNCTIONS)]
    boots = [proc.Bootstrap(emu.address, env=db_env) for emu in emus]
    try:
        for emu in emus:
            emu.wait_polling(1, timeout=30)
        # Queue everything at once: the functions start together.
        pending = []
        for b, events in enumerate(plan):
            for msgs in events:
                pending.append((b, msgs, emus[b].enqueue(event_bytes(make_event(msgs)))))
        rounds = errors = 0
        while pending:
            rounds += 1
            assert rounds <= 6, "messages still listed after 5 redeliveries"
            again = []
            for b, msgs, rid in pending:
                res = emus[b].wait_result(rid, timeout=120)
                must = exactly_once.listed_for(msgs)
                if res.kind == "response":
                    listed = res.failures()
                    assert must <= listed, (f"function {b} did not list "
                                            f"{len(must - listed)} bad ones")
                else:
                    errors += 1
                    listed = {m["messageId"] for m in msgs}
                retry = [m for m in msgs if m["messageId"] in listed - must]
                if retry:
                    again.append((b, retry, emus[b].enqueue(
                        event_bytes(make_event(retry, receive_count=rounds + 1)))))
            pending = again
        return boots, emus, rounds, errors
    except BaseException:
        for bt in boots:
            bt.stop()
        for emu in emus:
            emu.close()
        raise


def _stop(boots, emus):
    for b, (bt, emu) in enumerate(zip(boots, emus)):
        alive = bt.alive()
        bt.stop()
        emu.close()
        report = bt.sanitizer_report()
        assert report is None, f"function {b}: sanitizer report:\n{report}"
        assert alive, f"function {b} exited early:\n{bt.output()[-3000:]}"


def test_fleet_behind_transaction_pooler_exactly_once_without_session_state():
    srv = _server()
    srv.reset()
    messages = make_messages(FUNCTIONS * PER_EVENT, seed=91, invalid_rate=0.03,
                             duplicate_rate=0.05)
    book = exactly_once.Sent()
    book.add(messages)
    # A fresh database: the fleet's first batches also race to create the
    # tables, as when a new deployment starts with a full queue.
    with pgbouncer.Bouncer(srv, pool_size=POOL) as bouncer:
        seen_before = len(statement_log.read(srv))
        boots, emus, rounds, errors = _run_fleet(bouncer.env(), messages)
        try:
            clients = [c for c in bouncer.admin("SHOW CLIENTS") if c.get("user") == pg.USER]
            assert len(clients) == FUNCTIONS, f"{len(clients)} functions connected to the pooler"
        finally:
            _stop(boots, emus)
    exactly_once.assert_database(srv, book, "8 functions behind pgbouncer")
    log = statement_log.read(srv)[seen_before:]
    sessions = statement_log.function_sessions(log)
    # Multiplexed: the 8 functions were served by at most POOL server backends.
    assert 1 <= len(sessions) <= POOL, f"{len(sessions)} server backends served the functions"
    copies = [e for e in log if e.session in sessions and "COPY" in e.sql.upper()]
    assert len(copies) >= 2 * FUNCTIONS, "the statement log does not hold the functions' writes"
    bad = statement_log.session_state(log)
    assert not bad, ("the function changed session state behind a transaction-mode pooler:\n"
                     + statement_log.describe(bad))
    # The functions' own account agrees: each valid message written once, and
    # its other delivery found to be a duplicate (more when a batch came back).
    done = [l for bt in boots for l in bt.logs()
            if isinstance(l, dict) and l.get("message") == "batch done"]
    valid = len(book.valid())
    assert sum(l["written"] for l in done) == valid, done[:3]
    assert sum(l["duplicate"] for l in done) >= valid, done[:3]
    retries = sum(1 for bt in boots for l in bt.logs()
                  if isinstance(l, dict) and l.get("message") == "database attempt failed")
    print(f"     fleet: {len(sessions)} server backends for {FUNCTIONS} functions, "
          f"{retries} failed database attempts, {errors} failed invocations, {rounds} delivery "
          "rounds")


def test_statement_log_check_catches_session_state():
    """The check above is not vacuous: the same log reader and rules, on what a
    client under the function's application_name sends through the same
    pooler, find each kind of session state and pass transaction-scoped ones."""
    srv = _server()
    bad_sql = ["SET idle_in_transaction_session_timeout = 60000",
               "PREPARE q AS SELECT 1", "EXECUTE q",
               "CREATE TEMP TABLE t (x int)",
               "SELECT pg_advisory_lock(42)",
               "LISTEN login_etl",
               "BEGIN; SET statement_timeout = 1000; COMMIT",
               "SELECT set_config('work_mem', '8MB', false)",
               "SET LOCAL work_mem = '8MB'"]
    good_sql = ["BEGIN; SET LOCAL statement_timeout = 1000; SELECT pg_advisory_xact_lock(7); "
                "COMMIT",
                "DO $$ BEGIN PERFORM 1; END $$",
                "SELECT 'SET x = 1; PREPARE' AS not_a_statement"]
    with pgbouncer.Bouncer(srv, pool_size=1) as bouncer:
        before = len(statement_log.read(srv))
        env = dict(bouncer.env(), PGAPPNAME=statement_log.APP, PATH="/usr/bin:/bin")
        for sql in good_sql + bad_sql:
            r = subprocess.run(["psql", "-X", "-q", "-c", sql], env=env, capture_output=True,
                               text=True)
            assert r.returncode == 0 or "PREPARE" in sql, r.stderr
    log = statement_log.read(srv)[before:]
    bad = statement_log.session_state(log)
    flagged = {stmt for _, stmt, _ in bad}
    for sql in bad_sql:
        if sql == "EXECUTE q":
            continue  # its PREPARE is what is flagged
        last = statement_log.split_sql(sql)[1 if sql.startswith("BEGIN") else 0]
        assert last in flagged, f"not flagged: {sql!r}; flagged: {flagged}"
    for sql in good_sql:
        for stmt in statement_log.split_sql(sql):
            assert stmt not in flagged, f"flagged wrongly: {stmt!r}"
    assert statement_log.split_sql("SELECT 'a;b'; SELECT $x$;$x$; -- c;\nSELECT 1") == [
        "SELECT 'a;b'", "SELECT $x$;$x$", "SELECT 1"]
