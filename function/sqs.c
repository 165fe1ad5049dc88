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

#include "grow.h"
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
    *ev = (struct sqs_event){.records = NULL}; /* every other member zero, too */
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

/* See sqs.h. */
void sqs_trim(struct sqs_event *ev, size_t keep)
{
    if (ev->cap > keep) {
        free(ev->records);
        ev->records = NULL;
        ev->cap = 0;
        ev->n = 0;
    }
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

/* Makes ev->records hold n records (grow.h).  Returns RC_OK or RC_NOMEM. */
static rc_t reserve_records(struct sqs_event *ev, size_t n)
{
    const struct grow_array records = {&ev->records, sizeof *ev->records};

    return n <= ev->cap ? RC_OK : grow_arrays(&records, 1, &ev->cap, n, 256);
}

/* Fills record k from the element at token t, which must be an object.
 * Returns as parse_record; err says which record, never quoting values. */
static rc_t take_record(struct sqs_event *ev, uint32_t t, size_t k, char err[ERR_LEN])
{
    if (ev->doc.tok[t].type != JSON_OBJECT) {
        snprintf(err, ERR_LEN, "not an SQS event: record %zu is not an object", k);
        return RC_INVALID;
    }
    rc_t rc = parse_record(ev, t, k, err);
    if (rc != RC_OK && rc != RC_INVALID)
        snprintf(err, ERR_LEN, "out of memory for decoded strings");
    return rc;
}

/* What the tokenizer's element callback (on_element) works with. */
struct stream {
    struct sqs_event *ev;
    sqs_record_fn fn; /* NULL: records are only extracted */
    void *ctx;
    size_t len;       /* bytes of the event */
    const char *base; /* scratch's data once reserved (at the first record), else NULL */
    uint32_t array;   /* the array the records came from; UINT32_MAX before its first */
    size_t n;         /* records extracted from it */
    rc_t rc;          /* the first failure: a record's, or RC_NOMEM */
    rc_t fn_rc;       /* fn's first failure (fn is called no more after one) */
    char err[ERR_LEN];
    char fn_err[ERR_LEN];
};

/* json_elem_fn: extracts the record just completed and hands it to the
 * caller's fn.  Returns JSON_ELEM_FORGET, or JSON_ELEM_STOP after a failure
 * (no more records). */
static int on_element(void *ctx, const struct json_doc *doc, uint32_t array, uint32_t elem)
{
    struct stream *st = ctx;
    struct sqs_event *ev = st->ev;

    (void)doc;
    st->array = array;
    /* Once, at the first record: decoded strings never outgrow their raw
     * bytes; +1 NUL per messageId, and a record with one takes 17 bytes of
     * the event at least.  So scratch never moves while records point into
     * it. */
    if (!st->base) {
        if (buf_reserve(&ev->scratch, st->len + st->len / 16 + 2) != RC_OK) {
            snprintf(st->err, ERR_LEN, "out of memory for decoded strings");
            st->rc = RC_NOMEM;
            return JSON_ELEM_STOP;
        }
        st->base = ev->scratch.data;
    }
    if (reserve_records(ev, st->n + 1) != RC_OK) {
        snprintf(st->err, ERR_LEN, "out of memory for %zu records", st->n + 1);
        st->rc = RC_NOMEM;
        return JSON_ELEM_STOP;
    }
    if ((st->rc = take_record(ev, elem, st->n, st->err)) != RC_OK)
        return JSON_ELEM_STOP;
    ev->n = ++st->n;
    if (st->fn && st->fn_rc == RC_OK)
        st->fn_rc = st->fn(st->ctx, ev, st->n - 1, st->fn_err);
    /* The record holds pointers into the event and scratch, no token: its
     * tokens are reused for the next one, so the token array stays the size
     * of one record however many there are (a 6 MB event of the tiniest
     * records took 17 MB of them). */
    return JSON_ELEM_FORGET;
}

/* Extracts every record of the array at token `recs` from the finished
 * document (the whole-document way).  Returns RC_OK or the first record's
 * failure, with err filled. */
static rc_t records_from(struct sqs_event *ev, uint32_t recs, size_t len, char err[ERR_LEN])
{
    struct json_doc *doc = &ev->doc;
    size_t n = doc->tok[recs].count;
    rc_t rc;

    if (reserve_records(ev, n) != RC_OK) {
        snprintf(err, ERR_LEN, "out of memory for %zu records", n);
        return RC_NOMEM;
    }
    /* Decoded strings never outgrow their raw bytes; +1 NUL per messageId. */
    if ((rc = buf_reserve(&ev->scratch, len + n + 1)) != RC_OK) {
        snprintf(err, ERR_LEN, "out of memory for decoded strings");
        return rc;
    }
    const char *base = ev->scratch.data;
    uint32_t t = recs + 1;
    for (size_t k = 0; k < n; k++) {
        if ((rc = take_record(ev, t, k, err)) != RC_OK)
            return rc;
        t = doc->tok[t].next;
    }
    assert(ev->scratch.data == base); /* the records' pointers are still good */
    (void)base;
    ev->n = n;
    return RC_OK;
}

/* Finds the root object's "Records" array.  Returns its token, or -1 with
 * err filled (the event is not an SQS event). */
static long records_array(const struct json_doc *doc, char err[ERR_LEN])
{
    if (doc->tok[0].type != JSON_OBJECT) {
        snprintf(err, ERR_LEN, "not an SQS event: the root is not an object");
        return -1;
    }
    long recs = json_get(doc, 0, "Records");
    if (recs < 0 || doc->tok[recs].type != JSON_ARRAY) {
        snprintf(err, ERR_LEN, "not an SQS event: no \"Records\" array");
        return -1;
    }
    return recs;
}

/* Starts a parse: no record yet, nothing decoded.  Cannot fail. */
static void start(struct sqs_event *ev)
{
    ev->n = 0;
    ev->fifo = 0;
    ev->handed = 0;
    ev->voided = 0;
    buf_reset(&ev->scratch);
}

/* Ends a parse: on failure no record is left; an oversized token array is
 * freed.  Returns rc. */
static rc_t finish(struct sqs_event *ev, rc_t rc)
{
    if (rc != RC_OK)
        ev->n = 0;
    /* The records need no token once parsed.  The record-at-a-time parse
     * keeps one record's tokens at a time; the whole-document parse (and a
     * later "Records" member that wins) holds them all: about 5 MB for a
     * realistic 6 MB event (a 10 MB array after doubling at worst), kept
     * for the next event, and 17 MB for an event of the tiniest records (a
     * 20 MB array), which would otherwise stay resident. */
    if ((size_t)ev->doc.cap * sizeof *ev->doc.tok > SQS_TOKENS_KEEP)
        json_free(&ev->doc);
    return rc;
}

/* See sqs.h: the whole document first, then its records. */
rc_t sqs_parse_whole(struct sqs_event *ev, const char *event, size_t len, char err[ERR_LEN])
{
    rc_t rc;
    long recs;

    start(ev);
    if ((rc = json_parse(&ev->doc, event, len, err)) != RC_OK)
        return finish(ev, rc);
    if ((recs = records_array(&ev->doc, err)) < 0)
        return finish(ev, RC_INVALID);
    return finish(ev, records_from(ev, (uint32_t)recs, len, err));
}

/* See sqs.h.  Each record is extracted when the tokenizer closes it; the
 * finished document then decides, as sqs_parse_whole would, whether the
 * event stands: the records came from the array json_get finds (else they
 * are extracted again from that one), and no record failed. */
rc_t sqs_parse_stream(struct sqs_event *ev, const char *event, size_t len, sqs_record_fn fn,
                      void *ctx, char err[ERR_LEN])
{
    static const struct json_name records = {"Records", 7};
    struct stream st = {.ev = ev, .fn = fn, .ctx = ctx, .len = len, .array = UINT32_MAX};
    rc_t rc;
    long recs;

    start(ev);
    rc = json_parse_stream(&ev->doc, event, len, &records, on_element, &st, err);
    ev->handed = fn ? st.n : 0;
    if (rc != RC_OK)
        return finish(ev, rc);
    if ((recs = records_array(&ev->doc, err)) < 0)
        return finish(ev, RC_INVALID);
    if ((uint32_t)recs != st.array && ev->doc.tok[recs].count > 0) {
        /* Another "Records" member came later and wins (json_get): what was
         * handed out does not count; the winner's records are extracted
         * the whole-document way. */
        ev->voided = st.n > 0 && fn;
        ev->handed = 0;
        ev->n = 0;
        ev->fifo = 0;
        buf_reset(&ev->scratch);
        return finish(ev, records_from(ev, (uint32_t)recs, len, err));
    }
    if ((uint32_t)recs != st.array) {
        /* An empty array wins over any records extracted before. */
        ev->voided = st.n > 0 && fn;
        ev->handed = 0;
        ev->n = 0;
        ev->fifo = 0;
        return finish(ev, RC_OK);
    }
    assert(!st.base || ev->scratch.data == st.base); /* the records' pointers are still good */
    if (st.rc != RC_OK) {
        snprintf(err, ERR_LEN, "%s", st.err);
        return finish(ev, st.rc);
    }
    if (st.fn_rc != RC_OK) {
        snprintf(err, ERR_LEN, "%s", st.fn_err);
        return finish(ev, st.fn_rc);
    }
    return finish(ev, RC_OK);
}

/* See sqs.h. */
rc_t sqs_parse(struct sqs_event *ev, const char *event, size_t len, char err[ERR_LEN])
{
    return sqs_parse_stream(ev, event, len, NULL, NULL, err);
}
