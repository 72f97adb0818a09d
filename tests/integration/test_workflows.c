/* WorkflowService against the real agentzd, PostgreSQL and Redis: every RPC (WatchRun in depth
 * in test_realtime.c), the
 * validation errors, versions, idempotency, pagination, runs without an engine (their tasks stay
 * queued or pending), cancel and resume, analytics and templates. */
#include <CUnit/Basic.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agentz/v1/agent.pb-c.h"
#include "agentz/v1/workflow.pb-c.h"
#include "google/protobuf/empty.pb-c.h"
#include "google/protobuf/field_mask.pb-c.h"
#include "harness.h"
#include "store/pgpool.h"
#include "task/task.h"
#include "workflow/run.h"

#define SVC "/agentz.v1.WorkflowService/"
#define NOPE "3f6c2b1a-0000-4000-8000-000000000000"

enum { OK = 0, INVALID = 3, NOT_FOUND = 5, EXISTS = 6, PRECONDITION = 9, ABORTED = 10 };
enum {
    T_PENDING = AGENTZ__V1__TASK_STATUS__TASK_STATUS_PENDING,
    T_QUEUED = AGENTZ__V1__TASK_STATUS__TASK_STATUS_QUEUED,
    T_CANCELLED = AGENTZ__V1__TASK_STATUS__TASK_STATUS_CANCELLED,
    R_RUNNING = AGENTZ__V1__RUN_STATUS__RUN_STATUS_RUNNING,
    R_CANCELLED = AGENTZ__V1__RUN_STATUS__RUN_STATUS_CANCELLED,
};

static az_itest_server srv;
static az_conn *conn;
static char last_msg[AZ_MSG_MAX];
static char agent_a[40], agent_b[40], agent_off[40], agent_mgr[40];

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

/* Asserts a call's status and that its details contain text (when not NULL). */
static void expect_status(int line, int st, int want, const char *text)
{
    int text_ok = !text || strstr(last_msg, text) != NULL;
    if (st != want || !text_ok)
        fprintf(stderr, "\n  line %d: status %d \"%s\", want %d \"%s\"\n", line, st, last_msg, want,
                text ? text : "");
    CU_ASSERT_EQUAL(st, want);
    CU_ASSERT_TRUE(text_ok);
}
#define EXPECT_STATUS(st, want, text) expect_status(__LINE__, (st), (want), (text))

/* Creates an agent for the suite (from suite_init, so no CUnit asserts); 0 or the status. */
static int make_agent(const char *role, int disabled, char out[40])
{
    Agentz__V1__Agent a = AGENTZ__V1__AGENT__INIT;
    a.role = (char *)role;
    a.goal = "Do excellent work on {topic}";
    a.backstory = "Has done this for years.";
    a.disabled = disabled;
    Agentz__V1__CreateAgentRequest req = AGENTZ__V1__CREATE_AGENT_REQUEST__INIT;
    req.agent = &a;
    Agentz__V1__Agent *got = NULL;
    int st = call("/agentz.v1.AgentService/CreateAgent", &req, &agentz__v1__agent__descriptor,
                  (void **)&got);
    if (st == 0) snprintf(out, 40, "%s", got->id);
    else fprintf(stderr, "cannot create agent %s: %d %s\n", role, st, last_msg);
    free_msg(got);
    return st;
}

/* ---------------------------------------------------------------- a workflow to play with */

typedef struct wf_builder {
    Agentz__V1__Workflow w;
    Agentz__V1__Step steps[4];
    Agentz__V1__Step *sp[4];
    Agentz__V1__WorkflowInput inputs[2];
    Agentz__V1__WorkflowInput *ip[2];
    Agentz__V1__Workflow__LabelsEntry label;
    Agentz__V1__Workflow__LabelsEntry *lp[1];
    char *deps[4][3];
    char *ctx[4][3];
    char name[96];
} wf_builder;

/* research -> write -> review, sequential, input topic (required) and audience (default). */
static Agentz__V1__Workflow *build(wf_builder *b, const char *prefix)
{
    memset(b, 0, sizeof *b);
    agentz__v1__workflow__init(&b->w);
    snprintf(b->name, sizeof b->name, "%s-%s", prefix, az_itest_unique());
    b->w.name = b->name;
    b->w.description = "A blog pipeline";
    b->w.process = AGENTZ__V1__PROCESS__PROCESS_SEQUENTIAL;
    static const char *const ids[] = {"research", "write", "review", "extra"};
    for (int i = 0; i < 4; i++) {
        agentz__v1__step__init(&b->steps[i]);
        b->sp[i] = &b->steps[i];
        b->steps[i].id = (char *)ids[i];
        b->steps[i].agent_id = i % 2 ? agent_b : agent_a;
        b->steps[i].description = "Work on {topic} for {audience}.";
        b->steps[i].expected_output = "A text about {topic}.";
        b->steps[i].depends_on = b->deps[i];
        b->steps[i].context_from = b->ctx[i];
    }
    for (int i = 0; i < 2; i++) {
        agentz__v1__workflow_input__init(&b->inputs[i]);
        b->ip[i] = &b->inputs[i];
    }
    b->inputs[0].name = "topic";
    b->inputs[0].required = 1;
    b->inputs[1].name = "audience";
    b->inputs[1].default_value = "engineers";
    b->w.n_inputs = 2;
    b->w.inputs = b->ip;
    b->w.n_steps = 3;
    b->w.steps = b->sp;
    agentz__v1__workflow__labels_entry__init(&b->label);
    b->label.key = "suite";
    b->label.value = "workflows";
    b->lp[0] = &b->label;
    b->w.n_labels = 1;
    b->w.labels = b->lp;
    return &b->w;
}

static Agentz__V1__Workflow *create_wf(Agentz__V1__Workflow *w, const char *request_id, int *st)
{
    Agentz__V1__CreateWorkflowRequest req = AGENTZ__V1__CREATE_WORKFLOW_REQUEST__INIT;
    req.workflow = w;
    req.request_id = (char *)(request_id ? request_id : "");
    void *out = NULL;
    *st = call(SVC "CreateWorkflow", &req, &agentz__v1__workflow__descriptor, &out);
    return out;
}

static Agentz__V1__Workflow *get_wf(const char *id, int version, int *st)
{
    Agentz__V1__GetWorkflowRequest req = AGENTZ__V1__GET_WORKFLOW_REQUEST__INIT;
    req.id = (char *)id;
    req.version = version;
    void *out = NULL;
    *st = call(SVC "GetWorkflow", &req, &agentz__v1__workflow__descriptor, &out);
    return out;
}

static Agentz__V1__WorkflowRun *start(const char *wf_id, int version, const char *topic,
                                      const char *request_id, int *st)
{
    Agentz__V1__StartRunRequest req = AGENTZ__V1__START_RUN_REQUEST__INIT;
    Agentz__V1__StartRunRequest__InputsEntry e = AGENTZ__V1__START_RUN_REQUEST__INPUTS_ENTRY__INIT;
    Agentz__V1__StartRunRequest__InputsEntry *ep[1] = {&e};
    e.key = "topic";
    e.value = (char *)topic;
    req.workflow_id = (char *)wf_id;
    req.version = version;
    req.n_inputs = topic ? 1 : 0;
    req.inputs = ep;
    req.request_id = (char *)(request_id ? request_id : "");
    void *out = NULL;
    *st = call(SVC "StartRun", &req, &agentz__v1__workflow_run__descriptor, &out);
    return out;
}

static Agentz__V1__WorkflowRun *run_call(const char *method, const char *id, int *st)
{
    void *out = NULL;
    if (strcmp(method, "GetRun") == 0) {
        Agentz__V1__GetRunRequest req = AGENTZ__V1__GET_RUN_REQUEST__INIT;
        req.id = (char *)id;
        *st = call(SVC "GetRun", &req, &agentz__v1__workflow_run__descriptor, &out);
    } else if (strcmp(method, "CancelRun") == 0) {
        Agentz__V1__CancelRunRequest req = AGENTZ__V1__CANCEL_RUN_REQUEST__INIT;
        req.id = (char *)id;
        req.reason = "changed my mind";
        *st = call(SVC "CancelRun", &req, &agentz__v1__workflow_run__descriptor, &out);
    } else {
        Agentz__V1__ResumeRunRequest req = AGENTZ__V1__RESUME_RUN_REQUEST__INIT;
        req.id = (char *)id;
        *st = call(SVC "ResumeRun", &req, &agentz__v1__workflow_run__descriptor, &out);
    }
    return out;
}

/* ---------------------------------------------------------------- workflows */

