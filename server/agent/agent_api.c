/* AgentService handlers: request validation with field-naming errors, AIP-134 field masks,
 * AIP-154 etags and AIP-158 pagination limits, on top of the agent service (agent.c), agent
 * memory (memory.c) and the task service's per-agent metrics (task/metrics.c). */
#include "agent_api.h"

#include <jansson.h>
#include <math.h>
#include <openssl/evp.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "agent/memory.h"
#include "core/text.h"
#include "event/watch.h"
#include "google/protobuf/empty.pb-c.h"
#include "google/protobuf/timestamp.pb-c.h"
#include "task/metrics.h"
#include "tools/tools.h"

#define PAGE_DEFAULT 50
#define PAGE_MAX 1000
#define MODEL_MAX 256
#define SECRET_NAME_MAX 128
#define LABEL_VALUE_MAX 256
#define MAX_RPM_MAX 100000
#define MAX_TOKENS_MAX 1000000
#define LLM_TIMEOUT_MAX_S 3600
#define EXEC_TIME_MAX_S 86400
#define REQUEST_ID_MAX 128
#define MEMORY_QUERY_MAX 1000
#define METRICS_WINDOW_US (24LL * 3600 * 1000000) /* GetAgentMetrics without a start_time */
#define TIMESTAMP_MAX_S 253402300799LL             /* 9999-12-31T23:59:59Z */

struct az_agent_api {
    az_pg *pg;
    az_watch *watch; /* NULL: WatchAgents answers UNAVAILABLE */
    az_method methods[9];
};

static const char *const providers[] = {"", "openai", "anthropic"};

/* ---------------------------------------------------------------- validation */

static int name_in(const char *s, const char *const *list, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (strcmp(s, list[i]) == 0) return 1;
    }
    return 0;
}

static az_err check_secret_name(const char *field, const char *s, char *msg)
{
    size_t n = strlen(s);
    if (n > SECRET_NAME_MAX)
        return az_fail(msg, AZ_ERR_INVALID, "%s: longer than %d characters", field, SECRET_NAME_MAX);
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '-' || c == '.'))
            return az_fail(msg, AZ_ERR_INVALID,
                           "%s: a secret name uses only letters, digits, '_', '-' and '.'", field);
    }
    return AZ_OK;
}

static az_err check_llm(const Agentz__V1__LlmConfig *l, char *msg)
{
    if (!l) return AZ_OK;
    az_err err;
    if (!name_in(l->provider, providers, sizeof providers / sizeof *providers))
        return az_fail(msg, AZ_ERR_INVALID,
                       "agent.llm.provider: unknown provider \"%s\" (use \"openai\" for any "
                       "OpenAI-compatible endpoint, or \"anthropic\")",
                       l->provider);
    if ((err = az_text_check("agent.llm.model", l->model, MODEL_MAX, 0, msg)) != AZ_OK) return err;
    if ((err = az_text_check_url("agent.llm.base_url", l->base_url, 0, msg)) != AZ_OK) return err;
    if ((err = check_secret_name("agent.llm.api_key_secret", l->api_key_secret, msg)) != AZ_OK)
        return err;
    if (l->temperature) {
        double t = l->temperature->value;
        if (!(t >= 0.0 && t <= 2.0))
            return az_fail(msg, AZ_ERR_INVALID, "agent.llm.temperature: must be between 0 and 2");
    }
    if (l->max_tokens < 0 || l->max_tokens > MAX_TOKENS_MAX)
        return az_fail(msg, AZ_ERR_INVALID, "agent.llm.max_tokens: must be between 0 and %d",
                       MAX_TOKENS_MAX);
    return az_text_check_duration("agent.llm.timeout", l->timeout, LLM_TIMEOUT_MAX_S, msg);
}

