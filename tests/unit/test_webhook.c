/* CUnit suite for server/event/webhook: enqueue validation and transactionality, and the
 * delivery thread against a real HTTP receiver on loopback (tests/unit/llm_fake.c): the
 * signature verifies, failures are retried with backoff and recorded, attempts run out, the
 * network policy is applied, two delivery threads never send one delivery twice, and the
 * signing secret file of the embedded default. */
#include <CUnit/Basic.h>
#include <ftw.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/log.h"
#include "embed/embedded.h"
#include "event/webhook.h"
#include "store/migrate.h"
#include "store/pgpool.h"
#include "task/task.h"
#include "tools/netguard.h"

#include "llm_fake.c" /* the scripted HTTP server: not globbed by CMake as a suite */

static char dir[64];
static az_embed *embed;
static az_pg *pg;
static az_arena *arena;
static az_netguard *loopback, *strict;
static const az_ctx ctx = {.workspace_id = AZ_DEFAULT_WORKSPACE, .principal = "", .request_id = "t",
                           .deadline_ms = -1};
static const az_ctx sys_ctx = {.workspace_id = NULL, .principal = "", .request_id = "t",
                               .deadline_ms = -1};
static const char *SECRET = "whsec-test-1234";
static int64_t next_event = 100;

/* ---------------------------------------------------------------- helpers */

static const char *make_task(void)
{
    Agentz__V1__Task t = AGENTZ__V1__TASK__INIT;
    t.description = "summarize the news";
    t.expected_output = "a summary";
    t.agent_id = "0a0a0a0a-0000-4000-8000-000000000001";
    Agentz__V1__Task *out = NULL;
    int replayed = 0;
    az_task_ready ready = {0};
    char msg[AZ_MSG_MAX] = "";
    az_err err = az_task_create(pg, &ctx, &t, "", "", arena, &out, &replayed, &ready, msg);
    if (err != AZ_OK) fprintf(stderr, "create task: %s\n", msg);
    CU_ASSERT_EQUAL_FATAL(err, AZ_OK);
    return out->id;
}

/* Enqueues in a transaction that commits (or rolls back); returns the event id used. */
static int64_t enqueue(const char *task_id, const char *type, const char *const *urls, size_t n,
                       int commit)
{
    int64_t ev = next_event++;
    char msg[AZ_MSG_MAX];
    az_pgconn *c;
    CU_ASSERT_EQUAL_FATAL(az_pg_acquire(pg, &ctx, &c, msg), AZ_OK);
    CU_ASSERT_EQUAL_FATAL(az_pg_begin(c, &ctx, msg), AZ_OK);
    az_err err = az_webhook_enqueue(c, &ctx, ev, task_id, NULL, type, urls, n, msg);
    if (err != AZ_OK) fprintf(stderr, "enqueue: %s\n", msg);
    CU_ASSERT_EQUAL(err, AZ_OK);
    if (commit) {
        CU_ASSERT_EQUAL(az_pg_commit(c, &ctx, msg), AZ_OK);
    } else {
        az_pg_rollback(c);
    }
    az_pg_release(c);
    return ev;
}

typedef struct row {
    int found;
    char id[40], status[16], last_error[512];
    int attempts, http_status;
    double due_in_s; /* next_attempt_at - now */
    int delivered_at_set;
} row;

/* The delivery of event ev (system work: across workspaces, as the delivery thread sees it). */
static row fetch(int64_t ev)
{
    row r = {0};
    char e[24], msg[AZ_MSG_MAX];
    snprintf(e, sizeof e, "%lld", (long long)ev);
    const char *p[1] = {e};
    az_pgconn *c;
    CU_ASSERT_EQUAL_FATAL(az_pg_acquire(pg, &sys_ctx, &c, msg), AZ_OK);
    PGresult *res = NULL;
    az_err err = az_pg_exec(c, &sys_ctx,
                            "SELECT id, status, attempts, coalesce(last_http_status, 0),"
                            " coalesce(last_error, ''),"
                            " extract(epoch FROM next_attempt_at - clock_timestamp()),"
                            " delivered_at IS NOT NULL"
                            " FROM webhook_deliveries WHERE event_id = $1::bigint",
                            1, p, &res, msg);
    az_pg_release(c);
    CU_ASSERT_EQUAL_FATAL(err, AZ_OK);
    if (PQntuples(res) == 1) {
        r.found = 1;
        snprintf(r.id, sizeof r.id, "%s", PQgetvalue(res, 0, 0));
        snprintf(r.status, sizeof r.status, "%s", PQgetvalue(res, 0, 1));
        r.attempts = atoi(PQgetvalue(res, 0, 2));
        r.http_status = atoi(PQgetvalue(res, 0, 3));
        snprintf(r.last_error, sizeof r.last_error, "%s", PQgetvalue(res, 0, 4));
        r.due_in_s = atof(PQgetvalue(res, 0, 5));
        r.delivered_at_set = PQgetvalue(res, 0, 6)[0] == 't';
    }
    PQclear(res);
    return r;
}

