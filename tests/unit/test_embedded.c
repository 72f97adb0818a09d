/* CUnit suite for server/embed: starts the real private PostgreSQL and Redis in temp dirs and checks
 * persistence, the data-dir lock, reuse after a crash, long paths, and that nothing is left running. */
#include <CUnit/Basic.h>
#include <errno.h>
#include <ftw.h>
#include <hiredis/hiredis.h>
#include <libpq-fe.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "core/err.h"
#include "core/log.h"
#include "embed/embedded.h"

/* ---- helpers ---- */

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    if (remove(path) != 0) fprintf(stderr, "cannot remove %s: %s\n", path, strerror(errno));
    return 0;
}

static void rm_rf(const char *path) { nftw(path, rm_entry, 16, FTW_DEPTH | FTW_PHYS); }

/* A fresh dir under /tmp the postgres user can enter (we may be root). */
static void make_tmp(char *buf, size_t cap)
{
    snprintf(buf, cap, "/tmp/aztest-embed-XXXXXX");
    CU_ASSERT_FATAL(mkdtemp(buf) != NULL);
    CU_ASSERT_FATAL(chmod(buf, 0755) == 0);
}

static pid_t read_pid(const char *dir, const char *file)
{
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/%s", dir, file);
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    long pid = 0;
    if (fscanf(f, "%ld", &pid) != 1) pid = 0;
    fclose(f);
    return (pid_t)pid;
}

/* Running and not a zombie (an exited server may wait for a reaper that is not us). */
static int alive(pid_t pid)
{
    if (pid <= 0 || (kill(pid, 0) != 0 && errno != EPERM)) return 0;
    char path[64], buf[512];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    char *p = strrchr(buf, ')');
    return !(p && p[1] == ' ' && p[2] == 'Z');
}

typedef struct pids {
    pid_t pg, redis;
} pids;

static pids server_pids(const az_embed *e)
{
    pids p = {read_pid(az_embed_data_dir(e), "pg/postmaster.pid"),
              read_pid(az_embed_data_dir(e), "run/redis.pid")};
    return p;
}

static az_embed *start_ok(const char *dir)
{
    char msg[AZ_MSG_MAX] = "";
    az_embed *e = NULL;
    az_err err = az_embed_start(dir, &e, msg);
    if (err != AZ_OK) fprintf(stderr, "az_embed_start(%s): %s: %s\n", dir, az_err_name(err), msg);
    CU_ASSERT_EQUAL_FATAL(err, AZ_OK);
    CU_ASSERT_PTR_NOT_NULL_FATAL(e);
    return e;
}

static PGconn *pg_connect(const az_embed *e)
{
    PGconn *c = PQconnectdb(az_embed_database_url(e));
    if (PQstatus(c) != CONNECTION_OK)
        fprintf(stderr, "PQconnectdb(%s): %s\n", az_embed_database_url(e), PQerrorMessage(c));
    CU_ASSERT_EQUAL_FATAL(PQstatus(c), CONNECTION_OK);
    return c;
}

static void pg_exec_ok(PGconn *c, const char *sql)
{
    PGresult *r = PQexec(c, sql);
    if (PQresultStatus(r) != PGRES_COMMAND_OK && PQresultStatus(r) != PGRES_TUPLES_OK)
        fprintf(stderr, "%s: %s\n", sql, PQerrorMessage(c));
    CU_ASSERT(PQresultStatus(r) == PGRES_COMMAND_OK || PQresultStatus(r) == PGRES_TUPLES_OK);
    PQclear(r);
}

/* The single text value a query returns, copied into buf ("" if none). */
static void pg_value(PGconn *c, const char *sql, char *buf, size_t cap)
{
    PGresult *r = PQexec(c, sql);
    buf[0] = '\0';
    if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1)
        snprintf(buf, cap, "%s", PQgetvalue(r, 0, 0));
    else
        fprintf(stderr, "%s: %s\n", sql, PQerrorMessage(c));
    PQclear(r);
}

static redisContext *redis_connect(const az_embed *e)
{
    const char *url = az_embed_redis_url(e);
    CU_ASSERT_FATAL(strncmp(url, "unix://", 7) == 0);
    struct timeval tv = {5, 0};
    redisContext *c = redisConnectUnixWithTimeout(url + 7, tv);
    CU_ASSERT_FATAL(c != NULL && c->err == 0);
    redisReply *r = redisCommand(c, "PING");
    CU_ASSERT_FATAL(r != NULL);
    CU_ASSERT(r->type == REDIS_REPLY_STATUS && strcmp(r->str, "PONG") == 0);
    freeReplyObject(r);
    return c;
}

