/* Agent long-term memory in PostgreSQL (agent_memory): task summaries written after each task,
 * recalled by embedding similarity (computed here, in C) or by full-text keyword rank and
 * recency, listed page by page and cleared through the API. */
#include "memory.h"

#include <curl/curl.h>
#include <jansson.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include "agent.h"
#include "core/log.h"
#include "core/pagetoken.h"
#include "core/pbtime.h"
#include "core/text.h"
#include "google/protobuf/timestamp.pb-c.h"

#define EMBED_TIMEOUT_MS 10000L
#define EMBED_RESPONSE_MAX (8u * 1024u * 1024u) /* 3072 floats as JSON is about 70 KB */
#define EMBED_DIMS_MAX 16384
#define RECALL_SCAN_MAX 1000 /* most recent entries with embeddings compared per recall */
#define RECALL_LIMIT_MAX 100
#define QUERY_WORDS_MAX 32
#define QUERY_WORD_MAX 64 /* bytes */

/* ---------------------------------------------------------------- summary */

static int is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }

/* Appends s[0..n) to dst (of cap bytes, len used), replacing bytes that are not valid UTF-8 with
 * '?' so PostgreSQL accepts the text whatever the model produced. */
static void append_utf8(char *dst, size_t *len, size_t cap, const char *s, size_t n)
{
    size_t i = 0;
    while (i < n && *len + 1 < cap) {
        unsigned char c = (unsigned char)s[i];
        size_t k = c < 0x80 ? 1 : (c & 0xE0) == 0xC0 ? 2 : (c & 0xF0) == 0xE0 ? 3 : (c & 0xF8) == 0xF0 ? 4 : 0;
        if (k == 0 || i + k > n || !az_text_utf8_valid(s + i, k)) {
            dst[(*len)++] = '?';
            i++;
            continue;
        }
        if (*len + k >= cap) break;
        memcpy(dst + *len, s + i, k);
        *len += k;
        i += k;
    }
    dst[*len] = '\0';
}

/* "Task: <description, trimmed>\nResult: <output, trimmed>" in at most AZ_MEMORY_SUMMARY_MAX
 * bytes; a cut ends with "…" on a character boundary. out has AZ_MEMORY_SUMMARY_MAX + 1 bytes. */
static void build_summary(const char *description, const char *output, char *out)
{
    /* Build in a larger buffer first, so that we know whether anything was cut. */
    enum { CAP = AZ_MEMORY_SUMMARY_MAX + 8 };
    char tmp[CAP];
    size_t len = 0;
    const char *d = description ? description : "", *o = output ? output : "";
    while (is_space(*d)) d++;
    size_t dn = strlen(d);
    while (dn && is_space(d[dn - 1])) dn--;
    while (is_space(*o)) o++;
    size_t on = strlen(o);
    while (on && is_space(o[on - 1])) on--;
    append_utf8(tmp, &len, CAP, "Task: ", 6);
    append_utf8(tmp, &len, CAP, d, dn);
    append_utf8(tmp, &len, CAP, "\nResult: ", 9);
    append_utf8(tmp, &len, CAP, o, on);
    if (len <= AZ_MEMORY_SUMMARY_MAX) {
        memcpy(out, tmp, len + 1);
        return;
    }
    static const char ellipsis[] = "\xE2\x80\xA6";
    size_t cut = AZ_MEMORY_SUMMARY_MAX - (sizeof ellipsis - 1);
    /* Step back over continuation bytes to the start of the character that straddles the cut. */
    while (cut > 0 && ((unsigned char)tmp[cut] & 0xC0) == 0x80) cut--;
    memcpy(out, tmp, cut);
    memcpy(out + cut, ellipsis, sizeof ellipsis);
}

/* ---------------------------------------------------------------- embeddings */

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static void curl_init(void) { curl_global_init(CURL_GLOBAL_DEFAULT); }

typedef struct body {
    char *p;
    size_t n, cap;
    int over; /* the response passed EMBED_RESPONSE_MAX */
} body;

