/* The task service: owns the tasks and task_attempts tables and the task state machine
 *
 *     pending ──▶ queued ──▶ running ──▶ succeeded
 *        │          │          │  ╲
 *        │          │          │   ╲──▶ backoff ──▶ queued     (retryable failure, attempts left)
 *        │          │          ╰──────▶ failed                 (non-retryable or attempts used up)
 *        ╰──────────┴──────────┴──────▶ cancelled              (CancelTask, CancelRun, failed dependency)
 *     failed | cancelled ──▶ queued | pending                  (RetryTask, ResumeRun)
 *
 * Every transition is one conditional UPDATE (WHERE status IN the allowed sources) inside a
 * transaction, so two workers or two API calls can never both move one task; the loser gets
 * AZ_ERR_PRECONDITION with the current state in the message. Results are agentz.v1 messages in
 * the caller's arena. Functions taking az_pgconn run inside the caller's transaction; those taking
 * az_pg open their own. */
#ifndef AZ_TASK_H
#define AZ_TASK_H

#include <stdint.h>

#include "agentz/v1/task.pb-c.h"
#include "core/arena.h"
#include "core/ctx.h"
#include "store/pgpool.h"

/* Retry defaults (Temporal's): 1 s initial, x2, capped at 100 x initial, unlimited attempts
 * (bounded by the task's timeout). */
#define AZ_TASK_DEFAULT_INITIAL_BACKOFF_MS 1000
#define AZ_TASK_DEFAULT_BACKOFF_COEFFICIENT 2.0
#define AZ_TASK_DEFAULT_MAX_BACKOFF_FACTOR 100

/* Ids of tasks that a call made ready (queued), for publishing to the Redis queue after the
 * transaction commits. Lives in the caller's arena: `arena` when set, else the arena parameter
 * of the call; az_task_complete and az_task_resume_run have none, so they need `arena` set
 * (else AZ_ERR_INTERNAL).
 * Start with az_task_ready r = {0}; calls append. */
typedef struct az_task_ready {
    char **ids;
    size_t n;
    az_arena *arena;
} az_task_ready;

typedef struct az_task_query {
    int status;             /* Agentz__V1__TaskStatus; 0 = any */
    const char *agent_id;   /* "" = any */
    const char *run_id;     /* "" = any */
    int page_size;          /* already clamped to 1..1000 */
    const char *page_token; /* "" = first page */
} az_task_query;

/* Delay before attempt `attempt` + 1 after a retryable failure of attempt `attempt` (>= 1):
 * min(initial x coefficient^(attempt-1), maximum), with "full jitter" of up to 20 % subtracted.
 * policy may be NULL (defaults). jitter01 in [0,1) makes it deterministic for tests. */
int64_t az_task_backoff_ms(const Agentz__V1__RetryPolicy *policy, int attempt, double jitter01);

/* 1 when another attempt is allowed after `attempt` failed with error type `type`. */
int az_task_should_retry(const Agentz__V1__RetryPolicy *policy, int attempt, const char *type);

/* Inserts validated task t inside the caller's transaction. t->id, when a uuid, is used (runs
 * pre-assign ids to wire depends_on); else one is generated. workflow_id may be NULL. Every
 * depends_on id must be a task of the workspace (else AZ_ERR_INVALID naming
 * "task.depends_on[i]"); a dependency that already failed or was cancelled is
 * AZ_ERR_PRECONDITION. The task starts queued when all dependencies succeeded (or it has none),
 * else pending; queued ids are appended to ready. */
az_err az_task_insert(az_pgconn *c, const az_ctx *ctx, const Agentz__V1__Task *t,
                      const char *workflow_id, az_arena *arena, Agentz__V1__Task **out,
                      az_task_ready *ready, char *msg);

/* CreateTask: az_task_insert in its own transaction, idempotent by request_id (same hash
 * returns the first task with *replayed = 1; another hash is AZ_ERR_EXISTS). */
