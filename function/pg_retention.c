/* pg_retention.c - the ledger's retention: once a UTC day, the day slot no
 * redelivery can need any more is cleared. */
#define _DEFAULT_SOURCE
#include "pg_int.h"

#include <stdio.h>
#include <string.h>

#include "clock.h"
#include "num.h"

/* The day's retention is over: its slot was found empty, truncated or swept
 * to its end (or cannot be, for lack of privileges).  Cannot fail. */
static void ret_done(struct pg_sink *s)
{
    s->ret_day = s->ret_for;
    s->ret_stage = RET_IDLE;
}

/* Moves the slot's sweep on after one step that deleted `deleted` entries
 * and stopped at sent_at `next` (INT64_MIN: -infinity); `last`: it reached
 * the end.  Cannot fail. */
static void advance_sweep(struct pg_sink *s, int64_t deleted, int64_t next, int last)
{
    s->stats.pruned += deleted;
    if (last) {
        ret_done(s);
        return;
    }
    /* A step that could not leave the sent_at it started at (more than a
     * step's worth of entries share it) goes on just after it. */
    s->prune_past = next == s->prune_from;
    s->prune_from = next;
}

/* Reads one tagged answer row of a retention step (RET_*_SQL).  Cannot
 * fail: an answer it cannot read is ignored (the step is sent again). */
static void retention_row(struct pg_sink *s, const PGresult *res)
{
    const char *tag = PQgetvalue(res, 0, 0);
    int64_t n = 0, next = INT64_MIN;

    if (strcmp(tag, "slot") == 0 && PQnfields(res) == 2) {
        if (strcmp(PQgetvalue(res, 0, 1), "t") != 0) {
            ret_done(s); /* empty: nothing to clear today */
        } else if (s->truncate_off) {
            s->ret_stage = RET_SWEEP;
            s->prune_from = INT64_MIN;
            s->prune_past = 0;
        } else {
            s->ret_stage = RET_TRUNCATE;
        }
    } else if (strcmp(tag, "deleted") == 0 && PQnfields(res) == 2) {
        if (num_parse_i64(PQgetvalue(res, 0, 1), (size_t)PQgetlength(res, 0, 1), 0, INT64_MAX,
                          &n) == RC_OK)
            s->stats.pruned += n;
    } else if (strcmp(tag, "truncated") == 0) {
        log_at(s->lg, LOG_INFO, "ledger slot cleared", LF_NUM("slot", s->ret_slot));
        ret_done(s);
    } else if (strcmp(tag, "swept") == 0 && PQnfields(res) == 4 && s->ret_stage == RET_SWEEP &&
               num_parse_i64(PQgetvalue(res, 0, 1), (size_t)PQgetlength(res, 0, 1), 0, INT64_MAX,
                             &n) == RC_OK &&
               (PQgetisnull(res, 0, 2) ||
                num_parse_i64(PQgetvalue(res, 0, 2), (size_t)PQgetlength(res, 0, 2), INT64_MIN,
                              INT64_MAX, &next) == RC_OK)) {
        advance_sweep(s, n, next, strcmp(PQgetvalue(res, 0, 3), "t") == 0);
    }
}

/* A retention step failed with SQLSTATE `state` (the batch before it is
 * committed whatever happens here).  Refused TRUNCATE (42501 in that step)
 * or young entries in the slot (55000) turn to the DELETE sweep; a refused
 * DELETE (in the day's check, which deletes slot SLOT_NONE's expired
 * entries, or in a sweep) stops the deletes for good (logged once);
 * anything else (a lock held past lock_timeout, say) is tried again after
 * RET_RETRY_MS.  Cannot fail. */
static void retention_failed(struct pg_sink *s, const char *state)
{
    int refused = strcmp(state, "42501") == 0;

    if (s->ret_sent == RET_TRUNCATE && (refused || strcmp(state, "55000") == 0)) {
        s->truncate_off |= refused;
        log_at(s->lg, LOG_INFO,
               refused ? "no TRUNCATE on the ledger's slots: they are swept by DELETE"
                       : "the ledger slot holds young entries: swept by DELETE",
               LF_NUM("slot", s->ret_slot), LF_STR("sqlstate", state));
        s->ret_stage = RET_SWEEP;
        s->prune_from = INT64_MIN;
        s->prune_past = 0;
        return;
    }
    if (refused) {
        log_at(s->lg, LOG_WARN, "ledger retention refused (no DELETE privilege): not tried again",
               LF_STR("sqlstate", state), LF_STR("table", LEDGER));
        s->prune_off = 1;
        if (s->ret_sent == RET_SWEEP)
            ret_done(s);
        return;
    }
    log_at(s->lg, LOG_WARN, "ledger retention failed; the batch is committed",
           LF_STR("sqlstate", state), LF_STR("table", LEDGER));
    s->ret_retry_at = clock_mono_ms() + RET_RETRY_MS;
}

