/* pg_retention.c - the ledger's retention: once per UTC day per process (and
 * at its first batch), the day slot that no redelivery can need any more is
 * cleared.
 *
 * A step is sent once a COMMIT's answer is in (the server sends a query
 * string's answers only when the whole string is done, so retention in the
 * COMMIT's string would hold the COMMIT's answer back), in a transaction of
 * its own with lock and statement timeouts, so that an operator's lock holds
 * up nothing; its answer is read by the next batch, before its BEGIN
 * (pg_retention_collect, from the COPY engine).  Each answer row starts with
 * a tag saying what it answers.  On day d:
 *
 * 1. RET_CHECK_SQL: is slot (d + 2) mod LEDGER_SLOTS empty?  max(sent_at)
 *    through the slot's index, under an ACCESS SHARE lock only, so that a
 *    fleet of processes finding it empty (all but the first) never queue
 *    for the lock TRUNCATE takes.  The same step deletes the expired entries
 *    of slot SLOT_NONE (few: SQS always sends SentTimestamp), markers kept.
 * 2. RET_TRUNCATE_SQL, when it was not empty: in one round trip (a process
 *    frozen by Lambda between two round trips would hold the lock), LOCK
 *    the slot's partition, re-check under the lock that every entry was
 *    sent and committed over LEDGER_RETENTION ago (else SQLSTATE 55000: a
 *    clock far off, or a message committed long after it was sent), and
 *    TRUNCATE it.
 * 3. RET_SWEEP_SQL, when TRUNCATE is refused (42501: a least-privilege user
 *    without TRUNCATE on the partition) or the slot holds young entries: the
 *    slot is swept by range DELETEs in key order, one bounded step a batch,
 *    of the entries sent and committed over LEDGER_RETENTION ago.
 *
 * Locks (PostgreSQL 15, checked in pg_locks): a batch's ledger COPY into the
 * parent locks the parent and only the partitions its rows are routed to
 * (ROW EXCLUSIVE); the duplicate lookup and UNLEDGER_SQL lock only the
 * slots of the batch (ACCESS SHARE / ROW EXCLUSIVE: pruned at planning); a
 * slot's TRUNCATE takes ACCESS EXCLUSIVE on that partition and its index
 * only, not on the parent.  A batch writes today's slot, yesterday's and
 * SLOT_NONE, never slot d + 2 (its messages would have to be 16 days old or
 * two days ahead), so a batch and a TRUNCATE do not meet; if they ever do
 * (a clock far off), lock_timeout ends the TRUNCATE's wait after
 * 200 ms, and a batch queued behind its lock request waits no longer
 * than that, while the TRUNCATE itself holds its lock for milliseconds.
 *
 * What to send and what an answer means are pure functions of struct
 * pg_retention and the clock's readings (pg_retention_plan,
 * pg_retention_answer, pg_retention_failed: tests/unit/test_pg_retention.c);
 * pg_retention_send and pg_retention_collect put them on the connection. */
#define _DEFAULT_SOURCE
#include "pg_int.h"

#include <stdio.h>
#include <string.h>

#include "clock.h"
#include "num.h"

#define RET_BEGIN_SQL "BEGIN; SET LOCAL lock_timeout = 200; SET LOCAL statement_timeout = 10000; "
#define RET_CHECK_SQL "SELECT 'slot', max(sent_at) IS NOT NULL FROM " LEDGER " WHERE slot = %d; "
#define RET_NONE_SQL                                                                               \
    "WITH d AS (DELETE FROM " LEDGER " WHERE slot = " SLOT_NONE_SQL                                \
    " AND ctid = ANY(ARRAY(SELECT ctid FROM " LEDGER " WHERE slot = " SLOT_NONE_SQL                \
    " AND committed_at < now() - interval '" LEDGER_RETENTION "' "                                 \
    "AND message_id NOT IN " MARKERS " LIMIT 20000)) RETURNING 1) "                                \
    "SELECT 'deleted', count(*) FROM d; "
/* The re-check reads the slot's newest sent_at through its index and the
 * newest committed_at by one aggregate over the slot (no index serves it,
 * and one on every insert would cost more than this scan once a day), and
 * makes sure the partition holds only its own slot (its name is what
 * TRUNCATE goes by; see VERIFY_SQL, pg_schema.c).  Its one argument is the
 * slot, named by each %1$ conversion. */
