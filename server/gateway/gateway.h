/* agentz-gateway: the HTTP side of AGENTZ. REST/JSON transcoded from the google.api.http
 * annotations, server streams as SSE, NDJSON or WebSocket, grpc-web, the OpenAPI document,
 * health probes and the web UI's files, all proxied to agentzd over a real gRPC channel. It
 * keeps no state of its own, so any number of gateways can stand behind a load balancer. */
#ifndef AZ_GATEWAY_H
#define AZ_GATEWAY_H

#include <stddef.h>

#include "core/err.h"

typedef struct az_gateway_config {
    const char *listen;          /* "127.0.0.1:8080"; port 0 picks a free one */
    const char *tls_cert_file;   /* PEM; with tls_key_file: HTTPS, HTTP/2 by ALPN, HSTS */
    const char *tls_key_file;
    /* agentzd */
    const char *upstream;        /* gRPC target: "127.0.0.1:50051", "unix:/path" */
    const char *upstream_ca_file;   /* PEM roots: TLS to the upstream */
    const char *upstream_cert_file; /* client certificate (mTLS) */
    const char *upstream_key_file;
    const char *upstream_server_name;
    int upstream_tls;               /* TLS with gRPC's default roots */
    /* browsers */
    const char *cors_origins;    /* AGENTZ_CORS_ORIGINS: comma list, "*", NULL = none */
    const char *web_dir;         /* the built web UI (web/dist); NULL = none */
    const char *clerk_publishable_key; /* handed to the web UI by /ui/config.json */
    /* limits */
    int max_body_bytes;          /* request bodies; 0 = 4 MiB */
    int max_header_bytes;        /* request headers; 0 = 16 KiB */
    int request_timeout_ms;      /* to receive a whole request; 0 = 30 s */
    int call_timeout_ms;         /* upstream deadline of unary calls without X-Request-Timeout; 0 = 60 s */
    int max_call_timeout_ms;     /* the largest X-Request-Timeout honoured; 0 = 10 min */
    int max_message_bytes;       /* largest upstream response; 0 = 4 MiB */
    int max_streams;             /* server streams open at once; 0 = 100000 */
    int shutdown_grace_ms;       /* unary calls in flight may finish this long; 0 = 10 s */
    int access_log;              /* non-zero: one log line per request */
} az_gateway_config;

typedef struct az_gateway az_gateway;

/* Builds the route table, loads the web UI (when web_dir is set), opens the upstream channels
 * and binds the listener; nothing is served until az_gateway_start. On AZ_OK *out is freed with
 * az_gateway_free. On failure *out is NULL, nothing is left running and msg says why:
 * AZ_ERR_INVALID (a bad setting, named), AZ_ERR_IO (unreadable certificate or web directory),
 * AZ_ERR_UNAVAILABLE (the address is in use or invalid), AZ_ERR_NOMEM. */
az_err az_gateway_new(const az_gateway_config *cfg, az_gateway **out, char *msg);

/* The bound port (useful with port 0). */
int az_gateway_port(const az_gateway *g);

/* Starts the service thread. AZ_ERR_INTERNAL if it cannot be created. */
az_err az_gateway_start(az_gateway *g, char *msg);

/* Graceful stop: refuses new requests (503), ends every open stream now (SSE "end" with
 * UNAVAILABLE, so clients reconnect elsewhere and resume by sequence), lets unary calls in
 * flight finish within the grace period, then closes every connection and joins the thread.
 * Blocks; idempotent. */
void az_gateway_stop(az_gateway *g);

/* Stops the gateway if needed and frees it; accepts NULL. */
void az_gateway_free(az_gateway *g);

#endif
