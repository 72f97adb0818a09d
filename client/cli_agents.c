/* `agentz agents ...`: the AgentService commands. One flag table describes every writable
 * agent field (flag, field path, setter), shared by create and update so the update mask is
 * exactly the set of flags given. */
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "agentz/v1/agent.pb-c.h"
#include "cli.h"
#include "core/arena.h"
#include "core/pbjson.h"
#include "core/file.h"
#include "table.h"

#define SERVICE "/agentz.v1.AgentService/"
#define STATUS_PREFIX "AGENT_STATUS_"

/* ---- the writable agent fields ---- */

enum {
    F_NAME,
    F_ROLE,
    F_GOAL,
    F_BACKSTORY,
    F_LLM_PROVIDER,
    F_LLM_MODEL,
    F_LLM_BASE_URL,
    F_LLM_API_KEY_SECRET,
    F_TEMPERATURE,
    F_MAX_TOKENS,
    F_LLM_TIMEOUT,
    F_TOOL,
    F_ALLOW_DELEGATION,
    F_MAX_ITER,
    F_MAX_RPM,
    F_MAX_EXECUTION_TIME,
    F_MEMORY,
    F_DISABLED,
    F_LABEL,
    F__AGENT /* count of agent field flags; verb-specific flags follow */
};

#define AGENT_FLAGS                                                                                \
    [F_NAME] = {"name", 0, AZ_FLAG_VALUE, "NAME", "display name, unique in the workspace", "name"}, \
    [F_ROLE] = {"role", 0, AZ_FLAG_VALUE, "TEXT", "the agent's function", "role"},                  \
    [F_GOAL] = {"goal", 0, AZ_FLAG_VALUE, "TEXT", "what the agent tries to achieve", "goal"},       \
    [F_BACKSTORY] = {"backstory", 0, AZ_FLAG_VALUE, "TEXT", "context shaping the behaviour",        \
                     "backstory"},                                                                  \
    [F_LLM_PROVIDER] = {"llm-provider", 0, AZ_FLAG_VALUE, "NAME", "openai or anthropic",            \
                        "llm.provider"},                                                            \
    [F_LLM_MODEL] = {"llm-model", 0, AZ_FLAG_VALUE, "MODEL", "model name, e.g. gpt-4o-mini",        \
                     "llm.model"},                                                                  \
    [F_LLM_BASE_URL] = {"llm-base-url", 0, AZ_FLAG_VALUE, "URL", "endpoint override",              \
                        "llm.base_url"},                                                            \
    [F_LLM_API_KEY_SECRET] = {"llm-api-key-secret", 0, AZ_FLAG_VALUE, "SECRET",                     \
                              "name of the stored secret holding the API key",                     \
                              "llm.api_key_secret"},                                                \
    [F_TEMPERATURE] = {"temperature", 0, AZ_FLAG_VALUE, "T",                                        \
                       "sampling temperature; \"\" = provider default", "llm.temperature"},        \
    [F_MAX_TOKENS] = {"max-tokens", 0, AZ_FLAG_VALUE, "N", "max completion tokens per call",        \
                      "llm.max_tokens"},                                                            \
    [F_LLM_TIMEOUT] = {"llm-timeout", 0, AZ_FLAG_VALUE, "DURATION",                                 \
                       "deadline of one model call, e.g. 30s; \"\" = default", "llm.timeout"},     \
    [F_TOOL] = {"tool", 0, AZ_FLAG_LIST, "NAME", "a tool the agent may call (repeatable)",          \
                "tools"},                                                                           \
    [F_ALLOW_DELEGATION] = {"allow-delegation", 0, AZ_FLAG_BOOL, NULL,                              \
                            "may delegate to other agents (--allow-delegation=false to unset)",    \
                            "allow_delegation"},                                                    \
    [F_MAX_ITER] = {"max-iter", 0, AZ_FLAG_VALUE, "N", "max reasoning iterations per task",         \
                    "max_iter"},                                                                    \
    [F_MAX_RPM] = {"max-rpm", 0, AZ_FLAG_VALUE, "N", "max model calls per minute; 0 = unlimited",  \
                   "max_rpm"},                                                                      \
    [F_MAX_EXECUTION_TIME] = {"max-execution-time", 0, AZ_FLAG_VALUE, "DURATION",                   \
                              "deadline of a task attempt, e.g. 5m; \"\" = none",                  \
                              "max_execution_time"},                                                \
    [F_MEMORY] = {"memory", 0, AZ_FLAG_BOOL, NULL, "keep long-term memory (--memory=false)",         \
                  "memory"},                                                                        \
    [F_DISABLED] = {"disabled", 0, AZ_FLAG_BOOL, NULL, "take no new tasks (--disabled=false)",      \
                    "disabled"},                                                                    \
    [F_LABEL] = {"label", 0, AZ_FLAG_LIST, "KEY=VALUE", "a label (repeatable)", "labels"}

