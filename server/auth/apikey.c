/* API keys in PostgreSQL: minting (256 bits from getrandom, shown once), lookup by SHA-256 hash
 * with a constant-time confirmation, revocation, expiry, and a last-use time written at most once
 * a minute. The key text itself is never stored or logged. */
#include "apikey.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/time.h>

#include "auth/workspace.h"
#include "core/b64.h"
#include "core/log.h"
#include "core/pagetoken.h"
#include "core/pbtime.h"
#include "core/text.h"
#include "google/protobuf/timestamp.pb-c.h"
#include "store/idem.h"

#define KEY_BYTES 32
#define KEY_B64_LEN 43 /* base64url of 32 bytes, no padding */
#define KEY_LEN (sizeof AZ_APIKEY_PREFIX - 1 + KEY_B64_LEN)
#define VISIBLE_LEN 8
#define NAME_MAX_CHARS 128
#define VERIFY_MS 5000
#define BAD_KEY "api key is unknown, revoked or expired"
#define CACHE_SLOTS 1024 /* direct-mapped by the hash's first hex digits */

#define COLS                                                                                     \
    "id::text, name, role, prefix,"                                                              \
    " (extract(epoch FROM create_time) * 1000000)::bigint,"                                      \
    " (extract(epoch FROM expire_time) * 1000000)::bigint,"                                      \
    " (extract(epoch FROM last_use_time) * 1000000)::bigint,"                                    \
    " (extract(epoch FROM revoke_time) * 1000000)::bigint,"                                      \
    " workspace_id::text, create_time::text"

enum { C_ID, C_NAME, C_ROLE, C_PREFIX, C_CREATE, C_EXPIRE, C_LAST_USE, C_REVOKE, C_WORKSPACE, C_CREATE_TEXT };

/* ---------------------------------------------------------------- encoding */

static void sha256_hex(const char *s, char hex[65])
{
    unsigned char md[32];
    unsigned int len = 0;
    EVP_Digest(s, strlen(s), md, &len, EVP_sha256(), NULL);
    for (int i = 0; i < 32; i++) snprintf(hex + 2 * i, 3, "%02x", md[i]);
}

/* "agz_" + exactly 43 base64url characters. Checked before any database work. */
static int well_formed(const char *key)
{
    if (!key || strlen(key) != KEY_LEN || strncmp(key, AZ_APIKEY_PREFIX, sizeof AZ_APIKEY_PREFIX - 1))
        return 0;
    for (const char *s = key + sizeof AZ_APIKEY_PREFIX - 1; *s; s++) {
        if (!strchr(AZ_B64URL_ALPHABET, *s)) return 0;
    }
    return 1;
}

/* ---------------------------------------------------------------- rows */

static Google__Protobuf__Timestamp *timestamp_us(az_arena *a, const PGresult *r, int row, int col)
{
    return PQgetisnull(r, row, col) ? NULL : az_pbtime_timestamp(a, atoll(PQgetvalue(r, row, col)));
}

static az_err from_row(const PGresult *r, int row, az_arena *a, Agentz__V1__ApiKey **out, char *msg)
{
    Agentz__V1__ApiKey *k = az_arena_alloc(a, sizeof *k);
    if (!k) return az_fail(msg, AZ_ERR_NOMEM, "out of memory");
    agentz__v1__api_key__init(k);
    k->id = az_arena_strdup(a, PQgetvalue(r, row, C_ID));
    k->name = az_arena_strdup(a, PQgetvalue(r, row, C_NAME));
    k->role = (Agentz__V1__Role)atoi(PQgetvalue(r, row, C_ROLE));
    k->prefix = az_arena_printf(a, AZ_APIKEY_PREFIX "%s", PQgetvalue(r, row, C_PREFIX));
    k->create_time = timestamp_us(a, r, row, C_CREATE);
    k->expire_time = timestamp_us(a, r, row, C_EXPIRE);
    k->last_use_time = timestamp_us(a, r, row, C_LAST_USE);
    k->revoke_time = timestamp_us(a, r, row, C_REVOKE);
    k->workspace_id = az_arena_strdup(a, PQgetvalue(r, row, C_WORKSPACE));
    if (!k->id || !k->name || !k->prefix || !k->create_time || !k->workspace_id ||
        (!PQgetisnull(r, row, C_EXPIRE) && !k->expire_time) ||
        (!PQgetisnull(r, row, C_LAST_USE) && !k->last_use_time) ||
        (!PQgetisnull(r, row, C_REVOKE) && !k->revoke_time))
        return az_fail(msg, AZ_ERR_NOMEM, "out of memory");
    *out = k;
    return AZ_OK;
}

