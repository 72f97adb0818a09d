/* CUnit suite for server/system/prom: the text exposition format (escaping, values, cumulative
 * histograms), the bucket set against system/metrics' fine histogram, the label caps, the RPC
 * collector of system/metrics, and the /metrics listener over a real socket. */
#include <CUnit/Basic.h>
#include <arpa/inet.h>
#include <math.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "system/metrics.h"
#include "system/prom.h"

static int count_lines_with(const char *text, const char *needle)
{
    int n = 0;
    for (const char *p = text; (p = strstr(p, needle)); p += strlen(needle)) n++;
    return n;
}

/* ---- the writer ---- */

static void test_escaping(void)
{
    az_prom_out o;
    az_prom_out_init(&o);
    az_prom_family(&o, "m_total", "counter", "a \"quoted\" help\\with\nnewline");
    const char *l[] = {"path", "a\"b\\c\nd", "x", "plain", NULL};
    az_prom_sample(&o, "m_total", l, 3);
    const char *t = az_prom_out_text(&o);
    CU_ASSERT_PTR_NOT_NULL_FATAL(t);
    CU_ASSERT_STRING_EQUAL(t, "# HELP m_total a \"quoted\" help\\\\with\\nnewline\n"
                              "# TYPE m_total counter\n"
                              "m_total{path=\"a\\\"b\\\\c\\nd\",x=\"plain\"} 3\n");
    az_prom_out_free(&o);
}

static void test_values(void)
{
    az_prom_out o;
    az_prom_out_init(&o);
    az_prom_sample(&o, "a", NULL, 0);
    az_prom_sample(&o, "b", NULL, 12345678901.0);
    az_prom_sample(&o, "c", NULL, 0.25);
    az_prom_sample(&o, "d", NULL, NAN);
    az_prom_sample(&o, "e", NULL, INFINITY);
    az_prom_sample(&o, "f", NULL, -INFINITY);
    az_prom_sample(&o, "g", NULL, 0.1);
    CU_ASSERT_STRING_EQUAL(az_prom_out_text(&o), "a 0\nb 12345678901\nc 0.25\nd NaN\ne +Inf\nf -Inf\ng 0.1\n");
    az_prom_out_free(&o);
}

static void test_histogram(void)
{
    uint64_t counts[AZ_PROM_NBUCKETS + 1] = {0};
    counts[0] = 2;
    counts[3] = 5;
    counts[AZ_PROM_NBUCKETS] = 1; /* past the last bound */
    az_prom_out o;
    az_prom_out_init(&o);
    const char *l[] = {"route", "/v1/x", NULL};
    az_prom_histogram(&o, "h_seconds", l, counts, 1.5);
    const char *t = az_prom_out_text(&o);
    CU_ASSERT_PTR_NOT_NULL_FATAL(t);
    CU_ASSERT_EQUAL(count_lines_with(t, "h_seconds_bucket{"), AZ_PROM_NBUCKETS + 1);
    CU_ASSERT_PTR_NOT_NULL(strstr(t, "h_seconds_bucket{route=\"/v1/x\",le=\"0.000064\"} 2\n"));
    CU_ASSERT_PTR_NOT_NULL(strstr(t, "h_seconds_bucket{route=\"/v1/x\",le=\"0.000256\"} 2\n"));
    CU_ASSERT_PTR_NOT_NULL(strstr(t, "h_seconds_bucket{route=\"/v1/x\",le=\"0.000512\"} 7\n"));
    CU_ASSERT_PTR_NOT_NULL(strstr(t, "h_seconds_bucket{route=\"/v1/x\",le=\"134.217728\"} 7\n"));
    CU_ASSERT_PTR_NOT_NULL(strstr(t, "h_seconds_bucket{route=\"/v1/x\",le=\"+Inf\"} 8\n"));
    CU_ASSERT_PTR_NOT_NULL(strstr(t, "h_seconds_sum{route=\"/v1/x\"} 1.5\n"));
    CU_ASSERT_PTR_NOT_NULL(strstr(t, "h_seconds_count{route=\"/v1/x\"} 8\n"));
    /* Every bucket line's count is at least the previous one's. */
    double prev = -1;
    for (const char *p = t; (p = strstr(p, "_bucket{")); p++) {
        const char *sp = strchr(p, '}');
        double v = atof(sp + 2);
        CU_ASSERT(v >= prev);
        prev = v;
    }
    az_prom_out_free(&o);
}

