/* TaskService against the real agentzd, PostgreSQL and Redis: every RPC, its validation errors,
 * idempotency, pagination, illegal transitions, parallel Cancel/Retry, the Redis hand-off, and
 * CreateTasks (atomic batches, their limits and per-item errors). */
#include <CUnit/Basic.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agentz/v1/agent.pb-c.h"
#include "agentz/v1/task.pb-c.h"
#include "google/protobuf/duration.pb-c.h"
#include "google/protobuf/struct.pb-c.h"
#include "google/protobuf/timestamp.pb-c.h"
#include "harness.h"
#include "store/redis.h"

#define SVC "/agentz.v1.TaskService/"
#define AGENTS "/agentz.v1.AgentService/"

enum { OK = 0, CANCELLED_ST = 1, INVALID = 3, NOT_FOUND = 5, EXISTS = 6, PRECONDITION = 9 };

static az_itest_server srv;
static az_conn *conn;
static char last_msg[AZ_MSG_MAX];
static char agent_id[40], disabled_agent_id[40];

static int call(const char *method, const void *req, const ProtobufCMessageDescriptor *out_desc,
                void **out)
{
    ProtobufCMessage *resp = NULL;
    int status = -1;
    last_msg[0] = '\0';
    az_conn_unary(conn, method, req, out_desc, 20000, NULL, &resp, &status, last_msg);
    if (out) *out = resp;
    else if (resp) protobuf_c_message_free_unpacked(resp, NULL);
    return status;
}

static void free_msg(void *m)
{
    if (m) protobuf_c_message_free_unpacked(m, NULL);
}

static Agentz__V1__Task make_task(const char *description)
{
    Agentz__V1__Task t = AGENTZ__V1__TASK__INIT;
    t.description = (char *)description;
    t.expected_output = "A bullet list of 10 items";
    t.agent_id = agent_id;
    return t;
}

static Agentz__V1__Task *create(Agentz__V1__Task *t, const char *request_id, int *status)
{
    Agentz__V1__CreateTaskRequest req = AGENTZ__V1__CREATE_TASK_REQUEST__INIT;
    req.task = t;
    req.request_id = (char *)(request_id ? request_id : "");
    void *out = NULL;
    *status = call(SVC "CreateTask", &req, &agentz__v1__task__descriptor, &out);
    return out;
}

static Agentz__V1__Task *get(const char *id, int *status)
{
    Agentz__V1__GetTaskRequest req = AGENTZ__V1__GET_TASK_REQUEST__INIT;
    req.id = (char *)id;
    void *out = NULL;
    *status = call(SVC "GetTask", &req, &agentz__v1__task__descriptor, &out);
    return out;
}

static Agentz__V1__Task *cancel(const char *id, const char *reason, int *status)
{
    Agentz__V1__CancelTaskRequest req = AGENTZ__V1__CANCEL_TASK_REQUEST__INIT;
    req.id = (char *)id;
    req.reason = (char *)(reason ? reason : "");
    void *out = NULL;
    *status = call(SVC "CancelTask", &req, &agentz__v1__task__descriptor, &out);
    return out;
}

static Agentz__V1__Task *retry(const char *id, int *status)
{
    Agentz__V1__RetryTaskRequest req = AGENTZ__V1__RETRY_TASK_REQUEST__INIT;
    req.id = (char *)id;
    void *out = NULL;
    *status = call(SVC "RetryTask", &req, &agentz__v1__task__descriptor, &out);
    return out;
}

static void make_agent(const char *role, int disabled, char *id_out)
{
    Agentz__V1__Agent a = AGENTZ__V1__AGENT__INIT;
    a.role = (char *)role;
    a.goal = "Do the work";
    a.backstory = "Experienced.";
    a.disabled = disabled;
    Agentz__V1__CreateAgentRequest req = AGENTZ__V1__CREATE_AGENT_REQUEST__INIT;
    req.agent = &a;
    void *out = NULL;
    int st = call(AGENTS "CreateAgent", &req, &agentz__v1__agent__descriptor, &out);
    CU_ASSERT_EQUAL_FATAL(st, 0);
    snprintf(id_out, 40, "%s", ((Agentz__V1__Agent *)out)->id);
    free_msg(out);
}

/* ---------------------------------------------------------------- create / get */

