/* siv.c - AES-SIV two ways: OpenSSL's SIV mode, keyed once, one context copy
 * per call (the reference); and S2V and CTR computed here over AES-ECB
 * contexts keyed once (the fast path masking uses). */
#include "siv.h"

#include <assert.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>

struct siv_key {
    EVP_CIPHER_CTX *enc; /* keyed for encryption, never used directly: only copied */
    EVP_CIPHER_CTX *dec; /* keyed for decryption, likewise */
};

/* Fills err with "what: <OpenSSL's first queued reason>" and empties
 * OpenSSL's error queue, so a later, unrelated OpenSSL user (libpq's TLS)
 * does not find stale errors there.  Cannot fail. */
static void siv_openssl_err(char err[ERR_LEN], const char *what)
{
    char reason[160] = "no detail";
    unsigned long e = ERR_get_error();

    if (e != 0)
        ERR_error_string_n(e, reason, sizeof reason);
    snprintf(err, ERR_LEN, "%s: %s", what, reason);
    ERR_clear_error();
}

/* Fetches the cipher `name`.  OpenSSL 3.0 sets its default library context
 * up on first use; when that runs out of memory it goes on with a half-made
 * context and crashes on its NULL lock, so the context is asked for first
 * and the failure reported instead (tests/integration/test_faults.py fails
 * each allocation in turn).  Returns the cipher (the caller frees it with
 * EVP_CIPHER_free), or NULL with err filled (`missing` when OpenSSL lacks
 * the cipher). */
static EVP_CIPHER *siv_fetch(const char *name, const char *missing, char err[ERR_LEN])
{
    EVP_CIPHER *cipher = NULL;

    if (!OSSL_LIB_CTX_get0_global_default())
        snprintf(err, ERR_LEN, "out of memory: OpenSSL cannot initialise");
    else if (!(cipher = EVP_CIPHER_fetch(NULL, name, NULL)))
        siv_openssl_err(err, missing);
    return cipher;
}

/* Creates one context for `cipher` keyed with key, for encryption (`enc`
 * 1) or decryption (0); `ecb`: AES-ECB, padding off (whole blocks only).
 * Returns NULL with err filled on failure; the caller frees the context. */
static EVP_CIPHER_CTX *siv_keyed_ctx(const EVP_CIPHER *cipher, const unsigned char *key, int enc,
                                     int ecb, char err[ERR_LEN])
{
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();

    if (!ctx) {
        siv_openssl_err(err, "cannot allocate a cipher context");
        goto out;
    }
    if (!EVP_CipherInit_ex2(ctx, cipher, key, NULL, enc, NULL) ||
        (ecb && !EVP_CIPHER_CTX_set_padding(ctx, 0))) {
        siv_openssl_err(err, ecb ? "cannot key AES-ECB" : "cannot key the SIV cipher");
        EVP_CIPHER_CTX_free(ctx);
        ctx = NULL;
    }
out:
    return ctx;
}

/* Fetches the cipher `name` (`missing`: what err says when OpenSSL lacks
 * it), checks that it takes key_len-byte keys and creates the two contexts
 * a key holds, keyed with key1 and key2: *first for encryption, *second for
 * decryption, or (`ecb`) both AES-ECB for encryption, padding off (CMAC and
 * CTR only ever encrypt).  Returns 0, or -1 with err filled; the contexts
 * made are left in *first and *second (NULL those not made) for the caller
 * to free.  The fetched cipher is released here: the contexts hold their
 * own references to it. */
static int siv_ctx_pair(const char *name, const char *missing, size_t key_len,
                        const unsigned char *key1, const unsigned char *key2, int ecb,
                        EVP_CIPHER_CTX **first, EVP_CIPHER_CTX **second, char err[ERR_LEN])
{
    EVP_CIPHER *cipher = siv_fetch(name, missing, err);

    *first = *second = NULL;
    if (!cipher)
        goto out;
    if ((size_t)EVP_CIPHER_get_key_length(cipher) != key_len) {
        snprintf(err, ERR_LEN, "%s needs a %d-byte key, got %zu bytes", name,
                 EVP_CIPHER_get_key_length(cipher), key_len);
        goto out;
    }
    *first = siv_keyed_ctx(cipher, key1, 1, ecb, err);
    if (*first)
        *second = siv_keyed_ctx(cipher, key2, ecb, ecb, err); /* ECB: encrypts, too */
out:
    EVP_CIPHER_free(cipher);
    return *second ? 0 : -1;
}

