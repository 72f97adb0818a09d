/* The transactional outbox: events inserted in the transaction of the change they describe,
 * numbered per scope by locked event_seqs rows, listed for replay, and pruned by retention. The
 * relay (relay.c) publishes them through the statements exported at the end. */
#include "outbox.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "core/text.h"
#include "event/webhook.h"
#include "google/protobuf/timestamp.pb-c.h"
#include "store/pgarray.h"

#define LIST_MAX 1000
#define PRUNE_BATCH 200        /* runs (or tasks) deleted per statement */
#define PRUNE_MAX_ROWS 200000  /* per call, so one janitor pass stays short */

/* Relay exclusion: one relay at a time across all processes of a database, so the events of a
 * scope reach Redis in sequence order. An arbitrary constant ("azev" in ASCII). */
#define RELAY_LOCK_KEY "1635148150"

/* One round trip per event: agentz_event_append (migration 0010) upserts the counter of every
 * scope the event belongs to (run, task, agents, always in that order so two appenders lock
 * shared counters in the same order), inserts the event numbered from them, queues it for the
 * relay, and notifies the relay at commit (PostgreSQL folds identical notifications of one
 * transaction into one). The counter rows stay locked until commit: a second transaction
 * appending to the same scope waits, so within a scope sequence order, id order (the id is
 * drawn after the counters are locked) and commit order agree. A function rather than one
 * ad-hoc statement: its statements keep their plans for the session instead of being parsed
 * and planned on every call (measured: about 20 % more creates per second). */
static const char notify_sql[] = "SELECT pg_notify('" AZ_OUTBOX_NOTIFY "', '')";

static const char append_sql[] =
    "SELECT agentz_event_append($1::uuid, $2::uuid, $3::uuid, $4::uuid, $5::boolean,"
    " $6::boolean, $7::bytea)";

static const char *uuid_or_null(const char *s) { return s && az_text_is_uuid(s) ? s : NULL; }

/* "task.succeeded", "run.failed", ...: the webhook event type of a terminal event, else NULL. */
static const char *terminal_type(const Agentz__V1__Event *ev)
{
    if (ev->payload_case == AGENTZ__V1__EVENT__PAYLOAD_TASK_STATUS && ev->task_status) {
        switch (ev->task_status->to) {
        case AGENTZ__V1__TASK_STATUS__TASK_STATUS_SUCCEEDED: return "task.succeeded";
        case AGENTZ__V1__TASK_STATUS__TASK_STATUS_FAILED: return "task.failed";
        case AGENTZ__V1__TASK_STATUS__TASK_STATUS_CANCELLED: return "task.cancelled";
        default: return NULL;
        }
    }
    if (ev->payload_case == AGENTZ__V1__EVENT__PAYLOAD_RUN_STATUS && ev->run_status) {
        switch (ev->run_status->to) {
        case AGENTZ__V1__RUN_STATUS__RUN_STATUS_SUCCEEDED: return "run.succeeded";
        case AGENTZ__V1__RUN_STATUS__RUN_STATUS_FAILED: return "run.failed";
        case AGENTZ__V1__RUN_STATUS__RUN_STATUS_CANCELLED: return "run.cancelled";
        default: return NULL;
        }
    }
    return NULL;
}

/* The packed event as a bytea literal in hex ("\x..."), malloc'd. */
static char *pack_hex(const Agentz__V1__Event *ev)
{
    Agentz__V1__Event copy = *ev;
    copy.sequence = 0; /* per scope: set when read */
    copy.time = NULL;  /* create_time: set when read */
    size_t n = agentz__v1__event__get_packed_size(&copy);
    uint8_t *buf = malloc(n ? n : 1);
    char *hex = malloc(2 * n + 3);
    if (!buf || !hex) {
        free(buf);
        free(hex);
        return NULL;
    }
    agentz__v1__event__pack(&copy, buf);
    static const char digits[] = "0123456789abcdef";
    hex[0] = '\\';
    hex[1] = 'x';
    for (size_t i = 0; i < n; i++) {
        hex[2 + 2 * i] = digits[buf[i] >> 4];
        hex[3 + 2 * i] = digits[buf[i] & 15];
    }
    hex[2 + 2 * n] = '\0';
    free(buf);
    return hex;
}

/* Set-based az_outbox_append for a batch (one statement, however many events): each scope's
 * counter is raised once by the batch's count of events in it, locked in (scope, id) order, so
 * batches and single appends take shared counters in the same order; the events are numbered
 * from the raised counters in batch order and inserted in that order, so ids follow sequence
 * numbers within each scope. $1 workspace; $2..$7 parallel arrays (run, task, agent, agents,
 * terminal, payload). */
