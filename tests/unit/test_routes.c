/* CUnit suite for server/gateway/routes: the route table built from the real embedded descriptor
 * set and services (every annotated RPC, its order, 404 / 405 with Allow, HEAD), and every way a
 * descriptor set can be refused, on sets built here with exactly one defect each. */
#include <CUnit/Basic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agentz/v1/agent.pb-c.h"
#include "agentz/v1/system.pb-c.h"
#include "agentz/v1/task.pb-c.h"
#include "agentz/v1/workflow.pb-c.h"
#include "descriptor_set.h"
#include "gateway/routes.h"
#include "google/api/http.pb-c.h"
#include "google/protobuf/descriptor.pb-c.h"

static const ProtobufCServiceDescriptor *const services[] = {
    &agentz__v1__agent_service__descriptor,
    &agentz__v1__task_service__descriptor,
    &agentz__v1__workflow_service__descriptor,
    &agentz__v1__system_service__descriptor,
};
#define NSERVICES (sizeof services / sizeof services[0])

static az_routes *table;

static int suite_init(void)
{
    char msg[AZ_MSG_MAX] = "";
    az_err err = az_routes_new(az_descriptor_set, az_descriptor_set_len, services, NSERVICES,
                               &table, msg);
    if (err) fprintf(stderr, "az_routes_new: %s\n", msg);
    return err ? -1 : 0;
}

static int suite_clean(void)
{
    az_routes_free(table);
    return 0;
}

/* Every google.api.http binding of proto/agentz/v1, as written there. */
static const struct want {
    const char *http, *tmpl, *body, *method;
    size_t binding;
} wanted[] = {
    {"POST", "/v1/agents", "agent", "/agentz.v1.AgentService/CreateAgent", 0},
    {"GET", "/v1/agents/{id}", NULL, "/agentz.v1.AgentService/GetAgent", 0},
    {"GET", "/v1/agents", NULL, "/agentz.v1.AgentService/ListAgents", 0},
    {"PATCH", "/v1/agents/{agent.id}", "agent", "/agentz.v1.AgentService/UpdateAgent", 0},
    {"DELETE", "/v1/agents/{id}", NULL, "/agentz.v1.AgentService/DeleteAgent", 0},
    {"GET", "/v1/agents/{agent_id}/memory", NULL, "/agentz.v1.AgentService/GetAgentMemory", 0},
    {"POST", "/v1/agents/{agent_id}/memory:clear", "*", "/agentz.v1.AgentService/ClearAgentMemory", 0},
    {"GET", "/v1/agents/{agent_id}/metrics", NULL, "/agentz.v1.AgentService/GetAgentMetrics", 0},
    {"GET", "/v1/agents:watch", NULL, "/agentz.v1.AgentService/WatchAgents", 0},
    {"POST", "/v1/tasks", "task", "/agentz.v1.TaskService/CreateTask", 0},
    {"POST", "/v1/tasks:batchCreate", "*", "/agentz.v1.TaskService/CreateTasks", 0},
    {"GET", "/v1/tasks/{id}", NULL, "/agentz.v1.TaskService/GetTask", 0},
    {"GET", "/v1/tasks", NULL, "/agentz.v1.TaskService/ListTasks", 0},
    {"POST", "/v1/tasks/{id}:cancel", "*", "/agentz.v1.TaskService/CancelTask", 0},
    {"POST", "/v1/tasks/{id}:retry", "*", "/agentz.v1.TaskService/RetryTask", 0},
    {"GET", "/v1/tasks/{task_id}/attempts", NULL, "/agentz.v1.TaskService/ListTaskAttempts", 0},
    {"GET", "/v1/tasks:stats", NULL, "/agentz.v1.TaskService/GetTaskStats", 0},
    {"GET", "/v1/tasks/{task_id}:watch", NULL, "/agentz.v1.TaskService/WatchTask", 0},
    {"POST", "/v1/workflows", "workflow", "/agentz.v1.WorkflowService/CreateWorkflow", 0},
    {"GET", "/v1/workflows/{id}", NULL, "/agentz.v1.WorkflowService/GetWorkflow", 0},
    {"GET", "/v1/workflows", NULL, "/agentz.v1.WorkflowService/ListWorkflows", 0},
    {"PATCH", "/v1/workflows/{workflow.id}", "workflow", "/agentz.v1.WorkflowService/UpdateWorkflow", 0},
    {"DELETE", "/v1/workflows/{id}", NULL, "/agentz.v1.WorkflowService/DeleteWorkflow", 0},
    {"GET", "/v1/workflows/{id}/versions", NULL, "/agentz.v1.WorkflowService/ListWorkflowVersions", 0},
    {"GET", "/v1/templates", NULL, "/agentz.v1.WorkflowService/ListTemplates", 0},
    {"POST", "/v1/templates/{template_id}:instantiate", "*", "/agentz.v1.WorkflowService/InstantiateTemplate", 0},
    {"POST", "/v1/workflows/{workflow_id}:saveAsTemplate", "*", "/agentz.v1.WorkflowService/SaveAsTemplate", 0},
    {"POST", "/v1/workflows/{workflow_id}/runs", "*", "/agentz.v1.WorkflowService/StartRun", 0},
    {"GET", "/v1/runs/{id}", NULL, "/agentz.v1.WorkflowService/GetRun", 0},
    {"GET", "/v1/runs", NULL, "/agentz.v1.WorkflowService/ListRuns", 0},
    {"GET", "/v1/workflows/{workflow_id}/runs", NULL, "/agentz.v1.WorkflowService/ListRuns", 1},
    {"POST", "/v1/runs/{id}:cancel", "*", "/agentz.v1.WorkflowService/CancelRun", 0},
    {"POST", "/v1/runs/{id}:resume", "*", "/agentz.v1.WorkflowService/ResumeRun", 0},
    {"GET", "/v1/workflows/{workflow_id}/analytics", NULL, "/agentz.v1.WorkflowService/GetWorkflowAnalytics", 0},
    {"GET", "/v1/runs/{run_id}:watch", NULL, "/agentz.v1.WorkflowService/WatchRun", 0},
    {"GET", "/v1/metrics:stream", NULL, "/agentz.v1.SystemService/StreamMetrics", 0},
    {"GET", "/v1/auditLog", NULL, "/agentz.v1.SystemService/ListAuditLog", 0},
    {"POST", "/v1/apiKeys", "*", "/agentz.v1.SystemService/CreateApiKey", 0},
    {"GET", "/v1/apiKeys", NULL, "/agentz.v1.SystemService/ListApiKeys", 0},
    {"POST", "/v1/apiKeys/{id}:revoke", "*", "/agentz.v1.SystemService/RevokeApiKey", 0},
    {"GET", "/v1/whoami", NULL, "/agentz.v1.SystemService/WhoAmI", 0},
    {"POST", "/v1/secrets", "*", "/agentz.v1.SystemService/CreateSecret", 0},
    {"GET", "/v1/secrets", NULL, "/agentz.v1.SystemService/ListSecrets", 0},
    {"DELETE", "/v1/secrets/{name}", NULL, "/agentz.v1.SystemService/DeleteSecret", 0},
};
#define NWANTED (sizeof wanted / sizeof wanted[0])

