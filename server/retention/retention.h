/* Data retention: one pass deleting stored events, finished task attempts and audit entries older
 * than their retention, in bounded batches. Run by the reconciler (az_reconciler_set_retention). */
#ifndef AZ_RETENTION_H
#define AZ_RETENTION_H

#include <stdint.h>

#include "core/err.h"
#include "store/pgpool.h"

/* How long each kind of row is kept, in milliseconds; 0 = forever. */
typedef struct az_retention_policy {
    int64_t events_ms;   /* events of finished runs/tasks, agent events (az_outbox_prune) */
    int64_t attempts_ms; /* task attempts, counted from their end */
    int64_t audit_ms;    /* audit entries, counted from the call */
} az_retention_policy;

typedef struct az_retention_counts {
    int64_t events, attempts, audit; /* rows deleted */
} az_retention_counts;

/* Deletes what policy says is expired: events (never one not yet relayed, never those of a run
 * or task that has not finished), attempts that ended before their retention, audit entries (the
 * chain stays verifiable from its anchor). Every batch is its own transaction, and each kind
 * stops after about 200000 rows per pass, so a huge backlog is worked off over several passes
 * without one giant transaction. All three kinds are tried even when one fails; the first error
 * is returned with msg, counts (may be NULL) holds what was deleted anyway. */
az_err az_retention_run(az_pg *pg, const az_retention_policy *policy, az_retention_counts *counts,
                        char *msg);

/* An az_reconciler retention hook: arg is an az_retention_policy (borrowed); logs what it deleted. */
az_err az_retention_hook(void *arg, az_pg *pg, char *msg);

#endif
