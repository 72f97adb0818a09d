/* Prometheus metrics: fixed-size, lock-free counters the hot paths bump, label tables that only
 * grow up to their caps (so what clients send can never grow memory), the text exposition
 * format 0.0.4, and an h2o server on its own libuv loop that answers GET /metrics. */
#include "prom.h"

#include <dirent.h>
#include <h2o.h>
#include <math.h>
#include <netdb.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include "core/log.h"

#define MAX_COLLECTORS 8
#define NAME_MAX_LEN 160 /* a label value longer than this is counted under the overflow name */
#define STOP_POLL_MS 20  /* how often a stopping listener checks that its connections are gone */
#define STOP_WAIT_MS 2000

/* ---------------------------------------------------------------- the exposition writer */

void az_prom_out_init(az_prom_out *o) { *o = (az_prom_out){0}; }

void az_prom_out_free(az_prom_out *o)
{
    free(o->buf);
    *o = (az_prom_out){0};
}

const char *az_prom_out_text(const az_prom_out *o)
{
    if (o->failed) return NULL;
    return o->buf ? o->buf : "";
}

static void put(az_prom_out *o, const char *s, size_t n)
{
    if (o->failed) return;
    if (o->len + n + 1 > o->cap) {
        size_t cap = o->cap ? o->cap : 4096;
        while (o->len + n + 1 > cap) cap *= 2;
        char *b = realloc(o->buf, cap);
        if (!b) {
            o->failed = 1;
            return;
        }
        o->buf = b;
        o->cap = cap;
    }
    memcpy(o->buf + o->len, s, n);
    o->len += n;
    o->buf[o->len] = '\0';
}

static void puts_(az_prom_out *o, const char *s) { put(o, s, strlen(s)); }

/* s with backslash and newline escaped, and double quotes too when quote is set (label values;
 * HELP text leaves them alone). */
static void put_escaped(az_prom_out *o, const char *s, int quote)
{
    const char *run = s;
    for (; *s; s++) {
        const char *esc = *s == '\\' ? "\\\\" : *s == '\n' ? "\\n" : quote && *s == '"' ? "\\\"" : NULL;
        if (!esc) continue;
        put(o, run, (size_t)(s - run));
        puts_(o, esc);
        run = s + 1;
    }
    put(o, run, (size_t)(s - run));
}

void az_prom_family(az_prom_out *o, const char *name, const char *type, const char *help)
{
    puts_(o, "# HELP ");
    puts_(o, name);
    puts_(o, " ");
    put_escaped(o, help, 0);
    puts_(o, "\n# TYPE ");
    puts_(o, name);
    puts_(o, " ");
    puts_(o, type);
    puts_(o, "\n");
}

static void put_value(az_prom_out *o, double v)
{
    char num[64];
    if (isnan(v)) snprintf(num, sizeof num, "NaN");
    else if (isinf(v)) snprintf(num, sizeof num, "%s", v > 0 ? "+Inf" : "-Inf");
    else if (v == floor(v) && fabs(v) < 9e15) snprintf(num, sizeof num, "%.0f", v);
    else {
        /* The shortest of 15 or 17 digits that reads back as v. */
        snprintf(num, sizeof num, "%.15g", v);
        if (strtod(num, NULL) != v) snprintf(num, sizeof num, "%.17g", v);
    }
    puts_(o, num);
}

/* name{labels[,extra_k="extra_v"]} */
static void put_series(az_prom_out *o, const char *name, const char *suffix,
                       const char *const *labels, const char *extra_k, const char *extra_v)
{
    puts_(o, name);
    if (suffix) puts_(o, suffix);
    int any = 0;
    for (size_t i = 0; labels && labels[i] && labels[i + 1]; i += 2) {
        puts_(o, any ? "," : "{");
        puts_(o, labels[i]);
        puts_(o, "=\"");
        put_escaped(o, labels[i + 1], 1);
        puts_(o, "\"");
        any = 1;
    }
    if (extra_k) {
        puts_(o, any ? "," : "{");
        puts_(o, extra_k);
        puts_(o, "=\"");
        put_escaped(o, extra_v, 1);
        puts_(o, "\"");
        any = 1;
    }
    if (any) puts_(o, "}");
    puts_(o, " ");
}

void az_prom_sample(az_prom_out *o, const char *name, const char *const *labels, double v)
{
    put_series(o, name, NULL, labels, NULL, NULL);
    put_value(o, v);
    puts_(o, "\n");
}

