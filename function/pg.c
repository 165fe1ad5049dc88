/* pg.c - the Postgres sink: connection, schema, exactly-once batch writes.
 *
 * Every wait on the server is a poll() bounded by the batch's give-up time,
 * so a database that hangs (a held lock, a black-holed network) cannot make
 * the function miss its deadline.  The connection runs in libpq's
 * non-blocking mode for the same reason. */
#define _DEFAULT_SOURCE
#include "pg.h"

#include <arpa/inet.h>
#include <assert.h>
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <libpq-fe.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include "buf.h"
#include "clock.h"
#include "grow.h"
#include "idset.h"
#include "num.h"

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

static const struct earlier {
    const char *table;
    enum keys keys;
    const char *find_sql;   /* the batch's ids it holds, by message_id */
    const char *mark_sql;   /* records the first time it was found holding entries */
    const char *active_sql; /* one row: whether it must still be consulted */
} EARLIER[] = {
    {EARLIER_V2, KEYS_V2,
     "SELECT l.message_id FROM " EARLIER_V2 " l JOIN unnest($1::timestamptz[], $2::text[]) "
     "AS b(sent_at, message_id) ON l.sent_at = b.sent_at "
     "AND l.message_id = b.message_id COLLATE \"C\"",
     EARLIER_MARK_SQL(EARLIER_V2, " WHERE message_id <> ''", MARKER_V2),
     EARLIER_ACTIVE_SQL(MARKER_V2)},
    {EARLIER_V1, KEYS_V1, "SELECT message_id FROM " EARLIER_V1 " WHERE message_id = ANY($1)",
     EARLIER_MARK_SQL(EARLIER_V1, "", MARKER_V1), EARLIER_ACTIVE_SQL(MARKER_V1)},
};
#define N_EARLIER (sizeof EARLIER / sizeof EARLIER[0])

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

static const char copy_header[19] = "PGCOPY\n\377\r\n\0\0\0\0\0\0\0\0\0";
static const char copy_trailer[2] = {'\377', '\377'};

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

struct pg_sink *pg_sink_new(const char *conninfo, struct logger *lg)
{
    unsigned char probe;

    /* libpq's SCRAM authentication (and TLS) draws on OpenSSL's random
     * generator.  OpenSSL 3.0 sets that up once per process and, when it
     * runs out of memory doing so, never tries again: every later connect
     * would fail ("could not generate nonce") for the life of the process.
     * It is set up here instead, at start, where a failure is an init error
     * and Lambda starts a new process (tests/integration/test_faults.py). */
    if (RAND_bytes(&probe, 1) != 1)
        return NULL;
    struct pg_sink *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->lg = lg;
    s->ret_day = -1;
    buf_init(&s->rows.data, BUF_PAYLOAD_MAX * 2);
    buf_init(&s->ledger.data, BUF_PAYLOAD_MAX * 2);
    buf_init(&s->scratch, BUF_PAYLOAD_MAX * 2);
    idset_init(&s->lookup);
    if (pg_sink_set_conninfo(s, conninfo ? conninfo : "") != RC_OK) {
        pg_sink_free(s);
        return NULL;
    }
    return s;
}

static void wipe_string(char *p)
{
    if (p) {
        explicit_bzero(p, strlen(p));
        free(p);
    }
}

/* Readies the batch for a new transaction from its first COPY; cannot fail.
 * The transaction before it has ended (committed or rolled back), so no id
 * is in its ledger any more. */
static void reset_attempt(struct pg_sink *s)
{
    s->phase = PH_IDLE;
    s->op = 0;
    s->sent = 0;
    s->header_sent = 0;
    s->unique_violation = 0;
    s->refusal = 0;
    s->refused_row = NO_ROW;
    s->seg_from = 0;
    s->seg_to = NO_ROW;
    s->chunk = TAIL_CHUNK;
    s->rerun = 0;
    s->batch_savepoint = 0;
    s->isolating = 0;
    for (size_t i = 0; i < s->n; i++)
        s->dup[i] &= RS_MASK;
}

static void disconnect(struct pg_sink *s)
{
    if (s->conn)
        PQfinish(s->conn);
    s->conn = NULL;
    s->prune_pending = 0;
    reset_attempt(s);
}

rc_t pg_sink_set_conninfo(struct pg_sink *s, const char *conninfo)
{
    char *copy = strdup(conninfo);
    if (!copy)
        return RC_NOMEM;
    disconnect(s);
    wipe_string(s->conninfo);
    s->conninfo = copy;
    return RC_OK;
}

void pg_sink_set_password_fn(struct pg_sink *s, pg_password_fn fn, void *ctx)
{
    s->password_fn = fn;
    s->password_ctx = ctx;
}

/* Frees a buffer over `keep` bytes; it grows again on its next use. */
static void trim_buf(struct buf *b, size_t keep)
{
    if (b->cap > keep) {
        size_t max = b->max;
        buf_free(b);
        buf_init(b, max);
    }
}

/* Frees the per-row arrays (grow allocates them again) and forgets the
 * batch's rows.  Cannot fail. */
static void free_rows(struct pg_sink *s)
{
    free(s->rows.end);
    free(s->ledger.end);
    free(s->ids);
    free(s->sent_at);
    free(s->slot);
    free(s->key);
    free(s->id_len);
    free(s->dup);
    s->rows.end = s->ledger.end = NULL;
    s->ids = NULL;
    s->sent_at = NULL;
    s->slot = NULL;
    s->key = NULL;
    s->id_len = NULL;
    s->dup = NULL;
    s->cap = 0;
    s->n = s->decided = 0;
}

/* See pg.h.  Between batches nothing of the last one is needed: the per-row
 * arrays and tuple buffers of an outsized batch are freed, so that the next
 * batch's peak does not stack on top of them. */
void pg_sink_trim(struct pg_sink *s)
{
    if (s->cap > TRIM_ROWS)
        free_rows(s);
    trim_buf(&s->rows.data, TRIM_BYTES);
    trim_buf(&s->ledger.data, TRIM_BYTES);
    trim_buf(&s->scratch, TRIM_BYTES);
}

void pg_sink_free(struct pg_sink *s)
{
    if (!s)
        return;
    disconnect(s);
    wipe_string(s->conninfo);
    buf_free(&s->rows.data);
    buf_free(&s->ledger.data);
    buf_free(&s->scratch);
    idset_free(&s->lookup);
    free_rows(s);
    free(s);
}

/* Is this SQLSTATE about the data of a row rather than the database: a data
 * exception (class 22), an integrity constraint (23: CHECK, NOT NULL, a
 * unique index an operator added), a trigger's RAISE EXCEPTION (P0001) or a
 * per-row limit such as an index entry over the b-tree maximum (54000)? */
static int row_data_error(const char *state)
{
    return state && (strncmp(state, "22", 2) == 0 || strncmp(state, "23", 2) == 0 ||
                     strcmp(state, "P0001") == 0 || strcmp(state, "54000") == 0);
}

/* Is this COPY error a refusal of one row's data?  As row_data_error, except
 * a check violation that names no constraint: that is a row of a partitioned
 * user_logins for which no partition exists ("no partition of relation ...
 * found for row"), a missing partition the operator must add, not a bad
 * record; the batch fails and comes back until it exists. */
static int row_refused(const PGresult *res)
{
    const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
    if (state && strcmp(state, "23514") == 0 && !PQresultErrorField(res, PG_DIAG_CONSTRAINT_NAME))
        return 0;
    return row_data_error(state);
}

/* Writes "<what>: SQLSTATE x table t constraint c" for a server error into
 * out.  The server's message text, DETAIL and CONTEXT are never used: a
 * trigger's RAISE or a constraint's DETAIL can quote the row's values.
 * Without a server error, libpq's own message (first line) is used; the
 * connection asks libpq to reduce server errors in it to severity and
 * SQLSTATE (PQERRORS_SQLSTATE), so a server's text cannot reach it either. */
static void describe(struct pg_sink *s, const PGresult *res, const char *what, char *out,
                     size_t len)
{
    const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    if (state) {
        const char *table = PQresultErrorField(res, PG_DIAG_TABLE_NAME);
        const char *constraint = PQresultErrorField(res, PG_DIAG_CONSTRAINT_NAME);
        snprintf(out, len, "%s: SQLSTATE %.5s%s%.64s%s%.64s", what, state, table ? " table " : "",
                 table ? table : "", constraint ? " constraint " : "",
                 constraint ? constraint : "");
        return;
    }
    const char *msg = s->conn ? PQerrorMessage(s->conn) : "";
    size_t msg_len = strcspn(msg, "\n");
    if (msg_len > 180)
        msg_len = 180;
    snprintf(out, len, "%s: %.*s", what, msg_len ? (int)msg_len : 15,
             msg_len ? msg : "connection lost");
    /* libpq messages end in a newline; a log line should not. */
    size_t n = strlen(out);
    while (n && out[n - 1] == ' ')
        out[--n] = '\0';
}

/* Marks the current attempt broken with a reason (see describe).  SQLSTATE
 * classes that mean "the server or the connection went away" are
 * retryable.  Keeps the first reason. */
static void fail(struct pg_sink *s, const PGresult *res, const char *what)
{
    if (s->phase == PH_BROKEN)
        return;
    s->phase = PH_BROKEN;
    const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    snprintf(s->sqlstate, sizeof s->sqlstate, "%s", state ? state : "");
    s->retryable = !s->conn || PQstatus(s->conn) == CONNECTION_BAD ||
                   (state && (strncmp(state, "08", 2) == 0 || strncmp(state, "57P", 3) == 0 ||
                              strcmp(state, "40001") == 0 || strcmp(state, "40P01") == 0));
    describe(s, res, what, s->why, sizeof s->why);
}

/* libpq's notice receiver: a NOTICE or WARNING from the server (a trigger's
 * RAISE NOTICE) becomes one log line with its severity and SQLSTATE; its
 * text, which can quote values, is dropped.  Without a receiver libpq would
 * print the text to stderr, outside the JSON log. */
static void on_notice(void *arg, const PGresult *res)
{
    struct pg_sink *s = arg;
    const char *severity = PQresultErrorField(res, PG_DIAG_SEVERITY_NONLOCALIZED);
    const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
    int warning = severity && strcmp(severity, "WARNING") == 0;
    log_at(s->lg, warning ? LOG_WARN : LOG_DEBUG, "database notice",
           LF_STR("severity", severity ? severity : "unknown"),
           LF_STR("sqlstate", state ? state : ""));
}

/* Waits until the socket is ready for `events` or the give-up time.  With
 * `slice`, returns after WAIT_SLICE_MS at most even when nothing happened, so
 * that the caller asks libpq again: libpq that runs out of memory while
 * parsing a message already in its buffer (a COPY start) leaves the message
 * there and waits for more bytes, which the server, waiting for us, never
 * sends (found by tests/integration/test_faults.py).  Returns RC_OK (ready,
 * a slice over, or interrupted: the caller re-checks) or RC_TIMEOUT. */
