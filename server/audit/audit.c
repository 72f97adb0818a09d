/* The audit log in PostgreSQL: a writer thread fed by a bounded queue (RPC threads never wait for
 * the database unless the queue is full), appends serialized by a transaction-scoped advisory lock
 * so the hash chain stays linear, chain verification, and the ListAuditLog query. */
#include "audit.h"

#include <openssl/evp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

#include "auth/perm.h"
#include "core/log.h"
#include "core/pagetoken.h"
#include "core/pbtime.h"
#include "core/text.h"
#include "google/protobuf/timestamp.pb-c.h"
#include "store/pgarray.h"

/* An arbitrary constant ("azaudit" in ASCII): the chain's advisory lock. */
#define LOCK_KEY "27431817484437876"
#define ZERO_HASH "0000000000000000000000000000000000000000000000000000000000000000"
#define APPEND_MS 5000
#define SYNC_MS 2000
#define DRAIN_TRIES 3
#define VERIFY_PAGE 1000

enum { F_PRINCIPAL, F_WORKSPACE, F_METHOD, F_TARGET, F_OUTCOME, F_PEER, F_REQUEST, NFIELDS };

/* Byte limits per field (the rest is cut): bounded rows whatever a client sends. */
static const size_t field_max[NFIELDS] = {160, 36, 256, 256, 32, 128, 128};
static const char *const field_name[NFIELDS] = {"principal", "workspace_id", "method", "target_id",
                                                "outcome", "peer", "request_id"};

/* A queued entry: the fields, cleaned, in one allocation. */
typedef struct qentry {
    struct qentry *next;
    int64_t time_us;
    char *f[NFIELDS];
    char buf[];
} qentry;

struct az_audit {
    az_pg *pg;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;      /* writer: work or stop */
    pthread_cond_t idle_cv; /* flushers: queue drained */
    qentry *head, *tail;
    int count; /* queued plus in flight */
    int limit;
    int stop;
};

static int64_t now_us(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (int64_t)tv.tv_sec * 1000000 + tv.tv_usec;
}

/* ---------------------------------------------------------------- entries */

/* Copies s (cut to max bytes) into dst, turning control characters into '?', and every byte
 * above 0x7f too when the cut text is not valid UTF-8. Returns bytes written (no NUL). */
static size_t clean(char *dst, const char *s, size_t max)
{
    size_t n = s ? strnlen(s, max) : 0;
    int utf8 = az_text_utf8_valid(s ? s : "", n);
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        dst[i] = ch < 0x20 || ch == 0x7f || (!utf8 && ch > 0x7f) ? '?' : (char)ch;
    }
    return n;
}

static qentry *entry_new(const az_audit_entry *e)
{
    const char *src[NFIELDS] = {e->principal, e->workspace_id, e->method, e->target_id,
                                e->outcome, e->peer, e->request_id};
    char ws[37] = "";
    /* A workspace is a uuid or nothing, lowercase as PostgreSQL prints it (the hash covers it). */
    if (src[F_WORKSPACE] && az_text_is_uuid(src[F_WORKSPACE])) {
        for (int i = 0; i < 36; i++) {
            char ch = src[F_WORKSPACE][i];
            ws[i] = ch >= 'A' && ch <= 'F' ? (char)(ch - 'A' + 'a') : ch;
        }
        ws[36] = '\0';
    }
    src[F_WORKSPACE] = ws;
    size_t total = 0;
    for (int i = 0; i < NFIELDS; i++) total += (src[i] ? strnlen(src[i], field_max[i]) : 0) + 1;
    qentry *q = malloc(sizeof *q + total);
    if (!q) return NULL;
    q->next = NULL;
    q->time_us = e->time_us ? e->time_us : now_us();
    char *p = q->buf;
    for (int i = 0; i < NFIELDS; i++) {
        q->f[i] = p;
        p += clean(p, src[i], field_max[i]);
        *p++ = '\0';
    }
    return q;
}

/* Entries that cannot be written go to the log, so an outage never loses them silently. */
static void log_lost(const qentry *q, const char *why)
{
    char fields[1400];
    int n = snprintf(fields, sizeof fields, "time_us=%lld", (long long)q->time_us);
    for (int i = 0; i < NFIELDS && n > 0 && (size_t)n < sizeof fields; i++)
        n += snprintf(fields + n, sizeof fields - (size_t)n, " %s=\"%s\"", field_name[i], q->f[i]);
    az_log_kv(AZ_LOG_ERROR, "cannot write audit entry, recorded here instead", fields);
    az_error("audit log write failed: %s", why);
}