int az_prom_bucket(int64_t us)
{
    if (us < ((int64_t)1 << AZ_PROM_BUCKET_MIN_LOG2)) return 0;
    int e = 63 - __builtin_clzll((unsigned long long)us); /* 2^e <= us < 2^(e+1) */
    int b = e - AZ_PROM_BUCKET_MIN_LOG2 + 1;
    return b > AZ_PROM_NBUCKETS ? AZ_PROM_NBUCKETS : b;
}

double az_prom_bucket_le(int i) { return ldexp(1.0, AZ_PROM_BUCKET_MIN_LOG2 + i) / 1e6; }

void az_prom_histogram(az_prom_out *o, const char *name, const char *const *labels,
                       const uint64_t *counts, double sum_seconds)
{
    uint64_t cum = 0;
    char le[32];
    for (int i = 0; i <= AZ_PROM_NBUCKETS; i++) {
        cum += counts[i];
        if (i < AZ_PROM_NBUCKETS) snprintf(le, sizeof le, "%.6f", az_prom_bucket_le(i));
        else snprintf(le, sizeof le, "+Inf");
        put_series(o, name, "_bucket", labels, "le", le);
        put_value(o, (double)cum);
        puts_(o, "\n");
    }
    put_series(o, name, "_sum", labels, NULL, NULL);
    put_value(o, sum_seconds);
    puts_(o, "\n");
    put_series(o, name, "_count", labels, NULL, NULL);
    put_value(o, (double)cum);
    puts_(o, "\n");
}

void az_prom_hist_observe(az_prom_hist *h, int64_t us)
{
    if (us < 0) us = 0;
    atomic_fetch_add_explicit(&h->n[az_prom_bucket(us)], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&h->sum_us, (uint64_t)us, memory_order_relaxed);
}

double az_prom_hist_read(const az_prom_hist *h, uint64_t *counts)
{
    for (int i = 0; i <= AZ_PROM_NBUCKETS; i++)
        counts[i] = atomic_load_explicit(&h->n[i], memory_order_relaxed);
    return (double)atomic_load_explicit(&h->sum_us, memory_order_relaxed) / 1e6;
}

/* ---------------------------------------------------------------- label tables */

/* Names interned once, up to cap; index 0 is the overflow name. Lookups read published slots
 * without a lock; insertions take mu. */
typedef struct names {
    pthread_mutex_t mu;
    const char *overflow;
    int cap, nslots;
    _Atomic int n;
    char (*name)[NAME_MAX_LEN + 1];
    _Atomic int *slot; /* 0 = empty, else index + 1 */
} names;

static uint32_t fnv(const char *s)
{
    uint32_t h = 2166136261u;
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 16777619u;
    return h;
}

/* The index of s, adding it while there is room; 0 (the overflow name) otherwise. */
static int intern(names *t, const char *s)
{
    if (!s || strlen(s) > NAME_MAX_LEN) return 0;
    uint32_t h = fnv(s);
    for (int probe = 0; probe < t->nslots; probe++) {
        int v = atomic_load_explicit(&t->slot[(h + (uint32_t)probe) % (uint32_t)t->nslots], memory_order_acquire);
        if (v == 0) break;
        if (strcmp(t->name[v - 1], s) == 0) return v - 1;
    }
    pthread_mutex_lock(&t->mu);
    int idx = 0;
    if (atomic_load(&t->n) == 0) {
        /* The overflow name first, so index 0 is always it. */
        snprintf(t->name[0], sizeof t->name[0], "%s", t->overflow);
        uint32_t oh = fnv(t->overflow) % (uint32_t)t->nslots;
        atomic_store_explicit(&t->slot[oh], 1, memory_order_release);
        atomic_store(&t->n, 1);
    }
    for (int probe = 0; probe < t->nslots; probe++) {
        uint32_t at = (h + (uint32_t)probe) % (uint32_t)t->nslots;
        int v = atomic_load_explicit(&t->slot[at], memory_order_relaxed);
        if (v && strcmp(t->name[v - 1], s) == 0) {
            idx = v - 1;
            break;
        }
        if (v) continue;
        int n = atomic_load(&t->n);
        if (n < t->cap) {
            snprintf(t->name[n], sizeof t->name[n], "%s", s);
            atomic_store(&t->n, n + 1);
            atomic_store_explicit(&t->slot[at], n + 1, memory_order_release);
            idx = n;
        }
        break;
    }
    pthread_mutex_unlock(&t->mu);
    return idx;
}

