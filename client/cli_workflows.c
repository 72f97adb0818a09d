/* `agentz workflows ...`: the WorkflowService commands for workflow definitions. Workflows are
 * written as YAML or JSON files (the proto3 JSON of agentz.v1.Workflow); apply creates or
 * versions one by name, like `kubectl apply`. */
#include <jansson.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "agentz/v1/workflow.pb-c.h"
#include "cli.h"
#include "core/arena.h"
#include "core/pbjson.h"
#include "table.h"
#include "yamljson.h"

#define SERVICE "/agentz.v1.WorkflowService/"
#define PROCESS_PREFIX "PROCESS_"

/* ---- reading workflow files ---- */

/* Reads FILE as a Workflow (YAML or JSON) into ar; prints the error and returns an exit code. */
static int read_workflow(az_cli *cli, const char *path, az_arena *ar, Agentz__V1__Workflow **out)
{
    char msg[AZ_MSG_MAX];
    ProtobufCMessage *m = NULL;
    az_err err = az_yaml_read_message(path, &agentz__v1__workflow__descriptor,
                                      az_arena_allocator(ar), &m, msg);
    *out = (Agentz__V1__Workflow *)m;
    if (!err) return AZ_CLI_EXIT_OK;
    if (err == AZ_ERR_NOMEM) return az_cli_out_of_memory(cli);
    if (err == AZ_ERR_IO) return az_cli_usage_error(cli, "-f: %s", msg);
    return az_cli_fail(cli, AZ_CLI_EXIT_USAGE, err, msg);
}

static int need_file(az_cli *cli, const az_flag_value *f)
{
    return f->count ? AZ_CLI_EXIT_OK : az_cli_usage_error(cli, "-f FILE is required");
}

/* ---- create ---- */

enum { F_FILE, F__COUNT };

static const az_flag file_flags[F__COUNT] = {
    [F_FILE] = {"file", 'f', AZ_FLAG_VALUE, "FILE", "the workflow as YAML or JSON ('-' = stdin)", NULL},
};

static int run_create(az_cli *cli, const az_flag_value *v, const char *const *args, size_t nargs)
{
    int code = need_file(cli, &v[F_FILE]);
    if (code) return code;
    az_arena *ar = az_arena_new(0);
    if (!ar) return az_cli_out_of_memory(cli);
    Agentz__V1__Workflow *wf;
    if (!(code = read_workflow(cli, v[F_FILE].value, ar, &wf))) {
        Agentz__V1__CreateWorkflowRequest req = AGENTZ__V1__CREATE_WORKFLOW_REQUEST__INIT;
        req.workflow = wf;
        if (cli->request_id) req.request_id = (char *)cli->request_id;
        ProtobufCMessage *resp;
        if (!(code = az_cli_call(cli, SERVICE "CreateWorkflow", &req.base,
                                 &agentz__v1__workflow__descriptor, &resp)))
            code = az_cli_print_free(cli, resp);
    }
    az_arena_free(ar);
    return code;
}

/* ---- apply ---- */

/* Output-only fields: never part of an update mask. */
static const char *const output_only[] = {"id", "version", "create_time", "update_time", "etag",
                                          "workspace_id"};

/* The proto field of a top-level key given by its proto or lowerCamelCase name. */
static const ProtobufCFieldDescriptor *field_of(const char *key)
{
    const ProtobufCMessageDescriptor *d = &agentz__v1__workflow__descriptor;
    for (unsigned i = 0; i < d->n_fields; i++) {
        const char *n = d->fields[i].name, *k = key;
        while (*n && *k) {
            if (*n == '_' && n[1] && *k == n[1] - 'a' + 'A') n += 2, k++;
            else if (*n == *k) n++, k++;
            else break;
        }
        if (!*n && !*k) return &d->fields[i];
    }
    return NULL;
}

/* The update mask of apply: the writable top-level fields the file sets (name excluded: it is
 * how the workflow was found). */
