/* pg_batch.c - the Postgres sink's API (pg.h): the sink's life, and a
 * batch's from begin to commit.  Keys and rows are encoded as they come
 * (pg_tuple.c) and streamed (pg_copy.c); the commit writes what is left and
 * ends the transaction (pg_tx.c), finding refused rows on the way
 * (pg_isolate.c). */
#define _DEFAULT_SOURCE
#include "pg_int.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/rand.h>

#include "clock.h"
#include "grow.h"

/* Kept between batches up to these sizes (pg_sink_trim): a realistic 6 MB
 * event is ~7,700 rows and ~2 MB of tuples; 6 MB of tiny records is up to
 * 170,000 rows. */
#define TRIM_ROWS 32768
#define TRIM_BYTES ((size_t)4 << 20)

struct pg_sink *pg_sink_new(const char *conninfo, struct logger *lg)
{
    unsigned char probe;

    /* libpq's SCRAM authentication (and TLS) draws on OpenSSL's random
     * generator.  OpenSSL 3.0 sets that up once per process and, when it
     * runs out of memory doing so, never tries again: every later connect
     * would fail ("could not generate nonce") for the life of the process.
     * It is set up here instead, at start, where a failure is an init error
     * and Lambda starts a new process (tests/integration/test_faults.py). */
    if (RAND_bytes(&probe, 1) != 1)
        return NULL;
    struct pg_sink *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->lg = lg;
    pg_retention_init(&s->ret, lg);
    buf_init(&s->rows.data, BUF_PAYLOAD_MAX * 2);
    buf_init(&s->ledger.data, BUF_PAYLOAD_MAX * 2);
    buf_init(&s->scratch, BUF_PAYLOAD_MAX * 2);
    buf_init(&s->q.bodies, BUF_PAYLOAD_MAX * 2);
    idset_init(&s->lookup);
    if (pg_sink_set_conninfo(s, conninfo ? conninfo : "") != RC_OK) {
        pg_sink_free(s);
        return NULL;
    }
    return s;
}

/* Wipes and frees a string that may hold a password; NULL allowed. */
static void wipe_string(char *p)
{
    if (p) {
        explicit_bzero(p, strlen(p));
        free(p);
    }
}

rc_t pg_sink_set_conninfo(struct pg_sink *s, const char *conninfo)
{
    char *copy = strdup(conninfo);
    if (!copy)
        return RC_NOMEM;
    pg_disconnect(s);
    wipe_string(s->conninfo);
    s->conninfo = copy;
    return RC_OK;
}

void pg_sink_set_password_fn(struct pg_sink *s, pg_password_fn fn, void *ctx)
{
    s->password_fn = fn;
    s->password_ctx = ctx;
}

int pg_sink_auth_refused(const struct pg_sink *s)
{
    return s->auth_refused;
}

/* Frees a buffer over `keep` bytes; it grows again on its next use. */
static void trim_buf(struct buf *b, size_t keep)
{
    if (b->cap > keep) {
        size_t max = b->max;
        buf_free(b);
        buf_init(b, max);
    }
}

/* Frees the per-row arrays (grow allocates them again) and forgets the
 * batch's rows.  Cannot fail. */
static void free_rows(struct pg_sink *s)
{
    free(s->rows.end);
    free(s->ledger.end);
    free(s->ids);
    free(s->sent_at);
    free(s->slot);
    free(s->key);
    free(s->id_len);
    free(s->state);
    free(s->in_ledger);
    s->rows.end = s->ledger.end = NULL;
    s->ids = NULL;
    s->sent_at = NULL;
    s->slot = NULL;
    s->key = NULL;
    s->id_len = NULL;
    s->state = NULL;
    s->in_ledger = NULL;
    s->cap = 0;
    s->n = s->decided = 0;
}

/* See pg.h.  Between batches nothing of the last one is needed: the per-row
 * arrays and tuple buffers of an outsized batch are freed, so that the next
 * batch's peak does not stack on top of them. */
void pg_sink_trim(struct pg_sink *s)
{
    if (s->cap > TRIM_ROWS)
        free_rows(s);
    trim_buf(&s->rows.data, TRIM_BYTES);
    trim_buf(&s->ledger.data, TRIM_BYTES);
    trim_buf(&s->scratch, TRIM_BYTES);
    trim_buf(&s->q.bodies, TRIM_BYTES);
}

