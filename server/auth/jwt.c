/* Clerk session-token verification: a JWKS fetched with libcurl and cached as PEM public keys by
 * kid, a header check that pins RS256 before any cryptography, libjwt for the RSA signature,
 * and our own strict parse of the signed claims. */
#include "jwt.h"

#include <ctype.h>
#include <curl/curl.h>
#include <jansson.h>
#include <jwt.h>
#include <math.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>
#include <openssl/pem.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "core/ctx.h"
#include "core/log.h"

#ifndef AZ_VERSION
#define AZ_VERSION "0.1.0"
#endif

#define MAX_PARTIES 32

/* One public key from the JWKS, kept as PEM because that is what libjwt 1.10 verifies with. */
typedef struct key {
    char kid[128];
    char *pem;
    int pem_len;
} key;

/* An immutable set of keys from one fetch. Verifications hold a reference, so a refresh can
 * swap in a new set while others still verify with the old one. */
typedef struct keyset {
    atomic_int refs;
    int n;
    int64_t loaded_ms; /* az_now_ms() of the fetch */
    key keys[];
} keyset;

struct az_jwt_verifier {
    char *jwks_url;
    char *issuer;
    char *parties[MAX_PARTIES];
    int nparties;
    int loopback_http; /* jwks_url is http:// to a loopback host (tests) */
    int leeway_s, refresh_ms, timeout_ms, max_keys, max_age_ms;

    pthread_mutex_t mu; /* guards set */
    keyset *set;        /* NULL until the first successful fetch */

    pthread_mutex_t fetch_mu; /* one fetch at a time; guards fetched and last_fetch_ms */
    int fetched;
    int64_t last_fetch_ms;
    atomic_int fetches;
};

/* ---------------------------------------------------------------- small helpers */

static void keyset_unref(keyset *s)
{
    if (!s || atomic_fetch_sub(&s->refs, 1) != 1) return;
    for (int i = 0; i < s->n; i++) free(s->keys[i].pem);
    free(s);
}

/* The current set with a reference taken, or NULL. */
static keyset *keyset_get(az_jwt_verifier *v)
{
    pthread_mutex_lock(&v->mu);
    keyset *s = v->set;
    if (s) atomic_fetch_add(&s->refs, 1);
    pthread_mutex_unlock(&v->mu);
    return s;
}

static const key *keyset_find(const keyset *s, const char *kid)
{
    if (!s) return NULL;
    for (int i = 0; i < s->n; i++) {
        if (strcmp(s->keys[i].kid, kid) == 0) return &s->keys[i];
    }
    return NULL;
}

static int b64url_value(unsigned char c)
{
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '-') return 62;
    if (c == '_') return 63;
    return -1;
}

/* Strict unpadded base64url (RFC 7515 §2): any other character, or a length that cannot
 * occur, fails. Returns a malloc'd buffer with a NUL after the *outlen bytes, or NULL. */
static unsigned char *b64url_decode(const char *in, size_t len, size_t *outlen)
{
    if (len % 4 == 1) return NULL;
    unsigned char *out = malloc(len / 4 * 3 + 3);
    if (!out) return NULL;
    size_t o = 0;
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < len; i++) {
        int val = b64url_value((unsigned char)in[i]);
        if (val < 0) {
            free(out);
            return NULL;
        }
        acc = (acc << 6) | (uint32_t)val;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (unsigned char)(acc >> bits);
            acc &= (1u << bits) - 1;
        }
    }
    out[o] = 0;
    *outlen = o;
    return out;
}

/* Characters we accept in a kid, so it can be quoted in messages and logs as is. */
static int kid_ok(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n >= sizeof(((key *)0)->kid)) return 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (!isalnum(c) && !strchr("-_.~+/=:", c)) return 0;
    }
    return 1;
}

/* Printable ASCII without quotes or backslashes: claims that end up in principals, workspace
 * names and log lines. */
static int claim_text_ok(const char *s)
{
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c < 0x21 || c > 0x7e || c == '"' || c == '\\') return 0;
    }
    return 1;
}

