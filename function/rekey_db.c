/* rekey_db.c - the rekey's connection and catalog (rekey_int.h): connect,
 * run a statement and say by SQLSTATE what failed, find what holds masked
 * values, count them by key id.
 *
 * No SQL text is built from a value: the statements name relations and
 * columns as the server itself quotes them (regclass output, quote_ident),
 * and every value travels as a parameter. */
#include "rekey_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "num.h"

/* Tables whose masked_* columns hold values of the masking (docs/behaviour.md,
 * "Masking"): the rows, and the quarantine of rejected records when it
 * exists. */
static const char *const rekey_table_names[REKEY_TABLES_MAX] = {"user_logins",
                                                                "login_etl_rejected"};

/* The table's quoted name and kind ('r' heap, 'p' partitioned), no row when
 * it does not exist. */
#define TABLE_SQL                                                                                  \
    "SELECT c.oid::regclass::text, c.relkind FROM pg_class c WHERE c.oid = to_regclass($1)"

/* The masked columns: string-typed, named masked_*, in table order, with
 * their varchar length (0: none). */
#define COLUMNS_SQL                                                                                \
    "SELECT quote_ident(a.attname), CASE WHEN t.typname IN ('varchar', 'bpchar') "                 \
    "AND a.atttypmod > 4 THEN a.atttypmod - 4 ELSE 0 END "                                         \
    "FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid "                                    \
    "WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped "                  \
    "AND a.attname LIKE 'masked\\_%' AND t.typcategory = 'S' ORDER BY a.attnum"

/* The partitions that hold a partitioned table's rows, at any depth, with
 * their kind ('r' heap, 'f' foreign). */
#define LEAVES_SQL                                                                                 \
    "SELECT c.oid::regclass::text, c.relkind FROM pg_partition_tree(to_regclass($1)) p "           \
    "JOIN pg_class c ON c.oid = p.relid WHERE p.isleaf ORDER BY c.oid"

/* A heap relation's size in blocks. */
#define BLOCKS_SQL "SELECT pg_relation_size($1::regclass) / current_setting('block_size')::bigint"

/* The shape of a masked value v.val, as keyset_classify checks it: a key id,
 * ':', at least 43 characters of base64url.  The lengths are checked apart
 * from the regular expression, whose counted repetitions cost the server
 * several times more. */
#define SHAPE_SQL                                                                                  \
    "v.val ~ '^[A-Za-z0-9]+:[A-Za-z0-9_-]+$' AND strpos(v.val, ':') <= 9 "                         \
    "AND length(v.val) - strpos(v.val, ':') >= 43"

/* See rekey_int.h. */
rc_t rekey_db_connect(struct rekey *r)
{
    rekey_db_close(r);
    PQclear(r->last_error);
    r->last_error = NULL;
    r->conn = cli_db_connect(r->db, r->why);
    return r->conn ? RC_OK : RC_DB;
}

/* See rekey_int.h; cannot fail. */
void rekey_db_close(struct rekey *r)
{
    if (r->conn)
        PQfinish(r->conn);
    r->conn = NULL;
}

/* Fills r->why for a failed statement: what it was, the SQLSTATE, and a
 * hint for the states an operator can act on; never the server's text.
 * Cannot fail. */
static void rekey_db_describe(struct rekey *r, const char *what, const PGresult *res)
{
    const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    const char *hint = "";

    if (!state)
        state = "";
    if (strcmp(state, "42501") == 0)
        hint = " (permission denied: rekey needs SELECT and UPDATE on the table and on each of "
               "its partitions)";
    else if (strcmp(state, "55P03") == 0)
        hint = " (lock timeout)";
    else if (strcmp(state, "57014") == 0)
        hint = " (statement timeout)";
    else if (strncmp(state, "08", 2) == 0 || !r->conn || PQstatus(r->conn) != CONNECTION_OK)
        hint = " (connection lost)";
    snprintf(r->why, ERR_LEN, "%s: SQLSTATE %s%s", what, *state ? state : "none", hint);
}

