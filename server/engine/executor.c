/* The agent executor: one claimed task attempt driven to its outcome on the worker's libuv loop,
 * CrewAI style: prompts from the agent and the task, streamed model calls through az_http,
 * native tool calls on the threadpool, delegation to coworkers as nested agent loops in the same
 * execution, the output guardrail, deadlines, and the outcome written through the task service.
 *
 * Life of an execution: prepare (threadpool: agent, run inputs, sibling tasks, team, secrets,
 * memory, prompts, agent status) -> loop (rpm -> model call -> tools or delegation -> ...) ->
 * conclude (stop timers, drop the call) -> outcome (threadpool: task transition, queue, run,
 * memory, agent status) -> close timers -> done. Tool jobs still running when an execution
 * concludes are left to finish on the threadpool and their results dropped; the memory they use
 * stays alive until they do (az_exec_free waits for them). */
#include "engine/executor.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "agent/agent.h"
#include "agent/rpm.h"
#include "core/log.h"
#include "core/pbjson.h"
#include "core/text.h"
#include "engine/prompt.h"
#include "engine/schema.h"
#include "google/protobuf/struct.pb-c.h"
#include "google/protobuf/timestamp.pb-c.h"
#include "llm/llm.h"
#include "queue/queue.h"
#include "task/task.h"
#include "workflow/run.h"

#define DEFAULT_TASK_TIMEOUT_MS 600000LL /* Task.timeout unset: 10 minutes (docs/tasks.md) */
#define GUARDRAIL_RETRIES 3 /* corrections asked for after a final answer fails output_schema */
#define RECALL_LIMIT 5                   /* memories recalled into a prompt */
#define STANDALONE_TEAM_MAX 50           /* coworkers of a task outside a run */
#define TEAM_MAX 128                     /* coworkers of any task */
#define EVENT_TEXT_MAX (64 * 1024)       /* ToolResult.output in events */
#define PROGRESS_CAP 0.95                /* progress before the outcome is written */

/* ---------------------------------------------------------------- types */

/* An agent taking part in an execution: the task's agent (the lead) or a coworker. */
typedef struct member {
    Agentz__V1__Agent *agent;
    const char *role, *goal, *backstory; /* run inputs filled in */
    char *system;                        /* its system prompt */
    char *api_key;                       /* from llm.api_key_secret (malloc'd, wiped); NULL = none */
    char error[AZ_MSG_MAX];              /* non-empty: it cannot run (its secret is unreadable) */
    const char **tools;                  /* built-in tools it may call; never NULL */
    size_t n_tools;
    json_t *tools_json;     /* owns the parameters llm_tools points to */
    az_llm_tool *llm_tools; /* what the model is offered; the lead's includes delegation */
    size_t n_llm_tools;
} member;

/* One agent loop: the lead's conversation, or a coworker's sub-task nested in it. */
typedef struct arun {
    member *m;
    struct arun *parent;    /* the loop waiting for this coworker's answer */
    az_llm_message *msgs;   /* heap array; contents in the execution's arena */
    size_t n_msgs, cap_msgs;
    int iter;               /* model calls made with tools */
    int max_iter;
    int delegate;           /* offers the delegation tools */
    int force_now;          /* the next call must be the forced final answer */
    int forced;             /* the force-final message was sent: no more tools */
    int guard_tries;        /* final answers that failed the output schema */
    az_llm_tool_call *calls; /* the tool calls of the last response (arena) */
    size_t n_calls, next_call;
} arun;

typedef enum outcome_kind {
    OUT_NONE = 0,
    OUT_SUCCESS,
    OUT_FAIL,
    OUT_LOST,
    OUT_HANDBACK,
} outcome_kind;

struct az_exec {
    const az_engine_env *env;
    az_arena *arena;
    Agentz__V1__Task *task; /* deep copy in arena */
    char ws[40], task_id[40], agent_id[40];
    int attempt;
    az_ctx ctx;
    az_exec_done_fn done;
    void *done_arg;
    int64_t start_ms;

    /* prepared */
    member lead;
    member *team;
    size_t n_team;
    const char **team_roles;
    int hierarchical;
    json_t *schema;
    char *task_prompt;
    json_t *deleg_schema[2];

    /* running */
    arun *top, *cur;
    az_llm_call *call;
    int call_tools; /* the call in flight offered tools */
    az_llm_usage usage;
    int64_t limit_ms;     /* the limit the deadline timer enforces */
    int deadline_is_task; /* 1: the task's timeout, 0: the agent's max_execution_time */
    uv_timer_t deadline_timer, wait_timer;
    int timers_closed;

    /* what prepare found wrong (written on the pool thread, read after it) */
    char prep_type[48];
    char prep_msg[AZ_MSG_MAX];
    int prep_retryable;

    /* lifecycle */
    int preparing, concluding, outcome_queued, done_called, free_requested;
    int agent_started; /* az_agent_task_started succeeded: az_agent_task_ended is owed */
    int jobs; /* threadpool jobs not yet back on the loop */

    /* outcome */
    outcome_kind kind;
    char *answer;
    json_t *answer_json;
    char err_type[48];
    char err_msg[AZ_MSG_MAX * 2];
    int retryable;
    int64_t retry_after_ms;
};

/* A threadpool job; work runs on a pool thread, after on the loop. */
typedef struct job job;
typedef void (*job_fn)(job *j);
struct job {
    uv_work_t req;
    az_exec *ex;
    job_fn work, after;
    /* tool call */
    const char **allowed;
    size_t n_allowed;
    char *name, *args;
    az_tool_result result;
    az_err err;
    /* rpm */
    char agent_id[40];
    int max_rpm;
    int64_t wait_ms;
    /* progress */
    double progress;
};

static void step(az_exec *ex);
static void conclude(az_exec *ex);
static void run_next_tool(az_exec *ex);
static void sub_finished(az_exec *ex, const char *text, int is_error);
static void destroy(az_exec *ex);

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t duration_ms(const Google__Protobuf__Duration *d)
{
    return d ? (int64_t)d->seconds * 1000 + d->nanos / 1000000 : 0;
}

static int blank(const char *s)
{
    if (!s) return 1;
    for (; *s; s++) {
        if (*s != ' ' && *s != '\n' && *s != '\t' && *s != '\r') return 0;
    }
    return 1;
}

/* ---------------------------------------------------------------- outcome setters */

static void set_fail(az_exec *ex, const char *type, int retryable, int64_t retry_after_ms,
                     const char *fmt, ...) __attribute__((format(printf, 5, 6)));
static void set_fail(az_exec *ex, const char *type, int retryable, int64_t retry_after_ms,
                     const char *fmt, ...)
{
    if (ex->kind != OUT_NONE) return;
    ex->kind = OUT_FAIL;
    snprintf(ex->err_type, sizeof ex->err_type, "%s", type);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(ex->err_msg, sizeof ex->err_msg, fmt, ap);
    va_end(ap);
    ex->retryable = retryable;
    ex->retry_after_ms = retry_after_ms;
}

static void fail_now(az_exec *ex, const char *type, int retryable, const char *message)
{
    set_fail(ex, type, retryable, 0, "%s", message);
    conclude(ex);
}

static void fail_oom(az_exec *ex)
{
    fail_now(ex, "internal", 1, "the worker ran out of memory");
}

/* ---------------------------------------------------------------- events */