static int same_str(const char *a, const char *b) { return (!a && !b) || (a && b && strcmp(a, b) == 0); }

/* ---- the real table ---- */

static void test_every_binding(void)
{
    CU_ASSERT_EQUAL_FATAL(az_routes_count(table), NWANTED);
    for (size_t w = 0; w < NWANTED; w++) {
        size_t found = 0;
        for (size_t i = 0; i < az_routes_count(table); i++) {
            const az_route *r = az_routes_at(table, i);
            if (strcmp(r->http_method, wanted[w].http) == 0 &&
                strcmp(az_httprule_template(r->rule), wanted[w].tmpl) == 0) {
                found++;
                CU_ASSERT_STRING_EQUAL(r->method->grpc_path, wanted[w].method);
                CU_ASSERT_TRUE(same_str(r->body, wanted[w].body));
                CU_ASSERT_PTR_NULL(r->response_body);
                CU_ASSERT_EQUAL(r->binding, wanted[w].binding);
            }
        }
        if (found != 1) fprintf(stderr, "\n%s %s: %zu routes\n", wanted[w].http, wanted[w].tmpl, found);
        CU_ASSERT_EQUAL(found, 1);
    }
    CU_ASSERT_PTR_NULL(az_routes_at(table, NWANTED));
}

static void test_methods(void)
{
    size_t total = 0;
    for (size_t s = 0; s < NSERVICES; s++) total += services[s]->n_methods;
    CU_ASSERT_EQUAL_FATAL(az_routes_method_count(table), total);
    size_t i = 0;
    for (size_t s = 0; s < NSERVICES; s++) {
        for (unsigned k = 0; k < services[s]->n_methods; k++, i++) {
            const az_route_method *m = az_routes_method_at(table, i);
            const ProtobufCMethodDescriptor *md = &services[s]->methods[k];
            char path[256];
            snprintf(path, sizeof path, "/%s/%s", services[s]->name, md->name);
            CU_ASSERT_STRING_EQUAL(m->grpc_path, path);
            CU_ASSERT_STRING_EQUAL(m->service, services[s]->name);
            CU_ASSERT_STRING_EQUAL(m->name, md->name);
            CU_ASSERT_PTR_EQUAL(m->input, md->input);
            CU_ASSERT_PTR_EQUAL(m->output, md->output);
            CU_ASSERT_FALSE(m->client_streaming);
            int streams = strncmp(md->name, "Watch", 5) == 0 || strcmp(md->name, "StreamMetrics") == 0;
            CU_ASSERT_EQUAL(m->server_streaming, streams);
            CU_ASSERT_PTR_EQUAL(az_routes_find_method(table, path, strlen(path)), m);
            /* every method of the four services is annotated */
            size_t routes = 0;
            for (size_t r = 0; r < az_routes_count(table); r++)
                routes += az_routes_at(table, r)->method == m;
            CU_ASSERT_TRUE(routes >= 1);
        }
    }
    CU_ASSERT_PTR_NULL(az_routes_method_at(table, total));

    const char *p = "/agentz.v1.AgentService/GetAgent";
    CU_ASSERT_PTR_NULL(az_routes_find_method(table, p, strlen(p) - 1)); /* a prefix */
    CU_ASSERT_PTR_NULL(az_routes_find_method(table, "/agentz.v1.AgentService/GetAgents", 33));
    CU_ASSERT_PTR_NULL(az_routes_find_method(table, "/agentz.v1.AgentService/GetAgent\0x", 34));
    CU_ASSERT_PTR_NULL(az_routes_find_method(table, "", 0));
    char buf[64]; /* not NUL-terminated at len */
    memcpy(buf, "/agentz.v1.TaskService/GetTaskXYZ", 34);
    const az_route_method *m = az_routes_find_method(table, buf, strlen("/agentz.v1.TaskService/GetTask"));
    CU_ASSERT_TRUE(m && strcmp(m->name, "GetTask") == 0);
    CU_ASSERT_PTR_NULL(az_routes_find_method(NULL, p, strlen(p)));
}

