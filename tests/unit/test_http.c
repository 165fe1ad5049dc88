/* test_http.c - the response head parser and the chunked decoder, fed whole,
 * byte by byte and split at every point, with every input ending at a guard
 * page. */
#include "check.h"

#include "buf.h"
#include "http.h"

enum { F_ID, F_DEADLINE, F_COUNT };

struct head_row {
    const char *name;
    const char *in;
    size_t len; /* 0: strlen(in) */
    http_parse_t want;
    int status;
    enum http_framing framing;
    unsigned long long content_length;
    int keep_alive;
    size_t body;    /* bytes after the head in `in` */
    const char *id; /* Lambda-Runtime-Aws-Request-Id, or NULL when absent */
};

#define OK200 "HTTP/1.1 200 OK\r\n"

static const struct head_row head_rows[] = {
    {"content-length", OK200 "Content-Length: 5\r\n\r\nhello", 0, HTTP_PARSE_DONE, 200,
     HTTP_BODY_LENGTH, 5, 1, 5, NULL},
    {"runtime api /next",
     OK200 "Content-Type: application/json\r\nLambda-Runtime-Aws-Request-Id: 8476a536-e9f4\r\n"
           "Lambda-Runtime-Deadline-Ms: 1542409706888\r\nContent-Length: 2\r\n\r\n{}",
     0, HTTP_PARSE_DONE, 200, HTTP_BODY_LENGTH, 2, 1, 2, "8476a536-e9f4"},
    {"lower-case names", OK200 "content-length: 3\r\nlambda-runtime-aws-request-id: abc\r\n\r\n", 0,
     HTTP_PARSE_DONE, 200, HTTP_BODY_LENGTH, 3, 1, 0, "abc"},
    {"upper-case names", OK200 "CONTENT-LENGTH: 3\r\nLAMBDA-RUNTIME-AWS-REQUEST-ID: X\r\n\r\n", 0,
     HTTP_PARSE_DONE, 200, HTTP_BODY_LENGTH, 3, 1, 0, "X"},
    {"value blanks trimmed", OK200 "Lambda-Runtime-Aws-Request-Id: \t abc d \t\r\n\r\n", 0,
     HTTP_PARSE_DONE, 200, HTTP_BODY_CLOSE, 0, 0, 0, "abc d"},
    {"empty value", OK200 "Lambda-Runtime-Aws-Request-Id:\r\nContent-Length: 0\r\n\r\n", 0,
     HTTP_PARSE_DONE, 200, HTTP_BODY_LENGTH, 0, 1, 0, ""},
    {"names that only start alike",
     OK200 "Content-Lengthy: 5\r\nLambda-Runtime-Aws-Request-Idx: a\r\n"
           "Lambda-Runtime-Aws-Request: b\r\nContent-Length: 1\r\n\r\n",
     0, HTTP_PARSE_DONE, 200, HTTP_BODY_LENGTH, 1, 1, 0, NULL},
    {"202 accepted", "HTTP/1.1 202 Accepted\r\nContent-Length: 15\r\n\r\n{\"status\":\"OK\"}", 0,
     HTTP_PARSE_DONE, 202, HTTP_BODY_LENGTH, 15, 1, 15, NULL},
    {"chunked", OK200 "Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", 0,
     HTTP_PARSE_DONE, 200, HTTP_BODY_CHUNKED, 0, 1, 15, NULL},
    {"chunked any case", OK200 "transfer-encoding: ChUnKeD\r\n\r\n", 0, HTTP_PARSE_DONE, 200,
     HTTP_BODY_CHUNKED, 0, 1, 0, NULL},
    {"chunked with empty list elements", OK200 "Transfer-Encoding: , chunked ,\r\n\r\n", 0,
     HTTP_PARSE_DONE, 200, HTTP_BODY_CHUNKED, 0, 1, 0, NULL},
    {"chunked and content-length", OK200 "Content-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
     0, HTTP_PARSE_DONE, 200, HTTP_BODY_CHUNKED, 0, 0, 0, NULL},
    {"until close", OK200 "Content-Type: text/plain\r\n\r\nabc", 0, HTTP_PARSE_DONE, 200,
     HTTP_BODY_CLOSE, 0, 0, 3, NULL},
    {"http/1.0 closes", "HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\nx", 0, HTTP_PARSE_DONE, 200,
     HTTP_BODY_LENGTH, 1, 0, 1, NULL},
    {"http/1.0 keep-alive",
     "HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 1\r\n\r\nx", 0, HTTP_PARSE_DONE,
     200, HTTP_BODY_LENGTH, 1, 1, 1, NULL},
    {"connection close", OK200 "Connection: foo, close\r\nContent-Length: 0\r\n\r\n", 0,
     HTTP_PARSE_DONE, 200, HTTP_BODY_LENGTH, 0, 0, 0, NULL},
    {"204 has no body", "HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n", 0, HTTP_PARSE_DONE,
     204, HTTP_BODY_NONE, 0, 1, 0, NULL},
    {"304 has no body", "HTTP/1.1 304 Not Modified\r\n\r\n", 0, HTTP_PARSE_DONE, 304,
     HTTP_BODY_NONE, 0, 1, 0, NULL},
    {"100 continue", "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n", 0, HTTP_PARSE_DONE, 100,
     HTTP_BODY_NONE, 0, 1, 17, NULL},
    {"no reason phrase", "HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n", 0, HTTP_PARSE_DONE, 200,
     HTTP_BODY_LENGTH, 0, 1, 0, NULL},
    {"empty reason phrase", "HTTP/1.1 200 \r\nContent-Length: 0\r\n\r\n", 0, HTTP_PARSE_DONE, 200,
     HTTP_BODY_LENGTH, 0, 1, 0, NULL},
    {"bare LF line ends",
     "HTTP/1.1 200 OK\nContent-Length: 2\nLambda-Runtime-Aws-Request-Id: q\n\nab", 0,
     HTTP_PARSE_DONE, 200, HTTP_BODY_LENGTH, 2, 1, 2, "q"},
    {"mixed line ends", "HTTP/1.1 200 OK\nContent-Length: 2\r\n\nab", 0, HTTP_PARSE_DONE, 200,
     HTTP_BODY_LENGTH, 2, 1, 2, NULL},
    {"obs-text in a value", OK200 "X-Name: caf\xc3\xa9\xff\r\nContent-Length: 0\r\n\r\n", 0,
     HTTP_PARSE_DONE, 200, HTTP_BODY_LENGTH, 0, 1, 0, NULL},
    {"content-length agreeing twice", OK200 "Content-Length: 5\r\nContent-Length: 5\r\n\r\n", 0,
     HTTP_PARSE_DONE, 200, HTTP_BODY_LENGTH, 5, 1, 0, NULL},
    {"content-length list agreeing", OK200 "Content-Length: 5 , 5\r\n\r\n", 0, HTTP_PARSE_DONE, 200,
     HTTP_BODY_LENGTH, 5, 1, 0, NULL},
    {"content-length blanks", OK200 "Content-Length:   7  \r\n\r\n", 0, HTTP_PARSE_DONE, 200,
     HTTP_BODY_LENGTH, 7, 1, 0, NULL},
    {"content-length huge but valid", OK200 "Content-Length: 9223372036854775807\r\n\r\n", 0,
     HTTP_PARSE_DONE, 200, HTTP_BODY_LENGTH, 9223372036854775807ULL, 1, 0, NULL},
};

