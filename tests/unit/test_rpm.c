/* CUnit suite for server/agent/rpm against a real Redis (the embedded one in a temp dir): the
 * per-agent budget of calls per minute, shared by two connections as two workers would share
 * it, the sliding window, key TTLs, and bad input. */
#include <CUnit/Basic.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "agent/rpm.h"
#include "core/ctx.h"
#include "core/log.h"
#include "embed/embedded.h"

#define WS "00000000-0000-0000-0000-000000000001"

static char dir[64];
static az_embed *embed;
static az_redis *r1, *r2; /* two connections: two workers */
static char msg[AZ_MSG_MAX];

static int64_t acquire(az_redis *r, const char *agent, int max_rpm)
{
    int64_t wait = -1;
    az_err e = az_rpm_acquire(r, WS, agent, max_rpm, &wait, msg);
    CU_ASSERT_EQUAL(e, AZ_OK);
    if (e != AZ_OK) fprintf(stderr, "az_rpm_acquire: %s\n", msg);
    return wait;
}

static long long ttl_ms(const char *agent)
{
    char key[160];
    snprintf(key, sizeof key, "agentz:agents:rpm:%s:%s", WS, agent);
    const char *argv[2] = {"PTTL", key};
    redisReply *rep = NULL;
    CU_ASSERT_EQUAL_FATAL(az_redis_command(r1, 2, argv, NULL, &rep, msg), AZ_OK);
    long long v = rep->type == REDIS_REPLY_INTEGER ? rep->integer : -100;
    freeReplyObject(rep);
    return v;
}

static void test_limit_enforced_across_connections(void)
{
    const char *agent = "1a1a1a1a-0000-4000-8000-000000000001";
    /* max_rpm 2: a call, then the next ones (from either worker) wait until 30 s after it. */
    CU_ASSERT_EQUAL(acquire(r1, agent, 2), 0);
    int64_t w = acquire(r2, agent, 2);
    CU_ASSERT(w > 25000 && w <= 30000);
    int64_t w3 = acquire(r1, agent, 2); /* the third call too */
    CU_ASSERT(w3 > 25000 && w3 <= w);   /* refused calls are not counted */
    /* The key expires once the bucket is full again (30 s out), not never. */
    long long t = ttl_ms(agent);
    CU_ASSERT(t > 25000 && t <= 30001);
    /* Another agent has its own budget. */
    CU_ASSERT_EQUAL(acquire(r2, "1a1a1a1a-0000-4000-8000-000000000002", 2), 0);
}

static void test_never_more_than_max_rpm_a_minute(void)
{
    /* 600 per minute = one every 100 ms: over 1.05 s of asking as fast as two workers can, 11
     * calls at most go through (0, 100, ..., 1000 ms), and not fewer than 9. */
    const char *agent = "1a1a1a1a-0000-4000-8000-000000000003";
    int allowed = 0;
    int64_t start = az_now_ms();
    for (int i = 0; az_now_ms() - start < 1050; i++) {
        int64_t w = acquire(i % 2 ? r1 : r2, agent, 600);
        if (w == 0) allowed++;
        else CU_ASSERT(w <= 100);
        usleep(1000);
    }
    CU_ASSERT(allowed >= 9 && allowed <= 11);
    /* Waiting as told gets the call through. */
    int64_t w = acquire(r1, agent, 600);
    if (w > 0) usleep((useconds_t)(w + 2) * 1000);
    CU_ASSERT_EQUAL(acquire(r2, agent, 600), 0);
}

static void test_unlimited_and_bad_input(void)
{
    int64_t w = -1;
    CU_ASSERT_EQUAL(az_rpm_acquire(r1, WS, "1a1a1a1a-0000-4000-8000-000000000004", 0, &w, msg), AZ_OK);
    CU_ASSERT_EQUAL(w, 0);
    CU_ASSERT_EQUAL(ttl_ms("1a1a1a1a-0000-4000-8000-000000000004"), -2); /* no key written */
    CU_ASSERT_EQUAL(az_rpm_acquire(r1, WS, "", 5, &w, msg), AZ_ERR_INVALID);
    CU_ASSERT_PTR_NOT_NULL(strstr(msg, "agent_id"));
    CU_ASSERT_EQUAL(az_rpm_acquire(r1, WS, "a:b", 5, &w, msg), AZ_ERR_INVALID);
    CU_ASSERT_EQUAL(az_rpm_acquire(r1, NULL, "a", 5, &w, msg), AZ_ERR_INVALID);
    CU_ASSERT_PTR_NOT_NULL(strstr(msg, "workspace_id"));
}

static void test_script_reloaded_after_flush(void)
{
    const char *argv[2] = {"SCRIPT", "FLUSH"};
    redisReply *rep = NULL;
    CU_ASSERT_EQUAL_FATAL(az_redis_command(r1, 2, argv, NULL, &rep, msg), AZ_OK);
    freeReplyObject(rep);
    CU_ASSERT_EQUAL(acquire(r1, "1a1a1a1a-0000-4000-8000-000000000005", 1), 0);
    CU_ASSERT(acquire(r2, "1a1a1a1a-0000-4000-8000-000000000005", 1) > 0);
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    remove(path);
    return 0;
}

static int suite_init(void)
{
    az_log_set_level(AZ_LOG_ERROR);
    snprintf(dir, sizeof dir, "/tmp/aztest-rpm-XXXXXX");
    if (!mkdtemp(dir) || chmod(dir, 0755) != 0) return -1;
    if (az_embed_start(dir, &embed, msg) != AZ_OK) {
        fprintf(stderr, "cannot start the embedded servers: %s\n", msg);
        return -1;
    }
    if (az_redis_new(az_embed_redis_url(embed), 10000, &r1, msg) != AZ_OK ||
        az_redis_new(az_embed_redis_url(embed), 10000, &r2, msg) != AZ_OK) {
        fprintf(stderr, "cannot connect to redis: %s\n", msg);
        return -1;
    }
    return 0;
}

static int suite_clean(void)
{
    az_redis_free(r1);
    az_redis_free(r2);
    az_embed_stop(embed);
    nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    return 0;
}

int main(void)
{
    if (CU_initialize_registry() != CUE_SUCCESS) return 1;
    CU_pSuite s = CU_add_suite("rpm", suite_init, suite_clean);
    CU_add_test(s, "max_rpm enforced across two connections", test_limit_enforced_across_connections);
    CU_add_test(s, "never more than max_rpm a minute; waits are right", test_never_more_than_max_rpm_a_minute);
    CU_add_test(s, "max_rpm 0 and bad input", test_unlimited_and_bad_input);
    CU_add_test(s, "script reloaded after SCRIPT FLUSH", test_script_reloaded_after_flush);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    unsigned failed = CU_get_number_of_failures() + CU_get_number_of_tests_failed();
    if (CU_get_number_of_suites_failed()) failed++;
    CU_cleanup_registry();
    return failed ? 1 : 0;
}
