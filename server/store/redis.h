/* A synchronous Redis connection for commands (health, counters, queue publishing), guarded by
 * a mutex and re-established on failure. Pub/sub and blocking reads need their own connections. */
#ifndef AZ_REDIS_H
#define AZ_REDIS_H

#include <hiredis/hiredis.h>

#include "../core/err.h"

typedef struct az_redis az_redis;

/* Parsed form of a Redis URL: redis://[[user]:password@]host[:port][/db] or
 * unix:///path/sock[?db=N]. */
typedef struct az_redis_url {
    char host[256]; /* empty for unix sockets */
    int port;
    char path[256]; /* unix socket path */
    char username[128];
    char password[256];
    int db;
} az_redis_url;

/* Parses url into *out. AZ_ERR_INVALID with msg naming the problem; *out unspecified then. */
az_err az_redis_parse_url(const char *url, az_redis_url *out, char *msg);

/* Connects (retrying for up to wait_ms while the server starts). On error *out is NULL. */
az_err az_redis_new(const char *url, int wait_ms, az_redis **out, char *msg);
void az_redis_free(az_redis *r); /* accepts NULL */

/* Runs one command (argv form, binary-safe) and returns its reply, which the caller frees with
 * freeReplyObject. A Redis error reply is returned as AZ_ERR_INTERNAL with its text in msg;
 * a lost connection is retried once, then AZ_ERR_UNAVAILABLE. */
az_err az_redis_command(az_redis *r, int argc, const char **argv, const size_t *argvlen,
                        redisReply **reply, char *msg);

/* Health check: PING answered with PONG. */
az_err az_redis_ping(az_redis *r, char *msg);

#endif
