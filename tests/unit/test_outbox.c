/* CUnit suite for server/event/outbox against the embedded PostgreSQL: each transition of tasks
 * (server/task), runs (server/workflow/run) and agents (server/agent) writes exactly its events,
 * numbered gap-free per scope; a rollback writes none; concurrent appenders to one scope never
 * leave a gap or a duplicate; validation; retention. */
#include <CUnit/Basic.h>
#include <ftw.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "agent/agent.h"
#include "core/log.h"
#include "core/text.h"
#include "embed/embedded.h"
#include "event/outbox.h"
#include "store/migrate.h"
#include "store/pgpool.h"
#include "task/task.h"
#include "workflow/run.h"
#include "workflow/workflow.h"

#define T_UNSPEC AGENTZ__V1__TASK_STATUS__TASK_STATUS_UNSPECIFIED
#define T_PENDING AGENTZ__V1__TASK_STATUS__TASK_STATUS_PENDING
#define T_QUEUED AGENTZ__V1__TASK_STATUS__TASK_STATUS_QUEUED
#define T_RUNNING AGENTZ__V1__TASK_STATUS__TASK_STATUS_RUNNING
#define T_BACKOFF AGENTZ__V1__TASK_STATUS__TASK_STATUS_BACKOFF
#define T_SUCCEEDED AGENTZ__V1__TASK_STATUS__TASK_STATUS_SUCCEEDED
#define T_FAILED AGENTZ__V1__TASK_STATUS__TASK_STATUS_FAILED
#define T_CANCELLED AGENTZ__V1__TASK_STATUS__TASK_STATUS_CANCELLED

static char dir[64];
static az_embed *embed;
static az_pg *pg;
static az_arena *arena;
static char msg[AZ_MSG_MAX];
static const az_ctx ctx = {.workspace_id = AZ_DEFAULT_WORKSPACE, .principal = "", .request_id = "o",
                           .deadline_ms = -1};

static long long count(const char *sql, const char *param);

/* Every stored event of a scope, checked to be numbered 1..n without a gap. */
static Agentz__V1__Event **events(az_event_scope scope, const char *id, size_t *n)
{
    Agentz__V1__Event **v = NULL;
    *n = 0;
    CU_ASSERT_EQUAL_FATAL(az_outbox_list(pg, &ctx, scope, id, 0, 1000, arena, &v, n, msg), AZ_OK);
    for (size_t i = 0; i < *n; i++) {
        CU_ASSERT_EQUAL(v[i]->sequence, (int64_t)i + 1);
        CU_ASSERT_PTR_NOT_NULL(v[i]->time);
    }
    return v;
}

/* Asserts that ev is the task status change from -> to of task id (at attempt). */
static void is_task_change(const Agentz__V1__Event *ev, const char *id, int from, int to, int attempt)
{
    CU_ASSERT_EQUAL_FATAL(ev->payload_case, AGENTZ__V1__EVENT__PAYLOAD_TASK_STATUS);
    CU_ASSERT_STRING_EQUAL(ev->task_id, id);
    CU_ASSERT_EQUAL(ev->task_status->from, from);
    CU_ASSERT_EQUAL(ev->task_status->to, to);
    CU_ASSERT_EQUAL(ev->task_status->attempt, attempt);
    if ((int)ev->task_status->from != from || (int)ev->task_status->to != to)
        fprintf(stderr, "\n  task %s: got %d -> %d, want %d -> %d\n", id, ev->task_status->from,
                ev->task_status->to, from, to);
}

static Agentz__V1__Task *new_task(char **deps, size_t n_deps, const char *run_id)
{
    Agentz__V1__Task t = AGENTZ__V1__TASK__INIT, *out = NULL;
    t.description = "outbox work";
    t.agent_id = "0c0c0c0c-0000-4000-8000-000000000001";
    t.depends_on = deps;
    t.n_depends_on = n_deps;
    char id[37];
    CU_ASSERT_EQUAL_FATAL(az_text_uuid4(id), AZ_OK);
    t.id = id;
    t.run_id = (char *)(run_id ? run_id : "");
    t.step_id = run_id ? "step" : "";
    az_task_ready ready = {.arena = arena};
    az_pgconn *c;
    CU_ASSERT_EQUAL_FATAL(az_pg_acquire(pg, &ctx, &c, msg), AZ_OK);
    CU_ASSERT_EQUAL_FATAL(az_pg_begin(c, &ctx, msg), AZ_OK);
    CU_ASSERT_EQUAL_FATAL(az_task_insert(c, &ctx, &t, NULL, arena, &out, &ready, msg), AZ_OK);
    CU_ASSERT_EQUAL_FATAL(az_pg_commit(c, &ctx, msg), AZ_OK);
    az_pg_release(c);
    return out;
}

static void claim(const char *id)
{
    Agentz__V1__Task *t;
    CU_ASSERT_EQUAL_FATAL(az_task_claim(pg, &ctx, id, "w1", 0, arena, &t, msg), AZ_OK);
}