static void emit(az_exec *ex, const char *agent_id, Agentz__V1__Event *ev)
{
    if (!ex->env->on_event) return;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    Google__Protobuf__Timestamp t = GOOGLE__PROTOBUF__TIMESTAMP__INIT;
    t.seconds = ts.tv_sec;
    t.nanos = (int32_t)ts.tv_nsec;
    ev->time = &t;
    ev->run_id = ex->task->run_id;
    ev->task_id = ex->task_id;
    ev->agent_id = (char *)(agent_id ? agent_id : ex->agent_id);
    ev->step_id = ex->task->step_id;
    ex->env->on_event(ex->env->event_arg, ex->ws, ev);
}

static void emit_tool_call(az_exec *ex, const az_llm_tool_call *c)
{
    Agentz__V1__ToolCall tc = AGENTZ__V1__TOOL_CALL__INIT;
    tc.call_id = c->id ? c->id : "";
    tc.tool = c->name ? c->name : "";
    tc.arguments_json = c->arguments ? c->arguments : "{}";
    Agentz__V1__Event ev = AGENTZ__V1__EVENT__INIT;
    ev.payload_case = AGENTZ__V1__EVENT__PAYLOAD_TOOL_CALL;
    ev.tool_call = &tc;
    emit(ex, ex->cur->m->agent->id, &ev);
}

static void emit_tool_result(az_exec *ex, const char *call_id, const char *text, int is_error)
{
    if (!ex->env->on_event) return;
    size_t len = strlen(text);
    char *cut = NULL;
    if (len > EVENT_TEXT_MAX) {
        size_t n = EVENT_TEXT_MAX;
        while (n > 0 && ((unsigned char)text[n] & 0xC0) == 0x80) n--;
        cut = az_arena_strndup(ex->arena, text, n);
    }
    Agentz__V1__ToolResult tr = AGENTZ__V1__TOOL_RESULT__INIT;
    tr.call_id = (char *)(call_id ? call_id : "");
    tr.output = cut ? cut : (char *)text;
    tr.is_error = is_error;
    Agentz__V1__Event ev = AGENTZ__V1__EVENT__INIT;
    ev.payload_case = AGENTZ__V1__EVENT__PAYLOAD_TOOL_RESULT;
    ev.tool_result = &tr;
    emit(ex, ex->cur->m->agent->id, &ev);
}

static int on_text(void *arg, const char *delta, size_t len)
{
    az_exec *ex = arg;
    if (!ex->env->on_event || len == 0) return 0;
    char *text = malloc(len + 1);
    if (!text) return 0; /* an event lost to memory pressure is not worth failing the task */
    memcpy(text, delta, len);
    text[len] = '\0';
    Agentz__V1__TokenDelta td = AGENTZ__V1__TOKEN_DELTA__INIT;
    td.text = text;
    td.attempt = ex->attempt;
    Agentz__V1__Event ev = AGENTZ__V1__EVENT__INIT;
    ev.payload_case = AGENTZ__V1__EVENT__PAYLOAD_TOKEN;
    ev.token = &td;
    emit(ex, ex->cur->m->agent->id, &ev);
    free(text);
    return 0;
}

/* Who holds the agent while this execution runs (az_agent_task_started): the worker, whose id
 * the reaper finds on the task's lease if the worker dies. */
static const char *holder_of(const az_engine_env *env)
{
    return env->worker_id && *env->worker_id ? env->worker_id : "executor";
}

/* ---------------------------------------------------------------- threadpool jobs */

static void job_work(uv_work_t *req)
{
    job *j = req->data;
    j->work(j);
}

static void job_after(uv_work_t *req, int status)
{
    (void)status;
    job *j = req->data;
    az_exec *ex = j->ex;
    ex->jobs--;
    if (j->after) j->after(j);
    az_tools_result_free(&j->result);
    free(j->name);
    free(j->args);
    free(j);
    if (ex->free_requested && ex->jobs == 0) destroy(ex);
}

/* Queues j (calloc'd by the caller); on failure j is freed and AZ_ERR_INTERNAL returned. */
static az_err queue_job(az_exec *ex, job *j, job_fn work, job_fn after)
{
    j->ex = ex;
    j->work = work;
    j->after = after;
    j->req.data = j;
    if (uv_queue_work(ex->env->loop, &j->req, job_work, job_after) != 0) {
        az_tools_result_free(&j->result);
        free(j->name);
        free(j->args);
        free(j);
        return AZ_ERR_INTERNAL;
    }
    ex->jobs++;
    return AZ_OK;
}

/* ---------------------------------------------------------------- conversation */

static int push_msg(arun *r, az_llm_role role, const char *content)
{
    if (r->n_msgs == r->cap_msgs) {
        size_t cap = r->cap_msgs ? r->cap_msgs * 2 : 16;
        az_llm_message *m = realloc(r->msgs, cap * sizeof *m);
        if (!m) return -1;
        r->msgs = m;
        r->cap_msgs = cap;
    }
    az_llm_message *m = &r->msgs[r->n_msgs++];
    memset(m, 0, sizeof *m);
    m->role = role;
    m->content = content;
    return 0;
}

static arun *arun_new(member *m, arun *parent, int delegate, const char *user)
{
    arun *r = calloc(1, sizeof *r);
    if (!r) return NULL;
    r->m = m;
    r->parent = parent;
    r->delegate = delegate;
    r->max_iter = m->agent->max_iter > 0 ? m->agent->max_iter : AZ_AGENT_DEFAULT_MAX_ITER;
    if (push_msg(r, AZ_LLM_SYSTEM, m->system) || push_msg(r, AZ_LLM_USER, user)) {
        free(r->msgs);
        free(r);
        return NULL;
    }
    return r;
}

static void arun_free(arun *r)
{
    if (!r) return;
    free(r->msgs);
    free(r);
}

/* The conversation without tool traffic, for the forced final call made without tools (some
 * providers refuse tool calls and results in a request that offers no tools): assistant tool
 * calls and tool results become plain text. *out is a heap array the caller frees. */
static int flatten(az_exec *ex, const arun *r, az_llm_message **out, size_t *n)
{
    az_llm_message *v = calloc(r->n_msgs ? r->n_msgs : 1, sizeof *v);
    if (!v) return -1;
    size_t k = 0;
    for (size_t i = 0; i < r->n_msgs; i++) {
        const az_llm_message *m = &r->msgs[i];
        if (m->role == AZ_LLM_ASSISTANT && m->n_tool_calls) {
            char *s = az_arena_strdup(ex->arena, m->content ? m->content : "");
            for (size_t c = 0; s && c < m->n_tool_calls; c++)
                s = az_arena_printf(ex->arena, "%s%sI used the tool %s with input %s.", s,
                                    *s ? "\n" : "", m->tool_calls[c].name,
                                    m->tool_calls[c].arguments);
            if (!s) goto oom;
            v[k++] = (az_llm_message){.role = AZ_LLM_ASSISTANT, .content = s};
        } else if (m->role == AZ_LLM_TOOL) {
            char *s = az_arena_printf(ex->arena, "Observation: %s", m->content ? m->content : "");
            if (!s) goto oom;
            v[k++] = (az_llm_message){.role = AZ_LLM_USER, .content = s};
        } else {
            v[k++] = *m;
        }
    }
    *out = v;
    *n = k;
    return 0;
oom:
    free(v);
    return -1;
}

/* ---------------------------------------------------------------- model calls */

static void on_call_done(void *arg, CURL *easy, CURLcode code);

static void add_usage(az_exec *ex, const az_llm_usage *u)
{
    ex->usage.prompt_tokens += u->prompt_tokens;
    ex->usage.completion_tokens += u->completion_tokens;
    ex->usage.total_tokens += u->total_tokens;
    ex->usage.cost_usd += u->cost_usd;
}

