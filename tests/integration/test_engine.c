/* The execution engine end to end: the real agentzd (API and worker in one process) runs tasks
 * and workflow runs against the scripted fake LLM (tests/fakellm), and every outcome is checked
 * through the public API: statuses, outputs, attempts, usage, error types, agent status,
 * metrics and memory, plus what the model was sent. Each agent gets its own model name so the
 * fake's rules and recorded requests are scoped per scenario; scenarios that wait on time
 * (backoff, delays) run their cases concurrently. The kill -9 failover is test_engine_failover.c. */
#include <CUnit/Basic.h>
#include <ctype.h>
#include <jansson.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "agentz/v1/agent.pb-c.h"
#include "agentz/v1/task.pb-c.h"
#include "agentz/v1/workflow.pb-c.h"
#include "core/pbjson.h"
#include "fakellm.h"
#include "google/protobuf/empty.pb-c.h"
#include "harness.h"
#include "queue/queue.h"
#include "task/task.h"

/* The delegation tools as the model sees them (CrewAI's "Delegate work to coworker" and "Ask
 * question to coworker" as function names). */
#define DELEGATE_TOOL "delegate_work_to_coworker"
#define ASK_TOOL "ask_question_to_coworker"

#define AGENTS "/agentz.v1.AgentService/"
#define TASKS "/agentz.v1.TaskService/"
#define WORKFLOWS "/agentz.v1.WorkflowService/"
/* Per-call log lines, left out of log excerpts: the suite polls. */
#define RPC_LINE "msg=\"rpc\""

enum { OK = 0, INVALID = 3 };
enum {
    T_RUNNING = AGENTZ__V1__TASK_STATUS__TASK_STATUS_RUNNING,
    T_SUCCEEDED = AGENTZ__V1__TASK_STATUS__TASK_STATUS_SUCCEEDED,
    T_FAILED = AGENTZ__V1__TASK_STATUS__TASK_STATUS_FAILED,
    T_CANCELLED = AGENTZ__V1__TASK_STATUS__TASK_STATUS_CANCELLED,
    R_SUCCEEDED = AGENTZ__V1__RUN_STATUS__RUN_STATUS_SUCCEEDED,
    R_FAILED = AGENTZ__V1__RUN_STATUS__RUN_STATUS_FAILED,
    R_CANCELLED = AGENTZ__V1__RUN_STATUS__RUN_STATUS_CANCELLED,
    A_IDLE = AGENTZ__V1__AGENT_STATUS__AGENT_STATUS_IDLE,
    A_BUSY = AGENTZ__V1__AGENT_STATUS__AGENT_STATUS_BUSY,
    A_ERROR = AGENTZ__V1__AGENT_STATUS__AGENT_STATUS_ERROR,
};

static az_itest_server srv;
static az_conn *conn;
static fakellm *fake;
static char last_msg[AZ_MSG_MAX];
static char uniq[40];

/* ---------------------------------------------------------------- calls */

