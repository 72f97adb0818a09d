/* `agentz tasks ...`: the TaskService commands. create takes the task as flags (one row per
 * flag in a setter table, like agents) or as a JSON/YAML file; create-batch sends a file of
 * tasks as one CreateTasks call; list pages like agents list. */
#include <errno.h>
#include <jansson.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "agentz/v1/task.pb-c.h"
#include "cli.h"
#include "core/arena.h"
#include "core/pbjson.h"
#include "table.h"
#include "yamljson.h"

#define SERVICE "/agentz.v1.TaskService/"
#define STATUS_PREFIX "TASK_STATUS_"

/* ---- create ---- */

enum {
    C_AGENT,
    C_DESCRIPTION,
    C_EXPECTED_OUTPUT,
    C_DEPENDS_ON,
    C_CONTEXT,
    C_OUTPUT_SCHEMA,
    C_MAX_ATTEMPTS,
    C_INITIAL_BACKOFF,
    C_BACKOFF_COEFFICIENT,
    C_MAXIMUM_BACKOFF,
    C_NON_RETRYABLE,
    C_ATTEMPT_TIMEOUT,
    C_WEBHOOK,
    C_LABEL,
    C__FIELDS,
    C_FILE = C__FIELDS,
    C__COUNT
};

static const az_flag create_flags[C__COUNT] = {
    [C_AGENT] = {"agent", 0, AZ_FLAG_VALUE, "ID", "the agent that does the work", "agent_id"},
    [C_DESCRIPTION] = {"description", 0, AZ_FLAG_VALUE, "TEXT", "what to do", "description"},
    [C_EXPECTED_OUTPUT] = {"expected-output", 0, AZ_FLAG_VALUE, "TEXT",
                           "what the result should look like", "expected_output"},
    [C_DEPENDS_ON] = {"depends-on", 0, AZ_FLAG_LIST, "TASK_ID",
                      "a task that must succeed first (repeatable)", "depends_on"},
    [C_CONTEXT] = {"context", 0, AZ_FLAG_LIST, "TEXT", "extra context for the agent (repeatable)",
                   "context"},
    [C_OUTPUT_SCHEMA] = {"output-schema", 0, AZ_FLAG_VALUE, "FILE",
                         "JSON Schema (JSON or YAML file) the answer must match", "output_schema"},
    [C_MAX_ATTEMPTS] = {"max-attempts", 0, AZ_FLAG_VALUE, "N",
                        "attempts including the first; 0 = unlimited, 1 = no retries",
                        "retry_policy.max_attempts"},
    [C_INITIAL_BACKOFF] = {"initial-backoff", 0, AZ_FLAG_VALUE, "DURATION",
                           "wait before the first retry (default 1s)", "retry_policy.initial_backoff"},
    [C_BACKOFF_COEFFICIENT] = {"backoff-coefficient", 0, AZ_FLAG_VALUE, "X",
                               "multiplier per retry, >= 1 (default 2)",
                               "retry_policy.backoff_coefficient"},
    [C_MAXIMUM_BACKOFF] = {"maximum-backoff", 0, AZ_FLAG_VALUE, "DURATION",
                           "cap on the wait (default 100 x initial)", "retry_policy.maximum_backoff"},
    [C_NON_RETRYABLE] = {"non-retryable", 0, AZ_FLAG_LIST, "TYPE",
                         "error type never retried, e.g. output_schema_mismatch (repeatable)",
                         "retry_policy.non_retryable_errors"},
    [C_ATTEMPT_TIMEOUT] = {"timeout", 0, AZ_FLAG_VALUE, "DURATION",
                           "deadline of one attempt (default 10m); --timeout is the call's",
                           "timeout"},
    [C_WEBHOOK] = {"webhook", 0, AZ_FLAG_LIST, "URL",
                   "POSTed the task when it finishes (repeatable)", "webhook_urls"},
    [C_LABEL] = {"label", 0, AZ_FLAG_LIST, "KEY=VALUE", "a label (repeatable)", "labels"},
    [C_FILE] = {"file", 'f', AZ_FLAG_VALUE, "FILE",
                "the task as JSON or YAML ('-' = stdin); flags override its fields", NULL},
};

typedef az_err (*set_fn)(Agentz__V1__Task *t, const char *flag, const az_flag_value *v,
                         az_arena *ar, char *msg);

static Agentz__V1__RetryPolicy *retry(Agentz__V1__Task *t, az_arena *ar)
{
    if (!t->retry_policy && (t->retry_policy = az_arena_alloc(ar, sizeof *t->retry_policy)))
        agentz__v1__retry_policy__init(t->retry_policy);
    return t->retry_policy;
}

static Google__Protobuf__Duration *duration(const char *flag, const char *s, az_arena *ar,
                                            az_err *err, char *msg)
{
    Google__Protobuf__Duration *d = az_arena_alloc(ar, sizeof *d);
    if (!d) {
        *err = az_fail(msg, AZ_ERR_NOMEM, "%s: out of memory", flag);
        return NULL;
    }
    google__protobuf__duration__init(d);
    *err = az_args_duration(flag, s, &d->seconds, &d->nanos, msg);
    return *err ? NULL : d;
}

