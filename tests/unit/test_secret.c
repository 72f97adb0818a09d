/* CUnit suite for server/secret/secret.c against a throwaway embedded PostgreSQL: keyrings, round
 * trips, wrong and missing keys, tampering, AAD binding to workspace and name, rotation, idempotent
 * puts, listing, and that no stored byte holds the plaintext. */
#include <CUnit/Basic.h>
#include <ftw.h>
#include <libpq-fe.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "auth/workspace.h"
#include "core/log.h"
#include "core/text.h"
#include "embed/embedded.h"
#include "secret/secret.h"
#include "store/migrate.h"

static char tmpdir[64];
static az_embed *embed;
static az_pg *pg;
static az_arena *arena;
static char msg[AZ_MSG_MAX];
static char key_a[64], key_b[64]; /* base64 master keys */

/* ---------------------------------------------------------------- helpers */

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    remove(path);
    return 0;
}

static void random_key(char out[64])
{
    unsigned char k[32];
    RAND_bytes(k, sizeof k);
    EVP_EncodeBlock((unsigned char *)out, k, sizeof k);
}

static char *query(const char *sql, const char *p1, const char *p2, const char *p3)
{
    az_ctx ctx = {.deadline_ms = -1};
    az_pgconn *c;
    char m[AZ_MSG_MAX];
    if (az_pg_acquire(pg, &ctx, &c, m) != AZ_OK) return NULL;
    const char *p[3] = {p1, p2, p3};
    PGresult *r = NULL;
    char *v = NULL;
    if (az_pg_exec(c, &ctx, sql, p3 ? 3 : p2 ? 2 : p1 ? 1 : 0, p, &r, m) == AZ_OK)
        v = strdup(PQntuples(r) && PQnfields(r) ? PQgetvalue(r, 0, 0) : "");
    else
        fprintf(stderr, "\n  %s: %s\n", sql, m);
    PQclear(r);
    az_pg_release(c);
    return v;
}

static long query_long(const char *sql, const char *p1, const char *p2, const char *p3)
{
    char *v = query(sql, p1, p2, p3);
    long n = v ? atol(v) : -1;
    free(v);
    return n;
}

static az_ctx fresh_ctx(void)
{
    static char ids[32][37];
    static int n;
    char *id = ids[n++ % 32];
    az_text_uuid4(id);
    CU_ASSERT_EQUAL(az_workspace_ensure(pg, id, "test", msg), AZ_OK);
    return (az_ctx){.workspace_id = id, .principal = "", .request_id = "", .deadline_ms = -1};
}

static az_secret_keyring *ring(const char *current, const char *previous)
{
    az_secret_keyring *k = NULL;
    CU_ASSERT_EQUAL(az_secret_keyring_new(current, previous, &k, msg), AZ_OK);
    return k;
}

/* ---------------------------------------------------------------- suite setup */

static int suite_init(void)
{
    az_log_set_level(AZ_LOG_ERROR);
    random_key(key_a);
    random_key(key_b);
    snprintf(tmpdir, sizeof tmpdir, "/tmp/aztest-secret-XXXXXX");
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
    return arena ? 0 : 1;
}

