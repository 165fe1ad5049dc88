/* pg_int.h - what the rooms of the Postgres sink share (pg.h is its API):
 * the tables' names and layout, the sink's state, and the functions one
 * room calls in another. */
#ifndef PG_INT_H
#define PG_INT_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <libpq-fe.h>

#include "buf.h"
#include "idset.h"
#include "pg.h"

/* The contract's DDL for user_logins, exactly; the function's own ledger
 * beside it.  Each is created only when missing, never altered.  The
 * existence check comes first because CREATE TABLE IF NOT EXISTS still
 * needs CREATE on the schema, which a least-privilege user may not have when
 * the upstream environment created the tables.
 *
 * The ledger is keyed by (slot, sent_at, message_id) and partitioned BY LIST
 * (slot) into LEDGER_SLOTS + 1 partitions made once, with the table:
 *  - slot: the UTC day of the message's SentTimestamp modulo LEDGER_SLOTS,
 *    computed by the function from SentTimestamp alone, so that every receive
 *    of a message (SQS never changes SentTimestamp) meets its entry; slot
 *    SLOT_NONE holds the messages without a SentTimestamp (sent_at
 *    -infinity) and the upgrade markers (EARLIER).  A day's slot is written
 *    for that day (and the day after, by messages sent just before
 *    midnight); on day d, slot (d + 2) mod LEDGER_SLOTS holds the entries of
 *    day d - 16, which SQS can no longer deliver (it keeps a message 14 days
 *    at most), so retention clears it whole with TRUNCATE (RET_*_SQL)
 *    instead of deleting entry by entry: no dead index entries, no vacuum.
 *  - sent_at: SentTimestamp, so that a batch's index inserts land on the few
 *    pages holding recent times (they stay in memory), not on random pages
 *    of an index that grows with 14 days of history.
 *  - message_id: a uuid, 16 bytes compared as such (ledger_key): SQS ids are
 *    lowercase canonical UUIDs; any other id is mapped to a UUID by SHA-256.
 * committed_at serves retention: no entry is removed before LEDGER_RETENTION
 * has passed since it was committed and since it was sent (README, "Correct
 * under at-least-once"). */
#define LEDGER "login_etl_ledger_v3"
#define LEDGER_SLOTS 18 /* day slots; the 19th (SLOT_NONE) has no day */
#define SLOT_NONE 18
#define LEDGER_RETENTION "15 days" /* SQS keeps a message 14 days at most */
#define SCHEMA_SQL                                                                                 \
    "DO $$ BEGIN\n"                                                                                \
    "IF to_regclass('user_logins') IS NULL THEN\n"                                                 \
    "CREATE TABLE IF NOT EXISTS user_logins(\n"                                                    \
    "    user_id             varchar(128),\n"                                                      \
    "    device_type         varchar(32),\n"                                                       \
    "    masked_ip           varchar(256),\n"                                                      \
    "    masked_device_id    varchar(256),\n"                                                      \
    "    locale              varchar(32),\n"                                                       \
    "    app_version         integer,\n"                                                           \
    "    create_date         date\n"                                                               \
    ");\n"                                                                                         \
    "END IF;\n"                                                                                    \
    "IF to_regclass('" LEDGER "') IS NULL THEN\n"                                                  \
    "CREATE TABLE IF NOT EXISTS " LEDGER "(\n"                                                     \
    "    slot                smallint NOT NULL,\n"                                                 \
    "    sent_at             timestamptz NOT NULL,\n"                                              \
    "    message_id          uuid NOT NULL,\n"                                                     \
    "    committed_at        timestamptz NOT NULL DEFAULT now(),\n"                                \
    "    PRIMARY KEY (slot, sent_at, message_id)\n"                                                \
    ") PARTITION BY LIST (slot);\n"                                                                \
    "FOR i IN 0..18 LOOP\n"                                                                        \
    "EXECUTE format('CREATE TABLE IF NOT EXISTS %I PARTITION OF " LEDGER                           \
    " FOR VALUES IN (%s)', '" LEDGER "_s' || lpad(i::text, 2, '0'), i);\n"                         \
    "END LOOP;\n"                                                                                  \
    "END IF;\n"                                                                                    \
    "END $$"

