/* agentzd's configuration: every setting from an environment variable with a matching flag. */
#ifndef AZ_CONFIG_H
#define AZ_CONFIG_H

#include <stdio.h>

#include "core/err.h"
#include "gateway/gwconfig.h"

/* The Prometheus listener's default: loopback, so only this host scrapes unless it is set. */
#define AZ_CONFIG_METRICS_LISTEN "127.0.0.1:9464"

typedef struct az_config {
    char *database_url; /* NULL = embedded PostgreSQL */
    char *redis_url;    /* NULL = embedded Redis */
    char *listen;
    char *data_dir;
    char *log_level;
    char *log_format;     /* "text" | "json" */
    char *metrics_listen; /* Prometheus /metrics host:port; NULL = off */
    char *tls_cert, *tls_key, *tls_client_ca;
    char *master_key, *master_key_file, *master_key_previous;
    char *auth; /* "on" | "off" */
    char *jwks_url, *jwt_issuer, *jwt_authorized_parties, *jwt_role_map;
    char *rate_limit, *rate_limit_workspace, *rate_limit_expensive; /* "RATE[:BURST]", "0" = off */
    char *db_role;
    char *allow_private_networks; /* AGENTZ_ALLOW_PRIVATE_NETWORKS as given; NULL = unset (main.c
                                   * applies the default: loopback when embedded, else none) */
    int api_key_cache_ms; /* AGENTZ_API_KEY_CACHE_MS: az_apikey_set_cache_ms */
    int grpc_threads;
    int db_pool_size;
    int max_message_bytes;
    int stream_queue_limit;
    int stream_heartbeat_ms; /* watch streams: Heartbeat after this much silence */
    int shutdown_grace_ms;
    int health_interval_ms;
    int reconcile_interval_ms;
    int republish_after_ms;
    /* Roles and the worker runtime (docs/worker.md). */
    char *roles;          /* comma list of api, worker, gateway; default "api,worker" */
    char *worker_id;      /* NULL = "<hostname>-<pid>-<random>" */
    int worker_concurrency;
    int task_lease_seconds;
    int worker_shutdown_grace_ms;
    char *embeddings_url, *embeddings_model, *embeddings_api_key; /* agent memory; NULL = none */
    char *webhook_secret; /* AGENTZ_WEBHOOK_SECRET; NULL = DATA/webhook.secret when embedded */
    int event_retention_s; /* AGENTZ_EVENT_RETENTION: outbox retention (seconds), 0 = forever */
    int attempt_retention_s; /* AGENTZ_ATTEMPT_RETENTION: finished task attempts, 0 = forever */
    int audit_retention_s;   /* AGENTZ_AUDIT_RETENTION: audit log entries, 0 = forever */
    int retention_interval_ms; /* AGENTZ_RETENTION_INTERVAL: how often the reconciler prunes */
    char *wal_archive_dir;     /* AGENTZ_WAL_ARCHIVE_DIR: embedded WAL archiving; NULL = off */
    int wal_archive_timeout_s; /* AGENTZ_WAL_ARCHIVE_TIMEOUT: archive_timeout of the embedded cluster */
    int show_help, show_version;
    az_gwconfig gateway; /* the gateway role's settings (--gateway-*, AGENTZ_GATEWAY_*) */
} az_config;

/* 1 when cfg->roles names role ("api", "worker" or "gateway"). */
int az_config_has_role(const az_config *cfg, const char *role);

/* Fills cfg from defaults, then the environment, then argv (flags win). On AZ_ERR_INVALID msg
 * is a one-line error naming the flag or variable; cfg is then unspecified but still freeable
 * with az_config_free. */
az_err az_config_load(az_config *cfg, int argc, char **argv, char *msg);
void az_config_free(az_config *cfg); /* frees the strings; accepts NULL */

/* Writes the --help text, listing every flag, its variable and default. */
void az_config_usage(FILE *out);

#endif