/* ---------------------------------------------------------------- the chain */

static void hex32(const unsigned char md[32], char out[65])
{
    static const char hex[] = "0123456789abcdef";
    for (int i = 0; i < 32; i++) {
        out[2 * i] = hex[md[i] >> 4];
        out[2 * i + 1] = hex[md[i] & 15];
    }
    out[64] = '\0';
}

static void put_field(EVP_MD_CTX *md, const char *s, size_t n)
{
    char len[24];
    int k = snprintf(len, sizeof len, "%zu:", n);
    EVP_DigestUpdate(md, len, (size_t)k);
    EVP_DigestUpdate(md, s, n);
    EVP_DigestUpdate(md, ",", 1);
}

/* hash = SHA-256(prev_hash (64 hex characters) || canonical encoding), where the encoding is
 * every field as a netstring "<byte length>:<bytes>," in this order: id, time (unix
 * microseconds), principal, workspace_id ("" for none), method, target_id, outcome, peer,
 * request_id. Numbers are decimal. docs/security.md repeats this for outside verifiers. */
static void row_hash(const char *prev, int64_t id, int64_t time_us, char *const f[NFIELDS], char out[65])
{
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    unsigned char digest[32];
    unsigned int len = 0;
    char num[24];
    EVP_DigestInit_ex(md, EVP_sha256(), NULL);
    EVP_DigestUpdate(md, prev, 64);
    put_field(md, num, (size_t)snprintf(num, sizeof num, "%lld", (long long)id));
    put_field(md, num, (size_t)snprintf(num, sizeof num, "%lld", (long long)time_us));
    for (int i = 0; i < NFIELDS; i++) put_field(md, f[i], strlen(f[i]));
    EVP_DigestFinal_ex(md, digest, &len);
    EVP_MD_CTX_free(md);
    hex32(digest, out);
}

enum { A_ID, A_TIME, A_PRINCIPAL, A_WORKSPACE, A_METHOD, A_TARGET, A_OUTCOME, A_PEER, A_REQUEST,
       A_PREV, A_HASH, A_N };

/* Appends entries in one transaction holding the chain lock, in three round trips whatever
 * their number: the lock, then the chain's head and an id for every entry, then one INSERT of
 * every row, each linked to the one before; then the commit. (A statement per row was 2n + 2
 * statements per batch, most of the audit log's cost on busy servers.) The head is read by a
 * statement of its own after the lock's: a statement's snapshot is taken when it starts, so a
 * read in the locking statement could miss the head another writer committed meanwhile. */
