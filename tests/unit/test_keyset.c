/* test_keyset.c - the masking keyset (keyset.c): the two sources' formats
 * (128 hex characters under MASKING_KEY_ID, or a keyset document), the
 * MASKING_KEYS_RETIRED list, the checks that make a set consistent, and
 * the key a stored value's prefix picks for unmasking and re-masking.
 * Table-driven: each row is a source, a MASKING_KEY_ID setting and a
 * retired list, with the set expected or the words the error must hold; no
 * error may show a piece of any key. */
#include "check.h"

#include "keyset.h"
#include "mask.h"

/* Three distinct keys in hex; $A, $B and $C in a row's text stand for them. */
static char hex_a[2 * MASK_KEY_BYTES + 1], hex_b[2 * MASK_KEY_BYTES + 1],
    hex_c[2 * MASK_KEY_BYTES + 1];

/* Fills the three keys: byte i of key k is (i * 7 + k * 61 + 3) mod 256. */
static void make_keys(void)
{
    char *hex[3] = {hex_a, hex_b, hex_c};
    for (int k = 0; k < 3; k++)
        for (int i = 0; i < MASK_KEY_BYTES; i++)
            snprintf(hex[k] + 2 * i, 3, "%02x", (unsigned)(i * 7 + k * 61 + 3) & 0xffu);
}

/* Copies template t into out (cap bytes) with $A, $B, $C replaced by the
 * keys and $Z by a key one character short; NULL stays NULL. */
static const char *expand(const char *t, char *out, size_t cap)
{
    size_t o = 0;
    if (!t)
        return NULL;
    for (const char *p = t; *p && o + 2 * MASK_KEY_BYTES + 1 < cap; p++) {
        const char *key = NULL;
        size_t len = 2 * MASK_KEY_BYTES;
        if (p[0] == '$' && (p[1] == 'A' || p[1] == 'B' || p[1] == 'C' || p[1] == 'Z')) {
            key = p[1] == 'B' ? hex_b : p[1] == 'C' ? hex_c : hex_a;
            len -= p[1] == 'Z';
            p++;
        }
        if (key) {
            memcpy(out + o, key, len);
            o += len;
        } else {
            out[o++] = *p;
        }
    }
    out[o] = '\0';
    return out;
}

/* Returns 1 when text shows 12 or more consecutive characters of any key. */
static int shows_key(const char *text)
{
    const char *keys[3] = {hex_a, hex_b, hex_c};
    for (int k = 0; k < 3; k++)
        for (size_t i = 0; i + 12 <= 2 * MASK_KEY_BYTES; i++) {
            char piece[13];
            memcpy(piece, keys[k] + i, 12);
            piece[12] = '\0';
            if (strstr(text, piece))
                return 1;
        }
    return 0;
}

/* One set to build: the source, MASKING_KEY_ID, MASKING_KEYS_RETIRED
 * (templates), and either the ids expected ("k2 k1": current first, then the
 * retired in order) with the current key's letter, or words of the error. */
struct load_case {
    const char *name;
    const char *source;
    const char *key_id; /* NULL: unset */
    const char *retired;
    const char *ids;   /* NULL: the load must fail */
    char current_key;  /* 'A', 'B' or 'C': whose bytes the current key has */
    const char *error; /* words the error must hold */
};

