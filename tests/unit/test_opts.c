/* CUnit suite for server/core/opts, the table-driven settings engine: a test table over a test
 * struct with every kind (STR with a check function, INT, MS, SECONDS, BYTES, FLAG), then
 * defaults, the environment, flags in both forms, flags over env, two tables sharing a command
 * line through a prefix, unknown flags, missing and unexpected values, range and syntax errors
 * naming their origin, az_opts_parse_ms units, sizes, az_opts_usage and az_opts_free. */
#include <CUnit/Basic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/opts.h"

/* A string setting equal to want; a NULL (unset) one fails instead of crashing the suite. */
#define ASSERT_STR(got, want) CU_ASSERT((got) != NULL && strcmp((got), (want)) == 0)

/* ---- the test table ---- */

typedef struct tcfg {
    char *name;     /* STR, checked, default "agentz" */
    char *url;      /* STR, no default */
    int workers;    /* INT 1..64, default 4 */
    int retries;    /* INT 0..10, no default */
    int timeout_ms; /* MS 0..3600000, default 1500ms */
    int idle_s;     /* SECONDS 1..86400, default 2m */
    int max_body;   /* BYTES 1..1 GiB, default 64k */
    int verbose;    /* FLAG */
    int dry_run;    /* FLAG */
} tcfg;

static char last_origin[128];
static char last_value[256];
static int check_calls;

/* Refuses values with a space; records what it was asked. */
static az_err check_name(const char *origin, const char *value, char *msg)
{
    check_calls++;
    snprintf(last_origin, sizeof last_origin, "%s", origin);
    snprintf(last_value, sizeof last_value, "%s", value);
    if (strchr(value, ' '))
        return az_fail(msg, AZ_ERR_INVALID, "%s: \"%s\" must not contain spaces", origin, value);
    return AZ_OK;
}

#define F(x) offsetof(tcfg, x)
static const az_opt OPTS[] = {
    {"name", "AZT_NAME", AZ_OPT_STR, F(name), "agentz", 0, 0, "the instance name", check_name},
    {"url", "AZT_URL", AZ_OPT_STR, F(url), NULL, 0, 0, "where to connect", NULL},
    {"workers", "AZT_WORKERS", AZ_OPT_INT, F(workers), "4", 1, 64, "worker threads", NULL},
    {"retries", "AZT_RETRIES", AZ_OPT_INT, F(retries), NULL, 0, 10, "retries per call", NULL},
    {"timeout", "AZT_TIMEOUT", AZ_OPT_MS, F(timeout_ms), "1500ms", 0, 3600000, "call timeout", NULL},
    {"idle", "AZT_IDLE", AZ_OPT_SECONDS, F(idle_s), "2m", 1, 86400, "idle timeout", NULL},
    {"max-body", "AZT_MAX_BODY", AZ_OPT_BYTES, F(max_body), "64k", 1, 1L << 30, "body limit", NULL},
    {"verbose", NULL, AZ_OPT_FLAG, F(verbose), NULL, 0, 0, "log more", NULL},
    {"dry-run", NULL, AZ_OPT_FLAG, F(dry_run), NULL, 0, 0, "change nothing", NULL},
};
#define NOPTS (sizeof OPTS / sizeof *OPTS)

/* A second table, for the gateway: the same flag names behind a prefix. */
typedef struct gcfg {
    char *listen;
    int workers;
    int insecure;
} gcfg;

#define G(x) offsetof(gcfg, x)
static const az_opt GOPTS[] = {
    {"listen", "AZT_GATEWAY_LISTEN", AZ_OPT_STR, G(listen), "127.0.0.1:8080", 0, 0, "HTTP listen address", NULL},
    {"workers", "AZT_GATEWAY_WORKERS", AZ_OPT_INT, G(workers), "2", 1, 16, "gateway threads", NULL},
    {"insecure", NULL, AZ_OPT_FLAG, G(insecure), NULL, 0, 0, "no TLS", NULL},
};
#define NGOPTS (sizeof GOPTS / sizeof *GOPTS)

static const char *const ENVS[] = {"AZT_NAME",     "AZT_URL",           "AZT_WORKERS",
                                   "AZT_RETRIES",  "AZT_TIMEOUT",       "AZT_IDLE",
                                   "AZT_MAX_BODY", "AZT_GATEWAY_LISTEN", "AZT_GATEWAY_WORKERS"};

