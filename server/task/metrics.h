/* Task metrics read from the task service's tables: per agent (GetAgentMetrics, WatchAgents),
 * counters, usage and durations of one agent's tasks over a time window; and a workspace's load
 * now (SystemService.StreamMetrics): queued, running, finished in the last minute. */
#ifndef AZ_METRICS_H
#define AZ_METRICS_H

#include <stdint.h>

#include "agentz/v1/common.pb-c.h"
#include "core/arena.h"
#include "core/ctx.h"
#include "store/pgpool.h"

/* Metrics of agent_id's tasks over [start_us, end_us) (µs since the epoch, start < end):
 *   tasks_total      tasks that started (first attempt) in the window;
 *   tasks_running    tasks running now, whatever the window;
 *   tasks_succeeded / tasks_failed   tasks that ended so in the window;
 *   usage            tokens and cost of the attempts that ended in the window;
 *   p50/p95_duration start of the first attempt to end of the final one, over tasks that ended
 *                    in the window (unset when none did).
 * The agent's existence is not checked (an unknown agent has all zeros). On AZ_OK *out lives in
 * arena. AZ_ERR_INVALID when agent_id is not a uuid or the window is empty; database errors as
 * az_pg_exec maps them. */
az_err az_task_agent_metrics(az_pg *pg, const az_ctx *ctx, const char *agent_id, int64_t start_us,
                             int64_t end_us, az_arena *arena, Agentz__V1__AgentMetrics **out,
                             char *msg);

/* A workspace's task load at one moment. */
typedef struct az_task_load {
    int64_t queued;      /* tasks in TASK_STATUS_QUEUED */
    int64_t running;     /* tasks in TASK_STATUS_RUNNING */
    int64_t last_minute; /* tasks that reached a terminal status in the last 60 s */
} az_task_load;

/* Counts ctx's workspace's queued and running tasks and those that finished in the last minute,
 * in one statement (ctx->workspace_id NULL or empty: every workspace, as system work). Fills
 * *out (zeros on error). Database errors as az_pg_exec maps them (AZ_ERR_UNAVAILABLE when
 * PostgreSQL is down, AZ_ERR_DEADLINE past ctx's deadline), with msg. */
az_err az_task_load_get(az_pg *pg, const az_ctx *ctx, az_task_load *out, char *msg);

#endif
