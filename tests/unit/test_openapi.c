/* CUnit suite for server/gateway/openapi: the document built into the binary (from
 * gen/agentz-docs.desc) parses, describes every REST route of the real table, its $refs
 * resolve, its schemas follow the proto3 JSON mapping and carry the proto comments; and
 * az_openapi_build itself is deterministic and fails cleanly. */
#include <CUnit/Basic.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agentz/v1/agent.pb-c.h"
#include "agentz/v1/common.pb-c.h"
#include "agentz/v1/system.pb-c.h"
#include "agentz/v1/task.pb-c.h"
#include "agentz/v1/workflow.pb-c.h"
#include "descriptor_set.h"
#include "gateway/openapi.h"
#include "gateway/routes.h"

static const ProtobufCServiceDescriptor *const services[] = {
    &agentz__v1__agent_service__descriptor,
    &agentz__v1__task_service__descriptor,
    &agentz__v1__workflow_service__descriptor,
    &agentz__v1__system_service__descriptor,
};

static az_routes *table;
static json_t *doc; /* the embedded document */

static int suite_init(void)
{
    char msg[AZ_MSG_MAX] = "";
    if (az_routes_new(az_descriptor_set, az_descriptor_set_len, services,
                      sizeof services / sizeof services[0], &table, msg) != AZ_OK) {
        fprintf(stderr, "az_routes_new: %s\n", msg);
        return -1;
    }
    json_error_t jerr;
    doc = json_loadb(az_openapi_json, az_openapi_json_len, 0, &jerr);
    if (!doc) fprintf(stderr, "az_openapi_json: %s at line %d\n", jerr.text, jerr.line);
    return doc ? 0 : -1;
}

static int suite_clean(void)
{
    json_decref(doc);
    az_routes_free(table);
    return 0;
}

/* j at a '/'-separated path of object keys ("components/schemas/agentz.v1.Agent"); keys that
 * hold a '/' themselves ("/v1/agents", "application/json") go through json_object_get. */
static json_t *at(json_t *j, const char *path)
{
    char key[256];
    while (j && *path) {
        const char *slash = strchr(path, '/');
        size_t n = slash ? (size_t)(slash - path) : strlen(path);
        if (n >= sizeof key) return NULL;
        memcpy(key, path, n);
        key[n] = '\0';
        j = json_object_get(j, key);
        path = slash ? slash + 1 : path + n;
    }
    return j;
}

static const char *str_at(json_t *j, const char *path)
{
    const char *s = json_string_value(at(j, path));
    return s ? s : "";
}

/* "/v1/agents/{agent.id}" for a template (the document drops "=..." patterns; ours have none). */
static json_t *operation(json_t *d, const az_route *r)
{
    char method[8];
    size_t k = 0;
    for (; r->http_method[k] && k < 7; k++) method[k] = (char)(r->http_method[k] - 'A' + 'a');
    method[k] = '\0';
    return json_object_get(json_object_get(json_object_get(d, "paths"), az_httprule_template(r->rule)),
                           method);
}

/* Counts $refs under j and those whose target is missing from components.schemas. */
static void walk_refs(json_t *j, json_t *schemas, size_t *refs, size_t *broken)
{
    if (json_is_object(j)) {
        const char *key;
        json_t *v;
        json_object_foreach(j, key, v)
        {
            if (strcmp(key, "$ref") == 0 && json_is_string(v)) {
                const char *ref = json_string_value(v), *prefix = "#/components/schemas/";
                (*refs)++;
                if (strncmp(ref, prefix, strlen(prefix)) != 0 ||
                    !json_object_get(schemas, ref + strlen(prefix))) {
                    fprintf(stderr, "\nbroken $ref %s\n", ref);
                    (*broken)++;
                }
            } else {
                walk_refs(v, schemas, refs, broken);
            }
        }
    } else if (json_is_array(j)) {
        for (size_t i = 0; i < json_array_size(j); i++) walk_refs(json_array_get(j, i), schemas, refs, broken);
    }
}

/* ---- the embedded document ---- */

