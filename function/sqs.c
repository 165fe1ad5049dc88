/* sqs.c - extracts messageId, body and two attributes of every record of an
 * SQS event, on top of the strict tokenizer.
 *
 * Memory: the tokens live in ev->doc; decoded strings (messageIds, always
 * copied so they can carry a NUL terminator, and bodies that contain
 * escapes) live in ev->scratch.  Scratch is reserved once per event for the
 * worst case (every string decodes to at most its raw length, plus one NUL
 * per messageId), so it never moves while records point into it. */
#include "sqs.h"

#include <assert.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "num.h"

#define SQS_SENT_MAX INT64_C(253402300799999) /* 9999-12-31T23:59:59.999Z */

enum { K_MESSAGE_ID, K_BODY, K_ATTRIBUTES, K_ARN, K__COUNT };
static const struct json_name record_names[K__COUNT] = {
    [K_MESSAGE_ID] = {"messageId", 9},
    [K_BODY] = {"body", 4},
    [K_ATTRIBUTES] = {"attributes", 10},
    [K_ARN] = {"eventSourceARN", 14},
};
enum { A_SENT, A_COUNT, A__COUNT };
static const struct json_name attr_names[A__COUNT] = {
    [A_SENT] = {"SentTimestamp", 13},
    [A_COUNT] = {"ApproximateReceiveCount", 23},
};

/* See sqs.h: an empty event; allocates nothing, cannot fail. */
void sqs_init(struct sqs_event *ev)
{
    ev->records = NULL;
    ev->n = 0;
    ev->cap = 0;
    ev->fifo = 0;
    json_init(&ev->doc);
    buf_init(&ev->scratch, SIZE_MAX / 4);
    json_names_init(&ev->record_keys, record_names, K__COUNT);
    json_names_init(&ev->attr_keys, attr_names, A__COUNT);
}

/* See sqs.h: frees records, tokens and scratch; ev is reusable after it. */
void sqs_free(struct sqs_event *ev)
{
    free(ev->records);
    json_free(&ev->doc);
    buf_free(&ev->scratch);
    sqs_init(ev);
}

/* Gives the decoded string at token i (pointer into the event or into
 * scratch).  Returns RC_OK; RC_INVALID when i is absent (-1) or not a
 * string; RC_NOMEM/RC_TOOBIG from scratch (cannot happen after the
 * reservation in sqs_parse). */
static rc_t get_str(struct sqs_event *ev, long i, const char **s, size_t *n)
{
    if (i < 0)
        return RC_INVALID;
    return json_string(&ev->doc, (uint32_t)i, &ev->scratch, s, n);
}

/* Reads an "attributes" value that must be a string of decimal digits into
 * [0, max].  Returns RC_OK, or RC_INVALID (not a string, empty, a sign, a
 * non-digit, out of range); *out is untouched on failure. */
static rc_t get_digits(struct sqs_event *ev, long i, int64_t max, int64_t *out)
{
    const char *s;
    size_t n;

    if (get_str(ev, i, &s, &n) != RC_OK)
        return RC_INVALID;
    if (n == 0 || s[0] < '0' || s[0] > '9') /* num_parse_i64 would take "-0" */
        return RC_INVALID;
    return num_parse_i64(s, n, 0, max, out);
}

/* Fills one record from the object at token `obj`.  Returns RC_OK,
 * RC_INVALID (messageId absent, not a string, empty, with U+0000 or bad
 * UTF-8) with err saying which record, or a scratch error. */
