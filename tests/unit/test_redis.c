/* CUnit suite for server/store/redis: URL parsing, and against a throwaway redis-server on a
 * unix socket: commands, error replies, losing the server and reconnecting to a new one. */
#include <CUnit/Basic.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/ctx.h"
#include "core/log.h"
#include "store/redis.h"

static char msg[AZ_MSG_MAX];

/* ================================================================ URL parsing */

static void test_parse_ok(void)
{
    az_redis_url u;
    CU_ASSERT_EQUAL_FATAL(az_redis_parse_url("redis://host", &u, msg), AZ_OK);
    CU_ASSERT_STRING_EQUAL(u.host, "host");
    CU_ASSERT_EQUAL(u.port, 6379);
    CU_ASSERT_EQUAL(u.db, 0);
    CU_ASSERT_STRING_EQUAL(u.password, "");
    CU_ASSERT_STRING_EQUAL(u.path, "");

    CU_ASSERT_EQUAL_FATAL(az_redis_parse_url("redis://host:6380/2", &u, msg), AZ_OK);
    CU_ASSERT_STRING_EQUAL(u.host, "host");
    CU_ASSERT_EQUAL(u.port, 6380);
    CU_ASSERT_EQUAL(u.db, 2);

    CU_ASSERT_EQUAL_FATAL(az_redis_parse_url("redis://:secret@host:1/0", &u, msg), AZ_OK);
    CU_ASSERT_STRING_EQUAL(u.password, "secret");
    CU_ASSERT_STRING_EQUAL(u.host, "host");
    CU_ASSERT_EQUAL(u.port, 1);
    CU_ASSERT_EQUAL(u.db, 0);

    CU_ASSERT_EQUAL_FATAL(az_redis_parse_url("redis://user:secret@host", &u, msg), AZ_OK);
    CU_ASSERT_STRING_EQUAL(u.password, "secret");
    CU_ASSERT_STRING_EQUAL(u.host, "host");
    CU_ASSERT_EQUAL(u.port, 6379);

    /* A password may itself contain '@' and ':'; the last '@' ends it. */
    CU_ASSERT_EQUAL_FATAL(az_redis_parse_url("redis://:p@s:s@h:7/3", &u, msg), AZ_OK);
    CU_ASSERT_STRING_EQUAL(u.password, "p@s:s");
    CU_ASSERT_STRING_EQUAL(u.host, "h");
    CU_ASSERT_EQUAL(u.port, 7);
    CU_ASSERT_EQUAL(u.db, 3);

    CU_ASSERT_EQUAL_FATAL(az_redis_parse_url("redis://h:65535/15", &u, msg), AZ_OK);
    CU_ASSERT_EQUAL(u.port, 65535);
    CU_ASSERT_EQUAL(u.db, 15);

    CU_ASSERT_EQUAL_FATAL(az_redis_parse_url("unix:///tmp/x.sock", &u, msg), AZ_OK);
    CU_ASSERT_STRING_EQUAL(u.path, "/tmp/x.sock");
    CU_ASSERT_STRING_EQUAL(u.host, "");
    CU_ASSERT_EQUAL(u.db, 0);

    CU_ASSERT_EQUAL_FATAL(az_redis_parse_url("unix:///tmp/x.sock?db=3", &u, msg), AZ_OK);
    CU_ASSERT_STRING_EQUAL(u.path, "/tmp/x.sock");
    CU_ASSERT_EQUAL(u.db, 3);
}

