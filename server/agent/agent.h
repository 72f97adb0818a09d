/* The agent service: owns the agents table. Callers pass validated input; results are
 * agentz.v1.Agent messages allocated in the caller's arena. */
#ifndef AZ_AGENT_H
#define AZ_AGENT_H

#include <stdint.h>

#include "agentz/v1/agent.pb-c.h"
#include "core/arena.h"
#include "core/ctx.h"
#include "store/pgpool.h"

#define AZ_AGENT_DEFAULT_MAX_ITER 25

/* One page request of ListAgents; labels_json is a JSON object every agent's labels must
 * contain (NULL = any). */
typedef struct az_agent_query {
    int status; /* Agentz__V1__AgentStatus; 0 = any */
    const char *labels_json;
    int page_size; /* already clamped to 1..1000 */
    const char *page_token; /* "" for the first page */
} az_agent_query;

/* Inserts agent a (validated; its id, status and times are ignored). With a non-empty
 * request_id the call is idempotent: a repeat with the same request_hash returns the agent the
 * first call created (*replayed = 1), a different hash is AZ_ERR_EXISTS. A taken name is
 * AZ_ERR_EXISTS. On AZ_OK *out lives in arena. */
az_err az_agent_create(az_pg *pg, const az_ctx *ctx, const Agentz__V1__Agent *a,
                       const char *request_id, const char *request_hash, az_arena *arena,
                       Agentz__V1__Agent **out, int *replayed, char *msg);

/* Inserts agent a inside the caller's transaction on c (for callers that create agents together
 * with other rows, such as template instantiation). Same rules as az_agent_create minus
 * idempotency. */
az_err az_agent_insert(az_pgconn *c, const az_ctx *ctx, const Agentz__V1__Agent *a,
                       az_arena *arena, Agentz__V1__Agent **out, char *msg);

/* Reads one agent of ctx's workspace. AZ_ERR_NOT_FOUND when absent (or another workspace's). */
az_err az_agent_get(az_pg *pg, const az_ctx *ctx, const char *id, az_arena *arena,
                    Agentz__V1__Agent **out, char *msg);

/* One page, newest first, stable under concurrent inserts (keyset pagination). A token from
 * a request with other filters, or a malformed one, is AZ_ERR_INVALID. */
az_err az_agent_list(az_pg *pg, const az_ctx *ctx, const az_agent_query *q, az_arena *arena,
                     Agentz__V1__ListAgentsResponse **out, char *msg);

/* Overwrites every mutable field of agent a->id with a's values, provided the stored revision
 * still equals expected_revision (else AZ_ERR_ABORTED). AZ_ERR_NOT_FOUND when absent. */
az_err az_agent_replace(az_pg *pg, const az_ctx *ctx, const Agentz__V1__Agent *a,
                        int64_t expected_revision, az_arena *arena, Agentz__V1__Agent **out,
                        char *msg);

/* Deletes agent id; with expected_revision > 0 only at that revision (else AZ_ERR_ABORTED). */
az_err az_agent_delete(az_pg *pg, const az_ctx *ctx, const char *id, int64_t expected_revision,
                       char *msg);

/* Parses an etag produced by this service into its revision; -1 when malformed. */
int64_t az_agent_etag_revision(const char *etag);

/* ---- agent status, kept true by the executor ---- */

/* Longest holder (worker id) az_agent_task_started and friends accept. */
#define AZ_AGENT_HOLDER_MAX 200

/* A task of the agent started on worker holder (its id, as in the task's lease): status BUSY.
 * The agent's row counts holders, not tasks: only a holder's first running task of the agent
 * writes (its agent_holders row, running_tasks + 1, AgentStatusChanged when the status moves);
 * the others change a count in this process's memory. Any thread. On error (NOT_FOUND for an
 * unknown agent, INVALID for an empty or overlong holder, or the database's) nothing is
 * counted and no az_agent_task_ended must follow. */
az_err az_agent_task_started(az_pg *pg, const az_ctx *ctx, const char *agent_id,
                             const char *holder, char *msg);

/* A task started with az_agent_task_started ended (succeeded, failed, cancelled, handed back).
 * When it was the holder's last running task of the agent, the holder's row goes and the
 * status becomes BUSY while other holders remain, else ERROR when this task failed, else IDLE.
 * An end without a start in this process changes nothing and returns AZ_OK. Any thread. On a
 * database error the holder stays counted and the next start or end of the agent on this
 * holder corrects it. */
az_err az_agent_task_ended(az_pg *pg, const az_ctx *ctx, const char *agent_id, const char *holder,
                           int failed, char *msg);

/* The reaper found holder's lease on a task of the agent expired (the worker died): the
 * holder's row goes, with the status as az_agent_task_ended sets it (failed: the reaped task
 * failed for good). A holder without a row changes nothing. Any process. */
az_err az_agent_holder_lost(az_pg *pg, const az_ctx *ctx, const char *agent_id, const char *holder,
                            int failed, char *msg);

#endif