static size_t on_write(char *data, size_t size, size_t nmemb, void *arg)
{
    body *b = arg;
    size_t k = size * nmemb;
    if (b->n + k > EMBED_RESPONSE_MAX) {
        b->over = 1;
        return 0;
    }
    if (b->n + k + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->n + k + 1) cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) return 0;
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->n, data, k);
    b->n += k;
    b->p[b->n] = '\0';
    return k;
}

static int embeddings_on(const az_memory_config *cfg)
{
    return cfg && cfg->embeddings_url && *cfg->embeddings_url;
}

/* Parses an OpenAI embeddings response: data[0].embedding, an array of numbers. */
static az_err parse_embedding(const char *text, size_t len, float **vec, size_t *dims, char *msg)
{
    json_error_t jerr;
    json_t *root = json_loadb(text, len, 0, &jerr);
    json_t *emb = json_object_get(json_array_get(json_object_get(root, "data"), 0), "embedding");
    size_t n = json_array_size(emb);
    if (!json_is_array(emb) || n == 0 || n > EMBED_DIMS_MAX) {
        json_decref(root);
        return az_fail(msg, AZ_ERR_INVALID,
                       "embeddings response has no data[0].embedding array of 1..%d numbers",
                       EMBED_DIMS_MAX);
    }
    float *v = malloc(n * sizeof *v);
    if (!v) {
        json_decref(root);
        return az_fail(msg, AZ_ERR_NOMEM, "out of memory");
    }
    for (size_t i = 0; i < n; i++) {
        json_t *x = json_array_get(emb, i);
        double d = json_number_value(x);
        if (!json_is_number(x) || !isfinite(d)) {
            free(v);
            json_decref(root);
            return az_fail(msg, AZ_ERR_INVALID, "embeddings response: data[0].embedding[%zu] is not a number", i);
        }
        v[i] = (float)d;
    }
    json_decref(root);
    *vec = v;
    *dims = n;
    return AZ_OK;
}

/* POSTs {model, input} to <embeddings_url>/embeddings and returns the vector (malloc'd, the
 * caller frees). Blocking, at most EMBED_TIMEOUT_MS (less when ctx's deadline is nearer). */
static az_err embed(const az_memory_config *cfg, const az_ctx *ctx, const char *input, float **vec,
                    size_t *dims, char *msg)
{
    *vec = NULL;
    *dims = 0;
    pthread_once(&curl_once, curl_init);
    const char *base = cfg->embeddings_url;
    size_t bn = strlen(base);
    while (bn && base[bn - 1] == '/') bn--;
    char *url = malloc(bn + sizeof "/embeddings");
    json_t *req = json_object();
    if (cfg->embeddings_model && *cfg->embeddings_model)
        json_object_set_new(req, "model", json_string(cfg->embeddings_model));
    json_object_set_new(req, "input", json_string(input));
    char *payload = json_dumps(req, JSON_COMPACT);
    json_decref(req);
    char *auth = NULL;
    if (cfg->embeddings_api_key && *cfg->embeddings_api_key &&
        asprintf(&auth, "Authorization: Bearer %s", cfg->embeddings_api_key) < 0)
        auth = NULL;
    struct curl_slist *headers = curl_slist_append(NULL, "Content-Type: application/json");
    struct curl_slist *h2 = headers ? curl_slist_append(headers, "Expect:") : NULL;
    if (h2) headers = h2;
    if (h2 && auth) {
        h2 = curl_slist_append(headers, auth);
        if (h2) headers = h2;
    }
    CURL *h = curl_easy_init();
    az_err err = AZ_OK;
    if (!url || !payload || !h || !h2 || (cfg->embeddings_api_key && *cfg->embeddings_api_key && !auth)) {
        err = az_fail(msg, AZ_ERR_NOMEM, "out of memory");
        goto out;
    }
    memcpy(url, base, bn);
    memcpy(url + bn, "/embeddings", sizeof "/embeddings");

    long timeout = EMBED_TIMEOUT_MS;
    int64_t left = az_ctx_remaining_ms(ctx);
    if (left >= 0 && left < timeout) timeout = left > 0 ? (long)left : 1;
    body b = {0};
    az_netguard_curl g = {.guard = cfg->guard};
    char errbuf[CURL_ERROR_SIZE] = "";
    CURLcode cc = CURLE_OK;
#define SET(opt, val) \
    if (!cc) cc = curl_easy_setopt(h, opt, val)
    SET(CURLOPT_URL, url);
    SET(CURLOPT_PROTOCOLS_STR, "http,https");
    SET(CURLOPT_FOLLOWLOCATION, 0L);
    SET(CURLOPT_POST, 1L);
    SET(CURLOPT_POSTFIELDS, payload);
    SET(CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)strlen(payload));
    SET(CURLOPT_HTTPHEADER, headers);
    SET(CURLOPT_USERAGENT, "agentz/" AZ_VERSION);
    SET(CURLOPT_WRITEFUNCTION, on_write);
    SET(CURLOPT_WRITEDATA, &b);
    SET(CURLOPT_NOSIGNAL, 1L);
    SET(CURLOPT_TIMEOUT_MS, timeout);
    SET(CURLOPT_ERRORBUFFER, errbuf);
    if (!cc) cc = az_netguard_curl_use(h, &g);
