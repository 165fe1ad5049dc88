/* rekey_int.h - private to rekey.c, rekey_db.c and rekey_scan.c: the state
 * of one `bootstrap rekey` run (rekey.h says what the command does).
 *
 *   rekey.c       the command: options, settings, the run's order, progress,
 *                 the summary and the exit status
 *   rekey_db.c    the connection, errors by SQLSTATE, what is to be re-masked
 *                 (tables, partitions, columns) and the counts by key id
 *   rekey_scan.c  the work: each heap relation's blocks in ranges, the rows
 *                 under other keys read, re-masked and written back in short
 *                 transactions, each row only if it still holds what was read
 *
 * The connection speaks to the server with the one statement at a time of
 * libpq's blocking calls: the run is not bound by an invocation's deadline,
 * and each statement is short by construction. */
#ifndef REKEY_INT_H
#define REKEY_INT_H

#include <signal.h>
#include <stdint.h>
#include <stdio.h>

#include <libpq-fe.h>

#include "buf.h"
#include "cli_db.h"
#include "keyset.h"
#include "mask.h"
#include "result.h"

#define REKEY_TABLES_MAX 2  /* user_logins, login_etl_rejected */
#define REKEY_COLUMNS_MAX 8 /* masked_* columns of one table */
#define REKEY_IDS_MAX 16    /* distinct key ids a count tells apart, "not masked" included */
#define REKEY_NAME_MAX 160  /* a relation or column name as the server quotes it */
#define REKEY_ROWS_PER_BLOCK                                                                       \
    60                        /* about the most user_logins rows an 8 KiB block holds: sizes       \
                                 the first read of a relation */
#define REKEY_ROWS_FIRST 1000 /* rows of the first transaction; they double while short */
#define REKEY_SPAN_MAX 2048   /* blocks one read covers at most (16 MiB of heap) */
#define REKEY_PASSES_MAX 5    /* passes over one relation (the first, tails, re-reads) */
#define REKEY_RETRY_MS 60000  /* failures in a row are retried this long, then the run stops */

/* The values of one table counted by key id (rekey_db_count_ids). */
struct rekey_ids {
    char id[REKEY_IDS_MAX][MASK_KEY_ID_MAX + 1];  /* a key id, or "" for values not shaped
                                                     like masked ones */
    uint64_t n[REKEY_IDS_MAX][REKEY_COLUMNS_MAX]; /* values under id[i] in column j */
    size_t count;                                 /* ids in use */
    uint64_t beyond;                              /* values under ids past REKEY_IDS_MAX */
};

/* One table whose masked columns are re-masked. */
struct rekey_table {
    const char *name;                               /* its name as the function uses it */
    int present;                                    /* the table exists */
    char quoted[REKEY_NAME_MAX];                    /* its name as the server quotes it */
    char column[REKEY_COLUMNS_MAX][REKEY_NAME_MAX]; /* the masked columns, quoted */
    long limit[REKEY_COLUMNS_MAX];                  /* their varchar length, 0 for none */
    size_t ncols;                                   /* columns in use */
    char (*leaf)[REKEY_NAME_MAX];                   /* owned: the heap relations holding its
                                                       rows (itself, or its partitions), quoted */
    size_t nleaves;                                 /* entries of leaf */
    size_t skipped_leaves;                          /* partitions that are not heap tables
                                                       (foreign tables): not re-masked */
    uint64_t rows;                                  /* rows, when counted */
    uint64_t to_visit;                              /* rows with a value not under the current
                                                       key id, when counted */
    struct rekey_ids ids;                           /* values by key id, when counted */
};

/* What the work did; counted as it goes. */
struct rekey_stats {
    uint64_t rows_visited;      /* rows read that hold a value not under the current key id */
    uint64_t rows_written;      /* rows re-masked and committed */
    uint64_t values_remasked;   /* values re-masked and committed */
    uint64_t rows_changed;      /* rows changed by someone else between read and write: left
                                   for the next pass */
    uint64_t values_unknown;    /* values under a key id the set lacks */
    uint64_t values_not_masked; /* values not shaped like masked ones */
    uint64_t values_failed;     /* values that do not authenticate under their id's key */
    uint64_t values_too_long;   /* values whose re-masked form exceeds their column */
    uint64_t transactions;      /* committed re-masking transactions */
    uint64_t retries;           /* failed statements tried again */
    int64_t longest_txn_ms;     /* the longest re-masking transaction, BEGIN to COMMIT */
    int64_t yielded_ms;         /* time paused for the functions (rekey_yield) */
};

/* One run. */
struct rekey {
    PGconn *conn;                               /* NULL while not connected */
    PGresult *last_error;                       /* owned: the last failed statement's result, for
                                                   its SQLSTATE; NULL when none */
    const struct cli_db *db;                    /* the settings: connection and keys; borrowed */
    const struct keyset *keys;                  /* db's; borrowed */
    char prefix[MASK_KEY_ID_MAX + 2];           /* the current key id and ':' */
    struct rekey_table table[REKEY_TABLES_MAX]; /* user_logins, login_etl_rejected */
    size_t ntables;                             /* entries of table */
    long batch_rows;                            /* --batch: most rows one transaction writes */
    long target_rows;                           /* rows the next transaction writes at most:
                                                   halved after one that took over max_txn_ms
                                                   / 2, doubled (up to batch_rows) after one
                                                   under max_txn_ms / 4 */
    long max_rate;                              /* --max-rate: rows visited per second, 0 none */
    long busy_share;                            /* --busy-share: percent of the time the run
                                                   works while other sessions write */
    uint64_t next_xid;                          /* rekey_db_next_xid when last read, 0 never */
    uint64_t own_xids;                          /* transaction ids the run's writes took */
    uint64_t own_xids_seen;                     /* own_xids when next_xid was read */
    int64_t busy_until;                         /* clock_mono_ms until which the database
                                                   counts as busy: REKEY_BUSY_MS after another
                                                   session's write was last seen */
    int busy;                                   /* the database is busy: the run pauses after
                                                   each range */
    long max_txn_ms;                            /* a transaction's lock_timeout, and twice the
                                                   duration batches are sized for */
    struct rekey_stats st;                      /* so far */
    uint64_t total;                             /* rows to visit, counted before the work */
    int64_t started_ms;                         /* clock_mono_ms when the work began */
    int64_t finished_ms;                        /* clock_mono_ms when the work ended */
    int64_t progress_ms;                        /* clock_mono_ms of the last progress line */
    volatile sig_atomic_t *stop;                /* set by SIGINT / SIGTERM: end after this txn */
    struct buf sql;                             /* statement text being built */
    struct buf arg[1 + 2 * REKEY_COLUMNS_MAX];  /* the UPDATE's array parameters */
    char why[ERR_LEN];                          /* the failure that stopped the run */
};

