/* pg_quarantine.c - records the function will never accept, kept in
 * login_etl_rejected (pg_schema.c creates it) by the batch's own
 * transaction, so that SQS can delete them exactly once like the rows.
 *
 * A quarantined message's id goes into the ledger with it, in one
 * statement (QUARANTINE_SQL): the ledger insert skips an id committed
 * before (ON CONFLICT DO NOTHING, which waits for a concurrent writer of the
 * same id), and only the ids it inserted get their row in
 * login_etl_rejected.  So a replay adds nothing, and two invocations that
 * hold the same message quarantine it once.  The entries are of two kinds:
 * a record the rules reject, given by the caller with its masked body
 * (pg_batch_quarantine); and a row the server refused for its data
 * (RS_REFUSED), whose masked body the caller's pg_body_fn writes when the
 * statement is built.  A refused row's id was taken back out of the
 * transaction's ledger before this step (TX_UNLEDGER), so the statement
 * meets only ids committed by others.
 *
 * The statement runs last before COMMIT (TX_QUARANTINE, pg_tx.c), again in
 * every transaction that is tried, as a rolled-back one takes its entries
 * with it; an entry counts as quarantined once its transaction committed
 * (pg_quarantine_committed).  When no row is left to write, the entries go
 * in a transaction of their own (pg_quarantine_alone). */
#define _DEFAULT_SOURCE
#include "pg_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "num.h"

#define Q_INT2_ARRAY_OID 1005
#define Q_TIMESTAMPTZ_ARRAY_OID 1185
#define Q_UUID_ARRAY_OID 2951
#define Q_TEXT_ARRAY_OID 1009
#define Q_TIMESTAMPTZ_OID 1184
#define Q_UUID_OID 2950
#define Q_TEXT_OID 25
#define Q_INT2_OID 21
#define Q_PARAMS 6

/* $1 slots, $2 sent_at (the ledger's: -infinity when none), $3 ledger
 * keys, $4 SQS message ids, $5 reasons, $6 masked bodies; answers the
 * 1-based position of each entry it quarantined. */
#define QUARANTINE_SQL                                                                             \
    "WITH q AS (SELECT * FROM unnest($1::int2[], $2::timestamptz[], $3::uuid[], $4::text[], "      \
    "$5::text[], $6::text[]) WITH ORDINALITY AS q(slot, sent_at, key, message_id, reason, body, "  \
    "ord)), "                                                                                      \
    "l AS (INSERT INTO " LEDGER " (slot, sent_at, message_id) SELECT slot, sent_at, key FROM q "   \
    "ON CONFLICT DO NOTHING RETURNING slot, sent_at, message_id), "                                \
    "k AS (SELECT q.* FROM q JOIN l ON l.slot = q.slot AND l.sent_at = q.sent_at "                 \
    "AND l.message_id = q.key), "                                                                  \
    "r AS (INSERT INTO " REJECTED " (message_id, sent_at, reason, masked_body) "                   \
    "SELECT message_id, nullif(sent_at, '-infinity'), reason, body FROM k) "                       \
    "SELECT ord FROM k"

/* The quarantine's statement runs behind a savepoint of its own, so that a
 * refusal of its data (store_one_by_one) costs it alone. */
#define QUARANTINE_SAVEPOINT_SQL "SAVEPOINT login_etl_quarantine"
#define QUARANTINE_UNDO_SQL                                                                        \
    "ROLLBACK TO SAVEPOINT login_etl_quarantine; RELEASE SAVEPOINT login_etl_quarantine"
#define QUARANTINE_RELEASE_SQL "RELEASE SAVEPOINT login_etl_quarantine"

/* Where a quarantine entry is (struct q_entry.state). */
enum q_state {
    Q_PENDING,     /* to be stored by the next transaction */
    Q_IN_TX,       /* stored by the open transaction, not yet committed */
    Q_DUP_IN_TX,   /* its id was committed before: the open transaction stores nothing */
    Q_QUARANTINED, /* committed in login_etl_rejected */
    Q_DUPLICATE,   /* its id was committed before, by another invocation */
    Q_REFUSED      /* the server refused to store it (a trigger on the ledger or the
                    * quarantine): left for a retry, listed */
};

