/* WorkflowService handlers: workflow validation with step-and-field errors, AIP-134 field masks,
 * AIP-154 etags, AIP-158 pagination limits and StartRun input resolution, on top of the
 * workflow (workflow.c), run (run.c) and template (template.c) services. */
#include "workflow_api.h"

#include <jansson.h>
#include <openssl/evp.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "agent/agent.h"
#include "agent/agent_api.h"
#include "core/log.h"
#include "core/text.h"
#include "google/protobuf/empty.pb-c.h"
#include "core/placeholder.h"
#include "event/watch.h"
#include "queue/queue.h"
#include "task/task_api.h"
#include "template.h"

#define PAGE_DEFAULT 50
#define PAGE_MAX 1000
#define REQUEST_ID_MAX 128
#define LABEL_VALUE_MAX 256
#define TEMPLATE_DESCRIPTION_MAX 4096
#define ANALYTICS_DEFAULT_WINDOW_US (7LL * 86400 * 1000000)
#define N_METHODS 16

struct az_workflow_api {
    az_pg *pg;
    az_redis *redis;
    az_watch *watch; /* NULL: WatchRun answers UNAVAILABLE */
    az_method methods[N_METHODS];
};

/* ---------------------------------------------------------------- validation helpers */

/* "workflow.steps[2] (\"review\")": how every step error starts. */
static void step_label(char *out, size_t cap, const Agentz__V1__Workflow *w, size_t i)
{
    const char *id = w->steps[i]->id;
    int printable = id && *id && strlen(id) <= AZ_WORKFLOW_STEP_ID_MAX;
    for (const char *s = id; printable && *s; s++) printable = *s > ' ' && *s < 127 && *s != '"';
    if (printable) snprintf(out, cap, "workflow.steps[%zu] (\"%s\")", i, id);
    else snprintf(out, cap, "workflow.steps[%zu]", i);
}

static int step_id_ok(const char *id)
{
    size_t n = strlen(id);
    if (n == 0 || n > AZ_WORKFLOW_STEP_ID_MAX) return 0;
    for (const char *s = id; *s; s++) {
        char c = *s;
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-')) return 0;
    }
    return 1;
}

static int step_index(const Agentz__V1__Workflow *w, const char *id)
{
    for (size_t i = 0; i < w->n_steps; i++) {
        if (strcmp(w->steps[i]->id, id) == 0) return (int)i;
    }
    return -1;
}

/* Placeholders of one text must be declared inputs. */
typedef struct ph_check {
    const Agentz__V1__Workflow *w;
    const char *field;
} ph_check;

static az_err declared(void *arg, const char *name, size_t len, char *msg)
{
    const ph_check *pc = arg;
    for (size_t i = 0; i < pc->w->n_inputs; i++) {
        const char *in = pc->w->inputs[i]->name;
        if (strlen(in) == len && memcmp(in, name, len) == 0) return AZ_OK;
    }
    return az_fail(msg, AZ_ERR_INVALID, "%s: placeholder {%.*s} is not declared in inputs", pc->field,
                   (int)len, name);
}

static az_err check_placeholders(const Agentz__V1__Workflow *w, const char *field, const char *text,
                                 char *msg)
{
    ph_check pc = {w, field};
    return az_placeholder_scan(text, declared, &pc, msg);
}

/* An agent a step or the manager uses: it exists, is enabled, and its role, goal and backstory
 * only use declared placeholders (the engine fills them from the run's inputs, as CrewAI does). */
static az_err check_agent(const Agentz__V1__Workflow *w, const char *field, const char *id,
                          az_workflow_agent_lookup lookup, void *arg, char *msg)
{
    const Agentz__V1__Agent *g = NULL;
    char inner[AZ_MSG_MAX];
    az_err err = lookup(arg, id, &g, inner);
    if (err == AZ_ERR_NOT_FOUND)
        return az_fail(msg, AZ_ERR_INVALID, "%s: agent %.64s not found", field, id);
    if (err != AZ_OK) return az_fail(msg, err, "%s", inner);
    if (g->disabled) return az_fail(msg, AZ_ERR_INVALID, "%s: agent %.64s is disabled", field, id);
    static const char *const parts[] = {"role", "goal", "backstory"};
    const char *texts[] = {g->role, g->goal, g->backstory};
    for (size_t k = 0; k < 3; k++) {
        char f[AZ_MSG_MAX / 2];
        snprintf(f, sizeof f, "%s: agent %.64s %s", field, id, parts[k]);
        if ((err = check_placeholders(w, f, texts[k], msg)) != AZ_OK) return err;
    }
    return AZ_OK;
}

/* Retry policy, timeout and output schema get exactly the task bounds: validate them as a task
 * would be, then rename the field. */
static az_err check_task_fields(const Agentz__V1__Step *s, const char *label, char *msg)
{
    Agentz__V1__Task t = AGENTZ__V1__TASK__INIT;
    t.description = "step";
    t.agent_id = "00000000-0000-4000-8000-000000000000";
    t.retry_policy = s->retry_policy;
    t.timeout = s->timeout;
    t.output_schema = s->output_schema;
    char inner[AZ_MSG_MAX];
    az_err err = az_task_api_validate(&t, inner);
    if (err == AZ_OK) return AZ_OK;
    const char *rest = strncmp(inner, "task.", 5) == 0 ? inner + 5 : inner;
    return az_fail(msg, err, "%s.%s", label, rest);
}

/* Depth-first search for a dependency cycle from step i; on finding one, writes the path
 * ("a -> b -> a", following depends_on) into path. color: 0 new, 1 on the stack, 2 done. */
static int find_cycle(const Agentz__V1__Workflow *w, int i, unsigned char *color, int *stack,
                      int depth, char *path, size_t cap)
{
    color[i] = 1;
    stack[depth] = i;
    const Agentz__V1__Step *s = w->steps[i];
    for (size_t d = 0; d < s->n_depends_on; d++) {
        int j = step_index(w, s->depends_on[d]);
        if (j < 0) continue;
        if (color[j] == 1) {
            size_t k = 0;
            int from = 0;
            while (stack[from] != j) from++;
            for (int x = from; x <= depth; x++)
                k += (size_t)snprintf(path + k, k < cap ? cap - k : 0, "%s -> ", w->steps[stack[x]]->id);
            snprintf(path + (k < cap ? k : cap - 1), k < cap ? cap - k : 1, "%s", w->steps[j]->id);
            return 1;
        }
        if (color[j] == 0 && find_cycle(w, j, color, stack, depth + 1, path, cap)) return 1;
    }
    color[i] = 2;
    return 0;
}

