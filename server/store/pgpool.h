/* A fixed pool of PostgreSQL connections with deadline-aware, cancellable statements. */
#ifndef AZ_PGPOOL_H
#define AZ_PGPOOL_H

#include <libpq-fe.h>

#include "../core/ctx.h"
#include "../core/err.h"

typedef struct az_pg az_pg;         /* the pool */
typedef struct az_pgconn az_pgconn; /* one borrowed connection */

/* Opens size connections to conninfo (a libpq URL or key=value string), retrying for up to
 * wait_ms while the server starts. On error returns NULL-out, msg says why, nothing leaks. */
az_err az_pg_new(const char *conninfo, int size, int wait_ms, az_pg **out, char *msg);

/* Switches every pooled connection (and every later reconnect) to role with SET ROLE, so
 * row-level security applies even when the login role is a superuser or the tables' owner.
 * Call once after az_migrate (migrations need the owner) while no connection is borrowed:
 * AZ_ERR_PRECONDITION otherwise. role is copied. AZ_ERR_UNAVAILABLE (msg from PostgreSQL,
 * e.g. the login role is not a member of role) leaves the pool unusable: free it. */
az_err az_pg_set_role(az_pg *p, const char *role, char *msg);

/* Closes every connection; all must have been released. Accepts NULL. */
void az_pg_free(az_pg *p);

/* Borrows a connection, waiting until ctx's deadline (at most 5 s without one). A broken
 * connection is re-established first. AZ_ERR_UNAVAILABLE when none can be had. Release with
 * az_pg_release, which rolls back any open transaction. */
az_err az_pg_acquire(az_pg *p, const az_ctx *ctx, az_pgconn **out, char *msg);
void az_pg_release(az_pgconn *c);

/* Runs one parameterized statement (text parameters, NULL = SQL NULL). The statement timeout
 * follows ctx's deadline and the statement is cancelled if the caller goes away. Row-level
 * security sees the session's agentz.workspace_id = ctx->workspace_id, or agentz.system = 'on'
 * (every workspace) when ctx, its workspace_id, or *workspace_id is NULL/empty: system work
 * (migrations, reconciler, janitor, cross-workspace lookups). Both are set only when they differ
 * from the connection's last statement, so every borrower gets its own. On AZ_OK
 * *res holds a result the caller frees with PQclear (res may be NULL to discard it). Errors
 * map SQLSTATEs: unique violation AZ_ERR_EXISTS, serialization/deadlock AZ_ERR_ABORTED,
 * cancel AZ_ERR_CANCELLED or AZ_ERR_DEADLINE, connection loss AZ_ERR_UNAVAILABLE, check and
 * foreign-key violations AZ_ERR_PRECONDITION; msg carries the server's text. */
az_err az_pg_exec(az_pgconn *c, const az_ctx *ctx, const char *sql, int nparams,
                  const char *const *params, PGresult **res, char *msg);

/* Queues a statement of c's open transaction whose result nobody reads (an outbox append,
 * an attempt row), to be sent in the round trip of the transaction's next statement or its
 * COMMIT: its failure is that statement's failure (the transaction is lost either way). sql
 * must be static text; params are copied. Outside a transaction, or when the queue (4) is
 * full, it runs at once like az_pg_exec. AZ_ERR_NOMEM queues nothing. */
az_err az_pg_defer(az_pgconn *c, const az_ctx *ctx, const char *sql, int nparams,
                   const char *const *params, char *msg);

/* Sends sql (static text, no parameters; a pg_notify) right after the COMMIT of c's open
 * transaction, in the COMMIT's round trip, as a transaction of its own; dropped if the
 * transaction rolls back. One per transaction (the last call wins). A failure is logged, never
 * returned: the commit stands. Outside a transaction it runs at once. */
void az_pg_after_commit(az_pgconn *c, const az_ctx *ctx, const char *sql);

/* BEGIN / COMMIT / ROLLBACK on c. BEGIN is sent with the transaction's first statement, so
 * it costs no round trip of its own; a transaction in which nothing ran commits for free. */
az_err az_pg_begin(az_pgconn *c, const az_ctx *ctx, char *msg);
az_err az_pg_commit(az_pgconn *c, const az_ctx *ctx, char *msg);
void az_pg_rollback(az_pgconn *c);

/* The raw connection, for code that must speak libpq directly (migrations). Statements sent
 * on it skip the tenant settings: before az_pg_set_role they run as system work, after it
 * with whatever the connection's last az_pg_exec left (or nothing visible on a fresh one). */
PGconn *az_pg_raw(az_pgconn *c);

/* Health check: a connection answers SELECT 1 within 2 s. */
az_err az_pg_ping(az_pg *p, char *msg);

/* The pool's use now, for metrics: connections in all and borrowed ones. A NULL p gives zeros. */
typedef struct az_pg_stats_t {
    int size, busy;
} az_pg_stats_t;
void az_pg_stats(az_pg *p, az_pg_stats_t *out);

#endif
