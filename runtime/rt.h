/* rt.h - the Lambda Runtime API client (version 2018-06-01) and its loop.
 *
 * The loop long-polls /runtime/invocation/next, hands the event to a handler
 * and posts the handler's answer to /response or its error to /error.  A
 * handler sees bytes, the request id and the deadline; never a socket or HTTP.
 * This module knows nothing about what the events mean. */
#ifndef RT_H
#define RT_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "log.h"
#include "result.h"

struct http_request;  /* http.h: what the transport is asked to send */
struct http_response; /* http.h: where it puts the answer */

struct rt_invocation {
    const char *event;        /* the event body, NUL-terminated, owned by the runtime */
    size_t event_len;         /* bytes of event, up to BUF_PAYLOAD_MAX */
    const char *request_id;   /* Lambda-Runtime-Aws-Request-Id */
    int64_t deadline_ms;      /* Lambda-Runtime-Deadline-Ms: Unix epoch milliseconds (now
                                 + 15 min, Lambda's longest timeout, logged, when the header
                                 is missing, malformed or 0); decided here only: handlers
                                 take it as it is */
    const char *function_arn; /* Lambda-Runtime-Invoked-Function-Arn, or "" */
    const char *trace_id;     /* Lambda-Runtime-Trace-Id, or "" (also in _X_AMZN_TRACE_ID) */
    int cold_start;           /* 1 for the first invocation this process receives */
};

/* What a handler reports when it cannot answer: posted to /error. */
struct rt_error {
    char type[64];         /* errorType, e.g. "InvalidEvent"; also the
                              Lambda-Runtime-Function-Error-Type header */
    char message[ERR_LEN]; /* errorMessage: no secrets, no field values */
};

/* A handler fills `answer` (a JSON document, capped at BUF_PAYLOAD_MAX) and
 * returns RC_OK, or fills `error` and returns the failure.  The invocation and
 * everything it points to are valid only during the call. */
typedef rc_t (*rt_handler)(void *ctx, const struct rt_invocation *inv, struct buf *answer,
                           struct rt_error *error);

struct rt; /* opaque: connection and buffers, reused across invocations */

/* How the loop reaches the Runtime API: HTTP in production (rt_new), canned
 * answers in the unit tests (rt_new_transport), so that the loop's own
 * behaviour - retries, exits on 5xx, payload limits, init errors - is tested
 * without a network.  Both exchanges follow http_exchange's contract (resp
 * as it fills it, the same result codes). */
typedef rc_t (*rt_exchange)(void *ctx, const struct http_request *req, struct http_response *resp,
                            char err[ERR_LEN]);
struct rt_transport {
    rt_exchange next;   /* GET /runtime/invocation/next: the event into resp->body,
                           the wanted headers into resp->fields */
    rt_exchange answer; /* every POST: /response, /error, /init/error */
    void (*pause)(void *ctx, int64_t ms); /* waits between failed /next calls;
                                             NULL: clock_sleep_ms */
    void *ctx;                            /* handed to all three; borrowed */
};

/* Blocks SIGTERM and installs the loop's handler for it (see rt_run), and
 * sets SIGPIPE to ignored for the process (a closed stdout must not kill
 * it).  main calls it before anything else: a SIGTERM during start-up then
 * waits, and the loop shuts down before asking for an invocation, with its
 * log line, instead of the process ending silently.  rt_new calls it again
 * (no change then).  Returns RC_OK, or RC_IO with err filled when the
 * system refuses (not with these arguments). */
rc_t rt_signals_init(char err[ERR_LEN]);

/* Creates a client for `api` ("host:port" or "[v6]:port", the value of
 * AWS_LAMBDA_RUNTIME_API).  Connects lazily.  `lg` is borrowed, not NULL, and
 * must outlive rt; rt sets lg->request_id during each invocation.  Calls
 * rt_signals_init.
 * Returns NULL with `err` filled when api is malformed or memory is short.
 * The caller frees it with rt_free. */
struct rt *rt_new(const char *api, struct logger *lg, char err[ERR_LEN]);
void rt_free(struct rt *rt);

/* 1 when rt_run stopped because SIGTERM came while it waited for an
 * invocation (Lambda shutting the sandbox down): the caller closes what it
 * holds and exits 0. */
int rt_terminated(const struct rt *rt);

/* Creates a loop over another transport (copied; t->ctx must outlive rt);
 * otherwise as rt_new.  Returns NULL with err filled when memory is short. */
struct rt *rt_new_transport(const struct rt_transport *t, struct logger *lg, char err[ERR_LEN]);

/* Reports a failed initialisation to /runtime/init/error with errorType and
 * errorMessage.  The caller exits non-zero afterwards, as Lambda requires. */
rc_t rt_init_error(struct rt *rt, const char *type, const char *message);

/* Runs the loop: next, handle, answer, forever.  Returns only when the
 * Runtime API cannot be reached after bounded retries (the sandbox is going
 * away) or `max_invocations` (0: no limit, for tests and benchmarks) were
 * served.  A bad invocation (an oversized body, a handler error) is answered
 * with /error and the loop goes on.  Error types the runtime itself posts:
 * Runtime.PayloadTooLarge (event over BUF_PAYLOAD_MAX; the handler is not
 * called), Runtime.OutOfMemory, Runtime.ResponseTooLarge (answer over
 * BUF_PAYLOAD_MAX), Runtime.HandlerError (a handler failed without a type).
 * SIGTERM is blocked outside the wait in /next, so an invocation in hand is
 * always answered (with what was committed); the signal ends the next wait,
 * and rt_run returns RC_OK with rt_terminated set.
 * Returns RC_OK after max_invocations; RC_IO when the API stays unreachable
 * (10 connection attempts, 10 ms doubling to 1 s apart); the last failure
 * when /next failed 10 times in a row (same backoff between them);
 * RC_PROTOCOL when the API answered 5xx ("container error: exit promptly"). */
rc_t rt_run(struct rt *rt, rt_handler handler, void *ctx, unsigned long max_invocations);

#endif
