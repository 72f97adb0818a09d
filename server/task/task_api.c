/* TaskService handlers: request validation with field-naming errors, AIP-158 pagination limits,
 * idempotent create (one task, or a batch in one transaction), publishing to the Redis queue
 * after commit, and the run-refresh hook. */
#include "task_api.h"

#include <math.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "agent/agent.h"
#include "core/log.h"
#include "core/pbjson.h"
#include "core/text.h"
#include "event/watch.h"
#include "queue/queue.h"

#define PAGE_DEFAULT 50
#define PAGE_MAX 1000
#define LABEL_VALUE_MAX 256
#define REQUEST_ID_MAX 128
#define STATS_WINDOW_US (24LL * 3600 * 1000000)

struct az_task_api {
    az_pg *pg;
    az_redis *redis;
    az_err (*run_hook)(void *arg, const az_ctx *ctx, const char *run_id, char *msg);
    void *run_hook_arg;
    az_watch *watch; /* NULL: WatchTask answers UNAVAILABLE */
    size_t max_message_bytes; /* the server's send limit, which bounds a CreateTasks response */
    az_method methods[9];
};

/* ---------------------------------------------------------------- validation */

static double seconds(const Google__Protobuf__Duration *d)
{
    return d ? (double)d->seconds + d->nanos / 1e9 : 0.0;
}

static az_err check_retry_policy(const Agentz__V1__RetryPolicy *p, char *msg)
{
    if (!p) return AZ_OK;
    az_err err;
    if ((err = az_text_check_duration("task.retry_policy.initial_backoff", p->initial_backoff,
                              AZ_TASK_INITIAL_BACKOFF_MAX_S, msg)) != AZ_OK)
        return err;
    double c = p->backoff_coefficient;
    if (c != 0 && !(c >= 1)) /* also rejects NaN */
        return az_fail(msg, AZ_ERR_INVALID, "task.retry_policy.backoff_coefficient: must be >= 1");
    if (c > AZ_TASK_COEFFICIENT_MAX)
        return az_fail(msg, AZ_ERR_INVALID, "task.retry_policy.backoff_coefficient: must be <= %g",
                       AZ_TASK_COEFFICIENT_MAX);
    if ((err = az_text_check_duration("task.retry_policy.maximum_backoff", p->maximum_backoff,
                              AZ_TASK_MAXIMUM_BACKOFF_MAX_S, msg)) != AZ_OK)
        return err;
    double initial = p->initial_backoff ? seconds(p->initial_backoff)
                                        : AZ_TASK_DEFAULT_INITIAL_BACKOFF_MS / 1000.0;
    if (p->maximum_backoff && seconds(p->maximum_backoff) < initial)
        return az_fail(msg, AZ_ERR_INVALID,
                       "task.retry_policy.maximum_backoff: must be >= initial_backoff (%gs)", initial);
    if (p->max_attempts < 0 || p->max_attempts > AZ_TASK_MAX_ATTEMPTS_MAX)
        return az_fail(msg, AZ_ERR_INVALID, "task.retry_policy.max_attempts: must be between 0 and %d",
                       AZ_TASK_MAX_ATTEMPTS_MAX);
    if (p->n_non_retryable_errors > AZ_TASK_NON_RETRYABLE_MAX)
        return az_fail(msg, AZ_ERR_INVALID, "task.retry_policy.non_retryable_errors: at most %d entries",
                       AZ_TASK_NON_RETRYABLE_MAX);
    for (size_t i = 0; i < p->n_non_retryable_errors; i++) {
        char field[64];
        snprintf(field, sizeof field, "task.retry_policy.non_retryable_errors[%zu]", i);
        if ((err = az_text_check(field, p->non_retryable_errors[i], AZ_TASK_ERROR_TYPE_MAX,
                                 AZ_TEXT_REQUIRED, msg)) != AZ_OK)
            return err;
    }
    return AZ_OK;
}

