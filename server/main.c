/* agentzd: wires configuration, the embedded or external PostgreSQL and Redis, migrations,
 * the services and the gRPC runtime together, then waits for SIGINT/SIGTERM. */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "agent/agent_api.h"
#include "audit/audit.h"
#include "auth/apikey.h"
#include "auth/auth.h"
#include "auth/ratelimit.h"
#include "core/file.h"
#include "core/log.h"
#include "daemon/admin.h"
#include "daemon/config.h"
#include "descriptor_set.h"
#include "embed/embedded.h"
#include "event/hub.h"
#include "event/outbox.h"
#include "event/relay.h"
#include "event/watch.h"
#include "event/webhook.h"
#include "gateway/gateway.h"
#include "gateway/gwconfig.h"
#include "llm/price.h"
#include "queue/reconciler.h"
#include "retention/retention.h"
#include "rpc/health.h"
#include "rpc/reflection.h"
#include "rpc/rpc.h"
#include "store/idem.h"
#include "store/migrate.h"
#include "store/pgpool.h"
#include "store/redis.h"
#include "secret/secret.h"
#include "system/metrics.h"
#include "system/prom.h"
#include "system/system_api.h"
#include "task/task_api.h"
#include "tools/netguard.h"
#include "tools/tools.h"
#include "worker/worker.h"
#include "workflow/run.h"
#include "workflow/workflow_api.h"

#ifndef AZ_VERSION
#define AZ_VERSION "0.1.0"
#endif
#define JANITOR_PERIOD_S 3600

static az_err check_pg(void *arg, char *msg) { return az_pg_ping(arg, msg); }
static az_err check_redis(void *arg, char *msg) { return az_redis_ping(arg, msg); }
static void health_down(void *arg) { az_health_shutdown(arg); }

/* The worker's queue connections, for health: the worker is created after health starts and
 * freed while its checker thread may still run, so the check reads it under a lock. */
typedef struct worker_probe {
    pthread_mutex_t mu;
    az_worker *w;
} worker_probe;
#define WORKER_QUEUE_GRACE_MS 1000 /* a reconnect that quick is not worth a NOT_SERVING */

static az_err check_worker_queue(void *arg, char *msg)
{
    worker_probe *wp = arg;
    pthread_mutex_lock(&wp->mu);
    az_err err = wp->w ? az_worker_check_queue(wp->w, WORKER_QUEUE_GRACE_MS, msg) : AZ_OK;
    pthread_mutex_unlock(&wp->mu);
    return err;
}

/* The reconciler reports the agent of every task it reaped: its dead worker never did. */
static az_err agent_ended_hook(void *pg, const az_ctx *ctx, const char *agent_id,
                               const char *worker, int failed, char *msg)
{
    return az_agent_holder_lost(pg, ctx, agent_id, worker, failed, msg);
}
static void watch_down(void *arg) { az_watch_shutdown(arg); }
static size_t watch_count(void *arg) { return az_watch_count(arg); }
static double hub_lag(void *arg)
{
    az_hub_stats st;
    az_hub_get_stats(arg, &st);
    return st.lag_ms;
}

/* The server has one observer slot: audit and metrics both see every call through it. */
typedef struct observers {
    az_audit *audit;
    az_metrics *metrics;
} observers;

static void observe_all(void *arg, az_call *c, const char *method, int status, int64_t duration_us)
{
    observers *o = arg;
    az_audit_observe(o->audit, c, method, status, duration_us);
    az_metrics_observe(o->metrics, c, method, status, duration_us);
}

/* How the start-up log describes well-known policies; anything else is logged as given. */
static const struct {
    const char *policy, *text;
} POLICY_TEXT[] = {
    {"", "no private networks"},
    {"0", "no private networks"},
    {"1", "all addresses allowed"},
    {AZ_NETGUARD_LOOPBACK, "loopback only"},
};

