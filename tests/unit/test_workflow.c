/* CUnit suite for server/workflow without a database: workflow validation (every rule and its
 * message), placeholders, StartRun input resolution, field masks, page tokens and the built-in
 * templates. */
#include <CUnit/Basic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent/agent_api.h"
#include "core/arena.h"
#include "google/protobuf/duration.pb-c.h"
#include "core/placeholder.h"
#include "workflow/template.h"
#include "workflow/workflow_api.h"

#define A1 "11111111-1111-4111-8111-111111111111"
#define A2 "22222222-2222-4222-8222-222222222222"
#define DISABLED "33333333-3333-4333-8333-333333333333"
#define MANAGER "44444444-4444-4444-8444-444444444444"
#define TOPICAL "55555555-5555-4555-8555-555555555555" /* backstory uses {topic} */

static char msg[AZ_MSG_MAX];

/* ---------------------------------------------------------------- fixtures */

static Agentz__V1__Agent agents[5];

static az_err lookup(void *arg, const char *id, const Agentz__V1__Agent **out, char *m)
{
    (void)arg;
    static const char *const ids[] = {A1, A2, DISABLED, MANAGER, TOPICAL};
    for (int i = 0; i < 5; i++) {
        if (strcmp(ids[i], id) == 0) {
            *out = &agents[i];
            return AZ_OK;
        }
    }
    return az_fail(m, AZ_ERR_NOT_FOUND, "agent %s not found", id);
}

static void setup_agents(void)
{
    for (int i = 0; i < 5; i++) {
        agentz__v1__agent__init(&agents[i]);
        agents[i].role = "Researcher";
        agents[i].goal = "Find things";
        agents[i].backstory = "Knows where to look.";
    }
    agents[2].disabled = 1;
    agents[4].backstory = "An expert on {topic}.";
}

/* A workflow of up to 8 steps whose strings can be changed per test. */
typedef struct fixture {
    Agentz__V1__Workflow w;
    Agentz__V1__Step steps[8];
    Agentz__V1__Step *step_ptrs[8];
    Agentz__V1__WorkflowInput inputs[4];
    Agentz__V1__WorkflowInput *input_ptrs[4];
    char *deps[8][4];
    char *ctx[8][4];
} fixture;

static fixture fx;

/* A valid sequential workflow: research -> write -> review, input topic. */
static Agentz__V1__Workflow *base(void)
{
    memset(&fx, 0, sizeof fx);
    agentz__v1__workflow__init(&fx.w);
    fx.w.name = "blog";
    fx.w.process = AGENTZ__V1__PROCESS__PROCESS_SEQUENTIAL;
    static const char *const ids[] = {"research", "write", "review"};
    for (int i = 0; i < 8; i++) {
        agentz__v1__step__init(&fx.steps[i]);
        fx.step_ptrs[i] = &fx.steps[i];
        fx.steps[i].id = (char *)(i < 3 ? ids[i] : "");
        fx.steps[i].agent_id = A1;
        fx.steps[i].description = "Work on {topic}.";
        fx.steps[i].expected_output = "A text.";
        fx.steps[i].depends_on = fx.deps[i];
        fx.steps[i].context_from = fx.ctx[i];
    }
    for (int i = 0; i < 4; i++) {
        agentz__v1__workflow_input__init(&fx.inputs[i]);
        fx.input_ptrs[i] = &fx.inputs[i];
    }
    fx.inputs[0].name = "topic";
    fx.inputs[0].required = 1;
    fx.w.n_inputs = 1;
    fx.w.inputs = fx.input_ptrs;
    fx.w.n_steps = 3;
    fx.w.steps = fx.step_ptrs;
    return &fx.w;
}

static Agentz__V1__Workflow *parallel(void)
{
    Agentz__V1__Workflow *w = base();
    w->process = AGENTZ__V1__PROCESS__PROCESS_PARALLEL;
    return w;
}

static void dep(int step, const char *on)
{
    fx.deps[step][fx.steps[step].n_depends_on++] = (char *)on;
}

static void ctx_from(int step, const char *from)
{
    fx.ctx[step][fx.steps[step].n_context_from++] = (char *)from;
}

static az_err validate(const Agentz__V1__Workflow *w)
{
    strcpy(msg, "(untouched)");
    return az_workflow_validate(w, lookup, NULL, msg);
}