/* One message to quarantine. */
struct q_entry {
    const char *id; /* borrowed until the batch ends */
    size_t id_len;
    int64_t sent_at; /* the ledger's sent_at (pg_sent_at) */
    uint8_t slot;
    uint8_t key[16];
    const char *reason; /* a static string */
    size_t body_at, body_len;
    size_t row;    /* the batch's row a refused entry stands for, or NO_ROW */
    uint8_t state; /* enum q_state */
};

/* See pg.h. */
void pg_sink_quarantine(struct pg_sink *s, pg_body_fn fn, void *ctx)
{
    s->q.body_fn = fn;
    s->q.body_ctx = ctx;
}

/* Forgets the last batch's entries; cannot fail. */
void pg_quarantine_reset(struct pg_sink *s)
{
    s->q.n = 0;
    buf_reset(&s->q.bodies);
}

/* Frees what the entries hold; cannot fail. */
void pg_quarantine_free(struct pg_sink *s)
{
    free(s->q.e);
    s->q.e = NULL;
    s->q.cap = s->q.n = 0;
    buf_wipe(&s->q.bodies);
}

/* Adds an entry for message id[0..len) (sent at sent_ms, -1 when unknown).
 * Returns its index, or NO_ROW when memory ran out. */
static size_t add_entry(struct pg_sink *s, const char *id, size_t len, int64_t sent_at, int slot,
                        const uint8_t key[16], const char *reason)
{
    if (s->q.n == s->q.cap) {
        size_t cap = s->q.cap ? 2 * s->q.cap : 64;
        struct q_entry *e = realloc(s->q.e, cap * sizeof *e);
        if (!e)
            return NO_ROW;
        s->q.e = e;
        s->q.cap = cap;
    }
    struct q_entry *q = &s->q.e[s->q.n];
    *q = (struct q_entry){id, len, sent_at, (uint8_t)slot, {0}, reason, 0, 0, NO_ROW, Q_PENDING};
    memcpy(q->key, key, 16);
    return s->q.n++;
}

/* See pg.h. */
rc_t pg_batch_quarantine(struct pg_sink *s, const char *message_id, size_t message_id_len,
                         int64_t sent_ms, const char *reason, const char *body, size_t body_len,
                         size_t *index)
{
    uint8_t key[16];
    size_t at = s->q.bodies.len;
    rc_t rc;

    if ((rc = pg_ledger_key(message_id, message_id_len, key)) != RC_OK ||
        (rc = buf_append(&s->q.bodies, body, body_len)) != RC_OK)
        return rc;
    size_t i = add_entry(s, message_id, message_id_len, pg_sent_at(sent_ms),
                         pg_ledger_slot(sent_ms), key, reason);
    if (i == NO_ROW) {
        buf_truncate(&s->q.bodies, at);
        return RC_NOMEM;
    }
    s->q.e[i].body_at = at;
    s->q.e[i].body_len = body_len;
    *index = i;
    return RC_OK;
}

/* Is entry i to go into the open transaction?  A refused row's entry only
 * while the row stands refused (a refusal on the strength of a line can be
 * undone, pg_isolate.c).  Cannot fail. */
static int wanted(const struct pg_sink *s, size_t i)
{
    const struct q_entry *q = &s->q.e[i];
    return q->state != Q_QUARANTINED && q->state != Q_DUPLICATE && q->state != Q_REFUSED &&
           (q->row == NO_ROW || s->state[q->row] == RS_REFUSED);
}

/* The entry of refused row r, or NO_ROW; cannot fail. */
static size_t entry_of_row(const struct pg_sink *s, size_t r)
{
    for (size_t i = 0; i < s->q.n; i++)
        if (s->q.e[i].row == r)
            return i;
    return NO_ROW;
}

/* Gives every refused row an entry (once), its body from the caller.
 * Returns RC_OK, RC_NOMEM, or the caller's failure (RC_CRYPTO). */
