/* agentzd's settings table (core/opts drives parsing, validation and --help from it), plus the
 * gateway's table for the gateway role, and the checks that span several settings. */
#include "config.h"

#include <errno.h>
#include <limits.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "auth/auth.h"
#include "auth/ratelimit.h"
#include "core/log.h"
#include "core/opts.h"
#include "gateway/gwconfig.h"
#include "tools/netguard.h"

static az_err check_level(const char *origin, const char *v, char *msg)
{
    az_log_level lvl;
    if (az_log_parse_level(v, &lvl) == 0) return AZ_OK;
    return az_fail(msg, AZ_ERR_INVALID, "%s: log level \"%s\" is not debug, info, warn or error",
                   origin, v);
}

static az_err check_listen(const char *origin, const char *v, char *msg)
{
    const char *colon = strrchr(v, ':');
    if (colon && colon[1]) return AZ_OK;
    return az_fail(msg, AZ_ERR_INVALID, "%s: listen address \"%s\" must be host:port", origin, v);
}

static az_err check_format(const char *origin, const char *v, char *msg)
{
    az_log_format f;
    if (az_log_parse_format(v, &f) == 0) return AZ_OK;
    return az_fail(msg, AZ_ERR_INVALID, "%s: log format \"%s\" is not text or json", origin, v);
}

/* host:port, or empty (off). */
static az_err check_listen_or_off(const char *origin, const char *v, char *msg)
{
    return *v ? check_listen(origin, v, msg) : AZ_OK;
}

static az_err check_auth(const char *origin, const char *v, char *msg)
{
    int off;
    char why[AZ_MSG_MAX];
    if (az_auth_parse_mode(v, &off, why) == AZ_OK) return AZ_OK;
    return az_fail(msg, AZ_ERR_INVALID, "%s: \"%s\" is not on or off", origin, v);
}

static az_err check_rate(const char *origin, const char *v, char *msg)
{
    az_ratelimit_rule rule;
    return az_ratelimit_parse_rule(origin, v, &rule, msg);
}

static az_err check_nonempty(const char *origin, const char *v, char *msg)
{
    if (*v) return AZ_OK;
    return az_fail(msg, AZ_ERR_INVALID, "%s: must not be empty", origin);
}

/* Parses the policy only to reject it early; main.c builds the one the daemon uses. */
static az_err check_netguard(const char *origin, const char *v, char *msg)
{
    az_netguard *g = NULL;
    char why[AZ_MSG_MAX];
    az_err err = az_netguard_new(v, &g, why);
    az_netguard_free(g);
    if (err != AZ_ERR_INVALID) return err == AZ_OK ? AZ_OK : az_fail(msg, err, "%s", why);
    /* why names AGENTZ_ALLOW_PRIVATE_NETWORKS; name where the value really came from. */
    static const char env[] = "AGENTZ_ALLOW_PRIVATE_NETWORKS: ";
    const char *detail = strncmp(why, env, sizeof env - 1) == 0 ? why + sizeof env - 1 : why;
    return az_fail(msg, AZ_ERR_INVALID, "%s: %s", origin, detail);
}

/* The roles a process plays: a comma list of these, each at most once. */
static const char *const ROLES[] = {"api", "worker", "gateway"};
#define NROLES (sizeof ROLES / sizeof *ROLES)

static az_err check_roles(const char *origin, const char *v, char *msg)
{
    int seen[NROLES] = {0}, any = 0;
    const char *p = v;
    while (*p) {
        size_t n = strcspn(p, ",");
        size_t r = 0;
        while (r < NROLES && !(strlen(ROLES[r]) == n && strncmp(p, ROLES[r], n) == 0)) r++;
        if (r == NROLES || seen[r])
            return az_fail(msg, AZ_ERR_INVALID,
                           "%s: \"%s\" is not a comma list of the roles api, worker and gateway",
                           origin, v);
        seen[r] = any = 1;
        p += n;
        if (*p == ',') p++;
    }
    if (!any)
        return az_fail(msg, AZ_ERR_INVALID, "%s: name at least one role (api, worker, gateway)", origin);
    return AZ_OK;
}