static void test_document(void)
{
    CU_ASSERT_EQUAL(strlen(az_openapi_json), az_openapi_json_len);
    CU_ASSERT_EQUAL(az_openapi_json[az_openapi_json_len - 1], '\n');
    CU_ASSERT_STRING_EQUAL(str_at(doc, "openapi"), "3.1.0");
    CU_ASSERT_STRING_EQUAL(str_at(doc, "info/title"), "AGENTZ API");
    CU_ASSERT_STRING_EQUAL(str_at(doc, "info/version"), AZ_VERSION);
    CU_ASSERT_PTR_NULL(at(doc, "jsonSchemaDialect")); /* the OpenAPI default */

    /* tags: one per service, with the service's comment */
    json_t *tags = at(doc, "tags");
    CU_ASSERT_EQUAL(json_array_size(tags), 4);
    CU_ASSERT_STRING_EQUAL(str_at(json_array_get(tags, 0), "name"), "AgentService");
    CU_ASSERT_STRING_EQUAL(str_at(json_array_get(tags, 0), "description"),
                           "Manages agents, their memory and their metrics.");
    CU_ASSERT_STRING_EQUAL(str_at(json_array_get(tags, 3), "name"), "SystemService");

    /* security: both schemes, either one suffices */
    CU_ASSERT_STRING_EQUAL(str_at(doc, "components/securitySchemes/bearer/type"), "http");
    CU_ASSERT_STRING_EQUAL(str_at(doc, "components/securitySchemes/bearer/scheme"), "bearer");
    CU_ASSERT_STRING_EQUAL(str_at(doc, "components/securitySchemes/apiKey/type"), "apiKey");
    CU_ASSERT_STRING_EQUAL(str_at(doc, "components/securitySchemes/apiKey/in"), "header");
    CU_ASSERT_STRING_EQUAL(str_at(doc, "components/securitySchemes/apiKey/name"), "X-Api-Key");
    json_t *sec = at(doc, "security");
    CU_ASSERT_EQUAL(json_array_size(sec), 2);
    CU_ASSERT_PTR_NOT_NULL(json_object_get(json_array_get(sec, 0), "bearer"));
    CU_ASSERT_PTR_NOT_NULL(json_object_get(json_array_get(sec, 1), "apiKey"));

    /* paths are sorted */
    const char *prev = "", *key;
    json_t *v;
    json_object_foreach(at(doc, "paths"), key, v)
    {
        CU_ASSERT_TRUE(strcmp(prev, key) < 0);
        prev = key;
    }
}

static void test_every_route(void)
{
    size_t ops = 0;
    json_t *ids = json_object();
    for (size_t i = 0; i < az_routes_count(table); i++) {
        const az_route *r = az_routes_at(table, i);
        json_t *op = operation(doc, r);
        if (!op) fprintf(stderr, "\nno operation for %s %s\n", r->http_method, az_httprule_template(r->rule));
        CU_ASSERT_PTR_NOT_NULL(op);
        if (!op) continue;
        ops++;
        char id[128];
        const char *service = strrchr(r->method->service, '.') + 1;
        if (r->binding)
            snprintf(id, sizeof id, "%s_%s_%zu", service, r->method->name, r->binding + 1);
        else
            snprintf(id, sizeof id, "%s_%s", service, r->method->name);
        CU_ASSERT_STRING_EQUAL(str_at(op, "operationId"), id);
        CU_ASSERT_PTR_NULL(json_object_get(ids, id)); /* unique */
        json_object_set_new(ids, id, json_true());
        CU_ASSERT_STRING_EQUAL(json_string_value(json_array_get(json_object_get(op, "tags"), 0)), service);
        CU_ASSERT_TRUE(strlen(str_at(op, "summary")) > 10);
        json_t *dflt = json_object_get(json_object_get(json_object_get(at(op, "responses/default"), "content"),
                                                       "application/json"),
                                       "schema");
        CU_ASSERT_STRING_EQUAL(str_at(dflt, "$ref"), "#/components/schemas/google.rpc.Status");
        /* a body exactly where the rule has one */
        CU_ASSERT_EQUAL(at(op, "requestBody") != NULL, r->body != NULL);
        /* every path variable is a required path parameter */
        json_t *params = json_object_get(op, "parameters");
        for (size_t k = 0; k < az_httprule_nvars(r->rule); k++) {
            int found = 0;
            for (size_t p = 0; p < json_array_size(params); p++) {
                json_t *pj = json_array_get(params, p);
                if (strcmp(str_at(pj, "name"), az_httprule_var(r->rule, k)) == 0 &&
                    strcmp(str_at(pj, "in"), "path") == 0 && json_is_true(at(pj, "required")))
                    found++;
            }
            CU_ASSERT_EQUAL(found, 1);
        }
        /* a body "*" takes every field: no query parameters */
        if (r->body && strcmp(r->body, "*") == 0)
            for (size_t p = 0; p < json_array_size(params); p++)
                CU_ASSERT_STRING_EQUAL(str_at(json_array_get(params, p), "in"), "path");
    }
    CU_ASSERT_EQUAL(ops, az_routes_count(table));
    json_decref(ids);
    /* and nothing else */
    size_t documented = 0;
    const char *key;
    json_t *item;
    json_object_foreach(at(doc, "paths"), key, item) documented += json_object_size(item);
    CU_ASSERT_EQUAL(documented, az_routes_count(table));
}