/* Asserts validation fails with INVALID_ARGUMENT and exactly this message. */
#define EXPECT_INVALID(w, text)                                                                 \
    do {                                                                                         \
        az_err e_ = validate(w);                                                                 \
        if (e_ != AZ_ERR_INVALID || strcmp(msg, text) != 0)                                      \
            fprintf(stderr, "\n  line %d: got %d \"%s\"\n  want \"%s\"\n", __LINE__, e_, msg, text); \
        CU_ASSERT_EQUAL(e_, AZ_ERR_INVALID);                                                     \
        CU_ASSERT_STRING_EQUAL(msg, text);                                                       \
    } while (0)

/* Asserts validation fails and the message contains text. */
#define EXPECT_INVALID_HAS(w, text)                                                              \
    do {                                                                                         \
        az_err e_ = validate(w);                                                                 \
        if (e_ != AZ_ERR_INVALID || !strstr(msg, text))                                          \
            fprintf(stderr, "\n  line %d: got %d \"%s\"\n  want \"…%s…\"\n", __LINE__, e_, msg, text); \
        CU_ASSERT_EQUAL(e_, AZ_ERR_INVALID);                                                     \
        CU_ASSERT_PTR_NOT_NULL(strstr(msg, text));                                               \
    } while (0)

#define EXPECT_OK(w)                                                                             \
    do {                                                                                         \
        az_err e_ = validate(w);                                                                 \
        if (e_ != AZ_OK) fprintf(stderr, "\n  line %d: unexpected \"%s\"\n", __LINE__, msg);     \
        CU_ASSERT_EQUAL(e_, AZ_OK);                                                              \
    } while (0)

/* ---------------------------------------------------------------- workflow-level rules */

static void test_valid_workflows(void)
{
    EXPECT_OK(base());
    Agentz__V1__Workflow *w = base();
    w->process = 0; /* unspecified = sequential */
    EXPECT_OK(w);
    w = parallel();
    dep(1, "research");
    dep(2, "research");
    dep(2, "write");
    EXPECT_OK(w);
    w = base();
    w->process = AGENTZ__V1__PROCESS__PROCESS_HIERARCHICAL;
    w->manager_agent_id = MANAGER;
    fx.steps[0].agent_id = ""; /* the manager delegates */
    EXPECT_OK(w);
}

static void test_name_and_enums(void)
{
    Agentz__V1__Workflow *w = base();
    w->name = "";
    EXPECT_INVALID(w, "workflow.name is required");
    char long_name[200];
    memset(long_name, 'n', 129);
    long_name[129] = '\0';
    w = base();
    w->name = long_name;
    EXPECT_INVALID(w, "workflow.name: longer than 128 characters");
    w = base();
    w->process = 7;
    EXPECT_INVALID(w, "workflow.process: unknown value 7");
    w = base();
    w->failure_policy = 9;
    EXPECT_INVALID(w, "workflow.failure_policy: unknown value 9");
}

static void test_step_count(void)
{
    Agentz__V1__Workflow *w = base();
    w->n_steps = 0;
    EXPECT_INVALID(w, "workflow.steps: at least one step is required");
    /* 101 steps: the pointer array can repeat one step, the count check comes first. */
    Agentz__V1__Step *many[101];
    for (int i = 0; i < 101; i++) many[i] = &fx.steps[0];
    w = base();
    w->n_steps = 101;
    w->steps = many;
    EXPECT_INVALID(w, "workflow.steps: at most 100 steps");
}

static void test_step_ids(void)
{
    Agentz__V1__Workflow *w = base();
    fx.steps[1].id = "";
    EXPECT_INVALID(w, "workflow.steps[1].id is required");
    w = base();
    fx.steps[1].id = "Write";
    EXPECT_INVALID(w, "workflow.steps[1] (\"Write\").id: \"Write\" must be 1..64 characters of a-z, 0-9, '_', '-'");
    char id65[70];
    memset(id65, 'a', 65);
    id65[65] = '\0';
    w = base();
    fx.steps[1].id = id65;
    EXPECT_INVALID_HAS(w, "must be 1..64 characters");
    char id64[70];
    memset(id64, 'a', 64);
    id64[64] = '\0';
    w = base();
    fx.steps[1].id = id64;
    EXPECT_OK(w);
    w = base();
    fx.steps[2].id = "research";
    EXPECT_INVALID(w, "workflow.steps[2] (\"research\").id: \"research\" is also the id of workflow.steps[0]");
    w = base();
    fx.steps[2].id = "re_view-2";
    EXPECT_OK(w);
}