az_err az_agent_validate(const Agentz__V1__Agent *a, int creating, char *msg)
{
    az_err err;
    if ((err = az_text_check("agent.name", a->name, AZ_AGENT_NAME_MAX, 0, msg)) != AZ_OK ||
        (err = az_text_check("agent.role", a->role, AZ_AGENT_ROLE_MAX, AZ_TEXT_REQUIRED, msg)) != AZ_OK ||
        (err = az_text_check("agent.goal", a->goal, AZ_AGENT_GOAL_MAX,
                             AZ_TEXT_REQUIRED | AZ_TEXT_MULTILINE, msg)) != AZ_OK ||
        (err = az_text_check("agent.backstory", a->backstory, AZ_AGENT_BACKSTORY_MAX,
                             AZ_TEXT_REQUIRED | AZ_TEXT_MULTILINE, msg)) != AZ_OK)
        return err;
    if ((err = check_llm(a->llm, msg)) != AZ_OK) return err;
    if (a->n_tools > AZ_AGENT_TOOLS_MAX)
        return az_fail(msg, AZ_ERR_INVALID, "agent.tools: at most %d tools", AZ_AGENT_TOOLS_MAX);
    /* The tools module's list, so a new built-in tool is accepted where it is implemented. The
     * delegation tools are not named here: allow_delegation gives them. */
    size_t n_known;
    const char *const *known = az_tools_builtin_names(&n_known);
    for (size_t i = 0; i < a->n_tools; i++) {
        if (!name_in(a->tools[i], known, n_known)) {
            char list[256] = "";
            size_t len = 0;
            for (size_t k = 0; k < n_known && len < sizeof list; k++)
                len += (size_t)snprintf(list + len, sizeof list - len, "%s%s", k ? ", " : "", known[k]);
            return az_fail(msg, AZ_ERR_INVALID,
                           "agent.tools[%zu]: unknown tool \"%.64s\" (built-in tools: %s; the "
                           "delegation tools come with allow_delegation)",
                           i, a->tools[i], list);
        }
        for (size_t j = 0; j < i; j++) {
            if (strcmp(a->tools[i], a->tools[j]) == 0)
                return az_fail(msg, AZ_ERR_INVALID, "agent.tools[%zu]: \"%s\" is listed twice", i,
                               a->tools[i]);
        }
    }
    if (!(creating && a->max_iter == 0) && (a->max_iter < 1 || a->max_iter > AZ_AGENT_MAX_ITER_MAX))
        return az_fail(msg, AZ_ERR_INVALID, "agent.max_iter: must be between 1 and %d",
                       AZ_AGENT_MAX_ITER_MAX);
    if (a->max_rpm < 0 || a->max_rpm > MAX_RPM_MAX)
        return az_fail(msg, AZ_ERR_INVALID, "agent.max_rpm: must be between 0 and %d", MAX_RPM_MAX);
    if ((err = az_text_check_duration("agent.max_execution_time", a->max_execution_time, EXEC_TIME_MAX_S,
                              msg)) != AZ_OK)
        return err;
    if (a->n_labels > AZ_AGENT_LABELS_MAX)
        return az_fail(msg, AZ_ERR_INVALID, "agent.labels: at most %d labels", AZ_AGENT_LABELS_MAX);
    for (size_t i = 0; i < a->n_labels; i++) {
        const Agentz__V1__Agent__LabelsEntry *e = a->labels[i];
        if (!az_text_label_key_ok(e->key))
            return az_fail(msg, AZ_ERR_INVALID,
                           "agent.labels: key \"%.80s\" must be 1..%d characters of a-z, 0-9, "
                           "'_', '-', '.', '/'",
                           e->key, AZ_TEXT_LABEL_KEY_MAX);
        char field[96];
        snprintf(field, sizeof field, "agent.labels[%s]", e->key);
        if ((err = az_text_check(field, e->value, LABEL_VALUE_MAX, 0, msg)) != AZ_OK) return err;
        for (size_t j = 0; j < i; j++) {
            if (strcmp(a->labels[j]->key, e->key) == 0)
                return az_fail(msg, AZ_ERR_INVALID, "agent.labels: key \"%s\" appears twice", e->key);
        }
    }
    return AZ_OK;
}

/* ---------------------------------------------------------------- field masks */

typedef enum { K_STR, K_RAW } field_kind;

typedef struct mask_field {
    const char *path;
    size_t off, len; /* the bytes copied; repeated fields span count and pointer */
    field_kind kind;
} mask_field;

#define AG Agentz__V1__Agent
#define LL Agentz__V1__LlmConfig
#define SPAN(T, first, last) (offsetof(T, last) + sizeof(((T *)0)->last) - offsetof(T, first))
#define FIELD(T, path, m, k) {path, offsetof(T, m), sizeof(((T *)0)->m), k}
#define REPEATED(T, path, n, m) {path, offsetof(T, n), SPAN(T, n, m), K_RAW}