/* ---------------------------------------------------------------- the counters */

typedef struct llm_slot {
    az_prom_hist dur;
    _Atomic uint64_t prompt, completion, errors;
    _Atomic uint64_t cost_nusd; /* nano-dollars: integer adds stay exact and lock-free */
} llm_slot;

static const char *const HTTP_METHODS[] = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "OTHER"};
#define NHTTP_METHODS (sizeof HTTP_METHODS / sizeof *HTTP_METHODS)
/* The statuses the gateway answers; any other is counted as "other". */
static const int HTTP_CODES[] = {200, 201, 202, 204, 206, 301, 302, 304, 307, 308, 400, 401,
                                 403, 404, 405, 406, 408, 409, 410, 411, 412, 413, 414, 415,
                                 416, 422, 429, 431, 499, 500, 501, 502, 503, 504};
#define NHTTP_CODES (sizeof HTTP_CODES / sizeof *HTTP_CODES + 1)

typedef struct route_slot {
    _Atomic uint64_t n[NHTTP_METHODS][NHTTP_CODES];
    az_prom_hist dur;
} route_slot;

static char provider_names[AZ_PROM_MAX_PROVIDERS + 1][NAME_MAX_LEN + 1];
static _Atomic int provider_slots[2 * (AZ_PROM_MAX_PROVIDERS + 1)];
static names providers = {PTHREAD_MUTEX_INITIALIZER, AZ_PROM_OTHER, AZ_PROM_MAX_PROVIDERS + 1,
                          2 * (AZ_PROM_MAX_PROVIDERS + 1), 0, provider_names, provider_slots};
static llm_slot llm[AZ_PROM_MAX_PROVIDERS + 1];

static char route_names[AZ_PROM_MAX_ROUTES + 1][NAME_MAX_LEN + 1];
static _Atomic int route_slots[2 * (AZ_PROM_MAX_ROUTES + 1)];
static names routes = {PTHREAD_MUTEX_INITIALIZER, AZ_PROM_UNMATCHED, AZ_PROM_MAX_ROUTES + 1,
                       2 * (AZ_PROM_MAX_ROUTES + 1), 0, route_names, route_slots};
static route_slot http[AZ_PROM_MAX_ROUTES + 1];

static _Atomic int64_t llm_inflight;
static az_prom_hist pg_wait;
static _Atomic uint64_t redis_errors;
static _Atomic int64_t http_streams[AZ_PROM_STREAM__COUNT];

void az_prom_llm_call(const char *provider, int64_t duration_us, int64_t prompt_tokens,
                      int64_t completion_tokens, double cost_usd, int failed)
{
    llm_slot *s = &llm[intern(&providers, provider)];
    az_prom_hist_observe(&s->dur, duration_us);
    if (prompt_tokens > 0) atomic_fetch_add_explicit(&s->prompt, (uint64_t)prompt_tokens, memory_order_relaxed);
    if (completion_tokens > 0)
        atomic_fetch_add_explicit(&s->completion, (uint64_t)completion_tokens, memory_order_relaxed);
    if (cost_usd > 0)
        atomic_fetch_add_explicit(&s->cost_nusd, (uint64_t)llround(cost_usd * 1e9), memory_order_relaxed);
    if (failed) atomic_fetch_add_explicit(&s->errors, 1, memory_order_relaxed);
}

void az_prom_llm_inflight(int delta) { atomic_fetch_add_explicit(&llm_inflight, delta, memory_order_relaxed); }

void az_prom_pg_wait(int64_t us) { az_prom_hist_observe(&pg_wait, us); }

void az_prom_redis_error(void) { atomic_fetch_add_explicit(&redis_errors, 1, memory_order_relaxed); }

void az_prom_http_stream(az_prom_stream_kind kind, int delta)
{
    if ((unsigned)kind < AZ_PROM_STREAM__COUNT)
        atomic_fetch_add_explicit(&http_streams[kind], delta, memory_order_relaxed);
}

