/* The outbox relay thread: LISTEN on its own libpq connection, and on each notification (or
 * every second) move the oldest unpublished events to Redis in one transaction under the relay
 * lock: lock and read (one round trip), PUBLISH (pipelined), mark published and commit (one
 * round trip). */
#include "relay.h"

#include <errno.h>
#include <fcntl.h>
#include <hiredis/hiredis.h>
#include <libpq-fe.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/log.h"
#include "event/hub.h"
#include "event/outbox.h"
#include "store/redis.h"
#include "system/prom.h"

#define BATCH 500
#define IDLE_POLL_MS 1000  /* a missed notification costs at most this */
#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 2000

struct az_relay {
    char *database_url, *db_role, *redis_text;
    az_redis_url redis_url;
    PGconn *pq;
    redisContext *rc;
    int wake[2]; /* az_relay_free writes to stop the poll */
    pthread_t thread;
    int started;
    atomic_int stop;
    int pg_down_logged, redis_down_logged;
    int backoff_ms;
    pthread_mutex_t mu; /* stats */
    az_relay_stats stats;
};

static int64_t realtime_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void set_health(az_relay *r, int pg_ok, int redis_ok)
{
    pthread_mutex_lock(&r->mu);
    if (pg_ok >= 0) r->stats.postgres_ok = pg_ok;
    if (redis_ok >= 0) r->stats.redis_ok = redis_ok;
    pthread_mutex_unlock(&r->mu);
}

/* ---------------------------------------------------------------- connections */

static void pg_down(az_relay *r, const char *why)
{
    if (!r->pg_down_logged) {
        az_warn("relay lost postgresql (%.*s): events wait in the outbox; reconnecting",
                (int)strcspn(why, "\n"), why);
        r->pg_down_logged = 1;
    }
    if (r->pq) PQfinish(r->pq);
    r->pq = NULL;
    set_health(r, 0, -1);
}

static int pg_connect(az_relay *r)
{
    PGconn *c = PQconnectdb(r->database_url);
    if (PQstatus(c) != CONNECTION_OK) {
        char why[256];
        snprintf(why, sizeof why, "%s", PQerrorMessage(c));
        PQfinish(c);
        pg_down(r, why);
        return 0;
    }
    char sql[512] = "";
    if (r->db_role) {
        char *role = PQescapeIdentifier(c, r->db_role, strlen(r->db_role));
        snprintf(sql, sizeof sql, "SET ROLE %s; ", role ? role : "\"\"");
        PQfreemem(role);
    }
    /* System work (every workspace); LISTEN before the first read, so nothing committed after
     * that read goes unnoticed. */
    strncat(sql,
            "SET agentz.system = 'on'; SET statement_timeout = 10000; SET synchronous_commit = off;"
            " SET application_name = 'agentz-relay'; LISTEN " AZ_OUTBOX_NOTIFY,
            sizeof sql - strlen(sql) - 1);
    PGresult *res = PQexec(c, sql);
    int ok = PQresultStatus(res) == PGRES_COMMAND_OK;
    PQclear(res);
    if (!ok) {
        char why[256];
        snprintf(why, sizeof why, "cannot set up the session: %s", PQerrorMessage(c));
        PQfinish(c);
        pg_down(r, why);
        return 0;
    }
    r->pq = c;
    if (r->pg_down_logged) az_info("relay reconnected to postgresql");
    r->pg_down_logged = 0;
    set_health(r, 1, -1);
    return 1;
}

static void redis_down(az_relay *r, const char *why)
{
    az_prom_redis_error();
    if (!r->redis_down_logged) {
        az_warn("relay cannot publish to redis %s (%s): events wait in the outbox; retrying",
                r->redis_text, why);
        r->redis_down_logged = 1;
    }
    if (r->rc) redisFree(r->rc);
    r->rc = NULL;
    set_health(r, -1, 0);
}

