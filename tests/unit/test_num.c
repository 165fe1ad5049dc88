/* test_num.c - the bounded number parser and the growable buffer. */
#include "check.h"

#include "buf.h"
#include "num.h"

static void test_i64(void)
{
    static const struct {
        const char *in;
        long long min, max;
        rc_t rc;
        long long want;
    } rows[] = {
        {"0", 0, 100, RC_OK, 0},
        {"100", 0, 100, RC_OK, 100},
        {"101", 0, 100, RC_INVALID, 0},
        {"-1", 0, 100, RC_INVALID, 0},
        {"-5", -10, 10, RC_OK, -5},
        {"", 0, 100, RC_INVALID, 0},
        {"-", -10, 10, RC_INVALID, 0},
        {"+1", 0, 100, RC_INVALID, 0},
        {" 1", 0, 100, RC_INVALID, 0},
        {"1 ", 0, 100, RC_INVALID, 0},
        {"1x", 0, 100, RC_INVALID, 0},
        {"9223372036854775807", 0, INT64_MAX, RC_OK, INT64_MAX},
        {"9223372036854775808", 0, INT64_MAX, RC_INVALID, 0},
        {"-9223372036854775808", INT64_MIN, 0, RC_OK, INT64_MIN},
        {"99999999999999999999", 0, INT64_MAX, RC_INVALID, 0},
        {"1700000000000", 0, INT64_MAX, RC_OK, 1700000000000LL},
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        int64_t v = -42;
        check_case("num_parse_i64 \"%s\"", rows[i].in);
        const char *in = check_guard(rows[i].in, strlen(rows[i].in));
        rc_t rc = num_parse_i64(in, strlen(rows[i].in), rows[i].min, rows[i].max, &v);
        CHECK_EQ_INT(rc, rows[i].rc);
        CHECK_EQ_INT(v, rows[i].rc == RC_OK ? rows[i].want : -42);
    }
}

static void test_hex(void)
{
    static const struct {
        const char *in;
        rc_t rc;
        unsigned long long want;
    } rows[] = {
        {"0", RC_OK, 0},          {"ff", RC_OK, 255},
        {"FF", RC_OK, 255},       {"", RC_INVALID, 0},
        {"g", RC_INVALID, 0},     {"12345678abcdef01", RC_OK, 0x12345678abcdef01ULL},
        {"1ffff", RC_INVALID, 0}, {"12345678abcdef012", RC_INVALID, 0},
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        uint64_t v = 0;
        check_case("num_parse_hex \"%s\"", rows[i].in);
        rc_t rc = num_parse_hex(
            rows[i].in, strlen(rows[i].in),
            strlen(rows[i].in) > 4 && strlen(rows[i].in) < 16 ? 0xffff : UINT64_MAX, &v);
        CHECK_EQ_INT(rc, rows[i].rc);
        if (rc == RC_OK)
            CHECK(v == rows[i].want);
    }
}

static void test_buf(void)
{
    struct buf b;

    check_case("buf grows and keeps a NUL");
    buf_init(&b, 1000);
    for (int i = 0; i < 100; i++)
        buf_appends(&b, "abcdefghi");
    CHECK_EQ_INT(b.err, RC_OK);
    CHECK_EQ_INT(b.len, 900);
    CHECK_EQ_INT(b.data[900], 0);

    check_case("buf cap is sticky");
    CHECK_EQ_INT(
        buf_appends(&b, "0123456789012345678901234567890123456789012345678901234567890123456789"
                        "0123456789012345678901234567890"),
        RC_TOOBIG);
    CHECK_EQ_INT(buf_appends(&b, "x"), RC_TOOBIG);
    CHECK_EQ_INT(b.len, 900);
    buf_reset(&b);
    CHECK_EQ_INT(buf_appends(&b, "x"), RC_OK);

    check_case("buf exactly at cap");
    buf_reset(&b);
    char big[1000];
    memset(big, 'a', sizeof big);
    CHECK_EQ_INT(buf_append(&b, big, sizeof big), RC_OK);
    CHECK_EQ_INT(buf_appendc(&b, 'b'), RC_TOOBIG);

    check_case("buf_printf long output");
    buf_reset(&b);
    CHECK_EQ_INT(buf_printf(&b, "%0500d|%s", 7, "end"), RC_OK);
    CHECK_EQ_INT(b.len, 504);
    CHECK_EQ_STR(b.data + 500, "|end");

    check_case("buf_consume");
    buf_reset(&b);
    buf_appends(&b, "hello world");
    buf_consume(&b, 6);
    CHECK_EQ_STR(b.data, "world");
    buf_consume(&b, 99);
    CHECK_EQ_INT(b.len, 0);

    check_case("buf_append_json escapes");
    buf_reset(&b);
    buf_append_json(&b, "a\"b\\c\n\x01\x1f\xc3\xa9", 10);
    CHECK_EQ_STR(b.data, "\"a\\\"b\\\\c\\n\\u0001\\u001f\xc3\xa9\"");
    buf_free(&b);
}

static void test_buf_ops(void)
{
    char stack[8];
    struct buf b;

    check_case("buf_wrap: appends up to size - 1 bytes, never reallocates");
    buf_wrap(&b, stack, sizeof stack);
    CHECK(b.data == stack && b.len == 0 && stack[0] == '\0');
    CHECK_EQ_INT(buf_appends(&b, "1234567"), RC_OK);
    CHECK(b.data == stack);
    CHECK_EQ_STR(stack, "1234567");
    CHECK_EQ_INT(buf_appendc(&b, '8'), RC_TOOBIG);
    CHECK(b.data == stack && b.len == 7);
    buf_reset(&b);
    CHECK_EQ_INT(buf_printf(&b, "%d", 42), RC_OK);
    CHECK_EQ_STR(stack, "42");

    check_case("buf_truncate: undoes appends and clears the error");
    buf_init(&b, 10);
    buf_appends(&b, "abc");
    size_t mark = b.len;
    buf_appends(&b, "defgh");
    CHECK_EQ_INT(buf_appends(&b, "ijk"), RC_TOOBIG);
    buf_truncate(&b, mark);
    CHECK_EQ_INT(b.err, RC_OK);
    CHECK_EQ_INT(b.len, 3);
    CHECK_EQ_STR(b.data, "abc");
    CHECK_EQ_INT(buf_appends(&b, "xyz"), RC_OK);
    CHECK_EQ_STR(b.data, "abcxyz");
    buf_truncate(&b, 100); /* beyond the length: keeps it */
    CHECK_EQ_INT(b.len, 6);

    check_case("buf_commit: bytes written into reserved room become the buffer's");
    CHECK_EQ_INT(buf_reserve(&b, 3), RC_OK);
    memcpy(b.data + b.len, "123", 3);
    buf_commit(&b, 3);
    CHECK_EQ_INT(b.len, 9);
    CHECK_EQ_STR(b.data, "abcxyz123");
    buf_free(&b);
}

int main(void)
{
    test_i64();
    test_hex();
    test_buf();
    test_buf_ops();
    return check_finish();
}