az_err az_task_api_validate(const Agentz__V1__Task *t, char *msg)
{
    az_err err;
    if ((err = az_text_check("task.description", t->description, AZ_TASK_DESCRIPTION_MAX,
                             AZ_TEXT_REQUIRED | AZ_TEXT_MULTILINE, msg)) != AZ_OK ||
        (err = az_text_check("task.expected_output", t->expected_output,
                             AZ_TASK_EXPECTED_OUTPUT_MAX, AZ_TEXT_MULTILINE, msg)) != AZ_OK)
        return err;
    if (!*t->agent_id) return az_fail(msg, AZ_ERR_INVALID, "task.agent_id is required");
    if (!az_text_is_uuid(t->agent_id))
        return az_fail(msg, AZ_ERR_INVALID, "task.agent_id: \"%.64s\" is not an agent id", t->agent_id);
    if (t->n_depends_on > AZ_TASK_DEPENDS_ON_MAX)
        return az_fail(msg, AZ_ERR_INVALID, "task.depends_on: at most %d dependencies",
                       AZ_TASK_DEPENDS_ON_MAX);
    for (size_t i = 0; i < t->n_depends_on; i++) {
        if (!az_text_is_uuid(t->depends_on[i]))
            return az_fail(msg, AZ_ERR_INVALID, "task.depends_on[%zu]: not a task id", i);
        for (size_t j = 0; j < i; j++) {
            if (strcasecmp(t->depends_on[i], t->depends_on[j]) == 0)
                return az_fail(msg, AZ_ERR_INVALID, "task.depends_on[%zu]: %s is listed twice", i,
                               t->depends_on[i]);
        }
    }
    if (t->n_context > AZ_TASK_CONTEXT_MAX)
        return az_fail(msg, AZ_ERR_INVALID, "task.context: at most %d entries", AZ_TASK_CONTEXT_MAX);
    for (size_t i = 0; i < t->n_context; i++) {
        char field[48];
        snprintf(field, sizeof field, "task.context[%zu]", i);
        if ((err = az_text_check(field, t->context[i], AZ_TASK_CONTEXT_ITEM_MAX,
                                 AZ_TEXT_REQUIRED | AZ_TEXT_MULTILINE, msg)) != AZ_OK)
            return err;
    }
    if (t->output_schema) {
        /* A Struct is always a JSON object; only its size is left to check. */
        char *json = NULL, inner[AZ_MSG_MAX];
        if (az_pbjson_encode(&t->output_schema->base, 0, &json, inner) != AZ_OK)
            return az_fail(msg, AZ_ERR_INVALID, "task.output_schema: %s", inner);
        size_t n = strlen(json);
        free(json);
        if (n > AZ_TASK_OUTPUT_SCHEMA_MAX)
            return az_fail(msg, AZ_ERR_INVALID, "task.output_schema: larger than %d bytes as JSON",
                           AZ_TASK_OUTPUT_SCHEMA_MAX);
    }
    if ((err = check_retry_policy(t->retry_policy, msg)) != AZ_OK ||
        (err = az_text_check_duration("task.timeout", t->timeout, AZ_TASK_TIMEOUT_MAX_S, msg)) != AZ_OK)
        return err;
    if (t->n_webhook_urls > AZ_TASK_WEBHOOKS_MAX)
        return az_fail(msg, AZ_ERR_INVALID, "task.webhook_urls: at most %d URLs", AZ_TASK_WEBHOOKS_MAX);
    for (size_t i = 0; i < t->n_webhook_urls; i++) {
        char field[48];
        snprintf(field, sizeof field, "task.webhook_urls[%zu]", i);
        if ((err = az_text_check_url(field, t->webhook_urls[i], AZ_TEXT_REQUIRED, msg)) != AZ_OK) return err;
    }
    if (t->n_labels > AZ_TASK_LABELS_MAX)
        return az_fail(msg, AZ_ERR_INVALID, "task.labels: at most %d labels", AZ_TASK_LABELS_MAX);
    for (size_t i = 0; i < t->n_labels; i++) {
        const Agentz__V1__Task__LabelsEntry *e = t->labels[i];
        if (!az_text_label_key_ok(e->key))
            return az_fail(msg, AZ_ERR_INVALID,
                           "task.labels: key \"%.80s\" must be 1..%d characters of a-z, 0-9, "
                           "'_', '-', '.', '/'",
                           e->key, AZ_TEXT_LABEL_KEY_MAX);
        char field[96];
        snprintf(field, sizeof field, "task.labels[%s]", e->key);
        if ((err = az_text_check(field, e->value, LABEL_VALUE_MAX, 0, msg)) != AZ_OK) return err;
        for (size_t j = 0; j < i; j++) {
            if (strcmp(t->labels[j]->key, e->key) == 0)
                return az_fail(msg, AZ_ERR_INVALID, "task.labels: key \"%s\" appears twice", e->key);
        }
    }
    return AZ_OK;
}

