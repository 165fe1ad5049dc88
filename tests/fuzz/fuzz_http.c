/* fuzz_http.c - libFuzzer target for the response head parser and the chunked
 * decoder.  Besides "does not crash", it checks that feeding the same bytes
 * whole or in small pieces gives the same answer (the parsers are
 * incremental, so the pieces must not matter), and aborts when it does not.
 *
 *   make build/fuzz/bin/fuzz_http && build/fuzz/bin/fuzz_http CORPUS_DIR */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "http_parse.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

enum { F_ID, F_DEADLINE, F_ARN, F_TRACE, F_COUNT };

static void want_fields(struct http_field *f)
{
    memset(f, 0, sizeof(struct http_field) * F_COUNT);
    f[F_ID].name = "Lambda-Runtime-Aws-Request-Id";
    f[F_DEADLINE].name = "Lambda-Runtime-Deadline-Ms";
    f[F_ARN].name = "Lambda-Runtime-Invoked-Function-Arn";
    f[F_TRACE].name = "Lambda-Runtime-Trace-Id";
}

/* Decodes in[0..n) in pieces of `step` bytes (0: whole) into out; returns the
 * result and the bytes consumed. */
static http_parse_t decode(const char *in, size_t n, size_t step, struct buf *out, size_t *pos)
{
    struct http_chunked c;
    char err[ERR_LEN];
    http_parse_t r = HTTP_PARSE_MORE;
    size_t used;

    http_chunked_init(&c);
    *pos = 0;
    if (n == 0)
        return http_chunked_decode(&c, in, 0, &used, out, err);
    while (*pos < n && r == HTTP_PARSE_MORE) {
        size_t k = step && n - *pos > step ? step : n - *pos;
        /* A private copy of each piece, so ASan sees any read past it. */
        char *piece = malloc(k);
        memcpy(piece, in + *pos, k);
        r = http_chunked_decode(&c, piece, k, &used, out, err);
        free(piece);
        if (used > k || (r == HTTP_PARSE_MORE && used != k))
            abort();
        *pos += used;
    }
    return r;
}

static void check_chunked(const char *in, size_t n, size_t cap, size_t step)
{
    struct buf whole, pieces;
    size_t pw, pp;

    buf_init(&whole, cap);
    buf_init(&pieces, cap);
    http_parse_t rw = decode(in, n, 0, &whole, &pw);
    http_parse_t rp = decode(in, n, step, &pieces, &pp);
    if (rw != rp)
        abort();
    if (rw != HTTP_PARSE_ERROR &&
        (whole.len != pieces.len || (whole.len && memcmp(whole.data, pieces.data, whole.len))))
        abort();
    if (rw == HTTP_PARSE_DONE && pw != pp)
        abort();
    if (whole.len > cap || (rw == HTTP_PARSE_ERROR && whole.err != pieces.err))
        abort();
    buf_free(&whole);
    buf_free(&pieces);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *p = (const char *)data;
    struct http_head hw, hp;
    struct http_field fw[F_COUNT], fp[F_COUNT];
    char err[ERR_LEN];
    size_t step = size ? (size_t)data[size - 1] % 7 + 1 : 1;

    /* The head, whole and grown `step` bytes at a time with last_len. */
    want_fields(fw);
    want_fields(fp);
    http_parse_t rw = http_parse_head(p, size, 0, &hw, fw, F_COUNT, err);
    http_parse_t rp = HTTP_PARSE_MORE;
    size_t k = 0, last = 0;
    while (rp == HTTP_PARSE_MORE && k < size) {
        k = size - k > step ? k + step : size;
        char *prefix = malloc(k);
        memcpy(prefix, p, k);
        rp = http_parse_head(prefix, k, last, &hp, fp, F_COUNT, err);
        free(prefix);
        last = k;
    }
    if (size && rw != rp)
        abort();
    if (rw == HTTP_PARSE_DONE) {
        if (hw.status != hp.status || hw.framing != hp.framing ||
            hw.content_length != hp.content_length || hw.keep_alive != hp.keep_alive ||
            hw.head_len != hp.head_len || hw.head_len > size || hw.status < 100 || hw.status > 599)
            abort();
        for (int i = 0; i < F_COUNT; i++) {
            if ((fw[i].value == NULL) != (fp[i].value == NULL) ||
                fw[i].value_len != fp[i].value_len)
                abort();
            if (fw[i].value && (fw[i].value < p || fw[i].value + fw[i].value_len > p + size))
                abort();
        }
        if (hw.framing == HTTP_BODY_CHUNKED)
            check_chunked(p + hw.head_len, size - hw.head_len, 1024 * 1024, step);
    }

    /* The chunked decoder on the raw bytes too, with a small cap so that
     * "over the limit" is reached as well. */
    check_chunked(p, size, size ? (size_t)data[0] * 16 : 64, step);
    return 0;
}
