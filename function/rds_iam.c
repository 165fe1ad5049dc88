/* rds_iam.c - RDS IAM auth tokens: SigV4 query signing with OpenSSL's
 * HMAC-SHA256 and SHA-256, a token cache that renews before expiry, and the
 * settings it needs, checked at start. */
#define _DEFAULT_SOURCE
#include "rds_iam.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libpq-fe.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#define SERVICE "rds-db"
#define HOST_MAX 253
/* SHA-256 of the empty string: the payload hash of a GET without a body. */
#define EMPTY_SHA256 "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

struct rds_iam {
    char *host; /* owned */
    char *user; /* owned */
    char *region;
    unsigned port;
    long renew_s;
    struct buf token; /* the current token; wiped when replaced or freed */
    time_t signed_at;
    int have; /* token holds a token */
    unsigned long signed_count;
};

void rds_iam_amz_date(time_t now, char out[17])
{
    struct tm tm;
    out[0] = '\0';
    if (!gmtime_r(&now, &tm) || tm.tm_year < 1000 - 1900 || tm.tm_year > 9999 - 1900)
        return;
    if (strftime(out, 17, "%Y%m%dT%H%M%SZ", &tm) != 16)
        out[0] = '\0';
}

rc_t rds_iam_uri_encode(struct buf *b, const char *s, size_t n)
{
    static const char hex[] = "0123456789ABCDEF";
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
            c == '-' || c == '_' || c == '.' || c == '~') {
            buf_appendc(b, (char)c);
        } else {
            char esc[3] = {'%', hex[c >> 4], hex[c & 15]};
            buf_append(b, esc, sizeof esc);
        }
    }
    return b->err;
}

/* out = HMAC-SHA256(key, msg).  Returns RC_OK or RC_CRYPTO. */
static rc_t hmac(const unsigned char *key, size_t key_len, const char *msg, size_t msg_len,
                 unsigned char out[32])
{
    unsigned int len = 0;
    if (!HMAC(EVP_sha256(), key, (int)key_len, (const unsigned char *)msg, msg_len, out, &len) ||
        len != 32)
        return RC_CRYPTO;
    return RC_OK;
}

/* Writes n bytes as 2n lower-case hex digits and a NUL into out (2n + 1
 * bytes); cannot fail. */
static void to_hex(const unsigned char *p, size_t n, char *out)
{
    static const char hex[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = hex[p[i] >> 4];
        out[2 * i + 1] = hex[p[i] & 15];
    }
    out[2 * n] = '\0';
}

rc_t rds_iam_signing_key(const char *secret, const char *date8, const char *region,
                         const char *service, unsigned char key[32])
{
    size_t secret_len = strlen(secret);
    unsigned char k[32];
    rc_t rc = RC_NOMEM;
    /* "AWS4" + the secret: a copy of the secret, wiped below like the keys. */
    unsigned char *seed = malloc(secret_len + 4);

    if (!seed)
        goto out;
    memcpy(seed, "AWS4", 4);
    memcpy(seed + 4, secret, secret_len);
    if ((rc = hmac(seed, secret_len + 4, date8, strlen(date8), k)) ||
        (rc = hmac(k, 32, region, strlen(region), k)) ||
        (rc = hmac(k, 32, service, strlen(service), k)) ||
        (rc = hmac(k, 32, "aws4_request", 12, key)))
        goto out;
out:
    if (seed) {
        OPENSSL_cleanse(seed, secret_len + 4);
        free(seed);
    }
    OPENSSL_cleanse(k, sizeof k);
    if (rc)
        OPENSSL_cleanse(key, 32);
    return rc;
}

/* Appends the query parameters shared by the canonical request and the
 * token, from X-Amz-Algorithm on, in the canonical (sorted) order when
 * `sorted`, else in botocore's order (X-Amz-Security-Token last).  Returns
 * the buffer's sticky error. */
