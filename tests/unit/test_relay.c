/* CUnit suite for server/event/relay against the embedded PostgreSQL and a redis-server this
 * suite starts and stops itself: committed outbox events reach a Redis subscriber in sequence
 * order on every scope channel, quickly (latency printed); with Redis stopped they wait in the
 * outbox and go out once it is back; two relays on one database never publish out of order. */
#include <CUnit/Basic.h>
#include <fcntl.h>
#include <ftw.h>
#include <hiredis/hiredis.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "core/log.h"
#include "core/text.h"
#include "embed/embedded.h"
#include "event/hub.h"
#include "event/outbox.h"
#include "event/relay.h"
#include "store/migrate.h"
#include "store/pgpool.h"

static char dir[64], sock[128], redis_url[160];
static pid_t redis_pid = -1;
static az_embed *embed;
static az_pg *pg;
static char msg[AZ_MSG_MAX];
static const az_ctx ctx = {.workspace_id = AZ_DEFAULT_WORKSPACE, .principal = "", .request_id = "r",
                           .deadline_ms = -1};

static int64_t mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* ---------------------------------------------------------------- redis-server */

/* 0 once the socket is there, -1 otherwise (usable outside a test: no CUnit asserts). */
static int start_redis(void)
{
    pid_t pid = fork();
    if (pid < 0) return -1;
    if (pid == 0) {
        int null = open("/dev/null", O_WRONLY);
        if (null >= 0) {
            dup2(null, 1);
            dup2(null, 2);
        }
        execlp("redis-server", "redis-server", "--port", "0", "--unixsocket", sock, "--save", "",
               "--appendonly", "no", "--daemonize", "no", (char *)NULL);
        _exit(127);
    }
    redis_pid = pid;
    for (int i = 0; i < 100; i++) {
        struct stat st;
        if (stat(sock, &st) == 0) return 0;
        usleep(50 * 1000);
    }
    fprintf(stderr, "redis-server did not create its socket within 5 s\n");
    return -1;
}

static void stop_redis(void)
{
    if (redis_pid <= 0) return;
    kill(redis_pid, SIGKILL);
    waitpid(redis_pid, NULL, 0);
    redis_pid = -1;
    unlink(sock);
}

/* ---------------------------------------------------------------- a subscriber */

#define MAX_SEEN 4096

/* Every message on agentz:events:* as (channel kind, sequence, tag, arrival time). The tag is
 * Progress.completed_steps, which the tests set to identify each event. */
typedef struct seen {
    char kind; /* 'r' run, 't' task, 'a' agents */
    int64_t seq;
    int tag;
    int64_t at_us;
} seen;

static struct {
    pthread_t thread;
    atomic_int stop, subscribed;
    pthread_mutex_t mu;
    seen v[MAX_SEEN];
    size_t n;
    char run_id[37];
} sub = {.mu = PTHREAD_MUTEX_INITIALIZER};

static void record(redisReply *r)
{
    if (r->type != REDIS_REPLY_ARRAY || r->elements != 4 || strcmp(r->element[0]->str, "pmessage"))
        return;
    const char *channel = r->element[2]->str;
    Agentz__V1__Event *ev = agentz__v1__event__unpack(NULL, r->element[3]->len,
                                                      (const uint8_t *)r->element[3]->str);
    if (!ev) return;
    seen s = {.seq = ev->sequence, .tag = ev->progress ? ev->progress->completed_steps : -1,
              .at_us = mono_us()};
    if (!strncmp(channel, AZ_HUB_CHANNEL_RUN, strlen(AZ_HUB_CHANNEL_RUN))) s.kind = 'r';
    else if (!strncmp(channel, AZ_HUB_CHANNEL_TASK, strlen(AZ_HUB_CHANNEL_TASK))) s.kind = 't';
    else s.kind = 'a';
    int mine = !strcmp(ev->run_id, sub.run_id);
    agentz__v1__event__free_unpacked(ev, NULL);
    if (!mine) return;
    pthread_mutex_lock(&sub.mu);
    if (sub.n < MAX_SEEN) sub.v[sub.n++] = s;
    pthread_mutex_unlock(&sub.mu);
}