/* Heads refused (HTTP_PARSE_ERROR, with a reason in err) and heads not
 * complete yet (HTTP_PARSE_MORE): the answer is all there is to check. */
struct bad_head_row {
    const char *name;
    const char *in;
    size_t len; /* 0: strlen(in) */
};

static const struct bad_head_row refused_heads[] = {
    {"gzip refused", OK200 "Transfer-Encoding: gzip, chunked\r\n\r\n", 0},
    {"identity refused", OK200 "Transfer-Encoding: identity\r\n\r\n", 0},
    {"empty transfer-encoding", OK200 "Transfer-Encoding: \r\n\r\n", 0},
    {"chunked twice", OK200 "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", 0},
    {"content-length disagreeing", OK200 "Content-Length: 5\r\nContent-Length: 6\r\n\r\n", 0},
    {"content-length list disagreeing", OK200 "Content-Length: 5, 6\r\n\r\n", 0},
    {"content-length empty element", OK200 "Content-Length: 5,,5\r\n\r\n", 0},
    {"content-length negative", OK200 "Content-Length: -1\r\n\r\n", 0},
    {"content-length plus", OK200 "Content-Length: +1\r\n\r\n", 0},
    {"content-length garbage", OK200 "Content-Length: abc\r\n\r\n", 0},
    {"content-length trailing garbage", OK200 "Content-Length: 5a\r\n\r\n", 0},
    {"content-length hex", OK200 "Content-Length: 0x10\r\n\r\n", 0},
    {"content-length empty", OK200 "Content-Length: \r\n\r\n", 0},
    {"content-length overflow", OK200 "Content-Length: 99999999999999999999\r\n\r\n", 0},
    {"content-length over int64", OK200 "Content-Length: 9223372036854775808\r\n\r\n", 0},
    {"obs-fold refused", OK200 "X-Long: a\r\n b\r\nContent-Length: 0\r\n\r\n", 0},
    {"obs-fold with tab refused", OK200 "X-Long: a\r\n\tb\r\n\r\n", 0},
    {"blank before colon", OK200 "Content-Length : 5\r\n\r\n", 0},
    {"no colon", OK200 "Content-Length\r\n\r\n", 0},
    {"empty name", OK200 ": x\r\n\r\n", 0},
    {"bad name character", OK200 "X(y): 1\r\n\r\n", 0},
    {"bare CR in a value", OK200 "X: a\rb\r\n\r\n", 0},
    {"CR CR LF", OK200 "X: a\r\r\n\r\n", 0},
    {"NUL in a value", OK200 "X: a\0b\r\n\r\n", sizeof(OK200 "X: a\0b\r\n\r\n") - 1},
    {"DEL in a value", OK200 "X: a\x7f\r\n\r\n", 0},
    {"control in reason", "HTTP/1.1 200 O\x01K\r\n\r\n", 0},
    {"repeated wanted field",
     OK200 "Lambda-Runtime-Aws-Request-Id: a\r\nlambda-runtime-aws-request-id: b\r\n\r\n", 0},
    {"status two digits", "HTTP/1.1 20 OK\r\n\r\n", 0},
    {"status four digits", "HTTP/1.1 2000 OK\r\n\r\n", 0},
    {"status below 100", "HTTP/1.1 099 X\r\n\r\n", 0},
    {"status 600", "HTTP/1.1 600 X\r\n\r\n", 0},
    {"status negative", "HTTP/1.1 -20 X\r\n\r\n", 0},
    {"status letters", "HTTP/1.1 2O0 OK\r\n\r\n", 0},
    {"two blanks", "HTTP/1.1  200 OK\r\n\r\n", 0},
    {"no blank after status", "HTTP/1.1 200OK\r\n\r\n", 0},
    {"http/2", "HTTP/2 200 OK\r\n\r\n", 0},
    {"http/1.2", "HTTP/1.2 200 OK\r\n\r\n", 0},
    {"lower-case version", "http/1.1 200 OK\r\n\r\n", 0},
    {"not http", "ICY 200 OK\r\n\r\n", 0},
    {"empty status line", "\r\n\r\n", 0},
    {"leading blank line", "\r\nHTTP/1.1 200 OK\r\n\r\n", 0},
};