static tcfg cfg;
static gcfg gw;

static void reset(void)
{
    for (size_t i = 0; i < sizeof ENVS / sizeof *ENVS; i++) unsetenv(ENVS[i]);
    check_calls = 0;
    last_origin[0] = last_value[0] = '\0';
}

static int setup(void)
{
    reset();
    return 0;
}

/* Loads the main table from args (NULL-terminated, without the program name) into a zeroed
 * cfg, so one test's values cannot leak into the next (test_zeroed_first checks the engine's
 * own zeroing). */
static az_err load_args(const char *const *args, char *msg)
{
    memset(&cfg, 0, sizeof cfg);
    char *argv[32];
    int argc = 0;
    argv[argc++] = "agentzd";
    for (; args && *args && argc < 31; args++) argv[argc++] = (char *)*args;
    argv[argc] = NULL;
    az_opt_table t = {OPTS, NOPTS, &cfg, NULL};
    msg[0] = '\0';
    return az_opts_load(&t, 1, argc, argv, msg);
}

static void free_cfg(void)
{
    az_opt_table t = {OPTS, NOPTS, &cfg, NULL};
    az_opts_free(&t, 1);
}

static az_err load2(const char *const *args, char *msg)
{
    memset(&cfg, 0, sizeof cfg);
    memset(&gw, 0, sizeof gw);
    char *argv[32];
    int argc = 0;
    argv[argc++] = "agentzd";
    for (; args && *args && argc < 31; args++) argv[argc++] = (char *)*args;
    argv[argc] = NULL;
    az_opt_table t[2] = {{OPTS, NOPTS, &cfg, NULL}, {GOPTS, NGOPTS, &gw, "gateway-"}};
    msg[0] = '\0';
    return az_opts_load(t, 2, argc, argv, msg);
}

static void free2(void)
{
    az_opt_table t[2] = {{OPTS, NOPTS, &cfg, NULL}, {GOPTS, NGOPTS, &gw, "gateway-"}};
    az_opts_free(t, 2);
}

/* Expects args to be refused with AZ_ERR_INVALID and a message holding every needle. */
static void check_refused(const char *const *args, const char *n1, const char *n2)
{
    char msg[AZ_MSG_MAX];
    az_err err = load_args(args, msg);
    CU_ASSERT_EQUAL(err, AZ_ERR_INVALID);
    if ((n1 && !strstr(msg, n1)) || (n2 && !strstr(msg, n2)))
        fprintf(stderr, "\n  msg [%s] should name [%s] [%s]\n", msg, n1 ? n1 : "",
                n2 ? n2 : "");
    if (n1) CU_ASSERT_PTR_NOT_NULL(strstr(msg, n1));
    if (n2) CU_ASSERT_PTR_NOT_NULL(strstr(msg, n2));
    CU_ASSERT_PTR_NULL(strchr(msg, '\n')); /* one line */
    free_cfg();
}

/* ---- tests ---- */

static void test_defaults(void)
{
    reset();
    char msg[AZ_MSG_MAX];
    CU_ASSERT_EQUAL_FATAL(load_args(NULL, msg), AZ_OK);
    ASSERT_STR(cfg.name, "agentz");
    CU_ASSERT_PTR_NULL(cfg.url);
    CU_ASSERT_EQUAL(cfg.workers, 4);
    CU_ASSERT_EQUAL(cfg.retries, 0);
    CU_ASSERT_EQUAL(cfg.timeout_ms, 1500);
    CU_ASSERT_EQUAL(cfg.idle_s, 120);
    CU_ASSERT_EQUAL(cfg.max_body, 65536);
    CU_ASSERT_EQUAL(cfg.verbose, 0);
    CU_ASSERT_EQUAL(cfg.dry_run, 0);
    /* the default went through the check, named as such */
    CU_ASSERT(check_calls >= 1);
    CU_ASSERT_STRING_EQUAL(last_origin, "default");
    CU_ASSERT_STRING_EQUAL(last_value, "agentz");
    free_cfg();
}