static const mask_field agent_fields[] = {
    FIELD(AG, "name", name, K_STR),
    FIELD(AG, "role", role, K_STR),
    FIELD(AG, "goal", goal, K_STR),
    FIELD(AG, "backstory", backstory, K_STR),
    FIELD(AG, "llm", llm, K_RAW),
    REPEATED(AG, "tools", n_tools, tools),
    FIELD(AG, "allow_delegation", allow_delegation, K_RAW),
    FIELD(AG, "max_iter", max_iter, K_RAW),
    FIELD(AG, "max_rpm", max_rpm, K_RAW),
    FIELD(AG, "max_execution_time", max_execution_time, K_RAW),
    FIELD(AG, "memory", memory, K_RAW),
    FIELD(AG, "disabled", disabled, K_RAW),
    REPEATED(AG, "labels", n_labels, labels),
};

static const mask_field llm_fields[] = {
    FIELD(LL, "provider", provider, K_STR),
    FIELD(LL, "model", model, K_STR),
    FIELD(LL, "base_url", base_url, K_STR),
    FIELD(LL, "api_key_secret", api_key_secret, K_STR),
    FIELD(LL, "temperature", temperature, K_RAW),
    FIELD(LL, "max_tokens", max_tokens, K_RAW),
    FIELD(LL, "timeout", timeout, K_RAW),
};

static const char *const output_only[] = {"id", "status", "create_time", "update_time", "etag",
                                          "workspace_id"};

static const mask_field *find_field(const mask_field *f, size_t n, const char *path)
{
    for (size_t i = 0; i < n; i++) {
        if (strcmp(f[i].path, path) == 0) return &f[i];
    }
    return NULL;
}

static int populated(const void *base, const mask_field *f)
{
    const unsigned char *p = (const unsigned char *)base + f->off;
    if (f->kind == K_STR) {
        const char *s = *(char *const *)p;
        return s && *s;
    }
    for (size_t i = 0; i < f->len; i++) {
        if (p[i]) return 1;
    }
    return 0;
}

static void copy_field(void *dst, const void *src, const mask_field *f)
{
    memcpy((unsigned char *)dst + f->off, (const unsigned char *)src + f->off, f->len);
}

az_err az_agent_apply_mask(Agentz__V1__Agent *dst, const Agentz__V1__Agent *src,
                           const Google__Protobuf__FieldMask *mask, az_arena *arena, char *msg)
{
    size_t nf = sizeof agent_fields / sizeof *agent_fields;
    if (!mask || mask->n_paths == 0) {
        for (size_t i = 0; i < nf; i++) {
            if (populated(src, &agent_fields[i])) copy_field(dst, src, &agent_fields[i]);
        }
        return AZ_OK;
    }
    for (size_t i = 0; i < mask->n_paths; i++) {
        const char *path = mask->paths[i];
        if (strcmp(path, "*") == 0) {
            for (size_t k = 0; k < nf; k++) copy_field(dst, src, &agent_fields[k]);
            continue;
        }
        const mask_field *f = find_field(agent_fields, nf, path);
        if (f) {
            copy_field(dst, src, f);
            continue;
        }
        if (strncmp(path, "llm.", 4) == 0) {
            f = find_field(llm_fields, sizeof llm_fields / sizeof *llm_fields, path + 4);
            if (!f) return az_fail(msg, AZ_ERR_INVALID, "update_mask: unknown field \"%.100s\"", path);
            if (!dst->llm) {
                /* Start from an empty config so an unset current llm can take one field. */
                Agentz__V1__LlmConfig *l = az_arena_alloc(arena, sizeof *l);
                if (!l) return az_fail(msg, AZ_ERR_NOMEM, "out of memory");
                agentz__v1__llm_config__init(l);
                dst->llm = l;
            } else {
                Agentz__V1__LlmConfig *l = az_arena_alloc(arena, sizeof *l);
                if (!l) return az_fail(msg, AZ_ERR_NOMEM, "out of memory");
                *l = *dst->llm;
                dst->llm = l;
            }
            static const Agentz__V1__LlmConfig none = AGENTZ__V1__LLM_CONFIG__INIT;
            copy_field(dst->llm, src->llm ? src->llm : &none, f);
            continue;
        }
        if (name_in(path, output_only, sizeof output_only / sizeof *output_only))
            return az_fail(msg, AZ_ERR_INVALID, "update_mask: \"%s\" is output only", path);
        return az_fail(msg, AZ_ERR_INVALID, "update_mask: unknown field \"%.100s\"", path);
    }
    return AZ_OK;
}

