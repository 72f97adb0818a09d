/* CrewAI's prompts (src/crewai/translations/en.json wording) adapted to native function calling:
 * the ReAct "Thought/Action" format instructions are left out because tools are offered through
 * the provider's tool API, everything else keeps CrewAI's text so agents behave as they do there. */
#include "prompt.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/placeholder.h"

const char AZ_PROMPT_FORCE_FINAL[] =
    "Now it's time you MUST give your absolute best final answer. You'll ignore all previous "
    "instructions, stop using any tools, and just return your absolute BEST Final answer.";

const char AZ_PROMPT_MANAGER_REQUEST[] =
    "Your best answer to your coworker asking you this, accounting for the context shared.";

#define CONTEXT_SEPARATOR "\n\n----------\n\n"
#define TRUNCATED_NOTE "\n[... truncated]"

/* ---------------------------------------------------------------- string building */

/* A growable string on the heap; copied into the arena when done so callers get one block. */
typedef struct sbuf {
    char *s;
    size_t len, cap;
    int oom;
} sbuf;

static void sb_put(sbuf *b, const char *s, size_t n)
{
    if (b->oom || n == 0) return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n + 1) cap *= 2;
        char *p = realloc(b->s, cap);
        if (!p) {
            b->oom = 1;
            return;
        }
        b->s = p;
        b->cap = cap;
    }
    memcpy(b->s + b->len, s, n);
    b->len += n;
    b->s[b->len] = '\0';
}

static void sb_puts(sbuf *b, const char *s)
{
    if (s) sb_put(b, s, strlen(s));
}

