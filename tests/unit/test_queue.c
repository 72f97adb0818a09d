/* CUnit suite for server/queue: publishing ready tasks to the Redis stream (against the embedded
 * redis-server), the stream's length bound, and the reconciler waking backoff tasks and
 * re-publishing stale queued ones from PostgreSQL. */
#include <CUnit/Basic.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/log.h"
#include "embed/embedded.h"
#include "google/protobuf/duration.pb-c.h"
#include "queue/queue.h"
#include "queue/reconciler.h"
#include "store/migrate.h"
#include "store/pgpool.h"
#include "store/redis.h"
#include "task/task.h"

static char dir[64];
static az_embed *embed;
static az_pg *pg;
static az_redis *redis;
static az_arena *arena;
static const az_ctx ctx = {.workspace_id = AZ_DEFAULT_WORKSPACE, .principal = "", .request_id = "q",
                           .deadline_ms = -1};

static long long depth(void)
{
    long long n = -1;
    char msg[AZ_MSG_MAX];
    CU_ASSERT_EQUAL(az_queue_depth(redis, &n, msg), AZ_OK);
    return n;
}

static void del_stream(void)
{
    const char *argv[2] = {"DEL", AZ_QUEUE_STREAM};
    redisReply *r = NULL;
    char msg[AZ_MSG_MAX];
    CU_ASSERT_EQUAL_FATAL(az_redis_command(redis, 2, argv, NULL, &r, msg), AZ_OK);
    freeReplyObject(r);
}

/* Number of stream entries among the newest `last` whose task field is id (and workspace ws). */
static int entries_for(const char *id, int last)
{
    char count[16];
    snprintf(count, sizeof count, "%d", last);
    const char *argv[5] = {"XREVRANGE", AZ_QUEUE_STREAM, "+", "-", "COUNT"};
    const char *full[6] = {argv[0], argv[1], argv[2], argv[3], argv[4], count};
    redisReply *r = NULL;
    char msg[AZ_MSG_MAX];
    CU_ASSERT_EQUAL_FATAL(az_redis_command(redis, 6, full, NULL, &r, msg), AZ_OK);
    int n = 0;
    for (size_t i = 0; r->type == REDIS_REPLY_ARRAY && i < r->elements; i++) {
        redisReply *fields = r->element[i]->element[1];
        int task = 0, ws = 0;
        for (size_t k = 0; k + 1 < fields->elements; k += 2) {
            const char *key = fields->element[k]->str, *val = fields->element[k + 1]->str;
            if (strcmp(key, "task") == 0 && strcmp(val, id) == 0) task = 1;
            if (strcmp(key, "workspace") == 0 && strcmp(val, AZ_DEFAULT_WORKSPACE) == 0) ws = 1;
        }
        n += task && ws;
    }
    freeReplyObject(r);
    return n;
}

static void test_publish_and_depth(void)
{
    del_stream();
    CU_ASSERT_EQUAL(depth(), 0);
    char msg[AZ_MSG_MAX];
    CU_ASSERT_EQUAL(az_queue_publish(redis, AZ_DEFAULT_WORKSPACE, NULL, msg), AZ_OK);
    az_task_ready empty = {0};
    CU_ASSERT_EQUAL(az_queue_publish(redis, AZ_DEFAULT_WORKSPACE, &empty, msg), AZ_OK);
    CU_ASSERT_EQUAL(depth(), 0);
    char *ids[3] = {"11111111-1111-4111-8111-111111111111", "22222222-2222-4222-8222-222222222222",
                    "33333333-3333-4333-8333-333333333333"};
    az_task_ready r = {.ids = ids, .n = 3};
    CU_ASSERT_EQUAL_FATAL(az_queue_publish(redis, AZ_DEFAULT_WORKSPACE, &r, msg), AZ_OK);
    CU_ASSERT_EQUAL(depth(), 3);
    for (int i = 0; i < 3; i++) CU_ASSERT_EQUAL(entries_for(ids[i], 10), 1);
    /* More than one batch in one call. */
    size_t n = 1234;
    char **many = az_arena_alloc(arena, n * sizeof *many);
    for (size_t i = 0; i < n; i++) many[i] = az_arena_printf(arena, "00000000-0000-4000-8000-%012zu", i);
    az_task_ready m = {.ids = many, .n = n};
    CU_ASSERT_EQUAL_FATAL(az_queue_publish(redis, AZ_DEFAULT_WORKSPACE, &m, msg), AZ_OK);
    CU_ASSERT_EQUAL(depth(), 3 + 1234);
    CU_ASSERT_EQUAL(entries_for(many[n - 1], 1), 1); /* order kept: the last id is the newest */
}