typedef az_err (*set_fn)(void *target, size_t off, const char *flag, const az_flag_value *v,
                         az_arena *ar, char *msg);

#define FIELD(target, off, type) ((type *)(void *)((char *)(target) + (off)))

static az_err set_string(void *t, size_t off, const char *flag, const az_flag_value *v,
                         az_arena *ar, char *msg)
{
    *FIELD(t, off, char *) = (char *)v->value;
    return AZ_OK;
}

static az_err set_count(void *t, size_t off, const char *flag, const az_flag_value *v,
                        az_arena *ar, char *msg)
{
    return az_args_int32(flag, v->value, 0, INT32_MAX, FIELD(t, off, int32_t), msg);
}

static az_err set_bool(void *t, size_t off, const char *flag, const az_flag_value *v,
                       az_arena *ar, char *msg)
{
    *FIELD(t, off, protobuf_c_boolean) = az_args_bool(v);
    return AZ_OK;
}

/* An empty value leaves the Duration unset, which clears it on update. */
static az_err set_duration(void *t, size_t off, const char *flag, const az_flag_value *v,
                           az_arena *ar, char *msg)
{
    Google__Protobuf__Duration **slot = FIELD(t, off, Google__Protobuf__Duration *);
    *slot = NULL;
    if (!*v->value) return AZ_OK;
    Google__Protobuf__Duration *d = az_arena_alloc(ar, sizeof *d);
    if (!d) return az_fail(msg, AZ_ERR_NOMEM, "%s: out of memory", flag);
    google__protobuf__duration__init(d);
    az_err err = az_args_duration(flag, v->value, &d->seconds, &d->nanos, msg);
    if (err) return err;
    *slot = d;
    return AZ_OK;
}

static az_err set_double_value(void *t, size_t off, const char *flag, const az_flag_value *v,
                               az_arena *ar, char *msg)
{
    Google__Protobuf__DoubleValue **slot = FIELD(t, off, Google__Protobuf__DoubleValue *);
    *slot = NULL;
    if (!*v->value) return AZ_OK;
    Google__Protobuf__DoubleValue *d = az_arena_alloc(ar, sizeof *d);
    if (!d) return az_fail(msg, AZ_ERR_NOMEM, "%s: out of memory", flag);
    google__protobuf__double_value__init(d);
    az_err err = az_args_double(flag, v->value, &d->value, msg);
    if (err) return err;
    *slot = d;
    return AZ_OK;
}

static az_err set_tools(void *t, size_t off, const char *flag, const az_flag_value *v,
                        az_arena *ar, char *msg)
{
    Agentz__V1__Agent *a = t;
    a->tools = az_arena_alloc(ar, (size_t)v->count * sizeof *a->tools);
    if (!a->tools) return az_fail(msg, AZ_ERR_NOMEM, "%s: out of memory", flag);
    a->n_tools = 0;
    for (int i = 0; i < v->count; i++) {
        if (!*v->list[i]) return az_fail(msg, AZ_ERR_INVALID, "%s: empty tool name", flag);
        a->tools[a->n_tools++] = (char *)v->list[i];
    }
    return AZ_OK;
}

/* Labels given twice keep the last value, as a map would. */
static az_err set_labels(void *t, size_t off, const char *flag, const az_flag_value *v,
                         az_arena *ar, char *msg)
{
    Agentz__V1__Agent *a = t;
    a->labels = az_arena_alloc(ar, (size_t)v->count * sizeof *a->labels);
    if (!a->labels) return az_fail(msg, AZ_ERR_NOMEM, "%s: out of memory", flag);
    a->n_labels = 0;
    for (int i = 0; i < v->count; i++) {
        size_t klen;
        const char *value;
        az_err err = az_args_kv(flag, v->list[i], &klen, &value, msg);
        if (err) return err;
        char *key = az_arena_strndup(ar, v->list[i], klen);
        if (!key) return az_fail(msg, AZ_ERR_NOMEM, "%s: out of memory", flag);
        Agentz__V1__Agent__LabelsEntry *e = NULL;
        for (size_t j = 0; j < a->n_labels && !e; j++)
            if (strcmp(a->labels[j]->key, key) == 0) e = a->labels[j];
        if (!e) {
            if (!(e = az_arena_alloc(ar, sizeof *e)))
                return az_fail(msg, AZ_ERR_NOMEM, "%s: out of memory", flag);
            agentz__v1__agent__labels_entry__init(e);
            e->key = key;
            a->labels[a->n_labels++] = e;
        }
        e->value = (char *)value;
    }
    return AZ_OK;
}

