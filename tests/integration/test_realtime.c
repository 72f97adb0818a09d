/* Real time end to end (issue 5): the real agentzd (API and worker) runs workflows and tasks
 * against the scripted fake LLM while gRPC watchers check the contract of WatchRun, WatchTask,
 * WatchAgents and StreamMetrics: order and completeness of a run's events, resume after a
 * disconnect at several points, 200 concurrent watchers, a slow consumer, token deltas equal
 * to the output, busy -> idle, heartbeats, signed webhooks, errors and shutdown. Every check is
 * against the protos and the issue, never the implementation. The Redis restart runs in a
 * second suite with its own agentzd. */
#include <CUnit/Basic.h>
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>
#include <jansson.h>
#include <netinet/in.h>
#include <openssl/hmac.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "agentz/v1/agent.pb-c.h"
#include "agentz/v1/system.pb-c.h"
#include "agentz/v1/task.pb-c.h"
#include "agentz/v1/workflow.pb-c.h"
#include "core/pbjson.h"
#include "fakellm.h"
#include "harness.h"

#define AGENTS "/agentz.v1.AgentService/"
#define TASKS "/agentz.v1.TaskService/"
#define WORKFLOWS "/agentz.v1.WorkflowService/"
#define RPC_LINE "msg=\"rpc\""
#define WATCH_MS 90000 /* deadline of every watch stream: a hung stream fails, never hangs */

enum { OK = 0, CANCELLED = 1, INVALID = 3, DEADLINE = 4, NOT_FOUND = 5, EXHAUSTED = 8,
       UNAVAILABLE = 14 };
enum {
    T_UNSPEC = AGENTZ__V1__TASK_STATUS__TASK_STATUS_UNSPECIFIED,
    T_RUNNING = AGENTZ__V1__TASK_STATUS__TASK_STATUS_RUNNING,
    T_SUCCEEDED = AGENTZ__V1__TASK_STATUS__TASK_STATUS_SUCCEEDED,
    T_FAILED = AGENTZ__V1__TASK_STATUS__TASK_STATUS_FAILED,
    T_CANCELLED = AGENTZ__V1__TASK_STATUS__TASK_STATUS_CANCELLED,
    R_UNSPEC = AGENTZ__V1__RUN_STATUS__RUN_STATUS_UNSPECIFIED,
    R_SUCCEEDED = AGENTZ__V1__RUN_STATUS__RUN_STATUS_SUCCEEDED,
    R_FAILED = AGENTZ__V1__RUN_STATUS__RUN_STATUS_FAILED,
    R_CANCELLED = AGENTZ__V1__RUN_STATUS__RUN_STATUS_CANCELLED,
    A_IDLE = AGENTZ__V1__AGENT_STATUS__AGENT_STATUS_IDLE,
    A_BUSY = AGENTZ__V1__AGENT_STATUS__AGENT_STATUS_BUSY,
};
#define P_RUN AGENTZ__V1__EVENT__PAYLOAD_RUN_STATUS
#define P_TASK AGENTZ__V1__EVENT__PAYLOAD_TASK_STATUS
#define P_AGENT AGENTZ__V1__EVENT__PAYLOAD_AGENT_STATUS
#define P_TOKEN AGENTZ__V1__EVENT__PAYLOAD_TOKEN
#define P_HEARTBEAT AGENTZ__V1__EVENT__PAYLOAD_HEARTBEAT
#define P_METRICS AGENTZ__V1__EVENT__PAYLOAD_METRICS

static az_itest_server srv;
static az_conn *conn;
static fakellm *fake;
static char last_msg[AZ_MSG_MAX];
static char uniq[40];
static char secret[64];
static int server_stopped;

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

/* Calls method with a request given as proto3 JSON (printf-style); the response (when out is
 * not NULL) is the caller's. Returns the gRPC status; last_msg holds the details. */
