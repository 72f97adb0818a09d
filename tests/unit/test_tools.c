/* CUnit suite for server/tools: the network policy (parsing, every refused range, mapped and NAT64
 * IPv6), the registry (schemas, argument checks, registered tools), calculator, current_time, and
 * http_fetch against real HTTP servers on 127.0.0.1 and 127.0.0.2 (tools_fake.c). */
#include <CUnit/Basic.h>
#include <arpa/inet.h>
#include <math.h>
#include <regex.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/text.h"
#include "tools/netguard.h"
#include "tools/tools.h"

#include "tools_fake.c"

static char msg[AZ_MSG_MAX];
static az_tool_result res;

/* Runs a tool into res (freeing the previous one); returns the call's code. */
static az_err call(const az_tools *reg, const char *name, const char *args)
{
    az_tools_result_free(&res);
    msg[0] = '\0';
    return az_tools_call(reg, name, args, &res, msg);
}

/* Asserts the last observation is an error containing want. */
#define ASSERT_OBS_ERROR(want)                                                          \
    do {                                                                                \
        CU_ASSERT_TRUE(res.is_error);                                                   \
        CU_ASSERT_PTR_NOT_NULL_FATAL(res.text);                                         \
        CU_ASSERT_EQUAL(strncmp(res.text, "error: ", 7), 0);                            \
        if (!strstr(res.text, want))                                                    \
            fprintf(stderr, "\n  observation \"%s\" lacks \"%s\"\n", res.text, want);   \
        CU_ASSERT_PTR_NOT_NULL(strstr(res.text, want));                                 \
    } while (0)

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* ------------------------------------------------------------------------------------------- */
/* netguard */

static struct sockaddr_storage ss;

/* A sockaddr for a textual IPv4 or IPv6 address. */
static const struct sockaddr *addr(const char *text)
{
    memset(&ss, 0, sizeof ss);
    struct sockaddr_in *a4 = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&ss;
    if (inet_pton(AF_INET, text, &a4->sin_addr) == 1) {
        a4->sin_family = AF_INET;
    } else {
        CU_ASSERT_EQUAL_FATAL(inet_pton(AF_INET6, text, &a6->sin6_addr), 1);
        a6->sin6_family = AF_INET6;
    }
    return (const struct sockaddr *)&ss;
}

static az_netguard *guard(const char *policy)
{
    az_netguard *g = NULL;
    CU_ASSERT_EQUAL(az_netguard_new(policy, &g, msg), AZ_OK);
    return g;
}

static void test_netguard_parse(void)
{
    static const char *const good[] = {
        NULL, "", "0", "1", " 1 ", "127.0.0.0/8", "127.0.0.0/8,10.1.0.0/16,::1/128,fd00::/8",
        " 10.0.0.0/8 , 192.168.1.7 ,", "::ffff:127.0.0.1/128", "0.0.0.0/0", "::/0",
    };
    for (size_t i = 0; i < sizeof good / sizeof *good; i++) {
        az_netguard *g = NULL;
        az_err e = az_netguard_new(good[i], &g, msg);
        if (e != AZ_OK) fprintf(stderr, "\n  refused \"%s\": %s\n", good[i] ? good[i] : "(null)", msg);
        CU_ASSERT_EQUAL(e, AZ_OK);
        CU_ASSERT_PTR_NOT_NULL(g);
        az_netguard_free(g);
    }
    static const struct {
        const char *policy, *message;
    } bad[] = {
        {"10.0.0.0/33", "AGENTZ_ALLOW_PRIVATE_NETWORKS: entry \"10.0.0.0/33\": prefix length must be 0-32"},
        {"127.0.0.0/8,fd00::/129", "entry \"fd00::/129\": prefix length must be 0-128"},
        {"127.0.0.0/8, banana", "entry \"banana\": not an address or CIDR range"},
        {"10.1.0.0/8", "entry \"10.1.0.0/8\": has bits set past the prefix length"},
        {"10.0.0.0/", "entry \"10.0.0.0/\": prefix length must be a number"},
        {"10.0.0.0/x", "prefix length must be a number"},
        {"10.0.0.0/-1", "prefix length must be a number"},
        {"2", "entry \"2\": not an address"},
        {"yes", "entry \"yes\""},
        {"256.0.0.1/32", "entry \"256.0.0.1/32\""},
        {"fe80::1%eth0", "entry \"fe80::1%eth0\""},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        az_netguard *g = (az_netguard *)1;
        msg[0] = '\0';
        CU_ASSERT_EQUAL(az_netguard_new(bad[i].policy, &g, msg), AZ_ERR_INVALID);
        CU_ASSERT_PTR_NULL(g);
        if (!strstr(msg, bad[i].message))
            fprintf(stderr, "\n  \"%s\": message \"%s\" lacks \"%s\"\n", bad[i].policy, msg, bad[i].message);
        CU_ASSERT_PTR_NOT_NULL(strstr(msg, bad[i].message));
    }
    /* Too many entries. */
    char many[4096] = "";
    for (int i = 0; i <= AZ_NETGUARD_MAX_ENTRIES; i++) {
        char e[32];
        snprintf(e, sizeof e, "10.0.%d.0/24,", i);
        strcat(many, e);
    }
    az_netguard *g = NULL;
    CU_ASSERT_EQUAL(az_netguard_new(many, &g, msg), AZ_ERR_INVALID);
    CU_ASSERT_PTR_NOT_NULL(strstr(msg, "at most 64 entries"));
    az_netguard_free(NULL);
}

/* Every special-purpose range, its edges, and how IPv6 forms of IPv4 addresses are judged. */
static const struct {
    const char *addr;
    const char *range; /* NULL: an ordinary public address */
} ranges[] = {
    {"0.0.0.0", "this-network"},           {"0.255.255.255", "this-network"},
    {"10.0.0.1", "private"},               {"10.255.255.255", "private"},
    {"100.64.0.1", "shared (carrier-grade NAT)"}, {"100.127.255.255", "shared (carrier-grade NAT)"},
    {"127.0.0.1", "loopback"},             {"127.255.255.254", "loopback"},
    {"169.254.169.254", "cloud metadata"}, {"169.254.0.1", "link-local"},
    {"172.16.0.1", "private"},             {"172.31.255.255", "private"},
    {"192.0.0.8", "IETF protocol assignments"},
    {"192.168.1.1", "private"},            {"198.18.0.1", "benchmarking"},
    {"198.19.255.255", "benchmarking"},    {"224.0.0.1", "multicast"},
    {"239.255.255.250", "multicast"},      {"240.0.0.1", "reserved"},
    {"255.255.255.255", "reserved"},       {"::", "unspecified"},
    {"::1", "loopback"},                   {"fc00::1", "unique-local (private)"},
    {"fd12:3456::1", "unique-local (private)"}, {"fe80::1", "link-local"},
    {"febf::1", "link-local"},             {"ff02::1", "multicast"},
    {"::ffff:127.0.0.1", "loopback"},      {"::ffff:169.254.169.254", "cloud metadata"},
    {"::ffff:10.1.2.3", "private"},        {"64:ff9b::7f00:1", "loopback"},
    {"64:ff9b::a9fe:a9fe", "cloud metadata"}, {"64:ff9b::c0a8:101", "private"},
    {"::127.0.0.1", "IPv4-compatible"},    {"64:ff9b:1::1", "local-use NAT64"},
    /* Edges just outside, and public addresses. */
    {"9.255.255.255", NULL},  {"11.0.0.0", NULL},       {"100.63.255.255", NULL},
    {"100.128.0.0", NULL},    {"126.255.255.255", NULL}, {"128.0.0.0", NULL},
    {"169.253.255.255", NULL}, {"169.255.0.0", NULL},   {"172.15.255.255", NULL},
    {"172.32.0.0", NULL},     {"192.0.1.0", NULL},      {"192.167.255.255", NULL},
    {"192.169.0.0", NULL},    {"198.17.255.255", NULL}, {"198.20.0.0", NULL},
    {"223.255.255.255", NULL}, {"1.1.1.1", NULL},       {"8.8.8.8", NULL},
    {"93.184.216.34", NULL},  {"2606:4700::1111", NULL}, {"fbff::1", NULL},
    {"::ffff:8.8.8.8", NULL}, {"64:ff9b::808:808", NULL}, {"2001:4860:4860::8888", NULL},
};

