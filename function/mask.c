/* mask.c - docs/behaviour.md, "Masking" on top of siv.c: key parsing, padding,
 * base64url without padding, and the KEY_ID prefix.  Values are sealed and
 * opened with siv.c's AES-SIV over AES-ECB (siv_ecb_*), checked once per key
 * against OpenSSL's own AES-256-SIV. */
#include "mask.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "buf.h"

#include "num.h"
#include "siv.h"

#define MASK_BLOCK 16                              /* pad() rounds up to this */
#define MASK_PAD_MAX (MASK_INPUT_MAX + MASK_BLOCK) /* pad() of the longest input */
#define MASK_RAW_MAX (SIV_IV_BYTES + MASK_PAD_MAX) /* IV and ciphertext, decoded */
#define MASK_CIPHER "AES-256-SIV"

struct mask_key {
    struct siv_ecb_key *siv;      /* keyed once, used for every value */
    char id[MASK_KEY_ID_MAX + 1]; /* NUL-terminated key id */
    size_t id_len;                /* 1 to MASK_KEY_ID_MAX */
};

static const char mask_b64_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/* See mask.h; cannot fail. */
const char *mask_key_id_setting(const char *env_value)
{
    return env_value ? env_value : MASK_KEY_ID_DEFAULT;
}

/* See mask.h: 1 to MASK_KEY_ID_MAX of [A-Za-z0-9]; cannot fail. */
int mask_key_id_valid_len(const char *s, size_t n)
{
    if (n == 0 || n > MASK_KEY_ID_MAX)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9')))
            return 0;
    }
    return 1;
}

/* See mask.h: at most MASK_KEY_ID_MAX + 1 bytes are read. */
int mask_key_id_valid(const char *id)
{
    return id != NULL && mask_key_id_valid_len(id, strnlen(id, MASK_KEY_ID_MAX + 1));
}

/* Returns the length of the padded form of an n-byte value: the next multiple
 * of MASK_BLOCK above n (at least one byte is always added); cannot fail. */
static size_t mask_padded_len(size_t n)
{
    return (n / MASK_BLOCK + 1) * MASK_BLOCK;
}

/* Returns the length of base64url without padding for n bytes; cannot fail. */
static size_t mask_b64_len(size_t n)
{
    return (n * 4 + 2) / 3;
}

/* Decodes 128 hex characters into key.  Returns RC_OK, or RC_CONFIG with err
 * filled; the message gives the length but never a character of the key, and
 * the temporary that held key bytes is wiped. */
static rc_t mask_key_decode(const char *hex, size_t hex_len, unsigned char key[MASK_KEY_BYTES],
                            char err[ERR_LEN])
{
    uint64_t v = 0;
    rc_t rc = RC_CONFIG;

    if (!hex || hex_len != 2 * MASK_KEY_BYTES) {
        snprintf(err, ERR_LEN, "the masking key must be %d hexadecimal characters, got %zu",
                 2 * MASK_KEY_BYTES, hex ? hex_len : (size_t)0);
        goto out;
    }
    for (size_t i = 0; i < MASK_KEY_BYTES; i++) {
        if (num_parse_hex(hex + 2 * i, 2, 0xff, &v) != RC_OK) {
            snprintf(err, ERR_LEN,
                     "the masking key must be %d hexadecimal characters: it holds a character "
                     "outside [0-9a-fA-F]",
                     2 * MASK_KEY_BYTES);
            goto out;
        }
        key[i] = (unsigned char)v;
    }
    rc = RC_OK;
out:
    OPENSSL_cleanse(&v, sizeof v);
    return rc;
}

/* Checks siv.c's AES-SIV over AES-ECB against OpenSSL's own AES-256-SIV under
 * this key, on a one-block and a three-block value, sealing and opening,
 * before anything is masked with it: a build where the two disagree (another
 * compiler, OpenSSL or CPU) must not write masked values that match nothing
 * masked before and that nobody could recover.  Costs a few microseconds once
 * per key.  Returns RC_OK, or another code with err filled. */
