/* Secrets in PostgreSQL, encrypted with AES-256-GCM (OpenSSL EVP): a fresh random 96-bit nonce per
 * encryption, AAD binding the ciphertext to its workspace, name and master key, and a keyring so
 * rows written under an earlier master key still decrypt until `agentzd admin rotate-secrets`
 * re-encrypts them. Plaintext lives only in memory that is wiped before it is freed. */
#include "secret.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/b64.h"
#include "core/log.h"
#include "core/pagetoken.h"
#include "core/pbtime.h"
#include "core/text.h"
#include "google/protobuf/timestamp.pb-c.h"
#include "store/idem.h"

#define KEY_BYTES 32
#define NONCE_BYTES 12
#define TAG_BYTES 16
#define MAX_KEYS 16
#define KEY_FILE_MAX 1024
#define ROTATE_BATCH 100

struct master_key {
    unsigned char key[KEY_BYTES];
    char id[AZ_SECRET_KEY_ID_LEN + 1];
};

struct az_secret_keyring {
    struct master_key keys[MAX_KEYS]; /* [0] is current */
    int n;
};

/* One encrypted value as stored. */
typedef struct sealed {
    unsigned char nonce[NONCE_BYTES];
    unsigned char tag[TAG_BYTES];
    unsigned char *ct; /* malloc'd, len bytes */
    size_t len;
    char key_id[AZ_SECRET_KEY_ID_LEN + 1];
} sealed;

/* ---------------------------------------------------------------- base64 */

static int b64_value(char c)
{
    if (c == '+') return 62;
    if (c == '/') return 63;
    const char *p = c ? strchr(AZ_B64URL_ALPHABET, c) : NULL;
    return p ? (int)(p - AZ_B64URL_ALPHABET) : -1;
}

/* Decodes standard or URL-safe base64 (padding optional) of exactly n bytes into out; -1 if s
 * is anything else. */
static int b64_decode_exact(const char *s, size_t len, unsigned char *out, size_t n)
{
    while (len > 0 && s[len - 1] == '=') len--;
    if (len != (n * 4 + 2) / 3) return -1;
    unsigned v = 0;
    int bits = 0;
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        int d = b64_value(s[i]);
        if (d < 0) return -1;
        v = v << 6 | (unsigned)d;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            if (o < n) out[o++] = (unsigned char)(v >> bits);
        }
    }
    return o == n ? 0 : -1;
}

static void b64_encode(const unsigned char *in, size_t n, char *out)
{
    EVP_EncodeBlock((unsigned char *)out, in, (int)n);
}

/* ---------------------------------------------------------------- keyring */

static void key_id_of(const unsigned char key[KEY_BYTES], char id[AZ_SECRET_KEY_ID_LEN + 1])
{
    unsigned char md[32];
    unsigned int len = 0;
    EVP_Digest(key, KEY_BYTES, md, &len, EVP_sha256(), NULL);
    for (int i = 0; i < AZ_SECRET_KEY_ID_LEN / 2; i++) snprintf(id + 2 * i, 3, "%02x", md[i]);
}

static int is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

static az_err add_key(az_secret_keyring *k, const char *s, size_t len, const char *what, char *msg)
{
    while (len > 0 && is_space(*s)) s++, len--;
    while (len > 0 && is_space(s[len - 1])) len--;
    if (k->n >= MAX_KEYS)
        return az_fail(msg, AZ_ERR_INVALID, "master keys: at most %d (current and previous)", MAX_KEYS);
    struct master_key *m = &k->keys[k->n];
    if (b64_decode_exact(s, len, m->key, KEY_BYTES) != 0) {
        OPENSSL_cleanse(m->key, sizeof m->key);
        return az_fail(msg, AZ_ERR_INVALID, "%s: not the base64 encoding of 32 bytes", what);
    }
    key_id_of(m->key, m->id);
    for (int i = 0; i < k->n; i++) {
        if (strcmp(k->keys[i].id, m->id) == 0) { /* listed twice: harmless, keep one */
            OPENSSL_cleanse(m, sizeof *m);
            return AZ_OK;
        }
    }
    k->n++;
    return AZ_OK;
}