az_err az_agent_parse_selector(const char *selector, az_arena *arena, char **json, char *msg)
{
    *json = NULL;
    if (!selector || !*selector) return AZ_OK;
    if (strlen(selector) > 4096)
        return az_fail(msg, AZ_ERR_INVALID, "label_selector: longer than 4096 characters");
    json_t *obj = json_object();
    char *copy = az_arena_strdup(arena, selector);
    if (!obj || !copy) {
        json_decref(obj);
        return az_fail(msg, AZ_ERR_NOMEM, "out of memory");
    }
    az_err err = AZ_OK;
    /* strsep, not strtok: an empty term ("a=1,,b=2") is a mistake worth reporting. */
    for (char *rest = copy, *term; err == AZ_OK && (term = strsep(&rest, ",")) != NULL;) {
        char *eq = strchr(term, '=');
        if (!eq) {
            err = az_fail(msg, AZ_ERR_INVALID, "label_selector: \"%.80s\" is not key=value", term);
            break;
        }
        *eq = '\0';
        if (!az_text_label_key_ok(term)) {
            err = az_fail(msg, AZ_ERR_INVALID, "label_selector: invalid key \"%.80s\"", term);
            break;
        }
        if (json_object_get(obj, term)) {
            err = az_fail(msg, AZ_ERR_INVALID, "label_selector: key \"%s\" appears twice", term);
            break;
        }
        err = az_text_check("label_selector value", eq + 1, LABEL_VALUE_MAX, 0, msg);
        if (err == AZ_OK) json_object_set_new(obj, term, json_string(eq + 1));
    }
    if (err == AZ_OK) {
        char *s = json_dumps(obj, JSON_COMPACT | JSON_SORT_KEYS);
        *json = s ? az_arena_strdup(arena, s) : NULL;
        free(s);
        if (!*json) err = az_fail(msg, AZ_ERR_NOMEM, "out of memory");
    }
    json_decref(obj);
    return err;
}

/* ---------------------------------------------------------------- handlers */

static int clamp_page(int size) { return size == 0 ? PAGE_DEFAULT : size > PAGE_MAX ? PAGE_MAX : size; }

static az_err empty_response(az_call *c, ProtobufCMessage **out, char *msg)
{
    Google__Protobuf__Empty *e = az_arena_alloc(az_call_arena(c), sizeof *e);
    if (!e) return az_fail(msg, AZ_ERR_NOMEM, "out of memory");
    google__protobuf__empty__init(e);
    *out = &e->base;
    return AZ_OK;
}

/* SHA-256 of the serialized agent: what makes two requests with one request_id "the same". */
static char *request_hash(az_arena *a, const Agentz__V1__Agent *g)
{
    size_t n = protobuf_c_message_get_packed_size(&g->base);
    uint8_t *buf = az_arena_alloc(a, n ? n : 1);
    char *hex = az_arena_alloc(a, 65);
    if (!buf || !hex) return NULL;
    protobuf_c_message_pack(&g->base, buf);
    unsigned char md[32];
    unsigned int mdlen = 0;
    if (!EVP_Digest(buf, n, md, &mdlen, EVP_sha256(), NULL)) return NULL;
    for (unsigned i = 0; i < 32; i++) snprintf(hex + 2 * i, 3, "%02x", md[i]);
    return hex;
}

static az_err create_agent(az_call *c, const ProtobufCMessage *in, ProtobufCMessage **out, char *msg)
{
    az_agent_api *api = az_call_data(c);
    const Agentz__V1__CreateAgentRequest *req = (const void *)in;
    if (!req->agent) return az_fail(msg, AZ_ERR_INVALID, "agent is required");
    az_err err = az_agent_validate(req->agent, 1, msg);
    if (err != AZ_OK) return err;
    if ((err = az_text_check("request_id", req->request_id, REQUEST_ID_MAX, 0, msg)) != AZ_OK)
        return err;
    az_arena *a = az_call_arena(c);
    const char *hash = "";
    if (*req->request_id && !(hash = request_hash(a, req->agent)))
        return az_fail(msg, AZ_ERR_NOMEM, "out of memory");
    az_ctx ctx;
    az_call_ctx(c, &ctx);
    Agentz__V1__Agent *g;
    int replayed;
    err = az_agent_create(api->pg, &ctx, req->agent, req->request_id, hash, a, &g, &replayed, msg);
    if (err == AZ_OK) *out = &g->base;
    return err;
}

