/* test_pg_retention.c - the ledger's retention with no server: which slot is
 * due on a given day, the SQL each step sends, and what each answer or
 * failure makes of the day's retention (pg_retention_plan,
 * pg_retention_answer, pg_retention_failed).  The expected statements are
 * spelled out here in full, so that a change to what reaches the server is a
 * change to this file too. */
#include "check.h"

#include <fcntl.h>
#include <stdint.h>

#include "pg_int.h"

#define DAY INT64_C(86400000)
#define DEC5 INT64_C(20792) /* 2026-12-05, days since 1970-01-01: slot (20792 + 2) % 18 = 4 */

#define BEGIN "BEGIN; SET LOCAL lock_timeout = 200; SET LOCAL statement_timeout = 10000; "
#define CHECK_SLOT_4                                                                               \
    "SELECT 'slot', max(sent_at) IS NOT NULL FROM login_etl_ledger_v3 WHERE slot = 4; "
#define NONE_DELETE                                                                                \
    "WITH d AS (DELETE FROM login_etl_ledger_v3 WHERE slot = 18 AND ctid = ANY(ARRAY(SELECT ctid " \
    "FROM login_etl_ledger_v3 WHERE slot = 18 AND committed_at < now() - interval '15 days' AND "  \
    "message_id NOT IN ('00000000-0000-0000-0000-000000000000', "                                  \
    "'00000000-0000-0000-0000-000000000001') LIMIT 20000)) RETURNING 1) SELECT 'deleted', "        \
    "count(*) FROM d; "
#define TRUNCATE_4                                                                                 \
    "LOCK TABLE login_etl_ledger_v3_s04 IN ACCESS EXCLUSIVE MODE; DO $$ BEGIN IF (SELECT "         \
    "max(sent_at) FROM login_etl_ledger_v3_s04 WHERE slot = 4) >= now() - interval '15 days' OR "  \
    "(SELECT max(committed_at) FROM login_etl_ledger_v3_s04) >= now() - interval '15 days' OR "    \
    "EXISTS (SELECT 1 FROM login_etl_ledger_v3_s04 WHERE slot < 4 OR slot > 4) THEN RAISE "        \
    "SQLSTATE '55000'; END IF; END $$; TRUNCATE login_etl_ledger_v3_s04; SELECT 'truncated'; "
#define SWEEP_4_FIRST                                                                              \
    "WITH w AS MATERIALIZED (SELECT coalesce((SELECT sent_at FROM login_etl_ledger_v3 WHERE slot " \
    "= 4 AND sent_at >= '-infinity' ORDER BY sent_at OFFSET 1000 LIMIT 1), 'infinity') AS probe, " \
    "now() - interval '15 days' AS cap), h AS MATERIALIZED (SELECT least(probe, cap) AS hi, "      \
    "probe >= cap AS last FROM w), d AS (DELETE FROM login_etl_ledger_v3 WHERE slot = 4 AND "      \
    "sent_at >= '-infinity' AND sent_at < (SELECT hi FROM h) AND committed_at < now() - interval " \
    "'15 days' RETURNING 1) SELECT 'swept', (SELECT count(*) FROM d), (SELECT CASE WHEN hi > "     \
    "'-infinity' THEN (extract(epoch FROM hi) * 1000000)::int8 END FROM h), (SELECT last FROM "    \
    "h); "

static struct logger lg;

/* An answer row of tag and up to three values. */
static struct ret_answer answer(int nfields, const char *tag, const char *a, const char *b,
                                const char *c)
{
    return (struct ret_answer){.nfields = nfields, .value = {tag, a, b, c}};
}

static void test_which_slot_is_due(void)
{
    struct pg_retention r;
    char sql[4096];

    for (int64_t d = DEC5; d < DEC5 + 20; d++) {
        check_case("slot due on day %lld: (day + 2) mod 18", (long long)d);
        pg_retention_init(&r, &lg);
        CHECK_EQ_INT(pg_retention_plan(&r, d * DAY + 12345, 0, 0, sql, sizeof sql), 1);
        CHECK_EQ_INT(r.slot, (d + 2) % 18);
        CHECK_EQ_INT(r.for_day, d);
        CHECK(r.sent == RET_IDLE);
    }
    check_case("slot due: the day turns at midnight UTC");
    pg_retention_init(&r, &lg);
    CHECK_EQ_INT(pg_retention_plan(&r, (DEC5 + 1) * DAY - 1, 0, 0, sql, sizeof sql), 1);
    CHECK_EQ_INT(r.slot, 4);
    pg_retention_answer(&r, &(struct ret_answer){2, {"slot", "f"}});
    CHECK_EQ_INT(pg_retention_plan(&r, (DEC5 + 1) * DAY, 0, 0, sql, sizeof sql), 1);
    CHECK_EQ_INT(r.slot, 5);
}

