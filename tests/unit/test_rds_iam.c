/* test_rds_iam.c - the SigV4 pieces of rds_iam.c against published values,
 * token renewal under a fixed clock, and the IAM settings checked at start.
 * (The whole token is compared with botocore's by
 * tests/integration/test_rds_iam.py.) */
#include "check.h"

#include "buf.h"
#include "rds_iam.h"

/* Clears the variables rds_iam_new reads, then sets a valid IAM setup. */
static void good_env(void)
{
    static const char *const unset[] = {"PGHOST",     "PGPORT",           "PGUSER",
                                        "PGPASSWORD", "PGSSLMODE",        "PGSSLROOTCERT",
                                        "AWS_REGION", "AWS_SESSION_TOKEN"};
    for (size_t i = 0; i < sizeof unset / sizeof unset[0]; i++)
        unsetenv(unset[i]);
    setenv("AWS_REGION", "eu-west-1", 1);
    setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE", 1);
    setenv("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", 1);
}

#define GOOD_URL                                                                                   \
    "postgresql://iam_user@db.example.com:5432/logins?sslmode=verify-full&sslrootcert=/ca.pem"

/* The X-Amz-Date of a token, or "" (out holds 17 bytes). */
static void token_date(const char *token, char out[17])
{
    const char *p = strstr(token, "X-Amz-Date=");
    out[0] = '\0';
    if (p)
        snprintf(out, 17, "%.16s", p + 11);
}

static void test_pieces(void)
{
    char date[17], hex[65];
    unsigned char key[32];
    struct buf b;

    check_case("amz date: the epoch, a leap day, 2026");
    rds_iam_amz_date(0, date);
    CHECK_EQ_STR(date, "19700101T000000Z");
    rds_iam_amz_date(951782399, date);
    CHECK_EQ_STR(date, "20000228T235959Z");
    rds_iam_amz_date(951782400 + 86399, date);
    CHECK_EQ_STR(date, "20000229T235959Z");
    rds_iam_amz_date(1767225600, date);
    CHECK_EQ_STR(date, "20260101T000000Z");

    check_case("uri encode: unreserved bytes stay, the rest is %%XX upper case");
    buf_init(&b, 1024);
    /* Guarded: a read past the 16 bytes crashes. */
    CHECK_EQ_INT(rds_iam_uri_encode(&b, check_guard("aZ09-_.~ /+=&%\xc3\xa9", 16), 16), RC_OK);
    CHECK_EQ_STR(b.data, "aZ09-_.~%20%2F%2B%3D%26%25%C3%A9");
    buf_free(&b);

    /* AWS's published example of deriving a SigV4 signing key. */
    check_case("signing key: AWS's documented example (20120215, us-east-1, iam)");
    CHECK_EQ_INT(rds_iam_signing_key("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", "20120215",
                                     "us-east-1", "iam", key),
                 RC_OK);
    for (int i = 0; i < 32; i++)
        snprintf(hex + 2 * i, 3, "%02x", key[i]);
    CHECK_EQ_STR(hex, "f4780e2d9f65fa895f9c67b32ce1baf0b0d8a43505a000a1a9e090d414db404d");
}

