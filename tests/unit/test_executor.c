/* CUnit suite for server/engine/executor: real executions on a libuv loop with az_http, against
 * the embedded PostgreSQL and Redis and the scripted fake LLM (tests/fakellm, real HTTP and SSE):
 * final answers, tool calls, the guardrail, retries, delegation, max_iter, deadlines, aborts.
 * Every outcome is checked in the database through the task and agent services. */
#include <CUnit/Basic.h>
#include <ftw.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "agent/agent.h"
#include "agent/rpm.h"
#include "core/log.h"
#include "core/pbjson.h"
#include "embed/embedded.h"
#include "engine/executor.h"
#include "engine/http.h"
#include "google/protobuf/duration.pb-c.h"
#include "google/protobuf/struct.pb-c.h"
#include "google/protobuf/wrappers.pb-c.h"
#include "store/migrate.h"
#include "task/task.h"

#include "../fakellm/fakellm.c" /* the test double: real HTTP on loopback, one thread */

#define QUEUED AGENTZ__V1__TASK_STATUS__TASK_STATUS_QUEUED
#define RUNNING AGENTZ__V1__TASK_STATUS__TASK_STATUS_RUNNING
#define BACKOFF AGENTZ__V1__TASK_STATUS__TASK_STATUS_BACKOFF
#define SUCCEEDED AGENTZ__V1__TASK_STATUS__TASK_STATUS_SUCCEEDED
#define FAILED AGENTZ__V1__TASK_STATUS__TASK_STATUS_FAILED
#define A_IDLE AGENTZ__V1__AGENT_STATUS__AGENT_STATUS_IDLE
#define A_ERROR AGENTZ__V1__AGENT_STATUS__AGENT_STATUS_ERROR

static char dir[64];
static az_embed *embed;
static az_pg *pg;
static az_redis *redis;
static az_arena *arena;
static uv_loop_t uvloop;
static az_http *http;
static az_tools *tools;
static az_netguard *guard;
static fakellm *fake;
static az_engine_env env;
static const az_ctx ctx = {.workspace_id = AZ_DEFAULT_WORKSPACE, .principal = "", .request_id = "t",
                           .deadline_ms = -1};
static int uniq;

/* What the executions reported through on_event. */
static struct {
    size_t tokens, tool_calls, tool_results, progress;
    char text[4096];
} seen;

static void on_event(void *arg, const char *ws, const Agentz__V1__Event *ev)
{
    (void)arg;
    CU_ASSERT_STRING_EQUAL(ws, AZ_DEFAULT_WORKSPACE);
    switch (ev->payload_case) {
    case AGENTZ__V1__EVENT__PAYLOAD_TOKEN:
        seen.tokens++;
        CU_ASSERT_TRUE(ev->token->attempt >= 1);
        strncat(seen.text, ev->token->text, sizeof seen.text - strlen(seen.text) - 1);
        break;
    case AGENTZ__V1__EVENT__PAYLOAD_TOOL_CALL:
        seen.tool_calls++;
        break;
    case AGENTZ__V1__EVENT__PAYLOAD_TOOL_RESULT:
        seen.tool_results++;
        break;
    case AGENTZ__V1__EVENT__PAYLOAD_PROGRESS:
        seen.progress++;
        break;
    default:
        break;
    }
}

static double mono_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* ---------------------------------------------------------------- fixtures */

static const char *model_name(const char *tag)
{
    return az_arena_printf(arena, "m-%s-%d", tag, ++uniq);
}

typedef struct agent_opts {
    const char *provider; /* NULL = "openai" */
    const char *role;
    const char *model;
    const char *base_url; /* NULL = the fake's */
    const char *tools[2];
    size_t n_tools;
    int allow_delegation;
    int max_iter;
    int64_t max_exec_s;
    const char *secret;
} agent_opts;

static Agentz__V1__Agent *make_agent(const agent_opts *o)
{
    Agentz__V1__Agent a = AGENTZ__V1__AGENT__INIT;
    Agentz__V1__LlmConfig llm = AGENTZ__V1__LLM_CONFIG__INIT;
    Google__Protobuf__Duration exec = GOOGLE__PROTOBUF__DURATION__INIT;
    a.name = az_arena_printf(arena, "agent-%d", ++uniq);
    a.role = (char *)o->role;
    a.goal = az_arena_printf(arena, "Goal of %s", o->role);
    a.backstory = az_arena_printf(arena, "Backstory of %s", o->role);
    llm.provider = (char *)(o->provider ? o->provider : "openai");
    llm.model = (char *)o->model;
    llm.base_url = (char *)(o->base_url ? o->base_url : fakellm_base_url(fake));
    if (o->secret) llm.api_key_secret = (char *)o->secret;
    a.llm = &llm;
    a.tools = (char **)o->tools;
    a.n_tools = o->n_tools;
    a.allow_delegation = o->allow_delegation;
    a.max_iter = o->max_iter ? o->max_iter : 25;
    if (o->max_exec_s) {
        exec.seconds = o->max_exec_s;
        a.max_execution_time = &exec;
    }
    Agentz__V1__Agent *out = NULL;
    int replayed;
    char msg[AZ_MSG_MAX];
    az_err err = az_agent_create(pg, &ctx, &a, NULL, NULL, arena, &out, &replayed, msg);
    if (err != AZ_OK) fprintf(stderr, "\n  create agent: %s\n", msg);
    return out;
}

/* A queued task for agent, claimed (running, attempt 1). schema: JSON text or NULL. */
static Agentz__V1__Task *make_claimed(const char *agent_id, const char *description,
                                      const char *schema, const Agentz__V1__RetryPolicy *rp)
{
    Agentz__V1__Task t = AGENTZ__V1__TASK__INIT;
    t.description = (char *)description;
    t.expected_output = az_arena_printf(arena, "Expected output of: %s", description);
    t.agent_id = (char *)agent_id;
    t.retry_policy = (Agentz__V1__RetryPolicy *)rp;
    char msg[AZ_MSG_MAX];
    if (schema) {
        ProtobufCMessage *m = NULL;
        CU_ASSERT_EQUAL_FATAL(az_pbjson_decode(&google__protobuf__struct__descriptor, schema,
                                               strlen(schema), az_arena_allocator(arena), &m, msg),
                              AZ_OK);
        t.output_schema = (Google__Protobuf__Struct *)m;
    }
    Agentz__V1__Task *created = NULL, *claimed = NULL;
    int replayed;
    az_task_ready ready = {.arena = arena};
    az_err err = az_task_create(pg, &ctx, &t, NULL, NULL, arena, &created, &replayed, &ready, msg);
    if (err != AZ_OK) fprintf(stderr, "\n  create task: %s\n", msg);
    CU_ASSERT_EQUAL_FATAL(err, AZ_OK);
    err = az_task_claim(pg, &ctx, created->id, "test-worker", 0, arena, &claimed, msg);
    if (err != AZ_OK) fprintf(stderr, "\n  claim task: %s\n", msg);
    CU_ASSERT_EQUAL_FATAL(err, AZ_OK);
    return claimed;
}