/* Host part of an http(s) URL's authority: 1 when it is a loopback literal or localhost. */
static int url_host_is_loopback(const char *authority, size_t len)
{
    static const char *const hosts[] = {"127.0.0.1", "localhost", "[::1]"};
    size_t hl = len;
    if (authority[0] == '[') {
        const char *close = memchr(authority, ']', len);
        if (!close) return 0;
        hl = (size_t)(close - authority) + 1;
    } else {
        const char *colon = memchr(authority, ':', len);
        if (colon) hl = (size_t)(colon - authority);
    }
    for (size_t i = 0; i < sizeof hosts / sizeof *hosts; i++) {
        if (strlen(hosts[i]) == hl && strncasecmp(authority, hosts[i], hl) == 0) return 1;
    }
    return 0;
}

/* https:// anywhere, or http:// to a loopback host; no userinfo (a classic way to make
 * "http://127.0.0.1@evil.example/" look local). Sets *loopback_http. */
static az_err check_url(const char *url, int *loopback_http, char *msg)
{
    const char *rest = NULL;
    *loopback_http = 0;
    if (strncasecmp(url, "https://", 8) == 0) rest = url + 8;
    else if (strncasecmp(url, "http://", 7) == 0) rest = url + 7;
    else
        return az_fail(msg, AZ_ERR_INVALID,
                       "AGENTZ_JWKS_URL must be an https:// URL, not \"%.200s\"", url);
    size_t alen = strcspn(rest, "/?#");
    if (alen == 0) return az_fail(msg, AZ_ERR_INVALID, "AGENTZ_JWKS_URL has no host");
    if (memchr(rest, '@', alen))
        return az_fail(msg, AZ_ERR_INVALID, "AGENTZ_JWKS_URL must not contain user information");
    for (const char *p = url; *p; p++) {
        if ((unsigned char)*p <= 0x20 || (unsigned char)*p >= 0x7f)
            return az_fail(msg, AZ_ERR_INVALID,
                           "AGENTZ_JWKS_URL contains spaces or control characters");
    }
    if (rest == url + 7) {
        if (!url_host_is_loopback(rest, alen))
            return az_fail(msg, AZ_ERR_INVALID,
                           "AGENTZ_JWKS_URL must use https (plain http only to 127.0.0.1, [::1] or "
                           "localhost)");
        *loopback_http = 1;
    }
    return AZ_OK;
}

/* ---------------------------------------------------------------- JWKS: fetch and parse */

typedef struct body {
    char *p;
    size_t len;
    int too_big;
} body;

static size_t on_body(char *data, size_t size, size_t nmemb, void *arg)
{
    body *b = arg;
    size_t n = size * nmemb;
    if (b->len + n > AZ_JWT_MAX_JWKS) {
        b->too_big = 1;
        return 0; /* makes curl abort with CURLE_WRITE_ERROR */
    }
    char *p = realloc(b->p, b->len + n + 1);
    if (!p) return 0;
    memcpy(p + b->len, data, n);
    b->p = p;
    b->len += n;
    p[b->len] = 0;
    return n;
}

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static void curl_init_once(void) { curl_global_init(CURL_GLOBAL_DEFAULT); }