void az_prom_http_request(const char *route, const char *method, int status, int64_t duration_us)
{
    route_slot *s = &http[intern(&routes, route ? route : AZ_PROM_UNMATCHED)];
    size_t m = 0;
    while (m + 1 < NHTTP_METHODS && !(method && strcmp(method, HTTP_METHODS[m]) == 0)) m++;
    size_t c = 0;
    while (c + 1 < NHTTP_CODES && HTTP_CODES[c] != status) c++;
    atomic_fetch_add_explicit(&s->n[m][c], 1, memory_order_relaxed);
    az_prom_hist_observe(&s->dur, duration_us);
}

/* ---------------------------------------------------------------- rendering */

static struct {
    pthread_mutex_t mu; /* one scrape at a time; collectors added and removed under it */
    struct {
        az_prom_collect_fn fn;
        void *arg;
    } c[MAX_COLLECTORS];
    int n;
    char version[64], role[64];
    int show;
} reg = {.mu = PTHREAD_MUTEX_INITIALIZER};

void az_prom_set_info(const char *version, const char *role, int show)
{
    pthread_mutex_lock(&reg.mu);
    snprintf(reg.version, sizeof reg.version, "%s", version ? version : "");
    snprintf(reg.role, sizeof reg.role, "%s", role ? role : "");
    reg.show = show;
    pthread_mutex_unlock(&reg.mu);
}

az_err az_prom_add_collector(az_prom_collect_fn fn, void *arg, char *msg)
{
    pthread_mutex_lock(&reg.mu);
    int full = reg.n == MAX_COLLECTORS;
    if (!full) {
        reg.c[reg.n].fn = fn;
        reg.c[reg.n].arg = arg;
        reg.n++;
    }
    pthread_mutex_unlock(&reg.mu);
    return full ? az_fail(msg, AZ_ERR_EXHAUSTED, "at most %d metrics collectors", MAX_COLLECTORS) : AZ_OK;
}

void az_prom_remove_collector(az_prom_collect_fn fn, void *arg)
{
    pthread_mutex_lock(&reg.mu);
    for (int i = 0; i < reg.n; i++) {
        if (reg.c[i].fn != fn || reg.c[i].arg != arg) continue;
        memmove(&reg.c[i], &reg.c[i + 1], (size_t)(reg.n - i - 1) * sizeof reg.c[0]);
        reg.n--;
        break;
    }
    pthread_mutex_unlock(&reg.mu);
}

/* process_* from /proc/self (Linux), as the Prometheus client libraries name them. */
static void render_process(az_prom_out *o)
{
    double cpu = -1, start = -1, rss = -1, vsize = -1;
    char buf[2048];
    FILE *f = fopen("/proc/self/stat", "r");
    size_t n = f ? fread(buf, 1, sizeof buf - 1, f) : 0;
    if (f) fclose(f);
    buf[n] = '\0';
    /* The fields after the parenthesized command name, which may itself hold spaces. */
    const char *p = strrchr(buf, ')');
    unsigned long long utime, stime, starttime, vsz;
    long long rsspages;
    long tick = sysconf(_SC_CLK_TCK), page = sysconf(_SC_PAGESIZE);
    if (p && tick > 0 &&
        sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu %*d %*d %*d %*d %*d %*d %llu %llu %lld",
               &utime, &stime, &starttime, &vsz, &rsspages) == 5) {
        cpu = (double)(utime + stime) / (double)tick;
        rss = (double)rsspages * (double)page;
        vsize = (double)vsz;
        FILE *s = fopen("/proc/stat", "r");
        char line[256];
        while (s && fgets(line, sizeof line, s)) {
            unsigned long long btime;
            if (sscanf(line, "btime %llu", &btime) == 1) {
                start = (double)btime + (double)starttime / (double)tick;
                break;
            }
        }
        if (s) fclose(s);
    }
    double fds = -1;
    DIR *d = opendir("/proc/self/fd");
    if (d) {
        fds = 0;
        for (struct dirent *e; (e = readdir(d));)
            if (e->d_name[0] != '.') fds++;
        fds--; /* the directory stream's own descriptor */
        closedir(d);
    }
    struct rlimit rl;
    double maxfds = getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY ? (double)rl.rlim_cur : -1;
    static const struct {
        const char *name, *type, *help;
    } F[] = {
        {"process_cpu_seconds_total", "counter", "User and system CPU time spent, in seconds."},
        {"process_start_time_seconds", "gauge", "Start time of the process since the Unix epoch, in seconds."},
        {"process_resident_memory_bytes", "gauge", "Resident memory size in bytes."},
        {"process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes."},
        {"process_open_fds", "gauge", "Open file descriptors."},
        {"process_max_fds", "gauge", "The limit on open file descriptors."},
    };
    double v[] = {cpu, start, rss, vsize, fds, maxfds};
    for (size_t i = 0; i < sizeof F / sizeof *F; i++) {
        if (v[i] < 0) continue; /* not readable here: leave it out rather than lie */
        az_prom_family(o, F[i].name, F[i].type, F[i].help);
        az_prom_sample(o, F[i].name, NULL, v[i]);
    }
}

