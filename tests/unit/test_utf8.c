/* test_utf8.c - UTF-8 validation of base/utf8.h, against Unicode table 3-7. */
#include "check.h"

#include "utf8.h"

static void test_seq_len(void)
{
    static const struct {
        const char *name;
        const char *in;
        size_t n;
        size_t want;
    } rows[] = {
        {"ASCII", "a", 1, 1},
        {"NUL is a character", "\0", 1, 1},
        {"2 bytes", "\xc3\xa9", 2, 2},
        {"3 bytes", "\xe4\xb8\xad", 3, 3},
        {"4 bytes", "\xf0\x9f\x98\x80", 4, 4},
        {"U+10FFFF", "\xf4\x8f\xbf\xbf", 4, 4},
        {"above U+10FFFF", "\xf4\x90\x80\x80", 4, 0},
        {"F5 lead byte", "\xf5\x80\x80\x80", 4, 0},
        {"overlong 2 bytes (C0)", "\xc0\xaf", 2, 0},
        {"overlong 2 bytes (C1)", "\xc1\xbf", 2, 0},
        {"overlong 3 bytes", "\xe0\x9f\xbf", 3, 0},
        {"smallest 3-byte", "\xe0\xa0\x80", 3, 3},
        {"overlong 4 bytes", "\xf0\x8f\xbf\xbf", 4, 0},
        {"smallest 4-byte", "\xf0\x90\x80\x80", 4, 4},
        {"surrogate D800", "\xed\xa0\x80", 3, 0},
        {"surrogate DFFF", "\xed\xbf\xbf", 3, 0},
        {"U+D7FF", "\xed\x9f\xbf", 3, 3},
        {"stray continuation byte", "\x80", 1, 0},
        {"FF", "\xff", 1, 0},
        {"truncated 2 bytes", "\xc3", 1, 0},
        {"truncated 4 bytes", "\xf0\x9f\x98", 3, 0},
        {"bad second byte", "\xc3\x41", 2, 0},
        {"bad third byte", "\xe4\xb8\x41", 3, 0},
        {"bad fourth byte", "\xf0\x9f\x98\xc0", 4, 0},
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        check_case("utf8_seq_len: %s", rows[i].name);
        /* At the end of a mapped page: a read past avail crashes. */
        const char *p = check_guard(rows[i].in, rows[i].n);
        CHECK_EQ_INT(utf8_seq_len((const unsigned char *)p, rows[i].n), rows[i].want);
    }
}

static void test_put(void)
{
    static const struct {
        uint32_t cp;
        const char *want;
    } rows[] = {
        {0x41, "A"},
        {0x7f, "\x7f"},
        {0x80, "\xc2\x80"},
        {0x7ff, "\xdf\xbf"},
        {0x800, "\xe0\xa0\x80"},
        {0xfffd, "\xef\xbf\xbd"},
        {0x10000, "\xf0\x90\x80\x80"},
        {0x10ffff, "\xf4\x8f\xbf\xbf"},
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        unsigned char out[5] = {0};
        check_case("utf8_put U+%04X", (unsigned)rows[i].cp);
        size_t n = utf8_put(rows[i].cp, out);
        CHECK_EQ_INT(n, strlen(rows[i].want));
        CHECK_EQ_STR((const char *)out, rows[i].want);
        CHECK_EQ_INT(utf8_seq_len(out, n), n); /* what it writes, it accepts */
    }
}

static void test_whole_texts(void)
{
    char out[64];

    check_case("utf8_valid");
    CHECK(utf8_valid("", 0));
    CHECK(utf8_valid("plain", 5));
    CHECK(utf8_valid("\xc3\xa9\xe4\xb8\xad\xf0\x9f\x98\x80", 9));
    CHECK(!utf8_valid("ab\xc3", 3));
    CHECK(!utf8_valid("\xed\xa0\x80x", 4));
    CHECK(!utf8_valid("x\x80", 2));

    check_case("utf8_scrub replaces each bad byte by '?' and keeps the length");
    memset(out, 0, sizeof out);
    CHECK_EQ_INT(utf8_scrub("a\xc3\xa9\xff"
                            "b\xe4\xb8",
                            7, out),
                 7);
    CHECK_EQ_STR(out, "a\xc3\xa9?b??");
    CHECK(utf8_valid(out, 7));
    memset(out, 0, sizeof out);
    CHECK_EQ_INT(utf8_scrub("\xed\xa0\x80", 3, out), 3); /* a surrogate: three bad bytes */
    CHECK_EQ_STR(out, "???");
}

int main(void)
{
    test_seq_len();
    test_put();
    test_whole_texts();
    return check_finish();
}
