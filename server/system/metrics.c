/* Server metrics behind SystemService.StreamMetrics: lock-free per-method counters and latency
 * histograms, a cache of the task, worker and dependency gauges, and one thread that sends each
 * open stream the difference between its previous copy of the counters and the current one. */
#include "metrics.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/log.h"
#include "google/protobuf/timestamp.pb-c.h"
#include "system/prom.h"
#include "queue/queue.h"
#include "task/metrics.h"

#define TICK_MS 250
/* A stream is served at the tick nearest its due time rather than the first one after it, so
 * a 1 s interval gets a snapshot every second, not every 1.25 s. */
#define SLACK_MS (TICK_MS / 2)
/* Gauges older than this are read again; however many streams want them, PostgreSQL and Redis
 * see at most one query per workspace (and one XINFO) per second. */
#define GAUGE_TTL_MS 1000
/* The gauge queries' deadline: a slow dependency delays the snapshots, never stops them. */
#define GAUGE_DEADLINE_MS 1000
/* Cached loads of workspaces no stream asked about for this long are dropped. */
#define GAUGE_EVICT_MS 10000
/* Where CLIENT LIST is refused: a consumer of the workers' group that read within this long
 * is a live worker. */
#define WORKER_IDLE_MS 10000
/* Counters per method in a copy: count, errors, then the histogram. */
#define SLOT_WORDS (2 + AZ_METRICS_BUCKETS)

/* gRPC status codes 0 (OK) to 16 (UNAUTHENTICATED). */
#define NCODES 17

typedef struct slot {
    _Atomic uint32_t count, errors;
    _Atomic uint32_t hist[AZ_METRICS_BUCKETS];
    /* For Prometheus only: calls by status code, and the exact total duration (_sum). */
    _Atomic uint64_t codes[NCODES];
    _Atomic uint64_t sum_us;
} slot;

struct az_metrics_counts {
    int64_t t_us;
    size_t nslots;
    uint32_t v[]; /* nslots * SLOT_WORDS */
};

typedef struct stream {
    az_metrics *m;
    az_call *c;
    char workspace[40];
    int64_t interval_ms, next_ms;
    az_metrics_counts *prev;
    int in_list;
    struct stream *prev_s, *next_s;
} stream;

/* One workspace's task load; touched only by the metrics thread. */
typedef struct load_entry {
    struct load_entry *next;
    char workspace[40];
    az_task_load load;
    int ok;
    int64_t at_ms, used_ms;
} load_entry;

struct az_metrics {
    /* Immutable after az_metrics_new: sorted paths, so lookups need no lock and the snapshot's
     * methods come out sorted. slots[nnames] is AZ_METRICS_OTHER. */
    char **names;
    size_t nnames;
    slot *slots;
    az_metrics_sources src;
    char *worker_group;

    pthread_mutex_t mu; /* streams, nstreams, shutting_down, stop */
    pthread_cond_t cv;
    stream *streams;
    size_t nstreams;
    int shutting_down, stop, started;
    pthread_t thread;

    /* The metrics thread's own state. */
    az_metrics_counts *cur;
    load_entry *loads;
    int workers, redis_ok, workers_logged_fail;
    int64_t workers_at_ms;
    int pg_logged_fail;

    /* The Prometheus collector's cache; touched only on the scrape thread. */
    int64_t prom_at_ms;
    int prom_ok, prom_logged_fail;
    int64_t prom_tasks[8]; /* by TaskStatus 1..7 */
    int64_t prom_outbox;
    double prom_outbox_lag_s;
};

/* ---------------------------------------------------------------- histogram */

int az_metrics_bucket(int64_t us)
{
    if (us < 4) return us < 0 ? 0 : (int)us;
    int e = 63 - __builtin_clzll((unsigned long long)us); /* 2^e <= us < 2^(e+1) */
    int b = 4 + (e - 2) * 4 + (int)((us >> (e - 2)) & 3);
    return b < AZ_METRICS_BUCKETS ? b : AZ_METRICS_BUCKETS - 1;
}