/* 1 when step `anc` is reachable from step i through depends_on (i runs after anc). */
static int upstream(const Agentz__V1__Workflow *w, int i, int anc, unsigned char *seen)
{
    const Agentz__V1__Step *s = w->steps[i];
    for (size_t d = 0; d < s->n_depends_on; d++) {
        int j = step_index(w, s->depends_on[d]);
        if (j < 0 || seen[j]) continue;
        seen[j] = 1;
        if (j == anc || upstream(w, j, anc, seen)) return 1;
    }
    return 0;
}

static az_err check_inputs(const Agentz__V1__Workflow *w, char *msg)
{
    if (w->n_inputs > AZ_WORKFLOW_INPUTS_MAX)
        return az_fail(msg, AZ_ERR_INVALID, "workflow.inputs: at most %d inputs", AZ_WORKFLOW_INPUTS_MAX);
    for (size_t i = 0; i < w->n_inputs; i++) {
        const Agentz__V1__WorkflowInput *in = w->inputs[i];
        char f[96];
        if (!*in->name) return az_fail(msg, AZ_ERR_INVALID, "workflow.inputs[%zu].name is required", i);
        if (!az_placeholder_name_ok(in->name))
            return az_fail(msg, AZ_ERR_INVALID,
                           "workflow.inputs[%zu].name: \"%.80s\" must match [a-zA-Z_][a-zA-Z0-9_]{0,63}",
                           i, in->name);
        for (size_t j = 0; j < i; j++) {
            if (strcmp(w->inputs[j]->name, in->name) == 0)
                return az_fail(msg, AZ_ERR_INVALID, "workflow.inputs[%zu].name: \"%s\" is declared twice",
                               i, in->name);
        }
        az_err err;
        snprintf(f, sizeof f, "workflow.inputs[%zu].description", i);
        if ((err = az_text_check(f, in->description, AZ_WORKFLOW_INPUT_DESCRIPTION_MAX,
                                 AZ_TEXT_MULTILINE, msg)) != AZ_OK)
            return err;
        snprintf(f, sizeof f, "workflow.inputs[%zu].default_value", i);
        if ((err = az_text_check(f, in->default_value, AZ_WORKFLOW_INPUT_VALUE_MAX, AZ_TEXT_MULTILINE,
                                 msg)) != AZ_OK)
            return err;
    }
    return AZ_OK;
}

static az_err check_labels_and_hooks(const Agentz__V1__Workflow *w, char *msg)
{
    az_err err;
    if (w->n_labels > AZ_WORKFLOW_LABELS_MAX)
        return az_fail(msg, AZ_ERR_INVALID, "workflow.labels: at most %d labels", AZ_WORKFLOW_LABELS_MAX);
    for (size_t i = 0; i < w->n_labels; i++) {
        const Agentz__V1__Workflow__LabelsEntry *e = w->labels[i];
        if (!az_text_label_key_ok(e->key))
            return az_fail(msg, AZ_ERR_INVALID,
                           "workflow.labels: key \"%.80s\" must be 1..%d characters of a-z, 0-9, "
                           "'_', '-', '.', '/'",
                           e->key, AZ_TEXT_LABEL_KEY_MAX);
        char field[96];
        snprintf(field, sizeof field, "workflow.labels[%s]", e->key);
        if ((err = az_text_check(field, e->value, LABEL_VALUE_MAX, 0, msg)) != AZ_OK) return err;
        for (size_t j = 0; j < i; j++) {
            if (strcmp(w->labels[j]->key, e->key) == 0)
                return az_fail(msg, AZ_ERR_INVALID, "workflow.labels: key \"%s\" appears twice", e->key);
        }
    }
    if (w->n_webhook_urls > AZ_WORKFLOW_WEBHOOKS_MAX)
        return az_fail(msg, AZ_ERR_INVALID, "workflow.webhook_urls: at most %d URLs",
                       AZ_WORKFLOW_WEBHOOKS_MAX);
    for (size_t i = 0; i < w->n_webhook_urls; i++) {
        char field[48];
        snprintf(field, sizeof field, "workflow.webhook_urls[%zu]", i);
        if ((err = az_text_check_url(field, w->webhook_urls[i], AZ_TEXT_REQUIRED, msg)) != AZ_OK) return err;
    }
    return AZ_OK;
}

/* Ids, texts, agents and task fields of each step. */
static az_err check_steps(const Agentz__V1__Workflow *w, int process, az_workflow_agent_lookup lookup,
                          void *arg, char *msg)
{
    if (w->n_steps == 0)
        return az_fail(msg, AZ_ERR_INVALID, "workflow.steps: at least one step is required");
    if (w->n_steps > AZ_WORKFLOW_STEPS_MAX)
        return az_fail(msg, AZ_ERR_INVALID, "workflow.steps: at most %d steps", AZ_WORKFLOW_STEPS_MAX);
    az_err err;
    for (size_t i = 0; i < w->n_steps; i++) {
        const Agentz__V1__Step *s = w->steps[i];
        char label[128], f[192];
        step_label(label, sizeof label, w, i);
        if (!*s->id) return az_fail(msg, AZ_ERR_INVALID, "%s.id is required", label);
        if (!step_id_ok(s->id))
            return az_fail(msg, AZ_ERR_INVALID,
                           "%s.id: \"%.80s\" must be 1..%d characters of a-z, 0-9, '_', '-'", label,
                           s->id, AZ_WORKFLOW_STEP_ID_MAX);
        for (size_t j = 0; j < i; j++) {
            if (strcmp(w->steps[j]->id, s->id) == 0)
                return az_fail(msg, AZ_ERR_INVALID, "%s.id: \"%s\" is also the id of workflow.steps[%zu]",
                               label, s->id, j);
        }
        snprintf(f, sizeof f, "%s.description", label);
        if ((err = az_text_check(f, s->description, AZ_WORKFLOW_STEP_TEXT_MAX,
                                 AZ_TEXT_REQUIRED | AZ_TEXT_MULTILINE, msg)) != AZ_OK ||
            (err = check_placeholders(w, f, s->description, msg)) != AZ_OK)
            return err;
        snprintf(f, sizeof f, "%s.expected_output", label);
        if ((err = az_text_check(f, s->expected_output, AZ_WORKFLOW_STEP_TEXT_MAX, AZ_TEXT_MULTILINE,
                                 msg)) != AZ_OK ||
            (err = check_placeholders(w, f, s->expected_output, msg)) != AZ_OK)
            return err;
        snprintf(f, sizeof f, "%s.agent_id", label);
        if (!*s->agent_id) {
            if (process != AGENTZ__V1__PROCESS__PROCESS_HIERARCHICAL)
                return az_fail(msg, AZ_ERR_INVALID, "%s is required (optional only for PROCESS_HIERARCHICAL)", f);
        } else if ((err = check_agent(w, f, s->agent_id, lookup, arg, msg)) != AZ_OK) {
            return err;
        }
        if ((err = check_task_fields(s, label, msg)) != AZ_OK) return err;
    }
    return AZ_OK;
}

