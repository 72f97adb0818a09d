/* Fixed-size libpq pool: mutex + condvar, one PGconn per borrower, lazy reconnects. Each
 * statement is one pipelined round trip: a deferred BEGIN, the session settings (statement
 * timeout, row-level-security tenant) when they must change, and the statement itself, prepared
 * once per connection and executed by name after that. */
#include "pgpool.h"

#include <errno.h>
#include <stdint.h>
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
/* Prepared statements per connection: an open-addressing table of STMT_SLOTS, at most STMT_MAX
 * used (later texts run unnamed), so a caller building SQL text at run time cannot grow it. */
#define STMT_SLOTS 512
#define STMT_MAX 256

/* The session's tenant settings as last set. Unknown after a reconnect, and after a
 * transaction in which they changed ends: a rolled-back SET reverts, so the cache cannot tell. */
typedef struct tenant {
    int known;
    int system;       /* agentz.system = 'on' */
    char ws[64];      /* agentz.workspace_id */
    int changed_in_tx; /* set (or the timeout) changed inside an open transaction */
} tenant;

/* Statements of an open transaction whose results nobody reads (az_pg_defer), held until the
 * next statement's round trip; more than this many run at once. */
#define DEFER_MAX 4
#define DEFER_PARAMS 8

typedef struct deferred {
    const char *sql; /* static text */
    int nparams;
    char *params[DEFER_PARAMS]; /* copies; NULL = SQL NULL */
} deferred;

/* A statement prepared on a connection as "azs<slot>". */
typedef struct stmt {
    uint64_t hash; /* FNV-1a of sql */
    char *sql;     /* NULL = free slot; a slot, once taken, keeps its text and name for good */
    int state;     /* S_NEW: not on the server, S_SENT: its Parse is in the pipeline, S_READY */
} stmt;
enum { S_NEW, S_SENT, S_READY };

