/* test_rt.c - the Runtime API loop (runtime/rt.c) over a scripted transport:
 * what it posts for each kind of invocation, when it retries, backs off,
 * gives up or exits, without a network.  tests/integration/test_runtime.py
 * drives the same loop over real HTTP. */
#include "check.h"

#include <fcntl.h>

#include "clock.h"
#include "http.h"
#include "rt.h"

#define NEXT_MAX 16
#define POST_MAX 16

/* One scripted answer to GET /next. */
struct next_step {
    rc_t rc;           /* what the exchange returns */
    int status;        /* resp->status */
    int unreachable;   /* resp->unreachable */
    const char *id;    /* Lambda-Runtime-Aws-Request-Id, or NULL */
    const char *dl;    /* Lambda-Runtime-Deadline-Ms, or NULL */
    const char *trace; /* Lambda-Runtime-Trace-Id, or NULL */
    const char *body;  /* the event */
};

/* A post the loop made, as the transport saw it. */
struct post {
    char path[512];
    char type[128]; /* Lambda-Runtime-Function-Error-Type, or "" */
    char *body;     /* owned copy */
};

struct script {
    struct next_step next[NEXT_MAX];
    size_t nnext, used;
    int post_status[POST_MAX]; /* status for each post (0: 202) */
    rc_t post_rc[POST_MAX];
    struct post posts[POST_MAX];
    size_t nposts;
    int64_t pauses[32];
    size_t npauses;
};

static rc_t fake_next(void *ctx, const struct http_request *req, struct http_response *resp,
                      char err[ERR_LEN])
{
    struct script *s = ctx;
    CHECK_EQ_STR(req->method, "GET");
    CHECK_EQ_STR(req->path, "/2018-06-01/runtime/invocation/next");
    if (s->used >= s->nnext) {
        /* The script ran out: the API went away. */
        resp->unreachable = 1;
        snprintf(err, ERR_LEN, "script over");
        return RC_IO;
    }
    const struct next_step *st = &s->next[s->used++];
    resp->status = st->status;
    resp->unreachable = st->unreachable;
    for (size_t i = 0; i < resp->nfields; i++) {
        const char *v = NULL;
        if (strcmp(resp->fields[i].name, "Lambda-Runtime-Aws-Request-Id") == 0)
            v = st->id;
        else if (strcmp(resp->fields[i].name, "Lambda-Runtime-Deadline-Ms") == 0)
            v = st->dl;
        else if (strcmp(resp->fields[i].name, "Lambda-Runtime-Trace-Id") == 0)
            v = st->trace;
        resp->fields[i].value = v;
        resp->fields[i].value_len = v ? strlen(v) : 0;
    }
    buf_reset(resp->body);
    if (st->body && buf_appends(resp->body, st->body) != RC_OK) {
        snprintf(err, ERR_LEN, "body over the cap");
        return resp->body->err;
    }
    if (st->rc != RC_OK)
        snprintf(err, ERR_LEN, "scripted failure");
    return st->rc;
}

static rc_t fake_answer(void *ctx, const struct http_request *req, struct http_response *resp,
                        char err[ERR_LEN])
{
    struct script *s = ctx;
    size_t k = s->nposts;
    CHECK_EQ_STR(req->method, "POST");
    if (k >= POST_MAX)
        abort();
    struct post *p = &s->posts[s->nposts++];
    snprintf(p->path, sizeof p->path, "%s", req->path);
    p->type[0] = '\0';
    for (size_t i = 0; i < req->nheaders; i++)
        if (strcmp(req->headers[i].name, "Lambda-Runtime-Function-Error-Type") == 0)
            snprintf(p->type, sizeof p->type, "%s", req->headers[i].value);
    p->body = malloc(req->body_len + 1);
    if (!p->body)
        abort();
    memcpy(p->body, req->body, req->body_len);
    p->body[req->body_len] = '\0';
    resp->status = s->post_status[k] ? s->post_status[k] : 202;
    if (s->post_rc[k] != RC_OK)
        snprintf(err, ERR_LEN, "scripted failure");
    return s->post_rc[k];
}

