/* utf8.c - whole-text UTF-8 checks on top of utf8_seq_len. */
#include "utf8.h"

#include <string.h>

/* See utf8.h. */
int utf8_valid(const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s;

    for (size_t i = 0; i < n;) {
        size_t k = utf8_seq_len(p + i, n - i);
        if (k == 0)
            return 0;
        i += k;
    }
    return 1;
}

/* See utf8.h. */
size_t utf8_scrub(const char *s, size_t n, char *out)
{
    const unsigned char *p = (const unsigned char *)s;

    for (size_t i = 0; i < n;) {
        size_t k = utf8_seq_len(p + i, n - i);
        if (k == 0) {
            out[i++] = '?';
        } else {
            memcpy(out + i, s + i, k);
            i += k;
        }
    }
    return n;
}