static void test_create_and_get(void)
{
    wf_builder b;
    int st;
    Agentz__V1__Workflow *w = create_wf(build(&b, "blog"), NULL, &st);
    CU_ASSERT_EQUAL_FATAL(st, OK);
    CU_ASSERT_EQUAL(strlen(w->id), 36);
    CU_ASSERT_EQUAL(w->version, 1);
    CU_ASSERT_STRING_EQUAL(w->name, b.name);
    CU_ASSERT_EQUAL(w->n_steps, 3);
    CU_ASSERT_STRING_EQUAL(w->steps[2]->id, "review");
    CU_ASSERT_EQUAL(w->failure_policy, AGENTZ__V1__FAILURE_POLICY__FAILURE_POLICY_FAIL_FAST);
    CU_ASSERT_STRING_NOT_EQUAL(w->etag, "");
    CU_ASSERT_PTR_NOT_NULL(w->create_time);
    CU_ASSERT_STRING_EQUAL(w->workspace_id, "00000000-0000-0000-0000-000000000001");
    Agentz__V1__Workflow *g = get_wf(w->id, 0, &st);
    CU_ASSERT_EQUAL_FATAL(st, OK);
    CU_ASSERT_STRING_EQUAL(g->name, b.name);
    CU_ASSERT_EQUAL(g->n_inputs, 2);
    CU_ASSERT_STRING_EQUAL(g->etag, w->etag);
    free_msg(g);
    free_msg(get_wf(w->id, 2, &st));
    EXPECT_STATUS(st, NOT_FOUND, "has no version 2");
    free_msg(get_wf(NOPE, 0, &st));
    EXPECT_STATUS(st, NOT_FOUND, "not found");
    free_msg(get_wf("", 0, &st));
    EXPECT_STATUS(st, INVALID, "id is required");
    free_msg(get_wf(w->id, -1, &st));
    EXPECT_STATUS(st, INVALID, "version");
    /* Names are unique per workspace. */
    wf_builder b2;
    Agentz__V1__Workflow *dup = build(&b2, "x");
    dup->name = b.name;
    free_msg(create_wf(dup, NULL, &st));
    EXPECT_STATUS(st, EXISTS, "workflow.name");
    free_msg(w);
}

static void test_validation(void)
{
    int st;
    wf_builder b;
    Agentz__V1__CreateWorkflowRequest empty = AGENTZ__V1__CREATE_WORKFLOW_REQUEST__INIT;
    CU_ASSERT_EQUAL(call(SVC "CreateWorkflow", &empty, &agentz__v1__workflow__descriptor, NULL), INVALID);

    Agentz__V1__Workflow *w = build(&b, "v");
    w->name = "";
    free_msg(create_wf(w, NULL, &st));
    EXPECT_STATUS(st, INVALID, "workflow.name is required");

    w = build(&b, "v");
    w->n_steps = 0;
    free_msg(create_wf(w, NULL, &st));
    EXPECT_STATUS(st, INVALID, "workflow.steps: at least one step is required");

    w = build(&b, "v");
    b.steps[1].agent_id = NOPE;
    free_msg(create_wf(w, NULL, &st));
    EXPECT_STATUS(st, INVALID, "workflow.steps[1] (\"write\").agent_id: agent " NOPE " not found");

    w = build(&b, "v");
    b.steps[2].agent_id = agent_off;
    free_msg(create_wf(w, NULL, &st));
    EXPECT_STATUS(st, INVALID, "is disabled");

    w = build(&b, "v");
    b.deps[1][0] = "research";
    b.steps[1].n_depends_on = 1;
    free_msg(create_wf(w, NULL, &st));
    EXPECT_STATUS(st, INVALID, "use process PARALLEL for depends_on");

    w = build(&b, "v");
    w->process = AGENTZ__V1__PROCESS__PROCESS_PARALLEL;
    b.deps[2][0] = "draft";
    b.steps[2].n_depends_on = 1;
    free_msg(create_wf(w, NULL, &st));
    EXPECT_STATUS(st, INVALID, "workflow.steps[2] (\"review\").depends_on[0]: unknown step \"draft\"");

    w = build(&b, "v");
    w->process = AGENTZ__V1__PROCESS__PROCESS_PARALLEL;
    b.deps[0][0] = "review";
    b.steps[0].n_depends_on = 1;
    b.deps[2][0] = "research";
    b.steps[2].n_depends_on = 1;
    free_msg(create_wf(w, NULL, &st));
    EXPECT_STATUS(st, INVALID, "dependency cycle research -> review -> research");

    w = build(&b, "v");
    b.steps[0].description = "About {subject}";
    free_msg(create_wf(w, NULL, &st));
    EXPECT_STATUS(st, INVALID,
                  "workflow.steps[0] (\"research\").description: placeholder {subject} is not declared in inputs");

    w = build(&b, "v");
    w->n_inputs = 1;
    free_msg(create_wf(w, NULL, &st));
    EXPECT_STATUS(st, INVALID, "placeholder {audience} is not declared in inputs");

    /* The agents' goal uses {topic}: a workflow without that input cannot use them. */
    w = build(&b, "v");
    w->n_inputs = 0;
    for (int i = 0; i < 3; i++) b.steps[i].description = b.steps[i].expected_output = "plain";
    free_msg(create_wf(w, NULL, &st));
    EXPECT_STATUS(st, INVALID, "goal: placeholder {topic} is not declared in inputs");

    w = build(&b, "v");
    b.inputs[1].name = "bad-name";
    free_msg(create_wf(w, NULL, &st));
    EXPECT_STATUS(st, INVALID, "workflow.inputs[1].name");

    w = build(&b, "v");
    w->process = AGENTZ__V1__PROCESS__PROCESS_HIERARCHICAL;
    free_msg(create_wf(w, NULL, &st));
    EXPECT_STATUS(st, INVALID, "workflow.manager_agent_id is required");

    w = build(&b, "v");
    b.ctx[0][0] = "review";
    b.steps[0].n_context_from = 1;
    free_msg(create_wf(w, NULL, &st));
    EXPECT_STATUS(st, INVALID, "context_from must name earlier steps");

    w = build(&b, "v");
    b.steps[1].id = "Bad Id";
    free_msg(create_wf(w, NULL, &st));
    EXPECT_STATUS(st, INVALID, "workflow.steps[1]");

    w = build(&b, "v");
    char *urls[] = {"ftp://x"};
    w->n_webhook_urls = 1;
    w->webhook_urls = urls;
    free_msg(create_wf(w, NULL, &st));
    EXPECT_STATUS(st, INVALID, "workflow.webhook_urls[0]");
}

static void test_idempotent_create(void)
{
    char rid[64];
    snprintf(rid, sizeof rid, "wf-%s", az_itest_unique());
    wf_builder b;
    int st;
    Agentz__V1__Workflow *w = build(&b, "idem");
    Agentz__V1__Workflow *first = create_wf(w, rid, &st);
    CU_ASSERT_EQUAL_FATAL(st, OK);
    Agentz__V1__Workflow *second = create_wf(w, rid, &st);
    CU_ASSERT_EQUAL_FATAL(st, OK);
    CU_ASSERT_STRING_EQUAL(first->id, second->id);
    w->description = "something else";
    free_msg(create_wf(w, rid, &st));
    EXPECT_STATUS(st, EXISTS, "request_id");
    free_msg(first);
    free_msg(second);
}

static Agentz__V1__Workflow *update(Agentz__V1__Workflow *patch, char **paths, size_t n, int *st)
{
    Agentz__V1__UpdateWorkflowRequest req = AGENTZ__V1__UPDATE_WORKFLOW_REQUEST__INIT;
    Google__Protobuf__FieldMask mask = GOOGLE__PROTOBUF__FIELD_MASK__INIT;
    mask.n_paths = n;
    mask.paths = paths;
    req.workflow = patch;
    req.update_mask = n ? &mask : NULL;
    void *out = NULL;
    *st = call(SVC "UpdateWorkflow", &req, &agentz__v1__workflow__descriptor, &out);
    return out;
}

