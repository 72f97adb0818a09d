/* Anthropic Messages, streamed: request body from the neutral model (system prompt top-level,
 * tool results as user tool_result blocks) and the event handler for message_start,
 * content_block_{start,delta,stop}, message_delta, message_stop, ping and error. */
#include "anthropic.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define VERSION "2023-06-01"
#define DEFAULT_MAX_TOKENS 4096 /* the API requires max_tokens */

/* The assistant turn: a text block, then one tool_use block per call with its arguments parsed
 * back into an object (the API wants `input` as JSON, not text). */
static json_t *assistant_content(const az_llm_message *m)
{
    if (!m->n_tool_calls) return json_string(m->content ? m->content : "");
    json_t *a = json_array();
    if (m->content && *m->content)
        json_array_append_new(a, json_pack("{s:s, s:s}", "type", "text", "text", m->content));
    for (size_t i = 0; i < m->n_tool_calls; i++) {
        const az_llm_tool_call *c = &m->tool_calls[i];
        json_t *input = c->arguments ? json_loads(c->arguments, JSON_DECODE_ANY, NULL) : NULL;
        if (!json_is_object(input)) {
            json_decref(input);
            input = json_object();
        }
        json_array_append_new(a, json_pack("{s:s, s:s, s:s, s:o}", "type", "tool_use", "id", c->id,
                                           "name", c->name, "input", input));
    }
    return a;
}

/* Consecutive tool results go into one user turn, as the API expects them. */
static void add_tool_result(json_t *msgs, const az_llm_message *m)
{
    json_t *block = json_pack("{s:s, s:s, s:s}", "type", "tool_result", "tool_use_id",
                              m->tool_call_id, "content", m->content ? m->content : "");
    if (m->is_error) json_object_set_new(block, "is_error", json_true());
    json_t *last = json_array_get(msgs, json_array_size(msgs) - 1);
    json_t *content = json_object_get(last, "content");
    json_t *tail = json_array_get(content, json_array_size(content) - 1);
    const char *role = az_llm_json_str(last, "role");
    if (role && strcmp(role, "user") == 0 && json_is_array(content) &&
        strcmp(az_llm_json_str(tail, "type") ? az_llm_json_str(tail, "type") : "", "tool_result") == 0) {
        json_array_append_new(content, block);
        return;
    }
    json_array_append_new(msgs, json_pack("{s:s, s:[o]}", "role", "user", "content", block));
}

static az_err add_header(struct curl_slist **headers, const char *name, const char *value, char *msg)
{
    size_t n = strlen(name) + strlen(value) + 3;
    char *h = malloc(n);
    if (!h) return az_fail(msg, AZ_ERR_NOMEM, "cannot build anthropic headers");
    snprintf(h, n, "%s: %s", name, value);
    struct curl_slist *l = curl_slist_append(*headers, h);
    memset(h, 0, n); /* may hold the key */
    free(h);
    if (!l) return az_fail(msg, AZ_ERR_NOMEM, "cannot build anthropic headers");
    *headers = l;
    return AZ_OK;
}

