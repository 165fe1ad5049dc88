/* test_clock.c - the clocks, sleeping and backoff of base/clock.c. */
#include "check.h"

#include <time.h>

#include "clock.h"

static void test_clocks(void)
{
    struct timespec ts;

    check_case("clock_epoch_ms is real time, in milliseconds");
    clock_gettime(CLOCK_REALTIME, &ts);
    int64_t want = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
    int64_t got = clock_epoch_ms();
    CHECK(got >= want && got - want < 1000);

    check_case("clock_mono_ms is the monotonic clock, and never goes back");
    clock_gettime(CLOCK_MONOTONIC, &ts);
    want = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
    got = clock_mono_ms();
    CHECK(got >= want && got - want < 1000);
    int64_t us = clock_mono_us();
    CHECK(us / 1000 >= got && us / 1000 - got < 1000);
    for (int i = 0; i < 1000; i++) {
        int64_t next = clock_mono_ms();
        CHECK(next >= got);
        got = next;
    }

    check_case("clock_mono_deadline keeps the distance to an epoch deadline");
    /* The epoch reading is bracketed by two monotonic ones, so the bounds
     * hold however long the process is descheduled between the calls (as
     * under qemu on a busy machine); +-2 ms for the two truncations. */
    int64_t m0 = clock_mono_ms();
    int64_t now_epoch = clock_epoch_ms();
    int64_t m1 = clock_mono_ms();
    int64_t d = clock_mono_deadline(now_epoch + 5000);
    CHECK(d >= m0 + 4998 && d <= m1 + 5002);
    d = clock_mono_deadline(now_epoch - 3000); /* already passed */
    CHECK(d >= m0 - 3002 && d <= m1 - 2998);
}

static void test_sleep(void)
{
    check_case("clock_sleep_ms sleeps at least that long; nothing for 0 or less");
    int64_t t0 = clock_mono_ms();
    clock_sleep_ms(30);
    int64_t slept = clock_mono_ms() - t0;
    CHECK(slept >= 30);
    t0 = clock_mono_ms();
    clock_sleep_ms(0);
    clock_sleep_ms(-5);
    CHECK(clock_mono_ms() - t0 < 20);
}

static void test_backoff(void)
{
    static const int64_t want[] = {10, 20, 40, 80, 160, 320, 640, 1000, 1000, 1000};
    struct backoff b;

    check_case("backoff doubles from first up to max");
    backoff_init(&b, 10, 1000);
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
        CHECK_EQ_INT(backoff_next(&b), want[i]);

    check_case("backoff_reset starts again from first");
    backoff_reset(&b);
    CHECK_EQ_INT(backoff_next(&b), 10);
    CHECK_EQ_INT(backoff_next(&b), 20);

    check_case("backoff never passes max, even when max is not first * 2^k");
    backoff_init(&b, 7, 50);
    CHECK_EQ_INT(backoff_next(&b), 7);
    CHECK_EQ_INT(backoff_next(&b), 14);
    CHECK_EQ_INT(backoff_next(&b), 28);
    CHECK_EQ_INT(backoff_next(&b), 50);
    CHECK_EQ_INT(backoff_next(&b), 50);

    check_case("backoff with a max near INT64_MAX does not overflow");
    backoff_init(&b, INT64_MAX / 4 + 1, INT64_MAX);
    CHECK_EQ_INT(backoff_next(&b), INT64_MAX / 4 + 1);
    CHECK(backoff_next(&b) > 0);
    CHECK_EQ_INT(backoff_next(&b), INT64_MAX);
}

int main(void)
{
    (void)check_guard; /* no parser here */
    test_clocks();
    test_sleep();
    test_backoff();
    return check_finish();
}
