/* pg_conn.c - the Postgres sink's connection: opening it, waiting on its
 * socket, reading a command's results (pg_drain), running statements
 * (pg_run), and naming a failure without quoting the server (pg_describe,
 * pg_fail).
 *
 * Every wait is a poll() bounded by the batch's give-up time, and the
 * connection runs in libpq's non-blocking mode, so that a database that
 * hangs (a held lock, a black-holed network) cannot make the function miss
 * its deadline. */
#define _DEFAULT_SOURCE
#include "pg_int.h"

#include <limits.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>

#include "clock.h"

#define WAIT_SLICE_MS 100 /* longest wait before asking libpq again (wait_socket) */

/* How long wait_socket may wait. */
enum slice {
    WAIT_WHOLE, /* until the socket is ready or the give-up time */
    WAIT_SLICED /* WAIT_SLICE_MS at most, then the caller asks libpq again */
};

/* Is this SQLSTATE about the data of a row rather than the database: a data
 * exception (class 22), an integrity constraint (23: CHECK, NOT NULL, a
 * unique index an operator added), a trigger's RAISE EXCEPTION (P0001) or a
 * per-row limit such as an index entry over the b-tree maximum (54000)?
 * Cannot fail. */
int pg_row_data_error(const char *state)
{
    return state && (strncmp(state, "22", 2) == 0 || strncmp(state, "23", 2) == 0 ||
                     strcmp(state, "P0001") == 0 || strcmp(state, "54000") == 0);
}

/* Writes "<what>: SQLSTATE x table t constraint c" for a server error into
 * out.  The server's message text, DETAIL and CONTEXT are never used: a
 * trigger's RAISE or a constraint's DETAIL can quote the row's values.
 * Without a server error, libpq's own message (first line) is used; the
 * connection asks libpq to reduce server errors in it to severity and
 * SQLSTATE (PQERRORS_SQLSTATE), so a server's text cannot reach it either.
 * Cannot fail. */
void pg_describe(const struct pg_sink *s, const PGresult *res, const char *what, char *out,
                 size_t len)
{
    const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    if (state) {
        const char *table = PQresultErrorField(res, PG_DIAG_TABLE_NAME);
        const char *constraint = PQresultErrorField(res, PG_DIAG_CONSTRAINT_NAME);
        snprintf(out, len, "%s: SQLSTATE %.5s%s%.64s%s%.64s", what, state, table ? " table " : "",
                 table ? table : "", constraint ? " constraint " : "",
                 constraint ? constraint : "");
        return;
    }
    const char *msg = s->conn ? PQerrorMessage(s->conn) : "";
    size_t msg_len = strcspn(msg, "\n");
    if (msg_len > 180)
        msg_len = 180;
    snprintf(out, len, "%s: %.*s", what, msg_len ? (int)msg_len : 15,
             msg_len ? msg : "connection lost");
    /* libpq messages end in a newline; a log line should not. */
    size_t n = strlen(out);
    while (n && out[n - 1] == ' ')
        out[--n] = '\0';
}

/* Marks the current attempt broken with a reason (see pg_describe; res may
 * be NULL).  SQLSTATE classes that mean "the server or the connection went
 * away" are retryable.  Keeps the first reason.  Cannot fail. */
void pg_fail(struct pg_sink *s, const PGresult *res, const char *what)
{
    if (s->tx.phase == PH_BROKEN)
        return;
    s->tx.phase = PH_BROKEN;
    const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    snprintf(s->sqlstate, sizeof s->sqlstate, "%s", state ? state : "");
    s->retryable = !s->conn || PQstatus(s->conn) == CONNECTION_BAD ||
                   (state && (strncmp(state, "08", 2) == 0 || strncmp(state, "57P", 3) == 0 ||
                              strcmp(state, "40001") == 0 || strcmp(state, "40P01") == 0));
    pg_describe(s, res, what, s->why, sizeof s->why);
}

/* libpq's notice receiver: a NOTICE or WARNING from the server (a trigger's
 * RAISE NOTICE) becomes one log line with its severity and SQLSTATE; its
 * text, which can quote values, is dropped.  Without a receiver libpq would
 * print the text to stderr, outside the JSON log. */
static void on_notice(void *arg, const PGresult *res)
{
    struct pg_sink *s = arg;
    const char *severity = PQresultErrorField(res, PG_DIAG_SEVERITY_NONLOCALIZED);
    const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
    int warning = severity && strcmp(severity, "WARNING") == 0;
    log_at(s->lg, warning ? LOG_WARN : LOG_DEBUG, "database notice",
           LF_STR("severity", severity ? severity : "unknown"),
           LF_STR("sqlstate", state ? state : ""));
}

/* Waits until the socket is ready for `events` or the give-up time.
 * WAIT_SLICED returns after WAIT_SLICE_MS at most even when nothing
 * happened, so that the caller asks libpq again: libpq that runs out of
 * memory while parsing a message already in its buffer (a COPY start)
 * leaves the message there and waits for more bytes, which the server,
 * waiting for us, never sends (found by tests/integration/test_faults.py).
 * Returns RC_OK (ready, a slice over, or interrupted: the caller re-checks)
 * or RC_TIMEOUT. */