static void test_step_texts(void)
{
    Agentz__V1__Workflow *w = base();
    fx.steps[0].description = "";
    EXPECT_INVALID(w, "workflow.steps[0] (\"research\").description is required");
    static char big[16386];
    memset(big, 'd', 16385);
    big[16385] = '\0';
    w = base();
    fx.steps[0].description = big;
    EXPECT_INVALID(w, "workflow.steps[0] (\"research\").description: longer than 16384 characters");
    w = base();
    fx.steps[0].expected_output = big;
    EXPECT_INVALID(w, "workflow.steps[0] (\"research\").expected_output: longer than 16384 characters");
    w = base();
    fx.steps[0].expected_output = ""; /* optional */
    EXPECT_OK(w);
    w = base();
    fx.steps[0].description = "Multi\nline\tis fine.";
    EXPECT_OK(w);
    w = base();
    fx.steps[0].description = "bad\x01control";
    EXPECT_INVALID_HAS(w, "workflow.steps[0] (\"research\").description");
}

static void test_step_agents(void)
{
    Agentz__V1__Workflow *w = base();
    fx.steps[1].agent_id = "";
    EXPECT_INVALID(w, "workflow.steps[1] (\"write\").agent_id is required (optional only for PROCESS_HIERARCHICAL)");
    w = parallel();
    fx.steps[1].agent_id = "";
    EXPECT_INVALID_HAS(w, "workflow.steps[1] (\"write\").agent_id is required");
    w = base();
    fx.steps[1].agent_id = "99999999-9999-4999-8999-999999999999";
    EXPECT_INVALID(w, "workflow.steps[1] (\"write\").agent_id: agent 99999999-9999-4999-8999-999999999999 not found");
    w = base();
    fx.steps[2].agent_id = DISABLED;
    EXPECT_INVALID(w, "workflow.steps[2] (\"review\").agent_id: agent " DISABLED " is disabled");
}

static void test_hierarchical(void)
{
    Agentz__V1__Workflow *w = base();
    w->process = AGENTZ__V1__PROCESS__PROCESS_HIERARCHICAL;
    EXPECT_INVALID(w, "workflow.manager_agent_id is required for PROCESS_HIERARCHICAL");
    w->manager_agent_id = "99999999-9999-4999-8999-999999999999";
    EXPECT_INVALID(w, "workflow.manager_agent_id: agent 99999999-9999-4999-8999-999999999999 not found");
    w->manager_agent_id = DISABLED;
    EXPECT_INVALID(w, "workflow.manager_agent_id: agent " DISABLED " is disabled");
    w->manager_agent_id = MANAGER;
    fx.steps[0].agent_id = "";
    fx.steps[1].agent_id = "";
    EXPECT_OK(w);
    fx.steps[2].agent_id = "99999999-9999-4999-8999-999999999999"; /* optional, but must exist */
    EXPECT_INVALID_HAS(w, "workflow.steps[2] (\"review\").agent_id: agent 99999999");
    fx.steps[2].agent_id = A1;
    dep(2, "write");
    EXPECT_INVALID_HAS(w, "workflow.steps[2] (\"review\").depends_on: use process PARALLEL for depends_on");
}

/* ---------------------------------------------------------------- graph rules */

static void test_depends_on(void)
{
    Agentz__V1__Workflow *w = base();
    dep(1, "research");
    EXPECT_INVALID_HAS(w, "workflow.steps[1] (\"write\").depends_on: use process PARALLEL for depends_on");
    w = parallel();
    dep(2, "draft");
    EXPECT_INVALID(w, "workflow.steps[2] (\"review\").depends_on[0]: unknown step \"draft\"");
    w = parallel();
    dep(2, "write");
    dep(2, "review");
    EXPECT_INVALID(w, "workflow.steps[2] (\"review\").depends_on[1]: a step cannot depend on itself");
    w = parallel();
    dep(2, "write");
    dep(2, "write");
    EXPECT_INVALID(w, "workflow.steps[2] (\"review\").depends_on[1]: \"write\" is listed twice");
    /* Forward references are fine in a DAG. */
    w = parallel();
    dep(0, "review");
    EXPECT_OK(w);
}

static void test_cycles(void)
{
    Agentz__V1__Workflow *w = parallel();
    dep(0, "write");
    dep(1, "research");
    EXPECT_INVALID(w, "workflow.steps[0] (\"research\").depends_on: dependency cycle research -> write -> research");
    w = parallel();
    dep(0, "write");
    dep(1, "review");
    dep(2, "research");
    EXPECT_INVALID(w, "workflow.steps[0] (\"research\").depends_on: dependency cycle research -> write -> review -> research");
    /* A cycle not through the first step names the step it starts from. */
    w = parallel();
    dep(1, "review");
    dep(2, "write");
    EXPECT_INVALID(w, "workflow.steps[1] (\"write\").depends_on: dependency cycle write -> review -> write");
    /* A diamond is not a cycle. */
    w = parallel();
    w->n_steps = 4;
    fx.steps[3].id = "merge";
    dep(1, "research");
    dep(2, "research");
    dep(3, "write");
    dep(3, "review");
    EXPECT_OK(w);
}