static const struct bad_head_row incomplete_heads[] = {
    {"incomplete head", OK200 "Content-Length: 5\r\n", 0},
    {"incomplete last CR", OK200 "Content-Length: 5\r\n\r", 0},
    {"incomplete status", "HTTP/1.", 0},
    {"empty input", "", 0},
};

static http_parse_t parse(const char *in, size_t n, size_t last, struct http_head *h,
                          struct http_field *f, char *err)
{
    f[F_ID].name = "Lambda-Runtime-Aws-Request-Id";
    f[F_DEADLINE].name = "Lambda-Runtime-Deadline-Ms";
    return http_parse_head(in, n, last, h, f, F_COUNT, err);
}

/* Parses row->in whole, then byte by byte (a case each), every input ending
 * at a guard page; the head's fields are compared only when the row wants DONE. */
static void check_head(const struct head_row *row)
{
    size_t n = row->len ? row->len : strlen(row->in);
    struct http_head h;
    struct http_field f[F_COUNT];
    char err[ERR_LEN] = "";

    check_case("head: %s (whole)", row->name);
    memset(&h, 0x5a, sizeof h);
    const char *in = check_guard(row->in, n);
    http_parse_t got = parse(in, n, 0, &h, f, err);
    CHECK_EQ_INT(got, row->want);
    if (got == HTTP_PARSE_ERROR)
        CHECK(err[0] != '\0');
    if (got == HTTP_PARSE_DONE && row->want == HTTP_PARSE_DONE) {
        CHECK_EQ_INT(h.status, row->status);
        CHECK_EQ_INT(h.framing, row->framing);
        CHECK(h.content_length == row->content_length);
        CHECK_EQ_INT(h.keep_alive, row->keep_alive);
        CHECK_EQ_INT(h.head_len, n - row->body);
        if (row->id) {
            CHECK(f[F_ID].value != NULL);
            if (f[F_ID].value) {
                CHECK_EQ_INT(f[F_ID].value_len, strlen(row->id));
                CHECK(memcmp(f[F_ID].value, row->id, strlen(row->id)) == 0);
            }
        } else {
            CHECK(f[F_ID].value == NULL);
        }
    }

    /* Byte by byte, as a server that dribbles: MORE until the head is
     * complete (or already wrong), then the same answer. */
    check_case("head: %s (byte by byte)", row->name);
    http_parse_t step = HTTP_PARSE_MORE;
    size_t k;
    for (k = 1; k <= n && step == HTTP_PARSE_MORE; k++) {
        in = check_guard(row->in, k);
        step = parse(in, k, k - 1, &h, f, err);
    }
    CHECK_EQ_INT(step, row->want);
    if (step == HTTP_PARSE_DONE)
        CHECK_EQ_INT(k - 1, h.head_len);
}