az_err az_task_create(az_pg *pg, const az_ctx *ctx, const Agentz__V1__Task *t,
                      const char *request_id, const char *request_hash, az_arena *arena,
                      Agentz__V1__Task **out, int *replayed, az_task_ready *ready, char *msg);

/* Most tasks one CreateTasks call creates. */
#define AZ_TASK_BATCH_MAX 1000

/* One item of az_task_create_many: a task validated as for az_task_create (its id is ignored)
 * and its idempotency key ("" or NULL: none) with the hash of the request it came with. */
typedef struct az_task_item {
    const Agentz__V1__Task *task;
    const char *request_id;
    const char *request_hash;
} az_task_item;

/* CreateTasks: n (1..AZ_TASK_BATCH_MAX) tasks in one transaction, all created with their
 * TaskStatusChanged events or nothing written. Whatever n, the SQL is one statement for the
 * idempotency keys (when any item has one), one for the dependencies (when any), one INSERT of
 * every row and one SELECT of the replays (when any); the events ride deferred, five to a round
 * trip. Items are idempotent like az_task_create, in its key space (method "CreateTask"), so an
 * item retried through either call returns the task created first (*out, not made ready
 * again); request ids must be distinct within the batch (the caller checks). (*out)[i] (n
 * entries, in arena) is item i's task. max_bytes bounds the results packed as a
 * CreateTasksResponse (0 = unbounded): over it, AZ_ERR_INVALID and nothing is written. When the
 * failure is one item's, *bad is its index and msg that item's own message
 * ("task.depends_on[0]: task X not found", "request_id r was already used for a different
 * request"); otherwise *bad = n. Queued tasks are appended to ready in item order. */
az_err az_task_create_many(az_pg *pg, const az_ctx *ctx, const az_task_item *items, size_t n,
                           size_t max_bytes, az_arena *arena, Agentz__V1__Task ***out,
                           az_task_ready *ready, size_t *bad, char *msg);

/* One task; AZ_ERR_NOT_FOUND when absent or another workspace's. */
az_err az_task_get(az_pg *pg, const az_ctx *ctx, const char *id, az_arena *arena,
                   Agentz__V1__Task **out, char *msg);

/* One page, newest first, keyset-paginated; tokens are bound to the filters. */
az_err az_task_list(az_pg *pg, const az_ctx *ctx, const az_task_query *q, az_arena *arena,
                    Agentz__V1__ListTasksResponse **out, char *msg);

/* Every task of a run in creation order (at most 100 steps per run), inside c. */
az_err az_task_list_run(az_pgconn *c, const az_ctx *ctx, const char *run_id, az_arena *arena,
                        Agentz__V1__Task ***out, size_t *n, char *msg);

/* CancelTask: pending | queued | running | backoff -> cancelled (error type "cancelled" with
 * reason), and every pending task depending on it, transitively. Terminal tasks are
 * AZ_ERR_PRECONDITION "task X is already succeeded". *run_id (37 bytes, may be NULL) receives
 * the task's run ("" for none) so the caller can refresh the run. */
az_err az_task_cancel(az_pg *pg, const az_ctx *ctx, const char *id, const char *reason,
                      az_arena *arena, Agentz__V1__Task **out, char *run_id, char *msg);

/* RetryTask: failed | cancelled -> queued (dependencies all succeeded) or pending, error
 * cleared; dependents that were cancelled because of it go back to pending. The next attempt
 * number is attempt + 1 when it runs. Other states are AZ_ERR_PRECONDITION. */
az_err az_task_retry(az_pg *pg, const az_ctx *ctx, const char *id, az_arena *arena,
                     Agentz__V1__Task **out, char *run_id, az_task_ready *ready, char *msg);

/* Inside c: cancels every unfinished task of run_id (CancelRun), or re-queues its failed and
 * cancelled tasks and everything downstream of them (ResumeRun), keeping succeeded outputs.
 * *changed (may be NULL) receives how many tasks moved. */
az_err az_task_cancel_run(az_pgconn *c, const az_ctx *ctx, const char *run_id, const char *reason,
                          int *changed, char *msg);
