/* CUnit suite for server/event/watch without gRPC: a recording sink stands in for the call,
 * against the embedded PostgreSQL and Redis with the real outbox, relay and hub. Replay then
 * live without gap or duplicate, resume, the terminal end, a stray sequence, paced replay, slow
 * consumers, heartbeats, WatchAgents filters, validation, shutdown. */
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
#include "event/hub.h"
#include "event/outbox.h"
#include "event/relay.h"
#include "event/watch.h"
#include "store/migrate.h"
#include "store/pgpool.h"
#include "store/redis.h"
#include "task/task.h"

#define LIMIT 32
#define REC_MAX 512

static char dir[64];
static az_embed *embed;
static az_pg *pg;
static az_hub *hub;
static az_relay *relay;
static az_watch *watch;
static az_arena *arena;
static char msg[AZ_MSG_MAX];
static const az_ctx ctx = {.workspace_id = AZ_DEFAULT_WORKSPACE, .principal = "", .request_id = "w",
                           .deadline_ms = -1};

/* ---------------------------------------------------------------- the recording sink */

typedef struct rec {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    Agentz__V1__Event *ev[REC_MAX];
    int n;
    int finished;
    az_err code;
    char fin[256];
    int queued; /* what queued() reports: a consumer's backlog */
    int released;
} rec;

static void rec_init(rec *r)
{
    memset(r, 0, sizeof *r);
    pthread_mutex_init(&r->mu, NULL);
    pthread_cond_init(&r->cv, NULL);
}

static void rec_free(rec *r)
{
    for (int i = 0; i < r->n; i++) agentz__v1__event__free_unpacked(r->ev[i], NULL);
    pthread_mutex_destroy(&r->mu);
    pthread_cond_destroy(&r->cv);
}

static az_err rec_send(void *arg, const Agentz__V1__Event *ev)
{
    rec *r = arg;
    uint8_t buf[8192];
    size_t len = protobuf_c_message_get_packed_size(&ev->base);
    CU_ASSERT_FATAL(len <= sizeof buf);
    protobuf_c_message_pack(&ev->base, buf);
    pthread_mutex_lock(&r->mu);
    CU_ASSERT(!r->finished); /* nothing after the end */
    if (r->n < REC_MAX) r->ev[r->n++] = agentz__v1__event__unpack(NULL, len, buf);
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
    return AZ_OK;
}

static int rec_queued(void *arg)
{
    rec *r = arg;
    pthread_mutex_lock(&r->mu);
    int q = r->queued;
    pthread_mutex_unlock(&r->mu);
    return q;
}

static void rec_finish(void *arg, az_err code, const char *m)
{
    rec *r = arg;
    pthread_mutex_lock(&r->mu);
    CU_ASSERT_EQUAL(r->finished, 0); /* at most once */
    r->finished = 1;
    r->code = code;
    snprintf(r->fin, sizeof r->fin, "%s", m ? m : "");
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
}

static void rec_release(void *arg)
{
    rec *r = arg;
    pthread_mutex_lock(&r->mu);
    r->released++;
    pthread_mutex_unlock(&r->mu);
}

static az_watch_sink sink_of(rec *r)
{
    return (az_watch_sink){.send = rec_send, .queued = rec_queued, .finish = rec_finish,
                           .release = rec_release, .arg = r};
}

static void set_queued(rec *r, int q)
{
    pthread_mutex_lock(&r->mu);
    r->queued = q;
    pthread_mutex_unlock(&r->mu);
}

/* Durable events recorded so far. */
static int durable(rec *r)
{
    pthread_mutex_lock(&r->mu);
    int d = 0;
    for (int i = 0; i < r->n; i++) d += r->ev[i]->sequence > 0;
    pthread_mutex_unlock(&r->mu);
    return d;
}

static int64_t deadline_after(int ms) { return az_now_ms() + ms; }

/* Waits until at least `want` durable events arrived (or ms passed); returns the count. */
static int wait_durable(rec *r, int want, int ms)
{
    int64_t until = deadline_after(ms);
    int d;
    while ((d = durable(r)) < want && az_now_ms() < until) usleep(5000);
    return d;
}