az_err az_secret_keyring_new(const char *current, const char *previous, az_secret_keyring **out,
                             char *msg)
{
    *out = NULL;
    if (!current || !*current) return az_fail(msg, AZ_ERR_INVALID, "master key is required");
    az_secret_keyring *k = calloc(1, sizeof *k);
    if (!k) return az_fail(msg, AZ_ERR_NOMEM, "out of memory");
    az_err err = add_key(k, current, strlen(current), "AGENTZ_MASTER_KEY", msg);
    int pos = 0;
    for (const char *s = previous ? previous : ""; err == AZ_OK && *s;) {
        size_t len = strcspn(s, ",");
        char what[64];
        snprintf(what, sizeof what, "AGENTZ_MASTER_KEY_PREVIOUS entry %d", ++pos);
        size_t blank = 0;
        while (blank < len && is_space(s[blank])) blank++;
        if (blank < len) err = add_key(k, s, len, what, msg); /* "a,,b" and "a, " are fine */
        s += len;
        if (*s == ',') s++;
    }
    if (err != AZ_OK) {
        az_secret_keyring_free(k);
        return err;
    }
    *out = k;
    return AZ_OK;
}

void az_secret_keyring_free(az_secret_keyring *k)
{
    if (!k) return;
    OPENSSL_cleanse(k, sizeof *k);
    free(k);
}

const char *az_secret_keyring_key_id(const az_secret_keyring *k) { return k->keys[0].id; }

static const struct master_key *find_key(const az_secret_keyring *k, const char *id)
{
    for (int i = 0; i < k->n; i++) {
        if (strcmp(k->keys[i].id, id) == 0) return &k->keys[i];
    }
    return NULL;
}

/* Reads a base64 key file (whitespace around it ignored) into buf; warns when others may read it. */
static az_err read_key_file(const char *path, char buf[KEY_FILE_MAX], char *msg)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return az_fail(msg, AZ_ERR_IO, "cannot open master key file %s: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) == 0 && (st.st_mode & 077))
        az_warn("master key file %s is readable by group or others (mode %03o): chmod 600 it", path,
                (unsigned)(st.st_mode & 0777));
    ssize_t n = read(fd, buf, KEY_FILE_MAX - 1);
    int e = errno;
    close(fd);
    if (n < 0) return az_fail(msg, AZ_ERR_IO, "cannot read master key file %s: %s", path, strerror(e));
    buf[n] = '\0';
    return AZ_OK;
}

/* data_dir/master.key: read it, or create it (0600, O_EXCL so two starts cannot both write). */
static az_err data_dir_key(const char *data_dir, char buf[KEY_FILE_MAX], char *msg)
{
    char path[4096];
    if (snprintf(path, sizeof path, "%s/master.key", data_dir) >= (int)sizeof path)
        return az_fail(msg, AZ_ERR_INVALID, "data dir path is too long: %s", data_dir);
    if (access(path, F_OK) == 0) return read_key_file(path, buf, msg);
    unsigned char key[KEY_BYTES];
    if (RAND_bytes(key, sizeof key) != 1) return az_fail(msg, AZ_ERR_IO, "cannot generate a master key");
    char text[64];
    b64_encode(key, sizeof key, text);
    OPENSSL_cleanse(key, sizeof key);
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0 && errno == EEXIST) {
        OPENSSL_cleanse(text, sizeof text);
        return read_key_file(path, buf, msg);
    }
    if (fd < 0) return az_fail(msg, AZ_ERR_IO, "cannot create master key file %s: %s", path, strerror(errno));
    size_t len = strlen(text);
    text[len++] = '\n';
    int ok = write(fd, text, len) == (ssize_t)len && fsync(fd) == 0;
    int e = errno;
    close(fd);
    if (!ok) {
        unlink(path);
        OPENSSL_cleanse(text, sizeof text);
        return az_fail(msg, AZ_ERR_IO, "cannot write master key file %s: %s", path, strerror(e));
    }
    memcpy(buf, text, len);
    buf[len] = '\0';
    OPENSSL_cleanse(text, sizeof text);
    az_info("generated a master key for secrets in %s: back it up, secrets cannot be read without it",
            path);
    return AZ_OK;
}

