/* CUnit suite for server/event/hub against a throwaway redis-server on a unix socket:
 * subscribe and deliver, many subscribers on one channel, unsubscribe, bad payloads, and a Redis
 * restart (gap callbacks, then messages flow again on the resubscribed channel). */
#include <CUnit/Basic.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "core/log.h"
#include "event/hub.h"
#include "store/redis.h"

static char dir[64], sock[128], url[160];
static pid_t server = -1;

/* Starts redis-server on sock; 0 once its socket exists. Usable outside tests (no asserts). */
static int spawn_server(void)
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
    server = pid;
    for (int i = 0; i < 100; i++) {
        struct stat st;
        if (stat(sock, &st) == 0) return 0;
        usleep(50 * 1000);
    }
    return -1;
}

static void start_server(void)
{
    CU_ASSERT_FATAL(spawn_server() == 0);
}

static void stop_server(void)
{
    if (server <= 0) return;
    kill(server, SIGKILL);
    waitpid(server, NULL, 0);
    server = -1;
    unlink(sock);
}

/* What one subscriber saw. */
typedef struct seen {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int events, gaps;
    int64_t last_seq;
    char last_run[64];
} seen;

static void seen_init(seen *s)
{
    memset(s, 0, sizeof *s);
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
}

static void seen_free(seen *s)
{
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->cv);
}

static void on_event(void *arg, const Agentz__V1__Event *ev)
{
    seen *s = arg;
    pthread_mutex_lock(&s->mu);
    if (ev) {
        s->events++;
        s->last_seq = ev->sequence;
        snprintf(s->last_run, sizeof s->last_run, "%s", ev->run_id);
    } else {
        s->gaps++;
    }
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

/* Waits up to ms for *field >= want; returns the value seen. */
static int wait_for(seen *s, const int *field, int want, int ms)
{
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += ms / 1000;
    until.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&s->mu);
    while (*field < want && pthread_cond_timedwait(&s->cv, &s->mu, &until) == 0) {
    }
    int v = *field;
    pthread_mutex_unlock(&s->mu);
    return v;
}

static int get(seen *s, const int *field)
{
    pthread_mutex_lock(&s->mu);
    int v = *field;
    pthread_mutex_unlock(&s->mu);
    return v;
}

/* Publishes a packed Event (sequence seq, run_id run) on channel; returns the receiver count. */
static long long publish(const char *channel, int64_t seq, const char *run)
{
    az_redis *r = NULL;
    char msg[AZ_MSG_MAX];
    CU_ASSERT_EQUAL_FATAL(az_redis_new(url, 5000, &r, msg), AZ_OK);
    Agentz__V1__Event ev = AGENTZ__V1__EVENT__INIT;
    Agentz__V1__Heartbeat hb = AGENTZ__V1__HEARTBEAT__INIT;
    ev.sequence = seq;
    ev.run_id = (char *)run;
    ev.payload_case = AGENTZ__V1__EVENT__PAYLOAD_HEARTBEAT;
    ev.heartbeat = &hb;
    uint8_t buf[256];
    size_t n = agentz__v1__event__pack(&ev, buf);
    const char *argv[3] = {"PUBLISH", channel, (const char *)buf};
    size_t lens[3] = {7, strlen(channel), n};
    redisReply *rep = NULL;
    CU_ASSERT_EQUAL_FATAL(az_redis_command(r, 3, argv, lens, &rep, msg), AZ_OK);
    long long receivers = rep->integer;
    freeReplyObject(rep);
    az_redis_free(r);
    return receivers;
}

static void publish_raw(const char *channel, const char *bytes)
{
    az_redis *r = NULL;
    char msg[AZ_MSG_MAX];
    CU_ASSERT_EQUAL_FATAL(az_redis_new(url, 5000, &r, msg), AZ_OK);
    const char *argv[3] = {"PUBLISH", channel, bytes};
    redisReply *rep = NULL;
    CU_ASSERT_EQUAL(az_redis_command(r, 3, argv, NULL, &rep, msg), AZ_OK);
    freeReplyObject(rep);
    az_redis_free(r);
}

/* Stats settle on the hub thread (UNSUBSCRIBE replies): poll for up to 5 s. */
static size_t wait_channels(az_hub *h, size_t want)
{
    az_hub_stats st;
    for (int i = 0; i < 500; i++) {
        az_hub_get_stats(h, &st);
        if (st.channels == want) return want;
        usleep(10 * 1000);
    }
    return st.channels;
}

