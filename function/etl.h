/* etl.h - the handler: one SQS event in, rows in Postgres, the list of
 * failed messages out (docs/behaviour.md).  It plugs into the runtime
 * loop as an rt_handler; it never sees HTTP. */
#ifndef ETL_H
#define ETL_H

#include "buf.h"
#include "log.h"
#include "result.h"
#include "rt.h"

struct etl; /* opaque: settings, the masking key, the database sink, reusable buffers */

/* Reads the settings and prepares what can be prepared before the first
 * event (the masking key when given directly).  Returns NULL with err and
 * *err_type filled (for /runtime/init/error) when a setting is missing or
 * malformed, or memory is short.  Free with etl_free. */
struct etl *etl_new(struct logger *lg, char err[ERR_LEN], const char **err_type);

/* The rt_handler: ctx is the struct etl.  Answers {"batchItemFailures":[...]}
 * or, for an event that is not an SQS event or a database that cannot be
 * reached, reports an invocation error. */
rc_t etl_handle(void *ctx, const struct rt_invocation *inv, struct buf *answer,
                struct rt_error *error);

/* How many invocations the process should serve (0: no limit; tests). */
unsigned long etl_max_invocations(const struct etl *e);

/* Wipes the keys, closes the database connection, frees everything; NULL allowed. */
void etl_free(struct etl *e);

#endif
