/* Schema migrations: a schema_migrations table, a session advisory lock, one transaction per
 * migration. Migration text runs through the simple-query protocol (several statements). */
#include "migrate.h"

#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../core/log.h"
#include "pgpool.h"

/* An arbitrary constant: "agentz" in ASCII, the key of our advisory lock. */
#define LOCK_KEY "107097919101"

static az_err run(PGconn *conn, const char *sql, char *msg, const char *what)
{
    PGresult *r = PQexec(conn, sql);
    ExecStatusType st = PQresultStatus(r);
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
        const char *e = PQresultErrorMessage(r);
        az_fail(msg, AZ_ERR_INTERNAL, "cannot %s: %.*s", what, (int)strcspn(e, "\n"), e);
        PQclear(r);
        return AZ_ERR_INTERNAL;
    }
    PQclear(r);
    return AZ_OK;
}

static az_err current_version(PGconn *conn, int *version, char *msg)
{
    /* A database never migrated has no schema_migrations table: that is version 0. */
    PGresult *r = PQexec(conn, "SELECT to_regclass('schema_migrations') IS NOT NULL");
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        az_fail(msg, AZ_ERR_INTERNAL, "cannot read schema version: %s", PQresultErrorMessage(r));
        PQclear(r);
        return AZ_ERR_INTERNAL;
    }
    int exists = strcmp(PQgetvalue(r, 0, 0), "t") == 0;
    PQclear(r);
    if (!exists) {
        *version = 0;
        return AZ_OK;
    }
    r = PQexec(conn, "SELECT coalesce(max(version), 0) FROM schema_migrations");
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        az_fail(msg, AZ_ERR_INTERNAL, "cannot read schema version: %s", PQresultErrorMessage(r));
        PQclear(r);
        return AZ_ERR_INTERNAL;
    }
    *version = atoi(PQgetvalue(r, 0, 0));
    PQclear(r);
    return AZ_OK;
}

static az_err apply_all(PGconn *conn, const az_migration *list, size_t n, int *applied, char *msg)
{
    az_err err = run(conn,
                     "CREATE TABLE IF NOT EXISTS schema_migrations ("
                     " version integer PRIMARY KEY, name text NOT NULL,"
                     " applied_at timestamptz NOT NULL DEFAULT now())",
                     msg, "create schema_migrations");
    if (err != AZ_OK) return err;
    int have;
    if ((err = current_version(conn, &have, msg)) != AZ_OK) return err;
    if (n > 0 && have > list[n - 1].version)
        az_warn("database schema version %d is newer than this binary's %d: running anyway", have,
                list[n - 1].version);
    for (size_t i = 0; i < n; i++) {
        if (list[i].version <= have) continue;
        char what[160];
        snprintf(what, sizeof what, "apply migration %s", list[i].name);
        if ((err = run(conn, "BEGIN", msg, what)) != AZ_OK) return err;
        if ((err = run(conn, list[i].sql, msg, what)) != AZ_OK) {
            run(conn, "ROLLBACK", NULL, "roll back");
            return err;
        }
        char ver[16];
        snprintf(ver, sizeof ver, "%d", list[i].version);
        const char *params[2] = {ver, list[i].name};
        PGresult *r = PQexecParams(conn,
                                   "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                                   2, NULL, params, NULL, NULL, 0);
        int ok = PQresultStatus(r) == PGRES_COMMAND_OK;
        PQclear(r);
        if (!ok || (err = run(conn, "COMMIT", msg, what)) != AZ_OK) {
            run(conn, "ROLLBACK", NULL, "roll back");
            return err != AZ_OK ? err : az_fail(msg, AZ_ERR_INTERNAL, "cannot record %s", list[i].name);
        }
        az_info("applied migration %s", list[i].name);
        if (applied) (*applied)++;
    }
    return AZ_OK;
}

az_err az_migrate(az_pg *pg, const az_migration *list, size_t n, int *applied, char *msg)
{
    if (applied) *applied = 0;
    az_pgconn *c;
    az_ctx ctx = {.deadline_ms = -1};
    az_err err = az_pg_acquire(pg, &ctx, &c, msg);
    if (err != AZ_OK) return err;
    PGconn *conn = az_pg_raw(c);
    /* Migrations may take longer than an API statement. */
    run(conn, "SET statement_timeout = 0", NULL, "");
    if ((err = run(conn, "SELECT pg_advisory_lock(" LOCK_KEY ")", msg, "take migration lock")) ==
        AZ_OK) {
        err = apply_all(conn, list, n, applied, msg);
        run(conn, "SELECT pg_advisory_unlock(" LOCK_KEY ")", NULL, "release migration lock");
    }
    run(conn, "SET statement_timeout = 30000", NULL, "");
    az_pg_release(c);
    return err;
}

az_err az_migrate_version(az_pg *pg, int *version, char *msg)
{
    az_pgconn *c;
    az_ctx ctx = {.deadline_ms = -1};
    az_err err = az_pg_acquire(pg, &ctx, &c, msg);
    if (err != AZ_OK) return err;
    err = current_version(az_pg_raw(c), version, msg);
    az_pg_release(c);
    return err;
}