#undef SET
    if (cc) {
        err = az_fail(msg, AZ_ERR_INTERNAL, "cannot configure curl: %s", curl_easy_strerror(cc));
        goto out_body;
    }
    cc = curl_easy_perform(h);
    long status = 0;
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
    if (g.refused) {
        err = az_fail(msg, AZ_ERR_PERMISSION,
                      "embeddings endpoint address %s (%s) is refused by the network policy "
                      "(AGENTZ_ALLOW_PRIVATE_NETWORKS)",
                      g.refused_addr, g.refused_range);
    } else if (b.over) {
        err = az_fail(msg, AZ_ERR_EXHAUSTED, "embeddings response is larger than %u bytes",
                      EMBED_RESPONSE_MAX);
    } else if (cc == CURLE_OPERATION_TIMEDOUT) {
        err = az_fail(msg, AZ_ERR_DEADLINE, "embeddings request timed out after %ld ms", timeout);
    } else if (cc != CURLE_OK) {
        err = az_fail(msg, AZ_ERR_UNAVAILABLE, "embeddings request failed: %s",
                      errbuf[0] ? errbuf : curl_easy_strerror(cc));
    } else if (status < 200 || status > 299) {
        /* The start of the body usually says why (bad model, bad key); never the key itself. */
        char snippet[160] = "";
        size_t k = 0;
        for (size_t i = 0; b.p && i < b.n && k + 1 < sizeof snippet; i++)
            snippet[k++] = (b.p[i] >= 0x20 && b.p[i] < 0x7f) ? b.p[i] : ' ';
        snippet[k] = '\0';
        err = az_fail(msg, status >= 500 || status == 429 ? AZ_ERR_UNAVAILABLE : AZ_ERR_INVALID,
                      "embeddings endpoint answered HTTP %ld: %s", status, snippet);
    } else {
        err = parse_embedding(b.p ? b.p : "", b.n, vec, dims, msg);
    }
out_body:
    free(b.p);
out:
    curl_easy_cleanup(h);
    curl_slist_free_all(headers);
    if (auth) {
        memset(auth, 0, strlen(auth));
        free(auth);
    }
    free(payload);
    free(url);
    return err;
}

/* real[] literal "{v1,v2,...}", malloc'd. */
static char *vector_literal(const float *v, size_t n)
{
    char *s = malloc(n * 18 + 3), *p = s;
    if (!s) return NULL;
    *p++ = '{';
    for (size_t i = 0; i < n; i++) p += sprintf(p, i ? ",%.9g" : "%.9g", (double)v[i]);
    *p++ = '}';
    *p = '\0';
    return s;
}

/* Parses a real[] in PostgreSQL's text form into v (n slots); the number of values, or -1 when
 * it does not hold exactly n. */
