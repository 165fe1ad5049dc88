/* rt.c - the Lambda Runtime API loop: next, handle, answer.
 *
 * Memory: the event and answer buffers are reset, not freed, between
 * invocations, so a 6 MiB event leaves 6 MiB of capacity behind for the
 * next one.  Both are capped at BUF_PAYLOAD_MAX, the connection's buffers at
 * a few times HTTP_HEAD_MAX, so the runtime's own memory stays under about
 * 13 MiB however many invocations it serves; handing capacity back to malloc
 * after every big event would only make the next big one pay for it again.
 * The small buffers that receiving an invocation and posting its answer or
 * error need (here and in http.c) are allocated whole at start: once an
 * invocation has arrived, running out of memory can fail it, but never leave
 * it unanswered.
 *
 * Error types posted to /error (also the Lambda-Runtime-Function-Error-Type
 * header), besides whatever a handler reports:
 *   Runtime.PayloadTooLarge   the event is over BUF_PAYLOAD_MAX; the handler is not called
 *   Runtime.OutOfMemory       the event or the answer could not be allocated
 *   Runtime.ResponseTooLarge  the handler's answer went over BUF_PAYLOAD_MAX
 *   Runtime.HandlerError      the handler failed without naming an error type */
#define _DEFAULT_SOURCE /* putenv */
#include "rt.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "http.h"
#include "num.h"
#include "url.h"
#include "utf8.h"

#define API_PREFIX "/2018-06-01/runtime"
#define POST_TIMEOUT_MS 30000
#define NEXT_FAILURES_MAX 10 /* consecutive /next failures before giving up */
#define BACKOFF_FIRST_MS 10
#define BACKOFF_MAX_MS 1000
#define REPLY_MAX (64 * 1024)
#define REQUEST_ID_MAX 1024
#define DEADLINE_FALLBACK_MS (15 * 60 * 1000) /* Lambda's longest timeout */
#define TRACE_ENV "_X_AMZN_TRACE_ID"

enum { F_REQUEST_ID, F_DEADLINE, F_ARN, F_TRACE, F_COUNT };

struct rt {
    struct rt_transport t;    /* how /next and the answers travel */
    struct http_client *http; /* owned: the one connection to the Runtime API (rt_new), or NULL */
    struct logger *lg;        /* borrowed */
    struct buf event;         /* the current event; capacity kept across invocations */
    struct buf answer;        /* the handler's answer; capacity kept */
    struct buf reply;         /* bodies the API sends back to posts (small, only logged) */
    struct buf meta;          /* request id, ARN, trace id of the invocation, NUL-separated */
    struct buf path;          /* the path of the current post */
    struct buf errbody;       /* the JSON body of an /error post */
    struct buf trace_env;     /* "_X_AMZN_TRACE_ID=...", handed to putenv */
    sigset_t next_mask;       /* the signal mask while /next waits: SIGTERM let in */
    int terminated;           /* SIGTERM came: the loop stopped */
    unsigned long received;   /* invocations received so far: 0 until the cold start */
};

/* Set by the SIGTERM handler; read by the loop after /next returns. */
static volatile sig_atomic_t sigterm_seen;

/* The SIGTERM handler: only notes it (async-signal-safe); the loop acts. */
static void on_sigterm(int sig)
{
    (void)sig;
    sigterm_seen = 1;
}

/* Appends at most `max` bytes of the (maybe unterminated) text s as a JSON
 * string, with every byte that is not valid UTF-8 replaced by '?'.  A text
 * cut by snprintf can end in half a character; buf_append_json needs whole
 * ones.  Failures are left in b's sticky error. */
static void append_json_text(struct buf *b, const char *s, size_t max)
{
    char clean[ERR_LEN];
    size_t n = strnlen(s, max);

    if (n >= sizeof clean)
        n = sizeof clean - 1;
    buf_append_json(b, clean, utf8_scrub(s, n, clean));
}

/* Copies an error type into dst as a header-safe token (printable ASCII
 * without blanks), falling back to `dflt` when it is empty.  Cannot fail. */