static void test_order(void)
{
    for (size_t i = 1; i < az_routes_count(table); i++) {
        const az_route *a = az_routes_at(table, i - 1), *b = az_routes_at(table, i);
        CU_ASSERT_TRUE(az_httprule_compare(a->rule, b->rule) <= 0);
    }
}

/* Routes method+path and checks the method and bindings ("field=value" pairs). */
static void check_found(const char *http, const char *path, const char *grpc, size_t nb_want,
                        const char *f0, const char *v0)
{
    const az_route *r = NULL;
    az_httprule_binding b[AZ_HTTPRULE_MAX_VARS];
    size_t nb = 99;
    char allow[64] = "x";
    az_route_result res = az_routes_match(table, http, path, strlen(path), &r, b,
                                          AZ_HTTPRULE_MAX_VARS, &nb, allow, sizeof allow);
    if (res != AZ_ROUTE_FOUND) fprintf(stderr, "\n%s %s: result %d\n", http, path, res);
    CU_ASSERT_EQUAL_FATAL(res, AZ_ROUTE_FOUND);
    CU_ASSERT_STRING_EQUAL(r->method->grpc_path, grpc);
    CU_ASSERT_EQUAL(nb, nb_want);
    if (nb_want && nb >= 1) {
        CU_ASSERT_STRING_EQUAL(b[0].field, f0);
        CU_ASSERT_TRUE(b[0].len == strlen(v0) && memcmp(b[0].value, v0, b[0].len) == 0);
        CU_ASSERT_TRUE(b[0].value >= path && b[0].value + b[0].len <= path + strlen(path));
    }
}

static void check_result(const char *http, const char *path, az_route_result want,
                         const char *allow_want)
{
    const az_route *r = NULL;
    az_httprule_binding b[AZ_HTTPRULE_MAX_VARS];
    size_t nb = 0;
    char allow[64] = "junk";
    az_route_result res = az_routes_match(table, http, path, strlen(path), &r, b,
                                          AZ_HTTPRULE_MAX_VARS, &nb, allow, sizeof allow);
    CU_ASSERT_EQUAL(res, want);
    if (strcmp(allow, allow_want) != 0)
        fprintf(stderr, "\n%s %s: Allow \"%s\", want \"%s\"\n", http, path, allow, allow_want);
    CU_ASSERT_STRING_EQUAL(allow, allow_want);
}