/* Polls until the delivery of ev has status and at least attempts attempts (10 s at most).
 * A pending delivery must also have the outcome of its last attempt recorded: attempts counts
 * up when an attempt is claimed, before its POST. */
static row wait_for(int64_t ev, const char *status, int attempts)
{
    row r = {0};
    for (int i = 0; i < 500; i++) {
        r = fetch(ev);
        if (r.found && strcmp(r.status, status) == 0 && r.attempts >= attempts &&
            (strcmp(status, "pending") != 0 || r.last_error[0]))
            return r;
        usleep(20000);
    }
    fprintf(stderr, "event %lld: wanted %s/%d, have %s/%d (%s)\n", (long long)ev, status, attempts,
            r.status, r.attempts, r.last_error);
    return r;
}

static void sql(const char *stmt, const char *param)
{
    char msg[AZ_MSG_MAX];
    az_pgconn *c;
    const char *p[1] = {param};
    CU_ASSERT_EQUAL_FATAL(az_pg_acquire(pg, &sys_ctx, &c, msg), AZ_OK);
    az_err err = az_pg_exec(c, &sys_ctx, stmt, param ? 1 : 0, param ? p : NULL, NULL, msg);
    if (err != AZ_OK) fprintf(stderr, "%s: %s\n", stmt, msg);
    CU_ASSERT_EQUAL(err, AZ_OK);
    az_pg_release(c);
}

static az_webhook *start(const az_netguard *guard, const char *secret)
{
    az_webhook_config cfg = {.pg = pg, .guard = guard, .secret = secret, .timeout_ms = 3000};
    char msg[AZ_MSG_MAX];
    az_webhook *w = az_webhook_start(&cfg, msg);
    if (!w) fprintf(stderr, "start: %s\n", msg);
    CU_ASSERT_PTR_NOT_NULL_FATAL(w);
    return w;
}

static size_t n_requests(llm_fake *f)
{
    pthread_mutex_lock(&f->mu);
    size_t n = f->n_reqs;
    pthread_mutex_unlock(&f->mu);
    return n;
}

/* Verifies X-Agentz-Signature of r the way docs/realtime.md tells receivers to. */
static int signature_ok(const fake_request *r, const char *secret)
{
    char sig[256];
    if (!fake_header(r, "X-Agentz-Signature", sig, sizeof sig)) return 0;
    long long t = 0;
    char hex[129] = "";
    if (sscanf(sig, "t=%lld,v1=%128[0-9a-f]", &t, hex) != 2) return 0;
    if (llabs((long long)time(NULL) - t) > 300) return 0;
    char prefix[32];
    int pn = snprintf(prefix, sizeof prefix, "%lld.", t);
    size_t n = (size_t)pn + r->body_len;
    unsigned char *data = malloc(n);
    memcpy(data, prefix, (size_t)pn);
    memcpy(data + pn, r->body, r->body_len);
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int mn = 0;
    HMAC(EVP_sha256(), secret, (int)strlen(secret), data, n, mac, &mn);
    free(data);
    char want[129];
    for (unsigned i = 0; i < mn; i++) snprintf(want + 2 * i, 3, "%02x", mac[i]);
    return strcmp(want, hex) == 0;
}

/* ---------------------------------------------------------------- tests */

