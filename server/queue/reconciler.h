/* The reconciler: a thread that keeps the Redis queue consistent with PostgreSQL. Every interval
 * it reaps running tasks whose lease expired (their worker died: the attempt fails as
 * "worker_lost" and the retry policy applies), wakes backoff tasks whose time has come
 * (backoff -> queued) and re-publishes queued tasks whose last publication is older than
 * republish_after_ms, so no task is stranded when a worker dies, Redis loses the stream or a
 * publish after commit failed. */
#ifndef AZ_RECONCILER_H
#define AZ_RECONCILER_H

#include <stdint.h>

#include "store/pgpool.h"
#include "store/redis.h"

#define AZ_RECONCILER_DEFAULT_INTERVAL_MS 5000
#define AZ_RECONCILER_DEFAULT_REPUBLISH_MS 60000

typedef struct az_reconciler az_reconciler;

typedef struct az_reconciler_counts {
    int reaped;      /* running with an expired lease -> backoff, queued or failed */
    int woken;       /* backoff -> queued */
    int republished; /* stale queued tasks published again */
} az_reconciler_counts;

/* Creates a stopped reconciler over pg and redis (borrowed; they must outlive it).
 * interval_ms <= 0 and republish_after_ms <= 0 take the defaults. NULL when out of memory. */
az_reconciler *az_reconciler_new(az_pg *pg, az_redis *redis, int interval_ms,
                                 int64_t republish_after_ms);

/* Registers fn(arg, ctx, run_id, msg), called for the run of every reaped task, so the run's
 * status follows (main.c registers az_run_sync_hook; the queue module may not call workflow/).
 * Its failure is logged. Call before az_reconciler_start. */
void az_reconciler_set_run_hook(az_reconciler *r,
                                az_err (*fn)(void *arg, const az_ctx *ctx, const char *run_id,
                                             char *msg),
                                void *arg);

/* Registers fn(arg, ctx, agent_id, worker, failed, msg), called for the agent of every reaped
 * task with the worker whose lease expired (the dead worker never reported its end), so the
 * agent's status stays true (main.c registers az_agent_holder_lost). failed: the task failed
 * for good. Its failure is
 * logged. Call before az_reconciler_start. */
void az_reconciler_set_agent_hook(az_reconciler *r,
                                  az_err (*fn)(void *arg, const az_ctx *ctx, const char *agent_id,
                                               const char *worker, int failed, char *msg),
                                  void *arg);

/* Registers fn(arg, pg, msg), called by the thread every every_ms (the first time one interval
 * after start): data retention (main.c registers az_retention_hook; the queue module may not call
 * retention/). Its failure is logged. Call before az_reconciler_start. */
void az_reconciler_set_retention_hook(az_reconciler *r, az_err (*fn)(void *arg, az_pg *pg, char *msg),
                                      void *arg, int64_t every_ms);

/* Starts the thread. AZ_ERR_IO when it cannot be created; AZ_OK when already started. */
az_err az_reconciler_start(az_reconciler *r, char *msg);

/* One pass: reap expired leases (publishing what became ready), then over every workspace with
 * queued or backoff tasks: wake, re-publish. Counts go to
 * *counts (may be NULL). Errors (database or Redis) are returned after the pass went as far as
 * it could; tasks already marked re-published are published again after the next
 * republish_after_ms. Used by the thread and by tests. */
az_err az_reconciler_run_once(az_reconciler *r, az_reconciler_counts *counts, char *msg);

/* Stops the thread promptly (wakes it from its wait) and frees r. Accepts NULL. */
void az_reconciler_free(az_reconciler *r);

#endif
