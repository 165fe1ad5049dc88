/* rekey.c - the `bootstrap rekey` command (rekey.h): its options and
 * settings, the order of a run (find the tables, count, re-mask, count
 * again) and the exit status.  What it prints is rekey_report.c's. */
#define _DEFAULT_SOURCE
#include "rekey.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "num.h"
#include "rekey_int.h"

#define REKEY_SERVER_MIN 140000 /* PostgreSQL 14: TID range scans */

/* Set by SIGINT and SIGTERM: the run ends after the transaction in progress. */
static volatile sig_atomic_t rekey_stopping;

static const char rekey_usage_text[] =
    "usage: bootstrap rekey [--batch ROWS] [--busy-share PERCENT] [--max-rate ROWS_PER_S]\n"
    "                       [--max-txn-ms MS]\n"
    "       bootstrap rekey --dry-run | --verify\n"
    "\n"
    "Re-masks in place every masked_ip and masked_device_id (and the masked_* columns of\n"
    "login_etl_rejected, when that table exists) still stored under a retired key, with\n"
    "the current key, while the function keeps loading: short transactions of at most\n"
    "ROWS rows that lock only their own rows.  Each value is recovered with the key its\n"
    "own KEY_ID: prefix names, so it can be stopped or killed at any moment and run\n"
    "again: what is done stays done and nothing is re-masked twice.\n"
    "\n"
    "  --dry-run        count the values by key id; change nothing\n"
    "  --verify         count, and exit 1 while any value is under another key id\n"
    "                   (retire a key only after this passes)\n"
    "  --batch ROWS     most rows one transaction writes (default 2000, 100 to 100000)\n"
    "  --busy-share P   while other sessions write to the database (the function is\n"
    "                   loading), work only P% of the time, pausing after each batch\n"
    "                   (default 20; 100: never pause)\n"
    "  --max-rate N     visit at most N rows a second on average (default: no limit)\n"
    "  --max-txn-ms MS  lock_timeout of each transaction; batches are made smaller while\n"
    "                   one takes more than half of it (default 200, 20 to 10000)\n"
    "\n"
    "settings, as the function reads them: DATABASE_URL or PGHOST, PGPORT, PGUSER,\n"
    "PGPASSWORD, PGDATABASE, PGSSLMODE...; DB_AUTH=iam; MASKING_KEY (the current key in\n"
    "hex, or the keyset document the masking secret holds), MASKING_KEY_ID,\n"
    "MASKING_KEYS_RETIRED=id=<128 hex>[,...].  The database user needs SELECT and UPDATE\n"
    "on the tables and on each of their partitions.\n"
    "\n"
    "progress on stderr; the summary on stdout.  exit status: 0 done (every value under\n"
    "the current key), 1 values left under other key ids, 2 usage or settings, 3 stopped\n"
    "before the end (database failure, SIGINT, SIGTERM): run it again\n";

/* Parses the value of option argv[*i] into *out within [min, max].
 * Returns 1, or 0 after printing why on stderr. */
static int rekey_opt_num(int argc, char **argv, int *i, int64_t min, int64_t max, long *out)
{
    const char *name = argv[*i];
    int64_t v = 0;

    if (*i + 1 >= argc ||
        num_parse_i64(argv[*i + 1], strlen(argv[*i + 1]), min, max, &v) != RC_OK) {
        fprintf(stderr, "bootstrap rekey: %s takes a number from %lld to %lld\n", name,
                (long long)min, (long long)max);
        return 0;
    }
    *out = (long)v;
    (*i)++;
    return 1;
}

/* Reads the options into r and *mode.  Returns REKEY_EXIT_DONE to go on,
 * REKEY_EXIT_USAGE after printing why (or the help, with *help set). */
static int rekey_options(int argc, char **argv, struct rekey *r, enum rekey_mode *mode, int *help)
{
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--dry-run") == 0 && *mode == REKEY_MODE_RUN) {
            *mode = REKEY_MODE_DRY_RUN;
        } else if (strcmp(a, "--verify") == 0 && *mode == REKEY_MODE_RUN) {
            *mode = REKEY_MODE_VERIFY;
        } else if (strcmp(a, "--batch") == 0) {
            if (!rekey_opt_num(argc, argv, &i, 100, 100000, &r->batch_rows))
                return REKEY_EXIT_USAGE;
        } else if (strcmp(a, "--max-rate") == 0) {
            if (!rekey_opt_num(argc, argv, &i, 1, 100000000, &r->max_rate))
                return REKEY_EXIT_USAGE;
        } else if (strcmp(a, "--busy-share") == 0) {
            if (!rekey_opt_num(argc, argv, &i, 1, 100, &r->busy_share))
                return REKEY_EXIT_USAGE;
        } else if (strcmp(a, "--max-txn-ms") == 0) {
            if (!rekey_opt_num(argc, argv, &i, 20, 10000, &r->max_txn_ms))
                return REKEY_EXIT_USAGE;
        } else if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            fputs(rekey_usage_text, stdout);
            *help = 1;
            return REKEY_EXIT_USAGE;
        } else {
            /* Not echoed: whatever was typed here may be a secret. */
            fprintf(stderr, "bootstrap rekey: unknown or repeated option (see `bootstrap rekey "
                            "-h`)\n");
            return REKEY_EXIT_USAGE;
        }
    }
    return REKEY_EXIT_DONE;
}

/* Reads the settings into *db, as the function reads them (cli_db.h), and
 * points r at them.  Returns REKEY_EXIT_DONE, or REKEY_EXIT_USAGE after
 * printing why (never a key). */