/* check_head for rows that all want the same answer. */
static void check_bad_heads(const struct bad_head_row *rows, size_t count, http_parse_t want)
{
    for (size_t r = 0; r < count; r++) {
        const struct head_row row = {
            .name = rows[r].name, .in = rows[r].in, .len = rows[r].len, .want = want};
        check_head(&row);
    }
}

static void test_head_table(void)
{
    for (size_t r = 0; r < sizeof head_rows / sizeof head_rows[0]; r++)
        check_head(&head_rows[r]);
    check_bad_heads(refused_heads, sizeof refused_heads / sizeof refused_heads[0],
                    HTTP_PARSE_ERROR);
    check_bad_heads(incomplete_heads, sizeof incomplete_heads / sizeof incomplete_heads[0],
                    HTTP_PARSE_MORE);
}

static void test_head_limits(void)
{
    struct http_head h;
    struct http_field f[F_COUNT];
    char err[ERR_LEN];
    size_t n = HTTP_HEAD_MAX + 100;
    char *big = malloc(n);

    check_case("head: one byte over the limit");
    memcpy(big, OK200, strlen(OK200));
    for (size_t i = strlen(OK200); i < n; i += 100) { /* lines "X:aaa...\r\n" */
        size_t k = n - i < 100 ? n - i : 100;
        memset(big + i, 'a', k);
        memcpy(big + i, "X:", k < 2 ? k : 2);
        if (k == 100)
            memcpy(big + i + 98, "\r\n", 2);
    }
    CHECK_EQ_INT(parse(check_guard(big, HTTP_HEAD_MAX - 1), HTTP_HEAD_MAX - 1, 0, &h, f, err),
                 HTTP_PARSE_MORE);
    CHECK_EQ_INT(parse(check_guard(big, HTTP_HEAD_MAX), HTTP_HEAD_MAX, 0, &h, f, err),
                 HTTP_PARSE_ERROR);
    CHECK_EQ_INT(parse(check_guard(big, n), n, HTTP_HEAD_MAX - 1, &h, f, err), HTTP_PARSE_ERROR);

    check_case("head: exactly at the limit");
    size_t end = HTTP_HEAD_MAX;
    memset(big + strlen(OK200), 'a', end - strlen(OK200));
    memcpy(big + strlen(OK200), "X: ", 3);
    memcpy(big + end - 4, "\r\n\r\n", 4);
    CHECK_EQ_INT(parse(check_guard(big, end), end, 0, &h, f, err), HTTP_PARSE_DONE);
    CHECK_EQ_INT(h.head_len, end);

    check_case("head: many headers, incremental in 1 KiB steps");
    size_t len = 0;
    len += (size_t)snprintf(big + len, n - len, OK200);
    for (int i = 0; i < 1000; i++)
        len += (size_t)snprintf(big + len, n - len, "X-Header-%d: value %d\r\n", i, i);
    len += (size_t)snprintf(big + len, n - len, "Lambda-Runtime-Aws-Request-Id: last\r\n\r\n");
    http_parse_t step = HTTP_PARSE_MORE;
    size_t prev = 0;
    for (size_t k = 1024; step == HTTP_PARSE_MORE; k += 1024) {
        size_t m = k < len ? k : len;
        step = parse(big, m, prev, &h, f, err);
        prev = m;
    }
    CHECK_EQ_INT(step, HTTP_PARSE_DONE);
    CHECK_EQ_INT(h.head_len, len);
    CHECK(f[F_ID].value && f[F_ID].value_len == 4 && memcmp(f[F_ID].value, "last", 4) == 0);
    free(big);
}

