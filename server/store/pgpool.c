/* Fixed-size libpq pool: mutex + condvar, one PGconn per borrower, lazy reconnects. The
 * statement timeout and the row-level-security tenant (agentz.workspace_id / agentz.system) are
 * adjusted per statement only when the caller's deadline or workspace calls for it. */
#include "pgpool.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "../core/log.h"
#include "../system/prom.h"

#define DEFAULT_TIMEOUT_MS 30000 /* statements of callers without a deadline */
#define POOL_WAIT_MS 5000
#define TIMEOUT_SLACK_MS 100 /* a statement may outlive its deadline by this rather than re-SET */

/* The session's tenant settings as last set. Unknown after a reconnect, and after a
 * transaction in which they changed ends: a rolled-back SET reverts, so the cache cannot tell. */
typedef struct tenant {
    int known;
    int system;       /* agentz.system = 'on' */
    char ws[64];      /* agentz.workspace_id */
    int changed_in_tx; /* set (or the timeout) changed inside an open transaction */
} tenant;

struct az_pgconn {
    az_pg *pool;
    PGconn *conn;
    int busy;
    int64_t timeout_ms; /* the session's statement_timeout as last set; -1 = unknown */
    tenant t;
    PGcancel *cancel;
};

struct az_pg {
    char *conninfo;
    char *role; /* SET ROLE after connecting (az_pg_set_role); NULL = the login role */
    az_pgconn *conns;
    int size;
    pthread_mutex_t mu;
    pthread_cond_t cv;
};

static void notice_quiet(void *arg, const char *message) { (void)arg, (void)message; }

/* Runs sql (simple protocol) on a session being set up; on failure fills msg and returns 0. */
static int setup(PGconn *conn, const char *sql, const char *what, char *msg)
{
    PGresult *r = PQexec(conn, sql);
    int ok = PQresultStatus(r) == PGRES_COMMAND_OK || PQresultStatus(r) == PGRES_TUPLES_OK;
    if (!ok) {
        const char *e = PQresultErrorMessage(r);
        az_fail(msg, AZ_ERR_UNAVAILABLE, "cannot %s: %.*s", what, (int)strcspn(e, "\n"), e);
    }
    PQclear(r);
    return ok;
}

/* Switches conn to role and resets the tenant to "nothing visible", so a statement that
 * bypasses az_pg_exec (az_pg_raw) fails closed instead of inheriting a workspace. */
static int enter_role(PGconn *conn, const char *role, char *msg)
{
    char *ident = PQescapeIdentifier(conn, role, strlen(role));
    if (!ident) {
        az_fail(msg, AZ_ERR_UNAVAILABLE, "cannot quote role %s: %s", role, PQerrorMessage(conn));
        return 0;
    }
    char sql[400];
    snprintf(sql, sizeof sql,
             "SET ROLE %s; SET agentz.system = 'off'; SET agentz.workspace_id = ''", ident);
    PQfreemem(ident);
    char what[200];
    snprintf(what, sizeof what, "switch to role %s", role);
    return setup(conn, sql, what, msg);
}

static PGconn *connect_one(const char *conninfo, const char *role, char *msg)
{
    PGconn *conn = PQconnectdb(conninfo);
    if (PQstatus(conn) != CONNECTION_OK) {
        const char *e = PQerrorMessage(conn);
        az_fail(msg, AZ_ERR_UNAVAILABLE, "cannot connect to postgresql: %.*s",
                (int)strcspn(e, "\n"), e);
        PQfinish(conn);
        return NULL;
    }
    PQsetNoticeProcessor(conn, notice_quiet, NULL);
    /* Until the pool switches role, sessions are the owner's: migrations and other raw
     * statements are system work (agentz.system lets them past FORCE ROW LEVEL SECURITY when
     * the owner is not a superuser). */
    char sql[128];
    snprintf(sql, sizeof sql,
             "SET statement_timeout = %d; SET TIME ZONE 'UTC'; SET agentz.system = 'on'",
             DEFAULT_TIMEOUT_MS);
    if (!setup(conn, sql, "configure postgresql session", msg) ||
        (role && !enter_role(conn, role, msg))) {
        PQfinish(conn);
        return NULL;
    }
    return conn;
}