static rc_t wait_socket(struct pg_sink *s, short events, enum slice slice)
{
    int64_t left = s->give_up_at - clock_mono_ms();
    if (left <= 0)
        return RC_TIMEOUT;
    int ms = left > INT_MAX ? INT_MAX : (int)left;
    if (slice == WAIT_SLICED && ms > WAIT_SLICE_MS)
        ms = WAIT_SLICE_MS;
    struct pollfd p = {.fd = PQsocket(s->conn), .events = events};
    int r = poll(&p, 1, ms);
    if (r == 0)
        return slice == WAIT_SLICED && clock_mono_ms() < s->give_up_at ? RC_OK : RC_TIMEOUT;
    return RC_OK; /* r < 0 is EINTR or a closed socket: libpq reports the latter */
}

/* Waits, a slice at most, for something to read.  Returns as wait_socket. */
rc_t pg_wait_readable(struct pg_sink *s)
{
    return wait_socket(s, POLLIN, WAIT_SLICED);
}

/* Pushes queued output to the server, waiting while the socket is full.
 * Returns RC_OK, RC_TIMEOUT or RC_DB. */
rc_t pg_flush(struct pg_sink *s)
{
    for (;;) {
        int f = PQflush(s->conn);
        if (f == 0)
            return RC_OK;
        if (f < 0)
            return RC_DB;
        /* Read too: a server that reports an error stops reading our data. */
        if (wait_socket(s, POLLOUT | POLLIN, WAIT_SLICED) != RC_OK)
            return RC_TIMEOUT;
        if (PQconsumeInput(s->conn) == 0)
            return RC_DB;
    }
}

/* Reads the results of the command in flight, in order, and hands each to
 * take(s, res, ctx), which owns it (take NULL: each is freed).  With
 * IO_BLOCK it waits (by the give-up time) until the command is complete;
 * with IO_POLL it reads what has arrived (pushing out what libpq still holds
 * of the command first) and returns.  *drained (NULL allowed with IO_BLOCK)
 * says whether the command's last result was read.  When the connection
 * fails on the way, the attempt is marked broken as `what` ("timeout" when
 * the give-up time came), unless `what` is NULL (the caller names the
 * failure itself).  Returns RC_OK, RC_TIMEOUT (IO_BLOCK only) or RC_DB. */
rc_t pg_drain(struct pg_sink *s, enum io_wait wait, pg_take_fn take, void *ctx, const char *what,
              enum drained *drained)
{
    rc_t rc;

    if (drained)
        *drained = DRAINED_SO_FAR;
    for (;;) {
        rc = wait == IO_BLOCK ? pg_flush(s) : PQflush(s->conn) < 0 ? RC_DB : RC_OK;
        if (rc == RC_OK && PQconsumeInput(s->conn) == 0)
            rc = RC_DB;
        if (rc)
            break;
        if (PQisBusy(s->conn)) {
            if (wait == IO_POLL)
                return RC_OK;
            if ((rc = pg_wait_readable(s)) != RC_OK)
                break;
            continue;
        }
        PGresult *res = PQgetResult(s->conn);
        if (!res) {
            if (drained)
                *drained = DRAINED_ALL;
            return RC_OK;
        }
        if (take)
            take(s, res, ctx);
        else
            PQclear(res);
    }
    if (what)
        pg_fail(s, NULL, rc == RC_TIMEOUT ? "timeout" : what);
    return rc;
}

/* What pg_run expects of a statement's results, and keeps of them. */
struct run_read {
    ExecStatusType expect; /* every result's status */
    PGresult **keep;       /* NULL, or where the last result goes */
    rc_t rc;               /* RC_DB once a result had another status */
};

/* pg_take_fn of pg_run. */
static void take_run(struct pg_sink *s, PGresult *res, void *ctx)
{
    struct run_read *r = ctx;

    if (PQresultStatus(res) != r->expect && !r->rc) {
        pg_fail(s, res, "query");
        r->rc = RC_DB;
    }
    if (r->keep && !r->rc) {
        PQclear(*r->keep);
        *r->keep = res;
    } else {
        PQclear(res);
    }
}

/* Runs SQL (several statements allowed) and checks that each result has the
 * expected status.  With `keep`, the last result is handed to the caller, who
 * frees it with PQclear.  Returns RC_OK, RC_TIMEOUT or RC_DB (the attempt is
 * then marked broken, and *keep is NULL). */
rc_t pg_run(struct pg_sink *s, const char *sql, ExecStatusType expect, PGresult **keep)
{
    struct run_read r = {expect, keep, RC_OK};
    rc_t rc;

    if (keep)
        *keep = NULL;
    if (!PQsendQuery(s->conn, sql)) {
        pg_fail(s, NULL, "send");
        return RC_DB;
    }
    rc = pg_drain(s, IO_BLOCK, take_run, &r, "query", NULL);
    if (rc == RC_OK)
        rc = r.rc;
    /* A result kept for the caller (COMMIT's, before the connection died)
     * must be freed. */
    if (rc && keep) {
        PQclear(*keep);
        *keep = NULL;
    }
    return rc;
}

