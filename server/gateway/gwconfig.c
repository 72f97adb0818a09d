/* The gateway's settings table: every AGENTZ_GATEWAY_* variable, AGENTZ_CORS_ORIGINS and
 * AGENTZ_CLERK_PUBLISHABLE_KEY, with their flags, defaults and limits. */
#include "gwconfig.h"

#include <limits.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cors.h"

static az_err check_listen(const char *origin, const char *v, char *msg)
{
    const char *colon = strrchr(v, ':');
    if (colon && colon[1]) return AZ_OK;
    return az_fail(msg, AZ_ERR_INVALID, "%s: listen address \"%s\" must be host:port", origin, v);
}

static az_err check_onoff(const char *origin, const char *v, char *msg)
{
    if (strcmp(v, "on") == 0 || strcmp(v, "off") == 0) return AZ_OK;
    return az_fail(msg, AZ_ERR_INVALID, "%s: \"%s\" is not on or off", origin, v);
}

static az_err check_cors(const char *origin, const char *v, char *msg)
{
    az_cors *c = NULL;
    az_err err = az_cors_new(v, origin, &c, msg);
    az_cors_free(c);
    return err;
}

#define G(f) offsetof(az_gwconfig, f)
static const az_opt OPTS[] = {
    {"listen", "AGENTZ_GATEWAY_LISTEN", AZ_OPT_STR, G(listen), "127.0.0.1:8080", 0, 0,
     "HTTP listen address of the gateway (host:port; port 0 picks a free one)", check_listen},
    {"upstream", "AGENTZ_GATEWAY_UPSTREAM", AZ_OPT_STR, G(upstream), "127.0.0.1:50051", 0, 0,
     "agentzd's gRPC address (an agentzd with the api role uses its own socket instead)"},
    {"upstream-tls", "AGENTZ_GATEWAY_UPSTREAM_TLS", AZ_OPT_STR, G(upstream_tls), "off", 0, 0,
     "on: TLS to the upstream with the system's roots (implied by --upstream-ca)", check_onoff},
    {"upstream-ca", "AGENTZ_GATEWAY_UPSTREAM_CA", AZ_OPT_STR, G(upstream_ca), NULL, 0, 0,
     "PEM roots to verify the upstream's certificate (enables TLS)"},
    {"upstream-cert", "AGENTZ_GATEWAY_UPSTREAM_CERT", AZ_OPT_STR, G(upstream_cert), NULL, 0, 0,
     "PEM client certificate for an upstream that requires mTLS; with --upstream-key"},
    {"upstream-key", "AGENTZ_GATEWAY_UPSTREAM_KEY", AZ_OPT_STR, G(upstream_key), NULL, 0, 0,
     "PEM private key of --upstream-cert"},
    {"upstream-server-name", "AGENTZ_GATEWAY_UPSTREAM_SERVER_NAME", AZ_OPT_STR,
     G(upstream_server_name), NULL, 0, 0, "TLS name to verify instead of the upstream's host"},
    {"tls-cert", "AGENTZ_GATEWAY_TLS_CERT", AZ_OPT_STR, G(tls_cert), NULL, 0, 0,
     "PEM certificate chain; with the key: HTTPS, HTTP/2 by ALPN and HSTS"},
    {"tls-key", "AGENTZ_GATEWAY_TLS_KEY", AZ_OPT_STR, G(tls_key), NULL, 0, 0, "PEM private key"},
    {"cors-origins", "AGENTZ_CORS_ORIGINS", AZ_OPT_STR, G(cors_origins), NULL, 0, 0,
     "origins allowed cross-origin (comma list of scheme://host[:port], or *); unset = none",
     check_cors},
    {"web-dir", "AGENTZ_GATEWAY_WEB_DIR", AZ_OPT_STR, G(web_dir), NULL, 0, 0,
     "the built web UI served at / (unset = web/dist of the source tree when built, else none)"},
    {"clerk-publishable-key", "AGENTZ_CLERK_PUBLISHABLE_KEY", AZ_OPT_STR, G(clerk_publishable_key),
     NULL, 0, 0, "Clerk publishable key for the web UI's sign-in (pk_test_... / pk_live_...)"},
    {"access-log", "AGENTZ_GATEWAY_ACCESS_LOG", AZ_OPT_STR, G(access_log), "on", 0, 0,
     "one log line per HTTP request (on or off)", check_onoff},
    {"max-body", "AGENTZ_GATEWAY_MAX_BODY", AZ_OPT_BYTES, G(max_body_bytes), "4m", 1024,
     64 << 20, "largest request body (413 beyond)"},
    {"max-header", "AGENTZ_GATEWAY_MAX_HEADER", AZ_OPT_BYTES, G(max_header_bytes), "16k", 1024,
     32 << 10, "largest request header block (431 beyond; connections past twice this are closed)"},
    {"request-timeout", "AGENTZ_GATEWAY_REQUEST_TIMEOUT", AZ_OPT_MS, G(request_timeout_ms), "30s",
     100, 3600000, "time to receive a request's body (408 beyond)"},
    {"call-timeout", "AGENTZ_GATEWAY_CALL_TIMEOUT", AZ_OPT_MS, G(call_timeout_ms), "60s", 100,
     86400000, "upstream deadline of a unary call without X-Request-Timeout"},
    {"max-call-timeout", "AGENTZ_GATEWAY_MAX_CALL_TIMEOUT", AZ_OPT_MS, G(max_call_timeout_ms),
     "10m", 100, 86400000, "the largest X-Request-Timeout honoured"},
    {"max-streams", "AGENTZ_GATEWAY_MAX_STREAMS", AZ_OPT_INT, G(max_streams), "100000", 1, 1000000,
     "server streams (SSE, WebSocket, grpc-web) open at once"},
    {"shutdown-grace", "AGENTZ_GATEWAY_SHUTDOWN_GRACE", AZ_OPT_MS, G(shutdown_grace_ms), "10s", 0,
     600000, "on SIGTERM, how long unary calls in flight may finish (streams end at once)"},
};