static void fake_pause(void *ctx, int64_t ms)
{
    struct script *s = ctx;
    if (s->npauses < sizeof s->pauses / sizeof s->pauses[0])
        s->pauses[s->npauses++] = ms;
}

static void script_free(struct script *s)
{
    for (size_t i = 0; i < s->nposts; i++)
        free(s->posts[i].body);
}

/* What the test handler saw and does. */
struct handler_ctx {
    int calls;
    char event[256];
    char request_id[256];
    int64_t deadline_ms;
    char trace_env[256]; /* _X_AMZN_TRACE_ID during the call */
    rc_t fail;           /* return this (with `type`) instead of echoing */
    const char *type;
    size_t answer_bytes; /* answer this many 'x' bytes instead of echoing */
};

static rc_t handler(void *ctx, const struct rt_invocation *inv, struct buf *answer,
                    struct rt_error *error)
{
    struct handler_ctx *h = ctx;
    const char *env = getenv("_X_AMZN_TRACE_ID");
    h->calls++;
    snprintf(h->event, sizeof h->event, "%s", inv->event);
    snprintf(h->request_id, sizeof h->request_id, "%s", inv->request_id);
    snprintf(h->trace_env, sizeof h->trace_env, "%s", env ? env : "");
    h->deadline_ms = inv->deadline_ms;
    if (h->fail) {
        if (h->type)
            snprintf(error->type, sizeof error->type, "%s", h->type);
        snprintf(error->message, sizeof error->message, "it broke");
        return h->fail;
    }
    if (h->answer_bytes) {
        for (size_t i = 0; i < h->answer_bytes; i++)
            if (buf_appendc(answer, 'x') != RC_OK)
                break;
        return RC_OK;
    }
    buf_appends(answer, "echo:");
    buf_append(answer, inv->event, inv->event_len);
    return RC_OK;
}

static struct logger lg;

/* Runs the loop over script s for at most max invocations; returns rt_run's result. */
static rc_t run(struct script *s, struct handler_ctx *h, unsigned long max)
{
    const struct rt_transport t = {fake_next, fake_answer, fake_pause, s};
    char err[ERR_LEN];
    struct rt *rt = rt_new_transport(&t, &lg, err);
    if (!rt)
        abort();
    rc_t rc = rt_run(rt, handler, h, max);
    rt_free(rt);
    return rc;
}

/* Starts a case with an empty script and a handler that echoes. */
static void fresh(struct script *s, struct handler_ctx *h)
{
    memset(s, 0, sizeof *s);
    memset(h, 0, sizeof *h);
}

/* Appends one answer to GET /next to the script. */
static void push(struct script *s, struct next_step step)
{
    if (s->nnext >= NEXT_MAX)
        abort();
    s->next[s->nnext++] = step;
}

#define OK_NEXT(id_, body_)                                                                        \
    {                                                                                              \
        RC_OK, 200, 0, (id_), "1700000000000", NULL, (body_)                                       \
    }

/* An answer to GET /next whose event could not be read (rc_: over the payload
 * limit, or out of memory). */
#define FAILED_NEXT(rc_, id_)                                                                      \
    {                                                                                              \
        (rc_), 200, 0, (id_), "1700000000000", NULL, NULL                                          \
    }