static rc_t wait_socket(struct pg_sink *s, short events, int slice)
{
    int64_t left = s->give_up_at - clock_mono_ms();
    if (left <= 0)
        return RC_TIMEOUT;
    int ms = left > INT_MAX ? INT_MAX : (int)left;
    if (slice && ms > WAIT_SLICE_MS)
        ms = WAIT_SLICE_MS;
    struct pollfd p = {.fd = PQsocket(s->conn), .events = events};
    int r = poll(&p, 1, ms);
    if (r == 0)
        return slice && clock_mono_ms() < s->give_up_at ? RC_OK : RC_TIMEOUT;
    return RC_OK; /* r < 0 is EINTR or a closed socket: libpq reports the latter */
}

/* Pushes queued output to the server, waiting while the socket is full.
 * Returns RC_OK, RC_TIMEOUT or RC_DB. */
static rc_t flush_all(struct pg_sink *s)
{
    for (;;) {
        int f = PQflush(s->conn);
        if (f == 0)
            return RC_OK;
        if (f < 0)
            return RC_DB;
        /* Read too: a server that reports an error stops reading our data. */
        if (wait_socket(s, POLLOUT | POLLIN, 1) != RC_OK)
            return RC_TIMEOUT;
        if (PQconsumeInput(s->conn) == 0)
            return RC_DB;
    }
}

/* Waits for the next result of the command in flight.  *out is NULL when the
 * command is complete.  Returns RC_OK, RC_TIMEOUT or RC_DB (connection lost). */
static rc_t next_result(struct pg_sink *s, PGresult **out)
{
    *out = NULL;
    rc_t rc = flush_all(s);
    if (rc)
        return rc;
    for (;;) {
        if (PQconsumeInput(s->conn) == 0)
            return RC_DB;
        if (!PQisBusy(s->conn)) {
            *out = PQgetResult(s->conn);
            return RC_OK;
        }
        if (wait_socket(s, POLLIN, 1) != RC_OK)
            return RC_TIMEOUT;
    }
}

/* Runs SQL (several statements allowed) and checks that each result has the
 * expected status.  With `keep`, the last result is handed to the caller, who
 * frees it with PQclear.  Returns RC_OK, RC_TIMEOUT or RC_DB (the attempt is
 * then marked broken). */
static rc_t run(struct pg_sink *s, const char *sql, ExecStatusType expect, PGresult **keep)
{
    rc_t rc = RC_OK;
    PGresult *res = NULL;

    if (keep)
        *keep = NULL;
    if (!PQsendQuery(s->conn, sql)) {
        fail(s, NULL, "send");
        return RC_DB;
    }
    for (;;) {
        rc_t w = next_result(s, &res);
        if (w) {
            /* Through the common end: a result kept for the caller (COMMIT's,
             * before the connection died) must be freed. */
            fail(s, NULL, w == RC_TIMEOUT ? "timeout" : "query");
            rc = w;
            break;
        }
        if (!res)
            break;
        if (PQresultStatus(res) != expect && !rc) {
            fail(s, res, "query");
            rc = RC_DB;
        }
        if (keep && !rc) {
            PQclear(*keep);
            *keep = res;
        } else {
            PQclear(res);
        }
    }
    if (rc && keep) {
        PQclear(*keep);
        *keep = NULL;
    }
    return rc;
}

/* Creates the tables that are missing, then checks that what the function
 * relies on is there (VERIFY_SQL), and finds which earlier ledger layouts
 * must be consulted (EARLIER).  Done once per process, on its
 * first connection.  Returns RC_OK, RC_TIMEOUT or RC_DB; a schema that lacks
 * something is RC_DB with s->why naming the table and what is missing (not
 * retryable: writing anyway could break exactly-once). */
static rc_t check_schema(struct pg_sink *s)
{
    PGresult *res = NULL;
    rc_t rc;

    if ((rc = run(s, SCHEMA_SQL, PGRES_COMMAND_OK, NULL)) != RC_OK)
        return rc;
    if ((rc = run(s, VERIFY_SQL, PGRES_TUPLES_OK, &res)) != RC_OK)
        return rc;
    if (PQntuples(res) > 0) {
        size_t at = (size_t)snprintf(s->why, sizeof s->why, "schema:");
        for (int r = 0; r < PQntuples(res) && at < sizeof s->why; r++)
            at += (size_t)snprintf(s->why + at, sizeof s->why - at, "%s %s", r ? ";" : "",
                                   PQgetvalue(res, r, 0));
        PQclear(res);
        s->phase = PH_BROKEN;
        s->retryable = 0;
        return RC_DB;
    }
    PQclear(res);
    s->earlier = 0;
    for (size_t k = 0; k < N_EARLIER; k++) {
        char sql[120];
        snprintf(sql, sizeof sql, "SELECT to_regclass('%s') IS NOT NULL", EARLIER[k].table);
        if ((rc = run(s, sql, PGRES_TUPLES_OK, &res)) != RC_OK)
            return rc;
        int exists = PQntuples(res) == 1 && strcmp(PQgetvalue(res, 0, 0), "t") == 0;
        PQclear(res);
        if (!exists)
            continue;
        if ((rc = run(s, EARLIER[k].mark_sql, PGRES_COMMAND_OK, NULL)) != RC_OK ||
            (rc = run(s, EARLIER[k].active_sql, PGRES_TUPLES_OK, &res)) != RC_OK)
            return rc;
        int active = PQntuples(res) == 1 && strcmp(PQgetvalue(res, 0, 0), "t") == 0;
        PQclear(res);
        s->earlier |= active ? 1u << k : 0;
        log_at(s->lg, LOG_INFO,
               active ? "the earlier ledger is consulted until its entries expire"
                      : "the earlier ledger no longer matters and may be dropped",
               LF_STR("table", EARLIER[k].table));
    }
    s->schema_ready = 1;
    return RC_OK;
}

/* Opens the connection, bounded by the give-up time and PGCONNECT_TIMEOUT as
 * libpq would apply it, and checks the schema (once).  TCP keepalives are
 * asked for as connection parameters, not with SET (which would be session
 * state): a server whose client vanished without a FIN (a sandbox frozen or
 * killed) notices within about 30 s.  They come before "dbname", so that
 * DATABASE_URL can override them; application_name and client_encoding
 * come after it, as the function depends on them.  Returns RC_OK,
 * RC_TIMEOUT or RC_DB (the attempt is marked broken). */
static rc_t connect_db(struct pg_sink *s)
{
    const char *password = NULL; /* from password_fn: overrides the settings' */
    rc_t rc = RC_DB;

    s->auth_refused = 0;
    if (s->password_fn && s->password_fn(s->password_ctx, &password, s->why) != RC_OK) {
        s->phase = PH_BROKEN;
        s->retryable = 0;
        return RC_DB;
    }
    /* Keys after dbname override what its expansion sets (the keepalives
     * before it are defaults DATABASE_URL may change); a NULL value ends the
     * list, so the password, which may be absent, comes last. */
    static const char *const keys[] = {"keepalives",       "keepalives_idle", "keepalives_interval",
                                       "keepalives_count", "dbname",          "application_name",
                                       "client_encoding",  "password",        NULL};
    const char *values[] = {"1", "15", "5", "3", s->conninfo, "login-etl", "UTF8", password, NULL};
    s->conn = PQconnectStartParams(keys, values, 1);
    if (!s->conn) {
        fail(s, NULL, "connect: out of memory");
        return RC_NOMEM;
    }
    s->stats.reconnects++;
    /* Set before the first message from the server (an authentication
     * failure is one): see describe and on_notice.  libpq keeps no SQLSTATE
     * for a failed connection where we can ask for it; in this mode its
     * message carries it ("FATAL:  28P01") and nothing of the server's text. */
    PQsetErrorVerbosity(s->conn, PQERRORS_SQLSTATE);
    PQsetNoticeReceiver(s->conn, on_notice, s);
    PostgresPollingStatusType st = PGRES_POLLING_WRITING;
    while (st != PGRES_POLLING_OK) {
        if (PQstatus(s->conn) == CONNECTION_BAD || st == PGRES_POLLING_FAILED) {
            const char *msg = PQerrorMessage(s->conn);
            fail(s, NULL, "connect");
            /* Refused credentials (a rotated password): another attempt with
             * the same ones cannot help; the caller may read them again. */
            if (strstr(msg, ":  28P01") || strstr(msg, ":  28000")) {
                s->auth_refused = 1;
                s->retryable = 0;
            }
            goto out;
        }
        if (wait_socket(s, st == PGRES_POLLING_READING ? POLLIN : POLLOUT, 0) != RC_OK) {
            fail(s, NULL, "connect: timeout");
            rc = RC_TIMEOUT;
            goto out;
        }
        st = PQconnectPoll(s->conn);
    }
    if (PQsetnonblocking(s->conn, 1) != 0) {
        fail(s, NULL, "connect: non-blocking mode");
        goto out;
    }
    const char *enc = PQparameterStatus(s->conn, "server_encoding");
    if (!enc || strcmp(enc, "UTF8") != 0) {
        /* varchar(n) counts characters in the database encoding; our
         * validation counts UTF-8 characters, and must agree with it. */
        snprintf(s->why, sizeof s->why, "connect: database encoding is %s, not UTF8",
                 enc ? enc : "unknown");
        s->phase = PH_BROKEN;
        s->retryable = 0;
        goto out;
    }
    if (!s->schema_ready && (rc = check_schema(s)) != RC_OK)
        goto out;
    rc = RC_OK;
out:
    if (rc) {
        if (s->conn)
            PQfinish(s->conn);
        s->conn = NULL;
    }
    return rc;
}

/* Sends op's COPY without waiting for the answer; at op 0 (re)connects and
 * sends BEGIN and the statement timeout with it, in one round trip.
 * Returns RC_OK or RC_DB/RC_TIMEOUT. */
static rc_t start_op(struct pg_sink *s)
{
    char sql[400];
    rc_t rc;
    const char *copy = s->op ? COPY_ROWS_SQL : COPY_LEDGER_SQL;

    if (s->op == 0) {
        if (!s->conn && (rc = connect_db(s)) != RC_OK)
            return rc;
        /* The server enforces the give-up time too, so a statement that waits
         * on a lock ends there even if this process is frozen meanwhile, and
         * a transaction left idle between statements (a process frozen or
         * killed between them) is ended after IDLE_GUARD_MS.  Both are SET
         * LOCAL: they end with the transaction, so a pooling proxy can hand
         * the server connection to another client.  The values are clamped:
         * a deadline further away than Lambda allows (or none) must not
         * overflow the server's int milliseconds. */
        int64_t left = s->give_up_at - clock_mono_ms();
        if (left <= 0) {
            fail(s, NULL, "timeout");
            return RC_TIMEOUT;
        }
        int64_t statement_ms = left > LAMBDA_MAX_MS ? LAMBDA_MAX_MS : left + 50;
        int64_t idle_ms = statement_ms > IDLE_GUARD_MS ? IDLE_GUARD_MS : statement_ms;
        snprintf(sql, sizeof sql,
                 "BEGIN; SET LOCAL statement_timeout = %lld; "
                 "SET LOCAL idle_in_transaction_session_timeout = %lld; %s",
                 (long long)statement_ms, (long long)idle_ms, copy);
        s->stats.attempts++;
    } else {
        snprintf(sql, sizeof sql, "%s%s%s", s->batch_savepoint ? "" : BATCH_SAVEPOINT_SQL,
                 SAVEPOINT_SQL, copy);
        s->batch_savepoint = 1;
    }
    if (!PQsendQuery(s->conn, sql)) {
        fail(s, NULL, "begin");
        return RC_DB;
    }
    s->phase = PH_STARTING;
    s->sent = s->op ? s->seg_from : 0;
    s->header_sent = 0;
    return RC_OK;
}