/* What the function relies on, read from the catalogs (which every user may
 * read, so this works for a least-privilege user too): the columns it writes
 * with their types (binary COPY needs exactly int2, int4, uuid and date; any
 * string type takes text), the ledger's partitions, which retention
 * truncates by name (their bounds are not read: pg_get_expr would lock each
 * partition, and a slot being truncated would hold a cold start up; a
 * partition made for another slot than its name says costs no entry, as
 * TRUNCATE re-checks the partition it clears), and its unique key, without
 * which exactly-once silently becomes at-least-once.  One row per problem, naming the table and
 * what is missing; no rows when all is well. */
#define VERIFY_SQL                                                                                 \
    "WITH need(tbl, col, typ) AS (VALUES "                                                         \
    "('user_logins', 'user_id', 'string'), ('user_logins', 'device_type', 'string'), "             \
    "('user_logins', 'masked_ip', 'string'), ('user_logins', 'masked_device_id', 'string'), "      \
    "('user_logins', 'locale', 'string'), ('user_logins', 'app_version', 'integer'), "             \
    "('user_logins', 'create_date', 'date'), ('" LEDGER "', 'slot', 'smallint'), "                 \
    "('" LEDGER "', 'sent_at', 'timestamp with time zone'), ('" LEDGER                             \
    "', 'message_id', 'uuid'), "                                                                   \
    "('" LEDGER "', 'committed_at', 'timestamp with time zone')), "                                \
    "col AS (SELECT n.tbl, n.col, n.typ, a.attnum, "                                               \
    "  format_type(coalesce(nullif(t.typbasetype, 0), t.oid), NULL) AS base, "                     \
    "  bt.typcategory AS cat "                                                                     \
    "  FROM need n LEFT JOIN pg_attribute a ON a.attrelid = to_regclass(n.tbl) "                   \
    "   AND a.attname = n.col AND a.attnum > 0 AND NOT a.attisdropped "                            \
    "  LEFT JOIN pg_type t ON t.oid = a.atttypid "                                                 \
    "  LEFT JOIN pg_type bt ON bt.oid = coalesce(nullif(t.typbasetype, 0), t.oid)), "              \
    "part AS (SELECT p.partstrat = 'l' AND p.partnatts = 1 AND a.attname = 'slot' AS ok "          \
    "  FROM pg_partitioned_table p LEFT JOIN pg_attribute a ON a.attrelid = p.partrelid "          \
    "   AND a.attnum = p.partattrs[0] WHERE p.partrelid = to_regclass('" LEDGER "')) "             \
    "SELECT tbl || ': column ' || col || ' is missing' FROM col "                                  \
    " WHERE attnum IS NULL AND to_regclass(tbl) IS NOT NULL "                                      \
    "UNION ALL SELECT tbl || ': column ' || col || ' is ' || base || ', not ' || typ FROM col "    \
    " WHERE attnum IS NOT NULL AND CASE typ WHEN 'string' THEN cat <> 'S' ELSE base <> typ END "   \
    "UNION ALL SELECT DISTINCT 'table ' || tbl || ' is missing' FROM col "                         \
    " WHERE to_regclass(tbl) IS NULL "                                                             \
    "UNION ALL SELECT '" LEDGER ": not partitioned BY LIST (slot)' "                               \
    " WHERE to_regclass('" LEDGER "') IS NOT NULL AND NOT coalesce((SELECT ok FROM part), false) " \
    "UNION ALL SELECT '" LEDGER ": partitions missing for slot ' || string_agg(g::text, ', ') "    \
    " || ' (" LEDGER "_sNN FOR VALUES IN (N), N = 0 to 18)' FROM generate_series(0, 18) g "        \
    " WHERE coalesce((SELECT ok FROM part), false) AND NOT EXISTS (SELECT 1 FROM pg_inherits h "   \
    "  JOIN pg_class c ON c.oid = h.inhrelid WHERE h.inhparent = to_regclass('" LEDGER "') "       \
    "  AND c.relname = '" LEDGER "_s' || lpad(g::text, 2, '0')) "                                  \
    " HAVING count(*) > 0 "                                                                        \
    "UNION ALL SELECT '" LEDGER                                                                    \
    ": no unique index or primary key on (slot, sent_at, message_id)' "                            \
    " WHERE to_regclass('" LEDGER "') IS NOT NULL AND NOT EXISTS (SELECT 1 FROM pg_index i "       \
    "  WHERE i.indrelid = to_regclass('" LEDGER "') AND i.indisunique AND i.indisvalid "           \
    "  AND i.indpred IS NULL AND i.indexprs IS NULL AND i.indnkeyatts = 3 "                        \
    "  AND (SELECT array_agg(a.attname::text ORDER BY a.attname) FROM pg_attribute a "             \
    "       WHERE a.attrelid = i.indrelid AND a.attnum IN (i.indkey[0], i.indkey[1], "             \
    "i.indkey[2])) "                                                                               \
    "      = ARRAY['message_id', 'sent_at', 'slot'])"