static int redis_connect(az_relay *r)
{
    const az_redis_url *u = &r->redis_url;
    struct timeval tv = {2, 0};
    redisContext *c = u->path[0] ? redisConnectUnixWithTimeout(u->path, tv)
                                 : redisConnectWithTimeout(u->host, u->port, tv);
    if (!c || c->err) {
        redis_down(r, c ? c->errstr : "out of memory");
        if (c) redisFree(c);
        return 0;
    }
    redisSetTimeout(c, tv);
    if (u->password[0]) {
        redisReply *rep = u->username[0] ? redisCommand(c, "AUTH %s %s", u->username, u->password)
                                         : redisCommand(c, "AUTH %s", u->password);
        int ok = rep && rep->type != REDIS_REPLY_ERROR;
        if (rep) freeReplyObject(rep);
        if (!ok) {
            redisFree(c);
            redis_down(r, "authentication failed");
            return 0;
        }
    }
    r->rc = c;
    if (r->redis_down_logged) az_info("relay reconnected to redis %s", r->redis_text);
    r->redis_down_logged = 0;
    set_health(r, -1, 1);
    return 1;
}

/* ---------------------------------------------------------------- one batch */

static void rollback(az_relay *r)
{
    if (!r->pq) return;
    PGresult *res = PQexec(r->pq, "ROLLBACK");
    PQclear(res);
}

/* Runs n statements in one round trip (libpq pipeline mode) and returns the result of the
 * last in *out (may be NULL). 1 on success. On any failure the connection is dropped: the
 * server rolls the open transaction back, and the next pass reconnects. */
static int pipeline(az_relay *r, int n, const char *const *sql, const int *nparams,
                    const char *const *const *params, PGresult **out)
{
    if (out) *out = NULL;
    PGconn *c = r->pq;
    int ok = PQenterPipelineMode(c);
    for (int i = 0; ok && i < n; i++)
        ok = PQsendQueryParams(c, sql[i], nparams[i], NULL, params[i], NULL, NULL, 0);
    ok = ok && PQpipelineSync(c);
    for (int i = 0; ok && i < n; i++) {
        PGresult *res = PQgetResult(c);
        ExecStatusType st = PQresultStatus(res);
        if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
            const char *e = res ? PQresultErrorMessage(res) : PQerrorMessage(c);
            az_warn("relay statement failed: %.*s", (int)strcspn(e, "\n"), e);
            ok = 0;
        }
        if (ok && out && i == n - 1) *out = res;
        else PQclear(res);
        if (ok && (res = PQgetResult(c)) != NULL) { /* each query ends with a NULL */
            PQclear(res);
            ok = 0;
        }
    }
    if (ok) {
        PGresult *res = PQgetResult(c);
        ok = PQresultStatus(res) == PGRES_PIPELINE_SYNC;
        PQclear(res);
    }
    if (ok) ok = PQexitPipelineMode(c);
    if (!ok) {
        if (out) {
            PQclear(*out);
            *out = NULL;
        }
        pg_down(r, PQerrorMessage(c)[0] ? PQerrorMessage(c) : "pipeline failed");
    }
    return ok;
}

/* Queues PUBLISH of one stored event on each scope channel it belongs to; returns the number
 * of commands queued, -1 when the payload is unusable (logged; the event is skipped). */
static int queue_event(az_relay *r, const PGresult *res, int i)
{
    static const char *const prefix[3] = {AZ_HUB_CHANNEL_RUN, AZ_HUB_CHANNEL_TASK,
                                          AZ_HUB_CHANNEL_AGENTS};
    const char *scope_id[3] = {PQgetvalue(res, i, 2), PQgetvalue(res, i, 3), PQgetvalue(res, i, 1)};
    size_t len;
    unsigned char *raw = PQunescapeBytea((const unsigned char *)PQgetvalue(res, i, 7), &len);
    char m[AZ_MSG_MAX];
    Agentz__V1__Event *ev = NULL;
    if (!raw || az_outbox_decode(raw, len, 0, atoll(PQgetvalue(res, i, 8)), NULL, &ev, m) != AZ_OK) {
        az_error("relay cannot decode event %s (skipped): %s", PQgetvalue(res, i, 0),
                 raw ? m : "out of memory");
        if (raw) PQfreemem(raw);
        return -1;
    }
    PQfreemem(raw);
    int queued = 0;
    for (int s = 0; s < 3; s++) {
        long long seq = atoll(PQgetvalue(res, i, 4 + s));
        if (seq <= 0 || !scope_id[s][0]) continue;
        ev->sequence = seq;
        size_t n = agentz__v1__event__get_packed_size(ev);
        uint8_t *buf = malloc(n ? n : 1);
        char channel[128];
        snprintf(channel, sizeof channel, "%s%s", prefix[s], scope_id[s]);
        if (!buf) continue;
        agentz__v1__event__pack(ev, buf);
        const char *argv[3] = {"PUBLISH", channel, (const char *)buf};
        size_t argvlen[3] = {7, strlen(channel), n};
        if (redisAppendCommandArgv(r->rc, 3, argv, argvlen) == REDIS_OK) queued++;
        free(buf);
    }
    agentz__v1__event__free_unpacked(ev, NULL);
    return queued;
}

