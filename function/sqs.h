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

/* One record.  Laid out small on purpose (40 bytes): a 6 MB event can hold
 * 170,000 tiny records, and this array is one of the few that grow with
 * their count.  Lengths fit 32 bits because an event is at most 2 GiB. */
struct sqs_record {
    const char *message_id; /* decoded messageId, NUL-terminated, non-empty, valid UTF-8
                               without U+0000 (safe to echo in the answer); borrowed */
    const char *body;       /* decoded body (the message's own JSON text); borrowed, may
                               hold any bytes including NUL: use body_len.  NULL when
                               "body" is absent or not a string (the record is rejected) */
    int64_t sent_ms;        /* attributes.SentTimestamp, ms since the epoch, 0 to
                               253402300799999 (year 9999); -1 if absent or bad */
    uint32_t message_id_len;
    uint32_t body_len;
    int32_t receive_count; /* attributes.ApproximateReceiveCount; 0 if absent, bad or
                              over INT32_MAX */
    uint8_t body_flags;    /* JSON_BAD_UTF8 | JSON_HAS_NUL of the body string, or 0 */
    uint8_t sent_bad;      /* 1 if SentTimestamp is present but not a string of 1 to 19
                              decimal digits within that range (JSON null included) */
};

struct sqs_event {
    struct sqs_record *records; /* owned array of n records, in event order */
    size_t n;
    size_t handed;                 /* sqs_parse_stream: records [0, handed) went to its fn */
    int voided;                    /* sqs_parse_stream: records went to fn that do not count
                                      (a later "Records" member won); handed is then 0 */
    size_t cap;                    /* records allocated; kept across sqs_parse calls */
    int fifo;                      /* 1 when eventSourceARN (of any record) ends in ".fifo" */
    struct json_doc doc;           /* owned tokens, needed only while parsing (records borrow
                                      from the event text and from scratch); kept for the
                                      next event unless over 16 MiB */
    struct buf scratch;            /* owned: decoded strings */
    struct json_names record_keys; /* a record's keys sqs_parse reads, prepared once */
    struct json_names attr_keys;   /* the same for its "attributes" */
};

/* Initialises an empty event; allocates nothing. */
void sqs_init(struct sqs_event *ev);

/* Parses an SQS event of len bytes.  The event text must outlive ev (records
 * point into it and into ev->scratch, valid until the next sqs_parse or
 * sqs_free).  Returns RC_OK; RC_INVALID when it is not an SQS event (not
 * JSON, not an object, no "Records" array, a record that is not an object or
 * lacks a non-empty string messageId, or whose messageId holds U+0000 or
 * invalid UTF-8 and so cannot be echoed back), with err saying which and
 * where, never quoting values; RC_TOOBIG (over 2 GiB) or RC_NOMEM.  With
 * duplicate keys the last wins (json_get).  Reuses ev's memory from an
 * earlier call; on failure ev->n is 0. */
rc_t sqs_parse(struct sqs_event *ev, const char *event, size_t len, char err[ERR_LEN]);

/* Called by sqs_parse_stream with record idx (ev->records[idx], and every
 * record before it, parsed and valid) as soon as the tokenizer has closed
 * its object, before the rest of the event is read.  Returns RC_OK, or a
 * failure with err filled: fn is then called no more, and sqs_parse_stream
 * returns that failure unless the event proves invalid. */
typedef rc_t (*sqs_record_fn)(void *ctx, const struct sqs_event *ev, size_t idx, char err[ERR_LEN]);

/* sqs_parse, handing each record to fn (NULL: none) as soon as it is
 * parsed, so that the caller works while the rest of the event is read.
 * Accepts and rejects exactly the events sqs_parse_whole does, with the
 * same records; an event found invalid after records went to fn fails all
 * the same (the caller undoes what it did with them).  On RC_OK the
 * records [0, ev->handed) went to fn and the rest [handed, n) did not (all
 * of them when a later duplicate "Records" member won; ev->voided then
 * says whether fn had been given records of the losing one, and a failure
 * fn returned for those is dropped). */
rc_t sqs_parse_stream(struct sqs_event *ev, const char *event, size_t len, sqs_record_fn fn,
                      void *ctx, char err[ERR_LEN]);

/* sqs_parse the whole-document way: the event tokenized first, its records
 * extracted after.  The reference sqs_parse_stream is tested against; the
 * same contract as sqs_parse. */
rc_t sqs_parse_whole(struct sqs_event *ev, const char *event, size_t len, char err[ERR_LEN]);

/* Frees everything ev owns; cannot fail. */
void sqs_free(struct sqs_event *ev);

/* Frees the record array when it holds room for over `keep` records (left
 * by an outsized event); the next parse allocates again.  Cannot fail. */
void sqs_trim(struct sqs_event *ev, size_t keep);

#endif
