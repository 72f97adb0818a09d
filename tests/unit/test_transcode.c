/* CUnit suite for server/gateway/transcode: REST requests built from path bindings, query
 * parameters and JSON bodies for the real routes and for a route over tests/unit's aztest.All
 * (every field kind), every error message, allocation failures, responses, the gRPC -> HTTP
 * status table and the google.rpc.Status body. */
#include <CUnit/Basic.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agentz/v1/agent.pb-c.h"
#include "agentz/v1/system.pb-c.h"
#include "agentz/v1/task.pb-c.h"
#include "agentz/v1/workflow.pb-c.h"
#include "core/pbjson.h"
#include "descriptor_set.h"
#include "gateway/routes.h"
#include "gateway/transcode.h"

/* Every field kind, from the pbjson suite (compiled in here too, so CMake needs no rule). */
#include "gen/pbjson_test.pb-c.c"

static const ProtobufCServiceDescriptor *const services[] = {
    &agentz__v1__agent_service__descriptor,
    &agentz__v1__task_service__descriptor,
    &agentz__v1__workflow_service__descriptor,
    &agentz__v1__system_service__descriptor,
};

static az_routes *table;

/* Routes of our own over aztest.All: "GET /t" (query only), "POST /t/{...}" (body "*" and two
 * path variables), "GET /u" over UpdateAgentRequest (a message in the query), "GET /w" over
 * UpdateWorkflowRequest and "GET /c" over CreateTaskRequest. */
static az_route_method all_method = {"/aztest.S/All", "aztest.S", "All", 0, 0,
                                     &aztest__all__descriptor, &aztest__all__descriptor};
static az_route_method upd_method = {"/aztest.S/Upd", "aztest.S", "Upd", 0, 0,
                                     &agentz__v1__update_agent_request__descriptor,
                                     &agentz__v1__agent__descriptor};
static az_route_method wf_method = {"/aztest.S/Wf", "aztest.S", "Wf", 0, 0,
                                    &agentz__v1__update_workflow_request__descriptor,
                                    &agentz__v1__workflow__descriptor};
static az_route_method task_method = {"/aztest.S/Task", "aztest.S", "Task", 0, 0,
                                      &agentz__v1__create_task_request__descriptor,
                                      &agentz__v1__task__descriptor};
static az_route_method metrics_method = {"/aztest.S/M", "aztest.S", "M", 0, 0,
                                         &agentz__v1__get_agent_metrics_request__descriptor,
                                         &agentz__v1__agent_metrics__descriptor};
static az_route all_get, all_post, mask_post, upd_get, wf_get, task_get, usage_get;

static int suite_init(void)
{
    char msg[AZ_MSG_MAX] = "";
    if (az_routes_new(az_descriptor_set, az_descriptor_set_len, services,
                      sizeof services / sizeof services[0], &table, msg) != AZ_OK) {
        fprintf(stderr, "az_routes_new: %s\n", msg);
        return -1;
    }
    static const struct {
        az_route *r;
        const char *http, *tmpl, *body, *response_body;
        const az_route_method *m;
    } mine[] = {
        {&all_get, "GET", "/t", NULL, NULL, &all_method},
        {&all_post, "POST", "/t/{scalars.f_int32}/{ts}", "*", NULL, &all_method},
        {&mask_post, "POST", "/m/{mask}/{w_int32}", "*", NULL, &all_method},
        {&upd_get, "GET", "/u/{agent.id}", NULL, NULL, &upd_method},
        {&wf_get, "GET", "/w", NULL, NULL, &wf_method},
        {&task_get, "GET", "/c", NULL, NULL, &task_method},
        {&usage_get, "GET", "/m", NULL, "usage", &metrics_method},
    };
    for (size_t i = 0; i < sizeof mine / sizeof mine[0]; i++) {
        az_httprule *rule;
        if (az_httprule_parse(mine[i].tmpl, &rule, msg) != AZ_OK) return -1;
        *mine[i].r = (az_route){mine[i].http, rule,  mine[i].body, mine[i].response_body,
                                mine[i].m,    0};
    }
    return 0;
}

static int suite_clean(void)
{
    az_route *mine[] = {&all_get, &all_post, &mask_post, &upd_get, &wf_get, &task_get, &usage_get};
    for (size_t i = 0; i < sizeof mine / sizeof mine[0]; i++)
        az_httprule_free((az_httprule *)mine[i]->rule);
    az_routes_free(table);
    return 0;
}

/* ---- helpers ---- */

/* Splits "a=1&b=2" into q (no decoding: the tests write values decoded). */
static size_t split_query(const char *query, az_query_param *q, size_t max)
{
    size_t n = 0;
    for (const char *p = query; p && *p && n < max;) {
        const char *amp = strchr(p, '&'), *end = amp ? amp : p + strlen(p);
        const char *eq = memchr(p, '=', (size_t)(end - p));
        q[n].name = p;
        q[n].name_len = (size_t)((eq ? eq : end) - p);
        q[n].value = eq ? eq + 1 : end;
        q[n].value_len = (size_t)(end - q[n].value);
        n++;
        p = amp ? amp + 1 : NULL;
    }
    return n;
}

/* Transcodes and, on success, encodes the request as proto3 JSON (the caller frees it). */
static char *run(const az_route *r, const az_httprule_binding *b, size_t nb, const az_query_param *q,
                 size_t nq, const char *body, az_err *err, char *msg)
{
    ProtobufCMessage *m = (ProtobufCMessage *)1;
    msg[0] = '\0';
    *err = az_transcode_request(r, b, nb, q, nq, body, body ? strlen(body) : 0, NULL, &m, msg);
    if (*err) {
        CU_ASSERT_PTR_NULL(m);
        return NULL;
    }
    CU_ASSERT_PTR_NOT_NULL_FATAL(m);
    CU_ASSERT_PTR_EQUAL(m->descriptor, r->method->input);
    char *json = NULL, emsg[AZ_MSG_MAX];
    if (az_pbjson_encode(m, 0, &json, emsg) != AZ_OK) fprintf(stderr, "\nencode: %s\n", emsg);
    CU_ASSERT_PTR_NOT_NULL(json);
    protobuf_c_message_free_unpacked(m, NULL);
    return json;
}

/* A request on the real table: http path?query with body. */
static char *real(const char *http, const char *path, const char *query, const char *body,
                  az_err *err, char *msg)
{
    const az_route *r = NULL;
    az_httprule_binding b[AZ_HTTPRULE_MAX_VARS];
    size_t nb = 0;
    az_route_result res = az_routes_match(table, http, path, strlen(path), &r, b,
                                          AZ_HTTPRULE_MAX_VARS, &nb, NULL, 0);
    if (res != AZ_ROUTE_FOUND) fprintf(stderr, "\nno route for %s %s\n", http, path);
    CU_ASSERT_EQUAL_FATAL(res, AZ_ROUTE_FOUND);
    az_query_param q[AZ_TRANSCODE_MAX_PARAMS + 8];
    size_t nq = split_query(query, q, sizeof q / sizeof q[0]);
    return run(r, b, nb, q, nq, body, err, msg);
}

static void expect_json(const char *what, char *got, az_err err, const char *msg, const char *want)
{
    if (err) fprintf(stderr, "\n%s: failed: %s\n", what, msg);
    CU_ASSERT_EQUAL(err, AZ_OK);
    if (got && strcmp(got, want) != 0) fprintf(stderr, "\n%s\n  got: %s\n want: %s\n", what, got, want);
    CU_ASSERT_STRING_EQUAL(got ? got : "", want);
    free(got);
}