static const struct {
    set_fn set;
    int in_llm; /* the field lives in agent.llm */
    size_t off;
} setters[F__AGENT] = {
    [F_NAME] = {set_string, 0, offsetof(Agentz__V1__Agent, name)},
    [F_ROLE] = {set_string, 0, offsetof(Agentz__V1__Agent, role)},
    [F_GOAL] = {set_string, 0, offsetof(Agentz__V1__Agent, goal)},
    [F_BACKSTORY] = {set_string, 0, offsetof(Agentz__V1__Agent, backstory)},
    [F_LLM_PROVIDER] = {set_string, 1, offsetof(Agentz__V1__LlmConfig, provider)},
    [F_LLM_MODEL] = {set_string, 1, offsetof(Agentz__V1__LlmConfig, model)},
    [F_LLM_BASE_URL] = {set_string, 1, offsetof(Agentz__V1__LlmConfig, base_url)},
    [F_LLM_API_KEY_SECRET] = {set_string, 1, offsetof(Agentz__V1__LlmConfig, api_key_secret)},
    [F_TEMPERATURE] = {set_double_value, 1, offsetof(Agentz__V1__LlmConfig, temperature)},
    [F_MAX_TOKENS] = {set_count, 1, offsetof(Agentz__V1__LlmConfig, max_tokens)},
    [F_LLM_TIMEOUT] = {set_duration, 1, offsetof(Agentz__V1__LlmConfig, timeout)},
    [F_TOOL] = {set_tools, 0, 0},
    [F_ALLOW_DELEGATION] = {set_bool, 0, offsetof(Agentz__V1__Agent, allow_delegation)},
    [F_MAX_ITER] = {set_count, 0, offsetof(Agentz__V1__Agent, max_iter)},
    [F_MAX_RPM] = {set_count, 0, offsetof(Agentz__V1__Agent, max_rpm)},
    [F_MAX_EXECUTION_TIME] = {set_duration, 0, offsetof(Agentz__V1__Agent, max_execution_time)},
    [F_MEMORY] = {set_bool, 0, offsetof(Agentz__V1__Agent, memory)},
    [F_DISABLED] = {set_bool, 0, offsetof(Agentz__V1__Agent, disabled)},
    [F_LABEL] = {set_labels, 0, 0},
};

static Agentz__V1__Agent *new_agent(az_arena *ar)
{
    Agentz__V1__Agent *a = az_arena_alloc(ar, sizeof *a);
    if (a) agentz__v1__agent__init(a);
    return a;
}

/* Applies every given agent field flag to a. Memory comes from ar; strings point into argv. */
static az_err apply_agent_flags(Agentz__V1__Agent *a, const az_flag *flags,
                                const az_flag_value *values, az_arena *ar, char *msg)
{
    for (size_t i = 0; i < F__AGENT; i++) {
        if (!values[i].count) continue;
        void *target = a;
        if (setters[i].in_llm) {
            if (!a->llm) {
                if (!(a->llm = az_arena_alloc(ar, sizeof *a->llm)))
                    return az_fail(msg, AZ_ERR_NOMEM, "out of memory");
                agentz__v1__llm_config__init(a->llm);
            }
            target = a->llm;
        }
        char flag[64];
        snprintf(flag, sizeof flag, "--%s", flags[i].name);
        az_err err = setters[i].set(target, setters[i].off, flag, &values[i], ar, msg);
        if (err) return err;
    }
    return AZ_OK;
}

/* Prints a single agent (create, get, update) and frees it. */
static int print_agent(az_cli *cli, ProtobufCMessage *m)
{
    int code = az_cli_print(cli, m);
    protobuf_c_message_free_unpacked(m, NULL);
    return code;
}

/* ---- create ---- */

enum { C_FILE = F__AGENT, C__COUNT };

static const az_flag create_flags[C__COUNT] = {
    AGENT_FLAGS,
    [C_FILE] = {"file", 'f', AZ_FLAG_VALUE, "FILE",
                "proto3 JSON of an Agent ('-' = stdin); flags override its fields", NULL},
};

static int run_create(az_cli *cli, const az_flag_value *v, const char *const *args, size_t nargs)
{
    static const int required[] = {F_ROLE, F_GOAL, F_BACKSTORY};
    char msg[AZ_MSG_MAX];
    int code;
    az_arena *ar = az_arena_new(0);
    if (!ar) return az_cli_out_of_memory(cli);
    Agentz__V1__Agent *a = NULL;
    if (v[C_FILE].count) {
        char *json;
        size_t len;
        az_err err = az_file_read(v[C_FILE].value, &json, &len, msg);
        if (err) {
            code = err == AZ_ERR_NOMEM ? az_cli_out_of_memory(cli) : az_cli_usage_error(cli, "-f: %s", msg);
            goto done;
        }
        ProtobufCMessage *m = NULL;
        char why[AZ_MSG_MAX];
        err = az_pbjson_decode(&agentz__v1__agent__descriptor, json, len, az_arena_allocator(ar),
                               &m, why);
        free(json);
        if (err) {
            char full[AZ_MSG_MAX + 264];
            snprintf(full, sizeof full, "%.255s: %s",
                     strcmp(v[C_FILE].value, "-") ? v[C_FILE].value : "stdin", why);
            code = az_cli_fail(cli, AZ_CLI_EXIT_USAGE, err, full);
            goto done;
        }
        a = (Agentz__V1__Agent *)m;
    } else {
        for (size_t i = 0; i < sizeof required / sizeof required[0]; i++)
            if (!v[required[i]].count) {
                code = az_cli_usage_error(cli, "--%s is required (or give the agent with -f FILE)",
                                          create_flags[required[i]].name);
                goto done;
            }
        if (!(a = new_agent(ar))) {
            code = az_cli_out_of_memory(cli);
            goto done;
        }
    }
    if (apply_agent_flags(a, create_flags, v, ar, msg)) {
        code = az_cli_usage_error(cli, "%s", msg);
        goto done;
    }
    Agentz__V1__CreateAgentRequest req = AGENTZ__V1__CREATE_AGENT_REQUEST__INIT;
    req.agent = a;
    if (cli->request_id) req.request_id = (char *)cli->request_id;
    ProtobufCMessage *resp;
    code = az_cli_call(cli, SERVICE "CreateAgent", &req.base, &agentz__v1__agent__descriptor, &resp);
    if (!code) code = print_agent(cli, resp);
done:
    az_arena_free(ar);
    return code;
}