static rc_t mask_self_check(const struct siv_ecb_key *fast, const unsigned char key[MASK_KEY_BYTES],
                            char err[ERR_LEN])
{
    unsigned char pt[3 * MASK_BLOCK], want[SIV_IV_BYTES + sizeof pt];
    unsigned char got[SIV_IV_BYTES + sizeof pt], back[sizeof pt];
    struct siv_key *ref = siv_key_new(MASK_CIPHER, key, MASK_KEY_BYTES, err);
    rc_t rc = RC_CRYPTO;

    if (!ref)
        goto out;
    for (size_t i = 0; i < sizeof pt; i++)
        pt[i] = (unsigned char)(i * 37 + 11);
    for (size_t n = MASK_BLOCK; n <= sizeof pt; n += 2 * MASK_BLOCK) {
        if ((rc = siv_encrypt(ref, NULL, 0, pt, n, want)) != RC_OK ||
            (rc = siv_ecb_encrypt(fast, NULL, 0, pt, n, got)) != RC_OK) {
            snprintf(err, ERR_LEN, "cannot check AES-SIV: %s", rc_strerror(rc));
            goto out;
        }
        rc = siv_ecb_decrypt(fast, NULL, 0, want, SIV_IV_BYTES + n, back);
        if (memcmp(got, want, SIV_IV_BYTES + n) != 0 || rc != RC_OK || memcmp(back, pt, n) != 0) {
            rc = RC_CRYPTO;
            snprintf(err, ERR_LEN, "AES-SIV over AES-ECB disagrees with OpenSSL's %s", MASK_CIPHER);
            goto out;
        }
    }
    rc = RC_OK;
out:
    siv_key_free(ref);
    return rc;
}

/* See mask.h.  Validates the id before touching the key, decodes the hex into
 * a stack buffer that is wiped on every path, keys the AES contexts once and
 * checks them against OpenSSL's AES-256-SIV. */
struct mask_key *mask_key_new(const char *hex, size_t hex_len, const char *key_id,
                              char err[ERR_LEN])
{
    unsigned char key[MASK_KEY_BYTES];
    struct mask_key *k = NULL;
    size_t id_len = key_id ? strnlen(key_id, MASK_KEY_ID_MAX + 1) : 0;

    if (!mask_key_id_valid(key_id)) {
        /* The id is not quoted: a key pasted into the wrong variable would
         * otherwise end up in the logs. */
        snprintf(err, ERR_LEN, "the masking key id must be 1 to %d characters of [A-Za-z0-9]",
                 MASK_KEY_ID_MAX);
        goto out;
    }
    if (mask_key_decode(hex, hex_len, key, err) != RC_OK)
        goto out;
    k = calloc(1, sizeof *k);
    if (!k) {
        snprintf(err, ERR_LEN, "out of memory");
        goto out;
    }
    memcpy(k->id, key_id, id_len);
    k->id_len = id_len;
    k->siv = siv_ecb_key_new(key, sizeof key, err);
    if (!k->siv || mask_self_check(k->siv, key, err) != RC_OK) {
        mask_key_free(k);
        k = NULL;
    }
out:
    OPENSSL_cleanse(key, sizeof key);
    return k;
}

/* See mask.h; siv_ecb_key_free wipes the subkeys (OpenSSL the key schedules),
 * this wipes the rest. */
void mask_key_free(struct mask_key *k)
{
    if (!k)
        return;
    siv_ecb_key_free(k->siv);
    OPENSSL_cleanse(k, sizeof *k);
    free(k);
}

/* See mask.h; cannot fail. */
const char *mask_key_id(const struct mask_key *k)
{
    return k->id;
}

/* See mask.h: the id, ':', and base64url of the IV plus pad(n); cannot fail. */
size_t mask_output_len(const struct mask_key *k, size_t n)
{
    return k->id_len + 1 + mask_b64_len(SIV_IV_BYTES + mask_padded_len(n));
}

