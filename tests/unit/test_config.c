/* CUnit suite for server/daemon/config: defaults, environment, flags, durations, validation
 * errors naming the flag or variable, and the --help text. */
#include <CUnit/Basic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/config.h"

/* Every variable agentzd reads (docs/operations and docs/development), written out here so a
 * renamed or dropped variable fails the usage test. */
static const char *const vars[] = {
    "AGENTZ_DATABASE_URL",    "AGENTZ_REDIS_URL",        "AGENTZ_GRPC_LISTEN",
    "AGENTZ_DATA_DIR",        "AGENTZ_LOG_LEVEL",        "AGENTZ_TLS_CERT",
    "AGENTZ_TLS_KEY",         "AGENTZ_TLS_CLIENT_CA",    "AGENTZ_GRPC_THREADS",
    "AGENTZ_DB_POOL_SIZE",    "AGENTZ_MAX_MESSAGE_BYTES", "AGENTZ_STREAM_QUEUE_LIMIT",
    "AGENTZ_SHUTDOWN_GRACE",  "AGENTZ_HEALTH_INTERVAL",  "AGENTZ_ALLOW_PRIVATE_NETWORKS",
    "AGENTZ_ROLES",           "AGENTZ_WORKER_CONCURRENCY", "AGENTZ_TASK_LEASE_SECONDS",
    "AGENTZ_WORKER_ID",       "AGENTZ_WORKER_SHUTDOWN_GRACE_MS", "AGENTZ_EMBEDDINGS_URL",
    "AGENTZ_EMBEDDINGS_MODEL", "AGENTZ_EMBEDDINGS_API_KEY", "AGENTZ_RECONCILE_INTERVAL_MS",
    "AGENTZ_RECONCILE_INTERVAL", "AGENTZ_WEBHOOK_SECRET", "AGENTZ_EVENT_RETENTION",
    "AGENTZ_STREAM_HEARTBEAT", "AGENTZ_GATEWAY_LISTEN", "AGENTZ_GATEWAY_UPSTREAM",
    "AGENTZ_GATEWAY_TLS_CERT", "AGENTZ_GATEWAY_TLS_KEY", "AGENTZ_CORS_ORIGINS",
    "AGENTZ_GATEWAY_WEB_DIR", "AGENTZ_CLERK_PUBLISHABLE_KEY", "AGENTZ_GATEWAY_MAX_BODY",
    "AGENTZ_GATEWAY_MAX_HEADER", "AGENTZ_GATEWAY_REQUEST_TIMEOUT", "AGENTZ_GATEWAY_CALL_TIMEOUT",
    "AGENTZ_GATEWAY_MAX_CALL_TIMEOUT", "AGENTZ_GATEWAY_MAX_STREAMS", "AGENTZ_GATEWAY_ACCESS_LOG",
    "AGENTZ_GATEWAY_SHUTDOWN_GRACE", "AGENTZ_GATEWAY_UPSTREAM_CA", "AGENTZ_GATEWAY_UPSTREAM_CERT",
    "AGENTZ_GATEWAY_UPSTREAM_KEY", "AGENTZ_GATEWAY_UPSTREAM_TLS",
};
#define NVARS (sizeof vars / sizeof *vars)

static az_config cfg;
static char msg[AZ_MSG_MAX];

static void clear_env(void)
{
    for (size_t i = 0; i < NVARS; i++) unsetenv(vars[i]);
}

/* Runs az_config_load on a NULL-terminated argument list (argv[0] added). */
static az_err load_argv(const char *const *args)
{
    char *argv[32];
    int argc = 0;
    argv[argc++] = "agentzd";
    for (; args && *args; args++) argv[argc++] = (char *)*args;
    argv[argc] = NULL;
    az_config_free(&cfg);
    strcpy(msg, "(untouched)");
    return az_config_load(&cfg, argc, argv, msg);
}
#define LOAD(...) load_argv((const char *const[]){__VA_ARGS__, NULL})
#define LOAD0() load_argv(NULL)

static int setup(void)
{
    clear_env();
    memset(&cfg, 0, sizeof cfg);
    return 0;
}

static int teardown(void)
{
    az_config_free(&cfg);
    clear_env();
    return 0;
}

/* Each test starts from a clean environment and ends with one. */
static void fresh(void) { clear_env(); }

static int msg_has(const char *s)
{
    if (strstr(msg, s)) return 1;
    fprintf(stderr, "\n  message \"%s\" lacks \"%s\"\n", msg, s);
    return 0;
}

/* ---- tests ---- */