#define COPY_ROWS_SQL                                                                              \
    "COPY user_logins (user_id, device_type, masked_ip, masked_device_id, locale, "                \
    "app_version, create_date) FROM STDIN (FORMAT binary)"
#define COPY_LEDGER_SQL "COPY " LEDGER " (slot, sent_at, message_id) FROM STDIN (FORMAT binary)"
/* The batch's (slot, sent_at, message_id) keys that the ledger holds
 * already: $1 the batch's distinct slots, then one array per key column.
 * "slot = ANY($1)" lets the planner prune the other partitions (the
 * parameters of an unnamed statement are planned as constants), so the
 * lookup neither reads nor locks them: a slot being truncated is not
 * waited for (see RET_TRUNCATE_SQL). */
#define FIND_DUPLICATES_SQL                                                                        \
    "SELECT l.message_id FROM " LEDGER " l "                                                       \
    "JOIN unnest($2::int2[], $3::timestamptz[], $4::uuid[]) AS b(slot, sent_at, message_id) "      \
    "ON l.slot = b.slot AND l.sent_at = b.sent_at AND l.message_id = b.message_id "                \
    "WHERE l.slot = ANY($1::int2[])"
/* The rows' COPY runs behind a savepoint, so that a row the server refuses
 * (a trigger, a CHECK constraint) costs a rollback of that COPY only, not of
 * the ledger COPY before it.  Starting a savepoint is free until it is used.
 * The first rows COPY of a transaction also starts login_etl_batch, the
 * point to return to when a refusal names no row (all the rows out, the
 * ledger kept). */
#define SAVEPOINT_SQL "SAVEPOINT login_etl_rows; "
#define BATCH_SAVEPOINT_SQL "SAVEPOINT login_etl_batch; "
#define ROLLBACK_ROWS_SQL "ROLLBACK TO SAVEPOINT login_etl_rows"
#define ROLLBACK_BATCH_SQL "ROLLBACK TO SAVEPOINT login_etl_batch"
/* Makes deferred constraints (and constraint triggers) fire at the end of
 * each statement, so that a row they refuse fails its own rows COPY; before
 * COMMIT, so that they fire while login_etl_batch can still be returned to. */
#define IMMEDIATE_SQL "SET CONSTRAINTS ALL IMMEDIATE"
#define COMMIT_SQL IMMEDIATE_SQL "; COMMIT"
/* Takes the keys of refused rows, and of keys that got no row, back out of
 * the ledger before COMMIT, through the ledger's key (parameters as
 * FIND_DUPLICATES_SQL).  Only entries this transaction inserted (xmin) can
 * match, so nothing committed earlier is ever removed.  Each key is looked
 * up on its own in its slot's index (LATERAL ... LIMIT 1 keeps the planner
 * from joining) and the entry found is deleted by its address, partition and
 * row (each partition has its own row address space), which no other
 * transaction can change under it.  A plain join of the keys with the
 * ledger is planned as a hash join over a scan of the whole ledger as soon
 * as the planner knows the keys' count: 1.5 ms against 0.8 ms for a batch's
 * ~170 keys in a 7,660-entry ledger (measured), and growing with the
 * ledger.  slot = ANY($1) keeps every other slot's partition out of the
 * plan, and out of its locks. */
#define UNLEDGER_SQL                                                                               \
    "DELETE FROM " LEDGER " l USING (SELECT x.tableoid AS t, x.ctid AS c "                         \
    "FROM unnest($2::int2[], $3::timestamptz[], $4::uuid[]) AS b(slot, sent_at, message_id), "     \
    "LATERAL (SELECT k.tableoid, k.ctid FROM " LEDGER " k WHERE k.slot = ANY($1::int2[]) "         \
    "AND k.slot = b.slot AND k.sent_at = b.sent_at AND k.message_id = b.message_id "               \
    "AND k.xmin = pg_current_xact_id()::xid LIMIT 1) AS x) AS d "                                  \
    "WHERE l.slot = ANY($1::int2[]) AND l.ctid = d.c AND l.tableoid = d.t"