static Agentz__V1__Task *get_task(const char *id)
{
    Agentz__V1__Task *t = NULL;
    char msg[AZ_MSG_MAX];
    if (az_task_get(pg, &ctx, id, arena, &t, msg) != AZ_OK) fprintf(stderr, "\n  get task: %s\n", msg);
    return t;
}

static int agent_status(const char *id)
{
    Agentz__V1__Agent *a = NULL;
    char msg[AZ_MSG_MAX];
    return az_agent_get(pg, &ctx, id, arena, &a, msg) == AZ_OK ? (int)a->status : -1;
}

static void text_reply(fakellm_reply *r, const char *text)
{
    memset(r, 0, sizeof *r);
    r->kind = FAKELLM_TEXT;
    r->text = text;
}

static void tool_reply(fakellm_reply *r, const char *name, const char *args)
{
    memset(r, 0, sizeof *r);
    r->kind = FAKELLM_TOOL_CALL;
    r->tool_name = name;
    r->tool_args = args;
}

/* ---------------------------------------------------------------- running executions */

typedef struct run_state {
    int done;
    double done_at;
    az_exec *ex;
} run_state;

static void on_done(void *arg, az_exec *ex)
{
    run_state *s = arg;
    CU_ASSERT_PTR_EQUAL(ex, s->ex);
    s->done = 1;
    s->done_at = mono_s();
    az_exec_free(ex);
}

typedef int (*cond_fn)(void *arg);

static void on_tick(uv_timer_t *t)
{
    (void)t; /* only wakes the loop so the caller's condition is checked */
}

/* Runs the loop until cond(arg) holds or timeout_s passes; 1 when it holds. */
static int run_until(cond_fn cond, void *arg, double timeout_s)
{
    uv_timer_t tick;
    uv_timer_init(&uvloop, &tick);
    uv_timer_start(&tick, on_tick, 10, 10);
    double until = mono_s() + timeout_s;
    int ok;
    while (!(ok = cond(arg)) && mono_s() < until) uv_run(&uvloop, UV_RUN_ONCE);
    uv_close((uv_handle_t *)&tick, NULL);
    uv_run(&uvloop, UV_RUN_NOWAIT);
    return ok;
}

static int is_done(void *arg)
{
    return ((run_state *)arg)->done;
}

/* Starts task and runs the loop until its execution is done (at most timeout_s). */
static int execute(const Agentz__V1__Task *task, run_state *s, double timeout_s)
{
    char msg[AZ_MSG_MAX];
    memset(s, 0, sizeof *s);
    az_err err = az_exec_start(&env, AZ_DEFAULT_WORKSPACE, task, on_done, s, &s->ex, msg);
    if (err != AZ_OK) fprintf(stderr, "\n  az_exec_start: %s\n", msg);
    CU_ASSERT_EQUAL_FATAL(err, AZ_OK);
    CU_ASSERT_STRING_EQUAL(az_exec_task_id(s->ex), task->id);
    CU_ASSERT_EQUAL(az_exec_attempt(s->ex), task->attempt);
    CU_ASSERT_FALSE(s->done); /* never from inside az_exec_start */
    return run_until(is_done, s, timeout_s);
}

static int body_has_quiet(const char *model, size_t i, const char *needle)
{
    char *b = fakellm_body(fake, model, i);
    int ok = b && strstr(b, needle) != NULL;
    free(b);
    return ok;
}

static int body_has(const char *model, size_t i, const char *needle)
{
    char *b = fakellm_body(fake, model, i);
    int ok = b && strstr(b, needle) != NULL;
    if (!ok) fprintf(stderr, "\n  request %zu of %s lacks \"%s\": %.4000s\n", i, model, needle, b ? b : "(none)");
    free(b);
    return ok;
}

/* ---------------------------------------------------------------- tests */

static void test_final_answer(void)
{
    const char *m = model_name("final");
    fakellm_reply r;
    text_reply(&r, "Widgets are small gadgets.");
    r.prompt_tokens = 100;
    r.completion_tokens = 20;
    fakellm_on(fake, m, NULL, &r, 1);
    Agentz__V1__Agent *a = make_agent(&(agent_opts){.role = "Widget Researcher", .model = m});
    CU_ASSERT_PTR_NOT_NULL_FATAL(a);
    Agentz__V1__Task *t = make_claimed(a->id, "Survey the widget market", NULL, NULL);
    memset(&seen, 0, sizeof seen);
    run_state s;
    CU_ASSERT_TRUE_FATAL(execute(t, &s, 10));

    Agentz__V1__Task *got = get_task(t->id);
    CU_ASSERT_PTR_NOT_NULL_FATAL(got);
    CU_ASSERT_EQUAL(got->status, SUCCEEDED);
    CU_ASSERT_PTR_NOT_NULL_FATAL(got->output);
    CU_ASSERT_STRING_EQUAL(got->output->raw, "Widgets are small gadgets.");
    CU_ASSERT_PTR_NULL(got->output->json);
    CU_ASSERT_PTR_NOT_NULL_FATAL(got->usage);
    CU_ASSERT_EQUAL(got->usage->prompt_tokens, 100);
    CU_ASSERT_EQUAL(got->usage->completion_tokens, 20);
    CU_ASSERT_EQUAL(agent_status(a->id), A_IDLE);
    /* Streamed tokens arrived in order as events. */
    CU_ASSERT_TRUE(seen.tokens >= 2);
    CU_ASSERT_STRING_EQUAL(seen.text, "Widgets are small gadgets.");
    /* CrewAI's prompts: persona in the system message, the task in the user message. */
    CU_ASSERT_EQUAL(fakellm_count(fake, m), 1);
    CU_ASSERT_TRUE(body_has(m, 0, "You are Widget Researcher. Backstory of Widget Researcher\\nYour "
                                  "personal goal is: Goal of Widget Researcher"));
    CU_ASSERT_TRUE(body_has(m, 0, "Current Task: Survey the widget market"));
    CU_ASSERT_TRUE(body_has(m, 0, "This is the expected criteria for your final answer: Expected "
                                  "output of: Survey the widget market"));
    /* No tools: none offered. */
    char *b = fakellm_body(fake, m, 0);
    CU_ASSERT_PTR_NULL(strstr(b ? b : "", "\"tools\""));
    free(b);
}

