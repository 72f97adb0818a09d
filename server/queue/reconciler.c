/* The reconciler thread: PostgreSQL decides which tasks are ready; this re-announces them on the
 * Redis stream until a worker claims them. */
#include "reconciler.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/log.h"
#include "queue.h"
#include "task/task.h"

#define BATCH_LIMIT 1000

struct az_reconciler {
    az_pg *pg;
    az_redis *redis;
    int interval_ms;
    int64_t republish_after_ms;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int started, stop;
    az_err (*run_hook)(void *arg, const az_ctx *ctx, const char *run_id, char *msg);
    void *run_hook_arg;
    az_err (*agent_hook)(void *arg, const az_ctx *ctx, const char *agent_id, const char *worker,
                        int failed, char *msg);
    void *agent_hook_arg;
    az_err (*retention_hook)(void *arg, az_pg *pg, char *msg);
    void *retention_arg;
    int64_t retention_every_ms;
};

void az_reconciler_set_run_hook(az_reconciler *r,
                                az_err (*fn)(void *arg, const az_ctx *ctx, const char *run_id,
                                             char *msg),
                                void *arg)
{
    r->run_hook = fn;
    r->run_hook_arg = arg;
}

void az_reconciler_set_agent_hook(az_reconciler *r,
                                  az_err (*fn)(void *arg, const az_ctx *ctx, const char *agent_id,
                                               const char *worker, int failed, char *msg),
                                  void *arg)
{
    r->agent_hook = fn;
    r->agent_hook_arg = arg;
}

void az_reconciler_set_retention_hook(az_reconciler *r, az_err (*fn)(void *arg, az_pg *pg, char *msg),
                                      void *arg, int64_t every_ms)
{
    r->retention_hook = fn;
    r->retention_arg = arg;
    r->retention_every_ms = every_ms > 0 ? every_ms : 3600000;
}

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Reaps expired leases, publishes the tasks that became ready (grouped by workspace: one
 * publish per workspace) and refreshes the runs of reaped tasks. */
static az_err reap(az_reconciler *r, az_reconciler_counts *counts, char *msg)
{
    az_arena *a = az_arena_new(0);
    if (!a) return az_fail(msg, AZ_ERR_NOMEM, "out of memory");
    az_task_ready ready = {.arena = a};
    char **ws = NULL;
    az_task_reaped *list = NULL;
    int reaped = 0;
    char m[AZ_MSG_MAX];
    az_err first = az_task_reap_expired(r->pg, BATCH_LIMIT, &reaped, &ready, &ws, a, &list, m);
    if (first != AZ_OK) az_fail(msg, first, "cannot reap expired task leases: %s", m);
    counts->reaped += reaped;
    if (reaped) az_info("reaped %d tasks whose worker stopped renewing its lease", reaped);
    /* Group by workspace: each id is published once, with the first batch of its workspace. */
    char *done = ready.n ? az_arena_alloc(a, ready.n) : NULL;
    if (ready.n && !done) {
        az_arena_free(a);
        return az_fail(msg, AZ_ERR_NOMEM, "out of memory");
    }
    if (done) memset(done, 0, ready.n);
    for (size_t i = 0; i < ready.n; i++) {
        if (done[i]) continue;
        az_task_ready batch = {.arena = a};
        batch.ids = az_arena_alloc(a, ready.n * sizeof *batch.ids);
        if (!batch.ids) {
            az_arena_free(a);
            return az_fail(msg, AZ_ERR_NOMEM, "out of memory");
        }
        for (size_t k = i; k < ready.n; k++) {
            if (!done[k] && strcmp(ws[k], ws[i]) == 0) {
                batch.ids[batch.n++] = ready.ids[k];
                done[k] = 1;
            }
        }
        az_err err = az_queue_publish(r->redis, ws[i], &batch, m);
        if (err != AZ_OK && first == AZ_OK)
            first = az_fail(msg, err, "cannot publish reaped tasks of workspace %s: %s", ws[i], m);
    }
    for (int i = 0; list && i < reaped; i++) {
        const az_task_reaped *e = &list[i];
        az_ctx ctx = {.workspace_id = e->workspace_id, .principal = "", .request_id = "reconciler",
                      .deadline_ms = -1};
        if (r->agent_hook && *e->agent_id &&
            r->agent_hook(r->agent_hook_arg, &ctx, e->agent_id, e->worker, e->failed, m) != AZ_OK)
            az_warn("cannot update agent %s after reaping task %s: %s", e->agent_id, e->task_id, m);
        if (r->run_hook && *e->run_id && r->run_hook(r->run_hook_arg, &ctx, e->run_id, m) != AZ_OK)
            az_warn("cannot refresh run %s after reaping task %s: %s", e->run_id, e->task_id, m);
    }
    az_arena_free(a);
    return first;
}

az_reconciler *az_reconciler_new(az_pg *pg, az_redis *redis, int interval_ms,
                                 int64_t republish_after_ms)
{
    az_reconciler *r = calloc(1, sizeof *r);
    if (!r) return NULL;
    r->pg = pg;
    r->redis = redis;
    r->interval_ms = interval_ms > 0 ? interval_ms : AZ_RECONCILER_DEFAULT_INTERVAL_MS;
    r->republish_after_ms =
        republish_after_ms > 0 ? republish_after_ms : AZ_RECONCILER_DEFAULT_REPUBLISH_MS;
    pthread_mutex_init(&r->mu, NULL);
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&r->cv, &attr);
    pthread_condattr_destroy(&attr);
    return r;
}

