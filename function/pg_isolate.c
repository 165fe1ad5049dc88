/* pg_isolate.c - refused rows.  A row the server refuses for its data (a
 * trigger's RAISE EXCEPTION, a CHECK constraint, an index entry over the
 * b-tree limit) is taken out, and the rest of the batch written in the same
 * invocation.
 *
 * Three ways, each used only when the one before cannot:
 *  1. The refusal names its COPY line (pg_after_refusal): the rows COPY is
 *     rolled back to login_etl_rows and sent again without that row: the
 *     rows before it (ROWS_RERUN: they passed once), then the rest in parts
 *     that start at TAIL_CHUNK rows and double (pg_next_part).
 *  2. The refusal names no row (a trigger run at the end of the COPY, a
 *     deferred constraint fired before COMMIT), or a line that proved wrong:
 *     back to login_etl_batch, constraints made immediate, and the rows
 *     written part by part behind savepoints in the same transaction
 *     (pg_back_to_batch, pg_isolate_rows, ROWS_ISOLATE).
 *  3. Even that cannot contain it (a refusal in the ledger COPY, or still at
 *     COMMIT): the transaction is rolled back (pg_unattributed, TX_UNATTRIBUTED)
 *     and pg_tx.c writes the batch one part a transaction
 *     (pg_isolate_by_transactions); each part's transaction may use 1 and 2
 *     again, never 3: a part that cannot be contained ends its transaction
 *     and is cut further at this level.
 *
 * Ways 2 and 3 share one search, pg_isolate_range: a part is tried whole
 * (how: struct isolation's try_part, by savepoint here or by transaction in
 * pg_tx.c); a part refused without a usable row is cut into ISOLATE_PARTS
 * parts tried in order, down to single rows, which are the refused ones. */
#define _DEFAULT_SOURCE
#include "pg_int.h"

#include <string.h>

#define ISOLATE_PARTS 8 /* parts a refused part is cut into (pg_isolate_range) */

/* How many rows of [from, to) are still to be written; cannot fail. */
size_t pg_pending_in(const struct pg_sink *s, size_t from, size_t to)
{
    size_t count = 0;
    for (size_t i = from; i < to && i < s->n; i++)
        count += s->state[i] == RS_PENDING;
    return count;
}

/* The first row of [from, to) still to be written, or NO_ROW; cannot fail. */
static size_t first_pending(const struct pg_sink *s, size_t from, size_t to)
{
    for (size_t i = from; i < to && i < s->n; i++)
        if (s->state[i] == RS_PENDING)
            return i;
    return NO_ROW;
}

/* Marks row r refused and logs why (s->why: SQLSTATE, table, constraint;
 * never the server's text).  In a FIFO batch every row after it that was
 * still to be written is cut (not written, to keep the order).  `ids`: where
 * the ids of the rows taken out are, KEY_IN_LEDGER when the open
 * transaction's ledger holds them (to be taken out before COMMIT).  Cannot
 * fail. */
void pg_refuse_row(struct pg_sink *s, size_t r, enum ledger_mark ids)
{
    s->state[r] = RS_REFUSED;
    s->in_ledger[r] = (uint8_t)ids;
    if (s->fifo) {
        for (size_t i = r + 1; i < s->n; i++) {
            if (s->state[i] == RS_PENDING || s->state[i] == RS_OUT) {
                s->in_ledger[i] = (uint8_t)(s->state[i] == RS_PENDING ? ids : KEY_NOT_IN_LEDGER);
                s->state[i] = RS_CUT;
            }
        }
    }
    log_at(s->lg, LOG_WARN, "database refused a row", LF_NUM("row", r), LF_STR("reason", s->why));
}