void az_metrics_bucket_range(int b, int64_t *lo, int64_t *hi)
{
    if (b < 4) {
        *lo = b < 0 ? 0 : b;
        *hi = *lo + 1;
        return;
    }
    int e = (b - 4) / 4 + 2, sub = (b - 4) % 4;
    *lo = (int64_t)(4 + sub) << (e - 2);
    *hi = b == AZ_METRICS_BUCKETS - 1 ? INT64_MAX : (int64_t)(5 + sub) << (e - 2);
}

double az_metrics_quantile(const uint32_t *hist, double q)
{
    uint64_t total = 0;
    for (int b = 0; b < AZ_METRICS_BUCKETS; b++) total += hist[b];
    if (total == 0) return 0;
    if (q > 1) q = 1;
    /* The rank of the wanted call, 1-based: ceil(q * total), at least the first. */
    double want = q * (double)total;
    uint64_t rank = (uint64_t)want;
    if ((double)rank < want) rank++;
    if (rank < 1) rank = 1;
    uint64_t below = 0;
    for (int b = 0; b < AZ_METRICS_BUCKETS; b++) {
        if (below + hist[b] >= rank) {
            int64_t lo, hi;
            az_metrics_bucket_range(b, &lo, &hi);
            if (hi == INT64_MAX) return (double)lo; /* open-ended: its floor is all we know */
            /* Calls spread evenly over the bucket; the rank-th sits in the middle of its share. */
            double frac = ((double)(rank - below) - 0.5) / (double)hist[b];
            return (double)lo + (double)(hi - lo) * frac;
        }
        below += hist[b];
    }
    return 0; /* not reached: rank <= total */
}

/* ---------------------------------------------------------------- counters */

