/* siv.c - AES-SIV over OpenSSL EVP, keyed once, one context copy per call. */
#include "siv.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>

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

/* Creates one context keyed for `enc` (1: encrypt, 0: decrypt).  Returns NULL
 * with err filled on failure; the caller frees the context. */
static EVP_CIPHER_CTX *siv_keyed_ctx(const EVP_CIPHER *cipher, const unsigned char *key, int enc,
                                     char err[ERR_LEN])
{
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();

    if (!ctx) {
        siv_openssl_err(err, "cannot allocate a cipher context");
        goto out;
    }
    if (!EVP_CipherInit_ex2(ctx, cipher, key, NULL, enc, NULL)) {
        siv_openssl_err(err, "cannot key the SIV cipher");
        EVP_CIPHER_CTX_free(ctx);
        ctx = NULL;
    }
out:
    return ctx;
}

/* See siv.h.  Fetches the cipher once, keys an encryption and a decryption
 * template; the fetched cipher is released here, the contexts hold their own
 * references. */
struct siv_key *siv_key_new(const char *cipher_name, const unsigned char *key, size_t key_len,
                            char err[ERR_LEN])
{
    struct siv_key *k = NULL;
    EVP_CIPHER *cipher = NULL;

    /* OpenSSL 3.0 sets its default library context up on first use; when
     * that runs out of memory it goes on with a half-made context and
     * crashes on its NULL lock.  Asking for the context first reports the
     * failure instead (tests/integration/test_faults.py fails each
     * allocation in turn). */
    if (!OSSL_LIB_CTX_get0_global_default()) {
        snprintf(err, ERR_LEN, "out of memory: OpenSSL cannot initialise");
        goto out;
    }
    cipher = EVP_CIPHER_fetch(NULL, cipher_name, NULL);
    if (!cipher) {
        siv_openssl_err(err, "OpenSSL does not provide the SIV cipher");
        goto out;
    }
    if ((size_t)EVP_CIPHER_get_key_length(cipher) != key_len) {
        snprintf(err, ERR_LEN, "%s needs a %d-byte key, got %zu bytes", cipher_name,
                 EVP_CIPHER_get_key_length(cipher), key_len);
        goto out;
    }
    k = calloc(1, sizeof *k);
    if (!k) {
        snprintf(err, ERR_LEN, "out of memory");
        goto out;
    }
    /* The contexts take their own reference to the cipher. */
    k->enc = siv_keyed_ctx(cipher, key, 1, err);
    if (k->enc)
        k->dec = siv_keyed_ctx(cipher, key, 0, err);
    if (!k->dec) {
        siv_key_free(k);
        k = NULL;
    }
out:
    EVP_CIPHER_free(cipher);
    return k;
}

/* See siv.h; NULL is allowed. */
void siv_key_free(struct siv_key *k)
{
    if (!k)
        return;
    EVP_CIPHER_CTX_free(k->enc); /* the provider wipes its key schedule */
    EVP_CIPHER_CTX_free(k->dec);
    free(k);
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

/* See siv.h.  One context copy per call, freed (and wiped by OpenSSL) here. */
rc_t siv_encrypt(const struct siv_key *k, const struct siv_ad *ad, size_t n_ad,
                 const unsigned char *in, size_t n, unsigned char *out)
{
    EVP_CIPHER_CTX *ctx = NULL;
    rc_t rc = RC_INVALID;
    int len = 0, fin = 0;

    if (n == 0 || n > INT_MAX - SIV_IV_BYTES)
        goto out;
    ctx = siv_work_ctx(k->enc, &rc);
    if (!ctx)
        goto out;
    rc = siv_feed_ad(ctx, ad, n_ad);
    if (rc)
        goto out;
    rc = RC_CRYPTO;
    if (!EVP_EncryptUpdate(ctx, out + SIV_IV_BYTES, &len, in, (int)n) || (size_t)len != n)
        goto out;
    if (!EVP_EncryptFinal_ex(ctx, out + SIV_IV_BYTES + len, &fin) || fin != 0)
        goto out;
    /* OpenSSL returns the synthetic IV as the tag; RFC 5297 puts it first. */
    if (!EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_GET_TAG, SIV_IV_BYTES, out))
        goto out;
    rc = RC_OK;
out:
    if (rc)
        ERR_clear_error();
    EVP_CIPHER_CTX_free(ctx);
    return rc;
}

/* See siv.h.  The expected IV goes in before the ciphertext; out is wiped on
 * any failure. */
rc_t siv_decrypt(const struct siv_key *k, const struct siv_ad *ad, size_t n_ad,
                 const unsigned char *in, size_t n, unsigned char *out)
{
    EVP_CIPHER_CTX *ctx = NULL;
    rc_t rc = RC_INVALID;
    int len = 0, fin = 0;
    size_t body = 0; /* bytes of out this call may write, and so must wipe */

    if (n <= SIV_IV_BYTES || n > INT_MAX)
        goto out;
    body = n - SIV_IV_BYTES;
    ctx = siv_work_ctx(k->dec, &rc);
    if (!ctx)
        goto out;
    /* The expected IV must be set before the ciphertext goes in: OpenSSL
     * decrypts and checks it in the one update call. */
    rc = RC_CRYPTO;
    if (!EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_SET_TAG, SIV_IV_BYTES, (void *)in))
        goto out;
    rc = siv_feed_ad(ctx, ad, n_ad);
    if (rc)
        goto out;
    rc = RC_CRYPTO;
    if (!EVP_DecryptUpdate(ctx, out, &len, in + SIV_IV_BYTES, (int)body) || (size_t)len != body)
        goto out;
    if (!EVP_DecryptFinal_ex(ctx, out + len, &fin) || fin != 0)
        goto out;
    rc = RC_OK;
out:
    if (rc) {
        OPENSSL_cleanse(out, body);
        ERR_clear_error();
    }
    EVP_CIPHER_CTX_free(ctx);
    return rc;
}
