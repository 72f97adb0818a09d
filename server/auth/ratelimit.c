/* GCRA rate limits in Redis: one script checks every bucket a call counts against and, only if
 * all allow it, advances them all. Time comes from Redis' TIME so replicas agree; keys expire
 * once their bucket is full again, so idle principals cost nothing. */
#include "auth/ratelimit.h"

#include <math.h>
#include <openssl/sha.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/ctx.h"
#include "core/log.h"

#define WARN_EVERY_MS 10000 /* at most one "redis unavailable" warning per this */
#define BACKOFF_MS 1000     /* after a failure, fail open without asking Redis for this long */
#define MAX_BUCKETS 3

/* KEYS[i] is a bucket; ARGV[2i-1] its emission interval T and ARGV[2i] its burst tolerance
 * T * burst, both in microseconds. A bucket stores its theoretical arrival time (TAT, µs). A
 * call is allowed when the new TAT (max(TAT, now) + T) is at most now + tolerance. Returns
 * {1, 0, 0} when allowed, else {0, index of the bucket that frees up last, wait in µs}. TAT
 * values are written with %.0f: Lua's default number format would round them to 14 digits. */
static const char SCRIPT[] =
    "local t = redis.call('TIME')\n"
    "local now = tonumber(t[1]) * 1000000 + tonumber(t[2])\n"
    "local tats, worst, wait = {}, 0, 0\n"
    "for i = 1, #KEYS do\n"
    "  local interval, tolerance = tonumber(ARGV[2 * i - 1]), tonumber(ARGV[2 * i])\n"
    "  local tat = tonumber(redis.call('GET', KEYS[i])) or now\n"
    "  if tat < now then tat = now end\n"
    "  local new = tat + interval\n"
    "  if new - now > tolerance then\n"
    "    if new - now - tolerance > wait then worst, wait = i, new - now - tolerance end\n"
    "  end\n"
    "  tats[i] = new\n"
    "end\n"
    "if worst > 0 then return {0, worst, wait} end\n"
    "for i = 1, #KEYS do\n"
    "  redis.call('SET', KEYS[i], string.format('%.0f', tats[i]),\n"
    "             'PX', math.floor((tats[i] - now) / 1000) + 1)\n"
    "end\n"
    "return {1, 0, 0}\n";

typedef enum bucket_kind { B_PRINCIPAL, B_WORKSPACE, B_EXPENSIVE } bucket_kind;

/* What each bucket is called in keys and messages, and its default burst per unit of rate. */
static const struct {
    const char *key;
    const char *label;
    double burst_factor;
} KINDS[] = {
    [B_PRINCIPAL] = {"agentz:rl:p:", "principal", 2},
    [B_WORKSPACE] = {"agentz:rl:w:", "workspace", 2},
    [B_EXPENSIVE] = {"agentz:rl:e:", "principal (expensive calls)", 4},
};

typedef struct bucket {
    int on;
    long long interval_us;  /* T = 1 s / rate */
    long long tolerance_us; /* T * burst */
} bucket;

struct az_ratelimit {
    az_redis *redis;
    bucket buckets[MAX_BUCKETS]; /* indexed by bucket_kind */
    char sha[41];
    pthread_mutex_t mu;
    int64_t last_warn_ms; /* guarded by mu */
    int64_t down_until_ms;
};

void az_ratelimit_defaults(az_ratelimit_config *cfg)
{
    cfg->principal = (az_ratelimit_rule){AZ_RATELIMIT_PRINCIPAL_RATE, AZ_RATELIMIT_PRINCIPAL_BURST};
    cfg->workspace = (az_ratelimit_rule){AZ_RATELIMIT_WORKSPACE_RATE, AZ_RATELIMIT_WORKSPACE_BURST};
    cfg->expensive = (az_ratelimit_rule){AZ_RATELIMIT_EXPENSIVE_RATE, AZ_RATELIMIT_EXPENSIVE_BURST};
}

az_err az_ratelimit_parse_rule(const char *name, const char *text, az_ratelimit_rule *out,
                               char *msg)
{
    char *end = NULL;
    double rate = text ? strtod(text, &end) : -1;
    long burst = 0;
    if (end && end != text && *end == ':') {
        const char *b = end + 1;
        burst = strtol(b, &end, 10);
        if (end == b || burst <= 0 || burst > 1000000) end = NULL;
    }
    if (!end || end == text || *end || !isfinite(rate) || rate < 0 || rate > 1e6)
        return az_fail(msg, AZ_ERR_INVALID,
                       "%s: expected RATE or RATE:BURST (requests per second, 0 = off), got \"%s\"",
                       name, text ? text : "");
    out->rate = rate;
    out->burst = (int)burst;
    return AZ_OK;
}

static void set_bucket(bucket *b, const az_ratelimit_rule *r, bucket_kind kind)
{
    b->on = r->rate > 0;
    if (!b->on) return;
    double burst = r->burst > 0 ? r->burst : ceil(r->rate * KINDS[kind].burst_factor);
    if (burst < 1) burst = 1;
    double interval = 1e6 / r->rate;
    b->interval_us = interval < 1 ? 1 : (long long)llround(interval);
    b->tolerance_us = (long long)llround(b->interval_us * burst);
}