/* ---------------------------------------------------------------- helpers */

/* SHA-256 of the serialized task: what makes two requests with one request_id "the same". */
static char *request_hash(az_arena *a, const Agentz__V1__Task *t)
{
    size_t n = protobuf_c_message_get_packed_size(&t->base);
    uint8_t *buf = az_arena_alloc(a, n ? n : 1);
    char *hex = az_arena_alloc(a, 65);
    if (!buf || !hex) return NULL;
    protobuf_c_message_pack(&t->base, buf);
    unsigned char md[32];
    unsigned int mdlen = 0;
    if (!EVP_Digest(buf, n, md, &mdlen, EVP_sha256(), NULL)) return NULL;
    for (unsigned i = 0; i < 32; i++) snprintf(hex + 2 * i, 3, "%02x", md[i]);
    return hex;
}

/* After commit: a Redis failure only delays the tasks until the reconciler re-publishes them. */
static void publish(az_task_api *api, const az_ctx *ctx, const az_task_ready *ready)
{
    if (!ready->n || !api->redis) return;
    char msg[AZ_MSG_MAX];
    if (az_queue_publish(api->redis, ctx->workspace_id, ready, msg) != AZ_OK)
        az_warn("%s (the reconciler will publish them)", msg);
}

static void refresh_run(az_task_api *api, const az_ctx *ctx, const char *run_id)
{
    if (!*run_id || !api->run_hook) return;
    char msg[AZ_MSG_MAX];
    if (api->run_hook(api->run_hook_arg, ctx, run_id, msg) != AZ_OK)
        az_warn("cannot refresh run %s after a task change: %s", run_id, msg);
}

static int clamp_page(int size) { return size == 0 ? PAGE_DEFAULT : size > PAGE_MAX ? PAGE_MAX : size; }

static int64_t timestamp_to_us(const Google__Protobuf__Timestamp *t)
{
    return (int64_t)t->seconds * 1000000 + t->nanos / 1000;
}

/* The client-settable fields of src: output-only fields of a request are ignored. */
static void copy_writable(Agentz__V1__Task *t, const Agentz__V1__Task *src)
{
    agentz__v1__task__init(t);
    t->description = src->description;
    t->expected_output = src->expected_output;
    t->agent_id = src->agent_id;
    t->n_depends_on = src->n_depends_on;
    t->depends_on = src->depends_on;
    t->n_context = src->n_context;
    t->context = src->context;
    t->output_schema = src->output_schema;
    t->retry_policy = src->retry_policy;
    t->timeout = src->timeout;
    t->n_webhook_urls = src->n_webhook_urls;
    t->webhook_urls = src->webhook_urls;
    t->n_labels = src->n_labels;
    t->labels = src->labels;
}

/* The agent of a new task exists and is enabled; errors name "<prefix>task.agent_id". */
static az_err check_agent(az_task_api *api, const az_ctx *ctx, const char *prefix,
                          const char *agent_id, az_arena *a, char *msg)
{
    Agentz__V1__Agent *agent;
    char inner[AZ_MSG_MAX];
    az_err err = az_agent_get(api->pg, ctx, agent_id, a, &agent, inner);
    if (err == AZ_ERR_NOT_FOUND)
        return az_fail(msg, AZ_ERR_INVALID, "%stask.agent_id: agent %s not found", prefix, agent_id);
    if (err != AZ_OK) return az_fail(msg, err, "%s", inner);
    if (agent->disabled)
        return az_fail(msg, AZ_ERR_PRECONDITION, "%stask.agent_id: agent %s is disabled", prefix,
                       agent_id);
    return AZ_OK;
}

/* ---------------------------------------------------------------- handlers */

