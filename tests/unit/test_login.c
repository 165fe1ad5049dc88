/* test_login.c - every rule of docs/behaviour.md, "Field rules": one row per case, each
 * asserting the exact reason code and, for valid bodies, every column.
 * Bodies are parsed from a copy that ends at a guard page. */
#include "check.h"

#include "login.h"

#define NOW 1700000000000LL /* 2023-11-14T22:13:20Z: day 19675 */
#define NOW_DAY 19675

/* Optional expectations, set with these macros in a row. */
#define SENT(ms) .has_sent = 1, .sent = (ms)
#define AV(v) .has_av = 1, .av = (v)
#define DATE(d) .has_date = 1, .date = (d)
#define FILL(u, n) .unit = (u), .reps = (n)
#define RAW(lit) .body = (lit), .len = sizeof(lit) - 1 /* a body holding NUL bytes */

static const struct row {
    const char *name;
    const char *body; /* with FILL: a printf format whose one %s is unit x reps */
    size_t len;       /* RAW bodies: exact length; else strlen */
    const char *unit;
    int reps;
    int no_body;    /* body is NULL */
    unsigned flags; /* the SQS body string's flags */
    int has_sent, sent_bad;
    long long sent;
    long long now; /* 0: NOW */
    enum login_reason want;
    /* Expected row when want == LOGIN_OK; NULL means SQL NULL, "=" the fill. */
    const char *user_id, *device_type, *locale, *device_id, *ip;
    int has_av, has_date;
    long long av;
    int date;
} rows[] = {
    /* --- the body itself ------------------------------------------------------------------ */
    {"no body string", .no_body = 1, .want = LOGIN_BODY_MISSING},
    {"no body, even with a bad timestamp", .no_body = 1, .sent_bad = 1, .want = LOGIN_BODY_MISSING},
    {"body flagged U+0000 by the event", "{\"user_id\": \"a\"}", .flags = JSON_HAS_NUL,
     .want = LOGIN_BODY_NUL},
    {"body flagged U+0000 and bad UTF-8", "{\"user_id\": \"a\"}",
     .flags = JSON_HAS_NUL | JSON_BAD_UTF8, .want = LOGIN_BODY_NUL},
    {"body flagged bad UTF-8 by the event", "{\"user_id\": \"a\"}", .flags = JSON_BAD_UTF8,
     .want = LOGIN_BODY_BAD_UTF8},
    {"raw NUL inside a value", RAW("{\"user_id\": \"a\0b\"}"), .want = LOGIN_BODY_NUL},
    {"raw NUL outside any string", RAW("{\"user_id\": \"a\"}\0"), .want = LOGIN_BODY_NUL},
    {"raw NUL in a malformed body", RAW("{\0"), .want = LOGIN_BODY_NUL},
    {"escaped U+0000 in user_id", "{\"user_id\": \"a\\u0000\"}", .want = LOGIN_BODY_NUL},
    {"escaped U+0000 in an unknown field", "{\"user_id\": \"a\", \"x\": [\"\\u0000\"]}",
     .want = LOGIN_BODY_NUL},
    {"escaped U+0000 in a key", "{\"user_id\": \"a\", \"\\u0000\": 1}", .want = LOGIN_BODY_NUL},
    {"U+0000 wins over bad UTF-8", "{\"a\": \"\xff\", \"b\": \"\\u0000\"}", .want = LOGIN_BODY_NUL},
    {"invalid UTF-8 byte in a value", "{\"user_id\": \"a\xff\"}", .want = LOGIN_BODY_BAD_UTF8},
    {"overlong UTF-8 in a value", "{\"user_id\": \"\xc0\xaf\"}", .want = LOGIN_BODY_BAD_UTF8},
    {"UTF-8-encoded surrogate", "{\"user_id\": \"\xed\xa0\x80\"}", .want = LOGIN_BODY_BAD_UTF8},
    {"escaped lone surrogate", "{\"user_id\": \"\\ud83d\"}", .want = LOGIN_BODY_BAD_UTF8},
    {"bad UTF-8 in an unknown key", "{\"\xfe\": 1, \"user_id\": \"a\"}",
     .want = LOGIN_BODY_BAD_UTF8},
    {"empty body", "", .want = LOGIN_BODY_NOT_JSON},
    {"whitespace body", "  \n", .want = LOGIN_BODY_NOT_JSON},
    {"plain text", "not json", .want = LOGIN_BODY_NOT_JSON},
    {"Python repr", "{'user_id': 'a'}", .want = LOGIN_BODY_NOT_JSON},
    {"truncated", "{\"user_id\": \"a\"", .want = LOGIN_BODY_NOT_JSON},
    {"trailing comma", "{\"user_id\": \"a\",}", .want = LOGIN_BODY_NOT_JSON},
    {"two objects", "{\"user_id\": \"a\"}{}", .want = LOGIN_BODY_NOT_JSON},
    {"raw tab in a string", "{\"user_id\": \"a\tb\"}", .want = LOGIN_BODY_NOT_JSON},
    {"NaN", "{\"user_id\": \"a\", \"app_version\": NaN}", .want = LOGIN_BODY_NOT_JSON},
    {"bad byte outside strings", "{\"user_id\": \"a\"}\xff", .want = LOGIN_BODY_NOT_JSON},
    {"malformed wins over bad UTF-8 inside", "{\"a\": \"\xff\"", .want = LOGIN_BODY_NOT_JSON},
    {"array", "[{\"user_id\": \"a\"}]", .want = LOGIN_BODY_NOT_OBJECT},
    {"string", "\"user_id\"", .want = LOGIN_BODY_NOT_OBJECT},
    {"number", "42", .want = LOGIN_BODY_NOT_OBJECT},
    {"null", "null", .want = LOGIN_BODY_NOT_OBJECT},
    {"true", "true", .want = LOGIN_BODY_NOT_OBJECT},

    /* --- user_id ---------------------------------------------------------------------------- */
    {"empty object", "{}", .want = LOGIN_USER_ID_MISSING},
    {"not a login message", "{\"foo\": \"oops_wrong_msg_type\", \"bar\": \"123\"}",
     .want = LOGIN_USER_ID_MISSING},
    {"user_id null", "{\"user_id\": null}", .want = LOGIN_USER_ID_MISSING},
    {"USER_ID is not user_id", "{\"USER_ID\": \"a\"}", .want = LOGIN_USER_ID_MISSING},
    {"user_id with a space in the key", "{\"user_id \": \"a\"}", .want = LOGIN_USER_ID_MISSING},
    {"user_id only nested", "{\"meta\": {\"user_id\": \"a\"}}", .want = LOGIN_USER_ID_MISSING},
    {"user_id last duplicate null", "{\"user_id\": \"a\", \"user_id\": null}",
     .want = LOGIN_USER_ID_MISSING},
    {"user_id a number", "{\"user_id\": 123}", .want = LOGIN_USER_ID_TYPE},
    {"user_id true", "{\"user_id\": true}", .want = LOGIN_USER_ID_TYPE},
    {"user_id an object", "{\"user_id\": {\"id\": \"a\"}}", .want = LOGIN_USER_ID_TYPE},
    {"user_id an array", "{\"user_id\": [\"a\"]}", .want = LOGIN_USER_ID_TYPE},
    {"user_id empty", "{\"user_id\": \"\"}", .want = LOGIN_USER_ID_LENGTH},
    {"user_id 129 ASCII", "{\"user_id\": \"%s\"}", FILL("x", 129), .want = LOGIN_USER_ID_LENGTH},
    {"user_id 129 two-byte", "{\"user_id\": \"%s\"}", FILL("\xc3\xa9", 129),
     .want = LOGIN_USER_ID_LENGTH},
    {"user_id 129 four-byte", "{\"user_id\": \"%s\"}", FILL("\xf0\x9f\x98\x80", 129),
     .want = LOGIN_USER_ID_LENGTH},
    {"user_id 129 escaped", "{\"user_id\": \"%s\"}", FILL("\\u00e9", 129),
     .want = LOGIN_USER_ID_LENGTH},
    {"user_id 1 character", "{\"user_id\": \"a\"}", .want = LOGIN_OK, .user_id = "a"},
    {"user_id 128 ASCII", "{\"user_id\": \"%s\"}", FILL("x", 128), .want = LOGIN_OK,
     .user_id = "="},
    {"user_id 128 two-byte (256 bytes)", "{\"user_id\": \"%s\"}", FILL("\xc3\xa9", 128),
     .want = LOGIN_OK, .user_id = "="},
    {"user_id 128 four-byte (512 bytes)", "{\"user_id\": \"%s\"}", FILL("\xf0\x9f\x98\x80", 128),
     .want = LOGIN_OK, .user_id = "="},
    {"user_id 128 escaped surrogate pairs", "{\"user_id\": \"%s\"}", FILL("\\ud83d\\ude00", 128),
     .want = LOGIN_OK, .user_id = "="},
    {"user_id escaped key", "{\"user\\u005fid\": \"a\\/b\"}", .want = LOGIN_OK, .user_id = "a/b"},
    {"user_id last duplicate wins", "{\"user_id\": \"a\", \"user_id\": \"b\"}", .want = LOGIN_OK,
     .user_id = "b"},
    {"user_id duplicate repairs a bad one", "{\"user_id\": 5, \"user_id\": \"c\"}",
     .want = LOGIN_OK, .user_id = "c"},
    {"user_id 128 mixed widths", "{\"user_id\": \"%s\"}", FILL("a\xc3\xa9", 64), .want = LOGIN_OK,
     .user_id = "="},
    {"user_id 130 mixed widths", "{\"user_id\": \"%s\"}", FILL("a\xc3\xa9", 65),
     .want = LOGIN_USER_ID_LENGTH},
    {"user_id 128 of 1+4 bytes", "{\"user_id\": \"%s\"}", FILL("b\xf0\x9f\x98\x80", 64),
     .want = LOGIN_OK, .user_id = "="},
    {"same-length near-miss keys are unknown keys",
     "{\"user_id\": \"a\", \"Device_type\": 1, \"app_versioN\": true, \"device_tyPE\": 1, "
     "\"xp\": 1, \"IP\": 1, \"lokale\": 1, \"device_ix\": 1, \"user_iD\": 1}",
     .want = LOGIN_OK, .user_id = "a"},
    {"escaped near-miss keys are unknown keys",
     "{\"user_id\": \"a\", \"\\u0069P\": 1, \"app\\u005fversion \": true}", .want = LOGIN_OK,
     .user_id = "a"},
    {"every known key escaped",
     "{\"\\u0075ser_id\": \"a\", \"\\u0064evice_type\": \"t\", \"\\u006cocale\": \"l\", "
     "\"\\u0069p\": \"1.2.3.4\", \"\\u0064evice_id\": \"d\", \"\\u0061pp_version\": \"1\"}",
     .want = LOGIN_OK, .user_id = "a", .device_type = "t", .locale = "l", .device_id = "d",
     .ip = "1.2.3.4", AV(1000000)},
    {"user_id whitespace kept as is", "{\"user_id\": \" a \"}", .want = LOGIN_OK, .user_id = " a "},

    /* --- device_type ------------------------------------------------------------------------ */
    {"device_type a number", "{\"user_id\": \"a\", \"device_type\": 1}",
     .want = LOGIN_DEVICE_TYPE_TYPE},
    {"device_type false", "{\"user_id\": \"a\", \"device_type\": false}",
     .want = LOGIN_DEVICE_TYPE_TYPE},
    {"device_type an object", "{\"user_id\": \"a\", \"device_type\": {}}",
     .want = LOGIN_DEVICE_TYPE_TYPE},
    {"device_type 33", "{\"user_id\": \"a\", \"device_type\": \"%s\"}", FILL("d", 33),
     .want = LOGIN_DEVICE_TYPE_LENGTH},
    {"device_type 33 three-byte", "{\"user_id\": \"a\", \"device_type\": \"%s\"}",
     FILL("\xe2\x82\xac", 33), .want = LOGIN_DEVICE_TYPE_LENGTH},
    {"device_type 32 three-byte", "{\"user_id\": \"a\", \"device_type\": \"%s\"}",
     FILL("\xe2\x82\xac", 32), .want = LOGIN_OK, .user_id = "a", .device_type = "="},
    {"device_type empty is '' not NULL", "{\"user_id\": \"a\", \"device_type\": \"\"}",
     .want = LOGIN_OK, .user_id = "a", .device_type = ""},
    {"device_type null", "{\"user_id\": \"a\", \"device_type\": null}", .want = LOGIN_OK,
     .user_id = "a"},

    /* --- locale ----------------------------------------------------------------------------- */
    {"locale a number", "{\"user_id\": \"a\", \"locale\": 7}", .want = LOGIN_LOCALE_TYPE},
    {"locale an array", "{\"user_id\": \"a\", \"locale\": [\"RU\"]}", .want = LOGIN_LOCALE_TYPE},
    {"locale 33", "{\"user_id\": \"a\", \"locale\": \"%s\"}", FILL("l", 33),
     .want = LOGIN_LOCALE_LENGTH},
    {"locale 32", "{\"user_id\": \"a\", \"locale\": \"%s\"}", FILL("l", 32), .want = LOGIN_OK,
     .user_id = "a", .locale = "="},
    {"locale null is NULL, not None", "{\"user_id\": \"a\", \"locale\": null}", .want = LOGIN_OK,
     .user_id = "a", .locale = NULL},
    {"locale the text None is kept", "{\"user_id\": \"a\", \"locale\": \"None\"}", .want = LOGIN_OK,
     .user_id = "a", .locale = "None"},
    {"device_type wins over locale", "{\"user_id\": \"a\", \"locale\": 1, \"device_type\": 1}",
     .want = LOGIN_DEVICE_TYPE_TYPE},

    /* --- ip --------------------------------------------------------------------------------- */
    {"ip a number", "{\"user_id\": \"a\", \"ip\": 3232235777}", .want = LOGIN_IP_TYPE},
    {"ip an array", "{\"user_id\": \"a\", \"ip\": [\"1.2.3.4\"]}", .want = LOGIN_IP_TYPE},
    {"ip an object", "{\"user_id\": \"a\", \"ip\": {\"v4\": \"1.2.3.4\"}}", .want = LOGIN_IP_TYPE},
    {"ip empty", "{\"user_id\": \"a\", \"ip\": \"\"}", .want = LOGIN_IP_INVALID},
    {"ip leading space", "{\"user_id\": \"a\", \"ip\": \" 1.2.3.4\"}", .want = LOGIN_IP_INVALID},
    {"ip trailing space", "{\"user_id\": \"a\", \"ip\": \"1.2.3.4 \"}", .want = LOGIN_IP_INVALID},
    {"ip trailing newline", "{\"user_id\": \"a\", \"ip\": \"1.2.3.4\\n\"}",
     .want = LOGIN_IP_INVALID},
    {"ip three parts", "{\"user_id\": \"a\", \"ip\": \"1.2.3\"}", .want = LOGIN_IP_INVALID},
    {"ip five parts", "{\"user_id\": \"a\", \"ip\": \"1.2.3.4.5\"}", .want = LOGIN_IP_INVALID},
    {"ip octet 256", "{\"user_id\": \"a\", \"ip\": \"256.1.1.1\"}", .want = LOGIN_IP_INVALID},
    {"ip leading zero octet", "{\"user_id\": \"a\", \"ip\": \"01.2.3.4\"}",
     .want = LOGIN_IP_INVALID},
    {"ip hex", "{\"user_id\": \"a\", \"ip\": \"0x7f.0.0.1\"}", .want = LOGIN_IP_INVALID},
    {"ip zone id", "{\"user_id\": \"a\", \"ip\": \"fe80::1%eth0\"}", .want = LOGIN_IP_INVALID},
    {"ip brackets", "{\"user_id\": \"a\", \"ip\": \"[::1]\"}", .want = LOGIN_IP_INVALID},
    {"ip with a port", "{\"user_id\": \"a\", \"ip\": \"1.2.3.4:80\"}", .want = LOGIN_IP_INVALID},
    {"ip two ::", "{\"user_id\": \"a\", \"ip\": \"2001:db8::1::1\"}", .want = LOGIN_IP_INVALID},
    {"ip bad hex", "{\"user_id\": \"a\", \"ip\": \"2001:db8::g\"}", .want = LOGIN_IP_INVALID},
    {"ip nine groups", "{\"user_id\": \"a\", \"ip\": \"1:2:3:4:5:6:7:8:9\"}",
     .want = LOGIN_IP_INVALID},
    {"ip a host name", "{\"user_id\": \"a\", \"ip\": \"localhost\"}", .want = LOGIN_IP_INVALID},
    {"ip 46 bytes", "{\"user_id\": \"a\", \"ip\": \"%s\"}", FILL("0", 46),
     .want = LOGIN_IP_INVALID},
    {"ip very long", "{\"user_id\": \"a\", \"ip\": \"%s\"}", FILL("1.2.3.4", 100),
     .want = LOGIN_IP_INVALID},
    {"ip of multi-byte digits", "{\"user_id\": \"a\", \"ip\": \"\xef\xbc\x91.2.3.4\"}",
     .want = LOGIN_IP_INVALID},
    {"ip IPv4", "{\"user_id\": \"a\", \"ip\": \"199.172.111.135\"}", .want = LOGIN_OK,
     .user_id = "a", .ip = "199.172.111.135"},
    {"ip 255.255.255.255", "{\"user_id\": \"a\", \"ip\": \"255.255.255.255\"}", .want = LOGIN_OK,
     .user_id = "a", .ip = "255.255.255.255"},
    {"ip one, two and three digits", "{\"user_id\": \"a\", \"ip\": \"9.10.100.200\"}",
     .want = LOGIN_OK, .user_id = "a", .ip = "9.10.100.200"},
    {"ip 0.0.0.0", "{\"user_id\": \"a\", \"ip\": \"0.0.0.0\"}", .want = LOGIN_OK, .user_id = "a",
     .ip = "0.0.0.0"},
    {"ip escaped dot", "{\"user_id\": \"a\", \"ip\": \"10\\u002e0.0.1\"}", .want = LOGIN_OK,
     .user_id = "a", .ip = "10.0.0.1"},
    {"ip IPv6 upper case", "{\"user_id\": \"a\", \"ip\": \"2001:DB8::1\"}", .want = LOGIN_OK,
     .user_id = "a", .ip = "2001:db8::1"},
    {"ip IPv6 uncompressed", "{\"user_id\": \"a\", \"ip\": \"2001:db8:0:0:0:0:0:1\"}",
     .want = LOGIN_OK, .user_id = "a", .ip = "2001:db8::1"},
    {"ip IPv6 leading zeros",
     "{\"user_id\": \"a\", \"ip\": \"2001:0db8:0000:0000:0000:ff00:0042:8329\"}", .want = LOGIN_OK,
     .user_id = "a", .ip = "2001:db8::ff00:42:8329"},
    {"ip IPv6 loopback", "{\"user_id\": \"a\", \"ip\": \"0:0:0:0:0:0:0:1\"}", .want = LOGIN_OK,
     .user_id = "a", .ip = "::1"},
    {"ip IPv6 unspecified", "{\"user_id\": \"a\", \"ip\": \"::\"}", .want = LOGIN_OK,
     .user_id = "a", .ip = "::"},
    {"ip IPv6 link-local", "{\"user_id\": \"a\", \"ip\": \"FE80::0001\"}", .want = LOGIN_OK,
     .user_id = "a", .ip = "fe80::1"},
    {"ip IPv4-mapped stays IPv6", "{\"user_id\": \"a\", \"ip\": \"::ffff:1.2.3.4\"}",
     .want = LOGIN_OK, .user_id = "a", .ip = "::ffff:1.2.3.4"},
    {"ip IPv4-mapped in hex", "{\"user_id\": \"a\", \"ip\": \"0:0:0:0:0:FFFF:0102:0304\"}",
     .want = LOGIN_OK, .user_id = "a", .ip = "::ffff:1.2.3.4"},
    {"ip longest text (45 bytes)",
     "{\"user_id\": \"a\", \"ip\": \"ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255\"}",
     .want = LOGIN_OK, .user_id = "a", .ip = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"},
    {"ip null", "{\"user_id\": \"a\", \"ip\": null}", .want = LOGIN_OK, .user_id = "a"},
    {"ip only nested", "{\"user_id\": \"a\", \"meta\": {\"ip\": \"bad\"}}", .want = LOGIN_OK,
     .user_id = "a"},
    {"ip wins over device_id", "{\"user_id\": \"a\", \"device_id\": 1, \"ip\": \"x\"}",
     .want = LOGIN_IP_INVALID},

    /* --- device_id -------------------------------------------------------------------------- */
    {"device_id a number", "{\"user_id\": \"a\", \"device_id\": 593475928}",
     .want = LOGIN_DEVICE_ID_TYPE},
    {"device_id an object", "{\"user_id\": \"a\", \"device_id\": {}}",
     .want = LOGIN_DEVICE_ID_TYPE},
    {"device_id empty", "{\"user_id\": \"a\", \"device_id\": \"\"}",
     .want = LOGIN_DEVICE_ID_LENGTH},
    {"device_id 129", "{\"user_id\": \"a\", \"device_id\": \"%s\"}", FILL("9", 129),
     .want = LOGIN_DEVICE_ID_LENGTH},
    {"device_id 128 four-byte", "{\"user_id\": \"a\", \"device_id\": \"%s\"}",
     FILL("\xf0\x9f\x98\x80", 128), .want = LOGIN_OK, .user_id = "a", .device_id = "="},
    {"device_id ddd-dd-dddd", "{\"user_id\": \"a\", \"device_id\": \"593-47-5928\"}",
     .want = LOGIN_OK, .user_id = "a", .device_id = "593-47-5928"},
    {"device_id null", "{\"user_id\": \"a\", \"device_id\": null}", .want = LOGIN_OK,
     .user_id = "a"},

/* --- app_version ------------------------------------------------------------------------ */
#define APP(v) "{\"user_id\": \"a\", \"app_version\": " v "}"
    {"app_version \"2.3.0\"", APP("\"2.3.0\""), .want = LOGIN_OK, .user_id = "a", AV(2003000)},
    {"app_version \"0.96\"", APP("\"0.96\""), .want = LOGIN_OK, .user_id = "a", AV(96000)},
    {"app_version \"3.7\"", APP("\"3.7\""), .want = LOGIN_OK, .user_id = "a", AV(3007000)},
    {"app_version \"2\"", APP("\"2\""), .want = LOGIN_OK, .user_id = "a", AV(2000000)},
    {"app_version 2", APP("2"), .want = LOGIN_OK, .user_id = "a", AV(2000000)},
    {"app_version 0", APP("0"), .want = LOGIN_OK, .user_id = "a", AV(0)},
    {"app_version \"0\"", APP("\"0\""), .want = LOGIN_OK, .user_id = "a", AV(0)},
    {"app_version \"0.0.0\"", APP("\"0.0.0\""), .want = LOGIN_OK, .user_id = "a", AV(0)},
    {"app_version \"0.0.1\"", APP("\"0.0.1\""), .want = LOGIN_OK, .user_id = "a", AV(1)},
    {"app_version \"1.999.999\"", APP("\"1.999.999\""), .want = LOGIN_OK, .user_id = "a",
     AV(1999999)},
    {"app_version \"2147.483.647\"", APP("\"2147.483.647\""), .want = LOGIN_OK, .user_id = "a",
     AV(2147483647)},
    {"app_version 2147", APP("2147"), .want = LOGIN_OK, .user_id = "a", AV(2147000000)},
    {"app_version \"2.03\" (leading zero)", APP("\"2.03\""), .want = LOGIN_OK, .user_id = "a",
     AV(2003000)},
    {"app_version \"01.2.003\"", APP("\"01.2.003\""), .want = LOGIN_OK, .user_id = "a",
     AV(1002003)},
    {"app_version escaped digits", APP("\"\\u0032.3\""), .want = LOGIN_OK, .user_id = "a",
     AV(2003000)},
    {"app_version 22 chars of leading zeros (fuzz)", APP("\"0000000000000000000375\""),
     .want = LOGIN_OK, .user_id = "a", AV(375000000)},
    {"app_version 300 leading zeros (fuzz)", "{\"user_id\": \"a\", \"app_version\": \"%s7\"}",
     FILL("0", 300), .want = LOGIN_OK, .user_id = "a", AV(7000000)},
    {"app_version leading zeros in every part", APP("\"0000000000002.0000000000003.000004\""),
     .want = LOGIN_OK, .user_id = "a", AV(2003004)},
    {"app_version null", APP("null"), .want = LOGIN_OK, .user_id = "a"},
    {"app_version \"2147.483.648\"", APP("\"2147.483.648\""), .want = LOGIN_APP_VERSION_RANGE},
    {"app_version \"2148\"", APP("\"2148\""), .want = LOGIN_APP_VERSION_RANGE},
    {"app_version 2148", APP("2148"), .want = LOGIN_APP_VERSION_RANGE},
    {"app_version \"1.1000\"", APP("\"1.1000\""), .want = LOGIN_APP_VERSION_RANGE},
    {"app_version \"1.2.1000\"", APP("\"1.2.1000\""), .want = LOGIN_APP_VERSION_RANGE},
    {"app_version 20 digits", APP("\"99999999999999999999\""), .want = LOGIN_APP_VERSION_RANGE},
    {"app_version 20-digit minor", APP("\"1.99999999999999999999\""),
     .want = LOGIN_APP_VERSION_RANGE},
    {"app_version huge integer", APP("99999999999999999999"), .want = LOGIN_APP_VERSION_RANGE},
    {"app_version -1", APP("-1"), .want = LOGIN_APP_VERSION_RANGE},
    {"app_version -0", APP("-0"), .want = LOGIN_APP_VERSION_RANGE},
    {"app_version 2.5", APP("2.5"), .want = LOGIN_APP_VERSION_FORMAT},
    {"app_version 2.0", APP("2.0"), .want = LOGIN_APP_VERSION_FORMAT},
    {"app_version 1e3", APP("1e3"), .want = LOGIN_APP_VERSION_FORMAT},
    {"app_version 1E+0", APP("1E+0"), .want = LOGIN_APP_VERSION_FORMAT},
    {"app_version -1.5", APP("-1.5"), .want = LOGIN_APP_VERSION_FORMAT},
    {"app_version \"2.3.0-beta\"", APP("\"2.3.0-beta\""), .want = LOGIN_APP_VERSION_FORMAT},
    {"app_version \"\"", APP("\"\""), .want = LOGIN_APP_VERSION_FORMAT},
    {"app_version \"1..2\"", APP("\"1..2\""), .want = LOGIN_APP_VERSION_FORMAT},
    {"app_version \" 1.2\"", APP("\" 1.2\""), .want = LOGIN_APP_VERSION_FORMAT},
    {"app_version \"1.2 \"", APP("\"1.2 \""), .want = LOGIN_APP_VERSION_FORMAT},
    {"app_version \"1.2.3.4\"", APP("\"1.2.3.4\""), .want = LOGIN_APP_VERSION_FORMAT},
    {"app_version \"1.\"", APP("\"1.\""), .want = LOGIN_APP_VERSION_FORMAT},
    {"app_version \".1\"", APP("\".1\""), .want = LOGIN_APP_VERSION_FORMAT},
    {"app_version \"v1.2\"", APP("\"v1.2\""), .want = LOGIN_APP_VERSION_FORMAT},
    {"app_version \"1,2\"", APP("\"1,2\""), .want = LOGIN_APP_VERSION_FORMAT},
    {"app_version \"+1\"", APP("\"+1\""), .want = LOGIN_APP_VERSION_FORMAT},
    {"app_version \"-1\"", APP("\"-1\""), .want = LOGIN_APP_VERSION_FORMAT},
    {"app_version \"1.-2\"", APP("\"1.-2\""), .want = LOGIN_APP_VERSION_FORMAT},
    {"app_version fullwidth digit", APP("\"\xef\xbc\x91.2\""), .want = LOGIN_APP_VERSION_FORMAT},
    {"app_version true", APP("true"), .want = LOGIN_APP_VERSION_TYPE},
    {"app_version false", APP("false"), .want = LOGIN_APP_VERSION_TYPE},
    {"app_version an object", APP("{\"major\": 2}"), .want = LOGIN_APP_VERSION_TYPE},
    {"app_version an array", APP("[\"2.3.0\"]"), .want = LOGIN_APP_VERSION_TYPE},
    {"device_id wins over app_version",
     "{\"user_id\": \"a\", \"app_version\": true, "
     "\"device_id\": \"\"}",
     .want = LOGIN_DEVICE_ID_LENGTH},
    {"user_id wins over everything", "{\"app_version\": true, \"ip\": \"x\"}",
     .want = LOGIN_USER_ID_MISSING},

    /* --- SentTimestamp and create_date ------------------------------------------------------ */
    {"SentTimestamp bad", "{\"user_id\": \"a\"}", .sent_bad = 1, .want = LOGIN_SENT_TIMESTAMP},
    {"app_version wins over SentTimestamp", APP("true"), .sent_bad = 1,
     .want = LOGIN_APP_VERSION_TYPE},
    {"create_date from SentTimestamp", "{\"user_id\": \"a\"}", SENT(1700000000000LL),
     .now = 1800000000000LL, .want = LOGIN_OK, .user_id = "a", DATE(19675)},
    {"create_date at the epoch", "{\"user_id\": \"a\"}", SENT(0), .want = LOGIN_OK, .user_id = "a",
     DATE(0)},
    {"create_date last ms of day 0", "{\"user_id\": \"a\"}", SENT(86399999), .want = LOGIN_OK,
     .user_id = "a", DATE(0)},
    {"create_date first ms of day 1", "{\"user_id\": \"a\"}", SENT(86400000), .want = LOGIN_OK,
     .user_id = "a", DATE(1)},
    {"create_date 9999-12-31", "{\"user_id\": \"a\"}", SENT(253402300799999LL), .want = LOGIN_OK,
     .user_id = "a", DATE(2932896)},
    {"create_date from now when absent", "{\"user_id\": \"a\"}", .want = LOGIN_OK, .user_id = "a",
     DATE(NOW_DAY)},
    {"create_date from now 2024-02-29", "{\"user_id\": \"a\"}", .now = 1709164800000LL,
     .want = LOGIN_OK, .user_id = "a", DATE(19782)},
    {"create_date from now before the epoch", "{\"user_id\": \"a\"}", .now = -1, .want = LOGIN_OK,
     .user_id = "a", DATE(-1)},

    /* --- whole messages --------------------------------------------------------------------- */
    {"the example of docs/behaviour.md (Input)",
     "{\"user_id\": \"424cdd21-063a-43a7-b91b-7ca1a833afae\", \"app_version\": \"2.3.0\",\n"
     " \"device_type\": \"android\", \"ip\": \"199.172.111.135\", \"locale\": \"RU\", "
     "\"device_id\": \"593-47-5928\"}",
     SENT(1700000000000LL), .want = LOGIN_OK, .user_id = "424cdd21-063a-43a7-b91b-7ca1a833afae",
     .device_type = "android", .locale = "RU", .device_id = "593-47-5928", .ip = "199.172.111.135",
     AV(2003000), DATE(19675)},
    {"typical with locale null and IPv6",
     "{\"user_id\":\"u1\",\"app_version\":\"0.96\",\"device_type\":\"ios\","
     "\"ip\":\"2001:DB8:0:0:8:800:200C:417A\",\"locale\":null,\"device_id\":\"111-22-3333\"}",
     .want = LOGIN_OK, .user_id = "u1", .device_type = "ios", .device_id = "111-22-3333",
     .ip = "2001:db8::8:800:200c:417a", AV(96000)},
    {"unknown keys are ignored",
     "{\"user_id\": \"a\", \"extra\": {\"ip\": 1, \"user_id\": []}, \"n\": [1, 2.5, null], "
     "\"Ip\": \"bad\"}",
     .want = LOGIN_OK, .user_id = "a"},
    {"keys in any order, escaped values",
     "{\"device_id\": \"d\\u00e9v\", \"locale\": \"fr\\/FR\", \"user_id\": \"\\u00e9\\t\"}",
     .want = LOGIN_OK, .user_id = "\xc3\xa9\t", .locale = "fr/FR", .device_id = "d\xc3\xa9v"},
};

/* Checks a (pointer, length) view against want: NULL means SQL NULL, "="
 * the row's fill text. */
static void check_view(const char *what, const char *got, size_t got_len, const char *want,
                       const char *fill)
{
    if (want && strcmp(want, "=") == 0)
        want = fill;
    if (!want) {
        if (got)
            check_fail_(__FILE__, __LINE__, what);
        return;
    }
    if (!got || got_len != strlen(want) || memcmp(got, want, got_len) != 0)
        check_fail_(__FILE__, __LINE__, what);
}

static void test_rows(void)
{
    static char body[8192], fill[4096];
    struct login_parser p;
    login_parser_init(&p);
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        const struct row *r = &rows[i];
        struct login_row row;
        size_t n = 0;
        const char *in = NULL;

        check_case("%s", r->name);
        fill[0] = '\0';
        if (r->unit) {
            size_t k = 0, u = strlen(r->unit);
            for (int j = 0; j < r->reps && k + u < sizeof fill; j++, k += u)
                memcpy(fill + k, r->unit, u);
            fill[k] = '\0';
            const char *hole = strstr(r->body, "%s"); /* splice, no non-literal format */
            size_t head = (size_t)(hole - r->body);
            n = head;
            memcpy(body, r->body, head);
            memcpy(body + n, fill, k);
            n += k;
            memcpy(body + n, hole + 2, strlen(hole + 2));
            n += strlen(hole + 2);
        } else if (!r->no_body) {
            n = r->len ? r->len : strlen(r->body);
            memcpy(body, r->body, n);
        }
        if (!r->no_body)
            in = check_guard(body, n);
        memset(&row, 0xa5, sizeof row);
        enum login_reason got = LOGIN__COUNT;
        CHECK_EQ_INT(login_parse(&p, in, n, r->flags, r->has_sent ? r->sent : -1, r->sent_bad,
                                 r->now ? r->now : NOW, &row, &got),
                     RC_OK);
        CHECK_EQ_STR(login_reason_code(got), login_reason_code(r->want));
        if (r->want != LOGIN_OK) {
            CHECK(row.user_id == NULL && row.has_ip == 0 && row.has_app_version == 0);
            continue;
        }
        const char *uid_fill = fill;
        if (r->unit && strcmp(r->unit, "\\ud83d\\ude00") == 0) {
            /* 128 escaped pairs decode to 128 four-byte characters */
            static char dec[600];
            for (int j = 0; j < 128; j++)
                memcpy(dec + 4 * j, "\xf0\x9f\x98\x80", 4);
            dec[512] = '\0';
            uid_fill = dec;
            check_view("user_id", row.user_id, row.user_id_len, "=", uid_fill);
        } else {
            check_view("user_id", row.user_id, row.user_id_len, r->user_id, fill);
        }
        check_view("device_type", row.device_type, row.device_type_len, r->device_type, fill);
        check_view("locale", row.locale, row.locale_len, r->locale, fill);
        check_view("device_id", row.device_id, row.device_id_len, r->device_id, fill);
        CHECK_EQ_INT(row.has_ip, r->ip != NULL);
        if (r->ip && row.has_ip)
            CHECK_EQ_STR(row.ip, r->ip);
        CHECK_EQ_INT(row.has_app_version, r->has_av);
        if (r->has_av)
            CHECK_EQ_INT(row.app_version, r->av);
        CHECK_EQ_INT(row.create_date, r->has_date ? r->date : NOW_DAY);
    }
    login_parser_free(&p);
}

