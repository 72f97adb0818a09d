/* Tenant isolation and limits over the wire, against the real agentzd: a second workspace (an API
 * key made with `agentzd admin create-key`) gets NOT_FOUND, never PERMISSION_DENIED, for every
 * resource of the first, and never sees them listed; a viewer may read but not change anything;
 * a low AGENTZ_RATE_LIMIT answers RESOURCE_EXHAUSTED with a retry delay. */
#include <CUnit/Basic.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "agentz/v1/agent.pb-c.h"
#include "agentz/v1/system.pb-c.h"
#include "agentz/v1/task.pb-c.h"
#include "agentz/v1/workflow.pb-c.h"
#include "auth/perm.h"
#include "core/text.h"
#include "google/protobuf/empty.pb-c.h"
#include "google/protobuf/field_mask.pb-c.h"
#include "harness.h"

enum { OK = 0, NOT_FOUND = 5, PERMISSION_DENIED = 7, EXHAUSTED = 8, UNIMPLEMENTED = 12 };

static az_itest_server srv;
static az_conn *conn_a, *conn_b, *conn_viewer;
static char ws_b[37];
static char last_msg[AZ_MSG_MAX];
static int have_auth; /* the server enforces authentication (else nothing here can be tested) */

/* What workspace A owns. */
static struct {
    char agent[40], task[40], workflow[40], run[40], template_id[40], key[40], secret[96];
    char run_task[40]; /* a task of the run */
} a;
static char agent_b[40]; /* one of B's */

/* ---------------------------------------------------------------- helpers */

static int call(az_conn *c, const char *method, const void *req, const ProtobufCMessageDescriptor *out_desc,
                void **out)
{
    ProtobufCMessage *resp = NULL;
    int status = -1;
    last_msg[0] = '\0';
    az_conn_unary(c, method, req, out_desc ? out_desc : &google__protobuf__empty__descriptor, 20000, NULL,
                  &resp, &status, last_msg);
    if (out) *out = resp;
    else if (resp) protobuf_c_message_free_unpacked(resp, NULL);
    return status;
}

static void free_msg(void *m)
{
    if (m) protobuf_c_message_free_unpacked(m, NULL);
}

static void expect(int line, const char *what, int st, int want)
{
    if (st != want)
        fprintf(stderr, "\n  line %d: %s: status %d \"%s\", want %d\n", line, what, st, last_msg, want);
    CU_ASSERT_EQUAL(st, want);
}
#define EXPECT(what, st, want) expect(__LINE__, (what), (st), (want))

/* Calls method with a request whose field 1 is the string id (GetAgentRequest has the same wire
 * form as every "string id/agent_id/task_id/workflow_id/template_id/name = 1" request). */
static int by_id(az_conn *c, const char *method, const char *id)
{
    Agentz__V1__GetAgentRequest req = AGENTZ__V1__GET_AGENT_REQUEST__INIT;
    req.id = (char *)id;
    return call(c, method, &req, NULL, NULL);
}

/* Runs `$AGENTZD admin create-key` and returns the key (static storage per slot), or NULL. The
 * subcommand may still be in the making: try a few times. */
static const char *create_key(const char *workspace, const char *role, int slot)
{
    static char keys[4][512];
    const char *bin = getenv("AGENTZD");
    if (!bin || !*bin) bin = "build/bin/agentzd";
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "'%s' admin create-key --data-dir '%s' --workspace %s --role %s --name isolation 2>>'%s'",
             bin, srv.data_dir, workspace, role, srv.log_path);
    for (int attempt = 0; attempt < 10; attempt++) {
        FILE *p = popen(cmd, "r");
        if (!p) return NULL;
        char *k = keys[slot];
        k[0] = '\0';
        if (!fgets(k, sizeof keys[slot], p)) k[0] = '\0';
        int rc = pclose(p);
        k[strcspn(k, "\r\n")] = '\0';
        if (rc == 0 && strncmp(k, "agz_", 4) == 0) return k;
        sleep(1);
    }
    fprintf(stderr, "cannot create a %s key in workspace %s with `%s`\n", role, workspace, cmd);
    return NULL;
}

