/* CUnit suite for server/agent/agent (the agent service) against a real PostgreSQL (the embedded
 * one in a temp dir): the live status kept by az_agent_task_started / az_agent_task_ended and
 * az_agent_holder_lost (holders counted, not tasks), as GetAgent and ListAgents' status filter
 * see it, with disabling, concurrency and workspaces. */
#include <CUnit/Basic.h>
#include <ftw.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "agent/agent.h"
#include "core/log.h"
#include "core/text.h"
#include "embed/embedded.h"
#include "store/migrate.h"
#include "store/pgpool.h"

#define ST_IDLE AGENTZ__V1__AGENT_STATUS__AGENT_STATUS_IDLE
#define ST_BUSY AGENTZ__V1__AGENT_STATUS__AGENT_STATUS_BUSY
#define ST_DISABLED AGENTZ__V1__AGENT_STATUS__AGENT_STATUS_DISABLED
#define ST_ERROR AGENTZ__V1__AGENT_STATUS__AGENT_STATUS_ERROR
#define WS_B "0b0b0b0b-0000-4000-8000-00000000000b"
#define HOLDER "worker-a"
#define HOLDER_2 "worker-b"

static char dir[64];
static az_embed *embed;
static az_pg *pg;
static az_arena *arena;
static char msg[AZ_MSG_MAX];
static const az_ctx ctx = {.workspace_id = AZ_DEFAULT_WORKSPACE, .principal = "", .request_id = "t",
                           .deadline_ms = -1};
static const az_ctx ctx_b = {.workspace_id = WS_B, .principal = "", .request_id = "t",
                             .deadline_ms = -1};

static Agentz__V1__Agent *new_agent(const char *name)
{
    Agentz__V1__Agent a = AGENTZ__V1__AGENT__INIT;
    a.name = (char *)name;
    a.role = "Worker";
    a.goal = "Work";
    a.backstory = "Works";
    Agentz__V1__Agent *out = NULL;
    int replayed;
    CU_ASSERT_EQUAL_FATAL(az_agent_create(pg, &ctx, &a, "", "", arena, &out, &replayed, msg), AZ_OK);
    return out;
}

static int status_of(const char *id)
{
    Agentz__V1__Agent *g = NULL;
    CU_ASSERT_EQUAL_FATAL(az_agent_get(pg, &ctx, id, arena, &g, msg), AZ_OK);
    return (int)g->status;
}

/* Whether ListAgents with status filter s returns id. */
static int listed(int s, const char *id)
{
    az_agent_query q = {.status = s, .page_size = 1000, .page_token = ""};
    Agentz__V1__ListAgentsResponse *r = NULL;
    CU_ASSERT_EQUAL_FATAL(az_agent_list(pg, &ctx, &q, arena, &r, msg), AZ_OK);
    for (size_t i = 0; i < r->n_agents; i++) {
        if (strcmp(r->agents[i]->id, id) == 0) {
            CU_ASSERT_EQUAL(r->agents[i]->status, s);
            return 1;
        }
    }
    return 0;
}

static Agentz__V1__Agent__LabelsEntry **labels_of(size_t n, const char *const *kv)
{
    Agentz__V1__Agent__LabelsEntry **l = az_arena_alloc(arena, (n ? n : 1) * sizeof *l);
    for (size_t i = 0; i < n; i++) {
        l[i] = az_arena_alloc(arena, sizeof *l[i]);
        agentz__v1__agent__labels_entry__init(l[i]);
        l[i]->key = (char *)kv[2 * i];
        l[i]->value = (char *)kv[2 * i + 1];
    }
    return l;
}

static Agentz__V1__Agent *labeled_agent(const char *name, size_t n, const char *const *kv)
{
    Agentz__V1__Agent a = AGENTZ__V1__AGENT__INIT;
    a.name = (char *)name;
    a.role = "Worker";
    a.goal = "Work";
    a.backstory = "Works";
    a.n_labels = n;
    a.labels = labels_of(n, kv);
    Agentz__V1__Agent *out = NULL;
    int replayed;
    CU_ASSERT_EQUAL_FATAL(az_agent_create(pg, &ctx, &a, "", "", arena, &out, &replayed, msg), AZ_OK);
    return out;
}

