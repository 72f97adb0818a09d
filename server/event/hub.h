/* Event fan-out inside one server process: one Redis subscription per channel in use, shared by
 * any number of in-process subscribers (gRPC watch streams). Runs its own thread with a libuv
 * loop and a hiredis async connection; resubscribes after Redis comes back. */
#ifndef AZ_HUB_H
#define AZ_HUB_H

#include <stddef.h>
#include <stdint.h>

#include "agentz/v1/event.pb-c.h"
#include "core/err.h"

/* Channels: the relay publishes each stored event, packed (agentz.v1.Event) with the sequence
 * of that scope, on the channel of each scope it belongs to; workers publish ephemeral events
 * (sequence 0: token deltas, tool calls, progress ticks) on the task channel. */
#define AZ_HUB_CHANNEL_RUN "agentz:events:run:"       /* + run id */
#define AZ_HUB_CHANNEL_TASK "agentz:events:task:"     /* + task id */
#define AZ_HUB_CHANNEL_AGENTS "agentz:events:agents:" /* + workspace id */

typedef struct az_hub az_hub;
typedef struct az_hub_sub az_hub_sub;

/* Called on the hub's thread for every message of the channel, in arrival order. ev is
 * unpacked and borrowed for the call; the callee must not block (queue and return) and must not
 * call az_hub_* (callbacks run under the hub's lock, which is how unsubscribe knows none is
 * running). ev == NULL signals a gap: once when the Redis connection is lost, and again when the
 * channel is resubscribed after the reconnect; messages published in between are gone, so
 * durable subscribers re-read the outbox from their last sequence (the second time, nothing can
 * be missed any more). */
typedef void (*az_hub_fn)(void *arg, const Agentz__V1__Event *ev);

/* Creates and starts the hub on redis_url (its own connection, made in the background: Redis
 * need not be up yet; reconnects with backoff 100 ms..5 s). On error (malformed URL, no memory,
 * no thread) NULL with msg. At most 100,000 channels and 250,000 subscriptions at a time. */
az_hub *az_hub_new(const char *redis_url, char *msg);

/* Subscribes fn(arg) to channel (copied, 1..200 bytes, else AZ_ERR_INVALID). Returns once Redis
 * confirmed the subscription (or it already existed), so a caller that subscribes before
 * reading the outbox misses nothing; waits at most timeout_ms (then AZ_ERR_UNAVAILABLE, nothing
 * kept). AZ_ERR_EXHAUSTED beyond the hub's bounds. *out is the caller's handle, released with
 * az_hub_unsubscribe. Any thread but the hub's. */
az_err az_hub_subscribe(az_hub *h, const char *channel, az_hub_fn fn, void *arg, int timeout_ms,
                        az_hub_sub **out, char *msg);

/* Removes the subscription; after it returns fn is not running and will not be called again.
 * The Redis channel is unsubscribed when its last subscriber leaves. Accepts NULL. */
void az_hub_unsubscribe(az_hub_sub *s);

/* Counters for metrics: subscribers and channels now, messages received, and the lag between
 * an event's time and its arrival here (exponentially averaged, ms). */
typedef struct az_hub_stats {
    size_t subscribers, channels;
    uint64_t messages;
    double lag_ms;
} az_hub_stats;
void az_hub_get_stats(az_hub *h, az_hub_stats *out);

/* Stops the thread and frees; every subscription must be gone. Accepts NULL. */
void az_hub_free(az_hub *h);

#endif
