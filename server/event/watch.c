/* The watch engine behind WatchRun, WatchTask and WatchAgents: per stream, subscribe first, replay
 * the outbox after the client's sequence, then deliver live events from the hub, re-reading the
 * outbox whenever a live sequence skips ahead, so the client sees every stored event of its
 * scope once and in order. Per-stream state is a small struct; the work happens on a few shared
 * threads (catch-up readers, one timer). */
#include "watch.h"

#include <errno.h>
#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "agent/agent.h"
#include "core/arena.h"
#include "core/log.h"
#include "event/outbox.h"
#include "google/protobuf/timestamp.pb-c.h"
#include "task/metrics.h"
#include "task/task.h"
#include "workflow/run.h"

#define PAGE_MAX 1000
#define SUBSCRIBE_TIMEOUT_MS 5000
#define EPH_MAX 256                /* ephemeral events held while the outbox is replayed */
#define EPH_BYTES_MAX (256 * 1024)
#define AGENT_CACHE_MAX 1024       /* label-selector verdicts remembered per stream */
#define DEFER_MS 10                /* retry a paced replay this much later */
#define TICK_MS 250                /* heartbeat and metrics scan */
#define METRICS_WINDOW_US (24LL * 3600 * 1000000)
#define ARENA_LIMIT (64u << 20)

/* Work state of a stream, under work_mu. */
enum { W_IDLE = 0, W_QUEUED, W_RUNNING, W_AGAIN, W_DEFERRED };

/* An ephemeral event that arrived during a replay, packed; sent once the durable events up to
 * `after` have gone out, so the live order is kept. */
typedef struct eph {
    struct eph *next;
    int64_t after;
    size_t len;
    uint8_t data[];
} eph;

typedef struct agent_verdict {
    char id[37];
    signed char match;
} agent_verdict;

struct az_watch_stream {
    az_watch_stream *prev, *next; /* w->streams (w->mu) */
    az_watch_stream *wnext;       /* work queue or deferred list (w->work_mu) */
    az_watch *w;
    _Atomic int refs;
    az_watch_sink sink;
    az_watch_kind kind;
    az_event_scope scope;
    char id[37], workspace[37];
    unsigned include_tokens : 1, include_metrics : 1;

    /* work_mu */
    int work;
    int64_t not_before;

    pthread_mutex_t mu; /* everything below */
    int closed, finished, in_list;
    int catching_up; /* the catch-up thread owns durable delivery */
    int initial;     /* the first replay has not finished */
    int was_terminal;
    int baseline;    /* AGENTS from "now": last is unknown until the first live event */
    int metrics_due;
    unsigned gapgen; /* bumped by every hub gap */
    int64_t last;    /* last durable sequence delivered or filtered out */
    int64_t live_max;
    int64_t last_send_ms, next_metrics_ms;
    eph *eph_head, *eph_tail;
    int n_eph;
    size_t eph_bytes;
    uint64_t eph_dropped;
    agent_verdict *cache;
    size_t n_cache;

    /* immutable after open */
    char **agent_ids;
    size_t n_agent_ids;
    char *labels_json;
    char **lkeys, **lvals;
    size_t n_labels;
    az_hub_sub **subs;
    size_t nsubs;
};

struct az_watch {
    az_watch_config cfg;
    pthread_mutex_t mu; /* streams list, shutting_down */
    az_watch_stream *streams;
    size_t nstreams;
    int shutting_down;

    pthread_mutex_t work_mu;
    pthread_cond_t work_cv;  /* work queued, or stop */
    pthread_cond_t timer_cv; /* timer wake-ups (stop) */
    az_watch_stream *qhead, *qtail, *deferred;
    int stop;
    pthread_t *workers;
    int nworkers;
    pthread_t timer;
    int timer_started;
};

/* ---------------------------------------------------------------- helpers */

static void set_now(Google__Protobuf__Timestamp *ts)
{
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    ts->seconds = now.tv_sec;
    ts->nanos = (int32_t)now.tv_nsec;
}

static int64_t wall_us(void)
{
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    return (int64_t)now.tv_sec * 1000000 + now.tv_nsec / 1000;
}

static void stream_ref(az_watch_stream *s) { atomic_fetch_add(&s->refs, 1); }

static void stream_unref(az_watch_stream *s)
{
    if (atomic_fetch_sub(&s->refs, 1) != 1) return;
    for (eph *e = s->eph_head, *n; e; e = n) {
        n = e->next;
        free(e);
    }
    for (size_t i = 0; i < s->n_agent_ids; i++) free(s->agent_ids[i]);
    free(s->agent_ids);
    for (size_t i = 0; i < s->n_labels; i++) {
        free(s->lkeys[i]);
        free(s->lvals[i]);
    }
    free(s->lkeys);
    free(s->lvals);
    free(s->labels_json);
    free(s->cache);
    free(s->subs);
    pthread_mutex_destroy(&s->mu);
    if (s->sink.release) s->sink.release(s->sink.arg);
    free(s);
}