static void test_enqueue_validation(void)
{
    char msg[AZ_MSG_MAX];
    az_pgconn *c;
    CU_ASSERT_EQUAL_FATAL(az_pg_acquire(pg, &ctx, &c, msg), AZ_OK);
    const char *urls[] = {"http://127.0.0.1:9/hook"};
    const char *task = "7d1f0c52-1111-4222-8333-444455556666";
    CU_ASSERT_EQUAL(az_webhook_enqueue(c, &ctx, 1, NULL, "", "task.succeeded", urls, 1, msg), AZ_ERR_INVALID);
    CU_ASSERT_PTR_NOT_NULL(strstr(msg, "task_id or run_id"));
    CU_ASSERT_EQUAL(az_webhook_enqueue(c, &ctx, 1, "nope", NULL, "task.succeeded", urls, 1, msg), AZ_ERR_INVALID);
    CU_ASSERT_PTR_NOT_NULL(strstr(msg, "task_id"));
    CU_ASSERT_EQUAL(az_webhook_enqueue(c, &ctx, 1, NULL, "x", "run.failed", urls, 1, msg), AZ_ERR_INVALID);
    CU_ASSERT_PTR_NOT_NULL(strstr(msg, "run_id"));
    CU_ASSERT_EQUAL(az_webhook_enqueue(c, &ctx, 1, task, NULL, "Task Succeeded", urls, 1, msg), AZ_ERR_INVALID);
    CU_ASSERT_PTR_NOT_NULL(strstr(msg, "event_type"));
    CU_ASSERT_EQUAL(az_webhook_enqueue(c, &ctx, 1, task, NULL, "", urls, 1, msg), AZ_ERR_INVALID);
    const char *bad[] = {"http://127.0.0.1:9/ok", "ftp://example.com/x"};
    CU_ASSERT_EQUAL(az_webhook_enqueue(c, &ctx, 1, task, NULL, "task.failed", bad, 2, msg), AZ_ERR_INVALID);
    CU_ASSERT_PTR_NOT_NULL(strstr(msg, "urls[1]"));
    az_ctx nows = ctx;
    nows.workspace_id = "";
    CU_ASSERT_EQUAL(az_webhook_enqueue(c, &nows, 1, task, NULL, "task.failed", urls, 1, msg), AZ_ERR_INVALID);
    CU_ASSERT_PTR_NOT_NULL(strstr(msg, "workspace_id"));
    /* No URLs: nothing to do, no error. */
    CU_ASSERT_EQUAL(az_webhook_enqueue(c, &ctx, 1, task, NULL, "task.failed", NULL, 0, msg), AZ_OK);
    az_pg_release(c);
}

static void test_enqueue_dedups(void)
{
    const char *task = make_task();
    const char *urls[] = {"http://127.0.0.1:9/a", "http://127.0.0.1:9/a", "http://127.0.0.1:9/b"};
    int64_t ev = enqueue(task, "task.succeeded", urls, 3, 1);
    /* The same event queued again (a replayed transition) adds nothing. */
    char msg[AZ_MSG_MAX];
    az_pgconn *c;
    CU_ASSERT_EQUAL_FATAL(az_pg_acquire(pg, &ctx, &c, msg), AZ_OK);
    CU_ASSERT_EQUAL(az_webhook_enqueue(c, &ctx, ev, task, NULL, "task.succeeded", urls, 3, msg), AZ_OK);
    char e[24];
    snprintf(e, sizeof e, "%lld", (long long)ev);
    const char *p[1] = {e};
    PGresult *r = NULL;
    CU_ASSERT_EQUAL_FATAL(az_pg_exec(c, &ctx,
                                     "SELECT count(*), min(status), max(attempts)"
                                     " FROM webhook_deliveries WHERE event_id = $1::bigint",
                                     1, p, &r, msg),
                          AZ_OK);
    CU_ASSERT_STRING_EQUAL(PQgetvalue(r, 0, 0), "2");
    CU_ASSERT_STRING_EQUAL(PQgetvalue(r, 0, 1), "pending");
    CU_ASSERT_STRING_EQUAL(PQgetvalue(r, 0, 2), "0");
    PQclear(r);
    /* Park them: nothing listens on port 9 and later tests count deliveries. */
    CU_ASSERT_EQUAL(az_pg_exec(c, &ctx, "DELETE FROM webhook_deliveries WHERE event_id = $1::bigint",
                               1, p, NULL, msg),
                    AZ_OK);
    az_pg_release(c);
}