/* See rekey_int.h. */
rc_t rekey_db_exec(struct rekey *r, const char *what, const char *sql, int n,
                   const char *const *params, ExecStatusType want, PGresult **res)
{
    PGresult *got = NULL;
    rc_t rc = RC_DB;

    if (res)
        *res = NULL;
    if (!r->conn && rekey_db_connect(r) != RC_OK)
        goto out;
    got = n ? PQexecParams(r->conn, sql, n, NULL, params, NULL, NULL, 0) : PQexec(r->conn, sql);
    if (PQresultStatus(got) != want) {
        rekey_db_describe(r, what, got);
        /* The SQLSTATE stays readable for the retry decision. */
        PQclear(r->last_error);
        r->last_error = got;
        got = NULL;
        if (PQstatus(r->conn) != CONNECTION_OK)
            rekey_db_close(r);
        goto out;
    }
    rc = RC_OK;
    if (res) {
        *res = got;
        got = NULL;
    }
out:
    PQclear(got);
    return rc;
}

/* See rekey_int.h; cannot fail. */
const char *rekey_db_sqlstate(const struct rekey *r)
{
    const char *state = r->last_error ? PQresultErrorField(r->last_error, PG_DIAG_SQLSTATE) : NULL;
    return state ? state : "";
}

/* See rekey_int.h.  Without a connection the failure was the connection's:
 * libpq's first line says whether the server refused who we are. */
int rekey_db_retryable(const struct rekey *r)
{
    static const char *const passing[] = {"55P03", "40001", "40P01", "57014",
                                          "53300", "57P01", "57P02", "57P03"};
    const char *state = rekey_db_sqlstate(r);

    if (!r->conn)
        return !strstr(r->why, ":  28") && !strstr(r->why, ":  3D000") && !strstr(r->why, "memory");
    if (strncmp(state, "08", 2) == 0)
        return 1;
    for (size_t i = 0; i < sizeof passing / sizeof passing[0]; i++)
        if (strcmp(state, passing[i]) == 0)
            return 1;
    return 0;
}

/* Copies a catalog string into a name buffer.  Returns RC_OK, or RC_DB when
 * it does not fit (a name the server quotes longer than REKEY_NAME_MAX). */
static rc_t rekey_db_name(struct rekey *r, char out[REKEY_NAME_MAX], const char *s)
{
    if (strlen(s) >= REKEY_NAME_MAX) {
        snprintf(r->why, ERR_LEN, "a relation or column name is longer than %d bytes",
                 REKEY_NAME_MAX - 1);
        return RC_DB;
    }
    memcpy(out, s, strlen(s) + 1);
    return RC_OK;
}

/* Reads t's masked columns. */
static rc_t rekey_db_columns(struct rekey *r, struct rekey_table *t)
{
    PGresult *res = NULL;
    int64_t limit = 0;
    rc_t rc = rekey_db_exec(r, "read the columns", COLUMNS_SQL, 1, &t->name, PGRES_TUPLES_OK, &res);

    if (rc)
        goto out;
    t->ncols = 0;
    for (int i = 0; i < PQntuples(res); i++) {
        const char *lim = PQgetvalue(res, i, 1);
        rc = RC_DB;
        if (t->ncols == REKEY_COLUMNS_MAX) {
            snprintf(r->why, ERR_LEN, "%s has more than %d masked_* columns", t->name,
                     REKEY_COLUMNS_MAX);
            goto out;
        }
        if (num_parse_i64(lim, strlen(lim), 0, INT32_MAX, &limit) != RC_OK) {
            snprintf(r->why, ERR_LEN, "read the columns: a malformed length");
            goto out;
        }
        if ((rc = rekey_db_name(r, t->column[t->ncols], PQgetvalue(res, i, 0))) != RC_OK)
            goto out;
        t->limit[t->ncols++] = (long)limit;
    }
    rc = RC_OK;
out:
    PQclear(res);
    return rc;
}

/* Reads the heap relations of t: itself (kind 'r'), or the leaf partitions
 * of a partitioned table (kind 'p'); foreign ones, or a table of another
 * kind, are counted apart.  Returns
 * RC_OK, or RC_DB / RC_NOMEM with r->why filled. */