static void expect_err(const char *what, char *got, az_err err, const char *msg, const char *want)
{
    CU_ASSERT_PTR_NULL(got);
    free(got);
    CU_ASSERT_EQUAL(err, AZ_ERR_INVALID);
    if (strcmp(msg, want) != 0) fprintf(stderr, "\n%s\n  got: %s\n want: %s\n", what, msg, want);
    CU_ASSERT_STRING_EQUAL(msg, want);
}

static void ok(const char *http, const char *path, const char *query, const char *body,
               const char *want)
{
    az_err err;
    char msg[AZ_MSG_MAX];
    char *got = real(http, path, query, body, &err, msg);
    expect_json(path, got, err, msg, want);
}

static void bad(const char *http, const char *path, const char *query, const char *body,
                const char *want)
{
    az_err err;
    char msg[AZ_MSG_MAX];
    char *got = real(http, path, query, body, &err, msg);
    expect_err(query ? query : path, got, err, msg, want);
}

/* A request on one of our own routes; path (or NULL) is matched against its template. */
static char *mine(const az_route *r, const char *path, const char *query, const char *body,
                  az_err *err, char *msg)
{
    az_httprule_binding b[AZ_HTTPRULE_MAX_VARS];
    size_t nb = 0;
    if (path) CU_ASSERT_TRUE_FATAL(az_httprule_match(r->rule, path, strlen(path), b, AZ_HTTPRULE_MAX_VARS, &nb));
    az_query_param q[AZ_TRANSCODE_MAX_PARAMS + 8];
    size_t nq = split_query(query, q, sizeof q / sizeof q[0]);
    return run(r, b, nb, q, nq, body, err, msg);
}

static void ok_on(const az_route *r, const char *path, const char *query, const char *body,
                  const char *want)
{
    az_err err;
    char msg[AZ_MSG_MAX];
    char *got = mine(r, path, query, body, &err, msg);
    expect_json(query ? query : "", got, err, msg, want);
}

static void bad_on(const az_route *r, const char *path, const char *query, const char *body,
                   const char *want)
{
    az_err err;
    char msg[AZ_MSG_MAX];
    char *got = mine(r, path, query, body, &err, msg);
    expect_err(query ? query : "", got, err, msg, want);
}

/* ---- query parameters on the real routes ---- */

static void test_query_basics(void)
{
    ok("GET", "/v1/agents", "pageSize=10&pageToken=abc&status=AGENT_STATUS_IDLE&labelSelector=a=b",
       NULL, "{\"pageSize\":10,\"pageToken\":\"abc\",\"status\":\"AGENT_STATUS_IDLE\","
             "\"labelSelector\":\"a=b\"}");
    /* the .proto names work too, segment by segment */
    ok("GET", "/v1/agents", "page_size=10&label_selector=x", NULL,
       "{\"pageSize\":10,\"labelSelector\":\"x\"}");
    ok("GET", "/v1/agents", "status=2", NULL, "{\"status\":\"AGENT_STATUS_BUSY\"}");
    ok("GET", "/v1/agents", "status=99", NULL, "{\"status\":99}"); /* proto3 enums are open */
    ok("GET", "/v1/agents", "pageSize=-2147483648", NULL, "{\"pageSize\":-2147483648}");
    ok("GET", "/v1/agents", "pageSize=007", NULL, "{\"pageSize\":7}");
    ok("GET", "/v1/agents", "pageToken=", NULL, "{}"); /* "" is a string value: the default */
    ok("GET", "/v1/agents", "", NULL, "{}");
    ok("GET", "/v1/agents", "labelSelector=caf\xc3\xa9 \xe2\x82\xac", NULL,
       "{\"labelSelector\":\"caf\xc3\xa9 \xe2\x82\xac\"}");

    bad("GET", "/v1/agents", "pageSize=ten", NULL,
        "query parameter pageSize: expected an integer, got \"ten\"");
    bad("GET", "/v1/agents", "page_size=ten", NULL,
        "query parameter page_size: expected an integer, got \"ten\"");
    bad("GET", "/v1/agents", "pageSize=", NULL, "query parameter pageSize: empty value");
    bad("GET", "/v1/agents", "pageSize", NULL, "query parameter pageSize: empty value");
    bad("GET", "/v1/agents", "pageSize=2147483648", NULL,
        "query parameter pageSize: \"2147483648\" is out of range for int32");
    bad("GET", "/v1/agents", "pageSize=-2147483649", NULL,
        "query parameter pageSize: \"-2147483649\" is out of range for int32");
    bad("GET", "/v1/agents", "pageSize=99999999999999999999999", NULL,
        "query parameter pageSize: \"99999999999999999999999\" is out of range for int32");
    bad("GET", "/v1/agents", "pageSize=1e2", NULL,
        "query parameter pageSize: expected an integer, got \"1e2\"");
    bad("GET", "/v1/agents", "pageSize=+1", NULL,
        "query parameter pageSize: expected an integer, got \"+1\"");
    bad("GET", "/v1/agents", "pageSize= 1", NULL,
        "query parameter pageSize: expected an integer, got \" 1\"");
    bad("GET", "/v1/agents", "pageSize=-", NULL,
        "query parameter pageSize: expected an integer, got \"-\"");
    bad("GET", "/v1/agents", "pageSize=0x10", NULL,
        "query parameter pageSize: expected an integer, got \"0x10\"");
    bad("GET", "/v1/agents", "status=NOPE", NULL,
        "query parameter status: unknown value \"NOPE\" for enum agentz.v1.AgentStatus");
    bad("GET", "/v1/agents", "status=agent_status_idle", NULL,
        "query parameter status: unknown value \"agent_status_idle\" for enum agentz.v1.AgentStatus");
    bad("GET", "/v1/agents", "status=", NULL, "query parameter status: empty value");
    bad("GET", "/v1/agents", "colour=red", NULL, "unknown query parameter \"colour\"");
    bad("GET", "/v1/agents", "PageSize=1", NULL, "unknown query parameter \"PageSize\"");
    bad("GET", "/v1/agents", "pageSize.x=1", NULL, "unknown query parameter \"pageSize.x\"");
    bad("GET", "/v1/agents", "=1", NULL, "unknown query parameter \"\"");
    bad("GET", "/v1/agents", "pageSize=1&pageSize=2", NULL,
        "query parameter pageSize: given more than once");
    bad("GET", "/v1/agents", "page_size=1&pageSize=2", NULL,
        "query parameter pageSize: given more than once");
}

