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

#ifndef AZ_VERSION
#define AZ_VERSION "0.1.0"
#endif

typedef struct proc {
    char *log_level;
    int help, version;
} proc;

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
    const char *colon = strrchr(cfg.listen, ':');
    az_info("agentz-gateway %s serving http on %.*s:%d (%s), upstream %s, web ui %s", AZ_VERSION,
            (int)(colon - cfg.listen), cfg.listen, az_gateway_port(g), cfg.tls_cert ? "tls" : "plaintext",
            cfg.upstream, cfg.web_dir ? cfg.web_dir : "none");
    printf("agentz-gateway is running: %s://%.*s:%d (upstream %s)\n", cfg.tls_cert ? "https" : "http",
           (int)(colon - cfg.listen), cfg.listen, az_gateway_port(g), cfg.upstream);
    fflush(stdout);
    int sig = 0;
    sigwait(&sigs, &sig);
    az_info("received %s: shutting down", sig == SIGINT ? "SIGINT" : "SIGTERM");
    az_gateway_free(g);
    az_info("agentz-gateway stopped");
    rc = 0;
out:
    az_opts_free(t, 2);
    return rc;
}