/* Frees a key's two contexts (OpenSSL wipes their key schedules), then
 * wipes and frees the key itself, `size` bytes at k (not NULL). */
static void siv_free_key(void *k, size_t size, EVP_CIPHER_CTX *first, EVP_CIPHER_CTX *second)
{
    EVP_CIPHER_CTX_free(first);
    EVP_CIPHER_CTX_free(second);
    OPENSSL_cleanse(k, size);
    free(k);
}

/* See siv.h.  Keys an encryption and a decryption template (siv_ctx_pair). */
struct siv_key *siv_key_new(const char *cipher_name, const unsigned char *key, size_t key_len,
                            char err[ERR_LEN])
{
    struct siv_key *k = calloc(1, sizeof *k);

    if (!k) {
        snprintf(err, ERR_LEN, "out of memory");
    } else if (siv_ctx_pair(cipher_name, "OpenSSL does not provide the SIV cipher", key_len, key,
                            key, 0, &k->enc, &k->dec, err) != 0) {
        siv_key_free(k);
        k = NULL;
    }
    return k;
}

/* See siv.h; NULL is allowed. */
void siv_key_free(struct siv_key *k)
{
    if (k)
        siv_free_key(k, sizeof *k, k->enc, k->dec);
}

/* Feeds the associated-data components, in order, to a keyed context: with
 * OpenSSL's SIV each update with a NULL output is one S2V component.  Returns
 * RC_OK, RC_INVALID (a component over INT_MAX bytes) or RC_CRYPTO. */
static rc_t siv_feed_ad(EVP_CIPHER_CTX *ctx, const struct siv_ad *ad, size_t n_ad)
{
    static const unsigned char empty[1];
    int len = 0;

    for (size_t i = 0; i < n_ad; i++) {
        if (ad[i].n > INT_MAX)
            return RC_INVALID;
        if (!EVP_CipherUpdate(ctx, NULL, &len, ad[i].n ? ad[i].p : empty, (int)ad[i].n))
            return RC_CRYPTO;
    }
    return RC_OK;
}

/* Makes a working copy of a keyed template, so that no state of an earlier
 * call can leak into this one (re-initialising a used SIV context with a NULL
 * key gives wrong results from the second value on).  Returns NULL on failure
 * with *rc set; the caller frees the copy. */
static EVP_CIPHER_CTX *siv_work_ctx(const EVP_CIPHER_CTX *tmpl, rc_t *rc)
{
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();

    if (!ctx) {
        *rc = RC_NOMEM;
    } else if (!EVP_CIPHER_CTX_copy(ctx, tmpl)) {
        *rc = RC_CRYPTO;
        EVP_CIPHER_CTX_free(ctx);
        ctx = NULL;
    }
    return ctx;
}

/* One call of OpenSSL's SIV on a working copy of the keyed template `tmpl`
 * (siv_work_ctx): the expected IV `set_iv` goes in first when not NULL
 * (decryption: OpenSSL decrypts and checks it in the one update call), then
 * the associated data, then in[0..n) (n <= INT_MAX) through the cipher into
 * out[0..n); the synthetic IV comes out into `get_iv` when not NULL
 * (encryption: OpenSSL hands it out as the AEAD tag).  Returns RC_OK,
 * RC_NOMEM, RC_INVALID (a component over INT_MAX bytes) or RC_CRYPTO (OpenSSL
 * failed, or the value did not authenticate); OpenSSL's error queue is
 * emptied on failure.  The copy is freed (and wiped by OpenSSL) here. */
