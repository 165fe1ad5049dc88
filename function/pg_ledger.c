/* pg_ledger.c - the ledger's lookups: which of the batch's messages were
 * committed before (in the ledger, and in the ledgers of its earlier
 * layouts while their entries can still matter), and taking keys back out
 * of the open transaction's ledger before COMMIT.
 *
 * The batch's values travel only as binary array parameters (send_keys),
 * never as SQL text. */
#define _DEFAULT_SOURCE
#include "pg_int.h"

#include <stdio.h>
#include <string.h>

#include "clock.h"

#define TEXT_OID 25
#define TEXT_ARRAY_OID 1009
#define INT2_OID 21
#define INT2_ARRAY_OID 1005
#define TIMESTAMPTZ_OID 1184
#define TIMESTAMPTZ_ARRAY_OID 1185
#define UUID_OID 2950
#define UUID_ARRAY_OID 2951

/* The batch's (slot, sent_at, message_id) keys that the ledger holds
 * already: $1 the batch's distinct slots, then one array per key column.
 * "slot = ANY($1)" lets the planner prune the other partitions (the
 * parameters of an unnamed statement are planned as constants), so the
 * lookup neither reads nor locks them: a slot being truncated is not
 * waited for (see RET_TRUNCATE_SQL, pg_retention.c). */
#define FIND_DUPLICATES_SQL                                                                        \
    "SELECT l.message_id FROM " LEDGER " l "                                                       \
    "JOIN unnest($2::int2[], $3::timestamptz[], $4::uuid[]) AS b(slot, sent_at, message_id) "      \
    "ON l.slot = b.slot AND l.sent_at = b.sent_at AND l.message_id = b.message_id "                \
    "WHERE l.slot = ANY($1::int2[])"
/* Takes the keys of refused rows, and of keys that got no row, back out of
 * the ledger before COMMIT, through the ledger's key (parameters as
 * FIND_DUPLICATES_SQL).  Only entries this transaction inserted (xmin) can
 * match, so nothing committed earlier is ever removed.  Each key is looked
 * up on its own in its slot's index (LATERAL ... LIMIT 1 keeps the planner
 * from joining) and the entry found is deleted by its address, partition and
 * row (each partition has its own row address space), which no other
 * transaction can change under it.  A plain join of the keys with the
 * ledger is planned as a hash join over a scan of the whole ledger as soon
 * as the planner knows the keys' count, which costs more, and more as the
 * ledger grows (measured: tests/bench/README.md).  slot = ANY($1) keeps
 * every other slot's partition out of the plan, and out of its locks. */
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
 * from the first time this layout found it holding entries, and after that
 * while it holds an entry committed within LEDGER_RETENTION (an earlier
 * release run again writes there).  The first moment is kept in the ledger
 * itself, as the committed_at of a marker entry in slot
 * SLOT_NONE whose message_id is a reserved version-0 UUID that no message
 * can have (pg_ledger_key never yields version 0), which retention never
 * deletes.  A dropped earlier table (42P01) stops being consulted. */
#define EARLIER_V1 "login_etl_ledger"       /* message_id alone */
#define EARLIER_RECHECK_MS (15 * 60 * 1000) /* a warm process looks again this often */
#define EARLIER_V2 "login_etl_ledger_v2"    /* (sent_at, message_id text) */
#define EARLIER_MARK_SQL(table, holding, marker)                                                   \
    "INSERT INTO " LEDGER " (slot, sent_at, message_id) SELECT " SLOT_NONE_SQL                     \
    ", '-infinity', '" marker "' "                                                                 \
    "WHERE EXISTS (SELECT 1 FROM " table holding ") ON CONFLICT DO NOTHING"
/* A layout is consulted while its marker is younger than LEDGER_RETENTION,
 * and after that while the table holds an entry committed within
 * LEDGER_RETENTION: an earlier release run again (a rollback, at any age of
 * the marker) writes there, and what it committed can still be redelivered.
 * The marker spares that look at the table for its first days (the first
 * layout has no index to find recent entries by). */