static void test_task_lifecycle(void)
{
    Agentz__V1__Task *a = new_task(NULL, 0, NULL);
    char *dep[1] = {a->id};
    Agentz__V1__Task *b = new_task(dep, 1, NULL);
    claim(a->id);
    az_task_ready ready = {.arena = arena};
    char run_id[37];
    CU_ASSERT_EQUAL_FATAL(az_task_complete(pg, &ctx, a->id, 1, NULL, NULL, run_id, &ready, msg), AZ_OK);
    CU_ASSERT_EQUAL(ready.n, 1);
    /* A stale second completion changes nothing and writes nothing. */
    CU_ASSERT_EQUAL(az_task_complete(pg, &ctx, a->id, 1, NULL, NULL, run_id, &ready, msg),
                    AZ_ERR_PRECONDITION);
    size_t n;
    Agentz__V1__Event **v = events(AZ_EVENT_SCOPE_TASK, a->id, &n);
    CU_ASSERT_EQUAL_FATAL(n, 3);
    is_task_change(v[0], a->id, T_UNSPEC, T_QUEUED, 0);
    is_task_change(v[1], a->id, T_QUEUED, T_RUNNING, 1);
    is_task_change(v[2], a->id, T_RUNNING, T_SUCCEEDED, 1);
    CU_ASSERT_STRING_EQUAL(v[2]->agent_id, "0c0c0c0c-0000-4000-8000-000000000001");
    CU_ASSERT_STRING_EQUAL(v[2]->run_id, "");
    v = events(AZ_EVENT_SCOPE_TASK, b->id, &n);
    CU_ASSERT_EQUAL_FATAL(n, 2);
    is_task_change(v[0], b->id, T_UNSPEC, T_PENDING, 0);
    is_task_change(v[1], b->id, T_PENDING, T_QUEUED, 0);
    /* after_sequence: only what follows. */
    CU_ASSERT_EQUAL(az_outbox_list(pg, &ctx, AZ_EVENT_SCOPE_TASK, a->id, 2, 10, arena, &v, &n, msg), AZ_OK);
    CU_ASSERT_EQUAL_FATAL(n, 1);
    CU_ASSERT_EQUAL(v[0]->sequence, 3);
    CU_ASSERT_EQUAL(az_outbox_list(pg, &ctx, AZ_EVENT_SCOPE_TASK, a->id, 3, 10, arena, &v, &n, msg), AZ_OK);
    CU_ASSERT_EQUAL(n, 0);
}

static void test_webhooks_queued_on_terminal_events(void)
{
    Agentz__V1__Task t = AGENTZ__V1__TASK__INIT, *out;
    char *hooks[2] = {"http://127.0.0.1:9/hook", "https://example.com/agentz"};
    t.description = "hooked";
    t.webhook_urls = hooks;
    t.n_webhook_urls = 2;
    az_task_ready ready = {.arena = arena};
    int replayed;
    CU_ASSERT_EQUAL_FATAL(az_task_create(pg, &ctx, &t, "", "", arena, &out, &replayed, &ready, msg), AZ_OK);
    static const char q[] = "SELECT count(*) FROM webhook_deliveries WHERE task_id = $1";
    CU_ASSERT_EQUAL(count(q, out->id), 0); /* not terminal yet */
    claim(out->id);
    CU_ASSERT_EQUAL(count(q, out->id), 0);
    CU_ASSERT_EQUAL_FATAL(az_task_complete(pg, &ctx, out->id, 1, NULL, NULL, NULL, &ready, msg), AZ_OK);
    CU_ASSERT_EQUAL(count(q, out->id), 2);
    CU_ASSERT_EQUAL(count("SELECT count(*) FROM webhook_deliveries d JOIN events e ON e.id = d.event_id"
                          " WHERE d.task_id = $1 AND d.event_type = 'task.succeeded' AND e.terminal",
                          out->id), 2);
}

static void test_failure_cascade_and_retry(void)
{
    Agentz__V1__Task *a = new_task(NULL, 0, NULL);
    char *dep[1] = {a->id};
    Agentz__V1__Task *b = new_task(dep, 1, NULL);
    claim(a->id);
    Agentz__V1__TaskError e = AGENTZ__V1__TASK_ERROR__INIT;
    e.type = "boom";
    e.message = "it broke";
    e.retryable = 0;
    int64_t next = -1;
    CU_ASSERT_EQUAL_FATAL(az_task_fail(pg, &ctx, a->id, 1, &e, NULL, &next, NULL, msg), AZ_OK);
    CU_ASSERT_EQUAL(next, 0);
    size_t n;
    Agentz__V1__Event **v = events(AZ_EVENT_SCOPE_TASK, a->id, &n);
    CU_ASSERT_EQUAL_FATAL(n, 3);
    is_task_change(v[2], a->id, T_RUNNING, T_FAILED, 1);
    CU_ASSERT_PTR_NOT_NULL_FATAL(v[2]->task_status->error);
    CU_ASSERT_STRING_EQUAL(v[2]->task_status->error->type, "boom");
    CU_ASSERT_STRING_EQUAL(v[2]->task_status->error->message, "it broke");
    v = events(AZ_EVENT_SCOPE_TASK, b->id, &n);
    CU_ASSERT_EQUAL_FATAL(n, 2);
    is_task_change(v[1], b->id, T_PENDING, T_CANCELLED, 0);
    CU_ASSERT_PTR_NOT_NULL_FATAL(v[1]->task_status->error);
    CU_ASSERT_STRING_EQUAL(v[1]->task_status->error->type, "dependency_failed");

    /* RetryTask: a back to queued, b restored to pending. */
    Agentz__V1__Task *out;
    az_task_ready ready = {.arena = arena};
    CU_ASSERT_EQUAL_FATAL(az_task_retry(pg, &ctx, a->id, arena, &out, NULL, &ready, msg), AZ_OK);
    v = events(AZ_EVENT_SCOPE_TASK, a->id, &n);
    CU_ASSERT_EQUAL_FATAL(n, 4);
    is_task_change(v[3], a->id, T_FAILED, T_QUEUED, 1);
    CU_ASSERT_PTR_NULL(v[3]->task_status->error);
    v = events(AZ_EVENT_SCOPE_TASK, b->id, &n);
    CU_ASSERT_EQUAL_FATAL(n, 3);
    is_task_change(v[2], b->id, T_CANCELLED, T_PENDING, 0);

    /* A retryable failure goes to backoff, then (due at once) wake queues it. */
    claim(a->id);
    e.retryable = 1;
    e.type = "llm_rate_limited";
    CU_ASSERT_EQUAL_FATAL(az_task_fail_after(pg, &ctx, a->id, 2, &e, NULL, 0, &next, NULL, msg), AZ_OK);
    CU_ASSERT(next > 0);
    v = events(AZ_EVENT_SCOPE_TASK, a->id, &n);
    CU_ASSERT_EQUAL_FATAL(n, 6);
    is_task_change(v[4], a->id, T_QUEUED, T_RUNNING, 2);
    is_task_change(v[5], a->id, T_RUNNING, T_BACKOFF, 2);

    /* CancelTask from backoff cascades to b again. */
    CU_ASSERT_EQUAL_FATAL(az_task_cancel(pg, &ctx, a->id, "stop", arena, &out, NULL, msg), AZ_OK);
    v = events(AZ_EVENT_SCOPE_TASK, a->id, &n);
    CU_ASSERT_EQUAL_FATAL(n, 7);
    is_task_change(v[6], a->id, T_BACKOFF, T_CANCELLED, 2);
    CU_ASSERT_STRING_EQUAL(v[6]->task_status->error->message, "stop");
    v = events(AZ_EVENT_SCOPE_TASK, b->id, &n);
    CU_ASSERT_EQUAL_FATAL(n, 4);
    is_task_change(v[3], b->id, T_PENDING, T_CANCELLED, 0);
    /* Cancelling again is idempotent and writes nothing. */
    CU_ASSERT_EQUAL(az_task_cancel(pg, &ctx, a->id, "again", arena, &out, NULL, msg), AZ_OK);
    v = events(AZ_EVENT_SCOPE_TASK, a->id, &n);
    CU_ASSERT_EQUAL(n, 7);
}