static void test_match(void)
{
    check_found("GET", "/v1/agents:watch", "/agentz.v1.AgentService/WatchAgents", 0, NULL, NULL);
    check_found("GET", "/v1/agents/a1", "/agentz.v1.AgentService/GetAgent", 1, "id", "a1");
    check_found("PATCH", "/v1/agents/a1", "/agentz.v1.AgentService/UpdateAgent", 1, "agent.id", "a1");
    check_found("DELETE", "/v1/agents/a1", "/agentz.v1.AgentService/DeleteAgent", 1, "id", "a1");
    check_found("GET", "/v1/agents", "/agentz.v1.AgentService/ListAgents", 0, NULL, NULL);
    check_found("POST", "/v1/agents", "/agentz.v1.AgentService/CreateAgent", 0, NULL, NULL);
    check_found("GET", "/v1/agents/a1/memory", "/agentz.v1.AgentService/GetAgentMemory", 1, "agent_id", "a1");
    check_found("POST", "/v1/agents/a1/memory:clear", "/agentz.v1.AgentService/ClearAgentMemory", 1, "agent_id", "a1");
    check_found("POST", "/v1/tasks/t1:cancel", "/agentz.v1.TaskService/CancelTask", 1, "id", "t1");
    check_found("POST", "/v1/tasks/t1:retry", "/agentz.v1.TaskService/RetryTask", 1, "id", "t1");
    check_found("GET", "/v1/tasks:stats", "/agentz.v1.TaskService/GetTaskStats", 0, NULL, NULL);
    check_found("GET", "/v1/tasks/t1:watch", "/agentz.v1.TaskService/WatchTask", 1, "task_id", "t1");
    /* GET has no ":cancel" binding, so the whole segment is the id (and the server says so) */
    check_found("GET", "/v1/tasks/t1:cancel", "/agentz.v1.TaskService/GetTask", 1, "id", "t1:cancel");
    check_found("GET", "/v1/runs", "/agentz.v1.WorkflowService/ListRuns", 0, NULL, NULL);
    check_found("GET", "/v1/workflows/w1/runs", "/agentz.v1.WorkflowService/ListRuns", 1, "workflow_id", "w1");
    check_found("POST", "/v1/workflows/w1/runs", "/agentz.v1.WorkflowService/StartRun", 1, "workflow_id", "w1");
    check_found("POST", "/v1/workflows/w1:saveAsTemplate", "/agentz.v1.WorkflowService/SaveAsTemplate", 1, "workflow_id", "w1");
    check_found("GET", "/v1/runs/r1:watch", "/agentz.v1.WorkflowService/WatchRun", 1, "run_id", "r1");
    check_found("GET", "/v1/metrics:stream", "/agentz.v1.SystemService/StreamMetrics", 0, NULL, NULL);
    check_found("DELETE", "/v1/secrets/openai.key", "/agentz.v1.SystemService/DeleteSecret", 1, "name", "openai.key");
    /* HEAD is served by the GET route */
    check_found("HEAD", "/v1/agents/a1", "/agentz.v1.AgentService/GetAgent", 1, "id", "a1");
    check_found("HEAD", "/v1/whoami", "/agentz.v1.SystemService/WhoAmI", 0, NULL, NULL);
}

static void test_not_found_and_bad_method(void)
{
    check_result("GET", "/v1/nothing", AZ_ROUTE_NO_PATH, "");
    check_result("GET", "/v1/agents/a1/nothing", AZ_ROUTE_NO_PATH, "");
    check_result("GET", "/v1/agents/", AZ_ROUTE_NO_PATH, "");
    check_result("GET", "/v1/agents//memory", AZ_ROUTE_NO_PATH, "");
    check_result("GET", "/v1/agents:unwatch", AZ_ROUTE_NO_PATH, "");
    check_result("GET", "/v2/agents", AZ_ROUTE_NO_PATH, "");
    check_result("GET", "/", AZ_ROUTE_NO_PATH, "");
    check_result("GET", "", AZ_ROUTE_NO_PATH, "");
    check_result("POST", "/v1/nothing", AZ_ROUTE_NO_PATH, "");

    check_result("POST", "/v1/agents/a1", AZ_ROUTE_BAD_METHOD, "GET, PATCH, DELETE");
    check_result("PUT", "/v1/agents", AZ_ROUTE_BAD_METHOD, "GET, POST");
    check_result("OPTIONS", "/v1/agents", AZ_ROUTE_BAD_METHOD, "GET, POST");
    check_result("get", "/v1/agents", AZ_ROUTE_BAD_METHOD, "GET, POST"); /* methods are case-sensitive */
    check_result("GET", "/v1/tasks/t1:retry", AZ_ROUTE_FOUND, ""); /* GetTask, id "t1:retry" */
    check_result("DELETE", "/v1/tasks/t1:retry", AZ_ROUTE_BAD_METHOD, "GET, POST");
    check_result("GET", "/v1/agents/a1/memory:clear", AZ_ROUTE_BAD_METHOD, "POST");
    check_result("HEAD", "/v1/apiKeys/k1:revoke", AZ_ROUTE_BAD_METHOD, "POST");
    check_result("DELETE", "/v1/workflows/w1/runs", AZ_ROUTE_BAD_METHOD, "GET, POST");

    /* a small Allow buffer keeps whole names only */
    const az_route *r;
    az_httprule_binding b[AZ_HTTPRULE_MAX_VARS];
    size_t nb;
    char allow[16];
    const char *p = "/v1/agents/a1";
    CU_ASSERT_EQUAL(az_routes_match(table, "POST", p, strlen(p), &r, b, AZ_HTTPRULE_MAX_VARS, &nb,
                                    allow, 11),
                    AZ_ROUTE_BAD_METHOD);
    CU_ASSERT_STRING_EQUAL(allow, "GET, PATCH");
    CU_ASSERT_EQUAL(az_routes_match(table, "POST", p, strlen(p), &r, b, AZ_HTTPRULE_MAX_VARS, &nb,
                                    allow, 10),
                    AZ_ROUTE_BAD_METHOD);
    CU_ASSERT_STRING_EQUAL(allow, "GET");
    CU_ASSERT_EQUAL(az_routes_match(table, "POST", p, strlen(p), &r, b, AZ_HTTPRULE_MAX_VARS, &nb,
                                    allow, 3),
                    AZ_ROUTE_BAD_METHOD);
    CU_ASSERT_STRING_EQUAL(allow, "");
    CU_ASSERT_EQUAL(az_routes_match(table, "POST", p, strlen(p), &r, b, AZ_HTTPRULE_MAX_VARS, &nb,
                                    NULL, 0),
                    AZ_ROUTE_BAD_METHOD);
    /* fewer binding slots than the template has variables: that route cannot match */
    CU_ASSERT_EQUAL(az_routes_match(table, "GET", p, strlen(p), &r, b, 0, &nb, allow, sizeof allow),
                    AZ_ROUTE_NO_PATH);
    CU_ASSERT_EQUAL(az_routes_match(NULL, "GET", p, strlen(p), &r, b, 1, &nb, allow, sizeof allow),
                    AZ_ROUTE_NO_PATH);
}

