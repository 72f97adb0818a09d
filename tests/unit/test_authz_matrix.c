/* CUnit suite for the permission model end to end: the table of server/auth/perm.c against the
 * one published in docs/security.md, then, against the embedded PostgreSQL, every RPC of the
 * table called through az_auth_resolve with one API key per role (and with none, and with a
 * revoked key), so a drift in perm.c, the role order or the resolver is caught. */
#include <CUnit/Basic.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "agentz/v1/system.pb-c.h"
#include "auth/apikey.h"
#include "auth/auth.h"
#include "auth/perm.h"
#include "core/arena.h"
#include "core/ctx.h"
#include "core/log.h"
#include "embed/embedded.h"
#include "store/migrate.h"
#include "store/pgpool.h"

#define VIEWER AGENTZ__V1__ROLE__ROLE_VIEWER
#define EDITOR AGENTZ__V1__ROLE__ROLE_EDITOR
#define ADMIN AGENTZ__V1__ROLE__ROLE_ADMIN
#define OWNER AGENTZ__V1__ROLE__ROLE_OWNER
#define PUBLIC AZ_PERM_PUBLIC

#define MISSING_CREDENTIALS "missing credentials: send authorization: Bearer <token> or x-api-key"

/* ---------------------------------------------------------------- the published table */

/* docs/security.md, "Roles and permissions", row by row: method, least role, audited,
 * expensive. Kept by hand on purpose: a change to perm.c must be a change to the docs too. */
static const az_perm documented[] = {
    {"/agentz.v1.AgentService/CreateAgent", EDITOR, 1, 0},
    {"/agentz.v1.AgentService/GetAgent", VIEWER, 0, 0},
    {"/agentz.v1.AgentService/ListAgents", VIEWER, 0, 0},
    {"/agentz.v1.AgentService/UpdateAgent", EDITOR, 1, 0},
    {"/agentz.v1.AgentService/DeleteAgent", EDITOR, 1, 0},
    {"/agentz.v1.AgentService/GetAgentMemory", VIEWER, 0, 0},
    {"/agentz.v1.AgentService/ClearAgentMemory", EDITOR, 1, 0},
    {"/agentz.v1.AgentService/GetAgentMetrics", VIEWER, 0, 0},
    {"/agentz.v1.AgentService/WatchAgents", VIEWER, 0, 0},
    {"/agentz.v1.TaskService/CreateTask", EDITOR, 1, 1},
    {"/agentz.v1.TaskService/CreateTasks", EDITOR, 1, 1},
    {"/agentz.v1.TaskService/GetTask", VIEWER, 0, 0},
    {"/agentz.v1.TaskService/ListTasks", VIEWER, 0, 0},
    {"/agentz.v1.TaskService/CancelTask", EDITOR, 1, 0},
    {"/agentz.v1.TaskService/RetryTask", EDITOR, 1, 0},
    {"/agentz.v1.TaskService/ListTaskAttempts", VIEWER, 0, 0},
    {"/agentz.v1.TaskService/GetTaskStats", VIEWER, 0, 0},
    {"/agentz.v1.TaskService/WatchTask", VIEWER, 0, 0},
    {"/agentz.v1.WorkflowService/CreateWorkflow", EDITOR, 1, 0},
    {"/agentz.v1.WorkflowService/GetWorkflow", VIEWER, 0, 0},
    {"/agentz.v1.WorkflowService/ListWorkflows", VIEWER, 0, 0},
    {"/agentz.v1.WorkflowService/UpdateWorkflow", EDITOR, 1, 0},
    {"/agentz.v1.WorkflowService/DeleteWorkflow", EDITOR, 1, 0},
    {"/agentz.v1.WorkflowService/ListWorkflowVersions", VIEWER, 0, 0},
    {"/agentz.v1.WorkflowService/ListTemplates", VIEWER, 0, 0},
    {"/agentz.v1.WorkflowService/InstantiateTemplate", EDITOR, 1, 1},
    {"/agentz.v1.WorkflowService/SaveAsTemplate", EDITOR, 1, 0},
    {"/agentz.v1.WorkflowService/StartRun", EDITOR, 1, 1},
    {"/agentz.v1.WorkflowService/GetRun", VIEWER, 0, 0},
    {"/agentz.v1.WorkflowService/ListRuns", VIEWER, 0, 0},
    {"/agentz.v1.WorkflowService/CancelRun", EDITOR, 1, 0},
    {"/agentz.v1.WorkflowService/ResumeRun", EDITOR, 1, 0},
    {"/agentz.v1.WorkflowService/GetWorkflowAnalytics", VIEWER, 0, 0},
    {"/agentz.v1.WorkflowService/WatchRun", VIEWER, 0, 0},
    {"/agentz.v1.SystemService/StreamMetrics", VIEWER, 0, 0},
    {"/agentz.v1.SystemService/ListAuditLog", ADMIN, 0, 0},
    {"/agentz.v1.SystemService/CreateApiKey", ADMIN, 1, 0},
    {"/agentz.v1.SystemService/ListApiKeys", ADMIN, 0, 0},
    {"/agentz.v1.SystemService/RevokeApiKey", ADMIN, 1, 0},
    {"/agentz.v1.SystemService/WhoAmI", VIEWER, 0, 0},
    {"/agentz.v1.SystemService/CreateSecret", EDITOR, 1, 0},
    {"/agentz.v1.SystemService/ListSecrets", EDITOR, 0, 0},
    {"/agentz.v1.SystemService/DeleteSecret", EDITOR, 1, 0},
    {"/grpc.health.v1.Health/Check", PUBLIC, 0, 0},
    {"/grpc.health.v1.Health/Watch", PUBLIC, 0, 0},
    {"/grpc.reflection.v1.ServerReflection/ServerReflectionInfo", PUBLIC, 0, 0},
    {"/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", PUBLIC, 0, 0},
};