static int mask_from_file(az_cli *cli, const char *path, az_arena *ar, Google__Protobuf__FieldMask *mask)
{
    char msg[AZ_MSG_MAX];
    json_t *doc = NULL;
    az_err err = az_yaml_read_file(path, &agentz__v1__workflow__descriptor, &doc, msg);
    if (err) return err == AZ_ERR_NOMEM ? az_cli_out_of_memory(cli) : az_cli_usage_error(cli, "-f: %s", msg);
    mask->paths = az_arena_alloc(ar, (json_object_size(doc) + 1) * sizeof *mask->paths);
    if (!mask->paths) {
        json_decref(doc);
        return az_cli_out_of_memory(cli);
    }
    const char *key;
    json_t *val;
    json_object_foreach(doc, key, val) {
        const ProtobufCFieldDescriptor *fd = field_of(key);
        int skip = !fd || strcmp(fd->name, "name") == 0;
        for (size_t i = 0; !skip && i < sizeof output_only / sizeof *output_only; i++)
            skip = strcmp(fd->name, output_only[i]) == 0;
        if (!skip) mask->paths[mask->n_paths++] = (char *)fd->name;
    }
    json_decref(doc);
    return AZ_OK;
}

/* Finds the workflow named name by paging through ListWorkflows; *id is "" when none. */
static int find_by_name(az_cli *cli, const char *name, az_arena *ar, char **id)
{
    Agentz__V1__ListWorkflowsRequest req = AGENTZ__V1__LIST_WORKFLOWS_REQUEST__INIT;
    req.page_size = 1000;
    ProtobufCMessage **pages;
    size_t npages;
    int code = az_cli_fetch_pages(cli, SERVICE "ListWorkflows", &req.base, &req.page_token,
                           &agentz__v1__list_workflows_response__descriptor, 1, &pages, &npages);
    if (code) return code;
    *id = "";
    for (size_t p = 0; p < npages; p++) {
        const Agentz__V1__ListWorkflowsResponse *r = (const Agentz__V1__ListWorkflowsResponse *)pages[p];
        for (size_t i = 0; i < r->n_workflows; i++)
            if (strcmp(r->workflows[i]->name, name) == 0 && !**id)
                *id = az_arena_strdup(ar, r->workflows[i]->id);
    }
    az_cli_free_pages(pages, npages);
    return *id ? AZ_CLI_EXIT_OK : az_cli_out_of_memory(cli);
}

static int print_applied(az_cli *cli, ProtobufCMessage *m, const char *what)
{
    if (cli->output != AZ_OUTPUT_TABLE) return az_cli_print_free(cli, m);
    const Agentz__V1__Workflow *w = (const Agentz__V1__Workflow *)m;
    fprintf(cli->out, "%s workflow %s (%s): version %d\n", what, w->name, w->id, w->version);
    protobuf_c_message_free_unpacked(m, NULL);
    return AZ_CLI_EXIT_OK;
}

static int run_apply(az_cli *cli, const az_flag_value *v, const char *const *args, size_t nargs)
{
    int code = need_file(cli, &v[F_FILE]);
    if (code) return code;
    if (strcmp(v[F_FILE].value, "-") == 0)
        return az_cli_usage_error(cli, "-f: apply reads the file twice; give a file, not '-'");
    az_arena *ar = az_arena_new(0);
    if (!ar) return az_cli_out_of_memory(cli);
    Agentz__V1__Workflow *wf;
    char *id = NULL;
    Google__Protobuf__FieldMask mask = GOOGLE__PROTOBUF__FIELD_MASK__INIT;
    ProtobufCMessage *resp;
    if ((code = read_workflow(cli, v[F_FILE].value, ar, &wf))) goto done;
    if (!*wf->name) {
        code = az_cli_fail(cli, AZ_CLI_EXIT_USAGE, AZ_ERR_INVALID,
                           "workflow.name: apply finds the workflow by name; the file has none");
        goto done;
    }
    if ((code = find_by_name(cli, wf->name, ar, &id))) goto done;
    if (!*id) {
        Agentz__V1__CreateWorkflowRequest req = AGENTZ__V1__CREATE_WORKFLOW_REQUEST__INIT;
        req.workflow = wf;
        if (cli->request_id) req.request_id = (char *)cli->request_id;
        if (!(code = az_cli_call(cli, SERVICE "CreateWorkflow", &req.base,
                                 &agentz__v1__workflow__descriptor, &resp)))
            code = print_applied(cli, resp, "created");
        goto done;
    }
    if ((code = mask_from_file(cli, v[F_FILE].value, ar, &mask))) goto done;
    /* An empty mask would mean "every writable field": never send one by accident. */
    if (!mask.n_paths) {
        code = az_cli_usage_error(cli, "nothing to update: the file sets no field besides name");
        goto done;
    }
    wf->id = id;
    Agentz__V1__UpdateWorkflowRequest req = AGENTZ__V1__UPDATE_WORKFLOW_REQUEST__INIT;
    req.workflow = wf;
    req.update_mask = &mask;
    if (!(code = az_cli_call(cli, SERVICE "UpdateWorkflow", &req.base,
                             &agentz__v1__workflow__descriptor, &resp)))
        code = print_applied(cli, resp, "updated");
done:
    az_arena_free(ar);
    return code;
}

