/* SystemService handlers: request validation naming the field, the role ceiling for new API keys,
 * audit targets for mutating calls, secret values wiped from the request once encrypted, and
 * StreamMetrics streams handed to the metrics module. */
#include "system_api.h"

#include <openssl/crypto.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include "audit/audit.h"
#include "auth/apikey.h"
#include "auth/auth.h"
#include "core/text.h"
#include "google/protobuf/duration.pb-c.h"
#include "google/protobuf/empty.pb-c.h"

#define PAGE_DEFAULT 50
#define PAGE_MAX 1000
#define NAME_MAX_CHARS 128
#define REQUEST_ID_MAX 128
#define FILTER_MAX 256
#define NMETHODS 9

struct az_system_api {
    az_pg *pg;
    az_secret_keyring *keys;
    az_metrics *metrics;
    az_method methods[NMETHODS];
};

static const char *const role_names[] = {"ROLE_UNSPECIFIED", "ROLE_VIEWER", "ROLE_EDITOR", "ROLE_ADMIN",
                                         "ROLE_OWNER"};

static const char *role_name(int r) { return r >= 0 && r <= 4 ? role_names[r] : "an unknown role"; }

static int page_size(int32_t n) { return n == 0 ? PAGE_DEFAULT : n > PAGE_MAX ? PAGE_MAX : n; }

/* Unix microseconds of t; AZ_ERR_INVALID naming field when it is not a valid timestamp. */
static az_err timestamp_us(const char *field, const Google__Protobuf__Timestamp *t, int64_t *us, char *msg)
{
    *us = 0;
    if (!t) return AZ_OK;
    if (t->nanos < 0 || t->nanos > 999999999 || t->seconds < 0 || t->seconds > 253402300799LL)
        return az_fail(msg, AZ_ERR_INVALID, "%s: not a valid timestamp", field);
    *us = (int64_t)t->seconds * 1000000 + t->nanos / 1000;
    if (*us == 0) *us = 1; /* the epoch itself, not "unset" */
    return AZ_OK;
}

static void *empty(az_call *c)
{
    Google__Protobuf__Empty *e = az_arena_alloc(az_call_arena(c), sizeof *e);
    if (e) google__protobuf__empty__init(e);
    return e;
}

/* ---------------------------------------------------------------- identity */

static az_err who_am_i(az_call *c, const ProtobufCMessage *in, ProtobufCMessage **out, char *msg)
{
    const az_principal *p = az_call_principal(c);
    az_ctx ctx;
    az_call_ctx(c, &ctx);
    az_arena *a = az_call_arena(c);
    Agentz__V1__WhoAmIResponse *r = az_arena_alloc(a, sizeof *r);
    if (!r) return az_fail(msg, AZ_ERR_NOMEM, "out of memory");
    agentz__v1__who_am_iresponse__init(r);
    r->principal = az_arena_strdup(a, p->id[0] ? p->id : "anonymous");
    r->workspace_id = az_arena_strdup(a, ctx.workspace_id);
    r->role = (Agentz__V1__Role)p->role;
    r->auth_method = (Agentz__V1__AuthMethod)az_auth_method_value(p->auth_method);
    if (!r->principal || !r->workspace_id) return az_fail(msg, AZ_ERR_NOMEM, "out of memory");
    *out = &r->base;
    return AZ_OK;
}

/* ---------------------------------------------------------------- api keys */

