/* pg.h - the Postgres sink: one connection kept across invocations, the
 * schema, and the exactly-once write of a batch (docs/behaviour.md, "Postgres writing rules").
 *
 * A batch is written in one transaction: the batch's messages go to the
 * ledger table login_etl_ledger_v3, keyed by (slot, sent_at, message_id):
 * the UTC day of the message's SentTimestamp (which SQS never changes
 * between receives) modulo 18, the SentTimestamp, then the id as a uuid
 * (SQS ids are UUIDs; any other id is mapped to one by SHA-256).  They go by
 * COPY ... (FORMAT binary), streamed to the server while the caller is still
 * parsing the event; then the rows go to user_logins by COPY, streamed while
 * the caller validates and masks them; then COMMIT.  A message committed
 * before makes the ledger COPY fail with a unique violation: the
 * transaction is rolled back, the messages already in the ledger are looked
 * up, and the batch is written again without them (the encoded tuples are
 * kept, so nothing is parsed twice).  Because the key starts with a day and
 * a time, a batch's index inserts land on the few pages that hold recent
 * times, and its cost does not grow with the ledger's history.  The ledger
 * is partitioned by slot; once a day each process sees to the slot of 16
 * days ago, which no redelivery can need any more, and clears it with one
 * TRUNCATE (pg_retention.c), or with bounded DELETE steps where TRUNCATE is
 * refused.  Ledgers of the earlier layouts (login_etl_ledger_v2,
 * login_etl_ledger) are consulted too, for as long as their entries can
 * matter.
 *
 * A row the server refuses for its data (a trigger's RAISE EXCEPTION, a
 * CHECK constraint, an index entry over the b-tree limit) is taken out and
 * the rest written in the same invocation: the error names the COPY line,
 * the rows COPY (behind a savepoint) is rolled back and sent again without
 * that row; an error that names no row (a deferred constraint, fired just
 * before COMMIT) takes every row back out to a savepoint before them and
 * writes them again, constraints made immediate, in parts cut smaller and
 * smaller (one transaction per part as a last resort).
 *
 * No SQL text is ever built from message values: they travel only as COPY
 * data and as binary query parameters.  Nothing is set for the session, so
 * a transaction-pooling proxy can multiplex the connection.
 *
 * The sink is written in function/pg_*.c, one concern a file, around the
 * private header function/pg_int.h, which lists them. */
#ifndef PG_H
#define PG_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"
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

/* A source of the password for each new connection (e.g. a signed IAM
 * token): sets *password to a string valid until the next call (NULL for
 * none).  Returns RC_OK, or a failure with err filled (never quoting it). */
typedef rc_t (*pg_password_fn)(void *ctx, const char **password, char err[ERR_LEN]);

/* Makes every connect ask fn(ctx) for the password, which then overrides
 * any in the connection settings; fn NULL stops that.  Cannot fail. */
void pg_sink_set_password_fn(struct pg_sink *s, pg_password_fn fn, void *ctx);

/* Closes the connection, wipes the settings and frees the sink; NULL allowed. */
void pg_sink_free(struct pg_sink *s);

/* Starts a batch; cannot fail.  The first key (pg_batch_key) opens (or
 * re-opens) the connection and starts the transaction without waiting for
 * the server, so that keys and rows stream while the caller works; a
 * failure there is retried, within the time limit, by pg_batch_commit.  A
 * batch without keys never touches the database; one whose keys all end
 * without a row is rolled back.  `give_up_at_ms` (clock_mono_ms, base/clock.h) is
 * the moment after which no database work may go on. */
void pg_batch_begin(struct pg_sink *s, int64_t give_up_at_ms);

/* Adds a message's ledger key: its SQS message id (borrowed until the
 * batch ends; ids are unique within a batch: the caller removes repeats)
 * and its SentTimestamp in ms since the epoch (-1 when the message has
 * none).  Its row, or the lack of one, is given later (pg_batch_row,
 * pg_batch_no_row), keys being decided in the order they were added.  The
 * keys go to the ledger COPY as they come, so that the server inserts
 * them while the caller is still parsing the event; the first one opens
 * (or re-opens) the connection and the transaction.  Returns RC_OK,
 * RC_NOMEM or RC_TOOBIG (a batch over the payload limit, which cannot
 * happen for a valid event); the key's index is the count of earlier
 * successful adds. */
rc_t pg_batch_key(struct pg_sink *s, const char *message_id, size_t message_id_len,
                  int64_t sent_ms);

/* No more keys are coming (the event is parsed): the ledger COPY ends as
 * soon as its tuples are out, and the rows COPY starts after it, streaming
 * each row as it is given.  Cannot fail (a failure is retried by
 * pg_batch_commit). */
void pg_batch_keys_done(struct pg_sink *s);

/* Gives the row of the first key not yet decided; the row's values are
 * copied.  Returns RC_OK, RC_NOMEM or RC_TOOBIG (the key is then still
 * undecided). */
rc_t pg_batch_row(struct pg_sink *s, const struct pg_row *row);

