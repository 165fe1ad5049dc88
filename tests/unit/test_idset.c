/* test_idset.c - SipHash-2-4 against the reference test vectors, and the id
 * set: repeats, lookups, reuse, and ids built to collide under the unkeyed
 * hash the set once used spreading out under the keyed one. */
#include "check.h"

#include <stdint.h>

#include "../rig/fnv_slot.h"
#include "idset.h"
#include "siphash.h"

/* The SipHash-2-4 paper's vectors (the reference implementation's
 * vectors.h, read as little-endian 64-bit integers): key 00 01 .. 0f,
 * message 00 01 .. (n-1) for n = 0 .. 63. */
static const uint64_t vectors[64] = {
    0x726fdb47dd0e0e31ULL, 0x74f839c593dc67fdULL, 0x0d6c8009d9a94f5aULL, 0x85676696d7fb7e2dULL,
    0xcf2794e0277187b7ULL, 0x18765564cd99a68dULL, 0xcbc9466e58fee3ceULL, 0xab0200f58b01d137ULL,
    0x93f5f5799a932462ULL, 0x9e0082df0ba9e4b0ULL, 0x7a5dbbc594ddb9f3ULL, 0xf4b32f46226bada7ULL,
    0x751e8fbc860ee5fbULL, 0x14ea5627c0843d90ULL, 0xf723ca908e7af2eeULL, 0xa129ca6149be45e5ULL,
    0x3f2acc7f57c29bdbULL, 0x699ae9f52cbe4794ULL, 0x4bc1b3f0968dd39cULL, 0xbb6dc91da77961bdULL,
    0xbed65cf21aa2ee98ULL, 0xd0f2cbb02e3b67c7ULL, 0x93536795e3a33e88ULL, 0xa80c038ccd5ccec8ULL,
    0xb8ad50c6f649af94ULL, 0xbce192de8a85b8eaULL, 0x17d835b85bbb15f3ULL, 0x2f2e6163076bcfadULL,
    0xde4daaaca71dc9a5ULL, 0xa6a2506687956571ULL, 0xad87a3535c49ef28ULL, 0x32d892fad841c342ULL,
    0x7127512f72f27cceULL, 0xa7f32346f95978e3ULL, 0x12e0b01abb051238ULL, 0x15e034d40fa197aeULL,
    0x314dffbe0815a3b4ULL, 0x027990f029623981ULL, 0xcadcd4e59ef40c4dULL, 0x9abfd8766a33735cULL,
    0x0e3ea96b5304a7d0ULL, 0xad0c42d6fc585992ULL, 0x187306c89bc215a9ULL, 0xd4a60abcf3792b95ULL,
    0xf935451de4f21df2ULL, 0xa9538f0419755787ULL, 0xdb9acddff56ca510ULL, 0xd06c98cd5c0975ebULL,
    0xe612a3cb9ecba951ULL, 0xc766e62cfcadaf96ULL, 0xee64435a9752fe72ULL, 0xa192d576b245165aULL,
    0x0a8787bf8ecb74b2ULL, 0x81b3e73d20b49b6fULL, 0x7fa8220ba3b2eceaULL, 0x245731c13ca42499ULL,
    0xb78dbfaf3a8d83bdULL, 0xea1ad565322a1a0bULL, 0x60e61c23a3795013ULL, 0x6606d7e446282b93ULL,
    0x6ca4ecb15c5f91e1ULL, 0x9f626da15c9625f3ULL, 0xe51b38608ef25f57ULL, 0x958a324ceb064572ULL,
};

static void test_siphash_vectors(void)
{
    uint8_t key[16], msg[64];

    for (int i = 0; i < 16; i++)
        key[i] = (uint8_t)i;
    for (int i = 0; i < 64; i++)
        msg[i] = (uint8_t)i;
    for (size_t n = 0; n < 64; n++) {
        check_case("SipHash-2-4 reference vector, %zu-byte message", n);
        /* The message ends at an unmapped page: no byte past it is read. */
        const char *m = check_guard(msg, n);
        CHECK(siphash24(key, m, n) == vectors[n]);
    }
}

