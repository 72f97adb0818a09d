/* WorkflowService over gRPC: validates workflows (every error names the step and field), applies
 * field masks, resolves run inputs, and calls the workflow, run and template services; publishes
 * newly queued tasks to Redis after their transaction commits. */
#ifndef AZ_WORKFLOW_API_H
#define AZ_WORKFLOW_API_H

#include "agentz/v1/agent.pb-c.h"
#include "google/protobuf/field_mask.pb-c.h"
#include "rpc/rpc.h"
#include "run.h"
#include "store/redis.h"
#include "workflow.h"

typedef struct az_workflow_api az_workflow_api;

/* Binds the API to a pool and a Redis connection (borrowed; both must outlive the API). redis
 * may be NULL: nothing is published and the reconciler picks queued tasks up. NULL when out of
 * memory. */
az_workflow_api *az_workflow_api_new(az_pg *pg, az_redis *redis);
void az_workflow_api_free(az_workflow_api *api); /* accepts NULL */

/* The method table (owned by api): every WorkflowService method, WatchRun included. */
const az_method *az_workflow_api_methods(az_workflow_api *api, size_t *n);

/* Serves WatchRun through w (borrowed; must outlive the server); without it WatchRun answers
 * UNAVAILABLE. Call before serving. */
typedef struct az_watch az_watch;
void az_workflow_api_set_watch(az_workflow_api *api, az_watch *w);

/* Limits, also documented in docs/orchestration.md. */
#define AZ_WORKFLOW_NAME_MAX 128
#define AZ_WORKFLOW_DESCRIPTION_MAX 16384
#define AZ_WORKFLOW_STEPS_MAX 100
#define AZ_WORKFLOW_STEP_ID_MAX 64
#define AZ_WORKFLOW_STEP_TEXT_MAX 16384
#define AZ_WORKFLOW_INPUTS_MAX 64
#define AZ_WORKFLOW_INPUT_DESCRIPTION_MAX 1024
#define AZ_WORKFLOW_INPUT_VALUE_MAX 16384
#define AZ_WORKFLOW_LABELS_MAX 64
#define AZ_WORKFLOW_WEBHOOKS_MAX 8

/* Finds agent id for validation: AZ_OK with *out set, AZ_ERR_NOT_FOUND when there is none (any
 * other error is passed on). *out must stay valid until validation returns. */
typedef az_err (*az_workflow_agent_lookup)(void *arg, const char *agent_id,
                                           const Agentz__V1__Agent **out, char *msg);

/* Checks every field of w (a workflow about to be stored, process and failure_policy already
 * defaulted or not): name, steps (ids, texts, agents through lookup, depends_on and cycles,
 * context_from, retry policies, timeouts), inputs, placeholders ("{name}" in step texts and in
 * the step agents' and manager's role, goal and backstory must be declared inputs), labels and
 * webhook URLs. AZ_ERR_INVALID names the step and field:
 * `workflow.steps[2] ("review").depends_on[0]: unknown step "draft"`. Errors of lookup other
 * than AZ_ERR_NOT_FOUND are returned as they are. */
az_err az_workflow_validate(const Agentz__V1__Workflow *w, az_workflow_agent_lookup lookup,
                            void *arg, char *msg);

/* Checks a template: its agents (az_agent_validate; names required and unique) and its workflow
 * with Step.agent_id and manager_agent_id naming those agents. */
az_err az_workflow_validate_template(const Agentz__V1__Template *t, char *msg);

/* Copies the fields named by mask (or, when mask is NULL or empty, every populated field) from
 * src into dst, sharing pointers. Paths: name, description, process, manager_agent_id, steps,
 * inputs, failure_policy, labels, webhook_urls, "*". Unknown or output-only paths are
 * AZ_ERR_INVALID naming the path. */
az_err az_workflow_apply_mask(Agentz__V1__Workflow *dst, const Agentz__V1__Workflow *src,
                              const Google__Protobuf__FieldMask *mask, char *msg);

/* Resolves StartRun inputs against w's declared inputs: every supplied name must be declared
 * ("inputs: unknown input \"x\""), values at most AZ_WORKFLOW_INPUT_VALUE_MAX characters, and
 * required inputs present ("inputs: missing required input \"topic\""); defaults fill the rest.
 * *out (arena) lists every declared input in declaration order. */
az_err az_workflow_resolve_inputs(const Agentz__V1__Workflow *w,
                                  Agentz__V1__StartRunRequest__InputsEntry *const *given,
                                  size_t n_given, az_arena *arena, az_run_input **out, size_t *n,
                                  char *msg);

#endif