static void test_zeroed_first(void)
{
    /* settings without a default start from zero, whatever the struct held (strings are left
     * NULL here: a struct holding strings is to be freed with az_opts_free first) */
    reset();
    memset(&cfg, 0, sizeof cfg);
    cfg.retries = 99;
    cfg.verbose = 1;
    cfg.dry_run = 7;
    char *argv[] = {"agentzd", NULL};
    az_opt_table t = {OPTS, NOPTS, &cfg, NULL};
    char msg[AZ_MSG_MAX] = "";
    CU_ASSERT_EQUAL_FATAL(az_opts_load(&t, 1, 1, argv, msg), AZ_OK);
    CU_ASSERT_EQUAL(cfg.retries, 0);
    CU_ASSERT_EQUAL(cfg.verbose, 0);
    CU_ASSERT_EQUAL(cfg.dry_run, 0);
    CU_ASSERT_PTR_NULL(cfg.url);
    free_cfg();
    memset(&cfg, 0, sizeof cfg);
}

static void test_environment(void)
{
    reset();
    setenv("AZT_NAME", "from-env", 1);
    setenv("AZT_URL", "http://env.example", 1);
    setenv("AZT_WORKERS", "8", 1);
    setenv("AZT_RETRIES", "3", 1);
    setenv("AZT_TIMEOUT", "10s", 1);
    setenv("AZT_IDLE", "1h", 1);
    setenv("AZT_MAX_BODY", "4m", 1);
    char msg[AZ_MSG_MAX];
    CU_ASSERT_EQUAL_FATAL(load_args(NULL, msg), AZ_OK);
    ASSERT_STR(cfg.name, "from-env");
    ASSERT_STR(cfg.url, "http://env.example");
    CU_ASSERT_EQUAL(cfg.workers, 8);
    CU_ASSERT_EQUAL(cfg.retries, 3);
    CU_ASSERT_EQUAL(cfg.timeout_ms, 10000);
    CU_ASSERT_EQUAL(cfg.idle_s, 3600);
    CU_ASSERT_EQUAL(cfg.max_body, 4 << 20);
    CU_ASSERT_STRING_EQUAL(last_origin, "AZT_NAME");
    CU_ASSERT_STRING_EQUAL(last_value, "from-env");
    free_cfg();
    reset();
}

static void test_flags(void)
{
    reset();
    const char *args[] = {"--name", "cli",          "--url=http://a/?b=c", "--workers", "9",
                          "--retries=2", "--timeout", "250ms", "--idle=90s",     "--max-body",
                          "8KiB", "--verbose",   NULL};
    char msg[AZ_MSG_MAX];
    az_err err = load_args(args, msg);
    if (err) fprintf(stderr, "\n  %s\n", msg);
    CU_ASSERT_EQUAL_FATAL(err, AZ_OK);
    ASSERT_STR(cfg.name, "cli");
    ASSERT_STR(cfg.url, "http://a/?b=c"); /* only the first '=' splits */
    CU_ASSERT_EQUAL(cfg.workers, 9);
    CU_ASSERT_EQUAL(cfg.retries, 2);
    CU_ASSERT_EQUAL(cfg.timeout_ms, 250);
    CU_ASSERT_EQUAL(cfg.idle_s, 90);
    CU_ASSERT_EQUAL(cfg.max_body, 8192);
    CU_ASSERT_EQUAL(cfg.verbose, 1);
    CU_ASSERT_EQUAL(cfg.dry_run, 0);
    CU_ASSERT_STRING_EQUAL(last_origin, "--name");
    free_cfg();

    /* the last occurrence wins */
    const char *again[] = {"--workers", "2", "--workers=5", "--name=a", "--name", "b", NULL};
    CU_ASSERT_EQUAL_FATAL(load_args(again, msg), AZ_OK);
    CU_ASSERT_EQUAL(cfg.workers, 5);
    ASSERT_STR(cfg.name, "b");
    free_cfg();

    /* "" unsets a string, default or not */
    const char *empty[] = {"--name=", "--url", "", NULL};
    CU_ASSERT_EQUAL_FATAL(load_args(empty, msg), AZ_OK);
    CU_ASSERT_PTR_NULL(cfg.name);
    CU_ASSERT_PTR_NULL(cfg.url);
    free_cfg();
}