static rc_t siv_call(const EVP_CIPHER_CTX *tmpl, const unsigned char *set_iv, unsigned char *get_iv,
                     const struct siv_ad *ad, size_t n_ad, const unsigned char *in, size_t n,
                     unsigned char *out)
{
    rc_t rc = RC_NOMEM;
    int len = 0, fin = 0;
    EVP_CIPHER_CTX *ctx = siv_work_ctx(tmpl, &rc);

    if (!ctx)
        goto out;
    rc = RC_CRYPTO;
    if (set_iv && !EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_SET_TAG, SIV_IV_BYTES, (void *)set_iv))
        goto out;
    rc = siv_feed_ad(ctx, ad, n_ad);
    if (rc)
        goto out;
    rc = RC_CRYPTO;
    if (!EVP_CipherUpdate(ctx, out, &len, in, (int)n) || (size_t)len != n)
        goto out;
    if (!EVP_CipherFinal_ex(ctx, out + len, &fin) || fin != 0)
        goto out;
    if (get_iv && !EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_GET_TAG, SIV_IV_BYTES, get_iv))
        goto out;
    rc = RC_OK;
out:
    if (rc)
        ERR_clear_error();
    EVP_CIPHER_CTX_free(ctx);
    return rc;
}

/* See siv.h.  RFC 5297 puts the synthetic IV first. */
rc_t siv_encrypt(const struct siv_key *k, const struct siv_ad *ad, size_t n_ad,
                 const unsigned char *in, size_t n, unsigned char *out)
{
    rc_t rc = RC_INVALID;

    if (n != 0 && n <= INT_MAX - SIV_IV_BYTES)
        rc = siv_call(k->enc, NULL, out, ad, n_ad, in, n, out + SIV_IV_BYTES);
    return rc;
}

/* See siv.h.  out is wiped on any failure. */
rc_t siv_decrypt(const struct siv_key *k, const struct siv_ad *ad, size_t n_ad,
                 const unsigned char *in, size_t n, unsigned char *out)
{
    rc_t rc = RC_INVALID;

    if (n > SIV_IV_BYTES && n <= INT_MAX) {
        rc = siv_call(k->dec, in, NULL, ad, n_ad, in + SIV_IV_BYTES, n - SIV_IV_BYTES, out);
        if (rc)
            OPENSSL_cleanse(out, n - SIV_IV_BYTES);
    }
    return rc;
}

/* --- S2V and CTR computed here, over AES-ECB ------------------------------------------------ */

#define SIV_BLOCK 16      /* the AES block */
#define SIV_CTR_BLOCKS 64 /* keystream blocks made per EVP call: 1 KiB, any masked value */

struct siv_ecb_key {
    EVP_CIPHER_CTX *mac;           /* AES-ECB keyed with K1 (the first half): S2V's CMAC */
    EVP_CIPHER_CTX *ctr;           /* AES-ECB keyed with K2 (the second half): CTR */
    unsigned char sub1[SIV_BLOCK]; /* CMAC subkey K1' = dbl(L), L = AES(K1, 0^128) */
    unsigned char sub2[SIV_BLOCK]; /* CMAC subkey K2' = dbl(K1') */
    unsigned char d0[SIV_BLOCK];   /* S2V's first D = CMAC(K1, 0^128), the same every call */
};

/* Encrypts `blocks` whole blocks in[0..16 * blocks) with the AES key of the
 * ECB context ctx into out (out may be in; 1 <= blocks <= SIV_CTR_BLOCKS).
 * ECB without padding turns whole blocks into whole blocks and carries
 * nothing over to the next call.  Returns 1, or 0 when OpenSSL fails. */
static int siv_aes(EVP_CIPHER_CTX *ctx, const unsigned char *in, unsigned char *out, size_t blocks)
{
    int len = 0;

    assert(blocks >= 1 && blocks <= SIV_CTR_BLOCKS);
    return EVP_EncryptUpdate(ctx, out, &len, in, (int)(blocks * SIV_BLOCK)) == 1 &&
           (size_t)len == blocks * SIV_BLOCK;
}

