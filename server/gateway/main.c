/* agentz-gateway: the HTTP/JSON gateway as a process of its own, in front of one or more
 * agentzd (AGENTZ_GATEWAY_UPSTREAM), until SIGINT or SIGTERM. */
#include <pthread.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "core/opts.h"
#include "gateway.h"
#include "gwconfig.h"
#include "system/prom.h"

#ifndef AZ_VERSION
#define AZ_VERSION "0.1.0"
#endif

#define METRICS_LISTEN_DEFAULT "127.0.0.1:9465"

typedef struct proc {
    char *log_level;
    char *log_format;
    char *metrics_listen; /* NULL = off */
    int help, version;
} proc;

static az_err check_format(const char *origin, const char *v, char *msg)
{
    az_log_format f;
    if (az_log_parse_format(v, &f) == 0) return AZ_OK;
    return az_fail(msg, AZ_ERR_INVALID, "%s: log format \"%s\" is not text or json", origin, v);
}

static az_err check_listen_or_off(const char *origin, const char *v, char *msg)
{
    const char *colon = strrchr(v, ':');
    if (!*v || (colon && colon[1])) return AZ_OK;
    return az_fail(msg, AZ_ERR_INVALID, "%s: listen address \"%s\" must be host:port", origin, v);
}

static az_err check_level(const char *origin, const char *v, char *msg)
{
    az_log_level lvl;
    if (az_log_parse_level(v, &lvl) == 0) return AZ_OK;
    return az_fail(msg, AZ_ERR_INVALID, "%s: log level \"%s\" is not debug, info, warn or error", origin, v);
}

#define P(f) offsetof(proc, f)
static const az_opt PROC_OPTS[] = {
    {"log-level", "AGENTZ_LOG_LEVEL", AZ_OPT_STR, P(log_level), "info", 0, 0,
     "debug, info, warn or error", check_level},
    {"log-format", "AGENTZ_LOG_FORMAT", AZ_OPT_STR, P(log_format), "text", 0, 0,
     "text (logfmt) or json (one JSON object per line)", check_format},
    {"metrics-listen", "AGENTZ_GATEWAY_METRICS_LISTEN", AZ_OPT_STR, P(metrics_listen), METRICS_LISTEN_DEFAULT, 0, 0,
     "Prometheus GET /metrics listen address (host:port; port 0 picks a free one; empty = off)",
     check_listen_or_off},
    {"help", NULL, AZ_OPT_FLAG, P(help), NULL, 0, 0, "print this help and exit"},
    {"version", NULL, AZ_OPT_FLAG, P(version), NULL, 0, 0, "print the version and exit"},
};

int main(int argc, char **argv)
{
    az_gwconfig cfg;
    proc pc;
    memset(&cfg, 0, sizeof cfg);
    memset(&pc, 0, sizeof pc);
    az_opt_table t[2] = {az_gwconfig_table(&cfg, ""),
                         {PROC_OPTS, sizeof PROC_OPTS / sizeof *PROC_OPTS, &pc, ""}};
    char msg[AZ_MSG_MAX];
    int rc = 2;
    if (az_opts_load(t, 2, argc, argv, msg) != AZ_OK || az_gwconfig_check(&cfg, "--", msg) != AZ_OK) {
        fprintf(stderr, "agentz-gateway: %s\n", msg);
        goto out;
    }
    if (pc.help) {
        printf("usage: agentz-gateway [flags]\n\n"
               "The AGENTZ HTTP gateway: REST/JSON, SSE, WebSocket, grpc-web and the web UI in front\n"
               "of agentzd. Every flag has an environment variable; flags win.\n\n");
        az_opts_usage(t, 2, stdout);
        rc = 0;
        goto out;
    }
    if (pc.version) {
        printf("agentz-gateway %s\n", AZ_VERSION);
        rc = 0;
        goto out;
    }
    az_log_level lvl;
    az_log_parse_level(pc.log_level, &lvl);
    az_log_set_level(lvl);
    az_log_format fmt = AZ_LOG_TEXT;
    az_log_parse_format(pc.log_format, &fmt);
    az_log_set_format(fmt);
    /* An empty variable means the default to the table; for this one it means off. */
    const char *ml = getenv("AGENTZ_GATEWAY_METRICS_LISTEN");
    if (ml && !*ml && pc.metrics_listen && strcmp(pc.metrics_listen, METRICS_LISTEN_DEFAULT) == 0) {
        free(pc.metrics_listen);
        pc.metrics_listen = NULL;
    }
    if (!cfg.web_dir) cfg.web_dir = az_gwconfig_default_web_dir();

    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);

    az_gateway_config gc;
    az_gwconfig_apply(&cfg, NULL, &gc);
    az_gateway *g = NULL;
    rc = 1;
    if (az_gateway_new(&gc, &g, msg) != AZ_OK || az_gateway_start(g, msg) != AZ_OK) {
        az_error("cannot start the gateway: %s", msg);
        az_gateway_free(g);
        goto out;
    }
    az_prom_server *prom = NULL;
    char metrics_url[300] = "";
    if (pc.metrics_listen) {
        az_prom_set_info(AZ_VERSION, "gateway", AZ_PROM_SHOW_HTTP);
        az_err perr = az_prom_server_new(pc.metrics_listen, &prom, msg);
        if (perr == AZ_ERR_UNAVAILABLE && strcmp(pc.metrics_listen, METRICS_LISTEN_DEFAULT) == 0) {
            /* The default port is taken (another gateway on this host): run without, say so. */
            az_warn("%s; serving no metrics (set AGENTZ_GATEWAY_METRICS_LISTEN to another address, or empty for none)", msg);
        } else if (perr != AZ_OK) {
            az_error("cannot start the metrics listener: %s", msg);
            az_gateway_free(g);
            goto out;
        } else {
            az_prom_url(pc.metrics_listen, az_prom_server_port(prom), metrics_url, sizeof metrics_url);
            az_info("serving prometheus metrics on %s", metrics_url);
        }
    }
    const char *colon = strrchr(cfg.listen, ':');
    az_info("agentz-gateway %s serving http on %.*s:%d (%s), upstream %s, web ui %s", AZ_VERSION,
            (int)(colon - cfg.listen), cfg.listen, az_gateway_port(g), cfg.tls_cert ? "tls" : "plaintext",
            cfg.upstream, cfg.web_dir ? cfg.web_dir : "none");
    printf("agentz-gateway is running: %s://%.*s:%d (upstream %s)\n", cfg.tls_cert ? "https" : "http",
           (int)(colon - cfg.listen), cfg.listen, az_gateway_port(g), cfg.upstream);
    if (metrics_url[0]) printf("metrics: %s\n", metrics_url);
    fflush(stdout);
    int sig = 0;
    sigwait(&sigs, &sig);
    az_info("received %s: shutting down", sig == SIGINT ? "SIGINT" : "SIGTERM");
    az_prom_server_free(prom);
    az_gateway_free(g);
    az_info("agentz-gateway stopped");
    rc = 0;
out:
    az_opts_free(t, 2);
    return rc;
}
