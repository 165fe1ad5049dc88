/* check.h - a tiny harness for table-driven unit tests, one executable per module.
 *
 *   check_case("parse %s", row->name);   starts a case (and ends the previous one)
 *   CHECK(expr);                         fails the current case when expr is false
 *   CHECK_EQ_STR(got, want); CHECK_EQ_INT(got, want);
 *   return check_finish();               prints "# N passed, N failed", exit status
 *
 * Output is TAP-like ("ok - name", "not ok - name"), read by tests/run.py.
 * check_guard() copies input so that its last byte sits just before an
 * unmapped page: a parser that reads one byte too far crashes at once. */
#ifndef CHECK_H
#define CHECK_H

#define _DEFAULT_SOURCE
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

static struct {
    int passed, failed, open, case_failed;
    char name[200];
    void *guard_map;
    size_t guard_len;
} check_;

static void check_end_(void)
{
    if (!check_.open)
        return;
    if (check_.case_failed)
        check_.failed++;
    else
        check_.passed++;
    printf("%s - %s\n", check_.case_failed ? "not ok" : "ok", check_.name);
    check_.open = 0;
}

__attribute__((format(printf, 1, 2))) static void check_case(const char *fmt, ...)
{
    va_list ap;
    check_end_();
    va_start(ap, fmt);
    vsnprintf(check_.name, sizeof check_.name, fmt, ap);
    va_end(ap);
    check_.open = 1;
    check_.case_failed = 0;
}

static void check_fail_(const char *file, int line, const char *what)
{
    check_.case_failed = 1;
    printf("#   %s:%d: %s: %s\n", file, line, check_.name, what);
}

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond))                                                                               \
            check_fail_(__FILE__, __LINE__, "CHECK(" #cond ")");                                   \
    } while (0)

#define CHECK_EQ_INT(got, want)                                                                    \
    do {                                                                                           \
        long long g_ = (long long)(got), w_ = (long long)(want);                                   \
        if (g_ != w_) {                                                                            \
            char m_[160];                                                                          \
            snprintf(m_, sizeof m_, "%s = %lld, want %lld", #got, g_, w_);                         \
            check_fail_(__FILE__, __LINE__, m_);                                                   \
        }                                                                                          \
    } while (0)

#define CHECK_EQ_STR(got, want)                                                                    \
    do {                                                                                           \
        const char *g_ = (got), *w_ = (want);                                                      \
        if (!g_ || !w_ ? g_ != w_ : strcmp(g_, w_) != 0) {                                         \
            char m_[600];                                                                          \
            snprintf(m_, sizeof m_, "%s = \"%.250s\", want \"%.250s\"", #got, g_ ? g_ : "(null)",  \
                     w_ ? w_ : "(null)");                                                          \
            check_fail_(__FILE__, __LINE__, m_);                                                   \
        }                                                                                          \
    } while (0)

/* Returns a copy of p[0..n) that ends exactly at an unmapped page; valid until
 * the next call.  Aborts when mmap fails (a broken test machine). */
static const char *check_guard(const void *p, size_t n)
{
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    size_t data_pages = (n + page - 1) / page;
    if (data_pages == 0)
        data_pages = 1;
    if (check_.guard_map)
        munmap(check_.guard_map, check_.guard_len);
    check_.guard_len = (data_pages + 1) * page;
    check_.guard_map =
        mmap(NULL, check_.guard_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (check_.guard_map == MAP_FAILED)
        abort();
    char *guard = (char *)check_.guard_map + data_pages * page;
    if (mprotect(guard, page, PROT_NONE) != 0)
        abort();
    char *dst = guard - n;
    memcpy(dst, p, n);
    return dst;
}

static int check_finish(void)
{
    check_end_();
    if (check_.guard_map)
        munmap(check_.guard_map, check_.guard_len);
    printf("# %d passed, %d failed\n", check_.passed, check_.failed);
    return check_.failed ? 1 : 0;
}

#endif