/* Consumes the answers to what was sent until the server accepts COPY data.
 * With `wait` 0 it only looks at what has arrived.  Returns RC_OK (check
 * s->phase), RC_TIMEOUT or RC_DB. */
static rc_t await_copy(struct pg_sink *s, int wait)
{
    while (s->phase == PH_STARTING) {
        if (PQflush(s->conn) < 0 || PQconsumeInput(s->conn) == 0) {
            fail(s, NULL, "begin");
            return RC_DB;
        }
        if (PQisBusy(s->conn)) {
            if (!wait)
                return RC_OK;
            if (wait_socket(s, POLLIN, 1) != RC_OK) {
                fail(s, NULL, "timeout waiting for the table (a lock?)");
                return RC_TIMEOUT;
            }
            continue;
        }
        PGresult *res = PQgetResult(s->conn);
        ExecStatusType st = res ? PQresultStatus(res) : PGRES_FATAL_ERROR;
        if (st == PGRES_COPY_IN) {
            s->phase = PH_COPYING;
            s->first_send_us = s->first_send_us ? s->first_send_us : clock_mono_us();
        } else if (st != PGRES_COMMAND_OK) {
            fail(s, res, "begin");
            PQclear(res);
            return RC_DB;
        }
        PQclear(res);
    }
    return RC_OK;
}

/* Hands one piece of COPY data to libpq.  With `wait`, waits for room;
 * without, returns RC_TIMEOUT at once when libpq's buffer is full (nothing
 * was queued).  Returns RC_OK, RC_TIMEOUT or RC_DB. */
static rc_t put_copy(struct pg_sink *s, const char *p, size_t n, int wait)
{
    for (;;) {
        int r = PQputCopyData(s->conn, p, (int)n);
        if (r == 1)
            return RC_OK;
        if (r < 0) {
            fail(s, NULL, "copy");
            return RC_DB;
        }
        if (!wait)
            return RC_TIMEOUT;
        rc_t rc = flush_all(s);
        if (rc) {
            fail(s, NULL, rc == RC_TIMEOUT ? "timeout" : "copy");
            return rc;
        }
    }
}

static size_t tuple_start(const struct tuples *t, size_t i)
{
    return i ? t->end[i - 1] : 0;
}

/* The end of op's rows: all rows for the ledger; the rows COPY may write a
 * part of them (rows [seg_from, seg_to)) after a row was refused. */
static size_t op_end(const struct pg_sink *s)
{
    /* Without DELETE on the ledger a key that goes out before its row is
     * known could only be taken back by writing the batch again: keys then
     * wait for their rows (they stream while the rows are made). */
    if (s->op == 0)
        return s->no_delete ? s->decided : s->n;
    return s->seg_to < s->decided ? s->seg_to : s->decided;
}

/* Are op's tuples all known, so that its COPY may end once they are sent:
 * every key for the ledger, every row for the rows? */
static int op_complete(const struct pg_sink *s)
{
    return s->keys_done && ((s->op == 0 && !s->no_delete) || s->decided == s->n);
}

/* The row of op's COPY data line `line` (1-based; in a binary COPY, one line
 * is one tuple): the line-th row that was sent.  Returns NO_ROW when out of
 * range. */
static size_t row_at_line(const struct pg_sink *s, unsigned long long line)
{
    size_t from = s->op == 1 ? s->seg_from : 0, end = op_end(s);
    for (size_t i = from; i < end && line > 0; i++) {
        /* A key found to have no row after it went out was a ledger line. */
        if ((s->dup[i] & RS_MASK) && !(s->op == 0 && (s->dup[i] & RS_IN_LEDGER)))
            continue;
        if (--line == 0)
            return i;
    }
    return NO_ROW;
}

/* The COPY data line a server error names in its CONTEXT field ("COPY
 * user_logins, line 5", the last such line of the context: a trigger's
 * frames come before it).  Only the number is read; the context is never
 * logged, as it can quote data.  Returns 0 when there is none. */
static unsigned long long context_line(const PGresult *res)
{
    const char *ctx = PQresultErrorField(res, PG_DIAG_CONTEXT);
    unsigned long long found = 0;

    for (const char *p = ctx; p && *p;) {
        size_t len = strcspn(p, "\n");
        const char *at = NULL;
        if (len > 5 && strncmp(p, "COPY ", 5) == 0) {
            for (const char *q = p; q + 7 <= p + len; q++)
                if (strncmp(q, ", line ", 7) == 0) {
                    at = q + 7;
                    break;
                }
        }
        if (at) {
            unsigned long long v = 0;
            while (at < p + len && *at >= '0' && *at <= '9' && v < ULLONG_MAX / 10)
                v = v * 10 + (unsigned long long)(*at++ - '0');
            found = v;
        }
        p += len;
        if (*p)
            p++;
    }
    return found;
}

/* Streams op's tuples [sent..n) that are not known duplicates, in pieces of
 * about STREAM_CHUNK (LEDGER_CHUNK for keys).  Unless `all` (no more rows are coming), stops when
 * less than a piece is pending.  Without `wait`, also stops when libpq would block.  Returns RC_OK,
 * RC_TIMEOUT (only with wait) or RC_DB. */
static rc_t stream_tuples(struct pg_sink *s, const struct tuples *t, int all, int wait)
{
    size_t end = op_end(s), piece = s->op == 0 ? LEDGER_CHUNK : STREAM_CHUNK;

    if (!s->header_sent) {
        /* A timeout here is the deadline's, not a database failure. */
        rc_t rc = put_copy(s, copy_header, sizeof copy_header, 1);
        if (rc)
            return rc;
        s->header_sent = 1;
    }
    /* Called every few rows: return at once unless a piece is worth sending. */
    if (!all && tuple_start(t, end) - tuple_start(t, s->sent) < piece)
        return RC_OK;
    while (s->sent < end) {
        /* A run of consecutive tuples to write, ending before a duplicate. */
        size_t first = s->sent;
        while (first < end && s->dup[first])
            first++;
        size_t last = first;
        while (last < end && !s->dup[last] && tuple_start(t, last) - tuple_start(t, first) < piece)
            last++;
        size_t from = tuple_start(t, first), to = tuple_start(t, last);
        if (!all && to - from < piece && last == end)
            return RC_OK; /* not worth a send yet: more rows are coming */
        if (to > from) {
            /* A piece goes to libpq only when the one before it has left
             * for the socket: libpq would take any amount without blocking
             * (its buffer grows), and moves what is left to the front of
             * that buffer after each partial send, so a backlog of a
             * megabyte costs a megabyte of copying per piece.  A server
             * that is behind keeps the rest here, where a key found to
             * have no row before it goes out is simply skipped. */
            int f = PQflush(s->conn);
            if (f < 0) {
                fail(s, NULL, "copy");
                return RC_DB;
            }
            if (f == 1 && !wait)
                return RC_OK;
            rc_t rc = f == 1 ? flush_all(s) : RC_OK;
            if (rc) {
                fail(s, NULL, rc == RC_TIMEOUT ? "timeout" : "copy");
                return rc;
            }
            rc = put_copy(s, t->data.data + from, to - from, wait);
            if (rc == RC_TIMEOUT && !wait)
                return RC_OK;
            if (rc)
                return rc;
        }
        s->sent = last;
    }
    return RC_OK;
}

static void abandon(struct pg_sink *s);

void pg_batch_begin(struct pg_sink *s, int64_t give_up_at_ms)
{
    if (s->conn && PQstatus(s->conn) == CONNECTION_BAD)
        disconnect(s);
    s->give_up_at = give_up_at_ms;
    if (s->conn && (s->phase != PH_IDLE || s->op))
        abandon(s); /* a batch neither committed nor aborted (cannot happen) */
    s->fifo = 0;
    s->unattributed = 0;
    s->isolating = 0;
    reset_attempt(s);
    s->why[0] = '\0';
    s->retryable = 0;
    s->n = 0;
    s->decided = 0;
    s->keys_done = 0;
    s->first_send_us = 0;
    memset(&s->stats, 0, sizeof s->stats);
    buf_reset(&s->rows.data);
    buf_reset(&s->ledger.data);
}

void pg_batch_fifo(struct pg_sink *s)
{
    s->fifo = 1;
}

/* Makes room for one more row in the per-row arrays (all or nothing:
 * grow.h); per row, so the common case is the one compare.  Returns RC_OK or
 * RC_NOMEM. */
static rc_t grow(struct pg_sink *s)
{
    if (s->n < s->cap)
        return RC_OK;
    const struct grow_array arrays[] = {
        {&s->rows.end, sizeof *s->rows.end}, {&s->ledger.end, sizeof *s->ledger.end},
        {&s->ids, sizeof *s->ids},           {&s->id_len, sizeof *s->id_len},
        {&s->sent_at, sizeof *s->sent_at},   {&s->dup, sizeof *s->dup},
        {&s->slot, sizeof *s->slot},         {&s->key, sizeof *s->key},
    };
    return grow_arrays(arrays, sizeof arrays / sizeof *arrays, &s->cap, s->n + 1, 1024);
}

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

/* The same, appended to b (for query parameters, off the hot path). */
static void put_u16(struct buf *b, uint16_t v)
{
    uint8_t be[2];
    w16(be, v);
    buf_append(b, be, sizeof be);
}

static void put_u32(struct buf *b, uint32_t v)
{
    uint8_t be[4];
    w32(be, v);
    buf_append(b, be, sizeof be);
}

static void put_u64(struct buf *b, uint64_t v)
{
    uint8_t be[8];
    w64(be, v);
    buf_append(b, be, sizeof be);
}

static void put_text(struct buf *b, const char *p, size_t n)
{
    put_u32(b, p ? (uint32_t)n : UINT32_MAX);
    if (p)
        buf_append(b, p, n);
}

/* Room for n more bytes in b, at the returned address (then buf_commit), or
 * NULL with *rc set; the error is not left sticky, so the tuples appended
 * before stay valid and usable. */
static uint8_t *room(struct buf *b, size_t n, rc_t *rc)
{
    if (buf_reserve(b, n) != RC_OK) {
        *rc = b->err;
        buf_truncate(b, b->len);
        return NULL;
    }
    return (uint8_t *)b->data + b->len;
}

static rc_t pump(struct pg_sink *s, int wait, int final);

