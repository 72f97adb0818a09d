/* The in-process event fan-out: one thread runs a libuv loop with a hiredis connection in
 * SUBSCRIBE mode, holds one Redis subscription per channel in use and hands every message,
 * unpacked once, to each in-process subscriber of its channel. */
#include "hub.h"

#include <errno.h>
#include <hiredis/async.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include "core/log.h"
#include "store/redis.h"
#include "store/redisuv.h"
#include "system/prom.h"

/* Bounds: a process never holds more (subscribe beyond is AZ_ERR_EXHAUSTED). */
#define MAX_CHANNELS 100000
#define MAX_SUBSCRIBERS 250000
#define CHANNEL_NAME_MAX 200
#define BUCKETS 16384 /* power of two */
#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 5000
#define LAG_ALPHA 0.05

typedef struct channel channel;

struct az_hub_sub {
    az_hub_sub *prev, *next;
    channel *ch;
    az_hub *h;
    az_hub_fn fn;
    void *arg;
};

/* A Redis channel with at least one subscriber, or one still being (un)subscribed. Lives in the
 * hash table; freed on the loop thread once it has neither subscribers nor a pending reply. */
struct channel {
    channel *hnext;
    channel *dnext; /* the dirty list: channels the loop must look at */
    int dirty;
    az_hub_sub *subs;
    size_t nsubs;
    int subscribed;    /* confirmed on the current connection */
    int sub_pending;   /* SUBSCRIBE sent, reply not yet seen */
    int unsub_pending; /* UNSUBSCRIBE sent, reply not yet seen */
    int resubscribe;   /* subscribed before a connection loss: signal a gap once confirmed */
    size_t len;
    char name[];
};

struct az_hub {
    az_redis_url url;
    char anchor[64]; /* a private channel that keeps the connection in subscribe mode */

    uv_loop_t loop;
    uv_async_t wake;
    uv_timer_t reconnect;
    pthread_t thread;
    int thread_started;

    /* loop thread only */
    redisAsyncContext *ac;
    int connected, lost_logged, backoff_ms;

    pthread_mutex_t mu; /* everything below; held while subscribers' callbacks run */
    pthread_cond_t cv;  /* subscription confirmed */
    channel *buckets[BUCKETS];
    channel *dirty;
    size_t nchannels, nsubs;
    _Atomic int stop; /* written under mu; read by the loop without it */
    double lag_ms;
    int lag_seeded;
    _Atomic uint64_t messages;
};

/* ---------------------------------------------------------------- the table */

static size_t hash(const char *s, size_t len)
{
    uint64_t x = 1469598103934665603ULL;
    for (size_t i = 0; i < len; i++) x = (x ^ (unsigned char)s[i]) * 1099511628211ULL;
    return (size_t)(x & (BUCKETS - 1));
}

static channel *find_locked(az_hub *h, const char *name, size_t len)
{
    for (channel *c = h->buckets[hash(name, len)]; c; c = c->hnext)
        if (c->len == len && memcmp(c->name, name, len) == 0) return c;
    return NULL;
}

static void mark_dirty_locked(az_hub *h, channel *c)
{
    if (c->dirty) return;
    c->dirty = 1;
    c->dnext = h->dirty;
    h->dirty = c;
}

/* Frees c when nothing refers to it any more; otherwise a later reply or reconcile does. */
static void maybe_free_locked(az_hub *h, channel *c)
{
    if (c->nsubs || c->dirty || c->subscribed || c->sub_pending || c->unsub_pending) return;
    channel **pp = &h->buckets[hash(c->name, c->len)];
    while (*pp && *pp != c) pp = &(*pp)->hnext;
    if (*pp) *pp = c->hnext;
    h->nchannels--;
    free(c);
}

/* ---------------------------------------------------------------- Redis side (loop thread) */

static void on_reply(redisAsyncContext *ac, void *r, void *priv);

/* Brings the Redis subscription of c in line with its subscribers: one command in flight per
 * channel, because hiredis 0.14 drops a channel's callback when an UNSUBSCRIBE reply arrives
 * after a newer SUBSCRIBE of the same channel. */
