/* test_json.c - the strict tokenizer: grammar, string flags, tokens, json_get,
 * json_string.  Every input is parsed from a copy that ends at a guard page. */
#include "check.h"

#include "buf.h"
#include "json.h"

/* A string literal with its exact length (so rows may hold NUL bytes). */
#define S(lit) lit, sizeof(lit) - 1

static struct json_doc doc;
static char err[ERR_LEN];

/* Parses n bytes from a guard-page copy; returns the result code. */
static rc_t parse(const char *s, size_t n)
{
    err[0] = '\0';
    return json_parse(&doc, check_guard(s, n), n, err);
}

static void test_accept(void)
{
    static const struct {
        const char *in;
        size_t len;
        int root;      /* enum json_type */
        unsigned ntok; /* tokens expected */
    } rows[] = {
        {S("{}"), JSON_OBJECT, 1},
        {S("[]"), JSON_ARRAY, 1},
        {S("0"), JSON_NUMBER, 1},
        {S("-0"), JSON_NUMBER, 1},
        {S("7"), JSON_NUMBER, 1},
        {S("-12.5e+10"), JSON_NUMBER, 1},
        {S("1.25E-3"), JSON_NUMBER, 1},
        {S("1e2"), JSON_NUMBER, 1},
        {S("0.0"), JSON_NUMBER, 1},
        {S("\"\""), JSON_STRING, 1},
        {S("\"a\""), JSON_STRING, 1},
        {S("true"), JSON_TRUE, 1},
        {S("false"), JSON_FALSE, 1},
        {S("null"), JSON_NULL, 1},
        {S(" \t\r\n{ \"a\" : [ 1 , 2 ] }\n "), JSON_OBJECT, 5},
        {S("{\"a\":{\"b\":[]},\"c\":null}"), JSON_OBJECT, 7},
        {S("[[],{},\"\",0,true]"), JSON_ARRAY, 6},
        {S("\"\\\"\\\\\\/\\b\\f\\n\\r\\t\\u0041\\u00e9\\uD83D\\uDE00\""), JSON_STRING, 1},
        {S("\"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\""), JSON_STRING, 1},
        {S("[\"\x7f\"]"), JSON_ARRAY, 2}, /* DEL is not a control */
        {S("{\"a\":\"\xff\",\"b\":\"\\u0000\",\"c\":1}"), JSON_OBJECT, 7}, /* flags only */
        {S("\"a\0b\""), JSON_STRING, 1}, /* raw NUL in a string: a flag, not an error */
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        check_case("accept row %zu", i);
        CHECK_EQ_INT(parse(rows[i].in, rows[i].len), RC_OK);
        CHECK_EQ_INT(doc.ntok, rows[i].ntok);
        if (doc.ntok) {
            CHECK_EQ_INT(doc.tok[0].type, rows[i].root);
            CHECK_EQ_INT(doc.tok[0].next, doc.ntok);
        }
    }
}

