/* config.h - the function's settings, read from the environment once at
 * start (docs/behaviour.md, "Configuration") and checked there, so that a bad setting is an
 * init error rather than a failure on every invocation. */
#ifndef CONFIG_H
#define CONFIG_H

#include "result.h"

struct config {
    char *masking_key;                 /* owned, wiped when freed: 128 hex characters, or
                                          NULL when the key comes from a secret */
    const char *masking_key_id;        /* MASKING_KEY_ID, default "k1"; borrowed from environ */
    const char *masking_key_secret_id; /* MASKING_KEY_SECRET_ID or NULL */
    const char *db_secret_id;          /* DB_SECRET_ID or NULL */
    const char *database_url;          /* DATABASE_URL or NULL (libpq reads PG* itself) */
    const char *function_name;         /* AWS_LAMBDA_FUNCTION_NAME, for metrics; or "login-etl" */
    char secrets_endpoint[32];         /* host:port of the Parameters and Secrets extension,
                                          "localhost:2773" unless
                                          PARAMETERS_SECRETS_EXTENSION_HTTP_PORT says otherwise */
    long deadline_margin_ms;           /* answer this long before the deadline at the latest:
                                          LOGIN_ETL_DEADLINE_MARGIN_MS, default 10% of the
                                          time, within [200, 1000] ms */
    unsigned long max_invocations;     /* LOGIN_ETL_MAX_INVOCATIONS (tests): 0 = unlimited */
};

/* Reads and checks the settings.  Returns RC_OK, or RC_CONFIG with err saying
 * which setting is wrong and how (never quoting a secret), or RC_NOMEM.
 * On failure nothing is left to free. */
rc_t config_load(struct config *c, char err[ERR_LEN]);

/* Wipes and frees what config_load allocated; cannot fail. */
void config_free(struct config *c);

#endif
