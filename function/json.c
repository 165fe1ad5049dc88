/* json.c - strict RFC 8259 tokenizer: flat token array, zero-copy strings,
 * per-string content flags instead of whole-document failures.
 *
 * What fails the document (RC_INVALID, with a byte offset in err):
 *   - anything outside the RFC 8259 grammar: bad literals, numbers with a
 *     leading zero, '+', a bare '.5', NaN/Infinity, trailing commas, single
 *     quotes, comments, whitespace other than space/tab/LF/CR, trailing text;
 *   - a malformed escape (\x, \u12, \u004G) or an unterminated string;
 *   - a raw control character U+0001..U+001F inside a string (RFC 8259
 *     section 7 requires them escaped; every JSON encoder, AWS's included,
 *     escapes them, so inside the SQS event they never appear, and inside a
 *     body they make that body "not JSON", a per-record rejection);
 *   - nesting deeper than JSON_MAX_DEPTH.
 * What only flags the string it occurs in:
 *   - a raw 0x00 byte or "\u0000": JSON_HAS_NUL.  A raw NUL is a control
 *     character and strictly malformed, but treating it as a flag keeps one
 *     record's bad body from failing the whole event (the body becomes
 *     "body_nul_character", the same as its escaped form);
 *   - invalid UTF-8 (stray continuation bytes, overlong forms, UTF-8-encoded
 *     surrogates, code points above U+10FFFF, truncated sequences) and
 *     escaped lone surrogates: JSON_BAD_UTF8.
 * Bytes outside strings must be ASCII (the grammar has no place for others). */
#include "json.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "utf8.h"

#define JSON_MAX_DEPTH 64
#define JSON_MAX_LEN ((size_t)1 << 31)

/* Byte classes inside a string: 0 = ordinary printable ASCII. */
enum { C_PLAIN = 0, C_QUOTE, C_BSLASH, C_CTRL, C_HIGH };

#define X4(c) c, c, c, c
#define X16(c) X4(c), X4(c), X4(c), X4(c)
static const uint8_t str_class[256] = {
    /* 0x00-0x1f */
    X16(C_CTRL),
    X16(C_CTRL),
    /* 0x20-0x7f: C_PLAIN (0) but for these two */
    ['"'] = C_QUOTE,
    ['\\'] = C_BSLASH,
    /* 0x80-0xff */
    [0x80] = X16(C_HIGH),
    X16(C_HIGH),
    X16(C_HIGH),
    X16(C_HIGH),
    X16(C_HIGH),
    X16(C_HIGH),
    X16(C_HIGH),
    X16(C_HIGH),
};
#undef X16
#undef X4

#define ONES ((uint64_t)0x0101010101010101)
#define HIGHS ((uint64_t)0x8080808080808080)

/* On a little-endian machine the lowest flagged byte of a SWAR test is the
 * first in memory: __builtin_ctzll finds it.  The lowest flagged byte is
 * always a real one (a borrow only carries upward from a byte that is), so
 * the position is exact; elsewhere a byte loop finds it. */
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define SWAR_FIRST_BYTE 1
#else
#define SWAR_FIRST_BYTE 0
#endif

/* Flags (the high bit of) each byte of v equal to c, and possibly bytes
 * above a flagged one.  Cannot fail. */
static inline uint64_t swar_eq(uint64_t v, unsigned char c)
{
    uint64_t x = v ^ (ONES * c);
    return (x - ONES) & ~x & HIGHS;
}

/* Returns nonzero when any byte of the 8 at p needs a look: '"', '\\', a
 * control character or a byte >= 0x80.  The bit tests are exact as a
 * yes/no answer (they only blur *which* byte above the first).  Cannot fail. */
static inline uint64_t swar_special(const unsigned char *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
    uint64_t lt = (v - ONES * 0x20) & ~v & HIGHS; /* a byte < 0x20 (or >= 0x80, also wanted) */
    return lt | swar_eq(v, '"') | swar_eq(v, '\\') | (v & HIGHS);
}