static void test_tool_then_answer(void)
{
    const char *m = model_name("calc");
    fakellm_reply rs[2];
    tool_reply(&rs[0], "calculator", "{\"expression\":\"6*7\"}");
    text_reply(&rs[1], "The answer is 42.");
    fakellm_on(fake, m, NULL, rs, 2);
    Agentz__V1__Agent *a =
        make_agent(&(agent_opts){.role = "Calculator User", .model = m, .tools = {"calculator"}, .n_tools = 1});
    CU_ASSERT_PTR_NOT_NULL_FATAL(a);
    Agentz__V1__Task *t = make_claimed(a->id, "Multiply six by seven", NULL, NULL);
    memset(&seen, 0, sizeof seen);
    run_state s;
    CU_ASSERT_TRUE_FATAL(execute(t, &s, 10));
    Agentz__V1__Task *got = get_task(t->id);
    CU_ASSERT_EQUAL_FATAL(got->status, SUCCEEDED);
    CU_ASSERT_STRING_EQUAL(got->output->raw, "The answer is 42.");
    CU_ASSERT_EQUAL(fakellm_count(fake, m), 2);
    CU_ASSERT_TRUE(body_has(m, 0, "\"name\":\"calculator\""));
    /* The second call carries the model's tool call and the calculator's observation. */
    CU_ASSERT_TRUE(body_has(m, 1, "\"tool_calls\""));
    CU_ASSERT_TRUE(body_has(m, 1, "\"role\":\"tool\""));
    CU_ASSERT_TRUE(body_has(m, 1, "{\"role\":\"tool\",\"content\":\"42\""));
    CU_ASSERT_EQUAL(seen.tool_calls, 1);
    CU_ASSERT_EQUAL(seen.tool_results, 1);
    CU_ASSERT_TRUE(seen.progress >= 1);
    Agentz__V1__Task *after = get_task(t->id);
    CU_ASSERT_TRUE(after->progress >= 0 && after->progress <= 1);
}

static void test_tool_error_and_unlisted_tool(void)
{
    /* A failing tool and a tool the agent was not given are observations, not crashes. */
    const char *m = model_name("toolerr");
    fakellm_reply rs[3];
    tool_reply(&rs[0], "calculator", "{\"expression\":\"1/0\"}");
    tool_reply(&rs[1], "current_time", "{}");
    text_reply(&rs[2], "Could not compute.");
    fakellm_on(fake, m, NULL, rs, 3);
    Agentz__V1__Agent *a =
        make_agent(&(agent_opts){.role = "Breaker", .model = m, .tools = {"calculator"}, .n_tools = 1});
    Agentz__V1__Task *t = make_claimed(a->id, "Divide one by zero", NULL, NULL);
    run_state s;
    CU_ASSERT_TRUE_FATAL(execute(t, &s, 10));
    Agentz__V1__Task *got = get_task(t->id);
    CU_ASSERT_EQUAL_FATAL(got->status, SUCCEEDED);
    CU_ASSERT_STRING_EQUAL(got->output->raw, "Could not compute.");
    CU_ASSERT_TRUE(body_has(m, 1, "division by zero"));
    CU_ASSERT_TRUE(body_has(m, 2, "unknown tool \\\"current_time\\\""));
}

static void test_guardrail(void)
{
    const char *m = model_name("schema");
    fakellm_reply rs[3];
    text_reply(&rs[0], "not json at all");
    text_reply(&rs[1], "{\"title\": 5}");
    text_reply(&rs[2], "Here it is: ```json\n{\"title\": \"Widgets\"}\n```");
    fakellm_on(fake, m, NULL, rs, 3);
    Agentz__V1__Agent *a = make_agent(&(agent_opts){.role = "Title Writer", .model = m});
    Agentz__V1__Task *t = make_claimed(a->id, "Title the report",
                                       "{\"type\":\"object\",\"required\":[\"title\"],"
                                       "\"properties\":{\"title\":{\"type\":\"string\"}}}",
                                       NULL);
    run_state s;
    CU_ASSERT_TRUE_FATAL(execute(t, &s, 10));
    Agentz__V1__Task *got = get_task(t->id);
    CU_ASSERT_EQUAL_FATAL(got->status, SUCCEEDED);
    CU_ASSERT_EQUAL(fakellm_count(fake, m), 3);
    CU_ASSERT_PTR_NOT_NULL_FATAL(got->output->json);
    CU_ASSERT_EQUAL_FATAL(got->output->json->n_fields, 1);
    CU_ASSERT_STRING_EQUAL(got->output->json->fields[0]->key, "title");
    CU_ASSERT_STRING_EQUAL(got->output->json->fields[0]->value->string_value, "Widgets");
    /* The schema is in the first prompt; each correction quotes the rejected answer and why. */
    CU_ASSERT_TRUE(body_has(m, 0, "JSON Schema"));
    CU_ASSERT_TRUE(body_has(m, 1, "not json at all"));
    CU_ASSERT_TRUE(body_has(m, 1, "Previous attempt failed validation"));
    CU_ASSERT_TRUE(body_has(m, 2, "/title"));
    CU_ASSERT_EQUAL(got->attempt, 1);
}

static void test_guardrail_gives_up(void)
{
    const char *m = model_name("schema-bad");
    fakellm_reply r;
    text_reply(&r, "never json");
    fakellm_on(fake, m, NULL, &r, 1);
    Agentz__V1__Agent *a = make_agent(&(agent_opts){.role = "Stubborn", .model = m});
    Agentz__V1__Task *t = make_claimed(a->id, "Title the memo", "{\"type\":\"object\"}", NULL);
    run_state s;
    CU_ASSERT_TRUE_FATAL(execute(t, &s, 10));
    Agentz__V1__Task *got = get_task(t->id);
    CU_ASSERT_EQUAL_FATAL(got->status, FAILED);
    CU_ASSERT_STRING_EQUAL(got->error->type, "output_schema_mismatch");
    CU_ASSERT_FALSE(got->error->retryable);
    CU_ASSERT_EQUAL(fakellm_count(fake, m), 4); /* the answer and three corrections */
    CU_ASSERT_EQUAL(agent_status(a->id), A_ERROR);
}

