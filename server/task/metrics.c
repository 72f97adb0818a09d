/* Task metrics: per agent over a time window (one statement over the agent's tasks, index
 * tasks_by_agent, and the attempts that ended in the window), and a workspace's load now. */
#include "metrics.h"

#include <stdio.h>
#include <stdlib.h>

#include "core/pbtime.h"
#include "core/text.h"
#include "google/protobuf/duration.pb-c.h"
#include "google/protobuf/timestamp.pb-c.h"

/* $3/$4: the window's bounds in µs since the epoch, made exact timestamptz values (to_timestamp
 * goes through a double). Durations cover tasks that ended in the window, whatever their end
 * state, provided they ever started. */
static const char SQL[] =
    "WITH b AS (SELECT timestamptz 'epoch' + $3::bigint * interval '1 microsecond' AS s,"
    "  timestamptz 'epoch' + $4::bigint * interval '1 microsecond' AS e),"
    " t AS (SELECT t.status, t.start_time, t.end_time,"
    "  CASE WHEN t.start_time IS NOT NULL AND t.end_time >= b.s AND t.end_time < b.e"
    "   AND t.status IN (5, 6, 7)"
    "   THEN extract(epoch FROM t.end_time - t.start_time) * 1000000 END AS us"
    "  FROM tasks t, b WHERE t.workspace_id = $1 AND t.agent_id = $2::uuid),"
    " u AS (SELECT COALESCE(sum(a.prompt_tokens), 0) AS pt, COALESCE(sum(a.completion_tokens), 0) AS ct,"
    "  COALESCE(sum(a.total_tokens), 0) AS tt, COALESCE(sum(a.cost_usd), 0) AS cost"
    "  FROM task_attempts a JOIN tasks t ON t.workspace_id = a.workspace_id AND t.id = a.task_id, b"
    "  WHERE t.workspace_id = $1 AND t.agent_id = $2::uuid AND a.end_time >= b.s AND a.end_time < b.e)"
    " SELECT count(*) FILTER (WHERE t.start_time >= b.s AND t.start_time < b.e),"
    " count(*) FILTER (WHERE t.status = 3),"
    " count(*) FILTER (WHERE t.status = 5 AND t.end_time >= b.s AND t.end_time < b.e),"
    " count(*) FILTER (WHERE t.status = 6 AND t.end_time >= b.s AND t.end_time < b.e),"
    " COALESCE(round(percentile_cont(0.5) WITHIN GROUP (ORDER BY t.us))::bigint, -1),"
    " COALESCE(round(percentile_cont(0.95) WITHIN GROUP (ORDER BY t.us))::bigint, -1),"
    " (SELECT pt FROM u), (SELECT ct FROM u), (SELECT tt FROM u), (SELECT cost FROM u)"
    " FROM b LEFT JOIN t ON true GROUP BY b.s, b.e";

static long long num(const PGresult *r, int c) { return atoll(PQgetvalue(r, 0, c)); }

az_err az_task_agent_metrics(az_pg *pg, const az_ctx *ctx, const char *agent_id, int64_t start_us,
                             int64_t end_us, az_arena *a, Agentz__V1__AgentMetrics **out, char *msg)
{
    *out = NULL;
    if (!agent_id || !az_text_is_uuid(agent_id))
        return az_fail(msg, AZ_ERR_INVALID, "agent_id: not a uuid");
    if (start_us >= end_us)
        return az_fail(msg, AZ_ERR_INVALID, "start_time: must be before end_time");
    char s[24], e[24];
    snprintf(s, sizeof s, "%lld", (long long)start_us);
    snprintf(e, sizeof e, "%lld", (long long)end_us);
    const char *p[4] = {ctx->workspace_id, agent_id, s, e};
    az_pgconn *c;
    az_err err = az_pg_acquire(pg, ctx, &c, msg);
    if (err != AZ_OK) return err;
    PGresult *r;
    err = az_pg_exec(c, ctx, SQL, 4, p, &r, msg);
    az_pg_release(c);
    if (err != AZ_OK) return err;
    Agentz__V1__AgentMetrics *m = az_arena_alloc(a, sizeof *m);
    Agentz__V1__TokenUsage *u = az_arena_alloc(a, sizeof *u);
    int oom = !m || !u;
    if (!oom) {
        agentz__v1__agent_metrics__init(m);
        agentz__v1__token_usage__init(u);
        m->agent_id = az_arena_strdup(a, agent_id);
        m->tasks_total = num(r, 0);
        m->tasks_running = num(r, 1);
        m->tasks_succeeded = num(r, 2);
        m->tasks_failed = num(r, 3);
        long long p50 = num(r, 4), p95 = num(r, 5);
        if (p50 >= 0 && !(m->p50_duration = az_pbtime_duration(a, p50))) oom = 1;
        if (p95 >= 0 && !(m->p95_duration = az_pbtime_duration(a, p95))) oom = 1;
        u->prompt_tokens = num(r, 6);
        u->completion_tokens = num(r, 7);
        u->total_tokens = num(r, 8);
        u->cost_usd = strtod(PQgetvalue(r, 0, 9), NULL);
        m->usage = u;
        m->start_time = az_pbtime_timestamp(a, start_us);
        m->end_time = az_pbtime_timestamp(a, end_us);
        if (!m->agent_id || !m->start_time || !m->end_time) oom = 1;
    }
    PQclear(r);
    if (oom) return az_fail(msg, AZ_ERR_NOMEM, "out of memory");
    *out = m;
    return AZ_OK;
}

/* Queued and running come from tasks_by_status (workspace_id, status). Finished tasks are
 * found through tasks_stats (workspace_id, create_time INCLUDE status, end_time): an index-only
 * scan of the workspace, as no index leads with end_time. Without a workspace ($1 NULL, system
 * work) row-level security lets every row through and the same statement counts them all. */
static const char LOAD_SQL[] =
    "SELECT (SELECT count(*) FROM tasks WHERE ($1::uuid IS NULL OR workspace_id = $1::uuid) AND status = 2),"
    " (SELECT count(*) FROM tasks WHERE ($1::uuid IS NULL OR workspace_id = $1::uuid) AND status = 3),"
    " (SELECT count(*) FROM tasks WHERE ($1::uuid IS NULL OR workspace_id = $1::uuid)"
    "  AND status IN (5, 6, 7) AND end_time >= clock_timestamp() - interval '1 minute')";

az_err az_task_load_get(az_pg *pg, const az_ctx *ctx, az_task_load *out, char *msg)
{
    *out = (az_task_load){0};
    const char *ws = ctx && ctx->workspace_id && *ctx->workspace_id ? ctx->workspace_id : NULL;
    const char *p[1] = {ws};
    az_pgconn *c;
    az_err err = az_pg_acquire(pg, ctx, &c, msg);
    if (err != AZ_OK) return err;
    PGresult *r;
    err = az_pg_exec(c, ctx, LOAD_SQL, 1, p, &r, msg);
    az_pg_release(c);
    if (err != AZ_OK) return err;
    if (PQntuples(r) == 1) {
        out->queued = num(r, 0);
        out->running = num(r, 1);
        out->last_minute = num(r, 2);
    }
    PQclear(r);
    return AZ_OK;
}