#define DOCUMENTED_LEN (sizeof documented / sizeof *documented)

static const char *role_label(int role)
{
    return role == PUBLIC ? "public" : az_auth_role_name(role);
}

/* The role order the resolver's ">=" relies on, and the role names its messages use. */
static void test_role_order(void)
{
    CU_ASSERT(VIEWER > 0);
    CU_ASSERT(VIEWER < EDITOR);
    CU_ASSERT(EDITOR < ADMIN);
    CU_ASSERT(ADMIN < OWNER);
    CU_ASSERT(PUBLIC < VIEWER);
    CU_ASSERT_STRING_EQUAL(az_auth_role_name(VIEWER), "viewer");
    CU_ASSERT_STRING_EQUAL(az_auth_role_name(EDITOR), "editor");
    CU_ASSERT_STRING_EQUAL(az_auth_role_name(ADMIN), "admin");
    CU_ASSERT_STRING_EQUAL(az_auth_role_name(OWNER), "owner");
}

/* perm.c is well formed: unique "/package.Service/Method" names, each found by az_perm_find,
 * roles in range, public methods neither audited nor expensive. */
static void test_table_shape(void)
{
    size_t n = 0;
    const az_perm *t = az_perm_table(&n);
    CU_ASSERT_PTR_NOT_NULL_FATAL(t);
    CU_ASSERT(n > 0);
    for (size_t i = 0; i < n; i++) {
        CU_ASSERT_PTR_NOT_NULL_FATAL(t[i].method);
        const char *m = t[i].method;
        CU_ASSERT_EQUAL(m[0], '/');
        const char *slash = strrchr(m, '/');
        CU_ASSERT(slash != m && slash[1] != 0);
        CU_ASSERT_PTR_EQUAL(az_perm_find(m), &t[i]);
        for (size_t j = i + 1; j < n; j++) {
            if (strcmp(m, t[j].method) == 0) fprintf(stderr, "\n  duplicate entry %s\n", m);
            CU_ASSERT(strcmp(m, t[j].method) != 0);
        }
        int ok_role = t[i].role == PUBLIC || (t[i].role >= VIEWER && t[i].role <= OWNER);
        if (!ok_role) fprintf(stderr, "\n  %s: role %d out of range\n", m, t[i].role);
        CU_ASSERT(ok_role);
        CU_ASSERT(t[i].mutating == 0 || t[i].mutating == 1);
        CU_ASSERT(t[i].expensive == 0 || t[i].expensive == 1);
        if (t[i].role == PUBLIC) {
            CU_ASSERT_EQUAL(t[i].mutating, 0);
            CU_ASSERT_EQUAL(t[i].expensive, 0);
        }
    }
}

