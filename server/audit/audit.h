/* The audit log: owns the audit_log table. An append-only, hash-chained record of every mutating
 * call and every call refused as UNAUTHENTICATED or PERMISSION_DENIED. */
#ifndef AZ_AUDIT_H
#define AZ_AUDIT_H

#include <stdint.h>

#include "agentz/v1/system.pb-c.h"
#include "core/arena.h"
#include "core/ctx.h"
#include "rpc/rpc.h"
#include "store/pgpool.h"

#define AZ_AUDIT_QUEUE_DEFAULT 4096

/* One row to append. Strings may be NULL (= ""); they are cleaned (control characters and
 * invalid UTF-8 become '?') and cut to the table's limits. */
typedef struct az_audit_entry {
    int64_t time_us;          /* unix microseconds; 0 = now */
    const char *principal;    /* az_principal.id; "" = anonymous */
    const char *workspace_id; /* uuid; NULL or "" when the caller had none */
    const char *method;
    const char *target_id;
    const char *outcome; /* "OK", "PERMISSION_DENIED", ... */
    const char *peer;
    const char *request_id;
} az_audit_entry;

/* The asynchronous writer behind az_audit_observe. */
typedef struct az_audit az_audit;

/* Starts a writer thread appending queued entries to pg (borrowed; must outlive the writer). The
 * queue holds at most queue_limit entries (0 = AZ_AUDIT_QUEUE_DEFAULT); beyond that the calling
 * thread appends synchronously, so no entry is dropped. NULL with msg when the thread cannot start. */
az_audit *az_audit_new(az_pg *pg, int queue_limit, char *msg);

/* Writes what is queued (retrying a failing database for a few seconds; entries that still cannot
 * be written are logged at error level, field by field, rather than lost), stops the thread and
 * frees a. Call after the server that observes into it is freed. Accepts NULL. */
void az_audit_free(az_audit *a);

/* An az_observer_fn (arg = az_audit *): queues an entry when method's permission (az_perm_find)
 * is mutating, or when status is UNAUTHENTICATED (16) or PERMISSION_DENIED (7). Cheap: copies
 * the call's fields and signals the writer; blocks on the database only when the queue is full.
 * A failed synchronous write is logged with the entry's fields. */
void az_audit_observe(void *arg, az_call *c, const char *method, int status, int64_t duration_us);

/* Waits until everything queued so far is written (or timeout_ms passes: AZ_ERR_DEADLINE). */
az_err az_audit_flush(az_audit *a, int timeout_ms, char *msg);

/* Appends e now, on the calling thread, under the chain's lock; *id (may be NULL) receives the
 * row's id. Used by the writer, and by tests and tools. */
az_err az_audit_append(az_pg *pg, const az_audit_entry *e, int64_t *id, char *msg);

/* Most entries one batch holds (the writer's batches, az_audit_append_many). */
#define AZ_AUDIT_BATCH_MAX 64

/* Appends e[0..n) (1..AZ_AUDIT_BATCH_MAX) now, in order, in one transaction as the writer
 * does: all or none. *last_id (may be NULL) receives the last row's id. AZ_ERR_INVALID for n
 * out of range; nothing is written on any error. */
az_err az_audit_append_many(az_pg *pg, const az_audit_entry *e, size_t n, int64_t *last_id, char *msg);

/* Recomputes the whole chain in one snapshot, from its anchor when retention pruned its start
 * (the oldest kept row must link to the last pruned one). AZ_OK with *rows = rows checked and *first_bad_id =
 * 0 when intact, or the id of the first row whose hash or link does not match (msg says which);
 * errors only when the database fails. */
az_err az_audit_verify(az_pg *pg, int64_t *rows, int64_t *first_bad_id, char *msg);

/* Retention: deletes the oldest entries recorded more than older_than_ms (> 0) ago — a prefix of
 * the chain, never the newest entry — in transactions of at most 1000 rows, moving the chain's
 * anchor (audit_anchor) to the last deleted row so az_audit_verify still checks every kept row.
 * Stops after about 200000 rows per call. *deleted (may be NULL) gets the count even when a later
 * batch fails; AZ_ERR_INVALID for older_than_ms <= 0, else database errors. */
az_err az_audit_prune(az_pg *pg, int64_t older_than_ms, int64_t *deleted, char *msg);

/* Filters of ListAuditLog; empty strings and 0 times mean "any". */
typedef struct az_audit_query {
    const char *principal;
    const char *method;
    int64_t start_us; /* at or after */
    int64_t end_us;   /* before */
    int page_size;    /* already clamped to 1..1000 */
    const char *page_token;
} az_audit_query;

/* One page of ctx's workspace entries, newest first. A token from other filters, or a malformed
 * one, is AZ_ERR_INVALID. */
az_err az_audit_list(az_pg *pg, const az_ctx *ctx, const az_audit_query *q, az_arena *arena,
                     Agentz__V1__ListAuditLogResponse **out, char *msg);

#endif
