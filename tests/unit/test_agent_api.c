/* CUnit suite for server/agent/agent_api (no database): az_agent_validate rule by rule,
 * az_agent_apply_mask (AIP-134 semantics) and az_agent_parse_selector. */
#include <CUnit/Basic.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent/agent_api.h"
#include "core/arena.h"
#include "tools/tools.h"

static az_arena *arena;
static char msg[AZ_MSG_MAX];

static int suite_init(void)
{
    arena = az_arena_new(0);
    return arena ? 0 : 1;
}

static int suite_clean(void)
{
    az_arena_free(arena);
    arena = NULL;
    return 0;
}

/* ---- builders (all memory from the arena) ---- */

static char *rep(const char *unit, size_t n)
{
    size_t u = strlen(unit);
    char *s = az_arena_alloc(arena, u * n + 1);
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    for (size_t i = 0; i < n; i++) memcpy(s + i * u, unit, u);
    s[u * n] = '\0';
    return s;
}

static char *sdup(const char *s)
{
    char *d = az_arena_strdup(arena, s);
    CU_ASSERT_PTR_NOT_NULL_FATAL(d);
    return d;
}

static Agentz__V1__LlmConfig *new_llm(const char *provider, const char *model)
{
    Agentz__V1__LlmConfig *l = az_arena_alloc(arena, sizeof *l);
    CU_ASSERT_PTR_NOT_NULL_FATAL(l);
    agentz__v1__llm_config__init(l);
    l->provider = sdup(provider);
    l->model = sdup(model);
    return l;
}

static Google__Protobuf__DoubleValue *dbl(double v)
{
    Google__Protobuf__DoubleValue *d = az_arena_alloc(arena, sizeof *d);
    CU_ASSERT_PTR_NOT_NULL_FATAL(d);
    google__protobuf__double_value__init(d);
    d->value = v;
    return d;
}

static Google__Protobuf__Duration *dur(int64_t s, int32_t ns)
{
    Google__Protobuf__Duration *d = az_arena_alloc(arena, sizeof *d);
    CU_ASSERT_PTR_NOT_NULL_FATAL(d);
    google__protobuf__duration__init(d);
    d->seconds = s;
    d->nanos = ns;
    return d;
}

static void set_tools(Agentz__V1__Agent *a, size_t n, const char *const *names)
{
    a->n_tools = n;
    a->tools = az_arena_alloc(arena, (n ? n : 1) * sizeof *a->tools);
    CU_ASSERT_PTR_NOT_NULL_FATAL(a->tools);
    for (size_t i = 0; i < n; i++) a->tools[i] = sdup(names[i]);
}

static void set_labels(Agentz__V1__Agent *a, size_t n, const char *const *kv)
{
    a->n_labels = n;
    a->labels = az_arena_alloc(arena, (n ? n : 1) * sizeof *a->labels);
    CU_ASSERT_PTR_NOT_NULL_FATAL(a->labels);
    for (size_t i = 0; i < n; i++) {
        Agentz__V1__Agent__LabelsEntry *e = az_arena_alloc(arena, sizeof *e);
        CU_ASSERT_PTR_NOT_NULL_FATAL(e);
        agentz__v1__agent__labels_entry__init(e);
        e->key = sdup(kv[2 * i]);
        e->value = sdup(kv[2 * i + 1]);
        a->labels[i] = e;
    }
}

/* A fully valid agent every validation test starts from. */
static Agentz__V1__Agent *valid_agent(void)
{
    Agentz__V1__Agent *a = az_arena_alloc(arena, sizeof *a);
    CU_ASSERT_PTR_NOT_NULL_FATAL(a);
    agentz__v1__agent__init(a);
    a->name = sdup("researcher");
    a->role = sdup("Senior Data Researcher");
    a->goal = sdup("Find the latest developments\nand summarise them");
    a->backstory = sdup("A seasoned researcher.\n\tCareful.");
    a->llm = new_llm("openai", "gpt-4o-mini");
    a->llm->temperature = dbl(0.2);
    a->llm->max_tokens = 1000;
    a->llm->base_url = sdup("https://api.example.com/v1");
    a->llm->api_key_secret = sdup("openai-key_1.prod");
    a->llm->timeout = dur(120, 0);
    static const char *const tools[] = {"http_fetch", "calculator"};
    set_tools(a, 2, tools);
    a->max_iter = 25;
    a->max_rpm = 60;
    a->max_execution_time = dur(3600, 0);
    static const char *const labels[] = {"team", "research", "tier.x/y_z-1", "gold"};
    set_labels(a, 2, labels);
    return a;
}