static void test_defaults(void)
{
    fresh();
    CU_ASSERT_EQUAL_FATAL(LOAD0(), AZ_OK);
    CU_ASSERT_PTR_NULL(cfg.database_url);
    CU_ASSERT_PTR_NULL(cfg.redis_url);
    CU_ASSERT_PTR_NOT_NULL_FATAL(cfg.listen);
    CU_ASSERT_STRING_EQUAL(cfg.listen, "127.0.0.1:50051");
    CU_ASSERT_PTR_NOT_NULL_FATAL(cfg.data_dir);
    CU_ASSERT_STRING_EQUAL(cfg.data_dir, "./.agentz");
    CU_ASSERT_PTR_NOT_NULL_FATAL(cfg.log_level);
    CU_ASSERT_STRING_EQUAL(cfg.log_level, "info");
    CU_ASSERT_EQUAL(cfg.db_pool_size, 8);
    CU_ASSERT_EQUAL(cfg.shutdown_grace_ms, 10000);
    CU_ASSERT_EQUAL(cfg.health_interval_ms, 2000);
    CU_ASSERT_EQUAL(cfg.grpc_threads, 0);
    CU_ASSERT_EQUAL(cfg.max_message_bytes, 4 * 1024 * 1024);
    CU_ASSERT_EQUAL(cfg.stream_queue_limit, 256);
    CU_ASSERT_PTR_NULL(cfg.tls_cert);
    CU_ASSERT_PTR_NULL(cfg.tls_key);
    CU_ASSERT_PTR_NULL(cfg.tls_client_ca);
    CU_ASSERT_FALSE(cfg.show_help);
    CU_ASSERT_FALSE(cfg.show_version);
}

static void test_env_overrides(void)
{
    fresh();
    setenv("AGENTZ_GRPC_LISTEN", "0.0.0.0:7000", 1);
    setenv("AGENTZ_DATA_DIR", "/var/lib/agentz", 1);
    setenv("AGENTZ_LOG_LEVEL", "debug", 1);
    setenv("AGENTZ_DB_POOL_SIZE", "16", 1);
    setenv("AGENTZ_GRPC_THREADS", "3", 1);
    setenv("AGENTZ_MAX_MESSAGE_BYTES", "2048", 1);
    setenv("AGENTZ_STREAM_QUEUE_LIMIT", "9", 1);
    setenv("AGENTZ_SHUTDOWN_GRACE", "3s", 1);
    setenv("AGENTZ_HEALTH_INTERVAL", "750ms", 1);
    setenv("AGENTZ_DATABASE_URL", "postgresql://db/agentz", 1);
    setenv("AGENTZ_REDIS_URL", "redis://cache:6380/1", 1);
    CU_ASSERT_EQUAL_FATAL(LOAD0(), AZ_OK);
    CU_ASSERT_STRING_EQUAL(cfg.listen, "0.0.0.0:7000");
    CU_ASSERT_STRING_EQUAL(cfg.data_dir, "/var/lib/agentz");
    CU_ASSERT_STRING_EQUAL(cfg.log_level, "debug");
    CU_ASSERT_EQUAL(cfg.db_pool_size, 16);
    CU_ASSERT_EQUAL(cfg.grpc_threads, 3);
    CU_ASSERT_EQUAL(cfg.max_message_bytes, 2048);
    CU_ASSERT_EQUAL(cfg.stream_queue_limit, 9);
    CU_ASSERT_EQUAL(cfg.shutdown_grace_ms, 3000);
    CU_ASSERT_EQUAL(cfg.health_interval_ms, 750);
    CU_ASSERT_PTR_NOT_NULL_FATAL(cfg.database_url);
    CU_ASSERT_STRING_EQUAL(cfg.database_url, "postgresql://db/agentz");
    CU_ASSERT_PTR_NOT_NULL_FATAL(cfg.redis_url);
    CU_ASSERT_STRING_EQUAL(cfg.redis_url, "redis://cache:6380/1");
    /* An empty variable means unset: the default stays. */
    fresh();
    setenv("AGENTZ_GRPC_LISTEN", "", 1);
    setenv("AGENTZ_DB_POOL_SIZE", "", 1);
    CU_ASSERT_EQUAL_FATAL(LOAD0(), AZ_OK);
    CU_ASSERT_STRING_EQUAL(cfg.listen, "127.0.0.1:50051");
    CU_ASSERT_EQUAL(cfg.db_pool_size, 8);
    fresh();
}