static void test_create_and_get(void)
{
    Agentz__V1__Task t = make_task("Research the latest AI agent frameworks.\nBe thorough.");
    char *ctx[] = {"focus on open source"};
    t.n_context = 1;
    t.context = ctx;
    Agentz__V1__RetryPolicy rp = AGENTZ__V1__RETRY_POLICY__INIT;
    Google__Protobuf__Duration init = GOOGLE__PROTOBUF__DURATION__INIT, timeout = GOOGLE__PROTOBUF__DURATION__INIT;
    init.seconds = 2;
    timeout.seconds = 300;
    rp.initial_backoff = &init;
    rp.backoff_coefficient = 1.5;
    rp.max_attempts = 4;
    char *nre[] = {"output_schema_mismatch"};
    rp.n_non_retryable_errors = 1;
    rp.non_retryable_errors = nre;
    t.retry_policy = &rp;
    t.timeout = &timeout;
    char *hooks[] = {"https://example.com/hook"};
    t.n_webhook_urls = 1;
    t.webhook_urls = hooks;
    Agentz__V1__Task__LabelsEntry l = AGENTZ__V1__TASK__LABELS_ENTRY__INIT, *ls[1] = {&l};
    l.key = "team";
    l.value = "research";
    t.n_labels = 1;
    t.labels = ls;
    /* output_schema {"type": "object"} */
    Google__Protobuf__Value v = GOOGLE__PROTOBUF__VALUE__INIT;
    v.kind_case = GOOGLE__PROTOBUF__VALUE__KIND_STRING_VALUE;
    v.string_value = "object";
    Google__Protobuf__Struct__FieldsEntry fe = GOOGLE__PROTOBUF__STRUCT__FIELDS_ENTRY__INIT, *fes[1] = {&fe};
    fe.key = "type";
    fe.value = &v;
    Google__Protobuf__Struct schema = GOOGLE__PROTOBUF__STRUCT__INIT;
    schema.n_fields = 1;
    schema.fields = fes;
    t.output_schema = &schema;
    /* Output-only fields are ignored. */
    t.status = AGENTZ__V1__TASK_STATUS__TASK_STATUS_SUCCEEDED;
    t.attempt = 7;
    t.run_id = "d3b07384-d113-4ec6-a7f2-1c2b0b6f0e11";
    t.progress = 0.5;
    int st;
    Agentz__V1__Task *got = create(&t, NULL, &st);
    if (st) fprintf(stderr, "create: %d %s\n", st, last_msg);
    CU_ASSERT_EQUAL_FATAL(st, OK);
    CU_ASSERT_EQUAL(strlen(got->id), 36);
    CU_ASSERT_EQUAL(got->status, AGENTZ__V1__TASK_STATUS__TASK_STATUS_QUEUED);
    CU_ASSERT_EQUAL(got->attempt, 0);
    CU_ASSERT_STRING_EQUAL(got->run_id, "");
    CU_ASSERT_DOUBLE_EQUAL(got->progress, 0, 1e-9);
    CU_ASSERT_STRING_EQUAL(got->description, t.description);
    CU_ASSERT_STRING_EQUAL(got->agent_id, agent_id);
    CU_ASSERT_EQUAL(got->n_context, 1);
    CU_ASSERT_PTR_NOT_NULL_FATAL(got->retry_policy);
    CU_ASSERT_EQUAL(got->retry_policy->max_attempts, 4);
    CU_ASSERT_DOUBLE_EQUAL(got->retry_policy->backoff_coefficient, 1.5, 1e-9);
    CU_ASSERT_EQUAL(got->retry_policy->initial_backoff->seconds, 2);
    CU_ASSERT_EQUAL(got->retry_policy->n_non_retryable_errors, 1);
    CU_ASSERT_EQUAL(got->timeout->seconds, 300);
    CU_ASSERT_EQUAL(got->n_webhook_urls, 1);
    CU_ASSERT_EQUAL(got->n_labels, 1);
    CU_ASSERT_PTR_NOT_NULL_FATAL(got->output_schema);
    CU_ASSERT_EQUAL(got->output_schema->n_fields, 1);
    CU_ASSERT_STRING_EQUAL(got->output_schema->fields[0]->key, "type");
    CU_ASSERT_STRING_NOT_EQUAL(got->etag, "");
    CU_ASSERT_PTR_NOT_NULL(got->create_time);
    CU_ASSERT_PTR_NULL(got->start_time);
    CU_ASSERT_PTR_NOT_NULL(got->usage);
    CU_ASSERT_STRING_EQUAL(got->workspace_id, "00000000-0000-0000-0000-000000000001");

    Agentz__V1__Task *again = get(got->id, &st);
    CU_ASSERT_EQUAL_FATAL(st, OK);
    CU_ASSERT_STRING_EQUAL(again->id, got->id);
    CU_ASSERT_STRING_EQUAL(again->etag, got->etag);
    CU_ASSERT_EQUAL(again->create_time->nanos, got->create_time->nanos);

    /* Dependencies: pending until they succeed. */
    Agentz__V1__Task d = make_task("Write a report");
    char *deps[] = {got->id};
    d.n_depends_on = 1;
    d.depends_on = deps;
    Agentz__V1__Task *dep = create(&d, NULL, &st);
    CU_ASSERT_EQUAL_FATAL(st, OK);
    CU_ASSERT_EQUAL(dep->status, AGENTZ__V1__TASK_STATUS__TASK_STATUS_PENDING);
    CU_ASSERT_EQUAL(dep->n_depends_on, 1);
    free_msg(dep);
    free_msg(got);
    free_msg(again);

    free_msg(get("", &st));
    CU_ASSERT_EQUAL(st, INVALID);
    free_msg(get("not-a-uuid", &st));
    CU_ASSERT_EQUAL(st, NOT_FOUND);
    free_msg(get("3f6c2b1a-0000-4000-8000-000000000000", &st));
    CU_ASSERT_EQUAL(st, NOT_FOUND);
}

typedef struct bad_case {
    const char *what;
    void (*mutate)(Agentz__V1__Task *t);
    int status;
    const char *field; /* must appear in the status details */
} bad_case;

static char huge[16400];
static Agentz__V1__RetryPolicy bad_rp;
static Google__Protobuf__Duration bad_d1, bad_d2;
static char *bad_list[40];
static Agentz__V1__Task__LabelsEntry bad_label, *bad_labels[1] = {&bad_label};