static void reconcile_locked(az_hub *h, channel *c)
{
    if (h->connected && !c->sub_pending && !c->unsub_pending) {
        if (c->nsubs && !c->subscribed) {
            if (redisAsyncCommand(h->ac, on_reply, NULL, "SUBSCRIBE %b", c->name, c->len) == REDIS_OK)
                c->sub_pending = 1;
        } else if (!c->nsubs && c->subscribed) {
            if (redisAsyncCommand(h->ac, NULL, NULL, "UNSUBSCRIBE %b", c->name, c->len) == REDIS_OK)
                c->unsub_pending = 1;
        }
    }
    maybe_free_locked(h, c);
}

static void reconcile_dirty_locked(az_hub *h)
{
    channel *list = h->dirty;
    h->dirty = NULL;
    while (list) {
        channel *c = list;
        list = c->dnext;
        c->dirty = 0;
        reconcile_locked(h, c);
    }
}

/* Calls every subscriber of c; ev == NULL is a gap. mu held. */
static void dispatch_locked(channel *c, const Agentz__V1__Event *ev)
{
    for (az_hub_sub *s = c->subs; s; s = s->next) s->fn(s->arg, ev);
}

static void on_message(az_hub *h, const redisReply *chan, const redisReply *payload)
{
    if (payload->type != REDIS_REPLY_STRING) return;
    Agentz__V1__Event *ev =
        agentz__v1__event__unpack(NULL, payload->len, (const uint8_t *)payload->str);
    if (!ev) {
        az_warn("cannot unpack an event on redis channel %.*s: not an agentz.v1.Event",
                (int)chan->len, chan->str);
        return;
    }
    atomic_fetch_add_explicit(&h->messages, 1, memory_order_relaxed);
    double lag = -1;
    if (ev->time && ev->time->seconds) {
        struct timespec now;
        clock_gettime(CLOCK_REALTIME, &now);
        lag = (double)(now.tv_sec - ev->time->seconds) * 1000.0 +
              (double)(now.tv_nsec - ev->time->nanos) / 1e6;
        if (lag < 0) lag = 0;
    }
    pthread_mutex_lock(&h->mu);
    if (lag >= 0) {
        h->lag_ms = h->lag_seeded ? h->lag_ms + LAG_ALPHA * (lag - h->lag_ms) : lag;
        h->lag_seeded = 1;
    }
    channel *c = find_locked(h, chan->str, chan->len);
    if (c) dispatch_locked(c, ev);
    pthread_mutex_unlock(&h->mu);
    agentz__v1__event__free_unpacked(ev, NULL);
}

/* Every reply of the subscription connection: "message", "subscribe" and "unsubscribe" arrays
 * (hiredis routes them here by channel); NULL when the connection goes away. */
static void on_reply(redisAsyncContext *ac, void *r, void *priv)
{
    (void)priv;
    redisReply *reply = r;
    az_hub *h = ac->data;
    if (!reply || !h || reply->type != REDIS_REPLY_ARRAY || reply->elements < 3) return;
    const redisReply *kind = reply->element[0], *chan = reply->element[1];
    if (kind->type != REDIS_REPLY_STRING || chan->type != REDIS_REPLY_STRING) return;
    if (strcasecmp(kind->str, "message") == 0) {
        on_message(h, chan, reply->element[2]);
        return;
    }
    int sub = strcasecmp(kind->str, "subscribe") == 0;
    if (!sub && strcasecmp(kind->str, "unsubscribe") != 0) return;
    if (sub && chan->len == strlen(h->anchor) && memcmp(chan->str, h->anchor, chan->len) == 0) {
        /* Up only now: a server can accept the connect and still refuse the client
         * (maxclients, AUTH), and that must keep backing off rather than retry every 100 ms. */
        if (h->lost_logged) az_info("event hub reconnected to redis; resubscribing");
        h->lost_logged = 0;
        h->backoff_ms = 0;
        return;
    }
    pthread_mutex_lock(&h->mu);
    channel *c = find_locked(h, chan->str, chan->len);
    if (c && sub) {
        c->sub_pending = 0;
        c->subscribed = 1;
        /* Messages published while the connection was down are gone: subscribers re-read
         * their outbox now that nothing more can be missed. */
        if (c->resubscribe) {
            c->resubscribe = 0;
            dispatch_locked(c, NULL);
        }
        pthread_cond_broadcast(&h->cv);
    } else if (c) {
        c->unsub_pending = 0;
        c->subscribed = 0;
    }
    if (c) reconcile_locked(h, c);
    pthread_mutex_unlock(&h->mu);
}

