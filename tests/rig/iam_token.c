/* iam_token.c - a test rig around rds_iam.c, driven by
 * tests/integration/test_rds_iam.py.
 *
 *   iam_token            reads requests on stdin, one a line, fields separated
 *                        by tabs, and answers one a line:
 *       HOST PORT USER REGION EPOCH ACCESS_KEY SECRET_KEY [SESSION_TOKEN]
 *                        -> the token rds_iam_sign makes at Unix time EPOCH,
 *                           or ERR RC_NAME: message
 *   iam_token bench N    signs N tokens (with a session token) and prints
 *                        "sign_us=<microseconds per token>". */
#define _DEFAULT_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "buf.h"
#include "rds_iam.h"

#define FIELDS 8

/* Signs n tokens and prints the mean time of one.  Returns the exit status. */
static int bench(long n)
{
    /* A session token of the size Lambda's role credentials have. */
    char session[1100];
    struct buf token;
    char err[ERR_LEN];
    struct timespec a, b;
    int status = 0;

    memset(session, 'Q', sizeof session - 1);
    session[sizeof session - 1] = '\0';
    struct rds_iam_creds c = {"ASIAEXAMPLEEXAMPLE01", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
                              session};
    buf_init(&token, 64 * 1024);
    clock_gettime(CLOCK_MONOTONIC, &a);
    for (long i = 0; i < n; i++) {
        if (rds_iam_sign("db.cluster-abc.eu-west-1.rds.amazonaws.com", 5432, "login_etl",
                         "eu-west-1", &c, 1767225600 + i, &token, err) != RC_OK) {
            fprintf(stderr, "%s\n", err);
            status = 1;
            break;
        }
    }
    clock_gettime(CLOCK_MONOTONIC, &b);
    double us = ((double)(b.tv_sec - a.tv_sec) * 1e6 + (double)(b.tv_nsec - a.tv_nsec) / 1e3) /
                (double)(n > 0 ? n : 1);
    printf("sign_us=%.2f token_bytes=%zu\n", us, token.len);
    buf_wipe(&token);
    return status;
}

int main(int argc, char **argv)
{
    char line[16384];
    struct buf token;
    char err[ERR_LEN];

    if (argc == 3 && strcmp(argv[1], "bench") == 0)
        return bench(strtol(argv[2], NULL, 10));
    buf_init(&token, 64 * 1024);
    while (fgets(line, sizeof line, stdin)) {
        char *f[FIELDS] = {0};
        size_t nf = 0;
        line[strcspn(line, "\n")] = '\0';
        for (char *p = line; nf < FIELDS;) {
            f[nf++] = p;
            char *tab = strchr(p, '\t');
            if (!tab)
                break;
            *tab = '\0';
            p = tab + 1;
        }
        if (nf < 7) {
            printf("ERR RC_INVALID: want 7 or 8 tab-separated fields\n");
            continue;
        }
        struct rds_iam_creds c = {f[5], f[6], nf == 8 ? f[7] : NULL};
        rc_t rc = rds_iam_sign(f[0], (unsigned)strtoul(f[1], NULL, 10), f[2], f[3], &c,
                               (time_t)strtoll(f[4], NULL, 10), &token, err);
        if (rc)
            printf("ERR %s: %s\n", rc_strerror(rc), err);
        else
            printf("%s\n", token.data);
        fflush(stdout);
    }
    buf_wipe(&token);
    return 0;
}