static int is_terminal(const az_watch_stream *s, const Agentz__V1__Event *ev)
{
    if (s->kind == AZ_WATCH_RUN && ev->payload_case == AGENTZ__V1__EVENT__PAYLOAD_RUN_STATUS &&
        (!ev->task_id || !*ev->task_id) && ev->run_status) {
        Agentz__V1__RunStatus to = ev->run_status->to;
        return to == AGENTZ__V1__RUN_STATUS__RUN_STATUS_SUCCEEDED ||
               to == AGENTZ__V1__RUN_STATUS__RUN_STATUS_FAILED ||
               to == AGENTZ__V1__RUN_STATUS__RUN_STATUS_CANCELLED;
    }
    if (s->kind == AZ_WATCH_TASK && ev->payload_case == AGENTZ__V1__EVENT__PAYLOAD_TASK_STATUS &&
        ev->task_status) {
        Agentz__V1__TaskStatus to = ev->task_status->to;
        return to == AGENTZ__V1__TASK_STATUS__TASK_STATUS_SUCCEEDED ||
               to == AGENTZ__V1__TASK_STATUS__TASK_STATUS_FAILED ||
               to == AGENTZ__V1__TASK_STATUS__TASK_STATUS_CANCELLED;
    }
    return 0;
}

/* The stream's verdict on agent id: 1 match, 0 no match, -1 unknown (needs a lookup). mu held. */
static int verdict_locked(const az_watch_stream *s, const char *id)
{
    for (size_t i = 0; i < s->n_cache; i++)
        if (strcmp(s->cache[i].id, id) == 0) return s->cache[i].match;
    return -1;
}

static void remember_locked(az_watch_stream *s, const char *id, int match)
{
    if (verdict_locked(s, id) >= 0) return;
    if (!s->cache) {
        s->cache = calloc(AGENT_CACHE_MAX, sizeof *s->cache);
        if (!s->cache) return;
    }
    if (s->n_cache == AGENT_CACHE_MAX) s->n_cache = 0; /* forget all: bounded, and rare */
    snprintf(s->cache[s->n_cache].id, sizeof s->cache[0].id, "%s", id);
    s->cache[s->n_cache++].match = (signed char)match;
}

/* Whether ev belongs on this stream. -1: cannot tell yet (an agent the label selector has not
 * seen). mu held. */
static int wanted_locked(const az_watch_stream *s, const Agentz__V1__Event *ev)
{
    switch (s->kind) {
    case AZ_WATCH_TASK:
        return ev->payload_case != AGENTZ__V1__EVENT__PAYLOAD_TOKEN || s->include_tokens;
    case AZ_WATCH_RUN:
        return 1;
    case AZ_WATCH_AGENTS: {
        const char *id = ev->agent_id ? ev->agent_id : "";
        if (s->n_agent_ids) {
            size_t i = 0;
            while (i < s->n_agent_ids && strcmp(s->agent_ids[i], id) != 0) i++;
            if (i == s->n_agent_ids) return 0;
        }
        if (s->n_labels) return *id ? verdict_locked(s, id) : 0;
        return 1;
    }
    }
    return 0;
}

/* ---------------------------------------------------------------- sending (mu held) */

static void finish_locked(az_watch_stream *s, az_err code, const char *msg)
{
    if (s->finished || s->closed) return;
    s->finished = 1;
    s->sink.finish(s->sink.arg, code, msg);
}

/* Queues ev unless the consumer is too far behind, in which case the stream ends with
 * RESOURCE_EXHAUSTED naming the sequence to resume from. 1 when queued. */
static int send_locked(az_watch_stream *s, const Agentz__V1__Event *ev)
{
    if (s->finished || s->closed) return 0;
    if (s->sink.queued(s->sink.arg) >= s->w->cfg.queue_limit) {
        char msg[200];
        snprintf(msg, sizeof msg,
                 "stream consumer too slow: more than %d messages waiting; resume with "
                 "after_sequence = %lld",
                 s->w->cfg.queue_limit, (long long)s->last);
        finish_locked(s, AZ_ERR_EXHAUSTED, msg);
        return 0;
    }
    az_err err = s->sink.send(s->sink.arg, ev);
    if (err != AZ_OK) {
        /* The consumer is gone or the runtime ended the call: nothing more goes out. */
        s->finished = 1;
        return 0;
    }
    s->last_send_ms = az_now_ms();
    return 1;
}

/* A durable event in sequence order: delivered (or filtered out), and the stream ends after a
 * terminal one. */
static void deliver_locked(az_watch_stream *s, const Agentz__V1__Event *ev)
{
    int want = wanted_locked(s, ev);
    if (want > 0 && !send_locked(s, ev)) return;
    s->last = ev->sequence;
    if (want > 0 && is_terminal(s, ev)) finish_locked(s, AZ_OK, NULL);
}

static void send_packed_locked(az_watch_stream *s, const eph *e)
{
    Agentz__V1__Event *ev = agentz__v1__event__unpack(NULL, e->len, e->data);
    if (!ev) return;
    send_locked(s, ev);
    agentz__v1__event__free_unpacked(ev, NULL);
}

/* Sends held ephemeral events that came before durable sequence `before` (all with INT64_MAX). */
static void flush_eph_locked(az_watch_stream *s, int64_t before)
{
    while (s->eph_head && s->eph_head->after < before) {
        eph *e = s->eph_head;
        s->eph_head = e->next;
        if (!s->eph_head) s->eph_tail = NULL;
        s->n_eph--;
        s->eph_bytes -= e->len;
        if (!s->finished && !s->closed) send_packed_locked(s, e);
        free(e);
    }
}