static void test_codes(void)
{
    static const char *const want[LOGIN__COUNT] = {
        "ok",
        "body_missing",
        "body_invalid_utf8",
        "body_nul_character",
        "body_not_json",
        "body_not_object",
        "user_id_missing",
        "user_id_not_string",
        "user_id_length",
        "device_type_not_string",
        "device_type_length",
        "locale_not_string",
        "locale_length",
        "ip_not_string",
        "ip_invalid",
        "device_id_not_string",
        "device_id_length",
        "app_version_type",
        "app_version_format",
        "app_version_range",
        "sent_timestamp_invalid",
        "masked_value_too_long",
    };
    check_case("every reason has its stable code");
    for (int r = 0; r < LOGIN__COUNT; r++)
        CHECK_EQ_STR(login_reason_code((enum login_reason)r), want[r]);
    CHECK_EQ_STR(login_reason_code(LOGIN__COUNT), "internal_error");
    CHECK_EQ_STR(login_reason_code((enum login_reason) - 1), "internal_error");

    check_case("every reason but masked_value_too_long has a row in the table");
    int seen[LOGIN__COUNT] = {0};
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++)
        seen[rows[i].want] = 1;
    for (int r = 0; r < LOGIN__COUNT; r++)
        if (!seen[r] && r != LOGIN_MASKED_TOO_LONG)
            check_fail_(__FILE__, __LINE__, login_reason_code((enum login_reason)r));
}

