/* reprocess.c - the `bootstrap reprocess` command (reprocess.h): reads the
 * quarantine page by page, validates each stored body again, and moves the
 * now-valid records into user_logins, one savepoint each. */
#define _DEFAULT_SOURCE
#include "reprocess.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libpq-fe.h>
#include <openssl/crypto.h>

#include "cli_db.h"
#include "keyset.h"
#include "login.h"
#include "num.h"
#include "row.h"

#define PAGE_ROWS 500 /* records read a transaction */
#define SQL_NUM(n) #n /* a number macro as SQL text */
#define SQL_NUM_OF(n) SQL_NUM(n)
#define REASONS_MAX 32 /* distinct stored reasons counted */
#define REASON_LEN 40  /* characters of a reason kept for the summary */
#define TEXT_MAX 520   /* a text value of a row, NUL included (128 characters of 4 bytes) */

/* The page after (received_at, message_id) = ($1, $2), oldest first;
 * received_at as text (microseconds: exact), both times also as ms. */
#define PAGE_SQL                                                                                   \
    "SELECT message_id, coalesce((extract(epoch FROM sent_at) * 1000)::int8, -1), "                \
    "(extract(epoch FROM received_at) * 1000)::int8, reason, masked_body, received_at::text "      \
    "FROM login_etl_rejected WHERE (received_at, message_id) > ($1::timestamptz, $2) "             \
    "ORDER BY received_at, message_id LIMIT " SQL_NUM_OF(PAGE_ROWS)

#define TAKE_SQL                                                                                   \
    "DELETE FROM login_etl_rejected WHERE message_id = $1 AND received_at = $2::timestamptz "      \
    "RETURNING 1"

#define INSERT_SQL                                                                                 \
    "INSERT INTO user_logins (user_id, device_type, masked_ip, masked_device_id, locale, "         \
    "app_version, create_date) VALUES ($1, $2, $3, $4, $5, $6::int4, DATE '1970-01-01' + "         \
    "$7::int4)"

/* What became of the records stored with one reason. */
struct tally {
    char reason[REASON_LEN + 1];
    size_t stored;  /* records read */
    size_t loaded;  /* valid now and written (or would be: --dry-run) */
    size_t invalid; /* still broken by a rule (the reason may have changed) */
    size_t refused; /* valid by the rules, refused by the database again */
};

struct reprocess {
    PGconn *conn;
    const struct keyset *keys; /* the settings'; borrowed */
    struct login_parser lp;
    int dry_run;
    struct tally by[REASONS_MAX];
    size_t nby;
    size_t skipped;    /* taken by another run meanwhile */
    size_t unreadable; /* bodies that did not unmask (another key, altered) */
};

static const char usage_text[] =
    "usage: bootstrap reprocess [--dry-run]\n"
    "\n"
    "Validates every record kept in login_etl_rejected again under the current rules and\n"
    "moves the ones now valid into user_logins, exactly once: each is taken out of the\n"
    "quarantine and written in one step; a row the database still refuses stays.\n"
    "\n"
    "  --dry-run   count by stored reason what would load; change nothing\n"
    "\n"
    "settings, as the function reads them: DATABASE_URL or PGHOST, PGPORT, PGUSER,\n"
    "PGPASSWORD, PGDATABASE, PGSSLMODE...; DB_AUTH=iam; MASKING_KEY (the current key in\n"
    "hex, or the keyset document), MASKING_KEY_ID, MASKING_KEYS_RETIRED.  The database user needs\n"
    "SELECT and DELETE on login_etl_rejected and INSERT on user_logins.\n"
    "\n"
    "exit status: 0 done, 1 a failure (what was committed stays: run it again), 2 usage\n";

/* The tally of a stored reason (a new one when unseen; the last one
 * collects the rest past REASONS_MAX).  Cannot fail. */
static struct tally *tally_of(struct reprocess *r, const char *reason)
{
    for (size_t i = 0; i < r->nby; i++)
        if (strncmp(r->by[i].reason, reason, REASON_LEN) == 0)
            return &r->by[i];
    if (r->nby == REASONS_MAX)
        return &r->by[REASONS_MAX - 1];
    struct tally *t = &r->by[r->nby++];
    snprintf(t->reason, sizeof t->reason, "%s", reason);
    return t;
}

/* Runs sql (no parameters) and checks its status.  Returns 1 when it did. */
static int run(struct reprocess *r, const char *sql, ExecStatusType want)
{
    PGresult *res = PQexec(r->conn, sql);
    int ok = PQresultStatus(res) == want;
    if (!ok)
        fprintf(stderr, "bootstrap reprocess: %s: SQLSTATE %s\n", sql,
                res && PQresultErrorField(res, PG_DIAG_SQLSTATE)
                    ? PQresultErrorField(res, PG_DIAG_SQLSTATE)
                    : "(connection)");
    PQclear(res);
    return ok;
}