#define EARLIER_RECENT "now() - interval '" LEDGER_RETENTION "'"
#define EARLIER_ACTIVE_SQL(marker, written)                                                        \
    "SELECT CASE WHEN (SELECT committed_at > " EARLIER_RECENT " FROM " LEDGER                      \
    " WHERE slot = " SLOT_NONE_SQL " AND sent_at = '-infinity' AND message_id = '" marker "') "    \
    "THEN true ELSE EXISTS (SELECT 1 FROM " written ") END"
/* Entries an earlier release committed within LEDGER_RETENTION: in the
 * second layout found through its key (sent_at first; a message SQS can
 * still deliver was sent within LEDGER_RETENTION, one without SentTimestamp
 * is kept at -infinity), its own marker ('') left out; in the first, by a
 * scan that stops at the first one. */
#define EARLIER_V2_RECENT                                                                          \
    EARLIER_V2 " WHERE (sent_at > " EARLIER_RECENT " OR sent_at = '-infinity') "                   \
               "AND committed_at > " EARLIER_RECENT " AND message_id <> ''"
#define EARLIER_V1_RECENT EARLIER_V1 " WHERE committed_at > " EARLIER_RECENT

/* Which keys a lookup sends (send_keys), and how its answer names a row. */
enum keys {
    KEYS_LEDGER, /* $1 distinct slots, $2 slots, $3 sent_at, $4 uuid keys; binary answer: the
                  * 16-byte key */
    KEYS_V2,     /* $1 sent_at, $2 message ids as text; text answer: the message id */
    KEYS_V1      /* $1 message ids as text; text answer: the message id */
};

/* Which rows' keys a lookup sends. */
enum key_set {
    SET_PENDING,  /* the rows still to be written */
    SET_IN_LEDGER /* the keys in the open transaction's ledger whose row is not written */
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
     EARLIER_ACTIVE_SQL(MARKER_V2, EARLIER_V2_RECENT)},
    {EARLIER_V1, KEYS_V1, "SELECT message_id FROM " EARLIER_V1 " WHERE message_id = ANY($1)",
     EARLIER_MARK_SQL(EARLIER_V1, "", MARKER_V1), EARLIER_ACTIVE_SQL(MARKER_V1, EARLIER_V1_RECENT)},
};
#define N_EARLIER (sizeof EARLIER / sizeof EARLIER[0])

/* The bit set of ledger slots must hold SLOT_NONE (send_keys). */
_Static_assert(SLOT_NONE < 32, "slots fit a uint32_t bit set");

/* Is row i's key among `set`?  Cannot fail. */
static int in_set(const struct pg_sink *s, size_t i, enum key_set set)
{
    return set == SET_PENDING ? s->state[i] == RS_PENDING : s->in_ledger[i] == KEY_IN_LEDGER;
}

/* The keys a statement sends: those of `set` among rows [from, to). */
struct chunk {
    enum key_set set;
    size_t from, to;
};

/* Rows whose keys go in one statement (a lookup, a DELETE): a batch of
 * 100,000 tiny records would otherwise need its keys in memory three times
 * over (the parameters built here, libpq's copy of them, and the answer). */
#define CHUNK_ROWS 8192

/* Builds in s->scratch the parameters of a lookup of the keys of `set`, one
 * binary array each (see enum keys), and their offsets: parameter k is
 * [at[k], at[k + 1]).  Returns the number of parameters, or 0 with
 * s->scratch's error set. */