/* ---- get ---- */

enum { G_VERSION, G__COUNT };

static const az_flag get_flags[G__COUNT] = {
    [G_VERSION] = {"version", 0, AZ_FLAG_VALUE, "N", "the version to show (default: the latest)", NULL},
};

static int run_get(az_cli *cli, const az_flag_value *v, const char *const *args, size_t nargs)
{
    char msg[AZ_MSG_MAX];
    Agentz__V1__GetWorkflowRequest req = AGENTZ__V1__GET_WORKFLOW_REQUEST__INIT;
    req.id = (char *)args[0];
    if (v[G_VERSION].count &&
        az_args_int32("--version", v[G_VERSION].value, 1, INT32_MAX, &req.version, msg))
        return az_cli_usage_error(cli, "%s", msg);
    ProtobufCMessage *resp;
    int code = az_cli_call(cli, SERVICE "GetWorkflow", &req.base, &agentz__v1__workflow__descriptor,
                           &resp);
    return code ? code : az_cli_print_free(cli, resp);
}

/* ---- list, versions ---- */

enum { L_PAGE_SIZE, L_PAGE_TOKEN, L_SELECTOR, L_ALL, L__COUNT };

static const az_flag list_flags[L__COUNT] = {
    [L_PAGE_SIZE] = {"page-size", 0, AZ_FLAG_VALUE, "N", "workflows per page (server default 50, max 1000)", NULL},
    [L_PAGE_TOKEN] = {"page-token", 0, AZ_FLAG_VALUE, "TOKEN", "continue from a previous page", NULL},
    [L_SELECTOR] = {"selector", 'l', AZ_FLAG_VALUE, "K=V,...", "only workflows having all these labels", NULL},
    [L_ALL] = {"all", 0, AZ_FLAG_BOOL, NULL, "follow next_page_token and print every page", NULL},
};