static az_err get_agent(az_call *c, const ProtobufCMessage *in, ProtobufCMessage **out, char *msg)
{
    az_agent_api *api = az_call_data(c);
    const Agentz__V1__GetAgentRequest *req = (const void *)in;
    if (!*req->id) return az_fail(msg, AZ_ERR_INVALID, "id is required");
    az_ctx ctx;
    az_call_ctx(c, &ctx);
    Agentz__V1__Agent *g;
    az_err err = az_agent_get(api->pg, &ctx, req->id, az_call_arena(c), &g, msg);
    if (err == AZ_OK) *out = &g->base;
    return err;
}

static az_err list_agents(az_call *c, const ProtobufCMessage *in, ProtobufCMessage **out, char *msg)
{
    az_agent_api *api = az_call_data(c);
    const Agentz__V1__ListAgentsRequest *req = (const void *)in;
    if (req->page_size < 0) return az_fail(msg, AZ_ERR_INVALID, "page_size: must not be negative");
    if (req->status < 0 || req->status > AGENTZ__V1__AGENT_STATUS__AGENT_STATUS_ERROR)
        return az_fail(msg, AZ_ERR_INVALID, "status: unknown value %d", (int)req->status);
    az_agent_query q = {
        .status = (int)req->status,
        .page_size = clamp_page(req->page_size),
        .page_token = req->page_token,
    };
    char *labels;
    az_err err = az_agent_parse_selector(req->label_selector, az_call_arena(c), &labels, msg);
    if (err != AZ_OK) return err;
    q.labels_json = labels;
    az_ctx ctx;
    az_call_ctx(c, &ctx);
    Agentz__V1__ListAgentsResponse *resp;
    err = az_agent_list(api->pg, &ctx, &q, az_call_arena(c), &resp, msg);
    if (err == AZ_OK) *out = &resp->base;
    return err;
}

static az_err update_agent(az_call *c, const ProtobufCMessage *in, ProtobufCMessage **out, char *msg)
{
    az_agent_api *api = az_call_data(c);
    const Agentz__V1__UpdateAgentRequest *req = (const void *)in;
    if (!req->agent) return az_fail(msg, AZ_ERR_INVALID, "agent is required");
    if (!*req->agent->id) return az_fail(msg, AZ_ERR_INVALID, "agent.id is required");
    int64_t want = -1;
    if (*req->agent->etag && (want = az_agent_etag_revision(req->agent->etag)) < 0)
        return az_fail(msg, AZ_ERR_INVALID, "agent.etag: \"%.40s\" is not an etag this server issued",
                       req->agent->etag);
    az_arena *a = az_call_arena(c);
    az_ctx ctx;
    az_call_ctx(c, &ctx);
    Agentz__V1__Agent *cur;
    az_err err = az_agent_get(api->pg, &ctx, req->agent->id, a, &cur, msg);
    if (err != AZ_OK) return err;
    int64_t have = az_agent_etag_revision(cur->etag);
    if (want > 0 && want != have)
        return az_fail(msg, AZ_ERR_ABORTED,
                       "agent.etag: \"%s\" does not match the current etag \"%s\"; read the agent "
                       "again and retry",
                       req->agent->etag, cur->etag);
    if ((err = az_agent_apply_mask(cur, req->agent, req->update_mask, a, msg)) != AZ_OK) return err;
    if ((err = az_agent_validate(cur, 0, msg)) != AZ_OK) return err;
    Agentz__V1__Agent *g;
    err = az_agent_replace(api->pg, &ctx, cur, have, a, &g, msg);
    if (err == AZ_OK) *out = &g->base;
    return err;
}

static az_err delete_agent(az_call *c, const ProtobufCMessage *in, ProtobufCMessage **out, char *msg)
{
    az_agent_api *api = az_call_data(c);
    const Agentz__V1__DeleteAgentRequest *req = (const void *)in;
    if (!*req->id) return az_fail(msg, AZ_ERR_INVALID, "id is required");
    int64_t want = 0;
    if (*req->etag && (want = az_agent_etag_revision(req->etag)) < 0)
        return az_fail(msg, AZ_ERR_INVALID, "etag: \"%.40s\" is not an etag this server issued",
                       req->etag);
    az_ctx ctx;
    az_call_ctx(c, &ctx);
    az_err err = az_agent_delete(api->pg, &ctx, req->id, want, msg);
    if (err != AZ_OK) return err;
    return empty_response(c, out, msg);
}

