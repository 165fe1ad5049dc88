/* pg_batch.c - the Postgres sink's API (pg.h): its life, and a batch's keys
 * and rows from begin to commit. */
#define _DEFAULT_SOURCE
#include "pg_int.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/rand.h>

#include "clock.h"
#include "grow.h"

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
    s->ret_day = -1;
    buf_init(&s->rows.data, BUF_PAYLOAD_MAX * 2);
    buf_init(&s->ledger.data, BUF_PAYLOAD_MAX * 2);
    buf_init(&s->scratch, BUF_PAYLOAD_MAX * 2);
    idset_init(&s->lookup);
    if (pg_sink_set_conninfo(s, conninfo ? conninfo : "") != RC_OK) {
        pg_sink_free(s);
        return NULL;
    }
    return s;
}

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
    free(s->dup);
    s->rows.end = s->ledger.end = NULL;
    s->ids = NULL;
    s->sent_at = NULL;
    s->slot = NULL;
    s->key = NULL;
    s->id_len = NULL;
    s->dup = NULL;
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
    free_rows(s);
    free(s);
}

void pg_batch_begin(struct pg_sink *s, int64_t give_up_at_ms)
{
    if (s->conn && PQstatus(s->conn) == CONNECTION_BAD)
        pg_disconnect(s);
    s->give_up_at = give_up_at_ms;
    if (s->conn && (s->phase != PH_IDLE || s->op))
        pg_abandon(s); /* a batch neither committed nor aborted (cannot happen) */
    s->fifo = 0;
    s->unattributed = 0;
    s->isolating = 0;
    pg_reset_attempt(s);
    s->why[0] = '\0';
    s->retryable = 0;
    s->n = 0;
    s->decided = 0;
    s->keys_done = 0;
    s->first_send_us = 0;
    memset(&s->stats, 0, sizeof s->stats);
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
        {&s->rows.end, sizeof *s->rows.end}, {&s->ledger.end, sizeof *s->ledger.end},
        {&s->ids, sizeof *s->ids},           {&s->id_len, sizeof *s->id_len},
        {&s->sent_at, sizeof *s->sent_at},   {&s->dup, sizeof *s->dup},
        {&s->slot, sizeof *s->slot},         {&s->key, sizeof *s->key},
    };
    return grow_arrays(arrays, sizeof arrays / sizeof *arrays, &s->cap, s->n + 1, 1024);
}

/* See pg.h.  SentTimestamp becomes the ledger's sent_at: binary timestamptz
 * is microseconds since 2000-01-01; a message without one gets -infinity, a
 * value no SentTimestamp has, so its receives still meet each other. */
rc_t pg_batch_key(struct pg_sink *s, const char *message_id, size_t message_id_len, int64_t sent_ms)
{
    rc_t rc = grow(s);
    if (rc)
        return rc;
    struct buf *l = &s->ledger.data;
    int64_t sent = sent_ms < 0 ? INT64_MIN : (sent_ms - POSTGRES_EPOCH_MS) * 1000;
    int slot = pg_ledger_slot(sent_ms);
    if ((rc = pg_ledger_key(message_id, message_id_len, s->key[s->n])) != RC_OK)
        return rc;
    /* (slot smallint, sent_at timestamptz, message_id uuid): 40 bytes. */
    uint8_t *o = pg_room(l, 40, &rc), *o0 = o;
    if (!o)
        return rc;
    o = w16(o, 3); /* fields */
    o = w16(w32(o, 2), (uint16_t)slot);
    o = w64(w32(o, 8), (uint64_t)sent);
    o = w32(o, 16);
    memcpy(o, s->key[s->n], 16);
    buf_commit(l, (size_t)(o + 16 - o0));
    s->ledger.end[s->n] = l->len;
    s->ids[s->n] = message_id;
    s->id_len[s->n] = message_id_len;
    s->sent_at[s->n] = sent;
    s->slot[s->n] = (uint8_t)slot;
    s->dup[s->n] = 0;
    s->n++;
    /* The transaction starts with the first key.  Then the server inserts
     * the ledger entries while we parse the rest; asking for its answers
     * is a system call, so every 32 keys is often enough.  A failure here
     * is retried by commit. */
    if (s->n == 1 || (s->n & 31) == 0) {
        if (pg_pump(s, 0, 0) != RC_OK && s->n == 1)
            log_at(s->lg, LOG_WARN, "database not ready; rows are buffered for a retry",
                   LF_STR("reason", s->why));
    }
    return RC_OK;
}