static az_err build(const az_llm_request *req, const az_llm_endpoint *ep, char **url,
                    struct curl_slist **headers, char **body, char *msg)
{
    json_t *root = json_pack("{s:s, s:i, s:b}", "model", ep->model, "max_tokens",
                             req->max_tokens > 0 ? req->max_tokens : DEFAULT_MAX_TOKENS, "stream", 1);
    json_t *msgs = json_array();
    az_llm_buf system = {0};
    az_err e = AZ_OK;
    if (!root || !msgs) {
        e = az_fail(msg, AZ_ERR_NOMEM, "cannot build anthropic request");
        json_decref(msgs);
        goto out;
    }
    json_object_set_new(root, "messages", msgs);
    for (size_t i = 0; !e && i < req->n_messages; i++) {
        const az_llm_message *m = &req->messages[i];
        const char *text = m->content ? m->content : "";
        switch (m->role) {
        case AZ_LLM_SYSTEM:
            /* There is no system role: all system text becomes the top-level prompt. */
            if (system.len) e = az_llm_buf_add(&system, "\n\n", 2, msg);
            if (!e) e = az_llm_buf_add(&system, text, strlen(text), msg);
            break;
        case AZ_LLM_USER:
            json_array_append_new(msgs, json_pack("{s:s, s:s}", "role", "user", "content", text));
            break;
        case AZ_LLM_ASSISTANT:
            json_array_append_new(msgs, json_pack("{s:s, s:o}", "role", "assistant", "content",
                                                  assistant_content(m)));
            break;
        case AZ_LLM_TOOL:
            add_tool_result(msgs, m);
            break;
        default:
            e = az_fail(msg, AZ_ERR_INVALID, "messages[%zu].role: unknown role %d", i, (int)m->role);
        }
    }
    if (e) goto out;
    if (system.len) json_object_set_new(root, "system", json_string(system.p));
    if (req->n_tools) {
        json_t *tools = json_array();
        json_object_set_new(root, "tools", tools);
        for (size_t i = 0; i < req->n_tools; i++) {
            const az_llm_tool *t = &req->tools[i];
            json_t *schema = t->parameters ? json_incref(t->parameters)
                                           : json_pack("{s:s, s:{}}", "type", "object", "properties");
            json_array_append_new(tools, json_pack("{s:s, s:s, s:o}", "name", t->name, "description",
                                                   t->description ? t->description : "",
                                                   "input_schema", schema));
        }
    }
    if (req->has_temperature) json_object_set_new(root, "temperature", json_real(req->temperature));
    *body = json_dumps(root, JSON_COMPACT);
    /* Accept a base that already ends in /v1 (as people copy it from OpenAI-style configs). */
    size_t bl = strlen(ep->base_url);
    while (bl > 0 && ep->base_url[bl - 1] == '/') bl--;
    int has_v1 = bl >= 3 && strncmp(ep->base_url + bl - 3, "/v1", 3) == 0;
    *url = az_llm_url(ep->base_url, has_v1 ? "/messages" : "/v1/messages");
    if (ep->api_key && *ep->api_key) e = add_header(headers, "x-api-key", ep->api_key, msg);
    if (!e) e = add_header(headers, "anthropic-version", VERSION, msg);
    if (!e && (!*body || !*url)) e = az_fail(msg, AZ_ERR_NOMEM, "cannot build anthropic request");
out:
    az_llm_buf_free(&system);
    json_decref(root);
    return e;
}

static int64_t int_member(json_t *o, const char *key)
{
    return json_integer_value(json_object_get(o, key));
}

static az_err on_message_start(az_llm_stream *st, json_t *root, char *msg)
{
    json_t *m = json_object_get(root, "message");
    const char *model = az_llm_json_str(m, "model");
    if (model && *model) snprintf(st->model, sizeof st->model, "%s", model);
    json_t *u = json_object_get(m, "usage");
    /* Cached prompt tokens are prompt tokens too (billed differently; see docs/llm.md). */
    st->prompt_tokens = int_member(u, "input_tokens") + int_member(u, "cache_creation_input_tokens") +
                        int_member(u, "cache_read_input_tokens");
    st->completion_tokens = int_member(u, "output_tokens");
    return AZ_OK;
}

/* The call a content block feeds, or NULL for text/thinking blocks. */
static az_llm_pending_call *block_call(az_llm_stream *st, json_t *root, size_t *call)
{
    json_t *ji = json_object_get(root, "index");
    if (!json_is_integer(ji)) return NULL;
    json_int_t i = json_integer_value(ji);
    if (i < 0 || i >= AZ_LLM_MAX_BLOCKS || st->block_call[i] == 0) return NULL;
    *call = (size_t)st->block_call[i] - 1;
    return &st->calls[*call];
}

static az_err on_block_start(az_llm_stream *st, json_t *root, char *msg)
{
    json_t *cb = json_object_get(root, "content_block");
    const char *type = az_llm_json_str(cb, "type");
    if (!type) return AZ_OK;
    if (strcmp(type, "text") == 0) {
        const char *t = az_llm_json_str(cb, "text");
        return t ? az_llm_stream_text(st, t, json_string_length(json_object_get(cb, "text")), msg)
                 : AZ_OK;
    }
    if (strcmp(type, "tool_use") != 0) return AZ_OK; /* thinking, server tools: not ours */
    json_int_t bi = json_integer_value(json_object_get(root, "index"));
    if (bi < 0 || bi >= AZ_LLM_MAX_BLOCKS || st->n_calls >= AZ_LLM_MAX_TOOL_CALLS)
        return az_fail(msg, AZ_ERR_INVALID, "tool_use block %lld beyond our limits", (long long)bi);
    size_t k = st->n_calls++;
    st->block_call[bi] = (int)k + 1;
    az_llm_pending_call *c = &st->calls[k];
    c->slot_used = 1;
    const char *id = az_llm_json_str(cb, "id"), *name = az_llm_json_str(cb, "name");
    az_err e = az_llm_buf_add(&c->id, id ? id : "", id ? strlen(id) : 0, msg);
    if (!e) e = az_llm_buf_add(&c->name, name ? name : "", name ? strlen(name) : 0, msg);
    return e;
}