static int make_agent(az_conn *c, const char *role, char out[40])
{
    Agentz__V1__Agent ag = AGENTZ__V1__AGENT__INIT;
    ag.role = (char *)role;
    ag.goal = "Write about {topic}";
    ag.backstory = "Knows the field.";
    Agentz__V1__CreateAgentRequest req = AGENTZ__V1__CREATE_AGENT_REQUEST__INIT;
    req.agent = &ag;
    Agentz__V1__Agent *got = NULL;
    int st = call(c, "/agentz.v1.AgentService/CreateAgent", &req, &agentz__v1__agent__descriptor, (void **)&got);
    if (st == OK) snprintf(out, 40, "%s", got->id);
    else fprintf(stderr, "cannot create agent: %d %s\n", st, last_msg);
    free_msg(got);
    return st;
}

/* Everything workspace A owns, made through the API as A's admin key. */
static int populate_a(void)
{
    if (make_agent(conn_a, "Researcher", a.agent) != OK) return -1;

    Agentz__V1__Task t = AGENTZ__V1__TASK__INIT;
    t.description = "Research {topic}";
    t.agent_id = a.agent;
    Agentz__V1__CreateTaskRequest tr = AGENTZ__V1__CREATE_TASK_REQUEST__INIT;
    tr.task = &t;
    Agentz__V1__Task *task = NULL;
    if (call(conn_a, "/agentz.v1.TaskService/CreateTask", &tr, &agentz__v1__task__descriptor, (void **)&task) != OK) {
        fprintf(stderr, "cannot create task: %s\n", last_msg);
        return -1;
    }
    snprintf(a.task, sizeof a.task, "%s", task->id);
    free_msg(task);

    Agentz__V1__Step step = AGENTZ__V1__STEP__INIT, *sp[1] = {&step};
    step.id = "research";
    step.agent_id = a.agent;
    step.description = "Research {topic}.";
    step.expected_output = "Notes.";
    Agentz__V1__WorkflowInput in = AGENTZ__V1__WORKFLOW_INPUT__INIT, *ip[1] = {&in};
    in.name = "topic";
    in.required = 1;
    Agentz__V1__Workflow w = AGENTZ__V1__WORKFLOW__INIT;
    char name[64];
    snprintf(name, sizeof name, "iso-%s", az_itest_unique());
    w.name = name;
    w.process = AGENTZ__V1__PROCESS__PROCESS_SEQUENTIAL;
    w.n_steps = 1;
    w.steps = sp;
    w.n_inputs = 1;
    w.inputs = ip;
    Agentz__V1__CreateWorkflowRequest wr = AGENTZ__V1__CREATE_WORKFLOW_REQUEST__INIT;
    wr.workflow = &w;
    Agentz__V1__Workflow *wf = NULL;
    if (call(conn_a, "/agentz.v1.WorkflowService/CreateWorkflow", &wr, &agentz__v1__workflow__descriptor,
             (void **)&wf) != OK) {
        fprintf(stderr, "cannot create workflow: %s\n", last_msg);
        return -1;
    }
    snprintf(a.workflow, sizeof a.workflow, "%s", wf->id);
    free_msg(wf);

    Agentz__V1__StartRunRequest sr = AGENTZ__V1__START_RUN_REQUEST__INIT;
    Agentz__V1__StartRunRequest__InputsEntry e = AGENTZ__V1__START_RUN_REQUEST__INPUTS_ENTRY__INIT, *ep[1] = {&e};
    e.key = "topic";
    e.value = "tenancy";
    sr.workflow_id = a.workflow;
    sr.n_inputs = 1;
    sr.inputs = ep;
    Agentz__V1__WorkflowRun *run = NULL;
    if (call(conn_a, "/agentz.v1.WorkflowService/StartRun", &sr, &agentz__v1__workflow_run__descriptor,
             (void **)&run) != OK) {
        fprintf(stderr, "cannot start run: %s\n", last_msg);
        return -1;
    }
    snprintf(a.run, sizeof a.run, "%s", run->id);
    free_msg(run);
    Agentz__V1__ListTasksRequest lt = AGENTZ__V1__LIST_TASKS_REQUEST__INIT;
    lt.run_id = a.run;
    Agentz__V1__ListTasksResponse *rt = NULL;
    if (call(conn_a, "/agentz.v1.TaskService/ListTasks", &lt, &agentz__v1__list_tasks_response__descriptor,
             (void **)&rt) == OK && rt->n_tasks > 0)
        snprintf(a.run_task, sizeof a.run_task, "%s", rt->tasks[0]->id);
    free_msg(rt);

    Agentz__V1__SaveAsTemplateRequest sv = AGENTZ__V1__SAVE_AS_TEMPLATE_REQUEST__INIT;
    char tname[64];
    snprintf(tname, sizeof tname, "iso-%s", az_itest_unique());
    sv.workflow_id = a.workflow;
    sv.name = tname;
    Agentz__V1__Template *tpl = NULL;
    if (call(conn_a, "/agentz.v1.WorkflowService/SaveAsTemplate", &sv, &agentz__v1__template__descriptor,
             (void **)&tpl) != OK) {
        fprintf(stderr, "cannot save template: %s\n", last_msg);
        return -1;
    }
    snprintf(a.template_id, sizeof a.template_id, "%s", tpl->id);
    free_msg(tpl);

    Agentz__V1__CreateApiKeyRequest kr = AGENTZ__V1__CREATE_API_KEY_REQUEST__INIT;
    kr.name = "iso";
    kr.role = AGENTZ__V1__ROLE__ROLE_VIEWER;
    Agentz__V1__CreateApiKeyResponse *key = NULL;
    if (call(conn_a, "/agentz.v1.SystemService/CreateApiKey", &kr, &agentz__v1__create_api_key_response__descriptor,
             (void **)&key) != OK || !key->api_key) {
        fprintf(stderr, "cannot create api key: %s\n", last_msg);
        return -1;
    }
    snprintf(a.key, sizeof a.key, "%s", key->api_key->id);
    free_msg(key);

    snprintf(a.secret, sizeof a.secret, "iso_%s", az_itest_unique());
    Agentz__V1__CreateSecretRequest cs = AGENTZ__V1__CREATE_SECRET_REQUEST__INIT;
    cs.name = a.secret;
    cs.value = "s3cr3t";
    if (call(conn_a, "/agentz.v1.SystemService/CreateSecret", &cs, &agentz__v1__secret__descriptor, NULL) != OK) {
        fprintf(stderr, "cannot create secret: %s\n", last_msg);
        return -1;
    }
    return 0;
}