/* Is SQLSTATE state a refusal of a row's data (as the function's sink
 * counts it: classes 22 and 23, P0001, 54000)?  Cannot fail. */
static int data_refused(const char *state)
{
    return state && (strncmp(state, "22", 2) == 0 || strncmp(state, "23", 2) == 0 ||
                     strcmp(state, "P0001") == 0 || strcmp(state, "54000") == 0);
}

/* Copies s[0..n) NUL-terminated into out (TEXT_MAX); NULL for SQL NULL. */
static const char *text_param(const char *s, size_t n, char out[TEXT_MAX])
{
    if (!s)
        return NULL;
    if (n >= TEXT_MAX)
        n = TEXT_MAX - 1; /* cannot happen: the rules bound every value */
    memcpy(out, s, n);
    out[n] = '\0';
    return out;
}

/* Takes record (id, received) out of quarantine and writes its row, behind
 * a savepoint.  Returns 1 loaded, 0 not (taken meanwhile: *skipped; or
 * refused by the database: *refused), -1 on another failure. */
static int move(struct reprocess *r, const char *id, const char *received, const struct pg_row *row,
                int *refused)
{
    char t[5][TEXT_MAX], version[16], date[16];
    const char *take[2] = {id, received};
    const char *values[7] = {
        text_param(row->user_id, row->user_id_len, t[0]),
        text_param(row->device_type, row->device_type_len, t[1]),
        text_param(row->masked_ip, row->masked_ip_len, t[2]),
        text_param(row->masked_device_id, row->masked_device_id_len, t[3]),
        text_param(row->locale, row->locale_len, t[4]),
        row->has_app_version ? version : NULL,
        date,
    };

    *refused = 0;
    snprintf(version, sizeof version, "%d", (int)row->app_version);
    snprintf(date, sizeof date, "%d", (int)row->create_date);
    if (!run(r, "SAVEPOINT reprocess_record", PGRES_COMMAND_OK))
        return -1;
    PGresult *res = PQexecParams(r->conn, TAKE_SQL, 2, NULL, take, NULL, NULL, 0);
    int taken = PQresultStatus(res) == PGRES_TUPLES_OK ? PQntuples(res) : -1;
    PQclear(res);
    if (taken <= 0)
        return taken < 0 ? -1 : run(r, "RELEASE SAVEPOINT reprocess_record", PGRES_COMMAND_OK) - 1;
    res = PQexecParams(r->conn, INSERT_SQL, 7, NULL, values, NULL, NULL, 0);
    int ok = PQresultStatus(res) == PGRES_COMMAND_OK;
    *refused = !ok && data_refused(PQresultErrorField(res, PG_DIAG_SQLSTATE));
    PQclear(res);
    OPENSSL_cleanse(t, sizeof t);
    if (ok)
        return run(r, "RELEASE SAVEPOINT reprocess_record", PGRES_COMMAND_OK) ? 1 : -1;
    if (!*refused)
        return -1;
    return run(r, "ROLLBACK TO SAVEPOINT reprocess_record", PGRES_COMMAND_OK) ? 0 : -1;
}

/* Validates stored record `i` of page res again and, when valid, moves it.
 * Returns 0, or -1 on a failure that stops the run. */
static int one(struct reprocess *r, PGresult *res, int i)
{
    const char *reason = PQgetvalue(res, i, 3), *masked = PQgetvalue(res, i, 4);
    int64_t sent_ms = -1, received_ms = 0;
    struct tally *t = tally_of(r, reason);
    char err[ERR_LEN], ip[MASK_OUTPUT_MAX], device[MASK_OUTPUT_MAX];
    struct buf body;
    struct login_row lr;
    struct pg_row row;
    enum login_reason why = LOGIN_OK;
    int status = 0, refused = 0;

    t->stored++;
    num_parse_i64(PQgetvalue(res, i, 1), (size_t)PQgetlength(res, i, 1), -1, INT64_MAX, &sent_ms);
    num_parse_i64(PQgetvalue(res, i, 2), (size_t)PQgetlength(res, i, 2), 0, INT64_MAX,
                  &received_ms);
    buf_init(&body, (size_t)PQgetlength(res, i, 4) + 16);
    if (keyset_unmask_long(r->keys, masked, (size_t)PQgetlength(res, i, 4), &body, err) != RC_OK) {
        r->unreadable++;
        goto out;
    }
    /* sent_at is NULL both without a SentTimestamp and with a malformed one: the
     * stored reason tells the second apart, which the rules still reject. */
    int sent_bad = strcmp(reason, login_reason_code(LOGIN_SENT_TIMESTAMP)) == 0;
    if (login_parse(&r->lp, body.data ? body.data : "", body.len, 0, sent_ms, sent_bad, received_ms,
                    &lr, &why) != RC_OK ||
        (why == LOGIN_OK &&
         row_build(keyset_current(r->keys), &lr, &row, ip, device, &why) != RC_OK)) {
        status = -1;
        goto out;
    }
    if (why != LOGIN_OK) {
        t->invalid++;
        goto out;
    }
    int moved = move(r, PQgetvalue(res, i, 0), PQgetvalue(res, i, 5), &row, &refused);
    if (moved < 0)
        status = -1;
    t->loaded += moved > 0;
    t->refused += refused;
    r->skipped += moved == 0 && !refused;
out:
    buf_wipe(&body);
    return status;
}