static int64_t now_us(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (int64_t)tv.tv_sec * 1000000 + tv.tv_usec;
}

static az_err check_input(const char *name, int role, int64_t expire_us, char *msg)
{
    az_err err = az_text_check("name", name, NAME_MAX_CHARS, AZ_TEXT_REQUIRED, msg);
    if (err != AZ_OK) return err;
    if (role < AGENTZ__V1__ROLE__ROLE_VIEWER || role > AGENTZ__V1__ROLE__ROLE_OWNER)
        return az_fail(msg, AZ_ERR_INVALID, "role: must be ROLE_VIEWER, ROLE_EDITOR, ROLE_ADMIN or ROLE_OWNER");
    if (expire_us < 0 || (expire_us > 0 && expire_us <= now_us()))
        return az_fail(msg, AZ_ERR_INVALID, "expire_time: must be in the future");
    return AZ_OK;
}

/* ---------------------------------------------------------------- create */

static az_err fetch_one(az_pgconn *c, const az_ctx *ctx, const char *id, az_arena *a,
                        Agentz__V1__ApiKey **out, char *msg)
{
    const char *p[2] = {ctx->workspace_id, id};
    PGresult *r;
    az_err err = az_pg_exec(c, ctx, "SELECT " COLS " FROM api_keys WHERE workspace_id = $1 AND id = $2",
                            2, p, &r, msg);
    if (err != AZ_OK) return err;
    if (PQntuples(r) == 0) err = az_fail(msg, AZ_ERR_NOT_FOUND, "api key %s not found", id);
    else err = from_row(r, 0, a, out, msg);
    PQclear(r);
    return err;
}

/* Mints the key text, inserts its hash, and returns both. */
static az_err insert_key(az_pgconn *c, const az_ctx *ctx, const char *id, const char *name, int role,
                         int64_t expire_us, az_arena *a, Agentz__V1__ApiKey **out, char **secret,
                         char *msg)
{
    unsigned char raw[KEY_BYTES];
    if (getrandom(raw, sizeof raw, 0) != (ssize_t)sizeof raw)
        return az_fail(msg, AZ_ERR_IO, "cannot read random bytes for an api key");
    char *key = az_arena_alloc(a, KEY_LEN + 1);
    if (!key) return az_fail(msg, AZ_ERR_NOMEM, "out of memory");
    memcpy(key, AZ_APIKEY_PREFIX, sizeof AZ_APIKEY_PREFIX - 1);
    az_b64url_encode(raw, sizeof raw, key + sizeof AZ_APIKEY_PREFIX - 1);
    OPENSSL_cleanse(raw, sizeof raw);
    char hash[65], visible[VISIBLE_LEN + 1], role_s[8], expire[24];
    sha256_hex(key, hash);
    memcpy(visible, key + sizeof AZ_APIKEY_PREFIX - 1, VISIBLE_LEN);
    visible[VISIBLE_LEN] = '\0';
    snprintf(role_s, sizeof role_s, "%d", role);
    snprintf(expire, sizeof expire, "%lld", (long long)expire_us);
    const char *p[7] = {ctx->workspace_id, id, name, role_s, visible, hash, expire_us ? expire : NULL};
    PGresult *r;
    az_err err = az_pg_exec(c, ctx,
                            "INSERT INTO api_keys (workspace_id, id, name, role, prefix, hash, expire_time)"
                            " VALUES ($1, $2, $3, $4, $5, $6,"
                            " timestamptz 'epoch' + $7::bigint * interval '1 microsecond')"
                            " RETURNING " COLS,
                            7, p, &r, msg);
    if (err != AZ_OK) return err;
    err = from_row(r, 0, a, out, msg);
    PQclear(r);
    if (err == AZ_OK) *secret = key;
    return err;
}

/* SHA-256 over what makes two CreateApiKey requests the same. */
static void request_hash(const char *name, int role, int64_t expire_us, char hex[65])
{
    char buf[NAME_MAX_CHARS * 4 + 64];
    snprintf(buf, sizeof buf, "%d|%lld|%s", role, (long long)expire_us, name);
    sha256_hex(buf, hex);
}

/* With ctx->request_id set (the API layer passes CreateApiKeyRequest.request_id there) the call is
 * idempotent for 24 hours: a retry returns the first key's description with an empty *secret,
 * since the key text was never stored. */
