/* Webhook deliveries: queued in the transaction that made a task or run terminal, then POSTed by
 * one thread per api process through libcurl multi, signed with HMAC-SHA256, retried with
 * exponential backoff, every attempt recorded in webhook_deliveries. */
#include "webhook.h"

#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <limits.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/arena.h"
#include "core/log.h"
#include "core/pbjson.h"
#include "core/text.h"
#include "task/task.h"
#include "workflow/run.h"

#define POLL_MS 500                 /* how often due deliveries are looked for when idle */
#define CLAIM_MARGIN_S 30           /* a claim's lease beyond the POST timeout (body building) */
#define BACKOFF_MAX_S 600           /* retries back off up to 10 minutes */
#define KEEP_ERROR_BYTES 200        /* of a failed response's body, kept in last_error */
#define RESPONSE_MAX_BYTES (1 << 20) /* a larger answer is cut off and counts as a failure */
#define HOUSEKEEP_MS 60000          /* expired claims and pruning, once a minute */
#define RETENTION_DAYS "30"         /* finished deliveries are kept this long */
#define PRUNE_BATCH "10000"
#define EVENT_TYPE_MAX 64
#define URLS_MAX 64
#define SECRET_FILE "webhook.secret"
#define USER_AGENT "agentz-webhook/1"

/* ---------------------------------------------------------------- enqueue */

static int event_type_ok(const char *t)
{
    size_t n = t ? strlen(t) : 0;
    return n >= 1 && n <= EVENT_TYPE_MAX && strspn(t, "abcdefghijklmnopqrstuvwxyz0123456789._") == n;
}

az_err az_webhook_enqueue(az_pgconn *c, const az_ctx *ctx, int64_t event_id, const char *task_id,
                          const char *run_id, const char *event_type, const char *const *urls,
                          size_t n_urls, char *msg)
{
    int has_task = task_id && *task_id, has_run = run_id && *run_id;
    if (!has_task && !has_run)
        return az_fail(msg, AZ_ERR_INVALID, "webhook: task_id or run_id is required");
    if (has_task && !az_text_is_uuid(task_id))
        return az_fail(msg, AZ_ERR_INVALID, "webhook: task_id \"%.40s\" is not a uuid", task_id);
    if (has_run && !az_text_is_uuid(run_id))
        return az_fail(msg, AZ_ERR_INVALID, "webhook: run_id \"%.40s\" is not a uuid", run_id);
    if (!ctx || !ctx->workspace_id || !az_text_is_uuid(ctx->workspace_id))
        return az_fail(msg, AZ_ERR_INVALID, "webhook: the context's workspace_id is required");
    if (!event_type_ok(event_type))
        return az_fail(msg, AZ_ERR_INVALID,
                       "webhook: event_type must be 1 to %d characters of a-z, 0-9, '.' and '_'",
                       EVENT_TYPE_MAX);
    if (n_urls == 0) return AZ_OK;
    if (!urls || n_urls > URLS_MAX)
        return az_fail(msg, AZ_ERR_INVALID, "webhook: urls: 1 to %d URLs", URLS_MAX);
    json_t *arr = json_array();
    if (!arr) return az_fail(msg, AZ_ERR_NOMEM, "out of memory");
    for (size_t i = 0; i < n_urls; i++) {
        char field[32];
        snprintf(field, sizeof field, "webhook: urls[%zu]", i);
        az_err err = az_text_check_url(field, urls[i], AZ_TEXT_REQUIRED, msg);
        if (err != AZ_OK) {
            json_decref(arr);
            return err;
        }
        if (json_array_append_new(arr, json_string(urls[i])) != 0) {
            json_decref(arr);
            return az_fail(msg, AZ_ERR_NOMEM, "out of memory");
        }
    }
    char *list = json_dumps(arr, JSON_COMPACT);
    json_decref(arr);
    if (!list) return az_fail(msg, AZ_ERR_NOMEM, "out of memory");
    char ev[24];
    snprintf(ev, sizeof ev, "%" PRId64, event_id);
    const char *p[6] = {ctx->workspace_id, ev, has_task ? task_id : NULL, has_run ? run_id : NULL,
                        event_type, list};
    az_err err = az_pg_exec(c, ctx,
                            "INSERT INTO webhook_deliveries"
                            " (workspace_id, event_id, task_id, run_id, event_type, url)"
                            " SELECT $1::uuid, $2::bigint, $3::uuid, $4::uuid, $5, u"
                            "   FROM json_array_elements_text($6::json) AS u"
                            " ON CONFLICT (workspace_id, event_id, url) DO NOTHING",
                            6, p, NULL, msg);
    free(list);
    return err;
}

