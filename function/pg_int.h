/* pg_int.h - the Postgres sink's private header: what its rooms share, the
 * way libpq's files share libpq-int.h.  pg.h is the API; this is for
 * function/pg_*.c and their unit tests only.
 *
 * The rooms, from the ground up; each calls only the rooms above it in this
 * list, never one below:
 *   pg_tuple.c      binary encoding: COPY tuples, ledger keys and slots, query
 *                   parameters (pure functions, no connection)
 *   pg_conn.c       the connection: opening it, bounded socket waits, reading
 *                   results (pg_drain), running statements, naming failures
 *   pg_ledger.c     the ledger's lookups: ids committed before (in the ledger and
 *                   in its earlier layouts), keys taken back out before COMMIT
 *   pg_retention.c  the daily clearing of the day slot that expired: what to send
 *                   (pure) and reading its answer
 *   pg_schema.c     the tables: created when missing, checked once per process
 *   pg_copy.c       the COPY engine: a transaction's ledger COPY, then its rows
 *                   COPY, streamed while the caller still adds keys and rows
 *   pg_isolate.c    refused rows: found by the line the server names, or by
 *                   cutting the rows into parts
 *   pg_quarantine.c records never accepted, kept in login_etl_rejected with the
 *                   batch's transaction
 *   pg_tx.c         one transaction of the batch, step by step (enum tx_step),
 *                   and the retries of a lost connection
 *   pg_batch.c      the API of pg.h: the sink's life, and a batch's from begin
 *                   to commit
 *
 * Every wait on the server is bounded by the batch's give-up time, and the
 * connection runs in libpq's non-blocking mode, so that a database that
 * hangs (a held lock, a black-holed network) cannot make the function miss
 * its deadline. */
#ifndef PG_INT_H
#define PG_INT_H

#include <stddef.h>
#include <stdint.h>

#include <libpq-fe.h>

#include "buf.h"
#include "idset.h"
#include "log.h"
#include "pg.h"
#include "result.h"

/* The ledger, the function's own table beside user_logins (pg_schema.c
 * creates both), keyed by (slot, sent_at, message_id) and partitioned BY
 * LIST (slot) into LEDGER_SLOTS + 1 partitions made once, with the table:
 *  - slot: the UTC day of the message's SentTimestamp modulo LEDGER_SLOTS,
 *    computed by the function from SentTimestamp alone, so that every receive
 *    of a message (SQS never changes SentTimestamp) meets its entry; slot
 *    SLOT_NONE holds the messages without a SentTimestamp (sent_at
 *    -infinity) and the upgrade markers (pg_ledger.c).  A day's slot is
 *    written for that day (and the day after, by messages sent just before
 *    midnight); on day d, slot (d + 2) mod LEDGER_SLOTS holds the entries of
 *    day d - 16, which SQS can no longer deliver (it keeps a message 14 days
 *    at most), so retention clears it whole with TRUNCATE (pg_retention.c)
 *    instead of deleting entry by entry: no dead index entries, no vacuum.
 *  - sent_at: SentTimestamp, so that a batch's index inserts land on the few
 *    pages holding recent times (they stay in memory), not on random pages
 *    of an index that grows with 14 days of history.
 *  - message_id: a uuid, 16 bytes compared as such (pg_ledger_key): SQS ids
 *    are lowercase canonical UUIDs; any other id is mapped to a UUID by
 *    SHA-256.
 * committed_at serves retention: no entry is removed before LEDGER_RETENTION
 * has passed since it was committed and since it was sent (docs/design.md,
 * "The ledger"). */
#define LEDGER "login_etl_ledger_v3"
#define LEDGER_SLOTS 18 /* day slots; the 19th (SLOT_NONE) has no day */
#define SLOT_NONE LEDGER_SLOTS
#define LEDGER_RETENTION "15 days" /* SQS keeps a message 14 days at most */
#define DAY_MS INT64_C(86400000)   /* a UTC day */
/* SLOT_NONE as SQL text ("18"), for the statements that name it. */
#define PG_STR_(x) #x
#define PG_STR(x) PG_STR_(x)
#define SLOT_NONE_SQL PG_STR(SLOT_NONE)
/* Reserved message_ids in slot SLOT_NONE: markers of the earlier ledger
 * layouts (pg_ledger.c), version-0 UUIDs no message can have, which
 * retention never deletes. */