/* Goes through the quarantine page by page, one transaction a page
 * (committed, or rolled back with --dry-run).  Returns 0 or -1. */
static int pass(struct reprocess *r)
{
    char last_at[64] = "-infinity", last_id[1024] = "";

    for (;;) {
        const char *params[2] = {last_at, last_id};
        if (!run(r, "BEGIN", PGRES_COMMAND_OK))
            return -1;
        PGresult *res = PQexecParams(r->conn, PAGE_SQL, 2, NULL, params, NULL, NULL, 0);
        if (PQresultStatus(res) != PGRES_TUPLES_OK) {
            fprintf(stderr, "bootstrap reprocess: reading login_etl_rejected: SQLSTATE %s\n",
                    PQresultErrorField(res, PG_DIAG_SQLSTATE)
                        ? PQresultErrorField(res, PG_DIAG_SQLSTATE)
                        : "(connection)");
            PQclear(res);
            return -1;
        }
        int n = PQntuples(res);
        for (int i = 0; i < n; i++) {
            if (one(r, res, i) != 0) {
                PQclear(res);
                run(r, "ROLLBACK", PGRES_COMMAND_OK);
                return -1;
            }
        }
        if (n > 0) {
            snprintf(last_at, sizeof last_at, "%s", PQgetvalue(res, n - 1, 5));
            snprintf(last_id, sizeof last_id, "%s", PQgetvalue(res, n - 1, 0));
        }
        PQclear(res);
        if (!run(r, r->dry_run ? "ROLLBACK" : "COMMIT", PGRES_COMMAND_OK))
            return -1;
        if (n < PAGE_ROWS)
            return 0;
    }
}

/* Prints the counts by stored reason on stdout. */
static void summary(const struct reprocess *r)
{
    printf("%-28s %8s %8s %8s %8s\n", "reason", "stored", r->dry_run ? "would" : "loaded",
           "invalid", "refused");
    for (size_t i = 0; i < r->nby; i++)
        printf("%-28s %8zu %8zu %8zu %8zu\n", r->by[i].reason, r->by[i].stored, r->by[i].loaded,
               r->by[i].invalid, r->by[i].refused);
    if (r->unreadable)
        printf("%zu stored bodies did not unmask with the keys given\n", r->unreadable);
    if (r->skipped)
        printf("%zu records were taken by another run meanwhile\n", r->skipped);
}

int reprocess_cli(int argc, char **argv)
{
    struct reprocess r = {0};
    struct cli_db db = {0};
    char err[ERR_LEN];
    int status = REPROCESS_EXIT_USAGE;

    for (int i = 2; i < argc; i++) {
        if (strcmp(argv[i], "--dry-run") == 0) {
            r.dry_run = 1;
        } else if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
            fputs(usage_text, stdout);
            return REPROCESS_EXIT_DONE;
        } else {
            fputs(usage_text, stderr);
            return REPROCESS_EXIT_USAGE;
        }
    }
    if (cli_db_load(&db, "reprocess", "login-etl-reprocess") != RC_OK)
        return REPROCESS_EXIT_USAGE;
    r.keys = db.keys;
    login_parser_init(&r.lp);
    if (!(r.conn = cli_db_connect(&db, err))) {
        fprintf(stderr, "bootstrap reprocess: %s\n", err);
        status = REPROCESS_EXIT_FAILED;
        goto out;
    }
    status = pass(&r) == 0 && r.unreadable == 0 ? REPROCESS_EXIT_DONE : REPROCESS_EXIT_FAILED;
    summary(&r);
out:
    PQfinish(r.conn);
    login_parser_free(&r.lp);
    cli_db_free(&db);
    return status;
}