static az_err create_api_key(az_call *c, const ProtobufCMessage *in, ProtobufCMessage **out, char *msg)
{
    az_system_api *api = az_call_data(c);
    const Agentz__V1__CreateApiKeyRequest *req = (const void *)in;
    az_err err = az_text_check("name", req->name, NAME_MAX_CHARS, AZ_TEXT_REQUIRED, msg);
    if (err != AZ_OK) return err;
    if (req->role == AGENTZ__V1__ROLE__ROLE_UNSPECIFIED) return az_fail(msg, AZ_ERR_INVALID, "role is required");
    if (req->role < AGENTZ__V1__ROLE__ROLE_VIEWER || req->role > AGENTZ__V1__ROLE__ROLE_OWNER)
        return az_fail(msg, AZ_ERR_INVALID, "role: unknown value %d", (int)req->role);
    int64_t expire_us;
    if ((err = timestamp_us("expire_time", req->expire_time, &expire_us, msg)) != AZ_OK) return err;
    struct timeval tv;
    gettimeofday(&tv, NULL);
    if (req->expire_time && expire_us <= (int64_t)tv.tv_sec * 1000000 + tv.tv_usec)
        return az_fail(msg, AZ_ERR_INVALID, "expire_time: must be in the future");
    if ((err = az_text_check("request_id", req->request_id, REQUEST_ID_MAX, 0, msg)) != AZ_OK) return err;
    /* Nobody hands out more than they hold. */
    const az_principal *p = az_call_principal(c);
    if ((int)req->role > p->role)
        return az_fail(msg, AZ_ERR_PERMISSION, "role: a caller with %s cannot create a key with %s",
                       role_name(p->role), role_name((int)req->role));
    az_ctx ctx;
    az_call_ctx(c, &ctx);
    ctx.request_id = req->request_id; /* the idempotency key, not x-request-id */
    az_arena *a = az_call_arena(c);
    Agentz__V1__ApiKey *key;
    char *secret;
    err = az_apikey_create(api->pg, &ctx, req->name, (int)req->role, expire_us, a, &key, &secret, msg);
    if (err != AZ_OK) return err;
    az_call_set_target(c, key->id);
    Agentz__V1__CreateApiKeyResponse *r = az_arena_alloc(a, sizeof *r);
    if (!r) return az_fail(msg, AZ_ERR_NOMEM, "out of memory");
    agentz__v1__create_api_key_response__init(r);
    r->api_key = key;
    r->key = secret;
    *out = &r->base;
    return AZ_OK;
}

static az_err list_api_keys(az_call *c, const ProtobufCMessage *in, ProtobufCMessage **out, char *msg)
{
    az_system_api *api = az_call_data(c);
    const Agentz__V1__ListApiKeysRequest *req = (const void *)in;
    if (req->page_size < 0) return az_fail(msg, AZ_ERR_INVALID, "page_size: must not be negative");
    az_ctx ctx;
    az_call_ctx(c, &ctx);
    Agentz__V1__ListApiKeysResponse *r;
    az_err err = az_apikey_list(api->pg, &ctx, page_size(req->page_size), req->page_token,
                                az_call_arena(c), &r, msg);
    if (err == AZ_OK) *out = &r->base;
    return err;
}

/* The key's description after revocation. apikey.h has no single-key read, so walk the (short)
 * list of the workspace's keys. */
static az_err find_key(az_system_api *api, const az_ctx *ctx, const char *id, az_arena *a,
                       Agentz__V1__ApiKey **out, char *msg)
{
    const char *token = "";
    for (;;) {
        Agentz__V1__ListApiKeysResponse *r;
        az_err err = az_apikey_list(api->pg, ctx, PAGE_MAX, token, a, &r, msg);
        if (err != AZ_OK) return err;
        for (size_t i = 0; i < r->n_api_keys; i++) {
            if (strcmp(r->api_keys[i]->id, id) == 0) {
                *out = r->api_keys[i];
                return AZ_OK;
            }
        }
        if (!r->next_page_token || !*r->next_page_token)
            return az_fail(msg, AZ_ERR_NOT_FOUND, "api key %s not found", id);
        token = r->next_page_token;
    }
}

static az_err revoke_api_key(az_call *c, const ProtobufCMessage *in, ProtobufCMessage **out, char *msg)
{
    az_system_api *api = az_call_data(c);
    const Agentz__V1__RevokeApiKeyRequest *req = (const void *)in;
    if (!*req->id) return az_fail(msg, AZ_ERR_INVALID, "id is required");
    if (strlen(req->id) > 64) return az_fail(msg, AZ_ERR_NOT_FOUND, "api key %.64s not found", req->id);
    az_call_set_target(c, req->id);
    az_ctx ctx;
    az_call_ctx(c, &ctx);
    az_err err = az_apikey_revoke(api->pg, &ctx, req->id, msg);
    Agentz__V1__ApiKey *key = NULL;
    if (err == AZ_OK) err = find_key(api, &ctx, req->id, az_call_arena(c), &key, msg);
    if (err == AZ_OK) *out = &key->base;
    return err;
}