/* depends_on references, cycles (parallel only) and context_from. */
static az_err check_graph(const Agentz__V1__Workflow *w, int process, char *msg)
{
    int par = process == AGENTZ__V1__PROCESS__PROCESS_PARALLEL;
    char label[128];
    for (size_t i = 0; i < w->n_steps; i++) {
        const Agentz__V1__Step *s = w->steps[i];
        step_label(label, sizeof label, w, i);
        if (s->n_depends_on && !par)
            return az_fail(msg, AZ_ERR_INVALID,
                           "%s.depends_on: use process PARALLEL for depends_on (%s steps run in "
                           "the order they are listed)",
                           label, process == AGENTZ__V1__PROCESS__PROCESS_HIERARCHICAL ? "hierarchical" : "sequential");
        if (s->n_depends_on > AZ_WORKFLOW_STEPS_MAX)
            return az_fail(msg, AZ_ERR_INVALID, "%s.depends_on: at most %d steps", label, AZ_WORKFLOW_STEPS_MAX);
        for (size_t d = 0; d < s->n_depends_on; d++) {
            const char *dep = s->depends_on[d];
            if (strcmp(dep, s->id) == 0)
                return az_fail(msg, AZ_ERR_INVALID, "%s.depends_on[%zu]: a step cannot depend on itself",
                               label, d);
            if (step_index(w, dep) < 0)
                return az_fail(msg, AZ_ERR_INVALID, "%s.depends_on[%zu]: unknown step \"%.80s\"", label, d, dep);
            for (size_t k = 0; k < d; k++) {
                if (strcmp(s->depends_on[k], dep) == 0)
                    return az_fail(msg, AZ_ERR_INVALID, "%s.depends_on[%zu]: \"%s\" is listed twice",
                                   label, d, dep);
            }
        }
    }
    size_t n = w->n_steps;
    unsigned char color[AZ_WORKFLOW_STEPS_MAX] = {0};
    int stack[AZ_WORKFLOW_STEPS_MAX];
    for (size_t i = 0; i < n; i++) {
        char path[AZ_MSG_MAX / 2];
        if (color[i] == 0 && find_cycle(w, (int)i, color, stack, 0, path, sizeof path)) {
            /* Name the first step on the path. */
            char head[AZ_WORKFLOW_STEP_ID_MAX + 1];
            snprintf(head, sizeof head, "%.*s", (int)strcspn(path, " "), path);
            step_label(label, sizeof label, w, (size_t)step_index(w, head));
            return az_fail(msg, AZ_ERR_INVALID, "%s.depends_on: dependency cycle %s", label, path);
        }
    }
    for (size_t i = 0; i < n; i++) {
        const Agentz__V1__Step *s = w->steps[i];
        step_label(label, sizeof label, w, i);
        if (s->n_context_from > AZ_WORKFLOW_STEPS_MAX)
            return az_fail(msg, AZ_ERR_INVALID, "%s.context_from: at most %d steps", label, AZ_WORKFLOW_STEPS_MAX);
        for (size_t k = 0; k < s->n_context_from; k++) {
            const char *from = s->context_from[k];
            int j = step_index(w, from);
            if (j < 0)
                return az_fail(msg, AZ_ERR_INVALID, "%s.context_from[%zu]: unknown step \"%.80s\"", label, k, from);
            if (j == (int)i)
                return az_fail(msg, AZ_ERR_INVALID, "%s.context_from[%zu]: a step cannot use its own output",
                               label, k);
            for (size_t x = 0; x < k; x++) {
                if (strcmp(s->context_from[x], from) == 0)
                    return az_fail(msg, AZ_ERR_INVALID, "%s.context_from[%zu]: \"%s\" is listed twice",
                                   label, k, from);
            }
            if (!par && j > (int)i)
                return az_fail(msg, AZ_ERR_INVALID,
                               "%s.context_from[%zu]: step \"%s\" runs later; context_from must name "
                               "earlier steps",
                               label, k, from);
            unsigned char seen[AZ_WORKFLOW_STEPS_MAX] = {0};
            if (par && !upstream(w, (int)i, j, seen))
                return az_fail(msg, AZ_ERR_INVALID,
                               "%s.context_from[%zu]: step \"%s\" is not upstream of this step (it must "
                               "finish first: add it to depends_on, directly or through another step)",
                               label, k, from);
        }
    }
    return AZ_OK;
}

az_err az_workflow_validate(const Agentz__V1__Workflow *w, az_workflow_agent_lookup lookup,
                            void *arg, char *msg)
{
    az_err err;
    if ((err = az_text_check("workflow.name", w->name, AZ_WORKFLOW_NAME_MAX, AZ_TEXT_REQUIRED, msg)) !=
            AZ_OK ||
        (err = az_text_check("workflow.description", w->description, AZ_WORKFLOW_DESCRIPTION_MAX,
                             AZ_TEXT_MULTILINE, msg)) != AZ_OK)
        return err;
    int process = w->process ? (int)w->process : AGENTZ__V1__PROCESS__PROCESS_SEQUENTIAL;
    if (process < AGENTZ__V1__PROCESS__PROCESS_SEQUENTIAL || process > AGENTZ__V1__PROCESS__PROCESS_HIERARCHICAL)
        return az_fail(msg, AZ_ERR_INVALID, "workflow.process: unknown value %d", (int)w->process);
    if ((int)w->failure_policy < 0 ||
        (int)w->failure_policy > AGENTZ__V1__FAILURE_POLICY__FAILURE_POLICY_CONTINUE)
        return az_fail(msg, AZ_ERR_INVALID, "workflow.failure_policy: unknown value %d",
                       (int)w->failure_policy);
    if ((err = check_inputs(w, msg)) != AZ_OK || (err = check_labels_and_hooks(w, msg)) != AZ_OK)
        return err;
    if (process == AGENTZ__V1__PROCESS__PROCESS_HIERARCHICAL) {
        if (!*w->manager_agent_id)
            return az_fail(msg, AZ_ERR_INVALID,
                           "workflow.manager_agent_id is required for PROCESS_HIERARCHICAL");
        if ((err = check_agent(w, "workflow.manager_agent_id", w->manager_agent_id, lookup, arg, msg)) !=
            AZ_OK)
            return err;
    }
    if ((err = check_steps(w, process, lookup, arg, msg)) != AZ_OK) return err;
    return check_graph(w, process, msg);
}