/* Did the server refuse the credentials (a rotated password)?  libpq keeps
 * no SQLSTATE for a failed connection where we can ask for it; with
 * PQERRORS_SQLSTATE its message carries it ("FATAL:  28P01") and nothing of
 * the server's text. */
static int credentials_refused(const PGconn *conn)
{
    const char *msg = PQerrorMessage(conn);
    return strstr(msg, ":  28P01") || strstr(msg, ":  28000");
}

/* Waits for libpq's non-blocking connect to finish.  Returns RC_OK,
 * RC_TIMEOUT or RC_DB, the attempt marked broken on failure. */
static rc_t poll_connect(struct pg_sink *s)
{
    PostgresPollingStatusType st = PGRES_POLLING_WRITING;

    while (st != PGRES_POLLING_OK) {
        if (PQstatus(s->conn) == CONNECTION_BAD || st == PGRES_POLLING_FAILED) {
            pg_fail(s, NULL, "connect");
            /* Another attempt with refused credentials cannot help; the
             * caller may read them again (pg_sink_auth_refused). */
            if (credentials_refused(s->conn)) {
                s->auth_refused = 1;
                s->retryable = 0;
            }
            return RC_DB;
        }
        if (wait_socket(s, st == PGRES_POLLING_READING ? POLLIN : POLLOUT, WAIT_WHOLE) != RC_OK) {
            pg_fail(s, NULL, "connect: timeout");
            return RC_TIMEOUT;
        }
        st = PQconnectPoll(s->conn);
    }
    return RC_OK;
}

/* Opens the connection, bounded by the give-up time and PGCONNECT_TIMEOUT as
 * libpq would apply it (the schema is checked by pg_open, pg_schema.c).  TCP
 * keepalives are asked for as connection parameters, not with SET (which
 * would be session state, and pin the connection to one server connection
 * of a transaction-pooling proxy): a server whose client vanished without a
 * FIN (a sandbox frozen or killed) notices within about 30 s.  They come
 * before "dbname", so that DATABASE_URL can override them; application_name
 * and client_encoding come after it, as the function depends on them.
 * Returns RC_OK, RC_TIMEOUT, RC_NOMEM or RC_DB (the attempt is marked broken
 * and the connection closed). */
rc_t pg_connect(struct pg_sink *s)
{
    const char *password = NULL; /* from password_fn: overrides the settings' */
    rc_t rc = RC_DB;

    s->auth_refused = 0;
    if (s->password_fn && s->password_fn(s->password_ctx, &password, s->why) != RC_OK) {
        s->tx.phase = PH_BROKEN;
        s->retryable = 0;
        return RC_DB;
    }
    /* Keys after dbname override what its expansion sets (the keepalives
     * before it are defaults DATABASE_URL may change); a NULL value ends the
     * list, so the password, which may be absent, comes last. */
    static const char *const keys[] = {"keepalives",       "keepalives_idle", "keepalives_interval",
                                       "keepalives_count", "dbname",          "application_name",
                                       "client_encoding",  "password",        NULL};
    const char *values[] = {"1", "15", "5", "3", s->conninfo, "login-etl", "UTF8", password, NULL};
    s->conn = PQconnectStartParams(keys, values, 1);
    if (!s->conn) {
        pg_fail(s, NULL, "connect: out of memory");
        return RC_NOMEM;
    }
    s->stats.reconnects++;
    /* Set before the first message from the server (an authentication
     * failure is one): see pg_describe and on_notice. */
    PQsetErrorVerbosity(s->conn, PQERRORS_SQLSTATE);
    PQsetNoticeReceiver(s->conn, on_notice, s);
    if ((rc = poll_connect(s)) != RC_OK)
        goto out;
    rc = RC_DB;
    if (PQsetnonblocking(s->conn, 1) != 0) {
        pg_fail(s, NULL, "connect: non-blocking mode");
        goto out;
    }
    const char *enc = PQparameterStatus(s->conn, "server_encoding");
    if (!enc || strcmp(enc, "UTF8") != 0) {
        /* varchar(n) counts characters in the database encoding; our
         * validation counts UTF-8 characters, and must agree with it. */
        snprintf(s->why, sizeof s->why, "connect: database encoding is %s, not UTF8",
                 enc ? enc : "unknown");
        s->tx.phase = PH_BROKEN;
        s->retryable = 0;
        goto out;
    }
    rc = RC_OK;
out:
    if (rc)
        pg_close(s);
    return rc;
}

/* Closes the connection, if open; cannot fail. */
void pg_close(struct pg_sink *s)
{
    if (s->conn)
        PQfinish(s->conn);
    s->conn = NULL;
}
