/* stages.c - where the function's time goes, for one SQS event: times each
 * stage of the handler on its own, then the handler as it really runs (the
 * stages overlapped with the database), without changing the function.
 *
 *   stages EVENT_FILE [REPEATS]
 *
 * Linked against the release objects (gcc -O2, as shipped); tests/bench/bench.py
 * builds and runs it.  Settings come from the environment as in Lambda:
 * MASKING_KEY, MASKING_KEY_ID and libpq's PG* variables (a test server whose
 * user_logins and login_etl_ledger_v3 tables it empties between repeats).
 *
 * Prints one JSON object a line, for bench.py:
 *   {"stage": NAME, "ms": median wall time, "min_ms": ..., "records": N, ...}
 * Stages:
 *   parse     sqs_parse of the whole event (records, messageIds, bodies)
 *   dedupe    idset_put of every messageId (repeats within the batch)
 *   validate  login_parse of every body: inner JSON and every rule
 *   mask      row_build of every valid row: its columns, ip and device_id masked
 *   encode    pg_batch_add of every row with no server (binary COPY tuples only)
 *   write     pg_batch_add of the finished rows + pg_batch_commit to the server
 *             (rows COPY, ledger COPY, COMMIT); also the server backend's CPU
 *   handler   etl_handle: all of the above as the function runs them, the
 *             rows streamed while the rest of the batch is parsed and masked
 * A median is taken over REPEATS runs (default 5); the write and handler
 * stages start each repeat from empty tables. */
#define _DEFAULT_SOURCE
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <libpq-fe.h>

#include "clock.h"
#include "etl.h"
#include "idset.h"
#include "log.h"
#include "login.h"
#include "mask.h"
#include "pg.h"
#include "row.h"
#include "sqs.h"

#define MAX_REPEATS 50

/* A finished row kept for the write stage: the pg_row points into `text`. */
struct kept_row {
    struct pg_row row;
    const char *message_id;
    size_t message_id_len;
    int64_t sent_ms;
    char *text; /* owned: user_id, device_type, locale, masked ip, masked device_id */
};

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double cpu_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* CPU time a process has run, from /proc/PID/schedstat (ns resolution);
 * -1 when it cannot be read. */
static double proc_cpu_s(long pid)
{
    char path[64];
    unsigned long long ns = 0;
    snprintf(path, sizeof path, "/proc/%ld/schedstat", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    int ok = fscanf(f, "%llu", &ns) == 1;
    fclose(f);
    return ok ? (double)ns / 1e9 : -1;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static double minimum(const double *v, int n)
{
    double m = v[0];
    for (int i = 1; i < n; i++)
        m = v[i] < m ? v[i] : m;
    return m;
}

static void report(const char *stage, double *wall, int n, size_t records, const char *extra)
{
    double lo = minimum(wall, n);
    printf("{\"stage\":\"%s\",\"ms\":%.3f,\"min_ms\":%.3f,\"records\":%zu,\"repeats\":%d%s}\n",
           stage, median(wall, n) * 1e3, lo * 1e3, records, n, extra ? extra : "");
    fflush(stdout);
}

static void die(const char *what, const char *why)
{
    fprintf(stderr, "stages: %s: %s\n", what, why);
    exit(1);
}

/* Reads a whole file into a NUL-terminated malloc'd buffer (caller frees). */
static char *read_file(const char *path, size_t *len)
{
    struct stat st;
    int fd = open(path, O_RDONLY);
    if (fd < 0 || fstat(fd, &st) != 0)
        die(path, "cannot open");
    char *p = malloc((size_t)st.st_size + 1);
    if (!p)
        die(path, "out of memory");
    size_t got = 0;
    while (got < (size_t)st.st_size) {
        ssize_t r = read(fd, p + got, (size_t)st.st_size - got);
        if (r <= 0)
            die(path, "cannot read");
        got += (size_t)r;
    }
    close(fd);
    p[got] = '\0';
    *len = got;
    return p;
}

/* Runs one SQL statement on the side connection (emptying the tables). */
static void admin(PGconn *c, const char *sql)
{
    PGresult *r = PQexec(c, sql);
    ExecStatusType st = PQresultStatus(r);
    PQclear(r);
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK)
        die(sql, PQerrorMessage(c));
}

/* The pid of the sink's server backend (application_name login-etl), or -1. */
static long backend_pid(PGconn *c)
{
    long pid = -1;
    PGresult *r = PQexec(c, "SELECT pid FROM pg_stat_activity WHERE application_name = "
                            "'login-etl' ORDER BY backend_start DESC LIMIT 1");
    if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1)
        pid = strtol(PQgetvalue(r, 0, 0), NULL, 10);
    PQclear(r);
    return pid;
}

static char *dup_text(char **at, const char *p, size_t n)
{
    if (!p)
        return NULL;
    char *out = *at;
    memcpy(out, p, n);
    *at += n;
    return out;
}

