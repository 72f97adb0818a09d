/* Agent long-term memory: a summary of each task an agent with `memory` on completed, recalled
 * into later prompts by embedding similarity when an embeddings endpoint is configured, else by
 * keyword match and recency. Owns the agent_memory table. */
#ifndef AZ_MEMORY_H
#define AZ_MEMORY_H

#include <stddef.h>
#include <stdint.h>

#include "agentz/v1/agent.pb-c.h"
#include "core/arena.h"
#include "core/ctx.h"
#include "store/pgpool.h"
#include "tools/netguard.h"

#define AZ_MEMORY_SUMMARY_MAX 2000     /* bytes of a stored summary */
#define AZ_MEMORY_MAX_PER_AGENT 1000   /* older entries are pruned on insert */

/* An OpenAI-compatible /v1/embeddings endpoint (AGENTZ_EMBEDDINGS_URL, _MODEL, _API_KEY); all
 * NULL/empty = no embeddings. Every string is borrowed and must outlive the calls. */
typedef struct az_memory_config {
    const char *embeddings_url; /* base URL, e.g. http://127.0.0.1:11434/v1 */
    const char *embeddings_model;   /* NULL/empty: no "model" is sent */
    const char *embeddings_api_key; /* NULL/empty: no Authorization header */
    const az_netguard *guard;       /* outbound policy; borrowed. NULL = the strictest policy
                                     * (az_netguard_allowed's NULL), not "anything goes" */
} az_memory_config;

/* Stores a summary of a completed task ("Task: <description>\nResult: <output>", both trimmed,
 * capped at AZ_MEMORY_SUMMARY_MAX bytes at a UTF-8 boundary, invalid UTF-8 bytes replaced by
 * '?'), with its embedding when cfg has an endpoint (an embeddings failure is logged and the
 * entry stored without one; at most 10 s). Prunes the agent's oldest entries beyond
 * AZ_MEMORY_MAX_PER_AGENT in the same transaction. cfg may be NULL; run_id may be NULL or "".
 * Errors: AZ_ERR_INVALID (an id is not a uuid, named), AZ_ERR_NOT_FOUND (the agent is gone),
 * database errors. Blocking: call off the event loop. */
az_err az_memory_add(az_pg *pg, const az_ctx *ctx, const az_memory_config *cfg,
                     const char *agent_id, const char *task_id, const char *run_id,
                     const char *description, const char *output, char *msg);

/* Up to limit (at most 100) summaries most relevant to query (the new task's text), best first,
 * into arena (*summaries and each string): by cosine similarity when cfg has an endpoint and
 * entries have embeddings (keyword recall fills up the rest, and takes over when the endpoint
 * fails), else by keyword overlap then recency. *n = 0 when the agent remembers nothing, is
 * unknown, or limit <= 0. Errors: AZ_ERR_INVALID (agent_id not a uuid), database errors.
 * Blocking. */
az_err az_memory_recall(az_pg *pg, const az_ctx *ctx, const az_memory_config *cfg,
                        const char *agent_id, const char *query, int limit, az_arena *arena,
                        char ***summaries, size_t *n, char *msg);

/* GetAgentMemory: one page of at most page_size entries (the caller clamps it), most recent
 * first, into arena; query (may be "") filters summaries by case-insensitive substring.
 * AZ_ERR_NOT_FOUND when the agent does not exist in ctx's workspace; AZ_ERR_INVALID for a
 * page_token this function did not issue for the same agent and query. */
az_err az_memory_list(az_pg *pg, const az_ctx *ctx, const char *agent_id, const char *query,
                      int page_size, const char *page_token, az_arena *arena,
                      Agentz__V1__AgentMemory **out, char *msg);

/* ClearAgentMemory: removes every entry of the agent; *removed (may be NULL) gets the count.
 * AZ_ERR_NOT_FOUND when the agent does not exist. */
az_err az_memory_clear(az_pg *pg, const az_ctx *ctx, const char *agent_id, int64_t *removed,
                       char *msg);

#endif
