/* url.h - the pieces of URLs this program builds or reads: percent-encoding
 * of a path segment or query value, and "host:port" endpoints. */
#ifndef URL_H
#define URL_H

#include <stddef.h>

#include "buf.h"
#include "result.h"

/* Appends s[0..n) to b with every byte outside RFC 3986's unreserved set
 * (A-Z a-z 0-9 - . _ ~) written as %XX (upper-case hex), which is safe both
 * in a path segment and in a query value.  Returns b's sticky error or
 * RC_OK. */
rc_t url_append_encoded(struct buf *b, const char *s, size_t n);

/* A network endpoint, split. */
struct endpoint {
    char host[256]; /* a name, an IPv4 address or an IPv6 address without brackets */
    char port[8];   /* decimal, 1 to 65535 */
};

/* Splits "host:port" or "[IPv6]:port" (the form of AWS_LAMBDA_RUNTIME_API)
 * into ep.  An IPv6 address must be in brackets; the port must be 1 to 65535.
 * Returns RC_OK, or RC_CONFIG with err saying what is wrong (quoting
 * nothing). */
rc_t endpoint_parse(const char *s, struct endpoint *ep, char err[ERR_LEN]);

/* Sets ep to host and the number port (1 to 65535).  Returns RC_OK, or
 * RC_CONFIG when host does not fit or port is out of range. */
rc_t endpoint_set(struct endpoint *ep, const char *host, long port);

#endif