/* Upgrading from the earlier ledger layouts (EARLIER, below).  Their entries
 * cannot be moved (a least-privilege user cannot change their tables, and
 * moving millions of entries is no job for a batch), so each is consulted,
 * read only, inside each batch's transaction after the ledger COPY, for as
 * long as one of its entries could still meet a redelivery: LEDGER_RETENTION
 * from the first time this layout found it holding entries.  That moment is
 * kept in the ledger itself, as the committed_at of a marker entry in slot
 * SLOT_NONE whose message_id is a reserved version-0 UUID that no message
 * can have (ledger_key never yields version 0), which retention never
 * deletes.  A dropped earlier table (42P01) stops being consulted. */
#define MARKER_V1 "00000000-0000-0000-0000-000000000000"
#define MARKER_V2 "00000000-0000-0000-0000-000000000001"
#define MARKERS "('" MARKER_V1 "', '" MARKER_V2 "')"
#define EARLIER_V1 "login_etl_ledger"    /* message_id alone */
#define EARLIER_V2 "login_etl_ledger_v2" /* (sent_at, message_id text) */
#define EARLIER_MARK_SQL(table, holding, marker)                                                   \
    "INSERT INTO " LEDGER " (slot, sent_at, message_id) SELECT 18, '-infinity', '" marker "' "     \
    "WHERE EXISTS (SELECT 1 FROM " table holding ") ON CONFLICT DO NOTHING"
#define EARLIER_ACTIVE_SQL(marker)                                                                 \
    "SELECT committed_at > now() - interval '" LEDGER_RETENTION "' FROM " LEDGER                   \
    " WHERE slot = 18 AND sent_at = '-infinity' AND message_id = '" marker "'"

/* Which keys a lookup sends (send_keys). */
enum keys {
    KEYS_LEDGER, /* $1 distinct slots, $2 slots, $3 sent_at, $4 uuid keys; binary answer */
    KEYS_V2,     /* $1 sent_at, $2 message ids as text; text answer */
    KEYS_V1      /* $1 message ids as text; text answer */
};

struct earlier {
    const char *table;
    enum keys keys;
    const char *find_sql;   /* the batch's ids it holds, by message_id */
    const char *mark_sql;   /* records the first time it was found holding entries */
    const char *active_sql; /* one row: whether it must still be consulted */
};
#define N_EARLIER 2
extern const struct earlier EARLIER[N_EARLIER];

/* Retention, once per UTC day per process (and at its first batch), sent
 * once a COMMIT's answer is in (the server sends a query string's answers
 * only when the whole string is done, so retention in the COMMIT's string
 * would hold the COMMIT's answer back), in a transaction of its own with
 * lock and statement timeouts, so that an operator's lock holds up nothing;
 * its answer is read by the next batch, before its BEGIN.  Each answer row
 * starts with a tag saying what it answers (collect_prune).  On day d:
 *
 * 1. RET_CHECK_SQL: is slot (d + 2) mod LEDGER_SLOTS empty?  max(sent_at)
 *    through the slot's index, under an ACCESS SHARE lock only, so that a
 *    fleet of processes finding it empty (all but the first) never queue
 *    for the lock TRUNCATE takes.  The same step deletes the expired entries
 *    of slot SLOT_NONE (few: SQS always sends SentTimestamp), markers kept.
 * 2. RET_TRUNCATE_SQL, when it was not empty: in one round trip (a process
 *    frozen by Lambda between two round trips would hold the lock), LOCK
 *    the slot's partition, re-check under the lock that every entry was
 *    sent and committed over LEDGER_RETENTION ago (else SQLSTATE 55000: a
 *    clock far off, or a message committed long after it was sent), and
 *    TRUNCATE it.
 * 3. RET_SWEEP_SQL, when TRUNCATE is refused (42501: a least-privilege user
 *    without TRUNCATE on the partition) or the slot holds young entries: the
 *    slot is swept by range DELETEs in key order, one bounded step a batch,
 *    of the entries sent and committed over LEDGER_RETENTION ago.
 *
 * Locks (PostgreSQL 15, checked in pg_locks): a batch's ledger COPY into the
 * parent locks the parent and only the partitions its rows are routed to
 * (ROW EXCLUSIVE); the duplicate lookup and UNLEDGER_SQL lock only the
 * slots of the batch (ACCESS SHARE / ROW EXCLUSIVE: pruned at planning); a
 * slot's TRUNCATE takes ACCESS EXCLUSIVE on that partition and its index
 * only, not on the parent.  A batch writes today's slot, yesterday's and
 * SLOT_NONE, never slot d + 2 (its messages would have to be 16 days old or
 * two days ahead), so a batch and a TRUNCATE do not meet; if they ever do
 * (a clock far off), lock_timeout ends the TRUNCATE's wait after
 * 200 ms, and a batch queued behind its lock request waits no longer
 * than that, while the TRUNCATE itself holds its lock for milliseconds. */