/* ---------------------------------------------------------------- the signing secret */

/* Writes secret + newline to path through a 0600 temporary file and rename, so a crash never
 * leaves half a secret and no other user can open it in between. */
static az_err write_secret(const char *path, const char *secret, char *msg)
{
    char tmp[PATH_MAX];
    if (snprintf(tmp, sizeof tmp, "%s.tmp", path) >= (int)sizeof tmp)
        return az_fail(msg, AZ_ERR_INVALID, "path is too long: %s", path);
    unlink(tmp);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0) return az_fail(msg, AZ_ERR_IO, "cannot create %s: %s", tmp, strerror(errno));
    size_t len = strlen(secret);
    int ok = fchmod(fd, 0600) == 0 && write(fd, secret, len) == (ssize_t)len &&
             write(fd, "\n", 1) == 1 && fsync(fd) == 0;
    int e = errno;
    if (close(fd) != 0 && ok) ok = 0, e = errno;
    if (!ok || rename(tmp, path) != 0) {
        if (ok) e = errno;
        unlink(tmp);
        return az_fail(msg, AZ_ERR_IO, "cannot write %s: %s", path, strerror(e));
    }
    return AZ_OK;
}

az_err az_webhook_load_secret(const char *configured, const char *data_dir, char **out, char *msg)
{
    *out = NULL;
    if (configured && *configured) {
        if (!(*out = strdup(configured))) return az_fail(msg, AZ_ERR_NOMEM, "out of memory");
        return AZ_OK;
    }
    if (!data_dir || !*data_dir) {
        az_warn("no webhook signing secret (AGENTZ_WEBHOOK_SECRET): webhook deliveries will fail");
        return AZ_OK;
    }
    char path[PATH_MAX];
    if (snprintf(path, sizeof path, "%s/" SECRET_FILE, data_dir) >= (int)sizeof path)
        return az_fail(msg, AZ_ERR_INVALID, "data dir path is too long");
    FILE *f = fopen(path, "re");
    if (f) {
        char line[1024] = "";
        int ok = fgets(line, sizeof line, f) != NULL;
        fclose(f);
        line[strcspn(line, "\r\n")] = '\0';
        if (ok && line[0]) {
            struct stat st;
            if (stat(path, &st) == 0 && (st.st_mode & 077)) chmod(path, 0600);
            *out = strdup(line);
            OPENSSL_cleanse(line, sizeof line);
            return *out ? AZ_OK : az_fail(msg, AZ_ERR_NOMEM, "out of memory");
        }
        az_warn("the webhook signing secret in %s is empty: writing a new one", path);
    } else if (errno != ENOENT) {
        return az_fail(msg, AZ_ERR_IO, "cannot read %s: %s", path, strerror(errno));
    }
    unsigned char raw[32];
    if (RAND_bytes(raw, sizeof raw) != 1)
        return az_fail(msg, AZ_ERR_IO, "cannot generate a webhook signing secret");
    char hex[2 * sizeof raw + 1];
    for (size_t i = 0; i < sizeof raw; i++) snprintf(hex + 2 * i, 3, "%02x", raw[i]);
    OPENSSL_cleanse(raw, sizeof raw);
    az_err err = write_secret(path, hex, msg);
    if (err == AZ_OK) {
        if (!(*out = strdup(hex))) err = az_fail(msg, AZ_ERR_NOMEM, "out of memory");
        else az_info("wrote the webhook signing secret to %s", path);
    }
    OPENSSL_cleanse(hex, sizeof hex);
    return err;
}

