/* CUnit suites for server/store/migrate.c and pgpool.c against a throwaway embedded PostgreSQL
 * (server/embed): migration bookkeeping, failure and concurrency; SQLSTATE mapping, deadlines,
 * cancellation, pool exhaustion, rollback on release and reconnecting after a lost backend. */
#include <CUnit/Basic.h>
#include <errno.h>
#include <ftw.h>
#include <libpq-fe.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/ctx.h"
#include "core/err.h"
#include "core/log.h"
#include "embed/embedded.h"
#include "store/migrate.h"
#include "store/pgpool.h"

static char tmpdir[64];
static az_embed *embed;
static char msg[AZ_MSG_MAX];

/* ---------------------------------------------------------------- helpers */

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    remove(path);
    return 0;
}

/* The embedded URL with another database name: postgresql:///<db>?host=... */
static void db_url(const char *db, char *out, size_t cap)
{
    const char *base = az_embed_database_url(embed);
    const char *q = strchr(base, '?');
    snprintf(out, cap, "postgresql:///%s%s", db, q ? q : "");
}

/* Creates database db (dropping an old one) through a one-connection pool on "agentz". */
static int create_db(const char *db)
{
    az_pg *admin = NULL;
    char m[AZ_MSG_MAX];
    if (az_pg_new(az_embed_database_url(embed), 1, 5000, &admin, m) != AZ_OK) {
        fprintf(stderr, "cannot connect: %s\n", m);
        return -1;
    }
    az_ctx ctx = {.deadline_ms = -1};
    az_pgconn *c;
    int rc = -1;
    if (az_pg_acquire(admin, &ctx, &c, m) == AZ_OK) {
        char sql[160];
        snprintf(sql, sizeof sql, "DROP DATABASE IF EXISTS %s", db);
        PQclear(PQexec(az_pg_raw(c), sql));
        snprintf(sql, sizeof sql, "CREATE DATABASE %s", db);
        PGresult *r = PQexec(az_pg_raw(c), sql);
        rc = PQresultStatus(r) == PGRES_COMMAND_OK ? 0 : -1;
        if (rc) fprintf(stderr, "cannot create database %s: %s\n", db, PQresultErrorMessage(r));
        PQclear(r);
        az_pg_release(c);
    }
    az_pg_free(admin);
    return rc;
}

/* A pool on a fresh database. */
static az_pg *fresh_pool(const char *db, int size)
{
    if (create_db(db) != 0) return NULL;
    char url[512];
    db_url(db, url, sizeof url);
    az_pg *p = NULL;
    if (az_pg_new(url, size, 5000, &p, msg) != AZ_OK) {
        fprintf(stderr, "az_pg_new %s: %s\n", db, msg);
        return NULL;
    }
    return p;
}

/* Runs a query returning one value and gives it as a long (or -1 on error). */
static long query_long(az_pg *p, const char *sql)
{
    az_ctx ctx = {.deadline_ms = -1};
    az_pgconn *c;
    char m[AZ_MSG_MAX];
    if (az_pg_acquire(p, &ctx, &c, m) != AZ_OK) return -1;
    PGresult *r = NULL;
    long v = -1;
    if (az_pg_exec(c, &ctx, sql, 0, NULL, &r, m) == AZ_OK && PQntuples(r) == 1)
        v = atol(PQgetvalue(r, 0, 0));
    else
        fprintf(stderr, "\n  %s: %s\n", sql, m);
    PQclear(r);
    az_pg_release(c);
    return v;
}

static int table_exists(az_pg *p, const char *name)
{
    char sql[200];
    snprintf(sql, sizeof sql, "SELECT count(*) FROM pg_tables WHERE tablename = '%s'", name);
    return query_long(p, sql) == 1;
}

/* ---------------------------------------------------------------- suite setup */