/* Copies a list flag into a repeated string field. */
static az_err strings(const char *flag, const az_flag_value *v, char ***out, size_t *n,
                      az_arena *ar, char *msg)
{
    if (!(*out = az_arena_alloc(ar, (size_t)v->count * sizeof **out + 1)))
        return az_fail(msg, AZ_ERR_NOMEM, "%s: out of memory", flag);
    *n = 0;
    for (int i = 0; i < v->count; i++) {
        if (!*v->list[i]) return az_fail(msg, AZ_ERR_INVALID, "%s: empty value", flag);
        (*out)[(*n)++] = (char *)v->list[i];
    }
    return AZ_OK;
}

static az_err s_agent(Agentz__V1__Task *t, const char *f, const az_flag_value *v, az_arena *ar, char *msg)
{
    t->agent_id = (char *)v->value;
    return AZ_OK;
}

static az_err s_description(Agentz__V1__Task *t, const char *f, const az_flag_value *v, az_arena *ar, char *msg)
{
    t->description = (char *)v->value;
    return AZ_OK;
}

static az_err s_expected(Agentz__V1__Task *t, const char *f, const az_flag_value *v, az_arena *ar, char *msg)
{
    t->expected_output = (char *)v->value;
    return AZ_OK;
}

static az_err s_depends(Agentz__V1__Task *t, const char *f, const az_flag_value *v, az_arena *ar, char *msg)
{
    return strings(f, v, &t->depends_on, &t->n_depends_on, ar, msg);
}

static az_err s_context(Agentz__V1__Task *t, const char *f, const az_flag_value *v, az_arena *ar, char *msg)
{
    return strings(f, v, &t->context, &t->n_context, ar, msg);
}

static az_err s_webhook(Agentz__V1__Task *t, const char *f, const az_flag_value *v, az_arena *ar, char *msg)
{
    return strings(f, v, &t->webhook_urls, &t->n_webhook_urls, ar, msg);
}

static az_err s_non_retryable(Agentz__V1__Task *t, const char *f, const az_flag_value *v, az_arena *ar, char *msg)
{
    Agentz__V1__RetryPolicy *r = retry(t, ar);
    if (!r) return az_fail(msg, AZ_ERR_NOMEM, "%s: out of memory", f);
    return strings(f, v, &r->non_retryable_errors, &r->n_non_retryable_errors, ar, msg);
}

/* The schema file is JSON or YAML; pbjson turns it into a google.protobuf.Struct. */
static az_err s_schema(Agentz__V1__Task *t, const char *f, const az_flag_value *v, az_arena *ar, char *msg)
{
    json_t *doc = NULL;
    char why[AZ_MSG_MAX];
    az_err err = az_yaml_read_file(v->value, NULL, &doc, why);
    if (err) return az_fail(msg, err, "%s: %s", f, why);
    if (!json_is_object(doc)) {
        json_decref(doc);
        return az_fail(msg, AZ_ERR_INVALID, "%s: %s: expected a JSON object", f, v->value);
    }
    char *text = json_dumps(doc, JSON_COMPACT);
    json_decref(doc);
    if (!text) return az_fail(msg, AZ_ERR_NOMEM, "%s: out of memory", f);
    ProtobufCMessage *m = NULL;
    err = az_pbjson_decode(&google__protobuf__struct__descriptor, text, strlen(text),
                           az_arena_allocator(ar), &m, why);
    free(text);
    if (err) return az_fail(msg, err, "%s: %s: %s", f, v->value, why);
    t->output_schema = (Google__Protobuf__Struct *)m;
    return AZ_OK;
}

static az_err s_max_attempts(Agentz__V1__Task *t, const char *f, const az_flag_value *v, az_arena *ar, char *msg)
{
    Agentz__V1__RetryPolicy *r = retry(t, ar);
    if (!r) return az_fail(msg, AZ_ERR_NOMEM, "%s: out of memory", f);
    return az_args_int32(f, v->value, 0, INT32_MAX, &r->max_attempts, msg);
}

static az_err s_initial(Agentz__V1__Task *t, const char *f, const az_flag_value *v, az_arena *ar, char *msg)
{
    az_err err;
    Agentz__V1__RetryPolicy *r = retry(t, ar);
    if (!r) return az_fail(msg, AZ_ERR_NOMEM, "%s: out of memory", f);
    r->initial_backoff = duration(f, v->value, ar, &err, msg);
    return err;
}

static az_err s_maximum(Agentz__V1__Task *t, const char *f, const az_flag_value *v, az_arena *ar, char *msg)
{
    az_err err;
    Agentz__V1__RetryPolicy *r = retry(t, ar);
    if (!r) return az_fail(msg, AZ_ERR_NOMEM, "%s: out of memory", f);
    r->maximum_backoff = duration(f, v->value, ar, &err, msg);
    return err;
}

static az_err s_coefficient(Agentz__V1__Task *t, const char *f, const az_flag_value *v, az_arena *ar, char *msg)
{
    Agentz__V1__RetryPolicy *r = retry(t, ar);
    if (!r) return az_fail(msg, AZ_ERR_NOMEM, "%s: out of memory", f);
    az_err err = az_args_double(f, v->value, &r->backoff_coefficient, msg);
    if (!err && r->backoff_coefficient < 1)
        return az_fail(msg, AZ_ERR_INVALID, "%s: must be at least 1", f);
    return err;
}

