/* test_mask.c - AES-SIV (siv.c, both implementations: OpenSSL's SIV mode and
 * S2V/CTR over AES-ECB) against RFC 5297 and each other, and masking (mask.c)
 * against docs/behaviour.md, "Masking": padding, base64url, key ids, authentication,
 * and the fast keyed-once path against a freshly keyed OpenSSL context, value
 * after value. */
#include "check.h"

#include <stdint.h>

#include <openssl/evp.h>

#include "mask.h"
#include "siv.h"

/* The key most tests use: bytes 00 01 ... 3f, and its hex form. */
static unsigned char test_key[MASK_KEY_BYTES];
static char test_key_hex[2 * MASK_KEY_BYTES + 1];

/* Decodes lowercase/uppercase hex s into out (room for strlen(s) / 2 bytes);
 * returns the byte count.  Test input is trusted: aborts on bad hex. */
static size_t unhex(const char *s, unsigned char *out)
{
    size_t n = strlen(s);
    for (size_t i = 0; i + 1 < n; i += 2) {
        unsigned v = 0;
        for (size_t j = 0; j < 2; j++) {
            char c = s[i + j];
            v <<= 4;
            if (c >= '0' && c <= '9')
                v |= (unsigned)(c - '0');
            else if (c >= 'a' && c <= 'f')
                v |= (unsigned)(c - 'a' + 10);
            else if (c >= 'A' && c <= 'F')
                v |= (unsigned)(c - 'A' + 10);
            else
                abort();
        }
        out[i / 2] = (unsigned char)v;
    }
    return n / 2;
}

/* An independent base64url (RFC 4648 section 5) without padding, written the
 * plain way (one output character per 6 bits), to check mask.c's encoder. */
static size_t b64url(const unsigned char *in, size_t n, char *out)
{
    static const char abc[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    size_t o = 0, bits = n * 8;
    for (size_t b = 0; b < bits; b += 6) {
        unsigned v = 0;
        for (size_t j = 0; j < 6; j++) {
            size_t bit = b + j;
            unsigned x = bit < bits ? (unsigned)(in[bit / 8] >> (7 - bit % 8)) & 1u : 0u;
            v = v << 1 | x;
        }
        out[o++] = abc[v];
    }
    out[o] = '\0';
    return o;
}

/* The reverse of b64url; returns the byte count, or (size_t)-1 on a bad character. */
static size_t unb64url(const char *s, size_t n, unsigned char *out)
{
    size_t o = 0;
    unsigned acc = 0, bits = 0;
    for (size_t i = 0; i < n; i++) {
        const char *p =
            strchr("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_", s[i]);
        if (!p || !s[i])
            return (size_t)-1;
        acc = (acc << 6 | (unsigned)(p - "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                                         "0123456789-_")) &
              0xffffu;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (unsigned char)(acc >> bits);
        }
    }
    return o;
}

/* The reference the fast path is checked against: OpenSSL's SIV mode in a
 * context created and keyed afresh for this one value, plain EVP calls (one
 * update with a NULL output per associated-data component), IV moved in
 * front.  Returns 1 on success. */
static int siv_fresh_ad(const char *cipher_name, const unsigned char *key, const struct siv_ad *ad,
                        size_t n_ad, const unsigned char *pt, size_t n, unsigned char *out)
{
    static const unsigned char empty[1];
    EVP_CIPHER *c = EVP_CIPHER_fetch(NULL, cipher_name, NULL);
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    int len = 0, fin = 0, ok = 0;
    if (!c || !ctx || !EVP_EncryptInit_ex2(ctx, c, key, NULL, NULL))
        goto out;
    for (size_t i = 0; i < n_ad; i++)
        if (!EVP_EncryptUpdate(ctx, NULL, &len, ad[i].n ? ad[i].p : empty, (int)ad[i].n))
            goto out;
    if (EVP_EncryptUpdate(ctx, out + 16, &len, pt, (int)n) &&
        EVP_EncryptFinal_ex(ctx, out + 16 + len, &fin) &&
        EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_GET_TAG, 16, out))
        ok = 1;
out:
    EVP_CIPHER_CTX_free(ctx);
    EVP_CIPHER_free(c);
    return ok;
}

/* siv_fresh_ad without associated data. */
static int siv_fresh(const char *cipher_name, const unsigned char *key, const unsigned char *pt,
                     size_t n, unsigned char *out)
{
    return siv_fresh_ad(cipher_name, key, NULL, 0, pt, n, out);
}

/* A small deterministic generator (xorshift64*) for test data and keys. */
static uint64_t rng_state = 0x9e3779b97f4a7c15u;

static uint64_t rng(void)
{
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 0x2545f4914f6cdd1du;
}

static void rng_fill(unsigned char *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        p[i] = (unsigned char)(rng() >> 56);
}

/* Returns 1 when p[0..n) is all zero. */
static int all_zero(const unsigned char *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i])
            return 0;
    return 1;
}

/* docs/behaviour.md, "Masking" computed from the pieces: pad, fresh SIV, b64url, prefix. */
static void mask_reference_key(const unsigned char key[MASK_KEY_BYTES], const char *id,
                               const void *v, size_t n, char *out)
{
    unsigned char pt[MASK_INPUT_MAX + 16], raw[16 + MASK_INPUT_MAX + 16];
    size_t padded = (n / 16 + 1) * 16;
    memset(pt, 0, sizeof pt);
    if (n)
        memcpy(pt, v, n);
    pt[n] = 0x80;
    if (!siv_fresh("AES-256-SIV", key, pt, padded, raw))
        abort();
    size_t o = strlen(id);
    memcpy(out, id, o);
    out[o++] = ':';
    b64url(raw, 16 + padded, out + o);
}

static void mask_reference(const char *id, const void *v, size_t n, char *out)
{
    mask_reference_key(test_key, id, v, n, out);
}

static struct mask_key *new_key(const char *id)
{
    char err[ERR_LEN];
    struct mask_key *k = mask_key_new(test_key_hex, strlen(test_key_hex), id, err);
    if (!k) {
        printf("# mask_key_new: %s\n", err);
        abort();
    }
    return k;
}

/* --- siv.c against RFC 5297 ----------------------------------------------------------------- */

