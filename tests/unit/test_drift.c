/* test_drift.c - schema drift of a body: unknown top-level fields and known
 * fields absent counted; a record drifted only with an unknown field (a
 * rename brings one; an optional field left out is no drift); only short
 * names of [A-Za-z0-9_.-] kept, at most DRIFT_NAMES, the rest counted as
 * "other" without their text. */
#include "check.h"

#include "drift.h"
#include "json.h"

static const struct json_name known[] = {{"user_id", 7}, {"ip", 2}, {"locale", 6}};
#define KNOWN (sizeof known / sizeof *known)

static void note(struct drift *d, const char *body)
{
    struct json_doc doc;
    struct json_names set;
    long idx[KNOWN];
    char err[ERR_LEN];

    json_init(&doc);
    json_names_init(&set, known, KNOWN);
    size_t n = strlen(body);
    if (json_parse(&doc, check_guard(body, n), n, err) != RC_OK) {
        printf("# not JSON: %s\n", body);
        abort();
    }
    json_members(&doc, 0, &set, idx);
    drift_note(d, &doc, idx, &set);
    json_free(&doc);
}

static const char *names(const struct drift *d)
{
    static char out[512];
    struct buf b;
    buf_wrap(&b, out, sizeof out);
    drift_unknown_names(d, &b);
    return out;
}

int main(void)
{
    struct drift d;

    check_case("a body with every known field and nothing else is no drift");
    drift_reset(&d);
    note(&d, "{\"user_id\":\"u\",\"ip\":null,\"locale\":\"en\"}");
    CHECK(d.records == 0 && d.unknown == 0 && d.missing[0] + d.missing[1] + d.missing[2] == 0);

    check_case("a renamed field: one unknown, one known absent, one record");
    drift_reset(&d);
    note(&d, "{\"user_id\":\"u\",\"ip_address\":\"1.2.3.4\",\"locale\":\"en\"}");
    CHECK_EQ_INT(d.records, 1);
    CHECK_EQ_INT(d.unknown, 1);
    CHECK_EQ_INT(d.missing[1], 1);
    CHECK_EQ_STR(names(&d), "ip_address");

    check_case("a known field left out in every body is counted, and no body drifted");
    drift_reset(&d);
    for (int i = 0; i < 50; i++)
        note(&d, "{\"user_id\":\"u\",\"locale\":\"en\"}");
    CHECK_EQ_INT(d.records, 0);
    CHECK_EQ_INT(d.unknown, 0);
    CHECK_EQ_INT(d.missing[1], 50);

    check_case("renamed in every body: each body drifted");
    drift_reset(&d);
    for (int i = 0; i < 50; i++)
        note(&d, "{\"user_id\":\"u\",\"ip_address\":\"1.2.3.4\"}");
    CHECK_EQ_INT(d.records, 50);
    CHECK_EQ_INT(d.missing[1], 50);
    CHECK_EQ_INT(d.missing[2], 50);
    CHECK_EQ_STR(names(&d), "ip_address");

    check_case("a known field given twice is no unknown field");
    drift_reset(&d);
    note(&d, "{\"user_id\":\"u\",\"ip\":\"1\",\"ip\":\"2\",\"locale\":\"x\"}");
    CHECK(d.records == 0 && d.unknown == 0);

    check_case("names that may not be printed count as other, their text kept nowhere");
    drift_reset(&d);
    note(&d, "{\"user_id\":\"u\",\"ip\":\"1\",\"locale\":\"x\",\"a b\":1,"
             "\"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\":2,\"es\\u0063aped\":3,\"\":4,"
             "\"ok.name-1\":5}");
    CHECK_EQ_INT(d.unknown, 5);
    CHECK_EQ_INT(d.other, 4);
    CHECK_EQ_STR(names(&d), "ok.name-1,other");

    check_case("at most DRIFT_NAMES names are kept, each once, over many bodies");
    drift_reset(&d);
    for (int i = 0; i < 20; i++) {
        char body[128];
        snprintf(body, sizeof body, "{\"f%d\":1,\"f0\":2}", i);
        note(&d, body);
    }
    CHECK_EQ_INT(d.records, 20);
    CHECK_EQ_INT(d.missing[0], 20);
    CHECK_EQ_INT(d.nnames, DRIFT_NAMES);
    CHECK_EQ_INT(d.unknown, 40);
    CHECK_EQ_STR(names(&d), "f0,f1,f2,f3,f4,f5,f6,f7,other");
    return check_finish();
}
