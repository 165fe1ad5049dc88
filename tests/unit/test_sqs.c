/* test_sqs.c - SQS event parsing: what is an SQS event, what each record
 * yields, FIFO detection, attributes, a 1000-record event, reuse.  Every
 * event is parsed from a copy that ends at a guard page. */
#include "check.h"

#include <dirent.h>

#include "sqs.h"

static struct sqs_event ev;
static char err[ERR_LEN];

/* Parses text from a guard-page copy; returns the result code. */
static rc_t parse(const char *text)
{
    err[0] = '\0';
    size_t n = strlen(text);
    return sqs_parse(&ev, check_guard(text, n), n, err);
}

/* Parses text and checks the result code (the text itself is too long to
 * appear in a failure message). */
#define EXPECT(text, want)                                                                         \
    do {                                                                                           \
        rc_t rc_ = parse(text);                                                                    \
        CHECK_EQ_INT(rc_, want);                                                                   \
    } while (0)

#define ID "\"messageId\":\"059f36b4-87a3-44ab-83d2-661975830a7d\""
#define BODY "\"body\":\"{\\\"user_id\\\": \\\"424cdd21\\\", \\\"ip\\\": \\\"199.172.111.135\\\"}\""
#define ATTRS                                                                                      \
    "\"attributes\":{\"ApproximateReceiveCount\":\"1\",\"SentTimestamp\":\"1700000000000\","       \
    "\"SenderId\":\"AIDAIENQZJOLO23YVJ4VO\",\"ApproximateFirstReceiveTimestamp\":"                 \
    "\"1700000000001\"}"
#define ARN "\"eventSourceARN\":\"arn:aws:sqs:us-east-1:000000000000:login-queue\""
#define ARN_FIFO "\"eventSourceARN\":\"arn:aws:sqs:us-east-1:000000000000:login-queue.fifo\""
#define REC(id, body, attrs, arn)                                                                  \
    "{" id "," body "," attrs ",\"receiptHandle\":\"AQEB\",\"eventSource\":\"aws:sqs\"," arn       \
    ",\"awsRegion\":\"us-east-1\"}"
#define EVENT1(rec) "{\"Records\":[" rec "]}"

static void test_not_sqs(void)
{
    static const struct {
        const char *name, *in, *err_has;
    } rows[] = {
        {"empty text", "", "invalid JSON"},
        {"not JSON", "Records", "invalid JSON"},
        {"truncated", "{\"Records\":[", "invalid JSON"},
        {"bad JSON in a record", "{\"Records\":[{\"messageId\":\"a\",}]}", "invalid JSON"},
        {"root is an array", "[{\"Records\":[]}]", "root"},
        {"root is a string", "\"Records\"", "root"},
        {"root is null", "null", "root"},
        {"no Records", "{}", "Records"},
        {"Records lowercase", "{\"records\":[]}", "Records"},
        {"Records is an object", "{\"Records\":{}}", "Records"},
        {"Records is null", "{\"Records\":null}", "Records"},
        {"Records is a string", "{\"Records\":\"[]\"}", "Records"},
        {"record is a number", "{\"Records\":[1]}", "record 0 is not an object"},
        {"record is null", "{\"Records\":[null]}", "record 0"},
        {"record is an array", "{\"Records\":[[]]}", "record 0"},
        {"record without messageId", "{\"Records\":[{\"body\":\"{}\"}]}", "record 0"},
        {"messageId empty", "{\"Records\":[{\"messageId\":\"\"}]}", "record 0 has an empty"},
        {"messageId a number", "{\"Records\":[{\"messageId\":123}]}", "record 0"},
        {"messageId null", "{\"Records\":[{\"messageId\":null}]}", "record 0"},
        {"messageId an object", "{\"Records\":[{\"messageId\":{\"a\":\"b\"}}]}", "record 0"},
        {"messageId with U+0000", "{\"Records\":[{\"messageId\":\"a\\u0000b\"}]}", "U+0000"},
        {"messageId with bad UTF-8", "{\"Records\":[{\"messageId\":\"a\xff\"}]}", "UTF-8"},
        {"messageId with a lone surrogate", "{\"Records\":[{\"messageId\":\"\\ud800\"}]}", "UTF-8"},
        {"MessageId capitalised", "{\"Records\":[{\"MessageId\":\"a\"}]}", "record 0"},
        {"third record lacks messageId",
         "{\"Records\":[{\"messageId\":\"a\"},{\"messageId\":\"b\"},{\"body\":\"x\"}]}",
         "record 2"},
        {"second record is not an object", "{\"Records\":[{\"messageId\":\"a\"},\"b\"]}",
         "record 1"},
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        check_case("not an SQS event: %s", rows[i].name);
        EXPECT(rows[i].in, RC_INVALID);
        CHECK_EQ_INT(ev.n, 0);
        CHECK(strstr(err, rows[i].err_has) != NULL);
    }

    check_case("the error never quotes a value");
    EXPECT("{\"Records\":[{\"messageId\":\"\",\"body\":\"s3cr3t\"}]}", RC_INVALID);
    CHECK(strstr(err, "s3cr3t") == NULL);
}