/* Subscribes (reconnecting every 10 ms while Redis is away) and records until stopped. */
static void *subscriber(void *arg)
{
    (void)arg;
    while (!atomic_load(&sub.stop)) {
        redisContext *c = redisConnectUnix(sock);
        if (!c || c->err) {
            if (c) redisFree(c);
            atomic_store(&sub.subscribed, 0);
            usleep(10 * 1000);
            continue;
        }
        redisReply *r = redisCommand(c, "PSUBSCRIBE agentz:events:*");
        if (r) freeReplyObject(r);
        atomic_store(&sub.subscribed, r != NULL);
        while (r && !atomic_load(&sub.stop)) {
            void *reply = NULL;
            if (redisGetReplyFromReader(c, &reply) != REDIS_OK) break;
            if (reply) {
                record(reply);
                freeReplyObject(reply);
                continue;
            }
            struct pollfd pfd = {.fd = c->fd, .events = POLLIN};
            if (poll(&pfd, 1, 50) <= 0) continue;
            if (redisBufferRead(c) != REDIS_OK) break;
        }
        atomic_store(&sub.subscribed, 0);
        redisFree(c);
    }
    return NULL;
}

static void sub_start(const char *run_id)
{
    snprintf(sub.run_id, sizeof sub.run_id, "%s", run_id);
    sub.n = 0;
    atomic_store(&sub.stop, 0);
    pthread_create(&sub.thread, NULL, subscriber, NULL);
    for (int i = 0; i < 500 && !atomic_load(&sub.subscribed); i++) usleep(10 * 1000);
    CU_ASSERT_FATAL(atomic_load(&sub.subscribed));
}

static void sub_stop(void)
{
    atomic_store(&sub.stop, 1);
    pthread_join(sub.thread, NULL);
}

static size_t sub_count(char kind)
{
    size_t k = 0;
    pthread_mutex_lock(&sub.mu);
    for (size_t i = 0; i < sub.n; i++) k += sub.v[i].kind == kind;
    pthread_mutex_unlock(&sub.mu);
    return k;
}

/* Waits until kind has at least want messages (at most ms). */
static int sub_wait(char kind, size_t want, int ms)
{
    for (int i = 0; i < ms; i++) {
        if (sub_count(kind) >= want) return 1;
        usleep(1000);
    }
    return 0;
}

/* Asserts that the messages of kind are exactly sequences first..last, in order. */
static void sub_check_order(char kind, int64_t first, int64_t last)
{
    int64_t want = first;
    int ok = 1;
    pthread_mutex_lock(&sub.mu);
    for (size_t i = 0; i < sub.n; i++) {
        if (sub.v[i].kind != kind) continue;
        if (sub.v[i].seq != want) {
            if (ok) fprintf(stderr, "\n  channel %c: got sequence %lld, want %lld\n", kind,
                            (long long)sub.v[i].seq, (long long)want);
            ok = 0;
        }
        want = sub.v[i].seq + 1;
    }
    pthread_mutex_unlock(&sub.mu);
    CU_ASSERT(ok);
    CU_ASSERT_EQUAL(want, last + 1);
}

/* ---------------------------------------------------------------- appending */