static rc_t rekey_db_leaves(struct rekey *r, struct rekey_table *t, char kind)
{
    PGresult *res = NULL;
    int n = kind == 'r' ? 1 : 0; /* a view or a foreign table holds no heap rows here */
    rc_t rc = RC_OK;

    t->skipped_leaves = kind == 'r' || kind == 'p' ? 0 : 1;
    if (kind == 'p') {
        if ((rc = rekey_db_exec(r, "read the partitions", LEAVES_SQL, 1, &t->name, PGRES_TUPLES_OK,
                                &res)) != RC_OK)
            goto out;
        n = PQntuples(res);
    }
    if (n > 0 && !(t->leaf = calloc((size_t)n, sizeof *t->leaf))) {
        snprintf(r->why, ERR_LEN, "out of memory");
        rc = RC_NOMEM;
        goto out;
    }
    for (int i = 0; i < n; i++) {
        if (res && strcmp(PQgetvalue(res, i, 1), "r") != 0) {
            t->skipped_leaves++;
            continue;
        }
        if ((rc = rekey_db_name(r, t->leaf[t->nleaves], res ? PQgetvalue(res, i, 0) : t->quoted)) !=
            RC_OK)
            goto out;
        t->nleaves++;
    }
out:
    PQclear(res);
    return rc;
}

/* See rekey_int.h: any user may read the snapshot. */
rc_t rekey_db_next_xid(struct rekey *r, uint64_t *next)
{
    PGresult *res = NULL;
    rc_t rc = rekey_db_exec(r, "read the next transaction id",
                            "SELECT pg_snapshot_xmax(pg_current_snapshot())", 0, NULL,
                            PGRES_TUPLES_OK, &res);

    if (rc == RC_OK)
        rc = rekey_db_count(r, PQgetvalue(res, 0, 0), next);
    PQclear(res);
    return rc;
}

/* See rekey_int.h. */
rc_t rekey_db_discover(struct rekey *r)
{
    PGresult *res = NULL;
    rc_t rc = RC_OK;

    r->ntables = REKEY_TABLES_MAX;
    for (size_t i = 0; i < r->ntables && rc == RC_OK; i++) {
        struct rekey_table *t = &r->table[i];
        t->name = rekey_table_names[i];
        if ((rc = rekey_db_exec(r, "find the table", TABLE_SQL, 1, &t->name, PGRES_TUPLES_OK,
                                &res)) != RC_OK)
            break;
        t->present = PQntuples(res) == 1;
        if (t->present && (rc = rekey_db_name(r, t->quoted, PQgetvalue(res, 0, 0))) == RC_OK &&
            (rc = rekey_db_columns(r, t)) == RC_OK && t->ncols > 0)
            rc = rekey_db_leaves(r, t, PQgetvalue(res, 0, 1)[0]);
        PQclear(res);
        res = NULL;
    }
    return rc;
}

/* See rekey_int.h. */
void rekey_db_free_tables(struct rekey *r)
{
    for (size_t i = 0; i < REKEY_TABLES_MAX; i++) {
        free(r->table[i].leaf);
        r->table[i].leaf = NULL;
        r->table[i].nleaves = 0;
    }
}

/* Appends to r->sql the condition "some masked column holds a value not
 * under the current key id ($n)"; cannot fail (buf's sticky error). */
static void rekey_db_not_current(struct rekey *r, const struct rekey_table *t, int n)
{
    buf_appendc(&r->sql, '(');
    for (size_t j = 0; j < t->ncols; j++)
        buf_printf(&r->sql, "%sNOT coalesce(starts_with(%s, $%d), true)", j ? " OR " : "",
                   t->column[j], n);
    buf_appendc(&r->sql, ')');
}

/* See rekey_int.h. */
rc_t rekey_db_count(struct rekey *r, const char *s, uint64_t *out)
{
    int64_t v = 0;
    if (num_parse_i64(s, strlen(s), 0, INT64_MAX, &v) != RC_OK) {
        snprintf(r->why, ERR_LEN, "count: a malformed number");
        return RC_DB;
    }
    *out = (uint64_t)v;
    return RC_OK;
}