/* The value of a lowercase hexadecimal digit; sets *bad for any other byte.
 * Branch-free: a key's 32 digits cost less than its tuple's copy. */
static inline unsigned hex_nibble(unsigned char c, unsigned *bad)
{
    unsigned d = (unsigned)c - '0', l = (unsigned)c - 'a';
    *bad |= (unsigned)(d >= 10) & (unsigned)(l >= 6);
    return d < 10 ? d : l + 10;
}

/* The ledger's message_id for an SQS message id, into key.  An id that is a
 * lowercase canonical UUID (SQS's form: 36 characters, hyphens at 8, 13,
 * 18, 23) is that UUID, unless its version nibble is 0, which the ledger
 * reserves for its markers (MARKER_V1, MARKER_V2).  Any other id (upper
 * case, not a UUID at all) becomes the first 16 bytes of its SHA-256 with
 * the version nibble set to 8 and the RFC 4122 variant bits: deterministic,
 * so its redeliveries meet its entry, and never parsed case-insensitively,
 * so ids that differ in case stay different ids.  Two different ids meet
 * only if 122 hash bits collide (or a hashed id equals a real version-8
 * UUID): at a billion entries the odds are about 2^-69.  Returns RC_OK or
 * RC_NOMEM (the digest could not be computed). */
static rc_t ledger_key(const char *id, size_t len, uint8_t key[16])
{
    /* Where each byte's two digits start in the canonical form. */
    static const uint8_t at[16] = {0, 2, 4, 6, 9, 11, 14, 16, 19, 21, 24, 26, 28, 30, 32, 34};
    unsigned char digest[EVP_MAX_MD_SIZE];

    if (len == 36 && id[8] == '-' && id[13] == '-' && id[18] == '-' && id[23] == '-' &&
        id[14] != '0') {
        const unsigned char *u = (const unsigned char *)id;
        unsigned bad = 0;
        for (size_t i = 0; i < 16; i++)
            key[i] = (uint8_t)(hex_nibble(u[at[i]], &bad) << 4 | hex_nibble(u[at[i] + 1], &bad));
        if (!bad)
            return RC_OK;
    }
    if (EVP_Digest(id, len, digest, NULL, EVP_sha256(), NULL) != 1)
        return RC_NOMEM;
    memcpy(key, digest, 16);
    key[6] = (uint8_t)((key[6] & 0x0f) | 0x80);
    key[8] = (uint8_t)((key[8] & 0x3f) | 0x80);
    return RC_OK;
}

/* The ledger slot of a message sent at sent_ms (ms since the Unix epoch; -1
 * when it has none): its UTC day modulo LEDGER_SLOTS, or SLOT_NONE. */
static int ledger_slot(int64_t sent_ms)
{
    if (sent_ms < 0)
        return SLOT_NONE;
    return (int)((sent_ms / DAY_MS) % LEDGER_SLOTS);
}

/* See pg.h.  SentTimestamp becomes the ledger's sent_at: binary timestamptz
 * is microseconds since 2000-01-01; a message without one gets -infinity, a
 * value no SentTimestamp has, so its receives still meet each other. */
rc_t pg_batch_key(struct pg_sink *s, const char *message_id, size_t message_id_len, int64_t sent_ms)
{
    rc_t rc = grow(s);
    if (rc)
        return rc;
    struct buf *l = &s->ledger.data;
    int64_t sent = sent_ms < 0 ? INT64_MIN : (sent_ms - POSTGRES_EPOCH_MS) * 1000;
    int slot = ledger_slot(sent_ms);
    if ((rc = ledger_key(message_id, message_id_len, s->key[s->n])) != RC_OK)
        return rc;
    /* (slot smallint, sent_at timestamptz, message_id uuid): 40 bytes. */
    uint8_t *o = room(l, 40, &rc), *o0 = o;
    if (!o)
        return rc;
    o = w16(o, 3); /* fields */
    o = w16(w32(o, 2), (uint16_t)slot);
    o = w64(w32(o, 8), (uint64_t)sent);
    o = w32(o, 16);
    memcpy(o, s->key[s->n], 16);
    buf_commit(l, (size_t)(o + 16 - o0));
    s->ledger.end[s->n] = l->len;
    s->ids[s->n] = message_id;
    s->id_len[s->n] = message_id_len;
    s->sent_at[s->n] = sent;
    s->slot[s->n] = (uint8_t)slot;
    s->dup[s->n] = 0;
    s->n++;
    /* The transaction starts with the first key.  Then the server inserts
     * the ledger entries while we parse the rest; asking for its answers
     * is a system call, so every 32 keys is often enough.  A failure here
     * is retried by commit. */
    if (s->n == 1 || (s->n & 31) == 0) {
        if (pump(s, 0, 0) != RC_OK && s->n == 1)
            log_at(s->lg, LOG_WARN, "database not ready; rows are buffered for a retry",
                   LF_STR("reason", s->why));
    }
    return RC_OK;
}

/* See pg.h: the row of key `decided`, encoded as a binary COPY tuple. */
rc_t pg_batch_row(struct pg_sink *s, const struct pg_row *row)
{
    struct buf *b = &s->rows.data;
    rc_t rc = RC_OK;

    assert(s->decided < s->n);
    size_t size = 2 + field_size(row->user_id, row->user_id_len) +
                  field_size(row->device_type, row->device_type_len) +
                  field_size(row->masked_ip, row->masked_ip_len) +
                  field_size(row->masked_device_id, row->masked_device_id_len) +
                  field_size(row->locale, row->locale_len) + (row->has_app_version ? 8 : 4) + 8;
    uint8_t *o = room(b, size, &rc), *o0 = o;
    if (!o)
        return rc;
    o = w16(o, 7); /* fields */
    o = wtext(o, row->user_id, row->user_id_len);
    o = wtext(o, row->device_type, row->device_type_len);
    o = wtext(o, row->masked_ip, row->masked_ip_len);
    o = wtext(o, row->masked_device_id, row->masked_device_id_len);
    o = wtext(o, row->locale, row->locale_len);
    o = row->has_app_version ? w32(w32(o, 4), (uint32_t)row->app_version) : w32(o, UINT32_MAX);
    o = w32(w32(o, 4), (uint32_t)(row->create_date - POSTGRES_EPOCH_DAYS));
    assert((size_t)(o - o0) == size);
    buf_commit(b, size);
    s->rows.end[s->decided++] = b->len;
    /* The rows COPY streams them while the caller makes the next ones. */
    if ((s->decided & 31) == 0)
        pump(s, 0, 0);
    return RC_OK;
}

/* Has key i gone to the open transaction's ledger (handed to libpq in its
 * COPY, which the server then stores unless the transaction fails)? */
static int key_sent(const struct pg_sink *s, size_t i)
{
    if (!s->conn || s->phase == PH_BROKEN)
        return 0;
    if (s->op == 0)
        return s->phase == PH_ENDING || (s->phase == PH_COPYING && i < s->sent);
    return 1;
}

/* See pg.h: key `decided` gets an empty tuple and no row; its ledger entry,
 * if it went out, is taken back out before COMMIT (unledger). */
void pg_batch_no_row(struct pg_sink *s)
{
    size_t i = s->decided;

    assert(i < s->n);
    s->rows.end[i] = s->rows.data.len;
    s->dup[i] = (uint8_t)(RS_NO_ROW | (key_sent(s, i) ? RS_IN_LEDGER : 0));
    s->decided++;
    if ((s->decided & 31) == 0)
        pump(s, 0, 0);
}

/* See pg.h: the ledger COPY ends as soon as its tuples are out. */
void pg_batch_keys_done(struct pg_sink *s)
{
    s->keys_done = 1;
    if (s->n)
        pump(s, 0, 0);
}

/* See pg.h: a key and its row at once. */
rc_t pg_batch_add(struct pg_sink *s, const char *message_id, size_t message_id_len, int64_t sent_ms,
                  const struct pg_row *row)
{
    rc_t rc = pg_batch_key(s, message_id, message_id_len, sent_ms);
    if (rc == RC_OK && (rc = pg_batch_row(s, row)) != RC_OK)
        pg_batch_no_row(s);
    return rc;
}

/* Reads the answer to op's ended COPY: the count of rows stored, which must
 * be one per tuple that is not a known duplicate, or a unique violation (a
 * ledger op: the transaction is void, s->unique_violation says so), or a
 * row refused for its data (s->refusal, and s->refused_row when the
 * server named its line).  Without `wait`, returns RC_OK at once while the
 * answer is not complete (s->phase stays PH_ENDING).  Returns RC_OK,
 * RC_TIMEOUT or RC_DB. */
static rc_t collect(struct pg_sink *s, int wait)
{
    const char *what = s->op ? "copy rows" : "ledger";
    rc_t rc = RC_OK;

    for (;;) {
        PGresult *res;
        if (!wait) {
            /* The end of the COPY may still be in libpq's buffer. */
            if (PQflush(s->conn) < 0 || PQconsumeInput(s->conn) == 0) {
                fail(s, NULL, what);
                return RC_DB;
            }
            if (PQisBusy(s->conn))
                return rc;
            res = PQgetResult(s->conn);
        } else {
            rc_t w = next_result(s, &res);
            if (w) {
                fail(s, NULL, w == RC_TIMEOUT ? "timeout" : what);
                return w;
            }
        }
        if (!res)
            break;
        const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
        if (PQresultStatus(res) != PGRES_COMMAND_OK) {
            if (s->op == 0 && state && strcmp(state, "23505") == 0) {
                s->unique_violation = 1;
            } else if (row_refused(res) && !s->refusal) {
                s->refusal = 1 + (int)s->op;
                s->refused_row = row_at_line(s, context_line(res));
                describe(s, res, what, s->why, sizeof s->why);
                snprintf(s->sqlstate, sizeof s->sqlstate, "%s", state);
            } else {
                fail(s, res, what);
                rc = RC_DB;
            }
        } else {
            /* Counted once the answer is in (called without `wait`, this
             * runs every few rows until then).  The ledger's tuples include
             * keys found to have no row after they went out (RS_IN_LEDGER:
             * the only flag an open ledger COPY sees). */
            size_t expected = 0;
            for (size_t i = s->op ? s->seg_from : 0; i < op_end(s); i++)
                expected += !s->dup[i] || (s->op == 0 && (s->dup[i] & RS_IN_LEDGER));
            char want[32];
            snprintf(want, sizeof want, "%zu", expected);
            if (strcmp(PQcmdTuples(res), want) != 0) {
                fail(s, NULL, "copy: the server stored a different number of rows");
                rc = RC_DB;
            }
        }
        PQclear(res);
    }
    if (!rc && s->phase != PH_BROKEN) {
        s->phase = PH_IDLE;
        s->op++;
    }
    return rc;
}

/* The day's retention is over: its slot was found empty, truncated or swept
 * to its end (or cannot be, for lack of privileges).  Cannot fail. */
static void ret_done(struct pg_sink *s)
{
    s->ret_day = s->ret_for;
    s->ret_stage = RET_IDLE;
}

