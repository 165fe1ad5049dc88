/* failmalloc.c - an LD_PRELOAD shim for allocation fault injection: it makes
 * exactly one allocation fail and keeps its own account of the blocks still
 * live when the process exits.
 *
 * Not part of the function: tests/integration/test_faults.py compiles it
 * (gcc -shared -fPIC) and preloads it into build/plain/bootstrap.
 *
 * Environment (all optional):
 *   FAILMALLOC_LOG=path     append what happened, one record a line (below)
 *   FAILMALLOC_FAIL=k       fail allocation number k (0-based) ...
 *   FAILMALLOC_AFTER=n      ... counted from the n-th sendmsg() (the runtime's n-th
 *                           request to the Runtime API; libpq uses send()), not from main
 *   FAILMALLOC_SITE=sig     fail the FAILMALLOC_NTH-th (0-based) allocation whose
 *   FAILMALLOC_NTH=n        signature (below) is sig (counted from main, or from the
 *                           FAILMALLOC_AFTER-th sendmsg)
 *   FAILMALLOC_TRACE=1      log every counted allocation
 *
 * Log records:
 *   mark main|sendmsg|connect <count>     count = allocations counted so far
 *   a <k> <size> <signature>              FAILMALLOC_TRACE: allocation k
 *   fail <k> <size> <signature>           the allocation that was failed
 *   failnth <n>                           with FAILMALLOC_AFTER: signature seen n times
 *                                         before it since that sendmsg
 *   exit <count> <live> <failed>          at exit: live = blocks allocated since
 *                                         main and not freed
 * A signature is "<function> <leaf module> <offset>...": the allocating
 * function (malloc, calloc, ...), the file name of the module that called it,
 * and the offsets (hex) of the return addresses that lie in the executable,
 * innermost first; addr2line turns them into source lines.
 *
 * Counting starts with main(): the bootstrap's main() first asks for
 * AWS_LAMBDA_LOG_LEVEL, and this getenv arms the counter then, so what the
 * dynamic loader and the libraries' constructors allocate is left out.
 *
 * Counted: malloc, calloc, realloc, posix_memalign, aligned_alloc, memalign,
 * valloc, pvalloc.  glibc's own strdup, getaddrinfo, putenv, ... allocate
 * through malloc, so they are counted (and fail) too, as do OpenSSL and
 * libpq.  The memory comes from glibc's __libc_malloc and friends, which
 * valgrind replaces (run it with --soname-synonyms=somalloc=nouserintercepts
 * so that it leaves this shim's malloc alone): it still sees every block.
 * Single-threaded programs only. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <execinfo.h>
#include <fcntl.h>
#include <link.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void *__libc_memalign(size_t, size_t);
extern void __libc_free(void *);
extern char **environ;

#define ARM_VARIABLE "AWS_LAMBDA_LOG_LEVEL"
#define SET_SLOTS (1u << 21) /* live blocks tracked at most: 2 M */
#define FRAMES_MAX 40
#define SIG_MAX 1024

static int armed;       /* main() has started */
static int in_shim;     /* the shim's own work (backtrace, dladdr, stdio) is not counted */
static int failed;      /* the one failure has happened */
static long long count; /* allocations counted since main */
static long long sends; /* sendmsg calls since main */
static long long fail_at = -1, after, base = -1; /* FAILMALLOC_FAIL, _AFTER, count at start */
static const char *site;                         /* FAILMALLOC_SITE */
static long long nth, site_hits;
static uintptr_t site_ra; /* the absolute address of the site's direct caller */
static int trace;
static int log_fd = -1;
static uintptr_t exe_lo, exe_hi; /* the executable's mapped range */
static uintptr_t *live_set;      /* open addressing over HIDE(block); 0 is an empty slot */
static uintptr_t *live_ra;       /* for each slot: the return address of its allocation */
static long long live;
#define SEEN_MAX 65536
static uint64_t seen[SEEN_MAX]; /* hashes of the signatures since the count started (AFTER) */
static size_t seen_n;

static ssize_t (*real_sendmsg)(int, const struct msghdr *, int);
static int (*real_connect)(int, const struct sockaddr *, socklen_t);

