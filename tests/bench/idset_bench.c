/* idset_bench.c - time to put 100,000 message ids into the id set, for plain
 * ids (random UUIDs, as SQS makes them) and for ids built to collide under
 * the unkeyed FNV-1a hash the set once used (its index for a set of 100,000:
 * FNV-1a 64, folded h ^ h >> 29, low 18 bits).  Against FNV those ids all
 * land in 1,024 of 262,144 slots, one run that every insert walks; a keyed
 * hash must not care.  Prints one JSON line: best of 5 runs, in CPU ms (the
 * process's CPU time, so a busy machine does not inflate it).
 *
 *   idset_bench [N]     N ids of each kind (default 100000) */
#define _DEFAULT_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../rig/fnv_slot.h"
#include "idset.h"

#define ID_LEN 36

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* A small fixed generator, so every run measures the same ids. */
static uint64_t rng = 0x9e3779b97f4a7c15ULL;
static uint64_t next_rand(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

/* A UUID-shaped id (8-4-4-4-12 lower-case hex) into out[ID_LEN]. */
static void make_uuid(char *out)
{
    static const char hex[] = "0123456789abcdef";
    uint64_t a = next_rand(), b = next_rand();
    for (int i = 0, k = 0; i < ID_LEN; i++) {
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            out[i] = '-';
            continue;
        }
        out[i] = hex[(k < 16 ? a >> (4 * k) : b >> (4 * (k - 16))) & 15];
        k++;
    }
}

/* Best of 5: reset the set for n ids, put them all.  Returns ms. */
static double time_puts(const char *ids, size_t n)
{
    double best = 1e300;
    struct idset s;
    idset_init(&s);
    for (int run = 0; run < 5; run++) {
        double t0 = now_ms();
        if (idset_reset(&s, n) != RC_OK) {
            fprintf(stderr, "idset_reset failed\n");
            exit(1);
        }
        for (size_t i = 0; i < n; i++)
            if (idset_put(&s, ids + i * ID_LEN, ID_LEN, i) != i) {
                fprintf(stderr, "id %zu reported as a repeat\n", i);
                exit(1);
            }
        double dt = now_ms() - t0;
        best = dt < best ? dt : best;
    }
    idset_free(&s);
    return best;
}

int main(int argc, char **argv)
{
    size_t n = argc > 1 ? strtoul(argv[1], NULL, 10) : 100000;
    char *plain = malloc(n * ID_LEN), *hostile = malloc(n * ID_LEN);
    unsigned long long tries = 0;

    if (!plain || !hostile)
        return 1;
    for (size_t i = 0; i < n; i++)
        make_uuid(plain + i * ID_LEN);
    /* Random UUIDs kept only when FNV puts them in the first 1,024 slots. */
    for (size_t i = 0; i < n;) {
        make_uuid(hostile + i * ID_LEN);
        tries++;
        if (fnv_slot(hostile + i * ID_LEN, ID_LEN, 18) < 1024)
            i++;
    }
    double t_plain = time_puts(plain, n), t_hostile = time_puts(hostile, n);
    printf("{\"ids\":%zu,\"plain_ms\":%.2f,\"fnv_colliding_ms\":%.2f,\"generator_tries\":%llu}\n",
           n, t_plain, t_hostile, tries);
    free(plain);
    free(hostile);
    return 0;
}
