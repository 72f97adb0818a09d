/* CUnit suite for server/task: the retry math, and the task state machine against a real
 * PostgreSQL (the embedded one in a temp dir): dependencies, attempts, retries, cancellation,
 * runs, statistics, and races between concurrent transitions. */
#include <CUnit/Basic.h>
#include <ftw.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/log.h"
#include "core/text.h"
#include "embed/embedded.h"
#include "google/protobuf/duration.pb-c.h"
#include "store/migrate.h"
#include "store/pgpool.h"
#include "task/task.h"

#define PENDING AGENTZ__V1__TASK_STATUS__TASK_STATUS_PENDING
#define QUEUED AGENTZ__V1__TASK_STATUS__TASK_STATUS_QUEUED
#define RUNNING AGENTZ__V1__TASK_STATUS__TASK_STATUS_RUNNING
#define BACKOFF AGENTZ__V1__TASK_STATUS__TASK_STATUS_BACKOFF
#define SUCCEEDED AGENTZ__V1__TASK_STATUS__TASK_STATUS_SUCCEEDED
#define FAILED AGENTZ__V1__TASK_STATUS__TASK_STATUS_FAILED
#define CANCELLED AGENTZ__V1__TASK_STATUS__TASK_STATUS_CANCELLED

static char dir[64];
static az_embed *embed;
static az_pg *pg;
static az_arena *arena;
static const az_ctx ctx = {.workspace_id = AZ_DEFAULT_WORKSPACE, .principal = "", .request_id = "t",
                           .deadline_ms = -1};
static const char *agent = "0a0a0a0a-0000-4000-8000-000000000001";

/* ---------------------------------------------------------------- pure functions */

static Google__Protobuf__Duration dur(long s, int ns)
{
    Google__Protobuf__Duration d = GOOGLE__PROTOBUF__DURATION__INIT;
    d.seconds = s;
    d.nanos = ns;
    return d;
}

static void test_backoff_math(void)
{
    /* Defaults: 1 s, x2, capped at 100 s. */
    CU_ASSERT_EQUAL(az_task_backoff_ms(NULL, 1, 0), 1000);
    CU_ASSERT_EQUAL(az_task_backoff_ms(NULL, 2, 0), 2000);
    CU_ASSERT_EQUAL(az_task_backoff_ms(NULL, 3, 0), 4000);
    CU_ASSERT_EQUAL(az_task_backoff_ms(NULL, 7, 0), 64000);
    CU_ASSERT_EQUAL(az_task_backoff_ms(NULL, 8, 0), 100000); /* 128 s capped */
    CU_ASSERT_EQUAL(az_task_backoff_ms(NULL, 5000, 0), 100000); /* no overflow to inf/garbage */
    CU_ASSERT_EQUAL(az_task_backoff_ms(NULL, 0, 0), 1000);   /* attempt < 1 treated as 1 */

    Agentz__V1__RetryPolicy p = AGENTZ__V1__RETRY_POLICY__INIT;
    Google__Protobuf__Duration init = dur(0, 500000000), max = dur(3, 0);
    p.initial_backoff = &init;
    p.backoff_coefficient = 3;
    CU_ASSERT_EQUAL(az_task_backoff_ms(&p, 1, 0), 500);
    CU_ASSERT_EQUAL(az_task_backoff_ms(&p, 2, 0), 1500);
    CU_ASSERT_EQUAL(az_task_backoff_ms(&p, 4, 0), 13500);
    CU_ASSERT_EQUAL(az_task_backoff_ms(&p, 30, 0), 50000); /* default cap: 100 x 0.5 s */
    p.maximum_backoff = &max;
    CU_ASSERT_EQUAL(az_task_backoff_ms(&p, 2, 0), 1500);
    CU_ASSERT_EQUAL(az_task_backoff_ms(&p, 3, 0), 3000); /* 4.5 s capped at 3 s */
    /* Coefficient 1: constant. */
    p.backoff_coefficient = 1;
    p.maximum_backoff = NULL;
    for (int a = 1; a < 10; a++) CU_ASSERT_EQUAL(az_task_backoff_ms(&p, a, 0), 500);
    /* Coefficient 0 means the default 2. */
    p.backoff_coefficient = 0;
    CU_ASSERT_EQUAL(az_task_backoff_ms(&p, 3, 0), 2000);
    /* Zero initial backoff: retry at once. */
    Google__Protobuf__Duration zero = dur(0, 0);
    p.initial_backoff = &zero;
    CU_ASSERT_EQUAL(az_task_backoff_ms(&p, 5, 0), 0);
}

static void test_backoff_jitter(void)
{
    /* Up to 20 % is subtracted; never more, never added. */
    CU_ASSERT_EQUAL(az_task_backoff_ms(NULL, 1, 0.5), 900);
    CU_ASSERT_EQUAL(az_task_backoff_ms(NULL, 3, 0.25), 3800);
    CU_ASSERT_EQUAL(az_task_backoff_ms(NULL, 8, 0.5), 90000); /* jitter applies after the cap */
    for (int i = 0; i < 1000; i++) {
        double j = (double)i / 1000.0;
        int64_t d = az_task_backoff_ms(NULL, 2, j);
        CU_ASSERT(d >= 1600 && d <= 2000);
    }
    int64_t hi = az_task_backoff_ms(NULL, 2, 0.9999999);
    CU_ASSERT(hi >= 1600 && hi < 2000);
    CU_ASSERT_EQUAL(az_task_backoff_ms(NULL, 2, -1), 2000); /* clamped */
    CU_ASSERT(az_task_backoff_ms(NULL, 2, 7) >= 1600);
}

static void test_should_retry(void)
{
    CU_ASSERT_TRUE(az_task_should_retry(NULL, 1, "llm_timeout"));
    CU_ASSERT_TRUE(az_task_should_retry(NULL, 10000, "anything")); /* unlimited by default */
    Agentz__V1__RetryPolicy p = AGENTZ__V1__RETRY_POLICY__INIT;
    CU_ASSERT_TRUE(az_task_should_retry(&p, 999, "x"));
    p.max_attempts = 3;
    CU_ASSERT_TRUE(az_task_should_retry(&p, 1, "x"));
    CU_ASSERT_TRUE(az_task_should_retry(&p, 2, "x"));
    CU_ASSERT_FALSE(az_task_should_retry(&p, 3, "x"));
    CU_ASSERT_FALSE(az_task_should_retry(&p, 4, "x"));
    p.max_attempts = 1;
    CU_ASSERT_FALSE(az_task_should_retry(&p, 1, "x")); /* 1 = no retries */
    p.max_attempts = 0;
    char *nre[] = {"output_schema_mismatch", "bad_request"};
    p.n_non_retryable_errors = 2;
    p.non_retryable_errors = nre;
    CU_ASSERT_FALSE(az_task_should_retry(&p, 1, "bad_request"));
    CU_ASSERT_FALSE(az_task_should_retry(&p, 1, "output_schema_mismatch"));
    CU_ASSERT_TRUE(az_task_should_retry(&p, 1, "bad_request_2")); /* exact match only */
    CU_ASSERT_TRUE(az_task_should_retry(&p, 1, "BAD_REQUEST"));
    CU_ASSERT_TRUE(az_task_should_retry(&p, 1, "llm_timeout"));
    CU_ASSERT_EQUAL(az_task_etag_revision("17"), 17);
    CU_ASSERT_EQUAL(az_task_etag_revision("x1"), -1);
    CU_ASSERT_EQUAL(az_task_etag_revision(""), -1);
}

/* ---------------------------------------------------------------- database helpers */

static Agentz__V1__Task *create_task(const char *desc, const char **deps, size_t n,
                                     Agentz__V1__RetryPolicy *policy, az_task_ready *ready)
{
    Agentz__V1__Task t = AGENTZ__V1__TASK__INIT;
    t.description = (char *)desc;
    t.expected_output = "a result";
    t.agent_id = (char *)agent;
    t.n_depends_on = n;
    t.depends_on = (char **)deps;
    t.retry_policy = policy;
    Agentz__V1__Task *out = NULL;
    int replayed = 0;
    char msg[AZ_MSG_MAX] = "";
    az_err err = az_task_create(pg, &ctx, &t, "", "", arena, &out, &replayed, ready, msg);
    if (err != AZ_OK) fprintf(stderr, "create %s: %s\n", desc, msg);
    CU_ASSERT_EQUAL_FATAL(err, AZ_OK);
    CU_ASSERT_FALSE(replayed);
    return out;
}

static Agentz__V1__Task *get(const char *id)
{
    Agentz__V1__Task *t = NULL;
    char msg[AZ_MSG_MAX];
    CU_ASSERT_EQUAL_FATAL(az_task_get(pg, &ctx, id, arena, &t, msg), AZ_OK);
    return t;
}

static int status_of(const char *id) { return get(id)->status; }

static int ready_has(const az_task_ready *r, const char *id)
{
    for (size_t i = 0; i < r->n; i++) {
        if (strcmp(r->ids[i], id) == 0) return 1;
    }
    return 0;
}

static int claim(const char *id)
{
    Agentz__V1__Task *t = NULL;
    char msg[AZ_MSG_MAX];
    az_err err = az_task_claim(pg, &ctx, id, "worker-1", 0, arena, &t, msg);
    CU_ASSERT_EQUAL_FATAL(err, AZ_OK);
    CU_ASSERT_EQUAL(t->status, RUNNING);
    return t->attempt;
}

static void complete(const char *id, int attempt, az_task_ready *ready)
{
    Agentz__V1__TaskOutput out = AGENTZ__V1__TASK_OUTPUT__INIT;
    out.raw = "done";
    char msg[AZ_MSG_MAX];
    az_err err = az_task_complete(pg, &ctx, id, attempt, &out, NULL, NULL, ready, msg);
    if (err != AZ_OK) fprintf(stderr, "complete: %s\n", msg);
    CU_ASSERT_EQUAL_FATAL(err, AZ_OK);
}

/* One SQL statement on a pool connection (test set-up shortcuts); returns the first value. */
static char *sql(const char *q)
{
    az_pgconn *c;
    char msg[AZ_MSG_MAX];
    CU_ASSERT_EQUAL_FATAL(az_pg_acquire(pg, &ctx, &c, msg), AZ_OK);
    PGresult *r = NULL;
    az_err err = az_pg_exec(c, &ctx, q, 0, NULL, &r, msg);
    if (err != AZ_OK) fprintf(stderr, "%s: %s\n", q, msg);
    CU_ASSERT_EQUAL_FATAL(err, AZ_OK);
    char *v = az_arena_strdup(arena, PQntuples(r) > 0 && PQnfields(r) > 0 ? PQgetvalue(r, 0, 0) : "");
    PQclear(r);
    az_pg_release(c);
    return v;
}

static char *sqlf(const char *fmt, const char *a1, const char *a2)
{
    char q[1024];
    snprintf(q, sizeof q, fmt, a1, a2 ? a2 : "");
    return sql(q);
}

/* ---------------------------------------------------------------- state machine */

static void test_insert_and_dependencies(void)
{
    az_task_ready ready = {.arena = arena};
    Agentz__V1__Task *a = create_task("A", NULL, 0, NULL, &ready);
    CU_ASSERT_EQUAL(a->status, QUEUED);
    CU_ASSERT_EQUAL(a->attempt, 0);
    CU_ASSERT_STRING_EQUAL(a->agent_id, agent);
    CU_ASSERT_STRING_EQUAL(a->etag, "1");
    CU_ASSERT_PTR_NOT_NULL(a->create_time);
    CU_ASSERT_PTR_NULL(a->retry_policy);
    CU_ASSERT_EQUAL(ready.n, 1);
    CU_ASSERT_TRUE(ready_has(&ready, a->id));

    const char *deps[] = {a->id};
    Agentz__V1__Task *b = create_task("B", deps, 1, NULL, &ready);
    CU_ASSERT_EQUAL(b->status, PENDING);
    CU_ASSERT_EQUAL(b->n_depends_on, 1);
    CU_ASSERT_STRING_EQUAL(b->depends_on[0], a->id);
    CU_ASSERT_EQUAL(ready.n, 1); /* pending tasks are not ready */

    /* Bad dependencies name the field. */
    Agentz__V1__Task t = AGENTZ__V1__TASK__INIT, *out;
    t.description = "bad";
    t.agent_id = (char *)agent;
    const char *bad[] = {a->id, "not-a-uuid"};
    t.n_depends_on = 2;
    t.depends_on = (char **)bad;
    int rep;
    char msg[AZ_MSG_MAX];
    CU_ASSERT_EQUAL(az_task_create(pg, &ctx, &t, "", "", arena, &out, &rep, &ready, msg), AZ_ERR_INVALID);
    CU_ASSERT_PTR_NOT_NULL(strstr(msg, "task.depends_on[1]: not a task id"));
    const char *missing[] = {"7d1f0c52-1111-4222-8333-444455556666"};
    t.n_depends_on = 1;
    t.depends_on = (char **)missing;
    CU_ASSERT_EQUAL(az_task_create(pg, &ctx, &t, "", "", arena, &out, &rep, &ready, msg), AZ_ERR_INVALID);
    CU_ASSERT_PTR_NOT_NULL(strstr(msg, "task.depends_on[0]"));
    CU_ASSERT_PTR_NOT_NULL(strstr(msg, "not found"));
    CU_ASSERT_EQUAL(ready.n, 1);

    /* A dependency already succeeded: the new task starts queued. */
    complete(a->id, claim(a->id), &ready);
    Agentz__V1__Task *c = create_task("C", deps, 1, NULL, &ready);
    CU_ASSERT_EQUAL(c->status, QUEUED);
    CU_ASSERT_TRUE(ready_has(&ready, c->id));
    CU_ASSERT_EQUAL(status_of(b->id), QUEUED); /* and B was queued by A's success */
    CU_ASSERT_TRUE(ready_has(&ready, b->id));

    /* A failed dependency is a precondition failure. */
    CU_ASSERT_EQUAL(az_task_cancel(pg, &ctx, c->id, "stop", arena, &out, NULL, msg), AZ_OK);
    const char *dead[] = {c->id};
    t.depends_on = (char **)dead;
    CU_ASSERT_EQUAL(az_task_create(pg, &ctx, &t, "", "", arena, &out, &rep, &ready, msg),
                    AZ_ERR_PRECONDITION);
    CU_ASSERT_PTR_NOT_NULL(strstr(msg, "cancelled"));
}

