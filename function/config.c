/* config.c - settings from the environment, checked at start. */
#define _DEFAULT_SOURCE
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libpq-fe.h>

#include "mask.h"
#include "num.h"

/* Returns the variable's value, or NULL when unset or empty. */
static const char *env(const char *name)
{
    const char *v = getenv(name);
    return v && *v ? v : NULL;
}

/* The Lambda sandbox has no passwd entry, so libpq cannot default the user
 * name: it must come from DATABASE_URL, PGUSER or the secret.  Returns 1 when
 * the user is named.  A URL that libpq cannot parse is reported as such. */
static int database_user_named(const char *url, char err[ERR_LEN])
{
    if (!url)
        return env("PGUSER") != NULL;
    char *msg = NULL;
    PQconninfoOption *opts = PQconninfoParse(url, &msg);
    int named = 0;
    if (!opts) {
        /* libpq's message may quote the string, which may hold a password. */
        snprintf(err, ERR_LEN, "DATABASE_URL is not a valid connection string or URL");
        PQfreemem(msg);
        return -1;
    }
    for (PQconninfoOption *o = opts; o->keyword; o++)
        if (strcmp(o->keyword, "user") == 0 && o->val && *o->val)
            named = 1;
    PQconninfoFree(opts);
    return named || env("PGUSER") != NULL;
}

rc_t config_load(struct config *c, char err[ERR_LEN])
{
    const char *key = env("MASKING_KEY");
    const char *retired = env("MASKING_KEYS_RETIRED");
    const char *v;
    int64_t n;

    memset(c, 0, sizeof *c);
    err[0] = '\0';
    c->masking_key_id_env = getenv("MASKING_KEY_ID");
    c->masking_key_id = mask_key_id_setting(c->masking_key_id_env);
    c->masking_key_secret_id = env("MASKING_KEY_SECRET_ID");
    c->db_secret_id = env("DB_SECRET_ID");
    c->database_url = env("DATABASE_URL");
    c->function_name =
        env("AWS_LAMBDA_FUNCTION_NAME") ? env("AWS_LAMBDA_FUNCTION_NAME") : "login-etl";
    endpoint_set(&c->secrets_endpoint, "localhost", 2773);
    c->deadline_margin_ms = -1;

    if (!key && !c->masking_key_secret_id) {
        snprintf(err, ERR_LEN,
                 "no masking key: set MASKING_KEY (128 hex characters) or "
                 "MASKING_KEY_SECRET_ID");
        goto bad;
    }
    if (key && c->masking_key_secret_id) {
        snprintf(err, ERR_LEN, "MASKING_KEY and MASKING_KEY_SECRET_ID are both set: choose one");
        goto bad;
    }
    if ((v = env("DB_AUTH")) && strcmp(v, "iam") != 0 && strcmp(v, "password") != 0) {
        snprintf(err, ERR_LEN, "DB_AUTH is neither \"password\" nor \"iam\"");
        goto bad;
    }
    c->db_auth_iam = v && strcmp(v, "iam") == 0;
    if (c->db_auth_iam && c->db_secret_id) {
        snprintf(err, ERR_LEN, "DB_AUTH=iam and DB_SECRET_ID are both set: choose one");
        goto bad;
    }
    c->iam_renew_s = 600;
    if ((v = env("LOGIN_ETL_IAM_RENEW_SECONDS"))) {
        if (num_parse_i64(v, strlen(v), 1, 840, &n) != RC_OK) {
            snprintf(err, ERR_LEN, "LOGIN_ETL_IAM_RENEW_SECONDS is not 1 to 840");
            goto bad;
        }
        c->iam_renew_s = (long)n;
    }
    if ((key && !(c->masking_key = strdup(key))) ||
        (retired && !(c->masking_keys_retired = strdup(retired)))) {
        snprintf(err, ERR_LEN, "out of memory reading the masking keys");
        config_free(c);
        return RC_NOMEM;
    }
    if (!c->db_secret_id) {
        int named = database_user_named(c->database_url, err);
        if (named < 0)
            goto bad;
        if (!named) {
            snprintf(err, ERR_LEN,
                     "the database user is not named: set it in DATABASE_URL, "
                     "PGUSER or the DB_SECRET_ID secret");
            goto bad;
        }
    }
    if ((v = env("PARAMETERS_SECRETS_EXTENSION_HTTP_PORT"))) {
        if (num_parse_i64(v, strlen(v), 1, 65535, &n) != RC_OK) {
            snprintf(err, ERR_LEN, "PARAMETERS_SECRETS_EXTENSION_HTTP_PORT is not a port number");
            goto bad;
        }
        endpoint_set(&c->secrets_endpoint, "localhost", (long)n);
    }
    if ((v = env("LOGIN_ETL_DEADLINE_MARGIN_MS"))) {
        if (num_parse_i64(v, strlen(v), 0, 600000, &n) != RC_OK) {
            snprintf(err, ERR_LEN, "LOGIN_ETL_DEADLINE_MARGIN_MS is not 0 to 600000");
            goto bad;
        }
        c->deadline_margin_ms = (long)n;
    }
    if ((v = env("REJECTED_RECORDS")) && strcmp(v, "quarantine") != 0 && strcmp(v, "retry") != 0) {
        snprintf(err, ERR_LEN, "REJECTED_RECORDS is neither \"quarantine\" nor \"retry\"");
        goto bad;
    }
    c->rejected = v && strcmp(v, "retry") == 0 ? REJECTED_RETRY : REJECTED_QUARANTINE;
    if ((v = env("LOGIN_ETL_MAX_INVOCATIONS"))) {
        if (num_parse_i64(v, strlen(v), 0, INT64_MAX, &n) != RC_OK) {
            snprintf(err, ERR_LEN, "LOGIN_ETL_MAX_INVOCATIONS is not a number");
            goto bad;
        }
        c->max_invocations = (unsigned long)n;
    }
    if (!mask_key_id_valid(c->masking_key_id)) {
        /* The value is not quoted: a key pasted into the wrong variable would
         * otherwise end up in the logs. */
        snprintf(err, ERR_LEN, "MASKING_KEY_ID must be 1 to %d characters of [A-Za-z0-9]",
                 MASK_KEY_ID_MAX);
        goto bad;
    }
    return RC_OK;
bad:
    config_free(c);
    return RC_CONFIG;
}

/* Wipes and frees one owned copy of a setting that holds key material, and
 * forgets it; cannot fail. */
static void config_wipe(char **s)
{
    if (*s) {
        explicit_bzero(*s, strlen(*s));
        free(*s);
        *s = NULL;
    }
}

void config_free(struct config *c)
{
    config_wipe(&c->masking_key);
    config_wipe(&c->masking_keys_retired);
}
