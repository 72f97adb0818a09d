/* `agentz runs ...`: starting, inspecting, cancelling and resuming workflow runs
 * (WorkflowService run methods). Inputs come from --input flags and/or a YAML/JSON file. */
#include <jansson.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "agentz/v1/workflow.pb-c.h"
#include "cli.h"
#include "core/arena.h"
#include "table.h"
#include "yamljson.h"

#define SERVICE "/agentz.v1.WorkflowService/"
#define RUN_PREFIX "RUN_STATUS_"
#define TASK_PREFIX "TASK_STATUS_"

/* ---- start ---- */

enum { S_VERSION, S_INPUT, S_INPUTS_FILE, S__COUNT };

static const az_flag start_flags[S__COUNT] = {
    [S_VERSION] = {"version", 0, AZ_FLAG_VALUE, "N", "the version to run (default: the latest)", NULL},
    [S_INPUT] = {"input", 0, AZ_FLAG_LIST, "NAME=VALUE", "a workflow input (repeatable; wins over --inputs-file)", NULL},
    [S_INPUTS_FILE] = {"inputs-file", 0, AZ_FLAG_VALUE, "FILE", "inputs as a YAML or JSON mapping of name to value", NULL},
};

typedef struct inputs {
    Agentz__V1__StartRunRequest__InputsEntry **v;
    size_t n, cap;
} inputs;

/* Sets name=value, replacing an earlier value of the same name. */
static az_err put_input(inputs *in, az_arena *ar, const char *name, const char *value, char *msg)
{
    for (size_t i = 0; i < in->n; i++)
        if (strcmp(in->v[i]->key, name) == 0) {
            if (!(in->v[i]->value = az_arena_strdup(ar, value))) break;
            return AZ_OK;
        }
    if (in->n == in->cap) {
        size_t cap = in->cap ? in->cap * 2 : 16;
        Agentz__V1__StartRunRequest__InputsEntry **v = az_arena_alloc(ar, cap * sizeof *v);
        if (!v) return az_fail(msg, AZ_ERR_NOMEM, "out of memory");
        if (in->n) memcpy(v, in->v, in->n * sizeof *v);
        in->v = v;
        in->cap = cap;
    }
    Agentz__V1__StartRunRequest__InputsEntry *e = az_arena_alloc(ar, sizeof *e);
    if (!e) return az_fail(msg, AZ_ERR_NOMEM, "out of memory");
    agentz__v1__start_run_request__inputs_entry__init(e);
    if (!(e->key = az_arena_strdup(ar, name)) || !(e->value = az_arena_strdup(ar, value)))
        return az_fail(msg, AZ_ERR_NOMEM, "out of memory");
    in->v[in->n++] = e;
    return AZ_OK;
}

/* Inputs are strings: numbers and booleans in the file are taken as written (quote values
 * such as 007 to keep them verbatim); lists and mappings are refused. */