/* After the rows COPY of [from, to) went in: readies the COPY of the next
 * part of the rest of the batch (the rows after a refused one), if any is
 * left.  The parts start at TAIL_CHUNK rows and double: a server that
 * refused one row may refuse more (an operator's CHECK), and each refusal
 * makes the client send its part again; so K refusals cost about K *
 * TAIL_CHUNK rows sent twice, not K times the rest of the batch, and one
 * refusal costs a few round trips.  Returns 1 when there is one to run, 0
 * when all rows are in. */
int pg_next_part(struct pg_sink *s)
{
    while (s->tx.to < s->n) {
        s->tx.from = s->tx.to;
        s->tx.to = s->n - s->tx.from > s->tx.chunk ? s->tx.from + s->tx.chunk : s->n;
        s->tx.chunk *= 2;
        s->tx.rows = ROWS_STREAM;
        if (pg_pending_in(s, s->tx.from, s->tx.to)) {
            s->tx.op = OP_ROWS;
            s->tx.phase = PH_IDLE;
            return 1;
        }
    }
    return 0;
}

/* A rows COPY of [tx.from, tx.to) went in behind login_etl_rows.  The
 * transaction keeps it (a subtransaction whose id the backend keeps until
 * the end) while it keeps fewer than KEPT_MAX; past that the part is rolled
 * back and its rows marked RS_PASSED, to be written together by one last
 * COPY (pg_final_part).  So however many rows are refused, the transaction
 * holds a bounded number of subtransaction ids; rows sent twice are the
 * price, paid only past KEPT_MAX parts.  When the transaction ends a part
 * (ROWS_FINAL) the parts kept meanwhile are RS_PENDING again.  Returns RC_OK
 * or the failure of the rollback. */
rc_t pg_part_in(struct pg_sink *s)
{
    if (s->tx.rows == ROWS_FINAL) {
        for (size_t i = 0; i < s->n; i++)
            if (s->state[i] == RS_KEPT)
                s->state[i] = RS_PENDING;
    }
    if (s->tx.rows == ROWS_FINAL || s->tx.kept < KEPT_MAX) {
        s->tx.kept++;
        return RC_OK;
    }
    rc_t rc = pg_run(s, ROLLBACK_ROWS_SQL, PGRES_COMMAND_OK, NULL);
    s->tx.rows_savepoint = 0;
    for (size_t i = s->tx.from; rc == RC_OK && i < s->tx.to && i < s->n; i++)
        if (s->state[i] == RS_PENDING)
            s->state[i] = RS_PASSED;
    return rc;
}

/* Every part is sorted: readies the COPY of the rows that went in alone in
 * parts rolled back (RS_PASSED, pg_part_in), all in one, ROWS_FINAL; the
 * rows of the parts kept are RS_KEPT meanwhile, so that they do not go in
 * twice.  Returns 1 when there is one to run, 0 when there are none.
 * Cannot fail. */
int pg_final_part(struct pg_sink *s)
{
    size_t passed = 0;

    for (size_t i = 0; i < s->n; i++)
        passed += s->state[i] == RS_PASSED;
    if (passed == 0)
        return 0;
    for (size_t i = 0; i < s->n; i++) {
        if (s->state[i] == RS_PENDING)
            s->state[i] = RS_KEPT;
        else if (s->state[i] == RS_PASSED)
            s->state[i] = RS_PENDING;
    }
    s->tx.from = 0;
    s->tx.to = s->n;
    s->tx.rows = ROWS_FINAL;
    s->tx.op = OP_ROWS;
    s->tx.phase = PH_IDLE;
    return 1;
}

/* Refusals made on the strength of the lines of a transaction being undone
 * are undone with it: its rows refused or cut (their keys in its ledger) are
 * to be written again, and so are the rows of the parts it rolled back
 * (RS_PASSED).  Cannot fail. */
static void undo_line_refusals(struct pg_sink *s)
{
    for (size_t i = 0; i < s->n; i++) {
        if (s->state[i] == RS_PASSED || s->state[i] == RS_KEPT)
            s->state[i] = RS_PENDING;
        if (s->in_ledger[i] == KEY_IN_LEDGER && s->state[i] != RS_NO_ROW) {
            s->state[i] = RS_PENDING;
            s->in_ledger[i] = KEY_NOT_IN_LEDGER;
        }
    }
}