static void test_release_and_wake(void)
{
    Agentz__V1__Task *a = new_task(NULL, 0, NULL);
    claim(a->id);
    az_task_ready ready = {.arena = arena};
    CU_ASSERT_EQUAL_FATAL(az_task_release(pg, &ctx, a->id, 1, &ready, msg), AZ_OK);
    size_t n;
    Agentz__V1__Event **v = events(AZ_EVENT_SCOPE_TASK, a->id, &n);
    CU_ASSERT_EQUAL_FATAL(n, 3);
    is_task_change(v[2], a->id, T_RUNNING, T_QUEUED, 1);
    /* Backoff with a due time in the past, then wake. */
    claim(a->id);
    Agentz__V1__TaskError e = AGENTZ__V1__TASK_ERROR__INIT;
    e.type = "t";
    e.message = "m";
    e.retryable = 1;
    CU_ASSERT_EQUAL_FATAL(az_task_fail(pg, &ctx, a->id, 2, &e, NULL, NULL, NULL, msg), AZ_OK);
    az_pgconn *c;
    CU_ASSERT_EQUAL_FATAL(az_pg_acquire(pg, &ctx, &c, msg), AZ_OK);
    const char *p[1] = {a->id};
    CU_ASSERT_EQUAL(az_pg_exec(c, &ctx, "UPDATE tasks SET next_attempt_time = now() - interval '1 s'"
                                        " WHERE id = $1", 1, p, NULL, msg), AZ_OK);
    az_pg_release(c);
    CU_ASSERT_EQUAL_FATAL(az_task_wake(pg, &ctx, 1000, arena, &ready, msg), AZ_OK);
    v = events(AZ_EVENT_SCOPE_TASK, a->id, &n);
    CU_ASSERT_EQUAL_FATAL(n, 6);
    is_task_change(v[4], a->id, T_RUNNING, T_BACKOFF, 2);
    is_task_change(v[5], a->id, T_BACKOFF, T_QUEUED, 2);
}

static void test_run_scope(void)
{
    char run[37];
    CU_ASSERT_EQUAL_FATAL(az_text_uuid4(run), AZ_OK);
    Agentz__V1__Task *a = new_task(NULL, 0, run);
    char *dep[1] = {a->id};
    Agentz__V1__Task *b = new_task(dep, 1, run);
    claim(a->id);
    az_pgconn *c;
    int changed = 0;
    CU_ASSERT_EQUAL_FATAL(az_pg_acquire(pg, &ctx, &c, msg), AZ_OK);
    CU_ASSERT_EQUAL_FATAL(az_pg_begin(c, &ctx, msg), AZ_OK);
    CU_ASSERT_EQUAL_FATAL(az_task_cancel_run(c, &ctx, run, "halt", &changed, msg), AZ_OK);
    CU_ASSERT_EQUAL_FATAL(az_pg_commit(c, &ctx, msg), AZ_OK);
    CU_ASSERT_EQUAL(changed, 2);
    size_t n;
    Agentz__V1__Event **v = events(AZ_EVENT_SCOPE_RUN, run, &n);
    /* created a, created b, a claimed, a and b cancelled (either order: one statement). */
    CU_ASSERT_EQUAL_FATAL(n, 5);
    is_task_change(v[0], a->id, T_UNSPEC, T_QUEUED, 0);
    is_task_change(v[1], b->id, T_UNSPEC, T_PENDING, 0);
    is_task_change(v[2], a->id, T_QUEUED, T_RUNNING, 1);
    for (int i = 3; i < 5; i++) {
        int is_a = strcmp(v[i]->task_id, a->id) == 0;
        is_task_change(v[i], is_a ? a->id : b->id, is_a ? T_RUNNING : T_PENDING, T_CANCELLED, is_a);
        CU_ASSERT_STRING_EQUAL(v[i]->run_id, run);
        CU_ASSERT_STRING_EQUAL(v[i]->step_id, "step");
    }
    /* The task scope numbers the same events separately. */
    Agentz__V1__Event **tv = events(AZ_EVENT_SCOPE_TASK, b->id, &n);
    CU_ASSERT_EQUAL(n, 2);
    (void)tv;

    /* ResumeRun: a (no dependencies) -> queued, b -> pending, one event each. */
    az_task_ready ready = {.arena = arena};
    CU_ASSERT_EQUAL_FATAL(az_pg_begin(c, &ctx, msg), AZ_OK);
    CU_ASSERT_EQUAL_FATAL(az_task_resume_run(c, &ctx, run, &changed, &ready, msg), AZ_OK);
    CU_ASSERT_EQUAL_FATAL(az_pg_commit(c, &ctx, msg), AZ_OK);
    az_pg_release(c);
    CU_ASSERT_EQUAL(ready.n, 1);
    v = events(AZ_EVENT_SCOPE_RUN, run, &n);
    CU_ASSERT_EQUAL_FATAL(n, 7);
    for (int i = 5; i < 7; i++) {
        int is_a = strcmp(v[i]->task_id, a->id) == 0;
        is_task_change(v[i], is_a ? a->id : b->id, T_CANCELLED, is_a ? T_QUEUED : T_PENDING, is_a);
    }
}