static az_err append_batch(az_pg *pg, qentry *list, int64_t deadline_ms, int64_t *last_id, char *msg)
{
    az_ctx ctx = {.deadline_ms = deadline_ms}; /* no workspace: system work across tenants */
    size_t n = 0;
    for (qentry *q = list; q; q = q->next) n++;
    char count[24];
    snprintf(count, sizeof count, "%zu", n);
    const char *cp[1] = {count};
    az_pgconn *c;
    az_err err = az_pg_acquire(pg, &ctx, &c, msg);
    if (err != AZ_OK) return err;
    PGresult *r = NULL;
    az_pgarray a[A_N];
    memset(a, 0, sizeof a);
    char prev[65] = ZERO_HASH;
    if ((err = az_pg_begin(c, &ctx, msg)) != AZ_OK ||
        (err = az_pg_defer(c, &ctx, "SELECT pg_advisory_xact_lock(" LOCK_KEY ")", 0, NULL, msg)) != AZ_OK ||
        (err = az_pg_exec(c, &ctx,
                          "SELECT (SELECT hash FROM audit_log ORDER BY id DESC LIMIT 1),"
                          " array(SELECT nextval('audit_log_id_seq') FROM generate_series(1, $1::integer))::text",
                          1, cp, &r, msg)) != AZ_OK)
        goto out;
    if (!PQgetisnull(r, 0, 0) && PQgetlength(r, 0, 0) == 64) memcpy(prev, PQgetvalue(r, 0, 0), 64);
    const char *ids = PQgetvalue(r, 0, 1); /* "{17,18,...}" */
    size_t i = 0;
    int64_t id = 0;
    for (qentry *q = list; q; q = q->next, i++) {
        ids++; /* past '{' or ',' */
        char *end;
        id = strtoll(ids, &end, 10);
        if (end == ids) {
            err = az_fail(msg, AZ_ERR_INTERNAL, "audit ids: cannot parse %.40s", ids);
            goto out;
        }
        ids = end;
        char hash[65], id_s[24], time_s[24];
        row_hash(prev, id, q->time_us, q->f, hash);
        snprintf(id_s, sizeof id_s, "%lld", (long long)id);
        snprintf(time_s, sizeof time_s, "%lld", (long long)q->time_us);
        const char *v[A_N] = {id_s, time_s, q->f[F_PRINCIPAL], q->f[F_WORKSPACE][0] ? q->f[F_WORKSPACE] : NULL,
                              q->f[F_METHOD], q->f[F_TARGET], q->f[F_OUTCOME], q->f[F_PEER],
                              q->f[F_REQUEST], prev, hash};
        for (int k = 0; k < A_N; k++) az_pgarray_add(&a[k], v[k]);
        memcpy(prev, hash, 65);
    }
    const char *p[A_N];
    for (int k = 0; k < A_N; k++) {
        if (!(p[k] = az_pgarray_text(&a[k]))) {
            err = az_fail(msg, AZ_ERR_NOMEM, "out of memory");
            goto out;
        }
    }
    if ((err = az_pg_defer(c, &ctx,
                           "INSERT INTO audit_log (id, time, principal, workspace_id, method, target_id,"
                           " outcome, peer, request_id, prev_hash, hash)"
                           " SELECT u.id, timestamptz 'epoch' + u.t * interval '1 microsecond', u.pr, u.ws,"
                           " u.m, u.tg, u.o, u.pe, u.rq, u.ph, u.h"
                           " FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::uuid[], $5::text[],"
                           " $6::text[], $7::text[], $8::text[], $9::text[], $10::text[], $11::text[])"
                           " AS u(id, t, pr, ws, m, tg, o, pe, rq, ph, h) ORDER BY u.id",
                           A_N, p, msg)) == AZ_OK &&
        (err = az_pg_commit(c, &ctx, msg)) == AZ_OK && last_id)
        *last_id = id;
out:
    for (int k = 0; k < A_N; k++) az_pgarray_free(&a[k]);
    PQclear(r);
    az_pg_release(c);
    return err;
}

az_err az_audit_append(az_pg *pg, const az_audit_entry *e, int64_t *id, char *msg)
{
    qentry *q = entry_new(e);
    if (!q) return az_fail(msg, AZ_ERR_NOMEM, "out of memory");
    az_err err = append_batch(pg, q, az_now_ms() + APPEND_MS, id, msg);
    free(q);
    return err;
}

az_err az_audit_append_many(az_pg *pg, const az_audit_entry *e, size_t n, int64_t *last_id, char *msg)
{
    if (n == 0 || n > AZ_AUDIT_BATCH_MAX)
        return az_fail(msg, AZ_ERR_INVALID, "audit: 1 to %d entries per batch, got %zu", AZ_AUDIT_BATCH_MAX, n);
    qentry *head = NULL, **tail = &head;
    az_err err = AZ_OK;
    for (size_t i = 0; i < n && err == AZ_OK; i++) {
        if (!(*tail = entry_new(&e[i]))) err = az_fail(msg, AZ_ERR_NOMEM, "out of memory");
        else tail = &(*tail)->next;
    }
    if (err == AZ_OK) err = append_batch(pg, head, az_now_ms() + APPEND_MS, last_id, msg);
    while (head) {
        qentry *next = head->next;
        free(head);
        head = next;
    }
    return err;
}

/* ---------------------------------------------------------------- the writer */

static void free_list(qentry *q)
{
    while (q) {
        qentry *next = q->next;
        free(q);
        q = next;
    }
}

