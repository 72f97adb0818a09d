/* The server's authorizer: credentials from call metadata -> principal (API key or Clerk session
 * token, workspace and role) -> role check against the permission table -> rate limiter. */
#include "auth.h"

#include <ctype.h>
#include <openssl/crypto.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "agentz/v1/system.pb-c.h"
#include "auth/apikey.h"
#include "auth/jwt.h"
#include "auth/workspace.h"
#include "core/ctx.h"
#include "core/log.h"

#define MAX_ROLE_MAP 32
#define WS_CACHE_SIZE 1024

typedef struct role_entry {
    char org_role[128]; /* "org:admin" */
    int role;           /* Agentz__V1__Role; 0 = no access */
} role_entry;

/* external id -> workspace uuid; the mapping never changes (workspace.h), so entries never go
 * stale, and the cache saves a database round trip on every session-token call. */
typedef struct ws_entry {
    char external_id[160];
    char id[37];
} ws_entry;

struct az_auth {
    int disabled;
    az_pg *pg;
    az_jwt_verifier *jwt; /* NULL: session tokens not configured */
    role_entry roles[MAX_ROLE_MAP];
    int nroles;
    az_auth_limiter_fn limit;
    void *limit_arg;

    pthread_mutex_t ws_mu;
    ws_entry *ws;
    int ws_n, ws_next;
};

static const struct {
    const char *name;
    int role;
} role_names[] = {
    {"none", AGENTZ__V1__ROLE__ROLE_UNSPECIFIED}, {"viewer", AGENTZ__V1__ROLE__ROLE_VIEWER},
    {"editor", AGENTZ__V1__ROLE__ROLE_EDITOR},    {"admin", AGENTZ__V1__ROLE__ROLE_ADMIN},
    {"owner", AGENTZ__V1__ROLE__ROLE_OWNER},
};

static const struct {
    const char *name;
    int value;
} auth_methods[] = {
    {AZ_AUTH_METHOD_NONE, AGENTZ__V1__AUTH_METHOD__AUTH_METHOD_NONE},
    {AZ_AUTH_METHOD_JWT, AGENTZ__V1__AUTH_METHOD__AUTH_METHOD_JWT},
    {"clerk", AGENTZ__V1__AUTH_METHOD__AUTH_METHOD_JWT},
    {AZ_AUTH_METHOD_API_KEY, AGENTZ__V1__AUTH_METHOD__AUTH_METHOD_API_KEY},
    {"admin_key", AGENTZ__V1__AUTH_METHOD__AUTH_METHOD_API_KEY},
    {"mtls", AGENTZ__V1__AUTH_METHOD__AUTH_METHOD_MTLS},
};

static const struct {
    const char *word;
    int disabled;
} modes[] = {{"on", 0}, {"true", 0}, {"1", 0}, {"off", 1}, {"false", 1}, {"0", 1}};

const char *az_auth_role_name(int role)
{
    for (size_t i = 1; i < sizeof role_names / sizeof *role_names; i++) {
        if (role_names[i].role == role) return role_names[i].name;
    }
    return "none";
}

int az_auth_method_value(const char *auth_method)
{
    for (size_t i = 0; auth_method && i < sizeof auth_methods / sizeof *auth_methods; i++) {
        if (strcmp(auth_methods[i].name, auth_method) == 0) return auth_methods[i].value;
    }
    return AGENTZ__V1__AUTH_METHOD__AUTH_METHOD_UNSPECIFIED;
}

az_err az_auth_parse_mode(const char *s, int *disabled, char *msg)
{
    for (size_t i = 0; s && i < sizeof modes / sizeof *modes; i++) {
        if (strcasecmp(s, modes[i].word) == 0) {
            *disabled = modes[i].disabled;
            return AZ_OK;
        }
    }
    return az_fail(msg, AZ_ERR_INVALID, "AGENTZ_AUTH must be on or off, not \"%.40s\"", s ? s : "");
}