static void test_refs_resolve(void)
{
    json_t *schemas = at(doc, "components/schemas");
    size_t refs = 0, broken = 0;
    walk_refs(doc, schemas, &refs, &broken);
    CU_ASSERT_TRUE(refs > 100);
    CU_ASSERT_EQUAL(broken, 0);
    /* every schema is reachable: referenced somewhere */
    const char *name;
    json_t *s;
    json_object_foreach(schemas, name, s)
    {
        char ref[256];
        snprintf(ref, sizeof ref, "\"#/components/schemas/%s\"", name);
        if (!strstr(az_openapi_json, ref)) fprintf(stderr, "\nunreferenced schema %s\n", name);
        CU_ASSERT_PTR_NOT_NULL(strstr(az_openapi_json, ref));
    }
    /* schemas are sorted */
    const char *prev = "";
    json_object_foreach(schemas, name, s)
    {
        CU_ASSERT_TRUE(strcmp(prev, name) < 0);
        prev = name;
    }
}

static void test_json_mapping(void)
{
    json_t *sc = at(doc, "components/schemas");
    /* 64-bit integers are strings, 32-bit ones integers, doubles numbers */
    json_t *usage = at(sc, "agentz.v1.TokenUsage/properties");
    CU_ASSERT_STRING_EQUAL(str_at(usage, "promptTokens/type"), "string");
    CU_ASSERT_STRING_EQUAL(str_at(usage, "promptTokens/format"), "int64");
    CU_ASSERT_STRING_EQUAL(str_at(usage, "costUsd/type"), "number");
    CU_ASSERT_STRING_EQUAL(str_at(usage, "costUsd/format"), "double");
    json_t *agent = at(sc, "agentz.v1.Agent/properties");
    CU_ASSERT_STRING_EQUAL(str_at(agent, "maxIter/type"), "integer");
    CU_ASSERT_STRING_EQUAL(str_at(agent, "maxIter/format"), "int32");
    CU_ASSERT_STRING_EQUAL(str_at(agent, "allowDelegation/type"), "boolean");
    CU_ASSERT_PTR_NULL(at(agent, "allow_delegation")); /* lowerCamelCase only */
    /* repeated, map, message, enum, well-known types */
    CU_ASSERT_STRING_EQUAL(str_at(agent, "tools/type"), "array");
    CU_ASSERT_STRING_EQUAL(str_at(agent, "tools/items/type"), "string");
    CU_ASSERT_STRING_EQUAL(str_at(agent, "labels/type"), "object");
    CU_ASSERT_STRING_EQUAL(str_at(agent, "labels/additionalProperties/type"), "string");
    CU_ASSERT_STRING_EQUAL(str_at(agent, "llm/$ref"), "#/components/schemas/agentz.v1.LlmConfig");
    CU_ASSERT_STRING_EQUAL(str_at(agent, "status/$ref"), "#/components/schemas/agentz.v1.AgentStatus");
    CU_ASSERT_STRING_EQUAL(str_at(agent, "createTime/$ref"), "#/components/schemas/google.protobuf.Timestamp");
    json_t *steps = at(sc, "agentz.v1.Workflow/properties/steps");
    CU_ASSERT_STRING_EQUAL(str_at(steps, "type"), "array");
    CU_ASSERT_STRING_EQUAL(str_at(steps, "items/$ref"), "#/components/schemas/agentz.v1.Step");

    /* enums as the strings of their value names, in declaration order */
    json_t *status = at(sc, "agentz.v1.AgentStatus");
    CU_ASSERT_STRING_EQUAL(str_at(status, "type"), "string");
    json_t *names = json_object_get(status, "enum");
    const ProtobufCEnumDescriptor *ed = &agentz__v1__agent_status__descriptor;
    CU_ASSERT_EQUAL_FATAL(json_array_size(names), ed->n_values);
    for (unsigned i = 0; i < ed->n_values; i++)
        CU_ASSERT_STRING_EQUAL(json_string_value(json_array_get(names, i)), ed->values[i].name);

    CU_ASSERT_STRING_EQUAL(str_at(sc, "google.protobuf.Timestamp/type"), "string");
    CU_ASSERT_STRING_EQUAL(str_at(sc, "google.protobuf.Timestamp/format"), "date-time");
    CU_ASSERT_STRING_EQUAL(str_at(sc, "google.protobuf.Duration/type"), "string");
    CU_ASSERT_STRING_EQUAL(str_at(sc, "google.protobuf.Duration/pattern"), "^-?[0-9]+(\\.[0-9]{1,9})?s$");
    CU_ASSERT_PTR_NOT_NULL(strstr(str_at(sc, "google.protobuf.Duration/description"), "\"1.5s\""));
    CU_ASSERT_STRING_EQUAL(str_at(sc, "google.protobuf.FieldMask/type"), "string");
    CU_ASSERT_STRING_EQUAL(str_at(sc, "google.protobuf.Struct/type"), "object");
    CU_ASSERT_STRING_EQUAL(str_at(sc, "google.protobuf.Empty/type"), "object");
    CU_ASSERT_TRUE(json_is_false(at(sc, "google.protobuf.Empty/additionalProperties")));
    json_t *dv = at(sc, "google.protobuf.DoubleValue/type");
    CU_ASSERT_TRUE(json_is_array(dv) && json_array_size(dv) == 2 &&
                   strcmp(json_string_value(json_array_get(dv, 0)), "number") == 0 &&
                   strcmp(json_string_value(json_array_get(dv, 1)), "null") == 0);

    /* the error body */
    json_t *st = at(sc, "google.rpc.Status/properties");
    CU_ASSERT_STRING_EQUAL(str_at(st, "code/type"), "integer");
    CU_ASSERT_STRING_EQUAL(str_at(st, "code/format"), "int32");
    CU_ASSERT_STRING_EQUAL(str_at(st, "message/type"), "string");
    CU_ASSERT_STRING_EQUAL(str_at(st, "details/type"), "array");
}