static const char append_many_sql[] =
    "WITH ev AS (SELECT e.ord, e.run, e.task, e.agent, e.ags, e.term, e.body"
    "  FROM unnest($2::uuid[], $3::uuid[], $4::uuid[], $5::boolean[], $6::boolean[], $7::bytea[])"
    "  WITH ORDINALITY AS e(run, task, agent, ags, term, body, ord)),"
    " need AS (SELECT 1::smallint AS scope, run AS sid, count(*) AS k FROM ev"
    "  WHERE run IS NOT NULL GROUP BY run"
    "  UNION ALL SELECT 2::smallint, task, count(*) FROM ev WHERE task IS NOT NULL GROUP BY task"
    "  UNION ALL SELECT 3::smallint, $1::uuid, count(*) FROM ev WHERE ags HAVING count(*) > 0),"
    " up AS (INSERT INTO event_seqs AS q (workspace_id, scope, scope_id, last_seq)"
    "  SELECT $1, scope, sid, k FROM need ORDER BY scope, sid"
    "  ON CONFLICT (workspace_id, scope, scope_id) DO UPDATE SET last_seq = q.last_seq + excluded.last_seq"
    "  RETURNING q.scope, q.scope_id, q.last_seq),"
    " numbered AS (SELECT ev.ord, ev.run, ev.task, ev.agent, ev.term, ev.body,"
    "  CASE WHEN ev.run IS NOT NULL THEN r.last_seq - count(*) OVER (PARTITION BY ev.run)"
    "   + row_number() OVER (PARTITION BY ev.run ORDER BY ev.ord) END AS rs,"
    "  CASE WHEN ev.task IS NOT NULL THEN t.last_seq - count(*) OVER (PARTITION BY ev.task)"
    "   + row_number() OVER (PARTITION BY ev.task ORDER BY ev.ord) END AS ts,"
    "  CASE WHEN ev.ags THEN a.last_seq - count(*) OVER (PARTITION BY ev.ags)"
    "   + row_number() OVER (PARTITION BY ev.ags ORDER BY ev.ord) END AS ag"
    "  FROM ev LEFT JOIN up r ON r.scope = 1 AND r.scope_id = ev.run"
    "  LEFT JOIN up t ON t.scope = 2 AND t.scope_id = ev.task"
    "  LEFT JOIN up a ON a.scope = 3 AND ev.ags),"
    " ins AS (INSERT INTO events (workspace_id, run_id, task_id, agent_id, run_seq, task_seq,"
    "  agents_seq, terminal, payload)"
    "  SELECT $1, run, task, agent, rs, ts, ag, term, body FROM numbered ORDER BY ord RETURNING id)"
    " INSERT INTO event_queue (id) SELECT id FROM ins";

az_err az_outbox_append_many(az_pgconn *c, const az_ctx *ctx, const Agentz__V1__Event *const *evs,
                             size_t n, char *msg)
{
    if (n == 0) return AZ_OK;
    if (n > AZ_OUTBOX_BATCH_MAX)
        return az_fail(msg, AZ_ERR_INVALID, "events: at most %d per batch, got %zu", AZ_OUTBOX_BATCH_MAX, n);
    if (!ctx || !ctx->workspace_id || !az_text_is_uuid(ctx->workspace_id))
        return az_fail(msg, AZ_ERR_INVALID, "event: a workspace is required");
    az_pgarray a[6] = {{0}};
    az_err err = AZ_OK;
    for (size_t i = 0; i < n && err == AZ_OK; i++) {
        const Agentz__V1__Event *ev = evs[i];
        if (!ev || ev->payload_case == AGENTZ__V1__EVENT__PAYLOAD__NOT_SET) {
            err = az_fail(msg, AZ_ERR_INVALID, "events[%zu]: payload is required", i);
            break;
        }
        const char *run = uuid_or_null(ev->run_id), *task = uuid_or_null(ev->task_id);
        int agents = ev->payload_case == AGENTZ__V1__EVENT__PAYLOAD_AGENT_STATUS;
        if (!run && !task && !agents) {
            err = az_fail(msg, AZ_ERR_INVALID, "events[%zu]: belongs to no scope", i);
            break;
        }
        char *hex = pack_hex(ev);
        if (!hex) {
            err = az_fail(msg, AZ_ERR_NOMEM, "out of memory");
            break;
        }
        az_pgarray_add(&a[0], run);
        az_pgarray_add(&a[1], task);
        az_pgarray_add(&a[2], uuid_or_null(ev->agent_id));
        az_pgarray_add(&a[3], agents ? "t" : "f");
        az_pgarray_add(&a[4], terminal_type(ev) ? "t" : "f");
        az_pgarray_add(&a[5], hex);
        free(hex);
    }
    const char *p[7] = {ctx->workspace_id};
    for (int k = 0; k < 6 && err == AZ_OK; k++)
        if (!(p[k + 1] = az_pgarray_text(&a[k]))) err = az_fail(msg, AZ_ERR_NOMEM, "out of memory");
    if (err == AZ_OK) {
        err = az_pg_defer(c, ctx, append_many_sql, 7, p, msg);
        if (err == AZ_OK) az_pg_after_commit(c, ctx, notify_sql);
    }
    for (int k = 0; k < 6; k++) az_pgarray_free(&a[k]);
    return err;
}

