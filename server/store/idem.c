/* Idempotency keys: INSERT ... ON CONFLICT reclaims only expired keys, so a live key always
 * answers with the resource its first request created. */
#include "idem.h"

#include <jansson.h>
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

/* The keys travel as one JSON array (jansson escapes what a text[] literal would need quoted).
 * The outer SELECT reads the statement's snapshot: it sees the keys that were there before (the
 * conflicts), not those the CTE claims, and not a holder that committed meanwhile (NULL). */
static const char claim_many_sql[] =
    "WITH input AS (SELECT * FROM jsonb_to_recordset($3::jsonb)"
    "   AS x(i integer, request_id text, request_hash text, resource_id uuid)),"
    " claimed AS ("
    "  INSERT INTO idempotency_keys AS k (workspace_id, method, request_id, request_hash, resource_id)"
    "  SELECT $1::uuid, $2::text, request_id, request_hash, resource_id FROM input ORDER BY request_id"
    "  ON CONFLICT (workspace_id, method, request_id) DO UPDATE"
    "   SET request_hash = EXCLUDED.request_hash, resource_id = EXCLUDED.resource_id,"
    "       create_time = now()"
    "   WHERE k.create_time < now() - interval '" XSTR(AZ_IDEM_TTL_HOURS) " hours'"
    "  RETURNING k.request_id)"
    " SELECT input.i, claimed.request_id IS NOT NULL, old.resource_id::text, old.request_hash"
    " FROM input LEFT JOIN claimed ON claimed.request_id = input.request_id"
    " LEFT JOIN idempotency_keys old ON claimed.request_id IS NULL AND old.workspace_id = $1::uuid"
    "  AND old.method = $2::text AND old.request_id = input.request_id"
    " ORDER BY input.i";

az_err az_idem_claim_many(az_pgconn *c, const az_ctx *ctx, const char *method, size_t n,
                          const char *const *request_ids, const char *const *request_hashes,
                          const char *const *resource_ids, char (*existing)[37], size_t *bad,
                          char *msg)
{
    *bad = n;
    json_t *arr = json_array();
    int oom = !arr;
    for (size_t i = 0; i < n && !oom; i++) {
        existing[i][0] = '\0';
        json_t *o = json_pack("{s:I,s:s,s:s,s:s}", "i", (json_int_t)i, "request_id", request_ids[i],
                              "request_hash", request_hashes[i], "resource_id", resource_ids[i]);
        oom = !o || json_array_append_new(arr, o) != 0;
    }
    char *keys = oom ? NULL : json_dumps(arr, JSON_COMPACT);
    json_decref(arr);
    if (!keys) return az_fail(msg, AZ_ERR_NOMEM, "out of memory (or a request_id is not UTF-8)");
    const char *p[3] = {ctx->workspace_id, method, keys};
    PGresult *r;
    az_err err = az_pg_exec(c, ctx, claim_many_sql, 3, p, &r, msg);
    free(keys);
    if (err != AZ_OK) return err;
    if ((size_t)PQntuples(r) != n) {
        PQclear(r);
        return az_fail(msg, AZ_ERR_INTERNAL, "idempotency keys: %d rows for %zu keys", PQntuples(r), n);
    }
    for (size_t row = 0; row < n && err == AZ_OK; row++) {
        size_t i = (size_t)atol(PQgetvalue(r, (int)row, 0));
        if (i >= n) err = az_fail(msg, AZ_ERR_INTERNAL, "idempotency keys: row for key %zu", i);
        else if (PQgetvalue(r, (int)row, 1)[0] == 't') continue;
        else if (PQgetisnull(r, (int)row, 2)) {
            *bad = i;
            err = az_fail(msg, AZ_ERR_ABORTED, "request_id %s raced with another request; retry",
                          request_ids[i]);
        } else if (strcmp(PQgetvalue(r, (int)row, 3), request_hashes[i]) != 0) {
            *bad = i;
            err = az_fail(msg, AZ_ERR_EXISTS, "request_id %s was already used for a different request",
                          request_ids[i]);
        } else {
            memcpy(existing[i], PQgetvalue(r, (int)row, 2), 36);
            existing[i][36] = '\0';
        }
    }
    PQclear(r);
    return err;
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