/* An ephemeral event (sequence 0): sent at once when live, held in order during a replay. */
static void ephemeral_locked(az_watch_stream *s, const Agentz__V1__Event *ev)
{
    if (wanted_locked(s, ev) <= 0) return;
    if (!s->catching_up) {
        send_locked(s, ev);
        return;
    }
    size_t len = protobuf_c_message_get_packed_size(&ev->base);
    eph *e = NULL;
    if (s->n_eph < EPH_MAX && s->eph_bytes + len <= EPH_BYTES_MAX) e = malloc(sizeof *e + len);
    if (!e) {
        /* Ephemeral events are best effort; durable ones are never dropped. */
        s->eph_dropped++;
        return;
    }
    e->next = NULL;
    e->after = s->live_max > s->last ? s->live_max : s->last;
    e->len = protobuf_c_message_pack(&ev->base, e->data);
    if (s->eph_tail) s->eph_tail->next = e;
    else s->eph_head = e;
    s->eph_tail = e;
    s->n_eph++;
    s->eph_bytes += len;
}

/* ---------------------------------------------------------------- scheduling */

/* Queues s for a catch-up thread (any thread; takes work_mu, a leaf lock). */
static void schedule(az_watch_stream *s)
{
    az_watch *w = s->w;
    pthread_mutex_lock(&w->work_mu);
    if (s->work == W_IDLE) {
        stream_ref(s);
        s->work = W_QUEUED;
        s->wnext = NULL;
        if (w->qtail) w->qtail->wnext = s;
        else w->qhead = s;
        w->qtail = s;
        pthread_cond_signal(&w->work_cv);
    } else if (s->work == W_RUNNING) {
        s->work = W_AGAIN;
    }
    pthread_mutex_unlock(&w->work_mu);
}

static void start_catchup_locked(az_watch_stream *s)
{
    s->catching_up = 1;
    schedule(s);
}

/* ---------------------------------------------------------------- hub callbacks (hub thread) */

/* The stream's own scope channel: durable events in its numbering, and ephemeral ones. */
static void on_scope_event(void *arg, const Agentz__V1__Event *ev)
{
    az_watch_stream *s = arg;
    pthread_mutex_lock(&s->mu);
    if (s->closed || s->finished) {
        pthread_mutex_unlock(&s->mu);
        return;
    }
    if (!ev) {
        /* Messages may have been missed: the outbox has them. */
        s->gapgen++;
        if (!s->baseline) start_catchup_locked(s);
    } else if (ev->sequence <= 0) {
        ephemeral_locked(s, ev);
    } else {
        if (s->baseline) {
            s->baseline = 0;
            s->last = ev->sequence - 1;
        }
        if (ev->sequence <= s->last) {
            /* already delivered (a replayed event, or the relay publishing twice) */
        } else if (s->catching_up) {
            if (ev->sequence > s->live_max) s->live_max = ev->sequence;
        } else if (ev->sequence > s->last + 1 || wanted_locked(s, ev) < 0) {
            /* A gap (a lost message), or an agent the selector must look up: the catch-up
             * thread reads the outbox from the last sequence and keeps the order. */
            s->live_max = ev->sequence;
            start_catchup_locked(s);
        } else {
            deliver_locked(s, ev);
        }
    }
    pthread_mutex_unlock(&s->mu);
}

/* A task channel followed by a WatchRun for its ephemeral events; its durable events are
 * numbered in the task's scope and reach the run watcher through the run channel. */
static void on_token_event(void *arg, const Agentz__V1__Event *ev)
{
    az_watch_stream *s = arg;
    if (!ev || ev->sequence > 0) return;
    pthread_mutex_lock(&s->mu);
    if (!s->closed && !s->finished) ephemeral_locked(s, ev);
    pthread_mutex_unlock(&s->mu);
}

/* ---------------------------------------------------------------- catch-up (worker threads) */

static void stream_ctx(const az_watch_stream *s, az_ctx *ctx)
{
    memset(ctx, 0, sizeof *ctx);
    ctx->workspace_id = s->workspace;
    ctx->principal = "";
    ctx->request_id = "watch";
    ctx->deadline_ms = -1;
}

static int label_match(const az_watch_stream *s, const Agentz__V1__Agent *a)
{
    for (size_t i = 0; i < s->n_labels; i++) {
        size_t k = 0;
        while (k < a->n_labels && strcmp(a->labels[k]->key, s->lkeys[i]) != 0) k++;
        if (k == a->n_labels || strcmp(a->labels[k]->value, s->lvals[i]) != 0) return 0;
    }
    return 1;
}

/* Looks up the label verdict of every agent in evs the stream has not judged yet. */
static az_err judge_agents(az_watch_stream *s, Agentz__V1__Event **evs, size_t n, az_arena *a,
                           char *msg)
{
    if (s->kind != AZ_WATCH_AGENTS || !s->n_labels) return AZ_OK;
    az_ctx ctx;
    stream_ctx(s, &ctx);
    for (size_t i = 0; i < n; i++) {
        const char *id = evs[i]->agent_id;
        if (!id || !*id) continue;
        pthread_mutex_lock(&s->mu);
        int known = verdict_locked(s, id) >= 0;
        pthread_mutex_unlock(&s->mu);
        if (known) continue;
        Agentz__V1__Agent *agent = NULL;
        az_err err = az_agent_get(s->w->cfg.pg, &ctx, id, a, &agent, msg);
        if (err != AZ_OK && err != AZ_ERR_NOT_FOUND) return err;
        pthread_mutex_lock(&s->mu);
        remember_locked(s, id, err == AZ_OK && label_match(s, agent));
        pthread_mutex_unlock(&s->mu);
    }
    return AZ_OK;
}

