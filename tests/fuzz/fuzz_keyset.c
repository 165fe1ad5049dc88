/* fuzz_keyset.c - libFuzzer target: the keyset's parsers (keyset.c), as an
 * operator's typo or a mangled secret could shape their input.
 *
 * The first byte picks what the rest is (its value modulo 3): a MASKING_KEY
 * value (a keyset document or hex) under MASKING_KEY_ID "k1"; a
 * MASKING_KEYS_RETIRED list next to a fixed current key; or a stored value,
 * classified, unmasked and re-masked under a fixed set (current k1, retired
 * k0).  Aborts when a
 * result breaks what the callers rely on: a set loads exactly when no error
 * was written; a loaded set has 1 to KEYSET_MAX keys with valid, distinct
 * ids, its current key first; an error never holds 12 or more consecutive
 * hexadecimal characters of the input (a piece of a key); and every value
 * classifies the same way twice, RETIRED or CURRENT only with the key of its
 * prefix.  Seeds: tests/fuzz/corpus/keyset/. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "keyset.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* A fixed current key for the list mode: 128 hex characters. */
static const char fixed_hex[] = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
                                "202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f";

/* The list of the third mode: k0, another fixed key. */
static const char retired_fixed[] =
    "k0=404142434445464748494a4b4c4d4e4f505152535455565758595a5b5c5d5e5f"
    "606162636465666768696a6b6c6d6e6f707172737475767778797a7b7c7d7e7f";

/* Returns 1 when a run of 12 or more hex characters of in[0..n) appears in
 * err. */
static int err_quotes_hex(const char *err, const char *in, size_t n)
{
    size_t run = 0;
    for (size_t i = 0; i <= n; i++) {
        char c = i < n ? in[i] : '\0';
        int hex = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
        if (hex) {
            run++;
            continue;
        }
        if (run >= 12) {
            char piece[13];
            piece[12] = '\0';
            for (size_t k = i - run; k + 12 <= i; k++) {
                memcpy(piece, in + k, 12);
                if (strstr(err, piece))
                    return 1;
            }
        }
        run = 0;
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[ERR_LEN] = "";
    char *text;
    struct keyset *ks;

    if (size < 1)
        return 0;
    text = malloc(size);
    if (!text)
        return 0;
    memcpy(text, data + 1, size - 1);
    text[size - 1] = '\0';
    if (data[0] % 3 == 0)
        ks = keyset_load("MASKING_KEY", text, size - 1, "k1", NULL, err);
    else if (data[0] % 3 == 1)
        ks = keyset_load("MASKING_KEY", fixed_hex, strlen(fixed_hex), "k1", text, err);
    else
        ks = keyset_load("MASKING_KEY", fixed_hex, strlen(fixed_hex), "k1", retired_fixed, err);
    if (!ks != (err[0] != '\0'))
        abort();
    if (err_quotes_hex(err, text, size - 1))
        abort();
    if (ks) {
        size_t n = keyset_count(ks);
        if (n < 1 || n > KEYSET_MAX || keyset_current(ks) != keyset_key(ks, 0))
            abort();
        for (size_t i = 0; i < n; i++) {
            const char *id = mask_key_id(keyset_key(ks, i));
            if (!mask_key_id_valid(id))
                abort();
            for (size_t j = 0; j < i; j++)
                if (strcmp(id, mask_key_id(keyset_key(ks, j))) == 0)
                    abort();
        }
        /* The input as a stored value: classified alike twice, and a key only
         * for a prefix that names it. */
        const struct mask_key *k1 = NULL, *k2 = NULL;
        enum keyset_class c1 = keyset_classify(ks, text, size - 1, &k1);
        enum keyset_class c2 = keyset_classify(ks, text, size - 1, &k2);
        if (c1 != c2 || k1 != k2 || (!k1) != (c1 == KEYSET_UNKNOWN_ID || c1 == KEYSET_NOT_MASKED))
            abort();
        char out[MASK_OUTPUT_MAX];
        size_t len = 0;
        rc_t rc = keyset_remask(ks, text, size - 1, out, &len, err);
        if (rc == RC_OK && (c1 != KEYSET_RETIRED || len != strlen(out) ||
                            keyset_classify(ks, out, len, &k2) != KEYSET_CURRENT))
            abort();
        rc = keyset_unmask(ks, text, size - 1, out, sizeof out, &len, err);
        if (rc == RC_OK && (c1 != KEYSET_RETIRED && c1 != KEYSET_CURRENT))
            abort();
        if (k1) {
            size_t idn = strlen(mask_key_id(k1));
            if (size - 1 <= idn || memcmp(text, mask_key_id(k1), idn) != 0 || text[idn] != ':')
                abort();
            if ((c1 == KEYSET_CURRENT) != (k1 == keyset_current(ks)))
                abort();
        }
    }
    keyset_free(ks);
    free(text);
    return 0;
}