/* Template agents are looked up by name. */
static az_err template_agent(void *arg, const char *name, const Agentz__V1__Agent **out, char *msg)
{
    const Agentz__V1__Template *t = arg;
    for (size_t i = 0; i < t->n_agents; i++) {
        if (strcmp(t->agents[i]->name, name) == 0) {
            *out = t->agents[i];
            return AZ_OK;
        }
    }
    return az_fail(msg, AZ_ERR_NOT_FOUND, "no template agent named %s", name);
}

az_err az_workflow_validate_template(const Agentz__V1__Template *t, char *msg)
{
    if (!t->workflow) return az_fail(msg, AZ_ERR_INVALID, "template.workflow is required");
    az_err err;
    for (size_t i = 0; i < t->n_agents; i++) {
        char inner[AZ_MSG_MAX];
        if (!*t->agents[i]->name)
            return az_fail(msg, AZ_ERR_INVALID, "template.agents[%zu].name is required", i);
        if ((err = az_agent_validate(t->agents[i], 1, inner)) != AZ_OK)
            return az_fail(msg, err, "template.agents[%zu]: %s", i, inner);
        for (size_t j = 0; j < i; j++) {
            if (strcmp(t->agents[j]->name, t->agents[i]->name) == 0)
                return az_fail(msg, AZ_ERR_INVALID, "template.agents[%zu].name: \"%s\" is used twice", i,
                               t->agents[i]->name);
        }
    }
    return az_workflow_validate(t->workflow, template_agent, (void *)t, msg);
}

/* ---------------------------------------------------------------- field masks */

typedef struct mask_field {
    const char *path;
    size_t off, len; /* the bytes copied; repeated fields span count and pointer */
    int is_str;
} mask_field;

#define WF Agentz__V1__Workflow
#define SPAN(T, first, last) (offsetof(T, last) + sizeof(((T *)0)->last) - offsetof(T, first))
#define FIELD(path, m, s) {path, offsetof(WF, m), sizeof(((WF *)0)->m), s}
#define REPEATED(path, n, m) {path, offsetof(WF, n), SPAN(WF, n, m), 0}

static const mask_field workflow_fields[] = {
    FIELD("name", name, 1),
    FIELD("description", description, 1),
    FIELD("process", process, 0),
    FIELD("manager_agent_id", manager_agent_id, 1),
    REPEATED("steps", n_steps, steps),
    REPEATED("inputs", n_inputs, inputs),
    FIELD("failure_policy", failure_policy, 0),
    REPEATED("labels", n_labels, labels),
    REPEATED("webhook_urls", n_webhook_urls, webhook_urls),
};

static const char *const output_only[] = {"id", "version", "create_time", "update_time", "etag",
                                          "workspace_id"};

static int populated(const void *base, const mask_field *f)
{
    const unsigned char *p = (const unsigned char *)base + f->off;
    if (f->is_str) {
        const char *s = *(char *const *)p;
        return s && *s;
    }
    for (size_t i = 0; i < f->len; i++) {
        if (p[i]) return 1;
    }
    return 0;
}

static void copy_field(void *dst, const void *src, const mask_field *f)
{
    memcpy((unsigned char *)dst + f->off, (const unsigned char *)src + f->off, f->len);
}

az_err az_workflow_apply_mask(Agentz__V1__Workflow *dst, const Agentz__V1__Workflow *src,
                              const Google__Protobuf__FieldMask *mask, char *msg)
{
    size_t nf = sizeof workflow_fields / sizeof *workflow_fields;
    if (!mask || mask->n_paths == 0) {
        for (size_t i = 0; i < nf; i++) {
            if (populated(src, &workflow_fields[i])) copy_field(dst, src, &workflow_fields[i]);
        }
        return AZ_OK;
    }
    for (size_t i = 0; i < mask->n_paths; i++) {
        const char *path = mask->paths[i];
        if (strcmp(path, "*") == 0) {
            for (size_t k = 0; k < nf; k++) copy_field(dst, src, &workflow_fields[k]);
            continue;
        }
        const mask_field *f = NULL;
        for (size_t k = 0; k < nf && !f; k++) {
            if (strcmp(workflow_fields[k].path, path) == 0) f = &workflow_fields[k];
        }
        if (f) {
            copy_field(dst, src, f);
            continue;
        }
        for (size_t k = 0; k < sizeof output_only / sizeof *output_only; k++) {
            if (strcmp(path, output_only[k]) == 0)
                return az_fail(msg, AZ_ERR_INVALID, "update_mask: \"%s\" is output only", path);
        }
        return az_fail(msg, AZ_ERR_INVALID, "update_mask: unknown field \"%.100s\"", path);
    }
    return AZ_OK;
}

/* ---------------------------------------------------------------- inputs */

az_err az_workflow_resolve_inputs(const Agentz__V1__Workflow *w,
                                  Agentz__V1__StartRunRequest__InputsEntry *const *given,
                                  size_t n_given, az_arena *a, az_run_input **out, size_t *n,
                                  char *msg)
{
    *out = NULL;
    *n = 0;
    for (size_t i = 0; i < n_given; i++) {
        int known = 0;
        for (size_t k = 0; k < w->n_inputs && !known; k++) known = strcmp(w->inputs[k]->name, given[i]->key) == 0;
        if (!known)
            return az_fail(msg, AZ_ERR_INVALID, "inputs: unknown input \"%.80s\"", given[i]->key);
        char field[96];
        snprintf(field, sizeof field, "inputs[%s]", given[i]->key);
        az_err err = az_text_check(field, given[i]->value, AZ_WORKFLOW_INPUT_VALUE_MAX, AZ_TEXT_MULTILINE, msg);
        if (err != AZ_OK) return err;
    }
    az_run_input *list = az_arena_alloc(a, (w->n_inputs ? w->n_inputs : 1) * sizeof *list);
    if (!list) return az_fail(msg, AZ_ERR_NOMEM, "out of memory");
    for (size_t k = 0; k < w->n_inputs; k++) {
        const Agentz__V1__WorkflowInput *in = w->inputs[k];
        const char *value = NULL;
        /* A map repeated on the wire keeps its last value, as protobuf maps do. */
        for (size_t i = 0; i < n_given; i++) {
            if (strcmp(given[i]->key, in->name) == 0) value = given[i]->value;
        }
        if (!value && in->required)
            return az_fail(msg, AZ_ERR_INVALID, "inputs: missing required input \"%s\"", in->name);
        list[k].name = in->name;
        list[k].value = value ? value : in->default_value;
    }
    *out = list;
    *n = w->n_inputs;
    return AZ_OK;
}

/* ---------------------------------------------------------------- handler helpers */

static int page_size(int32_t requested)
{
    return requested == 0 ? PAGE_DEFAULT : requested > PAGE_MAX ? PAGE_MAX : requested;
}

