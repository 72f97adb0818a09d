/* CUnit suite for server/auth/apikey.c, workspace.c and the local admin key (daemon/admin.c)
 * against a throwaway embedded PostgreSQL: key format, hash-only storage, verification, revocation,
 * expiry, last-use throttling, pagination, idempotency, workspace resolution. */
#include <CUnit/Basic.h>
#include <ftw.h>
#include <libpq-fe.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#include "auth/apikey.h"
#include "auth/workspace.h"
#include "core/log.h"
#include "core/text.h"
#include "daemon/admin.h"
#include "embed/embedded.h"
#include "store/migrate.h"

static char tmpdir[64];
static az_embed *embed;
static az_pg *pg;
static az_arena *arena;
static char msg[AZ_MSG_MAX];

/* ---------------------------------------------------------------- helpers */

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    remove(path);
    return 0;
}

/* Runs sql with up to 2 text parameters; returns the first value as a malloc'd string ("" for
 * no rows), or NULL on error. */
static char *query(const char *sql, const char *p1, const char *p2)
{
    az_ctx ctx = {.deadline_ms = -1};
    az_pgconn *c;
    char m[AZ_MSG_MAX];
    if (az_pg_acquire(pg, &ctx, &c, m) != AZ_OK) return NULL;
    const char *p[2] = {p1, p2};
    PGresult *r = NULL;
    char *v = NULL;
    if (az_pg_exec(c, &ctx, sql, p2 ? 2 : p1 ? 1 : 0, p, &r, m) == AZ_OK)
        v = strdup(PQntuples(r) && PQnfields(r) ? PQgetvalue(r, 0, 0) : "");
    else
        fprintf(stderr, "\n  %s: %s\n", sql, m);
    PQclear(r);
    az_pg_release(c);
    return v;
}

static long query_long(const char *sql, const char *p1, const char *p2)
{
    char *v = query(sql, p1, p2);
    long n = v ? atol(v) : -1;
    free(v);
    return n;
}

static int64_t now_us(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (int64_t)tv.tv_sec * 1000000 + tv.tv_usec;
}

static az_ctx ctx_in(const char *ws) { return (az_ctx){.workspace_id = ws, .principal = "", .request_id = "", .deadline_ms = -1}; }

static void sha256_hex(const char *s, char hex[65])
{
    unsigned char md[32];
    unsigned int len;
    EVP_Digest(s, strlen(s), md, &len, EVP_sha256(), NULL);
    for (int i = 0; i < 32; i++) snprintf(hex + 2 * i, 3, "%02x", md[i]);
}

/* A fresh workspace for one test, so tests never see each other's keys. */
static const char *fresh_workspace(void)
{
    static char ids[32][37];
    static int n;
    char *id = ids[n++ % 32];
    az_text_uuid4(id);
    CU_ASSERT_EQUAL(az_workspace_ensure(pg, id, "test", msg), AZ_OK);
    return id;
}

/* ---------------------------------------------------------------- suite setup */

static int suite_init(void)
{
    az_log_set_level(AZ_LOG_ERROR);
    snprintf(tmpdir, sizeof tmpdir, "/tmp/aztest-apikey-XXXXXX");
    if (!mkdtemp(tmpdir) || chmod(tmpdir, 0755) != 0) return 1;
    char data[128];
    snprintf(data, sizeof data, "%s/data", tmpdir);
    if (az_embed_start(data, &embed, msg) != AZ_OK) {
        fprintf(stderr, "cannot start embedded servers: %s\n", msg);
        return 1;
    }
    if (az_pg_new(az_embed_database_url(embed), 4, 10000, &pg, msg) != AZ_OK ||
        az_migrate(pg, az_migrations, az_migrations_count, NULL, msg) != AZ_OK) {
        fprintf(stderr, "cannot prepare database: %s\n", msg);
        return 1;
    }
    arena = az_arena_new(0);
    /* The tests change keys behind the module's back and expect it to notice: no cache, except
     * in the test of the cache. */
    az_apikey_set_cache_ms(0);
    return arena ? 0 : 1;
}