/* Names of the agents a selector lists, newest first, comma-joined; *total gets total_size. */
static const char *selected(const char *json, int page_size, const char *token, int *total, const char **next)
{
    az_agent_query q = {.labels_json = json, .page_size = page_size, .page_token = token ? token : ""};
    Agentz__V1__ListAgentsResponse *r = NULL;
    CU_ASSERT_EQUAL_FATAL(az_agent_list(pg, &ctx, &q, arena, &r, msg), AZ_OK);
    char *names = az_arena_strdup(arena, "");
    for (size_t i = 0; i < r->n_agents; i++)
        names = az_arena_printf(arena, "%s%s%s", names, i ? "," : "", r->agents[i]->name);
    if (total) *total = r->total_size;
    if (next) *next = r->next_page_token;
    return names;
}

/* Label selectors go through agent_labels (migration 0016), kept by a trigger: all pairs must
 * match, values may hold '=' and ',', a replaced agent is found by its new labels only, a
 * deleted one not at all, pages and totals agree, and under the workspace policy (these
 * sessions are agentz_app) the look-up is an index scan of the pairs, not of the agents. */
static void test_label_selector(void)
{
    static const char *const l1[] = {"team", "ml", "tier", "gold"};
    static const char *const l2[] = {"team", "ml", "tier", "silver"};
    static const char *const l3[] = {"team", "ops", "note", "a=b,c"};
    Agentz__V1__Agent *a1 = labeled_agent("sel-1", 2, l1);
    labeled_agent("sel-2", 2, l2);
    labeled_agent("sel-3", 2, l3);
    int total = -1;
    const char *next = NULL;
    CU_ASSERT_STRING_EQUAL(selected("{\"team\":\"ml\"}", 50, NULL, &total, NULL), "sel-2,sel-1");
    CU_ASSERT_EQUAL(total, 2);
    CU_ASSERT_STRING_EQUAL(selected("{\"team\":\"ml\",\"tier\":\"gold\"}", 50, NULL, &total, NULL), "sel-1");
    CU_ASSERT_EQUAL(total, 1);
    CU_ASSERT_STRING_EQUAL(selected("{\"note\":\"a=b,c\"}", 50, NULL, &total, NULL), "sel-3");
    CU_ASSERT_STRING_EQUAL(selected("{\"note\":\"a\"}", 50, NULL, &total, NULL), "");
    CU_ASSERT_EQUAL(total, 0);
    CU_ASSERT_STRING_EQUAL(selected("{\"team\":\"ml\"}", 1, NULL, &total, &next), "sel-2");
    CU_ASSERT_EQUAL(total, 2);
    CU_ASSERT_STRING_EQUAL(selected("{\"team\":\"ml\"}", 1, next, &total, &next), "sel-1");
    CU_ASSERT_EQUAL(total, 2);
    CU_ASSERT_STRING_EQUAL(next, "");

    /* Replaced labels: found by the new ones only. */
    static const char *const l4[] = {"team", "infra"};
    a1->n_labels = 1;
    a1->labels = labels_of(1, l4);
    Agentz__V1__Agent *up = NULL;
    CU_ASSERT_EQUAL_FATAL(az_agent_replace(pg, &ctx, a1, az_agent_etag_revision(a1->etag), arena, &up, msg), AZ_OK);
    CU_ASSERT_STRING_EQUAL(selected("{\"team\":\"ml\"}", 50, NULL, &total, NULL), "sel-2");
    CU_ASSERT_STRING_EQUAL(selected("{\"team\":\"infra\"}", 50, NULL, &total, NULL), "sel-1");
    CU_ASSERT_EQUAL(az_agent_delete(pg, &ctx, a1->id, 0, msg), AZ_OK);
    CU_ASSERT_STRING_EQUAL(selected("{\"team\":\"infra\"}", 50, NULL, &total, NULL), "");

    /* Another workspace's labels are not ours. */
    Agentz__V1__Agent b = AGENTZ__V1__AGENT__INIT;
    b.name = "sel-b";
    b.role = "Worker";
    b.goal = "Work";
    b.backstory = "Works";
    b.n_labels = 2;
    b.labels = labels_of(2, l2);
    Agentz__V1__Agent *bo = NULL;
    int replayed;
    CU_ASSERT_EQUAL_FATAL(az_agent_create(pg, &ctx_b, &b, "", "", arena, &bo, &replayed, msg), AZ_OK);
    CU_ASSERT_STRING_EQUAL(selected("{\"tier\":\"silver\"}", 50, NULL, &total, NULL), "sel-2");

    az_pgconn *c;
    PGresult *r = NULL;
    CU_ASSERT_EQUAL_FATAL(az_pg_acquire(pg, &ctx, &c, msg), AZ_OK);
    CU_ASSERT_EQUAL_FATAL(az_pg_exec(c, &ctx, "SELECT current_user, row_security_active('agents')",
                                     0, NULL, &r, msg), AZ_OK);
    CU_ASSERT_STRING_EQUAL(PQgetvalue(r, 0, 0), "agentz_app");
    CU_ASSERT_STRING_EQUAL(PQgetvalue(r, 0, 1), "t");
    PQclear(r);
    /* Enough other labelled agents that scanning the workspace's labels is the dear plan. */
    CU_ASSERT_EQUAL_FATAL(az_pg_exec(c, &ctx,
                                     "INSERT INTO agents (workspace_id, name, role, goal, backstory, labels)"
                                     " SELECT $1, 'bulk-' || g, 'r', 'g', 'b', jsonb_build_object('bulk', g::text)"
                                     " FROM generate_series(1, 3000) AS g",
                                     1, (const char *[]){ctx.workspace_id}, NULL, msg), AZ_OK);
    /* Statistics as autovacuum would have them (ANALYZE needs the owner: the login role). */
    PGresult *an = PQexec(az_pg_raw(c), "RESET ROLE; ANALYZE agents, agent_labels; SET ROLE agentz_app");
    CU_ASSERT_EQUAL(PQresultStatus(an), PGRES_COMMAND_OK);
    PQclear(an);
    CU_ASSERT_EQUAL_FATAL(az_pg_exec(c, &ctx, "SET enable_seqscan = off", 0, NULL, NULL, msg), AZ_OK);
    const char *prm[1] = {ctx.workspace_id};
    CU_ASSERT_EQUAL_FATAL(az_pg_exec(c, &ctx,
                                     "EXPLAIN SELECT l.agent_id FROM agent_labels l WHERE l.workspace_id = $1"
                                     " AND l.pair = ANY ('{team=ml}'::text[])",
                                     1, prm, &r, msg), AZ_OK);
    int pairs = 0, scan = 0;
    for (int i = 0; i < PQntuples(r); i++) {
        pairs |= strstr(PQgetvalue(r, i, 0), "agent_labels_pkey") != NULL;
        scan |= strstr(PQgetvalue(r, i, 0), "Seq Scan") != NULL;
    }
    CU_ASSERT_TRUE(pairs);
    CU_ASSERT_FALSE(scan);
    PQclear(r);
    CU_ASSERT_EQUAL(az_pg_exec(c, &ctx, "RESET enable_seqscan", 0, NULL, NULL, msg), AZ_OK);
    az_pg_release(c);
}

