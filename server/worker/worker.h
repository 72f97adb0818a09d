/* The worker runtime: one thread running a libuv loop that reads ready-task hints from the Redis
 * stream through a consumer group (hiredis async), claims tasks in PostgreSQL with a lease,
 * runs them with the executor (libcurl multi on the same loop), renews leases by heartbeat,
 * aborts tasks cancelled elsewhere within a second, and hands its tasks back on shutdown. Any
 * number of worker processes may run against one PostgreSQL and Redis. */
#ifndef AZ_WORKER_H
#define AZ_WORKER_H

#include <stddef.h>

#include "agent/memory.h"
#include "core/err.h"
#include "llm/price.h"
#include "secret/secret.h"
#include "store/pgpool.h"
#include "store/redis.h"
#include "tools/netguard.h"
#include "tools/tools.h"

#define AZ_WORKER_GROUP "agentz-workers" /* the consumer group on AZ_QUEUE_STREAM */
#define AZ_WORKER_DEFAULT_CONCURRENCY 256
#define AZ_WORKER_MAX_CONCURRENCY 20000
#define AZ_WORKER_DEFAULT_LEASE_SECONDS 30

typedef struct az_worker_config {
    const char *redis_url;   /* the worker opens its own async connections */
    const char *database_url; /* for the worker's own non-blocking connection (lease checks) */
    const char *db_role;     /* the row-level-security role the pool uses (SET ROLE) */
    int concurrency;         /* tasks at once; 0 = AZ_WORKER_DEFAULT_CONCURRENCY */
    int lease_seconds;       /* 0 = AZ_WORKER_DEFAULT_LEASE_SECONDS */
    const char *id;          /* consumer name; NULL = "<hostname>-<pid>-<random>" */
    az_pg *pg;               /* borrowed: the daemon's pool (transitions run on the threadpool) */
    az_redis *redis;         /* borrowed: synchronous connection for publishing ready tasks */
    az_secret_keyring *keys; /* borrowed, may be NULL */
    const az_netguard *guard; /* borrowed, never NULL */
    const az_llm_prices *prices; /* borrowed, NULL = defaults */
    const az_memory_config *memory; /* borrowed, may be NULL */
    const az_tools *tools;   /* borrowed: the built-in tool registry (az_tools_new), never NULL */
} az_worker_config;

/* Counters since start, readable from any thread (relaxed atomics inside). */
typedef struct az_worker_stats {
    long running;          /* executions in flight now */
    long claimed;          /* attempts this worker claimed */
    long finished;         /* executions that ended (any outcome) */
    long lost;             /* aborted because the task was no longer ours (cancel, timeout, reaped) */
    long handed_back;      /* handed back on shutdown */
    long events_published; /* ephemeral events PUBLISHed to Redis */
    long events_dropped;   /* dropped: Redis slow or down (bounded pending publishes) */
} az_worker_stats;

typedef struct az_worker az_worker;

/* Creates a stopped worker. On error *out is NULL and msg says why. */
az_err az_worker_new(const az_worker_config *cfg, az_worker **out, char *msg);

/* Starts the loop thread: creates the consumer group if missing (XGROUP CREATE ... MKSTREAM),
 * then consumes. AZ_ERR_UNAVAILABLE when Redis or PostgreSQL cannot be reached. */
az_err az_worker_start(az_worker *w, char *msg);

/* The consumer name (owned by w). */
const char *az_worker_id(const az_worker *w);

/* For health checks, from any thread: AZ_OK while the worker can read the task queue, or has
 * not been unable to for more than grace_ms (a reconnect in progress); else AZ_ERR_UNAVAILABLE
 * with msg naming the worker and for how long (its Redis connections are down or reconnecting
 * with backoff). Not before az_worker_start: from the start until both connections are up it
 * counts as unable. Changes nothing. */
az_err az_worker_check_queue(const az_worker *w, int grace_ms, char *msg);

/* A snapshot of the counters. */
void az_worker_get_stats(const az_worker *w, az_worker_stats *out);

/* Graceful stop: stops taking tasks, lets running ones finish for up to grace_ms, then hands the
 * rest back to the queue (they run again elsewhere at once, without waiting for their lease),
 * and joins the thread. Safe to call twice. */
void az_worker_stop(az_worker *w, int grace_ms);

/* Stops (grace 0) if running and frees. Accepts NULL. */
void az_worker_free(az_worker *w);

#endif
