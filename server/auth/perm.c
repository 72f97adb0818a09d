/* The permission table: every RPC of the API with the least role that may call it, whether it
 * changes state (audited) and whether it counts against the stricter rate limit. The table is
 * the single place the permission model lives; tests/unit/test_perm.c checks it against the
 * descriptor set so a new RPC cannot ship without an entry. */
#include "perm.h"

#include <string.h>

#include "agentz/v1/system.pb-c.h"

#define VIEWER AGENTZ__V1__ROLE__ROLE_VIEWER
#define EDITOR AGENTZ__V1__ROLE__ROLE_EDITOR
#define ADMIN AGENTZ__V1__ROLE__ROLE_ADMIN
#define PUBLIC AZ_PERM_PUBLIC

/* Reads (Get/List/Watch/Stats/Analytics/WhoAmI) need VIEWER; anything that changes state needs
 * EDITOR; API keys and the audit log need ADMIN. Secrets follow system.proto ("ROLE_EDITOR:
 * ... manage secrets"), listing included, so read-only principals never see secret names.
 * Granting a role above one's own (CreateApiKey with ROLE_OWNER) is checked by the API layer,
 * which knows the requested role. */
static const az_perm table[] = {
    /* method                                                     role  mutating expensive */
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
    /* One call whatever its size: the limiter counts calls (docs/api.md, "CreateTasks"). */
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

    /* Load balancers and tools probe these without credentials. */
    {"/grpc.health.v1.Health/Check", PUBLIC, 0, 0},
    {"/grpc.health.v1.Health/Watch", PUBLIC, 0, 0},
    {"/grpc.reflection.v1.ServerReflection/ServerReflectionInfo", PUBLIC, 0, 0},
    {"/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", PUBLIC, 0, 0},
};

#define TABLE_LEN (sizeof table / sizeof *table)

const az_perm *az_perm_find(const char *method)
{
    if (!method) return NULL;
    for (size_t i = 0; i < TABLE_LEN; i++) {
        if (strcmp(table[i].method, method) == 0) return &table[i];
    }
    return NULL;
}

const az_perm *az_perm_table(size_t *n)
{
    if (n) *n = TABLE_LEN;
    return table;
}
