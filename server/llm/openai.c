/* OpenAI chat completions, streamed: request body from the neutral model, and the chunk
 * handler that turns `choices[0].delta` text and tool-call fragments into the stream state.
 * Tool-call fragments arrive keyed by `index`: id and name in the first, arguments spread over
 * many, and several calls may interleave, so they are assembled per index. */
#include "openai.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Indexed by az_llm_role. */
static const char *const ROLE[] = {"system", "user", "assistant", "tool"};

static json_t *tool_calls_json(const az_llm_message *m)
{
    json_t *a = json_array();
    for (size_t i = 0; a && i < m->n_tool_calls; i++) {
        const az_llm_tool_call *c = &m->tool_calls[i];
        json_array_append_new(
            a, json_pack("{s:s, s:s, s:{s:s, s:s}}", "id", c->id ? c->id : "", "type", "function",
                         "function", "name", c->name ? c->name : "", "arguments",
                         c->arguments && *c->arguments ? c->arguments : "{}"));
    }
    return a;
}

static az_err message_json(const az_llm_message *m, size_t i, json_t **out, char *msg)
{
    if ((unsigned)m->role >= sizeof ROLE / sizeof ROLE[0])
        return az_fail(msg, AZ_ERR_INVALID, "messages[%zu].role: unknown role %d", i, (int)m->role);
    json_t *o = json_pack("{s:s}", "role", ROLE[m->role]);
    if (!o) return az_fail(msg, AZ_ERR_NOMEM, "cannot build messages[%zu]", i);
    if (m->role == AZ_LLM_ASSISTANT && m->n_tool_calls) {
        /* content may be null next to tool calls. */
        json_object_set_new(o, "content", m->content && *m->content ? json_string(m->content)
                                                                    : json_null());
        json_object_set_new(o, "tool_calls", tool_calls_json(m));
    } else {
        json_object_set_new(o, "content", json_string(m->content ? m->content : ""));
    }
    if (m->role == AZ_LLM_TOOL) {
        if (!m->tool_call_id || !*m->tool_call_id) {
            json_decref(o);
            return az_fail(msg, AZ_ERR_INVALID, "messages[%zu].tool_call_id is required", i);
        }
        json_object_set_new(o, "tool_call_id", json_string(m->tool_call_id));
    }
    *out = o;
    return AZ_OK;
}

static az_err build(const az_llm_request *req, const az_llm_endpoint *ep, char **url,
                    struct curl_slist **headers, char **body, char *msg)
{
    json_t *root = json_pack("{s:s, s:b, s:{s:b}}", "model", ep->model, "stream", 1,
                             "stream_options", "include_usage", 1);
    json_t *msgs = json_array();
    if (!root || !msgs) {
        json_decref(root);
        json_decref(msgs);
        return az_fail(msg, AZ_ERR_NOMEM, "cannot build openai request");
    }
    json_object_set_new(root, "messages", msgs);
    az_err e = AZ_OK;
    for (size_t i = 0; i < req->n_messages; i++) {
        json_t *m = NULL;
        if ((e = message_json(&req->messages[i], i, &m, msg))) goto out;
        json_array_append_new(msgs, m);
    }
    if (req->n_tools) {
        json_t *tools = json_array();
        json_object_set_new(root, "tools", tools);
        for (size_t i = 0; i < req->n_tools; i++) {
            const az_llm_tool *t = &req->tools[i];
            json_t *params = t->parameters ? json_incref(t->parameters)
                                           : json_pack("{s:s, s:{}}", "type", "object", "properties");
            json_array_append_new(tools, json_pack("{s:s, s:{s:s, s:s, s:o}}", "type", "function",
                                                   "function", "name", t->name, "description",
                                                   t->description ? t->description : "",
                                                   "parameters", params));
        }
    }
    if (req->has_temperature) json_object_set_new(root, "temperature", json_real(req->temperature));
    /* max_tokens, not max_completion_tokens: every compatible server understands it. */
    if (req->max_tokens > 0) json_object_set_new(root, "max_tokens", json_integer(req->max_tokens));
    *body = json_dumps(root, JSON_COMPACT);
    *url = az_llm_url(ep->base_url, "/chat/completions");
    if (ep->api_key && *ep->api_key) {
        size_t n = strlen(ep->api_key) + 32;
        char *h = malloc(n);
        if (h) {
            snprintf(h, n, "Authorization: Bearer %s", ep->api_key);
            struct curl_slist *l = curl_slist_append(*headers, h);
            if (l) *headers = l;
            else e = az_fail(msg, AZ_ERR_NOMEM, "cannot build openai headers");
            memset(h, 0, n); /* do not leave keys lying around in freed memory */
            free(h);
        } else {
            e = az_fail(msg, AZ_ERR_NOMEM, "cannot build openai headers");
        }
    }
    if (!e && (!*body || !*url)) e = az_fail(msg, AZ_ERR_NOMEM, "cannot build openai request");
out:
    json_decref(root);
    return e;
}