struct chunk_row {
    const char *name;
    const char *in;
    size_t len; /* 0: strlen(in) */
    size_t cap; /* out->max; 0: 1 MiB */
    http_parse_t want;
    const char *data; /* decoded bytes */
    size_t data_len;  /* 0: strlen(data) */
    size_t rest;      /* DONE: bytes of `in` after the end */
    rc_t out_err;     /* out->err afterwards */
};

static const struct chunk_row chunk_rows[] = {
    {"one chunk", "5\r\nhello\r\n0\r\n\r\n", 0, 0, HTTP_PARSE_DONE, "hello", 0, 0, RC_OK},
    {"empty body", "0\r\n\r\n", 0, 0, HTTP_PARSE_DONE, "", 0, 0, RC_OK},
    {"several chunks", "3\r\nabc\r\n1\r\nd\r\nA\r\n0123456789\r\n0\r\n\r\n", 0, 0, HTTP_PARSE_DONE,
     "abcd0123456789", 0, 0, RC_OK},
    {"lower and upper hex", "a\r\n0123456789\r\nB\r\n0123456789a\r\n0\r\n\r\n", 0, 0,
     HTTP_PARSE_DONE, "01234567890123456789a", 0, 0, RC_OK},
    {"chunk extensions", "5;name=value;q=\"x y\"\r\nhello\r\n0;last\r\n\r\n", 0, 0, HTTP_PARSE_DONE,
     "hello", 0, 0, RC_OK},
    {"blanks before an extension", "5 \t;a=b\r\nhello\r\n0\r\n\r\n", 0, 0, HTTP_PARSE_DONE, "hello",
     0, 0, RC_OK},
    {"trailers", "5\r\nhello\r\n0\r\nX-Sum: 1\r\nY:2\r\n\r\n", 0, 0, HTTP_PARSE_DONE, "hello", 0, 0,
     RC_OK},
    {"leading zeros", "0005\r\nhello\r\n000\r\n\r\n", 0, 0, HTTP_PARSE_DONE, "hello", 0, 0, RC_OK},
    {"many leading zeros", "000000000000000000000000001\r\nx\r\n0\r\n\r\n", 0, 0, HTTP_PARSE_DONE,
     "x", 0, 0, RC_OK},
    {"binary data with CRLF inside", "4\r\n\r\n\0\n\r\n0\r\n\r\n", 14, 0, HTTP_PARSE_DONE,
     "\r\n\0\n", 4, 0, RC_OK},
    {"bytes after the end", "1\r\nx\r\n0\r\n\r\nHTTP/1.1 200 OK\r\n", 0, 0, HTTP_PARSE_DONE, "x", 0,
     17, RC_OK},
    {"exactly at the cap", "5\r\nhello\r\n0\r\n\r\n", 0, 5, HTTP_PARSE_DONE, "hello", 0, 0, RC_OK},
    {"over the cap in one chunk", "6\r\nhello!\r\n0\r\n\r\n", 0, 5, HTTP_PARSE_ERROR, "", 0, 0,
     RC_TOOBIG},
    {"over the cap over two chunks", "3\r\nabc\r\n3\r\ndef\r\n0\r\n\r\n", 0, 5, HTTP_PARSE_ERROR,
     "abc", 0, 0, RC_TOOBIG},
    {"16 hex digits: over any cap", "FFFFFFFFFFFFFFFF\r\n", 0, 0, HTTP_PARSE_ERROR, "", 0, 0,
     RC_TOOBIG},
    {"incomplete data", "5\r\nhel", 0, 0, HTTP_PARSE_MORE, "hel", 0, 0, RC_OK},
    {"incomplete size line", "5;ext", 0, 0, HTTP_PARSE_MORE, "", 0, 0, RC_OK},
    {"incomplete end", "5\r\nhello\r\n0\r\n", 0, 0, HTTP_PARSE_MORE, "hello", 0, 0, RC_OK},
    {"incomplete trailer", "0\r\nX: 1\r\n", 0, 0, HTTP_PARSE_MORE, "", 0, 0, RC_OK},
    {"nothing yet", "", 0, 0, HTTP_PARSE_MORE, "", 0, 0, RC_OK},
};

