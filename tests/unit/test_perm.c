/* CUnit suite for server/auth/perm.c: the permission table covers every method of every service
 * in the embedded descriptor set, holds nothing else, and follows the role model (reads for
 * viewers, changes for editors, keys and audit for admins, health and reflection public). */
#include <CUnit/Basic.h>
#include <stdio.h>
#include <string.h>

#include "agentz/v1/system.pb-c.h"
#include "auth/perm.h"
#include "descriptor_set.h"
#include "google/protobuf/descriptor.pb-c.h"

#define VIEWER AGENTZ__V1__ROLE__ROLE_VIEWER
#define EDITOR AGENTZ__V1__ROLE__ROLE_EDITOR
#define ADMIN AGENTZ__V1__ROLE__ROLE_ADMIN
#define OWNER AGENTZ__V1__ROLE__ROLE_OWNER

/* Every "/pkg.Service/Method" of the descriptor set, with whether it is server streaming. */
static char paths[256][160];
static int streaming[256];
static size_t npaths;

static int load_paths(void)
{
    Google__Protobuf__FileDescriptorSet *set = google__protobuf__file_descriptor_set__unpack(
        NULL, az_descriptor_set_len, az_descriptor_set);
    if (!set) return -1;
    npaths = 0;
    for (size_t f = 0; f < set->n_file; f++) {
        Google__Protobuf__FileDescriptorProto *file = set->file[f];
        for (size_t s = 0; s < file->n_service; s++) {
            Google__Protobuf__ServiceDescriptorProto *svc = file->service[s];
            for (size_t m = 0; m < svc->n_method && npaths < 256; m++) {
                snprintf(paths[npaths], sizeof paths[npaths], "/%s%s%s/%s",
                         file->package ? file->package : "", file->package ? "." : "", svc->name,
                         svc->method[m]->name);
                streaming[npaths] =
                    svc->method[m]->has_server_streaming && svc->method[m]->server_streaming;
                npaths++;
            }
        }
    }
    google__protobuf__file_descriptor_set__free_unpacked(set, NULL);
    return 0;
}

static int in_descriptor_set(const char *method)
{
    for (size_t i = 0; i < npaths; i++) {
        if (strcmp(paths[i], method) == 0) return 1;
    }
    return 0;
}

static void test_every_rpc_listed(void)
{
    CU_ASSERT_FATAL(npaths >= 40); /* four agentz services, health, two reflection versions */
    for (size_t i = 0; i < npaths; i++) {
        const az_perm *p = az_perm_find(paths[i]);
        if (!p) fprintf(stderr, "\n  not in the permission table: %s\n", paths[i]);
        CU_ASSERT_PTR_NOT_NULL(p);
    }
}

static void test_no_stale_entries(void)
{
    size_t n = 0;
    const az_perm *t = az_perm_table(&n);
    CU_ASSERT_EQUAL(n, npaths);
    for (size_t i = 0; i < n; i++) {
        if (!in_descriptor_set(t[i].method))
            fprintf(stderr, "\n  stale permission entry: %s\n", t[i].method);
        CU_ASSERT(in_descriptor_set(t[i].method));
        for (size_t j = 0; j < i; j++) CU_ASSERT(strcmp(t[i].method, t[j].method) != 0);
        CU_ASSERT(t[i].role == AZ_PERM_PUBLIC || (t[i].role >= VIEWER && t[i].role <= OWNER));
        CU_ASSERT(t[i].mutating == 0 || t[i].mutating == 1);
        CU_ASSERT(t[i].expensive == 0 || t[i].expensive == 1);
        CU_ASSERT(!t[i].expensive || t[i].mutating); /* expensive calls change state */
    }
}

/* The model, stated once more independently of the table. */
static void test_role_model(void)
{
    size_t n = 0;
    const az_perm *t = az_perm_table(&n);
    for (size_t i = 0; i < n; i++) {
        const char *m = t[i].method;
        if (strncmp(m, "/grpc.", 6) == 0) {
            CU_ASSERT_EQUAL(t[i].role, AZ_PERM_PUBLIC);
            continue;
        }
        CU_ASSERT_NOT_EQUAL(t[i].role, AZ_PERM_PUBLIC); /* nothing of agentz.v1 is public */
        const char *name = strrchr(m, '/') + 1;
        int read = strncmp(name, "Get", 3) == 0 || strncmp(name, "List", 4) == 0 ||
                   strncmp(name, "Watch", 5) == 0 || strncmp(name, "Stream", 6) == 0 ||
                   strcmp(name, "WhoAmI") == 0;
        CU_ASSERT_EQUAL(t[i].mutating, !read);
        int want = read ? VIEWER : EDITOR;
        if (strstr(name, "ApiKey") || strcmp(name, "ListAuditLog") == 0) want = ADMIN;
        else if (strstr(name, "Secret")) want = EDITOR;
        if (t[i].role != want) fprintf(stderr, "\n  %s: role %d, want %d\n", m, t[i].role, want);
        CU_ASSERT_EQUAL(t[i].role, want);
    }
    /* every server-streaming RPC is a read */
    for (size_t i = 0; i < npaths; i++) {
        const az_perm *p = az_perm_find(paths[i]);
        if (p && streaming[i]) CU_ASSERT_EQUAL(p->mutating, 0);
    }
}

