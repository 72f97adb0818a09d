/* AgentService against the real agentzd, PostgreSQL and Redis: every RPC and its error paths. */
#include <CUnit/Basic.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agentz/v1/agent.pb-c.h"
#include "google/protobuf/duration.pb-c.h"
#include "google/protobuf/empty.pb-c.h"
#include "google/protobuf/field_mask.pb-c.h"
#include "google/protobuf/timestamp.pb-c.h"
#include "google/protobuf/wrappers.pb-c.h"
#include "harness.h"

#define SVC "/agentz.v1.AgentService/"

static az_itest_server srv;
static az_conn *conn;
static char last_msg[AZ_MSG_MAX];
static const char *suite_label; /* every agent of this run carries suite=<unique> */

/* One unary call; returns the grpc status and stores the response in *out (or frees it). */
static int call(const char *method, const void *req, const ProtobufCMessageDescriptor *out_desc,
                void **out)
{
    ProtobufCMessage *resp = NULL;
    int status = -1;
    last_msg[0] = '\0';
    az_conn_unary(conn, method, req, out_desc, 10000, NULL, &resp, &status, last_msg);
    if (out) *out = resp;
    else if (resp) protobuf_c_message_free_unpacked(resp, NULL);
    return status;
}

static void free_msg(void *m)
{
    if (m) protobuf_c_message_free_unpacked(m, NULL);
}

/* A valid agent; strings are literals, so never free it. */
static Agentz__V1__Agent make_agent(const char *role)
{
    Agentz__V1__Agent a = AGENTZ__V1__AGENT__INIT;
    a.role = (char *)role;
    a.goal = "Uncover cutting-edge developments";
    a.backstory = "A seasoned researcher.\nKnows where to look.";
    return a;
}

static Agentz__V1__Agent *create(Agentz__V1__Agent *a, const char *request_id, int *status)
{
    static Agentz__V1__Agent__LabelsEntry suite = AGENTZ__V1__AGENT__LABELS_ENTRY__INIT;
    static Agentz__V1__Agent__LabelsEntry *labels[1] = {&suite};
    suite.key = "suite";
    suite.value = (char *)suite_label;
    if (a->n_labels == 0) {
        a->n_labels = 1;
        a->labels = labels;
    }
    Agentz__V1__CreateAgentRequest req = AGENTZ__V1__CREATE_AGENT_REQUEST__INIT;
    req.agent = a;
    req.request_id = (char *)(request_id ? request_id : "");
    void *out = NULL;
    *status = call(SVC "CreateAgent", &req, &agentz__v1__agent__descriptor, &out);
    return out;
}

static Agentz__V1__Agent *get(const char *id, int *status)
{
    Agentz__V1__GetAgentRequest req = AGENTZ__V1__GET_AGENT_REQUEST__INIT;
    req.id = (char *)id;
    void *out = NULL;
    *status = call(SVC "GetAgent", &req, &agentz__v1__agent__descriptor, &out);
    return out;
}

/* ---------------------------------------------------------------- create / get */

