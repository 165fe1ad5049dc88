/* http.c - the HTTP/1.1 client: one kept-alive connection to a loopback
 * peer, around the parsers of http_parse.c.
 *
 * It is written for one peer that we trust to exist but not to be
 * well-behaved: every size is bounded, every syscall is restarted on EINTR,
 * and SIGPIPE is never raised (send with MSG_NOSIGNAL). */
#define _GNU_SOURCE /* ppoll */
#include "http.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "clock.h"
#include "num.h"

#define CONNECT_ATTEMPTS 10
#define BACKOFF_FIRST_MS 10
#define BACKOFF_MAX_MS 1000
#define CONNECT_TIMEOUT_MS 2000
#define READ_CHUNK (64 * 1024)

/* ---- the client ----------------------------------------------------------------------------- */

struct http_client {
    char *host;              /* owned: the peer's name or numeric address */
    char *port;              /* owned: decimal port */
    struct logger *lg;       /* borrowed, may be NULL */
    int fd;                  /* the connection, or -1 */
    unsigned long served;    /* complete responses read on fd: > 0 means "reused" */
    struct buf tx;           /* the request head being sent */
    struct buf rx;           /* bytes read from fd and not used yet */
    struct buf vals;         /* NUL-terminated copies of the wanted header values */
    const sigset_t *sigmask; /* the current request's, or NULL (see http_request) */
};

static void logw(const struct http_client *c, enum log_level lvl, const char *msg,
                 const char *detail, long long n)
{
    if (c->lg)
        log_at(c->lg, lvl, msg, LF_STR("host", c->host), LF_STR("port", c->port),
               LF_STR("error", detail), LF_NUM("attempt", n));
}

static void close_conn(struct http_client *c)
{
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
    c->served = 0;
    buf_reset(&c->rx);
}

/* Waits until fd is ready for `events` or the deadline (0: no deadline, and
 * no wait: the caller's blocking call waits).  Returns RC_OK or RC_IO. */
static rc_t wait_fd(int fd, short events, int64_t deadline, char err[ERR_LEN])
{
    if (deadline == 0)
        return RC_OK;
    for (;;) {
        struct pollfd pfd = {.fd = fd, .events = events};
        int64_t left = deadline - clock_mono_ms();
        if (left <= 0) {
            err_set(err, "timed out");
            return RC_IO;
        }
        int r = poll(&pfd, 1, left > 60000 ? 60000 : (int)left);
        if (r > 0)
            return RC_OK;
        if (r < 0 && errno != EINTR) {
            err_set(err, "poll: %s", strerror(errno));
            return RC_IO;
        }
    }
}

/* Opens one connection to any address of the peer, each address given
 * CONNECT_TIMEOUT_MS and none past `deadline` (0: none).  Returns RC_OK or RC_IO. */
static rc_t connect_once(struct http_client *c, int64_t deadline, char err[ERR_LEN])
{
    /* No AI_ADDRCONFIG: with only a loopback interface it can refuse the
     * very loopback address we want. */
    struct addrinfo hints = {
        .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV};
    struct addrinfo *res = NULL;
    rc_t rc = RC_IO;
    int fd = -1;

    int g = getaddrinfo(c->host, c->port, &hints, &res);
    if (g != 0) {
        err_set(err, "getaddrinfo: %s", gai_strerror(g));
        goto out;
    }
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        int soerr = 0, one = 1;
        socklen_t len = sizeof soerr;

        fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (fd < 0) {
            err_set(err, "socket: %s", strerror(errno));
            continue;
        }
        if (connect(fd, ai->ai_addr, ai->ai_addrlen) != 0) {
            if (errno != EINPROGRESS && errno != EINTR) {
                soerr = errno;
            } else if (wait_fd(fd, POLLOUT,
                               deadline && deadline < clock_mono_ms() + CONNECT_TIMEOUT_MS
                                   ? deadline
                                   : clock_mono_ms() + CONNECT_TIMEOUT_MS,
                               err) != RC_OK) {
                soerr = ETIMEDOUT;
            } else if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &len) != 0) {
                soerr = errno;
            }
        }
        if (soerr == 0 && fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK) != 0)
            soerr = errno;
        if (soerr != 0) {
            err_set(err, "connect: %s", strerror(soerr));
            close(fd);
            fd = -1;
            continue;
        }
        /* Requests go out in one sendmsg, but the head and body of a
         * response to a small request must not wait for a delayed ACK. */
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        c->fd = fd;
        c->served = 0;
        buf_reset(&c->rx);
        rc = RC_OK;
        break;
    }