static az_err create_task(az_call *c, const ProtobufCMessage *in, ProtobufCMessage **out, char *msg)
{
    az_task_api *api = az_call_data(c);
    const Agentz__V1__CreateTaskRequest *req = (const void *)in;
    if (!req->task) return az_fail(msg, AZ_ERR_INVALID, "task is required");
    az_err err = az_task_api_validate(req->task, msg);
    if (err != AZ_OK) return err;
    if ((err = az_text_check("request_id", req->request_id, REQUEST_ID_MAX, 0, msg)) != AZ_OK)
        return err;
    az_arena *a = az_call_arena(c);
    az_ctx ctx;
    az_call_ctx(c, &ctx);
    if ((err = check_agent(api, &ctx, "", req->task->agent_id, a, msg)) != AZ_OK) return err;
    const char *hash = "";
    if (*req->request_id && !(hash = request_hash(a, req->task)))
        return az_fail(msg, AZ_ERR_NOMEM, "out of memory");
    Agentz__V1__Task t;
    copy_writable(&t, req->task);
    Agentz__V1__Task *created;
    int replayed;
    az_task_ready ready = {.arena = a};
    err = az_task_create(api->pg, &ctx, &t, req->request_id, hash, a, &created, &replayed, &ready, msg);
    if (err != AZ_OK) return err;
    publish(api, &ctx, &ready);
    *out = &created->base;
    return AZ_OK;
}

/* A request id and its item, sorted to find ids given twice. */
typedef struct keyed {
    const char *request_id;
    size_t i;
} keyed;

static int cmp_keyed(const void *x, const void *y)
{
    const keyed *a = x, *b = y;
    int c = strcmp(a->request_id, b->request_id);
    return c ? c : (a->i > b->i) - (a->i < b->i);
}

/* CreateTasks (AIP-233): every item validated as CreateTask validates it (errors prefixed with
 * "requests[i]."), each distinct agent checked once, then one transaction for the batch. */
static az_err create_tasks(az_call *c, const ProtobufCMessage *in, ProtobufCMessage **out, char *msg)
{
    az_task_api *api = az_call_data(c);
    const Agentz__V1__CreateTasksRequest *req = (const void *)in;
    size_t n = req->n_requests;
    if (n == 0) return az_fail(msg, AZ_ERR_INVALID, "requests: at least 1 task is required");
    if (n > AZ_TASK_BATCH_MAX)
        return az_fail(msg, AZ_ERR_INVALID, "requests: at most %d tasks per call, got %zu",
                       AZ_TASK_BATCH_MAX, n);
    az_arena *a = az_call_arena(c);
    char inner[AZ_MSG_MAX];
    az_err err;
    keyed *keys = az_arena_alloc(a, n * sizeof *keys);
    az_task_item *items = az_arena_alloc(a, n * sizeof *items);
    Agentz__V1__Task *tasks = az_arena_alloc(a, n * sizeof *tasks);
    if (!keys || !items || !tasks) return az_fail(msg, AZ_ERR_NOMEM, "out of memory");
    size_t nkeys = 0;
    for (size_t i = 0; i < n; i++) {
        const Agentz__V1__CreateTaskRequest *r = req->requests[i];
        if (!r->task) return az_fail(msg, AZ_ERR_INVALID, "requests[%zu].task is required", i);
        if ((err = az_task_api_validate(r->task, inner)) != AZ_OK ||
            (err = az_text_check("request_id", r->request_id, REQUEST_ID_MAX, 0, inner)) != AZ_OK)
            return az_fail(msg, err, "requests[%zu].%s", i, inner);
        if (*r->request_id) keys[nkeys++] = (keyed){r->request_id, i};
    }
    /* A batch holding one key twice could only create one of the two tasks. */
    qsort(keys, nkeys, sizeof *keys, cmp_keyed);
    for (size_t k = 1; k < nkeys; k++) {
        if (strcmp(keys[k].request_id, keys[k - 1].request_id) == 0)
            return az_fail(msg, AZ_ERR_INVALID,
                           "requests[%zu].request_id: \"%s\" is also the request_id of requests[%zu]",
                           keys[k].i, keys[k].request_id, keys[k - 1].i);
    }
    az_ctx ctx;
    az_call_ctx(c, &ctx);
    /* Each distinct agent once (batches usually share one or a few), in item order so the
     * first item naming a missing agent is the one the message names. */
    for (size_t i = 0; i < n; i++) {
        const char *agent = req->requests[i]->task->agent_id;
        size_t j = 0;
        while (j < i && strcasecmp(req->requests[j]->task->agent_id, agent) != 0) j++;
        if (j < i) continue;
        char prefix[32];
        snprintf(prefix, sizeof prefix, "requests[%zu].", i);
        if ((err = check_agent(api, &ctx, prefix, agent, a, msg)) != AZ_OK) return err;
    }
    for (size_t i = 0; i < n; i++) {
        const Agentz__V1__CreateTaskRequest *r = req->requests[i];
        copy_writable(&tasks[i], r->task);
        items[i] = (az_task_item){.task = &tasks[i], .request_id = r->request_id, .request_hash = ""};
        /* The same hash as CreateTask's, so a retry through either call matches. */
        if (*r->request_id && !(items[i].request_hash = request_hash(a, r->task)))
            return az_fail(msg, AZ_ERR_NOMEM, "out of memory");
    }
    Agentz__V1__Task **created;
    size_t bad;
    az_task_ready ready = {.arena = a};
    err = az_task_create_many(api->pg, &ctx, items, n, api->max_message_bytes, a, &created, &ready,
                              &bad, inner);
    if (err != AZ_OK) {
        if (bad < n) return az_fail(msg, err, "requests[%zu].%s", bad, inner);
        return az_fail(msg, err, "%s", inner);
    }
    publish(api, &ctx, &ready);
    Agentz__V1__CreateTasksResponse *resp = az_arena_alloc(a, sizeof *resp);
    if (!resp) return az_fail(msg, AZ_ERR_NOMEM, "out of memory");
    agentz__v1__create_tasks_response__init(resp);
    resp->n_tasks = n;
    resp->tasks = created;
    *out = &resp->base;
    return AZ_OK;
}

