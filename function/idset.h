/* idset.h - a set of borrowed byte strings (SQS message ids) mapping each to
 * the index it was added with: finds repeats within a batch and matches ids
 * the database returns to the batch's rows, both in O(1) per id. */
#ifndef IDSET_H
#define IDSET_H

#include <stddef.h>

#include "result.h"

struct idset {
    const char **key; /* owned array of borrowed pointers; NULL marks a free slot */
    size_t *key_len;  /* owned: lengths of the keys */
    size_t *value;    /* owned: the index stored with each key */
    size_t cap;       /* slots, a power of two, at least twice the count */
    size_t count;     /* keys stored */
};

/* Initialises an empty set; allocates nothing; cannot fail. */
void idset_init(struct idset *s);

/* Empties the set and makes room for `n` keys without growing.  Returns
 * RC_OK or RC_NOMEM (the set is then empty and still usable). */
rc_t idset_reset(struct idset *s, size_t n);

/* Looks up key; when absent, adds it with `value`.  Returns the value stored
 * with the key (the earlier one when it was present).  The caller reserved
 * room with idset_reset; adding more keys than reserved is a programmer error. */
size_t idset_put(struct idset *s, const char *key, size_t len, size_t value);

/* Returns the value stored with key, or (size_t)-1 when absent. */
size_t idset_get(const struct idset *s, const char *key, size_t len);

void idset_free(struct idset *s);

#endif