/* Replays the outbox from the stream's last sequence until it meets the live events. Returns 1
 * when the consumer's queue is too full to go on now (retry later), else 0. */
static int catch_up(az_watch_stream *s)
{
    az_watch *w = s->w;
    const int limit = w->cfg.queue_limit;
    az_ctx ctx;
    stream_ctx(s, &ctx);
    for (;;) {
        pthread_mutex_lock(&s->mu);
        if (s->closed || s->finished || !s->catching_up) {
            pthread_mutex_unlock(&s->mu);
            return 0;
        }
        int room = limit - s->sink.queued(s->sink.arg);
        /* Replay only into a mostly empty queue: live events need the rest. */
        if (room <= limit / 2) {
            pthread_mutex_unlock(&s->mu);
            return 1;
        }
        int64_t after = s->last, seen = s->live_max;
        unsigned gen = s->gapgen;
        pthread_mutex_unlock(&s->mu);

        int page = room - limit / 4;
        if (page < 1) page = 1;
        if (page > PAGE_MAX) page = PAGE_MAX;
        az_arena *a = az_arena_new(ARENA_LIMIT);
        Agentz__V1__Event **evs = NULL;
        size_t n = 0;
        char msg[AZ_MSG_MAX];
        az_err err = a ? az_outbox_list(w->cfg.pg, &ctx, s->scope, s->id, after, page, a, &evs, &n, msg)
                       : az_fail(msg, AZ_ERR_NOMEM, "out of memory");
        if (err == AZ_OK) err = judge_agents(s, evs, n, a, msg);
        pthread_mutex_lock(&s->mu);
        if (err != AZ_OK) {
            az_warn("cannot replay events of %s %s: %s", s->scope == AZ_EVENT_SCOPE_RUN ? "run"
                    : s->scope == AZ_EVENT_SCOPE_TASK ? "task" : "workspace", s->id, msg);
            char fin[AZ_MSG_MAX];
            snprintf(fin, sizeof fin, "cannot read stored events (%.300s); resume with after_sequence = %lld",
                     msg, (long long)s->last);
            finish_locked(s, AZ_ERR_UNAVAILABLE, fin);
            pthread_mutex_unlock(&s->mu);
            az_arena_free(a);
            return 0;
        }
        for (size_t i = 0; i < n && !s->finished && !s->closed; i++) {
            if (evs[i]->sequence <= s->last) continue;
            flush_eph_locked(s, evs[i]->sequence);
            deliver_locked(s, evs[i]);
        }
        /* A live sequence seen before this read began is committed, so the read has it; if
         * it did not, no such event exists (a stray publish): forget it rather than spin. */
        if ((int)n < page && s->live_max == seen && seen > s->last) s->live_max = s->last;
        int more = (int)n == page || s->live_max > s->last || s->gapgen != gen;
        if (!more && !s->finished && !s->closed) {
            /* Caught up: from here the hub delivers. A run or task that had finished before
             * the watch began ends here even if its terminal event is not stored (history
             * older than the outbox). */
            if (s->initial && s->was_terminal) {
                flush_eph_locked(s, INT64_MAX);
                finish_locked(s, AZ_OK, NULL);
            }
            s->initial = 0;
            s->catching_up = 0;
            flush_eph_locked(s, INT64_MAX);
        }
        int stop = !more || s->finished || s->closed;
        pthread_mutex_unlock(&s->mu);
        az_arena_free(a);
        if (stop) return 0;
    }
}

/* One AgentMetrics event per agent of the stream's filter (at most AZ_WATCH_METRICS_AGENTS_MAX). */
static void send_metrics(az_watch_stream *s)
{
    az_watch *w = s->w;
    az_ctx ctx;
    stream_ctx(s, &ctx);
    az_arena *a = az_arena_new(ARENA_LIMIT);
    if (!a) return;
    char msg[AZ_MSG_MAX];
    const char **ids = NULL;
    size_t n = 0;
    if (s->n_agent_ids) {
        ids = (const char **)s->agent_ids;
        n = s->n_agent_ids < AZ_WATCH_METRICS_AGENTS_MAX ? s->n_agent_ids : AZ_WATCH_METRICS_AGENTS_MAX;
    } else {
        az_agent_query q = {.labels_json = s->labels_json, .page_size = AZ_WATCH_METRICS_AGENTS_MAX,
                            .page_token = ""};
        Agentz__V1__ListAgentsResponse *resp = NULL;
        if (az_agent_list(w->cfg.pg, &ctx, &q, a, &resp, msg) != AZ_OK) {
            az_warn("cannot list agents for watch metrics: %s", msg);
            az_arena_free(a);
            return;
        }
        ids = az_arena_alloc(a, (resp->n_agents + 1) * sizeof *ids);
        for (size_t i = 0; ids && i < resp->n_agents; i++) ids[n++] = resp->agents[i]->id;
    }
    int64_t end = wall_us();
    for (size_t i = 0; i < n; i++) {
        Agentz__V1__AgentMetrics *m = NULL;
        if (az_task_agent_metrics(w->cfg.pg, &ctx, ids[i], end - METRICS_WINDOW_US, end, a, &m, msg) !=
            AZ_OK) {
            az_warn("cannot read metrics of agent %s for a watch: %s", ids[i], msg);
            continue;
        }
        Agentz__V1__Event ev = AGENTZ__V1__EVENT__INIT;
        Google__Protobuf__Timestamp ts = GOOGLE__PROTOBUF__TIMESTAMP__INIT;
        set_now(&ts);
        ev.time = &ts;
        ev.agent_id = (char *)ids[i];
        ev.payload_case = AGENTZ__V1__EVENT__PAYLOAD_AGENT_METRICS;
        ev.agent_metrics = m;
        pthread_mutex_lock(&s->mu);
        int over = s->closed || s->finished;
        /* The agent filter already chose these agents: send without the selector check. */
        if (!over) {
            if (s->catching_up) ephemeral_locked(s, &ev);
            else send_locked(s, &ev);
        }
        pthread_mutex_unlock(&s->mu);
        if (over) break;
    }
    az_arena_free(a);
}