/* 1 when id is one of A's resources. */
static int is_a(const char *id)
{
    return id && *id &&
           (!strcmp(id, a.agent) || !strcmp(id, a.task) || !strcmp(id, a.workflow) || !strcmp(id, a.run) ||
            !strcmp(id, a.template_id) || !strcmp(id, a.key) || !strcmp(id, a.secret) ||
            (a.run_task[0] && !strcmp(id, a.run_task)));
}

/* ---------------------------------------------------------------- suite setup */

static int suite_clean(void);

static int suite_init(void)
{
    signal(SIGPIPE, SIG_IGN);
    if (az_itest_start(&srv, "isolation", NULL) != 0) return 1;
    have_auth = az_itest_admin_key(&srv) != NULL;
    if (!have_auth) {
        fprintf(stderr, "\n  agentzd enforces no authentication (no admin.key): isolation tests skipped\n");
        return 0;
    }
    conn_a = az_itest_connect(&srv);
    const char *kb = NULL, *kv = NULL;
    if (az_text_uuid4(ws_b) == AZ_OK) {
        kb = create_key(ws_b, "owner", 0);
        kv = create_key(ws_b, "viewer", 1);
    }
    if (kb && kv) {
        conn_b = az_itest_connect_token(&srv, kb);
        conn_viewer = az_itest_connect_token(&srv, kv);
        if (populate_a() == 0 && make_agent(conn_b, "Writer", agent_b) == OK) return 0;
    }
    /* CUnit skips the clean-up of a suite whose set-up failed: stop the server here. */
    az_itest_dump_log(&srv, 30);
    suite_clean();
    return 1;
}

static int suite_clean(void)
{
    az_conn_free(conn_a);
    az_conn_free(conn_b);
    az_conn_free(conn_viewer);
    conn_a = conn_b = conn_viewer = NULL;
    int rc = az_itest_stop(&srv, SIGTERM, 30);
    if (rc != 0) az_itest_dump_log(&srv, 40);
    return 0;
}

/* ================================================================ tests */

