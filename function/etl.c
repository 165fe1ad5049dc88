/* etl.c - the handler: parse the SQS event, validate and mask every record,
 * stream the rows to Postgres, commit once, answer with the failures.
 *
 * Two kinds of failure stay apart all the way up: a bad record is listed in
 * batchItemFailures (SQS retries it, then dead-letters it); a broken database
 * or an event that is not an SQS event fails the invocation as a whole. */
#define _DEFAULT_SOURCE
#include "etl.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "clock.h"
#include "config.h"
#include "grow.h"
#include "idset.h"
#include "keyset.h"
#include "login.h"
#include "mask.h"
#include "pg.h"
#include "rds_iam.h"
#include "row.h"
#include "secrets.h"
#include "sqs.h"

enum status {
    ST_PENDING,      /* handed to the database, not yet committed */
    ST_WRITTEN,      /* committed in this invocation */
    ST_DUPLICATE,    /* its messageId was committed by an earlier invocation */
    ST_REPEAT,       /* its messageId appeared earlier in this batch: shares that record's fate */
    ST_REJECTED,     /* broke a rule, or the database refused it: listed, so SQS redrives it to
                      * the dead-letter queue */
    ST_NOT_DONE,     /* not committed (FIFO stop, deadline, write failure): listed, retried */
    ST_QUARANTINING, /* rejected, handed to the sink's quarantine (link: its entry) */
    ST_QUARANTINED   /* rejected, and committed to login_etl_rejected: answered done */
};

struct etl {
    struct logger *lg;
    struct config cfg;
    struct keyset *masking;      /* the masking keys: the current one masks; NULL until read
                                    from the masking secret on the first invocation */
    struct pg_sink *sink;        /* the connection, kept across invocations */
    struct rds_iam *iam;         /* DB_AUTH=iam: signs the password of each connect; else NULL */
    int secrets_loaded;          /* the secrets were read (again only after refused credentials) */
    unsigned char db_digest[32]; /* SHA-256 of the connection string from the database
                                    secret: tells a rotated secret from a cached copy
                                    without keeping the password */
    struct sqs_event ev;         /* reused across invocations */
    struct login_parser lp;
    struct drift drift;  /* this invocation's schema drift, counted while parsing */
    struct idset seen;   /* messageIds of this batch */
    uint8_t *status;     /* per record: enum status */
    uint32_t *link;      /* per record: its key (and row) in the sink, or the record it repeats
                            (32 bits: an event holds far fewer records; 4 bytes a record
                            count when 170,000 tiny ones fill 6 MB) */
    uint8_t *outcome;    /* per key: enum pg_outcome, answer of pg_batch_commit */
    uint32_t *record;    /* per key: its record (the body of a refused row, quarantined) */
    size_t quarantining; /* records handed to the sink's quarantine in this invocation */
    size_t cap;          /* records the arrays hold */
    size_t keys;         /* keys handed to the sink in this invocation */
    int64_t start;       /* the invocation's start, epoch ms: the date of rows without
                            SentTimestamp */
    int cut;             /* FIFO: a record was rejected while parsing, so no later one
                            gets a key */
};

/* Counters of one invocation, for the log and the metrics line. */
struct tally {
    size_t received, written, duplicate, rejected, failed;
    size_t quarantined; /* of the rejected, those kept in login_etl_rejected (answered done) */
    size_t reasons[LOGIN__COUNT];
};

/* Logs the key ids of the masking keys now in use (ids only, never a key),
 * and warns when MASKING_KEY_ID names another id than the keyset document's
 * current key, which wins (keyset.h).  Cannot fail. */