/* Writes base64url of in[0..n), without '=' padding, to out (room for
 * mask_b64_len(n) bytes; no NUL).  Returns the length written; cannot fail. */
static size_t mask_b64_encode(const unsigned char *in, size_t n, char *out)
{
    size_t i = 0, o = 0;

    for (; i + 3 <= n; i += 3) {
        uint32_t w = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
        out[o++] = mask_b64_alphabet[w >> 18 & 63];
        out[o++] = mask_b64_alphabet[w >> 12 & 63];
        out[o++] = mask_b64_alphabet[w >> 6 & 63];
        out[o++] = mask_b64_alphabet[w & 63];
    }
    if (n - i == 1) {
        uint32_t w = (uint32_t)in[i] << 16;
        out[o++] = mask_b64_alphabet[w >> 18 & 63];
        out[o++] = mask_b64_alphabet[w >> 12 & 63];
    } else if (n - i == 2) {
        uint32_t w = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8;
        out[o++] = mask_b64_alphabet[w >> 18 & 63];
        out[o++] = mask_b64_alphabet[w >> 12 & 63];
        out[o++] = mask_b64_alphabet[w >> 6 & 63];
    }
    return o;
}

/* Returns the 6-bit value of a base64url character, or -1 for any other byte
 * (including '=', '+' and '/'). */
static int mask_b64_digit(char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '-')
        return 62;
    if (c == '_')
        return 63;
    return -1;
}

/* Decodes unpadded base64url in[0..n) into out (cap bytes).  Strict: only the
 * alphabet, no '=', no impossible length (n % 4 == 1), and the unused low
 * bits of the last character must be zero, so every byte string has exactly
 * one accepted encoding.  Reads only in[0..n).  Returns RC_OK with *out_len
 * set, or RC_INVALID (also when the result would not fit in cap). */
static rc_t mask_b64_decode(const char *in, size_t n, unsigned char *out, size_t cap,
                            size_t *out_len)
{
    uint32_t acc = 0;
    unsigned bits = 0;
    size_t o = 0;
    rc_t rc = RC_INVALID;

    if (n % 4 == 1 || n / 4 * 3 + (n % 4 ? n % 4 - 1 : 0) > cap)
        goto out;
    for (size_t i = 0; i < n; i++) {
        int d = mask_b64_digit(in[i]);
        if (d < 0)
            goto out;
        acc = (acc << 6 | (uint32_t)d) & 0xffffff;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (unsigned char)(acc >> bits);
        }
    }
    if (acc & ((1u << bits) - 1)) /* non-zero leftover bits: not canonical */
        goto out;
    *out_len = o;
    rc = RC_OK;
out:
    return rc;
}

/* Pads v[0..n) into pt (ISO/IEC 7816-4: 0x80, then zeros to a whole block);
 * returns the padded length.  pt holds mask_padded_len(n) bytes.  Cannot fail. */
static size_t mask_pad(const char *v, size_t n, unsigned char *pt)
{
    size_t padded = mask_padded_len(n);
    /* The zeros of the pad all fall in the last block: clearing that whole
     * block first is one fixed-size store instead of a memset of 0 to 15. */
    memset(pt + padded - MASK_BLOCK, 0, MASK_BLOCK);
    if (n)
        memcpy(pt, v, n);
    pt[n] = 0x80;
    return padded;
}

/* Writes "KEY_ID:" and the base64url of the sealed raw[0..raw_len) to out
 * (room for mask_output_len); returns the characters written, no NUL.
 * Cannot fail. */
static size_t mask_encode(const struct mask_key *k, const unsigned char *raw, size_t raw_len,
                          char *out)
{
    size_t o = k->id_len;
    memcpy(out, k->id, k->id_len);
    out[o++] = ':';
    return o + mask_b64_encode(raw, raw_len, out + o);
}

/* The length of the value in an authenticated plaintext pt[0..body), or
 * (size_t)-1 when its padding is not the one mask_pad writes (something else
 * was sealed under this key).  Cannot fail. */
