/* The worker runtime: one libuv loop thread that takes ready-task hints from the Redis stream
 * through the consumer group (hiredis async), claims the tasks of each read in one PostgreSQL
 * transaction with a lease on libuv's threadpool, runs them with the executor (libcurl multi on
 * the same loop), renews their leases, notices within a second (its own non-blocking libpq connection) when a task it runs
 * was cancelled, timed out or reaped, and hands its tasks back when it stops.
 * Everything below runs on the loop thread unless it says "threadpool" or "any thread". */
#include "worker.h"

#include <errno.h>
#include <hiredis/async.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <uv.h>

#include "core/arena.h"
#include "core/log.h"
#include "core/text.h"
#include "engine/executor.h"
#include "engine/http.h"
#include "event/hub.h"
#include "queue/queue.h"
#include "store/redisuv.h"
#include "task/task.h"
#include "workflow/run.h"

#define READ_BATCH_MAX 100         /* entries per XREADGROUP, and at most the tasks of one claim */
#define ENTRY_ID_MAX 47            /* "<ms>-<seq>": longer is not a stream id */
#define READ_BLOCK_MS "1000"       /* XREADGROUP BLOCK: bounds how long a stop waits for a read */
#define CHECK_INTERVAL_MS 500      /* the in-flight status check: cancellation within 1 s */
#define CHECK_STUCK_MS 10000       /* a check unanswered this long: the connection is reset */
#define PUBLISH_PENDING_MAX 10000  /* ephemeral events in flight to Redis before dropping */
#define REDIS_BACKOFF_MIN_MS 100
#define REDIS_BACKOFF_MAX_MS 5000
#define PG_BACKOFF_MAX_MS 5000
#define SWEEP_INTERVAL_MS 60000    /* XAUTOCLAIM of entries a dead consumer read but never acked */
#define SWEEP_MIN_IDLE_MS "300000"

typedef enum { W_RUNNING, W_DRAINING, W_HANDBACK, W_CLOSING } wstate;

/* One execution in flight. */
typedef struct flight {
    az_worker *w;
    char task_id[40], ws[40];
    int attempt;
    uint64_t born;      /* w->seq when it started: older checks do not judge it */
    int aborting;
    az_exec *ex;
    struct flight *prev, *next;
} flight;

/* A threadpool job: claim, heartbeat, hand-back of a late claim, or failing an attempt the
 * executor refused to start. */
typedef enum { J_CLAIM, J_HEARTBEAT, J_RELEASE, J_FAIL_START, J_PG_CONNECT } jkind;

typedef struct job {
    uv_work_t req;
    az_worker *w;
    jkind kind;
    char task_id[40], ws[40];
    int attempt;
    uint64_t seq;
    az_arena *arena;
    char **ids;
    size_t n_ids;
    /* J_CLAIM: the tasks of one workspace from one read, their stream entries, and the claimed */
    char **claim_ids, **claim_entries;
    size_t n_claim;
    Agentz__V1__Task **tasks;
    size_t n_tasks;
    PGconn *conn;
    az_err err;
    char msg[AZ_MSG_MAX];
} job;

struct az_worker {
    /* configuration (copied strings) */
    char *redis_url, *database_url, *db_role, *id;
    int concurrency;
    int64_t lease_ms;
    az_pg *pg;
    az_redis *redis;
    az_secret_keyring *keys;
    const az_netguard *guard;
    const az_llm_prices *prices;
    const az_memory_config *memory;
    const az_tools *tools;
    az_redis_url rurl;

    /* the loop and its thread */
    uv_loop_t loop;
    pthread_t thread;
    int started, joined;
    pthread_mutex_t mu; /* guards started/joined for az_worker_stop from several threads */
    uv_async_t stop_async;
    _Atomic int grace_ms;
    wstate state;
    az_http *http;
    az_engine_env env;

    /* Redis: a connection for the blocking reads, one for commands (XACK, PUBLISH) */
    redisAsyncContext *rd_read, *rd_cmd;
    int read_pending, group_ok, redis_down_logged;
    int read_up, cmd_up; /* its PING was answered and no disconnect since */
    _Atomic int64_t queue_down_since; /* mono ms since the queue is unreadable; 0 = readable */
    int redis_backoff_ms;
    uv_timer_t redis_timer; /* reconnect */
    uv_timer_t read_timer;  /* retry a failed read */
    uv_timer_t sweep_timer;
    long publishes_pending;

    /* PostgreSQL: the worker's own non-blocking connection for the in-flight check */
    PGconn *pq;
    uv_poll_t *pq_poll;
    int pq_busy, pq_connecting, pq_down_logged;
    int64_t pq_sent_ms;
    int pq_backoff_ms;
    uv_timer_t check_timer;
    int64_t pq_next_try_ms; /* reconnect backoff: the check timer retries from then on */
    uint64_t check_seq;

    /* leases */
    uv_timer_t heartbeat_timer;
    int heartbeat_pending;

    /* shutdown */
    uv_timer_t grace_timer;

    /* work */
    flight *flights;
    int n_flights;
    int n_jobs; /* claims (and hand-backs of late claims) not finished: they hold slots */
    int n_other_jobs;
    uint64_t seq;

    _Atomic long s_claimed, s_finished, s_lost, s_handed_back, s_published, s_dropped, s_running;
};

static void maybe_read(az_worker *w);
static void maybe_finish(az_worker *w);
static void redis_connect(az_worker *w);
static void submit(az_worker *w, job *j);

static int64_t mono_ms(void) { return az_now_ms(); }

/* ---------------------------------------------------------------- in-flight table */

static flight *flight_find(az_worker *w, const char *task_id)
{
    for (flight *f = w->flights; f; f = f->next)
        if (strcmp(f->task_id, task_id) == 0) return f;
    return NULL;
}

static void flight_unlink(az_worker *w, flight *f)
{
    if (f->prev) f->prev->next = f->next;
    else w->flights = f->next;
    if (f->next) f->next->prev = f->prev;
    w->n_flights--;
    atomic_store_explicit(&w->s_running, w->n_flights, memory_order_relaxed);
}

static void abort_flight(flight *f, az_exec_abort_reason why)
{
    if (f->aborting) return;
    f->aborting = 1;
    if (why == AZ_EXEC_ABORT_LOST) atomic_fetch_add_explicit(&f->w->s_lost, 1, memory_order_relaxed);
    else atomic_fetch_add_explicit(&f->w->s_handed_back, 1, memory_order_relaxed);
    az_exec_abort(f->ex, why);
}

/* ---------------------------------------------------------------- executor callbacks */