/* out[0..n) = a[0..n) xor b[0..n), eight bytes at a time (a byte loop that
 * may alias is not vectorised at -O2, and costs more than the AES).  out may
 * be a or b, but must not overlap them otherwise.  Cannot fail. */
static void siv_xor_to(unsigned char *out, const unsigned char *a, const unsigned char *b, size_t n)
{
    size_t i = 0;

    for (; i + 8 <= n; i += 8) {
        uint64_t x, y;
        memcpy(&x, a + i, 8);
        memcpy(&y, b + i, 8);
        x ^= y;
        memcpy(out + i, &x, 8);
    }
    for (; i < n; i++)
        out[i] = a[i] ^ b[i];
}

/* dst[0..n) ^= src[0..n); cannot fail. */
static void siv_xor(unsigned char *dst, const unsigned char *src, size_t n)
{
    siv_xor_to(dst, dst, src, n);
}

/* out = dbl(in), multiplication by x in GF(2^128) (RFC 5297 section 2.3): a
 * left shift, and 0x87 into the last byte when the top bit fell off.  The
 * 0x87 goes through a mask, not a branch, so the timing does not depend on a
 * bit of key-derived data.  out may be in.  Cannot fail. */
static void siv_dbl(const unsigned char in[SIV_BLOCK], unsigned char out[SIV_BLOCK])
{
    unsigned char reduce = (unsigned char)(0u - (unsigned)(in[0] >> 7)) & 0x87;

    for (size_t i = 0; i + 1 < SIV_BLOCK; i++)
        out[i] = (unsigned char)(in[i] << 1 | in[i + 1] >> 7);
    out[SIV_BLOCK - 1] = (unsigned char)(in[SIV_BLOCK - 1] << 1) ^ reduce;
}

/* mac = AES-CMAC(K1, msg) (RFC 4493), where msg is m[0..n), or, when xorend
 * is not NULL (then n >= 16), m[0..n) with its last 16 bytes xored with
 * xorend[0..16): S2V's "Sn xorend D" without a copy of Sn.  m may be NULL
 * when n == 0.  The chaining value is wiped.  Returns 1, or 0 when OpenSSL
 * fails. */
static int siv_cmac(const struct siv_ecb_key *k, const unsigned char *m, size_t n,
                    const unsigned char *xorend, unsigned char mac[SIV_BLOCK])
{
    unsigned char x[SIV_BLOCK] = {0};
    size_t blocks = n ? (n + SIV_BLOCK - 1) / SIV_BLOCK : 1;
    size_t tail = n - (blocks - 1) * SIV_BLOCK; /* bytes in the last block, 0 to 16 */
    size_t xstart = xorend ? n - SIV_BLOCK : 0; /* where xorend applies */
    int ok = 0;

    assert(!xorend || n >= SIV_BLOCK);
    for (size_t b = 0; b < blocks; b++) {
        size_t off = b * SIV_BLOCK, len = b + 1 < blocks ? SIV_BLOCK : tail;
        if (len) /* m may be NULL when n == 0 */
            siv_xor(x, m + off, len);
        if (xorend && off + len > xstart) /* this block holds some of the last 16 bytes */
            for (size_t i = off > xstart ? off : xstart; i < off + len; i++)
                x[i - off] ^= xorend[i - xstart];
        if (b + 1 == blocks) {
            if (len == SIV_BLOCK) {
                siv_xor(x, k->sub1, SIV_BLOCK);
            } else { /* an incomplete (or empty) last block: 10* padding, K2' */
                x[len] ^= 0x80;
                siv_xor(x, k->sub2, SIV_BLOCK);
            }
        }
        if (!siv_aes(k->mac, x, x, 1))
            goto out;
    }
    memcpy(mac, x, SIV_BLOCK);
    ok = 1;
out:
    OPENSSL_cleanse(x, sizeof x);
    return ok;
}

/* v = S2V(K1, ad[0], ..., ad[n_ad - 1], in[0..n)) (RFC 5297 section 2.4),
 * starting from the precomputed D = CMAC(K1, 0^128).  The intermediate values
 * are wiped.  Returns 1, or 0 when OpenSSL fails. */