/* ---- get ---- */

static int run_get(az_cli *cli, const az_flag_value *v, const char *const *args, size_t nargs)
{
    Agentz__V1__GetAgentRequest req = AGENTZ__V1__GET_AGENT_REQUEST__INIT;
    req.id = (char *)args[0];
    ProtobufCMessage *resp;
    int code = az_cli_call(cli, SERVICE "GetAgent", &req.base, &agentz__v1__agent__descriptor, &resp);
    return code ? code : print_agent(cli, resp);
}

/* ---- list ---- */

enum { L_PAGE_SIZE, L_PAGE_TOKEN, L_STATUS, L_SELECTOR, L_ALL, L__COUNT };

static const az_flag list_flags[L__COUNT] = {
    [L_PAGE_SIZE] = {"page-size", 0, AZ_FLAG_VALUE, "N", "agents per page (server default 50, max 1000)", NULL},
    [L_PAGE_TOKEN] = {"page-token", 0, AZ_FLAG_VALUE, "TOKEN", "continue from a previous page", NULL},
    [L_STATUS] = {"status", 0, AZ_FLAG_VALUE, "STATUS", "only idle, busy, disabled or error agents", NULL},
    [L_SELECTOR] = {"selector", 'l', AZ_FLAG_VALUE, "K=V,...", "only agents having all these labels", NULL},
    [L_ALL] = {"all", 0, AZ_FLAG_BOOL, NULL, "follow next_page_token and print every page", NULL},
};

static int print_agent_table(az_cli *cli, Agentz__V1__ListAgentsResponse **pages, size_t npages)
{
    static const char *const headers[] = {"ID", "NAME", "ROLE", "STATUS", "MODEL", "UPDATED"};
    char msg[AZ_MSG_MAX];
    az_table *t = az_table_new(6, headers);
    if (!t) return az_cli_out_of_memory(cli);
    /* Ids must stay whole to be copied; status and age are short anyway. */
    az_table_keep(t, 0);
    az_table_keep(t, 3);
    az_table_keep(t, 5);
    int64_t now = (int64_t)time(NULL);
    for (size_t p = 0; p < npages; p++)
        for (size_t i = 0; i < pages[p]->n_agents; i++) {
            const Agentz__V1__Agent *a = pages[p]->agents[i];
            char status[32], updated[32];
            const char *cells[6] = {
                a->id,
                a->name,
                a->role,
                az_output_enum(&agentz__v1__agent_status__descriptor, STATUS_PREFIX,
                               (int)a->status, status, sizeof status),
                a->llm ? a->llm->model : "",
                a->update_time ? az_output_age(a->update_time->seconds, now, updated, sizeof updated)
                               : "",
            };
            if (az_table_add(t, cells, msg)) {
                az_table_free(t);
                return az_cli_out_of_memory(cli);
            }
        }
    if (az_table_rows(t))
        az_table_print(t, cli->out, az_table_width(cli->out));
    else
        fprintf(cli->err, "no agents found\n");
    az_table_free(t);
    const Agentz__V1__ListAgentsResponse *last = pages[npages - 1];
    if (*last->next_page_token)
        fprintf(cli->err, "more agents: --page-token %s (or --all)\n", last->next_page_token);
    return AZ_CLI_EXIT_OK;
}

/* json/yaml: one ListAgentsResponse; with several pages, their agents merged into one. */
static int print_agent_pages(az_cli *cli, Agentz__V1__ListAgentsResponse **pages, size_t npages)
{
    if (npages == 1) return az_cli_print(cli, &pages[0]->base);
    Agentz__V1__ListAgentsResponse merged = AGENTZ__V1__LIST_AGENTS_RESPONSE__INIT;
    size_t n = 0;
    for (size_t p = 0; p < npages; p++) n += pages[p]->n_agents;
    merged.agents = calloc(n ? n : 1, sizeof *merged.agents);
    if (!merged.agents) return az_cli_out_of_memory(cli);
    for (size_t p = 0; p < npages; p++)
        for (size_t i = 0; i < pages[p]->n_agents; i++)
            merged.agents[merged.n_agents++] = pages[p]->agents[i];
    merged.total_size = pages[npages - 1]->total_size;
    int code = az_cli_print(cli, &merged.base);
    free(merged.agents); /* the agents belong to their pages */
    return code;
}