static int key_params(struct pg_sink *s, const struct chunk *c, enum keys keys, size_t at[5])
{
    struct buf *b = &s->scratch;
    size_t count = 0;
    uint32_t slots = 0; /* bit k: slot k is among the rows */
    int nslots = 0, np = 0;

    for (size_t i = c->from; i < c->to; i++) {
        if (in_set(s, i, c->set)) {
            count++;
            slots |= UINT32_C(1) << s->slot[i];
        }
    }
    buf_reset(b);
    at[0] = 0;
    if (keys == KEYS_LEDGER) {
        for (int k = 0; k <= SLOT_NONE; k++)
            nslots += (slots >> k) & 1;
        pg_put_array_header(b, INT2_OID, (size_t)nslots);
        for (int k = 0; k <= SLOT_NONE; k++) {
            if ((slots >> k) & 1) {
                pg_put_u32(b, 2);
                pg_put_u16(b, (uint16_t)k);
            }
        }
        at[++np] = b->len;
        pg_put_array_header(b, INT2_OID, count);
        for (size_t i = c->from; i < c->to; i++) {
            if (in_set(s, i, c->set)) {
                pg_put_u32(b, 2);
                pg_put_u16(b, s->slot[i]);
            }
        }
        at[++np] = b->len;
    }
    if (keys != KEYS_V1) {
        pg_put_array_header(b, TIMESTAMPTZ_OID, count);
        for (size_t i = c->from; i < c->to; i++) {
            if (in_set(s, i, c->set)) {
                pg_put_u32(b, 8);
                pg_put_u64(b, (uint64_t)s->sent_at[i]);
            }
        }
        at[++np] = b->len;
    }
    pg_put_array_header(b, keys == KEYS_LEDGER ? UUID_OID : TEXT_OID, count);
    for (size_t i = c->from; i < c->to; i++) {
        if (!in_set(s, i, c->set))
            continue;
        if (keys == KEYS_LEDGER) {
            pg_put_u32(b, 16);
            buf_append(b, s->key[i], 16);
        } else {
            pg_put_text(b, s->ids[i], s->id_len[i]);
        }
    }
    at[++np] = b->len;
    return b->err ? 0 : np;
}

/* Sends `sql` with the keys of chunk c as binary array parameters (key_params):
 * for KEYS_LEDGER $1 the distinct slots among them, $2 their slots
 * (int2[]), $3 their sent_at (timestamptz[]), $4 their ledger keys (uuid[]),
 * answered in binary; for KEYS_V2 $1 their sent_at and $2 their message ids
 * (text[]); for KEYS_V1 the ids alone.  Returns RC_OK (the query is sent),
 * RC_NOMEM, or RC_DB with the attempt marked broken (`what`). */
static rc_t send_keys(struct pg_sink *s, const char *sql, const struct chunk *c, enum keys keys,
                      const char *what)
{
    static const Oid ledger_types[4] = {INT2_ARRAY_OID, INT2_ARRAY_OID, TIMESTAMPTZ_ARRAY_OID,
                                        UUID_ARRAY_OID};
    static const Oid v2_types[2] = {TIMESTAMPTZ_ARRAY_OID, TEXT_ARRAY_OID};
    static const Oid v1_types[1] = {TEXT_ARRAY_OID};
    const Oid *types = keys == KEYS_LEDGER ? ledger_types : keys == KEYS_V2 ? v2_types : v1_types;
    const char *values[4];
    int lengths[4], formats[4];
    size_t at[5];
    int np = key_params(s, c, keys, at);

    if (np == 0)
        return s->scratch.err;
    for (int k = 0; k < np; k++) {
        values[k] = s->scratch.data + at[k];
        lengths[k] = (int)(at[k + 1] - at[k]);
        formats[k] = 1;
    }
    if (!PQsendQueryParams(s->conn, sql, np, types, values, lengths, formats,
                           keys == KEYS_LEDGER)) {
        pg_fail(s, NULL, what);
        return RC_DB;
    }
    return RC_OK;
}

/* What a lookup's answer has found so far (take_found). */
struct found {
    size_t count; /* rows newly marked RS_DUP */
    rc_t rc;      /* RC_DB once a result was not rows */
};

/* pg_take_fn of a lookup: each answer row names a row of the batch (by the
 * key or the message id s->lookup maps), which is marked RS_DUP. */
static void take_found(struct pg_sink *s, PGresult *res, void *ctx)
{
    struct found *f = ctx;

    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        pg_fail(s, res, "duplicates");
        f->rc = RC_DB;
    } else {
        for (int r = 0; r < PQntuples(res); r++) {
            size_t i = idset_get(&s->lookup, PQgetvalue(res, r, 0), (size_t)PQgetlength(res, r, 0));
            if (i != (size_t)-1 && s->state[i] == RS_PENDING) {
                s->state[i] = RS_DUP;
                f->count++;
            }
        }
    }
    PQclear(res);
}

