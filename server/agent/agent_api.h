/* AgentService over gRPC: validates requests, applies field masks, calls the agent service. */
#ifndef AZ_AGENT_API_H
#define AZ_AGENT_API_H

#include "agent.h"
#include "google/protobuf/field_mask.pb-c.h"
#include "rpc/rpc.h"

typedef struct az_agent_api az_agent_api;

/* Binds the API to a pool (borrowed; must outlive the API). NULL when out of memory. */
az_agent_api *az_agent_api_new(az_pg *pg);
void az_agent_api_free(az_agent_api *api); /* accepts NULL */

/* The method table (owned by api), WatchAgents included. */
const az_method *az_agent_api_methods(az_agent_api *api, size_t *n);

/* Serves WatchAgents through w (borrowed; must outlive the server); without it WatchAgents
 * answers UNAVAILABLE. Call before serving. */
typedef struct az_watch az_watch;
void az_agent_api_set_watch(az_agent_api *api, az_watch *w);

/* Limits, also documented in docs/api.md. */
#define AZ_AGENT_NAME_MAX 128
#define AZ_AGENT_ROLE_MAX 256
#define AZ_AGENT_GOAL_MAX 4096
#define AZ_AGENT_BACKSTORY_MAX 16384
#define AZ_AGENT_TOOLS_MAX 32
#define AZ_AGENT_LABELS_MAX 64
#define AZ_AGENT_MAX_ITER_MAX 100

/* Checks every field of a (an agent about to be stored). With creating set, max_iter 0 is
 * allowed (it means the default). AZ_ERR_INVALID names the field: "agent.llm.temperature:
 * must be between 0 and 2". */
az_err az_agent_validate(const Agentz__V1__Agent *a, int creating, char *msg);

/* Copies the fields named by mask (or, when mask is NULL or empty, every populated field)
 * from src into dst. Pointers are shared, not deep-copied: both must live as long as dst.
 * Unknown and output-only paths are AZ_ERR_INVALID naming the path. */
az_err az_agent_apply_mask(Agentz__V1__Agent *dst, const Agentz__V1__Agent *src,
                           const Google__Protobuf__FieldMask *mask, az_arena *arena, char *msg);

/* Parses "k=v,k2=v2" into a JSON object string in arena (NULL for an empty selector). */
az_err az_agent_parse_selector(const char *selector, az_arena *arena, char **json, char *msg);

#endif