static void test_versions(void)
{
    wf_builder b;
    int st;
    Agentz__V1__Workflow *v1 = create_wf(build(&b, "ver"), NULL, &st);
    CU_ASSERT_EQUAL_FATAL(st, OK);
    /* v2: another description and a fourth step. */
    wf_builder p;
    Agentz__V1__Workflow *patch = build(&p, "ignored");
    patch->id = v1->id;
    patch->etag = v1->etag;
    patch->description = "Now with an extra step";
    patch->n_steps = 4;
    char *paths[] = {"description", "steps"};
    Agentz__V1__Workflow *v2 = update(patch, paths, 2, &st);
    CU_ASSERT_EQUAL_FATAL(st, OK);
    CU_ASSERT_EQUAL(v2->version, 2);
    CU_ASSERT_EQUAL(v2->n_steps, 4);
    CU_ASSERT_STRING_EQUAL(v2->name, b.name); /* not in the mask */
    CU_ASSERT_STRING_NOT_EQUAL(v2->etag, v1->etag);
    /* The stale etag is refused. */
    free_msg(update(patch, paths, 2, &st));
    EXPECT_STATUS(st, ABORTED, "etag");
    /* v1 is still there, unchanged. */
    Agentz__V1__Workflow *old = get_wf(v1->id, 1, &st);
    CU_ASSERT_EQUAL_FATAL(st, OK);
    CU_ASSERT_EQUAL(old->version, 1);
    CU_ASSERT_EQUAL(old->n_steps, 3);
    CU_ASSERT_STRING_EQUAL(old->description, "A blog pipeline");
    Agentz__V1__Workflow *latest = get_wf(v1->id, 0, &st);
    CU_ASSERT_EQUAL_FATAL(st, OK);
    CU_ASSERT_EQUAL(latest->version, 2);
    /* An invalid merge is refused, and so are output-only and unknown paths. */
    patch->etag = "";
    patch->n_steps = 0;
    char *spath[] = {"steps"};
    free_msg(update(patch, spath, 1, &st));
    EXPECT_STATUS(st, INVALID, "workflow.steps");
    char *vpath[] = {"version"};
    free_msg(update(patch, vpath, 1, &st));
    EXPECT_STATUS(st, INVALID, "output only");
    patch->etag = "W/bogus";
    free_msg(update(patch, spath, 1, &st));
    EXPECT_STATUS(st, INVALID, "workflow.etag");
    patch->etag = "";
    patch->id = NOPE;
    char *dpath[] = {"description"};
    free_msg(update(patch, dpath, 1, &st));
    EXPECT_STATUS(st, NOT_FOUND, NULL);
    /* ListWorkflowVersions: newest first, paginated. */
    Agentz__V1__ListWorkflowVersionsRequest lr = AGENTZ__V1__LIST_WORKFLOW_VERSIONS_REQUEST__INIT;
    lr.id = v1->id;
    lr.page_size = 1;
    Agentz__V1__ListWorkflowVersionsResponse *page = NULL;
    CU_ASSERT_EQUAL_FATAL(call(SVC "ListWorkflowVersions", &lr,
                               &agentz__v1__list_workflow_versions_response__descriptor, (void **)&page),
                          OK);
    CU_ASSERT_EQUAL(page->n_workflows, 1);
    CU_ASSERT_EQUAL(page->workflows[0]->version, 2);
    CU_ASSERT_STRING_NOT_EQUAL(page->next_page_token, "");
    lr.page_token = page->next_page_token;
    Agentz__V1__ListWorkflowVersionsResponse *page2 = NULL;
    CU_ASSERT_EQUAL_FATAL(call(SVC "ListWorkflowVersions", &lr,
                               &agentz__v1__list_workflow_versions_response__descriptor, (void **)&page2),
                          OK);
    CU_ASSERT_EQUAL(page2->n_workflows, 1);
    CU_ASSERT_EQUAL(page2->workflows[0]->version, 1);
    CU_ASSERT_STRING_EQUAL(page2->next_page_token, "");
    lr.id = NOPE;
    lr.page_token = "";
    CU_ASSERT_EQUAL(call(SVC "ListWorkflowVersions", &lr,
                         &agentz__v1__list_workflow_versions_response__descriptor, NULL),
                    NOT_FOUND);
    /* Runs pin a version: v1 still runs with its three steps. */
    Agentz__V1__WorkflowRun *r1 = start(v1->id, 1, "versions", NULL, &st);
    CU_ASSERT_EQUAL_FATAL(st, OK);
    CU_ASSERT_EQUAL(r1->workflow_version, 1);
    CU_ASSERT_EQUAL(r1->n_steps, 3);
    Agentz__V1__WorkflowRun *r2 = start(v1->id, 0, "versions", NULL, &st);
    CU_ASSERT_EQUAL_FATAL(st, OK);
    CU_ASSERT_EQUAL(r2->workflow_version, 2);
    CU_ASSERT_EQUAL(r2->n_steps, 4);
    free_msg(start(v1->id, 3, "versions", NULL, &st));
    EXPECT_STATUS(st, NOT_FOUND, "version");
    free_msg(run_call("CancelRun", r1->id, &st));
    free_msg(run_call("CancelRun", r2->id, &st));
    free_msg(r1);
    free_msg(r2);
    free_msg(page);
    free_msg(page2);
    free_msg(v1);
    free_msg(v2);
    free_msg(old);
    free_msg(latest);
}

static void test_list_pagination(void)
{
    const char *tag = az_itest_unique();
    enum { N = 5 };
    char ids[N][40];
    for (int i = 0; i < N; i++) {
        wf_builder b;
        Agentz__V1__Workflow *w = build(&b, "page");
        b.label.key = "page";
        b.label.value = (char *)tag;
        int st;
        Agentz__V1__Workflow *got = create_wf(w, NULL, &st);
        CU_ASSERT_EQUAL_FATAL(st, OK);
        snprintf(ids[i], 40, "%s", got->id);
        free_msg(got);
    }
    char selector[96], token[512] = "";
    snprintf(selector, sizeof selector, "page=%s", tag);
    int seen = 0, pages = 0;
    do {
        Agentz__V1__ListWorkflowsRequest req = AGENTZ__V1__LIST_WORKFLOWS_REQUEST__INIT;
        req.page_size = 2;
        req.label_selector = selector;
        req.page_token = token;
        Agentz__V1__ListWorkflowsResponse *r = NULL;
        CU_ASSERT_EQUAL_FATAL(call(SVC "ListWorkflows", &req, &agentz__v1__list_workflows_response__descriptor,
                                   (void **)&r),
                              OK);
        for (size_t i = 0; i < r->n_workflows; i++, seen++)
            CU_ASSERT_STRING_EQUAL(r->workflows[i]->id, ids[N - 1 - seen]); /* newest first */
        snprintf(token, sizeof token, "%s", r->next_page_token);
        pages++;
        free_msg(r);
    } while (token[0] && pages < 10);
    CU_ASSERT_EQUAL(pages, 3);
    CU_ASSERT_EQUAL(seen, N);
    Agentz__V1__ListWorkflowsRequest req = AGENTZ__V1__LIST_WORKFLOWS_REQUEST__INIT;
    req.page_size = 2;
    req.label_selector = selector;
    Agentz__V1__ListWorkflowsResponse *r = NULL;
    CU_ASSERT_EQUAL_FATAL(call(SVC "ListWorkflows", &req, &agentz__v1__list_workflows_response__descriptor,
                               (void **)&r),
                          OK);
    req.label_selector = "page=other";
    req.page_token = r->next_page_token;
    CU_ASSERT_EQUAL(call(SVC "ListWorkflows", &req, &agentz__v1__list_workflows_response__descriptor, NULL),
                    INVALID);
    req.page_token = "!!";
    CU_ASSERT_EQUAL(call(SVC "ListWorkflows", &req, &agentz__v1__list_workflows_response__descriptor, NULL),
                    INVALID);
    req.page_token = "";
    req.page_size = -1;
    CU_ASSERT_EQUAL(call(SVC "ListWorkflows", &req, &agentz__v1__list_workflows_response__descriptor, NULL),
                    INVALID);
    free_msg(r);

    /* Labels replaced by UpdateWorkflow: the selectors follow (workflow_labels, kept by a
     * trigger), two pairs must both match, and a value may hold "=". */
    char moved[96], sel2[200];
    snprintf(moved, sizeof moved, "%s=x", tag);
    wf_builder p;
    Agentz__V1__Workflow *patch = build(&p, "ignored");
    patch->id = ids[N - 1];
    Agentz__V1__Workflow__LabelsEntry le[2] = {AGENTZ__V1__WORKFLOW__LABELS_ENTRY__INIT,
                                               AGENTZ__V1__WORKFLOW__LABELS_ENTRY__INIT};
    Agentz__V1__Workflow__LabelsEntry *lps[2] = {&le[0], &le[1]};
    le[0].key = "page";
    le[0].value = moved;
    le[1].key = "kind";
    le[1].value = "moved";
    patch->n_labels = 2;
    patch->labels = lps;
    char *lpath[] = {"labels"};
    int st;
    free_msg(update(patch, lpath, 1, &st));
    CU_ASSERT_EQUAL_FATAL(st, OK);
    snprintf(sel2, sizeof sel2, "page=%s,kind=moved", moved);
    const char *const sels[] = {selector, sel2, "kind=moved,page=nothing"};
    const size_t want[] = {N - 1, 1, 0};
    for (int k = 0; k < 3; k++) {
        Agentz__V1__ListWorkflowsRequest lr = AGENTZ__V1__LIST_WORKFLOWS_REQUEST__INIT;
        lr.page_size = 100;
        lr.label_selector = (char *)sels[k];
        Agentz__V1__ListWorkflowsResponse *lw = NULL;
        CU_ASSERT_EQUAL_FATAL(call(SVC "ListWorkflows", &lr, &agentz__v1__list_workflows_response__descriptor,
                                   (void **)&lw),
                              OK);
        CU_ASSERT_EQUAL(lw->n_workflows, want[k]);
        if (k == 1 && lw->n_workflows == 1) CU_ASSERT_STRING_EQUAL(lw->workflows[0]->id, ids[N - 1]);
        free_msg(lw);
    }
}