/* Moves the slot's sweep on after one step that deleted `deleted` entries
 * and stopped at sent_at `next` (INT64_MIN: -infinity); `last`: it reached
 * the end.  Cannot fail. */
static void advance_sweep(struct pg_sink *s, int64_t deleted, int64_t next, int last)
{
    s->stats.pruned += deleted;
    if (last) {
        ret_done(s);
        return;
    }
    /* A step that could not leave the sent_at it started at (more than a
     * step's worth of entries share it) goes on just after it. */
    s->prune_past = next == s->prune_from;
    s->prune_from = next;
}

/* Reads one tagged answer row of a retention step (RET_*_SQL).  Cannot
 * fail: an answer it cannot read is ignored (the step is sent again). */
static void retention_row(struct pg_sink *s, const PGresult *res)
{
    const char *tag = PQgetvalue(res, 0, 0);
    int64_t n = 0, next = INT64_MIN;

    if (strcmp(tag, "slot") == 0 && PQnfields(res) == 2) {
        if (strcmp(PQgetvalue(res, 0, 1), "t") != 0) {
            ret_done(s); /* empty: nothing to clear today */
        } else if (s->truncate_off) {
            s->ret_stage = RET_SWEEP;
            s->prune_from = INT64_MIN;
            s->prune_past = 0;
        } else {
            s->ret_stage = RET_TRUNCATE;
        }
    } else if (strcmp(tag, "deleted") == 0 && PQnfields(res) == 2) {
        if (num_parse_i64(PQgetvalue(res, 0, 1), (size_t)PQgetlength(res, 0, 1), 0, INT64_MAX,
                          &n) == RC_OK)
            s->stats.pruned += n;
    } else if (strcmp(tag, "truncated") == 0) {
        log_at(s->lg, LOG_INFO, "ledger slot cleared", LF_NUM("slot", s->ret_slot));
        ret_done(s);
    } else if (strcmp(tag, "swept") == 0 && PQnfields(res) == 4 && s->ret_stage == RET_SWEEP &&
               num_parse_i64(PQgetvalue(res, 0, 1), (size_t)PQgetlength(res, 0, 1), 0, INT64_MAX,
                             &n) == RC_OK &&
               (PQgetisnull(res, 0, 2) ||
                num_parse_i64(PQgetvalue(res, 0, 2), (size_t)PQgetlength(res, 0, 2), INT64_MIN,
                              INT64_MAX, &next) == RC_OK)) {
        advance_sweep(s, n, next, strcmp(PQgetvalue(res, 0, 3), "t") == 0);
    }
}

/* A retention step failed with SQLSTATE `state` (the batch before it is
 * committed whatever happens here).  Refused TRUNCATE (42501 in that step)
 * or young entries in the slot (55000) turn to the DELETE sweep; a refused
 * DELETE (in the day's check, which deletes slot SLOT_NONE's expired
 * entries, or in a sweep) stops the deletes for good (logged once);
 * anything else (a lock held past lock_timeout, say) is tried again after
 * RET_RETRY_MS.  Cannot fail. */
static void retention_failed(struct pg_sink *s, const char *state)
{
    int refused = strcmp(state, "42501") == 0;

    if (s->ret_sent == RET_TRUNCATE && (refused || strcmp(state, "55000") == 0)) {
        s->truncate_off |= refused;
        log_at(s->lg, LOG_INFO,
               refused ? "no TRUNCATE on the ledger's slots: they are swept by DELETE"
                       : "the ledger slot holds young entries: swept by DELETE",
               LF_NUM("slot", s->ret_slot), LF_STR("sqlstate", state));
        s->ret_stage = RET_SWEEP;
        s->prune_from = INT64_MIN;
        s->prune_past = 0;
        return;
    }
    if (refused) {
        log_at(s->lg, LOG_WARN, "ledger retention refused (no DELETE privilege): not tried again",
               LF_STR("sqlstate", state), LF_STR("table", LEDGER));
        s->prune_off = 1;
        if (s->ret_sent == RET_SWEEP)
            ret_done(s);
        return;
    }
    log_at(s->lg, LOG_WARN, "ledger retention failed; the batch is committed",
           LF_STR("sqlstate", state), LF_STR("table", LEDGER));
    s->ret_retry_at = clock_mono_ms() + RET_RETRY_MS;
}

/* Reads the answer to the retention step sent after the previous batch's
 * COMMIT (s->prune_pending), which the server worked on while this process
 * answered and took the next event.  That batch is committed whatever
 * happens here: a failure is logged (by SQLSTATE) and handled by
 * retention_failed.  Without `wait`, returns at once while the answer is not
 * all in (s->prune_pending stays set).  Returns RC_OK, or RC_TIMEOUT/RC_DB
 * when the connection can no longer be trusted. */
static rc_t collect_prune(struct pg_sink *s, int wait)
{
    PGresult *res = NULL;
    rc_t rc = RC_OK;

    for (;;) {
        if (!wait) {
            if (PQconsumeInput(s->conn) == 0)
                return RC_DB;
            if (PQisBusy(s->conn))
                return RC_OK;
            res = PQgetResult(s->conn);
        } else {
            rc_t w = next_result(s, &res);
            if (w)
                return w;
        }
        if (!res)
            break;
        if (PQresultStatus(res) == PGRES_COMMAND_OK) {
            /* BEGIN, the SET LOCALs, LOCK, DO, TRUNCATE, COMMIT */
        } else if (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1) {
            retention_row(s, res);
        } else {
            const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
            retention_failed(s, state ? state : "");
        }
        PQclear(res);
    }
    s->prune_pending = 0;
    /* An error skipped the COMMIT: the block is left aborted. */
    if (PQtransactionStatus(s->conn) == PQTRANS_INERROR)
        rc = run(s, "ROLLBACK", PGRES_COMMAND_OK, NULL);
    return rc;
}

/* Builds into sql (cap bytes) the retention step to send after a COMMIT
 * that wrote `written` rows, if one is due (see RET_CHECK_SQL): the day's
 * check when this process has not seen to today's slot, then its TRUNCATE
 * or a step of its sweep.  Returns 1 when there is one to send. */
static int retention_step(struct pg_sink *s, size_t written, char *sql, size_t cap)
{
    int64_t today = clock_epoch_ms() / DAY_MS;
    size_t at = 0;

    if (clock_mono_ms() < s->ret_retry_at)
        return 0;
    if (s->ret_stage == RET_IDLE) {
        if (today == s->ret_day)
            return 0;
        s->ret_for = today;
        s->ret_slot = (int)((today + 2) % LEDGER_SLOTS);
    }
    if (s->ret_stage == RET_SWEEP && s->prune_off) {
        ret_done(s);
        return 0;
    }
    s->ret_sent = s->ret_stage;
    at = (size_t)snprintf(sql, cap, "%s", RET_BEGIN_SQL);
    if (at >= cap)
        return 0; /* cannot happen with the caller's buffer; never write past it */
    if (s->ret_stage == RET_IDLE) {
        at += (size_t)snprintf(sql + at, cap - at, RET_CHECK_SQL "%s", s->ret_slot,
                               s->prune_off ? "" : RET_NONE_SQL);
    } else if (s->ret_stage == RET_TRUNCATE) {
        int k = s->ret_slot;
        at += (size_t)snprintf(sql + at, cap - at, RET_TRUNCATE_SQL, k, k, k, k, k, k, k, k);
    } else {
        char from[80];
        size_t limit = written * 2 < PRUNE_MIN ? PRUNE_MIN : written * 2;
        limit = limit > PRUNE_MAX ? PRUNE_MAX : limit;
        if (s->prune_from == INT64_MIN)
            snprintf(from, sizeof from, "%s '-infinity'", s->prune_past ? ">" : ">=");
        else
            snprintf(from, sizeof from, "%s to_timestamp(0) + %lld * interval '1 us'",
                     s->prune_past ? ">" : ">=", (long long)s->prune_from);
        at += (size_t)snprintf(sql + at, cap - at, RET_SWEEP_SQL, s->ret_slot, from, limit,
                               s->ret_slot, from);
    }
    if (at < cap)
        at += (size_t)snprintf(sql + at, cap - at, "COMMIT");
    return at < cap;
}

/* Drives the transaction's two COPYs as far as it can: the ledger's, which
 * streams while the caller adds rows, then, once no more rows are coming
 * (`final`), the rows'.  Without `wait` it never blocks: it does what the
 * socket allows and returns.  (Cutting a batch into segments, each a ledger
 * COPY then a rows COPY, so that the rows of early segments are stored
 * while later ones are parsed, was measured: it cost the server a third more
 * CPU than it saved, 0.95 against 0.70 CPU-s per 100,000 rows.)  Returns
 * RC_OK (all done when final and s->op is 2; stops early on a unique
 * violation), RC_TIMEOUT or RC_DB. */
static rc_t pump(struct pg_sink *s, int wait, int final)
{
    for (;;) {
        const struct tuples *t = s->op ? &s->rows : &s->ledger;
        rc_t rc = RC_OK;

        /* A voided attempt stops once the failed COPY's answer is all in
         * (libpq takes no new command before that). */
        if ((s->unique_violation || s->refusal) && s->phase == PH_IDLE)
            return RC_OK;
        switch (s->phase) {
        case PH_BROKEN:
            return RC_DB;
        case PH_IDLE:
            if (s->op > 1 || s->n == 0)
                return RC_OK; /* done, or nothing to write yet */
            if (s->prune_pending) {
                /* The previous batch's retention step answers first. */
                if ((rc = collect_prune(s, wait)) != RC_OK) {
                    fail(s, NULL, rc == RC_TIMEOUT ? "timeout" : "retention");
                    return rc;
                }
                if (s->prune_pending)
                    return RC_OK;
            }
            if (s->op == 1 && s->seg_from >= op_end(s))
                return RC_OK; /* isolation sends the rows itself (isolate_rows) */
            rc = start_op(s);
            break;
        case PH_STARTING:
            rc = await_copy(s, wait);
            if (!rc && s->phase == PH_STARTING)
                return RC_OK;
            break;
        case PH_COPYING: {
            int all = final || op_complete(s);
            rc = stream_tuples(s, t, all, wait);
            if (rc || !all || s->sent < op_end(s))
                return rc;
            rc = put_copy(s, copy_trailer, sizeof copy_trailer, 1);
            if (!rc && PQputCopyEnd(s->conn, NULL) != 1) {
                fail(s, NULL, "copy end");
                rc = RC_DB;
            }
            if (!rc)
                s->phase = PH_ENDING;
            break;
        }
        case PH_ENDING:
            rc = collect(s, wait);
            if (!rc && s->phase == PH_ENDING)
                return RC_OK;
            break;
        }
        if (rc)
            return rc;
    }
}

/* Starts a binary one-dimensional array of `count` elements of type `oid`,
 * without NULLs, as a query parameter; the elements follow. */
static void put_array_header(struct buf *b, uint32_t oid, size_t count)
{
    put_u32(b, 1); /* dimensions */
    put_u32(b, 0); /* no NULLs */
    put_u32(b, oid);
    put_u32(b, (uint32_t)count);
    put_u32(b, 1); /* lower bound */
}

