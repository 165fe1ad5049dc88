/* test_log.c - the release in every line: log_emit's "version" field (JSON
 * and Text) and log_raw's splice of it into a pre-built JSON line (the
 * metrics line), which must stay one valid object and one write. */
#include "check.h"

#include "log.h"

/* Runs one logging call against a pipe and returns what it wrote
 * (NUL-terminated, static). */
static const char *capture(const char *version, int text, const char *raw, size_t raw_len)
{
    static char out[16384];
    struct logger lg;
    int fds[2];
    size_t got = 0;

    if (pipe(fds) != 0)
        abort();
    log_init(&lg, "INFO", text ? "Text" : "JSON", fds[1]);
    lg.version = version;
    if (raw)
        log_raw(&lg, raw, raw_len);
    else
        log_at(&lg, LOG_INFO, "batch done", LF_NUM("n", 3));
    close(fds[1]);
    for (;;) {
        ssize_t n = read(fds[0], out + got, sizeof out - 1 - got);
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    close(fds[0]);
    out[got] = '\0';
    return out;
}

static void test_emit(void)
{
    check_case("JSON line: \"version\" after the level");
    const char *l = capture("v1.2.3-4-gabc", 0, NULL, 0);
    CHECK(strstr(l, "\"level\":\"INFO\",\"version\":\"v1.2.3-4-gabc\",\"message\":\"batch done\","
                    "\"n\":3}\n") != NULL);
    check_case("Text line: version= last");
    l = capture("v1.2.3", 1, NULL, 0);
    CHECK(strstr(l, " INFO - batch done n=3 version=v1.2.3\n") != NULL);
    check_case("no version set: no field");
    l = capture(NULL, 0, NULL, 0);
    CHECK(strstr(l, "version") == NULL);
}

static void test_raw(void)
{
    static const char metric[] = "{\"_aws\":{\"Timestamp\":1},\"RecordsReceived\":5}\n";
    check_case("raw JSON line: version spliced in first, one line");
    CHECK_EQ_STR(capture("v2.0.0", 0, metric, strlen(metric)),
                 "{\"version\":\"v2.0.0\",\"_aws\":{\"Timestamp\":1},\"RecordsReceived\":5}\n");
    check_case("raw line without its newline gets one; no byte past its end is read");
    CHECK_EQ_STR(capture("v2.0.0", 0, check_guard(metric, strlen(metric) - 1), strlen(metric) - 1),
                 "{\"version\":\"v2.0.0\",\"_aws\":{\"Timestamp\":1},\"RecordsReceived\":5}\n");
    check_case("an empty object takes no comma");
    CHECK_EQ_STR(capture("v2", 0, "{}", 2), "{\"version\":\"v2\"}\n");
    check_case("the metrics line in Text format is still JSON with the version");
    CHECK_EQ_STR(capture("v2", 1, "{\"a\":1}", 7), "{\"version\":\"v2\",\"a\":1}\n");
    check_case("not an object: as it is");
    CHECK_EQ_STR(capture("v2", 0, "[1]\n", 4), "[1]\n");
    check_case("no version: as it is");
    CHECK_EQ_STR(capture(NULL, 0, metric, strlen(metric)), metric);

    /* Longer than the stack copy: the heap copy, still one line. */
    static char big[9000];
    big[0] = '{';
    memcpy(big + 1, "\"k\":\"", 5);
    memset(big + 6, 'x', sizeof big - 9);
    memcpy(big + sizeof big - 3, "\"}", 2);
    big[sizeof big - 1] = '\0';
    check_case("a long raw line (heap copy): version first, content intact");
    const char *l = capture("v3", 0, big, strlen(big));
    CHECK(strncmp(l, "{\"version\":\"v3\",\"k\":\"xxx", 24) == 0);
    CHECK(strlen(l) == strlen(big) + strlen("\"version\":\"v3\",") + 1);
    CHECK(strcmp(l + strlen(l) - 5, "xx\"}\n") == 0);
}

int main(void)
{
    test_emit();
    test_raw();
    return check_finish();
}