static void test_500_backoff(void)
{
    const char *m = model_name("e500");
    fakellm_reply r = {.kind = FAKELLM_HTTP_ERROR, .status = 500};
    fakellm_on(fake, m, NULL, &r, 1);
    Agentz__V1__Agent *a = make_agent(&(agent_opts){.role = "Flaky", .model = m});
    Agentz__V1__RetryPolicy rp = AGENTZ__V1__RETRY_POLICY__INIT;
    rp.max_attempts = 3;
    Agentz__V1__Task *t = make_claimed(a->id, "Survive a 500", NULL, &rp);
    run_state s;
    CU_ASSERT_TRUE_FATAL(execute(t, &s, 10));
    Agentz__V1__Task *got = get_task(t->id);
    CU_ASSERT_EQUAL_FATAL(got->status, BACKOFF);
    CU_ASSERT_STRING_EQUAL(got->error->type, "llm_unavailable");
    CU_ASSERT_TRUE(got->error->retryable);
    CU_ASSERT_PTR_NOT_NULL(got->next_attempt_time);
    Agentz__V1__ListTaskAttemptsResponse *at = NULL;
    char msg[AZ_MSG_MAX];
    CU_ASSERT_EQUAL_FATAL(az_task_list_attempts(pg, &ctx, t->id, 10, "", arena, &at, msg), AZ_OK);
    CU_ASSERT_EQUAL_FATAL(at->n_attempts, 1);
    CU_ASSERT_EQUAL(at->attempts[0]->status, FAILED);
    CU_ASSERT_STRING_EQUAL(at->attempts[0]->error->type, "llm_unavailable");
    CU_ASSERT_EQUAL(agent_status(a->id), A_IDLE); /* not failed for good */
}

static void test_429_retry_after(void)
{
    const char *m = model_name("e429");
    fakellm_reply r = {.kind = FAKELLM_HTTP_ERROR, .status = 429, .retry_after_s = 7};
    fakellm_on(fake, m, NULL, &r, 1);
    Agentz__V1__Agent *a = make_agent(&(agent_opts){.role = "Rate Limited", .model = m});
    Agentz__V1__Task *t = make_claimed(a->id, "Survive a 429", NULL, NULL);
    run_state s;
    CU_ASSERT_TRUE_FATAL(execute(t, &s, 10));
    Agentz__V1__Task *got = get_task(t->id);
    CU_ASSERT_EQUAL_FATAL(got->status, BACKOFF);
    CU_ASSERT_STRING_EQUAL(got->error->type, "llm_rate_limited");
    /* The provider's Retry-After (7 s) beats the default 1 s backoff. */
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    CU_ASSERT_PTR_NOT_NULL_FATAL(got->next_attempt_time);
    CU_ASSERT_TRUE(got->next_attempt_time->seconds >= now.tv_sec + 5);
}

static void test_400_fails(void)
{
    const char *m = model_name("e400");
    fakellm_reply r = {.kind = FAKELLM_HTTP_ERROR, .status = 400};
    fakellm_on(fake, m, NULL, &r, 1);
    Agentz__V1__Agent *a = make_agent(&(agent_opts){.role = "Bad Request", .model = m});
    Agentz__V1__RetryPolicy rp = AGENTZ__V1__RETRY_POLICY__INIT;
    rp.max_attempts = 5;
    Agentz__V1__Task *t = make_claimed(a->id, "Fail on a 400", NULL, &rp);
    run_state s;
    CU_ASSERT_TRUE_FATAL(execute(t, &s, 10));
    Agentz__V1__Task *got = get_task(t->id);
    CU_ASSERT_EQUAL_FATAL(got->status, FAILED);
    CU_ASSERT_STRING_EQUAL(got->error->type, "llm_bad_request");
    CU_ASSERT_FALSE(got->error->retryable);
    CU_ASSERT_EQUAL(fakellm_count(fake, m), 1);
    CU_ASSERT_EQUAL(agent_status(a->id), A_ERROR);
}

static void test_not_configured(void)
{
    /* No base URL, no key in the environment: fails at once without a request. */
    Agentz__V1__Agent *a = make_agent(&(agent_opts){.role = "Unconfigured", .model = "gpt-4o-mini", .base_url = ""});
    Agentz__V1__Task *t = make_claimed(a->id, "Try without a provider", NULL, NULL);
    run_state s;
    CU_ASSERT_TRUE_FATAL(execute(t, &s, 10));
    Agentz__V1__Task *got = get_task(t->id);
    CU_ASSERT_EQUAL_FATAL(got->status, FAILED);
    CU_ASSERT_STRING_EQUAL(got->error->type, "llm_not_configured");
    CU_ASSERT_FALSE(got->error->retryable);
    CU_ASSERT_PTR_NOT_NULL(strstr(got->error->message, "AGENTZ_LLM_API_KEY"));
    /* A secret that does not exist names itself. */
    Agentz__V1__Agent *b = make_agent(&(agent_opts){.role = "Keyless", .model = "x", .secret = "missing-key"});
    t = make_claimed(b->id, "Try with a missing secret", NULL, NULL);
    CU_ASSERT_TRUE_FATAL(execute(t, &s, 10));
    got = get_task(t->id);
    CU_ASSERT_EQUAL_FATAL(got->status, FAILED);
    CU_ASSERT_STRING_EQUAL(got->error->type, "llm_not_configured");
    CU_ASSERT_PTR_NOT_NULL(strstr(got->error->message, "missing-key"));
    CU_ASSERT_EQUAL(agent_status(b->id), A_ERROR); /* its own configuration: shown on it */
}

