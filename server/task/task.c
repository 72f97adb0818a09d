/* Tasks in PostgreSQL: the task state machine as conditional UPDATEs, dependency propagation
 * (queue dependents on success, cancel them transitively on failure, restore them on retry),
 * attempt history, retry/backoff decisions, keyset pagination and statistics. */
#include "task.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/pagetoken.h"
#include "core/pbjson.h"
#include "core/pbtime.h"
#include "core/text.h"
#include "event/outbox.h"
#include "google/protobuf/duration.pb-c.h"
#include "google/protobuf/struct.pb-c.h"
#include "google/protobuf/timestamp.pb-c.h"
#include "store/idem.h"

/* The default attempt timeout (Task.timeout unset), which also bounds unlimited retries. */
#define DEFAULT_TIMEOUT_US 600000000LL
#define JITTER_FRACTION 0.2
#define RUN_TASKS_MAX 1000

#define S_PENDING AGENTZ__V1__TASK_STATUS__TASK_STATUS_PENDING
#define S_QUEUED AGENTZ__V1__TASK_STATUS__TASK_STATUS_QUEUED
#define S_RUNNING AGENTZ__V1__TASK_STATUS__TASK_STATUS_RUNNING
#define S_BACKOFF AGENTZ__V1__TASK_STATUS__TASK_STATUS_BACKOFF
#define S_SUCCEEDED AGENTZ__V1__TASK_STATUS__TASK_STATUS_SUCCEEDED
#define S_FAILED AGENTZ__V1__TASK_STATUS__TASK_STATUS_FAILED
#define S_CANCELLED AGENTZ__V1__TASK_STATUS__TASK_STATUS_CANCELLED

static const char *const status_names[] = {"unspecified", "pending",   "queued", "running",
                                           "backoff",     "succeeded", "failed", "cancelled"};

static const char *status_name(long s)
{
    return s >= 0 && s < (long)(sizeof status_names / sizeof *status_names) ? status_names[s]
                                                                            : "unknown";
}

#define TS(c) "(extract(epoch FROM t." c ") * 1000000)::bigint"
#define COLS                                                                                     \
    "t.id::text, t.description, t.expected_output, COALESCE(t.agent_id::text, ''),"             \
    " array_to_json(t.depends_on)::text, array_to_json(t.context)::text, t.output_schema::text," \
    " t.retry_policy_set, t.initial_backoff_us, t.backoff_coefficient, t.maximum_backoff_us,"   \
    " t.max_attempts, array_to_json(t.non_retryable_errors)::text, t.timeout_us, t.status,"     \
    " t.attempt, t.output_raw, t.output_json::text, t.error_type, t.error_message,"             \
    " t.error_retryable, t.prompt_tokens, t.completion_tokens, t.total_tokens, t.cost_usd,"     \
    " t.progress, COALESCE(t.run_id::text, ''), t.step_id,"                                     \
    " array_to_json(t.webhook_urls)::text, t.labels::text, " TS("create_time") ", "             \
    TS("start_time") ", " TS("end_time") ", " TS("next_attempt_time") ", t.workspace_id::text,"  \
    " t.revision, t.create_time::text, t.retry_base, " TS("series_start_time")

enum {
    C_ID, C_DESC, C_EXPECTED, C_AGENT, C_DEPS, C_CONTEXT, C_SCHEMA, C_RP_SET, C_INITIAL, C_COEF,
    C_MAXB, C_MAXATT, C_NRE, C_TIMEOUT, C_STATUS, C_ATTEMPT, C_OUT_RAW, C_OUT_JSON, C_ERR_TYPE,
    C_ERR_MSG, C_ERR_RETRY, C_PT, C_CT, C_TT, C_COST, C_PROGRESS, C_RUN, C_STEP, C_WEBHOOKS,
    C_LABELS, C_CREATE, C_START, C_END, C_NEXT, C_WS, C_REV, C_CREATE_TEXT, C_RETRY_BASE,
    C_SERIES,
};

/* ---------------------------------------------------------------- retry policy */

static double duration_ms(const Google__Protobuf__Duration *d)
{
    return (double)d->seconds * 1000.0 + (double)d->nanos / 1e6;
}

int64_t az_task_backoff_ms(const Agentz__V1__RetryPolicy *policy, int attempt, double jitter01)
{
    double initial = AZ_TASK_DEFAULT_INITIAL_BACKOFF_MS, coef = AZ_TASK_DEFAULT_BACKOFF_COEFFICIENT;
    if (policy && policy->initial_backoff) initial = duration_ms(policy->initial_backoff);
    if (policy && policy->backoff_coefficient > 0) coef = policy->backoff_coefficient;
    double max = initial * AZ_TASK_DEFAULT_MAX_BACKOFF_FACTOR;
    if (policy && policy->maximum_backoff) max = duration_ms(policy->maximum_backoff);
    if (attempt < 1) attempt = 1;
    double d = initial * pow(coef, attempt - 1);
    if (!(d < max)) d = max; /* also catches inf from a large exponent */
    if (jitter01 < 0) jitter01 = 0;
    if (jitter01 >= 1) jitter01 = 0.999999;
    d -= d * JITTER_FRACTION * jitter01;
    return d < 0 ? 0 : (int64_t)d;
}

int az_task_should_retry(const Agentz__V1__RetryPolicy *policy, int attempt, const char *type)
{
    if (!policy) return 1;
    for (size_t i = 0; type && i < policy->n_non_retryable_errors; i++) {
        if (strcmp(policy->non_retryable_errors[i], type) == 0) return 0;
    }
    return policy->max_attempts <= 0 || attempt < policy->max_attempts;
}

/* ---------------------------------------------------------------- row -> message */

static char *col(az_arena *a, const PGresult *r, int row, int c)
{
    return az_arena_strndup(a, PQgetvalue(r, row, c), (size_t)PQgetlength(r, row, c));
}

static long long num(const PGresult *r, int row, int c) { return atoll(PQgetvalue(r, row, c)); }
static int null(const PGresult *r, int row, int c) { return PQgetisnull(r, row, c); }

static Google__Protobuf__Timestamp *opt_timestamp(az_arena *a, const PGresult *r, int row, int c,
                                                  int *oom)
{
    if (null(r, row, c)) return NULL;
    Google__Protobuf__Timestamp *t = az_pbtime_timestamp(a, num(r, row, c));
    if (!t) *oom = 1;
    return t;
}

/* A JSON array of strings (from array_to_json) into an arena array. */
static int json_strings(az_arena *a, const char *text, size_t *n, char ***out)
{
    *n = 0;
    *out = NULL;
    json_error_t jerr;
    json_t *arr = json_loads(text, 0, &jerr);
    int ok = 1;
    if (json_is_array(arr) && json_array_size(arr) > 0) {
        size_t k = json_array_size(arr);
        char **v = az_arena_alloc(a, k * sizeof *v);
        if (!v) ok = 0;
        for (size_t i = 0; ok && i < k; i++) {
            v[i] = az_arena_strdup(a, json_string_value(json_array_get(arr, i)));
            if (!v[i]) ok = 0;
        }
        if (ok) {
            *n = k;
            *out = v;
        }
    }
    json_decref(arr);
    return ok;
}

static az_err struct_from_json(az_arena *a, const char *json, Google__Protobuf__Struct **out,
                               char *msg)
{
    ProtobufCMessage *m = NULL;
    az_err err = az_pbjson_decode(&google__protobuf__struct__descriptor, json, strlen(json),
                                  az_arena_allocator(a), &m, msg);
    if (err != AZ_OK) return az_fail(msg, AZ_ERR_INTERNAL, "stored json does not decode: %s", msg);
    *out = (Google__Protobuf__Struct *)m;
    return AZ_OK;
}

static Agentz__V1__TokenUsage *usage_from(az_arena *a, const PGresult *r, int row, int pt)
{
    Agentz__V1__TokenUsage *u = az_arena_alloc(a, sizeof *u);
    if (!u) return NULL;
    agentz__v1__token_usage__init(u);
    u->prompt_tokens = num(r, row, pt);
    u->completion_tokens = num(r, row, pt + 1);
    u->total_tokens = num(r, row, pt + 2);
    u->cost_usd = strtod(PQgetvalue(r, row, pt + 3), NULL);
    return u;
}

static Agentz__V1__TaskError *error_from(az_arena *a, const PGresult *r, int row, int type,
                                         int *oom)
{
    if (null(r, row, type)) return NULL;
    Agentz__V1__TaskError *e = az_arena_alloc(a, sizeof *e);
    if (!e) {
        *oom = 1;
        return NULL;
    }
    agentz__v1__task_error__init(e);
    e->type = col(a, r, row, type);
    e->message = col(a, r, row, type + 1);
    e->retryable = PQgetvalue(r, row, type + 2)[0] == 't';
    if (!e->type || !e->message) *oom = 1;
    return e;
}

static az_err from_row(const PGresult *r, int row, az_arena *a, Agentz__V1__Task **out, char *msg)
{
    Agentz__V1__Task *t = az_arena_alloc(a, sizeof *t);
    if (!t) return az_fail(msg, AZ_ERR_NOMEM, "out of memory");
    agentz__v1__task__init(t);
    int oom = 0;
    az_err err;
    t->id = col(a, r, row, C_ID);
    t->description = col(a, r, row, C_DESC);
    t->expected_output = col(a, r, row, C_EXPECTED);
    t->agent_id = col(a, r, row, C_AGENT);
    if (!json_strings(a, PQgetvalue(r, row, C_DEPS), &t->n_depends_on, &t->depends_on) ||
        !json_strings(a, PQgetvalue(r, row, C_CONTEXT), &t->n_context, &t->context) ||
        !json_strings(a, PQgetvalue(r, row, C_WEBHOOKS), &t->n_webhook_urls, &t->webhook_urls))
        oom = 1;
    if (!null(r, row, C_SCHEMA) &&
        (err = struct_from_json(a, PQgetvalue(r, row, C_SCHEMA), &t->output_schema, msg)) != AZ_OK)
        return err;
    if (PQgetvalue(r, row, C_RP_SET)[0] == 't') {
        Agentz__V1__RetryPolicy *p = az_arena_alloc(a, sizeof *p);
        if (!p) return az_fail(msg, AZ_ERR_NOMEM, "out of memory");
        agentz__v1__retry_policy__init(p);
        if (!null(r, row, C_INITIAL) && !(p->initial_backoff = az_pbtime_duration(a, num(r, row, C_INITIAL))))
            oom = 1;
        p->backoff_coefficient = strtod(PQgetvalue(r, row, C_COEF), NULL);
        if (!null(r, row, C_MAXB) && !(p->maximum_backoff = az_pbtime_duration(a, num(r, row, C_MAXB))))
            oom = 1;
        p->max_attempts = (int32_t)num(r, row, C_MAXATT);
        if (!json_strings(a, PQgetvalue(r, row, C_NRE), &p->n_non_retryable_errors,
                          &p->non_retryable_errors))
            oom = 1;
        t->retry_policy = p;
    }
    if (num(r, row, C_TIMEOUT) > 0 && !(t->timeout = az_pbtime_duration(a, num(r, row, C_TIMEOUT))))
        oom = 1;
    t->status = (Agentz__V1__TaskStatus)num(r, row, C_STATUS);
    t->attempt = (int32_t)num(r, row, C_ATTEMPT);
    if (!null(r, row, C_OUT_RAW) || !null(r, row, C_OUT_JSON)) {
        Agentz__V1__TaskOutput *o = az_arena_alloc(a, sizeof *o);
        if (!o) return az_fail(msg, AZ_ERR_NOMEM, "out of memory");
        agentz__v1__task_output__init(o);
        o->raw = col(a, r, row, C_OUT_RAW);
        if (!null(r, row, C_OUT_JSON) &&
            (err = struct_from_json(a, PQgetvalue(r, row, C_OUT_JSON), &o->json, msg)) != AZ_OK)
            return err;
        t->output = o;
    }
    t->error = error_from(a, r, row, C_ERR_TYPE, &oom);
    if (!(t->usage = usage_from(a, r, row, C_PT))) oom = 1;
    t->progress = strtod(PQgetvalue(r, row, C_PROGRESS), NULL);
    t->run_id = col(a, r, row, C_RUN);
    t->step_id = col(a, r, row, C_STEP);

    json_error_t jerr;
    json_t *labels = json_loads(PQgetvalue(r, row, C_LABELS), 0, &jerr);
    if (json_is_object(labels) && json_object_size(labels) > 0) {
        size_t n = json_object_size(labels), i = 0;
        t->labels = az_arena_alloc(a, n * sizeof *t->labels);
        const char *k;
        json_t *v;
        if (!t->labels) oom = 1;
        else {
            json_object_foreach(labels, k, v)
            {
                Agentz__V1__Task__LabelsEntry *e = az_arena_alloc(a, sizeof *e);
                if (!e) {
                    oom = 1;
                    break;
                }
                agentz__v1__task__labels_entry__init(e);
                e->key = az_arena_strdup(a, k);
                e->value = az_arena_strdup(a, json_string_value(v));
                t->labels[i++] = e;
            }
            t->n_labels = i;
        }
    }
    json_decref(labels);

    t->create_time = opt_timestamp(a, r, row, C_CREATE, &oom);
    t->start_time = opt_timestamp(a, r, row, C_START, &oom);
    t->end_time = opt_timestamp(a, r, row, C_END, &oom);
    t->next_attempt_time = opt_timestamp(a, r, row, C_NEXT, &oom);
    t->workspace_id = col(a, r, row, C_WS);
    t->etag = az_arena_printf(a, "%lld", num(r, row, C_REV));
    if (oom || !t->id || !t->description || !t->expected_output || !t->agent_id || !t->run_id ||
        !t->step_id || !t->workspace_id || !t->etag)
        return az_fail(msg, AZ_ERR_NOMEM, "out of memory");
    *out = t;
    return AZ_OK;
}

/* ---------------------------------------------------------------- helpers */

static az_err ready_add(az_task_ready *ready, az_arena *a, const char *id, char *msg)
{
    if (!ready) return AZ_OK;
    az_arena *arena = ready->arena ? ready->arena : a;
    if (!arena) return az_fail(msg, AZ_ERR_INTERNAL, "az_task_ready.arena is required here");
    /* Arena memory cannot grow in place: double into a fresh array at powers of two. */
    size_t n = ready->n;
    if ((n & (n - 1)) == 0) {
        char **ids = az_arena_alloc(arena, (n ? 2 * n : 4) * sizeof *ids);
        if (!ids) return az_fail(msg, AZ_ERR_NOMEM, "out of memory");
        if (n) memcpy(ids, ready->ids, n * sizeof *ids);
        ready->ids = ids;
    }
    if (!(ready->ids[n] = az_arena_strdup(arena, id))) return az_fail(msg, AZ_ERR_NOMEM, "out of memory");
    ready->n = n + 1;
    return AZ_OK;
}

/* Appends column 0 of every row of r (task ids) to ready. */
static az_err ready_add_rows(az_task_ready *ready, az_arena *a, const PGresult *r, char *msg)
{
    az_err err = AZ_OK;
    for (int i = 0; i < PQntuples(r) && err == AZ_OK; i++)
        err = ready_add(ready, a, PQgetvalue(r, i, 0), msg);
    return err;
}