#define RET_BEGIN_SQL "BEGIN; SET LOCAL lock_timeout = 200; SET LOCAL statement_timeout = 10000; "
#define RET_CHECK_SQL "SELECT 'slot', max(sent_at) IS NOT NULL FROM " LEDGER " WHERE slot = %d; "
#define RET_NONE_SQL                                                                               \
    "WITH d AS (DELETE FROM " LEDGER                                                               \
    " WHERE slot = 18 AND ctid = ANY(ARRAY(SELECT ctid FROM " LEDGER                               \
    " WHERE slot = 18 AND committed_at < now() - interval '" LEDGER_RETENTION "' "                 \
    "AND message_id NOT IN " MARKERS " LIMIT 20000)) RETURNING 1) "                                \
    "SELECT 'deleted', count(*) FROM d; "
/* The re-check reads the slot's newest sent_at through its index and the
 * newest committed_at by one aggregate over the slot (no index serves it,
 * and one on every insert would cost more than this scan once a day: ~15 ms
 * for a day of 300,000 entries), and makes sure the partition holds only its
 * own slot (its name is what TRUNCATE goes by; see VERIFY_SQL).  Arguments:
 * the slot, 8 times. */
#define RET_TRUNCATE_SQL                                                                           \
    "LOCK TABLE " LEDGER "_s%02d IN ACCESS EXCLUSIVE MODE; "                                       \
    "DO $$ BEGIN IF (SELECT max(sent_at) FROM " LEDGER "_s%02d WHERE slot = %d) >= now() - "       \
    "interval '" LEDGER_RETENTION "' OR (SELECT max(committed_at) FROM " LEDGER "_s%02d) >= "      \
    "now() - interval '" LEDGER_RETENTION "' OR EXISTS (SELECT 1 FROM " LEDGER "_s%02d "           \
    "WHERE slot < %d OR slot > %d) THEN RAISE SQLSTATE '55000'; END IF; END $$; "                  \
    "TRUNCATE " LEDGER "_s%02d; SELECT 'truncated'; "
/* A sweep step goes from where the previous step stopped (the first %s: a
 * bound on sent_at) to the sent_at %zu entries further on (an index-only
 * scan) or to LEDGER_RETENTION ago, whichever comes first, and deletes the
 * entries there committed over LEDGER_RETENTION ago (the same bound again,
 * second %s).  One range DELETE costs half of looking at the entries first
 * and deleting them by ctid (measured).  Its answer: the entries deleted,
 * the bound where the next step starts (us since the Unix epoch; NULL for
 * -infinity) and whether the sweep reached its end. */
#define RET_SWEEP_SQL                                                                              \
    "WITH w AS MATERIALIZED (SELECT coalesce((SELECT sent_at FROM " LEDGER                         \
    " WHERE slot = %d AND sent_at %s ORDER BY sent_at OFFSET %zu LIMIT 1), 'infinity') AS probe, " \
    "now() - interval '" LEDGER_RETENTION "' AS cap), "                                            \
    "h AS MATERIALIZED (SELECT least(probe, cap) AS hi, probe >= cap AS last FROM w), "            \
    "d AS (DELETE FROM " LEDGER                                                                    \
    " WHERE slot = %d AND sent_at %s AND sent_at < (SELECT hi FROM h) "                            \
    "AND committed_at < now() - interval '" LEDGER_RETENTION "' RETURNING 1) "                     \
    "SELECT 'swept', (SELECT count(*) FROM d), (SELECT CASE WHEN hi > '-infinity' "                \
    "THEN (extract(epoch FROM hi) * 1000000)::int8 END FROM h), (SELECT last FROM h); "