/* Both directions: every documented row is in perm.c with the same role and flags, and perm.c
 * has no row the docs do not list. */
static void test_table_matches_docs(void)
{
    size_t n = 0;
    const az_perm *t = az_perm_table(&n);
    if (n != DOCUMENTED_LEN)
        fprintf(stderr, "\n  perm.c has %zu entries, docs/security.md %zu\n", n, DOCUMENTED_LEN);
    CU_ASSERT_EQUAL(n, DOCUMENTED_LEN);
    for (size_t i = 0; i < DOCUMENTED_LEN; i++) {
        const az_perm *d = &documented[i];
        const az_perm *p = az_perm_find(d->method);
        if (!p) {
            fprintf(stderr, "\n  documented %s is missing from perm.c\n", d->method);
            CU_FAIL("documented method missing from perm.c");
            continue;
        }
        if (p->role != d->role || p->mutating != d->mutating || p->expensive != d->expensive)
            fprintf(stderr, "\n  %s: perm.c %s/%d/%d, docs %s/%d/%d (role/audited/expensive)\n",
                    d->method, role_label(p->role), p->mutating, p->expensive,
                    role_label(d->role), d->mutating, d->expensive);
        CU_ASSERT_EQUAL(p->role, d->role);
        CU_ASSERT_EQUAL(p->mutating, d->mutating);
        CU_ASSERT_EQUAL(p->expensive, d->expensive);
    }
    for (size_t i = 0; i < n; i++) {
        int found = 0;
        for (size_t j = 0; j < DOCUMENTED_LEN && !found; j++)
            found = strcmp(t[i].method, documented[j].method) == 0;
        if (!found) fprintf(stderr, "\n  perm.c lists undocumented %s\n", t[i].method);
        CU_ASSERT(found);
    }
}

/* The examples docs/security.md states in prose, checked on their own so the failure names
 * the rule that drifted. */
