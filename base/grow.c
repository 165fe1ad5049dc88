/* grow.c - capacity doubling for parallel arrays (see grow.h). */
#include "grow.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* See grow.h.  The array pointers are read and written through memcpy: they
 * are T * of different T, reached through one void * each. */
rc_t grow_arrays(const struct grow_array *a, size_t count, size_t *cap, size_t n, size_t first)
{
    size_t want = *cap ? *cap : first;
    rc_t rc = RC_OK;

    if (n <= *cap)
        goto out;
    rc = RC_NOMEM;
    if (want == 0)
        want = 1;
    while (want < n) {
        if (want > SIZE_MAX / 2)
            goto out;
        want *= 2;
    }
    for (size_t i = 0; i < count; i++) {
        void *old, *p;
        if (a[i].size && want > SIZE_MAX / a[i].size)
            goto out;
        memcpy(&old, a[i].ptr, sizeof old);
        p = realloc(old, want * a[i].size);
        if (!p)
            goto out;
        memcpy(a[i].ptr, &p, sizeof p);
    }
    *cap = want;
    rc = RC_OK;
out:
    return rc;
}