#define MARKER_V1 "00000000-0000-0000-0000-000000000000"
#define MARKER_V2 "00000000-0000-0000-0000-000000000001"
#define MARKERS "('" MARKER_V1 "', '" MARKER_V2 "')"

/* The quarantine (pg_quarantine.c): records the function will never accept,
 * their bodies masked.  Created by pg_schema.c when missing. */
#define REJECTED "login_etl_rejected"

/* The rows' COPY runs behind a savepoint, so that a row the server refuses
 * (a trigger, a CHECK constraint) costs a rollback of that COPY only, not of
 * the ledger COPY before it.  Starting a savepoint is free until it is used.
 * The first rows COPY of a transaction also starts login_etl_batch, the
 * point to return to when a refusal names no row (all the rows out, the
 * ledger kept). */
#define SAVEPOINT_SQL "SAVEPOINT login_etl_rows; "
#define BATCH_SAVEPOINT_SQL "SAVEPOINT login_etl_batch; "
/* login_etl_rows is ended after each rows COPY: released (start_op, before
 * the next one) or rolled back and released.  A savepoint set again under
 * its own name nests inside the one before, and when a nested subtransaction
 * writes, every open one around it is given a transaction id and its lock:
 * thousands of refusals would hold thousands of locks (SQLSTATE 53200). */
#define RELEASE_ROWS_SQL "RELEASE SAVEPOINT login_etl_rows; "
#define ROLLBACK_ROWS_SQL "ROLLBACK TO SAVEPOINT login_etl_rows; RELEASE SAVEPOINT login_etl_rows"
#define ROLLBACK_BATCH_SQL "ROLLBACK TO SAVEPOINT login_etl_batch"
/* Makes deferred constraints (and constraint triggers) fire at the end of
 * each statement, so that a row they refuse fails its own rows COPY; before
 * COMMIT, so that they fire while login_etl_batch can still be returned to. */
#define IMMEDIATE_SQL "SET CONSTRAINTS ALL IMMEDIATE"

#define NO_ROW ((size_t)-1) /* no row: the server named none, or none is left */
#define TAIL_CHUNK 64       /* rows in the first COPY after a refused row (pg_next_part) */
/* Rows COPYs a transaction keeps (each a subtransaction that wrote, whose id
 * the backend keeps until the end) before the parts that go in are rolled
 * back and written together at the end (RS_PASSED, ROWS_FINAL).  With
 * login_etl_batch, the COPY in flight and the final one, this stays under
 * PostgreSQL's cache of 64 subtransaction ids per backend, past which every
 * other session's snapshots get slower while the transaction is open,
 * whatever the share of rows refused. */
#define KEPT_MAX 48

/* What became of each row of the batch (s->state).  Any state but
 * RS_PENDING keeps the row out of the COPYs. */
enum row_state {
    RS_PENDING = 0, /* to be written */
    RS_DUP,         /* its id was committed before */
    RS_REFUSED,     /* the server refused its data (a trigger, a constraint, a limit) */
    RS_CUT,         /* FIFO: after a refused row, so not written to keep the order */
    RS_DONE,        /* committed by an earlier transaction of this batch (isolation) */
    RS_OUT,         /* outside the part of the batch the current transaction writes */
    RS_NO_ROW,      /* a key without a row (pg_batch_no_row): not to be written, and its id
                     * taken back out of the ledger when it went in (s->in_ledger) */
    RS_PASSED,      /* went in, in a part rolled back because the transaction kept KEPT_MAX
                     * parts already: written with the others in one last COPY (ROWS_FINAL) */
    RS_KEPT         /* in a part the open transaction kept, while the RS_PASSED rows go in
                     * (ROWS_FINAL): RS_PENDING again once they are in */
};

/* Whether a key is in the open transaction's ledger (s->in_ledger): its
 * ledger COPY took the key, and the key's row is not to be written (refused,
 * cut, or none), so the entry is taken back out before COMMIT (pg_unledger).
 * A row still to be written is always KEY_NOT_IN_LEDGER. */
enum ledger_mark { KEY_NOT_IN_LEDGER = 0, KEY_IN_LEDGER = 1 };

/* The COPY of the open transaction in progress (s->tx.op). */
enum copy_op {
    OP_LEDGER, /* the batch's keys into the ledger */
    OP_ROWS,   /* the rows into user_logins, behind login_etl_rows */
    OP_DONE    /* both are in */
};

