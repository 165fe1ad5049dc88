/* etl_int.h - the handler's private header: what its files share, the way
 * the Postgres sink's files share pg_int.h.  etl.h is the API; this is for
 * function/etl*.c only.
 *
 *   etl.c         the handler: an event's records from parsing to the answer
 *   etl_creds.c   the credentials: the masking keys and the database secret,
 *                 read on the first invocation and the database secret read
 *                 again when the database refuses it
 *   etl_report.c  what an invocation reports: a rejected record's log line,
 *                 the batch summary and the metrics line
 *   etl_quarantine.c  a rejected record handed to the sink's quarantine, its
 *                 body masked, and what became of it */
#ifndef ETL_INT_H
#define ETL_INT_H

#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "drift.h"
#include "etl.h"
#include "idset.h"
#include "keyset.h"
#include "login.h"
#include "pg.h"
#include "rds_iam.h"
#include "sqs.h"

/* What became of one record of the event. */
enum status {
    ST_PENDING,      /* handed to the database, not yet committed */
    ST_WRITTEN,      /* committed in this invocation */
    ST_DUPLICATE,    /* its messageId was committed by an earlier invocation */
    ST_REPEAT,       /* its messageId appeared earlier in this batch: shares that record's fate */
    ST_REJECTED,     /* broke a rule, or the database refused it: listed, so SQS redrives it to
                      * the dead-letter queue */
    ST_NOT_DONE,     /* not committed (FIFO stop, deadline, write failure): listed, retried */
    ST_QUARANTINING, /* rejected, handed to the sink's quarantine (key: its entry there) */
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
    struct idset seen;   /* messageIds of this batch, each with the first record that has it */
    uint8_t *status;     /* per record: enum status */
    uint32_t *key;       /* per record handed to the sink: its key (and row) there (32 bits:
                            an event holds far fewer records; 4 bytes a record count when
                            170,000 tiny ones fill 6 MB) */
    uint8_t *reason;     /* per record rejected while parsing: enum login_reason, which
                            transform logs in order */
    uint8_t *outcome;    /* per key: enum pg_outcome, answer of pg_batch_commit */
    uint32_t *record;    /* per key: its record (a refused row's body, for the quarantine) */
    size_t quarantining; /* records handed to the sink's quarantine in this invocation */
    struct drift drift;  /* this invocation's schema drift, counted while parsing */
    size_t cap;          /* records the arrays hold */
    size_t keys;         /* keys handed to the sink in this invocation */
    int64_t start;       /* the invocation's start, epoch ms: the date of rows without
                            SentTimestamp */
    int cut;             /* FIFO: a record was rejected while parsing, so no later one
                            gets a key */
};

/* Counters of one invocation: every record counted once, by its fate. */
struct tally {
    size_t received, written, duplicate, rejected, failed;
    size_t quarantined; /* of the rejected, those kept in login_etl_rejected (answered done) */
};

/* etl_creds.c */

/* Loads the masking keys given directly (MASKING_KEY), when they are, and
 * checks the retired ones otherwise (the rest of the set is checked when the
 * secret is read).  Returns RC_OK, or RC_CONFIG with err filled. */
rc_t creds_init(struct etl *e, char err[ERR_LEN]);

/* Reads the secrets named by DB_SECRET_ID and MASKING_KEY_SECRET_ID on the
 * first invocation (the extension does not answer during init), every wait
 * ending by until_ms; later calls do nothing.  Returns RC_OK, or the failure
 * with err filled (never quoting a secret). */
rc_t creds_load(struct etl *e, int64_t until_ms, char err[ERR_LEN]);

/* The database refused the credentials of the batch's connection: reads the
 * database secret again and, when it changed (a rotation), writes the batch
 * again with it, all by the batch's give-up time.  Returns as
 * pg_batch_commit; when the secret is the one already tried, RC_DB with err
 * saying so (the extension serves its cached copy for up to
 * SECRETS_MANAGER_TTL after a rotation). */
rc_t creds_commit_again(struct etl *e, int64_t until_ms, char err[ERR_LEN]);

/* etl_quarantine.c */

/* pg_body_fn: the masked body of the record of key `key` (a row the
 * database refused), for the quarantine. */
rc_t quarantine_body(void *ctx, size_t key, struct buf *out);

/* Hands rejected record i to the sink's quarantine, its body masked whole
 * (nothing of it is stored in the clear); its status becomes
 * ST_QUARANTINING.  Returns RC_OK, or RC_NOMEM / RC_CRYPTO / RC_TOOBIG (the
 * batch fails). */
rc_t quarantine_record(struct etl *e, size_t i, enum login_reason why);

/* The status of quarantined record i once the batch was written (rc: what
 * pg_batch_commit returned): stored, committed before, or left for a retry.
 * Cannot fail. */
uint8_t quarantine_status(const struct etl *e, size_t i, rc_t rc);

/* etl_report.c */

/* The one log line of a rejected record: its messageId and reason code
 * (login_reason_code, or "database_rejected").  Cannot fail. */
void report_rejected(const struct etl *e, size_t i, const char *reason);

/* The batch summary log line and the metrics line (CloudWatch Embedded
 * Metric Format) of an invocation that answered.  Cannot fail. */
void report_batch(const struct etl *e, const struct tally *t, int64_t duration_ms,
                  const struct rt_invocation *inv);

#endif
