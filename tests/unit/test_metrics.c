/* CUnit suite for server/task/metrics against a real PostgreSQL (the embedded one in a temp
 * dir): an agent's counters, usage and duration percentiles over a window, with rows placed at
 * known times around the window's edges. */
#include <CUnit/Basic.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/log.h"
#include "embed/embedded.h"
#include "store/migrate.h"
#include "store/pgpool.h"
#include "task/metrics.h"

#define AGENT "2b2b2b2b-0000-4000-8000-000000000001"
#define OTHER "2b2b2b2b-0000-4000-8000-000000000002"
#define WS_B "0b0b0b0b-0000-4000-8000-00000000000b"

static char dir[64];
static az_embed *embed;
static az_pg *pg;
static az_arena *arena;
static char msg[AZ_MSG_MAX];
static const az_ctx ctx = {.workspace_id = AZ_DEFAULT_WORKSPACE, .principal = "", .request_id = "t",
                           .deadline_ms = -1};
static const az_ctx ctx_b = {.workspace_id = WS_B, .principal = "", .request_id = "t",
                             .deadline_ms = -1};
static int64_t base_us; /* the window is [base, base + 1 h) */

#define H 3600000000LL

/* A task of agent in ws: status, started at start_s and ended at end_s seconds after base (NULL
 * = not set), with one attempt ending with it that used tokens. */
static void task(const char *ws, const char *agent, int status, const char *start_s, const char *end_s,
                 int tokens)
{
    char base[24], st[8], tok[16];
    snprintf(base, sizeof base, "%lld", (long long)base_us);
    snprintf(st, sizeof st, "%d", status);
    snprintf(tok, sizeof tok, "%d", tokens);
    const char *p[7] = {ws, agent, st, base, start_s, end_s, tok};
    az_pgconn *c;
    CU_ASSERT_EQUAL_FATAL(az_pg_acquire(pg, NULL, &c, msg), AZ_OK);
    az_err e = az_pg_exec(
        c, NULL,
        "WITH b AS (SELECT timestamptz 'epoch' + $4::bigint * interval '1 microsecond' AS t),"
        " n AS (INSERT INTO tasks (workspace_id, id, description, agent_id, status, attempt, start_time,"
        "  end_time, prompt_tokens, total_tokens, cost_usd)"
        "  SELECT $1, gen_random_uuid(), 'd', $2, $3::smallint, CASE WHEN $5::float8 IS NULL THEN 0 ELSE 1 END,"
        "  b.t + $5::float8 * interval '1 second', b.t + $6::float8 * interval '1 second',"
        "  $7::bigint, $7::bigint, $7::bigint / 1000.0 FROM b RETURNING *)"
        " INSERT INTO task_attempts (workspace_id, task_id, attempt, status, start_time, end_time,"
        "  prompt_tokens, total_tokens, cost_usd)"
        " SELECT workspace_id, id, 1, status, start_time, end_time, prompt_tokens, total_tokens, cost_usd"
        " FROM n WHERE start_time IS NOT NULL",
        7, p, NULL, msg);
    if (e != AZ_OK) fprintf(stderr, "insert task: %s\n", msg);
    CU_ASSERT_EQUAL(e, AZ_OK);
    az_pg_release(c);
}

static Agentz__V1__AgentMetrics *metrics(const az_ctx *c, const char *agent, int64_t s, int64_t e)
{
    Agentz__V1__AgentMetrics *m = NULL;
    az_err err = az_task_agent_metrics(pg, c, agent, s, e, arena, &m, msg);
    CU_ASSERT_EQUAL(err, AZ_OK);
    if (err != AZ_OK) fprintf(stderr, "metrics: %s\n", msg);
    return m;
}

static void test_empty(void)
{
    Agentz__V1__AgentMetrics *m = metrics(&ctx, AGENT, base_us, base_us + H);
    CU_ASSERT_PTR_NOT_NULL_FATAL(m);
    CU_ASSERT_STRING_EQUAL(m->agent_id, AGENT);
    CU_ASSERT_EQUAL(m->tasks_total, 0);
    CU_ASSERT_EQUAL(m->tasks_running, 0);
    CU_ASSERT_PTR_NULL(m->p50_duration);
    CU_ASSERT_PTR_NOT_NULL_FATAL(m->usage);
    CU_ASSERT_EQUAL(m->usage->total_tokens, 0);
    CU_ASSERT_PTR_NOT_NULL_FATAL(m->start_time);
    CU_ASSERT_EQUAL(m->start_time->seconds, base_us / 1000000);
    CU_ASSERT_EQUAL(m->end_time->seconds, (base_us + H) / 1000000);
}

