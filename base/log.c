/* log.c - JSON-lines logger. */
#define _DEFAULT_SOURCE
#include "log.h"

#include <errno.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "buf.h"

static const char *const level_names[] = {"TRACE", "DEBUG", "INFO", "WARN", "ERROR", "FATAL"};

void log_init(struct logger *lg, const char *level, const char *format, int fd)
{
    lg->min = LOG_INFO;
    lg->text = format && strcasecmp(format, "text") == 0;
    lg->request_id = NULL;
    lg->trace_id = NULL;
    lg->cold_start = 0;
    lg->fd = fd;
    for (size_t i = 0; level && i < sizeof level_names / sizeof level_names[0]; i++)
        if (strcasecmp(level, level_names[i]) == 0)
            lg->min = (enum log_level)i;
}

static void write_all(int fd, const char *p, size_t n)
{
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return;
        p += w;
        n -= (size_t)w;
    }
}

static void append_timestamp(struct buf *b)
{
    struct timespec ts;
    struct tm tm;
    char text[32];

    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    strftime(text, sizeof text, "%Y-%m-%dT%H:%M:%S", &tm);
    buf_printf(b, "%s.%03ldZ", text, ts.tv_nsec / 1000000);
}

void log_emit(const struct logger *lg, enum log_level level, const char *message,
              const struct log_field *fields, size_t nfields)
{
    struct buf b;
    char stack[1024];

    if (level < lg->min)
        return;
    /* A small line is built on the stack so that logging an out-of-memory
     * condition does not itself need memory. */
    b.data = stack;
    b.len = 0;
    b.cap = sizeof stack;
    b.max = sizeof stack - 1;
    b.err = RC_OK;

    if (lg->text) {
        append_timestamp(&b);
        buf_printf(&b, " %s %s %s", level_names[level], lg->request_id ? lg->request_id : "-",
                   message);
        for (size_t i = 0; i < nfields; i++) {
            if (fields[i].kind == LOG_NUM)
                buf_printf(&b, " %s=%lld", fields[i].key, fields[i].num);
            else
                buf_printf(&b, " %s=%s", fields[i].key, fields[i].str ? fields[i].str : "");
        }
    } else {
        buf_appends(&b, "{\"timestamp\":\"");
        append_timestamp(&b);
        buf_printf(&b, "\",\"level\":\"%s\"", level_names[level]);
        if (lg->request_id) {
            /* Inside an invocation: what ties the line to X-Ray and to the
             * first, slower invocation of an execution environment. */
            buf_appends(&b, ",\"requestId\":");
            buf_append_json(&b, lg->request_id, strlen(lg->request_id));
            if (lg->trace_id) {
                buf_appends(&b, ",\"traceId\":");
                buf_append_json(&b, lg->trace_id, strlen(lg->trace_id));
            }
            buf_appends(&b, lg->cold_start ? ",\"coldStart\":true" : ",\"coldStart\":false");
        }
        buf_appends(&b, ",\"message\":");
        buf_append_json(&b, message, strlen(message));
        for (size_t i = 0; i < nfields; i++) {
            buf_printf(&b, ",\"%s\":", fields[i].key);
            if (fields[i].kind == LOG_NUM)
                buf_printf(&b, "%lld", fields[i].num);
            else if (fields[i].str)
                buf_append_json(&b, fields[i].str, strlen(fields[i].str));
            else
                buf_appends(&b, "null");
        }
        buf_appendc(&b, '}');
    }
    if (b.err) {
        /* Too long for the line buffer: say so rather than cut JSON in half. */
        b.len = 0;
        b.err = RC_OK;
        buf_printf(&b, "{\"level\":\"%s\",\"message\":\"log line too long\"}", level_names[level]);
    }
    buf_appendc(&b, '\n');
    write_all(lg->fd, b.data, b.len);
}

void log_raw(const struct logger *lg, const char *line, size_t len)
{
    write_all(lg->fd, line, len);
    if (len == 0 || line[len - 1] != '\n')
        write_all(lg->fd, "\n", 1);
}
