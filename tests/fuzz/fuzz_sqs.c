/* fuzz_sqs.c - libFuzzer target: the input is a whole SQS event, as an
 * attacker who controls message bodies (or a broken poller) could shape it.
 *
 * Runs sqs_parse, then login_parse on every record, with the parsers reused
 * across inputs as in production, and aborts when a result breaks what the
 * caller relies on: a failed parse leaves no records; every record has a
 * non-empty, NUL-terminated messageId of valid UTF-8 without U+0000; a body
 * view lies inside the event or the scratch buffer; SentTimestamp is -1 or in
 * range, and -1 when flagged bad; a login reason is in range, and a row is
 * either valid (user_id set) or all zero.  The event is parsed record at a
 * time (sqs_parse, which hands each record out as the tokenizer closes it)
 * and the whole-document way (sqs_parse_whole): both must give the same
 * result, error text and records.  Seeds: tests/fuzz/corpus/sqs/. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "login.h"
#include "sqs.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Returns 1 when p[0..n) lies within [base, base + len). */
static int inside(const char *p, size_t n, const char *base, size_t len)
{
    return base && p >= base && n <= len && (size_t)(p - base) <= len - n;
}

/* Counts the records handed out, which must come in order. */
static rc_t on_record(void *ctx, const struct sqs_event *e, size_t idx, char err[ERR_LEN])
{
    size_t *calls = ctx;
    (void)err;
    if (idx != (*calls)++ || idx >= e->n || !e->records[idx].message_id)
        abort();
    return RC_OK;
}

/* Aborts unless both parses gave the same records. */
static void same_records(const struct sqs_event *a, const struct sqs_event *b)
{
    if (a->n != b->n || a->fifo != b->fifo)
        abort();
    for (size_t i = 0; i < a->n; i++) {
        const struct sqs_record *x = &a->records[i], *y = &b->records[i];
        if (x->message_id_len != y->message_id_len ||
            memcmp(x->message_id, y->message_id, x->message_id_len + 1) != 0 ||
            (x->body == NULL) != (y->body == NULL) || x->body_len != y->body_len ||
            (x->body && memcmp(x->body, y->body, x->body_len) != 0) || x->sent_ms != y->sent_ms ||
            x->sent_bad != y->sent_bad || x->receive_count != y->receive_count ||
            x->body_flags != y->body_flags)
            abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct sqs_event ev, whole;
    static struct login_parser lp;
    static int ready;
    const char *text = (const char *)data;
    char err[ERR_LEN];

    if (!ready) {
        sqs_init(&ev);
        sqs_init(&whole);
        login_parser_init(&lp);
        ready = 1;
    }
    char err_whole[ERR_LEN];
    size_t calls = 0;
    rc_t rc = sqs_parse_stream(&ev, text, size, on_record, &calls, err);
    rc_t rc_whole = sqs_parse_whole(&whole, text, size, err_whole);
    if (rc != rc_whole || (rc != RC_OK && strcmp(err, err_whole) != 0))
        abort();
    if (rc == RC_OK) {
        same_records(&ev, &whole);
        if (ev.handed > ev.n || (!ev.voided && calls != ev.handed) ||
            (ev.voided && (ev.handed != 0 || calls == 0)))
            abort();
    }
    if (rc != RC_OK) {
        if (rc != RC_INVALID || ev.n != 0 || !memchr(err, 0, ERR_LEN))
            abort();
        return 0;
    }
    if (ev.fifo != 0 && ev.fifo != 1)
        abort();
    for (size_t i = 0; i < ev.n; i++) {
        const struct sqs_record *r = &ev.records[i];
        struct login_row row;

        if (!r->message_id || r->message_id_len == 0 || r->message_id[r->message_id_len] != 0 ||
            strlen(r->message_id) != r->message_id_len ||
            !inside(r->message_id, r->message_id_len + 1, ev.scratch.data, ev.scratch.len))
            abort();
        if (r->body && !inside(r->body, r->body_len, text, size) &&
            !inside(r->body, r->body_len, ev.scratch.data, ev.scratch.len))
            abort();
        if (!r->body && (r->body_len || r->body_flags))
            abort();
        if (r->sent_bad ? r->sent_ms != -1 : r->sent_ms < -1 || r->sent_ms > 253402300799999LL)
            abort();
        if (r->receive_count < 0)
            abort();

        enum login_reason why;
        if (login_parse(&lp, r->body, r->body_len, r->body_flags, r->sent_ms, r->sent_bad,
                        1700000000000LL, &row, &why) != RC_OK)
            abort();
        if ((unsigned)why >= LOGIN__COUNT)
            abort();
        if (why == LOGIN_OK ? !row.user_id : row.user_id != NULL)
            abort();
        if (!r->body && why != LOGIN_BODY_MISSING)
            abort();
        if ((r->body_flags & JSON_HAS_NUL) && r->body && why != LOGIN_BODY_NUL)
            abort();
    }
    return 0;
}