static void test_parse_errors(void)
{
    static const char *const bad[] = {
        "http://x",         "redis://",          "redis://h:0",         "redis://h:70000",
        "redis://h/16",     "unix://relative",   "unix:///p?foo=1",     "redis://h:",
        "redis://h:12ab",   "redis://h/-1",      "redis://h/x",         "unix://",
        "unix:///p?db=16",  "unix:///p?db=x",    "rediss://h",          "",
        "redis://:pw@",     "unix:///p?db=",     "redis://h/1x",
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        az_redis_url u;
        strcpy(msg, "");
        az_err e = az_redis_parse_url(bad[i], &u, msg);
        if (e != AZ_ERR_INVALID) fprintf(stderr, "\n  \"%s\" accepted\n", bad[i]);
        CU_ASSERT_EQUAL(e, AZ_ERR_INVALID);
        CU_ASSERT(strlen(msg) > 0);
    }
    /* Over-long parts are refused, not truncated. */
    char url[700];
    snprintf(url, sizeof url, "redis://%0300d", 0);
    az_redis_url u;
    CU_ASSERT_EQUAL(az_redis_parse_url(url, &u, msg), AZ_ERR_INVALID);
    snprintf(url, sizeof url, "unix:///%0300d", 0);
    CU_ASSERT_EQUAL(az_redis_parse_url(url, &u, msg), AZ_ERR_INVALID);
    /* The message never echoes a password. */
    CU_ASSERT_EQUAL(az_redis_parse_url("redis://:hunter2@h:0", &u, msg), AZ_ERR_INVALID);
    CU_ASSERT_PTR_NULL(strstr(msg, "hunter2"));
}

/* ================================================================ live server */

static char dir[64], sock[128], url[160];
static pid_t server = -1;

static void start_server(void)
{
    pid_t pid = fork();
    CU_ASSERT_FATAL(pid >= 0);
    if (pid == 0) {
        int null = open("/dev/null", O_WRONLY);
        if (null >= 0) {
            dup2(null, 1);
            dup2(null, 2);
        }
        execlp("redis-server", "redis-server", "--port", "0", "--unixsocket", sock, "--save", "",
               "--appendonly", "no", "--daemonize", "no", (char *)NULL);
        _exit(127);
    }
    server = pid;
    /* Wait for the socket to appear (and for the process to still be there). */
    for (int i = 0; i < 100; i++) {
        struct stat st;
        if (stat(sock, &st) == 0) return;
        usleep(50 * 1000);
    }
    CU_FAIL_FATAL("redis-server did not create its socket within 5 s");
}

static void stop_server(void)
{
    if (server <= 0) return;
    kill(server, SIGKILL);
    waitpid(server, NULL, 0);
    server = -1;
    unlink(sock);
}

static int live_init(void)
{
    signal(SIGPIPE, SIG_IGN); /* as agentzd does: a dead server must be an error, not a signal */
    az_log_set_level(AZ_LOG_ERROR);
    snprintf(dir, sizeof dir, "/tmp/aztest-redis-XXXXXX");
    if (!mkdtemp(dir)) return 1;
    snprintf(sock, sizeof sock, "%s/r.sock", dir);
    snprintf(url, sizeof url, "unix://%s", sock);
    return 0;
}

static int live_clean(void)
{
    stop_server();
    rmdir(dir);
    return 0;
}

static az_redis *conn;

static void test_connect_ping(void)
{
    start_server();
    CU_ASSERT_EQUAL_FATAL(az_redis_new(url, 3000, &conn, msg), AZ_OK);
    CU_ASSERT_PTR_NOT_NULL_FATAL(conn);
    CU_ASSERT_EQUAL(az_redis_ping(conn, msg), AZ_OK);
}