/* ---------------------------------------------------------------- secrets */

static az_err create_secret(az_call *c, const ProtobufCMessage *in, ProtobufCMessage **out, char *msg)
{
    az_system_api *api = az_call_data(c);
    const Agentz__V1__CreateSecretRequest *req = (const void *)in;
    az_err err = az_text_check("request_id", req->request_id, REQUEST_ID_MAX, 0, msg);
    if (err != AZ_OK) return err;
    if (*req->name && strlen(req->name) <= AZ_SECRET_NAME_MAX) az_call_set_target(c, req->name);
    az_ctx ctx;
    az_call_ctx(c, &ctx);
    Agentz__V1__Secret *s;
    err = az_secret_put(api->pg, &ctx, api->keys, req->name, req->value, req->request_id, az_call_arena(c),
                        &s, msg);
    /* The request lives in the call's arena until the call ends: do not leave the value there. */
    if (req->value) OPENSSL_cleanse(req->value, strlen(req->value));
    if (err == AZ_OK) *out = &s->base;
    return err;
}

static az_err list_secrets(az_call *c, const ProtobufCMessage *in, ProtobufCMessage **out, char *msg)
{
    az_system_api *api = az_call_data(c);
    const Agentz__V1__ListSecretsRequest *req = (const void *)in;
    if (req->page_size < 0) return az_fail(msg, AZ_ERR_INVALID, "page_size: must not be negative");
    az_ctx ctx;
    az_call_ctx(c, &ctx);
    Agentz__V1__ListSecretsResponse *r;
    az_err err = az_secret_list(api->pg, &ctx, page_size(req->page_size), req->page_token,
                                az_call_arena(c), &r, msg);
    if (err == AZ_OK) *out = &r->base;
    return err;
}

static az_err delete_secret(az_call *c, const ProtobufCMessage *in, ProtobufCMessage **out, char *msg)
{
    az_system_api *api = az_call_data(c);
    const Agentz__V1__DeleteSecretRequest *req = (const void *)in;
    if (!*req->name) return az_fail(msg, AZ_ERR_INVALID, "name is required");
    if (strlen(req->name) <= AZ_SECRET_NAME_MAX) az_call_set_target(c, req->name);
    az_ctx ctx;
    az_call_ctx(c, &ctx);
    az_err err = az_secret_delete(api->pg, &ctx, req->name, msg);
    if (err != AZ_OK) return err;
    if (!(*out = empty(c))) return az_fail(msg, AZ_ERR_NOMEM, "out of memory");
    return AZ_OK;
}

/* ---------------------------------------------------------------- audit log */

static az_err list_audit_log(az_call *c, const ProtobufCMessage *in, ProtobufCMessage **out, char *msg)
{
    az_system_api *api = az_call_data(c);
    const Agentz__V1__ListAuditLogRequest *req = (const void *)in;
    if (req->page_size < 0) return az_fail(msg, AZ_ERR_INVALID, "page_size: must not be negative");
    az_err err;
    if ((err = az_text_check("principal", req->principal, FILTER_MAX, 0, msg)) != AZ_OK ||
        (err = az_text_check("method", req->method, FILTER_MAX, 0, msg)) != AZ_OK)
        return err;
    az_audit_query q = {.principal = req->principal, .method = req->method,
                        .page_size = page_size(req->page_size), .page_token = req->page_token};
    if ((err = timestamp_us("start_time", req->start_time, &q.start_us, msg)) != AZ_OK ||
        (err = timestamp_us("end_time", req->end_time, &q.end_us, msg)) != AZ_OK)
        return err;
    if (q.start_us && q.end_us && q.end_us <= q.start_us)
        return az_fail(msg, AZ_ERR_INVALID, "end_time: must be after start_time");
    az_ctx ctx;
    az_call_ctx(c, &ctx);
    Agentz__V1__ListAuditLogResponse *r;
    err = az_audit_list(api->pg, &ctx, &q, az_call_arena(c), &r, msg);
    if (err == AZ_OK) *out = &r->base;
    return err;
}

