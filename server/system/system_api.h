/* SystemService over gRPC: WhoAmI, API keys, secrets, the audit log and StreamMetrics.
 * Validates requests and maps protobuf; apikey.c, secret.c and audit.c own the SQL, metrics.c
 * the streams of metrics snapshots. */
#ifndef AZ_SYSTEM_API_H
#define AZ_SYSTEM_API_H

#include "metrics.h"
#include "rpc/rpc.h"
#include "secret/secret.h"
#include "store/pgpool.h"

typedef struct az_system_api az_system_api;

/* Binds the API to a pool and a keyring (both borrowed; must outlive the API). keys may be NULL:
 * the secret methods then answer FAILED_PRECONDITION. NULL when out of memory. */
az_system_api *az_system_api_new(az_pg *pg, az_secret_keyring *keys);
void az_system_api_free(az_system_api *api); /* accepts NULL */

/* Where StreamMetrics streams go (borrowed; must outlive the server's calls). Until it is set,
 * StreamMetrics answers UNAVAILABLE. Call before the server starts. */
void az_system_api_set_metrics(az_system_api *api, az_metrics *m);

/* The method table (owned by api), StreamMetrics included. */
const az_method *az_system_api_methods(az_system_api *api, size_t *n);

#endif
