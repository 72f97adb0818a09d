/* CUnit suite for server/auth/auth.c: configuration checks and AGENTZ_AUTH=off without a
 * database; then, against the embedded PostgreSQL, credentials -> principal for API keys and
 * Clerk session tokens (JWKS served by a real HTTP server on 127.0.0.1 in this process, tokens
 * minted here with libjwt), the role check, the limiter hook, and one end-to-end run through a
 * real az_server with the authorizer installed, called over gRPC with metadata. */
#include <CUnit/Basic.h>
#include <arpa/inet.h>
#include <ftw.h>
#include <jwt.h>
#include <netinet/in.h>
#include <openssl/bn.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "agentz/v1/agent.pb-c.h"
#include "agentz/v1/system.pb-c.h"
#include "auth/apikey.h"
#include "auth/auth.h"
#include "conn.h"
#include "core/log.h"
#include "core/text.h"
#include "embed/embedded.h"
#include "google/protobuf/empty.pb-c.h"
#include "grpc/health/v1/health.pb-c.h"
#include "store/migrate.h"
#include "store/pgpool.h"

#define ISSUER "https://clerk.agentz.test"
#define VIEWER AGENTZ__V1__ROLE__ROLE_VIEWER
#define EDITOR AGENTZ__V1__ROLE__ROLE_EDITOR
#define ADMIN AGENTZ__V1__ROLE__ROLE_ADMIN
#define OWNER AGENTZ__V1__ROLE__ROLE_OWNER
#define CREATE_AGENT "/agentz.v1.AgentService/CreateAgent"
#define DELETE_AGENT "/agentz.v1.AgentService/DeleteAgent"
#define GET_AGENT "/agentz.v1.AgentService/GetAgent"
#define WHOAMI "/agentz.v1.SystemService/WhoAmI"
#define CREATE_KEY "/agentz.v1.SystemService/CreateApiKey"
#define HEALTH "/grpc.health.v1.Health/Check"

/* ---------------------------------------------------------------- pure: no database */

static void test_loopback_and_mode(void)
{
    static const char *const local[] = {"127.0.0.1:50051",  "127.0.0.1:0",    "127.1.2.3:1",
                                        "localhost:50051",  "LOCALHOST:1",    "[::1]:50051",
                                        "unix:/tmp/a.sock", "unix-abstract:x"};
    static const char *const remote[] = {
        "0.0.0.0:50051", "[::]:50051", ":50051", "10.0.0.7:50051",  "127.0.0.1.nip.io:1",
        "1270.0.0.1:1",  "[::1]x:1",   "",       "example.com:443", "127.0.0:1"};
    for (size_t i = 0; i < sizeof local / sizeof *local; i++)
        CU_ASSERT_EQUAL(az_auth_listen_is_loopback(local[i]), 1);
    for (size_t i = 0; i < sizeof remote / sizeof *remote; i++) {
        if (az_auth_listen_is_loopback(remote[i])) fprintf(stderr, "\n  loopback? %s\n", remote[i]);
        CU_ASSERT_EQUAL(az_auth_listen_is_loopback(remote[i]), 0);
    }
    CU_ASSERT_EQUAL(az_auth_listen_is_loopback(NULL), 0);

    char msg[AZ_MSG_MAX];
    int off = -1;
    CU_ASSERT_EQUAL(az_auth_parse_mode("off", &off, msg), AZ_OK);
    CU_ASSERT_EQUAL(off, 1);
    CU_ASSERT_EQUAL(az_auth_parse_mode("ON", &off, msg), AZ_OK);
    CU_ASSERT_EQUAL(off, 0);
    CU_ASSERT_EQUAL(az_auth_parse_mode("false", &off, msg), AZ_OK);
    CU_ASSERT_EQUAL(off, 1);
    CU_ASSERT_EQUAL(az_auth_parse_mode("maybe", &off, msg), AZ_ERR_INVALID);
    CU_ASSERT_PTR_NOT_NULL(strstr(msg, "AGENTZ_AUTH"));
    CU_ASSERT_EQUAL(az_auth_parse_mode(NULL, &off, msg), AZ_ERR_INVALID);

    CU_ASSERT_STRING_EQUAL(az_auth_role_name(VIEWER), "viewer");
    CU_ASSERT_STRING_EQUAL(az_auth_role_name(OWNER), "owner");
    CU_ASSERT_STRING_EQUAL(az_auth_role_name(0), "none");
    CU_ASSERT_STRING_EQUAL(az_auth_role_name(99), "none");
    CU_ASSERT_EQUAL(az_auth_method_value("jwt"), AGENTZ__V1__AUTH_METHOD__AUTH_METHOD_JWT);
    CU_ASSERT_EQUAL(az_auth_method_value("api_key"), AGENTZ__V1__AUTH_METHOD__AUTH_METHOD_API_KEY);
    CU_ASSERT_EQUAL(az_auth_method_value("none"), AGENTZ__V1__AUTH_METHOD__AUTH_METHOD_NONE);
    CU_ASSERT_EQUAL(az_auth_method_value("x"), AGENTZ__V1__AUTH_METHOD__AUTH_METHOD_UNSPECIFIED);
    CU_ASSERT_EQUAL(az_auth_method_value(NULL), AGENTZ__V1__AUTH_METHOD__AUTH_METHOD_UNSPECIFIED);
}