static void render_llm(az_prom_out *o)
{
    int n = atomic_load(&providers.n);
    uint64_t counts[AZ_PROM_NBUCKETS + 1];
    az_prom_family(o, "agentz_worker_inflight_calls", "gauge", "Model calls in flight in this process.");
    az_prom_sample(o, "agentz_worker_inflight_calls", NULL, (double)atomic_load(&llm_inflight));
    az_prom_family(o, "agentz_llm_request_duration_seconds", "histogram",
                   "Duration of model calls, from the request to the last byte, by provider.");
    for (int i = 0; i < n; i++) {
        double sum = az_prom_hist_read(&llm[i].dur, counts);
        const char *l[] = {"provider", providers.name[i], NULL};
        az_prom_histogram(o, "agentz_llm_request_duration_seconds", l, counts, sum);
    }
    az_prom_family(o, "agentz_llm_tokens_total", "counter", "Tokens of model calls, by provider and kind (prompt, completion).");
    for (int i = 0; i < n; i++) {
        const char *lp[] = {"provider", providers.name[i], "kind", "prompt", NULL};
        const char *lc[] = {"provider", providers.name[i], "kind", "completion", NULL};
        az_prom_sample(o, "agentz_llm_tokens_total", lp, (double)atomic_load(&llm[i].prompt));
        az_prom_sample(o, "agentz_llm_tokens_total", lc, (double)atomic_load(&llm[i].completion));
    }
    az_prom_family(o, "agentz_llm_cost_usd_total", "counter", "Cost of model calls in US dollars (the price table), by provider.");
    for (int i = 0; i < n; i++) {
        const char *l[] = {"provider", providers.name[i], NULL};
        az_prom_sample(o, "agentz_llm_cost_usd_total", l, (double)atomic_load(&llm[i].cost_nusd) / 1e9);
    }
    az_prom_family(o, "agentz_llm_errors_total", "counter", "Model calls that failed (not counting cancellations), by provider.");
    for (int i = 0; i < n; i++) {
        const char *l[] = {"provider", providers.name[i], NULL};
        az_prom_sample(o, "agentz_llm_errors_total", l, (double)atomic_load(&llm[i].errors));
    }
}

static void render_http(az_prom_out *o)
{
    static const char *const KINDS[AZ_PROM_STREAM__COUNT] = {"sse", "websocket", "grpcweb"};
    int n = atomic_load(&routes.n);
    az_prom_family(o, "agentz_http_requests_total", "counter", "Gateway HTTP requests answered, by route, method and status code.");
    for (int i = 0; i < n; i++) {
        for (size_t m = 0; m < NHTTP_METHODS; m++) {
            for (size_t c = 0; c < NHTTP_CODES; c++) {
                uint64_t v = atomic_load_explicit(&http[i].n[m][c], memory_order_relaxed);
                if (!v) continue;
                char code[16];
                if (c + 1 < NHTTP_CODES) snprintf(code, sizeof code, "%d", HTTP_CODES[c]);
                else snprintf(code, sizeof code, "%s", AZ_PROM_OTHER);
                const char *l[] = {"route", routes.name[i], "method", HTTP_METHODS[m], "code", code, NULL};
                az_prom_sample(o, "agentz_http_requests_total", l, (double)v);
            }
        }
    }
    az_prom_family(o, "agentz_http_duration_seconds", "histogram", "Gateway HTTP request duration, by route.");
    uint64_t counts[AZ_PROM_NBUCKETS + 1];
    for (int i = 0; i < n; i++) {
        double sum = az_prom_hist_read(&http[i].dur, counts);
        uint64_t total = 0;
        for (int b = 0; b <= AZ_PROM_NBUCKETS; b++) total += counts[b];
        if (!total) continue;
        const char *l[] = {"route", routes.name[i], NULL};
        az_prom_histogram(o, "agentz_http_duration_seconds", l, counts, sum);
    }
    az_prom_family(o, "agentz_http_streams_open", "gauge", "Gateway streams open, by kind (sse also counts NDJSON, grpcweb also Connect).");
    for (int k = 0; k < AZ_PROM_STREAM__COUNT; k++) {
        const char *l[] = {"kind", KINDS[k], NULL};
        az_prom_sample(o, "agentz_http_streams_open", l, (double)atomic_load(&http_streams[k]));
    }
}