static void *writer_main(void *arg)
{
    az_audit *a = arg;
    int backoff_ms = 100, tries = 0;
    pthread_mutex_lock(&a->mu);
    for (;;) {
        while (!a->head && !a->stop) pthread_cond_wait(&a->cv, &a->mu);
        if (!a->head) break;
        /* Detach up to AZ_AUDIT_BATCH_MAX entries; they stay counted until written. */
        qentry *batch = a->head, *last = batch;
        int n = 1;
        while (last->next && n < AZ_AUDIT_BATCH_MAX) last = last->next, n++;
        a->head = last->next;
        if (!a->head) a->tail = NULL;
        last->next = NULL;
        pthread_mutex_unlock(&a->mu);

        char msg[AZ_MSG_MAX];
        az_err err = append_batch(a->pg, batch, az_now_ms() + APPEND_MS, NULL, msg);

        pthread_mutex_lock(&a->mu);
        if (err == AZ_OK) {
            free_list(batch);
            a->count -= n;
            backoff_ms = 100;
            tries = 0;
            pthread_cond_broadcast(&a->idle_cv);
            continue;
        }
        az_warn("cannot write %d audit entries (retrying): %s", n, msg);
        if (a->stop && ++tries >= DRAIN_TRIES) {
            /* Shutting down and the database stays away: log them rather than lose them. */
            for (qentry *q = batch; q; q = q->next) log_lost(q, msg);
            free_list(batch);
            a->count -= n;
            pthread_cond_broadcast(&a->idle_cv);
            continue;
        }
        /* Back to the front, in order, and try again after a pause. */
        last->next = a->head;
        a->head = batch;
        if (!a->tail) a->tail = last;
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += backoff_ms / 1000;
        until.tv_nsec += (long)(backoff_ms % 1000) * 1000000;
        if (until.tv_nsec >= 1000000000) until.tv_sec++, until.tv_nsec -= 1000000000;
        pthread_cond_timedwait(&a->cv, &a->mu, &until);
        backoff_ms = backoff_ms * 2 > 5000 ? 5000 : backoff_ms * 2;
    }
    pthread_mutex_unlock(&a->mu);
    return NULL;
}

az_audit *az_audit_new(az_pg *pg, int queue_limit, char *msg)
{
    az_audit *a = calloc(1, sizeof *a);
    if (!a) {
        az_fail(msg, AZ_ERR_NOMEM, "out of memory");
        return NULL;
    }
    a->pg = pg;
    a->limit = queue_limit > 0 ? queue_limit : AZ_AUDIT_QUEUE_DEFAULT;
    pthread_mutex_init(&a->mu, NULL);
    pthread_cond_init(&a->cv, NULL);
    pthread_cond_init(&a->idle_cv, NULL);
    if (pthread_create(&a->thread, NULL, writer_main, a) != 0) {
        az_fail(msg, AZ_ERR_INTERNAL, "cannot start the audit writer thread");
        pthread_mutex_destroy(&a->mu);
        pthread_cond_destroy(&a->cv);
        pthread_cond_destroy(&a->idle_cv);
        free(a);
        return NULL;
    }
    return a;
}

void az_audit_free(az_audit *a)
{
    if (!a) return;
    pthread_mutex_lock(&a->mu);
    a->stop = 1;
    pthread_cond_broadcast(&a->cv);
    pthread_mutex_unlock(&a->mu);
    pthread_join(a->thread, NULL);
    free_list(a->head);
    pthread_mutex_destroy(&a->mu);
    pthread_cond_destroy(&a->cv);
    pthread_cond_destroy(&a->idle_cv);
    free(a);
}

az_err az_audit_flush(az_audit *a, int timeout_ms, char *msg)
{
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += timeout_ms / 1000;
    until.tv_nsec += (long)(timeout_ms % 1000) * 1000000;
    if (until.tv_nsec >= 1000000000) until.tv_sec++, until.tv_nsec -= 1000000000;
    az_err err = AZ_OK;
    pthread_mutex_lock(&a->mu);
    while (a->count > 0 && err == AZ_OK) {
        if (pthread_cond_timedwait(&a->idle_cv, &a->mu, &until) != 0 && a->count > 0)
            err = az_fail(msg, AZ_ERR_DEADLINE, "%d audit entries still unwritten", a->count);
    }
    pthread_mutex_unlock(&a->mu);
    return err;
}

/* What the audit log records: state changes, and refusals on any method. */
static int wanted(const char *method, int status)
{
    if (status == 16 || status == 7) return 1; /* UNAUTHENTICATED, PERMISSION_DENIED */
    const az_perm *p = method ? az_perm_find(method) : NULL;
    return p && p->mutating;
}