static int rpc(const char *method, const ProtobufCMessageDescriptor *in,
               const ProtobufCMessageDescriptor *out_desc, void **out, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
static int rpc(const char *method, const ProtobufCMessageDescriptor *in,
               const ProtobufCMessageDescriptor *out_desc, void **out, const char *fmt, ...)
{
    static char json[65536];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(json, sizeof json, fmt, ap);
    va_end(ap);
    if (out) *out = NULL;
    ProtobufCMessage *req = NULL;
    char msg[AZ_MSG_MAX];
    if (az_pbjson_decode(in, json, strlen(json), NULL, &req, msg) != AZ_OK) {
        fprintf(stderr, "\n  test bug: request does not decode: %s\n  %.500s\n", msg, json);
        return -1;
    }
    ProtobufCMessage *resp = NULL;
    int status = -1;
    msg[0] = '\0';
    az_conn_unary(conn, method, req, out_desc, 20000, NULL, &resp, &status, msg);
    snprintf(last_msg, sizeof last_msg, "%s", msg);
    protobuf_c_message_free_unpacked(req, NULL);
    if (out) *out = resp;
    else free_msg(resp);
    return status;
}

static void show(const char *what, const void *m)
{
    char *json = NULL, msg[AZ_MSG_MAX];
    if (m && az_pbjson_encode(m, 0, &json, msg) == AZ_OK) fprintf(stderr, "\n  %s: %s\n", what, json);
    else fprintf(stderr, "\n  %s: (none)\n", what);
    free(json);
}

static const char *model(const char *tag)
{
    static char ring[32][96];
    static int next;
    char *out = ring[next++ % 32];
    snprintf(out, 96, "%s-%s", tag, uniq);
    return out;
}

static int make_agent(char id[40], const char *role, const char *m)
{
    Agentz__V1__Agent *a = NULL;
    int st = rpc(AGENTS "CreateAgent", &agentz__v1__create_agent_request__descriptor,
                 &agentz__v1__agent__descriptor, (void **)&a,
                 "{\"agent\":{\"role\":\"%s %s\",\"goal\":\"Goal\",\"backstory\":\"Backstory\","
                 "\"llm\":{\"provider\":\"openai\",\"model\":\"%s\",\"baseUrl\":\"%s\"}}}",
                 role, uniq, m, fakellm_base_url(fake));
    if (st == OK) snprintf(id, 40, "%s", a->id);
    else fprintf(stderr, "\n  cannot create agent %s: %d %s\n", role, st, last_msg);
    free_msg(a);
    return st;
}

/* extra: more JSON fields of the task ("" = none). */
static int make_task(char id[40], const char *agent, const char *description, const char *extra)
{
    Agentz__V1__Task *t = NULL;
    int st = rpc(TASKS "CreateTask", &agentz__v1__create_task_request__descriptor,
                 &agentz__v1__task__descriptor, (void **)&t,
                 "{\"task\":{\"description\":\"%s\",\"expectedOutput\":\"Some text\","
                 "\"agentId\":\"%s\"%s%s}}",
                 description, agent, *extra ? "," : "", extra);
    if (st == OK) snprintf(id, 40, "%s", t->id);
    else fprintf(stderr, "\n  cannot create task: %d %s\n", st, last_msg);
    free_msg(t);
    return st;
}

/* Creates a workflow (process, steps as a JSON array text, extra fields) and starts a run of it;
 * the run id into run_id. */
static int start_run(char run_id[40], const char *process, const char *steps, const char *extra)
{
    Agentz__V1__Workflow *wf = NULL;
    int st = rpc(WORKFLOWS "CreateWorkflow", &agentz__v1__create_workflow_request__descriptor,
                 &agentz__v1__workflow__descriptor, (void **)&wf,
                 "{\"workflow\":{\"name\":\"rt-%s-%s\",\"process\":\"%s\",\"steps\":%s%s%s}}",
                 az_itest_unique(), uniq, process, steps, *extra ? "," : "", extra);
    if (st != OK) {
        fprintf(stderr, "\n  CreateWorkflow: %d %s\n", st, last_msg);
        return st;
    }
    Agentz__V1__WorkflowRun *run = NULL;
    st = rpc(WORKFLOWS "StartRun", &agentz__v1__start_run_request__descriptor,
             &agentz__v1__workflow_run__descriptor, (void **)&run, "{\"workflowId\":\"%s\"}", wf->id);
    free_msg(wf);
    if (st == OK) snprintf(run_id, 40, "%s", run->id);
    else fprintf(stderr, "\n  StartRun: %d %s\n", st, last_msg);
    free_msg(run);
    return st;
}

/* A sequential workflow of n steps for agent, step i's description "STEP-<i> <tag>". */
static int start_sequential(char run_id[40], const char *agent, int n, const char *tag)
{
    char steps[4096];
    size_t len = 0;
    len += (size_t)snprintf(steps + len, sizeof steps - len, "[");
    for (int i = 1; i <= n; i++)
        len += (size_t)snprintf(steps + len, sizeof steps - len,
                                "%s{\"id\":\"s%d\",\"agentId\":\"%s\",\"description\":\"STEP-%d %s\","
                                "\"expectedOutput\":\"text\"}",
                                i > 1 ? "," : "", i, agent, i, tag);
    snprintf(steps + len, sizeof steps - len, "]");
    return start_run(run_id, "PROCESS_SEQUENTIAL", steps, "");
}

static Agentz__V1__WorkflowRun *get_run(const char *id)
{
    Agentz__V1__WorkflowRun *r = NULL;
    rpc(WORKFLOWS "GetRun", &agentz__v1__get_run_request__descriptor,
        &agentz__v1__workflow_run__descriptor, (void **)&r, "{\"id\":\"%s\"}", id);
    return r;
}

static Agentz__V1__Task *get_task(const char *id)
{
    Agentz__V1__Task *t = NULL;
    rpc(TASKS "GetTask", &agentz__v1__get_task_request__descriptor, &agentz__v1__task__descriptor,
        (void **)&t, "{\"id\":\"%s\"}", id);
    return t;
}

static int terminal_run(int s) { return s == R_SUCCEEDED || s == R_FAILED || s == R_CANCELLED; }
static int terminal_task(int s) { return s == T_SUCCEEDED || s == T_FAILED || s == T_CANCELLED; }

static Agentz__V1__WorkflowRun *wait_run(const char *id, double timeout_s)
{
    double until = now_s() + timeout_s;
    for (;;) {
        Agentz__V1__WorkflowRun *r = get_run(id);
        if (!r || terminal_run(r->status) || now_s() > until) {
            if (!r || !terminal_run(r->status)) {
                fprintf(stderr, "\n  run %s not finished within %.0f s", id, timeout_s);
                show("run", r);
                az_itest_dump_log_except(&srv, 20, RPC_LINE);
            }
            return r;
        }
        free_msg(r);
        usleep(50 * 1000);
    }
}

static Agentz__V1__Task *wait_task(const char *id, double timeout_s)
{
    double until = now_s() + timeout_s;
    for (;;) {
        Agentz__V1__Task *t = get_task(id);
        if (!t || terminal_task(t->status) || now_s() > until) {
            if (!t || !terminal_task(t->status)) {
                fprintf(stderr, "\n  task %s not finished within %.0f s", id, timeout_s);
                show("task", t);
            }
            return t;
        }
        free_msg(t);
        usleep(50 * 1000);
    }
}

static void text_reply(fakellm_reply *r, const char *text, int delay_ms)
{
    memset(r, 0, sizeof *r);
    r->kind = FAKELLM_TEXT;
    r->text = text;
    r->delay_ms = delay_ms;
}

/* ---------------------------------------------------------------- event checks */

static const char *short_id(const char *id)
{
    return id && strlen(id) >= 8 ? id + strlen(id) - 8 : (id ? id : "");
}

/* One line per event for failure reports. */
static void describe(const Agentz__V1__Event *e, char *buf, size_t len)
{
    int n = snprintf(buf, len, "#%lld run=%s task=%s agent=%s step=%s ", (long long)e->sequence,
                     short_id(e->run_id), short_id(e->task_id), short_id(e->agent_id),
                     e->step_id ? e->step_id : "");
    if (n < 0 || (size_t)n >= len) return;
    buf += n;
    len -= (size_t)n;
    switch (e->payload_case) {
    case P_RUN: snprintf(buf, len, "run %d->%d", e->run_status->from, e->run_status->to); break;
    case P_TASK:
        snprintf(buf, len, "task %d->%d attempt %d", e->task_status->from, e->task_status->to,
                 e->task_status->attempt);
        break;
    case P_AGENT: snprintf(buf, len, "agent %d->%d", e->agent_status->from, e->agent_status->to); break;
    case P_TOKEN: snprintf(buf, len, "token \"%.40s\"", e->token->text); break;
    case P_HEARTBEAT: snprintf(buf, len, "heartbeat"); break;
    default: snprintf(buf, len, "payload %d", (int)e->payload_case); break;
    }
}

static void dump_events(const char *what, const az_itest_watch *w)
{
    fprintf(stderr, "\n  %s: %zu messages (%zu durable), ended=%d status %d %s\n", what, w->n,
            w->durable, w->ended, w->status, w->msg);
    size_t shown = 0;
    for (size_t i = 0; i < w->n && shown < 120; i++) {
        if (w->ev[i]->payload_case == P_HEARTBEAT || w->ev[i]->payload_case == P_TOKEN) continue;
        char line[256];
        describe(w->ev[i], line, sizeof line);
        fprintf(stderr, "    %s\n", line);
        shown++;
    }
}

/* The durable events of w must carry after+1, after+2, ... with no gap and no repeat; every
 * other message sequence 0. */
static int check_gapfree(int line, const az_itest_watch *w, int64_t after, const char *what)
{
    int64_t want = after + 1;
    for (size_t i = 0; i < w->n; i++) {
        const Agentz__V1__Event *e = w->ev[i];
        if (e->payload_case == P_HEARTBEAT || e->payload_case == P_TOKEN ||
            e->payload_case == P_METRICS) {
            if (e->sequence != 0) {
                fprintf(stderr, "\n  line %d: %s: ephemeral message %zu has sequence %lld", line,
                        what, i, (long long)e->sequence);
                dump_events(what, w);
                CU_FAIL("ephemeral event with a sequence");
                return 0;
            }
            continue;
        }
        if (e->sequence != want) {
            fprintf(stderr, "\n  line %d: %s: message %zu has sequence %lld, want %lld", line, what,
                    i, (long long)e->sequence, (long long)want);
            dump_events(what, w);
            CU_FAIL("sequences are not gap-free and increasing");
            return 0;
        }
        if (!e->time) {
            fprintf(stderr, "\n  line %d: %s: event #%lld has no time", line, what, (long long)want);
            CU_FAIL("event without time");
        }
        want++;
    }
    return 1;
}
#define CHECK_GAPFREE(w, after, what) check_gapfree(__LINE__, (w), (after), (what))

static int check_ended_ok(int line, const az_itest_watch *w, const char *what)
{
    int ok = w->ended && w->status == OK;
    if (!ok) {
        fprintf(stderr, "\n  line %d: %s ended=%d with status %d (%s), want OK", line, what,
                w->ended, w->status, w->msg);
        dump_events(what, w);
        az_itest_dump_log_except(&srv, 20, RPC_LINE);
    }
    CU_ASSERT_TRUE(ok);
    return ok;
}
#define CHECK_ENDED_OK(w, what) check_ended_ok(__LINE__, (w), (what))

/* Packed bytes of an event, for comparing a live stream with a replay. */
static int same_event(const Agentz__V1__Event *a, const Agentz__V1__Event *b)
{
    size_t la = protobuf_c_message_get_packed_size(&a->base);
    size_t lb = protobuf_c_message_get_packed_size(&b->base);
    if (la != lb) return 0;
    uint8_t *pa = malloc(la + 1), *pb = malloc(lb + 1);
    protobuf_c_message_pack(&a->base, pa);
    protobuf_c_message_pack(&b->base, pb);
    int same = memcmp(pa, pb, la) == 0;
    free(pa);
    free(pb);
    return same;
}

/* The durable events of a and b are the same events, in the same order. */
static int check_same_history(int line, const az_itest_watch *a, const az_itest_watch *b,
                              const char *what)
{
    size_t i = 0, j = 0;
    for (;;) {
        while (i < a->n && a->ev[i]->sequence == 0) i++;
        while (j < b->n && b->ev[j]->sequence == 0) j++;
        if (i == a->n || j == b->n) break;
        if (!same_event(a->ev[i], b->ev[j])) {
            fprintf(stderr, "\n  line %d: %s: durable events differ at sequence %lld / %lld", line,
                    what, (long long)a->ev[i]->sequence, (long long)b->ev[j]->sequence);
            show("one", a->ev[i]);
            show("other", b->ev[j]);
            CU_FAIL("histories differ");
            return 0;
        }
        i++;
        j++;
    }
    if (a->durable != b->durable) {
        fprintf(stderr, "\n  line %d: %s: %zu durable events vs %zu", line, what, a->durable,
                b->durable);
        dump_events("one", a);
        dump_events("other", b);
        CU_FAIL("histories differ in length");
        return 0;
    }
    return 1;
}
#define CHECK_SAME_HISTORY(a, b, what) check_same_history(__LINE__, (a), (b), (what))

/* Index in w of the first durable task_status event of task with to == status; -1 if none. */
static long find_task_event(const az_itest_watch *w, const char *task_id, int to)
{
    for (size_t i = 0; i < w->n; i++) {
        const Agentz__V1__Event *e = w->ev[i];
        if (e->payload_case == P_TASK && e->task_id && strcmp(e->task_id, task_id) == 0 &&
            (int)e->task_status->to == to)
            return (long)i;
    }
    return -1;
}

/* The task's status events in w form an unbroken chain: the first from UNSPECIFIED (the
 * task's creation), each from = the previous to, through RUNNING to want_last; each carries
 * run_id and step_id when given. */
static int check_task_chain(int line, const az_itest_watch *w, const char *task_id,
                            const char *run_id, const char *step_id, int want_last)
{
    int prev = -1, running = 0, count = 0, ok = 1;
    for (size_t i = 0; i < w->n; i++) {
        const Agentz__V1__Event *e = w->ev[i];
        if (e->payload_case != P_TASK || !e->task_id || strcmp(e->task_id, task_id) != 0) continue;
        int from = (int)e->task_status->from, to = (int)e->task_status->to;
        if (count == 0 && from != T_UNSPEC) ok = 0;
        if (count > 0 && from != prev) ok = 0;
        if (run_id && (!e->run_id || strcmp(e->run_id, run_id) != 0)) ok = 0;
        if (step_id && (!e->step_id || strcmp(e->step_id, step_id) != 0)) ok = 0;
        if (to == T_RUNNING) running = 1;
        prev = to;
        count++;
    }
    if (!count || prev != want_last || !running) ok = 0;
    if (!ok) {
        fprintf(stderr, "\n  line %d: task %s (step %s): status events are not a chain from "
                "UNSPECIFIED through RUNNING to %d with run and step set", line, task_id,
                step_id ? step_id : "-", want_last);
        dump_events("events", w);
    }
    CU_ASSERT_TRUE(ok);
    return ok;
}

/* The run's status events: a chain from UNSPECIFIED to want_last, which is the last durable
 * run_status event of w. Returns the index of the terminal event (-1 when missing). */
static long check_run_chain(int line, const az_itest_watch *w, const char *run_id, int want_last)
{
    int prev = -1, count = 0, ok = 1;
    long last = -1;
    for (size_t i = 0; i < w->n; i++) {
        const Agentz__V1__Event *e = w->ev[i];
        if (e->payload_case != P_RUN) continue;
        if (!e->run_id || strcmp(e->run_id, run_id) != 0) ok = 0;
        int from = (int)e->run_status->from, to = (int)e->run_status->to;
        if (count == 0 && from != R_UNSPEC) ok = 0;
        if (count > 0 && from != prev) ok = 0;
        prev = to;
        last = (long)i;
        count++;
    }
    if (!count || prev != want_last) ok = 0;
    if (!ok) {
        fprintf(stderr, "\n  line %d: run %s: status events are not a chain from UNSPECIFIED to %d",
                line, run_id, want_last);
        dump_events("events", w);
    }
    CU_ASSERT_TRUE(ok);
    return ok ? last : -1;
}

/* ---------------------------------------------------------------- 1. order and completeness */

static void test_order_completeness(void)
{
    const char *m = model("order");
    fakellm_reply r;
    text_reply(&r, "OUT-1", 400);
    fakellm_on(fake, m, "STEP-1", &r, 1);
    text_reply(&r, "OUT-2", 400);
    fakellm_on(fake, m, "STEP-2", &r, 1);
    text_reply(&r, "OUT-3", 400);
    fakellm_on(fake, m, "STEP-3", &r, 1);
    char agent[40], run_id[40];
    CU_ASSERT_EQUAL_FATAL(make_agent(agent, "Orderly Writer", m), OK);
    CU_ASSERT_EQUAL_FATAL(start_sequential(run_id, agent, 3, "order"), OK);

    az_itest_watch w = {0};
    CU_ASSERT_EQUAL_FATAL(az_itest_watch_run(&w, conn, run_id, 0, 0, WATCH_MS), 0);
    az_itest_watch_read(&w, 0);
    CHECK_ENDED_OK(&w, "WatchRun from 0");
    CHECK_GAPFREE(&w, 0, "WatchRun from 0");

    Agentz__V1__WorkflowRun *run = wait_run(run_id, 30);
    CU_ASSERT_PTR_NOT_NULL_FATAL(run);
    CU_ASSERT_EQUAL(run->status, R_SUCCEEDED);
    CU_ASSERT_EQUAL_FATAL(run->n_steps, 3);
    long term = check_run_chain(__LINE__, &w, run_id, R_SUCCEEDED);
    long prev_done = -1;
    for (size_t i = 0; i < run->n_steps; i++) {
        const char *tid = run->steps[i]->task_id;
        CU_ASSERT_STRING_NOT_EQUAL_FATAL(tid, "");
        check_task_chain(__LINE__, &w, tid, run_id, run->steps[i]->step_id, T_SUCCEEDED);
        long started = find_task_event(&w, tid, T_RUNNING);
        long done = find_task_event(&w, tid, T_SUCCEEDED);
        /* Sequential: step i+1 starts after step i succeeded; the run ends after every step. */
        CU_ASSERT_TRUE(started > prev_done);
        CU_ASSERT_TRUE(done > started);
        CU_ASSERT_TRUE(term > done);
        prev_done = done;
    }
    /* Every durable event of the stream concerns this run. */
    for (size_t i = 0; i < w.n; i++)
        if (w.ev[i]->sequence > 0 && (!w.ev[i]->run_id || strcmp(w.ev[i]->run_id, run_id) != 0)) {
            char line[256];
            describe(w.ev[i], line, sizeof line);
            fprintf(stderr, "\n  event of another run in WatchRun: %s\n", line);
            CU_FAIL("event of another run");
        }
    /* Nothing of the run's own history after its terminal event was cut off: a replay of the
     * finished run is the same history, and ends with OK. */
    az_itest_watch again = {0};
    CU_ASSERT_EQUAL(az_itest_watch_run(&again, conn, run_id, 0, 0, WATCH_MS), 0);
    az_itest_watch_read(&again, 0);
    CHECK_ENDED_OK(&again, "WatchRun replay of a finished run");
    CHECK_SAME_HISTORY(&w, &again, "live stream vs replay");
    az_itest_watch_free(&again);
    az_itest_watch_free(&w);
    free_msg(run);
}

/* ---------------------------------------------------------------- 2. resume */

static void test_resume(void)
{
    const char *m = model("resume");
    fakellm_reply r;
    text_reply(&r, "resumed output", 600);
    fakellm_on(fake, m, NULL, &r, 1);
    char agent[40], run_id[40];
    CU_ASSERT_EQUAL_FATAL(make_agent(agent, "Resumable Analyst", m), OK);
    CU_ASSERT_EQUAL_FATAL(start_sequential(run_id, agent, 3, "resume"), OK);

    /* Cut the stream after 1, 2, 3, 1, 2, 3, ... durable events and resume from the last seen
     * sequence each time, while the run is live. */
    az_itest_watch u = {0};
    int cuts = 0;
    for (int k = 1;; k = k % 3 + 1) {
        CU_ASSERT_EQUAL_FATAL(az_itest_watch_run(&u, conn, run_id, u.last_seq, 0, WATCH_MS), 0);
        if (az_itest_watch_read(&u, u.durable + (size_t)k)) break;
        az_itest_watch_cancel(&u);
        if (++cuts > 300) {
            CU_FAIL("the run did not end within 300 reconnects");
            break;
        }
    }
    CU_ASSERT_TRUE(cuts >= 3);
    CHECK_ENDED_OK(&u, "resumed WatchRun");
    CHECK_GAPFREE(&u, 0, "union of the resumed streams");

    Agentz__V1__WorkflowRun *run = wait_run(run_id, 30);
    CU_ASSERT_PTR_NOT_NULL_FATAL(run);
    CU_ASSERT_EQUAL(run->status, R_SUCCEEDED);
    free_msg(run);
    az_itest_watch full = {0};
    CU_ASSERT_EQUAL(az_itest_watch_run(&full, conn, run_id, 0, 0, WATCH_MS), 0);
    az_itest_watch_read(&full, 0);
    CHECK_ENDED_OK(&full, "WatchRun replay");
    CHECK_SAME_HISTORY(&u, &full, "union of resumed streams vs full replay");
    check_run_chain(__LINE__, &full, run_id, R_SUCCEEDED);

    /* A finished run replays from any point, and ends with OK; after the last sequence it
     * sends nothing durable and still ends. */
    int64_t n = (int64_t)full.durable;
    int64_t points[] = {1, n / 2, n - 1, n};
    for (size_t p = 0; p < sizeof points / sizeof *points; p++) {
        az_itest_watch part = {0};
        CU_ASSERT_EQUAL(az_itest_watch_run(&part, conn, run_id, points[p], 0, WATCH_MS), 0);
        az_itest_watch_read(&part, 0);
        CHECK_ENDED_OK(&part, "WatchRun replay from a point");
        CHECK_GAPFREE(&part, points[p], "WatchRun replay from a point");
        CU_ASSERT_EQUAL((int64_t)part.durable, n - points[p]);
        az_itest_watch_free(&part);
    }
    az_itest_watch_free(&full);
    az_itest_watch_free(&u);
}

/* ---------------------------------------------------------------- 4. 200 watchers */

#define WATCHERS 200
#define WATCH_CONNS 10

typedef struct watcher {
    pthread_t th;
    az_conn *c;
    const char *run_id;
    az_itest_watch w;
} watcher;

static void *watcher_main(void *arg)
{
    watcher *x = arg;
    if (az_itest_watch_run(&x->w, x->c, x->run_id, 0, 0, WATCH_MS) == 0) az_itest_watch_read(&x->w, 0);
    return NULL;
}

static void test_many_watchers(void)
{
    const char *m = model("crowd");
    fakellm_reply r;
    text_reply(&r, "crowd output", 500);
    fakellm_on(fake, m, NULL, &r, 1);
    char agent[40], run_id[40];
    CU_ASSERT_EQUAL_FATAL(make_agent(agent, "Watched Performer", m), OK);
    CU_ASSERT_EQUAL_FATAL(start_sequential(run_id, agent, 3, "crowd"), OK);

    az_conn *conns[WATCH_CONNS];
    for (int i = 0; i < WATCH_CONNS; i++) conns[i] = az_itest_connect(&srv);
    watcher *ws = calloc(WATCHERS, sizeof *ws);
    CU_ASSERT_PTR_NOT_NULL_FATAL(ws);
    for (int i = 0; i < WATCHERS; i++) {
        ws[i].c = conns[i % WATCH_CONNS];
        ws[i].run_id = run_id;
        pthread_create(&ws[i].th, NULL, watcher_main, &ws[i]);
    }
    for (int i = 0; i < WATCHERS; i++) pthread_join(ws[i].th, NULL);

    Agentz__V1__WorkflowRun *run = wait_run(run_id, 30);
    CU_ASSERT_PTR_NOT_NULL_FATAL(run);
    CU_ASSERT_EQUAL(run->status, R_SUCCEEDED);
    free_msg(run);
    az_itest_watch ref = {0};
    CU_ASSERT_EQUAL(az_itest_watch_run(&ref, conn, run_id, 0, 0, WATCH_MS), 0);
    az_itest_watch_read(&ref, 0);
    CHECK_ENDED_OK(&ref, "reference replay");
    check_run_chain(__LINE__, &ref, run_id, R_SUCCEEDED);
    int bad = 0;
    for (int i = 0; i < WATCHERS; i++) {
        int ok = ws[i].w.ended && ws[i].w.status == OK && ws[i].w.durable == ref.durable;
        if (!ok && bad++ < 3) {
            fprintf(stderr, "\n  watcher %d of %d:", i, WATCHERS);
            CHECK_ENDED_OK(&ws[i].w, "one of 200 watchers");
        }
        if (ok && (!CHECK_GAPFREE(&ws[i].w, 0, "one of 200 watchers") ||
                   !CHECK_SAME_HISTORY(&ws[i].w, &ref, "one of 200 watchers vs replay")))
            bad++;
        az_itest_watch_free(&ws[i].w);
    }
    if (bad) fprintf(stderr, "\n  %d of %d watchers did not get the full history\n", bad, WATCHERS);
    CU_ASSERT_EQUAL(bad, 0);
    free(ws);
    az_itest_watch_free(&ref);
    for (int i = 0; i < WATCH_CONNS; i++) az_conn_free(conns[i]);
}

/* ---------------------------------------------------------------- 5. slow consumer */

/* A watch call on its own channel with a tiny HTTP/2 window (no BDP probing): when the test
 * does not read, the server can push only a few hundred bytes before its sends stall, so its
 * per-stream queue fills. Written with the gRPC core API because az_conn has no channel
 * options. */
typedef struct raw_stream {
    grpc_channel *ch;
    grpc_completion_queue *cq;
    grpc_call *call;
    grpc_metadata_array imd, tmd;
    grpc_status_code status;
    grpc_slice details;
    char tag_start, tag_status, tag_recv;
    int done;
} raw_stream;

static void raw_pluck(raw_stream *s, void *tag)
{
    grpc_completion_queue_pluck(s->cq, tag, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
}

static int raw_open(raw_stream *s, const char *method, const ProtobufCMessage *req, int timeout_ms)
{
    memset(s, 0, sizeof *s);
    grpc_arg args[3] = {
        {.type = GRPC_ARG_INTEGER, .key = (char *)GRPC_ARG_HTTP2_BDP_PROBE, .value.integer = 0},
        {.type = GRPC_ARG_INTEGER, .key = (char *)GRPC_ARG_HTTP2_STREAM_LOOKAHEAD_BYTES,
         .value.integer = 1024},
        {.type = GRPC_ARG_INTEGER, .key = (char *)GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL,
         .value.integer = 1},
    };
    grpc_channel_args chargs = {3, args};
    grpc_channel_credentials *creds = grpc_insecure_credentials_create();
    s->ch = grpc_channel_create(srv.target, creds, &chargs);
    grpc_channel_credentials_release(creds);
    s->cq = grpc_completion_queue_create_for_pluck(NULL);
    grpc_slice m = grpc_slice_from_static_string(method);
    gpr_timespec deadline = gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC),
                                         gpr_time_from_millis(timeout_ms, GPR_TIMESPAN));
    s->call = grpc_channel_create_call(s->ch, NULL, GRPC_PROPAGATE_DEFAULTS, s->cq, m, NULL,
                                       deadline, NULL);
    grpc_metadata_array_init(&s->imd);
    grpc_metadata_array_init(&s->tmd);
    char auth[600];
    snprintf(auth, sizeof auth, "Bearer %s", az_itest_admin_key(&srv) ? az_itest_admin_key(&srv) : "");
    grpc_metadata md = {.key = grpc_slice_from_static_string("authorization"),
                        .value = grpc_slice_from_copied_string(auth)};
    size_t len = protobuf_c_message_get_packed_size(req);
    uint8_t *buf = malloc(len + 1);
    protobuf_c_message_pack(req, buf);
    grpc_slice body = grpc_slice_from_copied_buffer((const char *)buf, len);
    free(buf);
    grpc_byte_buffer *send = grpc_raw_byte_buffer_create(&body, 1);
    grpc_slice_unref(body);
    grpc_op ops[4] = {0};
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[0].data.send_initial_metadata.count = az_itest_admin_key(&srv) ? 1 : 0;
    ops[0].data.send_initial_metadata.metadata = &md;
    ops[1].op = GRPC_OP_SEND_MESSAGE;
    ops[1].data.send_message.send_message = send;
    ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[3].data.recv_initial_metadata.recv_initial_metadata = &s->imd;
    int rc = grpc_call_start_batch(s->call, ops, 4, &s->tag_start, NULL);
    if (rc == GRPC_CALL_OK) raw_pluck(s, &s->tag_start);
    grpc_byte_buffer_destroy(send);
    grpc_slice_unref(md.value);
    grpc_op st = {.op = GRPC_OP_RECV_STATUS_ON_CLIENT};
    st.data.recv_status_on_client.trailing_metadata = &s->tmd;
    st.data.recv_status_on_client.status = &s->status;
    st.data.recv_status_on_client.status_details = &s->details;
    if (rc == GRPC_CALL_OK) rc = grpc_call_start_batch(s->call, &st, 1, &s->tag_status, NULL);
    return rc == GRPC_CALL_OK ? 0 : -1;
}