static void test_max_iter(void)
{
    /* A model that calls a tool whenever it is offered one, and answers when not. */
    const char *m = model_name("maxiter");
    fakellm_reply r;
    text_reply(&r, "BEST-FINAL-ANSWER");
    fakellm_on(fake, m, NULL, &r, 1);
    tool_reply(&r, "calculator", "{\"expression\":\"1+1\"}");
    fakellm_on(fake, m, "\"tools\":[", &r, 1);
    Agentz__V1__Agent *a = make_agent(
        &(agent_opts){.role = "Endless", .model = m, .tools = {"calculator"}, .n_tools = 1, .max_iter = 2});
    Agentz__V1__Task *t = make_claimed(a->id, "Keep calculating", NULL, NULL);
    run_state s;
    CU_ASSERT_TRUE_FATAL(execute(t, &s, 10));
    Agentz__V1__Task *got = get_task(t->id);
    CU_ASSERT_EQUAL_FATAL(got->status, SUCCEEDED);
    CU_ASSERT_STRING_EQUAL(got->output->raw, "BEST-FINAL-ANSWER");
    CU_ASSERT_EQUAL_FATAL(fakellm_count(fake, m), 3);
    CU_ASSERT_TRUE(body_has(m, 2, "absolute BEST Final answer"));
    /* The forced call offers no tools and carries the tool history as text. */
    char *b = fakellm_body(fake, m, 2);
    CU_ASSERT_PTR_NULL(strstr(b ? b : "", "\"tools\""));
    CU_ASSERT_PTR_NULL(strstr(b ? b : "", "\"tool_calls\""));
    free(b);
    CU_ASSERT_TRUE(body_has(m, 2, "Observation: 2"));

    /* A model that never answers even then: max_iter_exceeded. */
    const char *m2 = model_name("mute");
    text_reply(&r, "");
    fakellm_on(fake, m2, NULL, &r, 1);
    tool_reply(&r, "calculator", "{\"expression\":\"1+1\"}");
    fakellm_on(fake, m2, "\"tools\":[", &r, 1);
    Agentz__V1__Agent *a2 = make_agent(
        &(agent_opts){.role = "Mute", .model = m2, .tools = {"calculator"}, .n_tools = 1, .max_iter = 1});
    t = make_claimed(a2->id, "Say nothing", NULL, NULL);
    CU_ASSERT_TRUE_FATAL(execute(t, &s, 10));
    got = get_task(t->id);
    CU_ASSERT_EQUAL_FATAL(got->status, FAILED);
    CU_ASSERT_STRING_EQUAL(got->error->type, "max_iter_exceeded");
    CU_ASSERT_FALSE(got->error->retryable);
}

static void test_delegation(void)
{
    const char *ml = model_name("lead"), *mc = model_name("coworker");
    char role[64], args[512];
    snprintf(role, sizeof role, "Widget Counter %d", ++uniq);
    snprintf(args, sizeof args,
             "{\"task\":\"Count the widgets\",\"context\":\"They are in Oslo\",\"coworker\":\"  "
             "widget COUNTER %d \"}",
             uniq);
    fakellm_reply rs[3];
    tool_reply(&rs[0], "delegate_work_to_coworker", args);
    tool_reply(&rs[1], "ask_question_to_coworker",
               "{\"question\":\"Any more?\",\"context\":\"\",\"coworker\":\"Chief Nobody\"}");
    text_reply(&rs[2], "LEAD-FINAL: 17 widgets.");
    rs[2].prompt_tokens = 1;
    rs[2].completion_tokens = 1;
    fakellm_on(fake, ml, NULL, rs, 3);
    text_reply(&rs[0], "COWORKER: 17 widgets counted.");
    rs[0].prompt_tokens = 1000;
    rs[0].completion_tokens = 1000;
    fakellm_on(fake, mc, NULL, rs, 1);
    Agentz__V1__Agent *cw = make_agent(&(agent_opts){.role = role, .model = mc});
    Agentz__V1__Agent *lead = make_agent(&(agent_opts){.role = "Lead", .model = ml, .allow_delegation = 1});
    CU_ASSERT_PTR_NOT_NULL_FATAL(cw);
    Agentz__V1__Task *t = make_claimed(lead->id, "How many widgets?", NULL, NULL);
    run_state s;
    CU_ASSERT_TRUE_FATAL(execute(t, &s, 15));
    Agentz__V1__Task *got = get_task(t->id);
    CU_ASSERT_EQUAL_FATAL(got->status, SUCCEEDED);
    CU_ASSERT_STRING_EQUAL(got->output->raw, "LEAD-FINAL: 17 widgets.");
    /* The lead was offered both tools listing the coworker; the coworker ran the sub-task with
     * its own persona; its answer and the unknown-coworker error came back as observations. */
    CU_ASSERT_TRUE(body_has(ml, 0, "\"name\":\"delegate_work_to_coworker\""));
    CU_ASSERT_TRUE(body_has(ml, 0, "\"name\":\"ask_question_to_coworker\""));
    CU_ASSERT_TRUE(body_has(ml, 0, role));
    CU_ASSERT_EQUAL(fakellm_count(fake, mc), 1);
    CU_ASSERT_TRUE(body_has(mc, 0, "Current Task: Count the widgets"));
    CU_ASSERT_TRUE(body_has(mc, 0, "They are in Oslo"));
    CU_ASSERT_TRUE(body_has(mc, 0, "Your best answer to your coworker"));
    CU_ASSERT_TRUE(body_has(mc, 0, "You are Widget Counter"));
    CU_ASSERT_TRUE(body_has(ml, 1, "COWORKER: 17 widgets counted."));
    CU_ASSERT_TRUE(body_has(ml, 2, "Chief Nobody"));
    CU_ASSERT_TRUE(body_has(ml, 2, "mentioned not found"));
    /* Usage counts the coworker's call too. */
    CU_ASSERT_TRUE(got->usage->prompt_tokens >= 1000);
    /* Coworkers do not delegate further: no delegation tools in the coworker's request. */
    char *b = fakellm_body(fake, mc, 0);
    CU_ASSERT_PTR_NULL(strstr(b ? b : "", "delegate_work_to_coworker"));
    free(b);
}

static void test_deadline(void)
{
    /* max_execution_time 1 s against a 5 s response: retryable "timeout" within about 1 s. */
    const char *m = model_name("slow");
    fakellm_reply r;
    text_reply(&r, "too late");
    r.delay_ms = 5000;
    fakellm_on(fake, m, NULL, &r, 1);
    Agentz__V1__Agent *a = make_agent(&(agent_opts){.role = "Impatient", .model = m, .max_exec_s = 1});
    Agentz__V1__Task *t = make_claimed(a->id, "Be quick", NULL, NULL);
    run_state s;
    double t0 = mono_s();
    CU_ASSERT_TRUE_FATAL(execute(t, &s, 10));
    double took = s.done_at - t0;
    CU_ASSERT_TRUE(took >= 0.9 && took < 2.5);
    Agentz__V1__Task *got = get_task(t->id);
    CU_ASSERT_EQUAL_FATAL(got->status, BACKOFF);
    CU_ASSERT_STRING_EQUAL(got->error->type, "timeout");
    CU_ASSERT_TRUE(got->error->retryable);
}

