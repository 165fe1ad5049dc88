/* pg_isolate.c - refused rows: a row the server refuses for its data is
 * found and taken out, and the rest of the batch written. */
#define _DEFAULT_SOURCE
#include "pg_int.h"

/* Marks row r refused and logs why (SQLSTATE, table, constraint: never the
 * server's text).  In a FIFO batch every row after it that was still to be
 * written is cut (not written, to keep the order).  `in_ledger`: the open
 * transaction's ledger holds their ids, to be taken out before COMMIT. */
void pg_refuse_row(struct pg_sink *s, size_t r, int in_ledger)
{
    uint8_t flag = in_ledger ? RS_IN_LEDGER : 0;

    s->dup[r] = (uint8_t)(RS_REFUSED | flag);
    if (s->fifo)
        for (size_t i = r + 1; i < s->n; i++)
            if (s->dup[i] == RS_PENDING || s->dup[i] == RS_OUT)
                s->dup[i] = (uint8_t)(RS_CUT | (s->dup[i] == RS_PENDING ? flag : 0));
    log_at(s->lg, LOG_WARN, "database refused a row", LF_NUM("row", r), LF_STR("reason", s->why));
}

/* How many rows of [from, to) are still to be written; cannot fail. */
size_t pg_pending_in(const struct pg_sink *s, size_t from, size_t to)
{
    size_t count = 0;
    for (size_t i = from; i < to && i < s->n; i++)
        count += s->dup[i] == RS_PENDING;
    return count;
}

/* The first row of [from, to) still to be written, or NO_ROW; cannot fail. */
static size_t first_pending(const struct pg_sink *s, size_t from, size_t to)
{
    for (size_t i = from; i < to && i < s->n; i++)
        if (s->dup[i] == RS_PENDING)
            return i;
    return NO_ROW;
}

/* After the rows COPY of [seg_from, seg_to) went in: readies the COPY of
 * the next part of the rest of the batch (the rows after a refused one), if
 * any is left.  The parts start at TAIL_CHUNK rows and double: a server
 * that refused one row may refuse more (an operator's CHECK), and each
 * refusal makes the client send its part again; so K refusals cost about
 * K * TAIL_CHUNK rows sent twice, not K times the rest of the batch, and
 * one refusal costs a few round trips.  Returns 1 when there is one to run,
 * 0 when all rows are in. */
int pg_next_segment(struct pg_sink *s)
{
    while (s->seg_to < s->n) {
        s->seg_from = s->seg_to;
        s->seg_to = s->n - s->seg_from > s->chunk ? s->seg_from + s->chunk : s->n;
        s->chunk *= 2;
        s->rerun = 0;
        if (pg_pending_in(s, s->seg_from, s->seg_to)) {
            s->op = 1;
            s->phase = PH_IDLE;
            return 1;
        }
    }
    return 0;
}

/* The attempt failed on a row's data without naming the row (an error at
 * COMMIT from a deferred constraint trigger, a COPY error without a line, or
 * a line that proved wrong): the transaction is rolled back, refusals made
 * on the strength of its lines are undone, and s->unattributed tells
 * pg_batch_commit to isolate the row (isolate_rows, isolate).  Returns RC_DB, or the
 * failure of the rollback. */
rc_t pg_unattributed(struct pg_sink *s, int rolled_back)
{
    rc_t rc;

    for (size_t i = 0; i < s->n; i++)
        if ((s->dup[i] & RS_IN_LEDGER) && (s->dup[i] & RS_MASK) != RS_NO_ROW)
            s->dup[i] = RS_PENDING;
    pg_reset_attempt(s);
    if (!rolled_back && (rc = pg_run(s, "ROLLBACK", PGRES_COMMAND_OK, NULL)) != RC_OK)
        return rc;
    s->unattributed = 1;
    s->retryable = 0;
    s->phase = PH_IDLE; /* the connection is sound: isolation goes on with it */
    return RC_DB;
}

/* A refusal in the rows phase named no row (a trigger run at the end of
 * the COPY, a deferred constraint made to fire before COMMIT), or a line
 * that proved wrong: back to login_etl_batch (every row out, the ledger
 * kept, refusals made on the strength of lines undone), and the rows are
 * isolated in this same transaction (s->isolating).  Returns RC_OK, or what
 * unattributed returns when that savepoint cannot be returned to. */
rc_t pg_back_to_batch(struct pg_sink *s)
{
    /* The ledger COPY stays: keys without a row keep their entries (and
     * RS_IN_LEDGER), to be taken out before COMMIT. */
    for (size_t i = 0; i < s->n; i++)
        if ((s->dup[i] & RS_IN_LEDGER) && (s->dup[i] & RS_MASK) != RS_NO_ROW)
            s->dup[i] = RS_PENDING;
    s->refusal = 0;
    s->refused_row = NO_ROW;
    s->phase = PH_IDLE;
    if (!s->batch_savepoint || pg_run(s, ROLLBACK_BATCH_SQL, PGRES_COMMAND_OK, NULL) != RC_OK)
        return pg_unattributed(s, 0);
    log_at(s->lg, LOG_WARN, "a row was refused without its line: isolating it",
           LF_STR("reason", s->why), LF_NUM("rows", pg_pending_in(s, 0, s->n)));
    s->isolating = 1;
    s->known_bad = 1;
    s->op = 1;
    s->seg_from = s->seg_to = 0; /* isolate_rows sends the rows */
    return RC_OK;
}