/* Malformed chunked bodies: HTTP_PARSE_ERROR (with a reason in err) whatever
 * the pieces, and out->err untouched. */
struct bad_chunk_row {
    const char *name;
    const char *in;
    size_t len; /* 0: strlen(in) */
};

static const struct bad_chunk_row malformed_chunks[] = {
    {"17 hex digits: overflow", "10000000000000000\r\n", 0},
    {"40 hex digits: overflow", "ffffffffffffffffffffffffffffffffffffffff\r\n", 0},
    {"size missing", "\r\nhello\r\n", 0},
    {"extension without size", ";a=b\r\n", 0},
    {"negative size", "-5\r\nhello\r\n", 0},
    {"0x prefix", "0x5\r\nhello\r\n", 0},
    {"plus sign", "+5\r\nhello\r\n", 0},
    {"blank before size", " 5\r\nhello\r\n", 0},
    {"blank after size without extension", "5 \r\nhello\r\n", 0},
    {"bare LF after size", "5\nhello\r\n0\r\n\r\n", 0},
    {"bare LF after data", "5\r\nhello\n0\r\n\r\n", 0},
    {"data longer than its size", "5\r\nhelloX\r\n0\r\n\r\n", 0},
    {"control character in an extension", "5;a\x01\r\nhello\r\n", 0},
    {"NUL in an extension", "5;a\0b\r\nhello\r\n", 12},
    {"CR without LF in size line", "5\rhello", 0},
    {"trailer obs-fold", "0\r\nX: a\r\n b\r\n\r\n", 0},
    {"trailer without colon", "0\r\nXY\r\n\r\n", 0},
    {"trailer with control", "0\r\nX: a\x02\r\n\r\n", 0},
    {"final line not CRLF", "0\r\n\rX", 0},
};

