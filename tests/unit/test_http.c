/* CUnit suite for server/engine/http: libcurl multi on a libuv loop against a small threaded
 * HTTP server on loopback (one thread per connection, so many transfers really overlap):
 * completion, abort of a hanging transfer, many concurrent transfers, calls from callbacks. */
#include <CUnit/Basic.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "core/log.h"
#include "engine/http.h"

/* ---------------------------------------------------------------- the server */

static int srv_fd, srv_port;
static pthread_t srv_thread;
static atomic_int srv_open;   /* connections open now */
static atomic_int srv_closed; /* connections the peer closed while we held them (/hang) */
static atomic_int srv_stop;

static void *serve_conn(void *p)
{
    int fd = (int)(intptr_t)p;
    char req[4096];
    size_t n = 0;
    while (n < sizeof req - 1) {
        ssize_t r = recv(fd, req + n, sizeof req - 1 - n, 0);
        if (r <= 0) goto out;
        n += (size_t)r;
        req[n] = 0;
        if (strstr(req, "\r\n\r\n")) break;
    }
    char path[256] = "";
    sscanf(req, "GET %255s", path);
    if (strncmp(path, "/hang", 5) == 0) {
        /* Hold the connection until the client goes away. */
        char b[64];
        while (recv(fd, b, sizeof b, 0) > 0) {}
        atomic_fetch_add(&srv_closed, 1);
        goto out;
    }
    int delay_ms = 0;
    const char *d = strstr(path, "delay=");
    if (d) delay_ms = atoi(d + 6);
    if (delay_ms > 0) usleep((useconds_t)delay_ms * 1000);
    char body[300];
    int blen = snprintf(body, sizeof body, "you asked for %s", path);
    char resp[512];
    int rlen = snprintf(resp, sizeof resp,
                        "HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s",
                        blen, body);
    send(fd, resp, (size_t)rlen, MSG_NOSIGNAL);
out:
    close(fd);
    atomic_fetch_sub(&srv_open, 1);
    return NULL;
}

static void *serve(void *unused)
{
    (void)unused;
    while (!atomic_load(&srv_stop)) {
        int fd = accept(srv_fd, NULL, NULL);
        if (fd < 0) continue;
        if (atomic_load(&srv_stop)) {
            close(fd);
            break;
        }
        atomic_fetch_add(&srv_open, 1);
        pthread_t t;
        pthread_attr_t a;
        pthread_attr_init(&a);
        pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
        pthread_attr_setstacksize(&a, 64 * 1024);
        if (pthread_create(&t, &a, serve_conn, (void *)(intptr_t)fd) != 0) {
            close(fd);
            atomic_fetch_sub(&srv_open, 1);
        }
        pthread_attr_destroy(&a);
    }
    return NULL;
}

static int srv_start(void)
{
    srv_fd = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    setsockopt(srv_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (bind(srv_fd, (struct sockaddr *)&a, sizeof a) != 0 || listen(srv_fd, 1024) != 0) return -1;
    socklen_t len = sizeof a;
    getsockname(srv_fd, (struct sockaddr *)&a, &len);
    srv_port = ntohs(a.sin_port);
    return pthread_create(&srv_thread, NULL, serve, NULL);
}

static void srv_stop_all(void)
{
    atomic_store(&srv_stop, 1);
    /* Wake accept with one last connection. */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)srv_port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    connect(fd, (struct sockaddr *)&a, sizeof a);
    close(fd);
    pthread_join(srv_thread, NULL);
    close(srv_fd);
    for (int i = 0; i < 200 && atomic_load(&srv_open) > 0; i++) usleep(10000);
}

/* ---------------------------------------------------------------- helpers */

typedef struct req {
    CURL *easy;
    char body[512];
    size_t len;
    int done;
    CURLcode code;
    long status;
    az_http *h;
    int chain; /* start this many more transfers from the done callback */
    int *chained_done;
    int remove_in_write; /* call az_http_remove from the write callback */
} req;

static size_t on_write(char *p, size_t sz, size_t nm, void *ud)
{
    req *r = ud;
    size_t n = sz * nm;
    if (r->remove_in_write) {
        az_http_remove(r->h, r->easy);
        r->remove_in_write = 0;
    }
    size_t room = sizeof r->body - 1 - r->len;
    size_t c = n < room ? n : room;
    memcpy(r->body + r->len, p, c);
    r->len += c;
    r->body[r->len] = 0;
    return n;
}