static void test_sign_shape(void)
{
    struct buf t;
    char err[ERR_LEN];
    struct rds_iam_creds plain = {"AKIDEXAMPLE", "secret", NULL};
    struct rds_iam_creds temp = {"ASIAEXAMPLE", "secret", "tok/en+=="};

    buf_init(&t, 64 * 1024);
    check_case("sign: the token's parts in botocore's order, no scheme");
    CHECK_EQ_INT(
        rds_iam_sign("Db.Example.com", 5432, "iam user", "eu-west-1", &temp, 1767225600, &t, err),
        RC_OK);
    CHECK(strncmp(t.data, "Db.Example.com:5432/?Action=connect&DBUser=iam%20user&", 54) == 0);
    const char *cred = strstr(t.data, "&X-Amz-Credential=ASIAEXAMPLE%2F20260101%2Feu-west-1%2F"
                                      "rds-db%2Faws4_request&X-Amz-Date=20260101T000000Z&X-Amz-"
                                      "Expires=900&X-Amz-SignedHeaders=host&X-Amz-Security-"
                                      "Token=tok%2Fen%2B%3D%3D&X-Amz-Signature=");
    CHECK(cred != NULL);
    const char *sig = strstr(t.data, "&X-Amz-Signature=");
    CHECK(sig && strlen(sig + 17) == 64 && strspn(sig + 17, "0123456789abcdef") == 64);

    check_case("sign: another second, key, token or user gives another signature");
    char first[65];
    snprintf(first, sizeof first, "%s", sig ? sig + 17 : "");
    static const struct {
        const char *user;
        struct rds_iam_creds c;
        time_t at;
    } variants[] = {
        {"iam user", {"ASIAEXAMPLE", "secret", "tok/en+=="}, 1767225601},
        {"iam user", {"ASIAEXAMPLE", "secreT", "tok/en+=="}, 1767225600},
        {"iam user", {"ASIAEXAMPLE", "secret", "tok/en+=-"}, 1767225600},
        {"iam_user", {"ASIAEXAMPLE", "secret", "tok/en+=="}, 1767225600},
    };
    for (size_t i = 0; i < sizeof variants / sizeof variants[0]; i++) {
        CHECK_EQ_INT(rds_iam_sign("Db.Example.com", 5432, variants[i].user, "eu-west-1",
                                  &variants[i].c, variants[i].at, &t, err),
                     RC_OK);
        sig = strstr(t.data, "&X-Amz-Signature=");
        CHECK(sig && strcmp(sig + 17, first) != 0);
    }

    check_case("sign: long-term keys leave the security token out");
    CHECK_EQ_INT(rds_iam_sign("h", 443, "u", "r", &plain, 0, &t, err), RC_OK);
    CHECK(strstr(t.data, "Security-Token") == NULL);
    CHECK(strncmp(t.data, "h:443/?", 7) == 0);

    check_case("sign: empty parts are refused, the token left empty");
    struct rds_iam_creds no_secret = {"AKID", "", NULL};
    CHECK_EQ_INT(rds_iam_sign("h", 5432, "u", "r", &no_secret, 0, &t, err), RC_CONFIG);
    CHECK_EQ_INT((int)t.len, 0);
    CHECK_EQ_INT(rds_iam_sign("", 5432, "u", "r", &plain, 0, &t, err), RC_CONFIG);
    CHECK_EQ_INT(rds_iam_sign("h", 0, "u", "r", &plain, 0, &t, err), RC_CONFIG);
    CHECK_EQ_INT(rds_iam_sign("h", 5432, "", "r", &plain, 0, &t, err), RC_CONFIG);
    CHECK(strstr(err, "secret") == NULL);

    check_case("sign: a token over the buffer's limit is refused, not cut");
    static char huge[30000];
    memset(huge, '/', sizeof huge - 1);
    struct rds_iam_creds big = {"AKID", "secret", huge};
    CHECK_EQ_INT(rds_iam_sign("h", 5432, "u", "r", &big, 0, &t, err), RC_TOOBIG);
    CHECK_EQ_INT((int)t.len, 0);
    CHECK(strstr(err, "IAM token") != NULL);
    buf_wipe(&t);
}

static void test_renewal(void)
{
    char err[ERR_LEN], d1[17], d2[17], copy[4096];
    const char *tok = NULL;
    rc_t rc;
    time_t t0 = 1767225600;

    good_env();
    struct rds_iam *t = rds_iam_new(GOOD_URL, 600, &rc, err);
    check_case("renewal: a token is reused until it is 600 s old");
    CHECK(t != NULL);
    if (!t)
        return;
    CHECK_EQ_INT(rds_iam_token(t, t0, &tok, err), RC_OK);
    CHECK(tok && strncmp(tok, "db.example.com:5432/?Action=connect&DBUser=iam_user&", 52) == 0);
    snprintf(copy, sizeof copy, "%s", tok ? tok : "");
    token_date(copy, d1);
    CHECK_EQ_STR(d1, "20260101T000000Z");
    CHECK_EQ_INT(rds_iam_token(t, t0 + 599, &tok, err), RC_OK);
    CHECK_EQ_STR(tok, copy);
    CHECK_EQ_INT((int)rds_iam_signed_count(t), 1);

    check_case("renewal: at 600 s the token is signed again, for the new instant");
    CHECK_EQ_INT(rds_iam_token(t, t0 + 600, &tok, err), RC_OK);
    token_date(tok, d2);
    CHECK_EQ_STR(d2, "20260101T001000Z");
    CHECK_EQ_INT((int)rds_iam_signed_count(t), 2);

    check_case("renewal: a clock that went back signs again");
    CHECK_EQ_INT(rds_iam_token(t, t0 + 10, &tok, err), RC_OK);
    token_date(tok, d2);
    CHECK_EQ_STR(d2, "20260101T000010Z");
    CHECK_EQ_INT((int)rds_iam_signed_count(t), 3);

    check_case("renewal: credentials that left the environment are an error, not a stale token");
    unsetenv("AWS_SECRET_ACCESS_KEY");
    CHECK_EQ_INT(rds_iam_token(t, t0 + 1000, &tok, err), RC_CONFIG);
    CHECK(tok == NULL);
    CHECK(strstr(err, "AWS_SECRET_ACCESS_KEY") != NULL);
    rds_iam_free(t);
}