static int wait_finished(rec *r, int ms)
{
    int64_t until = deadline_after(ms);
    for (;;) {
        pthread_mutex_lock(&r->mu);
        int f = r->finished;
        pthread_mutex_unlock(&r->mu);
        if (f || az_now_ms() >= until) return f;
        usleep(5000);
    }
}

/* The durable sequences must be first, first+1, ... with no gap or duplicate. */
static void check_contiguous(rec *r, int64_t first)
{
    pthread_mutex_lock(&r->mu);
    int64_t want = first;
    for (int i = 0; i < r->n; i++) {
        if (r->ev[i]->sequence == 0) continue;
        CU_ASSERT_EQUAL(r->ev[i]->sequence, want);
        if (r->ev[i]->sequence != want)
            fprintf(stderr, "\n  event %d: sequence %lld, want %lld\n", i,
                    (long long)r->ev[i]->sequence, (long long)want);
        want = r->ev[i]->sequence + 1;
    }
    pthread_mutex_unlock(&r->mu);
}

/* ---------------------------------------------------------------- fixtures */

static Agentz__V1__Task *new_task(void)
{
    Agentz__V1__Task t = AGENTZ__V1__TASK__INIT, *out = NULL;
    t.description = "watch work";
    t.agent_id = "0c0c0c0c-0000-4000-8000-000000000001";
    char id[37];
    CU_ASSERT_EQUAL_FATAL(az_text_uuid4(id), AZ_OK);
    t.id = id;
    az_task_ready ready = {.arena = arena};
    az_pgconn *c;
    CU_ASSERT_EQUAL_FATAL(az_pg_acquire(pg, &ctx, &c, msg), AZ_OK);
    CU_ASSERT_EQUAL_FATAL(az_pg_begin(c, &ctx, msg), AZ_OK);
    CU_ASSERT_EQUAL_FATAL(az_task_insert(c, &ctx, &t, NULL, arena, &out, &ready, msg), AZ_OK);
    CU_ASSERT_EQUAL_FATAL(az_pg_commit(c, &ctx, msg), AZ_OK);
    az_pg_release(c);
    return out;
}

/* Appends a Progress event of task id (stored, numbered, published by the relay). */
static void progress(const char *task_id, double fraction)
{
    Agentz__V1__Progress p = AGENTZ__V1__PROGRESS__INIT;
    p.fraction = fraction;
    p.message = "working";
    Agentz__V1__Event ev = AGENTZ__V1__EVENT__INIT;
    ev.task_id = (char *)task_id;
    ev.payload_case = AGENTZ__V1__EVENT__PAYLOAD_PROGRESS;
    ev.progress = &p;
    az_pgconn *c;
    CU_ASSERT_EQUAL_FATAL(az_pg_acquire(pg, &ctx, &c, msg), AZ_OK);
    CU_ASSERT_EQUAL_FATAL(az_pg_begin(c, &ctx, msg), AZ_OK);
    CU_ASSERT_EQUAL_FATAL(az_outbox_append(c, &ctx, &ev, NULL, 0, msg), AZ_OK);
    CU_ASSERT_EQUAL_FATAL(az_pg_commit(c, &ctx, msg), AZ_OK);
    az_pg_release(c);
}

static void agent_event(const char *agent_id, int from, int to)
{
    Agentz__V1__AgentStatusChanged ch = AGENTZ__V1__AGENT_STATUS_CHANGED__INIT;
    ch.from = from;
    ch.to = to;
    Agentz__V1__Event ev = AGENTZ__V1__EVENT__INIT;
    ev.agent_id = (char *)agent_id;
    ev.payload_case = AGENTZ__V1__EVENT__PAYLOAD_AGENT_STATUS;
    ev.agent_status = &ch;
    az_pgconn *c;
    CU_ASSERT_EQUAL_FATAL(az_pg_acquire(pg, &ctx, &c, msg), AZ_OK);
    CU_ASSERT_EQUAL_FATAL(az_pg_begin(c, &ctx, msg), AZ_OK);
    CU_ASSERT_EQUAL_FATAL(az_outbox_append(c, &ctx, &ev, NULL, 0, msg), AZ_OK);
    CU_ASSERT_EQUAL_FATAL(az_pg_commit(c, &ctx, msg), AZ_OK);
    az_pg_release(c);
}