az_err az_outbox_append(az_pgconn *c, const az_ctx *ctx, const Agentz__V1__Event *ev,
                        const char *const *webhook_urls, size_t n_webhook_urls, char *msg)
{
    if (!ev || ev->payload_case == AGENTZ__V1__EVENT__PAYLOAD__NOT_SET)
        return az_fail(msg, AZ_ERR_INVALID, "event: payload is required");
    if (!ctx || !ctx->workspace_id || !az_text_is_uuid(ctx->workspace_id))
        return az_fail(msg, AZ_ERR_INVALID, "event: a workspace is required");
    const char *run = uuid_or_null(ev->run_id), *task = uuid_or_null(ev->task_id);
    int agents = ev->payload_case == AGENTZ__V1__EVENT__PAYLOAD_AGENT_STATUS;
    if (!run && !task && !agents)
        return az_fail(msg, AZ_ERR_INVALID,
                       "event: belongs to no scope (needs run_id, task_id or an agent status)");
    const char *type = terminal_type(ev);
    char *hex = pack_hex(ev);
    if (!hex) return az_fail(msg, AZ_ERR_NOMEM, "out of memory");
    const char *p[7] = {ctx->workspace_id, run, task, uuid_or_null(ev->agent_id),
                        agents ? "t" : "f", type ? "t" : "f", hex};
    int hooked = type && n_webhook_urls > 0;
    if (!hooked) { /* nothing needs the row's id: it rides with the next statement or COMMIT */
        az_err err = az_pg_defer(c, ctx, append_sql, 7, p, msg);
        free(hex);
        /* The relay is told after the commit, not inside it: a notifying transaction holds the
         * server's notification lock through its commit flush (migration 0012). */
        if (err == AZ_OK) az_pg_after_commit(c, ctx, notify_sql);
        return err;
    }
    PGresult *r;
    az_err err = az_pg_exec(c, ctx, append_sql, 7, p, &r, msg);
    free(hex);
    if (err != AZ_OK) return err;
    int64_t id = atoll(PQgetvalue(r, 0, 0));
    PQclear(r);
    az_pg_after_commit(c, ctx, notify_sql);
    err = az_webhook_enqueue(c, ctx, id, task, task ? NULL : run, type, webhook_urls,
                             n_webhook_urls, msg);
    /* Refused before any SQL ran (a URL stored under older rules): the change and its event
     * still commit; only the deliveries are lost, which the log says. */
    if (err == AZ_ERR_INVALID) {
        az_warn("cannot queue the webhooks of event %lld (%s): %s", (long long)id, type, msg);
        err = AZ_OK;
    }
    return err;
}

static const char *const list_sql[] = {
    [AZ_EVENT_SCOPE_RUN] =
        "SELECT run_seq, payload, (extract(epoch FROM create_time) * 1000000)::bigint FROM events"
        " WHERE workspace_id = $1 AND run_id = $2::uuid AND run_seq > $3::bigint"
        " ORDER BY run_seq LIMIT $4::integer",
    [AZ_EVENT_SCOPE_TASK] =
        "SELECT task_seq, payload, (extract(epoch FROM create_time) * 1000000)::bigint FROM events"
        " WHERE workspace_id = $1 AND task_id = $2::uuid AND task_seq > $3::bigint"
        " ORDER BY task_seq LIMIT $4::integer",
    [AZ_EVENT_SCOPE_AGENTS] =
        "SELECT agents_seq, payload, (extract(epoch FROM create_time) * 1000000)::bigint FROM events"
        " WHERE workspace_id = $1 AND agents_seq > $3::bigint AND $2::text IS NULL"
        " ORDER BY agents_seq LIMIT $4::integer",
};