out:
    if (res)
        freeaddrinfo(res);
    return rc;
}

/* Connects with bounded retries and exponential backoff, none of it past
 * `deadline` (0: none).  Returns RC_OK, or RC_IO with resp->unreachable set. */
static rc_t connect_retry(struct http_client *c, struct http_response *resp, int64_t deadline,
                          char err[ERR_LEN])
{
    struct backoff delay;
    int attempt;

    backoff_init(&delay, BACKOFF_FIRST_MS, BACKOFF_MAX_MS);
    for (attempt = 1;; attempt++) {
        if (connect_once(c, deadline, err) == RC_OK)
            return RC_OK;
        logw(c, LOG_WARN, "cannot connect", err, attempt);
        int64_t wait = backoff_next(&delay);
        if (attempt == CONNECT_ATTEMPTS || (deadline && clock_mono_ms() + wait >= deadline))
            break;
        clock_sleep_ms(wait);
    }
    resp->unreachable = 1;
    char why[ERR_LEN];
    snprintf(why, sizeof why, "%s", err);
    err_set(err, "cannot connect to %s:%s after %d attempts: %s", c->host, c->port, attempt, why);
    return RC_IO;
}

/* True when the kept connection was closed by the peer while idle (or holds
 * bytes nobody asked for): then it is not worth sending on.  Cannot fail. */
static int idle_conn_dead(const struct http_client *c)
{
    struct pollfd pfd = {.fd = c->fd, .events = POLLIN};

    return poll(&pfd, 1, 0) != 0;
}

/* Builds the request head into c->tx.  Returns RC_OK, RC_INVALID for a
 * method, path or header that would break the framing, or RC_NOMEM. */
static rc_t build_head(struct http_client *c, const struct http_request *req, char err[ERR_LEN])
{
    struct buf *b = &c->tx;
    const char *m = req->method, *p = req->path;

    if (!m || !*m || !p || p[0] != '/' || (req->nheaders && !req->headers)) {
        err_set(err, "malformed request");
        return RC_INVALID;
    }
    for (const char *s = m; *s; s++)
        if (!http_is_tchar((unsigned char)*s))
            goto bad;
    for (const char *s = p; *s; s++)
        if ((unsigned char)*s <= 0x20 || (unsigned char)*s >= 0x7f)
            goto bad;
    buf_reset(b);
    buf_printf(b, "%s %s HTTP/1.1\r\nHost: ", m, p);
    if (strchr(c->host, ':'))
        buf_printf(b, "[%s]:%s\r\n", c->host, c->port);
    else
        buf_printf(b, "%s:%s\r\n", c->host, c->port);
    for (size_t i = 0; i < req->nheaders; i++) {
        const struct http_header *h = &req->headers[i];
        if (!h->name || !*h->name || !h->value)
            goto bad;
        for (const char *s = h->name; *s; s++)
            if (!http_is_tchar((unsigned char)*s))
                goto bad;
        for (const char *s = h->value; *s; s++)
            if (!http_is_field_char((unsigned char)*s))
                goto bad;
        buf_printf(b, "%s: %s\r\n", h->name, h->value);
    }
    if (req->body || strcmp(m, "GET") != 0)
        buf_printf(b, "Content-Length: %zu\r\n", req->body ? req->body_len : 0);
    buf_appends(b, "\r\n");
    if (b->err) {
        err_set(err, "request head: %s", rc_strerror(b->err));
        return b->err == RC_NOMEM ? RC_NOMEM : RC_INVALID;
    }
    return RC_OK;
bad:
    err_set(err, "request method, path or header holds a character that is not allowed");
    return RC_INVALID;
}

