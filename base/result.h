/* result.h - the project-wide result code, returned by every fallible function.
 *
 * Details of a failure go into a caller-owned `char err[ERR_LEN]`, never into a
 * global.  Keep the two failure kinds apart: RC_INVALID is "this input is bad"
 * (a record's own failure); the others mean "a dependency or resource broke"
 * (the batch fails). */
#ifndef RESULT_H
#define RESULT_H

#define ERR_LEN 256

typedef enum {
    RC_OK = 0,
    RC_NOMEM,    /* an allocation failed */
    RC_TOOBIG,   /* a size limit (the 6 MB payload cap, a field length) was exceeded */
    RC_INVALID,  /* input does not follow its format: bad JSON, bad header, bad record */
    RC_CONFIG,   /* a setting is missing or malformed */
    RC_IO,       /* a socket or file operation failed; the peer may have gone away */
    RC_PROTOCOL, /* the peer broke its protocol (HTTP framing, unexpected status) */
    RC_CRYPTO,   /* OpenSSL reported a failure, or authentication of a masked value failed */
    RC_DB,       /* the database failed or is unreachable */
    RC_TIMEOUT,  /* the invocation deadline would be passed */
    RC__COUNT
} rc_t;

/* Returns a static, human-readable name for a result code; cannot fail. */
const char *rc_strerror(rc_t rc);

/* Fills the caller's err with printf-formatted text, cut to fit (never
 * sprintf); cannot fail. */
void err_set(char err[ERR_LEN], const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