/* One row per workflow (list) or version (versions); both responses carry `workflows`. */
static int print_workflow_table(az_cli *cli, ProtobufCMessage **pages, size_t npages, int versions)
{
    static const char *const list_headers[] = {"ID", "NAME", "VERSION", "PROCESS", "STEPS", "UPDATED"};
    static const char *const version_headers[] = {"VERSION", "PROCESS", "STEPS", "ETAG", "CREATED", ""};
    char msg[AZ_MSG_MAX];
    size_t ncols = versions ? 5 : 6;
    az_table *tb = az_table_new(ncols, versions ? version_headers : list_headers);
    if (!tb) return az_cli_out_of_memory(cli);
    az_table_keep(tb, 0);
    int64_t now = (int64_t)time(NULL);
    for (size_t p = 0; p < npages; p++) {
        /* ListWorkflowsResponse and ListWorkflowVersionsResponse have the same layout. */
        const Agentz__V1__ListWorkflowsResponse *r = (const Agentz__V1__ListWorkflowsResponse *)pages[p];
        for (size_t i = 0; i < r->n_workflows; i++) {
            const Agentz__V1__Workflow *w = r->workflows[i];
            char version[16], process[32], steps[16], age[32];
            snprintf(version, sizeof version, "%d", w->version);
            snprintf(steps, sizeof steps, "%zu", w->n_steps);
            az_output_enum(&agentz__v1__process__descriptor, PROCESS_PREFIX, (int)w->process,
                           process, sizeof process);
            const char *when = w->update_time ? az_output_age(w->update_time->seconds, now, age, sizeof age) : "";
            const char *list_cells[6] = {w->id, w->name, version, process, steps, when};
            const char *version_cells[5] = {version, process, steps, w->etag, when};
            if (az_table_add(tb, versions ? version_cells : list_cells, msg)) {
                az_table_free(tb);
                return az_cli_out_of_memory(cli);
            }
        }
    }
    if (az_table_rows(tb))
        az_table_print(tb, cli->out, az_table_width(cli->out));
    else
        fprintf(cli->err, "no workflows found\n");
    az_table_free(tb);
    const Agentz__V1__ListWorkflowsResponse *last =
        (const Agentz__V1__ListWorkflowsResponse *)pages[npages - 1];
    if (*last->next_page_token)
        fprintf(cli->err, "more workflows: --page-token %s (or --all)\n", last->next_page_token);
    return AZ_CLI_EXIT_OK;
}

static int run_list(az_cli *cli, const az_flag_value *v, const char *const *args, size_t nargs)
{
    char msg[AZ_MSG_MAX];
    Agentz__V1__ListWorkflowsRequest req = AGENTZ__V1__LIST_WORKFLOWS_REQUEST__INIT;
    if (v[L_PAGE_SIZE].count &&
        az_args_int32("--page-size", v[L_PAGE_SIZE].value, 0, INT32_MAX, &req.page_size, msg))
        return az_cli_usage_error(cli, "%s", msg);
    if (v[L_PAGE_TOKEN].count) req.page_token = (char *)v[L_PAGE_TOKEN].value;
    if (v[L_SELECTOR].count && *v[L_SELECTOR].value) {
        if (az_args_selector("--selector", v[L_SELECTOR].value, msg))
            return az_cli_usage_error(cli, "%s", msg);
        req.label_selector = (char *)v[L_SELECTOR].value;
    }
    ProtobufCMessage **pages;
    size_t npages;
    int code = az_cli_fetch_pages(cli, SERVICE "ListWorkflows", &req.base, &req.page_token,
                           &agentz__v1__list_workflows_response__descriptor,
                           az_args_bool(&v[L_ALL]), &pages, &npages);
    if (code) return code;
    code = cli->output == AZ_OUTPUT_TABLE ? print_workflow_table(cli, pages, npages, 0)
                                          : az_cli_print_pages(cli, pages, npages, "workflows");
    az_cli_free_pages(pages, npages);
    return code;
}

static int run_versions(az_cli *cli, const az_flag_value *v, const char *const *args, size_t nargs)
{
    Agentz__V1__ListWorkflowVersionsRequest req = AGENTZ__V1__LIST_WORKFLOW_VERSIONS_REQUEST__INIT;
    req.id = (char *)args[0];
    ProtobufCMessage **pages;
    size_t npages;
    int code = az_cli_fetch_pages(cli, SERVICE "ListWorkflowVersions", &req.base, &req.page_token,
                           &agentz__v1__list_workflow_versions_response__descriptor, 1, &pages,
                           &npages);
    if (code) return code;
    code = cli->output == AZ_OUTPUT_TABLE ? print_workflow_table(cli, pages, npages, 1)
                                          : az_cli_print_pages(cli, pages, npages, "workflows");
    az_cli_free_pages(pages, npages);
    return code;
}

/* ---- delete ---- */

enum { D_ETAG, D__COUNT };

static const az_flag delete_flags[D__COUNT] = {
    [D_ETAG] = {"etag", 0, AZ_FLAG_VALUE, "ETAG", "fail with ABORTED unless the latest version still has this etag", NULL},
};