static rc_t append_auth_params(struct buf *b, const struct rds_iam_creds *c, const char *date,
                               const char *region, int sorted)
{
    const char *tok = c->session_token;

    buf_appends(b, "&X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=");
    rds_iam_uri_encode(b, c->access_key_id, strlen(c->access_key_id));
    buf_printf(b, "%%2F%.8s%%2F", date);
    rds_iam_uri_encode(b, region, strlen(region));
    buf_printf(b, "%%2F" SERVICE "%%2Faws4_request&X-Amz-Date=%s&X-Amz-Expires=%d", date,
               RDS_IAM_EXPIRES_S);
    /* "X-Amz-Security-Token" sorts before "X-Amz-SignedHeaders". */
    if (tok && sorted) {
        buf_appends(b, "&X-Amz-Security-Token=");
        rds_iam_uri_encode(b, tok, strlen(tok));
    }
    buf_appends(b, "&X-Amz-SignedHeaders=host");
    if (tok && !sorted) {
        buf_appends(b, "&X-Amz-Security-Token=");
        rds_iam_uri_encode(b, tok, strlen(tok));
    }
    return b->err;
}

rc_t rds_iam_sign(const char *host, unsigned port, const char *user, const char *region,
                  const struct rds_iam_creds *creds, time_t now, struct buf *token,
                  char err[ERR_LEN])
{
    char date[17], hash_hex[65], sig_hex[65];
    unsigned char key[32], digest[32];
    struct buf cr, sts; /* canonical request, string to sign */
    size_t tok_len = creds->session_token ? strlen(creds->session_token) : 0;
    rc_t rc = RC_CONFIG;

    /* Both hold the session token: sized once so that no realloc leaves a
     * copy behind in freed memory. */
    size_t room = 3 * (strlen(user) + tok_len + strlen(creds->access_key_id) + strlen(region)) +
                  strlen(host) + 512;
    buf_init(&cr, room + 128);
    buf_init(&sts, 512);
    /* An earlier token in the buffer is wiped, so a realloc cannot copy it. */
    if (token->data)
        OPENSSL_cleanse(token->data, token->cap);
    buf_reset(token);
    err[0] = '\0';
    rds_iam_amz_date(now, date);
    if (!*host || !*user || !*region || !*creds->access_key_id || !*creds->secret_access_key ||
        (creds->session_token && !*creds->session_token) || !date[0] || port == 0 || port > 65535) {
        snprintf(err, ERR_LEN, "IAM token: an empty host, user, region or credential");
        goto out;
    }
    if ((rc = buf_reserve(&cr, room)) || (rc = buf_reserve(token, room)))
        goto out;

    /* The canonical request.  The host header is lower case and leaves the
     * port out when it is 443 (https's default), as botocore signs it. */
    buf_appends(&cr, "GET\n/\nAction=connect&DBUser=");
    rds_iam_uri_encode(&cr, user, strlen(user));
    append_auth_params(&cr, creds, date, region, 1);
    buf_appends(&cr, "\nhost:");
    for (const char *p = host; *p; p++)
        buf_appendc(&cr, (char)(*p >= 'A' && *p <= 'Z' ? *p - 'A' + 'a' : *p));
    if (port != 443)
        buf_printf(&cr, ":%u", port);
    buf_appends(&cr, "\n\nhost\n" EMPTY_SHA256);
    if ((rc = cr.err) != RC_OK)
        goto out;

    rc = RC_CRYPTO;
    if (EVP_Digest(cr.data, cr.len, digest, NULL, EVP_sha256(), NULL) != 1)
        goto out;
    to_hex(digest, 32, hash_hex);
    buf_printf(&sts, "AWS4-HMAC-SHA256\n%s\n%.8s/%s/" SERVICE "/aws4_request\n%s", date, date,
               region, hash_hex);
    if ((rc = sts.err) != RC_OK)
        goto out;
    char date8[9];
    memcpy(date8, date, 8);
    date8[8] = '\0';
    if ((rc = rds_iam_signing_key(creds->secret_access_key, date8, region, SERVICE, key)) ||
        (rc = hmac(key, sizeof key, sts.data, sts.len, digest)))
        goto out;
    to_hex(digest, 32, sig_hex);

    /* The token: the presigned URL without "https://". */
    buf_printf(token, "%s:%u/?Action=connect&DBUser=", host, port);
    rds_iam_uri_encode(token, user, strlen(user));
    append_auth_params(token, creds, date, region, 0);
    buf_printf(token, "&X-Amz-Signature=%s", sig_hex);
    rc = token->err;
out:
    OPENSSL_cleanse(key, sizeof key);
    OPENSSL_cleanse(digest, sizeof digest);
    buf_wipe(&cr);
    buf_wipe(&sts);
    if (rc) {
        if (!err[0])
            snprintf(err, ERR_LEN, "IAM token: %s", rc_strerror(rc));
        if (token->data)
            OPENSSL_cleanse(token->data, token->len);
        buf_reset(token);
    }
    return rc;
}

