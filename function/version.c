/* version.c - the release and the linked libraries' versions. */
#include "version.h"

#include <cJSON.h>
#include <libpq-fe.h>
#include <openssl/crypto.h>

/* The Makefile defines LOGIN_ETL_VERSION for this file alone (from
 * tools/version.sh, rebuilt when it changes); a build outside the Makefile
 * says so rather than naming a release it cannot know. */
#ifndef LOGIN_ETL_VERSION
#define LOGIN_ETL_VERSION "unknown"
#endif

#if defined(__x86_64__)
#define VERSION_ARCH "x86_64"
#elif defined(__aarch64__)
#define VERSION_ARCH "arm64"
#else
#define VERSION_ARCH "unknown architecture"
#endif

const char *version_release(void)
{
    return LOGIN_ETL_VERSION;
}

int version_print(FILE *f)
{
    /* PQlibVersion: major * 10000 + minor since PostgreSQL 10. */
    int pq = PQlibVersion();

    fprintf(f, "login-etl %s (%s)\n", version_release(), VERSION_ARCH);
    fprintf(f, "%s\n", OpenSSL_version(OPENSSL_VERSION));
    fprintf(f, "libpq %d.%d\n", pq / 10000, pq % 10000);
    fprintf(f, "cJSON %s\n", cJSON_Version());
    return fflush(f) == 0 && !ferror(f) ? 0 : 1;
}
