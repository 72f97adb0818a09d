/* Mutex-guarded hiredis context with URL parsing, timeouts and one transparent reconnect. */
#include "redis.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <unistd.h>

#include "../core/ctx.h"
#include "../core/log.h"
#include "../system/prom.h"

struct az_redis {
    az_redis_url url;
    char *text; /* for messages */
    redisContext *ctx;
    pthread_mutex_t mu;
};

static int copy(char *dst, size_t cap, const char *src, size_t n)
{
    if (n >= cap) return -1;
    memcpy(dst, src, n);
    dst[n] = '\0';
    return 0;
}

/* url for messages: a password is replaced by "***" (messages end up in logs). */
static const char *redact(const char *url, char *buf, size_t cap)
{
    const char *at = strncmp(url, "redis://", 8) == 0 ? strrchr(url + 8, '@') : NULL;
    if (!at) return url;
    snprintf(buf, cap, "redis://***%s", at);
    return buf;
}

az_err az_redis_parse_url(const char *url, az_redis_url *out, char *msg)
{
    char shown[320];
    const char *u = redact(url, shown, sizeof shown);
    memset(out, 0, sizeof *out);
    out->port = 6379;
    if (strncmp(url, "unix://", 7) == 0) {
        const char *p = url + 7;
        const char *q = strchr(p, '?');
        size_t n = q ? (size_t)(q - p) : strlen(p);
        if (n == 0 || p[0] != '/' || copy(out->path, sizeof out->path, p, n))
            return az_fail(msg, AZ_ERR_INVALID, "redis url %s: expected unix:///absolute/path", u);
        if (q) {
            if (strncmp(q, "?db=", 4) != 0)
                return az_fail(msg, AZ_ERR_INVALID, "redis url %s: only ?db=N is supported", u);
            char *end;
            long db = strtol(q + 4, &end, 10);
            if (end == q + 4 || *end || db < 0 || db > 15)
                return az_fail(msg, AZ_ERR_INVALID, "redis url %s: db must be 0..15", u);
            out->db = (int)db;
        }
        return AZ_OK;
    }
    if (strncmp(url, "redis://", 8) != 0)
        return az_fail(msg, AZ_ERR_INVALID,
                       "redis url %s: expected redis://host:port/db or unix:///path", u);
    const char *p = url + 8;
    const char *at = strrchr(p, '@');
    if (at) {
        /* redis://[username]:password@host (Redis 6 ACL users); a bare "user@" has no password. */
        const char *colon = memchr(p, ':', (size_t)(at - p));
        if (!colon)
            return az_fail(msg, AZ_ERR_INVALID,
                           "redis url %s: a user needs a password (redis://user:password@host)", u);
        if (copy(out->username, sizeof out->username, p, (size_t)(colon - p)))
            return az_fail(msg, AZ_ERR_INVALID, "redis url: username too long");
        if (copy(out->password, sizeof out->password, colon + 1, (size_t)(at - colon - 1)))
            return az_fail(msg, AZ_ERR_INVALID, "redis url: password too long");
        p = at + 1;
    }
    size_t hn = strcspn(p, ":/");
    if (hn == 0 || copy(out->host, sizeof out->host, p, hn))
        return az_fail(msg, AZ_ERR_INVALID, "redis url %s: missing or overlong host", u);
    p += hn;
    if (*p == ':') {
        char *end;
        long port = strtol(p + 1, &end, 10);
        if (end == p + 1 || port < 1 || port > 65535 || (*end && *end != '/'))
            return az_fail(msg, AZ_ERR_INVALID, "redis url %s: port must be 1..65535", u);
        out->port = (int)port;
        p = end;
    }
    if (*p == '/' && p[1]) {
        char *end;
        long db = strtol(p + 1, &end, 10);
        if (*end || db < 0 || db > 15)
            return az_fail(msg, AZ_ERR_INVALID, "redis url %s: db must be 0..15", u);
        out->db = (int)db;
    }
    return AZ_OK;
}

