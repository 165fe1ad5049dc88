/* etl_quarantine.c - the handler's side of the quarantine (pg_quarantine.c
 * is the sink's): a record the function will never accept goes to the sink
 * with its body masked whole under the current key, so that nothing of it
 * is stored in the clear and `bootstrap unmask` recovers it; and what
 * became of it once the batch was written. */
#include <stdint.h>

#include "etl_int.h"
#include "mask.h"

/* The masked body of record r, appended to out.  Returns RC_OK, RC_NOMEM,
 * RC_TOOBIG or RC_CRYPTO. */
static rc_t masked_body(const struct etl *e, const struct sqs_record *r, struct buf *out)
{
    return mask_value_long(keyset_current(e->masking), r->body ? r->body : "",
                           r->body ? r->body_len : 0, out);
}

rc_t quarantine_body(void *ctx, size_t key, struct buf *out)
{
    struct etl *e = ctx;
    return masked_body(e, &e->ev.records[e->record[key]], out);
}

rc_t quarantine_record(struct etl *e, size_t i, enum login_reason why)
{
    const struct sqs_record *r = &e->ev.records[i];
    struct buf masked;
    size_t index = 0;

    buf_init(&masked, SIZE_MAX / 4);
    rc_t rc = masked_body(e, r, &masked);
    if (rc == RC_OK)
        rc = pg_batch_quarantine(e->sink, r->message_id, r->message_id_len, r->sent_ms,
                                 login_reason_code(why), masked.data, masked.len, &index);
    buf_free(&masked);
    if (rc == RC_OK) {
        e->status[i] = ST_QUARANTINING;
        e->key[i] = (uint32_t)index;
        e->quarantining++;
    }
    return rc;
}

uint8_t quarantine_status(const struct etl *e, size_t i, rc_t rc)
{
    if (rc)
        return ST_NOT_DONE;
    switch (pg_batch_quarantined(e->sink, e->key[i])) {
    case PG_QUARANTINED:
        return ST_QUARANTINED;
    case PG_DUPLICATE:
        return ST_DUPLICATE;
    default:
        return ST_NOT_DONE;
    }
}