static void test_flags_win_over_env(void)
{
    reset();
    setenv("AZT_NAME", "env-name", 1);
    setenv("AZT_WORKERS", "8", 1);
    setenv("AZT_TIMEOUT", "10s", 1);
    setenv("AZT_MAX_BODY", "1m", 1);
    const char *args[] = {"--workers=3", "--name", "flag-name", "--max-body", "2k", NULL};
    char msg[AZ_MSG_MAX];
    CU_ASSERT_EQUAL_FATAL(load_args(args, msg), AZ_OK);
    CU_ASSERT_EQUAL(cfg.workers, 3);
    ASSERT_STR(cfg.name, "flag-name");
    CU_ASSERT_EQUAL(cfg.max_body, 2048);
    CU_ASSERT_EQUAL(cfg.timeout_ms, 10000); /* env still beats the default */
    CU_ASSERT_STRING_EQUAL(last_origin, "--name");
    free_cfg();
    /* a flag emptying a string set by env */
    const char *unset[] = {"--name=", NULL};
    CU_ASSERT_EQUAL_FATAL(load_args(unset, msg), AZ_OK);
    CU_ASSERT_PTR_NULL(cfg.name);
    free_cfg();
    reset();
}

static void test_prefix_tables(void)
{
    reset();
    setenv("AZT_GATEWAY_WORKERS", "6", 1);
    const char *args[] = {"--workers", "7", "--gateway-listen", "0.0.0.0:9090", "--gateway-insecure",
                          "--name=n", NULL};
    char msg[AZ_MSG_MAX];
    az_err err = load2(args, msg);
    if (err) fprintf(stderr, "\n  %s\n", msg);
    CU_ASSERT_EQUAL_FATAL(err, AZ_OK);
    CU_ASSERT_EQUAL(cfg.workers, 7);
    ASSERT_STR(cfg.name, "n");
    ASSERT_STR(gw.listen, "0.0.0.0:9090");
    CU_ASSERT_EQUAL(gw.workers, 6);
    CU_ASSERT_EQUAL(gw.insecure, 1);
    CU_ASSERT_EQUAL(cfg.verbose, 0);
    free2();

    /* --gateway-workers reaches the gateway table only */
    const char *args2[] = {"--gateway-workers=12", NULL};
    CU_ASSERT_EQUAL_FATAL(load2(args2, msg), AZ_OK);
    CU_ASSERT_EQUAL(gw.workers, 12);
    CU_ASSERT_EQUAL(cfg.workers, 4);
    ASSERT_STR(gw.listen, "127.0.0.1:8080");
    free2();

    /* the prefix is required, and only names the gateway's own flags */
    const char *noprefix[] = {"--listen", "x", NULL};
    CU_ASSERT_EQUAL(load2(noprefix, msg), AZ_ERR_INVALID);
    CU_ASSERT_PTR_NOT_NULL(strstr(msg, "--listen"));
    free2();
    const char *wrong[] = {"--gateway-name", "x", NULL};
    CU_ASSERT_EQUAL(load2(wrong, msg), AZ_ERR_INVALID);
    CU_ASSERT_PTR_NOT_NULL(strstr(msg, "--gateway-name"));
    free2();
    /* errors name the prefixed flag */
    const char *range[] = {"--gateway-workers", "99", NULL};
    CU_ASSERT_EQUAL(load2(range, msg), AZ_ERR_INVALID);
    CU_ASSERT_PTR_NOT_NULL(strstr(msg, "--gateway-workers"));
    free2();
    const char *missing[] = {"--gateway-listen", NULL};
    CU_ASSERT_EQUAL(load2(missing, msg), AZ_ERR_INVALID);
    CU_ASSERT_PTR_NOT_NULL(strstr(msg, "--gateway-listen"));
    free2();
    const char *flagval[] = {"--gateway-insecure=yes", NULL};
    CU_ASSERT_EQUAL(load2(flagval, msg), AZ_ERR_INVALID);
    CU_ASSERT_PTR_NOT_NULL(strstr(msg, "--gateway-insecure"));
    free2();
    reset();
}