int az_auth_listen_is_loopback(const char *listen)
{
    if (!listen || !*listen) return 0;
    if (strncmp(listen, "unix:", 5) == 0 || strncmp(listen, "unix-abstract:", 14) == 0) return 1;
    const char *colon = strrchr(listen, ':');
    size_t hl = colon ? (size_t)(colon - listen) : strlen(listen);
    if (hl == 9 && strncasecmp(listen, "localhost", 9) == 0) return 1;
    if (hl == 5 && strncmp(listen, "[::1]", 5) == 0) return 1;
    /* 127.0.0.0/8 as a dotted quad. */
    if (hl < 9 || hl > 15 || strncmp(listen, "127.", 4) != 0) return 0;
    int dots = 0;
    for (size_t i = 0; i < hl; i++) {
        if (listen[i] == '.') dots++;
        else if (!isdigit((unsigned char)listen[i])) return 0;
    }
    return dots == 3;
}

/* "org:owner=owner, org:admin=admin,member=editor": keys without "org:" get it, as tokens'
 * roles are normalized to that form (jwt.h). */
static az_err parse_role_map(az_auth *a, const char *spec, char *msg)
{
    const char *p = spec;
    while (*p) {
        size_t n = strcspn(p, ",");
        char item[256];
        if (n >= sizeof item)
            return az_fail(msg, AZ_ERR_INVALID, "AGENTZ_JWT_ROLE_MAP: entry longer than 255 bytes");
        memcpy(item, p, n);
        item[n] = 0;
        p += n;
        if (*p == ',') p++;
        char *eq = strchr(item, '=');
        char *k = item, *v = eq ? eq + 1 : NULL;
        if (eq) *eq = 0;
        while (isspace((unsigned char)*k)) k++;
        for (char *e = k + strlen(k); e > k && isspace((unsigned char)e[-1]);) *--e = 0;
        if (!*k && !v) continue; /* empty entry: "a=b,,c=d" */
        if (!v || !*k)
            return az_fail(msg, AZ_ERR_INVALID,
                           "AGENTZ_JWT_ROLE_MAP: \"%.100s\" is not org_role=agentz_role", item);
        while (isspace((unsigned char)*v)) v++;
        for (char *e = v + strlen(v); e > v && isspace((unsigned char)e[-1]);) *--e = 0;
        int role = -1;
        for (size_t i = 0; i < sizeof role_names / sizeof *role_names; i++) {
            if (strcasecmp(v, role_names[i].name) == 0) role = role_names[i].role;
        }
        if (role < 0)
            return az_fail(msg, AZ_ERR_INVALID,
                           "AGENTZ_JWT_ROLE_MAP: role \"%.40s\" for %.100s must be viewer, editor, "
                           "admin, owner or none",
                           v, k);
        if (a->nroles == MAX_ROLE_MAP)
            return az_fail(msg, AZ_ERR_INVALID, "AGENTZ_JWT_ROLE_MAP: more than %d entries",
                           MAX_ROLE_MAP);
        role_entry *r = &a->roles[a->nroles++];
        int w = snprintf(r->org_role, sizeof r->org_role, "%s%s",
                         strncmp(k, "org:", 4) == 0 ? "" : "org:", k);
        if (w < 0 || (size_t)w >= sizeof r->org_role)
            return az_fail(msg, AZ_ERR_INVALID, "AGENTZ_JWT_ROLE_MAP: role name too long");
        r->role = role;
    }
    return AZ_OK;
}

static int map_role(const az_auth *a, const char *org_role)
{
    for (int i = 0; i < a->nroles; i++) {
        if (strcmp(a->roles[i].org_role, org_role) == 0) return a->roles[i].role;
    }
    return 0;
}