static int run_list(az_cli *cli, const az_flag_value *v, const char *const *args, size_t nargs)
{
    char msg[AZ_MSG_MAX];
    Agentz__V1__ListAgentsRequest req = AGENTZ__V1__LIST_AGENTS_REQUEST__INIT;
    if (v[L_PAGE_SIZE].count &&
        az_args_int32("--page-size", v[L_PAGE_SIZE].value, 0, INT32_MAX, &req.page_size, msg))
        return az_cli_usage_error(cli, "%s", msg);
    if (v[L_PAGE_TOKEN].count) req.page_token = (char *)v[L_PAGE_TOKEN].value;
    int status = 0;
    if (v[L_STATUS].count && az_args_enum("--status", &agentz__v1__agent_status__descriptor,
                                          STATUS_PREFIX, v[L_STATUS].value, &status, msg))
        return az_cli_usage_error(cli, "%s", msg);
    req.status = (Agentz__V1__AgentStatus)status;
    if (v[L_SELECTOR].count && *v[L_SELECTOR].value) {
        if (az_args_selector("--selector", v[L_SELECTOR].value, msg))
            return az_cli_usage_error(cli, "%s", msg);
        req.label_selector = (char *)v[L_SELECTOR].value;
    }
    int all = az_args_bool(&v[L_ALL]);

    Agentz__V1__ListAgentsResponse **pages = NULL;
    size_t npages = 0;
    int code = AZ_CLI_EXIT_OK;
    for (;;) {
        ProtobufCMessage *m;
        if ((code = az_cli_call(cli, SERVICE "ListAgents", &req.base,
                                &agentz__v1__list_agents_response__descriptor, &m)))
            break;
        Agentz__V1__ListAgentsResponse **bigger = realloc(pages, (npages + 1) * sizeof *pages);
        if (!bigger) {
            protobuf_c_message_free_unpacked(m, NULL);
            code = az_cli_out_of_memory(cli);
            break;
        }
        pages = bigger;
        pages[npages++] = (Agentz__V1__ListAgentsResponse *)m;
        const char *next = pages[npages - 1]->next_page_token;
        if (!all || !*next) break;
        /* A server handing back the token it was given would loop forever. */
        if (strcmp(next, req.page_token) == 0) {
            code = az_cli_fail(cli, AZ_CLI_EXIT_FAILED, AZ_ERR_INTERNAL,
                               "the server returned the same page token twice");
            break;
        }
        req.page_token = (char *)next;
    }
    if (!code)
        code = cli->output == AZ_OUTPUT_TABLE ? print_agent_table(cli, pages, npages)
                                              : print_agent_pages(cli, pages, npages);
    for (size_t p = 0; p < npages; p++) protobuf_c_message_free_unpacked(&pages[p]->base, NULL);
    free(pages);
    return code;
}

/* ---- update ---- */

enum { U_ETAG = F__AGENT, U_CLEAR_LABELS, U_CLEAR_TOOLS, U__COUNT };

static const az_flag update_flags[U__COUNT] = {
    AGENT_FLAGS,
    [U_ETAG] = {"etag", 0, AZ_FLAG_VALUE, "ETAG", "fail with ABORTED unless the agent still has this etag", NULL},
    [U_CLEAR_LABELS] = {"clear-labels", 0, AZ_FLAG_BOOL, NULL, "remove every label (then add --label ones)", "labels"},
    [U_CLEAR_TOOLS] = {"clear-tools", 0, AZ_FLAG_BOOL, NULL, "remove every tool (then add --tool ones)", "tools"},
};

static int run_update(az_cli *cli, const az_flag_value *v, const char *const *args, size_t nargs)
{
    char msg[AZ_MSG_MAX];
    const char **paths = NULL;
    size_t npaths = 0;
    az_flag_set set = {update_flags, (az_flag_value *)v, U__COUNT};
    int code;
    az_arena *ar = az_arena_new(0);
    if (!ar) return az_cli_out_of_memory(cli);
    if (az_args_mask_paths(&set, &paths, &npaths, msg)) {
        code = az_cli_out_of_memory(cli);
        goto done;
    }
    /* An empty mask would mean "every writable field": never send one by accident. */
    if (!npaths) {
        code = az_cli_usage_error(cli, "nothing to update: give at least one field flag");
        goto done;
    }
    Agentz__V1__Agent *a = new_agent(ar);
    if (!a) {
        code = az_cli_out_of_memory(cli);
        goto done;
    }
    if (apply_agent_flags(a, update_flags, v, ar, msg)) {
        code = az_cli_usage_error(cli, "%s", msg);
        goto done;
    }
    a->id = (char *)args[0];
    if (v[U_ETAG].count) a->etag = (char *)v[U_ETAG].value;
    Google__Protobuf__FieldMask mask = GOOGLE__PROTOBUF__FIELD_MASK__INIT;
    mask.paths = (char **)paths;
    mask.n_paths = npaths;
    Agentz__V1__UpdateAgentRequest req = AGENTZ__V1__UPDATE_AGENT_REQUEST__INIT;
    req.agent = a;
    req.update_mask = &mask;
    ProtobufCMessage *resp;
    code = az_cli_call(cli, SERVICE "UpdateAgent", &req.base, &agentz__v1__agent__descriptor, &resp);
    if (!code) code = print_agent(cli, resp);
done:
    free(paths);
    az_arena_free(ar);
    return code;
}