/* ---------------------------------------------------------------- runs */

static void test_start_and_get_run(void)
{
    wf_builder b;
    int st;
    Agentz__V1__Workflow *w = create_wf(build(&b, "run"), NULL, &st);
    CU_ASSERT_EQUAL_FATAL(st, OK);
    free_msg(start(w->id, 0, NULL, NULL, &st));
    EXPECT_STATUS(st, INVALID, "inputs: missing required input \"topic\"");
    Agentz__V1__StartRunRequest req = AGENTZ__V1__START_RUN_REQUEST__INIT;
    Agentz__V1__StartRunRequest__InputsEntry e1 = AGENTZ__V1__START_RUN_REQUEST__INPUTS_ENTRY__INIT,
                                             e2 = AGENTZ__V1__START_RUN_REQUEST__INPUTS_ENTRY__INIT;
    Agentz__V1__StartRunRequest__InputsEntry *ep[2] = {&e1, &e2};
    e1.key = "topic";
    e1.value = "x";
    e2.key = "colour";
    e2.value = "red";
    req.workflow_id = w->id;
    req.n_inputs = 2;
    req.inputs = ep;
    CU_ASSERT_EQUAL(call(SVC "StartRun", &req, &agentz__v1__workflow_run__descriptor, NULL), INVALID);
    CU_ASSERT_PTR_NOT_NULL(strstr(last_msg, "inputs: unknown input \"colour\""));
    free_msg(start(NOPE, 0, "x", NULL, &st));
    EXPECT_STATUS(st, NOT_FOUND, NULL);

    Agentz__V1__WorkflowRun *run = start(w->id, 0, "agents", NULL, &st);
    CU_ASSERT_EQUAL_FATAL(st, OK);
    CU_ASSERT_EQUAL(strlen(run->id), 36);
    CU_ASSERT_STRING_EQUAL(run->workflow_id, w->id);
    CU_ASSERT_EQUAL(run->workflow_version, 1);
    CU_ASSERT_EQUAL(run->status, R_RUNNING);
    CU_ASSERT_EQUAL(run->n_inputs, 2); /* the default of audience applied */
    CU_ASSERT_EQUAL_FATAL(run->n_steps, 3);
    CU_ASSERT_STRING_EQUAL(run->steps[0]->step_id, "research");
    CU_ASSERT_EQUAL(run->steps[0]->status, T_QUEUED);
    CU_ASSERT_EQUAL(run->steps[1]->status, T_PENDING);
    CU_ASSERT_EQUAL(run->steps[2]->status, T_PENDING);
    for (int i = 0; i < 3; i++) CU_ASSERT_EQUAL(strlen(run->steps[i]->task_id), 36);
    CU_ASSERT_PTR_NOT_NULL(run->usage);
    CU_ASSERT_PTR_NOT_NULL(run->create_time);
    CU_ASSERT_PTR_NULL(run->end_time);

    Agentz__V1__WorkflowRun *again = run_call("GetRun", run->id, &st);
    CU_ASSERT_EQUAL_FATAL(st, OK);
    CU_ASSERT_EQUAL(again->n_steps, 3);
    CU_ASSERT_STRING_EQUAL(again->steps[1]->task_id, run->steps[1]->task_id);
    free_msg(run_call("GetRun", NOPE, &st));
    EXPECT_STATUS(st, NOT_FOUND, NULL);
    free_msg(run_call("GetRun", "", &st));
    EXPECT_STATUS(st, INVALID, "id is required");

    /* The steps are real tasks: TaskService sees the interpolated description. */
    Agentz__V1__GetTaskRequest tr = AGENTZ__V1__GET_TASK_REQUEST__INIT;
    tr.id = run->steps[0]->task_id;
    Agentz__V1__Task *task = NULL;
    int ts = call("/agentz.v1.TaskService/GetTask", &tr, &agentz__v1__task__descriptor, (void **)&task);
    if (ts == OK) {
        CU_ASSERT_STRING_EQUAL(task->description, "Work on agents for engineers.");
        CU_ASSERT_STRING_EQUAL(task->run_id, run->id);
        CU_ASSERT_STRING_EQUAL(task->step_id, "research");
    }
    free_msg(task);
    free_msg(run_call("CancelRun", run->id, &st));
    free_msg(run);
    free_msg(again);
    free_msg(w);
}

static void test_idempotent_start(void)
{
    wf_builder b;
    int st;
    Agentz__V1__Workflow *w = create_wf(build(&b, "idemrun"), NULL, &st);
    CU_ASSERT_EQUAL_FATAL(st, OK);
    char rid[64];
    snprintf(rid, sizeof rid, "run-%s", az_itest_unique());
    Agentz__V1__WorkflowRun *a = start(w->id, 0, "same", rid, &st);
    CU_ASSERT_EQUAL_FATAL(st, OK);
    Agentz__V1__WorkflowRun *b2 = start(w->id, 0, "same", rid, &st);
    CU_ASSERT_EQUAL_FATAL(st, OK);
    CU_ASSERT_STRING_EQUAL(a->id, b2->id);
    CU_ASSERT_EQUAL(b2->n_steps, 3);
    free_msg(start(w->id, 0, "different", rid, &st));
    EXPECT_STATUS(st, EXISTS, "request_id");
    free_msg(run_call("CancelRun", a->id, &st));
    free_msg(a);
    free_msg(b2);
    free_msg(w);
}

static void test_processes(void)
{
    int st;
    /* Parallel: every step without dependencies is queued at once. */
    wf_builder b;
    Agentz__V1__Workflow *w = build(&b, "par");
    w->process = AGENTZ__V1__PROCESS__PROCESS_PARALLEL;
    b.deps[2][0] = "research";
    b.deps[2][1] = "write";
    b.steps[2].n_depends_on = 2;
    Agentz__V1__Workflow *pw = create_wf(w, NULL, &st);
    CU_ASSERT_EQUAL_FATAL(st, OK);
    Agentz__V1__WorkflowRun *r = start(pw->id, 0, "p", NULL, &st);
    CU_ASSERT_EQUAL_FATAL(st, OK);
    CU_ASSERT_EQUAL(r->steps[0]->status, T_QUEUED);
    CU_ASSERT_EQUAL(r->steps[1]->status, T_QUEUED);
    CU_ASSERT_EQUAL(r->steps[2]->status, T_PENDING);
    free_msg(run_call("CancelRun", r->id, &st));
    free_msg(r);
    free_msg(pw);
    /* Hierarchical: the manager works through the steps in order. */
    w = build(&b, "hier");
    w->process = AGENTZ__V1__PROCESS__PROCESS_HIERARCHICAL;
    w->manager_agent_id = agent_mgr;
    b.steps[1].agent_id = "";
    Agentz__V1__Workflow *hw = create_wf(w, NULL, &st);
    CU_ASSERT_EQUAL_FATAL(st, OK);
    CU_ASSERT_STRING_EQUAL(hw->manager_agent_id, agent_mgr);
    r = start(hw->id, 0, "h", NULL, &st);
    CU_ASSERT_EQUAL_FATAL(st, OK);
    CU_ASSERT_EQUAL(r->n_steps, 3);
    CU_ASSERT_EQUAL(r->steps[0]->status, T_QUEUED);
    CU_ASSERT_EQUAL(r->steps[1]->status, T_PENDING);
    Agentz__V1__GetTaskRequest tr = AGENTZ__V1__GET_TASK_REQUEST__INIT;
    tr.id = r->steps[0]->task_id;
    Agentz__V1__Task *task = NULL;
    if (call("/agentz.v1.TaskService/GetTask", &tr, &agentz__v1__task__descriptor, (void **)&task) == OK)
        CU_ASSERT_STRING_EQUAL(task->agent_id, agent_mgr);
    free_msg(task);
    free_msg(run_call("CancelRun", r->id, &st));
    free_msg(r);
    free_msg(hw);
}