static void test_specific_entries(void)
{
    static const struct {
        const char *method;
        int role, mutating, expensive;
    } want[] = {
        {"/agentz.v1.AgentService/CreateAgent", EDITOR, 1, 0},
        {"/agentz.v1.AgentService/GetAgent", VIEWER, 0, 0},
        {"/agentz.v1.AgentService/WatchAgents", VIEWER, 0, 0},
        {"/agentz.v1.TaskService/CreateTask", EDITOR, 1, 1},
        {"/agentz.v1.TaskService/CreateTasks", EDITOR, 1, 1},
        {"/agentz.v1.WorkflowService/StartRun", EDITOR, 1, 1},
        {"/agentz.v1.WorkflowService/InstantiateTemplate", EDITOR, 1, 1},
        {"/agentz.v1.WorkflowService/WatchRun", VIEWER, 0, 0},
        {"/agentz.v1.WorkflowService/GetWorkflowAnalytics", VIEWER, 0, 0},
        {"/agentz.v1.SystemService/StreamMetrics", VIEWER, 0, 0},
        {"/agentz.v1.SystemService/WhoAmI", VIEWER, 0, 0},
        {"/agentz.v1.SystemService/CreateApiKey", ADMIN, 1, 0},
        {"/agentz.v1.SystemService/ListAuditLog", ADMIN, 0, 0},
        {"/agentz.v1.SystemService/CreateSecret", EDITOR, 1, 0},
        {"/grpc.health.v1.Health/Check", AZ_PERM_PUBLIC, 0, 0},
        {"/grpc.health.v1.Health/Watch", AZ_PERM_PUBLIC, 0, 0},
        {"/grpc.reflection.v1.ServerReflection/ServerReflectionInfo", AZ_PERM_PUBLIC, 0, 0},
        {"/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", AZ_PERM_PUBLIC, 0, 0},
    };
    for (size_t i = 0; i < sizeof want / sizeof *want; i++) {
        const az_perm *p = az_perm_find(want[i].method);
        CU_ASSERT_PTR_NOT_NULL_FATAL(p);
        CU_ASSERT_STRING_EQUAL(p->method, want[i].method);
        CU_ASSERT_EQUAL(p->role, want[i].role);
        CU_ASSERT_EQUAL(p->mutating, want[i].mutating);
        CU_ASSERT_EQUAL(p->expensive, want[i].expensive);
    }
}

static void test_unknown_methods(void)
{
    CU_ASSERT_PTR_NULL(az_perm_find(NULL));
    CU_ASSERT_PTR_NULL(az_perm_find(""));
    CU_ASSERT_PTR_NULL(az_perm_find("/agentz.v1.AgentService/NoSuchMethod"));
    CU_ASSERT_PTR_NULL(az_perm_find("/agentz.v1.AgentService/createagent")); /* case matters */
    CU_ASSERT_PTR_NULL(az_perm_find("agentz.v1.AgentService/CreateAgent"));  /* no leading / */
    CU_ASSERT_PTR_NULL(az_perm_find("/agentz.v1.AgentService/CreateAgent/"));
    size_t n = 0;
    CU_ASSERT_PTR_NOT_NULL(az_perm_table(&n));
    CU_ASSERT_PTR_NOT_NULL(az_perm_table(NULL));
}

int main(void)
{
    if (load_paths() != 0) {
        fprintf(stderr, "cannot parse the embedded descriptor set\n");
        return 1;
    }
    if (CU_initialize_registry() != CUE_SUCCESS) return 1;
    CU_pSuite s = CU_add_suite("permission table", NULL, NULL);
    if (!s) return 1;
    CU_add_test(s, "every rpc of the descriptor set is listed", test_every_rpc_listed);
    CU_add_test(s, "no stale or duplicate entries", test_no_stale_entries);
    CU_add_test(s, "role model: reads viewer, changes editor, keys admin", test_role_model);
    CU_add_test(s, "specific entries", test_specific_entries);
    CU_add_test(s, "unknown methods", test_unknown_methods);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    unsigned failed = CU_get_number_of_failures();
    CU_cleanup_registry();
    return failed ? 1 : 0;
}