static void start_call(az_exec *ex)
{
    arun *r = ex->cur;
    member *m = r->m;
    const Agentz__V1__LlmConfig *llm = m->agent->llm;
    if (r->force_now || (m->n_llm_tools && r->iter >= r->max_iter)) {
        if (!r->forced) {
            /* CrewAI: after max_iter, ask for the best final answer with no tools offered. */
            if (push_msg(r, AZ_LLM_USER, AZ_PROMPT_FORCE_FINAL) != 0) {
                fail_oom(ex);
                return;
            }
            r->forced = 1;
        }
    }
    int with_tools = !r->forced && m->n_llm_tools > 0;
    az_llm_message *flat = NULL;
    size_t n_flat = 0;
    if (!with_tools && flatten(ex, r, &flat, &n_flat) != 0) {
        fail_oom(ex);
        return;
    }

    az_llm_request req = {0};
    req.provider = llm ? llm->provider : NULL;
    req.base_url = llm ? llm->base_url : NULL;
    req.model = llm ? llm->model : NULL;
    req.api_key = m->api_key;
    req.messages = with_tools ? r->msgs : flat;
    req.n_messages = with_tools ? r->n_msgs : n_flat;
    req.tools = with_tools ? m->llm_tools : NULL;
    req.n_tools = with_tools ? m->n_llm_tools : 0;
    if (llm && llm->temperature) {
        req.has_temperature = 1;
        req.temperature = llm->temperature->value;
    }
    req.max_tokens = llm ? llm->max_tokens : 0;
    req.timeout_ms = llm ? (long)duration_ms(llm->timeout) : 0;
    req.prices = ex->env->prices;
    req.guard = ex->env->guard; /* always: base URLs come from agent definitions */
    /* The callbacks must outlive the call: static. */
    static const az_llm_callbacks cb = {.on_text = on_text};
    char msg[AZ_MSG_MAX];
    az_llm_call *call = NULL;
    az_err err = az_llm_call_new(&req, &cb, ex, &call, msg);
    free(flat);
    if (err != AZ_OK) {
        /* Nothing was sent; none of these improves by retrying. */
        const char *type = err == AZ_ERR_PRECONDITION ? "llm_not_configured"
                           : err == AZ_ERR_INVALID    ? "llm_bad_request"
                                                      : "internal";
        if (r->parent && err != AZ_ERR_NOMEM) {
            /* A coworker that cannot be called is the manager's problem to route around. */
            char *obs = az_arena_printf(ex->arena, "Error executing task with agent '%s'. Error: %s",
                                        m->role, msg);
            if (!obs) {
                fail_oom(ex);
                return;
            }
            sub_finished(ex, obs, 1);
            return;
        }
        set_fail(ex, type, err == AZ_ERR_NOMEM, 0, "agent %s: %s", m->agent->id, msg);
        conclude(ex);
        return;
    }
    ex->call = call;
    ex->call_tools = with_tools;
    if ((err = az_http_add(ex->env->http, az_llm_call_easy(call), on_call_done, ex, msg)) != AZ_OK) {
        ex->call = NULL;
        az_llm_call_free(call);
        set_fail(ex, "internal", 1, 0, "cannot start the model call: %s", msg);
        conclude(ex);
        return;
    }
}

static void on_wait_timer(uv_timer_t *t)
{
    az_exec *ex = t->data;
    if (!ex->concluding) step(ex);
}

static void rpm_work(job *j)
{
    char msg[AZ_MSG_MAX];
    az_err err = az_rpm_acquire(j->ex->env->redis, j->ex->ws, j->agent_id, j->max_rpm, &j->wait_ms, msg);
    if (err != AZ_OK) {
        /* Redis down: the limit cannot be checked; let the call go rather than stall the task. */
        az_warn("max_rpm check failed for agent %s, calling anyway: %s", j->agent_id, msg);
        j->wait_ms = 0;
    }
}

static void rpm_after(job *j)
{
    az_exec *ex = j->ex;
    if (ex->concluding) return;
    if (j->wait_ms > 0) {
        /* Over budget: ask again when the bucket says a call fits (it is not counted yet). */
        uv_timer_start(&ex->wait_timer, on_wait_timer, (uint64_t)j->wait_ms, 0);
        return;
    }
    start_call(ex);
}

/* The next model call of the current loop, after max_rpm allows it. */
static void step(az_exec *ex)
{
    if (ex->concluding) return;
    member *m = ex->cur->m;
    if (m->agent->max_rpm <= 0) {
        start_call(ex);
        return;
    }
    job *j = calloc(1, sizeof *j);
    if (!j) {
        fail_oom(ex);
        return;
    }
    snprintf(j->agent_id, sizeof j->agent_id, "%s", m->agent->id);
    j->max_rpm = m->agent->max_rpm;
    if (queue_job(ex, j, rpm_work, rpm_after) != AZ_OK) start_call(ex);
}

/* ---------------------------------------------------------------- tool calls and delegation */

/* Appends the observation for the current tool call of r and moves to the next one. */
static int add_observation(az_exec *ex, arun *r, const char *text, int is_error)
{
    const az_llm_tool_call *c = &r->calls[r->next_call];
    char *copy = az_arena_strdup(ex->arena, text ? text : "");
    if (!copy || push_msg(r, AZ_LLM_TOOL, copy) != 0) return -1;
    r->msgs[r->n_msgs - 1].tool_call_id = c->id;
    r->msgs[r->n_msgs - 1].is_error = is_error;
    emit_tool_result(ex, c->id, copy, is_error);
    r->next_call++;
    return 0;
}

static void tool_work(job *j)
{
    char msg[AZ_MSG_MAX];
    j->err = az_tools_call_as(j->ex->env->tools, j->allowed, j->n_allowed, j->name, j->args,
                              &j->result, msg);
    if (j->err != AZ_OK) az_warn("tool %s failed: %s", j->name, msg);
}

static void tool_after(job *j)
{
    az_exec *ex = j->ex;
    if (ex->concluding) return; /* the execution ended meanwhile: drop the result */
    const char *text = j->result.text ? j->result.text : "error: the tool failed";
    int is_error = j->result.is_error || j->err != AZ_OK || !j->result.text;
    if (add_observation(ex, ex->cur, text, is_error) != 0) {
        fail_oom(ex);
        return;
    }
    run_next_tool(ex);
}

/* The coworker's sub-task (CrewAI's agent tools): a nested loop with the coworker's own model,
 * tools, key and max_rpm; its final answer becomes the observation. Coworkers do not delegate. */
static void delegate(az_exec *ex, arun *r, const az_llm_tool_call *c, int ask)
{
    char msg[AZ_MSG_MAX];
    az_prompt_delegation d;
    if (az_prompt_delegation_args(ask, c->arguments, ex->arena, &d, msg) != AZ_OK) {
        char *obs = az_arena_printf(ex->arena, "error: %s", msg);
        if (!obs || add_observation(ex, r, obs, 1) != 0) {
            fail_oom(ex);
            return;
        }
        run_next_tool(ex);
        return;
    }
    int i = az_prompt_match_role(d.coworker, ex->team_roles, ex->n_team);
    if (i < 0) {
        char *obs = az_prompt_unknown_coworker(d.coworker, ex->team_roles, ex->n_team, ex->arena);
        if (!obs || add_observation(ex, r, obs, 1) != 0) {
            fail_oom(ex);
            return;
        }
        run_next_tool(ex);
        return;
    }
    member *cw = &ex->team[i];
    if (cw->error[0]) {
        char *obs = az_arena_printf(ex->arena, "Error executing task with agent '%s'. Error: %s",
                                    cw->role, cw->error);
        if (!obs || add_observation(ex, r, obs, 1) != 0) {
            fail_oom(ex);
            return;
        }
        run_next_tool(ex);
        return;
    }
    const char *ctx[1] = {d.context};
    az_prompt_task t = {.description = d.task,
                        .expected_output = AZ_PROMPT_MANAGER_REQUEST,
                        .context = ctx,
                        .n_context = *d.context ? 1 : 0};
    char *user = az_prompt_task_text(&t, ex->arena);
    arun *sub = user ? arun_new(cw, r, 0, user) : NULL;
    if (!sub) {
        fail_oom(ex);
        return;
    }
    ex->cur = sub;
    step(ex);
}