static void log_keys(const struct etl *e)
{
    char retired[KEYSET_MAX * (MASK_KEY_ID_MAX + 1) + 1];
    struct buf b;
    const char *current = mask_key_id(keyset_current(e->masking));

    buf_wrap(&b, retired, sizeof retired);
    for (size_t i = 1; i < keyset_count(e->masking); i++)
        buf_printf(&b, "%s%s", i > 1 ? "," : "", mask_key_id(keyset_key(e->masking, i)));
    log_at(e->lg, LOG_INFO, "masking keys", LF_STR("current", current), LF_STR("retired", retired));
    if (e->cfg.masking_key_id_env && strcmp(e->cfg.masking_key_id_env, current) != 0)
        log_at(e->lg, LOG_WARN,
               "MASKING_KEY_ID names another key than the keyset document's current one, "
               "which masks",
               LF_STR("MASKING_KEY_ID", e->cfg.masking_key_id_env), LF_STR("current", current));
}

/* The masked body of record r, appended to out, for the quarantine.
 * Returns RC_OK, RC_NOMEM, RC_TOOBIG or RC_CRYPTO. */
static rc_t refused_body_of(struct etl *e, const struct sqs_record *r, struct buf *out)
{
    return mask_value_long(keyset_current(e->masking), r->body ? r->body : "",
                           r->body ? r->body_len : 0, out);
}

/* pg_body_fn: the masked body of the record of key `key` (a row the
 * database refused). */
static rc_t refused_body(void *ctx, size_t key, struct buf *out)
{
    struct etl *e = ctx;
    return refused_body_of(e, &e->ev.records[e->record[key]], out);
}

/* Hands rejected record i to the sink's quarantine, its body masked whole
 * (nothing of it is stored in the clear).  Returns RC_OK, or RC_NOMEM /
 * RC_CRYPTO / RC_TOOBIG (the batch fails). */
static rc_t quarantine(struct etl *e, size_t i, enum login_reason why)
{
    const struct sqs_record *r = &e->ev.records[i];
    struct buf masked;
    size_t index = 0;

    buf_init(&masked, SIZE_MAX / 4);
    rc_t rc = refused_body_of(e, r, &masked);
    if (rc == RC_OK)
        rc = pg_batch_quarantine(e->sink, r->message_id, r->message_id_len, r->sent_ms,
                                 login_reason_code(why), masked.data, masked.len, &index);
    buf_free(&masked);
    if (rc == RC_OK) {
        e->status[i] = ST_QUARANTINING;
        e->link[i] = (uint32_t)index;
        e->quarantining++;
    }
    return rc;
}

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
    if (e->cfg.masking_key) {
        e->masking = keyset_load("MASKING_KEY", e->cfg.masking_key, strlen(e->cfg.masking_key),
                                 e->cfg.masking_key_id_env, e->cfg.masking_keys_retired, err);
        /* The key copies are no longer needed: wipe them now rather than at exit. */
        config_free(&e->cfg);
        if (!e->masking) {
            *err_type = "InvalidConfiguration";
            goto fail;
        }
        log_keys(e);
    } else if (e->cfg.masking_keys_retired &&
               keyset_check_retired(e->cfg.masking_keys_retired, err) != RC_OK) {
        /* The rest of the set is checked when the secret is read. */
        *err_type = "InvalidConfiguration";
        goto fail;
    }
    e->sink = pg_sink_new(e->cfg.db_secret_id ? "" : e->cfg.database_url, lg);
    if (!e->sink) {
        snprintf(err, ERR_LEN, "out of memory");
        goto fail;
    }
    if (e->cfg.rejected == REJECTED_QUARANTINE)
        pg_sink_quarantine(e->sink, refused_body, e);
    if (e->cfg.db_auth_iam) {
        e->iam = rds_iam_new(e->cfg.database_url, e->cfg.iam_renew_s, &rc, err);
        if (!e->iam) {
            *err_type = rc == RC_CONFIG ? "InvalidConfiguration" : "Runtime.OutOfMemory";
            goto fail;
        }
        pg_sink_set_password_fn(e->sink, rds_iam_password, e->iam);
    }
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
    free(e->link);
    free(e->outcome);
    free(e->record);
    e->record = NULL;
    e->status = NULL;
    e->link = NULL;
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

/* Reads the database secret (DB_SECRET_ID) into the sink's settings, every
 * wait ending by until_ms.  *changed says whether it differs from what was
 * read before (always 1 the first time).  Returns RC_OK, or the failure with
 * err filled (never quoting the secret). */