#define RET_TRUNCATE_SQL                                                                           \
    "LOCK TABLE " LEDGER "_s%1$02d IN ACCESS EXCLUSIVE MODE; "                                     \
    "DO $$ BEGIN IF (SELECT max(sent_at) FROM " LEDGER "_s%1$02d WHERE slot = %1$d) >= now() - "   \
    "interval '" LEDGER_RETENTION "' OR (SELECT max(committed_at) FROM " LEDGER "_s%1$02d) >= "    \
    "now() - interval '" LEDGER_RETENTION "' OR EXISTS (SELECT 1 FROM " LEDGER "_s%1$02d "         \
    "WHERE slot < %1$d OR slot > %1$d) THEN RAISE SQLSTATE '55000'; END IF; END $$; "              \
    "TRUNCATE " LEDGER "_s%1$02d; SELECT 'truncated'; "
/* A sweep step goes from where the previous step stopped (%2$s: a bound on
 * sent_at) to the sent_at %3$zu entries further on (an index-only scan) or
 * to LEDGER_RETENTION ago, whichever comes first, and deletes the entries
 * there committed over LEDGER_RETENTION ago, in slot %1$d.  One range
 * DELETE costs less than looking at the entries first and deleting them by
 * ctid (measured: tests/bench/README.md).  Its answer: the entries deleted,
 * the bound where the next step starts (us since the Unix epoch; NULL for
 * -infinity) and whether the sweep reached its end. */
#define RET_SWEEP_SQL                                                                              \
    "WITH w AS MATERIALIZED (SELECT coalesce((SELECT sent_at FROM " LEDGER " WHERE slot = %1$d "   \
    "AND sent_at %2$s ORDER BY sent_at OFFSET %3$zu LIMIT 1), 'infinity') AS probe, "              \
    "now() - interval '" LEDGER_RETENTION "' AS cap), "                                            \
    "h AS MATERIALIZED (SELECT least(probe, cap) AS hi, probe >= cap AS last FROM w), "            \
    "d AS (DELETE FROM " LEDGER " WHERE slot = %1$d AND sent_at %2$s "                             \
    "AND sent_at < (SELECT hi FROM h) "                                                            \
    "AND committed_at < now() - interval '" LEDGER_RETENTION "' RETURNING 1) "                     \
    "SELECT 'swept', (SELECT count(*) FROM d), (SELECT CASE WHEN hi > '-infinity' "                \
    "THEN (extract(epoch FROM hi) * 1000000)::int8 END FROM h), (SELECT last FROM h); "
#define PRUNE_MIN 1000     /* entries a sweep step goes over, at least ... */
#define PRUNE_MAX 20000    /* ... and at most; otherwise twice the rows just written */
#define RET_RETRY_MS 60000 /* a retention step that failed is tried again after this */
/* The longest step pg_retention_plan writes, with room to spare. */
#define RET_SQL_MAX (sizeof RET_SWEEP_SQL + sizeof RET_BEGIN_SQL + 300)

/* A process's retention before its first batch: no day seen to yet.
 * Cannot fail. */
void pg_retention_init(struct pg_retention *r, struct logger *lg)
{
    memset(r, 0, sizeof *r);
    r->lg = lg;
    r->day = -1;
}

/* The day's retention is over: its slot was found empty, truncated or swept
 * to its end (or cannot be, for lack of privileges).  Cannot fail. */
static void ret_done(struct pg_retention *r)
{
    r->day = r->for_day;
    r->stage = RET_IDLE;
}

/* The slot is to be swept by DELETE, from its oldest entry.  Cannot fail. */
static void start_sweep(struct pg_retention *r)
{
    r->stage = RET_SWEEP;
    r->prune_from = INT64_MIN;
    r->prune_past = 0;
}

/* Moves the slot's sweep on after one step that deleted `deleted` entries
 * and stopped at sent_at `next` (INT64_MIN: -infinity); `last`: it reached
 * the end.  Cannot fail. */
static void advance_sweep(struct pg_retention *r, int64_t deleted, int64_t next, int last)
{
    r->pruned += deleted;
    if (last) {
        ret_done(r);
        return;
    }
    /* A step that could not leave the sent_at it started at (more than a
     * step's worth of entries share it) goes on just after it. */
    r->prune_past = next == r->prune_from;
    r->prune_from = next;
}

/* Value k of an answer row as text; SQL NULL reads as "" (libpq's
 * PQgetvalue does the same).  Cannot fail. */
static const char *text(const struct ret_answer *a, int k)
{
    return a->value[k] ? a->value[k] : "";
}