/* Validates and, on failure, checks that the message starts with the field path. */
static void expect_invalid(const Agentz__V1__Agent *a, int creating, const char *field)
{
    strcpy(msg, "(untouched)");
    az_err e = az_agent_validate(a, creating, msg);
    if (e != AZ_ERR_INVALID) fprintf(stderr, "\n  accepted, expected an error on %s\n", field);
    CU_ASSERT_EQUAL(e, AZ_ERR_INVALID);
    if (strncmp(msg, field, strlen(field)) != 0)
        fprintf(stderr, "\n  message \"%s\" does not start with %s\n", msg, field);
    CU_ASSERT_EQUAL(strncmp(msg, field, strlen(field)), 0);
}

static void expect_valid(const Agentz__V1__Agent *a, int creating, const char *what)
{
    az_err e = az_agent_validate(a, creating, msg);
    if (e != AZ_OK) fprintf(stderr, "\n  %s rejected: %s\n", what, msg);
    CU_ASSERT_EQUAL(e, AZ_OK);
}

/* ================================================================ validate */

static void test_valid_baseline(void)
{
    expect_valid(valid_agent(), 1, "baseline (create)");
    expect_valid(valid_agent(), 0, "baseline (update)");
    /* Minimal: only the required fields; no llm, tools, labels. */
    Agentz__V1__Agent *a = az_arena_alloc(arena, sizeof *a);
    CU_ASSERT_PTR_NOT_NULL_FATAL(a);
    agentz__v1__agent__init(a);
    a->role = sdup("r");
    a->goal = sdup("g");
    a->backstory = sdup("b");
    expect_valid(a, 1, "minimal agent");
}

static void test_required_text(void)
{
    Agentz__V1__Agent *a = valid_agent();
    a->role = sdup("");
    expect_invalid(a, 1, "agent.role");
    CU_ASSERT_PTR_NOT_NULL(strstr(msg, "required"));
    a = valid_agent();
    a->goal = sdup("");
    expect_invalid(a, 1, "agent.goal");
    a = valid_agent();
    a->backstory = sdup("");
    expect_invalid(a, 1, "agent.backstory");
    a = valid_agent();
    a->name = sdup("");
    expect_valid(a, 1, "empty name");
}

static void test_text_lengths(void)
{
    static const struct {
        const char *field;
        size_t off, max;
    } f[] = {
        {"agent.name", offsetof(Agentz__V1__Agent, name), AZ_AGENT_NAME_MAX},
        {"agent.role", offsetof(Agentz__V1__Agent, role), AZ_AGENT_ROLE_MAX},
        {"agent.goal", offsetof(Agentz__V1__Agent, goal), AZ_AGENT_GOAL_MAX},
        {"agent.backstory", offsetof(Agentz__V1__Agent, backstory), AZ_AGENT_BACKSTORY_MAX},
    };
    CU_ASSERT_EQUAL(AZ_AGENT_NAME_MAX, 128);
    CU_ASSERT_EQUAL(AZ_AGENT_ROLE_MAX, 256);
    CU_ASSERT_EQUAL(AZ_AGENT_GOAL_MAX, 4096);
    CU_ASSERT_EQUAL(AZ_AGENT_BACKSTORY_MAX, 16384);
    for (size_t i = 0; i < sizeof f / sizeof *f; i++) {
        Agentz__V1__Agent *a = valid_agent();
        char **p = (char **)((char *)a + f[i].off);
        *p = rep("\xc3\xa9", f[i].max); /* exactly max characters, 2*max bytes */
        expect_valid(a, 1, f[i].field);
        *p = rep("x", f[i].max + 1);
        expect_invalid(a, 1, f[i].field);
        CU_ASSERT_PTR_NOT_NULL(strstr(msg, "longer than"));
        *p = sdup("bad\xc0\xaf");
        expect_invalid(a, 1, f[i].field);
    }
}

static void test_newlines(void)
{
    Agentz__V1__Agent *a = valid_agent();
    a->goal = sdup("line one\nline two\r\n\ttab");
    a->backstory = sdup("x\ny");
    expect_valid(a, 1, "multi-line goal and backstory");
    a->role = sdup("two\nlines");
    expect_invalid(a, 1, "agent.role");
    a = valid_agent();
    a->name = sdup("tab\tname");
    expect_invalid(a, 1, "agent.name");
    a = valid_agent();
    a->goal = sdup("bell\x07");
    expect_invalid(a, 1, "agent.goal");
}