static void test_idempotent_create(void)
{
    Agentz__V1__Task t = AGENTZ__V1__TASK__INIT, *first, *again;
    t.description = "idem";
    t.agent_id = (char *)agent;
    int rep;
    char msg[AZ_MSG_MAX];
    az_task_ready ready = {.arena = arena};
    CU_ASSERT_EQUAL_FATAL(az_task_create(pg, &ctx, &t, "rid-1", "h1", arena, &first, &rep, &ready, msg), AZ_OK);
    CU_ASSERT_FALSE(rep);
    CU_ASSERT_EQUAL_FATAL(az_task_create(pg, &ctx, &t, "rid-1", "h1", arena, &again, &rep, &ready, msg), AZ_OK);
    CU_ASSERT_TRUE(rep);
    CU_ASSERT_STRING_EQUAL(first->id, again->id);
    CU_ASSERT_EQUAL(ready.n, 1); /* a replay does not make the task ready twice */
    CU_ASSERT_EQUAL(az_task_create(pg, &ctx, &t, "rid-1", "h2", arena, &again, &rep, &ready, msg), AZ_ERR_EXISTS);
}

static void test_diamond(void)
{
    az_task_ready ready = {.arena = arena};
    Agentz__V1__Task *a = create_task("dA", NULL, 0, NULL, &ready);
    const char *da[] = {a->id};
    Agentz__V1__Task *b = create_task("dB", da, 1, NULL, &ready);
    Agentz__V1__Task *c = create_task("dC", da, 1, NULL, &ready);
    const char *dbc[] = {b->id, c->id};
    Agentz__V1__Task *d = create_task("dD", dbc, 2, NULL, &ready);
    CU_ASSERT_EQUAL(d->status, PENDING);
    az_task_ready r2 = {.arena = arena};
    int at = claim(a->id);
    CU_ASSERT_EQUAL(at, 1);
    complete(a->id, at, &r2);
    CU_ASSERT_EQUAL(r2.n, 2);
    CU_ASSERT_TRUE(ready_has(&r2, b->id) && ready_has(&r2, c->id));
    CU_ASSERT_EQUAL(status_of(b->id), QUEUED);
    CU_ASSERT_EQUAL(status_of(c->id), QUEUED);
    CU_ASSERT_EQUAL(status_of(d->id), PENDING);
    az_task_ready r3 = {.arena = arena};
    complete(b->id, claim(b->id), &r3);
    CU_ASSERT_EQUAL(r3.n, 0);
    CU_ASSERT_EQUAL(status_of(d->id), PENDING); /* C has not succeeded yet */
    complete(c->id, claim(c->id), &r3);
    CU_ASSERT_EQUAL(r3.n, 1);
    CU_ASSERT_TRUE(ready_has(&r3, d->id));
    Agentz__V1__Task *dd = get(d->id);
    CU_ASSERT_EQUAL(dd->status, QUEUED);
    CU_ASSERT_STRING_EQUAL(get(a->id)->output->raw, "done");
    CU_ASSERT_PTR_NOT_NULL(get(a->id)->end_time);
}

/* B and C complete at the same moment: each must see the other's commit, so D is queued. */
typedef struct finisher {
    const char *id;
    int attempt;
    pthread_barrier_t *bar;
    az_err err;
} finisher;

static void *finish_main(void *arg)
{
    finisher *f = arg;
    az_arena *a = az_arena_new(0);
    az_task_ready r = {.arena = a};
    Agentz__V1__TaskOutput out = AGENTZ__V1__TASK_OUTPUT__INIT;
    char msg[AZ_MSG_MAX];
    pthread_barrier_wait(f->bar);
    f->err = az_task_complete(pg, &ctx, f->id, f->attempt, &out, NULL, NULL, &r, msg);
    az_arena_free(a);
    return NULL;
}

static void test_diamond_race(void)
{
    for (int round = 0; round < 10; round++) {
        az_task_ready ready = {.arena = arena};
        Agentz__V1__Task *b = create_task("rB", NULL, 0, NULL, &ready);
        Agentz__V1__Task *c = create_task("rC", NULL, 0, NULL, &ready);
        const char *dbc[] = {b->id, c->id};
        Agentz__V1__Task *d = create_task("rD", dbc, 2, NULL, &ready);
        pthread_barrier_t bar;
        pthread_barrier_init(&bar, NULL, 2);
        finisher f[2] = {{b->id, claim(b->id), &bar, AZ_OK}, {c->id, claim(c->id), &bar, AZ_OK}};
        pthread_t th[2];
        for (int i = 0; i < 2; i++) pthread_create(&th[i], NULL, finish_main, &f[i]);
        for (int i = 0; i < 2; i++) pthread_join(th[i], NULL);
        pthread_barrier_destroy(&bar);
        CU_ASSERT_EQUAL(f[0].err, AZ_OK);
        CU_ASSERT_EQUAL(f[1].err, AZ_OK);
        CU_ASSERT_EQUAL(status_of(d->id), QUEUED);
    }
}

static void test_stale_attempts(void)
{
    az_task_ready ready = {.arena = arena};
    Agentz__V1__Task *a = create_task("stale", NULL, 0, NULL, &ready);
    char msg[AZ_MSG_MAX];
    Agentz__V1__TaskOutput out = AGENTZ__V1__TASK_OUTPUT__INIT;
    Agentz__V1__TaskError e = AGENTZ__V1__TASK_ERROR__INIT;
    e.type = "llm_timeout";
    e.retryable = 1;
    /* Not running yet. */
    CU_ASSERT_EQUAL(az_task_complete(pg, &ctx, a->id, 1, &out, NULL, NULL, &ready, msg), AZ_ERR_PRECONDITION);
    CU_ASSERT_PTR_NOT_NULL(strstr(msg, "queued"));
    int at = claim(a->id);
    Agentz__V1__Task *t;
    CU_ASSERT_EQUAL(az_task_claim(pg, &ctx, a->id, "w2", 0, arena, &t, msg), AZ_ERR_PRECONDITION);
    CU_ASSERT_PTR_NOT_NULL(strstr(msg, "running"));
    CU_ASSERT_EQUAL(az_task_complete(pg, &ctx, a->id, at + 1, &out, NULL, NULL, &ready, msg),
                    AZ_ERR_PRECONDITION);
    CU_ASSERT_EQUAL(az_task_fail(pg, &ctx, a->id, at + 1, &e, NULL, NULL, NULL, msg), AZ_ERR_PRECONDITION);
    complete(a->id, at, &ready);
    /* A duplicate delivery of the same outcome is rejected: one outcome per attempt. */
    CU_ASSERT_EQUAL(az_task_complete(pg, &ctx, a->id, at, &out, NULL, NULL, &ready, msg), AZ_ERR_PRECONDITION);
    CU_ASSERT_PTR_NOT_NULL(strstr(msg, "succeeded"));
    CU_ASSERT_EQUAL(az_task_fail(pg, &ctx, a->id, at, &e, NULL, NULL, NULL, msg), AZ_ERR_PRECONDITION);
    CU_ASSERT_EQUAL(status_of(a->id), SUCCEEDED);
    CU_ASSERT_STRING_EQUAL(sqlf("SELECT count(*) FROM task_attempts WHERE task_id = '%s'", a->id, NULL), "1");
    /* complete without ready->arena is refused rather than leaking. */
    az_task_ready no_arena = {0};
    CU_ASSERT_EQUAL(az_task_complete(pg, &ctx, a->id, at, &out, NULL, NULL, &no_arena, msg), AZ_ERR_INTERNAL);
    CU_ASSERT_EQUAL(az_task_claim(pg, &ctx, "11111111-2222-4333-8444-555555555555", "w", 0, arena, &t, msg),
                    AZ_ERR_NOT_FOUND);
}

static void test_retryable_failure_backoff_and_wake(void)
{
    Agentz__V1__RetryPolicy p = AGENTZ__V1__RETRY_POLICY__INIT;
    Google__Protobuf__Duration init = dur(0, 50000000); /* 50 ms */
    p.initial_backoff = &init;
    p.max_attempts = 3;
    az_task_ready ready = {.arena = arena};
    Agentz__V1__Task *a = create_task("flaky", NULL, 0, &p, &ready);
    CU_ASSERT_PTR_NOT_NULL_FATAL(a->retry_policy);
    CU_ASSERT_EQUAL(a->retry_policy->max_attempts, 3);
    CU_ASSERT_EQUAL(a->retry_policy->initial_backoff->nanos, 50000000);
    CU_ASSERT_PTR_NULL(a->retry_policy->maximum_backoff);
    Agentz__V1__TaskError e = AGENTZ__V1__TASK_ERROR__INIT;
    e.type = "llm_timeout";
    e.message = "the model did not answer";
    e.retryable = 1;
    char msg[AZ_MSG_MAX], run_id[37];
    int64_t next = -1;
    int at = claim(a->id);
    CU_ASSERT_EQUAL_FATAL(az_task_fail(pg, &ctx, a->id, at, &e, NULL, &next, run_id, msg), AZ_OK);
    CU_ASSERT(next >= 40 && next <= 50);
    CU_ASSERT_STRING_EQUAL(run_id, "");
    Agentz__V1__Task *t = get(a->id);
    CU_ASSERT_EQUAL(t->status, BACKOFF);
    CU_ASSERT_PTR_NOT_NULL(t->next_attempt_time);
    CU_ASSERT_PTR_NOT_NULL_FATAL(t->error);
    CU_ASSERT_STRING_EQUAL(t->error->type, "llm_timeout");
    CU_ASSERT_PTR_NULL(t->end_time);
    /* Not due yet: wake leaves it. */
    az_task_ready woken = {.arena = arena};
    CU_ASSERT_EQUAL(az_task_wake(pg, &ctx, 100, arena, &woken, msg), AZ_OK);
    CU_ASSERT_FALSE(ready_has(&woken, a->id));
    CU_ASSERT_EQUAL(status_of(a->id), BACKOFF);
    usleep(120000);
    CU_ASSERT_EQUAL(az_task_wake(pg, &ctx, 100, arena, &woken, msg), AZ_OK);
    CU_ASSERT_TRUE(ready_has(&woken, a->id));
    t = get(a->id);
    CU_ASSERT_EQUAL(t->status, QUEUED);
    CU_ASSERT_PTR_NULL(t->next_attempt_time);
    /* Attempt 2 fails, attempt 3 fails: max_attempts 3 exhausted -> failed. */
    at = claim(a->id);
    CU_ASSERT_EQUAL(at, 2);
    CU_ASSERT_EQUAL(az_task_fail(pg, &ctx, a->id, at, &e, NULL, &next, NULL, msg), AZ_OK);
    CU_ASSERT(next >= 80 && next <= 100); /* 50 ms x 2, less up to 20 % jitter */
    sql("UPDATE tasks SET next_attempt_time = now() - interval '1 second' WHERE status = 4");
    CU_ASSERT_EQUAL(az_task_wake(pg, &ctx, 100, arena, &woken, msg), AZ_OK);
    at = claim(a->id);
    CU_ASSERT_EQUAL(at, 3);
    CU_ASSERT_EQUAL(az_task_fail(pg, &ctx, a->id, at, &e, NULL, &next, NULL, msg), AZ_OK);
    CU_ASSERT_EQUAL(next, 0);
    t = get(a->id);
    CU_ASSERT_EQUAL(t->status, FAILED);
    CU_ASSERT_EQUAL(t->attempt, 3);
    CU_ASSERT_PTR_NOT_NULL(t->end_time);
    CU_ASSERT_STRING_EQUAL(sqlf("SELECT string_agg(status::text, ',' ORDER BY attempt) FROM task_attempts"
                                " WHERE task_id = '%s'", a->id, NULL), "6,6,6");
}

