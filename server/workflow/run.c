/* Workflow runs in PostgreSQL: StartRun turns a pinned workflow version into tasks in one
 * transaction, GetRun joins the run with its tasks, and az_run_sync folds the tasks' states back
 * into the run. The run row keeps what it needs from its version (step order, output steps,
 * process, failure policy), so runs outlive their workflow. Every statement is parameterized. */
#include "run.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/pagetoken.h"
#include "core/pbjson.h"
#include "core/pbtime.h"
#include "core/placeholder.h"
#include "core/text.h"
#include "google/protobuf/duration.pb-c.h"
#include "google/protobuf/struct.pb-c.h"
#include "google/protobuf/timestamp.pb-c.h"
#include "event/outbox.h"
#include "store/idem.h"
#include "workflow.h"

enum {
    RS_PENDING = AGENTZ__V1__RUN_STATUS__RUN_STATUS_PENDING,
    RS_RUNNING = AGENTZ__V1__RUN_STATUS__RUN_STATUS_RUNNING,
    RS_SUCCEEDED = AGENTZ__V1__RUN_STATUS__RUN_STATUS_SUCCEEDED,
    RS_FAILED = AGENTZ__V1__RUN_STATUS__RUN_STATUS_FAILED,
    RS_CANCELLED = AGENTZ__V1__RUN_STATUS__RUN_STATUS_CANCELLED,
};
enum {
    TS_PENDING = AGENTZ__V1__TASK_STATUS__TASK_STATUS_PENDING,
    TS_SUCCEEDED = AGENTZ__V1__TASK_STATUS__TASK_STATUS_SUCCEEDED,
    TS_FAILED = AGENTZ__V1__TASK_STATUS__TASK_STATUS_FAILED,
    TS_CANCELLED = AGENTZ__V1__TASK_STATUS__TASK_STATUS_CANCELLED,
};

static const char *const run_status_names[] = {"unspecified", "pending", "running", "succeeded",
                                               "failed", "cancelled"};

static const char *status_name(int s)
{
    return s >= 0 && s <= RS_CANCELLED ? run_status_names[s] : "unknown";
}

#define COLS                                                                                     \
    "id::text, workflow_id::text, workflow_version, process, failure_policy,"                    \
    " array_to_json(step_ids)::text, array_to_json(output_steps)::text, status, inputs::text,"   \
    " output_raw, error_type, error_message, prompt_tokens, completion_tokens, total_tokens,"    \
    " cost_usd, (extract(epoch FROM create_time) * 1000000)::bigint,"                           \
    " (extract(epoch FROM start_time) * 1000000)::bigint,"                                       \
    " (extract(epoch FROM end_time) * 1000000)::bigint, workspace_id::text, create_time::text"

enum {
    C_ID, C_WORKFLOW, C_VERSION, C_PROCESS, C_POLICY, C_STEPS, C_OUTPUT_STEPS, C_STATUS, C_INPUTS,
    C_OUTPUT, C_ERROR_TYPE, C_ERROR_MESSAGE, C_PROMPT, C_COMPLETION, C_TOTAL, C_COST, C_CREATE,
    C_START, C_END, C_WORKSPACE, C_CREATE_TEXT,
};

/* ---------------------------------------------------------------- helpers */

static long long ts_us(const Google__Protobuf__Timestamp *t)
{
    return t ? (long long)t->seconds * 1000000 + t->nanos / 1000 : 0;
}

static Google__Protobuf__Duration *duration_s(az_arena *a, double s)
{
    return az_pbtime_duration(a, (int64_t)(s * 1e6 + 0.5));
}

static long long num(const PGresult *r, int row, int c) { return atoll(PQgetvalue(r, row, c)); }

static char *col(az_arena *a, const PGresult *r, int row, int c)
{
    return az_arena_strndup(a, PQgetvalue(r, row, c), (size_t)PQgetlength(r, row, c));
}

/* A JSON array of strings (array_to_json of text[]) as an arena string array. */
static char **string_array(az_arena *a, const char *json, size_t *n)
{
    *n = 0;
    json_t *arr = json_loads(json, 0, NULL);
    size_t k = json_is_array(arr) ? json_array_size(arr) : 0;
    char **out = az_arena_alloc(a, (k ? k : 1) * sizeof *out);
    for (size_t i = 0; out && i < k; i++) {
        out[i] = az_arena_strdup(a, json_string_value(json_array_get(arr, i)));
        if (!out[i]) out = NULL;
    }
    json_decref(arr);
    if (out) *n = k;
    return out;
}

/* A text[] literal for a parameter: {"a","b"} with quotes and backslashes escaped. */
static char *text_array(az_arena *a, char *const *items, size_t n)
{
    size_t len = 3;
    for (size_t i = 0; i < n; i++) len += 2 * strlen(items[i]) + 3;
    char *out = az_arena_alloc(a, len), *p = out;
    if (!out) return NULL;
    *p++ = '{';
    for (size_t i = 0; i < n; i++) {
        if (i) *p++ = ',';
        *p++ = '"';
        for (const char *s = items[i]; *s; s++) {
            if (*s == '"' || *s == '\\') *p++ = '\\';
            *p++ = *s;
        }
        *p++ = '"';
    }
    *p++ = '}';
    *p = '\0';
    return out;
}

/* ---------------------------------------------------------------- row -> message */

static az_err from_row(const PGresult *r, int row, az_arena *a, Agentz__V1__WorkflowRun **out,
                       char *msg)
{
    Agentz__V1__WorkflowRun *run = az_arena_alloc(a, sizeof *run);
    Agentz__V1__TokenUsage *u = az_arena_alloc(a, sizeof *u);
    if (!run || !u) return az_fail(msg, AZ_ERR_NOMEM, "out of memory");
    agentz__v1__workflow_run__init(run);
    agentz__v1__token_usage__init(u);
    run->id = col(a, r, row, C_ID);
    run->workflow_id = col(a, r, row, C_WORKFLOW);
    run->workflow_version = (int32_t)num(r, row, C_VERSION);
    run->status = (Agentz__V1__RunStatus)num(r, row, C_STATUS);
    json_t *inputs = json_loads(PQgetvalue(r, row, C_INPUTS), 0, NULL);
    if (json_is_object(inputs) && json_object_size(inputs) > 0) {
        run->inputs = az_arena_alloc(a, json_object_size(inputs) * sizeof *run->inputs);
        const char *k;
        json_t *v;
        json_object_foreach(inputs, k, v)
        {
            Agentz__V1__WorkflowRun__InputsEntry *e = run->inputs ? az_arena_alloc(a, sizeof *e) : NULL;
            if (!e) break;
            agentz__v1__workflow_run__inputs_entry__init(e);
            e->key = az_arena_strdup(a, k);
            e->value = az_arena_strdup(a, json_string_value(v));
            run->inputs[run->n_inputs++] = e;
        }
    }
    json_decref(inputs);
    if (!PQgetisnull(r, row, C_OUTPUT)) {
        Agentz__V1__TaskOutput *o = az_arena_alloc(a, sizeof *o);
        if (!o) return az_fail(msg, AZ_ERR_NOMEM, "out of memory");
        agentz__v1__task_output__init(o);
        o->raw = col(a, r, row, C_OUTPUT);
        run->output = o;
    }
    if (PQgetlength(r, row, C_ERROR_TYPE) > 0 || PQgetlength(r, row, C_ERROR_MESSAGE) > 0) {
        Agentz__V1__TaskError *e = az_arena_alloc(a, sizeof *e);
        if (!e) return az_fail(msg, AZ_ERR_NOMEM, "out of memory");
        agentz__v1__task_error__init(e);
        e->type = col(a, r, row, C_ERROR_TYPE);
        e->message = col(a, r, row, C_ERROR_MESSAGE);
        run->error = e;
    }
    u->prompt_tokens = num(r, row, C_PROMPT);
    u->completion_tokens = num(r, row, C_COMPLETION);
    u->total_tokens = num(r, row, C_TOTAL);
    u->cost_usd = strtod(PQgetvalue(r, row, C_COST), NULL);
    run->usage = u;
    run->create_time = az_pbtime_timestamp(a, num(r, row, C_CREATE));
    if (!PQgetisnull(r, row, C_START)) run->start_time = az_pbtime_timestamp(a, num(r, row, C_START));
    if (!PQgetisnull(r, row, C_END)) run->end_time = az_pbtime_timestamp(a, num(r, row, C_END));
    run->workspace_id = col(a, r, row, C_WORKSPACE);
    if (!run->id || !run->workflow_id || !run->create_time || !run->workspace_id)
        return az_fail(msg, AZ_ERR_NOMEM, "out of memory");
    *out = run;
    return AZ_OK;
}