/* GETs the JWKS into *out (malloc'd, NUL-terminated). AZ_ERR_UNAVAILABLE on any failure. */
static az_err fetch_jwks(az_jwt_verifier *v, body *out, char *msg)
{
    memset(out, 0, sizeof *out);
    CURL *h = curl_easy_init();
    if (!h) return az_fail(msg, AZ_ERR_NOMEM, "cannot fetch jwks: out of memory");
    char errbuf[CURL_ERROR_SIZE] = "";
    struct curl_slist *hdrs = curl_slist_append(NULL, "Accept: application/json");
    curl_easy_setopt(h, CURLOPT_URL, v->jwks_url);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L); /* we run on many threads */
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, (long)v->timeout_ms);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, (long)v->timeout_ms);
    curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L); /* a redirect could lead anywhere */
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, v->loopback_http ? "http" : "https");
    curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, 1L);
    curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, 2L);
    curl_easy_setopt(h, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)AZ_JWT_MAX_JWKS);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, out);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf);
    curl_easy_setopt(h, CURLOPT_USERAGENT, "agentzd/" AZ_VERSION);
    if (v->loopback_http) curl_easy_setopt(h, CURLOPT_PROXY, ""); /* never via a proxy */
    CURLcode rc = curl_easy_perform(h);
    long status = 0;
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_cleanup(h);
    curl_slist_free_all(hdrs);

    az_err err = AZ_OK;
    if (out->too_big || rc == CURLE_FILESIZE_EXCEEDED)
        err = az_fail(msg, AZ_ERR_UNAVAILABLE, "cannot fetch jwks from %s: larger than %d bytes",
                      v->jwks_url, AZ_JWT_MAX_JWKS);
    else if (rc != CURLE_OK)
        err = az_fail(msg, AZ_ERR_UNAVAILABLE, "cannot fetch jwks from %s: %s", v->jwks_url,
                      errbuf[0] ? errbuf : curl_easy_strerror(rc));
    else if (status != 200)
        err = az_fail(msg, AZ_ERR_UNAVAILABLE, "cannot fetch jwks from %s: http status %ld",
                      v->jwks_url, status);
    else if (!out->p)
        err = az_fail(msg, AZ_ERR_UNAVAILABLE, "cannot fetch jwks from %s: empty response",
                      v->jwks_url);
    if (err != AZ_OK) {
        free(out->p);
        memset(out, 0, sizeof *out);
    }
    return err;
}

/* The PEM (SubjectPublicKeyInfo) of the RSA key (n, e), both big-endian; NULL when the key is
 * unusable. Moduli below 2048 or above 8192 bits and even or tiny exponents are refused. */
static char *rsa_pem(const unsigned char *n, size_t nlen, const unsigned char *e, size_t elen,
                     int *pem_len)
{
    char *pem = NULL;
    BIGNUM *bn = BN_bin2bn(n, (int)nlen, NULL), *be = BN_bin2bn(e, (int)elen, NULL);
    OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
    OSSL_PARAM *params = NULL;
    EVP_PKEY_CTX *ctx = NULL;
    EVP_PKEY *pkey = NULL;
    BIO *bio = NULL;
    if (!bn || !be || !bld) goto out;
    if (BN_num_bits(bn) < 2048 || BN_num_bits(bn) > 8192) goto out;
    if (!BN_is_odd(be) || BN_num_bits(be) < 2 || BN_num_bits(be) > 64) goto out;
    if (!OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, bn) ||
        !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, be))
        goto out;
    params = OSSL_PARAM_BLD_to_param(bld);
    ctx = EVP_PKEY_CTX_new_from_name(NULL, "RSA", NULL);
    if (!params || !ctx || EVP_PKEY_fromdata_init(ctx) <= 0 ||
        EVP_PKEY_fromdata(ctx, &pkey, EVP_PKEY_PUBLIC_KEY, params) <= 0)
        goto out;
    bio = BIO_new(BIO_s_mem());
    if (!bio || !PEM_write_bio_PUBKEY(bio, pkey)) goto out;
    char *data = NULL;
    long len = BIO_get_mem_data(bio, &data);
    if (len <= 0 || !(pem = malloc((size_t)len + 1))) goto out;
    memcpy(pem, data, (size_t)len);
    pem[len] = 0;
    *pem_len = (int)len;
out:
    BIO_free(bio);
    EVP_PKEY_free(pkey);
    EVP_PKEY_CTX_free(ctx);
    OSSL_PARAM_free(params);
    OSSL_PARAM_BLD_free(bld);
    BN_free(bn);
    BN_free(be);
    return pem;
}

/* The string member name of o, or NULL when absent or not a string. */
static const char *jstr(json_t *o, const char *name)
{
    json_t *m = json_object_get(o, name);
    return json_is_string(m) ? json_string_value(m) : NULL;
}

/* Turns one JWK into k; 0 when it is not a usable RS256 signing key (skipped, not an error:
 * a JWKS may carry keys for other purposes). */
