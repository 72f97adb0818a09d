/* CUnit suite for server/auth/ratelimit against a throwaway redis-server on a unix socket: rule
 * parsing, burst and exhaustion, refill, workspace and expensive buckets, retry delays, key
 * expiry, reloading the script after SCRIPT FLUSH, and failing open while Redis is down. */
#include <CUnit/Basic.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "auth/ratelimit.h"
#include "core/ctx.h"
#include "core/log.h"
#include "store/redis.h"

static char dir[64], sock[128], url[160];
static pid_t server = -1;
static az_redis *redis;
static char msg[AZ_MSG_MAX];

static const az_perm READ = {"/agentz.v1.AgentService/GetAgent", 1, 0, 0};
static const az_perm EXPENSIVE = {"/agentz.v1.WorkflowService/StartRun", 3, 1, 1};
static const az_perm PUBLIC = {"/grpc.health.v1.Health/Check", AZ_PERM_PUBLIC, 0, 0};

/* ---------------------------------------------------------------- helpers */

static int start_server(void)
{
    unlink(sock);
    pid_t pid = fork();
    if (pid < 0) return -1;
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
    for (int i = 0; i < 100; i++) {
        struct stat st;
        if (stat(sock, &st) == 0) return 0;
        usleep(50 * 1000);
    }
    return -1;
}

static void stop_server(void)
{
    if (server <= 0) return;
    kill(server, SIGKILL);
    waitpid(server, NULL, 0);
    server = -1;
    unlink(sock);
}

/* A principal nobody else in this run uses, in workspace ws. */
static az_principal principal(const char *ws)
{
    static int next;
    az_principal p = {.role = 4};
    snprintf(p.id, sizeof p.id, "key:test-%d-%d", (int)getpid(), ++next);
    snprintf(p.workspace_id, sizeof p.workspace_id, "%s", ws);
    snprintf(p.auth_method, sizeof p.auth_method, "api_key");
    return p;
}

static const char *workspace(void)
{
    static char ws[8][37];
    static int next;
    char *out = ws[next++ % 8];
    snprintf(out, 37, "00000000-0000-4000-8000-%012d", (int)getpid() * 16 + next);
    return out;
}

static az_ratelimit *limiter(double prate, int pburst, double wrate, int wburst, double xrate,
                             int xburst)
{
    az_ratelimit_config cfg = {{prate, pburst}, {wrate, wburst}, {xrate, xburst}};
    az_ratelimit *rl = NULL;
    CU_ASSERT_EQUAL(az_ratelimit_new(redis, &cfg, &rl, msg), AZ_OK);
    return rl;
}

/* Calls until the first denial (at most limit calls); returns how many were allowed. */
static int allowed_before_denial(az_ratelimit *rl, const az_principal *p, const az_perm *perm,
                                 int limit)
{
    for (int i = 0; i < limit; i++) {
        strcpy(msg, "");
        az_err e = az_ratelimit_check(rl, p, perm, msg);
        if (e == AZ_ERR_EXHAUSTED) return i;
        CU_ASSERT_EQUAL(e, AZ_OK);
    }
    return limit;
}

/* The seconds of "retry in 1.234 s" in msg, or -1. */
static double retry_of(const char *m)
{
    const char *at = strstr(m, "retry in ");
    double s = -1;
    if (!at || sscanf(at + 9, "%lf", &s) != 1) return -1;
    return s;
}

static long long redis_int(int argc, const char **argv)
{
    redisReply *r = NULL;
    if (az_redis_command(redis, argc, argv, NULL, &r, msg) != AZ_OK) return -100;
    long long v = r->type == REDIS_REPLY_INTEGER ? r->integer : -200;
    freeReplyObject(r);
    return v;
}

/* ---------------------------------------------------------------- suite setup */

static int suite_init(void)
{
    signal(SIGPIPE, SIG_IGN);
    az_log_set_level(AZ_LOG_ERROR);
    snprintf(dir, sizeof dir, "/tmp/aztest-rl-XXXXXX");
    if (!mkdtemp(dir)) return 1;
    snprintf(sock, sizeof sock, "%s/r.sock", dir);
    snprintf(url, sizeof url, "unix://%s", sock);
    if (start_server() != 0) return 1;
    return az_redis_new(url, 3000, &redis, msg) == AZ_OK ? 0 : 1;
}

static int suite_clean(void)
{
    az_redis_free(redis);
    redis = NULL;
    stop_server();
    rmdir(dir);
    return 0;
}

/* ================================================================ tests */