static void test_transitions(void)
{
    Agentz__V1__Agent *a = new_agent("status-1");
    const char *id = a->id;
    CU_ASSERT_EQUAL(status_of(id), ST_IDLE);
    CU_ASSERT_TRUE(listed(ST_IDLE, id));

    /* Two tasks: busy until both end. */
    CU_ASSERT_EQUAL(az_agent_task_started(pg, &ctx, id, HOLDER, msg), AZ_OK);
    CU_ASSERT_EQUAL(status_of(id), ST_BUSY);
    CU_ASSERT_TRUE(listed(ST_BUSY, id));
    CU_ASSERT_FALSE(listed(ST_IDLE, id));
    CU_ASSERT_EQUAL(az_agent_task_started(pg, &ctx, id, HOLDER, msg), AZ_OK);
    CU_ASSERT_EQUAL(az_agent_task_ended(pg, &ctx, id, HOLDER, 1, msg), AZ_OK); /* one failed: still busy */
    CU_ASSERT_EQUAL(status_of(id), ST_BUSY);
    CU_ASSERT_EQUAL(az_agent_task_ended(pg, &ctx, id, HOLDER, 0, msg), AZ_OK);
    CU_ASSERT_EQUAL(status_of(id), ST_IDLE);

    /* The last task failed for good: error, until the next task. */
    CU_ASSERT_EQUAL(az_agent_task_started(pg, &ctx, id, HOLDER, msg), AZ_OK);
    CU_ASSERT_EQUAL(az_agent_task_ended(pg, &ctx, id, HOLDER, 1, msg), AZ_OK);
    CU_ASSERT_EQUAL(status_of(id), ST_ERROR);
    CU_ASSERT_TRUE(listed(ST_ERROR, id));
    CU_ASSERT_EQUAL(az_agent_task_started(pg, &ctx, id, HOLDER, msg), AZ_OK);
    CU_ASSERT_EQUAL(status_of(id), ST_BUSY);
    CU_ASSERT_EQUAL(az_agent_task_ended(pg, &ctx, id, HOLDER, 0, msg), AZ_OK);
    CU_ASSERT_EQUAL(status_of(id), ST_IDLE);

    /* An extra end (a duplicate report) never drives the count below zero. */
    CU_ASSERT_EQUAL(az_agent_task_ended(pg, &ctx, id, HOLDER, 0, msg), AZ_OK);
    CU_ASSERT_EQUAL(status_of(id), ST_IDLE);
    CU_ASSERT_EQUAL(az_agent_task_started(pg, &ctx, id, HOLDER, msg), AZ_OK);
    CU_ASSERT_EQUAL(status_of(id), ST_BUSY);
    CU_ASSERT_EQUAL(az_agent_task_ended(pg, &ctx, id, HOLDER, 0, msg), AZ_OK);
    CU_ASSERT_EQUAL(status_of(id), ST_IDLE);

    /* Status is not configuration: the etag stays. */
    Agentz__V1__Agent *now = NULL;
    CU_ASSERT_EQUAL_FATAL(az_agent_get(pg, &ctx, id, arena, &now, msg), AZ_OK);
    CU_ASSERT_STRING_EQUAL(now->etag, a->etag);
}