static az_err get_task(az_call *c, const ProtobufCMessage *in, ProtobufCMessage **out, char *msg)
{
    az_task_api *api = az_call_data(c);
    const Agentz__V1__GetTaskRequest *req = (const void *)in;
    if (!*req->id) return az_fail(msg, AZ_ERR_INVALID, "id is required");
    az_ctx ctx;
    az_call_ctx(c, &ctx);
    Agentz__V1__Task *t;
    az_err err = az_task_get(api->pg, &ctx, req->id, az_call_arena(c), &t, msg);
    if (err == AZ_OK) *out = &t->base;
    return err;
}

static az_err list_tasks(az_call *c, const ProtobufCMessage *in, ProtobufCMessage **out, char *msg)
{
    az_task_api *api = az_call_data(c);
    const Agentz__V1__ListTasksRequest *req = (const void *)in;
    if (req->page_size < 0) return az_fail(msg, AZ_ERR_INVALID, "page_size: must not be negative");
    if (req->status < 0 || req->status > AGENTZ__V1__TASK_STATUS__TASK_STATUS_CANCELLED)
        return az_fail(msg, AZ_ERR_INVALID, "status: unknown value %d", (int)req->status);
    if (*req->agent_id && !az_text_is_uuid(req->agent_id))
        return az_fail(msg, AZ_ERR_INVALID, "agent_id: \"%.64s\" is not an agent id", req->agent_id);
    if (*req->run_id && !az_text_is_uuid(req->run_id))
        return az_fail(msg, AZ_ERR_INVALID, "run_id: \"%.64s\" is not a run id", req->run_id);
    az_task_query q = {
        .status = (int)req->status,
        .agent_id = req->agent_id,
        .run_id = req->run_id,
        .page_size = clamp_page(req->page_size),
        .page_token = req->page_token,
    };
    az_ctx ctx;
    az_call_ctx(c, &ctx);
    Agentz__V1__ListTasksResponse *resp;
    az_err err = az_task_list(api->pg, &ctx, &q, az_call_arena(c), &resp, msg);
    if (err == AZ_OK) *out = &resp->base;
    return err;
}