static void test_tools(void)
{
    Agentz__V1__Agent *a = valid_agent();
    static const char *const all[] = {"http_fetch", "current_time", "calculator"};
    set_tools(a, 3, all);
    expect_valid(a, 1, "all known tools");
    set_tools(a, 0, NULL);
    expect_valid(a, 1, "no tools");
    static const char *const unknown[] = {"calculator", "shell"};
    set_tools(a, 2, unknown);
    expect_invalid(a, 1, "agent.tools[1]");
    CU_ASSERT_PTR_NOT_NULL(strstr(msg, "shell"));
    /* The message lists the valid names: every built-in tool of the tools module. */
    size_t n_builtin;
    const char *const *builtin = az_tools_builtin_names(&n_builtin);
    CU_ASSERT(n_builtin >= 3);
    for (size_t i = 0; i < n_builtin; i++) CU_ASSERT_PTR_NOT_NULL(strstr(msg, builtin[i]));
    set_tools(a, n_builtin, (const char *const *)builtin);
    expect_valid(a, 1, "every built-in tool");
    /* Delegation tools come with allow_delegation, not by name. */
    static const char *const delegation[] = {"delegate_work_to_coworker"};
    set_tools(a, 1, delegation);
    expect_invalid(a, 1, "agent.tools[0]");
    CU_ASSERT_PTR_NOT_NULL(strstr(msg, "allow_delegation"));
    static const char *const twice[] = {"calculator", "current_time", "calculator"};
    set_tools(a, 3, twice);
    expect_invalid(a, 1, "agent.tools[2]");
    CU_ASSERT_PTR_NOT_NULL(strstr(msg, "twice"));
    static const char *const empty[] = {""};
    set_tools(a, 1, empty);
    expect_invalid(a, 1, "agent.tools[0]");
    /* More than 32 entries. */
    const char *many[33];
    for (int i = 0; i < 33; i++) many[i] = all[i % 3];
    set_tools(a, 33, many);
    expect_invalid(a, 1, "agent.tools");
}

static void test_max_iter(void)
{
    Agentz__V1__Agent *a = valid_agent();
    a->max_iter = 0;
    expect_valid(a, 1, "max_iter 0 on create");
    expect_invalid(a, 0, "agent.max_iter");
    a->max_iter = 1;
    expect_valid(a, 0, "max_iter 1");
    a->max_iter = AZ_AGENT_MAX_ITER_MAX;
    expect_valid(a, 0, "max_iter 100");
    a->max_iter = 101;
    expect_invalid(a, 1, "agent.max_iter");
    a->max_iter = -1;
    expect_invalid(a, 1, "agent.max_iter");
}

static void test_max_rpm(void)
{
    Agentz__V1__Agent *a = valid_agent();
    a->max_rpm = 0;
    expect_valid(a, 1, "max_rpm 0");
    a->max_rpm = 100000;
    expect_valid(a, 1, "max_rpm 100000");
    a->max_rpm = 100001;
    expect_invalid(a, 1, "agent.max_rpm");
    a->max_rpm = -5;
    expect_invalid(a, 1, "agent.max_rpm");
}

static void test_max_execution_time(void)
{
    Agentz__V1__Agent *a = valid_agent();
    a->max_execution_time = NULL;
    expect_valid(a, 1, "unset max_execution_time");
    a->max_execution_time = dur(0, 0);
    expect_valid(a, 1, "zero max_execution_time");
    a->max_execution_time = dur(86400, 0);
    expect_valid(a, 1, "24h max_execution_time");
    a->max_execution_time = dur(86400, 1);
    expect_invalid(a, 1, "agent.max_execution_time");
    a->max_execution_time = dur(86401, 0);
    expect_invalid(a, 1, "agent.max_execution_time");
    a->max_execution_time = dur(-1, 0);
    expect_invalid(a, 1, "agent.max_execution_time");
    a->max_execution_time = dur(0, -5);
    expect_invalid(a, 1, "agent.max_execution_time");
    a->max_execution_time = dur(1, 1000000000);
    expect_invalid(a, 1, "agent.max_execution_time");
}