/* Next message (caller frees) or NULL when the call ended (s->status, s->details). */
static Agentz__V1__Event *raw_next(raw_stream *s)
{
    if (s->done) return NULL;
    grpc_byte_buffer *recv = NULL;
    grpc_op op = {.op = GRPC_OP_RECV_MESSAGE};
    op.data.recv_message.recv_message = &recv;
    if (grpc_call_start_batch(s->call, &op, 1, &s->tag_recv, NULL) == GRPC_CALL_OK)
        raw_pluck(s, &s->tag_recv);
    if (!recv) {
        raw_pluck(s, &s->tag_status);
        s->done = 1;
        return NULL;
    }
    grpc_byte_buffer_reader rd;
    grpc_byte_buffer_reader_init(&rd, recv);
    grpc_slice all = grpc_byte_buffer_reader_readall(&rd);
    grpc_byte_buffer_reader_destroy(&rd);
    grpc_byte_buffer_destroy(recv);
    Agentz__V1__Event *e = agentz__v1__event__unpack(NULL, GRPC_SLICE_LENGTH(all),
                                                      GRPC_SLICE_START_PTR(all));
    grpc_slice_unref(all);
    return e;
}

static void raw_close(raw_stream *s)
{
    if (!s->done) {
        grpc_call_cancel(s->call, NULL);
        raw_pluck(s, &s->tag_status);
    }
    grpc_metadata_array_destroy(&s->imd);
    grpc_metadata_array_destroy(&s->tmd);
    grpc_slice_unref(s->details);
    grpc_call_unref(s->call);
    /* Every batch has been plucked: the queue is empty. */
    grpc_completion_queue_shutdown(s->cq);
    grpc_completion_queue_destroy(s->cq);
    grpc_channel_destroy(s->ch);
}