static long parse_vector(const char *s, float *v, size_t n)
{
    if (*s++ != '{') return -1;
    size_t k = 0;
    while (*s && *s != '}') {
        char *end;
        float x = strtof(s, &end);
        if (end == s || k >= n) return -1;
        v[k++] = x;
        s = end;
        if (*s == ',') s++;
    }
    return k == n ? (long)k : -1;
}

/* ---------------------------------------------------------------- helpers */

static az_err agent_exists(az_pg *pg, const az_ctx *ctx, const char *agent_id, char *msg)
{
    if (!agent_id || !az_text_is_uuid(agent_id))
        return az_fail(msg, AZ_ERR_NOT_FOUND, "agent %s not found", agent_id ? agent_id : "");
    az_arena *a = az_arena_new(0);
    if (!a) return az_fail(msg, AZ_ERR_NOMEM, "out of memory");
    Agentz__V1__Agent *g;
    az_err err = az_agent_get(pg, ctx, agent_id, a, &g, msg);
    az_arena_free(a);
    return err;
}

/* ---------------------------------------------------------------- add */

az_err az_memory_add(az_pg *pg, const az_ctx *ctx, const az_memory_config *cfg,
                     const char *agent_id, const char *task_id, const char *run_id,
                     const char *description, const char *output, char *msg)
{
    if (!agent_id || !az_text_is_uuid(agent_id))
        return az_fail(msg, AZ_ERR_INVALID, "agent_id: not a uuid");
    if (!task_id || !az_text_is_uuid(task_id))
        return az_fail(msg, AZ_ERR_INVALID, "task_id: not a uuid");
    if (run_id && *run_id && !az_text_is_uuid(run_id))
        return az_fail(msg, AZ_ERR_INVALID, "run_id: not a uuid");
    char summary[AZ_MEMORY_SUMMARY_MAX + 1];
    build_summary(description, output, summary);
    char id[37];
    if (az_text_uuid4(id) != AZ_OK) return az_fail(msg, AZ_ERR_IO, "cannot generate an id");

    char *vec_text = NULL;
    if (embeddings_on(cfg)) {
        float *v;
        size_t dims;
        char why[AZ_MSG_MAX];
        if (embed(cfg, ctx, summary, &v, &dims, why) == AZ_OK) {
            vec_text = vector_literal(v, dims);
            free(v);
        } else {
            az_warn("cannot embed the memory of agent %s (task %s), storing it without: %s", agent_id,
                    task_id, why);
        }
    }

    char cap[16];
    snprintf(cap, sizeof cap, "%d", AZ_MEMORY_MAX_PER_AGENT);
    const char *p[7] = {ctx->workspace_id, id, agent_id, task_id, run_id && *run_id ? run_id : NULL,
                        summary, vec_text};
    az_pgconn *c;
    az_err err = az_pg_acquire(pg, ctx, &c, msg);
    if (err != AZ_OK) {
        free(vec_text);
        return err;
    }
    /* One transaction: one commit to wait for, and no moment with more than the cap. */
    err = az_pg_begin(c, ctx, msg);
    if (err == AZ_OK)
        err = az_pg_exec(c, ctx,
                         "INSERT INTO agent_memory (workspace_id, id, agent_id, task_id, run_id,"
                         " summary, embedding) VALUES ($1, $2, $3, $4, $5, $6, $7::real[])",
                         7, p, NULL, msg);
    free(vec_text);
    if (err == AZ_ERR_PRECONDITION) {
        /* The foreign key: the agent was deleted while its task ran. */
        err = az_fail(msg, AZ_ERR_NOT_FOUND, "agent %s not found", agent_id);
    }
    if (err == AZ_OK) {
        /* Keep the newest AZ_MEMORY_MAX_PER_AGENT (concurrent adds for one agent may leave one
         * or two more, which the next add removes). */
        const char *q[3] = {ctx->workspace_id, agent_id, cap};
        err = az_pg_exec(c, ctx,
                         "DELETE FROM agent_memory WHERE workspace_id = $1 AND agent_id = $2"
                         " AND id IN (SELECT id FROM agent_memory WHERE workspace_id = $1"
                         " AND agent_id = $2 ORDER BY create_time DESC, id DESC OFFSET $3::integer)",
                         3, q, NULL, msg);
    }
    if (err == AZ_OK) err = az_pg_commit(c, ctx, msg);
    az_pg_release(c);
    return err;
}

