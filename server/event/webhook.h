/* Webhooks: completion events of tasks and runs POSTed as signed JSON to the URLs the task or
 * workflow names, retried with backoff, every delivery recorded. Owns the webhook_deliveries
 * table. Signature: header X-Agentz-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of
 * "<t>.<body>" under the signing secret> (docs/realtime.md shows how to verify it). */
#ifndef AZ_WEBHOOK_H
#define AZ_WEBHOOK_H

#include <stddef.h>
#include <stdint.h>

#include "core/ctx.h"
#include "core/err.h"
#include "store/pgpool.h"
#include "tools/netguard.h"

#define AZ_WEBHOOK_MAX_ATTEMPTS 8 /* then the delivery is recorded as failed */

/* Inside the caller's transaction c (the one that made the task or run terminal): queues one
 * delivery per URL of the terminal event stored as event_id (the outbox row), for the task
 * (task_id set) or run (run_id set, task_id NULL/""). Nothing is sent before commit.
 * AZ_ERR_INVALID when neither id is set. */
az_err az_webhook_enqueue(az_pgconn *c, const az_ctx *ctx, int64_t event_id, const char *task_id,
                          const char *run_id, const char *event_type, const char *const *urls,
                          size_t n_urls, char *msg);

typedef struct az_webhook az_webhook;

typedef struct az_webhook_config {
    az_pg *pg;                /* borrowed */
    const az_netguard *guard; /* borrowed; outbound policy for the POSTs */
    const char *secret;       /* signing secret (copied); NULL/"" = deliveries fail, recorded */
    int concurrency;          /* POSTs at once; 0 = 8 */
    long timeout_ms;          /* per POST; 0 = 10000 */
} az_webhook_config;

/* Starts the delivery thread. On error NULL with msg. */
az_webhook *az_webhook_start(const az_webhook_config *cfg, char *msg);

/* Stops the thread (deliveries in progress finish or are retried later); accepts NULL. */
void az_webhook_stop(az_webhook *w);

#endif