#define PRUNE_MIN 1000           /* entries a sweep step goes over, at least ... */
#define PRUNE_MAX 20000          /* ... and at most; otherwise twice the rows just written */
#define RET_RETRY_MS 60000       /* a retention step that failed is tried again after this */
#define DAY_MS INT64_C(86400000) /* a UTC day */

/* Where a process's retention is for the day (s->ret_stage). */
enum ret_stage {
    RET_IDLE,     /* the day's slot was seen to (s->ret_day), or is to be checked */
    RET_TRUNCATE, /* the slot holds entries: to be truncated */
    RET_SWEEP     /* the slot is swept by DELETE */
};

/* Nothing is set for the session: a transaction-pooling proxy (RDS Proxy,
 * pgbouncer) hands each transaction to whichever server connection is free,
 * and pins a client that changes session state to one server connection for
 * good.  So the settings that guard against a sandbox frozen or killed in the
 * middle of a batch travel with each BEGIN as SET LOCAL (start_op), and TCP
 * keepalives are libpq connection parameters (connect_db). */
#define LAMBDA_MAX_MS (15 * 60 * 1000) /* Lambda's longest timeout: no wait is longer */
#define IDLE_GUARD_MS 60000            /* a transaction left idle this long is ended */

#define TEXT_ARRAY_OID 1009
#define TEXT_OID 25
#define MAX_ATTEMPTS 4
#define STREAM_CHUNK (64 * 1024) /* rows are handed to libpq in pieces of about this size */
/* Keys go out in smaller pieces: the ledger COPY runs while the event is
 * still parsed, and the server waits for each piece.  With 64 KiB (1,638
 * keys, ~2 ms of parsing) it sat idle at the start of every event and was
 * left a piece behind at its end; 8 KiB brought the ledger COPY's end 1.1 ms
 * nearer the end of the parse (7,660-record events, median of 39), 2 KiB
 * cost more client CPU than it saved. */
#define LEDGER_CHUNK (8 * 1024)
#define POSTGRES_EPOCH_DAYS 10957 /* 2000-01-01 minus 1970-01-01 */
#define POSTGRES_EPOCH_MS (POSTGRES_EPOCH_DAYS * INT64_C(86400000))
#define TIMESTAMPTZ_ARRAY_OID 1185
#define TIMESTAMPTZ_OID 1184
#define INT2_OID 21
#define INT2_ARRAY_OID 1005
#define UUID_OID 2950
#define UUID_ARRAY_OID 2951
#define WAIT_SLICE_MS 100 /* longest wait before asking libpq again (wait_socket) */

/* What became of each row of the batch (s->dup).  Any value but RS_PENDING
 * keeps the row out of the COPYs. */
enum row_state {
    RS_PENDING = 0, /* to be written */
    RS_DUP,         /* its id was committed before */
    RS_REFUSED,     /* the server refused its data (a trigger, a constraint, a limit) */
    RS_CUT,         /* FIFO: after a refused row, so not written to keep the order */
    RS_DONE,        /* committed by an earlier transaction of this batch (isolation) */
    RS_OUT,         /* outside the part of the batch the current transaction writes */
    RS_NO_ROW,      /* a key without a row (pg_batch_no_row): not to be written, and its id
                     * taken back out of the ledger when it went in (RS_IN_LEDGER) */
    RS_MASK = 0x0f,
    RS_IN_LEDGER = 0x10 /* flag: its id went to the ledger in the open transaction */
};

#define NO_ROW ((size_t)-1)
/* Kept between batches up to these sizes (pg_sink_trim): a realistic 6 MB
 * event is ~7,700 rows and ~2 MB of tuples; 6 MB of tiny records is up to
 * 170,000 rows. */
#define TRIM_ROWS 32768
#define TRIM_BYTES ((size_t)4 << 20)
#define TAIL_CHUNK 64   /* rows in the first COPY after a refused row (next_segment) */
#define ISOLATE_PARTS 8 /* parts a batch is cut into to find a refused row (isolate) */

