/* siv.h - AES-SIV (RFC 5297): deterministic authenticated encryption with a
 * list of associated-data components, in two implementations with the same
 * output, laid out as RFC 5297 says: the 16-byte synthetic IV, then the
 * ciphertext.
 *
 * siv_key is OpenSSL's own SIV mode (OpenSSL hands the IV out as the AEAD tag;
 * this module puts it in front).  It is keyed once, and every call works on a
 * copy of the keyed context, so calls are independent of each other and safe
 * on a const key; but the copy, wipe and free of that context cost about 1 us a
 * call, fifty times the AES work of a one-block value.  It is the reference.
 *
 * siv_ecb_key computes S2V (with AES-CMAC, RFC 4493) and CTR itself and asks
 * OpenSSL only for raw AES blocks, from two AES-ECB contexts keyed once.  ECB
 * keeps no state from one call to the next (whole blocks only, no padding), so
 * the contexts are used as they are, call after call; everything that depends
 * on the key alone (the CMAC subkeys, S2V's first D) is computed once.  mask.c
 * builds docs/behaviour.md, "Masking" on it.  The unit tests compare it, value after
 * value, with siv_key, with a freshly keyed OpenSSL context and with the RFC
 * 5297 vectors; the integration tests with Python's AESSIV and an independent
 * RFC 5297 implementation. */
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

/* --- OpenSSL's SIV mode: the reference ---------------------------------------------------- */

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

/* --- S2V and CTR computed here, over AES-ECB ------------------------------------------------ */

struct siv_ecb_key; /* opaque: two keyed AES-ECB contexts and the key's CMAC subkeys */

/* Creates a key for AES-SIV from 32 (AES-128-SIV), 48 (AES-192-SIV) or 64
 * bytes (AES-256-SIV): the first half keys S2V, the second CTR.  Returns NULL with
 * err filled (never quoting the key) when the length is none of those or
 * OpenSSL fails.  The caller keeps and wipes `key`; the returned key is freed
 * with siv_ecb_key_free.  Not for two threads at once: the AES contexts are
 * used in place (this program has one thread). */
struct siv_ecb_key *siv_ecb_key_new(const unsigned char *key, size_t key_len, char err[ERR_LEN]);

/* Wipes the derived subkeys (OPENSSL_cleanse) and frees the key; OpenSSL wipes
 * the AES key schedules.  NULL is allowed. */
void siv_ecb_key_free(struct siv_ecb_key *k);

/* As siv_encrypt, with the same output, except that an empty plaintext
 * (n == 0) is allowed, as RFC 5297 allows it.  out must not overlap in.
 * Returns RC_OK, RC_INVALID (n too large for out's size to be computed) or
 * RC_CRYPTO (OpenSSL fails); out is wiped on failure. */
rc_t siv_ecb_encrypt(const struct siv_ecb_key *k, const struct siv_ad *ad, size_t n_ad,
                     const unsigned char *in, size_t n, unsigned char *out);

/* As siv_decrypt, except that n == SIV_IV_BYTES (an empty plaintext) is
 * allowed.  The IV is compared in constant time (CRYPTO_memcmp).  out must
 * not overlap in.  Returns RC_OK, RC_INVALID (n < SIV_IV_BYTES) or RC_CRYPTO
 * (does not authenticate, or OpenSSL fails); on any failure out is wiped. */
rc_t siv_ecb_decrypt(const struct siv_ecb_key *k, const struct siv_ad *ad, size_t n_ad,
                     const unsigned char *in, size_t n, unsigned char *out);

#endif