/* The attempt failed on a row's data without naming the row (an error at
 * COMMIT from a deferred constraint trigger, a COPY error without a line, or
 * a line that proved wrong) and no savepoint can contain it: the
 * transaction is rolled back and refusals made on the strength of its lines
 * undone; *next is TX_UNATTRIBUTED, for the batch to be written one part a
 * transaction (not retryable: the same transaction would fail the same
 * way).  Returns RC_OK, or the failure of the rollback. */
rc_t pg_unattributed(struct pg_sink *s, enum tx_step *next)
{
    rc_t rc;

    undo_line_refusals(s);
    pg_tx_reset(s);
    if ((rc = pg_run(s, "ROLLBACK", PGRES_COMMAND_OK, NULL)) != RC_OK)
        return rc;
    s->retryable = 0;
    s->tx.phase = PH_IDLE; /* the connection is sound: isolation goes on with it */
    *next = TX_UNATTRIBUTED;
    return RC_OK;
}

/* A refusal in the rows phase named no row (a trigger run at the end of
 * the COPY, a deferred constraint made to fire before COMMIT), or a line
 * that proved wrong: back to login_etl_batch (every row out, the ledger
 * kept, refusals made on the strength of lines undone), and the rows are
 * isolated in this same transaction: *next is TX_ISOLATE.  When that
 * savepoint cannot be returned to, as pg_unattributed. */
rc_t pg_back_to_batch(struct pg_sink *s, enum tx_step *next)
{
    /* The ledger COPY stays: keys without a row keep their entries (and
     * KEY_IN_LEDGER), to be taken out before COMMIT. */
    undo_line_refusals(s);
    s->tx.halt = HALT_NONE;
    s->tx.refused_row = NO_ROW;
    s->tx.phase = PH_IDLE;
    if (!s->tx.batch_savepoint || pg_run(s, ROLLBACK_BATCH_SQL, PGRES_COMMAND_OK, NULL) != RC_OK)
        return pg_unattributed(s, next);
    s->tx.rows_savepoint = 0; /* ended with everything after login_etl_batch */
    s->tx.kept = 0;
    log_at(s->lg, LOG_WARN, "a row was refused without its line: isolating it",
           LF_STR("reason", s->why), LF_NUM("rows", pg_pending_in(s, 0, s->n)));
    s->tx.rows = ROWS_ISOLATE;
    s->tx.op = OP_ROWS;
    s->tx.from = s->tx.to = 0; /* pg_isolate_rows sends the rows */
    *next = TX_ISOLATE;
    return RC_OK;
}

/* The open transaction's COPYs halted on a refused row (HALT_LEDGER_REFUSED,
 * HALT_ROWS_REFUSED); *next is what the transaction does now.  A refused
 * ledger COPY voids the transaction: the row named is marked, the
 * transaction rolled back, and the rest written again (TX_AGAIN).  A refused
 * rows COPY is rolled back to its savepoint: the row is marked, the rows
 * before it are sent again (they passed once), then those after it (unless
 * the batch is FIFO): TX_COPY.  Without a row to trust, pg_back_to_batch or
 * pg_unattributed.  Returns RC_OK, or the failure. */
