/* rekey_scan.c - re-masking the stored values of a table (rekey_int.h).
 *
 * How the rows are found.  user_logins has no key, and may be partitioned
 * (by create_date, or any other way): each heap relation that holds rows (the
 * table itself, or each leaf partition) is read by ranges of blocks,
 * "ctid >= '(b,0)' AND ctid < '(e,0)'", which the server answers with a TID
 * range scan of just those blocks, keeping only the rows with a value not
 * under the current key id.  The range widens where such rows are sparse
 * (a run after an interrupted one) and narrows where they are dense, so a
 * read returns about one transaction's rows and no read covers more than
 * REKEY_SPAN_MAX blocks.  Nothing is scanned twice within a pass, and no
 * index is needed.
 *
 * How they are written.  The rows of a range that hold a value under a
 * retired key are re-masked here (keyset_remask: recovered with the key its
 * own prefix names, masked with the current key) and written back in
 * transactions of at most target_rows rows, each one UPDATE of the rows by
 * their ctid that replaces a value only where the row still holds exactly
 * what was read.  A row changed meanwhile (by another rekey, or anyone) is
 * left alone and counted; a later pass reads it again.  The transaction sets
 * its own lock_timeout, statement_timeout and idle timeout (SET LOCAL, so
 * nothing stays on the session), and takes only row locks on its own rows
 * and the ROW EXCLUSIVE table lock every writer takes, which the function's
 * COPY does not conflict with; transactions that take longer than half of
 * max_txn_ms make the next ones smaller.  While the functions load (other
 * sessions write: the server hands out transaction ids the run did not take)
 * the run works only busy_share percent of the time (rekey_yield), so that
 * the functions keep most of the machine.
 *
 * Why a run can be killed at any moment (SIGKILL included): a row is either
 * as it was or re-masked, as each transaction commits whole or not at all; a
 * re-masked value carries the current key id, so no later read selects it
 * and nothing is ever re-masked twice, nor from any key but the one its own
 * prefix names.  A new run starts from the first block again, reading past
 * what is done at the speed of a scan.
 *
 * Rows the functions insert meanwhile are masked with the current key
 * already (the key is deployed first: docs/operations.md); rows that land
 * past the end of a relation while it is read (new rows, and the new
 * versions of the rows re-masked) are read by a pass over the blocks added,
 * repeated while such a pass still finds work, up to REKEY_PASSES_MAX passes;
 * after a pass that found rows changed meanwhile, the whole relation is read
 * again. */
#include "rekey_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"

#define REKEY_ROWS_MIN 100     /* a transaction is never made smaller than this */
#define REKEY_IDLE_GUARD 60000 /* ms: the server ends a transaction left idle this long */
#define REKEY_BUSY_MS                                                                              \
    1000 /* the tables count as being loaded this long after a writer                              \
            was seen: the gap between two invocations */

/* Failures in a row of one step, for the retry decision (rekey_again). */
struct rekey_try {
    struct backoff wait; /* between attempts */
    int64_t first_ms;    /* clock_mono_ms of the first failure in a row, 0 for none */
};

/* What one transaction's worth of rows did, added to the run's statistics
 * when the transaction commits (so that a retried range is not counted
 * twice). */
struct rekey_pending {
    uint64_t rows;       /* rows in the UPDATE's arrays */
    uint64_t visited;    /* rows read since the last commit */
    uint64_t unknown;    /* values under a key id the set lacks */
    uint64_t not_masked; /* values not shaped like masked ones */
    uint64_t failed;     /* values that do not authenticate under their id's key */
    uint64_t too_long;   /* values whose re-masked form exceeds their column */
};

/* The statements of one heap relation, built once for it. */
struct rekey_leaf {
    const struct rekey_table *t; /* its table: the columns */
    const char *name;            /* the relation, quoted */
    struct buf select;           /* the range read */
    struct buf update;           /* the compare-and-set write */
};