static void test_parse_rule(void)
{
    az_ratelimit_rule r = {-1, -1};
    CU_ASSERT_EQUAL(az_ratelimit_parse_rule("AGENTZ_RATE_LIMIT", "50", &r, msg), AZ_OK);
    CU_ASSERT_DOUBLE_EQUAL(r.rate, 50, 1e-9);
    CU_ASSERT_EQUAL(r.burst, 0);
    CU_ASSERT_EQUAL(az_ratelimit_parse_rule("AGENTZ_RATE_LIMIT", "2.5:7", &r, msg), AZ_OK);
    CU_ASSERT_DOUBLE_EQUAL(r.rate, 2.5, 1e-9);
    CU_ASSERT_EQUAL(r.burst, 7);
    CU_ASSERT_EQUAL(az_ratelimit_parse_rule("AGENTZ_RATE_LIMIT", "0", &r, msg), AZ_OK);
    CU_ASSERT_DOUBLE_EQUAL(r.rate, 0, 1e-9);
    static const char *bad[] = {"", "x", "-1", "5:", "5:0", "5:-2", "5:x", "5:3:1", "nan", "inf", "5 "};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        r = (az_ratelimit_rule){9, 9};
        strcpy(msg, "");
        CU_ASSERT_EQUAL(az_ratelimit_parse_rule("AGENTZ_RATE_LIMIT_WORKSPACE", bad[i], &r, msg),
                        AZ_ERR_INVALID);
        CU_ASSERT_PTR_NOT_NULL(strstr(msg, "AGENTZ_RATE_LIMIT_WORKSPACE"));
        CU_ASSERT_DOUBLE_EQUAL(r.rate, 9, 1e-9); /* unchanged */
    }
    az_ratelimit_config d;
    az_ratelimit_defaults(&d);
    CU_ASSERT_DOUBLE_EQUAL(d.principal.rate, 50, 1e-9);
    CU_ASSERT_EQUAL(d.principal.burst, 100);
    CU_ASSERT_DOUBLE_EQUAL(d.workspace.rate, 200, 1e-9);
    CU_ASSERT_EQUAL(d.workspace.burst, 400);
    CU_ASSERT_DOUBLE_EQUAL(d.expensive.rate, 5, 1e-9);
    CU_ASSERT_EQUAL(d.expensive.burst, 20);
    az_ratelimit *rl = (az_ratelimit *)0x1;
    az_ratelimit_config neg = {{-1, 0}, {0, 0}, {0, 0}};
    CU_ASSERT_EQUAL(az_ratelimit_new(redis, &neg, &rl, msg), AZ_ERR_INVALID);
    CU_ASSERT_PTR_NULL(rl);
    az_ratelimit_free(NULL);
}

static void test_burst_then_exhaustion(void)
{
    az_ratelimit *rl = limiter(1, 5, 0, 0, 0, 0);
    az_principal p = principal(workspace());
    CU_ASSERT_EQUAL(allowed_before_denial(rl, &p, &READ, 50), 5);
    CU_ASSERT_EQUAL(az_ratelimit_check(rl, &p, &READ, msg), AZ_ERR_EXHAUSTED);
    CU_ASSERT_PTR_NOT_NULL(strstr(msg, "rate limit exceeded for principal: retry in "));
    /* Another principal has its own bucket. */
    az_principal q = principal(p.workspace_id);
    CU_ASSERT_EQUAL(allowed_before_denial(rl, &q, &READ, 50), 5);
    az_ratelimit_free(rl);
}

static void test_refill_after_interval(void)
{
    az_ratelimit *rl = limiter(10, 3, 0, 0, 0, 0); /* one more every 100 ms */
    az_principal p = principal(workspace());
    CU_ASSERT_EQUAL(allowed_before_denial(rl, &p, &READ, 50), 3);
    usleep(120 * 1000);
    CU_ASSERT_EQUAL(az_ratelimit_check(rl, &p, &READ, msg), AZ_OK);
    CU_ASSERT_EQUAL(az_ratelimit_check(rl, &p, &READ, msg), AZ_ERR_EXHAUSTED);
    /* A full refill takes burst x interval. */
    usleep(330 * 1000);
    CU_ASSERT_EQUAL(allowed_before_denial(rl, &p, &READ, 50), 3);
    az_ratelimit_free(rl);
}