az_err az_ratelimit_new(az_redis *r, const az_ratelimit_config *cfg, az_ratelimit **out, char *msg)
{
    *out = NULL;
    if (cfg->principal.rate < 0 || cfg->workspace.rate < 0 || cfg->expensive.rate < 0)
        return az_fail(msg, AZ_ERR_INVALID, "rate limits must not be negative");
    az_ratelimit *rl = calloc(1, sizeof *rl);
    if (!rl) return az_fail(msg, AZ_ERR_NOMEM, "out of memory");
    rl->redis = r;
    set_bucket(&rl->buckets[B_PRINCIPAL], &cfg->principal, B_PRINCIPAL);
    set_bucket(&rl->buckets[B_WORKSPACE], &cfg->workspace, B_WORKSPACE);
    set_bucket(&rl->buckets[B_EXPENSIVE], &cfg->expensive, B_EXPENSIVE);
    /* EVALSHA names the script by the SHA-1 of its text, which we know without asking. */
    unsigned char d[SHA_DIGEST_LENGTH];
    SHA1((const unsigned char *)SCRIPT, sizeof SCRIPT - 1, d);
    for (int i = 0; i < SHA_DIGEST_LENGTH; i++) snprintf(rl->sha + 2 * i, 3, "%02x", d[i]);
    pthread_mutex_init(&rl->mu, NULL);
    *out = rl;
    return AZ_OK;
}

void az_ratelimit_free(az_ratelimit *rl)
{
    if (!rl) return;
    pthread_mutex_destroy(&rl->mu);
    free(rl);
}

/* Availability over strictness: a Redis outage must not take the API down with it. */
static az_err fail_open(az_ratelimit *rl, const char *why)
{
    int64_t now = az_now_ms();
    pthread_mutex_lock(&rl->mu);
    rl->down_until_ms = now + BACKOFF_MS;
    int warn = rl->last_warn_ms == 0 || now - rl->last_warn_ms >= WARN_EVERY_MS;
    if (warn) rl->last_warn_ms = now;
    pthread_mutex_unlock(&rl->mu);
    if (warn) az_warn("cannot check rate limits, allowing calls: %s", why);
    return AZ_OK;
}

az_err az_ratelimit_check(void *arg, const az_principal *p, const az_perm *perm, char *msg)
{
    az_ratelimit *rl = arg;
    if (!rl || !p || !p->id[0] || !perm || perm->role == AZ_PERM_PUBLIC) return AZ_OK;
    pthread_mutex_lock(&rl->mu);
    int down = az_now_ms() < rl->down_until_ms;
    pthread_mutex_unlock(&rl->mu);
    if (down) return AZ_OK;

    /* EVALSHA sha numkeys key... arg...: at most 3 buckets, 2 arguments each. */
    char keys[MAX_BUCKETS][200], args[MAX_BUCKETS * 2][24], nkeys[12];
    const char *argv[3 + MAX_BUCKETS * 3];
    bucket_kind kinds[MAX_BUCKETS];
    int n = 0;
    for (int k = 0; k < MAX_BUCKETS; k++) {
        const bucket *b = &rl->buckets[k];
        const char *who = k == B_WORKSPACE ? p->workspace_id : p->id;
        if (!b->on || (k == B_EXPENSIVE && !perm->expensive) || !who[0]) continue;
        snprintf(keys[n], sizeof keys[n], "%s%s", KINDS[k].key, who);
        snprintf(args[2 * n], sizeof args[2 * n], "%lld", b->interval_us);
        snprintf(args[2 * n + 1], sizeof args[2 * n + 1], "%lld", b->tolerance_us);
        kinds[n++] = (bucket_kind)k;
    }
    if (n == 0) return AZ_OK;
    snprintf(nkeys, sizeof nkeys, "%d", n);
    int argc = 0;
    argv[argc++] = "EVALSHA";
    argv[argc++] = rl->sha;
    argv[argc++] = nkeys;
    for (int i = 0; i < n; i++) argv[argc++] = keys[i];
    for (int i = 0; i < 2 * n; i++) argv[argc++] = args[i];

    char m[AZ_MSG_MAX];
    redisReply *rep = NULL;
    az_err err = az_redis_command(rl->redis, argc, argv, NULL, &rep, m);
    if (err == AZ_ERR_INTERNAL && strstr(m, "NOSCRIPT")) {
        /* Redis restarted or SCRIPT FLUSH: EVAL sends the text and caches it again. */
        argv[0] = "EVAL";
        argv[1] = SCRIPT;
        err = az_redis_command(rl->redis, argc, argv, NULL, &rep, m);
    }
    if (err != AZ_OK) return fail_open(rl, m);
    if (rep->type != REDIS_REPLY_ARRAY || rep->elements != 3 ||
        rep->element[0]->type != REDIS_REPLY_INTEGER || rep->element[1]->type != REDIS_REPLY_INTEGER ||
        rep->element[2]->type != REDIS_REPLY_INTEGER) {
        freeReplyObject(rep);
        return fail_open(rl, "unexpected reply from the rate-limit script");
    }
    long long allowed = rep->element[0]->integer, which = rep->element[1]->integer;
    long long wait_us = rep->element[2]->integer;
    freeReplyObject(rep);
    if (allowed) return AZ_OK;
    if (which < 1 || which > n) return fail_open(rl, "rate-limit script named no bucket");
    /* Round up so a client that waits exactly this long gets through. */
    long long ms = (wait_us + 999) / 1000;
    if (ms < 1) ms = 1;
    return az_fail(msg, AZ_ERR_EXHAUSTED, "rate limit exceeded for %s: retry in %lld.%03lld s",
                   KINDS[kinds[which - 1]].label, ms / 1000, ms % 1000);
}
