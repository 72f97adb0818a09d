/* CUnit suite for server/worker against the embedded PostgreSQL and Redis, with a scripted
 * executor standing in for server/engine/executor.c (this file defines az_exec_*, so the
 * worker's claims, acks, concurrency bound, lease heartbeat, cancellation checks, event
 * publishing and graceful hand-back are tested on their own). A task's description is its
 * script: "sleep:MS" completes after MS, "hang" runs until aborted. */
#include <CUnit/Basic.h>
#include <ftw.h>
#include <hiredis/hiredis.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/log.h"
#include "embed/embedded.h"
#include "engine/executor.h"
#include "queue/queue.h"
#include "store/migrate.h"
#include "store/pgpool.h"
#include "store/redis.h"
#include "task/task.h"
#include "tools/tools.h"
#include "worker/worker.h"

static char dir[64];
static az_embed *embed;
static az_pg *pg;
static az_redis *redis;
static az_netguard *guard;
static az_tools *tools;
static const az_ctx ctx = {.workspace_id = AZ_DEFAULT_WORKSPACE, .principal = "", .request_id = "w",
                           .deadline_ms = -1};
static const char *agent = "0a0a0a0a-0000-4000-8000-000000000001";

/* ---------------------------------------------------------------- the scripted executor */

static atomic_int ex_running, ex_max_running, ex_started;
static atomic_int ex_lost, ex_handback;
static _Atomic int64_t ex_lost_at_ms; /* when the last LOST abort arrived */

struct az_exec {
    const az_engine_env *env;
    char task_id[40], ws[40];
    int attempt;
    int sleep_ms; /* -1: hang */
    az_exec_done_fn done;
    void *arg;
    uv_timer_t timer;
    uv_work_t work;
    int finishing, aborted;
    az_exec_abort_reason why;
};

static void ex_closed(uv_handle_t *h)
{
    az_exec *ex = h->data;
    ex->done(ex->arg, ex);
}

static void ex_finish(az_exec *ex)
{
    atomic_fetch_sub(&ex_running, 1);
    uv_close((uv_handle_t *)&ex->timer, ex_closed);
}

/* Threadpool: write the outcome as the real executor would. */
static void ex_write(uv_work_t *req)
{
    az_exec *ex = req->data;
    az_ctx c = {.workspace_id = ex->ws, .principal = "", .request_id = "fake", .deadline_ms = -1};
    char msg[AZ_MSG_MAX];
    if (ex->aborted && ex->why == AZ_EXEC_ABORT_HANDBACK) {
        az_arena *a = az_arena_new(0);
        az_task_ready ready = {.arena = a};
        if (az_task_release(ex->env->pg, &c, ex->task_id, ex->attempt, &ready, msg) == AZ_OK)
            az_queue_publish(ex->env->redis, ex->ws, &ready, msg);
        az_arena_free(a);
        return;
    }
    Agentz__V1__TaskOutput out = AGENTZ__V1__TASK_OUTPUT__INIT;
    out.raw = "fake answer";
    az_arena *a = az_arena_new(0);
    az_task_ready ready = {.arena = a};
    if (az_task_complete(ex->env->pg, &c, ex->task_id, ex->attempt, &out, NULL, NULL, &ready, msg) != AZ_OK)
        fprintf(stderr, "fake executor: complete %s: %s\n", ex->task_id, msg);
    az_arena_free(a);
}

static void ex_written(uv_work_t *req, int status)
{
    (void)status;
    ex_finish(req->data);
}

static void ex_timer(uv_timer_t *t)
{
    az_exec *ex = t->data;
    if (ex->finishing) return;
    ex->finishing = 1;
    /* An ephemeral event, as the executor sends token deltas. */
    if (ex->env->on_event) {
        Agentz__V1__Event ev = AGENTZ__V1__EVENT__INIT;
        ev.task_id = ex->task_id;
        ev.step_id = "fake-step";
        ex->env->on_event(ex->env->event_arg, ex->ws, &ev);
    }
    ex->work.data = ex;
    uv_queue_work(ex->env->loop, &ex->work, ex_write, ex_written);
}