static size_t mask_unpad(const unsigned char *pt, size_t body)
{
    size_t len = body;
    while (len > 0 && pt[len - 1] == 0x00)
        len--;
    if (len == 0 || pt[len - 1] != 0x80 || mask_padded_len(len - 1) != body)
        return (size_t)-1;
    return len - 1;
}

/* See mask.h.  The padded copy of the value on the stack is wiped. */
rc_t mask_value(const struct mask_key *k, const char *v, size_t n, char *out, size_t *out_len)
{
    unsigned char pt[MASK_PAD_MAX];
    unsigned char raw[MASK_RAW_MAX];
    size_t padded = 0, o;
    rc_t rc = RC_TOOBIG;

    if (n > MASK_INPUT_MAX)
        goto out;
    padded = mask_pad(v, n, pt);
    rc = siv_ecb_encrypt(k->siv, NULL, 0, pt, padded, raw);
    if (rc)
        goto out;
    o = mask_encode(k, raw, SIV_IV_BYTES + padded, out);
    out[o] = '\0';
    *out_len = o;
out:
    OPENSSL_cleanse(pt, padded);
    return rc;
}

/* See mask.h.  Checks, in order: length, key id prefix, strict base64url,
 * decoded length, authentication, then padding (only authenticated bytes are
 * ever unpadded).  The decrypted copy on the stack is wiped. */
rc_t mask_unmask(const struct mask_key *k, const char *masked, size_t n, char *out, size_t cap,
                 size_t *out_len, char err[ERR_LEN])
{
    unsigned char raw[MASK_RAW_MAX];
    unsigned char pt[MASK_PAD_MAX];
    size_t raw_len = 0, body = 0, len = 0, id_len;
    const char *colon;
    rc_t rc = RC_INVALID;

    if (n > mask_output_len(k, MASK_INPUT_MAX)) {
        snprintf(err, ERR_LEN, "not a masked value: %zu characters, at most %zu", n,
                 mask_output_len(k, MASK_INPUT_MAX));
        goto out;
    }
    colon = n ? memchr(masked, ':', n) : NULL;
    if (!colon) {
        snprintf(err, ERR_LEN, "not a masked value: no \"KEY_ID:\" prefix");
        goto out;
    }
    id_len = (size_t)(colon - masked);
    if (id_len != k->id_len || memcmp(masked, k->id, id_len) != 0) {
        if (mask_key_id_valid_len(masked, id_len))
            snprintf(err, ERR_LEN,
                     "the value was masked with key id \"%.*s\", the key given is \"%s\"",
                     (int)id_len, masked, k->id);
        else
            snprintf(err, ERR_LEN, "not a masked value: the prefix is not a key id");
        goto out;
    }
    if (mask_b64_decode(colon + 1, n - id_len - 1, raw, sizeof raw, &raw_len) != RC_OK) {
        snprintf(err, ERR_LEN, "not a masked value: not canonical base64url without padding");
        goto out;
    }
    if (raw_len < SIV_IV_BYTES + MASK_BLOCK || (raw_len - SIV_IV_BYTES) % MASK_BLOCK != 0) {
        snprintf(err, ERR_LEN, "not a masked value: %zu bytes once decoded", raw_len);
        goto out;
    }
    body = raw_len - SIV_IV_BYTES;
    rc = siv_ecb_decrypt(k->siv, NULL, 0, raw, raw_len, pt);
    if (rc == RC_CRYPTO) {
        snprintf(err, ERR_LEN,
                 "the value does not authenticate: it was altered, or masked with "
                 "another key under the same key id");
        goto out;
    } else if (rc) {
        snprintf(err, ERR_LEN, "cannot decrypt: %s", rc_strerror(rc));
        goto out;
    }
    /* Authenticated, so this is our own encryption; a padding that does not
     * match pad() means something else was sealed under this key. */
    rc = RC_INVALID;
    if ((len = mask_unpad(pt, body)) == (size_t)-1) {
        snprintf(err, ERR_LEN, "the value authenticates but its padding is wrong");
        goto out;
    }
    if (len > MASK_INPUT_MAX) {
        snprintf(err, ERR_LEN, "the value is %zu bytes long, at most %d", len, MASK_INPUT_MAX);
        goto out;
    }
    if (len >= cap) {
        rc = RC_TOOBIG;
        snprintf(err, ERR_LEN, "the value (%zu bytes) does not fit the output buffer", len);
        goto out;
    }
    memcpy(out, pt, len);
    out[len] = '\0';
    *out_len = len;
    rc = RC_OK;
out:
    OPENSSL_cleanse(pt, body);
    return rc;
}