/* Writes the head and body with as few syscalls as the kernel allows.
 * Returns RC_OK or RC_IO; *dead is set when the peer had closed. */
static rc_t send_request(struct http_client *c, const struct http_request *req, int64_t deadline,
                         int *dead, char err[ERR_LEN])
{
    struct iovec iov[2] = {
        {.iov_base = c->tx.data, .iov_len = c->tx.len},
        {.iov_base = (void *)req->body, .iov_len = req->body ? req->body_len : 0}};
    struct msghdr msg = {.msg_iov = iov, .msg_iovlen = req->body_len && req->body ? 2 : 1};
    int flags = MSG_NOSIGNAL | (deadline ? MSG_DONTWAIT : 0);

    while (msg.msg_iovlen) {
        rc_t rc = wait_fd(c->fd, POLLOUT, deadline, err);
        if (rc)
            return rc;
        ssize_t w = sendmsg(c->fd, &msg, flags);
        if (w < 0) {
            if (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK)
                continue;
            *dead = errno == EPIPE || errno == ECONNRESET;
            err_set(err, "send: %s", strerror(errno));
            return RC_IO;
        }
        size_t left = (size_t)w;
        while (msg.msg_iovlen && left >= msg.msg_iov[0].iov_len) {
            left -= msg.msg_iov[0].iov_len;
            msg.msg_iov++;
            msg.msg_iovlen--;
        }
        if (msg.msg_iovlen) {
            msg.msg_iov[0].iov_base = (char *)msg.msg_iov[0].iov_base + left;
            msg.msg_iov[0].iov_len -= left;
        }
    }
    return RC_OK;
}

/* Reads at most `room` bytes into dst.  Returns RC_OK with *got == 0 at the
 * end of the stream (a reset counts as one), or RC_IO. */
static rc_t recv_into(struct http_client *c, char *dst, size_t room, int64_t deadline, size_t *got,
                      char err[ERR_LEN])
{
    for (;;) {
        rc_t rc = wait_fd(c->fd, POLLIN, deadline, err);
        if (rc)
            return rc;
        ssize_t r = recv(c->fd, dst, room, deadline ? MSG_DONTWAIT : 0);
        if (r >= 0) {
            *got = (size_t)r;
            return RC_OK;
        }
        if (errno == ECONNRESET) {
            *got = 0;
            return RC_OK;
        }
        if (errno != EINTR && errno != EAGAIN && errno != EWOULDBLOCK) {
            err_set(err, "recv: %s", strerror(errno));
            return RC_IO;
        }
    }
}

/* Reads more bytes into c->rx.  Returns RC_OK with *got (0: end of stream). */
static rc_t recv_rx(struct http_client *c, int64_t deadline, size_t *got, char err[ERR_LEN])
{
    rc_t rc = buf_reserve(&c->rx, READ_CHUNK);

    if (rc) {
        err_set(err, "receive buffer: %s", rc_strerror(rc));
        return rc == RC_NOMEM ? RC_NOMEM : RC_PROTOCOL;
    }
    rc = recv_into(c, c->rx.data + c->rx.len, c->rx.cap - c->rx.len - 1, deadline, got, err);
    if (rc == RC_OK)
        buf_commit(&c->rx, *got);
    return rc;
}

/* Copies the wanted values out of c->rx into c->vals and points the fields
 * at the copies.  Returns RC_OK or RC_NOMEM. */