static az_err s_timeout(Agentz__V1__Task *t, const char *f, const az_flag_value *v, az_arena *ar, char *msg)
{
    az_err err;
    t->timeout = duration(f, v->value, ar, &err, msg);
    return err;
}

/* Labels given twice keep the last value, as a map would. */
static az_err s_labels(Agentz__V1__Task *t, const char *f, const az_flag_value *v, az_arena *ar, char *msg)
{
    if (!(t->labels = az_arena_alloc(ar, (size_t)v->count * sizeof *t->labels + 1)))
        return az_fail(msg, AZ_ERR_NOMEM, "%s: out of memory", f);
    t->n_labels = 0;
    for (int i = 0; i < v->count; i++) {
        size_t klen;
        const char *value;
        az_err err = az_args_kv(f, v->list[i], &klen, &value, msg);
        if (err) return err;
        char *key = az_arena_strndup(ar, v->list[i], klen);
        if (!key) return az_fail(msg, AZ_ERR_NOMEM, "%s: out of memory", f);
        Agentz__V1__Task__LabelsEntry *e = NULL;
        for (size_t j = 0; j < t->n_labels && !e; j++)
            if (strcmp(t->labels[j]->key, key) == 0) e = t->labels[j];
        if (!e) {
            if (!(e = az_arena_alloc(ar, sizeof *e)))
                return az_fail(msg, AZ_ERR_NOMEM, "%s: out of memory", f);
            agentz__v1__task__labels_entry__init(e);
            e->key = key;
            t->labels[t->n_labels++] = e;
        }
        e->value = (char *)value;
    }
    return AZ_OK;
}

static const set_fn setters[C__FIELDS] = {
    [C_AGENT] = s_agent,
    [C_DESCRIPTION] = s_description,
    [C_EXPECTED_OUTPUT] = s_expected,
    [C_DEPENDS_ON] = s_depends,
    [C_CONTEXT] = s_context,
    [C_OUTPUT_SCHEMA] = s_schema,
    [C_MAX_ATTEMPTS] = s_max_attempts,
    [C_INITIAL_BACKOFF] = s_initial,
    [C_BACKOFF_COEFFICIENT] = s_coefficient,
    [C_MAXIMUM_BACKOFF] = s_maximum,
    [C_NON_RETRYABLE] = s_non_retryable,
    [C_ATTEMPT_TIMEOUT] = s_timeout,
    [C_WEBHOOK] = s_webhook,
    [C_LABEL] = s_labels,
};

static int run_create(az_cli *cli, const az_flag_value *v, const char *const *args, size_t nargs)
{
    static const int required[] = {C_AGENT, C_DESCRIPTION};
    char msg[AZ_MSG_MAX];
    int code = AZ_CLI_EXIT_OK;
    az_arena *ar = az_arena_new(0);
    if (!ar) return az_cli_out_of_memory(cli);
    Agentz__V1__Task *t = NULL;
    if (v[C_FILE].count) {
        ProtobufCMessage *m;
        az_err err = az_yaml_read_message(v[C_FILE].value, &agentz__v1__task__descriptor,
                                          az_arena_allocator(ar), &m, msg);
        if (err) {
            code = err == AZ_ERR_NOMEM  ? az_cli_out_of_memory(cli)
                   : err == AZ_ERR_IO   ? az_cli_usage_error(cli, "-f: %s", msg)
                                        : az_cli_fail(cli, AZ_CLI_EXIT_USAGE, err, msg);
            goto done;
        }
        t = (Agentz__V1__Task *)m;
    } else {
        for (size_t i = 0; i < sizeof required / sizeof required[0]; i++)
            if (!v[required[i]].count) {
                code = az_cli_usage_error(cli, "--%s is required (or give the task with -f FILE)",
                                          create_flags[required[i]].name);
                goto done;
            }
        if (!(t = az_arena_alloc(ar, sizeof *t))) {
            code = az_cli_out_of_memory(cli);
            goto done;
        }
        agentz__v1__task__init(t);
    }
    for (size_t i = 0; i < C__FIELDS; i++) {
        if (!v[i].count) continue;
        char flag[64];
        snprintf(flag, sizeof flag, "--%s", create_flags[i].name);
        az_err err = setters[i](t, flag, &v[i], ar, msg);
        if (err) {
            code = err == AZ_ERR_NOMEM ? az_cli_out_of_memory(cli) : az_cli_usage_error(cli, "%s", msg);
            goto done;
        }
    }
    Agentz__V1__CreateTaskRequest req = AGENTZ__V1__CREATE_TASK_REQUEST__INIT;
    req.task = t;
    if (cli->request_id) req.request_id = (char *)cli->request_id;
    ProtobufCMessage *resp;
    code = az_cli_call(cli, SERVICE "CreateTask", &req.base, &agentz__v1__task__descriptor, &resp);
    if (!code) code = az_cli_print_free(cli, resp);
done:
    az_arena_free(ar);
    return code;
}