static void on_exec_done(void *arg, az_exec *ex)
{
    flight *f = arg;
    az_worker *w = f->w;
    flight_unlink(w, f);
    az_exec_free(ex);
    free(f);
    atomic_fetch_add_explicit(&w->s_finished, 1, memory_order_relaxed);
    maybe_read(w);
    maybe_finish(w);
}

static void on_published(redisAsyncContext *ac, void *reply, void *privdata)
{
    (void)reply;
    (void)privdata;
    az_worker *w = ac->data;
    if (w) w->publishes_pending--;
}

/* env.on_event: ephemeral events go to the task's Redis channel; never blocks, never queues
 * more than PUBLISH_PENDING_MAX (a slow Redis costs events, not memory). */
static void on_event(void *arg, const char *workspace_id, const Agentz__V1__Event *ev)
{
    (void)workspace_id;
    az_worker *w = arg;
    if (!ev || !ev->task_id || !*ev->task_id || !w->rd_cmd ||
        w->publishes_pending >= PUBLISH_PENDING_MAX) {
        atomic_fetch_add_explicit(&w->s_dropped, 1, memory_order_relaxed);
        return;
    }
    size_t len = protobuf_c_message_get_packed_size(&ev->base);
    uint8_t stackbuf[4096];
    uint8_t *buf = len <= sizeof stackbuf ? stackbuf : malloc(len);
    if (!buf) {
        atomic_fetch_add_explicit(&w->s_dropped, 1, memory_order_relaxed);
        return;
    }
    protobuf_c_message_pack(&ev->base, buf);
    char channel[96];
    snprintf(channel, sizeof channel, AZ_HUB_CHANNEL_TASK "%s", ev->task_id); /* the hub's key */
    const char *argv[3] = {"PUBLISH", channel, (const char *)buf};
    size_t argvlen[3] = {7, strlen(channel), len};
    /* hiredis copies the command into its output buffer: buf is ours again on return. */
    if (redisAsyncCommandArgv(w->rd_cmd, on_published, NULL, 3, argv, argvlen) == REDIS_OK) {
        w->publishes_pending++;
        atomic_fetch_add_explicit(&w->s_published, 1, memory_order_relaxed);
    } else {
        atomic_fetch_add_explicit(&w->s_dropped, 1, memory_order_relaxed);
    }
    if (buf != stackbuf) free(buf);
}

/* ---------------------------------------------------------------- threadpool jobs */

static void job_work(uv_work_t *req)
{
    job *j = req->data;
    az_worker *w = j->w;
    az_ctx ctx = {.workspace_id = j->ws, .principal = "", .request_id = w->id, .deadline_ms = -1};
    switch (j->kind) {
    case J_CLAIM:
        j->err = az_task_claim_many(w->pg, &ctx, j->claim_ids, j->n_claim, w->id, w->lease_ms,
                                    j->arena, &j->tasks, &j->n_tasks, j->msg);
        break;
    case J_HEARTBEAT:
        j->err = az_task_heartbeat(w->pg, w->id, w->lease_ms, j->arena, &j->ids, &j->n_ids, j->msg);
        break;
    case J_RELEASE: {
        az_task_ready ready = {.arena = j->arena};
        j->err = az_task_release(w->pg, &ctx, j->task_id, j->attempt, &ready, j->msg);
        char m[AZ_MSG_MAX];
        if (j->err == AZ_OK && az_queue_publish(w->redis, j->ws, &ready, m) != AZ_OK)
            az_warn("cannot publish handed-back task %s (the reconciler will): %s", j->task_id, m);
        break;
    }
    case J_FAIL_START: {
        Agentz__V1__TaskError e = AGENTZ__V1__TASK_ERROR__INIT;
        e.type = "worker_error";
        e.message = j->msg;
        e.retryable = j->err == AZ_ERR_NOMEM;
        char run_id[37] = "", m[AZ_MSG_MAX];
        az_err err = az_task_fail(w->pg, &ctx, j->task_id, j->attempt, &e, NULL, NULL, run_id, m);
        if (err != AZ_OK) az_warn("cannot fail task %s after the executor refused it: %s", j->task_id, m);
        else if (*run_id && az_run_sync(w->pg, &ctx, run_id, m) != AZ_OK)
            az_warn("cannot refresh run %s: %s", run_id, m);
        break;
    }
    case J_PG_CONNECT: {
        j->conn = NULL;
        PGconn *c = PQconnectdb(w->database_url);
        if (PQstatus(c) != CONNECTION_OK) {
            snprintf(j->msg, sizeof j->msg, "%s", PQerrorMessage(c));
            PQfinish(c);
            j->err = AZ_ERR_UNAVAILABLE;
            break;
        }
        j->err = AZ_OK;
        j->conn = c;
        break;
    }
    }
}

static void xack(az_worker *w, const char *entry_id)
{
    if (!*entry_id || !w->rd_cmd) return; /* unacked: the sweep of a later worker acks it */
    redisAsyncCommand(w->rd_cmd, NULL, NULL, "XACK %s %s %s", AZ_QUEUE_STREAM, AZ_WORKER_GROUP,
                      entry_id);
}

/* One XACK for the entries of a claim job: PostgreSQL decided, the hints have served. */
static void xack_claimed(az_worker *w, job *j)
{
    if (!w->rd_cmd || j->n_claim == 0) return; /* unacked: the sweep of a later worker acks them */
    const char **argv = az_arena_alloc(j->arena, (3 + j->n_claim) * sizeof *argv);
    if (!argv) {
        for (size_t i = 0; i < j->n_claim; i++) xack(w, j->claim_entries[i]);
        return;
    }
    argv[0] = "XACK";
    argv[1] = AZ_QUEUE_STREAM;
    argv[2] = AZ_WORKER_GROUP;
    for (size_t i = 0; i < j->n_claim; i++) argv[3 + i] = j->claim_entries[i];
    redisAsyncCommandArgv(w->rd_cmd, NULL, NULL, (int)(3 + j->n_claim), argv, NULL);
}