az_auth *az_auth_new(const az_auth_config *cfg, az_pg *pg, char *msg)
{
    if (!cfg) {
        az_fail(msg, AZ_ERR_INVALID, "no authentication configuration");
        return NULL;
    }
    if (cfg->disabled && !az_auth_listen_is_loopback(cfg->listen)) {
        az_fail(msg, AZ_ERR_INVALID,
                "AGENTZ_AUTH=off is only allowed on a loopback listener (127.0.0.1, [::1], "
                "localhost or a unix socket), not %.200s",
                cfg->listen && *cfg->listen ? cfg->listen : "(unknown)");
        return NULL;
    }
    az_auth *a = calloc(1, sizeof *a);
    if (!a) {
        az_fail(msg, AZ_ERR_NOMEM, "out of memory");
        return NULL;
    }
    pthread_mutex_init(&a->ws_mu, NULL);
    a->disabled = cfg->disabled;
    a->pg = pg;
    if (!(a->ws = calloc(WS_CACHE_SIZE, sizeof *a->ws))) {
        az_fail(msg, AZ_ERR_NOMEM, "out of memory");
        goto fail;
    }
    const char *map =
        cfg->jwt_role_map && *cfg->jwt_role_map ? cfg->jwt_role_map : AZ_AUTH_DEFAULT_ROLE_MAP;
    if (parse_role_map(a, map, msg) != AZ_OK) goto fail;

    int jwks = cfg->jwks_url && *cfg->jwks_url;
    if (!jwks && cfg->jwt_issuer && *cfg->jwt_issuer) {
        az_fail(msg, AZ_ERR_INVALID, "AGENTZ_JWT_ISSUER is set but AGENTZ_JWKS_URL is not");
        goto fail;
    }
    if (jwks) {
        az_jwt_config jc = {
            .jwks_url = cfg->jwks_url,
            .issuer = cfg->jwt_issuer,
            .authorized_parties = cfg->jwt_authorized_parties,
            .refresh_interval_ms = cfg->jwt_refresh_interval_ms,
        };
        if (!(a->jwt = az_jwt_verifier_new(&jc, msg))) goto fail;
    }

    if (a->disabled) {
        az_warn("authentication is disabled (AGENTZ_AUTH=off): every caller is %s, owner of the "
                "default workspace; for development on %s only",
                AZ_AUTH_DEV_PRINCIPAL, cfg->listen);
    } else if (a->jwt) {
        char m[AZ_MSG_MAX];
        if (az_jwt_refresh(a->jwt, m) != AZ_OK)
            az_warn("session tokens will fail until the signing keys can be fetched: %s", m);
        az_info("authentication: api keys and session tokens of %s", cfg->jwt_issuer);
    } else {
        az_info("authentication: api keys only (set AGENTZ_JWKS_URL and AGENTZ_JWT_ISSUER for "
                "session tokens)");
    }
    return a;
fail:
    az_auth_free(a);
    return NULL;
}

void az_auth_free(az_auth *a)
{
    if (!a) return;
    az_jwt_verifier_free(a->jwt);
    free(a->ws);
    pthread_mutex_destroy(&a->ws_mu);
    free(a);
}

void az_auth_set_limiter(az_auth *a, az_auth_limiter_fn fn, void *arg)
{
    a->limit = fn;
    a->limit_arg = arg;
}

/* az_workspace_resolve behind the cache. */
static az_err workspace_of(az_auth *a, const char *external_id, const char *name, char id[37],
                           char *msg)
{
    pthread_mutex_lock(&a->ws_mu);
    for (int i = 0; i < a->ws_n; i++) {
        if (strcmp(a->ws[i].external_id, external_id) == 0) {
            memcpy(id, a->ws[i].id, 37);
            pthread_mutex_unlock(&a->ws_mu);
            return AZ_OK;
        }
    }
    pthread_mutex_unlock(&a->ws_mu);
    if (!a->pg) return az_fail(msg, AZ_ERR_INTERNAL, "authentication has no database");
    az_err err = az_workspace_resolve(a->pg, external_id, name, id, msg);
    if (err != AZ_OK) return err;
    if (strlen(external_id) < sizeof a->ws[0].external_id) {
        pthread_mutex_lock(&a->ws_mu);
        ws_entry *e =
            a->ws_n < WS_CACHE_SIZE ? &a->ws[a->ws_n++] : &a->ws[a->ws_next++ % WS_CACHE_SIZE];
        snprintf(e->external_id, sizeof e->external_id, "%s", external_id);
        memcpy(e->id, id, 37);
        pthread_mutex_unlock(&a->ws_mu);
    }
    return AZ_OK;
}

