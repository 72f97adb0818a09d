/* `agentz import crewai` and `agentz export crewai`: moving a CrewAI project's agents.yaml and
 * tasks.yaml in and out of AGENTZ. The mapping itself lives in crewai.c; this file reads and
 * writes the files and makes the calls. */
#include <libgen.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "agentz/v1/agent.pb-c.h"
#include "agentz/v1/workflow.pb-c.h"
#include "cli.h"
#include "core/arena.h"
#include "crewai.h"
#include "core/file.h"

#define AGENTS "/agentz.v1.AgentService/"
#define WORKFLOWS "/agentz.v1.WorkflowService/"

static void print_notes(az_cli *cli, const az_crewai_notes *n)
{
    for (size_t i = 0; i < n->n; i++) fprintf(cli->err, "warning: %s\n", n->lines[i]);
}

/* ---- import crewai ---- */

enum { I_NAME, I_PROCESS, I_MANAGER_LLM, I_DRY_RUN, I__COUNT };

static const az_flag import_flags[I__COUNT] = {
    [I_NAME] = {"name", 0, AZ_FLAG_VALUE, "NAME", "workflow name (default: the directory's name)", NULL},
    [I_PROCESS] = {"process", 0, AZ_FLAG_VALUE, "PROCESS",
                   "sequential, parallel or hierarchical (default: sequential, or parallel when "
                   "tasks need it)", NULL},
    [I_MANAGER_LLM] = {"manager-llm", 0, AZ_FLAG_VALUE, "MODEL",
                       "model of the manager agent, e.g. openai/gpt-4o (hierarchical)", NULL},
    [I_DRY_RUN] = {"dry-run", 0, AZ_FLAG_BOOL, NULL,
                   "print the agents and workflow as JSON (-o yaml: YAML) without calling the "
                   "server", NULL},
};

/* The directory's own name, also for "." and "dir/". */
static char *dir_name(const char *dir)
{
    char real[PATH_MAX];
    char *copy = strdup(realpath(dir, real) ? real : dir);
    if (!copy) return NULL;
    char *base = strdup(basename(copy));
    free(copy);
    return base;
}

/* Prints what import created: a line per object, or an InstantiateTemplateResponse. */
static int print_created(az_cli *cli, Agentz__V1__Agent **agents, size_t n,
                         Agentz__V1__Workflow *wf)
{
    if (cli->output != AZ_OUTPUT_TABLE) {
        Agentz__V1__InstantiateTemplateResponse r = AGENTZ__V1__INSTANTIATE_TEMPLATE_RESPONSE__INIT;
        r.workflow = wf;
        r.agents = agents;
        r.n_agents = n;
        return az_cli_print(cli, &r.base);
    }
    for (size_t i = 0; i < n; i++)
        fprintf(cli->out, "agent     %-36s  %s\n", agents[i]->id, agents[i]->name);
    if (wf) fprintf(cli->out, "workflow  %-36s  %s (version %d)\n", wf->id, wf->name, wf->version);
    return AZ_CLI_EXIT_OK;
}

/* Creates the template's agents, then its workflow with agent names replaced by the new ids. */
static int create_all(az_cli *cli, Agentz__V1__Template *t, const char *key, az_arena *ar)
{
    Agentz__V1__Agent **made = calloc(t->n_agents + 1, sizeof *made);
    if (!made) return az_cli_out_of_memory(cli);
    size_t nmade = 0;
    int code = AZ_CLI_EXIT_OK;
    Agentz__V1__Workflow *wf = NULL;
    char rid[AZ_CREWAI_REQUEST_ID_SIZE];
    /* Agent names are unique per workspace, and every crew has its "researcher": the agents
     * are named <workflow>/<key>, while steps keep naming them by key until ids replace them. */
    const char **keys = az_arena_alloc(ar, (t->n_agents + 1) * sizeof *keys);
    if (!keys) {
        free(made);
        return az_cli_out_of_memory(cli);
    }
    for (size_t i = 0; i < t->n_agents && !code; i++) {
        Agentz__V1__CreateAgentRequest req = AGENTZ__V1__CREATE_AGENT_REQUEST__INIT;
        keys[i] = t->agents[i]->name;
        char *full = az_arena_printf(ar, "%.60s/%.60s", t->workflow->name, keys[i]);
        if (!full) {
            code = az_cli_out_of_memory(cli);
            break;
        }
        t->agents[i]->name = full;
        req.agent = t->agents[i];
        az_crewai_request_id(key, "agent", keys[i], rid);
        req.request_id = rid;
        ProtobufCMessage *m;
        if ((code = az_cli_call(cli, AGENTS "CreateAgent", &req.base,
                                &agentz__v1__agent__descriptor, &m)))
            break;
        made[nmade++] = (Agentz__V1__Agent *)m;
    }
    if (!code) {
        Agentz__V1__Workflow *w = t->workflow;
        /* Steps and the manager name their agent; the server wants its id. */
        for (size_t s = 0; s <= w->n_steps; s++) {
            char **ref = s < w->n_steps ? &w->steps[s]->agent_id : &w->manager_agent_id;
            for (size_t i = 0; i < nmade && **ref; i++)
                if (strcmp(keys[i], *ref) == 0) {
                    *ref = az_arena_strdup(ar, made[i]->id);
                    break;
                }
            if (!*ref) {
                code = az_cli_out_of_memory(cli);
                break;
            }
        }
        Agentz__V1__CreateWorkflowRequest req = AGENTZ__V1__CREATE_WORKFLOW_REQUEST__INIT;
        req.workflow = w;
        az_crewai_request_id(key, "workflow", w->name, rid);
        req.request_id = rid;
        ProtobufCMessage *m;
        if (!code && !(code = az_cli_call(cli, WORKFLOWS "CreateWorkflow", &req.base,
                                          &agentz__v1__workflow__descriptor, &m)))
            wf = (Agentz__V1__Workflow *)m;
    }
    if (!code) {
        code = print_created(cli, made, nmade, wf);
    } else if (nmade) {
        /* The request ids are derived from the files: running the same import again returns
         * these agents instead of creating more. */
        fprintf(cli->err, "note: created before the failure (re-running the same import reuses "
                          "them):\n");
        for (size_t i = 0; i < nmade; i++)
            fprintf(cli->err, "  agent %s  %s\n", made[i]->id, made[i]->name);
    }
    for (size_t i = 0; i < nmade; i++) protobuf_c_message_free_unpacked(&made[i]->base, NULL);
    free(made);
    if (wf) protobuf_c_message_free_unpacked(&wf->base, NULL);
    return code;
}