/* Returns the value of one hexadecimal digit, or -1; cannot fail. */
static inline int hexval(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c |= 0x20;
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

/* Reads 4 hex digits at p (p + 4 <= e is checked here).  Returns the value,
 * or -1 when they are missing or malformed. */
static long hex4(const unsigned char *p, const unsigned char *e)
{
    if (e - p < 4)
        return -1;
    int a = hexval(p[0]), b = hexval(p[1]), c = hexval(p[2]), d = hexval(p[3]);
    if ((a | b | c | d) < 0)
        return -1;
    return (long)((a << 12) | (b << 8) | (c << 4) | d);
}

/* Decodes the escape whose backslash has been consumed: *pp points at the
 * letter after it.  Stores the code point in *cp and advances *pp past the
 * escape (and past a following low-surrogate escape that pairs with a high
 * one).  Returns 0, 1 for a lone surrogate (*cp is then U+FFFD), or -1 for a
 * malformed escape (*pp then points at the offending byte). */
static int read_escape(const unsigned char **pp, const unsigned char *e, uint32_t *cp)
{
    const unsigned char *p = *pp;
    long u;

    if (p >= e)
        return -1;
    switch (*p) {
    case '"':
        *cp = '"';
        break;
    case '\\':
        *cp = '\\';
        break;
    case '/':
        *cp = '/';
        break;
    case 'b':
        *cp = '\b';
        break;
    case 'f':
        *cp = '\f';
        break;
    case 'n':
        *cp = '\n';
        break;
    case 'r':
        *cp = '\r';
        break;
    case 't':
        *cp = '\t';
        break;
    case 'u':
        u = hex4(p + 1, e);
        if (u < 0) {
            *pp = p + 1;
            return -1;
        }
        p += 5;
        if (u >= 0xDC00 && u <= 0xDFFF) {
            *cp = 0xFFFD;
            *pp = p;
            return 1;
        }
        if (u >= 0xD800 && u <= 0xDBFF) {
            long lo = e - p >= 6 && p[0] == '\\' && p[1] == 'u' ? hex4(p + 2, e) : -1;
            if (lo < 0xDC00 || lo > 0xDFFF) {
                *cp = 0xFFFD;
                *pp = p;
                return 1;
            }
            *cp = 0x10000 + (((uint32_t)u - 0xD800) << 10) + ((uint32_t)lo - 0xDC00);
            *pp = p + 6;
            return 0;
        }
        *cp = (uint32_t)u;
        *pp = p;
        return 0;
    default:
        return -1;
    }
    *pp = p + 1;
    return 0;
}

/* Returns the first byte at or after p that is not plain printable ASCII
 * ('"', '\\', a control character, a byte >= 0x80), or e.  Cannot fail. */
static inline const unsigned char *skip_plain(const unsigned char *p, const unsigned char *e)
{
    while (e - p >= 8) {
        uint64_t m = swar_special(p);
        if (m) {
            /* No byte loop: a body's escapes stop the scan every few bytes. */
            if (SWAR_FIRST_BYTE)
                return p + (__builtin_ctzll(m) >> 3);
            break;
        }
        p += 8;
    }
    while (p < e && str_class[*p] == C_PLAIN)
        p++;
    return p;
}

/* The letters that may follow a backslash other than 'u'. */
static const uint8_t simple_escape[256] = {
    ['"'] = 1, ['\\'] = 1, ['/'] = 1, ['b'] = 1, ['f'] = 1, ['n'] = 1, ['r'] = 1, ['t'] = 1,
};

/* Scans a string's content; *pp points just past the opening quote and is
 * left on the closing quote.  ORs JSON_* flags into *flags.  Returns 0, or
 * -1 for a structure error with *pp at the offending byte.  The parser calls
 * it only when skip_plain stopped on something other than the quote. */
static int scan_string(const unsigned char **pp, const unsigned char *e, uint8_t *flags)
{
    const unsigned char *p = *pp;
    uint32_t cp;
    size_t n;

    for (;;) {
        p = skip_plain(p, e);
        if (p >= e) {
            *pp = p;
            return -1; /* unterminated */
        }
        switch (str_class[*p]) {
        case C_QUOTE:
            *pp = p;
            return 0;
        case C_BSLASH:
            p++;
            *flags |= JSON_ESCAPED;
            if (p < e && simple_escape[*p]) {
                p++; /* \" \\ \/ \b \f \n \r \t: the common case, inline */
                break;
            }
            switch (read_escape(&p, e, &cp)) {
            case -1:
                *pp = p;
                return -1;
            case 1:
                *flags |= JSON_BAD_UTF8;
                break;
            default:
                if (cp == 0)
                    *flags |= JSON_HAS_NUL;
            }
            break;
        case C_CTRL:
            if (*p != 0) {
                *pp = p;
                return -1;
            }
            *flags |= JSON_HAS_NUL;
            p++;
            break;
        default: /* C_HIGH */
            n = utf8_seq_len(p, (size_t)(e - p));
            if (n == 0) {
                *flags |= JSON_BAD_UTF8;
                n = 1;
            }
            p += n;
        }
    }
}

/* Scans the string whose opening quote *pp points at, for token tk: the
 * fast path is one skip_plain to the closing quote; anything else (escapes,
 * UTF-8, errors) goes through scan_string, whose flags tk and *doc_flags
 * get.  Sets tk's end and leaves *pp past the closing quote.  Returns 0, or
 * -1 with *pp at the offending byte (or at e: unterminated). */
static inline int string_token(const unsigned char **pp, const unsigned char *s,
                               const unsigned char *e, struct json_tok *tk, unsigned *doc_flags)
{
    const unsigned char *p = skip_plain(*pp + 1, e);

    if (p >= e || *p != '"') {
        int r = scan_string(&p, e, &tk->flags);
        if (r < 0) {
            *pp = p;
            return -1;
        }
        *doc_flags |= tk->flags;
    }
    tk->end = (uint32_t)(p - s);
    *pp = p + 1;
    return 0;
}

/* Scans a number per RFC 8259: -? (0 | [1-9][0-9]*) (.[0-9]+)? ([eE][+-]?[0-9]+)?
 * *pp points at its first byte and is left just past it.  What follows is
 * the caller's business ("01" fails there, as a '1' where ',' was due).
 * Returns 0, or -1 with *pp at the offending byte. */
static int scan_number(const unsigned char **pp, const unsigned char *e)
{
    const unsigned char *p = *pp;
    int rc = -1;

    if (p < e && *p == '-')
        p++;
    if (p >= e || *p < '0' || *p > '9')
        goto out;
    if (*p++ != '0')
        while (p < e && *p >= '0' && *p <= '9')
            p++;
    if (p < e && *p == '.') {
        p++;
        if (p >= e || *p < '0' || *p > '9')
            goto out;
        while (p < e && *p >= '0' && *p <= '9')
            p++;
    }
    if (p < e && (*p == 'e' || *p == 'E')) {
        p++;
        if (p < e && (*p == '+' || *p == '-'))
            p++;
        if (p >= e || *p < '0' || *p > '9')
            goto out;
        while (p < e && *p >= '0' && *p <= '9')
            p++;
    }
    rc = 0;
out:
    *pp = p;
    return rc;
}

/* See json.h: an empty document; allocates nothing, cannot fail. */
void json_init(struct json_doc *doc)
{
    doc->text = NULL;
    doc->len = 0;
    doc->tok = NULL;
    doc->ntok = 0;
    doc->cap = 0;
    doc->flags = 0;
}

/* See json.h: frees the token array and leaves an empty, reusable document. */
void json_free(struct json_doc *doc)
{
    free(doc->tok);
    json_init(doc);
}

/* Grows the token array by doubling, never beyond one token per byte of
 * text (every token consumes at least one byte, so a valid document never
 * needs more).  Kept out of line: the parser's hot loop only tests
 * ntok == cap.  Returns 0, or -1 when memory runs out (the array is kept). */
static int grow_tokens(struct json_doc *doc, uint32_t ntok)
{
    size_t cap = doc->cap ? (size_t)doc->cap * 2 : 16;
    if (cap > doc->len)
        cap = doc->len;
    if (cap <= ntok)
        cap = (size_t)ntok + 1;
    struct json_tok *t = realloc(doc->tok, cap * sizeof *t);
    if (!t)
        return -1;
    doc->tok = t;
    doc->cap = (uint32_t)cap;
    return 0;
}

/* Appends a token of `type_` starting at byte `start_` and sets t to its
 * index; jumps to nomem when the array cannot grow.  Works on the parser's
 * local copies of the array and count (see json_parse). */
#define PUSH_TOK(type_, start_)                                                                    \
    do {                                                                                           \
        if (ntok == doc->cap) {                                                                    \
            if (grow_tokens(doc, ntok) < 0)                                                        \
                goto nomem;                                                                        \
            tok = doc->tok;                                                                        \
        }                                                                                          \
        t = ntok++;                                                                                \
        tok[t].type = (type_);                                                                     \
        tok[t].flags = 0;                                                                          \
        tok[t].start = tok[t].end = (uint32_t)(start_);                                            \
        tok[t].next = ntok;                                                                        \
        tok[t].count = 0;                                                                          \
    } while (0)

#define SKIP_WS()                                                                                  \
    while (p < e && (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t'))                         \
    p++

/* Tokenizes with an explicit stack of open containers (no recursion, so the
 * depth limit bounds memory, not the C stack).  The four labels are the
 * states of the grammar: `value` expects any value, `key` expects a member
 * name, `after` has just finished a value and expects ',', a closing bracket
 * or, at depth 0, the end of the text; `close` ends a container.  The token
 * array and count live in locals while parsing (stores into tokens then
 * cannot alias them), and are written back at the end. */
static int tok_eq(const struct json_doc *doc, uint32_t i, const char *key, size_t n);

#define NO_WATCH UINT32_MAX

rc_t json_parse_stream(struct json_doc *doc, const char *text, size_t len,
                       const struct json_name *member, json_elem_fn fn, void *ctx,
                       char err[ERR_LEN])
{
    const unsigned char *s = (const unsigned char *)text, *p = s, *e = s + len;
    /* The array whose elements go to fn (NO_WATCH: none, or no more);
     * `wanted` says the value about to be read is the watched member's. */
    uint32_t watch = NO_WATCH;
    int wanted = 0, member_seen = !member || !fn;
    uint32_t stack[JSON_MAX_DEPTH]; /* open containers' token indices */
    uint8_t in_obj[JSON_MAX_DEPTH]; /* 1 when that container is an object */
    int depth = 0;
    struct json_tok *tok = doc->tok;
    uint32_t ntok = 0, t;
    const char *what = "unexpected character";
    rc_t rc = RC_INVALID;

    doc->text = text;
    doc->len = len;
    doc->ntok = 0;
    doc->flags = 0;
    if (len > JSON_MAX_LEN) {
        snprintf(err, ERR_LEN, "JSON text of %zu bytes is over the 2 GiB limit", len);
        return RC_TOOBIG;
    }

value:
    SKIP_WS();
    if (p >= e) {
        what = "unexpected end of text, a value was due";
        goto fail;
    }
    if (depth && !in_obj[depth - 1])
        tok[stack[depth - 1]].count++;
    switch (*p) {
    case '{':
    case '[':
        if (depth == JSON_MAX_DEPTH) {
            what = "nesting deeper than 64 levels";
            goto fail;
        }
        PUSH_TOK(*p == '{' ? JSON_OBJECT : JSON_ARRAY, p - s);
        if (wanted && *p == '[')
            watch = t;
        wanted = 0;
        in_obj[depth] = *p == '{';
        stack[depth++] = t;
        p++;
        SKIP_WS();
        if (p < e && *p == (in_obj[depth - 1] ? '}' : ']'))
            goto close;
        if (in_obj[depth - 1])
            goto key;
        goto value;
    case '"':
        PUSH_TOK(JSON_STRING, p - s + 1);
        if (string_token(&p, s, e, &tok[t], &doc->flags) < 0)
            goto bad_string;
        goto after;
    case 't':
    case 'f':
    case 'n': {
        static const char *const lit[] = {"true", "false", "null"};
        static const size_t litlen[] = {4, 5, 4};
        static const uint8_t littype[] = {JSON_TRUE, JSON_FALSE, JSON_NULL};
        int k = *p == 't' ? 0 : *p == 'f' ? 1 : 2;
        if ((size_t)(e - p) < litlen[k] || memcmp(p, lit[k], litlen[k]) != 0) {
            what = "bad literal";
            goto fail;
        }
        PUSH_TOK(littype[k], p - s);
        p += litlen[k];
        tok[t].end = (uint32_t)(p - s);
        goto after;
    }
    default:
        if (*p != '-' && (*p < '0' || *p > '9'))
            goto fail;
        PUSH_TOK(JSON_NUMBER, p - s);
        if (scan_number(&p, e) < 0) {
            what = "bad number";
            goto fail;
        }
        tok[t].end = (uint32_t)(p - s);
        goto after;
    }

key:
    /* p is on a non-blank byte inside an object. */
    if (p >= e || *p != '"') {
        what = p >= e ? "unexpected end of text, a member name was due" : "member name expected";
        goto fail;
    }
    tok[stack[depth - 1]].count++;
    PUSH_TOK(JSON_STRING, p - s + 1);
    if (string_token(&p, s, e, &tok[t], &doc->flags) < 0)
        goto bad_string;
    /* The root object's first member of that name: its value is watched if
     * it is an array (a later duplicate is the caller's to notice). */
    if (!member_seen && depth == 1 && tok_eq(doc, t, member->s, member->n)) {
        member_seen = 1;
        wanted = 1;
    }
    SKIP_WS();
    if (p >= e || *p != ':') {
        what = "':' expected after member name";
        goto fail;
    }
    p++;
    goto value;

after:
    /* t is the value just completed (a scalar, or a container just closed). */
    wanted = 0;
    if (depth == 2 && stack[1] == watch) {
        doc->ntok = ntok;
        int next = fn(ctx, doc, watch, t);
        if (next == JSON_ELEM_FORGET)
            ntok = t; /* the element's tokens are the last ones: they go */
        else if (next != JSON_ELEM_NEXT)
            watch = NO_WATCH;
    }
    SKIP_WS();
    if (depth == 0) {
        if (p != e) {
            what = "text after the root value";
            goto fail;
        }
        rc = RC_OK;
        goto out;
    }
    if (p >= e) {
        what = "unexpected end of text inside a container";
        goto fail;
    }
    if (*p == ',') {
        p++;
        if (!in_obj[depth - 1])
            goto value;
        SKIP_WS();
        goto key;
    }
    if (*p != (in_obj[depth - 1] ? '}' : ']')) {
        what = "',' or closing bracket expected";
        goto fail;
    }
close:
    /* p is on the closing bracket of the innermost container. */
    t = stack[--depth];
    p++;
    tok[t].end = (uint32_t)(p - s);
    tok[t].next = ntok;
    goto after;

bad_string:
    what = p >= e ? "unterminated string" : "bad escape or control character in string";
    goto fail;
nomem:
    snprintf(err, ERR_LEN, "out of memory for JSON tokens");
    rc = RC_NOMEM;
    goto out;
fail:
    snprintf(err, ERR_LEN, "invalid JSON at byte offset %zu: %s", (size_t)(p - s), what);
out:
    doc->ntok = rc == RC_OK ? ntok : 0;
    if (rc != RC_OK)
        doc->flags = 0;
    return rc;
}

#undef SKIP_WS
#undef PUSH_TOK
#undef NO_WATCH

/* See json.h: json_parse_stream without watching. */
rc_t json_parse(struct json_doc *doc, const char *text, size_t len, char err[ERR_LEN])
{
    return json_parse_stream(doc, text, len, NULL, NULL, NULL, err);
}

/* Compares the decoded content of string token i with key[0..n).  Returns 1
 * when equal, else 0 (also for a token that is not a string); cannot fail.
 * Escaped names are decoded one character at a time, without scratch. */
static int tok_eq(const struct json_doc *doc, uint32_t i, const char *key, size_t n)
{
    const struct json_tok *t = &doc->tok[i];
    const unsigned char *p = (const unsigned char *)doc->text + t->start;
    const unsigned char *e = (const unsigned char *)doc->text + t->end;
    const unsigned char *k = (const unsigned char *)key, *ke = k + n;
    unsigned char ch[4];
    uint32_t cp;

    if (t->type != JSON_STRING)
        return 0;
    if (!(t->flags & JSON_ESCAPED))
        return (size_t)(e - p) == n && memcmp(p, key, n) == 0;
    while (p < e) {
        if (*p != '\\') {
            if (k >= ke || *k++ != *p++)
                return 0;
            continue;
        }
        p++;
        if (read_escape(&p, e, &cp) < 0)
            return 0; /* cannot happen in a tokenized string */
        size_t m = utf8_put(cp, ch);
        if ((size_t)(ke - k) < m || memcmp(k, ch, m) != 0)
            return 0;
        k += m;
    }
    return k == ke;
}

/* See json.h.  Exported for callers that walk an object's members
 * themselves (one pass instead of one json_get per key). */
int json_streq(const struct json_doc *doc, uint32_t i, const char *s, size_t n)
{
    if (i >= doc->ntok)
        return 0;
    return tok_eq(doc, i, s, n);
}

/* See json.h: names are chained by their length modulo 16. */
void json_names_init(struct json_names *set, const struct json_name *names, size_t count)
{
    assert(count <= JSON_MEMBERS_MAX);
    set->names = names;
    set->count = count;
    memset(set->first, 0xff, sizeof set->first);
    for (size_t k = count; k-- > 0;) {
        set->chain[k] = set->first[names[k].n & 15];
        set->first[names[k].n & 15] = (uint8_t)k;
    }
}

/* See json.h: json_members with one name.  Returns the value's index or -1. */
long json_get(const struct json_doc *doc, uint32_t obj, const char *key)
{
    const struct json_name name = {key, strlen(key)};
    struct json_names set;
    long found;

    json_names_init(&set, &name, 1);
    json_members(doc, obj, &set, &found);
    return found;
}

/* See json.h: unescaped strings are views into the text (no copy); escaped
 * ones are decoded into scratch.
 * Returns RC_OK, RC_INVALID (not a string) or scratch's sticky error. */
rc_t json_string(const struct json_doc *doc, uint32_t i, struct buf *scratch, const char **out,
                 size_t *out_len)
{
    if (i >= doc->ntok || doc->tok[i].type != JSON_STRING)
        return RC_INVALID;
    const struct json_tok *t = &doc->tok[i];
    const unsigned char *p = (const unsigned char *)doc->text + t->start;
    const unsigned char *e = (const unsigned char *)doc->text + t->end;
    if (!(t->flags & JSON_ESCAPED)) {
        *out = (const char *)p;
        *out_len = (size_t)(e - p);
        return RC_OK;
    }
    if (buf_reserve(scratch, (size_t)(e - p)))
        return scratch->err;
    unsigned char *o = (unsigned char *)scratch->data + scratch->len, *o0 = o;
    uint32_t cp;
    for (;;) {
        /* Copy up to the next backslash.  A body is JSON inside a JSON
         * string, with an escaped quote every few bytes: eight bytes are
         * copied at a time and the backslash found among them, as the
         * tokenizer finds it (swar_special), rather than a memchr and a
         * memcpy per run.  Output never outruns input, so the 8-byte store
         * stays inside what the input's length reserved. */
        while (SWAR_FIRST_BYTE && e - p >= 8) {
            uint64_t v, b;
            memcpy(&v, p, 8);
            memcpy(o, &v, 8);
            if ((b = swar_eq(v, '\\')) != 0) {
                size_t k = (size_t)__builtin_ctzll(b) >> 3;
                o += k;
                p += k;
                break;
            }
            o += 8;
            p += 8;
        }
        while (p < e && *p != '\\')
            *o++ = *p++;
        if (p >= e)
            break;
        p++;             /* the backslash */
        if (*p == '"') { /* the common escape, inline */
            *o++ = '"';
            p++;
            continue;
        }
        if (read_escape(&p, e, &cp) < 0)
            return RC_INVALID; /* cannot happen in a tokenized string */
        o += utf8_put(cp, o);
    }
    assert(o - o0 <= t->end - t->start);
    *out = (const char *)o0;
    *out_len = (size_t)(o - o0);
    buf_commit(scratch, *out_len);
    return RC_OK;
}