static void test_cancel_resume_delete(void)
{
    wf_builder b;
    int st;
    Agentz__V1__Workflow *w = create_wf(build(&b, "cancel"), NULL, &st);
    CU_ASSERT_EQUAL_FATAL(st, OK);
    Agentz__V1__WorkflowRun *run = start(w->id, 0, "c", NULL, &st);
    CU_ASSERT_EQUAL_FATAL(st, OK);
    /* A running run blocks deletion. */
    Agentz__V1__DeleteWorkflowRequest del = AGENTZ__V1__DELETE_WORKFLOW_REQUEST__INIT;
    del.id = w->id;
    EXPECT_STATUS(call(SVC "DeleteWorkflow", &del, &google__protobuf__empty__descriptor, NULL),
                  PRECONDITION, "unfinished runs");
    /* Resuming a running run is refused. */
    free_msg(run_call("ResumeRun", run->id, &st));
    EXPECT_STATUS(st, PRECONDITION, "running");

    Agentz__V1__WorkflowRun *c = run_call("CancelRun", run->id, &st);
    CU_ASSERT_EQUAL_FATAL(st, OK);
    CU_ASSERT_EQUAL(c->status, R_CANCELLED);
    for (size_t i = 0; i < c->n_steps; i++) CU_ASSERT_EQUAL(c->steps[i]->status, T_CANCELLED);
    CU_ASSERT_PTR_NOT_NULL_FATAL(c->error);
    CU_ASSERT_STRING_EQUAL(c->error->message, "changed my mind");
    CU_ASSERT_PTR_NOT_NULL(c->end_time);
    /* Cancelling again is idempotent. */
    Agentz__V1__WorkflowRun *c2 = run_call("CancelRun", run->id, &st);
    CU_ASSERT_EQUAL(st, OK);
    free_msg(c2);

    Agentz__V1__WorkflowRun *r = run_call("ResumeRun", run->id, &st);
    CU_ASSERT_EQUAL_FATAL(st, OK);
    CU_ASSERT_EQUAL(r->status, R_RUNNING);
    CU_ASSERT_EQUAL(r->steps[0]->status, T_QUEUED);
    CU_ASSERT_EQUAL(r->steps[1]->status, T_PENDING);
    CU_ASSERT_EQUAL(r->steps[2]->status, T_PENDING);
    CU_ASSERT_PTR_NULL(r->error);
    CU_ASSERT_PTR_NULL(r->end_time);
    CU_ASSERT_STRING_EQUAL(r->steps[0]->task_id, run->steps[0]->task_id); /* same tasks */

    /* ListRuns: by workflow, by status. */
    Agentz__V1__ListRunsRequest lr = AGENTZ__V1__LIST_RUNS_REQUEST__INIT;
    lr.workflow_id = w->id;
    Agentz__V1__ListRunsResponse *lst = NULL;
    CU_ASSERT_EQUAL_FATAL(call(SVC "ListRuns", &lr, &agentz__v1__list_runs_response__descriptor, (void **)&lst),
                          OK);
    CU_ASSERT_EQUAL(lst->n_runs, 1);
    CU_ASSERT_STRING_EQUAL(lst->runs[0]->id, run->id);
    free_msg(lst);
    lr.status = AGENTZ__V1__RUN_STATUS__RUN_STATUS_SUCCEEDED;
    lst = NULL;
    CU_ASSERT_EQUAL_FATAL(call(SVC "ListRuns", &lr, &agentz__v1__list_runs_response__descriptor, (void **)&lst),
                          OK);
    CU_ASSERT_EQUAL(lst->n_runs, 0);
    free_msg(lst);

    /* Cancel, then delete: the run stays readable but cannot resume. */
    free_msg(run_call("CancelRun", run->id, &st));
    CU_ASSERT_EQUAL(st, OK);
    del.etag = "999";
    EXPECT_STATUS(call(SVC "DeleteWorkflow", &del, &google__protobuf__empty__descriptor, NULL), ABORTED, NULL);
    del.etag = w->etag;
    EXPECT_STATUS(call(SVC "DeleteWorkflow", &del, &google__protobuf__empty__descriptor, NULL), OK, NULL);
    free_msg(get_wf(w->id, 0, &st));
    EXPECT_STATUS(st, NOT_FOUND, NULL);
    free_msg(get_wf(w->id, 1, &st));
    EXPECT_STATUS(st, NOT_FOUND, NULL);
    Agentz__V1__WorkflowRun *after = run_call("GetRun", run->id, &st);
    CU_ASSERT_EQUAL_FATAL(st, OK);
    CU_ASSERT_EQUAL(after->status, R_CANCELLED);
    CU_ASSERT_EQUAL(after->n_steps, 3);
    free_msg(run_call("ResumeRun", run->id, &st));
    EXPECT_STATUS(st, PRECONDITION, "deleted");
    del.etag = "";
    EXPECT_STATUS(call(SVC "DeleteWorkflow", &del, &google__protobuf__empty__descriptor, NULL), NOT_FOUND, NULL);
    free_msg(after);
    free_msg(run);
    free_msg(c);
    free_msg(r);
    free_msg(w);
}

static void test_list_runs(void)
{
    wf_builder b;
    int st;
    Agentz__V1__Workflow *w = create_wf(build(&b, "lr"), NULL, &st);
    CU_ASSERT_EQUAL_FATAL(st, OK);
    char ids[3][40];
    for (int i = 0; i < 3; i++) {
        Agentz__V1__WorkflowRun *r = start(w->id, 0, "t", NULL, &st);
        CU_ASSERT_EQUAL_FATAL(st, OK);
        snprintf(ids[i], 40, "%s", r->id);
        free_msg(r);
    }
    free_msg(run_call("CancelRun", ids[1], &st));
    Agentz__V1__ListRunsRequest lr = AGENTZ__V1__LIST_RUNS_REQUEST__INIT;
    lr.workflow_id = w->id;
    lr.page_size = 2;
    Agentz__V1__ListRunsResponse *p1 = NULL, *p2 = NULL;
    CU_ASSERT_EQUAL_FATAL(call(SVC "ListRuns", &lr, &agentz__v1__list_runs_response__descriptor, (void **)&p1), OK);
    CU_ASSERT_EQUAL_FATAL(p1->n_runs, 2);
    CU_ASSERT_STRING_EQUAL(p1->runs[0]->id, ids[2]);
    CU_ASSERT_STRING_EQUAL(p1->runs[1]->id, ids[1]);
    lr.page_token = p1->next_page_token;
    CU_ASSERT_EQUAL_FATAL(call(SVC "ListRuns", &lr, &agentz__v1__list_runs_response__descriptor, (void **)&p2), OK);
    CU_ASSERT_EQUAL_FATAL(p2->n_runs, 1);
    CU_ASSERT_STRING_EQUAL(p2->runs[0]->id, ids[0]);
    CU_ASSERT_STRING_EQUAL(p2->next_page_token, "");
    /* The token belongs to its filters. */
    lr.status = AGENTZ__V1__RUN_STATUS__RUN_STATUS_RUNNING;
    CU_ASSERT_EQUAL(call(SVC "ListRuns", &lr, &agentz__v1__list_runs_response__descriptor, NULL), INVALID);
    lr.page_token = "";
    Agentz__V1__ListRunsResponse *running = NULL;
    CU_ASSERT_EQUAL_FATAL(call(SVC "ListRuns", &lr, &agentz__v1__list_runs_response__descriptor, (void **)&running), OK);
    CU_ASSERT_EQUAL(running->n_runs, 2);
    lr.workflow_id = "nope";
    CU_ASSERT_EQUAL(call(SVC "ListRuns", &lr, &agentz__v1__list_runs_response__descriptor, NULL), INVALID);
    lr.workflow_id = "";
    lr.status = 42;
    CU_ASSERT_EQUAL(call(SVC "ListRuns", &lr, &agentz__v1__list_runs_response__descriptor, NULL), INVALID);

    /* Analytics over this workflow's three runs. */
    Agentz__V1__GetWorkflowAnalyticsRequest ar = AGENTZ__V1__GET_WORKFLOW_ANALYTICS_REQUEST__INIT;
    ar.workflow_id = w->id;
    Agentz__V1__WorkflowAnalytics *an = NULL;
    CU_ASSERT_EQUAL_FATAL(call(SVC "GetWorkflowAnalytics", &ar, &agentz__v1__workflow_analytics__descriptor,
                               (void **)&an),
                          OK);
    CU_ASSERT_STRING_EQUAL(an->workflow_id, w->id);
    CU_ASSERT_EQUAL(an->runs_total, 3);
    CU_ASSERT_EQUAL(an->runs_running, 2);
    CU_ASSERT_EQUAL(an->runs_cancelled, 1);
    CU_ASSERT_DOUBLE_EQUAL(an->success_rate, 0.0, 1e-9);
    CU_ASSERT_PTR_NOT_NULL(an->usage);
    CU_ASSERT_PTR_NOT_NULL(an->start_time);
    CU_ASSERT_PTR_NOT_NULL(an->end_time);
    CU_ASSERT_EQUAL_FATAL(an->n_steps, 3);
    CU_ASSERT_STRING_EQUAL(an->steps[0]->step_id, "research");
    CU_ASSERT_STRING_EQUAL(an->steps[2]->step_id, "review");
    CU_ASSERT_PTR_NOT_NULL(an->max_duration); /* the cancelled run ended */
    Google__Protobuf__Timestamp s = GOOGLE__PROTOBUF__TIMESTAMP__INIT, e = GOOGLE__PROTOBUF__TIMESTAMP__INIT;
    s.seconds = 2000000000;
    e.seconds = 1000000000;
    ar.start_time = &s;
    ar.end_time = &e;
    CU_ASSERT_EQUAL(call(SVC "GetWorkflowAnalytics", &ar, &agentz__v1__workflow_analytics__descriptor, NULL),
                    INVALID);
    ar.workflow_id = NOPE;
    ar.start_time = ar.end_time = NULL;
    CU_ASSERT_EQUAL(call(SVC "GetWorkflowAnalytics", &ar, &agentz__v1__workflow_analytics__descriptor, NULL),
                    NOT_FOUND);
    for (int i = 0; i < 3; i++) free_msg(run_call("CancelRun", ids[i], &st));
    free_msg(an);
    free_msg(running);
    free_msg(p1);
    free_msg(p2);
    free_msg(w);
}