void az_audit_observe(void *arg, az_call *c, const char *method, int status, int64_t duration_us)
{
    az_audit *a = arg;
    if (!a || !wanted(method, status)) return;
    const az_principal *p = az_call_principal(c);
    az_audit_entry e = {
        .time_us = now_us(),
        .principal = p->id[0] ? p->id : "anonymous",
        .workspace_id = p->workspace_id,
        .method = method,
        .target_id = az_call_target(c),
        .outcome = az_grpc_status_name(status),
        .peer = az_call_peer(c),
        .request_id = az_call_request_id(c),
    };
    qentry *q = entry_new(&e);
    if (!q) {
        az_error("cannot queue audit entry for %s by %s: out of memory", method, p->id);
        return;
    }
    pthread_mutex_lock(&a->mu);
    if (a->count < a->limit && !a->stop) {
        if (a->tail) a->tail->next = q;
        else a->head = q;
        a->tail = q;
        a->count++;
        pthread_cond_signal(&a->cv);
        pthread_mutex_unlock(&a->mu);
        return;
    }
    pthread_mutex_unlock(&a->mu);
    /* Full (the database is slow or away): write on this thread rather than drop the entry. */
    char msg[AZ_MSG_MAX];
    if (append_batch(a->pg, q, az_now_ms() + SYNC_MS, NULL, msg) != AZ_OK) log_lost(q, msg);
    free(q);
}

/* ---------------------------------------------------------------- verify */

#define ROW_COLS                                                                                 \
    "id, (extract(epoch FROM time) * 1000000)::bigint, principal, coalesce(workspace_id::text, ''),"   \
    " method, target_id, outcome, peer, request_id, prev_hash, hash"

enum { R_ID, R_TIME, R_FIELDS, R_PREV = R_FIELDS + NFIELDS, R_HASH };