/* See rekey_int.h: one scan of the table (all its partitions). */
rc_t rekey_db_count_rows(struct rekey *r, struct rekey_table *t)
{
    PGresult *res = NULL;
    const char *param = r->prefix;
    rc_t rc;

    buf_reset(&r->sql);
    buf_printf(&r->sql, "SELECT count(*), count(*) FILTER (WHERE ");
    rekey_db_not_current(r, t, 1);
    buf_printf(&r->sql, ") FROM %s", t->quoted);
    if ((rc = r->sql.err) != RC_OK) {
        snprintf(r->why, ERR_LEN, "out of memory");
        goto out;
    }
    if ((rc = rekey_db_exec(r, "count the rows", r->sql.data, 1, &param, PGRES_TUPLES_OK, &res)) !=
            RC_OK ||
        (rc = rekey_db_count(r, PQgetvalue(res, 0, 0), &t->rows)) != RC_OK)
        goto out;
    rc = rekey_db_count(r, PQgetvalue(res, 0, 1), &t->to_visit);
out:
    PQclear(res);
    return rc;
}

/* Adds n values of column col under key id `id` ("" not masked) to ids.
 * Cannot fail: ids past REKEY_IDS_MAX are counted together. */
static void rekey_db_tally(struct rekey_ids *ids, const char *id, size_t col, uint64_t n)
{
    size_t i = 0;
    while (i < ids->count && strcmp(ids->id[i], id) != 0)
        i++;
    if (i == ids->count) {
        if (ids->count == REKEY_IDS_MAX || strlen(id) > MASK_KEY_ID_MAX) {
            ids->beyond += n;
            return;
        }
        memcpy(ids->id[i], id, strlen(id) + 1);
        ids->count++;
    }
    ids->n[i][col] += n;
}

/* See rekey_int.h: one scan of the table.  A value that starts with the
 * current key id is counted under it, as the scan leaves it alone; any other
 * is classified by its shape (SHAPE_SQL, as keyset_classify) and its key id,
 * and never leaves the server. */
rc_t rekey_db_count_ids(struct rekey *r, struct rekey_table *t)
{
    PGresult *res = NULL;
    char current[MASK_KEY_ID_MAX + 1];
    const char *params[2] = {r->prefix, current};
    rc_t rc;

    snprintf(current, sizeof current, "%.*s", (int)strlen(r->prefix) - 1, r->prefix);
    memset(&t->ids, 0, sizeof t->ids);
    buf_reset(&r->sql);
    buf_printf(&r->sql,
               "SELECT v.col, CASE WHEN starts_with(v.val, $1) THEN $2 WHEN " SHAPE_SQL
               " THEN split_part(v.val, ':', 1) ELSE '' END, count(*) FROM %s t "
               "CROSS JOIN LATERAL (VALUES ",
               t->quoted);
    for (size_t j = 0; j < t->ncols; j++)
        buf_printf(&r->sql, "%s(%zu, t.%s::text)", j ? ", " : "", j, t->column[j]);
    buf_appends(&r->sql, ") v(col, val) WHERE v.val IS NOT NULL GROUP BY 1, 2");
    if ((rc = r->sql.err) != RC_OK) {
        snprintf(r->why, ERR_LEN, "out of memory");
        goto out;
    }
    if ((rc = rekey_db_exec(r, "count by key id", r->sql.data, 2, params, PGRES_TUPLES_OK, &res)) !=
        RC_OK)
        goto out;
    for (int i = 0; i < PQntuples(res); i++) {
        uint64_t col = 0, n = 0;
        if ((rc = rekey_db_count(r, PQgetvalue(res, i, 0), &col)) != RC_OK ||
            (rc = rekey_db_count(r, PQgetvalue(res, i, 2), &n)) != RC_OK)
            goto out;
        if (col >= t->ncols) {
            snprintf(r->why, ERR_LEN, "count by key id: a column out of range");
            rc = RC_DB;
            goto out;
        }
        rekey_db_tally(&t->ids, PQgetvalue(res, i, 1), (size_t)col, n);
    }
out:
    PQclear(res);
    return rc;
}

/* See rekey_int.h. */
rc_t rekey_db_blocks(struct rekey *r, const char *leaf, uint64_t *blocks)
{
    PGresult *res = NULL;
    rc_t rc = rekey_db_exec(r, "read the size", BLOCKS_SQL, 1, &leaf, PGRES_TUPLES_OK, &res);

    if (rc == RC_OK)
        rc = rekey_db_count(r, PQgetvalue(res, 0, 0), blocks);
    PQclear(res);
    return rc;
}