static void test_valid(void)
{
    check_case("Records: [] is a valid event of no records");
    EXPECT("{\"Records\":[]}", RC_OK);
    CHECK_EQ_INT(ev.n, 0);
    CHECK_EQ_INT(ev.fifo, 0);

    check_case("a realistic record");
    EXPECT(EVENT1(REC(ID, BODY, ATTRS, ARN)), RC_OK);
    CHECK_EQ_INT(ev.n, 1);
    CHECK_EQ_INT(ev.fifo, 0);
    struct sqs_record *r = &ev.records[0];
    CHECK_EQ_STR(r->message_id, "059f36b4-87a3-44ab-83d2-661975830a7d");
    CHECK_EQ_INT(r->message_id_len, 36);
    const char *want = "{\"user_id\": \"424cdd21\", \"ip\": \"199.172.111.135\"}";
    CHECK_EQ_INT(r->body_len, strlen(want));
    CHECK(r->body && memcmp(r->body, want, strlen(want)) == 0);
    CHECK_EQ_INT(r->body_flags, 0);
    CHECK_EQ_INT(r->sent_ms, 1700000000000LL);
    CHECK_EQ_INT(r->sent_bad, 0);
    CHECK_EQ_INT(r->receive_count, 1);

    check_case("the event of docs/behaviour.md (Input), whitespace and unknown keys");
    EXPECT("{\"Records\":[{\"messageId\":\"...\",\"receiptHandle\":\"...\",\"body\":\"<the "
           "message, a JSON text>\",\n  \"attributes\":{\"ApproximateReceiveCount\":\"1\","
           "\"SentTimestamp\":\"1700000000000\",\n                \"SenderId\":\"...\","
           "\"ApproximateFirstReceiveTimestamp\":\"...\",\n                "
           "\"MessageGroupId\":\"(FIFO only)\",\"SequenceNumber\":\"(FIFO only)\"},\n  "
           "\"messageAttributes\":{},\"md5OfBody\":\"...\",\"eventSource\":\"aws:sqs\",\n  "
           "\"eventSourceARN\":\"arn:aws:sqs:us-east-1:000000000000:login-queue\","
           "\"awsRegion\":\"us-east-1\"}]}",
           RC_OK);
    CHECK_EQ_INT(ev.n, 1);
    CHECK_EQ_STR(ev.records[0].message_id, "...");
    CHECK_EQ_INT(ev.records[0].body_len, 26);
    CHECK_EQ_INT(ev.records[0].sent_ms, 1700000000000LL);

    check_case("an escaped messageId is decoded and NUL-terminated");
    EXPECT("{\"Records\":[{\"messageId\":\"a\\u0062\\/c\"},{\"messageId\":\"d\"}]}", RC_OK);
    CHECK_EQ_INT(ev.n, 2);
    CHECK_EQ_STR(ev.records[0].message_id, "ab/c");
    CHECK_EQ_INT(ev.records[0].message_id_len, 4);
    CHECK_EQ_STR(ev.records[1].message_id, "d");

    check_case("a messageId of one multi-byte character");
    EXPECT("{\"Records\":[{\"messageId\":\"\xc3\xa9\"}]}", RC_OK);
    CHECK_EQ_STR(ev.records[0].message_id, "\xc3\xa9");

    check_case("escaped member names are decoded");
    EXPECT("{\"Rec\\u006frds\":[{\"message\\u0049d\":\"x\",\"b\\u006fdy\":\"{}\","
           "\"attribute\\u0073\":{\"Sent\\u0054imestamp\":\"5\"},"
           "\"eventSource\\u0041RN\":\"q.fifo\"}]}",
           RC_OK);
    CHECK_EQ_INT(ev.n, 1);
    CHECK_EQ_STR(ev.records[0].message_id, "x");
    CHECK_EQ_INT(ev.records[0].body_len, 2);
    CHECK_EQ_INT(ev.records[0].sent_ms, 5);
    CHECK_EQ_INT(ev.fifo, 1);

    check_case("same-length near-miss names are ignored");
    EXPECT("{\"Records\":[{\"messageId\":\"x\",\"messageID\":\"y\",\"Body\":\"{}\","
           "\"attributes\":{\"SentTimestamP\":\"5\"}}]}",
           RC_OK);
    CHECK_EQ_STR(ev.records[0].message_id, "x");
    CHECK(ev.records[0].body == NULL);
    CHECK_EQ_INT(ev.records[0].sent_ms, -1);
    CHECK_EQ_INT(ev.records[0].sent_bad, 0);

    check_case("duplicate keys: the last wins");
    EXPECT("{\"Records\":[],\"Records\":[{\"messageId\":\"x\",\"messageId\":\"y\"}]}", RC_OK);
    CHECK_EQ_INT(ev.n, 1);
    CHECK_EQ_STR(ev.records[0].message_id, "y");
}

