/* http_parse.c - the pure halves of the HTTP/1.1 client: the response head
 * parser and the chunked body decoder.
 *
 * Pure functions over bytes (no socket, no clock, no allocation but the
 * caller's output buffer), so that the unit tests and the fuzzer
 * (tests/fuzz/fuzz_http.c) reach all of them; runtime/http.c feeds them what
 * it reads from the connection. */
#include "http_parse.h"

#include <string.h>

#include "num.h"

/* ---- character classes (RFC 9110 section 5.6) ---------------------------------------------- */

/* See http_parse.h. */
int http_is_tchar(unsigned char c)
{
    if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'))
        return 1;
    return c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

/* See http_parse.h. */
int http_is_field_char(unsigned char c)
{
    return c == '\t' || (c >= 0x20 && c != 0x7f);
}

static int is_blank(char c)
{
    return c == ' ' || c == '\t';
}

static int is_hex(unsigned char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

static unsigned char lower(unsigned char c)
{
    return c >= 'A' && c <= 'Z' ? (unsigned char)(c + ('a' - 'A')) : c;
}

/* Compares n bytes of a with the NUL-terminated b, ignoring ASCII case. */
static int ieq(const char *a, size_t n, const char *b)
{
    for (size_t i = 0; i < n; i++)
        if (b[i] == '\0' || lower((unsigned char)a[i]) != lower((unsigned char)b[i]))
            return 0;
    return b[n] == '\0';
}

/* Narrows [*s, *e) of v to drop blanks on both sides. */
static void trim(const char *v, size_t *s, size_t *e)
{
    while (*s < *e && is_blank(v[*s]))
        (*s)++;
    while (*e > *s && is_blank(v[*e - 1]))
        (*e)--;
}

/* ---- the response head ---------------------------------------------------------------------- */

/* Finds the end of the head (just past the empty line) looking only at line
 * feeds at or after `from`; returns 0 when it is not there yet. */
static size_t find_head_end(const char *p, size_t n, size_t from)
{
    for (size_t i = from; i < n; i++) {
        if (p[i] != '\n' || i == 0)
            continue;
        if (p[i - 1] == '\n' || (i >= 2 && p[i - 1] == '\r' && p[i - 2] == '\n'))
            return i + 1;
    }
    return 0;
}

/* Steps *i (0 at the start) over the next element of the comma-separated
 * list v[0..n) (RFC 9110 section 5.6.1) and sets [*s, *e) to it without the
 * blanks around it (s == e: an empty element).  Returns 1, or 0 once every
 * element was given (a list of n bytes has one more element than commas). */
static int list_next(const char *v, size_t n, size_t *i, size_t *s, size_t *e)
{
    if (*i > n)
        return 0;
    *s = *i;
    while (*i < n && v[*i] != ',')
        (*i)++;
    *e = (*i)++;
    trim(v, s, e);
    return 1;
}

/* Parses one Content-Length value: a list of equal decimal numbers (RFC 9110
 * section 8.6 lets a recipient accept "5, 5").  Returns 0, or -1 when it is
 * malformed or disagrees with an earlier one. */
static int parse_content_length(const char *v, size_t n, int *have, uint64_t *cl)
{
    size_t i = 0, s, e;
    int64_t x;

    while (list_next(v, n, &i, &s, &e)) {
        if (s == e || num_parse_i64(v + s, e - s, 0, INT64_MAX, &x) != RC_OK)
            return -1;
        if (*have && *cl != (uint64_t)x)
            return -1;
        *have = 1;
        *cl = (uint64_t)x;
    }
    return 0;
}

/* Counts the codings of one Transfer-Encoding value into *chunked; returns
 * -1 for any coding but "chunked" (we never ask for one, so we cannot undo it). */
static int parse_transfer_encoding(const char *v, size_t n, int *chunked)
{
    size_t i = 0, s, e;

    while (list_next(v, n, &i, &s, &e)) {
        if (s == e)
            continue;
        if (!ieq(v + s, e - s, "chunked"))
            return -1;
        (*chunked)++;
    }
    return 0;
}

/* Notes the "close" and "keep-alive" options of one Connection value. */
static void parse_connection(const char *v, size_t n, int *close, int *keep)
{
    size_t i = 0, s, e;

    while (list_next(v, n, &i, &s, &e)) {
        if (ieq(v + s, e - s, "close"))
            *close = 1;
        else if (ieq(v + s, e - s, "keep-alive"))
            *keep = 1;
    }
}

/* Checks the status line p[0..n) (without its line end) and fills h. */
static http_parse_t parse_status_line(const char *p, size_t n, struct http_head *h,
                                      char err[ERR_LEN])
{
    int64_t status;

    if (n < 12 || memcmp(p, "HTTP/1.", 7) != 0 || (p[7] != '0' && p[7] != '1') || p[8] != ' ' ||
        num_parse_i64(p + 9, 3, 100, 599, &status) != RC_OK || (n > 12 && p[12] != ' ')) {
        err_set(err, "malformed status line");
        return HTTP_PARSE_ERROR;
    }
    for (size_t i = 13; i < n; i++) {
        if (!http_is_field_char((unsigned char)p[i])) {
            err_set(err, "control character in the reason phrase");
            return HTTP_PARSE_ERROR;
        }
    }
    h->minor = p[7] - '0';
    h->status = (int)status;
    return HTTP_PARSE_DONE;
}

http_parse_t http_parse_head(const char *p, size_t n, size_t last_len, struct http_head *h,
                             struct http_field *fields, size_t nfields, char err[ERR_LEN])
{
    static const char prefix[] = "HTTP/";
    size_t end, pos, limit = n < HTTP_HEAD_MAX ? n : HTTP_HEAD_MAX;
    uint64_t cl = 0;
    int have_cl = 0, chunked = 0, have_te = 0, conn_close = 0, conn_keep = 0;

    if (n == 0)
        return HTTP_PARSE_MORE;
    /* Refuse a peer that does not speak HTTP at once, rather than waiting
     * for 64 KiB of something else. */
    if (memcmp(p, prefix, n < 5 ? n : 5) != 0) {
        err_set(err, "response does not start with HTTP/");
        return HTTP_PARSE_ERROR;
    }
    end = find_head_end(p, limit, last_len >= 2 ? last_len - 2 : 0);
    if (end == 0) {
        if (n >= HTTP_HEAD_MAX) {
            err_set(err, "response head over %d bytes", HTTP_HEAD_MAX);
            return HTTP_PARSE_ERROR;
        }
        return HTTP_PARSE_MORE;
    }

    for (size_t i = 0; i < nfields; i++) {
        fields[i].value = NULL;
        fields[i].value_len = 0;
    }
    pos = 0;
    for (int first = 1;; first = 0) {
        const char *line = p + pos;
        const char *lf = memchr(line, '\n', end - pos);
        size_t len = (size_t)(lf - line); /* lf is found: the head ends with one */
        pos += len + 1;
        if (len && line[len - 1] == '\r')
            len--;
        if (memchr(line, '\r', len)) {
            err_set(err, "bare CR in the response head");
            return HTTP_PARSE_ERROR;
        }
        if (first) {
            if (parse_status_line(line, len, h, err) != HTTP_PARSE_DONE)
                return HTTP_PARSE_ERROR;
            continue;
        }
        if (len == 0)
            break; /* the empty line */

        size_t name = 0, vs, ve = len;
        while (name < len && http_is_tchar((unsigned char)line[name]))
            name++;
        if (name == 0 || name == len || line[name] != ':') {
            err_set(err, is_blank(line[0]) ? "obsolete line folding in the response head"
                                           : "malformed header line");
            return HTTP_PARSE_ERROR;
        }
        vs = name + 1;
        trim(line, &vs, &ve);
        for (size_t i = vs; i < ve; i++) {
            if (!http_is_field_char((unsigned char)line[i])) {
                err_set(err, "control character in a header value");
                return HTTP_PARSE_ERROR;
            }
        }
        const char *v = line + vs;
        size_t vn = ve - vs;
        if (ieq(line, name, "content-length")) {
            if (parse_content_length(v, vn, &have_cl, &cl) != 0) {
                err_set(err, "malformed or disagreeing Content-Length");
                return HTTP_PARSE_ERROR;
            }
        } else if (ieq(line, name, "transfer-encoding")) {
            have_te = 1;
            if (parse_transfer_encoding(v, vn, &chunked) != 0) {
                err_set(err, "unsupported transfer coding");
                return HTTP_PARSE_ERROR;
            }
        } else if (ieq(line, name, "connection")) {
            parse_connection(v, vn, &conn_close, &conn_keep);
        }
        for (size_t i = 0; i < nfields; i++) {
            if (!ieq(line, name, fields[i].name))
                continue;
            if (fields[i].value) {
                err_set(err, "repeated header %s", fields[i].name);
                return HTTP_PARSE_ERROR;
            }
            fields[i].value = v;
            fields[i].value_len = vn;
        }
    }
    if (have_te && chunked != 1) {
        err_set(err, "Transfer-Encoding is not exactly \"chunked\"");
        return HTTP_PARSE_ERROR;
    }

    h->content_length = 0;
    if (h->status < 200 || h->status == 204 || h->status == 304) {
        h->framing = HTTP_BODY_NONE;
    } else if (chunked) {
        h->framing = HTTP_BODY_CHUNKED;
        /* Both framings at once is how requests get smuggled: use chunked,
         * as RFC 9112 says, but never trust this connection again. */
        if (have_cl)
            conn_close = 1;
    } else if (have_cl) {
        h->framing = HTTP_BODY_LENGTH;
        h->content_length = cl;
    } else {
        h->framing = HTTP_BODY_CLOSE;
        conn_close = 1;
    }
    h->keep_alive = h->minor == 1 ? !conn_close : conn_keep && !conn_close;
    h->head_len = pos; /* == end unless last_len was wrong and an earlier blank line ended it */
    return HTTP_PARSE_DONE;
}

/* ---- the chunked body ----------------------------------------------------------------------- */

enum {
    CH_SIZE,          /* hex digits of the chunk size */
    CH_SIZE_WS,       /* blanks after the size, before a ';' */
    CH_EXT,           /* chunk extensions, up to the CR */
    CH_SIZE_LF,       /* the LF of the size line */
    CH_DATA,          /* chunk data */
    CH_DATA_CR,       /* the CRLF after chunk data */
    CH_DATA_LF,       /* */
    CH_TRAILER_START, /* start of a trailer line, or the final CRLF */
    CH_TRAILER_NAME,  /* a trailer field name */
    CH_TRAILER_VALUE, /* a trailer field value, up to the CR */
    CH_TRAILER_LF,    /* the LF of a trailer line */
    CH_END_LF,        /* the LF of the final empty line */
    CH_DONE,
    CH_ERROR,
};

void http_chunked_init(struct http_chunked *c)
{
    memset(c, 0, sizeof *c);
    c->_state = CH_SIZE;
}

/* Turns the collected digits into the chunk size and checks it against the
 * room left in `out`; returns -1 with err filled when it does not fit. */
static int end_chunk_size(struct http_chunked *c, struct buf *out, char err[ERR_LEN])
{
    uint64_t v = 0;

    if (c->_ndigits && num_parse_hex(c->_digits, c->_ndigits, UINT64_MAX, &v) != RC_OK) {
        err_set(err, "malformed chunk size");
        return -1;
    }
    c->_remaining = v;
    if (out->err == RC_OK && v > (uint64_t)(out->max - out->len))
        out->err = RC_TOOBIG;
    if (out->err != RC_OK || buf_reserve(out, (size_t)v) != RC_OK) {
        err_set(err, "chunked body over %zu bytes", out->max);
        return -1;
    }
    return 0;
}

/* The byte classes a line-shaped state lets through (struct ch_step). */
enum { BYTES_NONE, BYTES_BLANK, BYTES_FIELD, BYTES_TOKEN };

/* What a byte does in each state that reads a line a byte at a time (all
 * but CH_SIZE and CH_DATA): `end` moves the decoder to `next`; a byte of
 * class `stay` keeps it where it is (in CH_TRAILER_START, the first byte of
 * a name moves it to CH_TRAILER_NAME); any other byte fails, saying `bad`.
 * The CR and LF that end a line are the `end` of two states of their own. */
static const struct ch_step {
    unsigned char end, next, stay;
    const char *bad;
} ch_steps[CH_DONE] = {
    [CH_SIZE_WS] = {';', CH_EXT, BYTES_BLANK, "malformed chunk extension"},
    [CH_EXT] = {'\r', CH_SIZE_LF, BYTES_FIELD, "control character in a chunk extension"},
    [CH_SIZE_LF] = {'\n', CH_DATA, BYTES_NONE, "chunk-size line not ended by CRLF"},
    [CH_DATA_CR] = {'\r', CH_DATA_LF, BYTES_NONE, "chunk data not followed by CRLF"},
    [CH_DATA_LF] = {'\n', CH_SIZE, BYTES_NONE, "chunk data not followed by CRLF"},
    [CH_TRAILER_START] = {'\r', CH_END_LF, BYTES_TOKEN, "malformed trailer line"},
    [CH_TRAILER_NAME] = {':', CH_TRAILER_VALUE, BYTES_TOKEN, "malformed trailer line"},
    [CH_TRAILER_VALUE] = {'\r', CH_TRAILER_LF, BYTES_FIELD, "control character in a trailer"},
    [CH_TRAILER_LF] = {'\n', CH_TRAILER_START, BYTES_NONE, "trailer line not ended by CRLF"},
    [CH_END_LF] = {'\n', CH_DONE, BYTES_NONE, "chunked body not ended by CRLF"},
};

/* Is ch of the byte class `bytes` (BYTES_*)? */
static int in_class(int bytes, unsigned char ch)
{
    return bytes == BYTES_BLANK   ? is_blank((char)ch)
           : bytes == BYTES_FIELD ? http_is_field_char(ch)
           : bytes == BYTES_TOKEN ? http_is_tchar(ch)
                                  : 0;
}

/* Takes one byte of the chunk-size digits (CH_SIZE): the size ends at the
 * first byte that is not a hex digit, which must be ';', a blank or the CR.
 * Returns 0, or -1 with err filled. */
static int size_byte(struct http_chunked *c, unsigned char ch, struct buf *out, char err[ERR_LEN])
{
    if (is_hex(ch)) {
        c->_any_digit = 1;
        if (c->_ndigits == 0 && ch == '0')
            return 0; /* a leading zero */
        if (c->_ndigits == sizeof c->_digits) {
            err_set(err, "chunk size over 16 hex digits");
            return -1;
        }
        c->_digits[c->_ndigits++] = (char)ch;
        return 0;
    }
    if (!c->_any_digit) {
        err_set(err, "chunk size missing");
        return -1;
    }
    if (ch == ';')
        c->_state = CH_EXT;
    else if (is_blank((char)ch))
        c->_state = CH_SIZE_WS;
    else if (ch == '\r')
        c->_state = CH_SIZE_LF;
    else {
        err_set(err, "malformed chunk size");
        return -1;
    }
    return end_chunk_size(c, out, err);
}

/* Takes one byte in a line-shaped state, as ch_steps says; at the end of
 * the size line, readies the next one and goes to the data (or, after the
 * last chunk, the trailers).  Returns 0, or -1 with err filled. */
static int line_byte(struct http_chunked *c, unsigned char ch, char err[ERR_LEN])
{
    const struct ch_step *step = &ch_steps[c->_state];

    if (ch == step->end) {
        c->_state = step->next;
        if (step->next == CH_DATA) {
            c->_line = 0;
            c->_ndigits = 0;
            c->_any_digit = 0;
            c->_state = c->_remaining ? CH_DATA : CH_TRAILER_START;
        }
        return 0;
    }
    if (in_class(step->stay, ch)) {
        if (c->_state == CH_TRAILER_START)
            c->_state = CH_TRAILER_NAME;
        return 0;
    }
    err_set(err, "%s", step->bad);
    return -1;
}

http_parse_t http_chunked_decode(struct http_chunked *c, const char *in, size_t n, size_t *used,
                                 struct buf *out, char err[ERR_LEN])
{
    size_t i = 0;

    *used = 0;
    if (c->_state == CH_DONE)
        return HTTP_PARSE_DONE;
    if (c->_state == CH_ERROR) {
        err_set(err, "chunked decoder already failed");
        return HTTP_PARSE_ERROR;
    }
    while (i < n) {
        unsigned char ch = (unsigned char)in[i];

        if (c->_state == CH_DATA) {
            size_t k = n - i;
            if ((uint64_t)k > c->_remaining)
                k = (size_t)c->_remaining;
            if (buf_append(out, in + i, k) != RC_OK) {
                err_set(err, "chunked body over %zu bytes", out->max);
                goto fail;
            }
            i += k;
            c->_remaining -= k;
            if (c->_remaining == 0)
                c->_state = CH_DATA_CR;
            continue;
        }
        if (c->_state <= CH_EXT && ++c->_line > HTTP_LINE_MAX) {
            err_set(err, "chunk-size line over %d bytes", HTTP_LINE_MAX);
            goto fail;
        }
        if (c->_state >= CH_TRAILER_START && c->_state <= CH_TRAILER_LF &&
            ++c->_trailer > HTTP_HEAD_MAX) {
            err_set(err, "trailers over %d bytes", HTTP_HEAD_MAX);
            goto fail;
        }
        if (c->_state == CH_SIZE) {
            if (size_byte(c, ch, out, err) != 0)
                goto fail;
        } else if (c->_state > CH_SIZE && c->_state < CH_DONE) {
            if (line_byte(c, ch, err) != 0)
                goto fail;
        } else {
            err_set(err, "chunked decoder in a bad state");
            goto fail;
        }
        i++;
        if (c->_state == CH_DONE) {
            *used = i;
            return HTTP_PARSE_DONE;
        }
    }
    *used = n;
    return HTTP_PARSE_MORE;

fail:
    c->_state = CH_ERROR;
    *used = i;
    return HTTP_PARSE_ERROR;
}
