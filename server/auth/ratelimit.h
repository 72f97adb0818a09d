/* Rate limits per principal, per workspace and for expensive calls: GCRA buckets in Redis, checked
 * and updated by one Lua script using Redis' clock, so every agentzd replica shares them. Owns the
 * agentz:rl:* keys. Plugs into the authorizer with az_auth_set_limiter(auth, az_ratelimit_check, rl). */
#ifndef AZ_RATELIMIT_H
#define AZ_RATELIMIT_H

#include "auth/perm.h"
#include "core/err.h"
#include "rpc/rpc.h"
#include "store/redis.h"

/* Defaults: requests per second and burst. */
#define AZ_RATELIMIT_PRINCIPAL_RATE 50
#define AZ_RATELIMIT_PRINCIPAL_BURST 100
#define AZ_RATELIMIT_WORKSPACE_RATE 200
#define AZ_RATELIMIT_WORKSPACE_BURST 400
#define AZ_RATELIMIT_EXPENSIVE_RATE 5
#define AZ_RATELIMIT_EXPENSIVE_BURST 20

/* One bucket: rate requests per second on average, up to burst at once. rate 0 = unlimited. */
typedef struct az_ratelimit_rule {
    double rate;
    int burst; /* 0 = the default multiple of rate (see az_ratelimit_parse_rule) */
} az_ratelimit_rule;

typedef struct az_ratelimit_config {
    az_ratelimit_rule principal; /* every call of one principal (AGENTZ_RATE_LIMIT) */
    az_ratelimit_rule workspace; /* every call into one workspace (AGENTZ_RATE_LIMIT_WORKSPACE) */
    az_ratelimit_rule expensive; /* az_perm.expensive calls of one principal, on top
                                    (AGENTZ_RATE_LIMIT_EXPENSIVE) */
} az_ratelimit_config;

typedef struct az_ratelimit az_ratelimit;

/* Fills cfg with the defaults above. */
void az_ratelimit_defaults(az_ratelimit_config *cfg);

/* Parses "RATE" or "RATE:BURST" (RATE a non-negative number of requests per second, BURST a
 * positive integer; "0" disables) into *out. Without BURST, burst is 0 (the module's default:
 * twice the rate for principal and workspace buckets, four times for expensive calls, at least
 * 1). AZ_ERR_INVALID with msg naming name ("AGENTZ_RATE_LIMIT: expected RATE or RATE:BURST")
 * leaves *out unchanged. */
az_err az_ratelimit_parse_rule(const char *name, const char *text, az_ratelimit_rule *out,
                               char *msg);

/* Creates a limiter on r (borrowed: must outlive the limiter; a connection of its own keeps
 * the limiter's round trip off other users' mutex). cfg is copied. Never touches Redis here,
 * so it cannot fail but for memory: AZ_ERR_NOMEM, or AZ_ERR_INVALID for a negative rate.
 * Free with az_ratelimit_free (accepts NULL). */
az_err az_ratelimit_new(az_redis *r, const az_ratelimit_config *cfg, az_ratelimit **out, char *msg);
void az_ratelimit_free(az_ratelimit *rl);

/* The limiter hook (arg is the az_ratelimit). Counts one call of p against its principal and
 * workspace buckets, and its expensive bucket when perm->expensive. A call denied by one bucket
 * consumes none. Public methods (perm NULL or AZ_PERM_PUBLIC) and anonymous principals are not
 * limited. Returns AZ_OK, or AZ_ERR_EXHAUSTED with msg "rate limit exceeded for principal: retry
 * in 1.234 s" ("workspace", "principal (expensive calls)"). When Redis is unreachable or fails
 * it fails OPEN (AZ_OK) and logs a warning at most once per 10 s; after a failure Redis is
 * not asked again for 1 s, so a dead Redis does not add its connect timeout to every call.
 * Thread-safe. */
az_err az_ratelimit_check(void *arg, const az_principal *p, const az_perm *perm, char *msg);

#endif
