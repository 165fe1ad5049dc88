/* main.c - wires the runtime loop to the ETL handler.  With an argument it
 * is the operators' tool instead: `bootstrap mask VALUE`, `bootstrap unmask
 * MASKED` (see mask_cli.h), `bootstrap rekey` (see rekey.h), `bootstrap reprocess`
 * (see reprocess.h), `bootstrap --version`
 * (see version.h). */
#define _DEFAULT_SOURCE /* mallopt */
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "etl.h"
#include "log.h"
#include "mask_cli.h"
#include "rekey.h"
#include "reprocess.h"
#include "rt.h"
#include "version.h"

int main(int argc, char **argv)
{
    struct logger lg;
    char err[ERR_LEN];
    const char *err_type = NULL;
    int status = 1;

    if (argc > 1 && strcmp(argv[1], "rekey") == 0)
        return rekey_cli(argc, argv);
    if (argc > 1 && strcmp(argv[1], "reprocess") == 0)
        return reprocess_cli(argc, argv);
    if (argc == 2 && strcmp(argv[1], "--version") == 0)
        return version_print(stdout);
    if (argc > 1)
        return mask_cli(argc, argv);

    /* First of all: from here on a SIGTERM (Lambda's shutdown) waits for the
     * runtime loop, which answers it with a log line and exit 0; before, it
     * would end the process by the default action, silently. */
    rc_t signals = rt_signals_init(err);

    /* Every allocation of 128 KiB or more gets its own mapping, returned to
     * the system when freed.  glibc otherwise raises that threshold each
     * time it frees such a mapping (up to 32 MiB), after which an event's
     * large arrays come from the heap, where freed memory stays resident
     * (measured: tests/bench/README.md). */
    mallopt(M_MMAP_THRESHOLD, 128 * 1024);
    log_init(&lg, getenv("AWS_LAMBDA_LOG_LEVEL"), getenv("AWS_LAMBDA_LOG_FORMAT"), 1);
    lg.version = version_release();
    if (signals != RC_OK) {
        log_at(&lg, LOG_FATAL, "init failed", LF_STR("error", err));
        return 1;
    }
    const char *api = getenv("AWS_LAMBDA_RUNTIME_API");
    if (!api || !*api) {
        log_msg(&lg, LOG_FATAL,
                "AWS_LAMBDA_RUNTIME_API is not set: run me under Lambda or a "
                "Runtime API emulator, or use `bootstrap mask|unmask|rekey|reprocess`");
        return 1;
    }
    struct rt *rt = rt_new(api, &lg, err);
    if (!rt) {
        log_at(&lg, LOG_FATAL, "bad AWS_LAMBDA_RUNTIME_API", LF_STR("error", err));
        return 1;
    }
    struct etl *etl = etl_new(&lg, err, &err_type);
    if (!etl) {
        log_at(&lg, LOG_FATAL, "init failed", LF_STR("errorType", err_type), LF_STR("error", err));
        rt_init_error(rt, err_type, err);
        goto out;
    }
    rc_t rc = rt_run(rt, etl_handle, etl, etl_max_invocations(etl));
    status = rc == RC_OK ? 0 : 1;
out:
    /* Closes the database connection (a Terminate message, so the server
     * ends the session at once) before the process goes. */
    etl_free(etl);
    if (rt_terminated(rt))
        log_msg(&lg, LOG_INFO, "shut down on SIGTERM: database connection closed");
    rt_free(rt);
    return status;
}
