/* The standard grpc.health.v1.Health service (Check, Watch), reporting the real health of the
 * server's dependencies as measured by periodic checks on a background thread. */
#ifndef AZ_HEALTH_H
#define AZ_HEALTH_H

#include <stddef.h>

#include "../core/err.h"
#include "rpc.h"

/* Values of grpc.health.v1.HealthCheckResponse.ServingStatus, so callers need not include the
 * generated header. */
typedef enum az_health_serving {
    AZ_HEALTH_UNKNOWN = 0,
    AZ_HEALTH_SERVING = 1,
    AZ_HEALTH_NOT_SERVING = 2,
    AZ_HEALTH_SERVICE_UNKNOWN = 3,
} az_health_serving;

#define AZ_HEALTH_MAX_CHECKS 8

typedef struct az_health az_health;

/* A dependency probe: returns AZ_OK when the dependency is reachable, else an error with msg
 * (AZ_MSG_MAX bytes) saying what failed. Runs on the checker thread (and on the caller's in
 * az_health_start / az_health_run_checks), never two at once; may block, but should bound
 * its own time (connect and statement timeouts). */
typedef az_err (*az_health_check_fn)(void *arg, char *msg);

/* Creates a health service whose checks run every check_interval_ms (<= 0: 5000). Nothing runs
 * until az_health_start. Returns NULL when out of memory. Free with az_health_free. */
az_health *az_health_new(int check_interval_ms);

/* Stops and joins the checker thread, finishes any Watch still open (as az_health_shutdown
 * does) and frees h; accepts NULL. Watch streams point back at h until their calls are over,
 * so free h only after az_server_shutdown has returned. */
void az_health_free(az_health *h);

/* Registers a dependency check named name (copied; used in logs: "postgres", "redis"); arg
 * is borrowed and must outlive h. Call before az_health_start. AZ_ERR_EXHAUSTED past
 * AZ_HEALTH_MAX_CHECKS, AZ_ERR_PRECONDITION after start, AZ_ERR_INVALID for a NULL fn or an
 * empty name, AZ_ERR_NOMEM; msg says which. */
az_err az_health_add_check(az_health *h, const char *name, az_health_check_fn fn, void *arg,
                           char *msg);

/* Makes service (copied, e.g. "agentz.v1.AgentService") known; its status follows the overall
 * one. "" (the whole server) is always known. May be called at any time: Watch streams on a
 * service that becomes known get its status at once. Adding a known name again is a no-op.
 * AZ_ERR_NOMEM with msg. */
az_err az_health_add_service(az_health *h, const char *service, char *msg);

/* Runs every check once on the caller's thread, then starts the checker thread. Failing checks
 * do not fail the start: they are logged and the server reports NOT_SERVING until they pass.
 * AZ_ERR_PRECONDITION when already started or shut down, AZ_ERR_INTERNAL when the thread
 * cannot be created; msg says which. */
az_err az_health_start(az_health *h, char *msg);

/* Turns every known service NOT_SERVING (open Watch streams receive it), then finishes every
 * open Watch with UNAVAILABLE "server shutting down"; later Watch calls fail the same way and
 * Check answers NOT_SERVING. Wakes the checker thread, which exits. Idempotent; never blocks on
 * a check. Register it with az_server_on_shutdown through a void * wrapper. */
void az_health_shutdown(az_health *h);

/* The method table bound to h: /grpc.health.v1.Health/Check (AZ_RPC_UNARY) and
 * /grpc.health.v1.Health/Watch (AZ_RPC_SERVER_STREAM); *n = 2. Owned by h. */
const az_method *az_health_methods(az_health *h, size_t *n);

/* The status Check would report: SERVING or NOT_SERVING for a known service (NOT_SERVING
 * before az_health_start, while any check failed its last run, and after shutdown), and
 * AZ_HEALTH_SERVICE_UNKNOWN for any other name (Check answers that with NOT_FOUND). */
az_health_serving az_health_status(az_health *h, const char *service);

/* Runs every check once now on the caller's thread (serialized with the checker thread),
 * updating the status and notifying watchers as a periodic run would. For tests and for
 * operators who want a fresh answer; a no-op before az_health_start and after shutdown. */
void az_health_run_checks(az_health *h);

#endif