/* A worker id is the Redis consumer name and is stored on attempts: keep it printable. */
static az_err check_worker_id(const char *origin, const char *v, char *msg)
{
    size_t n = strlen(v);
    if (n == 0 || n > 128 || strspn(v, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                                       "0123456789._:-") != n)
        return az_fail(msg, AZ_ERR_INVALID,
                       "%s: a worker id is 1 to 128 characters of letters, digits and . _ : -",
                       origin);
    return AZ_OK;
}

static az_err check_url(const char *origin, const char *v, char *msg)
{
    if (!*v || strncmp(v, "http://", 7) == 0 || strncmp(v, "https://", 8) == 0) return AZ_OK;
    return az_fail(msg, AZ_ERR_INVALID, "%s: \"%s\" is not an http:// or https:// URL", origin, v);
}

#define S(f) offsetof(az_config, f)
static const az_opt opts[] = {
    {"database-url", "AGENTZ_DATABASE_URL", AZ_OPT_STR, S(database_url), NULL, 0, 0,
     "PostgreSQL URL; unset = run an embedded cluster under the data dir"},
    {"redis-url", "AGENTZ_REDIS_URL", AZ_OPT_STR, S(redis_url), NULL, 0, 0,
     "Redis URL (redis://host:port/db or unix:///path); unset = embedded redis-server"},
    {"listen", "AGENTZ_GRPC_LISTEN", AZ_OPT_STR, S(listen), "127.0.0.1:50051", 0, 0,
     "gRPC listen address (host:port; port 0 picks a free one)", check_listen},
    {"data-dir", "AGENTZ_DATA_DIR", AZ_OPT_STR, S(data_dir), "./.agentz", 0, 0,
     "where the embedded PostgreSQL and Redis keep their data", check_nonempty},
    {"log-level", "AGENTZ_LOG_LEVEL", AZ_OPT_STR, S(log_level), "info", 0, 0,
     "debug, info, warn or error", check_level},
    {"log-format", "AGENTZ_LOG_FORMAT", AZ_OPT_STR, S(log_format), "text", 0, 0,
     "text (logfmt) or json (one JSON object per line)", check_format},
    {"metrics-listen", "AGENTZ_METRICS_LISTEN", AZ_OPT_STR, S(metrics_listen), AZ_CONFIG_METRICS_LISTEN, 0, 0,
     "Prometheus GET /metrics listen address (host:port; port 0 picks a free one; empty = off)",
     check_listen_or_off},
    {"tls-cert", "AGENTZ_TLS_CERT", AZ_OPT_STR, S(tls_cert), NULL, 0, 0,
     "PEM certificate chain; with --tls-key enables TLS"},
    {"tls-key", "AGENTZ_TLS_KEY", AZ_OPT_STR, S(tls_key), NULL, 0, 0, "PEM private key"},
    {"tls-client-ca", "AGENTZ_TLS_CLIENT_CA", AZ_OPT_STR, S(tls_client_ca), NULL, 0, 0,
     "PEM CA bundle; when set, clients must present a certificate it signed (mTLS)"},
    {"master-key", "AGENTZ_MASTER_KEY", AZ_OPT_STR, S(master_key), NULL, 0, 0,
     "base64 of the 32-byte key encrypting secrets; unset = AGENTZ_MASTER_KEY_FILE, else (embedded) DATA/master.key"},
    {"master-key-file", "AGENTZ_MASTER_KEY_FILE", AZ_OPT_STR, S(master_key_file), NULL, 0, 0,
     "file holding the master key (base64)"},
    {"master-key-previous", "AGENTZ_MASTER_KEY_PREVIOUS", AZ_OPT_STR, S(master_key_previous), NULL, 0, 0,
     "comma list of earlier master keys, so rows not yet re-encrypted (agentzd admin rotate-secrets) still decrypt"},
    {"auth", "AGENTZ_AUTH", AZ_OPT_STR, S(auth), "on", 0, 0,
     "on, or off for development only (every caller is owner of the default workspace; refused "
     "unless listening on loopback)", check_auth},
    {"jwks-url", "AGENTZ_JWKS_URL", AZ_OPT_STR, S(jwks_url), NULL, 0, 0,
     "Clerk JWKS URL (https://<frontend api>/.well-known/jwks.json); unset = API keys only"},
    {"jwt-issuer", "AGENTZ_JWT_ISSUER", AZ_OPT_STR, S(jwt_issuer), NULL, 0, 0,
     "required iss of session tokens; required with --jwks-url"},
    {"jwt-authorized-parties", "AGENTZ_JWT_AUTHORIZED_PARTIES", AZ_OPT_STR, S(jwt_authorized_parties),
     NULL, 0, 0, "comma list of allowed azp origins; unset = any"},
    {"jwt-role-map", "AGENTZ_JWT_ROLE_MAP", AZ_OPT_STR, S(jwt_role_map),
     "org:owner=owner,org:admin=admin,org:member=editor,org:viewer=viewer", 0, 0,
     "Clerk organization role -> viewer, editor, admin, owner or none"},
    {"api-key-cache-ms", "AGENTZ_API_KEY_CACHE_MS", AZ_OPT_INT, S(api_key_cache_ms), "5000", 0,
     3600000, "how long a process remembers an API key that verified (a key revoked elsewhere "
     "works here that much longer); 0 = look every key up on every call"},
    {"rate-limit", "AGENTZ_RATE_LIMIT", AZ_OPT_STR, S(rate_limit), "50:100", 0, 0,
     "calls per second per principal, RATE[:BURST]; 0 = off", check_rate},
    {"rate-limit-workspace", "AGENTZ_RATE_LIMIT_WORKSPACE", AZ_OPT_STR, S(rate_limit_workspace),
     "200:400", 0, 0, "calls per second per workspace, RATE[:BURST]; 0 = off", check_rate},
    {"rate-limit-expensive", "AGENTZ_RATE_LIMIT_EXPENSIVE", AZ_OPT_STR, S(rate_limit_expensive),
     "5:20", 0, 0, "expensive calls (StartRun, CreateTask, InstantiateTemplate) per second per "
     "principal, RATE[:BURST]; 0 = off", check_rate},
    {"db-role", "AGENTZ_DB_ROLE", AZ_OPT_STR, S(db_role), "agentz_app", 0, 0,
     "PostgreSQL role the pool switches to after migrations (row-level security applies to it)",
     check_nonempty},
    {"allow-private-networks", "AGENTZ_ALLOW_PRIVATE_NETWORKS", AZ_OPT_STR, S(allow_private_networks),
     NULL, 0, 0,
     "special-purpose addresses (loopback, private, link-local, ...) LLM calls and tool fetches may "
     "reach: 0 = none, 1 = all, or a CIDR list (127.0.0.0/8,10.1.0.0/16,::1/128); unset = none, "
     "except loopback when embedded (local models)", check_netguard},
    {"grpc-threads", "AGENTZ_GRPC_THREADS", AZ_OPT_INT, S(grpc_threads), "0", 0, 256,
     "completion-queue threads; 0 = 4 per core"},
    {"db-pool-size", "AGENTZ_DB_POOL_SIZE", AZ_OPT_INT, S(db_pool_size), "8", 1, 512,
     "PostgreSQL connections"},
    {"max-message-bytes", "AGENTZ_MAX_MESSAGE_BYTES", AZ_OPT_INT, S(max_message_bytes), "4194304",
     1024, 64 << 20, "largest gRPC message accepted or sent"},
    {"stream-queue-limit", "AGENTZ_STREAM_QUEUE_LIMIT", AZ_OPT_INT, S(stream_queue_limit), "256", 1,
     100000, "messages queued per stream before a slow consumer is cut off"},
    {"stream-heartbeat", "AGENTZ_STREAM_HEARTBEAT", AZ_OPT_MS, S(stream_heartbeat_ms), "15s", 100,
     3600000, "a watch stream silent this long gets a Heartbeat event (keeps proxies from closing it)"},
    {"shutdown-grace", "AGENTZ_SHUTDOWN_GRACE", AZ_OPT_MS, S(shutdown_grace_ms), "10s", 0, 600000,
     "how long in-flight calls may finish after SIGTERM"},
    {"health-interval", "AGENTZ_HEALTH_INTERVAL", AZ_OPT_MS, S(health_interval_ms), "2s", 100,
     600000, "how often PostgreSQL and Redis are checked"},
    {"reconcile-interval", "AGENTZ_RECONCILE_INTERVAL", AZ_OPT_MS, S(reconcile_interval_ms), "5s", 100,
     3600000, "how often due retries are queued and stranded queued tasks re-published"},
    {"republish-after", "AGENTZ_REPUBLISH_AFTER", AZ_OPT_MS, S(republish_after_ms), "60s", 1000,
     86400000, "a queued task nobody picked up for this long is published to Redis again"},
    {"reconcile-interval-ms", "AGENTZ_RECONCILE_INTERVAL_MS", AZ_OPT_MS, S(reconcile_interval_ms),
     NULL, 100, 3600000, "the same as --reconcile-interval, in milliseconds; wins when both are set"},
    {"roles", "AGENTZ_ROLES", AZ_OPT_STR, S(roles), "api,worker", 0, 0,
     "what this process does: api (the gRPC services), worker (runs tasks), gateway (HTTP/JSON, "
     "grpc-web and the web UI; docs/gateway.md), comma-separated",
     check_roles},
    {"worker-concurrency", "AGENTZ_WORKER_CONCURRENCY", AZ_OPT_INT, S(worker_concurrency), "256", 1,
     20000, "tasks one worker process runs at once"},
    {"task-lease-seconds", "AGENTZ_TASK_LEASE_SECONDS", AZ_OPT_INT, S(task_lease_seconds), "30", 2,
     3600, "a running task's lease; a worker silent this long loses its tasks to the others"},
    {"worker-id", "AGENTZ_WORKER_ID", AZ_OPT_STR, S(worker_id), NULL, 0, 0,
     "the worker's name in the consumer group and on attempts; unset = <hostname>-<pid>-<random>",
     check_worker_id},
    {"worker-shutdown-grace", "AGENTZ_WORKER_SHUTDOWN_GRACE_MS", AZ_OPT_MS,
     S(worker_shutdown_grace_ms), "10000", 0, 600000,
     "on SIGTERM, how long running tasks may finish before they are handed back to the queue"},
    {"embeddings-url", "AGENTZ_EMBEDDINGS_URL", AZ_OPT_STR, S(embeddings_url), NULL, 0, 0,
     "OpenAI-compatible embeddings base URL for agent memory; unset = keyword recall",
     check_url},
    {"embeddings-model", "AGENTZ_EMBEDDINGS_MODEL", AZ_OPT_STR, S(embeddings_model), NULL, 0, 0,
     "embeddings model name"},
    {"embeddings-api-key", "AGENTZ_EMBEDDINGS_API_KEY", AZ_OPT_STR, S(embeddings_api_key), NULL, 0,
     0, "bearer key for the embeddings endpoint"},
    {"webhook-secret", "AGENTZ_WEBHOOK_SECRET", AZ_OPT_STR, S(webhook_secret), NULL, 0, 0,
     "key signing webhook POSTs (X-Agentz-Signature, HMAC-SHA256); unset = DATA/webhook.secret, "
     "generated at first start, when embedded, else deliveries fail"},
    {"event-retention", "AGENTZ_EVENT_RETENTION", AZ_OPT_SECONDS, S(event_retention_s), "7d", 0,
     INT_MAX, "stored events of a finished run (or task) are deleted this long after it finished, "
     "agent events this long after they happened; 0 = keep forever"},
    {"attempt-retention", "AGENTZ_ATTEMPT_RETENTION", AZ_OPT_SECONDS, S(attempt_retention_s), "90d", 0,
     INT_MAX, "attempts of tasks are deleted this long after they ended; 0 = keep forever"},
    {"audit-retention", "AGENTZ_AUDIT_RETENTION", AZ_OPT_SECONDS, S(audit_retention_s), "365d", 0,
     INT_MAX, "audit log entries are deleted this long after the call (the chain stays verifiable "
     "from a kept anchor); 0 = keep forever"},
    {"retention-interval", "AGENTZ_RETENTION_INTERVAL", AZ_OPT_MS, S(retention_interval_ms), "1h",
     1000, 86400000, "how often the reconciler deletes events, attempts and audit entries past "
     "their retention"},
    {"wal-archive-dir", "AGENTZ_WAL_ARCHIVE_DIR", AZ_OPT_STR, S(wal_archive_dir), NULL, 0, 0,
     "embedded PostgreSQL: archive every WAL segment into this directory (point-in-time recovery, "
     "deploy/backup.sh); remembered in DATA/wal_archive_dir, so later starts keep archiving; "
     "unset and never set = no archiving"},
    {"wal-archive-timeout", "AGENTZ_WAL_ARCHIVE_TIMEOUT", AZ_OPT_SECONDS, S(wal_archive_timeout_s),
     "60s", 0, 86400, "embedded PostgreSQL with --wal-archive-dir: archive the current WAL segment "
     "at least this often while there are writes (the most a lost disk loses); 0 = only full segments"},
    {"help", NULL, AZ_OPT_FLAG, S(show_help), NULL, 0, 0, "print this help and exit"},
    {"version", NULL, AZ_OPT_FLAG, S(show_version), NULL, 0, 0, "print the version and exit"},
};
#define NOPTS (sizeof opts / sizeof *opts)