/* See pg.h: the row of key `decided`, encoded as a binary COPY tuple. */
rc_t pg_batch_row(struct pg_sink *s, const struct pg_row *row)
{
    struct buf *b = &s->rows.data;
    rc_t rc = RC_OK;

    assert(s->decided < s->n);
    size_t size = 2 + field_size(row->user_id, row->user_id_len) +
                  field_size(row->device_type, row->device_type_len) +
                  field_size(row->masked_ip, row->masked_ip_len) +
                  field_size(row->masked_device_id, row->masked_device_id_len) +
                  field_size(row->locale, row->locale_len) + (row->has_app_version ? 8 : 4) + 8;
    uint8_t *o = pg_room(b, size, &rc), *o0 = o;
    if (!o)
        return rc;
    o = w16(o, 7); /* fields */
    o = wtext(o, row->user_id, row->user_id_len);
    o = wtext(o, row->device_type, row->device_type_len);
    o = wtext(o, row->masked_ip, row->masked_ip_len);
    o = wtext(o, row->masked_device_id, row->masked_device_id_len);
    o = wtext(o, row->locale, row->locale_len);
    o = row->has_app_version ? w32(w32(o, 4), (uint32_t)row->app_version) : w32(o, UINT32_MAX);
    o = w32(w32(o, 4), (uint32_t)(row->create_date - POSTGRES_EPOCH_DAYS));
    assert((size_t)(o - o0) == size);
    buf_commit(b, size);
    s->rows.end[s->decided++] = b->len;
    /* The rows COPY streams them while the caller makes the next ones. */
    if ((s->decided & 31) == 0)
        pg_pump(s, 0, 0);
    return RC_OK;
}

/* See pg.h: key `decided` gets an empty tuple and no row; its ledger entry,
 * if it went out, is taken back out before COMMIT (unledger). */
void pg_batch_no_row(struct pg_sink *s)
{
    size_t i = s->decided;

    assert(i < s->n);
    s->rows.end[i] = s->rows.data.len;
    s->dup[i] = (uint8_t)(RS_NO_ROW | (pg_key_sent(s, i) ? RS_IN_LEDGER : 0));
    s->decided++;
    if ((s->decided & 31) == 0)
        pg_pump(s, 0, 0);
}

/* See pg.h: the ledger COPY ends as soon as its tuples are out. */
void pg_batch_keys_done(struct pg_sink *s)
{
    s->keys_done = 1;
    if (s->n)
        pg_pump(s, 0, 0);
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

int pg_sink_auth_refused(const struct pg_sink *s)
{
    return s->auth_refused;
}

rc_t pg_batch_commit(struct pg_sink *s, uint8_t *outcome, char err[ERR_LEN])
{
    int isolated = 0, stop = 0;
    size_t settled = 0;

    err[0] = '\0';
    /* A key whose row never came has none. */
    s->keys_done = 1;
    while (s->decided < s->n)
        pg_batch_no_row(s);
    rc_t rc = pg_write_pending(s);
    if (rc == RC_DB && s->unattributed) {
        /* A refusal without a row that the savepoints could not contain
         * (in the ledger COPY, or still at COMMIT): one transaction per part. */
        log_at(s->lg, LOG_WARN, "isolating by transactions", LF_STR("reason", s->why));
        isolated = 1;
        int ignored;
        rc = pg_isolate(s, 0, s->n, 1, &stop, &ignored);
    }
    for (size_t i = 0; i < s->n; i++) {
        uint8_t st = s->dup[i] & RS_MASK;
        settled += st == RS_DONE || st == RS_REFUSED || (st == RS_PENDING && !rc && !isolated);
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
    for (size_t i = 0; i < s->n; i++) {
        uint8_t st = s->dup[i] & RS_MASK;
        outcome[i] = st == RS_DUP                                              ? PG_DUPLICATE
                     : st == RS_REFUSED                                        ? PG_REFUSED
                     : st == RS_DONE || (st == RS_PENDING && !rc && !isolated) ? PG_WRITTEN
                                                                               : PG_NOT_WRITTEN;
    }
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
}