typedef struct reader {
    pthread_t th;
    az_itest_watch w;
    const char *run_id;
    double ended_at;
} reader;

static void *reader_main(void *arg)
{
    reader *x = arg;
    if (az_itest_watch_run(&x->w, conn, x->run_id, 0, 0, WATCH_MS) == 0) az_itest_watch_read(&x->w, 0);
    x->ended_at = now_s();
    return NULL;
}

/* After the gate every flood step makes three durable events (queued, running, succeeded)
 * and streams its answer one character per token delta: tens of thousands of messages for a
 * watcher with include_tokens, far past the queue limit plus the HTTP/2 window of a client that
 * does not read. A burst of durable events is at most one per step, below the limit, so a
 * client that reads keeps up. */
#define FLOOD_STEPS 99

static void test_slow_consumer(void)
{
    /* A gate step, then FLOOD_STEPS steps that all start when it is done: a burst of a few
     * hundred events while both watchers are connected. */
    const char *m = model("flood");
    /* 1,600 characters in chunks of 4: each step's output makes its durable events large
     * enough that the burst is well past the client's 64 KiB initial HTTP/2 window even when
     * a loaded machine drops token deltas (with 400 characters it sat on that boundary). */
    static char flood[1601];
    for (size_t i = 0; i < sizeof flood - 1; i++) flood[i] = (char)('a' + i % 26);
    fakellm_reply r;
    text_reply(&r, flood, 0);
    r.chunk_size = 4;
    fakellm_on(fake, m, NULL, &r, 1);
    text_reply(&r, "gate open", 2500);
    fakellm_on(fake, m, "GATE-STEP", &r, 1);
    char agent[40], run_id[40];
    CU_ASSERT_EQUAL_FATAL(make_agent(agent, "Flooding Agent", m), OK);
    static char steps[65536];
    size_t len = (size_t)snprintf(steps, sizeof steps,
                                  "[{\"id\":\"gate\",\"agentId\":\"%s\",\"description\":\"GATE-STEP\","
                                  "\"expectedOutput\":\"x\"}",
                                  agent);
    for (int i = 0; i < FLOOD_STEPS; i++)
        len += (size_t)snprintf(steps + len, sizeof steps - len,
                                ",{\"id\":\"f%d\",\"agentId\":\"%s\",\"description\":\"flood %d\","
                                "\"expectedOutput\":\"x\",\"dependsOn\":[\"gate\"]}",
                                i, agent, i);
    snprintf(steps + len, sizeof steps - len, "]");
    CU_ASSERT_EQUAL_FATAL(start_run(run_id, "PROCESS_PARALLEL", steps, ""), OK);

    raw_stream slow;
    Agentz__V1__WatchRunRequest req = AGENTZ__V1__WATCH_RUN_REQUEST__INIT;
    req.run_id = run_id;
    req.include_tokens = 1;
    CU_ASSERT_EQUAL_FATAL(raw_open(&slow, WORKFLOWS "WatchRun", &req.base, WATCH_MS), 0);
    reader fast = {.run_id = run_id};
    pthread_create(&fast.th, NULL, reader_main, &fast);
    pthread_join(fast.th, NULL);
    double fast_done = now_s();

    /* The fast watcher was not held back by the one that does not read. */
    CHECK_ENDED_OK(&fast.w, "the reading watcher next to a slow one");
    CHECK_GAPFREE(&fast.w, 0, "the reading watcher next to a slow one");
    check_run_chain(__LINE__, &fast.w, run_id, R_SUCCEEDED);
    CU_ASSERT_TRUE(fast.w.durable > 3 * FLOOD_STEPS);

    /* Now the slow one reads: what the server had sent, then RESOURCE_EXHAUSTED telling it to
     * resume from its last sequence. */
    az_itest_watch got = {0};
    got.cap = 4096;
    got.ev = calloc(got.cap, sizeof *got.ev);
    got.at = calloc(got.cap, sizeof *got.at);
    size_t ephemeral = 0;
    Agentz__V1__Event *e;
    while ((e = raw_next(&slow)) != NULL) {
        if (e->sequence == 0 || got.n == got.cap) {
            /* Token deltas and heartbeats are only counted. */
            ephemeral += e->sequence == 0;
            protobuf_c_message_free_unpacked(&e->base, NULL);
            continue;
        }
        got.at[got.n] = now_s();
        got.ev[got.n++] = e;
        got.durable++;
        got.last_seq = e->sequence;
    }
    got.ended = 1;
    got.status = (int)slow.status;
    char *details = grpc_slice_to_c_string(slow.details);
    snprintf(got.msg, sizeof got.msg, "%s", details);
    gpr_free(details);
    raw_close(&slow);
    fprintf(stderr, "\n  slow consumer: %zu durable and %zu ephemeral messages, then status %d \"%s\" "
            "(%.1f s after the fast watcher ended)\n", got.durable, ephemeral, got.status, got.msg,
            now_s() - fast_done);
    CU_ASSERT_EQUAL(got.status, EXHAUSTED);
    CU_ASSERT_TRUE(got.durable < fast.w.durable);
    CHECK_GAPFREE(&got, 0, "slow consumer");
    /* The message says to resume from a sequence; when it names one it is the last one the
     * client got. */
    char lower[AZ_MSG_MAX];
    for (size_t i = 0; i <= strlen(got.msg); i++) lower[i] = (char)tolower((unsigned char)got.msg[i]);
    if (!strstr(lower, "sequence") || !strstr(lower, "resume")) {
        fprintf(stderr, "\n  RESOURCE_EXHAUSTED message does not say to resume from a sequence: %s\n",
                got.msg);
        CU_FAIL("message does not tell the client to resume from its sequence");
    }
    /* The number after the last "sequence" in the message, if any. */
    const char *digits = NULL;
    for (const char *p = strstr(lower, "sequence"); p; p = strstr(p + 1, "sequence"))
        digits = strpbrk(got.msg + (p - lower), "0123456789");
    if (digits) {
        long long named = strtoll(digits, NULL, 10);
        if (named != got.last_seq)
            fprintf(stderr, "\n  message names sequence %lld, the client last got %lld\n", named,
                    (long long)got.last_seq);
        CU_ASSERT_EQUAL(named, got.last_seq);
    }
    /* Resuming from there completes the history. */
    if (got.status == EXHAUSTED) {
        CU_ASSERT_EQUAL(az_itest_watch_run(&got, conn, run_id, got.last_seq, 0, WATCH_MS), 0);
        az_itest_watch_read(&got, 0);
        CHECK_ENDED_OK(&got, "slow consumer resumed");
        CHECK_GAPFREE(&got, 0, "slow consumer + resume");
        CHECK_SAME_HISTORY(&got, &fast.w, "slow consumer + resume vs the fast watcher");
    }
    az_itest_watch_free(&got);
    az_itest_watch_free(&fast.w);
    Agentz__V1__WorkflowRun *run = wait_run(run_id, 30);
    CU_ASSERT_PTR_NOT_NULL(run);
    if (run) CU_ASSERT_EQUAL(run->status, R_SUCCEEDED);
    free_msg(run);
}