static void connect_redis(az_hub *h);

static void on_reconnect_timer(uv_timer_t *t) { connect_redis(t->data); }

static void schedule_reconnect(az_hub *h)
{
    if (h->stop || uv_is_active((uv_handle_t *)&h->reconnect)) return;
    h->backoff_ms = h->backoff_ms ? h->backoff_ms * 2 : BACKOFF_MIN_MS;
    if (h->backoff_ms > BACKOFF_MAX_MS) h->backoff_ms = BACKOFF_MAX_MS;
    uv_timer_start(&h->reconnect, on_reconnect_timer, (uint64_t)h->backoff_ms, 0);
}

static void redis_lost(az_hub *h, const char *why)
{
    az_prom_redis_error();
    if (!h->lost_logged) {
        az_warn("event hub lost redis (%s): reconnecting with backoff; watchers re-read the outbox",
                why);
        h->lost_logged = 1;
    }
    pthread_mutex_lock(&h->mu);
    int was = h->connected;
    h->connected = 0;
    for (size_t b = 0; b < BUCKETS; b++) {
        for (channel *c = h->buckets[b], *next; c; c = next) {
            next = c->hnext;
            c->subscribed = c->sub_pending = c->unsub_pending = 0;
            if (c->nsubs && was) {
                c->resubscribe = 1;
                dispatch_locked(c, NULL);
            }
            maybe_free_locked(h, c);
        }
    }
    pthread_mutex_unlock(&h->mu);
    schedule_reconnect(h);
}

static void on_disconnect(const redisAsyncContext *ac, int status)
{
    (void)status;
    az_hub *h = ac->data;
    if (!h || ac != h->ac) return; /* closed on purpose, or the failed connect already counted */
    h->ac = NULL;
    redis_lost(h, ac->errstr[0] ? ac->errstr : "connection closed");
}

static void on_connect(const redisAsyncContext *ac, int status)
{
    az_hub *h = ac->data;
    if (!h || ac != h->ac) return;
    if (status != REDIS_OK) {
        h->ac = NULL; /* hiredis frees the context after this callback */
        redis_lost(h, ac->errstr[0] ? ac->errstr : "cannot connect");
        return;
    }
    /* TCP only: on a unix socket it fails and poisons the context. */
    if (!h->url.path[0]) redisEnableKeepAlive((redisContext *)&ac->c);
    /* The anchor keeps at least one subscription, so hiredis never leaves subscribe mode while
     * SUBSCRIBE replies are still on their way (it would abort on them). */
    redisAsyncCommand(h->ac, on_reply, NULL, "SUBSCRIBE %s", h->anchor);
    pthread_mutex_lock(&h->mu);
    h->connected = 1;
    for (size_t b = 0; b < BUCKETS; b++) {
        for (channel *c = h->buckets[b], *next; c; c = next) {
            next = c->hnext;
            reconcile_locked(h, c);
        }
    }
    pthread_mutex_unlock(&h->mu);
}

static void connect_redis(az_hub *h)
{
    if (h->stop || h->ac) return;
    redisAsyncContext *ac = h->url.path[0] ? redisAsyncConnectUnix(h->url.path)
                                           : redisAsyncConnect(h->url.host, h->url.port);
    if (!ac) {
        redis_lost(h, "out of memory");
        return;
    }
    if (ac->err) {
        char why[128];
        snprintf(why, sizeof why, "%s", ac->errstr);
        redisAsyncFree(ac);
        redis_lost(h, why);
        return;
    }
    ac->data = h;
    if (az_redisuv_attach(ac, &h->loop) != REDIS_OK) {
        redisAsyncFree(ac);
        redis_lost(h, "cannot attach to the event loop");
        return;
    }
    h->ac = ac;
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    /* Queued first, so it runs before any SUBSCRIBE. SELECT is pointless: pub/sub ignores it. */
    if (h->url.password[0]) {
        if (h->url.username[0])
            redisAsyncCommand(ac, NULL, NULL, "AUTH %s %s", h->url.username, h->url.password);
        else
            redisAsyncCommand(ac, NULL, NULL, "AUTH %s", h->url.password);
    }
}