static void test_whoami(void)
{
    if (!have_auth) return;
    Agentz__V1__WhoAmIResponse *who = NULL;
    Agentz__V1__WhoAmIRequest req = AGENTZ__V1__WHO_AM_IREQUEST__INIT;
    CU_ASSERT_EQUAL_FATAL(call(conn_b, "/agentz.v1.SystemService/WhoAmI", &req,
                               &agentz__v1__who_am_iresponse__descriptor, (void **)&who),
                          OK);
    CU_ASSERT_STRING_EQUAL(who->workspace_id, ws_b);
    CU_ASSERT_EQUAL(who->role, AGENTZ__V1__ROLE__ROLE_OWNER);
    free_msg(who);
}

static void test_agents(void)
{
    if (!have_auth) return;
    EXPECT("GetAgent", by_id(conn_b, "/agentz.v1.AgentService/GetAgent", a.agent), NOT_FOUND);
    EXPECT("DeleteAgent", by_id(conn_b, "/agentz.v1.AgentService/DeleteAgent", a.agent), NOT_FOUND);
    Agentz__V1__Agent patch = AGENTZ__V1__AGENT__INIT;
    patch.id = a.agent;
    patch.goal = "hijacked";
    char *paths[] = {"goal"};
    Google__Protobuf__FieldMask mask = GOOGLE__PROTOBUF__FIELD_MASK__INIT;
    mask.n_paths = 1;
    mask.paths = paths;
    Agentz__V1__UpdateAgentRequest up = AGENTZ__V1__UPDATE_AGENT_REQUEST__INIT;
    up.agent = &patch;
    up.update_mask = &mask;
    EXPECT("UpdateAgent", call(conn_b, "/agentz.v1.AgentService/UpdateAgent", &up, NULL, NULL), NOT_FOUND);
    Agentz__V1__ListAgentsRequest lr = AGENTZ__V1__LIST_AGENTS_REQUEST__INIT;
    lr.page_size = 1000;
    Agentz__V1__ListAgentsResponse *l = NULL;
    CU_ASSERT_EQUAL_FATAL(call(conn_b, "/agentz.v1.AgentService/ListAgents", &lr,
                               &agentz__v1__list_agents_response__descriptor, (void **)&l),
                          OK);
    int saw_b = 0;
    for (size_t i = 0; i < l->n_agents; i++) {
        CU_ASSERT_FALSE(is_a(l->agents[i]->id));
        saw_b |= !strcmp(l->agents[i]->id, agent_b);
    }
    CU_ASSERT_TRUE(saw_b);
    free_msg(l);
    /* And the other way round; A's agent is untouched. */
    EXPECT("GetAgent B as A", by_id(conn_a, "/agentz.v1.AgentService/GetAgent", agent_b), NOT_FOUND);
    Agentz__V1__Agent *mine = NULL;
    Agentz__V1__GetAgentRequest g = AGENTZ__V1__GET_AGENT_REQUEST__INIT;
    g.id = a.agent;
    CU_ASSERT_EQUAL_FATAL(call(conn_a, "/agentz.v1.AgentService/GetAgent", &g, &agentz__v1__agent__descriptor,
                               (void **)&mine),
                          OK);
    CU_ASSERT_STRING_NOT_EQUAL(mine->goal, "hijacked");
    free_msg(mine);
}