static void start_execution(az_worker *w, const char *ws, Agentz__V1__Task *t)
{
    if (w->state >= W_HANDBACK) {
        /* Claimed while stopping: give it straight back. */
        job *r = calloc(1, sizeof *r);
        if (r && (r->arena = az_arena_new(0))) {
            r->kind = J_RELEASE;
            snprintf(r->task_id, sizeof r->task_id, "%s", t->id);
            snprintf(r->ws, sizeof r->ws, "%s", ws);
            r->attempt = t->attempt;
            w->n_jobs++;
            atomic_fetch_add_explicit(&w->s_handed_back, 1, memory_order_relaxed);
            submit(w, r);
        } else {
            if (r) free(r);
            az_warn("cannot hand back task %s (its lease will expire): out of memory", t->id);
        }
        return;
    }
    flight *f = calloc(1, sizeof *f);
    char msg[AZ_MSG_MAX] = "out of memory";
    az_err err = AZ_ERR_NOMEM;
    if (f) {
        f->w = w;
        snprintf(f->task_id, sizeof f->task_id, "%s", t->id);
        snprintf(f->ws, sizeof f->ws, "%s", ws);
        f->attempt = t->attempt;
        f->born = ++w->seq;
        err = az_exec_start(&w->env, ws, t, on_exec_done, f, &f->ex, msg);
    }
    if (err == AZ_OK) {
        f->next = w->flights;
        if (w->flights) w->flights->prev = f;
        w->flights = f;
        w->n_flights++;
        atomic_store_explicit(&w->s_running, w->n_flights, memory_order_relaxed);
        return;
    }
    free(f);
    az_error("cannot start task %s: %s", t->id, msg);
    job *r = calloc(1, sizeof *r);
    if (!r) return; /* the lease expires and the reaper retries it */
    r->kind = J_FAIL_START;
    r->err = err;
    snprintf(r->msg, sizeof r->msg, "the worker could not start the task: %.400s", msg);
    snprintf(r->task_id, sizeof r->task_id, "%s", t->id);
    snprintf(r->ws, sizeof r->ws, "%s", ws);
    r->attempt = t->attempt;
    w->n_other_jobs++;
    submit(w, r);
}

static void on_heartbeat(az_worker *w, job *j)
{
    w->heartbeat_pending = 0;
    if (j->err != AZ_OK) {
        az_warn("cannot renew task leases: %s", j->msg);
        return;
    }
    /* Anything running here that the database no longer gives to us, and that was started
     * before the heartbeat was sent, is someone else's now. */
    for (flight *f = w->flights; f; f = f->next) {
        if (f->born > j->seq || f->aborting) continue;
        int found = 0;
        for (size_t i = 0; i < j->n_ids && !found; i++) found = strcmp(j->ids[i], f->task_id) == 0;
        if (!found) {
            az_info("task %s is no longer held by this worker: aborting it", f->task_id);
            abort_flight(f, AZ_EXEC_ABORT_LOST);
        }
    }
}

static void pq_attach(az_worker *w, PGconn *c);

static void job_done(uv_work_t *req, int status)
{
    (void)status;
    job *j = req->data;
    az_worker *w = j->w;
    switch (j->kind) {
    case J_CLAIM:
        w->n_jobs -= (int)j->n_claim;
        xack_claimed(w, j);
        if (j->err == AZ_OK) {
            atomic_fetch_add_explicit(&w->s_claimed, (long)j->n_tasks, memory_order_relaxed);
            for (size_t i = 0; i < j->n_tasks; i++) start_execution(w, j->ws, j->tasks[i]);
        } else {
            /* Still queued: the reconciler publishes them again. */
            az_warn("cannot claim %zu tasks (first %s): %s", j->n_claim, j->claim_ids[0], j->msg);
        }
        break;
    case J_HEARTBEAT:
        w->n_other_jobs--;
        on_heartbeat(w, j);
        break;
    case J_RELEASE:
        w->n_jobs--;
        if (j->err != AZ_OK && j->err != AZ_ERR_PRECONDITION)
            az_warn("cannot hand back task %s (its lease will expire): %s", j->task_id, j->msg);
        break;
    case J_FAIL_START:
        w->n_other_jobs--;
        break;
    case J_PG_CONNECT:
        w->n_other_jobs--;
        w->pq_connecting = 0;
        if (j->err == AZ_OK && w->state < W_CLOSING) {
            pq_attach(w, j->conn);
        } else {
            if (j->conn) PQfinish(j->conn);
            if (j->err != AZ_OK && !w->pq_down_logged) {
                az_warn("worker cannot reach postgresql for its cancellation checks: %s", j->msg);
                w->pq_down_logged = 1;
            }
            w->pq_backoff_ms = w->pq_backoff_ms ? w->pq_backoff_ms * 2 : 200;
            if (w->pq_backoff_ms > PG_BACKOFF_MAX_MS) w->pq_backoff_ms = PG_BACKOFF_MAX_MS;
            w->pq_next_try_ms = mono_ms() + w->pq_backoff_ms;
        }
        break;
    }
    az_arena_free(j->arena);
    free(j);
    maybe_read(w);
    maybe_finish(w);
}

static void submit(az_worker *w, job *j)
{
    j->w = w;
    j->req.data = j;
    if (uv_queue_work(&w->loop, &j->req, job_work, job_done) != 0) {
        /* Only fails for a NULL callback: run it inline rather than lose it. */
        job_work(&j->req);
        job_done(&j->req, 0);
    }
}

/* ---------------------------------------------------------------- reading the stream */

/* The task and workspace of a stream entry; 0 (after acking it) when it is malformed. */
static int parse_entry(az_worker *w, const redisReply *e, const char **entry_id, const char **task,
                       const char **ws)
{
    if (e->type != REDIS_REPLY_ARRAY || e->elements < 2 || e->element[0]->type != REDIS_REPLY_STRING)
        return 0;
    *entry_id = e->element[0]->str;
    *task = *ws = NULL;
    const redisReply *fields = e->element[1];
    if (fields && fields->type == REDIS_REPLY_ARRAY) {
        for (size_t i = 0; i + 1 < fields->elements; i += 2) {
            const redisReply *k = fields->element[i], *v = fields->element[i + 1];
            if (k->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_STRING) continue;
            if (strcmp(k->str, "task") == 0) *task = v->str;
            else if (strcmp(k->str, "workspace") == 0) *ws = v->str;
        }
    }
    if (!*task || !*ws || !az_text_is_uuid(*task) || !az_text_is_uuid(*ws) ||
        strlen(*entry_id) > ENTRY_ID_MAX) {
        az_warn("ignoring malformed queue entry %s", *entry_id);
        xack(w, *entry_id);
        return 0;
    }
    return 1;
}

/* Claims the tasks of a read's (or a sweep's) entries: one claim job, so one transaction, per
 * workspace among them. Entries left out for lack of memory stay unacked: the sweep retries. */