static void test_context_from(void)
{
    Agentz__V1__Workflow *w = base();
    ctx_from(2, "research");
    ctx_from(2, "write");
    EXPECT_OK(w);
    w = base();
    ctx_from(1, "review");
    EXPECT_INVALID(w, "workflow.steps[1] (\"write\").context_from[0]: step \"review\" runs later; context_from must name earlier steps");
    w = base();
    ctx_from(1, "nope");
    EXPECT_INVALID(w, "workflow.steps[1] (\"write\").context_from[0]: unknown step \"nope\"");
    w = base();
    ctx_from(1, "write");
    EXPECT_INVALID(w, "workflow.steps[1] (\"write\").context_from[0]: a step cannot use its own output");
    w = base();
    ctx_from(2, "write");
    ctx_from(2, "write");
    EXPECT_INVALID(w, "workflow.steps[2] (\"review\").context_from[1]: \"write\" is listed twice");
    /* Parallel: only upstream steps (transitively) are finished in time. */
    w = parallel();
    dep(1, "research");
    dep(2, "write");
    ctx_from(2, "research"); /* through write */
    EXPECT_OK(w);
    w = parallel();
    dep(2, "write");
    ctx_from(2, "research");
    EXPECT_INVALID_HAS(w, "workflow.steps[2] (\"review\").context_from[0]: step \"research\" is not upstream of this step");
}

/* ---------------------------------------------------------------- inputs and placeholders */

static void test_inputs(void)
{
    Agentz__V1__Workflow *w = base();
    fx.inputs[0].name = "1topic";
    EXPECT_INVALID(w, "workflow.inputs[0].name: \"1topic\" must match [a-zA-Z_][a-zA-Z0-9_]{0,63}");
    w = base();
    fx.inputs[0].name = "";
    EXPECT_INVALID(w, "workflow.inputs[0].name is required");
    w = base();
    fx.inputs[1].name = "topic";
    w->n_inputs = 2;
    EXPECT_INVALID(w, "workflow.inputs[1].name: \"topic\" is declared twice");
    w = base();
    fx.inputs[0].name = "Topic_2";
    fx.steps[0].description = "About {Topic_2}";
    fx.steps[1].description = "x";
    fx.steps[2].description = "x";
    EXPECT_OK(w);
}

static void test_placeholders_declared(void)
{
    Agentz__V1__Workflow *w = base();
    fx.steps[0].description = "Research {subject} deeply";
    EXPECT_INVALID(w, "workflow.steps[0] (\"research\").description: placeholder {subject} is not declared in inputs");
    w = base();
    fx.steps[1].expected_output = "About {audience}";
    EXPECT_INVALID(w, "workflow.steps[1] (\"write\").expected_output: placeholder {audience} is not declared in inputs");
    /* Literal braces and non-identifiers are not placeholders. */
    w = base();
    fx.steps[0].description = "JSON like {{\"a\": 1}} and {{subject}} and { spaced } and {1x} and {}";
    EXPECT_OK(w);
    /* Agents' role, goal and backstory are interpolated too (CrewAI). */
    w = base();
    w->n_inputs = 0;
    fx.steps[0].description = fx.steps[1].description = fx.steps[2].description = "plain";
    fx.steps[1].agent_id = TOPICAL;
    EXPECT_INVALID(w, "workflow.steps[1] (\"write\").agent_id: agent " TOPICAL " backstory: placeholder {topic} is not declared in inputs");
    w->n_inputs = 1;
    EXPECT_OK(w);
    w = base();
    w->n_inputs = 0;
    fx.steps[0].description = fx.steps[1].description = fx.steps[2].description = "plain";
    w->process = AGENTZ__V1__PROCESS__PROCESS_HIERARCHICAL;
    w->manager_agent_id = TOPICAL;
    EXPECT_INVALID(w, "workflow.manager_agent_id: agent " TOPICAL " backstory: placeholder {topic} is not declared in inputs");
}