static void test_llm(void)
{
    Agentz__V1__Agent *a = valid_agent();
    static const char *const providers[] = {"", "openai", "anthropic"};
    for (int i = 0; i < 3; i++) {
        a->llm->provider = sdup(providers[i]);
        expect_valid(a, 1, providers[i]);
    }
    a->llm->provider = sdup("OpenAI");
    expect_invalid(a, 1, "agent.llm.provider");
    a->llm->provider = sdup("gemini");
    expect_invalid(a, 1, "agent.llm.provider");
    CU_ASSERT_PTR_NOT_NULL(strstr(msg, "gemini"));

    a = valid_agent();
    a->llm->model = rep("m", 257);
    expect_invalid(a, 1, "agent.llm.model");

    static const char *const good_urls[] = {"", "http://localhost:8080", "https://h/v1?x=1"};
    static const char *const bad_urls[] = {"ftp://h", "https://", "http:///path", "h/v1",
                                           "https://a b", "HTTP//h", "javascript:alert(1)"};
    for (size_t i = 0; i < sizeof good_urls / sizeof *good_urls; i++) {
        a = valid_agent();
        a->llm->base_url = sdup(good_urls[i]);
        expect_valid(a, 1, good_urls[i]);
    }
    for (size_t i = 0; i < sizeof bad_urls / sizeof *bad_urls; i++) {
        a = valid_agent();
        a->llm->base_url = sdup(bad_urls[i]);
        expect_invalid(a, 1, "agent.llm.base_url");
    }

    a = valid_agent();
    a->llm->api_key_secret = sdup("");
    expect_valid(a, 1, "no api_key_secret");
    static const char *const bad_secrets[] = {"sk-abc def", "a/b", "key$", "sk\xc3\xa9", "a:b"};
    for (size_t i = 0; i < sizeof bad_secrets / sizeof *bad_secrets; i++) {
        a->llm->api_key_secret = sdup(bad_secrets[i]);
        expect_invalid(a, 1, "agent.llm.api_key_secret");
    }
    a->llm->api_key_secret = rep("k", 129);
    expect_invalid(a, 1, "agent.llm.api_key_secret");
    a->llm->api_key_secret = rep("k", 128);
    expect_valid(a, 1, "128-char secret name");

    a = valid_agent();
    a->llm->temperature = dbl(0.0); /* present wrapper with 0: explicit zero, valid */
    expect_valid(a, 1, "temperature 0");
    a->llm->temperature = dbl(2.0);
    expect_valid(a, 1, "temperature 2");
    a->llm->temperature = NULL;
    expect_valid(a, 1, "temperature unset");
    static const double bad_t[] = {-0.01, 2.0001, 100};
    for (size_t i = 0; i < sizeof bad_t / sizeof *bad_t; i++) {
        a->llm->temperature = dbl(bad_t[i]);
        expect_invalid(a, 1, "agent.llm.temperature");
    }
    a->llm->temperature = dbl(NAN);
    expect_invalid(a, 1, "agent.llm.temperature");
    a->llm->temperature = dbl(INFINITY);
    expect_invalid(a, 1, "agent.llm.temperature");

    a = valid_agent();
    a->llm->max_tokens = 0;
    expect_valid(a, 1, "max_tokens 0");
    a->llm->max_tokens = 1000000;
    expect_valid(a, 1, "max_tokens 1000000");
    a->llm->max_tokens = 1000001;
    expect_invalid(a, 1, "agent.llm.max_tokens");
    a->llm->max_tokens = -1;
    expect_invalid(a, 1, "agent.llm.max_tokens");

    a = valid_agent();
    a->llm->timeout = dur(3600, 0);
    expect_valid(a, 1, "llm timeout 1h");
    a->llm->timeout = dur(3601, 0);
    expect_invalid(a, 1, "agent.llm.timeout");
    a->llm->timeout = dur(-1, 0);
    expect_invalid(a, 1, "agent.llm.timeout");

    a = valid_agent();
    a->llm = NULL;
    expect_valid(a, 1, "no llm");
}

static void test_labels(void)
{
    Agentz__V1__Agent *a = valid_agent();
    char *k63 = rep("k", 63), *k64 = rep("k", 64);
    const char *ok[] = {k63, "v", "a/b.c_d-e", "", "0", rep("\xc3\xa9", 256)};
    set_labels(a, 3, ok);
    expect_valid(a, 1, "63-char key, empty value, 256-char value");

    static const char *const bad_keys[] = {"Team", "te am", "", "k=v", "caf\xc3\xa9", "a:b"};
    for (size_t i = 0; i < sizeof bad_keys / sizeof *bad_keys; i++) {
        const char *kv[] = {bad_keys[i], "v"};
        set_labels(a, 1, kv);
        expect_invalid(a, 1, "agent.labels");
    }
    const char *long_key[] = {k64, "v"};
    set_labels(a, 1, long_key);
    expect_invalid(a, 1, "agent.labels");

    const char *dupkeys[] = {"team", "a", "tier", "b", "team", "c"};
    set_labels(a, 3, dupkeys);
    expect_invalid(a, 1, "agent.labels");
    CU_ASSERT_PTR_NOT_NULL(strstr(msg, "team"));

    const char *long_value[] = {"team", rep("v", 257)};
    set_labels(a, 1, long_value);
    expect_invalid(a, 1, "agent.labels[team]");
    const char *ctl_value[] = {"team", "a\nb"};
    set_labels(a, 1, ctl_value);
    expect_invalid(a, 1, "agent.labels[team]");

    /* At most 64 labels. */
    const char *kv[2 * 65];
    char keys[65][8];
    for (int i = 0; i < 65; i++) {
        snprintf(keys[i], sizeof keys[i], "k%d", i);
        kv[2 * i] = keys[i];
        kv[2 * i + 1] = "v";
    }
    set_labels(a, 64, kv);
    expect_valid(a, 1, "64 labels");
    set_labels(a, 65, kv);
    expect_invalid(a, 1, "agent.labels");
}

/* ================================================================ field masks */

