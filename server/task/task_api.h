/* TaskService over gRPC: validates requests (errors name the field), calls the task service,
 * publishes newly ready tasks to the Redis queue after commit, and tells the workflow module
 * when a task of a run changed by hand. */
#ifndef AZ_TASK_API_H
#define AZ_TASK_API_H

#include "rpc/rpc.h"
#include "store/redis.h"
#include "task.h"

typedef struct az_task_api az_task_api;

/* Limits, also documented in docs/tasks.md. */
#define AZ_TASK_DESCRIPTION_MAX 16384
#define AZ_TASK_EXPECTED_OUTPUT_MAX 16384
#define AZ_TASK_DEPENDS_ON_MAX 100
#define AZ_TASK_CONTEXT_MAX 20
#define AZ_TASK_CONTEXT_ITEM_MAX 16384
#define AZ_TASK_OUTPUT_SCHEMA_MAX 65536
#define AZ_TASK_INITIAL_BACKOFF_MAX_S 3600
#define AZ_TASK_MAXIMUM_BACKOFF_MAX_S 86400
#define AZ_TASK_COEFFICIENT_MAX 100.0
#define AZ_TASK_MAX_ATTEMPTS_MAX 1000
#define AZ_TASK_NON_RETRYABLE_MAX 32
#define AZ_TASK_ERROR_TYPE_MAX 128
#define AZ_TASK_TIMEOUT_MAX_S (7 * 86400)
#define AZ_TASK_WEBHOOKS_MAX 8
#define AZ_TASK_LABELS_MAX 64
#define AZ_TASK_REASON_MAX 1024

/* Binds the API to a pool and a Redis connection (borrowed; both must outlive the API). redis
 * may be NULL (nothing is published; the reconciler will). NULL when out of memory. */
az_task_api *az_task_api_new(az_pg *pg, az_redis *redis);
void az_task_api_free(az_task_api *api); /* accepts NULL */

/* The method table (owned by api), WatchTask included. */
const az_method *az_task_api_methods(az_task_api *api, size_t *n);

/* Serves WatchTask through w (borrowed; must outlive the server); without it WatchTask answers
 * UNAVAILABLE. Call before serving. */
typedef struct az_watch az_watch;
void az_task_api_set_watch(az_task_api *api, az_watch *w);

/* The server's message size limit (az_server_config.max_message_bytes; 0 = its 4 MiB default):
 * a CreateTasks whose response would be larger is refused (INVALID_ARGUMENT, nothing written)
 * rather than committed and then lost in sending. Call before serving. */
void az_task_api_set_max_message_bytes(az_task_api *api, int bytes);

/* Registers fn(arg, ctx, run_id, msg), called after CancelTask/RetryTask changed a task that
 * belongs to a run, so the run's status follows (the workflow module registers az_run_sync).
 * Its failure is logged, not returned: the task change is committed. Call before serving. */
void az_task_api_set_run_hook(az_task_api *api,
                              az_err (*fn)(void *arg, const az_ctx *ctx, const char *run_id, char *msg),
                              void *arg);

/* Checks every client-settable field of t for CreateTask (not the agent's existence).
 * AZ_ERR_INVALID names the field: "task.retry_policy.backoff_coefficient: must be >= 1". */
az_err az_task_api_validate(const Agentz__V1__Task *t, char *msg);

#endif
