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

/* az_idem_claim for n keys in one statement (CreateTasks): key i is request_ids[i] with
 * request_hashes[i] for resource_ids[i] (request ids distinct and non-empty: the caller checks).
 * Keys are claimed in request_id order, so two batches sharing keys wait for each other instead
 * of deadlocking. On AZ_OK existing[i] (37 bytes each) is "" for a key claimed now, else the id
 * of the resource its first request created (same hash). A key held with another hash is
 * AZ_ERR_EXISTS with *bad = its index (else *bad = n); a key whose holder committed while this
 * statement ran is AZ_ERR_ABORTED (retry). The caller's transaction is lost on any error. */
az_err az_idem_claim_many(az_pgconn *c, const az_ctx *ctx, const char *method, size_t n,
                          const char *const *request_ids, const char *const *request_hashes,
                          const char *const *resource_ids, char (*existing)[37], size_t *bad,
                          char *msg);

/* Deletes expired keys; *deleted (may be NULL) receives how many. */
az_err az_idem_gc(az_pg *pg, int *deleted, char *msg);

#endif
