/* pg_schema.c - the tables the Postgres sink writes: created when missing,
 * checked once per process. */
#define _DEFAULT_SOURCE
#include "pg_int.h"

#include <stdio.h>
#include <string.h>

/* Creates the tables that are missing, then checks that what the function
 * relies on is there (VERIFY_SQL), and finds which earlier ledger layouts
 * must be consulted (EARLIER).  Done once per process, on its
 * first connection.  Returns RC_OK, RC_TIMEOUT or RC_DB; a schema that lacks
 * something is RC_DB with s->why naming the table and what is missing (not
 * retryable: writing anyway could break exactly-once). */
rc_t pg_check_schema(struct pg_sink *s)
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
        s->phase = PH_BROKEN;
        s->retryable = 0;
        return RC_DB;
    }
    PQclear(res);
    s->earlier = 0;
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
        s->earlier |= active ? 1u << k : 0;
        log_at(s->lg, LOG_INFO,
               active ? "the earlier ledger is consulted until its entries expire"
                      : "the earlier ledger no longer matters and may be dropped",
               LF_STR("table", EARLIER[k].table));
    }
    s->schema_ready = 1;
    return RC_OK;
}
