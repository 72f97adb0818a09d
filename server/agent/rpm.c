/* max_rpm: one GCRA bucket per agent in Redis, checked and advanced by one Lua script so every
 * worker shares it. Time comes from Redis' TIME, so the workers' clocks do not matter; a key
 * expires once its bucket is full again, so idle agents cost nothing.
 *
 * The bucket has no burst: calls are spaced at least 60 s / max_rpm apart. Any burst B > 1 would
 * refill during the minute and let max_rpm + B - 1 calls into some 60-second window, and
 * providers count per minute (and often enforce an RPM limit per second: 60 RPM as 1 per
 * second), so even spacing is what keeps an agent under its provider's limit. */
#include "rpm.h"

#include <openssl/sha.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#define KEY_PREFIX "agentz:agents:rpm:"
#define ID_MAX 64

/* KEYS[1] is the agent's bucket: its theoretical arrival time (TAT, µs). ARGV[1] is the emission
 * interval T = 60 s / max_rpm and ARGV[2] the tolerance, both in µs (T: one call at a time). A
 * call is allowed when the new TAT (max(TAT, now) + T) is at most now + tolerance. Returns 0
 * when allowed (and counted), else the µs to wait (nothing counted). TATs are written with
 * %.0f: Lua's default number format would round them to 14 digits. */
static const char SCRIPT[] =
    "local t = redis.call('TIME')\n"
    "local now = tonumber(t[1]) * 1000000 + tonumber(t[2])\n"
    "local interval, tolerance = tonumber(ARGV[1]), tonumber(ARGV[2])\n"
    "local tat = tonumber(redis.call('GET', KEYS[1])) or now\n"
    "if tat < now then tat = now end\n"
    "local new = tat + interval\n"
    "if new - now > tolerance then return new - now - tolerance end\n"
    "redis.call('SET', KEYS[1], string.format('%.0f', new), 'PX', math.floor((new - now) / 1000) + 1)\n"
    "return 0\n";

static char sha[41];
static pthread_once_t sha_once = PTHREAD_ONCE_INIT;

/* EVALSHA names the script by the SHA-1 of its text, which we know without asking Redis. */
static void sha_init(void)
{
    unsigned char d[SHA_DIGEST_LENGTH];
    SHA1((const unsigned char *)SCRIPT, sizeof SCRIPT - 1, d);
    for (int i = 0; i < SHA_DIGEST_LENGTH; i++) snprintf(sha + 2 * i, 3, "%02x", d[i]);
}

static int id_ok(const char *s)
{
    if (!s || !*s || strlen(s) > ID_MAX) return 0;
    for (; *s; s++) {
        char c = *s;
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-'))
            return 0;
    }
    return 1;
}

az_err az_rpm_acquire(az_redis *r, const char *workspace_id, const char *agent_id, int max_rpm,
                      int64_t *wait_ms, char *msg)
{
    *wait_ms = 0;
    if (max_rpm <= 0) return AZ_OK;
    if (!id_ok(workspace_id)) return az_fail(msg, AZ_ERR_INVALID, "workspace_id: not an id");
    if (!id_ok(agent_id)) return az_fail(msg, AZ_ERR_INVALID, "agent_id: not an id");
    pthread_once(&sha_once, sha_init);
    long long interval = 60000000LL / max_rpm;
    if (interval < 1) interval = 1;
    char key[sizeof KEY_PREFIX + 2 * ID_MAX + 2], a1[24], a2[24];
    snprintf(key, sizeof key, KEY_PREFIX "%s:%s", workspace_id, agent_id);
    snprintf(a1, sizeof a1, "%lld", interval);
    snprintf(a2, sizeof a2, "%lld", interval);
    const char *argv[6] = {"EVALSHA", sha, "1", key, a1, a2};
    redisReply *rep = NULL;
    az_err err = az_redis_command(r, 6, argv, NULL, &rep, msg);
    if (err == AZ_ERR_INTERNAL && strstr(msg, "NOSCRIPT")) {
        /* Redis restarted or SCRIPT FLUSH: EVAL sends the text and caches it again. */
        argv[0] = "EVAL";
        argv[1] = SCRIPT;
        err = az_redis_command(r, 6, argv, NULL, &rep, msg);
    }
    if (err != AZ_OK) return err;
    if (rep->type != REDIS_REPLY_INTEGER || rep->integer < 0) {
        freeReplyObject(rep);
        return az_fail(msg, AZ_ERR_INTERNAL, "unexpected reply from the max_rpm script");
    }
    long long wait_us = rep->integer;
    freeReplyObject(rep);
    /* Round up so a caller that sleeps exactly this long gets through. */
    if (wait_us > 0) *wait_ms = (wait_us + 999) / 1000;
    return AZ_OK;
}