static void set_run_id(char *run_id, const char *v)
{
    if (!run_id) return;
    snprintf(run_id, 37, "%s", v ? v : "");
}

/* ---------------------------------------------------------------- events
 *
 * Every status change appends its TaskStatusChanged to the outbox in the transaction of the
 * change. The transitions collect what they changed and append at the end, after their last
 * row lock: the outbox's counters are then the last locks a transaction takes (see outbox.h). */

/* What a changed task's event needs, RETURNING from the transitions that move many tasks. */
#define EVCOLS                                                                                    \
    "t.id::text, COALESCE(t.run_id::text, ''), t.step_id, COALESCE(t.agent_id::text, ''),"       \
    " t.attempt, array_to_json(t.webhook_urls)::text, t.error_type, t.error_message,"            \
    " COALESCE(t.error_retryable, false)"
enum { E_ID, E_RUN, E_STEP, E_AGENT, E_ATTEMPT, E_HOOKS, E_ERR_TYPE, E_ERR_MSG, E_ERR_RETRY, E_N };

static int terminal(long s) { return s == S_SUCCEEDED || s == S_FAILED || s == S_CANCELLED; }

/* Appends TaskStatusChanged from -> to of one task; hooks (the task's webhook URLs) get their
 * deliveries when to is terminal. */
static az_err emit(az_pgconn *c, const az_ctx *ctx, const char *id, const char *run_id,
                   const char *step_id, const char *agent_id, int attempt, long from, long to,
                   const Agentz__V1__TaskError *error, char *const *hooks, size_t n_hooks,
                   char *msg)
{
    Agentz__V1__TaskStatusChanged ch = AGENTZ__V1__TASK_STATUS_CHANGED__INIT;
    ch.from = (Agentz__V1__TaskStatus)from;
    ch.to = (Agentz__V1__TaskStatus)to;
    ch.attempt = attempt;
    if (to == S_BACKOFF || to == S_FAILED || to == S_CANCELLED)
        ch.error = (Agentz__V1__TaskError *)error;
    Agentz__V1__Event ev = AGENTZ__V1__EVENT__INIT;
    ev.task_id = (char *)id;
    ev.run_id = (char *)(run_id ? run_id : "");
    ev.step_id = (char *)(step_id ? step_id : "");
    ev.agent_id = (char *)(agent_id ? agent_id : "");
    ev.payload_case = AGENTZ__V1__EVENT__PAYLOAD_TASK_STATUS;
    ev.task_status = &ch;
    int hooked = terminal(to) && n_hooks > 0;
    return az_outbox_append(c, ctx, &ev, hooked ? (const char *const *)hooks : NULL,
                            hooked ? n_hooks : 0, msg);
}

/* The event of task t (as it is after the change) coming from status from. */
static az_err emit_task(az_pgconn *c, const az_ctx *ctx, const Agentz__V1__Task *t, long from,
                        const Agentz__V1__TaskError *error, char *msg)
{
    return emit(c, ctx, t->id, t->run_id, t->step_id, t->agent_id, t->attempt, from, t->status,
                error ? error : t->error, t->webhook_urls, t->n_webhook_urls, msg);
}

/* The events of n tasks (as they are after the change), all coming from status from, in one
 * statement (az_outbox_append_many); tasks whose event has webhook deliveries due (terminal
 * with URLs) go one by one through emit_task. skip (may be NULL): tasks to leave out. */
static az_err emit_tasks(az_pgconn *c, const az_ctx *ctx, Agentz__V1__Task *const *t, size_t n,
                         long from, const unsigned char *skip, az_arena *a, char *msg)
{
    for (size_t i0 = 0; i0 < n; i0 += AZ_OUTBOX_BATCH_MAX) {
        size_t m = n - i0 < AZ_OUTBOX_BATCH_MAX ? n - i0 : AZ_OUTBOX_BATCH_MAX, k = 0;
        const Agentz__V1__Event **evs = az_arena_alloc(a, m * sizeof *evs);
        Agentz__V1__Event *ev = az_arena_alloc(a, m * sizeof *ev);
        Agentz__V1__TaskStatusChanged *ch = az_arena_alloc(a, m * sizeof *ch);
        if (!evs || !ev || !ch) return az_fail(msg, AZ_ERR_NOMEM, "out of memory");
        for (size_t j = 0; j < m; j++) {
            const Agentz__V1__Task *x = t[i0 + j];
            if (skip && skip[i0 + j]) continue;
            if (terminal(x->status) && x->n_webhook_urls > 0) {
                az_err err = emit_task(c, ctx, x, from, NULL, msg);
                if (err != AZ_OK) return err;
                continue;
            }
            agentz__v1__task_status_changed__init(&ch[k]);
            ch[k].from = (Agentz__V1__TaskStatus)from;
            ch[k].to = x->status;
            ch[k].attempt = x->attempt;
            if (x->status == S_BACKOFF || x->status == S_FAILED || x->status == S_CANCELLED)
                ch[k].error = x->error;
            agentz__v1__event__init(&ev[k]);
            ev[k].task_id = x->id;
            ev[k].run_id = x->run_id ? x->run_id : (char *)"";
            ev[k].step_id = x->step_id ? x->step_id : (char *)"";
            ev[k].agent_id = x->agent_id ? x->agent_id : (char *)"";
            ev[k].payload_case = AGENTZ__V1__EVENT__PAYLOAD_TASK_STATUS;
            ev[k].task_status = &ch[k];
            evs[k] = &ev[k];
            k++;
        }
        /* One event: the single append's function is cheaper than planning the batch statement. */
        az_err err = k == 1 ? az_outbox_append(c, ctx, evs[0], NULL, 0, msg)
                            : az_outbox_append_many(c, ctx, evs, k, msg);
        if (err != AZ_OK) return err;
    }
    return AZ_OK;
}

/* The event of row i of r (EVCOLS from column col0) coming from status from. */
static az_err emit_row(az_pgconn *c, const az_ctx *ctx, const PGresult *r, int i, int col0,
                       long from, long to, char *msg)
{
    Agentz__V1__TaskError e = AGENTZ__V1__TASK_ERROR__INIT;
    int has_error = !null(r, i, col0 + E_ERR_TYPE);
    if (has_error) {
        e.type = PQgetvalue(r, i, col0 + E_ERR_TYPE);
        e.message = PQgetvalue(r, i, col0 + E_ERR_MSG);
        e.retryable = PQgetvalue(r, i, col0 + E_ERR_RETRY)[0] == 't';
    }
    az_arena *a = NULL;
    char **hooks = NULL;
    size_t n_hooks = 0;
    if (terminal(to) && strcmp(PQgetvalue(r, i, col0 + E_HOOKS), "[]") != 0) {
        if (!(a = az_arena_new(0)) || !json_strings(a, PQgetvalue(r, i, col0 + E_HOOKS), &n_hooks, &hooks)) {
            az_arena_free(a);
            return az_fail(msg, AZ_ERR_NOMEM, "out of memory");
        }
    }
    az_err err = emit(c, ctx, PQgetvalue(r, i, col0 + E_ID), PQgetvalue(r, i, col0 + E_RUN),
                      PQgetvalue(r, i, col0 + E_STEP), PQgetvalue(r, i, col0 + E_AGENT),
                      (int)num(r, i, col0 + E_ATTEMPT), from, to, has_error ? &e : NULL, hooks,
                      n_hooks, msg);
    az_arena_free(a);
    return err;
}

/* emit_row for every row of r; the source status is column from_col when >= 0, else from. */
static az_err emit_rows(az_pgconn *c, const az_ctx *ctx, const PGresult *r, int col0,
                        int from_col, long from, long to, char *msg)
{
    az_err err = AZ_OK;
    for (int i = 0; r && i < PQntuples(r) && err == AZ_OK; i++)
        err = emit_row(c, ctx, r, i, col0, from_col >= 0 ? num(r, i, from_col) : from, to, msg);
    return err;
}

static az_err not_found(const char *id, char *msg)
{
    return az_fail(msg, AZ_ERR_NOT_FOUND, "task %.64s not found", id);
}

/* After a conditional UPDATE matched nothing: gone, or in a state the verb does not accept? */
static az_err explain_miss(az_pgconn *c, const az_ctx *ctx, const char *id, const char *verb,
                           char *msg)
{
    const char *p[2] = {ctx->workspace_id, id};
    PGresult *r;
    az_err err = az_pg_exec(c, ctx, "SELECT status, attempt FROM tasks WHERE workspace_id = $1 AND id = $2",
                            2, p, &r, msg);
    if (err != AZ_OK) return err;
    if (PQntuples(r) == 0) err = not_found(id, msg);
    else
        err = az_fail(msg, AZ_ERR_PRECONDITION, "task %s is %s (attempt %s); cannot %s", id,
                      status_name(num(r, 0, 0)), PQgetvalue(r, 0, 1), verb);
    PQclear(r);
    return err;
}

static az_err fetch_one(az_pgconn *c, const az_ctx *ctx, const char *id, int lock, az_arena *a,
                        Agentz__V1__Task **out, char *msg)
{
    const char *p[2] = {ctx->workspace_id, id};
    PGresult *r;
    az_err err = az_pg_exec(c, ctx,
                            lock ? "SELECT " COLS " FROM tasks t WHERE t.workspace_id = $1 AND t.id = $2 FOR UPDATE"
                                 : "SELECT " COLS " FROM tasks t WHERE t.workspace_id = $1 AND t.id = $2",
                            2, p, &r, msg);
    if (err != AZ_OK) return err;
    if (PQntuples(r) == 0) err = not_found(id, msg);
    else err = from_row(r, 0, a, out, msg);
    PQclear(r);
    return err;
}

/* Every pending task downstream of root (transitively) -> cancelled, blaming root. *rows gets
 * their EVCOLS (for the caller's events, after its last lock); the caller PQclears it. */
static az_err cancel_downstream(az_pgconn *c, const az_ctx *ctx, const char *root, const char *type,
                                const char *why, int *changed, PGresult **rows, char *msg)
{
    *rows = NULL;
    char *text = NULL;
    if (asprintf(&text, "dependency %s %s", root, why) < 0)
        return az_fail(msg, AZ_ERR_NOMEM, "out of memory");
    const char *p[4] = {ctx->workspace_id, root, type, text};
    PGresult *r;
    az_err err = az_pg_exec(
        c, ctx,
        "WITH RECURSIVE down(id) AS ("
        "  SELECT e.task_id FROM task_deps e JOIN tasks d ON d.workspace_id = $1 AND d.id = e.task_id"
        "   WHERE e.workspace_id = $1 AND e.dep_id = $2::uuid AND d.status::integer = 1"
        "  UNION"
        "  SELECT e.task_id FROM down JOIN task_deps e ON e.workspace_id = $1 AND e.dep_id = down.id"
        "   JOIN tasks d ON d.workspace_id = $1 AND d.id = e.task_id AND d.status::integer = 1)"
        " UPDATE tasks t SET status = 7, error_type = $3, error_message = $4,"
        " error_retryable = false, cause_id = $2::uuid, end_time = clock_timestamp(),"
        " revision = revision + 1"
        " FROM down WHERE t.workspace_id = $1 AND t.id = down.id AND t.status::integer = 1"
        " RETURNING " EVCOLS,
        4, p, &r, msg);
    free(text);
    if (err != AZ_OK) return err;
    if (changed) *changed += atoi(PQcmdTuples(r));
    *rows = r;
    return AZ_OK;
}

/* Tasks cancelled because root failed or was cancelled -> pending again, nearest first, as
 * long as none of their own dependencies is failed or cancelled (another root may still
 * block them; those stay cancelled). Their events (cancelled -> pending) are appended at the
 * end, after the last of these row locks, preceded by the event of first (the root, now in its
 * new status, coming from first_from). */
static az_err restore_downstream(az_pgconn *c, const az_ctx *ctx, const char *root, int *changed,
                                 const Agentz__V1__Task *first, long first_from, char *msg)
{
    const char *p[2] = {ctx->workspace_id, root};
    PGresult *rounds[RUN_TASKS_MAX];
    size_t n_rounds = 0;
    az_err err = AZ_OK;
    while (n_rounds < RUN_TASKS_MAX) {
        PGresult *r;
        err = az_pg_exec(
            c, ctx,
            "UPDATE tasks t SET status = 1, error_type = NULL, error_message = NULL,"
            " error_retryable = NULL, cause_id = NULL, end_time = NULL, revision = revision + 1"
            " WHERE t.workspace_id = $1 AND t.cause_id = $2::uuid AND t.status = 7"
            " AND NOT EXISTS (SELECT 1 FROM tasks d WHERE d.workspace_id = $1"
            "  AND d.id = ANY (t.depends_on) AND d.status IN (6, 7))"
            " RETURNING " EVCOLS,
            2, p, &r, msg);
        if (err != AZ_OK) break;
        int n = PQntuples(r);
        if (n == 0) {
            PQclear(r);
            break;
        }
        rounds[n_rounds++] = r;
        if (changed) *changed += n;
    }
    if (err == AZ_OK) err = emit_task(c, ctx, first, first_from, NULL, msg);
    for (size_t i = 0; i < n_rounds; i++) {
        if (err == AZ_OK) err = emit_rows(c, ctx, rounds[i], 0, -1, S_CANCELLED, S_PENDING, msg);
        PQclear(rounds[i]);
    }
    return err;
}

/* Pending dependents of id whose dependencies have all succeeded -> queued. The dependents
 * are locked first: two dependencies finishing at once each see the other's commit. *rows gets
 * their EVCOLS for the caller's events (NULL when none); the caller PQclears it. The lookups
 * go through the edges in task_deps (migration 0015): under row-level security an operator that
 * is not leakproof, as array containment is, cannot be an index condition. The status guard is
 * written so that tasks_by_status cannot serve it instead (a scan of every pending task). */
#define SQL_DEPENDENTS                                                                     \
    "SELECT t.id FROM task_deps e JOIN tasks t ON t.workspace_id = $1 AND t.id = e.task_id" \
    " WHERE e.workspace_id = $1 AND e.dep_id = $2::uuid AND t.status::integer = 1"          \
    " ORDER BY t.id FOR UPDATE OF t"

static az_err queue_dependents(az_pgconn *c, const az_ctx *ctx, const char *id, az_arena *a,
                               az_task_ready *ready, PGresult **rows, char *msg)
{
    *rows = NULL;
    const char *p[2] = {ctx->workspace_id, id};
    PGresult *r;
    az_err err = az_pg_exec(c, ctx, SQL_DEPENDENTS, 2, p, &r, msg);
    if (err != AZ_OK) return err;
    int n = PQntuples(r);
    PQclear(r);
    if (n == 0) return AZ_OK;
    err = az_pg_exec(c, ctx,
                     "UPDATE tasks t SET status = 2, queued_at = clock_timestamp(),"
                     " published_at = clock_timestamp(), revision = revision + 1"
                     " WHERE t.workspace_id = $1 AND t.id IN (SELECT e.task_id FROM task_deps e"
                     "  WHERE e.workspace_id = $1 AND e.dep_id = $2::uuid)"
                     " AND t.status::integer = 1"
                     " AND NOT EXISTS (SELECT 1 FROM unnest(t.depends_on) AS dep(id)"
                     "  LEFT JOIN tasks d ON d.workspace_id = $1 AND d.id = dep.id"
                     "  WHERE d.status IS DISTINCT FROM 5)"
                     " RETURNING " EVCOLS,
                     2, p, &r, msg);
    if (err != AZ_OK) return err;
    err = ready_add_rows(ready, a, r, msg);
    if (err == AZ_OK) *rows = r;
    else PQclear(r);
    return err;
}