static az_err cancel_task(az_call *c, const ProtobufCMessage *in, ProtobufCMessage **out, char *msg)
{
    az_task_api *api = az_call_data(c);
    const Agentz__V1__CancelTaskRequest *req = (const void *)in;
    if (!*req->id) return az_fail(msg, AZ_ERR_INVALID, "id is required");
    az_err err = az_text_check("reason", req->reason, AZ_TASK_REASON_MAX, AZ_TEXT_MULTILINE, msg);
    if (err != AZ_OK) return err;
    az_ctx ctx;
    az_call_ctx(c, &ctx);
    Agentz__V1__Task *t;
    char run_id[37];
    err = az_task_cancel(api->pg, &ctx, req->id, req->reason, az_call_arena(c), &t, run_id, msg);
    if (err != AZ_OK) return err;
    refresh_run(api, &ctx, run_id);
    *out = &t->base;
    return AZ_OK;
}

static az_err retry_task(az_call *c, const ProtobufCMessage *in, ProtobufCMessage **out, char *msg)
{
    az_task_api *api = az_call_data(c);
    const Agentz__V1__RetryTaskRequest *req = (const void *)in;
    if (!*req->id) return az_fail(msg, AZ_ERR_INVALID, "id is required");
    az_arena *a = az_call_arena(c);
    az_ctx ctx;
    az_call_ctx(c, &ctx);
    Agentz__V1__Task *t;
    char run_id[37];
    az_task_ready ready = {.arena = a};
    az_err err = az_task_retry(api->pg, &ctx, req->id, a, &t, run_id, &ready, msg);
    if (err != AZ_OK) return err;
    publish(api, &ctx, &ready);
    refresh_run(api, &ctx, run_id);
    *out = &t->base;
    return AZ_OK;
}

static az_err list_attempts(az_call *c, const ProtobufCMessage *in, ProtobufCMessage **out, char *msg)
{
    az_task_api *api = az_call_data(c);
    const Agentz__V1__ListTaskAttemptsRequest *req = (const void *)in;
    if (!*req->task_id) return az_fail(msg, AZ_ERR_INVALID, "task_id is required");
    if (req->page_size < 0) return az_fail(msg, AZ_ERR_INVALID, "page_size: must not be negative");
    az_ctx ctx;
    az_call_ctx(c, &ctx);
    Agentz__V1__ListTaskAttemptsResponse *resp;
    az_err err = az_task_list_attempts(api->pg, &ctx, req->task_id, clamp_page(req->page_size),
                                       req->page_token, az_call_arena(c), &resp, msg);
    if (err == AZ_OK) *out = &resp->base;
    return err;
}

static az_err task_stats(az_call *c, const ProtobufCMessage *in, ProtobufCMessage **out, char *msg)
{
    az_task_api *api = az_call_data(c);
    const Agentz__V1__GetTaskStatsRequest *req = (const void *)in;
    if (*req->agent_id && !az_text_is_uuid(req->agent_id))
        return az_fail(msg, AZ_ERR_INVALID, "agent_id: \"%.64s\" is not an agent id", req->agent_id);
    const Google__Protobuf__Timestamp *ts[2] = {req->start_time, req->end_time};
    static const char *const names[2] = {"start_time", "end_time"};
    for (int i = 0; i < 2; i++) {
        if (ts[i] && (ts[i]->seconds < 0 || ts[i]->nanos < 0 || ts[i]->nanos > 999999999 ||
                      ts[i]->seconds > 253402300799LL))
            return az_fail(msg, AZ_ERR_INVALID, "%s: not a valid timestamp", names[i]);
    }
    int64_t end;
    if (req->end_time) end = timestamp_to_us(req->end_time);
    else {
        struct timespec now;
        clock_gettime(CLOCK_REALTIME, &now);
        end = (int64_t)now.tv_sec * 1000000 + now.tv_nsec / 1000;
    }
    int64_t start = req->start_time ? timestamp_to_us(req->start_time) : end - STATS_WINDOW_US;
    if (start >= end) return az_fail(msg, AZ_ERR_INVALID, "start_time: must be before end_time");
    if (start == 0) start = 1; /* 0 means "unbounded" to the service */
    az_ctx ctx;
    az_call_ctx(c, &ctx);
    Agentz__V1__TaskStats *st;
    az_err err = az_task_stats(api->pg, &ctx, start, end, req->agent_id, az_call_arena(c), &st, msg);
    if (err == AZ_OK) *out = &st->base;
    return err;
}

