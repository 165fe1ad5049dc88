/* test_url.c - percent-encoding and endpoint splitting of base/url.c. */
#include "check.h"

#include "url.h"

static void test_encode(void)
{
    static const struct {
        const char *in;
        size_t n;
        const char *want;
    } rows[] = {
        {"", 0, ""},
        {"AZaz09-._~", 10, "AZaz09-._~"},
        {"a b", 3, "a%20b"},
        {"arn:aws:secretsmanager:eu-west-1:1:secret:db/x+y=z", 50,
         "arn%3Aaws%3Asecretsmanager%3Aeu-west-1%3A1%3Asecret%3Adb%2Fx%2By%3Dz"},
        {"%/?#&", 5, "%25%2F%3F%23%26"},
        {"\xc3\xa9\x7f\x01", 4, "%C3%A9%7F%01"},
        {"a\0b", 3, "a%00b"},
    };
    struct buf b;

    buf_init(&b, 1024);
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        check_case("url_append_encoded \"%s\"", rows[i].want);
        buf_reset(&b);
        buf_appends(&b, "x/");
        CHECK_EQ_INT(url_append_encoded(&b, rows[i].in, rows[i].n), RC_OK);
        CHECK_EQ_STR(b.data + 2, rows[i].want);
    }
    check_case("url_append_encoded reports the buffer's cap");
    buf_free(&b);
    buf_init(&b, 8);
    CHECK_EQ_INT(url_append_encoded(&b, "a b c d", 7), RC_TOOBIG);
    buf_free(&b);
}

static void test_endpoint(void)
{
    static const struct {
        const char *in;
        rc_t rc;
        const char *host, *port;
    } rows[] = {
        {"127.0.0.1:9001", RC_OK, "127.0.0.1", "9001"},
        {"localhost:2773", RC_OK, "localhost", "2773"},
        {"[::1]:9001", RC_OK, "::1", "9001"},
        {"[fe80::1]:1", RC_OK, "fe80::1", "1"},
        {"host:65535", RC_OK, "host", "65535"},
        {"host:09001", RC_OK, "host", "9001"},
        {"host:0", RC_CONFIG, NULL, NULL},
        {"host:65536", RC_CONFIG, NULL, NULL},
        {"host:-1", RC_CONFIG, NULL, NULL},
        {"host:", RC_CONFIG, NULL, NULL},
        {"host:90a", RC_CONFIG, NULL, NULL},
        {"host", RC_CONFIG, NULL, NULL},
        {":9001", RC_CONFIG, NULL, NULL},
        {"", RC_CONFIG, NULL, NULL},
        {"::1:9001", RC_CONFIG, NULL, NULL},
        {"[::1]9001", RC_CONFIG, NULL, NULL},
        {"[::1:9001", RC_CONFIG, NULL, NULL},
        {"[]:9001", RC_CONFIG, NULL, NULL},
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        struct endpoint ep;
        char err[ERR_LEN] = "";
        check_case("endpoint_parse \"%s\"", rows[i].in);
        /* At the end of a mapped page, NUL included: a read past it crashes. */
        const char *in = check_guard(rows[i].in, strlen(rows[i].in) + 1);
        CHECK_EQ_INT(endpoint_parse(in, &ep, err), rows[i].rc);
        if (rows[i].rc == RC_OK) {
            CHECK_EQ_STR(ep.host, rows[i].host);
            CHECK_EQ_STR(ep.port, rows[i].port);
        } else {
            CHECK(err[0] != '\0');
        }
    }

    check_case("endpoint_parse refuses a host over 255 bytes");
    char longer[300];
    memset(longer, 'h', 256);
    memcpy(longer + 256, ":80", 4);
    struct endpoint ep;
    char err[ERR_LEN];
    CHECK_EQ_INT(endpoint_parse(longer, &ep, err), RC_CONFIG);
    memcpy(longer + 255, ":80", 4);
    CHECK_EQ_INT(endpoint_parse(longer, &ep, err), RC_OK);
    CHECK_EQ_INT(strlen(ep.host), 255);

    check_case("endpoint_set");
    CHECK_EQ_INT(endpoint_set(&ep, "localhost", 2773), RC_OK);
    CHECK_EQ_STR(ep.host, "localhost");
    CHECK_EQ_STR(ep.port, "2773");
    CHECK_EQ_INT(endpoint_set(&ep, "localhost", 0), RC_CONFIG);
    CHECK_EQ_INT(endpoint_set(&ep, "localhost", 65536), RC_CONFIG);
    CHECK_EQ_INT(endpoint_set(&ep, "", 80), RC_CONFIG);
}

int main(void)
{
    test_encode();
    test_endpoint();
    return check_finish();
}