static Google__Protobuf__FieldMask *mask_of(size_t n, const char *const *paths)
{
    Google__Protobuf__FieldMask *m = az_arena_alloc(arena, sizeof *m);
    CU_ASSERT_PTR_NOT_NULL_FATAL(m);
    google__protobuf__field_mask__init(m);
    m->n_paths = n;
    m->paths = az_arena_alloc(arena, (n ? n : 1) * sizeof *m->paths);
    CU_ASSERT_PTR_NOT_NULL_FATAL(m->paths);
    for (size_t i = 0; i < n; i++) m->paths[i] = sdup(paths[i]);
    return m;
}
#define MASK(...) mask_of(sizeof((const char *[]){__VA_ARGS__}) / sizeof(const char *), \
                          (const char *const[]){__VA_ARGS__})

/* The stored agent an update starts from. */
static Agentz__V1__Agent *current(void)
{
    Agentz__V1__Agent *a = valid_agent();
    a->id = sdup("3f0c1a52-8d1e-4c1b-9a0e-1234567890ab");
    a->etag = sdup("\"r1\"");
    a->status = AGENTZ__V1__AGENT_STATUS__AGENT_STATUS_IDLE;
    a->memory = 1;
    return a;
}

/* The request: every writable field different from current(). */
static Agentz__V1__Agent *request(void)
{
    Agentz__V1__Agent *a = az_arena_alloc(arena, sizeof *a);
    CU_ASSERT_PTR_NOT_NULL_FATAL(a);
    agentz__v1__agent__init(a);
    a->id = sdup("3f0c1a52-8d1e-4c1b-9a0e-1234567890ab");
    a->name = sdup("writer");
    a->role = sdup("Writer");
    a->goal = sdup("Write");
    a->backstory = sdup("Concise.");
    a->llm = new_llm("anthropic", "claude");
    static const char *const tools[] = {"current_time"};
    set_tools(a, 1, tools);
    a->allow_delegation = 1;
    a->max_iter = 5;
    a->max_rpm = 7;
    a->max_execution_time = dur(60, 0);
    a->disabled = 1;
    static const char *const labels[] = {"env", "prod"};
    set_labels(a, 1, labels);
    return a;
}

static void test_mask_listed_paths(void)
{
    Agentz__V1__Agent *dst = current(), *src = request();
    Agentz__V1__LlmConfig *llm_before = dst->llm;
    CU_ASSERT_EQUAL_FATAL(az_agent_apply_mask(dst, src, MASK("goal", "max_rpm", "disabled"), arena, msg),
                          AZ_OK);
    CU_ASSERT_STRING_EQUAL(dst->goal, "Write");
    CU_ASSERT_EQUAL(dst->max_rpm, 7);
    CU_ASSERT_TRUE(dst->disabled);
    /* Untouched. */
    CU_ASSERT_STRING_EQUAL(dst->role, "Senior Data Researcher");
    CU_ASSERT_STRING_EQUAL(dst->name, "researcher");
    CU_ASSERT_EQUAL(dst->max_iter, 25);
    CU_ASSERT_TRUE(dst->memory);
    CU_ASSERT_FALSE(dst->allow_delegation);
    CU_ASSERT_PTR_EQUAL(dst->llm, llm_before);
    CU_ASSERT_EQUAL(dst->n_tools, 2u);
    CU_ASSERT_EQUAL(dst->n_labels, 2u);
    CU_ASSERT_EQUAL(dst->max_execution_time->seconds, 3600);
    CU_ASSERT_STRING_EQUAL(dst->etag, "\"r1\"");

    /* Naming a field the request leaves unset clears it. */
    dst = current();
    src = request();
    src->backstory = sdup("");
    src->max_execution_time = NULL;
    src->memory = 0;
    CU_ASSERT_EQUAL_FATAL(az_agent_apply_mask(dst, src, MASK("backstory", "max_execution_time", "memory"),
                                              arena, msg),
                          AZ_OK);
    CU_ASSERT_STRING_EQUAL(dst->backstory, "");
    CU_ASSERT_PTR_NULL(dst->max_execution_time);
    CU_ASSERT_FALSE(dst->memory);
    CU_ASSERT_STRING_EQUAL(dst->goal, "Find the latest developments\nand summarise them");
}