static int jwk_to_key(json_t *jwk, key *k)
{
    const char *kty = jstr(jwk, "kty"), *kid = jstr(jwk, "kid"), *use = jstr(jwk, "use");
    const char *alg = jstr(jwk, "alg"), *n = jstr(jwk, "n"), *e = jstr(jwk, "e");
    if (!json_is_object(jwk) || !kty || strcmp(kty, "RSA") != 0 || !kid || !kid_ok(kid) || !n || !e)
        return 0;
    if (json_object_get(jwk, "use") && (!use || strcmp(use, "sig") != 0)) return 0;
    if (json_object_get(jwk, "alg") && (!alg || strcmp(alg, "RS256") != 0)) return 0;
    size_t nlen = 0, elen = 0;
    unsigned char *nb = b64url_decode(n, strlen(n), &nlen),
                  *eb = b64url_decode(e, strlen(e), &elen);
    int ok = 0;
    if (nb && eb && nlen <= 1025 && elen <= 8) {
        k->pem = rsa_pem(nb, nlen, eb, elen, &k->pem_len);
        if (k->pem) {
            snprintf(k->kid, sizeof k->kid, "%s", kid);
            ok = 1;
        }
    }
    free(nb);
    free(eb);
    return ok;
}

/* Parses a JWKS document into a new set (one reference). AZ_ERR_INVALID when it is not a JWKS
 * or holds no usable key. Keeps at most max_keys keys, the first of each kid. */
static az_err parse_jwks(az_jwt_verifier *v, const char *doc, size_t len, keyset **out, char *msg)
{
    json_error_t jerr;
    json_t *root = json_loadb(doc, len, JSON_REJECT_DUPLICATES, &jerr);
    json_t *keys = json_is_object(root) ? json_object_get(root, "keys") : NULL;
    if (!json_is_array(keys)) {
        json_decref(root);
        return az_fail(msg, AZ_ERR_INVALID, "jwks from %s is not a JSON object with a keys array",
                       v->jwks_url);
    }
    keyset *s = calloc(1, sizeof *s + (size_t)v->max_keys * sizeof(key));
    if (!s) {
        json_decref(root);
        return az_fail(msg, AZ_ERR_NOMEM, "out of memory");
    }
    atomic_init(&s->refs, 1);
    size_t i;
    json_t *jwk;
    int skipped = 0;
    json_array_foreach (keys, i, jwk) {
        if (s->n == v->max_keys) {
            skipped++;
            continue;
        }
        key k = {.pem = NULL};
        if (!jwk_to_key(jwk, &k)) {
            skipped++;
            continue;
        }
        if (keyset_find(s, k.kid)) {
            free(k.pem);
            skipped++;
            continue;
        }
        s->keys[s->n++] = k;
    }
    json_decref(root);
    if (s->n == 0) {
        keyset_unref(s);
        return az_fail(msg, AZ_ERR_INVALID, "jwks from %s holds no usable RS256 key", v->jwks_url);
    }
    if (skipped)
        az_debug("jwks from %s: %d keys skipped (not RS256 signing keys, or past %d)", v->jwks_url,
                 skipped, v->max_keys);
    s->loaded_ms = az_now_ms();
    *out = s;
    return AZ_OK;
}

/* One fetch; caller holds fetch_mu. Replaces the set on success. */
static az_err refresh_locked(az_jwt_verifier *v, char *msg)
{
    v->fetched = 1;
    v->last_fetch_ms = az_now_ms();
    atomic_fetch_add(&v->fetches, 1);
    body b;
    az_err err = fetch_jwks(v, &b, msg);
    keyset *s = NULL;
    if (err == AZ_OK) err = parse_jwks(v, b.p, b.len, &s, msg);
    free(b.p);
    if (err != AZ_OK) {
        az_warn("%s", msg);
        return err;
    }
    pthread_mutex_lock(&v->mu);
    keyset *old = v->set;
    v->set = s;
    pthread_mutex_unlock(&v->mu);
    keyset_unref(old);
    az_info("loaded %d signing keys from %s", s->n, v->jwks_url);
    return AZ_OK;
}

az_err az_jwt_refresh(az_jwt_verifier *v, char *msg)
{
    pthread_mutex_lock(&v->fetch_mu);
    az_err err = refresh_locked(v, msg);
    pthread_mutex_unlock(&v->fetch_mu);
    return err;
}