az_err az_apikey_create(az_pg *pg, const az_ctx *ctx, const char *name, int role, int64_t expire_us,
                        az_arena *a, Agentz__V1__ApiKey **out, char **secret, char *msg)
{
    *out = NULL;
    *secret = NULL;
    az_err err = check_input(name, role, expire_us, msg);
    if (err != AZ_OK) return err;
    if (!ctx->workspace_id || !az_text_is_uuid(ctx->workspace_id))
        return az_fail(msg, AZ_ERR_INVALID, "workspace: an api key needs a workspace");
    char id[37];
    if (az_text_uuid4(id) != AZ_OK) return az_fail(msg, AZ_ERR_IO, "cannot generate an id");
    az_pgconn *c;
    if ((err = az_pg_acquire(pg, ctx, &c, msg)) != AZ_OK) return err;
    if (!ctx->request_id || !*ctx->request_id) {
        err = insert_key(c, ctx, id, name, role, expire_us, a, out, secret, msg);
        goto out;
    }
    if ((err = az_pg_begin(c, ctx, msg)) != AZ_OK) goto out;
    char hash[65], existing[37];
    request_hash(name, role, expire_us, hash);
    err = az_idem_claim(c, ctx, "CreateApiKey", ctx->request_id, hash, id, existing, msg);
    if (err != AZ_OK) goto out;
    if (existing[0]) {
        err = fetch_one(c, ctx, existing, a, out, msg);
        if (err == AZ_OK && !(*secret = az_arena_strdup(a, "")))
            err = az_fail(msg, AZ_ERR_NOMEM, "out of memory");
    } else {
        err = insert_key(c, ctx, id, name, role, expire_us, a, out, secret, msg);
    }
    if (err == AZ_OK) err = az_pg_commit(c, ctx, msg);
out:
    if (err != AZ_OK) {
        *out = NULL;
        *secret = NULL;
    }
    az_pg_release(c);
    return err;
}

az_err az_apikey_create_in(az_pg *pg, const char *workspace_id, const char *name, int role,
                           int64_t expire_us, az_arena *a, Agentz__V1__ApiKey **out, char **secret,
                           char *msg)
{
    *out = NULL;
    *secret = NULL;
    az_err err = check_input(name, role, expire_us, msg);
    if (err != AZ_OK) return err;
    if ((err = az_workspace_ensure(pg, workspace_id, NULL, msg)) != AZ_OK) return err;
    az_ctx ctx = {.workspace_id = workspace_id, .principal = "", .request_id = "",
                  .deadline_ms = az_now_ms() + VERIFY_MS};
    return az_apikey_create(pg, &ctx, name, role, expire_us, a, out, secret, msg);
}

/* ---------------------------------------------------------------- list */

/* The token is az_pagetoken("k1|<create_time text>|<id>"); ListApiKeys has no filters to bind.
 * NULL when out of memory. */
static char *encode_token(az_arena *a, const char *ts, const char *id)
{
    char raw[AZ_PAGETOKEN_RAW_MAX + 1];
    int n = snprintf(raw, sizeof raw, "k1|%s|%s", ts, id);
    if (n < 0 || (size_t)n >= sizeof raw) return NULL;
    return az_pagetoken_encode(a, raw);
}

static az_err decode_token(const char *token, char ts[64], char id[37], char *msg)
{
    char raw[AZ_PAGETOKEN_RAW_MAX + 1];
    az_err err = az_pagetoken_decode(token, raw, msg);
    if (err != AZ_OK) return err;
    char tsbuf[64], idbuf[40];
    if (sscanf(raw, "k1|%63[^|]|%39s", tsbuf, idbuf) != 2 || !az_text_is_uuid(idbuf))
        return az_fail(msg, AZ_ERR_INVALID, "page_token is invalid");
    memcpy(ts, tsbuf, sizeof tsbuf);
    memcpy(id, idbuf, 37);
    return AZ_OK;
}