static void redis_get(redisContext *c, const char *key, char *buf, size_t cap)
{
    redisReply *r = redisCommand(c, "GET %s", key);
    buf[0] = '\0';
    if (r && r->type == REDIS_REPLY_STRING) snprintf(buf, cap, "%s", r->str);
    freeReplyObject(r);
}

static void stop_and_check_gone(az_embed *e)
{
    pids p = server_pids(e);
    CU_ASSERT(alive(p.pg));
    CU_ASSERT(alive(p.redis));
    az_embed_stop(e);
    CU_ASSERT(!alive(p.pg));
    CU_ASSERT(!alive(p.redis));
}

/* ---- tests ---- */

static void test_invalid_arguments(void)
{
    char msg[AZ_MSG_MAX] = "";
    az_embed *e = (az_embed *)&msg; /* must be reset to NULL */
    CU_ASSERT_EQUAL(az_embed_start(NULL, &e, msg), AZ_ERR_INVALID);
    CU_ASSERT_PTR_NULL(e);
    CU_ASSERT_EQUAL(az_embed_start("", &e, msg), AZ_ERR_INVALID);
    CU_ASSERT(strstr(msg, "data_dir") != NULL);
    CU_ASSERT_EQUAL(az_embed_start("/tmp", NULL, msg), AZ_ERR_INVALID);
    az_embed_stop(NULL);
}

static void test_persist_lock_and_clean_stop(void)
{
    char dir[64];
    make_tmp(dir, sizeof dir);

    az_embed *e = start_ok(dir);
    char expect[PATH_MAX + 64];
    snprintf(expect, sizeof expect, "postgresql:///agentz?host=%s/run&port=5432&user=agentz", dir);
    CU_ASSERT_STRING_EQUAL(az_embed_database_url(e), expect);
    snprintf(expect, sizeof expect, "unix://%s/run/redis.sock", dir);
    CU_ASSERT_STRING_EQUAL(az_embed_redis_url(e), expect);

    PGconn *pg = pg_connect(e);
    pg_exec_ok(pg, "CREATE TABLE notes (id int PRIMARY KEY, body text NOT NULL)");
    pg_exec_ok(pg, "INSERT INTO notes VALUES (1, 'survives restarts')");
    PQfinish(pg);
    redisContext *rc = redis_connect(e);
    redisReply *r = redisCommand(rc, "SET agentz:test %s", "kept");
    CU_ASSERT(r && r->type == REDIS_REPLY_STATUS);
    freeReplyObject(r);
    redisFree(rc);

    /* A second agentzd on the same data dir is refused and disturbs nothing. */
    char msg[AZ_MSG_MAX] = "";
    az_embed *second = NULL;
    CU_ASSERT_EQUAL(az_embed_start(dir, &second, msg), AZ_ERR_PRECONDITION);
    CU_ASSERT_PTR_NULL(second);
    CU_ASSERT(strstr(msg, "is in use by another agentzd (pid ") != NULL);
    pids before = server_pids(e);
    CU_ASSERT(alive(before.pg) && alive(before.redis));

    stop_and_check_gone(e);

    e = start_ok(dir);
    pg = pg_connect(e);
    char body[64];
    pg_value(pg, "SELECT body FROM notes WHERE id = 1", body, sizeof body);
    CU_ASSERT_STRING_EQUAL(body, "survives restarts");
    PQfinish(pg);
    rc = redis_connect(e);
    char val[64];
    redis_get(rc, "agentz:test", val, sizeof val);
    CU_ASSERT_STRING_EQUAL(val, "kept");
    redisFree(rc);

    /* The lock is held again by the new handle. */
    CU_ASSERT_EQUAL(az_embed_start(dir, &second, msg), AZ_ERR_PRECONDITION);
    stop_and_check_gone(e);
    rm_rf(dir);
}