az_err az_secret_keyring_load(const char *key_b64, const char *key_file, const char *previous,
                              const char *data_dir, az_secret_keyring **out, char *msg)
{
    *out = NULL;
    char buf[KEY_FILE_MAX];
    az_err err = AZ_OK;
    const char *current = NULL;
    if (key_b64 && *key_b64) {
        current = key_b64;
    } else if (key_file && *key_file) {
        err = read_key_file(key_file, buf, msg);
        current = buf;
    } else if (data_dir && *data_dir) {
        err = data_dir_key(data_dir, buf, msg);
        current = buf;
    } else {
        return AZ_OK;
    }
    if (err == AZ_OK) err = az_secret_keyring_new(current, previous, out, msg);
    OPENSSL_cleanse(buf, sizeof buf);
    return err;
}

/* ---------------------------------------------------------------- AES-256-GCM */

/* AAD = workspace_id NUL name NUL key_id: a ciphertext decrypts only where it was written. */
static unsigned char *make_aad(const char *ws, const char *name, const char *key_id, size_t *len)
{
    size_t a = strlen(ws), b = strlen(name), c = strlen(key_id);
    unsigned char *p = malloc(a + b + c + 2);
    if (!p) return NULL;
    memcpy(p, ws, a);
    p[a] = 0;
    memcpy(p + a + 1, name, b);
    p[a + 1 + b] = 0;
    memcpy(p + a + b + 2, key_id, c);
    *len = a + b + c + 2;
    return p;
}

static az_err seal(const struct master_key *key, const char *ws, const char *name,
                   const unsigned char *plain, size_t n, sealed *out, char *msg)
{
    memset(out, 0, sizeof *out);
    snprintf(out->key_id, sizeof out->key_id, "%s", key->id);
    size_t aad_len;
    unsigned char *aad = make_aad(ws, name, key->id, &aad_len);
    out->ct = malloc(n ? n : 1);
    EVP_CIPHER_CTX *cx = EVP_CIPHER_CTX_new();
    int len = 0, fin = 0;
    int ok = aad && out->ct && cx && RAND_bytes(out->nonce, NONCE_BYTES) == 1 &&
             EVP_EncryptInit_ex(cx, EVP_aes_256_gcm(), NULL, NULL, NULL) == 1 &&
             EVP_CIPHER_CTX_ctrl(cx, EVP_CTRL_GCM_SET_IVLEN, NONCE_BYTES, NULL) == 1 &&
             EVP_EncryptInit_ex(cx, NULL, NULL, key->key, out->nonce) == 1 &&
             EVP_EncryptUpdate(cx, NULL, &len, aad, (int)aad_len) == 1 &&
             EVP_EncryptUpdate(cx, out->ct, &len, plain, (int)n) == 1 &&
             EVP_EncryptFinal_ex(cx, out->ct + len, &fin) == 1 &&
             EVP_CIPHER_CTX_ctrl(cx, EVP_CTRL_GCM_GET_TAG, TAG_BYTES, out->tag) == 1;
    EVP_CIPHER_CTX_free(cx);
    free(aad);
    if (!ok) {
        free(out->ct);
        out->ct = NULL;
        return az_fail(msg, AZ_ERR_INTERNAL, "cannot encrypt secret %s", name);
    }
    out->len = (size_t)(len + fin);
    return AZ_OK;
}