static void setup_req(req *r, az_http *h, const char *path)
{
    memset(r, 0, sizeof *r);
    r->h = h;
    r->easy = curl_easy_init();
    char url[128];
    snprintf(url, sizeof url, "http://127.0.0.1:%d%s", srv_port, path);
    curl_easy_setopt(r->easy, CURLOPT_URL, url);
    curl_easy_setopt(r->easy, CURLOPT_WRITEFUNCTION, on_write);
    curl_easy_setopt(r->easy, CURLOPT_WRITEDATA, r);
    curl_easy_setopt(r->easy, CURLOPT_NOSIGNAL, 1L);
}

static void on_done(void *arg, CURL *easy, CURLcode code)
{
    req *r = arg;
    CU_ASSERT_PTR_EQUAL(easy, r->easy);
    r->done++;
    r->code = code;
    curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &r->status);
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Runs the loop until cond() holds or timeout_ms passes; returns whether it held. */
static int run_until(uv_loop_t *loop, int (*cond)(void *), void *arg, int timeout_ms)
{
    int64_t end = now_ms() + timeout_ms;
    while (!cond(arg)) {
        if (now_ms() > end) return 0;
        uv_run(loop, UV_RUN_ONCE);
    }
    return 1;
}

/* A timer keeps UV_RUN_ONCE from blocking forever when nothing else is pending. */
static void tick(uv_timer_t *t)
{
    (void)t;
}

static void close_loop(uv_loop_t *loop, uv_timer_t *ticker)
{
    uv_close((uv_handle_t *)ticker, NULL);
    uv_run(loop, UV_RUN_DEFAULT);
    CU_ASSERT_EQUAL(uv_loop_close(loop), 0);
}

static int req_done(void *a)
{
    return ((req *)a)->done > 0;
}

/* ---------------------------------------------------------------- tests */

static void test_completes(void)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    uv_timer_t ticker;
    uv_timer_init(&loop, &ticker);
    uv_timer_start(&ticker, tick, 20, 20);
    az_http *h = NULL;
    char msg[AZ_MSG_MAX];
    CU_ASSERT_EQUAL_FATAL(az_http_new(&loop, 0, &h, msg), AZ_OK);

    req r;
    setup_req(&r, h, "/hello");
    CU_ASSERT_EQUAL(az_http_add(h, r.easy, on_done, &r, msg), AZ_OK);
    CU_ASSERT_EQUAL(az_http_active(h), 1);
    /* Adding the same handle twice is refused. */
    CU_ASSERT_EQUAL(az_http_add(h, r.easy, on_done, &r, msg), AZ_ERR_INTERNAL);
    CU_ASSERT_TRUE(run_until(&loop, req_done, &r, 5000));
    CU_ASSERT_EQUAL(r.done, 1);
    CU_ASSERT_EQUAL(r.code, CURLE_OK);
    CU_ASSERT_EQUAL(r.status, 200);
    CU_ASSERT_STRING_EQUAL(r.body, "you asked for /hello");
    CU_ASSERT_EQUAL(az_http_active(h), 0);
    /* Removing a finished handle is ignored; the handle can be reused. */
    az_http_remove(h, r.easy);
    r.done = 0;
    r.len = 0;
    CU_ASSERT_EQUAL(az_http_add(h, r.easy, on_done, &r, msg), AZ_OK);
    CU_ASSERT_TRUE(run_until(&loop, req_done, &r, 5000));
    CU_ASSERT_STRING_EQUAL(r.body, "you asked for /hello");
    curl_easy_cleanup(r.easy);

    /* A refused connection ends with an error code through done. */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    bind(fd, (struct sockaddr *)&a, sizeof a);
    socklen_t al = sizeof a;
    getsockname(fd, (struct sockaddr *)&a, &al);
    close(fd); /* a port nothing listens on */
    req e;
    setup_req(&e, h, "/");
    char url[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/", ntohs(a.sin_port));
    curl_easy_setopt(e.easy, CURLOPT_URL, url);
    CU_ASSERT_EQUAL(az_http_add(h, e.easy, on_done, &e, msg), AZ_OK);
    CU_ASSERT_TRUE(run_until(&loop, req_done, &e, 5000));
    CU_ASSERT_EQUAL(e.code, CURLE_COULDNT_CONNECT);
    curl_easy_cleanup(e.easy);

    az_http_free(h);
    close_loop(&loop, &ticker);
}