enum phase {
    PH_IDLE,     /* no statement in flight: the next is op's COPY (BEGIN first at op 0) */
    PH_STARTING, /* op's COPY was sent, waiting for the server to accept its data */
    PH_COPYING,  /* op's COPY is open: its tuples before `sent` have been handed to libpq */
    PH_ENDING,   /* op's COPY was ended, waiting for the server's row count */
    PH_BROKEN    /* this attempt failed; pg_batch_commit retries or gives up */
};

/* Binary COPY tuples, one per row of the batch, kept until the batch ends so
 * that a retry sends them again without parsing anything twice. */
struct tuples {
    struct buf data; /* the tuples, in add order */
    size_t *end;     /* owned: end offset of each row's tuple in data */
};

struct pg_sink {
    struct logger *lg;
    char *conninfo;             /* owned, wiped when freed: may hold a password */
    pg_password_fn password_fn; /* NULL, or asked for the password at each connect */
    void *password_ctx;
    PGconn *conn;      /* NULL when closed */
    int schema_ready;  /* the tables were checked on this process's behalf */
    unsigned earlier;  /* bit k: EARLIER[k] is consulted */
    int prune_off;     /* DELETE on the ledger was refused: no sweep is tried again */
    int truncate_off;  /* TRUNCATE of a slot was refused: slots are swept instead */
    int prune_pending; /* a COMMIT was answered; the rest (a retention step) is unread */
    enum ret_stage ret_stage;
    enum ret_stage ret_sent; /* the kind of the step in flight (RET_IDLE: the day's check) */
    int64_t ret_day;         /* the UTC day (since the epoch) whose slot was seen to; -1: none */
    int64_t ret_for;         /* the UTC day of the step in flight or in progress */
    int ret_slot;            /* the slot retention works on for ret_for */
    int64_t ret_retry_at;    /* clock_mono_ms: no retention step before this */
    int64_t prune_from;      /* Unix epoch us: the sweep goes on at this sent_at (INT64_MIN:
                                -infinity, the slot's oldest entry) ... */
    int prune_past;          /* ... or just after it: a step could not leave that sent_at */
    int64_t give_up_at;
    enum phase phase;
    char why[ERR_LEN]; /* why the current attempt broke */
    char sqlstate[6];  /* the server's SQLSTATE for it, or "" */
    int retryable;     /* the failure was of the connection, worth another attempt */
    int auth_refused;  /* the last connect failed with SQLSTATE 28P01 or 28000 */
    int fifo;          /* a refused row stops the batch there (FIFO order) */

    struct tuples ledger; /* the batch's (slot, sent_at, message_id) keys, for the ledger */
    struct tuples rows;   /* the batch's rows, for user_logins: [0, decided) are known
                             (an empty tuple for a key without a row) */
    const char **ids;     /* owned array of borrowed message ids */
    int64_t *sent_at;     /* owned: each row's sent_at, us since 2000 (INT64_MIN: none) */
    uint8_t *slot;        /* owned: each row's ledger slot */
    uint8_t (*key)[16];   /* owned: each row's message_id in the ledger (ledger_key) */
    size_t *id_len;       /* owned */
    uint8_t *dup;         /* owned: per row, enum row_state (RS_DUP: committed already) */
    size_t n, cap;        /* keys (rows) added; allocated */
    size_t decided;       /* keys whose row (or no row) is known: the first `decided` */
    int keys_done;        /* no more keys are coming: the ledger COPY may end */
    size_t op;            /* the COPY in progress: 0 the ledger's, 1 the rows', 2 both done */
    size_t sent;          /* op's tuples before this one were handed to libpq */
    int header_sent;      /* op's COPY header went out */
    int unique_violation; /* a ledger COPY hit an id committed before: the attempt is void */
    int refusal;          /* op's COPY was refused for a row's data: the attempt stops */
    size_t refused_row;   /* that row, or NO_ROW when the server did not say which */
    size_t seg_from;      /* the rows COPY writes rows [seg_from, seg_to) (clamped to n) */
    size_t seg_to;
    size_t chunk;        /* rows in the next part after a refusal (next_segment) */
    int rerun;           /* the rows COPY re-sends rows that passed before a refusal */
    int unattributed;    /* the attempt failed on a row's data, row unknown: isolate */
    int isolating;       /* the attempt writes the rows by isolate_rows */
    int known_bad;       /* the pending rows failed as a whole, since the last change to them */
    int no_delete;       /* the user may not DELETE from the ledger (see attempt): keys go
                            out only once their row is known (op_end) */
    int batch_savepoint; /* login_etl_batch was sent in the open transaction */
    struct buf scratch;  /* the duplicate query's parameter */
    struct idset lookup; /* message id or key -> row, for the duplicate query's answer */
    struct pg_stats stats;
    int64_t first_send_us;
};