/* ---------------------------------------------------------------- 6. tokens */

static void test_tokens(void)
{
    const char *m = model("tokens");
    /* Multi-byte UTF-8 and quotes split across chunks must come back intact. */
    static char plain[2048];
    size_t len = 0;
    for (int i = 0; len < 1200; i++)
        len += (size_t)snprintf(plain + len, sizeof plain - len, "w%d \xc3\xa9t\xc3\xa9 %s; ", i,
                                i % 7 ? "tok" : "\"quoted\"");
    fakellm_reply r;
    text_reply(&r, plain, 1500);
    r.chunk_size = 3;
    r.chunk_delay_ms = 1;
    fakellm_on(fake, m, NULL, &r, 1);
    char agent[40], task[40];
    CU_ASSERT_EQUAL_FATAL(make_agent(agent, "Token Streamer", m), OK);
    CU_ASSERT_EQUAL_FATAL(make_task(task, agent, "Stream many tokens", ""), OK);

    az_itest_watch w = {0};
    CU_ASSERT_EQUAL_FATAL(az_itest_watch_task(&w, conn, task, 0, 1, WATCH_MS), 0);
    az_itest_watch_read(&w, 0);
    CHECK_ENDED_OK(&w, "WatchTask include_tokens");
    CHECK_GAPFREE(&w, 0, "WatchTask include_tokens");
    Agentz__V1__Task *t = wait_task(task, 30);
    CU_ASSERT_PTR_NOT_NULL_FATAL(t);
    CU_ASSERT_EQUAL(t->status, T_SUCCEEDED);
    check_task_chain(__LINE__, &w, task, NULL, NULL, T_SUCCEEDED);

    /* The deltas, in order, are the output; none comes after the terminal event. */
    char *cat = calloc(1, 65536);
    size_t clen = 0, tokens = 0;
    long term = find_task_event(&w, task, T_SUCCEEDED);
    long last_token = -1;
    for (size_t i = 0; i < w.n; i++) {
        const Agentz__V1__Event *e = w.ev[i];
        if (e->payload_case != P_TOKEN) continue;
        CU_ASSERT_EQUAL(e->sequence, 0);
        CU_ASSERT_EQUAL(e->token->attempt, 1);
        if (!e->task_id || strcmp(e->task_id, task) != 0) CU_FAIL("token of another task");
        size_t n = strlen(e->token->text);
        if (clen + n < 65535) {
            memcpy(cat + clen, e->token->text, n);
            clen += n;
        }
        tokens++;
        last_token = (long)i;
    }
    cat[clen] = '\0';
    int same = t->output && strcmp(cat, t->output->raw) == 0;
    if (!same)
        fprintf(stderr, "\n  %zu token deltas concatenate to (%zu bytes):\n  %.300s\n  output (%zu "
                "bytes):\n  %.300s\n", tokens, clen, cat, t->output ? strlen(t->output->raw) : 0,
                t->output ? t->output->raw : "(none)");
    CU_ASSERT_TRUE(same);
    CU_ASSERT_TRUE(tokens >= 300); /* small chunks: hundreds of deltas */
    CU_ASSERT_TRUE(last_token < term);
    free(cat);
    free_msg(t);

    /* Without include_tokens: no deltas, and a replay of the finished task is its history. */
    az_itest_watch plain_w = {0};
    CU_ASSERT_EQUAL(az_itest_watch_task(&plain_w, conn, task, 0, 0, WATCH_MS), 0);
    az_itest_watch_read(&plain_w, 0);
    CHECK_ENDED_OK(&plain_w, "WatchTask replay");
    CHECK_SAME_HISTORY(&plain_w, &w, "WatchTask replay vs live");
    for (size_t i = 0; i < plain_w.n; i++)
        if (plain_w.ev[i]->payload_case == P_TOKEN) {
            CU_FAIL("token delta without include_tokens");
            break;
        }
    az_itest_watch_free(&plain_w);
    az_itest_watch_free(&w);
}

/* ---------------------------------------------------------------- 7 + 8. agents, heartbeats */

static void test_agents_busy_idle(void)
{
    const char *m = model("busy");
    fakellm_reply r;
    text_reply(&r, "done being busy", 800);
    fakellm_on(fake, m, NULL, &r, 1);
    char agent[40], task[40];
    CU_ASSERT_EQUAL_FATAL(make_agent(agent, "Busy Bee", m), OK);

    /* Only new events: wait for the stream to be set up (its first heartbeat, at 1 s), then
     * make the agent work. */
    az_itest_watch w = {0};
    CU_ASSERT_EQUAL_FATAL(az_itest_watch_agents(&w, conn, agent, 0, 30000), 0);
    double t0 = now_s();
    int hb = 0;
    while (!hb && az_itest_watch_next(&w)) hb = w.ev[w.n - 1]->payload_case == P_HEARTBEAT;
    if (!hb) {
        dump_events("WatchAgents before any work", &w);
        CU_FAIL_FATAL("no heartbeat on an idle WatchAgents stream");
    }
    CU_ASSERT_TRUE(now_s() - t0 < 3.0);
    CU_ASSERT_EQUAL_FATAL(make_task(task, agent, "Keep the agent busy", ""), OK);
    long busy = -1, idle = -1;
    while (idle < 0 && az_itest_watch_next(&w)) {
        const Agentz__V1__Event *e = w.ev[w.n - 1];
        if (e->payload_case != P_AGENT) continue;
        if (!e->agent_id || strcmp(e->agent_id, agent) != 0) {
            CU_FAIL("WatchAgents filtered on one agent sent another");
            continue;
        }
        if ((int)e->agent_status->to == A_BUSY && busy < 0) busy = (long)w.n - 1;
        if ((int)e->agent_status->to == A_IDLE && busy >= 0) idle = (long)w.n - 1;
    }
    if (busy < 0 || idle < 0) dump_events("WatchAgents", &w);
    CU_ASSERT_TRUE_FATAL(busy >= 0 && idle > busy);
    const Agentz__V1__Event *eb = w.ev[busy], *ei = w.ev[idle];
    CU_ASSERT_EQUAL(eb->agent_status->from, A_IDLE);
    CU_ASSERT_EQUAL(ei->agent_status->from, A_BUSY);
    CU_ASSERT_TRUE(eb->sequence > 0 && ei->sequence > eb->sequence);
    int64_t busy_seq = eb->sequence, idle_seq = ei->sequence;
    az_itest_watch_free(&w);
    Agentz__V1__Task *t = wait_task(task, 20);
    CU_ASSERT_PTR_NOT_NULL(t);
    if (t) CU_ASSERT_EQUAL(t->status, T_SUCCEEDED);
    free_msg(t);

    /* Resume: from just before busy, the same two events come back first. */
    az_itest_watch again = {0};
    CU_ASSERT_EQUAL_FATAL(az_itest_watch_agents(&again, conn, agent, busy_seq - 1, 30000), 0);
    az_itest_watch_read(&again, 2);
    az_itest_watch_cancel(&again);
    int ok = again.durable >= 2;
    size_t k = 0;
    int64_t seen[2] = {0, 0};
    for (size_t i = 0; i < again.n && k < 2; i++)
        if (again.ev[i]->sequence > 0) seen[k++] = again.ev[i]->sequence;
    ok = ok && seen[0] == busy_seq && seen[1] == idle_seq;
    if (!ok) {
        fprintf(stderr, "\n  WatchAgents after_sequence %lld: want #%lld then #%lld\n",
                (long long)(busy_seq - 1), (long long)busy_seq, (long long)idle_seq);
        dump_events("resumed WatchAgents", &again);
    }
    CU_ASSERT_TRUE(ok);
    az_itest_watch_free(&again);
}