static void test_reject(void)
{
    static const struct {
        const char *in;
        size_t len;
        rc_t rc;
    } rows[] = {
        {S(""), RC_INVALID},
        {S(" \n"), RC_INVALID},
        {S("{"), RC_INVALID},
        {S("}"), RC_INVALID},
        {S("["), RC_INVALID},
        {S("]"), RC_INVALID},
        {S("[1,]"), RC_INVALID},
        {S("[,1]"), RC_INVALID},
        {S("[1 2]"), RC_INVALID},
        {S("[1]]"), RC_INVALID},
        {S("{]"), RC_INVALID},
        {S("[}"), RC_INVALID},
        {S("{\"a\":1,}"), RC_INVALID},
        {S("{,}"), RC_INVALID},
        {S("{\"a\"}"), RC_INVALID},
        {S("{\"a\":}"), RC_INVALID},
        {S("{\"a\" 1}"), RC_INVALID},
        {S("{\"a\":1 \"b\":2}"), RC_INVALID},
        {S("{a:1}"), RC_INVALID},
        {S("{'a':1}"), RC_INVALID},
        {S("{1:1}"), RC_INVALID},
        {S("01"), RC_INVALID},
        {S("-01"), RC_INVALID},
        {S("00"), RC_INVALID},
        {S("+1"), RC_INVALID},
        {S(".5"), RC_INVALID},
        {S("1."), RC_INVALID},
        {S("1.e5"), RC_INVALID},
        {S("1e"), RC_INVALID},
        {S("1e+"), RC_INVALID},
        {S("-"), RC_INVALID},
        {S("--1"), RC_INVALID},
        {S("- 1"), RC_INVALID},
        {S("0x10"), RC_INVALID},
        {S("NaN"), RC_INVALID},
        {S("Infinity"), RC_INVALID},
        {S("-Infinity"), RC_INVALID},
        {S("tru"), RC_INVALID},
        {S("True"), RC_INVALID},
        {S("nul"), RC_INVALID},
        {S("nulll"), RC_INVALID},
        {S("falsey"), RC_INVALID},
        {S("\"abc"), RC_INVALID},
        {S("\"abc\\\""), RC_INVALID},
        {S("\"\\x\""), RC_INVALID},
        {S("\"\\'\""), RC_INVALID},
        {S("\"\\u12\""), RC_INVALID},
        {S("\"\\u12G4\""), RC_INVALID},
        {S("\"\\U0041\""), RC_INVALID},
        {S("\"\\u004"), RC_INVALID},
        {S("\"\\"), RC_INVALID},
        {S("\"\\uD83D\\u12\""), RC_INVALID}, /* a broken escape after a high surrogate */
        {S("\"a\tb\""), RC_INVALID},         /* raw control characters in strings */
        {S("\"a\nb\""), RC_INVALID},
        {S("\"\x1f\""), RC_INVALID},
        {S("\"\x01\""), RC_INVALID},
        {S("1 2"), RC_INVALID},
        {S("{} {}"), RC_INVALID},
        {S("{}x"), RC_INVALID},
        {S("/* c */{}"), RC_INVALID},
        {S("\v{}"), RC_INVALID}, /* only space, tab, LF, CR are whitespace */
        {S("\f{}"), RC_INVALID},
        {S("\xc2\xa0{}"), RC_INVALID},     /* NBSP */
        {S("\xef\xbb\xbf{}"), RC_INVALID}, /* a byte order mark is not JSON */
        {S("\0"), RC_INVALID},             /* raw NUL outside a string */
        {S("{}\0"), RC_INVALID},
        {S("[\xff]"), RC_INVALID},
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        check_case("reject row %zu", i);
        CHECK_EQ_INT(parse(rows[i].in, rows[i].len), rows[i].rc);
        CHECK_EQ_INT(doc.ntok, 0);
        CHECK(strstr(err, "offset") != NULL);
    }

    check_case("error gives the offset and never the text");
    CHECK_EQ_INT(parse(S("{\"secret\":xyz}")), RC_INVALID);
    CHECK(strstr(err, "offset 10") != NULL);
    CHECK(strstr(err, "secret") == NULL);
    CHECK(strstr(err, "xyz") == NULL);
}

/* Builds n nested arrays (or {"a": objects) around a 0. */
static size_t nest(char *out, int n, int objects)
{
    size_t k = 0;
    for (int i = 0; i < n; i++) {
        if (objects) {
            memcpy(out + k, "{\"a\":", 5);
            k += 5;
        } else {
            out[k++] = '[';
        }
    }
    out[k++] = '0';
    for (int i = 0; i < n; i++)
        out[k++] = objects ? '}' : ']';
    return k;
}

static void test_depth(void)
{
    char b[1024];

    check_case("64 nested arrays are fine");
    CHECK_EQ_INT(parse(b, nest(b, 64, 0)), RC_OK);
    CHECK_EQ_INT(doc.ntok, 65);
    check_case("65 nested arrays are refused");
    CHECK_EQ_INT(parse(b, nest(b, 65, 0)), RC_INVALID);
    CHECK(strstr(err, "deeper") != NULL);
    check_case("64 nested objects are fine");
    CHECK_EQ_INT(parse(b, nest(b, 64, 1)), RC_OK);
    CHECK_EQ_INT(doc.ntok, 64 * 2 + 1);
    check_case("65 nested objects are refused");
    CHECK_EQ_INT(parse(b, nest(b, 65, 1)), RC_INVALID);
}