/* Publishes one batch. Returns 1 when a full batch went out (more may wait), 0 when the outbox
 * is drained or another relay holds the lock, -1 on trouble (back off). */
static int publish_batch(az_relay *r)
{
    PGresult *res = NULL;
    char lim[16];
    snprintf(lim, sizeof lim, "%d", BATCH);
    const char *p[1] = {lim};
    /* One round trip: BEGIN, then the lock and the read (az_outbox_sql_unpublished). */
    const char *const sql1[2] = {"BEGIN", az_outbox_sql_unpublished()};
    const int np1[2] = {0, 1};
    const char *const *const pp1[2] = {NULL, p};
    if (!pipeline(r, 2, sql1, np1, pp1, &res)) return -1;
    int rows = PQntuples(res);
    if (rows <= 0 || rows > BATCH) {
        /* Drained, or another process's relay holds the lock (it sees the same notifications). */
        PQclear(res);
        rollback(r);
        return 0;
    }
    if (!r->rc && !redis_connect(r)) goto fail;
    int pending = 0;
    for (int i = 0; i < rows; i++) {
        int q = queue_event(r, res, i);
        if (q > 0) pending += q;
    }
    for (; pending > 0; pending--) {
        void *reply = NULL;
        if (redisGetReply(r->rc, &reply) != REDIS_OK || !reply) {
            redis_down(r, r->rc && r->rc->errstr[0] ? r->rc->errstr : "connection lost");
            goto fail;
        }
        int bad = ((redisReply *)reply)->type == REDIS_REPLY_ERROR;
        if (bad) {
            az_warn("relay publish refused by redis: %s", ((redisReply *)reply)->str);
            az_prom_redis_error();
        }
        freeReplyObject(reply);
    }
    /* Every id of the batch, published or skipped as undecodable (it never will decode). */
    size_t cap = (size_t)rows * 21 + 3, k = 0;
    char *ids = malloc(cap);
    if (!ids) goto fail;
    ids[k++] = '{';
    for (int i = 0; i < rows; i++)
        k += (size_t)snprintf(ids + k, cap - k, "%s%s", i ? "," : "", PQgetvalue(res, i, 0));
    ids[k++] = '}';
    ids[k] = '\0';
    int64_t newest = atoll(PQgetvalue(res, rows - 1, 8));
    PQclear(res);
    res = NULL;
    const char *q[1] = {ids};
    /* One round trip again; the session commits without waiting for the WAL flush
     * (synchronous_commit off): a crash can only lose the "published" mark, and then the events
     * go out twice, which watchers drop by sequence. */
    const char *const sql2[2] = {az_outbox_sql_published(), "COMMIT"};
    const int np2[2] = {1, 0};
    const char *const *const pp2[2] = {q, NULL};
    int ok = pipeline(r, 2, sql2, np2, pp2, NULL);
    free(ids);
    if (!ok) return -1;
    pthread_mutex_lock(&r->mu);
    r->stats.published += (uint64_t)rows;
    r->stats.batches++;
    r->stats.lag_ms = (double)(realtime_us() - newest) / 1000.0;
    pthread_mutex_unlock(&r->mu);
    return rows == BATCH;
fail:
    PQclear(res);
    rollback(r);
    return -1;
}

/* ---------------------------------------------------------------- the thread */

/* Waits until a notification arrives, the stop pipe is written, or timeout_ms passes; drains
 * the notifications. */
