/* Worker failover end to end: an API-only agentzd and worker-only agentzd processes on the same
 * embedded PostgreSQL and Redis run a workflow against the fake LLM; the worker running a step is
 * killed with SIGKILL in the middle of its model call, its lease expires, and another worker runs
 * the step again so the run completes with exactly one successful outcome and the lost attempt
 * recorded. A worker stopped gracefully hands its task back at once instead. */
#include <CUnit/Basic.h>
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
#include "harness.h"

#define AGENTS "/agentz.v1.AgentService/"
#define TASKS "/agentz.v1.TaskService/"
#define WORKFLOWS "/agentz.v1.WorkflowService/"
/* Per-call log lines, left out of log excerpts: the suite polls. */
#define RPC_LINE "msg=\"rpc\""

enum { OK = 0 };
enum {
    T_RUNNING = AGENTZ__V1__TASK_STATUS__TASK_STATUS_RUNNING,
    T_SUCCEEDED = AGENTZ__V1__TASK_STATUS__TASK_STATUS_SUCCEEDED,
    T_FAILED = AGENTZ__V1__TASK_STATUS__TASK_STATUS_FAILED,
    T_CANCELLED = AGENTZ__V1__TASK_STATUS__TASK_STATUS_CANCELLED,
    R_SUCCEEDED = AGENTZ__V1__RUN_STATUS__RUN_STATUS_SUCCEEDED,
    R_FAILED = AGENTZ__V1__RUN_STATUS__RUN_STATUS_FAILED,
    R_CANCELLED = AGENTZ__V1__RUN_STATUS__RUN_STATUS_CANCELLED,
};

static az_itest_server api, w1, w2, w3;
static az_conn *conn;
static fakellm *fake;
static char last_msg[AZ_MSG_MAX];
static char uniq[40];

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