static rc_t read_db_secret(struct etl *e, int64_t until_ms, int *changed, char err[ERR_LEN])
{
    struct buf value;
    unsigned char digest[32];
    unsigned int digest_len = 0;
    rc_t rc;

    *changed = 0;
    buf_init(&value, 64 * 1024);
    rc = secrets_db_conninfo(&e->cfg.secrets_endpoint, e->cfg.db_secret_id, until_ms, &value, err);
    if (rc)
        goto out;
    if (EVP_Digest(value.data, value.len, digest, &digest_len, EVP_sha256(), NULL) != 1 ||
        digest_len != sizeof digest) {
        snprintf(err, ERR_LEN, "cannot hash the database settings");
        rc = RC_CRYPTO;
        goto out;
    }
    *changed = !e->secrets_loaded || CRYPTO_memcmp(digest, e->db_digest, sizeof digest) != 0;
    if (*changed) {
        if ((rc = pg_sink_set_conninfo(e->sink, value.data)) != RC_OK) {
            snprintf(err, ERR_LEN, "out of memory");
            goto out;
        }
        memcpy(e->db_digest, digest, sizeof digest);
    }
out:
    OPENSSL_cleanse(digest, sizeof digest);
    buf_wipe(&value);
    return rc;
}

/* Reads the secrets named by DB_SECRET_ID and MASKING_KEY_SECRET_ID on the
 * first invocation (the extension does not answer during init), every wait
 * ending by until_ms; later calls do nothing.  Returns RC_OK, or the failure
 * with err filled (never quoting a secret). */
static rc_t load_secrets(struct etl *e, int64_t until_ms, char err[ERR_LEN])
{
    struct buf value;
    rc_t rc = RC_OK;
    int changed;

    if (e->secrets_loaded)
        return RC_OK;
    buf_init(&value, 64 * 1024);
    if (e->cfg.db_secret_id && (rc = read_db_secret(e, until_ms, &changed, err)) != RC_OK)
        goto out;
    if (e->cfg.masking_key_secret_id && !e->masking) {
        rc = secrets_get(&e->cfg.secrets_endpoint, e->cfg.masking_key_secret_id, until_ms, &value,
                         err);
        if (!rc) {
            /* Surrounding white space is tolerated (a key pasted with a newline). */
            size_t a = 0, z = value.len;
            while (a < z &&
                   (value.data[a] == ' ' || value.data[a] == '\n' || value.data[a] == '\r'))
                a++;
            while (z > a && (value.data[z - 1] == ' ' || value.data[z - 1] == '\n' ||
                             value.data[z - 1] == '\r'))
                z--;
            e->masking = keyset_load("the masking secret", value.data + a, z - a,
                                     e->cfg.masking_key_id_env, e->cfg.masking_keys_retired, err);
            if (!e->masking)
                rc = RC_CONFIG;
            else
                log_keys(e);
        }
        buf_wipe(&value);
        if (rc)
            goto out;
        config_free(&e->cfg); /* the retired keys' copy */
    }
    e->secrets_loaded = 1;
out:
    return rc;
}

/* The database refused the credentials of the batch's connection: reads the
 * database secret again and, when it changed (a rotation), writes the batch
 * again with it, all by the batch's give-up time.  Returns as
 * pg_batch_commit; when the secret is the one already tried, RC_DB with err
 * saying so (the extension serves its cached copy for up to
 * SECRETS_MANAGER_TTL after a rotation). */
static rc_t commit_with_fresh_secret(struct etl *e, int64_t until_ms, char err[ERR_LEN])
{
    char why[ERR_LEN];
    int changed = 0;
    rc_t rc;

    log_at(e->lg, LOG_WARN, "the database refused the credentials: reading the secret again",
           LF_STR("error", err));
    snprintf(why, sizeof why, "%s", err);
    rc = read_db_secret(e, until_ms, &changed, err);
    if (rc) {
        log_at(e->lg, LOG_ERROR, "cannot read the database secret again", LF_STR("error", err));
        /* err quotes no response text (secrets.h): its start says why. */
        char again[ERR_LEN];
        snprintf(again, sizeof again, "%s", err);
        snprintf(err, ERR_LEN, "%.140s; reading the secret again failed: %.80s", why, again);
        return RC_DB;
    }
    if (!changed) {
        snprintf(err, ERR_LEN,
                 "%.170s; the secret is unchanged (the extension caches it up to "
                 "SECRETS_MANAGER_TTL)",
                 why);
        return RC_DB;
    }
    log_msg(e->lg, LOG_INFO, "the database secret changed: writing the batch with it");
    return pg_batch_commit(e->sink, e->outcome, err);
}