static void test_maxlen_bound(void)
{
    del_stream();
    size_t n = AZ_QUEUE_MAXLEN + 5000;
    char **ids = az_arena_alloc(arena, n * sizeof *ids);
    CU_ASSERT_PTR_NOT_NULL_FATAL(ids);
    for (size_t i = 0; i < n; i++) ids[i] = "44444444-4444-4444-8444-444444444444";
    az_task_ready r = {.ids = ids, .n = n};
    char msg[AZ_MSG_MAX];
    CU_ASSERT_EQUAL_FATAL(az_queue_publish(redis, AZ_DEFAULT_WORKSPACE, &r, msg), AZ_OK);
    long long d = depth();
    /* MAXLEN ~ trims whole stream nodes (100 entries by default): near the bound, never far. */
    CU_ASSERT(d >= AZ_QUEUE_MAXLEN);
    CU_ASSERT(d < AZ_QUEUE_MAXLEN + 1000);
    del_stream();
}

static Agentz__V1__Task *new_task(const Agentz__V1__RetryPolicy *p)
{
    Agentz__V1__Task t = AGENTZ__V1__TASK__INIT, *out = NULL;
    t.description = "queued work";
    t.agent_id = "0b0b0b0b-0000-4000-8000-000000000001";
    t.retry_policy = (Agentz__V1__RetryPolicy *)p;
    int rep;
    char msg[AZ_MSG_MAX];
    az_task_ready ready = {.arena = arena};
    CU_ASSERT_EQUAL_FATAL(az_task_create(pg, &ctx, &t, "", "", arena, &out, &rep, &ready, msg), AZ_OK);
    return out;
}

/* A task in backoff whose next attempt is due now (zero initial backoff). */
static Agentz__V1__Task *due_backoff_task(void)
{
    Agentz__V1__RetryPolicy p = AGENTZ__V1__RETRY_POLICY__INIT;
    Google__Protobuf__Duration zero = GOOGLE__PROTOBUF__DURATION__INIT;
    p.initial_backoff = &zero;
    Agentz__V1__Task *t = new_task(&p), *claimed;
    char msg[AZ_MSG_MAX];
    CU_ASSERT_EQUAL_FATAL(az_task_claim(pg, &ctx, t->id, "w", 0, arena, &claimed, msg), AZ_OK);
    Agentz__V1__TaskError e = AGENTZ__V1__TASK_ERROR__INIT;
    e.type = "llm_rate_limited";
    e.retryable = 1;
    CU_ASSERT_EQUAL_FATAL(az_task_fail(pg, &ctx, t->id, 1, &e, NULL, NULL, NULL, msg), AZ_OK);
    Agentz__V1__Task *g;
    CU_ASSERT_EQUAL_FATAL(az_task_get(pg, &ctx, t->id, arena, &g, msg), AZ_OK);
    CU_ASSERT_EQUAL(g->status, AGENTZ__V1__TASK_STATUS__TASK_STATUS_BACKOFF);
    return t;
}

static int status_of(const char *id)
{
    Agentz__V1__Task *g = NULL;
    char msg[AZ_MSG_MAX];
    CU_ASSERT_EQUAL_FATAL(az_task_get(pg, &ctx, id, arena, &g, msg), AZ_OK);
    return g->status;
}