static void test_descriptions(void)
{
    json_t *sc = at(doc, "components/schemas");
    CU_ASSERT_STRING_EQUAL(str_at(sc, "agentz.v1.Agent/description"),
                           "An LLM-backed worker with a role, goal and backstory (CrewAI semantics).");
    CU_ASSERT_STRING_EQUAL(str_at(sc, "agentz.v1.Agent/properties/role/description"),
                           "The agent's function, e.g. \"Senior Data Researcher\". Required.");
    /* a $ref keeps the field's own description beside it */
    CU_ASSERT_STRING_EQUAL(str_at(sc, "agentz.v1.Agent/properties/createTime/description"),
                           "When the agent was created. Output only.");
    /* multi-line comments keep their line breaks, not protoc's leading spaces */
    CU_ASSERT_STRING_EQUAL(str_at(sc, "agentz.v1.WorkflowRun/properties/output/description"),
                           "Output of the last step (sequential) or of the manager (hierarchical); "
                           "for parallel runs the\noutput of the single sink step, or a JSON object "
                           "of all sink outputs keyed by step id.");
    /* a body field's comment describes the body */
    json_t *upd = json_object_get(json_object_get(at(doc, "paths"), "/v1/agents/{agent.id}"), "patch");
    CU_ASSERT_STRING_EQUAL(str_at(upd, "requestBody/description"),
                           "The new values; agent.id names the agent. agent.etag, when set, must "
                           "match the current etag\n(else ABORTED).");
    /* enum values are listed with their meaning */
    CU_ASSERT_PTR_NOT_NULL(strstr(str_at(sc, "agentz.v1.AgentStatus/description"),
                                  "- `AGENT_STATUS_BUSY`: Running at least one task."));
    /* a oneof is spelled out */
    CU_ASSERT_PTR_NOT_NULL(strstr(str_at(sc, "agentz.v1.Event/description"),
                                  "Set at most one of runStatus, taskStatus, agentStatus"));

    json_t *paths = at(doc, "paths");
    json_t *op = json_object_get(json_object_get(paths, "/v1/agents/{id}"), "get");
    CU_ASSERT_STRING_EQUAL(str_at(op, "summary"),
                           "Returns one agent; NOT_FOUND if it does not exist in the caller's workspace.");
    CU_ASSERT_PTR_NULL(at(op, "description")); /* one sentence: all summary */
    op = json_object_get(json_object_get(paths, "/v1/tasks/{id}:cancel"), "post");
    CU_ASSERT_STRING_EQUAL(str_at(op, "summary"),
                           "Cancels a task that is not finished; returns it in TASK_STATUS_CANCELLED.");
    CU_ASSERT_STRING_EQUAL(str_at(op, "description"),
                           "Cancels a task that is not finished; returns it in TASK_STATUS_CANCELLED. "
                           "Cancelling a\ncancelled task succeeds; cancelling a succeeded or failed "
                           "one is FAILED_PRECONDITION.");
    /* "e.g." does not end a summary */
    op = json_object_get(json_object_get(paths, "/v1/agents"), "post");
    CU_ASSERT_STRING_EQUAL(str_at(op, "summary"), "Creates an agent.");
}

