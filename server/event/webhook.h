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
 * (task_id set) or run (run_id set, task_id NULL/""), in ctx's workspace (required: the
 * delivery is read back in it). event_type is the body's "type" and the X-Agentz-Event header
 * ("task.succeeded", "run.failed", ...: 1..64 of a-z 0-9 . _). A URL repeated, or an event
 * queued twice for one URL, is queued once. Nothing is sent before commit; a rollback drops the
 * deliveries with the change. n_urls 0 does nothing. AZ_ERR_INVALID (msg names the argument)
 * when neither id is set, an id is not a uuid, the workspace or event_type is missing or
 * malformed, or a URL is not http(s) of at most 2048 characters; database errors as az_pg_exec
 * returns them (the caller's transaction is then aborted). */
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

/* Starts the delivery thread: it claims due deliveries of every workspace (a claim is a lease
 * of timeout_ms + 30 s, so two processes never send one delivery at once), POSTs the body
 * {"type", "delivery_id", "event_id", "task" | "run"} built from the task or run as it is now,
 * and records each attempt: 2xx delivered; otherwise retried after 1 s, 2 s, 4 s ... (at most
 * 10 min) until AZ_WEBHOOK_MAX_ATTEMPTS, then failed. A URL the netguard refuses, or a task or
 * run that no longer exists, fails at once. Finished deliveries older than 30 days are pruned.
 * cfg->pg and cfg->guard must outlive the handle. On error NULL with msg. */
az_webhook *az_webhook_start(const az_webhook_config *cfg, char *msg);

/* Stops the thread and frees the handle; POSTs in flight are abandoned and their deliveries
 * made due again at once (attempt not counted), for this or another process to send: delivery
 * is at least once, receivers deduplicate by delivery id. Accepts NULL. */
void az_webhook_stop(az_webhook *w);

/* The signing secret agentzd uses: configured (AGENTZ_WEBHOOK_SECRET) when non-empty; else,
 * with data_dir (the embedded default), the first line of data_dir/webhook.secret, created at
 * first use with 32 random bytes in hex (mode 0600, written atomically) and its path logged;
 * else (external servers and no secret) *out = NULL: deliveries then fail, recorded, and a
 * warning is logged. On AZ_OK *out (may be NULL) is the caller's to free(). AZ_ERR_IO when the
 * file cannot be read or written. */
az_err az_webhook_load_secret(const char *configured, const char *data_dir, char **out, char *msg);

#endif