static int run_import(az_cli *cli, const az_flag_value *v, const char *const *args, size_t nargs)
{
    char msg[AZ_MSG_MAX];
    const char *dir = args[0];
    if (v[I_MANAGER_LLM].count && v[I_PROCESS].count &&
        strcmp(v[I_PROCESS].value, "hierarchical") != 0)
        return az_cli_usage_error(cli, "--manager-llm needs --process hierarchical");
    az_crewai_opts opts = {
        .process = v[I_PROCESS].count ? v[I_PROCESS].value
                   : v[I_MANAGER_LLM].count ? "hierarchical"
                                            : NULL,
        .manager_llm = v[I_MANAGER_LLM].value,
    };
    char *agents_path = NULL, *tasks_path = NULL, *agents = NULL, *tasks = NULL, *name = NULL;
    size_t alen = 0, tlen = 0;
    az_crewai_notes notes = {0};
    az_arena *ar = az_arena_new(0);
    int code = AZ_CLI_EXIT_OK;
    if (!ar) return az_cli_out_of_memory(cli);
    az_err err = az_crewai_find(dir, &agents_path, &tasks_path, msg);
    if (err) {
        code = err == AZ_ERR_NOMEM ? az_cli_out_of_memory(cli) : az_cli_usage_error(cli, "%s", msg);
        goto done;
    }
    if ((err = az_file_read(agents_path, &agents, &alen, msg)) ||
        (err = az_file_read(tasks_path, &tasks, &tlen, msg))) {
        code = err == AZ_ERR_NOMEM ? az_cli_out_of_memory(cli) : az_cli_usage_error(cli, "%s", msg);
        goto done;
    }
    if (!(name = dir_name(dir))) {
        code = az_cli_out_of_memory(cli);
        goto done;
    }
    opts.source = name;
    opts.name = v[I_NAME].count ? v[I_NAME].value : name;
    Agentz__V1__Template *t = NULL;
    err = az_crewai_import(agents, alen, agents_path, tasks, tlen, tasks_path, &opts, ar, &t,
                           &notes, msg);
    print_notes(cli, &notes);
    if (err) {
        code = err == AZ_ERR_NOMEM ? az_cli_out_of_memory(cli)
                                   : az_cli_fail(cli, AZ_CLI_EXIT_USAGE, err, msg);
        goto done;
    }
    if (az_args_bool(&v[I_DRY_RUN])) {
        if (cli->output == AZ_OUTPUT_TABLE) cli->output = AZ_OUTPUT_JSON;
        code = az_cli_print(cli, &t->base);
        goto done;
    }
    char key[33];
    az_crewai_key(agents, alen, tasks, tlen, &opts, cli->request_id, key);
    code = create_all(cli, t, key, ar);
done:
    az_crewai_notes_free(&notes);
    free(agents_path);
    free(tasks_path);
    free(agents);
    free(tasks);
    free(name);
    az_arena_free(ar);
    return code;
}

static const az_cli_verb import_verbs[] = {
    {"crewai", "DIR", "Create agents and a workflow from a CrewAI project",
     "Reads DIR/config/agents.yaml and DIR/config/tasks.yaml (also DIR/src/<package>/config/ as\n"
     "laid out by 'crewai create crew', or the two files in DIR itself), creates one agent per\n"
     "agents.yaml key (named by the key) and one workflow with a step per task, in file order.\n"
     "Every {placeholder} becomes a required workflow input. Settings AGENTZ cannot honour are\n"
     "reported as warnings on stderr. Request ids are derived from the files, so running the\n"
     "same import twice does not create duplicates. --dry-run prints the agents and workflow\n"
     "(an agentz.v1.Template; steps name their agent) without calling the server.",
     import_flags, I__COUNT, 1, 1, run_import},
};