/* Reads run id (optionally FOR UPDATE); *res holds one row, freed by the caller. */
static az_err load(az_pgconn *c, const az_ctx *ctx, const char *id, int lock, PGresult **res,
                   char *msg)
{
    *res = NULL;
    if (!az_text_is_uuid(id)) return az_fail(msg, AZ_ERR_NOT_FOUND, "run %s not found", id);
    const char *p[2] = {ctx->workspace_id, id};
    PGresult *r;
    az_err err = az_pg_exec(c, ctx,
                            lock ? "SELECT " COLS " FROM workflow_runs WHERE workspace_id = $1"
                                   " AND id = $2 FOR UPDATE"
                                 : "SELECT " COLS " FROM workflow_runs WHERE workspace_id = $1"
                                   " AND id = $2",
                            2, p, &r, msg);
    if (err != AZ_OK) return err;
    if (PQntuples(r) == 0) {
        PQclear(r);
        return az_fail(msg, AZ_ERR_NOT_FOUND, "run %s not found", id);
    }
    *res = r;
    return AZ_OK;
}

/* The task of each step of the run (NULL when none), in the run's step order. */
static Agentz__V1__Task **tasks_by_step(az_arena *a, char **step_ids, size_t n_steps,
                                        Agentz__V1__Task **tasks, size_t n_tasks)
{
    Agentz__V1__Task **by = az_arena_alloc(a, (n_steps ? n_steps : 1) * sizeof *by);
    if (!by) return NULL;
    for (size_t i = 0; i < n_steps; i++) {
        for (size_t j = 0; j < n_tasks; j++) {
            if (tasks[j]->step_id && strcmp(tasks[j]->step_id, step_ids[i]) == 0) by[i] = tasks[j];
        }
    }
    return by;
}

/* The run's output from its output steps' tasks: one step's output as is, several as a JSON
 * object of raw outputs keyed by step id (also given as output.json). */