static void free_msg(void *m)
{
    if (m) protobuf_c_message_free_unpacked(m, NULL);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static double ts(const Google__Protobuf__Timestamp *t)
{
    return t ? (double)t->seconds + t->nanos / 1e9 : 0;
}

/* Calls method with a request given as proto3 JSON (printf-style); the response (when out is
 * not NULL) is the caller's. Returns the gRPC status; last_msg holds the details. */
static int rpc(const char *method, const ProtobufCMessageDescriptor *in,
               const ProtobufCMessageDescriptor *out_desc, void **out, const char *fmt, ...)
{
    char json[16384];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(json, sizeof json, fmt, ap);
    va_end(ap);
    if (out) *out = NULL;
    ProtobufCMessage *req = NULL;
    if (az_pbjson_decode(in, json, strlen(json), NULL, &req, last_msg) != AZ_OK) {
        fprintf(stderr, "\n  test bug: request does not decode: %s\n  %s\n", last_msg, json);
        return -1;
    }
    ProtobufCMessage *resp = NULL;
    int status = -1;
    last_msg[0] = '\0';
    az_conn_unary(conn, method, req, out_desc, 20000, NULL, &resp, &status, last_msg);
    protobuf_c_message_free_unpacked(req, NULL);
    if (out) *out = resp;
    else free_msg(resp);
    return status;
}

/* Prints a message as JSON (for failure reports). */
static void show(const char *what, const void *m)
{
    char *json = NULL, msg[AZ_MSG_MAX];
    if (m && az_pbjson_encode(m, AZ_PBJSON_PRETTY, &json, msg) == AZ_OK)
        fprintf(stderr, "\n  %s: %s\n", what, json);
    else fprintf(stderr, "\n  %s: (none)\n", what);
    free(json);
}

/* A model name unique to this suite run, for one scenario. */
static const char *model(const char *tag)
{
    static char ring[64][96];
    static int next;
    char *out = ring[next++ % 64];
    snprintf(out, 96, "%s-%s", tag, uniq);
    return out;
}

/* Creates an agent talking to the fake with model m ("" llm = no provider at all when
 * base_url is NULL); extra is more JSON fields of the agent (may be ""). 0 or the status. */
static int make_agent_at(char id[40], const char *role, const char *m, const char *base_url,
                         const char *extra)
{
    Agentz__V1__Agent *a = NULL;
    char llm[512];
    if (base_url)
        snprintf(llm, sizeof llm, "{\"provider\":\"openai\",\"model\":\"%s\",\"baseUrl\":\"%s\"}", m,
                 base_url);
    else snprintf(llm, sizeof llm, "{\"provider\":\"openai\",\"model\":\"%s\"}", m);
    int st = rpc(AGENTS "CreateAgent", &agentz__v1__create_agent_request__descriptor,
                 &agentz__v1__agent__descriptor, (void **)&a,
                 "{\"agent\":{\"role\":\"%s\",\"goal\":\"Goal of %s\",\"backstory\":\"Backstory of "
                 "%s\",\"llm\":%s%s%s}}",
                 role, role, role, llm, *extra ? "," : "", extra);
    if (st == OK) snprintf(id, 40, "%s", a->id);
    else fprintf(stderr, "\n  cannot create agent %s: %d %s\n", role, st, last_msg);
    free_msg(a);
    return st;
}

static int make_agent(char id[40], const char *role, const char *m, const char *extra)
{
    return make_agent_at(id, role, m, fakellm_base_url(fake), extra);
}

/* Creates a task for agent; extra is more JSON fields of the task (may be ""). */
static int make_task(char id[40], const char *agent, const char *description, const char *extra)
{
    Agentz__V1__Task *t = NULL;
    int st = rpc(TASKS "CreateTask", &agentz__v1__create_task_request__descriptor,
                 &agentz__v1__task__descriptor, (void **)&t,
                 "{\"task\":{\"description\":\"%s\",\"expectedOutput\":\"Expected output of: %s\","
                 "\"agentId\":\"%s\"%s%s}}",
                 description, description, agent, *extra ? "," : "", extra);
    if (st == OK) snprintf(id, 40, "%s", t->id);
    else fprintf(stderr, "\n  cannot create task: %d %s\n", st, last_msg);
    free_msg(t);
    return st;
}

static Agentz__V1__Task *get_task(const char *id)
{
    Agentz__V1__Task *t = NULL;
    rpc(TASKS "GetTask", &agentz__v1__get_task_request__descriptor, &agentz__v1__task__descriptor,
        (void **)&t, "{\"id\":\"%s\"}", id);
    return t;
}

static Agentz__V1__Agent *get_agent(const char *id)
{
    Agentz__V1__Agent *a = NULL;
    rpc(AGENTS "GetAgent", &agentz__v1__get_agent_request__descriptor,
        &agentz__v1__agent__descriptor, (void **)&a, "{\"id\":\"%s\"}", id);
    return a;
}

static Agentz__V1__WorkflowRun *get_run(const char *id)
{
    Agentz__V1__WorkflowRun *r = NULL;
    rpc(WORKFLOWS "GetRun", &agentz__v1__get_run_request__descriptor,
        &agentz__v1__workflow_run__descriptor, (void **)&r, "{\"id\":\"%s\"}", id);
    return r;
}

static Agentz__V1__ListTaskAttemptsResponse *attempts(const char *task_id)
{
    Agentz__V1__ListTaskAttemptsResponse *r = NULL;
    rpc(TASKS "ListTaskAttempts", &agentz__v1__list_task_attempts_request__descriptor,
        &agentz__v1__list_task_attempts_response__descriptor, (void **)&r,
        "{\"taskId\":\"%s\"}", task_id);
    return r;
}

static int terminal_task(int s)
{
    return s == T_SUCCEEDED || s == T_FAILED || s == T_CANCELLED;
}

static int terminal_run(int s)
{
    return s == R_SUCCEEDED || s == R_FAILED || s == R_CANCELLED;
}

/* Polls the task until it is terminal or timeout_s passed; returns its last state (caller
 * frees; NULL when GetTask failed). Reports the task and the server log on timeout. */
static Agentz__V1__Task *wait_task(const char *id, double timeout_s)
{
    double until = now_s() + timeout_s;
    for (;;) {
        Agentz__V1__Task *t = get_task(id);
        if (!t) {
            fprintf(stderr, "\n  GetTask %s: %s\n", id, last_msg);
            return NULL;
        }
        if (terminal_task(t->status)) return t;
        if (now_s() > until) {
            fprintf(stderr, "\n  task %s not finished within %.0f s", id, timeout_s);
            show("task", t);
            az_itest_dump_log_except(&srv, 20, RPC_LINE);
            return t;
        }
        free_msg(t);
        usleep(50 * 1000);
    }
}

static Agentz__V1__WorkflowRun *wait_run(const char *id, double timeout_s)
{
    double until = now_s() + timeout_s;
    for (;;) {
        Agentz__V1__WorkflowRun *r = get_run(id);
        if (!r) {
            fprintf(stderr, "\n  GetRun %s: %s\n", id, last_msg);
            return NULL;
        }
        if (terminal_run(r->status)) return r;
        if (now_s() > until) {
            fprintf(stderr, "\n  run %s not finished within %.0f s", id, timeout_s);
            show("run", r);
            az_itest_dump_log_except(&srv, 20, RPC_LINE);
            return r;
        }
        free_msg(r);
        usleep(50 * 1000);
    }
}

/* Asserts the task reached want; on a mismatch prints the task and the log tail. */
static int expect_task_status(int line, const Agentz__V1__Task *t, int want)
{
    int ok = t && (int)t->status == want;
    if (!ok) {
        fprintf(stderr, "\n  line %d: task status %d, want %d", line, t ? (int)t->status : -1, want);
        show("task", t);
        az_itest_dump_log_except(&srv, 15, RPC_LINE);
    }
    CU_ASSERT_TRUE(ok);
    return ok;
}
#define EXPECT_TASK(t, want) expect_task_status(__LINE__, (t), (want))

static int expect_run_status(int line, const Agentz__V1__WorkflowRun *r, int want)
{
    int ok = r && (int)r->status == want;
    if (!ok) {
        fprintf(stderr, "\n  line %d: run status %d, want %d", line, r ? (int)r->status : -1, want);
        show("run", r);
        az_itest_dump_log_except(&srv, 15, RPC_LINE);
    }
    CU_ASSERT_TRUE(ok);
    return ok;
}
#define EXPECT_RUN(r, want) expect_run_status(__LINE__, (r), (want))

/* Asserts hay contains needle (case-sensitive), printing both otherwise. */
static void expect_contains(int line, const char *hay, const char *needle)
{
    int ok = hay && needle && strstr(hay, needle);
    if (!ok)
        fprintf(stderr, "\n  line %d: \"%s\" not found in: %.3000s\n", line, needle ? needle : "",
                hay ? hay : "(null)");
    CU_ASSERT_TRUE(ok);
}
#define EXPECT_CONTAINS(hay, needle) expect_contains(__LINE__, (hay), (needle))

static int icontains(const char *hay, const char *needle)
{
    size_t n = strlen(needle);
    for (; hay && *hay; hay++) {
        size_t i = 0;
        while (i < n && hay[i] && tolower((unsigned char)hay[i]) == tolower((unsigned char)needle[i])) i++;
        if (i == n) return 1;
    }
    return 0;
}

/* ---------------------------------------------------------------- what the fake was sent */

/* The i-th request body for model m, parsed; NULL when there is none. */
static json_t *req_json(const char *m, size_t i)
{
    char *body = fakellm_body(fake, m, i);
    if (!body) return NULL;
    json_error_t e;
    json_t *j = json_loads(body, 0, &e);
    if (!j) fprintf(stderr, "\n  request %zu of %s is not JSON: %s\n", i, m, e.text);
    free(body);
    return j;
}

static void append(char **buf, size_t *len, const char *s)
{
    size_t n = strlen(s);
    char *p = realloc(*buf, *len + n + 2);
    if (!p) return;
    memcpy(p + *len, s, n);
    p[*len + n] = '\n';
    p[*len + n + 1] = '\0';
    *buf = p;
    *len += n + 1;
}

/* The text of the messages of request i for model m whose role is role (NULL = every
 * message): string contents, text parts and tool-call arguments, one per line. Never NULL
 * (caller frees). */
static char *req_text(const char *m, size_t i, const char *role)
{
    char *buf = calloc(1, 1);
    size_t len = 0;
    json_t *j = req_json(m, i);
    json_t *msgs = j ? json_object_get(j, "messages") : NULL;
    size_t k;
    json_t *msg;
    json_array_foreach(msgs, k, msg) {
        const char *r = json_string_value(json_object_get(msg, "role"));
        if (role && (!r || strcmp(r, role) != 0)) continue;
        json_t *c = json_object_get(msg, "content");
        if (json_is_string(c)) append(&buf, &len, json_string_value(c));
        size_t q;
        json_t *part;
        json_array_foreach(c, q, part) {
            const char *t = json_string_value(json_object_get(part, "text"));
            if (t) append(&buf, &len, t);
        }
        json_t *calls = json_object_get(msg, "tool_calls"), *call;
        json_array_foreach(calls, q, call) {
            json_t *fn = json_object_get(call, "function");
            const char *name = json_string_value(json_object_get(fn, "name"));
            const char *args = json_string_value(json_object_get(fn, "arguments"));
            if (name) append(&buf, &len, name);
            if (args) append(&buf, &len, args);
        }
    }
    json_decref(j);
    return buf;
}

/* The text content of the last message of request i for m ("" when none; caller frees). */
static char *req_last_message(const char *m, size_t i)
{
    json_t *j = req_json(m, i);
    json_t *msgs = j ? json_object_get(j, "messages") : NULL;
    size_t n = json_array_size(msgs);
    const char *text = n ? json_string_value(json_object_get(json_array_get(msgs, n - 1), "content")) : NULL;
    char *out = strdup(text ? text : "");
    json_decref(j);
    return out;
}

/* Whether request i for m offers tools, and whether it offers the tool named name. */
static int req_has_tools(const char *m, size_t i)
{
    json_t *j = req_json(m, i);
    json_t *tools = j ? json_object_get(j, "tools") : NULL;
    int has = json_is_array(tools) && json_array_size(tools) > 0;
    json_decref(j);
    return has;
}

static int req_offers_tool(const char *m, size_t i, const char *name)
{
    json_t *j = req_json(m, i);
    json_t *tools = j ? json_object_get(j, "tools") : NULL, *t;
    size_t k;
    int found = 0;
    json_array_foreach(tools, k, t) {
        const char *n = json_string_value(json_object_get(json_object_get(t, "function"), "name"));
        if (n && strcmp(n, name) == 0) found = 1;
    }
    json_decref(j);
    return found;
}

/* Waits until the fake has seen at least n requests for m (up to timeout_s). */
static int wait_requests(const char *m, size_t n, double timeout_s)
{
    double until = now_s() + timeout_s;
    while (fakellm_count(fake, m) < n) {
        if (now_s() > until) return 0;
        usleep(20 * 1000);
    }
    return 1;
}

static void text_reply(fakellm_reply *r, const char *text)
{
    memset(r, 0, sizeof *r);
    r->kind = FAKELLM_TEXT;
    r->text = text;
}

static void tool_reply(fakellm_reply *r, const char *tool, const char *args)
{
    memset(r, 0, sizeof *r);
    r->kind = FAKELLM_TOOL_CALL;
    r->tool_name = tool;
    r->tool_args = args;
}

static void error_reply(fakellm_reply *r, int status, int retry_after_s)
{
    memset(r, 0, sizeof *r);
    r->kind = FAKELLM_HTTP_ERROR;
    r->status = status;
    r->retry_after_s = retry_after_s;
}

/* ---------------------------------------------------------------- 1. one task */

static void test_single_task(void)
{
    const char *m = model("single");
    char role[96], agent[40], task[40];
    snprintf(role, sizeof role, "Senior Widget Researcher %s", uniq);
    fakellm_reply r;
    text_reply(&r, "Widgets are small gadgets; there are 42 kinds.");
    r.prompt_tokens = 123;
    r.completion_tokens = 45;
    fakellm_on(fake, m, NULL, &r, 1);
    CU_ASSERT_EQUAL_FATAL(make_agent(agent, role, m, ""), OK);
    CU_ASSERT_EQUAL_FATAL(make_task(task, agent, "Survey the widget market", ""), OK);

    Agentz__V1__Task *t = wait_task(task, 20);
    if (EXPECT_TASK(t, T_SUCCEEDED)) {
        CU_ASSERT_PTR_NOT_NULL_FATAL(t->output);
        CU_ASSERT_STRING_EQUAL(t->output->raw, "Widgets are small gadgets; there are 42 kinds.");
        CU_ASSERT_PTR_NULL(t->output->json);
        CU_ASSERT_EQUAL(t->attempt, 1);
        CU_ASSERT_PTR_NOT_NULL_FATAL(t->usage);
        CU_ASSERT_EQUAL(t->usage->prompt_tokens, 123);
        CU_ASSERT_EQUAL(t->usage->completion_tokens, 45);
        CU_ASSERT_EQUAL(t->usage->total_tokens, 168);
        CU_ASSERT_PTR_NOT_NULL(t->start_time);
        CU_ASSERT_PTR_NOT_NULL(t->end_time);
        CU_ASSERT_TRUE(ts(t->end_time) >= ts(t->start_time));
    }
    free_msg(t);

    Agentz__V1__ListTaskAttemptsResponse *at = attempts(task);
    CU_ASSERT_PTR_NOT_NULL_FATAL(at);
    CU_ASSERT_EQUAL_FATAL(at->n_attempts, 1);
    CU_ASSERT_EQUAL(at->attempts[0]->attempt, 1);
    CU_ASSERT_EQUAL(at->attempts[0]->status, T_SUCCEEDED);
    CU_ASSERT_STRING_NOT_EQUAL(at->attempts[0]->worker, "");
    CU_ASSERT_PTR_NOT_NULL(at->attempts[0]->end_time);
    if (at->attempts[0]->usage) CU_ASSERT_EQUAL(at->attempts[0]->usage->total_tokens, 168);
    CU_ASSERT_PTR_NOT_NULL(at->attempts[0]->usage);
    free_msg(at);

    /* One model call, streamed, for this model, with the persona in the system message and the
     * task in the user message. */
    CU_ASSERT_EQUAL(fakellm_count(fake, m), 1);
    json_t *j = req_json(m, 0);
    CU_ASSERT_PTR_NOT_NULL_FATAL(j);
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(j, "model")), m);
    CU_ASSERT_TRUE(json_is_true(json_object_get(j, "stream")));
    json_decref(j);
    char *sys = req_text(m, 0, "system"), *user = req_text(m, 0, "user");
    char want[160];
    EXPECT_CONTAINS(sys, role);
    snprintf(want, sizeof want, "Goal of %s", role);
    EXPECT_CONTAINS(sys, want);
    snprintf(want, sizeof want, "Backstory of %s", role);
    EXPECT_CONTAINS(sys, want);
    EXPECT_CONTAINS(user, "Survey the widget market");
    EXPECT_CONTAINS(user, "Expected output of: Survey the widget market");
    free(sys);
    free(user);
}

/* ---------------------------------------------------------------- 2. sequential run */

static void test_sequential_context(void)
{
    const char *m1 = model("seq-research"), *m2 = model("seq-write");
    char a1[40], a2[40], role1[96], role2[96];
    snprintf(role1, sizeof role1, "Researcher of {topic} %s", uniq);
    snprintf(role2, sizeof role2, "Writer %s", uniq);
    fakellm_reply r;
    text_reply(&r, "RESEARCH-NOTES: quantum widgets spin both ways.");
    r.prompt_tokens = 10;
    r.completion_tokens = 5;
    fakellm_on(fake, m1, NULL, &r, 1);
    text_reply(&r, "FINAL-ARTICLE about spinning widgets.");
    r.prompt_tokens = 20;
    r.completion_tokens = 7;
    fakellm_on(fake, m2, NULL, &r, 1);
    CU_ASSERT_EQUAL_FATAL(make_agent(a1, role1, m1, ""), OK);
    CU_ASSERT_EQUAL_FATAL(make_agent(a2, role2, m2, ""), OK);

    Agentz__V1__Workflow *wf = NULL;
    int st = rpc(WORKFLOWS "CreateWorkflow", &agentz__v1__create_workflow_request__descriptor,
                 &agentz__v1__workflow__descriptor, (void **)&wf,
                 "{\"workflow\":{\"name\":\"seq-%s\",\"process\":\"PROCESS_SEQUENTIAL\","
                 "\"inputs\":[{\"name\":\"topic\",\"required\":true}],\"steps\":["
                 "{\"id\":\"research\",\"agentId\":\"%s\",\"description\":\"Research {topic} in "
                 "depth\",\"expectedOutput\":\"Notes on {topic}\"},"
                 "{\"id\":\"write\",\"agentId\":\"%s\",\"description\":\"Write an article\","
                 "\"expectedOutput\":\"An article\"}]}}",
                 uniq, a1, a2);
    CU_ASSERT_EQUAL_FATAL(st, OK);
    Agentz__V1__WorkflowRun *run = NULL;
    st = rpc(WORKFLOWS "StartRun", &agentz__v1__start_run_request__descriptor,
             &agentz__v1__workflow_run__descriptor, (void **)&run,
             "{\"workflowId\":\"%s\",\"inputs\":{\"topic\":\"quantum widgets\"}}", wf->id);
    free_msg(wf);
    CU_ASSERT_EQUAL_FATAL(st, OK);
    char run_id[40];
    snprintf(run_id, sizeof run_id, "%s", run->id);
    free_msg(run);

    run = wait_run(run_id, 30);
    if (EXPECT_RUN(run, R_SUCCEEDED)) {
        CU_ASSERT_PTR_NOT_NULL_FATAL(run->output);
        CU_ASSERT_STRING_EQUAL(run->output->raw, "FINAL-ARTICLE about spinning widgets.");
        CU_ASSERT_EQUAL_FATAL(run->n_steps, 2);
        CU_ASSERT_STRING_EQUAL(run->steps[0]->output->raw,
                               "RESEARCH-NOTES: quantum widgets spin both ways.");
        CU_ASSERT_EQUAL(run->steps[0]->status, T_SUCCEEDED);
        CU_ASSERT_EQUAL(run->steps[1]->status, T_SUCCEEDED);
        CU_ASSERT_TRUE(ts(run->steps[1]->start_time) >= ts(run->steps[0]->end_time));
        CU_ASSERT_PTR_NOT_NULL(run->usage);
        if (run->usage) CU_ASSERT_EQUAL(run->usage->total_tokens, 15 + 27);
    }
    free_msg(run);

    /* Step 1 got the input in its description and in its agent's role; step 2 got step 1's
     * output as context. */
    CU_ASSERT_EQUAL(fakellm_count(fake, m1), 1);
    CU_ASSERT_EQUAL(fakellm_count(fake, m2), 1);
    char *t1 = req_text(m1, 0, NULL), *sys1 = req_text(m1, 0, "system"), *t2 = req_text(m2, 0, NULL);
    EXPECT_CONTAINS(t1, "Research quantum widgets in depth");
    char want[128];
    snprintf(want, sizeof want, "Researcher of quantum widgets %s", uniq);
    EXPECT_CONTAINS(sys1, want);
    EXPECT_CONTAINS(t2, "RESEARCH-NOTES: quantum widgets spin both ways.");
    EXPECT_CONTAINS(t2, "Write an article");
    free(t1);
    free(sys1);
    free(t2);
}

