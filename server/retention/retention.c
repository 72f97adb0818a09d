/* Data retention: each kind of row is deleted by the module that owns its table, except task
 * attempts, whose bounded delete lives here (it needs nothing of the task module's logic). */
#include "retention.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "audit/audit.h"
#include "core/log.h"
#include "event/outbox.h"

#define ATTEMPT_BATCH "1000"     /* rows per transaction */
#define ATTEMPT_MAX_ROWS 200000  /* per pass */

/* The oldest finished attempts first, a batch at a time: a range scan on task_attempts_end
 * (migration 0011), then deletes by primary key. */
static const char attempts_sql[] =
    "DELETE FROM task_attempts a USING (SELECT workspace_id, task_id, attempt FROM task_attempts"
    " WHERE end_time IS NOT NULL"
    " AND end_time < clock_timestamp() - make_interval(secs => $1::bigint / 1000.0)"
    " ORDER BY end_time LIMIT $2::integer) old"
    " WHERE a.workspace_id = old.workspace_id AND a.task_id = old.task_id AND a.attempt = old.attempt";

static az_err prune_attempts(az_pg *pg, int64_t older_than_ms, int64_t *deleted, char *msg)
{
    *deleted = 0;
    char older[24];
    snprintf(older, sizeof older, "%lld", (long long)older_than_ms);
    const char *p[2] = {older, ATTEMPT_BATCH};
    az_ctx ctx = {.workspace_id = "", .principal = "", .request_id = "retention", .deadline_ms = -1};
    az_pgconn *c;
    az_err err = az_pg_acquire(pg, &ctx, &c, msg);
    if (err != AZ_OK) return err;
    while (*deleted < ATTEMPT_MAX_ROWS) {
        PGresult *r;
        if ((err = az_pg_exec(c, &ctx, attempts_sql, 2, p, &r, msg)) != AZ_OK) break;
        int64_t n = atoll(PQcmdTuples(r));
        PQclear(r);
        *deleted += n;
        if (n == 0) break;
    }
    az_pg_release(c);
    return err;
}

az_err az_retention_run(az_pg *pg, const az_retention_policy *policy, az_retention_counts *counts,
                        char *msg)
{
    az_retention_counts local = {0, 0, 0};
    az_err first = AZ_OK, err;
    char m[AZ_MSG_MAX];
    if (policy->events_ms > 0 && (err = az_outbox_prune(pg, policy->events_ms, &local.events, m)) != AZ_OK)
        first = az_fail(msg, err, "cannot prune stored events: %s", m);
    if (policy->attempts_ms > 0 &&
        (err = prune_attempts(pg, policy->attempts_ms, &local.attempts, m)) != AZ_OK && first == AZ_OK)
        first = az_fail(msg, err, "cannot prune task attempts: %s", m);
    if (policy->audit_ms > 0 && (err = az_audit_prune(pg, policy->audit_ms, &local.audit, m)) != AZ_OK &&
        first == AZ_OK)
        first = az_fail(msg, err, "cannot prune audit entries: %s", m);
    if (counts) *counts = local;
    return first;
}

az_err az_retention_hook(void *arg, az_pg *pg, char *msg)
{
    az_retention_counts n;
    az_err err = az_retention_run(pg, arg, &n, msg);
    if (n.events || n.attempts || n.audit)
        az_info("retention deleted %lld stored events, %lld task attempts and %lld audit entries",
                (long long)n.events, (long long)n.attempts, (long long)n.audit);
    return err;
}