static void test_subscribe_deliver(void)
{
    char msg[AZ_MSG_MAX];
    az_hub *h = az_hub_new(url, msg);
    CU_ASSERT_PTR_NOT_NULL_FATAL(h);
    seen s;
    seen_init(&s);
    az_hub_sub *sub = NULL;
    CU_ASSERT_EQUAL_FATAL(az_hub_subscribe(h, AZ_HUB_CHANNEL_RUN "r1", on_event, &s, 5000, &sub, msg),
                          AZ_OK);
    /* Subscribed means Redis confirmed: the very next publish reaches us. */
    CU_ASSERT_EQUAL(publish(AZ_HUB_CHANNEL_RUN "r1", 7, "r1"), 1);
    CU_ASSERT_EQUAL(wait_for(&s, &s.events, 1, 5000), 1);
    CU_ASSERT_EQUAL(s.last_seq, 7);
    CU_ASSERT_STRING_EQUAL(s.last_run, "r1");
    /* Other channels do not reach this subscriber. */
    publish(AZ_HUB_CHANNEL_RUN "r2", 8, "r2");
    publish(AZ_HUB_CHANNEL_RUN "r1", 9, "r1");
    CU_ASSERT_EQUAL(wait_for(&s, &s.events, 2, 5000), 2);
    CU_ASSERT_EQUAL(s.last_seq, 9);
    /* A payload that is not an Event is skipped; the next one still arrives. */
    publish_raw(AZ_HUB_CHANNEL_RUN "r1", "\xff\xff\xff garbage");
    publish(AZ_HUB_CHANNEL_RUN "r1", 10, "r1");
    CU_ASSERT_EQUAL(wait_for(&s, &s.events, 3, 5000), 3);
    CU_ASSERT_EQUAL(s.last_seq, 10);
    az_hub_stats st;
    az_hub_get_stats(h, &st);
    CU_ASSERT_EQUAL(st.channels, 1);
    CU_ASSERT_EQUAL(st.subscribers, 1);
    CU_ASSERT_EQUAL(st.messages, 3);

    /* After unsubscribe nothing more is delivered and Redis drops the channel. */
    az_hub_unsubscribe(sub);
    CU_ASSERT_EQUAL(wait_channels(h, 0), 0);
    CU_ASSERT_EQUAL(publish(AZ_HUB_CHANNEL_RUN "r1", 11, "r1"), 0);
    usleep(100 * 1000);
    CU_ASSERT_EQUAL(get(&s, &s.events), 3);
    az_hub_unsubscribe(NULL);

    /* Bad channel names are refused with the field named. */
    CU_ASSERT_EQUAL(az_hub_subscribe(h, "", on_event, &s, 100, &sub, msg), AZ_ERR_INVALID);
    CU_ASSERT_PTR_NOT_NULL(strstr(msg, "channel"));
    CU_ASSERT_PTR_NULL(sub);
    az_hub_free(h);
    az_hub_free(NULL);
    seen_free(&s);
}

#define MANY 64

static void test_many_subscribers(void)
{
    char msg[AZ_MSG_MAX];
    az_hub *h = az_hub_new(url, msg);
    CU_ASSERT_PTR_NOT_NULL_FATAL(h);
    static seen s[MANY];
    az_hub_sub *subs[MANY];
    for (int i = 0; i < MANY; i++) {
        seen_init(&s[i]);
        CU_ASSERT_EQUAL_FATAL(
            az_hub_subscribe(h, AZ_HUB_CHANNEL_TASK "t", on_event, &s[i], 5000, &subs[i], msg), AZ_OK);
    }
    az_hub_stats st;
    az_hub_get_stats(h, &st);
    CU_ASSERT_EQUAL(st.channels, 1);
    CU_ASSERT_EQUAL(st.subscribers, MANY);
    /* One Redis subscription: Redis counts one receiver for all of them. */
    CU_ASSERT_EQUAL(publish(AZ_HUB_CHANNEL_TASK "t", 1, "x"), 1);
    CU_ASSERT_EQUAL(publish(AZ_HUB_CHANNEL_TASK "t", 2, "x"), 1);
    for (int i = 0; i < MANY; i++) {
        CU_ASSERT_EQUAL(wait_for(&s[i], &s[i].events, 2, 5000), 2);
        CU_ASSERT_EQUAL(s[i].last_seq, 2);
    }
    /* Half leave: the others keep receiving, the channel stays. */
    for (int i = 0; i < MANY / 2; i++) az_hub_unsubscribe(subs[i]);
    CU_ASSERT_EQUAL(publish(AZ_HUB_CHANNEL_TASK "t", 3, "x"), 1);
    for (int i = MANY / 2; i < MANY; i++) CU_ASSERT_EQUAL(wait_for(&s[i], &s[i].events, 3, 5000), 3);
    usleep(50 * 1000);
    for (int i = 0; i < MANY / 2; i++) CU_ASSERT_EQUAL(get(&s[i], &s[i].events), 2);
    for (int i = MANY / 2; i < MANY; i++) az_hub_unsubscribe(subs[i]);
    CU_ASSERT_EQUAL(wait_channels(h, 0), 0);
    /* Subscribing again to a channel being unsubscribed works (one command in flight). */
    az_hub_sub *again = NULL;
    CU_ASSERT_EQUAL_FATAL(az_hub_subscribe(h, AZ_HUB_CHANNEL_TASK "t", on_event, &s[0], 5000, &again, msg),
                          AZ_OK);
    az_hub_unsubscribe(again);
    CU_ASSERT_EQUAL_FATAL(az_hub_subscribe(h, AZ_HUB_CHANNEL_TASK "t", on_event, &s[0], 5000, &again, msg),
                          AZ_OK);
    CU_ASSERT_EQUAL(publish(AZ_HUB_CHANNEL_TASK "t", 4, "x"), 1);
    CU_ASSERT_EQUAL(wait_for(&s[0], &s[0].events, 3, 5000), 3);
    az_hub_unsubscribe(again);
    az_hub_free(h);
    for (int i = 0; i < MANY; i++) seen_free(&s[i]);
}