/* Wakes and re-publishes the tasks of one workspace; the first error wins, but both steps run. */
static az_err one_workspace(az_reconciler *r, const char *ws, az_reconciler_counts *counts, char *msg)
{
    az_ctx ctx = {.workspace_id = ws, .principal = "", .request_id = "reconciler", .deadline_ms = -1};
    az_arena *a = az_arena_new(0);
    if (!a) return az_fail(msg, AZ_ERR_NOMEM, "out of memory");
    az_err first = AZ_OK;
    char m[AZ_MSG_MAX];
    az_task_ready woken = {.arena = a}, stale = {.arena = a};
    az_err err = az_task_wake(r->pg, &ctx, BATCH_LIMIT, a, &woken, m);
    if (err == AZ_OK) err = az_queue_publish(r->redis, ws, &woken, m);
    if (err != AZ_OK) first = az_fail(msg, err, "cannot wake backoff tasks of workspace %s: %s", ws, m);
    err = az_task_stale_queued(r->pg, &ctx, r->republish_after_ms, BATCH_LIMIT, a, &stale, m);
    if (err == AZ_OK) err = az_queue_publish(r->redis, ws, &stale, m);
    if (err != AZ_OK && first == AZ_OK)
        first = az_fail(msg, err, "cannot re-publish queued tasks of workspace %s: %s", ws, m);
    counts->woken += (int)woken.n;
    counts->republished += (int)stale.n;
    az_arena_free(a);
    return first;
}

az_err az_reconciler_run_once(az_reconciler *r, az_reconciler_counts *counts, char *msg)
{
    az_reconciler_counts local = {0, 0, 0};
    az_ctx ctx = {.workspace_id = "", .principal = "", .request_id = "reconciler", .deadline_ms = -1};
    /* Reap first: a retry due at once is published now, the others are woken below. */
    az_err first = reap(r, &local, msg);
    az_arena *a = az_arena_new(0);
    if (!a) return az_fail(msg, AZ_ERR_NOMEM, "out of memory");
    char **ws = NULL;
    size_t n = 0;
    char am[AZ_MSG_MAX];
    az_err err0 = az_task_active_workspaces(r->pg, &ctx, a, &ws, &n, am);
    if (err0 != AZ_OK && first == AZ_OK) first = az_fail(msg, err0, "%s", am);
    /* One workspace's trouble must not strand the others' tasks: keep going, report the first. */
    for (size_t i = 0; i < n; i++) {
        char m[AZ_MSG_MAX];
        az_err err = one_workspace(r, ws[i], &local, m);
        if (err != AZ_OK && first == AZ_OK) first = az_fail(msg, err, "%s", m);
    }
    az_arena_free(a);
    if (counts) *counts = local;
    return first;
}

static void *reconciler_main(void *arg)
{
    az_reconciler *r = arg;
    int64_t retention_due = mono_ms() + r->retention_every_ms;
    pthread_mutex_lock(&r->mu);
    while (!r->stop) {
        struct timespec until;
        clock_gettime(CLOCK_MONOTONIC, &until);
        until.tv_sec += r->interval_ms / 1000;
        until.tv_nsec += (long)(r->interval_ms % 1000) * 1000000L;
        if (until.tv_nsec >= 1000000000L) {
            until.tv_sec++;
            until.tv_nsec -= 1000000000L;
        }
        while (!r->stop && pthread_cond_timedwait(&r->cv, &r->mu, &until) == 0) {
        }
        if (r->stop) break;
        pthread_mutex_unlock(&r->mu);
        char msg[AZ_MSG_MAX];
        az_reconciler_counts c = {0, 0, 0};
        if (az_reconciler_run_once(r, &c, msg) != AZ_OK) az_warn("reconciler: %s", msg);
        if (c.woken || c.republished)
            az_debug("reconciler woke %d backoff tasks and re-published %d queued tasks", c.woken,
                     c.republished);
        /* Retention runs on this thread between passes: a slow prune delays the next pass, never
         * overlaps it. */
        if (r->retention_hook && mono_ms() >= retention_due) {
            if (r->retention_hook(r->retention_arg, r->pg, msg) != AZ_OK) az_warn("retention: %s", msg);
            retention_due = mono_ms() + r->retention_every_ms;
        }
        pthread_mutex_lock(&r->mu);
    }
    pthread_mutex_unlock(&r->mu);
    return NULL;
}

az_err az_reconciler_start(az_reconciler *r, char *msg)
{
    if (r->started) return AZ_OK;
    if (pthread_create(&r->thread, NULL, reconciler_main, r) != 0)
        return az_fail(msg, AZ_ERR_IO, "cannot start the reconciler thread");
    r->started = 1;
    return AZ_OK;
}

void az_reconciler_free(az_reconciler *r)
{
    if (!r) return;
    if (r->started) {
        pthread_mutex_lock(&r->mu);
        r->stop = 1;
        pthread_cond_signal(&r->cv);
        pthread_mutex_unlock(&r->mu);
        pthread_join(r->thread, NULL);
    }
    pthread_mutex_destroy(&r->mu);
    pthread_cond_destroy(&r->cv);
    free(r);
}