void pg_sink_free(struct pg_sink *s)
{
    if (!s)
        return;
    pg_disconnect(s);
    wipe_string(s->conninfo);
    buf_free(&s->rows.data);
    buf_free(&s->ledger.data);
    buf_free(&s->scratch);
    idset_free(&s->lookup);
    pg_quarantine_free(s);
    free_rows(s);
    free(s);
}

void pg_batch_begin(struct pg_sink *s, int64_t give_up_at_ms)
{
    if (s->conn && PQstatus(s->conn) == CONNECTION_BAD)
        pg_disconnect(s);
    s->give_up_at = give_up_at_ms;
    if (s->conn && (s->tx.phase != PH_IDLE || s->tx.op != OP_LEDGER))
        pg_abandon(s); /* a batch neither committed nor aborted (cannot happen) */
    s->fifo = 0;
    pg_tx_reset(s);
    s->why[0] = '\0';
    s->retryable = 0;
    s->n = 0;
    s->decided = 0;
    s->keys_done = 0;
    s->first_send_us = 0;
    memset(&s->stats, 0, sizeof s->stats);
    s->ret.pruned = 0;
    pg_quarantine_reset(s);
    buf_reset(&s->rows.data);
    buf_reset(&s->ledger.data);
}

void pg_batch_fifo(struct pg_sink *s)
{
    s->fifo = 1;
}

/* Makes room for one more row in the per-row arrays (all or nothing:
 * grow.h); per row, so the common case is the one compare.  Returns RC_OK or
 * RC_NOMEM. */
static rc_t grow(struct pg_sink *s)
{
    if (s->n < s->cap)
        return RC_OK;
    const struct grow_array arrays[] = {
        {&s->rows.end, sizeof *s->rows.end},
        {&s->ledger.end, sizeof *s->ledger.end},
        {&s->ids, sizeof *s->ids},
        {&s->id_len, sizeof *s->id_len},
        {&s->sent_at, sizeof *s->sent_at},
        {&s->state, sizeof *s->state},
        {&s->in_ledger, sizeof *s->in_ledger},
        {&s->slot, sizeof *s->slot},
        {&s->key, sizeof *s->key},
    };
    return grow_arrays(arrays, sizeof arrays / sizeof *arrays, &s->cap, s->n + 1, 1024);
}

/* See pg.h.  The key is encoded at once into the ledger's tuples
 * (pg_tuple_key), and kept in the forms the lookups send (pg_ledger.c). */
rc_t pg_batch_key(struct pg_sink *s, const char *message_id, size_t message_id_len, int64_t sent_ms)
{
    size_t i = s->n;
    int64_t sent = pg_sent_at(sent_ms);
    int slot = pg_ledger_slot(sent_ms);
    rc_t rc;

    if ((rc = grow(s)) != RC_OK ||
        (rc = pg_ledger_key(message_id, message_id_len, s->key[i])) != RC_OK ||
        (rc = pg_tuple_key(&s->ledger.data, slot, sent, s->key[i])) != RC_OK)
        return rc;
    s->ledger.end[i] = s->ledger.data.len;
    s->ids[i] = message_id;
    s->id_len[i] = message_id_len;
    s->sent_at[i] = sent;
    s->slot[i] = (uint8_t)slot;
    s->state[i] = RS_PENDING;
    s->in_ledger[i] = KEY_NOT_IN_LEDGER;
    s->n++;
    /* The transaction starts with the first key.  Then the server inserts
     * the ledger entries while we parse the rest; asking for its answers
     * is a system call, so every 32 keys is often enough.  A failure here
     * is retried by commit. */
    if (s->n == 1 || (s->n & 31) == 0) {
        if (pg_copy_advance(s) != RC_OK && s->n == 1)
            log_at(s->lg, LOG_WARN, "database not ready; rows are buffered for a retry",
                   LF_STR("reason", s->why));
    }
    return RC_OK;
}

/* See pg.h: the row of key `decided`, encoded as a binary COPY tuple. */
rc_t pg_batch_row(struct pg_sink *s, const struct pg_row *row)
{
    rc_t rc;

    assert(s->decided < s->n);
    if ((rc = pg_tuple_row(&s->rows.data, row)) != RC_OK)
        return rc;
    s->rows.end[s->decided++] = s->rows.data.len;
    /* The rows COPY streams them while the caller makes the next ones. */
    if ((s->decided & 31) == 0)
        pg_copy_advance(s);
    return RC_OK;
}