az_err az_task_resume_run(az_pgconn *c, const az_ctx *ctx, const char *run_id, int *changed,
                          az_task_ready *ready, char *msg);

/* Every attempt of a task, oldest first, paginated. */
az_err az_task_list_attempts(az_pg *pg, const az_ctx *ctx, const char *task_id, int page_size,
                             const char *page_token, az_arena *arena,
                             Agentz__V1__ListTaskAttemptsResponse **out, char *msg);

/* GetTaskStats over tasks created in [start_us, end_us) (0 = unbounded), optionally one agent. */
az_err az_task_stats(az_pg *pg, const az_ctx *ctx, int64_t start_us, int64_t end_us,
                     const char *agent_id, az_arena *arena, Agentz__V1__TaskStats **out, char *msg);

/* ---- transitions driven by the execution engine ---- */

/* queued -> running: attempt + 1, start_time, an attempt row for worker, and a lease held by
 * worker until now + lease_ms (0 = AZ_TASK_DEFAULT_LEASE_MS). AZ_ERR_PRECONDITION when the task
 * is not queued any more (another worker won, or it was cancelled). */
#define AZ_TASK_DEFAULT_LEASE_MS 30000
az_err az_task_claim(az_pg *pg, const az_ctx *ctx, const char *id, const char *worker,
                     int64_t lease_ms, az_arena *arena, Agentz__V1__Task **out, char *msg);

/* Claims (queued -> running, attempt + 1, leased to worker) those of ids that are still queued,
 * in one transaction: the attempt rows and one TaskStatusChanged each commit with it. Ids that
 * are not queued uuids of ctx's workspace (claimed by another worker, cancelled, unknown) are
 * skipped, not errors. At most AZ_TASK_CLAIM_MAX ids (more: AZ_ERR_INVALID). On success
 * *out (arena-owned, may be NULL when nothing was claimed) holds the *n_out claimed tasks, in
 * no particular order; on error nothing is claimed and *out is NULL. */
#define AZ_TASK_CLAIM_MAX 1000
az_err az_task_claim_many(az_pg *pg, const az_ctx *ctx, char *const *ids, size_t n,
                          const char *worker, int64_t lease_ms, az_arena *arena,
                          Agentz__V1__Task ***out, size_t *n_out, char *msg);

/* Lease heartbeat of one worker (system work, every workspace): extends the lease of every task
 * running under worker to now + lease_ms, and returns the ids of those tasks (in arena) so the
 * worker can abort what it runs but no longer owns (cancelled, reaped). */
az_err az_task_heartbeat(az_pg *pg, const char *worker, int64_t lease_ms, az_arena *arena,
                         char ***ids, size_t *n, char *msg);

/* One task az_task_reap_expired reaped; strings live in the caller's arena. */
typedef struct az_task_reaped {
    const char *workspace_id;
    const char *task_id;
    const char *run_id;   /* "" for a standalone task */
    const char *agent_id; /* "" when none */
    const char *worker;   /* the lease owner whose lease expired */
    int failed;           /* 1: failed for good (no attempt left); 0: it will run again */
} az_task_reaped;

/* Running tasks whose lease expired (their worker died), at most limit, system work: each
 * attempt fails with the retryable error "worker_lost" (so the retry policy applies and the
 * task runs again elsewhere) and is released from its worker, one transaction per task (a lease
 * renewed meanwhile wins). A retry due at once (zero backoff) goes straight to queued; the
 * others wait in backoff for az_task_wake. *reaped (may be NULL) gets the count; ids made ready
 * are appended to ready with their workspace in ready_ws (parallel arrays in ready->arena;
 * ready_ws may be NULL). When arena is set, *list (n = *reaped entries, in arena) describes
 * every reaped task, so the caller can refresh its run and its agent's status (the dead worker
 * never will). Errors on one task do not stop the others: the first is returned after the
 * pass. */