/* Appends and commits one progress event of run_id (and task_id when given) tagged tag. */
static az_err append(az_pgconn *c, const char *run_id, const char *task_id, int tag)
{
    Agentz__V1__Progress pr = AGENTZ__V1__PROGRESS__INIT;
    pr.completed_steps = tag;
    Agentz__V1__Event ev = AGENTZ__V1__EVENT__INIT;
    ev.run_id = (char *)run_id;
    ev.task_id = (char *)(task_id ? task_id : "");
    ev.payload_case = AGENTZ__V1__EVENT__PAYLOAD_PROGRESS;
    ev.progress = &pr;
    char m[AZ_MSG_MAX];
    az_err err = az_pg_begin(c, &ctx, m);
    if (err == AZ_OK) err = az_outbox_append(c, &ctx, &ev, NULL, 0, m);
    if (err == AZ_OK) err = az_pg_commit(c, &ctx, m);
    else az_pg_rollback(c);
    if (err != AZ_OK) fprintf(stderr, "\n  append failed: %s\n", m);
    return err;
}

static long long unpublished(void)
{
    az_pgconn *c;
    PGresult *r;
    long long n = -1;
    CU_ASSERT_EQUAL_FATAL(az_pg_acquire(pg, &ctx, &c, msg), AZ_OK);
    if (az_pg_exec(c, &ctx, "SELECT count(*) FROM event_queue", 0, NULL, &r, msg) == AZ_OK) {
        n = atoll(PQgetvalue(r, 0, 0));
        PQclear(r);
    }
    az_pg_release(c);
    return n;
}

static int cmp64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

/* ---------------------------------------------------------------- tests */

#define LAT_N 200

static void test_order_and_latency(void)
{
    char run[37], task[37];
    CU_ASSERT_EQUAL_FATAL(az_text_uuid4(run), AZ_OK);
    CU_ASSERT_EQUAL_FATAL(az_text_uuid4(task), AZ_OK);
    az_relay *relay;
    CU_ASSERT_EQUAL_FATAL(az_relay_new(az_embed_database_url(embed), "agentz_app", redis_url, &relay, msg), AZ_OK);
    sub_start(run);
    az_pgconn *c;
    CU_ASSERT_EQUAL_FATAL(az_pg_acquire(pg, &ctx, &c, msg), AZ_OK);
    static int64_t committed[LAT_N];
    for (int i = 0; i < LAT_N; i++) {
        CU_ASSERT_EQUAL_FATAL(append(c, run, task, i), AZ_OK);
        committed[i] = mono_us();
        usleep(2000); /* one event at a time: the latency of a lone state change */
    }
    az_pg_release(c);
    CU_ASSERT_FATAL(sub_wait('r', LAT_N, 5000));
    CU_ASSERT_FATAL(sub_wait('t', LAT_N, 5000));
    sub_stop();
    sub_check_order('r', 1, LAT_N);
    sub_check_order('t', 1, LAT_N);
    CU_ASSERT_EQUAL(sub_count('a'), 0); /* progress is not an agent event */
    /* Commit -> subscriber latency on the run channel. */
    static int64_t lat[LAT_N];
    size_t k = 0;
    for (size_t i = 0; i < sub.n; i++)
        if (sub.v[i].kind == 'r' && sub.v[i].tag >= 0 && sub.v[i].tag < LAT_N)
            lat[k++] = sub.v[i].at_us - committed[sub.v[i].tag];
    qsort(lat, k, sizeof *lat, cmp64);
    if (k) {
        fprintf(stderr, "\n  relay latency commit -> redis subscriber over %zu events: p50 %.2f ms,"
                        " p99 %.2f ms, max %.2f ms\n",
                k, lat[k / 2] / 1000.0, lat[k * 99 / 100] / 1000.0, lat[k - 1] / 1000.0);
        CU_ASSERT(lat[k * 99 / 100] < 50000); /* generous for a shared machine; target is 10 ms */
    }
    az_relay_stats st;
    az_relay_get_stats(relay, &st);
    CU_ASSERT(st.published >= LAT_N);
    CU_ASSERT(st.redis_ok && st.postgres_ok);
    CU_ASSERT_EQUAL(unpublished(), 0);
    az_relay_free(relay);
}

