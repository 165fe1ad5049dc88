/* keyset.h - the masking keys a deployment holds (docs/behaviour.md, "Masking"):
 * one current key, which masks every new value, and retired keys, which only
 * recover values still stored under their ids until `bootstrap rekey` has
 * re-masked them under the current key.
 *
 * Where the keys come from:
 *   - MASKING_KEY, or in AWS the SecretString of the MASKING_KEY_SECRET_ID
 *     secret, holds either 128 hexadecimal characters (the current key, whose
 *     id is MASKING_KEY_ID, k1 when unset) or a keyset document
 *       {"current":"k2","keys":{"k1":"<128 hex>","k2":"<128 hex>"}}
 *     whose "current" names the current key among "keys" (MASKING_KEY_ID is
 *     not consulted then; the caller may warn when it names another id);
 *   - MASKING_KEYS_RETIRED adds retired keys: id=<128 hex>[,id=<128 hex>...],
 *     white space allowed around each item.
 * A key id appears once in the set; the current id is never among the
 * retired ones.  Errors name the source, the item's position and, once an id
 * has been checked to be one, the id: never a key's characters.  Every key
 * is wiped when the set is freed. */
#ifndef KEYSET_H
#define KEYSET_H

#include <stddef.h>

#include "mask.h"
#include "result.h"

#define KEYSET_MAX 16 /* keys in a set, the current one included */

struct keyset; /* opaque: the current key and the retired ones, all owned */

/* What a stored value is, seen from a keyset (keyset_classify). */
enum keyset_class {
    KEYSET_CURRENT,    /* masked under the current key id: nothing to do */
    KEYSET_RETIRED,    /* masked under a retired key id the set holds: can be re-masked */
    KEYSET_UNKNOWN_ID, /* shaped like a masked value, under a key id the set does not hold */
    KEYSET_NOT_MASKED  /* not shaped like a masked value: no "KEY_ID:" prefix, or not at
                          least 43 characters of base64url after it */
};

/* Builds the set from a key source (MASKING_KEY's value, or the masking
 * secret's SecretString without surrounding white space) of source_len
 * bytes, the MASKING_KEY_ID setting as getenv returns it (NULL when unset:
 * k1; used only when the source is plain hex), and MASKING_KEYS_RETIRED
 * (NULL when unset).  source_name ("MASKING_KEY", "the masking secret")
 * starts every error message.  Returns the set (the caller frees it with
 * keyset_free), or NULL with err saying what is wrong: bad hex or length, a
 * bad key id, an id twice, the current id among the retired, a malformed
 * document or list, more than KEYSET_MAX keys, out of memory, or OpenSSL
 * failing.  Temporary copies of key bytes are wiped. */
struct keyset *keyset_load(const char *source_name, const char *source, size_t source_len,
                           const char *key_id_setting, const char *retired, char err[ERR_LEN]);

/* Checks MASKING_KEYS_RETIRED on its own (at start, when the current key
 * comes from a secret read later): the same checks as keyset_load but the
 * ones that need the current key.  Returns RC_OK, or RC_CONFIG / RC_NOMEM /
 * RC_CRYPTO with err filled.  Nothing is kept. */
rc_t keyset_check_retired(const char *retired, char err[ERR_LEN]);

/* Wipes every key and frees the set; NULL is allowed. */
void keyset_free(struct keyset *ks);

/* Returns the current key (borrowed, as long as the set); cannot fail. */
const struct mask_key *keyset_current(const struct keyset *ks);

/* Returns the number of keys, the current one included (1 to KEYSET_MAX);
 * cannot fail. */
size_t keyset_count(const struct keyset *ks);

/* Returns key i (borrowed): 0 is the current key, 1 to keyset_count - 1 the
 * retired ones in the order they were given.  i must be below
 * keyset_count; cannot fail. */
const struct mask_key *keyset_key(const struct keyset *ks, size_t i);

/* Classifies a stored value masked[0..n) by its shape ("KEY_ID:" and at
 * least 43 characters of base64url: nothing is decoded or authenticated) and
 * its key id; *key gets the key of that id when the set holds one, else
 * NULL.  Cannot fail. */
enum keyset_class keyset_classify(const struct keyset *ks, const char *masked, size_t n,
                                  const struct mask_key **key);

/* As mask_unmask, with the key the value's prefix names.  Returns mask_unmask's
 * codes; RC_INVALID with err naming the id (not quoting anything else) when
 * the set holds no key of that id. */
rc_t keyset_unmask(const struct keyset *ks, const char *masked, size_t n, char *out, size_t cap,
                   size_t *out_len, char err[ERR_LEN]);

/* Re-masks a value stored under a retired key: recovers it with the key its
 * prefix names and masks it with the current key into out (MASK_OUTPUT_MAX
 * bytes, NUL-terminated, *out_len without the NUL).  The recovered value is
 * wiped.  Returns RC_OK; RC_INVALID when the value is not under a retired
 * key of the set (already current, unknown id, not masked), or malformed;
 * RC_CRYPTO when it does not authenticate under that key; err says which. */
rc_t keyset_remask(const struct keyset *ks, const char *masked, size_t n, char *out,
                   size_t *out_len, char err[ERR_LEN]);

/* keyset_unmask for a value of any length (mask_unmask_long): appends the
 * original to out.  Returns as mask_unmask_long. */
rc_t keyset_unmask_long(const struct keyset *ks, const char *masked, size_t n, struct buf *out,
                        char err[ERR_LEN]);

/* keyset_remask for a value of any length (a quarantined body): recovered
 * with the retired key its id names, masked again with the current one,
 * appended to out.  Returns as keyset_remask, RC_NOMEM included. */
rc_t keyset_remask_long(const struct keyset *ks, const char *masked, size_t n, struct buf *out,
                        char err[ERR_LEN]);

#endif