static int pg_init(void)
{
    az_log_set_level(AZ_LOG_ERROR);
    snprintf(tmpdir, sizeof tmpdir, "/tmp/aztest-migrate-XXXXXX");
    if (!mkdtemp(tmpdir) || chmod(tmpdir, 0755) != 0) return 1;
    char data[128];
    snprintf(data, sizeof data, "%s/data", tmpdir);
    char m[AZ_MSG_MAX];
    if (az_embed_start(data, &embed, m) != AZ_OK) {
        fprintf(stderr, "cannot start embedded servers: %s\n", m);
        return 1;
    }
    return 0;
}

static int pg_clean(void)
{
    az_embed_stop(embed);
    embed = NULL;
    nftw(tmpdir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    return 0;
}

/* ================================================================ migrate */

static const az_migration two[] = {
    {1, "0001_alpha", "CREATE TABLE alpha (id int PRIMARY KEY); INSERT INTO alpha VALUES (1), (2);"},
    {2, "0002_beta", "CREATE TABLE beta (id int PRIMARY KEY, a int REFERENCES alpha(id));"},
};

static void test_migrate_apply_then_noop(void)
{
    az_pg *p = fresh_pool("mig_basic", 2);
    CU_ASSERT_PTR_NOT_NULL_FATAL(p);
    int applied = -1;
    CU_ASSERT_EQUAL(az_migrate(p, two, 2, &applied, msg), AZ_OK);
    CU_ASSERT_EQUAL(applied, 2);
    CU_ASSERT_TRUE(table_exists(p, "alpha"));
    CU_ASSERT_TRUE(table_exists(p, "beta"));
    CU_ASSERT_EQUAL(query_long(p, "SELECT count(*) FROM alpha"), 2);
    applied = -1;
    CU_ASSERT_EQUAL(az_migrate(p, two, 2, &applied, msg), AZ_OK);
    CU_ASSERT_EQUAL(applied, 0);
    CU_ASSERT_EQUAL(query_long(p, "SELECT count(*) FROM alpha"), 2); /* not re-run */
    int v = -1;
    CU_ASSERT_EQUAL(az_migrate_version(p, &v, msg), AZ_OK);
    CU_ASSERT_EQUAL(v, 2);
    CU_ASSERT_EQUAL(query_long(p, "SELECT count(*) FROM schema_migrations"), 2);
    /* applied may be NULL. */
    CU_ASSERT_EQUAL(az_migrate(p, two, 2, NULL, msg), AZ_OK);
    /* A longer list later applies only the new one. */
    const az_migration three[] = {two[0], two[1], {3, "0003_gamma", "CREATE TABLE gamma (x text)"}};
    CU_ASSERT_EQUAL(az_migrate(p, three, 3, &applied, msg), AZ_OK);
    CU_ASSERT_EQUAL(applied, 1);
    CU_ASSERT_EQUAL(az_migrate_version(p, &v, msg), AZ_OK);
    CU_ASSERT_EQUAL(v, 3);
    az_pg_free(p);
}

static void test_migrate_version_empty_db(void)
{
    /* migrate.h: "The highest applied version, 0 for an empty database." */
    az_pg *p = fresh_pool("mig_empty", 1);
    CU_ASSERT_PTR_NOT_NULL_FATAL(p);
    int v = -1;
    strcpy(msg, "");
    az_err e = az_migrate_version(p, &v, msg);
    if (e != AZ_OK) fprintf(stderr, "\n  az_migrate_version on an empty database: %s\n", msg);
    CU_ASSERT_EQUAL(e, AZ_OK);
    CU_ASSERT_EQUAL(v, 0);
    /* After migrating an empty list the table exists and the version is still 0. */
    int applied = -1;
    CU_ASSERT_EQUAL(az_migrate(p, two, 0, &applied, msg), AZ_OK);
    CU_ASSERT_EQUAL(applied, 0);
    v = -1;
    CU_ASSERT_EQUAL(az_migrate_version(p, &v, msg), AZ_OK);
    CU_ASSERT_EQUAL(v, 0);
    az_pg_free(p);
}

static void test_migrate_broken(void)
{
    az_pg *p = fresh_pool("mig_broken", 2);
    CU_ASSERT_PTR_NOT_NULL_FATAL(p);
    const az_migration list[] = {
        two[0],
        /* Several statements, the second bad: the first must be rolled back with it. */
        {2, "0002_broken", "CREATE TABLE broken_part (id int); SELEC 1;"},
        {3, "0003_after", "CREATE TABLE after_broken (id int)"},
    };
    int applied = -1;
    strcpy(msg, "");
    az_err e = az_migrate(p, list, 3, &applied, msg);
    CU_ASSERT_NOT_EQUAL(e, AZ_OK);
    CU_ASSERT_PTR_NOT_NULL(strstr(msg, "0002_broken"));
    CU_ASSERT_EQUAL(applied, 1);
    CU_ASSERT_TRUE(table_exists(p, "alpha"));
    CU_ASSERT_FALSE(table_exists(p, "broken_part"));
    CU_ASSERT_FALSE(table_exists(p, "after_broken"));
    CU_ASSERT_EQUAL(query_long(p, "SELECT count(*) FROM schema_migrations WHERE version = 2"), 0);
    int v = -1;
    CU_ASSERT_EQUAL(az_migrate_version(p, &v, msg), AZ_OK);
    CU_ASSERT_EQUAL(v, 1);
    /* The pool is left healthy (no open transaction, lock released): fixing the migration
     * and running again applies the rest. */
    CU_ASSERT_EQUAL(query_long(p, "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"), 0);
    const az_migration fixed[] = {two[0], {2, "0002_fixed", "CREATE TABLE broken_part (id int)"},
                                  list[2]};
    CU_ASSERT_EQUAL(az_migrate(p, fixed, 3, &applied, msg), AZ_OK);
    CU_ASSERT_EQUAL(applied, 2);
    CU_ASSERT_TRUE(table_exists(p, "after_broken"));
    az_pg_free(p);
}

typedef struct {
    char url[512];
    const az_migration *list;
    size_t n;
    int applied;
    az_err err;
    char msg[AZ_MSG_MAX];
} mig_job;

static pthread_barrier_t barrier;

static void *migrate_thread(void *arg)
{
    mig_job *j = arg;
    az_pg *p = NULL;
    j->applied = -1;
    /* Each thread is a "replica" with its own pool. */
    if ((j->err = az_pg_new(j->url, 1, 5000, &p, j->msg)) != AZ_OK) {
        pthread_barrier_wait(&barrier);
        return NULL;
    }
    pthread_barrier_wait(&barrier);
    j->err = az_migrate(p, j->list, j->n, &j->applied, j->msg);
    az_pg_free(p);
    return NULL;
}

static void test_migrate_concurrent(void)
{
    CU_ASSERT_EQUAL_FATAL(create_db("mig_conc"), 0);
    /* The first migration is slow so the others surely arrive while it runs; a counter table
     * shows how often each body ran. */
    static const az_migration list[] = {
        {1, "0001_slow", "CREATE TABLE runs (v int); SELECT pg_sleep(0.3); INSERT INTO runs VALUES (1);"},
        {2, "0002_b", "INSERT INTO runs VALUES (2); CREATE TABLE conc_b (id int);"},
        {3, "0003_c", "INSERT INTO runs VALUES (3); CREATE TABLE conc_c (id int);"},
    };
    enum { T = 4 };
    mig_job jobs[T];
    pthread_t th[T];
    pthread_barrier_init(&barrier, NULL, T);
    for (int i = 0; i < T; i++) {
        memset(&jobs[i], 0, sizeof jobs[i]);
        db_url("mig_conc", jobs[i].url, sizeof jobs[i].url);
        jobs[i].list = list;
        jobs[i].n = 3;
        CU_ASSERT_EQUAL_FATAL(pthread_create(&th[i], NULL, migrate_thread, &jobs[i]), 0);
    }
    int sum = 0;
    for (int i = 0; i < T; i++) {
        pthread_join(th[i], NULL);
        if (jobs[i].err != AZ_OK) fprintf(stderr, "\n  thread %d: %s\n", i, jobs[i].msg);
        CU_ASSERT_EQUAL(jobs[i].err, AZ_OK);
        sum += jobs[i].applied;
    }
    pthread_barrier_destroy(&barrier);
    CU_ASSERT_EQUAL(sum, 3);
    char url[512];
    db_url("mig_conc", url, sizeof url);
    az_pg *p = NULL;
    CU_ASSERT_EQUAL_FATAL(az_pg_new(url, 1, 5000, &p, msg), AZ_OK);
    CU_ASSERT_EQUAL(query_long(p, "SELECT count(*) FROM runs"), 3);
    CU_ASSERT_EQUAL(query_long(p, "SELECT count(DISTINCT v) FROM runs"), 3);
    CU_ASSERT_EQUAL(query_long(p, "SELECT count(*) FROM schema_migrations"), 3);
    az_pg_free(p);
}

static void test_builtin_migrations(void)
{
    /* The migrations compiled into agentzd apply to an empty database, once. */
    az_pg *p = fresh_pool("mig_builtin", 1);
    CU_ASSERT_PTR_NOT_NULL_FATAL(p);
    CU_ASSERT_FATAL(az_migrations_count > 0);
    for (size_t i = 1; i < az_migrations_count; i++)
        CU_ASSERT(az_migrations[i].version > az_migrations[i - 1].version);
    int applied = -1;
    strcpy(msg, "");
    az_err e = az_migrate(p, az_migrations, az_migrations_count, &applied, msg);
    if (e != AZ_OK) fprintf(stderr, "\n  built-in migrations: %s\n", msg);
    CU_ASSERT_EQUAL(e, AZ_OK);
    CU_ASSERT_EQUAL(applied, (int)az_migrations_count);
    CU_ASSERT_EQUAL(az_migrate(p, az_migrations, az_migrations_count, &applied, msg), AZ_OK);
    CU_ASSERT_EQUAL(applied, 0);
    int v = -1;
    CU_ASSERT_EQUAL(az_migrate_version(p, &v, msg), AZ_OK);
    CU_ASSERT_EQUAL(v, az_migrations[az_migrations_count - 1].version);
    az_pg_free(p);
}

/* ================================================================ pgpool */

static az_pg *pool; /* on database "pool_t", size 2 */

static int pool_init(void)
{
    pool = fresh_pool("pool_t", 2);
    if (!pool) return 1;
    az_ctx ctx = {.deadline_ms = -1};
    az_pgconn *c;
    if (az_pg_acquire(pool, &ctx, &c, msg) != AZ_OK) return 1;
    az_err e = az_pg_exec(c, &ctx,
                          "CREATE TABLE t (id int PRIMARY KEY, n int NOT NULL CHECK (n >= 0))", 0,
                          NULL, NULL, msg);
    az_pg_release(c);
    return e == AZ_OK ? 0 : 1;
}

static int pool_clean(void)
{
    az_pg_free(pool);
    pool = NULL;
    return 0;
}

static az_err exec1(const char *sql, int nparams, const char *const *params)
{
    az_ctx ctx = {.deadline_ms = az_now_ms() + 5000};
    az_pgconn *c;
    strcpy(msg, "");
    az_err e = az_pg_acquire(pool, &ctx, &c, msg);
    if (e != AZ_OK) return e;
    e = az_pg_exec(c, &ctx, sql, nparams, params, NULL, msg);
    az_pg_release(c);
    return e;
}

static void test_pg_errors_mapped(void)
{
    const char *p1[] = {"1", "5"};
    CU_ASSERT_EQUAL(exec1("INSERT INTO t (id, n) VALUES ($1, $2)", 2, p1), AZ_OK);
    CU_ASSERT_EQUAL(exec1("INSERT INTO t (id, n) VALUES ($1, $2)", 2, p1), AZ_ERR_EXISTS);
    CU_ASSERT_PTR_NOT_NULL(strstr(msg, "duplicate key"));
    const char *neg[] = {"2", "-1"};
    CU_ASSERT_EQUAL(exec1("INSERT INTO t (id, n) VALUES ($1, $2)", 2, neg), AZ_ERR_PRECONDITION);
    CU_ASSERT_PTR_NOT_NULL(strstr(msg, "check constraint"));
    const char *nul[] = {"3", NULL};
    CU_ASSERT_EQUAL(exec1("INSERT INTO t (id, n) VALUES ($1, $2)", 2, nul), AZ_ERR_PRECONDITION);
    const char *txt[] = {"x"};
    CU_ASSERT_EQUAL(exec1("SELECT $1::int", 1, txt), AZ_ERR_INVALID);
    CU_ASSERT_EQUAL(exec1("SELEC 1", 0, NULL), AZ_ERR_INTERNAL);
    CU_ASSERT(strlen(msg) > 0);
    /* Results come back when asked for. */
    az_ctx ctx = {.deadline_ms = -1};
    az_pgconn *c;
    CU_ASSERT_EQUAL_FATAL(az_pg_acquire(pool, &ctx, &c, msg), AZ_OK);
    PGresult *r = NULL;
    const char *id[] = {"1"};
    CU_ASSERT_EQUAL(az_pg_exec(c, &ctx, "SELECT n FROM t WHERE id = $1", 1, id, &r, msg), AZ_OK);
    CU_ASSERT_PTR_NOT_NULL_FATAL(r);
    CU_ASSERT_EQUAL(PQntuples(r), 1);
    CU_ASSERT_STRING_EQUAL(PQgetvalue(r, 0, 0), "5");
    PQclear(r);
    az_pg_release(c);
    CU_ASSERT_EQUAL(az_pg_ping(pool, msg), AZ_OK);
}

static void test_pg_deadline(void)
{
    az_ctx ctx = {.deadline_ms = az_now_ms() + 200};
    az_pgconn *c;
    CU_ASSERT_EQUAL_FATAL(az_pg_acquire(pool, &ctx, &c, msg), AZ_OK);
    int64_t t0 = az_now_ms();
    az_err e = az_pg_exec(c, &ctx, "SELECT pg_sleep(2)", 0, NULL, NULL, msg);
    int64_t took = az_now_ms() - t0;
    CU_ASSERT_EQUAL(e, AZ_ERR_DEADLINE);
    CU_ASSERT(took < 1000);
    /* A passed deadline fails before running anything. */
    CU_ASSERT_EQUAL(az_pg_exec(c, &ctx, "SELECT 1", 0, NULL, NULL, msg), AZ_ERR_DEADLINE);
    /* The shortened statement timeout does not stick to the connection: a caller without
     * a deadline may run longer than 200 ms on it. */
    az_ctx none = {.deadline_ms = -1};
    CU_ASSERT_EQUAL(az_pg_exec(c, &none, "SELECT pg_sleep(0.5)", 0, NULL, NULL, msg), AZ_OK);
    az_pg_release(c);
    /* Acquire with a passed deadline. */
    az_ctx past = {.deadline_ms = az_now_ms() - 1};
    CU_ASSERT_EQUAL(az_pg_acquire(pool, &past, &c, msg), AZ_ERR_DEADLINE);
}

/* A caller whose cancel hook the test captures, as the gRPC layer would install it. */
static pthread_mutex_t hook_mu = PTHREAD_MUTEX_INITIALIZER;
static void (*hook_fn)(void *);
static void *hook_arg;
static int hook_installs;

static void capture_cancel(void *owner, void (*fn)(void *), void *arg)
{
    (void)owner;
    pthread_mutex_lock(&hook_mu);
    hook_fn = fn;
    hook_arg = arg;
    if (fn) hook_installs++;
    pthread_mutex_unlock(&hook_mu);
}

static void *canceller(void *unused)
{
    (void)unused;
    /* Wait for the hook, let the statement get going, then "the client goes away". */
    for (int i = 0; i < 300; i++) {
        pthread_mutex_lock(&hook_mu);
        int ready = hook_fn != NULL;
        pthread_mutex_unlock(&hook_mu);
        if (ready) break;
        usleep(10 * 1000);
    }
    usleep(300 * 1000);
    pthread_mutex_lock(&hook_mu);
    if (hook_fn) hook_fn(hook_arg);
    pthread_mutex_unlock(&hook_mu);
    return NULL;
}

static void test_pg_cancel(void)
{
    int owner = 0;
    az_ctx ctx = {.deadline_ms = az_now_ms() + 10000, .set_cancel = capture_cancel, .owner = &owner};
    az_pgconn *c;
    CU_ASSERT_EQUAL_FATAL(az_pg_acquire(pool, &ctx, &c, msg), AZ_OK);
    pthread_t th;
    CU_ASSERT_EQUAL_FATAL(pthread_create(&th, NULL, canceller, NULL), 0);
    int64_t t0 = az_now_ms();
    az_err e = az_pg_exec(c, &ctx, "SELECT pg_sleep(5)", 0, NULL, NULL, msg);
    int64_t took = az_now_ms() - t0;
    pthread_join(th, NULL);
    CU_ASSERT(e == AZ_ERR_CANCELLED || e == AZ_ERR_DEADLINE);
    CU_ASSERT_EQUAL(e, AZ_ERR_CANCELLED); /* the deadline was 10 s away: this was a cancel */
    CU_ASSERT(took < 1300);
    CU_ASSERT_EQUAL(hook_installs, 1);
    CU_ASSERT_PTR_NULL(hook_fn); /* uninstalled after the statement */
    /* The connection works afterwards. */
    CU_ASSERT_EQUAL(az_pg_exec(c, &ctx, "SELECT 1", 0, NULL, NULL, msg), AZ_OK);
    CU_ASSERT_PTR_NULL(hook_fn);
    az_pg_release(c);
}

static void test_pg_exhaustion(void)
{
    az_ctx none = {.deadline_ms = -1};
    az_pgconn *a, *b, *c = (az_pgconn *)0x1;
    CU_ASSERT_EQUAL_FATAL(az_pg_acquire(pool, &none, &a, msg), AZ_OK);
    CU_ASSERT_EQUAL_FATAL(az_pg_acquire(pool, &none, &b, msg), AZ_OK);
    CU_ASSERT_PTR_NOT_EQUAL(a, b);
    az_ctx soon = {.deadline_ms = az_now_ms() + 300};
    int64_t t0 = az_now_ms();
    CU_ASSERT_EQUAL(az_pg_acquire(pool, &soon, &c, msg), AZ_ERR_UNAVAILABLE);
    int64_t took = az_now_ms() - t0;
    CU_ASSERT_PTR_NULL(c);
    CU_ASSERT(took >= 250);
    CU_ASSERT(took < 1000);
    /* A release wakes a waiter at once. */
    az_pg_release(b);
    soon.deadline_ms = az_now_ms() + 300;
    t0 = az_now_ms();
    CU_ASSERT_EQUAL(az_pg_acquire(pool, &soon, &c, msg), AZ_OK);
    CU_ASSERT(az_now_ms() - t0 < 100);
    CU_ASSERT_PTR_EQUAL(c, b);
    az_pg_release(c);
    az_pg_release(a);
    az_pg_release(NULL);
}

static void test_pg_release_rolls_back(void)
{
    az_ctx ctx = {.deadline_ms = -1};
    az_pgconn *c;
    CU_ASSERT_EQUAL_FATAL(az_pg_acquire(pool, &ctx, &c, msg), AZ_OK);
    CU_ASSERT_EQUAL(az_pg_begin(c, &ctx, msg), AZ_OK);
    const char *p[] = {"100", "1"};
    CU_ASSERT_EQUAL(az_pg_exec(c, &ctx, "INSERT INTO t (id, n) VALUES ($1, $2)", 2, p, NULL, msg), AZ_OK);
    az_pg_release(c); /* never committed */
    /* Take both connections so the one used above is surely among them. */
    az_pgconn *x, *y;
    CU_ASSERT_EQUAL_FATAL(az_pg_acquire(pool, &ctx, &x, msg), AZ_OK);
    CU_ASSERT_EQUAL_FATAL(az_pg_acquire(pool, &ctx, &y, msg), AZ_OK);
    CU_ASSERT_EQUAL(PQtransactionStatus(az_pg_raw(x)), PQTRANS_IDLE);
    CU_ASSERT_EQUAL(PQtransactionStatus(az_pg_raw(y)), PQTRANS_IDLE);
    PGresult *r = NULL;
    CU_ASSERT_EQUAL(az_pg_exec(x, &ctx, "SELECT count(*) FROM t WHERE id = 100", 0, NULL, &r, msg), AZ_OK);
    CU_ASSERT_STRING_EQUAL(PQgetvalue(r, 0, 0), "0");
    PQclear(r);
    az_pg_release(y);
    /* A failed statement inside a transaction leaves it aborted; release still cleans up. */
    CU_ASSERT_EQUAL(az_pg_begin(x, &ctx, msg), AZ_OK);
    CU_ASSERT_EQUAL(az_pg_exec(x, &ctx, "SELEC 1", 0, NULL, NULL, msg), AZ_ERR_INTERNAL);
    az_pg_release(x);
    CU_ASSERT_EQUAL_FATAL(az_pg_acquire(pool, &ctx, &x, msg), AZ_OK);
    CU_ASSERT_EQUAL(az_pg_exec(x, &ctx, "SELECT 1", 0, NULL, NULL, msg), AZ_OK);
    /* Commit works. */
    CU_ASSERT_EQUAL(az_pg_begin(x, &ctx, msg), AZ_OK);
    const char *q[] = {"101", "1"};
    CU_ASSERT_EQUAL(az_pg_exec(x, &ctx, "INSERT INTO t (id, n) VALUES ($1, $2)", 2, q, NULL, msg), AZ_OK);
    CU_ASSERT_EQUAL(az_pg_commit(x, &ctx, msg), AZ_OK);
    az_pg_release(x);
    CU_ASSERT_EQUAL(query_long(pool, "SELECT count(*) FROM t WHERE id = 101"), 1);
}

static long backend_pid(az_pgconn *c)
{
    az_ctx ctx = {.deadline_ms = -1};
    PGresult *r = NULL;
    long pid = -1;
    if (az_pg_exec(c, &ctx, "SELECT pg_backend_pid()", 0, NULL, &r, msg) == AZ_OK)
        pid = atol(PQgetvalue(r, 0, 0));
    PQclear(r);
    return pid;
}

static void test_pg_reconnect_after_terminate(void)
{
    az_ctx ctx = {.deadline_ms = az_now_ms() + 5000};
    az_pgconn *a, *b;
    CU_ASSERT_EQUAL_FATAL(az_pg_acquire(pool, &ctx, &a, msg), AZ_OK);
    CU_ASSERT_EQUAL_FATAL(az_pg_acquire(pool, &ctx, &b, msg), AZ_OK);
    long victim = backend_pid(b);
    CU_ASSERT_FATAL(victim > 0);
    char pid[32];
    snprintf(pid, sizeof pid, "%ld", victim);
    const char *params[] = {pid};
    PGresult *r = NULL;
    CU_ASSERT_EQUAL_FATAL(az_pg_exec(a, &ctx, "SELECT pg_terminate_backend($1::int)", 1, params, &r, msg),
                          AZ_OK);
    CU_ASSERT_STRING_EQUAL(PQgetvalue(r, 0, 0), "t");
    PQclear(r);
    az_pg_release(b);
    az_pg_release(a);
    usleep(200 * 1000); /* let the backend exit */
    /* Hold both connections again: one of them is the terminated one. Every statement on
     * them must succeed: the pool notices the dead connection and reconnects. */
    az_pgconn *x, *y;
    ctx.deadline_ms = az_now_ms() + 5000;
    CU_ASSERT_EQUAL_FATAL(az_pg_acquire(pool, &ctx, &x, msg), AZ_OK);
    CU_ASSERT_EQUAL_FATAL(az_pg_acquire(pool, &ctx, &y, msg), AZ_OK);
    az_err ex = az_pg_exec(x, &ctx, "SELECT 1", 0, NULL, NULL, msg);
    if (ex != AZ_OK) fprintf(stderr, "\n  first statement after terminate: %s\n", msg);
    CU_ASSERT_EQUAL(ex, AZ_OK);
    az_err ey = az_pg_exec(y, &ctx, "SELECT 1", 0, NULL, NULL, msg);
    if (ey != AZ_OK) fprintf(stderr, "\n  first statement after terminate: %s\n", msg);
    CU_ASSERT_EQUAL(ey, AZ_OK);
    long px = backend_pid(x), py = backend_pid(y);
    CU_ASSERT(px > 0 && py > 0);
    CU_ASSERT(px != victim && py != victim);
    az_pg_release(y);
    az_pg_release(x);
    /* Whatever happened above, the pool recovers for the next callers. */
    CU_ASSERT_EQUAL(az_pg_ping(pool, msg), AZ_OK);
    CU_ASSERT_EQUAL(az_pg_ping(pool, msg), AZ_OK);
}

static void test_pg_new_unreachable(void)
{
    char url[256];
    snprintf(url, sizeof url, "host=%s/nowhere user=agentz dbname=postgres connect_timeout=2", tmpdir);
    az_pg *p = (az_pg *)0x1;
    int64_t t0 = az_now_ms();
    CU_ASSERT_EQUAL(az_pg_new(url, 2, 300, &p, msg), AZ_ERR_UNAVAILABLE);
    int64_t took = az_now_ms() - t0;
    CU_ASSERT_PTR_NULL(p);
    CU_ASSERT(took >= 300 && took < 2000);
    CU_ASSERT_PTR_NOT_NULL(strstr(msg, "postgresql"));
    az_pg_free(NULL);
}

int main(void)
{
    if (CU_initialize_registry() != CUE_SUCCESS) return 1;
    CU_pSuite m = CU_add_suite("migrate", NULL, NULL);
    CU_pSuite p = CU_add_suite("pgpool", pool_init, pool_clean);
    if (!m || !p) return 1;
    CU_add_test(m, "apply, then nothing to do", test_migrate_apply_then_noop);
    CU_add_test(m, "version of an empty database", test_migrate_version_empty_db);
    CU_add_test(m, "broken migration", test_migrate_broken);
    CU_add_test(m, "four replicas at once", test_migrate_concurrent);
    CU_add_test(m, "built-in migrations", test_builtin_migrations);
    CU_add_test(p, "sqlstate mapping", test_pg_errors_mapped);
    CU_add_test(p, "deadline", test_pg_deadline);
    CU_add_test(p, "cancel hook", test_pg_cancel);
    CU_add_test(p, "pool exhaustion", test_pg_exhaustion);
    CU_add_test(p, "release rolls back", test_pg_release_rolls_back);
    CU_add_test(p, "reconnect after terminate", test_pg_reconnect_after_terminate);
    CU_add_test(p, "unreachable server", test_pg_new_unreachable);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    /* One embedded cluster for both suites, started here so it is stopped exactly once. */
    int started = pg_init() == 0;
    if (!started) {
        fprintf(stderr, "cannot start the embedded PostgreSQL; failing\n");
        CU_cleanup_registry();
        pg_clean();
        return 1;
    }
    CU_basic_run_tests();
    unsigned failures = CU_get_number_of_failures() + CU_get_number_of_tests_failed() +
                        CU_get_number_of_suites_failed();
    CU_cleanup_registry();
    pg_clean();
    return failures ? 1 : 0;
}
