/* idset.c - open addressing with linear probing over keyed SipHash-2-4. */
#define _DEFAULT_SOURCE
#include "idset.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/rand.h>

#include "siphash.h"

void idset_init(struct idset *s)
{
    memset(s, 0, sizeof *s);
}

rc_t idset_reset(struct idset *s, size_t n)
{
    size_t cap = 16;

    assert(n <= IDSET_MAX);
    if (!s->keyed) {
        if (RAND_bytes(s->key, sizeof s->key) != 1) {
            s->count = 0;
            if (s->slot)
                memset(s->slot, 0, s->cap * sizeof *s->slot);
            return RC_CRYPTO;
        }
        s->keyed = 1;
    }
    /* At most 3/4 full: with a hash nobody can aim at, a successful lookup
     * probes 2.5 slots on average at that load, a failed one 8.5. */
    while (cap < n + n / 3 + 1)
        cap *= 2;
    if (cap > s->cap) {
        free(s->slot);
        s->cap = 0;
        s->slot = calloc(cap, sizeof *s->slot);
        if (!s->slot) {
            s->count = 0;
            return RC_NOMEM;
        }
        s->cap = cap;
    } else {
        memset(s->slot, 0, s->cap * sizeof *s->slot);
    }
    s->count = 0;
    return RC_OK;
}

/* The slot holding key, or the free slot where it would go. */
static size_t find(const struct idset *s, const char *key, size_t len)
{
    size_t mask = s->cap - 1;
    size_t i = (size_t)siphash24(s->key, key, len) & mask;
    while (s->slot[i].key && (s->slot[i].len != len || memcmp(s->slot[i].key, key, len) != 0))
        i = (i + 1) & mask;
    return i;
}

/* See idset.h: a larger table, every key moved into it (same hash key). */
rc_t idset_reserve(struct idset *s, size_t n)
{
    size_t cap = s->cap;

    assert(s->keyed && n <= IDSET_MAX);
    if (n + n / 3 + 1 <= cap)
        return RC_OK;
    while (cap < n + n / 3 + 1)
        cap *= 2;
    struct idset_slot *old = s->slot, *slot = calloc(cap, sizeof *slot);
    size_t old_cap = s->cap;
    if (!slot)
        return RC_NOMEM;
    s->slot = slot;
    s->cap = cap;
    for (size_t i = 0; i < old_cap; i++)
        if (old[i].key)
            s->slot[find(s, old[i].key, old[i].len)] = old[i];
    free(old);
    return RC_OK;
}

size_t idset_put(struct idset *s, const char *key, size_t len, size_t value)
{
    /* Never full, so that find ends. */
    assert(s->cap && s->count + 1 < s->cap && len <= IDSET_MAX && value <= IDSET_MAX);
    size_t i = find(s, key, len);
    if (s->slot[i].key)
        return s->slot[i].value;
    s->slot[i].key = key;
    s->slot[i].len = (uint32_t)len;
    s->slot[i].value = (uint32_t)value;
    s->count++;
    return value;
}

size_t idset_get(const struct idset *s, const char *key, size_t len)
{
    if (!s->cap || len > IDSET_MAX)
        return (size_t)-1;
    size_t i = find(s, key, len);
    return s->slot[i].key ? s->slot[i].value : (size_t)-1;
}

void idset_free(struct idset *s)
{
    free(s->slot);
    OPENSSL_cleanse(s->key, sizeof s->key);
    idset_init(s);
}
