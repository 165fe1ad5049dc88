/* etl.c - the handler: parse the SQS event, validate and mask every record,
 * stream the rows to Postgres, commit once, answer with the failures.
 *
 * Two kinds of failure stay apart all the way up: a bad record is listed in
 * batchItemFailures (SQS retries it, then dead-letters it); a broken database
 * or an event that is not an SQS event fails the invocation as a whole. */
#include "etl.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "etl_int.h"
#include "grow.h"
#include "mask.h"
#include "row.h"

struct etl *etl_new(struct logger *lg, char err[ERR_LEN], const char **err_type)
{
    struct etl *e = calloc(1, sizeof *e);
    rc_t rc;

    *err_type = "Runtime.OutOfMemory";
    if (!e) {
        snprintf(err, ERR_LEN, "out of memory");
        return NULL;
    }
    e->lg = lg;
    sqs_init(&e->ev);
    login_parser_init(&e->lp);
    idset_init(&e->seen);
    if ((rc = config_load(&e->cfg, err)) != RC_OK) {
        *err_type = rc == RC_CONFIG ? "InvalidConfiguration" : "Runtime.OutOfMemory";
        goto fail;
    }
    if (creds_init(e, err) != RC_OK) {
        *err_type = "InvalidConfiguration";
        goto fail;
    }
    e->sink = pg_sink_new(e->cfg.db_secret_id ? "" : e->cfg.database_url, lg);
    if (!e->sink) {
        snprintf(err, ERR_LEN, "out of memory");
        goto fail;
    }
    if (e->cfg.db_auth_iam) {
        e->iam = rds_iam_new(e->cfg.database_url, e->cfg.iam_renew_s, &rc, err);
        if (!e->iam) {
            *err_type = rc == RC_CONFIG ? "InvalidConfiguration" : "Runtime.OutOfMemory";
            goto fail;
        }
        pg_sink_set_password_fn(e->sink, rds_iam_password, e->iam);
    }
    if (e->cfg.rejected == REJECTED_QUARANTINE)
        pg_sink_quarantine(e->sink, quarantine_body, e);
    return e;
fail:
    etl_free(e);
    return NULL;
}

unsigned long etl_max_invocations(const struct etl *e)
{
    return e->cfg.max_invocations;
}

/* Frees the per-record arrays (reserve allocates them again).  Cannot
 * fail. */
static void free_records(struct etl *e)
{
    free(e->status);
    free(e->key);
    free(e->reason);
    free(e->outcome);
    free(e->record);
    e->record = NULL;
    e->status = NULL;
    e->key = NULL;
    e->reason = NULL;
    e->outcome = NULL;
    e->cap = 0;
}

void etl_free(struct etl *e)
{
    if (!e)
        return;
    keyset_free(e->masking);
    pg_sink_free(e->sink);
    rds_iam_free(e->iam);
    sqs_free(&e->ev);
    login_parser_free(&e->lp);
    idset_free(&e->seen);
    config_free(&e->cfg);
    free_records(e);
    free(e);
}

/* Records an invocation keeps room for once it is over: a realistic 6 MB
 * event holds ~7,700; 6 MB of the tiniest records up to 170,000. */
#define TRIM_RECORDS 32768

/* Frees what an outsized event left allocated (the record array, the id
 * set, the per-record arrays, the sink's rows), before the next event, so
 * that its peak does not stack on the last one's (measured:
 * tests/bench/README.md).  Cannot fail. */
static void trim(struct etl *e)
{
    sqs_trim(&e->ev, TRIM_RECORDS);
    pg_sink_trim(e->sink);
    if (e->seen.cap > 2 * TRIM_RECORDS)
        idset_free(&e->seen); /* empty again, reusable */
    if (e->cap > TRIM_RECORDS)
        free_records(e);
}

/* Makes the per-record arrays hold n records (all or nothing: grow.h).
 * Returns RC_OK or RC_NOMEM. */
static rc_t reserve(struct etl *e, size_t n)
{
    if (n <= e->cap)
        return RC_OK;
    const struct grow_array arrays[] = {
        {&e->status, sizeof *e->status}, {&e->key, sizeof *e->key},
        {&e->reason, sizeof *e->reason}, {&e->outcome, sizeof *e->outcome},
        {&e->record, sizeof *e->record},
    };
    return grow_arrays(arrays, sizeof arrays / sizeof *arrays, &e->cap, n, 1024);
}