static void test_spot_checks(void)
{
    static const struct {
        const char *method;
        int role;
    } spots[] = {
        {"/agentz.v1.AgentService/GetAgent", VIEWER},
        {"/agentz.v1.AgentService/ListAgents", VIEWER},
        {"/agentz.v1.AgentService/WatchAgents", VIEWER},
        {"/agentz.v1.SystemService/StreamMetrics", VIEWER},
        {"/agentz.v1.TaskService/GetTaskStats", VIEWER},
        {"/agentz.v1.WorkflowService/GetWorkflowAnalytics", VIEWER},
        {"/agentz.v1.SystemService/WhoAmI", VIEWER},
        {"/agentz.v1.AgentService/CreateAgent", EDITOR},
        {"/agentz.v1.AgentService/DeleteAgent", EDITOR},
        {"/agentz.v1.AgentService/ClearAgentMemory", EDITOR},
        {"/agentz.v1.WorkflowService/StartRun", EDITOR},
        {"/agentz.v1.WorkflowService/ResumeRun", EDITOR},
        {"/agentz.v1.WorkflowService/InstantiateTemplate", EDITOR},
        {"/agentz.v1.WorkflowService/SaveAsTemplate", EDITOR},
        {"/agentz.v1.TaskService/RetryTask", EDITOR},
        {"/agentz.v1.SystemService/ListSecrets", EDITOR}, /* secret names are not for viewers */
        {"/agentz.v1.SystemService/CreateSecret", EDITOR},
        {"/agentz.v1.SystemService/CreateApiKey", ADMIN},
        {"/agentz.v1.SystemService/ListApiKeys", ADMIN},
        {"/agentz.v1.SystemService/RevokeApiKey", ADMIN},
        {"/agentz.v1.SystemService/ListAuditLog", ADMIN},
        {"/grpc.health.v1.Health/Check", PUBLIC},
        {"/grpc.health.v1.Health/Watch", PUBLIC},
        {"/grpc.reflection.v1.ServerReflection/ServerReflectionInfo", PUBLIC},
        {"/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", PUBLIC},
    };
    for (size_t i = 0; i < sizeof spots / sizeof *spots; i++) {
        const az_perm *p = az_perm_find(spots[i].method);
        if (!p || p->role != spots[i].role)
            fprintf(stderr, "\n  %s needs %s, perm.c says %s\n", spots[i].method,
                    role_label(spots[i].role), p ? role_label(p->role) : "(missing)");
        CU_ASSERT_PTR_NOT_NULL(p);
        if (p) CU_ASSERT_EQUAL(p->role, spots[i].role);
    }
    /* no RPC needs owner: owner-only decisions (granting owner) belong to the API layer */
    size_t n = 0;
    const az_perm *t = az_perm_table(&n);
    for (size_t i = 0; i < n; i++) CU_ASSERT(t[i].role != OWNER);
    /* audited = mutating, expensive = the stricter limit, as the docs' columns say */
    CU_ASSERT_EQUAL(az_perm_find("/agentz.v1.WorkflowService/StartRun")->expensive, 1);
    CU_ASSERT_EQUAL(az_perm_find("/agentz.v1.TaskService/CreateTask")->expensive, 1);
    CU_ASSERT_EQUAL(az_perm_find("/agentz.v1.SystemService/CreateApiKey")->mutating, 1);
    CU_ASSERT_EQUAL(az_perm_find("/agentz.v1.SystemService/ListAuditLog")->mutating, 0);
}

/* ---------------------------------------------------------------- the matrix, with a database */

#define WORKSPACE "0c0c0c0c-0000-4000-8000-00000000a0a0"

static char dir[64];
static az_embed *embed;
static az_pg *pg;
static az_arena *arena;
static az_auth *auth;

static const int roles[] = {VIEWER, EDITOR, ADMIN, OWNER};
#define NROLES (sizeof roles / sizeof *roles)

/* One key per role, in WORKSPACE. */
static struct {
    const char *id;
    char *secret;
    char bearer[160];
} keys[NROLES];

/* Methods the table does not hold: the resolver lets them through anonymously and the runtime
 * answers UNIMPLEMENTED. Near misses of real names included: matching is exact. */
static const char *const unknown_methods[] = {
    "/agentz.v1.AgentService/Nope",
    "/agentz.v1.NoSuchService/GetAgent",
    "/agentz.v1.AgentService/createagent",
    "/agentz.v1.agentservice/CreateAgent",
    "agentz.v1.AgentService/CreateAgent",
    "/agentz.v1.AgentService/CreateAgent/",
    "/agentz.v1.AgentService/CreateAgent ",
    "/agentz.v2.AgentService/CreateAgent",
    "/grpc.health.v1.Health/List",
    "",
};
#define NUNKNOWN (sizeof unknown_methods / sizeof *unknown_methods)

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    remove(path);
    return 0;
}