static void test_create_and_get(void)
{
    Agentz__V1__Agent a = make_agent("Senior Data Researcher");
    Agentz__V1__LlmConfig llm = AGENTZ__V1__LLM_CONFIG__INIT;
    Google__Protobuf__DoubleValue temp = GOOGLE__PROTOBUF__DOUBLE_VALUE__INIT;
    Google__Protobuf__Duration timeout = GOOGLE__PROTOBUF__DURATION__INIT;
    temp.value = 0; /* zero is a real temperature, distinct from unset */
    timeout.seconds = 45;
    timeout.nanos = 500000000;
    llm.provider = "openai";
    llm.model = "gpt-4o-mini";
    llm.base_url = "http://127.0.0.1:11434/v1";
    llm.api_key_secret = "openai-key";
    llm.temperature = &temp;
    llm.max_tokens = 1024;
    llm.timeout = &timeout;
    a.llm = &llm;
    char *tools[] = {"calculator", "http_fetch"};
    a.n_tools = 2;
    a.tools = tools;
    a.allow_delegation = 1;
    a.max_rpm = 30;
    a.memory = 1;
    char name[64];
    snprintf(name, sizeof name, "researcher-%s", az_itest_unique());
    a.name = name;
    int st;
    Agentz__V1__Agent *got = create(&a, NULL, &st);
    CU_ASSERT_EQUAL_FATAL(st, 0);
    CU_ASSERT_EQUAL(strlen(got->id), 36);
    CU_ASSERT_STRING_EQUAL(got->name, name);
    CU_ASSERT_STRING_EQUAL(got->role, "Senior Data Researcher");
    CU_ASSERT_STRING_EQUAL(got->backstory, a.backstory);
    CU_ASSERT_EQUAL(got->max_iter, 25);
    CU_ASSERT_EQUAL(got->status, AGENTZ__V1__AGENT_STATUS__AGENT_STATUS_IDLE);
    CU_ASSERT_PTR_NOT_NULL_FATAL(got->llm);
    CU_ASSERT_STRING_EQUAL(got->llm->model, "gpt-4o-mini");
    CU_ASSERT_PTR_NOT_NULL_FATAL(got->llm->temperature);
    CU_ASSERT_DOUBLE_EQUAL(got->llm->temperature->value, 0.0, 1e-9);
    CU_ASSERT_PTR_NOT_NULL_FATAL(got->llm->timeout);
    CU_ASSERT_EQUAL(got->llm->timeout->seconds, 45);
    CU_ASSERT_EQUAL(got->llm->timeout->nanos, 500000000);
    CU_ASSERT_EQUAL(got->n_tools, 2);
    CU_ASSERT_TRUE(got->allow_delegation && got->memory && !got->disabled);
    CU_ASSERT_EQUAL(got->max_rpm, 30);
    CU_ASSERT_PTR_NOT_NULL(got->create_time);
    CU_ASSERT_TRUE(got->create_time && got->create_time->seconds > 1700000000);
    CU_ASSERT_STRING_NOT_EQUAL(got->etag, "");
    CU_ASSERT_STRING_EQUAL(got->workspace_id, "00000000-0000-0000-0000-000000000001");

    Agentz__V1__Agent *again = get(got->id, &st);
    CU_ASSERT_EQUAL_FATAL(st, 0);
    CU_ASSERT_STRING_EQUAL(again->id, got->id);
    CU_ASSERT_STRING_EQUAL(again->etag, got->etag);
    CU_ASSERT_EQUAL(again->n_labels, 1);
    CU_ASSERT_EQUAL(again->create_time->seconds, got->create_time->seconds);
    CU_ASSERT_EQUAL(again->create_time->nanos, got->create_time->nanos);

    /* Names are unique within the workspace. */
    Agentz__V1__Agent dup = make_agent("Other");
    dup.name = name;
    free_msg(create(&dup, NULL, &st));
    CU_ASSERT_EQUAL(st, 6);
    CU_ASSERT_PTR_NOT_NULL(strstr(last_msg, "agent.name"));
    free_msg(got);
    free_msg(again);
}

static void test_disabled_status(void)
{
    Agentz__V1__Agent a = make_agent("Dormant");
    a.disabled = 1;
    int st;
    Agentz__V1__Agent *got = create(&a, NULL, &st);
    CU_ASSERT_EQUAL_FATAL(st, 0);
    CU_ASSERT_EQUAL(got->status, AGENTZ__V1__AGENT_STATUS__AGENT_STATUS_DISABLED);
    free_msg(got);
}

typedef struct bad_case {
    const char *what;
    void (*mutate)(Agentz__V1__Agent *a);
    const char *field; /* must appear in the status details */
} bad_case;

static Agentz__V1__LlmConfig bad_llm;
static Google__Protobuf__DoubleValue bad_temp = GOOGLE__PROTOBUF__DOUBLE_VALUE__INIT;
static Google__Protobuf__Duration bad_dur;
static char long_role[400];
static char *bad_tools[] = {"calculator", "rm_rf"};
static char *dup_tools[] = {"calculator", "calculator"};
static Agentz__V1__Agent__LabelsEntry bad_label;
static Agentz__V1__Agent__LabelsEntry *bad_labels[1] = {&bad_label};

static void no_role(Agentz__V1__Agent *a) { a->role = ""; }
static void no_goal(Agentz__V1__Agent *a) { a->goal = ""; }
static void no_backstory(Agentz__V1__Agent *a) { a->backstory = ""; }
static void role_too_long(Agentz__V1__Agent *a)
{
    memset(long_role, 'r', sizeof long_role - 1);
    a->role = long_role;
}
static void role_control(Agentz__V1__Agent *a) { a->role = "bad\x01role"; }
static void role_newline(Agentz__V1__Agent *a) { a->role = "two\nlines"; }
static void role_bad_utf8(Agentz__V1__Agent *a) { a->role = "caf\xc3"; }
static void iter_high(Agentz__V1__Agent *a) { a->max_iter = 101; }
static void iter_negative(Agentz__V1__Agent *a) { a->max_iter = -1; }
static void rpm_negative(Agentz__V1__Agent *a) { a->max_rpm = -5; }
static void unknown_tool(Agentz__V1__Agent *a)
{
    a->n_tools = 2;
    a->tools = bad_tools;
}
static void duplicate_tool(Agentz__V1__Agent *a)
{
    a->n_tools = 2;
    a->tools = dup_tools;
}
static void hot_temperature(Agentz__V1__Agent *a)
{
    agentz__v1__llm_config__init(&bad_llm);
    bad_temp.value = 2.5;
    bad_llm.temperature = &bad_temp;
    a->llm = &bad_llm;
}
static void bad_provider(Agentz__V1__Agent *a)
{
    agentz__v1__llm_config__init(&bad_llm);
    bad_llm.provider = "skynet";
    a->llm = &bad_llm;
}
static void bad_base_url(Agentz__V1__Agent *a)
{
    agentz__v1__llm_config__init(&bad_llm);
    bad_llm.base_url = "ftp://models";
    a->llm = &bad_llm;
}
static void negative_duration(Agentz__V1__Agent *a)
{
    google__protobuf__duration__init(&bad_dur);
    bad_dur.seconds = -3;
    a->max_execution_time = &bad_dur;
}
static void bad_label_key(Agentz__V1__Agent *a)
{
    agentz__v1__agent__labels_entry__init(&bad_label);
    bad_label.key = "Bad Key";
    bad_label.value = "v";
    a->n_labels = 1;
    a->labels = bad_labels;
}

