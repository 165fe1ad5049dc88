/* rekey.h - `bootstrap rekey`: after the masking key was rotated, re-masks
 * in place every stored value still under a retired key, so that equal
 * inputs give equal values again across the rotation and the old key can be
 * retired (docs/operations.md, "Rotating the masking key").
 *
 *   bootstrap rekey [--batch ROWS] [--busy-share PERCENT] [--max-rate ROWS_PER_S]
 *                   [--max-txn-ms MS]
 *   bootstrap rekey --dry-run      counts the values by key id, changes nothing
 *   bootstrap rekey --verify       fails while any value is under another key id
 *
 * It reads the function's own settings (DATABASE_URL or the PG* variables,
 * DB_AUTH=iam, MASKING_KEY, MASKING_KEY_ID, MASKING_KEYS_RETIRED; keyset.h),
 * runs online next to the functions (short transactions, row locks only,
 * working a fifth of the time while they load) and
 * can be stopped or killed at any moment and run again (rekey_scan.c says
 * why).  Progress goes to stderr, the result to stdout. */
#ifndef REKEY_H
#define REKEY_H

/* The exit statuses of `bootstrap rekey`. */
enum rekey_exit {
    REKEY_EXIT_DONE = 0,   /* every masked value is under the current key (run, --verify), or
                              the counts were printed (--dry-run) */
    REKEY_EXIT_LEFT = 1,   /* values remain under other key ids: --verify found some, or the
                              run could not re-mask them all (see its summary) */
    REKEY_EXIT_USAGE = 2,  /* usage or configuration error: nothing was changed */
    REKEY_EXIT_STOPPED = 3 /* stopped before the end (the database failed past the retries,
                              SIGINT or SIGTERM): what was committed stays; run it again */
};

/* Runs `bootstrap rekey ...` (argv[1] is "rekey").  Returns an enum
 * rekey_exit, the process's exit status.  Takes nothing over. */
int rekey_cli(int argc, char **argv);

#endif