static const struct siv_vector {
    const char *name, *cipher, *key;
    const char *ad[3];
    size_t n_ad;
    const char *pt, *ct;
} siv_vectors[] = {
    {"RFC 5297 A.1 deterministic, one AD",
     "AES-128-SIV",
     "fffefdfcfbfaf9f8f7f6f5f4f3f2f1f0f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff",
     {"101112131415161718191a1b1c1d1e1f2021222324252627"},
     1,
     "112233445566778899aabbccddee",
     "85632d07c6e8f37f950acd320a2ecc9340c02b9690c4dc04daef7f6afe5c"},
    {"RFC 5297 A.2 nonce-based, AD1 AD2 nonce",
     "AES-128-SIV",
     "7f7e7d7c7b7a79787776757473727170404142434445464748494a4b4c4d4e4f",
     {"00112233445566778899aabbccddeeffdeaddadadeaddadaffeeddccbbaa99887766554433221100",
      "102030405060708090a0", "09f911029d74e35bd84156c5635688c0"},
     3,
     "7468697320697320736f6d6520706c61696e7465787420746f20656e6372797074207573696e67205349562d"
     "414553",
     "7bdb6e3b432667eb06f4d14bff2fbd0fcb900f2fddbe404326601965c889bf17dba77ceb094fa663b7a3f748ba"
     "8af829ea64ad544a272e9c485b62a3fd5c0d"},
    /* The same two with 512-bit keys (AES-256-SIV, the masking cipher), from
     * the miscreant project's vector set, checked against Python's AESSIV. */
    {"AES-256-SIV deterministic, one AD",
     "AES-256-SIV",
     "fffefdfcfbfaf9f8f7f6f5f4f3f2f1f06f6e6d6c6b6a69686766656463626160f0f1f2f3f4f5f6f7f8f9fafbfc"
     "fdfeff000102030405060708090a0b0c0d0e0f",
     {"101112131415161718191a1b1c1d1e1f2021222324252627"},
     1,
     "112233445566778899aabbccddee",
     "f125274c598065cfc26b0e71575029088b035217e380cac8919ee800c126"},
    {"AES-256-SIV nonce-based, AD1 AD2 nonce",
     "AES-256-SIV",
     "7f7e7d7c7b7a797877767574737271706f6e6d6c6b6a69686766656463626160404142434445464748494a4b4c"
     "4d4e4f505152535455565758595a5b5b5d5e5f",
     {"00112233445566778899aabbccddeeffdeaddadadeaddadaffeeddccbbaa99887766554433221100",
      "102030405060708090a0", "09f911029d74e35bd84156c5635688c0"},
     3,
     "7468697320697320736f6d6520706c61696e7465787420746f20656e6372797074207573696e67205349562d"
     "414553",
     "85b8167310038db7dc4692c0281ca35868181b2762f3c24f2efa5fb80cb143516ce6c434b898a6fd8eb98a4188"
     "42f51f66fc67de43ac185a66dd72475bbb08"},
    {"no AD, one block",
     "AES-128-SIV",
     "fffefdfcfbfaf9f8f7f6f5f4f3f2f1f0f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff",
     {NULL},
     0,
     "00112233445566778899aabbccddeeff",
     "f304f912863e303d5b540e5057c7010c942ffaf45b0e5ca5fb9a56a5263bb065"},
    /* An empty AD component counts in S2V (checked against Python's AESSIV). */
    {"one empty AD component",
     "AES-128-SIV",
     "fffefdfcfbfaf9f8f7f6f5f4f3f2f1f0f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff",
     {""},
     1,
     "00000000000000000000000000000000",
     "ea043c72f14415eaa6749202cbbf9eab997b74dbe4e4eb20cc78ec3855e8e721"},
};

/* siv.c's two implementations behind one set of calls, so that the vector
 * tests run through both: a key holds one of them, the other is NULL. */
struct any_key {
    struct siv_key *ossl;    /* OpenSSL's SIV */
    struct siv_ecb_key *ecb; /* S2V and CTR over AES-ECB */
};

static const struct siv_impl {
    const char *name;
    int ecb;
} siv_impls[] = {{"OpenSSL SIV", 0}, {"over AES-ECB", 1}};

/* Makes k a key of implementation im; returns 0 (err filled) when it is refused.
 * The key length alone says AES-128, -192 or -256 to siv_ecb_key_new: the
 * cipher name is OpenSSL's. */
static int any_key_new(struct any_key *k, const struct siv_impl *im, const char *cipher,
                       const unsigned char *key, size_t n, char err[ERR_LEN])
{
    k->ossl = im->ecb ? NULL : siv_key_new(cipher, key, n, err);
    k->ecb = im->ecb ? siv_ecb_key_new(key, n, err) : NULL;
    return k->ossl || k->ecb;
}

/* Frees (and wipes) whichever key k holds. */
static void any_key_free(struct any_key *k)
{
    siv_key_free(k->ossl);
    siv_ecb_key_free(k->ecb);
}

/* siv_encrypt or siv_ecb_encrypt, as k's implementation; returns what it returns. */
static rc_t any_encrypt(const struct any_key *k, const struct siv_ad *ad, size_t n_ad,
                        const unsigned char *in, size_t n, unsigned char *out)
{
    return k->ecb ? siv_ecb_encrypt(k->ecb, ad, n_ad, in, n, out)
                  : siv_encrypt(k->ossl, ad, n_ad, in, n, out);
}

/* siv_decrypt or siv_ecb_decrypt, as k's implementation; returns what it returns. */
static rc_t any_decrypt(const struct any_key *k, const struct siv_ad *ad, size_t n_ad,
                        const unsigned char *in, size_t n, unsigned char *out)
{
    return k->ecb ? siv_ecb_decrypt(k->ecb, ad, n_ad, in, n, out)
                  : siv_decrypt(k->ossl, ad, n_ad, in, n, out);
}

static void test_siv_vectors(void)
{
    for (size_t m = 0; m < sizeof siv_impls / sizeof siv_impls[0]; m++)
        for (size_t i = 0; i < sizeof siv_vectors / sizeof siv_vectors[0]; i++) {
            const struct siv_impl *im = &siv_impls[m];
            const struct siv_vector *t = &siv_vectors[i];
            unsigned char key[64], adbuf[3][64], pt[64], ct[96], out[96], back[96];
            struct siv_ad ad[3];
            char err[ERR_LEN], got[200], want[200];
            size_t key_len = unhex(t->key, key), pt_len = unhex(t->pt, pt),
                   ct_len = unhex(t->ct, ct);
            for (size_t j = 0; j < t->n_ad; j++) {
                ad[j].n = unhex(t->ad[j], adbuf[j]);
                ad[j].p = adbuf[j];
            }

            check_case("siv %s encrypt: %s", im->name, t->name);
            struct any_key k;
            int made = any_key_new(&k, im, t->cipher, key, key_len, err);
            CHECK(made);
            if (!made)
                continue;
            CHECK_EQ_INT(ct_len, pt_len + SIV_IV_BYTES);
            CHECK_EQ_INT(any_encrypt(&k, ad, t->n_ad, pt, pt_len, out), RC_OK);
            b64url(out, ct_len, got);
            b64url(ct, ct_len, want);
            CHECK_EQ_STR(got, want);

            check_case("siv %s encrypt twice gives the same: %s", im->name, t->name);
            memset(out, 0, sizeof out);
            CHECK_EQ_INT(any_encrypt(&k, ad, t->n_ad, pt, pt_len, out), RC_OK);
            CHECK(memcmp(out, ct, ct_len) == 0);

            check_case("siv %s decrypt: %s", im->name, t->name);
            CHECK_EQ_INT(any_decrypt(&k, ad, t->n_ad, ct, ct_len, back), RC_OK);
            CHECK(memcmp(back, pt, pt_len) == 0);

            check_case("siv %s tampered IV, ciphertext or AD fails: %s", im->name, t->name);
            for (size_t bit = 0; bit < ct_len * 8; bit += 7) {
                memcpy(out, ct, ct_len);
                out[bit / 8] ^= (unsigned char)(1u << bit % 8);
                memset(back, 0x5a, sizeof back);
                CHECK_EQ_INT(any_decrypt(&k, ad, t->n_ad, out, ct_len, back), RC_CRYPTO);
                for (size_t j = 0; j < pt_len; j++)
                    if (back[j] != 0) { /* unauthenticated plaintext must be wiped */
                        CHECK(back[j] == 0);
                        break;
                    }
            }
            if (t->n_ad > 0) {
                CHECK_EQ_INT(any_decrypt(&k, ad, t->n_ad - 1, ct, ct_len, back), RC_CRYPTO);
                if (ad[0].n > 0) {
                    adbuf[0][0] ^= 1;
                    CHECK_EQ_INT(any_decrypt(&k, ad, t->n_ad, ct, ct_len, back), RC_CRYPTO);
                    adbuf[0][0] ^= 1;
                }
            }
            CHECK_EQ_INT(any_decrypt(&k, ad, t->n_ad, ct, ct_len, back), RC_OK);
            any_key_free(&k);
        }
}

