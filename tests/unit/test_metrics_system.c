/* Unit tests of server/system/metrics.c: the log-scale latency histogram and its quantiles,
 * per-method counting (registered paths, the "other" bucket, errors), rates and the differences
 * between two copies of the counters, and lock-free counting from several threads. */
#include <CUnit/Basic.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "system/metrics.h"

#define GET "/agentz.v1.AgentService/GetAgent"
#define LIST "/agentz.v1.AgentService/ListAgents"
#define WHO "/agentz.v1.SystemService/WhoAmI"
#define CHECK "/grpc.health.v1.Health/Check"

/* Two tables as main.c hands them over, unsorted, with one path in both. */
static const az_method table_a[] = {{.path = WHO}, {.path = LIST}, {.path = GET}};
static const az_method table_b[] = {{.path = CHECK}, {.path = GET}};

static az_metrics *new_metrics(void)
{
    const az_method *tables[2] = {table_a, table_b};
    size_t counts[2] = {3, 2};
    az_metrics *m = NULL;
    char msg[AZ_MSG_MAX];
    CU_ASSERT_EQUAL(az_metrics_new(tables, counts, 2, NULL, &m, msg), AZ_OK);
    return m;
}

static const Agentz__V1__MethodStats *find(const Agentz__V1__MetricsSnapshot *s, const char *method)
{
    for (size_t i = 0; i < s->n_methods; i++)
        if (strcmp(s->methods[i]->method, method) == 0) return s->methods[i];
    return NULL;
}

/* ---------------------------------------------------------------- histogram */

static void test_bucket_ranges(void)
{
    /* Every bucket's range holds exactly its values: contiguous, increasing, at most 25% wide. */
    int64_t prev_hi = 0;
    for (int b = 0; b < AZ_METRICS_BUCKETS; b++) {
        int64_t lo, hi;
        az_metrics_bucket_range(b, &lo, &hi);
        CU_ASSERT_EQUAL(lo, prev_hi);
        CU_ASSERT(hi > lo);
        CU_ASSERT_EQUAL(az_metrics_bucket(lo), b);
        if (b < AZ_METRICS_BUCKETS - 1) {
            CU_ASSERT_EQUAL(az_metrics_bucket(hi - 1), b);
            CU_ASSERT_EQUAL(az_metrics_bucket(hi), b + 1);
            if (b >= 4) CU_ASSERT((double)(hi - lo) / (double)lo <= 0.25 + 1e-9);
        } else {
            CU_ASSERT_EQUAL(hi, INT64_MAX);
        }
        prev_hi = hi;
    }
    /* The open-ended bucket starts past two hours. */
    int64_t lo, hi;
    az_metrics_bucket_range(AZ_METRICS_BUCKETS - 1, &lo, &hi);
    CU_ASSERT(lo > 2LL * 3600 * 1000000);
    CU_ASSERT_EQUAL(az_metrics_bucket(-5), 0);
    CU_ASSERT_EQUAL(az_metrics_bucket(0), 0);
    CU_ASSERT_EQUAL(az_metrics_bucket(3), 3);
    CU_ASSERT_EQUAL(az_metrics_bucket(INT64_MAX), AZ_METRICS_BUCKETS - 1);
    /* Sample values land in a bucket holding them. */
    for (int64_t v = 1; v < 4000000000LL; v = v * 3 + 7) {
        az_metrics_bucket_range(az_metrics_bucket(v), &lo, &hi);
        CU_ASSERT(lo <= v && v < hi);
    }
}

static void test_quantile_empty_and_single(void)
{
    uint32_t h[AZ_METRICS_BUCKETS] = {0};
    CU_ASSERT_EQUAL(az_metrics_quantile(h, 0.5), 0);
    h[az_metrics_bucket(1000)] = 100; /* a hundred calls of 1 ms */
    int64_t lo, hi;
    az_metrics_bucket_range(az_metrics_bucket(1000), &lo, &hi);
    double p50 = az_metrics_quantile(h, 0.5), p99 = az_metrics_quantile(h, 0.99);
    CU_ASSERT(p50 >= lo && p50 < hi);
    CU_ASSERT(p99 >= p50 && p99 < hi);
    CU_ASSERT(fabs(p50 - 1000) / 1000 < 0.13);
}