/* Decrypts s into a malloc'd NUL-terminated *plain (wipe-free it). */
static az_err open_sealed(const az_secret_keyring *k, const char *ws, const char *name, const sealed *s,
                          char **plain, char *msg)
{
    *plain = NULL;
    const struct master_key *key = find_key(k, s->key_id);
    if (!key)
        return az_fail(msg, AZ_ERR_PRECONDITION,
                       "secret %s is encrypted with master key %s, which is not configured (add it "
                       "to AGENTZ_MASTER_KEY_PREVIOUS)",
                       name, s->key_id);
    size_t aad_len;
    unsigned char *aad = make_aad(ws, name, s->key_id, &aad_len);
    unsigned char *out = malloc(s->len + 1);
    EVP_CIPHER_CTX *cx = EVP_CIPHER_CTX_new();
    int len = 0, fin = 0;
    int ok = aad && out && cx && EVP_DecryptInit_ex(cx, EVP_aes_256_gcm(), NULL, NULL, NULL) == 1 &&
             EVP_CIPHER_CTX_ctrl(cx, EVP_CTRL_GCM_SET_IVLEN, NONCE_BYTES, NULL) == 1 &&
             EVP_DecryptInit_ex(cx, NULL, NULL, key->key, s->nonce) == 1 &&
             EVP_DecryptUpdate(cx, NULL, &len, aad, (int)aad_len) == 1 &&
             EVP_DecryptUpdate(cx, out, &len, s->ct, (int)s->len) == 1 &&
             EVP_CIPHER_CTX_ctrl(cx, EVP_CTRL_GCM_SET_TAG, TAG_BYTES, (void *)s->tag) == 1 &&
             EVP_DecryptFinal_ex(cx, out + len, &fin) == 1;
    EVP_CIPHER_CTX_free(cx);
    free(aad);
    if (!ok) {
        if (out) {
            OPENSSL_cleanse(out, s->len + 1);
            free(out);
        }
        return az_fail(msg, AZ_ERR_INTERNAL,
                       "cannot decrypt secret %s: authentication failed (wrong master key or an "
                       "altered row)",
                       name);
    }
    out[len + fin] = '\0';
    *plain = (char *)out;
    return AZ_OK;
}

static void sealed_free(sealed *s)
{
    free(s->ct);
    s->ct = NULL;
}

/* bytea text input: "\x" + hex. malloc'd. */
static char *bytea_hex(const unsigned char *p, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    char *s = malloc(2 * n + 3);
    if (!s) return NULL;
    s[0] = '\\';
    s[1] = 'x';
    for (size_t i = 0; i < n; i++) {
        s[2 + 2 * i] = hex[p[i] >> 4];
        s[3 + 2 * i] = hex[p[i] & 15];
    }
    s[2 + 2 * n] = '\0';
    return s;
}

/* Reads key_id, nonce, ciphertext, tag from columns col..col+3 of a text result. */
static az_err sealed_from_row(const PGresult *r, int row, int col, sealed *s, char *msg)
{
    memset(s, 0, sizeof *s);
    snprintf(s->key_id, sizeof s->key_id, "%s", PQgetvalue(r, row, col));
    size_t n1 = 0, n2 = 0, n3 = 0;
    unsigned char *nonce = PQunescapeBytea((const unsigned char *)PQgetvalue(r, row, col + 1), &n1);
    unsigned char *ct = PQunescapeBytea((const unsigned char *)PQgetvalue(r, row, col + 2), &n2);
    unsigned char *tag = PQunescapeBytea((const unsigned char *)PQgetvalue(r, row, col + 3), &n3);
    az_err err = AZ_OK;
    if (!nonce || !ct || !tag) err = az_fail(msg, AZ_ERR_NOMEM, "out of memory");
    else if (n1 != NONCE_BYTES || n3 != TAG_BYTES) err = az_fail(msg, AZ_ERR_INTERNAL, "malformed secret row");
    else if (!(s->ct = malloc(n2 ? n2 : 1))) err = az_fail(msg, AZ_ERR_NOMEM, "out of memory");
    if (err == AZ_OK) {
        memcpy(s->nonce, nonce, NONCE_BYTES);
        memcpy(s->tag, tag, TAG_BYTES);
        memcpy(s->ct, ct, n2);
        s->len = n2;
    }
    PQfreemem(nonce);
    PQfreemem(ct);
    PQfreemem(tag);
    return err;
}

/* ---------------------------------------------------------------- rows */

#define COLS                                                                                     \
    "name, (extract(epoch FROM create_time) * 1000000)::bigint,"                                 \
    " (extract(epoch FROM update_time) * 1000000)::bigint, workspace_id::text"