/* Reads value k of an answer row as an integer in [min, max] into *v.
 * Returns 1 when it is one. */
static int number(const struct ret_answer *a, int k, int64_t min, int64_t max, int64_t *v)
{
    return num_parse_i64(text(a, k), strlen(text(a, k)), min, max, v) == RC_OK;
}

/* Reads one tagged answer row of a retention step (RET_*_SQL): the day's
 * check ("slot": whether the slot holds entries), SLOT_NONE's expired
 * entries ("deleted"), a TRUNCATE ("truncated") or a sweep step ("swept").
 * Cannot fail: an answer it cannot read is ignored (the step is sent
 * again). */
void pg_retention_answer(struct pg_retention *r, const struct ret_answer *a)
{
    const char *tag = text(a, 0);
    int64_t n = 0, next = INT64_MIN;

    if (strcmp(tag, "slot") == 0 && a->nfields == 2) {
        if (strcmp(text(a, 1), "t") != 0)
            ret_done(r); /* empty: nothing to clear today */
        else if (r->truncate_off)
            start_sweep(r);
        else
            r->stage = RET_TRUNCATE;
    } else if (strcmp(tag, "deleted") == 0 && a->nfields == 2) {
        if (number(a, 1, 0, INT64_MAX, &n))
            r->pruned += n;
    } else if (strcmp(tag, "truncated") == 0) {
        log_at(r->lg, LOG_INFO, "ledger slot cleared", LF_NUM("slot", r->slot));
        ret_done(r);
    } else if (strcmp(tag, "swept") == 0 && a->nfields == 4 && r->stage == RET_SWEEP &&
               number(a, 1, 0, INT64_MAX, &n) &&
               (!a->value[2] || number(a, 2, INT64_MIN, INT64_MAX, &next))) {
        advance_sweep(r, n, next, strcmp(text(a, 3), "t") == 0);
    }
}

/* A retention step failed with SQLSTATE `state` at mono_ms (clock_mono_ms);
 * the batch before it is committed whatever happens here.  Refused TRUNCATE
 * (42501 in that step) or young entries in the slot (55000) turn to the
 * DELETE sweep; a refused DELETE (in the day's check, which deletes slot
 * SLOT_NONE's expired entries, or in a sweep) stops the deletes for good
 * (logged once); anything else (a lock held past lock_timeout, say) is tried
 * again after RET_RETRY_MS.  Cannot fail. */
void pg_retention_failed(struct pg_retention *r, const char *state, int64_t mono_ms)
{
    int refused = strcmp(state, "42501") == 0;

    if (r->sent == RET_TRUNCATE && (refused || strcmp(state, "55000") == 0)) {
        r->truncate_off |= refused;
        log_at(r->lg, LOG_INFO,
               refused ? "no TRUNCATE on the ledger's slots: they are swept by DELETE"
                       : "the ledger slot holds young entries: swept by DELETE",
               LF_NUM("slot", r->slot), LF_STR("sqlstate", state));
        start_sweep(r);
    } else if (refused) {
        log_at(r->lg, LOG_WARN, "ledger retention refused (no DELETE privilege): not tried again",
               LF_STR("sqlstate", state), LF_STR("table", LEDGER));
        r->prune_off = 1;
        if (r->sent == RET_SWEEP)
            ret_done(r);
    } else {
        log_at(r->lg, LOG_WARN, "ledger retention failed; the batch is committed",
               LF_STR("sqlstate", state), LF_STR("table", LEDGER));
        r->retry_at = mono_ms + RET_RETRY_MS;
    }
}

/* Writes into sql (cap bytes) a step of the slot's sweep after a COMMIT that
 * wrote `written` rows.  Returns the length snprintf would write. */
static size_t sweep_step(const struct pg_retention *r, size_t written, char *sql, size_t cap)
{
    char from[80];
    size_t limit = written * 2 < PRUNE_MIN ? PRUNE_MIN : written * 2;

    limit = limit > PRUNE_MAX ? PRUNE_MAX : limit;
    if (r->prune_from == INT64_MIN)
        snprintf(from, sizeof from, "%s '-infinity'", r->prune_past ? ">" : ">=");
    else
        snprintf(from, sizeof from, "%s to_timestamp(0) + %lld * interval '1 us'",
                 r->prune_past ? ">" : ">=", (long long)r->prune_from);
    return (size_t)snprintf(sql, cap, RET_SWEEP_SQL, r->slot, from, limit);
}

