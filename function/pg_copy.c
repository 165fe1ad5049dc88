/* pg_copy.c - the COPY engine: a transaction's two COPYs, the ledger's (the
 * batch's keys) and then the rows' (behind login_etl_rows), streamed to the
 * server as binary tuples (pg_tuple.c) while the caller is still adding
 * keys and rows.
 *
 * s->tx.op says which COPY is in progress, s->tx.phase where it is:
 *
 *   PH_IDLE --start_op--> PH_STARTING --await_copy--> PH_COPYING
 *     ^                                                   | stream_tuples,
 *     |                                                   | then end_op
 *     +---------collect (op moves on)------ PH_ENDING <---+
 *
 * pg_copy_advance goes as far as the socket allows without blocking (called
 * every few keys and rows); pg_copy_finish, once every tuple is known, waits
 * until both COPYs are in, or until they halted (s->tx.halt: an id
 * committed before, a row refused).  A failure marks the attempt broken
 * (PH_BROKEN, pg_fail). */
#define _DEFAULT_SOURCE
#include "pg_int.h"

#include <limits.h>
#include <stdio.h>
#include <string.h>

#include "clock.h"

#define COPY_ROWS_SQL                                                                              \
    "COPY user_logins (user_id, device_type, masked_ip, masked_device_id, locale, "                \
    "app_version, create_date) FROM STDIN (FORMAT binary)"
#define COPY_LEDGER_SQL "COPY " LEDGER " (slot, sent_at, message_id) FROM STDIN (FORMAT binary)"

/* Nothing is set for the session: a transaction-pooling proxy (RDS Proxy,
 * pgbouncer) hands each transaction to whichever server connection is free,
 * and pins a client that changes session state to one server connection for
 * good.  So the settings that guard against a sandbox frozen or killed in the
 * middle of a batch travel with each BEGIN as SET LOCAL (start_op), and TCP
 * keepalives are libpq connection parameters (pg_connect). */
#define LAMBDA_MAX_MS (15 * 60 * 1000) /* Lambda's longest timeout: no wait is longer */
#define IDLE_GUARD_MS 60000            /* a transaction left idle this long is ended */

/* Rows are handed to libpq in pieces of about STREAM_CHUNK; keys in smaller
 * ones, as the ledger COPY runs while the event is still parsed and the
 * server waits for each piece: bigger pieces left it idle at the start of
 * every event and a piece behind at its end, smaller ones cost more client
 * CPU than they saved (measured: tests/bench/README.md). */
#define STREAM_CHUNK (64 * 1024)
#define LEDGER_CHUNK (8 * 1024)

static const char copy_header[19] = "PGCOPY\n\377\r\n\0\0\0\0\0\0\0\0\0";
static const char copy_trailer[2] = {'\377', '\377'};

/* Readies the batch for a new transaction from its first COPY; cannot fail.
 * The transaction before it has ended (committed or rolled back), so no key
 * is in its ledger any more. */
void pg_tx_reset(struct pg_sink *s)
{
    s->tx = (struct pg_tx){.phase = PH_IDLE,
                           .op = OP_LEDGER,
                           .halt = HALT_NONE,
                           .refused_row = NO_ROW,
                           .to = NO_ROW,
                           .rows = ROWS_STREAM,
                           .chunk = TAIL_CHUNK};
    if (s->n)
        memset(s->in_ledger, KEY_NOT_IN_LEDGER, s->n);
    for (size_t i = 0; i < s->n; i++)
        if (s->state[i] == RS_PASSED || s->state[i] == RS_KEPT)
            s->state[i] = RS_PENDING; /* its part was rolled back with the transaction */
}

/* Sends op's COPY without waiting for the answer; for the ledger's, opens
 * the connection when closed (pg_open) and sends BEGIN and the transaction's
 * timeouts with it, in one round trip.  Returns RC_OK, RC_NOMEM, RC_DB or
 * RC_TIMEOUT. */
