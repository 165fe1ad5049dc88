/* num.h - the one bounded parser for numbers that come from outside
 * (HTTP headers, environment, JSON strings).  Never atoi/strtol directly. */
#ifndef NUM_H
#define NUM_H

#include <stddef.h>
#include <stdint.h>

#include "result.h"

/* Parses exactly n bytes as an optional '-' followed by 1 to 19 decimal digits,
 * with no spaces or '+', into a value within [min, max].  Returns RC_OK, or
 * RC_INVALID (not a number, out of range); *out is untouched on failure. */
rc_t num_parse_i64(const char *s, size_t n, int64_t min, int64_t max, int64_t *out);

/* Parses exactly n bytes of hexadecimal digits (either case, at most 16) into
 * a value no larger than max.  Returns RC_OK or RC_INVALID. */
rc_t num_parse_hex(const char *s, size_t n, uint64_t max, uint64_t *out);

#endif