static int siv_s2v(const struct siv_ecb_key *k, const struct siv_ad *ad, size_t n_ad,
                   const unsigned char *in, size_t n, unsigned char v[SIV_BLOCK])
{
    unsigned char d[SIV_BLOCK], t[SIV_BLOCK];
    int ok = 0;

    memcpy(d, k->d0, SIV_BLOCK);
    for (size_t i = 0; i < n_ad; i++) {
        if (!siv_cmac(k, ad[i].p, ad[i].n, NULL, t))
            goto out;
        siv_dbl(d, d);
        siv_xor(d, t, SIV_BLOCK);
    }
    if (n >= SIV_BLOCK) { /* T = Sn xorend D */
        ok = siv_cmac(k, in, n, d, v);
    } else { /* T = dbl(D) xor pad(Sn) */
        siv_dbl(d, t);
        siv_xor(t, in, n);
        t[n] ^= 0x80;
        ok = siv_cmac(k, t, SIV_BLOCK, NULL, v);
    }
out:
    OPENSSL_cleanse(d, sizeof d);
    OPENSSL_cleanse(t, sizeof t);
    return ok;
}

/* Adds one to the counter block q as a 128-bit big-endian number.  Only the
 * low 64 bits are carried through: they start below 2^63 (bit 63 is cleared
 * in Q) and a size_t counts fewer than 2^60 blocks, so they never wrap into the
 * high half.  The branch depends on the counter, which is public (the IV is
 * part of the output).  Cannot fail. */
static void siv_ctr_inc(unsigned char q[SIV_BLOCK])
{
    for (size_t i = SIV_BLOCK; i-- > SIV_BLOCK - 8;)
        if (++q[i] != 0)
            break;
}

/* out[0..n) = in[0..n) xor AES-CTR(K2, Q), Q = v with bits 63 and 31 of its
 * low half cleared (RFC 5297 section 2.5), the counter blocks being Q, Q + 1,
 * ... as 128-bit big-endian numbers.  Up to SIV_CTR_BLOCKS counter blocks go
 * to OpenSSL in one call.  out may be in.  The keystream is wiped.  Returns 1,
 * or 0 when OpenSSL fails. */
static int siv_ctr(const struct siv_ecb_key *k, const unsigned char v[SIV_BLOCK],
                   const unsigned char *in, size_t n, unsigned char *out)
{
    unsigned char ctr[SIV_CTR_BLOCKS * SIV_BLOCK], ks[SIV_CTR_BLOCKS * SIV_BLOCK];
    unsigned char q[SIV_BLOCK]; /* the next counter block */
    size_t done = 0, used = 0;  /* used: bytes of ks holding keystream, to wipe */
    int ok = 0;

    memcpy(q, v, SIV_BLOCK);
    q[8] &= 0x7f; /* Q = V bitand (1^64 || 0^1 || 1^31 || 0^1 || 1^31) */
    q[12] &= 0x7f;
    while (done < n) {
        size_t chunk = n - done < sizeof ks ? n - done : sizeof ks;
        size_t blocks = (chunk + SIV_BLOCK - 1) / SIV_BLOCK;
        for (size_t b = 0; b < blocks; b++) {
            memcpy(ctr + b * SIV_BLOCK, q, SIV_BLOCK);
            siv_ctr_inc(q);
        }
        if (blocks * SIV_BLOCK > used)
            used = blocks * SIV_BLOCK;
        if (!siv_aes(k->ctr, ctr, ks, blocks))
            goto out;
        siv_xor_to(out + done, in + done, ks, chunk);
        done += chunk;
    }
    ok = 1;
out:
    OPENSSL_cleanse(ks, used);
    return ok;
}

/* Derives what depends on the key alone from k's keyed contexts: L =
 * AES(K1, 0^128), the CMAC subkeys and D = CMAC(K1, 0^128); L is wiped.
 * Returns 0, or -1 with err filled. */