az_err az_exec_start(const az_engine_env *env, const char *workspace_id,
                     const Agentz__V1__Task *task, az_exec_done_fn done, void *arg, az_exec **out,
                     char *msg)
{
    az_exec *ex = calloc(1, sizeof *ex);
    if (!ex) return az_fail(msg, AZ_ERR_NOMEM, "out of memory");
    CU_ASSERT_PTR_NOT_NULL(env->http);
    CU_ASSERT_PTR_NOT_NULL(env->tools);
    CU_ASSERT_PTR_NOT_NULL(env->worker_id);
    CU_ASSERT_EQUAL(task->status, AGENTZ__V1__TASK_STATUS__TASK_STATUS_RUNNING);
    ex->env = env;
    snprintf(ex->task_id, sizeof ex->task_id, "%s", task->id);
    snprintf(ex->ws, sizeof ex->ws, "%s", workspace_id);
    ex->attempt = task->attempt;
    ex->sleep_ms = strncmp(task->description, "sleep:", 6) == 0 ? atoi(task->description + 6) : -1;
    ex->done = done;
    ex->arg = arg;
    uv_timer_init(env->loop, &ex->timer);
    ex->timer.data = ex;
    if (ex->sleep_ms >= 0) uv_timer_start(&ex->timer, ex_timer, (uint64_t)ex->sleep_ms, 0);
    int now = atomic_fetch_add(&ex_running, 1) + 1;
    int m = atomic_load(&ex_max_running);
    while (now > m && !atomic_compare_exchange_weak(&ex_max_running, &m, now)) {
    }
    atomic_fetch_add(&ex_started, 1);
    *out = ex;
    return AZ_OK;
}

void az_exec_abort(az_exec *ex, az_exec_abort_reason why)
{
    if (ex->finishing || ex->aborted) return;
    ex->aborted = 1;
    ex->why = why;
    ex->finishing = 1;
    uv_timer_stop(&ex->timer);
    if (why == AZ_EXEC_ABORT_LOST) {
        atomic_fetch_add(&ex_lost, 1);
        atomic_store(&ex_lost_at_ms, az_now_ms());
        ex_finish(ex); /* LOST writes nothing */
    } else {
        atomic_fetch_add(&ex_handback, 1);
        ex->work.data = ex;
        uv_queue_work(ex->env->loop, &ex->work, ex_write, ex_written);
    }
}

const char *az_exec_task_id(const az_exec *ex) { return ex->task_id; }
int az_exec_attempt(const az_exec *ex) { return ex->attempt; }
const char *az_exec_workspace_id(const az_exec *ex) { return ex->ws; }
void az_exec_free(az_exec *ex) { free(ex); }

/* ---------------------------------------------------------------- helpers */

static void reset_counters(void)
{
    atomic_store(&ex_running, 0);
    atomic_store(&ex_max_running, 0);
    atomic_store(&ex_started, 0);
    atomic_store(&ex_lost, 0);
    atomic_store(&ex_handback, 0);
}

static az_worker *new_worker(int concurrency, int lease_s, const char *id)
{
    az_worker_config cfg = {.redis_url = az_embed_redis_url(embed),
                            .database_url = az_embed_database_url(embed),
                            .db_role = "agentz_app",
                            .concurrency = concurrency,
                            .lease_seconds = lease_s,
                            .id = id,
                            .pg = pg,
                            .redis = redis,
                            .guard = guard,
                            .tools = tools};
    az_worker *w = NULL;
    char msg[AZ_MSG_MAX];
    az_err err = az_worker_new(&cfg, &w, msg);
    if (err != AZ_OK) fprintf(stderr, "worker_new: %s\n", msg);
    CU_ASSERT_EQUAL_FATAL(err, AZ_OK);
    err = az_worker_start(w, msg);
    if (err != AZ_OK) fprintf(stderr, "worker_start: %s\n", msg);
    CU_ASSERT_EQUAL_FATAL(err, AZ_OK);
    return w;
}