static void test_redis_restart(void)
{
    char msg[AZ_MSG_MAX];
    az_hub *h = az_hub_new(url, msg);
    CU_ASSERT_PTR_NOT_NULL_FATAL(h);
    seen s;
    seen_init(&s);
    az_hub_sub *sub = NULL;
    CU_ASSERT_EQUAL_FATAL(az_hub_subscribe(h, AZ_HUB_CHANNEL_AGENTS "w", on_event, &s, 5000, &sub, msg),
                          AZ_OK);
    publish(AZ_HUB_CHANNEL_AGENTS "w", 1, "a");
    CU_ASSERT_EQUAL(wait_for(&s, &s.events, 1, 5000), 1);
    CU_ASSERT_EQUAL(get(&s, &s.gaps), 0);

    stop_server();
    /* The loss is a gap at once... */
    CU_ASSERT_EQUAL(wait_for(&s, &s.gaps, 1, 5000), 1);
    /* ...a new subscription cannot be confirmed while Redis is down... */
    seen other;
    seen_init(&other);
    az_hub_sub *late = NULL;
    CU_ASSERT_EQUAL(az_hub_subscribe(h, AZ_HUB_CHANNEL_AGENTS "x", on_event, &other, 300, &late, msg),
                    AZ_ERR_UNAVAILABLE);
    CU_ASSERT_PTR_NULL(late);
    /* ...and once Redis is back and the channel resubscribed, another gap, then messages. */
    start_server();
    CU_ASSERT_EQUAL(wait_for(&s, &s.gaps, 2, 10000), 2);
    CU_ASSERT_EQUAL(publish(AZ_HUB_CHANNEL_AGENTS "w", 2, "a"), 1);
    CU_ASSERT_EQUAL(wait_for(&s, &s.events, 2, 5000), 2);
    CU_ASSERT_EQUAL(s.last_seq, 2);
    CU_ASSERT_EQUAL(az_hub_subscribe(h, AZ_HUB_CHANNEL_AGENTS "x", on_event, &other, 5000, &late, msg),
                    AZ_OK);
    CU_ASSERT_EQUAL(publish(AZ_HUB_CHANNEL_AGENTS "x", 5, "b"), 1);
    CU_ASSERT_EQUAL(wait_for(&other, &other.events, 1, 5000), 1);
    az_hub_unsubscribe(late);
    az_hub_unsubscribe(sub);
    az_hub_free(h);
    seen_free(&s);
    seen_free(&other);
}

/* A hub started while Redis is down connects when it comes up. */
static void test_start_before_redis(void)
{
    stop_server();
    char msg[AZ_MSG_MAX];
    az_hub *h = az_hub_new(url, msg);
    CU_ASSERT_PTR_NOT_NULL_FATAL(h);
    usleep(200 * 1000);
    start_server();
    seen s;
    seen_init(&s);
    az_hub_sub *sub = NULL;
    CU_ASSERT_EQUAL_FATAL(az_hub_subscribe(h, AZ_HUB_CHANNEL_RUN "late", on_event, &s, 10000, &sub, msg),
                          AZ_OK);
    CU_ASSERT_EQUAL(publish(AZ_HUB_CHANNEL_RUN "late", 3, "l"), 1);
    CU_ASSERT_EQUAL(wait_for(&s, &s.events, 1, 5000), 1);
    az_hub_unsubscribe(sub);
    az_hub_free(h);
    seen_free(&s);
    /* A malformed URL is refused at once. */
    CU_ASSERT_PTR_NULL(az_hub_new("http://nope", msg));
}

int main(void)
{
    az_log_set_level(AZ_LOG_ERROR);
    snprintf(dir, sizeof dir, "/tmp/azhub.XXXXXX");
    if (!mkdtemp(dir)) return 1;
    snprintf(sock, sizeof sock, "%s/redis.sock", dir);
    snprintf(url, sizeof url, "unix://%s", sock);
    if (CU_initialize_registry() != CUE_SUCCESS) return 1;
    CU_pSuite s = CU_add_suite("hub", NULL, NULL);
    CU_add_test(s, "subscribe, deliver, unsubscribe", test_subscribe_deliver);
    CU_add_test(s, "many subscribers on one channel", test_many_subscribers);
    CU_add_test(s, "redis restart: gap, resubscribe, flow", test_redis_restart);
    CU_add_test(s, "hub started before redis", test_start_before_redis);
    if (spawn_server() != 0) {
        fprintf(stderr, "cannot start redis-server\n");
        return 1;
    }
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    unsigned failed = CU_get_number_of_failures();
    CU_cleanup_registry();
    stop_server();
    rmdir(dir);
    return failed ? 1 : 0;
}