static const struct load_case load_cases[] = {
    {"plain hex, id unset", "$A", NULL, NULL, "k1", 'A', NULL},
    {"plain hex, explicit id", "$B", "Prod2025", NULL, "Prod2025", 'B', NULL},
    {"plain hex and one retired", "$B", "k2", "k1=$A", "k2 k1", 'B', NULL},
    {"two retired, white space and newlines around items", "$C", "k3", " k1=$A ,\n\tk2=$B\n",
     "k3 k1 k2", 'C', NULL},
    {"document", "{\"current\":\"k2\",\"keys\":{\"k1\":\"$A\",\"k2\":\"$B\"}}", NULL, NULL, "k2 k1",
     'B', NULL},
    {"document, current listed first, white space",
     "{ \"keys\" : { \"k2\" : \"$B\" , \"k1\" : \"$A\" } ,\n \"current\" : \"k2\" }\n", NULL, NULL,
     "k2 k1", 'B', NULL},
    {"document of one key", "{\"current\":\"only\",\"keys\":{\"only\":\"$C\"}}", NULL, NULL, "only",
     'C', NULL},
    {"document: MASKING_KEY_ID is not consulted",
     "{\"current\":\"k2\",\"keys\":{\"k1\":\"$A\",\"k2\":\"$B\"}}", "k1", NULL, "k2 k1", 'B', NULL},
    {"document and a retired list", "{\"current\":\"k3\",\"keys\":{\"k3\":\"$C\",\"k2\":\"$B\"}}",
     NULL, "k1=$A", "k3 k2 k1", 'C', NULL},

    {"plain hex one short", "$Z", NULL, NULL, NULL, 0, "128 hexadecimal characters, got 127"},
    {"plain hex with a bad character", "$Ag", NULL, NULL, NULL, 0, "128 hexadecimal"},
    {"plain hex with a trailing newline", "$A\n", NULL, NULL, NULL, 0, "got 129"},
    {"empty MASKING_KEY_ID", "$A", "", NULL, NULL, 0, "MASKING_KEY_ID must be"},
    {"key pasted as the key id", "$A", "$A", NULL, NULL, 0, "MASKING_KEY_ID must be"},
    {"retired: the current id", "$A", "k1", "k1=$B", NULL, 0,
     "item 1: key id \"k1\" is the current key's"},
    {"retired: an id twice", "$A", "k1", "k2=$B,k2=$C", NULL, 0,
     "item 2: key id \"k2\" appears twice"},
    {"retired: a bad id", "$A", NULL, "k-2=$B", NULL, 0, "item 1: the key id must be 1 to 8"},
    {"retired: a 9-character id", "$A", NULL, "k2=$B,abcdefghi=$C", NULL, 0,
     "item 2: the key id must be"},
    {"retired: an empty id", "$A", NULL, "=$B", NULL, 0, "item 1: the key id must be"},
    {"retired: no '='", "$A", NULL, "$B", NULL, 0, "item 1 is not id=<128"},
    {"retired: a trailing comma", "$A", NULL, "k2=$B,", NULL, 0, "item 2 is empty"},
    {"retired: an empty item", "$A", NULL, "k2=$B,,k3=$C", NULL, 0, "item 2 is empty"},
    {"retired: white space only", "$A", NULL, " \n", NULL, 0, "item 1 is empty"},
    {"retired: bad hex in item 2", "$A", NULL, "k2=$B,k3=$Z", NULL, 0,
     "item 2 (key id \"k3\"): the masking key must be 128 hexadecimal characters, got 127"},
    {"retired: a key with a space inside", "$A", NULL, "k2 =$B", NULL, 0,
     "item 1: the key id must be"},
    {"retired: 16 keys in all", "$A", NULL,
     "a=$B,b=$B,c=$B,d=$B,e=$B,f=$B,g=$B,h=$B,i=$B,j=$B,k=$B,l=$B,m=$B,n=$B,o=$B", "k1", 'A', NULL},
    {"retired: 17 keys in all", "$A", NULL,
     "a=$B,b=$B,c=$B,d=$B,e=$B,f=$B,g=$B,h=$B,i=$B,j=$B,k=$B,l=$B,m=$B,n=$B,o=$B,p=$B", NULL, 0,
     "item 16: more than 16 keys"},
    {"document: not JSON", "{\"current\":", NULL, NULL, NULL, 0, "not a JSON object"},
    {"document: no current", "{\"keys\":{\"k1\":\"$A\"}}", NULL, NULL, NULL, 0,
     "\"current\" must be a key id"},
    {"document: current is a number", "{\"current\":2,\"keys\":{\"k1\":\"$A\"}}", NULL, NULL, NULL,
     0, "\"current\" must be a key id"},
    {"document: current is not a key id", "{\"current\":\"k-2\",\"keys\":{\"k1\":\"$A\"}}", NULL,
     NULL, NULL, 0, "\"current\" must be a key id"},
    {"document: current names no key", "{\"current\":\"k3\",\"keys\":{\"k1\":\"$A\"}}", NULL, NULL,
     NULL, 0, "\"current\" (\"k3\") names no key"},
    {"document: no keys", "{\"current\":\"k1\"}", NULL, NULL, NULL, 0,
     "\"keys\" must be a non-empty object"},
    {"document: keys empty", "{\"current\":\"k1\",\"keys\":{}}", NULL, NULL, NULL, 0,
     "\"keys\" must be a non-empty object"},
    {"document: keys an array", "{\"current\":\"k1\",\"keys\":[\"$A\"]}", NULL, NULL, NULL, 0,
     "\"keys\" must be a non-empty object"},
    {"document: a key id twice", "{\"current\":\"k1\",\"keys\":{\"k1\":\"$A\",\"k1\":\"$B\"}}",
     NULL, NULL, NULL, 0, "member 2: key id \"k1\" appears twice"},
    {"document: a retired id twice",
     "{\"current\":\"k1\",\"keys\":{\"k2\":\"$A\",\"k1\":\"$B\",\"k2\":\"$C\"}}", NULL, NULL, NULL,
     0, "member 3: key id \"k2\" appears twice"},
    {"document: another member", "{\"current\":\"k1\",\"keys\":{\"k1\":\"$A\"},\"note\":1}", NULL,
     NULL, NULL, 0, "a member other than"},
    {"document: current twice", "{\"current\":\"k1\",\"current\":\"k1\",\"keys\":{\"k1\":\"$A\"}}",
     NULL, NULL, NULL, 0, "holds \"current\" twice"},
    {"document: a key that is not a string", "{\"current\":\"k1\",\"keys\":{\"k1\":7}}", NULL, NULL,
     NULL, 0, "member 1 (key id \"k1\") is not a string"},
    {"document: bad hex", "{\"current\":\"k1\",\"keys\":{\"k1\":\"$A\",\"k0\":\"$Z\"}}", NULL, NULL,
     NULL, 0, "member 2 (key id \"k0\"): the masking key must be 128"},
    {"document: a bad key id", "{\"current\":\"k1\",\"keys\":{\"k 0\":\"$B\",\"k1\":\"$A\"}}", NULL,
     NULL, NULL, 0, "member 1: the key id must be"},
    {"document and a retired list naming its current",
     "{\"current\":\"k2\",\"keys\":{\"k2\":\"$B\"}}", NULL, "k2=$A", NULL, 0,
     "is the current key's"},
    {"document and a retired list naming one of its keys",
     "{\"current\":\"k2\",\"keys\":{\"k2\":\"$B\",\"k1\":\"$C\"}}", NULL, "k1=$A", NULL, 0,
     "key id \"k1\" appears twice"},
};