static char *create(az_arena *a, const char *desc)
{
    Agentz__V1__Task t = AGENTZ__V1__TASK__INIT;
    t.description = (char *)desc;
    t.agent_id = (char *)agent;
    Agentz__V1__Task *out = NULL;
    int replayed = 0;
    char msg[AZ_MSG_MAX];
    az_task_ready ready = {.arena = a};
    CU_ASSERT_EQUAL_FATAL(az_task_create(pg, &ctx, &t, "", "", a, &out, &replayed, &ready, msg), AZ_OK);
    CU_ASSERT_EQUAL_FATAL(az_queue_publish(redis, AZ_DEFAULT_WORKSPACE, &ready, msg), AZ_OK);
    return out->id;
}

static int status_of(const char *id)
{
    az_arena *a = az_arena_new(0);
    Agentz__V1__Task *t = NULL;
    char msg[AZ_MSG_MAX];
    int s = az_task_get(pg, &ctx, id, a, &t, msg) == AZ_OK ? (int)t->status : -1;
    az_arena_free(a);
    return s;
}

static int wait_status(const char *id, int status, int timeout_ms)
{
    int64_t end = az_now_ms() + timeout_ms;
    while (az_now_ms() < end) {
        if (status_of(id) == status) return 1;
        usleep(20000);
    }
    return status_of(id) == status;
}

#define RUNNING AGENTZ__V1__TASK_STATUS__TASK_STATUS_RUNNING
#define QUEUED AGENTZ__V1__TASK_STATUS__TASK_STATUS_QUEUED
#define SUCCEEDED AGENTZ__V1__TASK_STATUS__TASK_STATUS_SUCCEEDED
#define CANCELLED AGENTZ__V1__TASK_STATUS__TASK_STATUS_CANCELLED

/* ---------------------------------------------------------------- tests */

static void test_runs_tasks_within_concurrency(void)
{
    reset_counters();
    az_worker *w = new_worker(8, 30, "w-conc");
    CU_ASSERT_STRING_EQUAL(az_worker_id(w), "w-conc");
    az_arena *a = az_arena_new(0);
    enum { N = 60 };
    char *ids[N];
    for (int i = 0; i < N; i++) ids[i] = create(a, "sleep:50");
    int ok = 0;
    for (int i = 0; i < N; i++) ok += wait_status(ids[i], SUCCEEDED, 20000);
    CU_ASSERT_EQUAL(ok, N);
    CU_ASSERT_TRUE(atomic_load(&ex_max_running) <= 8);
    CU_ASSERT_TRUE(atomic_load(&ex_max_running) >= 2); /* they overlapped */
    az_worker_stats s;
    az_worker_get_stats(w, &s);
    CU_ASSERT_EQUAL(s.claimed, N);
    /* The pending-entries list is empty: every hint was acknowledged. */
    const char *argv[] = {"XPENDING", AZ_QUEUE_STREAM, AZ_WORKER_GROUP};
    redisReply *r = NULL;
    char msg[AZ_MSG_MAX];
    usleep(100000);
    CU_ASSERT_EQUAL(az_redis_command(redis, 3, argv, NULL, &r, msg), AZ_OK);
    if (r && r->type == REDIS_REPLY_ARRAY && r->elements > 0)
        CU_ASSERT_EQUAL(r->element[0]->integer, 0);
    freeReplyObject(r);
    /* A second delivery of a finished task's hint is claimed, refused, and acked. */
    az_task_ready again = {.ids = &ids[0], .n = 1, .arena = a};
    CU_ASSERT_EQUAL(az_queue_publish(redis, AZ_DEFAULT_WORKSPACE, &again, msg), AZ_OK);
    usleep(300000);
    az_worker_get_stats(w, &s);
    CU_ASSERT_EQUAL(s.claimed, N);
    CU_ASSERT_EQUAL(status_of(ids[0]), SUCCEEDED);
    CU_ASSERT_TRUE(s.events_published >= N); /* one event per task */
    az_worker_stop(w, 1000);
    az_worker_stop(w, 1000); /* twice is fine */
    az_worker_free(w);
    az_arena_free(a);
}