static void clean_type(char dst[64], const char *type, size_t max, const char *dflt)
{
    size_t n = type ? strnlen(type, max < 63 ? max : 63) : 0;

    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)type[i];
        dst[i] = c > 0x20 && c < 0x7f ? (char)c : '_';
    }
    dst[n] = '\0';
    if (n == 0)
        snprintf(dst, 64, "%s", dflt);
}

/* Builds API_PREFIX "/invocation/" id "/" what into rt->path, percent-encoding
 * every byte of the id outside RFC 3986's unreserved set.  Returns the path
 * (owned by rt, valid until the next call) or NULL when memory is short. */
static const char *invocation_path(struct rt *rt, const char *id, const char *what)
{
    struct buf *b = &rt->path;

    buf_reset(b);
    buf_appends(b, API_PREFIX "/invocation/");
    url_append_encoded(b, id, strlen(id));
    buf_appendc(b, '/');
    buf_appends(b, what);
    return b->err ? NULL : b->data;
}

/* POSTs body to path.  Answers are retry-safe: the Runtime API takes one
 * answer per request id and refuses a second one with 400 InvalidRequestID
 * (it never applies it twice), so when a kept-alive connection dies after our
 * answer went out, sending it again on a new connection either delivers it or
 * earns a harmless 400, which the caller logs.  Returns RC_OK with *status
 * (any status), or the transport failure with err filled. */
static rc_t post(struct rt *rt, const char *path, const char *body, size_t len,
                 const struct http_header *hdrs, size_t nhdrs, int *status, char err[ERR_LEN])
{
    struct http_request req = {.method = "POST",
                               .path = path,
                               .headers = hdrs,
                               .nheaders = nhdrs,
                               .body = body ? body : "",
                               .body_len = body ? len : 0,
                               .timeout_ms = POST_TIMEOUT_MS,
                               .retry_safe = 1};
    struct http_response resp = {.body = &rt->reply};
    rc_t rc = rt->t.answer(rt->t.ctx, &req, &resp, err);

    *status = resp.status;
    if (rc == RC_TOOBIG && resp.status) /* a chatty reply: its status is all we need */
        rc = RC_OK;
    return rc;
}

/* POSTs {"errorMessage":...,"errorType":...} with the error-type header. */
static rc_t post_error(struct rt *rt, const char *path, const char *type, const char *message,
                       size_t message_max, int *status, char err[ERR_LEN])
{
    struct buf *b = &rt->errbody;
    struct http_header hdrs[] = {{"Lambda-Runtime-Function-Error-Type", type},
                                 {"Content-Type", "application/json"}};

    buf_reset(b);
    buf_appends(b, "{\"errorMessage\":");
    append_json_text(b, message, message_max);
    buf_appends(b, ",\"errorType\":");
    append_json_text(b, type, 64);
    buf_appendc(b, '}');
    if (b->err) {
        snprintf(err, ERR_LEN, "error body: %s", rc_strerror(b->err));
        return b->err;
    }
    return post(rt, path, b->data, b->len, hdrs, sizeof hdrs / sizeof hdrs[0], status, err);
}

/* Exports the trace id as _X_AMZN_TRACE_ID, or removes it when absent.
 * putenv with a buffer we own, rather than setenv: glibc's setenv keeps
 * every value it was ever given, which would grow without bound with one
 * new trace id an invocation. */
static void set_trace_env(struct rt *rt, const char *trace)
{
    unsetenv(TRACE_ENV); /* drops our string from environ before we touch it */
    if (!trace)
        return;
    buf_reset(&rt->trace_env);
    buf_appends(&rt->trace_env, TRACE_ENV "=");
    buf_appends(&rt->trace_env, trace);
    if (rt->trace_env.err || putenv(rt->trace_env.data) != 0)
        log_at(rt->lg, LOG_WARN, "cannot export the trace id", LF_STR("variable", TRACE_ENV));
}

/* Copies the invocation's headers out of the HTTP client into rt->meta and
 * fills inv.  Returns RC_OK, or RC_PROTOCOL when there is no usable request
 * id, RC_NOMEM. */