static int server_saw_close(void *a)
{
    return atomic_load(&srv_closed) > *(int *)a;
}

static void test_remove_aborts_hanging(void)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    uv_timer_t ticker;
    uv_timer_init(&loop, &ticker);
    uv_timer_start(&ticker, tick, 20, 20);
    az_http *h = NULL;
    char msg[AZ_MSG_MAX];
    CU_ASSERT_EQUAL_FATAL(az_http_new(&loop, 0, &h, msg), AZ_OK);

    int closed_before = atomic_load(&srv_closed);
    req r;
    setup_req(&r, h, "/hang");
    CU_ASSERT_EQUAL(az_http_add(h, r.easy, on_done, &r, msg), AZ_OK);
    /* Let it connect and send the request. */
    int64_t until = now_ms() + 300;
    while (now_ms() < until) uv_run(&loop, UV_RUN_ONCE);
    CU_ASSERT_EQUAL(r.done, 0);
    CU_ASSERT_EQUAL(az_http_active(h), 1);
    az_http_remove(h, r.easy);
    CU_ASSERT_EQUAL(az_http_active(h), 0);
    curl_easy_cleanup(r.easy); /* closes the connection: the server sees it go */
    CU_ASSERT_TRUE(run_until(&loop, server_saw_close, &closed_before, 3000));
    /* done never runs for a removed transfer. */
    until = now_ms() + 100;
    while (now_ms() < until) uv_run(&loop, UV_RUN_ONCE);
    CU_ASSERT_EQUAL(r.done, 0);

    /* Removal from inside the transfer's own write callback: done does not run, the loop stays
     * healthy and the next transfer completes. */
    req w;
    setup_req(&w, h, "/x");
    w.remove_in_write = 1;
    CU_ASSERT_EQUAL(az_http_add(h, w.easy, on_done, &w, msg), AZ_OK);
    until = now_ms() + 500;
    while (now_ms() < until) uv_run(&loop, UV_RUN_ONCE);
    CU_ASSERT_EQUAL(w.done, 0);
    CU_ASSERT_EQUAL(az_http_active(h), 0);
    curl_easy_cleanup(w.easy);
    req n;
    setup_req(&n, h, "/after");
    CU_ASSERT_EQUAL(az_http_add(h, n.easy, on_done, &n, msg), AZ_OK);
    CU_ASSERT_TRUE(run_until(&loop, req_done, &n, 5000));
    CU_ASSERT_STRING_EQUAL(n.body, "you asked for /after");
    curl_easy_cleanup(n.easy);

    az_http_free(h);
    close_loop(&loop, &ticker);
}

#define MANY 300

static int done_count;

static void on_done_count(void *arg, CURL *easy, CURLcode code)
{
    on_done(arg, easy, code);
    done_count++;
    req *r = arg;
    if (r->chain > 0) {
        /* Start the next transfer from inside done, reusing the handle. */
        r->chain--;
        r->len = 0;
        char msg[AZ_MSG_MAX];
        CU_ASSERT_EQUAL(az_http_add(r->h, easy, on_done_count, r, msg), AZ_OK);
    }
}

static int all_done(void *a)
{
    return done_count >= *(int *)a;
}