/* Publishes ev on channel directly (what a worker does with ephemeral events). */
static void publish(const char *channel, const Agentz__V1__Event *ev)
{
    az_redis *r = NULL;
    CU_ASSERT_EQUAL_FATAL(az_redis_new(az_embed_redis_url(embed), 5000, &r, msg), AZ_OK);
    uint8_t buf[1024];
    size_t len = agentz__v1__event__pack(ev, buf);
    const char *argv[3] = {"PUBLISH", channel, (const char *)buf};
    size_t lens[3] = {7, strlen(channel), len};
    redisReply *rep = NULL;
    CU_ASSERT_EQUAL(az_redis_command(r, 3, argv, lens, &rep, msg), AZ_OK);
    freeReplyObject(rep);
    az_redis_free(r);
}

static int64_t stored_count(az_event_scope scope, const char *id)
{
    Agentz__V1__Event **v = NULL;
    size_t n = 0;
    CU_ASSERT_EQUAL_FATAL(az_outbox_list(pg, &ctx, scope, id, 0, 1000, arena, &v, &n, msg), AZ_OK);
    return (int64_t)n;
}

static az_watch_stream *open_task(rec *r, const char *id, int64_t after, int tokens)
{
    az_watch_request q = {.kind = AZ_WATCH_TASK, .id = id, .after_sequence = after,
                          .include_tokens = tokens};
    az_watch_sink sk = sink_of(r);
    az_watch_stream *s = NULL;
    CU_ASSERT_EQUAL_FATAL(az_watch_open(watch, &ctx, &q, &sk, &s, msg), AZ_OK);
    return s;
}

/* ---------------------------------------------------------------- tests */

static void test_validation(void)
{
    rec r;
    rec_init(&r);
    az_watch_sink sk = sink_of(&r);
    az_watch_stream *s = NULL;
    az_watch_request q = {.kind = AZ_WATCH_TASK, .id = "0d0d0d0d-0000-4000-8000-0000000000aa"};
    CU_ASSERT_EQUAL(az_watch_open(watch, &ctx, &q, &sk, &s, msg), AZ_ERR_NOT_FOUND);
    q.kind = AZ_WATCH_RUN;
    CU_ASSERT_EQUAL(az_watch_open(watch, &ctx, &q, &sk, &s, msg), AZ_ERR_NOT_FOUND);
    q.id = "nope";
    CU_ASSERT_EQUAL(az_watch_open(watch, &ctx, &q, &sk, &s, msg), AZ_ERR_INVALID);
    CU_ASSERT_PTR_NOT_NULL(strstr(msg, "run_id"));
    q.id = "0d0d0d0d-0000-4000-8000-0000000000aa";
    q.after_sequence = -1;
    CU_ASSERT_EQUAL(az_watch_open(watch, &ctx, &q, &sk, &s, msg), AZ_ERR_INVALID);
    CU_ASSERT_PTR_NOT_NULL(strstr(msg, "after_sequence"));
    CU_ASSERT_PTR_NULL(s);
    usleep(50 * 1000);
    /* A refused open leaves the sink alone. */
    CU_ASSERT_EQUAL(r.n, 0);
    CU_ASSERT_EQUAL(r.finished, 0);
    CU_ASSERT_EQUAL(r.released, 0);
    CU_ASSERT_EQUAL(az_watch_count(watch), 0);
    az_watch_close(NULL);
    rec_free(&r);
}