int az_jwt_fetch_count(az_jwt_verifier *v) { return atomic_load(&v->fetches); }

static int stale(const az_jwt_verifier *v, const keyset *s)
{
    return !s || az_now_ms() - s->loaded_ms > v->max_age_ms;
}

/* The key set holding kid (a reference the caller drops), fetching the JWKS once when kid is
 * unknown or the keys are old, unless a fetch happened less than refresh_ms ago. */
static az_err key_for(az_jwt_verifier *v, const char *kid, keyset **out, const key **k, char *msg)
{
    keyset *s = keyset_get(v);
    int known = keyset_find(s, kid) != NULL;
    if (known && !stale(v, s)) goto found;
    /* Known but old: one caller refreshes, the others go on with the key they have instead of
     * queueing behind a fetch that may take the whole timeout. */
    if (known && pthread_mutex_trylock(&v->fetch_mu) != 0) goto found;
    keyset_unref(s);

    char fmsg[AZ_MSG_MAX] = "";
    if (!known) pthread_mutex_lock(&v->fetch_mu);
    s = keyset_get(v); /* another thread may have fetched while we waited */
    if (!keyset_find(s, kid) || stale(v, s)) {
        if (!v->fetched || az_now_ms() - v->last_fetch_ms >= v->refresh_ms)
            (void)refresh_locked(v, fmsg); /* logged there; the outcome is the set below */
        keyset_unref(s);
        s = keyset_get(v);
    }
    pthread_mutex_unlock(&v->fetch_mu);
    if (keyset_find(s, kid)) goto found; /* possibly stale: better than refusing everyone */
    if (!s)
        return az_fail(msg, AZ_ERR_UNAUTHENTICATED,
                       "cannot verify session token: signing keys are unavailable");
    keyset_unref(s);
    return az_fail(msg, AZ_ERR_UNAUTHENTICATED,
                   "session token is signed by an unknown key (kid \"%s\")", kid);
found:
    *out = s;
    *k = keyset_find(s, kid);
    return AZ_OK;
}

/* ---------------------------------------------------------------- the verifier */

az_jwt_verifier *az_jwt_verifier_new(const az_jwt_config *cfg, char *msg)
{
    if (!cfg || !cfg->jwks_url || !*cfg->jwks_url) {
        az_fail(msg, AZ_ERR_INVALID, "AGENTZ_JWKS_URL is required for session tokens");
        return NULL;
    }
    if (!cfg->issuer || !*cfg->issuer) {
        az_fail(msg, AZ_ERR_INVALID, "AGENTZ_JWT_ISSUER is required with AGENTZ_JWKS_URL");
        return NULL;
    }
    int loopback_http = 0;
    if (check_url(cfg->jwks_url, &loopback_http, msg) != AZ_OK) return NULL;
    pthread_once(&curl_once, curl_init_once);

    az_jwt_verifier *v = calloc(1, sizeof *v);
    if (!v) {
        az_fail(msg, AZ_ERR_NOMEM, "out of memory");
        return NULL;
    }
    pthread_mutex_init(&v->mu, NULL);
    pthread_mutex_init(&v->fetch_mu, NULL);
    atomic_init(&v->fetches, 0);
    v->loopback_http = loopback_http;
    v->leeway_s = cfg->leeway_s == 0  ? AZ_JWT_DEFAULT_LEEWAY_S
                  : cfg->leeway_s < 0 ? 0
                                      : cfg->leeway_s;
    v->refresh_ms =
        cfg->refresh_interval_ms > 0 ? cfg->refresh_interval_ms : AZ_JWT_DEFAULT_REFRESH_MS;
    v->timeout_ms = cfg->timeout_ms > 0 ? cfg->timeout_ms : AZ_JWT_DEFAULT_TIMEOUT_MS;
    v->max_keys = cfg->max_keys > 0 ? cfg->max_keys : AZ_JWT_DEFAULT_MAX_KEYS;
    v->max_age_ms = cfg->max_age_ms > 0 ? cfg->max_age_ms : AZ_JWT_DEFAULT_MAX_AGE_MS;
    v->jwks_url = strdup(cfg->jwks_url);
    v->issuer = strdup(cfg->issuer);
    if (!v->jwks_url || !v->issuer) goto nomem;

    /* "https://app.example.com, https://admin.example.com" */
    const char *p = cfg->authorized_parties ? cfg->authorized_parties : "";
    while (*p) {
        size_t n = strcspn(p, ",");
        const char *s = p, *e = p + n;
        while (s < e && isspace((unsigned char)*s)) s++;
        while (e > s && isspace((unsigned char)e[-1])) e--;
        if (e > s) {
            if (v->nparties == MAX_PARTIES) {
                az_fail(msg, AZ_ERR_INVALID, "AGENTZ_JWT_AUTHORIZED_PARTIES: more than %d entries",
                        MAX_PARTIES);
                az_jwt_verifier_free(v);
                return NULL;
            }
            if (!(v->parties[v->nparties++] = strndup(s, (size_t)(e - s)))) goto nomem;
        }
        p += n;
        if (*p == ',') p++;
    }
    return v;
nomem:
    az_fail(msg, AZ_ERR_NOMEM, "out of memory");
    az_jwt_verifier_free(v);
    return NULL;
}