static void claim_entries(az_worker *w, const redisReply *entries)
{
    if (entries->type != REDIS_REPLY_ARRAY || entries->elements == 0) return;
    size_t n = entries->elements;
    job **jobs = calloc(n, sizeof *jobs);
    if (!jobs) {
        az_error("cannot claim %zu tasks: out of memory", n);
        return;
    }
    size_t nj = 0;
    for (size_t i = 0; i < n; i++) {
        const char *entry_id, *task, *ws;
        if (!parse_entry(w, entries->element[i], &entry_id, &task, &ws)) continue;
        job *j = NULL;
        for (size_t k = 0; k < nj && !j; k++)
            if (strcmp(jobs[k]->ws, ws) == 0) j = jobs[k];
        if (!j) {
            j = calloc(1, sizeof *j);
            if (j && (!(j->arena = az_arena_new(0)) ||
                      !(j->claim_ids = az_arena_alloc(j->arena, n * sizeof *j->claim_ids)) ||
                      !(j->claim_entries = az_arena_alloc(j->arena, n * sizeof *j->claim_entries)))) {
                az_arena_free(j->arena);
                free(j);
                j = NULL;
            }
            if (!j) {
                az_error("cannot claim task %s: out of memory", task);
                continue;
            }
            j->kind = J_CLAIM;
            snprintf(j->ws, sizeof j->ws, "%s", ws);
            jobs[nj++] = j;
        }
        char *id = az_arena_strdup(j->arena, task), *eid = az_arena_strdup(j->arena, entry_id);
        if (!id || !eid) {
            az_error("cannot claim task %s: out of memory", task);
            continue;
        }
        j->claim_ids[j->n_claim] = id;
        j->claim_entries[j->n_claim] = eid;
        j->n_claim++;
    }
    for (size_t k = 0; k < nj; k++) {
        job *j = jobs[k];
        if (j->n_claim == 0) {
            az_arena_free(j->arena);
            free(j);
            continue;
        }
        w->n_jobs += (int)j->n_claim;
        submit(w, j);
    }
    free(jobs);
}

static void on_group_created(redisAsyncContext *ac, void *reply, void *privdata)
{
    (void)privdata;
    az_worker *w = ac->data;
    redisReply *r = reply;
    if (!w || !r) return;
    if (r->type != REDIS_REPLY_ERROR || strncmp(r->str, "BUSYGROUP", 9) == 0) w->group_ok = 1;
    else az_warn("cannot create consumer group %s: %s", AZ_WORKER_GROUP, r->str);
}

static void create_group(az_worker *w)
{
    if (!w->rd_cmd) return;
    redisAsyncCommand(w->rd_cmd, on_group_created, NULL, "XGROUP CREATE %s %s 0 MKSTREAM",
                      AZ_QUEUE_STREAM, AZ_WORKER_GROUP);
}

static int free_slots(const az_worker *w)
{
    return w->concurrency - w->n_flights - w->n_jobs;
}

static void on_read_timer(uv_timer_t *t);

static void on_read(redisAsyncContext *ac, void *reply, void *privdata)
{
    (void)privdata;
    az_worker *w = ac->data;
    if (!w) return;
    w->read_pending = 0;
    redisReply *r = reply;
    if (!r) return; /* disconnected: the reconnect reads again */
    if (r->type == REDIS_REPLY_ERROR) {
        if (strncmp(r->str, "NOGROUP", 7) == 0) {
            /* Redis lost the stream (restart without persistence): make the group again. */
            w->group_ok = 0;
            create_group(w);
        } else {
            az_warn("cannot read the task queue: %s", r->str);
        }
        uv_timer_start(&w->read_timer, on_read_timer, 1000, 0);
        return;
    }
    /* [[stream, [[id, [field, value, ...]], ...]]] or nil after BLOCK without news */
    if (r->type == REDIS_REPLY_ARRAY) {
        for (size_t s = 0; s < r->elements; s++) {
            redisReply *st = r->element[s];
            if (st->type != REDIS_REPLY_ARRAY || st->elements < 2) continue;
            redisReply *entries = st->element[1];
            claim_entries(w, entries);
        }
    }
    maybe_read(w);
}

/* Reads more hints when there is room, nothing is pending and the worker is taking tasks. */
static void maybe_read(az_worker *w)
{
    if (w->state != W_RUNNING || !w->rd_read || w->read_pending || !w->group_ok ||
        uv_is_active((uv_handle_t *)&w->read_timer))
        return;
    int n = free_slots(w);
    if (n <= 0) return;
    if (n > READ_BATCH_MAX) n = READ_BATCH_MAX;
    char count[16];
    snprintf(count, sizeof count, "%d", n);
    const char *argv[] = {"XREADGROUP", "GROUP", AZ_WORKER_GROUP, w->id, "COUNT", count, "BLOCK",
                          READ_BLOCK_MS, "STREAMS", AZ_QUEUE_STREAM, ">"};
    if (redisAsyncCommandArgv(w->rd_read, on_read, NULL, 11, argv, NULL) == REDIS_OK)
        w->read_pending = 1;
}

static void on_read_timer(uv_timer_t *t)
{
    maybe_read(t->data);
}

/* XAUTOCLAIM: entries another consumer read but never acknowledged (it died between reading
 * and claiming) come to us; claiming them settles them either way. */
static void on_sweep(redisAsyncContext *ac, void *reply, void *privdata)
{
    (void)privdata;
    az_worker *w = ac->data;
    redisReply *r = reply;
    if (!w || !r || r->type != REDIS_REPLY_ARRAY || r->elements < 2) return;
    redisReply *entries = r->element[1];
    claim_entries(w, entries);
}

static void on_sweep_timer(uv_timer_t *t)
{
    az_worker *w = t->data;
    if (w->state != W_RUNNING || !w->rd_cmd || !w->group_ok) return;
    int n = free_slots(w);
    if (n <= 0) return;
    if (n > READ_BATCH_MAX) n = READ_BATCH_MAX;
    char count[16];
    snprintf(count, sizeof count, "%d", n);
    const char *argv[] = {"XAUTOCLAIM", AZ_QUEUE_STREAM, AZ_WORKER_GROUP, w->id,
                          SWEEP_MIN_IDLE_MS, "0-0", "COUNT", count};
    redisAsyncCommandArgv(w->rd_cmd, on_sweep, NULL, 8, argv, NULL);
}

/* ---------------------------------------------------------------- Redis connections */

static void on_redis_timer(uv_timer_t *t)
{
    redis_connect(t->data);
}

/* The queue is readable when the command connection is up and, while taking tasks, the read
 * connection. */
static int queue_up(const az_worker *w)
{
    return w->cmd_up && (w->read_up || w->state != W_RUNNING);
}

/* Health reads queue_down_since from another thread (az_worker_check_queue). */
static void queue_state(az_worker *w)
{
    int64_t since = atomic_load(&w->queue_down_since);
    if (queue_up(w) && since) atomic_store(&w->queue_down_since, 0);
    if (!queue_up(w) && !since) {
        int64_t now = mono_ms();
        atomic_store(&w->queue_down_since, now > 0 ? now : 1);
    }
}