static int rekey_settings(struct rekey *r, struct cli_db *db)
{
    if (cli_db_load(db, "rekey", "login-etl-rekey") != RC_OK)
        return REKEY_EXIT_USAGE;
    r->db = db;
    r->keys = db->keys;
    snprintf(r->prefix, sizeof r->prefix, "%s:", mask_key_id(keyset_current(db->keys)));
    return REKEY_EXIT_DONE;
}

/* The work of a run: counts the rows to visit, re-masks every table, counts
 * again.  Returns the exit status; prints the summary or why it stopped. */
static int rekey_work(struct rekey *r)
{
    char a[REKEY_NUM_LEN], b[REKEY_NUM_LEN];
    uint64_t left = 0;
    rc_t rc = RC_OK;

    for (size_t i = 0; i < r->ntables && rc == RC_OK; i++)
        if (r->table[i].present && r->table[i].ncols > 0 &&
            (rc = rekey_db_count_rows(r, &r->table[i])) == RC_OK)
            r->total += r->table[i].to_visit;
    if (rc)
        goto stopped;
    fprintf(stderr,
            "rekey: %s rows with a value not under the current key %.*s (%zu keys in "
            "the set)\n",
            rekey_num(r->total, a), (int)strlen(r->prefix) - 1, r->prefix, keyset_count(r->keys));
    r->started_ms = clock_mono_ms();
    r->progress_ms = r->started_ms;
    for (size_t i = 0; i < r->ntables && rc == RC_OK && !rekey_stopping; i++)
        if (r->table[i].present && r->table[i].ncols > 0)
            rc = rekey_scan_table(r, &r->table[i]);
    if (rc)
        goto stopped;
    if (rekey_stopping) {
        snprintf(r->why, ERR_LEN, "interrupted");
        goto stopped;
    }
    r->finished_ms = clock_mono_ms();
    r->progress_ms = 0;
    rekey_progress(r);
    if ((rc = rekey_report(stderr, r, REKEY_MODE_RUN, &left)) != RC_OK)
        goto stopped;
    return rekey_summary(r, left);
stopped:
    printf("rekey: stopped: %s; %s of %s rows done (committed, kept): run it again to "
           "finish\n",
           r->why, rekey_num(r->st.rows_visited, a), rekey_num(r->total, b));
    return REKEY_EXIT_STOPPED;
}

/* SIGINT, SIGTERM: asks the run to end after the transaction in progress, so that
 * the summary still says what was done.  Cannot fail. */
static void rekey_on_signal(int sig)
{
    (void)sig;
    rekey_stopping = 1;
}

/* See rekey.h. */
int rekey_cli(int argc, char **argv)
{
    struct rekey r = {
        .batch_rows = 2000, .max_txn_ms = 200, .busy_share = 20, .stop = &rekey_stopping};
    struct cli_db db = {0};
    enum rekey_mode mode = REKEY_MODE_RUN;
    uint64_t left = 0;
    int help = 0, status;

    buf_init(&r.sql, 64 * 1024);
    for (size_t k = 0; k < 1 + 2 * REKEY_COLUMNS_MAX; k++)
        buf_init(&r.arg[k], 64 * 1024 * 1024);
    if ((status = rekey_options(argc, argv, &r, &mode, &help)) != REKEY_EXIT_DONE) {
        status = help ? REKEY_EXIT_DONE : status;
        goto out;
    }
    /* Transactions start small and grow while they stay short. */
    r.target_rows = r.batch_rows < REKEY_ROWS_FIRST ? r.batch_rows : REKEY_ROWS_FIRST;
    if ((status = rekey_settings(&r, &db)) != REKEY_EXIT_DONE)
        goto out;
    status = REKEY_EXIT_STOPPED;
    if (rekey_db_connect(&r) != RC_OK || rekey_db_discover(&r) != RC_OK) {
        printf("rekey: stopped: %s\n", r.why);
        goto out;
    }
    if (PQserverVersion(r.conn) < REKEY_SERVER_MIN) {
        /* Before 14 a range of blocks is read by scanning the whole relation. */
        fprintf(stderr,
                "bootstrap rekey: the server is PostgreSQL %d.%d: rekey needs 14 or "
                "later (TID range scans)\n",
                PQserverVersion(r.conn) / 10000, PQserverVersion(r.conn) % 10000 / 100);
        status = REKEY_EXIT_USAGE;
        goto out;
    }
    if (!r.table[0].present) {
        fprintf(stderr, "bootstrap rekey: table user_logins not found: is this the function's "
                        "database and search_path?\n");
        status = REKEY_EXIT_USAGE;
        goto out;
    }
    if (mode != REKEY_MODE_RUN) {
        if (rekey_report(stdout, &r, mode, &left) != RC_OK) {
            printf("rekey: stopped: %s\n", r.why);
            goto out;
        }
        if (mode == REKEY_MODE_VERIFY)
            printf("rekey --verify: %s\n",
                   left ? "FAILED: values remain under other key ids than the current one"
                        : "ok: every masked value is under the current key");
        status = mode == REKEY_MODE_VERIFY && left ? REKEY_EXIT_LEFT : REKEY_EXIT_DONE;
        goto out;
    }
    signal(SIGINT, rekey_on_signal);
    signal(SIGTERM, rekey_on_signal);
    status = rekey_work(&r);
out:
    fflush(stdout);
    rekey_db_close(&r);
    PQclear(r.last_error);
    rekey_db_free_tables(&r);
    buf_free(&r.sql);
    for (size_t k = 0; k < 1 + 2 * REKEY_COLUMNS_MAX; k++)
        buf_free(&r.arg[k]);
    cli_db_free(&db);
    return status;
}
