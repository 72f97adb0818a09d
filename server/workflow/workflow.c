/* Workflows in PostgreSQL: one row per workflow (name, labels, latest version, revision) plus
 * one immutable row per version holding the packed spec. Idempotent create, optimistic
 * concurrency by revision, keyset pagination. Every statement is parameterized. */
#include "workflow.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/pagetoken.h"
#include "core/pbtime.h"
#include "core/text.h"
#include "google/protobuf/timestamp.pb-c.h"
#include "store/idem.h"
#include "store/pgarray.h"

#define COLS                                                                                     \
    "w.id::text, v.version, v.spec, w.revision,"                                                 \
    " (extract(epoch FROM w.create_time) * 1000000)::bigint,"                                    \
    " (extract(epoch FROM v.create_time) * 1000000)::bigint, w.workspace_id::text,"              \
    " w.create_time::text"
#define FROM_LATEST                                                                              \
    " FROM workflows w JOIN workflow_versions v ON v.workspace_id = w.workspace_id"              \
    " AND v.workflow_id = w.id AND v.version = w.latest_version"

enum { C_ID, C_VERSION, C_SPEC, C_REVISION, C_CREATE, C_UPDATE, C_WORKSPACE, C_CREATE_TEXT };

/* ---------------------------------------------------------------- row -> message */

static long long num(const PGresult *r, int row, int c) { return atoll(PQgetvalue(r, row, c)); }

static az_err from_row(const PGresult *r, int row, az_arena *a, Agentz__V1__Workflow **out, char *msg)
{
    size_t len = 0;
    unsigned char *bytes = PQunescapeBytea((const unsigned char *)PQgetvalue(r, row, C_SPEC), &len);
    if (!bytes) return az_fail(msg, AZ_ERR_NOMEM, "out of memory");
    Agentz__V1__Workflow *w = (Agentz__V1__Workflow *)protobuf_c_message_unpack(
        &agentz__v1__workflow__descriptor, az_arena_allocator(a), len, bytes);
    PQfreemem(bytes);
    if (!w) return az_fail(msg, AZ_ERR_INTERNAL, "stored workflow spec does not parse");
    w->id = az_arena_strdup(a, PQgetvalue(r, row, C_ID));
    w->version = (int32_t)num(r, row, C_VERSION);
    w->etag = az_arena_printf(a, "%lld", num(r, row, C_REVISION));
    w->create_time = az_pbtime_timestamp(a, num(r, row, C_CREATE));
    w->update_time = az_pbtime_timestamp(a, num(r, row, C_UPDATE));
    w->workspace_id = az_arena_strdup(a, PQgetvalue(r, row, C_WORKSPACE));
    if (!w->id || !w->etag || !w->create_time || !w->update_time || !w->workspace_id)
        return az_fail(msg, AZ_ERR_NOMEM, "out of memory");
    *out = w;
    return AZ_OK;
}

/* ---------------------------------------------------------------- message -> parameters */

/* The spec as a bytea literal ("\x…"): w with its output-only fields cleared, packed. */
static char *spec_param(az_arena *a, const Agentz__V1__Workflow *w)
{
    Agentz__V1__Workflow s = *w;
    s.id = "";
    s.version = 0;
    s.create_time = NULL;
    s.update_time = NULL;
    s.etag = "";
    s.workspace_id = "";
    size_t n = protobuf_c_message_get_packed_size(&s.base);
    uint8_t *buf = az_arena_alloc(a, n ? n : 1);
    char *hex = az_arena_alloc(a, 2 * n + 3);
    if (!buf || !hex) return NULL;
    protobuf_c_message_pack(&s.base, buf);
    static const char digits[] = "0123456789abcdef";
    hex[0] = '\\';
    hex[1] = 'x';
    for (size_t i = 0; i < n; i++) {
        hex[2 + 2 * i] = digits[buf[i] >> 4];
        hex[3 + 2 * i] = digits[buf[i] & 15];
    }
    hex[2 + 2 * n] = '\0';
    return hex;
}