/* Closes the open attempt row of a task (attempt 0 = whichever is open). */
static az_err close_attempt(az_pgconn *c, const az_ctx *ctx, const char *id, int attempt, int status,
                            const Agentz__V1__TaskError *e, const Agentz__V1__TokenUsage *u,
                            char *msg)
{
    char att[16], st[8], pt[24], ct[24], tt[24], cost[40];
    snprintf(att, sizeof att, "%d", attempt);
    snprintf(st, sizeof st, "%d", status);
    snprintf(pt, sizeof pt, "%lld", u ? (long long)u->prompt_tokens : 0LL);
    snprintf(ct, sizeof ct, "%lld", u ? (long long)u->completion_tokens : 0LL);
    snprintf(tt, sizeof tt, "%lld", u ? (long long)u->total_tokens : 0LL);
    snprintf(cost, sizeof cost, "%.17g", u ? u->cost_usd : 0.0);
    const char *p[11] = {ctx->workspace_id, id, att, st, e ? e->type : NULL, e ? e->message : NULL,
                         e ? (e->retryable ? "t" : "f") : NULL, pt, ct, tt, cost};
    return az_pg_exec(c, ctx,
                      "UPDATE task_attempts SET status = $4, end_time = clock_timestamp(),"
                      " error_type = $5, error_message = $6, error_retryable = $7,"
                      " prompt_tokens = prompt_tokens + $8, completion_tokens = completion_tokens + $9,"
                      " total_tokens = total_tokens + $10, cost_usd = cost_usd + $11"
                      " WHERE workspace_id = $1 AND task_id = $2 AND end_time IS NULL"
                      " AND ($3::integer = 0 OR attempt = $3::integer)",
                      11, p, NULL, msg);
}

/* Status of the dependencies of a task-to-be, locked FOR SHARE so none finishes unseen while
 * the caller's transaction runs. Returns the state the task starts in (1 or 2). */
static az_err check_deps(az_pgconn *c, const az_ctx *ctx, const char *field, char *const *deps,
                         size_t n, const char *self, int *start, char *msg)
{
    *start = S_QUEUED;
    if (n == 0) return AZ_OK;
    size_t cap = n * 38 + 3;
    char *arr = malloc(cap);
    if (!arr) return az_fail(msg, AZ_ERR_NOMEM, "out of memory");
    size_t k = 0;
    arr[k++] = '{';
    for (size_t i = 0; i < n; i++) {
        if (!az_text_is_uuid(deps[i])) {
            free(arr);
            return az_fail(msg, AZ_ERR_INVALID, "%s[%zu]: not a task id", field, i);
        }
        if (self && strcasecmp(deps[i], self) == 0) {
            free(arr);
            return az_fail(msg, AZ_ERR_INVALID, "%s[%zu]: a task cannot depend on itself", field, i);
        }
        k += (size_t)snprintf(arr + k, cap - k, "%s%s", i ? "," : "", deps[i]);
    }
    arr[k++] = '}';
    arr[k] = '\0';
    const char *p[2] = {ctx->workspace_id, arr};
    PGresult *r;
    az_err err = az_pg_exec(c, ctx,
                            "SELECT id::text, status FROM tasks WHERE workspace_id = $1"
                            " AND id = ANY ($2::uuid[]) ORDER BY id FOR SHARE",
                            2, p, &r, msg);
    free(arr);
    if (err != AZ_OK) return err;
    for (size_t i = 0; i < n && err == AZ_OK; i++) {
        int found = 0;
        for (int j = 0; j < PQntuples(r); j++) {
            if (strcasecmp(PQgetvalue(r, j, 0), deps[i]) != 0) continue;
            found = 1;
            long s = num(r, j, 1);
            if (s == S_FAILED || s == S_CANCELLED)
                err = az_fail(msg, AZ_ERR_PRECONDITION,
                              "%s[%zu]: task %s is %s; retry it first", field, i, deps[i],
                              status_name(s));
            else if (s != S_SUCCEEDED)
                *start = S_PENDING;
        }
        if (!found && err == AZ_OK)
            err = az_fail(msg, AZ_ERR_INVALID, "%s[%zu]: task %s not found", field, i, deps[i]);
    }
    PQclear(r);
    return err;
}

/* ---------------------------------------------------------------- create */

static char *json_dup(az_arena *a, json_t *j)
{
    char *s = json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENCODE_ANY);
    json_decref(j);
    if (!s) return NULL;
    char *out = az_arena_strdup(a, s);
    free(s);
    return out;
}

static char *strings_json(az_arena *a, char *const *v, size_t n)
{
    json_t *arr = json_array();
    for (size_t i = 0; i < n; i++) json_array_append_new(arr, json_string(v[i]));
    return json_dup(a, arr);
}

static az_err struct_json(az_arena *a, const Google__Protobuf__Struct *s, char **out, char *msg)
{
    *out = NULL;
    if (!s) return AZ_OK;
    char *json = NULL;
    az_err err = az_pbjson_encode(&s->base, 0, &json, msg);
    if (err != AZ_OK) return err;
    *out = az_arena_strdup(a, json);
    free(json);
    return *out ? AZ_OK : az_fail(msg, AZ_ERR_NOMEM, "out of memory");
}

static long long dur_us(const Google__Protobuf__Duration *d)
{
    return (long long)d->seconds * 1000000 + d->nanos / 1000;
}

enum { NINSERT = 21 };

static const char insert_sql[] =
    "INSERT INTO tasks AS t (workspace_id, id, description, expected_output, agent_id,"
    " workflow_id, run_id, step_id, depends_on, context, output_schema, retry_policy_set,"
    " initial_backoff_us, backoff_coefficient, maximum_backoff_us, max_attempts,"
    " non_retryable_errors, timeout_us, status, webhook_urls, labels, queued_at, published_at)"
    " VALUES ($1, $2, $3, $4, $5, $6, $7, $8,"
    " ARRAY(SELECT jsonb_array_elements_text($9::jsonb))::uuid[],"
    " ARRAY(SELECT jsonb_array_elements_text($10::jsonb)), $11::jsonb, $12, $13, $14, $15, $16,"
    " ARRAY(SELECT jsonb_array_elements_text($17::jsonb)), $18, $19,"
    " ARRAY(SELECT jsonb_array_elements_text($20::jsonb)), $21::jsonb,"
    " CASE WHEN $19::smallint = 2 THEN clock_timestamp() END,"
    " CASE WHEN $19::smallint = 2 THEN clock_timestamp() END)"
    " RETURNING " COLS;

az_err az_task_insert(az_pgconn *c, const az_ctx *ctx, const Agentz__V1__Task *t,
                      const char *workflow_id, az_arena *a, Agentz__V1__Task **out,
                      az_task_ready *ready, char *msg)
{
    *out = NULL;
    char id[37];
    if (t->id && az_text_is_uuid(t->id)) snprintf(id, sizeof id, "%s", t->id);
    else if (az_text_uuid4(id) != AZ_OK) return az_fail(msg, AZ_ERR_IO, "cannot generate an id");
    int start;
    az_err err = check_deps(c, ctx, "task.depends_on", t->depends_on, t->n_depends_on, id, &start, msg);
    if (err != AZ_OK) return err;

    const Agentz__V1__RetryPolicy *rp = t->retry_policy;
    json_t *labels = json_object();
    for (size_t i = 0; i < t->n_labels; i++)
        json_object_set_new(labels, t->labels[i]->key, json_string(t->labels[i]->value));
    char *schema;
    if ((err = struct_json(a, t->output_schema, &schema, msg)) != AZ_OK) {
        json_decref(labels);
        return err;
    }
    const char *p[NINSERT];
    p[0] = ctx->workspace_id;
    p[1] = id;
    p[2] = t->description;
    p[3] = t->expected_output ? t->expected_output : "";
    p[4] = t->agent_id && *t->agent_id ? t->agent_id : NULL;
    p[5] = workflow_id && *workflow_id ? workflow_id : NULL;
    p[6] = t->run_id && *t->run_id ? t->run_id : NULL;
    p[7] = t->step_id ? t->step_id : "";
    p[8] = strings_json(a, t->depends_on, t->n_depends_on);
    p[9] = strings_json(a, t->context, t->n_context);
    p[10] = schema;
    p[11] = rp ? "t" : "f";
    p[12] = rp && rp->initial_backoff ? az_arena_printf(a, "%lld", dur_us(rp->initial_backoff)) : NULL;
    p[13] = az_arena_printf(a, "%.17g", rp ? rp->backoff_coefficient : 0.0);
    p[14] = rp && rp->maximum_backoff ? az_arena_printf(a, "%lld", dur_us(rp->maximum_backoff)) : NULL;
    p[15] = az_arena_printf(a, "%d", rp ? rp->max_attempts : 0);
    p[16] = rp ? strings_json(a, rp->non_retryable_errors, rp->n_non_retryable_errors) : "[]";
    p[17] = az_arena_printf(a, "%lld", t->timeout ? dur_us(t->timeout) : 0LL);
    p[18] = start == S_QUEUED ? "2" : "1";
    p[19] = strings_json(a, t->webhook_urls, t->n_webhook_urls);
    p[20] = json_dup(a, labels);
    if (!p[8] || !p[9] || !p[13] || !p[15] || !p[16] || !p[17] || !p[19] || !p[20] ||
        (rp && rp->initial_backoff && !p[12]) || (rp && rp->maximum_backoff && !p[14]))
        return az_fail(msg, AZ_ERR_NOMEM, "out of memory");
    PGresult *r;
    err = az_pg_exec(c, ctx, insert_sql, NINSERT, p, &r, msg);
    if (err == AZ_ERR_EXISTS) return az_fail(msg, AZ_ERR_EXISTS, "task %s already exists", id);
    if (err != AZ_OK) return err;
    err = from_row(r, 0, a, out, msg);
    PQclear(r);
    if (err == AZ_OK) err = emit_task(c, ctx, *out, AGENTZ__V1__TASK_STATUS__TASK_STATUS_UNSPECIFIED,
                                      NULL, msg);
    if (err == AZ_OK && start == S_QUEUED) err = ready_add(ready, a, id, msg);
    if (err != AZ_OK) *out = NULL;
    return err;
}

/* ---------------------------------------------------------------- create, the bulk path
 *
 * CreateTasks costs a fixed number of statements whatever its size: the rows go to PostgreSQL
 * as one JSON array expanded by jsonb_to_recordset (an array literal per column could not carry
 * the ragged depends_on, context and webhook lists), and results are mapped back to the items
 * by id. */

static const char insert_many_sql[] =
    "INSERT INTO tasks AS t (workspace_id, id, description, expected_output, agent_id, depends_on,"
    " context, output_schema, retry_policy_set, initial_backoff_us, backoff_coefficient,"
    " maximum_backoff_us, max_attempts, non_retryable_errors, timeout_us, status, webhook_urls,"
    " labels, queued_at, published_at)"
    " SELECT $1::uuid, r.id, r.description, r.expected_output, r.agent_id, r.depends_on, r.context,"
    " r.output_schema::jsonb, r.retry_policy_set, r.initial_backoff_us, r.backoff_coefficient,"
    " r.maximum_backoff_us, r.max_attempts, r.non_retryable_errors, r.timeout_us, r.status,"
    " r.webhook_urls, r.labels, CASE WHEN r.status = 2 THEN clock_timestamp() END,"
    " CASE WHEN r.status = 2 THEN clock_timestamp() END"
    " FROM jsonb_to_recordset($2::jsonb) AS r(id uuid, description text, expected_output text,"
    " agent_id uuid, depends_on uuid[], context text[], output_schema text,"
    " retry_policy_set boolean, initial_backoff_us bigint, backoff_coefficient double precision,"
    " maximum_backoff_us bigint, max_attempts integer, non_retryable_errors text[],"
    " timeout_us bigint, status smallint, webhook_urls text[], labels jsonb)"
    " RETURNING " COLS;

/* An item's task id (generated, or the replayed task's) and its index: sorted by id, so result
 * rows find their item by binary search. */
typedef struct item_id {
    const char *id;
    size_t i;
} item_id;

static int cmp_item_id(const void *x, const void *y)
{
    return strcmp(((const item_id *)x)->id, ((const item_id *)y)->id);
}

static const item_id *find_item(const item_id *v, size_t n, const char *id)
{
    item_id key = {.id = id};
    return bsearch(&key, v, n, sizeof *v, cmp_item_id);
}

/* The row of r (id, status ORDER BY id) for task id, or -1. uuid order is the order of their
 * lowercase text, so a binary search with strcasecmp matches any spelling of id. */
static int dep_row(const PGresult *r, const char *id)
{
    int lo = 0, hi = PQntuples(r) - 1;
    while (lo <= hi) {
        int mid = lo + (hi - lo) / 2;
        int c = strcasecmp(PQgetvalue(r, mid, 0), id);
        if (c == 0) return mid;
        if (c < 0) lo = mid + 1;
        else hi = mid - 1;
    }
    return -1;
}

/* check_deps for one item against deps (the statuses of every dependency of the batch). */
static az_err item_start(const PGresult *deps, const Agentz__V1__Task *t, int *start, char *msg)
{
    *start = S_QUEUED;
    for (size_t j = 0; j < t->n_depends_on; j++) {
        int row = az_text_is_uuid(t->depends_on[j]) ? dep_row(deps, t->depends_on[j]) : -1;
        if (!az_text_is_uuid(t->depends_on[j]))
            return az_fail(msg, AZ_ERR_INVALID, "task.depends_on[%zu]: not a task id", j);
        if (row < 0)
            return az_fail(msg, AZ_ERR_INVALID, "task.depends_on[%zu]: task %s not found", j,
                           t->depends_on[j]);
        long s = num(deps, row, 1);
        if (s == S_FAILED || s == S_CANCELLED)
            return az_fail(msg, AZ_ERR_PRECONDITION, "task.depends_on[%zu]: task %s is %s; retry it first",
                           j, t->depends_on[j], status_name(s));
        if (s != S_SUCCEEDED) *start = S_PENDING;
    }
    return AZ_OK;
}

/* A JSON array of strings; NULL when out of memory or one is not UTF-8. */
static json_t *json_strs(char *const *v, size_t n)
{
    json_t *arr = json_array();
    for (size_t i = 0; arr && i < n; i++) {
        if (json_array_append_new(arr, json_string(v[i])) != 0) {
            json_decref(arr);
            return NULL;
        }
    }
    return arr;
}

/* Adds v to o under k; 0 (v released) when v is NULL or out of memory. */
static int put(json_t *o, const char *k, json_t *v) { return v && json_object_set_new(o, k, v) == 0; }