/* Sends `sql` with the keys of the rows whose state, masked by `mask`,
 * equals `want`, as binary array parameters built in s->scratch, never SQL
 * text: for KEYS_LEDGER $1 the distinct slots among them, $2 their slots
 * (int2[]), $3 their sent_at (timestamptz[]), $4 their ledger keys
 * (uuid[]), answered in binary; for KEYS_V2 $1 their sent_at and $2 their
 * message ids (text[]); for KEYS_V1 the ids alone.  Returns RC_OK (the
 * query is sent), RC_NOMEM, or RC_DB with the attempt marked broken
 * (`what`). */
static rc_t send_keys(struct pg_sink *s, const char *sql, uint8_t mask, uint8_t want,
                      enum keys keys, const char *what)
{
    struct buf *b = &s->scratch;
    size_t count = 0, at[5] = {0};
    uint32_t slots = 0; /* bit k: slot k is among the rows */
    int nslots = 0, np = 0;

    for (size_t i = 0; i < s->n; i++) {
        if ((s->dup[i] & mask) == want) {
            count++;
            slots |= UINT32_C(1) << s->slot[i];
        }
    }
    buf_reset(b);
    if (keys == KEYS_LEDGER) {
        for (int k = 0; k <= SLOT_NONE; k++)
            nslots += (slots >> k) & 1;
        put_array_header(b, INT2_OID, (size_t)nslots);
        for (int k = 0; k <= SLOT_NONE; k++) {
            if ((slots >> k) & 1) {
                put_u32(b, 2);
                put_u16(b, (uint16_t)k);
            }
        }
        at[++np] = b->len;
        put_array_header(b, INT2_OID, count);
        for (size_t i = 0; i < s->n; i++) {
            if ((s->dup[i] & mask) == want) {
                put_u32(b, 2);
                put_u16(b, s->slot[i]);
            }
        }
        at[++np] = b->len;
    }
    if (keys != KEYS_V1) {
        put_array_header(b, TIMESTAMPTZ_OID, count);
        for (size_t i = 0; i < s->n; i++) {
            if ((s->dup[i] & mask) == want) {
                put_u32(b, 8);
                put_u64(b, (uint64_t)s->sent_at[i]);
            }
        }
        at[++np] = b->len;
    }
    put_array_header(b, keys == KEYS_LEDGER ? UUID_OID : TEXT_OID, count);
    for (size_t i = 0; i < s->n; i++) {
        if ((s->dup[i] & mask) != want)
            continue;
        if (keys == KEYS_LEDGER) {
            put_u32(b, 16);
            buf_append(b, s->key[i], 16);
        } else {
            put_text(b, s->ids[i], s->id_len[i]);
        }
    }
    at[++np] = b->len;
    if (b->err)
        return b->err;
    static const Oid ledger_types[4] = {INT2_ARRAY_OID, INT2_ARRAY_OID, TIMESTAMPTZ_ARRAY_OID,
                                        UUID_ARRAY_OID};
    static const Oid v2_types[2] = {TIMESTAMPTZ_ARRAY_OID, TEXT_ARRAY_OID};
    static const Oid v1_types[1] = {TEXT_ARRAY_OID};
    const char *values[4];
    int lengths[4], formats[4];
    for (int k = 0; k < np; k++) {
        values[k] = b->data + at[k];
        lengths[k] = (int)(at[k + 1] - at[k]);
        formats[k] = 1;
    }
    const Oid *types = keys == KEYS_LEDGER ? ledger_types : keys == KEYS_V2 ? v2_types : v1_types;
    if (!PQsendQueryParams(s->conn, sql, np, types, values, lengths, formats,
                           keys == KEYS_LEDGER)) {
        fail(s, NULL, what);
        return RC_DB;
    }
    return RC_OK;
}

/* Finds which of the batch's messages not yet marked are committed already
 * and marks them: in the ledger by its key (earlier < 0) or in the earlier
 * layout EARLIER[earlier] by its own.  The values travel as binary array
 * parameters, never as SQL text; the answer maps back to rows by the
 * 16-byte key (or, from an earlier layout, by the message id).  Returns
 * RC_OK (*found = how many new ones), RC_TIMEOUT, RC_DB or RC_NOMEM. */
static rc_t mark_duplicates(struct pg_sink *s, int earlier, size_t *found)
{
    PGresult *res = NULL;
    rc_t rc;

    *found = 0;
    if ((rc = idset_reset(&s->lookup, s->n)) != RC_OK)
        return rc;
    for (size_t i = 0; i < s->n; i++) {
        if (s->dup[i])
            continue;
        if (earlier < 0)
            idset_put(&s->lookup, (const char *)s->key[i], 16, i);
        else
            idset_put(&s->lookup, s->ids[i], s->id_len[i], i);
    }
    if ((rc = send_keys(s, earlier < 0 ? FIND_DUPLICATES_SQL : EARLIER[earlier].find_sql, 0xff,
                        RS_PENDING, earlier < 0 ? KEYS_LEDGER : EARLIER[earlier].keys,
                        "duplicates")) != RC_OK)
        return rc;
    for (;;) {
        rc_t w = next_result(s, &res);
        if (w) {
            fail(s, NULL, w == RC_TIMEOUT ? "timeout" : "duplicates");
            return w;
        }
        if (!res)
            break;
        if (PQresultStatus(res) != PGRES_TUPLES_OK) {
            fail(s, res, "duplicates");
            rc = RC_DB;
        } else {
            for (int r = 0; r < PQntuples(res); r++) {
                size_t i =
                    idset_get(&s->lookup, PQgetvalue(res, r, 0), (size_t)PQgetlength(res, r, 0));
                if (i != (size_t)-1 && !s->dup[i]) {
                    s->dup[i] = RS_DUP;
                    (*found)++;
                }
            }
        }
        PQclear(res);
    }
    return rc;
}
/* Marks row r refused and logs why (SQLSTATE, table, constraint: never the
 * server's text).  In a FIFO batch every row after it that was still to be
 * written is cut (not written, to keep the order).  `in_ledger`: the open
 * transaction's ledger holds their ids, to be taken out before COMMIT. */
static void refuse_row(struct pg_sink *s, size_t r, int in_ledger)
{
    uint8_t flag = in_ledger ? RS_IN_LEDGER : 0;

    s->dup[r] = (uint8_t)(RS_REFUSED | flag);
    if (s->fifo)
        for (size_t i = r + 1; i < s->n; i++)
            if (s->dup[i] == RS_PENDING || s->dup[i] == RS_OUT)
                s->dup[i] = (uint8_t)(RS_CUT | (s->dup[i] == RS_PENDING ? flag : 0));
    log_at(s->lg, LOG_WARN, "database refused a row", LF_NUM("row", r), LF_STR("reason", s->why));
}

/* How many rows of [from, to) are still to be written; cannot fail. */
static size_t pending_in(const struct pg_sink *s, size_t from, size_t to)
{
    size_t count = 0;
    for (size_t i = from; i < to && i < s->n; i++)
        count += s->dup[i] == RS_PENDING;
    return count;
}

/* The first row of [from, to) still to be written, or NO_ROW; cannot fail. */
static size_t first_pending(const struct pg_sink *s, size_t from, size_t to)
{
    for (size_t i = from; i < to && i < s->n; i++)
        if (s->dup[i] == RS_PENDING)
            return i;
    return NO_ROW;
}

/* After the rows COPY of [seg_from, seg_to) went in: readies the COPY of
 * the next part of the rest of the batch (the rows after a refused one), if
 * any is left.  The parts start at TAIL_CHUNK rows and double: a server
 * that refused one row may refuse more (an operator's CHECK), and each
 * refusal makes the client send its part again; so K refusals cost about
 * K * TAIL_CHUNK rows sent twice, not K times the rest of the batch, and
 * one refusal costs a few round trips.  Returns 1 when there is one to run,
 * 0 when all rows are in. */
static int next_segment(struct pg_sink *s)
{
    while (s->seg_to < s->n) {
        s->seg_from = s->seg_to;
        s->seg_to = s->n - s->seg_from > s->chunk ? s->seg_from + s->chunk : s->n;
        s->chunk *= 2;
        s->rerun = 0;
        if (pending_in(s, s->seg_from, s->seg_to)) {
            s->op = 1;
            s->phase = PH_IDLE;
            return 1;
        }
    }
    return 0;
}

/* Takes the rows refused in the open transaction back out of its ledger
 * (UNLEDGER_SQL, through the ledger's key: send_keys).
 * Returns RC_OK, RC_TIMEOUT, RC_DB or RC_NOMEM. */
static rc_t unledger(struct pg_sink *s)
{
    size_t count = 0;
    rc_t rc = RC_OK;

    for (size_t i = 0; i < s->n; i++)
        count += (s->dup[i] & RS_IN_LEDGER) != 0;
    if (count == 0)
        return RC_OK;
    if ((rc = send_keys(s, UNLEDGER_SQL, RS_IN_LEDGER, RS_IN_LEDGER, KEYS_LEDGER, "unledger")) !=
        RC_OK)
        return rc;
    for (;;) {
        PGresult *res = NULL;
        rc_t w = next_result(s, &res);
        if (w) {
            fail(s, NULL, w == RC_TIMEOUT ? "timeout" : "unledger");
            return w;
        }
        if (!res)
            break;
        if (PQresultStatus(res) != PGRES_COMMAND_OK && !rc) {
            fail(s, res, "unledger");
            rc = RC_DB;
        }
        PQclear(res);
    }
    return rc;
}

/* The attempt failed on a row's data without naming the row (an error at
 * COMMIT from a deferred constraint trigger, a COPY error without a line, or
 * a line that proved wrong): the transaction is rolled back, refusals made
 * on the strength of its lines are undone, and s->unattributed tells
 * pg_batch_commit to isolate the row (isolate_rows, isolate).  Returns RC_DB, or the
 * failure of the rollback. */
static rc_t unattributed(struct pg_sink *s, int rolled_back)
{
    rc_t rc;

    for (size_t i = 0; i < s->n; i++)
        if ((s->dup[i] & RS_IN_LEDGER) && (s->dup[i] & RS_MASK) != RS_NO_ROW)
            s->dup[i] = RS_PENDING;
    reset_attempt(s);
    if (!rolled_back && (rc = run(s, "ROLLBACK", PGRES_COMMAND_OK, NULL)) != RC_OK)
        return rc;
    s->unattributed = 1;
    s->retryable = 0;
    s->phase = PH_IDLE; /* the connection is sound: isolation goes on with it */
    return RC_DB;
}

/* A refusal in the rows phase named no row (a trigger run at the end of
 * the COPY, a deferred constraint made to fire before COMMIT), or a line
 * that proved wrong: back to login_etl_batch (every row out, the ledger
 * kept, refusals made on the strength of lines undone), and the rows are
 * isolated in this same transaction (s->isolating).  Returns RC_OK, or what
 * unattributed returns when that savepoint cannot be returned to. */