static char *sha256_hex(az_arena *a, const void *data, size_t n)
{
    char *hex = az_arena_alloc(a, 65);
    unsigned char md[32];
    unsigned int mdlen = 0;
    if (!hex || !EVP_Digest(data, n, md, &mdlen, EVP_sha256(), NULL)) return NULL;
    for (unsigned i = 0; i < 32; i++) snprintf(hex + 2 * i, 3, "%02x", md[i]);
    return hex;
}

/* SHA-256 of a packed message: what makes two requests with one request_id "the same". */
static char *message_hash(az_arena *a, const ProtobufCMessage *m)
{
    size_t n = protobuf_c_message_get_packed_size(m);
    uint8_t *buf = az_arena_alloc(a, n ? n : 1);
    if (!buf) return NULL;
    protobuf_c_message_pack(m, buf);
    return sha256_hex(a, buf, n);
}

static void publish(az_workflow_api *api, const az_ctx *ctx, const az_task_ready *ready)
{
    if (!ready->n || !api->redis) return;
    char msg[AZ_MSG_MAX];
    if (az_queue_publish(api->redis, ctx->workspace_id, ready, msg) != AZ_OK)
        az_warn("%s (the reconciler will publish them)", msg);
}

/* Agent lookups through the agent service, remembered for one validation (a workflow names
 * the same agent in many steps). */
typedef struct agent_cache {
    az_pg *pg;
    const az_ctx *ctx;
    az_arena *arena;
    const char *ids[AZ_WORKFLOW_STEPS_MAX + 1];
    const Agentz__V1__Agent *agents[AZ_WORKFLOW_STEPS_MAX + 1];
    az_err errs[AZ_WORKFLOW_STEPS_MAX + 1];
    size_t n;
} agent_cache;

static az_err cached_agent(void *arg, const char *id, const Agentz__V1__Agent **out, char *msg)
{
    agent_cache *c = arg;
    for (size_t i = 0; i < c->n; i++) {
        if (strcmp(c->ids[i], id) == 0) {
            *out = c->agents[i];
            return c->errs[i] == AZ_OK ? AZ_OK : az_fail(msg, c->errs[i], "agent %s not found", id);
        }
    }
    Agentz__V1__Agent *g = NULL;
    az_err err = az_agent_get(c->pg, c->ctx, id, c->arena, &g, msg);
    if ((err == AZ_OK || err == AZ_ERR_NOT_FOUND) && c->n < sizeof c->ids / sizeof *c->ids) {
        c->ids[c->n] = id;
        c->agents[c->n] = g;
        c->errs[c->n++] = err;
    }
    *out = g;
    return err;
}

static az_err validate_stored(az_workflow_api *api, const az_ctx *ctx, az_arena *a,
                              const Agentz__V1__Workflow *w, char *msg)
{
    agent_cache *cache = az_arena_alloc(a, sizeof *cache);
    if (!cache) return az_fail(msg, AZ_ERR_NOMEM, "out of memory");
    cache->pg = api->pg;
    cache->ctx = ctx;
    cache->arena = a;
    return az_workflow_validate(w, cached_agent, cache, msg);
}

/* Applies the documented defaults so stored versions are explicit, and drops what the process
 * ignores. */
static void normalize(Agentz__V1__Workflow *w)
{
    if (!w->process) w->process = AGENTZ__V1__PROCESS__PROCESS_SEQUENTIAL;
    if (!w->failure_policy) w->failure_policy = AGENTZ__V1__FAILURE_POLICY__FAILURE_POLICY_FAIL_FAST;
    if (w->process != AGENTZ__V1__PROCESS__PROCESS_HIERARCHICAL) w->manager_agent_id = "";
}

static az_err check_id(const char *field, const char *id, char *msg)
{
    if (!id || !*id) return az_fail(msg, AZ_ERR_INVALID, "%s is required", field);
    return AZ_OK;
}

static az_err empty_response(az_call *c, ProtobufCMessage **out, char *msg)
{
    Google__Protobuf__Empty *e = az_arena_alloc(az_call_arena(c), sizeof *e);
    if (!e) return az_fail(msg, AZ_ERR_NOMEM, "out of memory");
    google__protobuf__empty__init(e);
    *out = &e->base;
    return AZ_OK;
}

/* ---------------------------------------------------------------- workflow handlers */

static az_err create_workflow(az_call *c, const ProtobufCMessage *in, ProtobufCMessage **out, char *msg)
{
    az_workflow_api *api = az_call_data(c);
    const Agentz__V1__CreateWorkflowRequest *req = (const void *)in;
    if (!req->workflow) return az_fail(msg, AZ_ERR_INVALID, "workflow is required");
    az_err err = az_text_check("request_id", req->request_id, REQUEST_ID_MAX, 0, msg);
    if (err != AZ_OK) return err;
    az_arena *a = az_call_arena(c);
    az_ctx ctx;
    az_call_ctx(c, &ctx);
    Agentz__V1__Workflow w = *req->workflow;
    normalize(&w);
    if ((err = validate_stored(api, &ctx, a, &w, msg)) != AZ_OK) return err;
    const char *hash = "";
    if (*req->request_id && !(hash = message_hash(a, &req->workflow->base)))
        return az_fail(msg, AZ_ERR_NOMEM, "out of memory");
    Agentz__V1__Workflow *got;
    int replayed;
    err = az_workflow_create(api->pg, &ctx, &w, req->request_id, hash, a, &got, &replayed, msg);
    if (err == AZ_OK) *out = &got->base;
    return err;
}

static az_err get_workflow(az_call *c, const ProtobufCMessage *in, ProtobufCMessage **out, char *msg)
{
    az_workflow_api *api = az_call_data(c);
    const Agentz__V1__GetWorkflowRequest *req = (const void *)in;
    az_err err = check_id("id", req->id, msg);
    if (err != AZ_OK) return err;
    if (req->version < 0) return az_fail(msg, AZ_ERR_INVALID, "version: must not be negative");
    az_ctx ctx;
    az_call_ctx(c, &ctx);
    Agentz__V1__Workflow *w;
    err = az_workflow_get(api->pg, &ctx, req->id, req->version, az_call_arena(c), &w, msg);
    if (err == AZ_OK) *out = &w->base;
    return err;
}

