/* Fuzzes what the server does with the bytes of a request before any SQL: protobuf-c unpacking
 * into the call's arena (as server/rpc/server.c does) for every request type it serves, then the
 * pure checks the API layers run on them (validators, field masks, label selectors, page tokens,
 * run inputs), and the reflection service's own request parser. */
#include <string.h>

#include "agent/agent_api.h"
#include "agentz/v1/agent.pb-c.h"
#include "agentz/v1/system.pb-c.h"
#include "agentz/v1/task.pb-c.h"
#include "agentz/v1/workflow.pb-c.h"
#include "core/arena.h"
#include "core/pagetoken.h"
#include "descriptor_set.h"
#include "fuzz.h"
#include "grpc/health/v1/health.pb-c.h"
#include "grpc/reflection/v1/reflection.pb-c.h"
#include "grpc/reflection/v1alpha/reflection.pb-c.h"
#include "rpc/reflection.h"
#include "task/task_api.h"
#include "workflow/workflow_api.h"

/* Every service whose request types are fuzzed; SystemService included, so its requests are
 * covered as soon as the server serves them. */
static const ProtobufCServiceDescriptor *const services[] = {
    &agentz__v1__agent_service__descriptor,
    &agentz__v1__task_service__descriptor,
    &agentz__v1__workflow_service__descriptor,
    &agentz__v1__system_service__descriptor,
};

/* Requests of the services the server implements by hand. */
static const ProtobufCMessageDescriptor *const extra_types[] = {
    &grpc__health__v1__health_check_request__descriptor,
    &grpc__reflection__v1__server_reflection_request__descriptor,
    &grpc__reflection__v1alpha__server_reflection_request__descriptor,
};

/* ---- checks run on a request that unpacked ---- */

static az_reflection *reflection;

/* The agent every lookup finds: placeholders in its texts must be declared inputs. */
static const Agentz__V1__Agent lookup_agent = {
    PROTOBUF_C_MESSAGE_INIT(&agentz__v1__agent__descriptor),
    .id = (char *)"3b1f1a52-1c2d-4e5f-8a9b-0c1d2e3f4a5b", .name = (char *)"writer",
    .role = (char *)"{topic} writer", .goal = (char *)"Write about {topic}",
    .backstory = (char *)"Writes.",
};

/* Agents exist when their id is non-empty and shorter than 40 bytes, so validation exercises
 * both answers. */
static az_err lookup(void *arg, const char *agent_id, const Agentz__V1__Agent **out, char *msg)
{
    (void)arg;
    size_t n = strlen(agent_id);
    if (n == 0 || n >= 40) return az_fail(msg, AZ_ERR_NOT_FOUND, "agent %s not found", agent_id);
    *out = &lookup_agent;
    return AZ_OK;
}

static void check_create_agent(const ProtobufCMessage *m, az_arena *ar)
{
    const Agentz__V1__CreateAgentRequest *r = (const void *)m;
    char msg[AZ_MSG_MAX];
    if (r->agent) az_agent_validate(r->agent, 1, msg);
}

static void check_update_agent(const ProtobufCMessage *m, az_arena *ar)
{
    const Agentz__V1__UpdateAgentRequest *r = (const void *)m;
    char msg[AZ_MSG_MAX];
    if (!r->agent) return;
    Agentz__V1__Agent dst = AGENTZ__V1__AGENT__INIT;
    if (az_agent_apply_mask(&dst, r->agent, r->update_mask, ar, msg) == AZ_OK)
        az_agent_validate(&dst, 0, msg);
}

static void check_list_agents(const ProtobufCMessage *m, az_arena *ar)
{
    const Agentz__V1__ListAgentsRequest *r = (const void *)m;
    char msg[AZ_MSG_MAX], *json;
    az_agent_parse_selector(r->label_selector, ar, &json, msg);
}

static void check_create_task(const ProtobufCMessage *m, az_arena *ar)
{
    const Agentz__V1__CreateTaskRequest *r = (const void *)m;
    char msg[AZ_MSG_MAX];
    if (r->task) az_task_api_validate(r->task, msg);
}

static void check_create_workflow(const ProtobufCMessage *m, az_arena *ar)
{
    const Agentz__V1__CreateWorkflowRequest *r = (const void *)m;
    char msg[AZ_MSG_MAX];
    if (r->workflow) az_workflow_validate(r->workflow, lookup, NULL, msg);
}

static void check_update_workflow(const ProtobufCMessage *m, az_arena *ar)
{
    const Agentz__V1__UpdateWorkflowRequest *r = (const void *)m;
    char msg[AZ_MSG_MAX];
    if (!r->workflow) return;
    Agentz__V1__Workflow dst = AGENTZ__V1__WORKFLOW__INIT;
    if (az_workflow_apply_mask(&dst, r->workflow, r->update_mask, msg) == AZ_OK)
        az_workflow_validate(&dst, lookup, NULL, msg);
}