static void test_flags(void)
{
    static const struct {
        const char *in; /* one string token */
        size_t len;
        unsigned flags;
    } rows[] = {
        {S("\"abc\""), 0},
        {S("\"\""), 0},
        {S("\"a\\nb\""), JSON_ESCAPED},
        {S("\"\\u0041\""), JSON_ESCAPED},
        {S("\"\\u0000\""), JSON_ESCAPED | JSON_HAS_NUL},
        {S("\"x\\u0000y\""), JSON_ESCAPED | JSON_HAS_NUL},
        {S("\"a\0b\""), JSON_HAS_NUL},
        {S("\"\0\""), JSON_HAS_NUL},
        {S("\"\xc3\xa9\""), 0},                             /* U+00E9 */
        {S("\"\xdf\xbf\""), 0},                             /* U+07FF */
        {S("\"\xe0\xa0\x80\""), 0},                         /* U+0800 */
        {S("\"\xe2\x82\xac\""), 0},                         /* U+20AC */
        {S("\"\xed\x9f\xbf\""), 0},                         /* U+D7FF */
        {S("\"\xee\x80\x80\""), 0},                         /* U+E000 */
        {S("\"\xef\xbf\xbf\""), 0},                         /* U+FFFF */
        {S("\"\xf0\x90\x80\x80\""), 0},                     /* U+10000 */
        {S("\"\xf0\x9f\x98\x80\""), 0},                     /* U+1F600 */
        {S("\"\xf4\x8f\xbf\xbf\""), 0},                     /* U+10FFFF */
        {S("\"\xc0\xaf\""), JSON_BAD_UTF8},                 /* overlong '/' */
        {S("\"\xc1\xbf\""), JSON_BAD_UTF8},                 /* overlong */
        {S("\"\xc0\x80\""), JSON_BAD_UTF8},                 /* overlong NUL (modified UTF-8) */
        {S("\"\xe0\x80\xaf\""), JSON_BAD_UTF8},             /* overlong */
        {S("\"\xe0\x9f\xbf\""), JSON_BAD_UTF8},             /* overlong U+07FF */
        {S("\"\xf0\x8f\xbf\xbf\""), JSON_BAD_UTF8},         /* overlong U+FFFF */
        {S("\"\xed\xa0\x80\""), JSON_BAD_UTF8},             /* U+D800 in UTF-8 */
        {S("\"\xed\xbf\xbf\""), JSON_BAD_UTF8},             /* U+DFFF in UTF-8 */
        {S("\"\xed\xa0\xbd\xed\xb8\x80\""), JSON_BAD_UTF8}, /* CESU-8 pair */
        {S("\"\xf4\x90\x80\x80\""), JSON_BAD_UTF8},         /* U+110000 */
        {S("\"\xf5\x80\x80\x80\""), JSON_BAD_UTF8},
        {S("\"\xf8\x88\x80\x80\x80\""), JSON_BAD_UTF8}, /* 5-byte form */
        {S("\"\xff\""), JSON_BAD_UTF8},
        {S("\"\xfe\""), JSON_BAD_UTF8},
        {S("\"\x80\""), JSON_BAD_UTF8}, /* stray continuation */
        {S("\"a\xbf\xbf"
           "b\""),
         JSON_BAD_UTF8},
        {S("\"\xc3\""), JSON_BAD_UTF8}, /* truncated before the quote */
        {S("\"\xe2\x82\""), JSON_BAD_UTF8},
        {S("\"\xf0\x9f\x98\""), JSON_BAD_UTF8},
        {S("\"\xc3\x28\""), JSON_BAD_UTF8}, /* bad continuation */
        {S("\"\xe2\x28\xa1\""), JSON_BAD_UTF8},
        {S("\"\\uD83D\\uDE00\""), JSON_ESCAPED},          /* a surrogate pair */
        {S("\"\\udbff\\udfff\""), JSON_ESCAPED},          /* U+10FFFF */
        {S("\"\\uD83D\""), JSON_ESCAPED | JSON_BAD_UTF8}, /* lone high */
        {S("\"\\uDE00\""), JSON_ESCAPED | JSON_BAD_UTF8}, /* lone low */
        {S("\"\\uD83Dx\""), JSON_ESCAPED | JSON_BAD_UTF8},
        {S("\"\\uD83D\\u0041\""), JSON_ESCAPED | JSON_BAD_UTF8},
        {S("\"\\uD83D\\n\""), JSON_ESCAPED | JSON_BAD_UTF8},
        {S("\"\\uDE00\\uD83D\""), JSON_ESCAPED | JSON_BAD_UTF8}, /* reversed pair */
        {S("\"\\uD83D\\uD83D\\uDE00\""), JSON_ESCAPED | JSON_BAD_UTF8},
        {S("\"\\u0000\xff\""), JSON_ESCAPED | JSON_HAS_NUL | JSON_BAD_UTF8},
        /* long strings go through the 8-byte fast path */
        {S("\"0123456789abcdef0123456789abcdef\""), 0},
        {S("\"0123456789abcdef0123456789abc\\\"ef\""), JSON_ESCAPED},
        {S("\"0123456789abcdef012345678\xc3\xa9"
           "abcdef\""),
         0},
        {S("\"0123456789abcdef012345678\xff"
           "abcdef\""),
         JSON_BAD_UTF8},
        {S("\"0123456789abcdef0123456789\0bcdef\""), JSON_HAS_NUL},
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        check_case("flags row %zu", i);
        CHECK_EQ_INT(parse(rows[i].in, rows[i].len), RC_OK);
        CHECK_EQ_INT(doc.ntok, 1);
        CHECK_EQ_INT(doc.tok[0].type, JSON_STRING);
        CHECK_EQ_INT(doc.tok[0].flags, rows[i].flags);
        CHECK_EQ_INT(doc.tok[0].start, 1);
        CHECK_EQ_INT(doc.tok[0].end, rows[i].len - 1);
    }

    check_case("doc->flags is the OR of every string's flags");
    CHECK_EQ_INT(parse(S("{\"a\":\"x\",\"b\":[1,\"y\"]}")), RC_OK);
    CHECK_EQ_INT(doc.flags, 0);
    CHECK_EQ_INT(parse(S("{\"a\":\"\\n\",\"b\":[\"\xff\"]}")), RC_OK);
    CHECK_EQ_INT(doc.flags, JSON_ESCAPED | JSON_BAD_UTF8);
    CHECK_EQ_INT(parse(S("{\"\\u0000\":1}")), RC_OK);
    CHECK_EQ_INT(doc.flags, JSON_ESCAPED | JSON_HAS_NUL);
    CHECK_EQ_INT(parse(S("[\"\\u0000\",")), RC_INVALID);
    CHECK_EQ_INT(doc.flags, 0);

    check_case("raw control characters in long strings are refused");
    CHECK_EQ_INT(parse(S("\"0123456789abcdef0123456789\x01"
                         "bcdef\"")),
                 RC_INVALID);
    CHECK(strstr(err, "offset 27") != NULL);
}