static rc_t start_op(struct pg_sink *s)
{
    char sql[400];
    rc_t rc;
    const char *copy = s->tx.op == OP_ROWS ? COPY_ROWS_SQL : COPY_LEDGER_SQL;

    if (s->tx.op == OP_LEDGER) {
        if (!s->conn && (rc = pg_open(s)) != RC_OK)
            return rc;
        if (clock_mono_ms() >= s->earlier_due && (rc = pg_find_earlier(s)) != RC_OK)
            return rc; /* a warm process looks at the earlier ledgers again */
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
        snprintf(sql, sizeof sql, "%s%s%s%s", s->tx.rows_savepoint ? RELEASE_ROWS_SQL : "",
                 s->tx.batch_savepoint ? "" : BATCH_SAVEPOINT_SQL, SAVEPOINT_SQL, copy);
        s->tx.batch_savepoint = 1;
        s->tx.rows_savepoint = 1;
    }
    if (!PQsendQuery(s->conn, sql)) {
        pg_fail(s, NULL, "begin");
        return RC_DB;
    }
    s->tx.phase = PH_STARTING;
    s->tx.sent = s->tx.op == OP_ROWS ? s->tx.from : 0;
    s->tx.header_sent = 0;
    return RC_OK;
}

/* Consumes the answers to what start_op sent until the server accepts COPY
 * data (PH_COPYING).  With IO_POLL it only looks at what has arrived.
 * Returns RC_OK (check s->tx.phase), RC_TIMEOUT or RC_DB. */