static void test_flags_override_env(void)
{
    fresh();
    setenv("AGENTZ_GRPC_LISTEN", "0.0.0.0:7000", 1);
    setenv("AGENTZ_DB_POOL_SIZE", "16", 1);
    setenv("AGENTZ_SHUTDOWN_GRACE", "3s", 1);
    CU_ASSERT_EQUAL_FATAL(LOAD("--listen", "[::1]:9000", "--db-pool-size=4", "--shutdown-grace",
                               "250ms"),
                          AZ_OK);
    CU_ASSERT_STRING_EQUAL(cfg.listen, "[::1]:9000");
    CU_ASSERT_EQUAL(cfg.db_pool_size, 4);
    CU_ASSERT_EQUAL(cfg.shutdown_grace_ms, 250);
    fresh();
}

static void test_flag_forms(void)
{
    fresh();
    CU_ASSERT_EQUAL_FATAL(LOAD("--data-dir=/srv/a", "--log-level", "WARN", "--grpc-threads=7",
                               "--stream-queue-limit", "100"),
                          AZ_OK);
    CU_ASSERT_STRING_EQUAL(cfg.data_dir, "/srv/a");
    CU_ASSERT_STRING_EQUAL(cfg.log_level, "WARN");
    CU_ASSERT_EQUAL(cfg.grpc_threads, 7);
    CU_ASSERT_EQUAL(cfg.stream_queue_limit, 100);
    /* The value of --flag=value may itself contain '='. */
    CU_ASSERT_EQUAL_FATAL(LOAD("--database-url=postgresql:///x?sslmode=disable",
                               "--redis-url=redis://h"),
                          AZ_OK);
    CU_ASSERT_STRING_EQUAL(cfg.database_url, "postgresql:///x?sslmode=disable");
    /* The last occurrence wins. */
    CU_ASSERT_EQUAL_FATAL(LOAD("--db-pool-size=2", "--db-pool-size", "3"), AZ_OK);
    CU_ASSERT_EQUAL(cfg.db_pool_size, 3);
}

static void test_durations(void)
{
    static const struct {
        const char *v;
        int ms;
    } cases[] = {
        {"500ms", 500}, {"10s", 10000}, {"2m", 120000}, {"0.1h", 360000}, {"1500", 1500},
        {"0", 0},       {"1.5s", 1500}, {"0ms", 0},
    };
    fresh();
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char arg[64];
        snprintf(arg, sizeof arg, "--shutdown-grace=%s", cases[i].v);
        az_err e = LOAD(arg);
        if (e != AZ_OK) fprintf(stderr, "\n  %s: %s\n", arg, msg);
        CU_ASSERT_EQUAL(e, AZ_OK);
        if (e == AZ_OK) CU_ASSERT_EQUAL(cfg.shutdown_grace_ms, cases[i].ms);
    }
    /* "1h" parses (3600000 ms) but is past the 600000 ms maximum: a range error, not a
     * syntax error. */
    CU_ASSERT_EQUAL(LOAD("--shutdown-grace=1h"), AZ_ERR_INVALID);
    CU_ASSERT(msg_has("out of range"));
    CU_ASSERT(msg_has("--shutdown-grace"));
    /* Environment durations use the same parser (1h is past shutdown-grace's 600000 ms max,
     * so use health-interval with a value in range). */
    setenv("AGENTZ_HEALTH_INTERVAL", "1m", 1);
    CU_ASSERT_EQUAL_FATAL(LOAD0(), AZ_OK);
    CU_ASSERT_EQUAL(cfg.health_interval_ms, 60000);
    fresh();
}

static void test_range_and_bad_values(void)
{
    static const struct {
        const char *arg, *named;
    } cases[] = {
        {"--db-pool-size=0", "--db-pool-size"},
        {"--db-pool-size=513", "--db-pool-size"},
        {"--db-pool-size=-1", "--db-pool-size"},
        {"--db-pool-size=eight", "--db-pool-size"},
        {"--db-pool-size=8x", "--db-pool-size"},
        {"--db-pool-size=", "--db-pool-size"},
        {"--db-pool-size=99999999999999999999", "--db-pool-size"},
        {"--grpc-threads=257", "--grpc-threads"},
        {"--max-message-bytes=1023", "--max-message-bytes"},
        {"--stream-queue-limit=0", "--stream-queue-limit"},
        {"--health-interval=99ms", "--health-interval"},
        {"--health-interval=11m", "--health-interval"},
        {"--shutdown-grace=1h", "--shutdown-grace"},
        {"--shutdown-grace=-1s", "--shutdown-grace"},
        {"--shutdown-grace=10x", "--shutdown-grace"},
        {"--shutdown-grace=s", "--shutdown-grace"},
        {"--shutdown-grace=10 s", "--shutdown-grace"},
        {"--shutdown-grace=1e30h", "--shutdown-grace"},
        {"--shutdown-grace=nan", "--shutdown-grace"},
    };
    fresh();
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        az_err e = LOAD(cases[i].arg);
        if (e != AZ_ERR_INVALID) fprintf(stderr, "\n  %s accepted\n", cases[i].arg);
        CU_ASSERT_EQUAL(e, AZ_ERR_INVALID);
        CU_ASSERT(msg_has(cases[i].named));
    }
}