/* See pg.h: key `decided` gets an empty tuple and no row; its ledger entry,
 * if it went out, is taken back out before COMMIT (pg_unledger). */
void pg_batch_no_row(struct pg_sink *s)
{
    size_t i = s->decided;

    assert(i < s->n);
    s->rows.end[i] = s->rows.data.len;
    s->state[i] = RS_NO_ROW;
    s->in_ledger[i] = pg_copy_key_sent(s, i) ? KEY_IN_LEDGER : KEY_NOT_IN_LEDGER;
    s->decided++;
    if ((s->decided & 31) == 0)
        pg_copy_advance(s);
}

/* See pg.h: the ledger COPY ends as soon as its tuples are out. */
void pg_batch_keys_done(struct pg_sink *s)
{
    s->keys_done = 1;
    if (s->n)
        pg_copy_advance(s);
}

/* See pg.h: a key and its row at once. */
rc_t pg_batch_add(struct pg_sink *s, const char *message_id, size_t message_id_len, int64_t sent_ms,
                  const struct pg_row *row)
{
    rc_t rc = pg_batch_key(s, message_id, message_id_len, sent_ms);
    if (rc == RC_OK && (rc = pg_batch_row(s, row)) != RC_OK)
        pg_batch_no_row(s);
    return rc;
}

/* What became of row i once the batch was written (rc: how the writing
 * ended; isolated: the batch was written one part a transaction, so a row
 * still pending was not).  Cannot fail. */
static enum pg_outcome outcome_of(const struct pg_sink *s, size_t i, rc_t rc, int isolated)
{
    switch (s->state[i]) {
    case RS_DUP:
        return PG_DUPLICATE;
    case RS_REFUSED:
        return s->q.body_fn ? pg_quarantine_row(s, i) : PG_REFUSED;
    case RS_DONE:
        return PG_WRITTEN;
    case RS_PENDING:
        return !rc && !isolated ? PG_WRITTEN : PG_NOT_WRITTEN;
    default:
        return PG_NOT_WRITTEN;
    }
}

/* See pg.h.  The batch goes in one transaction (pg_write_pending); a refusal
 * no savepoint could contain makes it go one part a transaction
 * (pg_isolate_by_transactions). */
rc_t pg_batch_commit(struct pg_sink *s, uint8_t *outcome, char err[ERR_LEN])
{
    enum tx_step end = TX_FAILED;
    int isolated = 0;
    size_t settled = 0;

    err[0] = '\0';
    /* A key whose row never came has none. */
    s->keys_done = 1;
    while (s->decided < s->n)
        pg_batch_no_row(s);
    rc_t rc = pg_write_pending(s, &end);
    if (rc == RC_OK && end == TX_UNATTRIBUTED) {
        log_at(s->lg, LOG_WARN, "isolating by transactions", LF_STR("reason", s->why));
        isolated = 1;
        rc = pg_isolate_by_transactions(s);
    }
    /* Isolation by transactions may end without a transaction left to carry
     * the quarantine (the last refused rows found alone): it goes alone. */
    if (rc == RC_OK && pg_quarantine_pending(s))
        rc = pg_quarantine_alone(s);
    for (size_t i = 0; i < s->n; i++) {
        enum pg_outcome o = outcome_of(s, i, rc, isolated);
        settled += o == PG_WRITTEN || o == PG_REFUSED || o == PG_QUARANTINED;
    }
    if (rc && settled == 0) {
        snprintf(err, ERR_LEN, "%s", s->why[0] ? s->why : rc_strerror(rc));
        pg_disconnect(s);
        return rc;
    }
    if (rc) {
        /* Refused rows were named, or isolation committed a part of the
         * batch, before the failure: those stand; the rest is answered as
         * not written, and SQS retries it. */
        log_at(s->lg, LOG_WARN, "batch not written in full", LF_STR("reason", s->why));
        pg_disconnect(s);
    }
    for (size_t i = 0; i < s->n; i++)
        outcome[i] = (uint8_t)outcome_of(s, i, rc, isolated);
    if (!rc)
        s->stats.write_us = s->first_send_us ? clock_mono_us() - s->first_send_us : 0;
    return RC_OK;
}

void pg_batch_abort(struct pg_sink *s)
{
    pg_abandon(s);
    s->n = 0;
    s->decided = 0;
}

void pg_batch_stats(const struct pg_sink *s, struct pg_stats *out)
{
    *out = s->stats;
    out->pruned = s->ret.pruned;
}