static void test_cancel_within_a_second(void)
{
    reset_counters();
    az_worker *w = new_worker(4, 30, "w-cancel");
    az_arena *a = az_arena_new(0);
    char *id = create(a, "hang");
    CU_ASSERT_TRUE_FATAL(wait_status(id, RUNNING, 5000));
    usleep(100000);
    CU_ASSERT_EQUAL(atomic_load(&ex_running), 1);
    char msg[AZ_MSG_MAX];
    Agentz__V1__Task *t;
    int64_t t0 = az_now_ms();
    CU_ASSERT_EQUAL(az_task_cancel(pg, &ctx, id, "stop it", a, &t, NULL, msg), AZ_OK);
    while (atomic_load(&ex_lost) == 0 && az_now_ms() - t0 < 3000) usleep(10000);
    CU_ASSERT_EQUAL(atomic_load(&ex_lost), 1);
    CU_ASSERT_TRUE(atomic_load(&ex_lost_at_ms) - t0 <= 1000);
    CU_ASSERT_EQUAL(status_of(id), CANCELLED);

    /* Taken over (its lease now names another worker): aborted the same way. */
    char *id2 = create(a, "hang");
    CU_ASSERT_TRUE_FATAL(wait_status(id2, RUNNING, 5000));
    az_pgconn *c;
    CU_ASSERT_EQUAL_FATAL(az_pg_acquire(pg, &ctx, &c, msg), AZ_OK);
    const char *p[1] = {id2};
    CU_ASSERT_EQUAL(az_pg_exec(c, &ctx, "UPDATE tasks SET lease_owner = 'someone-else' WHERE id = $1",
                               1, p, NULL, msg), AZ_OK);
    az_pg_release(c);
    t0 = az_now_ms();
    while (atomic_load(&ex_lost) < 2 && az_now_ms() - t0 < 3000) usleep(10000);
    CU_ASSERT_EQUAL(atomic_load(&ex_lost), 2);
    CU_ASSERT_TRUE(atomic_load(&ex_lost_at_ms) - t0 <= 1000);
    /* The flight leaves the worker's books on its loop, after the abort callback above: give
     * it a moment instead of racing it (a loaded machine lost that race). */
    az_worker_stats s;
    t0 = az_now_ms();
    do {
        az_worker_get_stats(w, &s);
        if (s.running == 0) break;
        usleep(10000);
    } while (az_now_ms() - t0 < 1000);
    CU_ASSERT_EQUAL(s.lost, 2);
    CU_ASSERT_EQUAL(s.running, 0);
    az_worker_free(w);
    az_arena_free(a);
}

static void test_heartbeat_keeps_the_lease(void)
{
    reset_counters();
    az_worker *w = new_worker(4, 2, "w-lease"); /* lease 2 s, heartbeat every ~667 ms */
    az_arena *a = az_arena_new(0);
    char *id = create(a, "sleep:3000");
    CU_ASSERT_TRUE_FATAL(wait_status(id, RUNNING, 5000));
    /* Past the first lease, the reaper finds nothing to reap. */
    usleep(2500000);
    int reaped = -1;
    char msg[AZ_MSG_MAX];
    CU_ASSERT_EQUAL(az_task_reap_expired(pg, 100, &reaped, NULL, NULL, NULL, NULL, msg), AZ_OK);
    CU_ASSERT_EQUAL(reaped, 0);
    CU_ASSERT_TRUE(wait_status(id, SUCCEEDED, 5000));
    CU_ASSERT_EQUAL(atomic_load(&ex_lost), 0);
    az_worker_free(w);
    az_arena_free(a);
}

