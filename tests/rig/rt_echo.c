/* rt_echo.c - a test program for runtime/rt.h: answers every event with its
 * length, a checksum and what the runtime told the handler, so a test can
 * check that the exact bytes and headers arrived.
 *
 *   rt_echo [--max N] [--init-fail]        reads AWS_LAMBDA_RUNTIME_API
 *
 * Answer: {"len":N,"sum":S,"request_id":"..","deadline_ms":D,"function_arn":"..",
 *          "trace_id":"..","env_trace":".."|null}
 * where S is the sum of the event's bytes mod 2^32 and env_trace is
 * getenv("_X_AMZN_TRACE_ID").  An event starting with "ERROR" gets an error
 * of type "TestError"; one starting with "BIGANSWER" an answer over the cap.
 * --init-fail reports an init error and exits 1.  Exit status: 0 after
 * --max invocations, 1 when the loop stopped for any other reason. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "num.h"
#include "rt.h"

static void append_str(struct buf *b, const char *s)
{
    if (s)
        buf_append_json(b, s, strlen(s));
    else
        buf_appends(b, "null");
}

static rc_t echo(void *ctx, const struct rt_invocation *inv, struct buf *answer,
                 struct rt_error *error)
{
    uint32_t sum = 0;

    (void)ctx;
    if (inv->event_len >= 5 && memcmp(inv->event, "ERROR", 5) == 0) {
        snprintf(error->type, sizeof error->type, "TestError");
        snprintf(error->message, sizeof error->message, "the event asked for an error (%zu bytes)",
                 inv->event_len);
        return RC_INVALID;
    }
    if (inv->event_len >= 9 && memcmp(inv->event, "BIGANSWER", 9) == 0) {
        while (buf_appends(answer, "0123456789abcdef0123456789abcdef") == RC_OK)
            ;
        return RC_OK; /* the sticky RC_TOOBIG is for the runtime to notice */
    }
    for (size_t i = 0; i < inv->event_len; i++)
        sum += (unsigned char)inv->event[i];
    buf_printf(answer, "{\"len\":%zu,\"sum\":%lu,\"request_id\":", inv->event_len,
               (unsigned long)sum);
    append_str(answer, inv->request_id);
    buf_printf(answer, ",\"deadline_ms\":%lld,\"function_arn\":", (long long)inv->deadline_ms);
    append_str(answer, inv->function_arn);
    buf_appends(answer, ",\"trace_id\":");
    append_str(answer, inv->trace_id);
    buf_appends(answer, ",\"env_trace\":");
    append_str(answer, getenv("_X_AMZN_TRACE_ID"));
    buf_appendc(answer, '}');
    return answer->err;
}

int main(int argc, char **argv)
{
    struct logger lg;
    struct rt *rt = NULL;
    char err[ERR_LEN];
    int64_t max = 0;
    int init_fail = 0, status = 1;

    log_init(&lg, getenv("AWS_LAMBDA_LOG_LEVEL"), getenv("AWS_LAMBDA_LOG_FORMAT"), 1);
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--init-fail") == 0) {
            init_fail = 1;
        } else if (strcmp(argv[i], "--max") == 0 && i + 1 < argc &&
                   num_parse_i64(argv[i + 1], strlen(argv[i + 1]), 0, INT64_MAX, &max) == RC_OK) {
            i++;
        } else {
            fprintf(stderr, "usage: rt_echo [--max N] [--init-fail]\n");
            return 2;
        }
    }
    rt = rt_new(getenv("AWS_LAMBDA_RUNTIME_API"), &lg, err);
    if (!rt) {
        log_at(&lg, LOG_FATAL, "cannot start", LF_STR("error", err));
        goto out;
    }
    if (init_fail) {
        rt_init_error(rt, "TestInitError", "rt_echo was asked to fail its initialisation");
        goto out;
    }
    if (rt_run(rt, echo, NULL, (unsigned long)max) == RC_OK)
        status = 0;
out:
    rt_free(rt);
    return status;
}