/* The coworker loop ex->cur ended with text: back to the loop that delegated. */
static void sub_finished(az_exec *ex, const char *text, int is_error)
{
    arun *sub = ex->cur, *parent = sub->parent;
    ex->cur = parent;
    arun_free(sub);
    if (add_observation(ex, parent, text, is_error) != 0) {
        fail_oom(ex);
        return;
    }
    run_next_tool(ex);
}

static void progress_work(job *j)
{
    char msg[AZ_MSG_MAX];
    if (az_task_set_progress(j->ex->env->pg, &j->ex->ctx, j->ex->task_id, j->ex->attempt,
                             j->progress, msg) != AZ_OK)
        az_warn("cannot record progress of task %s: %s", j->ex->task_id, msg);
}

/* After each iteration of the lead: progress in the task row (best effort) and as an event. */
static void report_progress(az_exec *ex, const char *what)
{
    arun *r = ex->top;
    double p = r->max_iter > 0 ? (double)r->iter / (double)r->max_iter : 0;
    if (p > PROGRESS_CAP) p = PROGRESS_CAP;
    job *j = calloc(1, sizeof *j);
    if (j) {
        j->progress = p;
        queue_job(ex, j, progress_work, NULL);
    }
    char text[160];
    snprintf(text, sizeof text, "iteration %d of %d: %s", r->iter, r->max_iter, what);
    Agentz__V1__Progress pr = AGENTZ__V1__PROGRESS__INIT;
    pr.fraction = p;
    pr.message = text;
    Agentz__V1__Event ev = AGENTZ__V1__EVENT__INIT;
    ev.payload_case = AGENTZ__V1__EVENT__PAYLOAD_PROGRESS;
    ev.progress = &pr;
    emit(ex, ex->agent_id, &ev);
}

/* Runs the tool calls of the current loop's last response one after the other, then asks the
 * model again. */
static void run_next_tool(az_exec *ex)
{
    if (ex->concluding) return;
    arun *r = ex->cur;
    if (r->next_call >= r->n_calls) {
        if (r == ex->top) report_progress(ex, r->n_calls == 1 ? r->calls[0].name : "tools");
        step(ex);
        return;
    }
    const az_llm_tool_call *c = &r->calls[r->next_call];
    emit_tool_call(ex, c);
    int ask = strcmp(c->name, AZ_PROMPT_ASK_TOOL) == 0;
    if (r->delegate && (ask || strcmp(c->name, AZ_PROMPT_DELEGATE_TOOL) == 0)) {
        delegate(ex, r, c, ask);
        return;
    }
    job *j = calloc(1, sizeof *j);
    if (!j) {
        fail_oom(ex);
        return;
    }
    j->allowed = r->m->tools;
    j->n_allowed = r->m->n_tools;
    j->name = strdup(c->name);
    j->args = strdup(c->arguments ? c->arguments : "{}");
    if (!j->name || !j->args) {
        free(j->name);
        free(j->args);
        free(j);
        fail_oom(ex);
        return;
    }
    if (queue_job(ex, j, tool_work, tool_after) != AZ_OK) {
        set_fail(ex, "internal", 1, 0, "cannot queue the tool call %s", c->name);
        conclude(ex);
    }
}

/* ---------------------------------------------------------------- final answers */

/* The lead's final answer: checked against output_schema when the task has one. */
static void lead_answer(az_exec *ex, const char *text)
{
    arun *r = ex->top;
    if (!ex->schema) {
        ex->answer = az_arena_strdup(ex->arena, text);
        if (!ex->answer) {
            fail_oom(ex);
            return;
        }
        ex->kind = OUT_SUCCESS;
        conclude(ex);
        return;
    }
    char msg[AZ_MSG_MAX];
    json_t *v = az_schema_extract_json(text, msg);
    if (v && az_schema_validate(ex->schema, v, msg) == AZ_OK) {
        ex->answer = az_arena_strdup(ex->arena, text);
        if (!ex->answer) {
            json_decref(v);
            fail_oom(ex);
            return;
        }
        ex->answer_json = v;
        ex->kind = OUT_SUCCESS;
        conclude(ex);
        return;
    }
    json_decref(v);
    if (++r->guard_tries > GUARDRAIL_RETRIES) {
        set_fail(ex, "output_schema_mismatch", 0, 0,
                 "the final answer still did not match the task's output_schema after %d "
                 "corrections: %s",
                 GUARDRAIL_RETRIES, msg);
        conclude(ex);
        return;
    }
    char *answer = az_arena_strdup(ex->arena, text);
    char *retry = az_prompt_guardrail_retry(msg, ex->arena);
    if (!answer || !retry || push_msg(r, AZ_LLM_ASSISTANT, answer) || push_msg(r, AZ_LLM_USER, retry)) {
        fail_oom(ex);
        return;
    }
    step(ex);
}

/* A model response without tool calls (or with calls we did not offer tools for). */
static void handle_answer(az_exec *ex, const char *text)
{
    arun *r = ex->cur;
    if (blank(text)) {
        if (!r->forced) {
            r->force_now = 1;
            step(ex);
            return;
        }
        if (r->parent) {
            char *obs = az_arena_printf(ex->arena, "Error executing task with agent '%s'. Error: "
                                                   "it gave no final answer after %d iterations",
                                        r->m->role, r->max_iter);
            if (!obs) {
                fail_oom(ex);
                return;
            }
            sub_finished(ex, obs, 1);
            return;
        }
        set_fail(ex, "max_iter_exceeded", 0, 0,
                 "agent %s gave no final answer within max_iter (%d) iterations, even when asked "
                 "for its best final answer",
                 r->m->agent->id, r->max_iter);
        conclude(ex);
        return;
    }
    if (r->parent) {
        sub_finished(ex, text, 0);
        return;
    }
    lead_answer(ex, text);
}

static void handle_response(az_exec *ex, az_llm_result *res, int offered_tools)
{
    arun *r = ex->cur;
    if (offered_tools) r->iter++;
    if (!offered_tools || res->n_tool_calls == 0) {
        handle_answer(ex, res->text);
        return;
    }
    az_llm_tool_call *calls = az_arena_alloc(ex->arena, res->n_tool_calls * sizeof *calls);
    if (!calls) {
        fail_oom(ex);
        return;
    }
    for (size_t i = 0; i < res->n_tool_calls; i++) {
        const az_llm_tool_call *c = &res->tool_calls[i];
        calls[i].id = c->id && *c->id ? az_arena_strdup(ex->arena, c->id)
                                       : az_arena_printf(ex->arena, "call_%d_%zu", r->iter, i);
        calls[i].name = az_arena_strdup(ex->arena, c->name ? c->name : "");
        calls[i].arguments = az_arena_strdup(ex->arena, c->arguments ? c->arguments : "{}");
        if (!calls[i].id || !calls[i].name || !calls[i].arguments) {
            fail_oom(ex);
            return;
        }
    }
    char *text = res->text_len ? az_arena_strdup(ex->arena, res->text) : NULL;
    if ((res->text_len && !text) || push_msg(r, AZ_LLM_ASSISTANT, text) != 0) {
        fail_oom(ex);
        return;
    }
    r->msgs[r->n_msgs - 1].tool_calls = calls;
    r->msgs[r->n_msgs - 1].n_tool_calls = res->n_tool_calls;
    r->calls = calls;
    r->n_calls = res->n_tool_calls;
    r->next_call = 0;
    run_next_tool(ex);
}