static rc_t parse_record(struct sqs_event *ev, uint32_t obj, size_t idx, char err[ERR_LEN])
{
    struct json_doc *doc = &ev->doc;
    struct sqs_record *r = &ev->records[idx];
    long at[K__COUNT], attr[A__COUNT];
    const char *s;
    size_t n;
    long i;
    rc_t rc;

    r->body = NULL;
    r->body_len = 0;
    r->body_flags = 0;
    r->sent_ms = -1;
    r->sent_bad = 0;
    r->receive_count = 0;
    json_members(doc, obj, &ev->record_keys, at);

    i = at[K_MESSAGE_ID];
    if (i < 0 || doc->tok[i].type != JSON_STRING) {
        snprintf(err, ERR_LEN, "record %zu has no string messageId", idx);
        return RC_INVALID;
    }
    if (doc->tok[i].flags & (JSON_HAS_NUL | JSON_BAD_UTF8)) {
        snprintf(err, ERR_LEN, "record %zu: messageId has U+0000 or invalid UTF-8", idx);
        return RC_INVALID;
    }
    if ((rc = get_str(ev, i, &s, &n)) != RC_OK)
        return rc;
    if (n == 0) {
        snprintf(err, ERR_LEN, "record %zu has an empty messageId", idx);
        return RC_INVALID;
    }
    /* Always a copy in scratch, so that it can end in a NUL.  An escaped id
     * was decoded into scratch just now: only the NUL is missing. */
    if (!(doc->tok[i].flags & JSON_ESCAPED)) {
        if ((rc = buf_append(&ev->scratch, s, n)) != RC_OK)
            return rc;
        s = ev->scratch.data + ev->scratch.len - n;
    }
    if ((rc = buf_appendc(&ev->scratch, '\0')) != RC_OK)
        return rc;
    r->message_id = s;
    r->message_id_len = (uint32_t)n; /* the event is at most 2 GiB (sqs_parse) */

    i = at[K_BODY];
    if (i >= 0 && doc->tok[i].type == JSON_STRING) {
        if ((rc = get_str(ev, i, &r->body, &n)) != RC_OK)
            return rc;
        r->body_len = (uint32_t)n;
        r->body_flags = doc->tok[i].flags & (JSON_BAD_UTF8 | JSON_HAS_NUL);
    }

    /* "attributes" that is absent or not an object: no attributes. */
    i = at[K_ATTRIBUTES];
    if (i >= 0 && doc->tok[i].type == JSON_OBJECT) {
        int64_t v;
        json_members(doc, (uint32_t)i, &ev->attr_keys, attr);
        if (attr[A_SENT] >= 0 && get_digits(ev, attr[A_SENT], SQS_SENT_MAX, &r->sent_ms) != RC_OK)
            r->sent_bad = 1;
        if (attr[A_COUNT] >= 0 && get_digits(ev, attr[A_COUNT], INT32_MAX, &v) == RC_OK)
            r->receive_count = (int32_t)v;
    }

    i = at[K_ARN];
    if (i >= 0 && doc->tok[i].type == JSON_STRING && get_str(ev, i, &s, &n) == RC_OK && n >= 5 &&
        memcmp(s + n - 5, ".fifo", 5) == 0)
        ev->fifo = 1;
    return RC_OK;
}

/* Token arrays larger than this are freed after parsing, not kept. */
#define SQS_TOKENS_KEEP (16u << 20)

/* See sqs.h.  The only allocations are the token array, the record array
 * and one scratch reservation, all reused by the next call (the token array
 * only up to SQS_TOKENS_KEEP bytes). */
rc_t sqs_parse(struct sqs_event *ev, const char *event, size_t len, char err[ERR_LEN])
{
    struct json_doc *doc = &ev->doc;
    rc_t rc;
    long recs;

    ev->n = 0;
    ev->fifo = 0;
    buf_reset(&ev->scratch);
    if ((rc = json_parse(doc, event, len, err)) != RC_OK)
        goto out;
    rc = RC_INVALID;
    if (doc->tok[0].type != JSON_OBJECT) {
        snprintf(err, ERR_LEN, "not an SQS event: the root is not an object");
        goto out;
    }
    recs = json_get(doc, 0, "Records");
    if (recs < 0 || doc->tok[recs].type != JSON_ARRAY) {
        snprintf(err, ERR_LEN, "not an SQS event: no \"Records\" array");
        goto out;
    }
    size_t n = doc->tok[recs].count;
    if (n > ev->cap) {
        struct sqs_record *r = realloc(ev->records, n * sizeof *r);
        if (!r) {
            snprintf(err, ERR_LEN, "out of memory for %zu records", n);
            rc = RC_NOMEM;
            goto out;
        }
        ev->records = r;
        ev->cap = n;
    }
    /* Decoded strings never outgrow their raw bytes; +1 NUL per messageId. */
    if ((rc = buf_reserve(&ev->scratch, len + n + 1)) != RC_OK) {
        snprintf(err, ERR_LEN, "out of memory for decoded strings");
        goto out;
    }
    const char *base = ev->scratch.data;
    uint32_t t = (uint32_t)recs + 1;
    for (size_t k = 0; k < n; k++) {
        if (doc->tok[t].type != JSON_OBJECT) {
            snprintf(err, ERR_LEN, "not an SQS event: record %zu is not an object", k);
            rc = RC_INVALID;
            goto out;
        }
        if ((rc = parse_record(ev, t, k, err)) != RC_OK) {
            if (rc != RC_INVALID)
                snprintf(err, ERR_LEN, "out of memory for decoded strings");
            goto out;
        }
        t = doc->tok[t].next;
    }
    assert(ev->scratch.data == base); /* the records' pointers are still good */
    (void)base;
    ev->n = n;
    rc = RC_OK;
out:
    if (rc != RC_OK)
        ev->n = 0;
    /* The records need no token once parsed.  A realistic 6 MB event takes
     * about 5 MB of them (a 10 MB array after doubling at worst), kept for
     * the next event; an event of the tiniest records takes 17 MB (a 20 MB
     * array), which would otherwise stay resident next to the id set, the
     * rows and the answer of its own batch. */
    if ((size_t)doc->cap * sizeof *doc->tok > SQS_TOKENS_KEEP)
        json_free(doc);
    return rc;
}