static void test_reuse(void)
{
    struct login_parser p;
    struct login_row a, b;
    enum login_reason why;
    const char *b1 = "{\"user_id\": \"\\u00e9t\\u00e9\", \"locale\": \"x\\ty\"}";
    const char *b2 = "{\"user_id\": \"plain\"}";

    check_case("views point into the body or the parser's scratch");
    login_parser_init(&p);
    CHECK_EQ_INT(login_parse(&p, b1, strlen(b1), 0, -1, 0, NOW, &a, &why), RC_OK);
    CHECK_EQ_INT(why, LOGIN_OK);
    CHECK(a.user_id >= p.scratch.data && a.user_id < p.scratch.data + p.scratch.len);
    check_view("user_id", a.user_id, a.user_id_len, "\xc3\xa9t\xc3\xa9", NULL);
    check_view("locale", a.locale, a.locale_len, "x\ty", NULL);
    CHECK_EQ_INT(login_parse(&p, b2, strlen(b2), 0, -1, 0, NOW, &b, &why), RC_OK);
    CHECK_EQ_INT(why, LOGIN_OK);
    CHECK(b.user_id == b2 + 13);
    CHECK_EQ_INT(b.user_id_len, 5);

    check_case("a parser used on a big body, then a small one");
    static char big[200000];
    size_t k = (size_t)snprintf(big, sizeof big, "{\"user_id\": \"a\", \"pad\": [");
    for (int i = 0; i < 30000; i++)
        k += (size_t)snprintf(big + k, sizeof big - k, "%s1", i ? "," : "");
    k += (size_t)snprintf(big + k, sizeof big - k, "]}");
    CHECK_EQ_INT(login_parse(&p, big, k, 0, -1, 0, NOW, &a, &why), RC_OK);
    CHECK_EQ_INT(why, LOGIN_OK);
    CHECK_EQ_INT(login_parse(&p, b2, strlen(b2), 0, -1, 0, NOW, &b, &why), RC_OK);
    CHECK_EQ_INT(why, LOGIN_OK);
    login_parser_free(&p);

    check_case("out of memory is RC_NOMEM, not a rejection");
    login_parser_init(&p);
    p.scratch.max = 2; /* an escaped value cannot be decoded */
    CHECK_EQ_INT(login_parse(&p, b1, strlen(b1), 0, -1, 0, NOW, &a, &why), RC_NOMEM);
    CHECK(a.user_id == NULL);
    CHECK_EQ_INT(login_parse(&p, b2, strlen(b2), 0, -1, 0, NOW, &a, &why), RC_OK);
    CHECK_EQ_INT(why, LOGIN_OK);
    login_parser_free(&p);
}