static void test_mask_llm_subfield(void)
{
    Agentz__V1__Agent *dst = current(), *src = request();
    Agentz__V1__LlmConfig *orig = dst->llm;
    CU_ASSERT_EQUAL_FATAL(az_agent_apply_mask(dst, src, MASK("llm.model"), arena, msg), AZ_OK);
    CU_ASSERT_PTR_NOT_NULL_FATAL(dst->llm);
    CU_ASSERT_STRING_EQUAL(dst->llm->model, "claude");
    CU_ASSERT_STRING_EQUAL(dst->llm->provider, "openai"); /* only the model changed */
    CU_ASSERT_PTR_NOT_NULL_FATAL(dst->llm->temperature);
    CU_ASSERT_DOUBLE_EQUAL(dst->llm->temperature->value, 0.2, 1e-12);
    CU_ASSERT_EQUAL(dst->llm->max_tokens, 1000);
    CU_ASSERT_STRING_EQUAL(dst->llm->base_url, "https://api.example.com/v1");
    /* The caller's original config object is not modified behind its back. */
    CU_ASSERT_STRING_EQUAL(orig->model, "gpt-4o-mini");
    CU_ASSERT_PTR_NOT_EQUAL(dst->llm, src->llm);

    /* dst without llm: one is created holding only the named field. */
    dst = current();
    dst->llm = NULL;
    src = request();
    src->llm->temperature = dbl(1.5);
    CU_ASSERT_EQUAL_FATAL(az_agent_apply_mask(dst, src, MASK("llm.model", "llm.temperature"), arena, msg),
                          AZ_OK);
    CU_ASSERT_PTR_NOT_NULL_FATAL(dst->llm);
    CU_ASSERT_STRING_EQUAL(dst->llm->model, "claude");
    CU_ASSERT_STRING_EQUAL(dst->llm->provider, "");
    CU_ASSERT_PTR_NOT_NULL_FATAL(dst->llm->temperature);
    CU_ASSERT_DOUBLE_EQUAL(dst->llm->temperature->value, 1.5, 1e-12);
    CU_ASSERT_PTR_NOT_EQUAL(dst->llm, src->llm);
    /* The created config is a real message that packs. */
    CU_ASSERT(agentz__v1__llm_config__get_packed_size(dst->llm) > 0);

    /* src without llm: naming llm.model clears the model only. */
    dst = current();
    src = request();
    src->llm = NULL;
    CU_ASSERT_EQUAL_FATAL(az_agent_apply_mask(dst, src, MASK("llm.model"), arena, msg), AZ_OK);
    CU_ASSERT_PTR_NOT_NULL_FATAL(dst->llm);
    CU_ASSERT_STRING_EQUAL(dst->llm->model, "");
    CU_ASSERT_STRING_EQUAL(dst->llm->provider, "openai");
}

static void test_mask_llm_whole(void)
{
    Agentz__V1__Agent *dst = current(), *src = request();
    CU_ASSERT_EQUAL_FATAL(az_agent_apply_mask(dst, src, MASK("llm"), arena, msg), AZ_OK);
    CU_ASSERT_PTR_NOT_NULL_FATAL(dst->llm);
    CU_ASSERT_STRING_EQUAL(dst->llm->provider, "anthropic");
    CU_ASSERT_STRING_EQUAL(dst->llm->model, "claude");
    CU_ASSERT_PTR_NULL(dst->llm->temperature); /* whole replacement: unset in src = unset */
    CU_ASSERT_EQUAL(dst->llm->max_tokens, 0);
    dst = current();
    src->llm = NULL;
    CU_ASSERT_EQUAL_FATAL(az_agent_apply_mask(dst, src, MASK("llm"), arena, msg), AZ_OK);
    CU_ASSERT_PTR_NULL(dst->llm);
}

static void test_mask_repeated(void)
{
    Agentz__V1__Agent *dst = current(), *src = request();
    CU_ASSERT_EQUAL_FATAL(az_agent_apply_mask(dst, src, MASK("labels", "tools"), arena, msg), AZ_OK);
    CU_ASSERT_EQUAL_FATAL(dst->n_labels, 1u);
    CU_ASSERT_STRING_EQUAL(dst->labels[0]->key, "env");
    CU_ASSERT_EQUAL_FATAL(dst->n_tools, 1u);
    CU_ASSERT_STRING_EQUAL(dst->tools[0], "current_time");
    /* Clearing: an empty list in the request empties the stored one. */
    dst = current();
    src = request();
    src->n_labels = 0;
    src->labels = NULL;
    CU_ASSERT_EQUAL_FATAL(az_agent_apply_mask(dst, src, MASK("labels"), arena, msg), AZ_OK);
    CU_ASSERT_EQUAL(dst->n_labels, 0u);
    CU_ASSERT_EQUAL(dst->n_tools, 2u);
}