static void test_idset(void)
{
    enum { N = 20000, LEN = 12 };
    static char ids[N][LEN];
    struct idset s;

    idset_init(&s);
    check_case("put, repeat and get");
    CHECK_EQ_INT(idset_get(&s, "a", 1), -1);
    CHECK_EQ_INT(idset_reset(&s, 4), RC_OK);
    CHECK_EQ_INT(idset_put(&s, "m1", 2, 0), 0);
    CHECK_EQ_INT(idset_put(&s, "m2", 2, 1), 1);
    CHECK_EQ_INT(idset_put(&s, "m1", 2, 2), 0);
    CHECK_EQ_INT(idset_put(&s, "m", 1, 3), 3);
    CHECK_EQ_INT(idset_get(&s, "m2", 2), 1);
    CHECK_EQ_INT(idset_get(&s, "m3", 2), -1);
    CHECK_EQ_INT(idset_get(&s, "m1x", 2), 0);
    CHECK_EQ_INT(s.count, 3);
    check_case("reset empties the set and keeps the key");
    uint8_t key[16];
    memcpy(key, s.key, sizeof key);
    CHECK_EQ_INT(idset_reset(&s, 2), RC_OK);
    CHECK_EQ_INT(idset_get(&s, "m1", 2), -1);
    CHECK(memcmp(key, s.key, sizeof key) == 0);

    /* Ids that the former FNV-1a set put in its first 256 of 32,768 slots: one
     * run of 20,000 that every insert walked (quadratic).  Under the keyed
     * hash they spread like any others. */
    uint64_t x = 1;
    for (size_t i = 0; i < N;) {
        x = x * 6364136223846793005ULL + 1442695040888963407ULL;
        snprintf(ids[i], LEN, "%011llx", (unsigned long long)(x >> 20));
        if (fnv_slot(ids[i], LEN, 15) < 256)
            i++;
    }
    check_case("%d ids colliding under FNV-1a: each found, no long run of slots", N);
    CHECK_EQ_INT(idset_reset(&s, N), RC_OK);
    CHECK_EQ_INT(s.cap, 32768);
    for (size_t i = 0; i < N; i++)
        CHECK_EQ_INT(idset_put(&s, ids[i], LEN, i), i);
    for (size_t i = 0; i < N; i++)
        CHECK_EQ_INT(idset_get(&s, ids[i], LEN), i);
    size_t run = 0, longest = 0;
    for (size_t i = 0; i < 2 * s.cap; i++) {
        run = s.slot[i % s.cap].key ? run + 1 : 0;
        longest = run > longest ? run : longest;
    }
    /* At 61% load a random hash's longest run is a few hundred at most. */
    CHECK(longest < 2000);
    check_case("reserve grows the set and keeps its keys and values");
    struct idset g;
    idset_init(&g);
    CHECK_EQ_INT(idset_reset(&g, 2), RC_OK);
    CHECK_EQ_INT(idset_put(&g, ids[0], LEN, 7), 7);
    CHECK_EQ_INT(idset_put(&g, ids[1], LEN, 3), 3);
    CHECK_EQ_INT(g.cap, 16);
    for (size_t i = 2; i < N; i++) {
        if (g.count + 1 >= g.cap * 3 / 4)
            CHECK_EQ_INT(idset_reserve(&g, 2 * (g.count + 1)), RC_OK);
        CHECK_EQ_INT(idset_put(&g, ids[i], LEN, i), i);
    }
    CHECK(g.cap >= 32768 && g.cap <= 65536);
    CHECK_EQ_INT(g.count, N);
    CHECK_EQ_INT(idset_get(&g, ids[0], LEN), 7);
    CHECK_EQ_INT(idset_get(&g, ids[1], LEN), 3);
    for (size_t i = 2; i < N; i++)
        CHECK_EQ_INT(idset_get(&g, ids[i], LEN), i);
    CHECK_EQ_INT(idset_put(&g, ids[5], LEN, 99), 5);
    size_t cap = g.cap;
    CHECK_EQ_INT(idset_reserve(&g, 10), RC_OK); /* never shrinks */
    CHECK_EQ_INT(g.cap, cap);
    CHECK_EQ_INT(idset_get(&g, ids[N - 1], LEN), N - 1);
    idset_free(&g);
    check_case("two sets draw different keys");
    struct idset t;
    idset_init(&t);
    CHECK_EQ_INT(idset_reset(&t, 1), RC_OK);
    CHECK(memcmp(s.key, t.key, sizeof s.key) != 0);
    idset_free(&t);
    idset_free(&s);
    check_case("free wipes the key");
    static const uint8_t zero[16];
    CHECK(memcmp(s.key, zero, sizeof zero) == 0 && !s.keyed && !s.slot);
}

int main(void)
{
    test_siphash_vectors();
    test_idset();
    return check_finish();
}