static void test_body(void)
{
    static const struct {
        const char *name, *body; /* body member as JSON, "" for none */
        const char *want;        /* decoded body, NULL for none */
        size_t want_len;
        unsigned flags;
    } rows[] = {
        {"body absent", "", NULL, 0, 0},
        {"body null", "\"body\":null", NULL, 0, 0},
        {"body a number", "\"body\":42", NULL, 0, 0},
        {"body an object", "\"body\":{\"user_id\":\"a\"}", NULL, 0, 0},
        {"body an array", "\"body\":[]", NULL, 0, 0},
        {"body empty string", "\"body\":\"\"", "", 0, 0},
        {"body plain", "\"body\":\"{}\"", "{}", 2, 0},
        {"body escaped", "\"body\":\"{\\\"a\\\":\\\"\\u00e9\\\"}\"", "{\"a\":\"\xc3\xa9\"}", 10, 0},
        {"body with U+0000", "\"body\":\"{\\u0000}\"", "{\0}", 3, JSON_HAS_NUL},
        {"body with a lone surrogate", "\"body\":\"\\udc00\"", "\xef\xbf\xbd", 3, JSON_BAD_UTF8},
        {"body with bad UTF-8", "\"body\":\"\xc0\xaf\"", "\xc0\xaf", 2, JSON_BAD_UTF8},
        {"body with both", "\"body\":\"\xff\\u0000\"", "\xff\0", 2, JSON_BAD_UTF8 | JSON_HAS_NUL},
    };
    char in[512];
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        check_case("%s", rows[i].name);
        snprintf(in, sizeof in, "{\"Records\":[{" ID "%s%s}]}", *rows[i].body ? "," : "",
                 rows[i].body);
        EXPECT(in, RC_OK);
        CHECK_EQ_INT(ev.n, 1);
        struct sqs_record *r = &ev.records[0];
        if (!rows[i].want) {
            CHECK(r->body == NULL);
            CHECK_EQ_INT(r->body_len, 0);
        } else {
            CHECK(r->body != NULL);
            CHECK_EQ_INT(r->body_len, rows[i].want_len);
            CHECK(r->body && memcmp(r->body, rows[i].want, rows[i].want_len) == 0);
        }
        CHECK_EQ_INT(r->body_flags, rows[i].flags);
    }

    check_case("body with a raw NUL byte: flagged, the event still parses");
    static const char raw[] = "{\"Records\":[{\"messageId\":\"m\",\"body\":\"{\0}\"}]}";
    CHECK_EQ_INT(sqs_parse(&ev, check_guard(raw, sizeof raw - 1), sizeof raw - 1, err), RC_OK);
    CHECK_EQ_INT(ev.n, 1);
    CHECK_EQ_INT(ev.records[0].body_len, 3);
    CHECK_EQ_INT(ev.records[0].body_flags, JSON_HAS_NUL);

    check_case("a raw control character in a body string fails the event");
    EXPECT("{\"Records\":[{\"messageId\":\"m\",\"body\":\"{\t}\"}]}", RC_INVALID);
}