int main(int argc, char **argv)
{
    char err[ERR_LEN];
    double wall[MAX_REPEATS];
    size_t len;

    if (argc < 2)
        die("usage", "stages EVENT_FILE [REPEATS]");
    int repeats = argc > 2 ? atoi(argv[2]) : 5;
    if (repeats < 1 || repeats > MAX_REPEATS)
        die("REPEATS", "1 to 50");
    char *event = read_file(argv[1], &len);
    const char *hex = getenv("MASKING_KEY"), *key_id = getenv("MASKING_KEY_ID");
    if (!hex || !key_id)
        die("settings", "MASKING_KEY and MASKING_KEY_ID must be set");
    struct mask_key *key = mask_key_new(hex, strlen(hex), key_id, err);
    if (!key)
        die("MASKING_KEY", err);
    struct logger quiet;
    log_init(&quiet, "ERROR", NULL, open("/dev/null", O_WRONLY));

    /* parse */
    struct sqs_event ev;
    sqs_init(&ev);
    for (int r = 0; r < repeats; r++) {
        double t = now_s();
        if (sqs_parse(&ev, event, len, err) != RC_OK)
            die("sqs_parse", err);
        wall[r] = now_s() - t;
    }
    size_t n = ev.n;
    report("parse", wall, repeats, n, NULL);

    /* dedupe */
    struct idset seen;
    idset_init(&seen);
    for (int r = 0; r < repeats; r++) {
        double t = now_s();
        if (idset_reset(&seen, n) != RC_OK)
            die("idset", "out of memory");
        for (size_t i = 0; i < n; i++)
            idset_put(&seen, ev.records[i].message_id, ev.records[i].message_id_len, i);
        wall[r] = now_s() - t;
    }
    report("dedupe", wall, repeats, n, NULL);

    /* validate; the last repeat keeps the valid rows' values for mask and write */
    struct login_parser lp;
    login_parser_init(&lp);
    struct kept_row *kept = calloc(n ? n : 1, sizeof *kept);
    struct login_row *lr = calloc(n ? n : 1, sizeof *lr);
    if (!kept || !lr)
        die("rows", "out of memory");
    size_t valid = 0;
    int64_t start_ms = (int64_t)time(NULL) * 1000;
    for (int r = 0; r < repeats; r++) {
        valid = 0;
        double t = now_s();
        for (size_t i = 0; i < n; i++) {
            const struct sqs_record *rec = &ev.records[i];
            struct login_row row;
            enum login_reason why;
            if (login_parse(&lp, rec->body, rec->body_len, rec->body_flags, rec->sent_ms,
                            rec->sent_bad, start_ms, &row, &why) != RC_OK)
                die("login_parse", "out of memory");
            if (why != LOGIN_OK || r != repeats - 1)
                continue;
            /* The row borrows from the parser's scratch until the next body:
             * copy what the later stages need. */
            size_t need = row.user_id_len + row.device_type_len + row.locale_len +
                          row.device_id_len + 2 * MASK_OUTPUT_MAX;
            char *text = malloc(need), *at = text;
            if (!text)
                die("rows", "out of memory");
            lr[valid] = row;
            lr[valid].user_id = dup_text(&at, row.user_id, row.user_id_len);
            lr[valid].device_type = dup_text(&at, row.device_type, row.device_type_len);
            lr[valid].locale = dup_text(&at, row.locale, row.locale_len);
            lr[valid].device_id = dup_text(&at, row.device_id, row.device_id_len);
            kept[valid].text = text;
            kept[valid].message_id = rec->message_id;
            kept[valid].message_id_len = rec->message_id_len;
            kept[valid].sent_ms = rec->sent_ms;
            valid++;
        }
        wall[r] = now_s() - t;
    }
    char extra[256];
    snprintf(extra, sizeof extra, ",\"valid\":%zu", valid);
    report("validate", wall, repeats, n, extra);

    /* mask: row_build, as the handler calls it, into each kept row's text */
    for (int r = 0; r < repeats; r++) {
        double t = now_s();
        for (size_t i = 0; i < valid; i++) {
            const struct login_row *l = &lr[i];
            char *at = kept[i].text + l->user_id_len + l->device_type_len + l->locale_len +
                       l->device_id_len;
            enum login_reason why;
            if (row_build(key, l, &kept[i].row, at, at + MASK_OUTPUT_MAX, &why) != RC_OK)
                die("row_build", "masking failed");
            if (why != LOGIN_OK)
                die("row_build", "a masked device_id would not fit its column: not bench data");
        }
        wall[r] = now_s() - t;
    }
    report("mask", wall, repeats, n, extra);

    /* encode: a sink whose server refuses the connection only encodes */
    struct pg_sink *nowhere =
        pg_sink_new("host=127.0.0.1 port=1 user=nobody dbname=none connect_timeout=1", &quiet);
    if (!nowhere)
        die("pg_sink_new", "out of memory");
    for (int r = 0; r < repeats; r++) {
        pg_batch_begin(nowhere, clock_mono_ms() + 60000);
        double t = now_s();
        for (size_t i = 0; i < valid; i++)
            if (pg_batch_add(nowhere, kept[i].message_id, kept[i].message_id_len, kept[i].sent_ms,
                             &kept[i].row) != RC_OK)
                die("pg_batch_add", "failed");
        wall[r] = now_s() - t;
        pg_batch_abort(nowhere);
    }
    pg_sink_free(nowhere);
    report("encode", wall, repeats, n, extra);

    /* write: the finished rows to the server, from empty tables each time */
    PGconn *side = PQconnectdb("");
    if (PQstatus(side) != CONNECTION_OK)
        die("side connection (PG* variables)", PQerrorMessage(side));
    struct pg_sink *sink = pg_sink_new("", &quiet);
    uint8_t *dup = malloc(valid ? valid : 1);
    double add_s[MAX_REPEATS], server_s[MAX_REPEATS], client_s[MAX_REPEATS];
    if (!sink || !dup)
        die("sink", "out of memory");
    long pid = -1;
    /* repeat 0 connects and creates the tables; it is not counted */
    for (int r = 0; r <= repeats; r++) {
        if (r > 0)
            admin(side, "TRUNCATE user_logins, login_etl_ledger_v3");
        double sv = pid > 0 ? proc_cpu_s(pid) : 0, cl = cpu_s();
        pg_batch_begin(sink, clock_mono_ms() + 120000);
        double t = now_s();
        for (size_t i = 0; i < valid; i++)
            if (pg_batch_add(sink, kept[i].message_id, kept[i].message_id_len, kept[i].sent_ms,
                             &kept[i].row) != RC_OK)
                die("pg_batch_add", "failed");
        double t_add = now_s();
        if (pg_batch_commit(sink, dup, err) != RC_OK)
            die("pg_batch_commit", err);
        double t_end = now_s();
        if (r == 0) {
            pid = backend_pid(side);
            continue;
        }
        wall[r - 1] = t_end - t;
        add_s[r - 1] = t_add - t;
        client_s[r - 1] = cpu_s() - cl;
        server_s[r - 1] = pid > 0 ? proc_cpu_s(pid) - sv : -1;
    }
    snprintf(extra, sizeof extra,
             ",\"valid\":%zu,\"add_ms\":%.3f,\"server_cpu_ms\":%.3f,\"client_cpu_ms\":%.3f", valid,
             median(add_s, repeats) * 1e3, median(server_s, repeats) * 1e3,
             median(client_s, repeats) * 1e3);
    report("write", wall, repeats, n, extra);
    pg_sink_free(sink);

    /* handler: etl_handle as the runtime calls it */
    struct etl *etl = NULL;
    const char *err_type = NULL;
    etl = etl_new(&quiet, err, &err_type);
    if (!etl)
        die("etl_new", err);
    struct buf answer;
    buf_init(&answer, BUF_PAYLOAD_MAX);
    struct rt_invocation inv = {.event = event,
                                .event_len = len,
                                .request_id = "bench",
                                .function_arn = "",
                                .trace_id = ""};
    struct rt_error rerr;
    pid = -1;
    for (int r = 0; r <= repeats; r++) {
        admin(side, "TRUNCATE user_logins, login_etl_ledger_v3");
        buf_reset(&answer);
        inv.deadline_ms = (int64_t)time(NULL) * 1000 + 120000;
        double sv = pid > 0 ? proc_cpu_s(pid) : 0, cl = cpu_s();
        double t = now_s();
        if (etl_handle(etl, &inv, &answer, &rerr) != RC_OK)
            die("etl_handle", rerr.message);
        double t_end = now_s();
        if (r == 0) {
            pid = backend_pid(side);
            continue;
        }
        wall[r - 1] = t_end - t;
        client_s[r - 1] = cpu_s() - cl;
        server_s[r - 1] = pid > 0 ? proc_cpu_s(pid) - sv : -1;
    }
    snprintf(extra, sizeof extra, ",\"valid\":%zu,\"server_cpu_ms\":%.3f,\"client_cpu_ms\":%.3f",
             valid, median(server_s, repeats) * 1e3, median(client_s, repeats) * 1e3);
    report("handler", wall, repeats, n, extra);

    buf_free(&answer);
    etl_free(etl);
    PQfinish(side);
    for (size_t i = 0; i < valid; i++)
        free(kept[i].text);
    free(kept);
    free(lr);
    free(dup);
    login_parser_free(&lp);
    idset_free(&seen);
    sqs_free(&ev);
    mask_key_free(key);
    free(event);
    return 0;
}