static int db_init(void)
{
    char msg[AZ_MSG_MAX];
    az_log_set_level(AZ_LOG_ERROR);
    snprintf(dir, sizeof dir, "/tmp/aztest-authz-XXXXXX");
    if (!mkdtemp(dir) || chmod(dir, 0755) != 0) return -1;
    if (az_embed_start(dir, &embed, msg) != AZ_OK) {
        fprintf(stderr, "cannot start embedded postgresql: %s\n", msg);
        return -1;
    }
    /* as the daemon runs: migrations as the owner, then everything as agentz_app under RLS */
    if (az_pg_new(az_embed_database_url(embed), 4, 30000, &pg, msg) != AZ_OK ||
        az_migrate(pg, az_migrations, az_migrations_count, NULL, msg) != AZ_OK ||
        az_pg_set_role(pg, "agentz_app", msg) != AZ_OK) {
        fprintf(stderr, "cannot prepare the database: %s\n", msg);
        return -1;
    }
    arena = az_arena_new(0);
    if (!arena) return -1;
    for (size_t r = 0; r < NROLES; r++) {
        Agentz__V1__ApiKey *k = NULL;
        char name[32];
        snprintf(name, sizeof name, "matrix-%s", az_auth_role_name(roles[r]));
        if (az_apikey_create_in(pg, WORKSPACE, name, roles[r], 0, arena, &k, &keys[r].secret,
                                msg) != AZ_OK) {
            fprintf(stderr, "cannot create the %s key: %s\n", name, msg);
            return -1;
        }
        keys[r].id = k->id;
        snprintf(keys[r].bearer, sizeof keys[r].bearer, "Bearer %s", keys[r].secret);
    }
    az_auth_config c = {.disabled = 0, .listen = "127.0.0.1:0"};
    auth = az_auth_new(&c, pg, msg);
    if (!auth) {
        fprintf(stderr, "cannot create the authorizer: %s\n", msg);
        return -1;
    }
    return 0;
}

static int db_clean(void)
{
    az_auth_free(auth);
    az_arena_free(arena);
    az_pg_free(pg);
    az_embed_stop(embed);
    if (dir[0]) nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    return 0;
}

static int anonymous(const az_principal *p)
{
    return p->id[0] == 0 && p->workspace_id[0] == 0 && p->role == 0 &&
           strcmp(p->auth_method, AZ_AUTH_METHOD_NONE) == 0;
}

/* Every entry x every role, the key sent as "authorization: Bearer" and as "x-api-key". */
static void test_matrix(void)
{
    size_t n = 0;
    const az_perm *t = az_perm_table(&n);
    char msg[AZ_MSG_MAX], want[AZ_MSG_MAX], id[64];
    for (size_t i = 0; i < n; i++) {
        const char *m = t[i].method;
        const char *short_name = strrchr(m, '/') + 1;
        for (size_t r = 0; r < NROLES; r++) {
            for (int via = 0; via < 2; via++) {
                const char *authz = via == 0 ? keys[r].bearer : NULL;
                const char *xkey = via == 1 ? keys[r].secret : NULL;
                az_principal p;
                memset(&p, 0x5a, sizeof p); /* the resolver must reset it */
                msg[0] = 0;
                az_err got = az_auth_resolve(auth, authz, xkey, m, &p, msg);
                az_err expect = t[i].role == PUBLIC || roles[r] >= t[i].role ? AZ_OK
                                                                             : AZ_ERR_PERMISSION;
                if (got != expect)
                    fprintf(stderr, "\n  %s as %s (%s): got %s, want %s (%s)\n", m,
                            az_auth_role_name(roles[r]), via ? "x-api-key" : "bearer",
                            az_err_name(got), az_err_name(expect), msg);
                CU_ASSERT_EQUAL(got, expect);
                if (t[i].role == PUBLIC) {
                    CU_ASSERT(anonymous(&p)); /* credentials ignored */
                    continue;
                }
                /* authenticated either way; a denied principal stays filled for the audit log */
                snprintf(id, sizeof id, "key:%s", keys[r].id);
                CU_ASSERT_STRING_EQUAL(p.id, id);
                CU_ASSERT_STRING_EQUAL(p.workspace_id, WORKSPACE);
                CU_ASSERT_EQUAL(p.role, roles[r]);
                CU_ASSERT_STRING_EQUAL(p.auth_method, AZ_AUTH_METHOD_API_KEY);
                if (expect == AZ_ERR_PERMISSION) {
                    snprintf(want, sizeof want, "role %s may not call %s (needs %s)",
                             az_auth_role_name(roles[r]), short_name,
                             az_auth_role_name(t[i].role));
                    CU_ASSERT_STRING_EQUAL(msg, want);
                    CU_ASSERT_PTR_NULL(strstr(msg, keys[r].secret)); /* never echoed */
                }
            }
        }
    }
}