az_err az_outbox_decode(const uint8_t *payload, size_t len, int64_t sequence, int64_t time_us,
                        ProtobufCAllocator *alloc, Agentz__V1__Event **out, char *msg)
{
    *out = NULL;
    Agentz__V1__Event *ev = agentz__v1__event__unpack(alloc, len, payload);
    if (!ev) return az_fail(msg, AZ_ERR_INTERNAL, "stored event does not unpack");
    /* NULL alloc: protobuf-c's default allocator is malloc/free, so free_unpacked frees this. */
    Google__Protobuf__Timestamp *t = alloc ? alloc->alloc(alloc->allocator_data, sizeof *t)
                                           : malloc(sizeof *t);
    if (!t) {
        agentz__v1__event__free_unpacked(ev, alloc);
        return az_fail(msg, AZ_ERR_NOMEM, "out of memory");
    }
    google__protobuf__timestamp__init(t);
    t->seconds = time_us / 1000000;
    t->nanos = (int32_t)(time_us % 1000000) * 1000;
    ev->time = t;
    ev->sequence = sequence;
    *out = ev;
    return AZ_OK;
}

az_err az_outbox_list(az_pg *pg, const az_ctx *ctx, az_event_scope scope, const char *scope_id,
                      int64_t after, int limit, az_arena *arena, Agentz__V1__Event ***out,
                      size_t *n, char *msg)
{
    *out = NULL;
    *n = 0;
    if (scope < AZ_EVENT_SCOPE_RUN || scope > AZ_EVENT_SCOPE_AGENTS)
        return az_fail(msg, AZ_ERR_INVALID, "scope: unknown event scope %d", (int)scope);
    if (scope != AZ_EVENT_SCOPE_AGENTS && !az_text_is_uuid(scope_id))
        return az_fail(msg, AZ_ERR_INVALID, "%s: not an id",
                       scope == AZ_EVENT_SCOPE_RUN ? "run_id" : "task_id");
    if (!ctx || !ctx->workspace_id || !az_text_is_uuid(ctx->workspace_id))
        return az_fail(msg, AZ_ERR_INVALID, "events: a workspace is required");
    if (limit < 1 || limit > LIST_MAX)
        return az_fail(msg, AZ_ERR_INVALID, "limit must be 1..%d", LIST_MAX);
    if (after < 0) after = 0;
    char aft[24], lim[16];
    snprintf(aft, sizeof aft, "%lld", (long long)after);
    snprintf(lim, sizeof lim, "%d", limit);
    const char *p[4] = {ctx->workspace_id, scope == AZ_EVENT_SCOPE_AGENTS ? NULL : scope_id, aft,
                        lim};
    az_pgconn *c;
    az_err err = az_pg_acquire(pg, ctx, &c, msg);
    if (err != AZ_OK) return err;
    PGresult *r;
    err = az_pg_exec(c, ctx, list_sql[scope], 4, p, &r, msg);
    az_pg_release(c);
    if (err != AZ_OK) return err;
    int rows = PQntuples(r);
    Agentz__V1__Event **v = az_arena_alloc(arena, (size_t)(rows ? rows : 1) * sizeof *v);
    if (!v) err = az_fail(msg, AZ_ERR_NOMEM, "out of memory");
    for (int i = 0; i < rows && err == AZ_OK; i++) {
        size_t len;
        unsigned char *raw = PQunescapeBytea((const unsigned char *)PQgetvalue(r, i, 1), &len);
        if (!raw) {
            err = az_fail(msg, AZ_ERR_NOMEM, "out of memory");
            break;
        }
        err = az_outbox_decode(raw, len, atoll(PQgetvalue(r, i, 0)), atoll(PQgetvalue(r, i, 2)),
                               az_arena_allocator(arena), &v[i], msg);
        PQfreemem(raw);
    }
    PQclear(r);
    if (err != AZ_OK) return err;
    *out = v;
    *n = (size_t)rows;
    return AZ_OK;
}

/* Retention, in batches of PRUNE_BATCH scopes: a run whose newest run-level event is terminal
 * and older than the cutoff goes whole (its task events with it), likewise a standalone task;
 * agent events go by age alone. Nothing still waiting for the relay is deleted. */
