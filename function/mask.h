/* mask.h - deterministic, keyed, reversible masking of PII (docs/behaviour.md, "Masking"):
 *
 *   mask(v) = KEY_ID ":" base64url_nopad( SIV(K, pad(v)) )
 *   pad(v)  = v || 0x80 || 0x00... to the next multiple of 16 (at least one byte added)
 *   SIV     = AES-256-SIV (RFC 5297), no associated data, the 16-byte synthetic
 *             IV followed by the ciphertext
 *
 * The same input always gives the same output (analysts can group by it),
 * nobody without K can reverse it or test guesses, and every IPv4 address or
 * ddd-dd-dddd device id masks to a value of the same length. */
#ifndef MASK_H
#define MASK_H

#include <stddef.h>

#include "buf.h"
#include "result.h"

#define MASK_KEY_BYTES 64  /* AES-256-SIV: two 256-bit keys */
#define MASK_KEY_ID_MAX 8  /* 1 to 8 characters of [A-Za-z0-9] */
#define MASK_INPUT_MAX 512 /* bytes: 128 characters of up to 4 bytes */
/* Longest output: id, ':', base64url of 16 + pad(512) bytes, NUL. */
#define MASK_OUTPUT_MAX (MASK_KEY_ID_MAX + 1 + ((16 + 528) * 4 + 2) / 3 + 1)

#define MASK_KEY_ID_DEFAULT "k1" /* the key id when MASKING_KEY_ID is not set */

/* The key id a MASKING_KEY_ID value names, for the function and `bootstrap
 * mask` alike: MASK_KEY_ID_DEFAULT when the variable is unset (NULL), else
 * the value as it is, so that a variable set to "" fails mask_key_id_valid
 * instead of silently becoming the default.  Cannot fail. */
const char *mask_key_id_setting(const char *env_value);

/* Returns 1 when id is a valid key id (1 to MASK_KEY_ID_MAX characters of
 * [A-Za-z0-9], NUL-terminated), else 0 (NULL included).  Cannot fail. */
int mask_key_id_valid(const char *id);

/* As mask_key_id_valid for the n bytes at s (no NUL needed; only s[0..n) is
 * read).  Cannot fail. */
int mask_key_id_valid_len(const char *s, size_t n);

struct mask_key; /* opaque: keyed AES contexts and derived subkeys, wiped when freed */

/* Creates a key from 128 hexadecimal characters and a key id.  Returns NULL
 * with err filled (never quoting the key) when the hex is malformed or of the
 * wrong length, the id is not 1-8 characters of [A-Za-z0-9], OpenSSL lacks
 * AES-256-SIV or fails, or the fast AES-SIV masking uses disagrees with
 * OpenSSL's under this key (checked here, once).  Temporary copies of the key
 * are wiped. */
struct mask_key *mask_key_new(const char *hex, size_t hex_len, const char *key_id,
                              char err[ERR_LEN]);

/* Wipes the key material (OPENSSL_cleanse) and frees it; NULL is allowed. */
void mask_key_free(struct mask_key *k);

/* Returns the key id (borrowed, NUL-terminated); cannot fail. */
const char *mask_key_id(const struct mask_key *k);

/* Returns the length mask() produces for an input of n bytes; cannot fail. */
size_t mask_output_len(const struct mask_key *k, size_t n);

/* Masks v[0..n) (n <= MASK_INPUT_MAX) into out (at least MASK_OUTPUT_MAX
 * bytes), NUL-terminated; *out_len gets the length without the NUL.  Returns
 * RC_OK, RC_TOOBIG or RC_CRYPTO.  Safe to call for many values in a row, not
 * from two threads at once on one key (its AES contexts are used in place). */
rc_t mask_value(const struct mask_key *k, const char *v, size_t n, char *out, size_t *out_len);

/* Recovers the original value from a masked one: checks the key id, decodes,
 * authenticates (a tampered or foreign value fails) and removes the padding.
 * Writes up to MASK_INPUT_MAX bytes to out (cap bytes, NUL-terminated; the
 * value itself may hold any byte).  Reads only masked[0..n).  Returns RC_OK,
 * RC_INVALID (malformed, wrong key id, bad padding), RC_CRYPTO (fails
 * authentication) or RC_TOOBIG (cap too small), with err filled.  Like
 * mask_value, one thread at a time on one key. */
rc_t mask_unmask(const struct mask_key *k, const char *masked, size_t n, char *out, size_t cap,
                 size_t *out_len, char err[ERR_LEN]);

/* Masks a value of any length (a whole message body kept in quarantine) the
 * same way as mask_value, so that mask_unmask_long, and `bootstrap unmask`,
 * recover it; appends the masked text to out (no NUL counted).  The padded
 * copy is wiped.  Returns RC_OK, RC_NOMEM, RC_TOOBIG (out's limit) or
 * RC_CRYPTO, with out as it was on failure. */
rc_t mask_value_long(const struct mask_key *k, const char *v, size_t n, struct buf *out);

/* mask_unmask for a value of any length: appends the original to out (out's
 * limit bounds it).  Returns as mask_unmask, RC_NOMEM included; out as it
 * was on failure.  The decrypted copy is wiped. */
rc_t mask_unmask_long(const struct mask_key *k, const char *masked, size_t n, struct buf *out,
                      char err[ERR_LEN]);

#endif
