/* CUnit suite for server/audit/audit.c against a throwaway embedded PostgreSQL: the hash chain,
 * verification, tamper detection (edits and deletions behind a disabled trigger), the append-only
 * trigger, concurrent appends keeping one linear chain, input cleaning and ListAuditLog's query. */
#include <CUnit/Basic.h>
#include <ftw.h>
#include <libpq-fe.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#include "audit/audit.h"
#include "auth/workspace.h"
#include "core/log.h"
#include "core/text.h"
#include "embed/embedded.h"
#include "store/migrate.h"

#define THREADS 8
#define PER_THREAD 25

static char tmpdir[64];
static az_embed *embed;
static az_pg *pg;
static az_arena *arena;
static char msg[AZ_MSG_MAX];

/* ---------------------------------------------------------------- helpers */

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    remove(path);
    return 0;
}

/* Runs sql (several statements allowed, no parameters) on a raw connection; 0 when it succeeded. */
static int run_sql(const char *sql)
{
    az_ctx ctx = {.deadline_ms = -1};
    az_pgconn *c;
    char m[AZ_MSG_MAX];
    if (az_pg_acquire(pg, &ctx, &c, m) != AZ_OK) return -1;
    PGresult *r = PQexec(az_pg_raw(c), sql);
    int ok = PQresultStatus(r) == PGRES_COMMAND_OK || PQresultStatus(r) == PGRES_TUPLES_OK;
    PQclear(r);
    az_pg_release(c);
    return ok ? 0 : -1;
}

static long query_long(const char *sql, const char *p1)
{
    az_ctx ctx = {.deadline_ms = -1};
    az_pgconn *c;
    char m[AZ_MSG_MAX];
    if (az_pg_acquire(pg, &ctx, &c, m) != AZ_OK) return -1;
    const char *p[1] = {p1};
    PGresult *r = NULL;
    long v = -1;
    if (az_pg_exec(c, &ctx, sql, p1 ? 1 : 0, p, &r, m) == AZ_OK && PQntuples(r) == 1) v = atol(PQgetvalue(r, 0, 0));
    else fprintf(stderr, "\n  %s: %s\n", sql, m);
    PQclear(r);
    az_pg_release(c);
    return v;
}

/* Empties the log (the triggers forbid it, so they are switched off for the moment). */
static void reset_log(void)
{
    CU_ASSERT_EQUAL(run_sql("ALTER TABLE audit_log DISABLE TRIGGER USER; TRUNCATE audit_log;"
                            " ALTER TABLE audit_log ENABLE TRIGGER USER"), 0);
}

static az_audit_entry entry(const char *ws, const char *principal, const char *method, const char *outcome)
{
    return (az_audit_entry){.principal = principal, .workspace_id = ws, .method = method, .target_id = "t-1",
                            .outcome = outcome, .peer = "ipv4:127.0.0.1:5000", .request_id = "req"};
}

static int64_t append(const az_audit_entry *e)
{
    int64_t id = 0;
    az_err err = az_audit_append(pg, e, &id, msg);
    if (err != AZ_OK) fprintf(stderr, "\n  append: %s\n", msg);
    CU_ASSERT_EQUAL(err, AZ_OK);
    return id;
}

static void verify(int64_t *rows, int64_t *bad)
{
    CU_ASSERT_EQUAL(az_audit_verify(pg, rows, bad, msg), AZ_OK);
}

/* ---------------------------------------------------------------- suite setup */

static int suite_init(void)
{
    az_log_set_level(AZ_LOG_ERROR);
    snprintf(tmpdir, sizeof tmpdir, "/tmp/aztest-audit-XXXXXX");
    if (!mkdtemp(tmpdir) || chmod(tmpdir, 0755) != 0) return 1;
    char data[128];
    snprintf(data, sizeof data, "%s/data", tmpdir);
    if (az_embed_start(data, &embed, msg) != AZ_OK) {
        fprintf(stderr, "cannot start embedded servers: %s\n", msg);
        return 1;
    }
    if (az_pg_new(az_embed_database_url(embed), THREADS + 2, 10000, &pg, msg) != AZ_OK ||
        az_migrate(pg, az_migrations, az_migrations_count, NULL, msg) != AZ_OK) {
        fprintf(stderr, "cannot prepare database: %s\n", msg);
        return 1;
    }
    arena = az_arena_new(0);
    return arena ? 0 : 1;
}