/* ---------------------------------------------------------------- 3. parallel DAG */

static void test_parallel_dag(void)
{
    const char *ma = model("dag-a"), *mb = model("dag-b"), *mc = model("dag-c");
    char a[40], b[40], c[40];
    fakellm_reply r;
    text_reply(&r, "OUTPUT-OF-A");
    r.delay_ms = 1500;
    fakellm_on(fake, ma, NULL, &r, 1);
    text_reply(&r, "OUTPUT-OF-B");
    r.delay_ms = 1500;
    fakellm_on(fake, mb, NULL, &r, 1);
    text_reply(&r, "MERGED A AND B");
    fakellm_on(fake, mc, NULL, &r, 1);
    CU_ASSERT_EQUAL_FATAL(make_agent(a, "Analyst A", ma, ""), OK);
    CU_ASSERT_EQUAL_FATAL(make_agent(b, "Analyst B", mb, ""), OK);
    CU_ASSERT_EQUAL_FATAL(make_agent(c, "Synthesizer", mc, ""), OK);
    Agentz__V1__Workflow *wf = NULL;
    int st = rpc(WORKFLOWS "CreateWorkflow", &agentz__v1__create_workflow_request__descriptor,
                 &agentz__v1__workflow__descriptor, (void **)&wf,
                 "{\"workflow\":{\"name\":\"dag-%s\",\"process\":\"PROCESS_PARALLEL\",\"steps\":["
                 "{\"id\":\"a\",\"agentId\":\"%s\",\"description\":\"Part a\",\"expectedOutput\":\"a\"},"
                 "{\"id\":\"b\",\"agentId\":\"%s\",\"description\":\"Part b\",\"expectedOutput\":\"b\"},"
                 "{\"id\":\"c\",\"agentId\":\"%s\",\"description\":\"Merge\",\"expectedOutput\":\"c\","
                 "\"dependsOn\":[\"a\",\"b\"]}]}}",
                 uniq, a, b, c);
    CU_ASSERT_EQUAL_FATAL(st, OK);
    Agentz__V1__WorkflowRun *run = NULL;
    st = rpc(WORKFLOWS "StartRun", &agentz__v1__start_run_request__descriptor,
             &agentz__v1__workflow_run__descriptor, (void **)&run, "{\"workflowId\":\"%s\"}", wf->id);
    free_msg(wf);
    CU_ASSERT_EQUAL_FATAL(st, OK);
    char run_id[40];
    snprintf(run_id, sizeof run_id, "%s", run->id);
    free_msg(run);
    run = wait_run(run_id, 30);
    if (EXPECT_RUN(run, R_SUCCEEDED) && run->n_steps == 3) {
        CU_ASSERT_STRING_EQUAL(run->output->raw, "MERGED A AND B");
        const Agentz__V1__StepRun *sa = run->steps[0], *sb = run->steps[1], *sc = run->steps[2];
        /* a and b overlap in time; c starts after both ended. */
        int overlap = ts(sa->start_time) < ts(sb->end_time) && ts(sb->start_time) < ts(sa->end_time);
        if (!overlap) show("run (a and b did not overlap)", run);
        CU_ASSERT_TRUE(overlap);
        CU_ASSERT_TRUE(ts(sc->start_time) >= ts(sa->end_time));
        CU_ASSERT_TRUE(ts(sc->start_time) >= ts(sb->end_time));
        /* Both slow steps together took well under twice their delay. */
        double span = ts(sb->end_time) > ts(sa->end_time) ? ts(sb->end_time) : ts(sa->end_time);
        span -= ts(sa->start_time) < ts(sb->start_time) ? ts(sa->start_time) : ts(sb->start_time);
        CU_ASSERT_TRUE(span < 2.9);
    }
    free_msg(run);
    char *tc = req_text(mc, 0, NULL);
    EXPECT_CONTAINS(tc, "OUTPUT-OF-A");
    EXPECT_CONTAINS(tc, "OUTPUT-OF-B");
    EXPECT_CONTAINS(tc, "Merge");
    free(tc);
}

/* ---------------------------------------------------------------- 4 + 5. hierarchical */

/* A hierarchical workflow with one step assigned to coworker, run by manager; returns the
 * run id in out. */
static int start_hierarchical(const char *tag, const char *manager, const char *coworker,
                              const char *description, char out[40])
{
    Agentz__V1__Workflow *wf = NULL;
    int st = rpc(WORKFLOWS "CreateWorkflow", &agentz__v1__create_workflow_request__descriptor,
                 &agentz__v1__workflow__descriptor, (void **)&wf,
                 "{\"workflow\":{\"name\":\"%s-%s\",\"process\":\"PROCESS_HIERARCHICAL\","
                 "\"managerAgentId\":\"%s\",\"steps\":[{\"id\":\"only\",\"agentId\":\"%s\","
                 "\"description\":\"%s\",\"expectedOutput\":\"A count\"}]}}",
                 tag, uniq, manager, coworker, description);
    if (st != OK) {
        fprintf(stderr, "\n  CreateWorkflow %s: %d %s\n", tag, st, last_msg);
        return st;
    }
    Agentz__V1__WorkflowRun *run = NULL;
    st = rpc(WORKFLOWS "StartRun", &agentz__v1__start_run_request__descriptor,
             &agentz__v1__workflow_run__descriptor, (void **)&run, "{\"workflowId\":\"%s\"}", wf->id);
    free_msg(wf);
    if (st == OK) snprintf(out, 40, "%s", run->id);
    else fprintf(stderr, "\n  StartRun %s: %d %s\n", tag, st, last_msg);
    free_msg(run);
    return st;
}

static void test_hierarchical_delegation(void)
{
    /* 4: the manager delegates to the coworker, named by role in other letter case. */
    const char *mm = model("hier-manager"), *mw = model("hier-worker");
    char mgr[40], wrk[40], role[96], args[512], run4[40];
    snprintf(role, sizeof role, "Widget Counter %s", uniq);
    char lower[96];
    for (size_t i = 0; i <= strlen(role); i++) lower[i] = (char)tolower((unsigned char)role[i]);
    snprintf(args, sizeof args,
             "{\"task\":\"Count the widgets in the north warehouse\",\"context\":\"The north "
             "warehouse is in Oslo\",\"coworker\":\"%s\"}",
             lower);
    char ask[512];
    snprintf(ask, sizeof ask,
             "{\"question\":\"How many widgets did you see last week?\",\"context\":\"inventory "
             "review\",\"coworker\":\"%s\"}",
             role);
    fakellm_reply rs[3];
    tool_reply(&rs[0], ASK_TOOL, ask);
    tool_reply(&rs[1], DELEGATE_TOOL, args);
    text_reply(&rs[2], "MANAGER-FINAL: there are 17 widgets.");
    fakellm_on(fake, mm, NULL, rs, 3);
    text_reply(&rs[0], "ASKED-ANSWER: 12 last week.");
    text_reply(&rs[1], "COWORKER-ANSWER: 17 widgets counted.");
    fakellm_on(fake, mw, NULL, rs, 2);
    CU_ASSERT_EQUAL_FATAL(make_agent(mgr, "Crew Manager", mm, ""), OK);
    CU_ASSERT_EQUAL_FATAL(make_agent(wrk, role, mw, ""), OK);

    /* 5: the manager names a coworker that does not exist. */
    const char *mm5 = model("hier5-manager"), *mw5 = model("hier5-worker");
    char mgr5[40], wrk5[40], role5[96], args5[256], run5[40];
    snprintf(role5, sizeof role5, "Gadget Inspector %s", uniq);
    snprintf(args5, sizeof args5,
             "{\"task\":\"Inspect gadgets\",\"context\":\"none\",\"coworker\":\"Chief Nobody\"}");
    tool_reply(&rs[0], DELEGATE_TOOL, args5);
    text_reply(&rs[1], "M5-FINAL: nobody to ask.");
    fakellm_on(fake, mm5, NULL, rs, 2);
    CU_ASSERT_EQUAL_FATAL(make_agent(mgr5, "Crew Manager Five", mm5, ""), OK);
    CU_ASSERT_EQUAL_FATAL(make_agent(wrk5, role5, mw5, ""), OK);

    CU_ASSERT_EQUAL_FATAL(start_hierarchical("hier", mgr, wrk, "Find out how many widgets we have", run4), OK);
    CU_ASSERT_EQUAL_FATAL(start_hierarchical("hier5", mgr5, wrk5, "Inspect all gadgets", run5), OK);

    Agentz__V1__WorkflowRun *run = wait_run(run4, 30);
    if (EXPECT_RUN(run, R_SUCCEEDED)) {
        CU_ASSERT_STRING_EQUAL(run->output->raw, "MANAGER-FINAL: there are 17 widgets.");
        CU_ASSERT_EQUAL(run->steps[0]->status, T_SUCCEEDED);
    }
    free_msg(run);
    /* The manager was offered the delegation tool; the coworker's model got the sub-task; its
     * answer went back to the manager as the tool's observation. */
    CU_ASSERT_TRUE(req_offers_tool(mm, 0, DELEGATE_TOOL));
    CU_ASSERT_TRUE(req_offers_tool(mm, 0, ASK_TOOL));
    char *sys = req_text(mm, 0, "system");
    EXPECT_CONTAINS(sys, "Crew Manager");
    free(sys);
    char *first = req_text(mm, 0, NULL);
    EXPECT_CONTAINS(first, "Find out how many widgets we have");
    free(first);
    CU_ASSERT_EQUAL(fakellm_count(fake, mw), 2);
    char *q = req_text(mw, 0, NULL);
    EXPECT_CONTAINS(q, "How many widgets did you see last week?");
    EXPECT_CONTAINS(q, "inventory review");
    free(q);
    char *sub = req_text(mw, 1, NULL), *wsys = req_text(mw, 1, "system");
    EXPECT_CONTAINS(sub, "Count the widgets in the north warehouse");
    EXPECT_CONTAINS(sub, "The north warehouse is in Oslo");
    EXPECT_CONTAINS(wsys, role);
    free(sub);
    free(wsys);
    CU_ASSERT_EQUAL(fakellm_count(fake, mm), 3);
    char *obs = req_text(mm, 1, "tool");
    EXPECT_CONTAINS(obs, "ASKED-ANSWER: 12 last week.");
    free(obs);
    obs = req_text(mm, 2, "tool");
    EXPECT_CONTAINS(obs, "COWORKER-ANSWER: 17 widgets counted.");
    free(obs);

    run = wait_run(run5, 30);
    if (EXPECT_RUN(run, R_SUCCEEDED)) CU_ASSERT_STRING_EQUAL(run->output->raw, "M5-FINAL: nobody to ask.");
    free_msg(run);
    CU_ASSERT_EQUAL(fakellm_count(fake, mw5), 0);
    char *obs5 = req_text(mm5, 1, "tool");
    EXPECT_CONTAINS(obs5, "Chief Nobody");
    EXPECT_CONTAINS(obs5, role5);
    free(obs5);
}