static void sb_printf(sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(sbuf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *s = NULL;
    int n = vasprintf(&s, fmt, ap);
    va_end(ap);
    if (n < 0) {
        b->oom = 1;
        return;
    }
    sb_put(b, s, (size_t)n);
    free(s);
}

/* The text in arena ("" when nothing was added), freeing the heap copy; NULL when out of memory. */
static char *sb_finish(sbuf *b, az_arena *a)
{
    char *out = b->oom ? NULL : az_arena_strndup(a, b->s ? b->s : "", b->len);
    free(b->s);
    memset(b, 0, sizeof *b);
    return out;
}

static int empty(const char *s)
{
    return !s || !*s;
}

/* The longest prefix of s of at most max bytes that ends on a UTF-8 character boundary. */
static size_t utf8_cut(const char *s, size_t len, size_t max)
{
    if (len <= max) return len;
    size_t n = max;
    while (n > 0 && ((unsigned char)s[n] & 0xC0) == 0x80) n--;
    return n;
}

/* s capped at AZ_PROMPT_CONTEXT_MAX bytes (with a note when cut), in arena. */
static const char *capped(const char *s, az_arena *a)
{
    size_t len = strlen(s);
    if (len <= AZ_PROMPT_CONTEXT_MAX) return s;
    size_t n = utf8_cut(s, len, AZ_PROMPT_CONTEXT_MAX);
    char *out = az_arena_alloc(a, n + sizeof TRUNCATED_NOTE);
    if (!out) return NULL;
    memcpy(out, s, n);
    memcpy(out + n, TRUNCATED_NOTE, sizeof TRUNCATED_NOTE);
    return out;
}

/* ---------------------------------------------------------------- system */

char *az_prompt_system(const char *role, const char *goal, const char *backstory, az_arena *arena)
{
    return az_arena_printf(arena, "You are %s. %s\nYour personal goal is: %s", role ? role : "",
                           backstory ? backstory : "", goal ? goal : "");
}

/* ---------------------------------------------------------------- the task prompt */

char *az_prompt_task_text(const az_prompt_task *t, az_arena *arena)
{
    sbuf b = {0};
    sb_puts(&b, "Current Task: ");
    sb_puts(&b, t->description);
    if (!empty(t->expected_output)) {
        sb_puts(&b, "\n\nThis is the expected criteria for your final answer: ");
        sb_puts(&b, t->expected_output);
        sb_puts(&b, "\nyou MUST return the actual complete content as the final answer, not a "
                    "summary.");
    }
    if (!empty(t->output_schema_json)) {
        /* CrewAI's "formatted_task_instructions", with the schema as the format. */
        sb_puts(&b, "\n\nEnsure your final answer contains only the content in the following "
                    "format: a JSON value matching this JSON Schema:\n");
        sb_puts(&b, t->output_schema_json);
        sb_puts(&b, "\n\nEnsure the final output does not include any code block markers like "
                    "```json or ```python.");
    }
    if (t->n_context) {
        sb_puts(&b, "\n\nThis is the context you're working with:\n");
        for (size_t i = 0; i < t->n_context; i++) {
            if (i) sb_puts(&b, CONTEXT_SEPARATOR);
            sb_puts(&b, t->context[i]);
        }
    }
    if (t->n_memories) {
        sb_puts(&b, "\n\n# Useful context: ");
        for (size_t i = 0; i < t->n_memories; i++) {
            sb_puts(&b, "\n- ");
            sb_puts(&b, t->memories[i]);
        }
    }
    sb_puts(&b, "\n\nBegin! This is VERY important to you, use the tools available and give your "
                "best Final Answer, your job depends on it!");
    return sb_finish(&b, arena);
}

/* ---------------------------------------------------------------- context */

const char *az_prompt_marker(const char *entry, const char *kind)
{
    if (!entry || entry[0] != '@' || !kind) return NULL;
    size_t k = strlen(kind);
    if (strncmp(entry + 1, kind, k) != 0 || entry[1 + k] != ':') return NULL;
    return entry + 2 + k;
}

int az_prompt_is_marker(const char *entry)
{
    static const char *const kinds[] = {"step", "assignee", "coworker"};
    for (size_t i = 0; i < sizeof kinds / sizeof *kinds; i++) {
        if (az_prompt_marker(entry, kinds[i])) return 1;
    }
    return 0;
}

az_err az_prompt_context(const char *const *context, size_t n_context,
                         const char *const *depends_on, size_t n_depends_on,
                         const az_prompt_sibling *siblings, size_t n_siblings, az_arena *arena,
                         const char ***out, size_t *n, char *msg)
{
    *out = NULL;
    *n = 0;
    size_t cap = n_context + n_depends_on + 1;
    if (cap > AZ_PROMPT_CONTEXT_ITEMS_MAX) cap = AZ_PROMPT_CONTEXT_ITEMS_MAX;
    const char **v = az_arena_alloc(arena, cap * sizeof *v);
    if (!v) return az_fail(msg, AZ_ERR_NOMEM, "out of memory");
    size_t k = 0;
    int by_step = 0;
    for (size_t i = 0; i < n_context; i++) by_step |= az_prompt_marker(context[i], "step") != NULL;
    if (by_step) {
        for (size_t i = 0; i < n_context && k < cap; i++) {
            const char *step = az_prompt_marker(context[i], "step");
            if (!step) continue;
            for (size_t j = 0; j < n_siblings; j++) {
                if (siblings[j].step_id && strcmp(siblings[j].step_id, step) == 0 &&
                    siblings[j].output) {
                    if (!(v[k++] = capped(siblings[j].output, arena))) goto oom;
                    break;
                }
            }
        }
    } else {
        for (size_t i = 0; i < n_depends_on && k < cap; i++) {
            for (size_t j = 0; j < n_siblings; j++) {
                if (siblings[j].id && strcmp(siblings[j].id, depends_on[i]) == 0 &&
                    siblings[j].output) {
                    if (!(v[k++] = capped(siblings[j].output, arena))) goto oom;
                    break;
                }
            }
        }
    }
    for (size_t i = 0; i < n_context && k < cap; i++) {
        if (empty(context[i]) || az_prompt_is_marker(context[i])) continue;
        if (!(v[k++] = capped(context[i], arena))) goto oom;
    }
    *out = v;
    *n = k;
    return AZ_OK;
oom:
    return az_fail(msg, AZ_ERR_NOMEM, "out of memory");
}

/* ---------------------------------------------------------------- guardrail */

char *az_prompt_guardrail_retry(const char *error, az_arena *arena)
{
    return az_arena_printf(arena,
                           "### Previous attempt failed validation: %s\n\n\nTry again, making sure "
                           "to address the validation error. Your final answer must be only the "
                           "JSON value, without any other text.",
                           error ? error : "");
}

/* ---------------------------------------------------------------- delegation */

char *az_prompt_delegation_description(int ask, const char *const *roles, size_t n_roles,
                                       az_arena *arena)
{
    sbuf b = {0};
    sb_puts(&b, ask ? "Ask question to coworker. Ask a specific question to one of the following "
                      "coworkers: "
                    : "Delegate work to coworker. Delegate a specific task to one of the following "
                      "coworkers: ");
    for (size_t i = 0; i < n_roles; i++) {
        if (i) sb_puts(&b, ", ");
        sb_puts(&b, roles[i]);
    }
    sb_puts(&b, ask ? "\nThe input to this tool should be the coworker, the question you have for "
                      "them, and ALL necessary context to ask the question properly, they know "
                      "nothing about the question, so share absolute everything you know, don't "
                      "reference things but instead explain them."
                    : "\nThe input to this tool should be the coworker, the task you want them to "
                      "do, and ALL necessary context to execute the task, they know nothing about "
                      "the task, so share absolute everything you know, don't reference things "
                      "but instead explain them.");
    return sb_finish(&b, arena);
}

json_t *az_prompt_delegation_schema(int ask)
{
    const char *first = ask ? "question" : "task";
    return json_pack("{s:s, s:{s:{s:s, s:s}, s:{s:s, s:s}, s:{s:s, s:s}}, s:[s, s, s]}", "type",
                     "object", "properties", first, "type", "string", "description",
                     ask ? "The question to ask" : "The task to delegate", "context", "type",
                     "string", "description",
                     ask ? "The context for the question" : "The context for the task",
                     "coworker", "type", "string", "description",
                     ask ? "The role/name of the coworker to ask"
                         : "The role/name of the coworker to delegate to",
                     "required", first, "context", "coworker");
}

az_err az_prompt_delegation_args(int ask, const char *arguments_json, az_arena *arena,
                                 az_prompt_delegation *out, char *msg)
{
    memset(out, 0, sizeof *out);
    const char *first = ask ? "question" : "task";
    json_error_t je;
    json_t *args = json_loads(arguments_json && *arguments_json ? arguments_json : "{}", 0, &je);
    if (!args) return az_fail(msg, AZ_ERR_INVALID, "arguments are not valid JSON: %s", je.text);
    az_err err = AZ_OK;
    const char *names[3] = {first, "context", "coworker"};
    const char *vals[3] = {0};
    if (!json_is_object(args)) {
        err = az_fail(msg, AZ_ERR_INVALID, "arguments must be a JSON object with %s, context and "
                                           "coworker", first);
        goto out;
    }
    for (int i = 0; i < 3; i++) {
        json_t *v = json_object_get(args, names[i]);
        if (v && !json_is_string(v) && !json_is_null(v)) {
            err = az_fail(msg, AZ_ERR_INVALID, "%s must be a string", names[i]);
            goto out;
        }
        vals[i] = v && json_is_string(v) ? json_string_value(v) : "";
        if (i != 1 && !*vals[i]) {
            err = az_fail(msg, AZ_ERR_INVALID, "%s is required", names[i]);
            goto out;
        }
        if (!(vals[i] = az_arena_strdup(arena, vals[i]))) {
            err = az_fail(msg, AZ_ERR_NOMEM, "out of memory");
            goto out;
        }
    }
    out->task = vals[0];
    out->context = vals[1];
    out->coworker = vals[2];
out:
    json_decref(args);
    return err;
}

/* The span of s without surrounding white space and quotes. */
static void trim(const char *s, const char **b, size_t *n)
{
    const char *e = s + strlen(s);
    while (s < e && (isspace((unsigned char)*s) || *s == '"' || *s == '\'')) s++;
    while (e > s && (isspace((unsigned char)e[-1]) || e[-1] == '"' || e[-1] == '\'')) e--;
    *b = s;
    *n = (size_t)(e - s);
}

int az_prompt_match_role(const char *wanted, const char *const *roles, size_t n)
{
    if (!wanted) return -1;
    const char *w, *r;
    size_t wn, rn;
    trim(wanted, &w, &wn);
    if (wn == 0) return -1;
    for (size_t i = 0; i < n; i++) {
        if (!roles[i]) continue;
        trim(roles[i], &r, &rn);
        if (rn == wn && strncasecmp(r, w, wn) == 0) return (int)i;
    }
    return -1;
}

char *az_prompt_unknown_coworker(const char *wanted, const char *const *roles, size_t n,
                                 az_arena *arena)
{
    sbuf b = {0};
    sb_printf(&b, "Error executing tool. coworker \"%.200s\" mentioned not found, it must be one "
                  "of the following options:",
              wanted ? wanted : "");
    for (size_t i = 0; i < n; i++) {
        sb_puts(&b, "\n- ");
        sb_puts(&b, roles[i]);
    }
    if (n == 0) sb_puts(&b, "\n(no coworkers are available)");
    return sb_finish(&b, arena);
}

/* ---------------------------------------------------------------- hierarchical manager */

/* First line of s, at most max bytes (UTF-8 safe), with "..." when shortened. */
static void put_summary(sbuf *b, const char *s, size_t max)
{
    if (!s) return;
    size_t len = strcspn(s, "\n");
    size_t n = utf8_cut(s, len, max);
    sb_put(b, s, n);
    if (n < strlen(s)) sb_puts(b, "...");
}

char *az_prompt_manager(const az_prompt_sibling *steps, size_t n_steps, size_t current,
                        const az_prompt_member *team, size_t n_team, const char *assignee_role,
                        az_arena *arena)
{
    sbuf b = {0};
    sb_puts(&b, "You are managing a team working through these steps, in order:");
    for (size_t i = 0; i < n_steps; i++) {
        sb_printf(&b, "\n%zu. ", i + 1);
        if (!empty(steps[i].step_id)) sb_printf(&b, "[%s] ", steps[i].step_id);
        put_summary(&b, steps[i].description, 300);
        if (i == current) sb_puts(&b, " (the current step: your task now)");
        else if (steps[i].output) sb_puts(&b, " (done)");
    }
    sb_puts(&b, "\n\nYour team:");
    for (size_t i = 0; i < n_team; i++) {
        sb_puts(&b, "\n- ");
        sb_puts(&b, team[i].role);
        if (!empty(team[i].goal)) {
            sb_puts(&b, ": ");
            put_summary(&b, team[i].goal, 300);
        }
    }
    if (n_team == 0) sb_puts(&b, "\n(nobody: do the work yourself)");
    if (!empty(assignee_role))
        sb_printf(&b, "\n\nThis step is assigned to %s: delegate it to them", assignee_role);
    else
        sb_puts(&b, "\n\nDelegate this step to the coworker best suited for it");
    sb_puts(&b, " with the \"Delegate work to coworker\" tool (naming the coworker by role and "
                "giving them ALL the context they need, they know nothing else), ask questions "
                "with \"Ask question to coworker\" when you need to, review what they return, "
                "and then give your final answer: the complete result of this step.");
    return sb_finish(&b, arena);
}