static void test_workspace_across_principals(void)
{
    az_ratelimit *rl = limiter(100, 1000, 1, 4, 0, 0);
    const char *ws = workspace();
    az_principal a = principal(ws), b = principal(ws), other = principal(workspace());
    CU_ASSERT_EQUAL(az_ratelimit_check(rl, &a, &READ, msg), AZ_OK);
    CU_ASSERT_EQUAL(az_ratelimit_check(rl, &a, &READ, msg), AZ_OK);
    CU_ASSERT_EQUAL(az_ratelimit_check(rl, &b, &READ, msg), AZ_OK);
    CU_ASSERT_EQUAL(az_ratelimit_check(rl, &b, &READ, msg), AZ_OK);
    CU_ASSERT_EQUAL(az_ratelimit_check(rl, &a, &READ, msg), AZ_ERR_EXHAUSTED);
    CU_ASSERT_PTR_NOT_NULL(strstr(msg, "rate limit exceeded for workspace: retry in "));
    CU_ASSERT_EQUAL(az_ratelimit_check(rl, &b, &READ, msg), AZ_ERR_EXHAUSTED);
    /* Another workspace is not affected. */
    CU_ASSERT_EQUAL(allowed_before_denial(rl, &other, &READ, 10), 4);
    /* A denied call consumed nothing: the principal bucket of a saw exactly 2 calls. */
    char key[200];
    snprintf(key, sizeof key, "agentz:rl:p:%s", a.id);
    const char *pttl[] = {"PTTL", key};
    long long ms = redis_int(2, pttl);
    CU_ASSERT(ms > 0 && ms <= 21); /* 2 calls x 10 ms interval, plus 1; a 3rd would make 31 */
    az_ratelimit_free(rl);
}

static void test_expensive_separate(void)
{
    az_ratelimit *rl = limiter(1000, 1000, 0, 0, 1, 2);
    az_principal p = principal(workspace());
    CU_ASSERT_EQUAL(allowed_before_denial(rl, &p, &EXPENSIVE, 20), 2);
    CU_ASSERT_EQUAL(az_ratelimit_check(rl, &p, &EXPENSIVE, msg), AZ_ERR_EXHAUSTED);
    CU_ASSERT_PTR_NOT_NULL(strstr(msg, "rate limit exceeded for principal (expensive calls): retry in "));
    /* Ordinary calls of the same principal go on. */
    CU_ASSERT_EQUAL(allowed_before_denial(rl, &p, &READ, 100), 100);
    /* With the expensive limit off, expensive calls only count as ordinary ones. */
    az_ratelimit *off = limiter(1000, 1000, 0, 0, 0, 0);
    CU_ASSERT_EQUAL(allowed_before_denial(off, &p, &EXPENSIVE, 50), 50);
    az_ratelimit_free(off);
    az_ratelimit_free(rl);
}

static void test_retry_delay(void)
{
    az_ratelimit *rl = limiter(2, 1, 0, 0, 0, 0); /* one per 500 ms */
    az_principal p = principal(workspace());
    CU_ASSERT_EQUAL(az_ratelimit_check(rl, &p, &READ, msg), AZ_OK);
    CU_ASSERT_EQUAL_FATAL(az_ratelimit_check(rl, &p, &READ, msg), AZ_ERR_EXHAUSTED);
    double s = retry_of(msg);
    CU_ASSERT(s > 0.35 && s <= 0.501);
    /* Waiting as told, counted from the answer as a client would, is enough. */
    usleep((useconds_t)(s * 1e6));
    CU_ASSERT_EQUAL(az_ratelimit_check(rl, &p, &READ, msg), AZ_OK);
    CU_ASSERT_EQUAL(az_ratelimit_check(rl, &p, &READ, msg), AZ_ERR_EXHAUSTED);
    /* The default principal rule: 50/s, so the wait after the burst is about 20 ms. */
    az_ratelimit_config d;
    az_ratelimit_defaults(&d);
    az_ratelimit *def = NULL;
    CU_ASSERT_EQUAL_FATAL(az_ratelimit_new(redis, &d, &def, msg), AZ_OK);
    az_principal q = principal(workspace());
    int n = allowed_before_denial(def, &q, &READ, 300);
    CU_ASSERT(n >= 100 && n <= 130); /* the burst, plus what refilled meanwhile */
    s = retry_of(msg);
    CU_ASSERT(s > 0 && s <= 0.021);
    az_ratelimit_free(def);
    az_ratelimit_free(rl);
}