/* ---------------------------------------------------------------- templates */

static void test_templates(void)
{
    Agentz__V1__ListTemplatesRequest lt = AGENTZ__V1__LIST_TEMPLATES_REQUEST__INIT;
    lt.page_size = 2;
    Agentz__V1__ListTemplatesResponse *p1 = NULL, *p2 = NULL;
    CU_ASSERT_EQUAL_FATAL(call(SVC "ListTemplates", &lt, &agentz__v1__list_templates_response__descriptor,
                               (void **)&p1),
                          OK);
    CU_ASSERT_EQUAL_FATAL(p1->n_templates, 2);
    CU_ASSERT_STRING_EQUAL(p1->templates[0]->id, "research-write-review");
    CU_ASSERT_STRING_EQUAL(p1->templates[1]->id, "code-review");
    CU_ASSERT_TRUE(p1->templates[0]->builtin);
    lt.page_token = p1->next_page_token;
    CU_ASSERT_EQUAL_FATAL(call(SVC "ListTemplates", &lt, &agentz__v1__list_templates_response__descriptor,
                               (void **)&p2),
                          OK);
    CU_ASSERT_TRUE_FATAL(p2->n_templates >= 1);
    CU_ASSERT_STRING_EQUAL(p2->templates[0]->id, "support-triage");

    /* Instantiate with a name: agents get it as a prefix, steps get their ids. */
    char name[96], rid[64];
    snprintf(name, sizeof name, "crew-%s", az_itest_unique());
    snprintf(rid, sizeof rid, "inst-%s", az_itest_unique());
    Agentz__V1__InstantiateTemplateRequest ir = AGENTZ__V1__INSTANTIATE_TEMPLATE_REQUEST__INIT;
    ir.template_id = "code-review";
    ir.name = name;
    ir.request_id = rid;
    Agentz__V1__InstantiateTemplateResponse *inst = NULL, *again = NULL;
    CU_ASSERT_EQUAL_FATAL(call(SVC "InstantiateTemplate", &ir, &agentz__v1__instantiate_template_response__descriptor,
                               (void **)&inst),
                          OK);
    CU_ASSERT_STRING_EQUAL(inst->workflow->name, name);
    CU_ASSERT_EQUAL(inst->workflow->process, AGENTZ__V1__PROCESS__PROCESS_PARALLEL);
    CU_ASSERT_EQUAL_FATAL(inst->n_agents, 4);
    char want[160];
    snprintf(want, sizeof want, "%s-security-reviewer", name);
    CU_ASSERT_STRING_EQUAL(inst->agents[0]->name, want);
    CU_ASSERT_STRING_EQUAL(inst->workflow->steps[0]->agent_id, inst->agents[0]->id);
    CU_ASSERT_STRING_EQUAL(inst->workflow->steps[3]->agent_id, inst->agents[3]->id);
    /* Idempotent by request_id. */
    CU_ASSERT_EQUAL_FATAL(call(SVC "InstantiateTemplate", &ir, &agentz__v1__instantiate_template_response__descriptor,
                               (void **)&again),
                          OK);
    CU_ASSERT_STRING_EQUAL(again->workflow->id, inst->workflow->id);
    CU_ASSERT_EQUAL(again->n_agents, 4);
    /* Without a request_id the given name is taken now. */
    ir.request_id = "";
    EXPECT_STATUS(call(SVC "InstantiateTemplate", &ir, &agentz__v1__instantiate_template_response__descriptor, NULL),
                  EXISTS, "name");
    /* Without a name: the template's, made unique by a suffix. */
    ir.name = "";
    ir.template_id = "support-triage";
    Agentz__V1__InstantiateTemplateResponse *n1 = NULL, *n2 = NULL;
    CU_ASSERT_EQUAL_FATAL(call(SVC "InstantiateTemplate", &ir, &agentz__v1__instantiate_template_response__descriptor,
                               (void **)&n1),
                          OK);
    CU_ASSERT_EQUAL_FATAL(call(SVC "InstantiateTemplate", &ir, &agentz__v1__instantiate_template_response__descriptor,
                               (void **)&n2),
                          OK);
    CU_ASSERT_EQUAL(strncmp(n1->workflow->name, "support-triage", 14), 0);
    CU_ASSERT_STRING_NOT_EQUAL(n1->workflow->name, n2->workflow->name);
    CU_ASSERT_EQUAL(n1->workflow->process, AGENTZ__V1__PROCESS__PROCESS_HIERARCHICAL);
    CU_ASSERT_STRING_EQUAL(n1->workflow->manager_agent_id, n1->agents[0]->id);
    ir.template_id = "no-such-template";
    EXPECT_STATUS(call(SVC "InstantiateTemplate", &ir, &agentz__v1__instantiate_template_response__descriptor, NULL),
                  NOT_FOUND, NULL);
    ir.template_id = "";
    EXPECT_STATUS(call(SVC "InstantiateTemplate", &ir, &agentz__v1__instantiate_template_response__descriptor, NULL),
                  INVALID, "template_id");

    /* The instantiated workflow runs. */
    int st;
    Agentz__V1__StartRunRequest sr = AGENTZ__V1__START_RUN_REQUEST__INIT;
    Agentz__V1__StartRunRequest__InputsEntry e1 = AGENTZ__V1__START_RUN_REQUEST__INPUTS_ENTRY__INIT,
                                             e2 = AGENTZ__V1__START_RUN_REQUEST__INPUTS_ENTRY__INIT;
    Agentz__V1__StartRunRequest__InputsEntry *ep[2] = {&e1, &e2};
    e1.key = "code";
    e1.value = "int main(void) { return 0; }";
    e2.key = "language";
    e2.value = "C";
    sr.workflow_id = inst->workflow->id;
    sr.n_inputs = 2;
    sr.inputs = ep;
    Agentz__V1__WorkflowRun *run = NULL;
    CU_ASSERT_EQUAL_FATAL(call(SVC "StartRun", &sr, &agentz__v1__workflow_run__descriptor, (void **)&run), OK);
    CU_ASSERT_EQUAL(run->n_steps, 4);
    CU_ASSERT_EQUAL(run->steps[0]->status, T_QUEUED);
    CU_ASSERT_EQUAL(run->steps[3]->status, T_PENDING);
    free_msg(run_call("CancelRun", run->id, &st));

    /* SaveAsTemplate, then it lists after the built-ins and instantiates. */
    char tname[96];
    snprintf(tname, sizeof tname, "saved-%s", az_itest_unique());
    Agentz__V1__SaveAsTemplateRequest sv = AGENTZ__V1__SAVE_AS_TEMPLATE_REQUEST__INIT;
    sv.workflow_id = inst->workflow->id;
    sv.name = tname;
    sv.description = "Our code review crew";
    Agentz__V1__Template *saved = NULL;
    CU_ASSERT_EQUAL_FATAL(call(SVC "SaveAsTemplate", &sv, &agentz__v1__template__descriptor, (void **)&saved), OK);
    CU_ASSERT_EQUAL(strlen(saved->id), 36);
    CU_ASSERT_FALSE(saved->builtin);
    CU_ASSERT_STRING_EQUAL(saved->name, tname);
    CU_ASSERT_EQUAL_FATAL(saved->n_agents, 4);
    CU_ASSERT_STRING_EQUAL(saved->workflow->steps[0]->agent_id, saved->agents[0]->name);
    CU_ASSERT_STRING_EQUAL(saved->agents[0]->id, "");
    EXPECT_STATUS(call(SVC "SaveAsTemplate", &sv, &agentz__v1__template__descriptor, NULL), EXISTS, "name");
    sv.name = "";
    EXPECT_STATUS(call(SVC "SaveAsTemplate", &sv, &agentz__v1__template__descriptor, NULL), INVALID, "name");
    sv.name = "x";
    sv.workflow_id = NOPE;
    EXPECT_STATUS(call(SVC "SaveAsTemplate", &sv, &agentz__v1__template__descriptor, NULL), NOT_FOUND, NULL);

    Agentz__V1__ListTemplatesRequest all = AGENTZ__V1__LIST_TEMPLATES_REQUEST__INIT;
    all.page_size = 1000;
    Agentz__V1__ListTemplatesResponse *everything = NULL;
    CU_ASSERT_EQUAL_FATAL(call(SVC "ListTemplates", &all, &agentz__v1__list_templates_response__descriptor,
                               (void **)&everything),
                          OK);
    CU_ASSERT_TRUE_FATAL(everything->n_templates >= 4);
    CU_ASSERT_STRING_EQUAL(everything->templates[3]->id, saved->id); /* newest saved first */

    char iname[96];
    snprintf(iname, sizeof iname, "fromsaved-%s", az_itest_unique());
    ir.template_id = saved->id;
    ir.name = iname;
    Agentz__V1__InstantiateTemplateResponse *fs = NULL;
    CU_ASSERT_EQUAL_FATAL(call(SVC "InstantiateTemplate", &ir, &agentz__v1__instantiate_template_response__descriptor,
                               (void **)&fs),
                          OK);
    CU_ASSERT_EQUAL(fs->n_agents, 4);
    CU_ASSERT_EQUAL(fs->workflow->n_steps, 4);

    free_msg(fs);
    free_msg(everything);
    free_msg(saved);
    free_msg(run);
    free_msg(n1);
    free_msg(n2);
    free_msg(inst);
    free_msg(again);
    free_msg(p1);
    free_msg(p2);
}