static rc_t copy_fields(struct http_client *c, struct http_response *resp, char err[ERR_LEN])
{
    size_t off[HTTP_FIELDS_MAX];

    buf_reset(&c->vals);
    for (size_t i = 0; i < resp->nfields; i++) {
        off[i] = c->vals.len;
        if (resp->fields[i].value)
            buf_append(&c->vals, resp->fields[i].value, resp->fields[i].value_len);
        buf_appendc(&c->vals, '\0');
    }
    if (c->vals.err) {
        err_set(err, "header values: %s", rc_strerror(c->vals.err));
        return RC_NOMEM;
    }
    for (size_t i = 0; i < resp->nfields; i++)
        if (resp->fields[i].value)
            resp->fields[i].value = c->vals.data + off[i];
    return RC_OK;
}

/* Reads a body of exactly cl bytes into resp->body. */
static rc_t read_length_body(struct http_client *c, uint64_t cl, struct buf *body, int64_t deadline,
                             int *keep_alive, char err[ERR_LEN])
{
    size_t have;

    if (cl > body->max) {
        err_set(err, "response body of %llu bytes is over the %zu-byte limit",
                (unsigned long long)cl, body->max);
        return RC_TOOBIG;
    }
    if (buf_reserve(body, (size_t)cl) != RC_OK) {
        err_set(err, "response body: %s", rc_strerror(body->err));
        return body->err;
    }
    have = c->rx.len < cl ? c->rx.len : (size_t)cl;
    buf_append(body, c->rx.data, have);
    buf_consume(&c->rx, have);
    if (c->rx.len)
        *keep_alive = 0; /* more than the response: the stream is out of step */
    while (body->len < cl) {
        size_t got;
        rc_t rc = recv_into(c, body->data + body->len, (size_t)cl - body->len, deadline, &got, err);
        if (rc)
            return rc;
        if (got == 0) {
            err_set(err, "connection closed after %zu of %llu body bytes", body->len,
                    (unsigned long long)cl);
            return RC_IO;
        }
        buf_commit(body, got);
    }
    return RC_OK;
}

static rc_t read_chunked_body(struct http_client *c, struct buf *body, int64_t deadline,
                              int *keep_alive, char err[ERR_LEN])
{
    struct http_chunked ch;

    http_chunked_init(&ch);
    for (;;) {
        size_t used, got;
        http_parse_t pr = http_chunked_decode(&ch, c->rx.data, c->rx.len, &used, body, err);
        if (pr == HTTP_PARSE_ERROR)
            return body->err == RC_TOOBIG  ? RC_TOOBIG
                   : body->err == RC_NOMEM ? RC_NOMEM
                                           : RC_PROTOCOL;
        if (pr == HTTP_PARSE_DONE) {
            buf_consume(&c->rx, used);
            if (c->rx.len)
                *keep_alive = 0;
            return RC_OK;
        }
        buf_reset(&c->rx);
        rc_t rc = recv_rx(c, deadline, &got, err);
        if (rc)
            return rc;
        if (got == 0) {
            err_set(err, "connection closed in a chunked body after %zu bytes", body->len);
            return RC_IO;
        }
    }
}

static rc_t read_close_body(struct http_client *c, struct buf *body, int64_t deadline,
                            char err[ERR_LEN])
{
    if (buf_append(body, c->rx.data, c->rx.len) != RC_OK)
        goto toobig;
    buf_reset(&c->rx);
    for (;;) {
        size_t room = body->max - body->len, got;
        char probe;
        rc_t rc;

        if (room == 0) {
            /* Full: one more byte means over the cap, the end means done. */
            rc = recv_into(c, &probe, 1, deadline, &got, err);
            if (rc)
                return rc;
            if (got == 0)
                return RC_OK;
            goto toobig;
        }
        if (room > READ_CHUNK)
            room = READ_CHUNK;
        if (buf_reserve(body, room) != RC_OK) {
            err_set(err, "response body: %s", rc_strerror(body->err));
            return body->err;
        }
        rc = recv_into(c, body->data + body->len, room, deadline, &got, err);
        if (rc)
            return rc;
        if (got == 0)
            return RC_OK;
        buf_commit(body, got);
    }
toobig:
    err_set(err, "response body over %zu bytes", body->max);
    return RC_TOOBIG;
}