const az_cli_noun az_cli_import = {
    .name = "import",
    .alias = NULL,
    .summary = "Import agents and workflows from other frameworks (CrewAI)",
    .verbs = import_verbs,
    .nverbs = sizeof import_verbs / sizeof import_verbs[0],
};

/* ---- export crewai ---- */

enum { E_VERSION, E_FORCE, E__COUNT };

static const az_flag export_flags[E__COUNT] = {
    [E_VERSION] = {"version", 0, AZ_FLAG_VALUE, "N",
                   "workflow version to export (default: the latest)", NULL},
    [E_FORCE] = {"force", 0, AZ_FLAG_BOOL, NULL, "overwrite existing agents.yaml and tasks.yaml", NULL},
};

static int run_export(az_cli *cli, const az_flag_value *v, const char *const *args, size_t nargs)
{
    char msg[AZ_MSG_MAX];
    Agentz__V1__GetWorkflowRequest req = AGENTZ__V1__GET_WORKFLOW_REQUEST__INIT;
    req.id = (char *)args[0];
    if (v[E_VERSION].count &&
        az_args_int32("--version", v[E_VERSION].value, 1, INT32_MAX, &req.version, msg))
        return az_cli_usage_error(cli, "%s", msg);
    ProtobufCMessage *m;
    int code = az_cli_call(cli, WORKFLOWS "GetWorkflow", &req.base,
                           &agentz__v1__workflow__descriptor, &m);
    if (code) return code;
    Agentz__V1__Workflow *wf = (Agentz__V1__Workflow *)m;
    Agentz__V1__Agent **agents = calloc(wf->n_steps + 1, sizeof *agents);
    size_t n = 0;
    char *ay = NULL, *ty = NULL;
    az_crewai_notes notes = {0};
    if (!agents) {
        code = az_cli_out_of_memory(cli);
        goto done;
    }
    for (size_t s = 0; s < wf->n_steps && !code; s++) {
        const char *id = wf->steps[s]->agent_id;
        int have = !*id;
        for (size_t i = 0; i < n && !have; i++) have = strcmp(agents[i]->id, id) == 0;
        if (have) continue;
        Agentz__V1__GetAgentRequest ar = AGENTZ__V1__GET_AGENT_REQUEST__INIT;
        ar.id = (char *)id;
        ProtobufCMessage *am;
        if (!(code = az_cli_call(cli, AGENTS "GetAgent", &ar.base, &agentz__v1__agent__descriptor,
                                 &am)))
            agents[n++] = (Agentz__V1__Agent *)am;
    }
    if (code) goto done;
    az_err err = az_crewai_export(wf, agents, n, &ay, &ty, &notes, msg);
    print_notes(cli, &notes);
    if (!err) err = az_crewai_write(args[1], ay, ty, az_args_bool(&v[E_FORCE]), msg);
    if (err) {
        code = err == AZ_ERR_EXISTS ? az_cli_usage_error(cli, "%s", msg)
                                    : az_cli_fail(cli, AZ_CLI_EXIT_FAILED, err, msg);
        goto done;
    }
    if (cli->output == AZ_OUTPUT_TABLE) {
        fprintf(cli->out, "wrote %s/config/agents.yaml (%zu agents)\n", args[1], n);
        fprintf(cli->out, "wrote %s/config/tasks.yaml (%zu tasks)\n", args[1], wf->n_steps);
    } else {
        Agentz__V1__Template t = AGENTZ__V1__TEMPLATE__INIT;
        t.name = wf->name;
        t.description = wf->description;
        t.agents = agents;
        t.n_agents = n;
        t.workflow = wf;
        code = az_cli_print(cli, &t.base);
    }
done:
    az_crewai_notes_free(&notes);
    free(ay);
    free(ty);
    for (size_t i = 0; i < n; i++) protobuf_c_message_free_unpacked(&agents[i]->base, NULL);
    free(agents);
    protobuf_c_message_free_unpacked(&wf->base, NULL);
    return code;
}

static const az_cli_verb export_verbs[] = {
    {"crewai", "WORKFLOW_ID DIR", "Write a workflow and its agents as a CrewAI project",
     "Writes DIR/config/agents.yaml (one key per agent, named after it) and\n"
     "DIR/config/tasks.yaml (one key per step, in order) so that 'crewai' or\n"
     "'agentz import crewai DIR' reads them back. Settings the YAML cannot express (retry\n"
     "policies, timeouts, output schemas, LLM temperature...) are reported as warnings.\n"
     "Existing files are kept unless --force.",
     export_flags, E__COUNT, 2, 2, run_export},
};

const az_cli_noun az_cli_export = {
    .name = "export",
    .alias = NULL,
    .summary = "Export workflows and their agents to other frameworks (CrewAI)",
    .verbs = export_verbs,
    .nverbs = sizeof export_verbs / sizeof export_verbs[0],
};