/* ---- refused descriptor sets: the real services over a set built here ---- */

typedef struct rule_for {
    const char *method;     /* method of AgentService that carries it */
    Google__Api__HttpRule *rule;
    uint32_t wire_type;     /* of the unknown field; 0 (varint, never used) means length-prefixed */
    const char *raw;        /* bytes to store instead of the packed rule */
} rule_for;

/* Packs a FileDescriptorSet with one file declaring agentz.v1.AgentService as protobuf-c knows
 * it (every method, its real types), the given rules attached; skip leaves out a method,
 * input_of replaces the input type of one. */
static uint8_t *make_set(const rule_for *rules, size_t nrules, const char *skip,
                         const char *input_of, const char *input, size_t *len)
{
    const ProtobufCServiceDescriptor *sd = &agentz__v1__agent_service__descriptor;
    Google__Protobuf__FileDescriptorSet set = GOOGLE__PROTOBUF__FILE_DESCRIPTOR_SET__INIT;
    Google__Protobuf__FileDescriptorProto file = GOOGLE__PROTOBUF__FILE_DESCRIPTOR_PROTO__INIT;
    Google__Protobuf__FileDescriptorProto *files[] = {&file};
    Google__Protobuf__ServiceDescriptorProto svc = GOOGLE__PROTOBUF__SERVICE_DESCRIPTOR_PROTO__INIT;
    Google__Protobuf__ServiceDescriptorProto *svcs[] = {&svc};
    Google__Protobuf__MethodDescriptorProto mp[32], *mps[32];
    Google__Protobuf__MethodOptions opts[32];
    ProtobufCMessageUnknownField uf[32];
    uint8_t data[32][512];
    char types[32][2][128];
    file.name = "t.proto";
    file.package = "agentz.v1";
    file.n_service = 1;
    file.service = svcs;
    svc.name = "AgentService";
    set.n_file = 1;
    set.file = files;
    size_t n = 0;
    for (unsigned i = 0; i < sd->n_methods && n < 32; i++) {
        const ProtobufCMethodDescriptor *md = &sd->methods[i];
        if (skip && strcmp(skip, md->name) == 0) continue;
        google__protobuf__method_descriptor_proto__init(&mp[n]);
        mp[n].name = (char *)md->name;
        snprintf(types[n][0], sizeof types[n][0], ".%s",
                 input_of && strcmp(input_of, md->name) == 0 ? input : md->input->name);
        snprintf(types[n][1], sizeof types[n][1], ".%s", md->output->name);
        mp[n].input_type = types[n][0];
        mp[n].output_type = types[n][1];
        for (size_t k = 0; k < nrules; k++) {
            if (strcmp(rules[k].method, md->name) != 0) continue;
            google__protobuf__method_options__init(&opts[n]);
            ProtobufCWireType wt =
                rules[k].wire_type ? rules[k].wire_type : PROTOBUF_C_WIRE_TYPE_LENGTH_PREFIXED;
            size_t body = rules[k].raw ? strlen(rules[k].raw)
                                       : google__api__http_rule__get_packed_size(rules[k].rule);
            /* protobuf-c stores a length-prefixed field with its prefix (one byte: every rule
             * here is shorter than 128 bytes), any other as its bare bytes */
            size_t pre = wt == PROTOBUF_C_WIRE_TYPE_LENGTH_PREFIXED;
            data[n][0] = (uint8_t)body;
            if (rules[k].raw)
                memcpy(data[n] + pre, rules[k].raw, body);
            else
                google__api__http_rule__pack(rules[k].rule, data[n] + pre);
            uf[n] = (ProtobufCMessageUnknownField){72295728, wt, body + pre, data[n]};
            opts[n].base.n_unknown_fields = 1;
            opts[n].base.unknown_fields = &uf[n];
            mp[n].options = &opts[n];
        }
        mps[n] = &mp[n];
        n++;
    }
    svc.n_method = n;
    svc.method = mps;
    *len = google__protobuf__file_descriptor_set__get_packed_size(&set);
    uint8_t *out = malloc(*len);
    if (out) google__protobuf__file_descriptor_set__pack(&set, out);
    return out;
}

