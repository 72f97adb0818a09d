/* Authentication and authorization of every call: turns the authorization / x-api-key metadata
 * into a principal (Clerk session token or API key), checks its role against the permission
 * table, and hands it to the rate limiter. Installed with az_server_set_authorizer. */
#ifndef AZ_AUTH_H
#define AZ_AUTH_H

#include "auth/perm.h"
#include "core/err.h"
#include "rpc/rpc.h"
#include "store/pgpool.h"

/* Clerk organization role -> AGENTZ role, used when AGENTZ_JWT_ROLE_MAP is not set. */
#define AZ_AUTH_DEFAULT_ROLE_MAP                                                                   \
    "org:owner=owner,org:admin=admin,org:member=editor,org:viewer=viewer"

/* The principal every call gets when authentication is off. */
#define AZ_AUTH_DEV_PRINCIPAL "anonymous-dev"

/* az_principal.auth_method values. */
#define AZ_AUTH_METHOD_NONE "none"
#define AZ_AUTH_METHOD_JWT "jwt"
#define AZ_AUTH_METHOD_API_KEY "api_key"

typedef struct az_auth_config {
    /* AGENTZ_AUTH=off: no credentials needed, every caller is AZ_AUTH_DEV_PRINCIPAL, owner of
     * the default workspace. Refused unless listen is a loopback address or a unix socket. */
    int disabled;
    const char *listen; /* the gRPC listen address (AGENTZ_GRPC_LISTEN); required when disabled */
    /* Clerk session tokens; all NULL/"" = only API keys are accepted. */
    const char *jwks_url;               /* AGENTZ_JWKS_URL */
    const char *jwt_issuer;             /* AGENTZ_JWT_ISSUER; required with jwks_url */
    const char *jwt_authorized_parties; /* AGENTZ_JWT_AUTHORIZED_PARTIES (comma list) */
    const char *jwt_role_map;           /* AGENTZ_JWT_ROLE_MAP; NULL/"" = the default map */
    int jwt_refresh_interval_ms;        /* 0 = 30 s between JWKS fetches (tests lower it) */
} az_auth_config;

typedef struct az_auth az_auth;

/* Rate-limit hook: runs after a call is authorized (not for public or unknown methods). An
 * error (AZ_ERR_EXHAUSTED with msg) refuses the call. */
typedef az_err (*az_auth_limiter_fn)(void *arg, const az_principal *p, const az_perm *perm,
                                     char *msg);

/* Creates the authorizer. pg (borrowed, must outlive it) resolves API keys and workspaces.
 * With session tokens configured, fetches the JWKS once (a failure is logged as a warning, not
 * fatal: tokens fail UNAUTHENTICATED until the keys can be fetched). Returns NULL with msg
 * (AZ_ERR_INVALID, a configuration error naming the variable) on a bad role map, an https-less
 * JWKS URL, a missing issuer, or authentication off on a non-loopback listener. Logs a warning
 * when authentication is off. Free with az_auth_free. Thread-safe once created. */
az_auth *az_auth_new(const az_auth_config *cfg, az_pg *pg, char *msg);

/* Frees a; accepts NULL. The server using it must be shut down first. */
void az_auth_free(az_auth *a);

/* Installs the rate-limit hook (before the server starts); fn NULL removes it. */
void az_auth_set_limiter(az_auth *a, az_auth_limiter_fn fn, void *arg);

/* The az_authorizer_fn (arg = the az_auth): reads the call's authorization and x-api-key
 * metadata and runs az_auth_resolve. */
az_err az_auth_authorize(void *arg, az_call *c, const char *method, az_principal *p, char *msg);

/* The authorizer's logic without a call, for tests and other transports. authorization is the
 * raw metadata value ("Bearer <token>") and x_api_key the raw x-api-key value; either may be
 * NULL. authorization wins when both are sent.
 *  - public methods (health, reflection) and methods missing from the permission table (the
 *    runtime answers UNIMPLEMENTED) -> AZ_OK with an anonymous principal, credentials ignored;
 *  - authentication off -> AZ_AUTH_DEV_PRINCIPAL, default workspace, ROLE_OWNER;
 *  - "Bearer agz_…" or x-api-key -> az_apikey_verify: "key:<id>", the key's workspace and role;
 *  - "Bearer <jwt>" -> az_jwt_verify: "user:<sub>"; the workspace of org_id (o.id) with the
 *    role mapped from org_role (o.rol), or without an organization the personal workspace
 *    "user:<sub>" as ROLE_OWNER;
 *  - then the role must reach the method's (viewer < editor < admin < owner), then the limiter.
 * Errors: AZ_ERR_UNAUTHENTICATED (missing, malformed, unknown, expired credentials; *p is reset
 * to anonymous), AZ_ERR_PERMISSION (authenticated but the role is too low or the organization
 * role is unmapped; *p stays filled so the audit log can name who was denied), AZ_ERR_UNAVAILABLE
 * (database down), or whatever the limiter returns. Never logs or echoes a credential. */
az_err az_auth_resolve(az_auth *a, const char *authorization, const char *x_api_key,
                       const char *method, az_principal *p, char *msg);

/* "viewer", "editor", "admin", "owner"; "none" for anything else. Never NULL. */
const char *az_auth_role_name(int role);

/* The Agentz__V1__AuthMethod value of an az_principal.auth_method string (for WhoAmI):
 * "jwt" (also "clerk") -> AUTH_METHOD_JWT, "api_key" (also "admin_key") -> AUTH_METHOD_API_KEY,
 * "mtls" -> AUTH_METHOD_MTLS, "none" -> AUTH_METHOD_NONE, else AUTH_METHOD_UNSPECIFIED. */
int az_auth_method_value(const char *auth_method);

/* Parses AGENTZ_AUTH: "on"/"true"/"1" -> *disabled 0, "off"/"false"/"0" -> 1 (case-insensitive).
 * AZ_ERR_INVALID otherwise, with msg naming the variable. For the daemon's config loader. */
az_err az_auth_parse_mode(const char *s, int *disabled, char *msg);

/* 1 when a gRPC listen address only accepts local connections: 127.0.0.0/8, [::1], localhost,
 * or a unix socket. */
int az_auth_listen_is_loopback(const char *listen);

#endif