static rc_t add_refused(struct pg_sink *s)
{
    for (size_t r = 0; r < s->n; r++) {
        if (s->state[r] != RS_REFUSED)
            continue;
        size_t i = entry_of_row(s, r);
        if (i != NO_ROW)
            continue;
        size_t at = s->q.bodies.len;
        rc_t rc = s->q.body_fn(s->q.body_ctx, r, &s->q.bodies);
        if (rc == RC_OK && (i = add_entry(s, s->ids[r], s->id_len[r], s->sent_at[r], s->slot[r],
                                          s->key[r], "database_rejected")) == NO_ROW)
            rc = RC_NOMEM;
        if (rc) {
            buf_truncate(&s->q.bodies, at);
            return rc;
        }
        s->q.e[i].row = r;
        s->q.e[i].body_at = at;
        s->q.e[i].body_len = s->q.bodies.len - at;
    }
    return RC_OK;
}

/* How many messages the next transaction must quarantine: the entries not
 * yet settled, and the refused rows still without one.  Cannot fail. */
size_t pg_quarantine_pending(const struct pg_sink *s)
{
    size_t count = 0;
    for (size_t i = 0; i < s->q.n; i++)
        count += wanted(s, i);
    for (size_t r = 0; s->q.body_fn && r < s->n; r++)
        count += s->state[r] == RS_REFUSED && entry_of_row(s, r) == NO_ROW;
    return count;
}

/* Builds QUARANTINE_SQL's parameters in s->scratch, one binary array each,
 * of the `count` entries order[]; at[k] is where parameter k starts.  Returns RC_OK
 * or the buffer's failure. */
static rc_t params(struct pg_sink *s, const size_t *order, size_t count, size_t at[Q_PARAMS + 1])
{
    static const uint32_t oid[Q_PARAMS] = {Q_INT2_OID, Q_TIMESTAMPTZ_OID, Q_UUID_OID,
                                           Q_TEXT_OID, Q_TEXT_OID,        Q_TEXT_OID};
    struct buf *b = &s->scratch;

    buf_reset(b);
    for (int k = 0; k < Q_PARAMS; k++) {
        at[k] = b->len;
        pg_put_array_header(b, oid[k], count);
        for (size_t j = 0; j < count; j++) {
            const struct q_entry *q = &s->q.e[order[j]];
            switch (k) {
            case 0:
                pg_put_u32(b, 2);
                pg_put_u16(b, q->slot);
                break;
            case 1:
                pg_put_u32(b, 8);
                pg_put_u64(b, (uint64_t)q->sent_at);
                break;
            case 2:
                pg_put_u32(b, 16);
                buf_append(b, q->key, 16);
                break;
            case 3:
                pg_put_text(b, q->id, q->id_len);
                break;
            case 4:
                pg_put_text(b, q->reason, strlen(q->reason));
                break;
            default:
                pg_put_text(b, s->q.bodies.data + q->body_at, q->body_len);
            }
        }
    }
    at[Q_PARAMS] = b->len;
    return b->err;
}

/* What the answer to QUARANTINE_SQL said (take_stored). */
struct stored {
    size_t *order; /* the entry of each position sent */
    size_t count;
    rc_t rc;
};

/* pg_take_fn of pg_quarantine_send: each answer row is the position of an
 * entry stored; the others' ids were committed before. */
static void take_stored(struct pg_sink *s, PGresult *res, void *ctx)
{
    struct stored *st = ctx;

    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        if (!st->rc)
            pg_fail(s, res, "quarantine");
        st->rc = RC_DB;
    } else {
        for (int r = 0; r < PQntuples(res); r++) {
            int64_t ord = 0;
            const char *v = PQgetvalue(res, r, 0);
            if (num_parse_i64(v, strlen(v), 1, (int64_t)st->count, &ord) == RC_OK)
                s->q.e[st->order[ord - 1]].state = Q_IN_TX;
        }
    }
    PQclear(res);
}

/* Stores the `count` entries order[] in the open transaction
 * (QUARANTINE_SQL), each then Q_IN_TX, or Q_DUP_IN_TX when its id was
 * committed before.  Returns RC_OK, RC_NOMEM, RC_TIMEOUT or RC_DB. */
