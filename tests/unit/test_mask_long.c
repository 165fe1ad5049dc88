/* test_mask_long.c - masking a value of any length (a quarantined message
 * body): the same form as mask_value up to its limit, a round trip at every
 * size, and every tampering refused. */
#include "check.h"

#include <stdint.h>

#include "buf.h"
#include "mask.h"

static char key_hex[2 * MASK_KEY_BYTES + 1];

static struct mask_key *new_key(const char *id)
{
    char err[ERR_LEN];
    struct mask_key *k = mask_key_new(key_hex, strlen(key_hex), id, err);
    if (!k) {
        printf("# mask_key_new: %s\n", err);
        abort();
    }
    return k;
}

/* n bytes of every value 0..255, deterministic. */
static char *value(size_t n)
{
    char *v = malloc(n + 1);
    for (size_t i = 0; i < n; i++)
        v[i] = (char)((i * 131 + n) & 0xff);
    return v;
}

static void test_same_form_as_mask_value(void)
{
    struct mask_key *k = new_key("k1");
    check_case("mask_value_long == mask_value for every length up to MASK_INPUT_MAX");
    for (size_t n = 0; n <= MASK_INPUT_MAX; n++) {
        char *v = value(n), out[MASK_OUTPUT_MAX];
        size_t len = 0;
        struct buf b;
        buf_init(&b, 1 << 20);
        CHECK(mask_value(k, v, n, out, &len) == RC_OK);
        CHECK(mask_value_long(k, v, n, &b) == RC_OK);
        CHECK(b.len == len && b.len == mask_output_len(k, n) && memcmp(b.data, out, len) == 0);
        buf_free(&b);
        free(v);
    }
    mask_key_free(k);
}

static void test_round_trip(void)
{
    static const size_t sizes[] = {0, 1, 15, 16, 17, 513, 4096, 70000, 262144, 1048576};
    struct mask_key *k = new_key("Prod2026");
    for (size_t s = 0; s < sizeof sizes / sizeof *sizes; s++) {
        size_t n = sizes[s];
        char *v = value(n), err[ERR_LEN] = "";
        struct buf m, back;
        check_case("unmask_long(mask_long(v)) == v, %zu bytes", n);
        buf_init(&m, 4 << 20);
        buf_init(&back, 4 << 20);
        CHECK(mask_value_long(k, v, n, &m) == RC_OK);
        CHECK(strncmp(m.data, "Prod2026:", 9) == 0);
        const char *g = check_guard(m.data, m.len);
        CHECK(mask_unmask_long(k, g, m.len, &back, err) == RC_OK);
        CHECK(back.len == n && (n == 0 || memcmp(back.data, v, n) == 0));
        if (n <= MASK_INPUT_MAX) { /* the short form opens it too */
            char out[MASK_INPUT_MAX + 1];
            size_t len = 0;
            CHECK(mask_unmask(k, m.data, m.len, out, sizeof out, &len, err) == RC_OK && len == n);
        }
        buf_free(&m);
        buf_wipe(&back);
        free(v);
    }
    mask_key_free(k);
}

static void test_refusals(void)
{
    struct mask_key *k = new_key("k1"), *other = new_key("k2");
    char *v = value(5000), err[ERR_LEN];
    struct buf m, back;
    buf_init(&m, 1 << 20);
    buf_init(&back, 1 << 20);
    mask_value_long(k, v, 5000, &m);

    check_case("a changed character of a long masked value does not authenticate");
    for (size_t at = 3; at < m.len; at += 997) {
        char saved = m.data[at];
        m.data[at] = saved == 'A' ? 'B' : 'A';
        CHECK(mask_unmask_long(k, m.data, m.len, &back, err) != RC_OK);
        CHECK(back.len == 0);
        m.data[at] = saved;
    }
    check_case("a long masked value under another key id is refused");
    CHECK(mask_unmask_long(other, m.data, m.len, &back, err) == RC_INVALID);
    check_case("a cut or malformed value is refused");
    CHECK(mask_unmask_long(k, m.data, m.len - 1, &back, err) != RC_OK);
    CHECK(mask_unmask_long(k, "k1", 2, &back, err) == RC_INVALID);
    CHECK(mask_unmask_long(k, "", 0, &back, err) == RC_INVALID);
    check_case("an output buffer too small: RC_TOOBIG, left as it was");
    struct buf small;
    buf_init(&small, 100);
    buf_appends(&small, "kept");
    CHECK(mask_value_long(k, v, 5000, &small) == RC_TOOBIG);
    CHECK(small.len == 4 && memcmp(small.data, "kept", 4) == 0);
    buf_free(&small);
    buf_free(&m);
    buf_free(&back);
    free(v);
    mask_key_free(k);
    mask_key_free(other);
}

int main(void)
{
    for (size_t i = 0; i < MASK_KEY_BYTES; i++)
        snprintf(key_hex + 2 * i, 3, "%02x", (unsigned)(i * 7 + 3) & 0xff);
    test_same_form_as_mask_value();
    test_round_trip();
    test_refusals();
    return check_finish();
}