static void test_task_fields(void)
{
    Agentz__V1__RetryPolicy rp = AGENTZ__V1__RETRY_POLICY__INIT;
    rp.backoff_coefficient = 0.5;
    Agentz__V1__Workflow *w = base();
    fx.steps[1].retry_policy = &rp;
    EXPECT_INVALID_HAS(w, "workflow.steps[1] (\"write\").retry_policy.backoff_coefficient");
    rp.backoff_coefficient = 2;
    rp.max_attempts = 5;
    EXPECT_OK(w);
    Google__Protobuf__Duration d = GOOGLE__PROTOBUF__DURATION__INIT;
    d.seconds = 7 * 86400 + 1;
    w = base();
    fx.steps[0].timeout = &d;
    EXPECT_INVALID_HAS(w, "workflow.steps[0] (\"research\").timeout");
    d.seconds = -1;
    EXPECT_INVALID_HAS(w, "workflow.steps[0] (\"research\").timeout");
    d.seconds = 7 * 86400;
    EXPECT_OK(w);
}

static void test_labels_and_webhooks(void)
{
    Agentz__V1__Workflow__LabelsEntry l = AGENTZ__V1__WORKFLOW__LABELS_ENTRY__INIT;
    Agentz__V1__Workflow__LabelsEntry *ls[1] = {&l};
    l.key = "Bad Key";
    l.value = "v";
    Agentz__V1__Workflow *w = base();
    w->n_labels = 1;
    w->labels = ls;
    EXPECT_INVALID_HAS(w, "workflow.labels: key \"Bad Key\"");
    l.key = "team";
    EXPECT_OK(w);
    char *urls[9] = {"https://a.example/hook", "ftp://b.example", "http://", "https://x", "https://x",
                     "https://x", "https://x", "https://x", "https://x"};
    w = base();
    w->n_webhook_urls = 1;
    w->webhook_urls = urls;
    EXPECT_OK(w);
    w->n_webhook_urls = 2;
    EXPECT_INVALID(w, "workflow.webhook_urls[1]: must be an http:// or https:// URL");
    w->webhook_urls = urls + 1;
    w->n_webhook_urls = 1;
    w->webhook_urls = &urls[2];
    EXPECT_INVALID(w, "workflow.webhook_urls[0]: URL has no host");
    w->webhook_urls = urls;
    w->n_webhook_urls = 9;
    EXPECT_INVALID(w, "workflow.webhook_urls: at most 8 URLs");
}

/* ---------------------------------------------------------------- placeholder module */

typedef struct names {
    char list[8][70];
    int n;
} names;

static az_err collect(void *arg, const char *name, size_t len, char *m)
{
    (void)m;
    names *ns = arg;
    if (ns->n < 8) snprintf(ns->list[ns->n++], 70, "%.*s", (int)len, name);
    return AZ_OK;
}

static void test_placeholder_scan(void)
{
    names ns = {.n = 0};
    CU_ASSERT_EQUAL(az_placeholder_scan("a {x} b {{y}} {z_1}{w} {} {1a} { s } {{{q}}} {x}", collect, &ns, msg), AZ_OK);
    CU_ASSERT_EQUAL(ns.n, 5);
    CU_ASSERT_STRING_EQUAL(ns.list[0], "x");
    CU_ASSERT_STRING_EQUAL(ns.list[1], "z_1");
    CU_ASSERT_STRING_EQUAL(ns.list[2], "w");
    CU_ASSERT_STRING_EQUAL(ns.list[3], "q");
    CU_ASSERT_STRING_EQUAL(ns.list[4], "x");
    ns.n = 0;
    CU_ASSERT_EQUAL(az_placeholder_scan(NULL, collect, &ns, msg), AZ_OK);
    CU_ASSERT_EQUAL(az_placeholder_scan("{unclosed", collect, &ns, msg), AZ_OK);
    CU_ASSERT_EQUAL(ns.n, 0);
    /* 64-character names count, 65 do not. */
    char s[80] = "{";
    memset(s + 1, 'n', 64);
    strcpy(s + 65, "}");
    CU_ASSERT_EQUAL(az_placeholder_scan(s, collect, &ns, msg), AZ_OK);
    CU_ASSERT_EQUAL(ns.n, 1);
    ns.n = 0;
    memset(s + 1, 'n', 65);
    strcpy(s + 66, "}");
    CU_ASSERT_EQUAL(az_placeholder_scan(s, collect, &ns, msg), AZ_OK);
    CU_ASSERT_EQUAL(ns.n, 0);
    CU_ASSERT_TRUE(az_placeholder_name_ok("topic"));
    CU_ASSERT_TRUE(az_placeholder_name_ok("_T9"));
    CU_ASSERT_FALSE(az_placeholder_name_ok("9t"));
    CU_ASSERT_FALSE(az_placeholder_name_ok("a-b"));
    CU_ASSERT_FALSE(az_placeholder_name_ok(""));
    CU_ASSERT_FALSE(az_placeholder_name_ok(NULL));
}