/* ---------------------------------------------------------------- the delivery thread */

/* One claimed delivery, from its row to its recorded outcome. */
typedef struct delivery {
    char workspace[37], id[37], task_id[37], run_id[37];
    char type[EVENT_TYPE_MAX + 1];
    char event_id[24];
    char attempts[16]; /* this attempt's number, as claimed: guards the record */
    int attempt;
    char *url;
    char *body;
    CURL *h;
    struct curl_slist *headers;
    char errbuf[CURL_ERROR_SIZE];
    char start[KEEP_ERROR_BYTES + 1]; /* the response's first bytes, for last_error */
    size_t start_len, received;
    int too_big;
    az_netguard_curl net; /* the policy's verdicts on this transfer's connections */
    struct delivery *next;
} delivery;

struct az_webhook {
    az_pg *pg;
    const az_netguard *guard;
    char *secret;
    int concurrency;
    long timeout_ms;
    CURLM *multi;
    delivery *in_flight; /* list of deliveries whose POST is running */
    int n_in_flight;
    atomic_int stop;
    pthread_t thread;
};

/* An outcome to record: delivered, retry later, or failed for good. */
typedef enum { OUT_DELIVERED, OUT_RETRY, OUT_FAILED } outcome;

static const char *const OUTCOME_STATUS[] = {
    [OUT_DELIVERED] = "delivered",
    [OUT_RETRY] = "pending",
    [OUT_FAILED] = "failed",
};

static az_ctx ctx_for(const char *workspace)
{
    /* Every statement of this thread is bounded: a stuck database must not stall deliveries
     * forever, and the next loop retries. */
    az_ctx c = {.workspace_id = workspace, .principal = "webhook", .request_id = "webhook",
                .deadline_ms = az_now_ms() + 10000};
    return c;
}

/* Runs one statement on a pooled connection (workspace NULL = system work). */
static az_err exec1(az_webhook *w, const char *workspace, const char *sql, int n,
                    const char *const *p, PGresult **res, char *msg)
{
    az_ctx ctx = ctx_for(workspace);
    az_pgconn *c;
    az_err err = az_pg_acquire(w->pg, &ctx, &c, msg);
    if (err != AZ_OK) return err;
    err = az_pg_exec(c, &ctx, sql, n, p, res, msg);
    az_pg_release(c);
    return err;
}

/* Delay before the attempt after failed attempt n (>= 1): 1 s, 2 s, 4 s ... capped. */
static long backoff_s(int n)
{
    if (n < 1) n = 1;
    if (n > 10) return BACKOFF_MAX_S; /* 2^10 s is past the cap already */
    long s = 1L << (n - 1);
    return s > BACKOFF_MAX_S ? BACKOFF_MAX_S : s;
}

/* Records attempt d->attempt's outcome, unless the claim was lost meanwhile (another process
 * claimed the delivery after this one's lease ran out: its record wins). A retry past the
 * last attempt is recorded as failed. */
static void record(az_webhook *w, const delivery *d, outcome o, long http_status, const char *error)
{
    if (o == OUT_RETRY && d->attempt >= AZ_WEBHOOK_MAX_ATTEMPTS) o = OUT_FAILED;
    char st[16], delay[16];
    snprintf(st, sizeof st, "%ld", http_status);
    snprintf(delay, sizeof delay, "%ld", backoff_s(d->attempt));
    const char *p[7] = {d->workspace, d->id, d->attempts, OUTCOME_STATUS[o],
                        http_status > 0 ? st : NULL, error, delay};
    char msg[AZ_MSG_MAX];
    az_err err = exec1(w, d->workspace,
                       "UPDATE webhook_deliveries SET status = $4, last_http_status = $5::integer,"
                       " last_error = $6,"
                       " delivered_at = CASE WHEN $4 = 'delivered' THEN clock_timestamp() END,"
                       " next_attempt_at = CASE WHEN $4 = 'pending'"
                       "   THEN clock_timestamp() + make_interval(secs => $7::integer)"
                       "   ELSE next_attempt_at END"
                       " WHERE workspace_id = $1 AND id = $2 AND attempts = $3::integer"
                       "   AND status = 'pending'",
                       7, p, NULL, msg);
    if (err != AZ_OK) {
        az_warn("cannot record webhook delivery %s: %s", d->id, msg);
        return;
    }
    if (o == OUT_FAILED)
        az_warn("webhook delivery %s to %s failed after %d attempt%s: %s", d->id, d->url,
                d->attempt, d->attempt == 1 ? "" : "s", error ? error : "");
}