/* ---- delete ---- */

enum { D_ETAG, D__COUNT };

static const az_flag delete_flags[D__COUNT] = {
    [D_ETAG] = {"etag", 0, AZ_FLAG_VALUE, "ETAG", "fail with ABORTED unless the agent still has this etag", NULL},
};

static int run_delete(az_cli *cli, const az_flag_value *v, const char *const *args, size_t nargs)
{
    Agentz__V1__DeleteAgentRequest req = AGENTZ__V1__DELETE_AGENT_REQUEST__INIT;
    req.id = (char *)args[0];
    if (v[D_ETAG].count) req.etag = (char *)v[D_ETAG].value;
    ProtobufCMessage *resp;
    int code = az_cli_call(cli, SERVICE "DeleteAgent", &req.base,
                           &google__protobuf__empty__descriptor, &resp);
    if (code) return code;
    if (cli->output == AZ_OUTPUT_TABLE) {
        fprintf(cli->out, "deleted agent %s\n", args[0]);
    } else {
        code = az_cli_print(cli, resp);
    }
    protobuf_c_message_free_unpacked(resp, NULL);
    return code;
}

/* ---- watch ---- */

enum { W_SELECTOR, W_AFTER, W_METRICS, W__COUNT };

static const az_flag watch_flags[W__COUNT] = {
    [W_SELECTOR] = {"selector", 'l', AZ_FLAG_VALUE, "K=V,...", "only agents having all these labels", NULL},
    [W_AFTER] = {"after-sequence", 0, AZ_FLAG_VALUE, "N", "first replay stored events after N", NULL},
    [W_METRICS] = {"metrics", 0, AZ_FLAG_BOOL, NULL, "also stream per-agent metrics every 10s", NULL},
};

/* One line per event in table mode; heartbeats are not news. */
static void print_event_line(az_cli *cli, const Agentz__V1__Event *e)
{
    char when[32], from[32], to[32];
    az_output_time(e->time ? e->time->seconds : 0, when, sizeof when);
    fprintf(cli->out, "%-20s  %-8lld  %-24s  ", when, (long long)e->sequence, e->agent_id);
    if (e->payload_case == AGENTZ__V1__EVENT__PAYLOAD_AGENT_STATUS) {
        const Agentz__V1__AgentStatusChanged *s = e->agent_status;
        fprintf(cli->out, "%s -> %s%s%s\n",
                az_output_enum(&agentz__v1__agent_status__descriptor, STATUS_PREFIX, (int)s->from,
                               from, sizeof from),
                az_output_enum(&agentz__v1__agent_status__descriptor, STATUS_PREFIX, (int)s->to, to,
                               sizeof to),
                *s->reason ? ": " : "", s->reason);
        return;
    }
    const ProtobufCFieldDescriptor *fd =
        protobuf_c_message_descriptor_get_field(&agentz__v1__event__descriptor, (unsigned)e->payload_case);
    fprintf(cli->out, "%s\n", fd ? fd->name : "event");
}