static const char *values(void *arg, const char *name, size_t len)
{
    (void)arg;
    if (len == 5 && memcmp(name, "topic", 5) == 0) return "AI {agents}";
    if (len == 3 && memcmp(name, "who", 3) == 0) return "";
    return NULL;
}

static void test_placeholder_fill(void)
{
    az_arena *a = az_arena_new(0);
    CU_ASSERT_STRING_EQUAL(az_placeholder_fill("About {topic}.", values, NULL, a), "About AI {agents}.");
    /* Values are not interpolated again; literal braces collapse; unknown names stay. */
    CU_ASSERT_STRING_EQUAL(az_placeholder_fill("{{topic}} {topic} {{{topic}}} {missing} x}}y {who}!", values, NULL, a),
                           "{topic} AI {agents} {AI {agents}} {missing} x}y !");
    CU_ASSERT_STRING_EQUAL(az_placeholder_fill("{ json } {}", values, NULL, a), "{ json } {}");
    CU_ASSERT_STRING_EQUAL(az_placeholder_fill("", values, NULL, a), "");
    CU_ASSERT_STRING_EQUAL(az_placeholder_fill(NULL, values, NULL, a), "");
    CU_ASSERT_STRING_EQUAL(az_placeholder_fill("{", values, NULL, a), "{");
    az_arena_free(a);
}

/* ---------------------------------------------------------------- inputs, masks, tokens */

static void test_resolve_inputs(void)
{
    az_arena *a = az_arena_new(0);
    Agentz__V1__Workflow *w = base();
    fx.inputs[1].name = "audience";
    fx.inputs[1].default_value = "everyone";
    w->n_inputs = 2;
    Agentz__V1__StartRunRequest__InputsEntry e1 = AGENTZ__V1__START_RUN_REQUEST__INPUTS_ENTRY__INIT;
    Agentz__V1__StartRunRequest__InputsEntry e2 = AGENTZ__V1__START_RUN_REQUEST__INPUTS_ENTRY__INIT;
    Agentz__V1__StartRunRequest__InputsEntry *given[2] = {&e1, &e2};
    az_run_input *in;
    size_t n;
    CU_ASSERT_EQUAL(az_workflow_resolve_inputs(w, given, 0, a, &in, &n, msg), AZ_ERR_INVALID);
    CU_ASSERT_STRING_EQUAL(msg, "inputs: missing required input \"topic\"");
    e1.key = "topic";
    e1.value = "LLMs";
    CU_ASSERT_EQUAL_FATAL(az_workflow_resolve_inputs(w, given, 1, a, &in, &n, msg), AZ_OK);
    CU_ASSERT_EQUAL_FATAL(n, 2);
    CU_ASSERT_STRING_EQUAL(in[0].name, "topic");
    CU_ASSERT_STRING_EQUAL(in[0].value, "LLMs");
    CU_ASSERT_STRING_EQUAL(in[1].name, "audience");
    CU_ASSERT_STRING_EQUAL(in[1].value, "everyone");
    e2.key = "x";
    e2.value = "1";
    CU_ASSERT_EQUAL(az_workflow_resolve_inputs(w, given, 2, a, &in, &n, msg), AZ_ERR_INVALID);
    CU_ASSERT_STRING_EQUAL(msg, "inputs: unknown input \"x\"");
    e2.key = "audience";
    static char big[16386];
    memset(big, 'v', 16385);
    e2.value = big;
    CU_ASSERT_EQUAL(az_workflow_resolve_inputs(w, given, 2, a, &in, &n, msg), AZ_ERR_INVALID);
    CU_ASSERT_STRING_EQUAL(msg, "inputs[audience]: longer than 16384 characters");
    e2.value = "experts";
    CU_ASSERT_EQUAL_FATAL(az_workflow_resolve_inputs(w, given, 2, a, &in, &n, msg), AZ_OK);
    CU_ASSERT_STRING_EQUAL(in[1].value, "experts");
    /* An optional input without default resolves to "". */
    fx.inputs[1].default_value = "";
    CU_ASSERT_EQUAL_FATAL(az_workflow_resolve_inputs(w, given, 1, a, &in, &n, msg), AZ_OK);
    CU_ASSERT_STRING_EQUAL(in[1].value, "");
    az_arena_free(a);
}

