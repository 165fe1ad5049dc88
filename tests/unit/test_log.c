/* test_log.c - the release in every line: log_emit's "version" field (JSON
 * and Text), also in the line that replaces one too long for its buffer, and
 * log_raw's splice of it into a pre-built JSON line (the metrics line), which
 * must stay one valid object and one write and take no memory. */
#include "check.h"

#include <fcntl.h>

#include "log.h"

/* Runs one logging call against a pipe and returns what it wrote
 * (NUL-terminated, static): raw through log_raw, else a "batch done" line
 * with a field "error" holding field when it is not NULL. */
static const char *capture_field(const char *version, int text, const char *raw, size_t raw_len,
                                 const char *field)
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
    else if (field)
        log_at(&lg, LOG_INFO, "batch done", LF_NUM("n", 3), LF_STR("error", field));
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

static const char *capture(const char *version, int text, const char *raw, size_t raw_len)
{
    return capture_field(version, text, raw, raw_len, NULL);
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

    /* A field longer than the 1 KiB line buffer (an error text, say). */
    static char longf[2000];
    memset(longf, 'e', sizeof longf - 1);
    check_case("a line too long for its buffer: its replacement carries the version");
    l = capture_field("v1.2.3", 0, NULL, 0, longf);
    CHECK(strncmp(l, "{\"timestamp\":\"", 14) == 0);
    CHECK(strstr(l, "\"level\":\"INFO\",\"version\":\"v1.2.3\",\"message\":\"log line too "
                    "long\",\"droppedMessage\":\"batch done\"}\n") != NULL);
    CHECK(strstr(l, "eeee") == NULL);
    check_case("the same in Text format");
    l = capture_field("v1.2.3", 1, NULL, 0, longf);
    CHECK(strstr(l, " INFO - log line too long droppedMessage=batch done version=v1.2.3\n"));
    CHECK(strstr(l, "eeee") == NULL);
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

    /* A long line (the metrics line grows with the codes it counts): one line. */
    static char big[9000];
    big[0] = '{';
    memcpy(big + 1, "\"k\":\"", 5);
    memset(big + 6, 'x', sizeof big - 9);
    memcpy(big + sizeof big - 3, "\"}", 2);
    big[sizeof big - 1] = '\0';
    check_case("a long raw line: version first, content intact");
    const char *l = capture("v3", 0, big, strlen(big));
    CHECK(strncmp(l, "{\"version\":\"v3\",\"k\":\"xxx", 24) == 0);
    CHECK(strlen(l) == strlen(big) + strlen("\"version\":\"v3\",") + 1);
    CHECK(strcmp(l + strlen(l) - 5, "xx\"}\n") == 0);
}

#ifdef __SANITIZE_ADDRESS__
/* ASan's allocator calls these for every malloc and free. */
int __sanitizer_install_malloc_and_free_hooks(void (*)(const volatile void *, size_t),
                                              void (*)(const volatile void *));
static int allocations;
static void count_malloc(const volatile void *p, size_t n)
{
    (void)p;
    (void)n;
    allocations++;
}
static void ignore_free(const volatile void *p)
{
    (void)p;
}
#endif

static void test_raw_takes_no_memory(void)
{
#ifdef __SANITIZE_ADDRESS__
    /* A metrics line grows with the codes it counts: whatever its length it
     * is written without a copy, so memory running short cannot send it out
     * without the version. */
    static char big[9000];
    struct logger lg;
    int fd = open("/dev/null", O_WRONLY);
    big[0] = '{';
    memcpy(big + 1, "\"k\":\"", 5);
    memset(big + 6, 'x', sizeof big - 9);
    memcpy(big + sizeof big - 3, "\"}", 2);
    log_init(&lg, "INFO", "JSON", fd);
    lg.version = "v3";
    check_case("log_raw of a 9,000-byte line allocates nothing");
    allocations = 0;
    __sanitizer_install_malloc_and_free_hooks(count_malloc, ignore_free);
    log_raw(&lg, big, sizeof big - 1);
    __sanitizer_install_malloc_and_free_hooks(NULL, NULL);
    CHECK_EQ_INT(allocations, 0);
    close(fd);
#endif
}

int main(void)
{
    test_emit();
    test_raw();
    test_raw_takes_no_memory();
    return check_finish();
}