static void test_signed_delivery(void)
{
    llm_fake f;
    CU_ASSERT_EQUAL_FATAL(fake_start(&f), 0);
    fake_script(&f, &(fake_response){.status = 200, .body = "ok"});
    const char *task = make_task();
    char url[128];
    snprintf(url, sizeof url, "%s/hooks/agentz?x=1", f.base_url);
    const char *urls[] = {url};
    az_webhook *w = start(loopback, SECRET);
    int64_t ev = enqueue(task, "task.succeeded", urls, 1, 1);
    row r = wait_for(ev, "delivered", 1);
    CU_ASSERT_STRING_EQUAL(r.status, "delivered");
    CU_ASSERT_EQUAL(r.attempts, 1);
    CU_ASSERT_EQUAL(r.http_status, 200);
    CU_ASSERT_STRING_EQUAL(r.last_error, "");
    CU_ASSERT_TRUE(r.delivered_at_set);
    az_webhook_stop(w);
    CU_ASSERT_EQUAL_FATAL(n_requests(&f), 1);
    const fake_request *q = &f.reqs[0];
    char h[256];
    CU_ASSERT_STRING_EQUAL(q->method, "POST");
    CU_ASSERT_STRING_EQUAL(q->path, "/hooks/agentz?x=1");
    CU_ASSERT_STRING_EQUAL(fake_header(q, "Content-Type", h, sizeof h), "application/json");
    CU_ASSERT_STRING_EQUAL(fake_header(q, "X-Agentz-Event", h, sizeof h), "task.succeeded");
    CU_ASSERT_STRING_EQUAL(fake_header(q, "X-Agentz-Delivery", h, sizeof h), r.id);
    CU_ASSERT_TRUE(signature_ok(q, SECRET));
    CU_ASSERT_FALSE(signature_ok(q, "another secret"));
    /* A tampered body does not verify. */
    fake_request tampered = *q;
    char *copy = malloc(q->body_len + 1);
    memcpy(copy, q->body, q->body_len);
    copy[q->body_len] = '\0';
    char *d = strstr(copy, "summarize");
    if (d) d[0] = 'S';
    tampered.body = copy;
    CU_ASSERT_FALSE(signature_ok(&tampered, SECRET));
    free(copy);
    /* The body: the envelope and the task as proto3 JSON. */
    json_error_t je;
    json_t *body = json_loadb(q->body, q->body_len, 0, &je);
    CU_ASSERT_PTR_NOT_NULL_FATAL(body);
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(body, "type")), "task.succeeded");
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(body, "delivery_id")), r.id);
    char e[24];
    snprintf(e, sizeof e, "%lld", (long long)ev);
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(body, "event_id")), e);
    json_t *t = json_object_get(body, "task");
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(t, "id")), task);
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(t, "description")), "summarize the news");
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(t, "expectedOutput")), "a summary");
    CU_ASSERT_PTR_NULL(json_object_get(body, "run"));
    json_decref(body);
    fake_stop(&f);
}