static void test_replay_then_live(void)
{
    Agentz__V1__Task *t = new_task(); /* event 1: created (queued) */
    progress(t->id, 0.1);             /* 2 */
    progress(t->id, 0.2);             /* 3 */
    rec r;
    rec_init(&r);
    az_watch_stream *s = open_task(&r, t->id, 0, 0);
    CU_ASSERT_EQUAL(az_watch_count(watch), 1);
    CU_ASSERT_EQUAL(wait_durable(&r, 3, 5000), 3);
    /* Live now: appended events arrive in order, once, while the relay may republish. */
    for (int i = 0; i < 20; i++) progress(t->id, 0.3 + i * 0.01);
    CU_ASSERT_EQUAL(wait_durable(&r, 23, 5000), 23);
    CU_ASSERT_EQUAL(wait_finished(&r, 50), 0);
    /* The terminal status ends the stream with OK right after it. */
    Agentz__V1__Task *out;
    CU_ASSERT_EQUAL_FATAL(az_task_cancel(pg, &ctx, t->id, "enough", arena, &out, NULL, msg), AZ_OK);
    CU_ASSERT_EQUAL(wait_finished(&r, 5000), 1);
    CU_ASSERT_EQUAL(r.code, AZ_OK);
    int64_t total = stored_count(AZ_EVENT_SCOPE_TASK, t->id);
    CU_ASSERT_EQUAL(durable(&r), total);
    check_contiguous(&r, 1);
    pthread_mutex_lock(&r.mu);
    Agentz__V1__Event *last = r.ev[r.n - 1];
    CU_ASSERT_EQUAL(last->payload_case, AGENTZ__V1__EVENT__PAYLOAD_TASK_STATUS);
    CU_ASSERT_EQUAL(last->task_status->to, AGENTZ__V1__TASK_STATUS__TASK_STATUS_CANCELLED);
    pthread_mutex_unlock(&r.mu);
    az_watch_close(s);
    CU_ASSERT_EQUAL(az_watch_count(watch), 0);
    usleep(50 * 1000);
    CU_ASSERT_EQUAL(r.released, 1);

    /* Resuming a finished task from the middle: the rest of the history, then OK. */
    for (int64_t after = 0; after <= total; after += 7) {
        rec r2;
        rec_init(&r2);
        az_watch_stream *s2 = open_task(&r2, t->id, after, 0);
        CU_ASSERT_EQUAL(wait_finished(&r2, 5000), 1);
        CU_ASSERT_EQUAL(r2.code, AZ_OK);
        CU_ASSERT_EQUAL(durable(&r2), total - after);
        check_contiguous(&r2, after + 1);
        az_watch_close(s2);
        rec_free(&r2);
    }
    /* Past the end of a finished task: nothing, then OK. */
    rec r3;
    rec_init(&r3);
    az_watch_stream *s3 = open_task(&r3, t->id, total + 5, 0);
    CU_ASSERT_EQUAL(wait_finished(&r3, 5000), 1);
    CU_ASSERT_EQUAL(r3.code, AZ_OK);
    CU_ASSERT_EQUAL(durable(&r3), 0);
    az_watch_close(s3);
    rec_free(&r3);
    rec_free(&r);
}

/* Ephemeral events: token deltas only with include_tokens, in place; a stray sequence far ahead
 * (nothing stored under it) neither stalls the stream nor reaches the client. */
static void test_ephemeral_and_stray(void)
{
    Agentz__V1__Task *t = new_task();
    rec plain, tok;
    rec_init(&plain);
    rec_init(&tok);
    az_watch_stream *a = open_task(&plain, t->id, 0, 0);
    az_watch_stream *b = open_task(&tok, t->id, 0, 1);
    CU_ASSERT_EQUAL(wait_durable(&plain, 1, 5000), 1);
    CU_ASSERT_EQUAL(wait_durable(&tok, 1, 5000), 1);
    char channel[128];
    snprintf(channel, sizeof channel, AZ_HUB_CHANNEL_TASK "%s", t->id);
    Agentz__V1__TokenDelta td = AGENTZ__V1__TOKEN_DELTA__INIT;
    td.text = "hello";
    td.attempt = 1;
    Agentz__V1__Event ev = AGENTZ__V1__EVENT__INIT;
    ev.task_id = t->id;
    ev.payload_case = AGENTZ__V1__EVENT__PAYLOAD_TOKEN;
    ev.token = &td;
    publish(channel, &ev);
    /* A stray durable-looking message with no stored event behind it. */
    Agentz__V1__Progress p = AGENTZ__V1__PROGRESS__INIT;
    Agentz__V1__Event stray = AGENTZ__V1__EVENT__INIT;
    stray.sequence = 99;
    stray.task_id = t->id;
    stray.payload_case = AGENTZ__V1__EVENT__PAYLOAD_PROGRESS;
    stray.progress = &p;
    publish(channel, &stray);
    usleep(100 * 1000);
    progress(t->id, 0.5); /* 2 */
    CU_ASSERT_EQUAL(wait_durable(&plain, 2, 5000), 2);
    CU_ASSERT_EQUAL(wait_durable(&tok, 2, 5000), 2);
    check_contiguous(&plain, 1);
    check_contiguous(&tok, 1);
    pthread_mutex_lock(&tok.mu);
    int tokens = 0;
    for (int i = 0; i < tok.n; i++) {
        tokens += tok.ev[i]->payload_case == AGENTZ__V1__EVENT__PAYLOAD_TOKEN;
        CU_ASSERT_NOT_EQUAL(tok.ev[i]->sequence, 99);
    }
    CU_ASSERT_EQUAL(tokens, 1);
    CU_ASSERT_EQUAL(tok.ev[1]->payload_case, AGENTZ__V1__EVENT__PAYLOAD_TOKEN); /* in place */
    pthread_mutex_unlock(&tok.mu);
    pthread_mutex_lock(&plain.mu);
    for (int i = 0; i < plain.n; i++)
        CU_ASSERT_NOT_EQUAL(plain.ev[i]->payload_case, AGENTZ__V1__EVENT__PAYLOAD_TOKEN);
    pthread_mutex_unlock(&plain.mu);
    az_watch_close(a);
    az_watch_close(b);
    rec_free(&plain);
    rec_free(&tok);
}