static az_err from_row(const PGresult *r, int row, az_arena *a, Agentz__V1__Secret **out, char *msg)
{
    Agentz__V1__Secret *s = az_arena_alloc(a, sizeof *s);
    if (!s) return az_fail(msg, AZ_ERR_NOMEM, "out of memory");
    agentz__v1__secret__init(s);
    s->name = az_arena_strdup(a, PQgetvalue(r, row, 0));
    s->create_time = az_pbtime_timestamp(a, atoll(PQgetvalue(r, row, 1)));
    s->update_time = az_pbtime_timestamp(a, atoll(PQgetvalue(r, row, 2)));
    s->workspace_id = az_arena_strdup(a, PQgetvalue(r, row, 3));
    if (!s->name || !s->create_time || !s->update_time || !s->workspace_id)
        return az_fail(msg, AZ_ERR_NOMEM, "out of memory");
    *out = s;
    return AZ_OK;
}

static az_err check_name(const char *name, char *msg)
{
    size_t n = name ? strlen(name) : 0;
    if (n == 0) return az_fail(msg, AZ_ERR_INVALID, "name is required");
    if (n > AZ_SECRET_NAME_MAX)
        return az_fail(msg, AZ_ERR_INVALID, "name: longer than %d characters", AZ_SECRET_NAME_MAX);
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
              c == '-' || c == '.'))
            return az_fail(msg, AZ_ERR_INVALID, "name: a secret name uses only letters, digits, '_', '-' and '.'");
    }
    return AZ_OK;
}

static int has_workspace(const az_ctx *ctx) { return ctx && ctx->workspace_id && az_text_is_uuid(ctx->workspace_id); }

/* ---------------------------------------------------------------- put */

/* HMAC under the current master key of what makes two CreateSecret requests the same: stored in
 * idempotency_keys, so a plain hash of the value would be a way to guess it. */
static az_err request_hash(const az_secret_keyring *k, const char *name, const char *value, char hex[65],
                           char *msg)
{
    size_t a = strlen(name), b = strlen(value);
    unsigned char *buf = malloc(a + b + 1);
    if (!buf) return az_fail(msg, AZ_ERR_NOMEM, "out of memory");
    memcpy(buf, name, a);
    buf[a] = 0;
    memcpy(buf + a + 1, value, b);
    unsigned char md[32];
    unsigned int len = 0;
    int ok = HMAC(EVP_sha256(), k->keys[0].key, KEY_BYTES, buf, a + b + 1, md, &len) != NULL;
    OPENSSL_cleanse(buf, a + b + 1);
    free(buf);
    if (!ok) return az_fail(msg, AZ_ERR_INTERNAL, "cannot hash the request");
    for (int i = 0; i < 32; i++) snprintf(hex + 2 * i, 3, "%02x", md[i]);
    return AZ_OK;
}

static az_err upsert(az_pgconn *c, const az_ctx *ctx, const char *id, const char *name, const sealed *s,
                     az_arena *a, Agentz__V1__Secret **out, char *msg)
{
    char *nonce = bytea_hex(s->nonce, NONCE_BYTES), *ct = bytea_hex(s->ct, s->len),
         *tag = bytea_hex(s->tag, TAG_BYTES);
    az_err err = AZ_OK;
    PGresult *r = NULL;
    if (!nonce || !ct || !tag) err = az_fail(msg, AZ_ERR_NOMEM, "out of memory");
    const char *p[7] = {ctx->workspace_id, name, id, s->key_id, nonce, ct, tag};
    if (err == AZ_OK)
        err = az_pg_exec(c, ctx,
                         "INSERT INTO secrets (workspace_id, name, id, key_id, nonce, ciphertext, tag)"
                         " VALUES ($1, $2, $3, $4, $5::bytea, $6::bytea, $7::bytea)"
                         " ON CONFLICT (workspace_id, name) DO UPDATE SET id = EXCLUDED.id,"
                         " version = secrets.version + 1, key_id = EXCLUDED.key_id,"
                         " nonce = EXCLUDED.nonce, ciphertext = EXCLUDED.ciphertext, tag = EXCLUDED.tag,"
                         " update_time = clock_timestamp()"
                         " RETURNING " COLS,
                         7, p, &r, msg);
    if (err == AZ_OK) err = from_row(r, 0, a, out, msg);
    PQclear(r);
    free(nonce);
    free(ct);
    free(tag);
    return err;
}

