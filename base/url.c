/* url.c - percent-encoding and endpoint splitting. */
#include "url.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "num.h"

/* See url.h: runs of unreserved bytes are appended whole. */
rc_t url_append_encoded(struct buf *b, const char *s, size_t n)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t start = 0;

    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
            c == '-' || c == '.' || c == '_' || c == '~')
            continue;
        char pct[3] = {'%', hex[c >> 4], hex[c & 15]};
        buf_append(b, s + start, i - start);
        buf_append(b, pct, sizeof pct);
        start = i + 1;
    }
    return buf_append(b, s + start, n - start);
}

/* See url.h. */
rc_t endpoint_parse(const char *s, struct endpoint *ep, char err[ERR_LEN])
{
    const char *host = s, *colon;
    size_t hn;
    int64_t port;

    if (!s || !*s) {
        snprintf(err, ERR_LEN, "the endpoint is empty");
        return RC_CONFIG;
    }
    if (s[0] == '[') {
        const char *close = strchr(s, ']');
        if (!close || close[1] != ':') {
            snprintf(err, ERR_LEN, "the endpoint is not [address]:port");
            return RC_CONFIG;
        }
        host = s + 1;
        hn = (size_t)(close - host);
        colon = close + 1;
    } else {
        colon = strrchr(s, ':');
        if (!colon || memchr(s, ':', (size_t)(colon - s))) {
            snprintf(err, ERR_LEN, "the endpoint is not host:port");
            return RC_CONFIG;
        }
        hn = (size_t)(colon - s);
    }
    if (hn == 0 || hn >= sizeof ep->host) {
        snprintf(err, ERR_LEN, "the endpoint's host is empty or over %zu bytes",
                 sizeof ep->host - 1);
        return RC_CONFIG;
    }
    if (num_parse_i64(colon + 1, strlen(colon + 1), 1, 65535, &port) != RC_OK) {
        snprintf(err, ERR_LEN, "the endpoint's port is not 1 to 65535");
        return RC_CONFIG;
    }
    memcpy(ep->host, host, hn);
    ep->host[hn] = '\0';
    snprintf(ep->port, sizeof ep->port, "%d", (int)port);
    return RC_OK;
}

/* See url.h. */
rc_t endpoint_set(struct endpoint *ep, const char *host, long port)
{
    size_t hn = strlen(host);

    if (hn == 0 || hn >= sizeof ep->host || port < 1 || port > 65535)
        return RC_CONFIG;
    memcpy(ep->host, host, hn + 1);
    snprintf(ep->port, sizeof ep->port, "%ld", port);
    return RC_OK;
}