/* WatchTask: the watch engine replays the task's stored events, then streams live ones. */
static az_err watch_task(az_call *c, const ProtobufCMessage *in, char *msg)
{
    az_task_api *api = az_call_data(c);
    const Agentz__V1__WatchTaskRequest *req = (const void *)in;
    if (!*req->task_id) return az_fail(msg, AZ_ERR_INVALID, "task_id is required");
    if (!az_text_is_uuid(req->task_id))
        return az_fail(msg, AZ_ERR_INVALID, "task_id: \"%.64s\" is not a task id", req->task_id);
    if (req->after_sequence < 0)
        return az_fail(msg, AZ_ERR_INVALID, "after_sequence: must not be negative");
    if (!api->watch)
        return az_fail(msg, AZ_ERR_UNAVAILABLE, "WatchTask is not served by this process (no event hub)");
    az_watch_request w = {.kind = AZ_WATCH_TASK,
                          .id = req->task_id,
                          .after_sequence = req->after_sequence,
                          .include_tokens = req->include_tokens};
    return az_watch_serve(api->watch, c, &w, msg);
}

az_task_api *az_task_api_new(az_pg *pg, az_redis *redis)
{
    az_task_api *api = calloc(1, sizeof *api);
    if (!api) return NULL;
    api->pg = pg;
    api->redis = redis;
    api->max_message_bytes = 4 << 20;
    const az_method m[] = {
        {"/agentz.v1.TaskService/CreateTask", AZ_RPC_UNARY,
         &agentz__v1__create_task_request__descriptor, &agentz__v1__task__descriptor,
         .unary = create_task, .data = api},
        {"/agentz.v1.TaskService/CreateTasks", AZ_RPC_UNARY,
         &agentz__v1__create_tasks_request__descriptor,
         &agentz__v1__create_tasks_response__descriptor, .unary = create_tasks, .data = api},
        {"/agentz.v1.TaskService/GetTask", AZ_RPC_UNARY, &agentz__v1__get_task_request__descriptor,
         &agentz__v1__task__descriptor, .unary = get_task, .data = api},
        {"/agentz.v1.TaskService/ListTasks", AZ_RPC_UNARY,
         &agentz__v1__list_tasks_request__descriptor, &agentz__v1__list_tasks_response__descriptor,
         .unary = list_tasks, .data = api},
        {"/agentz.v1.TaskService/CancelTask", AZ_RPC_UNARY,
         &agentz__v1__cancel_task_request__descriptor, &agentz__v1__task__descriptor,
         .unary = cancel_task, .data = api},
        {"/agentz.v1.TaskService/RetryTask", AZ_RPC_UNARY,
         &agentz__v1__retry_task_request__descriptor, &agentz__v1__task__descriptor,
         .unary = retry_task, .data = api},
        {"/agentz.v1.TaskService/ListTaskAttempts", AZ_RPC_UNARY,
         &agentz__v1__list_task_attempts_request__descriptor,
         &agentz__v1__list_task_attempts_response__descriptor, .unary = list_attempts, .data = api},
        {"/agentz.v1.TaskService/GetTaskStats", AZ_RPC_UNARY,
         &agentz__v1__get_task_stats_request__descriptor, &agentz__v1__task_stats__descriptor,
         .unary = task_stats, .data = api},
        {"/agentz.v1.TaskService/WatchTask", AZ_RPC_SERVER_STREAM,
         &agentz__v1__watch_task_request__descriptor, &agentz__v1__event__descriptor,
         .stream = watch_task, .data = api},
    };
    memcpy(api->methods, m, sizeof m);
    return api;
}

void az_task_api_free(az_task_api *api) { free(api); }

const az_method *az_task_api_methods(az_task_api *api, size_t *n)
{
    *n = sizeof api->methods / sizeof *api->methods;
    return api->methods;
}

void az_task_api_set_watch(az_task_api *api, az_watch *w) { api->watch = w; }

void az_task_api_set_max_message_bytes(az_task_api *api, int bytes)
{
    api->max_message_bytes = bytes > 0 ? (size_t)bytes : 4 << 20;
}

void az_task_api_set_run_hook(az_task_api *api,
                              az_err (*fn)(void *arg, const az_ctx *ctx, const char *run_id, char *msg),
                              void *arg)
{
    api->run_hook = fn;
    api->run_hook_arg = arg;
}