static void test_check_then_truncate(void)
{
    struct pg_retention r;
    char sql[4096];
    struct ret_answer a;

    check_case("retention: the day's check, with SLOT_NONE's expired entries");
    pg_retention_init(&r, &lg);
    CHECK_EQ_INT(pg_retention_plan(&r, DEC5 * DAY, 0, 0, sql, sizeof sql), 1);
    CHECK_EQ_STR(sql, BEGIN CHECK_SLOT_4 NONE_DELETE "COMMIT");

    check_case("retention: an empty slot ends the day");
    a = answer(2, "deleted", "7", NULL, NULL);
    pg_retention_answer(&r, &a);
    CHECK_EQ_INT(r.pruned, 7);
    a = answer(2, "slot", "f", NULL, NULL);
    pg_retention_answer(&r, &a);
    CHECK_EQ_INT(r.day, DEC5);
    CHECK_EQ_INT(pg_retention_plan(&r, DEC5 * DAY + DAY - 1, 0, 0, sql, sizeof sql), 0);

    check_case("retention: a slot with entries is truncated under a re-check");
    pg_retention_init(&r, &lg);
    CHECK_EQ_INT(pg_retention_plan(&r, DEC5 * DAY, 0, 0, sql, sizeof sql), 1);
    a = answer(2, "slot", "t", NULL, NULL);
    pg_retention_answer(&r, &a);
    CHECK(r.stage == RET_TRUNCATE);
    CHECK_EQ_INT(pg_retention_plan(&r, DEC5 * DAY, 0, 0, sql, sizeof sql), 1);
    CHECK(r.sent == RET_TRUNCATE);
    CHECK_EQ_STR(sql, BEGIN TRUNCATE_4 "COMMIT");
    a = answer(1, "truncated", NULL, NULL, NULL);
    pg_retention_answer(&r, &a);
    CHECK(r.stage == RET_IDLE);
    CHECK_EQ_INT(pg_retention_plan(&r, DEC5 * DAY, 0, 0, sql, sizeof sql), 0);

    check_case("retention: a buffer too small sends nothing");
    pg_retention_init(&r, &lg);
    CHECK_EQ_INT(pg_retention_plan(&r, DEC5 * DAY, 0, 0, sql, 40), 0);
    CHECK_EQ_INT(pg_retention_plan(&r, DEC5 * DAY, 0, 0, sql, sizeof BEGIN CHECK_SLOT_4), 0);
}

static void test_sweep(void)
{
    struct pg_retention r;
    char sql[4096];
    struct ret_answer a;

    check_case("sweep: TRUNCATE refused (42501) turns to DELETE, from -infinity");
    pg_retention_init(&r, &lg);
    pg_retention_plan(&r, DEC5 * DAY, 0, 0, sql, sizeof sql);
    a = answer(2, "slot", "t", NULL, NULL);
    pg_retention_answer(&r, &a);
    pg_retention_plan(&r, DEC5 * DAY, 0, 0, sql, sizeof sql);
    pg_retention_failed(&r, "42501", 0);
    CHECK(r.stage == RET_SWEEP);
    CHECK_EQ_INT(r.truncate_off, 1);
    CHECK_EQ_INT(pg_retention_plan(&r, DEC5 * DAY, 0, 10, sql, sizeof sql), 1);
    CHECK_EQ_STR(sql, BEGIN SWEEP_4_FIRST "COMMIT");

    check_case("sweep: a step goes over twice the rows written, within 1,000 and 20,000");
    CHECK_EQ_INT(pg_retention_plan(&r, DEC5 * DAY, 0, 3000, sql, sizeof sql), 1);
    CHECK(strstr(sql, "ORDER BY sent_at OFFSET 6000 LIMIT 1") != NULL);
    CHECK_EQ_INT(pg_retention_plan(&r, DEC5 * DAY, 0, 50000, sql, sizeof sql), 1);
    CHECK(strstr(sql, "ORDER BY sent_at OFFSET 20000 LIMIT 1") != NULL);

    check_case("sweep: the next step starts where the last one stopped");
    /* The bound read through a guarded copy: not one byte past its NUL. */
    a = answer(4, "swept", "500", check_guard("1700000000000000", 17), "f");
    pg_retention_answer(&r, &a);
    CHECK_EQ_INT(r.pruned, 500);
    CHECK_EQ_INT(pg_retention_plan(&r, DEC5 * DAY, 0, 0, sql, sizeof sql), 1);
    CHECK(strstr(sql, "WHERE slot = 4 AND sent_at >= to_timestamp(0) + 1700000000000000 * "
                      "interval '1 us' ORDER BY") != NULL);

    check_case("sweep: a step that could not leave its sent_at goes on just after it");
    pg_retention_answer(&r, &a);
    CHECK_EQ_INT(pg_retention_plan(&r, DEC5 * DAY, 0, 0, sql, sizeof sql), 1);
    CHECK(strstr(sql, "AND sent_at > to_timestamp(0) + 1700000000000000 * interval '1 us' "
                      "ORDER BY") != NULL);

    check_case("sweep: the last step ends the day; the next day checks, then sweeps at once");
    a = answer(4, "swept", "3", NULL, "t");
    pg_retention_answer(&r, &a);
    CHECK_EQ_INT(r.pruned, 1003);
    CHECK_EQ_INT(pg_retention_plan(&r, DEC5 * DAY, 0, 0, sql, sizeof sql), 0);
    CHECK_EQ_INT(pg_retention_plan(&r, (DEC5 + 1) * DAY, 0, 0, sql, sizeof sql), 1);
    a = answer(2, "slot", "t", NULL, NULL);
    pg_retention_answer(&r, &a);
    CHECK(r.stage == RET_SWEEP); /* TRUNCATE stays off for the process */
    CHECK(strstr(sql, "WHERE slot = 5;") != NULL);

    check_case("sweep: answers that do not fit are ignored");
    a = answer(4, "swept", "x", NULL, "t");
    pg_retention_answer(&r, &a);
    a = answer(3, "swept", "1", NULL, NULL);
    pg_retention_answer(&r, &a);
    a = answer(2, "other", "1", NULL, NULL);
    pg_retention_answer(&r, &a);
    CHECK(r.stage == RET_SWEEP);
    CHECK_EQ_INT(r.pruned, 1003);
}