static void set_error(struct rt_error *error, const char *type, const char *message)
{
    snprintf(error->type, sizeof error->type, "%s", type);
    snprintf(error->message, sizeof error->message, "%s", message);
}

/* Writes {"batchItemFailures":[...]}: each listed messageId once (a
 * repeat is listed with the record it repeats). */
static rc_t write_answer(const struct etl *e, struct buf *answer)
{
    int first = 1;
    buf_appends(answer, "{\"batchItemFailures\":[");
    for (size_t i = 0; i < e->ev.n; i++) {
        if (e->status[i] != ST_REJECTED && e->status[i] != ST_NOT_DONE &&
            e->status[i] != ST_QUARANTINING)
            continue;
        const struct sqs_record *r = &e->ev.records[i];
        buf_appends(answer, first ? "{\"itemIdentifier\":" : ",{\"itemIdentifier\":");
        buf_append_json(answer, r->message_id, r->message_id_len);
        buf_appendc(answer, '}');
        first = 0;
    }
    return buf_appends(answer, "]}");
}

/* The moment to give up on the database: the deadline minus a margin for
 * answering (10% of the time left, within 200 ms to 1 s, unless set). */
static int64_t margin_ms(const struct etl *e, int64_t start, int64_t deadline)
{
    if (e->cfg.deadline_margin_ms >= 0)
        return e->cfg.deadline_margin_ms;
    int64_t m = (deadline - start) / 10;
    return m < 200 ? 200 : m > 1000 ? 1000 : m;
}

/* Makes room in the id set for one more messageId.  Returns RC_OK or
 * RC_NOMEM. */
static rc_t seen_room(struct etl *e)
{
    size_t n = e->seen.count + 1;
    if (n + n / 3 + 1 <= e->seen.cap)
        return RC_OK;
    return idset_reserve(&e->seen, 2 * n);
}

/* sqs_record_fn, called as soon as record idx is parsed: a messageId seen
 * earlier in the batch makes the record a repeat, sharing that record's
 * fate; any other has its body validated, and a valid one gets its ledger
 * key in the sink at once, so that the server inserts it while the rest of
 * the event is parsed.  Its row comes later (transform, which validates the
 * body again, as the parser keeps nothing of it, then masks it).
 *
 * Validating here keeps a rejected record's key from ever reaching the
 * ledger; otherwise it would have to be deleted before COMMIT, which cost
 * the server more CPU than validating twice costs the function (measured:
 * tests/bench/README.md).  Masking here too (one pass, no second
 * validation) was slower: the keys then leave at the pace of the masking,
 * and the rows COPY, which waits for the ledger's, starts later.  A
 * rejected record's reason waits in e->reason for transform, which logs it
 * in order.  Returns RC_OK, or RC_NOMEM/RC_TOOBIG with err filled. */
static rc_t on_record(void *ctx, const struct sqs_event *ev, size_t idx, char err[ERR_LEN])
{
    struct etl *e = ctx;
    const struct sqs_record *r = &ev->records[idx];
    rc_t rc;

    if ((rc = reserve(e, idx + 1)) != RC_OK || (rc = seen_room(e)) != RC_OK) {
        snprintf(err, ERR_LEN, "out of memory for %zu records", idx + 1);
        return rc;
    }
    if (idset_put(&e->seen, r->message_id, r->message_id_len, idx) != idx) {
        e->status[idx] = ST_REPEAT;
        return RC_OK;
    }
    if (e->cut) {
        e->status[idx] = ST_NOT_DONE;
        return RC_OK;
    }
    struct login_row lr;
    enum login_reason why;
    if ((rc = login_parse(&e->lp, r->body, r->body_len, r->body_flags, r->sent_ms, r->sent_bad,
                          e->start, &lr, &why)) != RC_OK) {
        snprintf(err, ERR_LEN, "%s", rc_strerror(rc));
        return rc;
    }
    if (why != LOGIN_OK) {
        e->status[idx] = ST_REJECTED;
        e->reason[idx] = (uint8_t)why;
        /* FIFO: nothing after a failure may be written, or order breaks;
         * a quarantined record is done, and its group goes on. */
        e->cut = ev->fifo && e->cfg.rejected == REJECTED_RETRY;
        return RC_OK;
    }
    if ((rc = pg_batch_key(e->sink, r->message_id, r->message_id_len, r->sent_ms)) != RC_OK) {
        snprintf(err, ERR_LEN, "%s", rc_strerror(rc));
        return rc;
    }
    e->status[idx] = ST_PENDING;
    e->record[e->keys] = (uint32_t)idx;
    e->key[idx] = (uint32_t)e->keys++;
    return RC_OK;
}