static az_err read_inputs(const char *path, inputs *in, az_arena *ar, char *msg)
{
    json_t *doc = NULL;
    az_err err = az_yaml_read_file(path, NULL, &doc, msg);
    if (err) return err;
    if (!json_is_object(doc)) {
        json_decref(doc);
        return az_fail(msg, AZ_ERR_INVALID, "%s: expected a mapping of input names to values", path);
    }
    const char *key;
    json_t *v;
    json_object_foreach(doc, key, v) {
        char buf[64];
        const char *text = buf;
        if (json_is_string(v)) text = json_string_value(v);
        else if (json_is_integer(v)) snprintf(buf, sizeof buf, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
        else if (json_is_real(v)) snprintf(buf, sizeof buf, "%.17g", json_real_value(v));
        else if (json_is_boolean(v)) text = json_is_true(v) ? "true" : "false";
        else if (json_is_null(v)) text = "";
        else err = az_fail(msg, AZ_ERR_INVALID, "%s: input %s: expected a text value", path, key);
        if (err || (err = put_input(in, ar, key, text, msg))) break;
    }
    json_decref(doc);
    return err;
}

static int print_run(az_cli *cli, ProtobufCMessage *m);

static int run_start(az_cli *cli, const az_flag_value *v, const char *const *args, size_t nargs)
{
    char msg[AZ_MSG_MAX];
    Agentz__V1__StartRunRequest req = AGENTZ__V1__START_RUN_REQUEST__INIT;
    req.workflow_id = (char *)args[0];
    if (v[S_VERSION].count &&
        az_args_int32("--version", v[S_VERSION].value, 1, INT32_MAX, &req.version, msg))
        return az_cli_usage_error(cli, "%s", msg);
    az_arena *ar = az_arena_new(0);
    if (!ar) return az_cli_out_of_memory(cli);
    inputs in = {0};
    int code = AZ_CLI_EXIT_OK;
    az_err err;
    if (v[S_INPUTS_FILE].count && (err = read_inputs(v[S_INPUTS_FILE].value, &in, ar, msg))) {
        code = err == AZ_ERR_NOMEM ? az_cli_out_of_memory(cli) : az_cli_usage_error(cli, "--inputs-file: %s", msg);
        goto done;
    }
    for (int i = 0; i < v[S_INPUT].count; i++) {
        size_t klen;
        const char *value;
        char *name;
        if (az_args_kv("--input", v[S_INPUT].list[i], &klen, &value, msg)) {
            code = az_cli_usage_error(cli, "%s", msg);
            goto done;
        }
        if (!(name = az_arena_strndup(ar, v[S_INPUT].list[i], klen)) ||
            put_input(&in, ar, name, value, msg)) {
            code = az_cli_out_of_memory(cli);
            goto done;
        }
    }
    req.inputs = in.v;
    req.n_inputs = in.n;
    if (cli->request_id) req.request_id = (char *)cli->request_id;
    ProtobufCMessage *resp;
    if (!(code = az_cli_call(cli, SERVICE "StartRun", &req.base,
                             &agentz__v1__workflow_run__descriptor, &resp)))
        code = print_run(cli, resp);
done:
    az_arena_free(ar);
    return code;
}

/* ---- get ---- */

static const char *duration_text(const Google__Protobuf__Timestamp *start,
                                 const Google__Protobuf__Timestamp *end, char *buf, size_t size)
{
    if (!start || !start->seconds) {
        if (size) buf[0] = '\0';
        return buf;
    }
    int64_t to = end && end->seconds ? end->seconds : (int64_t)time(NULL);
    int64_t d = to > start->seconds ? to - start->seconds : 0;
    if (d >= 3600) snprintf(buf, size, "%lldh%02lldm", (long long)(d / 3600), (long long)(d % 3600 / 60));
    else if (d >= 60) snprintf(buf, size, "%lldm%02llds", (long long)(d / 60), (long long)(d % 60));
    else snprintf(buf, size, "%llds", (long long)d);
    return buf;
}

/* Table view of a run: a header of key: value lines, then one row per step. */
static int print_run_table(az_cli *cli, const Agentz__V1__WorkflowRun *r)
{
    char status[32], created[32], dur[32], msg[AZ_MSG_MAX];
    fprintf(cli->out, "id:        %s\n", r->id);
    fprintf(cli->out, "workflow:  %s (version %d)\n", r->workflow_id, r->workflow_version);
    fprintf(cli->out, "status:    %s\n", az_output_enum(&agentz__v1__run_status__descriptor, RUN_PREFIX,
                                                          (int)r->status, status, sizeof status));
    fprintf(cli->out, "created:   %s\n", az_output_time(r->create_time ? r->create_time->seconds : 0,
                                                          created, sizeof created));
    fprintf(cli->out, "duration:  %s\n", duration_text(r->start_time, r->end_time, dur, sizeof dur));
    for (size_t i = 0; i < r->n_inputs; i++)
        fprintf(cli->out, "input:     %s=%s\n", r->inputs[i]->key, r->inputs[i]->value);
    if (r->usage)
        fprintf(cli->out, "tokens:    %lld ($%.4f)\n", (long long)r->usage->total_tokens,
                r->usage->cost_usd);
    if (r->error) fprintf(cli->out, "error:     %s: %s\n", r->error->type, r->error->message);
    fputc('\n', cli->out);
    static const char *const headers[] = {"STEP", "STATUS", "TASK", "ATTEMPT", "DURATION"};
    az_table *tb = az_table_new(5, headers);
    if (!tb) return az_cli_out_of_memory(cli);
    az_table_keep(tb, 2);
    for (size_t i = 0; i < r->n_steps; i++) {
        const Agentz__V1__StepRun *s = r->steps[i];
        char st[32], attempt[16], d[32];
        snprintf(attempt, sizeof attempt, "%d", s->attempt);
        const char *cells[5] = {
            s->step_id,
            az_output_enum(&agentz__v1__task_status__descriptor, TASK_PREFIX, (int)s->status, st, sizeof st),
            s->task_id,
            attempt,
            duration_text(s->start_time, s->end_time, d, sizeof d),
        };
        if (az_table_add(tb, cells, msg)) {
            az_table_free(tb);
            return az_cli_out_of_memory(cli);
        }
    }
    az_table_print(tb, cli->out, az_table_width(cli->out));
    az_table_free(tb);
    if (r->output && *r->output->raw) fprintf(cli->out, "\noutput:\n%s\n", r->output->raw);
    return AZ_CLI_EXIT_OK;
}

/* Prints a run (table: header and steps) and frees it. */
static int print_run(az_cli *cli, ProtobufCMessage *m)
{
    if (cli->output != AZ_OUTPUT_TABLE) return az_cli_print_free(cli, m);
    int code = print_run_table(cli, (const Agentz__V1__WorkflowRun *)m);
    protobuf_c_message_free_unpacked(m, NULL);
    return code;
}

static int run_get(az_cli *cli, const az_flag_value *v, const char *const *args, size_t nargs)
{
    Agentz__V1__GetRunRequest req = AGENTZ__V1__GET_RUN_REQUEST__INIT;
    req.id = (char *)args[0];
    ProtobufCMessage *resp;
    int code = az_cli_call(cli, SERVICE "GetRun", &req.base, &agentz__v1__workflow_run__descriptor, &resp);
    return code ? code : print_run(cli, resp);
}

/* ---- list ---- */

enum { L_WORKFLOW, L_STATUS, L_PAGE_SIZE, L_PAGE_TOKEN, L_ALL, L__COUNT };

static const az_flag list_flags[L__COUNT] = {
    [L_WORKFLOW] = {"workflow", 0, AZ_FLAG_VALUE, "ID", "only runs of this workflow", NULL},
    [L_STATUS] = {"status", 0, AZ_FLAG_VALUE, "STATUS", "pending, running, succeeded, failed or cancelled", NULL},
    [L_PAGE_SIZE] = {"page-size", 0, AZ_FLAG_VALUE, "N", "runs per page (server default 50, max 1000)", NULL},
    [L_PAGE_TOKEN] = {"page-token", 0, AZ_FLAG_VALUE, "TOKEN", "continue from a previous page", NULL},
    [L_ALL] = {"all", 0, AZ_FLAG_BOOL, NULL, "follow next_page_token and print every page", NULL},
};

static int print_runs_table(az_cli *cli, ProtobufCMessage **pages, size_t npages)
{
    /* ListRuns carries no steps (GetRun does), so the list shows timing instead. */
    static const char *const headers[] = {"ID", "WORKFLOW", "VERSION", "STATUS", "DURATION", "AGE"};
    char msg[AZ_MSG_MAX];
    az_table *tb = az_table_new(6, headers);
    if (!tb) return az_cli_out_of_memory(cli);
    az_table_keep(tb, 0);
    az_table_keep(tb, 1);
    int64_t now = (int64_t)time(NULL);
    for (size_t p = 0; p < npages; p++) {
        const Agentz__V1__ListRunsResponse *r = (const Agentz__V1__ListRunsResponse *)pages[p];
        for (size_t i = 0; i < r->n_runs; i++) {
            const Agentz__V1__WorkflowRun *w = r->runs[i];
            char version[16], status[32], dur[32], age[32];
            snprintf(version, sizeof version, "%d", w->workflow_version);
            const char *cells[6] = {
                w->id, w->workflow_id, version,
                az_output_enum(&agentz__v1__run_status__descriptor, RUN_PREFIX, (int)w->status,
                               status, sizeof status),
                duration_text(w->start_time, w->end_time, dur, sizeof dur),
                w->create_time ? az_output_age(w->create_time->seconds, now, age, sizeof age) : "",
            };
            if (az_table_add(tb, cells, msg)) {
                az_table_free(tb);
                return az_cli_out_of_memory(cli);
            }
        }
    }
    if (az_table_rows(tb))
        az_table_print(tb, cli->out, az_table_width(cli->out));
    else
        fprintf(cli->err, "no runs found\n");
    az_table_free(tb);
    const Agentz__V1__ListRunsResponse *last = (const Agentz__V1__ListRunsResponse *)pages[npages - 1];
    if (*last->next_page_token)
        fprintf(cli->err, "more runs: --page-token %s (or --all)\n", last->next_page_token);
    return AZ_CLI_EXIT_OK;
}

static int run_list(az_cli *cli, const az_flag_value *v, const char *const *args, size_t nargs)
{
    char msg[AZ_MSG_MAX];
    Agentz__V1__ListRunsRequest req = AGENTZ__V1__LIST_RUNS_REQUEST__INIT;
    int status = 0;
    if (v[L_STATUS].count && az_args_enum("--status", &agentz__v1__run_status__descriptor,
                                          RUN_PREFIX, v[L_STATUS].value, &status, msg))
        return az_cli_usage_error(cli, "%s", msg);
    req.status = (Agentz__V1__RunStatus)status;
    if (v[L_PAGE_SIZE].count &&
        az_args_int32("--page-size", v[L_PAGE_SIZE].value, 0, INT32_MAX, &req.page_size, msg))
        return az_cli_usage_error(cli, "%s", msg);
    if (v[L_PAGE_TOKEN].count) req.page_token = (char *)v[L_PAGE_TOKEN].value;
    if (v[L_WORKFLOW].count) req.workflow_id = (char *)v[L_WORKFLOW].value;
    ProtobufCMessage **pages;
    size_t npages;
    int code = az_cli_fetch_pages(cli, SERVICE "ListRuns", &req.base, &req.page_token,
                           &agentz__v1__list_runs_response__descriptor, az_args_bool(&v[L_ALL]),
                           &pages, &npages);
    if (code) return code;
    code = cli->output == AZ_OUTPUT_TABLE ? print_runs_table(cli, pages, npages)
                                          : az_cli_print_pages(cli, pages, npages, "runs");
    az_cli_free_pages(pages, npages);
    return code;
}

/* ---- cancel, resume ---- */

enum { X_REASON, X__COUNT };

static const az_flag cancel_flags[X__COUNT] = {
    [X_REASON] = {"reason", 0, AZ_FLAG_VALUE, "TEXT", "why; recorded in the run's error and the audit log", NULL},
};

static int run_cancel(az_cli *cli, const az_flag_value *v, const char *const *args, size_t nargs)
{
    Agentz__V1__CancelRunRequest req = AGENTZ__V1__CANCEL_RUN_REQUEST__INIT;
    req.id = (char *)args[0];
    if (v[X_REASON].count) req.reason = (char *)v[X_REASON].value;
    ProtobufCMessage *resp;
    int code = az_cli_call(cli, SERVICE "CancelRun", &req.base, &agentz__v1__workflow_run__descriptor, &resp);
    return code ? code : print_run(cli, resp);
}

static int run_resume(az_cli *cli, const az_flag_value *v, const char *const *args, size_t nargs)
{
    Agentz__V1__ResumeRunRequest req = AGENTZ__V1__RESUME_RUN_REQUEST__INIT;
    req.id = (char *)args[0];
    ProtobufCMessage *resp;
    int code = az_cli_call(cli, SERVICE "ResumeRun", &req.base, &agentz__v1__workflow_run__descriptor, &resp);
    return code ? code : print_run(cli, resp);
}

/* ---- the noun ---- */

static const az_cli_verb verbs[] = {
    {"start", "WORKFLOW_ID", "Start a run of a workflow",
     "Inputs fill the workflow's {placeholders}: --input NAME=VALUE (repeatable) and/or\n"
     "--inputs-file FILE (a YAML or JSON mapping); --input wins for a name given twice. The\n"
     "global --request-id makes the call idempotent.",
     start_flags, S__COUNT, 1, 1, run_start},
    {"get", "ID", "Show a run and its steps", NULL, NULL, 0, 1, 1, run_get},
    {"list", "", "List runs, newest first, one page or --all",
     "Table columns: ID WORKFLOW VERSION STATUS DURATION AGE.", list_flags,
     L__COUNT, 0, 0, run_list},
    {"cancel", "ID", "Cancel a run and its unfinished tasks", NULL, cancel_flags, X__COUNT, 1, 1,
     run_cancel},
    {"resume", "ID", "Restart the failed, cancelled and unstarted steps of a run",
     "Steps that succeeded keep their outputs.", NULL, 0, 1, 1, run_resume},
};

const az_cli_noun az_cli_runs = {
    .name = "runs",
    .alias = "run",
    .summary = "Start, inspect, cancel and resume workflow runs",
    .verbs = verbs,
    .nverbs = sizeof verbs / sizeof verbs[0],
};