static void test_attributes(void)
{
    static const struct {
        const char *name, *attrs; /* the attributes member, "" for none */
        long long sent;
        int bad;
        long count;
    } rows[] = {
        {"no attributes", "", -1, 0, 0},
        {"attributes not an object", "\"attributes\":\"x\"", -1, 0, 0},
        {"attributes null", "\"attributes\":null", -1, 0, 0},
        {"attributes empty", "\"attributes\":{}", -1, 0, 0},
        {"SentTimestamp valid", "\"attributes\":{\"SentTimestamp\":\"1700000000000\"}",
         1700000000000LL, 0, 0},
        {"SentTimestamp 0", "\"attributes\":{\"SentTimestamp\":\"0\"}", 0, 0, 0},
        {"SentTimestamp leading zeros", "\"attributes\":{\"SentTimestamp\":\"0001700000000000\"}",
         1700000000000LL, 0, 0},
        {"SentTimestamp year 9999", "\"attributes\":{\"SentTimestamp\":\"253402300799999\"}",
         253402300799999LL, 0, 0},
        {"SentTimestamp year 10000", "\"attributes\":{\"SentTimestamp\":\"253402300800000\"}", -1,
         1, 0},
        {"SentTimestamp 20 digits", "\"attributes\":{\"SentTimestamp\":\"17000000000000000000\"}",
         -1, 1, 0},
        {"SentTimestamp negative", "\"attributes\":{\"SentTimestamp\":\"-1\"}", -1, 1, 0},
        {"SentTimestamp minus zero", "\"attributes\":{\"SentTimestamp\":\"-0\"}", -1, 1, 0},
        {"SentTimestamp plus", "\"attributes\":{\"SentTimestamp\":\"+1\"}", -1, 1, 0},
        {"SentTimestamp empty", "\"attributes\":{\"SentTimestamp\":\"\"}", -1, 1, 0},
        {"SentTimestamp space", "\"attributes\":{\"SentTimestamp\":\" 1\"}", -1, 1, 0},
        {"SentTimestamp exponent", "\"attributes\":{\"SentTimestamp\":\"17e11\"}", -1, 1, 0},
        {"SentTimestamp fraction", "\"attributes\":{\"SentTimestamp\":\"1.5\"}", -1, 1, 0},
        {"SentTimestamp a number", "\"attributes\":{\"SentTimestamp\":1700000000000}", -1, 1, 0},
        {"SentTimestamp null", "\"attributes\":{\"SentTimestamp\":null}", -1, 1, 0},
        {"SentTimestamp an object", "\"attributes\":{\"SentTimestamp\":{}}", -1, 1, 0},
        {"SentTimestamp escaped digits", "\"attributes\":{\"SentTimestamp\":\"\\u0031\\u0032\"}",
         12, 0, 0},
        {"SentTimestamp with a NUL", "\"attributes\":{\"SentTimestamp\":\"1\\u0000\"}", -1, 1, 0},
        {"SentTimestamp outside attributes", "\"SentTimestamp\":\"1\"", -1, 0, 0},
        {"receive count", "\"attributes\":{\"ApproximateReceiveCount\":\"7\"}", -1, 0, 7},
        {"receive count bad", "\"attributes\":{\"ApproximateReceiveCount\":\"x\"}", -1, 0, 0},
        {"receive count a number", "\"attributes\":{\"ApproximateReceiveCount\":3}", -1, 0, 0},
        {"receive count negative", "\"attributes\":{\"ApproximateReceiveCount\":\"-3\"}", -1, 0, 0},
    };
    char in[512];
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        check_case("%s", rows[i].name);
        snprintf(in, sizeof in, "{\"Records\":[{" ID "%s%s}]}", *rows[i].attrs ? "," : "",
                 rows[i].attrs);
        EXPECT(in, RC_OK);
        CHECK_EQ_INT(ev.n, 1);
        CHECK_EQ_INT(ev.records[0].sent_ms, rows[i].sent);
        CHECK_EQ_INT(ev.records[0].sent_bad, rows[i].bad);
        CHECK_EQ_INT(ev.records[0].receive_count, rows[i].count);
    }
}