static void on_closed(uv_handle_t *hd) { (void)hd; }

static void on_wake(uv_async_t *a)
{
    az_hub *h = a->data;
    pthread_mutex_lock(&h->mu);
    int stop = h->stop;
    if (!stop) reconcile_dirty_locked(h);
    pthread_mutex_unlock(&h->mu);
    if (!stop) return;
    if (h->ac) {
        redisAsyncContext *ac = h->ac;
        h->ac = NULL; /* on_disconnect sees it is not current and stays quiet */
        redisAsyncFree(ac);
    }
    uv_timer_stop(&h->reconnect);
    uv_close((uv_handle_t *)&h->reconnect, on_closed);
    uv_close((uv_handle_t *)&h->wake, on_closed);
}

static void *hub_main(void *arg)
{
    az_hub *h = arg;
    connect_redis(h);
    uv_run(&h->loop, UV_RUN_DEFAULT);
    return NULL;
}

/* ---------------------------------------------------------------- public */

az_hub *az_hub_new(const char *redis_url, char *msg)
{
    az_hub *h = calloc(1, sizeof *h);
    if (!h) {
        az_fail(msg, AZ_ERR_NOMEM, "out of memory");
        return NULL;
    }
    if (az_redis_parse_url(redis_url, &h->url, msg) != AZ_OK) {
        free(h);
        return NULL;
    }
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    snprintf(h->anchor, sizeof h->anchor, "agentz:hub:%ld-%ld", (long)getpid(),
             (long)(ts.tv_nsec ^ (long)(uintptr_t)h));
    pthread_mutex_init(&h->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&h->cv, &ca);
    pthread_condattr_destroy(&ca);
    if (uv_loop_init(&h->loop) != 0) {
        az_fail(msg, AZ_ERR_INTERNAL, "cannot create the event hub's loop");
        pthread_cond_destroy(&h->cv);
        pthread_mutex_destroy(&h->mu);
        free(h);
        return NULL;
    }
    uv_async_init(&h->loop, &h->wake, on_wake);
    h->wake.data = h;
    uv_timer_init(&h->loop, &h->reconnect);
    h->reconnect.data = h;
    if (pthread_create(&h->thread, NULL, hub_main, h) != 0) {
        az_fail(msg, AZ_ERR_INTERNAL, "cannot start the event hub thread: %s", strerror(errno));
        h->stop = 1;
        uv_close((uv_handle_t *)&h->wake, on_closed);
        uv_close((uv_handle_t *)&h->reconnect, on_closed);
        uv_run(&h->loop, UV_RUN_DEFAULT);
        uv_loop_close(&h->loop);
        pthread_cond_destroy(&h->cv);
        pthread_mutex_destroy(&h->mu);
        free(h);
        return NULL;
    }
    h->thread_started = 1;
    return h;
}

/* Unlinks s from its channel and marks the channel for the loop. mu held. */
static void unlink_locked(az_hub *h, az_hub_sub *s)
{
    channel *c = s->ch;
    if (s->prev) s->prev->next = s->next;
    else c->subs = s->next;
    if (s->next) s->next->prev = s->prev;
    c->nsubs--;
    h->nsubs--;
    if (!c->nsubs) mark_dirty_locked(h, c);
}