static void test_netguard_ranges(void)
{
    az_netguard *strict = guard("0"), *all = guard("1");
    for (size_t i = 0; i < sizeof ranges / sizeof *ranges; i++) {
        const struct sockaddr *sa = addr(ranges[i].addr);
        const char *name = az_netguard_range_name(sa);
        int want_allowed = ranges[i].range == NULL;
        int got = az_netguard_allowed(strict, sa);
        if (got != want_allowed || (name == NULL) != want_allowed ||
            (name && ranges[i].range && strcmp(name, ranges[i].range) != 0))
            fprintf(stderr, "\n  %s: allowed=%d range=%s, want %d %s\n", ranges[i].addr, got,
                    name ? name : "(public)", want_allowed, ranges[i].range ? ranges[i].range : "(public)");
        CU_ASSERT_EQUAL(got, want_allowed);
        CU_ASSERT_EQUAL(az_netguard_allowed(NULL, sa), want_allowed); /* NULL is strict */
        if (ranges[i].range) {
            CU_ASSERT_STRING_EQUAL(name ? name : "", ranges[i].range);
        } else {
            CU_ASSERT_PTR_NULL(name);
        }
        CU_ASSERT_TRUE(az_netguard_allowed(all, sa));
    }
    /* Other families are refused even by "1". */
    struct sockaddr un = {.sa_family = AF_UNIX};
    CU_ASSERT_FALSE(az_netguard_allowed(all, &un));
    CU_ASSERT_FALSE(az_netguard_allowed(all, NULL));
    az_netguard_free(strict);
    az_netguard_free(all);
}

static void test_netguard_allow_list(void)
{
    az_netguard *g = guard("127.0.0.0/8,10.1.0.0/16,::1/128,fd00::/8");
    static const struct {
        const char *addr;
        int allowed;
    } cases[] = {
        {"127.0.0.1", 1},        {"127.9.9.9", 1},           {"::ffff:127.0.0.1", 1},
        {"64:ff9b::7f00:1", 1},  {"10.1.200.3", 1},          {"10.2.0.1", 0},
        {"::1", 1},              {"fd00::5", 1},             {"fc00::5", 0},
        {"169.254.169.254", 0},  {"::ffff:169.254.169.254", 0}, {"192.168.0.1", 0},
        {"fe80::1", 0},          {"8.8.8.8", 1},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        int got = az_netguard_allowed(g, addr(cases[i].addr));
        if (got != cases[i].allowed) fprintf(stderr, "\n  %s: allowed=%d\n", cases[i].addr, got);
        CU_ASSERT_EQUAL(got, cases[i].allowed);
    }
    az_netguard_free(g);
    /* The loopback default for local models. */
    g = guard(AZ_NETGUARD_LOOPBACK);
    CU_ASSERT_TRUE(az_netguard_allowed(g, addr("127.0.0.1")));
    CU_ASSERT_TRUE(az_netguard_allowed(g, addr("::1")));
    CU_ASSERT_FALSE(az_netguard_allowed(g, addr("10.0.0.1")));
    CU_ASSERT_FALSE(az_netguard_allowed(g, addr("169.254.169.254")));
    az_netguard_free(g);
    /* A host entry without a prefix. */
    g = guard("192.168.1.7");
    CU_ASSERT_TRUE(az_netguard_allowed(g, addr("192.168.1.7")));
    CU_ASSERT_FALSE(az_netguard_allowed(g, addr("192.168.1.8")));
    az_netguard_free(g);
    char buf[64];
    CU_ASSERT_STRING_EQUAL(az_netguard_addr_text(addr("::ffff:1.2.3.4"), buf, sizeof buf), "::ffff:1.2.3.4");
}

/* ------------------------------------------------------------------------------------------- */
/* registry */

static az_tools *reg_plain;

static void test_builtin_names(void)
{
    size_t n = 0;
    const char *const *names = az_tools_builtin_names(&n);
    CU_ASSERT_EQUAL_FATAL(n, 3);
    CU_ASSERT_STRING_EQUAL(names[0], "http_fetch");
    CU_ASSERT_STRING_EQUAL(names[1], "current_time");
    CU_ASSERT_STRING_EQUAL(names[2], "calculator");
    for (size_t i = 0; i < n; i++) CU_ASSERT_TRUE(az_tools_has(reg_plain, names[i]));
    CU_ASSERT_FALSE(az_tools_has(reg_plain, "delegate_work"));
}

static void test_schema_json(void)
{
    const char *names[] = {"calculator", "http_fetch", "current_time"};
    json_t *arr = NULL;
    CU_ASSERT_EQUAL_FATAL(az_tools_schema_json(reg_plain, names, 3, &arr, msg), AZ_OK);
    CU_ASSERT_EQUAL_FATAL(json_array_size(arr), 3);
    json_t *t0 = json_array_get(arr, 0);
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(t0, "type")), "function");
    json_t *fn = json_object_get(t0, "function");
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(fn, "name")), "calculator");
    CU_ASSERT_TRUE(strlen(json_string_value(json_object_get(fn, "description"))) > 20);
    json_t *params = json_object_get(fn, "parameters");
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(params, "type")), "object");
    CU_ASSERT_PTR_NOT_NULL(json_object_get(json_object_get(params, "properties"), "expression"));
    json_t *fetch = json_object_get(json_object_get(json_array_get(arr, 1), "function"), "parameters");
    json_t *url = json_object_get(json_object_get(fetch, "properties"), "url");
    CU_ASSERT_EQUAL(json_integer_value(json_object_get(url, "maxLength")), 2048);
    /* Callers own a copy: mutating it leaves the registry alone. */
    json_object_set_new(params, "type", json_string("mutated"));
    json_decref(arr);
    CU_ASSERT_EQUAL_FATAL(az_tools_schema_json(reg_plain, names, 1, &arr, msg), AZ_OK);
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(json_object_get(json_object_get(
                               json_array_get(arr, 0), "function"), "parameters"), "type")), "object");
    json_decref(arr);
    /* Empty list and unknown names. */
    CU_ASSERT_EQUAL(az_tools_schema_json(reg_plain, NULL, 0, &arr, msg), AZ_OK);
    CU_ASSERT_EQUAL(json_array_size(arr), 0);
    json_decref(arr);
    const char *bad[] = {"calculator", "shell"};
    CU_ASSERT_EQUAL(az_tools_schema_json(reg_plain, bad, 2, &arr, msg), AZ_ERR_INVALID);
    CU_ASSERT_PTR_NULL(arr);
    CU_ASSERT_STRING_EQUAL(msg, "tools[1]: unknown tool \"shell\"");
}