/* A replayed CreateSecret: the version it wrote, or (replaced since) the secret as it is now. */
static az_err fetch_replay(az_pgconn *c, const az_ctx *ctx, const char *id, const char *name, az_arena *a,
                           Agentz__V1__Secret **out, char *msg)
{
    const char *p[3] = {ctx->workspace_id, id, name};
    PGresult *r;
    az_err err = az_pg_exec(c, ctx,
                            "SELECT " COLS " FROM secrets WHERE workspace_id = $1"
                            " AND (id = $2::uuid OR name = $3) ORDER BY (id = $2::uuid) DESC LIMIT 1",
                            3, p, &r, msg);
    if (err != AZ_OK) return err;
    if (PQntuples(r) == 0) err = az_fail(msg, AZ_ERR_NOT_FOUND, "secret %s not found (deleted since)", name);
    else err = from_row(r, 0, a, out, msg);
    PQclear(r);
    return err;
}

az_err az_secret_put(az_pg *pg, const az_ctx *ctx, az_secret_keyring *k, const char *name,
                     const char *value, const char *request_id, az_arena *a, Agentz__V1__Secret **out,
                     char *msg)
{
    *out = NULL;
    if (!k)
        return az_fail(msg, AZ_ERR_PRECONDITION,
                       "secrets are unavailable: no master key is configured (AGENTZ_MASTER_KEY)");
    az_err err = check_name(name, msg);
    if (err != AZ_OK) return err;
    size_t n = value ? strlen(value) : 0;
    if (n == 0) return az_fail(msg, AZ_ERR_INVALID, "value is required");
    if (n > AZ_SECRET_VALUE_MAX)
        return az_fail(msg, AZ_ERR_INVALID, "value: longer than %d bytes", AZ_SECRET_VALUE_MAX);
    if (!has_workspace(ctx)) return az_fail(msg, AZ_ERR_INVALID, "workspace: a secret needs a workspace");
    char id[37], hash[65] = "";
    if (az_text_uuid4(id) != AZ_OK) return az_fail(msg, AZ_ERR_IO, "cannot generate an id");
    int idem = request_id && *request_id;
    if (idem && (err = request_hash(k, name, value, hash, msg)) != AZ_OK) return err;
    sealed s;
    if ((err = seal(&k->keys[0], ctx->workspace_id, name, (const unsigned char *)value, n, &s, msg)) != AZ_OK)
        return err;
    az_pgconn *c;
    if ((err = az_pg_acquire(pg, ctx, &c, msg)) != AZ_OK) {
        sealed_free(&s);
        return err;
    }
    if (!idem) {
        err = upsert(c, ctx, id, name, &s, a, out, msg);
    } else if ((err = az_pg_begin(c, ctx, msg)) == AZ_OK) {
        char existing[37];
        err = az_idem_claim(c, ctx, "CreateSecret", request_id, hash, id, existing, msg);
        if (err == AZ_OK && existing[0]) err = fetch_replay(c, ctx, existing, name, a, out, msg);
        else if (err == AZ_OK) err = upsert(c, ctx, id, name, &s, a, out, msg);
        if (err == AZ_OK) err = az_pg_commit(c, ctx, msg);
    }
    az_pg_release(c);
    sealed_free(&s);
    if (err != AZ_OK) *out = NULL;
    return err;
}

/* ---------------------------------------------------------------- list and delete */