static void test_siv_edges(void)
{
    unsigned char key[64] = {0}, buf[64] = {0}, out[96];
    char err[ERR_LEN] = "";

    check_case("siv_key_new refuses a key of the wrong length");
    CHECK(siv_key_new("AES-256-SIV", key, 32, err) == NULL);
    CHECK(strstr(err, "64-byte") != NULL);
    CHECK(siv_key_new("AES-128-SIV", key, 64, err) == NULL);

    check_case("siv_key_new refuses an unknown cipher");
    CHECK(siv_key_new("AES-512-SIV", key, 64, err) == NULL);
    CHECK(err[0] != '\0');

    check_case("siv refuses empty plaintext and short ciphertext");
    struct siv_key *k = siv_key_new("AES-256-SIV", key, 64, err);
    CHECK(k != NULL);
    if (!k)
        return;
    CHECK_EQ_INT(siv_encrypt(k, NULL, 0, buf, 0, out), RC_INVALID);
    CHECK_EQ_INT(siv_decrypt(k, NULL, 0, buf, 16, out), RC_INVALID);
    CHECK_EQ_INT(siv_decrypt(k, NULL, 0, buf, 0, out), RC_INVALID);
    CHECK_EQ_INT(siv_encrypt(k, NULL, 0, buf, 1, out), RC_OK);
    CHECK_EQ_INT(siv_decrypt(k, NULL, 0, out, 17, buf + 32), RC_OK);
    siv_key_free(k);
    siv_key_free(NULL);
}

/* Empty plaintexts, which RFC 5297 allows and OpenSSL's SIV mode refuses,
 * through the ECB path: computed with the RFC 5297 implementation in
 * tests/integration/test_mask_crosscheck.py and Python's AESSIV (they agree). */
static void test_siv_ecb_empty(void)
{
    static const struct {
        const char *name, *key, *ad[2];
        size_t n_ad;
        const char *iv;
    } rows[] = {
        {"AES-128, no AD",
         "fffefdfcfbfaf9f8f7f6f5f4f3f2f1f0f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff",
         {NULL},
         0,
         "f2007a5beb2b8900c588a7adf599f172"},
        {"AES-256, AD \"abc\" and an empty AD",
         "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f202122232425262728292a2b"
         "2c2d2e2f303132333435363738393a3b3c3d3e3f",
         {"616263", ""},
         2,
         "37ebad5e64e1b5d8fdbcabf57b46da14"},
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        unsigned char key[64], adbuf[2][8], want[16], out[16], back[1];
        struct siv_ad ad[2];
        char err[ERR_LEN];
        size_t key_len = unhex(rows[i].key, key);
        unhex(rows[i].iv, want);
        for (size_t j = 0; j < rows[i].n_ad; j++) {
            ad[j].n = unhex(rows[i].ad[j], adbuf[j]);
            ad[j].p = adbuf[j];
        }
        check_case("siv over AES-ECB, empty plaintext: %s", rows[i].name);
        struct siv_ecb_key *k = siv_ecb_key_new(key, key_len, err);
        CHECK(k != NULL);
        if (!k)
            continue;
        CHECK_EQ_INT(siv_ecb_encrypt(k, ad, rows[i].n_ad, NULL, 0, out), RC_OK);
        CHECK(memcmp(out, want, 16) == 0);
        CHECK_EQ_INT(siv_ecb_decrypt(k, ad, rows[i].n_ad, want, 16, back), RC_OK);
        want[3] ^= 0x10;
        CHECK_EQ_INT(siv_ecb_decrypt(k, ad, rows[i].n_ad, want, 16, back), RC_CRYPTO);
        siv_ecb_key_free(k);
    }
}

static void test_siv_ecb_edges(void)
{
    static const size_t bad_lens[] = {0, 16, 24, 31, 33, 47, 63, 65, 128};
    unsigned char key[128] = {0}, buf[64] = {0};
    char err[ERR_LEN];

    check_case("siv_ecb_key_new refuses keys of other lengths than 32, 48, 64 bytes");
    for (size_t i = 0; i < sizeof bad_lens / sizeof bad_lens[0]; i++) {
        err[0] = '\0';
        CHECK(siv_ecb_key_new(key, bad_lens[i], err) == NULL);
        CHECK(strstr(err, "32, 48 or 64") != NULL);
    }
    check_case("siv_ecb_decrypt refuses less than an IV");
    struct siv_ecb_key *k = siv_ecb_key_new(key, 64, err);
    CHECK(k != NULL);
    if (!k)
        return;
    CHECK_EQ_INT(siv_ecb_decrypt(k, NULL, 0, buf, 15, buf + 32), RC_INVALID);
    CHECK_EQ_INT(siv_ecb_decrypt(k, NULL, 0, buf, 0, buf + 32), RC_INVALID);
    check_case("siv_ecb_decrypt of 16 zero bytes (an empty plaintext's IV, forged) fails");
    CHECK_EQ_INT(siv_ecb_decrypt(k, NULL, 0, buf, 16, buf + 32), RC_CRYPTO);
    siv_ecb_key_free(k);
    siv_ecb_key_free(NULL);
}

/* The fast path against OpenSSL's SIV mode, value by value: one
 * siv_ecb_key per key, used for value after value (so any state carried
 * from one call to the next would show), each result compared with a context
 * created and keyed afresh for that value alone, and with siv_key (keyed
 * once, a copy per call).  Random keys of all three sizes (so the CMAC
 * subkeys and D take both branches of dbl), every plaintext length from 1 to
 * 130, longer ones up to 4,100 bytes (past the 1 KiB CTR batch), 0 to 3
 * associated-data components of 0 to 40 bytes; two keys interleaved.  Both
 * directions are opened by the other side. */