static void test_apply_mask(void)
{
    Agentz__V1__Workflow dst = AGENTZ__V1__WORKFLOW__INIT, src = AGENTZ__V1__WORKFLOW__INIT;
    Agentz__V1__Step s = AGENTZ__V1__STEP__INIT;
    Agentz__V1__Step *sp[1] = {&s};
    dst.name = "old";
    dst.description = "old description";
    dst.n_steps = 1;
    dst.steps = sp;
    src.name = "new";
    src.process = AGENTZ__V1__PROCESS__PROCESS_PARALLEL;
    Google__Protobuf__FieldMask m = GOOGLE__PROTOBUF__FIELD_MASK__INIT;
    char *paths[] = {"description", "process"};
    m.n_paths = 2;
    m.paths = paths;
    CU_ASSERT_EQUAL(az_workflow_apply_mask(&dst, &src, &m, msg), AZ_OK);
    CU_ASSERT_STRING_EQUAL(dst.name, "old");
    CU_ASSERT_STRING_EQUAL(dst.description, "");
    CU_ASSERT_EQUAL(dst.process, AGENTZ__V1__PROCESS__PROCESS_PARALLEL);
    CU_ASSERT_EQUAL(dst.n_steps, 1);
    /* Empty mask: populated fields only. */
    CU_ASSERT_EQUAL(az_workflow_apply_mask(&dst, &src, NULL, msg), AZ_OK);
    CU_ASSERT_STRING_EQUAL(dst.name, "new");
    CU_ASSERT_EQUAL(dst.n_steps, 1);
    char *star[] = {"*"};
    m.n_paths = 1;
    m.paths = star;
    CU_ASSERT_EQUAL(az_workflow_apply_mask(&dst, &src, &m, msg), AZ_OK);
    CU_ASSERT_EQUAL(dst.n_steps, 0);
    char *bad[] = {"version"};
    m.paths = bad;
    CU_ASSERT_EQUAL(az_workflow_apply_mask(&dst, &src, &m, msg), AZ_ERR_INVALID);
    CU_ASSERT_STRING_EQUAL(msg, "update_mask: \"version\" is output only");
    char *unknown[] = {"colour"};
    m.paths = unknown;
    CU_ASSERT_EQUAL(az_workflow_apply_mask(&dst, &src, &m, msg), AZ_ERR_INVALID);
    CU_ASSERT_STRING_EQUAL(msg, "update_mask: unknown field \"colour\"");
    char *all[] = {"name", "description", "process", "manager_agent_id", "steps", "inputs",
                   "failure_policy", "labels", "webhook_urls"};
    m.paths = all;
    m.n_paths = 9;
    CU_ASSERT_EQUAL(az_workflow_apply_mask(&dst, &src, &m, msg), AZ_OK);
}

/* ---------------------------------------------------------------- templates */

static void test_builtin_templates(void)
{
    az_arena *a = az_arena_new(0);
    Agentz__V1__Template **list;
    size_t n;
    CU_ASSERT_EQUAL_FATAL(az_template_builtins(a, &list, &n, msg), AZ_OK);
    CU_ASSERT_EQUAL_FATAL(n, 3);
    static const char *const ids[] = {"research-write-review", "code-review", "support-triage"};
    static const int processes[] = {AGENTZ__V1__PROCESS__PROCESS_SEQUENTIAL,
                                    AGENTZ__V1__PROCESS__PROCESS_PARALLEL,
                                    AGENTZ__V1__PROCESS__PROCESS_HIERARCHICAL};
    static const char *const first_input[] = {"topic", "code", "ticket"};
    for (size_t i = 0; i < n; i++) {
        const Agentz__V1__Template *t = list[i];
        CU_ASSERT_STRING_EQUAL(t->id, ids[i]);
        CU_ASSERT_TRUE(t->builtin);
        CU_ASSERT_TRUE(strlen(t->description) > 40);
        CU_ASSERT_PTR_NOT_NULL_FATAL(t->workflow);
        CU_ASSERT_EQUAL((int)t->workflow->process, processes[i]);
        CU_ASSERT_TRUE(t->workflow->n_inputs >= 1);
        CU_ASSERT_STRING_EQUAL(t->workflow->inputs[0]->name, first_input[i]);
        CU_ASSERT_TRUE(t->workflow->inputs[0]->required);
        CU_ASSERT_TRUE(t->n_agents >= 3);
        for (size_t k = 0; k < t->n_agents; k++) {
            CU_ASSERT_TRUE(strlen(t->agents[k]->role) > 0);
            CU_ASSERT_TRUE(strlen(t->agents[k]->goal) > 20);
            CU_ASSERT_TRUE(strlen(t->agents[k]->backstory) > 100);
        }
        az_err err = az_workflow_validate_template(t, msg);
        if (err != AZ_OK) fprintf(stderr, "\n  template %s: %s\n", t->id, msg);
        CU_ASSERT_EQUAL(err, AZ_OK);
    }
    /* code-review: three independent reviews merged by one summary step. */
    const Agentz__V1__Workflow *cr = list[1]->workflow;
    CU_ASSERT_EQUAL_FATAL(cr->n_steps, 4);
    CU_ASSERT_EQUAL(cr->steps[3]->n_depends_on, 3);
    CU_ASSERT_STRING_EQUAL(cr->inputs[1]->name, "language");
    /* support-triage: a manager that can delegate. */
    const Agentz__V1__Template *st = list[2];
    CU_ASSERT_STRING_EQUAL(st->workflow->manager_agent_id, "support-manager");
    CU_ASSERT_TRUE(st->agents[0]->allow_delegation);
    az_arena_free(a);
}