__attribute__((format(printf, 1, 2))) static void say(const char *fmt, ...)
{
    char line[SIG_MAX + 128];
    va_list ap;

    if (log_fd < 0)
        return;
    int was = in_shim;
    in_shim = 1;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (n > 0)
        (void)!write(log_fd, line, (size_t)n < sizeof line ? (size_t)n : sizeof line - 1);
    in_shim = was;
}

/* ---- the live-block set ----------------------------------------------------------------- */

/* Blocks are kept complemented: a plain pointer here would make valgrind's leak
 * check find every leaked block "still reachable" through this table. */
#define HIDE(ptr) (~(uintptr_t)(ptr))

static size_t slot_of(uintptr_t p)
{
    uint64_t h = (uint64_t)p * 0x9E3779B97F4A7C15ull;
    return (size_t)(h >> 43) & (SET_SLOTS - 1);
}

static void set_add(void *ptr, const void *ra)
{
    uintptr_t p = HIDE(ptr);
    if (!live_set || !ptr)
        return;
    for (size_t i = slot_of(p), n = 0; n < SET_SLOTS; i = (i + 1) & (SET_SLOTS - 1), n++) {
        if (live_set[i] == 0 || live_set[i] == p) {
            live += live_set[i] == 0;
            live_set[i] = p;
            live_ra[i] = (uintptr_t)ra;
            return;
        }
    }
}

/* Removes p; backward-shift deletion keeps every probe chain whole.  A block
 * allocated before main is not in the set and is ignored. */
static void set_del(void *ptr)
{
    uintptr_t p = HIDE(ptr);
    if (!live_set || !ptr)
        return;
    size_t i = slot_of(p);
    while (live_set[i] != p) {
        if (live_set[i] == 0)
            return;
        i = (i + 1) & (SET_SLOTS - 1);
    }
    live--;
    for (size_t j = i;;) {
        live_set[i] = 0;
        for (;;) {
            j = (j + 1) & (SET_SLOTS - 1);
            if (live_set[j] == 0)
                return;
            size_t k = slot_of(live_set[j]);
            /* The entry at j may stay when its home slot k lies cyclically in (i, j]. */
            if (i <= j ? (i < k && k <= j) : (i < k || k <= j))
                continue;
            break;
        }
        live_set[i] = live_set[j];
        live_ra[i] = live_ra[j];
        i = j;
    }
}

/* ---- counting and failing ---------------------------------------------------------------- */

/* Writes the signature of the allocation being made, by the code at return
 * address ra, into out. */
static void signature(const char *fn, const void *ra, char *out, size_t cap)
{
    void *frames[FRAMES_MAX];
    Dl_info info;
    const char *leaf = "?";
    unsigned long off = 0;
    size_t len;

    if (dladdr(ra, &info) && info.dli_fname && info.dli_fname[0]) {
        const char *slash = strrchr(info.dli_fname, '/');
        leaf = slash ? slash + 1 : info.dli_fname;
        off = (unsigned long)((uintptr_t)ra - (uintptr_t)info.dli_fbase);
    }
    int w = snprintf(out, cap, "%s %s+%lx", fn, leaf, off);
    len = w > 0 ? (size_t)w : 0;
    int n = backtrace(frames, FRAMES_MAX);
    for (int i = 0; i < n && len + 24 < cap; i++) {
        uintptr_t a = (uintptr_t)frames[i];
        if (a >= exe_lo && a < exe_hi) {
            w = snprintf(out + len, cap - len, " %lx", (unsigned long)(a - exe_lo));
            len += w > 0 ? (size_t)w : 0;
        }
    }
}

/* Counts one allocation made by the code at ra; returns 1 when it must fail
 * (then logged). */