static void *worker_main(void *arg)
{
    az_watch *w = arg;
    pthread_mutex_lock(&w->work_mu);
    for (;;) {
        while (!w->stop && !w->qhead) pthread_cond_wait(&w->work_cv, &w->work_mu);
        if (w->stop) break;
        az_watch_stream *s = w->qhead;
        w->qhead = s->wnext;
        if (!w->qhead) w->qtail = NULL;
        s->work = W_RUNNING;
        pthread_mutex_unlock(&w->work_mu);

        int defer = catch_up(s);
        pthread_mutex_lock(&s->mu);
        int metrics = s->metrics_due && !s->closed && !s->finished && !s->initial;
        if (metrics) s->metrics_due = 0;
        pthread_mutex_unlock(&s->mu);
        if (metrics) send_metrics(s);

        pthread_mutex_lock(&w->work_mu);
        if (defer && !w->stop) {
            s->work = W_DEFERRED;
            s->not_before = az_now_ms() + DEFER_MS;
            s->wnext = w->deferred;
            w->deferred = s;
            pthread_cond_signal(&w->timer_cv);
        } else if (s->work == W_AGAIN && !w->stop) {
            s->work = W_QUEUED;
            s->wnext = NULL;
            if (w->qtail) w->qtail->wnext = s;
            else w->qhead = s;
            w->qtail = s;
        } else {
            s->work = W_IDLE;
            pthread_mutex_unlock(&w->work_mu);
            stream_unref(s);
            pthread_mutex_lock(&w->work_mu);
        }
    }
    pthread_mutex_unlock(&w->work_mu);
    return NULL;
}

/* ---------------------------------------------------------------- timer thread */

static void heartbeat_and_metrics(az_watch *w)
{
    int64_t now = az_now_ms();
    pthread_mutex_lock(&w->mu);
    for (az_watch_stream *s = w->streams; s; s = s->next) {
        pthread_mutex_lock(&s->mu);
        if (!s->closed && !s->finished) {
            /* Only a silent stream needs one: queued messages are traffic already. */
            if (now - s->last_send_ms >= w->cfg.heartbeat_ms && s->sink.queued(s->sink.arg) == 0) {
                Agentz__V1__Event ev = AGENTZ__V1__EVENT__INIT;
                Agentz__V1__Heartbeat hb = AGENTZ__V1__HEARTBEAT__INIT;
                Google__Protobuf__Timestamp ts = GOOGLE__PROTOBUF__TIMESTAMP__INIT;
                set_now(&ts);
                ev.time = &ts;
                ev.payload_case = AGENTZ__V1__EVENT__PAYLOAD_HEARTBEAT;
                ev.heartbeat = &hb;
                send_locked(s, &ev);
            }
            if (s->include_metrics && now >= s->next_metrics_ms) {
                s->next_metrics_ms = now + w->cfg.metrics_interval_ms;
                s->metrics_due = 1;
                schedule(s);
            }
        }
        pthread_mutex_unlock(&s->mu);
    }
    pthread_mutex_unlock(&w->mu);
}

static void *timer_main(void *arg)
{
    az_watch *w = arg;
    int64_t next_tick = az_now_ms() + TICK_MS;
    pthread_mutex_lock(&w->work_mu);
    while (!w->stop) {
        int64_t now = az_now_ms();
        /* Paced replays whose time has come go back to the work queue. */
        az_watch_stream **pp = &w->deferred;
        int64_t wake = next_tick;
        while (*pp) {
            az_watch_stream *s = *pp;
            if (s->not_before <= now) {
                *pp = s->wnext;
                s->work = W_QUEUED;
                s->wnext = NULL;
                if (w->qtail) w->qtail->wnext = s;
                else w->qhead = s;
                w->qtail = s;
                pthread_cond_signal(&w->work_cv);
            } else {
                if (s->not_before < wake) wake = s->not_before;
                pp = &s->wnext;
            }
        }
        if (now >= next_tick) {
            pthread_mutex_unlock(&w->work_mu);
            heartbeat_and_metrics(w);
            pthread_mutex_lock(&w->work_mu);
            next_tick = az_now_ms() + TICK_MS;
            continue;
        }
        struct timespec until;
        clock_gettime(CLOCK_MONOTONIC, &until);
        int64_t ns = until.tv_nsec + (wake - now) * 1000000;
        until.tv_sec += (time_t)(ns / 1000000000);
        until.tv_nsec = (long)(ns % 1000000000);
        pthread_cond_timedwait(&w->timer_cv, &w->work_mu, &until);
    }
    pthread_mutex_unlock(&w->work_mu);
    return NULL;
}