typedef struct in_flight_arg {
    size_t want;
} in_flight_arg;

static int in_flight_is(void *arg)
{
    return fakellm_in_flight(fake) == ((in_flight_arg *)arg)->want;
}

static void test_abort_lost(void)
{
    const char *m = model_name("hang");
    fakellm_reply r = {.kind = FAKELLM_HANG};
    fakellm_on(fake, m, NULL, &r, 1);
    Agentz__V1__Agent *a = make_agent(&(agent_opts){.role = "Hanging", .model = m});
    Agentz__V1__Task *t = make_claimed(a->id, "Wait forever", NULL, NULL);
    run_state s = {0};
    char msg[AZ_MSG_MAX];
    CU_ASSERT_EQUAL_FATAL(az_exec_start(&env, AZ_DEFAULT_WORKSPACE, t, on_done, &s, &s.ex, msg), AZ_OK);
    in_flight_arg one = {1}, none = {0};
    CU_ASSERT_TRUE_FATAL(run_until(in_flight_is, &one, 10));
    CU_ASSERT_EQUAL(agent_status(a->id), AGENTZ__V1__AGENT_STATUS__AGENT_STATUS_BUSY);
    double t0 = mono_s();
    az_exec_abort(s.ex, AZ_EXEC_ABORT_LOST);
    az_exec_abort(s.ex, AZ_EXEC_ABORT_HANDBACK); /* a second abort is ignored */
    CU_ASSERT_FALSE(s.done);                     /* done comes asynchronously */
    CU_ASSERT_TRUE_FATAL(run_until(is_done, &s, 5));
    CU_ASSERT_TRUE(s.done_at - t0 < 1.0);
    CU_ASSERT_TRUE(run_until(in_flight_is, &none, 2)); /* the connection was dropped */
    /* LOST writes nothing: still running at attempt 1 (the lease holder decides), agent idle. */
    Agentz__V1__Task *got = get_task(t->id);
    CU_ASSERT_EQUAL(got->status, RUNNING);
    CU_ASSERT_EQUAL(got->attempt, 1);
    CU_ASSERT_EQUAL(agent_status(a->id), A_IDLE);
}

static void test_abort_handback(void)
{
    const char *m = model_name("hang2");
    fakellm_reply r = {.kind = FAKELLM_HANG};
    fakellm_on(fake, m, NULL, &r, 1);
    Agentz__V1__Agent *a = make_agent(&(agent_opts){.role = "Hanging Two", .model = m});
    Agentz__V1__Task *t = make_claimed(a->id, "Wait forever, then go back", NULL, NULL);
    run_state s = {0};
    char msg[AZ_MSG_MAX];
    CU_ASSERT_EQUAL_FATAL(az_exec_start(&env, AZ_DEFAULT_WORKSPACE, t, on_done, &s, &s.ex, msg), AZ_OK);
    /* Abort while it is still preparing: the outcome waits for the preparation. */
    az_exec_abort(s.ex, AZ_EXEC_ABORT_HANDBACK);
    CU_ASSERT_TRUE_FATAL(run_until(is_done, &s, 5));
    Agentz__V1__Task *got = get_task(t->id);
    CU_ASSERT_EQUAL(got->status, QUEUED);
    CU_ASSERT_EQUAL(agent_status(a->id), A_IDLE);
    CU_ASSERT_EQUAL(fakellm_count(fake, m), 0);
}

static void test_start_validation(void)
{
    char msg[AZ_MSG_MAX];
    az_exec *ex = (az_exec *)1;
    Agentz__V1__Task t = AGENTZ__V1__TASK__INIT;
    t.id = "not-a-uuid";
    CU_ASSERT_EQUAL(az_exec_start(&env, AZ_DEFAULT_WORKSPACE, &t, on_done, NULL, &ex, msg), AZ_ERR_INVALID);
    CU_ASSERT_PTR_NULL(ex);
    t.id = "0a0a0a0a-0000-4000-8000-000000000001";
    t.agent_id = "0a0a0a0a-0000-4000-8000-000000000002";
    CU_ASSERT_EQUAL(az_exec_start(&env, AZ_DEFAULT_WORKSPACE, &t, on_done, NULL, &ex, msg), AZ_ERR_INVALID);
    CU_ASSERT_PTR_NOT_NULL(strstr(msg, "attempt"));
    az_exec_free(NULL);
}


static void test_hierarchical_manager(void)
{
    /* A manager task (as StartRun writes it for PROCESS_HIERARCHICAL): the @assignee and
     * @coworker markers make the team; the manager gets the delegation tools although its own
     * allow_delegation is off. */
    const char *mm = model_name("manager"), *mw = model_name("worker");
    char role[64], args[256];
    snprintf(role, sizeof role, "Gadget Inspector %d", ++uniq);
    snprintf(args, sizeof args, "{\"task\":\"Inspect the gadgets\",\"context\":\"all of them\","
                                "\"coworker\":\"%s\"}", role);
    fakellm_reply rs[2];
    tool_reply(&rs[0], "delegate_work_to_coworker", args);
    text_reply(&rs[1], "MANAGER: all gadgets fine.");
    fakellm_on(fake, mm, NULL, rs, 2);
    text_reply(&rs[0], "INSPECTOR: gadgets fine.");
    fakellm_on(fake, mw, NULL, rs, 1);
    Agentz__V1__Agent *mgr = make_agent(&(agent_opts){.role = "Crew Manager", .model = mm});
    Agentz__V1__Agent *wrk = make_agent(&(agent_opts){.role = role, .model = mw});
    Agentz__V1__Task t = AGENTZ__V1__TASK__INIT;
    t.description = "Inspect all gadgets";
    t.expected_output = "A report";
    t.agent_id = mgr->id;
    char *ctxv[2] = {az_arena_printf(arena, "@assignee:%s", wrk->id),
                     az_arena_printf(arena, "@coworker:%s", wrk->id)};
    t.context = ctxv;
    t.n_context = 2;
    Agentz__V1__Task *created, *claimed;
    int replayed;
    az_task_ready ready = {.arena = arena};
    char msg[AZ_MSG_MAX];
    CU_ASSERT_EQUAL_FATAL(az_task_create(pg, &ctx, &t, NULL, NULL, arena, &created, &replayed, &ready, msg), AZ_OK);
    CU_ASSERT_EQUAL_FATAL(az_task_claim(pg, &ctx, created->id, "test-worker", 0, arena, &claimed, msg), AZ_OK);
    run_state s;
    CU_ASSERT_TRUE_FATAL(execute(claimed, &s, 15));
    Agentz__V1__Task *got = get_task(created->id);
    CU_ASSERT_EQUAL_FATAL(got->status, SUCCEEDED);
    CU_ASSERT_STRING_EQUAL(got->output->raw, "MANAGER: all gadgets fine.");
    CU_ASSERT_TRUE(body_has(mm, 0, "\"name\":\"delegate_work_to_coworker\""));
    CU_ASSERT_TRUE(body_has(mm, 0, "You are managing a team"));
    CU_ASSERT_TRUE(body_has(mm, 0, "This step is assigned to Gadget Inspector"));
    CU_ASSERT_TRUE(body_has(mm, 0, "Inspect all gadgets"));
    CU_ASSERT_FALSE(body_has_quiet(mm, 0, "@coworker:")); /* markers are not context text */
    CU_ASSERT_EQUAL(fakellm_count(fake, mw), 1);
    CU_ASSERT_TRUE(body_has(mw, 0, "Inspect the gadgets"));
    CU_ASSERT_TRUE(body_has(mm, 1, "INSPECTOR: gadgets fine."));
}

