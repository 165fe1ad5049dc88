/* row.c - a valid login record to its user_logins row (see row.h). */
#include "row.h"

#include <string.h>

/* See row.h.  Any failure of mask_value is RC_CRYPTO: the inputs were
 * checked to be within its limits, so only OpenSSL can have failed. */
rc_t row_build(const struct mask_key *key, const struct login_row *lr, struct pg_row *row,
               char *ip_out, char *device_out, enum login_reason *why)
{
    size_t len;
    rc_t rc = RC_OK;

    memset(row, 0, sizeof *row);
    *why = LOGIN_OK;
    row->user_id = lr->user_id;
    row->user_id_len = lr->user_id_len;
    row->device_type = lr->device_type;
    row->device_type_len = lr->device_type_len;
    row->locale = lr->locale;
    row->locale_len = lr->locale_len;
    row->has_app_version = lr->has_app_version;
    row->app_version = lr->app_version;
    row->create_date = lr->create_date;
    if (lr->has_ip) {
        if (mask_value(key, lr->ip, strlen(lr->ip), ip_out, &len) != RC_OK) {
            rc = RC_CRYPTO;
            goto out;
        }
        row->masked_ip = ip_out;
        row->masked_ip_len = len;
    }
    if (lr->device_id) {
        if (lr->device_id_len > MASK_INPUT_MAX ||
            mask_output_len(key, lr->device_id_len) > MASKED_COLUMN_MAX) {
            *why = LOGIN_MASKED_TOO_LONG;
            goto out;
        }
        if (mask_value(key, lr->device_id, lr->device_id_len, device_out, &len) != RC_OK) {
            rc = RC_CRYPTO;
            goto out;
        }
        row->masked_device_id = device_out;
        row->masked_device_id_len = len;
    }
out:
    return rc;
}
