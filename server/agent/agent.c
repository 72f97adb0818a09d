/* Agents in PostgreSQL: row <-> protobuf mapping, idempotent create, optimistic concurrency by
 * revision, keyset pagination with opaque tokens. Every statement is parameterized. */
#include "agent.h"

#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/pagetoken.h"
#include "core/pbtime.h"
#include "core/text.h"
#include "event/outbox.h"
#include "google/protobuf/duration.pb-c.h"
#include "google/protobuf/timestamp.pb-c.h"
#include "google/protobuf/wrappers.pb-c.h"
#include "store/idem.h"
#include "store/pgarray.h"

#define COLS                                                                                     \
    "id::text, name, role, goal, backstory, llm_provider, llm_model, llm_base_url,"             \
    " llm_api_key_secret, llm_temperature, llm_max_tokens, llm_timeout_us,"                     \
    " array_to_json(tools)::text, allow_delegation, max_iter, max_rpm, max_execution_time_us,"  \
    " memory, disabled, status, labels::text, revision,"                                        \
    " (extract(epoch FROM create_time) * 1000000)::bigint,"                                     \
    " (extract(epoch FROM update_time) * 1000000)::bigint, workspace_id::text, create_time::text"

enum {
    C_ID, C_NAME, C_ROLE, C_GOAL, C_BACKSTORY, C_PROVIDER, C_MODEL, C_BASE_URL, C_SECRET,
    C_TEMPERATURE, C_MAX_TOKENS, C_TIMEOUT, C_TOOLS, C_DELEGATION, C_MAX_ITER, C_MAX_RPM,
    C_MAX_EXEC, C_MEMORY, C_DISABLED, C_STATUS, C_LABELS, C_REVISION, C_CREATE, C_UPDATE,
    C_WORKSPACE, C_CREATE_TEXT,
};

/* ---------------------------------------------------------------- row -> message */

static char *col(az_arena *a, const PGresult *r, int row, int c)
{
    return az_arena_strndup(a, PQgetvalue(r, row, c), (size_t)PQgetlength(r, row, c));
}

/* Unset (0) durations stay unset. */
static Google__Protobuf__Duration *duration_us(az_arena *a, long long us)
{
    return us > 0 ? az_pbtime_duration(a, us) : NULL;
}

static int is_true(const PGresult *r, int row, int c) { return PQgetvalue(r, row, c)[0] == 't'; }
static long long num(const PGresult *r, int row, int c) { return atoll(PQgetvalue(r, row, c)); }

static az_err from_row(const PGresult *r, int row, az_arena *a, Agentz__V1__Agent **out, char *msg)
{
    Agentz__V1__Agent *g = az_arena_alloc(a, sizeof *g);
    Agentz__V1__LlmConfig *llm = az_arena_alloc(a, sizeof *llm);
    if (!g || !llm) return az_fail(msg, AZ_ERR_NOMEM, "out of memory");
    agentz__v1__agent__init(g);
    agentz__v1__llm_config__init(llm);
    g->id = col(a, r, row, C_ID);
    g->name = col(a, r, row, C_NAME);
    g->role = col(a, r, row, C_ROLE);
    g->goal = col(a, r, row, C_GOAL);
    g->backstory = col(a, r, row, C_BACKSTORY);
    llm->provider = col(a, r, row, C_PROVIDER);
    llm->model = col(a, r, row, C_MODEL);
    llm->base_url = col(a, r, row, C_BASE_URL);
    llm->api_key_secret = col(a, r, row, C_SECRET);
    if (!PQgetisnull(r, row, C_TEMPERATURE)) {
        Google__Protobuf__DoubleValue *t = az_arena_alloc(a, sizeof *t);
        if (!t) return az_fail(msg, AZ_ERR_NOMEM, "out of memory");
        google__protobuf__double_value__init(t);
        t->value = strtod(PQgetvalue(r, row, C_TEMPERATURE), NULL);
        llm->temperature = t;
    }
    llm->max_tokens = (int32_t)num(r, row, C_MAX_TOKENS);
    llm->timeout = duration_us(a, num(r, row, C_TIMEOUT));
    g->llm = llm;

    json_error_t jerr;
    json_t *tools = json_loads(PQgetvalue(r, row, C_TOOLS), 0, &jerr);
    if (json_is_array(tools) && json_array_size(tools) > 0) {
        g->n_tools = json_array_size(tools);
        g->tools = az_arena_alloc(a, g->n_tools * sizeof *g->tools);
        if (!g->tools) {
            json_decref(tools);
            return az_fail(msg, AZ_ERR_NOMEM, "out of memory");
        }
        for (size_t i = 0; i < g->n_tools; i++)
            g->tools[i] = az_arena_strdup(a, json_string_value(json_array_get(tools, i)));
    }
    json_decref(tools);

    g->allow_delegation = is_true(r, row, C_DELEGATION);
    g->max_iter = (int32_t)num(r, row, C_MAX_ITER);
    g->max_rpm = (int32_t)num(r, row, C_MAX_RPM);
    g->max_execution_time = duration_us(a, num(r, row, C_MAX_EXEC));
    g->memory = is_true(r, row, C_MEMORY);
    g->disabled = is_true(r, row, C_DISABLED);
    g->status = (Agentz__V1__AgentStatus)num(r, row, C_STATUS);

    json_t *labels = json_loads(PQgetvalue(r, row, C_LABELS), 0, &jerr);
    if (json_is_object(labels) && json_object_size(labels) > 0) {
        size_t n = json_object_size(labels), i = 0;
        g->labels = az_arena_alloc(a, n * sizeof *g->labels);
        if (!g->labels) {
            json_decref(labels);
            return az_fail(msg, AZ_ERR_NOMEM, "out of memory");
        }
        const char *k;
        json_t *v;
        json_object_foreach(labels, k, v)
        {
            Agentz__V1__Agent__LabelsEntry *e = az_arena_alloc(a, sizeof *e);
            if (!e) break;
            agentz__v1__agent__labels_entry__init(e);
            e->key = az_arena_strdup(a, k);
            e->value = az_arena_strdup(a, json_string_value(v));
            g->labels[i++] = e;
        }
        g->n_labels = i;
    }
    json_decref(labels);

    g->etag = az_arena_printf(a, "%lld", num(r, row, C_REVISION));
    g->create_time = az_pbtime_timestamp(a, num(r, row, C_CREATE));
    g->update_time = az_pbtime_timestamp(a, num(r, row, C_UPDATE));
    g->workspace_id = col(a, r, row, C_WORKSPACE);
    if (!g->etag || !g->create_time || !g->update_time || !g->workspace_id)
        return az_fail(msg, AZ_ERR_NOMEM, "out of memory");
    *out = g;
    return AZ_OK;
}