/* Replay waits while the consumer's queue is over half full; live events that find it full end
 * the stream with RESOURCE_EXHAUSTED naming the sequence to resume from. */
static void test_pacing_and_slow_consumer(void)
{
    Agentz__V1__Task *t = new_task();
    for (int i = 0; i < 9; i++) progress(t->id, i / 10.0); /* 1..10 stored */
    rec r;
    rec_init(&r);
    r.queued = LIMIT / 2 + 1;
    az_watch_stream *s = open_task(&r, t->id, 0, 0);
    usleep(200 * 1000);
    CU_ASSERT_EQUAL(durable(&r), 0); /* paced: nothing while the queue is too full */
    set_queued(&r, 0);
    CU_ASSERT_EQUAL(wait_durable(&r, 10, 5000), 10);
    check_contiguous(&r, 1);
    set_queued(&r, LIMIT);
    progress(t->id, 0.95); /* 11: finds the queue full */
    CU_ASSERT_EQUAL(wait_finished(&r, 5000), 1);
    CU_ASSERT_EQUAL(r.code, AZ_ERR_EXHAUSTED);
    CU_ASSERT_PTR_NOT_NULL(strstr(r.fin, "resume with after_sequence = 10"));
    CU_ASSERT_EQUAL(durable(&r), 10);
    az_watch_close(s);
    rec_free(&r);
}

static void test_heartbeat(void)
{
    Agentz__V1__Task *t = new_task();
    rec r;
    rec_init(&r);
    az_watch_stream *s = open_task(&r, t->id, 0, 0);
    CU_ASSERT_EQUAL(wait_durable(&r, 1, 5000), 1);
    int64_t until = deadline_after(3000);
    int beats = 0;
    while (beats < 2 && az_now_ms() < until) {
        usleep(20 * 1000);
        pthread_mutex_lock(&r.mu);
        beats = 0;
        for (int i = 0; i < r.n; i++)
            beats += r.ev[i]->payload_case == AGENTZ__V1__EVENT__PAYLOAD_HEARTBEAT &&
                     r.ev[i]->sequence == 0 && r.ev[i]->time && r.ev[i]->time->seconds > 0;
        pthread_mutex_unlock(&r.mu);
    }
    CU_ASSERT(beats >= 2);
    /* No heartbeat while messages are still queued: they are traffic already. */
    set_queued(&r, 1);
    pthread_mutex_lock(&r.mu);
    int n0 = r.n;
    pthread_mutex_unlock(&r.mu);
    usleep(800 * 1000);
    pthread_mutex_lock(&r.mu);
    CU_ASSERT_EQUAL(r.n, n0);
    pthread_mutex_unlock(&r.mu);
    az_watch_close(s);
    rec_free(&r);
}