rc_t pg_after_refusal(struct pg_sink *s, enum tx_step *next)
{
    size_t r = s->tx.refused_row;
    rc_t rc;

    if (s->tx.rows == ROWS_FINAL)
        return pg_unattributed(s, next); /* rows that passed alone fail together */
    if (s->tx.halt == HALT_ROWS_REFUSED && (r == NO_ROW || s->tx.rows == ROWS_RERUN))
        return pg_back_to_batch(s, next);
    if (r == NO_ROW)
        return pg_unattributed(s, next);
    if (s->tx.halt == HALT_LEDGER_REFUSED) {
        pg_refuse_row(s, r, KEY_NOT_IN_LEDGER);
        pg_tx_reset(s);
        if ((rc = pg_run(s, "ROLLBACK", PGRES_COMMAND_OK, NULL)) == RC_OK)
            *next = TX_AGAIN;
        return rc;
    }
    s->tx.halt = HALT_NONE;
    s->tx.refused_row = NO_ROW;
    if ((rc = pg_run(s, ROLLBACK_ROWS_SQL, PGRES_COMMAND_OK, NULL)) != RC_OK)
        return rc;
    s->tx.rows_savepoint = 0;
    pg_refuse_row(s, r, KEY_IN_LEDGER);
    s->tx.to = r;
    s->tx.chunk = TAIL_CHUNK;
    if (pg_pending_in(s, s->tx.from, s->tx.to)) {
        s->tx.rows = ROWS_RERUN;
        s->tx.op = OP_ROWS;
        s->tx.phase = PH_IDLE;
    } else if (!pg_next_part(s)) {
        s->tx.op = OP_DONE;
    }
    *next = TX_COPY;
    return RC_OK;
}

/* Sends the pending rows of part r in a rows COPY of their own behind
 * login_etl_rows, rolled back to it when the server refuses one: *refused is
 * then 1 and *row the refused row (NO_ROW when the server did not say).
 * Returns RC_OK or the failure. */
static rc_t copy_rows(struct pg_sink *s, struct range r, int *refused, size_t *row)
{
    rc_t rc;

    *refused = 0;
    *row = NO_ROW;
    s->tx.op = OP_ROWS;
    s->tx.phase = PH_IDLE;
    s->tx.from = r.from;
    s->tx.to = r.to;
    if ((rc = pg_copy_finish(s)) != RC_OK)
        return rc;
    if (s->tx.halt == HALT_NONE)
        return pg_part_in(s);
    *refused = 1;
    *row = s->tx.refused_row;
    s->tx.halt = HALT_NONE;
    s->tx.refused_row = NO_ROW;
    s->tx.rows_savepoint = 0;
    return pg_run(s, ROLLBACK_ROWS_SQL, PGRES_COMMAND_OK, NULL);
}

/* pg_try_fn in the open transaction: part r in a rows COPY of its own
 * behind the savepoint (copy_rows).  A refusal that names its row takes
 * that row out and searches the rows either side of it; unless the part
 * passed before (RANGE_PASSED): a refusal naming a row then means the names
 * cannot be trusted (a failure when rows are flushed in bulk names the last
 * one read), and the part is cut.  Returns RC_OK or the failure. */
static rc_t try_in_savepoint(struct pg_sink *s, struct isolation *iso, struct range r,
                             enum tried *tried)
{
    size_t row = NO_ROW;
    int refused = 1;
    enum tried part;
    rc_t rc = copy_rows(s, r, &refused, &row);

    *tried = TRIED_WHOLE;
    if (rc != RC_OK || !refused)
        return rc;
    if (row == NO_ROW || r.hint == RANGE_PASSED) {
        *tried = TRIED_UNSETTLED; /* no row to trust: r is cut */
        return RC_OK;
    }
    *tried = TRIED_SORTED;
    pg_refuse_row(s, row, KEY_IN_LEDGER);
    /* The rows before it first, FIFO or not: they are in the ledger and must
     * be written before anything stops. */
    struct range before = {r.from, row, RANGE_PASSED}, after = {row + 1, r.to, RANGE_UNTRIED};
    if ((rc = pg_isolate_range(s, iso, before, &part)) != RC_OK)
        return rc;
    iso->stop = iso->stop || s->fifo;
    return pg_isolate_range(s, iso, after, &part);
}

/* Was the last refusal a COPY short of the server's lock memory (53200,
 * pg_copy.c), not a row's data?  Cannot fail. */
static int short_of_memory(const struct pg_sink *s)
{
    return strcmp(s->sqlstate, "53200") == 0;
}

