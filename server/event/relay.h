/* The outbox relay: one thread per server process that publishes committed outbox events
 * (server/event/outbox.h) to their Redis channels (server/event/hub.h), in sequence order per
 * scope, and marks them published. Wakes on the outbox's NOTIFY, and every second regardless. */
#ifndef AZ_RELAY_H
#define AZ_RELAY_H

#include <stdint.h>

#include "core/err.h"

typedef struct az_relay az_relay;

/* Starts the relay thread with its own PostgreSQL connection to database_url (outside the pool:
 * it LISTENs; as db_role with agentz.system = 'on', or as the login role when db_role is NULL
 * or "") and its own synchronous Redis connection to redis_url. Only one relay of all the
 * processes sharing a database publishes at a time (a transaction-scoped advisory lock), so
 * each scope reaches Redis in sequence order. When PostgreSQL or Redis is unreachable the relay
 * keeps retrying with backoff (logged once per outage): events wait in the outbox and go out
 * when both are back; a batch interrupted by a Redis failure is rolled back and published again
 * (a watcher may see an event twice and drops it by sequence). Neither server needs to be up
 * at start. On AZ_OK *out is the caller's, released with az_relay_free; AZ_ERR_INVALID for a
 * malformed redis_url or a missing database_url, AZ_ERR_NOMEM, AZ_ERR_INTERNAL when the thread
 * cannot start. */
az_err az_relay_new(const char *database_url, const char *db_role, const char *redis_url,
                    az_relay **out, char *msg);

/* Stops the thread (a batch in progress is finished or rolled back) and frees. Accepts NULL. */
void az_relay_free(az_relay *r);

/* Counters for metrics (safe from any thread): events published (each counted once, however
 * many channels it went to), and the lag of the newest published event: when it was published
 * minus when it was created, in milliseconds. redis_ok and postgres_ok are 0 during an outage. */
typedef struct az_relay_stats {
    uint64_t published;
    uint64_t batches;
    double lag_ms;
    int redis_ok;
    int postgres_ok;
} az_relay_stats;
void az_relay_get_stats(az_relay *r, az_relay_stats *out);

#endif
