/* The agent executor: runs one claimed task attempt to its outcome on the worker's event loop
 * (CrewAI semantics): builds the prompts, streams model calls through az_http, runs tools and
 * delegation, validates the output, writes the outcome through the task service, and updates
 * the run, the agent's status and memory. Everything blocking (PostgreSQL, synchronous Redis,
 * tools) runs on libuv's threadpool (uv_queue_work); the loop thread never blocks.
 * Every function must be called on the loop's thread; every callback runs there. */
#ifndef AZ_EXECUTOR_H
#define AZ_EXECUTOR_H

#include <stdint.h>
#include <uv.h>

#include "agentz/v1/event.pb-c.h"
#include "agentz/v1/task.pb-c.h"
#include "agent/memory.h"
#include "core/err.h"
#include "engine/http.h"
#include "llm/price.h"
#include "secret/secret.h"
#include "store/pgpool.h"
#include "store/redis.h"
#include "tools/netguard.h"
#include "tools/tools.h"

/* Where ephemeral events (token deltas, tool calls, progress) of a running task go; ev is
 * borrowed for the call. Called on the loop; must not block. */
typedef void (*az_exec_event_fn)(void *arg, const char *workspace_id, const Agentz__V1__Event *ev);

/* What every execution shares; all borrowed, all must outlive every execution. */
typedef struct az_engine_env {
    uv_loop_t *loop;
    az_http *http;
    az_pg *pg;
    az_redis *redis;                /* synchronous; only used inside threadpool jobs */
    az_secret_keyring *keys;        /* NULL: an agent naming api_key_secret fails non-retryably */
    const az_netguard *guard;       /* outbound policy for LLM calls and tools (never NULL) */
    const az_llm_prices *prices;    /* NULL = az_llm_prices_default() */
    const az_tools *tools;          /* the built-in tool registry */
    const az_memory_config *memory; /* embeddings endpoint for memory; NULL = keyword recall */
    const char *worker_id;          /* recorded on attempts */
    az_exec_event_fn on_event;      /* may be NULL */
    void *event_arg;
} az_engine_env;

typedef enum az_exec_abort_reason {
    AZ_EXEC_ABORT_LOST = 1, /* the task is no longer ours (cancelled, lease lost): write nothing */
    AZ_EXEC_ABORT_HANDBACK, /* worker shutdown: give the task back to the queue (az_task_release) */
} az_exec_abort_reason;

typedef struct az_exec az_exec;

/* Called once per execution, after its outcome has been written (or not, when aborted as
 * LOST). The callee frees ex with az_exec_free (inside the callback is allowed). */
typedef void (*az_exec_done_fn)(void *arg, az_exec *ex);

/* Starts executing task (a claimed, running task; deep-copied) of workspace_id. Its outcome is
 * written through the task service: az_task_complete, az_task_fail_after (retryable errors with
 * the provider's Retry-After), az_task_release (hand-back); then ready dependents are published
 * (az_queue_publish) and the run is refreshed (az_run_sync). The per-attempt deadline is the
 * smaller of the agent's max_execution_time and what is left of the task's timeout.
 * On AZ_OK *out is the caller's handle and done will be called exactly once (never from inside
 * this call). On error nothing started, done is never called: AZ_ERR_NOMEM, AZ_ERR_INVALID. */
az_err az_exec_start(const az_engine_env *env, const char *workspace_id,
                     const Agentz__V1__Task *task, az_exec_done_fn done, void *arg, az_exec **out,
                     char *msg);

/* Stops an execution within a second: aborts its model call (az_http_remove), ignores tool jobs
 * still running on the threadpool, and for HANDBACK gives the task back. done is still called
 * once, asynchronously. A second abort, or an abort after the outcome is being written, is
 * ignored. */
void az_exec_abort(az_exec *ex, az_exec_abort_reason why);

/* The task id / attempt / workspace of an execution (owned by ex). */
const char *az_exec_task_id(const az_exec *ex);
int az_exec_attempt(const az_exec *ex);
const char *az_exec_workspace_id(const az_exec *ex);

/* Frees ex; only after its done callback ran. Accepts NULL. */
void az_exec_free(az_exec *ex);

#endif