void az_prom_render(az_prom_out *o)
{
    pthread_mutex_lock(&reg.mu);
    az_prom_family(o, "agentz_build_info", "gauge", "Always 1: the version and roles of this process.");
    const char *bl[] = {"version", reg.version, "role", reg.role, NULL};
    az_prom_sample(o, "agentz_build_info", bl, 1);
    render_process(o);
    if (reg.show & AZ_PROM_SHOW_LLM) render_llm(o);
    if (reg.show & AZ_PROM_SHOW_HTTP) render_http(o);
    if (reg.show & AZ_PROM_SHOW_PGWAIT) {
        uint64_t counts[AZ_PROM_NBUCKETS + 1];
        double sum = az_prom_hist_read(&pg_wait, counts);
        az_prom_family(o, "agentz_pg_pool_wait_seconds", "histogram", "Time to borrow a PostgreSQL connection from the pool.");
        az_prom_histogram(o, "agentz_pg_pool_wait_seconds", NULL, counts, sum);
    }
    if (reg.show & AZ_PROM_SHOW_REDIS) {
        az_prom_family(o, "agentz_redis_errors_total", "counter", "Redis commands that failed: server unreachable or an error reply.");
        az_prom_sample(o, "agentz_redis_errors_total", NULL, (double)atomic_load(&redis_errors));
    }
    for (int i = 0; i < reg.n; i++) reg.c[i].fn(reg.c[i].arg, o);
    pthread_mutex_unlock(&reg.mu);
}

/* ---------------------------------------------------------------- the listener */

typedef struct conn conn;
struct conn {
    uv_tcp_t tcp; /* first: h2o closes the handle and hands it back to on_conn_closed */
    conn *prev, *next;
    az_prom_server *s;
};

struct az_prom_server {
    uv_loop_t loop;
    uv_tcp_t listener;
    uv_async_t wake;
    uv_timer_t poll;
    h2o_globalconf_t config;
    h2o_context_t ctx;
    h2o_accept_ctx_t accept_ctx;
    int ctx_ready;
    pthread_t thread;
    int started;
    int port;
    atomic_int stopping;
    int64_t stop_deadline;
    conn *conns;
    int nconns;
};

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static const char CTYPE[] = "text/plain; version=0.0.4; charset=utf-8";

static int on_req(h2o_handler_t *self, h2o_req_t *req)
{
    (void)self;
    /* One response per connection: scrapes are seconds apart, and shutdown then only has to
     * wait for requests under way. */
    req->http1_is_persistent = 0;
    int get = h2o_memis(req->method.base, req->method.len, H2O_STRLIT("GET"));
    int head = h2o_memis(req->method.base, req->method.len, H2O_STRLIT("HEAD"));
    if (!(get || head) || !h2o_memis(req->path_normalized.base, req->path_normalized.len, H2O_STRLIT("/metrics"))) {
        h2o_send_error_generic(req, 404, "Not Found", "not found; the metrics are at GET /metrics\n", 0);
        return 0;
    }
    az_prom_out o;
    az_prom_out_init(&o);
    az_prom_render(&o);
    const char *text = az_prom_out_text(&o);
    if (!text) {
        az_prom_out_free(&o);
        h2o_send_error_generic(req, 500, "Internal Server Error", "out of memory\n", 0);
        return 0;
    }
    req->res.status = 200;
    req->res.reason = "OK";
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL, CTYPE, sizeof CTYPE - 1);
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CACHE_CONTROL, NULL, H2O_STRLIT("no-store"));
    /* h2o_send_inline copies the body into the request's pool and sends none for HEAD; the
     * length is ours to set, so HEAD says how long GET would be. */
    req->res.content_length = o.len;
    h2o_send_inline(req, text, o.len);
    az_prom_out_free(&o);
    return 0;
}