static void test_tasks(void)
{
    if (!have_auth) return;
    static const char *const methods[] = {"GetTask", "CancelTask", "RetryTask", "ListTaskAttempts"};
    for (size_t i = 0; i < sizeof methods / sizeof *methods; i++) {
        char m[96];
        snprintf(m, sizeof m, "/agentz.v1.TaskService/%s", methods[i]);
        EXPECT(methods[i], by_id(conn_b, m, a.task), NOT_FOUND);
        if (a.run_task[0]) EXPECT(methods[i], by_id(conn_b, m, a.run_task), NOT_FOUND);
    }
    Agentz__V1__ListTasksRequest lr = AGENTZ__V1__LIST_TASKS_REQUEST__INIT;
    lr.page_size = 1000;
    Agentz__V1__ListTasksResponse *l = NULL;
    CU_ASSERT_EQUAL_FATAL(call(conn_b, "/agentz.v1.TaskService/ListTasks", &lr,
                               &agentz__v1__list_tasks_response__descriptor, (void **)&l),
                          OK);
    for (size_t i = 0; i < l->n_tasks; i++) CU_ASSERT_FALSE(is_a(l->tasks[i]->id));
    free_msg(l);
    /* Filtering by A's agent or run finds nothing either. */
    lr.agent_id = a.agent;
    int st = call(conn_b, "/agentz.v1.TaskService/ListTasks", &lr, &agentz__v1__list_tasks_response__descriptor,
                  (void **)&l);
    CU_ASSERT(st == OK || st == NOT_FOUND);
    if (st == OK) CU_ASSERT_EQUAL(l->n_tasks, 0);
    free_msg(l);
    l = NULL;
    lr.agent_id = "";
    lr.run_id = a.run;
    st = call(conn_b, "/agentz.v1.TaskService/ListTasks", &lr, &agentz__v1__list_tasks_response__descriptor,
              (void **)&l);
    CU_ASSERT(st == OK || st == NOT_FOUND);
    if (st == OK) CU_ASSERT_EQUAL(l->n_tasks, 0);
    free_msg(l);
    /* B cannot hand work to A's agent. */
    Agentz__V1__Task t = AGENTZ__V1__TASK__INIT;
    t.description = "Use their agent";
    t.agent_id = a.agent;
    Agentz__V1__CreateTaskRequest cr = AGENTZ__V1__CREATE_TASK_REQUEST__INIT;
    cr.task = &t;
    st = call(conn_b, "/agentz.v1.TaskService/CreateTask", &cr, NULL, NULL);
    if (st == OK || st == PERMISSION_DENIED) fprintf(stderr, "\n  CreateTask with A's agent: %d %s\n", st, last_msg);
    CU_ASSERT(st != OK && st != PERMISSION_DENIED);
}

