/* json.h - a strict, zero-copy JSON tokenizer (RFC 8259) for the SQS event
 * and the message bodies inside it.
 *
 * Why not cJSON here: cJSON stores strings NUL-terminated (a "\u0000" in a
 * body silently truncates it), does not check UTF-8, and accepts control
 * characters; a whole event would fail for one bad body.  This tokenizer is
 * strict about structure, but judges string *content* per string: a string
 * with invalid UTF-8, a lone surrogate or a U+0000 is still tokenized and
 * carries a flag, so the caller can reject that one record.
 *
 * The document is a flat array of tokens in text order.  An object's tokens
 * are key, value, key, value...; `next` skips a value with all its children. */
#ifndef JSON_H
#define JSON_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "buf.h"
#include "result.h"

enum json_type {
    JSON_NULL,
    JSON_FALSE,
    JSON_TRUE,
    JSON_NUMBER,
    JSON_STRING,
    JSON_ARRAY,
    JSON_OBJECT
};

/* String flags. */
#define JSON_ESCAPED 0x1  /* contains escapes: json_string must decode it */
#define JSON_BAD_UTF8 0x2 /* invalid UTF-8 bytes, or an escaped lone surrogate */
#define JSON_HAS_NUL 0x4  /* contains U+0000, raw or as \u0000 */

struct json_tok {
    uint8_t type;   /* enum json_type */
    uint8_t flags;  /* strings: JSON_* flags above */
    uint32_t start; /* byte offset of the value; for strings, just inside the opening quote */
    uint32_t end;   /* byte offset just past the value; for strings, at the closing quote */
    uint32_t next;  /* index of the first token after this value and its children */
    uint32_t count; /* arrays: elements; objects: members (key/value pairs) */
};

struct json_doc {
    const char *text;     /* borrowed: the parsed text, must outlive the document */
    size_t len;           /* bytes of text */
    struct json_tok *tok; /* owned: tokens in text order; tok[0] is the root */
    uint32_t ntok;        /* tokens in use */
    uint32_t cap;         /* tokens allocated; kept across json_parse calls */
    unsigned flags;       /* OR of every string's flags (keys included), so a caller
                             can reject a whole document without walking its tokens */
};

/* Initialises an empty document; allocates nothing; cannot fail. */
void json_init(struct json_doc *doc);

/* Tokenizes text[0..len) (no NUL terminator needed; bytes beyond len are never
 * read).  Nesting deeper than 64 levels is refused.  Whitespace may surround
 * the single root value.  Reuses doc's token array.  Returns RC_OK,
 * RC_INVALID (malformed JSON; err says where, as an offset, never quoting the
 * text), RC_TOOBIG (len over 2^31) or RC_NOMEM. */
rc_t json_parse(struct json_doc *doc, const char *text, size_t len, char err[ERR_LEN]);

struct json_name;

/* Called by json_parse_stream with each element of the watched array as
 * soon as the element is complete (its tokens, and those before it, are in
 * doc; doc->ntok counts them; nothing after them is parsed yet).  `array`
 * is the array's token, `elem` the element's.  Returns JSON_ELEM_NEXT to go
 * on, JSON_ELEM_FORGET to go on without the element's tokens (they are
 * reused for what follows: the caller took what it needed, and the
 * finished document then has the array's count and bounds, but no tokens
 * for its elements), or JSON_ELEM_STOP to be called no more (the parse goes
 * on either way). */
enum { JSON_ELEM_NEXT = 0, JSON_ELEM_STOP = 1, JSON_ELEM_FORGET = 2 };
typedef int (*json_elem_fn)(void *ctx, const struct json_doc *doc, uint32_t array, uint32_t elem);

/* json_parse, handing the elements of one array to fn while the rest of
 * the text is still to be tokenized: the array that is the value of the
 * root object's first member named `member` (compared after decoding
 * escapes), when that value is an array.  The document's acceptance is
 * json_parse's: an element was handed out before the text proved
 * malformed, or a later member of the same name would win for json_get;
 * the caller checks the result.  A NULL member or fn watches nothing. */
rc_t json_parse_stream(struct json_doc *doc, const char *text, size_t len,
                       const struct json_name *member, json_elem_fn fn, void *ctx,
                       char err[ERR_LEN]);

/* Frees the token array; cannot fail. */
void json_free(struct json_doc *doc);

/* Returns the index of the value of member `key` (compared exactly, after
 * decoding escapes in the member name) of the object at token `obj`, or -1
 * when absent or when obj is not an object.  With duplicate keys, the last wins,
 * as in most JSON parsers (cJSON takes the first; ours is documented). */