/* Per entry, how many of the four roles get through: public 4 (and no credentials needed),
 * viewer 4, editor 3, admin 2, owner 1. */
static void test_matrix_counts(void)
{
    size_t n = 0;
    const az_perm *t = az_perm_table(&n);
    char msg[AZ_MSG_MAX];
    for (size_t i = 0; i < n; i++) {
        int allowed = 0;
        for (size_t r = 0; r < NROLES; r++) {
            az_principal p;
            if (az_auth_resolve(auth, keys[r].bearer, NULL, t[i].method, &p, msg) == AZ_OK)
                allowed++;
        }
        int want = t[i].role == PUBLIC   ? 4
                   : t[i].role == VIEWER ? 4
                   : t[i].role == EDITOR ? 3
                   : t[i].role == ADMIN  ? 2
                   : t[i].role == OWNER  ? 1
                                         : -1;
        if (allowed != want)
            fprintf(stderr, "\n  %s: %d roles allowed, want %d\n", t[i].method, allowed, want);
        CU_ASSERT_EQUAL(allowed, want);
    }
}

/* No credentials: public methods pass anonymously, everything else is UNAUTHENTICATED. Empty
 * metadata values count as none. */
static void test_no_credentials(void)
{
    size_t n = 0;
    const az_perm *t = az_perm_table(&n);
    char msg[AZ_MSG_MAX];
    for (size_t i = 0; i < n; i++) {
        for (int empty = 0; empty < 2; empty++) {
            az_principal p;
            memset(&p, 0x5a, sizeof p);
            msg[0] = 0;
            az_err got = az_auth_resolve(auth, empty ? "" : NULL, empty ? "" : NULL, t[i].method,
                                         &p, msg);
            az_err expect = t[i].role == PUBLIC ? AZ_OK : AZ_ERR_UNAUTHENTICATED;
            if (got != expect)
                fprintf(stderr, "\n  %s without credentials: got %s, want %s\n", t[i].method,
                        az_err_name(got), az_err_name(expect));
            CU_ASSERT_EQUAL(got, expect);
            CU_ASSERT(anonymous(&p));
            if (expect == AZ_ERR_UNAUTHENTICATED) CU_ASSERT_STRING_EQUAL(msg, MISSING_CREDENTIALS);
        }
    }
}

/* Unknown methods: AZ_OK and anonymous whatever is sent, so the runtime can answer
 * UNIMPLEMENTED instead of leaking which names exist through UNAUTHENTICATED. */
static void test_unknown_methods(void)
{
    char msg[AZ_MSG_MAX];
    for (size_t u = 0; u < NUNKNOWN; u++) {
        CU_ASSERT_PTR_NULL(az_perm_find(unknown_methods[u]));
        az_principal p;
        memset(&p, 0x5a, sizeof p);
        az_err got = az_auth_resolve(auth, NULL, NULL, unknown_methods[u], &p, msg);
        if (got != AZ_OK)
            fprintf(stderr, "\n  unknown \"%s\": got %s (%s)\n", unknown_methods[u],
                    az_err_name(got), msg);
        CU_ASSERT_EQUAL(got, AZ_OK);
        CU_ASSERT(anonymous(&p));
        for (size_t r = 0; r < NROLES; r++) {
            memset(&p, 0x5a, sizeof p);
            CU_ASSERT_EQUAL(az_auth_resolve(auth, keys[r].bearer, NULL, unknown_methods[u], &p,
                                            msg),
                            AZ_OK);
            CU_ASSERT(anonymous(&p));
        }
        memset(&p, 0x5a, sizeof p);
        CU_ASSERT_EQUAL(az_auth_resolve(auth, "Bearer agz_not-a-real-key", "junk",
                                        unknown_methods[u], &p, msg),
                        AZ_OK);
        CU_ASSERT(anonymous(&p));
    }
}

