/* The transactional outbox: durable events (status changes, progress, tool calls) written in the
 * same PostgreSQL transaction as the change they describe, each with a gap-free sequence per
 * scope (its run, its task, its workspace's agents). Owns the events and event_seqs tables. */
#ifndef AZ_OUTBOX_H
#define AZ_OUTBOX_H

#include <stddef.h>
#include <stdint.h>

#include "agentz/v1/event.pb-c.h"
#include "core/arena.h"
#include "core/ctx.h"
#include "store/pgpool.h"

/* The scopes a stored event is numbered in; Event.sequence is the event's number in the scope
 * being watched. */
typedef enum az_event_scope {
    AZ_EVENT_SCOPE_RUN = 1,    /* every event with run_id (WatchRun) */
    AZ_EVENT_SCOPE_TASK = 2,   /* every event with task_id (WatchTask) */
    AZ_EVENT_SCOPE_AGENTS = 3, /* agent status events of a workspace (WatchAgents) */
} az_event_scope;

/* NOTIFY channel the relay LISTENs on; az_outbox_append notifies it right after the commit. */
#define AZ_OUTBOX_NOTIFY "agentz_events"

/* Appends ev inside the caller's transaction c (ev->sequence and ev->time are ignored: the
 * sequences come from event_seqs rows locked until commit, so within a scope commit order is
 * sequence order; time is the transaction's clock). It is numbered in the run scope when
 * ev->run_id is set, the task scope when ev->task_id is set, and the agents scope when its
 * payload is agent_status. webhook_urls (n may be 0) each get a webhook delivery when the event
 * is terminal (task or run reached succeeded/failed/cancelled). Nothing is visible to watchers
 * before commit; a rollback drops the event with the change. AZ_ERR_INVALID for an event with
 * no payload or no scope, or without a workspace in ctx; database errors as az_pg_exec returns
 * them (the caller's transaction is then aborted). Append after the transaction's last row
 * lock on other tables (the transitions collect their events and append them at the end): the
 * scope counters are then the last locks taken, always run before task before agents, so
 * appenders cannot deadlock on them. No round trip of its own: the append rides with the
 * transaction's next statement or its COMMIT (az_pg_defer), and its errors are theirs; an event
 * with webhooks takes one round trip (the deliveries need its id). */
az_err az_outbox_append(az_pgconn *c, const az_ctx *ctx, const Agentz__V1__Event *ev,
                        const char *const *webhook_urls, size_t n_webhook_urls, char *msg);

/* Most events one az_outbox_append_many takes. */
#define AZ_OUTBOX_BATCH_MAX 1000

/* az_outbox_append for n events of one transaction in one statement (batched claims and
 * creates): numbered and queued exactly as n calls of az_outbox_append in array order would,
 * but without webhook deliveries (pass events whose webhooks are wanted to az_outbox_append).
 * No round trip of its own (az_pg_defer). AZ_ERR_INVALID (naming events[i]) for an event
 * without payload or scope, more than AZ_OUTBOX_BATCH_MAX events, or no workspace in ctx:
 * nothing is queued then. */
az_err az_outbox_append_many(az_pgconn *c, const az_ctx *ctx, const Agentz__V1__Event *const *evs,
                             size_t n, char *msg);

/* Stored events of one scope (scope_id: the run or task id; ignored for AGENTS, which uses
 * ctx's workspace) with sequence > after, ascending, at most limit (1..1000), each with
 * Event.sequence set to its number in that scope; into arena. *n = 0 when none. */
az_err az_outbox_list(az_pg *pg, const az_ctx *ctx, az_event_scope scope, const char *scope_id,
                      int64_t after, int limit, az_arena *arena, Agentz__V1__Event ***out,
                      size_t *n, char *msg);

/* Deletes stored events older than older_than_ms whose run (or task) has finished; system work
 * for the janitor. *deleted (may be NULL) gets the count. */
az_err az_outbox_prune(az_pg *pg, int64_t older_than_ms, int64_t *deleted, char *msg);

/* A stored payload (packed agentz.v1.Event without sequence and time) as the event of one
 * scope: unpacked with alloc (an arena's allocator, or NULL for malloc: then free it with
 * agentz__v1__event__free_unpacked), sequence and time (microseconds since the epoch) set.
 * AZ_ERR_INTERNAL when the bytes do not unpack, AZ_ERR_NOMEM. */
az_err az_outbox_decode(const uint8_t *payload, size_t len, int64_t sequence, int64_t time_us,
                        ProtobufCAllocator *alloc, Agentz__V1__Event **out, char *msg);

/* Statements of the relay (server/event/relay.c), which runs them on its own connection as
 * system work inside one transaction: az_outbox_sql_unpublished() ($1 limit) takes the relay
 * lock for the transaction (one relay at a time across all processes, so each scope is
 * published in sequence order) and, when it got it, locks and returns the oldest events not yet
 * published, in id order (no rows when another relay holds the lock), columns: id,
 * workspace_id, run_id, task_id ("" when none), run_seq, task_seq, agents_seq (0 when not in
 * that scope), payload (bytea), create_time in microseconds; az_outbox_sql_published() ($1
 * bigint[] literal of ids) marks them published. Static text. */
const char *az_outbox_sql_unpublished(void);
const char *az_outbox_sql_published(void);

#endif