/* Validates record r again and builds its row, ip and device_id masked
 * into the two buffers.  *why: LOGIN_OK, or the rule it broke.  Returns
 * RC_OK, or RC_NOMEM / RC_CRYPTO (the batch fails, not the record). */
static rc_t build_row(struct etl *e, const struct sqs_record *r, struct pg_row *row,
                      char ip_masked[MASK_OUTPUT_MAX], char device_masked[MASK_OUTPUT_MAX],
                      enum login_reason *why)
{
    struct login_row lr;
    rc_t rc = login_parse(&e->lp, r->body, r->body_len, r->body_flags, r->sent_ms, r->sent_bad,
                          e->start, &lr, why);
    if (rc == RC_OK && *why == LOGIN_OK)
        rc = row_build(keyset_current(e->masking), &lr, row, ip_masked, device_masked, why);
    return rc;
}

/* Validates, masks and gives the sink the row of every record that has a
 * key, in order (or tells it there is none), and logs every rejected
 * record, stopping at stop_at (monotonic clock).  *rows: the rows given.
 * Returns RC_OK, or RC_NOMEM / RC_CRYPTO / RC_TOOBIG (the batch fails). */
static rc_t transform(struct etl *e, int64_t stop_at, size_t *rows)
{
    const struct sqs_event *ev = &e->ev;
    int fifo_stopped = 0, late = 0;
    char ip_masked[MASK_OUTPUT_MAX], device_masked[MASK_OUTPUT_MAX];

    *rows = 0;
    for (size_t i = 0; i < ev->n; i++) {
        struct pg_row row;
        enum login_reason why = LOGIN_OK;
        rc_t rc;

        if (!late && (i & 127) == 0 && clock_mono_ms() >= stop_at) {
            late = 1;
            log_at(e->lg, LOG_WARN, "deadline near: the rest of the batch is left for a retry",
                   LF_NUM("processed", i), LF_NUM("records", ev->n));
        }
        if (fifo_stopped || late) {
            /* A repeat keeps ST_REPEAT: it takes the fate of the record it
             * repeats, and its messageId is listed once, with that record. */
            if (e->status[i] == ST_REPEAT)
                continue;
            if (e->status[i] == ST_PENDING)
                pg_batch_no_row(e->sink);
            e->status[i] = ST_NOT_DONE;
            continue;
        }
        if (e->status[i] == ST_REPEAT || e->status[i] == ST_NOT_DONE)
            continue; /* a repeat, or cut by a FIFO failure while parsing */
        if (e->status[i] == ST_REJECTED)
            why = (enum login_reason)e->reason[i]; /* rejected while parsing (on_record) */
        else if ((rc = build_row(e, &ev->records[i], &row, ip_masked, device_masked, &why)))
            return rc;
        if (why != LOGIN_OK) {
            if (e->status[i] == ST_PENDING)
                pg_batch_no_row(e->sink);
            e->status[i] = ST_REJECTED;
            report_rejected(e, i, login_reason_code(why));
            if (e->cfg.rejected == REJECTED_QUARANTINE) {
                if ((rc = quarantine_record(e, i, why)) != RC_OK)
                    return rc;
                continue;
            }
            /* FIFO: nothing after a failure may be written, or order breaks. */
            fifo_stopped = ev->fifo;
            continue;
        }
        if ((rc = pg_batch_row(e->sink, &row)) != RC_OK)
            return rc;
        (*rows)++;
    }
    return RC_OK;
}

/* The status of pending record i once the batch was written (rc: what
 * pg_batch_commit returned).  A row the database refused is a rejected
 * record (reason database_rejected). */