static void test_workflows_runs_templates(void)
{
    if (!have_auth) return;
    static const char *const wf_methods[] = {"GetWorkflow", "DeleteWorkflow", "ListWorkflowVersions",
                                             "GetWorkflowAnalytics"};
    for (size_t i = 0; i < sizeof wf_methods / sizeof *wf_methods; i++) {
        char m[96];
        snprintf(m, sizeof m, "/agentz.v1.WorkflowService/%s", wf_methods[i]);
        EXPECT(wf_methods[i], by_id(conn_b, m, a.workflow), NOT_FOUND);
    }
    Agentz__V1__Workflow patch = AGENTZ__V1__WORKFLOW__INIT;
    patch.id = a.workflow;
    patch.description = "hijacked";
    char *paths[] = {"description"};
    Google__Protobuf__FieldMask mask = GOOGLE__PROTOBUF__FIELD_MASK__INIT;
    mask.n_paths = 1;
    mask.paths = paths;
    Agentz__V1__UpdateWorkflowRequest up = AGENTZ__V1__UPDATE_WORKFLOW_REQUEST__INIT;
    up.workflow = &patch;
    up.update_mask = &mask;
    EXPECT("UpdateWorkflow", call(conn_b, "/agentz.v1.WorkflowService/UpdateWorkflow", &up, NULL, NULL), NOT_FOUND);

    Agentz__V1__StartRunRequest sr = AGENTZ__V1__START_RUN_REQUEST__INIT;
    Agentz__V1__StartRunRequest__InputsEntry e = AGENTZ__V1__START_RUN_REQUEST__INPUTS_ENTRY__INIT, *ep[1] = {&e};
    e.key = "topic";
    e.value = "theirs";
    sr.workflow_id = a.workflow;
    sr.n_inputs = 1;
    sr.inputs = ep;
    EXPECT("StartRun", call(conn_b, "/agentz.v1.WorkflowService/StartRun", &sr, NULL, NULL), NOT_FOUND);
    Agentz__V1__SaveAsTemplateRequest sv = AGENTZ__V1__SAVE_AS_TEMPLATE_REQUEST__INIT;
    sv.workflow_id = a.workflow;
    sv.name = "stolen";
    EXPECT("SaveAsTemplate", call(conn_b, "/agentz.v1.WorkflowService/SaveAsTemplate", &sv, NULL, NULL), NOT_FOUND);

    static const char *const run_methods[] = {"GetRun", "CancelRun", "ResumeRun"};
    for (size_t i = 0; i < sizeof run_methods / sizeof *run_methods; i++) {
        char m[96];
        snprintf(m, sizeof m, "/agentz.v1.WorkflowService/%s", run_methods[i]);
        EXPECT(run_methods[i], by_id(conn_b, m, a.run), NOT_FOUND);
    }
    Agentz__V1__InstantiateTemplateRequest it = AGENTZ__V1__INSTANTIATE_TEMPLATE_REQUEST__INIT;
    it.template_id = a.template_id;
    it.name = "stolen";
    EXPECT("InstantiateTemplate", call(conn_b, "/agentz.v1.WorkflowService/InstantiateTemplate", &it, NULL, NULL),
           NOT_FOUND);

    Agentz__V1__ListWorkflowsRequest lw = AGENTZ__V1__LIST_WORKFLOWS_REQUEST__INIT;
    lw.page_size = 1000;
    Agentz__V1__ListWorkflowsResponse *w = NULL;
    CU_ASSERT_EQUAL_FATAL(call(conn_b, "/agentz.v1.WorkflowService/ListWorkflows", &lw,
                               &agentz__v1__list_workflows_response__descriptor, (void **)&w),
                          OK);
    for (size_t i = 0; i < w->n_workflows; i++) CU_ASSERT_FALSE(is_a(w->workflows[i]->id));
    free_msg(w);
    Agentz__V1__ListRunsRequest lr = AGENTZ__V1__LIST_RUNS_REQUEST__INIT;
    lr.page_size = 1000;
    Agentz__V1__ListRunsResponse *r = NULL;
    CU_ASSERT_EQUAL_FATAL(call(conn_b, "/agentz.v1.WorkflowService/ListRuns", &lr,
                               &agentz__v1__list_runs_response__descriptor, (void **)&r),
                          OK);
    for (size_t i = 0; i < r->n_runs; i++) CU_ASSERT_FALSE(is_a(r->runs[i]->id));
    free_msg(r);
    r = NULL;
    lr.workflow_id = a.workflow;
    int st = call(conn_b, "/agentz.v1.WorkflowService/ListRuns", &lr, &agentz__v1__list_runs_response__descriptor,
                  (void **)&r);
    CU_ASSERT(st == OK || st == NOT_FOUND);
    if (st == OK) CU_ASSERT_EQUAL(r->n_runs, 0);
    free_msg(r);
    Agentz__V1__ListTemplatesRequest lt = AGENTZ__V1__LIST_TEMPLATES_REQUEST__INIT;
    lt.page_size = 1000;
    Agentz__V1__ListTemplatesResponse *t = NULL;
    CU_ASSERT_EQUAL_FATAL(call(conn_b, "/agentz.v1.WorkflowService/ListTemplates", &lt,
                               &agentz__v1__list_templates_response__descriptor, (void **)&t),
                          OK);
    for (size_t i = 0; i < t->n_templates; i++) CU_ASSERT_FALSE(is_a(t->templates[i]->id));
    free_msg(t);
    /* A's run is still running, its workflow still there. */
    EXPECT("GetRun as A", by_id(conn_a, "/agentz.v1.WorkflowService/GetRun", a.run), OK);
    EXPECT("GetWorkflow as A", by_id(conn_a, "/agentz.v1.WorkflowService/GetWorkflow", a.workflow), OK);
}