static rc_t take_meta(struct rt *rt, const struct http_field *f, struct rt_invocation *inv)
{
    struct buf *m = &rt->meta;
    size_t arn_off, trace_off;
    int64_t deadline;

    if (!f[F_REQUEST_ID].value || f[F_REQUEST_ID].value_len == 0 ||
        f[F_REQUEST_ID].value_len > REQUEST_ID_MAX) {
        log_at(rt->lg, LOG_ERROR, "invocation without a usable request id; skipped",
               LF_NUM("length", f[F_REQUEST_ID].value_len));
        return RC_PROTOCOL;
    }
    buf_reset(m);
    buf_append(m, f[F_REQUEST_ID].value, f[F_REQUEST_ID].value_len);
    buf_appendc(m, '\0');
    arn_off = m->len;
    if (f[F_ARN].value)
        buf_append(m, f[F_ARN].value, f[F_ARN].value_len);
    buf_appendc(m, '\0');
    trace_off = m->len;
    if (f[F_TRACE].value)
        buf_append(m, f[F_TRACE].value, f[F_TRACE].value_len);
    if (buf_appendc(m, '\0') != RC_OK) {
        log_at(rt->lg, LOG_ERROR, "cannot keep the invocation headers",
               LF_STR("error", rc_strerror(m->err)));
        return RC_NOMEM;
    }
    inv->request_id = m->data;
    inv->function_arn = m->data + arn_off;
    inv->trace_id = m->data + trace_off;
    rt->lg->request_id = inv->request_id;
    rt->lg->trace_id = f[F_TRACE].value ? inv->trace_id : NULL;
    inv->cold_start = rt->received++ == 0;
    rt->lg->cold_start = inv->cold_start;

    /* The one place that decides what a missing deadline means (0 counts as
     * missing: no real deadline is the epoch); the handler takes
     * inv->deadline_ms as it is. */
    if (f[F_DEADLINE].value && num_parse_i64(f[F_DEADLINE].value, f[F_DEADLINE].value_len, 1,
                                             INT64_MAX, &deadline) == RC_OK) {
        inv->deadline_ms = deadline;
    } else {
        inv->deadline_ms = clock_epoch_ms() + DEADLINE_FALLBACK_MS;
        log_at(rt->lg, LOG_WARN, "missing or malformed Lambda-Runtime-Deadline-Ms; assuming 15 min",
               LF_NUM("deadline_ms", inv->deadline_ms));
    }
    set_trace_env(rt, f[F_TRACE].value ? inv->trace_id : NULL);
    return RC_OK;
}

/* Logs the outcome of an answer post.  Returns RC_PROTOCOL when the API
 * answered 5xx ("container error: the runtime should exit promptly"). */
static rc_t judge_post(struct rt *rt, const char *what, rc_t rc, int status, const char *err)
{
    if (rc != RC_OK) {
        log_at(rt->lg, LOG_ERROR, "answer not delivered", LF_STR("post", what),
               LF_STR("rc", rc_strerror(rc)), LF_STR("error", err));
        return RC_OK; /* the next /next finds out whether the API is still there */
    }
    if (status == 202)
        return RC_OK;
    log_at(rt->lg, status >= 500 ? LOG_ERROR : LOG_WARN, "the runtime api refused the answer",
           LF_STR("post", what), LF_NUM("status", status), LF_NUM("reply_bytes", rt->reply.len));
    return status >= 500 ? RC_PROTOCOL : RC_OK;
}

/* Runs the handler for one invocation and posts what it says. */
static rc_t handle(struct rt *rt, rt_handler handler, void *ctx, struct rt_invocation *inv)
{
    char err[ERR_LEN], type[64];
    struct rt_error e;
    const char *path;
    int status = 0;
    rc_t rc, hrc;

    memset(&e, 0, sizeof e);
    buf_reset(&rt->answer);
    hrc = handler(ctx, inv, &rt->answer, &e);
    e.type[sizeof e.type - 1] = '\0'; /* a handler may have filled them to the brim */
    e.message[sizeof e.message - 1] = '\0';
    if (hrc == RC_OK && rt->answer.err == RC_OK) {
        path = invocation_path(rt, inv->request_id, "response");
        if (!path)
            return RC_NOMEM;
        rc = post(rt, path, rt->answer.data, rt->answer.len, NULL, 0, &status, err);
        return judge_post(rt, "response", rc, status, err);
    }

    if (hrc != RC_OK) {
        clean_type(type, e.type, sizeof e.type, "Runtime.HandlerError");
        if (e.message[0] == '\0')
            snprintf(e.message, sizeof e.message, "handler failed: %s", rc_strerror(hrc));
    } else {
        clean_type(type,
                   rt->answer.err == RC_TOOBIG ? "Runtime.ResponseTooLarge" : "Runtime.OutOfMemory",
                   63, "");
        snprintf(e.message, sizeof e.message, "answer: %s (limit %zu bytes)",
                 rc_strerror(rt->answer.err), rt->answer.max);
    }
    log_at(rt->lg, LOG_ERROR, "invocation failed", LF_STR("errorType", type),
           LF_STR("errorMessage", e.message), LF_STR("rc", rc_strerror(hrc)));
    path = invocation_path(rt, inv->request_id, "error");
    if (!path)
        return RC_NOMEM;
    rc = post_error(rt, path, type, e.message, sizeof e.message, &status, err);
    return judge_post(rt, "error", rc, status, err);
}