static void test_redis_outage(void)
{
    char run[37];
    CU_ASSERT_EQUAL_FATAL(az_text_uuid4(run), AZ_OK);
    az_relay *relay;
    CU_ASSERT_EQUAL_FATAL(az_relay_new(az_embed_database_url(embed), "agentz_app", redis_url, &relay, msg), AZ_OK);
    sub_start(run);
    az_pgconn *c;
    CU_ASSERT_EQUAL_FATAL(az_pg_acquire(pg, &ctx, &c, msg), AZ_OK);
    for (int i = 0; i < 10; i++) CU_ASSERT_EQUAL(append(c, run, NULL, i), AZ_OK);
    CU_ASSERT_FATAL(sub_wait('r', 10, 5000));

    stop_redis();
    for (int i = 10; i < 60; i++) CU_ASSERT_EQUAL(append(c, run, NULL, i), AZ_OK);
    usleep(500 * 1000);
    /* Nothing lost, nothing sent: they wait in the outbox. */
    CU_ASSERT_EQUAL(unpublished(), 50);
    az_relay_stats st;
    az_relay_get_stats(relay, &st);
    CU_ASSERT_EQUAL(st.redis_ok, 0);
    CU_ASSERT_EQUAL(sub_count('r'), 10);

    CU_ASSERT_FATAL(start_redis() == 0);
    for (int i = 0; i < 500 && !atomic_load(&sub.subscribed); i++) usleep(10 * 1000);
    /* The relay retries within its back-off (at most 2 s); more events meanwhile. */
    for (int i = 60; i < 70; i++) CU_ASSERT_EQUAL(append(c, run, NULL, i), AZ_OK);
    az_pg_release(c);
    CU_ASSERT(sub_wait('r', 70, 8000));
    sub_stop();
    sub_check_order('r', 1, 70);
    CU_ASSERT_EQUAL(unpublished(), 0);
    az_relay_get_stats(relay, &st);
    CU_ASSERT_EQUAL(st.redis_ok, 1);
    az_relay_free(relay);
}

#define WRITERS 4
#define PER_WRITER 150

static char race_run[37];

static void *writer(void *arg)
{
    long k = (long)arg;
    char m[AZ_MSG_MAX];
    az_pgconn *c;
    if (az_pg_acquire(pg, &ctx, &c, m) != AZ_OK) return (void *)1;
    long bad = 0;
    for (int i = 0; i < PER_WRITER; i++) bad += append(c, race_run, NULL, (int)(k * 1000 + i)) != AZ_OK;
    az_pg_release(c);
    return (void *)bad;
}

static void test_two_relays_keep_order(void)
{
    CU_ASSERT_EQUAL_FATAL(az_text_uuid4(race_run), AZ_OK);
    az_relay *r1, *r2;
    CU_ASSERT_EQUAL_FATAL(az_relay_new(az_embed_database_url(embed), "agentz_app", redis_url, &r1, msg), AZ_OK);
    CU_ASSERT_EQUAL_FATAL(az_relay_new(az_embed_database_url(embed), "", redis_url, &r2, msg), AZ_OK);
    az_relay_stats s1, s2;
    az_relay_get_stats(r1, &s1);
    az_relay_get_stats(r2, &s2);
    uint64_t before = s1.published + s2.published;
    sub_start(race_run);
    pthread_t th[WRITERS];
    for (long i = 0; i < WRITERS; i++) pthread_create(&th[i], NULL, writer, (void *)i);
    for (int i = 0; i < WRITERS; i++) {
        void *bad;
        pthread_join(th[i], &bad);
        CU_ASSERT_PTR_NULL(bad);
    }
    CU_ASSERT(sub_wait('r', WRITERS * PER_WRITER, 10000));
    usleep(100 * 1000); /* a duplicate would arrive now */
    sub_stop();
    sub_check_order('r', 1, WRITERS * PER_WRITER);
    /* Each writer's events in the order it committed them. */
    int last[WRITERS];
    for (int i = 0; i < WRITERS; i++) last[i] = -1;
    for (size_t i = 0; i < sub.n; i++) {
        int w = sub.v[i].tag / 1000, j = sub.v[i].tag % 1000;
        CU_ASSERT_FATAL(w >= 0 && w < WRITERS);
        CU_ASSERT(j > last[w]);
        last[w] = j;
    }
    az_relay_get_stats(r1, &s1);
    az_relay_get_stats(r2, &s2);
    /* Every event published exactly once, whichever relay took it. */
    CU_ASSERT_EQUAL(s1.published + s2.published - before, WRITERS * PER_WRITER);
    az_relay_free(r1);
    az_relay_free(r2);
}