static void test_keys_secrets_audit(void)
{
    if (!have_auth) return;
    EXPECT("RevokeApiKey", by_id(conn_b, "/agentz.v1.SystemService/RevokeApiKey", a.key), NOT_FOUND);
    EXPECT("DeleteSecret", by_id(conn_b, "/agentz.v1.SystemService/DeleteSecret", a.secret), NOT_FOUND);
    Agentz__V1__ListApiKeysRequest lk = AGENTZ__V1__LIST_API_KEYS_REQUEST__INIT;
    lk.page_size = 1000;
    Agentz__V1__ListApiKeysResponse *k = NULL;
    CU_ASSERT_EQUAL_FATAL(call(conn_b, "/agentz.v1.SystemService/ListApiKeys", &lk,
                               &agentz__v1__list_api_keys_response__descriptor, (void **)&k),
                          OK);
    CU_ASSERT(k->n_api_keys >= 2); /* B's owner and viewer keys */
    for (size_t i = 0; i < k->n_api_keys; i++) {
        CU_ASSERT_FALSE(is_a(k->api_keys[i]->id));
        CU_ASSERT_STRING_EQUAL(k->api_keys[i]->workspace_id, ws_b);
    }
    free_msg(k);
    Agentz__V1__ListSecretsRequest ls = AGENTZ__V1__LIST_SECRETS_REQUEST__INIT;
    ls.page_size = 1000;
    Agentz__V1__ListSecretsResponse *s = NULL;
    CU_ASSERT_EQUAL_FATAL(call(conn_b, "/agentz.v1.SystemService/ListSecrets", &ls,
                               &agentz__v1__list_secrets_response__descriptor, (void **)&s),
                          OK);
    for (size_t i = 0; i < s->n_secrets; i++) CU_ASSERT_STRING_NOT_EQUAL(s->secrets[i]->name, a.secret);
    free_msg(s);
    /* The same secret name in B is B's own; A's stays. */
    Agentz__V1__CreateSecretRequest cs = AGENTZ__V1__CREATE_SECRET_REQUEST__INIT;
    cs.name = a.secret;
    cs.value = "bees";
    EXPECT("CreateSecret B", call(conn_b, "/agentz.v1.SystemService/CreateSecret", &cs, NULL, NULL), OK);
    EXPECT("DeleteSecret B", by_id(conn_b, "/agentz.v1.SystemService/DeleteSecret", a.secret), OK);
    s = NULL;
    CU_ASSERT_EQUAL_FATAL(call(conn_a, "/agentz.v1.SystemService/ListSecrets", &ls,
                               &agentz__v1__list_secrets_response__descriptor, (void **)&s),
                          OK);
    int found = 0;
    for (size_t i = 0; i < s->n_secrets; i++) found |= !strcmp(s->secrets[i]->name, a.secret);
    CU_ASSERT_TRUE(found);
    free_msg(s);
    /* B's audit log holds B's calls only. B's own refused attempts on A's ids are there (B named
     * those ids itself), but no successful call on any of A's resources, none of A's calls. */
    Agentz__V1__ListAuditLogRequest la = AGENTZ__V1__LIST_AUDIT_LOG_REQUEST__INIT;
    la.page_size = 1000;
    Agentz__V1__ListAuditLogResponse *au = NULL;
    CU_ASSERT_EQUAL_FATAL(call(conn_b, "/agentz.v1.SystemService/ListAuditLog", &la,
                               &agentz__v1__list_audit_log_response__descriptor, (void **)&au),
                          OK);
    CU_ASSERT(au->n_entries > 0); /* at least the CreateAgent and CreateSecret above */
    for (size_t i = 0; i < au->n_entries; i++) {
        CU_ASSERT_STRING_EQUAL(au->entries[i]->workspace_id, ws_b);
        const Agentz__V1__AuditEntry *en = au->entries[i];
        int leaked = is_a(en->target_id) && strcmp(en->target_id, a.secret) && !strcmp(en->outcome, "OK");
        if (leaked) fprintf(stderr, "\n  audit entry %s %s %s %s\n", en->principal, en->method, en->target_id, en->outcome);
        CU_ASSERT_FALSE(leaked);
    }
    free_msg(au);
}

static void test_viewer(void)
{
    if (!have_auth) return;
    /* Every mutating method of the permission table is refused before its handler runs, so an
     * empty request is enough. */
    size_t n = 0;
    const az_perm *perms = az_perm_table(&n);
    Google__Protobuf__Empty empty = GOOGLE__PROTOBUF__EMPTY__INIT;
    int checked = 0;
    for (size_t i = 0; i < n; i++) {
        if (!perms[i].mutating || perms[i].role <= AGENTZ__V1__ROLE__ROLE_VIEWER) continue;
        EXPECT(perms[i].method, call(conn_viewer, perms[i].method, &empty, NULL, NULL), PERMISSION_DENIED);
        checked++;
    }
    CU_ASSERT(checked >= 10);
    /* Reads work. */
    EXPECT("GetAgent", by_id(conn_viewer, "/agentz.v1.AgentService/GetAgent", agent_b), OK);
    Agentz__V1__ListAgentsRequest la = AGENTZ__V1__LIST_AGENTS_REQUEST__INIT;
    EXPECT("ListAgents", call(conn_viewer, "/agentz.v1.AgentService/ListAgents", &la, NULL, NULL), OK);
    Agentz__V1__ListTasksRequest lt = AGENTZ__V1__LIST_TASKS_REQUEST__INIT;
    EXPECT("ListTasks", call(conn_viewer, "/agentz.v1.TaskService/ListTasks", &lt, NULL, NULL), OK);
    Agentz__V1__ListWorkflowsRequest lw = AGENTZ__V1__LIST_WORKFLOWS_REQUEST__INIT;
    EXPECT("ListWorkflows", call(conn_viewer, "/agentz.v1.WorkflowService/ListWorkflows", &lw, NULL, NULL), OK);
    Agentz__V1__ListRunsRequest lr = AGENTZ__V1__LIST_RUNS_REQUEST__INIT;
    EXPECT("ListRuns", call(conn_viewer, "/agentz.v1.WorkflowService/ListRuns", &lr, NULL, NULL), OK);
    Agentz__V1__ListTemplatesRequest ltp = AGENTZ__V1__LIST_TEMPLATES_REQUEST__INIT;
    EXPECT("ListTemplates", call(conn_viewer, "/agentz.v1.WorkflowService/ListTemplates", &ltp, NULL, NULL), OK);
    /* A viewer of B is still NOT_FOUND, not PERMISSION_DENIED, for A's resources it may read. */
    EXPECT("GetAgent of A", by_id(conn_viewer, "/agentz.v1.AgentService/GetAgent", a.agent), NOT_FOUND);
}