/* One turn of the loop: /next, then handle or refuse it.  *handled is set
 * when an invocation with a request id arrived (it was answered, or we
 * tried); *fatal when the loop must stop. */
static rc_t turn(struct rt *rt, rt_handler handler, void *ctx, int *handled, int *fatal)
{
    struct http_field f[F_COUNT] = {
        [F_REQUEST_ID] = {.name = "Lambda-Runtime-Aws-Request-Id"},
        [F_DEADLINE] = {.name = "Lambda-Runtime-Deadline-Ms"},
        [F_ARN] = {.name = "Lambda-Runtime-Invoked-Function-Arn"},
        [F_TRACE] = {.name = "Lambda-Runtime-Trace-Id"},
    };
    /* No timeout: /next blocks until there is an invocation, and Lambda
     * freezes the whole sandbox in between. */
    struct http_request req = {.method = "GET",
                               .path = API_PREFIX "/invocation/next",
                               .retry_safe = 1,
                               .sigmask = &rt->next_mask};
    struct http_response resp = {.body = &rt->event, .fields = f, .nfields = F_COUNT};
    struct rt_invocation inv;
    char err[ERR_LEN];
    rc_t rc;

    /* A SIGTERM that came during start-up or the last invocation is pending
     * (blocked); one that came as the last wait in /next ended for another
     * reason was taken by the handler.  Either way, ask for no invocation. */
    sigset_t pending;
    if (sigterm_seen || (sigpending(&pending) == 0 && sigismember(&pending, SIGTERM) == 1)) {
        log_msg(rt->lg, LOG_INFO, "SIGTERM before this request for an invocation: shutting down");
        rt->terminated = 1;
        *fatal = 1;
        return RC_OK;
    }
    rc = rt->t.next(rt->t.ctx, &req, &resp, err);
    if (resp.interrupted && sigterm_seen) {
        /* Lambda is shutting the sandbox down (SIGTERM, then SIGKILL 500 ms
         * later): no invocation is in hand, so stop here. */
        log_msg(rt->lg, LOG_INFO, "SIGTERM while waiting for an invocation: shutting down");
        rt->terminated = 1;
        *fatal = 1;
        return RC_OK;
    }
    if (rc != RC_OK && !(resp.status == 200 && (rc == RC_TOOBIG || rc == RC_NOMEM))) {
        log_at(rt->lg, LOG_WARN, "cannot get the next invocation", LF_STR("rc", rc_strerror(rc)),
               LF_STR("error", err), LF_NUM("unreachable", resp.unreachable));
        *fatal = resp.unreachable;
        return rc;
    }
    if (resp.status != 200) {
        log_at(rt->lg, LOG_ERROR, "the runtime api refused /next", LF_NUM("status", resp.status));
        *fatal = resp.status >= 500;
        return RC_PROTOCOL;
    }
    memset(&inv, 0, sizeof inv);
    if (take_meta(rt, f, &inv) != RC_OK)
        return RC_PROTOCOL;
    *handled = 1;

    if (rc != RC_OK) {
        /* Never seen whole, so never handed to the handler; the loop goes on. */
        char type[64], message[ERR_LEN], perr[ERR_LEN];
        const char *path = invocation_path(rt, inv.request_id, "error");
        int status = 0;

        clean_type(type, rc == RC_TOOBIG ? "Runtime.PayloadTooLarge" : "Runtime.OutOfMemory", 63,
                   "");
        snprintf(message, sizeof message, "event: %s (limit %zu bytes)", rc_strerror(rc),
                 rt->event.max);
        log_at(rt->lg, LOG_ERROR, "invocation refused", LF_STR("errorType", type),
               LF_STR("error", err));
        if (!path) {
            rc = RC_NOMEM;
        } else {
            rc = post_error(rt, path, type, message, sizeof message, &status, perr);
            rc = judge_post(rt, "error", rc, status, perr);
        }
    } else {
        inv.event = rt->event.data ? rt->event.data : "";
        inv.event_len = rt->event.len;
        rc = handle(rt, handler, ctx, &inv);
    }
    rt->lg->request_id = NULL;
    rt->lg->trace_id = NULL;
    *fatal = rc != RC_OK;
    return rc;
}

