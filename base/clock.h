/* clock.h - the one place that reads clocks, sleeps and backs off.
 *
 * The policy, for every module:
 *   - Durations, timeouts, waits and backoff use the monotonic clock
 *     (clock_mono_ms, clock_mono_us): it never jumps when NTP or an operator
 *     sets the time, so a wait can neither end early nor last for ever.
 *   - Real time (clock_epoch_ms) is used only for what is a date by nature:
 *     the Runtime API's deadline (Lambda-Runtime-Deadline-Ms is Unix epoch
 *     milliseconds) and what is compared with it, and the dates we write
 *     (log and metric timestamps, create_date).  clock_mono_deadline turns an
 *     epoch deadline into a monotonic one once, so that waiting for it
 *     follows the policy above. */
#ifndef CLOCK_H
#define CLOCK_H

#include <stdint.h>

/* Milliseconds / microseconds on the monotonic clock (an arbitrary origin);
 * cannot fail. */
int64_t clock_mono_ms(void);
int64_t clock_mono_us(void);

/* Milliseconds since 1970-01-01 UTC (real time); cannot fail. */
int64_t clock_epoch_ms(void);

/* The monotonic-clock moment of an epoch-milliseconds deadline: now on the
 * monotonic clock plus the time the deadline is away on the real one (a
 * deadline already passed gives a moment in the past).  Cannot fail. */
int64_t clock_mono_deadline(int64_t epoch_deadline_ms);

/* Sleeps ms milliseconds (nothing for ms <= 0), resuming after signals;
 * cannot fail. */
void clock_sleep_ms(int64_t ms);

/* Exponential backoff: first, 2 * first, ... capped at max. */
struct backoff {
    int64_t first_ms; /* the first wait */
    int64_t max_ms;   /* no wait is longer */
    int64_t next_ms;  /* the wait backoff_next gives next */
};

/* Readies a backoff (first_ms > 0, max_ms >= first_ms); cannot fail. */
void backoff_init(struct backoff *b, int64_t first_ms, int64_t max_ms);

/* Returns the next wait and doubles the one after it, up to max; cannot fail. */
int64_t backoff_next(struct backoff *b);

/* Starts again from the first wait (after a success); cannot fail. */
void backoff_reset(struct backoff *b);

#endif