/* Every byte value at every position of a 40-byte string, against a plain
 * classification: checks the 8-byte fast path misses nothing. */
static void test_byte_sweep(void)
{
    char in[42];
    int bad = 0;

    check_case("every byte at every position of a string");
    for (int k = 0; k < 40; k++) {
        for (int c = 0; c < 256; c++) {
            in[0] = '"';
            memset(in + 1, 'a', 40);
            in[1 + k] = (char)c;
            in[41] = '"';
            rc_t want = RC_OK;
            unsigned flags = 0;
            if (c == 0)
                flags = JSON_HAS_NUL;
            else if (c < 0x20 || c == '"' || c == '\\')
                want = RC_INVALID; /* control; early end then text; "\a" */
            else if (c >= 0x80)
                flags = JSON_BAD_UTF8; /* a lone non-ASCII byte */
            rc_t got = parse(in, sizeof in);
            bad += got != want || (got == RC_OK && doc.tok[0].flags != flags);
        }
    }
    CHECK_EQ_INT(bad, 0);
}

static void test_tokens(void)
{
    /*                 0 1   2 3 4 5 6   7 8      9   10 */
    const char *in = "{\"a\":[1,2,{\"b\":null}],\"c\":\"d\"}";
    static const struct {
        int type;
        unsigned start, end, next, count;
    } want[] = {
        {JSON_OBJECT, 0, 30, 10, 2},  {JSON_STRING, 2, 3, 2, 0}, {JSON_ARRAY, 5, 21, 8, 3},
        {JSON_NUMBER, 6, 7, 4, 0},    {JSON_NUMBER, 8, 9, 5, 0}, {JSON_OBJECT, 10, 20, 8, 1},
        {JSON_STRING, 12, 13, 7, 0},  {JSON_NULL, 15, 19, 8, 0}, {JSON_STRING, 23, 24, 9, 0},
        {JSON_STRING, 27, 28, 10, 0},
    };

    check_case("token layout");
    CHECK_EQ_INT(parse(in, strlen(in)), RC_OK);
    CHECK_EQ_INT(doc.ntok, 10);
    for (unsigned i = 0; i < 10 && i < doc.ntok; i++) {
        CHECK_EQ_INT(doc.tok[i].type, want[i].type);
        CHECK_EQ_INT(doc.tok[i].start, want[i].start);
        CHECK_EQ_INT(doc.tok[i].end, want[i].end);
        CHECK_EQ_INT(doc.tok[i].next, want[i].next);
        CHECK_EQ_INT(doc.tok[i].count, want[i].count);
    }

    check_case("token array is reused and bounded by the text length");
    static char big[20001];
    big[0] = '[';
    for (int i = 0; i < 10000; i++) {
        big[1 + 2 * i] = '0';
        big[2 + 2 * i] = ',';
    }
    big[20000] = ']';
    CHECK_EQ_INT(parse(big, sizeof big), RC_OK);
    CHECK_EQ_INT(doc.ntok, 10001);
    CHECK_EQ_INT(doc.tok[0].count, 10000);
    CHECK(doc.cap <= sizeof big);
    struct json_tok *before = doc.tok;
    CHECK_EQ_INT(parse(S("[0]")), RC_OK);
    CHECK_EQ_INT(doc.ntok, 2);
    CHECK(doc.tok == before);
    CHECK_EQ_INT(parse(big, sizeof big), RC_OK);
    CHECK_EQ_INT(doc.ntok, 10001);

    check_case("a single-byte text needs one token");
    struct json_doc d1;
    json_init(&d1);
    CHECK_EQ_INT(json_parse(&d1, check_guard("7", 1), 1, err), RC_OK);
    CHECK_EQ_INT(d1.cap, 1);
    json_free(&d1);
    CHECK(d1.tok == NULL);
}