static void test_query_kinds_real(void)
{
    /* repeated scalars by repeating the parameter, in order, either name */
    ok("GET", "/v1/agents:watch", "agentIds=a&agentIds=b&agent_ids=c&includeMetrics=true", NULL,
       "{\"agentIds\":[\"a\",\"b\",\"c\"],\"includeMetrics\":true}");
    ok("GET", "/v1/agents:watch", "agentIds=", NULL, "{\"agentIds\":[\"\"]}");
    ok("GET", "/v1/agents:watch", "afterSequence=9223372036854775807", NULL,
       "{\"afterSequence\":\"9223372036854775807\"}");
    ok("GET", "/v1/agents:watch", "afterSequence=-9223372036854775808", NULL,
       "{\"afterSequence\":\"-9223372036854775808\"}");
    ok("GET", "/v1/agents:watch", "includeMetrics=false", NULL, "{}");
    bad("GET", "/v1/agents:watch", "afterSequence=9223372036854775808", NULL,
        "query parameter afterSequence: \"9223372036854775808\" is out of range for int64");
    bad("GET", "/v1/agents:watch", "includeMetrics=1", NULL,
        "query parameter includeMetrics: expected true or false, got \"1\"");
    bad("GET", "/v1/agents:watch", "includeMetrics=TRUE", NULL,
        "query parameter includeMetrics: expected true or false, got \"TRUE\"");
    bad("GET", "/v1/agents:watch", "includeMetrics=", NULL,
        "query parameter includeMetrics: empty value");

    /* Timestamp, Duration, FieldMask as in JSON */
    ok("GET", "/v1/agents/a1/metrics",
       "startTime=2026-01-02T03:04:05Z&end_time=2026-01-02T03:04:06Z", NULL,
       "{\"agentId\":\"a1\",\"startTime\":\"2026-01-02T03:04:05Z\",\"endTime\":\"2026-01-02T03:04:06Z\"}");
    ok("GET", "/v1/agents/a1/metrics", "endTime=2026-01-02T03:04:05.5+01:00", NULL,
       "{\"agentId\":\"a1\",\"endTime\":\"2026-01-02T02:04:05.500Z\"}");
    bad("GET", "/v1/agents/a1/metrics", "startTime=yesterday", NULL,
        "query parameter startTime: invalid timestamp \"yesterday\" (want RFC 3339 like "
        "2026-11-24T05:13:32.123Z)");
    bad("GET", "/v1/agents/a1/metrics", "startTime=", NULL, "query parameter startTime: empty value");
    bad("GET", "/v1/agents/a1/metrics", "startTime.seconds=5", NULL,
        "unknown query parameter \"startTime.seconds\"");
    bad("GET", "/v1/agents/a1/metrics", "agentId=a2", NULL, "query parameter agentId: bound by the path");
    bad("GET", "/v1/agents/a1/metrics", "agent_id=a2", NULL,
        "query parameter agent_id: bound by the path");
    ok("GET", "/v1/metrics:stream", "interval=1.5s", NULL, "{\"interval\":\"1.500s\"}");
    ok("GET", "/v1/metrics:stream", "interval=-0.000000001s", NULL, "{\"interval\":\"-0.000000001s\"}");
    bad("GET", "/v1/metrics:stream", "interval=5", NULL,
        "query parameter interval: invalid duration \"5\" (want e.g. \"1.5s\")");
    ok("GET", "/v1/runs", "status=RUN_STATUS_FAILED&workflowId=w1&pageSize=5", NULL,
       "{\"workflowId\":\"w1\",\"status\":\"RUN_STATUS_FAILED\",\"pageSize\":5}");
    ok("GET", "/v1/workflows/w1/runs", "status=RUN_STATUS_FAILED", NULL,
       "{\"workflowId\":\"w1\",\"status\":\"RUN_STATUS_FAILED\"}");
    bad("GET", "/v1/workflows/w1/runs", "workflowId=w2", NULL,
        "query parameter workflowId: bound by the path");
}

/* ---- every field kind on aztest.All ---- */

static void test_query_every_kind(void)
{
    ok_on(&all_get, NULL,
          "scalars.fInt32=-1&scalars.f_int64=-2&scalars.fUint32=4294967295"
          "&scalars.fUint64=18446744073709551615&scalars.fSint32=-3&scalars.fSint64=-4"
          "&scalars.fFixed32=5&scalars.fFixed64=6&scalars.fSfixed32=-7&scalars.fSfixed64=-8"
          "&scalars.fFloat=1.5&scalars.fDouble=-2.5e-3&scalars.fBool=true&scalars.fString=s"
          "&scalars.fBytes=aGk=&scalars.fEnum=COLOR_RED",
          NULL,
          "{\"scalars\":{\"fInt32\":-1,\"fInt64\":\"-2\",\"fUint32\":4294967295,"
          "\"fUint64\":\"18446744073709551615\",\"fSint32\":-3,\"fSint64\":\"-4\",\"fFixed32\":5,"
          "\"fFixed64\":\"6\",\"fSfixed32\":-7,\"fSfixed64\":\"-8\",\"fFloat\":1.5,"
          "\"fDouble\":-0.0025,\"fBool\":true,\"fString\":\"s\",\"fBytes\":\"aGk=\","
          "\"fEnum\":\"COLOR_RED\"}}");
    ok_on(&all_get, NULL, "scalars.fDouble=NaN&scalars.fFloat=-Infinity", NULL,
          "{\"scalars\":{\"fFloat\":\"-Infinity\",\"fDouble\":\"NaN\"}}");
    ok_on(&all_get, NULL, "scalars.fBytes=-_8&scalars.fEnum=-1", NULL,
          "{\"scalars\":{\"fBytes\":\"+/8=\",\"fEnum\":-1}}");
    ok_on(&all_get, NULL, "scalars.fBytes=", NULL, "{\"scalars\":{}}");
    bad_on(&all_get, NULL, "scalars.fUint32=4294967296",  NULL,
           "query parameter scalars.fUint32: \"4294967296\" is out of range for uint32");
    bad_on(&all_get, NULL, "scalars.fUint32=-1", NULL,
           "query parameter scalars.fUint32: expected a non-negative integer, got \"-1\"");
    bad_on(&all_get, NULL, "scalars.fUint64=18446744073709551616", NULL,
           "query parameter scalars.fUint64: \"18446744073709551616\" is out of range for uint64");
    bad_on(&all_get, NULL, "scalars.fSint64=-9223372036854775809", NULL,
           "query parameter scalars.fSint64: \"-9223372036854775809\" is out of range for int64");
    bad_on(&all_get, NULL, "scalars.fFixed32=1.0", NULL,
           "query parameter scalars.fFixed32: expected a non-negative integer, got \"1.0\"");
    bad_on(&all_get, NULL, "scalars.fFloat=1e39", NULL,
           "query parameter scalars.fFloat: \"1e39\" is out of range for float");
    bad_on(&all_get, NULL, "scalars.fDouble=1e400", NULL,
           "query parameter scalars.fDouble: \"1e400\" is out of range");
    bad_on(&all_get, NULL, "scalars.fDouble=.5", NULL,
           "query parameter scalars.fDouble: expected a number, got \".5\"");
    bad_on(&all_get, NULL, "scalars.fDouble=inf", NULL,
           "query parameter scalars.fDouble: expected a number, got \"inf\"");
    bad_on(&all_get, NULL, "scalars.fDouble=0x1p3", NULL,
           "query parameter scalars.fDouble: expected a number, got \"0x1p3\"");
    bad_on(&all_get, NULL, "scalars.fDouble=", NULL, "query parameter scalars.fDouble: empty value");
    bad_on(&all_get, NULL, "scalars.fBytes=!!", NULL, "query parameter scalars.fBytes: invalid base64");
    bad_on(&all_get, NULL, "scalars.fEnum=2147483648", NULL,
           "query parameter scalars.fEnum: \"2147483648\" is out of range for int32");

    /* repeated: every kind a query can spell, in parameter order */
    ok_on(&all_get, NULL,
          "rInt32=1&r_int32=2&rInt64=3&rString=&rString=x&rBytes=AA==&rEnum=COLOR_GREEN&rEnum=1"
          "&rDouble=0.5&rBool=true&rBool=false&rTs=1970-01-01T00:00:01Z&rTs=2000-01-01T00:00:00Z",
          NULL,
          "{\"rInt32\":[1,2],\"rInt64\":[\"3\"],\"rString\":[\"\",\"x\"],\"rBytes\":[\"AA==\"],"
          "\"rEnum\":[\"COLOR_GREEN\",\"COLOR_RED\"],\"rDouble\":[0.5],\"rBool\":[true,false],"
          "\"rTs\":[\"1970-01-01T00:00:01Z\",\"2000-01-01T00:00:00Z\"]}");
    bad_on(&all_get, NULL, "rInt32=1&rInt32=x", NULL,
           "query parameter rInt32: expected an integer, got \"x\"");
    bad_on(&all_get, NULL, "rInt32=1&r_int32=", NULL, "query parameter r_int32: empty value");

    /* well-known value types */
    ok_on(&all_get, NULL,
          "ts=2026-11-24T05:13:32.123Z&dur=300s&mask=displayName,llm.model&wDouble=1.5"
          "&wFloat=2&wInt64=-5&wUint64=5&wInt32=7&wUint32=8&wBool=false&wString=&wBytes=aGk",
          NULL,
          "{\"ts\":\"2026-11-24T05:13:32.123Z\",\"dur\":\"300s\",\"mask\":\"displayName,llm.model\","
          "\"wDouble\":1.5,\"wFloat\":2,\"wInt64\":\"-5\",\"wUint64\":\"5\",\"wInt32\":7,"
          "\"wUint32\":8,\"wBool\":false,\"wString\":\"\",\"wBytes\":\"aGk=\"}");
    ok_on(&all_get, NULL, "mask=", NULL, "{\"mask\":\"\"}");
    bad_on(&all_get, NULL, "wInt32=", NULL, "query parameter wInt32: empty value");
    bad_on(&all_get, NULL, "wInt32=x", NULL, "query parameter wInt32: expected an integer, got \"x\"");
    bad_on(&all_get, NULL, "wBool=yes", NULL, "query parameter wBool: expected true or false, got \"yes\"");
    bad_on(&all_get, NULL, "wUint32=-1", NULL,
           "query parameter wUint32: expected a non-negative integer, got \"-1\"");
    bad_on(&all_get, NULL, "mask=a_b", NULL,
           "query parameter mask: field mask path \"a_b\" is not lowerCamelCase");
    bad_on(&all_get, NULL, "dur=1.5", NULL,
           "query parameter dur: invalid duration \"1.5\" (want e.g. \"1.5s\")");
    bad_on(&all_get, NULL, "wDouble.value=1", NULL, "unknown query parameter \"wDouble.value\"");

    /* nested messages, created as needed */
    ok_on(&all_get, NULL, "inner.name=a&inner.child.child.count=3&inner.child.name=b", NULL,
          "{\"inner\":{\"name\":\"a\",\"child\":{\"name\":\"b\",\"child\":{\"count\":3}}}}");
    bad_on(&all_get, NULL,
           "inner.child.child.child.child.child.child.child.child.child.child.child.child.child"
           ".child.child.name=x",
           NULL,
           "query parameter inner.child.child.child.child.child.child.child.child.child.child.child"
           ".child.child.child.child.name: nested deeper than 16 fields");

    /* what a query cannot spell */
    bad_on(&all_get, NULL, "inner=x", NULL,
           "query parameter inner: is a message; set its fields (inner.name=...)");
    bad_on(&all_get, NULL, "scalars=x", NULL,
           "query parameter scalars: is a message; set its fields (scalars.fInt32=...)");
    bad_on(&all_get, NULL, "rInner.name=x", NULL,
           "query parameter rInner.name: rInner is a list of messages; it cannot be set from the "
           "query");
    bad_on(&all_get, NULL, "rInner=x", NULL,
           "query parameter rInner: rInner is a list of messages; it cannot be set from the query");
    bad_on(&all_get, NULL, "labels=x", NULL,
           "query parameter labels: labels is a map; maps cannot be set from the query");
    bad_on(&all_get, NULL, "by_id.key=1", NULL,
           "query parameter by_id.key: by_id is a map; maps cannot be set from the query");
    bad_on(&all_get, NULL, "st=x", NULL,
           "query parameter st: st is a google.protobuf.Struct; it cannot be set from the query");
    bad_on(&all_get, NULL, "val=1", NULL,
           "query parameter val: val is a google.protobuf.Value; it cannot be set from the query");
    bad_on(&all_get, NULL, "empty=", NULL,
           "query parameter empty: empty is a google.protobuf.Empty; it cannot be set from the query");
    bad_on(&all_get, NULL, "rVal=1", NULL,
           "query parameter rVal: rVal is a list of messages; it cannot be set from the query");

    /* oneof: one member only, also through a nested one */
    ok_on(&all_get, NULL, "choiceText=a", NULL, "{\"choiceText\":\"a\"}");
    ok_on(&all_get, NULL, "choiceInner.name=x&choiceInner.count=2", NULL,
          "{\"choiceInner\":{\"name\":\"x\",\"count\":2}}");
    bad_on(&all_get, NULL, "choiceText=a&choiceNum=5", NULL,
           "query parameter choiceNum: another member of its oneof is already set");
    bad_on(&all_get, NULL, "choiceInner.name=x&choiceText=y", NULL,
           "query parameter choiceText: another member of its oneof is already set");
    bad_on(&all_get, NULL, "choiceNum=1&choiceInner.name=x", NULL,
           "query parameter choiceInner.name: another member of its oneof is already set");
}