az_err az_pg_new(const char *conninfo, int size, int wait_ms, az_pg **out, char *msg)
{
    *out = NULL;
    if (size <= 0) size = 8;
    az_pg *p = calloc(1, sizeof *p);
    if (!p) return az_fail(msg, AZ_ERR_NOMEM, "out of memory");
    p->conninfo = strdup(conninfo);
    p->conns = calloc((size_t)size, sizeof *p->conns);
    if (!p->conninfo || !p->conns) {
        free(p->conninfo);
        free(p->conns);
        free(p);
        return az_fail(msg, AZ_ERR_NOMEM, "out of memory");
    }
    p->size = size;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    int64_t until = az_now_ms() + (wait_ms > 0 ? wait_ms : 0);
    for (int i = 0; i < size; i++) {
        p->conns[i].pool = p;
        p->conns[i].timeout_ms = DEFAULT_TIMEOUT_MS;
        for (;;) {
            p->conns[i].conn = connect_one(conninfo, NULL, msg);
            if (p->conns[i].conn) break;
            if (az_now_ms() >= until) {
                az_pg_free(p);
                return AZ_ERR_UNAVAILABLE;
            }
            usleep(200 * 1000);
        }
    }
    *out = p;
    return AZ_OK;
}

void az_pg_free(az_pg *p)
{
    if (!p) return;
    for (int i = 0; i < p->size; i++) {
        if (p->conns[i].conn) PQfinish(p->conns[i].conn);
    }
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->cv);
    free(p->conns);
    free(p->conninfo);
    free(p->role);
    free(p);
}

az_err az_pg_set_role(az_pg *p, const char *role, char *msg)
{
    if (!role || !*role) return az_fail(msg, AZ_ERR_INVALID, "database role is empty");
    char *copy = strdup(role);
    if (!copy) return az_fail(msg, AZ_ERR_NOMEM, "out of memory");
    pthread_mutex_lock(&p->mu);
    for (int i = 0; i < p->size; i++) {
        if (p->conns[i].busy) {
            pthread_mutex_unlock(&p->mu);
            free(copy);
            return az_fail(msg, AZ_ERR_PRECONDITION,
                           "cannot switch database role while connections are borrowed");
        }
    }
    free(p->role);
    p->role = copy;
    az_err err = AZ_OK;
    for (int i = 0; i < p->size && err == AZ_OK; i++) {
        az_pgconn *c = &p->conns[i];
        c->t.known = 0;
        /* A dead connection gets the role when az_pg_acquire reconnects it. */
        if (!c->conn || PQstatus(c->conn) != CONNECTION_OK) continue;
        if (!enter_role(c->conn, role, msg)) err = AZ_ERR_UNAVAILABLE;
    }
    pthread_mutex_unlock(&p->mu);
    return err;
}

/* 1 when conn can take a statement. An idle connection has nothing to read, so a readable
 * socket means the server sent a FATAL (pg_terminate_backend, restart, idle timeout) or closed
 * it, which libpq would only notice by failing the next statement. */
static int usable(PGconn *conn)
{
    if (!conn || PQstatus(conn) != CONNECTION_OK) return 0;
    struct pollfd pfd = {.fd = PQsocket(conn), .events = POLLIN};
    return poll(&pfd, 1, 0) == 0;
}

az_err az_pg_acquire(az_pg *p, const az_ctx *ctx, az_pgconn **out, char *msg)
{
    *out = NULL;
    int64_t left = az_ctx_remaining_ms(ctx);
    if (left == 0) return az_fail(msg, AZ_ERR_DEADLINE, "deadline exceeded before the query ran");
    if (left < 0 || left > POOL_WAIT_MS) left = POOL_WAIT_MS;
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += left / 1000;
    until.tv_nsec += (left % 1000) * 1000000L;
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    az_pgconn *c = NULL;
    struct timespec t0, t1; /* the wait, for agentz_pg_pool_wait_seconds */
    clock_gettime(CLOCK_MONOTONIC, &t0);
    pthread_mutex_lock(&p->mu);
    for (;;) {
        for (int i = 0; i < p->size && !c; i++) {
            if (!p->conns[i].busy) c = &p->conns[i];
        }
        if (c) break;
        if (pthread_cond_timedwait(&p->cv, &p->mu, &until) == ETIMEDOUT) break;
    }
    if (c) c->busy = 1;
    pthread_mutex_unlock(&p->mu);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    az_prom_pg_wait((int64_t)(t1.tv_sec - t0.tv_sec) * 1000000 + (t1.tv_nsec - t0.tv_nsec) / 1000);
    if (!c)
        return az_fail(msg, AZ_ERR_UNAVAILABLE,
                       "no database connection free within %lld ms (pool of %d)", (long long)left,
                       p->size);
    if (!usable(c->conn)) {
        if (c->conn) PQfinish(c->conn);
        c->conn = connect_one(p->conninfo, p->role, msg);
        c->timeout_ms = DEFAULT_TIMEOUT_MS;
        c->t.known = 0;
        c->t.changed_in_tx = 0;
        if (!c->conn) {
            pthread_mutex_lock(&p->mu);
            c->busy = 0;
            pthread_cond_signal(&p->cv);
            pthread_mutex_unlock(&p->mu);
            return AZ_ERR_UNAVAILABLE;
        }
    }
    *out = c;
    return AZ_OK;
}