/* Makes an abandoned claim due again at once without counting its attempt (shutdown). */
static void release(az_webhook *w, const delivery *d)
{
    const char *p[3] = {d->workspace, d->id, d->attempts};
    char msg[AZ_MSG_MAX];
    if (exec1(w, d->workspace,
              "UPDATE webhook_deliveries SET attempts = attempts - 1,"
              " next_attempt_at = clock_timestamp()"
              " WHERE workspace_id = $1 AND id = $2 AND attempts = $3::integer AND status = 'pending'",
              3, p, NULL, msg) != AZ_OK)
        az_warn("cannot release webhook delivery %s: %s", d->id, msg);
}

static void delivery_free(delivery *d)
{
    if (!d) return;
    if (d->h) curl_easy_cleanup(d->h);
    curl_slist_free_all(d->headers);
    free(d->url);
    free(d->body);
    free(d);
}

/* ---- the body */

/* The proto3 JSON of the delivery's task or run as it is now, parsed. AZ_ERR_NOT_FOUND when
 * it no longer exists. */
static az_err subject_json(az_webhook *w, const delivery *d, json_t **out, char *msg)
{
    az_arena *a = az_arena_new(0);
    if (!a) return az_fail(msg, AZ_ERR_NOMEM, "out of memory");
    az_ctx ctx = ctx_for(d->workspace);
    const ProtobufCMessage *m = NULL;
    az_err err;
    if (d->task_id[0]) {
        Agentz__V1__Task *t = NULL;
        err = az_task_get(w->pg, &ctx, d->task_id, a, &t, msg);
        if (err == AZ_OK) m = &t->base;
    } else {
        Agentz__V1__WorkflowRun *r = NULL;
        err = az_run_get(w->pg, &ctx, d->run_id, a, &r, msg);
        if (err == AZ_OK) m = &r->base;
    }
    char *text = NULL;
    if (err == AZ_OK) err = az_pbjson_encode(m, 0, &text, msg);
    az_arena_free(a);
    if (err != AZ_OK) return err;
    json_error_t je;
    *out = json_loads(text, 0, &je);
    free(text);
    if (!*out) return az_fail(msg, AZ_ERR_INTERNAL, "cannot parse the encoded message: %s", je.text);
    return AZ_OK;
}

/* {"type", "delivery_id", "event_id", "task"|"run"} as compact JSON into d->body. */
static az_err build_body(az_webhook *w, delivery *d, char *msg)
{
    json_t *subject = NULL;
    az_err err = subject_json(w, d, &subject, msg);
    if (err != AZ_OK) return err;
    json_t *o = json_object();
    if (!o || json_object_set_new(o, "type", json_string(d->type)) ||
        json_object_set_new(o, "delivery_id", json_string(d->id)) ||
        /* int64 as a string, like every int64 of the proto3 JSON mapping. */
        json_object_set_new(o, "event_id", json_string(d->event_id)) ||
        json_object_set_new(o, d->task_id[0] ? "task" : "run", subject)) {
        if (!o) json_decref(subject);
        json_decref(o);
        return az_fail(msg, AZ_ERR_NOMEM, "out of memory");
    }
    d->body = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    return d->body ? AZ_OK : az_fail(msg, AZ_ERR_NOMEM, "out of memory");
}

