/* API keys: owns the api_keys table. Keys are 256 random bits shown once ("agz_" + base64url),
 * stored only as a SHA-256 hash next to a visible prefix, a role, an optional expiry and the
 * last-used time; revocable. */
#ifndef AZ_APIKEY_H
#define AZ_APIKEY_H

#include <stdint.h>

#include "agentz/v1/system.pb-c.h"
#include "core/arena.h"
#include "core/ctx.h"
#include "store/pgpool.h"

#define AZ_APIKEY_PREFIX "agz_"

/* What a presented key resolves to. */
typedef struct az_apikey_identity {
    char key_id[37];
    char workspace_id[37];
    int role; /* Agentz__V1__Role */
} az_apikey_identity;

/* Creates a key in ctx's workspace with role (VIEWER..OWNER) and optional expiry
 * (expire_us = 0: never). *secret (arena) is the full key, shown once; *out describes it.
 * The caller must already hold at least that role (checked by the API layer). */
az_err az_apikey_create(az_pg *pg, const az_ctx *ctx, const char *name, int role,
                        int64_t expire_us, az_arena *arena, Agentz__V1__ApiKey **out,
                        char **secret, char *msg);

/* Same, for bootstrapping (agentzd admin create-key): the workspace is created if missing. */
az_err az_apikey_create_in(az_pg *pg, const char *workspace_id, const char *name, int role,
                           int64_t expire_us, az_arena *arena, Agentz__V1__ApiKey **out,
                           char **secret, char *msg);

/* Lists ctx's workspace keys, newest first (never the secret or hash). */
az_err az_apikey_list(az_pg *pg, const az_ctx *ctx, int page_size, const char *page_token,
                      az_arena *arena, Agentz__V1__ListApiKeysResponse **out, char *msg);

/* Revokes key id of ctx's workspace; AZ_ERR_NOT_FOUND when absent. Idempotent for revoked keys. */
az_err az_apikey_revoke(az_pg *pg, const az_ctx *ctx, const char *id, char *msg);

/* Verifies a presented secret (constant-time hash compare): AZ_OK with *out filled, or
 * AZ_ERR_UNAUTHENTICATED ("api key is unknown, revoked or expired"). A key that verified is
 * remembered in this process (by hash, never the secret) for the cache time set by
 * az_apikey_set_cache_ms, never past its expiry: within that time it is not looked up again, so
 * a key revoked by another process keeps working here for at most that long (az_apikey_revoke
 * forgets it here at once). Updates last_used at most once a minute per key, on a lookup. Never
 * logs the secret. */
az_err az_apikey_verify(az_pg *pg, const char *secret, az_apikey_identity *out, char *msg);

/* How long az_apikey_verify remembers a key (AGENTZ_API_KEY_CACHE_MS); 0 turns the cache off.
 * Process-wide; also forgets every remembered key. */
#define AZ_APIKEY_CACHE_MS_DEFAULT 5000
void az_apikey_set_cache_ms(int ms);

#endif