static int should_fail(const char *fn, size_t size, const void *ra)
{
    char sig[SIG_MAX];
    int fail = 0;

    if (!armed || in_shim)
        return 0;
    long long k = count++;
    /* A backtrace per allocation is slow: only for a trace, when the direct
     * caller is the site's, or (few) after the n-th sendmsg to number them. */
    int at_site = site && !failed && base >= 0 && (uintptr_t)ra == site_ra;
    int numbered = after > 0 && base >= 0 && !failed;
    if (!trace && !at_site && !numbered)
        return 0;
    in_shim = 1;
    signature(fn, ra, sig, sizeof sig);
    if (trace)
        say("a %lld %zu %s\n", k, size, sig);
    if (!failed && fail_at >= 0 && base >= 0 && k - base == fail_at)
        fail = 1;
    if (at_site && strcmp(sig, site) == 0 && site_hits++ == nth)
        fail = 1;
    /* How many times this signature came before, from the start of the count:
     * with FAILMALLOC_AFTER, FAILMALLOC_SITE and FAILMALLOC_NTH=that fail the
     * same allocation again, whatever the order of the others. */
    uint64_t h = 1469598103934665603ull;
    for (const char *c = sig; *c; c++)
        h = (h ^ (unsigned char)*c) * 1099511628211ull;
    long long same = 0;
    for (size_t i = 0; numbered && i < seen_n; i++)
        same += seen[i] == h;
    if (numbered && seen_n < SEEN_MAX)
        seen[seen_n++] = h;
    if (fail) {
        failed = 1;
        say("fail %lld %zu %s\n", k, size, sig);
        if (numbered)
            say("failnth %lld\n", same);
    }
    in_shim = 0;
    if (fail)
        errno = ENOMEM;
    return fail;
}

#define RA __builtin_return_address(0)

static void *track(void *p, const void *ra)
{
    if (p && armed && !in_shim)
        set_add(p, ra);
    return p;
}

void *malloc(size_t n)
{
    if (should_fail("malloc", n, RA))
        return NULL;
    return track(__libc_malloc(n), RA);
}

void *calloc(size_t a, size_t b)
{
    if (should_fail("calloc", a * b, RA))
        return NULL;
    return track(__libc_calloc(a, b), RA);
}

void *realloc(void *p, size_t n)
{
    if (should_fail("realloc", n, RA))
        return NULL;
    if (p && n == 0) {
        set_del(p);
        return __libc_realloc(p, 0); /* frees p */
    }
    void *q = __libc_realloc(p, n);
    if (q && q != p) {
        set_del(p);
        track(q, RA);
    }
    return q;
}

void free(void *p)
{
    set_del(p);
    __libc_free(p);
}

int posix_memalign(void **out, size_t align, size_t n)
{
    if (should_fail("posix_memalign", n, RA))
        return ENOMEM;
    if (align < sizeof(void *) || (align & (align - 1)))
        return EINVAL;
    void *p = __libc_memalign(align, n);
    if (!p)
        return ENOMEM;
    *out = track(p, RA);
    return 0;
}

void *aligned_alloc(size_t align, size_t n)
{
    if (should_fail("aligned_alloc", n, RA))
        return NULL;
    return track(__libc_memalign(align, n), RA);
}

void *memalign(size_t align, size_t n)
{
    if (should_fail("memalign", n, RA))
        return NULL;
    return track(__libc_memalign(align, n), RA);
}

void *valloc(size_t n)
{
    if (should_fail("valloc", n, RA))
        return NULL;
    return track(__libc_memalign((size_t)sysconf(_SC_PAGESIZE), n), RA);
}

void *pvalloc(size_t n)
{
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    if (should_fail("pvalloc", n, RA))
        return NULL;
    return track(__libc_memalign(page, (n + page - 1) & ~(page - 1)), RA);
}

/* ---- markers ----------------------------------------------------------------------------- */

/* The program's getenv (glibc's internal calls do not come here): arms the
 * counter on ARM_VARIABLE. */
char *getenv(const char *name)
{
    size_t n = strlen(name);

    if (!armed && strcmp(name, ARM_VARIABLE) == 0) {
        armed = 1;
        if (after == 0)
            base = 0;
        say("mark main %lld\n", count);
    }
    for (char **e = environ; e && *e; e++)
        if (strncmp(*e, name, n) == 0 && (*e)[n] == '=')
            return *e + n + 1;
    return NULL;
}

ssize_t sendmsg(int fd, const struct msghdr *msg, int flags)
{
    if (armed) {
        if (++sends == after)
            base = count;
        say("mark sendmsg %lld\n", count);
    }
    return real_sendmsg(fd, msg, flags);
}