/* An agentzd that dies without stopping leaves both servers running; the next start reuses them. */
static void test_reuse_after_crash(void)
{
    char dir[64];
    make_tmp(dir, sizeof dir);

    pid_t child = fork();
    CU_ASSERT_FATAL(child >= 0);
    if (child == 0) {
        char msg[AZ_MSG_MAX];
        az_embed *e = NULL;
        if (az_embed_start(dir, &e, msg) != AZ_OK) {
            fprintf(stderr, "child az_embed_start: %s\n", msg);
            _exit(1);
        }
        PGconn *pg = PQconnectdb(az_embed_database_url(e));
        PGresult *r = PQexec(pg, "CREATE TABLE crash (v text); INSERT INTO crash VALUES ('before crash')");
        int ok = PQresultStatus(r) == PGRES_COMMAND_OK;
        PQclear(r);
        PQfinish(pg);
        _exit(ok ? 0 : 2); /* "crash": no az_embed_stop */
    }
    int status = 0;
    CU_ASSERT_FATAL(waitpid(child, &status, 0) == child);
    CU_ASSERT_FATAL(WIFEXITED(status) && WEXITSTATUS(status) == 0);

    pid_t orphan_pg = read_pid(dir, "pg/postmaster.pid"), orphan_redis = read_pid(dir, "run/redis.pid");
    CU_ASSERT(alive(orphan_pg));
    CU_ASSERT(alive(orphan_redis));

    az_embed *e = start_ok(dir);
    pids p = server_pids(e);
    CU_ASSERT_EQUAL(p.pg, orphan_pg);
    CU_ASSERT_EQUAL(p.redis, orphan_redis);
    PGconn *pg = pg_connect(e);
    char v[64];
    pg_value(pg, "SELECT v FROM crash", v, sizeof v);
    CU_ASSERT_STRING_EQUAL(v, "before crash");
    PQfinish(pg);
    redisFree(redis_connect(e));
    stop_and_check_gone(e);
    rm_rf(dir);
}

/* Socket paths are limited to 107 bytes: a deep data dir gets its sockets under /tmp/agentz-<hash>. */
static void test_long_path_uses_short_socket_dir(void)
{
    char base[64], dir[PATH_MAX];
    make_tmp(base, sizeof base);
    snprintf(dir, sizeof dir, "%s/%s/%s", base, "a-rather-long-directory-name-to-push-the-socket-path",
             "past-the-unix-socket-limit-of-107-bytes");
    CU_ASSERT_FATAL(strlen(dir) + strlen("/run/.s.PGSQL.5432") > 107);

    az_embed *e = start_ok(dir);
    CU_ASSERT(strstr(az_embed_database_url(e), "host=/tmp/agentz-") != NULL);
    CU_ASSERT(strncmp(az_embed_redis_url(e), "unix:///tmp/agentz-", 19) == 0);
    char sockdir[PATH_MAX];
    snprintf(sockdir, sizeof sockdir, "%s", az_embed_redis_url(e) + 7);
    *strrchr(sockdir, '/') = '\0';
    struct stat st;
    CU_ASSERT(stat(sockdir, &st) == 0 && (st.st_mode & 0777) == 0700);

    PQfinish(pg_connect(e));
    redisFree(redis_connect(e));
    stop_and_check_gone(e);
    CU_ASSERT(access(sockdir, F_OK) != 0); /* removed once empty */
    rm_rf(base);
}

/* As root the cluster runs as postgres, which must be able to reach the data dir. */
static void test_unreachable_dir_as_root(void)
{
    if (geteuid() != 0) return;
    char base[64], dir[PATH_MAX];
    make_tmp(base, sizeof base);
    CU_ASSERT_FATAL(chmod(base, 0700) == 0);
    snprintf(dir, sizeof dir, "%s/data", base);
    char msg[AZ_MSG_MAX] = "";
    az_embed *e = NULL;
    CU_ASSERT_EQUAL(az_embed_start(dir, &e, msg), AZ_ERR_PRECONDITION);
    CU_ASSERT_PTR_NULL(e);
    CU_ASSERT(strstr(msg, "AGENTZ_DATA_DIR") != NULL);
    CU_ASSERT(strstr(msg, "AGENTZ_DATABASE_URL") != NULL);
    rm_rf(base);
}

int main(void)
{
    az_log_set_level(AZ_LOG_WARN);
    if (CU_initialize_registry() != CUE_SUCCESS) return 1;
    CU_pSuite s = CU_add_suite("embedded", NULL, NULL);
    if (!s || !CU_add_test(s, "invalid arguments", test_invalid_arguments) ||
        !CU_add_test(s, "persistence, lock and clean stop", test_persist_lock_and_clean_stop) ||
        !CU_add_test(s, "reuse after crash", test_reuse_after_crash) ||
        !CU_add_test(s, "long path uses short socket dir", test_long_path_uses_short_socket_dir) ||
        !CU_add_test(s, "unreachable dir as root", test_unreachable_dir_as_root)) {
        CU_cleanup_registry();
        return 1;
    }
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    unsigned failed = CU_get_number_of_failures() + CU_get_number_of_tests_failed();
    CU_cleanup_registry();
    return failed ? 1 : 0;
}