az_err az_task_reap_expired(az_pg *pg, int limit, int *reaped, az_task_ready *ready,
                            char ***ready_ws, az_arena *arena, az_task_reaped **list, char *msg);

/* Hand-back on graceful worker shutdown: running (at attempt) -> queued at once, the attempt
 * recorded as cancelled with error "worker_shutdown"; the hand-back does not count against the
 * retry policy. The id is appended to ready (ready->arena required; ready may be NULL).
 * AZ_ERR_PRECONDITION when stale. */
az_err az_task_release(az_pg *pg, const az_ctx *ctx, const char *id, int attempt,
                       az_task_ready *ready, char *msg);

/* az_task_fail honouring a provider's Retry-After: the backoff is at least retry_after_ms. */
az_err az_task_fail_after(az_pg *pg, const az_ctx *ctx, const char *id, int attempt,
                          const Agentz__V1__TaskError *error, const Agentz__V1__TokenUsage *usage,
                          int64_t retry_after_ms, int64_t *next_attempt_ms, char *run_id,
                          char *msg);

/* Progress of a running attempt (0..1), best effort; stale attempts are ignored. */
az_err az_task_set_progress(az_pg *pg, const az_ctx *ctx, const char *id, int attempt,
                            double progress, char *msg);

/* The statement a worker runs on its own non-blocking connection (system work) every 500 ms to
 * find which of its in-flight attempts are no longer its own (cancelled, timed out, reaped,
 * finished elsewhere). Parameters: $1 uuid[] task ids, $2 integer[] their attempts (parallel
 * array literals, e.g. "{id1,id2}" and "{1,3}"), $3 the worker id. Rows: (task id, attempt) of
 * every attempt that is not running under that worker any more. Static text. */
const char *az_task_sql_not_running(void);

/* The statement that locks the pending dependents of a task while it finishes (exported so the
 * tests can check its plan under row-level security). Parameters: $1 workspace id, $2 the task
 * id. Rows: (id) of each pending dependent, in id order. Static text. */
const char *az_task_sql_dependents(void);

/* running (at `attempt`) -> succeeded with output and usage; dependents whose dependencies have
 * now all succeeded become queued (appended to ready). A stale attempt is AZ_ERR_PRECONDITION:
 * one terminal outcome per attempt even when a message is delivered twice. */
az_err az_task_complete(az_pg *pg, const az_ctx *ctx, const char *id, int attempt,
                        const Agentz__V1__TaskOutput *output, const Agentz__V1__TokenUsage *usage,
                        char *run_id, az_task_ready *ready, char *msg);

/* running (at `attempt`) -> backoff (retryable per the policy and error, next_attempt_time set)
 * or failed (dependents cancelled). *next_attempt_ms (may be NULL) is 0 when it failed for good. */
az_err az_task_fail(az_pg *pg, const az_ctx *ctx, const char *id, int attempt,
                    const Agentz__V1__TaskError *error, const Agentz__V1__TokenUsage *usage,
                    int64_t *next_attempt_ms, char *run_id, char *msg);

/* backoff tasks whose next_attempt_time has passed -> queued (at most limit). */
az_err az_task_wake(az_pg *pg, const az_ctx *ctx, int limit, az_arena *arena,
                    az_task_ready *ready, char *msg);

/* Queued tasks last published more than older_than_ms ago (at most limit), marked published
 * now: the reconciler re-publishes them so no task is stranded if Redis lost the queue. */
az_err az_task_stale_queued(az_pg *pg, const az_ctx *ctx, int64_t older_than_ms, int limit,
                            az_arena *arena, az_task_ready *ready, char *msg);

/* Workspaces holding queued or backoff tasks (ids in arena), for the reconciler, which runs
 * az_task_wake and az_task_stale_queued per workspace. */
az_err az_task_active_workspaces(az_pg *pg, const az_ctx *ctx, az_arena *arena, char ***ids,
                                 size_t *n, char *msg);

/* Parses an etag this service issued; -1 when malformed. */
int64_t az_task_etag_revision(const char *etag);

#endif
