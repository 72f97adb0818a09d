/* Idempotency keys: INSERT ... ON CONFLICT reclaims only expired keys, so a live key always
 * answers with the resource its first request created. */
#include "idem.h"

#include <stdlib.h>
#include <string.h>

#define STR(x) #x
#define XSTR(x) STR(x)

az_err az_idem_claim(az_pgconn *c, const az_ctx *ctx, const char *method, const char *request_id,
                     const char *request_hash, const char *resource_id, char existing[37],
                     char *msg)
{
    existing[0] = '\0';
    const char *p[5] = {ctx->workspace_id, method, request_id, request_hash, resource_id};
    PGresult *r;
    az_err err = az_pg_exec(
        c, ctx,
        "INSERT INTO idempotency_keys (workspace_id, method, request_id, request_hash, resource_id)"
        " VALUES ($1, $2, $3, $4, $5)"
        " ON CONFLICT (workspace_id, method, request_id) DO UPDATE"
        "   SET request_hash = EXCLUDED.request_hash, resource_id = EXCLUDED.resource_id,"
        "       create_time = now()"
        "   WHERE idempotency_keys.create_time < now() - interval '" XSTR(AZ_IDEM_TTL_HOURS) " hours'"
        " RETURNING 1",
        5, p, &r, msg);
    if (err != AZ_OK) return err;
    int claimed = PQntuples(r) == 1;
    PQclear(r);
    if (claimed) return AZ_OK;
    err = az_pg_exec(c, ctx,
                     "SELECT resource_id::text, request_hash FROM idempotency_keys"
                     " WHERE workspace_id = $1 AND method = $2 AND request_id = $3",
                     3, p, &r, msg);
    if (err != AZ_OK) return err;
    if (PQntuples(r) != 1) {
        PQclear(r);
        return az_fail(msg, AZ_ERR_ABORTED, "request_id %s raced with another request; retry",
                       request_id);
    }
    int same = strcmp(PQgetvalue(r, 0, 1), request_hash) == 0;
    if (same) memcpy(existing, PQgetvalue(r, 0, 0), 37);
    existing[36] = '\0';
    PQclear(r);
    if (!same)
        return az_fail(msg, AZ_ERR_EXISTS,
                       "request_id %s was already used for a different request", request_id);
    return AZ_OK;
}

az_err az_idem_gc(az_pg *pg, int *deleted, char *msg)
{
    if (deleted) *deleted = 0;
    az_ctx ctx = {.deadline_ms = -1};
    az_pgconn *c;
    az_err err = az_pg_acquire(pg, &ctx, &c, msg);
    if (err != AZ_OK) return err;
    PGresult *r;
    err = az_pg_exec(c, &ctx,
                     "DELETE FROM idempotency_keys WHERE create_time < now() - interval '" XSTR(
                         AZ_IDEM_TTL_HOURS) " hours'",
                     0, NULL, &r, msg);
    if (err == AZ_OK) {
        if (deleted) *deleted = atoi(PQcmdTuples(r));
        PQclear(r);
    }
    az_pg_release(c);
    return err;
}
