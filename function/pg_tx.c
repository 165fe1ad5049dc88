/* pg_tx.c - one transaction of a batch, and the retries around it.
 *
 * A transaction (attempt) goes through these steps (enum tx_step), each
 * naming the next, until it ends:
 *
 *   TX_COPY      the ledger COPY, then the rows COPY (pg_copy.c), already under
 *                way while the caller added keys and rows.  An id committed
 *                before -> TX_AGAIN; a refused row -> pg_after_refusal
 *                (pg_isolate.c): TX_COPY again, TX_ISOLATE, TX_AGAIN or
 *                TX_UNATTRIBUTED.
 *   TX_ISOLATE   a refusal named no row: the rows go in part by part behind
 *                savepoints (pg_isolate_rows).
 *   TX_EARLIER   the earlier ledger layouts are read for the batch's ids; ids
 *                found there -> TX_AGAIN.
 *   TX_UNLEDGER  the ids of the rows not written come back out of the ledger;
 *                without DELETE on it -> TX_AGAIN, without them.
 *   TX_QUARANTINE  the records never accepted go into login_etl_rejected, their
 *                ids into the ledger (pg_quarantine.c).
 *   TX_COMMIT    SET CONSTRAINTS ALL IMMEDIATE; COMMIT.  A deferred constraint
 *                that refuses a row names none -> TX_ISOLATE (pg_back_to_batch)
 *                or TX_UNATTRIBUTED.
 *
 * and ends TX_COMMITTED (then the retention step, if due, is sent),
 * TX_AGAIN (rolled back after rows were marked: pg_write_pending writes the
 * rest at once), TX_UNATTRIBUTED (rolled back: pg_batch_commit writes the
 * batch one part a transaction, pg_isolate_by_transactions) or TX_FAILED
 * (pg_write_pending retries a lost connection while time is left). */
#define _DEFAULT_SOURCE
#include "pg_int.h"

#include <stdio.h>
#include <string.h>

#include "clock.h"

#define MAX_ATTEMPTS 4 /* transactions tried for a batch when the connection fails */
#define COMMIT_SQL IMMEDIATE_SQL "; COMMIT"

/* Closes the connection and forgets what rode on it: the open transaction,
 * the answer of a retention step.  Cannot fail. */
void pg_disconnect(struct pg_sink *s)
{
    pg_close(s);
    s->ret.pending = 0;
    pg_tx_reset(s);
}

/* Ends the open transaction, if any, without committing it: a COPY in
 * progress is stopped (pg_copy_cancel) and ROLLBACK run, all by the give-up
 * time, so that the connection serves the next batch.  When anything goes
 * wrong on the way the connection is closed instead (the server rolls back
 * when it notices).  Cannot fail. */
void pg_abandon(struct pg_sink *s)
{
    if (!s->conn || (s->tx.phase == PH_IDLE && s->tx.op == OP_LEDGER)) {
        pg_tx_reset(s);
        return;
    }
    if (s->tx.phase == PH_BROKEN || pg_copy_cancel(s) != RC_OK ||
        pg_run(s, "ROLLBACK", PGRES_COMMAND_OK, NULL) != RC_OK) {
        pg_disconnect(s);
        return;
    }
    pg_tx_reset(s);
}

/* Rolls the transaction back to write the batch again at once (*next
 * TX_AGAIN), without the rows just marked.  Returns RC_OK or the failure of
 * the rollback. */
static rc_t again(struct pg_sink *s, enum tx_step *next)
{
    pg_tx_reset(s);
    *next = TX_AGAIN;
    return pg_run(s, "ROLLBACK", PGRES_COMMAND_OK, NULL);
}

/* HALT_DUPLICATE: the ledger COPY met ids committed before.  The
 * transaction is rolled back, the committed ids looked up and marked
 * (RS_DUP), and the rest written again (TX_AGAIN).  When the ledger shows
 * none of them, the unique violation was another rule's (an operator's
 * second unique index on the ledger, a trigger raising 23505): the key it
 * named is refused like any row whose data the server refuses, and the rest
 * written again (TX_AGAIN); without a key named, the batch is written one
 * part a transaction (TX_UNATTRIBUTED) to find it.  Each round marks a row
 * or cuts the batch, so it never loops.  Returns RC_OK or the failure. */
static rc_t after_duplicates(struct pg_sink *s, enum tx_step *next)
{
    size_t found = 0, named = s->tx.refused_row;
    rc_t rc;

    pg_tx_reset(s); /* rolled back: no row's id is in the ledger any more */
    if ((rc = pg_run(s, "ROLLBACK", PGRES_COMMAND_OK, NULL)) != RC_OK ||
        (rc = pg_mark_duplicates(s, &found)) != RC_OK)
        return rc;
    if (found > 0) {
        *next = TX_AGAIN;
        return RC_OK;
    }
    if (named != NO_ROW && s->state[named] == RS_PENDING) {
        pg_refuse_row(s, named, KEY_NOT_IN_LEDGER);
        *next = TX_AGAIN;
        return RC_OK;
    }
    s->retryable = 0;
    *next = TX_UNATTRIBUTED;
    return RC_OK;
}

