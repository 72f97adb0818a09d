/* The task queue hand-off in Redis: a bounded stream of "task X of workspace W is ready" hints.
 * PostgreSQL stays the source of truth; a lost hint is re-published by the reconciler. Owns the
 * agentz:tasks:* keys. */
#ifndef AZ_QUEUE_H
#define AZ_QUEUE_H

#include "store/redis.h"
#include "task/task.h"

/* The stream workers read (XREADGROUP) and its approximate length bound (XADD MAXLEN ~). */
#define AZ_QUEUE_STREAM "agentz:tasks:ready"
#define AZ_QUEUE_MAXLEN 100000

/* Appends one entry {task: id, workspace: workspace_id} per ready id to the stream, in batches of
 * up to 500 ids per round trip (one server-side script each, so a batch is atomic). Accepts an
 * empty or NULL ready. On error (Redis down: AZ_ERR_UNAVAILABLE) some batches may have been
 * added; callers log and rely on the reconciler. */
az_err az_queue_publish(az_redis *r, const char *workspace_id, const az_task_ready *ready, char *msg);

/* The stream's length (XLEN) into *n. */
az_err az_queue_depth(az_redis *r, long long *n, char *msg);

/* Counts the live workers into *n. A worker keeps one connection that only ever sends
 * XREADGROUP (blocking at most a second at a time), so connected clients whose last command was
 * XREADGROUP are the workers (CLIENT LIST); Redis closes the connection of a worker that dies.
 * XINFO CONSUMERS cannot tell on Redis 7.0: an XREADGROUP that finds nothing neither creates its
 * consumer nor refreshes its idle time. Only where CLIENT LIST is refused (ACLs of managed Redis)
 * do the consumers of group that read within max_idle_ms count instead (no stream or group yet:
 * 0). AZ_ERR_UNAVAILABLE when Redis is down, other Redis errors AZ_ERR_INTERNAL; msg says which. */
az_err az_queue_workers(az_redis *r, const char *group, long long max_idle_ms, int *n, char *msg);

#endif