void az_jwt_verifier_free(az_jwt_verifier *v)
{
    if (!v) return;
    keyset_unref(v->set);
    for (int i = 0; i < v->nparties; i++) free(v->parties[i]);
    free(v->jwks_url);
    free(v->issuer);
    pthread_mutex_destroy(&v->mu);
    pthread_mutex_destroy(&v->fetch_mu);
    free(v);
}

/* Decodes one base64url segment of the token as a JSON object (duplicate names refused, so
 * no two parsers can disagree about a claim). NULL when it is not one. */
static json_t *segment_json(const char *seg, size_t len)
{
    size_t n = 0;
    unsigned char *raw = b64url_decode(seg, len, &n);
    if (!raw) return NULL;
    json_error_t jerr;
    json_t *j = json_loadb((const char *)raw, n, JSON_REJECT_DUPLICATES, &jerr);
    free(raw);
    if (!json_is_object(j)) {
        json_decref(j);
        return NULL;
    }
    return j;
}

/* Copies string claim name of o into buf; absent leaves buf "". AZ_ERR_UNAUTHENTICATED when it
 * is not a string, too long, or holds characters we will not propagate. */
static az_err copy_claim(json_t *o, const char *name, const char *label, char *buf, size_t size,
                         char *msg)
{
    json_t *m = json_object_get(o, name);
    buf[0] = 0;
    if (!m) return AZ_OK;
    if (!json_is_string(m))
        return az_fail(msg, AZ_ERR_UNAUTHENTICATED, "session token claim %s is not a string",
                       label);
    const char *s = json_string_value(m);
    if (strlen(s) >= size || json_string_length(m) != strlen(s) || !claim_text_ok(s))
        return az_fail(msg, AZ_ERR_UNAUTHENTICATED,
                       "session token claim %s is too long or malformed", label);
    memcpy(buf, s, strlen(s) + 1);
    return AZ_OK;
}

/* A NumericDate claim into *out (unix seconds); absent = 0 and *present 0. */
static az_err time_claim(json_t *o, const char *name, int64_t *out, int *present, char *msg)
{
    json_t *m = json_object_get(o, name);
    *out = 0;
    *present = m != NULL;
    if (!m) return AZ_OK;
    if (!json_is_number(m))
        return az_fail(msg, AZ_ERR_UNAUTHENTICATED, "session token claim %s is not a number", name);
    double d = json_number_value(m);
    if (!isfinite(d) || d < 0 || d > 1e13)
        return az_fail(msg, AZ_ERR_UNAUTHENTICATED, "session token claim %s is out of range", name);
    *out = (int64_t)d;
    return AZ_OK;
}