static void test_retry_then_success(void)
{
    llm_fake f;
    CU_ASSERT_EQUAL_FATAL(fake_start(&f), 0);
    fake_script(&f, &(fake_response){.status = 503, .body = "busy, try later"});
    fake_script(&f, &(fake_response){.status = 204});
    const char *task = make_task();
    const char *urls[] = {f.base_url};
    az_webhook *w = start(loopback, SECRET);
    int64_t ev = enqueue(task, "task.failed", urls, 1, 1);
    /* The failed first attempt is recorded and the second is due about 1 s later. */
    row r = wait_for(ev, "pending", 1);
    CU_ASSERT_EQUAL(r.attempts, 1);
    CU_ASSERT_EQUAL(r.http_status, 503);
    CU_ASSERT_PTR_NOT_NULL(strstr(r.last_error, "HTTP 503: busy, try later"));
    CU_ASSERT(r.due_in_s > 0.3 && r.due_in_s <= 1.05);
    r = wait_for(ev, "delivered", 2);
    CU_ASSERT_STRING_EQUAL(r.status, "delivered");
    CU_ASSERT_EQUAL(r.attempts, 2);
    CU_ASSERT_EQUAL(r.http_status, 204);
    CU_ASSERT_STRING_EQUAL(r.last_error, "");
    az_webhook_stop(w);
    CU_ASSERT_EQUAL(n_requests(&f), 2);
    /* Both attempts carry the same delivery id, each its own valid signature. */
    char a[64], b[64];
    CU_ASSERT_STRING_EQUAL(fake_header(&f.reqs[0], "X-Agentz-Delivery", a, sizeof a),
                           fake_header(&f.reqs[1], "X-Agentz-Delivery", b, sizeof b));
    CU_ASSERT_TRUE(signature_ok(&f.reqs[0], SECRET));
    CU_ASSERT_TRUE(signature_ok(&f.reqs[1], SECRET));
    fake_stop(&f);
}

static void test_gives_up(void)
{
    llm_fake f;
    CU_ASSERT_EQUAL_FATAL(fake_start(&f), 0);
    fake_script(&f, &(fake_response){.status = 500, .body = "boom"});
    fake_script(&f, &(fake_response){.status = 302, .headers = "Location: http://10.0.0.1/\r\n"});
    const char *task = make_task();
    const char *urls[] = {f.base_url};
    az_webhook *w = start(loopback, SECRET);
    int64_t ev = enqueue(task, "task.cancelled", urls, 1, 1);
    row r = wait_for(ev, "pending", 1);
    CU_ASSERT_EQUAL(r.attempts, 1);
    /* Skip the backoff: the next attempt is the last one. */
    char max[16];
    snprintf(max, sizeof max, "%d", AZ_WEBHOOK_MAX_ATTEMPTS - 1);
    sql("UPDATE webhook_deliveries SET attempts = $1::integer, next_attempt_at = clock_timestamp()"
        " WHERE status = 'pending'",
        max);
    r = wait_for(ev, "failed", AZ_WEBHOOK_MAX_ATTEMPTS);
    CU_ASSERT_STRING_EQUAL(r.status, "failed");
    CU_ASSERT_EQUAL(r.attempts, AZ_WEBHOOK_MAX_ATTEMPTS);
    /* A redirect is not followed and counts as a failure. */
    CU_ASSERT_EQUAL(r.http_status, 302);
    CU_ASSERT_PTR_NOT_NULL(strstr(r.last_error, "redirects are not followed"));
    CU_ASSERT_FALSE(r.delivered_at_set);
    /* Nothing more is sent once it failed. */
    usleep(1200000);
    CU_ASSERT_EQUAL(n_requests(&f), 2);
    CU_ASSERT_STRING_EQUAL(fetch(ev).status, "failed");
    az_webhook_stop(w);
    fake_stop(&f);
}

static void test_rollback_sends_nothing(void)
{
    llm_fake f;
    CU_ASSERT_EQUAL_FATAL(fake_start(&f), 0);
    fake_script(&f, &(fake_response){.status = 200});
    const char *task = make_task();
    const char *urls[] = {f.base_url};
    az_webhook *w = start(loopback, SECRET);
    int64_t ev = enqueue(task, "task.succeeded", urls, 1, 0);
    usleep(1500000); /* three claim polls */
    CU_ASSERT_FALSE(fetch(ev).found);
    CU_ASSERT_EQUAL(n_requests(&f), 0);
    az_webhook_stop(w);
    fake_stop(&f);
}

static void test_refused_address(void)
{
    llm_fake f;
    CU_ASSERT_EQUAL_FATAL(fake_start(&f), 0);
    fake_script(&f, &(fake_response){.status = 200});
    const char *task = make_task();
    const char *urls[] = {f.base_url};
    az_webhook *w = start(strict, SECRET);
    int64_t ev = enqueue(task, "task.succeeded", urls, 1, 1);
    row r = wait_for(ev, "failed", 1);
    CU_ASSERT_STRING_EQUAL(r.status, "failed");
    CU_ASSERT_EQUAL(r.attempts, 1); /* a policy refusal is not retried */
    CU_ASSERT_PTR_NOT_NULL(strstr(r.last_error, "refused by the network policy"));
    CU_ASSERT_PTR_NOT_NULL(strstr(r.last_error, "127.0.0.1"));
    CU_ASSERT_PTR_NOT_NULL(strstr(r.last_error, "loopback"));
    az_webhook_stop(w);
    CU_ASSERT_EQUAL(n_requests(&f), 0);
    fake_stop(&f);
}

