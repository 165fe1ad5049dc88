/* result.c - names for the project-wide result codes. */
#include "result.h"

#include <stdarg.h>
#include <stdio.h>

const char *rc_strerror(rc_t rc)
{
    static const char *const names[RC__COUNT] = {
        [RC_OK] = "ok",
        [RC_NOMEM] = "out of memory",
        [RC_TOOBIG] = "size limit exceeded",
        [RC_INVALID] = "invalid input",
        [RC_CONFIG] = "invalid configuration",
        [RC_IO] = "input/output error",
        [RC_PROTOCOL] = "protocol error",
        [RC_CRYPTO] = "cryptographic failure",
        [RC_DB] = "database error",
        [RC_TIMEOUT] = "deadline reached",
    };
    if ((unsigned)rc >= RC__COUNT)
        return "unknown error";
    return names[rc];
}

void err_set(char err[ERR_LEN], const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(err, ERR_LEN, fmt, ap);
    va_end(ap);
}