/* ---------------------------------------------------------------- metrics */

static az_err stream_metrics(az_call *c, const ProtobufCMessage *in, char *msg)
{
    az_system_api *api = az_call_data(c);
    const Agentz__V1__StreamMetricsRequest *req = (const void *)in;
    int64_t ms = AZ_METRICS_INTERVAL_DEFAULT_MS;
    if (req->interval) {
        const Google__Protobuf__Duration *d = req->interval;
        if (d->nanos < -999999999 || d->nanos > 999999999 || (d->seconds > 0 && d->nanos < 0) ||
            (d->seconds < 0 && d->nanos > 0))
            return az_fail(msg, AZ_ERR_INVALID, "interval: not a valid duration");
        /* Clamped first so the product cannot overflow; the bounds check below still fails. */
        int64_t sec = d->seconds > 1000000 ? 1000000 : d->seconds < -1000000 ? -1000000 : d->seconds;
        ms = sec * 1000 + d->nanos / 1000000;
        if (ms < AZ_METRICS_INTERVAL_MIN_MS || ms > AZ_METRICS_INTERVAL_MAX_MS)
            return az_fail(msg, AZ_ERR_INVALID, "interval: must be between %ds and %ds, got %.3gs",
                           AZ_METRICS_INTERVAL_MIN_MS / 1000, AZ_METRICS_INTERVAL_MAX_MS / 1000,
                           (double)d->seconds + d->nanos / 1e9);
    }
    if (!api->metrics) return az_fail(msg, AZ_ERR_UNAVAILABLE, "metrics are not collected by this server");
    return az_metrics_stream(api->metrics, c, ms, msg);
}

/* ---------------------------------------------------------------- table */

#define SVC "/agentz.v1.SystemService/"
#define D(x) &agentz__v1__##x##__descriptor

az_system_api *az_system_api_new(az_pg *pg, az_secret_keyring *keys)
{
    az_system_api *api = calloc(1, sizeof *api);
    if (!api) return NULL;
    api->pg = pg;
    api->keys = keys;
    const az_method m[NMETHODS] = {
        {SVC "StreamMetrics", AZ_RPC_SERVER_STREAM, D(stream_metrics_request), D(event),
         .stream = stream_metrics, .data = api},
        {SVC "ListAuditLog", AZ_RPC_UNARY, D(list_audit_log_request), D(list_audit_log_response),
         .unary = list_audit_log, .data = api},
        {SVC "CreateApiKey", AZ_RPC_UNARY, D(create_api_key_request), D(create_api_key_response),
         .unary = create_api_key, .data = api},
        {SVC "ListApiKeys", AZ_RPC_UNARY, D(list_api_keys_request), D(list_api_keys_response),
         .unary = list_api_keys, .data = api},
        {SVC "RevokeApiKey", AZ_RPC_UNARY, D(revoke_api_key_request), D(api_key), .unary = revoke_api_key,
         .data = api},
        {SVC "WhoAmI", AZ_RPC_UNARY, D(who_am_irequest), D(who_am_iresponse), .unary = who_am_i,
         .data = api},
        {SVC "CreateSecret", AZ_RPC_UNARY, D(create_secret_request), D(secret), .unary = create_secret,
         .data = api},
        {SVC "ListSecrets", AZ_RPC_UNARY, D(list_secrets_request), D(list_secrets_response),
         .unary = list_secrets, .data = api},
        {SVC "DeleteSecret", AZ_RPC_UNARY, D(delete_secret_request), &google__protobuf__empty__descriptor,
         .unary = delete_secret, .data = api},
    };
    memcpy(api->methods, m, sizeof m);
    return api;
}

void az_system_api_free(az_system_api *api) { free(api); }

void az_system_api_set_metrics(az_system_api *api, az_metrics *m) { api->metrics = m; }

const az_method *az_system_api_methods(az_system_api *api, size_t *n)
{
    *n = NMETHODS;
    return api->methods;
}
