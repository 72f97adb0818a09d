/* Idempotency keys for Create calls (AIP-155): a request_id maps to the resource it created,
 * for 24 hours, within one workspace and method. Owns the idempotency_keys table. */
#ifndef AZ_IDEM_H
#define AZ_IDEM_H

#include "pgpool.h"

#define AZ_IDEM_TTL_HOURS 24

/* Inside the caller's transaction on c: claims request_id for (workspace, method) pointing at
 * resource_id. When the key is fresh, returns AZ_OK with *existing set to "". When an earlier
 * request holds it, returns AZ_OK with existing (37 bytes) set to that resource's id if
 * request_hash matches, or AZ_ERR_EXISTS when the same id came with a different request.
 * Waits for a concurrent claimer's transaction to end. */
az_err az_idem_claim(az_pgconn *c, const az_ctx *ctx, const char *method, const char *request_id,
                     const char *request_hash, const char *resource_id, char existing[37],
                     char *msg);

/* Deletes expired keys; *deleted (may be NULL) receives how many. */
az_err az_idem_gc(az_pg *pg, int *deleted, char *msg);

#endif