az_opt_table az_gwconfig_table(az_gwconfig *cfg, const char *prefix)
{
    return (az_opt_table){OPTS, sizeof OPTS / sizeof *OPTS, cfg, prefix};
}

az_err az_gwconfig_check(const az_gwconfig *c, const char *p, char *msg)
{
    if (!!c->tls_cert != !!c->tls_key)
        return az_fail(msg, AZ_ERR_INVALID, "%stls-cert and %stls-key must be given together", p, p);
    if (!!c->upstream_cert != !!c->upstream_key)
        return az_fail(msg, AZ_ERR_INVALID, "%supstream-cert and %supstream-key must be given together", p, p);
    return AZ_OK;
}

void az_gwconfig_apply(const az_gwconfig *c, const char *upstream, az_gateway_config *out)
{
    memset(out, 0, sizeof *out);
    out->listen = c->listen;
    out->tls_cert_file = c->tls_cert;
    out->tls_key_file = c->tls_key;
    out->upstream = upstream ? upstream : c->upstream;
    /* agentzd's own socket is plaintext and local: no upstream TLS for it. */
    if (!upstream) {
        out->upstream_ca_file = c->upstream_ca;
        out->upstream_cert_file = c->upstream_cert;
        out->upstream_key_file = c->upstream_key;
        out->upstream_server_name = c->upstream_server_name;
        out->upstream_tls = c->upstream_tls && strcmp(c->upstream_tls, "on") == 0;
    }
    out->cors_origins = c->cors_origins;
    out->web_dir = c->web_dir;
    out->clerk_publishable_key = c->clerk_publishable_key;
    out->max_body_bytes = c->max_body_bytes;
    out->max_header_bytes = c->max_header_bytes;
    out->request_timeout_ms = c->request_timeout_ms;
    out->call_timeout_ms = c->call_timeout_ms;
    out->max_call_timeout_ms = c->max_call_timeout_ms;
    out->max_streams = c->max_streams;
    out->shutdown_grace_ms = c->shutdown_grace_ms;
    out->access_log = !c->access_log || strcmp(c->access_log, "off") != 0;
}

char *az_gwconfig_default_web_dir(void)
{
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n <= 0) return NULL;
    exe[n] = '\0';
    /* build/bin/agentzd -> <source>/web/dist */
    for (int up = 0; up < 3; up++) {
        char *slash = strrchr(exe, '/');
        if (!slash) return NULL;
        *slash = '\0';
    }
    char path[PATH_MAX + 32];
    snprintf(path, sizeof path, "%s/web/dist/index.html", exe);
    if (access(path, R_OK) != 0) return NULL;
    path[strlen(path) - strlen("/index.html")] = '\0';
    return strdup(path);
}