static void test_query_messages_real(void)
{
    /* dotted names reach into a request message a path also fills */
    ok_on(&upd_get, "/u/a1", "agent.name=n&agent.llm.model=gpt&agent.llm.temperature=0.5"
                             "&agent.maxExecutionTime=30s&agent.tools=a&agent.tools=b&updateMask=name",
          NULL,
          "{\"agent\":{\"id\":\"a1\",\"name\":\"n\",\"llm\":{\"model\":\"gpt\",\"temperature\":0.5},"
          "\"tools\":[\"a\",\"b\"],\"maxExecutionTime\":\"30s\"},\"updateMask\":\"name\"}");
    bad_on(&upd_get, "/u/a1", "agent=x", NULL,
           "query parameter agent: is a message; set its fields (agent.id=...)");
    bad_on(&upd_get, "/u/a1", "agent.llm=x", NULL,
           "query parameter agent.llm: is a message; set its fields (agent.llm.provider=...)");
    bad_on(&upd_get, "/u/a1", "agent.id=a2", NULL, "query parameter agent.id: bound by the path");
    bad_on(&upd_get, "/u/a1", "agent.labels=x", NULL,
           "query parameter agent.labels: agent.labels is a map; maps cannot be set from the query");
    bad_on(&upd_get, "/u/a1", "agent.llm.temperature=", NULL,
           "query parameter agent.llm.temperature: empty value");
    bad_on(&upd_get, "/u/a1", "agent.nope=1", NULL, "unknown query parameter \"agent.nope\"");
    bad_on(&upd_get, "/u/a1", "agent..id=1", NULL, "unknown query parameter \"agent..id\"");
    bad_on(&upd_get, "/u/a1", "agent.=1", NULL, "unknown query parameter \"agent.\"");
    bad_on(&upd_get, "/u/a1", "agent.id.x=1", NULL, "unknown query parameter \"agent.id.x\"");
    bad_on(&wf_get, NULL, "workflow.steps.id=s", NULL,
           "query parameter workflow.steps.id: workflow.steps is a list of messages; it cannot be "
           "set from the query");
    bad_on(&task_get, NULL, "task.outputSchema=x", NULL,
           "query parameter task.outputSchema: task.outputSchema is a google.protobuf.Struct; it "
           "cannot be set from the query");
}