/* ---------------------------------------------------------------- 6. tools and max_iter */

static void test_tool_loop_and_max_iter(void)
{
    const char *m = model("calc"), *me = model("calc-err"), *mi = model("maxiter");
    char a[40], ae[40], ai[40], t[40], te[40], ti[40];
    fakellm_reply rs[3];
    tool_reply(&rs[0], "calculator", "{\"expression\":\"6*7\"}");
    text_reply(&rs[1], "The answer is 42.");
    fakellm_on(fake, m, NULL, rs, 2);
    /* A failing tool is an observation for the model, not a crash. */
    tool_reply(&rs[0], "calculator", "{\"expression\":\"1/0\"}");
    tool_reply(&rs[1], "http_fetch", "{\"url\":\"https://example.com/\"}"); /* not its tool */
    text_reply(&rs[2], "It cannot be computed.");
    fakellm_on(fake, me, NULL, rs, 3);
    /* Built-in tools: a fetch of the cloud metadata address is refused by the network policy
     * (before any packet is sent), and the clock answers. */
    const char *mf = model("fetch");
    char af[40], tf[40];
    tool_reply(&rs[0], "http_fetch", "{\"url\":\"http://169.254.169.254/latest/meta-data/\"}");
    tool_reply(&rs[1], "current_time", "{\"timezone\":\"UTC\"}");
    text_reply(&rs[2], "Fetched and timed.");
    fakellm_on(fake, mf, NULL, rs, 3);
    /* A model that always calls a tool while it is offered tools, and answers when not. */
    text_reply(&rs[0], "BEST-FINAL-ANSWER");
    fakellm_on(fake, mi, NULL, rs, 1);
    tool_reply(&rs[0], "calculator", "{\"expression\":\"1+1\"}");
    fakellm_on(fake, mi, "\"tools\":[", rs, 1);

    CU_ASSERT_EQUAL_FATAL(make_agent(a, "Calculator User", m, "\"tools\":[\"calculator\"]"), OK);
    CU_ASSERT_EQUAL_FATAL(make_agent(ae, "Calculator Breaker", me, "\"tools\":[\"calculator\"]"), OK);
    CU_ASSERT_EQUAL_FATAL(make_agent(ai, "Endless Tool User", mi,
                                     "\"tools\":[\"calculator\"],\"maxIter\":2"), OK);
    CU_ASSERT_EQUAL_FATAL(make_task(t, a, "Multiply six by seven", ""), OK);
    CU_ASSERT_EQUAL_FATAL(make_task(te, ae, "Divide one by zero", ""), OK);
    CU_ASSERT_EQUAL_FATAL(make_task(ti, ai, "Keep calculating", ""), OK);
    CU_ASSERT_EQUAL_FATAL(make_agent(af, "Fetcher", mf, "\"tools\":[\"http_fetch\",\"current_time\"]"), OK);
    CU_ASSERT_EQUAL_FATAL(make_task(tf, af, "Fetch the metadata and tell the time", ""), OK);

    Agentz__V1__Task *task = wait_task(t, 30);
    if (EXPECT_TASK(task, T_SUCCEEDED)) CU_ASSERT_STRING_EQUAL(task->output->raw, "The answer is 42.");
    free_msg(task);
    CU_ASSERT_EQUAL(fakellm_count(fake, m), 2);
    CU_ASSERT_TRUE(req_offers_tool(m, 0, "calculator"));
    char *obs = req_text(m, 1, "tool"), *asst = req_text(m, 1, "assistant");
    CU_ASSERT_TRUE(strcmp(obs, "42\n") == 0);
    if (strcmp(obs, "42\n") != 0) fprintf(stderr, "\n  calculator observation: \"%s\"\n", obs);
    EXPECT_CONTAINS(asst, "calculator"); /* the model's own tool call is in the history */
    free(obs);
    free(asst);

    task = wait_task(te, 30);
    if (EXPECT_TASK(task, T_SUCCEEDED)) CU_ASSERT_STRING_EQUAL(task->output->raw, "It cannot be computed.");
    free_msg(task);
    obs = req_text(me, 1, "tool");
    EXPECT_CONTAINS(obs, "division by zero");
    free(obs);
    obs = req_last_message(me, 2);
    EXPECT_CONTAINS(obs, "unknown tool");
    free(obs);

    task = wait_task(tf, 30);
    if (EXPECT_TASK(task, T_SUCCEEDED)) CU_ASSERT_STRING_EQUAL(task->output->raw, "Fetched and timed.");
    free_msg(task);
    obs = req_last_message(mf, 1);
    EXPECT_CONTAINS(obs, "169.254.169.254");
    EXPECT_CONTAINS(obs, "refused");
    free(obs);
    obs = req_last_message(mf, 2);
    EXPECT_CONTAINS(obs, "(UTC)");
    free(obs);

    task = wait_task(ti, 30);
    if (EXPECT_TASK(task, T_SUCCEEDED)) CU_ASSERT_STRING_EQUAL(task->output->raw, "BEST-FINAL-ANSWER");
    free_msg(task);
    size_t n = fakellm_count(fake, mi);
    /* At most max_iter (2) iterations with tools, then one call without tools asking for the
     * best final answer. */
    CU_ASSERT_TRUE(n >= 2 && n <= 3);
    if (n >= 2 && n <= 3) {
        for (size_t i = 0; i + 1 < n; i++) CU_ASSERT_TRUE(req_has_tools(mi, i));
        CU_ASSERT_FALSE(req_has_tools(mi, n - 1));
        /* Every task prompt mentions a final answer; the request for it is the newest message. */
        char *last = req_last_message(mi, n - 1);
        if (!icontains(last, "final answer")) fprintf(stderr, "\n  last max_iter message: %s\n", last);
        CU_ASSERT_TRUE(icontains(last, "final answer"));
        free(last);
    } else {
        fprintf(stderr, "\n  max_iter 2: the model was called %zu times\n", n);
    }
}

/* ---------------------------------------------------------------- 7. output guardrail */

#define TITLE_SCHEMA                                                                           \
    "\"outputSchema\":{\"type\":\"object\",\"required\":[\"title\"],\"properties\":{\"title\":{" \
    "\"type\":\"string\"}}}"

static void test_guardrail(void)
{
    const char *m = model("schema-ok"), *mb = model("schema-bad");
    char a[40], ab[40], t[40], tb[40];
    fakellm_reply rs[3];
    text_reply(&rs[0], "not json at all");
    text_reply(&rs[1], "{\"title\": 5}");
    text_reply(&rs[2], "{\"title\": \"Widgets\"}");
    fakellm_on(fake, m, NULL, rs, 3);
    text_reply(&rs[0], "still not json");
    fakellm_on(fake, mb, NULL, rs, 1);
    CU_ASSERT_EQUAL_FATAL(make_agent(a, "Title Writer", m, ""), OK);
    CU_ASSERT_EQUAL_FATAL(make_agent(ab, "Stubborn Writer", mb, ""), OK);
    CU_ASSERT_EQUAL_FATAL(make_task(t, a, "Give the report a title", TITLE_SCHEMA), OK);
    CU_ASSERT_EQUAL_FATAL(make_task(tb, ab, "Give the memo a title", TITLE_SCHEMA), OK);

    Agentz__V1__Task *task = wait_task(t, 30);
    if (EXPECT_TASK(task, T_SUCCEEDED)) {
        CU_ASSERT_STRING_EQUAL(task->output->raw, "{\"title\": \"Widgets\"}");
        CU_ASSERT_PTR_NOT_NULL(task->output->json);
        char *json = NULL, msg[AZ_MSG_MAX];
        if (task->output->json &&
            az_pbjson_encode(&task->output->json->base, 0, &json, msg) == AZ_OK) {
            json_t *j = json_loads(json, 0, NULL);
            CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(j, "title")), "Widgets");
            json_decref(j);
        }
        free(json);
        CU_ASSERT_EQUAL(task->attempt, 1); /* corrections happen inside one attempt */
    }
    free_msg(task);
    CU_ASSERT_EQUAL(fakellm_count(fake, m), 3);
    /* The second and third calls carry the rejected answer's validation error. */
    char *second = req_text(m, 1, NULL), *third = req_text(m, 2, NULL);
    EXPECT_CONTAINS(second, "not json at all");
    EXPECT_CONTAINS(third, "title");
    free(second);
    free(third);

    task = wait_task(tb, 30);
    if (EXPECT_TASK(task, T_FAILED)) {
        CU_ASSERT_PTR_NOT_NULL_FATAL(task->error);
        CU_ASSERT_STRING_EQUAL(task->error->type, "output_schema_mismatch");
        CU_ASSERT_FALSE(task->error->retryable);
        CU_ASSERT_EQUAL(task->attempt, 1);
        CU_ASSERT_PTR_NULL(task->output);
    }
    free_msg(task);
    /* The first answer and three corrections, then no retry of the task. */
    usleep(300 * 1000);
    CU_ASSERT_EQUAL(fakellm_count(fake, mb), 4);
    Agentz__V1__ListTaskAttemptsResponse *at = attempts(tb);
    CU_ASSERT_EQUAL(at ? at->n_attempts : 0, 1);
    free_msg(at);
}

/* ---------------------------------------------------------------- 8. retries */

