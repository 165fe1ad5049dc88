/* test_hardening.c - small defects, each pinned by a case: Text-format log
 * lines escape line breaks, log lines stay UTF-8, config_load names out-of-memory, a malformed
 * secrets extension endpoint is a configuration error, the device_id
 * length at which masking no longer fits masked_device_id, and what an event
 * of the tiniest records leaves resident. */
#include "check.h"

#include <errno.h>

#include "buf.h"
#include "config.h"
#include "etl.h"
#include "log.h"
#include "mask.h"
#include "row.h"
#include "secrets.h"
#include "sqs.h"
#include "utf8.h"

/* strdup that fails while fail_strdup is set: the executable's definition
 * comes before the C library's, so config_load's strdup is this one. */
static int fail_strdup;

char *strdup(const char *s)
{
    if (fail_strdup) {
        errno = ENOMEM;
        return NULL;
    }
    size_t n = strlen(s) + 1;
    char *p = malloc(n);
    if (p)
        memcpy(p, s, n);
    return p;
}

/* Logs one line through a pipe and returns it (NUL-terminated, static). */
static const char *log_line(int text, const char *message, const char *field)
{
    static char out[2048];
    struct logger lg;
    int fds[2];

    if (pipe(fds) != 0)
        abort();
    log_init(&lg, "INFO", text ? "Text" : "JSON", fds[1]);
    lg.request_id = "req\n1";
    log_at(&lg, LOG_WARN, message, LF_STR("error", field), LF_NUM("n", 7));
    close(fds[1]);
    ssize_t n = read(fds[0], out, sizeof out - 1);
    close(fds[0]);
    out[n > 0 ? n : 0] = '\0';
    return out;
}

static void test_text_log_lines(void)
{
    check_case("Text-format log: one line whatever the message and fields hold");
    /* The field ends at an unmapped page: the escaping reads no byte too far. */
    const char *field = check_guard("a\r\nb\tc\\d\x01", sizeof "a\r\nb\tc\\d\x01");
    const char *l = log_line(1, "two\nlines", field);
    CHECK(strchr(l, '\n') == l + strlen(l) - 1);
    CHECK(strstr(l, " WARN req\\n1 two\\nlines error=a\\r\\nb\\tc\\\\d\\x01 n=7\n") != NULL);
    check_case("JSON log: line breaks escaped as before");
    l = log_line(0, "two\nlines", "x\ny");
    CHECK(strchr(l, '\n') == l + strlen(l) - 1);
    CHECK(strstr(l, "\"message\":\"two\\nlines\"") != NULL);
}

static void test_log_lines_are_utf8(void)
{
    /* A field cut in the middle of a character, a raw 0xFF and a surrogate,
     * between well-formed characters that must stay as they are. */
    static const char field[] = "a\xc3\xa9 \xff\xfe b \xed\xa0\x80 \xe4\xb8\xad \xe4\xb8";

    for (int text = 0; text <= 1; text++) {
        check_case("%s log: bytes that are not UTF-8 become U+FFFD", text ? "Text" : "JSON");
        const char *l = log_line(text, "m\xff", check_guard(field, sizeof field));
        CHECK(utf8_valid(l, strlen(l)));
        CHECK(strchr(l, '\xff') == NULL);
        CHECK(strstr(l, "a\xc3\xa9 ") != NULL && strstr(l, " \xe4\xb8\xad ") != NULL);
        CHECK(strstr(l, text ? "m\xef\xbf\xbd" : "m\\ufffd") != NULL);
        CHECK(strstr(l, text ? "\xef\xbf\xbd\xef\xbf\xbd b" : "\\ufffd\\ufffd b") != NULL);
    }
    check_case("buf_append_json: each bad byte is one \\ufffd, good ones are kept");
    struct buf b;
    buf_init(&b, 256);
    buf_append_json(&b, "\"\xc3\xa9\xff\xed\xa0\x80\xf0\x9f\x98\x80\xf0\x9f", 13);
    buf_appendc(&b, '\0');
    CHECK_EQ_STR(b.data,
                 "\"\\\"\xc3\xa9\\ufffd\\ufffd\\ufffd\\ufffd\xf0\x9f\x98\x80\\ufffd\\ufffd\"");
    buf_free(&b);
}

static void test_config_out_of_memory(void)
{
    struct config c;
    char err[ERR_LEN];

    check_case("config_load out of memory fills err");
    setenv("MASKING_KEY",
           "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
           "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff",
           1);
    setenv("PGUSER", "etl", 1);
    fail_strdup = 1;
    rc_t rc = config_load(&c, err);
    fail_strdup = 0;
    CHECK_EQ_INT(rc, RC_NOMEM);
    CHECK(strstr(err, "out of memory") != NULL);
    check_case("config_load without the fault");
    CHECK_EQ_INT(config_load(&c, err), RC_OK);
    config_free(&c);
}