static void test_limits(void)
{
    az_query_param q[AZ_TRANSCODE_MAX_PARAMS + 1];
    for (size_t i = 0; i < sizeof q / sizeof q[0]; i++)
        q[i] = (az_query_param){"rInt32", 6, "1", 1};
    az_err err;
    char msg[AZ_MSG_MAX];
    char *got = run(&all_get, NULL, 0, q, AZ_TRANSCODE_MAX_PARAMS, NULL, &err, msg);
    CU_ASSERT_EQUAL(err, AZ_OK);
    CU_ASSERT_PTR_NOT_NULL(got);
    free(got);
    got = run(&all_get, NULL, 0, q, AZ_TRANSCODE_MAX_PARAMS + 1, NULL, &err, msg);
    expect_err("65 params", got, err, msg, "more than 64 query parameters");

    static char big[8194];
    memset(big, 'a', sizeof big);
    az_query_param one = {"scalars.fString", 15, big, 8192};
    got = run(&all_get, NULL, 0, &one, 1, NULL, &err, msg);
    CU_ASSERT_EQUAL(err, AZ_OK);
    free(got);
    one.value_len = 8193;
    got = run(&all_get, NULL, 0, &one, 1, NULL, &err, msg);
    expect_err("long value", got, err, msg,
               "query parameter scalars.fString: value longer than 8192 bytes");
    one = (az_query_param){big, 8193, "1", 1};
    got = run(&all_get, NULL, 0, &one, 1, NULL, &err, msg);
    expect_err("long name", got, err, msg, "query parameter name longer than 8192 bytes");
    one = (az_query_param){big, 200, "1", 1}; /* messages quote 100 bytes of it */
    got = run(&all_get, NULL, 0, &one, 1, NULL, &err, msg);
    char want[AZ_MSG_MAX];
    snprintf(want, sizeof want, "unknown query parameter \"%.100s...\"", big);
    expect_err("quoted name", got, err, msg, want);

    /* values must be text */
    one = (az_query_param){"scalars.fString", 15, "a\0b", 3};
    got = run(&all_get, NULL, 0, &one, 1, NULL, &err, msg);
    expect_err("nul", got, err, msg, "query parameter scalars.fString: contains a NUL byte");
    one = (az_query_param){"scalars.fString", 15, "a\xff", 2};
    got = run(&all_get, NULL, 0, &one, 1, NULL, &err, msg);
    expect_err("utf8", got, err, msg, "query parameter scalars.fString: not valid UTF-8");
    one = (az_query_param){"ts", 2, "\xc3(", 2};
    got = run(&all_get, NULL, 0, &one, 1, NULL, &err, msg);
    expect_err("utf8 ts", got, err, msg, "query parameter ts: not valid UTF-8");
    /* NUL bytes inside a name or an enum value are bytes like any other */
    one = (az_query_param){"inner\0\0\0", 8, "x", 1};
    got = run(&all_get, NULL, 0, &one, 1, NULL, &err, msg);
    expect_err("nul in name", got, err, msg, "unknown query parameter \"inner\"");
    one = (az_query_param){"scalars.fEnum", 13, "COLOR_RED\0\0", 11};
    got = run(&all_get, NULL, 0, &one, 1, NULL, &err, msg);
    expect_err("nul in enum", got, err, msg,
               "query parameter scalars.fEnum: unknown value \"COLOR_RED\" for enum aztest.Color");
    /* names need not be NUL-terminated at name_len */
    one = (az_query_param){"pageSizeXYZ", 8, "3", 1};
    ok("GET", "/v1/agents", NULL, NULL, "{}");
    const az_route *r;
    az_httprule_binding b[1];
    size_t nb;
    CU_ASSERT_EQUAL_FATAL(az_routes_match(table, "GET", "/v1/agents", 10, &r, b, 1, &nb, NULL, 0),
                          AZ_ROUTE_FOUND);
    got = run(r, b, nb, &one, 1, NULL, &err, msg);
    expect_json("unterminated name", got, err, msg, "{\"pageSize\":3}");
}

/* ---- bodies and path bindings ---- */

static void test_body_field(void)
{
    ok("PATCH", "/v1/agents/a1", "updateMask=name,llm.model", "{\"name\":\"n\",\"llm\":{\"temperature\":0.5}}",
       "{\"agent\":{\"id\":\"a1\",\"name\":\"n\",\"llm\":{\"temperature\":0.5}},"
       "\"updateMask\":\"name,llm.model\"}");
    ok("PATCH", "/v1/agents/a1", NULL, "{\"id\":\"a1\",\"name\":\"n\"}",
       "{\"agent\":{\"id\":\"a1\",\"name\":\"n\"}}"); /* the same id twice is fine */
    ok("PATCH", "/v1/agents/a1", NULL, "{\"id\":\"\"}", "{\"agent\":{\"id\":\"a1\"}}");
    ok("PATCH", "/v1/agents/a1", NULL, "", "{\"agent\":{\"id\":\"a1\"}}");
    ok("PATCH", "/v1/agents/a1", NULL, " \r\n\t", "{\"agent\":{\"id\":\"a1\"}}");
    ok("POST", "/v1/agents", "requestId=r1", "{\"role\":\"r\",\"tools\":[\"t\"]}",
       "{\"agent\":{\"role\":\"r\",\"tools\":[\"t\"]},\"requestId\":\"r1\"}");
    ok("POST", "/v1/agents", NULL, NULL, "{\"agent\":{}}"); /* an empty body is {} */
    ok("POST", "/v1/tasks", "request_id=x", "{\"description\":\"d\"}",
       "{\"task\":{\"description\":\"d\"},\"requestId\":\"x\"}");

    bad("PATCH", "/v1/agents/a1", NULL, "{\"id\":\"other\"}",
        "agent.id: the body says \"other\" but the path says \"a1\"");
    bad("PATCH", "/v1/agents/a1", NULL, "{\"fooBar\":1}", "agent.fooBar: unknown field");
    bad("PATCH", "/v1/agents/a1", NULL, "{\"llm\":{\"temperature\":\"hot\"}}",
        "agent.llm.temperature: expected number, got \"hot\"");
    bad("PATCH", "/v1/agents/a1", NULL, "[]", "agent: expected object, got array");
    bad("PATCH", "/v1/agents/a1", NULL, "null", "agent: expected object, got null");
    bad("PATCH", "/v1/agents/a1", NULL, "{\"name\":\"a\",\"name\":\"b\"}",
        "body: invalid JSON at line 1 column 18: duplicate object key near '\"name\"'");
    bad("PATCH", "/v1/agents/a1", "agent.name=x", "{}", "query parameter agent.name: set by the body");
    bad("POST", "/v1/agents", "agent=x", NULL, "query parameter agent: set by the body");
    bad("PATCH", "/v1/agents/a1", "updateMask=a&update_mask=b", NULL,
        "query parameter update_mask: given more than once");

    az_err err;
    char msg[AZ_MSG_MAX];
    char *got = real("PATCH", "/v1/agents/a1", NULL, "{\"name\": x}", &err, msg);
    CU_ASSERT_PTR_NULL(got);
    CU_ASSERT_EQUAL(err, AZ_ERR_INVALID);
    CU_ASSERT_EQUAL(strncmp(msg, "body: invalid JSON at line 1 column 10: ", 40), 0);
    got = real("PATCH", "/v1/agents/a1", NULL, "{", &err, msg);
    CU_ASSERT_PTR_NULL(got);
    CU_ASSERT_EQUAL(strncmp(msg, "body: invalid JSON at line 1 column ", 36), 0);
}