static void test_non_retryable_cancels_downstream(void)
{
    Agentz__V1__RetryPolicy p = AGENTZ__V1__RETRY_POLICY__INIT;
    char *nre[] = {"output_schema_mismatch"};
    p.n_non_retryable_errors = 1;
    p.non_retryable_errors = nre;
    az_task_ready ready = {.arena = arena};
    Agentz__V1__Task *a = create_task("root", NULL, 0, &p, &ready);
    const char *da[] = {a->id};
    Agentz__V1__Task *b = create_task("child", da, 1, NULL, &ready);
    const char *db[] = {b->id};
    Agentz__V1__Task *c = create_task("grandchild", db, 1, NULL, &ready);
    Agentz__V1__Task *other = create_task("unrelated", NULL, 0, NULL, &ready);
    const char *dother[] = {other->id};
    Agentz__V1__Task *o2 = create_task("unrelated child", dother, 1, NULL, &ready);
    Agentz__V1__TaskError e = AGENTZ__V1__TASK_ERROR__INIT;
    e.type = "output_schema_mismatch";
    e.message = "answer is not JSON";
    e.retryable = 1; /* the policy's list wins */
    char msg[AZ_MSG_MAX];
    int64_t next = -1;
    int at = claim(a->id);
    CU_ASSERT_EQUAL_FATAL(az_task_fail(pg, &ctx, a->id, at, &e, NULL, &next, NULL, msg), AZ_OK);
    CU_ASSERT_EQUAL(next, 0);
    CU_ASSERT_EQUAL(status_of(a->id), FAILED);
    Agentz__V1__Task *tb = get(b->id), *tc = get(c->id);
    CU_ASSERT_EQUAL(tb->status, CANCELLED);
    CU_ASSERT_EQUAL(tc->status, CANCELLED);
    CU_ASSERT_PTR_NOT_NULL_FATAL(tc->error);
    CU_ASSERT_STRING_EQUAL(tc->error->type, "dependency_failed");
    CU_ASSERT_PTR_NOT_NULL(strstr(tc->error->message, a->id)); /* names the root */
    CU_ASSERT_EQUAL(status_of(o2->id), PENDING);

    /* error.retryable = false also fails for good, whatever the policy. */
    Agentz__V1__Task *d = create_task("no retry", NULL, 0, NULL, &ready);
    e.type = "llm_auth";
    e.retryable = 0;
    at = claim(d->id);
    CU_ASSERT_EQUAL(az_task_fail(pg, &ctx, d->id, at, &e, NULL, &next, NULL, msg), AZ_OK);
    CU_ASSERT_EQUAL(status_of(d->id), FAILED);

    /* Retry of the root: root queued, downstream back to pending, then the chain runs. */
    Agentz__V1__Task *r;
    char run_id[37];
    az_task_ready rr = {.arena = arena};
    CU_ASSERT_EQUAL_FATAL(az_task_retry(pg, &ctx, a->id, arena, &r, run_id, &rr, msg), AZ_OK);
    CU_ASSERT_EQUAL(r->status, QUEUED);
    CU_ASSERT_PTR_NULL(r->error);
    CU_ASSERT_EQUAL(r->attempt, 1); /* the next attempt will be 2 */
    CU_ASSERT_TRUE(ready_has(&rr, a->id));
    CU_ASSERT_EQUAL(status_of(b->id), PENDING);
    CU_ASSERT_EQUAL(status_of(c->id), PENDING);
    CU_ASSERT_PTR_NULL(get(c->id)->error);
    at = claim(a->id);
    CU_ASSERT_EQUAL(at, 2);
    complete(a->id, at, &rr);
    CU_ASSERT_EQUAL(status_of(b->id), QUEUED);
    complete(b->id, claim(b->id), &rr);
    CU_ASSERT_EQUAL(status_of(c->id), QUEUED);
    /* Retrying a succeeded task is refused naming the state. */
    CU_ASSERT_EQUAL(az_task_retry(pg, &ctx, a->id, arena, &r, run_id, &rr, msg), AZ_ERR_PRECONDITION);
    CU_ASSERT_PTR_NOT_NULL(strstr(msg, "succeeded"));
}

static void test_unlimited_retries_bounded_by_timeout(void)
{
    Agentz__V1__Task t = AGENTZ__V1__TASK__INIT, *a;
    Google__Protobuf__Duration timeout = dur(2, 0);
    t.description = "bounded";
    t.agent_id = (char *)agent;
    t.timeout = &timeout;
    int rep;
    char msg[AZ_MSG_MAX];
    az_task_ready ready = {.arena = arena};
    CU_ASSERT_EQUAL_FATAL(az_task_create(pg, &ctx, &t, "", "", arena, &a, &rep, &ready, msg), AZ_OK);
    CU_ASSERT_EQUAL(a->timeout->seconds, 2);
    Agentz__V1__TaskError e = AGENTZ__V1__TASK_ERROR__INIT;
    e.type = "llm_timeout";
    e.message = "slow";
    e.retryable = 1;
    int64_t next;
    int at = claim(a->id);
    CU_ASSERT_EQUAL(az_task_fail(pg, &ctx, a->id, at, &e, NULL, &next, NULL, msg), AZ_OK);
    CU_ASSERT_EQUAL(status_of(a->id), BACKOFF); /* 1 s backoff fits in 2 s */
    sql("UPDATE tasks SET next_attempt_time = now() - interval '1 second' WHERE status = 4");
    az_task_wake(pg, &ctx, 100, arena, &ready, msg);
    at = claim(a->id);
    /* Pretend the series started 1.5 s ago: a 2 s backoff would pass the 2 s timeout. */
    sqlf("UPDATE tasks SET series_start_time = now() - interval '1.5 seconds' WHERE id = '%s'", a->id, NULL);
    CU_ASSERT_EQUAL(az_task_fail(pg, &ctx, a->id, at, &e, NULL, &next, NULL, msg), AZ_OK);
    CU_ASSERT_EQUAL(next, 0);
    Agentz__V1__Task *g = get(a->id);
    CU_ASSERT_EQUAL(g->status, FAILED);
    CU_ASSERT_PTR_NOT_NULL(strstr(g->error->message, "timeout"));
}

static void test_cancel_from_each_state(void)
{
    az_task_ready ready = {.arena = arena};
    char msg[AZ_MSG_MAX], run_id[37];
    Agentz__V1__Task *out;
    /* queued */
    Agentz__V1__Task *q = create_task("cq", NULL, 0, NULL, &ready);
    const char *dq[] = {q->id};
    Agentz__V1__Task *p = create_task("cp", dq, 1, NULL, &ready);
    /* pending */
    CU_ASSERT_EQUAL_FATAL(az_task_cancel(pg, &ctx, p->id, "", arena, &out, run_id, msg), AZ_OK);
    CU_ASSERT_EQUAL(out->status, CANCELLED);
    CU_ASSERT_STRING_EQUAL(out->error->type, "cancelled");
    CU_ASSERT_STRING_EQUAL(run_id, "");
    CU_ASSERT_EQUAL_FATAL(az_task_cancel(pg, &ctx, q->id, "user asked", arena, &out, NULL, msg), AZ_OK);
    CU_ASSERT_EQUAL(out->status, CANCELLED);
    CU_ASSERT_STRING_EQUAL(out->error->message, "user asked");
    CU_ASSERT_PTR_NOT_NULL(out->end_time);
    /* Idempotent on a cancelled task: same task, no change. */
    char etag[24];
    snprintf(etag, sizeof etag, "%s", out->etag);
    CU_ASSERT_EQUAL(az_task_cancel(pg, &ctx, q->id, "again", arena, &out, NULL, msg), AZ_OK);
    CU_ASSERT_STRING_EQUAL(out->etag, etag);
    CU_ASSERT_STRING_EQUAL(out->error->message, "user asked");
    /* running: the open attempt is closed as cancelled */
    Agentz__V1__Task *r = create_task("cr", NULL, 0, NULL, &ready);
    claim(r->id);
    CU_ASSERT_EQUAL(az_task_cancel(pg, &ctx, r->id, "", arena, &out, NULL, msg), AZ_OK);
    CU_ASSERT_STRING_EQUAL(sqlf("SELECT status || ':' || (end_time IS NOT NULL) FROM task_attempts"
                                " WHERE task_id = '%s'", r->id, NULL), "7:true");
    /* A late outcome of the cancelled attempt is refused. */
    Agentz__V1__TaskOutput o = AGENTZ__V1__TASK_OUTPUT__INIT;
    CU_ASSERT_EQUAL(az_task_complete(pg, &ctx, r->id, 1, &o, NULL, NULL, &ready, msg), AZ_ERR_PRECONDITION);
    CU_ASSERT_PTR_NOT_NULL(strstr(msg, "cancelled"));
    /* backoff */
    Agentz__V1__Task *b = create_task("cb", NULL, 0, NULL, &ready);
    Agentz__V1__TaskError e = AGENTZ__V1__TASK_ERROR__INIT;
    e.type = "x";
    e.retryable = 1;
    CU_ASSERT_EQUAL(az_task_fail(pg, &ctx, b->id, claim(b->id), &e, NULL, NULL, NULL, msg), AZ_OK);
    CU_ASSERT_EQUAL(status_of(b->id), BACKOFF);
    CU_ASSERT_EQUAL(az_task_cancel(pg, &ctx, b->id, "", arena, &out, NULL, msg), AZ_OK);
    CU_ASSERT_EQUAL(out->status, CANCELLED);
    CU_ASSERT_PTR_NULL(out->next_attempt_time);
    /* succeeded and failed: illegal, the message names the state */
    Agentz__V1__Task *s = create_task("cs", NULL, 0, NULL, &ready);
    complete(s->id, claim(s->id), &ready);
    CU_ASSERT_EQUAL(az_task_cancel(pg, &ctx, s->id, "", arena, &out, NULL, msg), AZ_ERR_PRECONDITION);
    CU_ASSERT_PTR_NOT_NULL(strstr(msg, "succeeded"));
    CU_ASSERT_PTR_NOT_NULL(strstr(msg, s->id));
    Agentz__V1__Task *f = create_task("cf", NULL, 0, NULL, &ready);
    e.retryable = 0;
    az_task_fail(pg, &ctx, f->id, claim(f->id), &e, NULL, NULL, NULL, msg);
    CU_ASSERT_EQUAL(az_task_cancel(pg, &ctx, f->id, "", arena, &out, NULL, msg), AZ_ERR_PRECONDITION);
    CU_ASSERT_PTR_NOT_NULL(strstr(msg, "failed"));
    CU_ASSERT_EQUAL(az_task_cancel(pg, &ctx, "9f0c2b1a-0000-4000-8000-000000000000", "", arena, &out, NULL, msg),
                    AZ_ERR_NOT_FOUND);
    CU_ASSERT_EQUAL(az_task_cancel(pg, &ctx, "nope", "", arena, &out, NULL, msg), AZ_ERR_NOT_FOUND);
    /* retry of queued/running: illegal */
    Agentz__V1__Task *qq = create_task("rq", NULL, 0, NULL, &ready);
    CU_ASSERT_EQUAL(az_task_retry(pg, &ctx, qq->id, arena, &out, NULL, &ready, msg), AZ_ERR_PRECONDITION);
    CU_ASSERT_PTR_NOT_NULL(strstr(msg, "queued"));
    claim(qq->id);
    CU_ASSERT_EQUAL(az_task_retry(pg, &ctx, qq->id, arena, &out, NULL, &ready, msg), AZ_ERR_PRECONDITION);
    CU_ASSERT_PTR_NOT_NULL(strstr(msg, "running"));
    /* Cancelling a dependent directly, then retrying it while its dependency is cancelled. */
    CU_ASSERT_EQUAL(az_task_retry(pg, &ctx, p->id, arena, &out, NULL, &ready, msg), AZ_ERR_PRECONDITION);
    CU_ASSERT_PTR_NOT_NULL(strstr(msg, q->id));
    /* Retry q (cancelled while queued): queued again; p was cancelled directly, not because of
     * q, so it stays cancelled. */
    CU_ASSERT_EQUAL(az_task_retry(pg, &ctx, q->id, arena, &out, NULL, &ready, msg), AZ_OK);
    CU_ASSERT_EQUAL(out->status, QUEUED);
    CU_ASSERT_EQUAL(status_of(p->id), CANCELLED);
    CU_ASSERT_EQUAL(az_task_retry(pg, &ctx, p->id, arena, &out, NULL, &ready, msg), AZ_OK);
    CU_ASSERT_EQUAL(out->status, PENDING);
}

static void test_cancel_cascade_and_restore(void)
{
    az_task_ready ready = {.arena = arena};
    char msg[AZ_MSG_MAX];
    Agentz__V1__Task *out;
    Agentz__V1__Task *a = create_task("ca", NULL, 0, NULL, &ready);
    const char *da[] = {a->id};
    Agentz__V1__Task *b = create_task("cb", da, 1, NULL, &ready);
    const char *db[] = {b->id};
    Agentz__V1__Task *c = create_task("cc", db, 1, NULL, &ready);
    CU_ASSERT_EQUAL(az_task_cancel(pg, &ctx, a->id, "", arena, &out, NULL, msg), AZ_OK);
    Agentz__V1__Task *tc = get(c->id);
    CU_ASSERT_EQUAL(tc->status, CANCELLED);
    CU_ASSERT_STRING_EQUAL(tc->error->type, "cancelled");
    CU_ASSERT_PTR_NOT_NULL(strstr(tc->error->message, a->id));
    CU_ASSERT_EQUAL(status_of(b->id), CANCELLED);
    az_task_ready rr = {.arena = arena};
    CU_ASSERT_EQUAL(az_task_retry(pg, &ctx, a->id, arena, &out, NULL, &rr, msg), AZ_OK);
    CU_ASSERT_EQUAL(out->status, QUEUED);
    CU_ASSERT_EQUAL(rr.n, 1);
    CU_ASSERT_EQUAL(status_of(b->id), PENDING);
    CU_ASSERT_EQUAL(status_of(c->id), PENDING);
}