static void suite_clean(void)
{
    az_arena_free(arena);
    az_pg_free(pg);
    az_embed_stop(embed);
    if (tmpdir[0]) nftw(tmpdir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* ---------------------------------------------------------------- tests */

static void test_chain_and_verify(void)
{
    reset_log();
    int64_t rows = -1, bad = -1;
    verify(&rows, &bad);
    CU_ASSERT_EQUAL(rows, 0); /* an empty log is intact */
    CU_ASSERT_EQUAL(bad, 0);
    az_audit_entry e = entry(AZ_DEFAULT_WORKSPACE, "key:1", "/agentz.v1.AgentService/CreateAgent", "OK");
    int64_t a = append(&e);
    e.workspace_id = NULL; /* an unauthenticated call has no workspace */
    e.outcome = "UNAUTHENTICATED";
    int64_t b = append(&e);
    e.workspace_id = "00000000-0000-0000-0000-0000000000AB"; /* uppercase is normalized */
    int64_t c = append(&e);
    CU_ASSERT(a < b && b < c);
    verify(&rows, &bad);
    CU_ASSERT_EQUAL(rows, 3);
    CU_ASSERT_EQUAL(bad, 0);
    /* Linked: each row's prev_hash is the hash before it; the first links to zeros. */
    CU_ASSERT_EQUAL(query_long("SELECT count(*) FROM audit_log l JOIN audit_log p ON p.id = (SELECT max(id) FROM audit_log"
                               " WHERE id < l.id) WHERE l.prev_hash = p.hash", NULL), 2);
    CU_ASSERT_EQUAL(query_long("SELECT count(*) FROM audit_log WHERE prev_hash = repeat('0', 64)", NULL), 1);
    CU_ASSERT_EQUAL(query_long("SELECT count(*) FROM audit_log WHERE workspace_id IS NULL", NULL), 1);
}

/* The hash is documented (docs/security.md) so others can check the chain: recompute row 1 here. */
static void test_hash_is_documented_encoding(void)
{
    reset_log();
    az_audit_entry e = entry(AZ_DEFAULT_WORKSPACE, "key:1", "/m", "OK");
    e.time_us = 1700000000123456LL;
    int64_t id = append(&e);
    char enc[1024];
    char idtxt[24];
    snprintf(idtxt, sizeof idtxt, "%lld", (long long)id);
    int n = snprintf(enc, sizeof enc, "%s%zu:%s,16:1700000000123456,5:key:1,36:%s,2:/m,3:t-1,2:OK,19:ipv4:127.0.0.1:5000,3:req,",
                     "0000000000000000000000000000000000000000000000000000000000000000", strlen(idtxt), idtxt,
                     AZ_DEFAULT_WORKSPACE);
    unsigned char md[32];
    unsigned int len;
    EVP_Digest(enc, (size_t)n, md, &len, EVP_sha256(), NULL);
    char hex[65];
    for (int i = 0; i < 32; i++) snprintf(hex + 2 * i, 3, "%02x", md[i]);
    CU_ASSERT_EQUAL(query_long("SELECT count(*) FROM audit_log WHERE hash = $1", hex), 1);
}

static void test_tamper_edit_detected(void)
{
    reset_log();
    int64_t ids[6];
    for (int i = 0; i < 6; i++) {
        az_audit_entry e = entry(AZ_DEFAULT_WORKSPACE, "key:tamper", "/agentz.v1.AgentService/DeleteAgent", "OK");
        ids[i] = append(&e);
    }
    /* Someone with ALTER TABLE rights hides what they did: row 4's principal. */
    char sql[300];
    snprintf(sql, sizeof sql,
             "ALTER TABLE audit_log DISABLE TRIGGER audit_log_no_change;"
             " UPDATE audit_log SET principal = 'key:innocent' WHERE id = %lld;"
             " ALTER TABLE audit_log ENABLE TRIGGER audit_log_no_change",
             (long long)ids[3]);
    CU_ASSERT_EQUAL_FATAL(run_sql(sql), 0);
    int64_t rows = -1, bad = -1;
    verify(&rows, &bad);
    CU_ASSERT_EQUAL(bad, ids[3]);
    CU_ASSERT_EQUAL(rows, 3); /* the rows before it check out */
    CU_ASSERT_PTR_NOT_NULL(strstr(msg, "hash"));
    /* Recomputing that row's hash too only moves the break to the next row's link. */
    snprintf(sql, sizeof sql,
             "ALTER TABLE audit_log DISABLE TRIGGER audit_log_no_change;"
             " UPDATE audit_log SET hash = repeat('a', 64) WHERE id = %lld;"
             " ALTER TABLE audit_log ENABLE TRIGGER audit_log_no_change",
             (long long)ids[3]);
    CU_ASSERT_EQUAL_FATAL(run_sql(sql), 0);
    verify(&rows, &bad);
    CU_ASSERT_EQUAL(bad, ids[3]);
}

static void test_tamper_delete_detected(void)
{
    reset_log();
    int64_t ids[5];
    for (int i = 0; i < 5; i++) {
        az_audit_entry e = entry(AZ_DEFAULT_WORKSPACE, "key:del", "/agentz.v1.AgentService/DeleteAgent", "OK");
        ids[i] = append(&e);
    }
    char sql[300];
    snprintf(sql, sizeof sql,
             "ALTER TABLE audit_log DISABLE TRIGGER audit_log_no_change;"
             " DELETE FROM audit_log WHERE id = %lld;"
             " ALTER TABLE audit_log ENABLE TRIGGER audit_log_no_change",
             (long long)ids[1]);
    CU_ASSERT_EQUAL_FATAL(run_sql(sql), 0);
    int64_t rows = -1, bad = -1;
    verify(&rows, &bad);
    CU_ASSERT_EQUAL(bad, ids[2]); /* the row after the gap no longer links */
    CU_ASSERT_PTR_NOT_NULL(strstr(msg, "link"));
}

static void test_append_only_trigger(void)
{
    reset_log();
    az_audit_entry e = entry(AZ_DEFAULT_WORKSPACE, "key:t", "/m", "OK");
    append(&e);
    CU_ASSERT_NOT_EQUAL(run_sql("UPDATE audit_log SET principal = 'x'"), 0);
    CU_ASSERT_NOT_EQUAL(run_sql("DELETE FROM audit_log"), 0);
    CU_ASSERT_NOT_EQUAL(run_sql("TRUNCATE audit_log"), 0);
    CU_ASSERT_EQUAL(query_long("SELECT count(*) FROM audit_log WHERE principal = 'key:t'", NULL), 1);
    int64_t rows, bad;
    verify(&rows, &bad);
    CU_ASSERT_EQUAL(rows, 1);
    CU_ASSERT_EQUAL(bad, 0);
}

static void *appender(void *arg)
{
    long t = (long)arg;
    char principal[32], m[AZ_MSG_MAX];
    snprintf(principal, sizeof principal, "key:thread-%ld", t);
    long failures = 0;
    for (int i = 0; i < PER_THREAD; i++) {
        az_audit_entry e = entry(AZ_DEFAULT_WORKSPACE, principal, "/agentz.v1.TaskService/CreateTask", "OK");
        if (az_audit_append(pg, &e, NULL, m) != AZ_OK) failures++;
    }
    return (void *)failures;
}

static void test_concurrent_appends_stay_linear(void)
{
    reset_log();
    pthread_t th[THREADS];
    for (long i = 0; i < THREADS; i++) pthread_create(&th[i], NULL, appender, (void *)i);
    long failures = 0;
    for (int i = 0; i < THREADS; i++) {
        void *f;
        pthread_join(th[i], &f);
        failures += (long)f;
    }
    CU_ASSERT_EQUAL(failures, 0);
    int64_t rows = -1, bad = -1;
    verify(&rows, &bad);
    CU_ASSERT_EQUAL(rows, THREADS * PER_THREAD);
    CU_ASSERT_EQUAL(bad, 0);
    /* One chain: no two rows claim the same predecessor. */
    CU_ASSERT_EQUAL(query_long("SELECT count(DISTINCT prev_hash) FROM audit_log", NULL), THREADS * PER_THREAD);
}

static void test_cleaning(void)
{
    reset_log();
    char longp[600];
    memset(longp, 'p', sizeof longp - 1);
    longp[sizeof longp - 1] = '\0';
    az_audit_entry e = entry("not-a-uuid", longp, "/weird\n\x01path\xff\xfe", "OK");
    e.request_id = "r\tq";
    append(&e);
    CU_ASSERT_EQUAL(query_long("SELECT count(*) FROM audit_log WHERE workspace_id IS NULL AND length(principal) = 160"
                               " AND method = '/weird?\?path?\?' AND request_id = 'r?q'", NULL), 1);
    int64_t rows, bad;
    verify(&rows, &bad);
    CU_ASSERT_EQUAL(rows, 1);
    CU_ASSERT_EQUAL(bad, 0);
}

/* A batch is one INSERT of array literals: quotes, backslashes, braces, commas and the word
 * NULL must land as given, ids in order, the chain intact. */
static void test_batch(void)
{
    reset_log();
    enum { N = 50 };
    static const char *const nasty[] = {"a\"b", "back\\slash", "{brace}", "x,y", "NULL", "",
                                        "\"\\\"", "caf\xc3\xa9"};
    enum { K = sizeof nasty / sizeof *nasty };
    az_audit_entry e[N];
    for (int i = 0; i < N; i++) {
        e[i] = entry(i % 3 ? AZ_DEFAULT_WORKSPACE : NULL, nasty[i % K], "/agentz.v1.TaskService/CreateTask", "OK");
        e[i].target_id = nasty[(i + 1) % K];
        e[i].request_id = nasty[(i + 2) % K];
        e[i].peer = nasty[(i + 3) % K];
    }
    int64_t last = 0;
    char m[AZ_MSG_MAX];
    CU_ASSERT_EQUAL_FATAL(az_audit_append_many(pg, e, N, &last, m), AZ_OK);
    CU_ASSERT_EQUAL(query_long("SELECT max(id) FROM audit_log", NULL), last);
    CU_ASSERT_EQUAL(query_long("SELECT max(id) - min(id) + 1 FROM audit_log", NULL), N);
    for (int i = 0; i < N; i++) {
        char q[300];
        snprintf(q, sizeof q, "SELECT count(*) FROM audit_log WHERE id = %lld AND principal = $1"
                 " AND (workspace_id IS NULL) = %s", (long long)(last - N + 1 + i), i % 3 ? "false" : "true");
        CU_ASSERT_EQUAL(query_long(q, nasty[i % K]), 1);
        snprintf(q, sizeof q, "SELECT count(*) FROM audit_log WHERE id = %lld AND target_id = $1",
                 (long long)(last - N + 1 + i));
        CU_ASSERT_EQUAL(query_long(q, nasty[(i + 1) % K]), 1);
    }
    int64_t rows = -1, bad = -1;
    verify(&rows, &bad);
    CU_ASSERT_EQUAL(rows, N);
    CU_ASSERT_EQUAL(bad, 0);
    CU_ASSERT_EQUAL(az_audit_append_many(pg, e, 0, NULL, m), AZ_ERR_INVALID);
    CU_ASSERT_EQUAL(az_audit_append_many(pg, e, AZ_AUDIT_BATCH_MAX + 1, NULL, m), AZ_ERR_INVALID);
    CU_ASSERT_EQUAL(query_long("SELECT count(*) FROM audit_log", NULL), N);
}

static void test_list(void)
{
    reset_log();
    char ws[37], other[37];
    az_text_uuid4(ws);
    az_text_uuid4(other);
    struct timeval tv;
    gettimeofday(&tv, NULL);
    int64_t t0 = (int64_t)tv.tv_sec * 1000000;
    for (int i = 0; i < 7; i++) {
        az_audit_entry e = entry(ws, i % 2 ? "key:odd" : "key:even",
                                 i < 5 ? "/agentz.v1.AgentService/CreateAgent" : "/agentz.v1.SystemService/CreateSecret", "OK");
        e.time_us = t0 + i * 1000000LL;
        append(&e);
    }
    az_audit_entry e = entry(other, "key:odd", "/agentz.v1.AgentService/CreateAgent", "OK");
    append(&e);
    az_ctx ctx = {.workspace_id = ws, .deadline_ms = -1};
    az_audit_query q = {.page_size = 3};
    /* Newest first, three pages, only this workspace. */
    int seen = 0;
    long last = 1L << 62;
    for (int page = 0; page < 5; page++) {
        Agentz__V1__ListAuditLogResponse *r;
        CU_ASSERT_EQUAL_FATAL(az_audit_list(pg, &ctx, &q, arena, &r, msg), AZ_OK);
        for (size_t i = 0; i < r->n_entries; i++, seen++) {
            CU_ASSERT(atol(r->entries[i]->id) < last);
            last = atol(r->entries[i]->id);
            CU_ASSERT_STRING_EQUAL(r->entries[i]->workspace_id, ws);
            CU_ASSERT_EQUAL(strlen(r->entries[i]->hash), 64);
            CU_ASSERT_STRING_EQUAL(r->entries[i]->outcome, "OK");
        }
        if (!*r->next_page_token) break;
        q.page_token = r->next_page_token;
    }
    CU_ASSERT_EQUAL(seen, 7);
    /* Filters; a token from other filters is refused. */
    Agentz__V1__ListAuditLogResponse *r;
    const char *token = q.page_token;
    q = (az_audit_query){.principal = "key:odd", .page_size = 50};
    CU_ASSERT_EQUAL(az_audit_list(pg, &ctx, &q, arena, &r, msg), AZ_OK);
    CU_ASSERT_EQUAL(r->n_entries, 3);
    q = (az_audit_query){.method = "/agentz.v1.SystemService/CreateSecret", .page_size = 50};
    CU_ASSERT_EQUAL(az_audit_list(pg, &ctx, &q, arena, &r, msg), AZ_OK);
    CU_ASSERT_EQUAL(r->n_entries, 2);
    q = (az_audit_query){.start_us = t0 + 2000000, .end_us = t0 + 4000000, .page_size = 50};
    CU_ASSERT_EQUAL(az_audit_list(pg, &ctx, &q, arena, &r, msg), AZ_OK);
    CU_ASSERT_EQUAL(r->n_entries, 2); /* t0+2s and t0+3s: start inclusive, end exclusive */
    q.page_token = token;
    CU_ASSERT_EQUAL(az_audit_list(pg, &ctx, &q, arena, &r, msg), AZ_ERR_INVALID);
    q.page_token = "####";
    CU_ASSERT_EQUAL(az_audit_list(pg, &ctx, &q, arena, &r, msg), AZ_ERR_INVALID);
}

int main(void)
{
    if (CU_initialize_registry() != CUE_SUCCESS) return 1;
    CU_pSuite s = CU_add_suite("audit", NULL, NULL);
    if (!s) return 1;
    CU_add_test(s, "chain and verify", test_chain_and_verify);
    CU_add_test(s, "hash is the documented encoding", test_hash_is_documented_encoding);
    CU_add_test(s, "an edited row is detected", test_tamper_edit_detected);
    CU_add_test(s, "a deleted row is detected", test_tamper_delete_detected);
    CU_add_test(s, "append-only trigger", test_append_only_trigger);
    CU_add_test(s, "8 threads keep one linear chain", test_concurrent_appends_stay_linear);
    CU_add_test(s, "fields are cleaned", test_cleaning);
    CU_add_test(s, "a batch of 50 with quotes and backslashes", test_batch);
    CU_add_test(s, "list", test_list);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    if (suite_init() != 0) {
        fprintf(stderr, "cannot start the embedded PostgreSQL; failing\n");
        CU_cleanup_registry();
        suite_clean();
        return 1;
    }
    CU_basic_run_tests();
    unsigned failures = CU_get_number_of_failures() + CU_get_number_of_tests_failed() +
                        CU_get_number_of_suites_failed();
    CU_cleanup_registry();
    suite_clean();
    return failures ? 1 : 0;
}