static void redis_lost(az_worker *w, const char *why)
{
    if (w->state == W_CLOSING) return;
    if (!w->redis_down_logged) {
        az_warn("worker lost redis (%s): reconnecting with backoff; running tasks continue", why);
        w->redis_down_logged = 1;
    }
    w->read_pending = 0;
    if (!uv_is_active((uv_handle_t *)&w->redis_timer)) {
        w->redis_backoff_ms = w->redis_backoff_ms ? w->redis_backoff_ms * 2 : REDIS_BACKOFF_MIN_MS;
        if (w->redis_backoff_ms > REDIS_BACKOFF_MAX_MS) w->redis_backoff_ms = REDIS_BACKOFF_MAX_MS;
        uv_timer_start(&w->redis_timer, on_redis_timer, (uint64_t)w->redis_backoff_ms, 0);
    }
}

static void on_redis_disconnect(const redisAsyncContext *ac, int status)
{
    (void)status;
    az_worker *w = ac->data;
    if (!w) return;
    if (ac == w->rd_read) w->rd_read = NULL, w->read_up = 0;
    else if (ac == w->rd_cmd) w->rd_cmd = NULL, w->cmd_up = 0;
    else return; /* closed on purpose (redis_close cleared its slot first) */
    queue_state(w);
    redis_lost(w, ac->errstr[0] ? ac->errstr : "connection closed");
}

static void on_redis_connect(const redisAsyncContext *ac, int status)
{
    az_worker *w = ac->data;
    if (!w || status == REDIS_OK) return; /* up once its PING is answered (on_redis_ready) */
    /* hiredis frees the context after this callback. */
    if (ac == w->rd_read) w->rd_read = NULL, w->read_up = 0;
    if (ac == w->rd_cmd) w->rd_cmd = NULL, w->cmd_up = 0;
    queue_state(w);
    redis_lost(w, ac->errstr);
}

/* The answer to the PING queued behind AUTH/SELECT. A connect can succeed and the server still
 * refuse the client (maxclients, a failed AUTH): only an answered PING makes the connection up,
 * resets the backoff and logs the reconnect, so such a server is retried with growing backoff
 * instead of every 100 ms, and health does not see a queue it cannot read. */
static void on_redis_ready(redisAsyncContext *ac, void *reply, void *privdata)
{
    (void)privdata;
    az_worker *w = ac->data;
    redisReply *r = reply;
    if (!w || !r) return; /* the context is going away: its disconnect callback says why */
    if (r->type == REDIS_REPLY_ERROR) {
        redis_lost(w, r->str);
        redisAsyncDisconnect(ac); /* on_redis_disconnect clears the slot */
        return;
    }
    if (ac == w->rd_read) w->read_up = 1;
    if (ac == w->rd_cmd) w->cmd_up = 1;
    queue_state(w);
    if (queue_up(w)) {
        if (w->redis_down_logged) az_info("worker reconnected to redis");
        w->redis_down_logged = 0;
        w->redis_backoff_ms = 0;
    }
}

static redisAsyncContext *redis_open(az_worker *w)
{
    redisAsyncContext *ac = w->rurl.path[0] ? redisAsyncConnectUnix(w->rurl.path)
                                            : redisAsyncConnect(w->rurl.host, w->rurl.port);
    if (!ac) return NULL;
    if (ac->err) {
        redis_lost(w, ac->errstr);
        redisAsyncFree(ac);
        return NULL;
    }
    ac->data = w;
    if (az_redisuv_attach(ac, &w->loop) != REDIS_OK) {
        redisAsyncFree(ac);
        return NULL;
    }
    redisAsyncSetConnectCallback(ac, on_redis_connect);
    redisAsyncSetDisconnectCallback(ac, on_redis_disconnect);
    /* Queued before anything else, so they run first once connected. */
    if (w->rurl.password[0]) {
        if (w->rurl.username[0])
            redisAsyncCommand(ac, NULL, NULL, "AUTH %s %s", w->rurl.username, w->rurl.password);
        else
            redisAsyncCommand(ac, NULL, NULL, "AUTH %s", w->rurl.password);
    }
    if (w->rurl.db) redisAsyncCommand(ac, NULL, NULL, "SELECT %d", w->rurl.db);
    redisAsyncCommand(ac, on_redis_ready, NULL, "PING");
    return ac;
}

static void redis_connect(az_worker *w)
{
    if (w->state == W_CLOSING) return;
    if (!w->rd_cmd && (w->rd_cmd = redis_open(w))) create_group(w);
    if (w->state == W_RUNNING && !w->rd_read) w->rd_read = redis_open(w);
    if ((!w->rd_cmd || (w->state == W_RUNNING && !w->rd_read)) &&
        !uv_is_active((uv_handle_t *)&w->redis_timer))
        redis_lost(w, "cannot connect");
    maybe_read(w);
}

static void redis_close(az_worker *w, redisAsyncContext **slot)
{
    redisAsyncContext *ac = *slot;
    if (!ac) return;
    *slot = NULL;
    if (slot == &w->rd_read) w->read_up = 0;
    if (slot == &w->rd_cmd) w->cmd_up = 0;
    queue_state(w);
    /* Pending callbacks run with NULL replies; on_redis_disconnect sees the slot cleared. */
    redisAsyncFree(ac);
}

/* ---------------------------------------------------------------- the in-flight check (libpq) */

static void pq_reset(az_worker *w, const char *why);

static void on_pq_poll_closed(uv_handle_t *h) { free(h); }

/* Results of the check: (task id, attempt) of every in-flight attempt that is not ours any more. */
static void pq_results(az_worker *w)
{
    PGresult *r;
    while ((r = PQgetResult(w->pq))) {
        if (PQresultStatus(r) == PGRES_TUPLES_OK) {
            for (int i = 0; i < PQntuples(r); i++) {
                flight *f = flight_find(w, PQgetvalue(r, i, 0));
                if (f && f->attempt == atoi(PQgetvalue(r, i, 1)) && f->born <= w->check_seq &&
                    !f->aborting) {
                    az_info("task %s attempt %d was cancelled, timed out or taken over: aborting it",
                            f->task_id, f->attempt);
                    abort_flight(f, AZ_EXEC_ABORT_LOST);
                }
            }
        } else if (PQresultStatus(r) != PGRES_COMMAND_OK) {
            az_warn("in-flight check failed: %s", PQresultErrorMessage(r));
        }
        PQclear(r);
    }
    w->pq_busy = 0;
    uv_poll_stop(w->pq_poll);
    if (PQstatus(w->pq) == CONNECTION_BAD) pq_reset(w, PQerrorMessage(w->pq));
}

