/* CUnit suite for server/store/redisuv: hiredis async contexts on libuv learn of socket errors.
 * A connect refused after connect(2) returned EINPROGRESS fails through the connect callback,
 * and a connection reset by the peer ends through the disconnect callback, both within a
 * second; hiredis 0.14's own adapter waits forever in both cases (libuv reports POLLERR as a
 * poll status it ignores). A working connection still connects and is read. */
#include <CUnit/Basic.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "store/redisuv.h"

static int connect_status, disconnect_status;
static int connects, disconnects;

static void on_connect(const redisAsyncContext *ac, int status)
{
    (void)ac;
    connects++;
    connect_status = status;
}

static void on_disconnect(const redisAsyncContext *ac, int status)
{
    (void)ac;
    disconnects++;
    disconnect_status = status;
}

static void on_deadline(uv_timer_t *t) { uv_stop(t->loop); }

static void on_check(uv_timer_t *t)
{
    int *want = t->data;
    if ((want[0] && connects) || (want[1] && disconnects)) uv_stop(t->loop);
}

/* Runs loop until the wanted callback ran or ms passed; returns the milliseconds it took. */
static long run_until(uv_loop_t *loop, int want_connect, int want_disconnect, long ms)
{
    int want[2] = {want_connect, want_disconnect};
    uv_timer_t deadline, check;
    uv_timer_init(loop, &deadline);
    uv_timer_init(loop, &check);
    check.data = want;
    uv_update_time(loop);
    uint64_t t0 = uv_now(loop);
    uv_timer_start(&deadline, on_deadline, (uint64_t)ms, 0);
    uv_timer_start(&check, on_check, 5, 5);
    uv_run(loop, UV_RUN_DEFAULT);
    uv_timer_stop(&deadline);
    uv_timer_stop(&check);
    uv_close((uv_handle_t *)&deadline, NULL);
    uv_close((uv_handle_t *)&check, NULL);
    uv_update_time(loop);
    long took = (long)(uv_now(loop) - t0);
    uv_run(loop, UV_RUN_NOWAIT);
    return took;
}

/* A loopback port: listening when listen_fd is not NULL, else bound and closed (refused). */
static int loopback_port(int *listen_fd)
{
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    if (s < 0 || bind(s, (struct sockaddr *)&a, sizeof a) != 0 ||
        getsockname(s, (struct sockaddr *)&a, &len) != 0)
        return -1;
    if (listen_fd) {
        if (listen(s, 4) != 0) return -1;
        *listen_fd = s;
    } else {
        close(s);
    }
    return ntohs(a.sin_port);
}

static redisAsyncContext *open_ctx(uv_loop_t *loop, int port)
{
    connects = disconnects = 0;
    connect_status = disconnect_status = 99;
    redisAsyncContext *ac = redisAsyncConnect("127.0.0.1", port);
    if (!ac) return NULL;
    if (ac->err) return ac; /* refused synchronously: the caller looks at ac->err */
    CU_ASSERT_EQUAL_FATAL(az_redisuv_attach(ac, loop), REDIS_OK);
    CU_ASSERT_EQUAL(az_redisuv_attach(ac, loop), REDIS_ERR); /* only once */
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    redisAsyncCommand(ac, NULL, NULL, "PING");
    return ac;
}

static void test_refused_connect_fails(void)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    int port = loopback_port(NULL);
    CU_ASSERT_FATAL(port > 0);
    redisAsyncContext *ac = open_ctx(&loop, port);
    CU_ASSERT_PTR_NOT_NULL_FATAL(ac);
    if (ac->err) { /* the kernel refused at once: nothing asynchronous to test */
        redisAsyncFree(ac);
    } else {
        long took = run_until(&loop, 1, 0, 3000);
        CU_ASSERT_EQUAL(connects, 1);
        CU_ASSERT_EQUAL(connect_status, REDIS_ERR);
        CU_ASSERT(took < 1000);
        /* hiredis freed the context after the failed connect; nothing else runs */
        CU_ASSERT_EQUAL(disconnects, 0);
    }
    uv_run(&loop, UV_RUN_NOWAIT);
    CU_ASSERT_EQUAL(uv_loop_close(&loop), 0); /* every handle closed */
}

static void test_reset_connection_disconnects(void)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    int lfd = -1;
    int port = loopback_port(&lfd);
    CU_ASSERT_FATAL(port > 0);
    redisAsyncContext *ac = open_ctx(&loop, port);
    CU_ASSERT_PTR_NOT_NULL_FATAL(ac);
    CU_ASSERT_EQUAL_FATAL(ac->err, 0);
    run_until(&loop, 1, 0, 3000);
    CU_ASSERT_EQUAL_FATAL(connects, 1);
    CU_ASSERT_EQUAL(connect_status, REDIS_OK);
    int peer = accept(lfd, NULL, NULL);
    CU_ASSERT_FATAL(peer >= 0);
    char buf[64];
    CU_ASSERT(read(peer, buf, sizeof buf) > 0); /* the PING arrived: the context writes */
    /* close with a zero linger: an RST, which epoll reports as an error on the client */
    struct linger lg = {.l_onoff = 1, .l_linger = 0};
    setsockopt(peer, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    close(peer);
    long took = run_until(&loop, 0, 1, 3000);
    CU_ASSERT_EQUAL(disconnects, 1);
    CU_ASSERT_EQUAL(disconnect_status, REDIS_ERR);
    CU_ASSERT(took < 1000);
    close(lfd);
    uv_run(&loop, UV_RUN_NOWAIT);
    CU_ASSERT_EQUAL(uv_loop_close(&loop), 0);
}

static void test_working_connection_and_free(void)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    int lfd = -1;
    int port = loopback_port(&lfd);
    redisAsyncContext *ac = open_ctx(&loop, port);
    CU_ASSERT_PTR_NOT_NULL_FATAL(ac);
    run_until(&loop, 1, 0, 3000);
    CU_ASSERT_EQUAL(connect_status, REDIS_OK);
    int peer = accept(lfd, NULL, NULL);
    CU_ASSERT_FATAL(peer >= 0);
    /* a reply arrives and is read; then a deliberate free reports a clean disconnect */
    CU_ASSERT(write(peer, "+PONG\r\n", 7) == 7);
    run_until(&loop, 0, 1, 200);
    CU_ASSERT_EQUAL(disconnects, 0);
    redisAsyncFree(ac);
    CU_ASSERT_EQUAL(disconnects, 1);
    CU_ASSERT_EQUAL(disconnect_status, REDIS_OK);
    close(peer);
    close(lfd);
    uv_run(&loop, UV_RUN_NOWAIT);
    CU_ASSERT_EQUAL(uv_loop_close(&loop), 0);
}

int main(void)
{
    if (CU_initialize_registry() != CUE_SUCCESS) return 1;
    CU_pSuite s = CU_add_suite("redisuv", NULL, NULL);
    CU_add_test(s, "a refused connect fails within a second", test_refused_connect_fails);
    CU_add_test(s, "a reset connection disconnects within a second", test_reset_connection_disconnects);
    CU_add_test(s, "a working connection reads, free disconnects cleanly", test_working_connection_and_free);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    unsigned failures = CU_get_number_of_failures() + CU_get_number_of_tests_failed() +
                        CU_get_number_of_suites_failed();
    CU_cleanup_registry();
    return failures ? 1 : 0;
}
