/* Clerk session tokens: RS256 JWTs verified against a JWKS fetched over HTTPS and cached by key
 * id, with the issuer, authorized party, expiry and not-before checks Clerk's own SDKs make. */
#ifndef AZ_JWT_H
#define AZ_JWT_H

#include <stdint.h>

#include "core/err.h"

#define AZ_JWT_MAX_TOKEN 8192      /* longer tokens are refused before any parsing */
#define AZ_JWT_MAX_JWKS (1 << 20)  /* JWKS documents larger than this are refused */
#define AZ_JWT_DEFAULT_LEEWAY_S 60 /* clock skew allowed on exp, nbf and iat */
#define AZ_JWT_DEFAULT_REFRESH_MS 30000
#define AZ_JWT_DEFAULT_TIMEOUT_MS 5000
#define AZ_JWT_DEFAULT_MAX_KEYS 16
#define AZ_JWT_DEFAULT_MAX_AGE_MS 3600000

typedef struct az_jwt_config {
    /* Where the signing keys are: "https://<clerk frontend api>/.well-known/jwks.json". Plain
     * http is accepted only for a loopback host (127.0.0.1, [::1], localhost), for tests. */
    const char *jwks_url;
    const char *issuer;             /* required: the iss claim must equal it exactly */
    const char *authorized_parties; /* comma list of allowed azp values; NULL or "" = any */
    int leeway_s;                   /* 0 = AZ_JWT_DEFAULT_LEEWAY_S; < 0 = none */
    int refresh_interval_ms;        /* least time between two JWKS fetches; 0 = 30 s */
    int timeout_ms;                 /* one JWKS fetch, connect included; 0 = 5 s */
    int max_keys;                   /* keys kept from one JWKS; 0 = 16 */
    int max_age_ms;                 /* refetch keys older than this when due; 0 = 1 h */
} az_jwt_config;

/* What a verified token says. Strings are NUL-terminated; a claim longer than its buffer makes
 * the token invalid rather than truncated (so two subjects can never alias). */
typedef struct az_jwt_claims {
    char sub[128];    /* Clerk user id, "user_…"; always set */
    char sid[128];    /* session id; "" when absent */
    char azp[256];    /* authorized party (the browser origin); "" when absent */
    char org_id[128]; /* active organization ("org_…"), from org_id (v1) or o.id (v2); "" = none */
    char org_slug[128];    /* org_slug (v1) or o.slg (v2); "" when absent */
    char org_role[128];    /* always in "org:<role>" form: v2's o.rol ("admin") gains the prefix */
    char kid[128];         /* the signing key's id */
    int version;           /* the v claim; 1 when absent */
    int64_t exp, nbf, iat; /* unix seconds; nbf and iat 0 when absent */
} az_jwt_claims;

typedef struct az_jwt_verifier az_jwt_verifier;

/* Creates a verifier; copies everything it keeps from cfg. Fetches nothing yet: the first
 * verification (or az_jwt_refresh) loads the keys, so a JWKS outage does not stop start-up.
 * Returns NULL with msg filled when jwks_url or issuer is missing or the URL is not https (or
 * http to a loopback host). Free with az_jwt_verifier_free. Thread-safe once created. */
az_jwt_verifier *az_jwt_verifier_new(const az_jwt_config *cfg, char *msg);

/* Frees v; accepts NULL. No verification may be running. */
void az_jwt_verifier_free(az_jwt_verifier *v);

/* Verifies token (the compact JWS, without "Bearer "). The header is inspected before any
 * cryptography: alg must be exactly RS256 (none, HS256/384/512, ES*, PS* ... are refused, so a
 * token HMAC-signed with the public key cannot pass) and kid must name a key. An unknown kid
 * triggers one JWKS fetch, at most once per refresh interval across all threads. Then the
 * signature, iss, sub, exp and nbf (with leeway), iat, azp (when configured) and Clerk's
 * session status are checked. On AZ_OK *out is filled. Every failure is
 * AZ_ERR_UNAUTHENTICATED with a message that never contains the token (a JWKS that cannot be
 * fetched included: the caller cannot be authenticated). Thread-safe; may block up to the
 * fetch timeout. */
az_err az_jwt_verify(az_jwt_verifier *v, const char *token, az_jwt_claims *out, char *msg);

/* Fetches the JWKS now, ignoring the refresh interval, and replaces the cached keys when the
 * document holds at least one usable key. AZ_ERR_UNAVAILABLE when it cannot be fetched,
 * AZ_ERR_INVALID when it holds no usable RS256 key; the old keys stay then. Used at start-up
 * to warn early about a wrong URL. Thread-safe. */
az_err az_jwt_refresh(az_jwt_verifier *v, char *msg);

/* How many JWKS fetches were attempted so far (tests and metrics). Thread-safe. */
int az_jwt_fetch_count(az_jwt_verifier *v);

#endif