/* "t=<unix>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>" into out. */
static int sign(const char *secret, const char *body, long long t, char *out, size_t cap)
{
    char prefix[32];
    int pn = snprintf(prefix, sizeof prefix, "%lld.", t);
    size_t bn = strlen(body);
    unsigned char *data = malloc((size_t)pn + bn);
    if (!data) return -1;
    memcpy(data, prefix, (size_t)pn);
    memcpy(data + pn, body, bn);
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int mn = 0;
    int ok = HMAC(EVP_sha256(), secret, (int)strlen(secret), data, (size_t)pn + bn, mac, &mn) != NULL;
    free(data);
    if (!ok) return -1;
    size_t off = (size_t)snprintf(out, cap, "t=%lld,v1=", t);
    for (unsigned i = 0; i < mn && off + 3 <= cap; i++, off += 2) snprintf(out + off, 3, "%02x", mac[i]);
    return 0;
}

/* ---- the POST */

/* Keeps the response's first bytes (for the error record) and stops at RESPONSE_MAX_BYTES. */
static size_t on_data(char *p, size_t size, size_t nmemb, void *ud)
{
    delivery *d = ud;
    size_t n = size * nmemb;
    if (d->start_len < KEEP_ERROR_BYTES) {
        size_t k = KEEP_ERROR_BYTES - d->start_len;
        if (k > n) k = n;
        memcpy(d->start + d->start_len, p, k);
        d->start_len += k;
        d->start[d->start_len] = '\0';
    }
    d->received += n;
    if (d->received > RESPONSE_MAX_BYTES) {
        d->too_big = 1;
        return 0;
    }
    return n;
}

static az_err prepare(az_webhook *w, delivery *d, char *msg)
{
    char sig[160], hdr[256];
    if (sign(w->secret, d->body, (long long)time(NULL), sig, sizeof sig) != 0)
        return az_fail(msg, AZ_ERR_NOMEM, "cannot sign the body");
    struct curl_slist *l = NULL, *t;
    const char *fixed[] = {"Content-Type: application/json", "Expect:", "User-Agent: " USER_AGENT};
    for (size_t i = 0; i < sizeof fixed / sizeof *fixed; i++) {
        if (!(t = curl_slist_append(l, fixed[i]))) goto oom;
        l = t;
    }
    snprintf(hdr, sizeof hdr, "X-Agentz-Delivery: %s", d->id);
    if (!(t = curl_slist_append(l, hdr))) goto oom;
    l = t;
    snprintf(hdr, sizeof hdr, "X-Agentz-Event: %s", d->type);
    if (!(t = curl_slist_append(l, hdr))) goto oom;
    l = t;
    snprintf(hdr, sizeof hdr, "X-Agentz-Signature: %s", sig);
    if (!(t = curl_slist_append(l, hdr))) goto oom;
    l = t;
    d->headers = l;
    d->net.guard = w->guard;
    CURL *h = d->h = curl_easy_init();
    if (!h) return az_fail(msg, AZ_ERR_NOMEM, "out of memory");
    curl_easy_setopt(h, CURLOPT_URL, d->url);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, d->errbuf);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L); /* a redirect is an answer, not a hop */
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, w->timeout_ms);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, w->timeout_ms);
    /* An empty proxy disables http_proxy/https_proxy/all_proxy from the environment: the policy
     * must see the receiver's address, not a proxy's. */
    curl_easy_setopt(h, CURLOPT_PROXY, "");
    /* The address is checked right before connect: the URL's host name proves nothing. */
    if (az_netguard_curl_use(h, &d->net) != CURLE_OK)
        return az_fail(msg, AZ_ERR_INTERNAL, "cannot apply the network policy");
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, d);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, d->headers);
    curl_easy_setopt(h, CURLOPT_POSTFIELDS, d->body);
    curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)strlen(d->body));
    return AZ_OK;
oom:
    curl_slist_free_all(l);
    return az_fail(msg, AZ_ERR_NOMEM, "out of memory");
}

