/* idset.c - open addressing with linear probing over FNV-1a hashes. */
#include "idset.h"

#include <assert.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

void idset_init(struct idset *s)
{
    memset(s, 0, sizeof *s);
}

rc_t idset_reset(struct idset *s, size_t n)
{
    size_t cap = 16;
    while (cap < 2 * n + 2)
        cap *= 2;
    if (cap > s->cap) {
        idset_free(s);
        s->key = calloc(cap, sizeof *s->key);
        s->key_len = malloc(cap * sizeof *s->key_len);
        s->value = malloc(cap * sizeof *s->value);
        if (!s->key || !s->key_len || !s->value) {
            idset_free(s);
            return RC_NOMEM;
        }
        s->cap = cap;
    } else {
        memset(s->key, 0, s->cap * sizeof *s->key);
    }
    s->count = 0;
    return RC_OK;
}

static size_t hash(const char *p, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ULL;
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)p[i];
        h *= 0x100000001b3ULL;
    }
    return (size_t)(h ^ (h >> 29));
}

static size_t find(const struct idset *s, const char *key, size_t len)
{
    size_t mask = s->cap - 1;
    size_t i = hash(key, len) & mask;
    while (s->key[i] && (s->key_len[i] != len || memcmp(s->key[i], key, len) != 0))
        i = (i + 1) & mask;
    return i;
}

size_t idset_put(struct idset *s, const char *key, size_t len, size_t value)
{
    assert(s->cap && 2 * (s->count + 1) <= s->cap);
    size_t i = find(s, key, len);
    if (s->key[i])
        return s->value[i];
    s->key[i] = key;
    s->key_len[i] = len;
    s->value[i] = value;
    s->count++;
    return value;
}

size_t idset_get(const struct idset *s, const char *key, size_t len)
{
    if (!s->cap)
        return (size_t)-1;
    size_t i = find(s, key, len);
    return s->key[i] ? s->value[i] : (size_t)-1;
}

void idset_free(struct idset *s)
{
    free(s->key);
    free(s->key_len);
    free(s->value);
    idset_init(s);
}