/* Builds into sql (cap bytes) the retention step to send after a COMMIT
 * that wrote `written` rows, if one is due at epoch_ms (clock_epoch_ms) and
 * mono_ms (clock_mono_ms): the day's check when this process has not seen
 * to that day's slot, then its TRUNCATE or a step of its sweep.  Returns 1
 * when there is one to send (r->sent says which), 0 when none is due (or
 * cap is too small). */
int pg_retention_plan(struct pg_retention *r, int64_t epoch_ms, int64_t mono_ms, size_t written,
                      char *sql, size_t cap)
{
    int64_t today = epoch_ms / DAY_MS;
    size_t at = 0;

    if (mono_ms < r->retry_at)
        return 0;
    if (r->stage == RET_IDLE) {
        if (today == r->day)
            return 0;
        r->for_day = today;
        r->slot = (int)((today + 2) % LEDGER_SLOTS);
    }
    if (r->stage == RET_SWEEP && r->prune_off) {
        ret_done(r);
        return 0;
    }
    r->sent = r->stage;
    at = (size_t)snprintf(sql, cap, "%s", RET_BEGIN_SQL);
    if (at >= cap)
        return 0; /* never write past the caller's buffer */
    if (r->stage == RET_IDLE)
        at += (size_t)snprintf(sql + at, cap - at, RET_CHECK_SQL "%s", r->slot,
                               r->prune_off ? "" : RET_NONE_SQL);
    else if (r->stage == RET_TRUNCATE)
        at += (size_t)snprintf(sql + at, cap - at, RET_TRUNCATE_SQL, r->slot);
    else
        at += sweep_step(r, written, sql + at, cap - at);
    if (at < cap)
        at += (size_t)snprintf(sql + at, cap - at, "COMMIT");
    return at < cap;
}

/* Sends the retention step due after a COMMIT that wrote `written` rows, if
 * one is (pg_retention_plan), without waiting for its answer: the server
 * works on it while this process answers and takes the next event.  Sent as
 * one string, its transaction ends on the server whether or not this
 * process is frozen meanwhile, and its timeouts bound it.  A connection
 * that cannot take it is closed (the batch is committed all the same).
 * Cannot fail. */
void pg_retention_send(struct pg_sink *s, size_t written)
{
    char sql[RET_SQL_MAX];

    if (!pg_retention_plan(&s->ret, clock_epoch_ms(), clock_mono_ms(), written, sql, sizeof sql))
        return;
    if (!PQsendQuery(s->conn, sql) || PQflush(s->conn) < 0) {
        pg_close(s);
        return;
    }
    s->ret.pending = 1;
}

/* pg_take_fn of pg_retention_collect. */
static void take_answer(struct pg_sink *s, PGresult *res, void *ctx)
{
    (void)ctx;
    if (PQresultStatus(res) == PGRES_COMMAND_OK) {
        /* BEGIN, the SET LOCALs, LOCK, DO, TRUNCATE, COMMIT */
    } else if (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1) {
        struct ret_answer a = {.nfields = PQnfields(res)};
        for (int k = 0; k < a.nfields && k < 4; k++)
            a.value[k] = PQgetisnull(res, 0, k) ? NULL : PQgetvalue(res, 0, k);
        pg_retention_answer(&s->ret, &a);
    } else {
        const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
        pg_retention_failed(&s->ret, state ? state : "", clock_mono_ms());
    }
    PQclear(res);
}

/* Reads the answer to the retention step sent after the previous batch's
 * COMMIT (s->ret.pending), which the server worked on while this process
 * answered and took the next event.  That batch is committed whatever
 * happens here: a failure is logged (by SQLSTATE) and handled by
 * pg_retention_failed.  With IO_POLL, returns at once while the answer is
 * not all in (s->ret.pending stays set).  Returns RC_OK, or RC_TIMEOUT/RC_DB
 * when the connection can no longer be trusted (the attempt is then marked
 * broken). */
rc_t pg_retention_collect(struct pg_sink *s, enum io_wait wait)
{
    enum drained drained;
    rc_t rc = pg_drain(s, wait, take_answer, NULL, "retention", &drained);

    if (rc || drained != DRAINED_ALL)
        return rc;
    s->ret.pending = 0;
    /* An error skipped the COMMIT: the block is left aborted. */
    if (PQtransactionStatus(s->conn) == PQTRANS_INERROR)
        rc = pg_run(s, "ROLLBACK", PGRES_COMMAND_OK, NULL);
    return rc;
}
