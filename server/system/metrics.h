/* Server metrics for SystemService.StreamMetrics: per-method call counts, errors and latency
 * histograms fed by the runtime's observer, gauges of the task load, workers and dependencies,
 * and the one thread that sends each stream a snapshot of what changed over its interval. */
#ifndef AZ_SYSTEM_METRICS_H
#define AZ_SYSTEM_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "agentz/v1/event.pb-c.h"
#include "core/arena.h"
#include "core/err.h"
#include "rpc/rpc.h"
#include "store/pgpool.h"
#include "store/redis.h"

/* Latency histogram: bucket b < 4 holds b µs; above, four buckets per power of two (a bucket is
 * at most 25% wide), the last one open-ended (from about 2.1 hours). */
#define AZ_METRICS_BUCKETS 128
/* Calls of unregistered methods (any path a client sends) are counted under this name. */
#define AZ_METRICS_OTHER "other"
/* Open StreamMetrics streams per process; each keeps a copy of the counters (about 0.5 KiB per
 * method), so this bounds the memory they take. */
#define AZ_METRICS_MAX_STREAMS 512
/* The stream interval bounds (StreamMetricsRequest.interval) and its default. */
#define AZ_METRICS_INTERVAL_MIN_MS 1000
#define AZ_METRICS_INTERVAL_MAX_MS 60000
#define AZ_METRICS_INTERVAL_DEFAULT_MS 5000

typedef struct az_metrics az_metrics;

/* Where the gauges come from; every member may be NULL/0. */
typedef struct az_metrics_sources {
    az_pg *pg;                /* task load (queue_depth, tasks_running, tasks_per_minute) and
                                 postgres_ok; NULL: zeros and postgres_ok false */
    az_redis *redis;          /* worker count and redis_ok; NULL: 0 and redis_ok false */
    const char *worker_group; /* the workers' consumer group (AZ_WORKER_GROUP); copied */
    /* Event fan-out lag in ms (the hub's stats); NULL: 0. Called on the metrics thread. */
    double (*fanout_lag_ms)(void *arg);
    void *fanout_arg;
    /* Watch streams open in this process (for Prometheus); NULL: 0. Called on the scrape thread. */
    size_t (*watch_streams)(void *arg);
    void *watch_arg;
} az_metrics_sources;

/* Creates the metrics of the methods in tables (ntables tables of counts[i] entries, as given to
 * az_server_new; paths are copied, so the tables need not outlive m) plus AZ_METRICS_OTHER.
 * src is copied; what it points at is borrowed and must outlive m. Nothing runs until
 * az_metrics_start. On error (AZ_ERR_NOMEM) *out is NULL and msg says so. */
az_err az_metrics_new(const az_method *const *tables, const size_t *counts, size_t ntables,
                      const az_metrics_sources *src, az_metrics **out, char *msg);

/* Starts the metrics thread (ticks every 250 ms; idle while no stream is open).
 * AZ_ERR_PRECONDITION when already started, AZ_ERR_INTERNAL when the thread cannot be created;
 * msg says which. */
az_err az_metrics_start(az_metrics *m, char *msg);

/* Ends every open stream with UNAVAILABLE "server shutting down" and refuses new ones. For
 * az_server_on_shutdown (arg = az_metrics *). Idempotent; never blocks on I/O. */
void az_metrics_shutdown(void *arg);

/* Stops and joins the thread, ends any stream still open, frees m; accepts NULL. Streams point
 * back at m until their calls are over and the server observes into it: free m only after
 * az_server_free. */
void az_metrics_free(az_metrics *m);

/* Counts one finished call: method is matched against the registered paths (anything else is
 * AZ_METRICS_OTHER), status is its gRPC status code (non-zero counts as an error), duration_us
 * its duration. Lock-free; callable from any thread. A NULL m is ignored. */
void az_metrics_record(az_metrics *m, const char *method, int status, int64_t duration_us);

/* az_metrics_record as an az_observer_fn (arg = az_metrics *). */
void az_metrics_observe(void *arg, az_call *c, const char *method, int status, int64_t duration_us);

/* Adds c as a stream receiving an Event with a MetricsSnapshot every interval_ms (checked by the
 * caller to lie in [AZ_METRICS_INTERVAL_MIN_MS, AZ_METRICS_INTERVAL_MAX_MS]); the task gauges
 * are those of c's workspace. The first snapshot covers the first interval. Takes a reference
 * on c, dropped when the call is over. AZ_ERR_UNAVAILABLE when shutting down,
 * AZ_ERR_EXHAUSTED past AZ_METRICS_MAX_STREAMS, AZ_ERR_NOMEM; msg says which and c is then
 * untouched. */
az_err az_metrics_stream(az_metrics *m, az_call *c, int64_t interval_ms, char *msg);

/* Open streams now. */
size_t az_metrics_streams(az_metrics *m);

/* The Prometheus collector (an az_prom_collect_fn, arg = az_metrics *; system/prom.h): RPC
 * counts by method and code and latency histograms from the same counters, streams open, and,
 * with a pool, tasks by state, queue depth, outbox backlog and pool use from PostgreSQL (one
 * query round at most every second, however often it is scraped; on failure the last values
 * stay). Runs on the scrape thread. */
struct az_prom_out;
void az_metrics_prom(void *arg, struct az_prom_out *o);

/* ---- counters and snapshots (what the thread uses; exported for tests) ---- */

/* A copy of every method's cumulative counters at one time. Counters are 32-bit and wrap: a
 * difference is exact while fewer than 2^32 calls of a method fall between two copies. */
typedef struct az_metrics_counts az_metrics_counts;

/* A zeroed copy sized for m; NULL when out of memory. Free with az_metrics_counts_free. */
az_metrics_counts *az_metrics_counts_new(const az_metrics *m);
void az_metrics_counts_free(az_metrics_counts *c); /* accepts NULL */

/* Copies m's counters into out, stamped with now_us (a monotonic clock in µs). */
void az_metrics_counts_read(az_metrics *m, int64_t now_us, az_metrics_counts *out);

/* The request side of a snapshot from prev to cur (both from m): requests_per_second over the
 * time between their stamps (0 when it is not positive), and one MethodStats (count, errors,
 * p50_ms, p99_ms) per method with calls in between, sorted by method. Gauges are left zero. On
 * AZ_OK *out and its strings live in a. AZ_ERR_NOMEM with msg. */
az_err az_metrics_delta(const az_metrics *m, const az_metrics_counts *prev,
                        const az_metrics_counts *cur, az_arena *a,
                        Agentz__V1__MetricsSnapshot **out, char *msg);

/* The histogram bucket of a duration (negative counts as 0). */
int az_metrics_bucket(int64_t us);

/* The durations bucket b holds: [*lo, *hi) in µs (hi of the last bucket is INT64_MAX). */
void az_metrics_bucket_range(int b, int64_t *lo, int64_t *hi);

/* The q-quantile (0 < q <= 1) in µs of a histogram of AZ_METRICS_BUCKETS counts, interpolated
 * linearly inside the bucket holding it; 0 for an empty histogram. */
double az_metrics_quantile(const uint32_t *hist, double q);

#endif