static int cmp_name(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The slot of method: binary search over the sorted paths, else the "other" slot. */
static size_t slot_of(const az_metrics *m, const char *method)
{
    size_t lo = 0, hi = m->nnames;
    while (method && lo < hi) {
        size_t mid = (lo + hi) / 2;
        int c = strcmp(method, m->names[mid]);
        if (c == 0) return mid;
        if (c < 0) hi = mid;
        else lo = mid + 1;
    }
    return m->nnames;
}

void az_metrics_record(az_metrics *m, const char *method, int status, int64_t duration_us)
{
    if (!m) return;
    slot *s = &m->slots[slot_of(m, method)];
    atomic_fetch_add_explicit(&s->count, 1, memory_order_relaxed);
    if (status != 0) atomic_fetch_add_explicit(&s->errors, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&s->hist[az_metrics_bucket(duration_us)], 1, memory_order_relaxed);
    if (status >= 0 && status < NCODES) atomic_fetch_add_explicit(&s->codes[status], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&s->sum_us, (uint64_t)(duration_us > 0 ? duration_us : 0), memory_order_relaxed);
}

void az_metrics_observe(void *arg, az_call *c, const char *method, int status, int64_t duration_us)
{
    (void)c;
    az_metrics_record(arg, method, status, duration_us);
}

az_metrics_counts *az_metrics_counts_new(const az_metrics *m)
{
    size_t nslots = m->nnames + 1;
    az_metrics_counts *c = calloc(1, sizeof *c + nslots * SLOT_WORDS * sizeof(uint32_t));
    if (c) c->nslots = nslots;
    return c;
}

void az_metrics_counts_free(az_metrics_counts *c) { free(c); }

void az_metrics_counts_read(az_metrics *m, int64_t now_us, az_metrics_counts *out)
{
    out->t_us = now_us;
    for (size_t i = 0; i < out->nslots; i++) {
        const slot *s = &m->slots[i];
        uint32_t *v = &out->v[i * SLOT_WORDS];
        v[0] = atomic_load_explicit(&s->count, memory_order_relaxed);
        v[1] = atomic_load_explicit(&s->errors, memory_order_relaxed);
        for (int b = 0; b < AZ_METRICS_BUCKETS; b++)
            v[2 + b] = atomic_load_explicit(&s->hist[b], memory_order_relaxed);
    }
}

az_err az_metrics_delta(const az_metrics *m, const az_metrics_counts *prev,
                        const az_metrics_counts *cur, az_arena *a,
                        Agentz__V1__MetricsSnapshot **out, char *msg)
{
    *out = NULL;
    Agentz__V1__MetricsSnapshot *snap = az_arena_alloc(a, sizeof *snap);
    if (!snap) return az_fail(msg, AZ_ERR_NOMEM, "out of memory");
    agentz__v1__metrics_snapshot__init(snap);
    size_t nslots = cur->nslots < prev->nslots ? cur->nslots : prev->nslots;
    size_t active = 0;
    for (size_t i = 0; i < nslots; i++)
        if (cur->v[i * SLOT_WORDS] != prev->v[i * SLOT_WORDS]) active++;
    if (active) {
        snap->methods = az_arena_alloc(a, active * sizeof *snap->methods);
        if (!snap->methods) return az_fail(msg, AZ_ERR_NOMEM, "out of memory");
    }
    uint64_t total = 0;
    uint32_t hist[AZ_METRICS_BUCKETS];
    for (size_t i = 0; i < nslots; i++) {
        const uint32_t *p = &prev->v[i * SLOT_WORDS], *c = &cur->v[i * SLOT_WORDS];
        /* Unsigned subtraction: right across a wrap of the 32-bit counters. */
        uint32_t count = c[0] - p[0];
        if (!count) continue;
        total += count;
        for (int b = 0; b < AZ_METRICS_BUCKETS; b++) hist[b] = c[2 + b] - p[2 + b];
        Agentz__V1__MethodStats *ms = az_arena_alloc(a, sizeof *ms);
        if (!ms) return az_fail(msg, AZ_ERR_NOMEM, "out of memory");
        agentz__v1__method_stats__init(ms);
        ms->method = az_arena_strdup(a, i < m->nnames ? m->names[i] : AZ_METRICS_OTHER);
        if (!ms->method) return az_fail(msg, AZ_ERR_NOMEM, "out of memory");
        ms->count = count;
        ms->errors = c[1] - p[1];
        ms->p50_ms = az_metrics_quantile(hist, 0.50) / 1000.0;
        ms->p99_ms = az_metrics_quantile(hist, 0.99) / 1000.0;
        snap->methods[snap->n_methods++] = ms;
    }
    int64_t elapsed_us = cur->t_us - prev->t_us;
    snap->requests_per_second = elapsed_us > 0 ? (double)total * 1e6 / (double)elapsed_us : 0;
    *out = snap;
    return AZ_OK;
}

/* ---------------------------------------------------------------- gauges (metrics thread) */

static load_entry *load_for(az_metrics *m, const char *workspace, int64_t now)
{
    for (load_entry *e = m->loads; e; e = e->next) {
        if (strcmp(e->workspace, workspace) == 0) {
            e->used_ms = now;
            return e;
        }
    }
    load_entry *e = calloc(1, sizeof *e);
    if (!e) return NULL;
    snprintf(e->workspace, sizeof e->workspace, "%s", workspace);
    e->at_ms = now - GAUGE_TTL_MS; /* stale: read at once */
    e->used_ms = now;
    e->next = m->loads;
    m->loads = e;
    return e;
}

/* Reads e's load. Returns 0 when PostgreSQL is unreachable or too slow, so the caller marks the
 * other workspaces down too instead of waiting a deadline for each. */
static int refresh_load(az_metrics *m, load_entry *e, int64_t now)
{
    e->at_ms = now;
    if (!m->src.pg) return 1;
    az_ctx ctx = {.workspace_id = e->workspace, .principal = "", .request_id = "metrics",
                  .deadline_ms = az_now_ms() + GAUGE_DEADLINE_MS};
    char msg[AZ_MSG_MAX];
    az_task_load load;
    az_err err = az_task_load_get(m->src.pg, &ctx, &load, msg);
    e->ok = err == AZ_OK;
    if (e->ok) e->load = load; /* on failure the last known load stays, flagged by postgres_ok */
    if (!e->ok && !m->pg_logged_fail) az_warn("metrics: cannot read the task load: %s", msg);
    m->pg_logged_fail = !e->ok;
    return err != AZ_ERR_UNAVAILABLE && err != AZ_ERR_DEADLINE && err != AZ_ERR_CANCELLED;
}

static void refresh_workers(az_metrics *m, int64_t now)
{
    m->workers_at_ms = now;
    if (!m->src.redis) return;
    char msg[AZ_MSG_MAX];
    int n = 0;
    az_err err = az_queue_workers(m->src.redis, m->worker_group, WORKER_IDLE_MS, &n, msg);
    m->redis_ok = err == AZ_OK;
    if (m->redis_ok) m->workers = n;
    if (!m->redis_ok && !m->workers_logged_fail) az_warn("metrics: cannot count workers: %s", msg);
    m->workers_logged_fail = !m->redis_ok;
}

static void evict_loads(az_metrics *m, int64_t now)
{
    for (load_entry **pp = &m->loads; *pp;) {
        load_entry *e = *pp;
        if (now - e->used_ms > GAUGE_EVICT_MS) {
            *pp = e->next;
            free(e);
        } else {
            pp = &e->next;
        }
    }
}

/* ---------------------------------------------------------------- streams */

static void unlink_locked(az_metrics *m, stream *s)
{
    if (s->prev_s) s->prev_s->next_s = s->next_s;
    else m->streams = s->next_s;
    if (s->next_s) s->next_s->prev_s = s->prev_s;
    s->prev_s = s->next_s = NULL;
    s->in_list = 0;
    m->nstreams--;
}

static void stream_free(stream *s)
{
    if (!s) return;
    az_metrics_counts_free(s->prev);
    free(s);
}

/* Runs exactly once per stream, when its call is over: drops the list's reference (unless
 * shutdown already did) and frees the stream. */
static void stream_done(az_call *c, void *arg)
{
    stream *s = arg;
    az_metrics *m = s->m;
    pthread_mutex_lock(&m->mu);
    int listed = s->in_list;
    if (listed) unlink_locked(m, s);
    pthread_mutex_unlock(&m->mu);
    if (listed) az_call_unref(c);
    stream_free(s);
}

az_err az_metrics_stream(az_metrics *m, az_call *c, int64_t interval_ms, char *msg)
{
    stream *s = calloc(1, sizeof *s);
    if (!s || !(s->prev = az_metrics_counts_new(m))) {
        stream_free(s);
        return az_fail(msg, AZ_ERR_NOMEM, "out of memory");
    }
    az_ctx ctx;
    az_call_ctx(c, &ctx);
    snprintf(s->workspace, sizeof s->workspace, "%s", ctx.workspace_id);
    s->m = m;
    s->c = c;
    s->interval_ms = interval_ms;
    int64_t now = az_now_ms();
    s->next_ms = now + interval_ms;
    az_metrics_counts_read(m, now * 1000, s->prev);

    pthread_mutex_lock(&m->mu);
    az_err err = AZ_OK;
    if (m->shutting_down) err = az_fail(msg, AZ_ERR_UNAVAILABLE, "server shutting down");
    else if (m->nstreams >= AZ_METRICS_MAX_STREAMS)
        err = az_fail(msg, AZ_ERR_EXHAUSTED, "too many metrics streams on this server (%d); try again later",
                      AZ_METRICS_MAX_STREAMS);
    if (err != AZ_OK) {
        pthread_mutex_unlock(&m->mu);
        stream_free(s);
        return err;
    }
    az_call_ref(c);
    s->next_s = m->streams;
    if (m->streams) m->streams->prev_s = s;
    m->streams = s;
    s->in_list = 1;
    m->nstreams++;
    pthread_mutex_unlock(&m->mu);
    /* Registered outside mu: it runs at once, on this thread, if the call is already over.
     * Until then s stays valid even if shutdown unlinks it: only the hook frees it. */
    az_call_on_done(c, stream_done, s);
    return AZ_OK;
}

size_t az_metrics_streams(az_metrics *m)
{
    pthread_mutex_lock(&m->mu);
    size_t n = m->nstreams;
    pthread_mutex_unlock(&m->mu);
    return n;
}

static Google__Protobuf__Timestamp *wall_now(az_arena *a)
{
    Google__Protobuf__Timestamp *t = az_arena_alloc(a, sizeof *t);
    if (!t) return NULL;
    google__protobuf__timestamp__init(t);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    t->seconds = ts.tv_sec;
    t->nanos = (int32_t)ts.tv_nsec;
    return t;
}

/* Sends s its snapshot (under m->mu): the counters' difference since its last one, and the
 * gauges. A failed send ends the call, whose done hook then removes s. */
static void send_snapshot(az_metrics *m, stream *s, const load_entry *load, double lag_ms,
                          az_arena *a, int64_t now)
{
    char msg[AZ_MSG_MAX];
    Agentz__V1__MetricsSnapshot *snap;
    Agentz__V1__Event *ev = az_arena_alloc(a, sizeof *ev);
    if (!ev || az_metrics_delta(m, s->prev, m->cur, a, &snap, msg) != AZ_OK) {
        az_warn("metrics: cannot build a snapshot: out of memory");
        return; /* the stream keeps its old copy: the next snapshot covers both intervals */
    }
    if (load) {
        snap->queue_depth = load->load.queued;
        snap->tasks_running = load->load.running;
        snap->tasks_per_minute = (double)load->load.last_minute;
        snap->postgres_ok = load->ok;
    }
    snap->workers = m->workers;
    snap->redis_ok = m->redis_ok;
    snap->fanout_lag_ms = lag_ms;
    agentz__v1__event__init(ev);
    ev->time = wall_now(a);
    ev->payload_case = AGENTZ__V1__EVENT__PAYLOAD_METRICS;
    ev->metrics = snap;
    az_call_send(s->c, &ev->base);
    memcpy(s->prev, m->cur, sizeof *m->cur + m->cur->nslots * SLOT_WORDS * sizeof(uint32_t));
    s->next_ms += s->interval_ms;
    if (s->next_ms <= now) s->next_ms = now + s->interval_ms; /* fell behind: do not burst */
}

static int due(const stream *s, int64_t now) { return s->next_ms <= now + SLACK_MS; }

/* One tick: find the streams due, refresh the gauges they need (without the lock: I/O), read
 * the counters once, and send each due stream its snapshot. */
static void tick(az_metrics *m)
{
    int64_t now = az_now_ms();
    /* Workspaces of due streams; refreshed outside the lock, at most once each. */
    char (*want)[40] = NULL;
    size_t nwant = 0;
    pthread_mutex_lock(&m->mu);
    size_t cap = m->nstreams;
    if (cap) want = malloc(cap * sizeof *want);
    for (stream *s = m->streams; want && s; s = s->next_s) {
        if (!due(s, now)) continue;
        size_t i = 0;
        while (i < nwant && strcmp(want[i], s->workspace) != 0) i++;
        if (i == nwant) memcpy(want[nwant++], s->workspace, sizeof *want);
    }
    pthread_mutex_unlock(&m->mu);
    if (nwant == 0) {
        free(want);
        evict_loads(m, now);
        return;
    }
    int pg_up = 1;
    for (size_t i = 0; i < nwant; i++) {
        load_entry *e = load_for(m, want[i], now);
        if (!e || now - e->at_ms < GAUGE_TTL_MS) continue;
        if (pg_up) {
            pg_up = refresh_load(m, e, now);
        } else {
            e->ok = 0;
            e->at_ms = now;
        }
    }
    free(want);
    if (now - m->workers_at_ms >= GAUGE_TTL_MS) refresh_workers(m, now);
    double lag = m->src.fanout_lag_ms ? m->src.fanout_lag_ms(m->src.fanout_arg) : 0;

    now = az_now_ms();
    az_metrics_counts_read(m, now * 1000, m->cur);
    az_arena *a = az_arena_new(0);
    if (!a) {
        az_warn("metrics: cannot send snapshots: out of memory");
        return;
    }
    pthread_mutex_lock(&m->mu);
    for (stream *s = m->streams; s; s = s->next_s) {
        if (!due(s, now)) continue;
        const load_entry *e = NULL;
        for (e = m->loads; e && strcmp(e->workspace, s->workspace) != 0; e = e->next) {
        }
        send_snapshot(m, s, e, lag, a, now);
    }
    pthread_mutex_unlock(&m->mu);
    az_arena_free(a);
    evict_loads(m, now);
}

static void *metrics_main(void *arg)
{
    az_metrics *m = arg;
    pthread_mutex_lock(&m->mu);
    while (!m->stop) {
        struct timespec until;
        clock_gettime(CLOCK_MONOTONIC, &until);
        until.tv_nsec += TICK_MS * 1000000L;
        if (until.tv_nsec >= 1000000000L) {
            until.tv_sec++;
            until.tv_nsec -= 1000000000L;
        }
        int rc = 0;
        while (!m->stop && rc != ETIMEDOUT) rc = pthread_cond_timedwait(&m->cv, &m->mu, &until);
        if (m->stop) break;
        pthread_mutex_unlock(&m->mu);
        tick(m);
        pthread_mutex_lock(&m->mu);
    }
    pthread_mutex_unlock(&m->mu);
    return NULL;
}

/* ---------------------------------------------------------------- Prometheus */

/* Every workspace's tasks by status, and the outbox backlog with the age of its oldest event:
 * system work, cheap (an index scan of tasks by status; event_queue holds unrelayed ids only). */
static const char PROM_TASKS_SQL[] = "SELECT status, count(*) FROM tasks GROUP BY status";
static const char PROM_OUTBOX_SQL[] =
    "SELECT count(*), COALESCE(EXTRACT(epoch FROM clock_timestamp() - min(e.create_time)), 0)::float8"
    " FROM event_queue q JOIN events e ON e.id = q.id";

/* Refreshes the cached PostgreSQL gauges when older than GAUGE_TTL_MS. */
static void prom_refresh(az_metrics *m)
{
    int64_t now = az_now_ms();
    if (m->prom_at_ms && now - m->prom_at_ms < GAUGE_TTL_MS) return;
    m->prom_at_ms = now;
    char msg[AZ_MSG_MAX];
    az_ctx ctx = {.deadline_ms = now + GAUGE_DEADLINE_MS};
    az_pgconn *c = NULL;
    PGresult *r = NULL;
    az_err err = az_pg_acquire(m->src.pg, &ctx, &c, msg);
    if (err == AZ_OK) err = az_pg_exec(c, &ctx, PROM_TASKS_SQL, 0, NULL, &r, msg);
    if (err == AZ_OK) {
        memset(m->prom_tasks, 0, sizeof m->prom_tasks);
        for (int i = 0; i < PQntuples(r); i++) {
            int st = atoi(PQgetvalue(r, i, 0));
            if (st >= 1 && st <= 7) m->prom_tasks[st] = atoll(PQgetvalue(r, i, 1));
        }
        PQclear(r);
        r = NULL;
        err = az_pg_exec(c, &ctx, PROM_OUTBOX_SQL, 0, NULL, &r, msg);
    }
    if (err == AZ_OK && PQntuples(r) == 1) {
        m->prom_outbox = atoll(PQgetvalue(r, 0, 0));
        m->prom_outbox_lag_s = m->prom_outbox ? atof(PQgetvalue(r, 0, 1)) : 0;
    }
    PQclear(r);
    az_pg_release(c);
    m->prom_ok = err == AZ_OK;
    if (!m->prom_ok && !m->prom_logged_fail) az_warn("metrics: cannot read the task and outbox gauges: %s", msg);
    m->prom_logged_fail = !m->prom_ok;
}

void az_metrics_prom(void *arg, struct az_prom_out *o)
{
    az_metrics *m = arg;
    size_t nslots = m->nnames + 1;
    az_prom_family(o, "agentz_rpc_requests_total", "counter",
                   "gRPC calls finished, by method and status code (unregistered methods as \"other\").");
    for (size_t i = 0; i < nslots; i++) {
        const char *name = i < m->nnames ? m->names[i] : AZ_METRICS_OTHER;
        for (int k = 0; k < NCODES; k++) {
            uint64_t v = atomic_load_explicit(&m->slots[i].codes[k], memory_order_relaxed);
            if (!v) continue;
            const char *l[] = {"method", name, "code", az_grpc_status_name(k), NULL};
            az_prom_sample(o, "agentz_rpc_requests_total", l, (double)v);
        }
    }
    az_prom_family(o, "agentz_rpc_duration_seconds", "histogram", "gRPC call duration, by method.");
    for (size_t i = 0; i < nslots; i++) {
        const slot *sl = &m->slots[i];
        uint64_t counts[AZ_PROM_NBUCKETS + 1] = {0}, total = 0;
        for (int b = 0; b < AZ_METRICS_BUCKETS; b++) {
            uint32_t v = atomic_load_explicit(&sl->hist[b], memory_order_relaxed);
            if (!v) continue;
            int64_t lo, hi;
            az_metrics_bucket_range(b, &lo, &hi);
            /* The coarse bounds are edges of the fine buckets: a fine bucket lies in one. */
            counts[az_prom_bucket(lo)] += v;
            total += v;
        }
        if (!total) continue;
        const char *l[] = {"method", i < m->nnames ? m->names[i] : AZ_METRICS_OTHER, NULL};
        az_prom_histogram(o, "agentz_rpc_duration_seconds", l, counts,
                          (double)atomic_load_explicit(&sl->sum_us, memory_order_relaxed) / 1e6);
    }
    az_prom_family(o, "agentz_streams_open", "gauge", "gRPC streams open in this process, by kind (watch, metrics).");
    const char *lw[] = {"kind", "watch", NULL}, *lm[] = {"kind", "metrics", NULL};
    az_prom_sample(o, "agentz_streams_open", lw, m->src.watch_streams ? (double)m->src.watch_streams(m->src.watch_arg) : 0);
    az_prom_sample(o, "agentz_streams_open", lm, (double)az_metrics_streams(m));
    if (!m->src.pg) return;

    prom_refresh(m);
    static const char *const STATES[8] = {NULL, "pending", "queued", "running", "backoff", "succeeded", "failed", "cancelled"};
    az_prom_family(o, "agentz_tasks_queued", "gauge", "Tasks waiting to be claimed by a worker, all workspaces.");
    az_prom_sample(o, "agentz_tasks_queued", NULL, (double)m->prom_tasks[2]);
    az_prom_family(o, "agentz_tasks", "gauge", "Tasks by state, all workspaces.");
    for (int st = 1; st <= 7; st++) {
        const char *l[] = {"state", STATES[st], NULL};
        az_prom_sample(o, "agentz_tasks", l, (double)m->prom_tasks[st]);
    }
    az_prom_family(o, "agentz_outbox_pending", "gauge", "Committed events not yet relayed to Redis.");
    az_prom_sample(o, "agentz_outbox_pending", NULL, (double)m->prom_outbox);
    az_prom_family(o, "agentz_outbox_lag_seconds", "gauge", "Age of the oldest event not yet relayed; 0 when none.");
    az_prom_sample(o, "agentz_outbox_lag_seconds", NULL, m->prom_outbox_lag_s);
    az_prom_family(o, "agentz_postgres_up", "gauge", "1 when the last query for these gauges succeeded.");
    az_prom_sample(o, "agentz_postgres_up", NULL, m->prom_ok);
    az_pg_stats_t ps;
    az_pg_stats(m->src.pg, &ps);
    az_prom_family(o, "agentz_pg_pool_connections", "gauge", "PostgreSQL pool connections, by state (busy, idle).");
    const char *lb[] = {"state", "busy", NULL}, *li[] = {"state", "idle", NULL};
    az_prom_sample(o, "agentz_pg_pool_connections", lb, ps.busy);
    az_prom_sample(o, "agentz_pg_pool_connections", li, ps.size - ps.busy);
}

/* ---------------------------------------------------------------- lifecycle */

az_err az_metrics_new(const az_method *const *tables, const size_t *counts, size_t ntables,
                      const az_metrics_sources *src, az_metrics **out, char *msg)
{
    *out = NULL;
    az_metrics *m = calloc(1, sizeof *m);
    if (!m) return az_fail(msg, AZ_ERR_NOMEM, "out of memory");
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC); /* ticks must not jump with the wall clock */
    pthread_cond_init(&m->cv, &ca);
    pthread_condattr_destroy(&ca);
    pthread_mutex_init(&m->mu, NULL);
    size_t n = 0;
    for (size_t t = 0; t < ntables; t++) n += counts[t];
    m->names = calloc(n ? n : 1, sizeof *m->names);
    int oom = !m->names;
    for (size_t t = 0; !oom && t < ntables; t++)
        for (size_t i = 0; !oom && i < counts[t]; i++)
            if (!(m->names[m->nnames++] = strdup(tables[t][i].path))) oom = 1;
    if (!oom) {
        qsort(m->names, m->nnames, sizeof *m->names, cmp_name);
        /* A path in two tables is one method. */
        size_t k = 0;
        for (size_t i = 0; i < m->nnames; i++) {
            if (k && strcmp(m->names[k - 1], m->names[i]) == 0) free(m->names[i]);
            else m->names[k++] = m->names[i];
        }
        m->nnames = k;
    }
    if (src) m->src = *src;
    if (!oom) oom = !(m->worker_group = strdup(src && src->worker_group ? src->worker_group : ""));
    if (!oom) oom = !(m->slots = calloc(m->nnames + 1, sizeof *m->slots));
    if (!oom) oom = !(m->cur = az_metrics_counts_new(m));
    if (oom) {
        az_metrics_free(m);
        return az_fail(msg, AZ_ERR_NOMEM, "out of memory");
    }
    m->src.worker_group = m->worker_group;
    *out = m;
    return AZ_OK;
}