static void anonymous(az_principal *p)
{
    memset(p, 0, sizeof *p);
    snprintf(p->auth_method, sizeof p->auth_method, "%s", AZ_AUTH_METHOD_NONE);
}

static az_err from_api_key(az_auth *a, const char *key, az_principal *p, char *msg)
{
    if (!a->pg) return az_fail(msg, AZ_ERR_INTERNAL, "authentication has no database");
    az_apikey_identity id;
    az_err err = az_apikey_verify(a->pg, key, &id, msg);
    if (err != AZ_OK) return err;
    snprintf(p->id, sizeof p->id, "key:%s", id.key_id);
    memcpy(p->workspace_id, id.workspace_id, sizeof p->workspace_id);
    p->role = id.role;
    snprintf(p->auth_method, sizeof p->auth_method, "%s", AZ_AUTH_METHOD_API_KEY);
    return AZ_OK;
}

static az_err from_session_token(az_auth *a, const char *token, az_principal *p, char *msg)
{
    if (!a->jwt)
        return az_fail(msg, AZ_ERR_UNAUTHENTICATED,
                       "session tokens are not accepted by this server (AGENTZ_JWKS_URL is not "
                       "set): use an api key (agz_...)");
    az_jwt_claims cl;
    az_err err = az_jwt_verify(a->jwt, token, &cl, msg);
    if (err != AZ_OK) return err;

    char external[160];
    const char *name;
    int role;
    if (cl.org_id[0]) {
        /* "user:" is the personal-workspace namespace; no organization may claim it. */
        if (strncmp(cl.org_id, "user:", 5) == 0)
            return az_fail(msg, AZ_ERR_UNAUTHENTICATED,
                           "session token organization id is malformed");
        snprintf(external, sizeof external, "%s", cl.org_id);
        name = cl.org_slug[0] ? cl.org_slug : cl.org_id;
        role = map_role(a, cl.org_role);
    } else {
        snprintf(external, sizeof external, "user:%s", cl.sub);
        name = external;
        role = AGENTZ__V1__ROLE__ROLE_OWNER;
    }
    snprintf(p->id, sizeof p->id, "user:%s", cl.sub);
    snprintf(p->auth_method, sizeof p->auth_method, "%s", AZ_AUTH_METHOD_JWT);
    if (role <= 0)
        return az_fail(msg, AZ_ERR_PERMISSION,
                       "organization role \"%s\" has no agentz role (see AGENTZ_JWT_ROLE_MAP)",
                       cl.org_role[0] ? cl.org_role : "(none)");
    p->role = role;
    return workspace_of(a, external, name, p->workspace_id, msg);
}

/* The credential after "Bearer " (scheme case-insensitive, spaces trimmed); NULL when the
 * value is not a bearer credential. Points into value. */
static const char *bearer(const char *value, size_t *len)
{
    while (*value == ' ' || *value == '\t') value++;
    if (strncasecmp(value, "Bearer", 6) != 0 || (value[6] != ' ' && value[6] != '\t')) return NULL;
    value += 6;
    while (*value == ' ' || *value == '\t') value++;
    size_t n = strlen(value);
    while (n && (value[n - 1] == ' ' || value[n - 1] == '\t')) n--;
    *len = n;
    return n ? value : NULL;
}