static void test_fifo(void)
{
    static const struct {
        const char *name, *in;
        int fifo;
    } rows[] = {
        {"standard queue", EVENT1(REC(ID, BODY, ATTRS, ARN)), 0},
        {"FIFO queue", EVENT1(REC(ID, BODY, ATTRS, ARN_FIFO)), 1},
        {"no ARN", "{\"Records\":[{" ID "}]}", 0},
        {"ARN not a string", "{\"Records\":[{" ID ",\"eventSourceARN\":5}]}", 0},
        {"ends in fifo without a dot",
         "{\"Records\":[{" ID ",\"eventSourceARN\":\"arn:aws:sqs:r:1:loginfifo\"}]}", 0},
        {"ends in .FIFO", "{\"Records\":[{" ID ",\"eventSourceARN\":\"arn:aws:sqs:r:1:q.FIFO\"}]}",
         0},
        {"just .fifo", "{\"Records\":[{" ID ",\"eventSourceARN\":\".fifo\"}]}", 1},
        {"fifo", "{\"Records\":[{" ID ",\"eventSourceARN\":\"fifo\"}]}", 0},
        {"escaped .fifo", "{\"Records\":[{" ID ",\"eventSourceARN\":\"q\\u002efifo\"}]}", 1},
        {".fifo in the middle", "{\"Records\":[{" ID ",\"eventSourceARN\":\"a.fifo:b\"}]}", 0},
        {"second record is FIFO",
         "{\"Records\":[" REC(ID, BODY, ATTRS, ARN) "," REC(ID, BODY, ATTRS, ARN_FIFO) "]}", 1},
        {"FIFO with group attributes",
         "{\"Records\":[{" ID ",\"attributes\":{\"MessageGroupId\":\"g1\",\"SequenceNumber\":"
         "\"18849496460467696128\",\"MessageDeduplicationId\":\"d\"}," ARN_FIFO "}]}",
         1},
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        check_case("fifo: %s", rows[i].name);
        EXPECT(rows[i].in, RC_OK);
        CHECK_EQ_INT(ev.fifo, rows[i].fifo);
    }
}

static void test_many(void)
{
    struct buf b;
    buf_init(&b, BUF_PAYLOAD_MAX);
    buf_appends(&b, "{\"Records\":[");
    for (int i = 0; i < 1000; i++)
        buf_printf(&b,
                   "%s{\"messageId\":\"%08d-87a3-44ab-83d2-661975830a7d\",\"receiptHandle\":"
                   "\"AQEBwJnKyrHigUMZj6rYigCgxlaS3SLy0a\",\"body\":\"{\\\"user_id\\\": "
                   "\\\"u%d\\\", \\\"app_version\\\": \\\"2.3.0\\\", \\\"locale\\\": null}\","
                   "\"attributes\":{\"ApproximateReceiveCount\":\"%d\",\"SentTimestamp\":"
                   "\"%lld\"},\"messageAttributes\":{},\"md5OfBody\":\"x\",\"eventSource\":"
                   "\"aws:sqs\",\"eventSourceARN\":\"arn:aws:sqs:us-east-1:0:login-queue\","
                   "\"awsRegion\":\"us-east-1\"}",
                   i ? "," : "", i, i, 1 + i % 5, 1700000000000LL + i);
    buf_appends(&b, "]}");

    check_case("a 1000-record event");
    CHECK_EQ_INT(b.err, RC_OK);
    EXPECT(b.data, RC_OK);
    CHECK_EQ_INT(ev.n, 1000);
    CHECK_EQ_INT(ev.fifo, 0);
    int bad = 0;
    char want[128];
    for (size_t i = 0; i < ev.n; i++) {
        struct sqs_record *r = &ev.records[i];
        snprintf(want, sizeof want, "%08zu-87a3-44ab-83d2-661975830a7d", i);
        bad += strcmp(r->message_id, want) != 0 || r->message_id_len != strlen(want);
        int n =
            snprintf(want, sizeof want,
                     "{\"user_id\": \"u%zu\", \"app_version\": \"2.3.0\", \"locale\": null}", i);
        bad += !r->body || r->body_len != (size_t)n || memcmp(r->body, want, (size_t)n) != 0;
        bad += r->sent_ms != 1700000000000LL + (long long)i || r->sent_bad;
        bad += r->receive_count != (long)(1 + i % 5) || r->body_flags;
    }
    CHECK_EQ_INT(bad, 0);

    check_case("memory is reused: big, small, invalid, big again");
    EXPECT("{\"Records\":[{\"messageId\":\"only\"}]}", RC_OK);
    CHECK_EQ_INT(ev.n, 1);
    CHECK_EQ_STR(ev.records[0].message_id, "only");
    CHECK(ev.records[0].body == NULL);
    CHECK_EQ_INT(ev.records[0].sent_ms, -1);
    EXPECT("{\"Records\":[{\"messageId\":\"\"}]}", RC_INVALID);
    CHECK_EQ_INT(ev.n, 0);
    EXPECT(b.data, RC_OK);
    CHECK_EQ_INT(ev.n, 1000);
    CHECK_EQ_STR(ev.records[999].message_id, "00000999-87a3-44ab-83d2-661975830a7d");

    check_case("FIFO flag is reset between events");
    EXPECT(EVENT1(REC(ID, BODY, ATTRS, ARN_FIFO)), RC_OK);
    CHECK_EQ_INT(ev.fifo, 1);
    EXPECT(EVENT1(REC(ID, BODY, ATTRS, ARN)), RC_OK);
    CHECK_EQ_INT(ev.fifo, 0);
    buf_free(&b);

    check_case("sqs_free leaves a reusable event");
    sqs_free(&ev);
    CHECK(ev.records == NULL && ev.n == 0);
    EXPECT("{\"Records\":[{\"messageId\":\"z\"}]}", RC_OK);
    CHECK_EQ_STR(ev.records[0].message_id, "z");
}