/* ---------------------------------------------------------------- message -> parameters */

/* Parameters $1..$21 shared by INSERT and UPDATE, all text. */
enum { NPARAMS = 21 };

static long long duration_to_us(const Google__Protobuf__Duration *d)
{
    if (!d) return 0;
    return (long long)d->seconds * 1000000 + d->nanos / 1000;
}

static az_err to_params(const az_ctx *ctx, const char *id, const Agentz__V1__Agent *g,
                        az_arena *a, const char *p[NPARAMS], char *msg)
{
    static const Agentz__V1__LlmConfig empty_llm = AGENTZ__V1__LLM_CONFIG__INIT;
    const Agentz__V1__LlmConfig *llm = g->llm ? g->llm : &empty_llm;
    json_t *tools = json_array();
    for (size_t i = 0; i < g->n_tools; i++) json_array_append_new(tools, json_string(g->tools[i]));
    json_t *labels = json_object();
    for (size_t i = 0; i < g->n_labels; i++)
        json_object_set_new(labels, g->labels[i]->key, json_string(g->labels[i]->value));
    char *tools_s = json_dumps(tools, JSON_COMPACT);
    char *labels_s = json_dumps(labels, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(tools);
    json_decref(labels);
    if (!tools_s || !labels_s) {
        free(tools_s);
        free(labels_s);
        return az_fail(msg, AZ_ERR_NOMEM, "out of memory");
    }
    p[0] = ctx->workspace_id;
    p[1] = id;
    p[2] = g->name;
    p[3] = g->role;
    p[4] = g->goal;
    p[5] = g->backstory;
    p[6] = llm->provider;
    p[7] = llm->model;
    p[8] = llm->base_url;
    p[9] = llm->api_key_secret;
    p[10] = llm->temperature ? az_arena_printf(a, "%.17g", llm->temperature->value) : NULL;
    p[11] = az_arena_printf(a, "%d", llm->max_tokens);
    p[12] = az_arena_printf(a, "%lld", duration_to_us(llm->timeout));
    p[13] = az_arena_strdup(a, tools_s);
    p[14] = g->allow_delegation ? "t" : "f";
    p[15] = az_arena_printf(a, "%d", g->max_iter ? g->max_iter : AZ_AGENT_DEFAULT_MAX_ITER);
    p[16] = az_arena_printf(a, "%d", g->max_rpm);
    p[17] = az_arena_printf(a, "%lld", duration_to_us(g->max_execution_time));
    p[18] = g->memory ? "t" : "f";
    p[19] = g->disabled ? "t" : "f";
    p[20] = az_arena_strdup(a, labels_s);
    free(tools_s);
    free(labels_s);
    for (int i = 11; i < NPARAMS; i++) {
        if (!p[i]) return az_fail(msg, AZ_ERR_NOMEM, "out of memory");
    }
    return AZ_OK;
}

/* A unique-name violation reads better as the field the client sent. */
static az_err name_taken(az_err err, const Agentz__V1__Agent *g, char *msg)
{
    if (err == AZ_ERR_EXISTS)
        return az_fail(msg, AZ_ERR_EXISTS, "agent.name: an agent named \"%s\" already exists",
                       g->name);
    return err;
}

static az_err fetch_one(az_pgconn *c, const az_ctx *ctx, const char *id, az_arena *a,
                        Agentz__V1__Agent **out, char *msg)
{
    const char *p[2] = {ctx->workspace_id, id};
    PGresult *r;
    az_err err = az_pg_exec(c, ctx, "SELECT " COLS " FROM agents WHERE workspace_id = $1 AND id = $2",
                            2, p, &r, msg);
    if (err != AZ_OK) return err;
    if (PQntuples(r) == 0) err = az_fail(msg, AZ_ERR_NOT_FOUND, "agent %s not found", id);
    else err = from_row(r, 0, a, out, msg);
    PQclear(r);
    return err;
}

static const char insert_sql[] =
    "INSERT INTO agents (workspace_id, id, name, role, goal, backstory,"
    " llm_provider, llm_model, llm_base_url, llm_api_key_secret, llm_temperature,"
    " llm_max_tokens, llm_timeout_us, tools, allow_delegation, max_iter, max_rpm,"
    " max_execution_time_us, memory, disabled, labels, status)"
    " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13,"
    " ARRAY(SELECT jsonb_array_elements_text($14::jsonb)), $15, $16, $17, $18,"
    " $19, $20, $21::jsonb, CASE WHEN $20::boolean THEN 3 ELSE 1 END)"
    " RETURNING " COLS;

/* The INSERT shared by create and insert; id is pre-generated so idempotency keys can point
 * at it before the row exists. */
static az_err insert_row(az_pgconn *c, const az_ctx *ctx, const char *id, const Agentz__V1__Agent *g,
                         az_arena *a, Agentz__V1__Agent **out, char *msg)
{
    const char *p[NPARAMS];
    az_err err = to_params(ctx, id, g, a, p, msg);
    if (err != AZ_OK) return err;
    PGresult *r;
    err = az_pg_exec(c, ctx, insert_sql, NPARAMS, p, &r, msg);
    if (err != AZ_OK) return name_taken(err, g, msg);
    err = from_row(r, 0, a, out, msg);
    PQclear(r);
    return err;
}

az_err az_agent_insert(az_pgconn *c, const az_ctx *ctx, const Agentz__V1__Agent *g, az_arena *a,
                       Agentz__V1__Agent **out, char *msg)
{
    *out = NULL;
    char id[37];
    if (az_text_uuid4(id) != AZ_OK) return az_fail(msg, AZ_ERR_IO, "cannot generate an id");
    return insert_row(c, ctx, id, g, a, out, msg);
}

az_err az_agent_create(az_pg *pg, const az_ctx *ctx, const Agentz__V1__Agent *g,
                       const char *request_id, const char *request_hash, az_arena *a,
                       Agentz__V1__Agent **out, int *replayed, char *msg)
{
    *out = NULL;
    *replayed = 0;
    char id[37];
    if (az_text_uuid4(id) != AZ_OK) return az_fail(msg, AZ_ERR_IO, "cannot generate an id");
    az_pgconn *c;
    az_err err = az_pg_acquire(pg, ctx, &c, msg);
    if (err != AZ_OK) return err;
    if (!request_id || !*request_id) {
        /* One autocommit statement is atomic: no BEGIN/COMMIT round trips. */
        err = insert_row(c, ctx, id, g, a, out, msg);
        goto out;
    }
    if ((err = az_pg_begin(c, ctx, msg)) != AZ_OK) goto out;
    {
        char existing[37];
        err = az_idem_claim(c, ctx, "CreateAgent", request_id, request_hash, id, existing, msg);
        if (err != AZ_OK) goto out;
        if (existing[0]) {
            err = fetch_one(c, ctx, existing, a, out, msg);
            if (err == AZ_OK) {
                *replayed = 1;
                err = az_pg_commit(c, ctx, msg);
            }
            goto out;
        }
    }
    err = insert_row(c, ctx, id, g, a, out, msg);
    if (err == AZ_OK) err = az_pg_commit(c, ctx, msg);
out:
    if (err != AZ_OK) *out = NULL;
    az_pg_release(c);
    return err;
}

az_err az_agent_get(az_pg *pg, const az_ctx *ctx, const char *id, az_arena *a,
                    Agentz__V1__Agent **out, char *msg)
{
    *out = NULL;
    if (!az_text_is_uuid(id)) return az_fail(msg, AZ_ERR_NOT_FOUND, "agent %s not found", id);
    az_pgconn *c;
    az_err err = az_pg_acquire(pg, ctx, &c, msg);
    if (err != AZ_OK) return err;
    err = fetch_one(c, ctx, id, a, out, msg);
    az_pg_release(c);
    return err;
}

/* ---------------------------------------------------------------- pagination */

/* The token is az_pagetoken("a1|<filter hash>|<create_time text>|<id>"): opaque to clients,
 * and bound to the filters it was issued for. */
static unsigned long filter_hash(const az_agent_query *q)
{
    char status[16];
    snprintf(status, sizeof status, "%d", q->status);
    return az_pagetoken_hash(az_pagetoken_hash(AZ_PAGETOKEN_HASH_INIT, status), q->labels_json);
}

/* NULL when out of memory (the text is far shorter than AZ_PAGETOKEN_RAW_MAX). */
static char *encode_token(az_arena *a, unsigned long hash, const char *ts, const char *id)
{
    char raw[AZ_PAGETOKEN_RAW_MAX + 1];
    int n = snprintf(raw, sizeof raw, "a1|%lx|%s|%s", hash, ts, id);
    if (n < 0 || (size_t)n >= sizeof raw) return NULL;
    return az_pagetoken_encode(a, raw);
}

static az_err decode_token(const char *token, unsigned long hash, char ts[64], char id[37],
                           char *msg)
{
    char raw[AZ_PAGETOKEN_RAW_MAX + 1];
    az_err err = az_pagetoken_decode(token, raw, msg);
    if (err != AZ_OK) return err;
    unsigned long th;
    char tsbuf[64], idbuf[40];
    if (sscanf(raw, "a1|%lx|%63[^|]|%39s", &th, tsbuf, idbuf) != 3 || !az_text_is_uuid(idbuf))
        return az_fail(msg, AZ_ERR_INVALID, "page_token is invalid");
    if (th != hash)
        return az_fail(msg, AZ_ERR_INVALID,
                       "page_token was issued for different filters (status, label_selector)");
    memcpy(ts, tsbuf, sizeof tsbuf);
    memcpy(id, idbuf, 37);
    return AZ_OK;
}

/* The agents of workspace $1 that carry every label of the selector, $3 its "key=value" pairs
 * as a text[], through agent_labels (migration 0016): under row-level security jsonb
 * containment, which is not leakproof, can filter agents but never find them through an index.
 * The pairs are a parameter, not computed in the statement, so that the planner sees them and
 * its statistics of each (a label most agents carry is a scan, a rare one an index probe). */
#define LABELED                                                                                  \
    "SELECT l.agent_id FROM agent_labels l WHERE l.workspace_id = $1 AND l.pair = ANY ($3::text[])" \
    " GROUP BY l.agent_id HAVING count(*) = cardinality($3::text[])"
/* Each selected agent by its primary key. OFFSET 0 keeps the planner from flattening the
 * subquery and turning the join around: on tables autovacuum has not analysed yet (a burst of
 * new agents) it took both for empty and scanned the agents once per selected agent (32 ms at
 * 400 agents); this way the pairs always drive. */
#define BY_ID "(SELECT * FROM agents WHERE workspace_id = $1 AND id = m.agent_id OFFSET 0)"

az_err az_agent_list(az_pg *pg, const az_ctx *ctx, const az_agent_query *q, az_arena *a,
                     Agentz__V1__ListAgentsResponse **out, char *msg)
{
    *out = NULL;
    unsigned long hash = filter_hash(q);
    char ts[64] = "", after[37] = "";
    az_err err;
    if (q->page_token && *q->page_token &&
        (err = decode_token(q->page_token, hash, ts, after, msg)) != AZ_OK)
        return err;
    char status[16], limit[16];
    snprintf(status, sizeof status, "%d", q->status);
    snprintf(limit, sizeof limit, "%d", q->page_size + 1);
    const char *p[6] = {ctx->workspace_id, status, q->labels_json, ts[0] ? ts : NULL,
                        after[0] ? after : NULL, limit};
    /* Two statement pairs, not one with "$3 IS NULL OR ...": a generic plan must serve both
     * cases, and with the selector it is the pairs' look-up that should drive. */
    int by_labels = q->labels_json != NULL;
    if (by_labels && !(p[2] = az_pgarray_label_pairs(a, q->labels_json)))
        return az_fail(msg, AZ_ERR_NOMEM, "out of memory");
    az_pgconn *c;
    if ((err = az_pg_acquire(pg, ctx, &c, msg)) != AZ_OK) return err;
    PGresult *r = NULL, *cnt = NULL;
    err = by_labels ? az_pg_exec(c, ctx,
                                 "SELECT " COLS " FROM (" LABELED ") m CROSS JOIN LATERAL " BY_ID " agents"
                                 " WHERE ($2::smallint = 0 OR status = $2::smallint)"
                                 " AND ($4::timestamptz IS NULL OR (create_time, id) < ($4::timestamptz, $5::uuid))"
                                 " ORDER BY create_time DESC, id DESC LIMIT $6::integer",
                                 6, p, &r, msg)
                    : az_pg_exec(c, ctx,
                                 "SELECT " COLS " FROM agents WHERE workspace_id = $1"
                                 " AND ($2::smallint = 0 OR status = $2::smallint)"
                                 " AND $3::text[] IS NULL"
                                 " AND ($4::timestamptz IS NULL OR (create_time, id) < ($4::timestamptz, $5::uuid))"
                                 " ORDER BY create_time DESC, id DESC LIMIT $6::integer",
                                 6, p, &r, msg);
    if (err == AZ_OK)
        err = by_labels ? az_pg_exec(c, ctx,
                                     "SELECT count(*) FROM (" LABELED ") m CROSS JOIN LATERAL " BY_ID " agents"
                                     " WHERE ($2::smallint = 0 OR status = $2::smallint)",
                                     3, p, &cnt, msg)
                        : az_pg_exec(c, ctx,
                                     "SELECT count(*) FROM agents WHERE workspace_id = $1"
                                     " AND ($2::smallint = 0 OR status = $2::smallint)"
                                     " AND $3::text[] IS NULL",
                                     3, p, &cnt, msg);
    az_pg_release(c);
    if (err != AZ_OK) {
        PQclear(r);
        return err;
    }
    Agentz__V1__ListAgentsResponse *resp = az_arena_alloc(a, sizeof *resp);
    int rows = PQntuples(r);
    int n = rows > q->page_size ? q->page_size : rows;
    if (resp) {
        agentz__v1__list_agents_response__init(resp);
        resp->total_size = (int32_t)atol(PQgetvalue(cnt, 0, 0));
        resp->agents = az_arena_alloc(a, (size_t)(n ? n : 1) * sizeof *resp->agents);
    }
    if (!resp || !resp->agents) err = az_fail(msg, AZ_ERR_NOMEM, "out of memory");
    for (int i = 0; i < n && err == AZ_OK; i++) err = from_row(r, i, a, &resp->agents[i], msg);
    if (err == AZ_OK) {
        resp->n_agents = (size_t)n;
        if (rows > q->page_size) {
            resp->next_page_token = encode_token(a, hash, PQgetvalue(r, n - 1, C_CREATE_TEXT),
                                                 PQgetvalue(r, n - 1, C_ID));
            if (!resp->next_page_token) err = az_fail(msg, AZ_ERR_NOMEM, "out of memory");
        }
    }
    PQclear(r);
    PQclear(cnt);
    if (err == AZ_OK) *out = resp;
    return err;
}

/* ---------------------------------------------------------------- update and delete */

/* After a conditional statement touched no row: gone, or changed by someone else? */
static az_err explain_miss(az_pgconn *c, const az_ctx *ctx, const char *id, char *msg)
{
    const char *p[2] = {ctx->workspace_id, id};
    PGresult *r;
    az_err err = az_pg_exec(c, ctx, "SELECT revision FROM agents WHERE workspace_id = $1 AND id = $2",
                            2, p, &r, msg);
    if (err != AZ_OK) return err;
    if (PQntuples(r) == 0) err = az_fail(msg, AZ_ERR_NOT_FOUND, "agent %s not found", id);
    else
        err = az_fail(msg, AZ_ERR_ABORTED,
                      "agent %s was changed concurrently (etag is now \"%s\"); read it again and "
                      "retry",
                      id, PQgetvalue(r, 0, 0));
    PQclear(r);
    return err;
}

az_err az_agent_replace(az_pg *pg, const az_ctx *ctx, const Agentz__V1__Agent *g,
                        int64_t expected_revision, az_arena *a, Agentz__V1__Agent **out, char *msg)
{
    *out = NULL;
    if (!az_text_is_uuid(g->id)) return az_fail(msg, AZ_ERR_NOT_FOUND, "agent %s not found", g->id);
    const char *p[NPARAMS + 1];
    az_err err = to_params(ctx, g->id, g, a, p, msg);
    if (err != AZ_OK) return err;
    p[NPARAMS] = az_arena_printf(a, "%lld", (long long)expected_revision);
    if (!p[NPARAMS]) return az_fail(msg, AZ_ERR_NOMEM, "out of memory");
    az_pgconn *c;
    if ((err = az_pg_acquire(pg, ctx, &c, msg)) != AZ_OK) return err;
    PGresult *r;
    err = az_pg_exec(c, ctx,
                     "UPDATE agents SET name = $3, role = $4, goal = $5, backstory = $6,"
                     " llm_provider = $7, llm_model = $8, llm_base_url = $9,"
                     " llm_api_key_secret = $10, llm_temperature = $11, llm_max_tokens = $12,"
                     " llm_timeout_us = $13, tools = ARRAY(SELECT jsonb_array_elements_text($14::jsonb)),"
                     " allow_delegation = $15, max_iter = $16, max_rpm = $17,"
                     " max_execution_time_us = $18, memory = $19, disabled = $20,"
                     " labels = $21::jsonb,"
                     " status = CASE WHEN $20::boolean THEN 3"
                     "  WHEN status = 3 THEN CASE WHEN running_tasks > 0 THEN 2 ELSE 1 END"
                     "  ELSE status END,"
                     " revision = revision + 1, update_time = clock_timestamp()"
                     " WHERE workspace_id = $1 AND id = $2 AND revision = $22::bigint"
                     " RETURNING " COLS,
                     NPARAMS + 1, p, &r, msg);
    if (err != AZ_OK) {
        err = name_taken(err, g, msg);
    } else {
        if (PQntuples(r) == 0) err = explain_miss(c, ctx, g->id, msg);
        else err = from_row(r, 0, a, out, msg);
        PQclear(r);
    }
    az_pg_release(c);
    return err;
}

az_err az_agent_delete(az_pg *pg, const az_ctx *ctx, const char *id, int64_t expected_revision,
                       char *msg)
{
    if (!az_text_is_uuid(id)) return az_fail(msg, AZ_ERR_NOT_FOUND, "agent %s not found", id);
    char rev[24];
    snprintf(rev, sizeof rev, "%lld", (long long)expected_revision);
    const char *p[3] = {ctx->workspace_id, id, rev};
    az_pgconn *c;
    az_err err = az_pg_acquire(pg, ctx, &c, msg);
    if (err != AZ_OK) return err;
    PGresult *r;
    err = az_pg_exec(c, ctx,
                     "DELETE FROM agents WHERE workspace_id = $1 AND id = $2"
                     " AND ($3::bigint = 0 OR revision = $3::bigint)",
                     3, p, &r, msg);
    if (err == AZ_OK) {
        int n = atoi(PQcmdTuples(r));
        PQclear(r);
        if (n == 0) err = explain_miss(c, ctx, id, msg);
    }
    az_pg_release(c);
    return err;
}

int64_t az_agent_etag_revision(const char *etag)
{
    if (!etag || !*etag || strlen(etag) > 18) return -1;
    int64_t v = 0;
    for (const char *s = etag; *s; s++) {
        if (*s < '0' || *s > '9') return -1;
        v = v * 10 + (*s - '0');
    }
    return v > 0 ? v : -1;
}

/* ---------------------------------------------------------------- live status */

/* Status is runtime state, not configuration: these updates leave revision (the etag) and
 * update_time alone, so a client's read-modify-write is not refused because a task started.
 * A disabled agent stays DISABLED while its last tasks finish. */

/* Live status counts processes, not tasks (migration 0013): a worker holds an agent while it
 * runs at least one of its tasks, one agent_holders row per (agent, worker), and running_tasks
 * is the number of those rows. Each process keeps its own count per agent here and writes only
 * when that count leaves or reaches zero. Every task used to update the agent's row twice, each
 * update committed with a WAL flush while holding the row lock, so all tasks of one agent
 * queued on that lock (docs/performance.md, the profile of issue 12, finding 3). BUSY, IDLE
 * and ERROR mean what they meant: a task of the agent runs somewhere, or the task that ended
 * last failed. */

/* One hold change in one transaction: pre (INSERT or DELETE of the holder's row, $1 workspace,
 * $2 agent, $3 holder) and, when it changed a row, the agents row (SET: the assignment of
 * running_tasks and status, over the row before the update; $3 a boolean of it) with
 * AgentStatusChanged when the status moved. The status is read in the same statement (a
 * locking subquery; RETURNING sees only the new row). */
static az_err change_status(az_pg *pg, const az_ctx *ctx, const char *agent_id, const char *holder,
                            const char *pre, const char *set, int flag, const char *reason,
                            char *msg)
{
    const char *hp[3] = {ctx->workspace_id, agent_id, holder};
    const char *p[3] = {ctx->workspace_id, agent_id, flag ? "t" : "f"};
    char moved[800];
    snprintf(moved, sizeof moved,
             "UPDATE agents a SET %s FROM (SELECT id, status FROM agents WHERE workspace_id = $1"
             " AND id = $2 FOR UPDATE) o WHERE a.workspace_id = $1 AND a.id = o.id"
             " AND $3::boolean IS NOT NULL RETURNING o.status, a.status",
             set);
    az_pgconn *c;
    az_err err = az_pg_acquire(pg, ctx, &c, msg);
    if (err != AZ_OK) return err;
    PGresult *r = NULL;
    if ((err = az_pg_begin(c, ctx, msg)) != AZ_OK) goto out;
    err = az_pg_exec(c, ctx, pre, 3, hp, &r, msg);
    if (err == AZ_ERR_PRECONDITION) /* the foreign key: no such agent in this workspace */
        err = az_fail(msg, AZ_ERR_NOT_FOUND, "agent %s not found", agent_id);
    if (err != AZ_OK) goto out;
    int n = atoi(PQcmdTuples(r));
    PQclear(r);
    r = NULL;
    if (n == 0) { /* already held, or already released (by the reaper) */
        err = az_pg_commit(c, ctx, msg);
        goto out;
    }
    if ((err = az_pg_exec(c, ctx, moved, 3, p, &r, msg)) != AZ_OK) goto out;
    if (PQntuples(r) == 0) {
        err = az_fail(msg, AZ_ERR_NOT_FOUND, "agent %s not found", agent_id);
        goto out;
    }
    int from = atoi(PQgetvalue(r, 0, 0)), to = atoi(PQgetvalue(r, 0, 1));
    if (from != to) {
        Agentz__V1__AgentStatusChanged ch = AGENTZ__V1__AGENT_STATUS_CHANGED__INIT;
        ch.from = (Agentz__V1__AgentStatus)from;
        ch.to = (Agentz__V1__AgentStatus)to;
        ch.reason = (char *)(to == AGENTZ__V1__AGENT_STATUS__AGENT_STATUS_ERROR ? reason : "");
        Agentz__V1__Event ev = AGENTZ__V1__EVENT__INIT;
        ev.agent_id = (char *)agent_id;
        ev.payload_case = AGENTZ__V1__EVENT__PAYLOAD_AGENT_STATUS;
        ev.agent_status = &ch;
        if ((err = az_outbox_append(c, ctx, &ev, NULL, 0, msg)) != AZ_OK) goto out;
    }
    err = az_pg_commit(c, ctx, msg);
out:
    PQclear(r);
    az_pg_release(c);
    return err;
}

static az_err hold_add(az_pg *pg, const az_ctx *ctx, const char *agent_id, const char *holder,
                       char *msg)
{
    return change_status(pg, ctx, agent_id, holder,
                         "INSERT INTO agent_holders (workspace_id, agent_id, holder)"
                         " VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                         "running_tasks = running_tasks + 1, status = CASE WHEN disabled THEN 3 ELSE 2 END",
                         0, "", msg);
}

static az_err hold_drop(az_pg *pg, const az_ctx *ctx, const char *agent_id, const char *holder,
                        int failed, char *msg)
{
    /* On the right-hand side running_tasks is the count before this update. */
    return change_status(pg, ctx, agent_id, holder,
                         "DELETE FROM agent_holders WHERE workspace_id = $1 AND agent_id = $2"
                         " AND holder = $3",
                         "running_tasks = GREATEST(running_tasks - 1, 0),"
                         " status = CASE WHEN disabled THEN 3 WHEN running_tasks > 1 THEN 2"
                         "  WHEN $3::boolean THEN 4 ELSE 1 END",
                         failed, "its last task failed", msg);
}

typedef struct hold {
    char ws[40], id[40], holder[AZ_AGENT_HOLDER_MAX + 1];
    int n;               /* tasks of the agent this holder runs now (holds_mu) */
    int users;           /* calls between lookup and release; the entry lives while > 0 */
    int in_db;           /* the holder's row is committed (written under db and holds_mu) */
    pthread_mutex_t db;  /* orders this holder's writes for the agent */
    struct hold *next;
} hold;

#define HOLD_BUCKETS 64
static pthread_mutex_t holds_mu = PTHREAD_MUTEX_INITIALIZER;
static hold *holds[HOLD_BUCKETS];

static unsigned hold_bucket(const char *ws, const char *id, const char *holder)
{
    unsigned h = 2166136261u;
    for (const char *s = ws; *s; s++) h = (h ^ (unsigned char)*s) * 16777619u;
    for (const char *s = id; *s; s++) h = (h ^ (unsigned char)*s) * 16777619u;
    for (const char *s = holder; *s; s++) h = (h ^ (unsigned char)*s) * 16777619u;
    return h % HOLD_BUCKETS;
}

/* Under holds_mu: the entry, created when create is set; NULL when absent or out of memory. */
static hold *hold_find(const char *ws, const char *id, const char *holder, int create)
{
    hold **slot = &holds[hold_bucket(ws, id, holder)];
    for (hold *h = *slot; h; h = h->next)
        if (strcmp(h->id, id) == 0 && strcmp(h->ws, ws) == 0 && strcmp(h->holder, holder) == 0)
            return h;
    if (!create) return NULL;
    hold *h = calloc(1, sizeof *h);
    if (!h) return NULL;
    snprintf(h->ws, sizeof h->ws, "%s", ws);
    snprintf(h->id, sizeof h->id, "%s", id);
    snprintf(h->holder, sizeof h->holder, "%s", holder);
    pthread_mutex_init(&h->db, NULL);
    h->next = *slot;
    *slot = h;
    return h;
}

/* Under holds_mu: drops one user and frees the entry once nothing refers to it. */
static void hold_release(hold *h)
{
    if (--h->users > 0 || h->n > 0 || h->in_db) return;
    for (hold **p = &holds[hold_bucket(h->ws, h->id, h->holder)]; *p; p = &(*p)->next) {
        if (*p == h) {
            *p = h->next;
            break;
        }
    }
    pthread_mutex_destroy(&h->db);
    free(h);
}

/* Brings the database in line with the holder's count: its row is inserted when it runs tasks
 * of the agent, deleted when it runs none. One caller at a time per entry, so the writes come
 * in order whatever the threads' interleaving. */
static az_err hold_settle(az_pg *pg, const az_ctx *ctx, hold *h, int failed, char *msg)
{
    az_err err = AZ_OK;
    pthread_mutex_lock(&h->db);
    pthread_mutex_lock(&holds_mu);
    int want = h->n > 0, have = h->in_db;
    pthread_mutex_unlock(&holds_mu);
    if (want && !have) err = hold_add(pg, ctx, h->id, h->holder, msg);
    else if (!want && have) err = hold_drop(pg, ctx, h->id, h->holder, failed, msg);
    if (err == AZ_OK && want != have) {
        pthread_mutex_lock(&holds_mu);
        h->in_db = want;
        pthread_mutex_unlock(&holds_mu);
    }
    pthread_mutex_unlock(&h->db);
    return err;
}

static az_err check_holder(const char *agent_id, const char *holder, char *msg)
{
    if (!az_text_is_uuid(agent_id)) return az_fail(msg, AZ_ERR_NOT_FOUND, "agent %s not found", agent_id);
    if (!holder || !*holder || strlen(holder) > AZ_AGENT_HOLDER_MAX)
        return az_fail(msg, AZ_ERR_INVALID, "holder: 1 to %d characters", AZ_AGENT_HOLDER_MAX);
    return AZ_OK;
}

az_err az_agent_task_started(az_pg *pg, const az_ctx *ctx, const char *agent_id,
                             const char *holder, char *msg)
{
    az_err err = check_holder(agent_id, holder, msg);
    if (err != AZ_OK) return err;
    pthread_mutex_lock(&holds_mu);
    hold *h = hold_find(ctx->workspace_id, agent_id, holder, 1);
    if (h) {
        h->n++;
        h->users++;
    }
    pthread_mutex_unlock(&holds_mu);
    if (!h) return az_fail(msg, AZ_ERR_NOMEM, "out of memory");
    err = hold_settle(pg, ctx, h, 0, msg);
    pthread_mutex_lock(&holds_mu);
    if (err != AZ_OK) h->n--; /* not started: no az_agent_task_ended will follow */
    hold_release(h);
    pthread_mutex_unlock(&holds_mu);
    return err;
}

az_err az_agent_task_ended(az_pg *pg, const az_ctx *ctx, const char *agent_id, const char *holder,
                           int failed, char *msg)
{
    az_err err = check_holder(agent_id, holder, msg);
    if (err != AZ_OK) return err;
    pthread_mutex_lock(&holds_mu);
    hold *h = hold_find(ctx->workspace_id, agent_id, holder, 0);
    if (h && h->n == 0 && !h->in_db) h = NULL;
    if (h) {
        if (h->n > 0) h->n--;
        h->users++;
    }
    pthread_mutex_unlock(&holds_mu);
    if (!h) return AZ_OK; /* nothing started here: a duplicate report changes nothing */
    err = hold_settle(pg, ctx, h, failed, msg);
    pthread_mutex_lock(&holds_mu);
    hold_release(h);
    pthread_mutex_unlock(&holds_mu);
    return err;
}

az_err az_agent_holder_lost(az_pg *pg, const az_ctx *ctx, const char *agent_id, const char *holder,
                            int failed, char *msg)
{
    az_err err = check_holder(agent_id, holder, msg);
    if (err != AZ_OK) return err;
    return hold_drop(pg, ctx, agent_id, holder, failed, msg);
}