/* How many keys of chunk c's set its rows hold; cannot fail. */
static size_t keys_in(const struct pg_sink *s, const struct chunk *c)
{
    size_t count = 0;
    for (size_t i = c->from; i < c->to; i++)
        count += in_set(s, i, c->set);
    return count;
}

/* The chunk of rows [from, from + CHUNK_ROWS) of the batch, keys of `set`. */
static struct chunk chunk_at(const struct pg_sink *s, enum key_set set, size_t from)
{
    struct chunk c = {set, from, s->n - from > CHUNK_ROWS ? from + CHUNK_ROWS : s->n};
    return c;
}

/* lookup for the pending rows of chunk c; *found grows by the rows marked.
 * Returns as lookup. */
static rc_t lookup_chunk(struct pg_sink *s, const char *sql, enum keys keys, const struct chunk *c,
                         size_t *found)
{
    struct found f = {0, RC_OK};
    rc_t rc;

    if ((rc = idset_reset(&s->lookup, c->to - c->from)) != RC_OK)
        return rc;
    for (size_t i = c->from; i < c->to; i++) {
        if (s->state[i] != RS_PENDING)
            continue;
        if (keys == KEYS_LEDGER)
            idset_put(&s->lookup, (const char *)s->key[i], 16, i);
        else
            idset_put(&s->lookup, s->ids[i], s->id_len[i], i);
    }
    if ((rc = send_keys(s, sql, c, keys, "duplicates")) != RC_OK)
        return rc;
    rc = pg_drain(s, IO_BLOCK, take_found, &f, "duplicates", NULL);
    *found += f.count;
    return rc ? rc : f.rc;
}

/* Finds which of the batch's pending rows the query `sql` says are committed
 * already and marks them RS_DUP: a ledger lookup (KEYS_LEDGER, answered by
 * key) or an earlier layout's (answered by message id), CHUNK_ROWS rows a
 * statement.  Returns RC_OK (*found = how many new ones), RC_TIMEOUT, RC_DB
 * or RC_NOMEM. */
static rc_t lookup(struct pg_sink *s, const char *sql, enum keys keys, size_t *found)
{
    rc_t rc = RC_OK;

    *found = 0;
    for (size_t from = 0; from < s->n && rc == RC_OK; from += CHUNK_ROWS) {
        struct chunk c = chunk_at(s, SET_PENDING, from);
        if (keys_in(s, &c))
            rc = lookup_chunk(s, sql, keys, &c, found);
    }
    return rc;
}

/* Marks the batch's pending rows whose key the ledger holds (committed
 * before).  The transaction that met them must have been rolled back.
 * Returns as lookup. */
rc_t pg_mark_duplicates(struct pg_sink *s, size_t *found)
{
    return lookup(s, FIND_DUPLICATES_SQL, KEYS_LEDGER, found);
}

/* Reads, inside the open transaction after its ledger COPY, the earlier
 * layouts still consulted (s->earlier) for the batch's pending ids: a
 * message committed there by an earlier release counts as committed
 * (RS_DUP).  *stale is set when the transaction cannot be committed as it
 * is: ids were found (its COPYs wrote them), or a layout's table was dropped
 * (42P01: the transaction is aborted; the layout is consulted no more).
 * Returns RC_OK, or the failure of a lookup. */
rc_t pg_consult_earlier(struct pg_sink *s, int *stale)
{
    size_t found = 0;
    rc_t rc = RC_OK;

    *stale = 0;
    for (size_t k = 0; k < N_EARLIER && rc == RC_OK && !*stale; k++) {
        size_t more = 0;
        if (!(s->earlier & (1u << k)))
            continue;
        rc = lookup(s, EARLIER[k].find_sql, EARLIER[k].keys, &more);
        if (rc == RC_DB && strcmp(s->sqlstate, "42P01") == 0) {
            log_at(s->lg, LOG_INFO, "the earlier ledger was dropped: no longer consulted",
                   LF_STR("table", EARLIER[k].table));
            s->earlier &= ~(1u << k);
            *stale = 1;
            rc = RC_OK;
        }
        found += more;
    }
    *stale = *stale || found > 0;
    return rc;
}

