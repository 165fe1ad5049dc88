/* pg_copy.c - the COPY engine of the Postgres sink: the transaction's ledger
 * COPY, then its rows COPY, streamed to the server while the caller is still
 * adding keys and rows. */
#define _DEFAULT_SOURCE
#include "pg_int.h"

#include <limits.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>

#include "clock.h"

static const char copy_header[19] = "PGCOPY\n\377\r\n\0\0\0\0\0\0\0\0\0";
static const char copy_trailer[2] = {'\377', '\377'};

/* Readies the batch for a new transaction from its first COPY; cannot fail.
 * The transaction before it has ended (committed or rolled back), so no id
 * is in its ledger any more. */
void pg_reset_attempt(struct pg_sink *s)
{
    s->phase = PH_IDLE;
    s->op = 0;
    s->sent = 0;
    s->header_sent = 0;
    s->unique_violation = 0;
    s->refusal = 0;
    s->refused_row = NO_ROW;
    s->seg_from = 0;
    s->seg_to = NO_ROW;
    s->chunk = TAIL_CHUNK;
    s->rerun = 0;
    s->batch_savepoint = 0;
    s->isolating = 0;
    for (size_t i = 0; i < s->n; i++)
        s->dup[i] &= RS_MASK;
}

/* Sends op's COPY without waiting for the answer; at op 0 (re)connects and
 * sends BEGIN and the statement timeout with it, in one round trip.
 * Returns RC_OK or RC_DB/RC_TIMEOUT. */
static rc_t start_op(struct pg_sink *s)
{
    char sql[400];
    rc_t rc;
    const char *copy = s->op ? COPY_ROWS_SQL : COPY_LEDGER_SQL;

    if (s->op == 0) {
        if (!s->conn && (rc = pg_connect_db(s)) != RC_OK)
            return rc;
        /* The server enforces the give-up time too, so a statement that waits
         * on a lock ends there even if this process is frozen meanwhile, and
         * a transaction left idle between statements (a process frozen or
         * killed between them) is ended after IDLE_GUARD_MS.  Both are SET
         * LOCAL: they end with the transaction, so a pooling proxy can hand
         * the server connection to another client.  The values are clamped:
         * a deadline further away than Lambda allows (or none) must not
         * overflow the server's int milliseconds. */
        int64_t left = s->give_up_at - clock_mono_ms();
        if (left <= 0) {
            pg_fail(s, NULL, "timeout");
            return RC_TIMEOUT;
        }
        int64_t statement_ms = left > LAMBDA_MAX_MS ? LAMBDA_MAX_MS : left + 50;
        int64_t idle_ms = statement_ms > IDLE_GUARD_MS ? IDLE_GUARD_MS : statement_ms;
        snprintf(sql, sizeof sql,
                 "BEGIN; SET LOCAL statement_timeout = %lld; "
                 "SET LOCAL idle_in_transaction_session_timeout = %lld; %s",
                 (long long)statement_ms, (long long)idle_ms, copy);
        s->stats.attempts++;
    } else {
        snprintf(sql, sizeof sql, "%s%s%s", s->batch_savepoint ? "" : BATCH_SAVEPOINT_SQL,
                 SAVEPOINT_SQL, copy);
        s->batch_savepoint = 1;
    }
    if (!PQsendQuery(s->conn, sql)) {
        pg_fail(s, NULL, "begin");
        return RC_DB;
    }
    s->phase = PH_STARTING;
    s->sent = s->op ? s->seg_from : 0;
    s->header_sent = 0;
    return RC_OK;
}

/* Consumes the answers to what was sent until the server accepts COPY data.
 * With `wait` 0 it only looks at what has arrived.  Returns RC_OK (check
 * s->phase), RC_TIMEOUT or RC_DB. */
rc_t pg_await_copy(struct pg_sink *s, int wait)
{
    while (s->phase == PH_STARTING) {
        if (PQflush(s->conn) < 0 || PQconsumeInput(s->conn) == 0) {
            pg_fail(s, NULL, "begin");
            return RC_DB;
        }
        if (PQisBusy(s->conn)) {
            if (!wait)
                return RC_OK;
            if (pg_wait_socket(s, POLLIN, 1) != RC_OK) {
                pg_fail(s, NULL, "timeout waiting for the table (a lock?)");
                return RC_TIMEOUT;
            }
            continue;
        }
        PGresult *res = PQgetResult(s->conn);
        ExecStatusType st = res ? PQresultStatus(res) : PGRES_FATAL_ERROR;
        if (st == PGRES_COPY_IN) {
            s->phase = PH_COPYING;
            s->first_send_us = s->first_send_us ? s->first_send_us : clock_mono_us();
        } else if (st != PGRES_COMMAND_OK) {
            pg_fail(s, res, "begin");
            PQclear(res);
            return RC_DB;
        }
        PQclear(res);
    }
    return RC_OK;
}