static void test_disabled(void)
{
    Agentz__V1__Agent *a = new_agent("status-2");
    /* Disabled while a task runs: disabled wins, and stays when the task ends. */
    CU_ASSERT_EQUAL(az_agent_task_started(pg, &ctx, a->id, HOLDER, msg), AZ_OK);
    Agentz__V1__Agent *cur = NULL, *g = NULL;
    CU_ASSERT_EQUAL_FATAL(az_agent_get(pg, &ctx, a->id, arena, &cur, msg), AZ_OK);
    cur->disabled = 1;
    CU_ASSERT_EQUAL_FATAL(az_agent_replace(pg, &ctx, cur, az_agent_etag_revision(cur->etag), arena, &g, msg), AZ_OK);
    CU_ASSERT_EQUAL(g->status, ST_DISABLED);
    CU_ASSERT_EQUAL(az_agent_task_started(pg, &ctx, a->id, HOLDER, msg), AZ_OK); /* a task already queued */
    CU_ASSERT_EQUAL(status_of(a->id), ST_DISABLED);
    CU_ASSERT_EQUAL(az_agent_task_ended(pg, &ctx, a->id, HOLDER, 1, msg), AZ_OK);
    CU_ASSERT_EQUAL(status_of(a->id), ST_DISABLED);
    CU_ASSERT_TRUE(listed(ST_DISABLED, a->id));
    /* Enabled again while one task still runs: busy, not idle. */
    g->disabled = 0;
    CU_ASSERT_EQUAL_FATAL(az_agent_replace(pg, &ctx, g, az_agent_etag_revision(g->etag), arena, &cur, msg), AZ_OK);
    CU_ASSERT_EQUAL(cur->status, ST_BUSY);
    CU_ASSERT_EQUAL(az_agent_task_ended(pg, &ctx, a->id, HOLDER, 0, msg), AZ_OK);
    CU_ASSERT_EQUAL(status_of(a->id), ST_IDLE);
}