static void test_quantile_uniform(void)
{
    /* 1..1000 ms, one call each: p50 ~ 500 ms, p99 ~ 990 ms, within the histogram's error. */
    uint32_t h[AZ_METRICS_BUCKETS] = {0};
    for (int ms = 1; ms <= 1000; ms++) h[az_metrics_bucket((int64_t)ms * 1000)]++;
    double p50 = az_metrics_quantile(h, 0.5) / 1000, p99 = az_metrics_quantile(h, 0.99) / 1000;
    CU_ASSERT(fabs(p50 - 500) / 500 < 0.05);
    CU_ASSERT(fabs(p99 - 990) / 990 < 0.05);
    CU_ASSERT(az_metrics_quantile(h, 1.0) < 1048576); /* within the last value's bucket */
}

static void test_quantile_tail(void)
{
    /* 98 fast calls and 2 slow ones: the median is fast, the 99th percentile slow. */
    uint32_t h[AZ_METRICS_BUCKETS] = {0};
    h[az_metrics_bucket(2000)] = 98;
    h[az_metrics_bucket(800000)] = 2;
    CU_ASSERT(az_metrics_quantile(h, 0.5) < 2600);
    CU_ASSERT(az_metrics_quantile(h, 0.99) > 600000);
    /* With 99 fast ones the 99th call is still fast. */
    h[az_metrics_bucket(2000)] = 99;
    h[az_metrics_bucket(800000)] = 1;
    CU_ASSERT(az_metrics_quantile(h, 0.99) < 2600);
}

/* ---------------------------------------------------------------- counting and snapshots */

static void test_delta_methods_and_rate(void)
{
    az_metrics *m = new_metrics();
    CU_ASSERT_PTR_NOT_NULL_FATAL(m);
    az_metrics_counts *c0 = az_metrics_counts_new(m), *c1 = az_metrics_counts_new(m);
    CU_ASSERT_PTR_NOT_NULL_FATAL(c0);
    CU_ASSERT_PTR_NOT_NULL_FATAL(c1);
    az_metrics_counts_read(m, 1000000, c0);
    for (int i = 0; i < 10; i++) az_metrics_record(m, GET, 0, 2000);
    az_metrics_record(m, GET, 5, 100); /* NOT_FOUND: an error */
    for (int i = 0; i < 4; i++) az_metrics_record(m, WHO, 0, 50000);
    az_metrics_record(m, "/nope.Service/Missing", 12, 10);
    az_metrics_record(m, NULL, 2, 10);
    az_metrics_counts_read(m, 3000000, c1); /* two seconds later */

    az_arena *a = az_arena_new(0);
    Agentz__V1__MetricsSnapshot *s = NULL;
    char msg[AZ_MSG_MAX];
    CU_ASSERT_EQUAL_FATAL(az_metrics_delta(m, c0, c1, a, &s, msg), AZ_OK);
    CU_ASSERT_DOUBLE_EQUAL(s->requests_per_second, 17 / 2.0, 1e-9);
    /* Only methods with calls, sorted by name, the unknown ones under "other". */
    CU_ASSERT_EQUAL_FATAL(s->n_methods, 3);
    CU_ASSERT_STRING_EQUAL(s->methods[0]->method, GET);
    CU_ASSERT_STRING_EQUAL(s->methods[1]->method, WHO);
    CU_ASSERT_STRING_EQUAL(s->methods[2]->method, AZ_METRICS_OTHER);
    for (size_t i = 1; i < s->n_methods; i++)
        CU_ASSERT(strcmp(s->methods[i - 1]->method, s->methods[i]->method) < 0);
    const Agentz__V1__MethodStats *get = find(s, GET), *who = find(s, WHO), *other = find(s, "other");
    CU_ASSERT_EQUAL(get->count, 11);
    CU_ASSERT_EQUAL(get->errors, 1);
    CU_ASSERT(fabs(get->p50_ms - 2.0) / 2.0 < 0.13);
    CU_ASSERT(fabs(who->p99_ms - 50.0) / 50.0 < 0.13);
    CU_ASSERT_EQUAL(who->errors, 0);
    CU_ASSERT_EQUAL(other->count, 2);
    CU_ASSERT_EQUAL(other->errors, 2);
    CU_ASSERT_PTR_NULL(find(s, LIST));
    CU_ASSERT_EQUAL(s->queue_depth, 0); /* gauges are the thread's business */

    /* The next interval reports only what happened in it. */
    az_metrics_counts *c2 = az_metrics_counts_new(m);
    az_metrics_record(m, LIST, 0, 700000);
    az_metrics_record(m, CHECK, 14, 300);
    az_metrics_counts_read(m, 4000000, c2);
    CU_ASSERT_EQUAL_FATAL(az_metrics_delta(m, c1, c2, a, &s, msg), AZ_OK);
    CU_ASSERT_DOUBLE_EQUAL(s->requests_per_second, 2.0, 1e-9);
    CU_ASSERT_EQUAL_FATAL(s->n_methods, 2);
    CU_ASSERT_STRING_EQUAL(s->methods[0]->method, LIST);
    CU_ASSERT_STRING_EQUAL(s->methods[1]->method, CHECK);
    CU_ASSERT(fabs(find(s, LIST)->p50_ms - 700) / 700 < 0.13);
    CU_ASSERT_EQUAL(find(s, CHECK)->errors, 1);
    /* Over both intervals at once: the sum. */
    CU_ASSERT_EQUAL_FATAL(az_metrics_delta(m, c0, c2, a, &s, msg), AZ_OK);
    CU_ASSERT_EQUAL(s->n_methods, 5);
    CU_ASSERT_DOUBLE_EQUAL(s->requests_per_second, 19 / 3.0, 1e-9);
    CU_ASSERT_EQUAL(find(s, GET)->count, 11);

    /* Nothing happened; and a zero-length interval has no rate. */
    CU_ASSERT_EQUAL_FATAL(az_metrics_delta(m, c2, c2, a, &s, msg), AZ_OK);
    CU_ASSERT_EQUAL(s->n_methods, 0);
    CU_ASSERT_EQUAL(s->requests_per_second, 0);
    az_arena_free(a);
    az_metrics_counts_free(c0);
    az_metrics_counts_free(c1);
    az_metrics_counts_free(c2);
    az_metrics_free(m);
}