az_err az_hub_subscribe(az_hub *h, const char *channel_name, az_hub_fn fn, void *arg,
                        int timeout_ms, az_hub_sub **out, char *msg)
{
    *out = NULL;
    size_t len = channel_name ? strlen(channel_name) : 0;
    if (!len || len > CHANNEL_NAME_MAX)
        return az_fail(msg, AZ_ERR_INVALID, "channel: must be 1..%d bytes", CHANNEL_NAME_MAX);
    az_hub_sub *s = calloc(1, sizeof *s);
    if (!s) return az_fail(msg, AZ_ERR_NOMEM, "out of memory");
    s->h = h;
    s->fn = fn;
    s->arg = arg;

    pthread_mutex_lock(&h->mu);
    if (h->stop) {
        pthread_mutex_unlock(&h->mu);
        free(s);
        return az_fail(msg, AZ_ERR_UNAVAILABLE, "event hub is stopping");
    }
    channel *c = find_locked(h, channel_name, len);
    if (h->nsubs >= MAX_SUBSCRIBERS || (!c && h->nchannels >= MAX_CHANNELS)) {
        pthread_mutex_unlock(&h->mu);
        free(s);
        return az_fail(msg, AZ_ERR_EXHAUSTED,
                       "too many event subscriptions in this process (at most %d channels and %d "
                       "subscribers)",
                       MAX_CHANNELS, MAX_SUBSCRIBERS);
    }
    if (!c) {
        c = calloc(1, sizeof *c + len + 1);
        if (!c) {
            pthread_mutex_unlock(&h->mu);
            free(s);
            return az_fail(msg, AZ_ERR_NOMEM, "out of memory");
        }
        memcpy(c->name, channel_name, len);
        c->len = len;
        size_t b = hash(channel_name, len);
        c->hnext = h->buckets[b];
        h->buckets[b] = c;
        h->nchannels++;
    }
    s->ch = c;
    s->next = c->subs;
    if (c->subs) c->subs->prev = s;
    c->subs = s;
    c->nsubs++;
    h->nsubs++;
    if (c->subscribed) {
        pthread_mutex_unlock(&h->mu);
        *out = s;
        return AZ_OK;
    }
    mark_dirty_locked(h, c);
    uv_async_send(&h->wake);

    struct timespec until;
    clock_gettime(CLOCK_MONOTONIC, &until);
    int64_t ns = (int64_t)until.tv_nsec + (int64_t)(timeout_ms > 0 ? timeout_ms : 0) * 1000000;
    until.tv_sec += (time_t)(ns / 1000000000);
    until.tv_nsec = (long)(ns % 1000000000);
    int rc = 0;
    while (!s->ch->subscribed && !h->stop && rc != ETIMEDOUT)
        rc = pthread_cond_timedwait(&h->cv, &h->mu, &until);
    if (!s->ch->subscribed) {
        unlink_locked(h, s);
        int stopping = h->stop;
        if (!stopping) uv_async_send(&h->wake);
        pthread_mutex_unlock(&h->mu);
        free(s);
        if (stopping) return az_fail(msg, AZ_ERR_UNAVAILABLE, "event hub is stopping");
        return az_fail(msg, AZ_ERR_UNAVAILABLE,
                       "cannot subscribe to redis channel %s within %d ms (is redis up?)",
                       channel_name, timeout_ms);
    }
    pthread_mutex_unlock(&h->mu);
    *out = s;
    return AZ_OK;
}

void az_hub_unsubscribe(az_hub_sub *s)
{
    if (!s) return;
    az_hub *h = s->h;
    /* Callbacks run under mu: once we hold it, none is running on s. */
    pthread_mutex_lock(&h->mu);
    unlink_locked(h, s);
    if (!h->stop) uv_async_send(&h->wake);
    pthread_mutex_unlock(&h->mu);
    free(s);
}

void az_hub_get_stats(az_hub *h, az_hub_stats *out)
{
    memset(out, 0, sizeof *out);
    if (!h) return;
    pthread_mutex_lock(&h->mu);
    out->subscribers = h->nsubs;
    out->channels = h->nchannels;
    out->lag_ms = h->lag_ms;
    pthread_mutex_unlock(&h->mu);
    out->messages = atomic_load_explicit(&h->messages, memory_order_relaxed);
}

void az_hub_free(az_hub *h)
{
    if (!h) return;
    pthread_mutex_lock(&h->mu);
    h->stop = 1;
    pthread_cond_broadcast(&h->cv);
    pthread_mutex_unlock(&h->mu);
    if (h->thread_started) {
        uv_async_send(&h->wake);
        pthread_join(h->thread, NULL);
    }
    uv_loop_close(&h->loop);
    if (h->nsubs) az_warn("event hub freed with %zu subscribers still attached", h->nsubs);
    for (size_t b = 0; b < BUCKETS; b++) {
        for (channel *c = h->buckets[b], *next; c; c = next) {
            next = c->hnext;
            for (az_hub_sub *s = c->subs, *sn; s; s = sn) {
                sn = s->next;
                free(s);
            }
            free(c);
        }
    }
    pthread_cond_destroy(&h->cv);
    pthread_mutex_destroy(&h->mu);
    free(h);
}
