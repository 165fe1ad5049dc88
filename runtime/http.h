/* http.h - a small HTTP/1.1 client for one loopback peer (the Lambda Runtime
 * API, the secrets extension): it keeps one connection alive across
 * requests, reconnects when the peer closed it, and caps response bodies.
 * The parsers it uses are in http_parse.h. */
#ifndef HTTP_H
#define HTTP_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "http_parse.h"
#include "log.h"
#include "result.h"

#define HTTP_FIELDS_MAX 16 /* wanted headers per exchange */

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
    int timeout_ms; /* limit on the whole exchange; 0: none (a long poll) */
    int retry_safe; /* 1: may be re-sent once when a reused connection dies after the whole
                       request went out and before any byte of the response came back,
                       i.e. when the server may or may not have acted on it */
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
 * doubling to 1 s apart, when the connection is refused) and sending again
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