/* --- record-at-a-time parsing against the whole-document parse -------------------------- */

#define SEEN_MAX 4096

/* What the record callback saw, to compare with the finished event. */
struct seen {
    size_t calls;
    int out_of_order;
    size_t fail_at; /* the call that returns RC_NOMEM (SIZE_MAX: none) */
    const char *id[SEEN_MAX];
    const char *body[SEEN_MAX];
    int64_t sent[SEEN_MAX];
};

static rc_t on_record(void *ctx, const struct sqs_event *e, size_t idx, char cb_err[ERR_LEN])
{
    struct seen *s = ctx;
    if (idx != s->calls || idx >= e->n)
        s->out_of_order = 1;
    if (idx < SEEN_MAX) {
        s->id[idx] = e->records[idx].message_id;
        s->body[idx] = e->records[idx].body;
        s->sent[idx] = e->records[idx].sent_ms;
    }
    if (s->calls++ == s->fail_at) {
        snprintf(cb_err, ERR_LEN, "consumer out of memory");
        return RC_NOMEM;
    }
    return RC_OK;
}

static struct sqs_event whole;

/* Parses text[0..n) (a check_guard copy) record by record into ev, seen
 * starting afresh with its callback failing at call fail_at.  Returns the
 * result. */
static rc_t stream_parse(const char *text, size_t n, size_t fail_at, struct seen *seen,
                         char why[ERR_LEN])
{
    memset(seen, 0, sizeof *seen);
    seen->fail_at = fail_at;
    return sqs_parse_stream(&ev, text, n, on_record, seen, why);
}

/* Parses text[0..n) both ways (the stream's callback failing at call
 * fail_at) and counts the differences: result, error text, records, FIFO
 * flag, and what the callback was given.  Returns 0 when they agree. */