static void wait_for_work(az_relay *r, int timeout_ms)
{
    struct pollfd fds[2] = {{.fd = r->wake[0], .events = POLLIN}, {.fd = -1, .events = POLLIN}};
    if (r->pq) fds[1].fd = PQsocket(r->pq);
    /* A notification read along with an earlier result is already buffered: no waiting. */
    PGnotify *n;
    int buffered = 0;
    while (r->pq && (n = PQnotifies(r->pq))) {
        PQfreemem(n);
        buffered = 1;
    }
    if (buffered) return;
    if (poll(fds, 2, timeout_ms) <= 0) return;
    if (fds[0].revents) {
        char b[16];
        while (read(r->wake[0], b, sizeof b) > 0) {}
    }
    if (r->pq && fds[1].revents) {
        if (!PQconsumeInput(r->pq)) {
            pg_down(r, PQerrorMessage(r->pq));
            return;
        }
        while ((n = PQnotifies(r->pq))) PQfreemem(n);
    }
}

static void *relay_main(void *arg)
{
    az_relay *r = arg;
    while (!atomic_load(&r->stop)) {
        int more = -1;
        if (r->pq || pg_connect(r)) more = publish_batch(r);
        if (atomic_load(&r->stop)) break;
        if (more > 0) continue;
        if (more < 0) {
            r->backoff_ms = r->backoff_ms ? r->backoff_ms * 2 : BACKOFF_MIN_MS;
            if (r->backoff_ms > BACKOFF_MAX_MS) r->backoff_ms = BACKOFF_MAX_MS;
            wait_for_work(r, r->backoff_ms);
            continue;
        }
        r->backoff_ms = 0;
        wait_for_work(r, IDLE_POLL_MS);
    }
    return NULL;
}

az_err az_relay_new(const char *database_url, const char *db_role, const char *redis_url,
                    az_relay **out, char *msg)
{
    *out = NULL;
    if (!database_url || !*database_url) return az_fail(msg, AZ_ERR_INVALID, "database_url is required");
    if (!redis_url || !*redis_url) return az_fail(msg, AZ_ERR_INVALID, "redis_url is required");
    az_relay *r = calloc(1, sizeof *r);
    if (!r) return az_fail(msg, AZ_ERR_NOMEM, "out of memory");
    r->wake[0] = r->wake[1] = -1;
    az_err err = az_redis_parse_url(redis_url, &r->redis_url, msg);
    if (err != AZ_OK) {
        free(r);
        return err;
    }
    r->database_url = strdup(database_url);
    r->db_role = db_role && *db_role ? strdup(db_role) : NULL;
    r->redis_text = strdup(r->redis_url.path[0] ? r->redis_url.path : r->redis_url.host);
    pthread_mutex_init(&r->mu, NULL);
    if (!r->database_url || (db_role && *db_role && !r->db_role) || !r->redis_text) {
        az_relay_free(r);
        return az_fail(msg, AZ_ERR_NOMEM, "out of memory");
    }
    if (pipe(r->wake) != 0 || fcntl(r->wake[0], F_SETFL, O_NONBLOCK) != 0) {
        az_relay_free(r);
        return az_fail(msg, AZ_ERR_INTERNAL, "cannot create the relay's wake pipe: %s", strerror(errno));
    }
    if (pthread_create(&r->thread, NULL, relay_main, r) != 0) {
        az_relay_free(r);
        return az_fail(msg, AZ_ERR_INTERNAL, "cannot start the relay thread");
    }
    r->started = 1;
    *out = r;
    return AZ_OK;
}

void az_relay_free(az_relay *r)
{
    if (!r) return;
    if (r->started) {
        atomic_store(&r->stop, 1);
        ssize_t w = write(r->wake[1], "x", 1);
        (void)w;
        pthread_join(r->thread, NULL);
    }
    if (r->pq) PQfinish(r->pq);
    if (r->rc) redisFree(r->rc);
    if (r->wake[0] >= 0) close(r->wake[0]);
    if (r->wake[1] >= 0) close(r->wake[1]);
    pthread_mutex_destroy(&r->mu);
    free(r->database_url);
    free(r->db_role);
    free(r->redis_text);
    free(r);
}

void az_relay_get_stats(az_relay *r, az_relay_stats *out)
{
    pthread_mutex_lock(&r->mu);
    *out = r->stats;
    pthread_mutex_unlock(&r->mu);
}
