/* pg_tx.c - one transaction of a batch: its COPYs, the duplicates it finds,
 * its COMMIT, and the retries of a lost connection. */
#define _DEFAULT_SOURCE
#include "pg_int.h"

#include <stdio.h>
#include <string.h>

#include "clock.h"

void pg_disconnect(struct pg_sink *s)
{
    if (s->conn)
        PQfinish(s->conn);
    s->conn = NULL;
    s->prune_pending = 0;
    pg_reset_attempt(s);
}

/* One attempt at the whole transaction: the COPYs (already under way while
 * rows were added), then COMMIT.  *again is set when it should be repeated at
 * once (duplicates or a refused ledger entry were found and marked).  Rows
 * the server refuses are marked (RS_REFUSED) and the rest written in the
 * same transaction.  Returns RC_OK when committed; otherwise the failure,
 * with the attempt marked broken, or s->unattributed set. */
static rc_t attempt(struct pg_sink *s, int *again)
{
    rc_t rc;

    *again = 0;
    for (;;) {
        if ((rc = pg_pump(s, 1, 1)) != RC_OK)
            return rc;
        if (s->unique_violation) {
            size_t found = 0;
            pg_reset_attempt(s);
            if ((rc = pg_run(s, "ROLLBACK", PGRES_COMMAND_OK, NULL)) != RC_OK)
                return rc;
            /* Rolled back: no row's id is in the ledger any more. */
            for (size_t i = 0; i < s->n; i++)
                s->dup[i] &= (uint8_t)~RS_IN_LEDGER;
            if ((rc = pg_mark_duplicates(s, -1, &found)) != RC_OK)
                return rc;
            if (found == 0) {
                /* The unique violation named an id we cannot see: never loop on it. */
                snprintf(s->why, sizeof s->why,
                         "ledger: unique violation without a visible duplicate");
                s->phase = PH_BROKEN;
                return RC_DB;
            }
            *again = 1;
            return RC_OK;
        }
        if (s->refusal) {
            if ((rc = pg_after_refusal(s, again)) != RC_OK || *again)
                return rc;
            continue;
        }
        if (s->isolating) {
            int stop = 0, whole;
            if ((rc = pg_run(s, IMMEDIATE_SQL, PGRES_COMMAND_OK, NULL)) != RC_OK)
                return rc == RC_DB && pg_row_data_error(s->sqlstate) ? pg_unattributed(s, 0) : rc;
            if ((rc = pg_isolate_rows(s, 0, s->n, s->known_bad, 0, &stop, &whole)) != RC_OK)
                return rc;
        } else if (pg_next_segment(s)) {
            continue;
        }
        /* The earlier ledgers are read inside the transaction, after the
         * ledger COPY: a message committed there by an earlier version counts
         * as committed, and the batch is written again without it. */
        size_t found = 0;
        for (size_t k = 0; k < N_EARLIER; k++) {
            size_t more = 0;
            if (!(s->earlier & (1u << k)))
                continue;
            if ((rc = pg_mark_duplicates(s, (int)k, &more)) != RC_OK) {
                if (rc != RC_DB || strcmp(s->sqlstate, "42P01") != 0)
                    return rc;
                log_at(s->lg, LOG_INFO, "the earlier ledger was dropped: no longer consulted",
                       LF_STR("table", EARLIER[k].table));
                s->earlier &= ~(1u << k);
                pg_reset_attempt(s);
                *again = 1;
                return pg_run(s, "ROLLBACK", PGRES_COMMAND_OK, NULL);
            }
            found += more;
        }
        if (found) {
            pg_reset_attempt(s);
            for (size_t i = 0; i < s->n; i++)
                s->dup[i] &= (uint8_t)~RS_IN_LEDGER;
            *again = 1;
            return pg_run(s, "ROLLBACK", PGRES_COMMAND_OK, NULL);
        }
        /* Every row is in (or refused): take the refused ones' ids out of
         * the ledger, then commit. */
        if (!s->no_delete && (rc = pg_unledger(s)) != RC_OK) {
            if (rc != RC_DB || strcmp(s->sqlstate, "42501") != 0)
                return rc;
            /* A least-privilege user with INSERT and SELECT on the ledger only. */
            log_at(s->lg, LOG_INFO,
                   "no DELETE on the ledger: refused rows are left out by writing "
                   "the batch again");
            s->no_delete = 1;
        }
        if (s->no_delete) {
            for (size_t i = 0; i < s->n && !*again; i++)
                *again = (s->dup[i] & RS_IN_LEDGER) != 0;
            if (*again) {
                /* Their ids cannot come out of this transaction's ledger: it
                 * is rolled back and written again without them (all the
                 * refused rows of the batch were found, so once is enough). */
                pg_reset_attempt(s);
                return pg_run(s, "ROLLBACK", PGRES_COMMAND_OK, NULL);
            }
        }
        /* SET CONSTRAINTS and COMMIT go in one round trip; an error at the
         * first skips the second. */
        size_t written = 0;
        for (size_t i = 0; i < s->n; i++)
            written += !s->dup[i];
        if (!PQsendQuery(s->conn, COMMIT_SQL)) {
            pg_fail(s, NULL, "commit");
            return RC_DB;
        }
        PGresult *res = NULL;
        int step;
        for (step = 0; step < 2; step++) { /* SET CONSTRAINTS, then COMMIT */
            rc_t w = pg_next_result(s, &res);
            if (w) {
                pg_fail(s, NULL, w == RC_TIMEOUT ? "timeout" : "commit");
                return w;
            }
            /* COMMIT of an aborted transaction "succeeds" with the tag ROLLBACK. */
            if (res && PQresultStatus(res) == PGRES_COMMAND_OK &&
                (step == 0 || strcmp(PQcmdStatus(res), "COMMIT") == 0)) {
                PQclear(res);
                continue;
            }
            pg_fail(s, res,
                    res && PQresultStatus(res) != PGRES_COMMAND_OK
                        ? "commit"
                        : "commit: the transaction was rolled back");
            PQclear(res);
            /* Drain what is left, so that the connection takes a new command. */
            while (pg_next_result(s, &res) == RC_OK && res)
                PQclear(res);
            if (step == 1 || !pg_row_data_error(s->sqlstate))
                return RC_DB;
            /* A deferred constraint (trigger) refused a row, naming none,
             * when SET CONSTRAINTS fired it: the transaction is still open. */
            if (s->isolating)
                return pg_unattributed(s, 0);
            if ((rc = pg_back_to_batch(s)) != RC_OK)
                return rc;
            break;
        }
        if (step < 2)
            continue; /* isolating the rows behind login_etl_batch */
        /* The COMMIT's answer is all in; only now is retention sent (the
         * server flushes a query string's answers at its end only). */
        while (pg_next_result(s, &res) == RC_OK && res)
            PQclear(res);
        pg_reset_attempt(s);
        char prune[sizeof RET_SWEEP_SQL + sizeof RET_BEGIN_SQL + 300];
        if (!pg_retention_step(s, written, prune, sizeof prune))
            return RC_OK;
        if (!PQsendQuery(s->conn, prune) || PQflush(s->conn) < 0) {
            pg_disconnect(s);
            return RC_OK;
        }
        /* Committed.  The retention step's answer is read by the next batch,
         * before its BEGIN (pump): the server deletes while this process
         * answers and takes the next event.  Sent as one string, its
         * transaction ends on the server whether or not this process is
         * frozen meanwhile, and its timeouts bound it. */
        s->prune_pending = 1;
        return RC_OK;
    }
}