static void suite_clean(void)
{
    az_arena_free(arena);
    az_pg_free(pg);
    az_embed_stop(embed);
    if (tmpdir[0]) nftw(tmpdir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* ---------------------------------------------------------------- tests */

static void test_create_format_and_storage(void)
{
    az_ctx ctx = ctx_in(fresh_workspace());
    Agentz__V1__ApiKey *k;
    char *secret;
    CU_ASSERT_EQUAL_FATAL(az_apikey_create(pg, &ctx, "ci", 2, 0, arena, &k, &secret, msg), AZ_OK);
    CU_ASSERT_EQUAL(strlen(secret), 4 + 43);
    CU_ASSERT_EQUAL(strncmp(secret, "agz_", 4), 0);
    CU_ASSERT_EQUAL(strspn(secret + 4, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"), 43);
    CU_ASSERT_EQUAL(strncmp(k->prefix, secret, 12), 0); /* agz_ + 8 visible characters */
    CU_ASSERT_EQUAL(strlen(k->prefix), 12);
    CU_ASSERT_EQUAL(k->role, 2);
    CU_ASSERT_STRING_EQUAL(k->name, "ci");
    CU_ASSERT_STRING_EQUAL(k->workspace_id, ctx.workspace_id);
    CU_ASSERT_PTR_NOT_NULL(k->create_time);
    CU_ASSERT_PTR_NULL(k->expire_time);
    CU_ASSERT_PTR_NULL(k->revoke_time);
    /* Only the hash is stored: no column of any key row holds the key text. */
    char hash[65];
    sha256_hex(secret, hash);
    CU_ASSERT_EQUAL(query_long("SELECT count(*) FROM api_keys WHERE hash = $1", hash, NULL), 1);
    CU_ASSERT_EQUAL(query_long("SELECT count(*) FROM api_keys t WHERE position($1 in t::text) > 0", secret + 4, NULL), 0);
    /* Two keys never collide. */
    char *secret2;
    CU_ASSERT_EQUAL(az_apikey_create(pg, &ctx, "ci2", 2, 0, arena, &k, &secret2, msg), AZ_OK);
    CU_ASSERT_STRING_NOT_EQUAL(secret, secret2);
}

static void test_create_rejects_bad_input(void)
{
    az_ctx ctx = ctx_in(fresh_workspace());
    Agentz__V1__ApiKey *k;
    char *secret;
    CU_ASSERT_EQUAL(az_apikey_create(pg, &ctx, "", 2, 0, arena, &k, &secret, msg), AZ_ERR_INVALID);
    CU_ASSERT_PTR_NOT_NULL(strstr(msg, "name"));
    char longname[200];
    memset(longname, 'x', sizeof longname - 1);
    longname[sizeof longname - 1] = '\0';
    CU_ASSERT_EQUAL(az_apikey_create(pg, &ctx, longname, 2, 0, arena, &k, &secret, msg), AZ_ERR_INVALID);
    CU_ASSERT_EQUAL(az_apikey_create(pg, &ctx, "x", 0, 0, arena, &k, &secret, msg), AZ_ERR_INVALID);
    CU_ASSERT_PTR_NOT_NULL(strstr(msg, "role"));
    CU_ASSERT_EQUAL(az_apikey_create(pg, &ctx, "x", 5, 0, arena, &k, &secret, msg), AZ_ERR_INVALID);
    CU_ASSERT_EQUAL(az_apikey_create(pg, &ctx, "x", 1, now_us() - 1000000, arena, &k, &secret, msg), AZ_ERR_INVALID);
    CU_ASSERT_PTR_NOT_NULL(strstr(msg, "expire_time"));
    CU_ASSERT_PTR_NULL(k);
    CU_ASSERT_PTR_NULL(secret);
}

static void test_verify(void)
{
    az_ctx ctx = ctx_in(fresh_workspace());
    Agentz__V1__ApiKey *k;
    char *secret;
    CU_ASSERT_EQUAL_FATAL(az_apikey_create(pg, &ctx, "v", 3, 0, arena, &k, &secret, msg), AZ_OK);
    az_apikey_identity id;
    CU_ASSERT_EQUAL(az_apikey_verify(pg, secret, &id, msg), AZ_OK);
    CU_ASSERT_STRING_EQUAL(id.key_id, k->id);
    CU_ASSERT_STRING_EQUAL(id.workspace_id, ctx.workspace_id);
    CU_ASSERT_EQUAL(id.role, 3);
    /* One character off, truncated, extended, other prefix, garbage: all the same answer. */
    char bad[64];
    snprintf(bad, sizeof bad, "%s", secret);
    bad[20] = bad[20] == 'A' ? 'B' : 'A';
    const char *wrong[] = {bad, "agz_", "", "agz_short", "Bearer x", "sk-abc"};
    for (size_t i = 0; i < sizeof wrong / sizeof *wrong; i++) {
        CU_ASSERT_EQUAL(az_apikey_verify(pg, wrong[i], &id, msg), AZ_ERR_UNAUTHENTICATED);
        CU_ASSERT_STRING_EQUAL(msg, "api key is unknown, revoked or expired");
        CU_ASSERT_EQUAL(id.role, 0);
    }
    snprintf(bad, sizeof bad, "%sA", secret);
    CU_ASSERT_EQUAL(az_apikey_verify(pg, bad, &id, msg), AZ_ERR_UNAUTHENTICATED);
    snprintf(bad, sizeof bad, "agx_%s", secret + 4);
    CU_ASSERT_EQUAL(az_apikey_verify(pg, bad, &id, msg), AZ_ERR_UNAUTHENTICATED);
}

static void test_revoke(void)
{
    az_ctx ctx = ctx_in(fresh_workspace());
    az_ctx other = ctx_in(fresh_workspace());
    Agentz__V1__ApiKey *k;
    char *secret;
    CU_ASSERT_EQUAL_FATAL(az_apikey_create(pg, &ctx, "r", 2, 0, arena, &k, &secret, msg), AZ_OK);
    az_apikey_identity id;
    CU_ASSERT_EQUAL(az_apikey_verify(pg, secret, &id, msg), AZ_OK);
    /* Another workspace cannot see it, let alone revoke it. */
    CU_ASSERT_EQUAL(az_apikey_revoke(pg, &other, k->id, msg), AZ_ERR_NOT_FOUND);
    CU_ASSERT_EQUAL(az_apikey_verify(pg, secret, &id, msg), AZ_OK);
    CU_ASSERT_EQUAL(az_apikey_revoke(pg, &ctx, k->id, msg), AZ_OK);
    CU_ASSERT_EQUAL(az_apikey_verify(pg, secret, &id, msg), AZ_ERR_UNAUTHENTICATED);
    char *first = query("SELECT revoke_time::text FROM api_keys WHERE id = $1", k->id, NULL);
    CU_ASSERT_EQUAL(az_apikey_revoke(pg, &ctx, k->id, msg), AZ_OK); /* idempotent */
    char *second = query("SELECT revoke_time::text FROM api_keys WHERE id = $1", k->id, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(first);
    CU_ASSERT_PTR_NOT_NULL_FATAL(second);
    CU_ASSERT_STRING_EQUAL(first, second);
    free(first);
    free(second);
    CU_ASSERT_EQUAL(az_apikey_revoke(pg, &ctx, "00000000-0000-0000-0000-00000000abcd", msg), AZ_ERR_NOT_FOUND);
    CU_ASSERT_EQUAL(az_apikey_revoke(pg, &ctx, "not-a-uuid", msg), AZ_ERR_NOT_FOUND);
}

static void test_expiry(void)
{
    az_ctx ctx = ctx_in(fresh_workspace());
    Agentz__V1__ApiKey *k;
    char *secret;
    int64_t exp = now_us() + 3600LL * 1000000;
    CU_ASSERT_EQUAL_FATAL(az_apikey_create(pg, &ctx, "e", 1, exp, arena, &k, &secret, msg), AZ_OK);
    CU_ASSERT_PTR_NOT_NULL_FATAL(k->expire_time);
    CU_ASSERT_EQUAL(k->expire_time->seconds, exp / 1000000);
    az_apikey_identity id;
    CU_ASSERT_EQUAL(az_apikey_verify(pg, secret, &id, msg), AZ_OK);
    free(query("UPDATE api_keys SET expire_time = now() - interval '1 second' WHERE id = $1 RETURNING 1", k->id, NULL));
    CU_ASSERT_EQUAL(az_apikey_verify(pg, secret, &id, msg), AZ_ERR_UNAUTHENTICATED);
}

static void test_last_use_throttled(void)
{
    az_ctx ctx = ctx_in(fresh_workspace());
    Agentz__V1__ApiKey *k;
    char *secret;
    CU_ASSERT_EQUAL_FATAL(az_apikey_create(pg, &ctx, "lu", 1, 0, arena, &k, &secret, msg), AZ_OK);
    CU_ASSERT_PTR_NULL(k->last_use_time);
    az_apikey_identity id;
    CU_ASSERT_EQUAL(az_apikey_verify(pg, secret, &id, msg), AZ_OK);
    char *t1 = query("SELECT coalesce(last_use_time::text, 'null') FROM api_keys WHERE id = $1", k->id, NULL);
    CU_ASSERT_EQUAL(az_apikey_verify(pg, secret, &id, msg), AZ_OK);
    char *t2 = query("SELECT coalesce(last_use_time::text, 'null') FROM api_keys WHERE id = $1", k->id, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(t1);
    CU_ASSERT_PTR_NOT_NULL_FATAL(t2);
    CU_ASSERT_STRING_NOT_EQUAL(t1, "null");
    CU_ASSERT_STRING_EQUAL(t1, t2); /* within the minute: not written again */
    free(query("UPDATE api_keys SET last_use_time = now() - interval '2 minutes' WHERE id = $1 RETURNING 1", k->id, NULL));
    CU_ASSERT_EQUAL(az_apikey_verify(pg, secret, &id, msg), AZ_OK);
    CU_ASSERT_EQUAL(query_long("SELECT count(*) FROM api_keys WHERE id = $1 AND last_use_time > now() - interval '10 seconds'",
                               k->id, NULL), 1);
    free(t1);
    free(t2);
}

/* A key that verified is not looked up again for the cache time: a revocation written behind
 * the module's back (another process) goes unseen until then, one through az_apikey_revoke is
 * seen at once, and the cache never outlives the key's expiry. */
static void test_cache(void)
{
    az_apikey_set_cache_ms(60000);
    az_ctx ctx = ctx_in(fresh_workspace());
    Agentz__V1__ApiKey *k;
    char *secret;
    CU_ASSERT_EQUAL_FATAL(az_apikey_create(pg, &ctx, "c", 2, 0, arena, &k, &secret, msg), AZ_OK);
    az_apikey_identity id, again;
    CU_ASSERT_EQUAL(az_apikey_verify(pg, secret, &id, msg), AZ_OK);
    free(query("UPDATE api_keys SET revoke_time = now() WHERE id = $1 RETURNING 1", k->id, NULL));
    CU_ASSERT_EQUAL(az_apikey_verify(pg, secret, &again, msg), AZ_OK);
    CU_ASSERT_STRING_EQUAL(again.key_id, id.key_id);
    CU_ASSERT_STRING_EQUAL(again.workspace_id, id.workspace_id);
    CU_ASSERT_EQUAL(again.role, id.role);
    CU_ASSERT_EQUAL(az_apikey_revoke(pg, &ctx, k->id, msg), AZ_OK);
    CU_ASSERT_EQUAL(az_apikey_verify(pg, secret, &id, msg), AZ_ERR_UNAUTHENTICATED);

    /* Setting the time forgets everything. */
    CU_ASSERT_EQUAL_FATAL(az_apikey_create(pg, &ctx, "c2", 2, 0, arena, &k, &secret, msg), AZ_OK);
    CU_ASSERT_EQUAL(az_apikey_verify(pg, secret, &id, msg), AZ_OK);
    free(query("UPDATE api_keys SET revoke_time = now() WHERE id = $1 RETURNING 1", k->id, NULL));
    az_apikey_set_cache_ms(60000);
    CU_ASSERT_EQUAL(az_apikey_verify(pg, secret, &id, msg), AZ_ERR_UNAUTHENTICATED);

    /* Expiring in 1.5 s: remembered that long, not the minute. */
    CU_ASSERT_EQUAL_FATAL(az_apikey_create(pg, &ctx, "c3", 2, now_us() + 1500000, arena, &k, &secret, msg), AZ_OK);
    CU_ASSERT_EQUAL(az_apikey_verify(pg, secret, &id, msg), AZ_OK);
    usleep(1700 * 1000);
    CU_ASSERT_EQUAL(az_apikey_verify(pg, secret, &id, msg), AZ_ERR_UNAUTHENTICATED);

    /* Off: every call looks the key up. */
    az_apikey_set_cache_ms(0);
    CU_ASSERT_EQUAL_FATAL(az_apikey_create(pg, &ctx, "c4", 2, 0, arena, &k, &secret, msg), AZ_OK);
    CU_ASSERT_EQUAL(az_apikey_verify(pg, secret, &id, msg), AZ_OK);
    free(query("UPDATE api_keys SET revoke_time = now() WHERE id = $1 RETURNING 1", k->id, NULL));
    CU_ASSERT_EQUAL(az_apikey_verify(pg, secret, &id, msg), AZ_ERR_UNAUTHENTICATED);
}

static void test_list_pages(void)
{
    az_ctx ctx = ctx_in(fresh_workspace());
    char ids[5][37];
    for (int i = 0; i < 5; i++) {
        Agentz__V1__ApiKey *k;
        char *secret, name[16];
        snprintf(name, sizeof name, "k%d", i);
        CU_ASSERT_EQUAL_FATAL(az_apikey_create(pg, &ctx, name, 1, 0, arena, &k, &secret, msg), AZ_OK);
        snprintf(ids[i], 37, "%s", k->id);
    }
    const char *token = "";
    int seen = 0;
    for (int page = 0; page < 4; page++) {
        Agentz__V1__ListApiKeysResponse *r;
        CU_ASSERT_EQUAL_FATAL(az_apikey_list(pg, &ctx, 2, token, arena, &r, msg), AZ_OK);
        for (size_t i = 0; i < r->n_api_keys; i++, seen++) {
            /* newest first */
            CU_ASSERT_STRING_EQUAL(r->api_keys[i]->id, ids[4 - seen]);
            CU_ASSERT_EQUAL(strlen(r->api_keys[i]->prefix), 12);
        }
        if (!*r->next_page_token) break;
        token = r->next_page_token;
    }
    CU_ASSERT_EQUAL(seen, 5);
    Agentz__V1__ListApiKeysResponse *r;
    CU_ASSERT_EQUAL(az_apikey_list(pg, &ctx, 2, "garbage!", arena, &r, msg), AZ_ERR_INVALID);
    CU_ASSERT_EQUAL(az_apikey_list(pg, &ctx, 2, "azE", arena, &r, msg), AZ_ERR_INVALID);
    /* Another workspace sees none of them. */
    az_ctx other = ctx_in(fresh_workspace());
    CU_ASSERT_EQUAL(az_apikey_list(pg, &other, 50, "", arena, &r, msg), AZ_OK);
    CU_ASSERT_EQUAL(r->n_api_keys, 0);
}

static void test_idempotent_create(void)
{
    az_ctx ctx = ctx_in(fresh_workspace());
    ctx.request_id = "req-1";
    Agentz__V1__ApiKey *a, *b;
    char *s1, *s2;
    CU_ASSERT_EQUAL_FATAL(az_apikey_create(pg, &ctx, "idem", 2, 0, arena, &a, &s1, msg), AZ_OK);
    CU_ASSERT_EQUAL(strlen(s1), 47);
    CU_ASSERT_EQUAL_FATAL(az_apikey_create(pg, &ctx, "idem", 2, 0, arena, &b, &s2, msg), AZ_OK);
    CU_ASSERT_STRING_EQUAL(a->id, b->id);
    CU_ASSERT_STRING_EQUAL(s2, ""); /* the key text was never stored */
    CU_ASSERT_EQUAL(az_apikey_create(pg, &ctx, "other", 2, 0, arena, &b, &s2, msg), AZ_ERR_EXISTS);
    CU_ASSERT_EQUAL(query_long("SELECT count(*) FROM api_keys WHERE workspace_id = $1", ctx.workspace_id, NULL), 1);
}

static void test_create_in_makes_workspace(void)
{
    char ws[37];
    az_text_uuid4(ws);
    Agentz__V1__ApiKey *k;
    char *secret;
    CU_ASSERT_EQUAL_FATAL(az_apikey_create_in(pg, ws, "boot", 4, 0, arena, &k, &secret, msg), AZ_OK);
    CU_ASSERT_EQUAL(query_long("SELECT count(*) FROM workspaces WHERE id = $1", ws, NULL), 1);
    CU_ASSERT_EQUAL(az_apikey_create_in(pg, ws, "boot2", 4, 0, arena, &k, &secret, msg), AZ_OK);
    CU_ASSERT_EQUAL(az_apikey_create_in(pg, "nope", "boot", 4, 0, arena, &k, &secret, msg), AZ_ERR_INVALID);
    /* Without a workspace row, a plain create is refused by the foreign key. */
    char none[37];
    az_text_uuid4(none);
    az_ctx ctx = ctx_in(none);
    CU_ASSERT_NOT_EQUAL(az_apikey_create(pg, &ctx, "x", 1, 0, arena, &k, &secret, msg), AZ_OK);
}

static void test_workspace_resolve(void)
{
    char a[37], b[37], c[37];
    CU_ASSERT_EQUAL_FATAL(az_workspace_resolve(pg, "org_123", "Acme", a, msg), AZ_OK);
    CU_ASSERT_TRUE(az_text_is_uuid(a));
    CU_ASSERT_EQUAL_FATAL(az_workspace_resolve(pg, "org_123", "Acme", b, msg), AZ_OK);
    CU_ASSERT_STRING_EQUAL(a, b);
    CU_ASSERT_EQUAL_FATAL(az_workspace_resolve(pg, "org_123", "Acme Inc", b, msg), AZ_OK);
    CU_ASSERT_STRING_EQUAL(a, b);
    char *name = query("SELECT name FROM workspaces WHERE id = $1", a, NULL);
    CU_ASSERT_STRING_EQUAL(name, "Acme Inc");
    free(name);
    CU_ASSERT_EQUAL_FATAL(az_workspace_resolve(pg, "user:u_1", NULL, c, msg), AZ_OK);
    CU_ASSERT_STRING_NOT_EQUAL(a, c);
    CU_ASSERT_EQUAL(az_workspace_resolve(pg, "", "x", c, msg), AZ_ERR_INVALID);
    /* ensure is idempotent and never renames */
    CU_ASSERT_EQUAL(az_workspace_ensure(pg, a, "other", msg), AZ_OK);
    name = query("SELECT name FROM workspaces WHERE id = $1", a, NULL);
    CU_ASSERT_STRING_EQUAL(name, "Acme Inc");
    free(name);
}

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f) return NULL;
    char *buf = calloc(1, 512);
    if (fread(buf, 1, 511, f) == 0) buf[0] = '\0';
    fclose(f);
    return buf;
}

static void test_local_admin_key(void)
{
    char dir[128], path[160];
    snprintf(dir, sizeof dir, "%s/local", tmpdir);
    mkdir(dir, 0700);
    snprintf(path, sizeof path, "%s/admin.key", dir);
    CU_ASSERT_EQUAL_FATAL(az_admin_ensure_local_key(pg, dir, msg), AZ_OK);
    struct stat st;
    CU_ASSERT_EQUAL_FATAL(stat(path, &st), 0);
    CU_ASSERT_EQUAL(st.st_mode & 0777, 0600);
    char *first = slurp(path);
    CU_ASSERT_PTR_NOT_NULL_FATAL(first);
    CU_ASSERT_EQUAL(strlen(first), 48);
    CU_ASSERT_EQUAL(first[47], '\n');
    first[47] = '\0';
    az_apikey_identity id;
    CU_ASSERT_EQUAL(az_apikey_verify(pg, first, &id, msg), AZ_OK);
    CU_ASSERT_EQUAL(id.role, 4);
    CU_ASSERT_STRING_EQUAL(id.workspace_id, AZ_DEFAULT_WORKSPACE);
    /* Idempotent: a working key stays. */
    CU_ASSERT_EQUAL(az_admin_ensure_local_key(pg, dir, msg), AZ_OK);
    char *second = slurp(path);
    CU_ASSERT_EQUAL(strncmp(first, second, 47), 0);
    free(second);
    /* A key the database no longer knows (reset) is replaced. */
    free(query("UPDATE api_keys SET revoke_time = now() WHERE id = $1 RETURNING 1", id.key_id, NULL));
    CU_ASSERT_EQUAL(az_admin_ensure_local_key(pg, dir, msg), AZ_OK);
    char *third = slurp(path);
    CU_ASSERT_PTR_NOT_NULL_FATAL(third);
    third[strcspn(third, "\n")] = '\0';
    CU_ASSERT_STRING_NOT_EQUAL(first, third);
    CU_ASSERT_EQUAL(az_apikey_verify(pg, third, &id, msg), AZ_OK);
    CU_ASSERT_EQUAL(stat(path, &st), 0);
    CU_ASSERT_EQUAL(st.st_mode & 0777, 0600);
    free(first);
    free(third);
}

int main(void)
{
    if (CU_initialize_registry() != CUE_SUCCESS) return 1;
    CU_pSuite s = CU_add_suite("apikey", NULL, NULL);
    if (!s) return 1;
    CU_add_test(s, "create: format and hash-only storage", test_create_format_and_storage);
    CU_add_test(s, "create: bad input", test_create_rejects_bad_input);
    CU_add_test(s, "verify", test_verify);
    CU_add_test(s, "revoke", test_revoke);
    CU_add_test(s, "expiry", test_expiry);
    CU_add_test(s, "last use at most once a minute", test_last_use_throttled);
    CU_add_test(s, "the verification cache", test_cache);
    CU_add_test(s, "list pages", test_list_pages);
    CU_add_test(s, "idempotent create", test_idempotent_create);
    CU_add_test(s, "create_in makes the workspace", test_create_in_makes_workspace);
    CU_add_test(s, "workspace resolve", test_workspace_resolve);
    CU_add_test(s, "local admin key", test_local_admin_key);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    if (suite_init() != 0) {
        fprintf(stderr, "cannot start the embedded PostgreSQL; failing\n");
        CU_cleanup_registry();
        suite_clean();
        return 1;
    }
    CU_basic_run_tests();
    unsigned failures = CU_get_number_of_failures() + CU_get_number_of_tests_failed() +
                        CU_get_number_of_suites_failed();
    CU_cleanup_registry();
    suite_clean();
    return failures ? 1 : 0;
}
