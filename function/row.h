/* row.h - the user_logins row of a valid login record: its columns as
 * login.c read them, and its ip and device_id masked.  The handler's step
 * between validation and the database, on its own so that the stage
 * benchmark (tests/bench/stages.c) times the function's own code. */
#ifndef ROW_H
#define ROW_H

#include "login.h"
#include "mask.h"
#include "pg.h"
#include "result.h"

#define MASKED_COLUMN_MAX 256 /* varchar(256) of masked_ip and masked_device_id */

/* Fills row with lr's columns and its ip and device_id masked with key into
 * ip_out and device_out (MASK_OUTPUT_MAX bytes each), which the row then
 * points into, as it does into lr's strings.  Returns RC_OK with *why:
 * LOGIN_OK, or LOGIN_MASKED_TOO_LONG when the masked device_id would not fit
 * its column (the record is rejected); or mask_value's failure (RC_CRYPTO:
 * the batch fails, not the record). */
rc_t row_build(const struct mask_key *key, const struct login_row *lr, struct pg_row *row,
               char *ip_out, char *device_out, enum login_reason *why);

#endif