static void test_buckets(void)
{
    CU_ASSERT_EQUAL(az_prom_bucket(-5), 0);
    CU_ASSERT_EQUAL(az_prom_bucket(0), 0);
    CU_ASSERT_EQUAL(az_prom_bucket(63), 0);
    CU_ASSERT_EQUAL(az_prom_bucket(64), 1);
    CU_ASSERT_EQUAL(az_prom_bucket(127), 1);
    CU_ASSERT_EQUAL(az_prom_bucket(128), 2);
    CU_ASSERT_EQUAL(az_prom_bucket(((int64_t)1 << 27) - 1), AZ_PROM_NBUCKETS - 1);
    CU_ASSERT_EQUAL(az_prom_bucket((int64_t)1 << 27), AZ_PROM_NBUCKETS);
    CU_ASSERT_EQUAL(az_prom_bucket(INT64_MAX), AZ_PROM_NBUCKETS);
    CU_ASSERT_DOUBLE_EQUAL(az_prom_bucket_le(0), 64e-6, 1e-12);
    CU_ASSERT_DOUBLE_EQUAL(az_prom_bucket_le(AZ_PROM_NBUCKETS - 1), 134.217728, 1e-9);
    /* A value below a bucket's bound lands in it or an earlier one. */
    for (int i = 0; i < AZ_PROM_NBUCKETS; i++) {
        int64_t le_us = (int64_t)llround(az_prom_bucket_le(i) * 1e6);
        CU_ASSERT(az_prom_bucket(le_us - 1) <= i);
        CU_ASSERT(az_prom_bucket(le_us) == i + 1);
    }
    /* The coarse bounds are edges of metrics' fine buckets: no fine bucket straddles one, so
     * the RPC histograms convert exactly. */
    for (int b = 0; b < AZ_METRICS_BUCKETS - 1; b++) {
        int64_t lo, hi;
        az_metrics_bucket_range(b, &lo, &hi);
        CU_ASSERT_EQUAL(az_prom_bucket(lo), az_prom_bucket(hi - 1));
    }
}

static void test_hist_observe(void)
{
    static az_prom_hist h;
    az_prom_hist_observe(&h, 10);
    az_prom_hist_observe(&h, 100);
    az_prom_hist_observe(&h, 100);
    az_prom_hist_observe(&h, -1);
    uint64_t counts[AZ_PROM_NBUCKETS + 1];
    double sum = az_prom_hist_read(&h, counts);
    CU_ASSERT_EQUAL(counts[0], 2);
    CU_ASSERT_EQUAL(counts[1], 2);
    CU_ASSERT_DOUBLE_EQUAL(sum, 210e-6, 1e-12);
}

/* ---- bounded labels ---- */

static void test_provider_cap(void)
{
    az_prom_set_info("9.9.9", "worker", AZ_PROM_SHOW_LLM);
    char name[32];
    for (int i = 0; i < AZ_PROM_MAX_PROVIDERS + 10; i++) {
        snprintf(name, sizeof name, "prov%02d", i);
        az_prom_llm_call(name, 1000, 10, 5, 0.5, i == 0);
    }
    az_prom_llm_call("prov00", 2000, 1, 1, 0, 0); /* an existing name is found again */
    az_prom_out o;
    az_prom_out_init(&o);
    az_prom_render(&o);
    const char *t = az_prom_out_text(&o);
    CU_ASSERT_PTR_NOT_NULL_FATAL(t);
    /* The overflow name plus the first providers up to the cap. */
    CU_ASSERT_EQUAL(count_lines_with(t, "agentz_llm_errors_total{provider="), AZ_PROM_MAX_PROVIDERS + 1);
    CU_ASSERT_PTR_NOT_NULL(strstr(t, "agentz_llm_tokens_total{provider=\"prov00\",kind=\"prompt\"} 11\n"));
    CU_ASSERT_PTR_NOT_NULL(strstr(t, "agentz_llm_errors_total{provider=\"prov00\"} 1\n"));
    CU_ASSERT_PTR_NOT_NULL(strstr(t, "agentz_llm_cost_usd_total{provider=\"prov00\"} 0.5\n"));
    CU_ASSERT_PTR_NOT_NULL(strstr(t, "agentz_llm_request_duration_seconds_count{provider=\"prov00\"} 2\n"));
    /* The last AZ_PROM_MAX_PROVIDERS + 10 - 32 names went to "other". */
    char want[128];
    snprintf(want, sizeof want, "agentz_llm_tokens_total{provider=\"other\",kind=\"completion\"} %d\n", 10 * 5);
    CU_ASSERT_PTR_NOT_NULL(strstr(t, want));
    CU_ASSERT_PTR_NULL(strstr(t, "prov41"));
    CU_ASSERT_PTR_NOT_NULL(strstr(t, "agentz_build_info{version=\"9.9.9\",role=\"worker\"} 1\n"));
    CU_ASSERT_PTR_NOT_NULL(strstr(t, "# TYPE process_cpu_seconds_total counter\n"));
    CU_ASSERT_PTR_NOT_NULL(strstr(t, "\nprocess_resident_memory_bytes "));
    CU_ASSERT_PTR_NULL(strstr(t, "agentz_http_requests_total")); /* not shown by this process */
    az_prom_out_free(&o);
}