az_err az_apikey_list(az_pg *pg, const az_ctx *ctx, int page_size, const char *page_token,
                      az_arena *a, Agentz__V1__ListApiKeysResponse **out, char *msg)
{
    *out = NULL;
    if (page_size < 1) page_size = 1;
    char ts[64] = "", after[37] = "", limit[16];
    az_err err;
    if (page_token && *page_token && (err = decode_token(page_token, ts, after, msg)) != AZ_OK)
        return err;
    snprintf(limit, sizeof limit, "%d", page_size + 1);
    const char *p[4] = {ctx->workspace_id, ts[0] ? ts : NULL, after[0] ? after : NULL, limit};
    az_pgconn *c;
    if ((err = az_pg_acquire(pg, ctx, &c, msg)) != AZ_OK) return err;
    PGresult *r;
    err = az_pg_exec(c, ctx,
                     "SELECT " COLS " FROM api_keys WHERE workspace_id = $1"
                     " AND ($2::timestamptz IS NULL OR (create_time, id) < ($2::timestamptz, $3::uuid))"
                     " ORDER BY create_time DESC, id DESC LIMIT $4::integer",
                     4, p, &r, msg);
    az_pg_release(c);
    if (err != AZ_OK) return err;
    int rows = PQntuples(r), n = rows > page_size ? page_size : rows;
    Agentz__V1__ListApiKeysResponse *resp = az_arena_alloc(a, sizeof *resp);
    if (resp) {
        agentz__v1__list_api_keys_response__init(resp);
        resp->api_keys = az_arena_alloc(a, (size_t)(n ? n : 1) * sizeof *resp->api_keys);
    }
    if (!resp || !resp->api_keys) err = az_fail(msg, AZ_ERR_NOMEM, "out of memory");
    for (int i = 0; i < n && err == AZ_OK; i++) err = from_row(r, i, a, &resp->api_keys[i], msg);
    if (err == AZ_OK) {
        resp->n_api_keys = (size_t)n;
        if (rows > page_size &&
            !(resp->next_page_token = encode_token(a, PQgetvalue(r, n - 1, C_CREATE_TEXT),
                                                   PQgetvalue(r, n - 1, C_ID))))
            err = az_fail(msg, AZ_ERR_NOMEM, "out of memory");
    }
    PQclear(r);
    if (err == AZ_OK) *out = resp;
    return err;
}

/* ---------------------------------------------------------------- the verification cache
 *
 * Every authenticated call used to look its key up in PostgreSQL: a round trip and, because the
 * lookup is cross-workspace system work, a switch of the pooled session's settings before the
 * call's own statements (docs/performance.md, the third pass of issue 12). Keys that verified
 * are remembered by hash for cache_ms, never past their expiry; revoking through this process
 * forgets them at once, other processes within cache_ms. Failures are never cached. */
typedef struct cached_key {
    char hash[65]; /* "" = empty slot */
    az_apikey_identity id;
    int64_t until_ms; /* monotonic */
} cached_key;

static pthread_mutex_t cache_mu = PTHREAD_MUTEX_INITIALIZER;
static cached_key cache[CACHE_SLOTS];
static atomic_int cache_ms = AZ_APIKEY_CACHE_MS_DEFAULT;

void az_apikey_set_cache_ms(int ms)
{
    atomic_store(&cache_ms, ms > 0 ? ms : 0);
    pthread_mutex_lock(&cache_mu);
    memset(cache, 0, sizeof cache);
    pthread_mutex_unlock(&cache_mu);
}

static cached_key *slot(const char *hash)
{
    unsigned v = 0;
    for (int i = 0; i < 4; i++) v = v * 16 + (unsigned)(hash[i] <= '9' ? hash[i] - '0' : hash[i] - 'a' + 10);
    return &cache[v % CACHE_SLOTS];
}

static int cache_get(const char *hash, az_apikey_identity *out)
{
    if (atomic_load(&cache_ms) == 0) return 0;
    pthread_mutex_lock(&cache_mu);
    cached_key *e = slot(hash);
    int hit = e->hash[0] && CRYPTO_memcmp(e->hash, hash, 64) == 0 && az_now_ms() < e->until_ms;
    if (hit) *out = e->id;
    pthread_mutex_unlock(&cache_mu);
    return hit;
}

/* left_ms: until the key expires (-1: never). */
static void cache_put(const char *hash, const az_apikey_identity *id, int64_t left_ms)
{
    int64_t ttl = atomic_load(&cache_ms);
    if (ttl == 0) return;
    if (left_ms >= 0 && left_ms < ttl) ttl = left_ms;
    pthread_mutex_lock(&cache_mu);
    cached_key *e = slot(hash);
    memcpy(e->hash, hash, 65);
    e->id = *id;
    e->until_ms = az_now_ms() + ttl;
    pthread_mutex_unlock(&cache_mu);
}