static rc_t store(struct pg_sink *s, size_t *order, size_t count)
{
    static const Oid types[Q_PARAMS] = {Q_INT2_ARRAY_OID, Q_TIMESTAMPTZ_ARRAY_OID,
                                        Q_UUID_ARRAY_OID, Q_TEXT_ARRAY_OID,
                                        Q_TEXT_ARRAY_OID, Q_TEXT_ARRAY_OID};
    const char *values[Q_PARAMS];
    int lengths[Q_PARAMS], formats[Q_PARAMS];
    size_t at[Q_PARAMS + 1];
    struct stored st = {order, count, RC_OK};
    rc_t rc;

    if ((rc = params(s, order, count, at)) != RC_OK)
        return rc;
    for (int k = 0; k < Q_PARAMS; k++) {
        values[k] = s->scratch.data + at[k];
        lengths[k] = (int)(at[k + 1] - at[k]);
        formats[k] = 1;
    }
    if (!PQsendQueryParams(s->conn, QUARANTINE_SQL, Q_PARAMS, types, values, lengths, formats, 0)) {
        pg_fail(s, NULL, "quarantine");
        return RC_DB;
    }
    rc = pg_drain(s, IO_BLOCK, take_stored, &st, "quarantine", NULL);
    if (rc == RC_OK)
        rc = st.rc;
    for (size_t k = 0; rc == RC_OK && k < count; k++)
        if (s->q.e[order[k]].state == Q_PENDING)
            s->q.e[order[k]].state = Q_DUP_IN_TX;
    return rc;
}

/* The server refused the statement for a row's data (a trigger an operator
 * put on the ledger or on the quarantine): back to the savepoint, then each
 * entry alone behind one of its own, so that only the refused ones are left
 * for a retry (Q_REFUSED, listed).  Three round trips an entry, in that case
 * only.  Returns RC_OK or the failure. */
static rc_t store_one_by_one(struct pg_sink *s, size_t *order, size_t count, enum phase phase)
{
    rc_t rc = RC_OK;

    log_at(s->lg, LOG_WARN, "the quarantine was refused: storing its records one by one",
           LF_STR("reason", s->why));
    for (size_t k = 0; k <= count && rc == RC_OK; k++) {
        if (s->tx.phase == PH_BROKEN) {
            /* The statement before was refused for its data: undone alone. */
            s->tx.phase = phase;
            s->why[0] = '\0';
            rc = pg_run(s, QUARANTINE_UNDO_SQL, PGRES_COMMAND_OK, NULL);
            if (k > 0 && rc == RC_OK)
                s->q.e[order[k - 1]].state = Q_REFUSED;
        }
        if (k == count || rc != RC_OK)
            break;
        if ((rc = pg_run(s, QUARANTINE_SAVEPOINT_SQL, PGRES_COMMAND_OK, NULL)) != RC_OK)
            break;
        rc = store(s, &order[k], 1);
        if (rc == RC_DB && pg_row_data_error(s->sqlstate))
            rc = RC_OK; /* undone at the top of the next round */
        else if (rc == RC_OK)
            rc = pg_run(s, QUARANTINE_RELEASE_SQL, PGRES_COMMAND_OK, NULL);
    }
    return rc;
}

/* Leaves the `count` entries order[] for a retry (listed).  Cannot fail. */
static void refuse_all(struct pg_sink *s, const size_t *order, size_t count)
{
    for (size_t k = 0; k < count; k++)
        s->q.e[order[k]].state = Q_REFUSED;
}

/* TX_QUARANTINE: stores the wanted entries in the open transaction, behind a
 * savepoint (store; store_one_by_one when the server refuses the
 * statement).  Returns RC_OK, RC_NOMEM, RC_CRYPTO (a body could not be
 * masked), RC_TIMEOUT or RC_DB. */