/* Ends the open transaction, if any, without committing it: a COPY in
 * progress is failed on purpose, the answers drained and ROLLBACK run, all
 * by the give-up time, so that the connection serves the next batch.  When
 * anything goes wrong on the way the connection is closed instead (the
 * server rolls back when it notices).  Cannot fail. */
void pg_abandon(struct pg_sink *s)
{
    PGresult *res = NULL;

    if (!s->conn || (s->phase == PH_IDLE && s->op == 0)) {
        pg_reset_attempt(s);
        return;
    }
    if (s->phase == PH_BROKEN)
        goto drop;
    if (s->phase == PH_STARTING && pg_await_copy(s, 1) != RC_OK)
        goto drop;
    if (s->phase == PH_COPYING && PQputCopyEnd(s->conn, "batch abandoned") != 1)
        goto drop;
    for (;;) {
        if (pg_next_result(s, &res) != RC_OK)
            goto drop;
        if (!res)
            break;
        PQclear(res);
    }
    if (pg_run(s, "ROLLBACK", PGRES_COMMAND_OK, NULL) != RC_OK)
        goto drop;
    pg_reset_attempt(s);
    return;
drop:
    pg_disconnect(s);
}

/* Writes the batch's pending rows in one transaction, retrying a lost
 * connection while time is left.  Returns RC_OK when they are committed (or
 * none was left), else the failure (s->unattributed: a row's data, row
 * unknown). */
rc_t pg_write_pending(struct pg_sink *s)
{
    rc_t rc = RC_DB;
    struct backoff backoff; /* 100 ms, doubling */
    unsigned tries = 0;

    s->unattributed = 0;

    backoff_init(&backoff, 100, 60000);
    for (;;) {
        int again = 0;
        if (pg_pending_in(s, 0, s->n) == 0) {
            /* Every row was committed before (a replay), refused, or has none:
             * nothing to write; the keys already sent are rolled back. */
            pg_abandon(s);
            return RC_OK;
        }
        if (s->phase == PH_BROKEN)
            pg_disconnect(s);
        rc = attempt(s, &again);
        if (rc == RC_OK && !again)
            return RC_OK;
        if (rc == RC_OK)
            continue; /* rows marked (each time one at least): write the rest */
        log_at(s->lg, LOG_WARN, "database attempt failed", LF_STR("reason", s->why),
               LF_NUM("attempt", tries + 1), LF_NUM("retryable", s->retryable));
        if (rc == RC_NOMEM || rc == RC_TIMEOUT || !s->retryable || ++tries >= MAX_ATTEMPTS)
            break;
        /* The connection went away (a restart, a failover): wait a little
         * and try again while the deadline allows. */
        int64_t wait = backoff_next(&backoff);
        if (clock_mono_ms() + wait >= s->give_up_at) {
            rc = RC_TIMEOUT;
            break;
        }
        clock_sleep_ms(wait);
    }
    return rc;
}