static void test_retries(void)
{
    const char *m5 = model("err500"), *m4 = model("err429"), *m0 = model("err400");
    char a5[40], a4[40], a0[40], t5[40], t4[40], t0[40];
    fakellm_reply rs[2];
    error_reply(&rs[0], 500, 0);
    text_reply(&rs[1], "recovered after 500");
    fakellm_on(fake, m5, NULL, rs, 2);
    error_reply(&rs[0], 429, 1);
    text_reply(&rs[1], "recovered after 429");
    fakellm_on(fake, m4, NULL, rs, 2);
    error_reply(&rs[0], 400, 0);
    fakellm_on(fake, m0, NULL, rs, 1);
    CU_ASSERT_EQUAL_FATAL(make_agent(a5, "Flaky Provider User", m5, ""), OK);
    CU_ASSERT_EQUAL_FATAL(make_agent(a4, "Rate Limited User", m4, ""), OK);
    CU_ASSERT_EQUAL_FATAL(make_agent(a0, "Bad Request User", m0, ""), OK);
    CU_ASSERT_EQUAL_FATAL(make_task(t5, a5, "Survive a 500", "\"retryPolicy\":{\"initialBackoff\":\"0.5s\",\"maxAttempts\":3}"), OK);
    /* A short own backoff, so the wait seen is the provider's Retry-After. */
    CU_ASSERT_EQUAL_FATAL(make_task(t4, a4, "Survive a 429", "\"retryPolicy\":{\"initialBackoff\":\"0.1s\",\"maxAttempts\":3}"), OK);
    CU_ASSERT_EQUAL_FATAL(make_task(t0, a0, "Fail on a 400", "\"retryPolicy\":{\"maxAttempts\":5}"), OK);
    /* A connection dropped mid-stream is a network error, retried. */
    const char *md = model("drop"), *mn = model("err500-nonretry"), *mx = model("err500-always");
    char ad[40], an[40], ax[40], td[40], tn[40], tx[40];
    memset(rs, 0, sizeof rs);
    rs[0].kind = FAKELLM_DROP;
    text_reply(&rs[1], "recovered after a drop");
    fakellm_on(fake, md, NULL, rs, 2);
    error_reply(&rs[0], 500, 0);
    fakellm_on(fake, mn, NULL, rs, 1);
    fakellm_on(fake, mx, NULL, rs, 1);
    CU_ASSERT_EQUAL_FATAL(make_agent(ad, "Dropped User", md, ""), OK);
    CU_ASSERT_EQUAL_FATAL(make_agent(an, "Strict Policy User", mn, ""), OK);
    CU_ASSERT_EQUAL_FATAL(make_agent(ax, "Exhausted User", mx, ""), OK);
    CU_ASSERT_EQUAL_FATAL(make_task(td, ad, "Survive a drop", "\"retryPolicy\":{\"initialBackoff\":\"0.1s\",\"maxAttempts\":3}"), OK);
    /* The policy's non_retryable_errors wins over the error's own class. */
    CU_ASSERT_EQUAL_FATAL(make_task(tn, an, "Do not retry a 500",
                                    "\"retryPolicy\":{\"maxAttempts\":5,\"nonRetryableErrors\":[\"llm_unavailable\"]}"), OK);
    /* Out of attempts. */
    CU_ASSERT_EQUAL_FATAL(make_task(tx, ax, "Give up after two",
                                    "\"retryPolicy\":{\"initialBackoff\":\"0.1s\",\"maxAttempts\":2}"), OK);

    Agentz__V1__Task *task = wait_task(t5, 30);
    if (EXPECT_TASK(task, T_SUCCEEDED)) {
        CU_ASSERT_STRING_EQUAL(task->output->raw, "recovered after 500");
        CU_ASSERT_EQUAL(task->attempt, 2);
    }
    free_msg(task);
    Agentz__V1__ListTaskAttemptsResponse *at = attempts(t5);
    CU_ASSERT_PTR_NOT_NULL_FATAL(at);
    CU_ASSERT_EQUAL(at->n_attempts, 2);
    if (at->n_attempts == 2) {
        CU_ASSERT_EQUAL(at->attempts[0]->attempt, 1);
        CU_ASSERT_EQUAL(at->attempts[0]->status, T_FAILED);
        CU_ASSERT_PTR_NOT_NULL(at->attempts[0]->error);
        if (at->attempts[0]->error) {
            CU_ASSERT_STRING_EQUAL(at->attempts[0]->error->type, "llm_unavailable");
            CU_ASSERT_TRUE(at->attempts[0]->error->retryable);
        }
        CU_ASSERT_EQUAL(at->attempts[1]->status, T_SUCCEEDED);
        CU_ASSERT_TRUE(ts(at->attempts[1]->start_time) >= ts(at->attempts[0]->end_time));
    } else {
        show("attempts after a 500", at);
    }
    free_msg(at);

    task = wait_task(t4, 30);
    if (EXPECT_TASK(task, T_SUCCEEDED)) CU_ASSERT_EQUAL(task->attempt, 2);
    free_msg(task);
    at = attempts(t4);
    CU_ASSERT_PTR_NOT_NULL_FATAL(at);
    CU_ASSERT_EQUAL(at->n_attempts, 2);
    if (at->n_attempts == 2) {
        if (at->attempts[0]->error)
            CU_ASSERT_STRING_EQUAL(at->attempts[0]->error->type, "llm_rate_limited");
        double gap = ts(at->attempts[1]->start_time) - ts(at->attempts[0]->end_time);
        if (gap < 0.99) fprintf(stderr, "\n  Retry-After 1: the next attempt started %.3f s later\n", gap);
        CU_ASSERT_TRUE(gap >= 0.99);
    }
    free_msg(at);

    task = wait_task(t0, 30);
    if (EXPECT_TASK(task, T_FAILED)) {
        CU_ASSERT_PTR_NOT_NULL_FATAL(task->error);
        CU_ASSERT_STRING_EQUAL(task->error->type, "llm_bad_request");
        CU_ASSERT_FALSE(task->error->retryable);
        CU_ASSERT_EQUAL(task->attempt, 1);
    }
    free_msg(task);
    usleep(300 * 1000);
    CU_ASSERT_EQUAL(fakellm_count(fake, m0), 1);
    at = attempts(t0);
    CU_ASSERT_EQUAL(at ? at->n_attempts : 0, 1);
    free_msg(at);

    task = wait_task(td, 30);
    if (EXPECT_TASK(task, T_SUCCEEDED)) {
        CU_ASSERT_STRING_EQUAL(task->output->raw, "recovered after a drop");
        CU_ASSERT_EQUAL(task->attempt, 2);
    }
    free_msg(task);
    at = attempts(td);
    if (at && at->n_attempts == 2 && at->attempts[0]->error)
        CU_ASSERT_STRING_EQUAL(at->attempts[0]->error->type, "llm_network");
    CU_ASSERT_EQUAL(at ? at->n_attempts : 0, 2);
    free_msg(at);

    task = wait_task(tn, 30);
    if (EXPECT_TASK(task, T_FAILED)) {
        CU_ASSERT_STRING_EQUAL(task->error->type, "llm_unavailable");
        CU_ASSERT_EQUAL(task->attempt, 1);
    }
    free_msg(task);

    task = wait_task(tx, 30);
    if (EXPECT_TASK(task, T_FAILED)) {
        CU_ASSERT_STRING_EQUAL(task->error->type, "llm_unavailable");
        CU_ASSERT_EQUAL(task->attempt, 2);
    }
    free_msg(task);
    usleep(300 * 1000);
    CU_ASSERT_EQUAL(fakellm_count(fake, mn), 1);
    CU_ASSERT_EQUAL(fakellm_count(fake, mx), 2);
}

/* ---------------------------------------------------------------- 9. no provider */

static void test_no_provider(void)
{
    char a[40], t[40];
    CU_ASSERT_EQUAL_FATAL(make_agent_at(a, "Unconfigured Agent", model("nothing"), NULL, ""), OK);
    CU_ASSERT_EQUAL_FATAL(make_task(t, a, "Try without a provider", ""), OK);
    double t0 = now_s();
    Agentz__V1__Task *task = wait_task(t, 20);
    double took = now_s() - t0;
    if (EXPECT_TASK(task, T_FAILED)) {
        CU_ASSERT_PTR_NOT_NULL_FATAL(task->error);
        CU_ASSERT_STRING_EQUAL(task->error->type, "llm_not_configured");
        CU_ASSERT_FALSE(task->error->retryable);
        EXPECT_CONTAINS(task->error->message, "AGENTZ_LLM_API_KEY");
        EXPECT_CONTAINS(task->error->message, "base_url");
        CU_ASSERT_EQUAL(task->attempt, 1);
    }
    free_msg(task);
    CU_ASSERT_TRUE(took < 5);
    /* A failure of the agent's own configuration shows on the agent. */
    Agentz__V1__Agent *ag = get_agent(a);
    CU_ASSERT_PTR_NOT_NULL_FATAL(ag);
    CU_ASSERT_EQUAL(ag->status, A_ERROR);
    free_msg(ag);
}

/* ---------------------------------------------------------------- 10. cancellation */

static int wait_in_flight(size_t want, double timeout_s, double *took)
{
    double t0 = now_s();
    while (fakellm_in_flight(fake) != want) {
        if (now_s() - t0 > timeout_s) {
            *took = now_s() - t0;
            return 0;
        }
        usleep(10 * 1000);
    }
    *took = now_s() - t0;
    return 1;
}