static void test_prefixes(void)
{
    /* Every proper prefix of an object is malformed; none reads past its end. */
    const char *in = "{\"user\\u005fid\": \"\\uD83D\\uDE00\xc3\xa9\", \"n\": [-1.5e+3, true, "
                     "false, null, {}], \"s\": \"\\\"\\\\\\/\\b\\f\\n\\r\\t\"}";
    size_t n = strlen(in);

    check_case("every prefix of a document fails cleanly at a guard page");
    CHECK_EQ_INT(parse(in, n), RC_OK);
    for (size_t k = 0; k < n; k++)
        CHECK_EQ_INT(parse(in, k), RC_INVALID);
}

/* Parses text and returns the source text of json_get(root, key), as a
 * NUL-terminated copy in out, or "-" when absent. */
static const char *get_text(const char *text, size_t len, const char *key, char *out, size_t cap)
{
    if (parse(text, len) != RC_OK)
        return "(parse failed)";
    long i = json_get(&doc, 0, key);
    if (i < 0)
        return "-";
    const struct json_tok *t = &doc.tok[i];
    size_t s = t->start - (t->type == JSON_STRING), e = t->end + (t->type == JSON_STRING);
    snprintf(out, cap, "%.*s", (int)(e - s), doc.text + s);
    return out;
}

static void test_get(void)
{
    static const struct {
        const char *in;
        size_t len;
        const char *key;
        const char *want; /* source text of the value, "-" for absent */
    } rows[] = {
        {S("{\"a\":1,\"b\":2}"), "b", "2"},
        {S("{\"a\":1,\"b\":2}"), "a", "1"},
        {S("{\"a\":1,\"b\":2}"), "c", "-"},
        {S("{}"), "a", "-"},
        {S("{\"a\":1,\"a\":2}"), "a", "2"}, /* last duplicate wins */
        {S("{\"a\":1,\"b\":0,\"a\":[3]}"), "a", "[3]"},
        {S("{\"user\\u005fid\":\"x\"}"), "user_id", "\"x\""},
        {S("{\"\\u0075ser_id\":\"x\"}"), "user_id", "\"x\""},
        {S("{\"user\\u005Fid\":\"x\",\"user_id\":\"y\"}"), "user_id", "\"y\""},
        {S("{\"USER_ID\":1}"), "user_id", "-"},
        {S("{\"user_id \":1}"), "user_id", "-"},
        {S("{\"ab\":1}"), "a", "-"},
        {S("{\"a\":1}"), "ab", "-"},
        {S("{\"a\\u0000\":1}"), "a", "-"},
        {S("{\"\":5}"), "", "5"},
        {S("{\"\\uD83D\\uDE00\":1}"), "\xf0\x9f\x98\x80", "1"},
        {S("{\"\xc3\xa9\":1}"), "\xc3\xa9", "1"},
        {S("{\"\\u00e9\":1}"), "\xc3\xa9", "1"},
        {S("{\"\\uD83D\":1}"), "\xef\xbf\xbd", "1"}, /* lone surrogate decodes as U+FFFD */
        {S("{\"a\":{\"b\":1},\"b\":2}"), "b", "2"},  /* nested keys are not members */
        {S("{\"a\":[1,{\"b\":3}],\"b\":4}"), "b", "4"},
        {S("{\"a\":{\"b\":1}}"), "b", "-"},
        {S("[\"a\",1]"), "a", "-"}, /* not an object */
        {S("\"a\""), "a", "-"},
    };
    char out[200];
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        check_case("json_get row %zu", i);
        CHECK_EQ_STR(get_text(rows[i].in, rows[i].len, rows[i].key, out, sizeof out), rows[i].want);
    }

    check_case("json_get on a token that is not an object or out of range");
    CHECK_EQ_INT(parse(S("{\"a\":{\"b\":7}}")), RC_OK);
    CHECK_EQ_INT(json_get(&doc, 2, "b"), 4);
    CHECK_EQ_INT(json_get(&doc, 1, "a"), -1);
    CHECK_EQ_INT(json_get(&doc, 99, "a"), -1);

    check_case("json_streq");
    CHECK_EQ_INT(parse(S("[\"a\\tb\",\"ab\",1]")), RC_OK);
    CHECK_EQ_INT(json_streq(&doc, 1, "a\tb", 3), 1);
    CHECK_EQ_INT(json_streq(&doc, 1, "a\tb", 2), 0);
    CHECK_EQ_INT(json_streq(&doc, 1, "a\tbc", 4), 0);
    CHECK_EQ_INT(json_streq(&doc, 2, "ab", 2), 1);
    CHECK_EQ_INT(json_streq(&doc, 3, "1", 1), 0);
    CHECK_EQ_INT(json_streq(&doc, 9, "", 0), 0);
}

