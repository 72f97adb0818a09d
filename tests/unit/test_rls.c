/* CUnit suite for PostgreSQL row-level security (migration 0005_rls.sql and the tenant settings
 * in server/store/pgpool.c) against a throwaway embedded PostgreSQL: every workspace table is
 * under the policy, a workspace sees and changes only its own rows even when the SQL forgets the
 * filter, WITH CHECK refuses foreign rows, system work sees everything, and the per-connection
 * cache of the settings never hands one borrower's workspace to the next. */
#include <CUnit/Basic.h>
#include <ftw.h>
#include <libpq-fe.h>
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

#define WS_A "0000000a-0000-4000-8000-00000000000a"
#define WS_B "0000000b-0000-4000-8000-00000000000b"
#define WS_C "0000000c-0000-4000-8000-00000000000c" /* exists, owns nothing */

static char tmpdir[64];
static az_embed *embed;
static az_pg *pg;  /* agentz database, migrated, SET ROLE agentz_app; 3 connections */
static az_pg *one; /* same, one connection: every borrower gets the same session */
static char msg[AZ_MSG_MAX];
static char agent_b[37]; /* one of B's agents */

static const az_ctx SYSTEM = {.workspace_id = NULL, .deadline_ms = -1};

static az_ctx ws_ctx(const char *ws) { return (az_ctx){.workspace_id = ws, .deadline_ms = -1}; }

/* ---------------------------------------------------------------- helpers */

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    remove(path);
    return 0;
}

/* Runs sql with ctx on a connection of p; returns the error, *out gets the first value of a
 * result (or the affected-row count of a command) when out is not NULL. */
static az_err run(az_pg *p, const az_ctx *ctx, const char *sql, int n, const char *const *params,
                  long *out)
{
    az_pgconn *c;
    strcpy(msg, "");
    az_err e = az_pg_acquire(p, ctx, &c, msg);
    if (e != AZ_OK) return e;
    PGresult *r = NULL;
    e = az_pg_exec(c, ctx, sql, n, params, &r, msg);
    if (e == AZ_OK && out)
        *out = PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) > 0 ? atol(PQgetvalue(r, 0, 0))
                                                                         : atol(PQcmdTuples(r));
    PQclear(r);
    az_pg_release(c);
    return e;
}

static long count(az_pg *p, const az_ctx *ctx, const char *sql)
{
    long n = -1;
    az_err e = run(p, ctx, sql, 0, NULL, &n);
    if (e != AZ_OK) fprintf(stderr, "\n  %s: %s\n", sql, msg);
    return n;
}

/* count() on an open connection. */
static long count_on(az_pgconn *c, const az_ctx *ctx, const char *sql)
{
    PGresult *r = NULL;
    long n = -1;
    if (az_pg_exec(c, ctx, sql, 0, NULL, &r, msg) == AZ_OK) n = atol(PQgetvalue(r, 0, 0));
    else fprintf(stderr, "\n  %s: %s\n", sql, msg);
    PQclear(r);
    return n;
}

static int add_agent(const char *ws, const char *name, char id_out[37])
{
    const char *p[2] = {ws, name};
    az_pgconn *c;
    az_ctx ctx = ws_ctx(ws);
    if (az_pg_acquire(pg, &ctx, &c, msg) != AZ_OK) return -1;
    PGresult *r = NULL;
    az_err e = az_pg_exec(c, &ctx,
                          "INSERT INTO agents (workspace_id, name, role, goal, backstory)"
                          " VALUES ($1, $2, 'r', 'g', 'b') RETURNING id::text",
                          2, p, &r, msg);
    if (e == AZ_OK && id_out) snprintf(id_out, 37, "%s", PQgetvalue(r, 0, 0));
    PQclear(r);
    az_pg_release(c);
    if (e != AZ_OK) fprintf(stderr, "\n  add agent: %s\n", msg);
    return e == AZ_OK ? 0 : -1;
}

static az_pg *migrated_pool(const char *url, int size, const char *role)
{
    az_pg *p = NULL;
    if (az_pg_new(url, size, 10000, &p, msg) != AZ_OK) {
        fprintf(stderr, "az_pg_new: %s\n", msg);
        return NULL;
    }
    if (az_migrate(p, az_migrations, az_migrations_count, NULL, msg) != AZ_OK ||
        (role && az_pg_set_role(p, role, msg) != AZ_OK)) {
        fprintf(stderr, "migrate/set role: %s\n", msg);
        az_pg_free(p);
        return NULL;
    }
    return p;
}