static redisContext *dial(const az_redis_url *u, const char *text, char *msg)
{
    struct timeval tv = {2, 0};
    redisContext *c = u->path[0] ? redisConnectUnixWithTimeout(u->path, tv)
                                 : redisConnectWithTimeout(u->host, u->port, tv);
    if (!c || c->err) {
        az_fail(msg, AZ_ERR_UNAVAILABLE, "cannot connect to redis %s: %s", text,
                c ? c->errstr : "out of memory");
        if (c) redisFree(c);
        return NULL;
    }
    redisSetTimeout(c, tv);
    if (u->password[0]) {
        redisReply *r = u->username[0] ? redisCommand(c, "AUTH %s %s", u->username, u->password)
                                       : redisCommand(c, "AUTH %s", u->password);
        int ok = r && r->type != REDIS_REPLY_ERROR;
        if (r) freeReplyObject(r);
        if (!ok) {
            az_fail(msg, AZ_ERR_UNAVAILABLE, "cannot authenticate to redis %s", text);
            redisFree(c);
            return NULL;
        }
    }
    if (u->db) {
        redisReply *r = redisCommand(c, "SELECT %d", u->db);
        int ok = r && r->type != REDIS_REPLY_ERROR;
        if (r) freeReplyObject(r);
        if (!ok) {
            az_fail(msg, AZ_ERR_UNAVAILABLE, "cannot select redis db %d on %s", u->db, text);
            redisFree(c);
            return NULL;
        }
    }
    return c;
}

az_err az_redis_new(const char *url, int wait_ms, az_redis **out, char *msg)
{
    *out = NULL;
    az_redis *r = calloc(1, sizeof *r);
    if (!r) return az_fail(msg, AZ_ERR_NOMEM, "out of memory");
    az_err err = az_redis_parse_url(url, &r->url, msg);
    if (err != AZ_OK) {
        free(r);
        return err;
    }
    /* Never echo a password into logs. */
    r->text = strdup(r->url.path[0] ? r->url.path : r->url.host);
    pthread_mutex_init(&r->mu, NULL);
    int64_t until = az_now_ms() + (wait_ms > 0 ? wait_ms : 0);
    while (!(r->ctx = dial(&r->url, r->text, msg))) {
        if (az_now_ms() >= until) {
            az_redis_free(r);
            return AZ_ERR_UNAVAILABLE;
        }
        usleep(200 * 1000);
    }
    *out = r;
    return AZ_OK;
}

void az_redis_free(az_redis *r)
{
    if (!r) return;
    if (r->ctx) redisFree(r->ctx);
    pthread_mutex_destroy(&r->mu);
    free(r->text);
    free(r);
}

/* Error replies callers expect and handle, which agentz_redis_errors_total leaves out: the group
 * exists (XGROUP CREATE), a script to load first (EVALSHA), no stream or group yet (XINFO). */
static int expected_error(const char *e)
{
    static const char *const EXPECTED[] = {"BUSYGROUP", "NOSCRIPT", "NOGROUP", "ERR no such key"};
    for (size_t i = 0; i < sizeof EXPECTED / sizeof *EXPECTED; i++)
        if (strncmp(e, EXPECTED[i], strlen(EXPECTED[i])) == 0) return 1;
    return 0;
}

az_err az_redis_command(az_redis *r, int argc, const char **argv, const size_t *argvlen,
                        redisReply **reply, char *msg)
{
    *reply = NULL;
    pthread_mutex_lock(&r->mu);
    redisReply *rep = NULL;
    for (int attempt = 0; attempt < 2 && !rep; attempt++) {
        if (!r->ctx && !(r->ctx = dial(&r->url, r->text, msg))) break;
        rep = redisCommandArgv(r->ctx, argc, argv, argvlen);
        if (!rep) {
            /* The connection is unusable after an I/O error: drop it and dial again once. */
            az_warn("redis command %s on %s failed: %s", argv[0], r->text, r->ctx->errstr);
            redisFree(r->ctx);
            r->ctx = NULL;
        }
    }
    pthread_mutex_unlock(&r->mu);
    if (!rep || (rep->type == REDIS_REPLY_ERROR && !expected_error(rep->str))) az_prom_redis_error();
    if (!rep) return az_fail(msg, AZ_ERR_UNAVAILABLE, "redis %s unreachable", r->text);
    if (rep->type == REDIS_REPLY_ERROR) {
        az_fail(msg, AZ_ERR_INTERNAL, "redis %s: %s", argv[0], rep->str);
        freeReplyObject(rep);
        return AZ_ERR_INTERNAL;
    }
    *reply = rep;
    return AZ_OK;
}

az_err az_redis_ping(az_redis *r, char *msg)
{
    const char *argv[] = {"PING"};
    redisReply *rep;
    az_err err = az_redis_command(r, 1, argv, NULL, &rep, msg);
    if (err != AZ_OK) return err;
    int ok = rep->type == REDIS_REPLY_STATUS && strcmp(rep->str, "PONG") == 0;
    freeReplyObject(rep);
    return ok ? AZ_OK : az_fail(msg, AZ_ERR_UNAVAILABLE, "redis answered PING unexpectedly");
}