/* Feeds `in` to a fresh decoder in pieces of `step` bytes (0: whole), each
 * piece against a guard page.  Returns the result and fills *consumed. */
static http_parse_t decode_in_pieces(const char *in, size_t n, size_t step, struct buf *out,
                                     size_t *consumed)
{
    struct http_chunked c;
    char err[ERR_LEN] = "";
    http_parse_t r = HTTP_PARSE_MORE;
    size_t pos = 0;

    http_chunked_init(&c);
    *consumed = 0;
    if (n == 0) {
        size_t used;
        return http_chunked_decode(&c, check_guard("", 0), 0, &used, out, err);
    }
    while (pos < n && r == HTTP_PARSE_MORE) {
        size_t k = step && n - pos > step ? step : n - pos, used;
        r = http_chunked_decode(&c, check_guard(in + pos, k), k, &used, out, err);
        CHECK(used <= k);
        if (r == HTTP_PARSE_MORE)
            CHECK_EQ_INT(used, k);
        if (r == HTTP_PARSE_ERROR)
            CHECK(err[0] != '\0');
        pos += used;
    }
    *consumed = pos;
    return r;
}

/* Decodes row->in whole and in pieces of 1, 2, 3 and 7 bytes (a case each);
 * the decoded bytes are compared unless the row wants an error. */
static void check_chunks(const struct chunk_row *row)
{
    size_t n = row->len ? row->len : strlen(row->in);
    size_t want_len = row->data_len ? row->data_len : strlen(row->data);
    size_t steps[] = {0, 1, 2, 3, 7};

    for (size_t s = 0; s < sizeof steps / sizeof steps[0]; s++) {
        struct buf out;
        size_t consumed;

        check_case("chunked: %s (pieces of %zu)", row->name, steps[s]);
        buf_init(&out, row->cap ? row->cap : 1024 * 1024);
        http_parse_t got = decode_in_pieces(row->in, n, steps[s], &out, &consumed);
        CHECK_EQ_INT(got, row->want);
        CHECK_EQ_INT(out.err, row->out_err);
        if (row->want != HTTP_PARSE_ERROR) {
            CHECK_EQ_INT(out.len, want_len);
            CHECK(out.len == want_len &&
                  (want_len == 0 || memcmp(out.data, row->data, want_len) == 0));
        }
        if (got == HTTP_PARSE_DONE)
            CHECK_EQ_INT(n - consumed, row->rest);
        buf_free(&out);
    }
}

static void test_chunked_table(void)
{
    for (size_t r = 0; r < sizeof chunk_rows / sizeof chunk_rows[0]; r++)
        check_chunks(&chunk_rows[r]);
    for (size_t r = 0; r < sizeof malformed_chunks / sizeof malformed_chunks[0]; r++) {
        const struct chunk_row row = {.name = malformed_chunks[r].name,
                                      .in = malformed_chunks[r].in,
                                      .len = malformed_chunks[r].len,
                                      .want = HTTP_PARSE_ERROR,
                                      .data = "",
                                      .out_err = RC_OK};
        check_chunks(&row);
    }
}

