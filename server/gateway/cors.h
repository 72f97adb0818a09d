/* Cross-origin policy of the gateway: the AGENTZ_CORS_ORIGINS allow-list, preflight answers and
 * the headers an allowed cross-origin response carries. Nothing is allowed by default. */
#ifndef AZ_CORS_H
#define AZ_CORS_H

#include <stddef.h>

#include "core/err.h"

typedef struct az_cors az_cors;

/* The request headers a browser may send cross-origin (Access-Control-Allow-Headers), and the
 * response headers it may read (Access-Control-Expose-Headers). */
#define AZ_CORS_ALLOW_HEADERS                                                                      \
    "authorization, content-type, x-api-key, x-request-id, x-request-timeout, last-event-id, "    \
    "x-grpc-web, x-user-agent, grpc-timeout, connect-protocol-version, connect-timeout-ms, "      \
    "traceparent, tracestate"
#define AZ_CORS_EXPOSE_HEADERS                                                                     \
    "grpc-status, grpc-message, grpc-status-details-bin, x-request-id, retry-after"
#define AZ_CORS_ALLOW_METHODS "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"
#define AZ_CORS_MAX_AGE "600"

/* Parses list: a comma-separated list of origins ("https://app.example.com,
 * http://localhost:5173"; scheme://host[:port], no path), or "*" for any origin. NULL or "" allows
 * none. On AZ_OK *out is freed with az_cors_free. On AZ_ERR_INVALID msg names the bad entry
 * (origin names AGENTZ_CORS_ORIGINS or the flag) and *out is NULL. */
az_err az_cors_new(const char *list, const char *origin, az_cors **out, char *msg);

/* Frees c; accepts NULL. */
void az_cors_free(az_cors *c);

/* 1 when origin (len bytes, as the Origin header gave it) may make cross-origin requests.
 * Comparison is exact on scheme, host and port, ignoring ASCII case in scheme and host. */
int az_cors_allowed(const az_cors *c, const char *origin, size_t len);

/* 1 when origin names the same origin as a request that reached this gateway with host (the
 * Host or :authority header) over tls: the web UI served by the gateway itself. */
int az_cors_same_origin(const char *origin, size_t olen, const char *host, size_t hlen, int tls);

/* Checks a preflight's Access-Control-Request-Headers (comma list, any case) against
 * AZ_CORS_ALLOW_HEADERS. Returns 1 when every header is allowed; otherwise 0 with the first
 * refused name copied into bad (bad_size bytes, NUL-terminated). */
int az_cors_headers_allowed(const char *requested, size_t len, char *bad, size_t bad_size);

#endif