static void test_cancellation(void)
{
    const char *mt = model("hang-task"), *mr = model("hang-run");
    char at[40], ar[40], t[40];
    fakellm_reply r;
    memset(&r, 0, sizeof r);
    r.kind = FAKELLM_HANG;
    fakellm_on(fake, mt, NULL, &r, 1);
    fakellm_on(fake, mr, NULL, &r, 1);
    double took;
    /* Earlier scenarios are done: nothing else may be in flight for the counts below. */
    if (!wait_in_flight(0, 10, &took)) fprintf(stderr, "\n  %zu requests still in flight\n", fakellm_in_flight(fake));
    CU_ASSERT_EQUAL_FATAL(fakellm_in_flight(fake), 0);
    CU_ASSERT_EQUAL_FATAL(make_agent(at, "Hanging Task Agent", mt, ""), OK);
    CU_ASSERT_EQUAL_FATAL(make_agent(ar, "Hanging Run Agent", mr, ""), OK);
    CU_ASSERT_EQUAL_FATAL(make_task(t, at, "Wait forever", ""), OK);
    Agentz__V1__Workflow *wf = NULL;
    int st = rpc(WORKFLOWS "CreateWorkflow", &agentz__v1__create_workflow_request__descriptor,
                 &agentz__v1__workflow__descriptor, (void **)&wf,
                 "{\"workflow\":{\"name\":\"hang-%s\",\"steps\":[{\"id\":\"wait\",\"agentId\":\"%s\","
                 "\"description\":\"Wait forever\",\"expectedOutput\":\"nothing\"},{\"id\":\"after\","
                 "\"agentId\":\"%s\",\"description\":\"Never runs\",\"expectedOutput\":\"nothing\"}]}}",
                 uniq, ar, ar);
    CU_ASSERT_EQUAL_FATAL(st, OK);
    Agentz__V1__WorkflowRun *run = NULL;
    st = rpc(WORKFLOWS "StartRun", &agentz__v1__start_run_request__descriptor,
             &agentz__v1__workflow_run__descriptor, (void **)&run, "{\"workflowId\":\"%s\"}", wf->id);
    free_msg(wf);
    CU_ASSERT_EQUAL_FATAL(st, OK);
    char run_id[40];
    snprintf(run_id, sizeof run_id, "%s", run->id);
    free_msg(run);

    /* Both calls are hanging in the fake. */
    int both = wait_requests(mt, 1, 20) && wait_requests(mr, 1, 20) && wait_in_flight(2, 5, &took);
    if (!both) {
        fprintf(stderr, "\n  hanging calls not seen: task %zu, run %zu, in flight %zu\n",
                fakellm_count(fake, mt), fakellm_count(fake, mr), fakellm_in_flight(fake));
        az_itest_dump_log_except(&srv, 20, RPC_LINE);
    }
    CU_ASSERT_TRUE_FATAL(both);
    Agentz__V1__Task *task = get_task(t);
    CU_ASSERT_EQUAL(task ? (int)task->status : -1, T_RUNNING);
    free_msg(task);
    Agentz__V1__Agent *ag = get_agent(at);
    CU_ASSERT_EQUAL(ag ? (int)ag->status : -1, A_BUSY);
    free_msg(ag);

    /* CancelTask: cancelled at once, and the worker drops the model call within a second. */
    task = NULL;
    st = rpc(TASKS "CancelTask", &agentz__v1__cancel_task_request__descriptor,
             &agentz__v1__task__descriptor, (void **)&task, "{\"id\":\"%s\",\"reason\":\"test\"}", t);
    CU_ASSERT_EQUAL(st, OK);
    CU_ASSERT_EQUAL(task ? (int)task->status : -1, T_CANCELLED);
    free_msg(task);
    int dropped = wait_in_flight(1, 1.0, &took);
    if (!dropped) fprintf(stderr, "\n  CancelTask: the model call still open after %.2f s\n", took);
    CU_ASSERT_TRUE(dropped);

    /* CancelRun: the same for the run's running step. */
    run = NULL;
    st = rpc(WORKFLOWS "CancelRun", &agentz__v1__cancel_run_request__descriptor,
             &agentz__v1__workflow_run__descriptor, (void **)&run,
             "{\"id\":\"%s\",\"reason\":\"test\"}", run_id);
    CU_ASSERT_EQUAL(st, OK);
    CU_ASSERT_EQUAL(run ? (int)run->status : -1, R_CANCELLED);
    free_msg(run);
    dropped = wait_in_flight(0, 1.0, &took);
    if (!dropped) fprintf(stderr, "\n  CancelRun: the model call still open after %.2f s\n", took);
    CU_ASSERT_TRUE(dropped);

    /* Nothing overwrites the cancellation; the attempt is recorded as cancelled; the agents
     * are not busy any more; the run's second step never ran. */
    usleep(1000 * 1000);
    task = get_task(t);
    CU_ASSERT_EQUAL(task ? (int)task->status : -1, T_CANCELLED);
    free_msg(task);
    Agentz__V1__ListTaskAttemptsResponse *atts = attempts(t);
    CU_ASSERT_EQUAL(atts ? atts->n_attempts : 0, 1);
    if (atts && atts->n_attempts == 1) {
        CU_ASSERT_EQUAL(atts->attempts[0]->status, T_CANCELLED);
        CU_ASSERT_PTR_NOT_NULL(atts->attempts[0]->end_time);
    }
    free_msg(atts);
    run = get_run(run_id);
    CU_ASSERT_EQUAL(run ? (int)run->status : -1, R_CANCELLED);
    if (run && run->n_steps == 2) {
        CU_ASSERT_EQUAL(run->steps[0]->status, T_CANCELLED);
        CU_ASSERT_EQUAL(run->steps[1]->status, T_CANCELLED);
    }
    free_msg(run);
    CU_ASSERT_EQUAL(fakellm_count(fake, mt), 1);
    CU_ASSERT_EQUAL(fakellm_count(fake, mr), 1);
    ag = get_agent(at);
    CU_ASSERT_EQUAL(ag ? (int)ag->status : -1, A_IDLE);
    free_msg(ag);
    ag = get_agent(ar);
    CU_ASSERT_EQUAL(ag ? (int)ag->status : -1, A_IDLE);
    free_msg(ag);
}

/* ---------------------------------------------------------------- 11. timeouts */

static void test_timeouts(void)
{
    const char *ma = model("slow-agent"), *mt = model("slow-task");
    char aa[40], at[40], ta[40], tt[40];
    fakellm_reply r;
    text_reply(&r, "too late");
    r.delay_ms = 6000;
    fakellm_on(fake, ma, NULL, &r, 1);
    fakellm_on(fake, mt, NULL, &r, 1);
    CU_ASSERT_EQUAL_FATAL(make_agent(aa, "Impatient Agent", ma, "\"maxExecutionTime\":\"1s\""), OK);
    CU_ASSERT_EQUAL_FATAL(make_agent(at, "Patient Agent", mt, ""), OK);
    CU_ASSERT_EQUAL_FATAL(make_task(ta, aa, "Be quick (agent limit)", "\"retryPolicy\":{\"maxAttempts\":1}"), OK);
    CU_ASSERT_EQUAL_FATAL(make_task(tt, at, "Be quick (task limit)",
                                    "\"retryPolicy\":{\"maxAttempts\":1},\"timeout\":\"1s\""), OK);
    const char *ids[2] = {ta, tt};
    for (int i = 0; i < 2; i++) {
        Agentz__V1__Task *task = wait_task(ids[i], 20);
        if (EXPECT_TASK(task, T_FAILED)) {
            CU_ASSERT_PTR_NOT_NULL_FATAL(task->error);
            if (!strstr(task->error->type, "timeout"))
                fprintf(stderr, "\n  timeout case %d: error type \"%s\"\n", i, task->error->type);
            CU_ASSERT_PTR_NOT_NULL(strstr(task->error->type, "timeout"));
            CU_ASSERT_EQUAL(task->attempt, 1);
        }
        free_msg(task);
        Agentz__V1__ListTaskAttemptsResponse *atts = attempts(ids[i]);
        CU_ASSERT_EQUAL(atts ? atts->n_attempts : 0, 1);
        if (atts && atts->n_attempts == 1) {
            double d = ts(atts->attempts[0]->end_time) - ts(atts->attempts[0]->start_time);
            if (d < 0.9 || d > 2.5) fprintf(stderr, "\n  timeout case %d: the attempt took %.3f s\n", i, d);
            CU_ASSERT_TRUE(d >= 0.9 && d <= 2.5);
            CU_ASSERT_EQUAL(atts->attempts[0]->status, T_FAILED);
        }
        free_msg(atts);
    }
}

/* ---------------------------------------------------------------- 13. rpm, status, metrics */

#define RPM 60
#define RPM_TASKS (RPM + 2)

/* max_rpm is "maximum model calls per minute": 62 tasks of an agent limited to 60 calls a
 * minute may not get more than 60 calls in the seconds after the first (whether the limiter
 * spaces calls evenly or lets a burst through, a 61st call then would be 61 calls in one
 * minute), yet calls must keep flowing. The tasks still waiting are cancelled afterwards. */
static void test_max_rpm(void)
{
    const char *m = model("rpm");
    char a[40];
    static char t[RPM_TASKS][40];
    fakellm_reply r;
    text_reply(&r, "paced");
    fakellm_on(fake, m, NULL, &r, 1);
    char extra[32];
    snprintf(extra, sizeof extra, "\"maxRpm\":%d", RPM);
    CU_ASSERT_EQUAL_FATAL(make_agent(a, "Paced Agent", m, extra), OK);
    for (int i = 0; i < RPM_TASKS; i++) {
        char d[64];
        snprintf(d, sizeof d, "Paced task %d", i);
        CU_ASSERT_EQUAL_FATAL(make_task(t[i], a, d, ""), OK);
    }
    CU_ASSERT_TRUE_FATAL(wait_requests(m, 1, 30));
    /* Watch for 5 s after the first call, and for 2.5 s after the 60th when a burst reaches it
     * (however slowly this machine makes the calls): a 61st call in that time is one too many
     * for the minute that began with the first. */
    double first = now_s(), at_limit = 0;
    size_t most = 0;
    for (;;) {
        double now = now_s();
        size_t n = fakellm_count(fake, m);
        if (n > most) most = n;
        if (n >= RPM && at_limit == 0) at_limit = now;
        if (at_limit ? now - at_limit > 2.5 : now - first > 5.0) break;
        if (now - first > 30) break;
        usleep(10 * 1000);
    }
    if (most > RPM)
        fprintf(stderr, "\n  max_rpm %d: %zu model calls within %.1f s of the first\n", RPM, most,
                now_s() - first);
    CU_ASSERT_TRUE(most <= RPM);
    /* And the documented spacing (server/agent/README.md: no burst, one call per 60 s / max_rpm):
     * over the 5 s watched, about six calls, one a second. */
    if (most < 3 || most > 7) fprintf(stderr, "\n  max_rpm %d: %zu calls in 5 s, want about 6\n", RPM, most);
    CU_ASSERT_TRUE(most >= 3 && most <= 7);
    /* While tasks wait for the budget the agent is busy. */
    Agentz__V1__Agent *ag = get_agent(a);
    int waiting = 0;
    for (int i = 0; i < RPM_TASKS; i++) {
        Agentz__V1__Task *task = get_task(t[i]);
        if (task && !terminal_task(task->status)) waiting++;
        free_msg(task);
    }
    if (waiting) CU_ASSERT_EQUAL(ag ? (int)ag->status : -1, A_BUSY);
    free_msg(ag);
    for (int i = 0; i < RPM_TASKS; i++) {
        Agentz__V1__Task *task = get_task(t[i]);
        if (task && !terminal_task(task->status))
            rpc(TASKS "CancelTask", &agentz__v1__cancel_task_request__descriptor,
                &agentz__v1__task__descriptor, NULL, "{\"id\":\"%s\"}", t[i]);
        free_msg(task);
    }
}