/* --- rekey_db.c --------------------------------------------------------------------------- */

/* Opens the connection (cli_db_connect, application_name login-etl-rekey),
 * closing any before.  Returns RC_OK,
 * or RC_DB / RC_NOMEM with r->why filled (libpq's own words and SQLSTATEs,
 * never the server's text). */
rc_t rekey_db_connect(struct rekey *r);

/* Closes the connection; cannot fail. */
void rekey_db_close(struct rekey *r);

/* Runs one statement with text parameters (n may be 0) and checks its status
 * is `want`; *res gets the result when res is not NULL (the caller clears
 * it), else it is cleared here.  Returns RC_OK, or RC_DB with r->why naming
 * `what` and the SQLSTATE. */
rc_t rekey_db_exec(struct rekey *r, const char *what, const char *sql, int n,
                   const char *const *params, ExecStatusType want, PGresult **res);

/* The SQLSTATE of the last failed statement ("" when none is known: the
 * connection failed before an answer), for the retry decision; cannot fail. */
const char *rekey_db_sqlstate(const struct rekey *r);

/* Returns 1 when the last failure may pass if tried again (a lost
 * connection, a server restarting or full, a lock or statement timeout, a
 * serialization failure or deadlock), 0 when it will not (refused
 * credentials, no such database, no privilege, anything else); cannot
 * fail. */
int rekey_db_retryable(const struct rekey *r);

/* Finds the tables, their masked columns and their heap relations.
 * Returns RC_OK or RC_DB / RC_NOMEM with r->why filled. */
rc_t rekey_db_discover(struct rekey *r);

/* Counts t's rows and those with a value not under the current key id.
 * Returns RC_OK or RC_DB with r->why filled. */
rc_t rekey_db_count_rows(struct rekey *r, struct rekey_table *t);

/* Counts t's values by key id (t->ids).  Returns RC_OK or RC_DB. */
rc_t rekey_db_count_ids(struct rekey *r, struct rekey_table *t);

/* Reads the size of a heap relation in blocks into *blocks.  Returns RC_OK
 * or RC_DB. */
rc_t rekey_db_blocks(struct rekey *r, const char *leaf, uint64_t *blocks);

/* Parses a count the server returned (decimal, not negative) into *out.
 * Returns RC_OK, or RC_DB with r->why filled. */
rc_t rekey_db_count(struct rekey *r, const char *s, uint64_t *out);

/* Reads into *next the transaction id the server will assign next (the
 * xmax of a fresh snapshot): it moves on with every transaction that
 * writes, in any session.  Returns RC_OK or RC_DB. */
rc_t rekey_db_next_xid(struct rekey *r, uint64_t *next);

/* Frees what discovery allocated; cannot fail. */
void rekey_db_free_tables(struct rekey *r);

/* --- rekey_scan.c ------------------------------------------------------------------------- */

/* Re-masks every value of t under a retired key of the set, relation by
 * relation, in passes (rekey_scan.c says how), counting into r->st and
 * calling rekey_progress after each batch.  Returns RC_OK (also when
 * r->stop was set: the caller looks), or RC_DB / RC_NOMEM / RC_CRYPTO with
 * r->why filled after retries failed for REKEY_RETRY_MS. */
rc_t rekey_scan_table(struct rekey *r, struct rekey_table *t);

/* --- rekey_report.c ----------------------------------------------------------------------- */

#define REKEY_NUM_LEN 32 /* a count with thousands separators */

/* What a run does. */
enum rekey_mode {
    REKEY_MODE_RUN,     /* re-mask, then count */
    REKEY_MODE_DRY_RUN, /* count only */
    REKEY_MODE_VERIFY   /* count, and fail when anything is under another key id */
};

/* Writes v with thousands separators into out; returns out.  Cannot fail. */
const char *rekey_num(uint64_t v, char out[REKEY_NUM_LEN]);

/* Prints a progress line on stderr when the last was printed at least 2 s
 * ago; cannot fail. */
void rekey_progress(struct rekey *r);

/* Counts every present table by key id and prints the tables to out (with
 * the row counts for the dry run).  *left gets the values under other key
 * ids.  Returns RC_OK or the database failure. */
rc_t rekey_report(FILE *out, struct rekey *r, enum rekey_mode mode, uint64_t *left);

/* Prints the summary line of a run that went to its end on stdout; returns
 * its exit status: REKEY_EXIT_DONE when nothing is left under another key
 * id (left == 0), else REKEY_EXIT_LEFT. */
int rekey_summary(const struct rekey *r, uint64_t left);

#endif