static void test_ip_canonical(void)
{
    static const struct {
        const char *in;
        size_t n;         /* 0: strlen(in) */
        const char *want; /* NULL: not an address */
    } ips[] = {
        {"1.2.3.4", 0, "1.2.3.4"},
        {"255.255.255.255", 0, "255.255.255.255"},
        {"2001:DB8::1", 0, "2001:db8::1"},
        {"2001:0db8:0:0:0:0:0:1", 0, "2001:db8::1"},
        {"::FFFF:1.2.3.4", 0, "::ffff:1.2.3.4"},
        {"::ffff:102:304", 0, "::ffff:1.2.3.4"},
        {"0:0:0:0:0:0:0:0", 0, "::"},
        {"ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255", 0,
         "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"},
        {"01.2.3.4", 0, NULL},
        {"1.2.3", 0, NULL},
        {" 1.2.3.4", 0, NULL},
        {"fe80::1%eth0", 0, NULL},
        {"", 0, NULL},
        {"1.2.3.4\0", 8, NULL},                                 /* a NUL after an IPv4 address */
        {"1.2.3.4\0zz", 10, NULL},                              /* ... and more after it */
        {"::1\0", 4, NULL},                                     /* the same for IPv6 */
        {"0000:0000:0000:0000:0000:0000:0000:0000:0", 0, NULL}, /* 41 bytes, not an address */
        {"0000:0000:0000:0000:0000:0000:000.000.000.000", 0, NULL}, /* 46: too long */
    };
    for (size_t i = 0; i < sizeof ips / sizeof ips[0]; i++) {
        size_t n = ips[i].n ? ips[i].n : strlen(ips[i].in);
        char out[LOGIN_IP_TEXT_MAX];
        check_case("login_ip_canonical row %zu", i);
        const char *in = check_guard(ips[i].in, n); /* reads past n crash */
        int ok = login_ip_canonical(in, n, out);
        CHECK_EQ_INT(ok, ips[i].want != NULL);
        if (ok && ips[i].want)
            CHECK_EQ_STR(out, ips[i].want);
    }
}

int main(void)
{
    test_ip_canonical();
    test_rows();
    test_codes();
    test_reuse();
    return check_finish();
}