/* The parameter named name of op, or NULL. */
static json_t *param(json_t *op, const char *name)
{
    json_t *params = json_object_get(op, "parameters");
    for (size_t i = 0; i < json_array_size(params); i++)
        if (strcmp(str_at(json_array_get(params, i), "name"), name) == 0) return json_array_get(params, i);
    return NULL;
}

static void test_parameters_and_bodies(void)
{
    json_t *paths = at(doc, "paths");
    json_t *list = json_object_get(json_object_get(paths, "/v1/agents"), "get");
    CU_ASSERT_STRING_EQUAL(str_at(param(list, "pageSize"), "in"), "query");
    CU_ASSERT_STRING_EQUAL(str_at(param(list, "pageSize"), "schema/format"), "int32");
    CU_ASSERT_STRING_EQUAL(str_at(param(list, "status"), "schema/$ref"),
                           "#/components/schemas/agentz.v1.AgentStatus");
    CU_ASSERT_STRING_EQUAL(str_at(param(list, "labelSelector"), "description"),
                           "\"k=v,k2=v2\": only agents whose labels match all pairs.");
    CU_ASSERT_PTR_NULL(param(list, "page_size"));

    json_t *watch = json_object_get(json_object_get(paths, "/v1/agents:watch"), "get");
    json_t *ids = param(watch, "agentIds");
    CU_ASSERT_STRING_EQUAL(str_at(ids, "schema/type"), "array");
    CU_ASSERT_STRING_EQUAL(str_at(ids, "schema/items/type"), "string");
    CU_ASSERT_STRING_EQUAL(str_at(ids, "style"), "form");
    CU_ASSERT_TRUE(json_is_true(at(ids, "explode")));
    CU_ASSERT_STRING_EQUAL(str_at(param(watch, "afterSequence"), "schema/type"), "string");
    /* streams: SSE and NDJSON of Event */
    json_t *ok = at(watch, "responses/200");
    CU_ASSERT_PTR_NOT_NULL(strstr(str_at(ok, "description"), "agentz.v1.Event"));
    json_t *content = json_object_get(ok, "content");
    CU_ASSERT_STRING_EQUAL(str_at(json_object_get(content, "text/event-stream"), "schema/$ref"),
                           "#/components/schemas/agentz.v1.Event");
    CU_ASSERT_STRING_EQUAL(str_at(json_object_get(content, "application/x-ndjson"), "schema/$ref"),
                           "#/components/schemas/agentz.v1.Event");
    CU_ASSERT_PTR_NULL(json_object_get(content, "application/json"));
    /* streams also take the token in the query; other operations keep the global security */
    json_t *sec = json_object_get(watch, "security");
    CU_ASSERT_EQUAL(json_array_size(sec), 3);
    CU_ASSERT_PTR_NOT_NULL(json_object_get(json_array_get(sec, 2), "accessToken"));
    CU_ASSERT_PTR_NULL(json_object_get(list, "security"));
    CU_ASSERT_STRING_EQUAL(str_at(doc, "components/securitySchemes/accessToken/in"), "query");
    CU_ASSERT_STRING_EQUAL(str_at(doc, "components/securitySchemes/accessToken/name"), "access_token");

    json_t *metrics = json_object_get(json_object_get(paths, "/v1/agents/{agent_id}/metrics"), "get");
    CU_ASSERT_STRING_EQUAL(str_at(param(metrics, "startTime"), "schema/$ref"),
                           "#/components/schemas/google.protobuf.Timestamp");
    CU_ASSERT_STRING_EQUAL(str_at(param(metrics, "agent_id"), "in"), "path");
    CU_ASSERT_PTR_NULL(param(metrics, "agentId")); /* bound by the path, not a query parameter */

    /* body "agent": the field's message; its other fields from the query */
    json_t *upd = json_object_get(json_object_get(paths, "/v1/agents/{agent.id}"), "patch");
    CU_ASSERT_STRING_EQUAL(str_at(param(upd, "agent.id"), "in"), "path");
    CU_ASSERT_STRING_EQUAL(str_at(param(upd, "agent.id"), "schema/type"), "string");
    CU_ASSERT_STRING_EQUAL(str_at(param(upd, "updateMask"), "in"), "query");
    CU_ASSERT_PTR_NULL(param(upd, "agent.name"));
    json_t *media = json_object_get(at(upd, "requestBody/content"), "application/json");
    CU_ASSERT_STRING_EQUAL(str_at(media, "schema/$ref"), "#/components/schemas/agentz.v1.Agent");
    json_t *create = json_object_get(json_object_get(paths, "/v1/agents"), "post");
    CU_ASSERT_STRING_EQUAL(str_at(param(create, "requestId"), "in"), "query");

    /* body "*" with a path variable: the other fields */
    json_t *cancel = json_object_get(json_object_get(paths, "/v1/tasks/{id}:cancel"), "post");
    media = json_object_get(at(cancel, "requestBody/content"), "application/json");
    CU_ASSERT_STRING_EQUAL(str_at(media, "schema/type"), "object");
    CU_ASSERT_STRING_EQUAL(str_at(media, "schema/properties/reason/type"), "string");
    CU_ASSERT_PTR_NULL(at(media, "schema/properties/id"));
    /* body "*" without one: the request message */
    json_t *key = json_object_get(json_object_get(paths, "/v1/apiKeys"), "post");
    media = json_object_get(at(key, "requestBody/content"), "application/json");
    CU_ASSERT_STRING_EQUAL(str_at(media, "schema/$ref"), "#/components/schemas/agentz.v1.CreateApiKeyRequest");

    /* the additional binding of ListRuns */
    json_t *runs = json_object_get(json_object_get(paths, "/v1/workflows/{workflow_id}/runs"), "get");
    CU_ASSERT_STRING_EQUAL(str_at(runs, "operationId"), "WorkflowService_ListRuns_2");
    CU_ASSERT_PTR_NULL(param(runs, "workflowId"));
    json_t *all_runs = json_object_get(json_object_get(paths, "/v1/runs"), "get");
    CU_ASSERT_STRING_EQUAL(str_at(all_runs, "operationId"), "WorkflowService_ListRuns");
    CU_ASSERT_STRING_EQUAL(str_at(param(all_runs, "workflowId"), "in"), "query");
}

