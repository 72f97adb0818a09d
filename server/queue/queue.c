/* Publishing ready tasks to the Redis stream: batched, bounded by MAXLEN ~, one round trip per
 * batch. */
#include "queue.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BATCH 500

/* One EVAL adds a whole batch: the shared connection is used by other threads between calls,
 * so MULTI/EXEC or client-side pipelining could interleave with their commands. */
static const char publish_script[] =
    "for i = 3, #ARGV do"
    " redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'task', ARGV[i], 'workspace', ARGV[2])"
    " end return #ARGV - 2";

az_err az_queue_publish(az_redis *r, const char *workspace_id, const az_task_ready *ready, char *msg)
{
    if (!ready || ready->n == 0) return AZ_OK;
    enum { FIXED = 6 };
    const char *argv[FIXED + BATCH];
    char maxlen[24];
    snprintf(maxlen, sizeof maxlen, "%d", AZ_QUEUE_MAXLEN);
    argv[0] = "EVAL";
    argv[1] = publish_script;
    argv[2] = "1";
    argv[3] = AZ_QUEUE_STREAM;
    argv[4] = maxlen;
    argv[5] = workspace_id;
    for (size_t off = 0; off < ready->n; off += BATCH) {
        size_t k = ready->n - off < BATCH ? ready->n - off : BATCH;
        for (size_t i = 0; i < k; i++) argv[FIXED + i] = ready->ids[off + i];
        redisReply *reply = NULL;
        az_err err = az_redis_command(r, (int)(FIXED + k), argv, NULL, &reply, msg);
        if (err != AZ_OK) {
            char inner[AZ_MSG_MAX];
            snprintf(inner, sizeof inner, "%s", msg ? msg : "");
            return az_fail(msg, err, "cannot publish %zu ready tasks to %s: %s", ready->n - off,
                           AZ_QUEUE_STREAM, inner);
        }
        freeReplyObject(reply);
    }
    return AZ_OK;
}

az_err az_queue_depth(az_redis *r, long long *n, char *msg)
{
    *n = 0;
    const char *argv[2] = {"XLEN", AZ_QUEUE_STREAM};
    redisReply *reply = NULL;
    az_err err = az_redis_command(r, 2, argv, NULL, &reply, msg);
    if (err != AZ_OK) return err;
    if (reply->type == REDIS_REPLY_INTEGER) *n = reply->integer;
    else err = az_fail(msg, AZ_ERR_INTERNAL, "XLEN %s: unexpected reply type %d", AZ_QUEUE_STREAM,
                       reply->type);
    freeReplyObject(reply);
    return err;
}

/* The integer value of key in one XINFO CONSUMERS entry (a flat name/value array in RESP2); -1
 * when absent. */
static long long field(const redisReply *entry, const char *key)
{
    if (entry->type != REDIS_REPLY_ARRAY) return -1;
    for (size_t i = 0; i + 1 < entry->elements; i += 2) {
        const redisReply *k = entry->element[i], *v = entry->element[i + 1];
        if (k->type == REDIS_REPLY_STATUS || k->type == REDIS_REPLY_STRING) {
            if (strcmp(k->str, key) == 0 && v->type == REDIS_REPLY_INTEGER) return v->integer;
        }
    }
    return -1;
}

/* Consumers of group that read within max_idle_ms (XINFO CONSUMERS). */
static az_err recent_consumers(az_redis *r, const char *group, long long max_idle_ms, int *n, char *msg)
{
    const char *argv[4] = {"XINFO", "CONSUMERS", AZ_QUEUE_STREAM, group};
    redisReply *reply = NULL;
    char why[AZ_MSG_MAX];
    az_err err = az_redis_command(r, 4, argv, NULL, &reply, why);
    if (err == AZ_ERR_INTERNAL && (strstr(why, "no such key") || strstr(why, "NOGROUP")))
        return AZ_OK; /* nobody has created the stream or the group: no worker ever started */
    if (err != AZ_OK) return az_fail(msg, err, "%s", why);
    if (reply->type != REDIS_REPLY_ARRAY) {
        err = az_fail(msg, AZ_ERR_INTERNAL, "XINFO CONSUMERS %s: unexpected reply type %d", AZ_QUEUE_STREAM,
                      reply->type);
    } else {
        for (size_t i = 0; i < reply->elements; i++) {
            long long idle = field(reply->element[i], "idle");
            if (idle >= 0 && idle < max_idle_ms) (*n)++;
        }
    }
    freeReplyObject(reply);
    return err;
}

az_err az_queue_workers(az_redis *r, const char *group, long long max_idle_ms, int *n, char *msg)
{
    *n = 0;
    const char *argv[4] = {"CLIENT", "LIST", "TYPE", "normal"};
    redisReply *reply = NULL;
    char why[AZ_MSG_MAX];
    az_err err = az_redis_command(r, 4, argv, NULL, &reply, why);
    if (err == AZ_ERR_INTERNAL) return recent_consumers(r, group, max_idle_ms, n, msg);
    if (err != AZ_OK) return az_fail(msg, err, "%s", why);
    if (reply->type != REDIS_REPLY_STRING) {
        err = az_fail(msg, AZ_ERR_INTERNAL, "CLIENT LIST: unexpected reply type %d", reply->type);
    } else {
        /* One line per client: "id=7 addr=... cmd=xreadgroup user=default ..." */
        for (const char *p = reply->str; (p = strstr(p, " cmd=xreadgroup ")) != NULL; p++) (*n)++;
    }
    freeReplyObject(reply);
    return err;
}