static void test_unknown_and_other_workspace(void)
{
    Agentz__V1__Agent *a = new_agent("status-3");
    CU_ASSERT_EQUAL(az_agent_task_started(pg, &ctx, "0a0a0a0a-0000-4000-8000-00000000dead", HOLDER, msg), AZ_ERR_NOT_FOUND);
    CU_ASSERT_EQUAL(az_agent_task_ended(pg, &ctx, "nope", HOLDER, 0, msg), AZ_ERR_NOT_FOUND);
    CU_ASSERT_EQUAL(az_agent_task_started(pg, &ctx_b, a->id, HOLDER, msg), AZ_ERR_NOT_FOUND);
    CU_ASSERT_EQUAL(status_of(a->id), ST_IDLE);
}

typedef struct racer {
    const char *id;
    pthread_barrier_t *bar;
    int errors;
} racer;

static void *race_main(void *arg)
{
    racer *r = arg;
    char m[AZ_MSG_MAX];
    pthread_barrier_wait(r->bar);
    for (int i = 0; i < 25; i++) {
        if (az_agent_task_started(pg, &ctx, r->id, HOLDER, m) != AZ_OK) r->errors++;
        if (az_agent_task_ended(pg, &ctx, r->id, HOLDER, 0, m) != AZ_OK) r->errors++;
    }
    return NULL;
}

static void test_concurrent(void)
{
    /* 4 workers start and end 25 tasks each at once: the count comes back to 0 exactly. */
    Agentz__V1__Agent *a = new_agent("status-4");
    pthread_barrier_t bar;
    pthread_barrier_init(&bar, NULL, 4);
    pthread_t t[4];
    racer r[4];
    for (int i = 0; i < 4; i++) {
        r[i] = (racer){.id = a->id, .bar = &bar};
        pthread_create(&t[i], NULL, race_main, &r[i]);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(t[i], NULL);
        CU_ASSERT_EQUAL(r[i].errors, 0);
    }
    pthread_barrier_destroy(&bar);
    CU_ASSERT_EQUAL(status_of(a->id), ST_IDLE);
    az_pgconn *c;
    CU_ASSERT_EQUAL_FATAL(az_pg_acquire(pg, &ctx, &c, msg), AZ_OK);
    PGresult *res;
    const char *p[2] = {AZ_DEFAULT_WORKSPACE, a->id};
    CU_ASSERT_EQUAL(az_pg_exec(c, &ctx, "SELECT running_tasks FROM agents WHERE workspace_id = $1 AND id = $2",
                               2, p, &res, msg),
                    AZ_OK);
    CU_ASSERT_STRING_EQUAL(PQgetvalue(res, 0, 0), "0");
    PQclear(res);
    az_pg_release(c);
}

/* One integer from a query over (workspace, agent id). */
static long long scalar(const char *sql, const char *id)
{
    az_pgconn *c;
    CU_ASSERT_EQUAL_FATAL(az_pg_acquire(pg, &ctx, &c, msg), AZ_OK);
    PGresult *res = NULL;
    const char *p[2] = {AZ_DEFAULT_WORKSPACE, id};
    long long v = -1;
    if (az_pg_exec(c, &ctx, sql, 2, p, &res, msg) == AZ_OK && PQntuples(res) == 1)
        v = atoll(PQgetvalue(res, 0, 0));
    PQclear(res);
    az_pg_release(c);
    return v;
}
#define RUNNING "SELECT running_tasks FROM agents WHERE workspace_id = $1 AND id = $2"
#define HOLDERS "SELECT count(*) FROM agent_holders WHERE workspace_id = $1 AND agent_id = $2"

