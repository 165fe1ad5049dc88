/* pg_tuple.c - binary encoding for the Postgres sink: the COPY tuples of the
 * ledger and of user_logins, the ledger's key and slot of a message, and
 * the big-endian values of binary query parameters.  Pure functions: no
 * connection, no state (tests/unit/test_pg_tuple.c checks them byte for
 * byte). */
#define _DEFAULT_SOURCE
#include "pg_int.h"

#include <assert.h>
#include <string.h>

#include <openssl/evp.h>

#define POSTGRES_EPOCH_DAYS 10957 /* 2000-01-01 minus 1970-01-01 */
#define POSTGRES_EPOCH_MS (POSTGRES_EPOCH_DAYS * DAY_MS)

/* Big-endian stores at o, as binary COPY and binary parameters want; each
 * returns the byte after what it wrote.  A tuple is written with these into
 * room reserved once: a buf_append per field cost more than the fields. */
static inline uint8_t *w16(uint8_t *o, uint16_t v)
{
    o[0] = (uint8_t)(v >> 8);
    o[1] = (uint8_t)v;
    return o + 2;
}

static inline uint8_t *w32(uint8_t *o, uint32_t v)
{
    o[0] = (uint8_t)(v >> 24);
    o[1] = (uint8_t)(v >> 16);
    o[2] = (uint8_t)(v >> 8);
    o[3] = (uint8_t)v;
    return o + 4;
}

static inline uint8_t *w64(uint8_t *o, uint64_t v)
{
    return w32(w32(o, (uint32_t)(v >> 32)), (uint32_t)v);
}

/* A text field of a binary COPY tuple: its length, then its bytes; NULL is
 * the length -1 and no bytes.  field_size says how much room it takes. */
static inline uint8_t *wtext(uint8_t *o, const char *p, size_t n)
{
    if (!p)
        return w32(o, UINT32_MAX);
    o = w32(o, (uint32_t)n);
    if (n)
        memcpy(o, p, n);
    return o + n;
}

static inline size_t field_size(const char *p, size_t n)
{
    return 4 + (p ? n : 0);
}

/* Room for n more bytes in b, at the returned address (then buf_commit), or
 * NULL with *rc set; the error is not left sticky, so the tuples appended
 * before stay valid and usable. */
static uint8_t *room(struct buf *b, size_t n, rc_t *rc)
{
    if (buf_reserve(b, n) != RC_OK) {
        *rc = b->err;
        buf_truncate(b, b->len);
        return NULL;
    }
    return (uint8_t *)b->data + b->len;
}

/* See pg_int.h: (slot smallint, sent_at timestamptz, message_id uuid). */
rc_t pg_tuple_key(struct buf *b, int slot, int64_t sent_at, const uint8_t key[16])
{
    rc_t rc = RC_OK;
    uint8_t *o = room(b, PG_KEY_TUPLE_SIZE, &rc), *o0 = o;

    if (!o)
        return rc;
    o = w16(o, 3); /* fields */
    o = w16(w32(o, 2), (uint16_t)slot);
    o = w64(w32(o, 8), (uint64_t)sent_at);
    o = w32(o, 16);
    memcpy(o, key, 16);
    buf_commit(b, (size_t)(o + 16 - o0));
    return RC_OK;
}

/* See pg_int.h: user_logins (user_id, device_type, masked_ip,
 * masked_device_id, locale, app_version, create_date). */
rc_t pg_tuple_row(struct buf *b, const struct pg_row *row)
{
    rc_t rc = RC_OK;
    size_t size = 2 + field_size(row->user_id, row->user_id_len) +
                  field_size(row->device_type, row->device_type_len) +
                  field_size(row->masked_ip, row->masked_ip_len) +
                  field_size(row->masked_device_id, row->masked_device_id_len) +
                  field_size(row->locale, row->locale_len) + (row->has_app_version ? 8 : 4) + 8;
    uint8_t *o = room(b, size, &rc), *o0 = o;

    if (!o)
        return rc;
    o = w16(o, 7); /* fields */
    o = wtext(o, row->user_id, row->user_id_len);
    o = wtext(o, row->device_type, row->device_type_len);
    o = wtext(o, row->masked_ip, row->masked_ip_len);
    o = wtext(o, row->masked_device_id, row->masked_device_id_len);
    o = wtext(o, row->locale, row->locale_len);
    o = row->has_app_version ? w32(w32(o, 4), (uint32_t)row->app_version) : w32(o, UINT32_MAX);
    o = w32(w32(o, 4), (uint32_t)(row->create_date - POSTGRES_EPOCH_DAYS));
    assert((size_t)(o - o0) == size);
    buf_commit(b, size);
    return RC_OK;
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
 * when it has none): its UTC day modulo LEDGER_SLOTS, or SLOT_NONE.  Cannot
 * fail. */
int pg_ledger_slot(int64_t sent_ms)
{
    if (sent_ms < 0)
        return SLOT_NONE;
    return (int)((sent_ms / DAY_MS) % LEDGER_SLOTS);
}

/* SentTimestamp as the ledger's sent_at: binary timestamptz is microseconds
 * since 2000-01-01; a message without one gets -infinity, a value no
 * SentTimestamp has, so that its receives still meet each other.  Cannot
 * fail. */
int64_t pg_sent_at(int64_t sent_ms)
{
    return sent_ms < 0 ? INT64_MIN : (sent_ms - POSTGRES_EPOCH_MS) * 1000;
}

/* The same big-endian values appended to b, for query parameters (off the
 * hot path); b's sticky error says whether they all went in. */
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

/* A text element of a binary array: its length, then its bytes; a NULL p is
 * SQL NULL (the length -1). */
void pg_put_text(struct buf *b, const char *p, size_t n)
{
    pg_put_u32(b, p ? (uint32_t)n : UINT32_MAX);
    if (p)
        buf_append(b, p, n);
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
