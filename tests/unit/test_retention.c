/* CUnit suite for server/retention against a throwaway embedded PostgreSQL, with the pool working
 * as agentz_app like agentzd's: old rows (backdated through the owner's connection) are deleted,
 * young ones, running attempts and events not yet relayed are kept, large backlogs go in bounded
 * batches, the audit chain still verifies after pruning (from its anchor) and tampering with the
 * kept rows or the anchor still shows, and the reconciler's thread runs the hook on its own. */
#include <CUnit/Basic.h>
#include <ftw.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "audit/audit.h"
#include "auth/workspace.h"
#include "core/log.h"
#include "embed/embedded.h"
#include "queue/reconciler.h"
#include "retention/retention.h"
#include "store/migrate.h"
#include "store/redis.h"

#define DAY_MS (86400LL * 1000)

static char tmpdir[64];
static az_embed *embed;
static az_pg *owner; /* the migration owner: backdates rows, reads what is left */
static az_pg *app;   /* agentz_app, as the server's pool */
static char msg[AZ_MSG_MAX];

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    remove(path);
    return 0;
}

/* Runs sql (several statements allowed) as the owner; 0 when it succeeded. */
static int run_sql(const char *sql)
{
    az_ctx ctx = {.deadline_ms = -1};
    az_pgconn *c;
    char m[AZ_MSG_MAX];
    if (az_pg_acquire(owner, &ctx, &c, m) != AZ_OK) return -1;
    PGresult *r = PQexec(az_pg_raw(c), sql);
    int ok = PQresultStatus(r) == PGRES_COMMAND_OK || PQresultStatus(r) == PGRES_TUPLES_OK;
    if (!ok) fprintf(stderr, "\n  %s: %s\n", sql, PQerrorMessage(az_pg_raw(c)));
    PQclear(r);
    az_pg_release(c);
    return ok ? 0 : -1;
}

static long long query_ll(const char *sql)
{
    az_ctx ctx = {.deadline_ms = -1};
    az_pgconn *c;
    char m[AZ_MSG_MAX];
    if (az_pg_acquire(owner, &ctx, &c, m) != AZ_OK) return -1;
    PGresult *r = PQexec(az_pg_raw(c), sql);
    long long v = PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1 ? atoll(PQgetvalue(r, 0, 0)) : -1;
    if (v < 0) fprintf(stderr, "\n  %s: %s\n", sql, PQerrorMessage(az_pg_raw(c)));
    PQclear(r);
    az_pg_release(c);
    return v;
}

static int64_t append_audit(const char *method)
{
    az_audit_entry e = {.principal = "key:1", .workspace_id = AZ_DEFAULT_WORKSPACE, .method = method,
                        .target_id = "t", .outcome = "OK", .peer = "p", .request_id = "r"};
    int64_t id = 0;
    CU_ASSERT_EQUAL(az_audit_append(app, &e, &id, msg), AZ_OK);
    return id;
}

static void verify_intact(int64_t want_rows)
{
    int64_t rows = -1, bad = -1;
    CU_ASSERT_EQUAL_FATAL(az_audit_verify(app, &rows, &bad, msg), AZ_OK);
    CU_ASSERT_EQUAL(bad, 0);
    CU_ASSERT_EQUAL(rows, want_rows);
    if (bad || rows != want_rows)
        fprintf(stderr, "\n  verify: rows %lld (want %lld), bad %lld: %s\n", (long long)rows,
                (long long)want_rows, (long long)bad, msg);
}

static int suite_init(void)
{
    az_log_set_level(AZ_LOG_ERROR);
    snprintf(tmpdir, sizeof tmpdir, "/tmp/aztest-retention-XXXXXX");
    if (!mkdtemp(tmpdir) || chmod(tmpdir, 0755) != 0) return 1;
    char data[128];
    snprintf(data, sizeof data, "%s/data", tmpdir);
    if (az_embed_start(data, &embed, msg) != AZ_OK) {
        fprintf(stderr, "cannot start embedded servers: %s\n", msg);
        return 1;
    }
    if (az_pg_new(az_embed_database_url(embed), 2, 10000, &owner, msg) != AZ_OK ||
        az_migrate(owner, az_migrations, az_migrations_count, NULL, msg) != AZ_OK ||
        az_pg_new(az_embed_database_url(embed), 2, 10000, &app, msg) != AZ_OK ||
        az_pg_set_role(app, "agentz_app", msg) != AZ_OK) {
        fprintf(stderr, "cannot prepare database: %s\n", msg);
        return 1;
    }
    return 0;
}