static void test_arguments(void)
{
    CU_ASSERT_EQUAL(call(reg_plain, "shell", "{}"), AZ_OK);
    ASSERT_OBS_ERROR("unknown tool \"shell\" (available: http_fetch, current_time, calculator)");
    CU_ASSERT_EQUAL(call(reg_plain, NULL, "{}"), AZ_OK);
    ASSERT_OBS_ERROR("unknown tool");
    CU_ASSERT_EQUAL(call(reg_plain, "calculator", "{\"expression\": "), AZ_OK);
    ASSERT_OBS_ERROR("arguments are not valid JSON");
    CU_ASSERT_EQUAL(call(reg_plain, "calculator", "[1]"), AZ_OK);
    ASSERT_OBS_ERROR("arguments must be a JSON object");
    CU_ASSERT_EQUAL(call(reg_plain, "calculator", "{\"expression\":\"1\",\"expression\":\"2\"}"), AZ_OK);
    ASSERT_OBS_ERROR("not valid JSON");
    CU_ASSERT_EQUAL(call(reg_plain, "calculator", NULL), AZ_OK);
    ASSERT_OBS_ERROR("argument \"expression\" is required");
    CU_ASSERT_EQUAL(call(reg_plain, "calculator", ""), AZ_OK);
    ASSERT_OBS_ERROR("argument \"expression\" is required");
    CU_ASSERT_EQUAL(call(reg_plain, "calculator", "{\"expression\": 5}"), AZ_OK);
    ASSERT_OBS_ERROR("argument \"expression\" must be a string");
    CU_ASSERT_EQUAL(call(reg_plain, "calculator", "{\"expression\": \"1\", \"precision\": 3}"), AZ_OK);
    ASSERT_OBS_ERROR("unknown argument \"precision\"");
    CU_ASSERT_EQUAL(call(reg_plain, "http_fetch", "{\"url\": \"http://x/\", \"max_chars\": \"10\"}"), AZ_OK);
    ASSERT_OBS_ERROR("argument \"max_chars\" must be an integer");
    CU_ASSERT_EQUAL(call(reg_plain, "http_fetch", "{\"url\": \"http://x/\", \"max_chars\": 0}"), AZ_OK);
    ASSERT_OBS_ERROR("argument \"max_chars\" must be between 1 and 100000");
    CU_ASSERT_EQUAL(call(reg_plain, "http_fetch", "{\"url\": \"http://x/\", \"max_chars\": 100001}"), AZ_OK);
    ASSERT_OBS_ERROR("between 1 and 100000");
    CU_ASSERT_EQUAL(call(reg_plain, "http_fetch", "{\"url\": \"http://x/\", \"max_chars\": 1.5}"), AZ_OK);
    ASSERT_OBS_ERROR("must be an integer");
    /* Arguments past the tool's byte limit are refused before parsing. */
    size_t big = 10000;
    char *huge = malloc(big + 32);
    CU_ASSERT_PTR_NOT_NULL_FATAL(huge);
    strcpy(huge, "{\"expression\":\"");
    memset(huge + 15, '1', big);
    strcpy(huge + 15 + big, "\"}");
    CU_ASSERT_EQUAL(call(reg_plain, "calculator", huge), AZ_OK);
    ASSERT_OBS_ERROR("arguments longer than 8192 bytes");
    free(huge);
}

typedef struct deleg {
    int calls;
    char last[64];
} deleg;

static az_err delegate_handler(void *arg, const json_t *args, az_tool_result *out, char *m)
{
    deleg *d = arg;
    d->calls++;
    const char *task = json_string_value(json_object_get(args, "task"));
    snprintf(d->last, sizeof d->last, "%s", task ? task : "");
    if (task && strcmp(task, "boom") == 0) return az_fail(m, AZ_ERR_CANCELLED, "run cancelled");
    if (task && strcmp(task, "nothing") == 0) return AZ_OK;
    if (task && strcmp(task, "big") == 0) {
        /* 300 KiB with invalid UTF-8 and a control character: capped and repaired. */
        size_t n = 300 * 1024;
        char *s = malloc(n + 1);
        if (!s) return AZ_ERR_NOMEM;
        memset(s, 'y', n);
        s[0] = '\xff', s[1] = '\x07';
        memcpy(s + 100000, "\xe2\x82\xac", 3);
        s[n] = '\0';
        az_err e = az_tools_result_set(out, 0, s);
        free(s);
        return e;
    }
    return az_tools_result_printf(out, 0, "delegated: %s", task ? task : "");
}