az_err az_secret_list(az_pg *pg, const az_ctx *ctx, int page_size, const char *page_token, az_arena *a,
                      Agentz__V1__ListSecretsResponse **out, char *msg)
{
    *out = NULL;
    if (page_size < 1) page_size = 1;
    /* The token carries "s1|<last name>" (core/pagetoken). */
    char after[AZ_PAGETOKEN_RAW_MAX + 1] = "";
    if (page_token && *page_token) {
        char raw[AZ_PAGETOKEN_RAW_MAX + 1];
        az_err terr = az_pagetoken_decode(page_token, raw, msg);
        if (terr != AZ_OK) return terr;
        if (strncmp(raw, "s1|", 3) != 0 || check_name(raw + 3, NULL) != AZ_OK)
            return az_fail(msg, AZ_ERR_INVALID, "page_token is invalid");
        snprintf(after, sizeof after, "%s", raw + 3);
    }
    char limit[16];
    snprintf(limit, sizeof limit, "%d", page_size + 1);
    const char *p[3] = {ctx->workspace_id, after, limit};
    az_pgconn *c;
    az_err err = az_pg_acquire(pg, ctx, &c, msg);
    if (err != AZ_OK) return err;
    PGresult *r;
    err = az_pg_exec(c, ctx,
                     "SELECT " COLS " FROM secrets WHERE workspace_id = $1 AND name COLLATE \"C\" > $2"
                     " ORDER BY name COLLATE \"C\" LIMIT $3::integer",
                     3, p, &r, msg);
    az_pg_release(c);
    if (err != AZ_OK) return err;
    int rows = PQntuples(r), n = rows > page_size ? page_size : rows;
    Agentz__V1__ListSecretsResponse *resp = az_arena_alloc(a, sizeof *resp);
    if (resp) {
        agentz__v1__list_secrets_response__init(resp);
        resp->secrets = az_arena_alloc(a, (size_t)(n ? n : 1) * sizeof *resp->secrets);
    }
    if (!resp || !resp->secrets) err = az_fail(msg, AZ_ERR_NOMEM, "out of memory");
    for (int i = 0; i < n && err == AZ_OK; i++) err = from_row(r, i, a, &resp->secrets[i], msg);
    if (err == AZ_OK) {
        resp->n_secrets = (size_t)n;
        if (rows > page_size) {
            char raw[AZ_PAGETOKEN_RAW_MAX + 1];
            snprintf(raw, sizeof raw, "s1|%s", PQgetvalue(r, n - 1, 0));
            if (!(resp->next_page_token = az_pagetoken_encode(a, raw)))
                err = az_fail(msg, AZ_ERR_NOMEM, "out of memory");
        }
    }
    PQclear(r);
    if (err == AZ_OK) *out = resp;
    return err;
}

az_err az_secret_delete(az_pg *pg, const az_ctx *ctx, const char *name, char *msg)
{
    if (check_name(name, NULL) != AZ_OK)
        return az_fail(msg, AZ_ERR_NOT_FOUND, "secret %.130s not found", name ? name : "");
    az_pgconn *c;
    az_err err = az_pg_acquire(pg, ctx, &c, msg);
    if (err != AZ_OK) return err;
    const char *p[2] = {ctx->workspace_id, name};
    PGresult *r;
    err = az_pg_exec(c, ctx, "DELETE FROM secrets WHERE workspace_id = $1 AND name = $2", 2, p, &r, msg);
    if (err == AZ_OK) {
        if (atoi(PQcmdTuples(r)) == 0) err = az_fail(msg, AZ_ERR_NOT_FOUND, "secret %s not found", name);
        PQclear(r);
    }
    az_pg_release(c);
    return err;
}

/* ---------------------------------------------------------------- plaintext for the engine */

az_err az_secret_get_value(az_pg *pg, const az_ctx *ctx, az_secret_keyring *k, const char *name,
                           char **value, char *msg)
{
    *value = NULL;
    if (!k)
        return az_fail(msg, AZ_ERR_PRECONDITION,
                       "secrets are unavailable: no master key is configured (AGENTZ_MASTER_KEY)");
    if (check_name(name, NULL) != AZ_OK || !has_workspace(ctx))
        return az_fail(msg, AZ_ERR_NOT_FOUND, "secret %.130s not found", name ? name : "");
    az_pgconn *c;
    az_err err = az_pg_acquire(pg, ctx, &c, msg);
    if (err != AZ_OK) return err;
    const char *p[2] = {ctx->workspace_id, name};
    PGresult *r;
    err = az_pg_exec(c, ctx,
                     "SELECT key_id, nonce, ciphertext, tag FROM secrets WHERE workspace_id = $1 AND name = $2",
                     2, p, &r, msg);
    az_pg_release(c);
    if (err != AZ_OK) return err;
    sealed s = {0};
    if (PQntuples(r) == 0) err = az_fail(msg, AZ_ERR_NOT_FOUND, "secret %s not found", name);
    else err = sealed_from_row(r, 0, 0, &s, msg);
    PQclear(r);
    if (err == AZ_OK) err = open_sealed(k, ctx->workspace_id, name, &s, value, msg);
    sealed_free(&s);
    return err;
}