static void test_siv_ecb_vs_openssl(void)
{
    static const struct {
        const char *cipher;
        size_t key_len;
    } sizes[] = {{"AES-128-SIV", 32}, {"AES-192-SIV", 48}, {"AES-256-SIV", 64}};
    enum { KEYS = 10, PT_MAX = 4100 };
    static unsigned char pt[PT_MAX], fast[16 + PT_MAX], fresh[16 + PT_MAX], copy[16 + PT_MAX],
        back[PT_MAX];
    unsigned char key[2][64], adbuf[3][40];
    struct siv_ad ad[3];
    char err[ERR_LEN];
    long values = 0, bytes = 0;
    int enc_diff = 0, copy_diff = 0, dec_fast = 0, dec_ossl = 0, failures = 0;

    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
        size_t kl = sizes[s].key_len;
        for (int kp = 0; kp < KEYS / 2; kp++) {
            struct siv_ecb_key *ek[2];
            struct siv_key *ok[2];
            for (int j = 0; j < 2; j++) {
                rng_fill(key[j], kl);
                ek[j] = siv_ecb_key_new(key[j], kl, err);
                ok[j] = siv_key_new(sizes[s].cipher, key[j], kl, err);
                if (!ek[j] || !ok[j])
                    abort();
            }
            /* lengths 1..130 on each key, then a few long ones */
            for (size_t step = 0; step < 2 * 130 + 12; step++) {
                static const size_t longer[] = {255,  256,  511,  512,  528,  1008,
                                                1023, 1024, 1025, 2048, 3001, PT_MAX};
                int j = (int)(step % 2);
                size_t n = step < 260 ? step / 2 + 1 : longer[step - 260];
                size_t n_ad = (size_t)(rng() % 4);
                for (size_t a = 0; a < n_ad; a++) {
                    ad[a].n = (size_t)(rng() % 41);
                    rng_fill(adbuf[a], ad[a].n);
                    ad[a].p = adbuf[a];
                }
                rng_fill(pt, n);
                if (siv_ecb_encrypt(ek[j], ad, n_ad, pt, n, fast) != RC_OK ||
                    !siv_fresh_ad(sizes[s].cipher, key[j], ad, n_ad, pt, n, fresh) ||
                    siv_encrypt(ok[j], ad, n_ad, pt, n, copy) != RC_OK) {
                    failures++;
                    continue;
                }
                enc_diff += memcmp(fast, fresh, 16 + n) != 0;
                copy_diff += memcmp(copy, fresh, 16 + n) != 0;
                memset(back, 0, n);
                dec_fast += siv_ecb_decrypt(ek[j], ad, n_ad, fresh, 16 + n, back) != RC_OK ||
                            memcmp(back, pt, n) != 0;
                memset(back, 0, n);
                dec_ossl += siv_decrypt(ok[j], ad, n_ad, fast, 16 + n, back) != RC_OK ||
                            memcmp(back, pt, n) != 0;
                values++;
                bytes += (long)n;
            }
            for (int j = 0; j < 2; j++) {
                siv_ecb_key_free(ek[j]);
                siv_key_free(ok[j]);
            }
        }
    }
    check_case("siv over AES-ECB equals a fresh OpenSSL AES-SIV context: %ld values, %ld bytes, "
               "3 key sizes",
               values, bytes);
    CHECK_EQ_INT(failures, 0);
    CHECK_EQ_INT(enc_diff, 0);
    CHECK_EQ_INT(copy_diff, 0);
    CHECK_EQ_INT(values, 3 * (KEYS / 2) * (2 * 130 + 12));
    check_case("each opens what the other sealed");
    CHECK_EQ_INT(dec_fast, 0);
    CHECK_EQ_INT(dec_ossl, 0);
}

/* Every bit of IV and ciphertext flipped, for lengths around the block
 * boundaries, with and without associated data: RC_CRYPTO, and nothing of
 * the unauthenticated plaintext left in out. */
static void test_siv_ecb_tampered(void)
{
    static const size_t lens[] = {0, 1, 15, 16, 17, 31, 32, 47, 48, 100};
    unsigned char key[64], pt[100], ct[116], t[116], back[100], adb[20];
    struct siv_ad ad[1] = {{adb, sizeof adb}};
    char err[ERR_LEN];
    rng_fill(key, sizeof key);
    rng_fill(adb, sizeof adb);
    struct siv_ecb_key *k = siv_ecb_key_new(key, sizeof key, err);
    if (!k)
        abort();
    for (size_t i = 0; i < sizeof lens / sizeof lens[0]; i++) {
        for (size_t n_ad = 0; n_ad <= 1; n_ad++) {
            size_t n = lens[i];
            int accepted = 0, not_wiped = 0;
            check_case("siv over AES-ECB: every bit of %zu + 16 bytes flipped fails (%zu AD)", n,
                       n_ad);
            rng_fill(pt, n);
            CHECK_EQ_INT(siv_ecb_encrypt(k, ad, n_ad, pt, n, ct), RC_OK);
            for (size_t bit = 0; bit < (16 + n) * 8; bit++) {
                memcpy(t, ct, 16 + n);
                t[bit / 8] ^= (unsigned char)(1u << bit % 8);
                memset(back, 0x5a, sizeof back);
                accepted += siv_ecb_decrypt(k, ad, n_ad, t, 16 + n, back) != RC_CRYPTO;
                not_wiped += !all_zero(back, n);
            }
            CHECK_EQ_INT(accepted, 0);
            CHECK_EQ_INT(not_wiped, 0);
            check_case("siv over AES-ECB: other associated data fails (%zu bytes, %zu AD)", n,
                       n_ad);
            CHECK_EQ_INT(siv_ecb_decrypt(k, ad, 1 - n_ad, ct, 16 + n, back), RC_CRYPTO);
            if (n_ad) {
                adb[0] ^= 1;
                CHECK_EQ_INT(siv_ecb_decrypt(k, ad, 1, ct, 16 + n, back), RC_CRYPTO);
                adb[0] ^= 1;
            }
            CHECK_EQ_INT(siv_ecb_decrypt(k, ad, n_ad, ct, 16 + n, back), RC_OK);
            CHECK(memcmp(back, pt, n) == 0);
        }
    }
    siv_ecb_key_free(k);
}

/* --- mask.c --------------------------------------------------------------------------------- */

static void test_mask_known_answers(void)
{
    /* Computed independently with Python's cryptography AESSIV under key 00..3f. */
    static const struct {
        const char *in, *want;
    } rows[] = {
        {"199.172.111.135", "k1:VnXTNadofymvfwSxvrmneLMO6vJKEvUSMIO5YJyYBFI"},
        {"593-47-5928", "k1:wqAY02mUpN7T7MCGARbtdSqcxlopCW4OaSze4xLCACU"},
        {"2001:db8::1", "k1:WzFPTo9UqC_8oYVPkjhRSqn4V3VdMJYyauyYQt0WXEM"},
        {"", "k1:PMEVZNWgb1DQBUVwudd-_EjIDcWjjLl0ufBlAe2ybd8"},
        {"0123456789abcdef", "k1:O5u2QkCPFgZHr1qKUcdyJNqA7GIO5rsLd78mPGRIxfMhZWXP_f0QYWImStU9Xb6f"},
        {"\xc3\xa9\xe4\xb8\xad\xf0\x9f\x98\x80", "k1:3eT1w1K3dXkyWPgiVA8_hcBbCLCPTIxFvXcFjrEsUKQ"},
    };
    struct mask_key *k = new_key("k1");
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        char out[MASK_OUTPUT_MAX];
        size_t len = 0;
        check_case("mask known answer \"%s\"", rows[i].in);
        CHECK_EQ_INT(mask_value(k, rows[i].in, strlen(rows[i].in), out, &len), RC_OK);
        CHECK_EQ_STR(out, rows[i].want);
        CHECK_EQ_INT(len, strlen(rows[i].want));
        CHECK_EQ_INT(mask_output_len(k, strlen(rows[i].in)), len);
    }
    check_case("mask_key_id");
    CHECK_EQ_STR(mask_key_id(k), "k1");
    mask_key_free(k);
}