static int run_watch(az_cli *cli, const az_flag_value *v, const char *const *args, size_t nargs)
{
    char msg[AZ_MSG_MAX];
    Agentz__V1__WatchAgentsRequest req = AGENTZ__V1__WATCH_AGENTS_REQUEST__INIT;
    req.agent_ids = (char **)args;
    req.n_agent_ids = nargs;
    if (v[W_SELECTOR].count && *v[W_SELECTOR].value) {
        if (az_args_selector("--selector", v[W_SELECTOR].value, msg))
            return az_cli_usage_error(cli, "%s", msg);
        req.label_selector = (char *)v[W_SELECTOR].value;
    }
    if (v[W_AFTER].count && az_args_int64("--after-sequence", v[W_AFTER].value, 0, INT64_MAX,
                                          &req.after_sequence, msg))
        return az_cli_usage_error(cli, "%s", msg);
    req.include_metrics = az_args_bool(&v[W_METRICS]);

    az_conn_stream *s;
    int code = az_cli_stream(cli, SERVICE "WatchAgents", &req.base, &agentz__v1__event__descriptor, &s);
    if (code) return code;
    for (;;) {
        ProtobufCMessage *m;
        int status;
        az_err err = az_conn_stream_next(s, &m, &status, msg);
        if (err) {
            fprintf(cli->err, "error: %s: %s\n", az_conn_status_name(status), msg);
            code = AZ_CLI_EXIT_FAILED;
            break;
        }
        if (!m) break;
        const Agentz__V1__Event *e = (const Agentz__V1__Event *)m;
        if (cli->output == AZ_OUTPUT_JSON) {
            /* One compact document per line, so the output can be piped to jq. */
            char *json;
            if (az_pbjson_encode(m, 0, &json, msg) == AZ_OK) {
                fprintf(cli->out, "%s\n", json);
                free(json);
            }
        } else if (cli->output == AZ_OUTPUT_YAML) {
            fputs("---\n", cli->out);
            az_output_message(cli->out, m, AZ_OUTPUT_YAML, msg);
        } else if (e->payload_case != AGENTZ__V1__EVENT__PAYLOAD_HEARTBEAT) {
            print_event_line(cli, e);
        }
        fflush(cli->out);
        protobuf_c_message_free_unpacked(m, NULL);
    }
    az_conn_stream_close(s);
    return code;
}

/* ---- memory ---- */

enum { M_QUERY, M_PAGE_SIZE, M_PAGE_TOKEN, M_ALL, M__COUNT };

static const az_flag memory_flags[M__COUNT] = {
    [M_QUERY] = {"query", 'q', AZ_FLAG_VALUE, "TEXT", "only entries whose summary contains TEXT (any case)", NULL},
    [M_PAGE_SIZE] = {"page-size", 0, AZ_FLAG_VALUE, "N", "entries per page (server default 50, max 1000)", NULL},
    [M_PAGE_TOKEN] = {"page-token", 0, AZ_FLAG_VALUE, "TOKEN", "continue from a previous page", NULL},
    [M_ALL] = {"all", 0, AZ_FLAG_BOOL, NULL, "follow next_page_token and print every page", NULL},
};

static int print_memory_table(az_cli *cli, ProtobufCMessage **pages, size_t npages)
{
    static const char *const headers[] = {"CREATED", "TASK", "SUMMARY"};
    char msg[AZ_MSG_MAX];
    az_table *t = az_table_new(3, headers);
    if (!t) return az_cli_out_of_memory(cli);
    az_table_keep(t, 0);
    az_table_keep(t, 1);
    for (size_t p = 0; p < npages; p++) {
        const Agentz__V1__AgentMemory *m = (const Agentz__V1__AgentMemory *)pages[p];
        for (size_t i = 0; i < m->n_entries; i++) {
            const Agentz__V1__MemoryEntry *e = m->entries[i];
            char created[32];
            /* The table turns the summary's newline into a space: one entry, one line. */
            const char *cells[3] = {
                az_output_time(e->create_time ? e->create_time->seconds : 0, created, sizeof created),
                e->task_id, e->summary};
            if (az_table_add(t, cells, msg)) {
                az_table_free(t);
                return az_cli_out_of_memory(cli);
            }
        }
    }
    if (az_table_rows(t))
        az_table_print(t, cli->out, az_table_width(cli->out));
    else
        fprintf(cli->err, "no memory entries\n");
    az_table_free(t);
    const Agentz__V1__AgentMemory *last = (const Agentz__V1__AgentMemory *)pages[npages - 1];
    if (*last->next_page_token)
        fprintf(cli->err, "more entries: --page-token %s (or --all)\n", last->next_page_token);
    return AZ_CLI_EXIT_OK;
}

static int run_memory(az_cli *cli, const az_flag_value *v, const char *const *args, size_t nargs)
{
    char msg[AZ_MSG_MAX];
    Agentz__V1__GetAgentMemoryRequest req = AGENTZ__V1__GET_AGENT_MEMORY_REQUEST__INIT;
    req.agent_id = (char *)args[0];
    if (v[M_QUERY].count) req.query = (char *)v[M_QUERY].value;
    if (v[M_PAGE_SIZE].count &&
        az_args_int32("--page-size", v[M_PAGE_SIZE].value, 0, INT32_MAX, &req.page_size, msg))
        return az_cli_usage_error(cli, "%s", msg);
    if (v[M_PAGE_TOKEN].count) req.page_token = (char *)v[M_PAGE_TOKEN].value;
    ProtobufCMessage **pages;
    size_t npages;
    int code = az_cli_fetch_pages(cli, SERVICE "GetAgentMemory", &req.base, &req.page_token,
                                  &agentz__v1__agent_memory__descriptor, az_args_bool(&v[M_ALL]),
                                  &pages, &npages);
    if (code) return code;
    code = cli->output == AZ_OUTPUT_TABLE ? print_memory_table(cli, pages, npages)
                                          : az_cli_print_pages(cli, pages, npages, "entries");
    az_cli_free_pages(pages, npages);
    return code;
}