static void test_runs(void)
{
    char run[37], msg[AZ_MSG_MAX];
    az_text_uuid4(run);
    az_pgconn *c;
    CU_ASSERT_EQUAL_FATAL(az_pg_acquire(pg, &ctx, &c, msg), AZ_OK);
    CU_ASSERT_EQUAL_FATAL(az_pg_begin(c, &ctx, msg), AZ_OK);
    char ida[37], idb[37];
    az_text_uuid4(ida);
    az_text_uuid4(idb);
    Agentz__V1__Task t = AGENTZ__V1__TASK__INIT, *a, *b;
    t.description = "step one";
    t.agent_id = (char *)agent;
    t.id = ida;
    t.run_id = run;
    t.step_id = "research";
    az_task_ready ready = {.arena = arena};
    CU_ASSERT_EQUAL_FATAL(az_task_insert(c, &ctx, &t, run, arena, &a, &ready, msg), AZ_OK);
    CU_ASSERT_STRING_EQUAL(a->id, ida);
    CU_ASSERT_STRING_EQUAL(a->run_id, run);
    CU_ASSERT_STRING_EQUAL(a->step_id, "research");
    const char *dep[] = {ida};
    t.id = idb;
    t.step_id = "write";
    t.n_depends_on = 1;
    t.depends_on = (char **)dep;
    CU_ASSERT_EQUAL_FATAL(az_task_insert(c, &ctx, &t, run, arena, &b, &ready, msg), AZ_OK);
    CU_ASSERT_EQUAL(b->status, PENDING);
    CU_ASSERT_EQUAL_FATAL(az_pg_commit(c, &ctx, msg), AZ_OK);
    az_pg_release(c);
    CU_ASSERT_EQUAL(ready.n, 1);

    claim(ida);
    CU_ASSERT_EQUAL_FATAL(az_pg_acquire(pg, &ctx, &c, msg), AZ_OK);
    Agentz__V1__Task **list;
    size_t n;
    CU_ASSERT_EQUAL(az_task_list_run(c, &ctx, run, arena, &list, &n, msg), AZ_OK);
    CU_ASSERT_EQUAL(n, 2);
    if (n == 2) CU_ASSERT_STRING_EQUAL(list[0]->id, ida);
    int changed = -1;
    CU_ASSERT_EQUAL(az_task_cancel_run(c, &ctx, run, "run cancelled by user", &changed, msg), AZ_OK);
    CU_ASSERT_EQUAL(changed, 2);
    az_pg_release(c);
    CU_ASSERT_EQUAL(status_of(ida), CANCELLED);
    CU_ASSERT_EQUAL(status_of(idb), CANCELLED);
    CU_ASSERT_STRING_EQUAL(sqlf("SELECT status FROM task_attempts WHERE task_id = '%s'", ida, NULL), "7");
    /* Cancel refreshes the run: CancelTask reports the run id. */
    char run_id[37];
    Agentz__V1__Task *out;
    CU_ASSERT_EQUAL(az_task_cancel(pg, &ctx, ida, "", arena, &out, run_id, msg), AZ_OK);
    CU_ASSERT_STRING_EQUAL(run_id, run);

    CU_ASSERT_EQUAL_FATAL(az_pg_acquire(pg, &ctx, &c, msg), AZ_OK);
    az_task_ready rr = {.arena = arena};
    CU_ASSERT_EQUAL(az_task_resume_run(c, &ctx, run, &changed, &rr, msg), AZ_OK);
    az_pg_release(c);
    CU_ASSERT_EQUAL(changed, 2);
    CU_ASSERT_EQUAL(rr.n, 1);
    CU_ASSERT_TRUE(ready_has(&rr, ida));
    CU_ASSERT_EQUAL(status_of(ida), QUEUED);
    CU_ASSERT_EQUAL(status_of(idb), PENDING);
    CU_ASSERT_EQUAL(claim(ida), 2);
    complete(ida, 2, &rr);
    CU_ASSERT_EQUAL(status_of(idb), QUEUED);
    /* Resume keeps succeeded outputs: nothing else to move. */
    CU_ASSERT_EQUAL_FATAL(az_pg_acquire(pg, &ctx, &c, msg), AZ_OK);
    CU_ASSERT_EQUAL(az_task_resume_run(c, &ctx, run, &changed, &rr, msg), AZ_OK);
    az_pg_release(c);
    CU_ASSERT_EQUAL(changed, 0);
    CU_ASSERT_EQUAL(status_of(ida), SUCCEEDED);
}

static void test_attempts_and_usage(void)
{
    Agentz__V1__RetryPolicy p = AGENTZ__V1__RETRY_POLICY__INIT;
    Google__Protobuf__Duration zero = dur(0, 0);
    p.initial_backoff = &zero;
    az_task_ready ready = {.arena = arena};
    Agentz__V1__Task *a = create_task("usage", NULL, 0, &p, &ready);
    Agentz__V1__TokenUsage u1 = AGENTZ__V1__TOKEN_USAGE__INIT, u2 = AGENTZ__V1__TOKEN_USAGE__INIT;
    u1.prompt_tokens = 10;
    u1.completion_tokens = 5;
    u1.total_tokens = 15;
    u1.cost_usd = 0.25;
    u2.prompt_tokens = 100;
    u2.completion_tokens = 50;
    u2.total_tokens = 150;
    u2.cost_usd = 0.5;
    Agentz__V1__TaskError e = AGENTZ__V1__TASK_ERROR__INIT;
    e.type = "tool_error";
    e.message = "http_fetch: 503";
    e.retryable = 1;
    char msg[AZ_MSG_MAX];
    CU_ASSERT_EQUAL_FATAL(az_task_fail(pg, &ctx, a->id, claim(a->id), &e, &u1, NULL, NULL, msg), AZ_OK);
    CU_ASSERT_EQUAL(az_task_wake(pg, &ctx, 100, arena, &ready, msg), AZ_OK);
    Agentz__V1__TaskOutput o = AGENTZ__V1__TASK_OUTPUT__INIT;
    o.raw = "{\"ok\": true}";
    int at = claim(a->id);
    CU_ASSERT_EQUAL(at, 2);
    CU_ASSERT_EQUAL_FATAL(az_task_complete(pg, &ctx, a->id, at, &o, &u2, NULL, &ready, msg), AZ_OK);
    Agentz__V1__Task *t = get(a->id);
    CU_ASSERT_EQUAL(t->usage->prompt_tokens, 110);
    CU_ASSERT_EQUAL(t->usage->completion_tokens, 55);
    CU_ASSERT_EQUAL(t->usage->total_tokens, 165);
    CU_ASSERT_DOUBLE_EQUAL(t->usage->cost_usd, 0.75, 1e-9);
    CU_ASSERT_PTR_NULL(t->error); /* success clears the last error */
    CU_ASSERT_DOUBLE_EQUAL(t->progress, 1.0, 1e-9);

    Agentz__V1__ListTaskAttemptsResponse *l;
    CU_ASSERT_EQUAL_FATAL(az_task_list_attempts(pg, &ctx, a->id, 50, "", arena, &l, msg), AZ_OK);
    CU_ASSERT_EQUAL_FATAL(l->n_attempts, 2);
    CU_ASSERT_EQUAL(l->attempts[0]->attempt, 1);
    CU_ASSERT_EQUAL(l->attempts[0]->status, FAILED);
    CU_ASSERT_STRING_EQUAL(l->attempts[0]->error->type, "tool_error");
    CU_ASSERT_STRING_EQUAL(l->attempts[0]->worker, "worker-1");
    CU_ASSERT_EQUAL(l->attempts[0]->usage->total_tokens, 15);
    CU_ASSERT_PTR_NOT_NULL(l->attempts[0]->end_time);
    CU_ASSERT_EQUAL(l->attempts[1]->status, SUCCEEDED);
    CU_ASSERT_PTR_NULL(l->attempts[1]->error);
    CU_ASSERT_EQUAL(l->attempts[1]->usage->prompt_tokens, 100);
    CU_ASSERT_STRING_EQUAL(l->next_page_token, "");
    /* Pages of one. */
    CU_ASSERT_EQUAL_FATAL(az_task_list_attempts(pg, &ctx, a->id, 1, "", arena, &l, msg), AZ_OK);
    CU_ASSERT_EQUAL(l->n_attempts, 1);
    CU_ASSERT_STRING_NOT_EQUAL_FATAL(l->next_page_token, "");
    Agentz__V1__ListTaskAttemptsResponse *l2;
    CU_ASSERT_EQUAL_FATAL(az_task_list_attempts(pg, &ctx, a->id, 1, l->next_page_token, arena, &l2, msg), AZ_OK);
    CU_ASSERT_EQUAL_FATAL(l2->n_attempts, 1);
    CU_ASSERT_EQUAL(l2->attempts[0]->attempt, 2);
    CU_ASSERT_STRING_EQUAL(l2->next_page_token, "");
    /* A token of another task is refused. */
    Agentz__V1__Task *other = create_task("other", NULL, 0, NULL, &ready);
    CU_ASSERT_EQUAL(az_task_list_attempts(pg, &ctx, other->id, 1, l->next_page_token, arena, &l2, msg),
                    AZ_ERR_INVALID);
    CU_ASSERT_EQUAL(az_task_list_attempts(pg, &ctx, "ab6f2b1a-0000-4000-8000-000000000000", 1, "", arena,
                                          &l2, msg),
                    AZ_ERR_NOT_FOUND);
}

static void test_stats(void)
{
    const char *ag = "5a5a5a5a-0000-4000-8000-00000000005a";
    az_task_ready ready = {.arena = arena};
    Agentz__V1__Task t = AGENTZ__V1__TASK__INIT, *x[5];
    t.description = "stat";
    t.agent_id = (char *)ag;
    int rep;
    char msg[AZ_MSG_MAX];
    for (int i = 0; i < 5; i++)
        CU_ASSERT_EQUAL_FATAL(az_task_create(pg, &ctx, &t, "", "", arena, &x[i], &rep, &ready, msg), AZ_OK);
    Agentz__V1__TokenUsage u = AGENTZ__V1__TOKEN_USAGE__INIT;
    u.prompt_tokens = 7;
    u.completion_tokens = 3;
    u.total_tokens = 10;
    u.cost_usd = 0.125;
    Agentz__V1__TaskOutput o = AGENTZ__V1__TASK_OUTPUT__INIT;
    /* x0, x1 succeed (x1 after one retry); x2 fails; x3 is cancelled unstarted; x4 queued. */
    CU_ASSERT_EQUAL(az_task_complete(pg, &ctx, x[0]->id, claim(x[0]->id), &o, &u, NULL, &ready, msg), AZ_OK);
    Agentz__V1__TaskError e = AGENTZ__V1__TASK_ERROR__INIT;
    e.type = "x";
    e.retryable = 1;
    az_task_fail(pg, &ctx, x[1]->id, claim(x[1]->id), &e, &u, NULL, NULL, msg);
    sqlf("UPDATE tasks SET next_attempt_time = now() WHERE id = '%s'", x[1]->id, NULL);
    az_task_wake(pg, &ctx, 1000, arena, &ready, msg);
    CU_ASSERT_EQUAL(az_task_complete(pg, &ctx, x[1]->id, claim(x[1]->id), &o, &u, NULL, &ready, msg), AZ_OK);
    e.retryable = 0;
    az_task_fail(pg, &ctx, x[2]->id, claim(x[2]->id), &e, NULL, NULL, NULL, msg);
    Agentz__V1__Task *out;
    az_task_cancel(pg, &ctx, x[3]->id, "", arena, &out, NULL, msg);
    /* Durations 1 s, 2 s, 3 s. */
    for (int i = 0; i < 3; i++) {
        char q[256];
        snprintf(q, sizeof q, "UPDATE tasks SET end_time = start_time + interval '%d seconds' WHERE id = '%s'",
                 i + 1, x[i]->id);
        sql(q);
    }
    Agentz__V1__TaskStats *st;
    CU_ASSERT_EQUAL_FATAL(az_task_stats(pg, &ctx, 0, 0, ag, arena, &st, msg), AZ_OK);
    CU_ASSERT_EQUAL(st->total, 5);
    CU_ASSERT_EQUAL(st->succeeded, 2);
    CU_ASSERT_EQUAL(st->failed, 1);
    CU_ASSERT_EQUAL(st->cancelled, 1);
    CU_ASSERT_EQUAL(st->queued, 1);
    CU_ASSERT_EQUAL(st->pending + st->running + st->backoff, 0);
    CU_ASSERT_DOUBLE_EQUAL(st->success_rate, 0.5, 1e-9); /* 2 / (2 + 1 + 1) */
    CU_ASSERT_PTR_NOT_NULL_FATAL(st->p50_duration);
    CU_ASSERT_EQUAL(st->p50_duration->seconds, 2);
    CU_ASSERT_EQUAL(st->p50_duration->nanos, 0);
    CU_ASSERT_EQUAL(st->p95_duration->seconds, 2);
    CU_ASSERT_EQUAL(st->p95_duration->nanos, 900000000); /* interpolated: 2 + 0.9 */
    CU_ASSERT_EQUAL(st->max_duration->seconds, 3);
    CU_ASSERT_EQUAL(st->retries, 1);
    CU_ASSERT_EQUAL(st->usage->prompt_tokens, 21);
    CU_ASSERT_EQUAL(st->usage->total_tokens, 30);
    CU_ASSERT_DOUBLE_EQUAL(st->usage->cost_usd, 0.375, 1e-9);
    /* A window that ends before the tasks were created is empty. */
    CU_ASSERT_EQUAL_FATAL(az_task_stats(pg, &ctx, 1000000, 2000000, ag, arena, &st, msg), AZ_OK);
    CU_ASSERT_EQUAL(st->total, 0);
    CU_ASSERT_PTR_NULL(st->p50_duration);
    CU_ASSERT_DOUBLE_EQUAL(st->success_rate, 0.0, 1e-9);
    CU_ASSERT_EQUAL(st->start_time->seconds, 1);
}