/* Big-endian stores at o, as binary COPY and binary parameters want; each
 * returns the byte after what it wrote.  A tuple is written with these into
 * room reserved once: a buf_append per field cost more than the fields. */
static inline uint8_t *w16(uint8_t *o, uint16_t v)
{
    o[0] = (uint8_t)(v >> 8);
    o[1] = (uint8_t)v;
    return o + 2;
}

static inline uint8_t *w32(uint8_t *o, uint32_t v)
{
    o[0] = (uint8_t)(v >> 24);
    o[1] = (uint8_t)(v >> 16);
    o[2] = (uint8_t)(v >> 8);
    o[3] = (uint8_t)v;
    return o + 4;
}

static inline uint8_t *w64(uint8_t *o, uint64_t v)
{
    return w32(w32(o, (uint32_t)(v >> 32)), (uint32_t)v);
}

/* A text field of a binary COPY tuple: its length, then its bytes; NULL is
 * the length -1 and no bytes.  field_size says how much room it takes. */
static inline uint8_t *wtext(uint8_t *o, const char *p, size_t n)
{
    if (!p)
        return w32(o, UINT32_MAX);
    o = w32(o, (uint32_t)n);
    if (n)
        memcpy(o, p, n);
    return o + n;
}

static inline size_t field_size(const char *p, size_t n)
{
    return 4 + (p ? n : 0);
}

void pg_put_u16(struct buf *b, uint16_t v);

void pg_put_u32(struct buf *b, uint32_t v);

void pg_put_u64(struct buf *b, uint64_t v);

void pg_put_text(struct buf *b, const char *p, size_t n);

rc_t pg_ledger_key(const char *id, size_t len, uint8_t key[16]);

int pg_ledger_slot(int64_t sent_ms);

uint8_t *pg_room(struct buf *b, size_t n, rc_t *rc);

void pg_put_array_header(struct buf *b, uint32_t oid, size_t count);

int pg_row_data_error(const char *state);

void pg_describe(struct pg_sink *s, const PGresult *res, const char *what, char *out, size_t len);

void pg_fail(struct pg_sink *s, const PGresult *res, const char *what);

rc_t pg_wait_socket(struct pg_sink *s, short events, int slice);

rc_t pg_flush_all(struct pg_sink *s);

rc_t pg_next_result(struct pg_sink *s, PGresult **out);

rc_t pg_run(struct pg_sink *s, const char *sql, ExecStatusType expect, PGresult **keep);

rc_t pg_connect_db(struct pg_sink *s);

rc_t pg_check_schema(struct pg_sink *s);

void pg_reset_attempt(struct pg_sink *s);

size_t pg_op_end(const struct pg_sink *s);

int pg_key_sent(const struct pg_sink *s, size_t i);

rc_t pg_await_copy(struct pg_sink *s, int wait);

rc_t pg_pump(struct pg_sink *s, int wait, int final);

rc_t pg_mark_duplicates(struct pg_sink *s, int earlier, size_t *found);

rc_t pg_unledger(struct pg_sink *s);

rc_t pg_collect_prune(struct pg_sink *s, int wait);

int pg_retention_step(struct pg_sink *s, size_t written, char *sql, size_t cap);

void pg_refuse_row(struct pg_sink *s, size_t r, int in_ledger);

size_t pg_pending_in(const struct pg_sink *s, size_t from, size_t to);

int pg_next_segment(struct pg_sink *s);

rc_t pg_unattributed(struct pg_sink *s, int rolled_back);

rc_t pg_back_to_batch(struct pg_sink *s);

rc_t pg_after_refusal(struct pg_sink *s, int *again);

rc_t pg_isolate_rows(struct pg_sink *s, size_t a, size_t b, int known_bad, int again, int *stop,
                     int *whole);

rc_t pg_isolate(struct pg_sink *s, size_t a, size_t b, int known_bad, int *stop, int *whole);

void pg_disconnect(struct pg_sink *s);

void pg_abandon(struct pg_sink *s);

rc_t pg_write_pending(struct pg_sink *s);

#endif