/* Where the COPY in progress is (s->tx.phase). */
enum phase {
    PH_IDLE,     /* no statement in flight: the next is op's COPY (BEGIN first at OP_LEDGER) */
    PH_STARTING, /* op's COPY was sent, waiting for the server to accept its data */
    PH_COPYING,  /* op's COPY is open: its tuples before `sent` have been handed to libpq */
    PH_ENDING,   /* op's COPY was ended, waiting for the server's row count */
    PH_BROKEN    /* this attempt failed (s->why); the transaction is retried or given up */
};

/* Why the open transaction's COPYs stopped before their end (s->tx.halt).
 * The failed COPY's answer is all in once the phase is PH_IDLE again. */
enum halt {
    HALT_NONE,
    HALT_DUPLICATE,      /* the ledger COPY met an id committed before (23505): the
                          * transaction is void */
    HALT_LEDGER_REFUSED, /* the ledger COPY was refused for a key's data: void too */
    HALT_ROWS_REFUSED    /* the rows COPY was refused for a row's data: it is rolled back to
                          * login_etl_rows, the rest of the transaction stands */
};

/* How the open transaction's rows go in (s->tx.rows). */
enum rows_plan {
    ROWS_STREAM,  /* the rows COPY streams rows [from, to): all of them, or after a refused
                   * row the next part of the rest (pg_next_part) */
    ROWS_RERUN,   /* the rows before a refused row are sent again: they passed once, so a
                   * refusal now cannot be trusted to name its row */
    ROWS_ISOLATE, /* a refusal named no row: the rows go in part by part (pg_isolate_rows) */
    ROWS_FINAL    /* the RS_PASSED rows in one COPY: a refusal now is of rows that passed
                   * alone, so the batch is isolated by transactions (pg_unattributed) */
};

/* The open transaction: where its COPYs are and how its rows go in.  All of
 * it is reset for each transaction (pg_tx_reset). */
struct pg_tx {
    enum phase phase;
    enum copy_op op;
    size_t sent;         /* op's tuples before this one were handed to libpq */
    int header_sent;     /* op's COPY header went out */
    enum halt halt;      /* why the COPYs stopped short, if they did */
    size_t refused_row;  /* HALT_*_REFUSED: the row the server named, or NO_ROW */
    size_t from, to;     /* the rows COPY writes rows [from, to) (to is clamped to the rows
                            known) */
    enum rows_plan rows; /* how the rows go in */
    size_t chunk;        /* rows in the next part after a refused row (pg_next_part) */
    int batch_savepoint; /* login_etl_batch was set in this transaction */
    int rows_savepoint;  /* login_etl_rows is set and not ended (released before the next) */
    size_t kept;         /* rows COPYs that went in behind login_etl_rows and were kept */
};

/* Where one transaction of the batch is (pg_tx.c, attempt): one of its
 * steps, or, from TX_COMMITTED on, how it ended. */
enum tx_step {
    TX_COPY,         /* the ledger COPY, then the rows COPY (in parts after a refused row) */
    TX_ISOLATE,      /* a refusal named no row: the rows go in part by part */
    TX_EARLIER,      /* the earlier ledger layouts are read for the batch's ids */
    TX_UNLEDGER,     /* the ids of the rows not written come back out of the ledger */
    TX_QUARANTINE,   /* the records never accepted go into login_etl_rejected */
    TX_COMMIT,       /* SET CONSTRAINTS ALL IMMEDIATE; COMMIT */
    TX_COMMITTED,    /* end: committed, or nothing was left to write */
    TX_AGAIN,        /* end: rolled back after rows were marked (committed before, a
                      * refused key, ids that cannot leave the ledger): the rest is
                      * written again at once */
    TX_UNATTRIBUTED, /* end: rolled back after a refusal that named no row and that the
                      * savepoints could not contain: isolate by transactions */
    TX_FAILED        /* end: failed; s->why says why, s->retryable whether to retry */
};

/* Where a process's retention is for the day (s->ret.stage). */
enum ret_stage {
    RET_IDLE,     /* the day's slot was seen to (ret.day), or is to be checked */
    RET_TRUNCATE, /* the slot holds entries: to be truncated */
    RET_SWEEP     /* the slot is swept by DELETE */
};