static az_err authenticate(az_auth *a, const char *authorization, const char *x_api_key,
                           az_principal *p, char *msg)
{
    if (a->disabled) {
        snprintf(p->id, sizeof p->id, "%s", AZ_AUTH_DEV_PRINCIPAL);
        snprintf(p->workspace_id, sizeof p->workspace_id, "%s", AZ_DEFAULT_WORKSPACE);
        p->role = AGENTZ__V1__ROLE__ROLE_OWNER;
        snprintf(p->auth_method, sizeof p->auth_method, "%s", AZ_AUTH_METHOD_NONE);
        return AZ_OK;
    }
    if (authorization && *authorization) {
        size_t n = 0;
        const char *cred = bearer(authorization, &n);
        if (!cred)
            return az_fail(msg, AZ_ERR_UNAUTHENTICATED,
                           "authorization metadata must be \"Bearer <token>\"");
        if (n > AZ_JWT_MAX_TOKEN)
            return az_fail(msg, AZ_ERR_UNAUTHENTICATED, "bearer credential is longer than %d bytes",
                           AZ_JWT_MAX_TOKEN);
        char buf[AZ_JWT_MAX_TOKEN + 1];
        memcpy(buf, cred, n);
        buf[n] = 0;
        az_err err = strncmp(buf, AZ_APIKEY_PREFIX, strlen(AZ_APIKEY_PREFIX)) == 0
                         ? from_api_key(a, buf, p, msg)
                         : from_session_token(a, buf, p, msg);
        OPENSSL_cleanse(buf, n); /* no copy of the credential outlives the call */
        return err;
    }
    if (x_api_key && *x_api_key) {
        const char *k = x_api_key;
        while (*k == ' ' || *k == '\t') k++;
        if (strncmp(k, AZ_APIKEY_PREFIX, strlen(AZ_APIKEY_PREFIX)) != 0)
            return az_fail(msg, AZ_ERR_UNAUTHENTICATED,
                           "x-api-key metadata must hold an agentz api key (agz_...)");
        return from_api_key(a, k, p, msg);
    }
    return az_fail(msg, AZ_ERR_UNAUTHENTICATED,
                   "missing credentials: send authorization: Bearer <token> or x-api-key");
}

/* "CreateAgent" of "/agentz.v1.AgentService/CreateAgent". */
static const char *short_name(const char *method)
{
    const char *s = strrchr(method, '/');
    return s ? s + 1 : method;
}

az_err az_auth_resolve(az_auth *a, const char *authorization, const char *x_api_key,
                       const char *method, az_principal *p, char *msg)
{
    anonymous(p);
    const az_perm *perm = az_perm_find(method);
    if (!perm || perm->role == AZ_PERM_PUBLIC) return AZ_OK;

    az_err err = authenticate(a, authorization, x_api_key, p, msg);
    if (err == AZ_ERR_PERMISSION) return err; /* authenticated, but no usable role */
    if (err != AZ_OK) {
        anonymous(p);
        return err;
    }
    if (p->role < perm->role)
        return az_fail(msg, AZ_ERR_PERMISSION, "role %s may not call %s (needs %s)",
                       az_auth_role_name(p->role), short_name(method),
                       az_auth_role_name(perm->role));
    if (a->limit) return a->limit(a->limit_arg, p, perm, msg);
    return AZ_OK;
}

az_err az_auth_authorize(void *arg, az_call *c, const char *method, az_principal *p, char *msg)
{
    az_auth *a = arg;
    const az_perm *perm = az_perm_find(method);
    if (!perm || perm->role == AZ_PERM_PUBLIC) { /* no need to look at metadata */
        anonymous(p);
        return AZ_OK;
    }
    return az_auth_resolve(a, az_call_metadata(c, "authorization"),
                           az_call_metadata(c, "x-api-key"), method, p, msg);
}