/* Item t's row for insert_many_sql: the columns az_task_insert sets for a standalone task. */
static json_t *task_record(const Agentz__V1__Task *t, const char *id, int start, az_arena *a)
{
    const Agentz__V1__RetryPolicy *rp = t->retry_policy;
    json_t *o = json_object(), *labels = json_object();
    for (size_t i = 0; labels && i < t->n_labels; i++)
        if (!put(labels, t->labels[i]->key, json_string(t->labels[i]->value))) {
            json_decref(labels);
            labels = NULL;
        }
    char *schema = NULL, inner[AZ_MSG_MAX];
    if (!o) {
        json_decref(labels);
        return NULL;
    }
    /* put() consumes its value, labels first so that every exit below releases it. */
    int ok = put(o, "labels", labels) && struct_json(a, t->output_schema, &schema, inner) == AZ_OK &&
             put(o, "id", json_string(id)) && put(o, "description", json_string(t->description)) &&
             put(o, "expected_output", json_string(t->expected_output ? t->expected_output : "")) &&
             (!t->agent_id || !*t->agent_id || put(o, "agent_id", json_string(t->agent_id))) &&
             put(o, "depends_on", json_strs(t->depends_on, t->n_depends_on)) &&
             put(o, "context", json_strs(t->context, t->n_context)) &&
             (!schema || put(o, "output_schema", json_string(schema))) &&
             put(o, "retry_policy_set", json_boolean(rp != NULL)) &&
             (!rp || !rp->initial_backoff ||
              put(o, "initial_backoff_us", json_integer(dur_us(rp->initial_backoff)))) &&
             put(o, "backoff_coefficient", json_real(rp ? rp->backoff_coefficient : 0.0)) &&
             (!rp || !rp->maximum_backoff ||
              put(o, "maximum_backoff_us", json_integer(dur_us(rp->maximum_backoff)))) &&
             put(o, "max_attempts", json_integer(rp ? rp->max_attempts : 0)) &&
             put(o, "non_retryable_errors",
                 rp ? json_strs(rp->non_retryable_errors, rp->n_non_retryable_errors) : json_array()) &&
             put(o, "timeout_us", json_integer(t->timeout ? dur_us(t->timeout) : 0)) &&
             put(o, "status", json_integer(start)) &&
             put(o, "webhook_urls", json_strs(t->webhook_urls, t->n_webhook_urls));
    if (!ok) {
        json_decref(o);
        return NULL;
    }
    return o;
}

/* The statuses of every dependency of the items not replayed, locked FOR SHARE like
 * check_deps; *r is NULL when no item has one. */
static az_err batch_deps(az_pgconn *c, const az_ctx *ctx, const az_task_item *items, size_t n,
                         char (*existing)[37], PGresult **r, char *msg)
{
    *r = NULL;
    size_t total = 0;
    for (size_t i = 0; i < n; i++)
        if (!existing[i][0]) total += items[i].task->n_depends_on;
    if (!total) return AZ_OK;
    size_t cap = total * 38 + 3, k = 0;
    char *arr = malloc(cap);
    if (!arr) return az_fail(msg, AZ_ERR_NOMEM, "out of memory");
    arr[k++] = '{';
    for (size_t i = 0; i < n; i++) {
        const Agentz__V1__Task *t = items[i].task;
        for (size_t j = 0; !existing[i][0] && j < t->n_depends_on; j++) {
            if (!az_text_is_uuid(t->depends_on[j])) continue; /* item_start names it */
            k += (size_t)snprintf(arr + k, cap - k, "%s%s", k > 1 ? "," : "", t->depends_on[j]);
        }
    }
    arr[k++] = '}';
    arr[k] = '\0';
    const char *p[2] = {ctx->workspace_id, arr};
    az_err err = az_pg_exec(c, ctx,
                            "SELECT id::text, status FROM tasks WHERE workspace_id = $1"
                            " AND id = ANY ($2::uuid[]) ORDER BY id FOR SHARE",
                            2, p, r, msg);
    free(arr);
    return err;
}

az_err az_task_create(az_pg *pg, const az_ctx *ctx, const Agentz__V1__Task *t,
                      const char *request_id, const char *request_hash, az_arena *a,
                      Agentz__V1__Task **out, int *replayed, az_task_ready *ready, char *msg)
{
    *out = NULL;
    *replayed = 0;
    char id[37];
    if (az_text_uuid4(id) != AZ_OK) return az_fail(msg, AZ_ERR_IO, "cannot generate an id");
    Agentz__V1__Task copy = *t;
    copy.id = id;
    size_t ready_n = ready ? ready->n : 0;
    az_pgconn *c;
    az_err err = az_pg_acquire(pg, ctx, &c, msg);
    if (err != AZ_OK) return err;
    if ((err = az_pg_begin(c, ctx, msg)) != AZ_OK) goto out;
    if (request_id && *request_id) {
        char existing[37];
        err = az_idem_claim(c, ctx, "CreateTask", request_id, request_hash, id, existing, msg);
        if (err != AZ_OK) goto out;
        if (existing[0]) {
            err = fetch_one(c, ctx, existing, 0, a, out, msg);
            if (err == AZ_OK) {
                *replayed = 1;
                err = az_pg_commit(c, ctx, msg);
            }
            goto out;
        }
    }
    err = az_task_insert(c, ctx, &copy, NULL, a, out, ready, msg);
    if (err == AZ_OK) err = az_pg_commit(c, ctx, msg);
out:
    if (err != AZ_OK) {
        *out = NULL;
        if (ready) ready->n = ready_n; /* nothing was made ready after all */
    }
    az_pg_release(c);
    return err;
}

