/* siv.h - AES-SIV (RFC 5297) over OpenSSL EVP: deterministic authenticated
 * encryption with a list of associated-data components.  The output is laid
 * out as RFC 5297 says: the 16-byte synthetic IV, then the ciphertext (OpenSSL
 * hands the IV out as the AEAD tag; this module puts it in front).
 *
 * A key is set up once (the slow part: OpenSSL derives the CMAC and CTR
 * subkeys) and every call works on a copy of that keyed context, so calls are
 * fast, independent of each other and safe on a const key.  mask.c builds
 * CONTRACT section 5 on top of this; the unit tests reach it directly for the
 * RFC 5297 vectors, which use AES-128-SIV and associated data. */
#ifndef SIV_H
#define SIV_H

#include <stddef.h>

#include "result.h"

#define SIV_IV_BYTES 16 /* the synthetic IV that precedes the ciphertext */

/* One associated-data component of S2V; an empty component (n == 0) counts. */
struct siv_ad {
    const unsigned char *p; /* borrowed; may be NULL when n == 0 */
    size_t n;               /* length in bytes */
};

struct siv_key; /* opaque: keyed OpenSSL contexts, wiped when freed */

/* Creates a key for the OpenSSL cipher `cipher_name` ("AES-128-SIV" with a
 * 32-byte key, "AES-256-SIV" with 64 bytes, "AES-192-SIV" with 48).  Returns
 * NULL with err filled (never quoting the key) when OpenSSL lacks the cipher,
 * the key length does not match it, or OpenSSL fails.  The caller keeps and
 * wipes `key`; the returned key is freed with siv_key_free. */
struct siv_key *siv_key_new(const char *cipher_name, const unsigned char *key, size_t key_len,
                            char err[ERR_LEN]);

/* Frees the key; OpenSSL wipes the contexts' key schedules.  NULL is allowed. */
void siv_key_free(struct siv_key *k);

/* Encrypts in[0..n) (n >= 1: OpenSSL's SIV cannot seal an empty plaintext)
 * with the n_ad components ad[0..n_ad) (ad may be NULL when n_ad == 0) into
 * out[0..SIV_IV_BYTES + n): IV first, then ciphertext.  Returns RC_OK,
 * RC_INVALID (n == 0, or a length over INT_MAX), RC_NOMEM or RC_CRYPTO.  The
 * same inputs always give the same output. */
rc_t siv_encrypt(const struct siv_key *k, const struct siv_ad *ad, size_t n_ad,
                 const unsigned char *in, size_t n, unsigned char *out);

/* Checks and decrypts in[0..n) (IV, then ciphertext; n > SIV_IV_BYTES) with the
 * same associated data into out[0..n - SIV_IV_BYTES).  Returns RC_OK,
 * RC_INVALID (too short, a length over INT_MAX), RC_NOMEM, or RC_CRYPTO when
 * the value does not authenticate (tampered, other key, other associated
 * data); on any failure out is wiped, so no unauthenticated plaintext leaks. */
rc_t siv_decrypt(const struct siv_key *k, const struct siv_ad *ad, size_t n_ad,
                 const unsigned char *in, size_t n, unsigned char *out);

#endif