/* Returns the variable's value, or NULL when unset or empty. */
static const char *env(const char *name)
{
    const char *v = getenv(name);
    return v && *v ? v : NULL;
}

/* The libpq settings the IAM mode depends on, as libpq will resolve them:
 * the connection string first, then the PG* variable. */
struct pg_settings {
    const char *host, *port, *user, *password, *sslmode, *sslrootcert;
};

/* Fills s from opts (may be NULL) and the environment; the strings borrow
 * from opts and environ. */
static void resolve(PQconninfoOption *opts, struct pg_settings *s)
{
    static const struct {
        const char *key, *var;
        size_t at;
    } map[] = {
        {"host", "PGHOST", offsetof(struct pg_settings, host)},
        {"port", "PGPORT", offsetof(struct pg_settings, port)},
        {"user", "PGUSER", offsetof(struct pg_settings, user)},
        {"password", "PGPASSWORD", offsetof(struct pg_settings, password)},
        {"sslmode", "PGSSLMODE", offsetof(struct pg_settings, sslmode)},
        {"sslrootcert", "PGSSLROOTCERT", offsetof(struct pg_settings, sslrootcert)},
    };
    memset(s, 0, sizeof *s);
    for (size_t i = 0; i < sizeof map / sizeof map[0]; i++) {
        const char **slot = (const char **)((char *)s + map[i].at);
        for (PQconninfoOption *o = opts; o && o->keyword; o++)
            if (strcmp(o->keyword, map[i].key) == 0 && o->val && *o->val)
                *slot = o->val;
        if (!*slot)
            *slot = env(map[i].var);
    }
}

/* Is h a DNS name or an IPv4 address (letters, digits, dots, hyphens)? */
static int plain_host(const char *h)
{
    size_t n = strlen(h);
    int plain = n > 0 && n <= HOST_MAX;
    for (size_t i = 0; plain && i < n; i++) {
        char c = h[i];
        plain = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                c == '.' || c == '-';
    }
    return plain;
}

/* Checks the settings (see rds_iam_new) and copies them into t.  Returns
 * RC_OK, RC_CONFIG with err, or RC_NOMEM. */
static rc_t configure(struct rds_iam *t, const struct pg_settings *s, char err[ERR_LEN])
{
    unsigned long port = 5432;
    char *end = NULL;
    rc_t rc = RC_CONFIG;

    if (!s->host || !plain_host(s->host)) {
        snprintf(err, ERR_LEN,
                 "DB_AUTH=iam needs one database host name (in DATABASE_URL or PGHOST): %s",
                 s->host ? "not a DNS name or IPv4 address (one host, no socket path)" : "unset");
        goto out;
    }
    if (s->port && ((port = strtoul(s->port, &end, 10)) == 0 || *end || port > 65535 ||
                    s->port[0] < '0' || s->port[0] > '9')) {
        snprintf(err, ERR_LEN, "DB_AUTH=iam: the database port is not one port number");
        goto out;
    }
    if (!s->user) {
        snprintf(err, ERR_LEN,
                 "DB_AUTH=iam: the database user is not named (DATABASE_URL or PGUSER)");
        goto out;
    }
    if (s->password) {
        snprintf(err, ERR_LEN,
                 "DB_AUTH=iam signs the database password itself: remove the password from "
                 "DATABASE_URL and PGPASSWORD");
        goto out;
    }
    /* The token is a bearer credential for 15 minutes: it goes only to a
     * server whose certificate and name were checked. */
    if (!s->sslmode || strcmp(s->sslmode, "verify-full") != 0 || !s->sslrootcert) {
        snprintf(err, ERR_LEN,
                 "DB_AUTH=iam needs sslmode=verify-full and sslrootcert (the CA bundle), in "
                 "DATABASE_URL or PGSSLMODE and PGSSLROOTCERT");
        goto out;
    }
    if (!env("AWS_REGION")) {
        snprintf(err, ERR_LEN, "DB_AUTH=iam needs AWS_REGION");
        goto out;
    }
    if (!env("AWS_ACCESS_KEY_ID") || !env("AWS_SECRET_ACCESS_KEY")) {
        snprintf(err, ERR_LEN,
                 "DB_AUTH=iam needs the role's credentials: AWS_ACCESS_KEY_ID and "
                 "AWS_SECRET_ACCESS_KEY are not set");
        goto out;
    }
    t->port = (unsigned)port;
    t->host = strdup(s->host);
    t->user = strdup(s->user);
    t->region = strdup(env("AWS_REGION"));
    rc = t->host && t->user && t->region ? RC_OK : RC_NOMEM;
out:
    return rc;
}