static az_err build_output(az_arena *a, char **out_steps, size_t n_out, char **step_ids,
                           Agentz__V1__Task **by, size_t n_steps, Agentz__V1__TaskOutput **out,
                           char *msg)
{
    *out = NULL;
    if (n_out == 1) {
        for (size_t i = 0; i < n_steps; i++) {
            if (by[i] && strcmp(step_ids[i], out_steps[0]) == 0 && by[i]->output) {
                *out = by[i]->output;
                return AZ_OK;
            }
        }
        return AZ_OK;
    }
    json_t *obj = json_object();
    for (size_t k = 0; obj && k < n_out; k++) {
        for (size_t i = 0; i < n_steps; i++) {
            if (by[i] && strcmp(step_ids[i], out_steps[k]) == 0)
                json_object_set_new(obj, out_steps[k],
                                    json_string(by[i]->output && by[i]->output->raw ? by[i]->output->raw : ""));
        }
    }
    char *s = obj ? json_dumps(obj, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
    json_decref(obj);
    Agentz__V1__TaskOutput *o = az_arena_alloc(a, sizeof *o);
    if (!s || !o) {
        free(s);
        return az_fail(msg, AZ_ERR_NOMEM, "out of memory");
    }
    agentz__v1__task_output__init(o);
    o->raw = az_arena_strdup(a, s);
    ProtobufCMessage *st = NULL;
    char jmsg[AZ_MSG_MAX];
    if (az_pbjson_decode(&google__protobuf__struct__descriptor, s, strlen(s), az_arena_allocator(a),
                         &st, jmsg) == AZ_OK)
        o->json = (Google__Protobuf__Struct *)st;
    free(s);
    if (!o->raw) return az_fail(msg, AZ_ERR_NOMEM, "out of memory");
    *out = o;
    return AZ_OK;
}

/* ---------------------------------------------------------------- sync */

/* What a run's tasks say about it. */
typedef struct verdict {
    int status;
    const char *error_type, *error_message; /* NULL = keep the stored error */
    char *output_raw;                       /* NULL = none */
    long long start_us, end_us;             /* 0 = none */
    Agentz__V1__TokenUsage usage;
    int cancel_rest; /* unfinished tasks must be cancelled (fail fast, or nothing can run) */
    const char *failed_step;
} verdict;

static int terminal_task(int s) { return s == TS_SUCCEEDED || s == TS_FAILED || s == TS_CANCELLED; }

/* The decision table of az_run_sync, over the run's tasks in step order (by[i] may be NULL
 * for a step whose task is missing, which counts as unfinished). */
static az_err judge(az_arena *a, int policy, char **step_ids, Agentz__V1__Task **by, size_t n,
                    char **out_steps, size_t n_out, verdict *v, char *msg)
{
    memset(v, 0, sizeof *v);
    agentz__v1__token_usage__init(&v->usage);
    size_t succeeded = 0, failed = 0, cancelled = 0, unfinished = 0;
    int first_failed = -1, first_cancelled = -1;
    for (size_t i = 0; i < n; i++) {
        Agentz__V1__Task *t = by[i];
        if (!t) {
            unfinished++;
            continue;
        }
        if (t->usage) {
            v->usage.prompt_tokens += t->usage->prompt_tokens;
            v->usage.completion_tokens += t->usage->completion_tokens;
            v->usage.total_tokens += t->usage->total_tokens;
            v->usage.cost_usd += t->usage->cost_usd;
        }
        long long s = ts_us(t->start_time), e = ts_us(t->end_time);
        if (s && (!v->start_us || s < v->start_us)) v->start_us = s;
        if (e && e > v->end_us) v->end_us = e;
        switch ((int)t->status) {
        case TS_SUCCEEDED: succeeded++; break;
        case TS_FAILED:
            failed++;
            if (first_failed < 0) first_failed = (int)i;
            break;
        case TS_CANCELLED:
            cancelled++;
            if (first_cancelled < 0) first_cancelled = (int)i;
            break;
        default: unfinished++;
        }
    }
    /* Pending tasks downstream of a failed or cancelled one can never run: find them by a
     * fixed point over the dependency edges (at most 100 steps). */
    unsigned char *blocked = az_arena_alloc(a, n ? n : 1);
    if (!blocked) return az_fail(msg, AZ_ERR_NOMEM, "out of memory");
    for (int changed = 1; changed;) {
        changed = 0;
        for (size_t i = 0; i < n; i++) {
            Agentz__V1__Task *t = by[i];
            if (!t || blocked[i] || (int)t->status != TS_PENDING) continue;
            for (size_t d = 0; d < t->n_depends_on && !blocked[i]; d++) {
                for (size_t j = 0; j < n; j++) {
                    if (!by[j] || strcmp(by[j]->id, t->depends_on[d]) != 0) continue;
                    int s = (int)by[j]->status;
                    if (s == TS_FAILED || s == TS_CANCELLED || blocked[j]) {
                        blocked[i] = 1;
                        changed = 1;
                    }
                }
            }
        }
    }
    size_t runnable = 0;
    for (size_t i = 0; i < n; i++) runnable += (!by[i] || !terminal_task(by[i]->status)) && !blocked[i];

    if (n > 0 && succeeded == n) {
        v->status = RS_SUCCEEDED;
        v->error_type = v->error_message = "";
        Agentz__V1__TaskOutput *o;
        az_err err = build_output(a, out_steps, n_out, step_ids, by, n, &o, msg);
        if (err != AZ_OK) return err;
        v->output_raw = o ? o->raw : az_arena_strdup(a, "");
    } else if (failed > 0 && (policy != AGENTZ__V1__FAILURE_POLICY__FAILURE_POLICY_CONTINUE ||
                              runnable == 0)) {
        const Agentz__V1__Task *t = by[first_failed];
        v->status = RS_FAILED;
        v->failed_step = step_ids[first_failed];
        v->error_type = t->error && t->error->type && *t->error->type ? t->error->type : "step_failed";
        v->error_message = az_arena_printf(a, "step \"%s\" failed: %s", step_ids[first_failed],
                                           t->error && t->error->message ? t->error->message : "");
        v->cancel_rest = unfinished > 0;
    } else if (unfinished == 0 || runnable == 0) {
        v->status = RS_CANCELLED;
        v->error_type = "cancelled";
        v->error_message = first_cancelled >= 0
                               ? az_arena_printf(a, "step \"%s\" was cancelled", step_ids[first_cancelled])
                               : "cancelled";
        v->cancel_rest = unfinished > 0;
    } else {
        v->status = RS_RUNNING;
        v->error_type = v->error_message = "";
    }
    if (!v->error_message) return az_fail(msg, AZ_ERR_NOMEM, "out of memory");
    return AZ_OK;
}

/* Appends RunStatusChanged from -> to of run id (workflow wf_id at version) to the outbox, in
 * the transaction of the change and after its last row lock. A terminal status also queues a
 * delivery to each webhook URL of the run's workflow version (none if the workflow is gone). */
static az_err emit_run(az_pgconn *c, const az_ctx *ctx, const char *id, const char *wf_id,
                       int version, int from, int to, const char *error_type,
                       const char *error_message, az_arena *a, char *msg)
{
    Agentz__V1__RunStatusChanged ch = AGENTZ__V1__RUN_STATUS_CHANGED__INIT;
    Agentz__V1__TaskError e = AGENTZ__V1__TASK_ERROR__INIT;
    ch.from = (Agentz__V1__RunStatus)from;
    ch.to = (Agentz__V1__RunStatus)to;
    if ((to == RS_FAILED || to == RS_CANCELLED) && error_type && *error_type) {
        e.type = (char *)error_type;
        e.message = (char *)(error_message ? error_message : "");
        ch.error = &e;
    }
    Agentz__V1__Event ev = AGENTZ__V1__EVENT__INIT;
    ev.run_id = (char *)id;
    ev.payload_case = AGENTZ__V1__EVENT__PAYLOAD_RUN_STATUS;
    ev.run_status = &ch;
    char **hooks = NULL;
    size_t n_hooks = 0;
    if (to == RS_SUCCEEDED || to == RS_FAILED || to == RS_CANCELLED) {
        Agentz__V1__Workflow *wf = NULL;
        char m[AZ_MSG_MAX];
        az_err err = az_workflow_get_in(c, ctx, wf_id, version, 0, a, &wf, m);
        if (err == AZ_OK) {
            hooks = wf->webhook_urls;
            n_hooks = wf->n_webhook_urls;
        } else if (err != AZ_ERR_NOT_FOUND) {
            return az_fail(msg, err, "%s", m);
        }
    }
    return az_outbox_append(c, ctx, &ev, (const char *const *)hooks, n_hooks, msg);
}

/* The body of az_run_sync inside c (which must hold the run row FOR UPDATE, in run). With
 * cancel_reason the run ends cancelled with that message whatever its tasks say. */
static az_err sync_in(az_pgconn *c, const az_ctx *ctx, const PGresult *run, const char *cancel_reason,
                      az_arena *a, char *msg)
{
    const char *id = PQgetvalue(run, 0, C_ID);
    size_t n_steps, n_out, n_tasks;
    char **step_ids = string_array(a, PQgetvalue(run, 0, C_STEPS), &n_steps);
    char **out_steps = string_array(a, PQgetvalue(run, 0, C_OUTPUT_STEPS), &n_out);
    if (!step_ids || !out_steps) return az_fail(msg, AZ_ERR_NOMEM, "out of memory");
    Agentz__V1__Task **tasks;
    az_err err = az_task_list_run(c, ctx, id, a, &tasks, &n_tasks, msg);
    if (err != AZ_OK) return err;
    Agentz__V1__Task **by = tasks_by_step(a, step_ids, n_steps, tasks, n_tasks);
    if (!by) return az_fail(msg, AZ_ERR_NOMEM, "out of memory");
    verdict v;
    if ((err = judge(a, (int)num(run, 0, C_POLICY), step_ids, by, n_steps, out_steps, n_out, &v,
                     msg)) != AZ_OK)
        return err;
    int stored = (int)num(run, 0, C_STATUS);
    if (cancel_reason) {
        v.status = RS_CANCELLED;
        v.error_type = "cancelled";
        v.error_message = *cancel_reason ? cancel_reason : "cancelled by user";
        v.output_raw = NULL;
    } else if ((stored == RS_CANCELLED || stored == RS_FAILED || stored == RS_SUCCEEDED) &&
               v.status != RS_RUNNING) {
        /* A finished run keeps its verdict (a user's cancel stays a cancel even if a step failed
         * meanwhile); only ResumeRun makes it run again. Usage and times still refresh. */
        v.status = stored;
        v.error_type = v.error_message = NULL;
        v.output_raw = PQgetisnull(run, 0, C_OUTPUT) ? NULL : (char *)PQgetvalue(run, 0, C_OUTPUT);
        v.cancel_rest = 0;
    }
    if (v.cancel_rest) {
        const char *why = v.failed_step
                              ? az_arena_printf(a, "step \"%s\" failed (failure policy %s)", v.failed_step,
                                                (int)num(run, 0, C_POLICY) ==
                                                        AGENTZ__V1__FAILURE_POLICY__FAILURE_POLICY_CONTINUE
                                                    ? "continue: nothing else can run"
                                                    : "fail fast")
                              : "nothing else can run";
        if (!why) return az_fail(msg, AZ_ERR_NOMEM, "out of memory");
        if ((err = az_task_cancel_run(c, ctx, id, why, NULL, msg)) != AZ_OK) return err;
    }
    int terminal = v.status == RS_SUCCEEDED || v.status == RS_FAILED || v.status == RS_CANCELLED;
    char st[8], start[24], end[24], prompt[24], completion[24], total[24], cost[40];
    snprintf(st, sizeof st, "%d", v.status);
    snprintf(start, sizeof start, "%lld", v.start_us);
    snprintf(end, sizeof end, "%lld", v.end_us);
    snprintf(prompt, sizeof prompt, "%lld", (long long)v.usage.prompt_tokens);
    snprintf(completion, sizeof completion, "%lld", (long long)v.usage.completion_tokens);
    snprintf(total, sizeof total, "%lld", (long long)v.usage.total_tokens);
    snprintf(cost, sizeof cost, "%.17g", v.usage.cost_usd);
    const char *p[12] = {ctx->workspace_id, id, st, v.output_raw, v.error_type, v.error_message,
                         prompt, completion, total, cost, start, terminal ? end : NULL};
    err = az_pg_exec(
        c, ctx,
        "UPDATE workflow_runs SET status = $3::smallint, output_raw = $4,"
        " error_type = coalesce($5, error_type), error_message = coalesce($6, error_message),"
        " prompt_tokens = $7::bigint, completion_tokens = $8::bigint, total_tokens = $9::bigint,"
        " cost_usd = $10::double precision,"
        " start_time = CASE WHEN $11::bigint = 0 THEN NULL"
        "   ELSE 'epoch'::timestamptz + $11::bigint * interval '1 microsecond' END,"
        " end_time = CASE WHEN $12::bigint IS NULL THEN NULL"
        "   WHEN end_time IS NOT NULL AND status = $3::smallint THEN end_time"
        "   ELSE greatest(clock_timestamp(), 'epoch'::timestamptz + $12::bigint * interval '1 microsecond') END,"
        " update_time = clock_timestamp()"
        " WHERE workspace_id = $1 AND id = $2",
        12, p, NULL, msg);
    if (err != AZ_OK || v.status == stored) return err;
    return emit_run(c, ctx, id, PQgetvalue(run, 0, C_WORKFLOW), (int)num(run, 0, C_VERSION), stored,
                    v.status, v.error_type, v.error_message, a, msg);
}

az_err az_run_sync(az_pg *pg, const az_ctx *ctx, const char *run_id, char *msg)
{
    if (!run_id || !*run_id) return AZ_OK;
    az_arena *a = az_arena_new(0);
    if (!a) return az_fail(msg, AZ_ERR_NOMEM, "out of memory");
    az_pgconn *c;
    az_err err = az_pg_acquire(pg, ctx, &c, msg);
    if (err != AZ_OK) {
        az_arena_free(a);
        return err;
    }
    PGresult *r = NULL;
    if ((err = az_pg_begin(c, ctx, msg)) == AZ_OK && (err = load(c, ctx, run_id, 1, &r, msg)) == AZ_OK &&
        (err = sync_in(c, ctx, r, NULL, a, msg)) == AZ_OK)
        err = az_pg_commit(c, ctx, msg);
    PQclear(r);
    az_pg_release(c);
    az_arena_free(a);
    return err;
}

az_err az_run_sync_hook(void *pg, const az_ctx *ctx, const char *run_id, char *msg)
{
    return az_run_sync(pg, ctx, run_id, msg);
}

/* ---------------------------------------------------------------- get */

/* The run with its steps, inside c. */
static az_err get_in(az_pgconn *c, const az_ctx *ctx, const char *id, az_arena *a,
                     Agentz__V1__WorkflowRun **out, char *msg)
{
    PGresult *r;
    az_err err = load(c, ctx, id, 0, &r, msg);
    if (err != AZ_OK) return err;
    Agentz__V1__WorkflowRun *run = NULL;
    size_t n_steps = 0, n_out = 0, n_tasks = 0;
    char **step_ids = string_array(a, PQgetvalue(r, 0, C_STEPS), &n_steps);
    char **out_steps = string_array(a, PQgetvalue(r, 0, C_OUTPUT_STEPS), &n_out);
    Agentz__V1__Task **tasks = NULL, **by = NULL;
    if (!step_ids || !out_steps) err = az_fail(msg, AZ_ERR_NOMEM, "out of memory");
    if (err == AZ_OK) err = from_row(r, 0, a, &run, msg);
    if (err == AZ_OK) err = az_task_list_run(c, ctx, run->id, a, &tasks, &n_tasks, msg);
    if (err == AZ_OK && !(by = tasks_by_step(a, step_ids, n_steps, tasks, n_tasks)))
        err = az_fail(msg, AZ_ERR_NOMEM, "out of memory");
    if (err == AZ_OK && !(run->steps = az_arena_alloc(a, (n_steps ? n_steps : 1) * sizeof *run->steps)))
        err = az_fail(msg, AZ_ERR_NOMEM, "out of memory");
    for (size_t i = 0; err == AZ_OK && i < n_steps; i++) {
        Agentz__V1__StepRun *s = az_arena_alloc(a, sizeof *s);
        if (!s) {
            err = az_fail(msg, AZ_ERR_NOMEM, "out of memory");
            break;
        }
        agentz__v1__step_run__init(s);
        s->step_id = step_ids[i];
        s->status = AGENTZ__V1__TASK_STATUS__TASK_STATUS_PENDING;
        const Agentz__V1__Task *t = by[i];
        if (t) {
            s->task_id = t->id;
            s->status = t->status;
            s->attempt = t->attempt;
            s->output = t->output;
            s->error = t->error;
            s->start_time = t->start_time;
            s->end_time = t->end_time;
        }
        run->steps[run->n_steps++] = s;
    }
    /* A succeeded run's output comes from the tasks, so a single output step keeps its json. */
    if (err == AZ_OK && (int)run->status == RS_SUCCEEDED) {
        Agentz__V1__TaskOutput *o;
        err = build_output(a, out_steps, n_out, step_ids, by, n_steps, &o, msg);
        if (err == AZ_OK && o) run->output = o;
    }
    PQclear(r);
    if (err == AZ_OK) *out = run;
    return err;
}

az_err az_run_get(az_pg *pg, const az_ctx *ctx, const char *id, az_arena *a,
                  Agentz__V1__WorkflowRun **out, char *msg)
{
    *out = NULL;
    if (!az_text_is_uuid(id)) return az_fail(msg, AZ_ERR_NOT_FOUND, "run %s not found", id);
    az_pgconn *c;
    az_err err = az_pg_acquire(pg, ctx, &c, msg);
    if (err != AZ_OK) return err;
    /* One snapshot for the run and its tasks. */
    if ((err = az_pg_begin(c, ctx, msg)) == AZ_OK && (err = get_in(c, ctx, id, a, out, msg)) == AZ_OK)
        err = az_pg_commit(c, ctx, msg);
    if (err != AZ_OK) *out = NULL;
    az_pg_release(c);
    return err;
}

/* ---------------------------------------------------------------- start */

static int step_index(const Agentz__V1__Workflow *wf, const char *id)
{
    for (size_t i = 0; i < wf->n_steps; i++) {
        if (strcmp(wf->steps[i]->id, id) == 0) return (int)i;
    }
    return -1;
}

/* Step indexes in an order where every step follows its depends_on (Kahn, stable by step
 * order), so each task is inserted after the tasks it depends on. Validation guarantees a DAG. */
static int *insert_order(az_arena *a, const Agentz__V1__Workflow *wf)
{
    size_t n = wf->n_steps;
    int *order = az_arena_alloc(a, (n ? n : 1) * sizeof *order);
    unsigned char *placed = az_arena_alloc(a, n ? n : 1);
    if (!order || !placed) return NULL;
    for (size_t k = 0; k < n; k++) {
        int pick = -1;
        for (size_t i = 0; i < n && pick < 0; i++) {
            if (placed[i]) continue;
            int ready = 1;
            const Agentz__V1__Step *s = wf->steps[i];
            for (size_t d = 0; d < s->n_depends_on && ready; d++) {
                int j = step_index(wf, s->depends_on[d]);
                ready = j < 0 || placed[j];
            }
            if (ready) pick = (int)i;
        }
        if (pick < 0) return NULL;
        placed[pick] = 1;
        order[k] = pick;
    }
    return order;
}

/* The steps whose outputs make the run's output: the last step (sequential, hierarchical) or
 * the sinks (parallel: steps no other step depends on), in step order. */
static char **output_steps(az_arena *a, const Agentz__V1__Workflow *wf, size_t *n)
{
    *n = 0;
    char **out = az_arena_alloc(a, (wf->n_steps ? wf->n_steps : 1) * sizeof *out);
    if (!out || wf->n_steps == 0) return out;
    if (wf->process != AGENTZ__V1__PROCESS__PROCESS_PARALLEL) {
        out[(*n)++] = wf->steps[wf->n_steps - 1]->id;
        return out;
    }
    for (size_t i = 0; i < wf->n_steps; i++) {
        int needed = 0;
        for (size_t j = 0; j < wf->n_steps && !needed; j++) {
            for (size_t d = 0; d < wf->steps[j]->n_depends_on && !needed; d++)
                needed = strcmp(wf->steps[j]->depends_on[d], wf->steps[i]->id) == 0;
        }
        if (!needed) out[(*n)++] = wf->steps[i]->id;
    }
    return out;
}

/* The task for step i (see docs/orchestration.md, "From steps to tasks"). */
static az_err build_task(az_arena *a, const Agentz__V1__Workflow *wf, size_t i, char ids[][37],
                         const char *run_id, const az_run_input *in, size_t n_in, Agentz__V1__Task *t,
                         char *msg)
{
    const Agentz__V1__Step *s = wf->steps[i];
    int hier = wf->process == AGENTZ__V1__PROCESS__PROCESS_HIERARCHICAL;
    int par = wf->process == AGENTZ__V1__PROCESS__PROCESS_PARALLEL;
    agentz__v1__task__init(t);
    t->id = ids[i];
    t->description = az_placeholder_fill_vars(s->description, in, n_in, a);
    t->expected_output = az_placeholder_fill_vars(s->expected_output, in, n_in, a);
    t->agent_id = hier ? wf->manager_agent_id : s->agent_id;
    t->run_id = (char *)run_id;
    t->step_id = s->id;
    t->retry_policy = s->retry_policy;
    t->timeout = s->timeout;
    t->output_schema = s->output_schema;
    if (!t->description || !t->expected_output) return az_fail(msg, AZ_ERR_NOMEM, "out of memory");
    /* Dependencies: the declared DAG (parallel) or the previous step (sequential and
     * hierarchical, where the manager works through the steps in order). */
    size_t nd = par ? s->n_depends_on : (i > 0);
    t->depends_on = az_arena_alloc(a, (nd ? nd : 1) * sizeof *t->depends_on);
    if (!t->depends_on) return az_fail(msg, AZ_ERR_NOMEM, "out of memory");
    if (par) {
        for (size_t d = 0; d < nd; d++) t->depends_on[d] = ids[step_index(wf, s->depends_on[d])];
    } else if (nd) {
        t->depends_on[0] = ids[i - 1];
    }
    t->n_depends_on = nd;
    /* Context markers the engine resolves: "@step:<id>" (that step's output, replacing the
     * default of the dependencies' outputs), and for hierarchical runs "@assignee:<agent>" and
     * "@coworker:<agent>" (whom the manager should, and may, delegate to). */
    size_t cap = s->n_context_from + s->n_depends_on + 2 + (hier ? wf->n_steps : 0);
    t->context = az_arena_alloc(a, cap * sizeof *t->context);
    if (!t->context) return az_fail(msg, AZ_ERR_NOMEM, "out of memory");
    if (s->n_context_from) {
        for (size_t k = 0; k < s->n_context_from; k++)
            t->context[t->n_context++] = az_arena_printf(a, "@step:%s", s->context_from[k]);
    } else if (par) {
        for (size_t k = 0; k < s->n_depends_on; k++)
            t->context[t->n_context++] = az_arena_printf(a, "@step:%s", s->depends_on[k]);
    } else if (i > 0) {
        t->context[t->n_context++] = az_arena_printf(a, "@step:%s", wf->steps[i - 1]->id);
    }
    if (hier) {
        if (s->agent_id && *s->agent_id)
            t->context[t->n_context++] = az_arena_printf(a, "@assignee:%s", s->agent_id);
        for (size_t k = 0; k < wf->n_steps; k++) {
            const char *ag = wf->steps[k]->agent_id;
            int seen = !ag || !*ag;
            for (size_t j = 0; j < k && !seen; j++) seen = strcmp(wf->steps[j]->agent_id, ag) == 0;
            if (!seen) t->context[t->n_context++] = az_arena_printf(a, "@coworker:%s", ag);
        }
    }
    for (size_t k = 0; k < t->n_context; k++) {
        if (!t->context[k]) return az_fail(msg, AZ_ERR_NOMEM, "out of memory");
    }
    return AZ_OK;
}

static char *inputs_json(az_arena *a, const az_run_input *in, size_t n)
{
    json_t *obj = json_object();
    for (size_t i = 0; obj && i < n; i++) json_object_set_new(obj, in[i].name, json_string(in[i].value));
    char *s = obj ? json_dumps(obj, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
    json_decref(obj);
    char *out = s ? az_arena_strdup(a, s) : NULL;
    free(s);
    return out;
}

az_err az_run_start(az_pg *pg, const az_ctx *ctx, const Agentz__V1__Workflow *wf,
                    const az_run_input *inputs, size_t n_inputs, const char *request_id,
                    const char *request_hash, az_arena *a, Agentz__V1__WorkflowRun **out,
                    int *replayed, az_task_ready *ready, char *msg)
{
    *out = NULL;
    *replayed = 0;
    size_t n = wf->n_steps, n_out;
    char run_id[37], (*ids)[37] = az_arena_alloc(a, (n ? n : 1) * sizeof *ids);
    int *order = insert_order(a, wf);
    char **outs = output_steps(a, wf, &n_out);
    char **step_ids = az_arena_alloc(a, (n ? n : 1) * sizeof *step_ids);
    if (!ids || !order || !outs || !step_ids) return az_fail(msg, AZ_ERR_NOMEM, "out of memory");
    if (az_text_uuid4(run_id) != AZ_OK) return az_fail(msg, AZ_ERR_IO, "cannot generate an id");
    for (size_t i = 0; i < n; i++) {
        if (az_text_uuid4(ids[i]) != AZ_OK) return az_fail(msg, AZ_ERR_IO, "cannot generate an id");
        step_ids[i] = wf->steps[i]->id;
    }
    int process = wf->process ? (int)wf->process : AGENTZ__V1__PROCESS__PROCESS_SEQUENTIAL;
    int policy = wf->failure_policy ? (int)wf->failure_policy
                                    : AGENTZ__V1__FAILURE_POLICY__FAILURE_POLICY_FAIL_FAST;
    char version[16], proc[8], pol[8];
    snprintf(version, sizeof version, "%d", wf->version);
    snprintf(proc, sizeof proc, "%d", process);
    snprintf(pol, sizeof pol, "%d", policy);
    const char *p[9] = {ctx->workspace_id, run_id, wf->id, version, proc, pol,
                        text_array(a, step_ids, n), text_array(a, outs, n_out),
                        inputs_json(a, inputs, n_inputs)};
    if (!p[6] || !p[7] || !p[8]) return az_fail(msg, AZ_ERR_NOMEM, "out of memory");
    size_t ready_before = ready->n;

    az_pgconn *c;
    az_err err = az_pg_acquire(pg, ctx, &c, msg);
    if (err != AZ_OK) return err;
    PGresult *r = NULL;
    if ((err = az_pg_begin(c, ctx, msg)) != AZ_OK) goto out;
    if (request_id && *request_id) {
        char existing[37];
        err = az_idem_claim(c, ctx, "StartRun", request_id, request_hash, run_id, existing, msg);
        if (err != AZ_OK) goto out;
        if (existing[0]) {
            err = get_in(c, ctx, existing, a, out, msg);
            if (err == AZ_OK) {
                *replayed = 1;
                err = az_pg_commit(c, ctx, msg);
            }
            goto out;
        }
    }
    /* FOR SHARE: DeleteWorkflow (FOR UPDATE) waits for this run to exist, then refuses. */
    const char *pw[2] = {ctx->workspace_id, wf->id};
    err = az_pg_exec(c, ctx, "SELECT 1 FROM workflows WHERE workspace_id = $1 AND id = $2 FOR SHARE",
                     2, pw, &r, msg);
    if (err != AZ_OK) goto out;
    if (PQntuples(r) == 0) {
        err = az_fail(msg, AZ_ERR_NOT_FOUND, "workflow %s not found", wf->id);
        goto out;
    }
    PQclear(r);
    r = NULL;
    err = az_pg_exec(c, ctx,
                     "INSERT INTO workflow_runs (workspace_id, id, workflow_id, workflow_version,"
                     " process, failure_policy, step_ids, output_steps, inputs, status)"
                     " VALUES ($1, $2, $3, $4::integer, $5::smallint, $6::smallint, $7::text[],"
                     " $8::text[], $9::jsonb, 1)",
                     9, p, NULL, msg);
    /* The run's first event, before its tasks'; sync_in below adds pending -> running. */
    if (err == AZ_OK)
        err = emit_run(c, ctx, run_id, wf->id, wf->version, AGENTZ__V1__RUN_STATUS__RUN_STATUS_UNSPECIFIED,
                       RS_PENDING, NULL, NULL, a, msg);
    for (size_t k = 0; err == AZ_OK && k < n; k++) {
        Agentz__V1__Task t;
        Agentz__V1__Task *created;
        size_t i = (size_t)order[k];
        err = build_task(a, wf, i, ids, run_id, inputs, n_inputs, &t, msg);
        if (err == AZ_OK) err = az_task_insert(c, ctx, &t, wf->id, a, &created, ready, msg);
        if (err != AZ_OK && strncmp(msg, "workflow.", 9) != 0) {
            /* Name the step: the task service's message speaks of "task.…". */
            char inner[AZ_MSG_MAX];
            snprintf(inner, sizeof inner, "%s", msg);
            az_fail(msg, err, "workflow.steps[%zu] (\"%s\"): %s", i, wf->steps[i]->id, inner);
        }
    }
    if (err == AZ_OK) err = load(c, ctx, run_id, 1, &r, msg);
    if (err == AZ_OK) err = sync_in(c, ctx, r, NULL, a, msg);
    if (err == AZ_OK) err = get_in(c, ctx, run_id, a, out, msg);
    if (err == AZ_OK) err = az_pg_commit(c, ctx, msg);
out:
    PQclear(r);
    if (err != AZ_OK) {
        *out = NULL;
        ready->n = ready_before; /* nothing was committed: nothing to publish */
    }
    az_pg_release(c);
    return err;
}

/* ---------------------------------------------------------------- list */

/* Token text: "r1|<filter hash>|<create_time text>|<id>". */
az_err az_run_list(az_pg *pg, const az_ctx *ctx, const az_run_query *q, az_arena *a,
                   Agentz__V1__ListRunsResponse **out, char *msg)
{
    *out = NULL;
    char status[8], limit[16];
    snprintf(status, sizeof status, "%d", q->status);
    snprintf(limit, sizeof limit, "%d", q->page_size + 1);
    unsigned long hash = az_pagetoken_hash(az_pagetoken_hash(AZ_PAGETOKEN_HASH_INIT, q->workflow_id),
                                           status);
    char ts[64] = "", after[40] = "";
    az_err err;
    if (q->page_token && *q->page_token) {
        char raw[AZ_PAGETOKEN_RAW_MAX + 1];
        unsigned long th;
        if ((err = az_pagetoken_decode(q->page_token, raw, msg)) != AZ_OK) return err;
        if (sscanf(raw, "r1|%lx|%63[^|]|%39s", &th, ts, after) != 3 || !az_text_is_uuid(after))
            return az_fail(msg, AZ_ERR_INVALID, "page_token is invalid");
        if (th != hash)
            return az_fail(msg, AZ_ERR_INVALID,
                           "page_token was issued for different filters (workflow_id, status)");
    }
    const char *p[6] = {ctx->workspace_id, q->workflow_id && *q->workflow_id ? q->workflow_id : NULL,
                        status, ts[0] ? ts : NULL, after[0] ? after : NULL, limit};
    az_pgconn *c;
    if ((err = az_pg_acquire(pg, ctx, &c, msg)) != AZ_OK) return err;
    PGresult *r;
    err = az_pg_exec(c, ctx,
                     "SELECT " COLS " FROM workflow_runs WHERE workspace_id = $1"
                     " AND ($2::uuid IS NULL OR workflow_id = $2::uuid)"
                     " AND ($3::smallint = 0 OR status = $3::smallint)"
                     " AND ($4::timestamptz IS NULL OR (create_time, id) < ($4::timestamptz, $5::uuid))"
                     " ORDER BY create_time DESC, id DESC LIMIT $6::integer",
                     6, p, &r, msg);
    az_pg_release(c);
    if (err != AZ_OK) return err;
    int rows = PQntuples(r), n = rows > q->page_size ? q->page_size : rows;
    Agentz__V1__ListRunsResponse *resp = az_arena_alloc(a, sizeof *resp);
    if (resp) {
        agentz__v1__list_runs_response__init(resp);
        resp->runs = az_arena_alloc(a, (size_t)(n ? n : 1) * sizeof *resp->runs);
    }
    if (!resp || !resp->runs) err = az_fail(msg, AZ_ERR_NOMEM, "out of memory");
    for (int i = 0; i < n && err == AZ_OK; i++) err = from_row(r, i, a, &resp->runs[i], msg);
    if (err == AZ_OK) {
        resp->n_runs = (size_t)n;
        if (rows > q->page_size) {
            char raw[AZ_PAGETOKEN_RAW_MAX + 1];
            snprintf(raw, sizeof raw, "r1|%lx|%s|%s", hash, PQgetvalue(r, n - 1, C_CREATE_TEXT),
                     PQgetvalue(r, n - 1, C_ID));
            if (!(resp->next_page_token = az_pagetoken_encode(a, raw)))
                err = az_fail(msg, AZ_ERR_NOMEM, "out of memory");
        }
    }
    PQclear(r);
    if (err == AZ_OK) *out = resp;
    return err;
}

/* ---------------------------------------------------------------- cancel and resume */

az_err az_run_cancel(az_pg *pg, const az_ctx *ctx, const char *id, const char *reason,
                     az_arena *a, Agentz__V1__WorkflowRun **out, char *msg)
{
    *out = NULL;
    az_pgconn *c;
    az_err err = az_pg_acquire(pg, ctx, &c, msg);
    if (err != AZ_OK) return err;
    PGresult *r = NULL;
    if ((err = az_pg_begin(c, ctx, msg)) != AZ_OK || (err = load(c, ctx, id, 1, &r, msg)) != AZ_OK)
        goto out;
    int status = (int)num(r, 0, C_STATUS);
    if (status == RS_SUCCEEDED || status == RS_FAILED) {
        err = az_fail(msg, AZ_ERR_PRECONDITION,
                      "run %s is already %s; only pending or running runs can be cancelled", id,
                      status_name(status));
        goto out;
    }
    if (status != RS_CANCELLED) { /* cancelling a cancelled run returns it as it is */
        const char *why = reason && *reason ? reason : "cancelled by user";
        if ((err = az_task_cancel_run(c, ctx, id, why, NULL, msg)) != AZ_OK ||
            (err = sync_in(c, ctx, r, why, a, msg)) != AZ_OK)
            goto out;
    }
    if ((err = get_in(c, ctx, id, a, out, msg)) == AZ_OK) err = az_pg_commit(c, ctx, msg);
out:
    PQclear(r);
    if (err != AZ_OK) *out = NULL;
    az_pg_release(c);
    return err;
}

az_err az_run_resume(az_pg *pg, const az_ctx *ctx, const char *id, az_arena *a,
                     Agentz__V1__WorkflowRun **out, az_task_ready *ready, char *msg)
{
    *out = NULL;
    size_t ready_before = ready->n;
    az_pgconn *c;
    az_err err = az_pg_acquire(pg, ctx, &c, msg);
    if (err != AZ_OK) return err;
    PGresult *r = NULL, *w = NULL;
    if ((err = az_pg_begin(c, ctx, msg)) != AZ_OK || (err = load(c, ctx, id, 1, &r, msg)) != AZ_OK)
        goto out;
    int status = (int)num(r, 0, C_STATUS);
    if (status != RS_FAILED && status != RS_CANCELLED) {
        err = az_fail(msg, AZ_ERR_PRECONDITION,
                      "run %s is %s; only failed or cancelled runs can be resumed", id,
                      status_name(status));
        goto out;
    }
    /* A deleted workflow has no unfinished runs (DeleteWorkflow's invariant): keep it so. */
    const char *pw[2] = {ctx->workspace_id, PQgetvalue(r, 0, C_WORKFLOW)};
    if ((err = az_pg_exec(c, ctx,
                          "SELECT 1 FROM workflows WHERE workspace_id = $1 AND id = $2 FOR SHARE",
                          2, pw, &w, msg)) != AZ_OK)
        goto out;
    if (PQntuples(w) == 0) {
        err = az_fail(msg, AZ_ERR_PRECONDITION, "run %s cannot resume: workflow %s was deleted", id,
                      pw[1]);
        goto out;
    }
    const char *p[2] = {ctx->workspace_id, id};
    if ((err = az_task_resume_run(c, ctx, id, NULL, ready, msg)) != AZ_OK ||
        (err = az_pg_exec(c, ctx,
                          "UPDATE workflow_runs SET status = 2, error_type = '', error_message = '',"
                          " output_raw = NULL, end_time = NULL, update_time = clock_timestamp()"
                          " WHERE workspace_id = $1 AND id = $2",
                          2, p, NULL, msg)) != AZ_OK ||
        (err = emit_run(c, ctx, id, PQgetvalue(r, 0, C_WORKFLOW), (int)num(r, 0, C_VERSION), status,
                        RS_RUNNING, NULL, NULL, a, msg)) != AZ_OK)
        goto out;
    PQclear(r);
    r = NULL;
    if ((err = load(c, ctx, id, 1, &r, msg)) != AZ_OK || (err = sync_in(c, ctx, r, NULL, a, msg)) != AZ_OK ||
        (err = get_in(c, ctx, id, a, out, msg)) != AZ_OK)
        goto out;
    err = az_pg_commit(c, ctx, msg);
out:
    PQclear(r);
    PQclear(w);
    if (err != AZ_OK) {
        *out = NULL;
        ready->n = ready_before;
    }
    az_pg_release(c);
    return err;
}

/* ---------------------------------------------------------------- analytics */

static Agentz__V1__TokenUsage *usage_cols(az_arena *a, const PGresult *r, int row, int first)
{
    Agentz__V1__TokenUsage *u = az_arena_alloc(a, sizeof *u);
    if (!u) return NULL;
    agentz__v1__token_usage__init(u);
    u->prompt_tokens = num(r, row, first);
    u->completion_tokens = num(r, row, first + 1);
    u->total_tokens = num(r, row, first + 2);
    u->cost_usd = strtod(PQgetvalue(r, row, first + 3), NULL);
    return u;
}

static Google__Protobuf__Duration *duration_col(az_arena *a, const PGresult *r, int row, int c)
{
    return PQgetisnull(r, row, c) ? NULL : duration_s(a, strtod(PQgetvalue(r, row, c), NULL));
}

az_err az_run_analytics(az_pg *pg, const az_ctx *ctx, const Agentz__V1__Workflow *wf,
                        int64_t start_us, int64_t end_us, az_arena *a,
                        Agentz__V1__WorkflowAnalytics **out, char *msg)
{
    *out = NULL;
    char s[24], e[24];
    snprintf(s, sizeof s, "%lld", (long long)start_us);
    snprintf(e, sizeof e, "%lld", (long long)end_us);
    const char *p[4] = {ctx->workspace_id, wf->id, s, e};
    az_pgconn *c;
    az_err err = az_pg_acquire(pg, ctx, &c, msg);
    if (err != AZ_OK) return err;
    PGresult *r = NULL, *st = NULL;
    /* Runs of the window: an index range scan of workflow_runs_workflow. Duration is from the
     * first step's start (or acceptance, for runs that never started) to the end. */
    err = az_pg_exec(
        c, ctx,
        "WITH w AS (SELECT status, prompt_tokens, completion_tokens, total_tokens, cost_usd,"
        "   extract(epoch FROM end_time - coalesce(start_time, create_time)) AS secs"
        "   FROM workflow_runs WHERE workspace_id = $1 AND workflow_id = $2"
        "   AND create_time >= 'epoch'::timestamptz + $3::bigint * interval '1 microsecond'"
        "   AND create_time < 'epoch'::timestamptz + $4::bigint * interval '1 microsecond')"
        " SELECT count(*), count(*) FILTER (WHERE status = 1), count(*) FILTER (WHERE status = 2),"
        " count(*) FILTER (WHERE status = 3), count(*) FILTER (WHERE status = 4),"
        " count(*) FILTER (WHERE status = 5),"
        " percentile_cont(0.5) WITHIN GROUP (ORDER BY secs) FILTER (WHERE secs IS NOT NULL),"
        " percentile_cont(0.95) WITHIN GROUP (ORDER BY secs) FILTER (WHERE secs IS NOT NULL),"
        " max(secs), coalesce(sum(prompt_tokens), 0), coalesce(sum(completion_tokens), 0),"
        " coalesce(sum(total_tokens), 0), coalesce(sum(cost_usd), 0) FROM w",
        4, p, &r, msg);
    /* Per step. This reads the task service's `tasks` table read-only, for analytics only (to
     * move behind a task-service function later). It relies on tasks_by_run (workspace_id,
     * run_id, …) to reach the window's tasks from the window's runs. */
    if (err == AZ_OK)
        err = az_pg_exec(
            c, ctx,
            "SELECT t.step_id, count(*) FILTER (WHERE t.start_time IS NOT NULL),"
            " count(*) FILTER (WHERE t.status = 5), count(*) FILTER (WHERE t.status = 6),"
            " percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM t.end_time - t.start_time))"
            "   FILTER (WHERE t.end_time IS NOT NULL AND t.start_time IS NOT NULL),"
            " percentile_cont(0.95) WITHIN GROUP (ORDER BY extract(epoch FROM t.end_time - t.start_time))"
            "   FILTER (WHERE t.end_time IS NOT NULL AND t.start_time IS NOT NULL),"
            " coalesce(sum(greatest(t.attempt - 1, 0)), 0),"
            " coalesce(sum(t.prompt_tokens), 0), coalesce(sum(t.completion_tokens), 0),"
            " coalesce(sum(t.total_tokens), 0), coalesce(sum(t.cost_usd), 0)"
            " FROM workflow_runs r JOIN tasks t ON t.workspace_id = r.workspace_id AND t.run_id = r.id"
            " WHERE r.workspace_id = $1 AND r.workflow_id = $2"
            " AND r.create_time >= 'epoch'::timestamptz + $3::bigint * interval '1 microsecond'"
            " AND r.create_time < 'epoch'::timestamptz + $4::bigint * interval '1 microsecond'"
            " GROUP BY t.step_id ORDER BY t.step_id",
            4, p, &st, msg);
    az_pg_release(c);
    Agentz__V1__WorkflowAnalytics *an = NULL;
    if (err != AZ_OK) goto out;
    an = az_arena_alloc(a, sizeof *an);
    int ns = PQntuples(st);
    if (!an || !(an->steps = az_arena_alloc(a, (size_t)(ns ? ns : 1) * sizeof *an->steps))) {
        err = az_fail(msg, AZ_ERR_NOMEM, "out of memory");
        goto out;
    }
    Agentz__V1__StepAnalytics **steps = an->steps;
    agentz__v1__workflow_analytics__init(an);
    an->steps = steps;
    an->workflow_id = wf->id;
    an->runs_total = num(r, 0, 0);
    an->runs_pending = num(r, 0, 1);
    an->runs_running = num(r, 0, 2);
    an->runs_succeeded = num(r, 0, 3);
    an->runs_failed = num(r, 0, 4);
    an->runs_cancelled = num(r, 0, 5);
    int64_t finished = an->runs_succeeded + an->runs_failed + an->runs_cancelled;
    an->success_rate = finished ? (double)an->runs_succeeded / (double)finished : 0;
    an->p50_duration = duration_col(a, r, 0, 6);
    an->p95_duration = duration_col(a, r, 0, 7);
    an->max_duration = duration_col(a, r, 0, 8);
    an->usage = usage_cols(a, r, 0, 9);
    an->start_time = az_pbtime_timestamp(a, start_us);
    an->end_time = az_pbtime_timestamp(a, end_us);
    if (!an->usage || !an->start_time || !an->end_time) {
        err = az_fail(msg, AZ_ERR_NOMEM, "out of memory");
        goto out;
    }
    /* Rows in the latest version's step order, then steps only older versions had. */
    unsigned char *used = az_arena_alloc(a, (size_t)(ns ? ns : 1));
    int *order = az_arena_alloc(a, (size_t)(ns ? ns : 1) * sizeof *order);
    if (!used || !order) {
        err = az_fail(msg, AZ_ERR_NOMEM, "out of memory");
        goto out;
    }
    int k = 0;
    for (size_t i = 0; i < wf->n_steps; i++) {
        for (int row = 0; row < ns; row++) {
            if (!used[row] && strcmp(PQgetvalue(st, row, 0), wf->steps[i]->id) == 0) {
                used[row] = 1;
                order[k++] = row;
            }
        }
    }
    for (int row = 0; row < ns; row++) {
        if (!used[row]) order[k++] = row;
    }
    double worst_p95 = -1;
    int64_t worst_failed = 0;
    for (int i = 0; i < ns; i++) {
        int row = order[i];
        Agentz__V1__StepAnalytics *sa = az_arena_alloc(a, sizeof *sa);
        if (!sa) {
            err = az_fail(msg, AZ_ERR_NOMEM, "out of memory");
            goto out;
        }
        agentz__v1__step_analytics__init(sa);
        sa->step_id = col(a, st, row, 0);
        sa->runs = num(st, row, 1);
        sa->succeeded = num(st, row, 2);
        sa->failed = num(st, row, 3);
        sa->success_rate =
            sa->succeeded + sa->failed ? (double)sa->succeeded / (double)(sa->succeeded + sa->failed) : 0;
        sa->p50_duration = duration_col(a, st, row, 4);
        sa->p95_duration = duration_col(a, st, row, 5);
        sa->retries = num(st, row, 6);
        sa->usage = usage_cols(a, st, row, 7);
        if (!sa->step_id || !sa->usage) {
            err = az_fail(msg, AZ_ERR_NOMEM, "out of memory");
            goto out;
        }
        an->retries += sa->retries;
        if (!PQgetisnull(st, row, 5) && strtod(PQgetvalue(st, row, 5), NULL) > worst_p95) {
            worst_p95 = strtod(PQgetvalue(st, row, 5), NULL);
            an->slowest_step_id = sa->step_id;
        }
        if (sa->failed > worst_failed) {
            worst_failed = sa->failed;
            an->most_failing_step_id = sa->step_id;
        }
        an->steps[an->n_steps++] = sa;
    }
out:
    PQclear(r);
    PQclear(st);
    if (err == AZ_OK) *out = an;
    return err;
}