/* After a failed step: returns 1, after a wait, when it should be tried
 * again (rekey_db_retryable, the stop flag not set, REKEY_RETRY_MS of
 * failures in a row not reached), else 0.  A timeout halves the
 * transactions' size.  Cannot fail. */
static int rekey_again(struct rekey *r, struct rekey_try *tr)
{
    int64_t now = clock_mono_ms();
    const char *state = rekey_db_sqlstate(r);

    if (*r->stop || !rekey_db_retryable(r))
        return 0;
    if (tr->first_ms == 0)
        tr->first_ms = now;
    if (now - tr->first_ms > REKEY_RETRY_MS)
        return 0;
    if (strcmp(state, "57014") == 0 || strcmp(state, "55P03") == 0)
        r->target_rows = r->target_rows / 2 > REKEY_ROWS_MIN ? r->target_rows / 2 : REKEY_ROWS_MIN;
    r->st.retries++;
    clock_sleep_ms(backoff_next(&tr->wait));
    return 1;
}

/* A step succeeded: the next failure starts a new count.  Cannot fail. */
static void rekey_ok(struct rekey_try *tr)
{
    tr->first_ms = 0;
    backoff_reset(&tr->wait);
}

/* Builds the leaf's two statements.  Returns RC_OK or RC_NOMEM. */
static rc_t rekey_leaf_sql(struct rekey *r, struct rekey_leaf *l)
{
    const struct rekey_table *t = l->t;
    struct buf *s = &l->select, *u = &l->update;

    buf_printf(s, "SELECT ctid");
    for (size_t j = 0; j < t->ncols; j++)
        buf_printf(s, ", %s", t->column[j]);
    buf_printf(s, " FROM ONLY %s WHERE ctid >= $1::tid AND ctid < $2::tid AND (", l->name);
    for (size_t j = 0; j < t->ncols; j++)
        buf_printf(s, "%sNOT coalesce(starts_with(%s, $3), true)", j ? " OR " : "", t->column[j]);
    buf_appendc(s, ')');

    buf_printf(u, "WITH u AS (UPDATE ONLY %s AS t SET ", l->name);
    for (size_t j = 0; j < t->ncols; j++)
        buf_printf(u, "%s%s = coalesce(v.n%zu, t.%s)", j ? ", " : "", t->column[j], j,
                   t->column[j]);
    buf_appends(u, " FROM unnest($1::tid[]");
    for (size_t j = 0; j < t->ncols; j++)
        buf_printf(u, ", $%zu::text[], $%zu::text[]", 2 + 2 * j, 3 + 2 * j);
    buf_appends(u, ") AS v(c");
    for (size_t j = 0; j < t->ncols; j++)
        buf_printf(u, ", o%zu, n%zu", j, j);
    buf_appends(u, ") WHERE t.ctid = ANY($1::tid[]) AND t.ctid = v.c");
    for (size_t j = 0; j < t->ncols; j++)
        buf_printf(u, " AND (v.n%zu IS NULL OR t.%s = v.o%zu)", j, t->column[j], j);
    buf_appends(u, " RETURNING 0");
    for (size_t j = 0; j < t->ncols; j++)
        buf_printf(u, " + (v.n%zu IS NOT NULL)::int", j);
    buf_appends(u, " AS k) SELECT count(*), coalesce(sum(k), 0) FROM u");
    if (s->err || u->err) {
        snprintf(r->why, ERR_LEN, "out of memory");
        return RC_NOMEM;
    }
    return RC_OK;
}

/* Starts the UPDATE's arrays afresh: "{" each; cannot fail (buf's sticky
 * error). */
static void rekey_arrays_open(struct rekey *r, size_t ncols)
{
    for (size_t k = 0; k < 1 + 2 * ncols; k++) {
        buf_reset(&r->arg[k]);
        buf_appendc(&r->arg[k], '{');
    }
}

/* Appends one element to an array literal: NULL, or v[0..n) in double
 * quotes with '"' and '\' escaped; cannot fail (sticky error). */