az_err az_audit_verify(az_pg *pg, int64_t *rows, int64_t *first_bad_id, char *msg)
{
    *rows = 0;
    *first_bad_id = 0;
    az_ctx ctx = {.deadline_ms = -1}; /* every workspace */
    az_pgconn *c;
    az_err err = az_pg_acquire(pg, &ctx, &c, msg);
    if (err != AZ_OK) return err;
    /* One snapshot for every page: rows appended meanwhile are simply not part of this check. */
    err = az_pg_exec(c, &ctx, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", 0, NULL, NULL, msg);
    char prev[65] = ZERO_HASH, after[24] = "0";
    /* After retention pruned the start of the chain, it continues from the anchor: the hash of
     * the last pruned row (migration 0011). */
    PGresult *anchor = NULL;
    if (err == AZ_OK &&
        (err = az_pg_exec(c, &ctx, "SELECT last_id, last_hash FROM audit_anchor", 0, NULL, &anchor, msg)) ==
            AZ_OK &&
        PQntuples(anchor) == 1 && PQgetlength(anchor, 0, 1) == 64) {
        snprintf(after, sizeof after, "%s", PQgetvalue(anchor, 0, 0));
        memcpy(prev, PQgetvalue(anchor, 0, 1), 65);
    }
    PQclear(anchor);
    int more = err == AZ_OK;
    while (more && err == AZ_OK && *first_bad_id == 0) {
        const char *p[1] = {after};
        PGresult *r;
        err = az_pg_exec(c, &ctx,
                         "SELECT " ROW_COLS " FROM audit_log WHERE id > $1::bigint ORDER BY id LIMIT "
                         "1000",
                         1, p, &r, msg);
        if (err != AZ_OK) break;
        int n = PQntuples(r);
        more = n == VERIFY_PAGE;
        for (int i = 0; i < n; i++) {
            int64_t id = atoll(PQgetvalue(r, i, R_ID));
            char *f[NFIELDS];
            for (int k = 0; k < NFIELDS; k++) f[k] = PQgetvalue(r, i, R_FIELDS + k);
            char want[65];
            row_hash(prev, id, atoll(PQgetvalue(r, i, R_TIME)), f, want);
            const char *stored_prev = PQgetvalue(r, i, R_PREV), *stored = PQgetvalue(r, i, R_HASH);
            if (strcmp(stored_prev, prev) != 0) {
                *first_bad_id = id;
                az_fail(msg, AZ_OK, "row %lld does not link to the row before it (a row was removed or "
                                    "inserted out of the chain)", (long long)id);
                break;
            }
            if (strcmp(stored, want) != 0) {
                *first_bad_id = id;
                az_fail(msg, AZ_OK, "row %lld does not match its hash (a field was changed)", (long long)id);
                break;
            }
            memcpy(prev, stored, 65);
            ++*rows;
            snprintf(after, sizeof after, "%lld", (long long)id);
        }
        PQclear(r);
    }
    az_pg_release(c); /* rolls the read-only transaction back */
    return err;
}

/* ---------------------------------------------------------------- retention */

#define PRUNE_BATCH "1000"      /* rows per transaction */
#define PRUNE_MAX_ROWS 200000   /* per call, so one retention pass stays short */

az_err az_audit_prune(az_pg *pg, int64_t older_than_ms, int64_t *deleted, char *msg)
{
    if (deleted) *deleted = 0;
    if (older_than_ms <= 0) return az_fail(msg, AZ_ERR_INVALID, "older_than_ms must be > 0");
    char older[24];
    snprintf(older, sizeof older, "%lld", (long long)older_than_ms);
    const char *p[2] = {older, PRUNE_BATCH};
    az_ctx ctx = {.request_id = "retention", .deadline_ms = -1}; /* every workspace */
    az_pgconn *c;
    az_err err = az_pg_acquire(pg, &ctx, &c, msg);
    if (err != AZ_OK) return err;
    int64_t total = 0;
    /* Each batch its own transaction: the chain lock is held briefly, progress is kept. */
    while (total < PRUNE_MAX_ROWS) {
        PGresult *r;
        if ((err = az_pg_exec(c, &ctx,
                              "SELECT agentz_audit_prune(clock_timestamp() - make_interval(secs =>"
                              " $1::bigint / 1000.0), $2::integer)",
                              2, p, &r, msg)) != AZ_OK)
            break;
        int64_t n = PQntuples(r) == 1 ? atoll(PQgetvalue(r, 0, 0)) : 0;
        PQclear(r);
        total += n;
        if (n == 0) break;
    }
    az_pg_release(c);
    if (deleted) *deleted = total;
    return err;
}

/* ---------------------------------------------------------------- list */

static unsigned long filter_hash(const az_audit_query *q)
{
    char start[24], end[24];
    snprintf(start, sizeof start, "%lld", (long long)q->start_us);
    snprintf(end, sizeof end, "%lld", (long long)q->end_us);
    unsigned long h = az_pagetoken_hash(AZ_PAGETOKEN_HASH_INIT, start);
    h = az_pagetoken_hash(h, end);
    h = az_pagetoken_hash(h, q->principal);
    return az_pagetoken_hash(h, q->method);
}

/* The token is az_pagetoken("l1|<filter hash>|<last id>"); NULL when out of memory. */
static char *encode_token(az_arena *a, unsigned long hash, const char *id)
{
    char raw[AZ_PAGETOKEN_RAW_MAX + 1];
    int n = snprintf(raw, sizeof raw, "l1|%lx|%s", hash, id);
    if (n < 0 || (size_t)n >= sizeof raw) return NULL;
    return az_pagetoken_encode(a, raw);
}

static az_err decode_token(const char *token, unsigned long hash, long long *after, char *msg)
{
    char raw[AZ_PAGETOKEN_RAW_MAX + 1];
    az_err err = az_pagetoken_decode(token, raw, msg);
    if (err != AZ_OK) return err;
    unsigned long th;
    if (sscanf(raw, "l1|%lx|%lld", &th, after) != 2 || *after < 1)
        return az_fail(msg, AZ_ERR_INVALID, "page_token is invalid");
    if (th != hash)
        return az_fail(msg, AZ_ERR_INVALID,
                       "page_token was issued for different filters (principal, method, start_time, end_time)");
    return AZ_OK;
}

static az_err from_row(const PGresult *r, int row, az_arena *a, Agentz__V1__AuditEntry **out, char *msg)
{
    Agentz__V1__AuditEntry *e = az_arena_alloc(a, sizeof *e);
    if (!e) return az_fail(msg, AZ_ERR_NOMEM, "out of memory");
    agentz__v1__audit_entry__init(e);
    e->id = az_arena_strdup(a, PQgetvalue(r, row, R_ID));
    e->time = az_pbtime_timestamp(a, atoll(PQgetvalue(r, row, R_TIME)));
    e->principal = az_arena_strdup(a, PQgetvalue(r, row, R_FIELDS + F_PRINCIPAL));
    e->workspace_id = az_arena_strdup(a, PQgetvalue(r, row, R_FIELDS + F_WORKSPACE));
    e->method = az_arena_strdup(a, PQgetvalue(r, row, R_FIELDS + F_METHOD));
    e->target_id = az_arena_strdup(a, PQgetvalue(r, row, R_FIELDS + F_TARGET));
    e->outcome = az_arena_strdup(a, PQgetvalue(r, row, R_FIELDS + F_OUTCOME));
    e->peer = az_arena_strdup(a, PQgetvalue(r, row, R_FIELDS + F_PEER));
    e->request_id = az_arena_strdup(a, PQgetvalue(r, row, R_FIELDS + F_REQUEST));
    e->hash = az_arena_strdup(a, PQgetvalue(r, row, R_HASH));
    if (!e->id || !e->time || !e->principal || !e->workspace_id || !e->method || !e->target_id ||
        !e->outcome || !e->peer || !e->request_id || !e->hash)
        return az_fail(msg, AZ_ERR_NOMEM, "out of memory");
    *out = e;
    return AZ_OK;
}

az_err az_audit_list(az_pg *pg, const az_ctx *ctx, const az_audit_query *q, az_arena *a,
                     Agentz__V1__ListAuditLogResponse **out, char *msg)
{
    *out = NULL;
    if (!ctx->workspace_id || !az_text_is_uuid(ctx->workspace_id))
        return az_fail(msg, AZ_ERR_INVALID, "workspace: the audit log is listed per workspace");
    unsigned long hash = filter_hash(q);
    long long after = 0;
    az_err err;
    if (q->page_token && *q->page_token) {
        if (strlen(q->page_token) > 80) return az_fail(msg, AZ_ERR_INVALID, "page_token is invalid");
        if ((err = decode_token(q->page_token, hash, &after, msg)) != AZ_OK) return err;
    }
    char start[24], end[24], after_s[24], limit[16];
    snprintf(start, sizeof start, "%lld", (long long)q->start_us);
    snprintf(end, sizeof end, "%lld", (long long)q->end_us);
    snprintf(after_s, sizeof after_s, "%lld", after);
    snprintf(limit, sizeof limit, "%d", q->page_size + 1);
    const char *p[7] = {ctx->workspace_id, q->principal ? q->principal : "", q->method ? q->method : "",
                        q->start_us ? start : NULL, q->end_us ? end : NULL, after ? after_s : NULL, limit};
    az_pgconn *c;
    if ((err = az_pg_acquire(pg, ctx, &c, msg)) != AZ_OK) return err;
    PGresult *r;
    err = az_pg_exec(c, ctx,
                     "SELECT " ROW_COLS " FROM audit_log WHERE workspace_id = $1"
                     " AND ($2 = '' OR principal = $2) AND ($3 = '' OR method = $3)"
                     " AND ($4::bigint IS NULL OR time >= timestamptz 'epoch' + $4::bigint * interval '1 microsecond')"
                     " AND ($5::bigint IS NULL OR time < timestamptz 'epoch' + $5::bigint * interval '1 microsecond')"
                     " AND ($6::bigint IS NULL OR id < $6::bigint)"
                     " ORDER BY id DESC LIMIT $7::integer",
                     7, p, &r, msg);
    az_pg_release(c);
    if (err != AZ_OK) return err;
    int rows = PQntuples(r), n = rows > q->page_size ? q->page_size : rows;
    Agentz__V1__ListAuditLogResponse *resp = az_arena_alloc(a, sizeof *resp);
    if (resp) {
        agentz__v1__list_audit_log_response__init(resp);
        resp->entries = az_arena_alloc(a, (size_t)(n ? n : 1) * sizeof *resp->entries);
    }
    if (!resp || !resp->entries) err = az_fail(msg, AZ_ERR_NOMEM, "out of memory");
    for (int i = 0; i < n && err == AZ_OK; i++) err = from_row(r, i, a, &resp->entries[i], msg);
    if (err == AZ_OK) {
        resp->n_entries = (size_t)n;
        if (rows > q->page_size &&
            !(resp->next_page_token = encode_token(a, hash, PQgetvalue(r, n - 1, R_ID))))
            err = az_fail(msg, AZ_ERR_NOMEM, "out of memory");
    }
    PQclear(r);
    if (err == AZ_OK) *out = resp;
    return err;
}