/* ---------------------------------------------------------------- open and close */

static az_err parse_labels(az_watch_stream *s, const char *labels_json, char *msg)
{
    if (!labels_json || !*labels_json) return AZ_OK;
    json_error_t jerr;
    json_t *obj = json_loads(labels_json, 0, &jerr);
    if (!json_is_object(obj)) {
        json_decref(obj);
        return az_fail(msg, AZ_ERR_INVALID, "label_selector: not a label set");
    }
    size_t n = json_object_size(obj);
    s->lkeys = calloc(n ? n : 1, sizeof *s->lkeys);
    s->lvals = calloc(n ? n : 1, sizeof *s->lvals);
    s->labels_json = strdup(labels_json);
    if (!s->lkeys || !s->lvals || !s->labels_json) {
        json_decref(obj);
        return az_fail(msg, AZ_ERR_NOMEM, "out of memory");
    }
    const char *key;
    json_t *val;
    json_object_foreach(obj, key, val)
    {
        const char *v = json_string_value(val);
        s->lkeys[s->n_labels] = strdup(key);
        s->lvals[s->n_labels] = strdup(v ? v : "");
        if (!s->lkeys[s->n_labels] || !s->lvals[s->n_labels]) {
            free(s->lkeys[s->n_labels]);
            free(s->lvals[s->n_labels]);
            json_decref(obj);
            return az_fail(msg, AZ_ERR_NOMEM, "out of memory");
        }
        s->n_labels++;
    }
    json_decref(obj);
    return AZ_OK;
}

/* Existence (NOT_FOUND otherwise) and whether the run or task had already finished. */
static az_err check_target(az_watch *w, const az_ctx *ctx, az_watch_stream *s, char *msg)
{
    az_arena *a = az_arena_new(ARENA_LIMIT);
    if (!a) return az_fail(msg, AZ_ERR_NOMEM, "out of memory");
    az_err err = AZ_OK;
    if (s->kind == AZ_WATCH_RUN) {
        Agentz__V1__WorkflowRun *run = NULL;
        err = az_run_get(w->cfg.pg, ctx, s->id, a, &run, msg);
        if (err == AZ_OK)
            s->was_terminal = run->status == AGENTZ__V1__RUN_STATUS__RUN_STATUS_SUCCEEDED ||
                              run->status == AGENTZ__V1__RUN_STATUS__RUN_STATUS_FAILED ||
                              run->status == AGENTZ__V1__RUN_STATUS__RUN_STATUS_CANCELLED;
    } else if (s->kind == AZ_WATCH_TASK) {
        Agentz__V1__Task *t = NULL;
        err = az_task_get(w->cfg.pg, ctx, s->id, a, &t, msg);
        if (err == AZ_OK)
            s->was_terminal = t->status == AGENTZ__V1__TASK_STATUS__TASK_STATUS_SUCCEEDED ||
                              t->status == AGENTZ__V1__TASK_STATUS__TASK_STATUS_FAILED ||
                              t->status == AGENTZ__V1__TASK_STATUS__TASK_STATUS_CANCELLED;
    }
    az_arena_free(a);
    return err;
}

static az_err subscribe(az_watch_stream *s, const char *prefix, const char *id, az_hub_fn fn,
                        char *msg)
{
    char channel[128];
    snprintf(channel, sizeof channel, "%s%s", prefix, id);
    return az_hub_subscribe(s->w->cfg.hub, channel, fn, s, SUBSCRIBE_TIMEOUT_MS, &s->subs[s->nsubs++],
                            msg);
}

/* The channels of s: its scope first, then (WatchRun with tokens) the run's task channels. */
static az_err subscribe_all(az_watch_stream *s, const az_ctx *ctx, char *msg)
{
    size_t cap = 1;
    Agentz__V1__Task **tasks = NULL;
    size_t ntasks = 0;
    az_arena *a = NULL;
    if (s->kind == AZ_WATCH_RUN && s->include_tokens) {
        a = az_arena_new(ARENA_LIMIT);
        az_pgconn *c = NULL;
        az_err err = a ? az_pg_acquire(s->w->cfg.pg, ctx, &c, msg)
                       : az_fail(msg, AZ_ERR_NOMEM, "out of memory");
        if (err == AZ_OK) {
            err = az_task_list_run(c, ctx, s->id, a, &tasks, &ntasks, msg);
            az_pg_release(c);
        }
        if (err != AZ_OK) {
            az_arena_free(a);
            return err;
        }
        if (ntasks > AZ_WATCH_RUN_TASKS_MAX) ntasks = AZ_WATCH_RUN_TASKS_MAX;
        cap += ntasks;
    }
    s->subs = calloc(cap, sizeof *s->subs);
    az_err err = s->subs ? AZ_OK : az_fail(msg, AZ_ERR_NOMEM, "out of memory");
    if (err == AZ_OK) {
        switch (s->kind) {
        case AZ_WATCH_RUN: err = subscribe(s, AZ_HUB_CHANNEL_RUN, s->id, on_scope_event, msg); break;
        case AZ_WATCH_TASK: err = subscribe(s, AZ_HUB_CHANNEL_TASK, s->id, on_scope_event, msg); break;
        case AZ_WATCH_AGENTS:
            err = subscribe(s, AZ_HUB_CHANNEL_AGENTS, s->workspace, on_scope_event, msg);
            break;
        }
    }
    for (size_t i = 0; err == AZ_OK && i < ntasks; i++)
        err = subscribe(s, AZ_HUB_CHANNEL_TASK, tasks[i]->id, on_token_event, msg);
    az_arena_free(a);
    return err;
}