static uint8_t record_status(const struct etl *e, size_t i, rc_t rc)
{
    if (rc)
        return ST_NOT_DONE;
    switch (e->outcome[e->key[i]]) {
    case PG_WRITTEN:
        return ST_WRITTEN;
    case PG_DUPLICATE:
        return ST_DUPLICATE;
    case PG_REFUSED:
    case PG_QUARANTINED:
        report_rejected(e, i, "database_rejected");
        return e->outcome[e->key[i]] == PG_QUARANTINED ? ST_QUARANTINED : ST_REJECTED;
    default:
        return ST_NOT_DONE;
    }
}

/* Settles the status of every record once the batch was written (rc: what
 * pg_batch_commit returned) and counts each record once, by its fate.  A
 * repeat takes the status of the record it repeats (the first with its
 * messageId, which comes earlier, so is settled), except that a repeat of a
 * written record wrote nothing: a duplicate.  Cannot fail. */
static void settle(struct etl *e, rc_t rc, struct tally *t)
{
    for (size_t i = 0; i < e->ev.n; i++) {
        uint8_t *st = &e->status[i];
        if (*st == ST_PENDING)
            *st = record_status(e, i, rc);
        else if (*st == ST_QUARANTINING)
            *st = quarantine_status(e, i, rc);
        if (*st == ST_REPEAT) {
            const struct sqs_record *r = &e->ev.records[i];
            uint8_t fate = e->status[idset_get(&e->seen, r->message_id, r->message_id_len)];
            /* Listed with the record it repeats, counted once more. */
            t->duplicate += fate == ST_WRITTEN || fate == ST_DUPLICATE || fate == ST_QUARANTINED;
            t->rejected += fate == ST_REJECTED;
            t->failed += fate == ST_NOT_DONE;
            continue;
        }
        t->written += *st == ST_WRITTEN;
        t->duplicate += *st == ST_DUPLICATE;
        t->rejected += *st == ST_REJECTED || *st == ST_QUARANTINED;
        t->quarantined += *st == ST_QUARANTINED;
        t->failed += *st == ST_NOT_DONE;
    }
}

/* Makes ready for an event of event_len bytes: trims what an outsized one
 * left, and makes room for a guess of its record count (a realistic record
 * is ~800 bytes of event; both grow as records come).  Returns RC_OK, or the
 * failure with error filled. */
static rc_t prepare(struct etl *e, size_t event_len, struct rt_error *error)
{
    size_t guess = event_len / 512 + 64;
    rc_t rc;

    trim(e);
    if ((rc = reserve(e, guess)) || (rc = idset_reset(&e->seen, guess))) {
        if (rc == RC_CRYPTO)
            set_error(error, "Runtime.RandomUnavailable", "no random key for the id set");
        else
            set_error(error, "Runtime.OutOfMemory", "out of memory");
    }
    return rc;
}

/* Parses the event and hands each record's key to the sink as soon as the
 * record is parsed (on_record), in a batch that gives up at give_up_at
 * (epoch ms); the ledger COPY ends when the event does.  Returns RC_OK, or
 * the failure with error filled and the batch rolled back, nothing of the
 * event written. */
static rc_t parse_event(struct etl *e, const struct rt_invocation *inv, int64_t give_up_at,
                        struct rt_error *error)
{
    char err[ERR_LEN];

    pg_batch_begin(e->sink, clock_mono_deadline(give_up_at));
    drift_reset(&e->drift);
    e->lp.drift = &e->drift; /* each body counted once: while parsing, not in transform */
    e->keys = 0;
    e->quarantining = 0;
    e->cut = 0;
    rc_t rc = sqs_parse_stream(&e->ev, inv->event, inv->event_len, on_record, e, err);
    if (rc == RC_OK && e->ev.voided) {
        /* A later "Records" member won: the keys given so far were not the
         * event's.  Rare enough to start the batch again. */
        pg_batch_abort(e->sink);
        pg_batch_begin(e->sink, clock_mono_deadline(give_up_at));
        drift_reset(&e->drift);
        e->keys = 0;
        e->cut = 0;
        if ((rc = idset_reset(&e->seen, e->ev.n)) != RC_OK)
            snprintf(err, ERR_LEN, "%s", rc_strerror(rc));
    }
    for (size_t i = e->ev.handed; rc == RC_OK && i < e->ev.n; i++)
        rc = on_record(e, &e->ev, i, err);
    e->lp.drift = NULL;
    if (rc == RC_OK) {
        if (e->ev.fifo && e->cfg.rejected == REJECTED_RETRY)
            pg_batch_fifo(e->sink); /* quarantined, a refused row holds nothing up */
        pg_batch_keys_done(e->sink);
        return RC_OK;
    }
    pg_batch_abort(e->sink);
    if (rc == RC_INVALID) {
        set_error(error, "InvalidEvent", err);
        log_at(e->lg, LOG_ERROR, "not an SQS event", LF_STR("error", err));
    } else {
        set_error(error, "Runtime.OutOfMemory", err);
        log_at(e->lg, LOG_ERROR, "batch failed", LF_STR("error", err));
    }
    return rc;
}