static void on_call_done(void *arg, CURL *easy, CURLcode code)
{
    (void)easy;
    az_exec *ex = arg;
    az_llm_result res;
    az_err err = az_llm_call_finish(ex->call, code, &res);
    az_llm_call_free(ex->call);
    ex->call = NULL;
    add_usage(ex, &res.usage);
    if (ex->concluding) {
        az_llm_result_free(&res);
        return;
    }
    if (err == AZ_OK) {
        handle_response(ex, &res, ex->call_tools);
    } else if (ex->cur->parent && !res.error.retryable) {
        /* A coworker's model refused for good: the manager hears why and may ask someone else.
         * Retryable errors (outages, rate limits) fail the task so the retry policy applies. */
        char *obs = az_arena_printf(ex->arena, "Error executing task with agent '%s'. Error: %s",
                                    ex->cur->m->role, res.error.message);
        if (obs) sub_finished(ex, obs, 1);
        else fail_oom(ex);
    } else {
        set_fail(ex, res.error.type[0] ? res.error.type : "llm_provider_error", res.error.retryable,
                 res.error.retry_after_ms, "%s", res.error.message);
        conclude(ex);
    }
    az_llm_result_free(&res);
}

/* ---------------------------------------------------------------- deadline */

static void on_deadline(uv_timer_t *t)
{
    az_exec *ex = t->data;
    if (ex->concluding) return;
    if (ex->deadline_is_task)
        set_fail(ex, "task_timeout", 0, 0, "the attempt used up the task's timeout of %.3gs",
                 (double)ex->limit_ms / 1000.0);
    else
        set_fail(ex, "timeout", 1, 0, "the agent's max_execution_time of %.3gs was exceeded",
                 (double)ex->limit_ms / 1000.0);
    conclude(ex);
}

/* ---------------------------------------------------------------- outcome */

static void on_timer_closed(uv_handle_t *h)
{
    az_exec *ex = h->data;
    if (++ex->timers_closed < 2) return;
    ex->done_called = 1;
    ex->done(ex->done_arg, ex);
}

static void close_and_finish(az_exec *ex)
{
    uv_close((uv_handle_t *)&ex->deadline_timer, on_timer_closed);
    uv_close((uv_handle_t *)&ex->wait_timer, on_timer_closed);
}

static void log_db(az_exec *ex, const char *what, const char *msg)
{
    az_error("cannot %s of task %s (attempt %d): %s", what, ex->task_id, ex->attempt, msg);
}

/* A transition refused because the attempt is stale (cancelled or reaped while it ran) is the
 * expected end of a race, not a fault. */
static void log_transition(az_exec *ex, az_err err, const char *what, const char *msg)
{
    if (err == AZ_ERR_PRECONDITION)
        az_info("task %s attempt %d is no longer running here; %s not recorded: %s", ex->task_id,
                ex->attempt, what, msg);
    else
        log_db(ex, what, msg);
}

static void publish(az_exec *ex, const az_task_ready *ready)
{
    char msg[AZ_MSG_MAX];
    if (ready->n && az_queue_publish(ex->env->redis, ex->ws, ready, msg) != AZ_OK)
        az_warn("cannot publish %zu ready tasks after task %s (the reconciler will): %s", ready->n,
                ex->task_id, msg);
}

static void sync_run(az_exec *ex, const char *run_id)
{
    char msg[AZ_MSG_MAX];
    if (run_id && *run_id && az_run_sync(ex->env->pg, &ex->ctx, run_id, msg) != AZ_OK)
        log_db(ex, "refresh the run", msg);
}

static void write_success(az_exec *ex, char *msg)
{
    Agentz__V1__TaskOutput out = AGENTZ__V1__TASK_OUTPUT__INIT;
    out.raw = ex->answer;
    if (ex->answer_json && json_is_object(ex->answer_json)) {
        /* TaskOutput.json is a Struct: only an object fits; other values stay in raw. */
        char *text = json_dumps(ex->answer_json, JSON_COMPACT);
        ProtobufCMessage *m = NULL;
        if (text && az_pbjson_decode(&google__protobuf__struct__descriptor, text, strlen(text),
                                     az_arena_allocator(ex->arena), &m, msg) == AZ_OK)
            out.json = (Google__Protobuf__Struct *)m;
        else
            az_warn("cannot convert the output of task %s to a Struct: %s", ex->task_id,
                    text ? msg : "out of memory");
        free(text);
    }
    Agentz__V1__TokenUsage usage = AGENTZ__V1__TOKEN_USAGE__INIT;
    usage.prompt_tokens = ex->usage.prompt_tokens;
    usage.completion_tokens = ex->usage.completion_tokens;
    usage.total_tokens = ex->usage.total_tokens;
    usage.cost_usd = ex->usage.cost_usd;
    az_task_ready ready = {.arena = ex->arena};
    char run_id[40] = "";
    az_err err = az_task_complete(ex->env->pg, &ex->ctx, ex->task_id, ex->attempt, &out, &usage,
                                  run_id, &ready, msg);
    if (err != AZ_OK) {
        log_transition(ex, err, "the success", msg);
        return;
    }
    publish(ex, &ready);
    sync_run(ex, run_id);
    if (ex->lead.agent && ex->lead.agent->memory &&
        az_memory_add(ex->env->pg, &ex->ctx, ex->env->memory, ex->agent_id, ex->task_id,
                      ex->task->run_id, ex->task->description, ex->answer, msg) != AZ_OK)
        log_db(ex, "store the agent's memory", msg);
}

/* Returns 1 when the task failed for good (the agent's status then shows the error). */
static int write_failure(az_exec *ex, char *msg)
{
    Agentz__V1__TaskError e = AGENTZ__V1__TASK_ERROR__INIT;
    e.type = ex->err_type;
    e.message = ex->err_msg;
    e.retryable = ex->retryable;
    Agentz__V1__TokenUsage usage = AGENTZ__V1__TOKEN_USAGE__INIT;
    usage.prompt_tokens = ex->usage.prompt_tokens;
    usage.completion_tokens = ex->usage.completion_tokens;
    usage.total_tokens = ex->usage.total_tokens;
    usage.cost_usd = ex->usage.cost_usd;
    int64_t next_ms = 0;
    char run_id[40] = "";
    az_err err = az_task_fail_after(ex->env->pg, &ex->ctx, ex->task_id, ex->attempt, &e, &usage,
                                    ex->retry_after_ms, &next_ms, run_id, msg);
    if (err != AZ_OK) {
        log_transition(ex, err, "the failure", msg);
        return 0;
    }
    az_info("task %s attempt %d failed (%s)%s: %s", ex->task_id, ex->attempt, ex->err_type,
            next_ms ? ", will be retried" : "", ex->err_msg);
    sync_run(ex, run_id);
    return next_ms == 0;
}