/* Calls method with a request given as proto3 JSON (printf-style); returns the gRPC status. */
static int rpc(const char *method, const ProtobufCMessageDescriptor *in,
               const ProtobufCMessageDescriptor *out_desc, void **out, const char *fmt, ...)
{
    char json[8192];
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

static void show(const char *what, const void *m)
{
    char *json = NULL, msg[AZ_MSG_MAX];
    if (m && az_pbjson_encode(m, AZ_PBJSON_PRETTY, &json, msg) == AZ_OK)
        fprintf(stderr, "\n  %s: %s\n", what, json);
    else fprintf(stderr, "\n  %s: (none)\n", what);
    free(json);
}

static void dump_logs(void)
{
    az_itest_dump_log_except(&api, 15, RPC_LINE);
    az_itest_dump_log_except(&w1, 15, RPC_LINE);
    az_itest_dump_log_except(&w2, 15, RPC_LINE);
    az_itest_dump_log_except(&w3, 15, RPC_LINE);
}

static int make_agent(char id[40], const char *role, const char *model)
{
    Agentz__V1__Agent *a = NULL;
    int st = rpc(AGENTS "CreateAgent", &agentz__v1__create_agent_request__descriptor,
                 &agentz__v1__agent__descriptor, (void **)&a,
                 "{\"agent\":{\"role\":\"%s\",\"goal\":\"Finish\",\"backstory\":\"Reliable.\","
                 "\"llm\":{\"provider\":\"openai\",\"model\":\"%s\",\"baseUrl\":\"%s\"}}}",
                 role, model, fakellm_base_url(fake));
    if (st == OK) snprintf(id, 40, "%s", a->id);
    else fprintf(stderr, "\n  cannot create agent: %d %s\n", st, last_msg);
    free_msg(a);
    return st;
}

static Agentz__V1__Task *get_task(const char *id)
{
    Agentz__V1__Task *t = NULL;
    rpc(TASKS "GetTask", &agentz__v1__get_task_request__descriptor, &agentz__v1__task__descriptor,
        (void **)&t, "{\"id\":\"%s\"}", id);
    return t;
}

static Agentz__V1__ListTaskAttemptsResponse *attempts(const char *task_id)
{
    Agentz__V1__ListTaskAttemptsResponse *r = NULL;
    rpc(TASKS "ListTaskAttempts", &agentz__v1__list_task_attempts_request__descriptor,
        &agentz__v1__list_task_attempts_response__descriptor, (void **)&r,
        "{\"taskId\":\"%s\"}", task_id);
    return r;
}

static Agentz__V1__WorkflowRun *get_run(const char *id)
{
    Agentz__V1__WorkflowRun *r = NULL;
    rpc(WORKFLOWS "GetRun", &agentz__v1__get_run_request__descriptor,
        &agentz__v1__workflow_run__descriptor, (void **)&r, "{\"id\":\"%s\"}", id);
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

/* Waits until the fake has a request for model in flight and the task runs. */
static int wait_running(const char *task_id, const char *model, double timeout_s)
{
    double until = now_s() + timeout_s;
    while (now_s() < until) {
        Agentz__V1__Task *t = get_task(task_id);
        int running = t && (int)t->status == T_RUNNING;
        free_msg(t);
        if (running && fakellm_count(fake, model) >= 1 && fakellm_in_flight(fake) >= 1) return 1;
        usleep(50 * 1000);
    }
    return 0;
}

static int wait_in_flight_zero(double timeout_s)
{
    double until = now_s() + timeout_s;
    while (fakellm_in_flight(fake) != 0) {
        if (now_s() > until) return 0;
        usleep(20 * 1000);
    }
    return 1;
}

/* ---------------------------------------------------------------- kill -9 */

static void test_kill9_worker_mid_task(void)
{
    char m1[96], m2[96], a1[40], a2[40];
    snprintf(m1, sizeof m1, "failover-1-%s", uniq);
    snprintf(m2, sizeof m2, "failover-2-%s", uniq);
    fakellm_reply rs[2];
    memset(rs, 0, sizeof rs);
    rs[0].kind = FAKELLM_HANG; /* the first try never answers: its worker dies meanwhile */
    rs[1].kind = FAKELLM_TEXT;
    rs[1].text = "STEP1-DONE";
    fakellm_on(fake, m1, NULL, rs, 2);
    rs[0].kind = FAKELLM_TEXT;
    rs[0].text = "STEP2-DONE";
    fakellm_on(fake, m2, NULL, rs, 1);
    CU_ASSERT_EQUAL_FATAL(make_agent(a1, "First Stepper", m1), OK);
    CU_ASSERT_EQUAL_FATAL(make_agent(a2, "Second Stepper", m2), OK);
    Agentz__V1__Workflow *wf = NULL;
    int st = rpc(WORKFLOWS "CreateWorkflow", &agentz__v1__create_workflow_request__descriptor,
                 &agentz__v1__workflow__descriptor, (void **)&wf,
                 "{\"workflow\":{\"name\":\"failover-%s\",\"steps\":[{\"id\":\"one\",\"agentId\":"
                 "\"%s\",\"description\":\"Step one\",\"expectedOutput\":\"x\"},{\"id\":\"two\","
                 "\"agentId\":\"%s\",\"description\":\"Step two\",\"expectedOutput\":\"y\"}]}}",
                 uniq, a1, a2);
    CU_ASSERT_EQUAL_FATAL(st, OK);
    Agentz__V1__WorkflowRun *run = NULL;
    st = rpc(WORKFLOWS "StartRun", &agentz__v1__start_run_request__descriptor,
             &agentz__v1__workflow_run__descriptor, (void **)&run, "{\"workflowId\":\"%s\"}", wf->id);
    free_msg(wf);
    CU_ASSERT_EQUAL_FATAL(st, OK);
    char run_id[40], task_id[40];
    snprintf(run_id, sizeof run_id, "%s", run->id);
    snprintf(task_id, sizeof task_id, "%s", run->n_steps ? run->steps[0]->task_id : "");
    free_msg(run);
    CU_ASSERT_EQUAL_FATAL(strlen(task_id), 36);

    /* The only worker (w1) is in the middle of step one's model call. */
    int running = wait_running(task_id, m1, 30);
    if (!running) dump_logs();
    CU_ASSERT_TRUE_FATAL(running);
    Agentz__V1__ListTaskAttemptsResponse *at = attempts(task_id);
    char lost_worker[256] = "";
    if (at && at->n_attempts == 1) snprintf(lost_worker, sizeof lost_worker, "%s", at->attempts[0]->worker);
    free_msg(at);
    CU_ASSERT_STRING_NOT_EQUAL(lost_worker, "");

    /* kill -9: no hand-back, no goodbye. The fake sees the connection go. */
    double killed_at = now_s();
    CU_ASSERT_EQUAL(az_itest_stop(&w1, SIGKILL, 10), 128 + SIGKILL);
    CU_ASSERT_TRUE(wait_in_flight_zero(2));
    /* A fresh worker joins; the step runs again once the dead worker's lease (3 s) expired. */
    static const char *const worker_args[] = {"--roles", "worker", NULL};
    CU_ASSERT_EQUAL_FATAL(az_itest_start_on(&w2, "engine-failover-w2", api.data_dir, worker_args), 0);

    run = NULL;
    double until = now_s() + 40;
    for (;;) {
        free_msg(run);
        run = get_run(run_id);
        if (!run || terminal_run((int)run->status) || now_s() > until)
            break;
        usleep(100 * 1000);
    }
    double recovered = now_s() - killed_at;
    int ok = run && (int)run->status == R_SUCCEEDED;
    if (!ok) {
        show("run after kill -9", run);
        dump_logs();
    }
    CU_ASSERT_TRUE(ok);
    if (ok) {
        CU_ASSERT_STRING_EQUAL(run->output->raw, "STEP2-DONE");
        CU_ASSERT_STRING_EQUAL(run->steps[0]->output->raw, "STEP1-DONE");
        CU_ASSERT_EQUAL(run->steps[0]->attempt, 2);
        /* Not before the lease could expire, and not much after. */
        CU_ASSERT_TRUE(recovered >= 2.5);
        CU_ASSERT_TRUE(recovered <= 20);
    }
    free_msg(run);

    /* Exactly one successful outcome; the lost attempt is recorded against the dead worker. */
    at = attempts(task_id);
    CU_ASSERT_PTR_NOT_NULL_FATAL(at);
    CU_ASSERT_EQUAL(at->n_attempts, 2);
    int succeeded = 0;
    for (size_t i = 0; i < at->n_attempts; i++) succeeded += (int)at->attempts[i]->status == T_SUCCEEDED;
    CU_ASSERT_EQUAL(succeeded, 1);
    if (at->n_attempts == 2) {
        CU_ASSERT_EQUAL(at->attempts[0]->status, T_FAILED);
        CU_ASSERT_PTR_NOT_NULL(at->attempts[0]->error);
        if (at->attempts[0]->error) {
            CU_ASSERT_STRING_EQUAL(at->attempts[0]->error->type, "worker_lost");
            CU_ASSERT_TRUE(at->attempts[0]->error->retryable);
        }
        CU_ASSERT_STRING_EQUAL(at->attempts[0]->worker, lost_worker);
        CU_ASSERT_EQUAL(at->attempts[1]->status, T_SUCCEEDED);
        CU_ASSERT_STRING_NOT_EQUAL(at->attempts[1]->worker, lost_worker);
    } else {
        show("attempts", at);
    }
    free_msg(at);
    CU_ASSERT_EQUAL(fakellm_count(fake, m1), 2);
    CU_ASSERT_EQUAL(fakellm_count(fake, m2), 1);

    /* The dead worker never reported its task's end; the reaper did, so the agent whose task
     * was lost is idle again, not busy forever. */
    Agentz__V1__Agent *ag = NULL;
    CU_ASSERT_EQUAL(rpc(AGENTS "GetAgent", &agentz__v1__get_agent_request__descriptor,
                        &agentz__v1__agent__descriptor, (void **)&ag, "{\"id\":\"%s\"}", a1),
                    OK);
    if (ag) CU_ASSERT_EQUAL(ag->status, AGENTZ__V1__AGENT_STATUS__AGENT_STATUS_IDLE);
    free_msg(ag);
}

/* ---------------------------------------------------------------- graceful hand-back */

static void test_graceful_stop_hands_back(void)
{
    char m[96], a[40], t[40];
    snprintf(m, sizeof m, "handback-%s", uniq);
    fakellm_reply rs[2];
    memset(rs, 0, sizeof rs);
    rs[0].kind = FAKELLM_HANG;
    rs[1].kind = FAKELLM_TEXT;
    rs[1].text = "HANDED-BACK-DONE";
    fakellm_on(fake, m, NULL, rs, 2);
    CU_ASSERT_EQUAL_FATAL(make_agent(a, "Handed Back", m), OK);
    Agentz__V1__Task *task = NULL;
    int st = rpc(TASKS "CreateTask", &agentz__v1__create_task_request__descriptor,
                 &agentz__v1__task__descriptor, (void **)&task,
                 "{\"task\":{\"description\":\"Outlive your worker\",\"expectedOutput\":\"x\","
                 "\"agentId\":\"%s\",\"retryPolicy\":{\"maxAttempts\":1}}}",
                 a);
    CU_ASSERT_EQUAL_FATAL(st, OK);
    snprintf(t, sizeof t, "%s", task->id);
    free_msg(task);
    /* w2 (the only worker) runs it; then w3 joins and w2 is stopped gracefully. */
    int running = wait_running(t, m, 30);
    if (!running) dump_logs();
    CU_ASSERT_TRUE_FATAL(running);
    static const char *const worker_args[] = {"--roles", "worker", NULL};
    CU_ASSERT_EQUAL_FATAL(az_itest_start_on(&w3, "engine-failover-w3", api.data_dir, worker_args), 0);
    double stopped_at = now_s();
    CU_ASSERT_EQUAL(az_itest_stop(&w2, SIGTERM, 30), 0);
    /* Handed back at once (no lease wait), and not counted against max_attempts 1. */
    task = NULL;
    double until = now_s() + 30;
    for (;;) {
        free_msg(task);
        task = get_task(t);
        if (!task || terminal_task((int)task->status) || now_s() > until)
            break;
        usleep(50 * 1000);
    }
    double took = now_s() - stopped_at;
    int ok = task && (int)task->status == T_SUCCEEDED;
    if (!ok) {
        show("task after graceful stop", task);
        dump_logs();
    }
    CU_ASSERT_TRUE(ok);
    if (ok) CU_ASSERT_STRING_EQUAL(task->output->raw, "HANDED-BACK-DONE");
    free_msg(task);
    Agentz__V1__ListTaskAttemptsResponse *at = attempts(t);
    CU_ASSERT_PTR_NOT_NULL_FATAL(at);
    CU_ASSERT_EQUAL(at->n_attempts, 2);
    if (at->n_attempts == 2) {
        CU_ASSERT_EQUAL(at->attempts[0]->status, T_CANCELLED);
        if (at->attempts[0]->error) CU_ASSERT_STRING_EQUAL(at->attempts[0]->error->type, "worker_shutdown");
        CU_ASSERT_PTR_NOT_NULL(at->attempts[0]->error);
        CU_ASSERT_EQUAL(at->attempts[1]->status, T_SUCCEEDED);
        CU_ASSERT_STRING_NOT_EQUAL(at->attempts[1]->worker, at->attempts[0]->worker);
    } else {
        show("attempts", at);
    }
    free_msg(at);
    /* The shutdown grace (1 s) plus a pick-up; far less than waiting for a lease would take
     * after a longer grace. */
    if (took > 8) fprintf(stderr, "\n  hand-back took %.2f s\n", took);
    CU_ASSERT_TRUE(took <= 8);
}

/* ---------------------------------------------------------------- suite */

static int suite_init(void)
{
    snprintf(uniq, sizeof uniq, "%s", az_itest_unique());
    fake = fakellm_start();
    if (!fake) return -1;
    static const char *const unset[] = {"AGENTZ_LLM_BASE_URL", "AGENTZ_LLM_API_KEY", "AGENTZ_LLM_MODEL",
                                        "AGENTZ_LLM_PROVIDER", "OPENAI_API_KEY", "OPENAI_BASE_URL",
                                        "ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL",
                                        "AGENTZ_ALLOW_PRIVATE_NETWORKS"};
    for (size_t i = 0; i < sizeof unset / sizeof *unset; i++) unsetenv(unset[i]);
    setenv("AGENTZ_RECONCILE_INTERVAL", "200ms", 1);
    setenv("AGENTZ_TASK_LEASE_SECONDS", "3", 1);
    setenv("AGENTZ_WORKER_SHUTDOWN_GRACE_MS", "1000", 1);
    static const char *const api_args[] = {"--roles", "api", NULL};
    static const char *const worker_args[] = {"--roles", "worker", NULL};
    if (az_itest_start(&api, "engine-failover", api_args) != 0) return -1;
    if (az_itest_start_on(&w1, "engine-failover-w1", api.data_dir, worker_args) != 0) {
        az_itest_stop(&api, SIGTERM, 30);
        return -1;
    }
    conn = az_itest_connect(&api);
    return 0;
}

static int suite_clean(void)
{
    az_conn_free(conn);
    int rc = 0;
    az_itest_server *workers[] = {&w1, &w2, &w3};
    for (int i = 0; i < 3; i++) {
        if (workers[i]->pid <= 0) continue;
        int wrc = az_itest_stop(workers[i], SIGTERM, 30);
        if (wrc != 0) {
            fprintf(stderr, "worker agentzd exited with %d\n", wrc);
            az_itest_dump_log(workers[i], 30);
            rc = -1;
        }
    }
    /* Workers first: the API process owns the embedded PostgreSQL and Redis. */
    int arc = az_itest_stop(&api, SIGTERM, 30);
    if (arc != 0) {
        fprintf(stderr, "agentzd exited with %d\n", arc);
        az_itest_dump_log(&api, 30);
        rc = -1;
    }
    fakellm_stop(fake);
    return rc;
}

int main(void)
{
    if (CU_initialize_registry() != CUE_SUCCESS) return 1;
    CU_pSuite s = CU_add_suite("engine failover", suite_init, suite_clean);
    CU_add_test(s, "kill -9 of a worker mid-task: the run completes", test_kill9_worker_mid_task);
    CU_add_test(s, "graceful stop hands the task back", test_graceful_stop_hands_back);
    return az_itest_run_cunit();
}