static az_err on_block_delta(az_llm_stream *st, json_t *root, char *msg)
{
    json_t *d = json_object_get(root, "delta");
    const char *type = az_llm_json_str(d, "type");
    if (!type) return AZ_OK;
    if (strcmp(type, "text_delta") == 0) {
        json_t *t = json_object_get(d, "text");
        return az_llm_stream_text(st, json_string_value(t) ? json_string_value(t) : "",
                                  json_string_length(t), msg);
    }
    if (strcmp(type, "input_json_delta") == 0) {
        size_t k;
        az_llm_pending_call *c = block_call(st, root, &k);
        const char *pj = az_llm_json_str(d, "partial_json");
        if (!c) return az_fail(msg, AZ_ERR_INVALID, "input_json_delta for a block that is no tool_use");
        return pj ? az_llm_buf_add(&c->args, pj, strlen(pj), msg) : AZ_OK;
    }
    return AZ_OK; /* thinking_delta, signature_delta, citations_delta */
}

static az_err on_block_stop(az_llm_stream *st, json_t *root, char *msg)
{
    size_t k;
    return block_call(st, root, &k) ? az_llm_stream_report_call(st, k, msg) : AZ_OK;
}

static az_err on_message_delta(az_llm_stream *st, json_t *root, char *msg)
{
    const char *stop = az_llm_json_str(json_object_get(root, "delta"), "stop_reason");
    if (stop) snprintf(st->stop_raw, sizeof st->stop_raw, "%s", stop);
    json_t *u = json_object_get(root, "usage");
    /* output_tokens here is cumulative for the message. */
    if (json_is_integer(json_object_get(u, "output_tokens")))
        st->completion_tokens = int_member(u, "output_tokens");
    int64_t in = int_member(u, "input_tokens") + int_member(u, "cache_creation_input_tokens") +
                 int_member(u, "cache_read_input_tokens");
    if (in > 0) st->prompt_tokens = in;
    return AZ_OK;
}

static az_err on_message_stop(az_llm_stream *st, json_t *root, char *msg)
{
    st->done = 1;
    for (size_t i = 0; i < st->n_calls; i++) {
        az_err e = az_llm_stream_report_call(st, i, msg);
        if (e) return e;
    }
    return AZ_OK;
}

static az_err on_error(az_llm_stream *st, json_t *root, char *msg)
{
    json_t *err = json_object_get(root, "error");
    return az_llm_stream_fail(st, az_llm_json_str(err, "type"), az_llm_json_str(err, "message"), msg);
}

static az_err on_ignored(az_llm_stream *st, json_t *root, char *msg) { return AZ_OK; }

static const struct {
    const char *type;
    az_err (*fn)(az_llm_stream *st, json_t *root, char *msg);
} EVENTS[] = {
    {"message_start", on_message_start},
    {"content_block_start", on_block_start},
    {"content_block_delta", on_block_delta},
    {"content_block_stop", on_block_stop},
    {"message_delta", on_message_delta},
    {"message_stop", on_message_stop},
    {"error", on_error},
    {"ping", on_ignored},
};

static az_err event(az_llm_stream *st, const az_sse_event *ev, char *msg)
{
    json_error_t jerr;
    json_t *root = json_loadb(ev->data, ev->data_len, 0, &jerr);
    if (!json_is_object(root)) {
        json_decref(root);
        return az_fail(msg, AZ_ERR_INVALID, "malformed anthropic %s event: %s", ev->event, jerr.text);
    }
    /* The data's type is authoritative; the SSE event name repeats it. */
    const char *type = az_llm_json_str(root, "type");
    if (!type) type = ev->event;
    az_err e = AZ_OK;
    for (size_t i = 0; i < sizeof EVENTS / sizeof EVENTS[0]; i++)
        if (strcmp(EVENTS[i].type, type) == 0) {
            e = EVENTS[i].fn(st, root, msg);
            break;
        }
    /* Unknown event types are ignored: the API says new ones may appear. */
    json_decref(root);
    return e;
}

const az_llm_provider az_llm_anthropic = {
    .name = "anthropic",
    .default_base_url = "https://api.anthropic.com",
    .default_model = "claude-3-5-haiku-latest",
    .key_env = "ANTHROPIC_API_KEY",
    .base_env = "ANTHROPIC_BASE_URL",
    .build = build,
    .event = event,
};