static void outcome_work(job *j)
{
    az_exec *ex = j->ex;
    char msg[AZ_MSG_MAX];
    int failed = 0;
    switch (ex->kind) {
    case OUT_SUCCESS:
        write_success(ex, msg);
        break;
    case OUT_FAIL:
        failed = write_failure(ex, msg);
        break;
    case OUT_HANDBACK: {
        az_task_ready ready = {.arena = ex->arena};
        az_err err = az_task_release(ex->env->pg, &ex->ctx, ex->task_id, ex->attempt, &ready, msg);
        if (err != AZ_OK)
            log_transition(ex, err, "the hand-back", msg);
        else
            publish(ex, &ready);
        break;
    }
    case OUT_LOST:
    case OUT_NONE:
        break;
    }
    if (ex->agent_started &&
        az_agent_task_ended(ex->env->pg, &ex->ctx, ex->agent_id, holder_of(ex->env), failed, msg) != AZ_OK)
        log_db(ex, "update the agent's status", msg);
}

static void outcome_after(job *j)
{
    close_and_finish(j->ex);
}

static void maybe_write_outcome(az_exec *ex)
{
    if (!ex->concluding || ex->preparing || ex->outcome_queued) return;
    ex->outcome_queued = 1;
    job *j = calloc(1, sizeof *j);
    if (!j || queue_job(ex, j, outcome_work, outcome_after) != AZ_OK) {
        az_error("cannot queue the outcome of task %s: the lease will expire and it runs again",
                 ex->task_id);
        close_and_finish(ex);
    }
}

/* Ends the loop (outcome already chosen): stops timers and the model call, then writes the
 * outcome once nothing else touches the execution's state. */
static void conclude(az_exec *ex)
{
    if (ex->concluding) return;
    ex->concluding = 1;
    if (ex->kind == OUT_NONE) set_fail(ex, "internal", 1, 0, "the execution ended without outcome");
    uv_timer_stop(&ex->deadline_timer);
    uv_timer_stop(&ex->wait_timer);
    if (ex->call) {
        az_http_remove(ex->env->http, az_llm_call_easy(ex->call));
        az_llm_result res;
        az_llm_call_finish(ex->call, CURLE_ABORTED_BY_CALLBACK, &res);
        add_usage(ex, &res.usage); /* what the aborted call reported so far still counts */
        az_llm_result_free(&res);
        az_llm_call_free(ex->call);
        ex->call = NULL;
    }
    maybe_write_outcome(ex);
}

/* ---------------------------------------------------------------- prepare (threadpool) */

