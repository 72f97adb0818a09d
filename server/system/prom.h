/* Prometheus metrics (docs/metrics.md, "Prometheus"): the process-wide counters the hot paths
 * bump (LLM calls, gateway HTTP requests, pool waits, Redis errors, in-flight model calls), the
 * text exposition format 0.0.4 they and the registered collectors are rendered in, and the small
 * h2o listener that serves GET /metrics on its own libuv loop and thread. */
#ifndef AZ_PROM_H
#define AZ_PROM_H

#include <stddef.h>
#include <stdint.h>

#include "core/err.h"

/* Histogram buckets: le = 2^k microseconds for k = 6..27 (64 µs to about 134 s), then +Inf.
 * They are edges of system/metrics' fine histogram, so both render exactly. */
#define AZ_PROM_BUCKET_MIN_LOG2 6
#define AZ_PROM_NBUCKETS 22 /* finite bounds; index AZ_PROM_NBUCKETS is +Inf */
/* Distinct provider names counted separately; later ones are counted as "other". */
#define AZ_PROM_MAX_PROVIDERS 32
/* Distinct gateway route labels; later ones are counted as "unmatched". */
#define AZ_PROM_MAX_ROUTES 256
/* The label of requests no route matched, and of names past the caps. */
#define AZ_PROM_UNMATCHED "unmatched"
#define AZ_PROM_OTHER "other"

/* ---- the exposition writer ---- */

/* A growing text buffer; once an allocation fails it stays failed (az_prom_out_text NULL). */
typedef struct az_prom_out {
    char *buf;
    size_t len, cap;
    int failed;
} az_prom_out;

void az_prom_out_init(az_prom_out *o);
void az_prom_out_free(az_prom_out *o);
/* The text so far (NUL-terminated), or NULL after an allocation failed. Owned by o. */
const char *az_prom_out_text(const az_prom_out *o);

/* Writes "# HELP name help" (help escaped) and "# TYPE name type" (counter, gauge, histogram). */
void az_prom_family(az_prom_out *o, const char *name, const char *type, const char *help);

/* Writes one sample "name{k="v",...} value". labels is NULL or k0, v0, k1, v1, ..., NULL; values
 * are escaped (backslash, double quote, newline). Integers print without exponent; NaN and the
 * infinities as NaN, +Inf, -Inf. */
void az_prom_sample(az_prom_out *o, const char *name, const char *const *labels, double v);

/* Writes a histogram's _bucket{...,le} lines (cumulative over counts[0..AZ_PROM_NBUCKETS], the
 * last being +Inf), then _sum (seconds) and _count (the +Inf bucket). */
void az_prom_histogram(az_prom_out *o, const char *name, const char *const *labels,
                       const uint64_t *counts, double sum_seconds);

/* The bucket index of a duration in µs (negative counts as 0): the first k with us < 2^k µs. */
int az_prom_bucket(int64_t us);

/* The upper bound of bucket i in seconds (i < AZ_PROM_NBUCKETS). */
double az_prom_bucket_le(int i);

/* ---- histograms and counters of this process ---- */

typedef struct az_prom_hist {
    _Atomic uint64_t n[AZ_PROM_NBUCKETS + 1];
    _Atomic uint64_t sum_us;
} az_prom_hist;

/* Counts one observation; lock-free, no allocation. */
void az_prom_hist_observe(az_prom_hist *h, int64_t us);

/* Copies h's counts (AZ_PROM_NBUCKETS + 1 of them) and returns the sum in seconds. */
double az_prom_hist_read(const az_prom_hist *h, uint64_t *counts);

/* Hooks, callable from any thread, lock-free after a label's first use (that one takes a
 * short mutex to add the name). */

/* One finished model call: provider ("openai"; NULL = "other"), its duration, tokens, cost and
 * whether it failed (a cancellation is not a failure). */
void az_prom_llm_call(const char *provider, int64_t duration_us, int64_t prompt_tokens,
                      int64_t completion_tokens, double cost_usd, int failed);

/* Model calls in flight in this process: +1 when one starts, -1 when it is freed. */
void az_prom_llm_inflight(int delta);

/* Time a caller waited for a pooled PostgreSQL connection (whether it got one or not). */
void az_prom_pg_wait(int64_t us);

/* One failed Redis command (unreachable server or error reply). */
void az_prom_redis_error(void);

/* Gateway streams open, by kind. */
typedef enum az_prom_stream_kind {
    AZ_PROM_STREAM_SSE = 0, /* SSE and NDJSON */
    AZ_PROM_STREAM_WEBSOCKET,
    AZ_PROM_STREAM_GRPCWEB, /* grpc-web and Connect server streams */
    AZ_PROM_STREAM__COUNT
} az_prom_stream_kind;
void az_prom_http_stream(az_prom_stream_kind kind, int delta);

/* One answered gateway request: route (a template from the route table, a gRPC path, a local
 * path, or NULL = AZ_PROM_UNMATCHED), its HTTP method ("GET"; anything not GET, HEAD, POST, PUT,
 * PATCH, DELETE or OPTIONS is "OTHER"), status and duration. */
void az_prom_http_request(const char *route, const char *method, int status, int64_t duration_us);

/* ---- what /metrics shows ---- */

/* The families this process has; the others are left out of the exposition. */
enum {
    AZ_PROM_SHOW_LLM = 1,    /* model calls (worker role) */
    AZ_PROM_SHOW_HTTP = 2,   /* gateway requests and streams */
    AZ_PROM_SHOW_REDIS = 4,  /* Redis errors */
    AZ_PROM_SHOW_PGWAIT = 8, /* pool wait histogram */
};

/* Sets agentz_build_info's labels and the families shown (strings copied; call before serving). */
void az_prom_set_info(const char *version, const char *role, int show);

/* A collector adds families at scrape time (called on the listener's thread, one scrape at a
 * time, so it may keep caches without a lock of its own). At most 8. AZ_ERR_EXHAUSTED past that. */
typedef void (*az_prom_collect_fn)(void *arg, az_prom_out *o);
az_err az_prom_add_collector(az_prom_collect_fn fn, void *arg, char *msg);
/* Removes it; waits for a scrape that is running it. */
void az_prom_remove_collector(az_prom_collect_fn fn, void *arg);

/* Renders the whole exposition into o: build info, process metrics, the counters above, then the
 * collectors in the order they were added. */
void az_prom_render(az_prom_out *o);

/* ---- the listener ---- */

typedef struct az_prom_server az_prom_server;

/* Binds listen ("127.0.0.1:9464", "[::]:0", "0.0.0.0:9464"; port 0 picks one) and serves
 * GET/HEAD /metrics (200, text/plain; version=0.0.4) and 404 for anything else on a thread of its
 * own. On failure *out is NULL, nothing runs and msg says why: AZ_ERR_INVALID (not host:port),
 * AZ_ERR_UNAVAILABLE (cannot bind; msg has the system's reason), AZ_ERR_INTERNAL. */
az_err az_prom_server_new(const char *listen, az_prom_server **out, char *msg);

/* The bound port. */
int az_prom_server_port(const az_prom_server *s);

/* Stops serving (closes the listener and every connection), joins the thread and frees s;
 * accepts NULL. */
void az_prom_server_free(az_prom_server *s);

/* "http://HOST:PORT/metrics" for a listen address and its bound port (0.0.0.0 and :: as
 * loopback, as a scraper on this host reaches it), into out (size bytes). */
void az_prom_url(const char *listen, int port, char *out, size_t size);

#endif
