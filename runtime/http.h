/* http.h - a small HTTP/1.1 client for one loopback peer (the Lambda Runtime API).
 *
 * Two pure, incremental parsers over byte buffers (the response head and the
 * chunked body framing), unit-tested and fuzzed without sockets, and a client
 * that keeps one connection alive across requests, reconnects when the peer
 * closed it, and caps response bodies. */
#ifndef HTTP_H
#define HTTP_H

#include <signal.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "log.h"
#include "result.h"

#define HTTP_HEAD_MAX (64 * 1024) /* status line + headers + blank line; also trailers */
#define HTTP_LINE_MAX 4096        /* a chunk-size line with its extensions */
#define HTTP_FIELDS_MAX 16        /* wanted headers per exchange */

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

/* State of a chunked-body decoder; set up with http_chunked_init. */
struct http_chunked {
    int state;          /* where in the framing the decoder is (internal) */
    uint64_t remaining; /* data bytes still to come in the current chunk */
    size_t line;        /* bytes of the current size line so far (HTTP_LINE_MAX) */
    size_t trailer;     /* bytes of trailer lines so far (HTTP_HEAD_MAX) */
    unsigned ndigits;   /* significant hex digits of the chunk size so far */
    int any_digit;      /* the size line had at least one digit (maybe a 0) */
    char digits[16];    /* those digits, for num_parse_hex */
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

/* An extra request header. */
struct http_header {
    const char *name;  /* a token, e.g. "Lambda-Runtime-Function-Error-Type" */
    const char *value; /* NUL-terminated; CR, LF and NUL are refused */
};

/* One request to send. */
struct http_request {
    const char *method;                /* "GET", "POST" */
    const char *path;                  /* origin form, starts with '/', no blanks or controls */
    const struct http_header *headers; /* extra headers, or NULL */
    size_t nheaders;
    const char *body; /* request body (Content-Length is added for it), or NULL */
    size_t body_len;
    int timeout_ms; /* limit on the whole exchange, connecting included; 0: none (a long poll) */
    int retry_safe; /* 1: may be re-sent once when a reused connection dies after the whole
                       request went out and before any byte of the response came back,
                       i.e. when the server may or may not have acted on it */
    const sigset_t *sigmask; /* NULL, or the signal mask to wait for the first byte of the
                                response with (ppoll): a signal the caller keeps blocked
                                otherwise is let in there only, and one caught ends the
                                exchange with RC_IO and resp->interrupted set */
};

/* Where a response goes. */
struct http_response {
    int status;                /* out: status of the final response, 0 when none came */
    struct buf *body;          /* in: caller-owned, reset here; its max is the body cap */
    struct http_field *fields; /* in/out: wanted headers (at most HTTP_FIELDS_MAX); values are
                                  copies owned by the client, NUL-terminated, valid until its
                                  next exchange */
    size_t nfields;
    int unreachable; /* out: 1 when no connection could be made after the bounded retries */
    int resent;      /* out: 1 when the request was sent again on a new connection */
    int interrupted; /* out: 1 when a signal ended the wait for the response (sigmask) */
};

struct http_client; /* opaque: the peer's address, one connection, buffers */

/* Creates a client for host:port (a name or a numeric address; port in
 * decimal).  Connects lazily.  `lg` (borrowed, may be NULL) receives one line
 * per connection problem.  Returns NULL with `err` filled when memory is short
 * or an argument is malformed.  The caller frees it with http_free. */
struct http_client *http_new(const char *host, const char *port, struct logger *lg,
                             char err[ERR_LEN]);

/* Closes the connection and frees the client; NULL is allowed. */
void http_free(struct http_client *c);

/* Sends one request and reads the response into `resp`, reusing the kept-alive
 * connection, opening one when there is none (up to 10 attempts, 10 ms
 * doubling to 1 s apart, when the connection is refused; with a timeout,
 * connecting and its retries end by it too) and sending again
 * once on a new connection when a reused one turns out dead: always when the
 * request could not be written whole (the server cannot have seen it), and
 * with req->retry_safe also when it was written but nothing came back.
 * Returns RC_OK with any status (the caller judges it), RC_TOOBIG when the
 * body is over resp->body->max (status and fields are filled; the connection
 * is closed so the next exchange starts clean), RC_IO (cannot connect, see
 * resp->unreachable; the connection broke; timeout), RC_PROTOCOL (malformed
 * response), RC_INVALID (a bad request argument), RC_NOMEM.  On failure the
 * connection is closed. */
rc_t http_exchange(struct http_client *c, const struct http_request *req,
                   struct http_response *resp, char err[ERR_LEN]);

#endif