/* Records an invocation keeps room for once it is over: a realistic 6 MB
 * event holds ~7,700; 6 MB of the tiniest records up to 170,000. */
#define TRIM_RECORDS 32768

/* Frees what an outsized event left allocated (the record array, the id
 * set, the per-record arrays, the sink's rows), before the next event, so
 * that its peak does not stack on the last one's: 6 MB of tiny valid
 * records after 6 MB of tiny rejected ones peaked at 64 MiB without this.
 * Cannot fail. */
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
        {&e->status, sizeof *e->status},
        {&e->link, sizeof *e->link},
        {&e->outcome, sizeof *e->outcome},
        {&e->record, sizeof *e->record},
    };
    return grow_arrays(arrays, sizeof arrays / sizeof *arrays, &e->cap, n, 1024);
}

static void set_error(struct rt_error *error, const char *type, const char *message)
{
    snprintf(error->type, sizeof error->type, "%s", type);
    snprintf(error->message, sizeof error->message, "%s", message);
}

/* Is record i listed in batchItemFailures? */
static int listed(const struct etl *e, size_t i)
{
    uint8_t st = e->status[i];
    if (st == ST_REPEAT)
        st = e->status[e->link[i]];
    return st == ST_REJECTED || st == ST_NOT_DONE || st == ST_QUARANTINING;
}

/* Writes {"batchItemFailures":[...]}: each listed messageId once. */
static rc_t write_answer(const struct etl *e, struct buf *answer)
{
    int first = 1;
    buf_appends(answer, "{\"batchItemFailures\":[");
    for (size_t i = 0; i < e->ev.n; i++) {
        if (!listed(e, i) || e->status[i] == ST_REPEAT)
            continue;
        const struct sqs_record *r = &e->ev.records[i];
        buf_appends(answer, first ? "{\"itemIdentifier\":" : ",{\"itemIdentifier\":");
        buf_append_json(answer, r->message_id, r->message_id_len);
        buf_appendc(answer, '}');
        first = 0;
    }
    return buf_appends(answer, "]}");
}