/* Status busy while tasks run and idle after; GetAgentMetrics counts them and their tokens. */
static void test_status_metrics(void)
{
    const char *m = model("metered");
    char a[40], t[3][40];
    fakellm_reply r;
    text_reply(&r, "metered");
    r.prompt_tokens = 5;
    r.completion_tokens = 3;
    r.delay_ms = 400;
    fakellm_on(fake, m, NULL, &r, 1);
    CU_ASSERT_EQUAL_FATAL(make_agent(a, "Metered Agent", m, ""), OK);
    Agentz__V1__Agent *ag = get_agent(a);
    CU_ASSERT_EQUAL(ag ? (int)ag->status : -1, A_IDLE);
    free_msg(ag);
    for (int i = 0; i < 3; i++) {
        char d[64];
        snprintf(d, sizeof d, "Metered task %d", i);
        CU_ASSERT_EQUAL_FATAL(make_task(t[i], a, d, ""), OK);
    }
    int saw_busy = 0, done = 0;
    double until = now_s() + 30;
    while (!done && now_s() < until) {
        ag = get_agent(a);
        if (ag && (int)ag->status == A_BUSY) saw_busy = 1;
        free_msg(ag);
        done = 1;
        for (int i = 0; i < 3; i++) {
            Agentz__V1__Task *task = get_task(t[i]);
            if (!task || !terminal_task(task->status)) done = 0;
            free_msg(task);
        }
        usleep(50 * 1000);
    }
    CU_ASSERT_TRUE(saw_busy);
    for (int i = 0; i < 3; i++) {
        Agentz__V1__Task *task = get_task(t[i]);
        EXPECT_TASK(task, T_SUCCEEDED);
        free_msg(task);
    }
    /* Idle once nothing runs (real time: allow a moment for the last transition). */
    int idle = 0;
    for (int i = 0; i < 20 && !idle; i++) {
        ag = get_agent(a);
        idle = ag && (int)ag->status == A_IDLE;
        free_msg(ag);
        if (!idle) usleep(50 * 1000);
    }
    CU_ASSERT_TRUE(idle);

    Agentz__V1__AgentMetrics *mx = NULL;
    int st = rpc(AGENTS "GetAgentMetrics", &agentz__v1__get_agent_metrics_request__descriptor,
                 &agentz__v1__agent_metrics__descriptor, (void **)&mx, "{\"agentId\":\"%s\"}", a);
    CU_ASSERT_EQUAL(st, OK);
    if (mx) {
        CU_ASSERT_STRING_EQUAL(mx->agent_id, a);
        CU_ASSERT_EQUAL(mx->tasks_total, 3);
        CU_ASSERT_EQUAL(mx->tasks_succeeded, 3);
        CU_ASSERT_EQUAL(mx->tasks_failed, 0);
        CU_ASSERT_EQUAL(mx->tasks_running, 0);
        CU_ASSERT_PTR_NOT_NULL(mx->usage);
        if (mx->usage) {
            CU_ASSERT_EQUAL(mx->usage->prompt_tokens, 15);
            CU_ASSERT_EQUAL(mx->usage->completion_tokens, 9);
            CU_ASSERT_EQUAL(mx->usage->total_tokens, 24);
        }
        /* Each task waited 400 ms for its answer. */
        CU_ASSERT_PTR_NOT_NULL(mx->p50_duration);
        if (mx->p50_duration)
            CU_ASSERT_TRUE(mx->p50_duration->seconds * 1e9 + mx->p50_duration->nanos >= 0.35e9);
        if (mx->tasks_total != 3 || mx->tasks_succeeded != 3) show("metrics", mx);
    } else {
        fprintf(stderr, "\n  GetAgentMetrics: %d %s\n", st, last_msg);
    }
    free_msg(mx);
}

/* ---------------------------------------------------------------- 14. memory */

static Agentz__V1__AgentMemory *get_memory(const char *agent)
{
    Agentz__V1__AgentMemory *mem = NULL;
    int st = rpc(AGENTS "GetAgentMemory", &agentz__v1__get_agent_memory_request__descriptor,
                 &agentz__v1__agent_memory__descriptor, (void **)&mem, "{\"agentId\":\"%s\"}", agent);
    if (st != OK) fprintf(stderr, "\n  GetAgentMemory: %d %s\n", st, last_msg);
    return mem;
}

static void test_memory(void)
{
    const char *m = model("memory"), *mf = model("forgetful");
    char a[40], af[40], t1[40], t2[40], tf[40];
    fakellm_reply rs[2];
    text_reply(&rs[0], "The capital of Zorblaxia is Quuxville.");
    text_reply(&rs[1], "As I remember, it is Quuxville.");
    fakellm_on(fake, m, NULL, rs, 2);
    fakellm_on(fake, mf, NULL, rs, 1);
    CU_ASSERT_EQUAL_FATAL(make_agent(a, "Geographer With Memory", m, "\"memory\":true"), OK);
    CU_ASSERT_EQUAL_FATAL(make_agent(af, "Geographer Without Memory", mf, ""), OK);
    CU_ASSERT_EQUAL_FATAL(make_task(t1, a, "Find the capital of Zorblaxia", ""), OK);
    CU_ASSERT_EQUAL_FATAL(make_task(tf, af, "Find the capital of Zorblaxia", ""), OK);
    Agentz__V1__Task *task = wait_task(t1, 20);
    EXPECT_TASK(task, T_SUCCEEDED);
    free_msg(task);
    task = wait_task(tf, 20);
    EXPECT_TASK(task, T_SUCCEEDED);
    free_msg(task);

    Agentz__V1__AgentMemory *mem = get_memory(a);
    CU_ASSERT_PTR_NOT_NULL_FATAL(mem);
    CU_ASSERT_EQUAL(mem->n_entries, 1);
    if (mem->n_entries >= 1) {
        CU_ASSERT_STRING_EQUAL(mem->entries[0]->task_id, t1);
        EXPECT_CONTAINS(mem->entries[0]->summary, "Quuxville");
        CU_ASSERT_PTR_NOT_NULL(mem->entries[0]->create_time);
    }
    free_msg(mem);
    mem = get_memory(af);
    CU_ASSERT_EQUAL(mem ? mem->n_entries : 99, 0);
    free_msg(mem);

    /* The next task recalls what the first one found. */
    CU_ASSERT_EQUAL_FATAL(make_task(t2, a, "Remind me of the capital of Zorblaxia", ""), OK);
    task = wait_task(t2, 20);
    EXPECT_TASK(task, T_SUCCEEDED);
    free_msg(task);
    CU_ASSERT_EQUAL(fakellm_count(fake, m), 2);
    char *second = req_text(m, 1, NULL);
    EXPECT_CONTAINS(second, "Quuxville");
    free(second);
    mem = get_memory(a);
    CU_ASSERT_EQUAL(mem ? mem->n_entries : 0, 2);
    free_msg(mem);

    /* Cleared: nothing left. */
    int st = rpc(AGENTS "ClearAgentMemory", &agentz__v1__clear_agent_memory_request__descriptor,
                 &google__protobuf__empty__descriptor, NULL, "{\"agentId\":\"%s\"}", a);
    CU_ASSERT_EQUAL(st, OK);
    mem = get_memory(a);
    CU_ASSERT_EQUAL(mem ? mem->n_entries : 99, 0);
    free_msg(mem);
}

/* ---------------------------------------------------------------- more of the contract */

/* Cost from the price table (AGENTZ_LLM_PRICES, set for this model at start-up), per task and
 * attempt; and the Anthropic Messages API end to end. */
static void test_cost_and_anthropic(void)
{
    const char *mp = model("priced"), *ma = model("claude-fake");
    char ap[40], aa[40], tp[40], ta[40], role[96];
    fakellm_reply r;
    text_reply(&r, "priced answer");
    r.prompt_tokens = 1000;
    r.completion_tokens = 100;
    fakellm_on(fake, mp, NULL, &r, 1);
    text_reply(&r, "Anthropic-shaped answer.");
    r.prompt_tokens = 21;
    r.completion_tokens = 4;
    fakellm_on(fake, ma, NULL, &r, 1);
    snprintf(role, sizeof role, "Anthropic Persona %s", uniq);
    CU_ASSERT_EQUAL_FATAL(make_agent(ap, "Priced Agent", mp, ""), OK);
    Agentz__V1__Agent *a = NULL;
    int st = rpc(AGENTS "CreateAgent", &agentz__v1__create_agent_request__descriptor,
                 &agentz__v1__agent__descriptor, (void **)&a,
                 "{\"agent\":{\"role\":\"%s\",\"goal\":\"Speak Messages API\",\"backstory\":\"A "
                 "Claude.\",\"llm\":{\"provider\":\"anthropic\",\"model\":\"%s\",\"baseUrl\":\"%s\"}}}",
                 role, ma, fakellm_base_url(fake));
    CU_ASSERT_EQUAL_FATAL(st, OK);
    snprintf(aa, sizeof aa, "%s", a->id);
    free_msg(a);
    CU_ASSERT_EQUAL_FATAL(make_task(tp, ap, "Cost something", ""), OK);
    CU_ASSERT_EQUAL_FATAL(make_task(ta, aa, "Answer through the Messages API", ""), OK);

    Agentz__V1__Task *t = wait_task(tp, 20);
    if (EXPECT_TASK(t, T_SUCCEEDED) && t->usage) {
        /* (1000 x 2.5 + 100 x 10) / 1e6 */
        CU_ASSERT_DOUBLE_EQUAL(t->usage->cost_usd, 0.0035, 1e-9);
        if (t->usage->cost_usd < 0.0034 || t->usage->cost_usd > 0.0036) show("priced task", t);
    }
    free_msg(t);
    Agentz__V1__ListTaskAttemptsResponse *at = attempts(tp);
    if (at && at->n_attempts == 1 && at->attempts[0]->usage)
        CU_ASSERT_DOUBLE_EQUAL(at->attempts[0]->usage->cost_usd, 0.0035, 1e-9);
    free_msg(at);

    t = wait_task(ta, 20);
    if (EXPECT_TASK(t, T_SUCCEEDED)) {
        CU_ASSERT_STRING_EQUAL(t->output->raw, "Anthropic-shaped answer.");
        if (t->usage) CU_ASSERT_EQUAL(t->usage->total_tokens, 25);
    }
    free_msg(t);
    /* The Messages API shape: the persona in the top-level system, the task in a user turn. */
    json_t *j = req_json(ma, 0);
    CU_ASSERT_PTR_NOT_NULL_FATAL(j);
    json_t *sys = json_object_get(j, "system");
    char *sys_text = json_is_string(sys) ? strdup(json_string_value(sys)) : json_dumps(sys, 0);
    EXPECT_CONTAINS(sys_text, role);
    free(sys_text);
    CU_ASSERT_TRUE(json_integer_value(json_object_get(j, "max_tokens")) > 0);
    json_decref(j);
    char *user = req_text(ma, 0, "user");
    EXPECT_CONTAINS(user, "Answer through the Messages API");
    free(user);
}

/* One terminal outcome per attempt even when the queue delivers a task again: hints for a
 * running task and for a finished one start nothing. */
static void test_duplicate_delivery(void)
{
    const char *m = model("dup");
    char a[40], t[40], ws[64] = "";
    fakellm_reply r;
    text_reply(&r, "only once");
    r.delay_ms = 800;
    fakellm_on(fake, m, NULL, &r, 1);
    CU_ASSERT_EQUAL_FATAL(make_agent(a, "Duplicate Target", m, ""), OK);
    CU_ASSERT_EQUAL_FATAL(make_task(t, a, "Run exactly once", ""), OK);
    CU_ASSERT_TRUE_FATAL(wait_requests(m, 1, 20));
    Agentz__V1__Task *task = get_task(t);
    CU_ASSERT_PTR_NOT_NULL_FATAL(task);
    snprintf(ws, sizeof ws, "%s", task->workspace_id);
    free_msg(task);
    az_redis *redis = az_itest_redis(&srv);
    CU_ASSERT_PTR_NOT_NULL_FATAL(redis);
    char *ids[1] = {t}, msg[AZ_MSG_MAX];
    az_task_ready ready = {.ids = ids, .n = 1};
    for (int i = 0; i < 3; i++) CU_ASSERT_EQUAL(az_queue_publish(redis, ws, &ready, msg), AZ_OK);
    task = wait_task(t, 20);
    EXPECT_TASK(task, T_SUCCEEDED);
    free_msg(task);
    for (int i = 0; i < 3; i++) CU_ASSERT_EQUAL(az_queue_publish(redis, ws, &ready, msg), AZ_OK);
    az_redis_free(redis);
    usleep(1500 * 1000);
    task = get_task(t);
    CU_ASSERT_EQUAL(task ? (int)task->status : -1, T_SUCCEEDED);
    CU_ASSERT_EQUAL(task ? task->attempt : -1, 1);
    free_msg(task);
    Agentz__V1__ListTaskAttemptsResponse *at = attempts(t);
    CU_ASSERT_EQUAL(at ? at->n_attempts : 0, 1);
    free_msg(at);
    CU_ASSERT_EQUAL(fakellm_count(fake, m), 1);
}