static void test_agents(void)
{
    const char *a = "0a0a0a0a-0000-4000-8000-0000000000a1", *b = "0a0a0a0a-0000-4000-8000-0000000000b2";
    rec only_new, only_a;
    rec_init(&only_new);
    rec_init(&only_a);
    agent_event(b, 0, 1); /* history before the streams: after_sequence 0 means "only new" */
    /* "New" is what the hub delivers after the watch began: let the relay publish that one. */
    usleep(300 * 1000);
    az_watch_request q = {.kind = AZ_WATCH_AGENTS};
    az_watch_sink sk = sink_of(&only_new);
    az_watch_stream *s1 = NULL, *s2 = NULL;
    CU_ASSERT_EQUAL_FATAL(az_watch_open(watch, &ctx, &q, &sk, &s1, msg), AZ_OK);
    agent_event(b, 1, 2);
    agent_event(a, 1, 2);
    agent_event(a, 2, 1);
    CU_ASSERT_EQUAL(wait_durable(&only_new, 3, 5000), 3);
    int64_t end = stored_count(AZ_EVENT_SCOPE_AGENTS, NULL);
    check_contiguous(&only_new, end - 2); /* only new ones, in order */

    /* Replay from before those three, only agent a. */
    const char *ids[1] = {a};
    q.after_sequence = end - 3;
    q.agent_ids = ids;
    q.n_agent_ids = 1;
    sk = sink_of(&only_a);
    CU_ASSERT_EQUAL_FATAL(az_watch_open(watch, &ctx, &q, &sk, &s2, msg), AZ_OK);
    CU_ASSERT_EQUAL(wait_durable(&only_a, 2, 5000), 2);
    agent_event(b, 2, 1);
    agent_event(a, 1, 2);
    CU_ASSERT_EQUAL(wait_durable(&only_a, 3, 5000), 3);
    usleep(100 * 1000);
    pthread_mutex_lock(&only_a.mu);
    for (int i = 0; i < only_a.n; i++)
        if (only_a.ev[i]->sequence) CU_ASSERT_STRING_EQUAL(only_a.ev[i]->agent_id, a);
    CU_ASSERT_EQUAL(only_a.finished, 0); /* WatchAgents never ends by itself */
    pthread_mutex_unlock(&only_a.mu);
    CU_ASSERT_EQUAL(durable(&only_a), 3);
    CU_ASSERT_EQUAL(wait_durable(&only_new, 5, 5000), 5);
    az_watch_close(s1);
    az_watch_close(s2);
    rec_free(&only_new);
    rec_free(&only_a);
}

/* Many streams on one task: one hub channel, everyone gets everything. */
static void test_many_streams(void)
{
    enum { N = 100 };
    Agentz__V1__Task *t = new_task();
    static rec r[N];
    az_watch_stream *s[N];
    for (int i = 0; i < N; i++) {
        rec_init(&r[i]);
        s[i] = open_task(&r[i], t->id, 0, 0);
    }
    az_hub_stats st;
    az_hub_get_stats(hub, &st);
    CU_ASSERT_EQUAL(st.channels, 1);
    CU_ASSERT_EQUAL(st.subscribers, N);
    for (int k = 0; k < 10; k++) progress(t->id, k / 10.0);
    Agentz__V1__Task *out;
    CU_ASSERT_EQUAL_FATAL(az_task_cancel(pg, &ctx, t->id, "", arena, &out, NULL, msg), AZ_OK);
    int64_t total = stored_count(AZ_EVENT_SCOPE_TASK, t->id);
    for (int i = 0; i < N; i++) {
        CU_ASSERT_EQUAL(wait_finished(&r[i], 10000), 1);
        CU_ASSERT_EQUAL(r[i].code, AZ_OK);
        CU_ASSERT_EQUAL(durable(&r[i]), total);
        check_contiguous(&r[i], 1);
        az_watch_close(s[i]);
        rec_free(&r[i]);
    }
}