static void tables(az_config *cfg, az_opt_table t[2])
{
    t[0] = (az_opt_table){opts, NOPTS, cfg, ""};
    t[1] = az_gwconfig_table(&cfg->gateway, "gateway-");
}

az_err az_config_load(az_config *cfg, int argc, char **argv, char *msg)
{
    memset(cfg, 0, sizeof *cfg);
    az_opt_table t[2];
    tables(cfg, t);
    az_err err = az_opts_load(t, 2, argc, argv, msg);
    if (err) return err;
    if ((err = az_gwconfig_check(&cfg->gateway, "--gateway-", msg)) != AZ_OK) return err;
    /* An empty variable means the default to the table; for this one it means off. */
    const char *ml = getenv("AGENTZ_METRICS_LISTEN");
    if (ml && !*ml && cfg->metrics_listen && strcmp(cfg->metrics_listen, AZ_CONFIG_METRICS_LISTEN) == 0) {
        free(cfg->metrics_listen);
        cfg->metrics_listen = NULL;
    }
    if (!!cfg->tls_cert != !!cfg->tls_key)
        return az_fail(msg, AZ_ERR_INVALID, "--tls-cert and --tls-key must be given together");
    if (cfg->tls_client_ca && !cfg->tls_cert)
        return az_fail(msg, AZ_ERR_INVALID, "--tls-client-ca needs --tls-cert and --tls-key");
    int auth_off = 0;
    az_auth_parse_mode(cfg->auth, &auth_off, NULL);
    if (auth_off && !az_auth_listen_is_loopback(cfg->listen))
        return az_fail(msg, AZ_ERR_INVALID,
                       "AGENTZ_AUTH=off is for development only and is refused when listening on "
                       "%s (not a loopback address)",
                       cfg->listen);
    if (cfg->jwks_url && !cfg->jwt_issuer)
        return az_fail(msg, AZ_ERR_INVALID, "AGENTZ_JWKS_URL needs AGENTZ_JWT_ISSUER");
    if (!!cfg->database_url != !!cfg->redis_url)
        return az_fail(msg, AZ_ERR_INVALID,
                       "set both AGENTZ_DATABASE_URL and AGENTZ_REDIS_URL (external services), or "
                       "neither (embedded)");
    return AZ_OK;
}

int az_config_has_role(const az_config *cfg, const char *role)
{
    size_t rl = strlen(role);
    for (const char *p = cfg->roles ? cfg->roles : "api,worker"; *p;) {
        size_t n = strcspn(p, ",");
        if (n == rl && strncmp(p, role, n) == 0) return 1;
        p += n;
        if (*p == ',') p++;
    }
    return 0;
}

void az_config_free(az_config *cfg)
{
    if (!cfg) return;
    az_opt_table t[2];
    tables(cfg, t);
    az_opts_free(t, 2);
}

void az_config_usage(FILE *out)
{
    fprintf(out,
            "usage: agentzd [flags]\n\n"
            "The AGENTZ server. Every flag has an environment variable; flags win.\n"
            "Without AGENTZ_DATABASE_URL and AGENTZ_REDIS_URL it runs its own PostgreSQL and\n"
            "Redis under the data dir.\n\n");
    az_config cfg;
    az_opt_table t[2];
    tables(&cfg, t);
    az_opts_usage(t, 1, out);
    fprintf(out, "\nWith --roles including gateway (docs/gateway.md):\n");
    az_opts_usage(t + 1, 1, out);
}