static void no_description(Agentz__V1__Task *t) { t->description = ""; }
static void long_description(Agentz__V1__Task *t)
{
    memset(huge, 'd', sizeof huge - 1);
    t->description = huge;
}
static void long_expected(Agentz__V1__Task *t)
{
    memset(huge, 'e', sizeof huge - 1);
    t->expected_output = huge;
}
static void control_description(Agentz__V1__Task *t) { t->description = "bad\x01text"; }
static void no_agent(Agentz__V1__Task *t) { t->agent_id = ""; }
static void bad_agent(Agentz__V1__Task *t) { t->agent_id = "agent-7"; }
static void missing_agent(Agentz__V1__Task *t) { t->agent_id = "0f0f0f0f-0000-4000-8000-000000000000"; }
static void disabled_agent(Agentz__V1__Task *t) { t->agent_id = disabled_agent_id; }
static void bad_dep(Agentz__V1__Task *t)
{
    bad_list[0] = "3f6c2b1a-0000-4000-8000-000000000000";
    bad_list[1] = "3f6c2b1a-0000-4000-8000-000000000001";
    bad_list[2] = "nope";
    t->n_depends_on = 3;
    t->depends_on = bad_list;
}
static void dup_dep(Agentz__V1__Task *t)
{
    bad_list[0] = "3f6c2b1a-0000-4000-8000-000000000000";
    bad_list[1] = "3f6c2b1a-0000-4000-8000-000000000000";
    t->n_depends_on = 2;
    t->depends_on = bad_list;
}
static void missing_dep(Agentz__V1__Task *t)
{
    bad_list[0] = "3f6c2b1a-0000-4000-8000-00000000abcd";
    t->n_depends_on = 1;
    t->depends_on = bad_list;
}
static void too_many_context(Agentz__V1__Task *t)
{
    for (int i = 0; i < 21; i++) bad_list[i] = "c";
    t->n_context = 21;
    t->context = bad_list;
}
static void empty_context(Agentz__V1__Task *t)
{
    bad_list[0] = "fine";
    bad_list[1] = "";
    t->n_context = 2;
    t->context = bad_list;
}
static void low_coefficient(Agentz__V1__Task *t)
{
    agentz__v1__retry_policy__init(&bad_rp);
    bad_rp.backoff_coefficient = 0.5;
    t->retry_policy = &bad_rp;
}
static void high_coefficient(Agentz__V1__Task *t)
{
    agentz__v1__retry_policy__init(&bad_rp);
    bad_rp.backoff_coefficient = 101;
    t->retry_policy = &bad_rp;
}
static void long_initial(Agentz__V1__Task *t)
{
    agentz__v1__retry_policy__init(&bad_rp);
    google__protobuf__duration__init(&bad_d1);
    bad_d1.seconds = 3601;
    bad_rp.initial_backoff = &bad_d1;
    t->retry_policy = &bad_rp;
}
static void max_below_initial(Agentz__V1__Task *t)
{
    agentz__v1__retry_policy__init(&bad_rp);
    google__protobuf__duration__init(&bad_d1);
    google__protobuf__duration__init(&bad_d2);
    bad_d1.seconds = 10;
    bad_d2.seconds = 5;
    bad_rp.initial_backoff = &bad_d1;
    bad_rp.maximum_backoff = &bad_d2;
    t->retry_policy = &bad_rp;
}
static void many_attempts(Agentz__V1__Task *t)
{
    agentz__v1__retry_policy__init(&bad_rp);
    bad_rp.max_attempts = 1001;
    t->retry_policy = &bad_rp;
}
static void negative_attempts(Agentz__V1__Task *t)
{
    agentz__v1__retry_policy__init(&bad_rp);
    bad_rp.max_attempts = -1;
    t->retry_policy = &bad_rp;
}
static void too_many_nre(Agentz__V1__Task *t)
{
    agentz__v1__retry_policy__init(&bad_rp);
    for (int i = 0; i < 33; i++) bad_list[i] = "x";
    bad_rp.n_non_retryable_errors = 33;
    bad_rp.non_retryable_errors = bad_list;
    t->retry_policy = &bad_rp;
}
static void long_timeout(Agentz__V1__Task *t)
{
    google__protobuf__duration__init(&bad_d1);
    bad_d1.seconds = 7 * 86400 + 1;
    t->timeout = &bad_d1;
}
static void negative_timeout(Agentz__V1__Task *t)
{
    google__protobuf__duration__init(&bad_d1);
    bad_d1.seconds = -1;
    t->timeout = &bad_d1;
}
static void ftp_webhook(Agentz__V1__Task *t)
{
    bad_list[0] = "ftp://example.com/x";
    t->n_webhook_urls = 1;
    t->webhook_urls = bad_list;
}
static void too_many_webhooks(Agentz__V1__Task *t)
{
    for (int i = 0; i < 9; i++) bad_list[i] = "https://example.com/";
    t->n_webhook_urls = 9;
    t->webhook_urls = bad_list;
}
static void bad_label_key(Agentz__V1__Task *t)
{
    agentz__v1__task__labels_entry__init(&bad_label);
    bad_label.key = "Bad Key";
    bad_label.value = "v";
    t->n_labels = 1;
    t->labels = bad_labels;
}