static void test_duplicate_and_empty_tables(void)
{
    /* A path in two tables is one method: its calls are not split. */
    az_metrics *m = new_metrics();
    CU_ASSERT_PTR_NOT_NULL_FATAL(m);
    az_metrics_counts *c0 = az_metrics_counts_new(m), *c1 = az_metrics_counts_new(m);
    az_metrics_counts_read(m, 0, c0);
    for (int i = 0; i < 3; i++) az_metrics_record(m, GET, 0, 10);
    az_metrics_counts_read(m, 1000000, c1);
    az_arena *a = az_arena_new(0);
    Agentz__V1__MetricsSnapshot *s;
    char msg[AZ_MSG_MAX];
    CU_ASSERT_EQUAL_FATAL(az_metrics_delta(m, c0, c1, a, &s, msg), AZ_OK);
    CU_ASSERT_EQUAL_FATAL(s->n_methods, 1);
    CU_ASSERT_EQUAL(s->methods[0]->count, 3);
    az_metrics_counts_free(c0);
    az_metrics_counts_free(c1);
    az_metrics_free(m);

    /* No tables at all: everything is "other". */
    m = NULL;
    CU_ASSERT_EQUAL_FATAL(az_metrics_new(NULL, NULL, 0, NULL, &m, msg), AZ_OK);
    c0 = az_metrics_counts_new(m);
    c1 = az_metrics_counts_new(m);
    az_metrics_counts_read(m, 0, c0);
    az_metrics_record(m, GET, 0, 10);
    az_metrics_counts_read(m, 1000000, c1);
    CU_ASSERT_EQUAL_FATAL(az_metrics_delta(m, c0, c1, a, &s, msg), AZ_OK);
    CU_ASSERT_EQUAL_FATAL(s->n_methods, 1);
    CU_ASSERT_STRING_EQUAL(s->methods[0]->method, "other");
    az_arena_free(a);
    az_metrics_counts_free(c0);
    az_metrics_counts_free(c1);
    az_metrics_free(m);
    az_metrics_free(NULL);
    az_metrics_record(NULL, GET, 0, 1); /* ignored */
}