static void unsubscribe_all(az_watch_stream *s)
{
    for (size_t i = 0; i < s->nsubs; i++) {
        az_hub_unsubscribe(s->subs[i]);
        s->subs[i] = NULL;
    }
    s->nsubs = 0;
}

az_err az_watch_open(az_watch *w, const az_ctx *ctx, const az_watch_request *req,
                     const az_watch_sink *sink, az_watch_stream **out, char *msg)
{
    *out = NULL;
    if (req->kind != AZ_WATCH_AGENTS && (!req->id || strlen(req->id) != 36))
        return az_fail(msg, AZ_ERR_INVALID, "%s: must be a uuid",
                       req->kind == AZ_WATCH_RUN ? "run_id" : "task_id");
    if (req->after_sequence < 0)
        return az_fail(msg, AZ_ERR_INVALID, "after_sequence: must not be negative");
    if (req->n_agent_ids > AZ_WATCH_AGENT_IDS_MAX)
        return az_fail(msg, AZ_ERR_INVALID, "agent_ids: at most %d", AZ_WATCH_AGENT_IDS_MAX);
    az_watch_stream *s = calloc(1, sizeof *s);
    if (!s) return az_fail(msg, AZ_ERR_NOMEM, "out of memory");
    atomic_init(&s->refs, 1);
    pthread_mutex_init(&s->mu, NULL);
    s->w = w;
    s->kind = req->kind;
    s->scope = req->kind == AZ_WATCH_RUN    ? AZ_EVENT_SCOPE_RUN
               : req->kind == AZ_WATCH_TASK ? AZ_EVENT_SCOPE_TASK
                                            : AZ_EVENT_SCOPE_AGENTS;
    snprintf(s->workspace, sizeof s->workspace, "%s", ctx->workspace_id);
    if (req->kind != AZ_WATCH_AGENTS) snprintf(s->id, sizeof s->id, "%s", req->id);
    s->include_tokens = req->kind != AZ_WATCH_AGENTS && req->include_tokens;
    s->include_metrics = req->kind == AZ_WATCH_AGENTS && req->include_metrics;
    s->last = req->after_sequence;
    s->last_send_ms = az_now_ms();
    s->next_metrics_ms = 0;
    if (req->kind == AZ_WATCH_AGENTS && req->after_sequence == 0) {
        s->baseline = 1; /* only new events: live from the first one */
    } else {
        s->catching_up = 1;
        s->initial = 1;
    }

    /* Set before subscribing: hub callbacks and a catch-up may use it at once. Every use is
     * under mu and checks closed, which the failure path below sets before returning. */
    s->sink = *sink;

    az_err err = AZ_OK;
    if (req->kind == AZ_WATCH_AGENTS) {
        if (req->n_agent_ids) {
            s->agent_ids = calloc(req->n_agent_ids, sizeof *s->agent_ids);
            if (!s->agent_ids) err = az_fail(msg, AZ_ERR_NOMEM, "out of memory");
            for (size_t i = 0; err == AZ_OK && i < req->n_agent_ids; i++) {
                s->agent_ids[i] = strdup(req->agent_ids[i]);
                if (!s->agent_ids[i]) err = az_fail(msg, AZ_ERR_NOMEM, "out of memory");
                s->n_agent_ids = i + 1;
            }
        }
        if (err == AZ_OK) err = parse_labels(s, req->labels_json, msg);
    } else {
        err = check_target(w, ctx, s, msg);
    }
    if (err == AZ_OK) err = subscribe_all(s, ctx, msg);
    if (err == AZ_OK) {
        pthread_mutex_lock(&w->mu);
        if (w->shutting_down) {
            err = az_fail(msg, AZ_ERR_UNAVAILABLE, "server shutting down");
        } else {
            s->next = w->streams;
            if (w->streams) w->streams->prev = s;
            w->streams = s;
            s->in_list = 1;
            w->nstreams++;
        }
        pthread_mutex_unlock(&w->mu);
    }
    if (err != AZ_OK) {
        /* On error the sink is the caller's again: nothing touches it after this, and the
         * last unref (maybe a catch-up thread's) does not release it. */
        pthread_mutex_lock(&s->mu);
        s->closed = 1;
        s->sink.release = NULL;
        pthread_mutex_unlock(&s->mu);
        unsubscribe_all(s);
        stream_unref(s);
        return err;
    }
    pthread_mutex_lock(&s->mu);
    if (s->catching_up) schedule(s);
    pthread_mutex_unlock(&s->mu);
    *out = s;
    return AZ_OK;
}

void az_watch_close(az_watch_stream *s)
{
    if (!s) return;
    pthread_mutex_lock(&s->mu);
    int was = s->closed;
    s->closed = 1;
    pthread_mutex_unlock(&s->mu);
    if (was) return;
    unsubscribe_all(s);
    az_watch *w = s->w;
    pthread_mutex_lock(&w->mu);
    if (s->in_list) {
        if (s->prev) s->prev->next = s->next;
        else w->streams = s->next;
        if (s->next) s->next->prev = s->prev;
        s->in_list = 0;
        w->nstreams--;
    }
    pthread_mutex_unlock(&w->mu);
    stream_unref(s);
}

