/* Shared by the provider modules: result accumulation, callback reporting, and the table of
 * error classes that decides what a retry policy may retry. */
#include "provider.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct err_class {
    const char *type;
    az_err code;
    int retryable;
} err_class;

/* Every error class an LLM call can end with (TaskError.type). */
static const err_class CLASSES[] = {
    {"llm_not_configured", AZ_ERR_PRECONDITION, 0},
    {"llm_network", AZ_ERR_UNAVAILABLE, 1},
    {"llm_timeout", AZ_ERR_DEADLINE, 1},
    {"llm_rate_limited", AZ_ERR_EXHAUSTED, 1},
    {"llm_unavailable", AZ_ERR_UNAVAILABLE, 1},
    {"llm_provider_error", AZ_ERR_UNAVAILABLE, 1},
    {"llm_auth", AZ_ERR_UNAUTHENTICATED, 0},
    {"llm_permission", AZ_ERR_PERMISSION, 0},
    {"llm_not_found", AZ_ERR_NOT_FOUND, 0},
    {"llm_bad_request", AZ_ERR_INVALID, 0},
    {"llm_address_refused", AZ_ERR_PERMISSION, 0}, /* operator policy: retrying cannot help */
    {"llm_quota_exceeded", AZ_ERR_EXHAUSTED, 0},
    {"llm_response_too_large", AZ_ERR_EXHAUSTED, 0},
    {"llm_bad_response", AZ_ERR_INTERNAL, 0},
    {"llm_tls", AZ_ERR_UNAVAILABLE, 0}, /* certificate problems do not heal by retrying */
    {"llm_cancelled", AZ_ERR_CANCELLED, 0},
};

/* Provider error types (in-stream `error` events and error bodies) to our classes. Unknown
 * types mid-stream are the server's trouble: llm_provider_error, retryable. */
static const struct {
    const char *provider_type;
    const char *type;
} PROVIDER_TYPES[] = {
    {"overloaded_error", "llm_unavailable"},   /* anthropic */
    {"api_error", "llm_unavailable"},          /* anthropic */
    {"server_error", "llm_unavailable"},       /* openai */
    {"rate_limit_error", "llm_rate_limited"},  /* anthropic */
    {"rate_limit_exceeded", "llm_rate_limited"}, /* openai code */
    {"timeout_error", "llm_timeout"},
    {"invalid_request_error", "llm_bad_request"},
    {"authentication_error", "llm_auth"},
    {"permission_error", "llm_permission"},
    {"not_found_error", "llm_not_found"},
    {"request_too_large", "llm_bad_request"},
    {"insufficient_quota", "llm_quota_exceeded"}, /* openai: a 429 no retry will fix */
};

static const err_class *class_of(const char *type)
{
    for (size_t i = 0; i < sizeof CLASSES / sizeof CLASSES[0]; i++)
        if (strcmp(CLASSES[i].type, type) == 0) return &CLASSES[i];
    return NULL;
}

az_err az_llm_error_code(const char *type)
{
    const err_class *c = type ? class_of(type) : NULL;
    return c ? c->code : AZ_ERR_INTERNAL;
}

void az_llm_error_set(az_llm_error *e, const char *type, const char *fmt, ...)
{
    const err_class *c = class_of(type);
    snprintf(e->type, sizeof e->type, "%s", type);
    e->retryable = c ? c->retryable : 0;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->message, sizeof e->message, fmt, ap);
    va_end(ap);
}

const char *az_llm_provider_error_class(const char *provider_type)
{
    for (size_t i = 0; provider_type && i < sizeof PROVIDER_TYPES / sizeof PROVIDER_TYPES[0]; i++)
        if (strcmp(PROVIDER_TYPES[i].provider_type, provider_type) == 0)
            return PROVIDER_TYPES[i].type;
    return NULL;
}

az_err az_llm_stream_fail(az_llm_stream *st, const char *type, const char *message, char *msg)
{
    const char *cls = az_llm_provider_error_class(type);
    az_llm_error_set(&st->error, cls ? cls : "llm_provider_error", "provider error %s: %s",
                     type ? type : "(untyped)", message ? message : "(no message)");
    return az_fail(msg, AZ_ERR_UNAVAILABLE, "%s", st->error.message);
}

az_err az_llm_buf_add(az_llm_buf *b, const char *s, size_t n, char *msg)
{
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 64;
        while (cap < b->len + n + 1) cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) return az_fail(msg, AZ_ERR_NOMEM, "cannot grow llm buffer to %zu bytes", cap);
        b->p = p;
        b->cap = cap;
    }
    if (n) memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
    return AZ_OK;
}

void az_llm_buf_free(az_llm_buf *b)
{
    free(b->p);
    *b = (az_llm_buf){0};
}

az_err az_llm_stream_text(az_llm_stream *st, const char *s, size_t n, char *msg)
{
    if (n == 0) return AZ_OK;
    az_err e = az_llm_buf_add(&st->text, s, n, msg);
    if (e) return e;
    if (st->cb && st->cb->on_text && st->cb->on_text(st->arg, s, n)) {
        st->aborted = 1;
        return az_fail(msg, AZ_ERR_CANCELLED, "on_text asked to stop");
    }
    return AZ_OK;
}

az_err az_llm_stream_report_call(az_llm_stream *st, size_t i, char *msg)
{
    az_llm_pending_call *c = &st->calls[i];
    if (!c->slot_used || c->reported) return AZ_OK;
    c->reported = 1;
    az_err e = AZ_OK;
    if (c->args.len == 0) e = az_llm_buf_add(&c->args, "{}", 2, msg);
    if (!e) e = az_llm_buf_add(&c->id, "", 0, msg);
    if (!e) e = az_llm_buf_add(&c->name, "", 0, msg);
    if (e) return e;
    az_llm_tool_call tc = {c->id.p, c->name.p, c->args.p};
    if (st->cb && st->cb->on_tool_call && st->cb->on_tool_call(st->arg, &tc)) {
        st->aborted = 1;
        return az_fail(msg, AZ_ERR_CANCELLED, "on_tool_call asked to stop");
    }
    return AZ_OK;
}

const char *az_llm_json_str(json_t *obj, const char *key)
{
    return json_string_value(json_object_get(obj, key));
}

char *az_llm_url(const char *base, const char *path)
{
    size_t n = strlen(base);
    while (n > 0 && base[n - 1] == '/') n--;
    size_t len = n + strlen(path) + 1;
    char *u = malloc(len);
    if (u) snprintf(u, len, "%.*s%s", (int)n, base, path);
    return u;
}