static void rekey_array_add(struct buf *b, const char *v, size_t n)
{
    if (b->len > 1)
        buf_appendc(b, ',');
    if (!v) {
        buf_appends(b, "NULL");
        return;
    }
    buf_appendc(b, '"');
    for (size_t i = 0; i < n; i++) {
        if (v[i] == '"' || v[i] == '\\')
            buf_appendc(b, '\\');
        buf_appendc(b, v[i]);
    }
    buf_appendc(b, '"');
}

/* Adds what a transaction did to the run's statistics; cannot fail. */
static void rekey_commit_stats(struct rekey *r, const struct rekey_pending *p, uint64_t written,
                               uint64_t values)
{
    r->st.rows_visited += p->visited;
    r->st.rows_written += written;
    r->st.values_remasked += values;
    r->st.rows_changed += p->rows - written;
    r->st.values_unknown += p->unknown;
    r->st.values_not_masked += p->not_masked;
    r->st.values_failed += p->failed;
    r->st.values_too_long += p->too_long;
}

/* Counts a committed transaction that took `took` ms, and sizes the next
 * ones: halved after one over max_txn_ms / 2, doubled up to batch_rows after
 * one under max_txn_ms / 4.  Cannot fail. */
static void rekey_took(struct rekey *r, int64_t took)
{
    r->st.transactions++;
    if (took > r->st.longest_txn_ms)
        r->st.longest_txn_ms = took;
    if (took > r->max_txn_ms / 2 && r->target_rows > REKEY_ROWS_MIN)
        r->target_rows = r->target_rows / 2 > REKEY_ROWS_MIN ? r->target_rows / 2 : REKEY_ROWS_MIN;
    else if (took < r->max_txn_ms / 4 && r->target_rows < r->batch_rows)
        r->target_rows = r->target_rows * 2 < r->batch_rows ? r->target_rows * 2 : r->batch_rows;
}

/* Writes the rows in the arrays (p->rows of them; none: only the counts are
 * taken) in one transaction, then resizes the next ones by how long this
 * one took.  Returns RC_OK or RC_DB with r->why filled (the transaction is
 * rolled back). */
static rc_t rekey_write(struct rekey *r, const struct rekey_leaf *l, struct rekey_pending *p)
{
    const char *params[1 + 2 * REKEY_COLUMNS_MAX];
    char begin[200];
    PGresult *res = NULL;
    int64_t t0 = clock_mono_ms();
    uint64_t written = 0, values = 0;
    int nparams = (int)(1 + 2 * l->t->ncols);
    rc_t rc = RC_OK;

    if (p->rows == 0)
        goto done;
    for (int k = 0; k < nparams; k++) {
        buf_appendc(&r->arg[k], '}');
        if ((rc = r->arg[k].err) != RC_OK) {
            snprintf(r->why, ERR_LEN, "out of memory");
            goto out;
        }
        params[k] = r->arg[k].data;
    }
    /* synchronous_commit off: a commit the server loses in a crash leaves
     * its rows under the old key, which the next run (or --verify) finds;
     * nothing waits for the WAL flush meanwhile. */
    snprintf(begin, sizeof begin,
             "BEGIN; SET LOCAL lock_timeout = %ld; SET LOCAL statement_timeout = %ld; "
             "SET LOCAL idle_in_transaction_session_timeout = %d; "
             "SET LOCAL synchronous_commit = off",
             r->max_txn_ms, r->max_txn_ms * 10 > 2000 ? r->max_txn_ms * 10 : 2000,
             REKEY_IDLE_GUARD);
    r->own_xids++; /* the UPDATE's transaction takes one, whatever becomes of it */
    if ((rc = rekey_db_exec(r, "begin", begin, 0, NULL, PGRES_COMMAND_OK, NULL)) != RC_OK ||
        (rc = rekey_db_exec(r, "re-mask", l->update.data, nparams, params, PGRES_TUPLES_OK,
                            &res)) != RC_OK)
        goto out;
    if ((rc = rekey_db_count(r, PQgetvalue(res, 0, 0), &written)) != RC_OK ||
        (rc = rekey_db_count(r, PQgetvalue(res, 0, 1), &values)) != RC_OK)
        goto out;
    PQclear(res);
    res = NULL;
    if ((rc = rekey_db_exec(r, "commit", "COMMIT", 0, NULL, PGRES_COMMAND_OK, &res)) != RC_OK)
        goto out;
    if (strcmp(PQcmdStatus(res), "COMMIT") != 0) {
        snprintf(r->why, ERR_LEN, "commit: the server rolled the transaction back");
        rc = RC_DB;
        goto out;
    }
    rekey_took(r, clock_mono_ms() - t0);
done:
    rekey_commit_stats(r, p, written, values);
    memset(p, 0, sizeof *p);
    rekey_arrays_open(r, l->t->ncols);
out:
    PQclear(res);
    if (rc && r->conn && PQtransactionStatus(r->conn) != PQTRANS_IDLE)
        PQclear(PQexec(r->conn, "ROLLBACK"));
    return rc;
}