/* Waits for the first byte of a response with c->sigmask as the signal mask,
 * so that a signal blocked otherwise (SIGTERM in the runtime) ends the wait:
 * then returns RC_IO with *interrupted set.  Returns RC_OK when there is
 * something to read, RC_IO on a timeout or a poll failure. */
static rc_t wait_first_byte(struct http_client *c, int64_t deadline, int *interrupted,
                            char err[ERR_LEN])
{
    for (;;) {
        struct pollfd pfd = {.fd = c->fd, .events = POLLIN};
        struct timespec ts, *tsp = NULL;
        if (deadline) {
            int64_t left = deadline - clock_mono_ms();
            if (left <= 0) {
                err_set(err, "timed out");
                return RC_IO;
            }
            ts.tv_sec = (time_t)(left / 1000);
            ts.tv_nsec = (long)(left % 1000) * 1000000;
            tsp = &ts;
        }
        int r = ppoll(&pfd, 1, tsp, c->sigmask);
        if (r > 0)
            return RC_OK;
        if (r < 0 && errno == EINTR) {
            *interrupted = 1;
            err_set(err, "interrupted by a signal while waiting for the response");
            return RC_IO;
        }
        if (r < 0) {
            err_set(err, "poll: %s", strerror(errno));
            return RC_IO;
        }
    }
}

/* Reads one final response (skipping 1xx interim ones).  *dead is set when
 * the peer closed before any byte of it came. */
static rc_t read_response(struct http_client *c, struct http_response *resp, int64_t deadline,
                          int *dead, char err[ERR_LEN])
{
    struct http_head h;
    size_t last = 0, got;
    int any = 0;
    rc_t rc;

    for (;;) {
        http_parse_t pr =
            http_parse_head(c->rx.data, c->rx.len, last, &h, resp->fields, resp->nfields, err);
        if (pr == HTTP_PARSE_ERROR)
            return RC_PROTOCOL;
        if (pr == HTTP_PARSE_DONE) {
            if (h.status >= 200)
                break;
            if (h.status == 101) {
                err_set(err, "unexpected 101 Switching Protocols");
                return RC_PROTOCOL;
            }
            buf_consume(&c->rx, h.head_len);
            last = 0;
            continue;
        }
        last = c->rx.len;
        if (!any && c->rx.len == 0 && c->sigmask &&
            (rc = wait_first_byte(c, deadline, &resp->interrupted, err)) != RC_OK)
            return rc;
        rc = recv_rx(c, deadline, &got, err);
        if (rc)
            return rc;
        if (got == 0) {
            *dead = !any;
            err_set(err, any ? "connection closed in the response head"
                             : "connection closed before the response");
            return RC_IO;
        }
        any = 1;
    }

    resp->status = h.status;
    rc = copy_fields(c, resp, err);
    if (rc)
        return rc;
    buf_consume(&c->rx, h.head_len);
    switch (h.framing) {
    case HTTP_BODY_NONE:
        if (c->rx.len)
            h.keep_alive = 0;
        break;
    case HTTP_BODY_LENGTH:
        rc = read_length_body(c, h.content_length, resp->body, deadline, &h.keep_alive, err);
        break;
    case HTTP_BODY_CHUNKED:
        rc = read_chunked_body(c, resp->body, deadline, &h.keep_alive, err);
        break;
    case HTTP_BODY_CLOSE:
        rc = read_close_body(c, resp->body, deadline, err);
        h.keep_alive = 0;
        break;
    }
    if (rc)
        return rc;
    c->served++;
    if (!h.keep_alive)
        close_conn(c);
    return RC_OK;
}