/* ---------------------------------------------------------------- what the engine will do */

/* Plays the execution engine against the server's own database: claims, completes and fails
 * tasks through the task service and folds them into the run with az_run_sync, as workers do. */
static az_pg *engine_pg;
static const az_ctx engine_ctx = {.workspace_id = AZ_DEFAULT_WORKSPACE, .principal = "",
                                  .request_id = "engine", .deadline_ms = -1};

static int engine_open(void)
{
    char dir[PATH_MAX], url[PATH_MAX + 128], msg[AZ_MSG_MAX];
    if (!realpath(srv.data_dir, dir)) return -1;
    snprintf(url, sizeof url, "postgresql:///agentz?host=%s/run&port=5432&user=agentz", dir);
    if (az_pg_new(url, 2, 5000, &engine_pg, msg) != AZ_OK) {
        fprintf(stderr, "cannot open the embedded database: %s\n", msg);
        return -1;
    }
    return 0;
}

/* Runs one attempt of task id to success (output text) or to a failure of type fail_type. */
static void engine_attempt(const char *id, const char *output, const char *fail_type)
{
    az_arena *a = az_arena_new(0);
    char msg[AZ_MSG_MAX], run_id[37];
    Agentz__V1__Task *t = NULL;
    az_err err = az_task_claim(engine_pg, &engine_ctx, id, "itest-worker", 0, a, &t, msg);
    if (err != AZ_OK) fprintf(stderr, "claim %s: %s\n", id, msg);
    CU_ASSERT_EQUAL_FATAL(err, AZ_OK);
    Agentz__V1__TokenUsage u = AGENTZ__V1__TOKEN_USAGE__INIT;
    u.prompt_tokens = 100;
    u.completion_tokens = 20;
    u.total_tokens = 120;
    u.cost_usd = 0.01;
    if (output) {
        Agentz__V1__TaskOutput o = AGENTZ__V1__TASK_OUTPUT__INIT;
        o.raw = (char *)output;
        az_task_ready ready = {.arena = a};
        err = az_task_complete(engine_pg, &engine_ctx, id, t->attempt, &o, &u, run_id, &ready, msg);
    } else {
        Agentz__V1__TaskError e = AGENTZ__V1__TASK_ERROR__INIT;
        e.type = (char *)fail_type;
        e.message = "the model refused";
        int64_t next = -1;
        err = az_task_fail(engine_pg, &engine_ctx, id, t->attempt, &e, &u, &next, run_id, msg);
        CU_ASSERT_EQUAL(next, 0);
    }
    if (err != AZ_OK) fprintf(stderr, "finish %s: %s\n", id, msg);
    CU_ASSERT_EQUAL_FATAL(err, AZ_OK);
    err = az_run_sync(engine_pg, &engine_ctx, run_id, msg);
    if (err != AZ_OK) fprintf(stderr, "sync %s: %s\n", run_id, msg);
    CU_ASSERT_EQUAL(err, AZ_OK);
    az_arena_free(a);
}

static void test_engine_transitions(void)
{
    CU_ASSERT_PTR_NOT_NULL_FATAL(engine_pg);
    wf_builder b;
    int st;
    Agentz__V1__Workflow *w = build(&b, "engine");
    Agentz__V1__RetryPolicy once = AGENTZ__V1__RETRY_POLICY__INIT;
    once.max_attempts = 1;
    b.steps[1].retry_policy = &once;
    Agentz__V1__Workflow *wf = create_wf(w, NULL, &st);
    CU_ASSERT_EQUAL_FATAL(st, OK);
    Agentz__V1__WorkflowRun *run = start(wf->id, 0, "engines", NULL, &st);
    CU_ASSERT_EQUAL_FATAL(st, OK);
    char tasks[3][40];
    for (int i = 0; i < 3; i++) snprintf(tasks[i], 40, "%s", run->steps[i]->task_id);

    /* Step 1 succeeds: step 2 is queued, the run runs and has started. */
    engine_attempt(tasks[0], "research notes", NULL);
    Agentz__V1__WorkflowRun *r = run_call("GetRun", run->id, &st);
    CU_ASSERT_EQUAL_FATAL(st, OK);
    CU_ASSERT_EQUAL(r->status, R_RUNNING);
    CU_ASSERT_EQUAL(r->steps[0]->status, AGENTZ__V1__TASK_STATUS__TASK_STATUS_SUCCEEDED);
    CU_ASSERT_EQUAL(r->steps[1]->status, T_QUEUED);
    CU_ASSERT_PTR_NOT_NULL(r->start_time);
    CU_ASSERT_EQUAL(r->usage->total_tokens, 120);
    free_msg(r);

    /* Step 2 fails for good: fail fast fails the run and cancels step 3. */
    engine_attempt(tasks[1], NULL, "llm_error");
    r = run_call("GetRun", run->id, &st);
    CU_ASSERT_EQUAL_FATAL(st, OK);
    CU_ASSERT_EQUAL(r->status, AGENTZ__V1__RUN_STATUS__RUN_STATUS_FAILED);
    CU_ASSERT_EQUAL(r->steps[1]->status, AGENTZ__V1__TASK_STATUS__TASK_STATUS_FAILED);
    CU_ASSERT_EQUAL(r->steps[2]->status, T_CANCELLED);
    CU_ASSERT_PTR_NOT_NULL_FATAL(r->error);
    CU_ASSERT_STRING_EQUAL(r->error->type, "llm_error");
    CU_ASSERT_PTR_NOT_NULL(strstr(r->error->message, "step \"write\" failed"));
    CU_ASSERT_PTR_NOT_NULL(r->end_time);
    CU_ASSERT_EQUAL(r->usage->total_tokens, 240);
    free_msg(r);

    /* Resume: the failed step is queued again, the succeeded one keeps its output. */
    r = run_call("ResumeRun", run->id, &st);
    CU_ASSERT_EQUAL_FATAL(st, OK);
    CU_ASSERT_EQUAL(r->status, R_RUNNING);
    CU_ASSERT_EQUAL(r->steps[0]->status, AGENTZ__V1__TASK_STATUS__TASK_STATUS_SUCCEEDED);
    CU_ASSERT_PTR_NOT_NULL_FATAL(r->steps[0]->output);
    CU_ASSERT_STRING_EQUAL(r->steps[0]->output->raw, "research notes");
    CU_ASSERT_EQUAL(r->steps[1]->status, T_QUEUED);
    CU_ASSERT_EQUAL(r->steps[2]->status, T_PENDING);
    CU_ASSERT_PTR_NULL(r->error);
    free_msg(r);

    /* The rest succeeds: the run's output is the last step's. */
    engine_attempt(tasks[1], "a draft", NULL);
    engine_attempt(tasks[2], "the final article", NULL);
    r = run_call("GetRun", run->id, &st);
    CU_ASSERT_EQUAL_FATAL(st, OK);
    CU_ASSERT_EQUAL(r->status, AGENTZ__V1__RUN_STATUS__RUN_STATUS_SUCCEEDED);
    CU_ASSERT_PTR_NOT_NULL_FATAL(r->output);
    CU_ASSERT_STRING_EQUAL(r->output->raw, "the final article");
    CU_ASSERT_PTR_NOT_NULL(r->end_time);
    CU_ASSERT_EQUAL(r->steps[1]->attempt, 2);
    free_msg(r);
    /* A succeeded run cannot be cancelled or resumed. */
    free_msg(run_call("CancelRun", run->id, &st));
    EXPECT_STATUS(st, PRECONDITION, "already succeeded");
    free_msg(run_call("ResumeRun", run->id, &st));
    EXPECT_STATUS(st, PRECONDITION, "succeeded");

    /* Analytics see the success, the retry and every step. */
    Agentz__V1__GetWorkflowAnalyticsRequest ar = AGENTZ__V1__GET_WORKFLOW_ANALYTICS_REQUEST__INIT;
    ar.workflow_id = wf->id;
    Agentz__V1__WorkflowAnalytics *an = NULL;
    CU_ASSERT_EQUAL_FATAL(call(SVC "GetWorkflowAnalytics", &ar, &agentz__v1__workflow_analytics__descriptor,
                               (void **)&an),
                          OK);
    CU_ASSERT_EQUAL(an->runs_total, 1);
    CU_ASSERT_EQUAL(an->runs_succeeded, 1);
    CU_ASSERT_DOUBLE_EQUAL(an->success_rate, 1.0, 1e-9);
    CU_ASSERT_EQUAL(an->retries, 1);
    CU_ASSERT_PTR_NOT_NULL(an->p50_duration);
    CU_ASSERT_EQUAL_FATAL(an->n_steps, 3);
    CU_ASSERT_STRING_EQUAL(an->steps[1]->step_id, "write");
    CU_ASSERT_EQUAL(an->steps[1]->retries, 1);
    CU_ASSERT_EQUAL(an->steps[1]->succeeded, 1);
    CU_ASSERT_EQUAL(an->usage->total_tokens, 480);
    CU_ASSERT_STRING_NOT_EQUAL(an->slowest_step_id, "");
    free_msg(an);

    /* CancelTask through the TaskService moves the run too (the run hook). */
    Agentz__V1__WorkflowRun *run2 = start(wf->id, 0, "hooks", NULL, &st);
    CU_ASSERT_EQUAL_FATAL(st, OK);
    Agentz__V1__CancelTaskRequest ct = AGENTZ__V1__CANCEL_TASK_REQUEST__INIT;
    ct.id = run2->steps[0]->task_id;
    CU_ASSERT_EQUAL(call("/agentz.v1.TaskService/CancelTask", &ct, &agentz__v1__task__descriptor, NULL), OK);
    r = run_call("GetRun", run2->id, &st);
    CU_ASSERT_EQUAL_FATAL(st, OK);
    CU_ASSERT_EQUAL(r->status, R_CANCELLED);
    free_msg(r);
    free_msg(run2);
    free_msg(run);
    free_msg(wf);
}