struct rds_iam *rds_iam_new(const char *database_url, long renew_s, rc_t *rc, char err[ERR_LEN])
{
    PQconninfoOption *opts = NULL;
    struct pg_settings s;
    struct rds_iam *t = NULL;

    err[0] = '\0';
    *rc = RC_CONFIG;
    if (renew_s < 1 || renew_s > RDS_IAM_RENEW_MAX) {
        snprintf(err, ERR_LEN, "the IAM token renewal age is not 1 to %d seconds",
                 RDS_IAM_RENEW_MAX);
        goto out;
    }
    if (database_url) {
        char *msg = NULL;
        if (!(opts = PQconninfoParse(database_url, &msg))) {
            /* libpq's message may quote the string. */
            snprintf(err, ERR_LEN, "DATABASE_URL is not a valid connection string or URL");
            PQfreemem(msg);
            goto out;
        }
    }
    *rc = RC_NOMEM;
    if (!(t = calloc(1, sizeof *t)))
        goto out;
    t->renew_s = renew_s;
    buf_init(&t->token, 64 * 1024);
    resolve(opts, &s);
    if ((*rc = configure(t, &s, err)) != RC_OK) {
        rds_iam_free(t);
        t = NULL;
    }
out:
    PQconninfoFree(opts);
    if (*rc == RC_NOMEM && !err[0])
        snprintf(err, ERR_LEN, "out of memory");
    return t;
}

rc_t rds_iam_token(struct rds_iam *t, time_t now, const char **token, char err[ERR_LEN])
{
    rc_t rc = RC_OK;

    *token = NULL;
    err[0] = '\0';
    if (!t->have || now < t->signed_at || now - t->signed_at >= t->renew_s) {
        struct rds_iam_creds c = {env("AWS_ACCESS_KEY_ID"), env("AWS_SECRET_ACCESS_KEY"),
                                  env("AWS_SESSION_TOKEN")};
        /* rds_iam_sign wipes the old token before writing the new one. */
        t->have = 0;
        if (!c.access_key_id || !c.secret_access_key) {
            snprintf(err, ERR_LEN, "IAM token: AWS_ACCESS_KEY_ID or AWS_SECRET_ACCESS_KEY unset");
            rc = RC_CONFIG;
            goto out;
        }
        if ((rc = rds_iam_sign(t->host, t->port, t->user, t->region, &c, now, &t->token, err)))
            goto out;
        t->have = 1;
        t->signed_at = now;
        t->signed_count++;
    }
    *token = t->token.data;
out:
    return rc;
}

rc_t rds_iam_password(void *ctx, const char **password, char err[ERR_LEN])
{
    return rds_iam_token(ctx, time(NULL), password, err);
}

unsigned long rds_iam_signed_count(const struct rds_iam *t)
{
    return t->signed_count;
}

void rds_iam_free(struct rds_iam *t)
{
    if (!t)
        return;
    buf_wipe(&t->token);
    free(t->host);
    free(t->user);
    free(t->region);
    free(t);
}