static void test_settings(void)
{
    static const struct {
        const char *name, *url, *var, *value, *want;
        long renew;
    } rows[] = {
        {"a URL with everything", GOOD_URL, NULL, NULL, NULL, 600},
        {"renewal age 0", GOOD_URL, NULL, NULL, "renewal age", 0},
        {"renewal age over 14 minutes", GOOD_URL, NULL, NULL, "renewal age", 841},
        {"no sslmode", "postgresql://iam_user@db.example.com/logins?sslrootcert=/ca.pem", NULL,
         NULL, "verify-full", 600},
        {"sslmode require",
         "postgresql://iam_user@db.example.com/logins?sslmode=require&sslrootcert=/ca.pem", NULL,
         NULL, "verify-full", 600},
        {"no root certificate", "postgresql://iam_user@db.example.com/logins?sslmode=verify-full",
         NULL, NULL, "sslrootcert", 600},
        {"a password in the URL",
         "postgresql://iam_user:pw@db.example.com/logins?sslmode=verify-full&sslrootcert=/c", NULL,
         NULL, "password", 600},
        {"PGPASSWORD set", GOOD_URL, "PGPASSWORD", "pw", "PGPASSWORD", 600},
        {"two hosts",
         "postgresql://iam_user@a.example.com,b.example.com/logins?sslmode=verify-full&"
         "sslrootcert=/c",
         NULL, NULL, "one host", 600},
        {"a socket directory", "host=/tmp user=iam_user sslmode=verify-full sslrootcert=/c", NULL,
         NULL, "socket", 600},
        {"no host at all", "user=iam_user sslmode=verify-full sslrootcert=/c", NULL, NULL, "unset",
         600},
        {"no user", "host=db.example.com sslmode=verify-full sslrootcert=/c", NULL, NULL, "user",
         600},
        {"a bad port", "host=db.example.com port=5432x user=u sslmode=verify-full sslrootcert=/c",
         NULL, NULL, "port", 600},
        {"no region", GOOD_URL, "AWS_REGION", "", "AWS_REGION", 600},
        {"no access key", GOOD_URL, "AWS_ACCESS_KEY_ID", "", "AWS_ACCESS_KEY_ID", 600},
        {"an unparsable URL", "postgresql://[", NULL, NULL, "DATABASE_URL", 600},
        {"all from PG* variables", NULL, "PGHOST", "db.example.com", NULL, 600},
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        char err[ERR_LEN];
        rc_t rc;
        check_case("settings: %s", rows[i].name);
        good_env();
        if (!rows[i].url) {
            setenv("PGUSER", "iam_user", 1);
            setenv("PGSSLMODE", "verify-full", 1);
            setenv("PGSSLROOTCERT", "/ca.pem", 1);
        }
        if (rows[i].var)
            setenv(rows[i].var, rows[i].value, 1);
        struct rds_iam *t = rds_iam_new(rows[i].url, rows[i].renew, &rc, err);
        if (!rows[i].want) {
            CHECK(t != NULL);
            CHECK_EQ_INT(rc, RC_OK);
            const char *tok = NULL;
            if (t)
                CHECK_EQ_INT(rds_iam_token(t, 1767225600, &tok, err), RC_OK);
            CHECK(tok && strncmp(tok, "db.example.com:5432/?", 21) == 0);
        } else {
            CHECK(t == NULL);
            CHECK_EQ_INT(rc, RC_CONFIG);
            CHECK(strstr(err, rows[i].want) != NULL);
            CHECK(strstr(err, "pw") == NULL);
        }
        rds_iam_free(t);
    }
}

int main(void)
{
    test_pieces();
    test_sign_shape();
    test_renewal();
    test_settings();
    return check_finish();
}