static void test_route_cap(void)
{
    az_prom_set_info("9.9.9", "gateway", AZ_PROM_SHOW_HTTP);
    char name[32];
    for (int i = 0; i < AZ_PROM_MAX_ROUTES + 20; i++) {
        snprintf(name, sizeof name, "/r/%03d", i);
        az_prom_http_request(name, "GET", 200, 100);
    }
    az_prom_http_request("/r/000", "BREW", 299, 100);  /* unknown method and status */
    az_prom_http_request(NULL, "DELETE", 404, 100);    /* no route matched */
    az_prom_http_stream(AZ_PROM_STREAM_WEBSOCKET, 1);
    az_prom_out o;
    az_prom_out_init(&o);
    az_prom_render(&o);
    const char *t = az_prom_out_text(&o);
    CU_ASSERT_PTR_NOT_NULL_FATAL(t);
    CU_ASSERT_EQUAL(count_lines_with(t, "agentz_http_duration_seconds_count{"), AZ_PROM_MAX_ROUTES + 1);
    CU_ASSERT_PTR_NOT_NULL(strstr(t, "agentz_http_requests_total{route=\"/r/000\",method=\"GET\",code=\"200\"} 1\n"));
    CU_ASSERT_PTR_NOT_NULL(strstr(t, "agentz_http_requests_total{route=\"/r/000\",method=\"OTHER\",code=\"other\"} 1\n"));
    CU_ASSERT_PTR_NOT_NULL(strstr(t, "agentz_http_requests_total{route=\"unmatched\",method=\"DELETE\",code=\"404\"} 1\n"));
    CU_ASSERT_PTR_NOT_NULL(strstr(t, "agentz_http_requests_total{route=\"unmatched\",method=\"GET\",code=\"200\"} 20\n"));
    CU_ASSERT_PTR_NOT_NULL(strstr(t, "agentz_http_streams_open{kind=\"websocket\"} 1\n"));
    az_prom_http_stream(AZ_PROM_STREAM_WEBSOCKET, -1);
    az_prom_out_free(&o);
}

/* ---- collectors: the RPC metrics of system/metrics ---- */

static az_err nop_unary(az_call *c, const ProtobufCMessage *req, ProtobufCMessage **resp, char *msg)
{
    return AZ_OK;
}