/* Asserts that ev is the run status change from -> to of run id. */
static void is_run_change(const Agentz__V1__Event *ev, const char *id, int from, int to)
{
    CU_ASSERT_EQUAL_FATAL(ev->payload_case, AGENTZ__V1__EVENT__PAYLOAD_RUN_STATUS);
    CU_ASSERT_STRING_EQUAL(ev->run_id, id);
    CU_ASSERT_STRING_EQUAL(ev->task_id, "");
    CU_ASSERT_EQUAL(ev->run_status->from, from);
    CU_ASSERT_EQUAL(ev->run_status->to, to);
}

static void test_run_events(void)
{
    Agentz__V1__Step st[2] = {AGENTZ__V1__STEP__INIT, AGENTZ__V1__STEP__INIT}, *steps[2] = {&st[0], &st[1]};
    st[0].id = "research";
    st[1].id = "write";
    for (int i = 0; i < 2; i++) {
        st[i].agent_id = "0c0c0c0c-0000-4000-8000-000000000001";
        st[i].description = "do it";
        st[i].expected_output = "done";
    }
    Agentz__V1__Workflow w = AGENTZ__V1__WORKFLOW__INIT, *wf;
    w.name = "outbox-flow";
    w.steps = steps;
    w.n_steps = 2;
    w.process = AGENTZ__V1__PROCESS__PROCESS_SEQUENTIAL;
    int replayed;
    CU_ASSERT_EQUAL_FATAL(az_workflow_create(pg, &ctx, &w, "", "", arena, &wf, &replayed, msg), AZ_OK);
    Agentz__V1__WorkflowRun *run;
    az_task_ready ready = {.arena = arena};
    CU_ASSERT_EQUAL_FATAL(az_run_start(pg, &ctx, wf, NULL, 0, "", "", arena, &run, &replayed, &ready, msg), AZ_OK);
    CU_ASSERT_EQUAL_FATAL(ready.n, 1);
    size_t n;
    Agentz__V1__Event **v = events(AZ_EVENT_SCOPE_RUN, run->id, &n);
    /* The run is created, then its tasks, then it runs. */
    CU_ASSERT_EQUAL_FATAL(n, 4);
    is_run_change(v[0], run->id, 0, AGENTZ__V1__RUN_STATUS__RUN_STATUS_PENDING);
    CU_ASSERT_EQUAL(v[1]->task_status->to, T_QUEUED);
    CU_ASSERT_STRING_EQUAL(v[1]->step_id, "research");
    CU_ASSERT_EQUAL(v[2]->task_status->to, T_PENDING);
    CU_ASSERT_STRING_EQUAL(v[2]->step_id, "write");
    is_run_change(v[3], run->id, AGENTZ__V1__RUN_STATUS__RUN_STATUS_PENDING,
                  AGENTZ__V1__RUN_STATUS__RUN_STATUS_RUNNING);
    const char *first = ready.ids[0];
    char second[37];
    snprintf(second, sizeof second, "%s", v[2]->task_id);
    /* A sync that changes nothing writes nothing. */
    CU_ASSERT_EQUAL(az_run_sync(pg, &ctx, run->id, msg), AZ_OK);
    events(AZ_EVENT_SCOPE_RUN, run->id, &n);
    CU_ASSERT_EQUAL(n, 4);
    /* First step fails for good: the run fails (fail fast), the second step is cancelled. */
    claim(first);
    Agentz__V1__TaskError e = AGENTZ__V1__TASK_ERROR__INIT;
    e.type = "bad_output";
    e.message = "nope";
    CU_ASSERT_EQUAL_FATAL(az_task_fail(pg, &ctx, first, 1, &e, NULL, NULL, NULL, msg), AZ_OK);
    CU_ASSERT_EQUAL_FATAL(az_run_sync(pg, &ctx, run->id, msg), AZ_OK);
    v = events(AZ_EVENT_SCOPE_RUN, run->id, &n);
    CU_ASSERT_EQUAL_FATAL(n, 8);
    is_task_change(v[4], first, T_QUEUED, T_RUNNING, 1);
    is_task_change(v[5], first, T_RUNNING, T_FAILED, 1);
    is_task_change(v[6], second, T_PENDING, T_CANCELLED, 0);
    is_run_change(v[7], run->id, AGENTZ__V1__RUN_STATUS__RUN_STATUS_RUNNING,
                  AGENTZ__V1__RUN_STATUS__RUN_STATUS_FAILED);
    CU_ASSERT_PTR_NOT_NULL(v[7]->run_status->error);
    /* ResumeRun: failed -> running, and the tasks come back. */
    CU_ASSERT_EQUAL_FATAL(az_run_resume(pg, &ctx, run->id, arena, &run, &ready, msg), AZ_OK);
    v = events(AZ_EVENT_SCOPE_RUN, run->id, &n);
    CU_ASSERT_EQUAL_FATAL(n, 11);
    is_task_change(v[8], first, T_FAILED, T_QUEUED, 1);
    is_task_change(v[9], second, T_CANCELLED, T_PENDING, 0);
    is_run_change(v[10], run->id, AGENTZ__V1__RUN_STATUS__RUN_STATUS_FAILED,
                  AGENTZ__V1__RUN_STATUS__RUN_STATUS_RUNNING);
}