/* Padding: the decoded, decrypted output is exactly v || 0x80 || 0x00..., to
 * the next multiple of 16, and the lengths follow. */
static void test_mask_padding(void)
{
    static const size_t lens[] = {0, 1, 15, 16, 17, 31, 32, 33, 100, 511, 512};
    char err[ERR_LEN];
    struct mask_key *k = new_key("k1");
    struct siv_key *sk = siv_key_new("AES-256-SIV", test_key, sizeof test_key, err);
    unsigned char v[MASK_INPUT_MAX + 1], raw[MASK_OUTPUT_MAX], pt[MASK_OUTPUT_MAX];
    char out[MASK_OUTPUT_MAX], ref[MASK_OUTPUT_MAX + 16];
    size_t len = 0;

    for (size_t i = 0; i < sizeof v; i++)
        v[i] = (unsigned char)(i * 7 + 1);
    for (size_t i = 0; i < sizeof lens / sizeof lens[0]; i++) {
        size_t n = lens[i], padded = (n / 16 + 1) * 16;
        check_case("mask pads %zu bytes to %zu", n, padded);
        CHECK_EQ_INT(mask_value(k, (const char *)v, n, out, &len), RC_OK);
        CHECK_EQ_INT(len, 3 + (16 + padded) * 4 / 3 + ((16 + padded) % 3 ? 1 : 0));
        CHECK_EQ_INT(len, mask_output_len(k, n));
        CHECK(len < MASK_OUTPUT_MAX);
        CHECK(strncmp(out, "k1:", 3) == 0);
        size_t raw_len = unb64url(out + 3, len - 3, raw);
        CHECK_EQ_INT(raw_len, 16 + padded);
        CHECK_EQ_INT(siv_decrypt(sk, NULL, 0, raw, raw_len, pt), RC_OK);
        CHECK(memcmp(pt, v, n) == 0);
        CHECK_EQ_INT(pt[n], 0x80);
        for (size_t j = n + 1; j < padded; j++)
            CHECK_EQ_INT(pt[j], 0);
        mask_reference("k1", v, n, ref);
        CHECK_EQ_STR(out, ref);
    }
    check_case("mask refuses %d bytes", MASK_INPUT_MAX + 1);
    CHECK_EQ_INT(mask_value(k, (const char *)v, MASK_INPUT_MAX + 1, out, &len), RC_TOOBIG);
    check_case("MASK_OUTPUT_MAX is the longest output plus NUL");
    struct mask_key *k8 = new_key("ABCDefg8");
    CHECK_EQ_INT(mask_output_len(k8, MASK_INPUT_MAX) + 1, MASK_OUTPUT_MAX);
    CHECK_EQ_INT(mask_value(k8, (const char *)v, MASK_INPUT_MAX, out, &len), RC_OK);
    CHECK_EQ_INT(len + 1, MASK_OUTPUT_MAX);
    CHECK_EQ_INT(out[len], '\0');
    mask_key_free(k8);
    siv_key_free(sk);
    mask_key_free(k);
}

/* Fills buf with test value number i of a family; returns its length. */
static size_t make_value(int family, unsigned i, char *buf, size_t cap)
{
    uint32_t x = i * 2654435761u + 12345u; /* cheap, spread-out numbers */
    int n = 0;
    switch (family) {
    case 0: /* IPv4 */
        n = snprintf(buf, cap, "%u.%u.%u.%u", x >> 24, x >> 16 & 255, x >> 8 & 255, x & 255);
        break;
    case 1: /* device id */
        n = snprintf(buf, cap, "%03u-%02u-%04u", x % 1000, x / 1000 % 100, x / 100000 % 10000);
        break;
    case 2: /* IPv6, canonical text */
        n = snprintf(buf, cap, "2001:db8:%x:%x::%x", x >> 16, x & 0xffff, i);
        break;
    case 3: { /* 128 ASCII characters, the first ten the number i */
        snprintf(buf, cap, "%010u", i);
        for (size_t j = 10; j < 128; j++)
            buf[j] = (char)('!' + (x + j * 31) % 94);
        n = 128;
        break;
    }
    default: { /* multi-byte UTF-8: the first 8 characters spell i in base 4
                * (even i: mixed 1 to 4-byte characters) or base 16 (odd i: 128
                * four-byte characters, 512 bytes), then filler */
        static const char *const glyphs[] = {"\xf0\x9f\x98\x80", "\xc3\xa9", "\xe4\xb8\xad", "a"};
        size_t o = 0, count = i % 2 ? 128 : 8 + i % 40;
        for (size_t j = 0; j < count; j++) {
            unsigned d = j < 8 ? (i >> (i % 2 ? 4 * j : 2 * j)) & (i % 2 ? 15u : 3u)
                               : (unsigned)((x + j) % (i % 2 ? 16 : 4));
            if (i % 2) {
                memcpy(buf + o, "\xf0\x9f\x98", 3);
                buf[o + 3] = (char)(0x80 + d);
                o += 4;
            } else {
                size_t gl = strlen(glyphs[d]);
                memcpy(buf + o, glyphs[d], gl);
                o += gl;
            }
        }
        n = (int)o;
        break;
    }
    }
    return (size_t)n;
}

static const char *const family_names[] = {"IPv4", "ddd-dd-dddd", "IPv6", "128-char ASCII",
                                           "multi-byte UTF-8"};