static void test_register(void)
{
    az_tools *reg = NULL;
    CU_ASSERT_EQUAL_FATAL(az_tools_new(NULL, &reg, msg), AZ_OK);
    deleg d = {0};
    json_t *schema = json_loads("{\"type\":\"object\",\"properties\":{\"task\":{\"type\":\"string\","
                                "\"maxLength\":100},\"coworker\":{\"type\":\"string\"}},"
                                "\"required\":[\"task\",\"coworker\"]}", 0, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(schema);
    CU_ASSERT_EQUAL(az_tools_register(reg, "delegate_work", "Delegate a task to a coworker.", schema,
                                      delegate_handler, &d, msg), AZ_OK);
    CU_ASSERT_EQUAL(az_tools_register(reg, "delegate_work", "x", schema, delegate_handler, &d, msg),
                    AZ_ERR_EXISTS);
    CU_ASSERT_EQUAL(az_tools_register(reg, "calculator", "x", schema, delegate_handler, &d, msg),
                    AZ_ERR_EXISTS);
    CU_ASSERT_EQUAL(az_tools_register(reg, "bad name", "x", schema, delegate_handler, &d, msg),
                    AZ_ERR_INVALID);
    CU_ASSERT_EQUAL(az_tools_register(reg, "", "x", schema, delegate_handler, &d, msg), AZ_ERR_INVALID);
    CU_ASSERT_EQUAL(az_tools_register(reg, "ok", "", schema, delegate_handler, &d, msg), AZ_ERR_INVALID);
    CU_ASSERT_EQUAL(az_tools_register(reg, "ok", "x", schema, NULL, &d, msg), AZ_ERR_INVALID);
    json_t *arr_schema = json_array();
    CU_ASSERT_EQUAL(az_tools_register(reg, "ok", "x", arr_schema, delegate_handler, &d, msg), AZ_ERR_INVALID);
    json_decref(arr_schema);
    json_decref(schema); /* the registry holds its own reference */
    CU_ASSERT_TRUE(az_tools_has(reg, "delegate_work"));

    CU_ASSERT_EQUAL(call(reg, "delegate_work", "{\"task\":\"research\",\"coworker\":\"Writer\"}"), AZ_OK);
    CU_ASSERT_FALSE(res.is_error);
    CU_ASSERT_STRING_EQUAL(res.text, "delegated: research");
    CU_ASSERT_EQUAL(res.len, strlen(res.text));
    CU_ASSERT_EQUAL(d.calls, 1);
    CU_ASSERT_EQUAL(call(reg, "delegate_work", "{\"task\":\"research\"}"), AZ_OK);
    ASSERT_OBS_ERROR("argument \"coworker\" is required");
    CU_ASSERT_EQUAL(d.calls, 1);
    /* additionalProperties is not false: extra keys reach the handler. */
    CU_ASSERT_EQUAL(call(reg, "delegate_work", "{\"task\":\"a\",\"coworker\":\"b\",\"x\":1}"), AZ_OK);
    CU_ASSERT_FALSE(res.is_error);
    /* Handler failures: the code comes back and the model still gets a string. */
    CU_ASSERT_EQUAL(call(reg, "delegate_work", "{\"task\":\"boom\",\"coworker\":\"b\"}"), AZ_ERR_CANCELLED);
    CU_ASSERT_STRING_EQUAL(msg, "run cancelled");
    ASSERT_OBS_ERROR("delegate_work failed");
    CU_ASSERT_EQUAL(call(reg, "delegate_work", "{\"task\":\"nothing\",\"coworker\":\"b\"}"), AZ_OK);
    ASSERT_OBS_ERROR("delegate_work returned nothing");
    /* Output capped at the default limit and repaired. */
    CU_ASSERT_EQUAL(call(reg, "delegate_work", "{\"task\":\"big\",\"coworker\":\"b\"}"), AZ_OK);
    CU_ASSERT_FALSE(res.is_error);
    CU_ASSERT_TRUE(res.len <= AZ_TOOLS_DEFAULT_MAX_OUTPUT);
    CU_ASSERT_TRUE(res.len > AZ_TOOLS_DEFAULT_MAX_OUTPUT - 32);
    CU_ASSERT_EQUAL(strncmp(res.text, "\xef\xbf\xbdy", 4), 0); /* \xff replaced, \x07 dropped */
    CU_ASSERT_PTR_NOT_NULL(strstr(res.text, "\xe2\x82\xac"));
    CU_ASSERT_TRUE(az_text_utf8_valid(res.text, res.len));
    CU_ASSERT_EQUAL(strcmp(res.text + res.len - strlen("\xe2\x80\xa6[truncated]"), "\xe2\x80\xa6[truncated]"), 0);
    /* The schema list includes registered tools. */
    const char *names[] = {"delegate_work", "calculator"};
    json_t *arr = NULL;
    CU_ASSERT_EQUAL(az_tools_schema_json(reg, names, 2, &arr, msg), AZ_OK);
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(json_object_get(json_array_get(arr, 0),
                                                                             "function"), "description")),
                           "Delegate a task to a coworker.");
    json_decref(arr);
    /* Restricted to an agent's tools. */
    const char *agent_tools[] = {"calculator", "delegate_work"};
    az_tool_result r = {0};
    CU_ASSERT_EQUAL(az_tools_call_as(reg, agent_tools, 2, "calculator", "{\"expression\":\"1+1\"}",
                                     &r, msg), AZ_OK);
    CU_ASSERT_STRING_EQUAL(r.text, "2");
    az_tools_result_free(&r);
    CU_ASSERT_EQUAL(az_tools_call_as(reg, agent_tools, 2, "http_fetch", "{\"url\":\"http://x/\"}",
                                     &r, msg), AZ_OK);
    CU_ASSERT_TRUE(r.is_error);
    CU_ASSERT_STRING_EQUAL(r.text, "error: unknown tool \"http_fetch\" (available: calculator, "
                                   "delegate_work)");
    az_tools_result_free(&r);
    CU_ASSERT_EQUAL(az_tools_call_as(reg, agent_tools, 0, "calculator", "{}", &r, msg), AZ_OK);
    CU_ASSERT_STRING_EQUAL(r.text, "error: unknown tool \"calculator\" (available: none)");
    az_tools_result_free(&r);
    /* The other registry is unaffected. */
    CU_ASSERT_FALSE(az_tools_has(reg_plain, "delegate_work"));
    /* Capacity. */
    json_t *s2 = json_pack("{s:s}", "type", "object");
    az_err e = AZ_OK;
    int added = 0;
    for (int i = 0; i < 100 && e == AZ_OK; i++) {
        char name[32];
        snprintf(name, sizeof name, "t%d", i);
        e = az_tools_register(reg, name, "x", s2, delegate_handler, &d, msg);
        added += e == AZ_OK;
    }
    CU_ASSERT_EQUAL(e, AZ_ERR_EXHAUSTED);
    CU_ASSERT_EQUAL(added, AZ_TOOLS_MAX - 4);
    json_decref(s2);
    az_tools_free(reg);
    az_tools_free(NULL);
    az_tools_result_free(NULL);
}

/* ------------------------------------------------------------------------------------------- */
/* calculator */

static void calc_ok(const char *expr, const char *want)
{
    json_t *j = json_pack("{s:s}", "expression", expr);
    char *args = json_dumps(j, 0);
    CU_ASSERT_EQUAL(call(reg_plain, "calculator", args), AZ_OK);
    free(args);
    json_decref(j);
    if (res.is_error || strcmp(res.text, want) != 0)
        fprintf(stderr, "\n  %s = \"%s\", want %s\n", expr, res.text, want);
    CU_ASSERT_FALSE(res.is_error);
    CU_ASSERT_STRING_EQUAL(res.text, want);
}

static void calc_err(const char *expr, const char *want)
{
    json_t *j = json_pack("{s:s}", "expression", expr);
    char *s = json_dumps(j, 0);
    CU_ASSERT_EQUAL(call(reg_plain, "calculator", s), AZ_OK);
    free(s);
    json_decref(j);
    if (!res.is_error || !strstr(res.text, want))
        fprintf(stderr, "\n  %s: \"%s\", want \"%s\"\n", expr, res.text, want);
    ASSERT_OBS_ERROR(want);
}