/* ---------------------------------------------------------------- memory and metrics */


static az_err get_agent_memory(az_call *c, const ProtobufCMessage *in, ProtobufCMessage **out, char *msg)
{
    az_agent_api *api = az_call_data(c);
    const Agentz__V1__GetAgentMemoryRequest *req = (const void *)in;
    if (!*req->agent_id) return az_fail(msg, AZ_ERR_INVALID, "agent_id is required");
    az_err err = az_text_check("query", req->query, MEMORY_QUERY_MAX, AZ_TEXT_MULTILINE, msg);
    if (err != AZ_OK) return err;
    if (req->page_size < 0) return az_fail(msg, AZ_ERR_INVALID, "page_size: must not be negative");
    az_ctx ctx;
    az_call_ctx(c, &ctx);
    Agentz__V1__AgentMemory *m;
    err = az_memory_list(api->pg, &ctx, req->agent_id, req->query, clamp_page(req->page_size),
                         req->page_token, az_call_arena(c), &m, msg);
    if (err == AZ_OK) *out = &m->base;
    return err;
}

static az_err clear_agent_memory(az_call *c, const ProtobufCMessage *in, ProtobufCMessage **out, char *msg)
{
    az_agent_api *api = az_call_data(c);
    const Agentz__V1__ClearAgentMemoryRequest *req = (const void *)in;
    if (!*req->agent_id) return az_fail(msg, AZ_ERR_INVALID, "agent_id is required");
    az_ctx ctx;
    az_call_ctx(c, &ctx);
    az_err err = az_memory_clear(api->pg, &ctx, req->agent_id, NULL, msg);
    if (err != AZ_OK) return err;
    return empty_response(c, out, msg);
}

static az_err check_timestamp(const char *field, const Google__Protobuf__Timestamp *t, char *msg)
{
    if (t && (t->seconds < 0 || t->seconds > TIMESTAMP_MAX_S || t->nanos < 0 || t->nanos > 999999999))
        return az_fail(msg, AZ_ERR_INVALID,
                       "%s: not a valid timestamp (1970-01-01 to 9999-12-31, nanos 0..999999999)",
                       field);
    return AZ_OK;
}

static int64_t timestamp_to_us(const Google__Protobuf__Timestamp *t)
{
    return (int64_t)t->seconds * 1000000 + t->nanos / 1000;
}

static az_err get_agent_metrics(az_call *c, const ProtobufCMessage *in, ProtobufCMessage **out, char *msg)
{
    az_agent_api *api = az_call_data(c);
    const Agentz__V1__GetAgentMetricsRequest *req = (const void *)in;
    if (!*req->agent_id) return az_fail(msg, AZ_ERR_INVALID, "agent_id is required");
    az_err err;
    if ((err = check_timestamp("start_time", req->start_time, msg)) != AZ_OK ||
        (err = check_timestamp("end_time", req->end_time, msg)) != AZ_OK)
        return err;
    int64_t end;
    if (req->end_time) {
        end = timestamp_to_us(req->end_time);
    } else {
        struct timespec now;
        clock_gettime(CLOCK_REALTIME, &now);
        end = (int64_t)now.tv_sec * 1000000 + now.tv_nsec / 1000;
    }
    int64_t start = req->start_time ? timestamp_to_us(req->start_time) : end - METRICS_WINDOW_US;
    if (start >= end) return az_fail(msg, AZ_ERR_INVALID, "start_time: must be before end_time");
    az_ctx ctx;
    az_call_ctx(c, &ctx);
    az_arena *a = az_call_arena(c);
    /* Metrics of an agent that does not exist (or is another workspace's) would be zeros that
     * look like an idle agent: say it is not there instead. */
    Agentz__V1__Agent *g;
    if ((err = az_agent_get(api->pg, &ctx, req->agent_id, a, &g, msg)) != AZ_OK) return err;
    Agentz__V1__AgentMetrics *m;
    err = az_task_agent_metrics(api->pg, &ctx, g->id, start, end, a, &m, msg);
    if (err == AZ_OK) *out = &m->base;
    return err;
}

