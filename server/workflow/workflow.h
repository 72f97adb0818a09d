/* The workflow service: owns the workflows and workflow_versions tables. Every update writes a
 * new immutable version (the packed agentz.v1.Workflow); earlier versions stay readable and
 * runnable. Callers pass validated input; results are agentz.v1 messages in the caller's arena. */
#ifndef AZ_WORKFLOW_H
#define AZ_WORKFLOW_H

#include <stdint.h>

#include "agentz/v1/workflow.pb-c.h"
#include "core/arena.h"
#include "core/ctx.h"
#include "store/pgpool.h"

/* One page request of ListWorkflows; labels_json is a JSON object every workflow's labels must
 * contain (NULL = any). */
typedef struct az_workflow_query {
    const char *labels_json;
    int page_size;          /* already clamped to 1..1000 */
    const char *page_token; /* "" for the first page */
} az_workflow_query;

/* Inserts workflow w (validated; output-only fields ignored) at version 1. With a non-empty
 * request_id the call is idempotent: a repeat with the same request_hash returns the workflow the
 * first call created (*replayed = 1), another hash is AZ_ERR_EXISTS. A taken name is
 * AZ_ERR_EXISTS naming workflow.name. On AZ_OK *out lives in arena. */
az_err az_workflow_create(az_pg *pg, const az_ctx *ctx, const Agentz__V1__Workflow *w,
                          const char *request_id, const char *request_hash, az_arena *arena,
                          Agentz__V1__Workflow **out, int *replayed, char *msg);

/* Inserts workflow w at version 1 inside the caller's transaction on c, with id (a uuid the
 * caller generated, so idempotency keys can point at it first). */
az_err az_workflow_insert(az_pgconn *c, const az_ctx *ctx, const char *id,
                          const Agentz__V1__Workflow *w, az_arena *arena,
                          Agentz__V1__Workflow **out, char *msg);

/* Reads version `version` (0 = the latest) of workflow id. AZ_ERR_NOT_FOUND names the workflow,
 * or the version when only that is missing. */
az_err az_workflow_get(az_pg *pg, const az_ctx *ctx, const char *id, int version, az_arena *arena,
                       Agentz__V1__Workflow **out, char *msg);

/* az_workflow_get inside the caller's transaction on c. With share_lock set the workflow row is
 * locked FOR SHARE until the transaction ends, so it cannot be deleted or updated meanwhile
 * (StartRun holds it while creating the run). */
az_err az_workflow_get_in(az_pgconn *c, const az_ctx *ctx, const char *id, int version,
                          int share_lock, az_arena *arena, Agentz__V1__Workflow **out, char *msg);

/* The latest version of each workflow, newest first, keyset-paginated; tokens are bound to
 * the label filter (another filter, or a malformed token, is AZ_ERR_INVALID). */
az_err az_workflow_list(az_pg *pg, const az_ctx *ctx, const az_workflow_query *q, az_arena *arena,
                        Agentz__V1__ListWorkflowsResponse **out, char *msg);

/* Writes w (the complete merged workflow, validated; w->id names it) as version latest + 1,
 * provided the stored revision still equals expected_revision (else AZ_ERR_ABORTED). Name,
 * description and labels of the workflow row follow the new version. AZ_ERR_NOT_FOUND when
 * absent, AZ_ERR_EXISTS when the new name is taken. */
az_err az_workflow_update(az_pg *pg, const az_ctx *ctx, const Agentz__V1__Workflow *w,
                          int64_t expected_revision, az_arena *arena, Agentz__V1__Workflow **out,
                          char *msg);

/* Deletes workflow id and all its versions; with expected_revision > 0 only at that revision
 * (else AZ_ERR_ABORTED). Runs stay. AZ_ERR_PRECONDITION while a run of it is pending or
 * running. */
az_err az_workflow_delete(az_pg *pg, const az_ctx *ctx, const char *id, int64_t expected_revision,
                          char *msg);

/* Every version of workflow id, newest first, paginated. AZ_ERR_NOT_FOUND when absent. */
az_err az_workflow_list_versions(az_pg *pg, const az_ctx *ctx, const char *id, int page_size,
                                 const char *page_token, az_arena *arena,
                                 Agentz__V1__ListWorkflowVersionsResponse **out, char *msg);

/* Parses an etag produced by this service into its revision; -1 when malformed. */
int64_t az_workflow_etag_revision(const char *etag);

#endif