/* TX_COPY: drives the COPYs to their end (pg_copy_finish), then: rows
 * committed before or refused are handled; after a refused row the next
 * part of the rest is written (TX_COPY again); once every row is in,
 * TX_EARLIER.  Returns RC_OK or the failure. */
static rc_t step_copy(struct pg_sink *s, enum tx_step *next)
{
    rc_t rc = pg_copy_finish(s);

    if (rc)
        return rc;
    switch (s->tx.halt) {
    case HALT_DUPLICATE:
        return after_duplicates(s, next);
    case HALT_LEDGER_REFUSED:
    case HALT_ROWS_REFUSED:
        return pg_after_refusal(s, next);
    case HALT_NONE:
        break;
    }
    if ((rc = pg_part_in(s)) != RC_OK)
        return rc;
    *next = pg_next_part(s) || pg_final_part(s) ? TX_COPY : TX_EARLIER;
    return RC_OK;
}

/* TX_ISOLATE: deferred constraints made immediate, the rows written part by
 * part behind savepoints (pg_isolate_rows); then TX_EARLIER.  A row that
 * SET CONSTRAINTS itself refuses cannot be found this way, nor can a row
 * the server's lock memory cannot take (53200): TX_UNATTRIBUTED.  Returns RC_OK or the failure. */
static rc_t step_isolate(struct pg_sink *s, enum tx_step *next)
{
    rc_t rc = pg_run(s, IMMEDIATE_SQL, PGRES_COMMAND_OK, NULL);

    if (rc == RC_DB && pg_row_data_error(s->sqlstate))
        return pg_unattributed(s, next);
    if (rc == RC_OK && (rc = pg_isolate_rows(s)) == RC_OK)
        *next = pg_final_part(s) ? TX_COPY : TX_EARLIER;
    /* A row that alone is more than the server's lock memory can take in
     * this transaction (the locks of the parts before it stay until the
     * end): parts in transactions of their own hold fewer. */
    if (rc == RC_DB && strcmp(s->sqlstate, "53200") == 0)
        return pg_unattributed(s, next);
    return rc;
}

/* TX_EARLIER: the earlier ledgers are read inside the transaction, after
 * the ledger COPY: a message committed there by an earlier release counts
 * as committed, and the batch is written again without it (TX_AGAIN).
 * Returns RC_OK or the failure. */
static rc_t step_earlier(struct pg_sink *s, enum tx_step *next)
{
    int stale = 0;
    rc_t rc = pg_consult_earlier(s, &stale);

    if (rc == RC_OK && stale)
        return again(s, next);
    if (rc == RC_OK)
        *next = TX_UNLEDGER;
    return rc;
}

/* TX_UNLEDGER: every row is in (or refused): the ids of the rows not
 * written are taken back out of the ledger, then TX_COMMIT.  A user with
 * INSERT and SELECT on the ledger only cannot (42501, learnt once): such ids
 * are left out by writing the batch again without them (TX_AGAIN; all the
 * refused rows of the batch were found, so once is enough).  Returns RC_OK
 * or the failure. */
static rc_t step_unledger(struct pg_sink *s, enum tx_step *next)
{
    rc_t rc;

    if (!s->no_delete && (rc = pg_unledger(s)) != RC_OK) {
        if (rc != RC_DB || strcmp(s->sqlstate, "42501") != 0)
            return rc;
        log_at(s->lg, LOG_INFO,
               "no DELETE on the ledger: refused rows are left out by writing "
               "the batch again");
        s->no_delete = 1;
    }
    if (s->no_delete)
        for (size_t i = 0; i < s->n; i++)
            if (s->in_ledger[i] == KEY_IN_LEDGER)
                return again(s, next);
    *next = TX_QUARANTINE;
    return RC_OK;
}

/* TX_QUARANTINE: the records never accepted, and the rows refused when the
 * caller quarantines those too, go into login_etl_rejected with their ids
 * into the ledger (pg_quarantine.c), last before COMMIT, when every refused
 * row is known and no id of one is left in the ledger; then TX_COMMIT.
 * Returns RC_OK or the failure. */
static rc_t step_quarantine(struct pg_sink *s, enum tx_step *next)
{
    rc_t rc = pg_quarantine_send(s);

    if (rc == RC_OK)
        *next = TX_COMMIT;
    return rc;
}