static void test_members(void)
{
    /* Two names of one length, two whose lengths are equal modulo 16 (2 and
     * 18), a name over 16 bytes, the empty name, and one never present. */
    static const struct json_name names[] = {
        {"ip", 2}, {"device_type", 11}, {"app_version", 11}, {"a_name_of_18_bytes", 18},
        {"", 0},   {"absent", 6},       {"xy", 2},
    };
    enum { N = sizeof names / sizeof names[0] };
    struct json_names set;
    long idx[N];

    json_names_init(&set, names, N);

    check_case("json_members finds each name, by length and content");
    CHECK_EQ_INT(parse(S("{\"app_version\":1,\"ip\":2,\"device_type\":3,\"a_name_of_18_bytes\":4,"
                         "\"\":5,\"xy\":6,\"ipx\":7,\"device_typf\":8}")),
                 RC_OK);
    json_members(&doc, 0, &set, idx);
    CHECK_EQ_INT(idx[0], 4);  /* ip */
    CHECK_EQ_INT(idx[1], 6);  /* device_type */
    CHECK_EQ_INT(idx[2], 2);  /* app_version */
    CHECK_EQ_INT(idx[3], 8);  /* a_name_of_18_bytes */
    CHECK_EQ_INT(idx[4], 10); /* "" */
    CHECK_EQ_INT(idx[5], -1); /* absent */
    CHECK_EQ_INT(idx[6], 12); /* xy */

    check_case("json_members: the last duplicate wins; escaped names are decoded");
    CHECK_EQ_INT(parse(S("{\"ip\":1,\"i\\u0070\":2,\"x\":{\"ip\":3},\"\\u0069p\":[4]}")), RC_OK);
    json_members(&doc, 0, &set, idx);
    CHECK_EQ_INT(idx[0], 10); /* the escaped "\u0069p", last */
    CHECK_EQ_INT(doc.tok[idx[0]].type, JSON_ARRAY);
    CHECK_EQ_INT(idx[5], -1);

    check_case("json_members: nested members are not the object's own");
    CHECK_EQ_INT(parse(S("{\"x\":{\"ip\":3,\"xy\":[{\"xy\":1}]}}")), RC_OK);
    json_members(&doc, 0, &set, idx);
    for (int k = 0; k < N; k++)
        CHECK_EQ_INT(idx[k], -1);
    json_members(&doc, 2, &set, idx);
    CHECK_EQ_INT(idx[0], 4);
    CHECK_EQ_INT(idx[6], 6);

    check_case("json_members on a token that is not an object or out of range: all -1");
    CHECK_EQ_INT(parse(S("[\"ip\",1]")), RC_OK);
    json_members(&doc, 0, &set, idx);
    CHECK_EQ_INT(idx[0], -1);
    json_members(&doc, 99, &set, idx);
    CHECK_EQ_INT(idx[6], -1);

    check_case("json_short_eq at every length up to 40");
    char a[41], b[41];
    for (size_t n = 0; n <= 40; n++) {
        for (size_t i = 0; i < n; i++)
            a[i] = b[i] = (char)('a' + i % 26);
        CHECK_EQ_INT(json_short_eq(a, b, n), 1);
        for (size_t i = 0; i < n; i++) {
            b[i] ^= 1;
            CHECK_EQ_INT(json_short_eq(a, b, n), 0);
            b[i] ^= 1;
        }
    }
}