static void on_pq_poll(uv_poll_t *p, int status, int events)
{
    az_worker *w = p->data;
    if (status < 0) {
        pq_reset(w, uv_strerror(status));
        return;
    }
    if (events & UV_WRITABLE) {
        int f = PQflush(w->pq);
        if (f < 0) {
            pq_reset(w, PQerrorMessage(w->pq));
            return;
        }
        if (f == 0) uv_poll_start(w->pq_poll, UV_READABLE, on_pq_poll);
    }
    if (events & UV_READABLE) {
        if (!PQconsumeInput(w->pq)) {
            pq_reset(w, PQerrorMessage(w->pq));
            return;
        }
        if (w->pq_busy && !PQisBusy(w->pq)) pq_results(w);
        else if (!w->pq_busy) {
            /* Nothing asked: a notice or the server closing; drain it. */
            PGresult *r;
            while (!PQisBusy(w->pq) && (r = PQgetResult(w->pq))) PQclear(r);
        }
    }
}

static void pq_attach(az_worker *w, PGconn *c)
{
    /* Role and tenancy: the RLS role with system access (every workspace), as the pool does. */
    char *role = PQescapeIdentifier(c, w->db_role, strlen(w->db_role));
    char sql[512];
    snprintf(sql, sizeof sql,
             "SET ROLE %s; SET agentz.system = 'on'; SET statement_timeout = 5000;"
             " SET application_name = 'agentz-worker'",
             role ? role : "\"\"");
    PQfreemem(role);
    PGresult *r = PQexec(c, sql); /* once per connection, on a fresh local connection */
    int ok = PQresultStatus(r) == PGRES_COMMAND_OK;
    if (!ok) az_warn("worker cannot set its database role: %s", PQerrorMessage(c));
    PQclear(r);
    uv_poll_t *p = ok && PQsetnonblocking(c, 1) == 0 ? calloc(1, sizeof *p) : NULL;
    if (!p || uv_poll_init(&w->loop, p, PQsocket(c)) != 0) {
        free(p);
        PQfinish(c);
        w->pq_next_try_ms = mono_ms() + PG_BACKOFF_MAX_MS;
        return;
    }
    p->data = w;
    w->pq = c;
    w->pq_poll = p;
    w->pq_busy = 0;
    w->pq_backoff_ms = 0;
    if (w->pq_down_logged) {
        az_info("worker reconnected to postgresql for its cancellation checks");
        w->pq_down_logged = 0;
    }
}

static void pq_reset(az_worker *w, const char *why)
{
    if (!w->pq) return;
    if (!w->pq_down_logged) {
        az_warn("worker lost its postgresql connection for cancellation checks (%s): reconnecting",
                why);
        w->pq_down_logged = 1;
    }
    uv_poll_stop(w->pq_poll);
    PQfinish(w->pq); /* closes the socket after the poll stopped watching it */
    uv_close((uv_handle_t *)w->pq_poll, on_pq_poll_closed);
    w->pq = NULL;
    w->pq_poll = NULL;
    w->pq_busy = 0;
    w->pq_backoff_ms = w->pq_backoff_ms ? w->pq_backoff_ms * 2 : 200;
    if (w->pq_backoff_ms > PG_BACKOFF_MAX_MS) w->pq_backoff_ms = PG_BACKOFF_MAX_MS;
    w->pq_next_try_ms = mono_ms() + w->pq_backoff_ms;
}

static void pq_connect(az_worker *w)
{
    if (w->pq || w->pq_connecting || w->state == W_CLOSING || mono_ms() < w->pq_next_try_ms) return;
    job *j = calloc(1, sizeof *j);
    if (!j) return;
    j->kind = J_PG_CONNECT;
    w->pq_connecting = 1;
    w->n_other_jobs++;
    submit(w, j);
}

/* Every CHECK_INTERVAL_MS: which in-flight attempts are no longer running under this worker? */
static void on_check_timer(uv_timer_t *t)
{
    az_worker *w = t->data;
    if (!w->pq) {
        pq_connect(w);
        return;
    }
    if (w->pq_busy) {
        if (mono_ms() - w->pq_sent_ms > CHECK_STUCK_MS) pq_reset(w, "the check did not answer");
        return;
    }
    if (!w->flights) return;
    size_t n = (size_t)w->n_flights;
    char *ids = malloc(n * 38 + 3), *atts = malloc(n * 12 + 3);
    if (!ids || !atts) {
        free(ids);
        free(atts);
        return;
    }
    size_t li = 0, la = 0;
    ids[li++] = '{';
    atts[la++] = '{';
    for (flight *f = w->flights; f; f = f->next) {
        if (f->aborting) continue;
        li += (size_t)sprintf(ids + li, "%s%s", li > 1 ? "," : "", f->task_id);
        la += (size_t)sprintf(atts + la, "%s%d", la > 1 ? "," : "", f->attempt);
    }
    ids[li++] = '}';
    ids[li] = 0;
    atts[la++] = '}';
    atts[la] = 0;
    if (li > 2) {
        const char *p[3] = {ids, atts, w->id};
        if (!PQsendQueryParams(w->pq, az_task_sql_not_running(), 3, NULL, p, NULL, NULL, 0)) {
            pq_reset(w, PQerrorMessage(w->pq));
        } else {
            w->pq_busy = 1;
            w->pq_sent_ms = mono_ms();
            w->check_seq = w->seq;
            int f = PQflush(w->pq);
            uv_poll_start(w->pq_poll, f == 1 ? UV_READABLE | UV_WRITABLE : UV_READABLE, on_pq_poll);
        }
    }
    free(ids);
    free(atts);
}

/* ---------------------------------------------------------------- leases */

static void on_heartbeat_timer(uv_timer_t *t)
{
    az_worker *w = t->data;
    if (w->heartbeat_pending || !w->flights || w->state == W_CLOSING) return;
    job *j = calloc(1, sizeof *j);
    if (!j || !(j->arena = az_arena_new(0))) {
        free(j);
        return;
    }
    j->kind = J_HEARTBEAT;
    j->seq = w->seq;
    w->heartbeat_pending = 1;
    w->n_other_jobs++;
    submit(w, j);
}

/* ---------------------------------------------------------------- stopping */