void az_secret_wipe_free(char *value)
{
    if (!value) return;
    OPENSSL_cleanse(value, strlen(value));
    free(value);
}

/* ---------------------------------------------------------------- rotation */

/* One batch in one transaction: rows locked, re-encrypted under the current key, updated. */
static az_err rotate_batch(az_pgconn *c, const az_ctx *ctx, const az_secret_keyring *k, int *done, char *msg)
{
    *done = 0;
    char limit[16];
    snprintf(limit, sizeof limit, "%d", ROTATE_BATCH);
    const char *p[2] = {k->keys[0].id, limit};
    PGresult *r;
    az_err err = az_pg_begin(c, ctx, msg);
    if (err != AZ_OK) return err;
    err = az_pg_exec(c, ctx,
                     "SELECT workspace_id::text, name, key_id, nonce, ciphertext, tag FROM secrets"
                     " WHERE key_id <> $1 ORDER BY workspace_id, name LIMIT $2::integer FOR UPDATE",
                     2, p, &r, msg);
    if (err != AZ_OK) return err;
    int rows = PQntuples(r);
    for (int i = 0; i < rows && err == AZ_OK; i++) {
        const char *ws = PQgetvalue(r, i, 0), *name = PQgetvalue(r, i, 1);
        sealed old, fresh = {0};
        char *plain = NULL;
        err = sealed_from_row(r, i, 2, &old, msg);
        if (err == AZ_OK) err = open_sealed(k, ws, name, &old, &plain, msg);
        if (err == AZ_OK)
            err = seal(&k->keys[0], ws, name, (const unsigned char *)plain, old.len, &fresh, msg);
        az_secret_wipe_free(plain);
        sealed_free(&old);
        if (err != AZ_OK) {
            char m[AZ_MSG_MAX];
            snprintf(m, sizeof m, "workspace %s: %s", ws, msg);
            az_fail(msg, err, "%s", m);
            break;
        }
        char *nonce = bytea_hex(fresh.nonce, NONCE_BYTES), *ct = bytea_hex(fresh.ct, fresh.len),
             *tag = bytea_hex(fresh.tag, TAG_BYTES);
        const char *q[6] = {ws, name, fresh.key_id, nonce, ct, tag};
        if (!nonce || !ct || !tag) err = az_fail(msg, AZ_ERR_NOMEM, "out of memory");
        else
            err = az_pg_exec(c, ctx,
                             "UPDATE secrets SET key_id = $3, nonce = $4::bytea, ciphertext = $5::bytea,"
                             " tag = $6::bytea WHERE workspace_id = $1 AND name = $2",
                             6, q, NULL, msg);
        free(nonce);
        free(ct);
        free(tag);
        sealed_free(&fresh);
    }
    PQclear(r);
    if (err == AZ_OK) err = az_pg_commit(c, ctx, msg);
    if (err == AZ_OK) *done = rows;
    return err;
}

az_err az_secret_rotate(az_pg *pg, az_secret_keyring *k, int64_t *rotated, char *msg)
{
    if (rotated) *rotated = 0;
    if (!k) return az_fail(msg, AZ_ERR_PRECONDITION, "no master key is configured (AGENTZ_MASTER_KEY)");
    /* Every workspace's rows: system work. */
    az_ctx ctx = {.deadline_ms = -1};
    az_pgconn *c;
    az_err err = az_pg_acquire(pg, &ctx, &c, msg);
    if (err != AZ_OK) return err;
    int done;
    do {
        err = rotate_batch(c, &ctx, k, &done, msg);
        if (err == AZ_OK && rotated) *rotated += done;
    } while (err == AZ_OK && done == ROTATE_BATCH);
    az_pg_release(c);
    return err;
}
