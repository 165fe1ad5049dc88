/* test_grow.c - capacity doubling for parallel arrays (base/grow.c). */
#include "check.h"

#include <stdint.h>

#include "grow.h"

/* Grows a pair of arrays from nothing, then asks for sizes that cannot be
 * had: a failure leaves the capacity as it was and both arrays valid for it,
 * contents kept.  The 8-byte array comes first, so that its size in bytes
 * overflows before anything is allocated and no case asks the allocator for
 * an impossible block. */
static void test_grow(void)
{
    uint64_t *wide = NULL;
    uint8_t *narrow = NULL;
    size_t cap = 0;
    const struct grow_array arrays[] = {{&wide, sizeof *wide}, {&narrow, sizeof *narrow}};

    check_case("grow_arrays: the first growth takes `first`");
    CHECK_EQ_INT(grow_arrays(arrays, 2, &cap, 1, 4), RC_OK);
    CHECK_EQ_INT(cap, 4);
    CHECK(wide && narrow);
    for (size_t i = 0; i < cap; i++) {
        wide[i] = 1000 + i;
        narrow[i] = (uint8_t)i;
    }

    check_case("grow_arrays: doubles until n fits, keeping the contents");
    CHECK_EQ_INT(grow_arrays(arrays, 2, &cap, 9, 4), RC_OK);
    CHECK_EQ_INT(cap, 16);
    for (size_t i = 0; i < 4; i++) {
        CHECK_EQ_INT(wide[i], 1000 + i);
        CHECK_EQ_INT(narrow[i], i);
    }
    wide[15] = 43;
    narrow[15] = 42;

    check_case("grow_arrays: n already fits: nothing moves");
    uint64_t *was = wide;
    CHECK_EQ_INT(grow_arrays(arrays, 2, &cap, 16, 4), RC_OK);
    CHECK_EQ_INT(cap, 16);
    CHECK(wide == was);

    check_case("grow_arrays: a size in bytes over SIZE_MAX fails, capacity kept");
    CHECK_EQ_INT(grow_arrays(arrays, 2, &cap, SIZE_MAX / 4, 4), RC_NOMEM);
    CHECK_EQ_INT(cap, 16);
    CHECK_EQ_INT(wide[15], 43);
    CHECK_EQ_INT(narrow[15], 42);

    check_case("grow_arrays: a capacity that cannot double fails");
    CHECK_EQ_INT(grow_arrays(arrays, 2, &cap, SIZE_MAX, 4), RC_NOMEM);
    CHECK_EQ_INT(cap, 16);
    CHECK_EQ_INT(wide[15], 43);
    free(wide);
    free(narrow);
}

int main(void)
{
    (void)check_guard; /* no parser here */
    test_grow();
    return check_finish();
}