/* ---- az_openapi_build ---- */

static void test_build(void)
{
    char msg[AZ_MSG_MAX] = "", *a = NULL, *b = NULL;
    size_t alen = 0, blen = 0;
    CU_ASSERT_EQUAL_FATAL(az_openapi_build(table, az_descriptor_set, az_descriptor_set_len, "9.9",
                                           &a, &alen, msg),
                          AZ_OK);
    CU_ASSERT_EQUAL(az_openapi_build(table, az_descriptor_set, az_descriptor_set_len, "9.9", &b,
                                     &blen, msg),
                    AZ_OK);
    CU_ASSERT_TRUE(a && b && alen == blen && memcmp(a, b, alen) == 0); /* reproducible */
    CU_ASSERT_EQUAL(strlen(a), alen);
    json_t *j = json_loadb(a, alen, 0, NULL);
    CU_ASSERT_PTR_NOT_NULL(j);
    CU_ASSERT_STRING_EQUAL(str_at(j, "info/version"), "9.9");
    /* the same operations and schemas as the embedded document, without the comments */
    CU_ASSERT_EQUAL(json_object_size(at(j, "paths")), json_object_size(at(doc, "paths")));
    CU_ASSERT_EQUAL(json_object_size(at(j, "components/schemas")),
                    json_object_size(at(doc, "components/schemas")));
    CU_ASSERT_PTR_NULL(at(j, "components/schemas/agentz.v1.Agent/description"));
    CU_ASSERT_PTR_NOT_NULL(at(j, "components/schemas/google.protobuf.Timestamp/description"));
    json_decref(j);
    free(a);
    free(b);

    /* no descriptor set at all: still a document */
    CU_ASSERT_EQUAL(az_openapi_build(table, NULL, 0, "1", &a, &alen, msg), AZ_OK);
    CU_ASSERT_PTR_NOT_NULL(a);
    free(a);

    static const uint8_t junk[] = {0x0a, 0x05, 0x01};
    a = (char *)1;
    CU_ASSERT_EQUAL(az_openapi_build(table, junk, sizeof junk, "1", &a, &alen, msg), AZ_ERR_INVALID);
    CU_ASSERT_PTR_NULL(a);
    CU_ASSERT_STRING_EQUAL(msg, "the descriptor set does not parse");
    CU_ASSERT_EQUAL(az_openapi_build(NULL, NULL, 0, "1", &a, &alen, msg), AZ_ERR_INTERNAL);
    CU_ASSERT_EQUAL(az_openapi_build(table, NULL, 0, NULL, &a, &alen, msg), AZ_ERR_INTERNAL);
    CU_ASSERT_EQUAL(az_openapi_build(table, NULL, 0, "1", NULL, &alen, msg), AZ_ERR_INTERNAL);
}

int main(void)
{
    if (CU_initialize_registry() != CUE_SUCCESS) return 2;
    CU_pSuite s = CU_add_suite("openapi", suite_init, suite_clean);
    static const struct {
        const char *name;
        CU_TestFunc fn;
    } tests[] = {
        {"document", test_document},
        {"every route", test_every_route},
        {"refs resolve", test_refs_resolve},
        {"proto3 JSON mapping", test_json_mapping},
        {"descriptions", test_descriptions},
        {"parameters and bodies", test_parameters_and_bodies},
        {"build", test_build},
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
