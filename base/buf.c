/* buf.c - growable byte buffer with a hard cap and a sticky error. */
#define _DEFAULT_SOURCE
#include "buf.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "utf8.h"

void buf_init(struct buf *b, size_t max)
{
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
    b->max = max;
    b->err = RC_OK;
}

void buf_wrap(struct buf *b, char *mem, size_t size)
{
    b->data = mem;
    b->len = 0;
    b->cap = size;
    b->max = size - 1; /* so buf_reserve never needs more than cap: no realloc */
    b->err = RC_OK;
    mem[0] = '\0';
}

rc_t buf_reserve(struct buf *b, size_t extra)
{
    if (b->err)
        return b->err;
    if (extra > b->max || b->len > b->max - extra) {
        b->err = RC_TOOBIG;
        return b->err;
    }
    size_t need = b->len + extra + 1; /* + NUL; cannot overflow: max is far below SIZE_MAX */
    if (need <= b->cap)
        return RC_OK;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < need)
        cap = cap > SIZE_MAX / 2 ? need : cap * 2;
    if (cap > b->max + 1)
        cap = b->max + 1;
    char *p = realloc(b->data, cap);
    if (!p) {
        b->err = RC_NOMEM;
        return b->err;
    }
    b->data = p;
    b->cap = cap;
    return RC_OK;
}

rc_t buf_append(struct buf *b, const void *p, size_t n)
{
    if (buf_reserve(b, n))
        return b->err;
    if (n)
        memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = '\0';
    return RC_OK;
}

rc_t buf_appends(struct buf *b, const char *s)
{
    return buf_append(b, s, strlen(s));
}

rc_t buf_appendc(struct buf *b, char c)
{
    return buf_append(b, &c, 1);
}

rc_t buf_printf(struct buf *b, const char *fmt, ...)
{
    va_list ap;
    char small[256];

    va_start(ap, fmt);
    int n = vsnprintf(small, sizeof small, fmt, ap);
    va_end(ap);
    if (n < 0) {
        b->err = b->err ? b->err : RC_INVALID;
        return b->err;
    }
    if ((size_t)n < sizeof small)
        return buf_append(b, small, (size_t)n);
    if (buf_reserve(b, (size_t)n))
        return b->err;
    va_start(ap, fmt);
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
    return RC_OK;
}

/* See buf.h.  ASCII other than the quote, the backslash and the control
 * characters is copied in runs; a byte at or above 0x80 is checked as the
 * start of a UTF-8 sequence, copied with it when well-formed, replaced by
 * U+FFFD when not. */
rc_t buf_append_json(struct buf *b, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    size_t start = 0;

    buf_appendc(b, '"');
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c < 0x80 && c != '"' && c != '\\')
            continue;
        if (c >= 0x80) {
            size_t k = utf8_seq_len((const unsigned char *)s + i, n - i);
            if (k) {
                i += k - 1;
                continue;
            }
        }
        buf_append(b, s + start, i - start);
        start = i + 1;
        switch (c) {
        case '"':
            buf_append(b, "\\\"", 2);
            break;
        case '\\':
            buf_append(b, "\\\\", 2);
            break;
        case '\n':
            buf_append(b, "\\n", 2);
            break;
        case '\r':
            buf_append(b, "\\r", 2);
            break;
        case '\t':
            buf_append(b, "\\t", 2);
            break;
        default:
            if (c >= 0x80) {
                buf_append(b, "\\ufffd", 6);
            } else {
                char u[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
                buf_append(b, u, sizeof u);
            }
        }
    }
    buf_append(b, s + start, n - start);
    return buf_appendc(b, '"');
}

void buf_truncate(struct buf *b, size_t len)
{
    if (len < b->len)
        b->len = len;
    b->err = RC_OK;
    if (b->data)
        b->data[b->len] = '\0';
}

void buf_consume(struct buf *b, size_t n)
{
    if (n >= b->len) {
        b->len = 0;
    } else {
        memmove(b->data, b->data + n, b->len - n);
        b->len -= n;
    }
    if (b->data)
        b->data[b->len] = '\0';
}

void buf_reset(struct buf *b)
{
    b->len = 0;
    b->err = RC_OK;
    if (b->data)
        b->data[0] = '\0';
}

void buf_free(struct buf *b)
{
    free(b->data);
    buf_init(b, b->max);
}

void buf_wipe(struct buf *b)
{
    if (b->data)
        explicit_bzero(b->data, b->cap);
    buf_free(b);
}