static void test_rollback_writes_nothing(void)
{
    char run[37], id[37];
    CU_ASSERT_EQUAL_FATAL(az_text_uuid4(run), AZ_OK);
    CU_ASSERT_EQUAL_FATAL(az_text_uuid4(id), AZ_OK);
    Agentz__V1__TaskStatusChanged ch = AGENTZ__V1__TASK_STATUS_CHANGED__INIT;
    ch.to = T_QUEUED;
    Agentz__V1__Event ev = AGENTZ__V1__EVENT__INIT;
    ev.run_id = run;
    ev.task_id = id;
    ev.payload_case = AGENTZ__V1__EVENT__PAYLOAD_TASK_STATUS;
    ev.task_status = &ch;
    az_pgconn *c;
    CU_ASSERT_EQUAL_FATAL(az_pg_acquire(pg, &ctx, &c, msg), AZ_OK);
    /* Committed, rolled back, committed: the second committed one is number 2. */
    for (int i = 0; i < 3; i++) {
        CU_ASSERT_EQUAL_FATAL(az_pg_begin(c, &ctx, msg), AZ_OK);
        ch.attempt = i;
        CU_ASSERT_EQUAL_FATAL(az_outbox_append(c, &ctx, &ev, NULL, 0, msg), AZ_OK);
        if (i == 1) az_pg_rollback(c);
        else CU_ASSERT_EQUAL_FATAL(az_pg_commit(c, &ctx, msg), AZ_OK);
    }
    az_pg_release(c);
    size_t n;
    Agentz__V1__Event **v = events(AZ_EVENT_SCOPE_RUN, run, &n);
    CU_ASSERT_EQUAL_FATAL(n, 2);
    CU_ASSERT_EQUAL(v[0]->task_status->attempt, 0);
    CU_ASSERT_EQUAL(v[1]->task_status->attempt, 2);
    v = events(AZ_EVENT_SCOPE_TASK, id, &n);
    CU_ASSERT_EQUAL(n, 2);

    /* A transition that fails (task of a dependency that does not exist) leaves no event. */
    Agentz__V1__Task t = AGENTZ__V1__TASK__INIT, *out;
    char *missing[1] = {"0d0d0d0d-0000-4000-8000-000000000009"};
    t.description = "x";
    t.id = id;
    t.depends_on = missing;
    t.n_depends_on = 1;
    az_task_ready ready = {.arena = arena};
    int replayed;
    CU_ASSERT_EQUAL(az_task_create(pg, &ctx, &t, "", "", arena, &out, &replayed, &ready, msg), AZ_ERR_INVALID);
    CU_ASSERT_EQUAL(ready.n, 0);
}

static void test_append_many(void)
{
    char run[37], t1[37], t2[37];
    CU_ASSERT_EQUAL_FATAL(az_text_uuid4(run), AZ_OK);
    CU_ASSERT_EQUAL_FATAL(az_text_uuid4(t1), AZ_OK);
    CU_ASSERT_EQUAL_FATAL(az_text_uuid4(t2), AZ_OK);
    Agentz__V1__TaskStatusChanged ch[6];
    Agentz__V1__Event ev[6];
    const Agentz__V1__Event *pv[6];
    for (int i = 0; i < 6; i++) {
        agentz__v1__task_status_changed__init(&ch[i]);
        ch[i].to = T_QUEUED;
        ch[i].attempt = i;
        agentz__v1__event__init(&ev[i]);
        ev[i].run_id = run;
        ev[i].task_id = i % 2 ? t2 : t1;
        ev[i].payload_case = AGENTZ__V1__EVENT__PAYLOAD_TASK_STATUS;
        ev[i].task_status = &ch[i];
        pv[i] = &ev[i];
    }
    Agentz__V1__AgentStatusChanged ag = AGENTZ__V1__AGENT_STATUS_CHANGED__INIT;
    ag.to = AGENTZ__V1__AGENT_STATUS__AGENT_STATUS_BUSY;
    Agentz__V1__Event agev = AGENTZ__V1__EVENT__INIT;
    agev.payload_case = AGENTZ__V1__EVENT__PAYLOAD_AGENT_STATUS;
    agev.agent_status = &ag;
    size_t agents_before;
    events(AZ_EVENT_SCOPE_AGENTS, NULL, &agents_before);
    long long queued_before = count("SELECT count(*) FROM event_queue WHERE $1 <> ''", "x");

    /* A single append, a batch of five (tasks t1/t2 interleaved, one agents event in the
     * middle), a single append: numbered as seven single appends would be. */
    az_pgconn *c;
    CU_ASSERT_EQUAL_FATAL(az_pg_acquire(pg, &ctx, &c, msg), AZ_OK);
    CU_ASSERT_EQUAL_FATAL(az_pg_begin(c, &ctx, msg), AZ_OK);
    CU_ASSERT_EQUAL_FATAL(az_outbox_append(c, &ctx, pv[0], NULL, 0, msg), AZ_OK);
    const Agentz__V1__Event *batch[5] = {pv[1], pv[2], &agev, pv[3], pv[4]};
    CU_ASSERT_EQUAL_FATAL(az_outbox_append_many(c, &ctx, batch, 5, msg), AZ_OK);
    CU_ASSERT_EQUAL_FATAL(az_outbox_append(c, &ctx, pv[5], NULL, 0, msg), AZ_OK);
    CU_ASSERT_EQUAL_FATAL(az_pg_commit(c, &ctx, msg), AZ_OK);
    /* Rolled back: no event, no gap. */
    CU_ASSERT_EQUAL_FATAL(az_pg_begin(c, &ctx, msg), AZ_OK);
    CU_ASSERT_EQUAL_FATAL(az_outbox_append_many(c, &ctx, pv, 2, msg), AZ_OK);
    CU_ASSERT_EQUAL(az_pg_exec(c, &ctx, "SELECT 1/0", 0, NULL, NULL, msg) == AZ_OK, 0);
    az_pg_rollback(c);
    az_pg_release(c);

    size_t n;
    Agentz__V1__Event **v = events(AZ_EVENT_SCOPE_RUN, run, &n); /* checks 1..n */
    CU_ASSERT_EQUAL_FATAL(n, 6);
    for (size_t i = 0; i < n; i++) CU_ASSERT_EQUAL(v[i]->task_status->attempt, (int)i);
    v = events(AZ_EVENT_SCOPE_TASK, t1, &n);
    CU_ASSERT_EQUAL_FATAL(n, 3);
    CU_ASSERT_TRUE(v[0]->task_status->attempt == 0 && v[1]->task_status->attempt == 2 &&
                   v[2]->task_status->attempt == 4);
    v = events(AZ_EVENT_SCOPE_TASK, t2, &n);
    CU_ASSERT_EQUAL_FATAL(n, 3);
    CU_ASSERT_TRUE(v[0]->task_status->attempt == 1 && v[1]->task_status->attempt == 3 &&
                   v[2]->task_status->attempt == 5);
    v = events(AZ_EVENT_SCOPE_AGENTS, NULL, &n);
    CU_ASSERT_EQUAL(n, agents_before + 1);
    /* ids follow the sequence numbers, and every event is queued for the relay */
    CU_ASSERT_EQUAL(count("SELECT count(*) FROM (SELECT id, run_seq, lag(id) OVER (ORDER BY run_seq) AS prev"
                          " FROM events WHERE run_id = $1::uuid) x WHERE prev > id", run), 0);
    CU_ASSERT_EQUAL(count("SELECT count(*) FROM events WHERE run_id = $1::uuid AND id IN (SELECT id FROM event_queue)",
                          run), 6);
    CU_ASSERT_EQUAL(count("SELECT count(*) FROM event_queue WHERE $1 <> ''", "x") - queued_before, 7);

    /* Validation names the event; nothing is queued. */
    CU_ASSERT_EQUAL_FATAL(az_pg_acquire(pg, &ctx, &c, msg), AZ_OK);
    Agentz__V1__Event empty = AGENTZ__V1__EVENT__INIT;
    const Agentz__V1__Event *bad[2] = {pv[0], &empty};
    CU_ASSERT_EQUAL(az_outbox_append_many(c, &ctx, bad, 2, msg), AZ_ERR_INVALID);
    CU_ASSERT_PTR_NOT_NULL(strstr(msg, "events[1]"));
    CU_ASSERT_EQUAL(az_outbox_append_many(c, &ctx, bad, AZ_OUTBOX_BATCH_MAX + 1, msg), AZ_ERR_INVALID);
    CU_ASSERT_EQUAL(az_outbox_append_many(c, &ctx, bad, 0, msg), AZ_OK);
    az_pg_release(c);
    v = events(AZ_EVENT_SCOPE_RUN, run, &n);
    CU_ASSERT_EQUAL(n, 6);
}