struct az_pgconn {
    az_pg *pool;
    PGconn *conn;
    int busy;
    int64_t timeout_ms; /* the session's statement_timeout as last set; -1 = unknown */
    tenant t;
    PGcancel *cancel;
    int begin_pending; /* az_pg_begin was called; BEGIN rides with the next statement */
    int broken;        /* reconnect at the next acquire (prepared statements went stale) */
    stmt *stmts;       /* STMT_SLOTS entries, allocated on first use */
    int nstmts;
    deferred defer[DEFER_MAX]; /* az_pg_defer: sent ahead of the next statement */
    int ndefer;
    const char *after_commit; /* az_pg_after_commit: sent right behind the COMMIT */
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

static void drop_deferred(az_pgconn *c)
{
    for (int i = 0; i < c->ndefer; i++)
        for (int j = 0; j < c->defer[i].nparams; j++) free(c->defer[i].params[j]);
    c->ndefer = 0;
}

/* Forgets c's prepared statements (its session is gone or about to be). */
static void forget_stmts(az_pgconn *c)
{
    if (!c->stmts) return;
    for (int i = 0; i < STMT_SLOTS; i++) free(c->stmts[i].sql);
    free(c->stmts);
    c->stmts = NULL;
    c->nstmts = 0;
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
        forget_stmts(&p->conns[i]);
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
    if (c->broken || !usable(c->conn)) {
        if (c->conn) PQfinish(c->conn);
        forget_stmts(c);
        c->broken = 0;
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
    c->begin_pending = 0;
    c->after_commit = NULL;
    drop_deferred(c);
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

/* The statement_timeout the next statement should run under: ctx's remaining time, at most the
 * default. *set = 0 when the session's current value is close enough (most callers use similar
 * deadlines, and a deadline shrinks by a millisecond or so between the statements of one call;
 * the cancel hook still fires at the deadline). AZ_ERR_DEADLINE when the deadline has passed. */
static az_err want_timeout(const az_pgconn *c, const az_ctx *ctx, int64_t *want, int *set, char *msg)
{
    int64_t left = az_ctx_remaining_ms(ctx);
    if (left == 0) return az_fail(msg, AZ_ERR_DEADLINE, "deadline exceeded before the query ran");
    *want = left < 0 || left > DEFAULT_TIMEOUT_MS ? DEFAULT_TIMEOUT_MS : left;
    if (*want <= 0) *want = 1;
    *set = !(c->timeout_ms >= 0 && c->timeout_ms <= *want + TIMEOUT_SLACK_MS &&
             c->timeout_ms >= *want * 4 / 5);
    return AZ_OK;
}

/* 1 when the session's row-level-security settings must change for ctx: its workspace, or
 * system work (every workspace) when ctx has none. */
static int tenant_differs(const az_pgconn *c, const az_ctx *ctx)
{
    int system = !ctx || !ctx->workspace_id || !ctx->workspace_id[0];
    const tenant *t = &c->t;
    return !(t->known && t->system == system && (system || strcmp(t->ws, ctx->workspace_id) == 0));
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
    } else if (strcmp(state, "26000") == 0 || strcmp(state, "0A000") == 0) {
        /* A prepared statement is gone or its plan no longer fits (a migration by another
         * server changed a table): reconnect, so the next borrower prepares afresh. */
        c->broken = 1;
        e = AZ_ERR_UNAVAILABLE;
    }
    if (e == AZ_ERR_INTERNAL || e == AZ_ERR_UNAVAILABLE)
        az_error("postgresql statement failed: sqlstate=%s %.*s", state ? state : "-",
                 (int)strcspn(text, "\n"), text);
    return az_fail(msg, e, "database: %.*s", (int)strcspn(text, "\n"), text);
}

static uint64_t fnv1a(const char *s)
{
    uint64_t h = 1469598103934665603ULL;
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    return h;
}

/* The slot of sql in c's statements, taking a free one for a new text; -1 when the table is
 * full or cannot be allocated (the statement then runs unnamed). */
static int stmt_slot(az_pgconn *c, const char *sql)
{
    if (!c->stmts) {
        c->stmts = calloc(STMT_SLOTS, sizeof *c->stmts);
        if (!c->stmts) return -1;
    }
    uint64_t h = fnv1a(sql);
    for (int i = (int)(h % STMT_SLOTS), n = 0; n < STMT_SLOTS; i = (i + 1) % STMT_SLOTS, n++) {
        stmt *s = &c->stmts[i];
        if (!s->sql) {
            if (c->nstmts >= STMT_MAX || !(s->sql = strdup(sql))) return -1;
            s->hash = h;
            s->state = S_NEW;
            c->nstmts++;
            return i;
        }
        if (s->hash == h && strcmp(s->sql, sql) == 0) return i;
    }
    return -1;
}

/* What a pipeline sent, in order, so its results can be told apart. */
enum { Q_BEGIN, Q_SETUP, Q_PREPARE, Q_DEFER, Q_MAIN, Q_AFTER };
typedef struct queued {
    int kind;
    int slot;        /* Q_PREPARE: the statement's slot */
    const char *sql; /* unused */
} queued;
#define QUEUED_MAX (8 + 2 * DEFER_MAX)

static const char setup_sql[] = "SELECT set_config('statement_timeout', $1, false),"
                                " set_config('agentz.workspace_id', $2, false),"
                                " set_config('agentz.system', $3, false)";

/* Queues sql on c as kind, prepared by name when the table has room (the Parse rides in the
 * same pipeline the first time). 0 when libpq refuses (connection trouble). */
static int send_stmt(az_pgconn *c, int kind, const char *sql, int nparams,
                     const char *const *params, queued *q, int *nq)
{
    int slot = stmt_slot(c, sql);
    char name[16];
    if (slot >= 0) snprintf(name, sizeof name, "azs%d", slot);
    /* The first use parses it under its name; a second use in the same pipeline follows that
     * Parse, and a Parse that failed (or was skipped by an earlier error) is sent again. */
    if (slot >= 0 && c->stmts[slot].state == S_NEW) {
        if (!PQsendPrepare(c->conn, name, sql, nparams, NULL)) return 0;
        c->stmts[slot].state = S_SENT;
        q[(*nq)++] = (queued){Q_PREPARE, slot, NULL};
    }
    int ok = slot >= 0 ? PQsendQueryPrepared(c->conn, name, nparams, params, NULL, NULL, 0)
                       : PQsendQueryParams(c->conn, sql, nparams, NULL, params, NULL, NULL, 0);
    if (ok) q[(*nq)++] = (queued){kind, -1, NULL};
    return ok;
}

/* Reads the results of the nq queued statements and the sync, and leaves pipeline mode.
 * Returns the Q_MAIN result (the caller's), or NULL with *err_r = the first failed result (NULL
 * as well: the connection failed or fell out of step, and c is marked for a reconnect). A
 * prepare that succeeded enters its statement into c's table. */
static PGresult *read_pipeline(az_pgconn *c, const queued *q, int nq, PGresult **err_r)
{
    PGresult *main = NULL;
    *err_r = NULL;
    int lost = 0;
    for (int i = 0; i < nq && !lost; i++) {
        PGresult *r = PQgetResult(c->conn);
        if (!r) {
            lost = 1;
            break;
        }
        ExecStatusType st = PQresultStatus(r);
        int ok = st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK;
        if (q[i].kind == Q_PREPARE) c->stmts[q[i].slot].state = ok ? S_READY : S_NEW;
        if (!ok && q[i].kind == Q_AFTER) {
            /* The COMMIT before it stands; whoever waits for the notification polls too. */
            if (st == PGRES_FATAL_ERROR) {
                const char *e = PQresultErrorMessage(r);
                az_warn("cannot run the statement after a commit: %.*s", (int)strcspn(e, "\n"), e);
            }
            PQclear(r);
        } else if (!ok && !*err_r && st != PGRES_PIPELINE_ABORTED) {
            *err_r = r;
        } else if (ok && q[i].kind == Q_MAIN) {
            main = r;
        } else {
            PQclear(r);
        }
        /* Each statement's results end with a NULL. */
        PGresult *end;
        while ((end = PQgetResult(c->conn)) != NULL) {
            int sync = PQresultStatus(end) == PGRES_PIPELINE_SYNC;
            PQclear(end);
            if (sync) lost = 1;
        }
    }
    if (!lost) {
        PGresult *sync = PQgetResult(c->conn);
        if (!sync || PQresultStatus(sync) != PGRES_PIPELINE_SYNC) lost = 1;
        PQclear(sync);
    }
    if (!PQexitPipelineMode(c->conn)) lost = 1;
    if (lost) c->broken = 1; /* out of step with the server: never trust this session again */
    if (*err_r || lost) {
        PQclear(main);
        main = NULL;
    }
    return main;
}

/* az_pg_exec, and after sql (a COMMIT) the statement after (NULL = none). */
static az_err exec_pipeline(az_pgconn *c, const az_ctx *ctx, const char *sql, int nparams,
                            const char *const *params, PGresult **res, const char *after, char *msg)
{
    if (res) *res = NULL;
    int64_t want = DEFAULT_TIMEOUT_MS;
    int set_timeout = 1;
    az_err err = want_timeout(c, ctx, &want, &set_timeout, msg);
    if (err != AZ_OK) {
        settle(c, NULL);
        return err;
    }
    /* In a failed transaction only ROLLBACK (TO SAVEPOINT) can run, and it reads no rows. */
    int setup = (set_timeout || tenant_differs(c, ctx)) &&
                PQtransactionStatus(c->conn) != PQTRANS_INERROR;
    int system = !ctx || !ctx->workspace_id || !ctx->workspace_id[0];
    /* System work keeps the workspace as it is: the policy ignores it then, and the next
     * caller of that workspace saves a round trip. */
    const char *ws = system ? (c->t.known ? c->t.ws : "") : ctx->workspace_id;
    char tmo[24];
    snprintf(tmo, sizeof tmo, "%lld", (long long)want);
    const char *sp[3] = {tmo, ws, system ? "on" : "off"};

    /* One round trip: [BEGIN] [settings] statement, then a sync. The settings follow BEGIN so
     * they are never left behind by a transaction that fails before them. A lowered
     * statement_timeout applies from the next round trip (the server arms the timer at the
     * first message); until then the cancel hook bounds the statement. */
    queued q[QUEUED_MAX];
    int nq = 0;
    int sent = PQenterPipelineMode(c->conn);
    if (sent && c->begin_pending) sent = send_stmt(c, Q_BEGIN, "BEGIN", 0, NULL, q, &nq);
    c->begin_pending = 0;
    /* A statement opening a transaction (BEGIN ISOLATION LEVEL …) must come before any query
     * of it, the settings included. */
    int opens = strncmp(sql, "BEGIN", 5) == 0 || strncmp(sql, "START TRANSACTION", 17) == 0;
    if (sent && opens) sent = send_stmt(c, Q_MAIN, sql, nparams, params, q, &nq);
    if (sent && setup) sent = send_stmt(c, Q_SETUP, setup_sql, 3, sp, q, &nq);
    int cancellable = ctx && ctx->set_cancel;
    if (cancellable) {
        c->cancel = PQgetCancel(c->conn);
        ctx->set_cancel(ctx->owner, cancel_statement, c);
    }
    for (int i = 0; sent && i < c->ndefer; i++)
        sent = send_stmt(c, Q_DEFER, c->defer[i].sql, c->defer[i].nparams,
                         (const char *const *)c->defer[i].params, q, &nq);
    if (sent && !opens) sent = send_stmt(c, Q_MAIN, sql, nparams, params, q, &nq);
    if (sent && after) sent = send_stmt(c, Q_AFTER, after, 0, NULL, q, &nq);
    if (sent) sent = PQpipelineSync(c->conn);
    PGresult *r = NULL, *bad = NULL;
    drop_deferred(c); /* sent, or lost with the connection */
    if (sent) {
        r = read_pipeline(c, q, nq, &bad);
    } else {
        if (PQpipelineStatus(c->conn) != PQ_PIPELINE_OFF) PQexitPipelineMode(c->conn);
        c->broken = 1;
    }
    if (cancellable) {
        ctx->set_cancel(ctx->owner, NULL, NULL);
        PQfreeCancel(c->cancel);
        c->cancel = NULL;
    }
    if (!r) {
        /* The settings may have reverted with the failed statement's (implicit) transaction. */
        c->t.known = 0;
        c->timeout_ms = -1;
        c->t.changed_in_tx = 0;
        err = map_error(c, ctx, bad, msg);
        PQclear(bad);
        return err;
    }
    if (setup) {
        c->timeout_ms = want;
        size_t len = strlen(ws);
        c->t.known = len < sizeof c->t.ws; /* longer than any uuid: set every time */
        if (c->t.known) memmove(c->t.ws, ws, len + 1);
        c->t.system = system;
        if (PQtransactionStatus(c->conn) != PQTRANS_IDLE) c->t.changed_in_tx = 1;
    }
    settle(c, r);
    if (res) *res = r;
    else PQclear(r);
    return AZ_OK;
}

az_err az_pg_exec(az_pgconn *c, const az_ctx *ctx, const char *sql, int nparams,
                  const char *const *params, PGresult **res, char *msg)
{
    return exec_pipeline(c, ctx, sql, nparams, params, res, NULL, msg);
}

void az_pg_after_commit(az_pgconn *c, const az_ctx *ctx, const char *sql)
{
    if (c->begin_pending || PQtransactionStatus(c->conn) == PQTRANS_INTRANS) {
        c->after_commit = sql;
        return;
    }
    char msg[AZ_MSG_MAX];
    if (az_pg_exec(c, ctx, sql, 0, NULL, NULL, msg) != AZ_OK)
        az_warn("cannot run the statement after a commit: %s", msg);
}

az_err az_pg_begin(az_pgconn *c, const az_ctx *ctx, char *msg)
{
    (void)ctx;
    if (c->begin_pending || PQtransactionStatus(c->conn) != PQTRANS_IDLE)
        return az_fail(msg, AZ_ERR_INTERNAL, "a transaction is already open on this connection");
    c->begin_pending = 1;
    return AZ_OK;
}

az_err az_pg_commit(az_pgconn *c, const az_ctx *ctx, char *msg)
{
    if (c->begin_pending && !c->ndefer) { /* nothing ran: nothing to commit */
        c->begin_pending = 0;
        return AZ_OK;
    }
    const char *after = c->after_commit;
    c->after_commit = NULL;
    PGresult *r = NULL;
    az_err err = exec_pipeline(c, ctx, "COMMIT", 0, NULL, &r, after, msg);
    /* COMMIT of a failed transaction answers ROLLBACK. */
    if (err == AZ_OK && strncmp(PQcmdStatus(r), "ROLLBACK", 8) == 0)
        err = az_fail(msg, AZ_ERR_ABORTED, "database: the transaction was rolled back");
    PQclear(r);
    return err;
}

void az_pg_rollback(az_pgconn *c)
{
    c->begin_pending = 0;
    c->after_commit = NULL;
    drop_deferred(c);
    if (PQtransactionStatus(c->conn) == PQTRANS_IDLE) return;
    PGresult *r = PQexec(c->conn, "ROLLBACK");
    settle(c, r);
    PQclear(r);
}

az_err az_pg_defer(az_pgconn *c, const az_ctx *ctx, const char *sql, int nparams,
                   const char *const *params, char *msg)
{
    if (!c->begin_pending && PQtransactionStatus(c->conn) != PQTRANS_INTRANS)
        return az_pg_exec(c, ctx, sql, nparams, params, NULL, msg);
    if (c->ndefer == DEFER_MAX || nparams > DEFER_PARAMS) {
        az_err err = az_pg_exec(c, ctx, sql, nparams, params, NULL, msg);
        return err;
    }
    deferred *d = &c->defer[c->ndefer];
    d->sql = sql;
    d->nparams = 0;
    for (int i = 0; i < nparams; i++) {
        d->params[i] = params[i] ? strdup(params[i]) : NULL;
        d->nparams = i + 1;
        if (params[i] && !d->params[i]) {
            for (int j = 0; j <= i; j++) free(d->params[j]);
            return az_fail(msg, AZ_ERR_NOMEM, "out of memory");
        }
    }
    c->ndefer++;
    return AZ_OK;
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