rc_t rt_run(struct rt *rt, rt_handler handler, void *ctx, unsigned long max_invocations)
{
    unsigned long served = 0;
    unsigned failures = 0;
    struct backoff delay;
    rc_t rc = RC_OK;

    backoff_init(&delay, BACKOFF_FIRST_MS, BACKOFF_MAX_MS);
    while (max_invocations == 0 || served < max_invocations) {
        int handled = 0, fatal = 0;

        rc = turn(rt, handler, ctx, &handled, &fatal);
        if (fatal)
            break;
        if (handled) {
            served++;
            failures = 0;
            backoff_reset(&delay);
            continue;
        }
        /* /next failed without a usable invocation: wait a little more each
         * time, so a broken API does not make us spin, and give up after a
         * bounded number of failures in a row. */
        if (++failures >= NEXT_FAILURES_MAX)
            break;
        if (rt->t.pause)
            rt->t.pause(rt->t.ctx, backoff_next(&delay));
        else
            clock_sleep_ms(backoff_next(&delay));
    }
    if (rc != RC_OK)
        log_at(rt->lg, LOG_ERROR, "runtime loop stopped", LF_STR("rc", rc_strerror(rc)),
               LF_NUM("invocations", served), LF_NUM("failures_in_a_row", failures));
    return rc;
}

int rt_terminated(const struct rt *rt)
{
    return rt->terminated;
}

rc_t rt_init_error(struct rt *rt, const char *type, const char *message)
{
    char err[ERR_LEN], t[64];
    int status = 0;
    rc_t rc;

    clean_type(t, type, 63, "Runtime.InitError");
    if (!message)
        message = "";
    log_at(rt->lg, LOG_ERROR, "initialisation failed", LF_STR("errorType", t));
    rc = post_error(rt, API_PREFIX "/init/error", t, message, ERR_LEN, &status, err);
    if (rc != RC_OK) {
        log_at(rt->lg, LOG_ERROR, "init error not delivered", LF_STR("rc", rc_strerror(rc)),
               LF_STR("error", err));
        return rc;
    }
    if (status != 202) {
        log_at(rt->lg, LOG_ERROR, "the runtime api refused the init error",
               LF_NUM("status", status));
        return RC_PROTOCOL;
    }
    return RC_OK;
}

/* The production transport: both exchanges go over the one HTTP client. */
static rc_t http_transport(void *ctx, const struct http_request *req, struct http_response *resp,
                           char err[ERR_LEN])
{
    return http_exchange(ctx, req, resp, err);
}

/* See rt.h: parses the endpoint, creates the HTTP client, then the loop
 * over it; the client is the loop's from then on. */
struct rt *rt_new(const char *api, struct logger *lg, char err[ERR_LEN])
{
    struct rt *rt = NULL;
    struct http_client *http = NULL;
    struct endpoint ep;
    char why[ERR_LEN];

    /* "host:port", "[v6]:port" */
    if (!api || endpoint_parse(api, &ep, why) != RC_OK) {
        snprintf(err, ERR_LEN, "AWS_LAMBDA_RUNTIME_API: %.200s", api ? why : "not set");
        goto out;
    }
    http = http_new(ep.host, ep.port, lg, err);
    if (!http)
        goto out;
    const struct rt_transport t = {
        .next = http_transport, .answer = http_transport, .pause = NULL, .ctx = http};
    rt = rt_new_transport(&t, lg, err);
    if (rt) {
        rt->http = http;
        http = NULL;
    }
out:
    http_free(http);
    return rt;
}