long json_get(const struct json_doc *doc, uint32_t obj, const char *key);

/* A member name to look for, with its length in bytes. */
struct json_name {
    const char *s;
    size_t n;
};

#define JSON_MEMBERS_MAX 32 /* names one json_names set holds, at most */

/* The member names a caller looks for, prepared once by json_names_init
 * (a table by name length, so that a member name is compared with one
 * candidate as a rule) and then used for any number of objects. */
struct json_names {
    const struct json_name *names; /* borrowed: must outlive the set */
    size_t count;
    uint8_t first[16];               /* by length % 16: the first name of that length, or 0xff */
    uint8_t chain[JSON_MEMBERS_MAX]; /* the next name of the same length % 16, or 0xff */
};

/* Prepares a set of count (at most JSON_MEMBERS_MAX) names; cannot fail. */
void json_names_init(struct json_names *set, const struct json_name *names, size_t count);

/* Returns 1 when string token `i` decodes to exactly s[0..n) (escapes
 * decoded, case-sensitive), else 0 (also when i is not a string token); no
 * scratch needed, cannot fail.  For callers that walk an object's members
 * once instead of calling json_get per key. */
int json_streq(const struct json_doc *doc, uint32_t i, const char *s, size_t n);

/* Returns 1 when a[0..n) == b[0..n), else 0; cannot fail.  For member
 * names (a few to a few dozen bytes): word loads that overlap at the end
 * instead of a call to memcmp, whose length json_members cannot know. */
static inline int json_short_eq(const char *a, const char *b, size_t n)
{
    uint64_t x, y;
    uint32_t u, v;

    if (n >= 8) {
        for (size_t i = 0; i + 8 < n; i += 8) {
            memcpy(&x, a + i, 8);
            memcpy(&y, b + i, 8);
            if (x != y)
                return 0;
        }
        memcpy(&x, a + n - 8, 8);
        memcpy(&y, b + n - 8, 8);
        return x == y;
    }
    if (n >= 4) {
        memcpy(&u, a, 4);
        memcpy(&v, b, 4);
        if (u != v)
            return 0;
        memcpy(&u, a + n - 4, 4);
        memcpy(&v, b + n - 4, 4);
        return u == v;
    }
    for (size_t i = 0; i < n; i++)
        if (a[i] != b[i])
            return 0;
    return 1;
}

/* One pass over the members of the object at token `obj`: idx[k] becomes
 * the index of the value of the last member named set->names[k] (compared
 * exactly, after decoding escapes; the last duplicate wins, as with
 * json_get), or -1 when there is none or obj is not an object.  An unescaped
 * member name (every real producer's) costs a table lookup by its length and
 * one comparison; escaped ones (rare) are decoded against every name.
 * Inline: it runs once for every record and every body.  Cannot fail. */
static inline void json_members(const struct json_doc *doc, uint32_t obj,
                                const struct json_names *set, long *idx)
{
    const struct json_name *names = set->names;

    for (size_t k = 0; k < set->count; k++)
        idx[k] = -1;
    if (obj >= doc->ntok || doc->tok[obj].type != JSON_OBJECT)
        return;
    uint32_t key = obj + 1;
    for (uint32_t m = 0; m < doc->tok[obj].count; m++) {
        const struct json_tok *t = &doc->tok[key];
        const char *s = doc->text + t->start;
        size_t len = t->end - t->start;
        unsigned k;
        if (!(t->flags & JSON_ESCAPED)) {
            for (k = set->first[len & 15]; k != 0xff; k = set->chain[k])
                if (names[k].n == len && json_short_eq(s, names[k].s, len))
                    break;
        } else {
            for (k = 0; k < set->count && !json_streq(doc, key, names[k].s, names[k].n); k++)
                ;
            k = k < set->count ? k : 0xff;
        }
        if (k != 0xff)
            idx[k] = (long)key + 1;
        key = doc->tok[key + 1].next;
    }
}

/* Gives the decoded bytes of the string token `i`: a pointer into the text
 * when it has no escapes, else into `scratch`, which the decoded bytes are
 * appended to.  Decoding never makes a string longer, so a caller that
 * reserves doc->len bytes of scratch once gets pointers that stay valid until
 * scratch is reset.  A lone surrogate decodes as U+FFFD.  Output is not
 * NUL-terminated in general; use out_len.
 * Returns RC_OK, RC_INVALID (not a string) or the scratch buffer's error. */
rc_t json_string(const struct json_doc *doc, uint32_t i, struct buf *scratch, const char **out,
                 size_t *out_len);

#endif