/* Returns 1 when the key k masks like a key made from hex under the same id
 * (so it holds those bytes). */
static int same_key(const struct mask_key *k, const char *hex)
{
    char err[ERR_LEN], a[MASK_OUTPUT_MAX], b[MASK_OUTPUT_MAX];
    size_t na = 0, nb = 0;
    struct mask_key *ref = mask_key_new(hex, strlen(hex), mask_key_id(k), err);
    int same = ref && mask_value(k, "593-47-5928", 11, a, &na) == RC_OK &&
               mask_value(ref, "593-47-5928", 11, b, &nb) == RC_OK && na == nb &&
               memcmp(a, b, na) == 0;
    mask_key_free(ref);
    return same;
}

static void test_load(void)
{
    static char src[4096], id[512], ret[4096];
    for (size_t i = 0; i < sizeof load_cases / sizeof load_cases[0]; i++) {
        const struct load_case *c = &load_cases[i];
        char err[ERR_LEN] = "";
        const char *s = expand(c->source, src, sizeof src);
        struct keyset *ks;

        check_case("keyset_load: %s", c->name);
        ks = keyset_load("MASKING_KEY", s, strlen(s), expand(c->key_id, id, sizeof id),
                         expand(c->retired, ret, sizeof ret), err);
        if (c->ids) {
            char got[200] = "";
            CHECK(ks != NULL);
            if (!ks) {
                printf("#   error: %s\n", err);
                continue;
            }
            for (size_t k = 0; k < keyset_count(ks); k++) {
                size_t used = strlen(got);
                snprintf(got + used, sizeof got - used, "%s%s", k ? " " : "",
                         mask_key_id(keyset_key(ks, k)));
            }
            if (strcmp(c->name, "retired: 16 keys in all") == 0)
                CHECK_EQ_INT(keyset_count(ks), KEYSET_MAX);
            else
                CHECK_EQ_STR(got, c->ids);
            CHECK(keyset_current(ks) == keyset_key(ks, 0));
            CHECK(same_key(keyset_current(ks), c->current_key == 'B'   ? hex_b
                                               : c->current_key == 'C' ? hex_c
                                                                       : hex_a));
        } else {
            CHECK(ks == NULL);
            CHECK(strstr(err, c->error) != NULL);
            if (!strstr(err, c->error))
                printf("#   error: %s\n#   want:  %s\n", err, c->error);
            CHECK(strncmp(err, "MASKING_KEY", 11) == 0);
        }
        CHECK(!shows_key(err));
        keyset_free(ks);
    }
}

