/* pg.h - the Postgres sink: one connection kept across invocations, the
 * schema, and the exactly-once write of a batch.
 *
 * A batch is written in one transaction: the batch's messages go to the
 * ledger table login_etl_ledger_v2, keyed by (sent_at, message_id): the
 * message's SentTimestamp, which SQS never changes between receives, then
 * its id.  They go by COPY ... (FORMAT binary), streamed to the server while
 * the caller is still parsing and masking the rest of the batch; then the
 * rows go to user_logins by COPY; then COMMIT.  A message committed before
 * makes the ledger COPY fail with a unique violation: the transaction is
 * rolled back, the messages already in the ledger are looked up, and the
 * batch is written again without them (the encoded tuples are kept, so
 * nothing is parsed twice).  Because the key starts with a time, a batch's
 * index inserts land on the few pages that hold recent times, and its cost
 * does not grow with the ledger's history; after each commit, a bounded
 * step of a sweep in key order deletes entries sent over 16 days ago and
 * committed over 15 days ago (pg.c, PRUNE_SQL).  A ledger of the earlier layout (login_etl_ledger,
 * keyed by the id alone) is consulted too, for as long as its entries can matter.
 *
 * No SQL text is ever built from message values: they travel only as COPY
 * data and as binary query parameters.  Nothing is set for the session, so
 * a transaction-pooling proxy can multiplex the connection. */
#ifndef PG_H
#define PG_H

#include <stddef.h>
#include <stdint.h>

#include "log.h"
#include "result.h"

/* One user_logins row.  Text is (pointer, length), not NUL-terminated,
 * borrowed until pg_batch_add returns; a NULL pointer is SQL NULL. */
struct pg_row {
    const char *user_id;
    size_t user_id_len;
    const char *device_type;
    size_t device_type_len;
    const char *masked_ip;
    size_t masked_ip_len;
    const char *masked_device_id;
    size_t masked_device_id_len;
    const char *locale;
    size_t locale_len;
    int has_app_version; /* 0: app_version is NULL */
    int32_t app_version;
    int32_t create_date; /* days since 1970-01-01 */
};

struct pg_sink; /* opaque: the connection, its settings and the batch being written */

/* Creates a sink that connects with `conninfo` (a URL or key=value string;
 * NULL or "" lets libpq read PGHOST, PGUSER...).  Does not connect yet: the
 * connection is opened by the first batch, but OpenSSL's random generator,
 * which libpq's authentication needs, is set up now.  Returns NULL on out of
 * memory (or when that generator cannot start). */
struct pg_sink *pg_sink_new(const char *conninfo, struct logger *lg);

/* Replaces the connection settings (e.g. read from a secret on the first
 * invocation); closes any open connection.  The old string is wiped, as it may
 * hold a password.  Returns RC_OK or RC_NOMEM. */
rc_t pg_sink_set_conninfo(struct pg_sink *s, const char *conninfo);

/* Closes the connection, wipes the settings and frees the sink; NULL allowed. */
void pg_sink_free(struct pg_sink *s);

/* Starts a batch; cannot fail.  The first pg_batch_add opens (or re-opens)
 * the connection and starts the transaction without waiting for the server,
 * so that rows stream while the caller works; a failure there is retried,
 * within the time limit, by pg_batch_commit.  A batch without rows never
 * touches the database.  `give_up_at_ms` (Unix epoch ms) is the moment after
 * which no database work may go on. */
void pg_batch_begin(struct pg_sink *s, int64_t give_up_at_ms);

/* Adds a row with its SQS message id (borrowed until the batch ends; ids are
 * unique within a batch: the caller removes repeats) and the message's
 * SentTimestamp in ms since the epoch (-1 when the message has none).
 * Encodes it and sends what the server can take without blocking.  Returns
 * RC_OK, RC_NOMEM or RC_TOOBIG (a batch over the payload limit, which cannot
 * happen for a valid event); the row's index is the count of earlier
 * successful adds. */
rc_t pg_batch_add(struct pg_sink *s, const char *message_id, size_t message_id_len, int64_t sent_ms,
                  const struct pg_row *row);

/* Writes the batch and commits it, retrying a lost connection while time is
 * left.  On RC_OK, `duplicate` (one byte per added row, allocated by the
 * caller) says which rows were not written because their message id had been
 * committed before.  Returns RC_OK; RC_TIMEOUT when the time limit came
 * first; RC_DB (err says why, never quoting row values) when the database
 * failed after bounded retries; RC_NOMEM.  On any failure nothing of the
 * batch is committed and the connection is closed, to be re-opened by the next
 * batch. */
rc_t pg_batch_commit(struct pg_sink *s, uint8_t *duplicate, char err[ERR_LEN]);

/* Abandons a batch that was begun (rolls back); cannot fail. */
void pg_batch_abort(struct pg_sink *s);

/* Statistics of the last committed batch, for logs and metrics. */
struct pg_stats {
    unsigned attempts;   /* transactions tried (2 or more after a replay or a lost connection) */
    unsigned reconnects; /* connections opened during the batch */
    int64_t pruned;      /* expired ledger entries deleted after the commit */
    int64_t write_us;    /* time from the first row sent to COMMIT acknowledged */
};
void pg_batch_stats(const struct pg_sink *s, struct pg_stats *out);

#endif
