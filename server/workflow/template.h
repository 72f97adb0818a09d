/* Templates: the built-in teams compiled into the server and the templates a workspace saved
 * (owns the templates table). A template is agents plus a workflow whose Step.agent_id and
 * manager_agent_id name those agents by agent name. Results live in the caller's arena. */
#ifndef AZ_TEMPLATE_H
#define AZ_TEMPLATE_H

#include <stddef.h>

#include "agentz/v1/workflow.pb-c.h"
#include "core/arena.h"
#include "core/ctx.h"
#include "store/pgpool.h"

/* The built-in templates ("research-write-review", "code-review", "support-triage"), decoded
 * into arena, in listing order. AZ_ERR_INTERNAL if the embedded data does not decode (a bug). */
az_err az_template_builtins(az_arena *arena, Agentz__V1__Template ***out, size_t *n, char *msg);

/* A built-in template by its id, or one of the workspace's by uuid. AZ_ERR_NOT_FOUND when
 * neither. */
az_err az_template_get(az_pg *pg, const az_ctx *ctx, const char *id, az_arena *arena,
                       Agentz__V1__Template **out, char *msg);

/* ListTemplates: built-ins first, then the workspace's templates newest first. */
az_err az_template_list(az_pg *pg, const az_ctx *ctx, int page_size, const char *page_token,
                        az_arena *arena, Agentz__V1__ListTemplatesResponse **out, char *msg);

/* InstantiateTemplate of t (validated) in ONE transaction: creates its agents named
 * "<workflow name>-<agent name>" and its workflow with the agents' ids substituted. With a
 * non-empty name that name is used (a taken name is AZ_ERR_EXISTS naming "name"); with "" the
 * template's workflow name is used, suffixed "-2", "-3", … until the workflow and agent names
 * are free. Idempotent by request_id like the Create methods (*replayed = 1 returns the first
 * result: the workflow at version 1 and the agents it references, manager first then in step
 * order). On AZ_OK *out lives in arena. */
az_err az_template_instantiate(az_pg *pg, const az_ctx *ctx, const Agentz__V1__Template *t,
                               const char *name, const char *request_id, const char *request_hash,
                               az_arena *arena, Agentz__V1__InstantiateTemplateResponse **out,
                               int *replayed, char *msg);

/* Builds (but does not store) a template from the latest version of workflow workflow_id and the
 * agents it references: agents lose their ids and state, steps refer to them by name (agents
 * without a name are called "agent-1", "agent-2", …). AZ_ERR_NOT_FOUND when the workflow is
 * absent; AZ_ERR_PRECONDITION when a referenced agent was deleted. */
az_err az_template_from_workflow(az_pg *pg, const az_ctx *ctx, const char *workflow_id,
                                 const char *name, const char *description, az_arena *arena,
                                 Agentz__V1__Template **out, char *msg);

/* Stores t (validated) as a workspace template with a new id. A taken name is AZ_ERR_EXISTS
 * naming "name". */
az_err az_template_insert(az_pg *pg, const az_ctx *ctx, const Agentz__V1__Template *t,
                          az_arena *arena, Agentz__V1__Template **out, char *msg);

#endif