/* Records a finished transfer. */
static void finished(az_webhook *w, delivery *d, CURLcode rc)
{
    long status = 0;
    curl_easy_getinfo(d->h, CURLINFO_RESPONSE_CODE, &status);
    char err[AZ_MSG_MAX];
    if (d->net.refused && rc == CURLE_COULDNT_CONNECT) {
        snprintf(err, sizeof err,
                 "connection to %s refused by the network policy (%s addresses are not allowed; "
                 "see AGENTZ_ALLOW_PRIVATE_NETWORKS)",
                 d->net.refused_addr, d->net.refused_range ? d->net.refused_range : "these");
        record(w, d, OUT_FAILED, 0, err);
        return;
    }
    if (rc == CURLE_OK || (rc == CURLE_WRITE_ERROR && d->too_big)) {
        if (status >= 200 && status < 300 && !d->too_big) {
            record(w, d, OUT_DELIVERED, status, NULL);
            return;
        }
        if (d->too_big)
            snprintf(err, sizeof err, "HTTP %ld: response larger than %d bytes", status, RESPONSE_MAX_BYTES);
        else if (status >= 300 && status < 400)
            snprintf(err, sizeof err, "HTTP %ld: redirects are not followed", status);
        else
            snprintf(err, sizeof err, "HTTP %ld%s%.*s", status, d->start_len ? ": " : "",
                     (int)d->start_len, d->start);
        record(w, d, OUT_RETRY, status, err);
        return;
    }
    if (rc == CURLE_UNSUPPORTED_PROTOCOL || rc == CURLE_URL_MALFORMAT) {
        snprintf(err, sizeof err, "url cannot be used: %s", d->errbuf[0] ? d->errbuf : curl_easy_strerror(rc));
        record(w, d, OUT_FAILED, 0, err);
        return;
    }
    snprintf(err, sizeof err, "%s%s%s%s", curl_easy_strerror(rc), d->errbuf[0] ? " (" : "",
             d->errbuf, d->errbuf[0] ? ")" : "");
    record(w, d, OUT_RETRY, status, err);
}

/* Builds, signs and starts one claimed delivery; on failure records it and frees d. */
static void start(az_webhook *w, delivery *d)
{
    char msg[AZ_MSG_MAX];
    if (!w->secret) {
        record(w, d, OUT_RETRY, 0, "no signing secret configured (AGENTZ_WEBHOOK_SECRET)");
        delivery_free(d);
        return;
    }
    az_err err = build_body(w, d, msg);
    if (err == AZ_ERR_NOT_FOUND) {
        char e[AZ_MSG_MAX + 32];
        snprintf(e, sizeof e, "%s no longer exists: %s", d->task_id[0] ? "task" : "run", msg);
        record(w, d, OUT_FAILED, 0, e);
        delivery_free(d);
        return;
    }
    if (err == AZ_OK) err = prepare(w, d, msg);
    if (err == AZ_OK && curl_multi_add_handle(w->multi, d->h) != CURLM_OK)
        err = az_fail(msg, AZ_ERR_INTERNAL, "cannot start the transfer");
    if (err != AZ_OK) {
        record(w, d, OUT_RETRY, 0, msg);
        delivery_free(d);
        return;
    }
    d->next = w->in_flight;
    w->in_flight = d;
    w->n_in_flight++;
}