/* ================================================================ rate limits */

static az_itest_server rl_srv;

static int rl_init(void)
{
    /* The harness execs agentzd with this process's environment. */
    setenv("AGENTZ_RATE_LIMIT", "5", 1);
    int rc = az_itest_start(&rl_srv, "isolation-ratelimit", NULL);
    unsetenv("AGENTZ_RATE_LIMIT");
    return rc == 0 ? 0 : 1; /* a failed start leaves nothing running */
}

static int rl_clean(void)
{
    int rc = az_itest_stop(&rl_srv, SIGTERM, 30);
    if (rc != 0) az_itest_dump_log(&rl_srv, 40);
    return 0;
}

static void test_rate_limited(void)
{
    if (!az_itest_admin_key(&rl_srv)) return; /* no principals without authentication */
    az_conn *c = az_itest_connect(&rl_srv);
    Agentz__V1__ListAgentsRequest req = AGENTZ__V1__LIST_AGENTS_REQUEST__INIT;
    int ok = 0, exhausted = 0;
    char denial[AZ_MSG_MAX] = "";
    for (int i = 0; i < 40 && !exhausted; i++) {
        int st = call(c, "/agentz.v1.AgentService/ListAgents", &req, NULL, NULL);
        if (st == OK) ok++;
        else if (st == EXHAUSTED) {
            exhausted++;
            snprintf(denial, sizeof denial, "%s", last_msg);
        } else EXPECT("ListAgents", st, OK);
    }
    CU_ASSERT_TRUE(exhausted);
    CU_ASSERT(ok >= 5 && ok < 40); /* the burst (twice the rate by default) went through */
    CU_ASSERT_PTR_NOT_NULL(strstr(denial, "rate limit exceeded for principal"));
    const char *at = strstr(denial, "retry in ");
    CU_ASSERT_PTR_NOT_NULL_FATAL(at);
    double s = atof(at + 9);
    CU_ASSERT(s > 0 && s <= 0.201); /* one request per 200 ms */
    /* Waiting as told lets the next call through. */
    usleep((useconds_t)(s * 1e6) + 20000);
    EXPECT("ListAgents after the wait", call(c, "/agentz.v1.AgentService/ListAgents", &req, NULL, NULL), OK);
    az_conn_free(c);
}

int main(void)
{
    if (CU_initialize_registry() != CUE_SUCCESS) return 1;
    CU_pSuite s = CU_add_suite("isolation", suite_init, suite_clean);
    CU_add_test(s, "second workspace key", test_whoami);
    CU_add_test(s, "agents", test_agents);
    CU_add_test(s, "tasks", test_tasks);
    CU_add_test(s, "workflows, runs and templates", test_workflows_runs_templates);
    CU_add_test(s, "api keys, secrets and audit log", test_keys_secrets_audit);
    CU_add_test(s, "viewer reads but never writes", test_viewer);
    CU_pSuite r = CU_add_suite("rate limits", rl_init, rl_clean);
    CU_add_test(r, "RESOURCE_EXHAUSTED with a retry delay", test_rate_limited);
    return az_itest_run_cunit();
}