static void test_unknown_and_malformed_args(void)
{
    reset();
    const char *unknown[] = {"--workers", "3", "--bogus", "1", NULL};
    check_refused(unknown, "--bogus", NULL);
    const char *unknown_eq[] = {"--bogus=1", NULL};
    check_refused(unknown_eq, "--bogus", NULL);
    const char *prefix_of_flag[] = {"--work", "3", NULL};
    check_refused(prefix_of_flag, "--work", NULL);
    const char *longer[] = {"--workersx", "3", NULL};
    check_refused(longer, "--workersx", NULL);
    const char *positional[] = {"serve", NULL};
    check_refused(positional, "serve", NULL);
    const char *single_dash[] = {"-workers", "3", NULL};
    check_refused(single_dash, "-workers", NULL);
    /* a missing value names the flag */
    const char *missing[] = {"--workers", NULL};
    check_refused(missing, "--workers", NULL);
    const char *missing_str[] = {"--verbose", "--name", NULL};
    check_refused(missing_str, "--name", NULL);
    /* a value on a flag */
    const char *flag_value[] = {"--verbose=1", NULL};
    check_refused(flag_value, "--verbose", NULL);
    const char *flag_empty[] = {"--dry-run=", NULL};
    check_refused(flag_empty, "--dry-run", NULL);
    /* a flag takes no value word: the next word is an argument of its own */
    const char *flag_then_word[] = {"--verbose", "yes", NULL};
    check_refused(flag_then_word, "yes", NULL);
}

static void test_range_errors_name_origin(void)
{
    reset();
    const char *low[] = {"--workers", "0", NULL};
    check_refused(low, "--workers", "0");
    const char *high[] = {"--workers=65", NULL};
    check_refused(high, "--workers", "65");
    const char *neg[] = {"--retries", "-1", NULL};
    check_refused(neg, "--retries", "-1");
    const char *notint[] = {"--workers", "abc", NULL};
    check_refused(notint, "--workers", "abc");
    const char *trailing[] = {"--workers", "5x", NULL};
    check_refused(trailing, "--workers", "5x");
    const char *blank[] = {"--workers", "", NULL};
    check_refused(blank, "--workers", NULL);
    const char *huge[] = {"--workers", "99999999999999999999999", NULL};
    check_refused(huge, "--workers", NULL);
    const char *ms_high[] = {"--timeout", "2h", NULL};
    check_refused(ms_high, "--timeout", "2h");
    const char *ms_bad[] = {"--timeout", "soon", NULL};
    check_refused(ms_bad, "--timeout", "soon");
    const char *s_low[] = {"--idle", "500ms", NULL}; /* 0 s, below 1 */
    check_refused(s_low, "--idle", NULL);
    const char *s_high[] = {"--idle", "2d", NULL};
    check_refused(s_high, "--idle", "2d");
    const char *b_high[] = {"--max-body", "2g", NULL};
    check_refused(b_high, "--max-body", "2g");
    const char *b_zero[] = {"--max-body", "0", NULL};
    check_refused(b_zero, "--max-body", NULL);
    const char *b_bad[] = {"--max-body", "lots", NULL};
    check_refused(b_bad, "--max-body", "lots");

    /* from the environment, the variable is named */
    setenv("AZT_WORKERS", "100", 1);
    check_refused(NULL, "AZT_WORKERS", "100");
    reset();
    setenv("AZT_TIMEOUT", "5 minutes", 1);
    check_refused(NULL, "AZT_TIMEOUT", NULL);
    reset();
    setenv("AZT_MAX_BODY", "12q", 1);
    check_refused(NULL, "AZT_MAX_BODY", "12q");
    reset();
}

static void test_check_function(void)
{
    reset();
    const char *flag[] = {"--name", "has space", NULL};
    check_refused(flag, "--name", "has space");
    CU_ASSERT_STRING_EQUAL(last_origin, "--name");
    setenv("AZT_NAME", "env space", 1);
    check_refused(NULL, "AZT_NAME", NULL);
    CU_ASSERT_STRING_EQUAL(last_origin, "AZT_NAME");
    CU_ASSERT_STRING_EQUAL(last_value, "env space");
    reset();
    /* a failing default is named "default" */
    static const az_opt bad_def[] = {
        {"name", NULL, AZ_OPT_STR, F(name), "bad default", 0, 0, "x", check_name},
    };
    tcfg c;
    memset(&c, 0, sizeof c);
    az_opt_table t = {bad_def, 1, &c, NULL};
    char *argv[] = {"agentzd", NULL};
    char msg[AZ_MSG_MAX] = "";
    CU_ASSERT_EQUAL(az_opts_load(&t, 1, 1, argv, msg), AZ_ERR_INVALID);
    CU_ASSERT_PTR_NOT_NULL(strstr(msg, "default"));
    az_opts_free(&t, 1);
    /* and a numeric default out of range */
    static const az_opt bad_range[] = {
        {"workers", NULL, AZ_OPT_INT, F(workers), "100", 1, 64, "x", NULL},
    };
    az_opt_table t2 = {bad_range, 1, &c, NULL};
    CU_ASSERT_EQUAL(az_opts_load(&t2, 1, 1, argv, msg), AZ_ERR_INVALID);
    CU_ASSERT_PTR_NOT_NULL(strstr(msg, "default"));
}