static void test_dependency_context(void)
{
    /* A standalone task depending on another gets that task's output as context. */
    const char *m = model_name("dep");
    fakellm_reply r;
    text_reply(&r, "B done");
    fakellm_on(fake, m, NULL, &r, 1);
    Agentz__V1__Agent *a = make_agent(&(agent_opts){.role = "Follower", .model = m});
    Agentz__V1__Task *ta = make_claimed(a->id, "Step A", NULL, NULL);
    Agentz__V1__Task b = AGENTZ__V1__TASK__INIT;
    b.description = "Step B";
    b.expected_output = "b";
    b.agent_id = a->id;
    char *deps[1] = {ta->id};
    b.depends_on = deps;
    b.n_depends_on = 1;
    char *extra[1] = {"EXTRA-CONTEXT-LINE"};
    b.context = extra;
    b.n_context = 1;
    Agentz__V1__Task *created, *claimed;
    int replayed;
    az_task_ready ready = {.arena = arena};
    char msg[AZ_MSG_MAX], run_id[40];
    CU_ASSERT_EQUAL_FATAL(az_task_create(pg, &ctx, &b, NULL, NULL, arena, &created, &replayed, &ready, msg), AZ_OK);
    Agentz__V1__TaskOutput out = AGENTZ__V1__TASK_OUTPUT__INIT;
    out.raw = "A-OUTPUT-FOR-B";
    CU_ASSERT_EQUAL_FATAL(az_task_complete(pg, &ctx, ta->id, ta->attempt, &out, NULL, run_id, &ready, msg), AZ_OK);
    CU_ASSERT_EQUAL_FATAL(az_task_claim(pg, &ctx, created->id, "test-worker", 0, arena, &claimed, msg), AZ_OK);
    run_state s;
    CU_ASSERT_TRUE_FATAL(execute(claimed, &s, 10));
    CU_ASSERT_EQUAL(get_task(created->id)->status, SUCCEEDED);
    CU_ASSERT_TRUE(body_has(m, 0, "This is the context you're working with:\\nA-OUTPUT-FOR-B"));
    CU_ASSERT_TRUE(body_has(m, 0, "EXTRA-CONTEXT-LINE"));
}

static void test_memory_and_rpm(void)
{
    /* memory on: the first task's result is stored and recalled into the second prompt;
     * max_rpm 60: the second call waits for the budget (about a second). */
    const char *m = model_name("memory");
    fakellm_reply rs[2];
    text_reply(&rs[0], "The capital of Zorblaxia is Quuxville.");
    text_reply(&rs[1], "It is Quuxville.");
    fakellm_on(fake, m, NULL, rs, 2);
    Agentz__V1__Agent a = AGENTZ__V1__AGENT__INIT;
    Agentz__V1__LlmConfig llm = AGENTZ__V1__LLM_CONFIG__INIT;
    a.name = az_arena_printf(arena, "agent-%d", ++uniq);
    a.role = "Geographer";
    a.goal = "Know capitals";
    a.backstory = "Travelled a lot.";
    llm.model = (char *)m;
    llm.base_url = (char *)fakellm_base_url(fake);
    a.llm = &llm;
    a.max_iter = 5;
    a.memory = 1;
    a.max_rpm = 60;
    Agentz__V1__Agent *ag;
    int replayed;
    char msg[AZ_MSG_MAX];
    CU_ASSERT_EQUAL_FATAL(az_agent_create(pg, &ctx, &a, NULL, NULL, arena, &ag, &replayed, msg), AZ_OK);
    Agentz__V1__Task *t1 = make_claimed(ag->id, "Find the capital of Zorblaxia", NULL, NULL);
    run_state s;
    double t0 = mono_s();
    CU_ASSERT_TRUE_FATAL(execute(t1, &s, 10));
    CU_ASSERT_EQUAL(get_task(t1->id)->status, SUCCEEDED);
    /* Use up the agent's budget (whatever burst the bucket allows): the next call must wait
     * for the bucket, about 60 s / max_rpm. */
    int64_t wait = 0;
    for (int i = 0; i < 200 && wait == 0; i++)
        CU_ASSERT_EQUAL_FATAL(az_rpm_acquire(redis, AZ_DEFAULT_WORKSPACE, ag->id, 60, &wait, msg), AZ_OK);
    CU_ASSERT_TRUE_FATAL(wait > 0);
    Agentz__V1__Task *t2 = make_claimed(ag->id, "Remind me of the capital of Zorblaxia", NULL, NULL);
    t0 = mono_s();
    CU_ASSERT_TRUE_FATAL(execute(t2, &s, 10));
    double took = s.done_at - t0;
    CU_ASSERT_EQUAL(get_task(t2->id)->status, SUCCEEDED);
    CU_ASSERT_TRUE(took >= (double)wait / 1000.0 - 0.1 && took < 5);
    CU_ASSERT_TRUE(body_has(m, 1, "# Useful context"));
    CU_ASSERT_TRUE(body_has(m, 1, "Quuxville"));
}