static void test_validation(void)
{
    Agentz__V1__Event ev = AGENTZ__V1__EVENT__INIT;
    az_pgconn *c;
    CU_ASSERT_EQUAL_FATAL(az_pg_acquire(pg, &ctx, &c, msg), AZ_OK);
    CU_ASSERT_EQUAL(az_outbox_append(c, &ctx, &ev, NULL, 0, msg), AZ_ERR_INVALID);
    CU_ASSERT_PTR_NOT_NULL(strstr(msg, "payload"));
    Agentz__V1__Progress pr = AGENTZ__V1__PROGRESS__INIT;
    ev.payload_case = AGENTZ__V1__EVENT__PAYLOAD_PROGRESS;
    ev.progress = &pr;
    CU_ASSERT_EQUAL(az_outbox_append(c, &ctx, &ev, NULL, 0, msg), AZ_ERR_INVALID); /* no scope */
    CU_ASSERT_PTR_NOT_NULL(strstr(msg, "scope"));
    az_ctx nows = ctx;
    nows.workspace_id = "";
    ev.run_id = "0e0e0e0e-0000-4000-8000-000000000001";
    CU_ASSERT_EQUAL(az_outbox_append(c, &nows, &ev, NULL, 0, msg), AZ_ERR_INVALID);
    az_pg_release(c);
    Agentz__V1__Event **v;
    size_t n;
    CU_ASSERT_EQUAL(az_outbox_list(pg, &ctx, AZ_EVENT_SCOPE_RUN, "nope", 0, 10, arena, &v, &n, msg), AZ_ERR_INVALID);
    CU_ASSERT_PTR_NOT_NULL(strstr(msg, "run_id"));
    CU_ASSERT_EQUAL(az_outbox_list(pg, &ctx, AZ_EVENT_SCOPE_TASK, ev.run_id, 0, 0, arena, &v, &n, msg), AZ_ERR_INVALID);
    CU_ASSERT_EQUAL(az_outbox_list(pg, &ctx, AZ_EVENT_SCOPE_TASK, ev.run_id, 0, 1001, arena, &v, &n, msg), AZ_ERR_INVALID);
    CU_ASSERT_EQUAL(az_outbox_list(pg, &ctx, (az_event_scope)9, ev.run_id, 0, 10, arena, &v, &n, msg), AZ_ERR_INVALID);
    /* Another workspace sees nothing of this one. */
    az_ctx other = ctx;
    other.workspace_id = "0f0f0f0f-0000-4000-8000-000000000001";
    CU_ASSERT_EQUAL(az_outbox_list(pg, &other, AZ_EVENT_SCOPE_AGENTS, NULL, 0, 10, arena, &v, &n, msg), AZ_OK);
    CU_ASSERT_EQUAL(n, 0);
}

#define HOLDER "outbox-worker"