/* Claims up to n due deliveries and starts them; returns how many were claimed. */
static int claim(az_webhook *w, int n)
{
    char lim[16], lease[24], max[16];
    snprintf(lim, sizeof lim, "%d", n);
    snprintf(lease, sizeof lease, "%ld", w->timeout_ms / 1000 + 1 + CLAIM_MARGIN_S);
    snprintf(max, sizeof max, "%d", AZ_WEBHOOK_MAX_ATTEMPTS);
    const char *p[3] = {lim, lease, max};
    PGresult *r = NULL;
    char msg[AZ_MSG_MAX];
    /* SKIP LOCKED: two processes claiming at once take different rows; the moved
     * next_attempt_at keeps the row out of later claims until the lease runs out. */
    az_err err = exec1(w, NULL,
                       "UPDATE webhook_deliveries d SET attempts = d.attempts + 1,"
                       " claimed_at = clock_timestamp(),"
                       " next_attempt_at = clock_timestamp() + make_interval(secs => $2::integer)"
                       " FROM (SELECT workspace_id, id FROM webhook_deliveries"
                       "        WHERE status = 'pending' AND next_attempt_at <= clock_timestamp()"
                       "          AND attempts < $3::integer"
                       "        ORDER BY next_attempt_at LIMIT $1::integer"
                       "        FOR UPDATE SKIP LOCKED) due"
                       " WHERE d.workspace_id = due.workspace_id AND d.id = due.id"
                       " RETURNING d.workspace_id, d.id, d.event_id, coalesce(d.task_id::text, ''),"
                       "   coalesce(d.run_id::text, ''), d.event_type, d.url, d.attempts",
                       3, p, &r, msg);
    if (err != AZ_OK) {
        az_warn("cannot claim webhook deliveries: %s", msg);
        return 0;
    }
    int rows = PQntuples(r);
    for (int i = 0; i < rows; i++) {
        delivery *d = calloc(1, sizeof *d);
        if (!d || !(d->url = strdup(PQgetvalue(r, i, 6)))) {
            free(d);
            az_error("cannot start webhook delivery: out of memory");
            continue; /* its lease runs out and it is claimed again */
        }
        snprintf(d->workspace, sizeof d->workspace, "%s", PQgetvalue(r, i, 0));
        snprintf(d->id, sizeof d->id, "%s", PQgetvalue(r, i, 1));
        snprintf(d->event_id, sizeof d->event_id, "%s", PQgetvalue(r, i, 2));
        snprintf(d->task_id, sizeof d->task_id, "%s", PQgetvalue(r, i, 3));
        snprintf(d->run_id, sizeof d->run_id, "%s", PQgetvalue(r, i, 4));
        snprintf(d->type, sizeof d->type, "%s", PQgetvalue(r, i, 5));
        snprintf(d->attempts, sizeof d->attempts, "%s", PQgetvalue(r, i, 7));
        d->attempt = atoi(d->attempts);
        start(w, d);
    }
    PQclear(r);
    return rows;
}

/* A delivery whose last attempt was claimed by a process that died never gets a record: once
 * its lease ran out it is failed here. Old finished deliveries are pruned. */
static void housekeep(az_webhook *w)
{
    char max[16];
    snprintf(max, sizeof max, "%d", AZ_WEBHOOK_MAX_ATTEMPTS);
    const char *p[1] = {max};
    char msg[AZ_MSG_MAX];
    if (exec1(w, NULL,
              "UPDATE webhook_deliveries SET status = 'failed',"
              " last_error = 'the last attempt was interrupted (its process stopped)'"
              " WHERE status = 'pending' AND attempts >= $1::integer"
              "   AND next_attempt_at <= clock_timestamp()",
              1, p, NULL, msg) != AZ_OK)
        az_warn("cannot expire interrupted webhook deliveries: %s", msg);
    PGresult *r = NULL;
    if (exec1(w, NULL,
              "DELETE FROM webhook_deliveries WHERE (workspace_id, id) IN"
              " (SELECT workspace_id, id FROM webhook_deliveries"
              "   WHERE status <> 'pending'"
              "     AND create_time < clock_timestamp() - interval '" RETENTION_DAYS " days'"
              "   LIMIT " PRUNE_BATCH ")",
              0, NULL, &r, msg) != AZ_OK) {
        az_warn("cannot prune webhook deliveries: %s", msg);
        return;
    }
    const char *n = PQcmdTuples(r);
    if (n && atoi(n) > 0) az_info("pruned %s webhook deliveries older than " RETENTION_DAYS " days", n);
    PQclear(r);
}

static void reap(az_webhook *w)
{
    CURLMsg *m;
    int left;
    while ((m = curl_multi_info_read(w->multi, &left))) {
        if (m->msg != CURLMSG_DONE) continue;
        delivery **pp = &w->in_flight;
        while (*pp && (*pp)->h != m->easy_handle) pp = &(*pp)->next;
        delivery *d = *pp;
        if (!d) continue;
        CURLcode rc = m->data.result; /* m is invalid after remove_handle */
        *pp = d->next;
        w->n_in_flight--;
        curl_multi_remove_handle(w->multi, d->h);
        finished(w, d, rc);
        delivery_free(d);
    }
}