/* The ledger's retention (pg_retention.c): once per UTC day per process, the
 * slot that expired is checked, then truncated or swept. */
struct pg_retention {
    struct logger *lg;    /* borrowed */
    enum ret_stage stage; /* where the day's retention is */
    enum ret_stage sent;  /* the kind of the step in flight (RET_IDLE: the day's check) */
    int pending;          /* a step was sent after a COMMIT; its answer is unread */
    int prune_off;        /* DELETE on the ledger was refused: no sweep is tried again */
    int truncate_off;     /* TRUNCATE of a slot was refused: slots are swept instead */
    int64_t day;          /* the UTC day (since the epoch) whose slot was seen to; -1: none */
    int64_t for_day;      /* the UTC day of the step in flight or in progress */
    int slot;             /* the slot retention works on for for_day */
    int64_t retry_at;     /* clock_mono_ms: no step before this */
    int64_t prune_from;   /* Unix epoch us: the sweep goes on at this sent_at (INT64_MIN:
                             -infinity, the slot's oldest entry) ... */
    int prune_past;       /* ... or just after it: a step could not leave that sent_at */
    int64_t pruned;       /* expired entries deleted since the batch began */
};

/* What trying a part of the batch whole came to (pg_isolate_range). */
enum tried {
    TRIED_WHOLE,    /* it went in without a refusal */
    TRIED_SORTED,   /* the server named its refused rows: they are out, the rest went in */
    TRIED_UNSETTLED /* refused without a row that can be trusted: to be cut into parts */
};

/* What is known of a part before it is tried (struct range). */
enum range_hint {
    RANGE_UNTRIED, /* tried whole first */
    RANGE_BAD,     /* known to hold a refused row: cut at once */
    RANGE_PASSED   /* went in once before a refused row: a refusal naming a row now
                    * cannot be trusted (a failure when rows are flushed in bulk names
                    * the last one read) */
};

/* A part of the batch: rows [from, to). */
struct range {
    size_t from, to;
    enum range_hint hint;
};

struct isolation;
/* Tries the pending rows of part r whole; *tried says what came of it. */
typedef rc_t (*pg_try_fn)(struct pg_sink *s, struct isolation *iso, struct range r,
                          enum tried *tried);

/* One search for refused rows (pg_isolate_range). */
struct isolation {
    pg_try_fn try_part;   /* how a part is tried */
    enum ledger_mark ids; /* where the parts' ids are while they are tried: a refused row
                           * found alone is marked so (pg_refuse_row) */
    int stop;             /* nothing more may be written: a FIFO batch's refused row, or a
                             failure */
};

/* Binary COPY tuples, one per row of the batch, kept until the batch ends so
 * that a retry sends them again without parsing anything twice. */
struct tuples {
    struct buf data; /* the tuples, in add order */
    size_t *end;     /* owned: end offset of each row's tuple in data */
};

/* The batch's quarantine entries (pg_quarantine.c). */
struct q_entry;
struct pg_quarantine {
    struct q_entry *e; /* owned: the entries, in the order added */
    size_t n, cap;
    struct buf bodies;  /* the masked bodies, back to back */
    pg_body_fn body_fn; /* NULL, or refused rows are quarantined with the body it gives */
    int no_insert;      /* the user may not insert into login_etl_rejected (42501, learnt
                           once): rejected records are listed for a retry */
    void *body_ctx;
};

struct pg_sink {
    struct logger *lg;

    /* The connection (pg_conn.c). */
    char *conninfo;             /* owned, wiped when freed: may hold a password */
    pg_password_fn password_fn; /* NULL, or asked for the password at each connect */
    void *password_ctx;
    PGconn *conn;     /* NULL when closed */
    int auth_refused; /* the last connect failed with SQLSTATE 28P01 or 28000 */
    int64_t give_up_at;

    /* What the database is like, learnt once per process. */
    int schema_ready;    /* the tables were checked on this process's behalf (pg_schema.c) */
    unsigned earlier;    /* bit k: the earlier ledger layout k is consulted (pg_ledger.c) */
    int64_t earlier_due; /* clock_mono_ms: the earlier layouts are looked at again; 0 before
                            the first look (pg_find_earlier) */
    int no_delete;       /* the user may not DELETE from the ledger: keys go out only once
                            their row is known (pg_copy.c), and refused rows are left out by
                            writing the batch again (pg_tx.c) */

