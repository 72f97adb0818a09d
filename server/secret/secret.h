/* Secrets: owns the secrets table. Named values of a workspace (LLM provider keys) encrypted at
 * rest with AES-256-GCM under a master key; the API never returns a value and nothing logs one. */
#ifndef AZ_SECRET_H
#define AZ_SECRET_H

#include <stdint.h>

#include "agentz/v1/system.pb-c.h"
#include "core/arena.h"
#include "core/ctx.h"
#include "store/pgpool.h"

#define AZ_SECRET_NAME_MAX 128
#define AZ_SECRET_VALUE_MAX 65536 /* bytes */
#define AZ_SECRET_KEY_ID_LEN 8    /* hex digits: the first 8 of the master key's SHA-256 */

/* The master keys: the current one (encrypts) and any previous ones (decrypt rows written
 * before a rotation). */
typedef struct az_secret_keyring az_secret_keyring;

/* Builds a keyring from current (base64 of 32 bytes) and previous (comma-separated list of the
 * same; NULL or "" = none). On AZ_OK *out is the caller's (free with az_secret_keyring_free,
 * which wipes the keys). AZ_ERR_INVALID names the bad key by position, never its text. */
az_err az_secret_keyring_new(const char *current, const char *previous, az_secret_keyring **out,
                             char *msg);
void az_secret_keyring_free(az_secret_keyring *k); /* accepts NULL */

/* What agentzd and `agentzd admin` use: the current key from key_b64 (AGENTZ_MASTER_KEY), else
 * from the file key_file (AGENTZ_MASTER_KEY_FILE, base64 text), else, when data_dir is set (the
 * embedded default), from data_dir/master.key, generated with mode 0600 when missing. With none
 * of these, AZ_OK with *out NULL: secrets are then unavailable (FAILED_PRECONDITION). previous
 * is AGENTZ_MASTER_KEY_PREVIOUS. AZ_ERR_INVALID / AZ_ERR_IO say which source is bad. */
az_err az_secret_keyring_load(const char *key_b64, const char *key_file, const char *previous,
                              const char *data_dir, az_secret_keyring **out, char *msg);

/* The current key's id (8 hex digits); owned by k. */
const char *az_secret_keyring_key_id(const az_secret_keyring *k);

/* Stores value (at most AZ_SECRET_VALUE_MAX bytes, not empty) under name ([A-Za-z0-9_.-]{1,128})
 * in ctx's workspace, encrypted under the current key; replacing an existing value makes a new
 * version. With a non-empty request_id the call is idempotent for 24 h (a retry returns the
 * secret as it is; the same request_id with another name or value is AZ_ERR_EXISTS). On AZ_OK
 * *out (arena) describes the secret without its value. */
az_err az_secret_put(az_pg *pg, const az_ctx *ctx, az_secret_keyring *k, const char *name,
                     const char *value, const char *request_id, az_arena *arena,
                     Agentz__V1__Secret **out, char *msg);

/* One page of ctx's secrets by name (names and times only). */
az_err az_secret_list(az_pg *pg, const az_ctx *ctx, int page_size, const char *page_token,
                      az_arena *arena, Agentz__V1__ListSecretsResponse **out, char *msg);

/* Deletes secret name of ctx's workspace; AZ_ERR_NOT_FOUND when absent. */
az_err az_secret_delete(az_pg *pg, const az_ctx *ctx, const char *name, char *msg);

/* The plaintext of secret name in ctx's workspace, for the execution engine: *value is
 * malloc'd and NUL-terminated; free it with az_secret_wipe_free. AZ_ERR_NOT_FOUND when absent,
 * AZ_ERR_PRECONDITION when its master key is not in k, AZ_ERR_INTERNAL when it does not decrypt
 * (wrong key or tampered row). Never logs the value. */
az_err az_secret_get_value(az_pg *pg, const az_ctx *ctx, az_secret_keyring *k, const char *name,
                           char **value, char *msg);

/* Overwrites the string with zeros and frees it; accepts NULL. */
void az_secret_wipe_free(char *value);

/* Re-encrypts every row (all workspaces) not under k's current key; *rotated (may be NULL)
 * receives how many. Stops at the first row it cannot decrypt (AZ_ERR_PRECONDITION or
 * AZ_ERR_INTERNAL naming workspace and secret); rows done by then stay done. */
az_err az_secret_rotate(az_pg *pg, az_secret_keyring *k, int64_t *rotated, char *msg);

#endif