static void test_window(void)
{
    /* In the window: 3 succeeded (10 s, 20 s, 30 s), 1 failed (100 s), 1 running. */
    task(AZ_DEFAULT_WORKSPACE, AGENT, 5, "0", "10", 100);
    task(AZ_DEFAULT_WORKSPACE, AGENT, 5, "100", "120", 200);
    task(AZ_DEFAULT_WORKSPACE, AGENT, 5, "200", "230", 300);
    task(AZ_DEFAULT_WORKSPACE, AGENT, 6, "300", "400", 400);
    task(AZ_DEFAULT_WORKSPACE, AGENT, 3, "500", NULL, 0);
    /* Queued (never started): counts nowhere. */
    task(AZ_DEFAULT_WORKSPACE, AGENT, 2, NULL, NULL, 0);
    /* Started before the window, ended inside: not in total, but in succeeded and usage. */
    task(AZ_DEFAULT_WORKSPACE, AGENT, 5, "-60", "40", 1000);
    /* Ended exactly at the window's end (exclusive) and started after it: outside. */
    task(AZ_DEFAULT_WORKSPACE, AGENT, 5, "3500", "3600", 5000);
    task(AZ_DEFAULT_WORKSPACE, AGENT, 5, "3600", "3700", 7000);
    /* Another agent, another workspace's agent with the same id. */
    task(AZ_DEFAULT_WORKSPACE, OTHER, 5, "0", "10", 9000);
    task(WS_B, AGENT, 6, "0", "10", 9000);

    Agentz__V1__AgentMetrics *m = metrics(&ctx, AGENT, base_us, base_us + H);
    CU_ASSERT_PTR_NOT_NULL_FATAL(m);
    CU_ASSERT_EQUAL(m->tasks_total, 6);     /* starts at 0,100,200,300,500,3500 */
    CU_ASSERT_EQUAL(m->tasks_running, 1);
    CU_ASSERT_EQUAL(m->tasks_succeeded, 4); /* ends at 10,120,230,40 */
    CU_ASSERT_EQUAL(m->tasks_failed, 1);
    CU_ASSERT_EQUAL(m->usage->prompt_tokens, 100 + 200 + 300 + 400 + 1000);
    CU_ASSERT_EQUAL(m->usage->total_tokens, 2000);
    CU_ASSERT_DOUBLE_EQUAL(m->usage->cost_usd, 2.0, 1e-9);
    /* Durations 10, 20, 30, 100, 100 s: median 30 s; p95 interpolates to 100 s. */
    CU_ASSERT_PTR_NOT_NULL_FATAL(m->p50_duration);
    CU_ASSERT_EQUAL(m->p50_duration->seconds, 30);
    CU_ASSERT_PTR_NOT_NULL_FATAL(m->p95_duration);
    CU_ASSERT_EQUAL(m->p95_duration->seconds, 100);

    /* A narrower window: [0 s, 15 s) holds one start (0) and two ends (10, and OTHER's). */
    m = metrics(&ctx, AGENT, base_us, base_us + 15000000);
    CU_ASSERT_EQUAL(m->tasks_total, 1);
    CU_ASSERT_EQUAL(m->tasks_succeeded, 1);
    CU_ASSERT_EQUAL(m->tasks_running, 1); /* now, whatever the window */
    CU_ASSERT_EQUAL(m->usage->total_tokens, 100);
    CU_ASSERT_EQUAL(m->p50_duration ? m->p50_duration->seconds : -1, 10);

    /* Workspace B sees only its own task of that agent id. */
    m = metrics(&ctx_b, AGENT, base_us, base_us + H);
    CU_ASSERT_EQUAL(m->tasks_total, 1);
    CU_ASSERT_EQUAL(m->tasks_failed, 1);
    CU_ASSERT_EQUAL(m->tasks_succeeded, 0);
    CU_ASSERT_EQUAL(m->usage->total_tokens, 9000);
}

static void test_bad_input(void)
{
    Agentz__V1__AgentMetrics *m = NULL;
    CU_ASSERT_EQUAL(az_task_agent_metrics(pg, &ctx, "x", 0, 1, arena, &m, msg), AZ_ERR_INVALID);
    CU_ASSERT_PTR_NOT_NULL(strstr(msg, "agent_id"));
    CU_ASSERT_EQUAL(az_task_agent_metrics(pg, &ctx, AGENT, 5, 5, arena, &m, msg), AZ_ERR_INVALID);
    CU_ASSERT_PTR_NOT_NULL(strstr(msg, "start_time"));
    CU_ASSERT_PTR_NULL(m);
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
    snprintf(dir, sizeof dir, "/tmp/aztest-metrics-XXXXXX");
    if (!mkdtemp(dir) || chmod(dir, 0755) != 0) return -1;
    if (az_embed_start(dir, &embed, msg) != AZ_OK) {
        fprintf(stderr, "cannot start embedded postgresql: %s\n", msg);
        return -1;
    }
    if (az_pg_new(az_embed_database_url(embed), 4, 30000, &pg, msg) != AZ_OK ||
        az_migrate(pg, az_migrations, az_migrations_count, NULL, msg) != AZ_OK) {
        fprintf(stderr, "cannot prepare the database: %s\n", msg);
        return -1;
    }
    az_pgconn *c;
    if (az_pg_acquire(pg, NULL, &c, msg) != AZ_OK ||
        az_pg_exec(c, NULL, "INSERT INTO workspaces (id, name) VALUES ('" WS_B "', 'b')", 0, NULL, NULL,
                   msg) != AZ_OK) {
        fprintf(stderr, "cannot create workspace b: %s\n", msg);
        return -1;
    }
    az_pg_release(c);
    if (az_pg_set_role(pg, "agentz_app", msg) != AZ_OK) return -1;
    /* A whole second a day ago, so that every row sits at an exact offset. */
    base_us = ((int64_t)time(NULL) - 86400) * 1000000;
    arena = az_arena_new(0);
    return arena ? 0 : -1;
}

static int suite_clean(void)
{
    az_arena_free(arena);
    az_pg_free(pg);
    az_embed_stop(embed);
    nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    return 0;
}

int main(void)
{
    if (CU_initialize_registry() != CUE_SUCCESS) return 1;
    CU_pSuite s = CU_add_suite("agent metrics", suite_init, suite_clean);
    CU_add_test(s, "no tasks", test_empty);
    CU_add_test(s, "window edges, states, usage, percentiles", test_window);
    CU_add_test(s, "bad input", test_bad_input);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    unsigned failed = CU_get_number_of_failures() + CU_get_number_of_tests_failed();
    if (CU_get_number_of_suites_failed()) failed++;
    CU_cleanup_registry();
    return failed ? 1 : 0;
}
