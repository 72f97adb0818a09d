/* max_rpm: an agent's model calls per minute, enforced across every worker with one Redis
 * GCRA bucket per agent (key agentz:agents:rpm:<workspace>:<agent>). */
#ifndef AZ_RPM_H
#define AZ_RPM_H

#include <stdint.h>

#include "core/err.h"
#include "store/redis.h"

/* Takes one call from the agent's budget of max_rpm per minute (max_rpm <= 0: always allowed).
 * *wait_ms = 0 when the call may go now (and was counted), else how long to wait before asking
 * again (nothing counted). Blocking (one round trip): call off the event loop.
 * AZ_ERR_UNAVAILABLE when Redis is down (callers then let the call go and log). */
az_err az_rpm_acquire(az_redis *r, const char *workspace_id, const char *agent_id, int max_rpm,
                      int64_t *wait_ms, char *msg);

#endif