static void test_config_errors(void)
{
    char msg[AZ_MSG_MAX];
    /* authentication off is for loopback listeners only */
    az_auth_config off_remote = {.disabled = 1, .listen = "0.0.0.0:50051"};
    CU_ASSERT_PTR_NULL(az_auth_new(&off_remote, NULL, msg));
    CU_ASSERT_PTR_NOT_NULL(strstr(msg, "AGENTZ_AUTH=off"));
    CU_ASSERT_PTR_NOT_NULL(strstr(msg, "0.0.0.0:50051"));
    az_auth_config off_unknown = {.disabled = 1};
    CU_ASSERT_PTR_NULL(az_auth_new(&off_unknown, NULL, msg));
    static const char *const bad_maps[] = {
        "org:admin",
        "org:admin=superuser",
        "=admin",
        "org:admin=admin,org:member",
    };
    for (size_t i = 0; i < sizeof bad_maps / sizeof *bad_maps; i++) {
        az_auth_config c = {.jwt_role_map = bad_maps[i]};
        az_auth *a = az_auth_new(&c, NULL, msg);
        CU_ASSERT_PTR_NULL(a);
        CU_ASSERT_PTR_NOT_NULL(strstr(msg, "AGENTZ_JWT_ROLE_MAP"));
        az_auth_free(a);
    }
    az_auth_config issuer_only = {.jwt_issuer = ISSUER};
    CU_ASSERT_PTR_NULL(az_auth_new(&issuer_only, NULL, msg));
    CU_ASSERT_PTR_NOT_NULL(strstr(msg, "AGENTZ_JWKS_URL"));
    az_auth_config plain_http = {.jwks_url = "http://clerk.example/jwks", .jwt_issuer = ISSUER};
    CU_ASSERT_PTR_NULL(az_auth_new(&plain_http, NULL, msg));
    az_auth_config url_only = {.jwks_url = "https://clerk.example/jwks"};
    CU_ASSERT_PTR_NULL(az_auth_new(&url_only, NULL, msg));
    CU_ASSERT_PTR_NOT_NULL(strstr(msg, "AGENTZ_JWT_ISSUER"));
    CU_ASSERT_PTR_NULL(az_auth_new(NULL, NULL, msg));
    az_auth_free(NULL);
}

static void test_auth_off(void)
{
    char msg[AZ_MSG_MAX];
    az_auth_config c = {.disabled = 1, .listen = "127.0.0.1:0"};
    az_auth *a = az_auth_new(&c, NULL, msg);
    CU_ASSERT_PTR_NOT_NULL_FATAL(a);
    az_principal p;
    CU_ASSERT_EQUAL(az_auth_resolve(a, NULL, NULL, CREATE_KEY, &p, msg), AZ_OK);
    CU_ASSERT_STRING_EQUAL(p.id, AZ_AUTH_DEV_PRINCIPAL);
    CU_ASSERT_STRING_EQUAL(p.workspace_id, AZ_DEFAULT_WORKSPACE);
    CU_ASSERT_EQUAL(p.role, OWNER);
    CU_ASSERT_STRING_EQUAL(p.auth_method, "none");
    /* public methods stay anonymous */
    CU_ASSERT_EQUAL(az_auth_resolve(a, NULL, NULL, HEALTH, &p, msg), AZ_OK);
    CU_ASSERT_STRING_EQUAL(p.id, "");
    az_auth_free(a);
}