static void log_policy(const char *policy, int is_default)
{
    const char *v = policy ? policy : "";
    v += strspn(v, " \t");
    size_t n = strlen(v);
    while (n && (v[n - 1] == ' ' || v[n - 1] == '\t')) n--;
    const char *why = is_default ? " (default; set AGENTZ_ALLOW_PRIVATE_NETWORKS to change)" : "";
    for (size_t i = 0; i < sizeof POLICY_TEXT / sizeof *POLICY_TEXT; i++) {
        if (strlen(POLICY_TEXT[i].policy) == n && strncmp(POLICY_TEXT[i].policy, v, n) == 0) {
            az_info("outbound network policy: %s%s", POLICY_TEXT[i].text, why);
            return;
        }
    }
    az_info("outbound network policy: public addresses and %.*s%s", (int)n, v, why);
}

/* Hourly housekeeping: expired idempotency keys (retention of events, attempts and audit entries
 * is the reconciler's). Wakes at once on shutdown. */
typedef struct janitor {
    az_pg *pg;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int stop;
} janitor;

static void *janitor_main(void *arg)
{
    janitor *j = arg;
    pthread_mutex_lock(&j->mu);
    while (!j->stop) {
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += JANITOR_PERIOD_S;
        pthread_cond_timedwait(&j->cv, &j->mu, &until);
        if (j->stop) break;
        pthread_mutex_unlock(&j->mu);
        char msg[AZ_MSG_MAX];
        int n = 0;
        if (az_idem_gc(j->pg, &n, msg) != AZ_OK) az_warn("cannot expire idempotency keys: %s", msg);
        else if (n) az_info("expired %d idempotency keys", n);
        pthread_mutex_lock(&j->mu);
    }
    pthread_mutex_unlock(&j->mu);
    return NULL;
}

/* The worker's graceful stop runs beside the gRPC server's, so neither waits out the other's
 * grace. */
typedef struct worker_stopper {
    az_worker *w;
    int grace_ms;
} worker_stopper;

static void *stop_worker_main(void *arg)
{
    worker_stopper *s = arg;
    az_worker_stop(s->w, s->grace_ms);
    return NULL;
}

static void *stop_gateway_main(void *arg)
{
    az_gateway_stop(arg);
    return NULL;
}

/* The in-process gateway reaches this process over a unix socket in the data dir: plaintext and
 * local whatever TLS the public listener has. Returns "unix:/abs/path" (malloc'd) or NULL. */
static char *gateway_socket(const char *data_dir, char *msg)
{
    char run[4096], abs[4096];
    snprintf(run, sizeof run, "%s/run", data_dir);
    mkdir(data_dir, 0700);
    mkdir(run, 0700);
    if (!realpath(run, abs)) {
        az_fail(msg, AZ_ERR_IO, "cannot use %s for the gateway's socket", run);
        return NULL;
    }
    char *path = NULL;
    /* sun_path holds 108 bytes. */
    if (strlen(abs) + sizeof "/grpc.sock" > 100 || asprintf(&path, "unix:%s/grpc.sock", abs) < 0) {
        az_fail(msg, AZ_ERR_INVALID, "the data dir %s is too deep for a unix socket path", abs);
        return NULL;
    }
    return path;
}

/* "http://127.0.0.1:8080/" for the gateway's listen address and bound port. */
static void gateway_url(const az_config *cfg, int port, char *out, size_t size)
{
    const char *listen = cfg->gateway.listen;
    const char *colon = strrchr(listen, ':');
    int hl = (int)(colon - listen);
    const char *host = listen;
    if ((hl == 7 && strncmp(listen, "0.0.0.0", 7) == 0) || hl == 0) host = "127.0.0.1", hl = 9;
    else if (hl == 4 && strncmp(listen, "[::]", 4) == 0) host = "[::1]", hl = 5;
    snprintf(out, size, "%s://%.*s:%d/", cfg->gateway.tls_cert ? "https" : "http", hl, host, port);
}