static void test_rpc_collector(void)
{
    static const az_method table[] = {
        {"/t.S/B", AZ_RPC_UNARY, NULL, NULL, nop_unary, NULL, NULL, NULL},
        {"/t.S/A", AZ_RPC_UNARY, NULL, NULL, nop_unary, NULL, NULL, NULL},
    };
    const az_method *tables[] = {table};
    size_t counts[] = {2};
    char msg[AZ_MSG_MAX];
    az_metrics *m = NULL;
    CU_ASSERT_EQUAL_FATAL(az_metrics_new(tables, counts, 1, NULL, &m, msg), AZ_OK);
    az_metrics_record(m, "/t.S/A", 0, 100);    /* 100 µs */
    az_metrics_record(m, "/t.S/A", 0, 3000);   /* 3 ms */
    az_metrics_record(m, "/t.S/A", 5, 70);     /* NOT_FOUND */
    az_metrics_record(m, "/nope/X", 12, 10);   /* unregistered: "other" */
    az_prom_set_info("1", "api", 0);
    CU_ASSERT_EQUAL(az_prom_add_collector(az_metrics_prom, m, msg), AZ_OK);
    az_prom_out o;
    az_prom_out_init(&o);
    az_prom_render(&o);
    az_prom_remove_collector(az_metrics_prom, m);
    const char *t = az_prom_out_text(&o);
    CU_ASSERT_PTR_NOT_NULL_FATAL(t);
    CU_ASSERT_PTR_NOT_NULL(strstr(t, "agentz_rpc_requests_total{method=\"/t.S/A\",code=\"OK\"} 2\n"));
    CU_ASSERT_PTR_NOT_NULL(strstr(t, "agentz_rpc_requests_total{method=\"/t.S/A\",code=\"NOT_FOUND\"} 1\n"));
    CU_ASSERT_PTR_NOT_NULL(strstr(t, "agentz_rpc_requests_total{method=\"other\",code=\"UNIMPLEMENTED\"} 1\n"));
    CU_ASSERT_PTR_NULL(strstr(t, "method=\"/t.S/B\"")); /* no calls, no series */
    CU_ASSERT_PTR_NOT_NULL(strstr(t, "agentz_rpc_duration_seconds_bucket{method=\"/t.S/A\",le=\"0.000064\"} 0\n"));
    CU_ASSERT_PTR_NOT_NULL(strstr(t, "agentz_rpc_duration_seconds_bucket{method=\"/t.S/A\",le=\"0.000128\"} 2\n"));
    CU_ASSERT_PTR_NOT_NULL(strstr(t, "agentz_rpc_duration_seconds_bucket{method=\"/t.S/A\",le=\"0.002048\"} 2\n"));
    CU_ASSERT_PTR_NOT_NULL(strstr(t, "agentz_rpc_duration_seconds_bucket{method=\"/t.S/A\",le=\"0.004096\"} 3\n"));
    CU_ASSERT_PTR_NOT_NULL(strstr(t, "agentz_rpc_duration_seconds_count{method=\"/t.S/A\"} 3\n"));
    CU_ASSERT_PTR_NOT_NULL(strstr(t, "agentz_rpc_duration_seconds_sum{method=\"/t.S/A\"} 0.00317\n"));
    CU_ASSERT_PTR_NOT_NULL(strstr(t, "agentz_streams_open{kind=\"metrics\"} 0\n"));
    CU_ASSERT_PTR_NULL(strstr(t, "agentz_tasks_queued")); /* no pool: no database gauges */
    az_prom_out_free(&o);
    /* Removed: the next render has no RPC families. */
    az_prom_out_init(&o);
    az_prom_render(&o);
    CU_ASSERT_PTR_NULL(strstr(az_prom_out_text(&o), "agentz_rpc_requests_total"));
    az_prom_out_free(&o);
    az_metrics_free(m);
}

/* ---- the listener ---- */

/* Sends req to 127.0.0.1:port and returns the whole answer (malloc'd; the server closes). */
static char *http(int port, const char *req)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        if (fd >= 0) close(fd);
        return NULL;
    }
    if (write(fd, req, strlen(req)) != (ssize_t)strlen(req)) {
        close(fd);
        return NULL;
    }
    size_t cap = 1 << 16, len = 0;
    char *buf = malloc(cap);
    for (ssize_t n; buf && (n = read(fd, buf + len, cap - len - 1)) > 0;) {
        len += (size_t)n;
        if (len + 1 == cap) {
            char *b = realloc(buf, cap *= 2);
            if (!b) {
                free(buf);
                buf = NULL;
            }
            buf = b;
        }
    }
    close(fd);
    if (buf) buf[len] = '\0';
    return buf;
}