static void test_template_validation(void)
{
    az_arena *a = az_arena_new(0);
    Agentz__V1__Template **list;
    size_t n;
    CU_ASSERT_EQUAL_FATAL(az_template_builtins(a, &list, &n, msg), AZ_OK);
    Agentz__V1__Template t = *list[0];
    /* A step naming an agent the template does not have. */
    Agentz__V1__Workflow w = *t.workflow;
    Agentz__V1__Step s0 = *w.steps[0];
    Agentz__V1__Step *steps[3] = {&s0, w.steps[1], w.steps[2]};
    s0.agent_id = "ghost";
    w.steps = steps;
    t.workflow = &w;
    CU_ASSERT_EQUAL(az_workflow_validate_template(&t, msg), AZ_ERR_INVALID);
    CU_ASSERT_STRING_EQUAL(msg, "workflow.steps[0] (\"research\").agent_id: agent ghost not found");
    /* Two agents with one name. */
    t = *list[0];
    Agentz__V1__Agent dup = *t.agents[1];
    dup.name = t.agents[0]->name;
    Agentz__V1__Agent *ags[3] = {t.agents[0], &dup, t.agents[2]};
    t.agents = ags;
    CU_ASSERT_EQUAL(az_workflow_validate_template(&t, msg), AZ_ERR_INVALID);
    CU_ASSERT_STRING_EQUAL(msg, "template.agents[1].name: \"researcher\" is used twice");
    /* An invalid agent. */
    dup = *list[0]->agents[1];
    dup.role = "";
    CU_ASSERT_EQUAL(az_workflow_validate_template(&t, msg), AZ_ERR_INVALID);
    CU_ASSERT_STRING_EQUAL(msg, "template.agents[1]: agent.role is required");
    az_arena_free(a);
}

int main(void)
{
    setup_agents();
    if (CU_initialize_registry() != CUE_SUCCESS) return 1;
    CU_pSuite v = CU_add_suite("workflow_validate", NULL, NULL);
    if (!v) return 1;
    CU_add_test(v, "valid workflows of each process", test_valid_workflows);
    CU_add_test(v, "name, process, failure policy", test_name_and_enums);
    CU_add_test(v, "step count", test_step_count);
    CU_add_test(v, "step ids", test_step_ids);
    CU_add_test(v, "step texts", test_step_texts);
    CU_add_test(v, "step agents exist and are enabled", test_step_agents);
    CU_add_test(v, "hierarchical manager", test_hierarchical);
    CU_add_test(v, "depends_on", test_depends_on);
    CU_add_test(v, "cycles report their path", test_cycles);
    CU_add_test(v, "context_from", test_context_from);
    CU_add_test(v, "inputs", test_inputs);
    CU_add_test(v, "placeholders must be declared", test_placeholders_declared);
    CU_add_test(v, "retry policy and timeout use task bounds", test_task_fields);
    CU_add_test(v, "labels and webhook urls", test_labels_and_webhooks);
    CU_pSuite p = CU_add_suite("placeholder", NULL, NULL);
    if (!p) return 1;
    CU_add_test(p, "scan", test_placeholder_scan);
    CU_add_test(p, "fill", test_placeholder_fill);
    CU_pSuite o = CU_add_suite("workflow_api", NULL, NULL);
    if (!o) return 1;
    CU_add_test(o, "StartRun input resolution", test_resolve_inputs);
    CU_add_test(o, "field masks", test_apply_mask);
    CU_pSuite t = CU_add_suite("templates", NULL, NULL);
    if (!t) return 1;
    CU_add_test(t, "built-ins are complete and valid", test_builtin_templates);
    CU_add_test(t, "template validation", test_template_validation);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    unsigned failures = CU_get_number_of_failures() + CU_get_number_of_tests_failed();
    CU_cleanup_registry();
    return failures ? 1 : 0;
}