static void on_conn_closed(uv_handle_t *h)
{
    conn *c = (conn *)h;
    az_prom_server *s = c->s;
    if (c->prev) c->prev->next = c->next;
    else if (s->conns == c) s->conns = c->next;
    if (c->next) c->next->prev = c->prev;
    s->nconns--;
    free(c);
}

static void on_accept(uv_stream_t *listener, int status)
{
    az_prom_server *s = listener->loop->data;
    if (status != 0 || atomic_load(&s->stopping)) return;
    conn *c = calloc(1, sizeof *c);
    if (!c) return;
    uv_tcp_init(listener->loop, &c->tcp);
    if (uv_accept(listener, (uv_stream_t *)&c->tcp) != 0) {
        uv_close((uv_handle_t *)&c->tcp, (uv_close_cb)free);
        return;
    }
    c->s = s;
    c->next = s->conns;
    if (c->next) c->next->prev = c;
    s->conns = c;
    s->nconns++;
    h2o_socket_t *sock = h2o_uv_socket_create((uv_stream_t *)&c->tcp, on_conn_closed);
    if (!sock) {
        uv_close((uv_handle_t *)&c->tcp, on_conn_closed);
        return;
    }
    h2o_accept(&s->accept_ctx, sock);
}

/* While stopping: done once every connection is gone (or the wait is over). */
static void on_poll(uv_timer_t *t)
{
    az_prom_server *s = t->data;
    if (s->nconns == 0 || mono_ms() >= s->stop_deadline) uv_stop(&s->loop);
}

/* Stop requested: close the listener and shut every connection's socket down, so h2o sees the
 * end of its input and closes the connection itself (closing a handle it owns behind its back
 * would make it close it twice). */
static void on_wake(uv_async_t *a)
{
    az_prom_server *s = a->data;
    if (!atomic_load(&s->stopping)) return;
    if (!uv_is_closing((uv_handle_t *)&s->listener)) uv_close((uv_handle_t *)&s->listener, NULL);
    for (conn *c = s->conns; c; c = c->next) {
        uv_os_fd_t fd;
        if (uv_fileno((uv_handle_t *)&c->tcp, &fd) == 0) shutdown(fd, SHUT_RDWR);
    }
    s->stop_deadline = mono_ms() + STOP_WAIT_MS;
    uv_timer_start(&s->poll, on_poll, 0, STOP_POLL_MS);
}

static void *loop_main(void *arg)
{
    az_prom_server *s = arg;
    uv_run(&s->loop, UV_RUN_DEFAULT);
    return NULL;
}

static az_err bind_listener(az_prom_server *s, const char *listen, char *msg)
{
    const char *colon = listen ? strrchr(listen, ':') : NULL;
    if (!colon || !colon[1])
        return az_fail(msg, AZ_ERR_INVALID, "metrics listen address \"%s\" must be host:port", listen ? listen : "");
    char host[256];
    size_t hl = (size_t)(colon - listen);
    if (hl >= sizeof host) return az_fail(msg, AZ_ERR_INVALID, "metrics listen host is too long");
    memcpy(host, listen, hl);
    host[hl] = '\0';
    if (hl >= 2 && host[0] == '[' && host[hl - 1] == ']') {
        memmove(host, host + 1, hl - 2);
        host[hl - 2] = '\0';
    }
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE}, *ai = NULL;
    int rc = getaddrinfo(*host ? host : NULL, colon + 1, &hints, &ai);
    if (rc != 0) return az_fail(msg, AZ_ERR_INVALID, "metrics listen address %s: %s", listen, gai_strerror(rc));
    uv_tcp_init(&s->loop, &s->listener);
    int err = uv_tcp_bind(&s->listener, ai->ai_addr, 0);
    freeaddrinfo(ai);
    if (err == 0) err = uv_listen((uv_stream_t *)&s->listener, 128, on_accept);
    if (err != 0) return az_fail(msg, AZ_ERR_UNAVAILABLE, "cannot listen on %s for metrics: %s", listen, uv_strerror(err));
    struct sockaddr_storage sa;
    int sl = sizeof sa;
    uv_tcp_getsockname(&s->listener, (struct sockaddr *)&sa, &sl);
    s->port = sa.ss_family == AF_INET6 ? ntohs(((struct sockaddr_in6 *)&sa)->sin6_port)
                                       : ntohs(((struct sockaddr_in *)&sa)->sin_port);
    return AZ_OK;
}