/* ---- create-batch ---- */

#define BATCH_FILE_MAX (16u << 20) /* the server takes at most 4 MiB of protobuf per call */

enum { B_FILE, B__COUNT };

static const az_flag batch_flags[B__COUNT] = {
    [B_FILE] = {"file", 'f', AZ_FLAG_VALUE, "FILE",
                "the tasks: a JSON array, or JSON lines (one object a line); '-' = stdin", NULL},
};

/* The whole of path ("-" = stdin), NUL-terminated and malloc'd, at most BATCH_FILE_MAX bytes. */
static az_err read_all(const char *path, char **out, size_t *len, char *msg)
{
    FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "rb");
    if (!f) return az_fail(msg, AZ_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    size_t cap = 65536, n = 0;
    char *buf = malloc(cap + 1);
    az_err err = buf ? AZ_OK : az_fail(msg, AZ_ERR_NOMEM, "out of memory");
    while (err == AZ_OK) {
        if (n == cap) {
            char *bigger = cap >= BATCH_FILE_MAX ? NULL : realloc(buf, 2 * cap + 1);
            if (!bigger) {
                err = cap >= BATCH_FILE_MAX
                          ? az_fail(msg, AZ_ERR_INVALID, "%s: larger than %u MiB", path, BATCH_FILE_MAX >> 20)
                          : az_fail(msg, AZ_ERR_NOMEM, "out of memory");
                break;
            }
            buf = bigger;
            cap *= 2;
        }
        size_t got = fread(buf + n, 1, cap - n, f);
        n += got;
        if (got == 0) {
            if (ferror(f)) err = az_fail(msg, AZ_ERR_IO, "%s: cannot read: %s", path, strerror(errno));
            break;
        }
    }
    if (f != stdin) fclose(f);
    if (err != AZ_OK) {
        free(buf);
        return err;
    }
    buf[n] = '\0';
    *out = buf;
    *len = n;
    return AZ_OK;
}

/* One element of the file: a Task, or a CreateTaskRequest ({"task": ..., "requestId": ...})
 * when it has a "task" member (Task has no such field, so the two cannot be confused). */
static az_err batch_item(json_t *j, const char *where, az_arena *ar,
                         Agentz__V1__CreateTaskRequest **out, char *msg)
{
    if (!json_is_object(j)) return az_fail(msg, AZ_ERR_INVALID, "%s: expected a JSON object (a task)", where);
    ProtobufCMessage *m;
    az_err err;
    if (json_object_get(j, "task")) {
        if ((err = az_pbjson_decode_tree(&agentz__v1__create_task_request__descriptor, j, where,
                                         az_arena_allocator(ar), &m, msg)) != AZ_OK)
            return err;
        *out = (Agentz__V1__CreateTaskRequest *)m;
        return AZ_OK;
    }
    if ((err = az_pbjson_decode_tree(&agentz__v1__task__descriptor, j, where, az_arena_allocator(ar),
                                     &m, msg)) != AZ_OK)
        return err;
    if (!(*out = az_arena_alloc(ar, sizeof **out))) return az_fail(msg, AZ_ERR_NOMEM, "out of memory");
    agentz__v1__create_task_request__init(*out);
    (*out)->task = (Agentz__V1__Task *)m;
    return AZ_OK;
}

/* Appends item to the request, doubling its array in the arena. */
static az_err batch_add(Agentz__V1__CreateTasksRequest *req, Agentz__V1__CreateTaskRequest *item,
                        az_arena *ar, char *msg)
{
    size_t n = req->n_requests;
    if ((n & (n - 1)) == 0) {
        Agentz__V1__CreateTaskRequest **v = az_arena_alloc(ar, (n ? 2 * n : 16) * sizeof *v);
        if (!v) return az_fail(msg, AZ_ERR_NOMEM, "out of memory");
        if (n) memcpy(v, req->requests, n * sizeof *v);
        req->requests = v;
    }
    req->requests[req->n_requests++] = item;
    return AZ_OK;
}

/* The file as a JSON array of tasks, or as JSON lines (blank lines skipped); errors name the
 * element ("tasks.json: [2].retryPolicy.maxAttempts: ...") or the line ("tasks.jsonl:3: ..."). */