/* ---------------------------------------------------------------- gRPC glue */

static az_err call_send(void *arg, const Agentz__V1__Event *ev) { return az_call_send(arg, &ev->base); }
static int call_queued(void *arg) { return az_call_queued(arg); }
static void call_finish(void *arg, az_err code, const char *msg) { az_call_finish(arg, code, msg); }
static void call_release(void *arg) { az_call_unref(arg); }
static void call_done(az_call *c, void *arg)
{
    (void)c;
    az_watch_close(arg);
}

az_err az_watch_serve(az_watch *w, az_call *c, const az_watch_request *req, char *msg)
{
    az_ctx ctx;
    az_call_ctx(c, &ctx);
    az_call_ref(c);
    az_watch_sink sink = {.send = call_send,
                          .queued = call_queued,
                          .finish = call_finish,
                          .release = call_release,
                          .arg = c};
    az_watch_stream *s = NULL;
    az_err err = az_watch_open(w, &ctx, req, &sink, &s, msg);
    if (err != AZ_OK) {
        az_call_unref(c);
        return err;
    }
    /* Runs at once if the call is already over. */
    az_call_on_done(c, call_done, s);
    return AZ_OK;
}

/* ---------------------------------------------------------------- the engine */

az_err az_watch_new(const az_watch_config *cfg, az_watch **out, char *msg)
{
    *out = NULL;
    if (!cfg->pg || !cfg->hub) return az_fail(msg, AZ_ERR_INVALID, "watch: pg and hub are required");
    az_watch *w = calloc(1, sizeof *w);
    if (!w) return az_fail(msg, AZ_ERR_NOMEM, "out of memory");
    w->cfg = *cfg;
    if (w->cfg.heartbeat_ms <= 0) w->cfg.heartbeat_ms = 15000;
    if (w->cfg.queue_limit <= 0) w->cfg.queue_limit = 256;
    if (w->cfg.metrics_interval_ms <= 0) w->cfg.metrics_interval_ms = 10000;
    if (w->cfg.workers <= 0) w->cfg.workers = 2;
    pthread_mutex_init(&w->mu, NULL);
    pthread_mutex_init(&w->work_mu, NULL);
    pthread_cond_init(&w->work_cv, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&w->timer_cv, &ca);
    pthread_condattr_destroy(&ca);
    w->workers = calloc((size_t)w->cfg.workers, sizeof *w->workers);
    if (!w->workers) {
        az_watch_free(w);
        return az_fail(msg, AZ_ERR_NOMEM, "out of memory");
    }
    for (int i = 0; i < w->cfg.workers; i++) {
        if (pthread_create(&w->workers[i], NULL, worker_main, w) != 0) {
            az_watch_free(w);
            return az_fail(msg, AZ_ERR_INTERNAL, "cannot start watch threads: %s", strerror(errno));
        }
        w->nworkers++;
    }
    if (pthread_create(&w->timer, NULL, timer_main, w) != 0) {
        az_watch_free(w);
        return az_fail(msg, AZ_ERR_INTERNAL, "cannot start the watch timer: %s", strerror(errno));
    }
    w->timer_started = 1;
    *out = w;
    return AZ_OK;
}

void az_watch_shutdown(az_watch *w)
{
    if (!w) return;
    pthread_mutex_lock(&w->mu);
    w->shutting_down = 1;
    for (az_watch_stream *s = w->streams; s; s = s->next) {
        pthread_mutex_lock(&s->mu);
        char msg[128];
        snprintf(msg, sizeof msg, "server shutting down; resume with after_sequence = %lld",
                 (long long)s->last);
        finish_locked(s, AZ_ERR_UNAVAILABLE, msg);
        pthread_mutex_unlock(&s->mu);
    }
    pthread_mutex_unlock(&w->mu);
}

size_t az_watch_count(az_watch *w)
{
    if (!w) return 0;
    pthread_mutex_lock(&w->mu);
    size_t n = w->nstreams;
    pthread_mutex_unlock(&w->mu);
    return n;
}

void az_watch_free(az_watch *w)
{
    if (!w) return;
    pthread_mutex_lock(&w->work_mu);
    w->stop = 1;
    pthread_cond_broadcast(&w->work_cv);
    pthread_cond_broadcast(&w->timer_cv);
    pthread_mutex_unlock(&w->work_mu);
    for (int i = 0; i < w->nworkers; i++) pthread_join(w->workers[i], NULL);
    if (w->timer_started) pthread_join(w->timer, NULL);
    free(w->workers);
    /* Work never picked up holds references: drop them. */
    az_watch_stream *lists[2] = {w->qhead, w->deferred};
    for (int l = 0; l < 2; l++) {
        for (az_watch_stream *s = lists[l], *n; s; s = n) {
            n = s->wnext;
            stream_unref(s);
        }
    }
    if (w->nstreams) az_warn("watch engine freed with %zu streams open", w->nstreams);
    pthread_cond_destroy(&w->work_cv);
    pthread_cond_destroy(&w->timer_cv);
    pthread_mutex_destroy(&w->work_mu);
    pthread_mutex_destroy(&w->mu);
    free(w);
}