static const char *const prune_sql[] = {
    "WITH done AS (SELECT t.workspace_id, t.run_id FROM events t"
    " WHERE t.terminal AND t.create_time < clock_timestamp() - make_interval(secs => $1::bigint / 1000.0)"
    " AND t.run_id IS NOT NULL AND t.task_id IS NULL"
    " AND NOT EXISTS (SELECT 1 FROM events n WHERE n.workspace_id = t.workspace_id"
    "  AND n.run_id = t.run_id AND n.run_seq > t.run_seq)"
    " LIMIT $2::integer)"
    " DELETE FROM events e USING done WHERE e.workspace_id = done.workspace_id"
    " AND e.run_id = done.run_id AND e.run_seq IS NOT NULL"
    " AND NOT EXISTS (SELECT 1 FROM event_queue q WHERE q.id = e.id)",
    "WITH done AS (SELECT t.workspace_id, t.task_id FROM events t"
    " WHERE t.terminal AND t.create_time < clock_timestamp() - make_interval(secs => $1::bigint / 1000.0)"
    " AND t.run_id IS NULL AND t.task_id IS NOT NULL"
    " AND NOT EXISTS (SELECT 1 FROM events n WHERE n.workspace_id = t.workspace_id"
    "  AND n.task_id = t.task_id AND n.task_seq > t.task_seq)"
    " LIMIT $2::integer)"
    " DELETE FROM events e USING done WHERE e.workspace_id = done.workspace_id"
    " AND e.task_id = done.task_id AND e.run_id IS NULL AND e.task_seq IS NOT NULL"
    " AND NOT EXISTS (SELECT 1 FROM event_queue q WHERE q.id = e.id)",
    "DELETE FROM events e WHERE e.id IN (SELECT id FROM events"
    " WHERE run_id IS NULL AND task_id IS NULL"
    " AND create_time < clock_timestamp() - make_interval(secs => $1::bigint / 1000.0)"
    " ORDER BY create_time LIMIT $2::integer * 50)"
    " AND NOT EXISTS (SELECT 1 FROM event_queue q WHERE q.id = e.id)",
};

/* System work: every workspace. */
static const az_ctx system_ctx = {.workspace_id = "", .principal = "", .request_id = "retention",
                                  .deadline_ms = -1};

az_err az_outbox_prune(az_pg *pg, int64_t older_than_ms, int64_t *deleted, char *msg)
{
    if (deleted) *deleted = 0;
    if (older_than_ms < 0) return az_fail(msg, AZ_ERR_INVALID, "older_than_ms must be >= 0");
    char older[24], batch[16];
    snprintf(older, sizeof older, "%lld", (long long)older_than_ms);
    snprintf(batch, sizeof batch, "%d", PRUNE_BATCH);
    const char *p[2] = {older, batch};
    az_pgconn *c;
    az_err err = az_pg_acquire(pg, &system_ctx, &c, msg);
    if (err != AZ_OK) return err;
    int64_t total = 0;
    for (size_t k = 0; k < sizeof prune_sql / sizeof *prune_sql && err == AZ_OK; k++) {
        /* Each batch its own transaction: short locks, and progress kept if one fails. */
        while (total < PRUNE_MAX_ROWS) {
            PGresult *r;
            if ((err = az_pg_exec(c, &system_ctx, prune_sql[k], 2, p, &r, msg)) != AZ_OK) break;
            int64_t n = atoll(PQcmdTuples(r));
            PQclear(r);
            total += n;
            if (n == 0) break;
        }
    }
    az_pg_release(c);
    if (deleted) *deleted = total;
    return err;
}

const char *az_outbox_sql_unpublished(void)
{
    /* The lock in a CTE runs once (volatile CTEs are materialized), in the same round trip as
     * the read: the relay's latency is the notification-to-publish path. The events are looked
     * up one by one (LATERAL … LIMIT 1 keeps the planner from flattening it into a join): as a
     * merge join the read walked events_pkey from the table's first row on every call, 7.8 ms a
     * call at 10,000 events and growing with the table (docs/performance.md, issue 12). */
    return "WITH relay AS (SELECT pg_try_advisory_xact_lock(" RELAY_LOCK_KEY ") AS locked),"
           " q AS MATERIALIZED (SELECT q.id FROM relay, event_queue q WHERE relay.locked"
           "  ORDER BY q.id LIMIT $1::integer FOR UPDATE OF q)"
           " SELECT e.id, e.workspace_id::text, COALESCE(e.run_id::text, ''),"
           " COALESCE(e.task_id::text, ''), COALESCE(e.run_seq, 0), COALESCE(e.task_seq, 0),"
           " COALESCE(e.agents_seq, 0), e.payload,"
           " (extract(epoch FROM e.create_time) * 1000000)::bigint"
           " FROM q CROSS JOIN LATERAL (SELECT * FROM events e WHERE e.id = q.id LIMIT 1) e"
           " ORDER BY q.id";
}

const char *az_outbox_sql_published(void)
{
    return "DELETE FROM event_queue WHERE id = ANY ($1::bigint[])";
}