/* Re-masks one row of a range read (row i of res) into the arrays, counting
 * what cannot be re-masked into p.  Returns RC_OK or RC_NOMEM. */
static rc_t rekey_row(struct rekey *r, const struct rekey_leaf *l, const PGresult *res, int i,
                      struct rekey_pending *p)
{
    const struct rekey_table *t = l->t;
    char fresh[REKEY_COLUMNS_MAX][MASK_OUTPUT_MAX];
    const char *fresh_p[REKEY_COLUMNS_MAX];
    struct buf longer[REKEY_COLUMNS_MAX]; /* a value longer than a column's (a quarantined
                                             body): re-masked on the heap */
    size_t fresh_len[REKEY_COLUMNS_MAX] = {0};
    int changed[REKEY_COLUMNS_MAX] = {0}, any = 0;
    char why[ERR_LEN]; /* keyset_remask's reason, not reported: the count says enough */

    p->visited++;
    for (size_t j = 0; j < t->ncols; j++)
        buf_init(&longer[j], SIZE_MAX / 4);
    for (size_t j = 0; j < t->ncols; j++) {
        const char *v = PQgetvalue(res, i, (int)j + 1);
        size_t n = (size_t)PQgetlength(res, i, (int)j + 1);
        const struct mask_key *k;
        if (PQgetisnull(res, i, (int)j + 1))
            continue;
        switch (keyset_classify(r->keys, v, n, &k)) {
        case KEYSET_CURRENT:
            continue;
        case KEYSET_UNKNOWN_ID:
            p->unknown++;
            continue;
        case KEYSET_NOT_MASKED:
            p->not_masked++;
            continue;
        case KEYSET_RETIRED:
            break;
        }
        fresh_p[j] = fresh[j];
        if (n >= MASK_OUTPUT_MAX
                ? keyset_remask_long(r->keys, v, n, &longer[j], why) != RC_OK
                : keyset_remask(r->keys, v, n, fresh[j], &fresh_len[j], why) != RC_OK) {
            p->failed++; /* altered, or the set's key for that id is another key */
            continue;
        }
        if (n >= MASK_OUTPUT_MAX) {
            fresh_p[j] = longer[j].data;
            fresh_len[j] = longer[j].len;
        }
        if (t->limit[j] > 0 && fresh_len[j] > (size_t)t->limit[j]) {
            p->too_long++;
            continue;
        }
        changed[j] = any = 1;
    }
    if (any) {
        rekey_array_add(&r->arg[0], PQgetvalue(res, i, 0), (size_t)PQgetlength(res, i, 0));
        for (size_t j = 0; j < t->ncols; j++) {
            const char *old = changed[j] ? PQgetvalue(res, i, (int)j + 1) : NULL;
            rekey_array_add(&r->arg[1 + 2 * j], old,
                            old ? (size_t)PQgetlength(res, i, (int)j + 1) : 0);
            rekey_array_add(&r->arg[2 + 2 * j], changed[j] ? fresh_p[j] : NULL, fresh_len[j]);
        }
        p->rows++;
    }
    for (size_t j = 0; j < t->ncols; j++)
        buf_free(&longer[j]);
    return r->arg[0].err ? RC_NOMEM : RC_OK;
}

