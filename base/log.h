/* log.h - structured logging: one JSON object a line on stdout, as Lambda's
 * JSON log format expects (timestamp, level, requestId, message, fields).
 *
 * Callers pass reason codes, counts and ids here, never a message's field
 * values or a secret: the logger cannot tell PII apart, so the rule is kept
 * at the call sites (and checked by the tests, which grep all output). */
#ifndef LOG_H
#define LOG_H

#include <stddef.h>

enum log_level { LOG_TRACE, LOG_DEBUG, LOG_INFO, LOG_WARN, LOG_ERROR, LOG_FATAL };

enum log_kind { LOG_STR, LOG_NUM };

struct log_field {
    const char *key; /* JSON key, a literal */
    enum log_kind kind;
    const char *str; /* LOG_STR: NUL-terminated UTF-8 text, borrowed */
    long long num;   /* LOG_NUM */
};

#define LF_STR(k, v) ((struct log_field){.key = (k), .kind = LOG_STR, .str = (v)})
#define LF_NUM(k, v) ((struct log_field){.key = (k), .kind = LOG_NUM, .num = (long long)(v)})

struct logger {
    enum log_level min;     /* lines below this level are dropped (AWS_LAMBDA_LOG_LEVEL) */
    int text;               /* AWS_LAMBDA_LOG_FORMAT=Text: "LEVEL message key=value" lines */
    const char *request_id; /* borrowed; the current invocation's id, or NULL */
    const char *trace_id;   /* borrowed; its Lambda-Runtime-Trace-Id, or NULL when none */
    int cold_start;         /* 1 during the first invocation of this process, else 0 */
    int fd;                 /* where lines go; 1 (stdout) in Lambda */
    const char *version;    /* borrowed; the release every line carries as "version"
                               (JSON-safe: [A-Za-z0-9._+-]), or NULL for none */
};

/* Sets up a logger from the two Lambda settings (either may be NULL: INFO, JSON),
 * with no version (the caller sets lg->version).  Unknown values fall back to
 * the defaults; cannot fail. */
void log_init(struct logger *lg, const char *level, const char *format, int fd);

/* Writes one line with a single write(2), so lines never interleave; drops it
 * when below the minimum level.  A line too long for its buffer (1 KiB, on
 * the stack) becomes "log line too long" with the version, the request and
 * the message it replaces, without its fields.  Cannot fail (a failed write
 * is ignored). */
void log_emit(const struct logger *lg, enum log_level level, const char *message,
              const struct log_field *fields, size_t nfields);

/* Writes one pre-built JSON object line (used for Embedded Metric Format) with
 * the logger's "version" added as its first member, so that it carries the
 * version as every other line does (a property, not a dimension or a metric:
 * EMF leaves members its directive does not name alone).  One writev(2), and
 * no memory taken, so no shortage can drop the version.  A line that is not an
 * object goes as it is.  Cannot fail (a failed write is ignored). */
void log_raw(const struct logger *lg, const char *line, size_t len);

#define LOG_NFIELDS(...) (sizeof((struct log_field[]){__VA_ARGS__}) / sizeof(struct log_field))
#define log_at(lg, lvl, msg, ...)                                                                  \
    log_emit((lg), (lvl), (msg), (const struct log_field[]){__VA_ARGS__}, LOG_NFIELDS(__VA_ARGS__))
#define log_msg(lg, lvl, msg) log_emit((lg), (lvl), (msg), NULL, 0)

#endif