/* unmask(mask(v)) == v; the masked input sits against a guard page. */
static void test_mask_roundtrip(void)
{
    struct mask_key *k = new_key("k1");
    for (int f = 0; f < 5; f++) {
        int bad = 0;
        check_case("unmask(mask(v)) == v for 300 %s values", family_names[f]);
        for (unsigned i = 0; i < 300; i++) {
            char v[MASK_INPUT_MAX + 1], out[MASK_OUTPUT_MAX], back[MASK_INPUT_MAX + 1];
            char err[ERR_LEN] = "";
            size_t n = make_value(f, i, v, sizeof v), len = 0, blen = 0;
            CHECK(n <= MASK_INPUT_MAX);
            if (mask_value(k, v, n, out, &len) != RC_OK) {
                bad++;
                continue;
            }
            const char *g = check_guard(out, len);
            rc_t rc = mask_unmask(k, g, len, back, sizeof back, &blen, err);
            if (rc != RC_OK || blen != n || memcmp(back, v, n) != 0 || back[n] != '\0') {
                if (!bad)
                    printf("#   value %u: rc %d, %s\n", i, (int)rc, err);
                bad++;
            }
        }
        CHECK_EQ_INT(bad, 0);
    }
    mask_key_free(k);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Determinism, distinctness, and the keyed-once path against fresh contexts
 * (the trap this guards against: a used SIV context re-initialised with a
 * NULL key gives wrong results from the second value on). */
static void test_mask_many(void)
{
    enum { N = 1500 };
    static char outs[N][MASK_OUTPUT_MAX];
    char *ptrs[N];
    char v[MASK_INPUT_MAX + 1], again[MASK_OUTPUT_MAX], ref[MASK_OUTPUT_MAX + 16];
    size_t len = 0;
    int mismatches = 0, fresh_key_mismatches = 0, nondet = 0;
    struct mask_key *k = new_key("k1");

    for (unsigned i = 0; i < N; i++) {
        size_t n = make_value((int)(i % 5), i / 5, v, sizeof v);
        if (mask_value(k, v, n, outs[i], &len) != RC_OK)
            mismatches++;
        ptrs[i] = outs[i];
        mask_reference("k1", v, n, ref);
        if (strcmp(outs[i], ref) != 0)
            mismatches++;
        if (i % 10 == 0) { /* a fresh mask_key for this one value */
            struct mask_key *fk = new_key("k1");
            if (mask_value(fk, v, n, again, &len) != RC_OK || strcmp(again, outs[i]) != 0)
                fresh_key_mismatches++;
            mask_key_free(fk);
        }
    }
    check_case("%d values in a row equal a fresh context each time", N);
    CHECK_EQ_INT(mismatches, 0);
    CHECK_EQ_INT(fresh_key_mismatches, 0);

    check_case("same input, same output (second pass, reverse order)");
    for (unsigned i = N; i-- > 0;) {
        size_t n = make_value((int)(i % 5), i / 5, v, sizeof v);
        if (mask_value(k, v, n, again, &len) != RC_OK || strcmp(again, outs[i]) != 0)
            nondet++;
    }
    CHECK_EQ_INT(nondet, 0);

    check_case("different inputs, different outputs (%d values)", N);
    qsort(ptrs, N, sizeof ptrs[0], cmp_str);
    int dups = 0;
    for (size_t i = 1; i < N; i++)
        dups += strcmp(ptrs[i - 1], ptrs[i]) == 0;
    CHECK_EQ_INT(dups, 0);

    check_case("a one-byte difference changes the output");
    char a[MASK_OUTPUT_MAX], b[MASK_OUTPUT_MAX];
    CHECK_EQ_INT(mask_value(k, "10.0.0.1", 8, a, &len), RC_OK);
    CHECK_EQ_INT(mask_value(k, "10.0.0.2", 8, b, &len), RC_OK);
    CHECK(strcmp(a, b) != 0);
    CHECK_EQ_INT(mask_value(k, "10.0.0.1\0", 9, b, &len), RC_OK); /* the padding is not 0x00 */
    CHECK(strcmp(a, b) != 0);

    check_case("output is base64url without padding");
    int bad_chars = 0;
    for (size_t i = 0; i < N; i++)
        bad_chars += strspn(outs[i] + 3, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                                         "0123456789-_") != strlen(outs[i] + 3);
    CHECK_EQ_INT(bad_chars, 0);
    mask_key_free(k);
}

/* mask_value against a fresh OpenSSL context for every input length from 0
 * to MASK_INPUT_MAX, eight random values of each (4,104 values, padded to 16
 * to 528 bytes), in one stream on two keys used in turn (the one mask_key of
 * each serves every value, as in the ETL); each unmasks again. */
static void test_mask_every_length(void)
{
    unsigned char key2[MASK_KEY_BYTES], v[MASK_INPUT_MAX];
    char hex2[2 * MASK_KEY_BYTES + 1], err[ERR_LEN], out[MASK_OUTPUT_MAX],
        ref[MASK_OUTPUT_MAX + 16], back[MASK_INPUT_MAX + 1];
    int diff = 0, bad_rc = 0, roundtrip = 0, values = 0;

    rng_fill(key2, sizeof key2);
    for (size_t i = 0; i < sizeof key2; i++)
        snprintf(hex2 + 2 * i, 3, "%02x", key2[i]);
    struct mask_key *k[2] = {new_key("k1"), mask_key_new(hex2, strlen(hex2), "Prod2025", err)};
    const unsigned char *raw_key[2] = {test_key, key2};
    const char *ids[2] = {"k1", "Prod2025"};
    if (!k[1])
        abort();
    for (size_t n = 0; n <= MASK_INPUT_MAX; n++) {
        for (int r = 0; r < 8; r++) {
            int j = r % 2;
            size_t len = 0, blen = 0;
            rng_fill(v, n);
            if (mask_value(k[j], (const char *)v, n, out, &len) != RC_OK) {
                bad_rc++;
                continue;
            }
            mask_reference_key(raw_key[j], ids[j], v, n, ref);
            diff += strcmp(out, ref) != 0;
            roundtrip += mask_unmask(k[j], out, len, back, sizeof back, &blen, err) != RC_OK ||
                         blen != n || memcmp(back, v, n) != 0;
            values++;
        }
    }
    check_case("mask_value equals a fresh OpenSSL context for %d values, every length 0..%d",
               values, MASK_INPUT_MAX);
    CHECK_EQ_INT(values, 8 * (MASK_INPUT_MAX + 1));
    CHECK_EQ_INT(bad_rc, 0);
    CHECK_EQ_INT(diff, 0);
    check_case("unmask(mask(v)) == v for the same %d values", values);
    CHECK_EQ_INT(roundtrip, 0);
    mask_key_free(k[0]);
    mask_key_free(k[1]);
}

/* Every IPv4 address (7 to 15 bytes) and every ddd-dd-dddd (11 bytes) pads to
 * one block, so all mask to KEY_ID ':' and 43 characters. */
static void test_mask_equal_lengths(void)
{
    struct mask_key *k = new_key("k1");
    char v[64], out[MASK_OUTPUT_MAX];
    size_t len = 0;
    int wrong = 0;

    check_case("every IPv4 length (7..15 bytes) gives KEY_ID:43 characters");
    for (size_t n = 7; n <= 15; n++)
        wrong += mask_output_len(k, n) != 3 + 43;
    static const char *const edges[] = {"0.0.0.0",  "1.2.3.4",     "255.255.255.255",
                                        "10.0.0.1", "000-00-0000", "999-99-9999"};
    for (size_t i = 0; i < sizeof edges / sizeof edges[0]; i++) {
        if (mask_value(k, edges[i], strlen(edges[i]), out, &len) != RC_OK || len != 3 + 43)
            wrong++;
    }
    for (unsigned i = 0; i < 5000; i++) {
        size_t n = make_value((int)(i % 2), i, v, sizeof v);
        if (mask_value(k, v, n, out, &len) != RC_OK || len != 3 + 43 || out[2] != ':')
            wrong++;
    }
    CHECK_EQ_INT(wrong, 0);

    check_case("a 16-byte value takes the next length (64 characters)");
    CHECK_EQ_INT(mask_value(k, "255.255.255.2555", 16, out, &len), RC_OK);
    CHECK_EQ_INT(len, 3 + 64);
    mask_key_free(k);
}

/* Every single-character change of a masked value fails. */
static void test_mask_tampered(void)
{
    static const char abc[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    struct mask_key *k = new_key("k1");
    char out[MASK_OUTPUT_MAX], t[MASK_OUTPUT_MAX], back[MASK_INPUT_MAX + 1], err[ERR_LEN];
    size_t len = 0, blen = 0;
    int not_crypto = 0, accepted = 0;

    CHECK_EQ_INT(mask_value(k, "593-47-5928", 11, out, &len), RC_OK);
    check_case("every changed character fails authentication");
    for (size_t pos = 3; pos < len; pos++) {
        for (size_t d = 1; d < 64; d += 9) {
            memcpy(t, out, len);
            const char *cur = strchr(abc, t[pos]);
            t[pos] = abc[((size_t)(cur - abc) + d) % 64];
            rc_t rc = mask_unmask(k, check_guard(t, len), len, back, sizeof back, &blen, err);
            accepted += rc == RC_OK;
            /* The last character also carries 2 unused bits: changing only
             * those makes the encoding non-canonical (RC_INVALID). */
            if (pos + 1 < len)
                not_crypto += rc != RC_CRYPTO;
        }
    }
    CHECK_EQ_INT(accepted, 0);
    CHECK_EQ_INT(not_crypto, 0);

    check_case("a value masked under another key with the same id fails");
    unsigned char other[MASK_KEY_BYTES];
    char other_hex[2 * MASK_KEY_BYTES + 1];
    memcpy(other, test_key, sizeof other);
    other[63] ^= 1;
    for (size_t i = 0; i < sizeof other; i++)
        snprintf(other_hex + 2 * i, 3, "%02x", other[i]);
    struct mask_key *ko = mask_key_new(other_hex, strlen(other_hex), "k1", err);
    CHECK(ko != NULL);
    if (ko) {
        CHECK_EQ_INT(mask_unmask(ko, check_guard(out, len), len, back, sizeof back, &blen, err),
                     RC_CRYPTO);
        CHECK(strstr(err, "authenticate") != NULL);
        mask_key_free(ko);
    }

    check_case("wrong key id fails");
    struct mask_key *k2 = new_key("k2");
    CHECK_EQ_INT(mask_unmask(k2, check_guard(out, len), len, back, sizeof back, &blen, err),
                 RC_INVALID);
    CHECK(strstr(err, "\"k1\"") != NULL);
    struct mask_key *k11 = new_key("k11");
    CHECK_EQ_INT(mask_unmask(k11, check_guard(out, len), len, back, sizeof back, &blen, err),
                 RC_INVALID);
    mask_key_free(k11);
    mask_key_free(k2);

    check_case("unmask into a buffer too small");
    CHECK_EQ_INT(mask_unmask(k, check_guard(out, len), len, back, 11, &blen, err), RC_TOOBIG);
    CHECK_EQ_INT(mask_unmask(k, check_guard(out, len), len, back, 12, &blen, err), RC_OK);
    CHECK_EQ_STR(back, "593-47-5928");
    mask_key_free(k);
}

/* Malformed masked values: all RC_INVALID, never a read past the input. */
static void test_mask_malformed(void)
{
    char long_id[MASK_OUTPUT_MAX + 8];
    memset(long_id, 'A', sizeof long_id);
    memcpy(long_id, "k1:", 3);
    long_id[sizeof long_id - 1] = '\0';

    static const char valid[] = "k1:wqAY02mUpN7T7MCGARbtdSqcxlopCW4OaSze4xLCACU";
    const struct {
        const char *name, *in;
        size_t n; /* 0: strlen */
    } rows[] = {
        {"empty", "", 0},
        {"id only", "k1", 0},
        {"nothing after the colon", "k1:", 0},
        {"no id", ":wqAY02mUpN7T7MCGARbtdSqcxlopCW4OaSze4xLCACU", 0},
        {"no colon", "k1wqAY02mUpN7T7MCGARbtdSqcxlopCW4OaSze4xLCACU", 0},
        {"'=' padding", "k1:wqAY02mUpN7T7MCGARbtdSqcxlopCW4OaSze4xLCACU=", 0},
        {"standard base64 '+'", "k1:wqAY02mUpN7T7MCGARbtdSqcxlopCW4OaSze4xLCAC+", 0},
        {"standard base64 '/'", "k1:wqAY02mUpN7T7MCG/RbtdSqcxlopCW4OaSze4xLCACU", 0},
        {"space inside", "k1:wqAY02mUpN7T7MCG RbtdSqcxlopCW4OaSze4xLCACU", 0},
        {"trailing newline", "k1:wqAY02mUpN7T7MCGARbtdSqcxlopCW4OaSze4xLCACU\n", 0},
        {"NUL inside", "k1:wqAY02mUpN7T7MCGARbt\0SqcxlopCW4OaSze4xLCACU", 46},
        {"impossible length (4n+1)", "k1:wqAY02mUpN7T7MCGARbtdSqcxlopCW4OaSze4xLCACUAA", 0},
        {"non-canonical last character", "k1:wqAY02mUpN7T7MCGARbtdSqcxlopCW4OaSze4xLCACV", 0},
        {"one character short (31 bytes, non-canonical end)",
         "k1:wqAY02mUpN7T7MCGARbtdSqcxlopCW4OaSze4xLCAC", 0},
        {"16 bytes only (IV, no block)", "k1:wqAY02mUpN7T7MCGARbtdQ", 0},
        {"31 bytes", "k1:wqAY02mUpN7T7MCGARbtdSqcxlopCW4OaSze4xLCAA", 0},
        {"33 bytes", "k1:wqAY02mUpN7T7MCGARbtdSqcxlopCW4OaSze4xLCACUA", 0},
        {"34 bytes", "k1:wqAY02mUpN7T7MCGARbtdSqcxlopCW4OaSze4xLCACUAAA", 0},
        {"far too long", long_id, 0},
        {"bad id characters", "k-1:wqAY02mUpN7T7MCGARbtdSqcxlopCW4OaSze4xLCACU", 0},
        {"colon only", ":", 0},
        {"non-ASCII", "k1:wqAY02mUpN7T7MCGARbtdSqcxlopCW4OaSze4xLCA\xc3\xa9", 0},
    };
    struct mask_key *k = new_key("k1");
    char back[MASK_INPUT_MAX + 1], err[ERR_LEN];
    size_t blen = 0;

    check_case("the valid control value unmasks");
    CHECK_EQ_INT(mask_unmask(k, check_guard(valid, strlen(valid)), strlen(valid), back, sizeof back,
                             &blen, err),
                 RC_OK);
    CHECK_EQ_STR(back, "593-47-5928");
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        size_t n = rows[i].n ? rows[i].n : strlen(rows[i].in);
        check_case("unmask refuses: %s", rows[i].name);
        err[0] = '\0';
        blen = 12345;
        rc_t rc = mask_unmask(k, check_guard(rows[i].in, n), n, back, sizeof back, &blen, err);
        CHECK_EQ_INT(rc, RC_INVALID);
        CHECK(err[0] != '\0');
        CHECK_EQ_INT(blen, 12345);
    }
    mask_key_free(k);
}

/* Values that authenticate under the key but were not padded by mask_value
 * are refused: the padding is checked after decryption. */
static void test_mask_bad_padding(void)
{
    static const struct {
        const char *name, *pt_hex;
        rc_t rc;
    } rows[] = {
        {"control: correct padding of \"abc\"", "61626380000000000000000000000000", RC_OK},
        {"control: correct padding of 16 bytes",
         "3030303030303030303030303030303080000000000000000000000000000000", RC_OK},
        {"no 0x80 marker, all zero", "00000000000000000000000000000000", RC_INVALID},
        {"no padding at all", "61616161616161616161616161616161", RC_INVALID},
        {"0x81 instead of 0x80", "61626381000000000000000000000000", RC_INVALID},
        {"non-zero byte after 0x80", "61626380000000000000000000000001", RC_INVALID},
        {"a whole extra block of padding",
         "6162638000000000000000000000000000000000000000000000000000000000", RC_INVALID},
        {"last byte 0x80 but a block too many",
         "3030303030303030303030303030308000000000000000000000000000000000", RC_INVALID},
        {"control: 0x80 as the last byte", "30303030303030303030303030303080", RC_OK},
    };
    char err[ERR_LEN];
    struct mask_key *k = new_key("k1");
    struct siv_key *sk = siv_key_new("AES-256-SIV", test_key, sizeof test_key, err);
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        unsigned char pt[64], raw[96];
        char masked[200], back[MASK_INPUT_MAX + 1];
        size_t n = unhex(rows[i].pt_hex, pt), blen = 0;
        check_case("padding: %s", rows[i].name);
        CHECK_EQ_INT(siv_encrypt(sk, NULL, 0, pt, n, raw), RC_OK);
        memcpy(masked, "k1:", 3);
        size_t len = 3 + b64url(raw, 16 + n, masked + 3);
        err[0] = '\0';
        rc_t rc = mask_unmask(k, check_guard(masked, len), len, back, sizeof back, &blen, err);
        CHECK_EQ_INT(rc, rows[i].rc);
        if (rc == RC_INVALID)
            CHECK(strstr(err, "padding") != NULL);
    }
    siv_key_free(sk);
    mask_key_free(k);
}

