/* test_pg_isolate.c - the row states of a search for refused rows, with no
 * server: a part that went in is kept while the transaction keeps fewer
 * than KEPT_MAX (pg_part_in); the rows of the parts rolled back past that
 * (RS_PASSED) go in together in one last COPY while the kept ones wait
 * (RS_KEPT, pg_final_part), so that no row goes in twice; and a transaction
 * that ends undoes both (pg_tx_reset). */
#include "check.h"

#include <stdint.h>
#include <string.h>

#include "pg_int.h"

#define ROWS 6

/* A sink of ROWS rows in the states given, in an open transaction. */
static void sink_with(struct pg_sink *s, uint8_t *state, uint8_t *in_ledger)
{
    memset(s, 0, sizeof *s);
    s->n = s->decided = ROWS;
    s->state = state;
    s->in_ledger = in_ledger;
    memset(in_ledger, KEY_NOT_IN_LEDGER, ROWS);
    s->tx.op = OP_DONE;
    s->tx.rows = ROWS_ISOLATE;
}

static void test_final_part(void)
{
    struct pg_sink s;
    uint8_t in_ledger[ROWS];
    /* rows 0..5: kept, passed, refused, passed, duplicate, kept */
    uint8_t state[ROWS] = {RS_PENDING, RS_PASSED, RS_REFUSED, RS_PASSED, RS_DUP, RS_PENDING};

    check_case("final part: the passed rows go in, the kept ones wait");
    sink_with(&s, state, in_ledger);
    CHECK(pg_final_part(&s) == 1);
    const uint8_t during[ROWS] = {RS_KEPT, RS_PENDING, RS_REFUSED, RS_PENDING, RS_DUP, RS_KEPT};
    CHECK(memcmp(state, during, ROWS) == 0);
    CHECK(s.tx.rows == ROWS_FINAL && s.tx.op == OP_ROWS && s.tx.phase == PH_IDLE);
    CHECK_EQ_INT(s.tx.from, 0);
    CHECK_EQ_INT(s.tx.to, ROWS);
    /* Counted through a guarded copy: nothing past the last row is read, whatever the
     * range asked. */
    s.state = (uint8_t *)check_guard(state, ROWS);
    CHECK_EQ_INT(pg_pending_in(&s, 0, ROWS + 100), 2);
    s.state = state;

    check_case("final part: once it went in, every row it and the kept parts hold is written");
    CHECK(pg_part_in(&s) == RC_OK);
    const uint8_t after[ROWS] = {RS_PENDING, RS_PENDING, RS_REFUSED,
                                 RS_PENDING, RS_DUP,     RS_PENDING};
    CHECK(memcmp(state, after, ROWS) == 0);

    check_case("final part: none when no part was rolled back");
    sink_with(&s, state, in_ledger);
    CHECK(pg_final_part(&s) == 0);
    CHECK(memcmp(state, after, ROWS) == 0);
    CHECK(s.tx.rows == ROWS_ISOLATE);
}

static void test_part_in_keeps_up_to_the_bound(void)
{
    struct pg_sink s;
    uint8_t in_ledger[ROWS], state[ROWS] = {0};

    check_case("part in: kept, and counted, while fewer than KEPT_MAX are");
    sink_with(&s, state, in_ledger);
    s.tx.from = 0;
    s.tx.to = 2;
    for (size_t k = 0; k < KEPT_MAX; k++)
        CHECK(pg_part_in(&s) == RC_OK);
    CHECK_EQ_INT(s.tx.kept, KEPT_MAX);
    CHECK_EQ_INT(pg_pending_in(&s, 0, ROWS), ROWS); /* nothing marked passed */

    check_case("part in: the last COPY is kept whatever the count");
    s.tx.rows = ROWS_FINAL;
    CHECK(pg_part_in(&s) == RC_OK);
    CHECK_EQ_INT(s.tx.kept, KEPT_MAX + 1);
}

static void test_reset_undoes_the_search(void)
{
    struct pg_sink s;
    uint8_t in_ledger[ROWS];
    uint8_t state[ROWS] = {RS_KEPT, RS_PASSED, RS_REFUSED, RS_PENDING, RS_DUP, RS_NO_ROW};

    check_case("reset: a transaction rolled back takes its passed and kept rows with it");
    sink_with(&s, state, in_ledger);
    s.tx.kept = 7;
    s.tx.rows_savepoint = 1;
    pg_tx_reset(&s);
    const uint8_t want[ROWS] = {RS_PENDING, RS_PENDING, RS_REFUSED, RS_PENDING, RS_DUP, RS_NO_ROW};
    CHECK(memcmp(state, want, ROWS) == 0);
    CHECK_EQ_INT(s.tx.kept, 0);
    CHECK(s.tx.rows_savepoint == 0);
}

int main(void)
{
    test_final_part();
    test_part_in_keeps_up_to_the_bound();
    test_reset_undoes_the_search();
    return check_finish();
}