static az_err list_workflows(az_call *c, const ProtobufCMessage *in, ProtobufCMessage **out, char *msg)
{
    az_workflow_api *api = az_call_data(c);
    const Agentz__V1__ListWorkflowsRequest *req = (const void *)in;
    if (req->page_size < 0) return az_fail(msg, AZ_ERR_INVALID, "page_size: must not be negative");
    char *labels;
    az_err err = az_agent_parse_selector(req->label_selector, az_call_arena(c), &labels, msg);
    if (err != AZ_OK) return err;
    az_workflow_query q = {.labels_json = labels, .page_size = page_size(req->page_size),
                           .page_token = req->page_token};
    az_ctx ctx;
    az_call_ctx(c, &ctx);
    Agentz__V1__ListWorkflowsResponse *resp;
    err = az_workflow_list(api->pg, &ctx, &q, az_call_arena(c), &resp, msg);
    if (err == AZ_OK) *out = &resp->base;
    return err;
}

static az_err update_workflow(az_call *c, const ProtobufCMessage *in, ProtobufCMessage **out, char *msg)
{
    az_workflow_api *api = az_call_data(c);
    const Agentz__V1__UpdateWorkflowRequest *req = (const void *)in;
    if (!req->workflow) return az_fail(msg, AZ_ERR_INVALID, "workflow is required");
    az_err err = check_id("workflow.id", req->workflow->id, msg);
    if (err != AZ_OK) return err;
    int64_t want = -1;
    if (*req->workflow->etag && (want = az_workflow_etag_revision(req->workflow->etag)) < 0)
        return az_fail(msg, AZ_ERR_INVALID,
                       "workflow.etag: \"%.40s\" is not an etag this server issued", req->workflow->etag);
    az_arena *a = az_call_arena(c);
    az_ctx ctx;
    az_call_ctx(c, &ctx);
    Agentz__V1__Workflow *cur;
    if ((err = az_workflow_get(api->pg, &ctx, req->workflow->id, 0, a, &cur, msg)) != AZ_OK) return err;
    int64_t have = az_workflow_etag_revision(cur->etag);
    if (want > 0 && want != have)
        return az_fail(msg, AZ_ERR_ABORTED,
                       "workflow.etag: \"%s\" does not match the current etag \"%s\"; read the "
                       "workflow again and retry",
                       req->workflow->etag, cur->etag);
    if ((err = az_workflow_apply_mask(cur, req->workflow, req->update_mask, msg)) != AZ_OK) return err;
    normalize(cur);
    if ((err = validate_stored(api, &ctx, a, cur, msg)) != AZ_OK) return err;
    Agentz__V1__Workflow *w;
    err = az_workflow_update(api->pg, &ctx, cur, have, a, &w, msg);
    if (err == AZ_OK) *out = &w->base;
    return err;
}

static az_err delete_workflow(az_call *c, const ProtobufCMessage *in, ProtobufCMessage **out, char *msg)
{
    az_workflow_api *api = az_call_data(c);
    const Agentz__V1__DeleteWorkflowRequest *req = (const void *)in;
    az_err err = check_id("id", req->id, msg);
    if (err != AZ_OK) return err;
    int64_t want = 0;
    if (*req->etag && (want = az_workflow_etag_revision(req->etag)) < 0)
        return az_fail(msg, AZ_ERR_INVALID, "etag: \"%.40s\" is not an etag this server issued", req->etag);
    az_ctx ctx;
    az_call_ctx(c, &ctx);
    if ((err = az_workflow_delete(api->pg, &ctx, req->id, want, msg)) != AZ_OK) return err;
    return empty_response(c, out, msg);
}

static az_err list_workflow_versions(az_call *c, const ProtobufCMessage *in, ProtobufCMessage **out,
                                     char *msg)
{
    az_workflow_api *api = az_call_data(c);
    const Agentz__V1__ListWorkflowVersionsRequest *req = (const void *)in;
    az_err err = check_id("id", req->id, msg);
    if (err != AZ_OK) return err;
    if (req->page_size < 0) return az_fail(msg, AZ_ERR_INVALID, "page_size: must not be negative");
    az_ctx ctx;
    az_call_ctx(c, &ctx);
    Agentz__V1__ListWorkflowVersionsResponse *resp;
    err = az_workflow_list_versions(api->pg, &ctx, req->id, page_size(req->page_size), req->page_token,
                                    az_call_arena(c), &resp, msg);
    if (err == AZ_OK) *out = &resp->base;
    return err;
}

/* ---------------------------------------------------------------- template handlers */

static az_err list_templates(az_call *c, const ProtobufCMessage *in, ProtobufCMessage **out, char *msg)
{
    az_workflow_api *api = az_call_data(c);
    const Agentz__V1__ListTemplatesRequest *req = (const void *)in;
    if (req->page_size < 0) return az_fail(msg, AZ_ERR_INVALID, "page_size: must not be negative");
    az_ctx ctx;
    az_call_ctx(c, &ctx);
    Agentz__V1__ListTemplatesResponse *resp;
    az_err err = az_template_list(api->pg, &ctx, page_size(req->page_size), req->page_token,
                                  az_call_arena(c), &resp, msg);
    if (err == AZ_OK) *out = &resp->base;
    return err;
}

static az_err instantiate_template(az_call *c, const ProtobufCMessage *in, ProtobufCMessage **out,
                                   char *msg)
{
    az_workflow_api *api = az_call_data(c);
    const Agentz__V1__InstantiateTemplateRequest *req = (const void *)in;
    az_err err;
    if ((err = check_id("template_id", req->template_id, msg)) != AZ_OK ||
        (err = az_text_check("name", req->name, AZ_WORKFLOW_NAME_MAX, 0, msg)) != AZ_OK ||
        (err = az_text_check("request_id", req->request_id, REQUEST_ID_MAX, 0, msg)) != AZ_OK)
        return err;
    az_arena *a = az_call_arena(c);
    az_ctx ctx;
    az_call_ctx(c, &ctx);
    Agentz__V1__Template *t;
    if ((err = az_template_get(api->pg, &ctx, req->template_id, a, &t, msg)) != AZ_OK) return err;
    /* Saved templates were valid when saved; the rules may have tightened since. */
    char inner[AZ_MSG_MAX];
    if ((err = az_workflow_validate_template(t, inner)) != AZ_OK)
        return az_fail(msg, AZ_ERR_PRECONDITION, "template %s is no longer valid: %s", req->template_id,
                       inner);
    const char *hash = "";
    if (*req->request_id) {
        char *key = az_arena_printf(a, "%s\n%s", req->template_id, req->name);
        if (!key || !(hash = sha256_hex(a, key, strlen(key))))
            return az_fail(msg, AZ_ERR_NOMEM, "out of memory");
    }
    Agentz__V1__InstantiateTemplateResponse *resp;
    int replayed;
    err = az_template_instantiate(api->pg, &ctx, t, req->name, req->request_id, hash, a, &resp,
                                  &replayed, msg);
    if (err == AZ_OK) *out = &resp->base;
    return err;
}

