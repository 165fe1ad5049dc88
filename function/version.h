/* version.h - which build this is: the release it was built from (the
 * build's `git describe --tags --dirty`, or a source tarball's VERSION file;
 * tools/version.sh) and the versions of the libraries linked into it, for
 * `bootstrap --version` and for the "version" field of every log line. */
#ifndef VERSION_H
#define VERSION_H

#include <stdio.h>

/* The release, e.g. "v1.1.0" or "v1.1.0-3-g1a2b3c4-dirty": only characters of
 * [A-Za-z0-9._+-], so it needs no escaping in JSON or a file name.  A static
 * string; cannot fail. */
const char *version_release(void);

/* Prints `bootstrap --version`'s text to f: the release and architecture on
 * the first line, then OpenSSL's, libpq's and cJSON's versions as the linked
 * libraries report them (OpenSSL_version, PQlibVersion, cJSON_Version), not
 * as the headers said at compile time.  Returns 0, or 1 when writing failed
 * (the process exit status). */
int version_print(FILE *f);

#endif
