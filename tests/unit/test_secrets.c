/* test_secrets.c - turning an RDS-format secret into a libpq connection string. */
#include "check.h"

#include <libpq-fe.h>

#include "buf.h"
#include "secrets.h"

/* Returns the value libpq parses for keyword `key` out of conninfo, in out. */
static int conninfo_value(const char *conninfo, const char *key, char *out, size_t cap)
{
    char *msg = NULL;
    PQconninfoOption *opts = PQconninfoParse(conninfo, &msg);
    int found = 0;
    if (!opts) {
        PQfreemem(msg);
        return -1;
    }
    for (PQconninfoOption *o = opts; o->keyword; o++) {
        if (strcmp(o->keyword, key) == 0 && o->val) {
            snprintf(out, cap, "%s", o->val);
            found = 1;
        }
    }
    PQconninfoFree(opts);
    return found;
}

int main(void)
{
    static const struct {
        const char *name, *json;
        rc_t rc;
        const char *host, *port, *user, *password, *dbname;
    } rows[] = {
        {"full secret",
         "{\"username\":\"etl\",\"password\":\"pw\",\"host\":\"db.example\",\"port\":5432,"
         "\"dbname\":\"logins\",\"engine\":\"postgres\"}",
         RC_OK, "db.example", "5432", "etl", "pw", "logins"},
        {"port as a string", "{\"username\":\"u\",\"host\":\"h\",\"port\":\"6543\"}", RC_OK, "h",
         "6543", "u", NULL, NULL},
        {"quotes and backslashes in the password",
         "{\"username\":\"u\",\"host\":\"h\",\"password\":\"a'b\\\\c d\"}", RC_OK, "h", NULL, "u",
         "a'b\\c d", NULL},
        {"a password that looks like more settings",
         "{\"username\":\"u\",\"host\":\"h\",\"password\":\"x' sslmode='disable\"}", RC_OK, "h",
         NULL, "u", "x' sslmode='disable", NULL},
        {"no host", "{\"username\":\"u\"}", RC_CONFIG, NULL, NULL, NULL, NULL, NULL},
        {"no username", "{\"host\":\"h\"}", RC_CONFIG, NULL, NULL, NULL, NULL, NULL},
        {"empty username", "{\"host\":\"h\",\"username\":\"\"}", RC_CONFIG, NULL, NULL, NULL, NULL,
         NULL},
        {"not an object", "[1,2]", RC_CONFIG, NULL, NULL, NULL, NULL, NULL},
        {"not JSON", "username=u", RC_CONFIG, NULL, NULL, NULL, NULL, NULL},
        {"port out of range", "{\"username\":\"u\",\"host\":\"h\",\"port\":70000}", RC_OK, "h",
         NULL, "u", NULL, NULL},
    };
    struct buf ci;
    char err[ERR_LEN], got[256];

    buf_init(&ci, 4096);
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        check_case("secrets_conninfo_from_json: %s", rows[i].name);
        const char *json = check_guard(rows[i].json, strlen(rows[i].json));
        rc_t rc = secrets_conninfo_from_json(json, strlen(rows[i].json), &ci, err);
        CHECK_EQ_INT(rc, rows[i].rc);
        if (rc != RC_OK) {
            CHECK(strlen(err) > 0);
            continue;
        }
        const char *keys[] = {"host", "port", "user", "password", "dbname"};
        const char *want[] = {rows[i].host, rows[i].port, rows[i].user, rows[i].password,
                              rows[i].dbname};
        for (size_t k = 0; k < 5; k++) {
            int found = conninfo_value(ci.data, keys[k], got, sizeof got);
            CHECK(found >= 0);
            CHECK_EQ_STR(found == 1 ? got : NULL, want[k]);
        }
        /* The password cannot smuggle in another setting. */
        CHECK(conninfo_value(ci.data, "sslmode", got, sizeof got) == 0);
    }
    buf_wipe(&ci);
    return check_finish();
}