static void test_list_pagination(void)
{
    const char *ag = "6b6b6b6b-0000-4000-8000-00000000006b";
    az_task_ready ready = {.arena = arena};
    Agentz__V1__Task t = AGENTZ__V1__TASK__INIT, *x[7];
    t.description = "listed";
    t.agent_id = (char *)ag;
    int rep;
    char msg[AZ_MSG_MAX];
    for (int i = 0; i < 7; i++)
        CU_ASSERT_EQUAL_FATAL(az_task_create(pg, &ctx, &t, "", "", arena, &x[i], &rep, &ready, msg), AZ_OK);
    Agentz__V1__Task *out;
    az_task_cancel(pg, &ctx, x[2]->id, "", arena, &out, NULL, msg);
    az_task_query q = {.agent_id = ag, .run_id = "", .page_size = 3, .page_token = ""};
    char seen[8][37];
    int n = 0;
    for (int page = 0; page < 5; page++) {
        Agentz__V1__ListTasksResponse *r;
        CU_ASSERT_EQUAL_FATAL(az_task_list(pg, &ctx, &q, arena, &r, msg), AZ_OK);
        for (size_t i = 0; i < r->n_tasks && n < 8; i++) snprintf(seen[n++], 37, "%s", r->tasks[i]->id);
        if (!*r->next_page_token) break;
        q.page_token = r->next_page_token;
    }
    CU_ASSERT_EQUAL_FATAL(n, 7);
    for (int i = 0; i < 7; i++) CU_ASSERT_STRING_EQUAL(seen[i], x[6 - i]->id); /* newest first */
    /* Filter by status. */
    az_task_query qs = {.status = CANCELLED, .agent_id = ag, .run_id = "", .page_size = 10, .page_token = ""};
    Agentz__V1__ListTasksResponse *r;
    CU_ASSERT_EQUAL_FATAL(az_task_list(pg, &ctx, &qs, arena, &r, msg), AZ_OK);
    CU_ASSERT_EQUAL(r->n_tasks, 1);
    /* A token is bound to its filters. */
    q.page_token = "";
    CU_ASSERT_EQUAL_FATAL(az_task_list(pg, &ctx, &q, arena, &r, msg), AZ_OK);
    qs.page_token = r->next_page_token;
    CU_ASSERT_EQUAL(az_task_list(pg, &ctx, &qs, arena, &r, msg), AZ_ERR_INVALID);
    qs.page_token = "garbage!";
    CU_ASSERT_EQUAL(az_task_list(pg, &ctx, &qs, arena, &r, msg), AZ_ERR_INVALID);
}

/* ---------------------------------------------------------------- concurrency */

typedef struct racer {
    const char *id;
    unsigned seed;
    int retries_ok, cancels_ok, other;
    pthread_barrier_t *bar;
} racer;

static void *cancel_retry_main(void *arg)
{
    racer *r = arg;
    az_arena *a = az_arena_new(0);
    char msg[AZ_MSG_MAX];
    pthread_barrier_wait(r->bar);
    for (int i = 0; i < 50; i++) {
        Agentz__V1__Task *out;
        az_task_ready ready = {.arena = a};
        az_err err;
        if (rand_r(&r->seed) % 2) {
            err = az_task_cancel(pg, &ctx, r->id, "race", a, &out, NULL, msg);
            if (err == AZ_OK) r->cancels_ok++;
            else if (err != AZ_ERR_PRECONDITION) r->other++;
        } else {
            err = az_task_retry(pg, &ctx, r->id, a, &out, NULL, &ready, msg);
            if (err == AZ_OK) r->retries_ok++;
            else if (err != AZ_ERR_PRECONDITION) r->other++;
        }
        if (err != AZ_OK && err != AZ_ERR_PRECONDITION) fprintf(stderr, "race: %s\n", msg);
    }
    az_arena_free(a);
    return NULL;
}

static void test_concurrent_cancel_retry(void)
{
    az_task_ready ready = {.arena = arena};
    Agentz__V1__Task *a = create_task("contended", NULL, 0, NULL, &ready);
    const char *da[] = {a->id};
    Agentz__V1__Task *b = create_task("contended child", da, 1, NULL, &ready);
    pthread_barrier_t bar;
    pthread_barrier_init(&bar, NULL, 8);
    racer r[8];
    pthread_t th[8];
    for (int i = 0; i < 8; i++) {
        r[i] = (racer){.id = a->id, .seed = 1234u + (unsigned)i, .bar = &bar};
        pthread_create(&th[i], NULL, cancel_retry_main, &r[i]);
    }
    int retries = 0, other = 0;
    for (int i = 0; i < 8; i++) {
        pthread_join(th[i], NULL);
        retries += r[i].retries_ok;
        other += r[i].other;
    }
    pthread_barrier_destroy(&bar);
    CU_ASSERT_EQUAL(other, 0);
    CU_ASSERT(retries > 0);
    Agentz__V1__Task *fa = get(a->id), *fb = get(b->id);
    CU_ASSERT(fa->status == CANCELLED || fa->status == QUEUED || fa->status == PENDING);
    /* Every successful retry undid exactly one cancel: the revision counts both, and the
     * final state says whether one cancel is left over. */
    int64_t rev = az_task_etag_revision(fa->etag);
    if (fa->status == CANCELLED) {
        CU_ASSERT_EQUAL(rev, 2 + 2 * (int64_t)retries);
        CU_ASSERT_EQUAL(fb->status, CANCELLED);
        CU_ASSERT_PTR_NOT_NULL(fb->error && strstr(fb->error->message, a->id));
    } else {
        CU_ASSERT_EQUAL(rev, 1 + 2 * (int64_t)retries);
        CU_ASSERT_EQUAL(fb->status, PENDING);
        CU_ASSERT_PTR_NULL(fb->error);
    }
    CU_ASSERT_EQUAL(az_task_etag_revision(fb->etag), rev); /* B moved with every A move */
    CU_ASSERT_EQUAL(fa->attempt, 0);
    CU_ASSERT_STRING_EQUAL(sqlf("SELECT count(*) FROM task_attempts WHERE task_id = '%s'", a->id, NULL), "0");
}

typedef struct claimer {
    const char *id;
    pthread_barrier_t *bar;
    az_err err;
    int attempt;
} claimer;

static void *claim_main(void *arg)
{
    claimer *c = arg;
    az_arena *a = az_arena_new(0);
    char msg[AZ_MSG_MAX], worker[32];
    snprintf(worker, sizeof worker, "w-%p", (void *)c);
    Agentz__V1__Task *t = NULL;
    pthread_barrier_wait(c->bar);
    c->err = az_task_claim(pg, &ctx, c->id, worker, 0, a, &t, msg);
    if (c->err == AZ_OK) c->attempt = t->attempt;
    az_arena_free(a);
    return NULL;
}

static void test_concurrent_claim(void)
{
    for (int round = 0; round < 5; round++) {
        az_task_ready ready = {.arena = arena};
        Agentz__V1__Task *a = create_task("claimed", NULL, 0, NULL, &ready);
        pthread_barrier_t bar;
        pthread_barrier_init(&bar, NULL, 8);
        claimer c[8];
        pthread_t th[8];
        for (int i = 0; i < 8; i++) {
            c[i] = (claimer){.id = a->id, .bar = &bar};
            pthread_create(&th[i], NULL, claim_main, &c[i]);
        }
        int won = 0, lost = 0;
        for (int i = 0; i < 8; i++) {
            pthread_join(th[i], NULL);
            if (c[i].err == AZ_OK) {
                won++;
                CU_ASSERT_EQUAL(c[i].attempt, 1);
            } else if (c[i].err == AZ_ERR_PRECONDITION) {
                lost++;
            }
        }
        pthread_barrier_destroy(&bar);
        CU_ASSERT_EQUAL(won, 1);
        CU_ASSERT_EQUAL(lost, 7);
        CU_ASSERT_EQUAL(get(a->id)->attempt, 1);
        CU_ASSERT_STRING_EQUAL(sqlf("SELECT count(*) FROM task_attempts WHERE task_id = '%s'", a->id, NULL), "1");
    }
}

typedef struct batch_claimer {
    char **ids;
    size_t n;
    pthread_barrier_t *bar;
    az_err err;
    size_t got;
} batch_claimer;

static void *claim_many_main(void *arg)
{
    batch_claimer *c = arg;
    az_arena *a = az_arena_new(0);
    char msg[AZ_MSG_MAX], worker[32];
    snprintf(worker, sizeof worker, "w-%p", (void *)c);
    Agentz__V1__Task **v = NULL;
    pthread_barrier_wait(c->bar);
    c->err = az_task_claim_many(pg, &ctx, c->ids, c->n, worker, 0, a, &v, &c->got, msg);
    if (c->err != AZ_OK) fprintf(stderr, "claim_many: %s\n", msg);
    az_arena_free(a);
    return NULL;
}

static void test_claim_many(void)
{
    az_task_ready ready = {.arena = arena};
    Agentz__V1__Task *t[4];
    for (int i = 0; i < 4; i++) t[i] = create_task("batch-claimed", NULL, 0, NULL, &ready);
    const char *dep[1] = {t[3]->id};
    Agentz__V1__Task *pending = create_task("batch-pending", dep, 1, NULL, &ready);
    /* Claimable, claimable, pending, not a uuid, unknown, claimable: three are claimed. */
    char *ids[6] = {t[0]->id, t[1]->id, pending->id, "nope", "0f0f0f0f-0000-4000-8000-0000000000aa", t[2]->id};
    Agentz__V1__Task **v = NULL;
    size_t n = 99;
    char msg[AZ_MSG_MAX];
    CU_ASSERT_EQUAL_FATAL(az_task_claim_many(pg, &ctx, ids, 6, "worker-b", 0, arena, &v, &n, msg), AZ_OK);
    CU_ASSERT_EQUAL_FATAL(n, 3);
    int seen[3] = {0, 0, 0};
    for (size_t i = 0; i < n; i++) {
        CU_ASSERT_EQUAL(v[i]->status, RUNNING);
        CU_ASSERT_EQUAL(v[i]->attempt, 1);
        for (int k = 0; k < 3; k++) seen[k] += strcmp(v[i]->id, t[k]->id) == 0;
    }
    CU_ASSERT_TRUE(seen[0] == 1 && seen[1] == 1 && seen[2] == 1);
    for (int k = 0; k < 3; k++) {
        CU_ASSERT_EQUAL(status_of(t[k]->id), RUNNING);
        CU_ASSERT_STRING_EQUAL(sqlf("SELECT worker FROM task_attempts WHERE task_id = '%s' AND attempt = 1",
                                    t[k]->id, NULL), "worker-b");
        CU_ASSERT_STRING_EQUAL(sqlf("SELECT lease_owner FROM tasks WHERE id = '%s'", t[k]->id, NULL), "worker-b");
        /* TaskStatusChanged queued -> running, committed with the claim */
        CU_ASSERT_STRING_EQUAL(sqlf("SELECT count(*) FROM events WHERE task_id = '%s' AND task_seq = 2",
                                    t[k]->id, NULL), "1");
    }
    CU_ASSERT_EQUAL(status_of(pending->id), 1);
    CU_ASSERT_EQUAL(status_of(t[3]->id), 2);
    /* Claiming them again claims nothing; nothing and too much are answered plainly. */
    CU_ASSERT_EQUAL(az_task_claim_many(pg, &ctx, ids, 6, "worker-c", 0, arena, &v, &n, msg), AZ_OK);
    CU_ASSERT_EQUAL(n, 0);
    CU_ASSERT_PTR_NULL(v);
    CU_ASSERT_EQUAL(az_task_claim_many(pg, &ctx, ids, 0, "worker-c", 0, arena, &v, &n, msg), AZ_OK);
    CU_ASSERT_EQUAL(n, 0);
    CU_ASSERT_EQUAL(az_task_claim_many(pg, &ctx, ids, AZ_TASK_CLAIM_MAX + 1, "worker-c", 0, arena, &v, &n, msg),
                    AZ_ERR_INVALID);
    /* Another workspace claims nothing of this one. */
    az_ctx other = ctx;
    other.workspace_id = "0f0f0f0f-0000-4000-8000-000000000001";
    char *last[1] = {t[3]->id};
    CU_ASSERT_EQUAL(az_task_claim_many(pg, &other, last, 1, "worker-c", 0, arena, &v, &n, msg), AZ_OK);
    CU_ASSERT_EQUAL(n, 0);
    CU_ASSERT_EQUAL(status_of(t[3]->id), 2);
    for (int k = 0; k < 3; k++) complete(t[k]->id, 1, &ready);

    /* Four workers claim overlapping batches of the same 40 tasks at once (a task published
     * twice): each task is claimed exactly once, nobody deadlocks or fails. */
    enum { NT = 40, NW = 4 };
    char *all[NT];
    for (int i = 0; i < NT; i++) all[i] = create_task("batch-raced", NULL, 0, NULL, &ready)->id;
    pthread_barrier_t bar;
    pthread_barrier_init(&bar, NULL, NW);
    batch_claimer c[NW];
    pthread_t th[NW];
    char *mine[NW][NT];
    for (int w = 0; w < NW; w++) {
        /* worker w takes 30 of the 40, starting at 10 * w, in its own order */
        for (int i = 0; i < 30; i++) mine[w][i] = all[(10 * w + (w % 2 ? 29 - i : i)) % NT];
        c[w] = (batch_claimer){.ids = mine[w], .n = 30, .bar = &bar};
        pthread_create(&th[w], NULL, claim_many_main, &c[w]);
    }
    size_t total = 0;
    for (int w = 0; w < NW; w++) {
        pthread_join(th[w], NULL);
        CU_ASSERT_EQUAL(c[w].err, AZ_OK);
        total += c[w].got;
    }
    pthread_barrier_destroy(&bar);
    CU_ASSERT_EQUAL(total, NT);
    CU_ASSERT_STRING_EQUAL(sql("SELECT count(*) FROM task_attempts a JOIN tasks t ON t.id = a.task_id"
                               " WHERE t.description = 'batch-raced'"), "40");
    CU_ASSERT_STRING_EQUAL(sql("SELECT count(*) FROM tasks WHERE description = 'batch-raced'"
                               " AND status = 3 AND attempt = 1"), "40");
}