static void check_refused(const rule_for *rules, size_t nrules, const char *skip,
                          const char *input_of, const char *input, const char *want)
{
    size_t len = 0;
    uint8_t *set = make_set(rules, nrules, skip, input_of, input, &len);
    CU_ASSERT_PTR_NOT_NULL_FATAL(set);
    const ProtobufCServiceDescriptor *svc[] = {&agentz__v1__agent_service__descriptor};
    az_routes *t = (az_routes *)1;
    char msg[AZ_MSG_MAX] = "";
    CU_ASSERT_EQUAL(az_routes_new(set, len, svc, 1, &t, msg), AZ_ERR_INVALID);
    CU_ASSERT_PTR_NULL(t);
    if (strcmp(msg, want) != 0) fprintf(stderr, "\n got: %s\nwant: %s\n", msg, want);
    CU_ASSERT_STRING_EQUAL(msg, want);
    free(set);
}

static Google__Api__HttpRule get_rule(const char *tmpl)
{
    Google__Api__HttpRule r = GOOGLE__API__HTTP_RULE__INIT;
    r.pattern_case = GOOGLE__API__HTTP_RULE__PATTERN_GET;
    r.get = (char *)tmpl;
    return r;
}

static void test_built_set_accepted(void)
{
    /* the builder itself makes acceptable sets: a value-type path variable, a response_body */
    Google__Api__HttpRule r = get_rule("/v1/x/{agent_id}/{start_time}");
    r.response_body = "usage";
    Google__Api__HttpRule extra = get_rule("/v1/y/{agent_id}");
    Google__Api__HttpRule *extras[] = {&extra};
    r.n_additional_bindings = 1;
    r.additional_bindings = extras;
    rule_for rules[] = {{"GetAgentMetrics", &r, 0, NULL}};
    size_t len = 0;
    uint8_t *set = make_set(rules, 1, NULL, NULL, NULL, &len);
    const ProtobufCServiceDescriptor *svc[] = {&agentz__v1__agent_service__descriptor};
    az_routes *t = NULL;
    char msg[AZ_MSG_MAX] = "";
    CU_ASSERT_EQUAL(az_routes_new(set, len, svc, 1, &t, msg), AZ_OK);
    CU_ASSERT_EQUAL(az_routes_count(t), 2);
    CU_ASSERT_EQUAL(az_routes_method_count(t), agentz__v1__agent_service__descriptor.n_methods);
    const az_route *a = az_routes_at(t, 0), *b = az_routes_at(t, 1);
    CU_ASSERT_TRUE(a && b && a->binding + b->binding == 1);
    if (a && b) {
        const az_route *main = a->binding == 0 ? a : b;
        CU_ASSERT_STRING_EQUAL(main->response_body, "usage");
        CU_ASSERT_STRING_EQUAL(az_httprule_template(main->rule), "/v1/x/{agent_id}/{start_time}");
    }
    az_routes_free(t);
    free(set);
    az_routes_free(NULL);
}