static void test_heartbeats(void)
{
    /* A task whose model call takes 3.5 s: its WatchTask stream is idle meanwhile. */
    const char *m = model("slowllm");
    fakellm_reply r;
    text_reply(&r, "slow answer", 3500);
    fakellm_on(fake, m, NULL, &r, 1);
    char agent[40], task[40];
    CU_ASSERT_EQUAL_FATAL(make_agent(agent, "Ponderer", m), OK);
    CU_ASSERT_EQUAL_FATAL(make_task(task, agent, "Think slowly", ""), OK);
    az_itest_watch w = {0};
    CU_ASSERT_EQUAL_FATAL(az_itest_watch_task(&w, conn, task, 0, 0, WATCH_MS), 0);
    az_itest_watch_read(&w, 0);
    CHECK_ENDED_OK(&w, "WatchTask of a slow task");
    CHECK_GAPFREE(&w, 0, "WatchTask of a slow task");
    int hb = 0;
    for (size_t i = 0; i < w.n; i++)
        if (w.ev[i]->payload_case == P_HEARTBEAT) {
            hb++;
            CU_ASSERT_EQUAL(w.ev[i]->sequence, 0);
            CU_ASSERT_PTR_NOT_NULL(w.ev[i]->time);
        }
    if (hb < 2) {
        fprintf(stderr, "\n  %d heartbeats in a 3.5 s idle stretch with AGENTZ_STREAM_HEARTBEAT=1s\n", hb);
        dump_events("WatchTask", &w);
    }
    CU_ASSERT_TRUE(hb >= 2);
    az_itest_watch_free(&w);
}

/* ---------------------------------------------------------------- 9. webhooks */

typedef struct hook_req {
    char path[256];
    char signature[256];
    char content_type[128];
    char *body;
    time_t at;
} hook_req;

static struct {
    int fd, port;
    pthread_t th;
    volatile int stop;
    pthread_mutex_t mu;
    hook_req reqs[64];
    int n;
    int fail_first; /* requests to paths containing "/flaky" answered 500 this many times */
    int failed;
} hook = {.fd = -1, .mu = PTHREAD_MUTEX_INITIALIZER};

/* The value of header name (case-insensitive) in the raw header block, into out. */
static void header_value(const char *head, const char *name, char *out, size_t len)
{
    out[0] = '\0';
    size_t nl = strlen(name);
    for (const char *p = head; p && *p; p = strstr(p, "\r\n")) {
        if (p[0] == '\r') p += 2;
        if (strncasecmp(p, name, nl) == 0 && p[nl] == ':') {
            const char *v = p + nl + 1;
            while (*v == ' ') v++;
            size_t n = strcspn(v, "\r\n");
            snprintf(out, len, "%.*s", (int)n, v);
            return;
        }
    }
}

static void hook_serve(int c)
{
    static char buf[262144];
    size_t len = 0;
    char *end = NULL;
    struct pollfd p = {c, POLLIN, 0};
    while (!end && len < sizeof buf - 1 && poll(&p, 1, 5000) > 0) {
        ssize_t n = read(c, buf + len, sizeof buf - 1 - len);
        if (n <= 0) break;
        len += (size_t)n;
        buf[len] = '\0';
        end = strstr(buf, "\r\n\r\n");
    }
    if (!end) return;
    char cl[32];
    *end = '\0';
    header_value(buf, "Content-Length", cl, sizeof cl);
    size_t want = (size_t)strtoul(cl, NULL, 10), have = len - (size_t)(end + 4 - buf);
    while (have < want && len < sizeof buf - 1 && poll(&p, 1, 5000) > 0) {
        ssize_t n = read(c, buf + len, sizeof buf - 1 - len);
        if (n <= 0) break;
        len += (size_t)n;
        have += (size_t)n;
    }
    hook_req r = {0};
    sscanf(buf, "%*s %255s", r.path);
    header_value(buf, "X-Agentz-Signature", r.signature, sizeof r.signature);
    header_value(buf, "Content-Type", r.content_type, sizeof r.content_type);
    r.body = strndup(end + 4, have < want ? have : want);
    r.at = time(NULL);
    int fail = 0;
    pthread_mutex_lock(&hook.mu);
    if (strstr(r.path, "/flaky") && hook.failed < hook.fail_first) {
        hook.failed++;
        fail = 1;
    }
    if (hook.n < 64) hook.reqs[hook.n++] = r;
    else free(r.body);
    pthread_mutex_unlock(&hook.mu);
    const char *resp = fail ? "HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                            : "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
    ssize_t w = write(c, resp, strlen(resp));
    (void)w;
}

static void *hook_main(void *arg)
{
    (void)arg;
    while (!hook.stop) {
        struct pollfd p = {hook.fd, POLLIN, 0};
        if (poll(&p, 1, 200) <= 0) continue;
        int c = accept(hook.fd, NULL, NULL);
        if (c < 0) continue;
        hook_serve(c);
        close(c);
    }
    return NULL;
}

static int hook_start(void)
{
    hook.fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof a;
    if (hook.fd < 0 || bind(hook.fd, (struct sockaddr *)&a, sizeof a) != 0 || listen(hook.fd, 64) != 0 ||
        getsockname(hook.fd, (struct sockaddr *)&a, &al) != 0)
        return -1;
    hook.port = ntohs(a.sin_port);
    return pthread_create(&hook.th, NULL, hook_main, NULL);
}

static void hook_stop(void)
{
    if (hook.fd < 0) return;
    hook.stop = 1;
    pthread_join(hook.th, NULL);
    close(hook.fd);
    for (int i = 0; i < hook.n; i++) free(hook.reqs[i].body);
}

/* Requests received so far for paths containing part. */
static int hook_count(const char *part)
{
    pthread_mutex_lock(&hook.mu);
    int n = 0;
    for (int i = 0; i < hook.n; i++) n += strstr(hook.reqs[i].path, part) != NULL;
    pthread_mutex_unlock(&hook.mu);
    return n;
}

static int hook_wait(const char *part, int n, double timeout_s)
{
    double until = now_s() + timeout_s;
    while (hook_count(part) < n && now_s() < until) usleep(50 * 1000);
    return hook_count(part) >= n;
}

/* X-Agentz-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>" under secret>. */
static int signature_ok(const hook_req *r, char *why, size_t wl)
{
    long long t = -1;
    char v1[130] = "";
    const char *tp = strstr(r->signature, "t="), *vp = strstr(r->signature, "v1=");
    if (tp) t = strtoll(tp + 2, NULL, 10);
    if (vp) snprintf(v1, sizeof v1, "%.*s", (int)strcspn(vp + 3, ","), vp + 3);
    if (t <= 0 || strlen(v1) != 64) {
        snprintf(why, wl, "malformed X-Agentz-Signature \"%s\"", r->signature);
        return 0;
    }
    if (llabs(t - (long long)r->at) > 300) {
        snprintf(why, wl, "signature time %lld is far from the delivery time %lld", t, (long long)r->at);
        return 0;
    }
    size_t bl = strlen(r->body);
    char *signed_text = malloc(bl + 32);
    int sl = snprintf(signed_text, bl + 32, "%lld.%s", t, r->body);
    unsigned char mac[32];
    unsigned int ml = 0;
    HMAC(EVP_sha256(), secret, (int)strlen(secret), (unsigned char *)signed_text, (size_t)sl, mac, &ml);
    free(signed_text);
    char hex[65];
    for (unsigned i = 0; i < 32; i++) snprintf(hex + 2 * i, 3, "%02x", mac[i]);
    if (strcasecmp(hex, v1) != 0) {
        snprintf(why, wl, "v1=%s, expected %s", v1, hex);
        return 0;
    }
    return 1;
}

/* Checks every request to paths containing part: POST, JSON, signed, mentioning id. */
static void check_hook_requests(const char *part, const char *id)
{
    pthread_mutex_lock(&hook.mu);
    for (int i = 0; i < hook.n; i++) {
        const hook_req *r = &hook.reqs[i];
        if (!strstr(r->path, part)) continue;
        char why[512];
        if (!signature_ok(r, why, sizeof why)) {
            fprintf(stderr, "\n  webhook %s: bad signature: %s\n  body: %.300s\n", r->path, why, r->body);
            CU_FAIL("webhook signature does not verify");
        }
        if (!strstr(r->content_type, "json")) {
            fprintf(stderr, "\n  webhook Content-Type \"%s\"\n", r->content_type);
            CU_FAIL("webhook is not JSON");
        }
        json_error_t e;
        json_t *j = json_loads(r->body, 0, &e);
        if (!j) fprintf(stderr, "\n  webhook body is not JSON (%s): %.300s\n", e.text, r->body);
        CU_ASSERT_PTR_NOT_NULL(j);
        json_decref(j);
        if (!strstr(r->body, id)) {
            fprintf(stderr, "\n  webhook body does not name %s: %.300s\n", id, r->body);
            CU_FAIL("webhook body does not name the task or run");
        }
    }
    pthread_mutex_unlock(&hook.mu);
}