void az_pg_release(az_pgconn *c)
{
    if (!c) return;
    az_pg *p = c->pool;
    if (c->conn && PQtransactionStatus(c->conn) != PQTRANS_IDLE) az_pg_rollback(c);
    pthread_mutex_lock(&p->mu);
    c->busy = 0;
    pthread_cond_signal(&p->cv);
    pthread_mutex_unlock(&p->mu);
}

PGconn *az_pg_raw(az_pgconn *c) { return c->conn; }

static void cancel_statement(void *arg)
{
    az_pgconn *c = arg;
    char buf[256];
    if (c->cancel && !PQcancel(c->cancel, buf, sizeof buf))
        az_warn("cannot cancel postgresql statement: %s", buf);
}

static az_err map_error(az_pgconn *c, const az_ctx *ctx, PGresult *r, char *msg);

/* Lowers (or restores) the session's statement_timeout so a statement cannot outlive its
 * caller. Skipped when the current value is already close: most callers use similar
 * deadlines, and the SET costs a round trip. */
static az_err fit_timeout(az_pgconn *c, const az_ctx *ctx, char *msg)
{
    int64_t left = az_ctx_remaining_ms(ctx);
    if (left == 0) return az_fail(msg, AZ_ERR_DEADLINE, "deadline exceeded before the query ran");
    int64_t want = left < 0 || left > DEFAULT_TIMEOUT_MS ? DEFAULT_TIMEOUT_MS : left;
    /* A deadline shrinks by a millisecond or so between the statements of one call: tolerate
     * that instead of paying a SET each time (the cancel hook still fires at the deadline). */
    if (c->timeout_ms >= 0 && c->timeout_ms <= want + TIMEOUT_SLACK_MS && c->timeout_ms >= want * 4 / 5)
        return AZ_OK;
    /* In a failed transaction only ROLLBACK (TO SAVEPOINT) can run; a SET would fail too. */
    if (PQtransactionStatus(c->conn) == PQTRANS_INERROR) return AZ_OK;
    char sql[64];
    snprintf(sql, sizeof sql, "SET statement_timeout = %lld", (long long)(want > 0 ? want : 1));
    PGresult *r = PQexec(c->conn, sql);
    int ok = PQresultStatus(r) == PGRES_COMMAND_OK;
    PQclear(r);
    if (!ok) return az_fail(msg, AZ_ERR_UNAVAILABLE, "cannot set statement timeout: %s",
                            PQerrorMessage(c->conn));
    c->timeout_ms = want;
    if (PQtransactionStatus(c->conn) != PQTRANS_IDLE) c->t.changed_in_tx = 1;
    return AZ_OK;
}

/* Makes the session's row-level-security settings match ctx: its workspace, or system work
 * (every workspace) when ctx has none. The round trip happens only when they change. */
static az_err fit_tenant(az_pgconn *c, const az_ctx *ctx, char *msg)
{
    int system = !ctx || !ctx->workspace_id || !ctx->workspace_id[0];
    tenant *t = &c->t;
    if (t->known && t->system == system && (system || strcmp(t->ws, ctx->workspace_id) == 0))
        return AZ_OK;
    /* Only ROLLBACK runs in a failed transaction, and it reads no rows. */
    if (PQtransactionStatus(c->conn) == PQTRANS_INERROR) return AZ_OK;
    /* System work keeps the workspace as it is: the policy ignores it then, and the next
     * caller of that workspace saves a round trip. */
    const char *ws = system ? (t->known ? t->ws : "") : ctx->workspace_id;
    const char *params[2] = {ws, system ? "on" : "off"};
    PGresult *r = PQexecParams(c->conn,
                               "SELECT set_config('agentz.workspace_id', $1, false),"
                               " set_config('agentz.system', $2, false)",
                               2, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        t->known = 0;
        az_err err = map_error(c, ctx, r, msg);
        PQclear(r);
        return err;
    }
    PQclear(r);
    size_t len = strlen(ws);
    t->known = len < sizeof t->ws; /* longer than any uuid: set every time */
    if (t->known) memcpy(t->ws, ws, len + 1);
    t->system = system;
    if (PQtransactionStatus(c->conn) != PQTRANS_IDLE) t->changed_in_tx = 1;
    return AZ_OK;
}

/* After a statement: a transaction in which the settings changed has ended (or rolled back
 * to a savepoint), so they may have reverted; forget them. */
