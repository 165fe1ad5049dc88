/* fnv_slot.h - the slot the id set's former unkeyed hash gave an id: FNV-1a 64,
 * folded h ^ h >> 29, the low `bits` bits.  The unit test and the benchmark build
 * ids that all collide under it, to show that the keyed SipHash set spreads them
 * (tests/unit/test_idset.c, tests/bench/idset_bench.c).  Test code only. */
#ifndef FNV_SLOT_H
#define FNV_SLOT_H

#include <stddef.h>
#include <stdint.h>

/* The slot of the n bytes at p in a table of 2^bits slots.  Cannot fail. */
static inline size_t fnv_slot(const char *p, size_t n, unsigned bits)
{
    uint64_t h = 0xcbf29ce484222325ULL;
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)p[i];
        h *= 0x100000001b3ULL;
    }
    return (size_t)(h ^ (h >> 29)) & (((size_t)1 << bits) - 1);
}

#endif
