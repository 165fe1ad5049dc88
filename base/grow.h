/* grow.h - capacity doubling for a set of parallel arrays (one element per
 * record in each), grown together, overflow-checked, all or nothing. */
#ifndef GROW_H
#define GROW_H

#include <stddef.h>

#include "result.h"

/* One array of the set: where its pointer is, and the size of an element. */
struct grow_array {
    void *ptr;   /* the address of the array's pointer (a T ** for a T * array) */
    size_t size; /* sizeof (T) */
};

/* Grows every array of a[0..count) to room for at least n elements: the
 * capacity doubles from *cap (from `first` when *cap is 0) until it holds n,
 * and each array is realloc'ed to it; nothing is done when n <= *cap
 * already.  Callers on a per-record path test that themselves first, so
 * that the common case costs one compare and no call.  All or nothing: *cap
 * changes only when every array grew; on failure each array is still valid
 * for the old *cap elements with its contents (one that grew already keeps
 * its larger block, which the next call reuses).  Returns RC_OK, or RC_NOMEM
 * when an allocation fails or the size in bytes would overflow size_t.  The
 * arrays stay owned by the caller (free each, then set *cap to 0). */
rc_t grow_arrays(const struct grow_array *a, size_t count, size_t *cap, size_t n, size_t first);

#endif