az_err az_task_create_many(az_pg *pg, const az_ctx *ctx, const az_task_item *items, size_t n,
                           size_t max_bytes, az_arena *a, Agentz__V1__Task ***out,
                           az_task_ready *ready, size_t *bad, char *msg)
{
    *out = NULL;
    *bad = n;
    if (n < 1 || n > AZ_TASK_BATCH_MAX)
        return az_fail(msg, AZ_ERR_INVALID, "requests: 1 to %d tasks per call, got %zu",
                       AZ_TASK_BATCH_MAX, n);
    Agentz__V1__Task **tasks = az_arena_alloc(a, n * sizeof *tasks);
    char(*ids)[37] = az_arena_alloc(a, n * sizeof *ids);
    char(*existing)[37] = az_arena_alloc(a, n * sizeof *existing);
    item_id *order = az_arena_alloc(a, n * sizeof *order);
    if (!tasks || !ids || !existing || !order) return az_fail(msg, AZ_ERR_NOMEM, "out of memory");
    size_t nkeys = 0;
    for (size_t i = 0; i < n; i++) {
        if (az_text_uuid4(ids[i]) != AZ_OK) return az_fail(msg, AZ_ERR_IO, "cannot generate an id");
        if (items[i].request_id && *items[i].request_id) nkeys++;
    }
    size_t ready_n = ready ? ready->n : 0;
    json_t *rows = NULL;
    char *body = NULL;
    PGresult *deps = NULL, *r = NULL;
    az_pgconn *c;
    az_err err = az_pg_acquire(pg, ctx, &c, msg);
    if (err != AZ_OK) return err;
    if ((err = az_pg_begin(c, ctx, msg)) != AZ_OK) goto out;

    /* 1. Idempotency keys, all in one statement; a replayed item keeps the task it made first. */
    if (nkeys) {
        const char **rid = az_arena_alloc(a, nkeys * sizeof *rid);
        const char **hash = az_arena_alloc(a, nkeys * sizeof *hash);
        const char **res = az_arena_alloc(a, nkeys * sizeof *res);
        size_t *at = az_arena_alloc(a, nkeys * sizeof *at);
        char(*held)[37] = az_arena_alloc(a, nkeys * sizeof *held);
        if (!rid || !hash || !res || !at || !held) {
            err = az_fail(msg, AZ_ERR_NOMEM, "out of memory");
            goto out;
        }
        for (size_t i = 0, k = 0; i < n; i++) {
            existing[i][0] = '\0';
            if (!items[i].request_id || !*items[i].request_id) continue;
            rid[k] = items[i].request_id;
            hash[k] = items[i].request_hash ? items[i].request_hash : "";
            res[k] = ids[i];
            at[k++] = i;
        }
        size_t bad_key;
        err = az_idem_claim_many(c, ctx, "CreateTask", nkeys, rid, hash, res, held, &bad_key, msg);
        if (err != AZ_OK) {
            if (bad_key < nkeys) *bad = at[bad_key];
            goto out;
        }
        for (size_t k = 0; k < nkeys; k++) memcpy(existing[at[k]], held[k], 37);
    } else {
        for (size_t i = 0; i < n; i++) existing[i][0] = '\0';
    }

    /* 2. The dependencies of the whole batch, then each item's start state. */
    if ((err = batch_deps(c, ctx, items, n, existing, &deps, msg)) != AZ_OK) goto out;
    size_t fresh = 0, replays = 0;
    if (!(rows = json_array())) {
        err = az_fail(msg, AZ_ERR_NOMEM, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        order[i] = (item_id){existing[i][0] ? existing[i] : ids[i], i};
        tasks[i] = NULL;
        if (existing[i][0]) {
            replays++;
            continue;
        }
        int start = S_QUEUED;
        if (deps && (err = item_start(deps, items[i].task, &start, msg)) != AZ_OK) {
            *bad = i;
            goto out;
        }
        if (json_array_append_new(rows, task_record(items[i].task, ids[i], start, a)) != 0) {
            *bad = i;
            err = az_fail(msg, AZ_ERR_INVALID, "task: cannot be encoded (out of memory, or a text is not UTF-8)");
            goto out;
        }
        fresh++;
    }
    qsort(order, n, sizeof *order, cmp_item_id);

    /* 3. Every new row in one INSERT. */
    if (fresh) {
        if (!(body = json_dumps(rows, JSON_COMPACT))) {
            err = az_fail(msg, AZ_ERR_NOMEM, "out of memory");
            goto out;
        }
        json_decref(rows);
        rows = NULL;
        const char *p[2] = {ctx->workspace_id, body};
        err = az_pg_exec(c, ctx, insert_many_sql, 2, p, &r, msg);
        free(body);
        body = NULL;
        if (err == AZ_ERR_EXISTS) err = az_fail(msg, AZ_ERR_ABORTED, "a generated task id collided; retry");
        if (err != AZ_OK) goto out;
        if ((size_t)PQntuples(r) != fresh) {
            err = az_fail(msg, AZ_ERR_INTERNAL, "inserted %d of %zu tasks", PQntuples(r), fresh);
            goto out;
        }
        for (int row = 0; row < PQntuples(r) && err == AZ_OK; row++) {
            const item_id *it = find_item(order, n, PQgetvalue(r, row, C_ID));
            if (!it) err = az_fail(msg, AZ_ERR_INTERNAL, "inserted an unknown task %s", PQgetvalue(r, row, C_ID));
            else err = from_row(r, row, a, &tasks[it->i], msg);
        }
        PQclear(r);
        r = NULL;
        if (err != AZ_OK) goto out;
    }

    /* 4. The replayed tasks as they are now. */
    if (replays) {
        size_t cap = replays * 38 + 3, k = 0;
        char *arr = az_arena_alloc(a, cap);
        if (!arr) {
            err = az_fail(msg, AZ_ERR_NOMEM, "out of memory");
            goto out;
        }
        arr[k++] = '{';
        for (size_t i = 0; i < n; i++)
            if (existing[i][0]) k += (size_t)snprintf(arr + k, cap - k, "%s%s", k > 1 ? "," : "", existing[i]);
        arr[k++] = '}';
        arr[k] = '\0';
        const char *p[2] = {ctx->workspace_id, arr};
        err = az_pg_exec(c, ctx,
                         "SELECT " COLS " FROM tasks t WHERE t.workspace_id = $1 AND t.id = ANY ($2::uuid[])",
                         2, p, &r, msg);
        if (err != AZ_OK) goto out;
        for (int row = 0; row < PQntuples(r) && err == AZ_OK; row++) {
            const item_id *it = find_item(order, n, PQgetvalue(r, row, C_ID));
            if (it) err = from_row(r, row, a, &tasks[it->i], msg);
        }
        PQclear(r);
        r = NULL;
        if (err != AZ_OK) goto out;
    }

    /* 5. The response must fit the message limit: checked before anything is committed. */
    size_t bytes = 0;
    for (size_t i = 0; i < n; i++) {
        if (!tasks[i]) { /* the key outlived its task (pruned) */
            *bad = i;
            err = not_found(existing[i], msg);
            goto out;
        }
        size_t m = protobuf_c_message_get_packed_size(&tasks[i]->base);
        bytes += 1 + m + (m < 128 ? 1 : m < 16384 ? 2 : m < 2097152 ? 3 : 4);
    }
    if (max_bytes && bytes > max_bytes) {
        err = az_fail(msg, AZ_ERR_INVALID,
                      "requests: the response would be %zu bytes, over the %zu-byte message limit;"
                      " send fewer tasks per call",
                      bytes, max_bytes);
        goto out;
    }

    /* 6. The events, after the last row lock, in one deferred statement (they ride with the
     * COMMIT), and the ready set in item order. */
    unsigned char *replay = az_arena_alloc(a, n);
    if (!replay) err = az_fail(msg, AZ_ERR_NOMEM, "out of memory");
    for (size_t i = 0; i < n && err == AZ_OK; i++) replay[i] = existing[i][0] != '\0';
    if (err == AZ_OK)
        err = emit_tasks(c, ctx, tasks, n, AGENTZ__V1__TASK_STATUS__TASK_STATUS_UNSPECIFIED, replay, a, msg);
    for (size_t i = 0; i < n && err == AZ_OK; i++) {
        if (existing[i][0]) continue;
        if (tasks[i]->status == S_QUEUED) err = ready_add(ready, a, tasks[i]->id, msg);
    }
    if (err == AZ_OK) err = az_pg_commit(c, ctx, msg);
out:
    json_decref(rows);
    free(body);
    PQclear(deps);
    PQclear(r);
    if (err != AZ_OK) {
        if (ready) ready->n = ready_n; /* nothing was made ready after all */
    } else {
        *out = tasks;
    }
    az_pg_release(c);
    return err;
}

az_err az_task_get(az_pg *pg, const az_ctx *ctx, const char *id, az_arena *a,
                   Agentz__V1__Task **out, char *msg)
{
    *out = NULL;
    if (!az_text_is_uuid(id)) return not_found(id, msg);
    az_pgconn *c;
    az_err err = az_pg_acquire(pg, ctx, &c, msg);
    if (err != AZ_OK) return err;
    err = fetch_one(c, ctx, id, 0, a, out, msg);
    az_pg_release(c);
    return err;
}

/* ---------------------------------------------------------------- pagination */

/* Tokens are az_pagetoken texts: "t1|<filter hash>|<create_time text>|<id>" for ListTasks and
 * "p1|<task id>|<last attempt>" for ListTaskAttempts. */

az_err az_task_list(az_pg *pg, const az_ctx *ctx, const az_task_query *q, az_arena *a,
                    Agentz__V1__ListTasksResponse **out, char *msg)
{
    *out = NULL;
    char status[16], limit[16];
    snprintf(status, sizeof status, "%d", q->status);
    snprintf(limit, sizeof limit, "%d", q->page_size + 1);
    unsigned long hash = az_pagetoken_hash(
        az_pagetoken_hash(az_pagetoken_hash(AZ_PAGETOKEN_HASH_INIT, status), q->agent_id), q->run_id);
    char ts[64] = "", after[40] = "";
    if (q->page_token && *q->page_token) {
        char raw[AZ_PAGETOKEN_RAW_MAX + 1];
        unsigned long th;
        az_err derr = az_pagetoken_decode(q->page_token, raw, msg);
        if (derr != AZ_OK) return derr;
        if (sscanf(raw, "t1|%lx|%63[^|]|%39s", &th, ts, after) != 3 || !az_text_is_uuid(after))
            return az_fail(msg, AZ_ERR_INVALID, "page_token is invalid");
        if (th != hash)
            return az_fail(msg, AZ_ERR_INVALID,
                           "page_token was issued for different filters (status, agent_id, run_id)");
    }
    const char *p[6] = {ctx->workspace_id, status, q->agent_id && *q->agent_id ? q->agent_id : NULL,
                        q->run_id && *q->run_id ? q->run_id : NULL, ts[0] ? ts : NULL, limit};
    const char *p2[7] = {p[0], p[1], p[2], p[3], p[4], after[0] ? after : NULL, limit};
    az_pgconn *c;
    az_err err = az_pg_acquire(pg, ctx, &c, msg);
    if (err != AZ_OK) return err;
    PGresult *r = NULL;
    err = az_pg_exec(c, ctx,
                     "SELECT " COLS " FROM tasks t WHERE t.workspace_id = $1"
                     " AND ($2::smallint = 0 OR t.status = $2::smallint)"
                     " AND ($3::uuid IS NULL OR t.agent_id = $3::uuid)"
                     " AND ($4::uuid IS NULL OR t.run_id = $4::uuid)"
                     " AND ($5::timestamptz IS NULL OR (t.create_time, t.id) < ($5::timestamptz, $6::uuid))"
                     " ORDER BY t.create_time DESC, t.id DESC LIMIT $7::integer",
                     7, p2, &r, msg);
    az_pg_release(c);
    if (err != AZ_OK) return err;
    Agentz__V1__ListTasksResponse *resp = az_arena_alloc(a, sizeof *resp);
    int rows = PQntuples(r);
    int n = rows > q->page_size ? q->page_size : rows;
    if (resp) {
        agentz__v1__list_tasks_response__init(resp);
        resp->tasks = az_arena_alloc(a, (size_t)(n ? n : 1) * sizeof *resp->tasks);
    }
    if (!resp || !resp->tasks) err = az_fail(msg, AZ_ERR_NOMEM, "out of memory");
    for (int i = 0; i < n && err == AZ_OK; i++) err = from_row(r, i, a, &resp->tasks[i], msg);
    if (err == AZ_OK) {
        resp->n_tasks = (size_t)n;
        if (rows > q->page_size) {
            char raw[AZ_PAGETOKEN_RAW_MAX + 1];
            int len = snprintf(raw, sizeof raw, "t1|%lx|%s|%s", hash,
                               PQgetvalue(r, n - 1, C_CREATE_TEXT), PQgetvalue(r, n - 1, C_ID));
            /* The text is far shorter than the limit: NULL can only mean out of memory. */
            resp->next_page_token =
                len > 0 && (size_t)len < sizeof raw ? az_pagetoken_encode(a, raw) : NULL;
            if (!resp->next_page_token) err = az_fail(msg, AZ_ERR_NOMEM, "out of memory");
        }
    }
    PQclear(r);
    if (err == AZ_OK) *out = resp;
    return err;
}

az_err az_task_list_run(az_pgconn *c, const az_ctx *ctx, const char *run_id, az_arena *a,
                        Agentz__V1__Task ***out, size_t *n, char *msg)
{
    *out = NULL;
    *n = 0;
    if (!az_text_is_uuid(run_id)) return AZ_OK;
    char limit[16];
    snprintf(limit, sizeof limit, "%d", RUN_TASKS_MAX);
    const char *p[3] = {ctx->workspace_id, run_id, limit};
    PGresult *r;
    az_err err = az_pg_exec(c, ctx,
                            "SELECT " COLS " FROM tasks t WHERE t.workspace_id = $1 AND t.run_id = $2"
                            " ORDER BY t.create_time, t.id LIMIT $3::integer",
                            3, p, &r, msg);
    if (err != AZ_OK) return err;
    int rows = PQntuples(r);
    Agentz__V1__Task **v = az_arena_alloc(a, (size_t)(rows ? rows : 1) * sizeof *v);
    if (!v) err = az_fail(msg, AZ_ERR_NOMEM, "out of memory");
    for (int i = 0; i < rows && err == AZ_OK; i++) err = from_row(r, i, a, &v[i], msg);
    PQclear(r);
    if (err != AZ_OK) return err;
    *out = v;
    *n = (size_t)rows;
    return AZ_OK;
}

/* ---------------------------------------------------------------- cancel and retry */

/* The cancel UPDATE of CancelTask: cancels id itself when unfinished. The locking subquery
 * gives the status it had (RETURNING sees only the new row), in the same round trip. */
static const char cancel_sql[] =
    "UPDATE tasks t SET status = 7, error_type = 'cancelled', error_message = $3,"
    " error_retryable = false, cause_id = NULL, end_time = clock_timestamp(),"
    " next_attempt_time = NULL, revision = revision + 1"
    " FROM (SELECT id, status FROM tasks WHERE workspace_id = $1 AND id = $2 FOR UPDATE) o"
    " WHERE t.workspace_id = $1 AND t.id = o.id AND t.status::integer IN (1, 2, 3, 4)"
    " RETURNING " COLS ", o.status";
#define C_OLD_STATUS (C_SERIES + 1)

az_err az_task_cancel(az_pg *pg, const az_ctx *ctx, const char *id, const char *reason,
                      az_arena *a, Agentz__V1__Task **out, char *run_id, char *msg)
{
    *out = NULL;
    set_run_id(run_id, "");
    if (!az_text_is_uuid(id)) return not_found(id, msg);
    const char *why = reason && *reason ? reason : "cancelled by a user";
    const char *p[3] = {ctx->workspace_id, id, why};
    az_pgconn *c;
    az_err err = az_pg_acquire(pg, ctx, &c, msg);
    if (err != AZ_OK) return err;
    PGresult *r = NULL, *down = NULL;
    if ((err = az_pg_begin(c, ctx, msg)) != AZ_OK) goto out;
    if ((err = az_pg_exec(c, ctx, cancel_sql, 3, p, &r, msg)) != AZ_OK) goto out;
    if (PQntuples(r) == 0) {
        /* Already cancelled is success (idempotent); finished is not. The row lock makes
         * the answer consistent with concurrent transitions. */
        Agentz__V1__Task *cur;
        if ((err = fetch_one(c, ctx, id, 1, a, &cur, msg)) != AZ_OK) goto out;
        if (cur->status == S_CANCELLED) {
            *out = cur;
            set_run_id(run_id, cur->run_id);
            err = az_pg_commit(c, ctx, msg);
        } else {
            err = az_fail(msg, AZ_ERR_PRECONDITION, "task %s is already %s; cannot cancel", id,
                          status_name(cur->status));
        }
        goto out;
    }
    if ((err = from_row(r, 0, a, out, msg)) != AZ_OK) goto out;
    if ((err = close_attempt(c, ctx, id, 0, S_CANCELLED, (*out)->error, NULL, msg)) != AZ_OK ||
        (err = cancel_downstream(c, ctx, id, "cancelled", "was cancelled", NULL, &down, msg)) != AZ_OK ||
        (err = emit_task(c, ctx, *out, num(r, 0, C_OLD_STATUS), NULL, msg)) != AZ_OK ||
        (err = emit_rows(c, ctx, down, 0, -1, S_PENDING, S_CANCELLED, msg)) != AZ_OK)
        goto out;
    set_run_id(run_id, (*out)->run_id);
    err = az_pg_commit(c, ctx, msg);
out:
    PQclear(r);
    PQclear(down);
    if (err != AZ_OK) {
        *out = NULL;
        set_run_id(run_id, "");
    }
    az_pg_release(c);
    return err;
}

az_err az_task_retry(az_pg *pg, const az_ctx *ctx, const char *id, az_arena *a,
                     Agentz__V1__Task **out, char *run_id, az_task_ready *ready, char *msg)
{
    *out = NULL;
    set_run_id(run_id, "");
    if (!az_text_is_uuid(id)) return not_found(id, msg);
    size_t ready_n = ready ? ready->n : 0;
    az_pgconn *c;
    az_err err = az_pg_acquire(pg, ctx, &c, msg);
    if (err != AZ_OK) return err;
    PGresult *r = NULL;
    Agentz__V1__Task *cur;
    int start;
    if ((err = az_pg_begin(c, ctx, msg)) != AZ_OK) goto out;
    /* Read-then-write: the row lock serializes concurrent RetryTask/CancelTask calls. */
    if ((err = fetch_one(c, ctx, id, 1, a, &cur, msg)) != AZ_OK) goto out;
    if (cur->status != S_FAILED && cur->status != S_CANCELLED) {
        err = az_fail(msg, AZ_ERR_PRECONDITION, "task %s is %s; cannot retry (only failed or "
                      "cancelled tasks can)", id, status_name(cur->status));
        goto out;
    }
    if ((err = check_deps(c, ctx, "depends_on", cur->depends_on, cur->n_depends_on, NULL, &start,
                          msg)) != AZ_OK) {
        if (err == AZ_ERR_PRECONDITION) {
            char inner[AZ_MSG_MAX];
            snprintf(inner, sizeof inner, "%s", msg);
            az_fail(msg, err, "task %s cannot be retried: %s", id, inner);
        }
        goto out;
    }
    const char *p[3] = {ctx->workspace_id, id, start == S_QUEUED ? "2" : "1"};
    if ((err = az_pg_exec(c, ctx,
                          "UPDATE tasks t SET status = $3::smallint, error_type = NULL,"
                          " error_message = NULL, error_retryable = NULL, cause_id = NULL,"
                          " output_raw = NULL, output_json = NULL, end_time = NULL,"
                          " next_attempt_time = NULL, progress = 0, retry_base = attempt,"
                          " queued_at = CASE WHEN $3::smallint = 2 THEN clock_timestamp() END,"
                          " published_at = CASE WHEN $3::smallint = 2 THEN clock_timestamp() END,"
                          " revision = revision + 1"
                          " WHERE t.workspace_id = $1 AND t.id = $2 AND t.status::integer IN (6, 7)"
                          " RETURNING " COLS,
                          3, p, &r, msg)) != AZ_OK)
        goto out;
    if (PQntuples(r) == 0) {
        err = explain_miss(c, ctx, id, "retry", msg);
        goto out;
    }
    /* restore_downstream appends its events after its last lock; this task's comes first. */
    if ((err = from_row(r, 0, a, out, msg)) != AZ_OK ||
        (err = restore_downstream(c, ctx, id, NULL, *out, cur->status, msg)) != AZ_OK)
        goto out;
    if (start == S_QUEUED && (err = ready_add(ready, a, id, msg)) != AZ_OK) goto out;
    set_run_id(run_id, (*out)->run_id);
    err = az_pg_commit(c, ctx, msg);
out:
    PQclear(r);
    if (err != AZ_OK) {
        *out = NULL;
        set_run_id(run_id, "");
        if (ready) ready->n = ready_n;
    }
    az_pg_release(c);
    return err;
}

az_err az_task_cancel_run(az_pgconn *c, const az_ctx *ctx, const char *run_id, const char *reason,
                          int *changed, char *msg)
{
    if (changed) *changed = 0;
    if (!az_text_is_uuid(run_id)) return AZ_OK;
    const char *p[3] = {ctx->workspace_id, run_id, reason && *reason ? reason : "run cancelled"};
    PGresult *r;
    /* The locking subquery gives each task's status before the change, for its event. */
    az_err err = az_pg_exec(c, ctx,
                            "UPDATE tasks t SET status = 7, error_type = 'cancelled',"
                            " error_message = $3, error_retryable = false, cause_id = NULL,"
                            " end_time = clock_timestamp(), next_attempt_time = NULL,"
                            " revision = revision + 1"
                            " FROM (SELECT id, status FROM tasks WHERE workspace_id = $1"
                            "  AND run_id = $2 AND status IN (1, 2, 3, 4) ORDER BY id FOR UPDATE) o"
                            " WHERE t.workspace_id = $1 AND t.id = o.id AND t.status::integer IN (1, 2, 3, 4)"
                            " RETURNING " EVCOLS ", o.status",
                            3, p, &r, msg);
    if (err != AZ_OK) return err;
    if (changed) *changed = PQntuples(r);
    err = az_pg_exec(c, ctx,
                     "UPDATE task_attempts a SET status = 7, end_time = clock_timestamp(),"
                     " error_type = 'cancelled', error_message = $3, error_retryable = false"
                     " FROM tasks t WHERE a.workspace_id = $1 AND a.end_time IS NULL"
                     " AND t.workspace_id = $1 AND t.run_id = $2 AND t.id = a.task_id",
                     3, p, NULL, msg);
    if (err == AZ_OK) err = emit_rows(c, ctx, r, 0, E_N, 0, S_CANCELLED, msg);
    PQclear(r);
    return err;
}

az_err az_task_resume_run(az_pgconn *c, const az_ctx *ctx, const char *run_id, int *changed,
                          az_task_ready *ready, char *msg)
{
    if (changed) *changed = 0;
    if (!az_text_is_uuid(run_id)) return AZ_OK;
    const char *p[2] = {ctx->workspace_id, run_id};
    PGresult *r, *back;
    az_err err = az_pg_exec(c, ctx,
                            "UPDATE tasks t SET status = 1, error_type = NULL, error_message = NULL,"
                            " error_retryable = NULL, cause_id = NULL, output_raw = NULL,"
                            " output_json = NULL, end_time = NULL, next_attempt_time = NULL,"
                            " progress = 0, retry_base = attempt, revision = revision + 1"
                            " FROM (SELECT id, status FROM tasks WHERE workspace_id = $1"
                            "  AND run_id = $2 AND status IN (6, 7) ORDER BY id FOR UPDATE) o"
                            " WHERE t.workspace_id = $1 AND t.id = o.id AND t.status::integer IN (6, 7)"
                            " RETURNING " EVCOLS ", o.status",
                            2, p, &back, msg);
    if (err != AZ_OK) return err;
    if (changed) *changed = PQntuples(back);
    err = az_pg_exec(c, ctx,
                     "UPDATE tasks t SET status = 2, queued_at = clock_timestamp(),"
                     " published_at = clock_timestamp(), revision = revision + 1"
                     " WHERE t.workspace_id = $1 AND t.run_id = $2 AND t.status = 1"
                     " AND NOT EXISTS (SELECT 1 FROM unnest(t.depends_on) AS dep(id)"
                     "  LEFT JOIN tasks d ON d.workspace_id = $1 AND d.id = dep.id"
                     "  WHERE d.status IS DISTINCT FROM 5)"
                     " RETURNING " EVCOLS,
                     2, p, &r, msg);
    if (err != AZ_OK) {
        PQclear(back);
        return err;
    }
    err = ready_add_rows(ready, NULL, r, msg);
    /* One event per task: -> queued (from what they were) for those ready now first, then
     * failed|cancelled -> pending for those left waiting on them. */
    for (int k = 0; k < PQntuples(r) && err == AZ_OK; k++) {
        long from = S_PENDING;
        for (int i = 0; i < PQntuples(back); i++)
            if (strcmp(PQgetvalue(r, k, E_ID), PQgetvalue(back, i, E_ID)) == 0) from = num(back, i, E_N);
        err = emit_row(c, ctx, r, k, 0, from, S_QUEUED, msg);
    }
    for (int i = 0; i < PQntuples(back) && err == AZ_OK; i++) {
        int queued = 0;
        for (int k = 0; k < PQntuples(r) && !queued; k++)
            queued = strcmp(PQgetvalue(r, k, E_ID), PQgetvalue(back, i, E_ID)) == 0;
        if (!queued) err = emit_row(c, ctx, back, i, 0, num(back, i, E_N), S_PENDING, msg);
    }
    PQclear(back);
    PQclear(r);
    return err;
}

/* ---------------------------------------------------------------- attempts and stats */

az_err az_task_list_attempts(az_pg *pg, const az_ctx *ctx, const char *task_id, int page_size,
                             const char *page_token, az_arena *a,
                             Agentz__V1__ListTaskAttemptsResponse **out, char *msg)
{
    *out = NULL;
    if (!az_text_is_uuid(task_id)) return not_found(task_id, msg);
    if (page_size <= 0) page_size = 50;
    int after = 0;
    if (page_token && *page_token) {
        char raw[AZ_PAGETOKEN_RAW_MAX + 1], tid[40];
        az_err derr = az_pagetoken_decode(page_token, raw, msg);
        if (derr != AZ_OK) return derr;
        if (sscanf(raw, "p1|%39[^|]|%d", tid, &after) != 2 || strcasecmp(tid, task_id) != 0 ||
            after < 0)
            return az_fail(msg, AZ_ERR_INVALID, "page_token is invalid");
    }
    char aft[16], limit[16];
    snprintf(aft, sizeof aft, "%d", after);
    snprintf(limit, sizeof limit, "%d", page_size + 1);
    const char *p[4] = {ctx->workspace_id, task_id, aft, limit};
    az_pgconn *c;
    az_err err = az_pg_acquire(pg, ctx, &c, msg);
    if (err != AZ_OK) return err;
    PGresult *r = NULL, *t = NULL;
    err = az_pg_exec(c, ctx, "SELECT 1 FROM tasks WHERE workspace_id = $1 AND id = $2", 2, p, &t, msg);
    if (err == AZ_OK && PQntuples(t) == 0) err = not_found(task_id, msg);
    if (err == AZ_OK)
        err = az_pg_exec(c, ctx,
                         "SELECT attempt, status, (extract(epoch FROM start_time) * 1000000)::bigint,"
                         " (extract(epoch FROM end_time) * 1000000)::bigint, error_type,"
                         " error_message, error_retryable, prompt_tokens, completion_tokens,"
                         " total_tokens, cost_usd, worker FROM task_attempts"
                         " WHERE workspace_id = $1 AND task_id = $2 AND attempt > $3::integer"
                         " ORDER BY attempt LIMIT $4::integer",
                         4, p, &r, msg);
    PQclear(t);
    az_pg_release(c);
    if (err != AZ_OK) return err;
    int rows = PQntuples(r), n = rows > page_size ? page_size : rows, oom = 0;
    Agentz__V1__ListTaskAttemptsResponse *resp = az_arena_alloc(a, sizeof *resp);
    if (resp) {
        agentz__v1__list_task_attempts_response__init(resp);
        resp->attempts = az_arena_alloc(a, (size_t)(n ? n : 1) * sizeof *resp->attempts);
    }
    if (!resp || !resp->attempts) oom = 1;
    for (int i = 0; i < n && !oom; i++) {
        Agentz__V1__TaskAttempt *at = az_arena_alloc(a, sizeof *at);
        if (!at) {
            oom = 1;
            break;
        }
        agentz__v1__task_attempt__init(at);
        at->attempt = (int32_t)num(r, i, 0);
        at->status = (Agentz__V1__TaskStatus)num(r, i, 1);
        at->start_time = opt_timestamp(a, r, i, 2, &oom);
        at->end_time = opt_timestamp(a, r, i, 3, &oom);
        at->error = error_from(a, r, i, 4, &oom);
        if (!(at->usage = usage_from(a, r, i, 7))) oom = 1;
        if (!(at->worker = col(a, r, i, 11))) oom = 1;
        resp->attempts[i] = at;
        resp->n_attempts = (size_t)i + 1;
    }
    if (!oom && rows > page_size) {
        char raw[AZ_PAGETOKEN_RAW_MAX + 1];
        int len = snprintf(raw, sizeof raw, "p1|%s|%s", task_id, PQgetvalue(r, n - 1, 0));
        if (len < 0 || (size_t)len >= sizeof raw || !(resp->next_page_token = az_pagetoken_encode(a, raw)))
            oom = 1;
    }
    PQclear(r);
    if (oom) return az_fail(msg, AZ_ERR_NOMEM, "out of memory");
    *out = resp;
    return AZ_OK;
}

az_err az_task_stats(az_pg *pg, const az_ctx *ctx, int64_t start_us, int64_t end_us,
                     const char *agent_id, az_arena *a, Agentz__V1__TaskStats **out, char *msg)
{
    *out = NULL;
    char s[24], e[24];
    snprintf(s, sizeof s, "%lld", (long long)start_us);
    snprintf(e, sizeof e, "%lld", (long long)end_us);
    const char *p[4] = {ctx->workspace_id, start_us ? s : NULL, end_us ? e : NULL,
                        agent_id && *agent_id ? agent_id : NULL};
    az_pgconn *c;
    az_err err = az_pg_acquire(pg, ctx, &c, msg);
    if (err != AZ_OK) return err;
    PGresult *r;
    /* Durations of finished tasks that ever started; percentiles interpolate. */
    err = az_pg_exec(
        c, ctx,
        "WITH w AS (SELECT status, attempt, prompt_tokens, completion_tokens, total_tokens, cost_usd,"
        "  CASE WHEN status IN (5, 6, 7) AND start_time IS NOT NULL AND end_time IS NOT NULL"
        "   THEN extract(epoch FROM end_time - start_time) * 1000000 END AS us"
        "  FROM tasks WHERE workspace_id = $1"
        "  AND ($2::bigint IS NULL OR create_time >= to_timestamp($2::bigint / 1000000.0))"
        "  AND ($3::bigint IS NULL OR create_time < to_timestamp($3::bigint / 1000000.0))"
        "  AND ($4::uuid IS NULL OR agent_id = $4::uuid))"
        " SELECT count(*), count(*) FILTER (WHERE status = 1), count(*) FILTER (WHERE status = 2),"
        " count(*) FILTER (WHERE status = 3), count(*) FILTER (WHERE status = 4),"
        " count(*) FILTER (WHERE status = 5), count(*) FILTER (WHERE status = 6),"
        " count(*) FILTER (WHERE status = 7),"
        " COALESCE(round(percentile_cont(0.5) WITHIN GROUP (ORDER BY us))::bigint, -1),"
        " COALESCE(round(percentile_cont(0.95) WITHIN GROUP (ORDER BY us))::bigint, -1),"
        " COALESCE(round(max(us))::bigint, -1),"
        " COALESCE(sum(GREATEST(attempt - 1, 0)), 0), COALESCE(sum(prompt_tokens), 0),"
        " COALESCE(sum(completion_tokens), 0), COALESCE(sum(total_tokens), 0),"
        " COALESCE(sum(cost_usd), 0) FROM w",
        4, p, &r, msg);
    az_pg_release(c);
    if (err != AZ_OK) return err;
    Agentz__V1__TaskStats *st = az_arena_alloc(a, sizeof *st);
    Agentz__V1__TokenUsage *u = az_arena_alloc(a, sizeof *u);
    int oom = !st || !u;
    if (!oom) {
        agentz__v1__task_stats__init(st);
        agentz__v1__token_usage__init(u);
        st->total = num(r, 0, 0);
        st->pending = num(r, 0, 1);
        st->queued = num(r, 0, 2);
        st->running = num(r, 0, 3);
        st->backoff = num(r, 0, 4);
        st->succeeded = num(r, 0, 5);
        st->failed = num(r, 0, 6);
        st->cancelled = num(r, 0, 7);
        int64_t done = st->succeeded + st->failed + st->cancelled;
        st->success_rate = done ? (double)st->succeeded / (double)done : 0.0;
        Google__Protobuf__Duration **d[3] = {&st->p50_duration, &st->p95_duration, &st->max_duration};
        for (int i = 0; i < 3; i++) {
            long long us = num(r, 0, 8 + i);
            if (us >= 0 && !(*d[i] = az_pbtime_duration(a, us))) oom = 1;
        }
        st->retries = num(r, 0, 11);
        u->prompt_tokens = num(r, 0, 12);
        u->completion_tokens = num(r, 0, 13);
        u->total_tokens = num(r, 0, 14);
        u->cost_usd = strtod(PQgetvalue(r, 0, 15), NULL);
        st->usage = u;
        if (start_us && !(st->start_time = az_pbtime_timestamp(a, start_us))) oom = 1;
        if (end_us && !(st->end_time = az_pbtime_timestamp(a, end_us))) oom = 1;
    }
    PQclear(r);
    if (oom) return az_fail(msg, AZ_ERR_NOMEM, "out of memory");
    *out = st;
    return AZ_OK;
}

/* ---------------------------------------------------------------- engine transitions */

az_err az_task_claim(az_pg *pg, const az_ctx *ctx, const char *id, const char *worker,
                     int64_t lease_ms, az_arena *a, Agentz__V1__Task **out, char *msg)
{
    *out = NULL;
    if (!az_text_is_uuid(id)) return not_found(id, msg);
    char lease[24];
    snprintf(lease, sizeof lease, "%lld", (long long)(lease_ms > 0 ? lease_ms : AZ_TASK_DEFAULT_LEASE_MS));
    const char *p[4] = {ctx->workspace_id, id, worker ? worker : "", lease};
    az_pgconn *c;
    az_err err = az_pg_acquire(pg, ctx, &c, msg);
    if (err != AZ_OK) return err;
    PGresult *r = NULL;
    if ((err = az_pg_begin(c, ctx, msg)) != AZ_OK) goto out;
    if ((err = az_pg_exec(c, ctx,
                          "UPDATE tasks t SET status = 3, attempt = attempt + 1,"
                          " start_time = COALESCE(start_time, clock_timestamp()),"
                          " series_start_time = CASE WHEN attempt = retry_base"
                          "  THEN clock_timestamp() ELSE series_start_time END,"
                          " progress = 0, next_attempt_time = NULL, revision = revision + 1,"
                          " lease_owner = $3, lease_expires_at = clock_timestamp()"
                          "  + make_interval(secs => $4::bigint / 1000.0)"
                          " WHERE t.workspace_id = $1 AND t.id = $2 AND t.status::integer = 2"
                          " RETURNING " COLS,
                          4, p, &r, msg)) != AZ_OK)
        goto out;
    if (PQntuples(r) == 0) {
        err = explain_miss(c, ctx, id, "claim", msg);
        goto out;
    }
    if ((err = from_row(r, 0, a, out, msg)) != AZ_OK) goto out;
    char att[16];
    snprintf(att, sizeof att, "%d", (*out)->attempt);
    const char *q[4] = {ctx->workspace_id, id, att, p[2]};
    if ((err = az_pg_defer(c, ctx,
                           "INSERT INTO task_attempts (workspace_id, task_id, attempt, status, worker)"
                           " VALUES ($1, $2, $3, 3, $4)",
                           4, q, msg)) != AZ_OK ||
        (err = emit_task(c, ctx, *out, S_QUEUED, NULL, msg)) != AZ_OK)
        goto out;
    err = az_pg_commit(c, ctx, msg);
out:
    PQclear(r);
    if (err != AZ_OK) *out = NULL;
    az_pg_release(c);
    return err;
}

/* The ids as a PostgreSQL array literal ({a,b,...}); NULL when out of memory. The ids are
 * checked uuids, so they need no quoting. */
static char *uuid_array(az_arena *a, char *const *ids, size_t n)
{
    char *out = az_arena_alloc(a, n * 37 + 3);
    if (!out) return NULL;
    size_t k = 0;
    out[k++] = '{';
    for (size_t i = 0; i < n; i++) {
        if (i) out[k++] = ',';
        memcpy(out + k, ids[i], 36);
        k += 36;
    }
    out[k++] = '}';
    out[k] = '\0';
    return out;
}

az_err az_task_claim_many(az_pg *pg, const az_ctx *ctx, char *const *ids, size_t n,
                          const char *worker, int64_t lease_ms, az_arena *a,
                          Agentz__V1__Task ***out, size_t *n_out, char *msg)
{
    *out = NULL;
    *n_out = 0;
    if (n == 0) return AZ_OK;
    if (n > AZ_TASK_CLAIM_MAX)
        return az_fail(msg, AZ_ERR_INVALID, "at most %d tasks per claim, got %zu", AZ_TASK_CLAIM_MAX, n);
    char **valid = az_arena_alloc(a, n * sizeof *valid);
    if (!valid) return az_fail(msg, AZ_ERR_NOMEM, "out of memory");
    size_t nv = 0;
    for (size_t i = 0; i < n; i++)
        if (az_text_is_uuid(ids[i])) valid[nv++] = ids[i];
    if (nv == 0) return AZ_OK;
    if (nv == 1) { /* the common case when the worker keeps up: the single claim's plan is cheaper */
        Agentz__V1__Task **one = az_arena_alloc(a, sizeof *one);
        if (!one) return az_fail(msg, AZ_ERR_NOMEM, "out of memory");
        az_err err = az_task_claim(pg, ctx, valid[0], worker, lease_ms, a, one, msg);
        if (err == AZ_ERR_PRECONDITION || err == AZ_ERR_NOT_FOUND) return AZ_OK; /* not queued */
        if (err != AZ_OK) return err;
        *out = one;
        *n_out = 1;
        return AZ_OK;
    }
    char lease[24];
    snprintf(lease, sizeof lease, "%lld", (long long)(lease_ms > 0 ? lease_ms : AZ_TASK_DEFAULT_LEASE_MS));
    const char *p[4] = {ctx->workspace_id, uuid_array(a, valid, nv), worker ? worker : "", lease};
    if (!p[1]) return az_fail(msg, AZ_ERR_NOMEM, "out of memory");
    az_pgconn *c;
    az_err err = az_pg_acquire(pg, ctx, &c, msg);
    if (err != AZ_OK) return err;
    PGresult *r = NULL;
    Agentz__V1__Task **v = NULL;
    size_t got = 0;
    if ((err = az_pg_begin(c, ctx, msg)) != AZ_OK) goto out;
    /* Locks in id order, so two workers claiming overlapping batches (a task published twice)
     * cannot deadlock; the one that comes second finds the task running and skips it. */
    if ((err = az_pg_exec(c, ctx,
                          "UPDATE tasks t SET status = 3, attempt = t.attempt + 1,"
                          " start_time = COALESCE(t.start_time, clock_timestamp()),"
                          " series_start_time = CASE WHEN t.attempt = t.retry_base"
                          "  THEN clock_timestamp() ELSE t.series_start_time END,"
                          " progress = 0, next_attempt_time = NULL, revision = t.revision + 1,"
                          " lease_owner = $3, lease_expires_at = clock_timestamp()"
                          "  + make_interval(secs => $4::bigint / 1000.0)"
                          " FROM (SELECT id FROM tasks WHERE workspace_id = $1 AND id = ANY ($2::uuid[])"
                          "  AND status::integer = 2 ORDER BY id FOR UPDATE) o"
                          " WHERE t.workspace_id = $1 AND t.id = o.id AND t.status::integer = 2"
                          " RETURNING " COLS,
                          4, p, &r, msg)) != AZ_OK)
        goto out;
    int rows = PQntuples(r);
    if (rows == 0) {
        err = az_pg_commit(c, ctx, msg); /* nothing was claimable: the hints were stale */
        goto out;
    }
    v = az_arena_alloc(a, (size_t)rows * sizeof *v);
    char **claimed = az_arena_alloc(a, (size_t)rows * sizeof *claimed);
    char *atts = az_arena_alloc(a, (size_t)rows * 12 + 3);
    if (!v || !claimed || !atts) {
        err = az_fail(msg, AZ_ERR_NOMEM, "out of memory");
        goto out;
    }
    size_t k = 0;
    atts[k++] = '{';
    for (int i = 0; i < rows; i++) {
        if ((err = from_row(r, i, a, &v[got], msg)) != AZ_OK) goto out;
        claimed[got] = v[got]->id;
        k += (size_t)snprintf(atts + k, 13, "%s%d", got ? "," : "", v[got]->attempt);
        got++;
    }
    atts[k++] = '}';
    atts[k] = '\0';
    const char *q[4] = {ctx->workspace_id, uuid_array(a, claimed, got), atts, p[2]};
    if (!q[1]) {
        err = az_fail(msg, AZ_ERR_NOMEM, "out of memory");
        goto out;
    }
    if ((err = az_pg_defer(c, ctx,
                           "INSERT INTO task_attempts (workspace_id, task_id, attempt, status, worker)"
                           " SELECT $1, q.id, q.attempt, 3, $4"
                           " FROM unnest($2::uuid[], $3::integer[]) AS q(id, attempt)",
                           4, q, msg)) != AZ_OK)
        goto out;
    if ((err = emit_tasks(c, ctx, v, got, S_QUEUED, NULL, a, msg)) == AZ_OK)
        err = az_pg_commit(c, ctx, msg);
out:
    PQclear(r);
    if (err == AZ_OK && got) {
        *out = v;
        *n_out = got;
    }
    az_pg_release(c);
    return err;
}

static void usage_params(const Agentz__V1__TokenUsage *u, char b[4][40], const char *p[4])
{
    snprintf(b[0], 40, "%lld", u ? (long long)u->prompt_tokens : 0LL);
    snprintf(b[1], 40, "%lld", u ? (long long)u->completion_tokens : 0LL);
    snprintf(b[2], 40, "%lld", u ? (long long)u->total_tokens : 0LL);
    snprintf(b[3], 40, "%.17g", u ? u->cost_usd : 0.0);
    for (int i = 0; i < 4; i++) p[i] = b[i];
}

az_err az_task_complete(az_pg *pg, const az_ctx *ctx, const char *id, int attempt,
                        const Agentz__V1__TaskOutput *output, const Agentz__V1__TokenUsage *usage,
                        char *run_id, az_task_ready *ready, char *msg)
{
    set_run_id(run_id, "");
    if (!az_text_is_uuid(id)) return not_found(id, msg);
    if (ready && !ready->arena)
        return az_fail(msg, AZ_ERR_INTERNAL, "az_task_complete needs ready->arena");
    size_t ready_n = ready ? ready->n : 0;
    az_arena *tmp = az_arena_new(0);
    if (!tmp) return az_fail(msg, AZ_ERR_NOMEM, "out of memory");
    char *json = NULL;
    az_err err = struct_json(tmp, output ? output->json : NULL, &json, msg);
    if (err != AZ_OK) {
        az_arena_free(tmp);
        return err;
    }
    char att[16], ub[4][40];
    snprintf(att, sizeof att, "%d", attempt);
    const char *p[9] = {ctx->workspace_id, id, att, output ? output->raw : "", json};
    usage_params(usage, ub, p + 5);
    az_pgconn *c;
    if ((err = az_pg_acquire(pg, ctx, &c, msg)) != AZ_OK) {
        az_arena_free(tmp);
        return err;
    }
    PGresult *r = NULL, *next = NULL;
    if ((err = az_pg_begin(c, ctx, msg)) != AZ_OK) goto out;
    if ((err = az_pg_exec(c, ctx,
                          "UPDATE tasks t SET status = 5, output_raw = $4, output_json = $5::jsonb,"
                          " error_type = NULL, error_message = NULL, error_retryable = NULL,"
                          " prompt_tokens = prompt_tokens + $6, completion_tokens = completion_tokens + $7,"
                          " total_tokens = total_tokens + $8, cost_usd = cost_usd + $9,"
                          " progress = 1, end_time = clock_timestamp(), revision = revision + 1"
                          " WHERE t.workspace_id = $1 AND t.id = $2 AND t.status::integer = 3"
                          " AND t.attempt = $3::integer RETURNING " EVCOLS,
                          9, p, &r, msg)) != AZ_OK)
        goto out;
    if (PQntuples(r) == 0) {
        char verb[64];
        snprintf(verb, sizeof verb, "complete attempt %d", attempt);
        err = explain_miss(c, ctx, id, verb, msg);
        goto out;
    }
    set_run_id(run_id, PQgetvalue(r, 0, E_RUN));
    if ((err = close_attempt(c, ctx, id, attempt, S_SUCCEEDED, NULL, usage, msg)) != AZ_OK ||
        (err = queue_dependents(c, ctx, id, NULL, ready, &next, msg)) != AZ_OK ||
        (err = emit_row(c, ctx, r, 0, 0, S_RUNNING, S_SUCCEEDED, msg)) != AZ_OK ||
        (err = emit_rows(c, ctx, next, 0, -1, S_PENDING, S_QUEUED, msg)) != AZ_OK)
        goto out;
    err = az_pg_commit(c, ctx, msg);
out:
    PQclear(r);
    PQclear(next);
    if (err != AZ_OK) {
        set_run_id(run_id, "");
        if (ready) ready->n = ready_n;
    }
    az_pg_release(c);
    az_arena_free(tmp);
    return err;
}

static int64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* running (at attempt) -> backoff or failed: the body of az_task_fail_after and of reaping.
 * The backoff is at least retry_after_ms. reaped: only when the lease has expired (a heartbeat
 * that renewed it meanwhile wins), and a retry due at once goes straight to queued (appended to
 * ready) so the reaper needs no second pass. *final (may be NULL) is 1 when it failed for good. */
static az_err fail_attempt(az_pg *pg, const az_ctx *ctx, const char *id, int attempt,
                           const Agentz__V1__TaskError *error, const Agentz__V1__TokenUsage *usage,
                           int64_t retry_after_ms, int reaped, int64_t *next_attempt_ms,
                           char *run_id, az_task_ready *ready, int *final, char *msg)
{
    if (next_attempt_ms) *next_attempt_ms = 0;
    if (final) *final = 0;
    size_t ready_n = ready ? ready->n : 0;
    set_run_id(run_id, "");
    if (!az_text_is_uuid(id)) return not_found(id, msg);
    static const Agentz__V1__TaskError unknown = {PROTOBUF_C_MESSAGE_INIT(&agentz__v1__task_error__descriptor),
                                                 "unknown", "the attempt failed", 1};
    const Agentz__V1__TaskError *e = error ? error : &unknown;
    az_arena *tmp = az_arena_new(0);
    if (!tmp) return az_fail(msg, AZ_ERR_NOMEM, "out of memory");
    az_pgconn *c;
    az_err err = az_pg_acquire(pg, ctx, &c, msg);
    if (err != AZ_OK) {
        az_arena_free(tmp);
        return err;
    }
    PGresult *r = NULL, *sr = NULL, *down = NULL;
    Agentz__V1__Task *cur;
    if ((err = az_pg_begin(c, ctx, msg)) != AZ_OK) goto out;
    /* Read-then-write: lock the row, decide, then move it conditionally. */
    if ((err = fetch_one(c, ctx, id, 1, tmp, &cur, msg)) != AZ_OK) goto out;
    if (cur->status != S_RUNNING || cur->attempt != attempt) {
        err = az_fail(msg, AZ_ERR_PRECONDITION, "task %s is %s (attempt %d); cannot fail attempt %d",
                      id, status_name(cur->status), cur->attempt, attempt);
        goto out;
    }
    const char *sp[2] = {ctx->workspace_id, id};
    if ((err = az_pg_exec(c, ctx,
                          "SELECT retry_base, (extract(epoch FROM series_start_time) * 1000000)::bigint,"
                          " timeout_us FROM tasks WHERE workspace_id = $1 AND id = $2",
                          2, sp, &sr, msg)) != AZ_OK)
        goto out;
    int series_attempt = attempt - (int)num(sr, 0, 0);
    int64_t series_start = null(sr, 0, 1) ? now_us() : num(sr, 0, 1);
    int64_t timeout = num(sr, 0, 2) > 0 ? num(sr, 0, 2) : DEFAULT_TIMEOUT_US;
    int64_t delay_ms = 0;
    const char *text = e->message;
    int retry = e->retryable && az_task_should_retry(cur->retry_policy, series_attempt, e->type);
    if (retry) {
        delay_ms = az_task_backoff_ms(cur->retry_policy, series_attempt,
                                      (double)arc4random_uniform(1000000) / 1e6);
        /* A provider's Retry-After is a floor: retrying earlier only earns another 429. */
        if (retry_after_ms > delay_ms) delay_ms = retry_after_ms;
        /* Unlimited attempts stop once the next one would start past the timeout, measured
         * from the first attempt of the series. */
        int unlimited = !cur->retry_policy || cur->retry_policy->max_attempts <= 0;
        if (unlimited && now_us() + delay_ms * 1000 - series_start > timeout) {
            retry = 0;
            text = az_arena_printf(tmp, "%s (not retried: the next attempt would start after the "
                                        "task's timeout of %llds)",
                                   e->message, (long long)(timeout / 1000000));
            if (!text) {
                err = az_fail(msg, AZ_ERR_NOMEM, "out of memory");
                goto out;
            }
        }
    }
    char att[16], delay[24], ub[4][40];
    snprintf(att, sizeof att, "%d", attempt);
    snprintf(delay, sizeof delay, "%lld", (long long)delay_ms);
    /* A reaped retry due at once skips backoff: nobody would wake it before the next pass. */
    const char *to = !retry ? "6" : (reaped && delay_ms == 0) ? "2" : "4";
    /* $1..$8 identify the attempt and its outcome; $9..$12 are the usage to add; $13 limits
     * the reaper to leases that really expired (a heartbeat may have renewed it meanwhile). */
    const char *q[13] = {ctx->workspace_id, id, att, to, delay, e->type, text,
                         e->retryable ? "t" : "f"};
    usage_params(usage, ub, q + 8);
    q[12] = reaped ? "t" : "f";
    if ((err = az_pg_exec(c, ctx,
                          "UPDATE tasks t SET status = $4::smallint, error_type = $6,"
                          " error_message = $7, error_retryable = $8::boolean,"
                          " next_attempt_time = CASE WHEN $4::smallint = 4 THEN clock_timestamp()"
                          "  + make_interval(secs => $5::bigint / 1000.0) END,"
                          " end_time = CASE WHEN $4::smallint = 6 THEN clock_timestamp() END,"
                          " queued_at = CASE WHEN $4::smallint = 2 THEN clock_timestamp() ELSE queued_at END,"
                          " published_at = CASE WHEN $4::smallint = 2 THEN clock_timestamp() ELSE published_at END,"
                          " prompt_tokens = prompt_tokens + $9, completion_tokens = completion_tokens + $10,"
                          " total_tokens = total_tokens + $11, cost_usd = cost_usd + $12,"
                          " lease_owner = NULL, lease_expires_at = NULL, revision = revision + 1"
                          " WHERE t.workspace_id = $1 AND t.id = $2 AND t.status::integer = 3"
                          " AND t.attempt = $3::integer"
                          " AND (NOT $13::boolean OR t.lease_expires_at < clock_timestamp())"
                          " RETURNING " EVCOLS,
                          13, q, &r, msg)) != AZ_OK)
        goto out;
    if (PQntuples(r) == 0) {
        err = explain_miss(c, ctx, id, "fail the attempt", msg);
        goto out;
    }
    set_run_id(run_id, PQgetvalue(r, 0, E_RUN));
    Agentz__V1__TaskError closed = *e;
    closed.message = (char *)text;
    if ((err = close_attempt(c, ctx, id, attempt, S_FAILED, &closed, usage, msg)) != AZ_OK) goto out;
    if (!retry && (err = cancel_downstream(c, ctx, id, "dependency_failed", "failed", NULL, &down, msg)) != AZ_OK)
        goto out;
    if ((err = emit_row(c, ctx, r, 0, 0, S_RUNNING, atol(to), msg)) != AZ_OK ||
        (err = emit_rows(c, ctx, down, 0, -1, S_PENDING, S_CANCELLED, msg)) != AZ_OK)
        goto out;
    if (to[0] == '2' && (err = ready_add(ready, NULL, id, msg)) != AZ_OK) goto out;
    if ((err = az_pg_commit(c, ctx, msg)) == AZ_OK) {
        if (next_attempt_ms && retry) *next_attempt_ms = delay_ms > 0 ? delay_ms : 1;
        if (final) *final = !retry;
    }
out:
    PQclear(r);
    PQclear(sr);
    PQclear(down);
    if (err != AZ_OK) {
        set_run_id(run_id, "");
        if (ready) ready->n = ready_n;
    }
    az_pg_release(c);
    az_arena_free(tmp);
    return err;
}

az_err az_task_fail_after(az_pg *pg, const az_ctx *ctx, const char *id, int attempt,
                          const Agentz__V1__TaskError *error, const Agentz__V1__TokenUsage *usage,
                          int64_t retry_after_ms, int64_t *next_attempt_ms, char *run_id,
                          char *msg)
{
    return fail_attempt(pg, ctx, id, attempt, error, usage, retry_after_ms, 0, next_attempt_ms,
                        run_id, NULL, NULL, msg);
}

az_err az_task_fail(az_pg *pg, const az_ctx *ctx, const char *id, int attempt,
                    const Agentz__V1__TaskError *error, const Agentz__V1__TokenUsage *usage,
                    int64_t *next_attempt_ms, char *run_id, char *msg)
{
    return az_task_fail_after(pg, ctx, id, attempt, error, usage, 0, next_attempt_ms, run_id, msg);
}

/* The context of system work (every workspace): the pool sets agentz.system = 'on'. */
static const az_ctx system_ctx = {.workspace_id = "", .principal = "", .request_id = "engine",
                                  .deadline_ms = -1};

az_err az_task_heartbeat(az_pg *pg, const char *worker, int64_t lease_ms, az_arena *a,
                         char ***ids, size_t *n, char *msg)
{
    *ids = NULL;
    *n = 0;
    if (!worker || !*worker) return az_fail(msg, AZ_ERR_INVALID, "worker is required");
    char lease[24];
    snprintf(lease, sizeof lease, "%lld", (long long)(lease_ms > 0 ? lease_ms : AZ_TASK_DEFAULT_LEASE_MS));
    const char *p[2] = {worker, lease};
    az_pgconn *c;
    az_err err = az_pg_acquire(pg, &system_ctx, &c, msg);
    if (err != AZ_OK) return err;
    PGresult *r;
    /* Renews even a lease that expired but was not reaped yet: the worker is evidently alive. */
    err = az_pg_exec(c, &system_ctx,
                     "UPDATE tasks t SET lease_expires_at = clock_timestamp()"
                     " + make_interval(secs => $2::bigint / 1000.0)"
                     " WHERE t.status = 3 AND t.lease_owner = $1 RETURNING t.id::text",
                     2, p, &r, msg);
    az_pg_release(c);
    if (err != AZ_OK) return err;
    int rows = PQntuples(r);
    char **v = az_arena_alloc(a, (size_t)(rows ? rows : 1) * sizeof *v);
    if (!v) err = az_fail(msg, AZ_ERR_NOMEM, "out of memory");
    for (int i = 0; i < rows && err == AZ_OK; i++)
        if (!(v[i] = col(a, r, i, 0))) err = az_fail(msg, AZ_ERR_NOMEM, "out of memory");
    PQclear(r);
    if (err != AZ_OK) return err;
    *ids = v;
    *n = (size_t)rows;
    return AZ_OK;
}

/* Appends s to the arena array *v of *n strings (grown at powers of two, like ready_add). */
static int strs_add(az_arena *a, char ***v, size_t n, const char *s)
{
    if ((n & (n - 1)) == 0) {
        char **nv = az_arena_alloc(a, (n ? 2 * n : 4) * sizeof *nv);
        if (!nv) return -1;
        if (n) memcpy(nv, *v, n * sizeof *nv);
        *v = nv;
    }
    return ((*v)[n] = az_arena_strdup(a, s)) ? 0 : -1;
}

az_err az_task_reap_expired(az_pg *pg, int limit, int *reaped, az_task_ready *ready,
                            char ***ready_ws, az_arena *arena, az_task_reaped **list, char *msg)
{
    if (reaped) *reaped = 0;
    if (list) *list = NULL;
    if ((ready && !ready->arena) || (list && !arena))
        return az_fail(msg, AZ_ERR_INTERNAL, "az_task_reap_expired needs ready->arena and an arena");
    char lim[16];
    snprintf(lim, sizeof lim, "%d", limit > 0 ? limit : 1000);
    const char *p[1] = {lim};
    az_pgconn *c;
    az_err err = az_pg_acquire(pg, &system_ctx, &c, msg);
    if (err != AZ_OK) return err;
    PGresult *r;
    err = az_pg_exec(c, &system_ctx,
                     "SELECT t.workspace_id::text, t.id::text, t.attempt, COALESCE(t.agent_id::text, ''),"
                     " COALESCE(t.lease_owner, '') FROM tasks t WHERE t.status = 3 AND t.lease_expires_at < clock_timestamp()"
                     " ORDER BY t.lease_expires_at LIMIT $1::integer",
                     1, p, &r, msg);
    az_pg_release(c);
    if (err != AZ_OK) return err;
    static const Agentz__V1__TaskError lost = {
        PROTOBUF_C_MESSAGE_INIT(&agentz__v1__task_error__descriptor), "worker_lost",
        "the worker running this attempt stopped renewing its lease (it died, hung or lost its "
        "database connection)", 1};
    az_err first = AZ_OK;
    size_t nl = 0;
    if (list && PQntuples(r) > 0 && !(*list = az_arena_alloc(arena, (size_t)PQntuples(r) * sizeof **list))) {
        PQclear(r);
        return az_fail(msg, AZ_ERR_NOMEM, "out of memory");
    }
    for (int i = 0; i < PQntuples(r); i++) {
        const char *ws = PQgetvalue(r, i, 0), *id = PQgetvalue(r, i, 1);
        az_ctx ctx = {.workspace_id = ws, .principal = "", .request_id = "reaper", .deadline_ms = -1};
        char m[AZ_MSG_MAX], run_id[37];
        size_t before = ready ? ready->n : 0;
        int final = 0;
        /* One transaction per task: one task's trouble does not keep the others running. */
        err = fail_attempt(pg, &ctx, id, (int)num(r, i, 2), &lost, NULL, 0, 1, NULL, run_id, ready,
                           &final, m);
        if (err == AZ_ERR_PRECONDITION) continue; /* renewed, finished or cancelled meanwhile */
        if (err != AZ_OK) {
            if (first == AZ_OK) first = az_fail(msg, err, "cannot reap task %s: %s", id, m);
            continue;
        }
        if (reaped) (*reaped)++;
        if (ready && ready_ws) {
            for (size_t k = before; k < ready->n; k++)
                if (strs_add(ready->arena, ready_ws, k, ws) != 0) {
                    PQclear(r);
                    return az_fail(msg, AZ_ERR_NOMEM, "out of memory");
                }
        }
        if (list) {
            az_task_reaped *e = &(*list)[nl++];
            e->workspace_id = az_arena_strdup(arena, ws);
            e->task_id = az_arena_strdup(arena, id);
            e->run_id = az_arena_strdup(arena, run_id);
            e->agent_id = az_arena_strdup(arena, PQgetvalue(r, i, 3));
            e->worker = az_arena_strdup(arena, PQgetvalue(r, i, 4));
            e->failed = final;
            if (!e->workspace_id || !e->task_id || !e->run_id || !e->agent_id || !e->worker) {
                PQclear(r);
                return az_fail(msg, AZ_ERR_NOMEM, "out of memory");
            }
        }
    }
    PQclear(r);
    return first;
}

az_err az_task_release(az_pg *pg, const az_ctx *ctx, const char *id, int attempt,
                       az_task_ready *ready, char *msg)
{
    if (!az_text_is_uuid(id)) return not_found(id, msg);
    char att[16];
    snprintf(att, sizeof att, "%d", attempt);
    const char *p[3] = {ctx->workspace_id, id, att};
    size_t ready_n = ready ? ready->n : 0;
    az_pgconn *c;
    az_err err = az_pg_acquire(pg, ctx, &c, msg);
    if (err != AZ_OK) return err;
    PGresult *r = NULL;
    if ((err = az_pg_begin(c, ctx, msg)) != AZ_OK) goto out;
    /* retry_base + 1: the handed-back attempt does not count against the retry policy. */
    if ((err = az_pg_exec(c, ctx,
                          "UPDATE tasks t SET status = 2, retry_base = retry_base + 1, progress = 0,"
                          " queued_at = clock_timestamp(), published_at = clock_timestamp(),"
                          " lease_owner = NULL, lease_expires_at = NULL, revision = revision + 1"
                          " WHERE t.workspace_id = $1 AND t.id = $2 AND t.status::integer = 3"
                          " AND t.attempt = $3::integer RETURNING " EVCOLS,
                          3, p, &r, msg)) != AZ_OK)
        goto out;
    if (PQntuples(r) == 0) {
        char verb[64];
        snprintf(verb, sizeof verb, "hand back attempt %d", attempt);
        err = explain_miss(c, ctx, id, verb, msg);
        goto out;
    }
    static const Agentz__V1__TaskError shutdown = {
        PROTOBUF_C_MESSAGE_INIT(&agentz__v1__task_error__descriptor), "worker_shutdown",
        "the worker shut down and handed the task back to the queue", 1};
    if ((err = close_attempt(c, ctx, id, attempt, S_CANCELLED, &shutdown, NULL, msg)) != AZ_OK ||
        (err = emit_row(c, ctx, r, 0, 0, S_RUNNING, S_QUEUED, msg)) != AZ_OK)
        goto out;
    if ((err = ready_add(ready, NULL, id, msg)) != AZ_OK) goto out;
    err = az_pg_commit(c, ctx, msg);
out:
    PQclear(r);
    if (err != AZ_OK && ready) ready->n = ready_n;
    az_pg_release(c);
    return err;
}

az_err az_task_set_progress(az_pg *pg, const az_ctx *ctx, const char *id, int attempt,
                            double progress, char *msg)
{
    if (!az_text_is_uuid(id)) return not_found(id, msg);
    if (!(progress >= 0)) progress = 0; /* also NaN */
    if (progress > 1) progress = 1;
    char att[16], pr[32];
    snprintf(att, sizeof att, "%d", attempt);
    snprintf(pr, sizeof pr, "%.6f", progress);
    const char *p[4] = {ctx->workspace_id, id, att, pr};
    az_pgconn *c;
    az_err err = az_pg_acquire(pg, ctx, &c, msg);
    if (err != AZ_OK) return err;
    /* Stale attempts match nothing: best effort by design. */
    err = az_pg_exec(c, ctx,
                     "UPDATE tasks t SET progress = $4::double precision, revision = revision + 1"
                     " WHERE t.workspace_id = $1 AND t.id = $2 AND t.status::integer = 3"
                     " AND t.attempt = $3::integer AND t.progress <> $4::double precision",
                     4, p, NULL, msg);
    az_pg_release(c);
    return err;
}

const char *az_task_sql_dependents(void)
{
    return SQL_DEPENDENTS;
}

const char *az_task_sql_not_running(void)
{
    /* $1 uuid[] task ids, $2 int[] their attempts (parallel), $3 the worker. The partial index
     * tasks_lease_owner (0006) serves the lookup. */
    return "SELECT q.id::text, q.attempt FROM unnest($1::uuid[], $2::integer[]) AS q(id, attempt)"
           " WHERE NOT EXISTS (SELECT 1 FROM tasks t WHERE t.lease_owner = $3 AND t.id = q.id"
           " AND t.status = 3 AND t.attempt = q.attempt)";
}

az_err az_task_wake(az_pg *pg, const az_ctx *ctx, int limit, az_arena *a, az_task_ready *ready,
                    char *msg)
{
    char lim[16];
    snprintf(lim, sizeof lim, "%d", limit > 0 ? limit : 1000);
    const char *p[2] = {ctx->workspace_id, lim};
    size_t ready_n = ready ? ready->n : 0;
    az_pgconn *c;
    az_err err = az_pg_acquire(pg, ctx, &c, msg);
    if (err != AZ_OK) return err;
    PGresult *r = NULL;
    /* A transaction: the events commit with the change. */
    if ((err = az_pg_begin(c, ctx, msg)) == AZ_OK &&
        (err = az_pg_exec(c, ctx,
                          "UPDATE tasks t SET status = 2, next_attempt_time = NULL,"
                          " queued_at = clock_timestamp(), published_at = clock_timestamp(),"
                          " revision = revision + 1"
                          " WHERE t.workspace_id = $1 AND t.id IN (SELECT id FROM tasks"
                          "  WHERE workspace_id = $1 AND status = 4 AND next_attempt_time <= clock_timestamp()"
                          "  ORDER BY next_attempt_time LIMIT $2::integer FOR UPDATE SKIP LOCKED)"
                          " AND t.status::integer = 4 RETURNING " EVCOLS,
                          2, p, &r, msg)) == AZ_OK &&
        (err = ready_add_rows(ready, a, r, msg)) == AZ_OK &&
        (err = emit_rows(c, ctx, r, 0, -1, S_BACKOFF, S_QUEUED, msg)) == AZ_OK)
        err = az_pg_commit(c, ctx, msg);
    PQclear(r);
    if (err != AZ_OK && ready) ready->n = ready_n;
    az_pg_release(c);
    return err;
}

az_err az_task_stale_queued(az_pg *pg, const az_ctx *ctx, int64_t older_than_ms, int limit,
                            az_arena *a, az_task_ready *ready, char *msg)
{
    char lim[16], older[24];
    snprintf(lim, sizeof lim, "%d", limit > 0 ? limit : 1000);
    snprintf(older, sizeof older, "%lld", (long long)(older_than_ms > 0 ? older_than_ms : 0));
    const char *p[3] = {ctx->workspace_id, lim, older};
    az_pgconn *c;
    az_err err = az_pg_acquire(pg, ctx, &c, msg);
    if (err != AZ_OK) return err;
    PGresult *r;
    err = az_pg_exec(c, ctx,
                     "UPDATE tasks t SET published_at = clock_timestamp()"
                     " WHERE t.workspace_id = $1 AND t.id IN (SELECT id FROM tasks"
                     "  WHERE workspace_id = $1 AND status = 2 AND (published_at IS NULL OR"
                     "  published_at < clock_timestamp() - make_interval(secs => $3::bigint / 1000.0))"
                     "  ORDER BY published_at NULLS FIRST LIMIT $2::integer FOR UPDATE SKIP LOCKED)"
                     " AND t.status::integer = 2 RETURNING t.id::text",
                     3, p, &r, msg);
    az_pg_release(c);
    if (err != AZ_OK) return err;
    err = ready_add_rows(ready, a, r, msg);
    PQclear(r);
    return err;
}

az_err az_task_active_workspaces(az_pg *pg, const az_ctx *ctx, az_arena *a, char ***ids,
                                 size_t *n, char *msg)
{
    *ids = NULL;
    *n = 0;
    az_pgconn *c;
    az_err err = az_pg_acquire(pg, ctx, &c, msg);
    if (err != AZ_OK) return err;
    PGresult *r;
    err = az_pg_exec(c, ctx,
                     "SELECT w.id::text FROM workspaces w WHERE EXISTS (SELECT 1 FROM tasks t"
                     " WHERE t.workspace_id = w.id AND t.status = 2) OR EXISTS (SELECT 1 FROM tasks t"
                     " WHERE t.workspace_id = w.id AND t.status = 4) ORDER BY w.id",
                     0, NULL, &r, msg);
    az_pg_release(c);
    if (err != AZ_OK) return err;
    int rows = PQntuples(r);
    char **v = az_arena_alloc(a, (size_t)(rows ? rows : 1) * sizeof *v);
    if (!v) err = az_fail(msg, AZ_ERR_NOMEM, "out of memory");
    for (int i = 0; i < rows && err == AZ_OK; i++) {
        if (!(v[i] = col(a, r, i, 0))) err = az_fail(msg, AZ_ERR_NOMEM, "out of memory");
    }
    PQclear(r);
    if (err != AZ_OK) return err;
    *ids = v;
    *n = (size_t)rows;
    return AZ_OK;
}

int64_t az_task_etag_revision(const char *etag)
{
    if (!etag || !*etag || strlen(etag) > 18) return -1;
    int64_t v = 0;
    for (const char *s = etag; *s; s++) {
        if (*s < '0' || *s > '9') return -1;
        v = v * 10 + (*s - '0');
    }
    return v > 0 ? v : -1;
}