static rc_t back_to_batch(struct pg_sink *s)
{
    /* The ledger COPY stays: keys without a row keep their entries (and
     * RS_IN_LEDGER), to be taken out before COMMIT. */
    for (size_t i = 0; i < s->n; i++)
        if ((s->dup[i] & RS_IN_LEDGER) && (s->dup[i] & RS_MASK) != RS_NO_ROW)
            s->dup[i] = RS_PENDING;
    s->refusal = 0;
    s->refused_row = NO_ROW;
    s->phase = PH_IDLE;
    if (!s->batch_savepoint || run(s, ROLLBACK_BATCH_SQL, PGRES_COMMAND_OK, NULL) != RC_OK)
        return unattributed(s, 0);
    log_at(s->lg, LOG_WARN, "a row was refused without its line: isolating it",
           LF_STR("reason", s->why), LF_NUM("rows", pending_in(s, 0, s->n)));
    s->isolating = 1;
    s->known_bad = 1;
    s->op = 1;
    s->seg_from = s->seg_to = 0; /* isolate_rows sends the rows */
    return RC_OK;
}

/* The COPY of op s->refusal - 1 was refused for a row's data.  A refused
 * ledger COPY voids the transaction: the row is marked and *again is set.
 * A refused rows COPY is rolled back to its savepoint: the row is marked,
 * the rows before it are sent again (they passed once), then those after it
 * (unless the batch is FIFO).  Returns RC_OK, or the failure. */
static rc_t after_refusal(struct pg_sink *s, int *again)
{
    size_t r = s->refused_row;
    rc_t rc;

    if (s->refusal == 2 && (r == NO_ROW || s->rerun))
        return back_to_batch(s);
    if (r == NO_ROW)
        return unattributed(s, 0);
    if (s->refusal == 1) {
        refuse_row(s, r, 0);
        reset_attempt(s);
        if ((rc = run(s, "ROLLBACK", PGRES_COMMAND_OK, NULL)) != RC_OK)
            return rc;
        *again = 1;
        return RC_OK;
    }
    s->refusal = 0;
    s->refused_row = NO_ROW;
    if ((rc = run(s, ROLLBACK_ROWS_SQL, PGRES_COMMAND_OK, NULL)) != RC_OK)
        return rc;
    refuse_row(s, r, 1);
    s->seg_to = r;
    s->chunk = TAIL_CHUNK;
    if (pending_in(s, s->seg_from, s->seg_to)) {
        s->rerun = 1;
        s->op = 1;
        s->phase = PH_IDLE;
    } else if (!next_segment(s)) {
        s->op = 2;
    }
    return RC_OK;
}

/* Sends the pending rows of [a, b) in a rows COPY of their own behind the
 * savepoint, rolled back to it when the server refuses one.  *refused is
 * then 1 and *row the refused row (NO_ROW when the server did not say).
 * Returns RC_OK or the failure. */
static rc_t copy_rows(struct pg_sink *s, size_t a, size_t b, int *refused, size_t *row)
{
    rc_t rc;

    *refused = 0;
    *row = NO_ROW;
    s->op = 1;
    s->phase = PH_IDLE;
    s->seg_from = a;
    s->seg_to = b;
    if ((rc = pump(s, 1, 1)) != RC_OK || !s->refusal)
        return rc;
    *refused = 1;
    *row = s->refused_row;
    s->refusal = 0;
    s->refused_row = NO_ROW;
    return run(s, ROLLBACK_ROWS_SQL, PGRES_COMMAND_OK, NULL);
}

static rc_t isolate_range(struct pg_sink *s, size_t a, size_t b, int known_bad, int again,
                          int open_tx, int *stop, int *whole);

/* isolate_range's first try of [a, b) in the open transaction: a rows COPY
 * of its own behind the savepoint (copy_rows).  A refusal that names its row
 * takes that row out and isolates the rows either side of it; unless
 * `again`: these rows went in once before a refused row, and a refusal
 * naming a row now means the names cannot be trusted (a failure when rows
 * are flushed in bulk names the last one read).  Returns RC_OK or the
 * failure; *settled is 0 when [a, b) is still to be cut (refused without a
 * usable row), else 1, with *whole saying whether it went in without a
 * refusal. */
static rc_t try_in_savepoint(struct pg_sink *s, size_t a, size_t b, int again, int *stop,
                             int *whole, int *settled)
{
    size_t r = NO_ROW;
    int refused = 1, ignored;
    rc_t rc = copy_rows(s, a, b, &refused, &r);

    *settled = 1;
    *whole = rc == RC_OK && !refused;
    if (rc != RC_OK || !refused)
        return rc;
    if (r == NO_ROW || again) {
        *settled = 0; /* no row to trust: [a, b) is cut */
        return RC_OK;
    }
    refuse_row(s, r, 1);
    /* The rows before it first, FIFO or not: they are in the ledger and must
     * be written before anything stops. */
    if ((rc = isolate_range(s, a, r, 0, 1, 1, stop, &ignored)) != RC_OK)
        return rc;
    *stop = *stop || s->fifo;
    return isolate_range(s, r + 1, b, 0, 0, 1, stop, &ignored);
}

/* Writes the pending rows of [a, b) into the open transaction (its ledger
 * holds their ids), finding the ones the server refuses (isolate_range,
 * try_in_savepoint).  Deferred constraints were made immediate, so each
 * COPY fails for its own rows.  Arguments and result as isolate_range's. */
static rc_t isolate_rows(struct pg_sink *s, size_t a, size_t b, int known_bad, int again, int *stop,
                         int *whole)
{
    return isolate_range(s, a, b, known_bad, again, 1, stop, whole);
}

/* One attempt at the whole transaction: the COPYs (already under way while
 * rows were added), then COMMIT.  *again is set when it should be repeated at
 * once (duplicates or a refused ledger entry were found and marked).  Rows
 * the server refuses are marked (RS_REFUSED) and the rest written in the
 * same transaction.  Returns RC_OK when committed; otherwise the failure,
 * with the attempt marked broken, or s->unattributed set. */
static rc_t attempt(struct pg_sink *s, int *again)
{
    rc_t rc;

    *again = 0;
    for (;;) {
        if ((rc = pump(s, 1, 1)) != RC_OK)
            return rc;
        if (s->unique_violation) {
            size_t found = 0;
            reset_attempt(s);
            if ((rc = run(s, "ROLLBACK", PGRES_COMMAND_OK, NULL)) != RC_OK)
                return rc;
            /* Rolled back: no row's id is in the ledger any more. */
            for (size_t i = 0; i < s->n; i++)
                s->dup[i] &= (uint8_t)~RS_IN_LEDGER;
            if ((rc = mark_duplicates(s, -1, &found)) != RC_OK)
                return rc;
            if (found == 0) {
                /* The unique violation named an id we cannot see: never loop on it. */
                snprintf(s->why, sizeof s->why,
                         "ledger: unique violation without a visible duplicate");
                s->phase = PH_BROKEN;
                return RC_DB;
            }
            *again = 1;
            return RC_OK;
        }
        if (s->refusal) {
            if ((rc = after_refusal(s, again)) != RC_OK || *again)
                return rc;
            continue;
        }
        if (s->isolating) {
            int stop = 0, whole;
            if ((rc = run(s, IMMEDIATE_SQL, PGRES_COMMAND_OK, NULL)) != RC_OK)
                return rc == RC_DB && row_data_error(s->sqlstate) ? unattributed(s, 0) : rc;
            if ((rc = isolate_rows(s, 0, s->n, s->known_bad, 0, &stop, &whole)) != RC_OK)
                return rc;
        } else if (next_segment(s)) {
            continue;
        }
        /* The earlier ledgers are read inside the transaction, after the
         * ledger COPY: a message committed there by an earlier version counts
         * as committed, and the batch is written again without it. */
        size_t found = 0;
        for (size_t k = 0; k < N_EARLIER; k++) {
            size_t more = 0;
            if (!(s->earlier & (1u << k)))
                continue;
            if ((rc = mark_duplicates(s, (int)k, &more)) != RC_OK) {
                if (rc != RC_DB || strcmp(s->sqlstate, "42P01") != 0)
                    return rc;
                log_at(s->lg, LOG_INFO, "the earlier ledger was dropped: no longer consulted",
                       LF_STR("table", EARLIER[k].table));
                s->earlier &= ~(1u << k);
                reset_attempt(s);
                *again = 1;
                return run(s, "ROLLBACK", PGRES_COMMAND_OK, NULL);
            }
            found += more;
        }
        if (found) {
            reset_attempt(s);
            for (size_t i = 0; i < s->n; i++)
                s->dup[i] &= (uint8_t)~RS_IN_LEDGER;
            *again = 1;
            return run(s, "ROLLBACK", PGRES_COMMAND_OK, NULL);
        }
        /* Every row is in (or refused): take the refused ones' ids out of
         * the ledger, then commit. */
        if (!s->no_delete && (rc = unledger(s)) != RC_OK) {
            if (rc != RC_DB || strcmp(s->sqlstate, "42501") != 0)
                return rc;
            /* A least-privilege user with INSERT and SELECT on the ledger only. */
            log_at(s->lg, LOG_INFO,
                   "no DELETE on the ledger: refused rows are left out by writing "
                   "the batch again");
            s->no_delete = 1;
        }
        if (s->no_delete) {
            for (size_t i = 0; i < s->n && !*again; i++)
                *again = (s->dup[i] & RS_IN_LEDGER) != 0;
            if (*again) {
                /* Their ids cannot come out of this transaction's ledger: it
                 * is rolled back and written again without them (all the
                 * refused rows of the batch were found, so once is enough). */
                reset_attempt(s);
                return run(s, "ROLLBACK", PGRES_COMMAND_OK, NULL);
            }
        }
        /* SET CONSTRAINTS and COMMIT go in one round trip; an error at the
         * first skips the second. */
        size_t written = 0;
        for (size_t i = 0; i < s->n; i++)
            written += !s->dup[i];
        if (!PQsendQuery(s->conn, COMMIT_SQL)) {
            fail(s, NULL, "commit");
            return RC_DB;
        }
        PGresult *res = NULL;
        int step;
        for (step = 0; step < 2; step++) { /* SET CONSTRAINTS, then COMMIT */
            rc_t w = next_result(s, &res);
            if (w) {
                fail(s, NULL, w == RC_TIMEOUT ? "timeout" : "commit");
                return w;
            }
            /* COMMIT of an aborted transaction "succeeds" with the tag ROLLBACK. */
            if (res && PQresultStatus(res) == PGRES_COMMAND_OK &&
                (step == 0 || strcmp(PQcmdStatus(res), "COMMIT") == 0)) {
                PQclear(res);
                continue;
            }
            fail(s, res,
                 res && PQresultStatus(res) != PGRES_COMMAND_OK
                     ? "commit"
                     : "commit: the transaction was rolled back");
            PQclear(res);
            /* Drain what is left, so that the connection takes a new command. */
            while (next_result(s, &res) == RC_OK && res)
                PQclear(res);
            if (step == 1 || !row_data_error(s->sqlstate))
                return RC_DB;
            /* A deferred constraint (trigger) refused a row, naming none,
             * when SET CONSTRAINTS fired it: the transaction is still open. */
            if (s->isolating)
                return unattributed(s, 0);
            if ((rc = back_to_batch(s)) != RC_OK)
                return rc;
            break;
        }
        if (step < 2)
            continue; /* isolating the rows behind login_etl_batch */
        /* The COMMIT's answer is all in; only now is retention sent (the
         * server flushes a query string's answers at its end only). */
        while (next_result(s, &res) == RC_OK && res)
            PQclear(res);
        reset_attempt(s);
        char prune[sizeof RET_SWEEP_SQL + sizeof RET_BEGIN_SQL + 300];
        if (!retention_step(s, written, prune, sizeof prune))
            return RC_OK;
        if (!PQsendQuery(s->conn, prune) || PQflush(s->conn) < 0) {
            disconnect(s);
            return RC_OK;
        }
        /* Committed.  The retention step's answer is read by the next batch,
         * before its BEGIN (pump): the server deletes while this process
         * answers and takes the next event.  Sent as one string, its
         * transaction ends on the server whether or not this process is
         * frozen meanwhile, and its timeouts bound it. */
        s->prune_pending = 1;
        return RC_OK;
    }
}