static void test_answers(void)
{
    struct script s;
    struct handler_ctx h;

    check_case("an invocation is handed over and its answer posted to /response");
    fresh(&s, &h);
    push(&s, (struct next_step){RC_OK, 200, 0, "req-1", "1700000000123", "Root=1-a",
                                "{\"Records\":[]}"});
    CHECK_EQ_INT(run(&s, &h, 1), RC_OK);
    CHECK_EQ_INT(h.calls, 1);
    CHECK_EQ_STR(h.event, "{\"Records\":[]}");
    CHECK_EQ_STR(h.request_id, "req-1");
    CHECK_EQ_INT(h.deadline_ms, 1700000000123LL);
    CHECK_EQ_STR(h.trace_env, "Root=1-a");
    CHECK(getenv("_X_AMZN_TRACE_ID") == NULL); /* rt_free takes it out of environ */
    CHECK_EQ_INT(s.nposts, 1);
    CHECK_EQ_STR(s.posts[0].path, "/2018-06-01/runtime/invocation/req-1/response");
    CHECK_EQ_STR(s.posts[0].body, "echo:{\"Records\":[]}");
    CHECK_EQ_STR(s.posts[0].type, "");
    script_free(&s);

    check_case("a missing or malformed deadline becomes now + 15 minutes");
    fresh(&s, &h);
    push(&s, (struct next_step){RC_OK, 200, 0, "r", NULL, NULL, "{}"});
    push(&s, (struct next_step){RC_OK, 200, 0, "r", "soon", NULL, "{}"});
    int64_t before = clock_epoch_ms();
    CHECK_EQ_INT(run(&s, &h, 2), RC_OK);
    CHECK(h.deadline_ms >= before + 15 * 60 * 1000 && h.deadline_ms < before + 16 * 60 * 1000);
    CHECK_EQ_INT(h.calls, 2);
    script_free(&s);
}

#define INVOCATION "/2018-06-01/runtime/invocation/"

/* One invocation: the answer to GET /next, how the handler behaves, and the
 * one post the loop must make for it. */
struct one_post_row {
    const char *name;
    struct next_step next;
    rc_t fail;             /* the handler returns this (with `type`) instead of echoing */
    const char *type;      /* the handler's error type */
    size_t answer_bytes;   /* or answers this many bytes */
    int calls;             /* handler calls */
    const char *path;      /* the post's path */
    const char *post_type; /* its Lambda-Runtime-Function-Error-Type, "" when none */
    const char *body;      /* its body, NULL: not compared */
    size_t body_len;       /* else its length (0: not compared) */
};

static const struct one_post_row one_post_rows[] = {
    {"the request id is percent-encoded in the answer's path", OK_NEXT("a/b c?%", "{}"), RC_OK,
     NULL, 0, 1, INVOCATION "a%2Fb%20c%3F%25/response", "", "echo:{}", 0},
    {"a handler error goes to /error with its type and a JSON body", OK_NEXT("r2", "{}"),
     RC_INVALID, "InvalidEvent", 0, 1, INVOCATION "r2/error", "InvalidEvent",
     "{\"errorMessage\":\"it broke\",\"errorType\":\"InvalidEvent\"}", 0},
    {"a handler failing without a type is Runtime.HandlerError", OK_NEXT("r3", "{}"), RC_DB, NULL,
     0, 1, INVOCATION "r3/error", "Runtime.HandlerError", NULL, 0},
    {"a handler's bad error type is cleaned", OK_NEXT("r3", "{}"), RC_DB, "Bad Type\r\nX: y", 0, 1,
     INVOCATION "r3/error", "Bad_Type__X:_y", NULL, 0},
    {"an event that could not be allocated is Runtime.OutOfMemory", FAILED_NEXT(RC_NOMEM, "oom"),
     RC_OK, NULL, 0, 0, INVOCATION "oom/error", "Runtime.OutOfMemory", NULL, 0},
    {"an answer over the payload limit is Runtime.ResponseTooLarge", OK_NEXT("huge", "{}"), RC_OK,
     NULL, BUF_PAYLOAD_MAX + 1, 1, INVOCATION "huge/error", "Runtime.ResponseTooLarge", NULL, 0},
    {"an answer of exactly the payload limit is posted", OK_NEXT("full", "{}"), RC_OK, NULL,
     BUF_PAYLOAD_MAX, 1, INVOCATION "full/response", "", NULL, BUF_PAYLOAD_MAX},
};