/* Commits the batch's rows and quarantined records (none: its keys' ledger
 * entries are rolled back), reading the database secret again when the database refused the
 * credentials.  Returns RC_OK; RC_TIMEOUT, logged, when the deadline came
 * first (nothing written, every record retried); or the database's failure
 * with error filled (the whole batch comes back). */
static rc_t write_batch(struct etl *e, size_t rows, int64_t give_up_at, struct rt_error *error)
{
    char err[ERR_LEN];
    rc_t rc;

    if (!rows && !e->quarantining) {
        pg_batch_abort(e->sink);
        return RC_OK;
    }
    rc = pg_batch_commit(e->sink, e->outcome, err);
    if (rc == RC_DB && e->cfg.db_secret_id && pg_sink_auth_refused(e->sink))
        rc = creds_commit_again(e, give_up_at, err);
    if (rc == RC_TIMEOUT) {
        log_at(e->lg, LOG_ERROR, "deadline reached before commit: nothing written",
               LF_STR("error", err), LF_NUM("records", e->ev.n));
    } else if (rc) {
        set_error(error, "DatabaseUnavailable", err);
        log_at(e->lg, LOG_ERROR, "database write failed", LF_STR("error", err),
               LF_NUM("records", e->ev.n));
    }
    return rc;
}

rc_t etl_handle(void *ctx, const struct rt_invocation *inv, struct buf *answer,
                struct rt_error *error)
{
    struct etl *e = ctx;
    struct tally t = {0};
    char err[ERR_LEN];
    int64_t started = clock_mono_ms();
    size_t rows = 0;
    rc_t rc;

    e->start = clock_epoch_ms();
    /* The runtime decides what a missing deadline means (rt.h). */
    int64_t margin = margin_ms(e, e->start, inv->deadline_ms);
    int64_t give_up_at = inv->deadline_ms - margin;
    /* The secrets first: the sink needs them before the first key, which
     * goes out while the event is still being parsed. */
    if ((rc = creds_load(e, give_up_at, err)) != RC_OK) {
        set_error(error, "SecretsUnavailable", err);
        log_at(e->lg, LOG_ERROR, "cannot read the secrets", LF_STR("error", err));
        return rc;
    }
    if ((rc = prepare(e, inv->event_len, error)) != RC_OK ||
        (rc = parse_event(e, inv, give_up_at, error)) != RC_OK)
        return rc;
    t.received = e->ev.n;
    /* The rows stop a margin before the commit must: room to send them. */
    if ((rc = transform(e, clock_mono_deadline(give_up_at - margin), &rows)) != RC_OK) {
        pg_batch_abort(e->sink);
        set_error(error, rc == RC_CRYPTO ? "MaskingFailed" : "Runtime.OutOfMemory",
                  rc_strerror(rc));
        log_at(e->lg, LOG_ERROR, "batch failed", LF_STR("error", rc_strerror(rc)));
        return rc;
    }
    rc = write_batch(e, rows, give_up_at, error);
    if (rc && rc != RC_TIMEOUT)
        return rc;
    settle(e, rc, &t);
    if (write_answer(e, answer) != RC_OK) {
        set_error(error, "Runtime.OutOfMemory", "the answer does not fit");
        return answer->err;
    }
    report_batch(e, &t, clock_mono_ms() - started, inv);
    return RC_OK;
}