static void test_body_star(void)
{
    ok("POST", "/v1/tasks/t1:cancel", NULL, "{\"reason\":\"r\"}", "{\"id\":\"t1\",\"reason\":\"r\"}");
    ok("POST", "/v1/tasks/t1:cancel", NULL, "{\"id\":\"t1\"}", "{\"id\":\"t1\"}");
    ok("POST", "/v1/tasks/t1:cancel", NULL, NULL, "{\"id\":\"t1\"}");
    ok("POST", "/v1/tasks/t1:cancel", NULL, "{}", "{\"id\":\"t1\"}");
    ok("POST", "/v1/workflows/w1/runs", NULL, "{\"inputs\":{\"topic\":\"x\"},\"version\":2}",
       "{\"workflowId\":\"w1\",\"version\":2,\"inputs\":{\"topic\":\"x\"}}");
    ok("POST", "/v1/apiKeys", NULL, "{\"name\":\"k\",\"role\":\"ROLE_EDITOR\"}",
       "{\"name\":\"k\",\"role\":\"ROLE_EDITOR\"}");
    bad("POST", "/v1/tasks/t1:cancel", NULL, "{\"id\":\"t2\"}",
        "id: the body says \"t2\" but the path says \"t1\"");
    bad("POST", "/v1/workflows/w1/runs", NULL, "{\"workflowId\":\"w2\"}",
        "workflowId: the body says \"w2\" but the path says \"w1\"");
    bad("POST", "/v1/tasks/t1:cancel", "reason=x", NULL,
        "query parameter reason: not allowed: the body carries the whole request");
    bad("POST", "/v1/tasks/t1:cancel", NULL, "{\"reason\":5}",
        "cancelTaskRequest.reason: expected string, got number");
    bad("POST", "/v1/tasks/t1:cancel", NULL, "{\"nope\":5}", "cancelTaskRequest.nope: unknown field");
    bad("POST", "/v1/apiKeys", NULL, "\"x\"", "createApiKeyRequest: expected object, got string");

    /* a path variable of another type: converted, then compared with the body's value */
    ok_on(&all_post, "/t/42/2026-01-01T00:00:00Z", NULL, NULL,
          "{\"scalars\":{\"fInt32\":42},\"ts\":\"2026-01-01T00:00:00Z\"}");
    ok_on(&all_post, "/t/42/2026-01-01T01:00:00+01:00", NULL,
          "{\"scalars\":{\"fInt32\":42,\"fString\":\"s\"},\"ts\":\"2026-01-01T00:00:00Z\"}",
          "{\"scalars\":{\"fInt32\":42,\"fString\":\"s\"},\"ts\":\"2026-01-01T00:00:00Z\"}");
    bad_on(&all_post, "/t/42/2026-01-01T00:00:00Z", NULL, "{\"scalars\":{\"fInt32\":7}}",
           "scalars.fInt32: the body says 7 but the path says \"42\"");
    bad_on(&all_post, "/t/42/2026-01-01T00:00:00Z", NULL, "{\"ts\":\"2027-01-01T00:00:00Z\"}",
           "ts: the body says \"2027-01-01T00:00:00Z\" but the path says \"2026-01-01T00:00:00Z\"");
    /* lists and wrappers compare by value too; a wrapper holding 0 is set */
    ok_on(&mask_post, "/m/a,bC/0", NULL, "{\"mask\":\"a,bC\",\"wInt32\":0}",
          "{\"mask\":\"a,bC\",\"wInt32\":0}");
    ok_on(&mask_post, "/m/a/5", NULL, NULL, "{\"mask\":\"a\",\"wInt32\":5}");
    bad_on(&mask_post, "/m/a/0", NULL, "{\"mask\":\"a,b\"}",
           "mask: the body says \"a,b\" but the path says \"a\"");
    bad_on(&mask_post, "/m/b/0", NULL, "{\"mask\":\"a\"}",
           "mask: the body says \"a\" but the path says \"b\"");
    bad_on(&mask_post, "/m/a/1", NULL, "{\"wInt32\":0}",
           "wInt32: the body says 0 but the path says \"1\"");
    bad_on(&all_post, "/t/x/2026-01-01T00:00:00Z", NULL, NULL,
           "path parameter scalars.f_int32: expected an integer, got \"x\"");
    bad_on(&all_post, "/t/1/now", NULL, NULL,
           "path parameter ts: invalid timestamp \"now\" (want RFC 3339 like 2026-11-24T05:13:32.123Z)");
    bad_on(&all_post, "/t/1/2026-01-01T00:00:00Z", "rInt32=1", NULL,
           "query parameter rInt32: not allowed: the body carries the whole request");

    /* path values must be text too */
    const char path[] = "/v1/tasks/a\xff:cancel";
    const az_route *r;
    az_httprule_binding b[AZ_HTTPRULE_MAX_VARS];
    size_t nb;
    CU_ASSERT_EQUAL_FATAL(az_routes_match(table, "POST", path, strlen(path), &r, b,
                                          AZ_HTTPRULE_MAX_VARS, &nb, NULL, 0),
                          AZ_ROUTE_FOUND);
    az_err err;
    char msg[AZ_MSG_MAX];
    char *got = run(r, b, nb, NULL, 0, NULL, &err, msg);
    expect_err("path utf8", got, err, msg, "path parameter id: not valid UTF-8");
}

static void test_no_body(void)
{
    bad("GET", "/v1/agents/a1", NULL, "{}", "this method takes no body");
    bad("DELETE", "/v1/agents/a1", NULL, "x", "this method takes no body");
    ok("GET", "/v1/agents/a1", NULL, "", "{\"id\":\"a1\"}");
    ok("GET", "/v1/agents/a1", NULL, "\n", "{\"id\":\"a1\"}");
    ok("DELETE", "/v1/agents/a1", "etag=e1", NULL, "{\"id\":\"a1\",\"etag\":\"e1\"}");
    ok("GET", "/v1/whoami", NULL, NULL, "{}");
    ok("GET", "/v1/agents/a%2Fb", NULL, NULL, "{\"id\":\"a%2Fb\"}"); /* already decoded: as is */
}

/* ---- allocation ---- */

typedef struct counting {
    ProtobufCAllocator pc;
    long live, budget; /* budget < 0: unlimited */
} counting;

static void *count_alloc(void *data, size_t n)
{
    counting *c = data;
    if (c->budget == 0) return NULL;
    if (c->budget > 0) c->budget--;
    void *p = malloc(n ? n : 1);
    if (p) c->live++;
    return p;
}

static void count_free(void *data, void *p)
{
    counting *c = data;
    if (p) c->live--;
    free(p);
}

static void test_allocator(void)
{
    const char *path = "/v1/agents/a1", *body = "{\"id\":\"\",\"tools\":[\"a\",\"b\"],\"llm\":{\"model\":\"m\","
                                                "\"temperature\":0.5},\"labels\":{\"k\":\"v\"}}";
    const az_route *r;
    az_httprule_binding b[AZ_HTTPRULE_MAX_VARS];
    size_t nb;
    CU_ASSERT_EQUAL_FATAL(az_routes_match(table, "PATCH", path, strlen(path), &r, b,
                                          AZ_HTTPRULE_MAX_VARS, &nb, NULL, 0),
                          AZ_ROUTE_FOUND);
    az_query_param q[] = {{"updateMask", 10, "tools,llm.model", 15}};
    counting c = {{count_alloc, count_free, NULL}, 0, -1};
    c.pc.allocator_data = &c;
    char msg[AZ_MSG_MAX];
    ProtobufCMessage *m = NULL;
    CU_ASSERT_EQUAL(az_transcode_request(r, b, nb, q, 1, body, strlen(body), &c.pc, &m, msg), AZ_OK);
    CU_ASSERT_TRUE(c.live > 5);
    protobuf_c_message_free_unpacked(m, &c.pc);
    CU_ASSERT_EQUAL(c.live, 0);

    /* every allocation failing in turn: AZ_ERR_NOMEM and nothing left behind, until it works */
    for (long budget = 0;; budget++) {
        c.live = 0;
        c.budget = budget;
        m = (ProtobufCMessage *)1;
        az_err err = az_transcode_request(r, b, nb, q, 1, body, strlen(body), &c.pc, &m, msg);
        if (err == AZ_OK) {
            protobuf_c_message_free_unpacked(m, &c.pc);
            CU_ASSERT_EQUAL(c.live, 0);
            CU_ASSERT_TRUE(budget > 5);
            break;
        }
        CU_ASSERT_EQUAL(err, AZ_ERR_NOMEM);
        CU_ASSERT_PTR_NULL(m);
        CU_ASSERT_EQUAL(c.live, 0);
        if (budget > 1000) break;
    }

    /* an error late in the request frees what the body and query made */
    c.budget = -1;
    c.live = 0;
    const char *conflict = "{\"id\":\"zz\",\"tools\":[\"a\"]}";
    CU_ASSERT_EQUAL(az_transcode_request(r, b, nb, q, 1, conflict, strlen(conflict), &c.pc, &m, msg),
                    AZ_ERR_INVALID);
    CU_ASSERT_EQUAL(c.live, 0);
    az_query_param rq[] = {{"rTs", 3, "2026-01-01T00:00:00Z", 20}, {"rTs", 3, "bad", 3}};
    CU_ASSERT_EQUAL(az_transcode_request(&all_get, NULL, 0, rq, 2, NULL, 0, &c.pc, &m, msg),
                    AZ_ERR_INVALID);
    CU_ASSERT_EQUAL(c.live, 0);
}