static az_err parse_batch(const char *path, char *text, size_t len, az_arena *ar,
                          Agentz__V1__CreateTasksRequest *req, char *msg)
{
    char where[64], why[AZ_MSG_MAX];
    json_error_t je;
    az_err err = AZ_OK;
    const char *p = text;
    while (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n') p++;
    if (*p == '[') {
        json_t *arr = json_loadb(text, len, 0, &je);
        if (!arr) return az_fail(msg, AZ_ERR_INVALID, "%s:%d:%d: %s", path, je.line, je.column, je.text);
        for (size_t i = 0; i < json_array_size(arr) && err == AZ_OK; i++) {
            Agentz__V1__CreateTaskRequest *item;
            snprintf(where, sizeof where, "[%zu]", i);
            if ((err = batch_item(json_array_get(arr, i), where, ar, &item, why)) == AZ_OK)
                err = batch_add(req, item, ar, why);
            if (err != AZ_OK) err = az_fail(msg, err, "%s: %s", path, why);
        }
        json_decref(arr);
        return err;
    }
    int line = 0;
    for (char *s = text; s && *s && err == AZ_OK;) {
        char *nl = strchr(s, '\n');
        size_t n = nl ? (size_t)(nl - s) : strlen(s);
        line++;
        const char *q = s;
        while (q < s + n && (*q == ' ' || *q == '\t' || *q == '\r')) q++;
        if (q < s + n) {
            json_t *j = json_loadb(s, n, 0, &je);
            Agentz__V1__CreateTaskRequest *item;
            snprintf(where, sizeof where, "line %d", line);
            if (!j) err = az_fail(msg, AZ_ERR_INVALID, "%s:%d:%d: %s", path, line, je.column, je.text);
            else if ((err = batch_item(j, where, ar, &item, why)) != AZ_OK ||
                     (err = batch_add(req, item, ar, why)) != AZ_OK)
                err = az_fail(msg, err, "%s: %s", path, why);
            json_decref(j);
        }
        s = nl ? nl + 1 : NULL;
    }
    return err;
}

static int print_created(az_cli *cli, const Agentz__V1__CreateTasksResponse *r)
{
    static const char *const headers[] = {"ID", "STATUS", "AGENT"};
    char msg[AZ_MSG_MAX];
    az_table *tb = az_table_new(3, headers);
    if (!tb) return az_cli_out_of_memory(cli);
    for (size_t c = 0; c < 3; c++) az_table_keep(tb, c);
    for (size_t i = 0; i < r->n_tasks; i++) {
        char status[32];
        const char *cells[3] = {
            r->tasks[i]->id,
            az_output_enum(&agentz__v1__task_status__descriptor, STATUS_PREFIX,
                           (int)r->tasks[i]->status, status, sizeof status),
            r->tasks[i]->agent_id,
        };
        if (az_table_add(tb, cells, msg)) {
            az_table_free(tb);
            return az_cli_out_of_memory(cli);
        }
    }
    az_table_print(tb, cli->out, az_table_width(cli->out));
    az_table_free(tb);
    fprintf(cli->err, "created %zu tasks\n", r->n_tasks);
    return AZ_CLI_EXIT_OK;
}

static int run_create_batch(az_cli *cli, const az_flag_value *v, const char *const *args, size_t nargs)
{
    if (!v[B_FILE].count) return az_cli_usage_error(cli, "-f FILE is required ('-' = stdin)");
    char msg[AZ_MSG_MAX];
    char *text = NULL;
    size_t len = 0;
    az_err err = read_all(v[B_FILE].value, &text, &len, msg);
    if (err == AZ_ERR_NOMEM) return az_cli_out_of_memory(cli);
    if (err) return az_cli_usage_error(cli, "-f: %s", msg);
    az_arena *ar = az_arena_new(0);
    if (!ar) {
        free(text);
        return az_cli_out_of_memory(cli);
    }
    int code;
    Agentz__V1__CreateTasksRequest req = AGENTZ__V1__CREATE_TASKS_REQUEST__INIT;
    err = parse_batch(v[B_FILE].value, text, len, ar, &req, msg);
    free(text);
    if (err) {
        code = err == AZ_ERR_NOMEM ? az_cli_out_of_memory(cli) : az_cli_fail(cli, AZ_CLI_EXIT_USAGE, err, msg);
        goto done;
    }
    if (!req.n_requests) {
        code = az_cli_usage_error(cli, "-f: %s holds no tasks", v[B_FILE].value);
        goto done;
    }
    /* --request-id makes the whole call retry-safe: item i without its own key gets ID-i. */
    for (size_t i = 0; cli->request_id && i < req.n_requests; i++) {
        Agentz__V1__CreateTaskRequest *item = req.requests[i];
        if (*item->request_id) continue;
        if (!(item->request_id = az_arena_printf(ar, "%s-%zu", cli->request_id, i))) {
            code = az_cli_out_of_memory(cli);
            goto done;
        }
    }
    ProtobufCMessage *resp;
    code = az_cli_call(cli, SERVICE "CreateTasks", &req.base,
                       &agentz__v1__create_tasks_response__descriptor, &resp);
    if (!code) {
        code = cli->output == AZ_OUTPUT_TABLE
                   ? print_created(cli, (const Agentz__V1__CreateTasksResponse *)resp)
                   : az_cli_print(cli, resp);
        protobuf_c_message_free_unpacked(resp, NULL);
    }
done:
    az_arena_free(ar);
    return code;
}

/* ---- get, cancel, retry ---- */

static int run_get(az_cli *cli, const az_flag_value *v, const char *const *args, size_t nargs)
{
    Agentz__V1__GetTaskRequest req = AGENTZ__V1__GET_TASK_REQUEST__INIT;
    req.id = (char *)args[0];
    ProtobufCMessage *resp;
    int code = az_cli_call(cli, SERVICE "GetTask", &req.base, &agentz__v1__task__descriptor, &resp);
    return code ? code : az_cli_print_free(cli, resp);
}

enum { X_REASON, X__COUNT };

static const az_flag cancel_flags[X__COUNT] = {
    [X_REASON] = {"reason", 0, AZ_FLAG_VALUE, "TEXT", "why; recorded in the task's error and the audit log", NULL},
};

static int run_cancel(az_cli *cli, const az_flag_value *v, const char *const *args, size_t nargs)
{
    Agentz__V1__CancelTaskRequest req = AGENTZ__V1__CANCEL_TASK_REQUEST__INIT;
    req.id = (char *)args[0];
    if (v[X_REASON].count) req.reason = (char *)v[X_REASON].value;
    ProtobufCMessage *resp;
    int code = az_cli_call(cli, SERVICE "CancelTask", &req.base, &agentz__v1__task__descriptor, &resp);
    return code ? code : az_cli_print_free(cli, resp);
}

static int run_retry(az_cli *cli, const az_flag_value *v, const char *const *args, size_t nargs)
{
    Agentz__V1__RetryTaskRequest req = AGENTZ__V1__RETRY_TASK_REQUEST__INIT;
    req.id = (char *)args[0];
    ProtobufCMessage *resp;
    int code = az_cli_call(cli, SERVICE "RetryTask", &req.base, &agentz__v1__task__descriptor, &resp);
    return code ? code : az_cli_print_free(cli, resp);
}

/* ---- list ---- */

enum { L_STATUS, L_AGENT, L_RUN, L_PAGE_SIZE, L_PAGE_TOKEN, L_ALL, L__COUNT };

static const az_flag list_flags[L__COUNT] = {
    [L_STATUS] = {"status", 0, AZ_FLAG_VALUE, "STATUS",
                  "pending, queued, running, backoff, succeeded, failed or cancelled", NULL},
    [L_AGENT] = {"agent", 0, AZ_FLAG_VALUE, "ID", "only tasks of this agent", NULL},
    [L_RUN] = {"run", 0, AZ_FLAG_VALUE, "ID", "only tasks of this workflow run", NULL},
    [L_PAGE_SIZE] = {"page-size", 0, AZ_FLAG_VALUE, "N", "tasks per page (server default 50, max 1000)", NULL},
    [L_PAGE_TOKEN] = {"page-token", 0, AZ_FLAG_VALUE, "TOKEN", "continue from a previous page", NULL},
    [L_ALL] = {"all", 0, AZ_FLAG_BOOL, NULL, "follow next_page_token and print every page", NULL},
};

static int print_task_table(az_cli *cli, ProtobufCMessage **pages, size_t npages)
{
    static const char *const headers[] = {"ID", "STATUS", "AGENT", "ATTEMPT", "PROGRESS", "AGE"};
    char msg[AZ_MSG_MAX];
    az_table *tb = az_table_new(6, headers);
    if (!tb) return az_cli_out_of_memory(cli);
    for (size_t c = 0; c < 6; c++) az_table_keep(tb, c);
    int64_t now = (int64_t)time(NULL);
    for (size_t p = 0; p < npages; p++) {
        const Agentz__V1__ListTasksResponse *r = (const Agentz__V1__ListTasksResponse *)pages[p];
        for (size_t i = 0; i < r->n_tasks; i++) {
            const Agentz__V1__Task *t = r->tasks[i];
            char status[32], attempt[16], progress[16], age[32];
            snprintf(attempt, sizeof attempt, "%d", t->attempt);
            snprintf(progress, sizeof progress, "%.0f%%", t->progress * 100);
            const char *cells[6] = {
                t->id,
                az_output_enum(&agentz__v1__task_status__descriptor, STATUS_PREFIX, (int)t->status,
                               status, sizeof status),
                t->agent_id,
                attempt,
                progress,
                t->create_time ? az_output_age(t->create_time->seconds, now, age, sizeof age) : "",
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
        fprintf(cli->err, "no tasks found\n");
    az_table_free(tb);
    const Agentz__V1__ListTasksResponse *last =
        (const Agentz__V1__ListTasksResponse *)pages[npages - 1];
    if (*last->next_page_token)
        fprintf(cli->err, "more tasks: --page-token %s (or --all)\n", last->next_page_token);
    return AZ_CLI_EXIT_OK;
}

static int run_list(az_cli *cli, const az_flag_value *v, const char *const *args, size_t nargs)
{
    char msg[AZ_MSG_MAX];
    Agentz__V1__ListTasksRequest req = AGENTZ__V1__LIST_TASKS_REQUEST__INIT;
    int status = 0;
    if (v[L_STATUS].count && az_args_enum("--status", &agentz__v1__task_status__descriptor,
                                          STATUS_PREFIX, v[L_STATUS].value, &status, msg))
        return az_cli_usage_error(cli, "%s", msg);
    req.status = (Agentz__V1__TaskStatus)status;
    if (v[L_PAGE_SIZE].count &&
        az_args_int32("--page-size", v[L_PAGE_SIZE].value, 0, INT32_MAX, &req.page_size, msg))
        return az_cli_usage_error(cli, "%s", msg);
    if (v[L_PAGE_TOKEN].count) req.page_token = (char *)v[L_PAGE_TOKEN].value;
    if (v[L_AGENT].count) req.agent_id = (char *)v[L_AGENT].value;
    if (v[L_RUN].count) req.run_id = (char *)v[L_RUN].value;
    ProtobufCMessage **pages;
    size_t npages;
    int code = az_cli_fetch_pages(cli, SERVICE "ListTasks", &req.base, &req.page_token,
                           &agentz__v1__list_tasks_response__descriptor, az_args_bool(&v[L_ALL]),
                           &pages, &npages);
    if (code) return code;
    code = cli->output == AZ_OUTPUT_TABLE ? print_task_table(cli, pages, npages)
                                          : az_cli_print_pages(cli, pages, npages, "tasks");
    az_cli_free_pages(pages, npages);
    return code;
}

/* ---- attempts ---- */

static int print_attempt_table(az_cli *cli, ProtobufCMessage **pages, size_t npages)
{
    static const char *const headers[] = {"ATTEMPT", "STATUS", "STARTED", "DURATION", "WORKER",
                                          "ERROR"};
    char msg[AZ_MSG_MAX];
    az_table *tb = az_table_new(6, headers);
    if (!tb) return az_cli_out_of_memory(cli);
    for (size_t p = 0; p < npages; p++) {
        const Agentz__V1__ListTaskAttemptsResponse *r =
            (const Agentz__V1__ListTaskAttemptsResponse *)pages[p];
        for (size_t i = 0; i < r->n_attempts; i++) {
            const Agentz__V1__TaskAttempt *a = r->attempts[i];
            char n[16], status[32], started[32], dur[32] = "", err[320] = "";
            snprintf(n, sizeof n, "%d", a->attempt);
            if (a->start_time && a->end_time)
                snprintf(dur, sizeof dur, "%llds",
                         (long long)(a->end_time->seconds - a->start_time->seconds));
            if (a->error) snprintf(err, sizeof err, "%s: %s", a->error->type, a->error->message);
            const char *cells[6] = {
                n,
                az_output_enum(&agentz__v1__task_status__descriptor, STATUS_PREFIX, (int)a->status,
                               status, sizeof status),
                az_output_time(a->start_time ? a->start_time->seconds : 0, started, sizeof started),
                dur,
                a->worker,
                err,
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
        fprintf(cli->err, "no attempts yet\n");
    az_table_free(tb);
    return AZ_CLI_EXIT_OK;
}

static int run_attempts(az_cli *cli, const az_flag_value *v, const char *const *args, size_t nargs)
{
    Agentz__V1__ListTaskAttemptsRequest req = AGENTZ__V1__LIST_TASK_ATTEMPTS_REQUEST__INIT;
    req.task_id = (char *)args[0];
    ProtobufCMessage **pages;
    size_t npages;
    int code = az_cli_fetch_pages(cli, SERVICE "ListTaskAttempts", &req.base, &req.page_token,
                           &agentz__v1__list_task_attempts_response__descriptor, 1, &pages, &npages);
    if (code) return code;
    code = cli->output == AZ_OUTPUT_TABLE ? print_attempt_table(cli, pages, npages)
                                          : az_cli_print_pages(cli, pages, npages, "attempts");
    az_cli_free_pages(pages, npages);
    return code;
}

/* ---- stats ---- */

enum { S_SINCE, S_START, S_END, S_AGENT, S__COUNT };

static const az_flag stats_flags[S__COUNT] = {
    [S_SINCE] = {"since", 0, AZ_FLAG_VALUE, "DURATION", "window ending now, e.g. 24h or 7d (default 24h)", NULL},
    [S_START] = {"start", 0, AZ_FLAG_VALUE, "RFC3339", "window start, e.g. 2026-01-02T00:00:00Z", NULL},
    [S_END] = {"end", 0, AZ_FLAG_VALUE, "RFC3339", "window end (default now)", NULL},
    [S_AGENT] = {"agent", 0, AZ_FLAG_VALUE, "ID", "only tasks of this agent", NULL},
};

/* RFC 3339 with a Z or ±hh:mm offset and an optional fraction (ignored below a second). */
static az_err rfc3339(const char *flag, const char *s, int64_t *out, char *msg)
{
    struct tm tm = {0};
    const char *p = strptime(s, "%Y-%m-%dT%H:%M:%S", &tm);
    if (!p) p = strptime(s, "%Y-%m-%dt%H:%M:%S", &tm);
    int64_t off = 0;
    if (p && *p == '.') {
        p++;
        while (*p >= '0' && *p <= '9') p++;
    }
    if (p && (*p == 'Z' || *p == 'z') && !p[1]) {
        p = "";
    } else if (p && (*p == '+' || *p == '-') && strlen(p) == 6 && p[3] == ':') {
        int hh, mm;
        if (sscanf(p + 1, "%2d:%2d", &hh, &mm) == 2) off = (hh * 3600 + mm * 60) * (*p == '-' ? -1 : 1);
        p = "";
    }
    if (!p || *p)
        return az_fail(msg, AZ_ERR_INVALID,
                       "%s: \"%s\" is not an RFC 3339 time like 2026-01-02T15:04:05Z", flag, s);
    *out = (int64_t)timegm(&tm) - off;
    return AZ_OK;
}

static Google__Protobuf__Timestamp *timestamp(az_arena *ar, int64_t secs)
{
    Google__Protobuf__Timestamp *t = az_arena_alloc(ar, sizeof *t);
    if (t) {
        google__protobuf__timestamp__init(t);
        t->seconds = secs;
    }
    return t;
}

static int run_stats(az_cli *cli, const az_flag_value *v, const char *const *args, size_t nargs)
{
    char msg[AZ_MSG_MAX];
    if (v[S_SINCE].count && (v[S_START].count || v[S_END].count))
        return az_cli_usage_error(cli, "--since cannot be combined with --start or --end");
    Agentz__V1__GetTaskStatsRequest req = AGENTZ__V1__GET_TASK_STATS_REQUEST__INIT;
    az_arena *ar = az_arena_new(0);
    if (!ar) return az_cli_out_of_memory(cli);
    int code = AZ_CLI_EXIT_OK;
    int64_t secs;
    if (v[S_SINCE].count) {
        if (az_args_days_duration("--since", v[S_SINCE].value, &secs, msg)) {
            code = az_cli_usage_error(cli, "%s", msg);
            goto done;
        }
        req.start_time = timestamp(ar, (int64_t)time(NULL) - secs);
    }
    const int ends[] = {S_START, S_END};
    Google__Protobuf__Timestamp **slots[] = {&req.start_time, &req.end_time};
    for (size_t i = 0; i < 2; i++) {
        if (!v[ends[i]].count) continue;
        char flag[16];
        snprintf(flag, sizeof flag, "--%s", stats_flags[ends[i]].name);
        if (rfc3339(flag, v[ends[i]].value, &secs, msg)) {
            code = az_cli_usage_error(cli, "%s", msg);
            goto done;
        }
        if (!(*slots[i] = timestamp(ar, secs))) {
            code = az_cli_out_of_memory(cli);
            goto done;
        }
    }
    if (req.start_time && req.end_time && req.start_time->seconds > req.end_time->seconds) {
        code = az_cli_usage_error(cli, "--start is after --end");
        goto done;
    }
    if (v[S_AGENT].count) req.agent_id = (char *)v[S_AGENT].value;
    ProtobufCMessage *resp;
    if (!(code = az_cli_call(cli, SERVICE "GetTaskStats", &req.base,
                             &agentz__v1__task_stats__descriptor, &resp)))
        code = az_cli_print_free(cli, resp);
done:
    az_arena_free(ar);
    return code;
}

/* ---- the noun ---- */

static const az_cli_verb verbs[] = {
    {"create", "", "Create and enqueue a task from flags or a JSON/YAML file",
     "Without -f, --agent and --description are required. With -f FILE the task is read as\n"
     "proto3 JSON or the same document in YAML (what 'agentz tasks get ID -o json|yaml'\n"
     "prints); flags given as well override the file's fields. --timeout is the task's\n"
     "deadline per attempt (the global --timeout is the deadline of the call). The global\n"
     "--request-id makes the call idempotent.",
     create_flags, C__COUNT, 0, 0, run_create},
    {"create-batch", "", "Create up to 1000 tasks in one atomic call from a JSON file",
     "-f FILE holds a JSON array of tasks or JSON lines, each a task as 'tasks create -f'\n"
     "reads it, or {\"task\": {...}, \"requestId\": \"...\"} for an item with its own idempotency\n"
     "key. All are created or none (the error names the item: requests[3].task...). With the\n"
     "global --request-id ID, items without a key get ID-0, ID-1, ...: rerunning the same file\n"
     "with the same ID returns the tasks created first. Prints ID STATUS AGENT per task, in\n"
     "file order; -o json|yaml prints the CreateTasksResponse.",
     batch_flags, B__COUNT, 0, 0, run_create_batch},
    {"get", "ID", "Show one task", NULL, NULL, 0, 1, 1, run_get},
    {"list", "", "List tasks, newest first, one page or --all",
     "Table columns: ID STATUS AGENT ATTEMPT PROGRESS AGE. The next page's token is printed on\n"
     "stderr; --all fetches every page.",
     list_flags, L__COUNT, 0, 0, run_list},
    {"cancel", "ID", "Cancel a task that has not finished", NULL, cancel_flags, X__COUNT, 1, 1,
     run_cancel},
    {"retry", "ID", "Run a failed or cancelled task again as a new attempt", NULL, NULL, 0, 1, 1,
     run_retry},
    {"attempts", "ID", "List the attempts of a task, first attempt first", NULL, NULL, 0, 1, 1,
     run_attempts},
    {"stats", "", "Counts, success rate, latencies and usage of tasks in a time window",
     "The window is --since DURATION back from now (24h, 90m, 7d), or --start/--end as RFC 3339\n"
     "times; the server's default is the last 24 hours.",
     stats_flags, S__COUNT, 0, 0, run_stats},
};

const az_cli_noun az_cli_tasks = {
    .name = "tasks",
    .alias = "task",
    .summary = "Create, inspect, cancel and retry standalone tasks",
    .verbs = verbs,
    .nverbs = sizeof verbs / sizeof verbs[0],
};