static void test_validation(void)
{
    static const bad_case cases[] = {
        {"missing role", no_role, "agent.role is required"},
        {"missing goal", no_goal, "agent.goal is required"},
        {"missing backstory", no_backstory, "agent.backstory is required"},
        {"role too long", role_too_long, "agent.role"},
        {"control character", role_control, "agent.role"},
        {"newline in role", role_newline, "agent.role"},
        {"invalid utf-8", role_bad_utf8, "agent.role"},
        {"max_iter 101", iter_high, "agent.max_iter"},
        {"max_iter -1", iter_negative, "agent.max_iter"},
        {"max_rpm -5", rpm_negative, "agent.max_rpm"},
        {"unknown tool", unknown_tool, "agent.tools[1]"},
        {"duplicate tool", duplicate_tool, "agent.tools[1]"},
        {"temperature 2.5", hot_temperature, "agent.llm.temperature"},
        {"unknown provider", bad_provider, "agent.llm.provider"},
        {"ftp base url", bad_base_url, "agent.llm.base_url"},
        {"negative duration", negative_duration, "agent.max_execution_time"},
        {"bad label key", bad_label_key, "agent.labels"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        Agentz__V1__Agent a = make_agent("Validator");
        cases[i].mutate(&a);
        int st;
        Agentz__V1__Agent *got = create(&a, NULL, &st);
        if (st != 3 || !strstr(last_msg, cases[i].field))
            fprintf(stderr, "case %s: status %d, details \"%s\"\n", cases[i].what, st, last_msg);
        CU_ASSERT_EQUAL(st, 3);
        CU_ASSERT_PTR_NOT_NULL(strstr(last_msg, cases[i].field));
        free_msg(got);
    }
    /* No agent at all. */
    Agentz__V1__CreateAgentRequest req = AGENTZ__V1__CREATE_AGENT_REQUEST__INIT;
    CU_ASSERT_EQUAL(call(SVC "CreateAgent", &req, &agentz__v1__agent__descriptor, NULL), 3);
    CU_ASSERT_PTR_NOT_NULL(strstr(last_msg, "agent is required"));
}

static void test_idempotent_create(void)
{
    char rid[64];
    snprintf(rid, sizeof rid, "req-%s", az_itest_unique());
    Agentz__V1__Agent a = make_agent("Idempotent");
    int st;
    Agentz__V1__Agent *first = create(&a, rid, &st);
    CU_ASSERT_EQUAL_FATAL(st, 0);
    Agentz__V1__Agent *second = create(&a, rid, &st);
    CU_ASSERT_EQUAL_FATAL(st, 0);
    CU_ASSERT_STRING_EQUAL(first->id, second->id);
    a.goal = "A different goal";
    Agentz__V1__Agent *third = create(&a, rid, &st);
    CU_ASSERT_EQUAL(st, 6);
    CU_ASSERT_PTR_NOT_NULL(strstr(last_msg, "request_id"));
    free_msg(first);
    free_msg(second);
    free_msg(third);
}

/* Concurrent creates with one request_id produce exactly one agent. */
static char race_rid[64];
static char race_ids[8][40];
static void *race_create(void *arg)
{
    int i = (int)(long)arg;
    Agentz__V1__Agent a = make_agent("Racer");
    Agentz__V1__CreateAgentRequest req = AGENTZ__V1__CREATE_AGENT_REQUEST__INIT;
    req.agent = &a;
    req.request_id = (char *)race_rid;
    ProtobufCMessage *resp = NULL;
    int st;
    char msg[AZ_MSG_MAX];
    az_conn_unary(conn, SVC "CreateAgent", &req.base, &agentz__v1__agent__descriptor, 10000, NULL,
                  &resp, &st, msg);
    if (st == 0) snprintf(race_ids[i], sizeof race_ids[i], "%s", ((Agentz__V1__Agent *)resp)->id);
    free_msg(resp);
    return NULL;
}

static void test_idempotent_race(void)
{
    snprintf(race_rid, sizeof race_rid, "race-%s", az_itest_unique());
    pthread_t t[8];
    for (long i = 0; i < 8; i++) pthread_create(&t[i], NULL, race_create, (void *)i);
    for (int i = 0; i < 8; i++) pthread_join(t[i], NULL);
    for (int i = 0; i < 8; i++) {
        CU_ASSERT_EQUAL(strlen(race_ids[i]), 36);
        CU_ASSERT_STRING_EQUAL(race_ids[i], race_ids[0]);
    }
}

static void test_get_errors(void)
{
    int st;
    free_msg(get("", &st));
    CU_ASSERT_EQUAL(st, 3);
    free_msg(get("not-a-uuid", &st));
    CU_ASSERT_EQUAL(st, 5);
    free_msg(get("3f6c2b1a-0000-4000-8000-000000000000", &st));
    CU_ASSERT_EQUAL(st, 5);
    CU_ASSERT_PTR_NOT_NULL(strstr(last_msg, "not found"));
}

/* ---------------------------------------------------------------- list */

static Agentz__V1__ListAgentsResponse *list(const char *selector, int page_size, const char *token,
                                            int status_filter, int *st)
{
    Agentz__V1__ListAgentsRequest req = AGENTZ__V1__LIST_AGENTS_REQUEST__INIT;
    req.label_selector = (char *)selector;
    req.page_size = page_size;
    req.page_token = (char *)(token ? token : "");
    req.status = status_filter;
    void *out = NULL;
    *st = call(SVC "ListAgents", &req, &agentz__v1__list_agents_response__descriptor, &out);
    return out;
}

static void test_list_pagination(void)
{
    const char *tag = az_itest_unique();
    char selector[96];
    snprintf(selector, sizeof selector, "page=%s", tag);
    Agentz__V1__Agent__LabelsEntry l = AGENTZ__V1__AGENT__LABELS_ENTRY__INIT;
    l.key = "page";
    l.value = (char *)tag;
    Agentz__V1__Agent__LabelsEntry *labels[1] = {&l};
    enum { N = 7 };
    char ids[N][40];
    for (int i = 0; i < N; i++) {
        Agentz__V1__Agent a = make_agent("Pager");
        a.n_labels = 1;
        a.labels = labels;
        int st;
        Agentz__V1__Agent *g = create(&a, NULL, &st);
        CU_ASSERT_EQUAL_FATAL(st, 0);
        snprintf(ids[i], sizeof ids[i], "%s", g->id);
        free_msg(g);
    }
    char seen[N][40];
    int nseen = 0, pages = 0, st;
    char token[512] = "";
    do {
        Agentz__V1__ListAgentsResponse *r = list(selector, 3, token, 0, &st);
        CU_ASSERT_EQUAL_FATAL(st, 0);
        CU_ASSERT_EQUAL(r->total_size, pages == 0 ? N : N + 1); /* + the latecomer */
        CU_ASSERT_TRUE(r->n_agents <= 3);
        for (size_t i = 0; i < r->n_agents && nseen < N; i++)
            snprintf(seen[nseen++], 40, "%s", r->agents[i]->id);
        snprintf(token, sizeof token, "%s", r->next_page_token);
        pages++;
        if (pages == 1) {
            /* An agent created mid-walk must not shift the pages that follow. */
            Agentz__V1__Agent a = make_agent("Latecomer");
            a.n_labels = 1;
            a.labels = labels;
            free_msg(create(&a, NULL, &st));
        }
        free_msg(r);
    } while (token[0] && pages < 10);
    CU_ASSERT_EQUAL(pages, 3);
    CU_ASSERT_EQUAL(nseen, N);
    /* Newest first, each exactly once. */
    for (int i = 0; i < nseen; i++) CU_ASSERT_STRING_EQUAL(seen[i], ids[N - 1 - i]);

    /* A token belongs to its filters. */
    Agentz__V1__ListAgentsResponse *r = list(selector, 2, NULL, 0, &st);
    CU_ASSERT_EQUAL_FATAL(st, 0);
    free_msg(list("page=other", 2, r->next_page_token, 0, &st));
    CU_ASSERT_EQUAL(st, 3);
    CU_ASSERT_PTR_NOT_NULL(strstr(last_msg, "page_token"));
    free_msg(r);
}

static void test_list_filters_and_errors(void)
{
    int st;
    char selector[96];
    snprintf(selector, sizeof selector, "suite=%s", suite_label);
    Agentz__V1__ListAgentsResponse *r =
        list(selector, 0, NULL, AGENTZ__V1__AGENT_STATUS__AGENT_STATUS_DISABLED, &st);
    CU_ASSERT_EQUAL_FATAL(st, 0);
    CU_ASSERT_TRUE(r->n_agents >= 1);
    for (size_t i = 0; i < r->n_agents; i++) CU_ASSERT_TRUE(r->agents[i]->disabled);
    free_msg(r);

    free_msg(list("", -1, NULL, 0, &st));
    CU_ASSERT_EQUAL(st, 3);
    CU_ASSERT_PTR_NOT_NULL(strstr(last_msg, "page_size"));
    free_msg(list("", 10, "!!garbage!!", 0, &st));
    CU_ASSERT_EQUAL(st, 3);
    CU_ASSERT_PTR_NOT_NULL(strstr(last_msg, "page_token"));
    free_msg(list("novalue", 10, NULL, 0, &st));
    CU_ASSERT_EQUAL(st, 3);
    CU_ASSERT_PTR_NOT_NULL(strstr(last_msg, "label_selector"));
    free_msg(list("", 10, NULL, 42, &st));
    CU_ASSERT_EQUAL(st, 3);
    /* page_size above the maximum is clamped, not refused. */
    r = list("", 5000, NULL, 0, &st);
    CU_ASSERT_EQUAL(st, 0);
    CU_ASSERT_TRUE(r && r->n_agents <= 1000);
    free_msg(r);
}

/* ---------------------------------------------------------------- update */

static Agentz__V1__Agent *update(Agentz__V1__Agent *patch, char **paths, size_t npaths, int *st)
{
    Agentz__V1__UpdateAgentRequest req = AGENTZ__V1__UPDATE_AGENT_REQUEST__INIT;
    Google__Protobuf__FieldMask mask = GOOGLE__PROTOBUF__FIELD_MASK__INIT;
    mask.n_paths = npaths;
    mask.paths = paths;
    req.agent = patch;
    req.update_mask = npaths ? &mask : NULL;
    void *out = NULL;
    *st = call(SVC "UpdateAgent", &req, &agentz__v1__agent__descriptor, &out);
    return out;
}

static void test_update(void)
{
    Agentz__V1__Agent a = make_agent("Writer");
    Agentz__V1__LlmConfig llm = AGENTZ__V1__LLM_CONFIG__INIT;
    llm.provider = "openai";
    llm.model = "small";
    a.llm = &llm;
    int st;
    Agentz__V1__Agent *orig = create(&a, NULL, &st);
    CU_ASSERT_EQUAL_FATAL(st, 0);

    /* Only masked fields change: goal and llm.model, not role or llm.provider. */
    Agentz__V1__Agent patch = AGENTZ__V1__AGENT__INIT;
    Agentz__V1__LlmConfig pllm = AGENTZ__V1__LLM_CONFIG__INIT;
    pllm.model = "large";
    pllm.provider = "anthropic";
    patch.id = orig->id;
    patch.etag = orig->etag;
    patch.goal = "Write well";
    patch.role = "Ignored because not in the mask";
    patch.llm = &pllm;
    char *paths[] = {"goal", "llm.model"};
    Agentz__V1__Agent *up = update(&patch, paths, 2, &st);
    CU_ASSERT_EQUAL_FATAL(st, 0);
    CU_ASSERT_STRING_EQUAL(up->goal, "Write well");
    CU_ASSERT_STRING_EQUAL(up->role, "Writer");
    CU_ASSERT_STRING_EQUAL(up->llm->model, "large");
    CU_ASSERT_STRING_EQUAL(up->llm->provider, "openai");
    CU_ASSERT_STRING_NOT_EQUAL(up->etag, orig->etag);
    CU_ASSERT_TRUE(up->update_time->seconds > orig->update_time->seconds ||
                   (up->update_time->seconds == orig->update_time->seconds &&
                    up->update_time->nanos > orig->update_time->nanos));
    CU_ASSERT_EQUAL(up->create_time->seconds, orig->create_time->seconds);

    /* The old etag is now stale. */
    Agentz__V1__Agent *stale = update(&patch, paths, 2, &st);
    CU_ASSERT_EQUAL(st, 10);
    CU_ASSERT_PTR_NOT_NULL(strstr(last_msg, "etag"));
    free_msg(stale);

    /* No etag: last writer wins. Disabling sets the status. */
    Agentz__V1__Agent p2 = AGENTZ__V1__AGENT__INIT;
    p2.id = orig->id;
    p2.disabled = 1;
    char *dpath[] = {"disabled"};
    Agentz__V1__Agent *dis = update(&p2, dpath, 1, &st);
    CU_ASSERT_EQUAL_FATAL(st, 0);
    CU_ASSERT_EQUAL(dis->status, AGENTZ__V1__AGENT_STATUS__AGENT_STATUS_DISABLED);
    p2.disabled = 0;
    Agentz__V1__Agent *en = update(&p2, dpath, 1, &st);
    CU_ASSERT_EQUAL_FATAL(st, 0);
    CU_ASSERT_EQUAL(en->status, AGENTZ__V1__AGENT_STATUS__AGENT_STATUS_IDLE);

    /* Empty mask: every populated field of the patch. */
    Agentz__V1__Agent p3 = AGENTZ__V1__AGENT__INIT;
    p3.id = orig->id;
    p3.backstory = "New backstory";
    p3.max_iter = 7;
    Agentz__V1__Agent *pop = update(&p3, NULL, 0, &st);
    CU_ASSERT_EQUAL_FATAL(st, 0);
    CU_ASSERT_STRING_EQUAL(pop->backstory, "New backstory");
    CU_ASSERT_EQUAL(pop->max_iter, 7);
    CU_ASSERT_STRING_EQUAL(pop->goal, "Write well");

    /* Clearing labels through the mask removes them. */
    char *lpath[] = {"labels"};
    Agentz__V1__Agent *nolabels = update(&p3, lpath, 1, &st);
    CU_ASSERT_EQUAL_FATAL(st, 0);
    CU_ASSERT_EQUAL(nolabels->n_labels, 0);

    /* Errors: output-only and unknown paths, invalid merged result, unknown agent. */
    char *idpath[] = {"id"};
    free_msg(update(&p3, idpath, 1, &st));
    CU_ASSERT_EQUAL(st, 3);
    CU_ASSERT_PTR_NOT_NULL(strstr(last_msg, "output only"));
    char *unknown[] = {"colour"};
    free_msg(update(&p3, unknown, 1, &st));
    CU_ASSERT_EQUAL(st, 3);
    CU_ASSERT_PTR_NOT_NULL(strstr(last_msg, "colour"));
    char *rpath[] = {"role"};
    Agentz__V1__Agent p4 = AGENTZ__V1__AGENT__INIT;
    p4.id = orig->id;
    free_msg(update(&p4, rpath, 1, &st)); /* clearing a required field */
    CU_ASSERT_EQUAL(st, 3);
    CU_ASSERT_PTR_NOT_NULL(strstr(last_msg, "agent.role"));
    char *ipath[] = {"max_iter"};
    free_msg(update(&p4, ipath, 1, &st)); /* 0 is only a default on create */
    CU_ASSERT_EQUAL(st, 3);
    p4.id = "7a1d0c3e-1111-4222-8333-444455556666";
    free_msg(update(&p4, dpath, 1, &st));
    CU_ASSERT_EQUAL(st, 5);
    p4.id = "";
    free_msg(update(&p4, dpath, 1, &st));
    CU_ASSERT_EQUAL(st, 3);
    p4.id = orig->id;
    p4.etag = "W/\"bogus\"";
    free_msg(update(&p4, dpath, 1, &st));
    CU_ASSERT_EQUAL(st, 3);

    free_msg(orig);
    free_msg(up);
    free_msg(dis);
    free_msg(en);
    free_msg(pop);
    free_msg(nolabels);
}

/* ---------------------------------------------------------------- delete */

static void test_delete(void)
{
    Agentz__V1__Agent a = make_agent("Ephemeral");
    int st;
    Agentz__V1__Agent *g = create(&a, NULL, &st);
    CU_ASSERT_EQUAL_FATAL(st, 0);
    Agentz__V1__DeleteAgentRequest req = AGENTZ__V1__DELETE_AGENT_REQUEST__INIT;
    req.id = g->id;
    req.etag = "999";
    CU_ASSERT_EQUAL(call(SVC "DeleteAgent", &req, &google__protobuf__empty__descriptor, NULL), 10);
    req.etag = g->etag;
    CU_ASSERT_EQUAL(call(SVC "DeleteAgent", &req, &google__protobuf__empty__descriptor, NULL), 0);
    free_msg(get(g->id, &st));
    CU_ASSERT_EQUAL(st, 5);
    req.etag = "";
    CU_ASSERT_EQUAL(call(SVC "DeleteAgent", &req, &google__protobuf__empty__descriptor, NULL), 5);
    req.id = "";
    CU_ASSERT_EQUAL(call(SVC "DeleteAgent", &req, &google__protobuf__empty__descriptor, NULL), 3);
    free_msg(g);
}

/* ---------------------------------------------------------------- memory and metrics */

static int get_memory(const char *agent, const char *query, int page_size, const char *token,
                      Agentz__V1__AgentMemory **out)
{
    Agentz__V1__GetAgentMemoryRequest req = AGENTZ__V1__GET_AGENT_MEMORY_REQUEST__INIT;
    req.agent_id = (char *)agent;
    req.query = (char *)query;
    req.page_size = page_size;
    req.page_token = (char *)token;
    void *m = NULL;
    int st = call(SVC "GetAgentMemory", &req, &agentz__v1__agent_memory__descriptor, &m);
    if (out) *out = m;
    else free_msg(m);
    return st;
}

static int get_metrics(const char *agent, const Google__Protobuf__Timestamp *start,
                       const Google__Protobuf__Timestamp *end, Agentz__V1__AgentMetrics **out)
{
    Agentz__V1__GetAgentMetricsRequest req = AGENTZ__V1__GET_AGENT_METRICS_REQUEST__INIT;
    req.agent_id = (char *)agent;
    req.start_time = (Google__Protobuf__Timestamp *)start;
    req.end_time = (Google__Protobuf__Timestamp *)end;
    void *m = NULL;
    int st = call(SVC "GetAgentMetrics", &req, &agentz__v1__agent_metrics__descriptor, &m);
    if (out) *out = m;
    else free_msg(m);
    return st;
}

static void test_memory_rpcs(void)
{
    Agentz__V1__Agent a = make_agent("Rememberer");
    a.memory = 1;
    int st;
    Agentz__V1__Agent *g = create(&a, NULL, &st);
    CU_ASSERT_EQUAL_FATAL(st, 0);

    /* A new agent remembers nothing. */
    Agentz__V1__AgentMemory *m = NULL;
    CU_ASSERT_EQUAL(get_memory(g->id, "", 0, "", &m), 0);
    CU_ASSERT_PTR_NOT_NULL_FATAL(m);
    CU_ASSERT_EQUAL(m->n_entries, 0);
    CU_ASSERT_STRING_EQUAL(m->next_page_token, "");
    free_msg(m);
    CU_ASSERT_EQUAL(get_memory(g->id, "anything", 5000, "", NULL), 0); /* page_size clamped */

    /* Validation names the field. */
    CU_ASSERT_EQUAL(get_memory("", "", 0, "", NULL), 3);
    CU_ASSERT_PTR_NOT_NULL(strstr(last_msg, "agent_id"));
    CU_ASSERT_EQUAL(get_memory(g->id, "", -1, "", NULL), 3);
    CU_ASSERT_PTR_NOT_NULL(strstr(last_msg, "page_size"));
    CU_ASSERT_EQUAL(get_memory(g->id, "bad\x01query", 0, "", NULL), 3);
    CU_ASSERT_PTR_NOT_NULL(strstr(last_msg, "query"));
    CU_ASSERT_EQUAL(get_memory(g->id, "", 0, "garbage!", NULL), 3);
    CU_ASSERT_PTR_NOT_NULL(strstr(last_msg, "page_token"));
    /* Unknown agents. */
    CU_ASSERT_EQUAL(get_memory("3f6c2b1a-0000-4000-8000-000000000000", "", 0, "", NULL), 5);
    CU_ASSERT_EQUAL(get_memory("not-a-uuid", "", 0, "", NULL), 5);

    Agentz__V1__ClearAgentMemoryRequest clear = AGENTZ__V1__CLEAR_AGENT_MEMORY_REQUEST__INIT;
    clear.agent_id = g->id;
    CU_ASSERT_EQUAL(call(SVC "ClearAgentMemory", &clear, &google__protobuf__empty__descriptor, NULL), 0);
    clear.agent_id = "";
    CU_ASSERT_EQUAL(call(SVC "ClearAgentMemory", &clear, &google__protobuf__empty__descriptor, NULL), 3);
    CU_ASSERT_PTR_NOT_NULL(strstr(last_msg, "agent_id"));
    clear.agent_id = "3f6c2b1a-0000-4000-8000-000000000000";
    CU_ASSERT_EQUAL(call(SVC "ClearAgentMemory", &clear, &google__protobuf__empty__descriptor, NULL), 5);
    free_msg(g);
}

static void test_metrics_rpc(void)
{
    Agentz__V1__Agent a = make_agent("Measured");
    int st;
    Agentz__V1__Agent *g = create(&a, NULL, &st);
    CU_ASSERT_EQUAL_FATAL(st, 0);

    /* Default window: the last 24 hours, all zeros for a new agent. */
    Agentz__V1__AgentMetrics *m = NULL;
    CU_ASSERT_EQUAL(get_metrics(g->id, NULL, NULL, &m), 0);
    CU_ASSERT_PTR_NOT_NULL_FATAL(m);
    CU_ASSERT_STRING_EQUAL(m->agent_id, g->id);
    CU_ASSERT_EQUAL(m->tasks_total, 0);
    CU_ASSERT_EQUAL(m->tasks_running, 0);
    CU_ASSERT_EQUAL(m->tasks_succeeded, 0);
    CU_ASSERT_EQUAL(m->tasks_failed, 0);
    CU_ASSERT_PTR_NULL(m->p50_duration);
    CU_ASSERT_PTR_NOT_NULL_FATAL(m->start_time);
    CU_ASSERT_PTR_NOT_NULL_FATAL(m->end_time);
    CU_ASSERT_EQUAL(m->end_time->seconds - m->start_time->seconds, 86400);
    free_msg(m);

    /* An explicit window comes back as given. */
    Google__Protobuf__Timestamp s = GOOGLE__PROTOBUF__TIMESTAMP__INIT, e = GOOGLE__PROTOBUF__TIMESTAMP__INIT;
    s.seconds = 1700000000;
    e.seconds = 1700003600;
    e.nanos = 500000000;
    CU_ASSERT_EQUAL(get_metrics(g->id, &s, &e, &m), 0);
    CU_ASSERT_PTR_NOT_NULL_FATAL(m);
    CU_ASSERT_EQUAL(m->start_time->seconds, 1700000000);
    CU_ASSERT_EQUAL(m->end_time->seconds, 1700003600);
    CU_ASSERT_EQUAL(m->end_time->nanos, 500000000);
    free_msg(m);
    /* Only start_time: the window ends now. */
    CU_ASSERT_EQUAL(get_metrics(g->id, &s, NULL, NULL), 0);

    /* Empty or inverted windows, bad timestamps, missing and unknown agents. */
    CU_ASSERT_EQUAL(get_metrics(g->id, &e, &s, NULL), 3);
    CU_ASSERT_PTR_NOT_NULL(strstr(last_msg, "start_time"));
    CU_ASSERT_EQUAL(get_metrics(g->id, &s, &s, NULL), 3);
    Google__Protobuf__Timestamp bad = GOOGLE__PROTOBUF__TIMESTAMP__INIT;
    bad.seconds = 1700000000;
    bad.nanos = -1;
    CU_ASSERT_EQUAL(get_metrics(g->id, NULL, &bad, NULL), 3);
    CU_ASSERT_PTR_NOT_NULL(strstr(last_msg, "end_time"));
    bad.nanos = 0;
    bad.seconds = -5;
    CU_ASSERT_EQUAL(get_metrics(g->id, &bad, NULL, NULL), 3);
    CU_ASSERT_PTR_NOT_NULL(strstr(last_msg, "start_time"));
    CU_ASSERT_EQUAL(get_metrics("", NULL, NULL, NULL), 3);
    CU_ASSERT_PTR_NOT_NULL(strstr(last_msg, "agent_id"));
    CU_ASSERT_EQUAL(get_metrics("3f6c2b1a-0000-4000-8000-000000000000", NULL, NULL, NULL), 5);
    free_msg(g);
}

/* ---------------------------------------------------------------- transport-level errors */

static void test_unimplemented_and_limits(void)
{
    Agentz__V1__GetAgentRequest req = AGENTZ__V1__GET_AGENT_REQUEST__INIT;
    CU_ASSERT_EQUAL(call("/agentz.v1.AgentService/NoSuchMethod", &req,
                         &agentz__v1__agent__descriptor, NULL),
                    12);
    CU_ASSERT_EQUAL(call("/agentz.v1.NoSuchService/Get", &req, &agentz__v1__agent__descriptor, NULL),
                    12);
    /* 5 MiB is over the 4 MiB default message limit. */
    size_t big = 5u << 20;
    char *huge = malloc(big + 1);
    memset(huge, 'b', big);
    huge[big] = '\0';
    Agentz__V1__Agent a = make_agent("Huge");
    a.backstory = huge;
    int st;
    free_msg(create(&a, NULL, &st));
    CU_ASSERT_EQUAL(st, 8);
    free(huge);
    /* The server is fine afterwards. */
    free_msg(get("3f6c2b1a-0000-4000-8000-000000000000", &st));
    CU_ASSERT_EQUAL(st, 5);
}

static void test_deadline(void)
{
    Agentz__V1__GetAgentRequest req = AGENTZ__V1__GET_AGENT_REQUEST__INIT;
    req.id = "3f6c2b1a-0000-4000-8000-000000000000";
    int st = -1;
    ProtobufCMessage *resp = NULL;
    az_conn_unary(conn, SVC "GetAgent", &req.base, &agentz__v1__agent__descriptor, 1, NULL, &resp,
                  &st, last_msg);
    CU_ASSERT_TRUE(st == 4 || st == 5); /* 1 ms may or may not suffice on loopback */
    free_msg(resp);
}

static int suite_init(void)
{
    suite_label = az_itest_unique();
    if (az_itest_start(&srv, "agents", NULL) != 0) return -1;
    conn = az_itest_connect(&srv);
    return 0;
}

static int suite_clean(void)
{
    az_conn_free(conn);
    int rc = az_itest_stop(&srv, SIGTERM, 30);
    if (rc != 0) {
        fprintf(stderr, "agentzd exited with %d\n", rc);
        az_itest_dump_log(&srv, 30);
    }
    return rc == 0 ? 0 : -1;
}

int main(void)
{
    if (CU_initialize_registry() != CUE_SUCCESS) return 1;
    CU_pSuite s = CU_add_suite("agents", suite_init, suite_clean);
    CU_add_test(s, "create and get", test_create_and_get);
    CU_add_test(s, "disabled agents report status disabled", test_disabled_status);
    CU_add_test(s, "validation names the field", test_validation);
    CU_add_test(s, "idempotent create by request_id", test_idempotent_create);
    CU_add_test(s, "concurrent creates with one request_id", test_idempotent_race);
    CU_add_test(s, "get errors", test_get_errors);
    CU_add_test(s, "list pagination is stable", test_list_pagination);
    CU_add_test(s, "list filters and errors", test_list_filters_and_errors);
    CU_add_test(s, "update with field masks and etags", test_update);
    CU_add_test(s, "delete", test_delete);
    CU_add_test(s, "GetAgentMemory and ClearAgentMemory", test_memory_rpcs);
    CU_add_test(s, "GetAgentMetrics", test_metrics_rpc);
    CU_add_test(s, "unimplemented methods and message limits", test_unimplemented_and_limits);
    CU_add_test(s, "deadlines", test_deadline);
    return az_itest_run_cunit();
}