static int suite_clean(void)
{
    az_pg_free(app);
    az_pg_free(owner);
    az_embed_stop(embed);
    if (tmpdir[0]) nftw(tmpdir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    return 0;
}

/* One task with attempts 1..n; attempt k ended `ages[k-1]` days ago (-1 = still running). */
static void task_with_attempts(const char *id, const int *ages, int n)
{
    char sql[2048];
    snprintf(sql, sizeof sql,
             "INSERT INTO tasks (workspace_id, id, description, status, attempt) VALUES ('%s', '%s',"
             " 'retention', 5, %d)",
             AZ_DEFAULT_WORKSPACE, id, n);
    CU_ASSERT_EQUAL_FATAL(run_sql(sql), 0);
    for (int k = 1; k <= n; k++) {
        if (ages[k - 1] < 0)
            snprintf(sql, sizeof sql,
                     "INSERT INTO task_attempts (workspace_id, task_id, attempt, status) VALUES"
                     " ('%s', '%s', %d, 3)",
                     AZ_DEFAULT_WORKSPACE, id, k);
        else
            snprintf(sql, sizeof sql,
                     "INSERT INTO task_attempts (workspace_id, task_id, attempt, status, start_time,"
                     " end_time) VALUES ('%s', '%s', %d, 6, now() - interval '%d days 1 minute',"
                     " now() - interval '%d days')",
                     AZ_DEFAULT_WORKSPACE, id, k, ages[k - 1], ages[k - 1]);
        CU_ASSERT_EQUAL_FATAL(run_sql(sql), 0);
    }
}

static void test_attempts(void)
{
    /* Retention 30 days: the 40- and 31-day-old attempts go, the 29-day-old and running stay. */
    task_with_attempts("1e1e0000-0000-4000-8000-000000000001", (const int[]){40, 31, 29}, 3);
    task_with_attempts("1e1e0000-0000-4000-8000-000000000002", (const int[]){45, -1}, 2);
    az_retention_policy p = {.attempts_ms = 30 * DAY_MS};
    az_retention_counts n = {-1, -1, -1};
    CU_ASSERT_EQUAL_FATAL(az_retention_run(app, &p, &n, msg), AZ_OK);
    CU_ASSERT_EQUAL(n.attempts, 3);
    CU_ASSERT_EQUAL(n.events, 0);
    CU_ASSERT_EQUAL(n.audit, 0);
    CU_ASSERT_EQUAL(query_ll("SELECT count(*) FROM task_attempts WHERE task_id ="
                             " '1e1e0000-0000-4000-8000-000000000001' AND attempt = 3"), 1);
    CU_ASSERT_EQUAL(query_ll("SELECT count(*) FROM task_attempts WHERE task_id ="
                             " '1e1e0000-0000-4000-8000-000000000002' AND attempt = 2 AND end_time IS NULL"), 1);
    CU_ASSERT_EQUAL(query_ll("SELECT count(*) FROM task_attempts"), 2);
    /* The tasks themselves stay. */
    CU_ASSERT_EQUAL(query_ll("SELECT count(*) FROM tasks WHERE description = 'retention'"), 2);
    /* A second pass finds nothing; 0 = keep forever deletes nothing. */
    CU_ASSERT_EQUAL(az_retention_run(app, &p, &n, msg), AZ_OK);
    CU_ASSERT_EQUAL(n.attempts, 0);
    p.attempts_ms = 0;
    CU_ASSERT_EQUAL(run_sql("UPDATE task_attempts SET end_time = now() - interval '1000 days',"
                            " start_time = now() - interval '1001 days' WHERE attempt = 3"), 0);
    CU_ASSERT_EQUAL(az_retention_run(app, &p, &n, msg), AZ_OK);
    CU_ASSERT_EQUAL(n.attempts, 0);
    CU_ASSERT_EQUAL(query_ll("SELECT count(*) FROM task_attempts"), 2);
    CU_ASSERT_EQUAL(run_sql("DELETE FROM task_attempts"), 0); /* the next tests count from zero */
}

/* A backlog larger than one batch goes in several transactions and every old row goes. */
static void test_attempts_backlog(void)
{
    CU_ASSERT_EQUAL_FATAL(run_sql("INSERT INTO tasks (workspace_id, id, description, status, attempt)"
                                  " VALUES ('" AZ_DEFAULT_WORKSPACE "', '1e1e0000-0000-4000-8000-0000000000b1',"
                                  " 'backlog', 5, 2500)"),
                          0);
    CU_ASSERT_EQUAL_FATAL(run_sql("INSERT INTO task_attempts (workspace_id, task_id, attempt, status,"
                                  " start_time, end_time) SELECT '" AZ_DEFAULT_WORKSPACE "',"
                                  " '1e1e0000-0000-4000-8000-0000000000b1', g, 6, now() - interval '200 days',"
                                  " now() - interval '199 days' + g * interval '1 second'"
                                  " FROM generate_series(1, 2500) g"),
                          0);
    long long xid_before = query_ll("SELECT pg_current_xact_id()::text::bigint");
    az_retention_policy p = {.attempts_ms = 100 * DAY_MS};
    az_retention_counts n;
    CU_ASSERT_EQUAL_FATAL(az_retention_run(app, &p, &n, msg), AZ_OK);
    CU_ASSERT_EQUAL(n.attempts, 2500);
    CU_ASSERT_EQUAL(query_ll("SELECT count(*) FROM task_attempts WHERE task_id = '1e1e0000-0000-4000-8000-0000000000b1'"), 0);
    /* 2500 rows in batches of 1000: at least three write transactions (plus this query's). */
    CU_ASSERT(query_ll("SELECT pg_current_xact_id()::text::bigint") - xid_before >= 4);
    /* The batch is found through the partial end_time index (seqscan off: the table is tiny). */
    az_ctx ctx = {.deadline_ms = -1};
    az_pgconn *c;
    CU_ASSERT_EQUAL_FATAL(az_pg_acquire(owner, &ctx, &c, msg), AZ_OK);
    PGresult *r = PQexec(az_pg_raw(c), "SET enable_seqscan = off; EXPLAIN SELECT workspace_id, task_id,"
                                       " attempt FROM task_attempts WHERE end_time IS NOT NULL AND end_time"
                                       " < clock_timestamp() - interval '1 day' ORDER BY end_time LIMIT 1000");
    int uses_index = 0;
    for (int i = 0; PQresultStatus(r) == PGRES_TUPLES_OK && i < PQntuples(r); i++)
        uses_index |= strstr(PQgetvalue(r, i, 0), "task_attempts_end") != NULL;
    CU_ASSERT(uses_index);
    PQclear(r);
    r = PQexec(az_pg_raw(c), "RESET enable_seqscan");
    PQclear(r);
    az_pg_release(c);
}

/* Events go through az_outbox_prune: an old finished task's events are deleted except one still
 * waiting for the relay; a running task's events stay whatever their age. */
static void test_events(void)
{
    const char *ins =
        "INSERT INTO events (id, workspace_id, task_id, task_seq, terminal, payload, create_time)"
        " VALUES (900001, '" AZ_DEFAULT_WORKSPACE "', '1e1e0000-0000-4000-8000-0000000000e1', 1, false, '\\x00', now() - interval '30 days'),"
        " (900002, '" AZ_DEFAULT_WORKSPACE "', '1e1e0000-0000-4000-8000-0000000000e1', 2, true, '\\x00', now() - interval '30 days'),"
        " (900003, '" AZ_DEFAULT_WORKSPACE "', '1e1e0000-0000-4000-8000-0000000000e2', 1, false, '\\x00', now() - interval '30 days'),"
        " (900004, '" AZ_DEFAULT_WORKSPACE "', '1e1e0000-0000-4000-8000-0000000000e3', 1, false, '\\x00', now() - interval '30 days'),"
        " (900005, '" AZ_DEFAULT_WORKSPACE "', '1e1e0000-0000-4000-8000-0000000000e3', 2, true, '\\x00', now() - interval '30 days');"
        " INSERT INTO event_queue (id) VALUES (900005)";
    CU_ASSERT_EQUAL_FATAL(run_sql(ins), 0);
    az_retention_policy p = {.events_ms = 7 * DAY_MS};
    az_retention_counts n;
    CU_ASSERT_EQUAL_FATAL(az_retention_run(app, &p, &n, msg), AZ_OK);
    /* e1's two and e3's relayed one; e2 has not finished; e3's terminal event is not relayed yet */
    CU_ASSERT_EQUAL(n.events, 3);
    CU_ASSERT_EQUAL(query_ll("SELECT count(*) FROM events WHERE id BETWEEN 900001 AND 900005"), 2);
    CU_ASSERT_EQUAL(query_ll("SELECT count(*) FROM events WHERE id IN (900003, 900005)"), 2);
    CU_ASSERT_EQUAL_FATAL(run_sql("DELETE FROM event_queue WHERE id = 900005"), 0);
    CU_ASSERT_EQUAL_FATAL(az_retention_run(app, &p, &n, msg), AZ_OK);
    CU_ASSERT_EQUAL(n.events, 1);
    CU_ASSERT_EQUAL(query_ll("SELECT count(*) FROM events WHERE id BETWEEN 900001 AND 900005"), 1);
}

static void test_audit(void)
{
    /* The time is part of the hash, so old rows are written old rather than backdated: rows 1..3
     * are 400 days old, 4 is young, 5 is old again (behind a young row: it stays, only a prefix
     * of the chain is pruned), 6 is young. */
    char sql[512];
    int64_t now_us = (int64_t)time(NULL) * 1000000;
    int64_t old_us = now_us - 400LL * 86400 * 1000000;
    const int64_t times[6] = {old_us, old_us + 1, old_us + 2, now_us, old_us + 3, now_us + 1};
    int64_t ids[6];
    for (int i = 0; i < 6; i++) {
        az_audit_entry e = {.time_us = times[i], .principal = "key:1", .workspace_id = AZ_DEFAULT_WORKSPACE,
                            .method = "/agentz.v1.AgentService/UpdateAgent", .outcome = "OK"};
        CU_ASSERT_EQUAL_FATAL(az_audit_append(app, &e, &ids[i], msg), AZ_OK);
    }
    verify_intact(6);

    /* agentz_app may not delete audit rows, even claiming to be the pruner. */
    az_ctx ctx = {.deadline_ms = -1};
    az_pgconn *c;
    CU_ASSERT_EQUAL_FATAL(az_pg_acquire(app, &ctx, &c, msg), AZ_OK);
    PGresult *r = PQexec(az_pg_raw(c), "SELECT set_config('agentz.audit_prune', 'on', false);"
                                       " DELETE FROM audit_log");
    CU_ASSERT_NOT_EQUAL(PQresultStatus(r), PGRES_COMMAND_OK);
    PQclear(r);
    r = PQexec(az_pg_raw(c), "RESET agentz.audit_prune");
    PQclear(r);
    az_pg_release(c);

    az_retention_policy p = {.audit_ms = 365 * DAY_MS};
    az_retention_counts n;
    CU_ASSERT_EQUAL_FATAL(az_retention_run(app, &p, &n, msg), AZ_OK);
    CU_ASSERT_EQUAL(n.audit, 3); /* the old prefix; row 5 sits behind young row 4 */
    CU_ASSERT_EQUAL(query_ll("SELECT min(id) FROM audit_log"), ids[3]);
    CU_ASSERT_EQUAL(query_ll("SELECT last_id FROM audit_anchor"), ids[2]);
    CU_ASSERT_EQUAL(query_ll("SELECT pruned FROM audit_anchor"), 3);
    verify_intact(3);
    /* Outside the prune function not even the owner may move or drop the anchor. */
    CU_ASSERT_NOT_EQUAL(run_sql("UPDATE audit_anchor SET last_id = last_id + 1"), 0);
    CU_ASSERT_NOT_EQUAL(run_sql("DELETE FROM audit_anchor"), 0);
    CU_ASSERT_EQUAL(query_ll("SELECT count(*) FROM audit_log"), 3);

    /* Appends continue the chain; everything old except the newest row can go. */
    append_audit("/agentz.v1.AgentService/DeleteAgent");
    verify_intact(4);
    p.audit_ms = 1; /* everything is older than a millisecond by now */
    usleep(5000);
    CU_ASSERT_EQUAL(az_retention_run(app, &p, &n, msg), AZ_OK);
    CU_ASSERT_EQUAL(n.audit, 3);
    CU_ASSERT_EQUAL(query_ll("SELECT count(*) FROM audit_log"), 1); /* the newest stays */
    CU_ASSERT_EQUAL(query_ll("SELECT pruned FROM audit_anchor"), 6);
    verify_intact(1);
    append_audit("/agentz.v1.AgentService/CreateAgent");
    verify_intact(2);

    /* Tampering still shows: removing the oldest kept row breaks the link to the anchor. */
    long long oldest = query_ll("SELECT min(id) FROM audit_log");
    snprintf(sql, sizeof sql,
             "ALTER TABLE audit_log DISABLE TRIGGER USER; DELETE FROM audit_log WHERE id = %lld;"
             " ALTER TABLE audit_log ENABLE TRIGGER USER",
             oldest);
    CU_ASSERT_EQUAL_FATAL(run_sql(sql), 0);
    int64_t rows = 0, bad = 0;
    CU_ASSERT_EQUAL(az_audit_verify(app, &rows, &bad, msg), AZ_OK);
    CU_ASSERT_EQUAL(bad, oldest + 1);
    CU_ASSERT_PTR_NOT_NULL(strstr(msg, "does not link"));
}

/* The reconciler's thread runs the retention hook on its own every interval. */
static void test_reconciler_runs_it(void)
{
    task_with_attempts("1e1e0000-0000-4000-8000-0000000000c1", (const int[]){50}, 1);
    az_redis *redis = NULL;
    CU_ASSERT_EQUAL_FATAL(az_redis_new(az_embed_redis_url(embed), 5000, &redis, msg), AZ_OK);
    az_reconciler *rec = az_reconciler_new(app, redis, 100, 60000);
    CU_ASSERT_PTR_NOT_NULL_FATAL(rec);
    az_retention_policy p = {.attempts_ms = 10 * DAY_MS};
    az_reconciler_set_retention_hook(rec, az_retention_hook, &p, 200);
    CU_ASSERT_EQUAL_FATAL(az_reconciler_start(rec, msg), AZ_OK);
    long long left = 1;
    for (int i = 0; i < 100 && left != 0; i++) {
        usleep(50000);
        left = query_ll("SELECT count(*) FROM task_attempts WHERE task_id = '1e1e0000-0000-4000-8000-0000000000c1'");
    }
    az_reconciler_free(rec);
    az_redis_free(redis);
    CU_ASSERT_EQUAL(left, 0);
}

int main(void)
{
    if (CU_initialize_registry() != CUE_SUCCESS) return 1;
    CU_pSuite s = CU_add_suite("retention", suite_init, suite_clean);
    CU_add_test(s, "attempts past their retention are deleted, others kept", test_attempts);
    CU_add_test(s, "a backlog goes in bounded batches", test_attempts_backlog);
    CU_add_test(s, "events of finished, relayed tasks are deleted", test_events);
    CU_add_test(s, "audit pruning keeps the chain verifiable", test_audit);
    CU_add_test(s, "the reconciler runs retention", test_reconciler_runs_it);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    unsigned failed = CU_get_number_of_failures() + CU_get_number_of_tests_failed();
    int init_failed = CU_get_number_of_suites_failed();
    CU_cleanup_registry();
    return failed || init_failed ? 1 : 0;
}