static char *labels_param(az_arena *a, const Agentz__V1__Workflow *w)
{
    json_t *labels = json_object();
    for (size_t i = 0; labels && i < w->n_labels; i++)
        json_object_set_new(labels, w->labels[i]->key, json_string(w->labels[i]->value));
    char *s = labels ? json_dumps(labels, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
    json_decref(labels);
    char *out = s ? az_arena_strdup(a, s) : NULL;
    free(s);
    return out;
}

/* A unique-name violation reads better as the field the client sent. */
static az_err name_taken(az_err err, const Agentz__V1__Workflow *w, char *msg)
{
    if (err == AZ_ERR_EXISTS)
        return az_fail(msg, AZ_ERR_EXISTS, "workflow.name: a workflow named \"%s\" already exists",
                       w->name);
    return err;
}

/* ---------------------------------------------------------------- reads */

az_err az_workflow_get_in(az_pgconn *c, const az_ctx *ctx, const char *id, int version,
                          int share_lock, az_arena *a, Agentz__V1__Workflow **out, char *msg)
{
    *out = NULL;
    if (!az_text_is_uuid(id)) return az_fail(msg, AZ_ERR_NOT_FOUND, "workflow %s not found", id);
    char ver[16];
    snprintf(ver, sizeof ver, "%d", version);
    const char *p[3] = {ctx->workspace_id, id, ver};
    PGresult *r;
    az_err err = az_pg_exec(
        c, ctx,
        share_lock
            ? "SELECT " COLS ", w.latest_version FROM workflows w JOIN workflow_versions v"
              " ON v.workspace_id = w.workspace_id AND v.workflow_id = w.id"
              " AND v.version = CASE WHEN $3::integer = 0 THEN w.latest_version ELSE $3::integer END"
              " WHERE w.workspace_id = $1 AND w.id = $2 FOR SHARE OF w"
            : "SELECT " COLS ", w.latest_version FROM workflows w JOIN workflow_versions v"
              " ON v.workspace_id = w.workspace_id AND v.workflow_id = w.id"
              " AND v.version = CASE WHEN $3::integer = 0 THEN w.latest_version ELSE $3::integer END"
              " WHERE w.workspace_id = $1 AND w.id = $2",
        3, p, &r, msg);
    if (err != AZ_OK) return err;
    if (PQntuples(r) == 1) {
        err = from_row(r, 0, a, out, msg);
        PQclear(r);
        return err;
    }
    PQclear(r);
    if (version == 0) return az_fail(msg, AZ_ERR_NOT_FOUND, "workflow %s not found", id);
    /* Say whether the workflow or only the version is missing. */
    err = az_pg_exec(c, ctx, "SELECT latest_version FROM workflows WHERE workspace_id = $1 AND id = $2",
                     2, p, &r, msg);
    if (err != AZ_OK) return err;
    if (PQntuples(r) == 0) err = az_fail(msg, AZ_ERR_NOT_FOUND, "workflow %s not found", id);
    else
        err = az_fail(msg, AZ_ERR_NOT_FOUND, "version: workflow %s has no version %d (latest is %s)",
                      id, version, PQgetvalue(r, 0, 0));
    PQclear(r);
    return err;
}

az_err az_workflow_get(az_pg *pg, const az_ctx *ctx, const char *id, int version, az_arena *a,
                       Agentz__V1__Workflow **out, char *msg)
{
    *out = NULL;
    if (!az_text_is_uuid(id)) return az_fail(msg, AZ_ERR_NOT_FOUND, "workflow %s not found", id);
    az_pgconn *c;
    az_err err = az_pg_acquire(pg, ctx, &c, msg);
    if (err != AZ_OK) return err;
    err = az_workflow_get_in(c, ctx, id, version, 0, a, out, msg);
    az_pg_release(c);
    return err;
}

/* ---------------------------------------------------------------- create */

az_err az_workflow_insert(az_pgconn *c, const az_ctx *ctx, const char *id,
                          const Agentz__V1__Workflow *w, az_arena *a, Agentz__V1__Workflow **out,
                          char *msg)
{
    *out = NULL;
    const char *p[6] = {ctx->workspace_id, id, w->name, w->description, labels_param(a, w),
                        spec_param(a, w)};
    if (!p[4] || !p[5]) return az_fail(msg, AZ_ERR_NOMEM, "out of memory");
    az_err err = az_pg_exec(c, ctx,
                            "INSERT INTO workflows (workspace_id, id, name, description, labels)"
                            " VALUES ($1, $2, $3, $4, $5::jsonb)",
                            5, p, NULL, msg);
    if (err != AZ_OK) return name_taken(err, w, msg);
    const char *pv[3] = {ctx->workspace_id, id, p[5]};
    err = az_pg_exec(c, ctx,
                     "INSERT INTO workflow_versions (workspace_id, workflow_id, version, spec)"
                     " VALUES ($1, $2, 1, $3::bytea)",
                     3, pv, NULL, msg);
    if (err != AZ_OK) return err;
    return az_workflow_get_in(c, ctx, id, 1, 0, a, out, msg);
}

az_err az_workflow_create(az_pg *pg, const az_ctx *ctx, const Agentz__V1__Workflow *w,
                          const char *request_id, const char *request_hash, az_arena *a,
                          Agentz__V1__Workflow **out, int *replayed, char *msg)
{
    *out = NULL;
    *replayed = 0;
    char id[37];
    if (az_text_uuid4(id) != AZ_OK) return az_fail(msg, AZ_ERR_IO, "cannot generate an id");
    az_pgconn *c;
    az_err err = az_pg_acquire(pg, ctx, &c, msg);
    if (err != AZ_OK) return err;
    if ((err = az_pg_begin(c, ctx, msg)) != AZ_OK) goto out;
    if (request_id && *request_id) {
        char existing[37];
        err = az_idem_claim(c, ctx, "CreateWorkflow", request_id, request_hash, id, existing, msg);
        if (err != AZ_OK) goto out;
        if (existing[0]) {
            /* The first result: version 1 as it was created. */
            err = az_workflow_get_in(c, ctx, existing, 1, 0, a, out, msg);
            if (err == AZ_OK) {
                *replayed = 1;
                err = az_pg_commit(c, ctx, msg);
            }
            goto out;
        }
    }
    err = az_workflow_insert(c, ctx, id, w, a, out, msg);
    if (err == AZ_OK) err = az_pg_commit(c, ctx, msg);
out:
    if (err != AZ_OK) *out = NULL;
    az_pg_release(c);
    return err;
}

/* ---------------------------------------------------------------- list */

/* Token text: "w1|<filter hash>|<create_time text>|<id>". */
az_err az_workflow_list(az_pg *pg, const az_ctx *ctx, const az_workflow_query *q, az_arena *a,
                        Agentz__V1__ListWorkflowsResponse **out, char *msg)
{
    *out = NULL;
    unsigned long hash = az_pagetoken_hash(AZ_PAGETOKEN_HASH_INIT, q->labels_json);
    char ts[64] = "", after[40] = "";
    az_err err;
    if (q->page_token && *q->page_token) {
        char raw[AZ_PAGETOKEN_RAW_MAX + 1];
        unsigned long th;
        if ((err = az_pagetoken_decode(q->page_token, raw, msg)) != AZ_OK) return err;
        if (sscanf(raw, "w1|%lx|%63[^|]|%39s", &th, ts, after) != 3 || !az_text_is_uuid(after))
            return az_fail(msg, AZ_ERR_INVALID, "page_token is invalid");
        if (th != hash)
            return az_fail(msg, AZ_ERR_INVALID,
                           "page_token was issued for a different label_selector");
    }
    char limit[16];
    snprintf(limit, sizeof limit, "%d", q->page_size + 1);
    const char *p[5] = {ctx->workspace_id, q->labels_json, ts[0] ? ts : NULL,
                        after[0] ? after : NULL, limit};
    /* With a selector its pairs drive, through workflow_labels (migration 0017): under
     * row-level security jsonb containment, not leakproof, cannot use an index. Each selected
     * workflow is then fetched by its primary key (OFFSET 0: not flattened, so the planner
     * cannot turn the join around on tables without statistics yet). */
    int by_labels = q->labels_json != NULL;
    if (by_labels && !(p[1] = az_pgarray_label_pairs(a, q->labels_json)))
        return az_fail(msg, AZ_ERR_NOMEM, "out of memory");
    az_pgconn *c;
    if ((err = az_pg_acquire(pg, ctx, &c, msg)) != AZ_OK) return err;
    PGresult *r;
    err = by_labels
              ? az_pg_exec(c, ctx,
                           "SELECT " COLS " FROM (SELECT l.workflow_id FROM workflow_labels l"
                           "  WHERE l.workspace_id = $1 AND l.pair = ANY ($2::text[])"
                           "  GROUP BY l.workflow_id HAVING count(*) = cardinality($2::text[])) m"
                           " CROSS JOIN LATERAL (SELECT * FROM workflows WHERE workspace_id = $1"
                           "  AND id = m.workflow_id OFFSET 0) w"
                           " JOIN workflow_versions v ON v.workspace_id = w.workspace_id"
                           "  AND v.workflow_id = w.id AND v.version = w.latest_version"
                           " WHERE ($3::timestamptz IS NULL OR (w.create_time, w.id) < ($3::timestamptz, $4::uuid))"
                           " ORDER BY w.create_time DESC, w.id DESC LIMIT $5::integer",
                           5, p, &r, msg)
              : az_pg_exec(c, ctx,
                           "SELECT " COLS FROM_LATEST " WHERE w.workspace_id = $1 AND $2::text[] IS NULL"
                           " AND ($3::timestamptz IS NULL OR (w.create_time, w.id) < ($3::timestamptz, $4::uuid))"
                           " ORDER BY w.create_time DESC, w.id DESC LIMIT $5::integer",
                           5, p, &r, msg);
    az_pg_release(c);
    if (err != AZ_OK) return err;
    int rows = PQntuples(r), n = rows > q->page_size ? q->page_size : rows;
    Agentz__V1__ListWorkflowsResponse *resp = az_arena_alloc(a, sizeof *resp);
    if (resp) {
        agentz__v1__list_workflows_response__init(resp);
        resp->workflows = az_arena_alloc(a, (size_t)(n ? n : 1) * sizeof *resp->workflows);
    }
    if (!resp || !resp->workflows) err = az_fail(msg, AZ_ERR_NOMEM, "out of memory");
    for (int i = 0; i < n && err == AZ_OK; i++) err = from_row(r, i, a, &resp->workflows[i], msg);
    if (err == AZ_OK) {
        resp->n_workflows = (size_t)n;
        if (rows > q->page_size) {
            char raw[AZ_PAGETOKEN_RAW_MAX + 1];
            snprintf(raw, sizeof raw, "w1|%lx|%s|%s", hash, PQgetvalue(r, n - 1, C_CREATE_TEXT),
                     PQgetvalue(r, n - 1, C_ID));
            if (!(resp->next_page_token = az_pagetoken_encode(a, raw)))
                err = az_fail(msg, AZ_ERR_NOMEM, "out of memory");
        }
    }
    PQclear(r);
    if (err == AZ_OK) *out = resp;
    return err;
}

az_err az_workflow_list_versions(az_pg *pg, const az_ctx *ctx, const char *id, int page_size,
                                 const char *page_token, az_arena *a,
                                 Agentz__V1__ListWorkflowVersionsResponse **out, char *msg)
{
    *out = NULL;
    if (!az_text_is_uuid(id)) return az_fail(msg, AZ_ERR_NOT_FOUND, "workflow %s not found", id);
    int before = 0;
    az_err err;
    if (page_token && *page_token) {
        char raw[AZ_PAGETOKEN_RAW_MAX + 1], tid[40];
        if ((err = az_pagetoken_decode(page_token, raw, msg)) != AZ_OK) return err;
        if (sscanf(raw, "v1|%39[^|]|%d", tid, &before) != 2 || before < 1)
            return az_fail(msg, AZ_ERR_INVALID, "page_token is invalid");
        if (strcmp(tid, id) != 0)
            return az_fail(msg, AZ_ERR_INVALID, "page_token was issued for another workflow");
    }
    char b[16], limit[16];
    snprintf(b, sizeof b, "%d", before);
    snprintf(limit, sizeof limit, "%d", page_size + 1);
    const char *p[4] = {ctx->workspace_id, id, b, limit};
    az_pgconn *c;
    if ((err = az_pg_acquire(pg, ctx, &c, msg)) != AZ_OK) return err;
    PGresult *r;
    err = az_pg_exec(c, ctx,
                     "SELECT " COLS " FROM workflows w JOIN workflow_versions v"
                     " ON v.workspace_id = w.workspace_id AND v.workflow_id = w.id"
                     " WHERE w.workspace_id = $1 AND w.id = $2"
                     " AND ($3::integer = 0 OR v.version < $3::integer)"
                     " ORDER BY v.version DESC LIMIT $4::integer",
                     4, p, &r, msg);
    if (err == AZ_OK && PQntuples(r) == 0) {
        /* An empty page of an existing workflow is fine; a missing workflow is not. */
        PQclear(r);
        r = NULL;
        PGresult *e;
        err = az_pg_exec(c, ctx, "SELECT 1 FROM workflows WHERE workspace_id = $1 AND id = $2", 2, p,
                         &e, msg);
        if (err == AZ_OK) {
            if (PQntuples(e) == 0) err = az_fail(msg, AZ_ERR_NOT_FOUND, "workflow %s not found", id);
            PQclear(e);
        }
    }
    az_pg_release(c);
    if (err != AZ_OK) {
        PQclear(r);
        return err;
    }
    int rows = r ? PQntuples(r) : 0, n = rows > page_size ? page_size : rows;
    Agentz__V1__ListWorkflowVersionsResponse *resp = az_arena_alloc(a, sizeof *resp);
    if (resp) {
        agentz__v1__list_workflow_versions_response__init(resp);
        resp->workflows = az_arena_alloc(a, (size_t)(n ? n : 1) * sizeof *resp->workflows);
    }
    if (!resp || !resp->workflows) err = az_fail(msg, AZ_ERR_NOMEM, "out of memory");
    for (int i = 0; i < n && err == AZ_OK; i++) err = from_row(r, i, a, &resp->workflows[i], msg);
    if (err == AZ_OK) {
        resp->n_workflows = (size_t)n;
        if (rows > page_size) {
            char raw[AZ_PAGETOKEN_RAW_MAX + 1];
            snprintf(raw, sizeof raw, "v1|%s|%s", id, PQgetvalue(r, n - 1, C_VERSION));
            if (!(resp->next_page_token = az_pagetoken_encode(a, raw)))
                err = az_fail(msg, AZ_ERR_NOMEM, "out of memory");
        }
    }
    PQclear(r);
    if (err == AZ_OK) *out = resp;
    return err;
}

/* ---------------------------------------------------------------- update and delete */

/* After a conditional statement touched no row: gone, or changed by someone else? */
static az_err explain_miss(az_pgconn *c, const az_ctx *ctx, const char *id, char *msg)
{
    const char *p[2] = {ctx->workspace_id, id};
    PGresult *r;
    az_err err = az_pg_exec(c, ctx, "SELECT revision FROM workflows WHERE workspace_id = $1 AND id = $2",
                            2, p, &r, msg);
    if (err != AZ_OK) return err;
    if (PQntuples(r) == 0) err = az_fail(msg, AZ_ERR_NOT_FOUND, "workflow %s not found", id);
    else
        err = az_fail(msg, AZ_ERR_ABORTED,
                      "workflow.etag: workflow %s was changed concurrently (etag is now \"%s\"); "
                      "read it again and retry",
                      id, PQgetvalue(r, 0, 0));
    PQclear(r);
    return err;
}

az_err az_workflow_update(az_pg *pg, const az_ctx *ctx, const Agentz__V1__Workflow *w,
                          int64_t expected_revision, az_arena *a, Agentz__V1__Workflow **out,
                          char *msg)
{
    *out = NULL;
    if (!az_text_is_uuid(w->id)) return az_fail(msg, AZ_ERR_NOT_FOUND, "workflow %s not found", w->id);
    const char *p[6] = {ctx->workspace_id, w->id, w->name, w->description, labels_param(a, w),
                        az_arena_printf(a, "%lld", (long long)expected_revision)};
    char *spec = spec_param(a, w);
    if (!p[4] || !p[5] || !spec) return az_fail(msg, AZ_ERR_NOMEM, "out of memory");
    az_pgconn *c;
    az_err err = az_pg_acquire(pg, ctx, &c, msg);
    if (err != AZ_OK) return err;
    PGresult *r = NULL;
    if ((err = az_pg_begin(c, ctx, msg)) != AZ_OK) goto out;
    err = az_pg_exec(c, ctx,
                     "UPDATE workflows SET name = $3, description = $4, labels = $5::jsonb,"
                     " latest_version = latest_version + 1, revision = revision + 1,"
                     " update_time = clock_timestamp()"
                     " WHERE workspace_id = $1 AND id = $2 AND revision = $6::bigint"
                     " RETURNING latest_version",
                     6, p, &r, msg);
    if (err != AZ_OK) {
        err = name_taken(err, w, msg);
        goto out;
    }
    if (PQntuples(r) == 0) {
        err = explain_miss(c, ctx, w->id, msg);
        goto out;
    }
    int version = atoi(PQgetvalue(r, 0, 0));
    const char *pv[4] = {ctx->workspace_id, w->id, PQgetvalue(r, 0, 0), spec};
    err = az_pg_exec(c, ctx,
                     "INSERT INTO workflow_versions (workspace_id, workflow_id, version, spec)"
                     " VALUES ($1, $2, $3::integer, $4::bytea)",
                     4, pv, NULL, msg);
    if (err == AZ_OK) err = az_workflow_get_in(c, ctx, w->id, version, 0, a, out, msg);
    if (err == AZ_OK) err = az_pg_commit(c, ctx, msg);
out:
    PQclear(r);
    if (err != AZ_OK) *out = NULL;
    az_pg_release(c);
    return err;
}

az_err az_workflow_delete(az_pg *pg, const az_ctx *ctx, const char *id, int64_t expected_revision,
                          char *msg)
{
    if (!az_text_is_uuid(id)) return az_fail(msg, AZ_ERR_NOT_FOUND, "workflow %s not found", id);
    const char *p[2] = {ctx->workspace_id, id};
    az_pgconn *c;
    az_err err = az_pg_acquire(pg, ctx, &c, msg);
    if (err != AZ_OK) return err;
    PGresult *r = NULL;
    if ((err = az_pg_begin(c, ctx, msg)) != AZ_OK) goto out;
    /* The row lock orders this delete against StartRun, which holds the row FOR SHARE while it
     * creates a run: no run can start on a workflow being deleted. */
    err = az_pg_exec(c, ctx,
                     "SELECT revision FROM workflows WHERE workspace_id = $1 AND id = $2 FOR UPDATE",
                     2, p, &r, msg);
    if (err != AZ_OK) goto out;
    if (PQntuples(r) == 0) {
        err = az_fail(msg, AZ_ERR_NOT_FOUND, "workflow %s not found", id);
        goto out;
    }
    long long have = atoll(PQgetvalue(r, 0, 0));
    PQclear(r);
    r = NULL;
    if (expected_revision > 0 && expected_revision != have) {
        err = az_fail(msg, AZ_ERR_ABORTED,
                      "etag: \"%lld\" does not match the current etag \"%lld\"; read the workflow "
                      "again and retry",
                      (long long)expected_revision, have);
        goto out;
    }
    err = az_pg_exec(c, ctx,
                     "SELECT id::text, status FROM workflow_runs WHERE workspace_id = $1"
                     " AND workflow_id = $2 AND status IN (1, 2) LIMIT 1",
                     2, p, &r, msg);
    if (err != AZ_OK) goto out;
    if (PQntuples(r) > 0) {
        err = az_fail(msg, AZ_ERR_PRECONDITION,
                      "workflow %s has unfinished runs (run %s is %s); cancel them first", id,
                      PQgetvalue(r, 0, 0), atoi(PQgetvalue(r, 0, 1)) == 1 ? "pending" : "running");
        goto out;
    }
    err = az_pg_exec(c, ctx, "DELETE FROM workflows WHERE workspace_id = $1 AND id = $2", 2, p, NULL,
                     msg);
    if (err == AZ_OK) err = az_pg_commit(c, ctx, msg);
out:
    PQclear(r);
    az_pg_release(c);
    return err;
}

int64_t az_workflow_etag_revision(const char *etag)
{
    if (!etag || !*etag || strlen(etag) > 18) return -1;
    int64_t v = 0;
    for (const char *s = etag; *s; s++) {
        if (*s < '0' || *s > '9') return -1;
        v = v * 10 + (*s - '0');
    }
    return v > 0 ? v : -1;
}
