/* secrets.h - secrets read through the AWS Parameters and Secrets Lambda
 * Extension (GET /secretsmanager/get?secretId=..., header
 * X-Aws-Parameters-Secrets-Token: $AWS_SESSION_TOKEN).  The extension caches
 * them for SECRETS_MANAGER_TTL; we read them on the first invocation (the
 * extension does not answer during init), and the database secret again when
 * the database refuses its credentials (a rotated password). */
#ifndef SECRETS_H
#define SECRETS_H

#include <stdint.h>

#include "buf.h"
#include "result.h"
#include "url.h"

/* Fetches the SecretString of `secret_id` from the extension at `endpoint`
 * into out (reset first; the caller wipes it with buf_wipe).
 * Every wait (connecting, retrying a refused connection, the answer) ends by
 * `until_ms` (Unix epoch ms), and by 5 s at most.  Returns RC_OK; RC_TIMEOUT
 * (until_ms came first), RC_IO (the extension cannot be reached),
 * RC_PROTOCOL (it answered with an error status or a malformed document),
 * RC_CONFIG (no AWS_SESSION_TOKEN, or a malformed endpoint),
 * RC_NOMEM; err says which, never quoting the secret or anything of an
 * error answer's body (its status code and a fixed reason only). */
rc_t secrets_get(const struct endpoint *endpoint, const char *secret_id, int64_t until_ms,
                 struct buf *out, char err[ERR_LEN]);

/* Reads an RDS-format database secret (JSON with username, password, host,
 * port, dbname) and turns it into a libpq key=value connection string in
 * `conninfo` (reset first; the caller wipes it).  sslmode, sslrootcert and
 * connect_timeout still come from PGSSLMODE, PGSSLROOTCERT and
 * PGCONNECT_TIMEOUT.  Returns as secrets_get, or RC_CONFIG when the secret
 * lacks username or host. */
rc_t secrets_db_conninfo(const struct endpoint *endpoint, const char *secret_id, int64_t until_ms,
                         struct buf *conninfo, char err[ERR_LEN]);

/* Builds the connection string from an RDS-format secret document (exposed
 * for the unit tests).  Returns RC_OK, RC_CONFIG or RC_NOMEM. */
rc_t secrets_conninfo_from_json(const char *json, size_t len, struct buf *conninfo,
                                char err[ERR_LEN]);

#endif
