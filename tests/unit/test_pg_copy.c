/* test_pg_copy.c - which row a server error refers to, with no server: the
 * COPY data line read from an error's CONTEXT field (pg_copy_context_line)
 * and the batch row that line is (pg_copy_row_at_line), which skips the rows
 * that did not go out in that COPY. */
#include "check.h"

#include <limits.h>
#include <stdint.h>

#include "pg_int.h"

static const struct {
    const char *name;
    const char *context;
    unsigned long long line;
} contexts[] = {
    {"none", NULL, 0},
    {"empty", "", 0},
    {"the COPY's line", "COPY user_logins, line 5", 5},
    {"a column after the line", "COPY user_logins, line 12, column masked_ip: \"x\"", 12},
    {"a trigger's frames come first, the COPY's line last",
     "PL/pgSQL function refuse() line 3 at RAISE\nCOPY user_logins, line 7", 7},
    {"the last COPY line wins", "COPY a, line 2\nCOPY user_logins, line 9", 9},
    {"a SQL statement's line is not the COPY's", "SQL statement \"SELECT 1\", line 4", 0},
    {"a COPY frame without a line", "COPY user_logins", 0},
    {"no digits after \", line \"", "COPY user_logins, line x", 0},
    {"a line of the ledger's COPY", "COPY login_etl_ledger_v3, line 1", 1},
    {"a number too long stops at the last digit that fits",
     "COPY user_logins, line 99999999999999999999999", 9999999999999999999ULL},
    {"a CR-free multi-line context with an empty line", "\n\nCOPY user_logins, line 30\n", 30},
};

static void test_context_line(void)
{
    for (size_t i = 0; i < sizeof contexts / sizeof *contexts; i++) {
        check_case("context line: %s", contexts[i].name);
        const char *c = contexts[i].context;
        /* Read through a guarded copy: no byte past the context's NUL. */
        if (c)
            c = check_guard(c, strlen(c) + 1);
        CHECK(pg_copy_context_line(c) == contexts[i].line);
    }
}

/* A sink holding n rows in the states given, as the COPY engine sees it. */
static void sink_with(struct pg_sink *s, size_t n, const uint8_t *state, const uint8_t *in_ledger,
                      enum copy_op op)
{
    memset(s, 0, sizeof *s);
    s->n = s->decided = n;
    s->state = (uint8_t *)state;
    s->in_ledger = (uint8_t *)in_ledger;
    s->tx.op = op;
    s->tx.to = n;
}

static void test_row_at_line(void)
{
    struct pg_sink s;
    /* rows 0..6: pending, duplicate, pending, refused (its key in the
     * ledger), pending, no row (key not in the ledger), pending */
    const uint8_t state[] = {RS_PENDING, RS_DUP,    RS_PENDING, RS_REFUSED,
                             RS_PENDING, RS_NO_ROW, RS_PENDING};
    const uint8_t in_ledger[] = {KEY_NOT_IN_LEDGER, KEY_NOT_IN_LEDGER, KEY_NOT_IN_LEDGER,
                                 KEY_IN_LEDGER,     KEY_NOT_IN_LEDGER, KEY_NOT_IN_LEDGER,
                                 KEY_NOT_IN_LEDGER};

    check_case("row at line: the rows COPY counts only the rows still to be written");
    sink_with(&s, 7, state, in_ledger, OP_ROWS);
    CHECK_EQ_INT(pg_copy_row_at_line(&s, 1), 0);
    CHECK_EQ_INT(pg_copy_row_at_line(&s, 2), 2);
    CHECK_EQ_INT(pg_copy_row_at_line(&s, 3), 4);
    CHECK_EQ_INT(pg_copy_row_at_line(&s, 4), 6);
    CHECK(pg_copy_row_at_line(&s, 5) == NO_ROW);
    CHECK(pg_copy_row_at_line(&s, 0) == NO_ROW);

    check_case("row at line: a rows COPY of a part counts from the part's start");
    sink_with(&s, 7, state, in_ledger, OP_ROWS);
    s.tx.from = 2;
    s.tx.to = 5;
    CHECK_EQ_INT(pg_copy_row_at_line(&s, 1), 2);
    CHECK_EQ_INT(pg_copy_row_at_line(&s, 2), 4);
    CHECK(pg_copy_row_at_line(&s, 3) == NO_ROW); /* row 6 is past the part */

    check_case("row at line: rows not yet known are not lines");
    sink_with(&s, 7, state, in_ledger, OP_ROWS);
    s.decided = 3;
    CHECK_EQ_INT(pg_copy_row_at_line(&s, 2), 2);
    CHECK(pg_copy_row_at_line(&s, 3) == NO_ROW);

    check_case("row at line: the ledger COPY also counts keys that are in the ledger");
    sink_with(&s, 7, state, in_ledger, OP_LEDGER);
    CHECK_EQ_INT(pg_copy_row_at_line(&s, 3), 3); /* the refused row's key went in */
    CHECK_EQ_INT(pg_copy_row_at_line(&s, 4), 4);
    CHECK_EQ_INT(pg_copy_row_at_line(&s, 5), 6);

    check_case("row at line: one error's context read to its row");
    sink_with(&s, 7, state, in_ledger, OP_ROWS);
    CHECK_EQ_INT(pg_copy_row_at_line(
                     &s, pg_copy_context_line("PL/pgSQL function f() line 2 at RAISE\n"
                                              "COPY user_logins, line 3, column locale: \"x\"")),
                 4);
}

int main(void)
{
    test_context_line();
    test_row_at_line();
    return check_finish();
}