/* Keys and key ids that must be refused, with a message that never quotes the key. */
static void test_mask_key_checks(void)
{
    char hex[300], err[ERR_LEN];
    const struct {
        const char *name;
        size_t len;  /* hex length to pass */
        int bad_pos; /* -1: none; else a position to spoil */
        char bad;
        const char *id;
        int ok;
    } rows[] = {
        {"valid, id k1", 128, -1, 0, "k1", 1},
        {"valid, 8-character id", 128, -1, 0, "Prod2025", 1},
        {"valid, 1-character id", 128, -1, 0, "Z", 1},
        {"valid, uppercase hex", 128, -2, 0, "k1", 1},
        {"empty key", 0, -1, 0, "k1", 0},
        {"64 hex characters (a 256-bit key)", 64, -1, 0, "k1", 0},
        {"127 hex characters", 127, -1, 0, "k1", 0},
        {"129 hex characters", 129, -1, 0, "k1", 0},
        {"130 hex characters", 130, -1, 0, "k1", 0},
        {"a 'g' in the key", 128, 77, 'g', "k1", 0},
        {"a space in the key", 128, 0, ' ', "k1", 0},
        {"a trailing newline in the key", 128, 127, '\n', "k1", 0},
        {"a NUL inside the key", 128, 5, '\0', "k1", 0},
        {"a '+' in the key", 128, 1, '+', "k1", 0},
        {"empty key id", 128, -1, 0, "", 0},
        {"9-character key id", 128, -1, 0, "abcdefghi", 0},
        {"key id with '-'", 128, -1, 0, "k-1", 0},
        {"key id with ':'", 128, -1, 0, "k:1", 0},
        {"key id with a space", 128, -1, 0, "k 1", 0},
        {"key id with non-ASCII", 128, -1, 0, "k\xc3\xa9", 0},
        {"NULL key id", 128, -1, 0, NULL, 0},
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        check_case("key: %s", rows[i].name);
        for (size_t j = 0; j < sizeof hex; j++)
            hex[j] = "0123456789abcdef"[(j * 5 + 3) % 16];
        if (rows[i].bad_pos == -2)
            for (size_t j = 0; j < sizeof hex; j++)
                hex[j] = "0123456789ABCDEF"[(j * 5 + 3) % 16];
        if (rows[i].bad_pos >= 0)
            hex[rows[i].bad_pos] = rows[i].bad;
        err[0] = '\0';
        struct mask_key *k = mask_key_new(hex, rows[i].len, rows[i].id, err);
        CHECK_EQ_INT(k != NULL, rows[i].ok);
        if (!rows[i].ok) {
            CHECK(err[0] != '\0');
            /* No run of 6 key characters appears in the message. */
            int quoted = 0;
            for (size_t j = 0; j + 6 <= 128; j++) {
                char piece[7];
                memcpy(piece, hex + j, 6);
                piece[6] = '\0';
                if (strlen(piece) == 6 && strstr(err, piece))
                    quoted = 1;
            }
            CHECK(!quoted);
        } else {
            CHECK_EQ_STR(mask_key_id(k), rows[i].id);
        }
        mask_key_free(k);
    }
    check_case("mask_key_free(NULL)");
    mask_key_free(NULL);
}