static void test_string(void)
{
    static const struct {
        const char *in; /* one string token */
        size_t len;
        const char *want;
        size_t want_len;
    } rows[] = {
        {S("\"abc\""), S("abc")},
        {S("\"\""), S("")},
        {S("\"a\\\"b\\\\c\\/d\\be\\ff\\ng\\rh\\ti\""), S("a\"b\\c/d\be\ff\ng\rh\ti")},
        {S("\"\\u0041\\u00e9\\u20AC\""), S("A\xc3\xa9\xe2\x82\xac")},
        {S("\"\\u07ff\\u0800\\uffff\""), S("\xdf\xbf\xe0\xa0\x80\xef\xbf\xbf")},
        {S("\"\\uD83D\\uDE00!\""), S("\xf0\x9f\x98\x80!")},
        {S("\"\\uDBFF\\uDFFF\""), S("\xf4\x8f\xbf\xbf")},
        {S("\"\\uD800\\uDC00\""), S("\xf0\x90\x80\x80")},
        {S("\"\\uD800\""), S("\xef\xbf\xbd")},
        {S("\"\\uDC00x\""), S("\xef\xbf\xbdx")},
        {S("\"\\uD83D\\u0041\""), S("\xef\xbf\xbd"
                                    "A")},
        {S("\"\\uD83D\\uD83D\\uDE00\""), S("\xef\xbf\xbd\xf0\x9f\x98\x80")},
        {S("\"\\u0000\""), S("\0")},
        {S("\"a\\u0000b\""), S("a\0b")},
        {S("\"\xc3\xa9\\n\xff\""), S("\xc3\xa9\n\xff")}, /* raw bytes are kept as they are */
    };
    struct buf scratch;
    buf_init(&scratch, 1 << 20);
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        const char *out = NULL;
        size_t n = 99;
        check_case("json_string row %zu", i);
        CHECK_EQ_INT(parse(rows[i].in, rows[i].len), RC_OK);
        buf_reset(&scratch);
        CHECK_EQ_INT(json_string(&doc, 0, &scratch, &out, &n), RC_OK);
        CHECK_EQ_INT(n, rows[i].want_len);
        CHECK(out && memcmp(out, rows[i].want, rows[i].want_len) == 0);
        CHECK(n <= rows[i].len - 2);
        if (doc.tok[0].flags & JSON_ESCAPED)
            CHECK(out == scratch.data && scratch.len == n);
        else
            CHECK(out == doc.text + 1 && scratch.len == 0);
    }

    check_case("json_string on a non-string");
    CHECK_EQ_INT(parse(S("[1]")), RC_OK);
    const char *out;
    size_t n;
    CHECK_EQ_INT(json_string(&doc, 1, &scratch, &out, &n), RC_INVALID);
    CHECK_EQ_INT(json_string(&doc, 0, &scratch, &out, &n), RC_INVALID);
    CHECK_EQ_INT(json_string(&doc, 5, &scratch, &out, &n), RC_INVALID);

    check_case("json_string views stay put after one reservation");
    const char *in = "[\"a\\nb\",\"plain\",\"\\u00e9\\u00e9\",\"x\\ty\"]";
    CHECK_EQ_INT(parse(in, strlen(in)), RC_OK);
    buf_free(&scratch);
    CHECK_EQ_INT(buf_reserve(&scratch, doc.len), RC_OK);
    const char *base = scratch.data, *v[4];
    size_t vl[4];
    for (uint32_t k = 0; k < 4; k++)
        CHECK_EQ_INT(json_string(&doc, k + 1, &scratch, &v[k], &vl[k]), RC_OK);
    CHECK(scratch.data == base);
    CHECK(vl[0] == 3 && memcmp(v[0], "a\nb", 3) == 0);
    CHECK(vl[1] == 5 && memcmp(v[1], "plain", 5) == 0);
    CHECK(vl[2] == 4 && memcmp(v[2], "\xc3\xa9\xc3\xa9", 4) == 0);
    CHECK(vl[3] == 3 && memcmp(v[3], "x\ty", 3) == 0);

    check_case("json_string reports the scratch buffer's cap");
    struct buf tiny;
    buf_init(&tiny, 2);
    CHECK_EQ_INT(json_string(&doc, 1, &tiny, &out, &n), RC_TOOBIG);
    buf_free(&tiny);
    buf_free(&scratch);
}