static az_err prep_fail(az_exec *ex, const char *type, int retryable, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static az_err prep_fail(az_exec *ex, const char *type, int retryable, const char *fmt, ...)
{
    snprintf(ex->prep_type, sizeof ex->prep_type, "%s", type);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(ex->prep_msg, sizeof ex->prep_msg, fmt, ap);
    va_end(ap);
    ex->prep_retryable = retryable;
    return AZ_ERR_PRECONDITION;
}

/* Sets up m for agent a: filled role/goal/backstory, system prompt, key, tools. A key that
 * cannot be read is recorded in m->error (the lead's fails the task; a coworker's is told to the
 * manager when it delegates). AZ_ERR_NOMEM only. */
static az_err setup_member(az_exec *ex, member *m, Agentz__V1__Agent *a, const az_prompt_input *in,
                           size_t n_in)
{
    az_arena *A = ex->arena;
    m->agent = a;
    m->role = az_placeholder_fill_vars(a->role, in, n_in, A);
    m->goal = az_placeholder_fill_vars(a->goal, in, n_in, A);
    m->backstory = az_placeholder_fill_vars(a->backstory, in, n_in, A);
    m->system = m->role && m->goal && m->backstory
                    ? az_prompt_system(m->role, m->goal, m->backstory, A)
                    : NULL;
    m->tools = az_arena_alloc(A, (a->n_tools + 1) * sizeof *m->tools);
    m->llm_tools = az_arena_alloc(A, (a->n_tools + 2) * sizeof *m->llm_tools);
    if (!m->system || !m->tools || !m->llm_tools) return AZ_ERR_NOMEM;
    const char *secret = a->llm ? a->llm->api_key_secret : NULL;
    if (secret && *secret) {
        char msg[AZ_MSG_MAX];
        az_err err;
        if (!ex->env->keys)
            snprintf(m->error, sizeof m->error,
                     "agent %s: llm.api_key_secret \"%s\" cannot be read: this server has no "
                     "master key for secrets (set AGENTZ_MASTER_KEY or AGENTZ_MASTER_KEY_FILE)",
                     a->id, secret);
        else if ((err = az_secret_get_value(ex->env->pg, &ex->ctx, ex->env->keys, secret,
                                            &m->api_key, msg)) != AZ_OK)
            snprintf(m->error, sizeof m->error,
                     err == AZ_ERR_NOT_FOUND
                         ? "agent %s: llm.api_key_secret \"%s\" does not exist in the workspace "
                           "(create it with `agentz secrets create %s`)"
                         : "agent %s: llm.api_key_secret \"%s\" cannot be read: %s",
                     a->id, secret, err == AZ_ERR_NOT_FOUND ? secret : msg);
    }
    for (size_t i = 0; i < a->n_tools; i++) {
        if (az_tools_has(ex->env->tools, a->tools[i]))
            m->tools[m->n_tools++] = a->tools[i];
        else
            az_warn("agent %s names unknown tool %s: not offered", a->id, a->tools[i]);
    }
    if (m->n_tools == 0) return AZ_OK;
    char msg[AZ_MSG_MAX];
    az_err err = az_tools_schema_json(ex->env->tools, m->tools, m->n_tools, &m->tools_json, msg);
    if (err != AZ_OK) return err == AZ_ERR_NOMEM ? err : AZ_OK;
    for (size_t i = 0; i < json_array_size(m->tools_json); i++) {
        json_t *fn = json_object_get(json_array_get(m->tools_json, i), "function");
        az_llm_tool *t = &m->llm_tools[m->n_llm_tools++];
        t->name = json_string_value(json_object_get(fn, "name"));
        t->description = json_string_value(json_object_get(fn, "description"));
        t->parameters = json_object_get(fn, "parameters");
    }
    return AZ_OK;
}

/* Adds agent id to ids (no duplicates, not the lead, at most TEAM_MAX). */
static void add_id(az_exec *ex, const char **ids, size_t *n, const char *id)
{
    if (!id || !*id || strcmp(id, ex->agent_id) == 0 || *n >= TEAM_MAX) return;
    for (size_t i = 0; i < *n; i++) {
        if (strcmp(ids[i], id) == 0) return;
    }
    ids[(*n)++] = id;
}

static az_err prepare(az_exec *ex)
{
    const az_engine_env *env = ex->env;
    az_arena *A = ex->arena;
    Agentz__V1__Task *t = ex->task;
    char msg[AZ_MSG_MAX];
    az_err err;

    /* The agent. */
    Agentz__V1__Agent *agent;
    if ((err = az_agent_get(env->pg, &ex->ctx, ex->agent_id, A, &agent, msg)) != AZ_OK)
        return err == AZ_ERR_NOT_FOUND
                   ? prep_fail(ex, "agent_not_found", 0, "agent %s does not exist", ex->agent_id)
                   : prep_fail(ex, "internal", 1, "cannot load agent %s: %s", ex->agent_id, msg);
    if (agent->disabled)
        return prep_fail(ex, "agent_disabled", 0, "agent %s is disabled", ex->agent_id);
    /* The agent is busy from now on; whatever fails below shows on its status too. */
    if ((err = az_agent_task_started(env->pg, &ex->ctx, ex->agent_id, holder_of(env), msg)) == AZ_OK)
        ex->agent_started = 1;
    else
        az_warn("cannot mark agent %s busy for task %s: %s", ex->agent_id, ex->task_id, msg);

    /* Run inputs and the tasks whose outputs may be context. */
    az_prompt_input *in = NULL;
    size_t n_in = 0;
    Agentz__V1__Task **sib = NULL;
    size_t n_sib = 0;
    if (*t->run_id) {
        Agentz__V1__WorkflowRun *run;
        if ((err = az_run_get(env->pg, &ex->ctx, t->run_id, A, &run, msg)) != AZ_OK)
            return prep_fail(ex, "internal", err != AZ_ERR_NOT_FOUND, "cannot load run %s: %s",
                             t->run_id, msg);
        in = az_arena_alloc(A, (run->n_inputs + 1) * sizeof *in);
        if (!in) return AZ_ERR_NOMEM;
        for (size_t i = 0; i < run->n_inputs; i++)
            in[n_in++] = (az_prompt_input){run->inputs[i]->key, run->inputs[i]->value};
        az_pgconn *c;
        if ((err = az_pg_acquire(env->pg, &ex->ctx, &c, msg)) == AZ_OK) {
            err = az_task_list_run(c, &ex->ctx, t->run_id, A, &sib, &n_sib, msg);
            az_pg_release(c);
        }
        if (err != AZ_OK)
            return prep_fail(ex, "internal", 1, "cannot list the tasks of run %s: %s", t->run_id, msg);
    } else if (t->n_depends_on) {
        sib = az_arena_alloc(A, t->n_depends_on * sizeof *sib);
        if (!sib) return AZ_ERR_NOMEM;
        for (size_t i = 0; i < t->n_depends_on; i++) {
            if ((err = az_task_get(env->pg, &ex->ctx, t->depends_on[i], A, &sib[n_sib], msg)) == AZ_OK)
                n_sib++;
            else if (err != AZ_ERR_NOT_FOUND)
                return prep_fail(ex, "internal", 1, "cannot load dependency %s: %s",
                                 t->depends_on[i], msg);
        }
    }
    az_prompt_sibling *sv = az_arena_alloc(A, (n_sib + 1) * sizeof *sv);
    if (!sv) return AZ_ERR_NOMEM;
    size_t current = n_sib;
    for (size_t i = 0; i < n_sib; i++) {
        const Agentz__V1__Task *s = sib[i];
        int ok = s->status == AGENTZ__V1__TASK_STATUS__TASK_STATUS_SUCCEEDED && s->output;
        sv[i] = (az_prompt_sibling){s->id, s->step_id, s->description, ok ? s->output->raw : NULL};
        if (strcmp(s->id, ex->task_id) == 0) current = i;
    }

    /* The lead. */
    if ((err = setup_member(ex, &ex->lead, agent, in, n_in)) != AZ_OK) return err;
    if (ex->lead.error[0]) return prep_fail(ex, "llm_not_configured", 0, "%s", ex->lead.error);

    /* The team: the manager's (hierarchical markers), else whom a delegating agent may ask. */
    const char **ids = az_arena_alloc(A, TEAM_MAX * sizeof *ids);
    if (!ids) return AZ_ERR_NOMEM;
    size_t n_ids = 0;
    const char *assignee = NULL;
    for (size_t i = 0; i < t->n_context; i++) {
        const char *a = az_prompt_marker(t->context[i], "assignee");
        const char *c = az_prompt_marker(t->context[i], "coworker");
        if (a) assignee = a;
        if (a || c) ex->hierarchical = 1;
        add_id(ex, ids, &n_ids, a ? a : c);
    }
    if (!ex->hierarchical && agent->allow_delegation) {
        if (*t->run_id) {
            for (size_t i = 0; i < n_sib; i++) add_id(ex, ids, &n_ids, sib[i]->agent_id);
        } else {
            az_agent_query q = {.page_size = STANDALONE_TEAM_MAX, .page_token = ""};
            Agentz__V1__ListAgentsResponse *resp;
            if ((err = az_agent_list(env->pg, &ex->ctx, &q, A, &resp, msg)) != AZ_OK)
                return prep_fail(ex, "internal", 1, "cannot list coworkers: %s", msg);
            for (size_t i = 0; i < resp->n_agents; i++) {
                if (!resp->agents[i]->disabled) add_id(ex, ids, &n_ids, resp->agents[i]->id);
            }
        }
    }
    ex->team = az_arena_alloc(A, (n_ids + 1) * sizeof *ex->team);
    ex->team_roles = az_arena_alloc(A, (n_ids + 1) * sizeof *ex->team_roles);
    if (!ex->team || !ex->team_roles) return AZ_ERR_NOMEM;
    const char *assignee_role = NULL;
    for (size_t i = 0; i < n_ids; i++) {
        Agentz__V1__Agent *a;
        if ((err = az_agent_get(env->pg, &ex->ctx, ids[i], A, &a, msg)) != AZ_OK) {
            if (err != AZ_ERR_NOT_FOUND)
                return prep_fail(ex, "internal", 1, "cannot load coworker %s: %s", ids[i], msg);
            az_warn("coworker %s of task %s does not exist any more", ids[i], ex->task_id);
            continue;
        }
        if (a->disabled) continue;
        member *m = &ex->team[ex->n_team];
        if ((err = setup_member(ex, m, a, in, n_in)) != AZ_OK) return err;
        ex->team_roles[ex->n_team++] = m->role;
        if (assignee && strcmp(a->id, assignee) == 0) assignee_role = m->role;
    }
    if ((ex->hierarchical || agent->allow_delegation) && ex->n_team) {
        for (int ask = 0; ask < 2; ask++) {
            json_t *schema = az_prompt_delegation_schema(ask);
            char *desc = az_prompt_delegation_description(ask, ex->team_roles, ex->n_team, A);
            if (!schema || !desc) {
                json_decref(schema);
                return AZ_ERR_NOMEM;
            }
            ex->deleg_schema[ask] = schema;
            ex->lead.llm_tools[ex->lead.n_llm_tools++] = (az_llm_tool){
                ask ? AZ_PROMPT_ASK_TOOL : AZ_PROMPT_DELEGATE_TOOL, desc, schema};
        }
    }

    /* The guardrail's schema. */
    char *schema_text = NULL;
    if (t->output_schema) {
        char *s = NULL;
        if ((err = az_pbjson_encode(&t->output_schema->base, 0, &s, msg)) != AZ_OK)
            return err == AZ_ERR_NOMEM ? err
                                       : prep_fail(ex, "invalid_task", 0, "output_schema: %s", msg);
        json_error_t je;
        ex->schema = json_loads(s, 0, &je);
        schema_text = az_arena_strdup(A, s);
        free(s);
        if (!ex->schema || !schema_text) return AZ_ERR_NOMEM;
    }

    /* Memory and the task prompt. */
    char **mem = NULL;
    size_t n_mem = 0;
    char *description = az_placeholder_fill_vars(t->description, in, n_in, A);
    char *expected = az_placeholder_fill_vars(t->expected_output, in, n_in, A);
    if (!description || !expected) return AZ_ERR_NOMEM;
    if (agent->memory &&
        az_memory_recall(env->pg, &ex->ctx, env->memory, ex->agent_id, description, RECALL_LIMIT,
                         A, &mem, &n_mem, msg) != AZ_OK) {
        az_warn("cannot recall the memory of agent %s for task %s: %s", ex->agent_id, ex->task_id, msg);
        n_mem = 0;
    }
    const char **ctx;
    size_t n_ctx;
    if ((err = az_prompt_context((const char *const *)t->context, t->n_context,
                                 (const char *const *)t->depends_on, t->n_depends_on, sv, n_sib, A,
                                 &ctx, &n_ctx, msg)) != AZ_OK)
        return err;
    az_prompt_task pt = {.description = description,
                         .expected_output = expected,
                         .context = ctx,
                         .n_context = n_ctx,
                         .memories = (const char *const *)mem,
                         .n_memories = n_mem,
                         .output_schema_json = schema_text};
    ex->task_prompt = az_prompt_task_text(&pt, A);
    if (!ex->task_prompt) return AZ_ERR_NOMEM;
    if (ex->hierarchical) {
        az_prompt_member *team = az_arena_alloc(A, (ex->n_team + 1) * sizeof *team);
        if (!team) return AZ_ERR_NOMEM;
        for (size_t i = 0; i < ex->n_team; i++) team[i] = (az_prompt_member){ex->team[i].role, ex->team[i].goal};
        char *mp = az_prompt_manager(sv, n_sib, current, team, ex->n_team, assignee_role, A);
        if (!mp || !(ex->task_prompt = az_arena_printf(A, "%s\n\n%s", ex->task_prompt, mp)))
            return AZ_ERR_NOMEM;
    }
    return AZ_OK;
}

static void prepare_work(job *j)
{
    az_exec *ex = j->ex;
    az_err err = prepare(ex);
    if (err == AZ_ERR_NOMEM) prep_fail(ex, "internal", 1, "the worker ran out of memory");
    else if (err != AZ_OK && !ex->prep_type[0])
        prep_fail(ex, "internal", 1, "cannot prepare the task (%s)", az_err_name(err));
}

static void prepare_after(job *j)
{
    az_exec *ex = j->ex;
    ex->preparing = 0;
    if (ex->concluding) { /* aborted meanwhile */
        maybe_write_outcome(ex);
        return;
    }
    if (ex->prep_type[0]) {
        set_fail(ex, ex->prep_type, ex->prep_retryable, 0, "%s", ex->prep_msg);
        conclude(ex);
        return;
    }
    /* The deadline: the agent's max_execution_time or the task's timeout, whichever is
     * smaller, counted from the start of this execution. */
    int64_t task_ms = duration_ms(ex->task->timeout);
    if (task_ms <= 0) task_ms = DEFAULT_TASK_TIMEOUT_MS;
    int64_t agent_ms = duration_ms(ex->lead.agent->max_execution_time);
    ex->deadline_is_task = agent_ms <= 0 || task_ms <= agent_ms;
    ex->limit_ms = ex->deadline_is_task ? task_ms : agent_ms;
    int64_t left = ex->limit_ms - (now_ms() - ex->start_ms);
    uv_timer_start(&ex->deadline_timer, on_deadline, (uint64_t)(left > 0 ? left : 0), 0);

    int delegate = ex->n_team && (ex->hierarchical || ex->lead.agent->allow_delegation);
    ex->top = arun_new(&ex->lead, NULL, delegate, ex->task_prompt);
    if (!ex->top) {
        fail_oom(ex);
        return;
    }
    ex->cur = ex->top;
    step(ex);
}

/* ---------------------------------------------------------------- public */

static void member_free(member *m)
{
    az_secret_wipe_free(m->api_key);
    m->api_key = NULL;
    json_decref(m->tools_json);
    m->tools_json = NULL;
}

static void destroy(az_exec *ex)
{
    for (arun *r = ex->cur; r;) {
        arun *p = r->parent;
        arun_free(r);
        r = p;
    }
    member_free(&ex->lead);
    for (size_t i = 0; i < ex->n_team; i++) member_free(&ex->team[i]);
    json_decref(ex->deleg_schema[0]);
    json_decref(ex->deleg_schema[1]);
    json_decref(ex->schema);
    json_decref(ex->answer_json);
    az_arena_free(ex->arena);
    free(ex);
}

az_err az_exec_start(const az_engine_env *env, const char *workspace_id,
                     const Agentz__V1__Task *task, az_exec_done_fn done, void *arg, az_exec **out,
                     char *msg)
{
    *out = NULL;
    if (!env || !env->loop || !env->http || !env->pg || !env->tools || !env->guard || !done)
        return az_fail(msg, AZ_ERR_INVALID, "the engine environment is incomplete");
    if (!workspace_id || !az_text_is_uuid(workspace_id))
        return az_fail(msg, AZ_ERR_INVALID, "workspace_id: not a uuid");
    if (!task || !task->id || !az_text_is_uuid(task->id))
        return az_fail(msg, AZ_ERR_INVALID, "task.id: not a uuid");
    if (!task->agent_id || !az_text_is_uuid(task->agent_id))
        return az_fail(msg, AZ_ERR_INVALID, "task.agent_id: not a uuid");
    if (task->attempt < 1) return az_fail(msg, AZ_ERR_INVALID, "task.attempt: the task is not claimed");
    az_exec *ex = calloc(1, sizeof *ex);
    if (!ex || !(ex->arena = az_arena_new(0))) {
        free(ex);
        return az_fail(msg, AZ_ERR_NOMEM, "out of memory");
    }
    /* Deep copy through the wire format: the caller's task may die with its arena. */
    size_t len = protobuf_c_message_get_packed_size(&task->base);
    uint8_t *buf = malloc(len ? len : 1);
    if (buf) {
        protobuf_c_message_pack(&task->base, buf);
        ex->task = agentz__v1__task__unpack(az_arena_allocator(ex->arena), len, buf);
        free(buf);
    }
    if (!ex->task) {
        destroy(ex);
        return az_fail(msg, AZ_ERR_NOMEM, "out of memory");
    }
    ex->env = env;
    snprintf(ex->ws, sizeof ex->ws, "%s", workspace_id);
    snprintf(ex->task_id, sizeof ex->task_id, "%s", task->id);
    snprintf(ex->agent_id, sizeof ex->agent_id, "%s", task->agent_id);
    ex->attempt = task->attempt;
    ex->ctx = (az_ctx){.workspace_id = ex->ws, .principal = "worker", .request_id = ex->task_id,
                       .deadline_ms = -1};
    ex->done = done;
    ex->done_arg = arg;
    ex->start_ms = now_ms();
    ex->preparing = 1;
    job *j = calloc(1, sizeof *j);
    if (!j || queue_job(ex, j, prepare_work, prepare_after) != AZ_OK) {
        destroy(ex);
        return az_fail(msg, AZ_ERR_NOMEM, "cannot queue the execution");
    }
    uv_timer_init(env->loop, &ex->deadline_timer);
    uv_timer_init(env->loop, &ex->wait_timer);
    ex->deadline_timer.data = ex;
    ex->wait_timer.data = ex;
    *out = ex;
    return AZ_OK;
}

void az_exec_abort(az_exec *ex, az_exec_abort_reason why)
{
    if (!ex || ex->concluding || ex->done_called) return;
    ex->kind = why == AZ_EXEC_ABORT_HANDBACK ? OUT_HANDBACK : OUT_LOST;
    conclude(ex);
}

const char *az_exec_task_id(const az_exec *ex)
{
    return ex->task_id;
}

int az_exec_attempt(const az_exec *ex)
{
    return ex->attempt;
}

const char *az_exec_workspace_id(const az_exec *ex)
{
    return ex->ws;
}

void az_exec_free(az_exec *ex)
{
    if (!ex) return;
    ex->free_requested = 1;
    if (ex->jobs == 0) destroy(ex);
}
