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