static void test_set_get_binary(void)
{
    CU_ASSERT_PTR_NOT_NULL_FATAL(conn);
    static const char value[] = {'a', '\0', 'b', '\n', '\xff'};
    const char *set[] = {"SET", "bin\0key", value};
    size_t setlen[] = {3, 7, sizeof value};
    redisReply *r = NULL;
    CU_ASSERT_EQUAL_FATAL(az_redis_command(conn, 3, set, setlen, &r, msg), AZ_OK);
    CU_ASSERT_PTR_NOT_NULL_FATAL(r);
    CU_ASSERT_EQUAL(r->type, REDIS_REPLY_STATUS);
    freeReplyObject(r);
    const char *get[] = {"GET", "bin\0key"};
    size_t getlen[] = {3, 7};
    CU_ASSERT_EQUAL_FATAL(az_redis_command(conn, 2, get, getlen, &r, msg), AZ_OK);
    CU_ASSERT_PTR_NOT_NULL_FATAL(r);
    CU_ASSERT_EQUAL(r->type, REDIS_REPLY_STRING);
    CU_ASSERT_EQUAL_FATAL(r->len, sizeof value);
    CU_ASSERT_EQUAL(memcmp(r->str, value, sizeof value), 0);
    freeReplyObject(r);
    /* The key is binary too: "bin" alone does not exist. */
    const char *get2[] = {"GET", "bin"};
    CU_ASSERT_EQUAL_FATAL(az_redis_command(conn, 2, get2, NULL, &r, msg), AZ_OK);
    CU_ASSERT_EQUAL(r->type, REDIS_REPLY_NIL);
    freeReplyObject(r);
}

static void test_error_reply(void)
{
    CU_ASSERT_PTR_NOT_NULL_FATAL(conn);
    const char *set[] = {"SET", "word", "hello"};
    redisReply *r = NULL;
    CU_ASSERT_EQUAL_FATAL(az_redis_command(conn, 3, set, NULL, &r, msg), AZ_OK);
    freeReplyObject(r);
    const char *incr[] = {"INCR", "word"};
    r = (redisReply *)0x1;
    strcpy(msg, "");
    CU_ASSERT_EQUAL(az_redis_command(conn, 2, incr, NULL, &r, msg), AZ_ERR_INTERNAL);
    CU_ASSERT_PTR_NULL(r);
    CU_ASSERT_PTR_NOT_NULL(strstr(msg, "not an integer"));
    CU_ASSERT_PTR_NOT_NULL(strstr(msg, "INCR"));
    /* The connection stays usable after an error reply. */
    CU_ASSERT_EQUAL(az_redis_ping(conn, msg), AZ_OK);
    const char *unknown[] = {"NOSUCHCOMMAND"};
    CU_ASSERT_EQUAL(az_redis_command(conn, 1, unknown, NULL, &r, msg), AZ_ERR_INTERNAL);
    CU_ASSERT_EQUAL(az_redis_ping(conn, msg), AZ_OK);
}

static void test_server_lost_and_back(void)
{
    CU_ASSERT_PTR_NOT_NULL_FATAL(conn);
    stop_server();
    strcpy(msg, "");
    int64_t t0 = az_now_ms();
    CU_ASSERT_EQUAL(az_redis_ping(conn, msg), AZ_ERR_UNAVAILABLE);
    CU_ASSERT(strlen(msg) > 0);
    CU_ASSERT(az_now_ms() - t0 < 3000); /* fails fast on a unix socket */
    /* Still down: still UNAVAILABLE (and no crash with no connection at all). */
    CU_ASSERT_EQUAL(az_redis_ping(conn, msg), AZ_ERR_UNAVAILABLE);
    const char *get[] = {"GET", "word"};
    redisReply *r = (redisReply *)0x1;
    CU_ASSERT_EQUAL(az_redis_command(conn, 2, get, NULL, &r, msg), AZ_ERR_UNAVAILABLE);
    CU_ASSERT_PTR_NULL(r);
    /* A new server on the same socket: the next call reconnects by itself. */
    start_server();
    CU_ASSERT_EQUAL(az_redis_ping(conn, msg), AZ_OK);
    const char *set[] = {"SET", "after", "restart"};
    CU_ASSERT_EQUAL_FATAL(az_redis_command(conn, 3, set, NULL, &r, msg), AZ_OK);
    freeReplyObject(r);
    /* And a server restart while connected is survived by one transparent retry. */
    stop_server();
    start_server();
    CU_ASSERT_EQUAL(az_redis_ping(conn, msg), AZ_OK);
}

