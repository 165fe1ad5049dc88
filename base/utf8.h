/* utf8.h - UTF-8 validation, written once for the JSON tokenizer (every
 * string of every event, so it is inline) and for the texts the runtime
 * posts back to the Runtime API. */
#ifndef UTF8_H
#define UTF8_H

#include <stddef.h>
#include <stdint.h>

/* Returns the length (1 to 4) of the well-formed UTF-8 sequence at p, with
 * avail > 0 bytes readable, per Unicode table 3-7; 0 when it is not one
 * (overlong, surrogate, above U+10FFFF, truncated, a stray continuation
 * byte).  Cannot fail. */
static inline size_t utf8_seq_len(const unsigned char *p, size_t avail)
{
    unsigned c = p[0];
    unsigned lo = 0x80, hi = 0xBF;
    size_t n;

    if (c < 0x80)
        return 1;
    if (c >= 0xC2 && c <= 0xDF) {
        n = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
        n = 3;
        if (c == 0xE0)
            lo = 0xA0; /* overlong below U+0800 */
        else if (c == 0xED)
            hi = 0x9F; /* U+D800..U+DFFF */
    } else if (c >= 0xF0 && c <= 0xF4) {
        n = 4;
        if (c == 0xF0)
            lo = 0x90; /* overlong below U+10000 */
        else if (c == 0xF4)
            hi = 0x8F; /* above U+10FFFF */
    } else {
        return 0;
    }
    if (avail < n || p[1] < lo || p[1] > hi)
        return 0;
    for (size_t k = 2; k < n; k++)
        if ((p[k] & 0xC0) != 0x80)
            return 0;
    return n;
}

/* Writes the UTF-8 form of cp (at most U+10FFFF, not a surrogate) to out,
 * which has room for 4 bytes.  Returns the byte count; cannot fail. */
static inline size_t utf8_put(uint32_t cp, unsigned char *out)
{
    if (cp < 0x80) {
        out[0] = (unsigned char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (unsigned char)(0xC0 | cp >> 6);
        out[1] = (unsigned char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (unsigned char)(0xE0 | cp >> 12);
        out[1] = (unsigned char)(0x80 | (cp >> 6 & 0x3F));
        out[2] = (unsigned char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (unsigned char)(0xF0 | cp >> 18);
    out[1] = (unsigned char)(0x80 | (cp >> 12 & 0x3F));
    out[2] = (unsigned char)(0x80 | (cp >> 6 & 0x3F));
    out[3] = (unsigned char)(0x80 | (cp & 0x3F));
    return 4;
}

/* Returns 1 when s[0..n) is entirely well-formed UTF-8, else 0; cannot fail. */
int utf8_valid(const char *s, size_t n);

/* Copies s[0..n) to out (room for n bytes), every byte that does not start
 * a well-formed sequence replaced by '?', so that a text cut in the middle
 * of a character (by snprintf, say) can go into JSON.  Returns the bytes
 * written (always n); cannot fail. */
size_t utf8_scrub(const char *s, size_t n, char *out);

#endif