static void test_reconciler_run_once(void)
{
    del_stream();
    char msg[AZ_MSG_MAX];
    /* Quiet the tasks of earlier tests (all queued): they would be re-published too. */
    az_reconciler *settle = az_reconciler_new(pg, redis, 0, 1);
    usleep(5000);
    az_reconciler_counts c;
    CU_ASSERT_EQUAL(az_reconciler_run_once(settle, &c, msg), AZ_OK);
    az_reconciler_free(settle);
    del_stream();

    az_reconciler *rec = az_reconciler_new(pg, redis, 0, 200); /* re-publish after 200 ms */
    CU_ASSERT_PTR_NOT_NULL_FATAL(rec);
    Agentz__V1__Task *q = new_task(NULL); /* queued and (notionally) published now */
    Agentz__V1__Task *b = due_backoff_task();
    CU_ASSERT_EQUAL_FATAL(az_reconciler_run_once(rec, &c, msg), AZ_OK);
    CU_ASSERT_EQUAL(c.woken, 1);
    CU_ASSERT_EQUAL(c.republished, 0); /* q was published less than 200 ms ago */
    CU_ASSERT_EQUAL(status_of(b->id), AGENTZ__V1__TASK_STATUS__TASK_STATUS_QUEUED);
    CU_ASSERT_EQUAL(entries_for(b->id, 10), 1);
    CU_ASSERT_EQUAL(entries_for(q->id, 10), 0);
    CU_ASSERT_EQUAL(depth(), 1);

    /* Redis "lost" the stream; after 200 ms both queued tasks are published again, once. */
    del_stream();
    usleep(300000);
    CU_ASSERT_EQUAL_FATAL(az_reconciler_run_once(rec, &c, msg), AZ_OK);
    CU_ASSERT_EQUAL(c.woken, 0);
    CU_ASSERT_EQUAL(c.republished, 2);
    CU_ASSERT_EQUAL(entries_for(q->id, 10), 1);
    CU_ASSERT_EQUAL(entries_for(b->id, 10), 1);
    /* Marked published: an immediate second pass does not publish them again. */
    CU_ASSERT_EQUAL_FATAL(az_reconciler_run_once(rec, &c, msg), AZ_OK);
    CU_ASSERT_EQUAL(c.republished, 0);
    CU_ASSERT_EQUAL(depth(), 2);
    /* A claimed task is no longer queued: never re-published. */
    Agentz__V1__Task *claimed;
    CU_ASSERT_EQUAL(az_task_claim(pg, &ctx, q->id, "w", 0, arena, &claimed, msg), AZ_OK);
    usleep(300000);
    CU_ASSERT_EQUAL_FATAL(az_reconciler_run_once(rec, &c, msg), AZ_OK);
    CU_ASSERT_EQUAL(c.republished, 1); /* only b */
    CU_ASSERT_EQUAL(entries_for(q->id, 10), 1);
    CU_ASSERT_EQUAL(entries_for(b->id, 10), 2);
    az_reconciler_free(rec);
}

static int run_hook_calls;

static az_err count_run_hook(void *arg, const az_ctx *c, const char *run_id, char *msg)
{
    (void)arg, (void)c, (void)run_id, (void)msg;
    run_hook_calls++;
    return AZ_OK;
}