/* ---------------------------------------------------------------- set-up */

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    remove(path);
    return 0;
}


/* ---------------------------------------------------------------- leases (engine) */

static Agentz__V1__Task *claim_as(const char *id, const char *worker, int64_t lease_ms)
{
    Agentz__V1__Task *t = NULL;
    char msg[AZ_MSG_MAX];
    az_err err = az_task_claim(pg, &ctx, id, worker, lease_ms, arena, &t, msg);
    if (err != AZ_OK) fprintf(stderr, "claim: %s\n", msg);
    CU_ASSERT_EQUAL_FATAL(err, AZ_OK);
    return t;
}

static int ids_have(char **ids, size_t n, const char *id)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(ids[i], id) == 0) return 1;
    return 0;
}

static void test_lease_heartbeat_and_reap(void)
{
    Agentz__V1__RetryPolicy p = AGENTZ__V1__RETRY_POLICY__INIT;
    Google__Protobuf__Duration init = dur(0, 50000000); /* 50 ms */
    p.initial_backoff = &init;
    az_task_ready ready = {.arena = arena};
    Agentz__V1__Task *a = create_task("leased", NULL, 0, &p, &ready);
    Agentz__V1__Task *t = claim_as(a->id, "w-lease", 300);
    CU_ASSERT_STRING_EQUAL(sqlf("SELECT lease_owner FROM tasks WHERE id = '%s'", a->id, NULL), "w-lease");
    CU_ASSERT_STRING_EQUAL(sqlf("SELECT lease_expires_at > now() + interval '100 ms' AND"
                                " lease_expires_at < now() + interval '400 ms' FROM tasks WHERE id = '%s'",
                                a->id, NULL), "t");
    char msg[AZ_MSG_MAX];
    char **ids;
    size_t n;
    CU_ASSERT_EQUAL(az_task_heartbeat(pg, "w-lease", 300, arena, &ids, &n, msg), AZ_OK);
    CU_ASSERT_EQUAL(n, 1);
    CU_ASSERT_TRUE(ids_have(ids, n, a->id));
    CU_ASSERT_EQUAL(az_task_heartbeat(pg, "someone-else", 300, arena, &ids, &n, msg), AZ_OK);
    CU_ASSERT_FALSE(ids_have(ids, n, a->id));
    CU_ASSERT_EQUAL(az_task_heartbeat(pg, "", 300, arena, &ids, &n, msg), AZ_ERR_INVALID);

    /* Not expired: nothing reaped. */
    int reaped = -1;
    az_task_ready r = {.arena = arena};
    char **ws = NULL;
    az_task_reaped *list = NULL;
    CU_ASSERT_EQUAL(az_task_reap_expired(pg, 100, &reaped, &r, &ws, arena, &list, msg), AZ_OK);
    CU_ASSERT_EQUAL(reaped, 0);
    CU_ASSERT_EQUAL(status_of(a->id), RUNNING);

    /* The heartbeat keeps it alive past its first lease. */
    usleep(200000);
    CU_ASSERT_EQUAL(az_task_heartbeat(pg, "w-lease", 300, arena, &ids, &n, msg), AZ_OK);
    usleep(200000);
    CU_ASSERT_EQUAL(az_task_reap_expired(pg, 100, &reaped, &r, &ws, arena, &list, msg), AZ_OK);
    CU_ASSERT_EQUAL(reaped, 0);
    CU_ASSERT_EQUAL(status_of(a->id), RUNNING);

    /* The worker stops renewing: the attempt fails as worker_lost and goes to backoff. */
    usleep(350000);
    CU_ASSERT_EQUAL(az_task_reap_expired(pg, 100, &reaped, &r, &ws, arena, &list, msg), AZ_OK);
    CU_ASSERT_EQUAL(reaped, 1);
    CU_ASSERT_EQUAL(r.n, 0); /* 50 ms backoff: the reconciler's wake queues it */
    CU_ASSERT_PTR_NOT_NULL_FATAL(list);
    CU_ASSERT_STRING_EQUAL(list[0].task_id, a->id);
    CU_ASSERT_STRING_EQUAL(list[0].run_id, ""); /* standalone task */
    CU_ASSERT_STRING_EQUAL(list[0].workspace_id, AZ_DEFAULT_WORKSPACE);
    CU_ASSERT_EQUAL(list[0].failed, 0); /* it will run again */
    Agentz__V1__Task *g = get(a->id);
    CU_ASSERT_EQUAL(g->status, BACKOFF);
    CU_ASSERT_PTR_NOT_NULL_FATAL(g->error);
    CU_ASSERT_STRING_EQUAL(g->error->type, "worker_lost");
    CU_ASSERT_TRUE(g->error->retryable);
    CU_ASSERT_STRING_EQUAL(sqlf("SELECT status || ':' || error_type || ':' || worker FROM task_attempts"
                                " WHERE task_id = '%s' AND attempt = 1", a->id, NULL),
                           "6:worker_lost:w-lease");
    CU_ASSERT_STRING_EQUAL(sqlf("SELECT lease_owner IS NULL FROM tasks WHERE id = '%s'", a->id, NULL), "t");
    /* The dead worker's late outcome is stale. */
    Agentz__V1__TaskOutput out = AGENTZ__V1__TASK_OUTPUT__INIT;
    out.raw = "late";
    CU_ASSERT_EQUAL(az_task_complete(pg, &ctx, a->id, t->attempt, &out, NULL, NULL, &ready, msg),
                    AZ_ERR_PRECONDITION);
    CU_ASSERT_EQUAL(az_task_heartbeat(pg, "w-lease", 300, arena, &ids, &n, msg), AZ_OK);
    CU_ASSERT_FALSE(ids_have(ids, n, a->id));
    /* Reaping twice does nothing more. */
    CU_ASSERT_EQUAL(az_task_reap_expired(pg, 100, &reaped, &r, &ws, arena, &list, msg), AZ_OK);
    CU_ASSERT_EQUAL(reaped, 0);

    /* Zero backoff: a reaped task is queued at once and reported ready with its workspace. */
    Google__Protobuf__Duration zero = dur(0, 0);
    p.initial_backoff = &zero;
    Agentz__V1__Task *b = create_task("leased-now", NULL, 0, &p, &ready);
    claim_as(b->id, "w-lease", 100);
    usleep(200000);
    CU_ASSERT_EQUAL(az_task_reap_expired(pg, 100, &reaped, &r, &ws, arena, &list, msg), AZ_OK);
    CU_ASSERT_EQUAL(reaped, 1);
    CU_ASSERT_EQUAL_FATAL(r.n, 1);
    CU_ASSERT_STRING_EQUAL(r.ids[0], b->id);
    CU_ASSERT_STRING_EQUAL(ws[0], AZ_DEFAULT_WORKSPACE);
    CU_ASSERT_EQUAL(status_of(b->id), QUEUED);
    CU_ASSERT_EQUAL(claim_as(b->id, "w-2", 0)->attempt, 2);
    complete(b->id, 2, &ready);

    /* Attempts used up: the reaped task fails for good and its dependents are cancelled. */
    p.max_attempts = 1;
    Agentz__V1__Task *c = create_task("leased-last", NULL, 0, &p, &ready);
    const char *deps[] = {c->id};
    Agentz__V1__Task *d = create_task("after-leased-last", deps, 1, NULL, &ready);
    claim_as(c->id, "w-lease", 50);
    usleep(150000);
    CU_ASSERT_EQUAL(az_task_reap_expired(pg, 100, &reaped, &r, &ws, arena, &list, msg), AZ_OK);
    CU_ASSERT_EQUAL(reaped, 1);
    CU_ASSERT_EQUAL(list[0].failed, 1); /* no attempt left: the agent is told it failed */
    CU_ASSERT_EQUAL(status_of(c->id), FAILED);
    CU_ASSERT_EQUAL(status_of(d->id), CANCELLED);
}

static void test_release(void)
{
    Agentz__V1__RetryPolicy p = AGENTZ__V1__RETRY_POLICY__INIT;
    Google__Protobuf__Duration init = dur(0, 50000000);
    p.initial_backoff = &init;
    p.max_attempts = 2;
    az_task_ready ready = {.arena = arena};
    Agentz__V1__Task *a = create_task("handed back", NULL, 0, &p, &ready);
    Agentz__V1__Task *t = claim_as(a->id, "w-stop", 0);
    char msg[AZ_MSG_MAX];
    az_task_ready r = {.arena = arena};
    CU_ASSERT_EQUAL(az_task_release(pg, &ctx, a->id, t->attempt + 1, &r, msg), AZ_ERR_PRECONDITION);
    CU_ASSERT_EQUAL(r.n, 0);
    CU_ASSERT_EQUAL(az_task_release(pg, &ctx, a->id, t->attempt, &r, msg), AZ_OK);
    CU_ASSERT_TRUE(ready_has(&r, a->id));
    CU_ASSERT_EQUAL(status_of(a->id), QUEUED);
    CU_ASSERT_STRING_EQUAL(sqlf("SELECT status || ':' || error_type FROM task_attempts"
                                " WHERE task_id = '%s' AND attempt = 1", a->id, NULL),
                           "7:worker_shutdown");
    /* Twice: stale. */
    size_t before = r.n;
    CU_ASSERT_EQUAL(az_task_release(pg, &ctx, a->id, t->attempt, &r, msg), AZ_ERR_PRECONDITION);
    CU_ASSERT_EQUAL(r.n, before);
    /* The hand-back does not count: with max_attempts 2, attempts 2 and 3 may both run. */
    t = claim_as(a->id, "w-other", 0);
    CU_ASSERT_EQUAL(t->attempt, 2);
    Agentz__V1__TaskError e = AGENTZ__V1__TASK_ERROR__INIT;
    e.type = "llm_unavailable";
    e.message = "503";
    e.retryable = 1;
    int64_t next = 0;
    CU_ASSERT_EQUAL(az_task_fail(pg, &ctx, a->id, 2, &e, NULL, &next, NULL, msg), AZ_OK);
    CU_ASSERT_TRUE(next > 0);
    CU_ASSERT_EQUAL(status_of(a->id), BACKOFF);
}

static void test_fail_after_and_progress(void)
{
    Agentz__V1__RetryPolicy p = AGENTZ__V1__RETRY_POLICY__INIT;
    Google__Protobuf__Duration init = dur(0, 50000000);
    p.initial_backoff = &init;
    az_task_ready ready = {.arena = arena};
    Agentz__V1__Task *a = create_task("rate limited", NULL, 0, &p, &ready);
    int at = claim(a->id);
    char msg[AZ_MSG_MAX];
    /* Progress: clamped, stale attempts ignored. */
    CU_ASSERT_EQUAL(az_task_set_progress(pg, &ctx, a->id, at, 0.5, msg), AZ_OK);
    CU_ASSERT_EQUAL(get(a->id)->progress, 0.5);
    CU_ASSERT_EQUAL(az_task_set_progress(pg, &ctx, a->id, at + 1, 0.9, msg), AZ_OK);
    CU_ASSERT_EQUAL(get(a->id)->progress, 0.5);
    CU_ASSERT_EQUAL(az_task_set_progress(pg, &ctx, a->id, at, 7, msg), AZ_OK);
    CU_ASSERT_EQUAL(get(a->id)->progress, 1.0);
    CU_ASSERT_EQUAL(az_task_set_progress(pg, &ctx, "nope", at, 0.1, msg), AZ_ERR_NOT_FOUND);

    Agentz__V1__TaskError e = AGENTZ__V1__TASK_ERROR__INIT;
    e.type = "llm_rate_limited";
    e.message = "429";
    e.retryable = 1;
    int64_t next = 0;
    /* Stale attempt. */
    CU_ASSERT_EQUAL(az_task_fail_after(pg, &ctx, a->id, at + 1, &e, NULL, 800, &next, NULL, msg),
                    AZ_ERR_PRECONDITION);
    /* Retry-After 800 ms beats the 50 ms backoff. */
    CU_ASSERT_EQUAL(az_task_fail_after(pg, &ctx, a->id, at, &e, NULL, 800, &next, NULL, msg), AZ_OK);
    CU_ASSERT_EQUAL(next, 800);
    CU_ASSERT_STRING_EQUAL(sqlf("SELECT next_attempt_time > now() + interval '600 ms' FROM tasks"
                                " WHERE id = '%s'", a->id, NULL), "t");
    /* A smaller Retry-After leaves the backoff as it is. */
    sql("UPDATE tasks SET next_attempt_time = now() - interval '1 second' WHERE status = 4");
    az_task_ready woken = {.arena = arena};
    CU_ASSERT_EQUAL(az_task_wake(pg, &ctx, 100, arena, &woken, msg), AZ_OK);
    at = claim(a->id);
    CU_ASSERT_EQUAL(az_task_fail_after(pg, &ctx, a->id, at, &e, NULL, 1, &next, NULL, msg), AZ_OK);
    CU_ASSERT(next >= 80 && next <= 100);
}