static void test_webhooks(void)
{
    CU_ASSERT_EQUAL_FATAL(hook_start(), 0);
    const char *m = model("hook");
    fakellm_reply r;
    text_reply(&r, "hooked", 0);
    fakellm_on(fake, m, NULL, &r, 1);
    char agent[40], task[40], flaky[40], run_id[40];
    CU_ASSERT_EQUAL_FATAL(make_agent(agent, "Webhook Caller", m), OK);
    char extra[512];
    snprintf(extra, sizeof extra, "\"webhookUrls\":[\"http://127.0.0.1:%d/task-hook/%s\"]", hook.port, uniq);
    CU_ASSERT_EQUAL_FATAL(make_task(task, agent, "Finish and call back", extra), OK);
    /* The receiver fails the first delivery: it is retried. */
    hook.fail_first = 1;
    snprintf(extra, sizeof extra, "\"webhookUrls\":[\"http://127.0.0.1:%d/flaky/%s\"]", hook.port, uniq);
    CU_ASSERT_EQUAL_FATAL(make_task(flaky, agent, "Finish and call back twice", extra), OK);
    /* A run's completion. */
    char steps[512];
    snprintf(steps, sizeof steps,
             "[{\"id\":\"one\",\"agentId\":\"%s\",\"description\":\"hooked step\","
             "\"expectedOutput\":\"x\"}]", agent);
    snprintf(extra, sizeof extra, "\"webhookUrls\":[\"http://127.0.0.1:%d/run-hook/%s\"]", hook.port, uniq);
    CU_ASSERT_EQUAL_FATAL(start_run(run_id, "PROCESS_SEQUENTIAL", steps, extra), OK);

    Agentz__V1__Task *t = wait_task(task, 20);
    CU_ASSERT_PTR_NOT_NULL(t);
    free_msg(t);
    int got = hook_wait("/task-hook/", 1, 20);
    if (!got) az_itest_dump_log_except(&srv, 20, RPC_LINE);
    CU_ASSERT_TRUE(got);
    check_hook_requests("/task-hook/", task);
    CU_ASSERT_TRUE(hook_wait("/run-hook/", 1, 20));
    check_hook_requests("/run-hook/", run_id);
    got = hook_wait("/flaky/", 2, 60);
    if (!got) fprintf(stderr, "\n  the failed delivery was not retried within 60 s (%d requests)\n",
                      hook_count("/flaky/"));
    CU_ASSERT_TRUE(got);
    check_hook_requests("/flaky/", flaky);
    /* A delivery answered 200 is not repeated. */
    sleep(2);
    CU_ASSERT_EQUAL(hook_count("/task-hook/"), 1);
    CU_ASSERT_EQUAL(hook_count("/flaky/"), 2);
    hook_stop();
}

/* ---------------------------------------------------------------- 10. errors, metrics */

static int watch_status(const char *method, const ProtobufCMessage *req, char *msg)
{
    az_itest_watch w = {0};
    az_itest_watch_open(&w, conn, method, req, 10000);
    az_itest_watch_read(&w, 0);
    int st = w.status;
    snprintf(msg, AZ_MSG_MAX, "%s", w.msg);
    if (w.durable) CU_FAIL("a rejected watch sent events");
    az_itest_watch_free(&w);
    return st;
}

static void expect_watch_status(int line, const char *method, const ProtobufCMessage *req, int want,
                                const char *field)
{
    char msg[AZ_MSG_MAX];
    int st = watch_status(method, req, msg);
    if (st != want || (field && !strstr(msg, field))) {
        fprintf(stderr, "\n  line %d: %s got status %d \"%s\", want %d naming %s\n", line, method, st,
                msg, want, field ? field : "-");
        CU_FAIL("wrong status");
    }
}
#define EXPECT_WATCH(method, req, want, field) \
    expect_watch_status(__LINE__, (method), &(req).base, (want), (field))

static void test_errors(void)
{
    const char *unknown = "0b7c4f5e-9a1d-4c2b-8e3f-2a6d5c4b3a21";
    Agentz__V1__WatchRunRequest rr = AGENTZ__V1__WATCH_RUN_REQUEST__INIT;
    rr.run_id = (char *)unknown;
    EXPECT_WATCH(WORKFLOWS "WatchRun", rr, NOT_FOUND, NULL);
    rr.run_id = "not-a-run-id";
    EXPECT_WATCH(WORKFLOWS "WatchRun", rr, INVALID, "run_id");
    rr.run_id = "";
    EXPECT_WATCH(WORKFLOWS "WatchRun", rr, INVALID, "run_id");

    Agentz__V1__WatchTaskRequest tr = AGENTZ__V1__WATCH_TASK_REQUEST__INIT;
    tr.task_id = (char *)unknown;
    EXPECT_WATCH(TASKS "WatchTask", tr, NOT_FOUND, NULL);
    tr.task_id = "12345";
    EXPECT_WATCH(TASKS "WatchTask", tr, INVALID, "task_id");
    tr.task_id = "";
    EXPECT_WATCH(TASKS "WatchTask", tr, INVALID, "task_id");

    /* A negative sequence is malformed. */
    char agent[40], run_id[40];
    const char *m = model("errors");
    CU_ASSERT_EQUAL_FATAL(make_agent(agent, "Error Checker", m), OK);
    CU_ASSERT_EQUAL_FATAL(start_sequential(run_id, agent, 1, "errors"), OK);
    rr.run_id = run_id;
    rr.after_sequence = -1;
    EXPECT_WATCH(WORKFLOWS "WatchRun", rr, INVALID, "after_sequence");

    Agentz__V1__WatchAgentsRequest ar = AGENTZ__V1__WATCH_AGENTS_REQUEST__INIT;
    char *bad[1] = {"no-such-id"};
    ar.agent_ids = bad;
    ar.n_agent_ids = 1;
    EXPECT_WATCH(AGENTS "WatchAgents", ar, INVALID, "agent_ids");

    /* Without credentials a watch is refused (UNAUTHENTICATED) and sends nothing. */
    az_conn *anon = az_itest_connect_token(&srv, NULL);
    az_itest_watch w = {0};
    az_itest_watch_run(&w, anon, run_id, 0, 0, 10000);
    az_itest_watch_read(&w, 0);
    if (az_itest_admin_key(&srv)) CU_ASSERT_EQUAL(w.status, 16 /* UNAUTHENTICATED */);
    CU_ASSERT_EQUAL(w.durable, 0);
    az_itest_watch_free(&w);
    az_conn_free(anon);
    Agentz__V1__WorkflowRun *run = wait_run(run_id, 20);
    free_msg(run);
}

static void test_stream_metrics(void)
{
    Agentz__V1__StreamMetricsRequest req = AGENTZ__V1__STREAM_METRICS_REQUEST__INIT;
    Google__Protobuf__Duration d = GOOGLE__PROTOBUF__DURATION__INIT;
    d.seconds = 1;
    req.interval = &d;
    az_itest_watch w = {0};
    CU_ASSERT_EQUAL_FATAL(az_itest_watch_open(&w, conn, "/agentz.v1.SystemService/StreamMetrics",
                                              &req.base, 10000), 0);
    double t0 = now_s();
    int snaps = 0;
    while (snaps < 3 && az_itest_watch_next(&w)) {
        const Agentz__V1__Event *e = w.ev[w.n - 1];
        if (e->payload_case != P_METRICS) continue;
        snaps++;
        CU_ASSERT_EQUAL(e->sequence, 0);
        CU_ASSERT_TRUE(e->metrics->postgres_ok);
        CU_ASSERT_TRUE(e->metrics->redis_ok);
        CU_ASSERT_TRUE(e->metrics->workers >= 1);
    }
    double took = now_s() - t0;
    if (snaps < 3) dump_events("StreamMetrics", &w);
    CU_ASSERT_EQUAL(snaps, 3);
    /* Three snapshots a second apart (the first may come at once). */
    CU_ASSERT_TRUE(took > 1.5 && took < 5.0);
    az_itest_watch_free(&w);

    char msg[AZ_MSG_MAX];
    d.seconds = 0;
    d.nanos = 100 * 1000 * 1000;
    int st = watch_status("/agentz.v1.SystemService/StreamMetrics", &req.base, msg);
    if (st != INVALID) fprintf(stderr, "\n  StreamMetrics interval 100ms: %d %s\n", st, msg);
    CU_ASSERT_EQUAL(st, INVALID);
}

/* ---------------------------------------------------------------- shutdown */

typedef struct idle_watch {
    pthread_t th;
    az_itest_watch w;
    double ended_at;
} idle_watch;

static void *idle_main(void *arg)
{
    idle_watch *x = arg;
    az_itest_watch_read(&x->w, 0);
    x->ended_at = now_s();
    return NULL;
}

/* Streams end cleanly when the server stops: an idle WatchAgents and a WatchRun of a run that
 * is still going end promptly, and agentzd exits 0. Runs last: it stops the server. */