/* The embedded URL with another database and user. */
static void url_for(const char *db, const char *user, char *out, size_t cap)
{
    const char *q = strchr(az_embed_database_url(embed), '?');
    char base[400];
    snprintf(base, sizeof base, "%s", q ? q : "?");
    char *u = strstr(base, "&user=");
    if (u) *u = '\0';
    snprintf(out, cap, "postgresql:///%s%s&user=%s", db, base, user);
}

/* ---------------------------------------------------------------- suite setup */

static int suite_init(void)
{
    az_log_set_level(AZ_LOG_ERROR);
    snprintf(tmpdir, sizeof tmpdir, "/tmp/aztest-rls-XXXXXX");
    if (!mkdtemp(tmpdir) || chmod(tmpdir, 0755) != 0) return 1;
    char data[128];
    snprintf(data, sizeof data, "%s/data", tmpdir);
    if (az_embed_start(data, &embed, msg) != AZ_OK) {
        fprintf(stderr, "cannot start embedded servers: %s\n", msg);
        return 1;
    }
    pg = migrated_pool(az_embed_database_url(embed), 3, "agentz_app");
    one = migrated_pool(az_embed_database_url(embed), 1, "agentz_app");
    if (!pg || !one) return 1;
    /* Workspaces have no workspace_id column: no policy, the app role may create them. */
    if (run(pg, &SYSTEM,
            "INSERT INTO workspaces (id, name) VALUES"
            " ('" WS_A "', 'a'), ('" WS_B "', 'b'), ('" WS_C "', 'c')",
            0, NULL, NULL) != AZ_OK) {
        fprintf(stderr, "workspaces: %s\n", msg);
        return 1;
    }
    if (add_agent(WS_A, "a1", NULL) || add_agent(WS_A, "a2", NULL) || add_agent(WS_B, "b1", agent_b))
        return 1;
    return 0;
}