static void test_anthropic(void)
{
    /* The same loop over the Anthropic Messages API: a tool call, then (max_iter 1) the forced
     * final call without tools, whose history is replayed as text. */
    const char *m = model_name("claude");
    fakellm_reply r;
    text_reply(&r, "ANTHROPIC-FINAL");
    fakellm_on(fake, m, NULL, &r, 1);
    tool_reply(&r, "calculator", "{\"expression\":\"2*21\"}");
    fakellm_on(fake, m, "\"tools\":[", &r, 1);
    Agentz__V1__Agent *a = make_agent(&(agent_opts){.provider = "anthropic", .role = "Claude User", .model = m,
                                                    .tools = {"calculator"}, .n_tools = 1, .max_iter = 1});
    CU_ASSERT_PTR_NOT_NULL_FATAL(a);
    Agentz__V1__Task *t = make_claimed(a->id, "Compute with Claude", NULL, NULL);
    run_state s;
    CU_ASSERT_TRUE_FATAL(execute(t, &s, 10));
    Agentz__V1__Task *got = get_task(t->id);
    CU_ASSERT_EQUAL_FATAL(got->status, SUCCEEDED);
    CU_ASSERT_STRING_EQUAL(got->output->raw, "ANTHROPIC-FINAL");
    CU_ASSERT_EQUAL_FATAL(fakellm_count(fake, m), 2);
    CU_ASSERT_TRUE(body_has(m, 0, "\"system\":\"You are Claude User."));
    CU_ASSERT_TRUE(body_has(m, 1, "Observation: 42"));
    CU_ASSERT_FALSE(body_has_quiet(m, 1, "tool_use"));
}

/* ---------------------------------------------------------------- suite */

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    remove(path);
    return 0;
}

static int suite_init(void)
{
    char msg[AZ_MSG_MAX];
    az_log_set_level(AZ_LOG_ERROR);
    static const char *const unset[] = {"AGENTZ_LLM_BASE_URL", "AGENTZ_LLM_API_KEY", "AGENTZ_LLM_MODEL",
                                        "AGENTZ_LLM_PROVIDER", "OPENAI_API_KEY", "OPENAI_BASE_URL",
                                        "ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL", "AGENTZ_EMBEDDINGS_URL"};
    for (size_t i = 0; i < sizeof unset / sizeof *unset; i++) unsetenv(unset[i]);
    snprintf(dir, sizeof dir, "/tmp/aztest-exec-XXXXXX");
    if (!mkdtemp(dir) || chmod(dir, 0755) != 0) return -1;
    if (az_embed_start(dir, &embed, msg) != AZ_OK) {
        fprintf(stderr, "cannot start embedded servers: %s\n", msg);
        return -1;
    }
    if (az_pg_new(az_embed_database_url(embed), 8, 30000, &pg, msg) != AZ_OK ||
        az_migrate(pg, az_migrations, az_migrations_count, NULL, msg) != AZ_OK ||
        az_redis_new(az_embed_redis_url(embed), 10000, &redis, msg) != AZ_OK) {
        fprintf(stderr, "cannot prepare the stores: %s\n", msg);
        return -1;
    }
    if (uv_loop_init(&uvloop) != 0 || az_http_new(&uvloop, 0, &http, msg) != AZ_OK ||
        az_netguard_new(AZ_NETGUARD_LOOPBACK, &guard, msg) != AZ_OK ||
        az_tools_new(&(az_tools_config){.guard = guard}, &tools, msg) != AZ_OK) {
        fprintf(stderr, "cannot prepare the engine: %s\n", msg);
        return -1;
    }
    if (!(fake = fakellm_start())) return -1;
    arena = az_arena_new(0);
    env = (az_engine_env){.loop = &uvloop, .http = http, .pg = pg, .redis = redis, .guard = guard,
                          .tools = tools, .worker_id = "test-worker", .on_event = on_event};
    return arena ? 0 : -1;
}

static int suite_clean(void)
{
    az_http_free(http);
    uv_run(&uvloop, UV_RUN_DEFAULT);
    uv_loop_close(&uvloop);
    az_tools_free(tools);
    az_netguard_free(guard);
    fakellm_stop(fake);
    az_arena_free(arena);
    az_redis_free(redis);
    az_pg_free(pg);
    az_embed_stop(embed);
    nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    return 0;
}

int main(void)
{
    if (CU_initialize_registry() != CUE_SUCCESS) return 1;
    CU_pSuite s = CU_add_suite("executor", suite_init, suite_clean);
    CU_add_test(s, "start validation", test_start_validation);
    CU_add_test(s, "final answer, usage, tokens, prompts", test_final_answer);
    CU_add_test(s, "one tool call then the answer", test_tool_then_answer);
    CU_add_test(s, "tool errors and unlisted tools are observations", test_tool_error_and_unlisted_tool);
    CU_add_test(s, "guardrail fails twice then passes", test_guardrail);
    CU_add_test(s, "guardrail gives up after three corrections", test_guardrail_gives_up);
    CU_add_test(s, "500: backoff with the attempt recorded", test_500_backoff);
    CU_add_test(s, "429: Retry-After honoured", test_429_retry_after);
    CU_add_test(s, "400: failed, not retryable", test_400_fails);
    CU_add_test(s, "no provider, missing secret", test_not_configured);
    CU_add_test(s, "max_iter: best final answer, then max_iter_exceeded", test_max_iter);
    CU_add_test(s, "delegation to a coworker; unknown coworker", test_delegation);
    CU_add_test(s, "hierarchical manager delegates to its team", test_hierarchical_manager);
    CU_add_test(s, "dependency outputs and extra context", test_dependency_context);
    CU_add_test(s, "memory and max_rpm", test_memory_and_rpm);
    CU_add_test(s, "anthropic provider: tools and the forced final call", test_anthropic);
    CU_add_test(s, "max_execution_time", test_deadline);
    CU_add_test(s, "abort LOST during a hanging call", test_abort_lost);
    CU_add_test(s, "abort HANDBACK while preparing", test_abort_handback);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    unsigned failed = CU_get_number_of_failures() + CU_get_number_of_tests_failed();
    if (CU_get_number_of_suites_failed()) failed++;
    CU_cleanup_registry();
    return failed ? 1 : 0;
}
