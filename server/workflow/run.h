/* Workflow runs: owns the workflow_runs table. A run pins one workflow version and turns each
 * step into a task (server/task/task.h) in the same transaction; its status is recomputed from
 * those tasks by az_run_sync after every task transition. Results are agentz.v1 messages in the
 * caller's arena.
 *
 *     pending ──▶ running ──▶ succeeded
 *                   │  ╲
 *                   │   ╲──▶ failed     ──(ResumeRun)──▶ running
 *                   ╰──────▶ cancelled  ──(ResumeRun)──▶ running
 */
#ifndef AZ_RUN_H
#define AZ_RUN_H

#include <stdint.h>

#include "agentz/v1/workflow.pb-c.h"
#include "core/arena.h"
#include "core/ctx.h"
#include "core/placeholder.h"
#include "store/pgpool.h"
#include "task/task.h"

/* One resolved run input (defaults applied). */
typedef az_placeholder_var az_run_input;

typedef struct az_run_query {
    const char *workflow_id; /* "" = any */
    int status;              /* Agentz__V1__RunStatus; 0 = any */
    int page_size;           /* already clamped to 1..1000 */
    const char *page_token;  /* "" for the first page */
} az_run_query;

/* StartRun of version wf (validated, with id and version set) with inputs (validated and
 * complete). In one transaction: holds the workflow row FOR SHARE (AZ_ERR_NOT_FOUND if it was
 * deleted meanwhile), creates the run, one task per step (see docs/orchestration.md for the
 * mapping of each process), and sets the run running. With a non-empty request_id a repeat with
 * the same request_hash returns the first run (*replayed = 1; ready stays empty), another hash is
 * AZ_ERR_EXISTS. The ids of queued tasks are appended to ready, for the caller to publish after
 * this returns. On AZ_OK *out lives in arena. */
az_err az_run_start(az_pg *pg, const az_ctx *ctx, const Agentz__V1__Workflow *wf,
                    const az_run_input *inputs, size_t n_inputs, const char *request_id,
                    const char *request_hash, az_arena *arena, Agentz__V1__WorkflowRun **out,
                    int *replayed, az_task_ready *ready, char *msg);

/* One run with one StepRun per step (workflow order). AZ_ERR_NOT_FOUND when absent. */
az_err az_run_get(az_pg *pg, const az_ctx *ctx, const char *id, az_arena *arena,
                  Agentz__V1__WorkflowRun **out, char *msg);

/* One page of runs, newest first, without their steps; tokens are bound to the filters. */
az_err az_run_list(az_pg *pg, const az_ctx *ctx, const az_run_query *q, az_arena *arena,
                   Agentz__V1__ListRunsResponse **out, char *msg);

/* CancelRun: cancels every unfinished task of run id and marks it cancelled with reason (""
 * = "cancelled by user") as its error message. Cancelling a cancelled run returns it unchanged;
 * a succeeded or failed run is AZ_ERR_PRECONDITION naming its state. */
az_err az_run_cancel(az_pg *pg, const az_ctx *ctx, const char *id, const char *reason,
                     az_arena *arena, Agentz__V1__WorkflowRun **out, char *msg);

/* ResumeRun: for a failed or cancelled run (else AZ_ERR_PRECONDITION naming the state) whose
 * workflow still exists (else AZ_ERR_PRECONDITION), re-queues the failed and cancelled tasks and
 * everything downstream, keeping succeeded outputs, and sets the run running again. Queued task
 * ids are appended to ready for the caller to publish. */
az_err az_run_resume(az_pg *pg, const az_ctx *ctx, const char *id, az_arena *arena,
                     Agentz__V1__WorkflowRun **out, az_task_ready *ready, char *msg);

/* Recomputes run_id's status, output, error, times and usage from its tasks, in its own
 * transaction: all succeeded -> succeeded; a failed step under FAILURE_POLICY_FAIL_FAST ->
 * failed (and the other unfinished tasks are cancelled); a failed step under CONTINUE -> failed
 * once nothing else can run; all finished with some cancelled -> cancelled; else running. Called
 * by the TaskService and the engine after each task transition of a run; a run_id of ""
 * (standalone task) is a no-op. AZ_ERR_NOT_FOUND when the run does not exist. */
az_err az_run_sync(az_pg *pg, const az_ctx *ctx, const char *run_id, char *msg);

/* az_run_sync with the signature of az_task_api_set_run_hook: arg is the az_pg pool. */
az_err az_run_sync_hook(void *pg, const az_ctx *ctx, const char *run_id, char *msg);

/* GetWorkflowAnalytics of workflow wf (its latest version gives the step order) over runs
 * created in [start_us, end_us). */
az_err az_run_analytics(az_pg *pg, const az_ctx *ctx, const Agentz__V1__Workflow *wf,
                        int64_t start_us, int64_t end_us, az_arena *arena,
                        Agentz__V1__WorkflowAnalytics **out, char *msg);

#endif
