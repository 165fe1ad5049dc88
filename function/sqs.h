/* sqs.h - the SQS event as Lambda's event source mapping delivers it:
 * {"Records":[{"messageId":..., "body":..., "attributes":{...}, ...}]}.
 * Only what the ETL needs is extracted; everything else is ignored. */
#ifndef SQS_H
#define SQS_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "json.h"
#include "result.h"

struct sqs_record {
    const char *message_id; /* decoded messageId, NUL-terminated, non-empty; borrowed */
    size_t message_id_len;
    const char *body; /* decoded body (the message's own JSON text); borrowed, may
                         hold any bytes including NUL: use body_len.  NULL when
                         "body" is absent or not a string (the record is rejected) */
    size_t body_len;
    unsigned body_flags; /* JSON_BAD_UTF8 | JSON_HAS_NUL of the body string, or 0 */
    int64_t sent_ms;     /* attributes.SentTimestamp, ms since the epoch; -1 if absent */
    int sent_bad;        /* 1 if SentTimestamp is present but not a valid number */
    long receive_count;  /* attributes.ApproximateReceiveCount; 0 if absent or bad */
};

struct sqs_event {
    struct sqs_record *records; /* owned array of n records, in event order */
    size_t n;
    int fifo;            /* 1 when eventSourceARN (of any record) ends in ".fifo" */
    struct json_doc doc; /* owned tokens; records borrow from it and from scratch */
    struct buf scratch;  /* owned: decoded strings */
};

/* Initialises an empty event; allocates nothing. */
void sqs_init(struct sqs_event *ev);

/* Parses an SQS event of len bytes.  The event text must outlive ev (records
 * point into it).  Returns RC_OK; RC_INVALID when it is not an SQS event (not
 * JSON, not an object, no "Records" array, a record that is not an object or
 * lacks a non-empty string messageId), with err saying which and where, never
 * quoting values; or RC_NOMEM.  Reuses ev's memory from an earlier call. */
rc_t sqs_parse(struct sqs_event *ev, const char *event, size_t len, char err[ERR_LEN]);

/* Frees everything ev owns; cannot fail. */
void sqs_free(struct sqs_event *ev);

#endif