static void test_server(void)
{
    char msg[AZ_MSG_MAX];
    az_prom_server *s = NULL;
    CU_ASSERT_EQUAL(az_prom_server_new("127.0.0.1", &s, msg), AZ_ERR_INVALID);
    CU_ASSERT_PTR_NULL(s);
    az_prom_set_info("7.7.7", "api,gateway", 0);
    CU_ASSERT_EQUAL_FATAL(az_prom_server_new("127.0.0.1:0", &s, msg), AZ_OK);
    int port = az_prom_server_port(s);
    CU_ASSERT(port > 0);
    /* Taken: a second listener on the same port says it cannot bind. */
    char taken[32];
    snprintf(taken, sizeof taken, "127.0.0.1:%d", port);
    az_prom_server *s2 = NULL;
    CU_ASSERT_EQUAL(az_prom_server_new(taken, &s2, msg), AZ_ERR_UNAVAILABLE);
    CU_ASSERT_PTR_NULL(s2);

    char *r = http(port, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    CU_ASSERT_PTR_NOT_NULL_FATAL(r);
    CU_ASSERT_EQUAL(strncmp(r, "HTTP/1.1 200 ", 13), 0);
    CU_ASSERT_PTR_NOT_NULL(strcasestr(r, "\r\ncontent-type: text/plain; version=0.0.4"));
    CU_ASSERT_PTR_NOT_NULL(strstr(r, "\r\n\r\n# HELP agentz_build_info "));
    CU_ASSERT_PTR_NOT_NULL(strstr(r, "agentz_build_info{version=\"7.7.7\",role=\"api,gateway\"} 1\n"));
    free(r);
    r = http(port, "HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    CU_ASSERT_PTR_NOT_NULL_FATAL(r);
    CU_ASSERT_EQUAL(strncmp(r, "HTTP/1.1 200 ", 13), 0);
    CU_ASSERT_PTR_NOT_NULL(strcasestr(r, "\r\ncontent-length: "));
    CU_ASSERT_PTR_NULL(strstr(r, "# HELP")); /* no body */
    free(r);
    static const char *const not_found[] = {"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
                                            "GET /metrics/x HTTP/1.1\r\nHost: x\r\n\r\n",
                                            "POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"};
    for (size_t i = 0; i < sizeof not_found / sizeof *not_found; i++) {
        r = http(port, not_found[i]);
        CU_ASSERT_PTR_NOT_NULL_FATAL(r);
        CU_ASSERT_EQUAL(strncmp(r, "HTTP/1.1 404 ", 13), 0);
        free(r);
    }
    /* A connection left idle does not keep the listener from stopping. */
    int idle = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    CU_ASSERT_EQUAL(connect(idle, (struct sockaddr *)&sa, sizeof sa), 0);
    usleep(50000);
    az_prom_server_free(s);
    close(idle);
    az_prom_server_free(NULL);
}

static void test_url(void)
{
    char u[128];
    az_prom_url("0.0.0.0:9464", 9464, u, sizeof u);
    CU_ASSERT_STRING_EQUAL(u, "http://127.0.0.1:9464/metrics");
    az_prom_url("[::]:0", 4321, u, sizeof u);
    CU_ASSERT_STRING_EQUAL(u, "http://[::1]:4321/metrics");
    az_prom_url("10.1.2.3:0", 55, u, sizeof u);
    CU_ASSERT_STRING_EQUAL(u, "http://10.1.2.3:55/metrics");
}

int main(void)
{
    if (CU_initialize_registry() != CUE_SUCCESS) return 1;
    CU_pSuite w = CU_add_suite("prom_format", NULL, NULL);
    if (!w) return 1;
    CU_add_test(w, "escaping", test_escaping);
    CU_add_test(w, "values", test_values);
    CU_add_test(w, "histogram cumulative", test_histogram);
    CU_add_test(w, "bucket set", test_buckets);
    CU_add_test(w, "histogram observe", test_hist_observe);
    CU_pSuite l = CU_add_suite("prom_labels", NULL, NULL);
    if (!l) return 1;
    CU_add_test(l, "provider cap", test_provider_cap);
    CU_add_test(l, "route cap", test_route_cap);
    CU_add_test(l, "rpc collector", test_rpc_collector);
    CU_pSuite s = CU_add_suite("prom_server", NULL, NULL);
    if (!s) return 1;
    CU_add_test(s, "listener", test_server);
    CU_add_test(s, "url", test_url);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    unsigned failures = CU_get_number_of_failures() + CU_get_number_of_tests_failed() +
                        CU_get_number_of_suites_failed();
    CU_cleanup_registry();
    return failures ? 1 : 0;
}