/* The first key not yet decided has no row (its record was rejected, or
 * is left for a retry): nothing is written for it, and its ledger entry,
 * if the transaction's ledger COPY took it already, is deleted again
 * before COMMIT (without DELETE on the ledger, the batch is written again
 * without it).  Its outcome is PG_NOT_WRITTEN.  Cannot fail. */
void pg_batch_no_row(struct pg_sink *s);

/* Frees what an outsized batch left allocated (per-row arrays, tuple
 * buffers), between batches.  Cannot fail. */
void pg_sink_trim(struct pg_sink *s);

/* pg_batch_key and pg_batch_row at once (a key whose row cannot be encoded
 * is left without one, and the failure returned). */
rc_t pg_batch_add(struct pg_sink *s, const char *message_id, size_t message_id_len, int64_t sent_ms,
                  const struct pg_row *row);

/* A FIFO batch (call after pg_batch_begin): a row the server refuses stops
 * the batch there; the rows after it are not written, to keep the order. */
void pg_batch_fifo(struct pg_sink *s);

/* What became of a row (pg_batch_commit's `outcome`). */
enum pg_outcome {
    PG_WRITTEN = 0,     /* committed by this batch */
    PG_DUPLICATE = 1,   /* not written: its message id had been committed before */
    PG_REFUSED = 2,     /* not written: the server refused its data (SQLSTATE class 22, 23,
                         * P0001 or 54000), which a retry would not change */
    PG_NOT_WRITTEN = 3, /* not written: after a refused row of a FIFO batch, or left when
                         * the time limit came in the middle of isolating a refused row */
    PG_QUARANTINED = 4  /* kept in login_etl_rejected, committed with the batch
                         * (pg_batch_quarantine; a refused row, with pg_sink_quarantine) */
};

/* Quarantine (function/pg_quarantine.c): a record the function will never
 * accept is stored, masked, in login_etl_rejected by the batch's own
 * transaction, and its message id in the ledger, so that SQS may delete it
 * and a replay adds nothing. */

/* Writes the masked body of the record of key `key` to out (appending);
 * returns RC_OK, or RC_NOMEM / RC_CRYPTO (the batch fails). */
typedef rc_t (*pg_body_fn)(void *ctx, size_t key, struct buf *out);

/* Makes the sink quarantine the rows the server refuses for their data
 * (reason database_rejected) instead of leaving them to a retry; fn gives
 * each one's masked body.  fn NULL stops that.  Cannot fail. */
void pg_sink_quarantine(struct pg_sink *s, pg_body_fn fn, void *ctx);

/* Adds a rejected record to the batch's quarantine: its message id
 * (borrowed until the batch ends; never one of the batch's keys), its
 * SentTimestamp (ms, -1 when none), its reason code (a static string) and
 * its masked body (copied).  *index identifies it for
 * pg_batch_quarantined.  Returns RC_OK, RC_NOMEM or RC_TOOBIG. */
rc_t pg_batch_quarantine(struct pg_sink *s, const char *message_id, size_t message_id_len,
                         int64_t sent_ms, const char *reason, const char *body, size_t body_len,
                         size_t *index);

/* After pg_batch_commit returned RC_OK: what became of quarantine entry
 * `index`: PG_QUARANTINED, PG_DUPLICATE (committed before), or
 * PG_NOT_WRITTEN (left for a retry).  Cannot fail. */
enum pg_outcome pg_batch_quarantined(const struct pg_sink *s, size_t index);

/* Writes the batch and commits it, retrying a lost connection while time is
 * left; keys still undecided have no row.  On RC_OK, `outcome` (one byte
 * per key, allocated by the
 * caller) holds each row's enum pg_outcome.  Returns RC_OK; RC_TIMEOUT when
 * the time limit came first; RC_DB (err says why by SQLSTATE, table and
 * constraint, never the server's text, which can quote row values) when the
 * database failed after bounded retries; RC_NOMEM.  On any failure nothing
 * of the batch is committed and the connection is closed, to be re-opened
 * by the next batch; except when refused rows were named, or a part of the
 * batch committed while isolating them, before the failure: then RC_OK,
 * with the rows not committed PG_NOT_WRITTEN. */
rc_t pg_batch_commit(struct pg_sink *s, uint8_t *outcome, char err[ERR_LEN]);

/* 1 when the last connection attempt failed because the server refused the
 * credentials (SQLSTATE 28P01 or 28000: a rotated password, say); 0
 * otherwise.  After pg_batch_commit failed that way, the batch is still
 * whole: give new settings with pg_sink_set_conninfo and call
 * pg_batch_commit again. */
int pg_sink_auth_refused(const struct pg_sink *s);

/* Abandons a batch that was begun: rolls back what was sent (closing the
 * connection when that cannot be done in time); cannot fail. */
void pg_batch_abort(struct pg_sink *s);

/* Statistics of the last committed batch, for logs and metrics. */
struct pg_stats {
    unsigned attempts;   /* transactions tried (2 or more after a replay or a lost connection) */
    unsigned reconnects; /* connections opened during the batch */
    int64_t pruned;      /* expired ledger entries deleted after the previous commit */
    int64_t write_us;    /* time from the first row sent to COMMIT acknowledged */
};
void pg_batch_stats(const struct pg_sink *s, struct pg_stats *out);

#endif