static az_err save_as_template(az_call *c, const ProtobufCMessage *in, ProtobufCMessage **out, char *msg)
{
    az_workflow_api *api = az_call_data(c);
    const Agentz__V1__SaveAsTemplateRequest *req = (const void *)in;
    az_err err;
    if ((err = check_id("workflow_id", req->workflow_id, msg)) != AZ_OK ||
        (err = az_text_check("name", req->name, AZ_WORKFLOW_NAME_MAX, AZ_TEXT_REQUIRED, msg)) != AZ_OK ||
        (err = az_text_check("description", req->description, TEMPLATE_DESCRIPTION_MAX,
                             AZ_TEXT_MULTILINE, msg)) != AZ_OK)
        return err;
    az_arena *a = az_call_arena(c);
    az_ctx ctx;
    az_call_ctx(c, &ctx);
    Agentz__V1__Template *t, *saved;
    if ((err = az_template_from_workflow(api->pg, &ctx, req->workflow_id, req->name, req->description, a,
                                         &t, msg)) != AZ_OK)
        return err;
    char inner[AZ_MSG_MAX];
    if ((err = az_workflow_validate_template(t, inner)) != AZ_OK)
        return az_fail(msg, AZ_ERR_PRECONDITION, "workflow %s cannot be saved as a template: %s",
                       req->workflow_id, inner);
    err = az_template_insert(api->pg, &ctx, t, a, &saved, msg);
    if (err == AZ_OK) *out = &saved->base;
    return err;
}

/* ---------------------------------------------------------------- run handlers */

/* SHA-256 over workflow id, version and the inputs sorted by name: map order on the wire must
 * not make a retry look like another request. */