static void test_one_post_table(void)
{
    for (size_t r = 0; r < sizeof one_post_rows / sizeof one_post_rows[0]; r++) {
        const struct one_post_row *row = &one_post_rows[r];
        struct script s;
        struct handler_ctx h;

        check_case("%s", row->name);
        fresh(&s, &h);
        h.fail = row->fail;
        h.type = row->type;
        h.answer_bytes = row->answer_bytes;
        push(&s, row->next);
        CHECK_EQ_INT(run(&s, &h, 1), RC_OK);
        CHECK_EQ_INT(h.calls, row->calls);
        CHECK_EQ_INT(s.nposts, 1);
        CHECK_EQ_STR(s.posts[0].path, row->path);
        CHECK_EQ_STR(s.posts[0].type, row->post_type);
        if (row->body)
            CHECK_EQ_STR(s.posts[0].body, row->body);
        else if (row->body_len)
            CHECK_EQ_INT(s.posts[0].body ? strlen(s.posts[0].body) : 0, row->body_len);
        script_free(&s);
    }
}

static void test_limits(void)
{
    struct script s;
    struct handler_ctx h;

    check_case("an event over the payload limit is refused without calling the handler");
    fresh(&s, &h);
    push(&s, (struct next_step)FAILED_NEXT(RC_TOOBIG, "big"));
    push(&s, (struct next_step)OK_NEXT("after", "{}"));
    CHECK_EQ_INT(run(&s, &h, 2), RC_OK);
    CHECK_EQ_INT(h.calls, 1); /* only the second */
    CHECK_EQ_INT(s.nposts, 2);
    CHECK_EQ_STR(s.posts[0].path, "/2018-06-01/runtime/invocation/big/error");
    CHECK_EQ_STR(s.posts[0].type, "Runtime.PayloadTooLarge");
    CHECK(strstr(s.posts[0].body, "\"errorType\":\"Runtime.PayloadTooLarge\"") != NULL);
    CHECK_EQ_STR(s.posts[1].path, "/2018-06-01/runtime/invocation/after/response");
    script_free(&s);
}

static void test_failures(void)
{
    struct script s;
    struct handler_ctx h;

    check_case("/next answering 5xx: the loop exits at once, without retrying");
    fresh(&s, &h);
    push(&s, (struct next_step){RC_OK, 500, 0, NULL, NULL, NULL, "oops"});
    push(&s, (struct next_step)OK_NEXT("never", "{}"));
    CHECK_EQ_INT(run(&s, &h, 0), RC_PROTOCOL);
    CHECK_EQ_INT(s.used, 1);
    CHECK_EQ_INT(s.npauses, 0);
    CHECK_EQ_INT(h.calls, 0);
    script_free(&s);

    check_case("the API unreachable: the loop exits at once with RC_IO");
    fresh(&s, &h);
    push(&s, (struct next_step){RC_IO, 0, 1, NULL, NULL, NULL, NULL});
    CHECK_EQ_INT(run(&s, &h, 0), RC_IO);
    CHECK_EQ_INT(s.used, 1);
    script_free(&s);

    check_case("/next failing 10 times in a row: backoff 10 ms doubling to 1 s, then give up");
    fresh(&s, &h);
    for (int i = 0; i < 12; i++)
        push(&s, (struct next_step){RC_OK, 400, 0, NULL, NULL, NULL, "no"});
    CHECK_EQ_INT(run(&s, &h, 0), RC_PROTOCOL);
    CHECK_EQ_INT(s.used, 10);
    static const int64_t want[] = {10, 20, 40, 80, 160, 320, 640, 1000, 1000};
    CHECK_EQ_INT(s.npauses, sizeof want / sizeof want[0]);
    for (size_t i = 0; i < s.npauses && i < sizeof want / sizeof want[0]; i++)
        CHECK_EQ_INT(s.pauses[i], want[i]);
    script_free(&s);

    check_case("a success in between resets the failure count and the backoff");
    fresh(&s, &h);
    for (int i = 0; i < 5; i++)
        push(&s, (struct next_step){RC_IO, 0, 0, NULL, NULL, NULL, NULL});
    push(&s, (struct next_step)OK_NEXT("ok", "{}"));
    push(&s, (struct next_step){RC_IO, 0, 0, NULL, NULL, NULL, NULL});
    push(&s, (struct next_step)OK_NEXT("ok2", "{}"));
    CHECK_EQ_INT(run(&s, &h, 2), RC_OK);
    CHECK_EQ_INT(h.calls, 2);
    CHECK_EQ_INT(s.npauses, 6);
    CHECK_EQ_INT(s.pauses[4], 160);
    CHECK_EQ_INT(s.pauses[5], 10); /* started again */
    script_free(&s);

    check_case("an invocation without a request id is skipped, not handled");
    fresh(&s, &h);
    push(&s, (struct next_step){RC_OK, 200, 0, NULL, "1700000000000", NULL, "{}"});
    push(&s, (struct next_step){RC_OK, 200, 0, "", "1700000000000", NULL, "{}"});
    push(&s, (struct next_step)OK_NEXT("real", "{}"));
    CHECK_EQ_INT(run(&s, &h, 1), RC_OK);
    CHECK_EQ_INT(h.calls, 1);
    CHECK_EQ_STR(h.request_id, "real");
    CHECK_EQ_INT(s.nposts, 1);
    script_free(&s);

    check_case("an answer refused with 5xx stops the loop; with 4xx it goes on");
    fresh(&s, &h);
    push(&s, (struct next_step)OK_NEXT("a", "{}"));
    push(&s, (struct next_step)OK_NEXT("b", "{}"));
    push(&s, (struct next_step)OK_NEXT("c", "{}"));
    s.post_status[0] = 400; /* e.g. a second answer for one request id */
    s.post_status[1] = 500;
    CHECK_EQ_INT(run(&s, &h, 0), RC_PROTOCOL);
    CHECK_EQ_INT(h.calls, 2);
    script_free(&s);

    check_case("an answer that could not be delivered: the loop asks /next again");
    fresh(&s, &h);
    push(&s, (struct next_step)OK_NEXT("a", "{}"));
    push(&s, (struct next_step)OK_NEXT("b", "{}"));
    s.post_rc[0] = RC_IO;
    CHECK_EQ_INT(run(&s, &h, 2), RC_OK);
    CHECK_EQ_INT(h.calls, 2);
    CHECK_EQ_INT(s.nposts, 2);
    script_free(&s);
}

