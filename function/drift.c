/* drift.c - schema drift of the message bodies (see drift.h). */
#include "drift.h"

#include <string.h>

#include "clock.h"

void drift_reset(struct drift *d)
{
    memset(d, 0, sizeof *d);
}

/* Is s[0..n) a name that may be logged: 1 to DRIFT_NAME_MAX characters of
 * [A-Za-z0-9_.-]?  Cannot fail. */
static int printable_name(const char *s, size_t n)
{
    if (n == 0 || n > DRIFT_NAME_MAX)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '.' || c == '-'))
            return 0;
    }
    return 1;
}

/* Counts unknown name s[0..n) (escaped: its text is not read), keeping it
 * when it may be logged and there is room.  Cannot fail. */
static void note_unknown(struct drift *d, const char *s, size_t n, int escaped)
{
    d->unknown++;
    if (escaped || !printable_name(s, n)) {
        d->other++;
        return;
    }
    for (size_t k = 0; k < d->nnames; k++)
        if (strlen(d->names[k]) == n && memcmp(d->names[k], s, n) == 0)
            return;
    if (d->nnames == DRIFT_NAMES) {
        d->other++;
        return;
    }
    memcpy(d->names[d->nnames], s, n);
    d->names[d->nnames++][n] = '\0';
}

/* Is member key token `key` one of the known names?  Cannot fail. */
static int known_name(const struct json_doc *doc, uint32_t key, const struct json_names *known)
{
    for (size_t f = 0; f < known->count; f++)
        if (json_streq(doc, key, known->names[f].s, known->names[f].n))
            return 1;
    return 0;
}

/* See drift.h.  The members are walked only when the object has more of
 * them than known fields were found: the common body costs a count. */
void drift_note(struct drift *d, const struct json_doc *doc, const long *idx,
                const struct json_names *known)
{
    size_t found = 0;

    for (size_t f = 0; f < known->count && f < DRIFT_FIELDS_MAX; f++) {
        found += idx[f] >= 0;
        d->missing[f] += idx[f] < 0;
    }
    size_t unknown_before = d->unknown;
    if (doc->tok[0].count > found) {
        uint32_t key = 1;
        for (uint32_t m = 0; m < doc->tok[0].count; m++) {
            const struct json_tok *t = &doc->tok[key];
            if (!known_name(doc, key, known))
                note_unknown(d, doc->text + t->start, t->end - t->start,
                             (t->flags & JSON_ESCAPED) != 0);
            key = doc->tok[key + 1].next;
        }
    }
    /* An absent known field alone is no drift (drift.h): optional fields are. */
    d->records += d->unknown > unknown_before;
}

void drift_unknown_names(const struct drift *d, struct buf *out)
{
    for (size_t k = 0; k < d->nnames; k++)
        buf_printf(out, "%s%s", k ? "," : "", d->names[k]);
    if (d->other)
        buf_printf(out, "%sother", d->nnames ? "," : "");
}

/* Starts an EMF line of one metric set: namespace LoginEtl, the dimensions
 * `dims` (a JSON array of names), the metrics `metrics` (JSON objects).
 * Cannot fail (b's sticky error). */
static void emf_head(struct buf *b, const char *dims, const char *metrics,
                     const char *function_name)
{
    buf_printf(b,
               "{\"_aws\":{\"Timestamp\":%lld,\"CloudWatchMetrics\":[{\"Namespace\":\"LoginEtl\","
               "\"Dimensions\":[%s],\"Metrics\":[%s]}]},\"FunctionName\":",
               (long long)clock_epoch_ms(), dims, metrics);
    buf_append_json(b, function_name, strlen(function_name));
}

/* Ends an EMF line with the request id and logs it; cannot fail. */
static void emf_end(struct buf *b, struct logger *lg, const char *request_id)
{
    buf_appends(b, ",\"requestId\":");
    buf_append_json(b, request_id, strlen(request_id));
    buf_appends(b, "}\n");
    if (!b->err)
        log_raw(lg, b->data, b->len);
}

void drift_report(const struct drift *d, struct logger *lg, const char *function_name,
                  const char *(*field)(size_t f), size_t fields, const char *request_id)
{
    char unknown[DRIFT_NAMES * (DRIFT_NAME_MAX + 1) + 8], missing[DRIFT_FIELDS_MAX * 40];
    struct buf b;

    buf_wrap(&b, missing, sizeof missing);
    for (size_t f = 0; f < fields && f < DRIFT_FIELDS_MAX; f++)
        if (d->missing[f])
            buf_printf(&b, "%s%s=%zu", b.len ? "," : "", field(f), d->missing[f]);
    if (d->records == 0 && b.len == 0)
        return;
    if (d->records) {
        buf_wrap(&b, unknown, sizeof unknown);
        drift_unknown_names(d, &b);
        log_at(lg, LOG_WARN, "schema drift", LF_NUM("records", d->records),
               LF_NUM("unknownFields", d->unknown), LF_STR("unknown", unknown),
               LF_STR("missing", missing));
    }
    buf_init(&b, 4096);
    if (d->records) {
        emf_head(&b, "[\"FunctionName\"]",
                 "{\"Name\":\"RecordsDrifted\",\"Unit\":\"Count\"},"
                 "{\"Name\":\"FieldsUnknown\",\"Unit\":\"Count\"}",
                 function_name);
        buf_printf(&b, ",\"RecordsDrifted\":%zu,\"FieldsUnknown\":%zu", d->records, d->unknown);
        emf_end(&b, lg, request_id);
    }
    for (size_t f = 0; f < fields && f < DRIFT_FIELDS_MAX; f++) {
        if (!d->missing[f])
            continue;
        buf_reset(&b);
        emf_head(&b, "[\"FunctionName\",\"Field\"]",
                 "{\"Name\":\"FieldMissing\",\"Unit\":\"Count\"}", function_name);
        buf_printf(&b, ",\"Field\":\"%s\",\"FieldMissing\":%zu", field(f), d->missing[f]);
        emf_end(&b, lg, request_id);
    }
    buf_free(&b);
}