/* A revoked key is UNAUTHENTICATED on every non-public method, for every role it had (here:
 * an owner key, the one that would otherwise pass everywhere), and public methods still pass. */
static void test_revoked_key(void)
{
    char msg[AZ_MSG_MAX];
    Agentz__V1__ApiKey *k = NULL;
    char *secret = NULL;
    CU_ASSERT_EQUAL_FATAL(
        az_apikey_create_in(pg, WORKSPACE, "matrix-revoked", OWNER, 0, arena, &k, &secret, msg),
        AZ_OK);
    char bearer[160];
    snprintf(bearer, sizeof bearer, "Bearer %s", secret);
    az_principal p;
    /* it works before the revocation */
    CU_ASSERT_EQUAL(
        az_auth_resolve(auth, bearer, NULL, "/agentz.v1.SystemService/ListAuditLog", &p, msg),
        AZ_OK);
    CU_ASSERT_EQUAL(p.role, OWNER);

    az_ctx ctx = {.workspace_id = WORKSPACE,
                  .principal = "test",
                  .request_id = "matrix",
                  .deadline_ms = -1};
    CU_ASSERT_EQUAL_FATAL(az_apikey_revoke(pg, &ctx, k->id, msg), AZ_OK);

    size_t n = 0;
    const az_perm *t = az_perm_table(&n);
    for (size_t i = 0; i < n; i++) {
        for (int via = 0; via < 2; via++) {
            memset(&p, 0x5a, sizeof p);
            msg[0] = 0;
            az_err got = az_auth_resolve(auth, via ? NULL : bearer, via ? secret : NULL,
                                         t[i].method, &p, msg);
            az_err expect = t[i].role == PUBLIC ? AZ_OK : AZ_ERR_UNAUTHENTICATED;
            if (got != expect)
                fprintf(stderr, "\n  %s with a revoked key: got %s, want %s (%s)\n", t[i].method,
                        az_err_name(got), az_err_name(expect), msg);
            CU_ASSERT_EQUAL(got, expect);
            CU_ASSERT(anonymous(&p)); /* no principal for a revoked key */
            if (expect == AZ_ERR_UNAUTHENTICATED) CU_ASSERT_PTR_NULL(strstr(msg, secret));
        }
    }
    /* the other keys are untouched */
    CU_ASSERT_EQUAL(
        az_auth_resolve(auth, keys[NROLES - 1].bearer, NULL, "/agentz.v1.SystemService/ListAuditLog",
                        &p, msg),
        AZ_OK);
}

static int quiet(void)
{
    az_log_set_level(AZ_LOG_ERROR);
    return 0;
}

int main(void)
{
    if (CU_initialize_registry() != CUE_SUCCESS) return 1;
    CU_pSuite table = CU_add_suite("permission table against docs/security.md", quiet, NULL);
    CU_pSuite db = CU_add_suite("role matrix over every RPC", db_init, db_clean);
    if (!table || !db) return 1;
    CU_add_test(table, "role order and names", test_role_order);
    CU_add_test(table, "table shape", test_table_shape);
    CU_add_test(table, "table equals the documented one", test_table_matches_docs);
    CU_add_test(table, "documented spot checks", test_spot_checks);
    CU_add_test(db, "every method x every role (bearer and x-api-key)", test_matrix);
    CU_add_test(db, "allowed roles per method", test_matrix_counts);
    CU_add_test(db, "no credentials", test_no_credentials);
    CU_add_test(db, "unknown methods stay anonymous", test_unknown_methods);
    CU_add_test(db, "revoked key", test_revoked_key);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    unsigned failed = CU_get_number_of_failures() + CU_get_number_of_suites_failed();
    CU_cleanup_registry();
    return failed ? 1 : 0;
}