static rc_t await_copy(struct pg_sink *s, enum io_wait wait)
{
    while (s->tx.phase == PH_STARTING) {
        if (PQflush(s->conn) < 0 || PQconsumeInput(s->conn) == 0) {
            pg_fail(s, NULL, "begin");
            return RC_DB;
        }
        if (PQisBusy(s->conn)) {
            if (wait == IO_POLL)
                return RC_OK;
            if (pg_wait_readable(s) != RC_OK) {
                pg_fail(s, NULL, "timeout waiting for the table (a lock?)");
                return RC_TIMEOUT;
            }
            continue;
        }
        PGresult *res = PQgetResult(s->conn);
        ExecStatusType st = res ? PQresultStatus(res) : PGRES_FATAL_ERROR;
        if (st == PGRES_COPY_IN) {
            s->tx.phase = PH_COPYING;
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

/* Hands one piece of COPY data to libpq.  With IO_BLOCK it waits for room;
 * with IO_POLL it gives up at once when libpq's buffer is full (*queued is
 * then 0: nothing was queued).  Returns RC_OK, RC_TIMEOUT or RC_DB. */
static rc_t put_copy(struct pg_sink *s, const char *p, size_t n, enum io_wait wait, int *queued)
{
    *queued = 0;
    for (;;) {
        int r = PQputCopyData(s->conn, p, (int)n);
        if (r == 1) {
            *queued = 1;
            return RC_OK;
        }
        if (r < 0) {
            pg_fail(s, NULL, "copy");
            return RC_DB;
        }
        if (wait == IO_POLL)
            return RC_OK;
        rc_t rc = pg_flush(s);
        if (rc) {
            pg_fail(s, NULL, rc == RC_TIMEOUT ? "timeout" : "copy");
            return rc;
        }
    }
}

/* put_copy, waiting for room (the COPY's header and trailer: a timeout here
 * is the deadline's, not a database failure).  Returns as put_copy. */
static rc_t put_copy_whole(struct pg_sink *s, const char *p, size_t n)
{
    int queued;
    return put_copy(s, p, n, IO_BLOCK, &queued);
}

static size_t tuple_start(const struct tuples *t, size_t i)
{
    return i ? t->end[i - 1] : 0;
}

/* The end of op's rows: all keys for the ledger; the rows COPY may write a
 * part of them (rows [from, to)) after a row was refused.  Cannot fail. */
static size_t op_end(const struct pg_sink *s)
{
    /* Without DELETE on the ledger a key that goes out before its row is
     * known could only be taken back by writing the batch again: keys then
     * wait for their rows (they stream while the rows are made). */
    if (s->tx.op == OP_LEDGER)
        return s->no_delete ? s->decided : s->n;
    return s->tx.to < s->decided ? s->tx.to : s->decided;
}

/* Are op's tuples all known, so that its COPY may end once they are sent:
 * every key for the ledger, every row for the rows?  Cannot fail. */
static int op_complete(const struct pg_sink *s)
{
    return s->keys_done && ((s->tx.op == OP_LEDGER && !s->no_delete) || s->decided == s->n);
}

/* May op's COPY end once its tuples are sent: no more are coming (the
 * caller waits for the end: IO_BLOCK), or all are known?  Cannot fail. */
static int op_may_end(const struct pg_sink *s, enum io_wait wait)
{
    return wait == IO_BLOCK || op_complete(s);
}

/* Does row i go out in op's COPY?  A row still to be written does; for the
 * ledger, so does a key found to have no row after it went out (its entry
 * is taken back out before COMMIT).  Cannot fail. */
static int op_line(const struct pg_sink *s, size_t i)
{
    return s->state[i] == RS_PENDING || (s->tx.op == OP_LEDGER && s->in_ledger[i] == KEY_IN_LEDGER);
}

/* The COPY data line a server error names in its CONTEXT field ("COPY
 * user_logins, line 5", the last such line of the context: a trigger's
 * frames come before it).  Only the number is read; the context is never
 * logged, as it can quote data.  Returns 0 when there is none (context
 * NULL, no such line, no digits after ", line "); a number too long for an
 * unsigned long long stops at its last digit that fits. */
unsigned long long pg_copy_context_line(const char *context)
{
    unsigned long long found = 0;

    for (const char *p = context; p && *p;) {
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

/* The row of op's COPY data line `line` (1-based; in a binary COPY, one line
 * is one tuple): the line-th row that went out (op_line).  Returns NO_ROW
 * when out of range (0 among them). */
size_t pg_copy_row_at_line(const struct pg_sink *s, unsigned long long line)
{
    size_t from = s->tx.op == OP_ROWS ? s->tx.from : 0, end = op_end(s);

    for (size_t i = from; i < end && line > 0; i++) {
        if (!op_line(s, i))
            continue;
        if (--line == 0)
            return i;
    }
    return NO_ROW;
}

/* Streams op's tuples [sent, op_end) of rows still to be written, in pieces
 * of about STREAM_CHUNK (LEDGER_CHUNK for keys).  Unless its COPY may end
 * (op_may_end), stops when less than a piece is pending.  With IO_POLL it
 * also stops when libpq would block.  Returns RC_OK, RC_TIMEOUT (IO_BLOCK
 * only) or RC_DB. */
static rc_t stream_tuples(struct pg_sink *s, enum io_wait wait)
{
    const struct tuples *t = s->tx.op == OP_ROWS ? &s->rows : &s->ledger;
    size_t end = op_end(s), piece = s->tx.op == OP_LEDGER ? LEDGER_CHUNK : STREAM_CHUNK;
    int all = op_may_end(s, wait), queued;
    rc_t rc;

    if (!s->tx.header_sent) {
        if ((rc = put_copy_whole(s, copy_header, sizeof copy_header)) != RC_OK)
            return rc;
        s->tx.header_sent = 1;
    }
    /* Called every few rows: return at once unless a piece is worth sending. */
    if (!all && tuple_start(t, end) - tuple_start(t, s->tx.sent) < piece)
        return RC_OK;
    while (s->tx.sent < end) {
        /* A run of consecutive tuples to write, ending before a row that
         * is not (a duplicate, a key without a row). */
        size_t first = s->tx.sent;
        while (first < end && s->state[first] != RS_PENDING)
            first++;
        size_t last = first;
        while (last < end && s->state[last] == RS_PENDING &&
               tuple_start(t, last) - tuple_start(t, first) < piece)
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
            if (f == 1 && wait == IO_POLL)
                return RC_OK;
            rc = f == 1 ? pg_flush(s) : RC_OK;
            if (rc) {
                pg_fail(s, NULL, rc == RC_TIMEOUT ? "timeout" : "copy");
                return rc;
            }
            if ((rc = put_copy(s, t->data.data + from, to - from, wait, &queued)) != RC_OK ||
                !queued)
                return rc;
        }
        s->tx.sent = last;
    }
    return RC_OK;
}

/* Ends op's COPY: its trailer, then the end of its data (PH_ENDING).
 * Returns RC_OK, RC_TIMEOUT or RC_DB. */
static rc_t end_op(struct pg_sink *s)
{
    rc_t rc = put_copy_whole(s, copy_trailer, sizeof copy_trailer);

    if (!rc && PQputCopyEnd(s->conn, NULL) != 1) {
        pg_fail(s, NULL, "copy end");
        rc = RC_DB;
    }
    if (!rc)
        s->tx.phase = PH_ENDING;
    return rc;
}

/* Is this COPY error a refusal of one row's data?  As pg_row_data_error,
 * except a check violation that names no constraint: that is a row of a
 * partitioned user_logins for which no partition exists ("no partition of
 * relation ... found for row"), a missing partition the operator must add,
 * not a bad record; the batch fails and comes back until it exists. */
static int row_refused(const PGresult *res)
{
    const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
    if (state && strcmp(state, "23514") == 0 && !PQresultErrorField(res, PG_DIAG_CONSTRAINT_NAME))
        return 0;
    return pg_row_data_error(state);
}

/* Did a rows COPY fail for the server's lock memory (53200)?  That says the
 * part was more than the server could hold at that moment, nothing about a
 * row: it is handled as a refusal that names no row, so the part is cut
 * smaller (pg_isolate_range), never refused.  Cannot fail. */
static int rows_short_of_memory(const struct pg_sink *s, const char *state)
{
    return s->tx.op == OP_ROWS && state && strcmp(state, "53200") == 0;
}

/* Records why op's COPY halted (s->tx.halt), the row its CONTEXT names (an
 * id committed before, a row refused for its data; NO_ROW when it names
 * none), and the reason.  Cannot fail. */
static void halt_copy(struct pg_sink *s, const PGresult *res, enum halt halt, const char *state)
{
    const char *what = s->tx.op == OP_ROWS ? "copy rows" : "ledger";
    unsigned long long line = pg_copy_context_line(PQresultErrorField(res, PG_DIAG_CONTEXT));

    s->tx.halt = halt;
    s->tx.refused_row = rows_short_of_memory(s, state) ? NO_ROW : pg_copy_row_at_line(s, line);
    pg_describe(s, res, what, s->why, sizeof s->why);
    snprintf(s->sqlstate, sizeof s->sqlstate, "%s", state);
}

/* pg_take_fn of collect: the answer to op's ended COPY.  The count of rows
 * stored must be one per line that went out; an error is a unique violation
 * (HALT_DUPLICATE, for the ledger, with the line it names), a row refused
 * for its data or a rows COPY short of lock memory (HALT_*_REFUSED, with
 * the row its CONTEXT names), or the attempt's failure (*ctx, an rc_t, set
 * to RC_DB). */
static void take_copy_answer(struct pg_sink *s, PGresult *res, void *ctx)
{
    rc_t *rc = ctx;
    const char *what = s->tx.op == OP_ROWS ? "copy rows" : "ledger";
    const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);

    if (PQresultStatus(res) != PGRES_COMMAND_OK) {
        if (s->tx.op == OP_LEDGER && state && strcmp(state, "23505") == 0) {
            halt_copy(s, res, HALT_DUPLICATE, state);
        } else if ((row_refused(res) || rows_short_of_memory(s, state)) &&
                   s->tx.halt == HALT_NONE) {
            halt_copy(s, res, s->tx.op == OP_LEDGER ? HALT_LEDGER_REFUSED : HALT_ROWS_REFUSED,
                      state);
        } else {
            pg_fail(s, res, what);
            *rc = RC_DB;
        }
    } else {
        /* Counted once the answer is in (with IO_POLL, this is asked every
         * few rows until then). */
        size_t expected = 0;
        for (size_t i = s->tx.op == OP_ROWS ? s->tx.from : 0; i < op_end(s); i++)
            expected += op_line(s, i);
        char want[32];
        snprintf(want, sizeof want, "%zu", expected);
        if (strcmp(PQcmdTuples(res), want) != 0) {
            pg_fail(s, NULL, "copy: the server stored a different number of rows");
            *rc = RC_DB;
        }
    }
    PQclear(res);
}

/* Reads the answer to op's ended COPY (take_copy_answer); once it is all
 * in, op moves on (the next COPY, or OP_DONE) unless the attempt broke.
 * With IO_POLL, returns RC_OK at once while the answer is not complete
 * (s->tx.phase stays PH_ENDING).  Returns RC_OK, RC_TIMEOUT or RC_DB. */
static rc_t collect(struct pg_sink *s, enum io_wait wait)
{
    const char *what = s->tx.op == OP_ROWS ? "copy rows" : "ledger";
    enum drained drained;
    rc_t answer = RC_OK;
    rc_t rc = pg_drain(s, wait, take_copy_answer, &answer, what, &drained);

    if (rc)
        return rc;
    if (drained == DRAINED_ALL && !answer && s->tx.phase != PH_BROKEN) {
        s->tx.phase = PH_IDLE;
        s->tx.op = s->tx.op == OP_LEDGER ? OP_ROWS : OP_DONE;
    }
    return answer;
}

/* Drives the transaction's two COPYs as far as it can: the ledger's, which
 * streams while the caller adds rows, then the rows'.  With IO_POLL it never
 * blocks, and more keys and rows may still come; with IO_BLOCK every tuple
 * is known and it waits until both COPYs are in.  (Cutting a batch into
 * segments, each a ledger COPY then a rows COPY, so that the rows of early
 * segments are stored while later ones are parsed, cost the server more CPU
 * than it saved: tests/bench/README.md.)  Returns RC_OK (with IO_BLOCK:
 * s->tx.op is OP_DONE, or the COPYs halted: s->tx.halt), RC_TIMEOUT or
 * RC_DB. */
static rc_t pump(struct pg_sink *s, enum io_wait wait)
{
    for (;;) {
        rc_t rc = RC_OK;

        /* Halted COPYs stop once the failed COPY's answer is all in (libpq
         * takes no new command before that). */
        if (s->tx.halt != HALT_NONE && s->tx.phase == PH_IDLE)
            return RC_OK;
        switch (s->tx.phase) {
        case PH_BROKEN:
            return RC_DB;
        case PH_IDLE:
            if (s->tx.op == OP_DONE || s->n == 0)
                return RC_OK; /* done, or nothing to write yet */
            if (s->ret.pending) {
                /* The previous batch's retention step answers first. */
                if ((rc = pg_retention_collect(s, wait)) != RC_OK || s->ret.pending)
                    return rc;
            }
            if (s->tx.op == OP_ROWS && s->tx.from >= op_end(s))
                return RC_OK; /* isolation sends the rows itself (pg_isolate_rows) */
            rc = start_op(s);
            break;
        case PH_STARTING:
            rc = await_copy(s, wait);
            if (!rc && s->tx.phase == PH_STARTING)
                return RC_OK;
            break;
        case PH_COPYING:
            rc = stream_tuples(s, wait);
            if (rc || !op_may_end(s, wait) || s->tx.sent < op_end(s))
                return rc;
            rc = end_op(s);
            break;
        case PH_ENDING:
            rc = collect(s, wait);
            if (!rc && s->tx.phase == PH_ENDING)
                return RC_OK;
            break;
        }
        if (rc)
            return rc;
    }
}

/* Moves the COPYs on as far as the socket allows, without blocking: called
 * every few keys and rows while the caller adds them.  Returns as pump (a
 * failure is retried by the commit). */
rc_t pg_copy_advance(struct pg_sink *s)
{
    return pump(s, IO_POLL);
}

/* Every tuple is known: sends what is left and waits until both COPYs are
 * in, or halted (s->tx.halt).  Returns as pump. */
rc_t pg_copy_finish(struct pg_sink *s)
{
    return pump(s, IO_BLOCK);
}

/* Has key i gone to the open transaction's ledger (handed to libpq in its
 * COPY, which the server then stores unless the transaction fails)?  Cannot
 * fail. */
int pg_copy_key_sent(const struct pg_sink *s, size_t i)
{
    if (!s->conn || s->tx.phase == PH_BROKEN)
        return 0;
    if (s->tx.op == OP_LEDGER)
        return s->tx.phase == PH_ENDING || (s->tx.phase == PH_COPYING && i < s->tx.sent);
    return 1;
}

/* Stops the COPY in progress without its data taking effect: a COPY being
 * started is awaited, an open one failed on purpose, and every answer read
 * (by the give-up time), so that the connection takes a new command.
 * Returns RC_OK, or the failure (the connection cannot be trusted). */
rc_t pg_copy_cancel(struct pg_sink *s)
{
    if (s->tx.phase == PH_STARTING && await_copy(s, IO_BLOCK) != RC_OK)
        return RC_DB;
    if (s->tx.phase == PH_COPYING && PQputCopyEnd(s->conn, "batch abandoned") != 1)
        return RC_DB;
    return pg_drain(s, IO_BLOCK, NULL, NULL, NULL, NULL);
}
