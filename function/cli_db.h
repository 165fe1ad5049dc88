/* cli_db.h - the settings and the database connection of the commands an
 * operator runs beside the function (`bootstrap rekey`, `bootstrap
 * reprocess`), read exactly as the function reads its own (config.h): the
 * same variables and the same start-up checks, so that a command connects
 * wherever the function does, DB_AUTH=iam included (rds_iam.h).
 *
 * What only runs in Lambda is refused with the way around it: DB_SECRET_ID
 * and MASKING_KEY_SECRET_ID are read through the Parameters and Secrets
 * extension, so a command takes DATABASE_URL or the PG* variables, and
 * MASKING_KEY. */
#ifndef CLI_DB_H
#define CLI_DB_H

#include <libpq-fe.h>

#include "keyset.h"
#include "rds_iam.h"
#include "result.h"

struct cli_db {
    const char *command;          /* "rekey", "reprocess": names the messages; borrowed */
    const char *application_name; /* the sessions' name in pg_stat_activity; borrowed */
    const char *conninfo;         /* DATABASE_URL, or NULL: libpq reads PG*; borrowed (the
                                     environment's) */
    struct keyset *keys;          /* owned: MASKING_KEY, MASKING_KEY_ID, MASKING_KEYS_RETIRED */
    struct rds_iam *iam;          /* owned: DB_AUTH=iam signs each connection's password;
                                     else NULL */
};

/* Reads and checks the settings into d for `bootstrap <command>`.  Returns
 * RC_OK, or RC_CONFIG / RC_NOMEM after printing why on stderr (never a key
 * or a password), with nothing left to free.  The settings' copies of the
 * keys are wiped before return. */
rc_t cli_db_load(struct cli_db *d, const char *command, const char *application_name);

/* Opens a connection with d's settings: TCP keepalives (DATABASE_URL may
 * change them), d's application_name, client_encoding UTF8, the signed token
 * as the password with DB_AUTH=iam; errors reduced to SQLSTATEs and notices
 * dropped, as their text may quote values.  A database whose encoding is not
 * UTF8 is refused, as the function refuses it.  Returns the connection, or
 * NULL with why filled ("connect: " and libpq's first line, which carries
 * the SQLSTATE and never the server's text). */
PGconn *cli_db_connect(const struct cli_db *d, char why[ERR_LEN]);

/* Frees what cli_db_load made (the keys are wiped); cannot fail. */
void cli_db_free(struct cli_db *d);

#endif