static int run_delete(az_cli *cli, const az_flag_value *v, const char *const *args, size_t nargs)
{
    Agentz__V1__DeleteWorkflowRequest req = AGENTZ__V1__DELETE_WORKFLOW_REQUEST__INIT;
    req.id = (char *)args[0];
    if (v[D_ETAG].count) req.etag = (char *)v[D_ETAG].value;
    ProtobufCMessage *resp;
    int code = az_cli_call(cli, SERVICE "DeleteWorkflow", &req.base,
                           &google__protobuf__empty__descriptor, &resp);
    if (code) return code;
    if (cli->output == AZ_OUTPUT_TABLE) {
        fprintf(cli->out, "deleted workflow %s\n", args[0]);
        protobuf_c_message_free_unpacked(resp, NULL);
        return AZ_CLI_EXIT_OK;
    }
    return az_cli_print_free(cli, resp);
}

/* ---- analytics ---- */

enum { A_SINCE, A__COUNT };

static const az_flag analytics_flags[A__COUNT] = {
    [A_SINCE] = {"since", 0, AZ_FLAG_VALUE, "DURATION", "window ending now, e.g. 24h or 7d (default 7d)", NULL},
};

static int run_analytics(az_cli *cli, const az_flag_value *v, const char *const *args, size_t nargs)
{
    char msg[AZ_MSG_MAX];
    Agentz__V1__GetWorkflowAnalyticsRequest req = AGENTZ__V1__GET_WORKFLOW_ANALYTICS_REQUEST__INIT;
    req.workflow_id = (char *)args[0];
    Google__Protobuf__Timestamp start = GOOGLE__PROTOBUF__TIMESTAMP__INIT;
    if (v[A_SINCE].count) {
        int64_t secs;
        if (az_args_days_duration("--since", v[A_SINCE].value, &secs, msg))
            return az_cli_usage_error(cli, "%s", msg);
        start.seconds = (int64_t)time(NULL) - secs;
        req.start_time = &start;
    }
    ProtobufCMessage *resp;
    int code = az_cli_call(cli, SERVICE "GetWorkflowAnalytics", &req.base,
                           &agentz__v1__workflow_analytics__descriptor, &resp);
    return code ? code : az_cli_print_free(cli, resp);
}

/* ---- the noun ---- */

static const az_cli_verb verbs[] = {
    {"create", "", "Create a workflow (version 1) from a YAML or JSON file",
     "The file is the proto3 JSON of an agentz.v1.Workflow, or the same document in YAML\n"
     "(snake_case or lowerCamelCase keys; what 'agentz workflows get ID -o yaml' prints).\n"
     "The global --request-id makes the call idempotent.",
     file_flags, F__COUNT, 0, 0, run_create},
    {"apply", "", "Create the workflow named in the file, or add a version to it",
     "Looks the workflow up by its name. When none exists it is created; otherwise a new\n"
     "version is made with update_mask = the top-level fields the file sets (fields the file\n"
     "leaves out keep their values). Prints the resulting version.",
     file_flags, F__COUNT, 0, 0, run_apply},
    {"get", "ID", "Show a workflow (latest version, or --version N)", NULL, get_flags,
     G__COUNT, 1, 1, run_get},
    {"list", "", "List workflows (latest versions), one page or --all",
     "Table columns: ID NAME VERSION PROCESS STEPS UPDATED.", list_flags, L__COUNT, 0, 0, run_list},
    {"versions", "ID", "List every version of a workflow, newest first", NULL, NULL, 0, 1, 1,
     run_versions},
    {"delete", "ID", "Delete a workflow and all its versions", NULL, delete_flags, D__COUNT, 1, 1,
     run_delete},
    {"analytics", "ID", "Run counts, success rate, latencies and per-step figures",
     "The window is --since DURATION back from now (24h, 7d); the server's default is 7 days.",
     analytics_flags, A__COUNT, 1, 1, run_analytics},
};

const az_cli_noun az_cli_workflows = {
    .name = "workflows",
    .alias = "workflow",
    .summary = "Create, version, inspect and delete workflows",
    .verbs = verbs,
    .nverbs = sizeof verbs / sizeof verbs[0],
};
