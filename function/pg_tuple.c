/* pg_tuple.c - binary encoding for the Postgres sink: the big-endian values of
 * binary COPY tuples and binary query parameters, and the ledger's key and
 * slot of a message. */
#define _DEFAULT_SOURCE
#include "pg_int.h"

#include <string.h>

#include <openssl/evp.h>

/* The same, appended to b (for query parameters, off the hot path). */
void pg_put_u16(struct buf *b, uint16_t v)
{
    uint8_t be[2];
    w16(be, v);
    buf_append(b, be, sizeof be);
}

void pg_put_u32(struct buf *b, uint32_t v)
{
    uint8_t be[4];
    w32(be, v);
    buf_append(b, be, sizeof be);
}

void pg_put_u64(struct buf *b, uint64_t v)
{
    uint8_t be[8];
    w64(be, v);
    buf_append(b, be, sizeof be);
}

void pg_put_text(struct buf *b, const char *p, size_t n)
{
    pg_put_u32(b, p ? (uint32_t)n : UINT32_MAX);
    if (p)
        buf_append(b, p, n);
}

/* Room for n more bytes in b, at the returned address (then buf_commit), or
 * NULL with *rc set; the error is not left sticky, so the tuples appended
 * before stay valid and usable. */
uint8_t *pg_room(struct buf *b, size_t n, rc_t *rc)
{
    if (buf_reserve(b, n) != RC_OK) {
        *rc = b->err;
        buf_truncate(b, b->len);
        return NULL;
    }
    return (uint8_t *)b->data + b->len;
}

/* The value of a lowercase hexadecimal digit; sets *bad for any other byte.
 * Branch-free: a key's 32 digits cost less than its tuple's copy. */
static inline unsigned hex_nibble(unsigned char c, unsigned *bad)
{
    unsigned d = (unsigned)c - '0', l = (unsigned)c - 'a';
    *bad |= (unsigned)(d >= 10) & (unsigned)(l >= 6);
    return d < 10 ? d : l + 10;
}

/* The ledger's message_id for an SQS message id, into key.  An id that is a
 * lowercase canonical UUID (SQS's form: 36 characters, hyphens at 8, 13,
 * 18, 23) is that UUID, unless its version nibble is 0, which the ledger
 * reserves for its markers (MARKER_V1, MARKER_V2).  Any other id (upper
 * case, not a UUID at all) becomes the first 16 bytes of its SHA-256 with
 * the version nibble set to 8 and the RFC 4122 variant bits: deterministic,
 * so its redeliveries meet its entry, and never parsed case-insensitively,
 * so ids that differ in case stay different ids.  Two different ids meet
 * only if 122 hash bits collide (or a hashed id equals a real version-8
 * UUID): at a billion entries the odds are about 2^-69.  Returns RC_OK or
 * RC_NOMEM (the digest could not be computed). */
rc_t pg_ledger_key(const char *id, size_t len, uint8_t key[16])
{
    /* Where each byte's two digits start in the canonical form. */
    static const uint8_t at[16] = {0, 2, 4, 6, 9, 11, 14, 16, 19, 21, 24, 26, 28, 30, 32, 34};
    unsigned char digest[EVP_MAX_MD_SIZE];

    if (len == 36 && id[8] == '-' && id[13] == '-' && id[18] == '-' && id[23] == '-' &&
        id[14] != '0') {
        const unsigned char *u = (const unsigned char *)id;
        unsigned bad = 0;
        for (size_t i = 0; i < 16; i++)
            key[i] = (uint8_t)(hex_nibble(u[at[i]], &bad) << 4 | hex_nibble(u[at[i] + 1], &bad));
        if (!bad)
            return RC_OK;
    }
    if (EVP_Digest(id, len, digest, NULL, EVP_sha256(), NULL) != 1)
        return RC_NOMEM;
    memcpy(key, digest, 16);
    key[6] = (uint8_t)((key[6] & 0x0f) | 0x80);
    key[8] = (uint8_t)((key[8] & 0x3f) | 0x80);
    return RC_OK;
}

/* The ledger slot of a message sent at sent_ms (ms since the Unix epoch; -1
 * when it has none): its UTC day modulo LEDGER_SLOTS, or SLOT_NONE. */
int pg_ledger_slot(int64_t sent_ms)
{
    if (sent_ms < 0)
        return SLOT_NONE;
    return (int)((sent_ms / DAY_MS) % LEDGER_SLOTS);
}

/* Starts a binary one-dimensional array of `count` elements of type `oid`,
 * without NULLs, as a query parameter; the elements follow. */
void pg_put_array_header(struct buf *b, uint32_t oid, size_t count)
{
    pg_put_u32(b, 1); /* dimensions */
    pg_put_u32(b, 0); /* no NULLs */
    pg_put_u32(b, oid);
    pg_put_u32(b, (uint32_t)count);
    pg_put_u32(b, 1); /* lower bound */
}