/* See rt.h.  SIGTERM is blocked before its handler is installed: a signal
 * that came between the two would otherwise run the handler at once and be
 * gone, no longer pending, and the loop would wait in /next for ever. */
rc_t rt_signals_init(char err[ERR_LEN])
{
    struct sigaction sa;
    sigset_t term;
    rc_t rc = RC_OK;

    sigemptyset(&term);
    sigaddset(&term, SIGTERM);
    memset(&sa, 0, sizeof sa);
    sigemptyset(&sa.sa_mask);
    /* A closed stdout must not kill the runtime; sockets already use
     * MSG_NOSIGNAL. */
    sa.sa_handler = SIG_IGN;
    /* SIGTERM (Lambda's shutdown, with the kill 500 ms later) is blocked
     * except while /next waits.  An invocation in hand therefore runs to its
     * answer, which lists what was not committed, and the signal is taken
     * at the next /next, which it ends (no SA_RESTART, ppoll): the loop stops
     * and the caller closes the database connection and exits. */
    if (sigprocmask(SIG_BLOCK, &term, NULL) != 0 || sigaction(SIGPIPE, &sa, NULL) != 0) {
        rc = RC_IO;
        goto out;
    }
    sa.sa_handler = on_sigterm;
    if (sigaction(SIGTERM, &sa, NULL) != 0)
        rc = RC_IO;
out:
    if (rc != RC_OK)
        snprintf(err, ERR_LEN, "cannot set up SIGTERM handling");
    return rc;
}

/* See rt.h: allocates the buffers an invocation's answer needs up front. */
struct rt *rt_new_transport(const struct rt_transport *t, struct logger *lg, char err[ERR_LEN])
{
    struct rt *rt;

    rt = calloc(1, sizeof *rt);
    if (!rt) {
        snprintf(err, ERR_LEN, "out of memory");
        goto fail;
    }
    rt->lg = lg;
    rt->t = *t;
    buf_init(&rt->event, BUF_PAYLOAD_MAX);
    buf_init(&rt->answer, BUF_PAYLOAD_MAX);
    buf_init(&rt->reply, REPLY_MAX);
    buf_init(&rt->meta, 4 * HTTP_HEAD_MAX);
    buf_init(&rt->path, 4 * REQUEST_ID_MAX);
    buf_init(&rt->errbody, 4 * ERR_LEN);
    buf_init(&rt->trace_env, HTTP_HEAD_MAX + sizeof TRACE_ENV);
    /* What it takes to keep an invocation's headers and to post its answer
     * or error is allocated now, so that running out of memory during an
     * invocation still gets it an answer. */
    if (buf_reserve(&rt->meta, HTTP_HEAD_MAX + F_COUNT) || buf_reserve(&rt->path, rt->path.max) ||
        buf_reserve(&rt->errbody, rt->errbody.max)) {
        snprintf(err, ERR_LEN, "out of memory");
        goto fail;
    }

    /* The mask /next waits with: the one in force (SIGTERM blocked by
     * rt_signals_init) without SIGTERM. */
    if (rt_signals_init(err) != RC_OK || sigprocmask(SIG_BLOCK, NULL, &rt->next_mask) != 0) {
        snprintf(err, ERR_LEN, "cannot set up SIGTERM handling");
        goto fail;
    }
    sigdelset(&rt->next_mask, SIGTERM);
    return rt;
fail:
    rt_free(rt);
    return NULL;
}

void rt_free(struct rt *rt)
{
    if (!rt)
        return;
    if (rt->trace_env.data)
        unsetenv(TRACE_ENV); /* environ must not point into trace_env once it is freed */
    http_free(rt->http);
    buf_free(&rt->event);
    buf_free(&rt->answer);
    buf_free(&rt->reply);
    buf_free(&rt->meta);
    buf_free(&rt->path);
    buf_free(&rt->errbody);
    buf_free(&rt->trace_env);
    free(rt);
}