/* What the answer to COMMIT_SQL said (take_commit). */
struct commit_read {
    int seen;   /* results read */
    int failed; /* -1, or the statement that failed: 0 SET CONSTRAINTS, 1 COMMIT */
};

/* pg_take_fn of step_commit: SET CONSTRAINTS, then COMMIT, must succeed; a
 * COMMIT of an aborted transaction "succeeds" with the tag ROLLBACK. */
static void take_commit(struct pg_sink *s, PGresult *res, void *ctx)
{
    struct commit_read *c = ctx;

    if (c->failed < 0 && c->seen < 2 &&
        !(PQresultStatus(res) == PGRES_COMMAND_OK &&
          (c->seen == 0 || strcmp(PQcmdStatus(res), "COMMIT") == 0))) {
        pg_fail(s, res,
                PQresultStatus(res) != PGRES_COMMAND_OK
                    ? "commit"
                    : "commit: the transaction was rolled back");
        c->failed = c->seen;
    }
    c->seen++;
    PQclear(res);
}

/* TX_COMMIT: SET CONSTRAINTS and COMMIT in one round trip (an error at the
 * first skips the second), then TX_COMMITTED and the retention step, sent
 * only now that the COMMIT's answer is all in (the server flushes a query
 * string's answers at its end only).  A deferred constraint (trigger) that
 * refuses a row at SET CONSTRAINTS names none, and leaves the transaction
 * open: back to login_etl_batch to isolate it (TX_ISOLATE), or
 * TX_UNATTRIBUTED when that is what failed.  Returns RC_OK or the
 * failure. */
static rc_t step_commit(struct pg_sink *s, enum tx_step *next)
{
    struct commit_read c = {0, -1};
    size_t written = pg_pending_in(s, 0, s->n);
    rc_t rc;

    if (!PQsendQuery(s->conn, COMMIT_SQL)) {
        pg_fail(s, NULL, "commit");
        return RC_DB;
    }
    /* Once a verdict is in, a failure to read the rest changes nothing. */
    rc = pg_drain(s, IO_BLOCK, take_commit, &c, NULL, NULL);
    if (rc && c.failed < 0 && c.seen < 2) {
        pg_fail(s, NULL, rc == RC_TIMEOUT ? "timeout" : "commit");
        return rc;
    }
    if (c.failed < 0 && c.seen < 2) {
        pg_fail(s, NULL, "commit: the transaction was rolled back");
        c.failed = c.seen;
    }
    if (c.failed == 1 || (c.failed == 0 && !pg_row_data_error(s->sqlstate)))
        return RC_DB;
    if (c.failed == 0)
        return s->tx.rows == ROWS_ISOLATE || s->tx.rows == ROWS_FINAL ? pg_unattributed(s, next)
                                                                      : pg_back_to_batch(s, next);
    pg_quarantine_committed(s);
    pg_tx_reset(s);
    pg_retention_send(s, written);
    *next = TX_COMMITTED;
    return RC_OK;
}

/* One attempt at the whole transaction, step by step (the top of this
 * file) from TX_COPY; *end says how it ended.  Rows the server refuses are
 * marked (RS_REFUSED) and the rest written in the same transaction.
 * Returns RC_OK (*end TX_COMMITTED, TX_AGAIN or TX_UNATTRIBUTED), or the
 * failure (*end TX_FAILED, the attempt marked broken). */
static rc_t attempt(struct pg_sink *s, enum tx_step *end)
{
    enum tx_step step = TX_COPY;
    rc_t rc = RC_OK;

    while (rc == RC_OK && step < TX_COMMITTED) {
        switch (step) {
        case TX_COPY:
            rc = step_copy(s, &step);
            break;
        case TX_ISOLATE:
            rc = step_isolate(s, &step);
            break;
        case TX_EARLIER:
            rc = step_earlier(s, &step);
            break;
        case TX_UNLEDGER:
            rc = step_unledger(s, &step);
            break;
        case TX_QUARANTINE:
            rc = step_quarantine(s, &step);
            break;
        case TX_COMMIT:
            rc = step_commit(s, &step);
            break;
        default:
            break;
        }
    }
    *end = rc == RC_OK ? step : TX_FAILED;
    return rc;
}

/* Writes the batch's pending rows in one transaction, again at once after
 * rows were marked (TX_AGAIN), and again after a lost connection while time
 * is left.  Returns RC_OK with *end TX_COMMITTED (committed, or no row was
 * left to write: every one committed before, refused or without a row) or
 * TX_UNATTRIBUTED (a row's data was refused, the row unknown: the
 * transaction was rolled back); else the failure (*end TX_FAILED). */