static void test_chunked_split_everywhere(void)
{
    static const char in[] = "4;x=y\r\nWiki\r\n5\r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n"
                             "0\r\nExpires: never\r\n\r\n";
    size_t n = sizeof in - 1;

    check_case("chunked: split in two at every point");
    for (size_t cut = 0; cut <= n; cut++) {
        struct http_chunked c;
        struct buf out;
        char err[ERR_LEN];
        size_t u1, u2;

        buf_init(&out, 1024);
        http_chunked_init(&c);
        http_parse_t r1 = http_chunked_decode(&c, check_guard(in, cut), cut, &u1, &out, err);
        http_parse_t r2 =
            r1 == HTTP_PARSE_MORE
                ? http_chunked_decode(&c, check_guard(in + cut, n - cut), n - cut, &u2, &out, err)
                : r1;
        CHECK_EQ_INT(r2, HTTP_PARSE_DONE);
        CHECK_EQ_STR(out.data, "Wikipedia in\r\n\r\nchunks.");
        buf_free(&out);
    }

    check_case("chunked: calls after DONE and after ERROR");
    struct http_chunked c;
    struct buf out;
    char err[ERR_LEN];
    size_t used;
    buf_init(&out, 1024);
    http_chunked_init(&c);
    CHECK_EQ_INT(http_chunked_decode(&c, "0\r\n\r\n", 5, &used, &out, err), HTTP_PARSE_DONE);
    CHECK_EQ_INT(http_chunked_decode(&c, "1\r\n", 3, &used, &out, err), HTTP_PARSE_DONE);
    CHECK_EQ_INT(used, 0);
    http_chunked_init(&c);
    CHECK_EQ_INT(http_chunked_decode(&c, "z", 1, &used, &out, err), HTTP_PARSE_ERROR);
    CHECK_EQ_INT(http_chunked_decode(&c, "0\r\n\r\n", 5, &used, &out, err), HTTP_PARSE_ERROR);
    buf_free(&out);
}

static void test_chunked_limits(void)
{
    size_t n = HTTP_HEAD_MAX + 200;
    char *big = malloc(n);
    struct buf out;
    size_t consumed;

    check_case("chunked: size line over the limit");
    memset(big, 'a', n);
    memcpy(big, "5;", 2);
    buf_init(&out, 1024);
    CHECK_EQ_INT(decode_in_pieces(big, HTTP_LINE_MAX + 10, 0, &out, &consumed), HTTP_PARSE_ERROR);
    buf_free(&out);

    check_case("chunked: size line just under the limit");
    memcpy(big + HTTP_LINE_MAX - 1, "\r\nhello\r\n0\r\n\r\n", 15);
    buf_init(&out, 1024);
    CHECK_EQ_INT(decode_in_pieces(big, HTTP_LINE_MAX + 14, 0, &out, &consumed), HTTP_PARSE_DONE);
    buf_free(&out);

    check_case("chunked: trailers over the limit");
    size_t len = 0;
    memcpy(big, "0\r\n", 3);
    len = 3;
    while (len + 20 < n) {
        memcpy(big + len, "X-Trailer: 12345\r\n", 18);
        len += 18;
    }
    buf_init(&out, 1024);
    CHECK_EQ_INT(decode_in_pieces(big, len, 4096, &out, &consumed), HTTP_PARSE_ERROR);
    buf_free(&out);

    check_case("chunked: a million one-byte chunks");
    size_t cn = 1000000, total = cn * 6 + 5;
    char *many = malloc(total);
    for (size_t i = 0; i < cn; i++)
        memcpy(many + i * 6, "1\r\nz\r\n", 6);
    memcpy(many + cn * 6, "0\r\n\r\n", 5);
    buf_init(&out, 2 * 1024 * 1024);
    CHECK_EQ_INT(decode_in_pieces(many, total, 65536, &out, &consumed), HTTP_PARSE_DONE);
    CHECK_EQ_INT(out.len, cn);
    buf_free(&out);
    free(many);
    free(big);
}

static void test_client_args(void)
{
    char err[ERR_LEN];

    check_case("http_new refuses malformed arguments");
    CHECK(http_new("", "9001", NULL, err) == NULL);
    CHECK(http_new("127.0.0.1", "0", NULL, err) == NULL);
    CHECK(http_new("127.0.0.1", "65536", NULL, err) == NULL);
    CHECK(http_new("127.0.0.1", "90a", NULL, err) == NULL);
    CHECK(http_new("bad host", "9001", NULL, err) == NULL);
    CHECK(http_new("a/b", "9001", NULL, err) == NULL);
    struct http_client *c = http_new("::1", "9001", NULL, err);
    CHECK(c != NULL);
    http_free(c);
    http_free(NULL);
}

int main(void)
{
    test_head_table();
    test_head_limits();
    test_chunked_table();
    test_chunked_split_everywhere();
    test_chunked_limits();
    test_client_args();
    return check_finish();
}