static int disagree(const char *text, size_t n, size_t fail_at)
{
    static struct seen seen;
    char err_whole[ERR_LEN] = "", err_stream[ERR_LEN] = "";
    int bad = 0;

    const char *copy = check_guard(text, n); /* one copy: both parses' records point into it */
    rc_t want = sqs_parse_whole(&whole, copy, n, err_whole);
    rc_t got = stream_parse(copy, n, fail_at, &seen, err_stream);
    int failed_fn = fail_at < seen.calls;
    if (want != RC_OK) {
        bad += got != want || strcmp(err_whole, err_stream) != 0 || ev.n != 0;
        return bad;
    }
    /* The consumer's failure, the event being valid, unless what it was
     * given was voided (a later "Records" member won). */
    if (failed_fn && !ev.voided)
        return bad +
               (got != RC_NOMEM || strcmp(err_stream, "consumer out of memory") != 0 || ev.n != 0);
    bad += got != RC_OK || ev.n != whole.n || ev.fifo != whole.fifo || seen.out_of_order;
    if (bad)
        return bad;
    /* Records went to the callback ([0, handed), the rest not), or were
     * voided (a later "Records" member won). */
    bad += ev.handed > ev.n || (!ev.voided && seen.calls != ev.handed) ||
           (ev.voided && (ev.handed != 0 || seen.calls == 0));
    for (size_t i = 0; i < ev.n; i++) {
        const struct sqs_record *a = &whole.records[i], *b = &ev.records[i];
        bad += a->message_id_len != b->message_id_len ||
               memcmp(a->message_id, b->message_id, a->message_id_len + 1) != 0;
        bad += (a->body == NULL) != (b->body == NULL) || a->body_len != b->body_len ||
               (a->body && memcmp(a->body, b->body, a->body_len) != 0);
        bad += a->sent_ms != b->sent_ms || a->sent_bad != b->sent_bad ||
               a->receive_count != b->receive_count || a->body_flags != b->body_flags;
        /* What the callback was given is what the event holds in the end. */
        if (i < ev.handed && i < SEEN_MAX)
            bad += seen.id[i] != b->message_id || seen.body[i] != b->body ||
                   seen.sent[i] != b->sent_ms;
    }
    return bad;
}

/* A small deterministic generator (no libc rand: the same events on every
 * machine). */
static uint64_t rng = 88172645463325252ULL;
static uint32_t rnd(uint32_t n)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (uint32_t)(rng % n);
}

/* Appends one random record, valid or not in one of the ways that matter. */
static void random_record(struct buf *b, int k)
{
    static const char *const pieces[] = {
        "{\"messageId\":\"m%d\",\"body\":\"{\\\"user_id\\\":\\\"u\\\"}\","
        "\"attributes\":{\"SentTimestamp\":\"17000000%05d\"}}",
        "{\"messageId\":\"m%d\",\"eventSourceARN\":\"arn:q.fifo\",\"n\":%d}",
        "{\"messageId\":\"\\u006d%d\",\"body\":\"a\\u0000b\",\"k\":%d}",
        "{\"messageId\":\"m%d\",\"messageId\":\"again%d\"}",
        "{\"messageId\":\"\",\"x\":%d%d}",
        "{\"body\":\"no id %d %d\"}",
        "[%d,%d]",
        "\"m%d%d\"",
        "{\"messageId\":%d%d}",
        "{\"messageId\":\"m%d\",\"attributes\":{\"SentTimestamp\":null,\"x\":[%d]}}",
        "{\"messageId\":\"bad\\ud800%d\",\"y\":%d}",
        "{\"messageId\":\"m%d\",\"body\":\"\\\"Records\\\": [%d]\"}",
    };
    /* Mostly valid ones, so that a long valid run meets a bad record late. */
    uint32_t i = rnd(10) < 7 ? rnd(3) : rnd(sizeof pieces / sizeof *pieces);
    /* Each "%d" of the piece becomes k (no format string from a table). */
    for (const char *c = pieces[i]; *c; c++) {
        if (c[0] == '%' && c[1] == 'd') {
            buf_printf(b, "%d", k);
            c++;
        } else {
            buf_appendc(b, *c);
        }
    }
}

/* Appends a random event: one or more "Records" members (the last wins),
 * other members around them, sometimes a root that is not an object. */
static void random_event(struct buf *b)
{
    uint32_t shape = rnd(20);
    if (shape == 0) {
        buf_appends(b, "[{\"Records\":[]}]");
        return;
    }
    buf_appends(b, "{");
    int members = 1 + (int)rnd(3);
    for (int m = 0; m < members; m++) {
        if (m)
            buf_appends(b, ",");
        uint32_t kind = rnd(8);
        if (kind == 0) {
            buf_appends(b, "\"other\":{\"Records\":[{\"messageId\":\"inner\"}]}");
            continue;
        }
        buf_appends(b, kind == 1 ? "\"Rec\\u006fords\":" : "\"Records\":");
        if (rnd(10) == 0) {
            buf_appends(b, rnd(2) ? "{}" : "7");
            continue;
        }
        buf_appends(b, "[");
        int n = (int)rnd(rnd(4) == 0 ? 300 : 8);
        for (int k = 0; k < n; k++) {
            if (k)
                buf_appends(b, ",");
            random_record(b, k);
        }
        buf_appends(b, "]");
    }
    buf_appends(b, "}");
}