static void test_env_errors_name_variable(void)
{
    fresh();
    setenv("AGENTZ_DB_POOL_SIZE", "1000", 1);
    CU_ASSERT_EQUAL(LOAD0(), AZ_ERR_INVALID);
    CU_ASSERT(msg_has("AGENTZ_DB_POOL_SIZE"));
    CU_ASSERT(msg_has("1000"));
    fresh();
    setenv("AGENTZ_HEALTH_INTERVAL", "soon", 1);
    CU_ASSERT_EQUAL(LOAD0(), AZ_ERR_INVALID);
    CU_ASSERT(msg_has("AGENTZ_HEALTH_INTERVAL"));
    CU_ASSERT(msg_has("soon"));
    fresh();
    setenv("AGENTZ_GRPC_THREADS", "x", 1);
    CU_ASSERT_EQUAL(LOAD0(), AZ_ERR_INVALID);
    CU_ASSERT(msg_has("AGENTZ_GRPC_THREADS"));
    fresh();
    /* A bad variable overridden by a good flag is still reported: the environment is read
     * first. What matters is that the message names the variable, not the flag. */
    setenv("AGENTZ_STREAM_QUEUE_LIMIT", "0", 1);
    CU_ASSERT_EQUAL(LOAD0(), AZ_ERR_INVALID);
    CU_ASSERT(msg_has("AGENTZ_STREAM_QUEUE_LIMIT"));
    fresh();
}

/* Values checked after parsing (log level, listen address) must still name where they came
 * from, as az_config_load's contract promises ("msg ... naming the flag or variable"). */
static void test_late_checks_name_origin(void)
{
    fresh();
    CU_ASSERT_EQUAL(LOAD("--log-level=verbose"), AZ_ERR_INVALID);
    CU_ASSERT(msg_has("verbose"));
    CU_ASSERT(msg_has("--log-level"));
    CU_ASSERT_EQUAL(LOAD("--listen=localhost"), AZ_ERR_INVALID);
    CU_ASSERT(msg_has("localhost"));
    CU_ASSERT(msg_has("--listen"));
    setenv("AGENTZ_LOG_LEVEL", "loud", 1);
    CU_ASSERT_EQUAL(LOAD0(), AZ_ERR_INVALID);
    CU_ASSERT(msg_has("AGENTZ_LOG_LEVEL"));
    fresh();
    setenv("AGENTZ_GRPC_LISTEN", "nohostport", 1);
    CU_ASSERT_EQUAL(LOAD0(), AZ_ERR_INVALID);
    CU_ASSERT(msg_has("AGENTZ_GRPC_LISTEN"));
    fresh();
}

/* The outbound network policy is parsed at load, so a bad CIDR stops start-up naming the
 * variable (or flag) and the entry; unset stays NULL, for main.c's embedded default. */
static void test_allow_private_networks(void)
{
    fresh();
    CU_ASSERT_EQUAL_FATAL(LOAD0(), AZ_OK);
    CU_ASSERT_PTR_NULL(cfg.allow_private_networks);
    setenv("AGENTZ_ALLOW_PRIVATE_NETWORKS", "127.0.0.0/8, 10.1.0.0/16,::1/128,fd00::/8,192.168.1.7", 1);
    CU_ASSERT_EQUAL_FATAL(LOAD0(), AZ_OK);
    CU_ASSERT_STRING_EQUAL(cfg.allow_private_networks, "127.0.0.0/8, 10.1.0.0/16,::1/128,fd00::/8,192.168.1.7");
    static const char *const good[] = {"0", "1", " 1 "};
    for (size_t i = 0; i < sizeof good / sizeof *good; i++) {
        setenv("AGENTZ_ALLOW_PRIVATE_NETWORKS", good[i], 1);
        CU_ASSERT_EQUAL(LOAD0(), AZ_OK);
        CU_ASSERT_STRING_EQUAL(cfg.allow_private_networks, good[i]);
    }
    setenv("AGENTZ_ALLOW_PRIVATE_NETWORKS", "127.0.0.0/8,10.0.0.0/33", 1);
    CU_ASSERT_EQUAL(LOAD0(), AZ_ERR_INVALID);
    CU_ASSERT(msg_has("AGENTZ_ALLOW_PRIVATE_NETWORKS: entry \"10.0.0.0/33\": prefix length must be 0-32"));
    CU_ASSERT_PTR_NULL(strchr(msg, '\n'));
    /* A good flag does not hide a bad variable, which is read first. */
    CU_ASSERT_EQUAL(LOAD("--allow-private-networks=1"), AZ_ERR_INVALID);
    CU_ASSERT(msg_has("AGENTZ_ALLOW_PRIVATE_NETWORKS"));
    fresh();
    CU_ASSERT_EQUAL(LOAD("--allow-private-networks", "10.1.0.0/8"), AZ_ERR_INVALID);
    CU_ASSERT(msg_has("--allow-private-networks: entry \"10.1.0.0/8\""));
    CU_ASSERT_EQUAL(LOAD("--allow-private-networks=localhost"), AZ_ERR_INVALID);
    CU_ASSERT(msg_has("\"localhost\""));
    CU_ASSERT_EQUAL_FATAL(LOAD("--allow-private-networks=fd00::/8"), AZ_OK);
    CU_ASSERT_STRING_EQUAL(cfg.allow_private_networks, "fd00::/8");
    fresh();
}