/* The workflow StartRun inputs are resolved against: one required input, one with a default. */
static void check_start_run(const ProtobufCMessage *m, az_arena *ar)
{
    const Agentz__V1__StartRunRequest *r = (const void *)m;
    Agentz__V1__WorkflowInput topic = AGENTZ__V1__WORKFLOW_INPUT__INIT;
    Agentz__V1__WorkflowInput style = AGENTZ__V1__WORKFLOW_INPUT__INIT;
    topic.name = (char *)"topic";
    topic.required = 1;
    style.name = (char *)"style";
    style.default_value = (char *)"short";
    Agentz__V1__WorkflowInput *inputs[] = {&topic, &style};
    Agentz__V1__Workflow w = AGENTZ__V1__WORKFLOW__INIT;
    w.n_inputs = 2;
    w.inputs = inputs;
    az_run_input *out;
    size_t n;
    char msg[AZ_MSG_MAX];
    az_workflow_resolve_inputs(&w, r->inputs, r->n_inputs, ar, &out, &n, msg);
}

/* A reflection request goes through the reflection service's own answer path as raw bytes. */
static void check_reflection(const uint8_t *data, size_t size)
{
    unsigned char *out = NULL;
    size_t out_len = 0;
    char msg[AZ_MSG_MAX];
    if (az_reflection_answer(reflection, data, size, &out, &out_len, msg) == AZ_OK) {
        /* What the server sends back must be a response a client can parse. */
        ProtobufCMessage *resp = protobuf_c_message_unpack(
            &grpc__reflection__v1__server_reflection_response__descriptor, NULL, out_len, out);
        AZ_FUZZ_CHECK(resp != NULL, "reflection answered %zu bytes that do not parse", out_len);
        protobuf_c_message_free_unpacked(resp, NULL);
    }
    free(out);
}

typedef struct check {
    const ProtobufCMessageDescriptor *type;
    void (*run)(const ProtobufCMessage *m, az_arena *ar);
} check;

static const check checks[] = {
    {&agentz__v1__create_agent_request__descriptor, check_create_agent},
    {&agentz__v1__update_agent_request__descriptor, check_update_agent},
    {&agentz__v1__list_agents_request__descriptor, check_list_agents},
    {&agentz__v1__create_task_request__descriptor, check_create_task},
    {&agentz__v1__create_workflow_request__descriptor, check_create_workflow},
    {&agentz__v1__update_workflow_request__descriptor, check_update_workflow},
    {&agentz__v1__start_run_request__descriptor, check_start_run},
};

/* Every request with a page_token: page tokens are opaque strings clients send back. */
static void check_page_token(const ProtobufCMessage *m)
{
    const ProtobufCFieldDescriptor *f =
        protobuf_c_message_descriptor_get_field_by_name(m->descriptor, "page_token");
    if (!f || f->type != PROTOBUF_C_TYPE_STRING || f->label == PROTOBUF_C_LABEL_REPEATED) return;
    const char *token = *(char *const *)((const char *)m + f->offset);
    char raw[AZ_PAGETOKEN_RAW_MAX + 1], msg[AZ_MSG_MAX];
    if (token && *token) az_pagetoken_decode(token, raw, msg);
}

/* ---- the target ---- */

static void run_type(const ProtobufCMessageDescriptor *type, const uint8_t *data, size_t size)
{
    /* The server unpacks into the call's arena, limited like a call's. */
    az_arena *ar = az_arena_new(0);
    if (!ar) return;
    ProtobufCMessage *m = protobuf_c_message_unpack(type, az_arena_allocator(ar), size, data);
    if (m) {
        for (size_t i = 0; i < sizeof checks / sizeof checks[0]; i++)
            if (checks[i].type == type) checks[i].run(m, ar);
        check_page_token(m);
    }
    az_arena_free(ar);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!reflection) {
        char msg[AZ_MSG_MAX];
        reflection = az_reflection_new(az_descriptor_set, az_descriptor_set_len, msg);
        AZ_FUZZ_CHECK(reflection != NULL, "cannot index the descriptor set: %s", msg);
    }
    for (size_t s = 0; s < sizeof services / sizeof services[0]; s++)
        for (unsigned i = 0; i < services[s]->n_methods; i++)
            run_type(services[s]->methods[i].input, data, size);
    for (size_t i = 0; i < sizeof extra_types / sizeof extra_types[0]; i++)
        run_type(extra_types[i], data, size);
    check_reflection(data, size);
    return 0;
}