/* See mask.h.  The value is padded and sealed in heap copies (a body can be
 * hundreds of kilobytes), the plaintext one wiped before it is freed. */
rc_t mask_value_long(const struct mask_key *k, const char *v, size_t n, struct buf *out)
{
    size_t padded = mask_padded_len(n);
    unsigned char *pt = malloc(padded), *raw = malloc(SIV_IV_BYTES + padded);
    rc_t rc = RC_NOMEM;

    if (!pt || !raw)
        goto out;
    mask_pad(v, n, pt);
    if ((rc = siv_ecb_encrypt(k->siv, NULL, 0, pt, padded, raw)) != RC_OK)
        goto out;
    if ((rc = buf_reserve(out, mask_output_len(k, n))) != RC_OK)
        goto out;
    buf_commit(out, mask_encode(k, raw, SIV_IV_BYTES + padded, out->data + out->len));
out:
    if (pt)
        OPENSSL_cleanse(pt, padded);
    free(pt);
    free(raw);
    return rc;
}

/* See mask.h.  The same checks as mask_unmask, in the same order, over heap
 * copies; the decrypted one is wiped before it is freed. */
rc_t mask_unmask_long(const struct mask_key *k, const char *masked, size_t n, struct buf *out,
                      char err[ERR_LEN])
{
    const char *colon = n ? memchr(masked, ':', n) : NULL;
    size_t id_len = colon ? (size_t)(colon - masked) : 0, cap = n / 4 * 3 + 3;
    size_t raw_len = 0, body = 0, len;
    unsigned char *raw = malloc(cap), *pt = malloc(cap);
    rc_t rc = RC_NOMEM;

    if (!raw || !pt) {
        snprintf(err, ERR_LEN, "out of memory");
        goto out;
    }
    rc = RC_INVALID;
    if (!colon || id_len != k->id_len || memcmp(masked, k->id, id_len) != 0) {
        snprintf(err, ERR_LEN, "not a masked value of key id \"%s\"", k->id);
        goto out;
    }
    if (mask_b64_decode(colon + 1, n - id_len - 1, raw, cap, &raw_len) != RC_OK ||
        raw_len < SIV_IV_BYTES + MASK_BLOCK || (raw_len - SIV_IV_BYTES) % MASK_BLOCK != 0) {
        snprintf(err, ERR_LEN, "not a masked value: not canonical base64url of a sealed value");
        goto out;
    }
    body = raw_len - SIV_IV_BYTES;
    if ((rc = siv_ecb_decrypt(k->siv, NULL, 0, raw, raw_len, pt)) != RC_OK) {
        snprintf(err, ERR_LEN,
                 "the value does not authenticate: it was altered, or masked with "
                 "another key under the same key id");
        goto out;
    }
    rc = RC_INVALID;
    if ((len = mask_unpad(pt, body)) == (size_t)-1) {
        snprintf(err, ERR_LEN, "the value authenticates but its padding is wrong");
        goto out;
    }
    if ((rc = buf_append(out, pt, len)) != RC_OK)
        snprintf(err, ERR_LEN, "the value (%zu bytes) does not fit", len);
out:
    if (pt)
        OPENSSL_cleanse(pt, body);
    free(pt);
    free(raw);
    return rc;
}