static int suite_clean(void)
{
    az_pg_free(pg);
    az_pg_free(one);
    pg = one = NULL;
    az_embed_stop(embed);
    embed = NULL;
    nftw(tmpdir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    return 0;
}

/* ================================================================ tests */

static void test_every_workspace_table_forced(void)
{
    /* Tables with a workspace_id column that lack RLS, FORCE or the policy: none. */
    long bad = count(pg, &SYSTEM,
                     "SELECT count(*) FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid"
                     " WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'p')"
                     " AND a.attname = 'workspace_id' AND NOT a.attisdropped"
                     " AND NOT (c.relrowsecurity AND c.relforcerowsecurity AND EXISTS ("
                     "   SELECT 1 FROM pg_policy p WHERE p.polrelid = c.oid"
                     "   AND p.polname = 'agentz_workspace'))");
    CU_ASSERT_EQUAL(bad, 0);
    /* The tenant tables of migrations 0001-0003 are among them. */
    long covered = count(pg, &SYSTEM,
                         "SELECT count(*) FROM pg_class WHERE relrowsecurity AND relforcerowsecurity"
                         " AND relname IN ('agents', 'idempotency_keys', 'tasks', 'task_attempts',"
                         " 'workflows', 'workflow_versions', 'workflow_runs', 'templates')");
    CU_ASSERT_EQUAL(covered, 8);
    /* Statements run as agentz_app, which is neither superuser nor owner. */
    long app = count(pg, &SYSTEM,
                     "SELECT count(*) FROM pg_roles WHERE rolname = current_user"
                     " AND current_user = 'agentz_app' AND NOT rolsuper AND NOT rolbypassrls");
    CU_ASSERT_EQUAL(app, 1);
}

static void test_select_sees_own_workspace(void)
{
    az_ctx a = ws_ctx(WS_A), b = ws_ctx(WS_B), c = ws_ctx(WS_C);
    /* No workspace filter in the SQL: the policy is the filter. */
    CU_ASSERT_EQUAL(count(pg, &a, "SELECT count(*) FROM agents"), 2);
    CU_ASSERT_EQUAL(count(pg, &b, "SELECT count(*) FROM agents"), 1);
    CU_ASSERT_EQUAL(count(pg, &c, "SELECT count(*) FROM agents"), 0);
    CU_ASSERT_EQUAL(count(pg, &a, "SELECT count(DISTINCT workspace_id) FROM agents"), 1);
    /* Even by id, B's agent is invisible to A. */
    const char *p[1] = {agent_b};
    long n = -1;
    CU_ASSERT_EQUAL(run(pg, &a, "SELECT count(*) FROM agents WHERE id = $1", 1, p, &n), AZ_OK);
    CU_ASSERT_EQUAL(n, 0);
    /* Every tenant table is empty for a workspace that owns nothing. */
    az_pgconn *conn;
    CU_ASSERT_EQUAL_FATAL(az_pg_acquire(pg, &SYSTEM, &conn, msg), AZ_OK);
    PGresult *r = NULL;
    CU_ASSERT_EQUAL_FATAL(az_pg_exec(conn, &SYSTEM,
                                     "SELECT DISTINCT c.relname FROM pg_class c JOIN pg_attribute a"
                                     " ON a.attrelid = c.oid WHERE c.relnamespace = 'public'::regnamespace"
                                     " AND c.relkind = 'r' AND a.attname = 'workspace_id'",
                                     0, NULL, &r, msg),
                          AZ_OK);
    CU_ASSERT(PQntuples(r) >= 8);
    for (int i = 0; i < PQntuples(r); i++) {
        char sql[200];
        snprintf(sql, sizeof sql, "SELECT count(*) FROM %s", PQgetvalue(r, i, 0));
        CU_ASSERT_EQUAL(count_on(conn, &c, sql), 0);
    }
    PQclear(r);
    az_pg_release(conn);
}

static void test_system_sees_all(void)
{
    CU_ASSERT(count(pg, &SYSTEM, "SELECT count(*) FROM agents") >= 3);
    CU_ASSERT_EQUAL(count(pg, &SYSTEM, "SELECT count(DISTINCT workspace_id) FROM agents"), 2);
    /* An empty workspace id is system work too (the reconciler's ctx). */
    az_ctx empty = ws_ctx("");
    CU_ASSERT_EQUAL(count(pg, &empty, "SELECT count(DISTINCT workspace_id) FROM agents"), 2);
    CU_ASSERT_EQUAL(count(pg, NULL, "SELECT count(DISTINCT workspace_id) FROM agents"), 2);
}

static void test_cannot_modify_other_workspace(void)
{
    az_ctx a = ws_ctx(WS_A);
    const char *p[1] = {agent_b};
    long n = -1;
    CU_ASSERT_EQUAL(run(pg, &a, "UPDATE agents SET goal = 'hijacked' WHERE id = $1", 1, p, &n), AZ_OK);
    CU_ASSERT_EQUAL(n, 0);
    CU_ASSERT_EQUAL(run(pg, &a, "DELETE FROM agents WHERE id = $1", 1, p, &n), AZ_OK);
    CU_ASSERT_EQUAL(n, 0);
    /* An UPDATE without any filter touches only A's rows. */
    CU_ASSERT_EQUAL(run(pg, &a, "UPDATE agents SET goal = 'g2'", 0, NULL, &n), AZ_OK);
    CU_ASSERT_EQUAL(n, 2);
    CU_ASSERT_EQUAL(count(pg, &SYSTEM, "SELECT count(*) FROM agents WHERE goal = 'hijacked'"), 0);
    CU_ASSERT_EQUAL(count(pg, &SYSTEM,
                          "SELECT count(*) FROM agents WHERE workspace_id = '" WS_B "' AND goal = 'g'"),
                    1);
    /* WITH CHECK: A cannot write a row into B, nor move its own row there. */
    const char *ins[1] = {WS_B};
    az_err e = run(pg, &a,
                   "INSERT INTO agents (workspace_id, role, goal, backstory) VALUES ($1, 'r', 'g', 'b')",
                   1, ins, NULL);
    CU_ASSERT_NOT_EQUAL(e, AZ_OK);
    CU_ASSERT_PTR_NOT_NULL(strstr(msg, "row-level security"));
    e = run(pg, &a, "UPDATE agents SET workspace_id = $1 WHERE name = 'a1'", 1, ins, NULL);
    CU_ASSERT_NOT_EQUAL(e, AZ_OK);
    CU_ASSERT_PTR_NOT_NULL(strstr(msg, "row-level security"));
    CU_ASSERT_EQUAL(count(pg, &SYSTEM, "SELECT count(*) FROM agents WHERE workspace_id = '" WS_B "'"), 1);
    /* Tasks too (a second table, with its own shape). */
    const char *t[2] = {WS_B, "11111111-1111-4111-8111-111111111111"};
    az_ctx b = ws_ctx(WS_B);
    CU_ASSERT_EQUAL(run(pg, &b, "INSERT INTO tasks (workspace_id, id, description, status)"
                                " VALUES ($1, $2, 'd', 1)", 2, t, NULL), AZ_OK);
    CU_ASSERT_EQUAL(count(pg, &a, "SELECT count(*) FROM tasks"), 0);
    CU_ASSERT_EQUAL(count(pg, &b, "SELECT count(*) FROM tasks"), 1);
    CU_ASSERT_EQUAL(run(pg, &a, "DELETE FROM tasks", 0, NULL, &n), AZ_OK);
    CU_ASSERT_EQUAL(n, 0);
    CU_ASSERT_EQUAL(count(pg, &b, "SELECT count(*) FROM tasks"), 1);
    /* A malformed workspace id is an error, never a match. */
    az_ctx junk = ws_ctx("not-a-uuid");
    CU_ASSERT_EQUAL(run(pg, &junk, "SELECT count(*) FROM agents", 0, NULL, &n), AZ_ERR_INVALID);
}

static void test_cache_does_not_leak_across_borrowers(void)
{
    /* One connection: every borrower gets the same session, one after the other. */
    az_ctx a = ws_ctx(WS_A), b = ws_ctx(WS_B), c = ws_ctx(WS_C);
    for (int round = 0; round < 3; round++) {
        CU_ASSERT_EQUAL(count(one, &a, "SELECT count(*) FROM agents"), 2);
        CU_ASSERT_EQUAL(count(one, &a, "SELECT count(*) FROM agents"), 2);
        CU_ASSERT_EQUAL(count(one, &b, "SELECT count(*) FROM agents"), 1);
        CU_ASSERT_EQUAL(count(one, &SYSTEM, "SELECT count(DISTINCT workspace_id) FROM agents"), 2);
        CU_ASSERT_EQUAL(count(one, &b, "SELECT count(*) FROM agents"), 1);
        CU_ASSERT_EQUAL(count(one, &c, "SELECT count(*) FROM agents"), 0);
    }
    /* A setting changed inside a transaction that rolls back reverts in PostgreSQL; the cache
     * must not believe it is still set. */
    az_pgconn *conn;
    CU_ASSERT_EQUAL_FATAL(az_pg_acquire(one, &a, &conn, msg), AZ_OK);
    CU_ASSERT_EQUAL(az_pg_begin(conn, &a, msg), AZ_OK);
    CU_ASSERT_EQUAL(count_on(conn, &a, "SELECT count(*) FROM agents"), 2);
    CU_ASSERT_EQUAL(count_on(conn, &b, "SELECT count(*) FROM agents"), 1); /* set inside the tx */
    az_pg_rollback(conn);                                                   /* reverts to A */
    CU_ASSERT_EQUAL(count_on(conn, &b, "SELECT count(*) FROM agents"), 1);
    /* The same through a failed statement, and through release's rollback. */
    CU_ASSERT_EQUAL(az_pg_begin(conn, &b, msg), AZ_OK);
    CU_ASSERT_EQUAL(count_on(conn, &a, "SELECT count(*) FROM agents"), 2);
    CU_ASSERT_NOT_EQUAL(az_pg_exec(conn, &a, "SELEC 1", 0, NULL, NULL, msg), AZ_OK);
    az_pg_release(conn);
    CU_ASSERT_EQUAL(count(one, &a, "SELECT count(*) FROM agents"), 2);
    CU_ASSERT_EQUAL(count(one, &b, "SELECT count(*) FROM agents"), 1);
    /* ROLLBACK TO SAVEPOINT reverts too. */
    CU_ASSERT_EQUAL_FATAL(az_pg_acquire(one, &a, &conn, msg), AZ_OK);
    CU_ASSERT_EQUAL(az_pg_begin(conn, &a, msg), AZ_OK);
    CU_ASSERT_EQUAL(az_pg_exec(conn, &a, "SAVEPOINT s", 0, NULL, NULL, msg), AZ_OK);
    CU_ASSERT_EQUAL(count_on(conn, &b, "SELECT count(*) FROM agents"), 1);
    CU_ASSERT_EQUAL(az_pg_exec(conn, &b, "ROLLBACK TO SAVEPOINT s", 0, NULL, NULL, msg), AZ_OK);
    CU_ASSERT_EQUAL(count_on(conn, &b, "SELECT count(*) FROM agents"), 1);
    CU_ASSERT_EQUAL(az_pg_commit(conn, &b, msg), AZ_OK);
    CU_ASSERT_EQUAL(count_on(conn, &b, "SELECT count(*) FROM agents"), 1);
    CU_ASSERT_EQUAL(count_on(conn, &a, "SELECT count(*) FROM agents"), 2);
    /* A committed change sticks, and the next statement still matches its ctx. */
    CU_ASSERT_EQUAL(az_pg_begin(conn, &a, msg), AZ_OK);
    CU_ASSERT_EQUAL(count_on(conn, &b, "SELECT count(*) FROM agents"), 1);
    CU_ASSERT_EQUAL(az_pg_commit(conn, &b, msg), AZ_OK);
    CU_ASSERT_EQUAL(count_on(conn, &a, "SELECT count(*) FROM agents"), 2);
    az_pg_release(conn);
}

static void test_raw_and_reconnected_sessions_fail_closed(void)
{
    /* A session that never ran az_pg_exec sees nothing through the raw connection. */
    az_pg *p = migrated_pool(az_embed_database_url(embed), 1, "agentz_app");
    CU_ASSERT_PTR_NOT_NULL_FATAL(p);
    az_pgconn *c;
    CU_ASSERT_EQUAL_FATAL(az_pg_acquire(p, &SYSTEM, &c, msg), AZ_OK);
    PGresult *r = PQexec(az_pg_raw(c), "SELECT count(*), current_user FROM agents");
    CU_ASSERT_EQUAL(PQresultStatus(r), PGRES_TUPLES_OK);
    if (PQresultStatus(r) == PGRES_TUPLES_OK) {
        CU_ASSERT_STRING_EQUAL(PQgetvalue(r, 0, 0), "0");
        CU_ASSERT_STRING_EQUAL(PQgetvalue(r, 0, 1), "agentz_app");
    }
    PQclear(r);
    /* Kill the session: the reconnect switches role again and the cache starts over. */
    az_ctx a = ws_ctx(WS_A);
    CU_ASSERT_EQUAL(count_on(c, &a, "SELECT count(*) FROM agents"), 2);
    long pid = count_on(c, &a, "SELECT pg_backend_pid()");
    az_pg_release(c);
    char sql[96];
    /* pg_terminate_backend needs the owner's rights: use a pool that never switched role. */
    az_pg *owner = NULL;
    CU_ASSERT_EQUAL_FATAL(az_pg_new(az_embed_database_url(embed), 1, 5000, &owner, msg), AZ_OK);
    snprintf(sql, sizeof sql, "SELECT pg_terminate_backend(%ld)::int", pid);
    CU_ASSERT_EQUAL(count(owner, &SYSTEM, sql), 1);
    /* The owner's pool (no SET ROLE, superuser) is not subject to RLS: why the server switches. */
    CU_ASSERT(count(owner, &a, "SELECT count(DISTINCT workspace_id) FROM agents") == 2);
    az_pg_free(owner);
    usleep(200 * 1000);
    az_ctx b = ws_ctx(WS_B);
    CU_ASSERT_EQUAL(count(p, &b, "SELECT count(*) FROM agents"), 1);
    CU_ASSERT_EQUAL(count(p, &a, "SELECT count(*) FROM agents"), 2);
    CU_ASSERT_EQUAL(count(p, &a, "SELECT count(*) FROM pg_roles WHERE rolname = current_user"
                                 " AND rolname = 'agentz_app'"), 1);
    /* set_role refuses while a connection is borrowed. */
    CU_ASSERT_EQUAL_FATAL(az_pg_acquire(p, &SYSTEM, &c, msg), AZ_OK);
    CU_ASSERT_EQUAL(az_pg_set_role(p, "agentz_app", msg), AZ_ERR_PRECONDITION);
    az_pg_release(c);
    az_pg_free(p);
}

static void test_non_superuser_owner(void)
{
    /* An external database: the login role owns the schema but is no superuser. It may create
     * roles (to grant itself agentz_app); the role exists already from the cluster's other
     * database, so the migration only grants membership. */
    az_pg *admin = NULL;
    CU_ASSERT_EQUAL_FATAL(az_pg_new(az_embed_database_url(embed), 1, 5000, &admin, msg), AZ_OK);
    static const char *setup[] = {
        "DROP DATABASE IF EXISTS rls_ext",
        "DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'rls_owner') THEN"
        " CREATE ROLE rls_owner LOGIN NOSUPERUSER CREATEROLE; END IF; END $$",
        "CREATE DATABASE rls_ext OWNER rls_owner",
    };
    az_pgconn *c;
    CU_ASSERT_EQUAL_FATAL(az_pg_acquire(admin, &SYSTEM, &c, msg), AZ_OK);
    for (size_t i = 0; i < sizeof setup / sizeof *setup; i++) {
        PGresult *r = PQexec(az_pg_raw(c), setup[i]);
        if (PQresultStatus(r) != PGRES_COMMAND_OK) fprintf(stderr, "\n  %s: %s", setup[i], PQresultErrorMessage(r));
        CU_ASSERT_EQUAL(PQresultStatus(r), PGRES_COMMAND_OK);
        PQclear(r);
    }
    az_pg_release(c);
    az_pg_free(admin);
    char url[512];
    url_for("rls_ext", "rls_owner", url, sizeof url);
    az_pg *ext = migrated_pool(url, 2, "agentz_app");
    CU_ASSERT_PTR_NOT_NULL_FATAL(ext);
    /* A second replica starting later migrates (nothing to do) and switches role too. */
    az_pg *again = migrated_pool(url, 1, "agentz_app");
    CU_ASSERT_PTR_NOT_NULL(again);
    az_pg_free(again);
    CU_ASSERT_EQUAL(run(ext, &SYSTEM, "INSERT INTO workspaces (id, name) VALUES ('" WS_A "', 'a'),"
                                      " ('" WS_B "', 'b')", 0, NULL, NULL), AZ_OK);
    const char *p[1] = {WS_A};
    az_ctx a = ws_ctx(WS_A), b = ws_ctx(WS_B);
    CU_ASSERT_EQUAL(run(ext, &a, "INSERT INTO agents (workspace_id, role, goal, backstory)"
                                 " VALUES ($1, 'r', 'g', 'b')", 1, p, NULL), AZ_OK);
    CU_ASSERT_EQUAL(count(ext, &a, "SELECT count(*) FROM agents"), 1);
    CU_ASSERT_EQUAL(count(ext, &b, "SELECT count(*) FROM agents"), 0);
    az_pg_free(ext);
    /* FORCE binds the owner itself, without SET ROLE, unless it does system work. */
    az_pg *own = NULL;
    CU_ASSERT_EQUAL_FATAL(az_pg_new(url, 1, 5000, &own, msg), AZ_OK);
    CU_ASSERT_EQUAL(count(own, &b, "SELECT count(*) FROM agents"), 0);
    CU_ASSERT_EQUAL(count(own, &SYSTEM, "SELECT count(*) FROM agents"), 1);
    az_pg_free(own);
}

int main(void)
{
    if (CU_initialize_registry() != CUE_SUCCESS) return 1;
    CU_pSuite s = CU_add_suite("rls", suite_init, suite_clean);
    CU_add_test(s, "every workspace table under a forced policy", test_every_workspace_table_forced);
    CU_add_test(s, "a workspace sees only its rows", test_select_sees_own_workspace);
    CU_add_test(s, "system work sees every row", test_system_sees_all);
    CU_add_test(s, "no changes to another workspace", test_cannot_modify_other_workspace);
    CU_add_test(s, "cached settings never leak across borrowers",
                test_cache_does_not_leak_across_borrowers);
    CU_add_test(s, "raw and reconnected sessions fail closed",
                test_raw_and_reconnected_sessions_fail_closed);
    CU_add_test(s, "non-superuser owner of an external database", test_non_superuser_owner);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    unsigned failures = CU_get_number_of_failures();
    int err = CU_get_error();
    CU_cleanup_registry();
    return failures || err ? 1 : 0;
}
