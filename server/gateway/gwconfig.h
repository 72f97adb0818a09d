/* The gateway's settings, shared by agentz-gateway (flags as listed) and by agentzd's gateway
 * role (the same flags with a "gateway-" prefix; the same AGENTZ_GATEWAY_* variables). */
#ifndef AZ_GWCONFIG_H
#define AZ_GWCONFIG_H

#include "core/opts.h"
#include "gateway.h"

typedef struct az_gwconfig {
    char *listen;
    char *upstream;
    char *upstream_ca, *upstream_cert, *upstream_key, *upstream_server_name;
    char *upstream_tls; /* "on" | "off" */
    char *tls_cert, *tls_key;
    char *cors_origins;
    char *web_dir;
    char *clerk_publishable_key;
    char *access_log; /* "on" | "off" */
    int max_body_bytes, max_header_bytes, request_timeout_ms, call_timeout_ms, max_call_timeout_ms;
    int max_streams, shutdown_grace_ms;
} az_gwconfig;

/* The settings table over cfg with flag prefix ("" or "gateway-"). */
az_opt_table az_gwconfig_table(az_gwconfig *cfg, const char *prefix);

/* Checks what single settings cannot (certificate without key, ...). origin_prefix names the
 * flags in messages ("--" or "--gateway-"). AZ_ERR_INVALID with msg naming the setting. */
az_err az_gwconfig_check(const az_gwconfig *cfg, const char *origin_prefix, char *msg);

/* Fills *out from cfg for az_gateway_new; the strings stay cfg's. upstream overrides
 * cfg->upstream when not NULL (agentzd's own socket). */
void az_gwconfig_apply(const az_gwconfig *cfg, const char *upstream, az_gateway_config *out);

/* The web UI build next to the binary (<exe>/../../web/dist, the source tree's), when it
 * exists: the default of AGENTZ_GATEWAY_WEB_DIR. Returns a malloc'd path or NULL. */
char *az_gwconfig_default_web_dir(void);

#endif