static void test_agent_status_events(void)
{
    Agentz__V1__Agent in = AGENTZ__V1__AGENT__INIT, *ag;
    in.name = "outbox-agent";
    in.role = "r";
    in.goal = "g";
    in.backstory = "b";
    int replayed;
    CU_ASSERT_EQUAL_FATAL(az_agent_create(pg, &ctx, &in, "", "", arena, &ag, &replayed, msg), AZ_OK);
    size_t before, n;
    events(AZ_EVENT_SCOPE_AGENTS, NULL, &before);
    CU_ASSERT_EQUAL_FATAL(az_agent_task_started(pg, &ctx, ag->id, HOLDER, msg), AZ_OK); /* idle -> busy */
    CU_ASSERT_EQUAL_FATAL(az_agent_task_started(pg, &ctx, ag->id, HOLDER, msg), AZ_OK); /* stays busy */
    CU_ASSERT_EQUAL_FATAL(az_agent_task_ended(pg, &ctx, ag->id, HOLDER, 0, msg), AZ_OK);  /* stays busy */
    CU_ASSERT_EQUAL_FATAL(az_agent_task_ended(pg, &ctx, ag->id, HOLDER, 1, msg), AZ_OK);  /* busy -> error */
    CU_ASSERT_EQUAL_FATAL(az_agent_task_started(pg, &ctx, ag->id, HOLDER, msg), AZ_OK); /* error -> busy */
    CU_ASSERT_EQUAL_FATAL(az_agent_task_ended(pg, &ctx, ag->id, HOLDER, 0, msg), AZ_OK);  /* busy -> idle */
    CU_ASSERT_EQUAL(az_agent_task_started(pg, &ctx, "0d0d0d0d-0000-4000-8000-00000000000f", HOLDER, msg),
                    AZ_ERR_NOT_FOUND);
    Agentz__V1__Event **v = events(AZ_EVENT_SCOPE_AGENTS, NULL, &n);
    CU_ASSERT_EQUAL_FATAL(n, before + 4);
    static const int want[4][2] = {{1, 2}, {2, 4}, {4, 2}, {2, 1}};
    for (size_t i = 0; i < 4; i++) {
        Agentz__V1__Event *ev = v[before + i];
        CU_ASSERT_EQUAL_FATAL(ev->payload_case, AGENTZ__V1__EVENT__PAYLOAD_AGENT_STATUS);
        CU_ASSERT_STRING_EQUAL(ev->agent_id, ag->id);
        CU_ASSERT_EQUAL(ev->agent_status->from, want[i][0]);
        CU_ASSERT_EQUAL(ev->agent_status->to, want[i][1]);
    }
    CU_ASSERT_STRING_EQUAL(v[before + 1]->agent_status->reason, "its last task failed");
}

/* ---------------------------------------------------------------- concurrency */

#define THREADS 6
#define PER_THREAD 40

static char race_run[37];

static void *appender(void *arg)
{
    long k = (long)arg;
    char m[AZ_MSG_MAX];
    az_pgconn *c;
    if (az_pg_acquire(pg, &ctx, &c, m) != AZ_OK) return (void *)1;
    long bad = 0;
    for (int i = 0; i < PER_THREAD; i++) {
        Agentz__V1__Progress pr = AGENTZ__V1__PROGRESS__INIT;
        pr.completed_steps = (int32_t)(k * 1000 + i);
        Agentz__V1__Event ev = AGENTZ__V1__EVENT__INIT;
        ev.run_id = race_run;
        ev.payload_case = AGENTZ__V1__EVENT__PAYLOAD_PROGRESS;
        ev.progress = &pr;
        if (az_pg_begin(c, &ctx, m) != AZ_OK || az_outbox_append(c, &ctx, &ev, NULL, 0, m) != AZ_OK) {
            bad++;
            az_pg_rollback(c);
            continue;
        }
        usleep(200); /* hold the counter a little, so others queue behind it */
        if (i % 5 == 4) az_pg_rollback(c); /* every fifth is rolled back */
        else if (az_pg_commit(c, &ctx, m) != AZ_OK) bad++;
    }
    az_pg_release(c);
    return (void *)bad;
}

static void test_concurrent_appenders_gap_free(void)
{
    CU_ASSERT_EQUAL_FATAL(az_text_uuid4(race_run), AZ_OK);
    pthread_t th[THREADS];
    for (long i = 0; i < THREADS; i++) pthread_create(&th[i], NULL, appender, (void *)i);
    for (int i = 0; i < THREADS; i++) {
        void *bad;
        pthread_join(th[i], &bad);
        CU_ASSERT_PTR_NULL(bad);
    }
    size_t n;
    Agentz__V1__Event **v = events(AZ_EVENT_SCOPE_RUN, race_run, &n); /* asserts 1..n */
    CU_ASSERT_EQUAL(n, THREADS * PER_THREAD * 4 / 5);
    /* Per appender, its committed events are in the order it made them. */
    int last[THREADS];
    for (int i = 0; i < THREADS; i++) last[i] = -1;
    for (size_t i = 0; i < n; i++) {
        int k = v[i]->progress->completed_steps / 1000, j = v[i]->progress->completed_steps % 1000;
        CU_ASSERT_FATAL(k >= 0 && k < THREADS);
        CU_ASSERT(j > last[k]);
        CU_ASSERT(j % 5 != 4);
        last[k] = j;
    }
    /* Within the scope id order is sequence order (the relay publishes in id order). */
    CU_ASSERT_EQUAL(count("SELECT count(*) FROM events a JOIN events b ON b.run_id = a.run_id"
                          " AND b.run_seq > a.run_seq AND b.id < a.id WHERE a.run_id = $1",
                          race_run), 0);
}

/* ---------------------------------------------------------------- retention */

static long long count(const char *sql, const char *param)
{
    az_pgconn *c;
    PGresult *r;
    long long n = -1;
    const char *p[1] = {param};
    CU_ASSERT_EQUAL_FATAL(az_pg_acquire(pg, &ctx, &c, msg), AZ_OK);
    if (az_pg_exec(c, &ctx, sql, param ? 1 : 0, param ? p : NULL, &r, msg) == AZ_OK) {
        n = atoll(PQgetvalue(r, 0, 0));
        PQclear(r);
    }
    az_pg_release(c);
    return n;
}