static void test_parallel_outputs(void)
{
    CU_ASSERT_PTR_NOT_NULL_FATAL(engine_pg);
    /* Two sinks: the run's output is a JSON object keyed by step id. */
    wf_builder b;
    int st;
    Agentz__V1__Workflow *w = build(&b, "sinks");
    w->process = AGENTZ__V1__PROCESS__PROCESS_PARALLEL;
    w->failure_policy = AGENTZ__V1__FAILURE_POLICY__FAILURE_POLICY_CONTINUE;
    b.deps[1][0] = "research";
    b.steps[1].n_depends_on = 1;
    b.deps[2][0] = "research";
    b.steps[2].n_depends_on = 1;
    Agentz__V1__Workflow *wf = create_wf(w, NULL, &st);
    CU_ASSERT_EQUAL_FATAL(st, OK);
    Agentz__V1__WorkflowRun *run = start(wf->id, 0, "p", NULL, &st);
    CU_ASSERT_EQUAL_FATAL(st, OK);
    engine_attempt(run->steps[0]->task_id, "root", NULL);
    engine_attempt(run->steps[1]->task_id, "left", NULL);
    engine_attempt(run->steps[2]->task_id, "right", NULL);
    Agentz__V1__WorkflowRun *r = run_call("GetRun", run->id, &st);
    CU_ASSERT_EQUAL_FATAL(st, OK);
    CU_ASSERT_EQUAL(r->status, AGENTZ__V1__RUN_STATUS__RUN_STATUS_SUCCEEDED);
    CU_ASSERT_PTR_NOT_NULL_FATAL(r->output);
    CU_ASSERT_STRING_EQUAL(r->output->raw, "{\"write\":\"left\",\"review\":\"right\"}");
    CU_ASSERT_PTR_NOT_NULL(r->output->json);
    free_msg(r);
    free_msg(run);
    /* FAILURE_POLICY_CONTINUE: a failed branch lets the other finish, then the run fails. */
    Agentz__V1__WorkflowRun *run2 = start(wf->id, 0, "q", NULL, &st);
    CU_ASSERT_EQUAL_FATAL(st, OK);
    engine_attempt(run2->steps[0]->task_id, "root", NULL);
    Agentz__V1__CancelTaskRequest ct = AGENTZ__V1__CANCEL_TASK_REQUEST__INIT;
    ct.id = run2->steps[1]->task_id;
    CU_ASSERT_EQUAL(call("/agentz.v1.TaskService/CancelTask", &ct, &agentz__v1__task__descriptor, NULL), OK);
    r = run_call("GetRun", run2->id, &st);
    CU_ASSERT_EQUAL_FATAL(st, OK);
    CU_ASSERT_EQUAL(r->status, R_RUNNING); /* "review" can still run */
    CU_ASSERT_EQUAL(r->steps[2]->status, T_QUEUED);
    free_msg(r);
    engine_attempt(run2->steps[2]->task_id, "right", NULL);
    r = run_call("GetRun", run2->id, &st);
    CU_ASSERT_EQUAL_FATAL(st, OK);
    CU_ASSERT_EQUAL(r->status, R_CANCELLED);
    free_msg(r);
    free_msg(run2);
    free_msg(wf);
}

static void test_watch_unknown_run(void)
{
    Agentz__V1__WatchRunRequest req = AGENTZ__V1__WATCH_RUN_REQUEST__INIT;
    req.run_id = NOPE;
    az_conn_stream *s = NULL;
    int st = -1;
    az_conn_stream_open(conn, SVC "WatchRun", &req.base, &agentz__v1__workflow_run__descriptor, 5000, NULL,
                        &s, &st, last_msg);
    if (s) {
        ProtobufCMessage *m = NULL;
        az_conn_stream_next(s, &m, &st, last_msg);
        free_msg(m);
        az_conn_stream_close(s);
    }
    CU_ASSERT_EQUAL(st, 5); /* NOT_FOUND */
}

static int suite_init(void)
{
    /* api only: these suites drive the task state machine themselves (claim, complete), so no
     * worker may pick their tasks up; the engine has its own suites (test_engine*). */
    static const char *const api_only[] = {"--roles", "api", NULL};
    if (az_itest_start(&srv, "workflows", api_only) != 0) return -1;
    conn = az_itest_connect(&srv);
    if (make_agent("Researcher", 0, agent_a) || make_agent("Writer", 0, agent_b) ||
        make_agent("Dormant", 1, agent_off) || make_agent("Manager", 0, agent_mgr))
        return -1;
    return engine_open();
}

static int suite_clean(void)
{
    az_pg_free(engine_pg);
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
    CU_pSuite s = CU_add_suite("workflows", suite_init, suite_clean);
    CU_add_test(s, "create and get", test_create_and_get);
    CU_add_test(s, "validation names step and field", test_validation);
    CU_add_test(s, "idempotent create", test_idempotent_create);
    CU_add_test(s, "versions are immutable and runnable", test_versions);
    CU_add_test(s, "list pagination", test_list_pagination);
    CU_add_test(s, "start and get a run", test_start_and_get_run);
    CU_add_test(s, "idempotent StartRun", test_idempotent_start);
    CU_add_test(s, "parallel and hierarchical runs", test_processes);
    CU_add_test(s, "cancel, resume, delete", test_cancel_resume_delete);
    CU_add_test(s, "list runs and analytics", test_list_runs);
    CU_add_test(s, "templates", test_templates);
    CU_add_test(s, "engine transitions fold into the run", test_engine_transitions);
    CU_add_test(s, "parallel outputs and FAILURE_POLICY_CONTINUE", test_parallel_outputs);
    CU_add_test(s, "WatchRun of an unknown run is NOT_FOUND", test_watch_unknown_run);
    return az_itest_run_cunit();
}