/* Hands one piece of COPY data to libpq.  With `wait`, waits for room;
 * without, returns RC_TIMEOUT at once when libpq's buffer is full (nothing
 * was queued).  Returns RC_OK, RC_TIMEOUT or RC_DB. */
static rc_t put_copy(struct pg_sink *s, const char *p, size_t n, int wait)
{
    for (;;) {
        int r = PQputCopyData(s->conn, p, (int)n);
        if (r == 1)
            return RC_OK;
        if (r < 0) {
            pg_fail(s, NULL, "copy");
            return RC_DB;
        }
        if (!wait)
            return RC_TIMEOUT;
        rc_t rc = pg_flush_all(s);
        if (rc) {
            pg_fail(s, NULL, rc == RC_TIMEOUT ? "timeout" : "copy");
            return rc;
        }
    }
}

static size_t tuple_start(const struct tuples *t, size_t i)
{
    return i ? t->end[i - 1] : 0;
}

/* The end of op's rows: all rows for the ledger; the rows COPY may write a
 * part of them (rows [seg_from, seg_to)) after a row was refused. */
size_t pg_op_end(const struct pg_sink *s)
{
    /* Without DELETE on the ledger a key that goes out before its row is
     * known could only be taken back by writing the batch again: keys then
     * wait for their rows (they stream while the rows are made). */
    if (s->op == 0)
        return s->no_delete ? s->decided : s->n;
    return s->seg_to < s->decided ? s->seg_to : s->decided;
}

/* Are op's tuples all known, so that its COPY may end once they are sent:
 * every key for the ledger, every row for the rows? */
static int op_complete(const struct pg_sink *s)
{
    return s->keys_done && ((s->op == 0 && !s->no_delete) || s->decided == s->n);
}

/* Is this COPY error a refusal of one row's data?  As row_data_error, except
 * a check violation that names no constraint: that is a row of a partitioned
 * user_logins for which no partition exists ("no partition of relation ...
 * found for row"), a missing partition the operator must add, not a bad
 * record; the batch fails and comes back until it exists. */
static int row_refused(const PGresult *res)
{
    const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
    if (state && strcmp(state, "23514") == 0 && !PQresultErrorField(res, PG_DIAG_CONSTRAINT_NAME))
        return 0;
    return pg_row_data_error(state);
}

/* The row of op's COPY data line `line` (1-based; in a binary COPY, one line
 * is one tuple): the line-th row that was sent.  Returns NO_ROW when out of
 * range. */
static size_t row_at_line(const struct pg_sink *s, unsigned long long line)
{
    size_t from = s->op == 1 ? s->seg_from : 0, end = pg_op_end(s);
    for (size_t i = from; i < end && line > 0; i++) {
        /* A key found to have no row after it went out was a ledger line. */
        if ((s->dup[i] & RS_MASK) && !(s->op == 0 && (s->dup[i] & RS_IN_LEDGER)))
            continue;
        if (--line == 0)
            return i;
    }
    return NO_ROW;
}

/* The COPY data line a server error names in its CONTEXT field ("COPY
 * user_logins, line 5", the last such line of the context: a trigger's
 * frames come before it).  Only the number is read; the context is never
 * logged, as it can quote data.  Returns 0 when there is none. */
static unsigned long long context_line(const PGresult *res)
{
    const char *ctx = PQresultErrorField(res, PG_DIAG_CONTEXT);
    unsigned long long found = 0;

    for (const char *p = ctx; p && *p;) {
        size_t len = strcspn(p, "\n");
        const char *at = NULL;
        if (len > 5 && strncmp(p, "COPY ", 5) == 0) {
            for (const char *q = p; q + 7 <= p + len; q++)
                if (strncmp(q, ", line ", 7) == 0) {
                    at = q + 7;
                    break;
                }
        }
        if (at) {
            unsigned long long v = 0;
            while (at < p + len && *at >= '0' && *at <= '9' && v < ULLONG_MAX / 10)
                v = v * 10 + (unsigned long long)(*at++ - '0');
            found = v;
        }
        p += len;
        if (*p)
            p++;
    }
    return found;
}