static void cache_forget(const char *key_id)
{
    pthread_mutex_lock(&cache_mu);
    for (size_t i = 0; i < CACHE_SLOTS; i++)
        if (cache[i].hash[0] && strcmp(cache[i].id.key_id, key_id) == 0) memset(&cache[i], 0, sizeof cache[i]);
    pthread_mutex_unlock(&cache_mu);
}

/* ---------------------------------------------------------------- revoke and verify */

az_err az_apikey_revoke(az_pg *pg, const az_ctx *ctx, const char *id, char *msg)
{
    if (!id || !az_text_is_uuid(id)) return az_fail(msg, AZ_ERR_NOT_FOUND, "api key %.40s not found", id ? id : "");
    az_pgconn *c;
    az_err err = az_pg_acquire(pg, ctx, &c, msg);
    if (err != AZ_OK) return err;
    const char *p[2] = {ctx->workspace_id, id};
    PGresult *r;
    /* coalesce keeps the first revocation time: revoking twice succeeds and changes nothing. */
    err = az_pg_exec(c, ctx,
                     "UPDATE api_keys SET revoke_time = coalesce(revoke_time, clock_timestamp())"
                     " WHERE workspace_id = $1 AND id = $2",
                     2, p, &r, msg);
    if (err == AZ_OK) {
        if (atoi(PQcmdTuples(r)) == 0) err = az_fail(msg, AZ_ERR_NOT_FOUND, "api key %s not found", id);
        PQclear(r);
    }
    az_pg_release(c);
    if (err == AZ_OK) cache_forget(id);
    return err;
}

az_err az_apikey_verify(az_pg *pg, const char *secret, az_apikey_identity *out, char *msg)
{
    memset(out, 0, sizeof *out);
    if (!well_formed(secret)) return az_fail(msg, AZ_ERR_UNAUTHENTICATED, BAD_KEY);
    char hash[65];
    sha256_hex(secret, hash);
    if (cache_get(hash, out)) return AZ_OK;
    /* The key's workspace is what we are looking for: a cross-workspace (system) lookup. */
    az_ctx ctx = {.deadline_ms = az_now_ms() + VERIFY_MS};
    az_pgconn *c;
    az_err err = az_pg_acquire(pg, &ctx, &c, msg);
    if (err != AZ_OK) return err;
    const char *p[1] = {hash};
    PGresult *r;
    err = az_pg_exec(c, &ctx,
                     "SELECT id::text, workspace_id::text, role, hash,"
                     " revoke_time IS NULL AND (expire_time IS NULL OR expire_time > now()),"
                     " last_use_time IS NULL OR last_use_time < now() - interval '1 minute',"
                     " COALESCE((extract(epoch FROM expire_time - now()) * 1000)::bigint, -1)"
                     " FROM api_keys WHERE hash = $1",
                     1, p, &r, msg);
    if (err != AZ_OK) {
        az_pg_release(c);
        return err;
    }
    /* The index found the row by hash; confirm it without a data-dependent early exit. */
    int ok = PQntuples(r) == 1 && PQgetlength(r, 0, 3) == 64 &&
             CRYPTO_memcmp(PQgetvalue(r, 0, 3), hash, 64) == 0 && PQgetvalue(r, 0, 4)[0] == 't';
    int stale = ok && PQgetvalue(r, 0, 5)[0] == 't';
    int64_t left_ms = ok ? atoll(PQgetvalue(r, 0, 6)) : 0;
    if (ok) {
        snprintf(out->key_id, sizeof out->key_id, "%s", PQgetvalue(r, 0, 0));
        snprintf(out->workspace_id, sizeof out->workspace_id, "%s", PQgetvalue(r, 0, 1));
        out->role = atoi(PQgetvalue(r, 0, 2));
        cache_put(hash, out, left_ms);
    }
    PQclear(r);
    if (stale) {
        char m[AZ_MSG_MAX];
        const char *q[2] = {out->workspace_id, out->key_id};
        /* Losing this write is harmless: the next call a minute later tries again. */
        if (az_pg_exec(c, &ctx,
                       "UPDATE api_keys SET last_use_time = now() WHERE workspace_id = $1 AND id = $2"
                       " AND (last_use_time IS NULL OR last_use_time < now() - interval '1 minute')",
                       2, q, NULL, m) != AZ_OK)
            az_warn("cannot record last use of api key %s: %s", out->key_id, m);
    }
    az_pg_release(c);
    if (!ok) {
        memset(out, 0, sizeof *out);
        return az_fail(msg, AZ_ERR_UNAUTHENTICATED, BAD_KEY);
    }
    return AZ_OK;
}