static void test_check_retired(void)
{
    static char ret[4096];
    static const struct {
        const char *retired, *error; /* error NULL: accepted */
    } cases[] = {
        {"k1=$A", NULL},
        {"k1=$A, k2=$B", NULL},
        {"k1=$A,k1=$B", "item 2: key id \"k1\" appears twice"},
        {"k1=$Z", "item 1 (key id \"k1\"): the masking key must be 128"},
        {"k1", "item 1 is not id="},
        {"", NULL}, /* nothing: the empty list has no item to refuse */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char err[ERR_LEN] = "";
        check_case("keyset_check_retired: \"%s\"", cases[i].retired);
        const char *r = expand(cases[i].retired, ret, sizeof ret);
        rc_t rc = *r ? keyset_check_retired(r, err) : RC_OK;
        if (cases[i].error) {
            CHECK_EQ_INT(rc, RC_CONFIG);
            CHECK(strstr(err, cases[i].error) != NULL);
        } else {
            CHECK_EQ_INT(rc, RC_OK);
        }
        CHECK(!shows_key(err));
    }
}

/* Masks v with a fresh key of hex under id into out (MASK_OUTPUT_MAX). */
static void mask_with(const char *hex, const char *id, const char *v, char *out)
{
    char err[ERR_LEN];
    size_t n = 0;
    struct mask_key *k = mask_key_new(hex, strlen(hex), id, err);
    if (!k || mask_value(k, v, strlen(v), out, &n) != RC_OK)
        abort();
    mask_key_free(k);
}

/* Bodies of 42 and 43 base64url characters (43: the shortest masked value's). */
#define B42 "abcdefghijklmnopqrstuvwxyzABCDEFGHIJ0123-_"
#define B43 B42 "Z"