static void test_stream_agrees(void)
{
    struct buf b;
    int bad = 0, cases = 0;

    sqs_init(&whole);
    buf_init(&b, BUF_PAYLOAD_MAX);

    check_case("record at a time agrees with the whole-document parse: the seed corpus, cut "
               "at every byte and with bytes changed");
    DIR *d = opendir("tests/fuzz/corpus/sqs");
    CHECK(d != NULL);
    int files = 0;
    for (struct dirent *de; d && (de = readdir(d)) != NULL;) {
        if (de->d_name[0] == '.')
            continue;
        char path[512];
        snprintf(path, sizeof path, "tests/fuzz/corpus/sqs/%s", de->d_name);
        FILE *f = fopen(path, "rb");
        if (!f)
            continue;
        buf_reset(&b);
        char chunk[4096];
        size_t got;
        while ((got = fread(chunk, 1, sizeof chunk, f)) > 0)
            buf_append(&b, chunk, got);
        fclose(f);
        files++;
        for (size_t cut = 0; cut <= b.len; cut++, cases++)
            bad += disagree(b.data, cut, SIZE_MAX) != 0;
        for (int k = 0; k < 200 && b.len; k++, cases++) {
            size_t at = rnd((uint32_t)b.len);
            char was = b.data[at];
            static const char subst[] = "{}[],:\"\\ x0";
            b.data[at] = subst[rnd(sizeof subst - 1)];
            bad += disagree(b.data, b.len, SIZE_MAX) != 0;
            b.data[at] = was;
        }
    }
    if (d)
        closedir(d);
    CHECK(files >= 10);
    CHECK_EQ_INT(bad, 0);

    check_case("record at a time agrees with the whole-document parse: 3000 random events, "
               "some cut short, the consumer failing now and then");
    bad = 0;
    for (int k = 0; k < 3000; k++, cases++) {
        buf_reset(&b);
        random_event(&b);
        CHECK_EQ_INT(b.err, RC_OK);
        size_t len = rnd(4) == 0 ? rnd((uint32_t)b.len + 1) : b.len;
        size_t fail_at = rnd(5) == 0 ? rnd(50) : SIZE_MAX;
        int d1 = disagree(b.data, len, fail_at);
        if (d1)
            fprintf(stderr, "# disagree on: %.*s\n", (int)(len > 300 ? 300 : len), b.data);
        bad += d1 != 0;
    }
    CHECK_EQ_INT(bad, 0);

    check_case("a bad record after many good ones: handed out, then the event fails");
    buf_reset(&b);
    buf_appends(&b, "{\"Records\":[");
    for (int k = 0; k < 1000; k++)
        buf_printf(&b, "{\"messageId\":\"m%d\"},", k);
    buf_appends(&b, "{\"messageId\":\"\"}]}");
    static struct seen seen;
    CHECK_EQ_INT(stream_parse(check_guard(b.data, b.len), b.len, SIZE_MAX, &seen, err), RC_INVALID);
    CHECK_EQ_INT(seen.calls, 1000);
    CHECK_EQ_INT(ev.n, 0);
    CHECK(strstr(err, "record 1000") != NULL);

    check_case("a later \"Records\" member wins: the records handed out are void");
    buf_reset(&b);
    buf_appends(&b, "{\"Records\":[{\"messageId\":\"a\"},{\"messageId\":\"b\"}],"
                    "\"Records\":[{\"messageId\":\"c\"}]}");
    CHECK_EQ_INT(stream_parse(check_guard(b.data, b.len), b.len, SIZE_MAX, &seen, err), RC_OK);
    CHECK_EQ_INT(seen.calls, 2);
    CHECK_EQ_INT(ev.voided, 1);
    CHECK_EQ_INT(ev.handed, 0);
    CHECK_EQ_INT(ev.n, 1);
    CHECK_EQ_STR(ev.records[0].message_id, "c");
    CHECK(cases > 3000);

    buf_free(&b);
    sqs_free(&whole);
}

int main(void)
{
    sqs_init(&ev);
    test_not_sqs();
    test_valid();
    test_body();
    test_attributes();
    test_fifo();
    test_many();
    test_stream_agrees();
    sqs_free(&ev);
    return check_finish();
}