/* Ends the open transaction, if any, without committing it: a COPY in
 * progress is failed on purpose, the answers drained and ROLLBACK run, all
 * by the give-up time, so that the connection serves the next batch.  When
 * anything goes wrong on the way the connection is closed instead (the
 * server rolls back when it notices).  Cannot fail. */
static void abandon(struct pg_sink *s)
{
    PGresult *res = NULL;

    if (!s->conn || (s->phase == PH_IDLE && s->op == 0)) {
        reset_attempt(s);
        return;
    }
    if (s->phase == PH_BROKEN)
        goto drop;
    if (s->phase == PH_STARTING && await_copy(s, 1) != RC_OK)
        goto drop;
    if (s->phase == PH_COPYING && PQputCopyEnd(s->conn, "batch abandoned") != 1)
        goto drop;
    for (;;) {
        if (next_result(s, &res) != RC_OK)
            goto drop;
        if (!res)
            break;
        PQclear(res);
    }
    if (run(s, "ROLLBACK", PGRES_COMMAND_OK, NULL) != RC_OK)
        goto drop;
    reset_attempt(s);
    return;
drop:
    disconnect(s);
}

/* Writes the batch's pending rows in one transaction, retrying a lost
 * connection while time is left.  Returns RC_OK when they are committed (or
 * none was left), else the failure (s->unattributed: a row's data, row
 * unknown). */
static rc_t write_pending(struct pg_sink *s)
{
    rc_t rc = RC_DB;
    struct backoff backoff; /* 100 ms, doubling */
    unsigned tries = 0;

    s->unattributed = 0;

    backoff_init(&backoff, 100, 60000);
    for (;;) {
        int again = 0;
        if (pending_in(s, 0, s->n) == 0) {
            /* Every row was committed before (a replay), refused, or has none:
             * nothing to write; the keys already sent are rolled back. */
            abandon(s);
            return RC_OK;
        }
        if (s->phase == PH_BROKEN)
            disconnect(s);
        rc = attempt(s, &again);
        if (rc == RC_OK && !again)
            return RC_OK;
        if (rc == RC_OK)
            continue; /* rows marked (each time one at least): write the rest */
        log_at(s->lg, LOG_WARN, "database attempt failed", LF_STR("reason", s->why),
               LF_NUM("attempt", tries + 1), LF_NUM("retryable", s->retryable));
        if (rc == RC_NOMEM || rc == RC_TIMEOUT || !s->retryable || ++tries >= MAX_ATTEMPTS)
            break;
        /* The connection went away (a restart, a failover): wait a little
         * and try again while the deadline allows. */
        int64_t wait = backoff_next(&backoff);
        if (clock_mono_ms() + wait >= s->give_up_at) {
            rc = RC_TIMEOUT;
            break;
        }
        clock_sleep_ms(wait);
    }
    return rc;
}

int pg_sink_auth_refused(const struct pg_sink *s)
{
    return s->auth_refused;
}

/* Writes the pending rows of [a, b) alone, in a transaction of their own.
 * Returns what write_pending returns; on RC_OK those rows are RS_DONE. */
static rc_t write_range(struct pg_sink *s, size_t a, size_t b)
{
    for (size_t i = 0; i < s->n; i++)
        if ((i < a || i >= b) && s->dup[i] == RS_PENDING)
            s->dup[i] = RS_OUT;
    rc_t rc = write_pending(s);
    for (size_t i = 0; i < s->n; i++) {
        if (s->dup[i] == RS_OUT)
            s->dup[i] = RS_PENDING;
        else if (rc == RC_OK && s->dup[i] == RS_PENDING)
            s->dup[i] = RS_DONE;
    }
    return rc;
}

static size_t count_refused(const struct pg_sink *s, size_t a, size_t b)
{
    size_t count = 0;
    for (size_t i = a; i < b; i++)
        count += (s->dup[i] & RS_MASK) == RS_REFUSED;
    return count;
}

/* isolate_range's first try of [a, b) by transactions: a transaction of its
 * own (write_range).  Returns RC_OK or the failure; *settled is 0 when [a,
 * b) is still to be cut (a refusal without a row), else 1, with *whole
 * saying whether it went in without a refusal (*stop set on a failure that
 * is not a row's). */
static rc_t try_in_transaction(struct pg_sink *s, size_t a, size_t b, int *stop, int *whole,
                               int *settled)
{
    size_t refused = count_refused(s, a, b);
    rc_t rc = write_range(s, a, b);

    *settled = 1;
    if (rc == RC_OK) {
        /* Whole unless the server named refused rows in it on the way. */
        *whole = count_refused(s, a, b) == refused;
    } else if (s->unattributed) {
        *settled = 0; /* a row's data, the row unknown: [a, b) is cut */
        rc = RC_OK;
    } else {
        *stop = 1;
    }
    return rc;
}

/* Finds the rows of [a, b) the server refuses, with pending rows written
 * either in the open transaction behind its savepoint (`open_tx`: the
 * ledger holds their ids; try_in_savepoint) or each part in a transaction
 * of its own (try_in_transaction).  [a, b) is tried whole first unless
 * `known_bad`; when that fails without naming a row, it is cut into
 * ISOLATE_PARTS parts, each tried on its own, in order (FIFO order), down to
 * single rows, which are the refused ones.  When every part but the last
 * went in whole, the last is known to fail and is cut at once.  For one
 * refused row of n this writes about 1.15 n rows in about ISOLATE_PARTS *
 * log(n) / log(ISOLATE_PARTS) tries (halves would write about 1.5 n), each
 * bounded by the give-up time.  `again`: as try_in_savepoint says.  Sets
 * *stop when no more may be written (a FIFO batch's refused row, or a
 * failure).  Returns RC_OK or the failure that stopped it; *whole says
 * whether [a, b) went in without a refusal. */
static rc_t isolate_range(struct pg_sink *s, size_t a, size_t b, int known_bad, int again,
                          int open_tx, int *stop, int *whole)
{
    size_t pending = pending_in(s, a, b);
    int settled = 0;
    rc_t rc;

    *whole = 0;
    if (*stop)
        return RC_OK;
    if (pending == 0) {
        *whole = 1;
        return RC_OK;
    }
    if (!known_bad) {
        rc = open_tx ? try_in_savepoint(s, a, b, again, stop, whole, &settled)
                     : try_in_transaction(s, a, b, stop, whole, &settled);
        if (settled)
            return rc;
    }
    if (pending == 1) {
        refuse_row(s, first_pending(s, a, b), open_tx);
        *stop = s->fifo;
        return RC_OK;
    }
    size_t parts = b - a < ISOLATE_PARTS ? b - a : ISOLATE_PARTS;
    int all_whole = 1;
    for (size_t k = 0; k < parts; k++) {
        size_t from = a + (b - a) * k / parts, to = a + (b - a) * (k + 1) / parts;
        int part_whole = 0;
        /* [a, b) failed and the parts before did not: the refused row is in the last. */
        if ((rc = isolate_range(s, from, to, k == parts - 1 && all_whole, 0, open_tx, stop,
                                &part_whole)) != RC_OK)
            return rc;
        all_whole = all_whole && part_whole;
    }
    return RC_OK;
}

/* Finds the rows refused without a name, each part written in a
 * transaction of its own (isolate_range, try_in_transaction): for a refusal
 * the savepoints could not contain.  Arguments and result as
 * isolate_range's. */
static rc_t isolate(struct pg_sink *s, size_t a, size_t b, int known_bad, int *stop, int *whole)
{
    return isolate_range(s, a, b, known_bad, 0, 0, stop, whole);
}

rc_t pg_batch_commit(struct pg_sink *s, uint8_t *outcome, char err[ERR_LEN])
{
    int isolated = 0, stop = 0;
    size_t settled = 0;

    err[0] = '\0';
    /* A key whose row never came has none. */
    s->keys_done = 1;
    while (s->decided < s->n)
        pg_batch_no_row(s);
    rc_t rc = write_pending(s);
    if (rc == RC_DB && s->unattributed) {
        /* A refusal without a row that the savepoints could not contain
         * (in the ledger COPY, or still at COMMIT): one transaction per part. */
        log_at(s->lg, LOG_WARN, "isolating by transactions", LF_STR("reason", s->why));
        isolated = 1;
        int ignored;
        rc = isolate(s, 0, s->n, 1, &stop, &ignored);
    }
    for (size_t i = 0; i < s->n; i++) {
        uint8_t st = s->dup[i] & RS_MASK;
        settled += st == RS_DONE || st == RS_REFUSED || (st == RS_PENDING && !rc && !isolated);
    }
    if (rc && settled == 0) {
        snprintf(err, ERR_LEN, "%s", s->why[0] ? s->why : rc_strerror(rc));
        disconnect(s);
        return rc;
    }
    if (rc) {
        /* Refused rows were named, or isolation committed a part of the
         * batch, before the failure: those stand; the rest is answered as
         * not written, and SQS retries it. */
        log_at(s->lg, LOG_WARN, "batch not written in full", LF_STR("reason", s->why));
        disconnect(s);
    }
    for (size_t i = 0; i < s->n; i++) {
        uint8_t st = s->dup[i] & RS_MASK;
        outcome[i] = st == RS_DUP                                              ? PG_DUPLICATE
                     : st == RS_REFUSED                                        ? PG_REFUSED
                     : st == RS_DONE || (st == RS_PENDING && !rc && !isolated) ? PG_WRITTEN
                                                                               : PG_NOT_WRITTEN;
    }
    if (!rc)
        s->stats.write_us = s->first_send_us ? clock_mono_us() - s->first_send_us : 0;
    return RC_OK;
}

void pg_batch_abort(struct pg_sink *s)
{
    abandon(s);
    s->n = 0;
    s->decided = 0;
}

void pg_batch_stats(const struct pg_sink *s, struct pg_stats *out)
{
    *out = s->stats;
}