static void test_calc_values(void)
{
    static const char *const cases[][2] = {
        {"1 + 2 * 3", "7"},        {"(1 + 2) * 3", "9"},        {"2 ^ 3 ^ 2", "512"},
        {"(2 ^ 3) ^ 2", "64"},     {"-2 ^ 2", "-4"},            {"2 ^ -1", "0.5"},
        {"10 - 4 - 3", "3"},       {"100 / 10 / 5", "2"},       {"7 / 2", "3.5"},
        {"10 % 4", "2"},           {"-7 % 3", "-1"},            {"2 * -3", "-6"},
        {"--3", "3"},              {"+4", "4"},                 {"0.1 + 0.2", "0.3"},
        {"1e3 + .5", "1000.5"},    {"2.5E-1", "0.25"},          {"sqrt(16)", "4"},
        {"abs(-3.5)", "3.5"},      {"ln(e)", "1"},              {"log10(1000)", "3"},
        {"exp(0)", "1"},           {"sin(0)", "0"},             {"cos(pi)", "-1"},
        {"tan(0)", "0"},           {"floor(2.7)", "2"},         {"ceil(2.1)", "3"},
        {"round(2.5)", "3"},       {"round(-2.5)", "-3"},       {"min(3, 4)", "3"},
        {"max(3, max(4, 5))", "5"}, {"pi", "3.14159265358979"}, {"E", "2.71828182845905"},
        {"SQRT(9) + Pi * 0", "3"}, {" ( ( 1 ) ) ", "1"},        {"-0", "0"},
        {"2 * (3 + 4) ^ 2 / 7", "14"}, {"1 / 3", "0.333333333333333"},
        {"123456789 * 1000", "123456789000"}, {"\t1\n+\r1", "2"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) calc_ok(cases[i][0], cases[i][1]);
}

static void test_calc_errors(void)
{
    calc_err("1 / 0", "division by zero at position 3");
    calc_err("5 % (2 - 2)", "division by zero at position 3");
    calc_err("foo + 1", "unknown identifier \"foo\" at position 1 (known: sqrt, abs,");
    calc_err("2 * log(8)", "unknown identifier \"log\" at position 5");
    calc_err("1 + 2)", "unexpected trailing input at position 6");
    calc_err("2 3", "unexpected trailing input at position 3");
    calc_err("2pi", "unexpected trailing input at position 2");
    calc_err("(1 + 2", "unclosed '(' at position 1");
    calc_err("", "expression is empty");
    calc_err("   ", "expression is empty");
    calc_err("1 +", "unexpected end of expression at position 4");
    calc_err("1 $ 2", "unexpected trailing input at position 3");
    calc_err("$", "unexpected character '$' at position 1");
    calc_err("sqrt(-1)", "sqrt is undefined for that argument at position 1");
    calc_err("ln(-1)", "ln is undefined");
    calc_err("min(1)", "min takes 2 arguments: expected ',' at position 6");
    calc_err("sqrt(1, 2)", "sqrt takes 1 argument at position 7");
    calc_err("sqrt 4", "expected '(' after sqrt at position 6");
    calc_err("10 ^ 400", "result is not a finite number");
    calc_err("1e999", "number out of range at position 1");
    calc_err("1e+", "malformed number at position 1");
    calc_err(".", "malformed number at position 1");
    calc_err("0x10", "unexpected trailing input at position 2");
    calc_err("inf", "unknown identifier \"inf\"");
    calc_err("nan", "unknown identifier \"nan\"");
    calc_err("caf\xc3\xa9", "unknown identifier \"caf\" at position 1");
}

static void test_calc_limits(void)
{
    char e[4096];
    /* 63 parentheses nest 64 levels deep: allowed; 64 are one too many. */
    for (int depth = 63; depth <= 64; depth++) {
        size_t k = 0;
        for (int i = 0; i < depth; i++) e[k++] = '(';
        e[k++] = '1';
        for (int i = 0; i < depth; i++) e[k++] = ')';
        e[k] = '\0';
        if (depth == 63) {
            calc_ok(e, "1");
        } else {
            calc_err(e, "expression nests deeper than 64 levels");
        }
    }
    memset(e, '-', 500);
    strcpy(e + 500, "1");
    calc_err(e, "nests deeper than 64");
    e[0] = '\0';
    for (int i = 0; i < 100; i++) strcat(e, "2^");
    strcat(e, "1");
    calc_err(e, "nests deeper than 64");
    /* 1000 characters are fine, 1001 are not. */
    size_t k = 0;
    e[k++] = '1';
    while (k + 2 <= 1000) e[k++] = '+', e[k++] = '1';
    e[k] = '\0';
    CU_ASSERT_EQUAL(strlen(e), 999);
    calc_ok(e, "500");
    strcat(e, "0");
    calc_ok(e, "509");
    strcat(e, "0");
    calc_err(e, "argument \"expression\" is longer than 1000 characters");
    /* A long number. */
    memset(e, '9', 200);
    e[200] = '\0';
    calc_err(e, "number too long at position 1");
}

/* ------------------------------------------------------------------------------------------- */
/* current_time */

static int matches(const char *s, const char *pattern)
{
    regex_t re;
    if (regcomp(&re, pattern, REG_EXTENDED | REG_NOSUB) != 0) return 0;
    int ok = regexec(&re, s, 0, NULL, 0) == 0;
    regfree(&re);
    return ok;
}

#define STAMP "^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}"

/* The UTC epoch seconds of the observation's timestamp with its offset applied. */
static time_t stamp_epoch(const char *s)
{
    struct tm tm = {0};
    int y, mo, d, h, mi, se;
    if (sscanf(s, "%d-%d-%dT%d:%d:%d", &y, &mo, &d, &h, &mi, &se) != 6) return 0;
    tm.tm_year = y - 1900, tm.tm_mon = mo - 1, tm.tm_mday = d, tm.tm_hour = h, tm.tm_min = mi,
    tm.tm_sec = se;
    time_t t = timegm(&tm);
    const char *o = s + 19;
    if (*o == 'Z') return t;
    int oh = 0, om = 0;
    sscanf(o + 1, "%d:%d", &oh, &om);
    long off = (oh * 3600L + om * 60L) * (*o == '-' ? -1 : 1);
    return t - off;
}

static void time_ok(const char *args, const char *pattern)
{
    time_t before = time(NULL);
    CU_ASSERT_EQUAL(call(reg_plain, "current_time", args), AZ_OK);
    time_t after = time(NULL);
    CU_ASSERT_FALSE(res.is_error);
    if (!matches(res.text, pattern)) fprintf(stderr, "\n  %s -> \"%s\" !~ %s\n", args, res.text, pattern);
    CU_ASSERT_TRUE(matches(res.text, pattern));
    time_t t = stamp_epoch(res.text);
    CU_ASSERT_TRUE(t >= before && t <= after);
}

static void test_time(void)
{
    time_ok("{}", STAMP "Z \\(UTC\\)$");
    time_ok(NULL, STAMP "Z \\(UTC\\)$");
    time_ok("{\"timezone\":\"UTC\"}", STAMP "Z \\(UTC\\)$");
    time_ok("{\"timezone\":\"\"}", STAMP "Z \\(UTC\\)$");
    time_ok("{\"timezone\":\"+05:30\"}", STAMP "\\+05:30 \\(UTC\\+05:30\\)$");
    time_ok("{\"timezone\":\"-0800\"}", STAMP "-08:00 \\(UTC-08:00\\)$");
    time_ok("{\"timezone\":\"+14\"}", STAMP "\\+14:00 \\(UTC\\+14:00\\)$");
    time_ok("{\"timezone\":\"Asia/Kolkata\"}", STAMP "\\+05:30 \\(Asia/Kolkata\\)$");
    time_ok("{\"timezone\":\"Europe/Paris\"}", STAMP "\\+0[12]:00 \\(Europe/Paris\\)$");
    time_ok("{\"timezone\":\"America/Argentina/Buenos_Aires\"}", STAMP "-03:00 \\(America/Argentina/Buenos_Aires\\)$");
    time_ok("{\"timezone\":\"Etc/GMT+5\"}", STAMP "-05:00 \\(Etc/GMT\\+5\\)$");
    static const char *const bad[] = {
        "Mars/Olympus_Mons", "../../../etc/passwd", "/etc/localtime", "Europe", "Europe/",
        "Europe//Paris", "Europe/../Europe/Paris", ".hidden", "Europe/Paris\\n", "Europe Paris",
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        json_t *j = json_pack("{s:s}", "timezone", bad[i]);
        char *s = json_dumps(j, 0);
        CU_ASSERT_EQUAL(call(reg_plain, "current_time", s), AZ_OK);
        ASSERT_OBS_ERROR("unknown timezone");
        free(s);
        json_decref(j);
    }
    static const char *const bad_off[] = {"+15:00", "+05:60", "+5:30", "+05:", "-", "+0530x"};
    for (size_t i = 0; i < sizeof bad_off / sizeof *bad_off; i++) {
        json_t *j = json_pack("{s:s}", "timezone", bad_off[i]);
        char *s = json_dumps(j, 0);
        CU_ASSERT_EQUAL(call(reg_plain, "current_time", s), AZ_OK);
        ASSERT_OBS_ERROR("offsets look like +05:30");
        free(s);
        json_decref(j);
    }
    /* The process time zone is restored. */
    setenv("TZ", "America/New_York", 1);
    tzset();
    CU_ASSERT_EQUAL(call(reg_plain, "current_time", "{\"timezone\":\"Asia/Tokyo\"}"), AZ_OK);
    CU_ASSERT_STRING_EQUAL(getenv("TZ"), "America/New_York");
    unsetenv("TZ");
    CU_ASSERT_EQUAL(call(reg_plain, "current_time", "{\"timezone\":\"Asia/Tokyo\"}"), AZ_OK);
    CU_ASSERT_PTR_NULL(getenv("TZ"));
    tzset();
}

/* Threads converting to different zones at once each get their own zone. */
static void *time_worker(void *arg)
{
    const char *zone = arg;
    const char *want = strcmp(zone, "Asia/Tokyo") == 0 ? "+09:00 (Asia/Tokyo)" : "+05:30 (Asia/Kolkata)";
    char args[64];
    snprintf(args, sizeof args, "{\"timezone\":\"%s\"}", zone);
    long bad = 0;
    for (int i = 0; i < 300; i++) {
        az_tool_result r = {0};
        char m[AZ_MSG_MAX];
        if (az_tools_call(reg_plain, "current_time", args, &r, m) != AZ_OK || !strstr(r.text, want)) bad++;
        az_tools_result_free(&r);
    }
    return (void *)bad;
}

static void test_time_threads(void)
{
    pthread_t t[4];
    const char *zones[] = {"Asia/Tokyo", "Asia/Kolkata", "Asia/Tokyo", "Asia/Kolkata"};
    for (int i = 0; i < 4; i++) pthread_create(&t[i], NULL, time_worker, (void *)zones[i]);
    for (int i = 0; i < 4; i++) {
        void *bad;
        pthread_join(t[i], &bad);
        CU_ASSERT_EQUAL((long)bad, 0);
    }
}

/* ------------------------------------------------------------------------------------------- */
/* http_fetch against real servers */

static fake srv1, srv2; /* 127.0.0.1 and 127.0.0.2 */
static az_netguard *g_local, *g_only2;
static az_tools *reg_local, *reg_strict, *reg_only2;

static int fetch_init(void)
{
    if (fake_start(&srv1, "127.0.0.1") != 0 || fake_start(&srv2, "127.0.0.2") != 0) return 1;
    if (az_netguard_new("127.0.0.0/8", &g_local, msg) != AZ_OK ||
        az_netguard_new("127.0.0.2/32", &g_only2, msg) != AZ_OK)
        return 1;
    az_tools_config c = {.guard = g_local, .fetch_timeout_ms = 1500, .fetch_connect_timeout_ms = 1000};
    if (az_tools_new(&c, &reg_local, msg) != AZ_OK) return 1;
    c.guard = NULL;
    if (az_tools_new(&c, &reg_strict, msg) != AZ_OK) return 1;
    c.guard = g_only2;
    if (az_tools_new(&c, &reg_only2, msg) != AZ_OK) return 1;
    return 0;
}

static int fetch_cleanup(void)
{
    fake_stop(&srv1);
    fake_stop(&srv2);
    az_tools_free(reg_local);
    az_tools_free(reg_strict);
    az_tools_free(reg_only2);
    az_netguard_free(g_local);
    az_netguard_free(g_only2);
    return 0;
}

/* Fetches path from srv (or a full URL when path has a scheme) through reg. */
static az_err fetch(az_tools *reg, fake *srv, const char *path, long max_chars)
{
    char url[512], args[700];
    if (strstr(path, "://")) snprintf(url, sizeof url, "%s", path);
    else snprintf(url, sizeof url, "http://%s:%d%s", srv->ip, srv->port, path);
    if (max_chars) snprintf(args, sizeof args, "{\"url\":\"%s\",\"max_chars\":%ld}", url, max_chars);
    else snprintf(args, sizeof args, "{\"url\":\"%s\"}", url);
    return call(reg, "http_fetch", args);
}

static void test_fetch_html(void)
{
    CU_ASSERT_EQUAL(fetch(reg_local, &srv1, "/html", 0), AZ_OK);
    CU_ASSERT_FALSE(res.is_error);
    char want[2048];
    snprintf(want, sizeof want,
             "URL: http://127.0.0.1:%d/html\nStatus: 200\nTitle: Fish & Chips\n\n"
             "Menu\nCod <fried> \"fresh\" 'daily', only \xe2\x82\xac" "5\n"
             "Caf&eacute; and tea hotly\nlink",
             srv1.port);
    if (strcmp(res.text, want) != 0) fprintf(stderr, "\n  got:\n%s\n  want:\n%s\n", res.text, want);
    CU_ASSERT_STRING_EQUAL(res.text, want);
    CU_ASSERT_PTR_NULL(strstr(res.text, "alert"));
    CU_ASSERT_PTR_NULL(strstr(res.text, "hidden"));
    CU_ASSERT_PTR_NULL(strstr(res.text, "color"));
    CU_ASSERT_STRING_EQUAL(srv1.last_ua, AZ_TOOLS_FETCH_USER_AGENT);
    /* An error page is still a page: the status tells the model. */
    CU_ASSERT_EQUAL(fetch(reg_local, &srv1, "/missing", 0), AZ_OK);
    CU_ASSERT_FALSE(res.is_error);
    CU_ASSERT_PTR_NOT_NULL(strstr(res.text, "\nStatus: 404\nTitle: Nope\n\nmissing"));
}

static void test_fetch_text(void)
{
    CU_ASSERT_EQUAL(fetch(reg_local, &srv1, "/json", 0), AZ_OK);
    CU_ASSERT_FALSE(res.is_error);
    char want[512];
    snprintf(want, sizeof want, "URL: http://127.0.0.1:%d/json\nStatus: 200\n\n"
             "{\"a\": 1, \"b\": [true, null], \"s\": \"<b>x</b>\"}", srv1.port);
    CU_ASSERT_STRING_EQUAL(res.text, want);
    CU_ASSERT_EQUAL(fetch(reg_local, &srv1, "/latin1", 0), AZ_OK);
    CU_ASSERT_PTR_NOT_NULL(strstr(res.text, "\n\ncaf\xc3\xa9"));
    CU_ASSERT_EQUAL(fetch(reg_local, &srv1, "/badutf8", 0), AZ_OK);
    CU_ASSERT_FALSE(res.is_error);
    CU_ASSERT_PTR_NOT_NULL(strstr(res.text, "\n\nok\xef\xbf\xbd\xef\xbf\xbd end[0m"));
    CU_ASSERT_TRUE(az_text_utf8_valid(res.text, res.len));
}

static void test_fetch_truncation(void)
{
    CU_ASSERT_EQUAL(fetch(reg_local, &srv1, "/long", 100), AZ_OK);
    CU_ASSERT_FALSE(res.is_error);
    const char *body = strstr(res.text, "\n\n");
    CU_ASSERT_PTR_NOT_NULL_FATAL(body);
    body += 2;
    CU_ASSERT_EQUAL(strncmp(body, "abcdefghijklmnopqrstuvwxyz", 26), 0);
    CU_ASSERT_STRING_EQUAL(body + 100, "\xe2\x80\xa6[truncated]");
    /* Default: 20000 characters. */
    CU_ASSERT_EQUAL(fetch(reg_local, &srv1, "/long", 0), AZ_OK);
    body = strstr(res.text, "\n\n") + 2;
    CU_ASSERT_EQUAL(strlen(body), 20000 + strlen("\xe2\x80\xa6[truncated]"));
    /* Enough room: no mark. */
    CU_ASSERT_EQUAL(fetch(reg_local, &srv1, "/long", 50000), AZ_OK);
    body = strstr(res.text, "\n\n") + 2;
    CU_ASSERT_EQUAL(strlen(body), 50000);
}

static void test_fetch_size_cap(void)
{
    double t0 = now_s();
    CU_ASSERT_EQUAL(fetch(reg_local, &srv1, "/huge", 0), AZ_OK);
    ASSERT_OBS_ERROR("response larger than 2097152 bytes");
    CU_ASSERT_EQUAL(fetch(reg_local, &srv1, "/huge-cl", 0), AZ_OK);
    ASSERT_OBS_ERROR("response larger than 2097152 bytes");
    CU_ASSERT_TRUE(now_s() - t0 < 3.0);
}

static void test_fetch_redirects(void)
{
    CU_ASSERT_EQUAL(fetch(reg_local, &srv1, "/redir/5", 0), AZ_OK);
    CU_ASSERT_FALSE(res.is_error);
    char want[256];
    snprintf(want, sizeof want, "URL: http://127.0.0.1:%d/redir/0\nStatus: 200\n\nlanded", srv1.port);
    CU_ASSERT_STRING_EQUAL(res.text, want);
    CU_ASSERT_EQUAL(fetch(reg_local, &srv1, "/redir/6", 0), AZ_OK);
    ASSERT_OBS_ERROR("too many redirects");
    CU_ASSERT_EQUAL(fetch(reg_local, &srv1, "/ftp", 0), AZ_OK);
    ASSERT_OBS_ERROR("redirected to a URL that is not http or https");
}

static void test_fetch_timeout(void)
{
    double t0 = now_s();
    CU_ASSERT_EQUAL(fetch(reg_local, &srv1, "/stall", 0), AZ_OK);
    double took = now_s() - t0;
    ASSERT_OBS_ERROR("the request timed out");
    CU_ASSERT_TRUE(took >= 1.4 && took < 3.5);
    if (!(took >= 1.4 && took < 3.5)) fprintf(stderr, "\n  stall took %.2f s\n", took);
}

static int cancel_after_start(void *arg)
{
    return __atomic_add_fetch((int *)arg, 1, __ATOMIC_ACQ_REL) > 1;
}

static void test_fetch_cancel(void)
{
    int polls = 0;
    az_tools_config c = {.guard = g_local, .cancelled = cancel_after_start, .cancel_arg = &polls};
    az_tools *reg = NULL;
    CU_ASSERT_EQUAL_FATAL(az_tools_new(&c, &reg, msg), AZ_OK);
    double t0 = now_s();
    CU_ASSERT_EQUAL(fetch(reg, &srv1, "/stall", 0), AZ_ERR_CANCELLED);
    CU_ASSERT_TRUE(now_s() - t0 < 3.0);
    ASSERT_OBS_ERROR("cancelled");
    az_tools_free(reg);
}

static void test_fetch_bad_urls(void)
{
    static const char *const not_http[] = {"ftp://127.0.0.1/x", "file:///etc/passwd",
                                           "gopher://127.0.0.1/", "example.com/page",
                                           "//example.com/", "javascript:alert(1)", ""};
    for (size_t i = 0; i < sizeof not_http / sizeof *not_http; i++) {
        char args[256];
        snprintf(args, sizeof args, "{\"url\":\"%s\"}", not_http[i]);
        CU_ASSERT_EQUAL(call(reg_local, "http_fetch", args), AZ_OK);
        ASSERT_OBS_ERROR("url must be http or https");
    }
    CU_ASSERT_EQUAL(call(reg_local, "http_fetch", "{\"url\":\"http://exa mple.com/\"}"), AZ_OK);
    ASSERT_OBS_ERROR("url is not a valid URL");
    CU_ASSERT_EQUAL(call(reg_local, "http_fetch", "{\"url\":\"http://\"}"), AZ_OK);
    ASSERT_OBS_ERROR("url is not a valid URL");
    char args[2200];
    int n = snprintf(args, sizeof args, "{\"url\":\"http://127.0.0.1/");
    memset(args + n, 'a', 2049 - 17);
    strcpy(args + n + 2049 - 17, "\"}");
    CU_ASSERT_EQUAL(call(reg_local, "http_fetch", args), AZ_OK);
    ASSERT_OBS_ERROR("argument \"url\" is longer than 2048 characters");
    CU_ASSERT_EQUAL(fetch(reg_local, &srv1, "/png", 0), AZ_OK);
    ASSERT_OBS_ERROR("unsupported content type image/png");
    /* Nothing listens on port 1. */
    CU_ASSERT_EQUAL(call(reg_local, "http_fetch", "{\"url\":\"http://127.0.0.1:1/\"}"), AZ_OK);
    ASSERT_OBS_ERROR("cannot connect to the server");
}

/* The default policy refuses loopback at connect time: the server never sees a request. */
static void test_fetch_policy_refuses(void)
{
    int hits = fake_hits(&srv1);
    char url[128];
    static const char *const forms[] = {"http://127.0.0.1:%d/html", "http://localhost:%d/html",
                                        "http://[::ffff:127.0.0.1]:%d/html", "http://2130706433:%d/html",
                                        "http://0x7f.1:%d/html", "http://[::1]:%d/html",
                                        "http://0.0.0.0:%d/html"};
    for (size_t i = 0; i < sizeof forms / sizeof *forms; i++) {
        snprintf(url, sizeof url, forms[i], srv1.port);
        CU_ASSERT_EQUAL(fetch(reg_strict, &srv1, url, 0), AZ_OK);
        ASSERT_OBS_ERROR("refused by the network policy");
    }
    snprintf(url, sizeof url, "http://127.0.0.1:%d/html", srv1.port);
    CU_ASSERT_EQUAL(fetch(reg_strict, &srv1, url, 0), AZ_OK);
    ASSERT_OBS_ERROR("connection to 127.0.0.1 refused by the network policy (loopback addresses "
                     "are not allowed)");
    CU_ASSERT_EQUAL(fake_hits(&srv1), hits);
    /* A policy allowing only 127.0.0.2 refuses 127.0.0.1 too. */
    CU_ASSERT_EQUAL(fetch(reg_only2, &srv1, "/html", 0), AZ_OK);
    ASSERT_OBS_ERROR("refused by the network policy");
    CU_ASSERT_EQUAL(fake_hits(&srv1), hits);
}

/* An allowed host redirecting to a refused one: the redirect's connection is refused. */
static void test_fetch_policy_redirect(void)
{
    int hits1 = fake_hits(&srv1), hits2 = fake_hits(&srv2);
    CU_ASSERT_EQUAL(fetch(reg_only2, &srv2, "/html", 0), AZ_OK); /* 127.0.0.2 itself is fine */
    CU_ASSERT_FALSE(res.is_error);
    CU_ASSERT_PTR_NOT_NULL(strstr(res.text, "Title: Fish & Chips"));
    snprintf(srv2.redirect_target, sizeof srv2.redirect_target, "http://127.0.0.1:%d/html", srv1.port);
    CU_ASSERT_EQUAL(fetch(reg_only2, &srv2, "/away", 0), AZ_OK);
    ASSERT_OBS_ERROR("connection to 127.0.0.1 refused by the network policy");
    snprintf(srv2.redirect_target, sizeof srv2.redirect_target, "http://[::1]:%d/html", srv1.port);
    CU_ASSERT_EQUAL(fetch(reg_only2, &srv2, "/away", 0), AZ_OK);
    ASSERT_OBS_ERROR("refused by the network policy");
    CU_ASSERT_EQUAL(fake_hits(&srv1), hits1);
    CU_ASSERT_EQUAL(fake_hits(&srv2), hits2 + 3);
    /* With loopback allowed the same redirect is followed. */
    snprintf(srv2.redirect_target, sizeof srv2.redirect_target, "http://127.0.0.1:%d/json", srv1.port);
    CU_ASSERT_EQUAL(fetch(reg_local, &srv2, "/away", 0), AZ_OK);
    CU_ASSERT_FALSE(res.is_error);
    CU_ASSERT_PTR_NOT_NULL(strstr(res.text, "\"a\": 1"));
    CU_ASSERT_EQUAL(fake_hits(&srv1), hits1 + 1);
}

/* "1" allows everything, and a configured proxy is used while the environment's is not. */
static void test_fetch_allow_all_and_proxy(void)
{
    az_netguard *g = NULL;
    CU_ASSERT_EQUAL_FATAL(az_netguard_new("1", &g, msg), AZ_OK);
    az_tools_config c = {.guard = g};
    az_tools *reg = NULL;
    CU_ASSERT_EQUAL_FATAL(az_tools_new(&c, &reg, msg), AZ_OK);
    CU_ASSERT_EQUAL(fetch(reg, &srv1, "/json", 0), AZ_OK); /* http_proxy in the env is ignored */
    CU_ASSERT_FALSE(res.is_error);
    az_tools_free(reg);
    /* A configured proxy: the request goes to srv2 as an absolute-URI request. */
    char proxy[64];
    snprintf(proxy, sizeof proxy, "http://127.0.0.2:%d", srv2.port);
    c.proxy = proxy;
    CU_ASSERT_EQUAL_FATAL(az_tools_new(&c, &reg, msg), AZ_OK);
    proxy[0] = '\0'; /* copied */
    int hits2 = fake_hits(&srv2);
    CU_ASSERT_EQUAL(call(reg, "http_fetch", "{\"url\":\"http://example.invalid/json\"}"), AZ_OK);
    CU_ASSERT_EQUAL(fake_hits(&srv2), hits2 + 1);
    CU_ASSERT_STRING_EQUAL(srv2.last_path, "http://example.invalid/json");
    az_tools_free(reg);
    az_netguard_free(g);
}

/* ------------------------------------------------------------------------------------------- */

static int registry_init(void)
{
    return az_tools_new(NULL, &reg_plain, msg) != AZ_OK;
}

static int registry_cleanup(void)
{
    az_tools_free(reg_plain);
    reg_plain = NULL;
    return 0;
}

int main(void)
{
    /* Proxies from the environment must never be used. */
    setenv("http_proxy", "http://127.0.0.1:9", 1);
    setenv("HTTPS_PROXY", "http://127.0.0.1:9", 1);
    setenv("ALL_PROXY", "http://127.0.0.1:9", 1);
    if (CU_initialize_registry() != CUE_SUCCESS) return 1;
    CU_pSuite n = CU_add_suite("netguard", NULL, NULL);
    CU_pSuite r = CU_add_suite("registry", registry_init, registry_cleanup);
    CU_pSuite f = CU_add_suite("http_fetch", fetch_init, fetch_cleanup);
    if (!n || !r || !f) return 1;
    CU_add_test(n, "parse", test_netguard_parse);
    CU_add_test(n, "refused ranges", test_netguard_ranges);
    CU_add_test(n, "allow list", test_netguard_allow_list);
    CU_add_test(r, "builtin names", test_builtin_names);
    CU_add_test(r, "schema json", test_schema_json);
    CU_add_test(r, "arguments", test_arguments);
    CU_add_test(r, "register", test_register);
    CU_add_test(r, "calculator values", test_calc_values);
    CU_add_test(r, "calculator errors", test_calc_errors);
    CU_add_test(r, "calculator limits", test_calc_limits);
    CU_add_test(r, "current_time", test_time);
    CU_add_test(r, "current_time threads", test_time_threads);
    CU_add_test(f, "html", test_fetch_html);
    CU_add_test(f, "json and text", test_fetch_text);
    CU_add_test(f, "truncation", test_fetch_truncation);
    CU_add_test(f, "size cap", test_fetch_size_cap);
    CU_add_test(f, "redirects", test_fetch_redirects);
    CU_add_test(f, "timeout", test_fetch_timeout);
    CU_add_test(f, "cancel", test_fetch_cancel);
    CU_add_test(f, "bad urls and types", test_fetch_bad_urls);
    CU_add_test(f, "policy refuses loopback", test_fetch_policy_refuses);
    CU_add_test(f, "policy refuses redirect", test_fetch_policy_redirect);
    CU_add_test(f, "allow all and proxy", test_fetch_allow_all_and_proxy);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    unsigned failures = CU_get_number_of_failures() + CU_get_number_of_tests_failed() +
                        CU_get_number_of_suites_failed();
    CU_cleanup_registry();
    az_tools_result_free(&res);
    return failures ? 1 : 0;
}
