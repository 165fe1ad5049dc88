/* idset.h - a set of borrowed byte strings (SQS message ids) mapping each to
 * the index it was added with: finds repeats within a batch and matches ids
 * the database returns to the batch's rows, both in O(1) per id.
 *
 * The ids come from outside, so the hash is keyed (SipHash-2-4 under a key
 * drawn from OpenSSL's random generator for each set): nobody can choose
 * ids that collide, and linear probing stays O(1) per id whatever the ids
 * are.  A slot is 16 bytes and the table at most 3/4 full, so a 6 MB event
 * of 170,000 tiny records costs 4 MiB here. */
#ifndef IDSET_H
#define IDSET_H

#include <stddef.h>
#include <stdint.h>

#include "result.h"

#define IDSET_MAX 0xfffffffeu /* keys, values and key lengths fit 32 bits */

struct idset_slot {
    const char *key; /* borrowed; NULL marks a free slot */
    uint32_t len;    /* bytes of key */
    uint32_t value;  /* the index stored with key */
};

struct idset {
    struct idset_slot *slot; /* owned: cap slots */
    size_t cap;              /* a power of two, at least 4/3 of the reserved count */
    size_t count;            /* keys stored */
    uint8_t key[16];         /* the hash key, drawn at the first idset_reset */
    int keyed;               /* key has been drawn */
};

/* Initialises an empty set; allocates nothing; cannot fail. */
void idset_init(struct idset *s);

/* Empties the set and makes room for `n` keys (n <= IDSET_MAX) without
 * growing.  The first call draws the hash key.  Returns RC_OK, RC_NOMEM or
 * RC_CRYPTO (no random key); the set is then empty and still usable. */
rc_t idset_reset(struct idset *s, size_t n);

/* Makes room for `n` keys in all (n <= IDSET_MAX), keeping the keys
 * present, for a caller that learns the count as it goes (doubling n keeps
 * the cost O(1) a key).  Call after idset_reset.  Returns RC_OK, or
 * RC_NOMEM with the set unchanged. */
rc_t idset_reserve(struct idset *s, size_t n);

/* Looks up key (len <= IDSET_MAX); when absent, adds it with `value`
 * (<= IDSET_MAX).  Returns the value stored with the key (the earlier one
 * when it was present).  The caller reserved room with idset_reset or
 * idset_reserve; adding more keys than reserved is a programmer error. */
size_t idset_put(struct idset *s, const char *key, size_t len, size_t value);

/* Returns the value stored with key, or (size_t)-1 when absent. */
size_t idset_get(const struct idset *s, const char *key, size_t len);

/* Frees the table and wipes the hash key; the set is empty afterwards. */
void idset_free(struct idset *s);

#endif