static void test_bad_arguments(void)
{
    char msg[AZ_MSG_MAX];
    ProtobufCMessage *m = (ProtobufCMessage *)1;
    CU_ASSERT_EQUAL(az_transcode_request(NULL, NULL, 0, NULL, 0, NULL, 0, NULL, &m, msg),
                    AZ_ERR_INTERNAL);
    CU_ASSERT_PTR_NULL(m);
    CU_ASSERT_EQUAL(az_transcode_request(&all_get, NULL, 0, NULL, 0, NULL, 3, NULL, &m, msg),
                    AZ_ERR_INTERNAL);
    CU_ASSERT_EQUAL(az_transcode_request(&all_get, NULL, 1, NULL, 0, NULL, 0, NULL, &m, msg),
                    AZ_ERR_INTERNAL);
    CU_ASSERT_EQUAL(az_transcode_request(&all_get, NULL, 0, NULL, 0, NULL, 0, NULL, NULL, msg),
                    AZ_ERR_INTERNAL);
    /* a binding that is not a field of the request is the caller's bug */
    az_httprule_binding wrong = {"nope", "x", 1};
    CU_ASSERT_EQUAL(az_transcode_request(&all_get, &wrong, 1, NULL, 0, NULL, 0, NULL, &m, msg),
                    AZ_ERR_INTERNAL);
    CU_ASSERT_PTR_NULL(m);
}

/* ---- responses, status codes, error bodies ---- */

static void test_response(void)
{
    const az_route *r;
    az_httprule_binding b[AZ_HTTPRULE_MAX_VARS];
    size_t nb;
    CU_ASSERT_EQUAL_FATAL(az_routes_match(table, "GET", "/v1/agents/a1", 13, &r, b,
                                          AZ_HTTPRULE_MAX_VARS, &nb, NULL, 0),
                          AZ_ROUTE_FOUND);
    Agentz__V1__Agent a = AGENTZ__V1__AGENT__INIT;
    a.id = "a1";
    a.max_iter = 3;
    char *out = (char *)1, msg[AZ_MSG_MAX];
    size_t len = 99;
    CU_ASSERT_EQUAL(az_transcode_response(r, &a.base, &out, &len, msg), AZ_OK);
    CU_ASSERT_STRING_EQUAL(out ? out : "", "{\"id\":\"a1\",\"maxIter\":3}");
    CU_ASSERT_EQUAL(len, out ? strlen(out) : 0);
    free(out);

    a.name = "\xff";
    CU_ASSERT_EQUAL(az_transcode_response(r, &a.base, &out, &len, msg), AZ_ERR_INVALID);
    CU_ASSERT_PTR_NULL(out);
    CU_ASSERT_STRING_EQUAL(msg, "agent.name: string is not valid UTF-8");

    /* the wrong message type is the caller's bug */
    Agentz__V1__Task t = AGENTZ__V1__TASK__INIT;
    CU_ASSERT_EQUAL(az_transcode_response(r, &t.base, &out, &len, msg), AZ_ERR_INTERNAL);
    CU_ASSERT_PTR_NULL(out);

    /* response_body: only that field */
    Agentz__V1__AgentMetrics am = AGENTZ__V1__AGENT_METRICS__INIT;
    Agentz__V1__TokenUsage u = AGENTZ__V1__TOKEN_USAGE__INIT;
    u.total_tokens = 12;
    am.agent_id = "a1";
    am.usage = &u;
    CU_ASSERT_EQUAL(az_transcode_response(&usage_get, &am.base, &out, &len, msg), AZ_OK);
    CU_ASSERT_STRING_EQUAL(out ? out : "", "{\"totalTokens\":\"12\"}");
    free(out);
    am.usage = NULL;
    CU_ASSERT_EQUAL(az_transcode_response(&usage_get, &am.base, &out, &len, msg), AZ_OK);
    CU_ASSERT_STRING_EQUAL(out ? out : "", "{}");
    free(out);
    CU_ASSERT_EQUAL(az_transcode_response(NULL, &am.base, &out, &len, msg), AZ_ERR_INTERNAL);
}

static void test_http_status(void)
{
    static const int want[] = {200, 499, 500, 400, 504, 404, 409, 403, 429,
                               400, 409, 400, 501, 500, 503, 500, 401};
    for (int code = 0; code < (int)(sizeof want / sizeof want[0]); code++)
        CU_ASSERT_EQUAL(az_transcode_http_status(code), want[code]);
    CU_ASSERT_EQUAL(az_transcode_http_status(-1), 500);
    CU_ASSERT_EQUAL(az_transcode_http_status(17), 500);
    CU_ASSERT_EQUAL(az_transcode_http_status(1000), 500);
}

/* The status body parses as JSON and carries code, message (as want) and empty details. */
static void check_status(int code, const char *message, const char *want_text, const char *want_msg)
{
    char *out = NULL;
    size_t len = 0;
    CU_ASSERT_EQUAL_FATAL(az_transcode_status_json(code, message, &out, &len), AZ_OK);
    CU_ASSERT_EQUAL(len, strlen(out));
    if (want_text) CU_ASSERT_STRING_EQUAL(out, want_text);
    json_error_t jerr;
    json_t *j = json_loadb(out, len, 0, &jerr);
    CU_ASSERT_PTR_NOT_NULL(j);
    CU_ASSERT_EQUAL(json_integer_value(json_object_get(j, "code")), code);
    const char *m = json_string_value(json_object_get(j, "message"));
    CU_ASSERT_TRUE(m && strcmp(m, want_msg) == 0);
    CU_ASSERT_TRUE(json_is_array(json_object_get(j, "details")) &&
                   json_array_size(json_object_get(j, "details")) == 0);
    json_decref(j);
    free(out);
}