/* Finds which earlier ledger layouts must be consulted (s->earlier), on each
 * new connection and every EARLIER_RECHECK_MS (pg_open, pg_copy.c's
 * start_op), so that a warm process that found a layout no longer mattered
 * sees an earlier release run again (a rollback and then this release
 * again, while the process lived) write there.  A layout whose table exists
 * gets its
 * marker (the first time it is seen holding entries), and is consulted
 * until LEDGER_RETENTION has passed since then, or longer while it holds
 * entries committed since (EARLIER_ACTIVE_SQL).  Returns RC_OK, RC_TIMEOUT
 * or RC_DB. */
rc_t pg_find_earlier(struct pg_sink *s)
{
    PGresult *res = NULL;
    unsigned earlier = 0;
    rc_t rc;

    for (size_t k = 0; k < N_EARLIER; k++) {
        char sql[120];
        snprintf(sql, sizeof sql, "SELECT to_regclass('%s') IS NOT NULL", EARLIER[k].table);
        if ((rc = pg_run(s, sql, PGRES_TUPLES_OK, &res)) != RC_OK)
            return rc;
        int exists = PQntuples(res) == 1 && strcmp(PQgetvalue(res, 0, 0), "t") == 0;
        PQclear(res);
        if (!exists)
            continue;
        if ((rc = pg_run(s, EARLIER[k].mark_sql, PGRES_COMMAND_OK, NULL)) != RC_OK ||
            (rc = pg_run(s, EARLIER[k].active_sql, PGRES_TUPLES_OK, &res)) != RC_OK)
            return rc;
        int active = PQntuples(res) == 1 && strcmp(PQgetvalue(res, 0, 0), "t") == 0;
        PQclear(res);
        earlier |= active ? 1u << k : 0;
        if (s->earlier_due == 0 || ((s->earlier ^ earlier) & (1u << k)))
            log_at(s->lg, LOG_INFO,
                   active ? "the earlier ledger is consulted until its entries expire"
                          : "the earlier ledger no longer matters and may be dropped",
                   LF_STR("table", EARLIER[k].table));
    }
    s->earlier = earlier;
    s->earlier_due = clock_mono_ms() + EARLIER_RECHECK_MS;
    return RC_OK;
}

/* pg_take_fn of pg_unledger. */
static void take_unledger(struct pg_sink *s, PGresult *res, void *ctx)
{
    rc_t *rc = ctx;

    if (PQresultStatus(res) != PGRES_COMMAND_OK && !*rc) {
        pg_fail(s, res, "unledger");
        *rc = RC_DB;
    }
    PQclear(res);
}

/* Takes the keys in the open transaction's ledger whose row is not written
 * (s->in_ledger: refused, cut, or without a row) back out of it
 * (UNLEDGER_SQL), CHUNK_ROWS rows a statement.  Returns RC_OK, RC_TIMEOUT, RC_DB (SQLSTATE 42501 in
 * s->sqlstate: the user may not DELETE from the ledger) or RC_NOMEM. */
rc_t pg_unledger(struct pg_sink *s)
{
    rc_t rc = RC_OK, answer = RC_OK;

    for (size_t from = 0; from < s->n && !rc && !answer; from += CHUNK_ROWS) {
        struct chunk c = chunk_at(s, SET_IN_LEDGER, from);
        if (keys_in(s, &c) == 0)
            continue;
        if ((rc = send_keys(s, UNLEDGER_SQL, &c, KEYS_LEDGER, "unledger")) == RC_OK)
            rc = pg_drain(s, IO_BLOCK, take_unledger, &answer, "unledger", NULL);
    }
    return rc ? rc : answer;
}