static void test_not_running_sql(void)
{
    az_task_ready ready = {.arena = arena};
    Agentz__V1__Task *a = create_task("mine", NULL, 0, NULL, &ready);
    Agentz__V1__Task *b = create_task("cancelled under me", NULL, 0, NULL, &ready);
    int at_a = claim_as(a->id, "w-check", 0)->attempt;
    int at_b = claim_as(b->id, "w-check", 0)->attempt;
    char msg[AZ_MSG_MAX];
    CU_ASSERT_EQUAL(az_task_cancel(pg, &ctx, b->id, "stop", arena, &(Agentz__V1__Task *){0}, NULL, msg), AZ_OK);
    char ids[100], atts[40], stale[40];
    snprintf(ids, sizeof ids, "{%s,%s}", a->id, b->id);
    snprintf(atts, sizeof atts, "{%d,%d}", at_a, at_b);
    const char *prm[3] = {ids, atts, "w-check"};
    az_pgconn *c;
    CU_ASSERT_EQUAL_FATAL(az_pg_acquire(pg, &ctx, &c, msg), AZ_OK);
    PGresult *r = NULL;
    CU_ASSERT_EQUAL_FATAL(az_pg_exec(c, &ctx, az_task_sql_not_running(), 3, prm, &r, msg), AZ_OK);
    CU_ASSERT_EQUAL(PQntuples(r), 1);
    if (PQntuples(r) == 1) {
        CU_ASSERT_STRING_EQUAL(PQgetvalue(r, 0, 0), b->id);
        CU_ASSERT_EQUAL(atoi(PQgetvalue(r, 0, 1)), at_b);
    }
    PQclear(r);
    /* Another worker, or another attempt, is not ours either. */
    snprintf(stale, sizeof stale, "{%d,%d}", at_a + 1, at_b);
    const char *prm2[3] = {ids, stale, "w-check"};
    CU_ASSERT_EQUAL_FATAL(az_pg_exec(c, &ctx, az_task_sql_not_running(), 3, prm2, &r, msg), AZ_OK);
    CU_ASSERT_EQUAL(PQntuples(r), 2);
    PQclear(r);
    const char *prm3[3] = {ids, atts, "w-other"};
    CU_ASSERT_EQUAL_FATAL(az_pg_exec(c, &ctx, az_task_sql_not_running(), 3, prm3, &r, msg), AZ_OK);
    CU_ASSERT_EQUAL(PQntuples(r), 2);
    PQclear(r);
    az_pg_release(c);
    /* It runs every 500 ms per worker: the lookup must use the partial lease index, not scan
     * tasks (a status guard the index predicate cannot match made it a 17 ms scan). With
     * sequential scans priced out, a plan without an index for it still shows a Seq Scan. */
    CU_ASSERT_EQUAL_FATAL(az_pg_acquire(pg, &ctx, &c, msg), AZ_OK);
    CU_ASSERT_EQUAL_FATAL(az_pg_exec(c, &ctx, "SET enable_seqscan = off", 0, NULL, NULL, msg), AZ_OK);
    char explain[600];
    snprintf(explain, sizeof explain, "EXPLAIN %s", az_task_sql_not_running());
    CU_ASSERT_EQUAL_FATAL(az_pg_exec(c, &ctx, explain, 3, prm, &r, msg), AZ_OK);
    int lease_index = 0, scan = 0;
    for (int i = 0; i < PQntuples(r); i++) {
        lease_index |= strstr(PQgetvalue(r, i, 0), "tasks_lease_owner") != NULL;
        scan |= strstr(PQgetvalue(r, i, 0), "Seq Scan on tasks") != NULL;
    }
    CU_ASSERT_TRUE(lease_index);
    CU_ASSERT_FALSE(scan);
    PQclear(r);
    CU_ASSERT_EQUAL(az_pg_exec(c, &ctx, "RESET enable_seqscan", 0, NULL, NULL, msg), AZ_OK);
    az_pg_release(c);
}

/* The dependents of a finishing task are found through task_deps, under the workspace policy
 * (the pool's sessions are agentz_app): the trigger keeps the edges equal to depends_on, a
 * completion queues exactly the dependents whose dependencies all succeeded, and the lookup is
 * an index scan. Array containment through a GIN index was a scan of every task of the
 * workspace, because the operator is not leakproof and so cannot run before the policy. */
static void test_dependents_sql(void)
{
    az_task_ready ready = {.arena = arena};
    Agentz__V1__Task *a = create_task("edge-a", NULL, 0, NULL, &ready);
    Agentz__V1__Task *b = create_task("edge-b", NULL, 0, NULL, &ready);
    const char *dab[] = {a->id, b->id, a->id};
    const char *da[] = {a->id};
    Agentz__V1__Task *both = create_task("edge-both", dab, 3, NULL, &ready);
    Agentz__V1__Task *only = create_task("edge-only-a", da, 1, NULL, &ready);
    CU_ASSERT_STRING_EQUAL(sqlf("SELECT count(*) FROM task_deps WHERE task_id = '%s'", both->id, NULL), "2");
    CU_ASSERT_STRING_EQUAL(sqlf("SELECT string_agg(task_id::text, ',' ORDER BY task_id) FROM task_deps"
                                " WHERE dep_id = '%s'", a->id, NULL),
                           strcmp(both->id, only->id) < 0
                               ? sqlf("SELECT '%s,%s'", both->id, only->id)
                               : sqlf("SELECT '%s,%s'", only->id, both->id));
    CU_ASSERT_STRING_EQUAL(sqlf("SELECT count(*) FROM task_deps WHERE task_id = '%s'", a->id, NULL), "0");

    complete(a->id, claim_as(a->id, "w-edge", 0)->attempt, &ready);
    CU_ASSERT_EQUAL(status_of(only->id), QUEUED);
    CU_ASSERT_EQUAL(status_of(both->id), PENDING);
    complete(b->id, claim_as(b->id, "w-edge", 0)->attempt, &ready);
    CU_ASSERT_EQUAL(status_of(both->id), QUEUED);

    char msg[AZ_MSG_MAX];
    az_pgconn *c;
    PGresult *r = NULL;
    CU_ASSERT_EQUAL_FATAL(az_pg_acquire(pg, &ctx, &c, msg), AZ_OK);
    /* The policy must be in force on this session, or the plan proves nothing. */
    CU_ASSERT_EQUAL_FATAL(az_pg_exec(c, &ctx, "SELECT current_user, row_security_active('tasks')",
                                     0, NULL, &r, msg), AZ_OK);
    CU_ASSERT_STRING_EQUAL(PQgetvalue(r, 0, 0), "agentz_app");
    CU_ASSERT_STRING_EQUAL(PQgetvalue(r, 0, 1), "t");
    PQclear(r);
    CU_ASSERT_EQUAL_FATAL(az_pg_exec(c, &ctx, "SET enable_seqscan = off", 0, NULL, NULL, msg), AZ_OK);
    char explain[600];
    snprintf(explain, sizeof explain, "EXPLAIN %s", az_task_sql_dependents());
    const char *prm[2] = {ctx.workspace_id, a->id};
    CU_ASSERT_EQUAL_FATAL(az_pg_exec(c, &ctx, explain, 2, prm, &r, msg), AZ_OK);
    int scan = 0, edges = 0;
    for (int i = 0; i < PQntuples(r); i++) {
        scan |= strstr(PQgetvalue(r, i, 0), "Seq Scan") != NULL;
        edges |= strstr(PQgetvalue(r, i, 0), "task_deps_pkey") != NULL;
    }
    CU_ASSERT_FALSE(scan);
    CU_ASSERT_TRUE(edges);
    PQclear(r);
    CU_ASSERT_EQUAL(az_pg_exec(c, &ctx, "RESET enable_seqscan", 0, NULL, NULL, msg), AZ_OK);
    az_pg_release(c);
}

/* ---------------------------------------------------------------- the bulk path */

/* Tasks whose description starts with prefix, as a number. */
static long count_like(const char *prefix)
{
    return atol(sqlf("SELECT count(*) FROM tasks WHERE description LIKE '%s%%'", prefix, NULL));
}

static void batch_task(Agentz__V1__Task *t, const char *desc)
{
    agentz__v1__task__init(t);
    t->description = (char *)desc;
    t->expected_output = "a result";
    t->agent_id = (char *)agent;
}

static void test_create_many(void)
{
    az_task_ready ready = {.arena = arena};
    Agentz__V1__Task *dep = create_task("many-dep", NULL, 0, NULL, &ready);
    size_t ready0 = ready.n;

    Agentz__V1__Task t[3];
    batch_task(&t[0], "many-0");
    batch_task(&t[1], "many-1");
    const char *deps[] = {dep->id};
    t[1].n_depends_on = 1;
    t[1].depends_on = (char **)deps;
    batch_task(&t[2], "many-2");
    Agentz__V1__RetryPolicy rp = AGENTZ__V1__RETRY_POLICY__INIT;
    Google__Protobuf__Duration init = dur(2, 500000000), to = dur(90, 0);
    rp.initial_backoff = &init;
    rp.backoff_coefficient = 3;
    rp.max_attempts = 4;
    char *nre[] = {"bad_request"};
    rp.n_non_retryable_errors = 1;
    rp.non_retryable_errors = nre;
    t[2].retry_policy = &rp;
    t[2].timeout = &to;
    char *ctxs[] = {"first \"quoted\" context", "second, with a comma"};
    t[2].n_context = 2;
    t[2].context = ctxs;
    char *hooks[] = {"https://example.com/hook"};
    t[2].n_webhook_urls = 1;
    t[2].webhook_urls = hooks;
    Agentz__V1__Task__LabelsEntry l1 = AGENTZ__V1__TASK__LABELS_ENTRY__INIT, *labels[] = {&l1};
    l1.key = "team";
    l1.value = "ü-data";
    t[2].n_labels = 1;
    t[2].labels = labels;
    az_task_item items[3] = {{&t[0], "", ""}, {&t[1], NULL, NULL}, {&t[2], "", ""}};
    Agentz__V1__Task **out = NULL;
    size_t bad = 99;
    char msg[AZ_MSG_MAX] = "";
    az_err err = az_task_create_many(pg, &ctx, items, 3, 0, arena, &out, &ready, &bad, msg);
    if (err != AZ_OK) fprintf(stderr, "create_many: %s\n", msg);
    CU_ASSERT_EQUAL_FATAL(err, AZ_OK);
    CU_ASSERT_EQUAL(bad, 3);
    /* Item order, fields as given, start states as az_task_create would choose them. */
    CU_ASSERT_STRING_EQUAL(out[0]->description, "many-0");
    CU_ASSERT_STRING_EQUAL(out[1]->description, "many-1");
    CU_ASSERT_STRING_EQUAL(out[2]->description, "many-2");
    CU_ASSERT_EQUAL(out[0]->status, QUEUED);
    CU_ASSERT_EQUAL(out[1]->status, PENDING);
    CU_ASSERT_EQUAL(out[2]->status, QUEUED);
    CU_ASSERT_STRING_EQUAL(out[1]->depends_on[0], dep->id);
    CU_ASSERT_STRING_EQUAL(out[0]->etag, "1");
    CU_ASSERT_STRING_EQUAL(out[0]->agent_id, agent);
    CU_ASSERT_PTR_NULL(out[0]->retry_policy);
    CU_ASSERT_PTR_NOT_NULL_FATAL(out[2]->retry_policy);
    CU_ASSERT_EQUAL(out[2]->retry_policy->initial_backoff->seconds, 2);
    CU_ASSERT_EQUAL(out[2]->retry_policy->initial_backoff->nanos, 500000000);
    CU_ASSERT_PTR_NULL(out[2]->retry_policy->maximum_backoff);
    CU_ASSERT_DOUBLE_EQUAL(out[2]->retry_policy->backoff_coefficient, 3, 1e-9);
    CU_ASSERT_EQUAL(out[2]->retry_policy->max_attempts, 4);
    CU_ASSERT_STRING_EQUAL(out[2]->retry_policy->non_retryable_errors[0], "bad_request");
    CU_ASSERT_EQUAL(out[2]->timeout->seconds, 90);
    CU_ASSERT_EQUAL_FATAL(out[2]->n_context, 2);
    CU_ASSERT_STRING_EQUAL(out[2]->context[0], "first \"quoted\" context");
    CU_ASSERT_STRING_EQUAL(out[2]->context[1], "second, with a comma");
    CU_ASSERT_STRING_EQUAL(out[2]->webhook_urls[0], "https://example.com/hook");
    CU_ASSERT_EQUAL_FATAL(out[2]->n_labels, 1);
    CU_ASSERT_STRING_EQUAL(out[2]->labels[0]->value, "ü-data");
    /* What is stored is what GetTask returns. */
    Agentz__V1__Task *back = get(out[2]->id);
    CU_ASSERT_EQUAL(back->retry_policy->max_attempts, 4);
    CU_ASSERT_STRING_EQUAL(back->context[1], "second, with a comma");
    /* The queued ones are ready, in item order; the pending one is not. */
    CU_ASSERT_EQUAL_FATAL(ready.n, ready0 + 2);
    CU_ASSERT_STRING_EQUAL(ready.ids[ready0], out[0]->id);
    CU_ASSERT_STRING_EQUAL(ready.ids[ready0 + 1], out[2]->id);
    /* One TaskStatusChanged per task, committed with it. */
    char q[512];
    snprintf(q, sizeof q, "SELECT count(*) FROM events WHERE task_id IN ('%s', '%s', '%s') AND task_seq = 1",
             out[0]->id, out[1]->id, out[2]->id);
    CU_ASSERT_STRING_EQUAL(sql(q), "3");
    /* The dependency's success queues the batch's pending task like any other. */
    complete(dep->id, claim(dep->id), &ready);
    CU_ASSERT_EQUAL(status_of(out[1]->id), QUEUED);
}