static void *deliver_main(void *arg)
{
    az_webhook *w = arg;
    int64_t next_claim = 0, next_housekeep = az_now_ms();
    while (!atomic_load(&w->stop)) {
        int64_t now = az_now_ms();
        if (now >= next_housekeep) {
            housekeep(w);
            next_housekeep = now + HOUSEKEEP_MS;
        }
        if (w->n_in_flight < w->concurrency && now >= next_claim) {
            int want = w->concurrency - w->n_in_flight;
            int got = claim(w, want);
            /* A full batch suggests more are due: look again as soon as a slot frees. */
            next_claim = got == want ? 0 : az_now_ms() + POLL_MS;
        }
        int running = 0;
        curl_multi_perform(w->multi, &running);
        reap(w);
        if (atomic_load(&w->stop)) break;
        int64_t wait = next_claim ? next_claim - az_now_ms() : (w->n_in_flight < w->concurrency ? 0 : POLL_MS);
        if (wait > POLL_MS) wait = POLL_MS;
        if (wait < 0) wait = 0;
        if (w->n_in_flight || wait > 0) curl_multi_poll(w->multi, NULL, 0, (int)wait, NULL);
    }
    /* Abandoned POSTs are released, so their deliveries go out at once elsewhere or after a
     * restart instead of waiting out the lease. */
    while (w->in_flight) {
        delivery *d = w->in_flight;
        w->in_flight = d->next;
        curl_multi_remove_handle(w->multi, d->h);
        release(w, d);
        delivery_free(d);
    }
    w->n_in_flight = 0;
    return NULL;
}

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static void curl_init(void) { curl_global_init(CURL_GLOBAL_DEFAULT); }

az_webhook *az_webhook_start(const az_webhook_config *cfg, char *msg)
{
    if (!cfg || !cfg->pg) {
        az_fail(msg, AZ_ERR_INVALID, "webhook: a database pool is required");
        return NULL;
    }
    if (cfg->concurrency < 0 || cfg->concurrency > 1024 || cfg->timeout_ms < 0 ||
        cfg->timeout_ms > 600000) {
        az_fail(msg, AZ_ERR_INVALID, "webhook: concurrency must be 0..1024 and timeout_ms 0..600000");
        return NULL;
    }
    pthread_once(&curl_once, curl_init);
    az_webhook *w = calloc(1, sizeof *w);
    if (!w) {
        az_fail(msg, AZ_ERR_NOMEM, "out of memory");
        return NULL;
    }
    w->pg = cfg->pg;
    w->guard = cfg->guard;
    w->concurrency = cfg->concurrency ? cfg->concurrency : 8;
    w->timeout_ms = cfg->timeout_ms ? cfg->timeout_ms : 10000;
    atomic_init(&w->stop, 0);
    if ((cfg->secret && *cfg->secret && !(w->secret = strdup(cfg->secret))) ||
        !(w->multi = curl_multi_init())) {
        az_fail(msg, AZ_ERR_NOMEM, "out of memory");
        goto fail;
    }
    curl_multi_setopt(w->multi, CURLMOPT_MAX_TOTAL_CONNECTIONS, (long)w->concurrency);
    int e = pthread_create(&w->thread, NULL, deliver_main, w);
    if (e != 0) {
        az_fail(msg, AZ_ERR_INTERNAL, "cannot start the webhook thread: %s", strerror(e));
        goto fail;
    }
    return w;
fail:
    if (w->multi) curl_multi_cleanup(w->multi);
    if (w->secret) OPENSSL_cleanse(w->secret, strlen(w->secret));
    free(w->secret);
    free(w);
    return NULL;
}

void az_webhook_stop(az_webhook *w)
{
    if (!w) return;
    atomic_store(&w->stop, 1);
    curl_multi_wakeup(w->multi);
    pthread_join(w->thread, NULL);
    curl_multi_cleanup(w->multi);
    if (w->secret) OPENSSL_cleanse(w->secret, strlen(w->secret));
    free(w->secret);
    free(w);
}