static void test_arguments(void)
{
    az_relay *r = (az_relay *)1;
    CU_ASSERT_EQUAL(az_relay_new("", "agentz_app", redis_url, &r, msg), AZ_ERR_INVALID);
    CU_ASSERT_PTR_NULL(r);
    CU_ASSERT_EQUAL(az_relay_new(az_embed_database_url(embed), NULL, "http://nope", &r, msg), AZ_ERR_INVALID);
    CU_ASSERT_PTR_NULL(r);
    az_relay_free(NULL);
    /* Unreachable servers at start are not an error: it retries until they come. */
    CU_ASSERT_EQUAL_FATAL(az_relay_new("postgresql:///nope?host=/nonexistent", NULL,
                                       "unix:///nonexistent/redis.sock", &r, msg), AZ_OK);
    usleep(200 * 1000);
    az_relay_stats st;
    az_relay_get_stats(r, &st);
    CU_ASSERT_EQUAL(st.postgres_ok, 0);
    CU_ASSERT_EQUAL(st.published, 0);
    int64_t t0 = mono_us();
    az_relay_free(r);
    CU_ASSERT(mono_us() - t0 < 1000000); /* stops promptly even while backing off */
}

/* ---------------------------------------------------------------- suite */

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    remove(path);
    return 0;
}

static int suite_init(void)
{
    az_log_set_level(AZ_LOG_ERROR);
    snprintf(dir, sizeof dir, "/tmp/aztest-relay-XXXXXX");
    if (!mkdtemp(dir) || chmod(dir, 0755) != 0) return -1;
    snprintf(sock, sizeof sock, "%s/relay-redis.sock", dir);
    snprintf(redis_url, sizeof redis_url, "unix://%s", sock);
    if (az_embed_start(dir, &embed, msg) != AZ_OK) {
        fprintf(stderr, "cannot start embedded postgresql: %s\n", msg);
        return -1;
    }
    if (az_pg_new(az_embed_database_url(embed), WRITERS + 2, 30000, &pg, msg) != AZ_OK ||
        az_migrate(pg, az_migrations, az_migrations_count, NULL, msg) != AZ_OK ||
        az_pg_set_role(pg, "agentz_app", msg) != AZ_OK) {
        fprintf(stderr, "cannot prepare the database: %s\n", msg);
        return -1;
    }
    return start_redis();
}

static int suite_clean(void)
{
    stop_redis();
    az_pg_free(pg);
    az_embed_stop(embed);
    nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    return 0;
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    if (CU_initialize_registry() != CUE_SUCCESS) return 1;
    CU_pSuite s = CU_add_suite("relay", suite_init, suite_clean);
    CU_add_test(s, "events reach redis in order, quickly", test_order_and_latency);
    CU_add_test(s, "redis outage: events wait and go out after", test_redis_outage);
    CU_add_test(s, "two relays never publish out of order", test_two_relays_keep_order);
    CU_add_test(s, "arguments, unreachable servers, prompt stop", test_arguments);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    unsigned failed = CU_get_number_of_failures() + CU_get_number_of_tests_failed();
    if (CU_get_number_of_suites_failed()) failed++;
    CU_cleanup_registry();
    return failed ? 1 : 0;
}