static void mark_all_published(void)
{
    az_pgconn *c;
    CU_ASSERT_EQUAL_FATAL(az_pg_acquire(pg, &ctx, &c, msg), AZ_OK);
    CU_ASSERT_EQUAL(az_pg_exec(c, &ctx, "DELETE FROM event_queue", 0, NULL, NULL, msg), AZ_OK);
    az_pg_release(c);
}

static void test_prune(void)
{
    Agentz__V1__Task *done = new_task(NULL, 0, NULL), *open = new_task(NULL, 0, NULL);
    claim(done->id);
    az_task_ready ready = {.arena = arena};
    CU_ASSERT_EQUAL_FATAL(az_task_complete(pg, &ctx, done->id, 1, NULL, NULL, NULL, &ready, msg), AZ_OK);
    static const char per_task[] = "SELECT count(*) FROM events WHERE task_id = $1";
    CU_ASSERT_EQUAL(count(per_task, done->id), 3);
    int64_t deleted = -1;
    /* Not yet published: kept, whatever its age. */
    CU_ASSERT_EQUAL_FATAL(az_outbox_prune(pg, 0, &deleted, msg), AZ_OK);
    CU_ASSERT_EQUAL(count(per_task, done->id), 3);
    mark_all_published();
    /* Published but younger than the retention: kept. */
    CU_ASSERT_EQUAL_FATAL(az_outbox_prune(pg, 3600 * 1000, &deleted, msg), AZ_OK);
    CU_ASSERT_EQUAL(count(per_task, done->id), 3);
    usleep(20 * 1000);
    CU_ASSERT_EQUAL_FATAL(az_outbox_prune(pg, 10, &deleted, msg), AZ_OK);
    CU_ASSERT(deleted >= 3);
    CU_ASSERT_EQUAL(count(per_task, done->id), 0);
    /* An unfinished task keeps its history. */
    CU_ASSERT_EQUAL(count(per_task, open->id), 1);
    CU_ASSERT_EQUAL(az_outbox_prune(pg, -1, &deleted, msg), AZ_ERR_INVALID);
}

static void test_decode(void)
{
    Agentz__V1__Event ev = AGENTZ__V1__EVENT__INIT, *out = NULL;
    Agentz__V1__Heartbeat hb = AGENTZ__V1__HEARTBEAT__INIT;
    ev.payload_case = AGENTZ__V1__EVENT__PAYLOAD_HEARTBEAT;
    ev.heartbeat = &hb;
    ev.run_id = "r";
    uint8_t buf[64];
    size_t len = agentz__v1__event__pack(&ev, buf);
    CU_ASSERT_EQUAL_FATAL(az_outbox_decode(buf, len, 7, 1500000, NULL, &out, msg), AZ_OK);
    CU_ASSERT_EQUAL(out->sequence, 7);
    CU_ASSERT_EQUAL(out->time->seconds, 1);
    CU_ASSERT_EQUAL(out->time->nanos, 500000000);
    CU_ASSERT_STRING_EQUAL(out->run_id, "r");
    agentz__v1__event__free_unpacked(out, NULL);
    uint8_t junk[3] = {0xff, 0xff, 0xff};
    CU_ASSERT_EQUAL(az_outbox_decode(junk, 3, 1, 0, NULL, &out, msg), AZ_ERR_INTERNAL);
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    remove(path);
    return 0;
}

static int suite_init(void)
{
    az_log_set_level(AZ_LOG_WARN);
    snprintf(dir, sizeof dir, "/tmp/aztest-outbox-XXXXXX");
    if (!mkdtemp(dir) || chmod(dir, 0755) != 0) return -1;
    if (az_embed_start(dir, &embed, msg) != AZ_OK) {
        fprintf(stderr, "cannot start embedded postgresql: %s\n", msg);
        return -1;
    }
    /* As the server runs: the row-level-security role, so the policies apply to events too. */
    if (az_pg_new(az_embed_database_url(embed), THREADS + 2, 30000, &pg, msg) != AZ_OK ||
        az_migrate(pg, az_migrations, az_migrations_count, NULL, msg) != AZ_OK ||
        az_pg_set_role(pg, "agentz_app", msg) != AZ_OK) {
        fprintf(stderr, "cannot prepare the database: %s\n", msg);
        return -1;
    }
    arena = az_arena_new(0);
    return arena ? 0 : -1;
}

static int suite_clean(void)
{
    az_arena_free(arena);
    az_pg_free(pg);
    az_embed_stop(embed);
    nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    return 0;
}

int main(void)
{
    if (CU_initialize_registry() != CUE_SUCCESS) return 1;
    CU_pSuite s = CU_add_suite("outbox", suite_init, suite_clean);
    CU_add_test(s, "task lifecycle events", test_task_lifecycle);
    CU_add_test(s, "failure cascade, retry, backoff, cancel", test_failure_cascade_and_retry);
    CU_add_test(s, "webhooks queued with terminal events", test_webhooks_queued_on_terminal_events);
    CU_add_test(s, "hand-back and wake", test_release_and_wake);
    CU_add_test(s, "run scope: cancel_run and resume_run", test_run_scope);
    CU_add_test(s, "run events: start, fail fast, resume", test_run_events);
    CU_add_test(s, "rollback writes nothing, no gap", test_rollback_writes_nothing);
    CU_add_test(s, "validation and isolation", test_validation);
    CU_add_test(s, "append_many numbers like single appends", test_append_many);
    CU_add_test(s, "agent status changes only", test_agent_status_events);
    CU_add_test(s, "concurrent appenders: gap-free, ordered", test_concurrent_appenders_gap_free);
    CU_add_test(s, "retention", test_prune);
    CU_add_test(s, "decode", test_decode);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    unsigned failed = CU_get_number_of_failures() + CU_get_number_of_tests_failed();
    if (CU_get_number_of_suites_failed()) failed++;
    CU_cleanup_registry();
    return failed ? 1 : 0;
}