static void test_db_selection(void)
{
    CU_ASSERT_PTR_NOT_NULL_FATAL(conn);
    /* A connection on db 3 does not see keys of db 0. */
    redisReply *r;
    const char *set[] = {"SET", "dbkey", "zero"};
    CU_ASSERT_EQUAL_FATAL(az_redis_command(conn, 3, set, NULL, &r, msg), AZ_OK);
    freeReplyObject(r);
    char url3[200];
    snprintf(url3, sizeof url3, "%s?db=3", url);
    az_redis *c3 = NULL;
    CU_ASSERT_EQUAL_FATAL(az_redis_new(url3, 1000, &c3, msg), AZ_OK);
    const char *get[] = {"GET", "dbkey"};
    CU_ASSERT_EQUAL(az_redis_command(c3, 2, get, NULL, &r, msg), AZ_OK);
    CU_ASSERT_EQUAL(r->type, REDIS_REPLY_NIL);
    freeReplyObject(r);
    /* The db survives a reconnect. */
    stop_server();
    start_server();
    const char *set3[] = {"SET", "k3", "three"};
    CU_ASSERT_EQUAL_FATAL(az_redis_command(c3, 3, set3, NULL, &r, msg), AZ_OK);
    freeReplyObject(r);
    const char *get3[] = {"GET", "k3"};
    CU_ASSERT_EQUAL(az_redis_command(conn, 2, get3, NULL, &r, msg), AZ_OK);
    CU_ASSERT_EQUAL(r->type, REDIS_REPLY_NIL); /* conn is on db 0 */
    freeReplyObject(r);
    az_redis_free(c3);
}

static void test_free(void)
{
    az_redis_free(conn);
    conn = NULL;
    az_redis_free(NULL);
}

static void test_missing_socket_waits(void)
{
    char missing[200];
    snprintf(missing, sizeof missing, "unix://%s/nothing-here.sock", dir);
    az_redis *r = (az_redis *)0x1;
    strcpy(msg, "");
    int64_t t0 = az_now_ms();
    az_err e = az_redis_new(missing, 300, &r, msg);
    int64_t took = az_now_ms() - t0;
    CU_ASSERT_EQUAL(e, AZ_ERR_UNAVAILABLE);
    CU_ASSERT_PTR_NULL(r);
    CU_ASSERT(took >= 300);
    CU_ASSERT(took < 2000);
    CU_ASSERT_PTR_NOT_NULL(strstr(msg, "nothing-here.sock"));
    /* wait 0: one attempt only. */
    t0 = az_now_ms();
    CU_ASSERT_EQUAL(az_redis_new(missing, 0, &r, msg), AZ_ERR_UNAVAILABLE);
    CU_ASSERT(az_now_ms() - t0 < 300);
    /* A bad URL is INVALID, not UNAVAILABLE, and does not wait. */
    t0 = az_now_ms();
    CU_ASSERT_EQUAL(az_redis_new("http://x", 5000, &r, msg), AZ_ERR_INVALID);
    CU_ASSERT_PTR_NULL(r);
    CU_ASSERT(az_now_ms() - t0 < 300);
}

int main(void)
{
    if (CU_initialize_registry() != CUE_SUCCESS) return 1;
    CU_pSuite p = CU_add_suite("redis_parse_url", NULL, NULL);
    CU_pSuite l = CU_add_suite("redis_live", live_init, live_clean);
    if (!p || !l) return 1;
    CU_add_test(p, "valid urls", test_parse_ok);
    CU_add_test(p, "invalid urls", test_parse_errors);
    CU_add_test(l, "connect and ping", test_connect_ping);
    CU_add_test(l, "SET/GET binary-safe", test_set_get_binary);
    CU_add_test(l, "error reply", test_error_reply);
    CU_add_test(l, "server lost and back", test_server_lost_and_back);
    CU_add_test(l, "db selection", test_db_selection);
    CU_add_test(l, "free", test_free);
    CU_add_test(l, "missing socket waits", test_missing_socket_waits);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    unsigned failures = CU_get_number_of_failures() + CU_get_number_of_tests_failed() +
                        CU_get_number_of_suites_failed();
    CU_cleanup_registry();
    return failures ? 1 : 0;
}