static void test_parse_ms(void)
{
    static const struct {
        const char *in;
        long want;
    } ok[] = {
        {"1500ms", 1500},      {"10s", 10000},        {"2m", 120000},    {"1h", 3600000},
        {"7d", 604800000},     {"250", 250},          {"0", 0},          {"0s", 0},
        {"1.5s", 1500},        {"0.5m", 30000},       {"30d", 2592000000L},
    };
    for (size_t i = 0; i < sizeof ok / sizeof *ok; i++) {
        long v = -12345;
        int rc = az_opts_parse_ms(ok[i].in, &v);
        if (rc != 0 || v != ok[i].want)
            fprintf(stderr, "\n  parse_ms(%s) = %d, %ld (want %ld)\n", ok[i].in, rc, v, ok[i].want);
        CU_ASSERT_EQUAL(rc, 0);
        CU_ASSERT_EQUAL(v, ok[i].want);
    }
    static const char *const bad[] = {"", "ms", "s", "abc", "-5s", "-1", "5x", "5 s", "5S",
                                      "5sec", "10ss", "1h30m", "nan", "inf", "1e400", "5s "};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        long v = 0;
        int rc = az_opts_parse_ms(bad[i], &v);
        if (rc != -1) fprintf(stderr, "\n  parse_ms(%s) accepted: %ld\n", bad[i], v);
        CU_ASSERT_EQUAL(rc, -1);
    }
}

static void test_sizes(void)
{
    static const struct {
        const char *in;
        int want;
    } ok[] = {
        {"512", 512},      {"64k", 65536},     {"64K", 65536},      {"4m", 4 << 20},
        {"4M", 4 << 20},   {"1g", 1 << 30},    {"8KiB", 8192},      {"2MiB", 2 << 20},
        {"1", 1},
    };
    char msg[AZ_MSG_MAX];
    for (size_t i = 0; i < sizeof ok / sizeof *ok; i++) {
        reset();
        const char *args[] = {"--max-body", ok[i].in, NULL};
        az_err err = load_args(args, msg);
        if (err || cfg.max_body != ok[i].want)
            fprintf(stderr, "\n  --max-body %s: %d, %d (%s)\n", ok[i].in, (int)err, cfg.max_body,
                    msg);
        CU_ASSERT_EQUAL(err, AZ_OK);
        CU_ASSERT_EQUAL(cfg.max_body, ok[i].want);
        free_cfg();
    }
    static const char *const bad[] = {"garbage", "k", "", "-1", "-4k", "12q", "4kk", "1.5m",
                                      "4 k", "4t", "0x10"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        reset();
        const char *args[] = {"--max-body", bad[i], NULL};
        az_err err = load_args(args, msg);
        if (err != AZ_ERR_INVALID) fprintf(stderr, "\n  --max-body %s accepted\n", bad[i]);
        CU_ASSERT_EQUAL(err, AZ_ERR_INVALID);
        CU_ASSERT_PTR_NOT_NULL(strstr(msg, "--max-body"));
        free_cfg();
    }
}