az_err az_metrics_start(az_metrics *m, char *msg)
{
    pthread_mutex_lock(&m->mu);
    if (m->started) {
        pthread_mutex_unlock(&m->mu);
        return az_fail(msg, AZ_ERR_PRECONDITION, "metrics already started");
    }
    int rc = pthread_create(&m->thread, NULL, metrics_main, m);
    if (rc == 0) m->started = 1;
    pthread_mutex_unlock(&m->mu);
    if (rc != 0) return az_fail(msg, AZ_ERR_INTERNAL, "cannot start the metrics thread: %s", strerror(rc));
    return AZ_OK;
}

void az_metrics_shutdown(void *arg)
{
    az_metrics *m = arg;
    if (!m) return;
    pthread_mutex_lock(&m->mu);
    m->shutting_down = 1;
    pthread_mutex_unlock(&m->mu);
    /* Finish outside mu, one stream at a time: the list's reference keeps each call alive
     * after unlinking, while its done hook may free the stream concurrently. */
    for (;;) {
        pthread_mutex_lock(&m->mu);
        stream *s = m->streams;
        az_call *c = NULL;
        if (s) {
            c = s->c;
            unlink_locked(m, s);
        }
        pthread_mutex_unlock(&m->mu);
        if (!c) break;
        az_call_finish(c, AZ_ERR_UNAVAILABLE, "server shutting down");
        az_call_unref(c);
    }
}

void az_metrics_free(az_metrics *m)
{
    if (!m) return;
    pthread_mutex_lock(&m->mu);
    m->stop = 1;
    int started = m->started;
    pthread_cond_broadcast(&m->cv);
    pthread_mutex_unlock(&m->mu);
    if (started) pthread_join(m->thread, NULL);
    az_metrics_shutdown(m);
    pthread_mutex_destroy(&m->mu);
    pthread_cond_destroy(&m->cv);
    while (m->loads) {
        load_entry *e = m->loads;
        m->loads = e->next;
        free(e);
    }
    for (size_t i = 0; m->names && i < m->nnames; i++) free(m->names[i]);
    free(m->names);
    free(m->slots);
    free(m->cur);
    free(m->worker_group);
    free(m);
}