/* WatchAgents: agent status events of the workspace (filtered), and AgentMetrics ticks. */
static az_err watch_agents(az_call *c, const ProtobufCMessage *in, char *msg)
{
    az_agent_api *api = az_call_data(c);
    const Agentz__V1__WatchAgentsRequest *req = (const void *)in;
    if (req->n_agent_ids > AZ_WATCH_AGENT_IDS_MAX)
        return az_fail(msg, AZ_ERR_INVALID, "agent_ids: at most %d", AZ_WATCH_AGENT_IDS_MAX);
    for (size_t i = 0; i < req->n_agent_ids; i++)
        if (!az_text_is_uuid(req->agent_ids[i]))
            return az_fail(msg, AZ_ERR_INVALID, "agent_ids[%zu]: \"%.64s\" is not an agent id", i,
                           req->agent_ids[i]);
    if (req->after_sequence < 0)
        return az_fail(msg, AZ_ERR_INVALID, "after_sequence: must not be negative");
    char *labels;
    az_err err = az_agent_parse_selector(req->label_selector, az_call_arena(c), &labels, msg);
    if (err != AZ_OK) return err;
    if (!api->watch)
        return az_fail(msg, AZ_ERR_UNAVAILABLE, "WatchAgents is not served by this process (no event hub)");
    az_watch_request w = {.kind = AZ_WATCH_AGENTS,
                          .after_sequence = req->after_sequence,
                          .agent_ids = (const char *const *)req->agent_ids,
                          .n_agent_ids = req->n_agent_ids,
                          .labels_json = labels,
                          .include_metrics = req->include_metrics};
    return az_watch_serve(api->watch, c, &w, msg);
}

az_agent_api *az_agent_api_new(az_pg *pg)
{
    az_agent_api *api = calloc(1, sizeof *api);
    if (!api) return NULL;
    api->pg = pg;
    const az_method m[] = {
        {"/agentz.v1.AgentService/CreateAgent", AZ_RPC_UNARY,
         &agentz__v1__create_agent_request__descriptor, &agentz__v1__agent__descriptor,
         .unary = create_agent, .data = api},
        {"/agentz.v1.AgentService/GetAgent", AZ_RPC_UNARY, &agentz__v1__get_agent_request__descriptor,
         &agentz__v1__agent__descriptor, .unary = get_agent, .data = api},
        {"/agentz.v1.AgentService/ListAgents", AZ_RPC_UNARY,
         &agentz__v1__list_agents_request__descriptor, &agentz__v1__list_agents_response__descriptor,
         .unary = list_agents, .data = api},
        {"/agentz.v1.AgentService/UpdateAgent", AZ_RPC_UNARY,
         &agentz__v1__update_agent_request__descriptor, &agentz__v1__agent__descriptor,
         .unary = update_agent, .data = api},
        {"/agentz.v1.AgentService/DeleteAgent", AZ_RPC_UNARY,
         &agentz__v1__delete_agent_request__descriptor, &google__protobuf__empty__descriptor,
         .unary = delete_agent, .data = api},
        {"/agentz.v1.AgentService/GetAgentMemory", AZ_RPC_UNARY,
         &agentz__v1__get_agent_memory_request__descriptor, &agentz__v1__agent_memory__descriptor,
         .unary = get_agent_memory, .data = api},
        {"/agentz.v1.AgentService/ClearAgentMemory", AZ_RPC_UNARY,
         &agentz__v1__clear_agent_memory_request__descriptor, &google__protobuf__empty__descriptor,
         .unary = clear_agent_memory, .data = api},
        {"/agentz.v1.AgentService/GetAgentMetrics", AZ_RPC_UNARY,
         &agentz__v1__get_agent_metrics_request__descriptor, &agentz__v1__agent_metrics__descriptor,
         .unary = get_agent_metrics, .data = api},
        {"/agentz.v1.AgentService/WatchAgents", AZ_RPC_SERVER_STREAM,
         &agentz__v1__watch_agents_request__descriptor, &agentz__v1__event__descriptor,
         .stream = watch_agents, .data = api},
    };
    memcpy(api->methods, m, sizeof m);
    return api;
}

void az_agent_api_free(az_agent_api *api) { free(api); }

void az_agent_api_set_watch(az_agent_api *api, az_watch *w) { api->watch = w; }

const az_method *az_agent_api_methods(az_agent_api *api, size_t *n)
{
    *n = sizeof api->methods / sizeof *api->methods;
    return api->methods;
}