/* One CloudWatch Embedded Metric Format line for the invocation. */
static void write_metrics(const struct etl *e, const struct tally *t, int64_t duration_ms,
                          const struct rt_invocation *inv)
{
    struct buf b;
    buf_init(&b, 4096);
    buf_printf(&b,
               "{\"_aws\":{\"Timestamp\":%lld,\"CloudWatchMetrics\":[{\"Namespace\":\"LoginEtl\","
               "\"Dimensions\":[[\"FunctionName\"]],\"Metrics\":["
               "{\"Name\":\"RecordsReceived\",\"Unit\":\"Count\"},"
               "{\"Name\":\"RecordsWritten\",\"Unit\":\"Count\"},"
               "{\"Name\":\"RecordsDuplicate\",\"Unit\":\"Count\"},"
               "{\"Name\":\"RecordsRejected\",\"Unit\":\"Count\"},"
               "{\"Name\":\"RecordsFailed\",\"Unit\":\"Count\"},"
               "{\"Name\":\"RecordsQuarantined\",\"Unit\":\"Count\"},"
               "{\"Name\":\"Duration\",\"Unit\":\"Milliseconds\"},"
               "{\"Name\":\"ColdStart\",\"Unit\":\"Count\"}]}]},\"FunctionName\":",
               (long long)clock_epoch_ms());
    buf_append_json(&b, e->cfg.function_name, strlen(e->cfg.function_name));
    buf_printf(&b,
               ",\"RecordsReceived\":%zu,\"RecordsWritten\":%zu,\"RecordsDuplicate\":%zu,"
               "\"RecordsRejected\":%zu,\"RecordsFailed\":%zu,\"RecordsQuarantined\":%zu,"
               "\"Duration\":%lld,\"ColdStart\":%d,\"requestId\":",
               t->received, t->written, t->duplicate, t->rejected, t->failed, t->quarantined,
               (long long)duration_ms, inv->cold_start ? 1 : 0);
    buf_append_json(&b, inv->request_id, strlen(inv->request_id));
    buf_appends(&b, "}\n");
    if (!b.err)
        log_raw(e->lg, b.data, b.len);
    buf_free(&b);
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
 * ledger; otherwise it would have to be deleted before COMMIT.  Measured on
 * 100,000 records with 2% rejected, alternating with the build that sent
 * every key and deleted the rejected ones: 7% less server CPU (median 0.233
 * against 0.250 CPU-s), about 0.04 CPU-s more in the function, the same
 * handler time.  The server is what a fleet shares.  Masking here too (one
 * pass, no second validation) was slower: the keys then leave at the pace
 * of the masking, and the rows COPY, which waits for the ledger's, starts
 * later.  A rejected record's reason waits in its link for transform, which
 * logs and counts it in order.  Returns RC_OK, or RC_NOMEM/RC_TOOBIG with
 * err filled. */
static rc_t on_record(void *ctx, const struct sqs_event *ev, size_t idx, char err[ERR_LEN])
{
    struct etl *e = ctx;
    const struct sqs_record *r = &ev->records[idx];
    rc_t rc;

    if ((rc = reserve(e, idx + 1)) != RC_OK || (rc = seen_room(e)) != RC_OK) {
        snprintf(err, ERR_LEN, "out of memory for %zu records", idx + 1);
        return rc;
    }
    size_t first = idset_put(&e->seen, r->message_id, r->message_id_len, idx);
    if (first != idx) {
        e->status[idx] = ST_REPEAT;
        e->link[idx] = (uint32_t)first;
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
        e->link[idx] = (uint32_t)why;
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
    e->link[idx] = (uint32_t)e->keys++;
    return RC_OK;
}

/* Validates, masks and gives the sink the row of every record that has a
 * key, in order (or tells it there is none), stopping at stop_at (monotonic
 * clock; rows without SentTimestamp are dated by e->start).  Returns RC_OK, or RC_NOMEM / RC_CRYPTO
 * / RC_TOOBIG (the batch fails). */
static rc_t transform(struct etl *e, int64_t stop_at, struct tally *t, size_t *rows)
{
    const struct sqs_event *ev = &e->ev;
    int fifo_stopped = 0, late = 0;
    char ip_masked[MASK_OUTPUT_MAX], device_masked[MASK_OUTPUT_MAX];

    *rows = 0;
    for (size_t i = 0; i < ev->n; i++) {
        const struct sqs_record *r = &ev->records[i];
        struct login_row lr;
        struct pg_row row;

        if (!late && (i & 127) == 0 && clock_mono_ms() >= stop_at) {
            late = 1;
            log_at(e->lg, LOG_WARN, "deadline near: the rest of the batch is left for a retry",
                   LF_NUM("processed", i), LF_NUM("records", ev->n));
        }
        if (fifo_stopped || late) {
            if (e->status[i] == ST_PENDING)
                pg_batch_no_row(e->sink);
            e->status[i] = ST_NOT_DONE;
            continue;
        }
        if (e->status[i] == ST_REPEAT || e->status[i] == ST_NOT_DONE)
            continue; /* a repeat, or cut by a FIFO failure while parsing */
        enum login_reason why;
        if (e->status[i] == ST_REJECTED) {
            /* Rejected while parsing (on_record). */
            why = (enum login_reason)e->link[i];
            t->reasons[why]++;
            log_at(e->lg, LOG_WARN, "record rejected", LF_STR("messageId", r->message_id),
                   LF_STR("reason", login_reason_code(why)));
            if (e->cfg.rejected == REJECTED_QUARANTINE) {
                rc_t rc = quarantine(e, i, why);
                if (rc)
                    return rc;
                continue;
            }
            fifo_stopped = ev->fifo;
            continue;
        }
        rc_t rc = login_parse(&e->lp, r->body, r->body_len, r->body_flags, r->sent_ms, r->sent_bad,
                              e->start, &lr, &why);
        if (rc == RC_OK && why == LOGIN_OK)
            rc = row_build(keyset_current(e->masking), &lr, &row, ip_masked, device_masked, &why);
        if (rc)
            return rc; /* RC_NOMEM or RC_CRYPTO: the batch fails, not the record */
        if (why != LOGIN_OK) {
            pg_batch_no_row(e->sink);
            e->status[i] = ST_REJECTED;
            t->reasons[why]++;
            log_at(e->lg, LOG_WARN, "record rejected", LF_STR("messageId", r->message_id),
                   LF_STR("reason", login_reason_code(why)));
            if (e->cfg.rejected == REJECTED_QUARANTINE) {
                if ((rc = quarantine(e, i, why)) != RC_OK)
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
 * record (reason database_rejected), logged here by its messageId. */
static uint8_t record_status(const struct etl *e, size_t i, rc_t rc)
{
    if (rc)
        return ST_NOT_DONE;
    switch (e->outcome[e->link[i]]) {
    case PG_WRITTEN:
        return ST_WRITTEN;
    case PG_DUPLICATE:
        return ST_DUPLICATE;
    case PG_REFUSED:
    case PG_QUARANTINED:
        log_at(e->lg, LOG_WARN, "record rejected", LF_STR("messageId", e->ev.records[i].message_id),
               LF_STR("reason", "database_rejected"));
        return e->outcome[e->link[i]] == PG_QUARANTINED ? ST_QUARANTINED : ST_REJECTED;
    default:
        return ST_NOT_DONE;
    }
}

/* The status of quarantined record i once the batch was written (rc: what
 * pg_batch_commit returned): stored, committed before, or left for a
 * retry. */
static uint8_t quarantine_status(const struct etl *e, size_t i, rc_t rc)
{
    if (rc)
        return ST_NOT_DONE;
    switch (pg_batch_quarantined(e->sink, e->link[i])) {
    case PG_QUARANTINED:
        return ST_QUARANTINED;
    case PG_DUPLICATE:
        return ST_DUPLICATE;
    default:
        return ST_NOT_DONE;
    }
}

rc_t etl_handle(void *ctx, const struct rt_invocation *inv, struct buf *answer,
                struct rt_error *error)
{
    struct etl *e = ctx;
    struct tally t = {0};
    char err[ERR_LEN];
    int64_t start = clock_epoch_ms(), started = clock_mono_ms();
    size_t rows = 0;
    rc_t rc;

    /* The runtime decides what a missing deadline means (rt.h). */
    int64_t deadline = inv->deadline_ms;
    int64_t margin = margin_ms(e, start, deadline);
    int64_t give_up_at = deadline - margin;
    /* The secrets first: the sink needs them before the first key, which
     * goes out while the event is still being parsed. */
    if ((rc = load_secrets(e, give_up_at, err)) != RC_OK) {
        set_error(error, "SecretsUnavailable", err);
        log_at(e->lg, LOG_ERROR, "cannot read the secrets", LF_STR("error", err));
        return rc;
    }
    trim(e);
    /* Room for a guess of the record count (a realistic record is ~800
     * bytes of event); both grow as records come. */
    size_t guess = inv->event_len / 512 + 64;
    if ((rc = reserve(e, guess)) || (rc = idset_reset(&e->seen, guess))) {
        if (rc == RC_CRYPTO)
            set_error(error, "Runtime.RandomUnavailable", "no random key for the id set");
        else
            set_error(error, "Runtime.OutOfMemory", "out of memory");
        return rc;
    }

    /* Each record's key goes to the sink as soon as the record is parsed
     * (on_record); the ledger COPY ends when the event is. */
    pg_batch_begin(e->sink, clock_mono_deadline(give_up_at));
    drift_reset(&e->drift);
    e->lp.drift = &e->drift; /* each body counted once: while parsing, not in transform */
    e->keys = 0;
    e->quarantining = 0;
    e->start = start;
    e->cut = 0;
    rc = sqs_parse_stream(&e->ev, inv->event, inv->event_len, on_record, e, err);
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
    if (rc) {
        /* Keys already sent are rolled back: nothing of the event is written. */
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
    t.received = e->ev.n;
    if (e->ev.fifo && e->cfg.rejected == REJECTED_RETRY)
        pg_batch_fifo(e->sink); /* quarantined, a refused row holds nothing up */
    pg_batch_keys_done(e->sink);
    rc = transform(e, clock_mono_deadline(give_up_at - margin), &t, &rows);
    if (rc) {
        pg_batch_abort(e->sink);
        set_error(error, rc == RC_CRYPTO ? "MaskingFailed" : "Runtime.OutOfMemory",
                  rc_strerror(rc));
        log_at(e->lg, LOG_ERROR, "batch failed", LF_STR("error", rc_strerror(rc)));
        return rc;
    }
    if (rows || e->quarantining) {
        rc = pg_batch_commit(e->sink, e->outcome, err);
        if (rc == RC_DB && e->cfg.db_secret_id && pg_sink_auth_refused(e->sink))
            rc = commit_with_fresh_secret(e, give_up_at, err);
        if (rc && rc != RC_TIMEOUT) {
            /* The database, not the records: the whole batch comes back. */
            set_error(error, "DatabaseUnavailable", err);
            log_at(e->lg, LOG_ERROR, "database write failed", LF_STR("error", err),
                   LF_NUM("records", e->ev.n));
            return rc;
        }
        if (rc == RC_TIMEOUT)
            log_at(e->lg, LOG_ERROR, "deadline reached before commit: nothing written",
                   LF_STR("error", err), LF_NUM("records", e->ev.n));
    } else {
        /* Keys went out but no row: their ledger entries are rolled back. */
        pg_batch_abort(e->sink);
    }
    for (size_t i = 0; i < e->ev.n; i++) {
        uint8_t *st = &e->status[i];
        if (*st == ST_PENDING)
            *st = record_status(e, i, rc);
        else if (*st == ST_QUARANTINING)
            *st = quarantine_status(e, i, rc);
        /* Every record is counted once, by its fate; a repeat shares the fate
         * of the record it repeats (which comes first, so is settled), except
         * that a repeat of a written record wrote nothing: a duplicate. */
        uint8_t fate = *st == ST_REPEAT ? e->status[e->link[i]] : *st;
        if (*st == ST_REPEAT && (fate == ST_WRITTEN || fate == ST_QUARANTINED))
            fate = ST_DUPLICATE;
        t.written += fate == ST_WRITTEN;
        t.duplicate += fate == ST_DUPLICATE;
        t.rejected += fate == ST_REJECTED || fate == ST_QUARANTINED;
        t.quarantined += fate == ST_QUARANTINED;
        t.failed += fate == ST_NOT_DONE;
    }
    if (write_answer(e, answer) != RC_OK) {
        set_error(error, "Runtime.OutOfMemory", "the answer does not fit");
        return answer->err;
    }
    struct pg_stats ps;
    pg_batch_stats(e->sink, &ps);
    int64_t duration = clock_mono_ms() - started;
    log_at(e->lg, LOG_INFO, "batch done", LF_NUM("received", t.received),
           LF_NUM("written", t.written), LF_NUM("duplicate", t.duplicate),
           LF_NUM("rejected", t.rejected), LF_NUM("quarantined", t.quarantined),
           LF_NUM("failed", t.failed), LF_NUM("attempts", ps.attempts),
           LF_NUM("durationMs", duration));
    write_metrics(e, &t, duration, inv);
    drift_report(&e->drift, e->lg, e->cfg.function_name, login_field_name, LOGIN_FIELDS,
                 inv->request_id);
    return RC_OK;
}