/* Streams op's tuples [sent..n) that are not known duplicates, in pieces of
 * about STREAM_CHUNK (LEDGER_CHUNK for keys).  Unless `all` (no more rows are coming), stops when
 * less than a piece is pending.  Without `wait`, also stops when libpq would block.  Returns RC_OK,
 * RC_TIMEOUT (only with wait) or RC_DB. */
static rc_t stream_tuples(struct pg_sink *s, const struct tuples *t, int all, int wait)
{
    size_t end = pg_op_end(s), piece = s->op == 0 ? LEDGER_CHUNK : STREAM_CHUNK;

    if (!s->header_sent) {
        /* A timeout here is the deadline's, not a database failure. */
        rc_t rc = put_copy(s, copy_header, sizeof copy_header, 1);
        if (rc)
            return rc;
        s->header_sent = 1;
    }
    /* Called every few rows: return at once unless a piece is worth sending. */
    if (!all && tuple_start(t, end) - tuple_start(t, s->sent) < piece)
        return RC_OK;
    while (s->sent < end) {
        /* A run of consecutive tuples to write, ending before a duplicate. */
        size_t first = s->sent;
        while (first < end && s->dup[first])
            first++;
        size_t last = first;
        while (last < end && !s->dup[last] && tuple_start(t, last) - tuple_start(t, first) < piece)
            last++;
        size_t from = tuple_start(t, first), to = tuple_start(t, last);
        if (!all && to - from < piece && last == end)
            return RC_OK; /* not worth a send yet: more rows are coming */
        if (to > from) {
            /* A piece goes to libpq only when the one before it has left
             * for the socket: libpq would take any amount without blocking
             * (its buffer grows), and moves what is left to the front of
             * that buffer after each partial send, so a backlog of a
             * megabyte costs a megabyte of copying per piece.  A server
             * that is behind keeps the rest here, where a key found to
             * have no row before it goes out is simply skipped. */
            int f = PQflush(s->conn);
            if (f < 0) {
                pg_fail(s, NULL, "copy");
                return RC_DB;
            }
            if (f == 1 && !wait)
                return RC_OK;
            rc_t rc = f == 1 ? pg_flush_all(s) : RC_OK;
            if (rc) {
                pg_fail(s, NULL, rc == RC_TIMEOUT ? "timeout" : "copy");
                return rc;
            }
            rc = put_copy(s, t->data.data + from, to - from, wait);
            if (rc == RC_TIMEOUT && !wait)
                return RC_OK;
            if (rc)
                return rc;
        }
        s->sent = last;
    }
    return RC_OK;
}

/* Has key i gone to the open transaction's ledger (handed to libpq in its
 * COPY, which the server then stores unless the transaction fails)? */
int pg_key_sent(const struct pg_sink *s, size_t i)
{
    if (!s->conn || s->phase == PH_BROKEN)
        return 0;
    if (s->op == 0)
        return s->phase == PH_ENDING || (s->phase == PH_COPYING && i < s->sent);
    return 1;
}

/* Reads the answer to op's ended COPY: the count of rows stored, which must
 * be one per tuple that is not a known duplicate, or a unique violation (a
 * ledger op: the transaction is void, s->unique_violation says so), or a
 * row refused for its data (s->refusal, and s->refused_row when the
 * server named its line).  Without `wait`, returns RC_OK at once while the
 * answer is not complete (s->phase stays PH_ENDING).  Returns RC_OK,
 * RC_TIMEOUT or RC_DB. */