static int run(const az_config *cfg)
{
    char msg[AZ_MSG_MAX];
    int rc = 1;
    az_embed *embed = NULL;
    az_pg *pg = NULL;
    az_redis *redis = NULL;
    az_health *health = NULL;
    az_reflection *refl = NULL;
    az_agent_api *agents = NULL;
    az_task_api *tasks = NULL;
    az_workflow_api *workflows = NULL;
    az_reconciler *reconciler = NULL;
    az_server *srv = NULL;
    az_secret_keyring *keys = NULL;
    az_audit *audit = NULL;
    az_system_api *sys = NULL;
    az_metrics *metrics = NULL;
    observers obs = {NULL, NULL};
    az_auth *auth = NULL;
    az_redis *rl_redis = NULL;
    az_ratelimit *limiter = NULL;
    az_netguard *guard = NULL; /* for LLM calls and tool fetches */
    az_tools *tools = NULL;
    az_llm_prices *prices = NULL; /* AGENTZ_LLM_PRICES_FILE / AGENTZ_LLM_PRICES over the defaults */
    az_worker *worker = NULL;
    worker_probe wprobe = {.mu = PTHREAD_MUTEX_INITIALIZER, .w = NULL};
    az_gateway *gateway = NULL; /* role gateway: HTTP in front of the gRPC services */
    az_prom_server *prom = NULL; /* GET /metrics (AGENTZ_METRICS_LISTEN) */
    int prom_collecting = 0;
    char *gateway_sock = NULL, *web_dir = NULL;
    az_webhook *webhooks = NULL; /* api processes deliver webhooks */
    char *webhook_secret = NULL;
    az_hub *hub = NULL; /* role api: live events for the watch streams */
    az_watch *watch = NULL;
    az_relay *relay = NULL; /* every process: outbox -> Redis */
    janitor jan = {.stop = 0};
    int janitor_started = 0;
    const az_retention_policy retention = {(int64_t)cfg->event_retention_s * 1000,
                                           (int64_t)cfg->attempt_retention_s * 1000,
                                           (int64_t)cfg->audit_retention_s * 1000};
    const int role_api = az_config_has_role(cfg, "api");
    const int role_worker = az_config_has_role(cfg, "worker");
    const int role_gateway = az_config_has_role(cfg, "gateway");

    /* libuv sizes its threadpool (claims, heartbeats, the executor's database and tool steps)
     * once, at first use: before any thread exists, and at least the pool size. */
    if (role_worker && !getenv("UV_THREADPOOL_SIZE")) {
        char n[16];
        int size = cfg->db_pool_size + 8;
        snprintf(n, sizeof n, "%d", size < 16 ? 16 : size > 1024 ? 1024 : size);
        setenv("UV_THREADPOOL_SIZE", n, 1);
    }

    /* Signals are taken by sigwait below; every thread inherits the mask. */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);

    /* Unset: no special-purpose addresses, except loopback for local models (Ollama on
     * 127.0.0.1:11434) in the embedded default. */
    const char *policy = cfg->allow_private_networks;
    if (!policy && !cfg->database_url) policy = AZ_NETGUARD_LOOPBACK;
    if (az_netguard_new(policy, &guard, msg) != AZ_OK) {
        az_error("%s", msg);
        goto out;
    }
    log_policy(policy, !cfg->allow_private_networks);

    const char *db_url = cfg->database_url, *redis_url = cfg->redis_url;
    int attached = 0;
    if (!db_url) {
        const az_embed_opts eopts = {cfg->wal_archive_dir, cfg->wal_archive_timeout_s};
        az_err eerr = az_embed_start_opts(cfg->data_dir, &eopts, &embed, msg);
        if (eerr == AZ_ERR_PRECONDITION && !role_api) {
            /* Another agentzd owns the data dir: an extra worker uses its servers. */
            char amsg[AZ_MSG_MAX];
            if (az_embed_attach(cfg->data_dir, &embed, amsg) == AZ_OK) {
                eerr = AZ_OK;
                attached = 1;
            } else {
                az_warn("cannot attach to the running instance's servers either: %s", amsg);
            }
        }
        if (eerr != AZ_OK) {
            az_error("cannot start embedded postgresql and redis: %s", msg);
            goto out;
        }
        db_url = az_embed_database_url(embed);
        redis_url = az_embed_redis_url(embed);
    }
    if (az_pg_new(db_url, cfg->db_pool_size, 30000, &pg, msg) != AZ_OK) {
        az_error("%s", msg);
        goto out;
    }
    int applied = 0;
    if (az_migrate(pg, az_migrations, az_migrations_count, &applied, msg) != AZ_OK) {
        az_error("cannot migrate database: %s", msg);
        goto out;
    }
    /* From here on the pool works as the row-level-security role; migrations ran as the owner. */
    if (az_pg_set_role(pg, cfg->db_role, msg) != AZ_OK) {
        az_error("cannot switch the database pool to role %s: %s", cfg->db_role, msg);
        goto out;
    }
    /* Secrets: the master key from the environment, else the embedded default's DATA/master.key. */
    if (az_secret_keyring_load(cfg->master_key, cfg->master_key_file, cfg->master_key_previous,
                               embed ? az_embed_data_dir(embed) : NULL, &keys, msg) != AZ_OK) {
        az_error("cannot load the master key: %s", msg);
        goto out;
    }
    if (!keys) az_warn("no master key (AGENTZ_MASTER_KEY or AGENTZ_MASTER_KEY_FILE): secrets are unavailable");
    if (embed && !attached && az_admin_ensure_local_key(pg, az_embed_data_dir(embed), msg) != AZ_OK) {
        az_error("cannot write the local admin key: %s", msg);
        goto out;
    }
    if (az_redis_new(redis_url, 30000, &redis, msg) != AZ_OK) {
        az_error("%s", msg);
        goto out;
    }

    health = az_health_new(cfg->health_interval_ms);
    refl = az_reflection_new(az_descriptor_set, az_descriptor_set_len, msg);
    agents = az_agent_api_new(pg);
    tasks = az_task_api_new(pg, redis);
    workflows = az_workflow_api_new(pg, redis);
    /* Every process reconciles: reaping expired leases must not depend on an api process. */
    reconciler = az_reconciler_new(pg, redis, cfg->reconcile_interval_ms, cfg->republish_after_ms);
    sys = az_system_api_new(pg, keys);
    int auth_off = 0;
    az_auth_parse_mode(cfg->auth, &auth_off, NULL);
    az_auth_config acfg = {
        .disabled = auth_off,
        .listen = cfg->listen,
        .jwks_url = cfg->jwks_url,
        .jwt_issuer = cfg->jwt_issuer,
        .jwt_authorized_parties = cfg->jwt_authorized_parties,
        .jwt_role_map = cfg->jwt_role_map,
    };
    az_apikey_set_cache_ms(cfg->api_key_cache_ms);
    auth = az_auth_new(&acfg, pg, msg);
    if (!auth) {
        az_error("%s", msg);
        goto out;
    }
    /* A connection of its own keeps rate-limit traffic off the shared command connection. */
    az_ratelimit_config rlc;
    az_ratelimit_defaults(&rlc);
    if (az_ratelimit_parse_rule("AGENTZ_RATE_LIMIT", cfg->rate_limit, &rlc.principal, msg) != AZ_OK ||
        az_ratelimit_parse_rule("AGENTZ_RATE_LIMIT_WORKSPACE", cfg->rate_limit_workspace,
                                &rlc.workspace, msg) != AZ_OK ||
        az_ratelimit_parse_rule("AGENTZ_RATE_LIMIT_EXPENSIVE", cfg->rate_limit_expensive,
                                &rlc.expensive, msg) != AZ_OK ||
        az_redis_new(redis_url, 30000, &rl_redis, msg) != AZ_OK ||
        az_ratelimit_new(rl_redis, &rlc, &limiter, msg) != AZ_OK) {
        az_error("cannot set up rate limits: %s", msg);
        goto out;
    }
    az_auth_set_limiter(auth, az_ratelimit_check, limiter);
    audit = az_audit_new(pg, 0, msg);
    if (!audit || !sys) {
        az_error("cannot set up services: %s", msg);
        goto out;
    }
    if (!health || !refl || !agents || !tasks || !workflows || !reconciler) {
        az_error("cannot set up services: %s", refl ? "out of memory" : msg);
        goto out;
    }
    static const char *const services[] = {"agentz.v1.AgentService", "agentz.v1.TaskService",
                                           "agentz.v1.WorkflowService", "agentz.v1.SystemService"};
    if (az_health_add_check(health, "postgresql", check_pg, pg, msg) != AZ_OK ||
        az_health_add_check(health, "redis", check_redis, redis, msg) != AZ_OK ||
        (role_worker &&
         az_health_add_check(health, "worker queue", check_worker_queue, &wprobe, msg) != AZ_OK)) {
        az_error("cannot set up health checks: %s", msg);
        goto out;
    }
    for (size_t i = 0; role_api && i < sizeof services / sizeof *services; i++) {
        if (az_health_add_service(health, services[i], msg) != AZ_OK) {
            az_error("cannot set up health checks: %s", msg);
            goto out;
        }
    }

    /* Watch streams (role api): one hub, with its own Redis subscription connection. */
    if (role_api) {
        hub = az_hub_new(redis_url, msg);
        az_watch_config wcfg = {.pg = pg,
                                .hub = hub,
                                .heartbeat_ms = cfg->stream_heartbeat_ms,
                                .queue_limit = cfg->stream_queue_limit};
        if (!hub || az_watch_new(&wcfg, &watch, msg) != AZ_OK) {
            az_error("cannot set up watch streams: %s", msg);
            goto out;
        }
        az_agent_api_set_watch(agents, watch);
        az_task_api_set_watch(tasks, watch);
        az_workflow_api_set_watch(workflows, watch);
    }

    /* CancelTask/RetryTask on a run's task, and reaping, refresh the run's status. */
    az_task_api_set_run_hook(tasks, az_run_sync_hook, pg);
    az_task_api_set_max_message_bytes(tasks, cfg->max_message_bytes);
    az_reconciler_set_run_hook(reconciler, az_run_sync_hook, pg);
    az_reconciler_set_agent_hook(reconciler, agent_ended_hook, pg);
    az_reconciler_set_retention_hook(reconciler, az_retention_hook, (void *)&retention,
                                     cfg->retention_interval_ms);
    const az_method *tables[6];
    size_t counts[6];
    tables[0] = az_health_methods(health, &counts[0]);
    tables[1] = az_reflection_methods(refl, &counts[1]);
    tables[2] = az_agent_api_methods(agents, &counts[2]);
    tables[3] = az_task_api_methods(tasks, &counts[3]);
    tables[4] = az_workflow_api_methods(workflows, &counts[4]);
    tables[5] = az_system_api_methods(sys, &counts[5]);
    az_server_config scfg = {
        .listen = cfg->listen,
        .tls_cert_file = cfg->tls_cert,
        .tls_key_file = cfg->tls_key,
        .tls_client_ca_file = cfg->tls_client_ca,
        .threads = cfg->grpc_threads,
        .max_message_bytes = cfg->max_message_bytes,
        .stream_queue_limit = cfg->stream_queue_limit,
        .shutdown_grace_ms = cfg->shutdown_grace_ms,
    };
    if (role_gateway && role_api) {
        if (!(gateway_sock = gateway_socket(cfg->data_dir, msg))) {
            az_error("%s", msg);
            goto out;
        }
        scfg.local_listen = gateway_sock;
    }
    az_metrics_sources msrc = {.pg = pg, .redis = redis, .worker_group = AZ_WORKER_GROUP,
                               .fanout_lag_ms = hub ? hub_lag : NULL, .fanout_arg = hub,
                               .watch_streams = watch ? watch_count : NULL, .watch_arg = watch};
    if (az_metrics_new(tables, counts, role_api ? 6 : 2, &msrc, &metrics, msg) != AZ_OK) {
        az_error("cannot set up metrics: %s", msg);
        goto out;
    }
    az_system_api_set_metrics(sys, metrics);
    /* A worker-only process serves health and reflection (probes, readiness), no API. */
    srv = az_server_new(&scfg, tables, counts, role_api ? 6 : 2, msg);
    if (!srv) {
        az_error("%s", msg);
        goto out;
    }
    az_server_on_shutdown(srv, health_down, health);
    if (watch) az_server_on_shutdown(srv, watch_down, watch);
    az_server_set_authorizer(srv, az_auth_authorize, auth);
    az_server_on_shutdown(srv, az_metrics_shutdown, metrics);
    obs = (observers){audit, metrics};
    az_server_set_observer(srv, observe_all, &obs);
    if (az_health_start(health, msg) != AZ_OK || az_metrics_start(metrics, msg) != AZ_OK ||
        az_server_start(srv, msg) != AZ_OK ||
        az_reconciler_start(reconciler, msg) != AZ_OK) {
        az_error("cannot start serving: %s", msg);
        goto out;
    }
    if (role_api) {
        /* The embedded default keeps a generated secret in its data dir, like admin.key. */
        if (az_webhook_load_secret(cfg->webhook_secret, embed ? az_embed_data_dir(embed) : NULL,
                                   &webhook_secret, msg) != AZ_OK) {
            az_error("cannot load the webhook signing secret: %s", msg);
            goto out;
        }
        az_webhook_config whcfg = {.pg = pg, .guard = guard, .secret = webhook_secret};
        if (!(webhooks = az_webhook_start(&whcfg, msg))) {
            az_error("cannot start webhook deliveries: %s", msg);
            goto out;
        }
    }
    az_memory_config memcfg = {.embeddings_url = cfg->embeddings_url,
                               .embeddings_model = cfg->embeddings_model,
                               .embeddings_api_key = cfg->embeddings_api_key,
                               .guard = guard};
    if (role_worker) {
        if (az_llm_prices_from_env(&prices, msg) != AZ_OK) {
            az_error("cannot load the llm price table: %s", msg);
            goto out;
        }
        az_tools_config tcfg = {.guard = guard};
        if (az_tools_new(&tcfg, &tools, msg) != AZ_OK) {
            az_error("cannot set up the tools: %s", msg);
            goto out;
        }
        az_worker_config wcfg = {.redis_url = redis_url,
                                 .database_url = db_url,
                                 .db_role = cfg->db_role,
                                 .concurrency = cfg->worker_concurrency,
                                 .lease_seconds = cfg->task_lease_seconds,
                                 .id = cfg->worker_id,
                                 .pg = pg,
                                 .redis = redis,
                                 .keys = keys,
                                 .guard = guard,
                                 .prices = prices,
                                 .memory = &memcfg,
                                 .tools = tools};
        if (az_worker_new(&wcfg, &worker, msg) != AZ_OK || az_worker_start(worker, msg) != AZ_OK) {
            az_error("cannot start the worker: %s", msg);
            goto out;
        }
        pthread_mutex_lock(&wprobe.mu);
        wprobe.w = worker;
        pthread_mutex_unlock(&wprobe.mu);
    }
    /* Every process runs a relay (one publishes at a time): events go out while any runs. */
    if (az_relay_new(db_url, cfg->db_role, redis_url, &relay, msg) != AZ_OK) {
        az_error("cannot start the event relay: %s", msg);
        goto out;
    }
    jan.pg = pg;
    pthread_mutex_init(&jan.mu, NULL);
    pthread_cond_init(&jan.cv, NULL);
    janitor_started = pthread_create(&jan.thread, NULL, janitor_main, &jan) == 0;

    char web_url[300] = "";
    if (role_gateway) {
        az_gateway_config gcfg;
        az_gwconfig_apply(&cfg->gateway, gateway_sock, &gcfg);
        if (!gcfg.web_dir) gcfg.web_dir = web_dir = az_gwconfig_default_web_dir();
        if (gcfg.max_message_bytes == 0) gcfg.max_message_bytes = cfg->max_message_bytes;
        if (az_gateway_new(&gcfg, &gateway, msg) != AZ_OK || az_gateway_start(gateway, msg) != AZ_OK) {
            az_error("cannot start the gateway: %s", msg);
            goto out;
        }
        gateway_url(cfg, az_gateway_port(gateway), web_url, sizeof web_url);
        az_info("gateway serving http on %s (upstream %s, web ui %s)", web_url,
                gateway_sock ? "this process" : gcfg.upstream, gcfg.web_dir ? gcfg.web_dir : "none");
    }

    /* Prometheus, last: what it shows is all set up by now. */
    char metrics_url[300] = "";
    if (cfg->metrics_listen) {
        az_prom_set_info(AZ_VERSION, cfg->roles,
                         AZ_PROM_SHOW_REDIS | AZ_PROM_SHOW_PGWAIT | (role_worker ? AZ_PROM_SHOW_LLM : 0) |
                             (role_gateway ? AZ_PROM_SHOW_HTTP : 0));
        if (az_prom_add_collector(az_metrics_prom, metrics, msg) != AZ_OK) {
            az_error("cannot set up the metrics listener: %s", msg);
            goto out;
        }
        prom_collecting = 1;
        az_err perr = az_prom_server_new(cfg->metrics_listen, &prom, msg);
        if (perr == AZ_ERR_UNAVAILABLE && strcmp(cfg->metrics_listen, AZ_CONFIG_METRICS_LISTEN) == 0) {
            /* The default port is taken (another agentzd on this host): run without, say so. */
            az_warn("%s; serving no metrics (set AGENTZ_METRICS_LISTEN to another address, or empty for none)", msg);
        } else if (perr != AZ_OK) {
            az_error("cannot start the metrics listener: %s", msg);
            goto out;
        } else {
            az_prom_url(cfg->metrics_listen, az_prom_server_port(prom), metrics_url, sizeof metrics_url);
            az_info("serving prometheus metrics on %s", metrics_url);
        }
    }

    char where[300];
    const char *colon = strrchr(cfg->listen, ':');
    snprintf(where, sizeof where, "%.*s:%d", (int)(colon - cfg->listen), cfg->listen,
             az_server_port(srv));
    az_info("agentzd %s serving grpc on %s (%s), roles %s, database %s, redis %s", AZ_VERSION,
            where, cfg->tls_cert ? "tls" : "plaintext", cfg->roles,
            embed ? (attached ? "embedded (attached)" : "embedded") : "external",
            embed ? (attached ? "embedded (attached)" : "embedded") : "external");
    printf("AGENTZ is running: gRPC at %s%s\n", where, cfg->tls_cert ? " (TLS)" : "");
    printf("  try: build/bin/agentz --server %s agents list\n", where);
    printf("  or:  grpcurl -plaintext %s list\n", where);
    if (metrics_url[0]) printf("metrics: %s\n", metrics_url);
    if (gateway) {
        /* The local admin key rides in the URL fragment, which browsers never send: open the
         * link and the web UI signs in as the local owner. */
        char *key = NULL;
        char keypath[4096];
        snprintf(keypath, sizeof keypath, "%s/admin.key", embed ? az_embed_data_dir(embed) : "");
        int have_key = embed && !attached && az_file_read(keypath, &key, NULL, msg) == AZ_OK;
        if (have_key) {
            key[strcspn(key, "\r\n")] = '\0';
            printf("web UI: %s#token=%s\n", web_url, key);
            explicit_bzero(key, strlen(key));
        } else {
            printf("web UI: %s\n", web_url);
        }
        free(key);
        /* A line to paste as it is: with the key file's path, never the key itself. */
        if (have_key)
            printf("  REST:  curl -H \"Authorization: Bearer $(cat %s)\" %sv1/agents\n", keypath, web_url);
        else
            printf("  REST:  curl -H \"Authorization: Bearer $AGENTZ_TOKEN\" %sv1/agents\n", web_url);
    }
    fflush(stdout);

    int sig = 0;
    sigwait(&sigs, &sig);
    az_info("received %s: shutting down", sig == SIGINT ? "SIGINT" : "SIGTERM");
    worker_stopper stopper = {.w = worker, .grace_ms = cfg->worker_shutdown_grace_ms};
    pthread_t stopper_thread;
    int stopping = worker && pthread_create(&stopper_thread, NULL, stop_worker_main, &stopper) == 0;
    /* The gateway ends its streams and drains its unary calls while the server drains too. */
    pthread_t gateway_thread;
    int gateway_stopping = gateway && pthread_create(&gateway_thread, NULL, stop_gateway_main, gateway) == 0;
    az_server_shutdown(srv);
    if (gateway_stopping) pthread_join(gateway_thread, NULL);
    if (stopping) pthread_join(stopper_thread, NULL);
    rc = 0;