static void close_handles(az_worker *w)
{
    w->state = W_CLOSING;
    redis_close(w, &w->rd_read);
    redis_close(w, &w->rd_cmd);
    if (w->pq) {
        uv_poll_stop(w->pq_poll);
        PQfinish(w->pq);
        uv_close((uv_handle_t *)w->pq_poll, on_pq_poll_closed);
        w->pq = NULL;
        w->pq_poll = NULL;
    }
    uv_timer_t *timers[] = {&w->redis_timer, &w->read_timer, &w->sweep_timer, &w->check_timer,
                            &w->heartbeat_timer, &w->grace_timer};
    for (size_t i = 0; i < sizeof timers / sizeof *timers; i++) {
        uv_timer_stop(timers[i]);
        uv_close((uv_handle_t *)timers[i], NULL);
    }
    uv_close((uv_handle_t *)&w->stop_async, NULL);
    az_http_free(w->http);
    w->http = NULL;
}

/* Once stopping and nothing is left running, close everything: the loop then ends. */
static void maybe_finish(az_worker *w)
{
    if (w->state == W_RUNNING || w->state == W_CLOSING) return;
    if (w->n_flights > 0 || w->n_jobs > 0 || w->n_other_jobs > 0) return;
    close_handles(w);
}

static void on_grace_timer(uv_timer_t *t)
{
    az_worker *w = t->data;
    if (w->state != W_DRAINING) return;
    w->state = W_HANDBACK;
    queue_state(w);
    if (w->n_flights) az_info("handing %d running tasks back to the queue", w->n_flights);
    for (flight *f = w->flights; f; f = f->next) abort_flight(f, AZ_EXEC_ABORT_HANDBACK);
    maybe_finish(w);
}

static void on_stop(uv_async_t *a)
{
    az_worker *w = a->data;
    if (w->state != W_RUNNING) return;
    w->state = W_DRAINING;
    queue_state(w);
    /* Stop taking tasks: the pending read ends with a NULL reply. */
    redis_close(w, &w->rd_read);
    uv_timer_stop(&w->read_timer);
    uv_timer_stop(&w->sweep_timer);
    int grace = atomic_load(&w->grace_ms);
    if (w->n_flights) az_info("worker stopping: %d tasks running, grace %d ms", w->n_flights, grace);
    if (grace <= 0) on_grace_timer(&w->grace_timer);
    else uv_timer_start(&w->grace_timer, on_grace_timer, (uint64_t)grace, 0);
    maybe_finish(w);
}

/* ---------------------------------------------------------------- thread and public API */

static void *worker_main(void *arg)
{
    az_worker *w = arg;
    uv_run(&w->loop, UV_RUN_DEFAULT);
    return NULL;
}

static void random_suffix(char *out, size_t n)
{
    FILE *f = fopen("/dev/urandom", "rb");
    unsigned char b[4] = {0};
    if (!f || fread(b, 1, sizeof b, f) != sizeof b) {
        unsigned v = (unsigned)getpid() ^ (unsigned)az_now_ms();
        memcpy(b, &v, sizeof b);
    }
    if (f) fclose(f);
    snprintf(out, n, "%02x%02x%02x%02x", b[0], b[1], b[2], b[3]);
}

az_err az_worker_new(const az_worker_config *cfg, az_worker **out, char *msg)
{
    *out = NULL;
    if (!cfg || !cfg->redis_url || !cfg->database_url || !cfg->pg || !cfg->redis || !cfg->guard ||
        !cfg->tools)
        return az_fail(msg, AZ_ERR_INVALID,
                       "worker config needs redis_url, database_url, pg, redis, guard and tools");
    if (cfg->concurrency < 0 || cfg->concurrency > AZ_WORKER_MAX_CONCURRENCY)
        return az_fail(msg, AZ_ERR_INVALID, "worker concurrency must be 1..%d",
                       AZ_WORKER_MAX_CONCURRENCY);
    if (cfg->lease_seconds < 0 || cfg->lease_seconds == 1 || cfg->lease_seconds > 3600)
        return az_fail(msg, AZ_ERR_INVALID, "task lease must be 2..3600 seconds");
    az_worker *w = calloc(1, sizeof *w);
    if (!w) return az_fail(msg, AZ_ERR_NOMEM, "out of memory");
    az_err err = az_redis_parse_url(cfg->redis_url, &w->rurl, msg);
    if (err != AZ_OK) {
        free(w);
        return err;
    }
    char host[128] = "worker", rnd[16];
    if (gethostname(host, sizeof host) != 0) snprintf(host, sizeof host, "worker");
    host[sizeof host - 1] = 0;
    random_suffix(rnd, sizeof rnd);
    char gen[200];
    snprintf(gen, sizeof gen, "%s-%d-%s", host, (int)getpid(), rnd);
    w->redis_url = strdup(cfg->redis_url);
    w->database_url = strdup(cfg->database_url);
    w->db_role = strdup(cfg->db_role && *cfg->db_role ? cfg->db_role : "agentz_app");
    w->id = strdup(cfg->id && *cfg->id ? cfg->id : gen);
    if (!w->redis_url || !w->database_url || !w->db_role || !w->id) {
        az_worker_free(w);
        return az_fail(msg, AZ_ERR_NOMEM, "out of memory");
    }
    w->concurrency = cfg->concurrency > 0 ? cfg->concurrency : AZ_WORKER_DEFAULT_CONCURRENCY;
    w->lease_ms = (int64_t)(cfg->lease_seconds > 0 ? cfg->lease_seconds : AZ_WORKER_DEFAULT_LEASE_SECONDS) * 1000;
    w->pg = cfg->pg;
    w->redis = cfg->redis;
    w->keys = cfg->keys;
    w->guard = cfg->guard;
    w->prices = cfg->prices;
    w->memory = cfg->memory;
    w->tools = cfg->tools;
    pthread_mutex_init(&w->mu, NULL);
    /* libuv sizes its threadpool once, at the first uv_queue_work in the process: claims,
     * heartbeats and the executor's blocking steps share it. */
    if (!getenv("UV_THREADPOOL_SIZE")) setenv("UV_THREADPOOL_SIZE", "16", 0);
    *out = w;
    return AZ_OK;
}

const char *az_worker_id(const az_worker *w)
{
    return w->id;
}

az_err az_worker_check_queue(const az_worker *w, int grace_ms, char *msg)
{
    az_worker *m = (az_worker *)w; /* an atomic read */
    int64_t since = atomic_load(&m->queue_down_since);
    int64_t down = since ? mono_ms() - since : 0;
    if (!since || down <= grace_ms) return AZ_OK;
    return az_fail(msg, AZ_ERR_UNAVAILABLE,
                   "worker %s cannot read the task queue: no redis connection for %lld ms", w->id,
                   (long long)down);
}