/* Sleeps as long as needed for the rows visited so far not to exceed
 * --max-rate on average since the work began.  Called after each
 * transaction, not only after each range: a range read after blocks already
 * re-masked (a run after an interrupted one) is as wide as REKEY_SPAN_MAX
 * and may hold the whole rest of the table.  Cannot fail. */
static void rekey_pace(struct rekey *r)
{
    if (r->max_rate <= 0)
        return;
    int64_t due = r->started_ms + (int64_t)(r->st.rows_visited * 1000 / (uint64_t)r->max_rate);
    clock_sleep_ms(due - clock_mono_ms());
}

/* Reads the blocks [b, e) of a relation and re-masks its rows under retired
 * keys, in transactions of at most target_rows rows, paced by --max-rate and
 * ending after the transaction in progress when the run is asked to stop.
 * *selected gets the rows read.  Returns RC_OK, or the failure with r->why filled (the rows of
 * transactions committed before it stay re-masked). */
static rc_t rekey_range(struct rekey *r, const struct rekey_leaf *l, uint64_t b, uint64_t e,
                        uint64_t *selected)
{
    char from[32], to[32];
    const char *params[3] = {from, to, r->prefix};
    struct rekey_pending p = {0};
    PGresult *res = NULL;
    rc_t rc;

    snprintf(from, sizeof from, "(%llu,0)", (unsigned long long)b);
    snprintf(to, sizeof to, "(%llu,0)", (unsigned long long)e);
    *selected = 0;
    if ((rc = rekey_db_exec(r, "read", l->select.data, 3, params, PGRES_TUPLES_OK, &res)) != RC_OK)
        goto out;
    *selected = (uint64_t)PQntuples(res);
    rekey_arrays_open(r, l->t->ncols);
    for (int i = 0; i < PQntuples(res); i++) {
        if ((rc = rekey_row(r, l, res, i, &p)) != RC_OK) {
            snprintf(r->why, ERR_LEN, "out of memory");
            goto out;
        }
        if (p.rows < (uint64_t)r->target_rows)
            continue;
        if ((rc = rekey_write(r, l, &p)) != RC_OK)
            goto out;
        rekey_pace(r);
        if (*r->stop)
            break; /* the rest of the range waits for the next run */
    }
    rc = rekey_write(r, l, &p);
out:
    PQclear(res);
    return rc;
}

/* Yields to the functions: after each range, reads the next transaction id
 * the server will assign (rekey_db_next_xid); when it moved on by more than
 * the run's own writes, another session committed or began a write since
 * the last look, and for REKEY_BUSY_MS after that the run pauses so as to
 * work only busy_share percent of the time, range_ms being what the range
 * took.  A failure to look is ignored (the next statement meets it).
 * Cannot fail. */
static void rekey_yield(struct rekey *r, int64_t range_ms)
{
    uint64_t next = 0;
    int64_t now = clock_mono_ms();

    if (r->busy_share >= 100)
        return;
    if (rekey_db_next_xid(r, &next) == RC_OK) {
        if (r->next_xid && next > r->next_xid + (r->own_xids - r->own_xids_seen))
            r->busy_until = now + REKEY_BUSY_MS;
        r->next_xid = next;
        r->own_xids_seen = r->own_xids;
    }
    r->busy = now < r->busy_until;
    if (r->busy) {
        int64_t pause = range_ms * (100 - r->busy_share) / r->busy_share;
        clock_sleep_ms(pause);
        r->st.yielded_ms += pause;
    }
}

/* The next range's width: about target_rows rows at the density the last
 * read found, within a quarter and four times the last width, and within
 * [1, REKEY_SPAN_MAX] blocks.  Cannot fail. */