static void test_holders(void)
{
    /* Tasks of one holder are counted in memory: three running tasks, one row, one count. */
    Agentz__V1__Agent *a = new_agent("status-5");
    for (int i = 0; i < 3; i++) CU_ASSERT_EQUAL(az_agent_task_started(pg, &ctx, a->id, HOLDER, msg), AZ_OK);
    CU_ASSERT_EQUAL(scalar(RUNNING, a->id), 1);
    CU_ASSERT_EQUAL(scalar(HOLDERS, a->id), 1);
    CU_ASSERT_EQUAL(status_of(a->id), ST_BUSY);
    /* A second worker holds it too: busy until both have no task left. */
    CU_ASSERT_EQUAL(az_agent_task_started(pg, &ctx, a->id, HOLDER_2, msg), AZ_OK);
    CU_ASSERT_EQUAL(scalar(RUNNING, a->id), 2);
    for (int i = 0; i < 3; i++) CU_ASSERT_EQUAL(az_agent_task_ended(pg, &ctx, a->id, HOLDER, 0, msg), AZ_OK);
    CU_ASSERT_EQUAL(scalar(RUNNING, a->id), 1);
    CU_ASSERT_EQUAL(status_of(a->id), ST_BUSY);
    /* The last task anywhere failed: error. */
    CU_ASSERT_EQUAL(az_agent_task_ended(pg, &ctx, a->id, HOLDER_2, 1, msg), AZ_OK);
    CU_ASSERT_EQUAL(scalar(RUNNING, a->id), 0);
    CU_ASSERT_EQUAL(scalar(HOLDERS, a->id), 0);
    CU_ASSERT_EQUAL(status_of(a->id), ST_ERROR);
    /* Holders are checked. */
    CU_ASSERT_EQUAL(az_agent_task_started(pg, &ctx, a->id, "", msg), AZ_ERR_INVALID);
    CU_ASSERT_PTR_NOT_NULL(strstr(msg, "holder"));
    char long_holder[AZ_AGENT_HOLDER_MAX + 2];
    memset(long_holder, 'h', sizeof long_holder - 1);
    long_holder[sizeof long_holder - 1] = '\0';
    CU_ASSERT_EQUAL(az_agent_task_started(pg, &ctx, a->id, long_holder, msg), AZ_ERR_INVALID);
    CU_ASSERT_EQUAL(status_of(a->id), ST_ERROR);
}

static void test_holder_lost(void)
{
    /* A worker dies with two tasks of the agent running: the reaper drops its hold. */
    Agentz__V1__Agent *a = new_agent("status-6");
    CU_ASSERT_EQUAL(az_agent_task_started(pg, &ctx, a->id, HOLDER, msg), AZ_OK);
    CU_ASSERT_EQUAL(az_agent_task_started(pg, &ctx, a->id, HOLDER, msg), AZ_OK);
    CU_ASSERT_EQUAL(az_agent_task_started(pg, &ctx, a->id, HOLDER_2, msg), AZ_OK);
    CU_ASSERT_EQUAL(az_agent_holder_lost(pg, &ctx, a->id, HOLDER, 0, msg), AZ_OK);
    CU_ASSERT_EQUAL(scalar(RUNNING, a->id), 1); /* worker-b still runs one */
    CU_ASSERT_EQUAL(status_of(a->id), ST_BUSY);
    CU_ASSERT_EQUAL(az_agent_holder_lost(pg, &ctx, a->id, HOLDER_2, 1, msg), AZ_OK);
    CU_ASSERT_EQUAL(scalar(RUNNING, a->id), 0);
    CU_ASSERT_EQUAL(status_of(a->id), ST_ERROR);
    /* Losing a holder twice, or one that never held it, changes nothing. */
    CU_ASSERT_EQUAL(az_agent_holder_lost(pg, &ctx, a->id, HOLDER, 0, msg), AZ_OK);
    CU_ASSERT_EQUAL(az_agent_holder_lost(pg, &ctx, a->id, "never", 0, msg), AZ_OK);
    CU_ASSERT_EQUAL(status_of(a->id), ST_ERROR);
    CU_ASSERT_EQUAL(az_agent_holder_lost(pg, &ctx, "0a0a0a0a-0000-4000-8000-00000000dead", HOLDER, 0, msg),
                    AZ_OK);
    /* The worker was not dead after all: its late ends find no row and change nothing. */
    for (int i = 0; i < 2; i++) CU_ASSERT_EQUAL(az_agent_task_ended(pg, &ctx, a->id, HOLDER, 0, msg), AZ_OK);
    CU_ASSERT_EQUAL(az_agent_task_ended(pg, &ctx, a->id, HOLDER_2, 0, msg), AZ_OK);
    CU_ASSERT_EQUAL(scalar(RUNNING, a->id), 0);
    CU_ASSERT_EQUAL(status_of(a->id), ST_ERROR);
    /* And it holds the agent again with its next task. */
    CU_ASSERT_EQUAL(az_agent_task_started(pg, &ctx, a->id, HOLDER, msg), AZ_OK);
    CU_ASSERT_EQUAL(status_of(a->id), ST_BUSY);
    CU_ASSERT_EQUAL(az_agent_task_ended(pg, &ctx, a->id, HOLDER, 0, msg), AZ_OK);
    CU_ASSERT_EQUAL(status_of(a->id), ST_IDLE);
    /* Deleting the agent takes its holders along. */
    CU_ASSERT_EQUAL(az_agent_task_started(pg, &ctx, a->id, HOLDER, msg), AZ_OK);
    CU_ASSERT_EQUAL_FATAL(az_agent_delete(pg, &ctx, a->id, 0, msg), AZ_OK);
    CU_ASSERT_EQUAL(scalar(HOLDERS, a->id), 0);
    CU_ASSERT_EQUAL(az_agent_task_ended(pg, &ctx, a->id, HOLDER, 0, msg), AZ_OK);
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    remove(path);
    return 0;
}

