/* reprocess.h - `bootstrap reprocess`: the records kept in quarantine
 * (login_etl_rejected, pg_quarantine.c) validated again under the current
 * rules, and the ones now valid loaded into user_logins exactly once and
 * taken out of quarantine (docs/operations.md, "The quarantine of rejected
 * records").
 *
 *   bootstrap reprocess            loads what is valid now
 *   bootstrap reprocess --dry-run  counts by reason what would load; changes nothing
 *
 * It reads the function's settings as the function does (cli_db.h:
 * DATABASE_URL or the PG* variables, DB_AUTH=iam, MASKING_KEY,
 * MASKING_KEY_ID, MASKING_KEYS_RETIRED): the keys unmask the
 * stored bodies (under the key their prefix names) and mask the new rows
 * with the current key.  Each record is taken out of quarantine and its row
 * written by one statement pair behind a savepoint, the DELETE first: a
 * record another run took meanwhile is skipped, and a row the database
 * still refuses stays in quarantine.  The message ids are in the ledger
 * already, so the queue can never bring those messages back. */
#ifndef REPROCESS_H
#define REPROCESS_H

/* The exit statuses of `bootstrap reprocess`. */
enum reprocess_exit {
    REPROCESS_EXIT_DONE = 0,   /* every record valid now was loaded (or counted: --dry-run) */
    REPROCESS_EXIT_FAILED = 1, /* the database or a stored body failed: what was committed
                                  stays; run it again */
    REPROCESS_EXIT_USAGE = 2   /* usage or settings: nothing was changed */
};

/* Runs `bootstrap reprocess ...` (argv[1] is "reprocess").  Returns an enum
 * reprocess_exit, the process's exit status. */
int reprocess_cli(int argc, char **argv);

#endif