static rc_t collect(struct pg_sink *s, int wait)
{
    const char *what = s->op ? "copy rows" : "ledger";
    rc_t rc = RC_OK;

    for (;;) {
        PGresult *res;
        if (!wait) {
            /* The end of the COPY may still be in libpq's buffer. */
            if (PQflush(s->conn) < 0 || PQconsumeInput(s->conn) == 0) {
                pg_fail(s, NULL, what);
                return RC_DB;
            }
            if (PQisBusy(s->conn))
                return rc;
            res = PQgetResult(s->conn);
        } else {
            rc_t w = pg_next_result(s, &res);
            if (w) {
                pg_fail(s, NULL, w == RC_TIMEOUT ? "timeout" : what);
                return w;
            }
        }
        if (!res)
            break;
        const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
        if (PQresultStatus(res) != PGRES_COMMAND_OK) {
            if (s->op == 0 && state && strcmp(state, "23505") == 0) {
                s->unique_violation = 1;
            } else if (row_refused(res) && !s->refusal) {
                s->refusal = 1 + (int)s->op;
                s->refused_row = row_at_line(s, context_line(res));
                pg_describe(s, res, what, s->why, sizeof s->why);
                snprintf(s->sqlstate, sizeof s->sqlstate, "%s", state);
            } else {
                pg_fail(s, res, what);
                rc = RC_DB;
            }
        } else {
            /* Counted once the answer is in (called without `wait`, this
             * runs every few rows until then).  The ledger's tuples include
             * keys found to have no row after they went out (RS_IN_LEDGER:
             * the only flag an open ledger COPY sees). */
            size_t expected = 0;
            for (size_t i = s->op ? s->seg_from : 0; i < pg_op_end(s); i++)
                expected += !s->dup[i] || (s->op == 0 && (s->dup[i] & RS_IN_LEDGER));
            char want[32];
            snprintf(want, sizeof want, "%zu", expected);
            if (strcmp(PQcmdTuples(res), want) != 0) {
                pg_fail(s, NULL, "copy: the server stored a different number of rows");
                rc = RC_DB;
            }
        }
        PQclear(res);
    }
    if (!rc && s->phase != PH_BROKEN) {
        s->phase = PH_IDLE;
        s->op++;
    }
    return rc;
}

/* Drives the transaction's two COPYs as far as it can: the ledger's, which
 * streams while the caller adds rows, then, once no more rows are coming
 * (`final`), the rows'.  Without `wait` it never blocks: it does what the
 * socket allows and returns.  (Cutting a batch into segments, each a ledger
 * COPY then a rows COPY, so that the rows of early segments are stored
 * while later ones are parsed, was measured: it cost the server a third more
 * CPU than it saved, 0.95 against 0.70 CPU-s per 100,000 rows.)  Returns
 * RC_OK (all done when final and s->op is 2; stops early on a unique
 * violation), RC_TIMEOUT or RC_DB. */
rc_t pg_pump(struct pg_sink *s, int wait, int final)
{
    for (;;) {
        const struct tuples *t = s->op ? &s->rows : &s->ledger;
        rc_t rc = RC_OK;

        /* A voided attempt stops once the failed COPY's answer is all in
         * (libpq takes no new command before that). */
        if ((s->unique_violation || s->refusal) && s->phase == PH_IDLE)
            return RC_OK;
        switch (s->phase) {
        case PH_BROKEN:
            return RC_DB;
        case PH_IDLE:
            if (s->op > 1 || s->n == 0)
                return RC_OK; /* done, or nothing to write yet */
            if (s->prune_pending) {
                /* The previous batch's retention step answers first. */
                if ((rc = pg_collect_prune(s, wait)) != RC_OK) {
                    pg_fail(s, NULL, rc == RC_TIMEOUT ? "timeout" : "retention");
                    return rc;
                }
                if (s->prune_pending)
                    return RC_OK;
            }
            if (s->op == 1 && s->seg_from >= pg_op_end(s))
                return RC_OK; /* isolation sends the rows itself (isolate_rows) */
            rc = start_op(s);
            break;
        case PH_STARTING:
            rc = pg_await_copy(s, wait);
            if (!rc && s->phase == PH_STARTING)
                return RC_OK;
            break;
        case PH_COPYING: {
            int all = final || op_complete(s);
            rc = stream_tuples(s, t, all, wait);
            if (rc || !all || s->sent < pg_op_end(s))
                return rc;
            rc = put_copy(s, copy_trailer, sizeof copy_trailer, 1);
            if (!rc && PQputCopyEnd(s->conn, NULL) != 1) {
                pg_fail(s, NULL, "copy end");
                rc = RC_DB;
            }
            if (!rc)
                s->phase = PH_ENDING;
            break;
        }
        case PH_ENDING:
            rc = collect(s, wait);
            if (!rc && s->phase == PH_ENDING)
                return RC_OK;
            break;
        }
        if (rc)
            return rc;
    }
}
