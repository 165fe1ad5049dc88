/* clock.c - clocks, sleeping and backoff, with the policy in clock.h. */
#include "clock.h"

#include <errno.h>
#include <time.h>

/* Reads one clock as nanoseconds; clock_gettime cannot fail for these two
 * clocks on Linux, so a failure is not reported. */
static int64_t read_ns(clockid_t id)
{
    struct timespec ts = {0, 0};

    clock_gettime(id, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* See clock.h. */
int64_t clock_mono_ms(void)
{
    return read_ns(CLOCK_MONOTONIC) / 1000000;
}

/* See clock.h. */
int64_t clock_mono_us(void)
{
    return read_ns(CLOCK_MONOTONIC) / 1000;
}

/* See clock.h. */
int64_t clock_epoch_ms(void)
{
    return read_ns(CLOCK_REALTIME) / 1000000;
}

/* See clock.h: the two clocks are read back to back, so the conversion is
 * off by the microseconds between the two reads at most. */
int64_t clock_mono_deadline(int64_t epoch_deadline_ms)
{
    return clock_mono_ms() + (epoch_deadline_ms - clock_epoch_ms());
}

/* See clock.h: nanosleep with the time left after a signal. */
void clock_sleep_ms(int64_t ms)
{
    struct timespec ts;

    if (ms <= 0)
        return;
    ts.tv_sec = (time_t)(ms / 1000);
    ts.tv_nsec = (long)(ms % 1000) * 1000000;
    while (nanosleep(&ts, &ts) == -1 && errno == EINTR)
        ;
}

/* See clock.h. */
void backoff_init(struct backoff *b, int64_t first_ms, int64_t max_ms)
{
    b->first_ms = first_ms;
    b->max_ms = max_ms;
    b->next_ms = first_ms;
}

/* See clock.h. */
int64_t backoff_next(struct backoff *b)
{
    int64_t wait = b->next_ms;

    b->next_ms = wait > b->max_ms / 2 ? b->max_ms : wait * 2;
    return wait;
}

/* See clock.h. */
void backoff_reset(struct backoff *b)
{
    b->next_ms = b->first_ms;
}