static void test_key_id_rule(void)
{
    check_case("mask_key_id_setting: unset is the default, set is taken as it is");
    CHECK_EQ_STR(mask_key_id_setting(NULL), MASK_KEY_ID_DEFAULT);
    CHECK_EQ_STR(mask_key_id_setting(""), "");
    CHECK_EQ_STR(mask_key_id_setting("Prod2025"), "Prod2025");

    check_case("mask_key_id_valid: 1 to 8 of [A-Za-z0-9]");
    CHECK(mask_key_id_valid("k1"));
    CHECK(mask_key_id_valid("Z"));
    CHECK(mask_key_id_valid("abcdEF09"));
    CHECK(!mask_key_id_valid(NULL));
    CHECK(!mask_key_id_valid(""));
    CHECK(!mask_key_id_valid("abcdefghi"));
    CHECK(!mask_key_id_valid("k-1"));
    CHECK(!mask_key_id_valid("k 1"));
    CHECK(!mask_key_id_valid("k\xc3\xa9"));
    CHECK(mask_key_id_valid(MASK_KEY_ID_DEFAULT));

    check_case("mask_key_new takes exactly the ids mask_key_id_valid takes");
    char err[ERR_LEN];
    static const char *const ids[] = {"k1", "abcdEF09", "", "abcdefghi", "k-1"};
    for (size_t i = 0; i < sizeof ids / sizeof ids[0]; i++) {
        struct mask_key *k = mask_key_new(test_key_hex, 128, ids[i], err);
        CHECK_EQ_INT(k != NULL, mask_key_id_valid(ids[i]));
        mask_key_free(k);
    }
}

int main(void)
{
    for (size_t i = 0; i < sizeof test_key; i++) {
        test_key[i] = (unsigned char)i;
        snprintf(test_key_hex + 2 * i, 3, "%02x", test_key[i]);
    }
    test_key_id_rule();
    test_siv_vectors();
    test_siv_edges();
    test_siv_ecb_empty();
    test_siv_ecb_edges();
    test_siv_ecb_vs_openssl();
    test_siv_ecb_tampered();
    test_mask_known_answers();
    test_mask_padding();
    test_mask_roundtrip();
    test_mask_many();
    test_mask_every_length();
    test_mask_equal_lengths();
    test_mask_tampered();
    test_mask_malformed();
    test_mask_bad_padding();
    test_mask_key_checks();
    return check_finish();
}
