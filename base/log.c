/* log.c - JSON-lines logger. */
#define _DEFAULT_SOURCE
#include "log.h"

#include <errno.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <sys/uio.h>
#include <unistd.h>

#include "buf.h"
#include "clock.h"
#include "utf8.h"

static const char *const level_names[] = {"TRACE", "DEBUG", "INFO", "WARN", "ERROR", "FATAL"};

void log_init(struct logger *lg, const char *level, const char *format, int fd)
{
    lg->min = LOG_INFO;
    lg->text = format && strcasecmp(format, "text") == 0;
    lg->request_id = NULL;
    lg->trace_id = NULL;
    lg->cold_start = 0;
    lg->fd = fd;
    lg->version = NULL;
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
    int64_t ms = clock_epoch_ms();
    time_t sec = (time_t)(ms / 1000);
    struct tm tm;
    char text[32];

    gmtime_r(&sec, &tm);
    strftime(text, sizeof text, "%Y-%m-%dT%H:%M:%S", &tm);
    buf_printf(b, "%s.%03dZ", text, (int)(ms % 1000));
}

/* Appends s for a Text-format line: a backslash, a line break and every other
 * control character are escaped (\\, \n, \r, \t, \xNN), and a byte that
 * does not begin a well-formed UTF-8 sequence becomes U+FFFD, so that one
 * call is one line of UTF-8 whatever a message or field holds.  Failures are
 * left in b's sticky error. */
static void append_text(struct buf *b, const char *s)
{
    static const char hex[] = "0123456789abcdef";

    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c >= 0x80) {
            size_t k = utf8_seq_len((const unsigned char *)s, strnlen(s, 4));
            if (k) {
                buf_append(b, s, k);
                s += k - 1;
            } else {
                buf_appends(b, "\xef\xbf\xbd"); /* U+FFFD */
            }
        } else if (c == '\\') {
            buf_appends(b, "\\\\");
        } else if (c == '\n') {
            buf_appends(b, "\\n");
        } else if (c == '\r') {
            buf_appends(b, "\\r");
        } else if (c == '\t') {
            buf_appends(b, "\\t");
        } else if (c < 0x20 || c == 0x7f) {
            char esc[4] = {'\\', 'x', hex[c >> 4], hex[c & 15]};
            buf_append(b, esc, sizeof esc);
        } else {
            buf_appendc(b, (char)c);
        }
    }
}

static void build_text(struct buf *b, const struct logger *lg, enum log_level level,
                       const char *message, const struct log_field *fields, size_t nfields)
{
    append_timestamp(b);
    buf_printf(b, " %s ", level_names[level]);
    append_text(b, lg->request_id ? lg->request_id : "-");
    buf_appendc(b, ' ');
    append_text(b, message);
    for (size_t i = 0; i < nfields; i++) {
        if (fields[i].kind == LOG_NUM) {
            buf_printf(b, " %s=%lld", fields[i].key, fields[i].num);
        } else {
            buf_printf(b, " %s=", fields[i].key);
            append_text(b, fields[i].str ? fields[i].str : "");
        }
    }
    if (lg->version) {
        buf_appends(b, " version=");
        append_text(b, lg->version);
    }
}