static void test_refused(void)
{
    char want[AZ_MSG_MAX];

    Google__Api__HttpRule r = get_rule("/v1/{id");
    rule_for one = {"GetAgent", &r, 0, NULL};
    check_refused(&one, 1, NULL, NULL, NULL,
                  "/agentz.v1.AgentService/GetAgent: template /v1/{id: '}' expected at 7");

    r = get_rule("/v1/x/{nope}");
    check_refused(&one, 1, NULL, NULL, NULL,
                  "/agentz.v1.AgentService/GetAgent: path variable nope: "
                  "agentz.v1.GetAgentRequest has no field nope");
    r = get_rule("/v1/x/{id.x}");
    check_refused(&one, 1, NULL, NULL, NULL,
                  "/agentz.v1.AgentService/GetAgent: path variable id.x: id has no fields");

    rule_for upd = {"UpdateAgent", &r, 0, NULL};
    r = get_rule("/v1/x/{agent}");
    check_refused(&upd, 1, NULL, NULL, NULL,
                  "/agentz.v1.AgentService/UpdateAgent: path variable agent: is a message");
    r = get_rule("/v1/x/{agent.tools}");
    check_refused(&upd, 1, NULL, NULL, NULL,
                  "/agentz.v1.AgentService/UpdateAgent: path variable agent.tools: agent.tools "
                  "is repeated");
    r = get_rule("/v1/x/{agent.labels}");
    check_refused(&upd, 1, NULL, NULL, NULL,
                  "/agentz.v1.AgentService/UpdateAgent: path variable agent.labels: agent.labels "
                  "is repeated");
    r = get_rule("/v1/x/{agent.llm.temperature.value}");
    check_refused(&upd, 1, NULL, NULL, NULL,
                  "/agentz.v1.AgentService/UpdateAgent: path variable agent.llm.temperature.value: "
                  "agent.llm.temperature has no fields");
    r = get_rule("/v1/x/{agent.id}");
    r.body = "nope";
    check_refused(&upd, 1, NULL, NULL, NULL,
                  "/agentz.v1.AgentService/UpdateAgent: body field nope is not a field of "
                  "agentz.v1.UpdateAgentRequest");
    r.body = "agent";
    r.response_body = "nope";
    check_refused(&upd, 1, NULL, NULL, NULL,
                  "/agentz.v1.AgentService/UpdateAgent: response_body nope is not a field of "
                  "agentz.v1.Agent");

    r = get_rule("/v1/x");
    r.body = "id";
    check_refused(&one, 1, NULL, NULL, NULL,
                  "/agentz.v1.AgentService/GetAgent: body field id must be a singular message");

    Google__Api__CustomHttpPattern custom = GOOGLE__API__CUSTOM_HTTP_PATTERN__INIT;
    custom.kind = "HEAD";
    custom.path = "/v1/x";
    r = get_rule("/v1/x");
    r.pattern_case = GOOGLE__API__HTTP_RULE__PATTERN_CUSTOM;
    r.custom = &custom;
    check_refused(&one, 1, NULL, NULL, NULL,
                  "/agentz.v1.AgentService/GetAgent: custom HTTP method HEAD is not supported");

    Google__Api__HttpRule none = GOOGLE__API__HTTP_RULE__INIT;
    rule_for no_method = {"GetAgent", &none, 0, NULL};
    check_refused(&no_method, 1, NULL, NULL, NULL,
                  "/agentz.v1.AgentService/GetAgent: google.api.http binding without a method");

    /* additional bindings nest one level only */
    Google__Api__HttpRule inner = get_rule("/v1/c/{id}"), mid = get_rule("/v1/b/{id}");
    Google__Api__HttpRule *inners[] = {&inner}, *mids[] = {&mid};
    mid.n_additional_bindings = 1;
    mid.additional_bindings = inners;
    r = get_rule("/v1/a/{id}");
    r.n_additional_bindings = 1;
    r.additional_bindings = mids;
    check_refused(&one, 1, NULL, NULL, NULL,
                  "/agentz.v1.AgentService/GetAgent: additional_bindings may not nest");

    /* two methods on one HTTP method and path shape, whatever the variables are called */
    Google__Api__HttpRule a = get_rule("/v1/agents/{id}"), b = get_rule("/v1/agents/{agent_id}");
    rule_for two[] = {{"GetAgent", &a, 0, NULL}, {"GetAgentMemory", &b, 0, NULL}};
    check_refused(two, 2, NULL, NULL, NULL,
                  "GET /v1/agents/{agent_id} of /agentz.v1.AgentService/GetAgentMemory and GET "
                  "/v1/agents/{id} of /agentz.v1.AgentService/GetAgent collide");
    /* ... but another HTTP method on the same path is fine */
    b.pattern_case = GOOGLE__API__HTTP_RULE__PATTERN_DELETE;
    size_t len = 0;
    uint8_t *set = make_set(two, 2, NULL, NULL, NULL, &len);
    const ProtobufCServiceDescriptor *svc[] = {&agentz__v1__agent_service__descriptor};
    az_routes *t = NULL;
    char msg[AZ_MSG_MAX] = "";
    CU_ASSERT_EQUAL(az_routes_new(set, len, svc, 1, &t, msg), AZ_OK);
    CU_ASSERT_EQUAL(az_routes_count(t), 2);
    az_routes_free(t);
    free(set);

    /* the option's bytes */
    rule_for fixed32 = {"GetAgent", NULL, PROTOBUF_C_WIRE_TYPE_32BIT, "\x01\x02\x03\x04"};
    check_refused(&fixed32, 1, NULL, NULL, NULL,
                  "/agentz.v1.AgentService/GetAgent: malformed google.api.http option");
    rule_for junk = {"GetAgent", NULL, 0, "\xff\xff\xff"};
    check_refused(&junk, 1, NULL, NULL, NULL,
                  "/agentz.v1.AgentService/GetAgent: google.api.http option does not parse");

    /* the set disagrees with the compiled-in service */
    check_refused(NULL, 0, "WatchAgents", NULL, NULL,
                  "/agentz.v1.AgentService/WatchAgents is not in the descriptor set");
    snprintf(want, sizeof want,
             "/agentz.v1.AgentService/GetAgent: the descriptor set says .agentz.v1.Agent -> "
             ".agentz.v1.Agent, the service agentz.v1.GetAgentRequest -> agentz.v1.Agent");
    check_refused(NULL, 0, NULL, "GetAgent", "agentz.v1.Agent", want);
}

