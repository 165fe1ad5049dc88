/* drift.h - schema drift of the message bodies: top-level fields the rules
 * do not know, and known fields absent, counted per invocation (metrics
 * FieldsUnknown, FieldMissing by field, RecordsDrifted; docs/operations.md).
 *
 * A record has drifted when it has a top-level field the rules do not know:
 * a renamed field ("ip" sent as "ip_address") always brings one, a new field
 * too.  A known field absent alone is not drift: most fields are optional
 * (docs/behaviour.md), and a producer that never sends app_version would
 * otherwise count every record; the absences are counted by field
 * (FieldMissing, shown on the dashboard, watched by no alarm), and a
 * required field absent is a rejection of its own.
 *
 * Only field names are kept, never a value; and a name is a producer's
 * untrusted text, so only names of at most DRIFT_NAME_MAX characters of
 * [A-Za-z0-9_.-] are kept, and at most DRIFT_NAMES of them an invocation:
 * any other counts as "other" without its text. */
#ifndef DRIFT_H
#define DRIFT_H

#include <stddef.h>

#include "buf.h"
#include "json.h"
#include "log.h"

#define DRIFT_FIELDS_MAX 8 /* known fields, at most */
#define DRIFT_NAMES 8      /* unknown names kept an invocation */
#define DRIFT_NAME_MAX 40  /* characters of a name kept */

struct drift {
    size_t records;                   /* drifted bodies: with an unknown top-level field */
    size_t unknown;                   /* unknown top-level fields, over all bodies */
    size_t missing[DRIFT_FIELDS_MAX]; /* bodies without known field f (null is not absent) */
    char names[DRIFT_NAMES][DRIFT_NAME_MAX + 1]; /* distinct unknown names kept, NUL-ended */
    size_t nnames;
    size_t other; /* unknown fields whose name was not kept (see the top) */
};

/* Empties d; cannot fail. */
void drift_reset(struct drift *d);

/* Adds the drift of one body, a JSON object (doc's root): idx[f] is the
 * value token of known field f or -1 (json_members with `known`).  Cannot
 * fail. */
void drift_note(struct drift *d, const struct json_doc *doc, const long *idx,
                const struct json_names *known);

/* Appends the kept unknown names to out, comma-separated, then ",other"
 * when some were not kept.  Cannot fail (out's sticky error). */
void drift_unknown_names(const struct drift *d, struct buf *out);

/* When a body drifted, logs one line naming the fields (unknown names as
 * drift_unknown_names, the known ones absent with their counts over all
 * bodies; never a value) and writes one line in CloudWatch Embedded Metric
 * Format with RecordsDrifted and FieldsUnknown by FunctionName; and, drifted
 * or not, one EMF line per absent known field with FieldMissing by
 * FunctionName and Field.  field(f) names
 * known field f of `fields`.  Cannot fail (a line that does not fit is
 * dropped). */
void drift_report(const struct drift *d, struct logger *lg, const char *function_name,
                  const char *(*field)(size_t f), size_t fields, const char *request_id);

#endif