static void test_usage(void)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    az_opt_table t[2] = {{OPTS, NOPTS, &cfg, NULL}, {GOPTS, NGOPTS, &gw, "gateway-"}};
    az_opts_usage(t, 2, f);
    fclose(f);
    CU_ASSERT_PTR_NOT_NULL_FATAL(buf);
    static const char *const want[] = {
        "--name VALUE",        "--url VALUE",         "--workers N",
        "--timeout DUR",       "--idle DUR",          "--max-body SIZE",
        "--verbose",           "--dry-run",           "--gateway-listen VALUE",
        "--gateway-workers N", "--gateway-insecure",  "the instance name",
        "worker threads",      "gateway threads",     "env AZT_NAME",
        "env AZT_WORKERS",     "env AZT_GATEWAY_LISTEN", "env AZT_GATEWAY_WORKERS",
        "env AZT_MAX_BODY",    "default 4",           "default 1500ms",
        "default 64k",         "default 127.0.0.1:8080", "env AZT_URL",
    };
    for (size_t i = 0; i < sizeof want / sizeof *want; i++) {
        if (!strstr(buf, want[i])) fprintf(stderr, "\n  usage lacks [%s]\n", want[i]);
        CU_ASSERT_PTR_NOT_NULL(strstr(buf, want[i]));
    }
    /* flags take no VALUE; no setting without a default shows one */
    CU_ASSERT_PTR_NULL(strstr(buf, "--verbose VALUE"));
    CU_ASSERT_PTR_NULL(strstr(buf, "--verbose N"));
    const char *url = strstr(buf, "env AZT_URL");
    if (url) CU_ASSERT(strncmp(url, "env AZT_URL\n", 12) == 0);
    /* the gateway's flags are listed only with their prefix */
    CU_ASSERT_PTR_NULL(strstr(buf, "--listen"));
    CU_ASSERT_PTR_NULL(strstr(buf, "--insecure"));
    /* one entry per setting, in table order */
    const char *a = strstr(buf, "--name"), *b = strstr(buf, "--dry-run"),
               *c = strstr(buf, "--gateway-listen");
    CU_ASSERT(a && b && c && a < b && b < c);
    free(buf);
}

static void test_free(void)
{
    reset();
    const char *args[] = {"--url", "http://x", NULL};
    char msg[AZ_MSG_MAX];
    CU_ASSERT_EQUAL_FATAL(load_args(args, msg), AZ_OK);
    CU_ASSERT_PTR_NOT_NULL(cfg.name);
    CU_ASSERT_PTR_NOT_NULL(cfg.url);
    free_cfg();
    CU_ASSERT_PTR_NULL(cfg.name);
    CU_ASSERT_PTR_NULL(cfg.url);
    CU_ASSERT_EQUAL(cfg.workers, 4); /* only strings are touched */
    free_cfg(); /* twice: nothing left to free */
    CU_ASSERT_PTR_NULL(cfg.name);
    CU_ASSERT_PTR_NULL(cfg.url);
    /* after a failed load too */
    const char *bad[] = {"--name", "n", "--workers", "0", NULL};
    CU_ASSERT_EQUAL(load_args(bad, msg), AZ_ERR_INVALID);
    free_cfg();
    CU_ASSERT_PTR_NULL(cfg.name);
    CU_ASSERT_PTR_NULL(cfg.url);
    free_cfg();
    /* a load after the frees starts clean */
    CU_ASSERT_EQUAL_FATAL(load_args(args, msg), AZ_OK);
    ASSERT_STR(cfg.url, "http://x");
    free_cfg();
}

int main(void)
{
    if (CU_initialize_registry() != CUE_SUCCESS) return 1;
    CU_pSuite s = CU_add_suite("opts", setup, NULL);
    if (!s) return 1;
    CU_add_test(s, "defaults", test_defaults);
    CU_add_test(s, "struct zeroed first", test_zeroed_first);
    CU_add_test(s, "environment", test_environment);
    CU_add_test(s, "flags, both forms", test_flags);
    CU_add_test(s, "flags win over env", test_flags_win_over_env);
    CU_add_test(s, "prefix tables", test_prefix_tables);
    CU_add_test(s, "unknown flags, missing and extra values", test_unknown_and_malformed_args);
    CU_add_test(s, "range errors name their origin", test_range_errors_name_origin);
    CU_add_test(s, "check functions", test_check_function);
    CU_add_test(s, "az_opts_parse_ms", test_parse_ms);
    CU_add_test(s, "sizes", test_sizes);
    CU_add_test(s, "usage", test_usage);
    CU_add_test(s, "free", test_free);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    unsigned failures = CU_get_number_of_failures() + CU_get_number_of_tests_failed() +
                        CU_get_number_of_suites_failed();
    CU_cleanup_registry();
    return failures ? 1 : 0;
}