/* The COPY of op s->refusal - 1 was refused for a row's data.  A refused
 * ledger COPY voids the transaction: the row is marked and *again is set.
 * A refused rows COPY is rolled back to its savepoint: the row is marked,
 * the rows before it are sent again (they passed once), then those after it
 * (unless the batch is FIFO).  Returns RC_OK, or the failure. */
rc_t pg_after_refusal(struct pg_sink *s, int *again)
{
    size_t r = s->refused_row;
    rc_t rc;

    if (s->refusal == 2 && (r == NO_ROW || s->rerun))
        return pg_back_to_batch(s);
    if (r == NO_ROW)
        return pg_unattributed(s, 0);
    if (s->refusal == 1) {
        pg_refuse_row(s, r, 0);
        pg_reset_attempt(s);
        if ((rc = pg_run(s, "ROLLBACK", PGRES_COMMAND_OK, NULL)) != RC_OK)
            return rc;
        *again = 1;
        return RC_OK;
    }
    s->refusal = 0;
    s->refused_row = NO_ROW;
    if ((rc = pg_run(s, ROLLBACK_ROWS_SQL, PGRES_COMMAND_OK, NULL)) != RC_OK)
        return rc;
    pg_refuse_row(s, r, 1);
    s->seg_to = r;
    s->chunk = TAIL_CHUNK;
    if (pg_pending_in(s, s->seg_from, s->seg_to)) {
        s->rerun = 1;
        s->op = 1;
        s->phase = PH_IDLE;
    } else if (!pg_next_segment(s)) {
        s->op = 2;
    }
    return RC_OK;
}

/* Sends the pending rows of [a, b) in a rows COPY of their own behind the
 * savepoint, rolled back to it when the server refuses one.  *refused is
 * then 1 and *row the refused row (NO_ROW when the server did not say).
 * Returns RC_OK or the failure. */
static rc_t copy_rows(struct pg_sink *s, size_t a, size_t b, int *refused, size_t *row)
{
    rc_t rc;

    *refused = 0;
    *row = NO_ROW;
    s->op = 1;
    s->phase = PH_IDLE;
    s->seg_from = a;
    s->seg_to = b;
    if ((rc = pg_pump(s, 1, 1)) != RC_OK || !s->refusal)
        return rc;
    *refused = 1;
    *row = s->refused_row;
    s->refusal = 0;
    s->refused_row = NO_ROW;
    return pg_run(s, ROLLBACK_ROWS_SQL, PGRES_COMMAND_OK, NULL);
}

static rc_t isolate_range(struct pg_sink *s, size_t a, size_t b, int known_bad, int again,
                          int open_tx, int *stop, int *whole);

/* isolate_range's first try of [a, b) in the open transaction: a rows COPY
 * of its own behind the savepoint (copy_rows).  A refusal that names its row
 * takes that row out and isolates the rows either side of it; unless
 * `again`: these rows went in once before a refused row, and a refusal
 * naming a row now means the names cannot be trusted (a failure when rows
 * are flushed in bulk names the last one read).  Returns RC_OK or the
 * failure; *settled is 0 when [a, b) is still to be cut (refused without a
 * usable row), else 1, with *whole saying whether it went in without a
 * refusal. */
static rc_t try_in_savepoint(struct pg_sink *s, size_t a, size_t b, int again, int *stop,
                             int *whole, int *settled)
{
    size_t r = NO_ROW;
    int refused = 1, ignored;
    rc_t rc = copy_rows(s, a, b, &refused, &r);

    *settled = 1;
    *whole = rc == RC_OK && !refused;
    if (rc != RC_OK || !refused)
        return rc;
    if (r == NO_ROW || again) {
        *settled = 0; /* no row to trust: [a, b) is cut */
        return RC_OK;
    }
    pg_refuse_row(s, r, 1);
    /* The rows before it first, FIFO or not: they are in the ledger and must
     * be written before anything stops. */
    if ((rc = isolate_range(s, a, r, 0, 1, 1, stop, &ignored)) != RC_OK)
        return rc;
    *stop = *stop || s->fifo;
    return isolate_range(s, r + 1, b, 0, 0, 1, stop, &ignored);
}

/* Writes the pending rows of [a, b) into the open transaction (its ledger
 * holds their ids), finding the ones the server refuses (isolate_range,
 * try_in_savepoint).  Deferred constraints were made immediate, so each
 * COPY fails for its own rows.  Arguments and result as isolate_range's. */