static void test_graceful_stop_hands_back(void)
{
    reset_counters();
    az_worker *w = new_worker(4, 30, "w-stop");
    az_arena *a = az_arena_new(0);
    char *quick = create(a, "sleep:200");
    char *slow = create(a, "hang");
    CU_ASSERT_TRUE_FATAL(wait_status(slow, RUNNING, 5000));
    CU_ASSERT_TRUE_FATAL(wait_status(quick, RUNNING, 5000));
    int64_t t0 = az_now_ms();
    az_worker_stop(w, 800);
    int64_t took = az_now_ms() - t0;
    /* The quick one finished within the grace; the hanging one was handed back after it. */
    CU_ASSERT_EQUAL(status_of(quick), SUCCEEDED);
    CU_ASSERT_EQUAL(status_of(slow), QUEUED);
    CU_ASSERT_EQUAL(atomic_load(&ex_handback), 1);
    CU_ASSERT_TRUE(took >= 700 && took < 5000);
    az_worker_stats s;
    az_worker_get_stats(w, &s);
    CU_ASSERT_EQUAL(s.handed_back, 1);
    az_worker_free(w);

    /* Another worker picks the handed-back task up (the hand-back published it). */
    reset_counters();
    w = new_worker(4, 30, "w-next");
    CU_ASSERT_TRUE(wait_status(slow, RUNNING, 5000));
    az_worker_free(w); /* grace 0: handed back at once */
    CU_ASSERT_EQUAL(status_of(slow), QUEUED);
    az_arena_free(a);
}

static void test_events_published(void)
{
    reset_counters();
    redisContext *sub = redisConnectUnix(az_embed_redis_url(embed) + strlen("unix://"));
    CU_ASSERT_FATAL(sub && !sub->err);
    az_worker *w = new_worker(2, 30, "w-events");
    az_arena *a = az_arena_new(0);
    /* Subscribe before the task runs: the event is published when its sleep ends. */
    char *id = create(a, "sleep:400");
    redisReply *r = redisCommand(sub, "SUBSCRIBE agentz:events:task:%s", id);
    freeReplyObject(r);
    struct timeval tv = {3, 0};
    redisSetTimeout(sub, tv);
    void *reply = NULL;
    CU_ASSERT_EQUAL(redisGetReply(sub, &reply), REDIS_OK);
    r = reply;
    CU_ASSERT_PTR_NOT_NULL_FATAL(r);
    CU_ASSERT_EQUAL_FATAL(r->type, REDIS_REPLY_ARRAY);
    CU_ASSERT_EQUAL_FATAL(r->elements, 3);
    CU_ASSERT_STRING_EQUAL(r->element[0]->str, "message");
    Agentz__V1__Event *ev = agentz__v1__event__unpack(NULL, r->element[2]->len,
                                                      (const uint8_t *)r->element[2]->str);
    CU_ASSERT_PTR_NOT_NULL_FATAL(ev);
    CU_ASSERT_STRING_EQUAL(ev->task_id, id);
    CU_ASSERT_STRING_EQUAL(ev->step_id, "fake-step");
    agentz__v1__event__free_unpacked(ev, NULL);
    freeReplyObject(r);
    redisFree(sub);
    CU_ASSERT_TRUE(wait_status(id, SUCCEEDED, 5000));
    az_worker_free(w);
    az_arena_free(a);
}

static void test_bad_config(void)
{
    az_worker_config cfg = {0};
    az_worker *w = (az_worker *)1;
    char msg[AZ_MSG_MAX];
    CU_ASSERT_EQUAL(az_worker_new(&cfg, &w, msg), AZ_ERR_INVALID);
    CU_ASSERT_PTR_NULL(w);
    cfg = (az_worker_config){.redis_url = "nope://x", .database_url = "postgresql:///x", .pg = pg,
                             .redis = redis, .guard = guard, .tools = tools};
    CU_ASSERT_EQUAL(az_worker_new(&cfg, &w, msg), AZ_ERR_INVALID);
    cfg.redis_url = "redis://127.0.0.1:6379";
    cfg.concurrency = AZ_WORKER_MAX_CONCURRENCY + 1;
    CU_ASSERT_EQUAL(az_worker_new(&cfg, &w, msg), AZ_ERR_INVALID);
    /* PostgreSQL unreachable: start says so. */
    cfg.concurrency = 1;
    cfg.redis_url = az_embed_redis_url(embed);
    cfg.database_url = "postgresql:///nope?host=/nonexistent&connect_timeout=1";
    CU_ASSERT_EQUAL_FATAL(az_worker_new(&cfg, &w, msg), AZ_OK);
    CU_ASSERT_EQUAL(az_worker_start(w, msg), AZ_ERR_UNAVAILABLE);
    CU_ASSERT_PTR_NOT_NULL(strstr(msg, "postgresql"));
    az_worker_free(w);
    az_worker_free(NULL);
}

