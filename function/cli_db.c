/* cli_db.c - the operator commands' settings and connection (cli_db.h). */
#include "cli_db.h"

#include <stdio.h>
#include <string.h>

#include "config.h"

/* See cli_db.h. */
rc_t cli_db_load(struct cli_db *d, const char *command, const char *application_name)
{
    struct config cfg;
    char err[ERR_LEN];
    rc_t rc;

    memset(d, 0, sizeof *d);
    d->command = command;
    d->application_name = application_name;
    if ((rc = config_load(&cfg, err)) != RC_OK) {
        fprintf(stderr, "bootstrap %s: %s\n", command, err);
        return rc;
    }
    rc = RC_CONFIG;
    if (cfg.db_secret_id) {
        fprintf(stderr,
                "bootstrap %s: DB_SECRET_ID is read through the Lambda extension, which runs "
                "only in Lambda: give DATABASE_URL or the PG* variables\n",
                command);
        goto out;
    }
    if (!cfg.masking_key) {
        fprintf(stderr,
                "bootstrap %s: MASKING_KEY_SECRET_ID is read through the Lambda extension, "
                "which runs only in Lambda: set MASKING_KEY to the secret's value "
                "(docs/operations.md)\n",
                command);
        goto out;
    }
    d->keys = keyset_load("MASKING_KEY", cfg.masking_key, strlen(cfg.masking_key),
                          cfg.masking_key_id_env, cfg.masking_keys_retired, err);
    if (!d->keys) {
        fprintf(stderr, "bootstrap %s: %s\n", command, err);
        goto out;
    }
    if (cfg.db_auth_iam && !(d->iam = rds_iam_new(cfg.database_url, cfg.iam_renew_s, &rc, err))) {
        fprintf(stderr, "bootstrap %s: %s\n", command, err);
        goto out;
    }
    d->conninfo = cfg.database_url;
    rc = RC_OK;
out:
    config_free(&cfg);
    if (rc != RC_OK)
        cli_db_free(d);
    return rc;
}

/* Replaces the connection's notices with nothing: a notice's text may quote
 * values (a trigger's RAISE NOTICE).  Cannot fail. */
static void cli_db_notice(void *arg, const PGresult *res)
{
    (void)arg;
    (void)res;
}

/* See cli_db.h.  Keepalives come before dbname so that DATABASE_URL may
 * change them, application_name after it so that the command's sessions are
 * told apart from the function's in pg_stat_activity; the password, which
 * may be absent (a NULL value ends the list), comes last. */
PGconn *cli_db_connect(const struct cli_db *d, char why[ERR_LEN])
{
    static const char *const keys[] = {"keepalives",       "keepalives_idle", "keepalives_interval",
                                       "keepalives_count", "dbname",          "application_name",
                                       "client_encoding",  "password",        NULL};
    const char *password = NULL;

    if (d->iam && rds_iam_password(d->iam, &password, why) != RC_OK)
        return NULL;
    const char *values[] = {
        "1",    "15",     "5", "3", d->conninfo ? d->conninfo : "", d->application_name,
        "UTF8", password, NULL};
    PGconn *conn = PQconnectdbParams(keys, values, 1);
    if (!conn) {
        snprintf(why, ERR_LEN, "connect: out of memory");
        return NULL;
    }
    /* From the first message on: libpq's messages then carry the SQLSTATE
     * ("FATAL:  28P01") instead of the server's text.  A failed connection
     * has already spoken, so its message is cut at the first line. */
    PQsetErrorVerbosity(conn, PQERRORS_SQLSTATE);
    PQsetNoticeReceiver(conn, cli_db_notice, NULL);
    if (PQstatus(conn) != CONNECTION_OK) {
        const char *msg = PQerrorMessage(conn);
        const char *nl = strchr(msg, '\n');
        snprintf(why, ERR_LEN, "connect: %.*s", (int)(nl ? nl - msg : (long)strlen(msg)), msg);
        PQfinish(conn);
        return NULL;
    }
    const char *enc = PQparameterStatus(conn, "server_encoding");
    if (!enc || strcmp(enc, "UTF8") != 0) {
        /* varchar(n) counts characters in the database encoding; the rules
         * count UTF-8 characters, and must agree with it (pg_connect). */
        snprintf(why, ERR_LEN, "connect: database encoding is %s, not UTF8", enc ? enc : "unknown");
        PQfinish(conn);
        return NULL;
    }
    return conn;
}

/* See cli_db.h. */
void cli_db_free(struct cli_db *d)
{
    keyset_free(d->keys);
    rds_iam_free(d->iam);
    d->keys = NULL;
    d->iam = NULL;
}
