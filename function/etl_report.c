/* etl_report.c - what an invocation reports besides its answer: one log line
 * for each rejected record, the batch summary line, and the metrics line
 * CloudWatch reads (Embedded Metric Format).  Log fields are counts, ids and
 * reason codes, never a record's values. */
#include <string.h>

#include "clock.h"
#include "etl_int.h"

void report_rejected(const struct etl *e, size_t i, const char *reason)
{
    log_at(e->lg, LOG_WARN, "record rejected", LF_STR("messageId", e->ev.records[i].message_id),
           LF_STR("reason", reason));
}

/* One CloudWatch Embedded Metric Format line for the invocation. */
static void write_metrics(const struct etl *e, const struct tally *t, int64_t duration_ms,
                          const struct rt_invocation *inv)
{
    struct buf b;
    buf_init(&b, 4096);
    buf_printf(&b,
               "{\"_aws\":{\"Timestamp\":%lld,\"CloudWatchMetrics\":[{\"Namespace\":\"LoginEtl\","
               "\"Dimensions\":[[\"FunctionName\"]],\"Metrics\":["
               "{\"Name\":\"RecordsReceived\",\"Unit\":\"Count\"},"
               "{\"Name\":\"RecordsWritten\",\"Unit\":\"Count\"},"
               "{\"Name\":\"RecordsDuplicate\",\"Unit\":\"Count\"},"
               "{\"Name\":\"RecordsRejected\",\"Unit\":\"Count\"},"
               "{\"Name\":\"RecordsFailed\",\"Unit\":\"Count\"},"
               "{\"Name\":\"RecordsQuarantined\",\"Unit\":\"Count\"},"
               "{\"Name\":\"Duration\",\"Unit\":\"Milliseconds\"},"
               "{\"Name\":\"ColdStart\",\"Unit\":\"Count\"}]}]},\"FunctionName\":",
               (long long)clock_epoch_ms());
    buf_append_json(&b, e->cfg.function_name, strlen(e->cfg.function_name));
    buf_printf(&b,
               ",\"RecordsReceived\":%zu,\"RecordsWritten\":%zu,\"RecordsDuplicate\":%zu,"
               "\"RecordsRejected\":%zu,\"RecordsFailed\":%zu,\"RecordsQuarantined\":%zu,"
               "\"Duration\":%lld,\"ColdStart\":%d,\"requestId\":",
               t->received, t->written, t->duplicate, t->rejected, t->failed, t->quarantined,
               (long long)duration_ms, inv->cold_start ? 1 : 0);
    buf_append_json(&b, inv->request_id, strlen(inv->request_id));
    buf_appends(&b, "}\n");
    if (!b.err)
        log_raw(e->lg, b.data, b.len);
    buf_free(&b);
}

void report_batch(const struct etl *e, const struct tally *t, int64_t duration_ms,
                  const struct rt_invocation *inv)
{
    struct pg_stats ps;

    pg_batch_stats(e->sink, &ps);
    log_at(e->lg, LOG_INFO, "batch done", LF_NUM("received", t->received),
           LF_NUM("written", t->written), LF_NUM("duplicate", t->duplicate),
           LF_NUM("rejected", t->rejected), LF_NUM("quarantined", t->quarantined),
           LF_NUM("failed", t->failed), LF_NUM("attempts", ps.attempts),
           LF_NUM("durationMs", duration_ms));
    write_metrics(e, t, duration_ms, inv);
    drift_report(&e->drift, e->lg, e->cfg.function_name, login_field_name, LOGIN_FIELDS,
                 inv->request_id);
}