static az_err report_all(az_llm_stream *st, char *msg)
{
    for (size_t i = 0; i < st->n_calls; i++) {
        az_err e = az_llm_stream_report_call(st, i, msg);
        if (e) return e;
    }
    return AZ_OK;
}

static az_err tool_delta(az_llm_stream *st, json_t *tc, char *msg)
{
    json_t *jidx = json_object_get(tc, "index");
    const char *id = az_llm_json_str(tc, "id");
    size_t idx;
    if (json_is_integer(jidx) && json_integer_value(jidx) >= 0)
        idx = (size_t)json_integer_value(jidx);
    else if ((id && *id) || st->n_calls == 0)
        idx = st->n_calls; /* servers that omit index send each call whole */
    else
        idx = st->n_calls - 1;
    if (idx >= AZ_LLM_MAX_TOOL_CALLS)
        return az_fail(msg, AZ_ERR_INVALID, "tool call index %zu beyond %d", idx,
                       AZ_LLM_MAX_TOOL_CALLS);
    az_llm_pending_call *c = &st->calls[idx];
    if (c->reported) return AZ_OK; /* fragments after finish_reason: nothing to add */
    c->slot_used = 1;
    if (idx + 1 > st->n_calls) st->n_calls = idx + 1;
    json_t *fn = json_object_get(tc, "function");
    const char *name = az_llm_json_str(fn, "name");
    const char *args = az_llm_json_str(fn, "arguments");
    az_err e = AZ_OK;
    if (id && *id && c->id.len == 0) e = az_llm_buf_add(&c->id, id, strlen(id), msg);
    if (!e && name && *name && c->name.len == 0) e = az_llm_buf_add(&c->name, name, strlen(name), msg);
    if (!e && args) e = az_llm_buf_add(&c->args, args, strlen(args), msg);
    return e;
}

static az_err chunk(az_llm_stream *st, json_t *root, char *msg)
{
    json_t *err = json_object_get(root, "error");
    if (err && !json_is_null(err)) {
        const char *type = az_llm_json_str(err, "type");
        const char *code = az_llm_json_str(err, "code");
        /* OpenAI puts the specific reason in code ("rate_limit_exceeded") when type is generic. */
        if (code && az_llm_provider_error_class(code)) type = code;
        return az_llm_stream_fail(st, type, az_llm_json_str(err, "message"), msg);
    }
    const char *model = az_llm_json_str(root, "model");
    if (model && *model) snprintf(st->model, sizeof st->model, "%s", model);
    json_t *usage = json_object_get(root, "usage");
    if (json_is_object(usage)) {
        st->prompt_tokens = json_integer_value(json_object_get(usage, "prompt_tokens"));
        st->completion_tokens = json_integer_value(json_object_get(usage, "completion_tokens"));
        st->total_tokens = json_integer_value(json_object_get(usage, "total_tokens"));
    }
    json_t *choice = json_array_get(json_object_get(root, "choices"), 0);
    if (!choice) return AZ_OK; /* the usage-only chunk */
    json_t *delta = json_object_get(choice, "delta");
    const char *content = az_llm_json_str(delta, "content");
    az_err e = AZ_OK;
    if (content) {
        json_t *jc = json_object_get(delta, "content");
        if ((e = az_llm_stream_text(st, content, json_string_length(jc), msg))) return e;
    }
    json_t *tcs = json_object_get(delta, "tool_calls");
    size_t i;
    json_t *tc;
    json_array_foreach(tcs, i, tc) {
        if ((e = tool_delta(st, tc, msg))) return e;
    }
    const char *finish = az_llm_json_str(choice, "finish_reason");
    if (finish && *finish) {
        snprintf(st->stop_raw, sizeof st->stop_raw, "%s", finish);
        /* Arguments are complete once the choice finishes; report before usage arrives. */
        return report_all(st, msg);
    }
    return AZ_OK;
}

static az_err event(az_llm_stream *st, const az_sse_event *ev, char *msg)
{
    if (strcmp(ev->data, "[DONE]") == 0) {
        st->done = 1;
        return report_all(st, msg);
    }
    json_error_t jerr;
    json_t *root = json_loadb(ev->data, ev->data_len, 0, &jerr);
    if (!json_is_object(root)) {
        json_decref(root);
        return az_fail(msg, AZ_ERR_INVALID, "malformed openai stream chunk: %s", jerr.text);
    }
    az_err e = chunk(st, root, msg);
    json_decref(root);
    return e;
}

const az_llm_provider az_llm_openai = {
    .name = "openai",
    .default_base_url = "https://api.openai.com/v1",
    .default_model = "gpt-4o-mini",
    .key_env = "OPENAI_API_KEY",
    .base_env = "OPENAI_BASE_URL",
    .build = build,
    .event = event,
};