static void build_json(struct buf *b, const struct logger *lg, enum log_level level,
                       const char *message, const struct log_field *fields, size_t nfields)
{
    buf_appends(b, "{\"timestamp\":\"");
    append_timestamp(b);
    buf_printf(b, "\",\"level\":\"%s\"", level_names[level]);
    if (lg->version) {
        buf_appends(b, ",\"version\":");
        buf_append_json(b, lg->version, strlen(lg->version));
    }
    if (lg->request_id) {
        /* Inside an invocation: what ties the line to X-Ray and to the
         * first, slower invocation of an execution environment. */
        buf_appends(b, ",\"requestId\":");
        buf_append_json(b, lg->request_id, strlen(lg->request_id));
        if (lg->trace_id) {
            buf_appends(b, ",\"traceId\":");
            buf_append_json(b, lg->trace_id, strlen(lg->trace_id));
        }
        buf_appends(b, lg->cold_start ? ",\"coldStart\":true" : ",\"coldStart\":false");
    }
    buf_appends(b, ",\"message\":");
    buf_append_json(b, message, strlen(message));
    for (size_t i = 0; i < nfields; i++) {
        buf_printf(b, ",\"%s\":", fields[i].key);
        if (fields[i].kind == LOG_NUM)
            buf_printf(b, "%lld", fields[i].num);
        else if (fields[i].str)
            buf_append_json(b, fields[i].str, strlen(fields[i].str));
        else
            buf_appends(b, "null");
    }
    buf_appendc(b, '}');
}

static void build_line(struct buf *b, const struct logger *lg, enum log_level level,
                       const char *message, const struct log_field *fields, size_t nfields)
{
    if (lg->text)
        build_text(b, lg, level, message, fields, nfields);
    else
        build_json(b, lg, level, message, fields, nfields);
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
    buf_wrap(&b, stack, sizeof stack);
    build_line(&b, lg, level, message, fields, nfields);
    if (b.err) {
        /* Too long for the line buffer: say so rather than cut a line in half,
         * with everything a line carries (the version, the request) and the
         * message it replaces (a literal of the code's, short), but not the
         * fields that made it too long. */
        struct log_field dropped = LF_STR("droppedMessage", message);
        buf_reset(&b);
        build_line(&b, lg, level, "log line too long", &dropped, 1);
    }
    if (b.err) {
        /* Still too long (an absurd request id): the level and version alone. */
        buf_reset(&b);
        buf_printf(&b, "{\"level\":\"%s\",\"version\":", level_names[level]);
        buf_append_json(&b, lg->version ? lg->version : "", lg->version ? strlen(lg->version) : 0);
        buf_appends(&b, ",\"message\":\"log line too long\"}");
    }
    buf_appendc(&b, '\n');
    write_all(lg->fd, b.data, b.len);
}

/* Writes the iovecs with one writev(2) when it takes them whole, else the
 * rest as write_all does.  Cannot fail (a failed write is ignored). */
static void writev_all(int fd, struct iovec *iov, int n)
{
    ssize_t w;

    do
        w = writev(fd, iov, n);
    while (w < 0 && errno == EINTR);
    if (w < 0)
        return;
    for (int i = 0; i < n; i++) {
        size_t done = (size_t)w < iov[i].iov_len ? (size_t)w : iov[i].iov_len;
        write_all(fd, (const char *)iov[i].iov_base + done, iov[i].iov_len - done);
        w -= (ssize_t)done;
    }
}

void log_raw(const struct logger *lg, const char *line, size_t len)
{
    struct buf head;
    char stack[256], newline[] = "\n";
    size_t body = len > 0 && line[len - 1] == '\n' ? len - 1 : len;

    /* The version goes in after the line's '{' and the line itself is not
     * copied: one writev(2) of the three pieces, so that it still goes out
     * at once, and takes no memory, so that it never goes without the
     * version for the lack of some. */
    buf_wrap(&head, stack, sizeof stack);
    if (lg->version && body >= 2 && line[0] == '{') {
        buf_appends(&head, "{\"version\":");
        buf_append_json(&head, lg->version, strlen(lg->version));
        if (line[1] != '}')
            buf_appendc(&head, ',');
        if (head.err) {
            buf_reset(&head); /* a version of 200 bytes: the line as it is */
        } else {
            line++;
            body--;
        }
    }
    struct iovec iov[] = {
        {.iov_base = head.data, .iov_len = head.len},
        {.iov_base = (void *)line, .iov_len = body},
        {.iov_base = newline, .iov_len = 1},
    };
    writev_all(lg->fd, iov, 3);
}
