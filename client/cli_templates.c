/* `agentz templates ...`: listing workflow templates, instantiating one (its agents and
 * workflow) and saving a workflow as a template. */
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "agentz/v1/workflow.pb-c.h"
#include "cli.h"
#include "table.h"

#define SERVICE "/agentz.v1.WorkflowService/"

/* ---- list ---- */

enum { L_PAGE_SIZE, L_PAGE_TOKEN, L_ALL, L__COUNT };

static const az_flag list_flags[L__COUNT] = {
    [L_PAGE_SIZE] = {"page-size", 0, AZ_FLAG_VALUE, "N", "templates per page (server default 50, max 1000)", NULL},
    [L_PAGE_TOKEN] = {"page-token", 0, AZ_FLAG_VALUE, "TOKEN", "continue from a previous page", NULL},
    [L_ALL] = {"all", 0, AZ_FLAG_BOOL, NULL, "follow next_page_token and print every page", NULL},
};

static int print_template_table(az_cli *cli, ProtobufCMessage **pages, size_t npages)
{
    static const char *const headers[] = {"ID", "NAME", "BUILTIN", "AGENTS", "STEPS", "DESCRIPTION"};
    char msg[AZ_MSG_MAX];
    az_table *tb = az_table_new(6, headers);
    if (!tb) return az_cli_out_of_memory(cli);
    az_table_keep(tb, 0);
    for (size_t p = 0; p < npages; p++) {
        const Agentz__V1__ListTemplatesResponse *r = (const Agentz__V1__ListTemplatesResponse *)pages[p];
        for (size_t i = 0; i < r->n_templates; i++) {
            const Agentz__V1__Template *t = r->templates[i];
            char agents[16], steps[16];
            snprintf(agents, sizeof agents, "%zu", t->n_agents);
            snprintf(steps, sizeof steps, "%zu", t->workflow ? t->workflow->n_steps : 0);
            const char *cells[6] = {t->id, t->name, t->builtin ? "yes" : "no", agents, steps,
                                    t->description};
            if (az_table_add(tb, cells, msg)) {
                az_table_free(tb);
                return az_cli_out_of_memory(cli);
            }
        }
    }
    if (az_table_rows(tb))
        az_table_print(tb, cli->out, az_table_width(cli->out));
    else
        fprintf(cli->err, "no templates found\n");
    az_table_free(tb);
    const Agentz__V1__ListTemplatesResponse *last =
        (const Agentz__V1__ListTemplatesResponse *)pages[npages - 1];
    if (*last->next_page_token)
        fprintf(cli->err, "more templates: --page-token %s (or --all)\n", last->next_page_token);
    return AZ_CLI_EXIT_OK;
}

static int run_list(az_cli *cli, const az_flag_value *v, const char *const *args, size_t nargs)
{
    char msg[AZ_MSG_MAX];
    Agentz__V1__ListTemplatesRequest req = AGENTZ__V1__LIST_TEMPLATES_REQUEST__INIT;
    if (v[L_PAGE_SIZE].count &&
        az_args_int32("--page-size", v[L_PAGE_SIZE].value, 0, INT32_MAX, &req.page_size, msg))
        return az_cli_usage_error(cli, "%s", msg);
    if (v[L_PAGE_TOKEN].count) req.page_token = (char *)v[L_PAGE_TOKEN].value;
    ProtobufCMessage **pages;
    size_t npages;
    int code = az_cli_fetch_pages(cli, SERVICE "ListTemplates", &req.base, &req.page_token,
                           &agentz__v1__list_templates_response__descriptor,
                           az_args_bool(&v[L_ALL]), &pages, &npages);
    if (code) return code;
    code = cli->output == AZ_OUTPUT_TABLE ? print_template_table(cli, pages, npages)
                                          : az_cli_print_pages(cli, pages, npages, "templates");
    az_cli_free_pages(pages, npages);
    return code;
}

/* ---- instantiate ---- */

enum { I_NAME, I__COUNT };

static const az_flag instantiate_flags[I__COUNT] = {
    [I_NAME] = {"name", 0, AZ_FLAG_VALUE, "NAME", "name of the new workflow; agent names get it as a prefix", NULL},
};

static int run_instantiate(az_cli *cli, const az_flag_value *v, const char *const *args, size_t nargs)
{
    Agentz__V1__InstantiateTemplateRequest req = AGENTZ__V1__INSTANTIATE_TEMPLATE_REQUEST__INIT;
    req.template_id = (char *)args[0];
    if (v[I_NAME].count) req.name = (char *)v[I_NAME].value;
    if (cli->request_id) req.request_id = (char *)cli->request_id;
    ProtobufCMessage *resp;
    int code = az_cli_call(cli, SERVICE "InstantiateTemplate", &req.base,
                           &agentz__v1__instantiate_template_response__descriptor, &resp);
    if (code) return code;
    if (cli->output != AZ_OUTPUT_TABLE) return az_cli_print_free(cli, resp);
    const Agentz__V1__InstantiateTemplateResponse *r = (const Agentz__V1__InstantiateTemplateResponse *)resp;
    for (size_t i = 0; i < r->n_agents; i++)
        fprintf(cli->out, "agent     %-36s  %s\n", r->agents[i]->id, r->agents[i]->name);
    if (r->workflow)
        fprintf(cli->out, "workflow  %-36s  %s (version %d)\n", r->workflow->id, r->workflow->name,
                r->workflow->version);
    protobuf_c_message_free_unpacked(resp, NULL);
    return AZ_CLI_EXIT_OK;
}

/* ---- save ---- */

enum { S_NAME, S_DESCRIPTION, S__COUNT };

static const az_flag save_flags[S__COUNT] = {
    [S_NAME] = {"name", 0, AZ_FLAG_VALUE, "NAME", "template name (required)", NULL},
    [S_DESCRIPTION] = {"description", 0, AZ_FLAG_VALUE, "TEXT", "what the template does", NULL},
};

static int run_save(az_cli *cli, const az_flag_value *v, const char *const *args, size_t nargs)
{
    if (!v[S_NAME].count || !*v[S_NAME].value) return az_cli_usage_error(cli, "--name is required");
    Agentz__V1__SaveAsTemplateRequest req = AGENTZ__V1__SAVE_AS_TEMPLATE_REQUEST__INIT;
    req.workflow_id = (char *)args[0];
    req.name = (char *)v[S_NAME].value;
    if (v[S_DESCRIPTION].count) req.description = (char *)v[S_DESCRIPTION].value;
    ProtobufCMessage *resp;
    int code = az_cli_call(cli, SERVICE "SaveAsTemplate", &req.base,
                           &agentz__v1__template__descriptor, &resp);
    return code ? code : az_cli_print_free(cli, resp);
}

/* ---- the noun ---- */

static const az_cli_verb verbs[] = {
    {"list", "", "List built-in and workspace templates", NULL, list_flags, L__COUNT, 0, 0, run_list},
    {"instantiate", "TEMPLATE_ID", "Create a template's agents and workflow",
     "The global --request-id makes the call idempotent.", instantiate_flags, I__COUNT, 1, 1,
     run_instantiate},
    {"save", "WORKFLOW_ID", "Save a workflow's latest version and its agents as a template",
     NULL, save_flags, S__COUNT, 1, 1, run_save},
};

const az_cli_noun az_cli_templates = {
    .name = "templates",
    .alias = "template",
    .summary = "List, instantiate and save workflow templates",
    .verbs = verbs,
    .nverbs = sizeof verbs / sizeof verbs[0],
};