/* A step that fails for good fails a FAIL_FAST run with its error and cancels what follows. */
static void test_run_fails_fast(void)
{
    const char *m1 = model("ff-first"), *m2 = model("ff-second");
    char a1[40], a2[40];
    fakellm_reply r;
    error_reply(&r, 400, 0);
    fakellm_on(fake, m1, NULL, &r, 1);
    text_reply(&r, "never");
    fakellm_on(fake, m2, NULL, &r, 1);
    CU_ASSERT_EQUAL_FATAL(make_agent(a1, "Doomed First", m1, ""), OK);
    CU_ASSERT_EQUAL_FATAL(make_agent(a2, "Never Second", m2, ""), OK);
    Agentz__V1__Workflow *wf = NULL;
    int st = rpc(WORKFLOWS "CreateWorkflow", &agentz__v1__create_workflow_request__descriptor,
                 &agentz__v1__workflow__descriptor, (void **)&wf,
                 "{\"workflow\":{\"name\":\"ff-%s\",\"steps\":[{\"id\":\"first\",\"agentId\":\"%s\","
                 "\"description\":\"Fail\",\"expectedOutput\":\"x\"},{\"id\":\"second\",\"agentId\":"
                 "\"%s\",\"description\":\"Never\",\"expectedOutput\":\"y\"}]}}",
                 uniq, a1, a2);
    CU_ASSERT_EQUAL_FATAL(st, OK);
    Agentz__V1__WorkflowRun *run = NULL;
    st = rpc(WORKFLOWS "StartRun", &agentz__v1__start_run_request__descriptor,
             &agentz__v1__workflow_run__descriptor, (void **)&run, "{\"workflowId\":\"%s\"}", wf->id);
    free_msg(wf);
    CU_ASSERT_EQUAL_FATAL(st, OK);
    char run_id[40];
    snprintf(run_id, sizeof run_id, "%s", run->id);
    free_msg(run);
    run = wait_run(run_id, 20);
    if (EXPECT_RUN(run, R_FAILED)) {
        CU_ASSERT_PTR_NOT_NULL_FATAL(run->error);
        CU_ASSERT_STRING_EQUAL(run->error->type, "llm_bad_request");
        EXPECT_CONTAINS(run->error->message, "first");
        CU_ASSERT_EQUAL(run->steps[0]->status, T_FAILED);
        CU_ASSERT_EQUAL(run->steps[1]->status, T_CANCELLED);
        CU_ASSERT_PTR_NOT_NULL(run->end_time);
    }
    free_msg(run);
    CU_ASSERT_EQUAL(fakellm_count(fake, m2), 0);
}

/* allow_delegation in a plain sequential run: the agent gets the two delegation tools and its
 * coworkers are the run's other agents; an agent without it gets none. */
static void test_allow_delegation(void)
{
    const char *m1 = model("deleg-lead"), *m2 = model("deleg-helper");
    char a1[40], a2[40], role2[96], args[512];
    snprintf(role2, sizeof role2, "Launch Helper %s", uniq);
    snprintf(args, sizeof args,
             "{\"task\":\"Delegated piece: list three launch risks\",\"context\":\"product "
             "launch\",\"coworker\":\"%s\"}",
             role2);
    fakellm_reply rs[2];
    tool_reply(&rs[0], DELEGATE_TOOL, args);
    text_reply(&rs[1], "LEAD-FINAL: plan with risks.");
    fakellm_on(fake, m1, NULL, rs, 2);
    text_reply(&rs[0], "HELPER-STEP: launch notes.");
    fakellm_on(fake, m2, NULL, rs, 1);
    text_reply(&rs[0], "HELPER-RISKS: late, over budget, buggy.");
    fakellm_on(fake, m2, "Delegated piece", rs, 1);
    CU_ASSERT_EQUAL_FATAL(make_agent(a1, "Launch Lead", m1, "\"allowDelegation\":true"), OK);
    CU_ASSERT_EQUAL_FATAL(make_agent(a2, role2, m2, ""), OK);
    Agentz__V1__Workflow *wf = NULL;
    int st = rpc(WORKFLOWS "CreateWorkflow", &agentz__v1__create_workflow_request__descriptor,
                 &agentz__v1__workflow__descriptor, (void **)&wf,
                 "{\"workflow\":{\"name\":\"deleg-%s\",\"steps\":[{\"id\":\"plan\",\"agentId\":\"%s\","
                 "\"description\":\"Plan the launch\",\"expectedOutput\":\"a plan\"},{\"id\":\"notes\","
                 "\"agentId\":\"%s\",\"description\":\"Write the launch notes\",\"expectedOutput\":"
                 "\"notes\"}]}}",
                 uniq, a1, a2);
    CU_ASSERT_EQUAL_FATAL(st, OK);
    Agentz__V1__WorkflowRun *run = NULL;
    st = rpc(WORKFLOWS "StartRun", &agentz__v1__start_run_request__descriptor,
             &agentz__v1__workflow_run__descriptor, (void **)&run, "{\"workflowId\":\"%s\"}", wf->id);
    free_msg(wf);
    CU_ASSERT_EQUAL_FATAL(st, OK);
    char run_id[40];
    snprintf(run_id, sizeof run_id, "%s", run->id);
    free_msg(run);
    run = wait_run(run_id, 30);
    if (EXPECT_RUN(run, R_SUCCEEDED)) {
        CU_ASSERT_STRING_EQUAL(run->output->raw, "HELPER-STEP: launch notes.");
        CU_ASSERT_STRING_EQUAL(run->steps[0]->output->raw, "LEAD-FINAL: plan with risks.");
    }
    free_msg(run);
    CU_ASSERT_TRUE(req_offers_tool(m1, 0, DELEGATE_TOOL));
    CU_ASSERT_TRUE(req_offers_tool(m1, 0, ASK_TOOL));
    char *obs = req_last_message(m1, 1);
    EXPECT_CONTAINS(obs, "HELPER-RISKS: late, over budget, buggy.");
    free(obs);
    size_t n = fakellm_count(fake, m2);
    CU_ASSERT_EQUAL(n, 2);
    /* The helper's own step (the last call) offers no delegation: it does not allow it. */
    if (n == 2) {
        CU_ASSERT_FALSE(req_offers_tool(m2, 1, DELEGATE_TOOL));
        char *own = req_text(m2, 1, NULL);
        EXPECT_CONTAINS(own, "Write the launch notes");
        EXPECT_CONTAINS(own, "LEAD-FINAL: plan with risks.");
        free(own);
    }
}

/* ---------------------------------------------------------------- 15. unknown tool */

static void test_unknown_tool(void)
{
    char a[40];
    int st = make_agent(a, "Teleporting Agent", model("teleport"), "\"tools\":[\"calculator\",\"teleporter\"]");
    CU_ASSERT_EQUAL(st, INVALID);
    EXPECT_CONTAINS(last_msg, "tools[1]");
    EXPECT_CONTAINS(last_msg, "teleporter");
}

/* ---------------------------------------------------------------- suite */

static int suite_init(void)
{
    snprintf(uniq, sizeof uniq, "%s", az_itest_unique());
    fake = fakellm_start();
    if (!fake) return -1;
    /* The provider comes from each agent's llm.base_url only. */
    static const char *const unset[] = {"AGENTZ_LLM_BASE_URL", "AGENTZ_LLM_API_KEY", "AGENTZ_LLM_MODEL",
                                        "AGENTZ_LLM_PROVIDER", "OPENAI_API_KEY", "OPENAI_BASE_URL",
                                        "ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL",
                                        "AGENTZ_ALLOW_PRIVATE_NETWORKS", "AGENTZ_EMBEDDINGS_URL"};
    for (size_t i = 0; i < sizeof unset / sizeof *unset; i++) unsetenv(unset[i]);
    /* Backoff retries are queued by the reconciler: a short interval keeps retries prompt. */
    setenv("AGENTZ_RECONCILE_INTERVAL", "200ms", 1);
    setenv("AGENTZ_TASK_LEASE_SECONDS", "5", 1);
    char prices[128];
    snprintf(prices, sizeof prices, "priced-%s=2.5:10", uniq);
    setenv("AGENTZ_LLM_PRICES", prices, 1);
    unsetenv("AGENTZ_LLM_PRICES_FILE");
    if (az_itest_start(&srv, "engine", NULL) != 0) return -1;
    conn = az_itest_connect(&srv);
    return 0;
}

static int suite_clean(void)
{
    az_conn_free(conn);
    int rc = az_itest_stop(&srv, SIGTERM, 30);
    if (rc != 0) {
        fprintf(stderr, "agentzd exited with %d\n", rc);
        az_itest_dump_log_except(&srv, 30, RPC_LINE);
    }
    fakellm_stop(fake);
    return rc == 0 ? 0 : -1;
}

int main(void)
{
    if (CU_initialize_registry() != CUE_SUCCESS) return 1;
    CU_pSuite s = CU_add_suite("engine", suite_init, suite_clean);
    CU_add_test(s, "unknown tool name is INVALID_ARGUMENT", test_unknown_tool);
    CU_add_test(s, "one task: output, usage, attempt, prompts", test_single_task);
    CU_add_test(s, "no provider configured fails at once", test_no_provider);
    CU_add_test(s, "cancel task and run stop the model call", test_cancellation);
    CU_add_test(s, "sequential run passes context and inputs", test_sequential_context);
    CU_add_test(s, "parallel DAG overlaps and merges", test_parallel_dag);
    CU_add_test(s, "hierarchical delegation, unknown coworker", test_hierarchical_delegation);
    CU_add_test(s, "tool loop, tool errors, max_iter", test_tool_loop_and_max_iter);
    CU_add_test(s, "output guardrail", test_guardrail);
    CU_add_test(s, "retries: 500, 429 Retry-After, 400", test_retries);
    CU_add_test(s, "timeouts: max_execution_time and task timeout", test_timeouts);
    CU_add_test(s, "agent status and metrics", test_status_metrics);
    CU_add_test(s, "max_rpm caps model calls per minute", test_max_rpm);
    CU_add_test(s, "memory: stored, recalled, cleared", test_memory);
    CU_add_test(s, "cost from the price table; Anthropic provider", test_cost_and_anthropic);
    CU_add_test(s, "duplicate queue deliveries start nothing", test_duplicate_delivery);
    CU_add_test(s, "a failed step fails the run fast", test_run_fails_fast);
    CU_add_test(s, "allow_delegation in a sequential run", test_allow_delegation);
    return az_itest_run_cunit();
}
