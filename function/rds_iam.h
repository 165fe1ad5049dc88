/* rds_iam.h - RDS IAM database authentication: the function signs its own
 * database password instead of reading one from a secret.
 *
 * An RDS auth token is a SigV4 presigned URL without its scheme, for the
 * action "connect" of service "rds-db", valid 15 minutes after signing:
 *
 *   host:port/?Action=connect&DBUser=u&X-Amz-Algorithm=AWS4-HMAC-SHA256
 *   &X-Amz-Credential=AKID%2F20260101%2Feu-west-1%2Frds-db%2Faws4_request
 *   &X-Amz-Date=20260101T000000Z&X-Amz-Expires=900&X-Amz-SignedHeaders=host
 *   [&X-Amz-Security-Token=...]&X-Amz-Signature=<64 hex>
 *
 * byte for byte what botocore's generate_db_auth_token makes for the same
 * instant (tests/integration/test_rds_iam.py compares the two).  The server
 * (RDS or RDS Proxy) checks the token when a connection is opened only: a
 * connection stays open past the token's expiry, so a token is needed for
 * each new connection, and is re-signed once it is older than a renewal age
 * (10 minutes by default) to leave margin for clock skew and slow connects.
 *
 * The pure pieces take the time as a parameter, so the tests can fix the
 * clock; rds_iam_token reads the credentials from the environment each time
 * it signs (Lambda puts the execution role's there). */
#ifndef RDS_IAM_H
#define RDS_IAM_H

#include <stddef.h>
#include <time.h>

#include "buf.h"
#include "result.h"

#define RDS_IAM_EXPIRES_S 900     /* X-Amz-Expires: RDS accepts at most 15 minutes */
#define RDS_IAM_RENEW_DEFAULT 600 /* re-sign a token older than this (seconds) */
#define RDS_IAM_RENEW_MAX 840     /* renewal ages up to 14 minutes are accepted */

/* The signing credentials; borrowed strings. */
struct rds_iam_creds {
    const char *access_key_id;
    const char *secret_access_key;
    const char *session_token; /* NULL without one (long-term keys) */
};

/* Writes the SigV4 timestamp of `now` (UTC, "YYYYMMDDTHHMMSSZ") into out;
 * cannot fail for a time between years 1000 and 9999 (others give "").  */
void rds_iam_amz_date(time_t now, char out[17]);

/* Appends the percent-encoding of n bytes to b: every byte but A-Z a-z 0-9
 * - _ . ~ becomes %XX (upper-case hex), as SigV4 wants.  Returns the buffer's
 * sticky error (RC_NOMEM, RC_TOOBIG) or RC_OK. */
rc_t rds_iam_uri_encode(struct buf *b, const char *s, size_t n);

/* Derives the SigV4 signing key HMAC(HMAC(HMAC(HMAC("AWS4"+secret, date8),
 * region), service), "aws4_request") into key.  Every intermediate is wiped.
 * Returns RC_OK, RC_NOMEM or RC_CRYPTO (key is then zero). */
rc_t rds_iam_signing_key(const char *secret, const char *date8, const char *region,
                         const char *service, unsigned char key[32]);

/* Signs the token for user@host:port in region at time `now` into token
 * (reset first; it is a credential: the caller wipes it with buf_wipe).
 * The key material is wiped before return.  Returns RC_OK; RC_CONFIG (an
 * empty argument or credential), RC_NOMEM or RC_CRYPTO, with err saying which
 * (never quoting a key). */
rc_t rds_iam_sign(const char *host, unsigned port, const char *user, const char *region,
                  const struct rds_iam_creds *creds, time_t now, struct buf *token,
                  char err[ERR_LEN]);

struct rds_iam; /* opaque: the endpoint, the user, the region and the current token */

/* Reads the IAM settings at start: the endpoint and user from DATABASE_URL
 * (`database_url`, may be NULL) or PGHOST / PGPORT (default 5432) / PGUSER,
 * the region from AWS_REGION, and checks that the connection will be
 * verify-full TLS (sslmode=verify-full and sslrootcert in the URL, or
 * PGSSLMODE and PGSSLROOTCERT), that no password is configured, and that
 * AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY are set.  `renew_s` is the age
 * after which a token is re-signed (1 to RDS_IAM_RENEW_MAX).  Returns the
 * signer (owned by the caller: rds_iam_free), or NULL with *rc RC_CONFIG (err
 * says which setting is wrong) or RC_NOMEM. */
struct rds_iam *rds_iam_new(const char *database_url, long renew_s, rc_t *rc, char err[ERR_LEN]);

/* Returns in *token the current token, re-signed first when there is none,
 * it is `renew_s` old or older at `now`, or the clock went back.  *token is
 * owned by t, valid until the next call.  Returns RC_OK, or as rds_iam_sign
 * (RC_CONFIG also when the credentials left the environment). */
rc_t rds_iam_token(struct rds_iam *t, time_t now, const char **token, char err[ERR_LEN]);

/* rds_iam_token at the current time, in the shape of pg.h's password
 * callback (ctx is the struct rds_iam). */
rc_t rds_iam_password(void *ctx, const char **password, char err[ERR_LEN]);

/* Tokens signed so far by t (for the log and the tests). */
unsigned long rds_iam_signed_count(const struct rds_iam *t);

/* Wipes the token and frees t; NULL allowed. */
void rds_iam_free(struct rds_iam *t);

#endif