static void test_secrets_endpoint(void)
{
    static const struct endpoint bad[] = {
        {"bad host", "2773"}, {"localhost", "99999"}, {"localhost", "port"}, {"local/host", "1"}};
    struct endpoint ok;
    struct buf out;
    char err[ERR_LEN];

    setenv("AWS_SESSION_TOKEN", "token", 1);
    buf_init(&out, 1024);
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        check_case("secrets endpoint \"%s:%s\" is a configuration error, not out of memory",
                   bad[i].host, bad[i].port);
        rc_t rc = secrets_get(&bad[i], "id", INT64_MAX, &out, err);
        CHECK_EQ_INT(rc, RC_CONFIG);
        CHECK(strstr(err, "endpoint") != NULL && strstr(err, "memory") == NULL);
    }
    check_case("no time left: a timeout before any wait");
    CHECK_EQ_INT(endpoint_set(&ok, "127.0.0.1", 9), RC_OK);
    CHECK_EQ_INT(secrets_get(&ok, "id", 1, &out, err), RC_TIMEOUT);
    buf_wipe(&out);
}

static void test_device_id_limit(void)
{
    static const char hex[] = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
                              "f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff0123456789abcdef0123456789abcdef";
    static const char *const ids[] = {"k", "k1", "Prod2025"};
    char err[ERR_LEN], ip[MASK_OUTPUT_MAX], dev[MASK_OUTPUT_MAX], value[200];

    /* 4-byte characters: 40 of them (160 bytes) are far below the 128-character
     * limit, yet one byte over what masked_device_id can hold (masking looks at
     * bytes only, so the cut need not fall between characters). */
    for (size_t i = 0; i < sizeof value; i += 4)
        memcpy(value + i, "\xf0\x9f\x98\x80", 4);
    for (size_t k = 0; k < sizeof ids / sizeof ids[0]; k++) {
        struct mask_key *key = mask_key_new(hex, 128, ids[k], err);
        for (size_t len = 158; len <= 161; len++) {
            struct login_row lr = {
                .user_id = "u", .user_id_len = 1, .device_id = value, .device_id_len = len};
            struct pg_row row;
            check_case("key id %s: device_id of %zu bytes", ids[k], len);
            CHECK(key != NULL);
            if (!key)
                continue;
            enum login_reason why = LOGIN__COUNT;
            CHECK_EQ_INT(row_build(key, &lr, &row, ip, dev, &why), RC_OK);
            CHECK_EQ_INT(why, len <= 159 ? LOGIN_OK : LOGIN_MASKED_TOO_LONG);
            if (why == LOGIN_OK)
                CHECK(row.masked_device_id_len <= 256);
        }
        mask_key_free(key);
    }
}

static void test_sqs_token_memory(void)
{
    enum { N = 170000 };
    struct sqs_event ev;
    struct buf text;
    char err[ERR_LEN];

    /* The most records a 6 MB event holds: the record-at-a-time parse keeps
     * one record's tokens at a time; the whole-document parse holds them all
     * (17 MB) and releases them once the records are out; a small event's
     * are kept for the next one. */
    sqs_init(&ev);
    buf_init(&text, 8u << 20);
    buf_appends(&text, "{\"Records\":[");
    for (size_t i = 0; i < N; i++)
        buf_printf(&text, "%s{\"messageId\":\"%06zu\",\"body\":\"{}\"}", i ? "," : "", i);
    buf_appends(&text, "]}");
    check_case("170,000 tiny records: parsed with one record's tokens at a time");
    CHECK_EQ_INT(text.err, RC_OK);
    CHECK_EQ_INT(sqs_parse(&ev, text.data, text.len, err), RC_OK);
    CHECK_EQ_INT(ev.n, N);
    CHECK(ev.doc.cap <= 64); /* the root, "Records", the array, one record */
    CHECK_EQ_STR(ev.records[N - 1].message_id, "169999");
    CHECK_EQ_INT(ev.records[N - 1].body_len, 2);
    check_case("170,000 tiny records, the whole document at once: tokens released");
    CHECK_EQ_INT(sqs_parse_whole(&ev, text.data, text.len, err), RC_OK);
    CHECK_EQ_INT(ev.n, N);
    CHECK(ev.doc.tok == NULL && ev.doc.cap == 0);
    CHECK_EQ_STR(ev.records[N - 1].message_id, "169999");
    check_case("a small event after it: tokens kept");
    static const char small[] = "{\"Records\":[{\"messageId\":\"a\",\"body\":\"{}\"}]}";
    CHECK_EQ_INT(sqs_parse(&ev, small, sizeof small - 1, err), RC_OK);
    CHECK_EQ_INT(ev.n, 1);
    CHECK(ev.doc.tok != NULL);
    check_case("an SQS record is 40 bytes");
    CHECK_EQ_INT(sizeof(struct sqs_record), 40);
    sqs_free(&ev);
    buf_free(&text);
}

int main(void)
{
    test_text_log_lines();
    test_log_lines_are_utf8();
    test_config_out_of_memory();
    test_secrets_endpoint();
    test_device_id_limit();
    test_sqs_token_memory();
    return check_finish();
}