static void test_shutdown(void)
{
    const char *m = model("forever");
    fakellm_reply r;
    text_reply(&r, "never seen", 120000);
    fakellm_on(fake, m, NULL, &r, 1);
    char agent[40], run_id[40];
    CU_ASSERT_EQUAL_FATAL(make_agent(agent, "Endless Thinker", m), OK);
    CU_ASSERT_EQUAL_FATAL(start_sequential(run_id, agent, 1, "forever"), OK);
    idle_watch a = {0}, b = {0};
    CU_ASSERT_EQUAL_FATAL(az_itest_watch_agents(&a.w, conn, NULL, 0, 120000), 0);
    CU_ASSERT_EQUAL_FATAL(az_itest_watch_run(&b.w, conn, run_id, 0, 0, 120000), 0);
    pthread_create(&a.th, NULL, idle_main, &a);
    pthread_create(&b.th, NULL, idle_main, &b);
    sleep(1);
    double t0 = now_s();
    int rc = az_itest_stop(&srv, SIGTERM, 60);
    server_stopped = 1;
    double stopped = now_s() - t0;
    pthread_join(a.th, NULL);
    pthread_join(b.th, NULL);
    fprintf(stderr, "\n  agentzd exited %d in %.1f s; streams ended after %.1f s (status %d \"%s\") and "
            "%.1f s (status %d \"%s\")\n", rc, stopped, a.ended_at - t0, a.w.status, a.w.msg,
            b.ended_at - t0, b.w.status, b.w.msg);
    if (rc != 0) az_itest_dump_log_except(&srv, 30, RPC_LINE);
    CU_ASSERT_EQUAL(rc, 0);
    CU_ASSERT_TRUE(a.ended_at - t0 < 15 && b.ended_at - t0 < 15);
    /* Not a deadline: the server ended them. */
    CU_ASSERT_NOT_EQUAL(a.w.status, DEADLINE);
    CU_ASSERT_NOT_EQUAL(b.w.status, DEADLINE);
    az_itest_watch_free(&a.w);
    az_itest_watch_free(&b.w);
}

/* ---------------------------------------------------------------- 3. Redis restarted */

typedef struct resumer {
    pthread_t th;
    const char *run_id;
    az_itest_watch w;
    int reconnects;
    int statuses[16]; /* how the streams that did not end with OK ended */
} resumer;

/* Watches the run to its end like a client should: on any error, reconnect from the last
 * sequence seen (for up to 120 s). */
static void *resumer_main(void *arg)
{
    resumer *x = arg;
    double until = now_s() + 120;
    for (;;) {
        az_itest_watch_run(&x->w, conn, x->run_id, x->w.last_seq, 0, WATCH_MS);
        az_itest_watch_read(&x->w, 0);
        if (x->w.status == OK || now_s() > until) break;
        if (x->reconnects < 16) x->statuses[x->reconnects] = x->w.status;
        x->reconnects++;
        usleep(250 * 1000);
    }
    return NULL;
}

static void test_redis_restart(void)
{
    const char *m = model("redis");
    fakellm_reply r;
    text_reply(&r, "survived a redis restart", 1500);
    fakellm_on(fake, m, NULL, &r, 1);
    char agent[40], run_id[40];
    CU_ASSERT_EQUAL_FATAL(make_agent(agent, "Resilient Writer", m), OK);
    CU_ASSERT_EQUAL_FATAL(start_sequential(run_id, agent, 3, "redis"), OK);
    resumer live = {.run_id = run_id};
    pthread_create(&live.th, NULL, resumer_main, &live);

    /* Stop Redis while the first step's model call is in flight: its completion, and the
     * events of everything the run does until Redis is back, must wait in the outbox. */
    double until = now_s() + 20;
    int running = 0;
    while (!running && now_s() < until) {
        Agentz__V1__WorkflowRun *run = get_run(run_id);
        running = run && run->n_steps && (int)run->steps[0]->status == T_RUNNING;
        free_msg(run);
        if (!running) usleep(50 * 1000);
    }
    CU_ASSERT_TRUE_FATAL(running);
    az_itest_redis_conf rc;
    CU_ASSERT_EQUAL_FATAL(az_itest_redis_stop(&srv, &rc), 0);
    sleep(3);
    int restarted = az_itest_redis_start(&rc);
    CU_ASSERT_EQUAL_FATAL(restarted, 0);

    Agentz__V1__WorkflowRun *run = wait_run(run_id, 90);
    CU_ASSERT_PTR_NOT_NULL_FATAL(run);
    CU_ASSERT_EQUAL(run->status, R_SUCCEEDED);
    pthread_join(live.th, NULL);
    fprintf(stderr, "\n  watcher across the restart: %zu durable events, %d reconnects",
            live.w.durable, live.reconnects);
    for (int i = 0; i < live.reconnects && i < 16; i++) fprintf(stderr, " [%d]", live.statuses[i]);
    fprintf(stderr, "\n");

    /* Nothing was lost: a replay from 0 has every status change of the run and its tasks. */
    az_itest_watch full = {0};
    CU_ASSERT_EQUAL(az_itest_watch_run(&full, conn, run_id, 0, 0, WATCH_MS), 0);
    az_itest_watch_read(&full, 0);
    CHECK_ENDED_OK(&full, "replay after the Redis restart");
    CHECK_GAPFREE(&full, 0, "replay after the Redis restart");
    check_run_chain(__LINE__, &full, run_id, R_SUCCEEDED);
    for (size_t i = 0; i < run->n_steps; i++)
        check_task_chain(__LINE__, &full, run->steps[i]->task_id, run_id, run->steps[i]->step_id,
                         T_SUCCEEDED);
    /* The watcher connected across the restart ends with the same full set. */
    CHECK_ENDED_OK(&live.w, "watcher across the Redis restart");
    CHECK_GAPFREE(&live.w, 0, "watcher across the Redis restart");
    CHECK_SAME_HISTORY(&live.w, &full, "watcher across the restart vs replay");
    az_itest_watch_free(&full);
    az_itest_watch_free(&live.w);
    free_msg(run);

    /* And the hub works after the restart: a new run is watched live to its end. */
    CU_ASSERT_EQUAL_FATAL(start_sequential(run_id, agent, 1, "after-redis"), OK);
    az_itest_watch after = {0};
    CU_ASSERT_EQUAL(az_itest_watch_run(&after, conn, run_id, 0, 0, WATCH_MS), 0);
    az_itest_watch_read(&after, 0);
    CHECK_ENDED_OK(&after, "WatchRun of a run started after the restart");
    check_run_chain(__LINE__, &after, run_id, R_SUCCEEDED);
    az_itest_watch_free(&after);
}

/* ---------------------------------------------------------------- suite */

/* Starts agentzd with data dir name (and the fake LLM); both suites use the same settings. */
static int start_all(const char *name)
{
    server_stopped = 0;
    snprintf(uniq, sizeof uniq, "%s", az_itest_unique());
    snprintf(secret, sizeof secret, "whsec-%s", uniq);
    fake = fakellm_start();
    if (!fake) return -1;
    static const char *const unset[] = {"AGENTZ_LLM_BASE_URL", "AGENTZ_LLM_API_KEY", "AGENTZ_LLM_MODEL",
                                        "AGENTZ_LLM_PROVIDER", "OPENAI_API_KEY", "OPENAI_BASE_URL",
                                        "ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL",
                                        "AGENTZ_ALLOW_PRIVATE_NETWORKS", "AGENTZ_EMBEDDINGS_URL"};
    for (size_t i = 0; i < sizeof unset / sizeof *unset; i++) unsetenv(unset[i]);
    setenv("AGENTZ_RECONCILE_INTERVAL", "200ms", 1);
    setenv("AGENTZ_TASK_LEASE_SECONDS", "5", 1);
    setenv("AGENTZ_STREAM_HEARTBEAT", "1s", 1);
    setenv("AGENTZ_STREAM_QUEUE_LIMIT", "128", 1);
    setenv("AGENTZ_WEBHOOK_SECRET", secret, 1);
    /* The flood of the slow-consumer scenario runs its steps side by side. */
    setenv("AGENTZ_WORKER_CONCURRENCY", "32", 1);
    if (az_itest_start(&srv, name, NULL) != 0) return -1;
    conn = az_itest_connect(&srv);
    return 0;
}

static int suite_init(void) { return start_all("realtime"); }

/* Its own agentzd: stopping Redis must not disturb the other scenarios. */
static int redis_suite_init(void) { return start_all("realtime-redis"); }

static int suite_clean(void)
{
    az_conn_free(conn);
    int rc = server_stopped ? 0 : az_itest_stop(&srv, SIGTERM, 30);
    if (rc != 0) {
        fprintf(stderr, "agentzd exited with %d\n", rc);
        az_itest_dump_log_except(&srv, 30, RPC_LINE);
    }
    fakellm_stop(fake);
    fake = NULL;
    conn = NULL;
    return rc == 0 ? 0 : -1;
}

/* REALTIME_ONLY=<substring> runs only the tests whose name contains it (for debugging). */
static void add(CU_pSuite s, const char *name, CU_TestFunc fn)
{
    const char *only = getenv("REALTIME_ONLY");
    if (!only || !*only || strstr(name, only)) CU_add_test(s, name, fn);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    if (CU_initialize_registry() != CUE_SUCCESS) return 1;
    CU_pSuite s = CU_add_suite("realtime", suite_init, suite_clean);
    add(s, "errors: NOT_FOUND, INVALID_ARGUMENT", test_errors);
    add(s, "WatchRun: order and completeness of a 3-step run", test_order_completeness);
    add(s, "WatchRun: resume after disconnects; replay from any point", test_resume);
    add(s, "WatchTask: token deltas equal the output", test_tokens);
    add(s, "WatchAgents: busy -> idle, resume", test_agents_busy_idle);
    add(s, "heartbeats on an idle stream", test_heartbeats);
    add(s, "200 concurrent watchers of one run", test_many_watchers);
    add(s, "slow consumer: RESOURCE_EXHAUSTED, others unaffected", test_slow_consumer);
    add(s, "webhooks: signed completion POSTs, retried", test_webhooks);
    add(s, "StreamMetrics snapshots", test_stream_metrics);
    add(s, "streams end on shutdown", test_shutdown);
    CU_pSuite rs = CU_add_suite("realtime-redis", redis_suite_init, suite_clean);
    add(rs, "Redis restarted during a run: no event lost", test_redis_restart);
    return az_itest_run_cunit();
}