static void test_many_concurrent(void)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    uv_timer_t ticker;
    uv_timer_init(&loop, &ticker);
    uv_timer_start(&ticker, tick, 20, 20);
    az_http *h = NULL;
    char msg[AZ_MSG_MAX];
    CU_ASSERT_EQUAL_FATAL(az_http_new(&loop, 0, &h, msg), AZ_OK);

    req *rs = calloc(MANY, sizeof *rs);
    done_count = 0;
    int64_t t0 = now_ms();
    for (int i = 0; i < MANY; i++) {
        char path[64];
        snprintf(path, sizeof path, "/r%d?delay=300", i);
        setup_req(&rs[i], h, path);
        CU_ASSERT_EQUAL(az_http_add(h, rs[i].easy, on_done_count, &rs[i], msg), AZ_OK);
    }
    CU_ASSERT_EQUAL(az_http_active(h), MANY);
    int want = MANY;
    CU_ASSERT_TRUE(run_until(&loop, all_done, &want, 20000));
    int64_t took = now_ms() - t0;
    /* Serially this would take MANY x 300 ms = 90 s; overlapped it takes about 300 ms. */
    CU_ASSERT_TRUE(took < 8000);
    int ok = 0;
    for (int i = 0; i < MANY; i++) {
        char want_body[64];
        snprintf(want_body, sizeof want_body, "you asked for /r%d?delay=300", i);
        if (rs[i].done == 1 && rs[i].code == CURLE_OK && strcmp(rs[i].body, want_body) == 0) ok++;
    }
    CU_ASSERT_EQUAL(ok, MANY);
    CU_ASSERT_EQUAL(az_http_active(h), 0);

    /* Chains: each done callback starts the next transfer on the same handle. */
    done_count = 0;
    for (int i = 0; i < 20; i++) {
        rs[i].chain = 4;
        rs[i].done = 0;
        rs[i].len = 0;
        CU_ASSERT_EQUAL(az_http_add(h, rs[i].easy, on_done_count, &rs[i], msg), AZ_OK);
    }
    want = 100;
    CU_ASSERT_TRUE(run_until(&loop, all_done, &want, 20000));
    CU_ASSERT_EQUAL(done_count, 100);
    for (int i = 0; i < 20; i++) CU_ASSERT_EQUAL(rs[i].done, 5);

    /* Half removed mid-flight, half finish. */
    done_count = 0;
    for (int i = 0; i < 100; i++) {
        rs[i].chain = 0;
        rs[i].done = 0;
        rs[i].len = 0;
        char url[96];
        snprintf(url, sizeof url, "http://127.0.0.1:%d/%s", srv_port, i % 2 ? "hang" : "ok?delay=200");
        curl_easy_setopt(rs[i].easy, CURLOPT_URL, url);
        CU_ASSERT_EQUAL(az_http_add(h, rs[i].easy, on_done_count, &rs[i], msg), AZ_OK);
    }
    int64_t until = now_ms() + 100;
    while (now_ms() < until) uv_run(&loop, UV_RUN_ONCE);
    for (int i = 1; i < 100; i += 2) az_http_remove(h, rs[i].easy);
    want = 50;
    CU_ASSERT_TRUE(run_until(&loop, all_done, &want, 10000));
    until = now_ms() + 200;
    while (now_ms() < until) uv_run(&loop, UV_RUN_ONCE);
    CU_ASSERT_EQUAL(done_count, 50);
    for (int i = 0; i < 100; i++) CU_ASSERT_EQUAL(rs[i].done, i % 2 ? 0 : 1);
    CU_ASSERT_EQUAL(az_http_active(h), 0);

    for (int i = 0; i < MANY; i++) curl_easy_cleanup(rs[i].easy);
    free(rs);
    az_http_free(h);
    close_loop(&loop, &ticker);
}

/* Freeing with transfers still running releases everything (no leak, no callback). */
static void test_free_with_running(void)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    uv_timer_t ticker;
    uv_timer_init(&loop, &ticker);
    uv_timer_start(&ticker, tick, 20, 20);
    az_http *h = NULL;
    char msg[AZ_MSG_MAX];
    CU_ASSERT_EQUAL_FATAL(az_http_new(&loop, 4, &h, msg), AZ_OK);
    req r[3];
    for (int i = 0; i < 3; i++) {
        setup_req(&r[i], h, "/hang");
        CU_ASSERT_EQUAL(az_http_add(h, r[i].easy, on_done, &r[i], msg), AZ_OK);
    }
    int64_t until = now_ms() + 200;
    while (now_ms() < until) uv_run(&loop, UV_RUN_ONCE);
    az_http_free(h);
    for (int i = 0; i < 3; i++) {
        CU_ASSERT_EQUAL(r[i].done, 0);
        curl_easy_cleanup(r[i].easy);
    }
    close_loop(&loop, &ticker);
    az_http_free(NULL);
}

int main(void)
{
    az_log_set_level(AZ_LOG_WARN);
    curl_global_init(CURL_GLOBAL_ALL);
    if (srv_start() != 0) {
        fprintf(stderr, "cannot start the test server\n");
        return 1;
    }
    CU_initialize_registry();
    CU_pSuite s = CU_add_suite("http", NULL, NULL);
    CU_add_test(s, "a transfer completes and done runs", test_completes);
    CU_add_test(s, "remove aborts a hanging transfer without done", test_remove_aborts_hanging);
    CU_add_test(s, "many concurrent transfers", test_many_concurrent);
    CU_add_test(s, "free with transfers running", test_free_with_running);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    unsigned fails = CU_get_number_of_failures();
    CU_cleanup_registry();
    srv_stop_all();
    curl_global_cleanup();
    return fails ? 1 : 0;
}