static int suite_init(void)
{
    az_log_set_level(AZ_LOG_ERROR);
    snprintf(dir, sizeof dir, "/tmp/aztest-agent-XXXXXX");
    if (!mkdtemp(dir) || chmod(dir, 0755) != 0) return -1;
    if (az_embed_start(dir, &embed, msg) != AZ_OK) {
        fprintf(stderr, "cannot start embedded postgresql: %s\n", msg);
        return -1;
    }
    if (az_pg_new(az_embed_database_url(embed), 6, 30000, &pg, msg) != AZ_OK ||
        az_migrate(pg, az_migrations, az_migrations_count, NULL, msg) != AZ_OK) {
        fprintf(stderr, "cannot prepare the database: %s\n", msg);
        return -1;
    }
    az_pgconn *c;
    if (az_pg_acquire(pg, NULL, &c, msg) != AZ_OK ||
        az_pg_exec(c, NULL, "INSERT INTO workspaces (id, name) VALUES ('" WS_B "', 'b')", 0, NULL, NULL,
                   msg) != AZ_OK) {
        fprintf(stderr, "cannot create workspace b: %s\n", msg);
        return -1;
    }
    az_pg_release(c);
    if (az_pg_set_role(pg, "agentz_app", msg) != AZ_OK) return -1;
    arena = az_arena_new(0);
    return arena ? 0 : -1;
}

static int suite_clean(void)
{
    az_arena_free(arena);
    az_pg_free(pg);
    az_embed_stop(embed);
    nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    return 0;
}

int main(void)
{
    if (CU_initialize_registry() != CUE_SUCCESS) return 1;
    CU_pSuite s = CU_add_suite("agent status", suite_init, suite_clean);
    CU_add_test(s, "idle, busy, error, idle", test_transitions);
    CU_add_test(s, "disabled wins; enabling while busy", test_disabled);
    CU_add_test(s, "unknown agent, other workspace", test_unknown_and_other_workspace);
    CU_add_test(s, "concurrent starts and ends", test_concurrent);
    CU_add_test(s, "one row per holder, not per task", test_holders);
    CU_add_test(s, "a lost holder (dead worker)", test_holder_lost);
    CU_add_test(s, "label selectors through agent_labels", test_label_selector);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    unsigned failed = CU_get_number_of_failures() + CU_get_number_of_tests_failed();
    if (CU_get_number_of_suites_failed()) failed++;
    CU_cleanup_registry();
    return failed ? 1 : 0;
}