static void test_no_secret_recorded(void)
{
    llm_fake f;
    CU_ASSERT_EQUAL_FATAL(fake_start(&f), 0);
    const char *task = make_task();
    const char *urls[] = {f.base_url};
    az_webhook *w = start(loopback, NULL);
    int64_t ev = enqueue(task, "task.succeeded", urls, 1, 1);
    row r = wait_for(ev, "pending", 1);
    CU_ASSERT_EQUAL(r.attempts, 1);
    CU_ASSERT_PTR_NOT_NULL(strstr(r.last_error, "no signing secret"));
    az_webhook_stop(w);
    CU_ASSERT_EQUAL(n_requests(&f), 0); /* an unsigned POST is never sent */
    sql("DELETE FROM webhook_deliveries WHERE status = 'pending'", NULL);
    fake_stop(&f);
}

static void test_missing_task_fails(void)
{
    llm_fake f;
    CU_ASSERT_EQUAL_FATAL(fake_start(&f), 0);
    const char *urls[] = {f.base_url};
    az_webhook *w = start(loopback, SECRET);
    int64_t ev = enqueue("7d1f0c52-1111-4222-8333-444455556666", "task.succeeded", urls, 1, 1);
    row r = wait_for(ev, "failed", 1);
    CU_ASSERT_EQUAL(r.attempts, 1);
    CU_ASSERT_PTR_NOT_NULL(strstr(r.last_error, "task no longer exists"));
    az_webhook_stop(w);
    CU_ASSERT_EQUAL(n_requests(&f), 0);
    fake_stop(&f);
}

/* Two delivery threads (two api processes) on one table: every delivery goes out once. */
static void test_two_senders_once_each(void)
{
    llm_fake f;
    CU_ASSERT_EQUAL_FATAL(fake_start(&f), 0);
    enum { N = 6 };
    for (int i = 0; i < N; i++) fake_script(&f, &(fake_response){.status = 200, .write_delay_us = 20000});
    /* Queue first, then start both, so they race for the same due rows. */
    int64_t evs[N];
    const char *urls[] = {f.base_url};
    for (int i = 0; i < N; i++) evs[i] = enqueue(make_task(), "task.succeeded", urls, 1, 1);
    az_webhook *a = start(loopback, SECRET), *b = start(loopback, SECRET);
    for (int i = 0; i < N; i++) {
        row r = wait_for(evs[i], "delivered", 1);
        CU_ASSERT_EQUAL(r.attempts, 1);
    }
    az_webhook_stop(a);
    az_webhook_stop(b);
    CU_ASSERT_EQUAL_FATAL(n_requests(&f), N);
    for (int i = 0; i < N; i++)
        for (int j = i + 1; j < N; j++) {
            char x[64], y[64];
            CU_ASSERT_STRING_NOT_EQUAL(fake_header(&f.reqs[i], "X-Agentz-Delivery", x, sizeof x),
                                       fake_header(&f.reqs[j], "X-Agentz-Delivery", y, sizeof y));
        }
    fake_stop(&f);
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    remove(path);
    return 0;
}