static void suite_clean(void)
{
    az_arena_free(arena);
    az_pg_free(pg);
    az_embed_stop(embed);
    if (tmpdir[0]) nftw(tmpdir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* ---------------------------------------------------------------- keyring */

static void test_keyring(void)
{
    az_secret_keyring *k = NULL;
    CU_ASSERT_EQUAL(az_secret_keyring_new("", NULL, &k, msg), AZ_ERR_INVALID);
    CU_ASSERT_EQUAL(az_secret_keyring_new("c2hvcnQ=", NULL, &k, msg), AZ_ERR_INVALID);
    CU_ASSERT_PTR_NULL(strstr(msg, "c2hvcnQ")); /* never echoes a key */
    CU_ASSERT_EQUAL(az_secret_keyring_new(key_a, "bad,,", &k, msg), AZ_ERR_INVALID);
    CU_ASSERT_PTR_NOT_NULL(strstr(msg, "AGENTZ_MASTER_KEY_PREVIOUS entry 1"));
    CU_ASSERT_PTR_NULL(k);
    k = ring(key_a, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(k);
    const char *id = az_secret_keyring_key_id(k);
    CU_ASSERT_EQUAL(strlen(id), 8);
    CU_ASSERT_EQUAL(strspn(id, "0123456789abcdef"), 8);
    /* The id is the first 8 hex digits of SHA-256 of the key bytes. */
    unsigned char raw[40], md[32];
    unsigned int len;
    CU_ASSERT_EQUAL(EVP_DecodeBlock(raw, (const unsigned char *)key_a, (int)strlen(key_a)), 33);
    EVP_Digest(raw, 32, md, &len, EVP_sha256(), NULL);
    char want[9];
    snprintf(want, sizeof want, "%02x%02x%02x%02x", md[0], md[1], md[2], md[3]);
    CU_ASSERT_STRING_EQUAL(id, want);
    az_secret_keyring_free(k);
    /* URL-safe, unpadded, with whitespace and a newline: the same key. */
    char url[80];
    snprintf(url, sizeof url, "  %s\n", key_a);
    for (char *s = url; *s; s++) *s = *s == '+' ? '-' : *s == '/' ? '_' : *s == '=' ? ' ' : *s;
    k = ring(url, " , ");
    CU_ASSERT_PTR_NOT_NULL_FATAL(k);
    CU_ASSERT_STRING_EQUAL(az_secret_keyring_key_id(k), want);
    az_secret_keyring_free(k);
    az_secret_keyring_free(NULL);
}

static void test_keyring_load(void)
{
    char dir[128], path[160];
    snprintf(dir, sizeof dir, "%s/keys", tmpdir);
    mkdir(dir, 0700);
    snprintf(path, sizeof path, "%s/master.key", dir);
    az_secret_keyring *k = (az_secret_keyring *)1;
    /* Nothing configured and no data dir: no keyring, not an error. */
    CU_ASSERT_EQUAL(az_secret_keyring_load(NULL, NULL, NULL, NULL, &k, msg), AZ_OK);
    CU_ASSERT_PTR_NULL(k);
    /* The embedded default generates data_dir/master.key, 0600, and reuses it. */
    CU_ASSERT_EQUAL_FATAL(az_secret_keyring_load(NULL, NULL, NULL, dir, &k, msg), AZ_OK);
    CU_ASSERT_PTR_NOT_NULL_FATAL(k);
    struct stat st;
    CU_ASSERT_EQUAL_FATAL(stat(path, &st), 0);
    CU_ASSERT_EQUAL(st.st_mode & 0777, 0600);
    char first[9];
    snprintf(first, sizeof first, "%s", az_secret_keyring_key_id(k));
    az_secret_keyring_free(k);
    CU_ASSERT_EQUAL_FATAL(az_secret_keyring_load(NULL, NULL, NULL, dir, &k, msg), AZ_OK);
    CU_ASSERT_STRING_EQUAL(az_secret_keyring_key_id(k), first);
    az_secret_keyring_free(k);
    /* AGENTZ_MASTER_KEY_FILE is the same format; AGENTZ_MASTER_KEY wins over both. */
    CU_ASSERT_EQUAL_FATAL(az_secret_keyring_load(NULL, path, NULL, NULL, &k, msg), AZ_OK);
    CU_ASSERT_STRING_EQUAL(az_secret_keyring_key_id(k), first);
    az_secret_keyring_free(k);
    CU_ASSERT_EQUAL_FATAL(az_secret_keyring_load(key_b, path, NULL, dir, &k, msg), AZ_OK);
    CU_ASSERT_STRING_NOT_EQUAL(az_secret_keyring_key_id(k), first);
    az_secret_keyring_free(k);
    CU_ASSERT_EQUAL(az_secret_keyring_load(NULL, "/nonexistent/key", NULL, NULL, &k, msg), AZ_ERR_IO);
}

/* ---------------------------------------------------------------- put / get */

static void test_round_trip(void)
{
    az_secret_keyring *k = ring(key_a, NULL);
    az_ctx ctx = fresh_ctx();
    const char *plain = "sk-live-4f9a2b7c1d0e8f3a6b5c4d3e2f1a0b9c";
    Agentz__V1__Secret *s;
    CU_ASSERT_EQUAL_FATAL(az_secret_put(pg, &ctx, k, "openai", plain, "", arena, &s, msg), AZ_OK);
    CU_ASSERT_STRING_EQUAL(s->name, "openai");
    CU_ASSERT_STRING_EQUAL(s->workspace_id, ctx.workspace_id);
    CU_ASSERT_PTR_NOT_NULL(s->create_time);
    char *v = NULL;
    CU_ASSERT_EQUAL_FATAL(az_secret_get_value(pg, &ctx, k, "openai", &v, msg), AZ_OK);
    CU_ASSERT_STRING_EQUAL(v, plain);
    az_secret_wipe_free(v);
    /* Replacing makes a new version with a fresh nonce. */
    char *nonce1 = query("SELECT encode(nonce, 'hex') FROM secrets WHERE workspace_id = $1 AND name = 'openai'",
                         ctx.workspace_id, NULL, NULL);
    CU_ASSERT_EQUAL(az_secret_put(pg, &ctx, k, "openai", "sk-second", "", arena, &s, msg), AZ_OK);
    char *nonce2 = query("SELECT encode(nonce, 'hex') FROM secrets WHERE workspace_id = $1 AND name = 'openai'",
                         ctx.workspace_id, NULL, NULL);
    CU_ASSERT_STRING_NOT_EQUAL(nonce1, nonce2);
    free(nonce1);
    free(nonce2);
    CU_ASSERT_EQUAL(query_long("SELECT version FROM secrets WHERE workspace_id = $1 AND name = 'openai'",
                               ctx.workspace_id, NULL, NULL), 2);
    CU_ASSERT_EQUAL(az_secret_get_value(pg, &ctx, k, "openai", &v, msg), AZ_OK);
    CU_ASSERT_STRING_EQUAL(v, "sk-second");
    az_secret_wipe_free(v);
    /* Largest value; one byte more is refused. */
    char *big = malloc(AZ_SECRET_VALUE_MAX + 2);
    memset(big, 'z', AZ_SECRET_VALUE_MAX + 1);
    big[AZ_SECRET_VALUE_MAX + 1] = '\0';
    CU_ASSERT_EQUAL(az_secret_put(pg, &ctx, k, "big", big, "", arena, &s, msg), AZ_ERR_INVALID);
    CU_ASSERT_PTR_NOT_NULL(strstr(msg, "value"));
    big[AZ_SECRET_VALUE_MAX] = '\0';
    CU_ASSERT_EQUAL(az_secret_put(pg, &ctx, k, "big", big, "", arena, &s, msg), AZ_OK);
    CU_ASSERT_EQUAL(az_secret_get_value(pg, &ctx, k, "big", &v, msg), AZ_OK);
    CU_ASSERT_EQUAL(v ? strlen(v) : 0, AZ_SECRET_VALUE_MAX);
    az_secret_wipe_free(v);
    free(big);
    az_secret_keyring_free(k);
}

static void test_validation(void)
{
    az_secret_keyring *k = ring(key_a, NULL);
    az_ctx ctx = fresh_ctx();
    Agentz__V1__Secret *s;
    const char *bad[] = {"", "has space", "slash/y", "ünï", "semi;colon"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        CU_ASSERT_EQUAL(az_secret_put(pg, &ctx, k, bad[i], "v", "", arena, &s, msg), AZ_ERR_INVALID);
        CU_ASSERT_PTR_NOT_NULL(strstr(msg, "name"));
    }
    char longname[140];
    memset(longname, 'a', 129);
    longname[129] = '\0';
    CU_ASSERT_EQUAL(az_secret_put(pg, &ctx, k, longname, "v", "", arena, &s, msg), AZ_ERR_INVALID);
    longname[128] = '\0';
    CU_ASSERT_EQUAL(az_secret_put(pg, &ctx, k, longname, "v", "", arena, &s, msg), AZ_OK);
    CU_ASSERT_EQUAL(az_secret_put(pg, &ctx, k, "Ok_name-1.x", "", "", arena, &s, msg), AZ_ERR_INVALID);
    CU_ASSERT_PTR_NOT_NULL(strstr(msg, "value"));
    CU_ASSERT_EQUAL(az_secret_put(pg, &ctx, NULL, "x", "v", "", arena, &s, msg), AZ_ERR_PRECONDITION);
    char *v;
    CU_ASSERT_EQUAL(az_secret_get_value(pg, &ctx, k, "missing", &v, msg), AZ_ERR_NOT_FOUND);
    CU_ASSERT_PTR_NULL(v);
    az_secret_keyring_free(k);
}

static void test_wrong_key_and_tampering(void)
{
    az_secret_keyring *a = ring(key_a, NULL), *b = ring(key_b, NULL);
    az_ctx ctx = fresh_ctx();
    Agentz__V1__Secret *s;
    CU_ASSERT_EQUAL_FATAL(az_secret_put(pg, &ctx, a, "anthropic", "sk-ant-xyz", "", arena, &s, msg), AZ_OK);
    char *v = (char *)1;
    /* A server without the key that wrote the row says which key it needs. */
    CU_ASSERT_EQUAL(az_secret_get_value(pg, &ctx, b, "anthropic", &v, msg), AZ_ERR_PRECONDITION);
    CU_ASSERT_PTR_NULL(v);
    CU_ASSERT_PTR_NOT_NULL(strstr(msg, az_secret_keyring_key_id(a)));
    /* A row claiming to be under b but encrypted under a fails authentication. */
    free(query("UPDATE secrets SET key_id = $2 WHERE workspace_id = $1 AND name = 'anthropic' RETURNING 1",
               ctx.workspace_id, az_secret_keyring_key_id(b), NULL));
    CU_ASSERT_EQUAL(az_secret_get_value(pg, &ctx, b, "anthropic", &v, msg), AZ_ERR_INTERNAL);
    free(query("UPDATE secrets SET key_id = $2 WHERE workspace_id = $1 AND name = 'anthropic' RETURNING 1",
               ctx.workspace_id, az_secret_keyring_key_id(a), NULL));
    CU_ASSERT_EQUAL(az_secret_get_value(pg, &ctx, a, "anthropic", &v, msg), AZ_OK);
    az_secret_wipe_free(v);
    /* One flipped ciphertext bit, or a changed tag: refused. */
    free(query("UPDATE secrets SET ciphertext = set_byte(ciphertext, 0, get_byte(ciphertext, 0) # 1)"
               " WHERE workspace_id = $1 AND name = 'anthropic' RETURNING 1", ctx.workspace_id, NULL, NULL));
    CU_ASSERT_EQUAL(az_secret_get_value(pg, &ctx, a, "anthropic", &v, msg), AZ_ERR_INTERNAL);
    CU_ASSERT_PTR_NULL(v);
    CU_ASSERT_PTR_NULL(strstr(msg, "sk-ant"));
    CU_ASSERT_EQUAL(az_secret_delete(pg, &ctx, "anthropic", msg), AZ_OK); /* rotation would stop at it */
    az_secret_keyring_free(a);
    az_secret_keyring_free(b);
}

static void test_aad_binding(void)
{
    az_secret_keyring *k = ring(key_a, NULL);
    az_ctx ctx = fresh_ctx(), other = fresh_ctx();
    Agentz__V1__Secret *s;
    CU_ASSERT_EQUAL_FATAL(az_secret_put(pg, &ctx, k, "alpha", "value-of-alpha", "", arena, &s, msg), AZ_OK);
    CU_ASSERT_EQUAL_FATAL(az_secret_put(pg, &ctx, k, "beta", "value-of-beta", "", arena, &s, msg), AZ_OK);
    CU_ASSERT_EQUAL_FATAL(az_secret_put(pg, &other, k, "alpha", "other-alpha", "", arena, &s, msg), AZ_OK);
    /* Copy alpha's ciphertext over beta: it must not decrypt as beta. */
    free(query("UPDATE secrets b SET nonce = a.nonce, ciphertext = a.ciphertext, tag = a.tag FROM secrets a"
               " WHERE a.workspace_id = $1 AND a.name = 'alpha' AND b.workspace_id = $1 AND b.name = 'beta'"
               " RETURNING 1", ctx.workspace_id, NULL, NULL));
    char *v = NULL;
    CU_ASSERT_EQUAL(az_secret_get_value(pg, &ctx, k, "beta", &v, msg), AZ_ERR_INTERNAL);
    CU_ASSERT_PTR_NULL(v);
    /* Nor in another workspace under the same name. */
    free(query("UPDATE secrets b SET nonce = a.nonce, ciphertext = a.ciphertext, tag = a.tag FROM secrets a"
               " WHERE a.workspace_id = $1 AND a.name = 'alpha' AND b.workspace_id = $2 AND b.name = 'alpha'"
               " RETURNING 1", ctx.workspace_id, other.workspace_id, NULL));
    CU_ASSERT_EQUAL(az_secret_get_value(pg, &other, k, "alpha", &v, msg), AZ_ERR_INTERNAL);
    /* alpha itself is untouched. */
    CU_ASSERT_EQUAL(az_secret_get_value(pg, &ctx, k, "alpha", &v, msg), AZ_OK);
    CU_ASSERT_STRING_EQUAL(v, "value-of-alpha");
    az_secret_wipe_free(v);
    CU_ASSERT_EQUAL(az_secret_delete(pg, &ctx, "beta", msg), AZ_OK);
    CU_ASSERT_EQUAL(az_secret_delete(pg, &other, "alpha", msg), AZ_OK);
    az_secret_keyring_free(k);
}

static void test_ciphertext_never_holds_plaintext(void)
{
    az_secret_keyring *k = ring(key_a, NULL);
    az_ctx ctx = fresh_ctx();
    Agentz__V1__Secret *s;
    /* Long and repetitive, so any leak of a plaintext block would show. */
    const char *plain = "PLAINTEXT-CANARY-PLAINTEXT-CANARY-PLAINTEXT-CANARY-PLAINTEXT-CANARY";
    CU_ASSERT_EQUAL_FATAL(az_secret_put(pg, &ctx, k, "canary", plain, "req-canary", arena, &s, msg), AZ_OK);
    CU_ASSERT_EQUAL(query_long("SELECT count(*) FROM secrets WHERE position(convert_to('CANARY', 'UTF8') in ciphertext) > 0",
                               NULL, NULL, NULL), 0);
    CU_ASSERT_EQUAL(query_long("SELECT count(*) FROM secrets t WHERE position('CANARY' in t::text) > 0", NULL, NULL, NULL), 0);
    CU_ASSERT_EQUAL(query_long("SELECT count(*) FROM idempotency_keys t WHERE position('CANARY' in t::text) > 0",
                               NULL, NULL, NULL), 0);
    CU_ASSERT_EQUAL(query_long("SELECT octet_length(ciphertext) FROM secrets WHERE workspace_id = $1 AND name = 'canary'",
                               ctx.workspace_id, NULL, NULL), (long)strlen(plain));
    az_secret_keyring_free(k);
}

static void test_rotation(void)
{
    az_secret_keyring *a = ring(key_a, NULL);
    az_ctx ctx = fresh_ctx();
    Agentz__V1__Secret *s;
    char name[16], val[32];
    for (int i = 0; i < 3; i++) {
        snprintf(name, sizeof name, "rot%d", i);
        snprintf(val, sizeof val, "rotated-value-%d", i);
        CU_ASSERT_EQUAL_FATAL(az_secret_put(pg, &ctx, a, name, val, "", arena, &s, msg), AZ_OK);
    }
    /* The new key current, the old one previous: old rows still decrypt. */
    char prev[80];
    snprintf(prev, sizeof prev, "%s,", key_a);
    az_secret_keyring *ba = ring(key_b, prev), *b = ring(key_b, NULL);
    char *v = NULL;
    CU_ASSERT_EQUAL(az_secret_get_value(pg, &ctx, ba, "rot1", &v, msg), AZ_OK);
    CU_ASSERT_STRING_EQUAL(v, "rotated-value-1");
    az_secret_wipe_free(v);
    CU_ASSERT_EQUAL(az_secret_get_value(pg, &ctx, b, "rot1", &v, msg), AZ_ERR_PRECONDITION);
    /* Rotation needs the old key... */
    int64_t n = -1;
    CU_ASSERT_EQUAL(az_secret_rotate(pg, b, &n, msg), AZ_ERR_PRECONDITION);
    /* ...and with it re-encrypts everything (other tests' rows too) under the new one. */
    CU_ASSERT_EQUAL_FATAL(az_secret_rotate(pg, ba, &n, msg), AZ_OK);
    CU_ASSERT(n >= 3);
    CU_ASSERT_EQUAL(query_long("SELECT count(*) FROM secrets WHERE key_id <> $1", az_secret_keyring_key_id(b), NULL, NULL), 0);
    CU_ASSERT_EQUAL(az_secret_rotate(pg, ba, &n, msg), AZ_OK);
    CU_ASSERT_EQUAL(n, 0);
    for (int i = 0; i < 3; i++) {
        snprintf(name, sizeof name, "rot%d", i);
        snprintf(val, sizeof val, "rotated-value-%d", i);
        CU_ASSERT_EQUAL(az_secret_get_value(pg, &ctx, b, name, &v, msg), AZ_OK);
        CU_ASSERT_STRING_EQUAL(v ? v : "", val);
        az_secret_wipe_free(v);
    }
    CU_ASSERT_EQUAL(az_secret_get_value(pg, &ctx, a, "rot0", &v, msg), AZ_ERR_PRECONDITION);
    /* Leave the table under key a for the tests after this one. */
    snprintf(prev, sizeof prev, "%s", key_b);
    az_secret_keyring *ab = ring(key_a, prev);
    CU_ASSERT_EQUAL(az_secret_rotate(pg, ab, &n, msg), AZ_OK);
    az_secret_keyring_free(ab);
    az_secret_keyring_free(a);
    az_secret_keyring_free(b);
    az_secret_keyring_free(ba);
}

static void test_idempotent_put(void)
{
    az_secret_keyring *k = ring(key_a, NULL);
    az_ctx ctx = fresh_ctx();
    Agentz__V1__Secret *s1, *s2;
    CU_ASSERT_EQUAL_FATAL(az_secret_put(pg, &ctx, k, "idem", "one", "r-1", arena, &s1, msg), AZ_OK);
    CU_ASSERT_EQUAL_FATAL(az_secret_put(pg, &ctx, k, "idem", "one", "r-1", arena, &s2, msg), AZ_OK);
    CU_ASSERT_EQUAL(query_long("SELECT version FROM secrets WHERE workspace_id = $1 AND name = 'idem'",
                               ctx.workspace_id, NULL, NULL), 1);
    CU_ASSERT_EQUAL(az_secret_put(pg, &ctx, k, "idem", "two", "r-1", arena, &s2, msg), AZ_ERR_EXISTS);
    CU_ASSERT_PTR_NULL(strstr(msg, "two"));
    char *v;
    CU_ASSERT_EQUAL(az_secret_get_value(pg, &ctx, k, "idem", &v, msg), AZ_OK);
    CU_ASSERT_STRING_EQUAL(v, "one");
    az_secret_wipe_free(v);
    az_secret_keyring_free(k);
}

static void test_list_and_delete(void)
{
    az_secret_keyring *k = ring(key_a, NULL);
    az_ctx ctx = fresh_ctx();
    Agentz__V1__Secret *s;
    const char *names[] = {"b", "A", "c.d", "a_1", "Z-9"};
    for (int i = 0; i < 5; i++)
        CU_ASSERT_EQUAL_FATAL(az_secret_put(pg, &ctx, k, names[i], "v", "", arena, &s, msg), AZ_OK);
    const char *want[] = {"A", "Z-9", "a_1", "b", "c.d"}; /* byte order */
    const char *token = "";
    int seen = 0;
    for (int page = 0; page < 5; page++) {
        Agentz__V1__ListSecretsResponse *r;
        CU_ASSERT_EQUAL_FATAL(az_secret_list(pg, &ctx, 2, token, arena, &r, msg), AZ_OK);
        for (size_t i = 0; i < r->n_secrets && seen < 5; i++) CU_ASSERT_STRING_EQUAL(r->secrets[i]->name, want[seen++]);
        if (!*r->next_page_token) break;
        token = r->next_page_token;
    }
    CU_ASSERT_EQUAL(seen, 5);
    Agentz__V1__ListSecretsResponse *r;
    CU_ASSERT_EQUAL(az_secret_list(pg, &ctx, 2, "!!", arena, &r, msg), AZ_ERR_INVALID);
    CU_ASSERT_EQUAL(az_secret_delete(pg, &ctx, "b", msg), AZ_OK);
    CU_ASSERT_EQUAL(az_secret_delete(pg, &ctx, "b", msg), AZ_ERR_NOT_FOUND);
    CU_ASSERT_EQUAL(az_secret_delete(pg, &ctx, "bad name", msg), AZ_ERR_NOT_FOUND);
    az_ctx other = fresh_ctx();
    CU_ASSERT_EQUAL(az_secret_delete(pg, &other, "A", msg), AZ_ERR_NOT_FOUND);
    CU_ASSERT_EQUAL(az_secret_list(pg, &ctx, 50, "", arena, &r, msg), AZ_OK);
    CU_ASSERT_EQUAL(r->n_secrets, 4);
    az_secret_keyring_free(k);
}

int main(void)
{
    if (CU_initialize_registry() != CUE_SUCCESS) return 1;
    CU_pSuite s = CU_add_suite("secret", NULL, NULL);
    if (!s) return 1;
    CU_add_test(s, "keyring", test_keyring);
    CU_add_test(s, "keyring sources", test_keyring_load);
    CU_add_test(s, "round trip", test_round_trip);
    CU_add_test(s, "validation", test_validation);
    CU_add_test(s, "wrong key and tampering", test_wrong_key_and_tampering);
    CU_add_test(s, "AAD binds workspace and name", test_aad_binding);
    CU_add_test(s, "ciphertext never holds plaintext", test_ciphertext_never_holds_plaintext);
    CU_add_test(s, "rotation", test_rotation);
    CU_add_test(s, "idempotent put", test_idempotent_put);
    CU_add_test(s, "list and delete", test_list_and_delete);
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