static void test_init_error(void)
{
    const struct rt_transport t = {fake_next, fake_answer, fake_pause, NULL};
    struct script s;
    char err[ERR_LEN];

    check_case("rt_init_error posts to /init/error; 202 is RC_OK");
    memset(&s, 0, sizeof s);
    struct rt_transport ts = t;
    ts.ctx = &s;
    struct rt *rt = rt_new_transport(&ts, &lg, err);
    CHECK(rt != NULL);
    CHECK_EQ_INT(rt_init_error(rt, "InvalidConfiguration", "MASKING_KEY: bad"), RC_OK);
    CHECK_EQ_STR(s.posts[0].path, "/2018-06-01/runtime/init/error");
    CHECK_EQ_STR(s.posts[0].type, "InvalidConfiguration");
    CHECK_EQ_STR(s.posts[0].body,
                 "{\"errorMessage\":\"MASKING_KEY: bad\",\"errorType\":\"InvalidConfiguration\"}");

    check_case("rt_init_error: no type is Runtime.InitError; invalid UTF-8 is replaced");
    CHECK_EQ_INT(rt_init_error(rt, NULL, "bad \xff byte"), RC_OK);
    CHECK_EQ_STR(s.posts[1].type, "Runtime.InitError");
    CHECK(strstr(s.posts[1].body, "\"bad ? byte\"") != NULL);

    check_case("rt_init_error: a refusal is RC_PROTOCOL, a lost post its failure");
    s.post_status[2] = 500;
    CHECK_EQ_INT(rt_init_error(rt, "X", "m"), RC_PROTOCOL);
    s.post_rc[3] = RC_IO;
    CHECK_EQ_INT(rt_init_error(rt, "X", "m"), RC_IO);
    rt_free(rt);
    script_free(&s);
}

int main(void)
{
    (void)check_guard; /* no parser here */
    log_init(&lg, "FATAL", NULL, open("/dev/null", O_WRONLY));
    test_answers();
    test_one_post_table();
    test_limits();
    test_failures();
    test_init_error();
    return check_finish();
}