static void test_classify_unmask_remask(void)
{
    static char ret[1024];
    char err[ERR_LEN], under_k1[MASK_OUTPUT_MAX], under_k2[MASK_OUTPUT_MAX];
    char under_k9[MASK_OUTPUT_MAX], out[MASK_OUTPUT_MAX], plain[MASK_INPUT_MAX + 1];
    char wrong_key_k1[MASK_OUTPUT_MAX];
    size_t n = 0;
    const struct mask_key *k;
    /* Current k2 (key B), retired k1 (key A) and k3 (key C). */
    struct keyset *ks = keyset_load("MASKING_KEY", hex_b, strlen(hex_b), "k2",
                                    expand("k1=$A,k3=$C", ret, sizeof ret), err);

    check_case("keyset: current k2, retired k1 and k3");
    CHECK(ks != NULL);
    if (!ks)
        return;
    mask_with(hex_a, "k1", "199.172.111.135", under_k1);
    mask_with(hex_b, "k2", "199.172.111.135", under_k2);
    mask_with(hex_a, "k9", "199.172.111.135", under_k9);
    mask_with(hex_c, "k1", "199.172.111.135", wrong_key_k1);

    static const struct {
        const char *value;
        enum keyset_class want;
        const char *key_id; /* the key classify hands back, or NULL */
    } classes[] = {
        {"k2:" B43, KEYSET_CURRENT, "k2"},
        {"k1:" B43, KEYSET_RETIRED, "k1"},
        {"k3:" B43 "AAAA", KEYSET_RETIRED, "k3"},
        {"k9:" B43, KEYSET_UNKNOWN_ID, NULL},
        {"K2:" B43, KEYSET_UNKNOWN_ID, NULL},
        {"k22:" B43, KEYSET_UNKNOWN_ID, NULL},
        {"abcdefgh:" B43, KEYSET_UNKNOWN_ID, NULL},
        {"abcdefghi:" B43, KEYSET_NOT_MASKED, NULL},
        {"k2:" B42, KEYSET_NOT_MASKED, NULL},
        {"k2:" B42 "=", KEYSET_NOT_MASKED, NULL},
        {"k2:" B42 "+", KEYSET_NOT_MASKED, NULL},
        {"k1:" B42 ".", KEYSET_NOT_MASKED, NULL},
        {"k2:", KEYSET_NOT_MASKED, NULL},
        {"199.172.111.135", KEYSET_NOT_MASKED, NULL},
        {"2001:db8::1", KEYSET_NOT_MASKED, NULL},
        {"2001:0db8:0000:0000:0000:ff00:0042:8329", KEYSET_NOT_MASKED, NULL},
        {":" B43, KEYSET_NOT_MASKED, NULL},
        {"k2", KEYSET_NOT_MASKED, NULL},
        {"", KEYSET_NOT_MASKED, NULL},
        {"k-2:" B43, KEYSET_NOT_MASKED, NULL},
    };
    for (size_t i = 0; i < sizeof classes / sizeof classes[0]; i++) {
        const char *v = classes[i].value;
        check_case("keyset_classify \"%s\"", v);
        /* Guarded: classify must not read past the value. */
        CHECK_EQ_INT(keyset_classify(ks, check_guard(v, strlen(v)), strlen(v), &k),
                     classes[i].want);
        CHECK_EQ_STR(k ? mask_key_id(k) : NULL, classes[i].key_id);
    }

    check_case("keyset_unmask: under the current key and under a retired one");
    CHECK_EQ_INT(keyset_unmask(ks, under_k2, strlen(under_k2), plain, sizeof plain, &n, err),
                 RC_OK);
    CHECK_EQ_STR(plain, "199.172.111.135");
    CHECK_EQ_INT(keyset_unmask(ks, under_k1, strlen(under_k1), plain, sizeof plain, &n, err),
                 RC_OK);
    CHECK_EQ_STR(plain, "199.172.111.135");

    check_case("keyset_unmask: an id the set lacks is named");
    CHECK_EQ_INT(keyset_unmask(ks, under_k9, strlen(under_k9), plain, sizeof plain, &n, err),
                 RC_INVALID);
    CHECK(strstr(err, "\"k9\"") != NULL && strstr(err, "not in the keyset") != NULL);

    check_case("keyset_unmask: a retired id's value made with another key fails");
    CHECK_EQ_INT(
        keyset_unmask(ks, wrong_key_k1, strlen(wrong_key_k1), plain, sizeof plain, &n, err),
        RC_CRYPTO);

    check_case("keyset_unmask: not a masked value");
    CHECK_EQ_INT(keyset_unmask(ks, "1.2.3.4", 7, plain, sizeof plain, &n, err), RC_INVALID);

    check_case("keyset_remask: a retired key's value becomes the current key's");
    CHECK_EQ_INT(keyset_remask(ks, under_k1, strlen(under_k1), out, &n, err), RC_OK);
    CHECK_EQ_STR(out, under_k2);
    CHECK_EQ_INT(n, strlen(under_k2));

    check_case("keyset_remask: the current key's value is refused, never masked twice");
    CHECK_EQ_INT(keyset_remask(ks, under_k2, strlen(under_k2), out, &n, err), RC_INVALID);

    check_case("keyset_remask: unknown id, not masked, altered");
    CHECK_EQ_INT(keyset_remask(ks, under_k9, strlen(under_k9), out, &n, err), RC_INVALID);
    CHECK_EQ_INT(keyset_remask(ks, "1.2.3.4", 7, out, &n, err), RC_INVALID);
    CHECK_EQ_INT(keyset_remask(ks, wrong_key_k1, strlen(wrong_key_k1), out, &n, err), RC_CRYPTO);
    under_k1[10] = under_k1[10] == 'A' ? 'B' : 'A';
    CHECK_EQ_INT(keyset_remask(ks, under_k1, strlen(under_k1), out, &n, err), RC_CRYPTO);
    keyset_free(ks);
}

int main(void)
{
    make_keys();
    test_load();
    test_check_retired();
    test_classify_unmask_remask();
    keyset_free(NULL);
    return check_finish();
}