static void test_secret_file(void)
{
    char d[64], msg[AZ_MSG_MAX];
    snprintf(d, sizeof d, "/tmp/aztest-whsecret-XXXXXX");
    CU_ASSERT_PTR_NOT_NULL_FATAL(mkdtemp(d));
    char *s = NULL;
    /* Configured wins, and no file is written. */
    CU_ASSERT_EQUAL(az_webhook_load_secret("configured", d, &s, msg), AZ_OK);
    CU_ASSERT_STRING_EQUAL(s, "configured");
    free(s);
    char path[128];
    snprintf(path, sizeof path, "%s/webhook.secret", d);
    CU_ASSERT_NOT_EQUAL(access(path, F_OK), 0);
    /* First start: generated, 0600, 64 hex characters; later starts read the same. */
    CU_ASSERT_EQUAL_FATAL(az_webhook_load_secret(NULL, d, &s, msg), AZ_OK);
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    CU_ASSERT_EQUAL(strlen(s), 64);
    CU_ASSERT_EQUAL(strspn(s, "0123456789abcdef"), 64);
    struct stat st;
    CU_ASSERT_EQUAL_FATAL(stat(path, &st), 0);
    CU_ASSERT_EQUAL(st.st_mode & 0777, 0600);
    char *again = NULL;
    CU_ASSERT_EQUAL(az_webhook_load_secret("", d, &again, msg), AZ_OK);
    CU_ASSERT_STRING_EQUAL(again, s);
    free(again);
    free(s);
    /* Neither configured nor a data dir: none (deliveries fail, recorded). */
    s = (char *)"x";
    CU_ASSERT_EQUAL(az_webhook_load_secret(NULL, NULL, &s, msg), AZ_OK);
    CU_ASSERT_PTR_NULL(s);
    nftw(d, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
}

/* ---------------------------------------------------------------- suite */

static int suite_init(void)
{
    char msg[AZ_MSG_MAX];
    snprintf(dir, sizeof dir, "/tmp/aztest-webhook-XXXXXX");
    if (!mkdtemp(dir) || chmod(dir, 0755) != 0) return -1;
    if (az_embed_start(dir, &embed, msg) != AZ_OK) {
        fprintf(stderr, "cannot start embedded postgresql: %s\n", msg);
        return -1;
    }
    if (az_pg_new(az_embed_database_url(embed), 8, 30000, &pg, msg) != AZ_OK ||
        az_migrate(pg, az_migrations, az_migrations_count, NULL, msg) != AZ_OK ||
        az_pg_set_role(pg, "agentz_app", msg) != AZ_OK) { /* row-level security applies */
        fprintf(stderr, "cannot prepare the database: %s\n", msg);
        return -1;
    }
    if (az_netguard_new(AZ_NETGUARD_LOOPBACK, &loopback, msg) != AZ_OK ||
        az_netguard_new("0", &strict, msg) != AZ_OK)
        return -1;
    arena = az_arena_new(0);
    return arena ? 0 : -1;
}

static int suite_clean(void)
{
    az_arena_free(arena);
    az_netguard_free(loopback);
    az_netguard_free(strict);
    az_pg_free(pg);
    az_embed_stop(embed);
    nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    return 0;
}

int main(void)
{
    az_log_set_level(AZ_LOG_ERROR);
    if (CU_initialize_registry() != CUE_SUCCESS) return 1;
    CU_pSuite pure = CU_add_suite("webhook secret", NULL, NULL);
    CU_add_test(pure, "secret: configured, generated 0600, reused", test_secret_file);
    CU_pSuite s = CU_add_suite("webhook deliveries", suite_init, suite_clean);
    CU_add_test(s, "enqueue validates its arguments", test_enqueue_validation);
    CU_add_test(s, "enqueue queues each URL of an event once", test_enqueue_dedups);
    CU_add_test(s, "signed delivery verifies; body is the task", test_signed_delivery);
    CU_add_test(s, "failure recorded, retried after 1 s, then delivered", test_retry_then_success);
    CU_add_test(s, "gives up after the last attempt; redirects not followed", test_gives_up);
    CU_add_test(s, "enqueue in a rolled-back transaction sends nothing", test_rollback_sends_nothing);
    CU_add_test(s, "a refused private address is recorded", test_refused_address);
    CU_add_test(s, "without a secret nothing is sent; the failure is recorded", test_no_secret_recorded);
    CU_add_test(s, "a task that no longer exists fails the delivery", test_missing_task_fails);
    CU_add_test(s, "two delivery threads send each delivery once", test_two_senders_once_each);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    unsigned failed = CU_get_number_of_failures() + CU_get_number_of_tests_failed();
    if (CU_get_number_of_suites_failed()) failed++;
    CU_cleanup_registry();
    return failed ? 1 : 0;
}
