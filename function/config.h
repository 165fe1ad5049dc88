/* config.h - the function's settings, read from the environment once at
 * start (docs/behaviour.md, "Configuration") and checked there, so that a bad setting is an
 * init error rather than a failure on every invocation. */
#ifndef CONFIG_H
#define CONFIG_H

#include "result.h"
#include "url.h"

/* What becomes of a record the function will never accept (REJECTED_RECORDS). */
enum rejected_mode {
    REJECTED_QUARANTINE, /* stored masked in login_etl_rejected with the batch, answered done */
    REJECTED_RETRY       /* listed in batchItemFailures: SQS retries it, then dead-letters it */
};

struct config {
    char *masking_key;                 /* owned, wiped when freed: MASKING_KEY, 128 hex
                                          characters or a keyset document (keyset.h), or NULL
                                          when the key comes from a secret */
    const char *masking_key_id;        /* MASKING_KEY_ID as mask_key_id_setting reads it (unset:
                                          "k1"; set but empty: refused); borrowed */
    const char *masking_key_id_env;    /* MASKING_KEY_ID as set, NULL when unset (keyset_load
                                          takes it so); borrowed */
    char *masking_keys_retired;        /* owned, wiped when freed: MASKING_KEYS_RETIRED, or
                                          NULL (keyset.h: id=<hex>[,id=<hex>...]) */
    const char *masking_key_secret_id; /* MASKING_KEY_SECRET_ID or NULL */
    const char *db_secret_id;          /* DB_SECRET_ID or NULL */
    const char *database_url;          /* DATABASE_URL or NULL (libpq reads PG* itself) */
    int db_auth_iam;                   /* DB_AUTH=iam: the password is a signed IAM token */
    long iam_renew_s;                  /* LOGIN_ETL_IAM_RENEW_SECONDS: re-sign a token this
                                          old, default 600, within [1, 840] */
    const char *function_name;         /* AWS_LAMBDA_FUNCTION_NAME, for metrics; or "login-etl" */
    struct endpoint secrets_endpoint;  /* the Parameters and Secrets extension: localhost,
                                          port 2773 unless
                                          PARAMETERS_SECRETS_EXTENSION_HTTP_PORT says otherwise */
    long deadline_margin_ms;           /* answer this long before the deadline at the latest:
                                          LOGIN_ETL_DEADLINE_MARGIN_MS, default 10% of the
                                          time, within [200, 1000] ms */
    unsigned long max_invocations;     /* LOGIN_ETL_MAX_INVOCATIONS (tests): 0 = unlimited */
    enum rejected_mode rejected;       /* REJECTED_RECORDS: quarantine (default) or retry */
};

/* Reads and checks the settings.  Returns RC_OK, or RC_CONFIG with err saying
 * which setting is wrong and how (never quoting a secret), or RC_NOMEM.
 * On failure nothing is left to free. */
rc_t config_load(struct config *c, char err[ERR_LEN]);

/* Wipes and frees what config_load allocated; cannot fail. */
void config_free(struct config *c);

#endif