static void test_create_many_atomic(void)
{
    az_task_ready ready = {.arena = arena};
    Agentz__V1__Task *dead = create_task("atomic-dead", NULL, 0, NULL, &ready);
    char msg[AZ_MSG_MAX];
    Agentz__V1__Task *cancelled;
    CU_ASSERT_EQUAL_FATAL(az_task_cancel(pg, &ctx, dead->id, "stop", arena, &cancelled, NULL, msg), AZ_OK);
    size_t ready0 = ready.n;
    long events0 = atol(sql("SELECT count(*) FROM events"));

    Agentz__V1__Task t[4];
    for (int i = 0; i < 4; i++) batch_task(&t[i], "atomic-item");
    const char *missing[] = {"7d1f0c52-1111-4222-8333-444455556666"};
    t[2].n_depends_on = 1;
    t[2].depends_on = (char **)missing;
    az_task_item items[4] = {{&t[0], "", ""}, {&t[1], "atomic-k1", "h"}, {&t[2], "", ""}, {&t[3], "", ""}};
    Agentz__V1__Task **out;
    size_t bad = 0;
    CU_ASSERT_EQUAL(az_task_create_many(pg, &ctx, items, 4, 0, arena, &out, &ready, &bad, msg), AZ_ERR_INVALID);
    CU_ASSERT_EQUAL(bad, 2);
    CU_ASSERT_PTR_NOT_NULL(strstr(msg, "task.depends_on[0]: task 7d1f0c52-1111-4222-8333-444455556666 not found"));
    /* A failed (here: cancelled) dependency is a precondition failure of that item. */
    const char *dead_dep[] = {dead->id};
    t[2].depends_on = (char **)dead_dep;
    CU_ASSERT_EQUAL(az_task_create_many(pg, &ctx, items, 4, 0, arena, &out, &ready, &bad, msg),
                    AZ_ERR_PRECONDITION);
    CU_ASSERT_EQUAL(bad, 2);
    CU_ASSERT_PTR_NOT_NULL(strstr(msg, "is cancelled"));
    /* Nothing of either batch was written: no task, no event, no key, nothing ready. */
    CU_ASSERT_EQUAL(count_like("atomic-item"), 0);
    CU_ASSERT_EQUAL(atol(sql("SELECT count(*) FROM events")), events0);
    CU_ASSERT_STRING_EQUAL(sql("SELECT count(*) FROM idempotency_keys WHERE request_id = 'atomic-k1'"), "0");
    CU_ASSERT_EQUAL(ready.n, ready0);

    /* The response bound is checked before commit. */
    t[2].n_depends_on = 0;
    CU_ASSERT_EQUAL(az_task_create_many(pg, &ctx, items, 4, 200, arena, &out, &ready, &bad, msg), AZ_ERR_INVALID);
    CU_ASSERT_EQUAL(bad, 4);
    CU_ASSERT_PTR_NOT_NULL(strstr(msg, "over the 200-byte message limit"));
    CU_ASSERT_EQUAL(count_like("atomic-item"), 0);
    /* Sizes outside 1..1000. */
    CU_ASSERT_EQUAL(az_task_create_many(pg, &ctx, items, 0, 0, arena, &out, &ready, &bad, msg), AZ_ERR_INVALID);
    CU_ASSERT_EQUAL(az_task_create_many(pg, &ctx, items, AZ_TASK_BATCH_MAX + 1, 0, arena, &out, &ready,
                                        &bad, msg), AZ_ERR_INVALID);
    CU_ASSERT_PTR_NOT_NULL(strstr(msg, "got 1001"));
    CU_ASSERT_EQUAL(ready.n, ready0);
    /* Once valid, all four. */
    CU_ASSERT_EQUAL_FATAL(az_task_create_many(pg, &ctx, items, 4, 0, arena, &out, &ready, &bad, msg), AZ_OK);
    CU_ASSERT_EQUAL(count_like("atomic-item"), 4);
    CU_ASSERT_EQUAL(ready.n, ready0 + 4);
}

static void test_create_many_idempotent(void)
{
    az_task_ready ready = {.arena = arena};
    char msg[AZ_MSG_MAX];
    /* A key first used by CreateTask. */
    Agentz__V1__Task single = AGENTZ__V1__TASK__INIT, *first;
    batch_task(&single, "idem-many-single");
    int rep;
    CU_ASSERT_EQUAL_FATAL(az_task_create(pg, &ctx, &single, "im-single", "hs", arena, &first, &rep, &ready, msg), AZ_OK);

    Agentz__V1__Task t[3];
    batch_task(&t[0], "idem-many-0");
    batch_task(&t[1], "idem-many-1");
    batch_task(&t[2], "idem-many-single");
    az_task_item items[3] = {{&t[0], "im-0", "h0"}, {&t[1], "", ""}, {&t[2], "im-single", "hs"}};
    Agentz__V1__Task **a, **b;
    size_t bad;
    size_t ready0 = ready.n;
    CU_ASSERT_EQUAL_FATAL(az_task_create_many(pg, &ctx, items, 3, 0, arena, &a, &ready, &bad, msg), AZ_OK);
    CU_ASSERT_STRING_EQUAL(a[2]->id, first->id); /* CreateTask's task, replayed */
    CU_ASSERT_EQUAL(ready.n, ready0 + 2);         /* and not made ready again */
    /* The retried batch: keyed items come back, the unkeyed one is created again. */
    CU_ASSERT_EQUAL_FATAL(az_task_create_many(pg, &ctx, items, 3, 0, arena, &b, &ready, &bad, msg), AZ_OK);
    CU_ASSERT_STRING_EQUAL(b[0]->id, a[0]->id);
    CU_ASSERT_STRING_EQUAL(b[2]->id, first->id);
    CU_ASSERT_STRING_NOT_EQUAL(b[1]->id, a[1]->id);
    CU_ASSERT_EQUAL(ready.n, ready0 + 3);
    CU_ASSERT_EQUAL(count_like("idem-many-0"), 1);
    /* The key with another request: that item's ALREADY_EXISTS, and nothing written. */
    items[0].request_hash = "other";
    long n1 = count_like("idem-many-1");
    CU_ASSERT_EQUAL(az_task_create_many(pg, &ctx, items, 3, 0, arena, &b, &ready, &bad, msg), AZ_ERR_EXISTS);
    CU_ASSERT_EQUAL(bad, 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(msg, "im-0 was already used for a different request"));
    CU_ASSERT_EQUAL(count_like("idem-many-1"), n1);
}

/* 1000 tasks in one call: every one created once, in order; the time is printed for
 * docs/performance.md (the bench measures it through gRPC). */
static void test_create_many_full_batch(void)
{
    enum { N = AZ_TASK_BATCH_MAX };
    Agentz__V1__Task *t = calloc(N, sizeof *t);
    az_task_item *items = calloc(N, sizeof *items);
    char(*desc)[32] = calloc(N, sizeof *desc);
    CU_ASSERT_PTR_NOT_NULL_FATAL(t && items && desc);
    for (int i = 0; i < N; i++) {
        snprintf(desc[i], sizeof desc[i], "full-batch %04d", i);
        batch_task(&t[i], desc[i]);
        items[i] = (az_task_item){&t[i], "", ""};
    }
    az_arena *a = az_arena_new(0);
    az_task_ready ready = {.arena = a};
    Agentz__V1__Task **out;
    size_t bad;
    char msg[AZ_MSG_MAX];
    for (int round = 0; round < 3; round++) {
        struct timespec t0, t1;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        az_err err = az_task_create_many(pg, &ctx, items, N, 0, a, &out, &ready, &bad, msg);
        clock_gettime(CLOCK_MONOTONIC, &t1);
        if (err != AZ_OK) fprintf(stderr, "full batch: %s\n", msg);
        CU_ASSERT_EQUAL_FATAL(err, AZ_OK);
        fprintf(stderr, "\n    1000 tasks in one az_task_create_many: %.1f ms ",
                (t1.tv_sec - t0.tv_sec) * 1e3 + (t1.tv_nsec - t0.tv_nsec) / 1e6);
        for (int i = 0; i < N; i++) CU_ASSERT_STRING_EQUAL(out[i]->description, desc[i]);
    }
    CU_ASSERT_EQUAL(ready.n, 3 * N);
    CU_ASSERT_EQUAL(count_like("full-batch "), 3 * N);
    az_arena_free(a);
    free(desc);
    free(items);
    free(t);
}

static int suite_init(void)
{
    char msg[AZ_MSG_MAX];
    az_log_set_level(AZ_LOG_WARN);
    snprintf(dir, sizeof dir, "/tmp/aztest-task-XXXXXX");
    if (!mkdtemp(dir) || chmod(dir, 0755) != 0) return -1;
    if (az_embed_start(dir, &embed, msg) != AZ_OK) {
        fprintf(stderr, "cannot start embedded postgresql: %s\n", msg);
        return -1;
    }
    if (az_pg_new(az_embed_database_url(embed), 12, 30000, &pg, msg) != AZ_OK ||
        az_migrate(pg, az_migrations, az_migrations_count, NULL, msg) != AZ_OK ||
        /* As the server runs: under the workspace policy, so plans are the ones it gets. */
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
    CU_pSuite pure = CU_add_suite("task retry policy", NULL, NULL);
    CU_add_test(pure, "backoff math", test_backoff_math);
    CU_add_test(pure, "backoff jitter bounds", test_backoff_jitter);
    CU_add_test(pure, "should_retry", test_should_retry);
    CU_pSuite s = CU_add_suite("task state machine", suite_init, suite_clean);
    CU_add_test(s, "insert with and without dependencies", test_insert_and_dependencies);
    CU_add_test(s, "idempotent create", test_idempotent_create);
    CU_add_test(s, "create_many: order, fields, ready set, events", test_create_many);
    CU_add_test(s, "create_many: one bad item writes nothing", test_create_many_atomic);
    CU_add_test(s, "create_many: idempotent items", test_create_many_idempotent);
    CU_add_test(s, "create_many: a full batch", test_create_many_full_batch);
    CU_add_test(s, "diamond dependencies", test_diamond);
    CU_add_test(s, "diamond: concurrent completions", test_diamond_race);
    CU_add_test(s, "stale attempts are rejected", test_stale_attempts);
    CU_add_test(s, "retryable failure, backoff, wake, max_attempts", test_retryable_failure_backoff_and_wake);
    CU_add_test(s, "non-retryable failure cancels downstream; retry restores", test_non_retryable_cancels_downstream);
    CU_add_test(s, "unlimited retries bounded by the timeout", test_unlimited_retries_bounded_by_timeout);
    CU_add_test(s, "cancel from each state; illegal transitions", test_cancel_from_each_state);
    CU_add_test(s, "cancel cascades; retry restores", test_cancel_cascade_and_restore);
    CU_add_test(s, "cancel_run and resume_run", test_runs);
    CU_add_test(s, "attempts and usage", test_attempts_and_usage);
    CU_add_test(s, "stats", test_stats);
    CU_add_test(s, "list pagination and filters", test_list_pagination);
    CU_add_test(s, "8 threads cancel/retry one task", test_concurrent_cancel_retry);
    CU_add_test(s, "8 threads claim one task", test_concurrent_claim);
    CU_add_test(s, "claim_many: skips, limits, overlapping batches", test_claim_many);
    CU_add_test(s, "lease: heartbeat and reaping", test_lease_heartbeat_and_reap);
    CU_add_test(s, "release hands back without counting", test_release);
    CU_add_test(s, "fail_after honours Retry-After; progress", test_fail_after_and_progress);
    CU_add_test(s, "the worker's not-running check", test_not_running_sql);
    CU_add_test(s, "dependents through task_deps under the policy", test_dependents_sql);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    unsigned failed = CU_get_number_of_failures() + CU_get_number_of_tests_failed();
    if (CU_get_number_of_suites_failed()) failed++;
    CU_cleanup_registry();
    return failed ? 1 : 0;
}