/* What a stream callback saw of each element, and what it asked for. */
struct seen {
    int reply;   /* JSON_ELEM_NEXT, _FORGET or _STOP from the call numbered stop_at on */
    int stop_at; /* -1: never stop */
    int calls;
    uint32_t ntok[8];  /* doc->ntok at each call */
    char first[8][16]; /* the source text of each element's first token */
};

static int on_elem(void *ctx, const struct json_doc *d, uint32_t array, uint32_t elem)
{
    struct seen *sn = ctx;
    const struct json_tok *t = &d->tok[elem];
    (void)array;
    if (sn->calls < 8) {
        size_t n = t->end - t->start;
        n = n < 15 ? n : 15;
        memcpy(sn->first[sn->calls], d->text + t->start, n);
        sn->first[sn->calls][n] = '\0';
        sn->ntok[sn->calls] = d->ntok;
    }
    sn->calls++;
    return sn->stop_at >= 0 && sn->calls > sn->stop_at ? JSON_ELEM_STOP : sn->reply;
}

/* json_parse_stream hands out each element once complete; with
 * JSON_ELEM_FORGET its tokens are reused, and the finished document still
 * answers json_get for the members around the array and keeps the array's
 * count. */
static void test_stream(void)
{
    static const struct json_name recs = {"r", 1};
    static const char in[] = "{\"a\":0,\"r\":[{\"x\":[1,2]},7,\"s\",{}],\"b\":\"c\"}";
    struct json_doc d;

    for (int reply = JSON_ELEM_NEXT; reply <= JSON_ELEM_FORGET; reply++) {
        /* JSON_ELEM_STOP: the first call goes on, the second stops. */
        struct seen sn = {.reply = reply == JSON_ELEM_STOP ? JSON_ELEM_NEXT : reply,
                          .stop_at = reply == JSON_ELEM_STOP ? 1 : -1};
        check_case("stream, reply %d", reply);
        json_init(&d);
        CHECK(json_parse_stream(&d, in, sizeof in - 1, &recs, on_elem, &sn, err) == RC_OK);
        CHECK_EQ_INT(sn.calls, reply == JSON_ELEM_STOP ? 2 : 4);
        CHECK_EQ_STR(sn.first[0], "{\"x\":[1,2]}");
        CHECK_EQ_STR(sn.first[1], "7");
        if (reply != JSON_ELEM_STOP) {
            CHECK_EQ_STR(sn.first[2], "s"); /* a string token spans its content */
            CHECK_EQ_STR(sn.first[3], "{}");
        }
        /* root, "a", 0, "r", the array: 5 tokens before any element; the
         * first element is 5 tokens, the others 1 */
        if (reply == JSON_ELEM_FORGET)
            for (int i = 0; i < 4; i++)
                CHECK_EQ_INT((int)sn.ntok[i], 5 + (i == 0 ? 5 : 1));
        else if (reply == JSON_ELEM_NEXT)
            CHECK_EQ_INT((int)sn.ntok[3], 5 + 5 + 1 + 1 + 1);
        CHECK_EQ_INT((int)d.ntok, reply == JSON_ELEM_FORGET ? 7 : 15);
        long r = json_get(&d, 0, "r"), b = json_get(&d, 0, "b"), a = json_get(&d, 0, "a");
        CHECK(r >= 0 && d.tok[r].type == JSON_ARRAY && d.tok[r].count == 4);
        CHECK(b >= 0 && d.tok[b].type == JSON_STRING && json_streq(&d, (uint32_t)b, "c", 1));
        CHECK(a >= 0 && d.tok[a].type == JSON_NUMBER);
        json_free(&d);
    }
}

int main(void)
{
    json_init(&doc);
    test_accept();
    test_reject();
    test_depth();
    test_flags();
    test_byte_sweep();
    test_tokens();
    test_prefixes();
    test_get();
    test_members();
    test_string();
    test_stream();
    json_free(&doc);
    return check_finish();
}