static void test_mask_star(void)
{
    Agentz__V1__Agent *dst = current(), *src = request();
    src->name = sdup("");
    CU_ASSERT_EQUAL_FATAL(az_agent_apply_mask(dst, src, MASK("*"), arena, msg), AZ_OK);
    CU_ASSERT_STRING_EQUAL(dst->name, ""); /* unset in the request: cleared */
    CU_ASSERT_STRING_EQUAL(dst->role, "Writer");
    CU_ASSERT_STRING_EQUAL(dst->goal, "Write");
    CU_ASSERT_STRING_EQUAL(dst->backstory, "Concise.");
    CU_ASSERT_PTR_EQUAL(dst->llm, src->llm);
    CU_ASSERT_EQUAL(dst->n_tools, 1u);
    CU_ASSERT_TRUE(dst->allow_delegation);
    CU_ASSERT_EQUAL(dst->max_iter, 5);
    CU_ASSERT_EQUAL(dst->max_rpm, 7);
    CU_ASSERT_EQUAL(dst->max_execution_time->seconds, 60);
    CU_ASSERT_FALSE(dst->memory);
    CU_ASSERT_TRUE(dst->disabled);
    CU_ASSERT_EQUAL(dst->n_labels, 1u);
    /* Output-only fields are not writable, even with "*". */
    CU_ASSERT_STRING_EQUAL(dst->etag, "\"r1\"");
    CU_ASSERT_EQUAL(dst->status, AGENTZ__V1__AGENT_STATUS__AGENT_STATUS_IDLE);
}

static void test_mask_empty(void)
{
    for (int variant = 0; variant < 2; variant++) {
        Agentz__V1__Agent *dst = current();
        Agentz__V1__Agent *src = az_arena_alloc(arena, sizeof *src);
        CU_ASSERT_PTR_NOT_NULL_FATAL(src);
        agentz__v1__agent__init(src);
        src->goal = sdup("new goal");
        src->max_rpm = 9;
        src->etag = sdup("\"r9\"");
        src->status = AGENTZ__V1__AGENT_STATUS__AGENT_STATUS_ERROR;
        Google__Protobuf__FieldMask *m = variant ? MASK("x") : NULL;
        if (m) m->n_paths = 0; /* present but empty */
        CU_ASSERT_EQUAL_FATAL(az_agent_apply_mask(dst, src, m, arena, msg), AZ_OK);
        CU_ASSERT_STRING_EQUAL(dst->goal, "new goal");
        CU_ASSERT_EQUAL(dst->max_rpm, 9);
        /* Unpopulated fields keep their values. */
        CU_ASSERT_STRING_EQUAL(dst->role, "Senior Data Researcher");
        CU_ASSERT_STRING_EQUAL(dst->name, "researcher");
        CU_ASSERT_PTR_NOT_NULL(dst->llm);
        CU_ASSERT_EQUAL(dst->n_tools, 2u);
        CU_ASSERT_EQUAL(dst->n_labels, 2u);
        CU_ASSERT_EQUAL(dst->max_iter, 25);
        CU_ASSERT_TRUE(dst->memory);
        CU_ASSERT_PTR_NOT_NULL(dst->max_execution_time);
        CU_ASSERT_STRING_EQUAL(dst->etag, "\"r1\"");
        CU_ASSERT_EQUAL(dst->status, AGENTZ__V1__AGENT_STATUS__AGENT_STATUS_IDLE);
    }
}

static void test_mask_bad_paths(void)
{
    static const char *const out_only[] = {"id", "etag", "status", "create_time", "update_time",
                                           "workspace_id"};
    for (size_t i = 0; i < sizeof out_only / sizeof *out_only; i++) {
        Agentz__V1__Agent *dst = current(), *src = request();
        strcpy(msg, "");
        CU_ASSERT_EQUAL(az_agent_apply_mask(dst, src, mask_of(1, &out_only[i]), arena, msg),
                        AZ_ERR_INVALID);
        char quoted[64];
        snprintf(quoted, sizeof quoted, "\"%s\"", out_only[i]);
        CU_ASSERT_PTR_NOT_NULL(strstr(msg, quoted));
        CU_ASSERT_PTR_NOT_NULL(strstr(msg, "update_mask"));
    }
    static const char *const unknown[] = {"colour", "llm.colour", "llm.", "Goal", "goal ", "",
                                          "labels.team", "tools[0]", "llm.model.x"};
    for (size_t i = 0; i < sizeof unknown / sizeof *unknown; i++) {
        Agentz__V1__Agent *dst = current(), *src = request();
        strcpy(msg, "");
        az_err e = az_agent_apply_mask(dst, src, mask_of(1, &unknown[i]), arena, msg);
        if (e != AZ_ERR_INVALID) fprintf(stderr, "\n  path \"%s\" accepted\n", unknown[i]);
        CU_ASSERT_EQUAL(e, AZ_ERR_INVALID);
        char quoted[64];
        snprintf(quoted, sizeof quoted, "\"%s\"", unknown[i]);
        CU_ASSERT_PTR_NOT_NULL(strstr(msg, quoted));
    }
}

/* ================================================================ label selector */