static az_err check_claims(az_jwt_verifier *v, json_t *c, az_jwt_claims *out, char *msg)
{
    az_err err;
    char iss[512];
    if ((err = copy_claim(c, "iss", "iss", iss, sizeof iss, msg)) != AZ_OK) return err;
    if (strcmp(iss, v->issuer) != 0)
        return az_fail(msg, AZ_ERR_UNAUTHENTICATED,
                       "session token issuer is not the configured AGENTZ_JWT_ISSUER");

    int has_exp, has_nbf, has_iat;
    if ((err = time_claim(c, "exp", &out->exp, &has_exp, msg)) != AZ_OK ||
        (err = time_claim(c, "nbf", &out->nbf, &has_nbf, msg)) != AZ_OK ||
        (err = time_claim(c, "iat", &out->iat, &has_iat, msg)) != AZ_OK)
        return err;
    int64_t now = (int64_t)time(NULL);
    if (!has_exp) return az_fail(msg, AZ_ERR_UNAUTHENTICATED, "session token has no exp claim");
    if (now > out->exp + v->leeway_s)
        return az_fail(msg, AZ_ERR_UNAUTHENTICATED, "session token expired %lld s ago",
                       (long long)(now - out->exp));
    if (has_nbf && now + v->leeway_s < out->nbf)
        return az_fail(msg, AZ_ERR_UNAUTHENTICATED, "session token is not valid yet (nbf)");
    if (has_iat && now + v->leeway_s < out->iat)
        return az_fail(msg, AZ_ERR_UNAUTHENTICATED, "session token is issued in the future (iat)");

    if ((err = copy_claim(c, "sub", "sub", out->sub, sizeof out->sub, msg)) != AZ_OK) return err;
    if (!out->sub[0]) return az_fail(msg, AZ_ERR_UNAUTHENTICATED, "session token has no sub claim");
    if ((err = copy_claim(c, "sid", "sid", out->sid, sizeof out->sid, msg)) != AZ_OK ||
        (err = copy_claim(c, "azp", "azp", out->azp, sizeof out->azp, msg)) != AZ_OK)
        return err;
    /* As Clerk's SDKs do: a token without azp (no Origin, e.g. a native client) passes; one
     * minted for another origin does not. */
    if (v->nparties && out->azp[0]) {
        int ok = 0;
        for (int i = 0; i < v->nparties && !ok; i++) ok = strcmp(v->parties[i], out->azp) == 0;
        if (!ok)
            return az_fail(msg, AZ_ERR_UNAUTHENTICATED,
                           "session token authorized party \"%s\" is not in "
                           "AGENTZ_JWT_AUTHORIZED_PARTIES",
                           out->azp);
    }

    json_t *ver = json_object_get(c, "v");
    out->version = json_is_integer(ver) ? (int)json_integer_value(ver) : 1;
    /* Clerk marks sessions that still have tasks to finish (e.g. choose an organization) as
     * pending; its SDKs treat them as signed out, and so do we. */
    char sts[32];
    if ((err = copy_claim(c, "sts", "sts", sts, sizeof sts, msg)) != AZ_OK) return err;
    if (sts[0] && strcmp(sts, "active") != 0)
        return az_fail(msg, AZ_ERR_UNAUTHENTICATED, "session is not active (status %s)", sts);

    /* v2 nests the organization under "o" with the role lacking its "org:" prefix; v1 has
     * flat org_* claims. Whichever the token carries. */
    json_t *o = json_object_get(c, "o");
    char role[sizeof out->org_role - 4];
    if (o) {
        if (!json_is_object(o))
            return az_fail(msg, AZ_ERR_UNAUTHENTICATED, "session token claim o is not an object");
        if ((err = copy_claim(o, "id", "o.id", out->org_id, sizeof out->org_id, msg)) != AZ_OK ||
            (err = copy_claim(o, "slg", "o.slg", out->org_slug, sizeof out->org_slug, msg)) !=
                AZ_OK ||
            (err = copy_claim(o, "rol", "o.rol", role, sizeof role, msg)) != AZ_OK)
            return err;
        if (role[0])
            snprintf(out->org_role, sizeof out->org_role, "%s%s",
                     strncmp(role, "org:", 4) == 0 ? "" : "org:", role);
    } else {
        if ((err = copy_claim(c, "org_id", "org_id", out->org_id, sizeof out->org_id, msg)) !=
                AZ_OK ||
            (err = copy_claim(c, "org_slug", "org_slug", out->org_slug, sizeof out->org_slug,
                              msg)) != AZ_OK ||
            (err = copy_claim(c, "org_role", "org_role", out->org_role, sizeof out->org_role,
                              msg)) != AZ_OK)
            return err;
    }
    return AZ_OK;
}