static void test_unknown_flag_and_missing_value(void)
{
    fresh();
    CU_ASSERT_EQUAL(LOAD("--colour=red"), AZ_ERR_INVALID);
    CU_ASSERT(msg_has("--colour"));
    CU_ASSERT_EQUAL(LOAD("--listen-address", "x:1"), AZ_ERR_INVALID); /* no prefix matching */
    CU_ASSERT(msg_has("--listen-address"));
    CU_ASSERT_EQUAL(LOAD("--list", "x:1"), AZ_ERR_INVALID);
    CU_ASSERT(msg_has("--list"));
    CU_ASSERT_EQUAL(LOAD("positional"), AZ_ERR_INVALID);
    CU_ASSERT(msg_has("positional"));
    CU_ASSERT_EQUAL(LOAD("-x"), AZ_ERR_INVALID);
    CU_ASSERT_EQUAL(LOAD("--listen"), AZ_ERR_INVALID);
    CU_ASSERT(msg_has("--listen"));
    CU_ASSERT(msg_has("value"));
    CU_ASSERT_EQUAL(LOAD("--db-pool-size=4", "--shutdown-grace"), AZ_ERR_INVALID);
    CU_ASSERT(msg_has("--shutdown-grace"));
    CU_ASSERT_EQUAL(LOAD("--help=yes"), AZ_ERR_INVALID);
    CU_ASSERT(msg_has("--help"));
}

static void test_help_version(void)
{
    fresh();
    CU_ASSERT_EQUAL_FATAL(LOAD("--help"), AZ_OK);
    CU_ASSERT_TRUE(cfg.show_help);
    CU_ASSERT_FALSE(cfg.show_version);
    CU_ASSERT_EQUAL_FATAL(LOAD("-h"), AZ_OK);
    CU_ASSERT_TRUE(cfg.show_help);
    CU_ASSERT_EQUAL_FATAL(LOAD("--version"), AZ_OK);
    CU_ASSERT_TRUE(cfg.show_version);
    CU_ASSERT_FALSE(cfg.show_help);
}

static void test_tls_and_urls_consistency(void)
{
    fresh();
    CU_ASSERT_EQUAL(LOAD("--tls-cert=/c.pem"), AZ_ERR_INVALID);
    CU_ASSERT(msg_has("--tls-key"));
    CU_ASSERT_EQUAL(LOAD("--tls-key=/k.pem"), AZ_ERR_INVALID);
    CU_ASSERT(msg_has("--tls-cert"));
    CU_ASSERT_EQUAL(LOAD("--tls-client-ca=/ca.pem"), AZ_ERR_INVALID);
    CU_ASSERT(msg_has("--tls-client-ca"));
    CU_ASSERT_EQUAL_FATAL(LOAD("--tls-cert=/c.pem", "--tls-key=/k.pem"), AZ_OK);
    CU_ASSERT_STRING_EQUAL(cfg.tls_cert, "/c.pem");
    CU_ASSERT_STRING_EQUAL(cfg.tls_key, "/k.pem");
    CU_ASSERT_EQUAL_FATAL(LOAD("--tls-cert=/c.pem", "--tls-key=/k.pem", "--tls-client-ca=/ca.pem"),
                          AZ_OK);
    CU_ASSERT_STRING_EQUAL(cfg.tls_client_ca, "/ca.pem");
    /* Only one of the two external URLs. */
    CU_ASSERT_EQUAL(LOAD("--database-url=postgresql:///x"), AZ_ERR_INVALID);
    CU_ASSERT(msg_has("AGENTZ_REDIS_URL"));
    CU_ASSERT_EQUAL(LOAD("--redis-url=redis://h"), AZ_ERR_INVALID);
    CU_ASSERT(msg_has("AGENTZ_DATABASE_URL"));
    setenv("AGENTZ_DATABASE_URL", "postgresql:///x", 1);
    CU_ASSERT_EQUAL(LOAD0(), AZ_ERR_INVALID);
    /* ...and an empty flag clears the variable's value, giving "neither" = embedded. */
    CU_ASSERT_EQUAL_FATAL(LOAD("--database-url="), AZ_OK);
    CU_ASSERT_PTR_NULL(cfg.database_url);
    fresh();
}

