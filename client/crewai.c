/* The CrewAI mapping. Import builds the proto3 JSON of an agentz.v1.Template from the two YAML
 * files (read with az_yaml_parse) and decodes it with pbjson, so the result is exactly what the
 * server would accept as JSON; export goes the other way through az_yaml_emit. Key handlers are
 * tables: adding a CrewAI setting is one row. */
#include "crewai.h"

#include "core/placeholder.h"

#include <ctype.h>
#include <errno.h>
#include <glob.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/pbjson.h"
#include "yamljson.h"

#define STEP_ID_MAX 63
#define AGENT_NAME_MAX 128

/* ---- notes ---- */

static void note(az_crewai_notes *n, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void note(az_crewai_notes *n, const char *fmt, ...)
{
    char *line = NULL;
    va_list ap;
    va_start(ap, fmt);
    int r = vasprintf(&line, fmt, ap);
    va_end(ap);
    char **bigger = r < 0 ? NULL : realloc(n->lines, (n->n + 1) * sizeof *bigger);
    if (!bigger) {
        if (r >= 0) free(line);
        n->oom = 1;
        return;
    }
    n->lines = bigger;
    n->lines[n->n++] = line;
}

void az_crewai_notes_free(az_crewai_notes *n)
{
    if (!n) return;
    for (size_t i = 0; i < n->n; i++) free(n->lines[i]);
    free(n->lines);
    n->lines = NULL;
    n->n = 0;
    n->oom = 0;
}

/* ---- the LLM and tool vocabularies ---- */

/* litellm-style "prefix/model" strings CrewAI accepts, and what they are in AGENTZ. */
static const struct {
    const char *prefix;
    const char *provider;
    const char *base_url; /* NULL = the provider's default endpoint */
} llm_prefixes[] = {
    {"openai", "openai", NULL},
    {"anthropic", "anthropic", NULL},
    {"ollama", "openai", "http://localhost:11434/v1"},
    {"ollama_chat", "openai", "http://localhost:11434/v1"},
    {"groq", "openai", "https://api.groq.com/openai/v1"},
    {"deepseek", "openai", "https://api.deepseek.com/v1"},
    {"mistral", "openai", "https://api.mistral.ai/v1"},
    {"openrouter", "openai", "https://openrouter.ai/api/v1"},
};
#define NPREFIXES (sizeof llm_prefixes / sizeof llm_prefixes[0])

/* CrewAI tool classes with an AGENTZ equivalent, and the AGENTZ tool names themselves (so an
 * exported crew imports back unchanged). */
static const struct {
    const char *crewai;
    const char *agentz;
} tool_map[] = {
    {"ScrapeWebsiteTool", "http_fetch"},
    {"http_fetch", "http_fetch"},
    {"current_time", "current_time"},
    {"calculator", "calculator"},
};

/* ---- import context ---- */

typedef struct ictx {
    const char *agents_name, *tasks_name;
    az_crewai_notes *notes;
    json_t *inputs;       /* array of WorkflowInput objects, first occurrence order */
    char *msg;
} ictx;

static az_err nomem(ictx *x) { return az_fail(x->msg, AZ_ERR_NOMEM, "out of memory"); }

/* The text of a scalar (numbers and bools as YAML wrote them); NULL for null and collections. */
static const char *scalar_text(const json_t *v, char *buf, size_t size)
{
    if (json_is_string(v)) return json_string_value(v);
    if (json_is_integer(v)) {
        snprintf(buf, size, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
        return buf;
    }
    if (json_is_real(v)) {
        snprintf(buf, size, "%.17g", json_real_value(v));
        return buf;
    }
    if (json_is_boolean(v)) return json_is_true(v) ? "true" : "false";
    return NULL;
}

/* Records each placeholder as a workflow input (CrewAI requires them all at kickoff, so they
 * are required). The rule is the server's own (core/placeholder.h), so what the import declares
 * is exactly what workflow validation looks for. */
static az_err add_input(void *arg, const char *name, size_t len, char *msg)
{
    ictx *x = arg;
    size_t i;
    json_t *in;
    json_array_foreach(x->inputs, i, in) {
        const char *have = json_string_value(json_object_get(in, "name"));
        if (strlen(have) == len && strncmp(have, name, len) == 0) return AZ_OK;
    }
    json_t *o = json_pack("{s:s%, s:b}", "name", name, len, "required", 1);
    if (!o || json_array_append_new(x->inputs, o)) return nomem(x);
    return AZ_OK;
}

static az_err scan_placeholders(ictx *x, const char *where, const char *text)
{
    (void)where;
    return az_placeholder_scan(text, add_input, x, x->msg);
}

/* Text without surrounding white space (YAML block scalars end in a newline); one_line also
 * turns line breaks and tabs into spaces, for fields the server keeps on one line. */
static json_t *clean_text(const char *s, int one_line)
{
    while (isspace((unsigned char)*s)) s++;
    size_t n = strlen(s);
    while (n && isspace((unsigned char)s[n - 1])) n--;
    char *copy = strndup(s, n);
    if (!copy) return NULL;
    if (one_line)
        for (char *p = copy; *p; p++)
            if (*p == '\n' || *p == '\r' || *p == '\t') *p = ' ';
    json_t *v = json_string(copy);
    free(copy);
    return v;
}

/* ---- agents.yaml ---- */

typedef az_err (*agent_fn)(ictx *x, const char *agent, const char *key, json_t *v, json_t *out,
                           const char *field);

static az_err agent_type_error(ictx *x, const char *agent, const char *key, const char *want)
{
    return az_fail(x->msg, AZ_ERR_INVALID, "%s: agent %s: %s: expected %s", x->agents_name, agent,
                   key, want);
}

static az_err a_text(ictx *x, const char *agent, const char *key, json_t *v, json_t *out,
                     const char *field)
{
    char buf[64], where[256];
    const char *s = scalar_text(v, buf, sizeof buf);
    if (!s) return agent_type_error(x, agent, key, "text");
    json_t *t = clean_text(s, strcmp(field, "role") == 0);
    if (!t || json_object_set_new(out, field, t)) return nomem(x);
    snprintf(where, sizeof where, "%s: agent %s: %s", x->agents_name, agent, key);
    return scan_placeholders(x, where, json_string_value(t));
}

static az_err a_bool(ictx *x, const char *agent, const char *key, json_t *v, json_t *out,
                     const char *field)
{
    if (!json_is_boolean(v)) return agent_type_error(x, agent, key, "true or false");
    return json_object_set(out, field, v) ? nomem(x) : AZ_OK;
}

static az_err a_count(ictx *x, const char *agent, const char *key, json_t *v, json_t *out,
                      const char *field)
{
    if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > INT32_MAX)
        return agent_type_error(x, agent, key, "a whole number >= 0");
    return json_object_set(out, field, v) ? nomem(x) : AZ_OK;
}

/* CrewAI gives max_execution_time in seconds. */
static az_err a_seconds(ictx *x, const char *agent, const char *key, json_t *v, json_t *out,
                        const char *field)
{
    if (!json_is_number(v) || json_number_value(v) < 0)
        return agent_type_error(x, agent, key, "a number of seconds");
    char buf[64];
    snprintf(buf, sizeof buf, "%.9gs", json_number_value(v));
    return json_object_set_new(out, field, json_string(buf)) ? nomem(x) : AZ_OK;
}

/* "provider/model" or "model" -> an LlmConfig object; NULL with a note when not mappable. */
static az_err parse_llm(ictx *x, const char *where, const char *s, json_t **out)
{
    *out = NULL;
    const char *slash = strchr(s, '/');
    const char *provider = NULL, *base_url = NULL, *model = s;
    if (!*s) return AZ_OK;
    if (slash) {
        for (size_t i = 0; i < NPREFIXES && !provider; i++)
            if (strlen(llm_prefixes[i].prefix) == (size_t)(slash - s) &&
                strncmp(s, llm_prefixes[i].prefix, (size_t)(slash - s)) == 0) {
                provider = llm_prefixes[i].provider;
                base_url = llm_prefixes[i].base_url;
                model = slash + 1;
            }
        if (!provider) {
            note(x->notes,
                 "%s: llm \"%s\": provider \"%.*s\" is not supported (openai, anthropic, ollama, "
                 "groq, deepseek, mistral, openrouter); the server's default model is used",
                 where, s, (int)(slash - s), s);
            return AZ_OK;
        }
    } else {
        /* A bare model name: CrewAI (litellm) picks the provider from the name. */
        provider = strncmp(s, "claude", 6) == 0 ? "anthropic" : "openai";
    }
    json_t *o = json_pack("{s:s, s:s}", "provider", provider, "model", model);
    if (!o || (base_url && json_object_set_new(o, "base_url", json_string(base_url)))) {
        json_decref(o);
        return nomem(x);
    }
    *out = o;
    return AZ_OK;
}

static az_err a_llm(ictx *x, const char *agent, const char *key, json_t *v, json_t *out,
                    const char *field)
{
    static const char *const llm_keys[] = {"model", "base_url", "temperature", "max_tokens"};
    char where[256];
    snprintf(where, sizeof where, "%s: agent %s", x->agents_name, agent);
    json_t *llm = NULL;
    if (json_is_string(v)) {
        az_err err = parse_llm(x, where, json_string_value(v), &llm);
        if (err) return err;
    } else if (json_is_object(v)) {
        /* The mapping form some projects use: {model, base_url, temperature, max_tokens}. */
        json_t *m = json_object_get(v, "model");
        if (!json_is_string(m)) return agent_type_error(x, agent, "llm.model", "text");
        az_err err = parse_llm(x, where, json_string_value(m), &llm);
        if (err) return err;
        const char *k;
        json_t *item;
        json_object_foreach(v, k, item) {
            size_t i = 0;
            while (i < 4 && strcmp(k, llm_keys[i]) != 0) i++;
            if (i == 4) {
                note(x->notes, "%s: llm.%s is not supported; ignored", where, k);
            } else if (i > 0 && llm && !json_is_null(item)) {
                if ((i == 1 && !json_is_string(item)) || (i == 2 && !json_is_number(item)) ||
                    (i == 3 && !json_is_integer(item))) {
                    json_decref(llm);
                    return agent_type_error(x, agent, k, i == 1 ? "a URL" : "a number");
                }
                if (json_object_set(llm, k, item)) {
                    json_decref(llm);
                    return nomem(x);
                }
            }
        }
    } else {
        return agent_type_error(x, agent, key, "a model name such as openai/gpt-4o");
    }
    if (!llm) return AZ_OK;
    return json_object_set_new(out, field, llm) ? nomem(x) : AZ_OK;
}

static az_err a_tools(ictx *x, const char *agent, const char *key, json_t *v, json_t *out,
                      const char *field)
{
    if (!json_is_array(v)) return agent_type_error(x, agent, key, "a list of tool names");
    json_t *tools = json_array();
    if (!tools || json_object_set_new(out, field, tools)) return nomem(x);
    size_t i;
    json_t *t;
    json_array_foreach(v, i, t) {
        if (!json_is_string(t)) return agent_type_error(x, agent, key, "a list of tool names");
        char name[128];
        snprintf(name, sizeof name, "%s", json_string_value(t));
        size_t n = strlen(name);
        if (n > 2 && strcmp(name + n - 2, "()") == 0) name[n - 2] = '\0'; /* SerperDevTool() */
        const char *mapped = NULL;
        for (size_t j = 0; j < sizeof tool_map / sizeof tool_map[0] && !mapped; j++)
            if (strcmp(name, tool_map[j].crewai) == 0) mapped = tool_map[j].agentz;
        if (!mapped) {
            note(x->notes,
                 "%s: agent %s: tool %s has no AGENTZ equivalent (http_fetch, current_time, "
                 "calculator); dropped",
                 x->agents_name, agent, name);
            continue;
        }
        size_t k;
        json_t *have;
        int dup = 0;
        json_array_foreach(tools, k, have) dup |= strcmp(json_string_value(have), mapped) == 0;
        if (dup) continue; /* two CrewAI tools may map to one AGENTZ tool */
        if (json_array_append_new(tools, json_string(mapped))) return nomem(x);
    }
    return AZ_OK;
}

static const struct {
    const char *key;
    agent_fn fn;      /* NULL: accepted and ignored without a note */
    const char *field; /* the AGENTZ Agent field */
} agent_keys[] = {
    {"role", a_text, "role"},
    {"goal", a_text, "goal"},
    {"backstory", a_text, "backstory"},
    {"llm", a_llm, "llm"},
    {"tools", a_tools, "tools"},
    {"allow_delegation", a_bool, "allow_delegation"},
    {"max_iter", a_count, "max_iter"},
    {"max_rpm", a_count, "max_rpm"},
    {"max_execution_time", a_seconds, "max_execution_time"},
    {"memory", a_bool, "memory"},
    {"verbose", NULL, NULL}, /* a logging switch: nothing to keep */
};

static az_err import_agent(ictx *x, const char *name, json_t *def, json_t **out)
{
    static const char *const required[] = {"role", "goal", "backstory"};
    *out = NULL;
    if (!json_is_object(def))
        return az_fail(x->msg, AZ_ERR_INVALID, "%s: agent %s: expected a mapping of settings",
                       x->agents_name, name);
    if (strlen(name) > AGENT_NAME_MAX)
        return az_fail(x->msg, AZ_ERR_INVALID, "%s: agent %.40s...: name longer than %d characters",
                       x->agents_name, name, AGENT_NAME_MAX);
    for (size_t i = 0; i < 3; i++)
        if (!json_object_get(def, required[i]) || json_is_null(json_object_get(def, required[i])))
            return az_fail(x->msg, AZ_ERR_INVALID, "%s: agent %s: %s is required", x->agents_name,
                           name, required[i]);
    json_t *a = json_pack("{s:s}", "name", name);
    if (!a) return nomem(x);
    const char *key;
    json_t *v;
    json_object_foreach(def, key, v) {
        size_t i = 0, n = sizeof agent_keys / sizeof agent_keys[0];
        while (i < n && strcmp(key, agent_keys[i].key) != 0) i++;
        if (i == n) {
            note(x->notes, "%s: agent %s: %s is not supported by AGENTZ; ignored", x->agents_name,
                 name, key);
            continue;
        }
        if (!agent_keys[i].fn || json_is_null(v)) continue; /* null = CrewAI's default */
        az_err err = agent_keys[i].fn(x, name, key, v, a, agent_keys[i].field);
        if (err) {
            json_decref(a);
            return err;
        }
    }
    *out = a;
    return AZ_OK;
}

/* ---- tasks.yaml ---- */

typedef struct task {
    const char *key;
    char id[STEP_ID_MAX + 1];
    json_t *def;
    json_t *step;
    int async;
    int has_context;
    size_t *ctx; /* indices of earlier tasks */
    size_t nctx;
} task;

typedef struct tasks {
    task *v;
    size_t n;
    json_t *agents; /* the agents.yaml document, for agent references */
} tasks;

typedef az_err (*task_fn)(ictx *x, tasks *ts, size_t i, const char *key, json_t *v,
                          const char *field);

static az_err task_type_error(ictx *x, const task *t, const char *key, const char *want)
{
    return az_fail(x->msg, AZ_ERR_INVALID, "%s: task %s: %s: expected %s", x->tasks_name, t->key,
                   key, want);
}

static az_err t_text(ictx *x, tasks *ts, size_t i, const char *key, json_t *v, const char *field)
{
    task *t = &ts->v[i];
    char buf[64], where[256];
    const char *s = scalar_text(v, buf, sizeof buf);
    if (!s) return task_type_error(x, t, key, "text");
    json_t *c = clean_text(s, 0);
    if (!c || json_object_set_new(t->step, field, c)) return nomem(x);
    snprintf(where, sizeof where, "%s: task %s: %s", x->tasks_name, t->key, key);
    return scan_placeholders(x, where, json_string_value(c));
}

static az_err t_agent(ictx *x, tasks *ts, size_t i, const char *key, json_t *v, const char *field)
{
    task *t = &ts->v[i];
    if (!json_is_string(v)) return task_type_error(x, t, key, "an agent name from agents.yaml");
    if (!json_object_get(ts->agents, json_string_value(v)))
        return az_fail(x->msg, AZ_ERR_INVALID, "%s: task %s: agent \"%s\" is not defined in %s",
                       x->tasks_name, t->key, json_string_value(v), x->agents_name);
    return json_object_set(t->step, field, v) ? nomem(x) : AZ_OK;
}

static az_err t_context(ictx *x, tasks *ts, size_t i, const char *key, json_t *v,
                        const char *field)
{
    task *t = &ts->v[i];
    if (json_is_string(v)) {
        json_t *one = json_pack("[O]", v);
        if (!one) return nomem(x);
        az_err err = t_context(x, ts, i, key, one, field);
        json_decref(one);
        return err;
    }
    if (!json_is_array(v)) return task_type_error(x, t, key, "a list of task names");
    t->has_context = 1;
    t->ctx = calloc(json_array_size(v) + 1, sizeof *t->ctx);
    if (!t->ctx) return nomem(x);
    size_t k;
    json_t *name;
    json_array_foreach(v, k, name) {
        if (!json_is_string(name)) return task_type_error(x, t, key, "a list of task names");
        const char *s = json_string_value(name);
        size_t j = 0;
        while (j < ts->n && strcmp(ts->v[j].key, s) != 0) j++;
        if (j == ts->n)
            return az_fail(x->msg, AZ_ERR_INVALID, "%s: task %s: context names \"%s\", which is "
                           "not a task of this file", x->tasks_name, t->key, s);
        if (j >= i)
            return az_fail(x->msg, AZ_ERR_INVALID, "%s: task %s: context names \"%s\", which "
                           "does not come before it; move it earlier", x->tasks_name, t->key, s);
        int dup = 0;
        for (size_t m = 0; m < t->nctx; m++) dup |= t->ctx[m] == j;
        if (!dup) t->ctx[t->nctx++] = j;
    }
    return AZ_OK;
}

static az_err t_async(ictx *x, tasks *ts, size_t i, const char *key, json_t *v, const char *field)
{
    if (!json_is_boolean(v)) return task_type_error(x, &ts->v[i], key, "true or false");
    ts->v[i].async = json_is_true(v);
    return AZ_OK;
}

static az_err t_unsupported(ictx *x, tasks *ts, size_t i, const char *key, json_t *v,
                            const char *why)
{
    note(x->notes, "%s: task %s: %s is not supported (%s); ignored", x->tasks_name, ts->v[i].key,
         key, why);
    return AZ_OK;
}

static const struct {
    const char *key;
    task_fn fn;
    const char *field; /* the Step field, or the reason given for unsupported keys */
} task_keys[] = {
    {"description", t_text, "description"},
    {"expected_output", t_text, "expected_output"},
    {"agent", t_agent, "agent_id"},
    {"context", t_context, NULL},
    {"async_execution", t_async, NULL},
    {"output_file", t_unsupported, "read the step's output from the run instead"},
    {"output_json", t_unsupported, "no Pydantic models; set output_schema on the step"},
    {"output_pydantic", t_unsupported, "no Pydantic models; set output_schema on the step"},
    {"human_input", t_unsupported, "steps run unattended"},
    {"tools", t_unsupported, "tools belong to the agent"},
    {"callback", t_unsupported, "use workflow webhooks"},
    {"guardrail", t_unsupported, "use output_schema"},
};

/* "Research Task!" -> "research_task_": the Step.id alphabet [a-z0-9_-]{1,63}. */
static void step_id(const char *key, char *out)
{
    size_t n = 0;
    for (const char *p = key; *p && n < STEP_ID_MAX; p++) {
        unsigned char c = (unsigned char)*p;
        out[n++] = isupper(c) ? (char)tolower(c) : (islower(c) || isdigit(c) || c == '-') ? (char)c : '_';
    }
    out[n] = '\0';
}

static az_err array_add_id(json_t *a, const char *id)
{
    size_t i;
    json_t *v;
    json_array_foreach(a, i, v) if (strcmp(json_string_value(v), id) == 0) return AZ_OK;
    return json_array_append_new(a, json_string(id)) ? AZ_ERR_NOMEM : AZ_OK;
}

static az_err set_id_list(ictx *x, json_t *step, const char *field, tasks *ts, const size_t *idx,
                          size_t n)
{
    json_t *a = json_array();
    if (!a || json_object_set_new(step, field, a)) return nomem(x);
    for (size_t i = 0; i < n; i++)
        if (array_add_id(a, ts->v[idx[i]].id)) return nomem(x);
    return AZ_OK;
}

/* CrewAI's sequential process runs async tasks in the background until the next synchronous
 * task, which waits for them and gets their outputs. As a PROCESS_PARALLEL graph: an async task
 * depends on the last synchronous task before it; a synchronous task on that task and every
 * async task since; explicit context adds its tasks (and becomes context_from). */
static az_err parallel_deps(ictx *x, tasks *ts)
{
    size_t *deps = calloc(ts->n + 1, sizeof *deps);
    if (!deps) return nomem(x);
    size_t barrier = SIZE_MAX, pending_from = 0;
    az_err err = AZ_OK;
    for (size_t i = 0; i < ts->n && !err; i++) {
        task *t = &ts->v[i];
        size_t n = 0;
        if (barrier != SIZE_MAX) deps[n++] = barrier;
        if (!t->async)
            for (size_t j = pending_from; j < i; j++)
                if (ts->v[j].async) deps[n++] = j;
        for (size_t j = 0; j < t->nctx; j++) {
            int dup = 0;
            for (size_t m = 0; m < n; m++) dup |= deps[m] == t->ctx[j];
            if (!dup) deps[n++] = t->ctx[j];
        }
        if (n) err = set_id_list(x, t->step, "depends_on", ts, deps, n);
        if (!t->async) {
            barrier = i;
            pending_from = i + 1;
        }
    }
    free(deps);
    return err;
}

static const struct {
    const char *name;
    const char *value;
} processes[] = {
    {"sequential", "PROCESS_SEQUENTIAL"},
    {"parallel", "PROCESS_PARALLEL"},
    {"hierarchical", "PROCESS_HIERARCHICAL"},
};

static az_err import_tasks(ictx *x, tasks *ts, const az_crewai_opts *opts, json_t *wf)
{
    const char *process = NULL;
    if (opts->process) {
        for (size_t i = 0; i < sizeof processes / sizeof processes[0]; i++)
            if (strcmp(opts->process, processes[i].name) == 0) process = processes[i].value;
        if (!process)
            return az_fail(x->msg, AZ_ERR_INVALID,
                           "--process: unknown process \"%s\" (sequential, parallel or "
                           "hierarchical)",
                           opts->process);
    }
    int hierarchical = process && strcmp(process, "PROCESS_HIERARCHICAL") == 0;
    for (size_t i = 0; i < ts->n; i++) {
        task *t = &ts->v[i];
        if (!json_is_object(t->def))
            return az_fail(x->msg, AZ_ERR_INVALID, "%s: task %s: expected a mapping of settings",
                           x->tasks_name, t->key);
        static const char *const required[] = {"description", "expected_output"};
        for (size_t r = 0; r < 2; r++)
            if (!json_object_get(t->def, required[r]) ||
                json_is_null(json_object_get(t->def, required[r])))
                return az_fail(x->msg, AZ_ERR_INVALID, "%s: task %s: %s is required",
                               x->tasks_name, t->key, required[r]);
        const char *key;
        json_t *v;
        json_object_foreach(t->def, key, v) {
            size_t k = 0, n = sizeof task_keys / sizeof task_keys[0];
            while (k < n && strcmp(key, task_keys[k].key) != 0) k++;
            if (k == n) {
                note(x->notes, "%s: task %s: %s is not supported by AGENTZ; ignored",
                     x->tasks_name, t->key, key);
                continue;
            }
            if (json_is_null(v)) continue;
            az_err err = task_keys[k].fn(x, ts, i, key, v, task_keys[k].field);
            if (err) return err;
        }
        if (!json_object_get(t->step, "agent_id") && !hierarchical)
            return az_fail(x->msg, AZ_ERR_INVALID,
                           "%s: task %s: agent is required (or import with --process "
                           "hierarchical)",
                           x->tasks_name, t->key);
        if (t->has_context && t->nctx == 0)
            note(x->notes, "%s: task %s: an empty context (no context at all) cannot be "
                 "expressed; the step gets the default context", x->tasks_name, t->key);
    }

    /* Sequential is exact unless a task runs async or takes context other than the previous
     * task's output. */
    int need_parallel = 0;
    for (size_t i = 0; i < ts->n; i++) {
        const task *t = &ts->v[i];
        need_parallel |= t->async;
        need_parallel |= t->nctx > 1 || (t->nctx == 1 && t->ctx[0] + 1 != i);
    }
    if (!process) process = need_parallel ? "PROCESS_PARALLEL" : "PROCESS_SEQUENTIAL";
    else if (need_parallel && strcmp(process, "PROCESS_PARALLEL") != 0)
        note(x->notes, "%s: async_execution and context naming earlier tasks need --process "
             "parallel; with %s the steps run one after the other (context is kept as "
             "context_from)", x->tasks_name, opts->process);
    if (json_object_set_new(wf, "process", json_string(process))) return nomem(x);
    for (size_t i = 0; i < ts->n; i++) {
        task *t = &ts->v[i];
        if (t->nctx && set_id_list(x, t->step, "context_from", ts, t->ctx, t->nctx))
            return nomem(x);
        if (t->async && strcmp(process, "PROCESS_PARALLEL") != 0)
            note(x->notes, "%s: task %s: async_execution is ignored with process %s",
                 x->tasks_name, t->key, process + 8);
    }
    if (strcmp(process, "PROCESS_PARALLEL") == 0) return parallel_deps(x, ts);
    return AZ_OK;
}

/* The manager CrewAI creates for Process.hierarchical when given manager_llm. */
static az_err manager_agent(ictx *x, const az_crewai_opts *opts, json_t *agents_doc, json_t *wf,
                            json_t *agents)
{
    if (!opts->manager_llm || !*opts->manager_llm)
        return az_fail(x->msg, AZ_ERR_INVALID,
                       "--process hierarchical needs --manager-llm MODEL (the manager agent's "
                       "model)");
    char name[AGENT_NAME_MAX + 1];
    snprintf(name, sizeof name, "%.120s-manager", opts->name);
    if (json_object_get(agents_doc, name))
        return az_fail(x->msg, AZ_ERR_INVALID, "%s: agent %s: the name is needed for the manager "
                       "agent; rename it", x->agents_name, name);
    json_t *llm = NULL;
    az_err err = parse_llm(x, "--manager-llm", opts->manager_llm, &llm);
    if (err) return err;
    if (!llm)
        return az_fail(x->msg, AZ_ERR_INVALID, "--manager-llm: cannot use \"%s\"",
                       opts->manager_llm);
    json_t *m = json_pack(
        "{s:s, s:s, s:s, s:s, s:o, s:b}", "name", name, "role", "Crew Manager", "goal",
        "Manage the team to complete the task in the best way possible.", "backstory",
        "You are a seasoned manager with a knack for getting the best out of your team. You are "
        "known for your ability to delegate work to the right people and to ask the right "
        "questions to get the best out of your team.",
        "llm", llm, "allow_delegation", 1);
    if (!m || json_array_append_new(agents, m) ||
        json_object_set_new(wf, "manager_agent_id", json_string(name)))
        return nomem(x);
    return AZ_OK;
}

az_err az_crewai_import(const char *agents_text, size_t agents_len, const char *agents_name,
                        const char *tasks_text, size_t tasks_len, const char *tasks_name,
                        const az_crewai_opts *opts, az_arena *ar, Agentz__V1__Template **out,
                        az_crewai_notes *notes, char *msg)
{
    *out = NULL;
    ictx x = {agents_name, tasks_name, notes, json_array(), msg};
    json_t *adoc = NULL, *tdoc = NULL, *tmpl = NULL;
    tasks ts = {0};
    az_err err = AZ_OK;
    if (!x.inputs) {
        err = nomem(&x);
        goto done;
    }
    if (!opts->name || !*opts->name) {
        err = az_fail(msg, AZ_ERR_INVALID, "--name: the workflow needs a name");
        goto done;
    }
    if ((err = az_yaml_parse(agents_text, agents_len, agents_name, NULL, &adoc, msg)) ||
        (err = az_yaml_parse(tasks_text, tasks_len, tasks_name, NULL, &tdoc, msg)))
        goto done;
    if (!json_is_object(adoc) || json_object_size(adoc) == 0) {
        err = az_fail(msg, AZ_ERR_INVALID, "%s: expected a mapping of agent names to agents",
                      agents_name);
        goto done;
    }
    if (!json_is_object(tdoc) || json_object_size(tdoc) == 0) {
        err = az_fail(msg, AZ_ERR_INVALID, "%s: expected a mapping of task names to tasks",
                      tasks_name);
        goto done;
    }

    json_t *agents = json_array(), *wf = json_object();
    tmpl = json_pack("{s:s, s:o, s:o}", "name", opts->name, "agents", agents, "workflow", wf);
    if (!tmpl) {
        err = nomem(&x);
        goto done;
    }
    char desc[512];
    snprintf(desc, sizeof desc, "Imported from the CrewAI project %.400s",
             opts->source ? opts->source : opts->name);
    if (json_object_set_new(wf, "name", json_string(opts->name)) ||
        json_object_set_new(wf, "description", json_string(desc)) ||
        json_object_set_new(tmpl, "description", json_string(desc))) {
        err = nomem(&x);
        goto done;
    }

    /* Tasks first, so inputs are listed in the order a reader meets them in the steps. */
    ts.n = json_object_size(tdoc);
    ts.agents = adoc;
    if (!(ts.v = calloc(ts.n, sizeof *ts.v))) {
        err = nomem(&x);
        goto done;
    }
    json_t *steps = json_array();
    if (!steps || json_object_set_new(wf, "steps", steps)) {
        err = nomem(&x);
        goto done;
    }
    size_t i = 0;
    const char *key;
    json_t *v;
    json_object_foreach(tdoc, key, v) {
        task *t = &ts.v[i++];
        t->key = key;
        t->def = v;
        step_id(key, t->id);
        if (!*t->id) {
            err = az_fail(msg, AZ_ERR_INVALID, "%s: task \"%s\": the name gives an empty step id",
                          tasks_name, key);
            goto done;
        }
        for (size_t j = 0; j + 1 < i; j++)
            if (strcmp(ts.v[j].id, t->id) == 0) {
                err = az_fail(msg, AZ_ERR_INVALID, "%s: tasks %s and %s both become step id \"%s\"",
                              tasks_name, ts.v[j].key, key, t->id);
                goto done;
            }
        if (!(t->step = json_pack("{s:s}", "id", t->id)) || json_array_append(steps, t->step)) {
            err = nomem(&x);
            goto done;
        }
    }
    if ((err = import_tasks(&x, &ts, opts, wf))) goto done;

    json_object_foreach(adoc, key, v) {
        json_t *a;
        if ((err = import_agent(&x, key, v, &a))) goto done;
        if (json_array_append_new(agents, a)) {
            err = nomem(&x);
            goto done;
        }
    }
    const char *process = json_string_value(json_object_get(wf, "process"));
    if (strcmp(process, "PROCESS_HIERARCHICAL") == 0 &&
        (err = manager_agent(&x, opts, adoc, wf, agents)))
        goto done;
    if (json_object_set(wf, "inputs", x.inputs)) {
        err = nomem(&x);
        goto done;
    }
    if (notes->oom) {
        err = nomem(&x);
        goto done;
    }

    char *text = json_dumps(tmpl, JSON_COMPACT);
    if (!text) {
        err = nomem(&x);
        goto done;
    }
    ProtobufCMessage *m = NULL;
    char why[AZ_MSG_MAX];
    err = az_pbjson_decode(&agentz__v1__template__descriptor, text, strlen(text),
                           az_arena_allocator(ar), &m, why);
    free(text);
    if (err) {
        err = az_fail(msg, err == AZ_ERR_NOMEM ? err : AZ_ERR_INTERNAL,
                      "cannot build the template: %s", why);
        goto done;
    }
    *out = (Agentz__V1__Template *)m;
done:
    for (size_t k = 0; k < ts.n; k++) {
        json_decref(ts.v[k].step);
        free(ts.v[k].ctx);
    }
    free(ts.v);
    json_decref(tmpl);
    json_decref(adoc);
    json_decref(tdoc);
    json_decref(x.inputs);
    return err;
}

/* ---- keys ---- */

/* FNV-1a in two 64-bit lanes: not cryptographic, only a stable name for "the same import". */
typedef struct fnv {
    uint64_t a, b;
} fnv;

static void fnv_add(fnv *h, const void *data, size_t n)
{
    const unsigned char *p = data;
    for (size_t i = 0; i < n; i++) {
        h->a = (h->a ^ p[i]) * 0x100000001b3ULL;
        h->b = (h->b ^ p[i] ^ 0x5a) * 0x100000001b3ULL;
    }
    /* A separator, so ("ab","c") and ("a","bc") differ. */
    h->a = (h->a ^ 0xff) * 0x100000001b3ULL;
    h->b = (h->b ^ 0xa5) * 0x100000001b3ULL;
}

static void fnv_str(fnv *h, const char *s) { fnv_add(h, s ? s : "", s ? strlen(s) : 0); }

static fnv fnv_init(void) { return (fnv){0xcbf29ce484222325ULL, 0x84222325cbf29ce4ULL}; }

void az_crewai_key(const char *agents_text, size_t agents_len, const char *tasks_text,
                   size_t tasks_len, const az_crewai_opts *opts, const char *seed, char out[33])
{
    fnv h = fnv_init();
    fnv_add(&h, agents_text, agents_len);
    fnv_add(&h, tasks_text, tasks_len);
    fnv_str(&h, opts->name);
    fnv_str(&h, opts->process);
    fnv_str(&h, opts->manager_llm);
    fnv_str(&h, seed);
    snprintf(out, 33, "%016llx%016llx", (unsigned long long)h.a, (unsigned long long)h.b);
}

void az_crewai_request_id(const char *key, const char *kind, const char *name,
                          char out[AZ_CREWAI_REQUEST_ID_SIZE])
{
    fnv h = fnv_init();
    fnv_str(&h, key);
    fnv_str(&h, kind);
    fnv_str(&h, name);
    snprintf(out, AZ_CREWAI_REQUEST_ID_SIZE, "crewai-%016llx%016llx", (unsigned long long)h.a,
             (unsigned long long)h.b);
}

/* ---- finding the files ---- */

static int is_file(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

/* Sets *agents and *tasks when both exist in d (with .yaml or .yml). */
static az_err pair_in(const char *d, char **agents, char **tasks, int *found)
{
    static const char *const exts[] = {"yaml", "yml"};
    *found = 0;
    for (size_t a = 0; a < 2; a++)
        for (size_t t = 0; t < 2; t++) {
            char *ap = NULL, *tp = NULL;
            if (asprintf(&ap, "%s/agents.%s", d, exts[a]) < 0) return AZ_ERR_NOMEM;
            if (asprintf(&tp, "%s/tasks.%s", d, exts[t]) < 0) {
                free(ap);
                return AZ_ERR_NOMEM;
            }
            if (is_file(ap) && is_file(tp)) {
                *agents = ap;
                *tasks = tp;
                *found = 1;
                return AZ_OK;
            }
            free(ap);
            free(tp);
        }
    return AZ_OK;
}

az_err az_crewai_find(const char *dir, char **agents, char **tasks, char *msg)
{
    *agents = *tasks = NULL;
    char *cfg = NULL, *pattern = NULL;
    int found = 0;
    az_err err = AZ_OK;
    if (asprintf(&cfg, "%s/config", dir) < 0) return az_fail(msg, AZ_ERR_NOMEM, "out of memory");
    if ((err = pair_in(cfg, agents, tasks, &found)) || found ||
        (err = pair_in(dir, agents, tasks, &found)) || found)
        goto done;
    if (asprintf(&pattern, "%s/src/*/config", dir) < 0) {
        pattern = NULL;
        err = AZ_ERR_NOMEM;
        goto done;
    }
    glob_t g;
    if (glob(pattern, GLOB_ONLYDIR, NULL, &g) == 0) {
        for (size_t i = 0; i < g.gl_pathc && !err; i++) {
            char *a = NULL, *t = NULL;
            int here = 0;
            if ((err = pair_in(g.gl_pathv[i], &a, &t, &here)) || !here) continue;
            if (found) {
                err = az_fail(msg, AZ_ERR_INVALID,
                              "%s: several packages under src/ have config/agents.yaml (%s and "
                              "%s); give the package directory",
                              dir, *agents, a);
                free(a);
                free(t);
                break;
            }
            *agents = a;
            *tasks = t;
            found = 1;
        }
    }
    globfree(&g);
done:
    free(cfg);
    free(pattern);
    if (err == AZ_ERR_NOMEM) az_fail(msg, err, "out of memory");
    if (!err && !found)
        err = az_fail(msg, AZ_ERR_NOT_FOUND,
                      "no agents.yaml and tasks.yaml in %s/config, %s or %s/src/*/config", dir,
                      dir, dir);
    if (err) {
        free(*agents);
        free(*tasks);
        *agents = *tasks = NULL;
    }
    return err;
}

/* ---- export ---- */

static const Agentz__V1__Agent *agent_for(Agentz__V1__Agent *const *agents, size_t n,
                                          const char *ref)
{
    for (size_t i = 0; i < n; i++)
        if ((*agents[i]->id && strcmp(agents[i]->id, ref) == 0) ||
            (!*agents[i]->id && strcmp(agents[i]->name, ref) == 0))
            return agents[i];
    return NULL;
}

/* The agents.yaml key of agent a (its name; agents without one get agent_N). */
static void agent_key(Agentz__V1__Agent *const *agents, size_t n, const Agentz__V1__Agent *a,
                      char *out, size_t size)
{
    if (*a->name) {
        snprintf(out, size, "%s", a->name);
        return;
    }
    for (size_t i = 0; i < n; i++)
        if (agents[i] == a) snprintf(out, size, "agent_%zu", i + 1);
}

static json_t *llm_string(const Agentz__V1__Agent *a, az_crewai_notes *notes)
{
    const Agentz__V1__LlmConfig *l = a->llm;
    if (!l || !*l->model) return NULL;
    const char *prefix = NULL;
    for (size_t i = 0; i < NPREFIXES && !prefix; i++) {
        const char *bu = llm_prefixes[i].base_url ? llm_prefixes[i].base_url : "";
        if (strcmp(l->provider, llm_prefixes[i].provider) == 0 && strcmp(l->base_url, bu) == 0)
            prefix = llm_prefixes[i].prefix;
    }
    if (!prefix) {
        prefix = strcmp(l->provider, "anthropic") == 0 ? "anthropic" : "openai";
        note(notes, "agent %s: llm.base_url %s cannot be written in agents.yaml; dropped",
             a->name, l->base_url);
    }
    if (l->temperature || l->max_tokens || l->timeout || *l->api_key_secret)
        note(notes, "agent %s: llm temperature, max_tokens, timeout and api_key_secret are not "
             "part of agents.yaml; set them in crew.py", a->name);
    char *s = NULL;
    if (asprintf(&s, "%s/%s", prefix, l->model) < 0) return NULL;
    json_t *v = json_string(s);
    free(s);
    return v;
}

static int set_or_fail(json_t *o, const char *k, json_t *v)
{
    return !v || json_object_set_new(o, k, v);
}

static json_t *export_agent(const Agentz__V1__Agent *a, az_crewai_notes *notes)
{
    json_t *o = json_object();
    if (!o) return NULL;
    int bad = set_or_fail(o, "role", json_string(a->role)) ||
              set_or_fail(o, "goal", json_string(a->goal)) ||
              set_or_fail(o, "backstory", json_string(a->backstory));
    if (!bad && a->llm && *a->llm->model) bad = set_or_fail(o, "llm", llm_string(a, notes));
    if (!bad && a->n_tools) {
        json_t *tools = json_array();
        bad = set_or_fail(o, "tools", tools);
        for (size_t i = 0; !bad && i < a->n_tools; i++)
            bad = json_array_append_new(tools, json_string(a->tools[i]));
    }
    if (!bad && a->allow_delegation) bad = set_or_fail(o, "allow_delegation", json_true());
    if (!bad && a->max_iter) bad = set_or_fail(o, "max_iter", json_integer(a->max_iter));
    if (!bad && a->max_rpm) bad = set_or_fail(o, "max_rpm", json_integer(a->max_rpm));
    if (!bad && a->max_execution_time) {
        /* CrewAI takes whole seconds; round up so the limit never gets tighter. */
        int64_t s = a->max_execution_time->seconds + (a->max_execution_time->nanos > 0);
        bad = set_or_fail(o, "max_execution_time", json_integer(s));
    }
    if (!bad && a->memory) bad = set_or_fail(o, "memory", json_true());
    if (a->disabled) note(notes, "agent %s: disabled has no CrewAI equivalent; dropped", a->name);
    if (a->n_labels) note(notes, "agent %s: labels have no CrewAI equivalent; dropped", a->name);
    if (bad) {
        json_decref(o);
        return NULL;
    }
    return o;
}

az_err az_crewai_export(const Agentz__V1__Workflow *wf, Agentz__V1__Agent *const *agents,
                        size_t nagents, char **agents_yaml, char **tasks_yaml,
                        az_crewai_notes *notes, char *msg)
{
    *agents_yaml = *tasks_yaml = NULL;
    json_t *adoc = json_object(), *tdoc = json_object();
    az_err err = AZ_OK;
    if (!adoc || !tdoc) {
        err = az_fail(msg, AZ_ERR_NOMEM, "out of memory");
        goto done;
    }
    if (wf->process == AGENTZ__V1__PROCESS__PROCESS_HIERARCHICAL)
        note(notes, "workflow %s: hierarchical process: set process=Process.hierarchical and "
             "manager_llm in crew.py (the manager agent is not written)", wf->name);
    if (wf->process == AGENTZ__V1__PROCESS__PROCESS_PARALLEL)
        note(notes, "workflow %s: parallel process: CrewAI runs the tasks in file order; mark "
             "tasks that may run concurrently with async_execution: true", wf->name);
    if (wf->n_webhook_urls || wf->n_labels || wf->failure_policy)
        note(notes, "workflow %s: webhooks, labels and failure_policy have no CrewAI "
             "equivalent; dropped", wf->name);
    for (size_t i = 0; i < wf->n_steps; i++) {
        const Agentz__V1__Step *s = wf->steps[i];
        json_t *t = json_object();
        if (set_or_fail(tdoc, s->id, t) ||
            set_or_fail(t, "description", json_string(s->description)) ||
            set_or_fail(t, "expected_output", json_string(s->expected_output))) {
            err = az_fail(msg, AZ_ERR_NOMEM, "out of memory");
            goto done;
        }
        if (*s->agent_id) {
            const Agentz__V1__Agent *a = agent_for(agents, nagents, s->agent_id);
            if (!a) {
                err = az_fail(msg, AZ_ERR_INVALID, "step %s: agent %s was not given", s->id,
                              s->agent_id);
                goto done;
            }
            char key[160];
            agent_key(agents, nagents, a, key, sizeof key);
            if (!json_object_get(adoc, key)) {
                if (set_or_fail(adoc, key, export_agent(a, notes))) {
                    err = az_fail(msg, AZ_ERR_NOMEM, "out of memory");
                    goto done;
                }
            }
            if (set_or_fail(t, "agent", json_string(key))) {
                err = az_fail(msg, AZ_ERR_NOMEM, "out of memory");
                goto done;
            }
        }
        /* context_from is CrewAI's context. Without it a parallel step gets the outputs of its
         * depends_on, which is CrewAI's default only when that is just the previous task. */
        char **ctx = s->n_context_from ? s->context_from : s->depends_on;
        size_t nctx = s->n_context_from;
        if (!nctx && wf->process == AGENTZ__V1__PROCESS__PROCESS_PARALLEL &&
            !(s->n_depends_on == 1 && i > 0 && strcmp(s->depends_on[0], wf->steps[i - 1]->id) == 0))
            nctx = s->n_depends_on;
        if (nctx) {
            json_t *c = json_array();
            if (set_or_fail(t, "context", c)) {
                err = az_fail(msg, AZ_ERR_NOMEM, "out of memory");
                goto done;
            }
            for (size_t k = 0; k < nctx; k++)
                if (json_array_append_new(c, json_string(ctx[k]))) {
                    err = az_fail(msg, AZ_ERR_NOMEM, "out of memory");
                    goto done;
                }
        }
        if (s->retry_policy || s->timeout || s->output_schema)
            note(notes, "step %s: retry_policy, timeout and output_schema have no tasks.yaml "
                 "equivalent; dropped", s->id);
    }
    if (notes->oom) {
        err = az_fail(msg, AZ_ERR_NOMEM, "out of memory");
        goto done;
    }
    if ((err = az_yaml_emit(adoc, agents_yaml, msg)) || (err = az_yaml_emit(tdoc, tasks_yaml, msg))) {
        free(*agents_yaml);
        *agents_yaml = NULL;
    }
done:
    json_decref(adoc);
    json_decref(tdoc);
    return err;
}

static az_err write_file(const char *path, const char *text, int force, char *msg)
{
    FILE *f = fopen(path, force ? "w" : "wx");
    if (!f) {
        if (errno == EEXIST)
            return az_fail(msg, AZ_ERR_EXISTS, "%s already exists (use --force to overwrite)", path);
        return az_fail(msg, AZ_ERR_IO, "cannot create %s: %s", path, strerror(errno));
    }
    int bad = fputs(text, f) < 0;
    bad |= fclose(f) != 0;
    if (bad) return az_fail(msg, AZ_ERR_IO, "cannot write %s: %s", path, strerror(errno));
    return AZ_OK;
}

az_err az_crewai_write(const char *dir, const char *agents_yaml, const char *tasks_yaml, int force,
                       char *msg)
{
    char *cfg = NULL, *ap = NULL, *tp = NULL;
    az_err err = AZ_OK;
    if (asprintf(&cfg, "%s/config", dir) < 0 || asprintf(&ap, "%s/agents.yaml", cfg) < 0 ||
        asprintf(&tp, "%s/tasks.yaml", cfg) < 0) {
        err = az_fail(msg, AZ_ERR_NOMEM, "out of memory");
        goto done;
    }
    const char *dirs[] = {dir, cfg};
    for (size_t i = 0; i < 2; i++)
        if (mkdir(dirs[i], 0777) != 0 && errno != EEXIST) {
            err = az_fail(msg, AZ_ERR_IO, "cannot create %s: %s", dirs[i], strerror(errno));
            goto done;
        }
    /* Check both before writing either, so a refusal leaves nothing half-written. */
    if (!force)
        for (size_t i = 0; i < 2; i++) {
            const char *p = i ? tp : ap;
            if (access(p, F_OK) == 0) {
                err = az_fail(msg, AZ_ERR_EXISTS, "%s already exists (use --force to overwrite)", p);
                goto done;
            }
        }
    if (!(err = write_file(ap, agents_yaml, force, msg))) err = write_file(tp, tasks_yaml, force, msg);
done:
    free(cfg);
    free(ap);
    free(tp);
    return err;
}