static void test_bad_sets(void)
{
    char msg[AZ_MSG_MAX] = "";
    az_routes *t = (az_routes *)1;
    const ProtobufCServiceDescriptor *svc[] = {&agentz__v1__agent_service__descriptor,
                                               &agentz__v1__agent_service__descriptor};
    static const uint8_t junk[] = {0x0a, 0xff, 0x01};
    CU_ASSERT_EQUAL(az_routes_new(junk, sizeof junk, svc, 1, &t, msg), AZ_ERR_INVALID);
    CU_ASSERT_PTR_NULL(t);
    CU_ASSERT_STRING_EQUAL(msg, "the descriptor set does not parse");

    t = (az_routes *)1;
    CU_ASSERT_EQUAL(az_routes_new(junk, 0, svc, 1, &t, msg), AZ_ERR_INVALID); /* an empty set */
    CU_ASSERT_PTR_NULL(t);
    CU_ASSERT_STRING_EQUAL(msg, "service agentz.v1.AgentService is not in the descriptor set");

    t = (az_routes *)1;
    CU_ASSERT_EQUAL(az_routes_new(az_descriptor_set, az_descriptor_set_len, svc, 2, &t, msg),
                    AZ_ERR_INVALID);
    CU_ASSERT_PTR_NULL(t);
    CU_ASSERT_STRING_EQUAL(msg, "/agentz.v1.AgentService/ClearAgentMemory is listed twice");

    const ProtobufCServiceDescriptor *null_svc[] = {NULL};
    CU_ASSERT_EQUAL(az_routes_new(az_descriptor_set, az_descriptor_set_len, null_svc, 1, &t, msg),
                    AZ_ERR_INVALID);
    CU_ASSERT_STRING_EQUAL(msg, "services[0] is not a service descriptor");
    CU_ASSERT_EQUAL(az_routes_new(NULL, 5, svc, 1, &t, msg), AZ_ERR_INTERNAL);
    CU_ASSERT_EQUAL(az_routes_new(az_descriptor_set, az_descriptor_set_len, svc, 1, NULL, msg),
                    AZ_ERR_INTERNAL);

    /* no services: an empty table, not an error */
    t = (az_routes *)1;
    CU_ASSERT_EQUAL(az_routes_new(az_descriptor_set, az_descriptor_set_len, NULL, 0, &t, msg), AZ_OK);
    CU_ASSERT_EQUAL(az_routes_count(t), 0);
    CU_ASSERT_EQUAL(az_routes_method_count(t), 0);
    const az_route *r;
    size_t nb;
    CU_ASSERT_EQUAL(az_routes_match(t, "GET", "/v1/agents", 10, &r, NULL, 0, &nb, NULL, 0),
                    AZ_ROUTE_NO_PATH);
    az_routes_free(t);
}

int main(void)
{
    if (CU_initialize_registry() != CUE_SUCCESS) return 2;
    CU_pSuite s = CU_add_suite("routes", suite_init, suite_clean);
    static const struct {
        const char *name;
        CU_TestFunc fn;
    } tests[] = {
        {"every google.api.http binding", test_every_binding},
        {"methods", test_methods},
        {"most specific first", test_order},
        {"match", test_match},
        {"404 and 405 with Allow", test_not_found_and_bad_method},
        {"built set accepted", test_built_set_accepted},
        {"refused bindings", test_refused},
        {"bad sets", test_bad_sets},
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