out:
    az_prom_server_free(prom); /* first: scrapes read the metrics, pool and watch freed below */
    if (prom_collecting) az_prom_remove_collector(az_metrics_prom, metrics);
    az_gateway_free(gateway); /* before the server its upstream channels talk to */
    free(gateway_sock);
    free(web_dir);
    /* Stops it (grace 0) if still running: before the pool, Redis and tools it borrows. */
    pthread_mutex_lock(&wprobe.mu);
    wprobe.w = NULL;
    pthread_mutex_unlock(&wprobe.mu);
    az_worker_free(worker);
    az_tools_free(tools);
    az_llm_prices_free(prices);
    az_reconciler_free(reconciler); /* before the pool and redis it uses */
    az_relay_free(relay);           /* own connections; after the server, so late events go out */
    az_webhook_stop(webhooks);      /* before the pool and the netguard it uses */
    free(webhook_secret);
    if (janitor_started) {
        pthread_mutex_lock(&jan.mu);
        jan.stop = 1;
        pthread_cond_signal(&jan.cv);
        pthread_mutex_unlock(&jan.mu);
        pthread_join(jan.thread, NULL);
        pthread_mutex_destroy(&jan.mu);
        pthread_cond_destroy(&jan.cv);
    }
    az_server_free(srv);
    az_watch_free(watch); /* after the server: its streams are closed by then */
    az_audit_free(audit); /* after the server that observes into it; writes what is queued */
    az_metrics_free(metrics); /* after the server too: its streams and observer point at it */
    az_hub_free(hub);         /* after the watch streams and the metrics that read its stats */
    az_system_api_free(sys);
    az_auth_free(auth);
    az_ratelimit_free(limiter);
    az_redis_free(rl_redis);
    az_health_free(health);
    az_reflection_free(refl);
    az_agent_api_free(agents);
    az_task_api_free(tasks);
    az_workflow_api_free(workflows);
    az_redis_free(redis);
    az_secret_keyring_free(keys);
    az_pg_free(pg);
    az_embed_stop(embed);
    az_netguard_free(guard);
    if (rc == 0) az_info("agentzd stopped");
    return rc;
}

int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "admin") == 0) return az_admin_main(argc - 2, argv + 2);
    az_config cfg;
    char msg[AZ_MSG_MAX];
    if (az_config_load(&cfg, argc, argv, msg) != AZ_OK) {
        fprintf(stderr, "agentzd: %s\n", msg);
        az_config_free(&cfg);
        return 2;
    }
    if (cfg.show_help) {
        az_config_usage(stdout);
        az_config_free(&cfg);
        return 0;
    }
    if (cfg.show_version) {
        printf("agentzd %s\n", AZ_VERSION);
        az_config_free(&cfg);
        return 0;
    }
    az_log_level lvl;
    az_log_parse_level(cfg.log_level, &lvl);
    az_log_set_level(lvl);
    az_log_format fmt = AZ_LOG_TEXT;
    az_log_parse_format(cfg.log_format, &fmt);
    az_log_set_format(fmt);
    int rc = run(&cfg);
    az_config_free(&cfg);
    return rc;
}
