/* buf.h - the one growable byte buffer: hard size cap, overflow-checked
 * doubling, and a sticky error so a long chain of appends is checked once. */
#ifndef BUF_H
#define BUF_H

#include <stdarg.h>
#include <stddef.h>

#include "result.h"

/* Lambda's synchronous invocation payload limit (request and response). */
#define BUF_PAYLOAD_MAX ((size_t)6 * 1024 * 1024)

struct buf {
    char *data; /* owned; NUL-terminated after len whenever data != NULL */
    size_t len; /* bytes in use, not counting the terminating NUL */
    size_t cap; /* bytes allocated, including room for the NUL */
    size_t max; /* hard cap on len; an append beyond it fails with RC_TOOBIG */
    rc_t err;   /* first failure of any append; once set, appends do nothing */
};

/* Initialises an empty buffer that may grow to `max` bytes; allocates nothing. */
void buf_init(struct buf *b, size_t max);

/* Makes b an empty buffer over the caller's mem[0..size) (size >= 1), which
 * it never reallocates: it holds at most size - 1 bytes and its NUL, and an
 * append beyond that fails with RC_TOOBIG.  For lines built on the stack,
 * where running out of memory must not stop them.  Never buf_free or
 * buf_wipe it (mem is not b's); cannot fail. */
void buf_wrap(struct buf *b, char *mem, size_t size);

/* Appends n bytes.  Returns the sticky error (RC_NOMEM, RC_TOOBIG) or RC_OK. */
rc_t buf_append(struct buf *b, const void *p, size_t n);
rc_t buf_appends(struct buf *b, const char *s);
rc_t buf_appendc(struct buf *b, char c);
/* Appends printf-formatted text (bounded by vsnprintf, never sprintf). */
rc_t buf_printf(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Appends a JSON string literal (quotes included) for n bytes of text;
 * control characters are \u-escaped, and every byte that does not begin a
 * well-formed UTF-8 sequence becomes \ufffd, so that the literal is valid
 * UTF-8 JSON whatever the bytes (a log line must stay one). */
rc_t buf_append_json(struct buf *b, const char *s, size_t n);

/* Ensures room for `extra` more bytes without further allocation. */
rc_t buf_reserve(struct buf *b, size_t extra);
/* Marks n bytes that the caller wrote at data + len, into room that
 * buf_reserve made, as appended, and NUL-terminates them (n <= the room
 * reserved); cannot fail.  Inline: decoders call it once per value. */
static inline void buf_commit(struct buf *b, size_t n)
{
    b->len += n;
    b->data[b->len] = '\0';
}
/* Cuts the buffer back to its first len bytes (len <= its length) and clears
 * its error: undoes the appends since len was its length.  Cannot fail. */
void buf_truncate(struct buf *b, size_t len);
/* Drops the first n bytes (n <= len), keeping the rest; cannot fail. */
void buf_consume(struct buf *b, size_t n);
/* Empties the buffer and clears its error, keeping the allocation; cannot fail. */
void buf_reset(struct buf *b);
/* Releases the memory; the buffer can be reused after buf_init. */
void buf_free(struct buf *b);
/* Overwrites the whole allocation with zeros (for secrets) and frees it. */
void buf_wipe(struct buf *b);

#endif