/* Reads the answer to the retention step sent after the previous batch's
 * COMMIT (s->prune_pending), which the server worked on while this process
 * answered and took the next event.  That batch is committed whatever
 * happens here: a failure is logged (by SQLSTATE) and handled by
 * retention_failed.  Without `wait`, returns at once while the answer is not
 * all in (s->prune_pending stays set).  Returns RC_OK, or RC_TIMEOUT/RC_DB
 * when the connection can no longer be trusted. */
rc_t pg_collect_prune(struct pg_sink *s, int wait)
{
    PGresult *res = NULL;
    rc_t rc = RC_OK;

    for (;;) {
        if (!wait) {
            if (PQconsumeInput(s->conn) == 0)
                return RC_DB;
            if (PQisBusy(s->conn))
                return RC_OK;
            res = PQgetResult(s->conn);
        } else {
            rc_t w = pg_next_result(s, &res);
            if (w)
                return w;
        }
        if (!res)
            break;
        if (PQresultStatus(res) == PGRES_COMMAND_OK) {
            /* BEGIN, the SET LOCALs, LOCK, DO, TRUNCATE, COMMIT */
        } else if (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1) {
            retention_row(s, res);
        } else {
            const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
            retention_failed(s, state ? state : "");
        }
        PQclear(res);
    }
    s->prune_pending = 0;
    /* An error skipped the COMMIT: the block is left aborted. */
    if (PQtransactionStatus(s->conn) == PQTRANS_INERROR)
        rc = pg_run(s, "ROLLBACK", PGRES_COMMAND_OK, NULL);
    return rc;
}

/* Builds into sql (cap bytes) the retention step to send after a COMMIT
 * that wrote `written` rows, if one is due (see RET_CHECK_SQL): the day's
 * check when this process has not seen to today's slot, then its TRUNCATE
 * or a step of its sweep.  Returns 1 when there is one to send. */
int pg_retention_step(struct pg_sink *s, size_t written, char *sql, size_t cap)
{
    int64_t today = clock_epoch_ms() / DAY_MS;
    size_t at = 0;

    if (clock_mono_ms() < s->ret_retry_at)
        return 0;
    if (s->ret_stage == RET_IDLE) {
        if (today == s->ret_day)
            return 0;
        s->ret_for = today;
        s->ret_slot = (int)((today + 2) % LEDGER_SLOTS);
    }
    if (s->ret_stage == RET_SWEEP && s->prune_off) {
        ret_done(s);
        return 0;
    }
    s->ret_sent = s->ret_stage;
    at = (size_t)snprintf(sql, cap, "%s", RET_BEGIN_SQL);
    if (at >= cap)
        return 0; /* cannot happen with the caller's buffer; never write past it */
    if (s->ret_stage == RET_IDLE) {
        at += (size_t)snprintf(sql + at, cap - at, RET_CHECK_SQL "%s", s->ret_slot,
                               s->prune_off ? "" : RET_NONE_SQL);
    } else if (s->ret_stage == RET_TRUNCATE) {
        int k = s->ret_slot;
        at += (size_t)snprintf(sql + at, cap - at, RET_TRUNCATE_SQL, k, k, k, k, k, k, k, k);
    } else {
        char from[80];
        size_t limit = written * 2 < PRUNE_MIN ? PRUNE_MIN : written * 2;
        limit = limit > PRUNE_MAX ? PRUNE_MAX : limit;
        if (s->prune_from == INT64_MIN)
            snprintf(from, sizeof from, "%s '-infinity'", s->prune_past ? ">" : ">=");
        else
            snprintf(from, sizeof from, "%s to_timestamp(0) + %lld * interval '1 us'",
                     s->prune_past ? ">" : ">=", (long long)s->prune_from);
        at += (size_t)snprintf(sql + at, cap - at, RET_SWEEP_SQL, s->ret_slot, from, limit,
                               s->ret_slot, from);
    }
    if (at < cap)
        at += (size_t)snprintf(sql + at, cap - at, "COMMIT");
    return at < cap;
}