/* az_embed_attach finds the running servers of a data dir without its lock. */
static void test_attach(void)
{
    az_embed *e = NULL;
    char msg[AZ_MSG_MAX];
    CU_ASSERT_EQUAL_FATAL(az_embed_attach(dir, &e, msg), AZ_OK);
    CU_ASSERT_STRING_EQUAL(az_embed_database_url(e), az_embed_database_url(embed));
    CU_ASSERT_STRING_EQUAL(az_embed_redis_url(e), az_embed_redis_url(embed));
    az_embed_stop(e); /* frees only: the owner's servers keep answering */
    az_redis *r = NULL;
    CU_ASSERT_EQUAL(az_redis_new(az_embed_redis_url(embed), 2000, &r, msg), AZ_OK);
    CU_ASSERT_EQUAL(az_redis_ping(r, msg), AZ_OK);
    az_redis_free(r);
    CU_ASSERT_EQUAL(az_pg_ping(pg, msg), AZ_OK);
    /* Nothing running there. */
    char empty[64];
    snprintf(empty, sizeof empty, "/tmp/aztest-attach-XXXXXX");
    CU_ASSERT_PTR_NOT_NULL_FATAL(mkdtemp(empty));
    CU_ASSERT_EQUAL(az_embed_attach(empty, &e, msg), AZ_ERR_UNAVAILABLE);
    CU_ASSERT_PTR_NULL(e);
    rmdir(empty);
    CU_ASSERT_EQUAL(az_embed_attach("/nonexistent/agentz", &e, msg), AZ_ERR_UNAVAILABLE);
    CU_ASSERT_EQUAL(az_embed_attach("", &e, msg), AZ_ERR_INVALID);
}

/* ---------------------------------------------------------------- set-up */

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    remove(path);
    return 0;
}

static int suite_init(void)
{
    char msg[AZ_MSG_MAX];
    az_log_set_level(AZ_LOG_WARN);
    snprintf(dir, sizeof dir, "/tmp/aztest-worker-XXXXXX");
    if (!mkdtemp(dir) || chmod(dir, 0755) != 0) return -1;
    if (az_embed_start(dir, &embed, msg) != AZ_OK) {
        fprintf(stderr, "cannot start embedded servers: %s\n", msg);
        return -1;
    }
    if (az_pg_new(az_embed_database_url(embed), 8, 30000, &pg, msg) != AZ_OK ||
        az_migrate(pg, az_migrations, az_migrations_count, NULL, msg) != AZ_OK ||
        az_redis_new(az_embed_redis_url(embed), 10000, &redis, msg) != AZ_OK ||
        az_netguard_new("0", &guard, msg) != AZ_OK || az_tools_new(NULL, &tools, msg) != AZ_OK) {
        fprintf(stderr, "cannot prepare the stores: %s\n", msg);
        return -1;
    }
    return 0;
}

static int suite_clean(void)
{
    az_tools_free(tools);
    az_netguard_free(guard);
    az_redis_free(redis);
    az_pg_free(pg);
    az_embed_stop(embed);
    nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    return 0;
}

int main(void)
{
    if (CU_initialize_registry() != CUE_SUCCESS) return 1;
    CU_pSuite s = CU_add_suite("worker", suite_init, suite_clean);
    CU_add_test(s, "bad configuration", test_bad_config);
    CU_add_test(s, "runs tasks within its concurrency; acks every hint", test_runs_tasks_within_concurrency);
    CU_add_test(s, "cancellation aborts within a second", test_cancel_within_a_second);
    CU_add_test(s, "the heartbeat keeps the lease", test_heartbeat_keeps_the_lease);
    CU_add_test(s, "graceful stop finishes or hands back", test_graceful_stop_hands_back);
    CU_add_test(s, "ephemeral events are published", test_events_published);
    CU_add_test(s, "attach to a running embedded instance", test_attach);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    unsigned failed = CU_get_number_of_failures() + CU_get_number_of_tests_failed();
    if (CU_get_number_of_suites_failed()) failed++;
    CU_cleanup_registry();
    return failed ? 1 : 0;
}