static void test_validation(void)
{
    static const bad_case cases[] = {
        {"missing description", no_description, INVALID, "task.description is required"},
        {"description too long", long_description, INVALID, "task.description"},
        {"expected_output too long", long_expected, INVALID, "task.expected_output"},
        {"control character", control_description, INVALID, "task.description"},
        {"missing agent", no_agent, INVALID, "task.agent_id is required"},
        {"agent not a uuid", bad_agent, INVALID, "task.agent_id"},
        {"unknown agent", missing_agent, INVALID, "task.agent_id: agent 0f0f0f0f-0000-4000-8000-000000000000 not found"},
        {"disabled agent", disabled_agent, PRECONDITION, "task.agent_id"},
        {"dependency not a uuid", bad_dep, INVALID, "task.depends_on[2]: not a task id"},
        {"duplicate dependency", dup_dep, INVALID, "task.depends_on[1]"},
        {"unknown dependency", missing_dep, INVALID, "task.depends_on[0]"},
        {"21 context entries", too_many_context, INVALID, "task.context"},
        {"empty context entry", empty_context, INVALID, "task.context[1]"},
        {"coefficient 0.5", low_coefficient, INVALID, "task.retry_policy.backoff_coefficient: must be >= 1"},
        {"coefficient 101", high_coefficient, INVALID, "task.retry_policy.backoff_coefficient"},
        {"initial backoff > 1h", long_initial, INVALID, "task.retry_policy.initial_backoff"},
        {"maximum < initial", max_below_initial, INVALID, "task.retry_policy.maximum_backoff"},
        {"max_attempts 1001", many_attempts, INVALID, "task.retry_policy.max_attempts"},
        {"max_attempts -1", negative_attempts, INVALID, "task.retry_policy.max_attempts"},
        {"33 non-retryable errors", too_many_nre, INVALID, "task.retry_policy.non_retryable_errors"},
        {"timeout > 7 days", long_timeout, INVALID, "task.timeout"},
        {"negative timeout", negative_timeout, INVALID, "task.timeout"},
        {"ftp webhook", ftp_webhook, INVALID, "task.webhook_urls[0]"},
        {"9 webhooks", too_many_webhooks, INVALID, "task.webhook_urls"},
        {"bad label key", bad_label_key, INVALID, "task.labels"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        Agentz__V1__Task t = make_task("Validated");
        cases[i].mutate(&t);
        int st;
        Agentz__V1__Task *got = create(&t, NULL, &st);
        if (st != cases[i].status || !strstr(last_msg, cases[i].field))
            fprintf(stderr, "case %s: status %d, details \"%s\"\n", cases[i].what, st, last_msg);
        CU_ASSERT_EQUAL(st, cases[i].status);
        CU_ASSERT_PTR_NOT_NULL(strstr(last_msg, cases[i].field));
        free_msg(got);
    }
    Agentz__V1__CreateTaskRequest req = AGENTZ__V1__CREATE_TASK_REQUEST__INIT;
    CU_ASSERT_EQUAL(call(SVC "CreateTask", &req, &agentz__v1__task__descriptor, NULL), INVALID);
    CU_ASSERT_PTR_NOT_NULL(strstr(last_msg, "task is required"));
}

static void test_idempotent_create(void)
{
    char rid[64];
    snprintf(rid, sizeof rid, "task-req-%s", az_itest_unique());
    Agentz__V1__Task t = make_task("Idempotent");
    int st;
    Agentz__V1__Task *first = create(&t, rid, &st);
    CU_ASSERT_EQUAL_FATAL(st, OK);
    Agentz__V1__Task *second = create(&t, rid, &st);
    CU_ASSERT_EQUAL_FATAL(st, OK);
    CU_ASSERT_STRING_EQUAL(first->id, second->id);
    t.description = "Something else";
    Agentz__V1__Task *third = create(&t, rid, &st);
    CU_ASSERT_EQUAL(st, EXISTS);
    CU_ASSERT_PTR_NOT_NULL(strstr(last_msg, "request_id"));
    free_msg(first);
    free_msg(second);
    free_msg(third);
}

/* ---------------------------------------------------------------- list */

static void test_list(void)
{
    char ag[40];
    make_agent("Lister", 0, ag);
    char ids[5][40];
    for (int i = 0; i < 5; i++) {
        Agentz__V1__Task t = make_task("listed");
        t.agent_id = ag;
        int st;
        Agentz__V1__Task *got = create(&t, NULL, &st);
        CU_ASSERT_EQUAL_FATAL(st, OK);
        snprintf(ids[i], 40, "%s", got->id);
        free_msg(got);
    }
    int st;
    free_msg(cancel(ids[1], "", &st));
    CU_ASSERT_EQUAL(st, OK);
    /* Pages of two, newest first, filtered by agent. */
    Agentz__V1__ListTasksRequest req = AGENTZ__V1__LIST_TASKS_REQUEST__INIT;
    req.agent_id = ag;
    req.page_size = 2;
    char token[512] = "";
    int n = 0;
    for (int page = 0; page < 5; page++) {
        req.page_token = token;
        Agentz__V1__ListTasksResponse *r = NULL;
        CU_ASSERT_EQUAL_FATAL(call(SVC "ListTasks", &req, &agentz__v1__list_tasks_response__descriptor,
                                   (void **)&r), OK);
        CU_ASSERT(r->n_tasks <= 2);
        for (size_t i = 0; i < r->n_tasks; i++, n++) {
            if (n < 5) CU_ASSERT_STRING_EQUAL(r->tasks[i]->id, ids[4 - n]);
        }
        snprintf(token, sizeof token, "%s", r->next_page_token);
        free_msg(r);
        if (!*token) break;
    }
    CU_ASSERT_EQUAL(n, 5);
    /* Status filter. */
    req.page_token = "";
    req.page_size = 0;
    req.status = AGENTZ__V1__TASK_STATUS__TASK_STATUS_CANCELLED;
    Agentz__V1__ListTasksResponse *r = NULL;
    CU_ASSERT_EQUAL_FATAL(call(SVC "ListTasks", &req, &agentz__v1__list_tasks_response__descriptor, (void **)&r), OK);
    CU_ASSERT_EQUAL(r->n_tasks, 1);
    if (r->n_tasks == 1) CU_ASSERT_STRING_EQUAL(r->tasks[0]->id, ids[1]);
    free_msg(r);
    /* run_id filter: no standalone task has one. */
    req.status = 0;
    req.run_id = "d3b07384-d113-4ec6-a7f2-1c2b0b6f0e11";
    CU_ASSERT_EQUAL_FATAL(call(SVC "ListTasks", &req, &agentz__v1__list_tasks_response__descriptor, (void **)&r), OK);
    CU_ASSERT_EQUAL(r->n_tasks, 0);
    free_msg(r);
    /* Errors. */
    Agentz__V1__ListTasksRequest bad = AGENTZ__V1__LIST_TASKS_REQUEST__INIT;
    bad.page_size = -1;
    CU_ASSERT_EQUAL(call(SVC "ListTasks", &bad, &agentz__v1__list_tasks_response__descriptor, NULL), INVALID);
    CU_ASSERT_PTR_NOT_NULL(strstr(last_msg, "page_size"));
    bad.page_size = 0;
    bad.status = 42;
    CU_ASSERT_EQUAL(call(SVC "ListTasks", &bad, &agentz__v1__list_tasks_response__descriptor, NULL), INVALID);
    CU_ASSERT_PTR_NOT_NULL(strstr(last_msg, "status"));
    bad.status = 0;
    bad.agent_id = "x";
    CU_ASSERT_EQUAL(call(SVC "ListTasks", &bad, &agentz__v1__list_tasks_response__descriptor, NULL), INVALID);
    CU_ASSERT_PTR_NOT_NULL(strstr(last_msg, "agent_id"));
    bad.agent_id = "";
    bad.page_token = "bm90LWEtdG9rZW4";
    CU_ASSERT_EQUAL(call(SVC "ListTasks", &bad, &agentz__v1__list_tasks_response__descriptor, NULL), INVALID);
    CU_ASSERT_PTR_NOT_NULL(strstr(last_msg, "page_token"));
}

/* ---------------------------------------------------------------- cancel / retry */

static void test_cancel_and_retry(void)
{
    Agentz__V1__Task t = make_task("Cancel me");
    int st;
    Agentz__V1__Task *a = create(&t, NULL, &st);
    CU_ASSERT_EQUAL_FATAL(st, OK);
    Agentz__V1__Task d = make_task("Downstream");
    char *deps[] = {a->id};
    d.n_depends_on = 1;
    d.depends_on = deps;
    Agentz__V1__Task *b = create(&d, NULL, &st);
    CU_ASSERT_EQUAL_FATAL(st, OK);

    /* Retry of a queued task: illegal, names the state. */
    free_msg(retry(a->id, &st));
    CU_ASSERT_EQUAL(st, PRECONDITION);
    CU_ASSERT_PTR_NOT_NULL(strstr(last_msg, "queued"));

    Agentz__V1__Task *c = cancel(a->id, "no longer needed", &st);
    CU_ASSERT_EQUAL_FATAL(st, OK);
    CU_ASSERT_EQUAL(c->status, AGENTZ__V1__TASK_STATUS__TASK_STATUS_CANCELLED);
    CU_ASSERT_PTR_NOT_NULL_FATAL(c->error);
    CU_ASSERT_STRING_EQUAL(c->error->type, "cancelled");
    CU_ASSERT_STRING_EQUAL(c->error->message, "no longer needed");
    CU_ASSERT_STRING_NOT_EQUAL(c->etag, a->etag);
    Agentz__V1__Task *gb = get(b->id, &st);
    CU_ASSERT_EQUAL(gb->status, AGENTZ__V1__TASK_STATUS__TASK_STATUS_CANCELLED);
    free_msg(gb);
    /* Cancelling again succeeds and changes nothing. */
    Agentz__V1__Task *c2 = cancel(a->id, "again", &st);
    CU_ASSERT_EQUAL(st, OK);
    CU_ASSERT_STRING_EQUAL(c2->etag, c->etag);
    free_msg(c2);

    Agentz__V1__Task *r = retry(a->id, &st);
    CU_ASSERT_EQUAL_FATAL(st, OK);
    CU_ASSERT_EQUAL(r->status, AGENTZ__V1__TASK_STATUS__TASK_STATUS_QUEUED);
    CU_ASSERT_PTR_NULL(r->error);
    gb = get(b->id, &st);
    CU_ASSERT_EQUAL(gb->status, AGENTZ__V1__TASK_STATUS__TASK_STATUS_PENDING);
    free_msg(gb);

    free_msg(cancel("3f6c2b1a-0000-4000-8000-000000000000", "", &st));
    CU_ASSERT_EQUAL(st, NOT_FOUND);
    free_msg(retry("3f6c2b1a-0000-4000-8000-000000000000", &st));
    CU_ASSERT_EQUAL(st, NOT_FOUND);
    free_msg(cancel("", "", &st));
    CU_ASSERT_EQUAL(st, INVALID);
    free_msg(retry("", &st));
    CU_ASSERT_EQUAL(st, INVALID);
    /* Retrying the downstream task while its dependency is unfinished: it is pending, illegal. */
    free_msg(retry(b->id, &st));
    CU_ASSERT_EQUAL(st, PRECONDITION);
    CU_ASSERT_PTR_NOT_NULL(strstr(last_msg, "pending"));
    free_msg(a);
    free_msg(b);
    free_msg(c);
    free_msg(r);
}

static const char *race_id;
static int race_other;
static pthread_mutex_t race_mu = PTHREAD_MUTEX_INITIALIZER;

static void *race_main(void *arg)
{
    unsigned seed = (unsigned)(long)arg * 7919u + 17u;
    for (int i = 0; i < 10; i++) {
        ProtobufCMessage *resp = NULL;
        int st = -1;
        char msg[AZ_MSG_MAX];
        if (rand_r(&seed) % 2) {
            Agentz__V1__CancelTaskRequest req = AGENTZ__V1__CANCEL_TASK_REQUEST__INIT;
            req.id = (char *)race_id;
            az_conn_unary(conn, SVC "CancelTask", &req.base, &agentz__v1__task__descriptor, 20000,
                          NULL, &resp, &st, msg);
        } else {
            Agentz__V1__RetryTaskRequest req = AGENTZ__V1__RETRY_TASK_REQUEST__INIT;
            req.id = (char *)race_id;
            az_conn_unary(conn, SVC "RetryTask", &req.base, &agentz__v1__task__descriptor, 20000,
                          NULL, &resp, &st, msg);
        }
        if (st != OK && st != PRECONDITION) {
            fprintf(stderr, "race: status %d: %s\n", st, msg);
            pthread_mutex_lock(&race_mu);
            race_other++;
            pthread_mutex_unlock(&race_mu);
        }
        free_msg(resp);
    }
    return NULL;
}

static void test_parallel_cancel_retry(void)
{
    Agentz__V1__Task t = make_task("Contended");
    int st;
    Agentz__V1__Task *a = create(&t, NULL, &st);
    CU_ASSERT_EQUAL_FATAL(st, OK);
    race_id = a->id;
    pthread_t th[16];
    for (long i = 0; i < 16; i++) pthread_create(&th[i], NULL, race_main, (void *)i);
    for (int i = 0; i < 16; i++) pthread_join(th[i], NULL);
    CU_ASSERT_EQUAL(race_other, 0);
    Agentz__V1__Task *g = get(a->id, &st);
    CU_ASSERT_EQUAL_FATAL(st, OK);
    CU_ASSERT(g->status == AGENTZ__V1__TASK_STATUS__TASK_STATUS_CANCELLED ||
              g->status == AGENTZ__V1__TASK_STATUS__TASK_STATUS_QUEUED);
    /* A consistent final state: cancelled carries the cancel error, queued carries none. */
    if (g->status == AGENTZ__V1__TASK_STATUS__TASK_STATUS_CANCELLED) {
        CU_ASSERT_TRUE(g->error && strcmp(g->error->type, "cancelled") == 0);
    } else {
        CU_ASSERT_PTR_NULL(g->error);
    }
    /* No attempt was ever started. */
    Agentz__V1__ListTaskAttemptsRequest req = AGENTZ__V1__LIST_TASK_ATTEMPTS_REQUEST__INIT;
    req.task_id = a->id;
    Agentz__V1__ListTaskAttemptsResponse *l = NULL;
    CU_ASSERT_EQUAL(call(SVC "ListTaskAttempts", &req, &agentz__v1__list_task_attempts_response__descriptor,
                         (void **)&l), OK);
    CU_ASSERT_TRUE(l && l->n_attempts == 0);
    free_msg(l);
    free_msg(g);
    free_msg(a);
}

/* ---------------------------------------------------------------- attempts, stats, queue */

static void test_attempts_and_stats(void)
{
    Agentz__V1__ListTaskAttemptsRequest req = AGENTZ__V1__LIST_TASK_ATTEMPTS_REQUEST__INIT;
    CU_ASSERT_EQUAL(call(SVC "ListTaskAttempts", &req, &agentz__v1__list_task_attempts_response__descriptor, NULL),
                    INVALID);
    CU_ASSERT_PTR_NOT_NULL(strstr(last_msg, "task_id"));
    req.task_id = "3f6c2b1a-0000-4000-8000-000000000000";
    CU_ASSERT_EQUAL(call(SVC "ListTaskAttempts", &req, &agentz__v1__list_task_attempts_response__descriptor, NULL),
                    NOT_FOUND);
    req.page_size = -2;
    CU_ASSERT_EQUAL(call(SVC "ListTaskAttempts", &req, &agentz__v1__list_task_attempts_response__descriptor, NULL),
                    INVALID);

    char ag[40];
    make_agent("Counted", 0, ag);
    int st;
    for (int i = 0; i < 3; i++) {
        Agentz__V1__Task t = make_task("counted");
        t.agent_id = ag;
        Agentz__V1__Task *got = create(&t, NULL, &st);
        CU_ASSERT_EQUAL_FATAL(st, OK);
        if (i == 0) free_msg(cancel(got->id, "", &st));
        free_msg(got);
    }
    Agentz__V1__GetTaskStatsRequest sr = AGENTZ__V1__GET_TASK_STATS_REQUEST__INIT;
    sr.agent_id = ag;
    Agentz__V1__TaskStats *s = NULL;
    CU_ASSERT_EQUAL_FATAL(call(SVC "GetTaskStats", &sr, &agentz__v1__task_stats__descriptor, (void **)&s), OK);
    CU_ASSERT_EQUAL(s->total, 3);
    CU_ASSERT_EQUAL(s->queued, 2);
    CU_ASSERT_EQUAL(s->cancelled, 1);
    CU_ASSERT_DOUBLE_EQUAL(s->success_rate, 0.0, 1e-9);
    CU_ASSERT_PTR_NOT_NULL(s->start_time);
    CU_ASSERT_PTR_NOT_NULL(s->end_time);
    if (s->start_time && s->end_time)
        CU_ASSERT_EQUAL(s->end_time->seconds - s->start_time->seconds, 86400); /* default window */
    free_msg(s);
    /* A window in the past holds nothing; an inverted one is invalid. */
    Google__Protobuf__Timestamp t0 = GOOGLE__PROTOBUF__TIMESTAMP__INIT, t1 = GOOGLE__PROTOBUF__TIMESTAMP__INIT;
    t0.seconds = 1000000000;
    t1.seconds = 1000003600;
    sr.start_time = &t0;
    sr.end_time = &t1;
    CU_ASSERT_EQUAL_FATAL(call(SVC "GetTaskStats", &sr, &agentz__v1__task_stats__descriptor, (void **)&s), OK);
    CU_ASSERT_EQUAL(s->total, 0);
    free_msg(s);
    sr.start_time = &t1;
    sr.end_time = &t0;
    CU_ASSERT_EQUAL(call(SVC "GetTaskStats", &sr, &agentz__v1__task_stats__descriptor, NULL), INVALID);
    CU_ASSERT_PTR_NOT_NULL(strstr(last_msg, "start_time"));
    sr.start_time = sr.end_time = NULL;
    sr.agent_id = "nope";
    CU_ASSERT_EQUAL(call(SVC "GetTaskStats", &sr, &agentz__v1__task_stats__descriptor, NULL), INVALID);
    CU_ASSERT_PTR_NOT_NULL(strstr(last_msg, "agent_id"));
}

/* The embedded Redis socket: DATA/run/redis.sock, or DATA/run/socket_dir names another dir. */
static az_redis *redis_of_server(void)
{
    char path[700], dirbuf[600] = "";
    snprintf(path, sizeof path, "%s/run/socket_dir", srv.data_dir);
    FILE *f = fopen(path, "r");
    if (f) {
        if (!fgets(dirbuf, sizeof dirbuf, f)) dirbuf[0] = '\0';
        fclose(f);
        dirbuf[strcspn(dirbuf, "\n")] = '\0';
    }
    char url[800];
    if (*dirbuf) snprintf(url, sizeof url, "unix://%s/redis.sock", dirbuf);
    else snprintf(url, sizeof url, "unix://%s/run/redis.sock", srv.data_dir);
    az_redis *r = NULL;
    char msg[AZ_MSG_MAX];
    if (az_redis_new(url, 5000, &r, msg) != AZ_OK) fprintf(stderr, "redis %s: %s\n", url, msg);
    return r;
}

static int stream_has(az_redis *r, const char *id)
{
    const char *argv[6] = {"XREVRANGE", "agentz:tasks:ready", "+", "-", "COUNT", "1000"};
    redisReply *rep = NULL;
    char msg[AZ_MSG_MAX];
    if (az_redis_command(r, 6, argv, NULL, &rep, msg) != AZ_OK) return 0;
    int found = 0;
    for (size_t i = 0; rep->type == REDIS_REPLY_ARRAY && i < rep->elements && !found; i++) {
        redisReply *fields = rep->element[i]->element[1];
        for (size_t k = 0; k + 1 < fields->elements; k += 2) {
            if (strcmp(fields->element[k]->str, "task") == 0 && strcmp(fields->element[k + 1]->str, id) == 0)
                found = 1;
        }
    }
    freeReplyObject(rep);
    return found;
}

static void test_redis_handoff(void)
{
    az_redis *r = redis_of_server();
    CU_ASSERT_PTR_NOT_NULL_FATAL(r);
    Agentz__V1__Task t = make_task("Published");
    int st;
    Agentz__V1__Task *a = create(&t, NULL, &st);
    CU_ASSERT_EQUAL_FATAL(st, OK);
    CU_ASSERT_TRUE(stream_has(r, a->id));
    /* A pending task is not published; a retried one is. */
    Agentz__V1__Task d = make_task("Waits");
    char *deps[] = {a->id};
    d.n_depends_on = 1;
    d.depends_on = deps;
    Agentz__V1__Task *b = create(&d, NULL, &st);
    CU_ASSERT_EQUAL_FATAL(st, OK);
    CU_ASSERT_FALSE(stream_has(r, b->id));
    free_msg(a);
    free_msg(b);
    az_redis_free(r);
}

/* ---------------------------------------------------------------- CreateTasks */

static Agentz__V1__CreateTasksResponse *create_batch(Agentz__V1__Task *tasks, const char *const *rids,
                                                     size_t n, int *status)
{
    Agentz__V1__CreateTaskRequest *items = calloc(n ? n : 1, sizeof *items);
    Agentz__V1__CreateTaskRequest **ptrs = calloc(n ? n : 1, sizeof *ptrs);
    for (size_t i = 0; i < n; i++) {
        agentz__v1__create_task_request__init(&items[i]);
        items[i].task = &tasks[i];
        items[i].request_id = (char *)(rids && rids[i] ? rids[i] : "");
        ptrs[i] = &items[i];
    }
    Agentz__V1__CreateTasksRequest req = AGENTZ__V1__CREATE_TASKS_REQUEST__INIT;
    req.n_requests = n;
    req.requests = ptrs;
    void *out = NULL;
    *status = call(SVC "CreateTasks", &req, &agentz__v1__create_tasks_response__descriptor, &out);
    free(ptrs);
    free(items);
    return out;
}

/* Tasks of agent (every page). */
static size_t count_of_agent(const char *agent)
{
    size_t n = 0;
    char token[512] = "";
    do {
        Agentz__V1__ListTasksRequest req = AGENTZ__V1__LIST_TASKS_REQUEST__INIT;
        req.agent_id = (char *)agent;
        req.page_size = 1000;
        req.page_token = token;
        void *out = NULL;
        CU_ASSERT_EQUAL_FATAL(call(SVC "ListTasks", &req, &agentz__v1__list_tasks_response__descriptor, &out), OK);
        Agentz__V1__ListTasksResponse *r = out;
        n += r->n_tasks;
        snprintf(token, sizeof token, "%s", r->next_page_token);
        free_msg(out);
    } while (token[0]);
    return n;
}

static void test_create_tasks(void)
{
    char batch_agent[40];
    make_agent("Batch Runner", 0, batch_agent);
    Agentz__V1__Task t[3];
    const char *desc[3] = {"Batch first", "Batch second", "Batch third"};
    for (int i = 0; i < 3; i++) {
        t[i] = make_task(desc[i]);
        t[i].agent_id = batch_agent;
    }
    int st;
    Agentz__V1__CreateTasksResponse *r = create_batch(t, NULL, 3, &st);
    if (st != OK) fprintf(stderr, "CreateTasks: %d %s\n", st, last_msg);
    CU_ASSERT_EQUAL_FATAL(st, OK);
    CU_ASSERT_EQUAL_FATAL(r->n_tasks, 3);
    az_redis *redis = redis_of_server();
    CU_ASSERT_PTR_NOT_NULL_FATAL(redis);
    for (int i = 0; i < 3; i++) {
        /* The response is in request order, every task stored, queued and on the stream. */
        CU_ASSERT_STRING_EQUAL(r->tasks[i]->description, desc[i]);
        CU_ASSERT_EQUAL(r->tasks[i]->status, AGENTZ__V1__TASK_STATUS__TASK_STATUS_QUEUED);
        Agentz__V1__Task *g = get(r->tasks[i]->id, &st);
        CU_ASSERT_EQUAL(st, OK);
        if (g) CU_ASSERT_STRING_EQUAL(g->description, desc[i]);
        free_msg(g);
        CU_ASSERT_TRUE(stream_has(redis, r->tasks[i]->id));
    }
    az_redis_free(redis);
    free_msg(r);
    CU_ASSERT_EQUAL(count_of_agent(batch_agent), 3);

    /* Atomic: one bad item and nothing is created; the message names the item and field. */
    Agentz__V1__Task bad[4];
    for (int i = 0; i < 4; i++) {
        bad[i] = make_task("Atomic batch");
        bad[i].agent_id = batch_agent;
    }
    bad[3].description = "";
    free_msg(create_batch(bad, NULL, 4, &st));
    CU_ASSERT_EQUAL(st, INVALID);
    CU_ASSERT_PTR_NOT_NULL(strstr(last_msg, "requests[3].task.description"));
    bad[3].description = "Atomic batch";
    char *missing[] = {"7d1f0c52-1111-4222-8333-444455556666"};
    bad[2].n_depends_on = 1;
    bad[2].depends_on = missing;
    free_msg(create_batch(bad, NULL, 4, &st));
    CU_ASSERT_EQUAL(st, INVALID);
    CU_ASSERT_PTR_NOT_NULL(strstr(last_msg, "requests[2].task.depends_on[0]: task 7d1f0c52"));
    bad[2].n_depends_on = 0;
    bad[1].agent_id = "7d1f0c52-1111-4222-8333-444455556666";
    free_msg(create_batch(bad, NULL, 4, &st));
    CU_ASSERT_EQUAL(st, INVALID);
    CU_ASSERT_PTR_NOT_NULL(strstr(last_msg, "requests[1].task.agent_id: agent 7d1f0c52"));
    bad[1].agent_id = disabled_agent_id;
    free_msg(create_batch(bad, NULL, 4, &st));
    CU_ASSERT_EQUAL(st, PRECONDITION);
    CU_ASSERT_PTR_NOT_NULL(strstr(last_msg, "requests[1].task.agent_id"));
    bad[1].agent_id = batch_agent;
    bad[0].retry_policy = &(Agentz__V1__RetryPolicy)AGENTZ__V1__RETRY_POLICY__INIT;
    bad[0].retry_policy->backoff_coefficient = 0.5;
    free_msg(create_batch(bad, NULL, 4, &st));
    CU_ASSERT_EQUAL(st, INVALID);
    CU_ASSERT_PTR_NOT_NULL(strstr(last_msg, "requests[0].task.retry_policy.backoff_coefficient"));
    bad[0].retry_policy = NULL;
    CU_ASSERT_EQUAL(count_of_agent(batch_agent), 3);

    /* A request id twice in one batch. */
    const char *dup[4] = {"b-1", "b-2", "b-1", ""};
    free_msg(create_batch(bad, dup, 4, &st));
    CU_ASSERT_EQUAL(st, INVALID);
    CU_ASSERT_PTR_NOT_NULL(strstr(last_msg, "requests[2].request_id: \"b-1\" is also the request_id of requests[0]"));
    /* An item without its task, none at all, too many. */
    Agentz__V1__CreateTaskRequest empty = AGENTZ__V1__CREATE_TASK_REQUEST__INIT, *one[] = {&empty};
    Agentz__V1__CreateTasksRequest req = AGENTZ__V1__CREATE_TASKS_REQUEST__INIT;
    req.n_requests = 1;
    req.requests = one;
    CU_ASSERT_EQUAL(call(SVC "CreateTasks", &req, &agentz__v1__create_tasks_response__descriptor, NULL), INVALID);
    CU_ASSERT_PTR_NOT_NULL(strstr(last_msg, "requests[0].task is required"));
    req.n_requests = 0;
    CU_ASSERT_EQUAL(call(SVC "CreateTasks", &req, &agentz__v1__create_tasks_response__descriptor, NULL), INVALID);
    CU_ASSERT_PTR_NOT_NULL(strstr(last_msg, "requests: at least 1 task"));
    enum { TOO_MANY = 1001 };
    Agentz__V1__Task *many = calloc(TOO_MANY, sizeof *many);
    for (int i = 0; i < TOO_MANY; i++) {
        many[i] = make_task("Too many");
        many[i].agent_id = batch_agent;
    }
    free_msg(create_batch(many, NULL, TOO_MANY, &st));
    CU_ASSERT_EQUAL(st, INVALID);
    CU_ASSERT_PTR_NOT_NULL(strstr(last_msg, "requests: at most 1000 tasks per call, got 1001"));
    /* 1000 is allowed, and all are there. */
    r = create_batch(many, NULL, 1000, &st);
    CU_ASSERT_EQUAL_FATAL(st, OK);
    CU_ASSERT_EQUAL(r->n_tasks, 1000);
    free_msg(r);
    free(many);
    CU_ASSERT_EQUAL(count_of_agent(batch_agent), 1003);
}

static void test_create_tasks_idempotent(void)
{
    char k0[64], k2[64], single[64];
    const char *u = az_itest_unique();
    snprintf(k0, sizeof k0, "batch-%s-0", u);
    snprintf(k2, sizeof k2, "batch-%s-2", u);
    snprintf(single, sizeof single, "batch-%s-single", u);
    Agentz__V1__Task t[3] = {make_task("Idem batch 0"), make_task("Idem batch 1"), make_task("Idem batch 2")};
    /* Item 2's key was used by CreateTask for the same task first. */
    int st;
    Agentz__V1__Task *first = create(&t[2], k2, &st);
    CU_ASSERT_EQUAL_FATAL(st, OK);
    const char *rids[3] = {k0, "", k2};
    Agentz__V1__CreateTasksResponse *a = create_batch(t, rids, 3, &st);
    CU_ASSERT_EQUAL_FATAL(st, OK);
    Agentz__V1__CreateTasksResponse *b = create_batch(t, rids, 3, &st);
    CU_ASSERT_EQUAL_FATAL(st, OK);
    CU_ASSERT_STRING_EQUAL(a->tasks[2]->id, first->id);
    CU_ASSERT_STRING_EQUAL(b->tasks[2]->id, first->id);
    CU_ASSERT_STRING_EQUAL(a->tasks[0]->id, b->tasks[0]->id);      /* retried: the first task */
    CU_ASSERT_STRING_NOT_EQUAL(a->tasks[1]->id, b->tasks[1]->id);  /* no key: a new task */
    /* The same key with another task: ALREADY_EXISTS naming the item, nothing created. */
    t[0].description = "Idem batch changed";
    free_msg(create_batch(t, rids, 3, &st));
    CU_ASSERT_EQUAL(st, EXISTS);
    CU_ASSERT_PTR_NOT_NULL(strstr(last_msg, "requests[0].request_id"));
    free_msg(first);
    free_msg(a);
    free_msg(b);
}

/* ---------------------------------------------------------------- suite */

static int suite_init(void)
{
    /* api only: these suites drive the task state machine themselves (claim, complete), so no
     * worker may pick their tasks up; the engine has its own suites (test_engine*). */
    static const char *const api_only[] = {"--roles", "api", NULL};
    if (az_itest_start(&srv, "tasks", api_only) != 0) return -1;
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

static void test_setup_agents(void)
{
    make_agent("Task Runner", 0, agent_id);
    make_agent("Sleeper", 1, disabled_agent_id);
}

int main(void)
{
    if (CU_initialize_registry() != CUE_SUCCESS) return 1;
    CU_pSuite s = CU_add_suite("tasks", suite_init, suite_clean);
    CU_add_test(s, "agents for the tasks", test_setup_agents);
    CU_add_test(s, "create and get", test_create_and_get);
    CU_add_test(s, "validation names the field", test_validation);
    CU_add_test(s, "idempotent create by request_id", test_idempotent_create);
    CU_add_test(s, "list pagination and filters", test_list);
    CU_add_test(s, "cancel and retry, illegal transitions", test_cancel_and_retry);
    CU_add_test(s, "16 parallel cancel/retry calls", test_parallel_cancel_retry);
    CU_add_test(s, "attempts and stats", test_attempts_and_stats);
    CU_add_test(s, "ready tasks reach the redis stream", test_redis_handoff);
    CU_add_test(s, "CreateTasks: order, atomicity, limits, field names", test_create_tasks);
    CU_add_test(s, "CreateTasks: idempotent items", test_create_tasks_idempotent);
    return az_itest_run_cunit();
}
