/* siphash.h - SipHash-2-4 (Aumasson and Bernstein, 2012): a keyed 64-bit hash.
 * With a secret random key, an outsider cannot choose inputs that collide,
 * which is what a hash table fed with message ids needs. */
#ifndef SIPHASH_H
#define SIPHASH_H

#include <stddef.h>
#include <stdint.h>

/* SipHash-2-4 of p[0..n) under the 16-byte key; the reference
 * implementation's output read as a little-endian integer.  Cannot fail. */
uint64_t siphash24(const uint8_t key[16], const void *p, size_t n);

#endif
