/* num.c - bounded decimal and hexadecimal parsing. */
#include "num.h"

rc_t num_parse_i64(const char *s, size_t n, int64_t min, int64_t max, int64_t *out)
{
    size_t i = 0;
    int neg = 0;
    uint64_t v = 0;

    if (n && s[0] == '-') {
        neg = 1;
        i = 1;
    }
    if (i == n || n - i > 19)
        return RC_INVALID;
    for (; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return RC_INVALID;
        v = v * 10 + (uint64_t)(s[i] - '0'); /* 19 digits fit in uint64_t */
    }
    if (neg) {
        if (v > (uint64_t)INT64_MAX + 1)
            return RC_INVALID;
        int64_t r = v == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)v;
        if (r < min || r > max)
            return RC_INVALID;
        *out = r;
        return RC_OK;
    }
    if (v > (uint64_t)INT64_MAX || (int64_t)v < min || (int64_t)v > max)
        return RC_INVALID;
    *out = (int64_t)v;
    return RC_OK;
}

rc_t num_parse_hex(const char *s, size_t n, uint64_t max, uint64_t *out)
{
    uint64_t v = 0;

    if (n == 0 || n > 16)
        return RC_INVALID;
    for (size_t i = 0; i < n; i++) {
        unsigned d;
        char c = s[i];
        if (c >= '0' && c <= '9')
            d = (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f')
            d = (unsigned)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F')
            d = (unsigned)(c - 'A' + 10);
        else
            return RC_INVALID;
        v = v << 4 | d;
    }
    if (v > max)
        return RC_INVALID;
    *out = v;
    return RC_OK;
}