    /* Why the current attempt failed (pg_fail). */
    char why[ERR_LEN]; /* the reason: SQLSTATE, table, constraint; never the server's text */
    char sqlstate[6];  /* the server's SQLSTATE for it, or "" */
    int retryable;     /* the failure was of the connection, worth another attempt */

    /* The batch: each key (one per message) and its row, in the order added. */
    struct tuples ledger; /* the keys' (slot, sent_at, message_id) tuples, for the ledger */
    struct tuples rows;   /* the rows' tuples, for user_logins: [0, decided) are known
                             (an empty tuple for a key without a row) */
    const char **ids;     /* owned array of borrowed message ids */
    size_t *id_len;       /* owned */
    int64_t *sent_at;     /* owned: each key's sent_at, us since 2000 (INT64_MIN: none) */
    uint8_t *slot;        /* owned: each key's ledger slot */
    uint8_t (*key)[16];   /* owned: each key's message_id in the ledger (pg_ledger_key) */
    uint8_t *state;       /* owned: each row's enum row_state */
    uint8_t *in_ledger;   /* owned: each key's enum ledger_mark */
    size_t n, cap;        /* keys (rows) added; allocated */
    size_t decided;       /* keys whose row (or lack of one) is known: the first `decided` */
    int keys_done;        /* no more keys are coming: the ledger COPY may end */
    int fifo;             /* a refused row stops the batch there (FIFO order) */

    struct pg_tx tx;         /* the open transaction (pg_copy.c, pg_isolate.c, pg_tx.c) */
    struct pg_retention ret; /* the ledger's retention (pg_retention.c) */
    struct pg_quarantine q;  /* records kept in login_etl_rejected (pg_quarantine.c) */
    struct buf scratch;      /* the parameters of a ledger lookup (pg_ledger.c) */
    struct idset lookup;     /* message id or key -> row, for a lookup's answer */
    struct pg_stats stats;
    int64_t first_send_us; /* clock_mono_us of the batch's first COPY data, or 0 */
};

/* --- pg_tuple.c: binary encoding (pure; nothing here needs a connection) --- */

#define PG_KEY_TUPLE_SIZE 40 /* a ledger tuple: (slot smallint, sent_at timestamptz, uuid) */

/* The ledger's message_id for an SQS message id, into key.  Returns RC_OK or
 * RC_NOMEM (the digest could not be computed). */
rc_t pg_ledger_key(const char *id, size_t len, uint8_t key[16]);
/* The ledger slot of a message sent at sent_ms (ms since the Unix epoch; -1
 * when it has none); cannot fail. */
int pg_ledger_slot(int64_t sent_ms);
/* The ledger's sent_at of a message sent at sent_ms: binary timestamptz, us
 * since 2000-01-01; INT64_MIN (-infinity) when it has none.  Cannot fail. */
int64_t pg_sent_at(int64_t sent_ms);
/* Appends the ledger's COPY tuple of a key to b.  Returns RC_OK, or the
 * buffer's failure (RC_NOMEM, RC_TOOBIG) with b as it was. */
rc_t pg_tuple_key(struct buf *b, int slot, int64_t sent_at, const uint8_t key[16]);
/* Appends the COPY tuple of a user_logins row to b.  Returns as pg_tuple_key. */
rc_t pg_tuple_row(struct buf *b, const struct pg_row *row);
/* Big-endian values appended to b, as binary query parameters want (off the
 * hot path: b's sticky error says whether they all went in). */
void pg_put_u16(struct buf *b, uint16_t v);
void pg_put_u32(struct buf *b, uint32_t v);
void pg_put_u64(struct buf *b, uint64_t v);
/* A text element of a binary array: length and bytes; NULL p is SQL NULL. */
void pg_put_text(struct buf *b, const char *p, size_t n);
/* The header of a binary one-dimensional array of `count` elements of type
 * `oid`, without NULLs; the elements follow. */
void pg_put_array_header(struct buf *b, uint32_t oid, size_t count);

/* --- pg_conn.c: the connection, waits, results, failures --- */

/* How a function that reads from the server waits. */
enum io_wait {
    IO_POLL, /* reads what has arrived and returns: never blocks */
    IO_BLOCK /* waits for what it needs, until the give-up time at the latest */
};

/* Whether pg_drain read the command's last result. */
enum drained {
    DRAINED_SO_FAR, /* IO_POLL: what had arrived; more is to come */
    DRAINED_ALL     /* the command is complete */
};