static void test_usage(void)
{
    FILE *f = tmpfile();
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    az_config_usage(f);
    long n = ftell(f);
    CU_ASSERT_FATAL(n > 0);
    char *text = calloc(1, (size_t)n + 1);
    CU_ASSERT_PTR_NOT_NULL_FATAL(text);
    rewind(f);
    CU_ASSERT_EQUAL(fread(text, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    for (size_t i = 0; i < NVARS; i++) {
        if (!strstr(text, vars[i])) {
            fprintf(stderr, "\n  --help does not mention %s\n", vars[i]);
            CU_FAIL("a variable is missing from --help");
        }
    }
    static const char *flags[] = {"--database-url", "--redis-url", "--listen", "--data-dir",
                                  "--log-level", "--tls-cert", "--tls-key", "--tls-client-ca",
                                  "--grpc-threads", "--db-pool-size", "--max-message-bytes",
                                  "--stream-queue-limit", "--shutdown-grace", "--health-interval",
                                  "--allow-private-networks", "--help", "--version"};
    for (size_t i = 0; i < sizeof flags / sizeof *flags; i++) CU_ASSERT_PTR_NOT_NULL(strstr(text, flags[i]));
    /* Defaults are shown. */
    CU_ASSERT_PTR_NOT_NULL(strstr(text, "127.0.0.1:50051"));
    CU_ASSERT_PTR_NOT_NULL(strstr(text, "./.agentz"));
    free(text);
}

static void test_worker_options(void)
{
    fresh();
    CU_ASSERT_EQUAL_FATAL(LOAD0(), AZ_OK);
    CU_ASSERT_STRING_EQUAL(cfg.roles, "api,worker");
    CU_ASSERT_TRUE(az_config_has_role(&cfg, "api"));
    CU_ASSERT_TRUE(az_config_has_role(&cfg, "worker"));
    CU_ASSERT_FALSE(az_config_has_role(&cfg, "work"));
    CU_ASSERT_EQUAL(cfg.worker_concurrency, 256);
    CU_ASSERT_EQUAL(cfg.task_lease_seconds, 30);
    CU_ASSERT_EQUAL(cfg.worker_shutdown_grace_ms, 10000);
    CU_ASSERT_PTR_NULL(cfg.worker_id);
    CU_ASSERT_PTR_NULL(cfg.embeddings_url);
    CU_ASSERT_EQUAL(cfg.reconcile_interval_ms, 5000);

    CU_ASSERT_EQUAL(LOAD("--roles", "worker"), AZ_OK);
    CU_ASSERT_FALSE(az_config_has_role(&cfg, "api"));
    CU_ASSERT_TRUE(az_config_has_role(&cfg, "worker"));
    CU_ASSERT_EQUAL(LOAD("--roles=worker,api"), AZ_OK);
    CU_ASSERT_TRUE(az_config_has_role(&cfg, "api") && az_config_has_role(&cfg, "worker"));
    CU_ASSERT_EQUAL(LOAD("--roles", "api,api"), AZ_ERR_INVALID);
    CU_ASSERT_EQUAL(LOAD("--roles", "scheduler"), AZ_ERR_INVALID);
    CU_ASSERT_TRUE(msg_has("--roles") && msg_has("api, worker and gateway"));
    CU_ASSERT_EQUAL(LOAD("--roles", ""), AZ_ERR_INVALID);

    setenv("AGENTZ_WORKER_CONCURRENCY", "20001", 1);
    CU_ASSERT_EQUAL(LOAD0(), AZ_ERR_INVALID);
    CU_ASSERT_TRUE(msg_has("AGENTZ_WORKER_CONCURRENCY"));
    setenv("AGENTZ_WORKER_CONCURRENCY", "5000", 1);
    setenv("AGENTZ_TASK_LEASE_SECONDS", "1", 1);
    CU_ASSERT_EQUAL(LOAD0(), AZ_ERR_INVALID);
    CU_ASSERT_TRUE(msg_has("AGENTZ_TASK_LEASE_SECONDS"));
    setenv("AGENTZ_TASK_LEASE_SECONDS", "5", 1);
    setenv("AGENTZ_WORKER_ID", "node 1", 1);
    CU_ASSERT_EQUAL(LOAD0(), AZ_ERR_INVALID);
    CU_ASSERT_TRUE(msg_has("AGENTZ_WORKER_ID"));
    setenv("AGENTZ_WORKER_ID", "node-1.eu:7", 1);
    setenv("AGENTZ_EMBEDDINGS_URL", "ftp://x", 1);
    CU_ASSERT_EQUAL(LOAD0(), AZ_ERR_INVALID);
    CU_ASSERT_TRUE(msg_has("AGENTZ_EMBEDDINGS_URL"));
    setenv("AGENTZ_EMBEDDINGS_URL", "http://127.0.0.1:11434/v1", 1);
    setenv("AGENTZ_RECONCILE_INTERVAL", "2s", 1);
    setenv("AGENTZ_RECONCILE_INTERVAL_MS", "500", 1);
    setenv("AGENTZ_WORKER_SHUTDOWN_GRACE_MS", "2500", 1);
    CU_ASSERT_EQUAL_FATAL(LOAD0(), AZ_OK);
    CU_ASSERT_EQUAL(cfg.worker_concurrency, 5000);
    CU_ASSERT_EQUAL(cfg.task_lease_seconds, 5);
    CU_ASSERT_STRING_EQUAL(cfg.worker_id, "node-1.eu:7");
    CU_ASSERT_STRING_EQUAL(cfg.embeddings_url, "http://127.0.0.1:11434/v1");
    CU_ASSERT_EQUAL(cfg.reconcile_interval_ms, 500); /* the _MS variable wins */
    CU_ASSERT_EQUAL(cfg.worker_shutdown_grace_ms, 2500);
    setenv("AGENTZ_RECONCILE_INTERVAL_MS", "50", 1);
    CU_ASSERT_EQUAL(LOAD0(), AZ_ERR_INVALID); /* below 100 ms */
    clear_env();
}

/* The gateway role's settings share agentzd's command line with a "gateway-" prefix. */
static void test_gateway_options(void)
{
    fresh();
    CU_ASSERT_EQUAL_FATAL(LOAD0(), AZ_OK);
    CU_ASSERT_FALSE(az_config_has_role(&cfg, "gateway"));
    CU_ASSERT_STRING_EQUAL(cfg.gateway.listen, "127.0.0.1:8080");
    CU_ASSERT_EQUAL(cfg.gateway.max_body_bytes, 4 << 20);
    CU_ASSERT_EQUAL(cfg.gateway.max_header_bytes, 16 << 10);
    CU_ASSERT_EQUAL(cfg.gateway.request_timeout_ms, 30000);
    CU_ASSERT_PTR_NULL(cfg.gateway.cors_origins);

    CU_ASSERT_EQUAL_FATAL(LOAD("--roles", "api,worker,gateway", "--gateway-listen", "0.0.0.0:0",
                               "--gateway-max-body=64k", "--gateway-cors-origins",
                               "https://app.example.com, http://localhost:5173"), AZ_OK);
    CU_ASSERT_TRUE(az_config_has_role(&cfg, "gateway") && az_config_has_role(&cfg, "api"));
    CU_ASSERT_STRING_EQUAL(cfg.gateway.listen, "0.0.0.0:0");
    CU_ASSERT_EQUAL(cfg.gateway.max_body_bytes, 64 << 10);
    CU_ASSERT_STRING_EQUAL(cfg.gateway.cors_origins, "https://app.example.com, http://localhost:5173");
    CU_ASSERT_EQUAL(LOAD("--roles", "gateway,gateway"), AZ_ERR_INVALID);

    /* The plain flag is agentzd's own, the prefixed one the gateway's. */
    CU_ASSERT_EQUAL(LOAD("--listen", "127.0.0.1:1", "--gateway-listen", "127.0.0.1:2"), AZ_OK);
    CU_ASSERT_STRING_EQUAL(cfg.listen, "127.0.0.1:1");
    CU_ASSERT_STRING_EQUAL(cfg.gateway.listen, "127.0.0.1:2");

    CU_ASSERT_EQUAL(LOAD("--gateway-cors-origins", "app.example.com"), AZ_ERR_INVALID);
    CU_ASSERT_TRUE(msg_has("--gateway-cors-origins") && msg_has("app.example.com"));
    CU_ASSERT_EQUAL(LOAD("--gateway-cors-origins", "https://a.example/path"), AZ_ERR_INVALID);
    CU_ASSERT_EQUAL(LOAD("--gateway-max-body", "lots"), AZ_ERR_INVALID);
    CU_ASSERT_TRUE(msg_has("--gateway-max-body") && msg_has("a size"));
    CU_ASSERT_EQUAL(LOAD("--gateway-max-header", "1m"), AZ_ERR_INVALID);
    CU_ASSERT_TRUE(msg_has("out of range"));
    CU_ASSERT_EQUAL(LOAD("--gateway-listen", "8080"), AZ_ERR_INVALID);
    CU_ASSERT_TRUE(msg_has("host:port"));
    CU_ASSERT_EQUAL(LOAD("--gateway-tls-cert", "/c.pem"), AZ_ERR_INVALID);
    CU_ASSERT_TRUE(msg_has("--gateway-tls-key"));
    CU_ASSERT_EQUAL(LOAD("--gateway-access-log", "maybe"), AZ_ERR_INVALID);

    setenv("AGENTZ_GATEWAY_REQUEST_TIMEOUT", "5s", 1);
    setenv("AGENTZ_CORS_ORIGINS", "*", 1);
    setenv("AGENTZ_GATEWAY_MAX_HEADER", "8KiB", 1);
    CU_ASSERT_EQUAL_FATAL(LOAD0(), AZ_OK);
    CU_ASSERT_EQUAL(cfg.gateway.request_timeout_ms, 5000);
    CU_ASSERT_STRING_EQUAL(cfg.gateway.cors_origins, "*");
    CU_ASSERT_EQUAL(cfg.gateway.max_header_bytes, 8192);
    setenv("AGENTZ_GATEWAY_MAX_STREAMS", "0", 1);
    CU_ASSERT_EQUAL(LOAD0(), AZ_ERR_INVALID);
    CU_ASSERT_TRUE(msg_has("AGENTZ_GATEWAY_MAX_STREAMS"));
}

static void test_free_twice(void)
{
    fresh();
    az_config c;
    char m[AZ_MSG_MAX];
    char *argv[] = {"agentzd", "--tls-cert=/c", "--tls-key=/k", "--database-url=pg", "--redis-url=r", NULL};
    CU_ASSERT_EQUAL_FATAL(az_config_load(&c, 5, argv, m), AZ_OK);
    CU_ASSERT_PTR_NOT_NULL(c.tls_cert);
    az_config_free(&c);
    CU_ASSERT_PTR_NULL(c.listen);
    CU_ASSERT_PTR_NULL(c.data_dir);
    CU_ASSERT_PTR_NULL(c.log_level);
    CU_ASSERT_PTR_NULL(c.tls_cert);
    CU_ASSERT_PTR_NULL(c.tls_key);
    CU_ASSERT_PTR_NULL(c.database_url);
    CU_ASSERT_PTR_NULL(c.redis_url);
    az_config_free(&c); /* ASan: no double free */
    az_config_free(NULL);
    /* A failed load is still freeable (and frees what it allocated: ASan leak check). */
    char *bad[] = {"agentzd", "--data-dir=/x", "--listen=nope", NULL};
    CU_ASSERT_EQUAL(az_config_load(&c, 3, bad, m), AZ_ERR_INVALID);
    az_config_free(&c);
    az_config_free(&c);
}

int main(void)
{
    if (CU_initialize_registry() != CUE_SUCCESS) return 1;
    CU_pSuite s = CU_add_suite("config", setup, teardown);
    if (!s) return 1;
    CU_add_test(s, "defaults", test_defaults);
    CU_add_test(s, "env overrides", test_env_overrides);
    CU_add_test(s, "flags override env", test_flags_override_env);
    CU_add_test(s, "--flag=value and --flag value", test_flag_forms);
    CU_add_test(s, "durations", test_durations);
    CU_add_test(s, "range errors and bad values", test_range_and_bad_values);
    CU_add_test(s, "env errors name the variable", test_env_errors_name_variable);
    CU_add_test(s, "late checks name their origin", test_late_checks_name_origin);
    CU_add_test(s, "allow-private-networks", test_allow_private_networks);
    CU_add_test(s, "unknown flag, missing value", test_unknown_flag_and_missing_value);
    CU_add_test(s, "--help and --version", test_help_version);
    CU_add_test(s, "tls and url consistency", test_tls_and_urls_consistency);
    CU_add_test(s, "usage", test_usage);
    CU_add_test(s, "free twice", test_free_twice);
    CU_add_test(s, "worker options", test_worker_options);
    CU_add_test(s, "gateway options", test_gateway_options);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    unsigned failures = CU_get_number_of_failures() + CU_get_number_of_tests_failed() +
                        CU_get_number_of_suites_failed();
    CU_cleanup_registry();
    return failures ? 1 : 0;
}