struct http_client *http_new(const char *host, const char *port, struct logger *lg,
                             char err[ERR_LEN])
{
    struct http_client *c = NULL;
    int64_t portnum;

    if (!host || !*host || !port || num_parse_i64(port, strlen(port), 1, 65535, &portnum)) {
        err_set(err, "malformed host or port");
        goto fail;
    }
    for (const char *s = host; *s; s++) {
        if ((unsigned char)*s <= 0x20 || (unsigned char)*s >= 0x7f || *s == '/' || *s == '[' ||
            *s == ']') {
            err_set(err, "malformed host");
            goto fail;
        }
    }
    c = calloc(1, sizeof *c);
    if (!c)
        goto nomem;
    c->fd = -1;
    c->lg = lg;
    buf_init(&c->tx, HTTP_HEAD_MAX);
    buf_init(&c->rx, HTTP_HEAD_MAX + READ_CHUNK);
    buf_init(&c->vals, HTTP_HEAD_MAX + 64);
    c->host = strdup(host);
    c->port = strdup(port);
    if (!c->host || !c->port)
        goto nomem;
    /* The connection's buffers are allocated whole, now: a response that
     * has started to arrive must never need memory before its head is read
     * (an invocation whose request id was never seen cannot be answered). */
    if (buf_reserve(&c->tx, c->tx.max) || buf_reserve(&c->rx, c->rx.max) ||
        buf_reserve(&c->vals, c->vals.max))
        goto nomem;
    return c;
nomem:
    err_set(err, "out of memory");
fail:
    http_free(c);
    return NULL;
}

void http_free(struct http_client *c)
{
    if (!c)
        return;
    close_conn(c);
    buf_free(&c->tx);
    buf_free(&c->rx);
    buf_free(&c->vals);
    free(c->host);
    free(c->port);
    free(c);
}

rc_t http_exchange(struct http_client *c, const struct http_request *req,
                   struct http_response *resp, char err[ERR_LEN])
{
    int64_t deadline = req->timeout_ms > 0 ? clock_mono_ms() + req->timeout_ms : 0;
    rc_t rc;

    err[0] = '\0';
    resp->status = 0;
    resp->unreachable = 0;
    resp->resent = 0;
    resp->interrupted = 0;
    c->sigmask = req->sigmask;
    if (resp->nfields > HTTP_FIELDS_MAX || (resp->nfields && !resp->fields) || !resp->body) {
        err_set(err, "malformed response arguments");
        rc = RC_INVALID;
        goto out;
    }
    rc = build_head(c, req, err);
    if (rc)
        goto out;
    if (c->fd >= 0 && idle_conn_dead(c))
        close_conn(c); /* closed while idle: reconnect without any doubt */

    for (int attempt = 0;; attempt++) {
        int dead = 0, sent = 0, reused;

        for (size_t i = 0; i < resp->nfields; i++)
            resp->fields[i].value = NULL;
        buf_reset(resp->body);
        if (c->fd < 0) {
            rc = connect_retry(c, resp, deadline, err);
            if (rc)
                goto out;
        }
        reused = c->served > 0;
        rc = send_request(c, req, deadline, &dead, err);
        if (rc == RC_OK) {
            sent = 1;
            rc = read_response(c, resp, deadline, &dead, err);
        }
        /* A kept-alive connection that the peer closed just as we used it.
         * Sending again is safe when the request did not go out whole (the
         * peer cannot have acted on half a request), or when the caller says
         * a duplicate is harmless; otherwise the caller hears about it
         * rather than have the peer act twice. */
        if (rc == RC_IO && dead && reused && attempt == 0 && (!sent || req->retry_safe) &&
            !resp->interrupted) {
            logw(c, LOG_INFO, "kept-alive connection closed by the peer; sending again", err, 2);
            close_conn(c);
            resp->resent = 1;
            continue;
        }
        break;
    }
out:
    if (rc)
        close_conn(c);
    return rc;
}