/* A dead worker's task (its lease expired) is reaped, and with zero backoff published at once. */
static void test_reconciler_reaps_expired_leases(void)
{
    char msg[AZ_MSG_MAX];
    Agentz__V1__RetryPolicy p = AGENTZ__V1__RETRY_POLICY__INIT;
    Google__Protobuf__Duration zero = GOOGLE__PROTOBUF__DURATION__INIT;
    p.initial_backoff = &zero;
    Agentz__V1__Task *t = new_task(&p), *claimed;
    CU_ASSERT_EQUAL_FATAL(az_task_claim(pg, &ctx, t->id, "dead-worker", 50, arena, &claimed, msg), AZ_OK);
    az_reconciler *rec = az_reconciler_new(pg, redis, 0, 600000);
    az_reconciler_set_run_hook(rec, count_run_hook, NULL);
    az_reconciler_counts c;
    del_stream();
    usleep(150000);
    run_hook_calls = 0;
    CU_ASSERT_EQUAL_FATAL(az_reconciler_run_once(rec, &c, msg), AZ_OK);
    CU_ASSERT_EQUAL(c.reaped, 1);
    CU_ASSERT_EQUAL(status_of(t->id), AGENTZ__V1__TASK_STATUS__TASK_STATUS_QUEUED);
    CU_ASSERT_EQUAL(entries_for(t->id, 10), 1);
    CU_ASSERT_EQUAL(run_hook_calls, 0); /* a standalone task has no run to refresh */
    /* The next attempt runs; the reaped one is on record. */
    CU_ASSERT_EQUAL(az_task_claim(pg, &ctx, t->id, "w2", 0, arena, &claimed, msg), AZ_OK);
    CU_ASSERT_EQUAL(claimed->attempt, 2);
    CU_ASSERT_EQUAL_FATAL(az_reconciler_run_once(rec, &c, msg), AZ_OK);
    CU_ASSERT_EQUAL(c.reaped, 0);
    az_reconciler_free(rec);
}

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void test_reconciler_thread(void)
{
    char msg[AZ_MSG_MAX];
    az_reconciler *rec = az_reconciler_new(pg, redis, 50, 0);
    CU_ASSERT_EQUAL_FATAL(az_reconciler_start(rec, msg), AZ_OK);
    CU_ASSERT_EQUAL(az_reconciler_start(rec, msg), AZ_OK); /* idempotent */
    Agentz__V1__Task *b = due_backoff_task();
    int64_t until = mono_ms() + 5000;
    while (mono_ms() < until && status_of(b->id) != AGENTZ__V1__TASK_STATUS__TASK_STATUS_QUEUED)
        usleep(20000);
    CU_ASSERT_EQUAL(status_of(b->id), AGENTZ__V1__TASK_STATUS__TASK_STATUS_QUEUED);
    az_reconciler_free(rec);
    /* A long interval does not delay stopping. */
    rec = az_reconciler_new(pg, redis, 600000, 0);
    CU_ASSERT_EQUAL_FATAL(az_reconciler_start(rec, msg), AZ_OK);
    usleep(20000);
    int64_t t0 = mono_ms();
    az_reconciler_free(rec);
    CU_ASSERT(mono_ms() - t0 < 1000);
    az_reconciler_free(NULL);
}

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
    snprintf(dir, sizeof dir, "/tmp/aztest-queue-XXXXXX");
    if (!mkdtemp(dir) || chmod(dir, 0755) != 0) return -1;
    if (az_embed_start(dir, &embed, msg) != AZ_OK) {
        fprintf(stderr, "cannot start embedded servers: %s\n", msg);
        return -1;
    }
    if (az_pg_new(az_embed_database_url(embed), 4, 30000, &pg, msg) != AZ_OK ||
        az_migrate(pg, az_migrations, az_migrations_count, NULL, msg) != AZ_OK ||
        az_redis_new(az_embed_redis_url(embed), 10000, &redis, msg) != AZ_OK) {
        fprintf(stderr, "cannot prepare the stores: %s\n", msg);
        return -1;
    }
    arena = az_arena_new(0);
    return arena ? 0 : -1;
}

static int suite_clean(void)
{
    az_arena_free(arena);
    az_redis_free(redis);
    az_pg_free(pg);
    az_embed_stop(embed);
    nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    return 0;
}

int main(void)
{
    if (CU_initialize_registry() != CUE_SUCCESS) return 1;
    CU_pSuite s = CU_add_suite("queue", suite_init, suite_clean);
    CU_add_test(s, "publish and depth", test_publish_and_depth);
    CU_add_test(s, "stream length is bounded", test_maxlen_bound);
    CU_add_test(s, "reconciler wakes and re-publishes", test_reconciler_run_once);
    CU_add_test(s, "reconciler thread runs and stops promptly", test_reconciler_thread);
    CU_add_test(s, "reconciler reaps expired leases", test_reconciler_reaps_expired_leases);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    unsigned failed = CU_get_number_of_failures() + CU_get_number_of_tests_failed();
    if (CU_get_number_of_suites_failed()) failed++;
    CU_cleanup_registry();
    return failed ? 1 : 0;
}