az_err az_jwt_verify(az_jwt_verifier *v, const char *token, az_jwt_claims *out, char *msg)
{
    memset(out, 0, sizeof *out);
    if (!token || !*token) return az_fail(msg, AZ_ERR_UNAUTHENTICATED, "session token is empty");
    size_t len = strnlen(token, AZ_JWT_MAX_TOKEN + 1);
    if (len > AZ_JWT_MAX_TOKEN)
        return az_fail(msg, AZ_ERR_UNAUTHENTICATED, "session token is longer than %d bytes",
                       AZ_JWT_MAX_TOKEN);
    /* Compact JWS: exactly three non-empty base64url segments. */
    const char *d1 = strchr(token, '.'), *d2 = d1 ? strchr(d1 + 1, '.') : NULL;
    if (!d1 || !d2 || strchr(d2 + 1, '.') || d1 == token || d2 == d1 + 1 || !d2[1])
        return az_fail(msg, AZ_ERR_UNAUTHENTICATED, "session token is not a signed JWT");
    for (const char *p = token; *p; p++) {
        if (*p != '.' && b64url_value((unsigned char)*p) < 0)
            return az_fail(msg, AZ_ERR_UNAUTHENTICATED, "session token is not a signed JWT");
    }

    /* The header decides nothing by itself: alg is pinned here, before any key is used, so
     * "none" and HMAC with the public key as secret (algorithm confusion) never get to libjwt. */
    json_t *hdr = segment_json(token, (size_t)(d1 - token));
    if (!hdr) return az_fail(msg, AZ_ERR_UNAUTHENTICATED, "session token header is not JSON");
    az_err err = AZ_OK;
    const char *alg = jstr(hdr, "alg"), *kid = jstr(hdr, "kid");
    json_t *typ = json_object_get(hdr, "typ");
    if (!alg || strcmp(alg, "RS256") != 0) {
        int printable = alg && strlen(alg) <= 16 && claim_text_ok(alg);
        err = az_fail(msg, AZ_ERR_UNAUTHENTICATED,
                      "session token algorithm %s%s%s is not accepted (only RS256)",
                      printable ? "\"" : "", printable ? alg : "(missing or invalid)",
                      printable ? "\"" : "");
    } else if (typ && (!json_is_string(typ) || strcasecmp(json_string_value(typ), "JWT") != 0)) {
        err = az_fail(msg, AZ_ERR_UNAUTHENTICATED, "session token type is not JWT");
    } else if (json_object_get(hdr, "crit")) {
        err = az_fail(msg, AZ_ERR_UNAUTHENTICATED, "session token has critical header extensions");
    } else if (!kid || !kid_ok(kid)) {
        err = az_fail(msg, AZ_ERR_UNAUTHENTICATED, "session token has no valid kid header");
    } else {
        snprintf(out->kid, sizeof out->kid, "%s", kid);
    }
    json_decref(hdr);
    if (err != AZ_OK) return err;

    keyset *set = NULL;
    const key *k = NULL;
    if ((err = key_for(v, out->kid, &set, &k, msg)) != AZ_OK) return err;
    jwt_t *jwt = NULL;
    int rc = jwt_decode(&jwt, token, (const unsigned char *)k->pem, k->pem_len);
    if (rc == 0 && jwt_get_alg(jwt) != JWT_ALG_RS256) rc = -1; /* defence in depth */
    jwt_free(jwt);
    keyset_unref(set);
    if (rc != 0) return az_fail(msg, AZ_ERR_UNAUTHENTICATED, "session token signature is invalid");

    /* The signature covers these exact bytes, so our strict parse is the authoritative one. */
    json_t *claims = segment_json(d1 + 1, (size_t)(d2 - d1 - 1));
    if (!claims) return az_fail(msg, AZ_ERR_UNAUTHENTICATED, "session token claims are not JSON");
    err = check_claims(v, claims, out, msg);
    json_decref(claims);
    if (err != AZ_OK) memset(out, 0, sizeof *out);
    return err;
}