/* ---------------------------------------------------------------- recall */

static int isalnum_ascii(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

static int stop_word(const char *w)
{
    static const char *const words[] = {
        "a", "an", "and", "are", "as", "at", "be", "by", "for", "from", "in", "into", "is", "it",
        "its", "of", "on", "or", "that", "the", "this", "to", "was", "with", "what", "your", "you",
    };
    for (size_t i = 0; i < sizeof words / sizeof *words; i++) {
        if (strcmp(w, words[i]) == 0) return 1;
    }
    return 0;
}

/* The words of query as a tsquery text "'w1' | 'w2' | ..." (into out, of n bytes): letters,
 * digits and non-ASCII characters, ASCII lowercased, stop words and repeats dropped, at most
 * QUERY_WORDS_MAX. The words hold no quote or backslash, so quoting needs no escaping. Empty
 * when the query has no words. */
static void query_words(const char *query, char *out, size_t n)
{
    char words[QUERY_WORDS_MAX][QUERY_WORD_MAX + 1];
    int nw = 0;
    const unsigned char *s = (const unsigned char *)(query ? query : "");
    out[0] = '\0';
    while (*s && nw < QUERY_WORDS_MAX) {
        char w[QUERY_WORD_MAX + 1];
        size_t k = 0;
        while (*s && (isalnum_ascii(*s) || *s >= 0x80)) {
            if (k < QUERY_WORD_MAX) w[k++] = (char)((*s >= 'A' && *s <= 'Z') ? *s + 32 : *s);
            s++;
        }
        if (k == 0) {
            s++;
            continue;
        }
        /* A word cut at QUERY_WORD_MAX may end inside a character: drop the partial one. */
        while (k > 0 && ((unsigned char)w[k - 1] & 0x80)) {
            size_t start = k - 1;
            while (start > 0 && ((unsigned char)w[start] & 0xC0) == 0x80) start--;
            if (az_text_utf8_valid(w + start, k - start)) break;
            k = start;
        }
        w[k] = '\0';
        if (k == 0 || stop_word(w) || !az_text_utf8_valid(w, k)) continue;
        int seen = 0;
        for (int i = 0; i < nw && !seen; i++) seen = strcmp(words[i], w) == 0;
        if (!seen) memcpy(words[nw++], w, k + 1);
    }
    size_t len = 0;
    for (int i = 0; i < nw; i++) {
        int m = snprintf(out + len, n - len, "%s'%s'", i ? " | " : "", words[i]);
        if (m < 0 || (size_t)m >= n - len) {
            out[len] = '\0';
            break;
        }
        len += (size_t)m;
    }
}

/* Keyword recall: entries ranked by how well their words match query's, then newest first,
 * skipping ids already chosen (a "{...}" uuid[] literal). Appends to out[*n..limit). */
static az_err recall_keywords(az_pgconn *c, const az_ctx *ctx, const char *agent_id,
                              const char *query, const char *exclude, int limit, az_arena *a,
                              char **out, size_t *n, char *msg)
{
    char words[QUERY_WORDS_MAX * (QUERY_WORD_MAX + 6) + 1];
    query_words(query, words, sizeof words);
    char lim[16];
    snprintf(lim, sizeof lim, "%d", limit - (int)*n);
    const char *p[5] = {ctx->workspace_id, agent_id, exclude, lim, words};
    PGresult *r;
    az_err err;
    if (words[0])
        err = az_pg_exec(c, ctx,
                         "SELECT summary FROM agent_memory WHERE workspace_id = $1 AND agent_id = $2"
                         " AND NOT (id = ANY ($3::uuid[]))"
                         " ORDER BY ts_rank(keywords, to_tsquery('simple', $5)) DESC,"
                         " create_time DESC, id DESC LIMIT $4::integer",
                         5, p, &r, msg);
    else
        err = az_pg_exec(c, ctx,
                         "SELECT summary FROM agent_memory WHERE workspace_id = $1 AND agent_id = $2"
                         " AND NOT (id = ANY ($3::uuid[]))"
                         " ORDER BY create_time DESC, id DESC LIMIT $4::integer",
                         4, p, &r, msg);
    if (err != AZ_OK) return err;
    for (int i = 0; i < PQntuples(r) && *n < (size_t)limit; i++) {
        if (!(out[*n] = az_arena_strndup(a, PQgetvalue(r, i, 0), (size_t)PQgetlength(r, i, 0)))) {
            PQclear(r);
            return az_fail(msg, AZ_ERR_NOMEM, "out of memory");
        }
        (*n)++;
    }
    PQclear(r);
    return AZ_OK;
}

typedef struct scored {
    double score;
    int row;
} scored;

static int by_score(const void *x, const void *y)
{
    const scored *a = x, *b = y;
    if (a->score != b->score) return a->score < b->score ? 1 : -1;
    return a->row - b->row; /* ties: the newer (earlier row) first */
}

/* Similarity recall: cosine similarity between q and the embeddings of the agent's most recent
 * RECALL_SCAN_MAX entries (those of another dimension, from an earlier model, are skipped).
 * Fills out[0..limit) and *exclude (a uuid[] literal of the chosen ids, in arena). */
static az_err recall_similar(az_pgconn *c, const az_ctx *ctx, const char *agent_id, const float *q,
                             size_t dims, int limit, az_arena *a, char **out, size_t *n,
                             char **exclude, char *msg)
{
    char scan[16];
    snprintf(scan, sizeof scan, "%d", RECALL_SCAN_MAX);
    const char *p[3] = {ctx->workspace_id, agent_id, scan};
    PGresult *r;
    az_err err = az_pg_exec(c, ctx,
                            "SELECT id::text, summary, embedding::text FROM agent_memory"
                            " WHERE workspace_id = $1 AND agent_id = $2 AND embedding IS NOT NULL"
                            " ORDER BY create_time DESC, id DESC LIMIT $3::integer",
                            3, p, &r, msg);
    if (err != AZ_OK) return err;
    int rows = PQntuples(r);
    scored *s = malloc((size_t)(rows ? rows : 1) * sizeof *s);
    float *v = malloc(dims * sizeof *v);
    if (!s || !v) {
        free(s);
        free(v);
        PQclear(r);
        return az_fail(msg, AZ_ERR_NOMEM, "out of memory");
    }
    double qn = 0;
    for (size_t i = 0; i < dims; i++) qn += (double)q[i] * q[i];
    qn = sqrt(qn);
    int m = 0;
    for (int i = 0; i < rows && qn > 0; i++) {
        if (parse_vector(PQgetvalue(r, i, 2), v, dims) < 0) continue;
        double dot = 0, vn = 0;
        for (size_t k = 0; k < dims; k++) {
            dot += (double)q[k] * v[k];
            vn += (double)v[k] * v[k];
        }
        if (vn <= 0 || !isfinite(dot) || !isfinite(vn)) continue;
        s[m++] = (scored){dot / (qn * sqrt(vn)), i};
    }
    qsort(s, (size_t)m, sizeof *s, by_score);
    size_t ex_cap = 3 + (size_t)limit * 37;
    char *ex = az_arena_alloc(a, ex_cap);
    if (!ex) err = az_fail(msg, AZ_ERR_NOMEM, "out of memory");
    size_t ex_len = 0;
    if (ex) ex[ex_len++] = '{';
    for (int i = 0; i < m && *n < (size_t)limit && err == AZ_OK; i++) {
        int row = s[i].row;
        if (!(out[*n] = az_arena_strndup(a, PQgetvalue(r, row, 1), (size_t)PQgetlength(r, row, 1)))) {
            err = az_fail(msg, AZ_ERR_NOMEM, "out of memory");
            break;
        }
        ex_len += (size_t)snprintf(ex + ex_len, ex_cap - ex_len, "%s%s", *n ? "," : "",
                                   PQgetvalue(r, row, 0));
        (*n)++;
    }
    if (ex) {
        ex[ex_len++] = '}';
        ex[ex_len] = '\0';
    }
    *exclude = ex;
    free(s);
    free(v);
    PQclear(r);
    return err;
}

az_err az_memory_recall(az_pg *pg, const az_ctx *ctx, const az_memory_config *cfg,
                        const char *agent_id, const char *query, int limit, az_arena *arena,
                        char ***summaries, size_t *n, char *msg)
{
    *summaries = NULL;
    *n = 0;
    if (!agent_id || !az_text_is_uuid(agent_id))
        return az_fail(msg, AZ_ERR_INVALID, "agent_id: not a uuid");
    if (limit <= 0) return AZ_OK;
    if (limit > RECALL_LIMIT_MAX) limit = RECALL_LIMIT_MAX;
    char **out = az_arena_alloc(arena, (size_t)limit * sizeof *out);
    if (!out) return az_fail(msg, AZ_ERR_NOMEM, "out of memory");

    float *q = NULL;
    size_t dims = 0;
    if (embeddings_on(cfg) && query && *query) {
        char why[AZ_MSG_MAX];
        if (embed(cfg, ctx, query, &q, &dims, why) != AZ_OK) {
            az_warn("cannot embed the recall query of agent %s, recalling by keywords: %s", agent_id,
                    why);
            q = NULL;
        }
    }
    az_pgconn *c;
    az_err err = az_pg_acquire(pg, ctx, &c, msg);
    if (err != AZ_OK) {
        free(q);
        return err;
    }
    char *exclude = "{}";
    if (q) err = recall_similar(c, ctx, agent_id, q, dims, limit, arena, out, n, &exclude, msg);
    /* Entries stored without an embedding (endpoint down, or configured later) still count:
     * they fill what similarity left. */
    if (err == AZ_OK && *n < (size_t)limit)
        err = recall_keywords(c, ctx, agent_id, query, exclude, limit, arena, out, n, msg);
    az_pg_release(c);
    free(q);
    if (err != AZ_OK) {
        *n = 0;
        return err;
    }
    *summaries = out;
    return AZ_OK;
}

/* ---------------------------------------------------------------- list and clear */

static unsigned long list_hash(const char *agent_id, const char *query)
{
    unsigned long h = az_pagetoken_hash(AZ_PAGETOKEN_HASH_INIT, agent_id);
    h = az_pagetoken_hash(h, "|");
    return az_pagetoken_hash(h, query);
}

az_err az_memory_list(az_pg *pg, const az_ctx *ctx, const char *agent_id, const char *query,
                      int page_size, const char *page_token, az_arena *a,
                      Agentz__V1__AgentMemory **out, char *msg)
{
    *out = NULL;
    if (!query) query = "";
    if (page_size < 1) page_size = 1;
    unsigned long hash = list_hash(agent_id, query);
    long long after_us = 0;
    char after_id[37] = "";
    if (page_token && *page_token) {
        char raw[AZ_PAGETOKEN_RAW_MAX + 1];
        az_err e = az_pagetoken_decode(page_token, raw, msg);
        if (e != AZ_OK) return e;
        unsigned long th;
        char idbuf[40];
        if (sscanf(raw, "m1|%lx|%lld|%39s", &th, &after_us, idbuf) != 3 || !az_text_is_uuid(idbuf))
            return az_fail(msg, AZ_ERR_INVALID, "page_token is invalid");
        if (th != hash)
            return az_fail(msg, AZ_ERR_INVALID,
                           "page_token was issued for a different agent_id or query");
        memcpy(after_id, idbuf, 37);
    }
    az_err err = agent_exists(pg, ctx, agent_id, msg);
    if (err != AZ_OK) return err;

    char after[24], limit[16];
    snprintf(after, sizeof after, "%lld", after_us);
    snprintf(limit, sizeof limit, "%d", page_size + 1);
    const char *p[6] = {ctx->workspace_id, agent_id, query, after_id[0] ? after : NULL,
                        after_id[0] ? after_id : NULL, limit};
    az_pgconn *c;
    if ((err = az_pg_acquire(pg, ctx, &c, msg)) != AZ_OK) return err;
    PGresult *r;
    err = az_pg_exec(
        c, ctx,
        "SELECT id::text, task_id::text, COALESCE(run_id::text, ''), summary,"
        " (extract(epoch FROM create_time) * 1000000)::bigint FROM agent_memory"
        " WHERE workspace_id = $1 AND agent_id = $2"
        " AND ($3 = '' OR strpos(lower(summary), lower($3)) > 0)"
        " AND ($4::bigint IS NULL OR (create_time, id) <"
        "  (timestamptz 'epoch' + $4::bigint * interval '1 microsecond', $5::uuid))"
        " ORDER BY create_time DESC, id DESC LIMIT $6::integer",
        6, p, &r, msg);
    az_pg_release(c);
    if (err != AZ_OK) return err;
    int rows = PQntuples(r), n = rows > page_size ? page_size : rows;
    Agentz__V1__AgentMemory *m = az_arena_alloc(a, sizeof *m);
    int oom = !m;
    if (!oom) {
        agentz__v1__agent_memory__init(m);
        m->entries = az_arena_alloc(a, (size_t)(n ? n : 1) * sizeof *m->entries);
        oom = !m->entries;
    }
    for (int i = 0; i < n && !oom; i++) {
        Agentz__V1__MemoryEntry *e = az_arena_alloc(a, sizeof *e);
        if (!e) {
            oom = 1;
            break;
        }
        agentz__v1__memory_entry__init(e);
        e->id = az_arena_strdup(a, PQgetvalue(r, i, 0));
        e->task_id = az_arena_strdup(a, PQgetvalue(r, i, 1));
        e->run_id = az_arena_strdup(a, PQgetvalue(r, i, 2));
        e->summary = az_arena_strndup(a, PQgetvalue(r, i, 3), (size_t)PQgetlength(r, i, 3));
        e->create_time = az_pbtime_timestamp(a, atoll(PQgetvalue(r, i, 4)));
        if (!e->id || !e->task_id || !e->run_id || !e->summary || !e->create_time) oom = 1;
        m->entries[m->n_entries++] = e;
    }
    if (!oom && rows > page_size) {
        char raw[AZ_PAGETOKEN_RAW_MAX + 1];
        snprintf(raw, sizeof raw, "m1|%lx|%s|%s", hash, PQgetvalue(r, n - 1, 4),
                 PQgetvalue(r, n - 1, 0));
        if (!(m->next_page_token = az_pagetoken_encode(a, raw))) oom = 1;
    }
    PQclear(r);
    if (oom) return az_fail(msg, AZ_ERR_NOMEM, "out of memory");
    *out = m;
    return AZ_OK;
}

az_err az_memory_clear(az_pg *pg, const az_ctx *ctx, const char *agent_id, int64_t *removed,
                       char *msg)
{
    if (removed) *removed = 0;
    az_err err = agent_exists(pg, ctx, agent_id, msg);
    if (err != AZ_OK) return err;
    const char *p[2] = {ctx->workspace_id, agent_id};
    az_pgconn *c;
    if ((err = az_pg_acquire(pg, ctx, &c, msg)) != AZ_OK) return err;
    PGresult *r;
    err = az_pg_exec(c, ctx, "DELETE FROM agent_memory WHERE workspace_id = $1 AND agent_id = $2", 2,
                     p, &r, msg);
    az_pg_release(c);
    if (err != AZ_OK) return err;
    if (removed) *removed = atoll(PQcmdTuples(r));
    PQclear(r);
    return AZ_OK;
}