rc_t pg_write_pending(struct pg_sink *s, enum tx_step *end)
{
    rc_t rc = RC_DB;
    struct backoff backoff; /* 100 ms, doubling */
    unsigned tries = 0;

    backoff_init(&backoff, 100, 60000);
    for (;;) {
        if (pg_pending_in(s, 0, s->n) == 0) {
            /* No row to write; the keys already sent are rolled back, and
             * what is to be quarantined goes in alone. */
            pg_abandon(s);
            if (pg_quarantine_pending(s) && (rc = pg_quarantine_alone(s)) != RC_OK) {
                *end = TX_FAILED;
                int64_t wait = backoff_next(&backoff);
                if (rc != RC_TIMEOUT && s->retryable && ++tries < MAX_ATTEMPTS &&
                    clock_mono_ms() + wait < s->give_up_at) {
                    clock_sleep_ms(wait);
                    continue;
                }
                return rc;
            }
            *end = TX_COMMITTED;
            return RC_OK;
        }
        if (s->tx.phase == PH_BROKEN)
            pg_disconnect(s);
        rc = attempt(s, end);
        if (rc == RC_OK && *end == TX_AGAIN)
            continue; /* rows marked (each time one at least): write the rest */
        if (rc == RC_OK && *end == TX_COMMITTED)
            return RC_OK;
        log_at(s->lg, LOG_WARN, "database attempt failed", LF_STR("reason", s->why),
               LF_NUM("attempt", tries + 1), LF_NUM("retryable", s->retryable));
        if (rc == RC_OK || rc == RC_NOMEM || rc == RC_TIMEOUT || !s->retryable ||
            ++tries >= MAX_ATTEMPTS)
            break; /* TX_UNATTRIBUTED is the caller's to isolate */
        /* The connection went away (a restart, a failover): wait a little
         * and try again while the deadline allows. */
        int64_t wait = backoff_next(&backoff);
        if (clock_mono_ms() + wait >= s->give_up_at) {
            rc = RC_TIMEOUT;
            *end = TX_FAILED;
            break;
        }
        clock_sleep_ms(wait);
    }
    return rc;
}

/* Writes the pending rows of part r alone, in a transaction of their own
 * (the rest of the batch RS_OUT meanwhile).  Returns what pg_write_pending
 * returns; on TX_COMMITTED those rows are RS_DONE. */
static rc_t write_part(struct pg_sink *s, struct range r, enum tx_step *end)
{
    for (size_t i = 0; i < s->n; i++)
        if ((i < r.from || i >= r.to) && s->state[i] == RS_PENDING)
            s->state[i] = RS_OUT;
    rc_t rc = pg_write_pending(s, end);
    for (size_t i = 0; i < s->n; i++) {
        if (s->state[i] == RS_OUT)
            s->state[i] = RS_PENDING;
        else if (rc == RC_OK && *end == TX_COMMITTED && s->state[i] == RS_PENDING)
            s->state[i] = RS_DONE;
    }
    return rc;
}

/* How many rows of [from, to) were refused; cannot fail. */
static size_t refused_in(const struct pg_sink *s, size_t from, size_t to)
{
    size_t count = 0;
    for (size_t i = from; i < to; i++)
        count += s->state[i] == RS_REFUSED;
    return count;
}

/* pg_try_fn by transactions: part r in a transaction of its own
 * (write_part), which may itself find refused rows by their lines and by
 * savepoints.  A refusal even that cannot contain leaves r to be cut; any
 * other failure stops the search.  Returns RC_OK or that failure. */
static rc_t try_in_transaction(struct pg_sink *s, struct isolation *iso, struct range r,
                               enum tried *tried)
{
    size_t refused = refused_in(s, r.from, r.to);
    enum tx_step end;
    rc_t rc = write_part(s, r, &end);

    if (rc != RC_OK) {
        iso->stop = 1;
        return rc;
    }
    if (end == TX_UNATTRIBUTED)
        *tried = TRIED_UNSETTLED; /* a row's data, the row unknown: r is cut */
    else                          /* whole unless the server named refused rows in it on the way */
        *tried = refused_in(s, r.from, r.to) == refused ? TRIED_WHOLE : TRIED_SORTED;
    return RC_OK;
}

/* Finds the rows refused without a name that the savepoints could not
 * contain (in the ledger COPY, or still at COMMIT): the batch, known to
 * fail whole, is written one part a transaction (pg_isolate_range,
 * try_in_transaction).  Returns RC_OK or the failure that stopped it. */
rc_t pg_isolate_by_transactions(struct pg_sink *s)
{
    struct isolation iso = {try_in_transaction, KEY_NOT_IN_LEDGER, 0};
    struct range all = {0, s->n, RANGE_BAD};
    enum tried tried;

    return pg_isolate_range(s, &iso, all, &tried);
}