static void test_failures(void)
{
    struct pg_retention r;
    char sql[4096];
    struct ret_answer a = answer(2, "slot", "t", NULL, NULL);

    check_case("failure: young entries (55000) sweep, TRUNCATE stays on");
    pg_retention_init(&r, &lg);
    pg_retention_plan(&r, DEC5 * DAY, 0, 0, sql, sizeof sql);
    pg_retention_answer(&r, &a);
    pg_retention_plan(&r, DEC5 * DAY, 0, 0, sql, sizeof sql);
    pg_retention_failed(&r, "55000", 0);
    CHECK(r.stage == RET_SWEEP);
    CHECK_EQ_INT(r.truncate_off, 0);

    check_case("failure: anything else waits a minute, then the step is sent again");
    pg_retention_init(&r, &lg);
    pg_retention_plan(&r, DEC5 * DAY, 1000, 0, sql, sizeof sql);
    pg_retention_failed(&r, "55P03", 1000); /* lock_timeout */
    CHECK_EQ_INT(pg_retention_plan(&r, DEC5 * DAY, 60999, 0, sql, sizeof sql), 0);
    CHECK_EQ_INT(pg_retention_plan(&r, DEC5 * DAY, 61000, 0, sql, sizeof sql), 1);
    CHECK_EQ_STR(sql, BEGIN CHECK_SLOT_4 NONE_DELETE "COMMIT");

    check_case("failure: DELETE refused in the check stops the deletes for good");
    pg_retention_init(&r, &lg);
    pg_retention_plan(&r, DEC5 * DAY, 0, 0, sql, sizeof sql);
    pg_retention_failed(&r, "42501", 0);
    CHECK_EQ_INT(r.prune_off, 1);
    CHECK_EQ_INT(pg_retention_plan(&r, DEC5 * DAY, 0, 0, sql, sizeof sql), 1);
    CHECK_EQ_STR(sql, BEGIN CHECK_SLOT_4 "COMMIT");

    check_case("failure: DELETE refused in a sweep ends the day's sweep");
    pg_retention_init(&r, &lg);
    r.truncate_off = 1;
    pg_retention_plan(&r, DEC5 * DAY, 0, 0, sql, sizeof sql);
    pg_retention_answer(&r, &a);
    pg_retention_plan(&r, DEC5 * DAY, 0, 0, sql, sizeof sql);
    CHECK(r.sent == RET_SWEEP);
    pg_retention_failed(&r, "42501", 0);
    CHECK(r.stage == RET_IDLE);
    CHECK_EQ_INT(pg_retention_plan(&r, DEC5 * DAY, 0, 0, sql, sizeof sql), 0);
}

int main(void)
{
    log_init(&lg, "FATAL", NULL, open("/dev/null", O_WRONLY));
    test_which_slot_is_due();
    test_check_then_truncate();
    test_sweep();
    test_failures();
    return check_finish();
}