static int run_clear_memory(az_cli *cli, const az_flag_value *v, const char *const *args, size_t nargs)
{
    Agentz__V1__ClearAgentMemoryRequest req = AGENTZ__V1__CLEAR_AGENT_MEMORY_REQUEST__INIT;
    req.agent_id = (char *)args[0];
    ProtobufCMessage *resp;
    int code = az_cli_call(cli, SERVICE "ClearAgentMemory", &req.base,
                           &google__protobuf__empty__descriptor, &resp);
    if (code) return code;
    if (cli->output == AZ_OUTPUT_TABLE) {
        fprintf(cli->out, "cleared the memory of agent %s\n", args[0]);
    } else {
        code = az_cli_print(cli, resp);
    }
    protobuf_c_message_free_unpacked(resp, NULL);
    return code;
}

/* ---- metrics ---- */

enum { X_SINCE, X__COUNT };

static const az_flag metrics_flags[X__COUNT] = {
    [X_SINCE] = {"since", 0, AZ_FLAG_VALUE, "DURATION", "window ending now, e.g. 1h, 24h or 7d (default 24h)", NULL},
};

static int run_metrics(az_cli *cli, const az_flag_value *v, const char *const *args, size_t nargs)
{
    char msg[AZ_MSG_MAX];
    Agentz__V1__GetAgentMetricsRequest req = AGENTZ__V1__GET_AGENT_METRICS_REQUEST__INIT;
    req.agent_id = (char *)args[0];
    Google__Protobuf__Timestamp start = GOOGLE__PROTOBUF__TIMESTAMP__INIT;
    if (v[X_SINCE].count) {
        int64_t secs;
        if (az_args_days_duration("--since", v[X_SINCE].value, &secs, msg))
            return az_cli_usage_error(cli, "%s", msg);
        if (secs <= 0) return az_cli_usage_error(cli, "--since: must be longer than 0s");
        start.seconds = (int64_t)time(NULL) - secs;
        req.start_time = &start;
    }
    ProtobufCMessage *resp;
    int code = az_cli_call(cli, SERVICE "GetAgentMetrics", &req.base,
                           &agentz__v1__agent_metrics__descriptor, &resp);
    return code ? code : az_cli_print_free(cli, resp);
}

/* ---- the noun ---- */

static const az_cli_verb verbs[] = {
    {"create", "", "Create an agent from flags or a JSON file",
     "Without -f, --role, --goal and --backstory are required. With -f FILE the agent is read as\n"
     "proto3 JSON (the shape 'agentz agents get ID -o json' prints); flags given as well override\n"
     "the file's fields. --request-id makes the call idempotent: a retry with the same id\n"
     "returns the agent created first.",
     create_flags, C__COUNT, 0, 0, run_create},
    {"get", "ID", "Show one agent", NULL, NULL, 0, 1, 1, run_get},
    {"list", "", "List agents, one page or --all",
     "Table output shows one page (50 agents unless --page-size) and prints the token of the\n"
     "next page on stderr; --all fetches every page.",
     list_flags, L__COUNT, 0, 0, run_list},
    {"update", "ID", "Change the fields given as flags",
     "Only the fields whose flags are given are changed (they form the update mask); a flag\n"
     "with an empty value (--name \"\") clears that field. --tool and --label replace the whole\n"
     "list or map. Bool fields take =false to unset (--memory=false).",
     update_flags, U__COUNT, 1, 1, run_update},
    {"delete", "ID", "Delete an agent", NULL, delete_flags, D__COUNT, 1, 1, run_delete},
    {"memory", "ID", "Show what an agent remembers, newest first",
     "Each entry is a summary of a task the agent finished with memory on. --query keeps the\n"
     "entries whose summary contains the text (any case). Table output shows one page and prints\n"
     "the next page's token on stderr; --all fetches every page.",
     memory_flags, M__COUNT, 1, 1, run_memory},
    {"clear-memory", "ID", "Forget everything an agent remembers", NULL, NULL, 0, 1, 1,
     run_clear_memory},
    {"metrics", "ID", "Task counts, usage and latencies of an agent",
     "Tasks started, succeeded and failed in the window (--since back from now; the server's\n"
     "default is the last 24 hours), tasks running now, tokens and cost, p50/p95 duration.",
     metrics_flags, X__COUNT, 1, 1, run_metrics},
    {"watch", "[ID...]", "Stream agent status changes until interrupted",
     "Prints one line per status change (table), one JSON document per line (-o json) or one\n"
     "YAML document per event (-o yaml). Without IDs every agent of the workspace is watched.\n"
     "--timeout does not apply.",
     watch_flags, W__COUNT, 0, 1000, run_watch},
};

const az_cli_noun az_cli_agents = {
    .name = "agents",
    .alias = "agent",
    .summary = "Create, inspect, change, delete and watch agents; their memory and metrics",
    .verbs = verbs,
    .nverbs = sizeof verbs / sizeof verbs[0],
};