int connect(int fd, const struct sockaddr *addr, socklen_t len)
{
    if (armed)
        say("mark connect %lld\n", count);
    return real_connect(fd, addr, len);
}

/* Notes the address range of the executable (the first object listed). */
static int find_exe(struct dl_phdr_info *info, size_t size, void *data)
{
    uintptr_t hi = 0;

    (void)size;
    (void)data;
    for (int i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        if (ph->p_type == PT_LOAD && ph->p_vaddr + ph->p_memsz > hi)
            hi = ph->p_vaddr + ph->p_memsz;
    }
    exe_lo = info->dlpi_addr;
    exe_hi = info->dlpi_addr + hi;
    return 1;
}

/* Turns the "<module>+<offset>" of the site into an address. */
static int find_site(struct dl_phdr_info *info, size_t size, void *data)
{
    const char *at = strchr(site, ' '), *plus = at ? strchr(at + 1, '+') : NULL;
    const char *name = info->dlpi_name, *slash = strrchr(name, '/');

    (void)size;
    (void)data;
    if (!at || !plus)
        return 1;
    if (!name[0]) /* the executable: its file name is not in the list */
        name = program_invocation_name;
    slash = strrchr(name, '/');
    name = slash ? slash + 1 : name;
    if (strlen(name) != (size_t)(plus - at - 1) || strncmp(name, at + 1, strlen(name)) != 0)
        return 0;
    site_ra = info->dlpi_addr + strtoul(plus + 1, NULL, 16);
    return 1;
}

__attribute__((constructor)) static void failmalloc_init(void)
{
    in_shim = 1;
    const char *v = getenv("FAILMALLOC_FAIL"), *path = getenv("FAILMALLOC_LOG");
    const char *a = getenv("FAILMALLOC_AFTER"), *t = getenv("FAILMALLOC_TRACE");
    const char *s = getenv("FAILMALLOC_SITE"), *w = getenv("FAILMALLOC_NTH");
    if (v && *v)
        fail_at = strtoll(v, NULL, 10);
    if (a && *a)
        after = strtoll(a, NULL, 10);
    if (s && *s)
        site = s;
    if (w && *w)
        nth = strtoll(w, NULL, 10);
    trace = t && *t == '1';
    if (path && *path)
        log_fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    real_sendmsg = (ssize_t(*)(int, const struct msghdr *, int))dlsym(RTLD_NEXT, "sendmsg");
    real_connect = (int (*)(int, const struct sockaddr *, socklen_t))dlsym(RTLD_NEXT, "connect");
    dl_iterate_phdr(find_exe, NULL);
    if (site)
        dl_iterate_phdr(find_site, NULL);
    void *m = mmap(NULL, SET_SLOTS * sizeof *live_set, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    void *r = mmap(NULL, SET_SLOTS * sizeof *live_ra, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    live_set = m == MAP_FAILED || r == MAP_FAILED ? NULL : m;
    live_ra = r;
    void *frames[2];
    backtrace(frames, 2); /* loads libgcc_s now, not in the middle of a failure */
    in_shim = 0;
}

/* At exit: the totals, then the live blocks by the module that allocated
 * them ("live <module> <blocks>"), from a small table of module names. */
__attribute__((destructor)) static void failmalloc_fini(void)
{
    enum { MODULES = 16 };
    const char *name[MODULES];
    long long n[MODULES];
    int used = 0;

    in_shim = 1;
    say("exit %lld %lld %d\n", count, live, failed);
    for (size_t i = 0; live_set && i < SET_SLOTS; i++) {
        if (!live_set[i])
            continue;
        Dl_info info;
        const char *mod = "?";
        if (dladdr((void *)live_ra[i], &info) && info.dli_fname && info.dli_fname[0]) {
            const char *slash = strrchr(info.dli_fname, '/');
            mod = slash ? slash + 1 : info.dli_fname;
        }
        int k = 0;
        while (k < used && strcmp(name[k], mod) != 0)
            k++;
        if (k == used) {
            if (used == MODULES)
                continue;
            name[used] = mod;
            n[used++] = 0;
        }
        n[k]++;
    }
    for (int k = 0; k < used; k++)
        say("live %s %lld\n", name[k], n[k]);
}