static char *start_hash(az_arena *a, const Agentz__V1__StartRunRequest *req)
{
    json_t *obj = json_object();
    for (size_t i = 0; obj && i < req->n_inputs; i++)
        json_object_set_new(obj, req->inputs[i]->key, json_string(req->inputs[i]->value));
    char *inputs = obj ? json_dumps(obj, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
    json_decref(obj);
    char *key = inputs ? az_arena_printf(a, "%s\n%d\n%s", req->workflow_id, req->version, inputs) : NULL;
    free(inputs);
    return key ? sha256_hex(a, key, strlen(key)) : NULL;
}

static az_err start_run(az_call *c, const ProtobufCMessage *in, ProtobufCMessage **out, char *msg)
{
    az_workflow_api *api = az_call_data(c);
    const Agentz__V1__StartRunRequest *req = (const void *)in;
    az_err err;
    if ((err = check_id("workflow_id", req->workflow_id, msg)) != AZ_OK ||
        (err = az_text_check("request_id", req->request_id, REQUEST_ID_MAX, 0, msg)) != AZ_OK)
        return err;
    if (req->version < 0) return az_fail(msg, AZ_ERR_INVALID, "version: must not be negative");
    az_arena *a = az_call_arena(c);
    az_ctx ctx;
    az_call_ctx(c, &ctx);
    Agentz__V1__Workflow *w;
    if ((err = az_workflow_get(api->pg, &ctx, req->workflow_id, req->version, a, &w, msg)) != AZ_OK)
        return err;
    az_run_input *inputs;
    size_t n_inputs;
    if ((err = az_workflow_resolve_inputs(w, req->inputs, req->n_inputs, a, &inputs, &n_inputs, msg)) !=
        AZ_OK)
        return err;
    /* The version was valid when written; its agents may have been deleted or disabled since. */
    char inner[AZ_MSG_MAX];
    if ((err = validate_stored(api, &ctx, a, w, inner)) != AZ_OK)
        return err == AZ_ERR_INVALID
                   ? az_fail(msg, AZ_ERR_PRECONDITION, "workflow %s version %d cannot run: %s", w->id,
                             w->version, inner)
                   : az_fail(msg, err, "%s", inner);
    const char *hash = "";
    if (*req->request_id && !(hash = start_hash(a, req))) return az_fail(msg, AZ_ERR_NOMEM, "out of memory");
    az_task_ready ready = {.arena = a};
    Agentz__V1__WorkflowRun *run;
    int replayed;
    err = az_run_start(api->pg, &ctx, w, inputs, n_inputs, req->request_id, hash, a, &run, &replayed,
                       &ready, msg);
    if (err != AZ_OK) return err;
    publish(api, &ctx, &ready);
    *out = &run->base;
    return AZ_OK;
}

static az_err get_run(az_call *c, const ProtobufCMessage *in, ProtobufCMessage **out, char *msg)
{
    az_workflow_api *api = az_call_data(c);
    const Agentz__V1__GetRunRequest *req = (const void *)in;
    az_err err = check_id("id", req->id, msg);
    if (err != AZ_OK) return err;
    az_ctx ctx;
    az_call_ctx(c, &ctx);
    Agentz__V1__WorkflowRun *run;
    err = az_run_get(api->pg, &ctx, req->id, az_call_arena(c), &run, msg);
    if (err == AZ_OK) *out = &run->base;
    return err;
}

static az_err list_runs(az_call *c, const ProtobufCMessage *in, ProtobufCMessage **out, char *msg)
{
    az_workflow_api *api = az_call_data(c);
    const Agentz__V1__ListRunsRequest *req = (const void *)in;
    if (req->page_size < 0) return az_fail(msg, AZ_ERR_INVALID, "page_size: must not be negative");
    if ((int)req->status < 0 || (int)req->status > AGENTZ__V1__RUN_STATUS__RUN_STATUS_CANCELLED)
        return az_fail(msg, AZ_ERR_INVALID, "status: unknown value %d", (int)req->status);
    if (*req->workflow_id && !az_text_is_uuid(req->workflow_id))
        return az_fail(msg, AZ_ERR_INVALID, "workflow_id: \"%.64s\" is not a workflow id", req->workflow_id);
    az_run_query q = {.workflow_id = req->workflow_id, .status = (int)req->status,
                      .page_size = page_size(req->page_size), .page_token = req->page_token};
    az_ctx ctx;
    az_call_ctx(c, &ctx);
    Agentz__V1__ListRunsResponse *resp;
    az_err err = az_run_list(api->pg, &ctx, &q, az_call_arena(c), &resp, msg);
    if (err == AZ_OK) *out = &resp->base;
    return err;
}

static az_err cancel_run(az_call *c, const ProtobufCMessage *in, ProtobufCMessage **out, char *msg)
{
    az_workflow_api *api = az_call_data(c);
    const Agentz__V1__CancelRunRequest *req = (const void *)in;
    az_err err;
    if ((err = check_id("id", req->id, msg)) != AZ_OK ||
        (err = az_text_check("reason", req->reason, AZ_TASK_REASON_MAX, AZ_TEXT_MULTILINE, msg)) != AZ_OK)
        return err;
    az_ctx ctx;
    az_call_ctx(c, &ctx);
    Agentz__V1__WorkflowRun *run;
    err = az_run_cancel(api->pg, &ctx, req->id, req->reason, az_call_arena(c), &run, msg);
    if (err == AZ_OK) *out = &run->base;
    return err;
}

static az_err resume_run(az_call *c, const ProtobufCMessage *in, ProtobufCMessage **out, char *msg)
{
    az_workflow_api *api = az_call_data(c);
    const Agentz__V1__ResumeRunRequest *req = (const void *)in;
    az_err err = check_id("id", req->id, msg);
    if (err != AZ_OK) return err;
    az_arena *a = az_call_arena(c);
    az_ctx ctx;
    az_call_ctx(c, &ctx);
    az_task_ready ready = {.arena = a};
    Agentz__V1__WorkflowRun *run;
    if ((err = az_run_resume(api->pg, &ctx, req->id, a, &run, &ready, msg)) != AZ_OK) return err;
    publish(api, &ctx, &ready);
    *out = &run->base;
    return AZ_OK;
}

static int64_t ts_us(const Google__Protobuf__Timestamp *t)
{
    return (int64_t)t->seconds * 1000000 + t->nanos / 1000;
}

static az_err get_workflow_analytics(az_call *c, const ProtobufCMessage *in, ProtobufCMessage **out,
                                     char *msg)
{
    az_workflow_api *api = az_call_data(c);
    const Agentz__V1__GetWorkflowAnalyticsRequest *req = (const void *)in;
    az_err err = check_id("workflow_id", req->workflow_id, msg);
    if (err != AZ_OK) return err;
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    int64_t end = req->end_time ? ts_us(req->end_time) : (int64_t)now.tv_sec * 1000000 + now.tv_nsec / 1000;
    int64_t start = req->start_time ? ts_us(req->start_time) : end - ANALYTICS_DEFAULT_WINDOW_US;
    if (start >= end) return az_fail(msg, AZ_ERR_INVALID, "start_time: must be before end_time");
    az_arena *a = az_call_arena(c);
    az_ctx ctx;
    az_call_ctx(c, &ctx);
    Agentz__V1__Workflow *w;
    if ((err = az_workflow_get(api->pg, &ctx, req->workflow_id, 0, a, &w, msg)) != AZ_OK) return err;
    Agentz__V1__WorkflowAnalytics *an;
    err = az_run_analytics(api->pg, &ctx, w, start, end, a, &an, msg);
    if (err == AZ_OK) *out = &an->base;
    return err;
}

/* WatchRun: the watch engine replays the run's stored events, then streams live ones, and ends
 * after the run's terminal status. */
static az_err watch_run(az_call *c, const ProtobufCMessage *in, char *msg)
{
    az_workflow_api *api = az_call_data(c);
    const Agentz__V1__WatchRunRequest *req = (const void *)in;
    az_err err = check_id("run_id", req->run_id, msg);
    if (err != AZ_OK) return err;
    if (!az_text_is_uuid(req->run_id))
        return az_fail(msg, AZ_ERR_INVALID, "run_id: \"%.64s\" is not a run id", req->run_id);
    if (req->after_sequence < 0)
        return az_fail(msg, AZ_ERR_INVALID, "after_sequence: must not be negative");
    if (!api->watch)
        return az_fail(msg, AZ_ERR_UNAVAILABLE, "WatchRun is not served by this process (no event hub)");
    az_watch_request w = {.kind = AZ_WATCH_RUN,
                          .id = req->run_id,
                          .after_sequence = req->after_sequence,
                          .include_tokens = req->include_tokens};
    return az_watch_serve(api->watch, c, &w, msg);
}

/* ---------------------------------------------------------------- the table */

az_workflow_api *az_workflow_api_new(az_pg *pg, az_redis *redis)
{
    az_workflow_api *api = calloc(1, sizeof *api);
    if (!api) return NULL;
    api->pg = pg;
    api->redis = redis;
#define SVC "/agentz.v1.WorkflowService/"
#define M(name, req, resp, fn)                                                                   \
    {SVC name, AZ_RPC_UNARY, &req##__descriptor, &resp##__descriptor, .unary = fn, .data = api}
    const az_method m[N_METHODS] = {
        M("CreateWorkflow", agentz__v1__create_workflow_request, agentz__v1__workflow, create_workflow),
        M("GetWorkflow", agentz__v1__get_workflow_request, agentz__v1__workflow, get_workflow),
        M("ListWorkflows", agentz__v1__list_workflows_request, agentz__v1__list_workflows_response,
          list_workflows),
        M("UpdateWorkflow", agentz__v1__update_workflow_request, agentz__v1__workflow, update_workflow),
        M("DeleteWorkflow", agentz__v1__delete_workflow_request, google__protobuf__empty, delete_workflow),
        M("ListWorkflowVersions", agentz__v1__list_workflow_versions_request,
          agentz__v1__list_workflow_versions_response, list_workflow_versions),
        M("ListTemplates", agentz__v1__list_templates_request, agentz__v1__list_templates_response,
          list_templates),
        M("InstantiateTemplate", agentz__v1__instantiate_template_request,
          agentz__v1__instantiate_template_response, instantiate_template),
        M("SaveAsTemplate", agentz__v1__save_as_template_request, agentz__v1__template, save_as_template),
        M("StartRun", agentz__v1__start_run_request, agentz__v1__workflow_run, start_run),
        M("GetRun", agentz__v1__get_run_request, agentz__v1__workflow_run, get_run),
        M("ListRuns", agentz__v1__list_runs_request, agentz__v1__list_runs_response, list_runs),
        M("CancelRun", agentz__v1__cancel_run_request, agentz__v1__workflow_run, cancel_run),
        M("ResumeRun", agentz__v1__resume_run_request, agentz__v1__workflow_run, resume_run),
        M("GetWorkflowAnalytics", agentz__v1__get_workflow_analytics_request,
          agentz__v1__workflow_analytics, get_workflow_analytics),
        {SVC "WatchRun", AZ_RPC_SERVER_STREAM, &agentz__v1__watch_run_request__descriptor,
         &agentz__v1__event__descriptor, .stream = watch_run, .data = api},
    };
#undef M
#undef SVC
    memcpy(api->methods, m, sizeof m);
    return api;
}

void az_workflow_api_free(az_workflow_api *api) { free(api); }

void az_workflow_api_set_watch(az_workflow_api *api, az_watch *w) { api->watch = w; }

const az_method *az_workflow_api_methods(az_workflow_api *api, size_t *n)
{
    *n = N_METHODS;
    return api->methods;
}