void az_worker_get_stats(const az_worker *w, az_worker_stats *out)
{
    az_worker *m = (az_worker *)w; /* atomics are read-only here */
    out->running = atomic_load_explicit(&m->s_running, memory_order_relaxed);
    out->claimed = atomic_load_explicit(&m->s_claimed, memory_order_relaxed);
    out->finished = atomic_load_explicit(&m->s_finished, memory_order_relaxed);
    out->lost = atomic_load_explicit(&m->s_lost, memory_order_relaxed);
    out->handed_back = atomic_load_explicit(&m->s_handed_back, memory_order_relaxed);
    out->events_published = atomic_load_explicit(&m->s_published, memory_order_relaxed);
    out->events_dropped = atomic_load_explicit(&m->s_dropped, memory_order_relaxed);
}

/* Makes the consumer group exist before anything is read (the daemon's synchronous Redis). It
 * starts at the beginning of the stream, not at $: hints published before any worker ever ran
 * (an api-only process started first) are delivered at once instead of after a republish. */
static az_err ensure_group(az_worker *w, char *msg)
{
    const char *argv[] = {"XGROUP", "CREATE", AZ_QUEUE_STREAM, AZ_WORKER_GROUP, "0", "MKSTREAM"};
    redisReply *r = NULL;
    char m[AZ_MSG_MAX];
    az_err err = az_redis_command(w->redis, 6, argv, NULL, &r, m);
    if (r) freeReplyObject(r);
    if (err == AZ_OK || strstr(m, "BUSYGROUP")) return AZ_OK;
    return az_fail(msg, err == AZ_ERR_UNAVAILABLE ? err : AZ_ERR_UNAVAILABLE,
                   "cannot create the consumer group %s on %s: %s", AZ_WORKER_GROUP,
                   AZ_QUEUE_STREAM, m);
}

az_err az_worker_start(az_worker *w, char *msg)
{
    pthread_mutex_lock(&w->mu);
    if (w->started) {
        pthread_mutex_unlock(&w->mu);
        return AZ_OK;
    }
    az_err err = ensure_group(w, msg);
    if (err != AZ_OK) {
        pthread_mutex_unlock(&w->mu);
        return err;
    }
    /* The check connection first, blocking: a worker that cannot reach PostgreSQL says so now. */
    PGconn *c = PQconnectdb(w->database_url);
    if (PQstatus(c) != CONNECTION_OK) {
        err = az_fail(msg, AZ_ERR_UNAVAILABLE, "worker cannot connect to postgresql: %s",
                      PQerrorMessage(c));
        PQfinish(c);
        pthread_mutex_unlock(&w->mu);
        return err;
    }
    atomic_store(&w->queue_down_since, mono_ms()); /* until both connections are up */
    if (uv_loop_init(&w->loop) != 0) {
        PQfinish(c);
        pthread_mutex_unlock(&w->mu);
        return az_fail(msg, AZ_ERR_INTERNAL, "cannot create the worker's event loop");
    }
    w->loop.data = w;
    uv_async_init(&w->loop, &w->stop_async, on_stop);
    w->stop_async.data = w;
    uv_timer_t *timers[] = {&w->redis_timer, &w->read_timer, &w->sweep_timer, &w->check_timer,
                            &w->heartbeat_timer, &w->grace_timer};
    for (size_t i = 0; i < sizeof timers / sizeof *timers; i++) {
        uv_timer_init(&w->loop, timers[i]);
        timers[i]->data = w;
    }
    if ((err = az_http_new(&w->loop, 0, &w->http, msg)) != AZ_OK) {
        PQfinish(c);
        uv_close((uv_handle_t *)&w->stop_async, NULL);
        for (size_t i = 0; i < sizeof timers / sizeof *timers; i++)
            uv_close((uv_handle_t *)timers[i], NULL);
        uv_run(&w->loop, UV_RUN_DEFAULT);
        uv_loop_close(&w->loop);
        pthread_mutex_unlock(&w->mu);
        return err;
    }
    w->env = (az_engine_env){.loop = &w->loop, .http = w->http, .pg = w->pg, .redis = w->redis,
                             .keys = w->keys, .guard = w->guard, .prices = w->prices,
                             .tools = w->tools, .memory = w->memory, .worker_id = w->id,
                             .on_event = on_event, .event_arg = w};
    pq_attach(w, c);
    w->group_ok = 1; /* ensure_group made it */
    redis_connect(w);
    uv_timer_start(&w->check_timer, on_check_timer, CHECK_INTERVAL_MS, CHECK_INTERVAL_MS);
    uint64_t hb = (uint64_t)(w->lease_ms / 3);
    uv_timer_start(&w->heartbeat_timer, on_heartbeat_timer, hb, hb);
    uv_timer_start(&w->sweep_timer, on_sweep_timer, SWEEP_INTERVAL_MS, SWEEP_INTERVAL_MS);
    if (pthread_create(&w->thread, NULL, worker_main, w) != 0) {
        close_handles(w);
        uv_run(&w->loop, UV_RUN_DEFAULT);
        uv_loop_close(&w->loop);
        pthread_mutex_unlock(&w->mu);
        return az_fail(msg, AZ_ERR_INTERNAL, "cannot start the worker thread");
    }
    w->started = 1;
    pthread_mutex_unlock(&w->mu);
    az_info("worker %s started: concurrency %d, lease %llds", w->id, w->concurrency,
            (long long)(w->lease_ms / 1000));
    return AZ_OK;
}

void az_worker_stop(az_worker *w, int grace_ms)
{
    if (!w) return;
    pthread_mutex_lock(&w->mu);
    if (w->started && !w->joined) {
        atomic_store(&w->grace_ms, grace_ms < 0 ? 0 : grace_ms);
        uv_async_send(&w->stop_async);
        pthread_join(w->thread, NULL);
        /* Handles are closed; let their close callbacks run, then free the loop. */
        uv_run(&w->loop, UV_RUN_DEFAULT);
        if (uv_loop_close(&w->loop) != 0) az_warn("worker event loop closed with handles open");
        w->joined = 1;
        az_worker_stats s;
        az_worker_get_stats(w, &s);
        az_info("worker %s stopped: %ld claimed, %ld finished, %ld handed back, %ld events dropped",
                w->id, s.claimed, s.finished, s.handed_back, s.events_dropped);
    }
    pthread_mutex_unlock(&w->mu);
}

void az_worker_free(az_worker *w)
{
    if (!w) return;
    az_worker_stop(w, 0);
    pthread_mutex_destroy(&w->mu);
    free(w->redis_url);
    free(w->database_url);
    free(w->db_role);
    free(w->id);
    free(w);
}