static void settle(az_pgconn *c, PGresult *r)
{
    if (!c->t.changed_in_tx) return;
    const char *tag = r ? PQcmdStatus(r) : NULL;
    if (PQtransactionStatus(c->conn) == PQTRANS_IDLE || (tag && strncmp(tag, "ROLLBACK", 8) == 0)) {
        c->t.known = 0;
        c->timeout_ms = -1;
        c->t.changed_in_tx = PQtransactionStatus(c->conn) != PQTRANS_IDLE;
    }
}

static az_err map_error(az_pgconn *c, const az_ctx *ctx, PGresult *r, char *msg)
{
    const char *state = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
    const char *text = r ? PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY) : NULL;
    if (!text) text = PQerrorMessage(c->conn);
    az_err e = AZ_ERR_INTERNAL;
    if (PQstatus(c->conn) != CONNECTION_OK || !state || strncmp(state, "08", 2) == 0) {
        e = AZ_ERR_UNAVAILABLE;
    } else if (strcmp(state, "23505") == 0) {
        e = AZ_ERR_EXISTS;
    } else if (strcmp(state, "40001") == 0 || strcmp(state, "40P01") == 0) {
        e = AZ_ERR_ABORTED;
    } else if (strcmp(state, "23514") == 0 || strcmp(state, "23503") == 0 ||
               strcmp(state, "23502") == 0) {
        e = AZ_ERR_PRECONDITION;
    } else if (strcmp(state, "57014") == 0) {
        /* Cancelled by us (caller gone) or by statement_timeout (deadline). */
        e = az_ctx_remaining_ms(ctx) == 0 || !ctx || ctx->deadline_ms < 0 ? AZ_ERR_DEADLINE
                                                                           : AZ_ERR_CANCELLED;
    } else if (strcmp(state, "22P02") == 0 || strncmp(state, "22", 2) == 0) {
        e = AZ_ERR_INVALID;
    } else if (strcmp(state, "57P01") == 0 || strcmp(state, "57P03") == 0) {
        e = AZ_ERR_UNAVAILABLE;
    }
    if (e == AZ_ERR_INTERNAL || e == AZ_ERR_UNAVAILABLE)
        az_error("postgresql statement failed: sqlstate=%s %.*s", state ? state : "-",
                 (int)strcspn(text, "\n"), text);
    return az_fail(msg, e, "database: %.*s", (int)strcspn(text, "\n"), text);
}

az_err az_pg_exec(az_pgconn *c, const az_ctx *ctx, const char *sql, int nparams,
                  const char *const *params, PGresult **res, char *msg)
{
    if (res) *res = NULL;
    az_err err = fit_timeout(c, ctx, msg);
    if (err == AZ_OK) err = fit_tenant(c, ctx, msg);
    if (err != AZ_OK) {
        settle(c, NULL);
        return err;
    }
    int cancellable = ctx && ctx->set_cancel;
    if (cancellable) {
        c->cancel = PQgetCancel(c->conn);
        ctx->set_cancel(ctx->owner, cancel_statement, c);
    }
    PGresult *r = PQexecParams(c->conn, sql, nparams, NULL, params, NULL, NULL, 0);
    if (cancellable) {
        ctx->set_cancel(ctx->owner, NULL, NULL);
        PQfreeCancel(c->cancel);
        c->cancel = NULL;
    }
    settle(c, r);
    ExecStatusType st = PQresultStatus(r);
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
        err = map_error(c, ctx, r, msg);
        PQclear(r);
        return err;
    }
    if (res) *res = r;
    else PQclear(r);
    return AZ_OK;
}

az_err az_pg_begin(az_pgconn *c, const az_ctx *ctx, char *msg)
{
    return az_pg_exec(c, ctx, "BEGIN", 0, NULL, NULL, msg);
}

az_err az_pg_commit(az_pgconn *c, const az_ctx *ctx, char *msg)
{
    return az_pg_exec(c, ctx, "COMMIT", 0, NULL, NULL, msg);
}

void az_pg_rollback(az_pgconn *c)
{
    PGresult *r = PQexec(c->conn, "ROLLBACK");
    settle(c, r);
    PQclear(r);
}

az_err az_pg_ping(az_pg *p, char *msg)
{
    az_ctx ctx = {.deadline_ms = az_now_ms() + 2000};
    az_pgconn *c;
    az_err err = az_pg_acquire(p, &ctx, &c, msg);
    if (err != AZ_OK) return err;
    err = az_pg_exec(c, &ctx, "SELECT 1", 0, NULL, NULL, msg);
    az_pg_release(c);
    return err;
}

void az_pg_stats(az_pg *p, az_pg_stats_t *out)
{
    *out = (az_pg_stats_t){0};
    if (!p) return;
    pthread_mutex_lock(&p->mu);
    out->size = p->size;
    for (int i = 0; i < p->size; i++) out->busy += p->conns[i].busy != 0;
    pthread_mutex_unlock(&p->mu);
}