enum { THREADS = 4, PER_THREAD = 200000 };

static void *hammer(void *arg)
{
    az_metrics *m = arg;
    for (int i = 0; i < PER_THREAD; i++)
        az_metrics_record(m, (i & 1) ? GET : LIST, (i % 10) == 0, i % 5000);
    return NULL;
}

static void test_concurrent_counting(void)
{
    az_metrics *m = new_metrics();
    CU_ASSERT_PTR_NOT_NULL_FATAL(m);
    az_metrics_counts *c0 = az_metrics_counts_new(m), *c1 = az_metrics_counts_new(m);
    az_metrics_counts_read(m, 0, c0);
    pthread_t t[THREADS];
    for (int i = 0; i < THREADS; i++) pthread_create(&t[i], NULL, hammer, m);
    for (int i = 0; i < THREADS; i++) pthread_join(t[i], NULL);
    az_metrics_counts_read(m, 2000000, c1);
    az_arena *a = az_arena_new(0);
    Agentz__V1__MetricsSnapshot *s;
    char msg[AZ_MSG_MAX];
    CU_ASSERT_EQUAL_FATAL(az_metrics_delta(m, c0, c1, a, &s, msg), AZ_OK);
    /* Not one call lost. */
    CU_ASSERT_EQUAL(find(s, GET)->count, THREADS * PER_THREAD / 2);
    CU_ASSERT_EQUAL(find(s, LIST)->count, THREADS * PER_THREAD / 2);
    CU_ASSERT_EQUAL(find(s, GET)->errors + find(s, LIST)->errors, THREADS * PER_THREAD / 10);
    CU_ASSERT_DOUBLE_EQUAL(s->requests_per_second, THREADS * PER_THREAD / 2.0, 1e-6);
    /* Durations 0..4999 µs evenly: the median about 2.5 ms. */
    CU_ASSERT(fabs(find(s, GET)->p50_ms - 2.5) / 2.5 < 0.13);
    az_arena_free(a);
    az_metrics_counts_free(c0);
    az_metrics_counts_free(c1);
    az_metrics_free(m);
}

static void test_start_and_free(void)
{
    /* The thread starts once, idles without streams, and stops at free. */
    az_metrics *m = new_metrics();
    CU_ASSERT_PTR_NOT_NULL_FATAL(m);
    char msg[AZ_MSG_MAX];
    CU_ASSERT_EQUAL(az_metrics_start(m, msg), AZ_OK);
    CU_ASSERT_EQUAL(az_metrics_start(m, msg), AZ_ERR_PRECONDITION);
    CU_ASSERT_EQUAL(az_metrics_streams(m), 0);
    struct timespec ts = {0, 300 * 1000000L};
    nanosleep(&ts, NULL); /* at least one tick */
    az_metrics_shutdown(m);
    az_metrics_shutdown(m);
    az_metrics_free(m);
}

int main(void)
{
    if (CU_initialize_registry() != CUE_SUCCESS) return 1;
    CU_pSuite s = CU_add_suite("metrics_system", NULL, NULL);
    if (!s) return 1;
    CU_add_test(s, "bucket ranges", test_bucket_ranges);
    CU_add_test(s, "quantile of empty and single-valued histograms", test_quantile_empty_and_single);
    CU_add_test(s, "quantile of uniform durations", test_quantile_uniform);
    CU_add_test(s, "quantile tail", test_quantile_tail);
    CU_add_test(s, "delta: methods, errors, other, rates, intervals", test_delta_methods_and_rate);
    CU_add_test(s, "duplicate paths and no tables", test_duplicate_and_empty_tables);
    CU_add_test(s, "concurrent counting", test_concurrent_counting);
    CU_add_test(s, "start, shutdown and free", test_start_and_free);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    unsigned failures = CU_get_number_of_failures() + CU_get_number_of_tests_failed() +
                        CU_get_number_of_suites_failed();
    CU_cleanup_registry();
    return failures ? 1 : 0;
}