/* Takes one result of a command from pg_drain, and owns it: frees it with
 * PQclear (or keeps it). */
typedef void (*pg_take_fn)(struct pg_sink *s, PGresult *res, void *ctx);

rc_t pg_connect(struct pg_sink *s);
void pg_close(struct pg_sink *s);
void pg_fail(struct pg_sink *s, const PGresult *res, const char *what);
void pg_describe(const struct pg_sink *s, const PGresult *res, const char *what, char *out,
                 size_t len);
int pg_row_data_error(const char *state);
rc_t pg_flush(struct pg_sink *s);
rc_t pg_wait_readable(struct pg_sink *s);
rc_t pg_drain(struct pg_sink *s, enum io_wait wait, pg_take_fn take, void *ctx, const char *what,
              enum drained *drained);
rc_t pg_run(struct pg_sink *s, const char *sql, ExecStatusType expect, PGresult **keep);

/* --- pg_ledger.c: the ledger's lookups --- */

rc_t pg_find_earlier(struct pg_sink *s);
rc_t pg_mark_duplicates(struct pg_sink *s, size_t *found);
rc_t pg_consult_earlier(struct pg_sink *s, int *stale);
rc_t pg_unledger(struct pg_sink *s);

/* --- pg_retention.c: the daily clearing of the expired slot --- */

/* One answer row of a retention step, as text: a tag, then up to 3 values
 * (NULL for SQL NULL). */
struct ret_answer {
    int nfields;
    const char *value[4];
};
void pg_retention_init(struct pg_retention *r, struct logger *lg);
int pg_retention_plan(struct pg_retention *r, int64_t epoch_ms, int64_t mono_ms, size_t written,
                      char *sql, size_t cap);
void pg_retention_answer(struct pg_retention *r, const struct ret_answer *a);
void pg_retention_failed(struct pg_retention *r, const char *state, int64_t mono_ms);
void pg_retention_send(struct pg_sink *s, size_t written);
rc_t pg_retention_collect(struct pg_sink *s, enum io_wait wait);

/* --- pg_schema.c: the tables --- */

rc_t pg_open(struct pg_sink *s);

/* --- pg_copy.c: the COPY engine --- */

void pg_tx_reset(struct pg_sink *s);
rc_t pg_copy_advance(struct pg_sink *s);
rc_t pg_copy_finish(struct pg_sink *s);
rc_t pg_copy_cancel(struct pg_sink *s);
int pg_copy_key_sent(const struct pg_sink *s, size_t i);
unsigned long long pg_copy_context_line(const char *context);
size_t pg_copy_row_at_line(const struct pg_sink *s, unsigned long long line);

/* --- pg_isolate.c: refused rows --- */

size_t pg_pending_in(const struct pg_sink *s, size_t from, size_t to);
void pg_refuse_row(struct pg_sink *s, size_t r, enum ledger_mark ids);
int pg_next_part(struct pg_sink *s);
rc_t pg_part_in(struct pg_sink *s);
int pg_final_part(struct pg_sink *s);
rc_t pg_after_refusal(struct pg_sink *s, enum tx_step *next);
rc_t pg_back_to_batch(struct pg_sink *s, enum tx_step *next);
rc_t pg_unattributed(struct pg_sink *s, enum tx_step *next);
rc_t pg_isolate_range(struct pg_sink *s, struct isolation *iso, struct range r, enum tried *tried);
rc_t pg_isolate_rows(struct pg_sink *s);

/* --- pg_quarantine.c: records kept in login_etl_rejected --- */

void pg_quarantine_reset(struct pg_sink *s);
void pg_quarantine_free(struct pg_sink *s);
size_t pg_quarantine_pending(const struct pg_sink *s);
rc_t pg_quarantine_send(struct pg_sink *s);
void pg_quarantine_committed(struct pg_sink *s);
rc_t pg_quarantine_alone(struct pg_sink *s);
enum pg_outcome pg_quarantine_row(const struct pg_sink *s, size_t r);

/* --- pg_tx.c: one transaction --- */

void pg_disconnect(struct pg_sink *s);
void pg_abandon(struct pg_sink *s);
rc_t pg_write_pending(struct pg_sink *s, enum tx_step *end);
rc_t pg_isolate_by_transactions(struct pg_sink *s);

#endif