static void test_shutdown(void)
{
    Agentz__V1__Task *t = new_task();
    progress(t->id, 0.5);
    rec r;
    rec_init(&r);
    az_watch_stream *s = open_task(&r, t->id, 0, 0);
    CU_ASSERT_EQUAL(wait_durable(&r, 2, 5000), 2);
    az_watch_shutdown(watch);
    CU_ASSERT_EQUAL(wait_finished(&r, 1000), 1);
    CU_ASSERT_EQUAL(r.code, AZ_ERR_UNAVAILABLE);
    CU_ASSERT_STRING_EQUAL(r.fin, "server shutting down; resume with after_sequence = 2");
    /* Nothing after the end, and no new streams. */
    progress(t->id, 0.6);
    usleep(200 * 1000);
    CU_ASSERT_EQUAL(durable(&r), 2);
    rec r2;
    rec_init(&r2);
    az_watch_sink sk = sink_of(&r2);
    az_watch_request q = {.kind = AZ_WATCH_TASK, .id = t->id};
    az_watch_stream *s2 = NULL;
    CU_ASSERT_EQUAL(az_watch_open(watch, &ctx, &q, &sk, &s2, msg), AZ_ERR_UNAVAILABLE);
    az_watch_close(s);
    usleep(50 * 1000);
    CU_ASSERT_EQUAL(r.released, 1);
    CU_ASSERT_EQUAL(r2.released, 0);
    rec_free(&r);
    rec_free(&r2);
}

/* ---------------------------------------------------------------- setup */

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    remove(path);
    return 0;
}

static int suite_init(void)
{
    az_log_set_level(AZ_LOG_ERROR);
    snprintf(dir, sizeof dir, "/tmp/aztest-watch-XXXXXX");
    if (!mkdtemp(dir) || chmod(dir, 0755) != 0) return -1;
    if (az_embed_start(dir, &embed, msg) != AZ_OK) {
        fprintf(stderr, "cannot start embedded servers: %s\n", msg);
        return -1;
    }
    if (az_pg_new(az_embed_database_url(embed), 8, 30000, &pg, msg) != AZ_OK ||
        az_migrate(pg, az_migrations, az_migrations_count, NULL, msg) != AZ_OK ||
        az_pg_set_role(pg, "agentz_app", msg) != AZ_OK) {
        fprintf(stderr, "cannot prepare the database: %s\n", msg);
        return -1;
    }
    hub = az_hub_new(az_embed_redis_url(embed), msg);
    if (!hub || az_relay_new(az_embed_database_url(embed), "agentz_app", az_embed_redis_url(embed),
                             &relay, msg) != AZ_OK) {
        fprintf(stderr, "cannot start the hub and relay: %s\n", msg);
        return -1;
    }
    az_watch_config cfg = {.pg = pg, .hub = hub, .heartbeat_ms = 300, .queue_limit = LIMIT};
    if (az_watch_new(&cfg, &watch, msg) != AZ_OK) {
        fprintf(stderr, "cannot start the watch engine: %s\n", msg);
        return -1;
    }
    arena = az_arena_new(0);
    return arena ? 0 : -1;
}

static int suite_clean(void)
{
    az_watch_free(watch);
    az_relay_free(relay);
    az_hub_free(hub);
    az_arena_free(arena);
    az_pg_free(pg);
    az_embed_stop(embed);
    nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    return 0;
}

int main(void)
{
    if (CU_initialize_registry() != CUE_SUCCESS) return 1;
    CU_pSuite s = CU_add_suite("watch", suite_init, suite_clean);
    CU_add_test(s, "validation, NOT_FOUND", test_validation);
    CU_add_test(s, "replay then live, terminal end, resume", test_replay_then_live);
    CU_add_test(s, "ephemeral events and a stray sequence", test_ephemeral_and_stray);
    CU_add_test(s, "paced replay, slow consumer", test_pacing_and_slow_consumer);
    CU_add_test(s, "heartbeats", test_heartbeat);
    CU_add_test(s, "WatchAgents: only new, replay, agent filter", test_agents);
    CU_add_test(s, "100 streams on one task", test_many_streams);
    CU_add_test(s, "shutdown (last)", test_shutdown);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    unsigned failed = CU_get_number_of_failures() + CU_get_number_of_tests_failed();
    if (CU_get_number_of_suites_failed()) failed++;
    CU_cleanup_registry();
    return failed ? 1 : 0;
}
