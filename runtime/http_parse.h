/* http_parse.h - the pure halves of the HTTP/1.1 client: an incremental
 * response head parser and a chunked body decoder, over byte buffers, with
 * no socket, clock or allocation (apart from appending a body to the
 * caller's buffer).  Unit-tested and fuzzed without a network; runtime/http.c
 * drives them from its connection.  As curl keeps http_chunks.c apart from
 * its transfer code. */
#ifndef HTTP_PARSE_H
#define HTTP_PARSE_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "result.h"

#define HTTP_HEAD_MAX (64 * 1024) /* status line + headers + blank line; also trailers */
#define HTTP_LINE_MAX 4096        /* a chunk-size line with its extensions */

/* What an incremental parser made of the bytes it was given. */
typedef enum {
    HTTP_PARSE_DONE,  /* complete; the parser says how many bytes it used */
    HTTP_PARSE_MORE,  /* incomplete so far: call again with more bytes */
    HTTP_PARSE_ERROR, /* malformed or over a limit; err says why */
} http_parse_t;

/* How the body of a response is delimited (RFC 9112 section 6.3). */
enum http_framing {
    HTTP_BODY_NONE,    /* no body: 1xx, 204, 304 */
    HTTP_BODY_LENGTH,  /* exactly content_length bytes */
    HTTP_BODY_CHUNKED, /* Transfer-Encoding: chunked */
    HTTP_BODY_CLOSE,   /* until the server closes the connection (HTTP/1.0 style) */
};

/* A parsed response head. */
struct http_head {
    int status; /* 100..599 */
    int minor;  /* the 1.x of HTTP/1.x: 0 or 1 */
    enum http_framing framing;
    uint64_t content_length; /* HTTP_BODY_LENGTH only: the body size */
    int keep_alive;          /* the connection may carry another request afterwards */
    size_t head_len;         /* bytes of status line, header lines and blank line */
};

/* A response header the caller wants the value of.  Names match in any case. */
struct http_field {
    const char *name;  /* in: the header name, e.g. "Lambda-Runtime-Aws-Request-Id" */
    const char *value; /* out: the value without surrounding blanks, not NUL-terminated by
                          http_parse_head (a view into its input); NUL-terminated by
                          http_exchange (a copy in the client); NULL when absent */
    size_t value_len;  /* out: bytes of value */
};

/* Parses a response head from p[0..n).  `last_len` is the n of the previous
 * call on the same (grown) input, or 0, so that feeding bytes one at a time
 * costs linear time.  Line ends are CRLF or a bare LF; a bare CR, obs-fold
 * continuation lines, disagreeing or malformed Content-Length, transfer
 * codings other than "chunked", a repeated wanted field and a head over
 * HTTP_HEAD_MAX are errors.  On DONE fills *h and the wanted fields' values
 * (views into p, valid as long as p).  Pure: no allocation, no I/O. */
http_parse_t http_parse_head(const char *p, size_t n, size_t last_len, struct http_head *h,
                             struct http_field *fields, size_t nfields, char err[ERR_LEN]);

/* State of a chunked-body decoder; set up with http_chunked_init.  Its
 * fields are private to http_parse.c (as picohttpparser marks its decoder's
 * with a leading underscore): it is declared here only so that a caller can
 * keep one on the stack; read or set none of them. */
struct http_chunked {
    int _state;          /* where in the framing the decoder is */
    uint64_t _remaining; /* data bytes still to come in the current chunk */
    size_t _line;        /* bytes of the current size line so far (HTTP_LINE_MAX) */
    size_t _trailer;     /* bytes of trailer lines so far (HTTP_HEAD_MAX) */
    unsigned _ndigits;   /* significant hex digits of the chunk size so far */
    int _any_digit;      /* the size line had at least one digit (maybe a 0) */
    char _digits[16];    /* those digits, for num_parse_hex */
};

/* Readies a decoder for a new body; cannot fail. */
void http_chunked_init(struct http_chunked *c);

/* Decodes chunked framing from in[0..n), appending chunk data to `out`.
 * Returns DONE when the last chunk and the trailers are complete (*used: bytes
 * of `in` up to that end; any rest belongs to the next message), MORE when all
 * n bytes were consumed (*used == n), or ERROR: malformed framing (sizes over
 * 16 hex digits, control characters, lines over their limit, a missing CRLF)
 * or `out` refused the data, in which case out->err says why (RC_TOOBIG: the
 * body is over out->max).  Chunk extensions and trailer fields are checked
 * and dropped.  Pure apart from appending to `out`. */
http_parse_t http_chunked_decode(struct http_chunked *c, const char *in, size_t n, size_t *used,
                                 struct buf *out, char err[ERR_LEN]);

/* Returns 1 when c may appear in a token (a method, a header name; RFC 9110
 * section 5.6.2), else 0; cannot fail. */
int http_is_tchar(unsigned char c);

/* Returns 1 when c may appear in a field value or reason phrase (VCHAR, SP,
 * HTAB, obs-text), else 0; cannot fail. */
int http_is_field_char(unsigned char c);

#endif