static void test_selector(void)
{
    char *json = (char *)"sentinel";
    CU_ASSERT_EQUAL(az_agent_parse_selector("", arena, &json, msg), AZ_OK);
    CU_ASSERT_PTR_NULL(json);
    json = (char *)"sentinel";
    CU_ASSERT_EQUAL(az_agent_parse_selector(NULL, arena, &json, msg), AZ_OK);
    CU_ASSERT_PTR_NULL(json);

    CU_ASSERT_EQUAL_FATAL(az_agent_parse_selector("a=1,b=2", arena, &json, msg), AZ_OK);
    CU_ASSERT_PTR_NOT_NULL_FATAL(json);
    CU_ASSERT_STRING_EQUAL(json, "{\"a\":\"1\",\"b\":\"2\"}");
    CU_ASSERT_EQUAL_FATAL(az_agent_parse_selector("team/x=re search,a.b-c_d=", arena, &json, msg), AZ_OK);
    CU_ASSERT_STRING_EQUAL(json, "{\"a.b-c_d\":\"\",\"team/x\":\"re search\"}");
    CU_ASSERT_EQUAL_FATAL(az_agent_parse_selector("k=\"q\"\\", arena, &json, msg), AZ_OK);
    CU_ASSERT_STRING_EQUAL(json, "{\"k\":\"\\\"q\\\"\\\\\"}"); /* JSON-escaped */
    CU_ASSERT_EQUAL_FATAL(az_agent_parse_selector("k=a=b", arena, &json, msg), AZ_OK);
    CU_ASSERT_STRING_EQUAL(json, "{\"k\":\"a=b\"}");

    static const char *const bad[] = {"novalue", "Bad Key=1", "=1", "a=1,novalue", "K=1",
                                      "a=\x01", "a=\xc3"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        json = (char *)"sentinel";
        strcpy(msg, "");
        az_err e = az_agent_parse_selector(bad[i], arena, &json, msg);
        if (e != AZ_ERR_INVALID) fprintf(stderr, "\n  selector \"%s\" accepted\n", bad[i]);
        CU_ASSERT_EQUAL(e, AZ_ERR_INVALID);
        CU_ASSERT_PTR_NULL(json);
        CU_ASSERT_PTR_NOT_NULL(strstr(msg, "label_selector"));
    }

    char *big = rep("a", 4097);
    big[1] = '=';
    CU_ASSERT_EQUAL(az_agent_parse_selector(big, arena, &json, msg), AZ_ERR_INVALID);
    CU_ASSERT_PTR_NOT_NULL(strstr(msg, "4096"));
    /* 4096 exactly is fine as long as each term is (value at most 256 characters). */
    char *edge = az_arena_alloc(arena, 4097);
    CU_ASSERT_PTR_NOT_NULL_FATAL(edge);
    size_t off = 0;
    for (int i = 0; off < 4096; i++) {
        int n = snprintf(edge + off, 4097 - off, "%sk%d=v", i ? "," : "", i);
        off += (size_t)n;
        if (off > 4096) off = 4096;
    }
    edge[4096] = '\0';
    /* Trim a possibly cut last term back to a complete one. */
    char *last = strrchr(edge, ',');
    if (last && !strchr(last, '=')) *last = '\0';
    CU_ASSERT(strlen(edge) <= 4096);
    CU_ASSERT_EQUAL(az_agent_parse_selector(edge, arena, &json, msg), AZ_OK);
}

int main(void)
{
    if (CU_initialize_registry() != CUE_SUCCESS) return 1;
    CU_pSuite v = CU_add_suite("agent_validate", suite_init, suite_clean);
    CU_pSuite m = CU_add_suite("agent_apply_mask", suite_init, suite_clean);
    CU_pSuite s = CU_add_suite("agent_parse_selector", suite_init, suite_clean);
    if (!v || !m || !s) return 1;
    CU_add_test(v, "valid baseline", test_valid_baseline);
    CU_add_test(v, "required text", test_required_text);
    CU_add_test(v, "text lengths in characters", test_text_lengths);
    CU_add_test(v, "newlines", test_newlines);
    CU_add_test(v, "tools", test_tools);
    CU_add_test(v, "max_iter", test_max_iter);
    CU_add_test(v, "max_rpm", test_max_rpm);
    CU_add_test(v, "max_execution_time", test_max_execution_time);
    CU_add_test(v, "llm", test_llm);
    CU_add_test(v, "labels", test_labels);
    CU_add_test(m, "listed paths", test_mask_listed_paths);
    CU_add_test(m, "llm.model", test_mask_llm_subfield);
    CU_add_test(m, "llm whole", test_mask_llm_whole);
    CU_add_test(m, "labels and tools", test_mask_repeated);
    CU_add_test(m, "star", test_mask_star);
    CU_add_test(m, "empty mask", test_mask_empty);
    CU_add_test(m, "bad paths", test_mask_bad_paths);
    CU_add_test(s, "selector", test_selector);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    unsigned failures = CU_get_number_of_failures() + CU_get_number_of_tests_failed() +
                        CU_get_number_of_suites_failed();
    CU_cleanup_registry();
    return failures ? 1 : 0;
}