static int siv_ecb_derive(struct siv_ecb_key *k, char err[ERR_LEN])
{
    static const unsigned char zero[SIV_BLOCK];
    unsigned char l[SIV_BLOCK];
    int rc = -1;

    if (!siv_aes(k->mac, zero, l, 1)) {
        siv_openssl_err(err, "cannot derive the CMAC subkeys");
        goto out;
    }
    siv_dbl(l, k->sub1);
    siv_dbl(k->sub1, k->sub2);
    if (!siv_cmac(k, zero, sizeof zero, NULL, k->d0)) {
        siv_openssl_err(err, "cannot derive the first S2V value");
        goto out;
    }
    rc = 0;
out:
    OPENSSL_cleanse(l, sizeof l);
    return rc;
}

/* See siv.h.  Keys the two ECB contexts (siv_ctx_pair), then derives the
 * rest once (siv_ecb_derive). */
struct siv_ecb_key *siv_ecb_key_new(const unsigned char *key, size_t key_len, char err[ERR_LEN])
{
    const char *name = key_len == 32   ? "AES-128-ECB"
                       : key_len == 48 ? "AES-192-ECB"
                       : key_len == 64 ? "AES-256-ECB"
                                       : NULL;
    struct siv_ecb_key *k = NULL;

    if (!name) {
        snprintf(err, ERR_LEN, "AES-SIV needs a key of 32, 48 or 64 bytes, got %zu bytes", key_len);
        goto out;
    }
    k = calloc(1, sizeof *k);
    if (!k) {
        snprintf(err, ERR_LEN, "out of memory");
        goto out;
    }
    if (siv_ctx_pair(name, "OpenSSL does not provide AES-ECB", key_len / 2, key, key + key_len / 2,
                     1, &k->mac, &k->ctr, err) != 0 ||
        siv_ecb_derive(k, err) != 0) {
        siv_ecb_key_free(k);
        k = NULL;
    }
out:
    return k;
}

/* See siv.h; NULL is allowed. */
void siv_ecb_key_free(struct siv_ecb_key *k)
{
    if (k)
        siv_free_key(k, sizeof *k, k->mac, k->ctr);
}

/* See siv.h.  V = S2V(AD, P) goes to out[0..16), then C = P xor CTR(V). */
rc_t siv_ecb_encrypt(const struct siv_ecb_key *k, const struct siv_ad *ad, size_t n_ad,
                     const unsigned char *in, size_t n, unsigned char *out)
{
    rc_t rc = RC_INVALID;

    if (n > SIZE_MAX - SIV_IV_BYTES)
        goto out;
    rc = RC_CRYPTO;
    if (!siv_s2v(k, ad, n_ad, in, n, out) || !siv_ctr(k, out, in, n, out + SIV_IV_BYTES)) {
        OPENSSL_cleanse(out, SIV_IV_BYTES + n);
        ERR_clear_error();
        goto out;
    }
    rc = RC_OK;
out:
    return rc;
}

/* See siv.h.  P = C xor CTR(V), then S2V(AD, P) must equal V; the recomputed
 * V is wiped, and so is out unless it authenticates. */
rc_t siv_ecb_decrypt(const struct siv_ecb_key *k, const struct siv_ad *ad, size_t n_ad,
                     const unsigned char *in, size_t n, unsigned char *out)
{
    unsigned char v[SIV_BLOCK];
    size_t body = 0; /* bytes of out this call may write, and so must wipe */
    rc_t rc = RC_INVALID;

    if (n < SIV_IV_BYTES)
        goto out;
    body = n - SIV_IV_BYTES;
    rc = RC_CRYPTO;
    if (!siv_ctr(k, in, in + SIV_IV_BYTES, body, out) || !siv_s2v(k, ad, n_ad, out, body, v))
        goto out;
    if (CRYPTO_memcmp(v, in, SIV_IV_BYTES) != 0)
        goto out;
    rc = RC_OK;
out:
    if (rc) {
        OPENSSL_cleanse(out, body);
        ERR_clear_error();
    }
    OPENSSL_cleanse(v, sizeof v);
    return rc;
}