static void test_without_database(void)
{
    char msg[AZ_MSG_MAX];
    az_auth_config c = {0};
    az_auth *a = az_auth_new(&c, NULL, msg);
    CU_ASSERT_PTR_NOT_NULL_FATAL(a);
    az_principal p;
    /* public and unknown methods: anonymous, credentials not even looked at */
    CU_ASSERT_EQUAL(az_auth_resolve(a, NULL, NULL, HEALTH, &p, msg), AZ_OK);
    CU_ASSERT_STRING_EQUAL(p.id, "");
    CU_ASSERT_EQUAL(p.role, 0);
    CU_ASSERT_STRING_EQUAL(p.auth_method, "none");
    CU_ASSERT_EQUAL(az_auth_resolve(a, "Basic Zm9vOmJhcg==", "junk", HEALTH, &p, msg), AZ_OK);
    CU_ASSERT_EQUAL(az_auth_resolve(a, NULL, NULL, "/agentz.v1.AgentService/Nope", &p, msg), AZ_OK);
    CU_ASSERT_STRING_EQUAL(p.id, "");
    CU_ASSERT_EQUAL(az_auth_resolve(a, NULL, NULL,
                                    "/grpc.reflection.v1.ServerReflection/"
                                    "ServerReflectionInfo",
                                    &p, msg),
                    AZ_OK);
    /* no credentials */
    CU_ASSERT_EQUAL(az_auth_resolve(a, NULL, NULL, GET_AGENT, &p, msg), AZ_ERR_UNAUTHENTICATED);
    CU_ASSERT_STRING_EQUAL(msg,
                           "missing credentials: send authorization: Bearer <token> or x-api-key");
    CU_ASSERT_EQUAL(az_auth_resolve(a, "", "", GET_AGENT, &p, msg), AZ_ERR_UNAUTHENTICATED);
    CU_ASSERT_STRING_EQUAL(p.id, "");
    /* malformed credentials */
    CU_ASSERT_EQUAL(az_auth_resolve(a, "Basic Zm9vOmJhcg==", NULL, GET_AGENT, &p, msg),
                    AZ_ERR_UNAUTHENTICATED);
    CU_ASSERT_PTR_NOT_NULL(strstr(msg, "Bearer"));
    CU_ASSERT_EQUAL(az_auth_resolve(a, "Bearer", NULL, GET_AGENT, &p, msg), AZ_ERR_UNAUTHENTICATED);
    CU_ASSERT_EQUAL(az_auth_resolve(a, "Bearer    ", NULL, GET_AGENT, &p, msg),
                    AZ_ERR_UNAUTHENTICATED);
    CU_ASSERT_EQUAL(az_auth_resolve(a, "Bearerabc", NULL, GET_AGENT, &p, msg),
                    AZ_ERR_UNAUTHENTICATED);
    CU_ASSERT_EQUAL(az_auth_resolve(a, NULL, "not-a-key", GET_AGENT, &p, msg),
                    AZ_ERR_UNAUTHENTICATED);
    CU_ASSERT_PTR_NOT_NULL(strstr(msg, "x-api-key"));
    /* a session token while AGENTZ_JWKS_URL is unset */
    CU_ASSERT_EQUAL(
        az_auth_resolve(a, "bearer eyJhbGciOiJSUzI1NiJ9.e30.AAAA", NULL, GET_AGENT, &p, msg),
        AZ_ERR_UNAUTHENTICATED);
    CU_ASSERT_PTR_NOT_NULL(strstr(msg, "AGENTZ_JWKS_URL"));
    /* oversized bearer values are refused before anything else */
    char *big = malloc(20000);
    memcpy(big, "Bearer ", 7);
    memset(big + 7, 'a', 20000 - 8);
    big[19999] = 0;
    CU_ASSERT_EQUAL(az_auth_resolve(a, big, NULL, GET_AGENT, &p, msg), AZ_ERR_UNAUTHENTICATED);
    CU_ASSERT_PTR_NULL(strstr(msg, "aaaa")); /* never echoed */
    free(big);
    az_auth_free(a);
}

/* ---------------------------------------------------------------- database, JWKS, tokens */

static char dir[64];
static az_embed *embed;
static az_pg *pg;
static az_arena *arena;

static EVP_PKEY *rsa;
static char *priv_pem, *jwks_doc;

typedef struct jwks_server {
    int fd, port;
    pthread_t th;
    atomic_int stop, requests;
} jwks_server;
static jwks_server jwks;

static void *serve(void *arg)
{
    jwks_server *s = arg;
    while (!atomic_load(&s->stop)) {
        struct pollfd pfd = {.fd = s->fd, .events = POLLIN};
        if (poll(&pfd, 1, 50) <= 0) continue;
        int c = accept(s->fd, NULL, NULL);
        if (c < 0) continue;
        char req[4096];
        size_t got = 0;
        while (got < sizeof req - 1) {
            struct pollfd cp = {.fd = c, .events = POLLIN};
            if (poll(&cp, 1, 2000) <= 0) break;
            ssize_t r = read(c, req + got, sizeof req - 1 - got);
            if (r <= 0) break;
            got += (size_t)r;
            req[got] = 0;
            if (strstr(req, "\r\n\r\n")) break;
        }
        atomic_fetch_add(&s->requests, 1);
        char head[200];
        int hn = snprintf(head, sizeof head,
                          "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
                          "%zu\r\nConnection: close\r\n\r\n",
                          strlen(jwks_doc));
        send(c, head, (size_t)hn, MSG_NOSIGNAL);
        send(c, jwks_doc, strlen(jwks_doc), MSG_NOSIGNAL);
        close(c);
    }
    return NULL;
}

static void b64url(const unsigned char *in, size_t n, char *out)
{
    static const char al[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    size_t o = 0;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (i + 1 < n ? (uint32_t)in[i + 1] << 8 : 0) |
                     (i + 2 < n ? in[i + 2] : 0);
        out[o++] = al[v >> 18 & 63];
        out[o++] = al[v >> 12 & 63];
        if (i + 1 < n) out[o++] = al[v >> 6 & 63];
        if (i + 2 < n) out[o++] = al[v & 63];
    }
    out[o] = 0;
}

/* A session token for sub with extra claims (JSON object text or NULL). Caller frees. */
static char *token(const char *sub, const char *extra_json)
{
    jwt_t *j = NULL;
    jwt_new(&j);
    long now = (long)time(NULL);
    jwt_add_grant(j, "iss", ISSUER);
    jwt_add_grant(j, "sub", sub);
    jwt_add_grant_int(j, "iat", now);
    jwt_add_grant_int(j, "exp", now + 60);
    if (extra_json) jwt_add_grants_json(j, extra_json);
    jwt_add_header(j, "kid", "k1");
    jwt_set_alg(j, JWT_ALG_RS256, (const unsigned char *)priv_pem, (int)strlen(priv_pem));
    char *t = jwt_encode_str(j);
    jwt_free(j);
    return t;
}