static void test_status_json(void)
{
    check_status(5, "agent a1 not found", "{\"code\":5,\"message\":\"agent a1 not found\",\"details\":[]}",
                 "agent a1 not found");
    check_status(13, NULL, "{\"code\":13,\"message\":\"\",\"details\":[]}", "");
    check_status(3, "say \"hi\" \\ now\n\t\x01", "{\"code\":3,\"message\":\"say \\\"hi\\\" \\\\ now\\n\\t\\u0001\",\"details\":[]}",
                 "say \"hi\" \\ now\n\t\x01");
    check_status(3, "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80", NULL, "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80");
    /* invalid UTF-8 becomes U+FFFD, one per bad byte */
    check_status(3, "a\xff" "b", "{\"code\":3,\"message\":\"a\xef\xbf\xbd" "b\",\"details\":[]}",
                 "a\xef\xbf\xbd" "b");
    check_status(3, "x\xe2\x82", NULL, "x\xef\xbf\xbd\xef\xbf\xbd");
    check_status(3, "\xc0\xaf", NULL, "\xef\xbf\xbd\xef\xbf\xbd");             /* overlong */
    check_status(3, "\xed\xa0\x80", NULL, "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"); /* surrogate */
    check_status(3, "\xf4\x90\x80\x80", NULL,
                 "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"); /* above U+10FFFF */
    check_status(-7, "neg", "{\"code\":-7,\"message\":\"neg\",\"details\":[]}", "neg");
    char *out;
    size_t len;
    CU_ASSERT_EQUAL(az_transcode_status_json(1, "x", NULL, &len), AZ_ERR_INTERNAL);
    CU_ASSERT_EQUAL(az_transcode_status_json(1, "x", &out, NULL), AZ_ERR_INTERNAL);
}

/* ---- the pbjson entry points the transcoder is built on ---- */

static void test_pbjson_entry_points(void)
{
    const ProtobufCMessageDescriptor *all = &aztest__all__descriptor;
    const ProtobufCFieldDescriptor *labels = protobuf_c_message_descriptor_get_field_by_name(all, "labels"),
                                   *r_inner = protobuf_c_message_descriptor_get_field_by_name(all, "r_inner"),
                                   *val = protobuf_c_message_descriptor_get_field_by_name(all, "val"),
                                   *ts = protobuf_c_message_descriptor_get_field_by_name(all, "ts"),
                                   *r_int32 = protobuf_c_message_descriptor_get_field_by_name(all, "r_int32");
    CU_ASSERT_EQUAL(az_pbjson_is_map(all, labels), 1);
    CU_ASSERT_EQUAL(az_pbjson_is_map(all, r_inner), 0);
    CU_ASSERT_EQUAL(az_pbjson_is_map(all, ts), 0);
    CU_ASSERT_EQUAL(az_pbjson_is_map(NULL, labels), 0);

    char msg[AZ_MSG_MAX];
    json_t *null = json_null(), *text = json_string("2026-01-01T00:00:00Z"), *obj = json_object();
    ProtobufCMessage *m = (ProtobufCMessage *)1;
    CU_ASSERT_EQUAL(az_pbjson_decode_value(ts, null, &m, NULL, NULL, msg), AZ_ERR_INVALID);
    CU_ASSERT_STRING_EQUAL(msg, "ts: null is not a value here");
    m = NULL;
    CU_ASSERT_EQUAL(az_pbjson_decode_value(val, null, &m, "v", NULL, msg), AZ_OK); /* a Value can be null */
    CU_ASSERT_PTR_NOT_NULL(m);
    protobuf_c_message_free_unpacked(m, NULL);
    CU_ASSERT_EQUAL(az_pbjson_decode_value(ts, obj, &m, "root x", NULL, msg), AZ_ERR_INVALID);
    CU_ASSERT_STRING_EQUAL(msg, "root x: expected RFC 3339 timestamp string, got object");
    m = NULL;
    CU_ASSERT_EQUAL(az_pbjson_decode_value(ts, text, &m, NULL, NULL, msg), AZ_OK);
    CU_ASSERT_PTR_NOT_NULL(m);
    protobuf_c_message_free_unpacked(m, NULL);
    CU_ASSERT_EQUAL(az_pbjson_decode_value(NULL, text, &m, NULL, NULL, msg), AZ_ERR_INTERNAL);

    /* decode_tree: the caller's tree, the given root or the short name */
    json_object_set_new(obj, "nope", json_true());
    CU_ASSERT_EQUAL(az_pbjson_decode_tree(all, obj, NULL, NULL, &m, msg), AZ_ERR_INVALID);
    CU_ASSERT_PTR_NULL(m);
    CU_ASSERT_STRING_EQUAL(msg, "all.nope: unknown field");
    CU_ASSERT_EQUAL(az_pbjson_decode_tree(all, obj, "body", NULL, &m, msg), AZ_ERR_INVALID);
    CU_ASSERT_STRING_EQUAL(msg, "body.nope: unknown field");
    CU_ASSERT_EQUAL(json_object_size(obj), 1); /* not consumed */
    CU_ASSERT_EQUAL(az_pbjson_decode_tree(all, NULL, NULL, NULL, &m, msg), AZ_ERR_INTERNAL);
    json_decref(null);
    json_decref(text);
    json_decref(obj);

    /* encode_field: set or not */
    Aztest__All a = AZTEST__ALL__INIT;
    char *out = NULL;
    const ProtobufCFieldDescriptor *inner = protobuf_c_message_descriptor_get_field_by_name(all, "inner");
    CU_ASSERT_EQUAL(az_pbjson_encode_field(&a.base, inner, 0, &out, msg), AZ_OK);
    CU_ASSERT_STRING_EQUAL(out ? out : "", "{}"); /* an unset message as the empty one */
    free(out);
    CU_ASSERT_EQUAL(az_pbjson_encode_field(&a.base, ts, 0, &out, msg), AZ_OK);
    CU_ASSERT_STRING_EQUAL(out ? out : "", "\"1970-01-01T00:00:00Z\"");
    free(out);
    CU_ASSERT_EQUAL(az_pbjson_encode_field(&a.base, r_int32, 0, &out, msg), AZ_OK);
    CU_ASSERT_STRING_EQUAL(out ? out : "", "[]");
    free(out);
    int32_t ints[] = {1, 2};
    a.n_r_int32 = 2;
    a.r_int32 = ints;
    CU_ASSERT_EQUAL(az_pbjson_encode_field(&a.base, r_int32, 0, &out, msg), AZ_OK);
    CU_ASSERT_STRING_EQUAL(out ? out : "", "[1,2]");
    free(out);
    CU_ASSERT_EQUAL(az_pbjson_encode_field(&a.base, labels, 0, &out, msg), AZ_OK);
    CU_ASSERT_STRING_EQUAL(out ? out : "", "{}");
    free(out);
    Aztest__Scalars sc = AZTEST__SCALARS__INIT;
    CU_ASSERT_EQUAL(az_pbjson_encode_field(&sc.base, ts, 0, &out, msg), AZ_ERR_INTERNAL);
    CU_ASSERT_PTR_NULL(out);
}

int main(void)
{
    if (CU_initialize_registry() != CUE_SUCCESS) return 2;
    CU_pSuite s = CU_add_suite("transcode", suite_init, suite_clean);
    static const struct {
        const char *name;
        CU_TestFunc fn;
    } tests[] = {
        {"query basics", test_query_basics},
        {"query kinds on real routes", test_query_kinds_real},
        {"query: every field kind", test_query_every_kind},
        {"query: messages", test_query_messages_real},
        {"limits", test_limits},
        {"body field", test_body_field},
        {"body *", test_body_star},
        {"no body", test_no_body},
        {"allocator", test_allocator},
        {"bad arguments", test_bad_arguments},
        {"response", test_response},
        {"http status", test_http_status},
        {"status json", test_status_json},
        {"pbjson entry points", test_pbjson_entry_points},
    };
    for (size_t i = 0; s && i < sizeof tests / sizeof tests[0]; i++)
        if (!CU_add_test(s, tests[i].name, tests[i].fn)) s = NULL;
    if (!s) {
        CU_cleanup_registry();
        return 2;
    }
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    unsigned failures = CU_get_number_of_failures();
    unsigned failed_suites = CU_get_run_summary()->nSuitesFailed;
    CU_cleanup_registry();
    return failures || failed_suites ? 1 : 0;
}
