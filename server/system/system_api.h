/* SystemService over gRPC (all but StreamMetrics): WhoAmI, API keys, secrets and the audit log.
 * Validates requests and maps protobuf; apikey.c, secret.c and audit.c own the SQL. */
#ifndef AZ_SYSTEM_API_H
#define AZ_SYSTEM_API_H

#include "rpc/rpc.h"
#include "secret/secret.h"
#include "store/pgpool.h"

typedef struct az_system_api az_system_api;

/* Binds the API to a pool and a keyring (both borrowed; must outlive the API). keys may be NULL:
 * the secret methods then answer FAILED_PRECONDITION. NULL when out of memory. */
az_system_api *az_system_api_new(az_pg *pg, az_secret_keyring *keys);
void az_system_api_free(az_system_api *api); /* accepts NULL */

/* The method table (owned by api). StreamMetrics is not in it. */
const az_method *az_system_api_methods(az_system_api *api, size_t *n);

#endif
