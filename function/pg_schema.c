/* pg_schema.c - the tables the Postgres sink writes: user_logins (the
 * contract's DDL), the ledger (pg_int.h) and the quarantine
 * (pg_quarantine.c), created when missing and
 * checked once per process, on its first connection (pg_open). */
#define _DEFAULT_SOURCE
#include "pg_int.h"

#include <stdio.h>

/* The contract's DDL for user_logins, exactly; the function's own ledger
 * beside it (its layout: pg_int.h).  Each is created only when missing,
 * never altered.  The existence check comes first because CREATE TABLE IF
 * NOT EXISTS still needs CREATE on the schema, which a least-privilege user
 * may not have when the upstream environment created the tables. */
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
    "FOR i IN 0.." SLOT_NONE_SQL " LOOP\n"                                                         \
    "EXECUTE format('CREATE TABLE IF NOT EXISTS %I PARTITION OF " LEDGER                           \
    " FOR VALUES IN (%s)', '" LEDGER "_s' || lpad(i::text, 2, '0'), i);\n"                         \
    "END LOOP;\n"                                                                                  \
    "END IF;\n"                                                                                    \
    "IF to_regclass('" REJECTED "') IS NULL THEN\n"                                                \
    "BEGIN\n"                                                                                      \
    "CREATE TABLE IF NOT EXISTS " REJECTED "(\n"                                                   \
    "    message_id          text NOT NULL,\n"                                                     \
    "    sent_at             timestamptz,\n"                                                       \
    "    received_at         timestamptz NOT NULL DEFAULT now(),\n"                                \
    "    reason              text NOT NULL,\n"                                                     \
    "    masked_body         text NOT NULL\n"                                                      \
    ");\n"                                                                                         \
    "CREATE INDEX IF NOT EXISTS " REJECTED "_received_at ON " REJECTED                             \
    " (received_at, message_id);\n"                                                                \
    "EXCEPTION WHEN insufficient_privilege THEN NULL;\n"                                           \
    "END;\n"                                                                                       \
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
    " || ' (" LEDGER "_sNN FOR VALUES IN (N), N = 0 to " SLOT_NONE_SQL ")' "                       \
    "FROM generate_series(0, " SLOT_NONE_SQL ") g "                                                \
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

/* With quarantine on, login_etl_rejected must be there: a user that may
 * not create it (no CREATE on the schema) needs it created as
 * docs/deploy.md shows.  Returns RC_OK, RC_TIMEOUT or RC_DB (s->why saying
 * so; not retryable). */
static rc_t check_rejected(struct pg_sink *s)
{
    PGresult *res = NULL;
    rc_t rc = pg_run(s, "SELECT to_regclass('" REJECTED "') IS NULL", PGRES_TUPLES_OK, &res);

    if (rc)
        return rc;
    int missing = PQntuples(res) == 1 && PQgetvalue(res, 0, 0)[0] == 't';
    PQclear(res);
    if (missing) {
        snprintf(s->why, sizeof s->why,
                 "schema: table " REJECTED " is missing (REJECTED_RECORDS=quarantine needs it)");
        s->tx.phase = PH_BROKEN;
        s->retryable = 0;
        return RC_DB;
    }
    return RC_OK;
}

/* Creates the tables that are missing, then checks that what the function
 * relies on is there (VERIFY_SQL), and finds which earlier ledger layouts
 * must be consulted (pg_find_earlier).  Returns RC_OK, RC_TIMEOUT or RC_DB;
 * a schema that lacks something is RC_DB with s->why naming the table and
 * what is missing (not retryable: writing anyway could break exactly-once). */
static rc_t check_schema(struct pg_sink *s)
{
    PGresult *res = NULL;
    rc_t rc;

    if ((rc = pg_run(s, SCHEMA_SQL, PGRES_COMMAND_OK, NULL)) != RC_OK)
        return rc;
    if ((rc = pg_run(s, VERIFY_SQL, PGRES_TUPLES_OK, &res)) != RC_OK)
        return rc;
    if (PQntuples(res) > 0) {
        size_t at = (size_t)snprintf(s->why, sizeof s->why, "schema:");
        for (int r = 0; r < PQntuples(res) && at < sizeof s->why; r++)
            at += (size_t)snprintf(s->why + at, sizeof s->why - at, "%s %s", r ? ";" : "",
                                   PQgetvalue(res, r, 0));
        PQclear(res);
        s->tx.phase = PH_BROKEN;
        s->retryable = 0;
        return RC_DB;
    }
    PQclear(res);
    if (s->q.body_fn && (rc = check_rejected(s)) != RC_OK)
        return rc;
    if ((rc = pg_find_earlier(s)) != RC_OK)
        return rc;
    s->schema_ready = 1;
    return RC_OK;
}

/* Opens the connection (pg_connect) and, on the process's first, checks the
 * schema; on every later one, looks at the earlier ledger layouts again
 * (pg_find_earlier).  A connection whose check failed is closed again.
 * Returns as pg_connect, or what check_schema or pg_find_earlier returns. */
rc_t pg_open(struct pg_sink *s)
{
    rc_t rc = pg_connect(s);

    if (rc != RC_OK)
        return rc;
    if ((rc = s->schema_ready ? pg_find_earlier(s) : check_schema(s)) != RC_OK)
        pg_close(s);
    return rc;
}