rc_t pg_isolate_rows(struct pg_sink *s, size_t a, size_t b, int known_bad, int again, int *stop,
                     int *whole)
{
    return isolate_range(s, a, b, known_bad, again, 1, stop, whole);
}

/* Writes the pending rows of [a, b) alone, in a transaction of their own.
 * Returns what write_pending returns; on RC_OK those rows are RS_DONE. */
static rc_t write_range(struct pg_sink *s, size_t a, size_t b)
{
    for (size_t i = 0; i < s->n; i++)
        if ((i < a || i >= b) && s->dup[i] == RS_PENDING)
            s->dup[i] = RS_OUT;
    rc_t rc = pg_write_pending(s);
    for (size_t i = 0; i < s->n; i++) {
        if (s->dup[i] == RS_OUT)
            s->dup[i] = RS_PENDING;
        else if (rc == RC_OK && s->dup[i] == RS_PENDING)
            s->dup[i] = RS_DONE;
    }
    return rc;
}

static size_t count_refused(const struct pg_sink *s, size_t a, size_t b)
{
    size_t count = 0;
    for (size_t i = a; i < b; i++)
        count += (s->dup[i] & RS_MASK) == RS_REFUSED;
    return count;
}

/* isolate_range's first try of [a, b) by transactions: a transaction of its
 * own (write_range).  Returns RC_OK or the failure; *settled is 0 when [a,
 * b) is still to be cut (a refusal without a row), else 1, with *whole
 * saying whether it went in without a refusal (*stop set on a failure that
 * is not a row's). */
static rc_t try_in_transaction(struct pg_sink *s, size_t a, size_t b, int *stop, int *whole,
                               int *settled)
{
    size_t refused = count_refused(s, a, b);
    rc_t rc = write_range(s, a, b);

    *settled = 1;
    if (rc == RC_OK) {
        /* Whole unless the server named refused rows in it on the way. */
        *whole = count_refused(s, a, b) == refused;
    } else if (s->unattributed) {
        *settled = 0; /* a row's data, the row unknown: [a, b) is cut */
        rc = RC_OK;
    } else {
        *stop = 1;
    }
    return rc;
}

/* Finds the rows of [a, b) the server refuses, with pending rows written
 * either in the open transaction behind its savepoint (`open_tx`: the
 * ledger holds their ids; try_in_savepoint) or each part in a transaction
 * of its own (try_in_transaction).  [a, b) is tried whole first unless
 * `known_bad`; when that fails without naming a row, it is cut into
 * ISOLATE_PARTS parts, each tried on its own, in order (FIFO order), down to
 * single rows, which are the refused ones.  When every part but the last
 * went in whole, the last is known to fail and is cut at once.  For one
 * refused row of n this writes about 1.15 n rows in about ISOLATE_PARTS *
 * log(n) / log(ISOLATE_PARTS) tries (halves would write about 1.5 n), each
 * bounded by the give-up time.  `again`: as try_in_savepoint says.  Sets
 * *stop when no more may be written (a FIFO batch's refused row, or a
 * failure).  Returns RC_OK or the failure that stopped it; *whole says
 * whether [a, b) went in without a refusal. */
static rc_t isolate_range(struct pg_sink *s, size_t a, size_t b, int known_bad, int again,
                          int open_tx, int *stop, int *whole)
{
    size_t pending = pg_pending_in(s, a, b);
    int settled = 0;
    rc_t rc;

    *whole = 0;
    if (*stop)
        return RC_OK;
    if (pending == 0) {
        *whole = 1;
        return RC_OK;
    }
    if (!known_bad) {
        rc = open_tx ? try_in_savepoint(s, a, b, again, stop, whole, &settled)
                     : try_in_transaction(s, a, b, stop, whole, &settled);
        if (settled)
            return rc;
    }
    if (pending == 1) {
        pg_refuse_row(s, first_pending(s, a, b), open_tx);
        *stop = s->fifo;
        return RC_OK;
    }
    size_t parts = b - a < ISOLATE_PARTS ? b - a : ISOLATE_PARTS;
    int all_whole = 1;
    for (size_t k = 0; k < parts; k++) {
        size_t from = a + (b - a) * k / parts, to = a + (b - a) * (k + 1) / parts;
        int part_whole = 0;
        /* [a, b) failed and the parts before did not: the refused row is in the last. */
        if ((rc = isolate_range(s, from, to, k == parts - 1 && all_whole, 0, open_tx, stop,
                                &part_whole)) != RC_OK)
            return rc;
        all_whole = all_whole && part_whole;
    }
    return RC_OK;
}

/* Finds the rows refused without a name, each part written in a
 * transaction of its own (isolate_range, try_in_transaction): for a refusal
 * the savepoints could not contain.  Arguments and result as
 * isolate_range's. */
rc_t pg_isolate(struct pg_sink *s, size_t a, size_t b, int known_bad, int *stop, int *whole)
{
    return isolate_range(s, a, b, known_bad, 0, 0, stop, whole);
}