static void test_keys_expire(void)
{
    az_ratelimit *rl = limiter(10, 5, 5, 5, 1, 2);
    az_principal p = principal(workspace());
    CU_ASSERT_EQUAL(az_ratelimit_check(rl, &p, &EXPENSIVE, msg), AZ_OK);
    char key[200];
    const char *pttl[] = {"PTTL", key};
    snprintf(key, sizeof key, "agentz:rl:p:%s", p.id);
    long long ms = redis_int(2, pttl);
    CU_ASSERT(ms > 0 && ms <= 101);
    snprintf(key, sizeof key, "agentz:rl:w:%s", p.workspace_id);
    ms = redis_int(2, pttl);
    CU_ASSERT(ms > 0 && ms <= 201);
    snprintf(key, sizeof key, "agentz:rl:e:%s", p.id);
    ms = redis_int(2, pttl);
    CU_ASSERT(ms > 0 && ms <= 1001);
    /* Once refilled, the key is gone. */
    usleep(250 * 1000);
    snprintf(key, sizeof key, "agentz:rl:p:%s", p.id);
    const char *exists[] = {"EXISTS", key};
    CU_ASSERT_EQUAL(redis_int(2, exists), 0);
    az_ratelimit_free(rl);
}

static void test_disabled_and_public(void)
{
    az_ratelimit *rl = limiter(0, 0, 0, 0, 0, 0);
    az_principal p = principal(workspace());
    CU_ASSERT_EQUAL(allowed_before_denial(rl, &p, &EXPENSIVE, 200), 200);
    az_ratelimit_free(rl);
    rl = limiter(1, 1, 1, 1, 1, 1);
    /* Health and reflection, and calls without a principal, are never limited. */
    CU_ASSERT_EQUAL(allowed_before_denial(rl, &p, &PUBLIC, 20), 20);
    CU_ASSERT_EQUAL(allowed_before_denial(rl, &p, NULL, 20), 20);
    az_principal anon = {.id = ""};
    CU_ASSERT_EQUAL(allowed_before_denial(rl, &anon, &READ, 20), 20);
    CU_ASSERT_EQUAL(az_ratelimit_check(NULL, &p, &READ, msg), AZ_OK);
    az_ratelimit_free(rl);
}

static void test_script_reload_after_flush(void)
{
    az_ratelimit *rl = limiter(1, 3, 0, 0, 0, 0);
    az_principal p = principal(workspace());
    CU_ASSERT_EQUAL(az_ratelimit_check(rl, &p, &READ, msg), AZ_OK);
    redisReply *r = NULL;
    const char *flush[] = {"SCRIPT", "FLUSH"};
    CU_ASSERT_EQUAL_FATAL(az_redis_command(redis, 2, flush, NULL, &r, msg), AZ_OK);
    freeReplyObject(r);
    /* The next call finds NOSCRIPT, sends the text again, and the limit still holds: a call
     * that failed open would not be denied. */
    CU_ASSERT_EQUAL(allowed_before_denial(rl, &p, &READ, 20), 2);
    CU_ASSERT_PTR_NOT_NULL(strstr(msg, "retry in"));
    az_ratelimit_free(rl);
}

static void test_fail_open(void)
{
    az_ratelimit *rl = limiter(1, 2, 1, 2, 1, 1);
    az_principal p = principal(workspace());
    stop_server();
    /* Redis is gone: every call is allowed, quickly. */
    int64_t t0 = az_now_ms();
    CU_ASSERT_EQUAL(allowed_before_denial(rl, &p, &EXPENSIVE, 50), 50);
    CU_ASSERT(az_now_ms() - t0 < 2000);
    /* Back again: after the back-off the limits apply once more. */
    CU_ASSERT_EQUAL_FATAL(start_server(), 0);
    usleep(1100 * 1000);
    int n = allowed_before_denial(rl, &p, &EXPENSIVE, 20);
    CU_ASSERT_EQUAL(n, 1);
    az_ratelimit_free(rl);
}

int main(void)
{
    if (CU_initialize_registry() != CUE_SUCCESS) return 1;
    CU_pSuite s = CU_add_suite("ratelimit", suite_init, suite_clean);
    CU_add_test(s, "parse rules and defaults", test_parse_rule);
    CU_add_test(s, "burst then exhaustion", test_burst_then_exhaustion);
    CU_add_test(s, "refill after the emission interval", test_refill_after_interval);
    CU_add_test(s, "workspace limit across principals", test_workspace_across_principals);
    CU_add_test(s, "expensive limit separate", test_expensive_separate);
    CU_add_test(s, "retry delay", test_retry_delay);
    CU_add_test(s, "keys expire", test_keys_expire);
    CU_add_test(s, "disabled and public", test_disabled_and_public);
    CU_add_test(s, "script reload after SCRIPT FLUSH", test_script_reload_after_flush);
    CU_add_test(s, "fail open while redis is down", test_fail_open);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    unsigned failures = CU_get_number_of_failures();
    int err = CU_get_error();
    CU_cleanup_registry();
    return failures || err ? 1 : 0;
}