rc_t pg_quarantine_send(struct pg_sink *s)
{
    enum phase phase = s->tx.phase;
    size_t count, n = 0, *order;
    rc_t rc;

    if (s->q.body_fn && (rc = add_refused(s)) != RC_OK)
        return rc;
    /* Whatever an earlier transaction of the batch stored was rolled back
     * with it. */
    for (size_t i = 0; i < s->q.n; i++)
        if (s->q.e[i].state == Q_IN_TX || s->q.e[i].state == Q_DUP_IN_TX)
            s->q.e[i].state = Q_PENDING;
    if ((count = pg_quarantine_pending(s)) == 0)
        return RC_OK;
    if (!(order = malloc(count * sizeof *order)))
        return RC_NOMEM;
    for (size_t i = 0; i < s->q.n && n < count; i++)
        if (wanted(s, i))
            order[n++] = i;
    if (s->q.no_insert) {
        refuse_all(s, order, n);
        free(order);
        return RC_OK;
    }
    rc = pg_run(s, QUARANTINE_SAVEPOINT_SQL, PGRES_COMMAND_OK, NULL);
    if (rc == RC_OK)
        rc = store(s, order, n);
    if (rc == RC_DB && pg_row_data_error(s->sqlstate)) {
        rc = store_one_by_one(s, order, n, phase);
    } else if (rc == RC_DB && strcmp(s->sqlstate, "42501") == 0) {
        /* The function's user may not insert into the quarantine (a release
         * upgraded before its grant): rejected records are listed for a
         * retry, as REJECTED_RECORDS=retry does, learnt once. */
        log_at(s->lg, LOG_WARN,
               "no INSERT on " REJECTED ": rejected records are listed for a retry",
               LF_STR("reason", s->why));
        s->q.no_insert = 1;
        s->tx.phase = phase;
        s->why[0] = '\0';
        rc = pg_run(s, QUARANTINE_UNDO_SQL, PGRES_COMMAND_OK, NULL);
        refuse_all(s, order, n);
    }
    free(order);
    return rc;
}

/* The open transaction committed: its entries are settled.  Cannot fail. */
void pg_quarantine_committed(struct pg_sink *s)
{
    for (size_t i = 0; i < s->q.n; i++) {
        struct q_entry *q = &s->q.e[i];
        if (q->state == Q_IN_TX)
            q->state = Q_QUARANTINED;
        else if (q->state == Q_DUP_IN_TX)
            q->state = Q_DUPLICATE;
    }
}

/* Stores the pending entries in a transaction of their own, when no row is
 * left to write; the connection is opened when closed.  Returns RC_OK or
 * the failure (the transaction rolled back, or the connection closed). */
rc_t pg_quarantine_alone(struct pg_sink *s)
{
    char sql[160];
    int64_t left = s->give_up_at - clock_mono_ms();
    rc_t rc;

    if (left <= 0) {
        pg_fail(s, NULL, "timeout");
        return RC_TIMEOUT;
    }
    pg_abandon(s); /* nothing may be open: the last transaction ended */
    if (!s->conn && (rc = pg_open(s)) != RC_OK)
        return rc;
    snprintf(sql, sizeof sql, "BEGIN; SET LOCAL statement_timeout = %lld", (long long)(left + 50));
    s->stats.attempts++;
    if ((rc = pg_run(s, sql, PGRES_COMMAND_OK, NULL)) == RC_OK &&
        (rc = pg_quarantine_send(s)) == RC_OK &&
        (rc = pg_run(s, "COMMIT", PGRES_COMMAND_OK, NULL)) == RC_OK)
        pg_quarantine_committed(s);
    if (rc)
        pg_disconnect(s);
    return rc;
}

/* See pg.h. */
enum pg_outcome pg_batch_quarantined(const struct pg_sink *s, size_t index)
{
    switch (s->q.e[index].state) {
    case Q_QUARANTINED:
        return PG_QUARANTINED;
    case Q_DUPLICATE:
        return PG_DUPLICATE;
    default:
        return PG_NOT_WRITTEN;
    }
}

/* What became of refused row r: quarantined, committed before by another
 * invocation, or neither (PG_REFUSED: listed, and retried).  Cannot fail. */
enum pg_outcome pg_quarantine_row(const struct pg_sink *s, size_t r)
{
    size_t i = entry_of_row(s, r);
    if (i == NO_ROW)
        return PG_REFUSED;
    return s->q.e[i].state == Q_QUARANTINED ? PG_QUARANTINED
           : s->q.e[i].state == Q_DUPLICATE ? PG_DUPLICATE
                                            : PG_REFUSED;
}