static uint64_t rekey_next_span(const struct rekey *r, uint64_t span, uint64_t selected)
{
    uint64_t want = selected ? span * (uint64_t)r->target_rows / selected : span * 4;
    if (want > span * 4)
        want = span * 4;
    if (want < span / 4)
        want = span / 4;
    if (want < 1)
        want = 1;
    return want > REKEY_SPAN_MAX ? REKEY_SPAN_MAX : want;
}

/* One pass over the blocks [from, to) of a relation, retrying failed
 * ranges.  Returns RC_OK (also when stopped), or the failure. */
static rc_t rekey_pass(struct rekey *r, const struct rekey_leaf *l, uint64_t from, uint64_t to,
                       struct rekey_try *tr)
{
    uint64_t b = from, selected = 0;
    /* The first range as wide as target_rows rows would be at the densest. */
    uint64_t span = (uint64_t)r->target_rows / REKEY_ROWS_PER_BLOCK
                        ? (uint64_t)r->target_rows / REKEY_ROWS_PER_BLOCK
                        : 1;
    rc_t rc = RC_OK;

    while (b < to && !*r->stop) {
        uint64_t e = to - b > span ? b + span : to;
        int64_t t0 = clock_mono_ms();
        if ((rc = rekey_range(r, l, b, e, &selected)) != RC_OK) {
            if (rekey_again(r, tr))
                continue;
            return rc;
        }
        rekey_ok(tr);
        b = e;
        span = rekey_next_span(r, span, selected);
        rekey_yield(r, clock_mono_ms() - t0);
        rekey_pace(r);
        rekey_progress(r);
    }
    return RC_OK;
}

/* Reads a relation's size, retrying as rekey_again says.  Returns RC_OK or
 * the failure. */
static rc_t rekey_blocks(struct rekey *r, const char *leaf, uint64_t *blocks, struct rekey_try *tr)
{
    rc_t rc;
    while ((rc = rekey_db_blocks(r, leaf, blocks)) != RC_OK && rekey_again(r, tr))
        ;
    if (rc == RC_OK)
        rekey_ok(tr);
    return rc;
}

/* Re-masks one heap relation, in passes (see the top of this file).
 * Returns RC_OK (also when stopped) or the failure. */
static rc_t rekey_leaf_run(struct rekey *r, struct rekey_leaf *l, struct rekey_try *tr)
{
    uint64_t from = 0, to = 0, now = 0;
    rc_t rc;

    if ((rc = rekey_leaf_sql(r, l)) != RC_OK || (rc = rekey_blocks(r, l->name, &to, tr)) != RC_OK)
        return rc;
    for (int pass = 0; pass < REKEY_PASSES_MAX && !*r->stop; pass++) {
        uint64_t changed = r->st.rows_changed, written = r->st.rows_written;
        if ((rc = rekey_pass(r, l, from, to, tr)) != RC_OK || *r->stop ||
            (rc = rekey_blocks(r, l->name, &now, tr)) != RC_OK)
            return rc;
        if (r->st.rows_changed > changed) {
            from = 0; /* rows changed meanwhile: read them all again */
        } else if (r->st.rows_written > written && now > to) {
            from = to; /* rows may have landed past the end: read what was added */
        } else {
            break;
        }
        to = now;
    }
    return RC_OK;
}

/* See rekey_int.h. */
rc_t rekey_scan_table(struct rekey *r, struct rekey_table *t)
{
    struct rekey_try tr = {.first_ms = 0};
    rc_t rc = RC_OK;

    backoff_init(&tr.wait, 100, 5000);
    for (size_t i = 0; i < t->nleaves && rc == RC_OK && !*r->stop; i++) {
        struct rekey_leaf l = {.t = t, .name = t->leaf[i]};
        buf_init(&l.select, 64 * 1024);
        buf_init(&l.update, 64 * 1024);
        rc = rekey_leaf_run(r, &l, &tr);
        buf_free(&l.select);
        buf_free(&l.update);
    }
    return rc;
}