az_err az_prom_server_new(const char *listen, az_prom_server **out, char *msg)
{
    *out = NULL;
    az_prom_server *s = calloc(1, sizeof *s);
    if (!s) return az_fail(msg, AZ_ERR_NOMEM, "out of memory");
    atomic_init(&s->stopping, 0);
    if (uv_loop_init(&s->loop) != 0) {
        free(s);
        return az_fail(msg, AZ_ERR_INTERNAL, "cannot create the metrics event loop");
    }
    s->loop.data = s;
    uv_async_init(&s->loop, &s->wake, on_wake);
    s->wake.data = s;
    uv_timer_init(&s->loop, &s->poll);
    s->poll.data = s;
    h2o_config_init(&s->config);
    s->config.server_name = h2o_iovec_init(H2O_STRLIT("agentz-metrics"));
    s->config.http1.req_timeout = 10000;
    h2o_hostconf_t *host = h2o_config_register_host(&s->config, h2o_iovec_init(H2O_STRLIT("default")), 65535);
    h2o_pathconf_t *path = h2o_config_register_path(host, "/", 0);
    h2o_handler_t *handler = h2o_create_handler(path, sizeof *handler);
    handler->on_req = on_req;
    h2o_context_init(&s->ctx, &s->loop, &s->config);
    s->ctx_ready = 1;
    s->accept_ctx.ctx = &s->ctx;
    s->accept_ctx.hosts = s->config.hosts;
    az_err err = bind_listener(s, listen, msg);
    if (err == AZ_OK && pthread_create(&s->thread, NULL, loop_main, s) != 0)
        err = az_fail(msg, AZ_ERR_INTERNAL, "cannot start the metrics thread");
    if (err != AZ_OK) {
        az_prom_server_free(s);
        return err;
    }
    s->started = 1;
    *out = s;
    return AZ_OK;
}

int az_prom_server_port(const az_prom_server *s) { return s->port; }

static void close_handle(uv_handle_t *h, void *arg)
{
    (void)arg;
    if (!uv_is_closing(h)) uv_close(h, NULL);
}

void az_prom_server_free(az_prom_server *s)
{
    if (!s) return;
    atomic_store(&s->stopping, 1);
    if (s->started) {
        uv_async_send(&s->wake);
        pthread_join(s->thread, NULL);
    }
    int leave = s->nconns > 0;
    if (s->ctx_ready && !leave) {
        h2o_timeout_t *ts[] = {&s->ctx.zero_timeout, &s->ctx.one_sec_timeout, &s->ctx.hundred_ms_timeout,
                               &s->ctx.handshake_timeout, &s->ctx.http1.req_timeout,
                               &s->ctx.http2.idle_timeout, &s->ctx.http2.graceful_shutdown_timeout,
                               &s->ctx.proxy.io_timeout};
        int idle = 1;
        for (size_t i = 0; i < sizeof ts / sizeof *ts; i++) idle &= h2o_linklist_is_empty(&ts[i]->_entries);
        /* h2o asserts that nothing waits on its timers when the context goes. */
        if (idle) {
            h2o_context_dispose(&s->ctx);
            h2o_config_dispose(&s->config);
        } else {
            az_warn("metrics listener shutdown: h2o still has timers armed; leaving its context to the process exit");
        }
    }
    if (!leave) {
        uv_walk(&s->loop, close_handle, NULL);
        uv_run(&s->loop, UV_RUN_DEFAULT);
        uv_loop_close(&s->loop);
        free(s);
    } else {
        /* A scraper that never finished its request: its connection (and so s) goes with the
         * process rather than being freed under h2o. */
        az_warn("metrics listener shutdown: %d connection(s) did not close; leaving them to the process exit", s->nconns);
    }
}

void az_prom_url(const char *listen, int port, char *out, size_t size)
{
    const char *colon = listen ? strrchr(listen, ':') : NULL;
    int hl = colon ? (int)(colon - listen) : 0;
    const char *host = listen;
    if (hl == 0 || (hl == 7 && strncmp(listen, "0.0.0.0", 7) == 0)) host = "127.0.0.1", hl = 9;
    else if (hl == 4 && strncmp(listen, "[::]", 4) == 0) host = "[::1]", hl = 5;
    snprintf(out, size, "http://%.*s:%d/metrics", hl, host, port);
}