/* Part r failed whole without a usable row: cuts it into ISOLATE_PARTS
 * parts, each searched on its own, in order (FIFO order).  When every part
 * but the last went in whole, the last is known to fail and is cut at once.
 * Returns RC_OK or the failure that stopped it. */
static rc_t cut(struct pg_sink *s, struct isolation *iso, struct range r)
{
    size_t len = r.to - r.from, parts = len < ISOLATE_PARTS ? len : ISOLATE_PARTS;
    int all_whole = 1;
    rc_t rc = RC_OK;

    for (size_t k = 0; k < parts && rc == RC_OK; k++) {
        /* r failed and the parts before did not: the refused row is in the last. */
        struct range part = {r.from + len * k / parts, r.from + len * (k + 1) / parts,
                             k == parts - 1 && all_whole ? RANGE_BAD : RANGE_UNTRIED};
        enum tried part_tried;
        rc = pg_isolate_range(s, iso, part, &part_tried);
        all_whole = all_whole && part_tried == TRIED_WHOLE;
    }
    return rc;
}

/* Finds the rows of part r the server refuses, trying parts by
 * iso->try_part: r whole first, unless RANGE_BAD; when that fails without a
 * usable row, cut into parts, down to single rows, which are the refused
 * ones.  For one refused row of n this writes about 1.15 n rows in about
 * ISOLATE_PARTS * log(n) / log(ISOLATE_PARTS) tries (halves would write
 * about 1.5 n), each bounded by the give-up time.  Sets iso->stop when no
 * more may be written (a FIFO batch's refused row, or a failure).  Returns
 * RC_OK or the failure that stopped it; *tried says whether r went in
 * without a refusal (TRIED_WHOLE) or not (TRIED_SORTED: its refused rows,
 * if any, are out; or the search stopped). */
rc_t pg_isolate_range(struct pg_sink *s, struct isolation *iso, struct range r, enum tried *tried)
{
    size_t pending = pg_pending_in(s, r.from, r.to);
    rc_t rc;

    *tried = pending == 0 && !iso->stop ? TRIED_WHOLE : TRIED_SORTED;
    if (iso->stop || pending == 0)
        return RC_OK;
    if (short_of_memory(s) && r.hint == RANGE_BAD)
        r.hint = RANGE_UNTRIED; /* a part too big says nothing of its rows */
    if (r.hint != RANGE_BAD) {
        enum tried whole = TRIED_UNSETTLED;
        rc = iso->try_part(s, iso, r, &whole);
        if (rc != RC_OK || whole != TRIED_UNSETTLED) {
            *tried = rc == RC_OK && whole == TRIED_WHOLE ? TRIED_WHOLE : TRIED_SORTED;
            return rc;
        }
    }
    if (pending == 1 && short_of_memory(s)) {
        s->tx.phase = PH_BROKEN; /* even one row is too much: no refusal, a failure */
        s->retryable = 0;
        iso->stop = 1;
        return RC_DB;
    }
    if (pending == 1) {
        pg_refuse_row(s, first_pending(s, r.from, r.to), iso->ids);
        iso->stop = s->fifo;
        return RC_OK;
    }
    return cut(s, iso, r);
}

/* TX_ISOLATE: writes the pending rows into the open transaction (its ledger
 * holds their ids), part by part behind login_etl_rows, finding the ones the
 * server refuses (pg_isolate_range, try_in_savepoint).  Deferred
 * constraints were made immediate, so each COPY fails for its own rows; the
 * whole batch failed already (RANGE_BAD).  Returns RC_OK or the failure. */
rc_t pg_isolate_rows(struct pg_sink *s)
{
    struct isolation iso = {try_in_savepoint, KEY_IN_LEDGER, 0};
    struct range all = {0, s->n, RANGE_BAD};
    enum tried tried;

    return pg_isolate_range(s, &iso, all, &tried);
}