/* "Bearer <t>" in a static buffer. */
static const char *bearer(const char *t)
{
    static char buf[9000];
    snprintf(buf, sizeof buf, "Bearer %s", t);
    return buf;
}

static az_auth *auth_with_jwt(const char *role_map)
{
    char url[128], msg[AZ_MSG_MAX];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/.well-known/jwks.json", jwks.port);
    az_auth_config c = {.jwks_url = url, .jwt_issuer = ISSUER, .jwt_role_map = role_map};
    az_auth *a = az_auth_new(&c, pg, msg);
    if (!a) fprintf(stderr, "az_auth_new: %s\n", msg);
    return a;
}

static void test_session_tokens(void)
{
    az_auth *a = auth_with_jwt(NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(a);
    char msg[AZ_MSG_MAX];
    az_principal p, q;

    /* an organization admin */
    char *t = token("user_alice", "{\"org_id\":\"org_acme\",\"org_slug\":\"acme\","
                                  "\"org_role\":\"org:admin\"}");
    CU_ASSERT_EQUAL_FATAL(az_auth_resolve(a, bearer(t), NULL, CREATE_KEY, &p, msg), AZ_OK);
    CU_ASSERT_STRING_EQUAL(p.id, "user:user_alice");
    CU_ASSERT(az_text_is_uuid(p.workspace_id));
    CU_ASSERT_STRING_NOT_EQUAL(p.workspace_id, AZ_DEFAULT_WORKSPACE);
    CU_ASSERT_EQUAL(p.role, ADMIN);
    CU_ASSERT_STRING_EQUAL(p.auth_method, "jwt");
    free(t);

    /* another member of the same organization, v2 claims: same workspace, editor */
    t = token("user_bob",
              "{\"v\":2,\"o\":{\"id\":\"org_acme\",\"slg\":\"acme\",\"rol\":\"member\"}}");
    CU_ASSERT_EQUAL(az_auth_resolve(a, bearer(t), NULL, CREATE_AGENT, &q, msg), AZ_OK);
    CU_ASSERT_STRING_EQUAL(q.workspace_id, p.workspace_id);
    CU_ASSERT_EQUAL(q.role, EDITOR);
    /* ... who may not manage API keys */
    CU_ASSERT_EQUAL(az_auth_resolve(a, bearer(t), NULL, CREATE_KEY, &q, msg), AZ_ERR_PERMISSION);
    CU_ASSERT_STRING_EQUAL(msg, "role editor may not call CreateApiKey (needs admin)");
    CU_ASSERT_STRING_EQUAL(q.id, "user:user_bob"); /* the audit log can name who was denied */
    free(t);

    /* a viewer */
    t = token("user_carol", "{\"org_id\":\"org_acme\",\"org_role\":\"org:viewer\"}");
    CU_ASSERT_EQUAL(az_auth_resolve(a, bearer(t), NULL, GET_AGENT, &q, msg), AZ_OK);
    CU_ASSERT_EQUAL(q.role, VIEWER);
    CU_ASSERT_EQUAL(az_auth_resolve(a, bearer(t), NULL, CREATE_AGENT, &q, msg), AZ_ERR_PERMISSION);
    CU_ASSERT_STRING_EQUAL(msg, "role viewer may not call CreateAgent (needs editor)");
    free(t);

    /* a role the map does not know: denied, not guessed */
    t = token("user_dave", "{\"org_id\":\"org_acme\",\"org_role\":\"org:billing\"}");
    CU_ASSERT_EQUAL(az_auth_resolve(a, bearer(t), NULL, GET_AGENT, &q, msg), AZ_ERR_PERMISSION);
    CU_ASSERT_PTR_NOT_NULL(strstr(msg, "org:billing"));
    free(t);

    /* no organization: a personal workspace, as its owner */
    t = token("user_erin", NULL);
    CU_ASSERT_EQUAL(az_auth_resolve(a, bearer(t), NULL, CREATE_KEY, &q, msg), AZ_OK);
    CU_ASSERT_EQUAL(q.role, OWNER);
    CU_ASSERT(az_text_is_uuid(q.workspace_id));
    CU_ASSERT_STRING_NOT_EQUAL(q.workspace_id, p.workspace_id);
    char personal[37];
    memcpy(personal, q.workspace_id, sizeof personal);
    free(t);
    t = token("user_erin", "{\"v\":2}"); /* same user again: same workspace */
    CU_ASSERT_EQUAL(az_auth_resolve(a, bearer(t), NULL, GET_AGENT, &q, msg), AZ_OK);
    CU_ASSERT_STRING_EQUAL(q.workspace_id, personal);
    free(t);
    /* an organization cannot pose as someone's personal workspace */
    t = token("user_mallory", "{\"org_id\":\"user:user_erin\",\"org_role\":\"org:admin\"}");
    CU_ASSERT_EQUAL(az_auth_resolve(a, bearer(t), NULL, GET_AGENT, &q, msg),
                    AZ_ERR_UNAUTHENTICATED);
    CU_ASSERT_STRING_EQUAL(q.id, "");
    free(t);

    /* bad tokens: UNAUTHENTICATED, principal reset */
    CU_ASSERT_EQUAL(az_auth_resolve(a, "Bearer eyJhbGciOiJub25lIn0.e30.", NULL, GET_AGENT, &q, msg),
                    AZ_ERR_UNAUTHENTICATED);
    CU_ASSERT_STRING_EQUAL(q.id, "");
    CU_ASSERT_STRING_EQUAL(q.workspace_id, "");
    az_auth_free(a);

    /* a custom role map */
    a = auth_with_jwt("org:billing=viewer, admin=owner");
    CU_ASSERT_PTR_NOT_NULL_FATAL(a);
    t = token("user_dave", "{\"org_id\":\"org_acme\",\"org_role\":\"org:billing\"}");
    CU_ASSERT_EQUAL(az_auth_resolve(a, bearer(t), NULL, GET_AGENT, &q, msg), AZ_OK);
    CU_ASSERT_EQUAL(q.role, VIEWER);
    free(t);
    t = token("user_alice", "{\"v\":2,\"o\":{\"id\":\"org_acme\",\"rol\":\"admin\"}}");
    CU_ASSERT_EQUAL(az_auth_resolve(a, bearer(t), NULL, GET_AGENT, &q, msg), AZ_OK);
    CU_ASSERT_EQUAL(q.role, OWNER);
    free(t);
    t = token("user_bob", "{\"org_id\":\"org_acme\",\"org_role\":\"org:member\"}");
    CU_ASSERT_EQUAL(az_auth_resolve(a, bearer(t), NULL, GET_AGENT, &q, msg), AZ_ERR_PERMISSION);
    free(t);
    az_auth_free(a);
}

static void test_api_keys(void)
{
    char msg[AZ_MSG_MAX];
    az_auth_config c = {0};
    az_auth *a = az_auth_new(&c, pg, msg);
    CU_ASSERT_PTR_NOT_NULL_FATAL(a);
    static const char *ws = "0b0b0b0b-0000-4000-8000-000000000001";
    Agentz__V1__ApiKey *viewer = NULL, *admin = NULL;
    char *viewer_secret = NULL, *admin_secret = NULL;
    CU_ASSERT_EQUAL_FATAL(
        az_apikey_create_in(pg, ws, "viewer", VIEWER, 0, arena, &viewer, &viewer_secret, msg),
        AZ_OK);
    CU_ASSERT_EQUAL_FATAL(
        az_apikey_create_in(pg, ws, "admin", ADMIN, 0, arena, &admin, &admin_secret, msg), AZ_OK);
    az_principal p;
    char want[64];
    CU_ASSERT_EQUAL(az_auth_resolve(a, bearer(viewer_secret), NULL, GET_AGENT, &p, msg), AZ_OK);
    snprintf(want, sizeof want, "key:%s", viewer->id);
    CU_ASSERT_STRING_EQUAL(p.id, want);
    CU_ASSERT_STRING_EQUAL(p.workspace_id, ws);
    CU_ASSERT_EQUAL(p.role, VIEWER);
    CU_ASSERT_STRING_EQUAL(p.auth_method, "api_key");
    CU_ASSERT_EQUAL(az_auth_resolve(a, NULL, viewer_secret, GET_AGENT, &p, msg), AZ_OK);
    CU_ASSERT_STRING_EQUAL(p.id, want);
    CU_ASSERT_EQUAL(az_auth_resolve(a, NULL, viewer_secret, DELETE_AGENT, &p, msg),
                    AZ_ERR_PERMISSION);
    CU_ASSERT_STRING_EQUAL(msg, "role viewer may not call DeleteAgent (needs editor)");
    /* authorization wins over x-api-key */
    CU_ASSERT_EQUAL(az_auth_resolve(a, bearer(admin_secret), viewer_secret, CREATE_KEY, &p, msg),
                    AZ_OK);
    CU_ASSERT_EQUAL(p.role, ADMIN);
    /* unknown and revoked keys */
    char wrong[128];
    snprintf(wrong, sizeof wrong, "%s", viewer_secret);
    wrong[10] = wrong[10] == 'A' ? 'B' : 'A';
    CU_ASSERT_EQUAL(az_auth_resolve(a, bearer(wrong), NULL, GET_AGENT, &p, msg),
                    AZ_ERR_UNAUTHENTICATED);
    CU_ASSERT_PTR_NULL(strstr(msg, wrong)); /* never echoed */
    CU_ASSERT_STRING_EQUAL(p.id, "");
    az_ctx ctx = {.workspace_id = ws, .principal = "test", .request_id = "t", .deadline_ms = -1};
    CU_ASSERT_EQUAL(az_apikey_revoke(pg, &ctx, viewer->id, msg), AZ_OK);
    CU_ASSERT_EQUAL(az_auth_resolve(a, NULL, viewer_secret, GET_AGENT, &p, msg),
                    AZ_ERR_UNAUTHENTICATED);
    az_auth_free(a);
}

/* ---------------------------------------------------------------- limiter */

static struct {
    int calls;
    char principal[160];
    const az_perm *perm;
    int refuse;
} lim;

static az_err limiter(void *arg, const az_principal *p, const az_perm *perm, char *msg)
{
    lim.calls++;
    snprintf(lim.principal, sizeof lim.principal, "%s", p->id);
    lim.perm = perm;
    if (lim.refuse) return az_fail(msg, AZ_ERR_EXHAUSTED, "slow down");
    return AZ_OK;
}

static void test_limiter_hook(void)
{
    char msg[AZ_MSG_MAX];
    az_auth *a = auth_with_jwt(NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(a);
    az_auth_set_limiter(a, limiter, NULL);
    memset(&lim, 0, sizeof lim);
    az_principal p;
    char *t = token("user_frank", NULL);
    CU_ASSERT_EQUAL(
        az_auth_resolve(a, bearer(t), NULL, "/agentz.v1.WorkflowService/StartRun", &p, msg), AZ_OK);
    CU_ASSERT_EQUAL(lim.calls, 1);
    CU_ASSERT_STRING_EQUAL(lim.principal, "user:user_frank");
    CU_ASSERT_PTR_NOT_NULL_FATAL(lim.perm);
    CU_ASSERT_EQUAL(lim.perm->expensive, 1);
    /* not for public methods, failed authentication or denied calls */
    CU_ASSERT_EQUAL(az_auth_resolve(a, NULL, NULL, HEALTH, &p, msg), AZ_OK);
    CU_ASSERT_EQUAL(az_auth_resolve(a, NULL, NULL, GET_AGENT, &p, msg), AZ_ERR_UNAUTHENTICATED);
    CU_ASSERT_EQUAL(lim.calls, 1);
    /* its verdict is the call's */
    lim.refuse = 1;
    CU_ASSERT_EQUAL(az_auth_resolve(a, bearer(t), NULL, GET_AGENT, &p, msg), AZ_ERR_EXHAUSTED);
    CU_ASSERT_STRING_EQUAL(msg, "slow down");
    az_auth_set_limiter(a, NULL, NULL);
    CU_ASSERT_EQUAL(az_auth_resolve(a, bearer(t), NULL, GET_AGENT, &p, msg), AZ_OK);
    CU_ASSERT_EQUAL(lim.calls, 2);
    free(t);
    az_auth_free(a);
}

/* ---------------------------------------------------------------- end to end over gRPC */

static atomic_int deletes;

static az_err h_whoami(az_call *c, const ProtobufCMessage *req, ProtobufCMessage **resp, char *msg)
{
    const az_principal *p = az_call_principal(c);
    Agentz__V1__WhoAmIResponse *r = az_arena_alloc(az_call_arena(c), sizeof *r);
    if (!r) return az_fail(msg, AZ_ERR_NOMEM, "out of memory");
    agentz__v1__who_am_iresponse__init(r);
    r->principal = az_arena_strdup(az_call_arena(c), p->id);
    r->workspace_id = az_arena_strdup(az_call_arena(c), p->workspace_id);
    r->role = (Agentz__V1__Role)p->role;
    r->auth_method = (Agentz__V1__AuthMethod)az_auth_method_value(p->auth_method);
    *resp = &r->base;
    return AZ_OK;
}

static az_err h_delete(az_call *c, const ProtobufCMessage *req, ProtobufCMessage **resp, char *msg)
{
    atomic_fetch_add(&deletes, 1);
    static Google__Protobuf__Empty empty = GOOGLE__PROTOBUF__EMPTY__INIT;
    *resp = &empty.base;
    return AZ_OK;
}

static az_err h_health(az_call *c, const ProtobufCMessage *req, ProtobufCMessage **resp, char *msg)
{
    static Grpc__Health__V1__HealthCheckResponse r = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;
    r.status = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING;
    *resp = &r.base;
    return AZ_OK;
}

static const az_method methods[] = {
    {WHOAMI, AZ_RPC_UNARY, &agentz__v1__who_am_irequest__descriptor,
     &agentz__v1__who_am_iresponse__descriptor, h_whoami, NULL, NULL, NULL},
    {DELETE_AGENT, AZ_RPC_UNARY, &agentz__v1__delete_agent_request__descriptor,
     &google__protobuf__empty__descriptor, h_delete, NULL, NULL, NULL},
    {HEALTH, AZ_RPC_UNARY, &grpc__health__v1__health_check_request__descriptor,
     &grpc__health__v1__health_check_response__descriptor, h_health, NULL, NULL, NULL},
};

static void test_end_to_end(void)
{
    char msg[AZ_MSG_MAX];
    az_auth *a = auth_with_jwt(NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(a);
    const az_method *tables[1] = {methods};
    size_t counts[1] = {sizeof methods / sizeof *methods};
    az_server_config sc = {.listen = "127.0.0.1:0", .threads = 4};
    az_server *srv = az_server_new(&sc, tables, counts, 1, msg);
    CU_ASSERT_PTR_NOT_NULL_FATAL(srv);
    az_server_set_authorizer(srv, az_auth_authorize, a);
    CU_ASSERT_EQUAL_FATAL(az_server_start(srv, msg), AZ_OK);

    char target[64];
    snprintf(target, sizeof target, "127.0.0.1:%d", az_server_port(srv));
    az_conn_opts o = {.target = target};
    az_conn *conn = NULL;
    CU_ASSERT_EQUAL_FATAL(az_conn_open(&o, &conn, msg), AZ_OK);

    static const char *ws = "0b0b0b0b-0000-4000-8000-000000000002";
    Agentz__V1__ApiKey *k = NULL;
    char *secret = NULL;
    CU_ASSERT_EQUAL_FATAL(az_apikey_create_in(pg, ws, "e2e", VIEWER, 0, arena, &k, &secret, msg),
                          AZ_OK);

    Agentz__V1__WhoAmIRequest who = AGENTZ__V1__WHO_AM_IREQUEST__INIT;
    Agentz__V1__DeleteAgentRequest del = AGENTZ__V1__DELETE_AGENT_REQUEST__INIT;
    del.id = "0c0c0c0c-0000-4000-8000-000000000001";
    Grpc__Health__V1__HealthCheckRequest hc = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
    ProtobufCMessage *resp = NULL;
    int st = -1;

    /* no credentials */
    CU_ASSERT_EQUAL(az_conn_unary(conn, WHOAMI, &who.base,
                                  &agentz__v1__who_am_iresponse__descriptor, 5000, NULL, &resp, &st,
                                  msg),
                    AZ_ERR_UNAUTHENTICATED);
    CU_ASSERT_EQUAL(st, 16);
    CU_ASSERT_PTR_NOT_NULL(strstr(msg, "missing credentials"));
    /* public: health without credentials */
    CU_ASSERT_EQUAL(az_conn_unary(conn, HEALTH, &hc.base,
                                  &grpc__health__v1__health_check_response__descriptor, 5000, NULL,
                                  &resp, &st, msg),
                    AZ_OK);
    protobuf_c_message_free_unpacked(resp, NULL);
    /* API key in x-api-key */
    az_md md_key[] = {{"x-api-key", secret}, {NULL, NULL}};
    CU_ASSERT_EQUAL_FATAL(az_conn_unary(conn, WHOAMI, &who.base,
                                        &agentz__v1__who_am_iresponse__descriptor, 5000, md_key,
                                        &resp, &st, msg),
                          AZ_OK);
    Agentz__V1__WhoAmIResponse *w = (Agentz__V1__WhoAmIResponse *)resp;
    char want[64];
    snprintf(want, sizeof want, "key:%s", k->id);
    CU_ASSERT_STRING_EQUAL(w->principal, want);
    CU_ASSERT_STRING_EQUAL(w->workspace_id, ws);
    CU_ASSERT_EQUAL(w->role, VIEWER);
    CU_ASSERT_EQUAL(w->auth_method, AGENTZ__V1__AUTH_METHOD__AUTH_METHOD_API_KEY);
    protobuf_c_message_free_unpacked(resp, NULL);
    /* a viewer may not delete: PERMISSION_DENIED, handler never runs */
    CU_ASSERT_EQUAL(az_conn_unary(conn, DELETE_AGENT, &del.base,
                                  &google__protobuf__empty__descriptor, 5000, md_key, &resp, &st,
                                  msg),
                    AZ_ERR_PERMISSION);
    CU_ASSERT_EQUAL(st, 7);
    CU_ASSERT_STRING_EQUAL(msg, "role viewer may not call DeleteAgent (needs editor)");
    CU_ASSERT_EQUAL(atomic_load(&deletes), 0);
    /* a session token in authorization */
    char *t = token("user_gina", "{\"org_id\":\"org_e2e\",\"org_role\":\"org:member\"}");
    char auth[9000];
    snprintf(auth, sizeof auth, "Bearer %s", t);
    az_md md_jwt[] = {{"authorization", auth}, {NULL, NULL}};
    CU_ASSERT_EQUAL(az_conn_unary(conn, DELETE_AGENT, &del.base,
                                  &google__protobuf__empty__descriptor, 5000, md_jwt, &resp, &st,
                                  msg),
                    AZ_OK);
    protobuf_c_message_free_unpacked(resp, NULL);
    CU_ASSERT_EQUAL(atomic_load(&deletes), 1);
    CU_ASSERT_EQUAL(az_conn_unary(conn, WHOAMI, &who.base,
                                  &agentz__v1__who_am_iresponse__descriptor, 5000, md_jwt, &resp,
                                  &st, msg),
                    AZ_OK);
    w = (Agentz__V1__WhoAmIResponse *)resp;
    CU_ASSERT_STRING_EQUAL(w->principal, "user:user_gina");
    CU_ASSERT_EQUAL(w->role, EDITOR);
    CU_ASSERT_EQUAL(w->auth_method, AGENTZ__V1__AUTH_METHOD__AUTH_METHOD_JWT);
    protobuf_c_message_free_unpacked(resp, NULL);
    free(t);
    /* a forged token */
    az_md md_bad[] = {{"authorization", "Bearer eyJhbGciOiJIUzI1NiJ9.e30.AAAA"}, {NULL, NULL}};
    CU_ASSERT_EQUAL(az_conn_unary(conn, WHOAMI, &who.base,
                                  &agentz__v1__who_am_iresponse__descriptor, 5000, md_bad, &resp,
                                  &st, msg),
                    AZ_ERR_UNAUTHENTICATED);
    CU_ASSERT_PTR_NOT_NULL(strstr(msg, "HS256"));
    /* an unknown method stays UNIMPLEMENTED, credentials or not */
    CU_ASSERT_EQUAL(az_conn_unary(conn, "/agentz.v1.AgentService/NoSuchMethod", &who.base,
                                  &google__protobuf__empty__descriptor, 5000, NULL, &resp, &st,
                                  msg),
                    AZ_ERR_UNIMPLEMENTED);
    CU_ASSERT_EQUAL(st, 12);

    az_conn_free(conn);
    az_server_shutdown(srv);
    az_server_free(srv);
    az_auth_free(a);
}

/* ---------------------------------------------------------------- set-up */

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    remove(path);
    return 0;
}

static int make_jwks(void)
{
    rsa = EVP_RSA_gen(2048);
    if (!rsa) return -1;
    BIO *b = BIO_new(BIO_s_mem());
    PEM_write_bio_PrivateKey(b, rsa, NULL, NULL, 0, NULL, NULL);
    char *data;
    long n = BIO_get_mem_data(b, &data);
    priv_pem = strndup(data, (size_t)n);
    BIO_free(b);
    BIGNUM *bn = NULL, *be = NULL;
    EVP_PKEY_get_bn_param(rsa, "n", &bn);
    EVP_PKEY_get_bn_param(rsa, "e", &be);
    unsigned char nb[512], eb[16];
    int nl = BN_bn2bin(bn, nb), el = BN_bn2bin(be, eb);
    BN_free(bn);
    BN_free(be);
    char ns[700], es[32];
    b64url(nb, (size_t)nl, ns);
    b64url(eb, (size_t)el, es);
    jwks_doc = malloc(2048);
    snprintf(jwks_doc, 2048,
             "{\"keys\":[{\"kty\":\"RSA\",\"kid\":\"k1\",\"use\":\"sig\",\"n\":\"%s\","
             "\"e\":\"%s\"}]}",
             ns, es);
    jwks.fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t l = sizeof a;
    if (bind(jwks.fd, (struct sockaddr *)&a, sizeof a) != 0 || listen(jwks.fd, 64) != 0) return -1;
    getsockname(jwks.fd, (struct sockaddr *)&a, &l);
    jwks.port = ntohs(a.sin_port);
    return pthread_create(&jwks.th, NULL, serve, &jwks) == 0 ? 0 : -1;
}

static int db_init(void)
{
    char msg[AZ_MSG_MAX];
    az_log_set_level(AZ_LOG_ERROR);
    snprintf(dir, sizeof dir, "/tmp/aztest-auth-XXXXXX");
    if (!mkdtemp(dir) || chmod(dir, 0755) != 0) return -1;
    if (az_embed_start(dir, &embed, msg) != AZ_OK) {
        fprintf(stderr, "cannot start embedded postgresql: %s\n", msg);
        return -1;
    }
    if (az_pg_new(az_embed_database_url(embed), 8, 30000, &pg, msg) != AZ_OK ||
        az_migrate(pg, az_migrations, az_migrations_count, NULL, msg) != AZ_OK) {
        fprintf(stderr, "cannot prepare the database: %s\n", msg);
        return -1;
    }
    arena = az_arena_new(0);
    return arena && make_jwks() == 0 ? 0 : -1;
}

static int db_clean(void)
{
    atomic_store(&jwks.stop, 1);
    if (jwks.th) pthread_join(jwks.th, NULL);
    if (jwks.fd > 0) close(jwks.fd);
    free(jwks_doc);
    free(priv_pem);
    EVP_PKEY_free(rsa);
    az_arena_free(arena);
    az_pg_free(pg);
    az_embed_stop(embed);
    nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    return 0;
}

static int quiet(void)
{
    az_log_set_level(AZ_LOG_ERROR);
    return 0;
}

int main(void)
{
    if (CU_initialize_registry() != CUE_SUCCESS) return 1;
    CU_pSuite pure = CU_add_suite("auth without a database", quiet, NULL);
    CU_pSuite db = CU_add_suite("auth with postgresql and a jwks server", db_init, db_clean);
    if (!pure || !db) return 1;
    CU_add_test(pure, "loopback listeners, AGENTZ_AUTH, names", test_loopback_and_mode);
    CU_add_test(pure, "configuration errors", test_config_errors);
    CU_add_test(pure, "AGENTZ_AUTH=off", test_auth_off);
    CU_add_test(pure, "public, unknown, missing and malformed credentials", test_without_database);
    CU_add_test(db, "session tokens: organizations, roles, personal workspaces",
                test_session_tokens);
    CU_add_test(db, "api keys", test_api_keys);
    CU_add_test(db, "limiter hook", test_limiter_hook);
    CU_add_test(db, "end to end through az_server", test_end_to_end);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    unsigned failed = CU_get_number_of_failures();
    CU_cleanup_registry();
    return failed ? 1 : 0;
}
