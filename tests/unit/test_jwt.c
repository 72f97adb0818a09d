/* CUnit suite for server/auth/jwt.c: tokens minted here with libjwt (and hand-signed with
 * OpenSSL where libjwt would refuse to build them) under RSA keys generated per run, verified
 * against a JWKS served by a real HTTP server on 127.0.0.1 inside this process (a test double
 * at the network edge that counts requests). Covers the claims, the attacks (alg none, HS256
 * with the public key, bad signatures, duplicate claims), key rotation, fetch failures and the
 * refresh rate limit. */
#include <CUnit/Basic.h>
#include <arpa/inet.h>
#include <errno.h>
#include <jwt.h>
#include <netinet/in.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "auth/jwt.h"
#include "core/log.h"

#define ISSUER "https://clerk.agentz.test"

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---------------------------------------------------------------- keys and tokens */

typedef struct testkey {
    EVP_PKEY *pkey;
    char *priv_pem, *pub_pem;
    char jwk[2048]; /* {"kty":"RSA",...} */
} testkey;

static testkey k1, k2, weak; /* weak: 1024 bits, must be refused as a JWK */

static char *pem_of(EVP_PKEY *pkey, int priv)
{
    BIO *b = BIO_new(BIO_s_mem());
    if (priv) PEM_write_bio_PrivateKey(b, pkey, NULL, NULL, 0, NULL, NULL);
    else PEM_write_bio_PUBKEY(b, pkey);
    char *data;
    long n = BIO_get_mem_data(b, &data);
    char *s = strndup(data, (size_t)n);
    BIO_free(b);
    return s;
}

static void b64url(const unsigned char *in, size_t n, char *out)
{
    static const char al[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    size_t o = 0;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (i + 1 < n ? (uint32_t)in[i + 1] << 8 : 0) |
                     (i + 2 < n ? in[i + 2] : 0);
        out[o++] = al[v >> 18 & 63];
        out[o++] = al[v >> 12 & 63];
        if (i + 1 < n) out[o++] = al[v >> 6 & 63];
        if (i + 2 < n) out[o++] = al[v & 63];
    }
    out[o] = 0;
}

static void b64url_str(const char *s, char *out)
{
    b64url((const unsigned char *)s, strlen(s), out);
}

/* Runs in the suite's init, outside any test: no CU_ASSERT here. 0 on success. */
static int make_key(testkey *k, int bits, const char *kid)
{
    k->pkey = EVP_RSA_gen((unsigned)bits);
    if (!k->pkey) return -1;
    k->priv_pem = pem_of(k->pkey, 1);
    k->pub_pem = pem_of(k->pkey, 0);
    BIGNUM *n = NULL, *e = NULL;
    EVP_PKEY_get_bn_param(k->pkey, OSSL_PKEY_PARAM_RSA_N, &n);
    EVP_PKEY_get_bn_param(k->pkey, OSSL_PKEY_PARAM_RSA_E, &e);
    unsigned char nb[1024], eb[16];
    int nl = BN_bn2bin(n, nb), el = BN_bn2bin(e, eb);
    char ns[1400], es[32];
    b64url(nb, (size_t)nl, ns);
    b64url(eb, (size_t)el, es);
    snprintf(k->jwk, sizeof k->jwk,
             "{\"use\":\"sig\",\"kty\":\"RSA\",\"kid\":\"%s\",\"alg\":\"RS256\",\"n\":\"%s\",\"e\":"
             "\"%s\"}",
             kid, ns, es);
    BN_free(n);
    BN_free(e);
    return k->priv_pem && k->pub_pem ? 0 : -1;
}

static void free_key(testkey *k)
{
    EVP_PKEY_free(k->pkey);
    free(k->priv_pem);
    free(k->pub_pem);
}

/* Claims for a token: what the test sets, everything else a valid default. */
typedef struct claims {
    const char *kid, *iss, *sub, *azp, *extra_json; /* extra_json: more grants, e.g. {"o":{...}} */
    long exp_off, nbf_off;                          /* seconds from now; 0 = default */
    int no_exp;
} claims;

/* A token signed RS256 by k with libjwt. Caller frees. */
static char *mint(const testkey *k, claims c)
{
    jwt_t *j = NULL;
    CU_ASSERT_FATAL(jwt_new(&j) == 0);
    long now = (long)time(NULL);
    jwt_add_grant(j, "iss", c.iss ? c.iss : ISSUER);
    jwt_add_grant(j, "sub", c.sub ? c.sub : "user_2abc");
    jwt_add_grant(j, "sid", "sess_123");
    if (c.azp) jwt_add_grant(j, "azp", c.azp);
    jwt_add_grant_int(j, "iat", now - 5);
    if (!c.no_exp) jwt_add_grant_int(j, "exp", now + (c.exp_off ? c.exp_off : 60));
    jwt_add_grant_int(j, "nbf", now + (c.nbf_off ? c.nbf_off : -5));
    if (c.extra_json) CU_ASSERT(jwt_add_grants_json(j, c.extra_json) == 0);
    jwt_add_header(j, "kid", c.kid ? c.kid : "k1");
    CU_ASSERT_FATAL(jwt_set_alg(j, JWT_ALG_RS256, (const unsigned char *)k->priv_pem,
                                (int)strlen(k->priv_pem)) == 0);
    char *t = jwt_encode_str(j);
    jwt_free(j);
    CU_ASSERT_PTR_NOT_NULL_FATAL(t);
    return t;
}

/* header.payload.signature from raw JSON, RS256-signed with k by OpenSSL directly (for tokens
 * libjwt will not produce: duplicate claims, odd headers), or unsigned with sig "" / given. */
static char *handmade(const char *header, const char *payload, const testkey *k, const char *sig)
{
    char *t = malloc(16384);
    char h[4096], p[8192];
    b64url_str(header, h);
    b64url_str(payload, p);
    int n = snprintf(t, 16384, "%s.%s.", h, p);
    if (k) {
        EVP_MD_CTX *md = EVP_MD_CTX_new();
        unsigned char s[1024];
        size_t sl = sizeof s;
        CU_ASSERT(EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, k->pkey) == 1);
        CU_ASSERT(EVP_DigestSign(md, s, &sl, (const unsigned char *)t, (size_t)n - 1) == 1);
        EVP_MD_CTX_free(md);
        b64url(s, sl, t + n);
    } else if (sig) {
        snprintf(t + n, 16384 - (size_t)n, "%s", sig);
    }
    return t;
}

static long now_s(void) { return (long)time(NULL); }

/* ---------------------------------------------------------------- JWKS server */

typedef struct jwks_server {
    int fd, port;
    pthread_t th;
    atomic_int stop, requests;
    pthread_mutex_t mu;
    char *body; /* served with status */
    int status;
    int hang; /* accept, read, never answer */
} jwks_server;

static void send_all(int fd, const char *p, size_t n)
{
    while (n) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL); /* the client may hang up first */
        if (w <= 0) return;
        p += w;
        n -= (size_t)w;
    }
}

static void *serve(void *arg)
{
    jwks_server *s = arg;
    while (!atomic_load(&s->stop)) {
        struct pollfd pfd = {.fd = s->fd, .events = POLLIN};
        if (poll(&pfd, 1, 50) <= 0) continue;
        int c = accept(s->fd, NULL, NULL);
        if (c < 0) continue;
        char req[8192];
        size_t got = 0;
        while (got < sizeof req - 1) { /* the request head */
            struct pollfd cp = {.fd = c, .events = POLLIN};
            if (poll(&cp, 1, 2000) <= 0) break;
            ssize_t r = read(c, req + got, sizeof req - 1 - got);
            if (r <= 0) break;
            got += (size_t)r;
            req[got] = 0;
            if (strstr(req, "\r\n\r\n")) break;
        }
        atomic_fetch_add(&s->requests, 1);
        pthread_mutex_lock(&s->mu);
        int hang = s->hang, status = s->status;
        char *body = strdup(s->body ? s->body : "");
        pthread_mutex_unlock(&s->mu);
        if (hang) { /* until the client gives up (closes) or 5 s */
            struct pollfd cp = {.fd = c, .events = POLLIN};
            int64_t until = now_ms() + 5000;
            while (!atomic_load(&s->stop) && now_ms() < until) {
                if (poll(&cp, 1, 50) > 0) {
                    char tmp[64];
                    if (read(c, tmp, sizeof tmp) <= 0) break;
                }
            }
        } else {
            char head[256];
            int hn = snprintf(head, sizeof head,
                              "HTTP/1.1 %d X\r\nContent-Type: application/json\r\n"
                              "Content-Length: %zu\r\nConnection: close\r\n\r\n",
                              status, strlen(body));
            send_all(c, head, (size_t)hn);
            send_all(c, body, strlen(body));
        }
        free(body);
        close(c);
    }
    return NULL;
}

static void server_set(jwks_server *s, int status, const char *body)
{
    pthread_mutex_lock(&s->mu);
    free(s->body);
    s->body = strdup(body);
    s->status = status;
    pthread_mutex_unlock(&s->mu);
}

/* {"keys":[a, b]} of the JWKs given (NULL ends). */
static void server_keys(jwks_server *s, const testkey *a, const testkey *b)
{
    char *doc = malloc(8192);
    snprintf(doc, 8192, "{\"keys\":[%s%s%s]}", a ? a->jwk : "", a && b ? "," : "", b ? b->jwk : "");
    server_set(s, 200, doc);
    free(doc);
}

static void server_start(jwks_server *s)
{
    memset(s, 0, sizeof *s);
    pthread_mutex_init(&s->mu, NULL);
    s->fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    CU_ASSERT_FATAL(bind(s->fd, (struct sockaddr *)&a, sizeof a) == 0);
    CU_ASSERT_FATAL(listen(s->fd, 64) == 0);
    socklen_t l = sizeof a;
    getsockname(s->fd, (struct sockaddr *)&a, &l);
    s->port = ntohs(a.sin_port);
    server_keys(s, &k1, NULL);
    CU_ASSERT_FATAL(pthread_create(&s->th, NULL, serve, s) == 0);
}

static void server_stop(jwks_server *s)
{
    atomic_store(&s->stop, 1);
    pthread_join(s->th, NULL);
    close(s->fd);
    free(s->body);
    pthread_mutex_destroy(&s->mu);
}

static az_jwt_verifier *verifier(const jwks_server *s, const char *parties, int refresh_ms,
                                 int timeout_ms)
{
    char url[128];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/.well-known/jwks.json", s ? s->port : 1);
    az_jwt_config cfg = {.jwks_url = url,
                         .issuer = ISSUER,
                         .authorized_parties = parties,
                         .refresh_interval_ms = refresh_ms,
                         .timeout_ms = timeout_ms};
    char msg[AZ_MSG_MAX];
    az_jwt_verifier *v = az_jwt_verifier_new(&cfg, msg);
    if (!v) fprintf(stderr, "verifier: %s\n", msg);
    CU_ASSERT_PTR_NOT_NULL_FATAL(v);
    return v;
}

/* Verifies and expects UNAUTHENTICATED with a message containing want. */
#define EXPECT_REJECT(v, tok, want)                                                                \
    do {                                                                                           \
        char m_[AZ_MSG_MAX] = "";                                                                  \
        az_jwt_claims c_;                                                                          \
        CU_ASSERT_EQUAL(az_jwt_verify((v), (tok), &c_, m_), AZ_ERR_UNAUTHENTICATED);               \
        if (!strstr(m_, (want))) fprintf(stderr, "\n  message \"%s\" lacks \"%s\"\n", m_, (want)); \
        CU_ASSERT_PTR_NOT_NULL(strstr(m_, (want)));                                                \
        CU_ASSERT_STRING_EQUAL(c_.sub, "");                                                        \
    } while (0)

static az_err verify(az_jwt_verifier *v, const char *tok, az_jwt_claims *c)
{
    char msg[AZ_MSG_MAX] = "";
    az_err e = az_jwt_verify(v, tok, c, msg);
    if (e != AZ_OK) fprintf(stderr, "\n  verify: %s\n", msg);
    return e;
}

/* ---------------------------------------------------------------- tests */

static void test_valid_token(void)
{
    jwks_server s;
    server_start(&s);
    az_jwt_verifier *v = verifier(&s, NULL, 0, 0);
    CU_ASSERT_EQUAL(az_jwt_fetch_count(v), 0); /* nothing fetched before it is needed */
    char *t = mint(&k1, (claims){.azp = "https://app.agentz.test"});
    az_jwt_claims c;
    CU_ASSERT_EQUAL_FATAL(verify(v, t, &c), AZ_OK);
    CU_ASSERT_STRING_EQUAL(c.sub, "user_2abc");
    CU_ASSERT_STRING_EQUAL(c.sid, "sess_123");
    CU_ASSERT_STRING_EQUAL(c.azp, "https://app.agentz.test");
    CU_ASSERT_STRING_EQUAL(c.kid, "k1");
    CU_ASSERT_STRING_EQUAL(c.org_id, "");
    CU_ASSERT_STRING_EQUAL(c.org_role, "");
    CU_ASSERT_EQUAL(c.version, 1);
    CU_ASSERT(c.exp > now_s() && c.exp <= now_s() + 61);
    /* cached: the second verification fetches nothing */
    CU_ASSERT_EQUAL(verify(v, t, &c), AZ_OK);
    CU_ASSERT_EQUAL(az_jwt_fetch_count(v), 1);
    CU_ASSERT_EQUAL(atomic_load(&s.requests), 1);
    free(t);
    az_jwt_verifier_free(v);
    server_stop(&s);
}

static void test_org_claims_v1_and_v2(void)
{
    jwks_server s;
    server_start(&s);
    az_jwt_verifier *v = verifier(&s, NULL, 0, 0);
    az_jwt_claims c;
    char *t = mint(&k1, (claims){.extra_json = "{\"org_id\":\"org_1\",\"org_slug\":\"acme\","
                                               "\"org_role\":\"org:admin\"}"});
    CU_ASSERT_EQUAL(verify(v, t, &c), AZ_OK);
    CU_ASSERT_STRING_EQUAL(c.org_id, "org_1");
    CU_ASSERT_STRING_EQUAL(c.org_slug, "acme");
    CU_ASSERT_STRING_EQUAL(c.org_role, "org:admin");
    free(t);
    /* v2: nested under o, role without the org: prefix */
    t = mint(&k1, (claims){.extra_json = "{\"v\":2,\"o\":{\"id\":\"org_2\",\"slg\":\"beta\","
                                         "\"rol\":\"member\",\"per\":\"read,manage\"}}"});
    CU_ASSERT_EQUAL(verify(v, t, &c), AZ_OK);
    CU_ASSERT_EQUAL(c.version, 2);
    CU_ASSERT_STRING_EQUAL(c.org_id, "org_2");
    CU_ASSERT_STRING_EQUAL(c.org_slug, "beta");
    CU_ASSERT_STRING_EQUAL(c.org_role, "org:member");
    free(t);
    /* v2 without an active organization */
    t = mint(&k1, (claims){.extra_json = "{\"v\":2,\"sts\":\"active\"}"});
    CU_ASSERT_EQUAL(verify(v, t, &c), AZ_OK);
    CU_ASSERT_STRING_EQUAL(c.org_id, "");
    free(t);
    /* pending sessions are signed out, as in Clerk's SDKs */
    t = mint(&k1, (claims){.extra_json = "{\"v\":2,\"sts\":\"pending\"}"});
    EXPECT_REJECT(v, t, "not active");
    free(t);
    /* claims of the wrong type or shape */
    t = mint(&k1, (claims){.extra_json = "{\"o\":\"org_1\"}"});
    EXPECT_REJECT(v, t, "not an object");
    free(t);
    t = mint(&k1, (claims){.extra_json = "{\"org_id\":42}"});
    EXPECT_REJECT(v, t, "org_id");
    free(t);
    t = mint(&k1, (claims){.sub = "user with spaces"});
    EXPECT_REJECT(v, t, "sub");
    free(t);
    t = mint(&k1, (claims){.sub = ""});
    EXPECT_REJECT(v, t, "no sub");
    free(t);
    char longsub[300];
    memset(longsub, 'a', sizeof longsub - 1);
    longsub[sizeof longsub - 1] = 0;
    t = mint(&k1, (claims){.sub = longsub}); /* refused, never truncated */
    EXPECT_REJECT(v, t, "sub");
    free(t);
    az_jwt_verifier_free(v);
    server_stop(&s);
}

static void test_time_claims(void)
{
    jwks_server s;
    server_start(&s);
    az_jwt_verifier *v = verifier(&s, NULL, 0, 0);
    az_jwt_claims c;
    char *t = mint(&k1, (claims){.exp_off = -120}); /* past the 60 s leeway */
    EXPECT_REJECT(v, t, "expired");
    free(t);
    t = mint(&k1, (claims){.exp_off = -20}); /* within the leeway */
    CU_ASSERT_EQUAL(verify(v, t, &c), AZ_OK);
    free(t);
    t = mint(&k1, (claims){.nbf_off = 120});
    EXPECT_REJECT(v, t, "not valid yet");
    free(t);
    t = mint(&k1, (claims){.nbf_off = 20});
    CU_ASSERT_EQUAL(verify(v, t, &c), AZ_OK);
    free(t);
    t = mint(&k1, (claims){.no_exp = 1});
    EXPECT_REJECT(v, t, "no exp");
    free(t);
    t = handmade("{\"alg\":\"RS256\",\"kid\":\"k1\"}",
                 "{\"iss\":\"" ISSUER "\",\"sub\":\"u\",\"exp\":\"tomorrow\"}", &k1, NULL);
    EXPECT_REJECT(v, t, "exp");
    free(t);
    az_jwt_verifier_free(v);
    server_stop(&s);
}

static void test_issuer_and_azp(void)
{
    jwks_server s;
    server_start(&s);
    az_jwt_verifier *v = verifier(&s, " https://app.agentz.test , https://admin.agentz.test", 0, 0);
    az_jwt_claims c;
    char *t = mint(&k1, (claims){.iss = "https://clerk.evil.test"});
    EXPECT_REJECT(v, t, "issuer");
    free(t);
    t = mint(&k1, (claims){.iss = ISSUER "/"}); /* exact match only */
    EXPECT_REJECT(v, t, "issuer");
    free(t);
    t = mint(&k1, (claims){.azp = "https://evil.test"});
    EXPECT_REJECT(v, t, "authorized party");
    free(t);
    t = mint(&k1, (claims){.azp = "https://admin.agentz.test"});
    CU_ASSERT_EQUAL(verify(v, t, &c), AZ_OK);
    free(t);
    t = mint(&k1, (claims){.azp = NULL}); /* no Origin: accepted, as Clerk's SDKs do */
    CU_ASSERT_EQUAL(verify(v, t, &c), AZ_OK);
    free(t);
    az_jwt_verifier_free(v);
    server_stop(&s);
}

static void test_algorithm_attacks(void)
{
    jwks_server s;
    server_start(&s);
    az_jwt_verifier *v = verifier(&s, NULL, 0, 0);
    const char *payload = "{\"iss\":\"" ISSUER "\",\"sub\":\"user_2abc\",\"exp\":9999999999}";

    /* alg none, with an empty and with a junk signature */
    char *t = handmade("{\"alg\":\"none\",\"typ\":\"JWT\",\"kid\":\"k1\"}", payload, NULL, "");
    EXPECT_REJECT(v, t, "not a signed JWT");
    free(t);
    t = handmade("{\"alg\":\"none\",\"typ\":\"JWT\",\"kid\":\"k1\"}", payload, NULL, "AAAA");
    EXPECT_REJECT(v, t, "algorithm \"none\" is not accepted");
    free(t);
    t = handmade("{\"alg\":\"None\",\"kid\":\"k1\"}", payload, NULL, "AAAA");
    EXPECT_REJECT(v, t, "not accepted");
    free(t);
    t = handmade("{\"kid\":\"k1\"}", payload, NULL, "AAAA"); /* no alg at all */
    EXPECT_REJECT(v, t, "not accepted");
    free(t);
    t = handmade("{\"alg\":[\"RS256\"],\"kid\":\"k1\"}", payload, NULL, "AAAA");
    EXPECT_REJECT(v, t, "not accepted");
    free(t);

    /* HS256 keyed with the RSA public key PEM: the classic confusion attack */
    jwt_t *j = NULL;
    jwt_new(&j);
    jwt_add_grant(j, "iss", ISSUER);
    jwt_add_grant(j, "sub", "user_attacker");
    jwt_add_grant_int(j, "exp", now_s() + 600);
    jwt_add_header(j, "kid", "k1");
    jwt_set_alg(j, JWT_ALG_HS256, (const unsigned char *)k1.pub_pem, (int)strlen(k1.pub_pem));
    t = jwt_encode_str(j);
    jwt_free(j);
    CU_ASSERT_PTR_NOT_NULL_FATAL(t);
    EXPECT_REJECT(v, t, "algorithm \"HS256\" is not accepted");
    /* What the pin protects against: libjwt on its own trusts the header's alg. */
    jwt_t *d = NULL;
    int naive = jwt_decode(&d, t, (const unsigned char *)k1.pub_pem, (int)strlen(k1.pub_pem));
    if (naive == 0)
        fprintf(stderr, "\n  (libjwt alone accepts this HS256 token: the pin matters)\n");
    jwt_free(d);
    free(t);

    /* other algorithms, even with a valid RS256 signature under them */
    t = handmade("{\"alg\":\"RS512\",\"kid\":\"k1\"}", payload, &k1, NULL);
    EXPECT_REJECT(v, t, "algorithm \"RS512\" is not accepted");
    free(t);
    t = handmade("{\"alg\":\"PS256\",\"kid\":\"k1\"}", payload, &k1, NULL);
    EXPECT_REJECT(v, t, "not accepted");
    free(t);
    /* header oddities */
    t = handmade("{\"alg\":\"RS256\",\"kid\":\"k1\",\"crit\":[\"exp\"]}", payload, &k1, NULL);
    EXPECT_REJECT(v, t, "critical");
    free(t);
    t = handmade("{\"alg\":\"RS256\",\"kid\":\"k1\",\"typ\":\"at+jwt\"}", payload, &k1, NULL);
    EXPECT_REJECT(v, t, "type");
    free(t);
    t = handmade("{\"alg\":\"RS256\"}", payload, &k1, NULL);
    EXPECT_REJECT(v, t, "kid");
    free(t);
    t = handmade("{\"alg\":\"RS256\",\"kid\":\"k1\\\"x\"}", payload, &k1, NULL);
    EXPECT_REJECT(v, t, "kid");
    free(t);
    /* duplicate names: the header's alg and the payload's sub */
    t = handmade("{\"alg\":\"none\",\"alg\":\"RS256\",\"kid\":\"k1\"}", payload, &k1, NULL);
    EXPECT_REJECT(v, t, "header is not JSON");
    free(t);
    t = handmade("{\"alg\":\"RS256\",\"kid\":\"k1\"}",
                 "{\"iss\":\"" ISSUER
                 "\",\"sub\":\"user_a\",\"sub\":\"user_b\",\"exp\":9999999999}",
                 &k1, NULL);
    EXPECT_REJECT(v, t, "claims are not JSON");
    free(t);
    /* and the hand-made path itself is sound: a correct one passes */
    t = handmade("{\"alg\":\"RS256\",\"kid\":\"k1\",\"typ\":\"JWT\"}", payload, &k1, NULL);
    az_jwt_claims c;
    CU_ASSERT_EQUAL(verify(v, t, &c), AZ_OK);
    CU_ASSERT_STRING_EQUAL(c.sub, "user_2abc");
    free(t);
    az_jwt_verifier_free(v);
    server_stop(&s);
}

static void test_bad_signature(void)
{
    jwks_server s;
    server_start(&s);
    az_jwt_verifier *v = verifier(&s, NULL, 0, 0);
    char *t = mint(&k1, (claims){0});
    char *sig = strrchr(t, '.') + 1;
    sig[10] = sig[10] == 'A' ? 'B' : 'A'; /* one flipped character */
    EXPECT_REJECT(v, t, "signature is invalid");
    free(t);
    /* signed by a key the JWKS does not have, under a kid it does have */
    t = mint(&k2, (claims){.kid = "k1"});
    EXPECT_REJECT(v, t, "signature is invalid");
    free(t);
    /* payload swapped under a valid signature */
    char *a = mint(&k1, (claims){.sub = "user_a"}), *b = mint(&k1, (claims){.sub = "user_b"});
    char forged[8192];
    const char *a1 = strchr(a, '.'), *b1 = strchr(b, '.'), *b2 = strrchr(b, '.');
    snprintf(forged, sizeof forged, "%.*s%.*s%s", (int)(a1 - a), a, (int)(b2 - b1), b1,
             strrchr(a, '.'));
    EXPECT_REJECT(v, forged, "signature is invalid");
    free(a);
    free(b);
    az_jwt_verifier_free(v);
    server_stop(&s);
}

static void test_garbage_tokens(void)
{
    jwks_server s;
    server_start(&s);
    az_jwt_verifier *v = verifier(&s, NULL, 0, 0);
    EXPECT_REJECT(v, NULL, "empty");
    EXPECT_REJECT(v, "", "empty");
    static const char *const bad[] = {
        "abc",   "a.b",     "a.b.c.d",      "..",      "a..c",
        ".b.c",  "a.b.",    "eyJ!.eyJ.abc", "a b.c.d", "eyJhbGciOiJSUzI1NiJ9.e30.=",
        "A.B.C", "a\n.b.c",
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        char m[AZ_MSG_MAX];
        az_jwt_claims c;
        CU_ASSERT_EQUAL(az_jwt_verify(v, bad[i], &c, m), AZ_ERR_UNAUTHENTICATED);
    }
    /* header that is not an object, or not base64 of anything sensible */
    char h[64], t[256];
    b64url_str("[1,2]", h);
    snprintf(t, sizeof t, "%s.e30.AAAA", h);
    EXPECT_REJECT(v, t, "header is not JSON");
    /* oversized: refused before parsing, whatever it holds */
    char *big = malloc(AZ_JWT_MAX_TOKEN + 100);
    memset(big, 'a', AZ_JWT_MAX_TOKEN + 99);
    big[100] = '.';
    big[200] = '.';
    big[AZ_JWT_MAX_TOKEN + 99] = 0;
    EXPECT_REJECT(v, big, "longer than");
    free(big);
    CU_ASSERT_EQUAL(az_jwt_fetch_count(v), 0); /* none of that cost a JWKS fetch */
    az_jwt_verifier_free(v);
    server_stop(&s);
}

static void test_unknown_kid_refreshes_once(void)
{
    jwks_server s;
    server_start(&s);
    az_jwt_verifier *v = verifier(&s, NULL, 0, 0); /* default 30 s between fetches */
    az_jwt_claims c;
    char *ok = mint(&k1, (claims){0});
    CU_ASSERT_EQUAL(verify(v, ok, &c), AZ_OK);
    CU_ASSERT_EQUAL(az_jwt_fetch_count(v), 1);
    char *t = mint(&k2, (claims){.kid = "k-unknown"});
    EXPECT_REJECT(v, t, "unknown key");
    /* too soon after the first fetch: refused without fetching */
    CU_ASSERT_EQUAL(az_jwt_fetch_count(v), 1);
    az_jwt_verifier_free(v);

    /* fresh verifier whose first token has an unknown kid: exactly one fetch */
    v = verifier(&s, NULL, 0, 0);
    EXPECT_REJECT(v, t, "unknown key");
    CU_ASSERT_EQUAL(az_jwt_fetch_count(v), 1);
    CU_ASSERT_EQUAL(verify(v, ok, &c), AZ_OK); /* the known one still works, no fetch */
    CU_ASSERT_EQUAL(az_jwt_fetch_count(v), 1);
    free(t);
    free(ok);
    az_jwt_verifier_free(v);
    server_stop(&s);
}

static void test_key_rotation(void)
{
    jwks_server s;
    server_start(&s);
    az_jwt_verifier *v = verifier(&s, NULL, 200, 0);
    az_jwt_claims c;
    char *old = mint(&k1, (claims){.kid = "k1"}), *new = mint(&k2, (claims){.kid = "k2"});
    CU_ASSERT_EQUAL(verify(v, old, &c), AZ_OK);
    /* Clerk rotates: k2 joins, later k1 leaves */
    server_keys(&s, &k1, &k2);
    usleep(250 * 1000);
    CU_ASSERT_EQUAL(verify(v, new, &c), AZ_OK);
    CU_ASSERT_STRING_EQUAL(c.kid, "k2");
    CU_ASSERT_EQUAL(verify(v, old, &c), AZ_OK);
    CU_ASSERT_EQUAL(az_jwt_fetch_count(v), 2);
    server_keys(&s, &k2, NULL);
    usleep(250 * 1000);
    /* k1 is still cached; an unknown kid triggers the refresh that drops it */
    char *other = mint(&k2, (claims){.kid = "k3"});
    EXPECT_REJECT(v, other, "unknown key");
    CU_ASSERT_EQUAL(az_jwt_fetch_count(v), 3);
    EXPECT_REJECT(v, old, "unknown key"); /* k1 is gone */
    CU_ASSERT_EQUAL(verify(v, new, &c), AZ_OK);
    free(old);
    free(new);
    free(other);
    az_jwt_verifier_free(v);
    server_stop(&s);
}

static void test_old_keys_refetched(void)
{
    jwks_server s;
    server_start(&s);
    char url[128], msg[AZ_MSG_MAX];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/jwks", s.port);
    az_jwt_config cfg = {
        .jwks_url = url, .issuer = ISSUER, .refresh_interval_ms = 50, .max_age_ms = 100};
    az_jwt_verifier *v = az_jwt_verifier_new(&cfg, msg);
    CU_ASSERT_PTR_NOT_NULL_FATAL(v);
    az_jwt_claims c;
    char *t = mint(&k1, (claims){0});
    CU_ASSERT_EQUAL(verify(v, t, &c), AZ_OK);
    CU_ASSERT_EQUAL(verify(v, t, &c), AZ_OK);
    CU_ASSERT_EQUAL(az_jwt_fetch_count(v), 1);
    usleep(150 * 1000); /* the keys are now older than max_age */
    CU_ASSERT_EQUAL(verify(v, t, &c), AZ_OK);
    CU_ASSERT_EQUAL(az_jwt_fetch_count(v), 2);
    /* the JWKS breaks: old keys keep working rather than locking everyone out */
    server_set(&s, 503, "busy");
    usleep(150 * 1000);
    CU_ASSERT_EQUAL(verify(v, t, &c), AZ_OK);
    CU_ASSERT_EQUAL(az_jwt_fetch_count(v), 3);
    free(t);
    az_jwt_verifier_free(v);
    server_stop(&s);
}

static void test_unusable_jwks(void)
{
    jwks_server s;
    server_start(&s);
    char msg[AZ_MSG_MAX];
    az_jwt_verifier *v = verifier(&s, NULL, 1, 0);
    /* a 1024-bit key, a key for encryption, an EC key: none usable */
    char doc[8192];
    snprintf(doc, sizeof doc,
             "{\"keys\":[%s,{\"kty\":\"RSA\",\"kid\":\"enc\",\"use\":\"enc\",\"n\":\"AQAB\","
             "\"e\":\"AQAB\"},{\"kty\":\"EC\",\"kid\":\"ec\",\"crv\":\"P-256\",\"x\":\"AA\","
             "\"y\":\"AA\"}]}",
             weak.jwk);
    server_set(&s, 200, doc);
    CU_ASSERT_EQUAL(az_jwt_refresh(v, msg), AZ_ERR_INVALID);
    char *t = mint(&weak, (claims){.kid = "weak"});
    usleep(5 * 1000);
    EXPECT_REJECT(v, t, "signing keys are unavailable");
    free(t);
    /* not JSON; a 500; more than 1 MiB */
    server_set(&s, 200, "<html>hello</html>");
    CU_ASSERT_EQUAL(az_jwt_refresh(v, msg), AZ_ERR_INVALID);
    server_set(&s, 500, "{\"keys\":[]}");
    CU_ASSERT_EQUAL(az_jwt_refresh(v, msg), AZ_ERR_UNAVAILABLE);
    CU_ASSERT_PTR_NOT_NULL(strstr(msg, "500"));
    size_t n = AZ_JWT_MAX_JWKS + 1000;
    char *huge = malloc(n + 1);
    memset(huge, ' ', n);
    memcpy(huge, "{\"keys\":[", 9);
    huge[n - 2] = ']';
    huge[n - 1] = '}';
    huge[n] = 0;
    server_set(&s, 200, huge);
    free(huge);
    CU_ASSERT_EQUAL(az_jwt_refresh(v, msg), AZ_ERR_UNAVAILABLE);
    CU_ASSERT_PTR_NOT_NULL(strstr(msg, "larger than"));
    /* a good document afterwards is picked up */
    server_keys(&s, &k1, NULL);
    CU_ASSERT_EQUAL(az_jwt_refresh(v, msg), AZ_OK);
    az_jwt_verifier_free(v);
    server_stop(&s);
}

static void test_jwks_down(void)
{
    /* nothing listens: connection refused */
    jwks_server s;
    server_start(&s);
    int port = s.port;
    server_stop(&s);
    char url[96], msg[AZ_MSG_MAX];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/jwks", port);
    az_jwt_config cfg = {.jwks_url = url, .issuer = ISSUER};
    az_jwt_verifier *v = az_jwt_verifier_new(&cfg, msg);
    CU_ASSERT_PTR_NOT_NULL_FATAL(v);
    char *t = mint(&k1, (claims){0});
    int64_t t0 = now_ms();
    EXPECT_REJECT(v, t, "signing keys are unavailable");
    EXPECT_REJECT(v, t, "signing keys are unavailable"); /* rate-limited: no second fetch */
    CU_ASSERT_EQUAL(az_jwt_fetch_count(v), 1);
    CU_ASSERT(now_ms() - t0 < 3000);
    az_jwt_verifier_free(v);

    /* accepts and never answers: bounded by the timeout */
    server_start(&s);
    pthread_mutex_lock(&s.mu);
    s.hang = 1;
    pthread_mutex_unlock(&s.mu);
    v = verifier(&s, NULL, 0, 400);
    t0 = now_ms();
    EXPECT_REJECT(v, t, "signing keys are unavailable");
    int64_t took = now_ms() - t0;
    CU_ASSERT(took >= 350 && took < 2500);
    az_jwt_verifier_free(v);
    server_stop(&s);
    free(t);
}

typedef struct hammer {
    az_jwt_verifier *v;
    const char *token;
    int rejected;
} hammer;

static void *hammer_main(void *arg)
{
    hammer *h = arg;
    for (int i = 0; i < 25; i++) {
        char m[AZ_MSG_MAX];
        az_jwt_claims c;
        if (az_jwt_verify(h->v, h->token, &c, m) == AZ_ERR_UNAUTHENTICATED) h->rejected++;
    }
    return NULL;
}

static void test_refresh_rate_limit(void)
{
    jwks_server s;
    server_start(&s);
    az_jwt_verifier *v = verifier(&s, NULL, 0, 0);
    char *tokens[8];
    for (int i = 0; i < 8; i++) {
        char kid[16];
        snprintf(kid, sizeof kid, "nope-%d", i);
        tokens[i] = mint(&k2, (claims){.kid = kid});
    }
    pthread_t th[8];
    hammer h[8];
    for (int i = 0; i < 8; i++) {
        h[i] = (hammer){.v = v, .token = tokens[i]};
        pthread_create(&th[i], NULL, hammer_main, &h[i]);
    }
    for (int i = 0; i < 8; i++) pthread_join(th[i], NULL);
    for (int i = 0; i < 8; i++) CU_ASSERT_EQUAL(h[i].rejected, 25);
    /* 200 unknown-kid verifications from 8 threads: one fetch */
    CU_ASSERT_EQUAL(az_jwt_fetch_count(v), 1);
    CU_ASSERT_EQUAL(atomic_load(&s.requests), 1);
    /* and valid tokens keep working meanwhile without fetches */
    char *ok = mint(&k1, (claims){0});
    az_jwt_claims c;
    CU_ASSERT_EQUAL(verify(v, ok, &c), AZ_OK);
    CU_ASSERT_EQUAL(az_jwt_fetch_count(v), 1);
    free(ok);
    for (int i = 0; i < 8; i++) free(tokens[i]);
    az_jwt_verifier_free(v);
    server_stop(&s);
}

static void test_config_checks(void)
{
    static const char *const bad_urls[] = {
        "http://example.com/jwks",     "http://127.0.0.1@evil.test/jwks",
        "ftp://127.0.0.1/jwks",        "https:///jwks",
        "http://127.0.0.1.evil.test/", "https://clerk.test/ jwks",
        "127.0.0.1:8080/jwks",         "http://[::2]/jwks",
    };
    char msg[AZ_MSG_MAX];
    for (size_t i = 0; i < sizeof bad_urls / sizeof *bad_urls; i++) {
        az_jwt_config cfg = {.jwks_url = bad_urls[i], .issuer = ISSUER};
        az_jwt_verifier *v = az_jwt_verifier_new(&cfg, msg);
        if (v) fprintf(stderr, "\n  accepted %s\n", bad_urls[i]);
        CU_ASSERT_PTR_NULL(v);
        az_jwt_verifier_free(v);
    }
    static const char *const good_urls[] = {
        "https://clerk.agentz.test/.well-known/jwks.json",
        "http://127.0.0.1:9/jwks",
        "http://localhost:9/jwks",
        "http://[::1]:9/jwks",
        "HTTPS://clerk.agentz.test/jwks",
    };
    for (size_t i = 0; i < sizeof good_urls / sizeof *good_urls; i++) {
        az_jwt_config cfg = {.jwks_url = good_urls[i], .issuer = ISSUER};
        az_jwt_verifier *v = az_jwt_verifier_new(&cfg, msg);
        CU_ASSERT_PTR_NOT_NULL(v);
        az_jwt_verifier_free(v);
    }
    az_jwt_config no_issuer = {.jwks_url = good_urls[0]};
    CU_ASSERT_PTR_NULL(az_jwt_verifier_new(&no_issuer, msg));
    CU_ASSERT_PTR_NOT_NULL(strstr(msg, "AGENTZ_JWT_ISSUER"));
    az_jwt_config no_url = {.issuer = ISSUER};
    CU_ASSERT_PTR_NULL(az_jwt_verifier_new(&no_url, msg));
    CU_ASSERT_PTR_NULL(az_jwt_verifier_new(NULL, msg));
    az_jwt_verifier_free(NULL);
}

static int suite_init(void)
{
    az_log_set_level(AZ_LOG_ERROR);
    return make_key(&k1, 2048, "k1") || make_key(&k2, 2048, "k2") || make_key(&weak, 1024, "weak");
}

static int suite_clean(void)
{
    free_key(&k1);
    free_key(&k2);
    free_key(&weak);
    return 0;
}

int main(void)
{
    if (CU_initialize_registry() != CUE_SUCCESS) return 1;
    CU_pSuite s = CU_add_suite("jwt", suite_init, suite_clean);
    if (!s) return 1;
    CU_add_test(s, "valid token, cached keys", test_valid_token);
    CU_add_test(s, "organization claims v1 and v2", test_org_claims_v1_and_v2);
    CU_add_test(s, "exp and nbf with leeway", test_time_claims);
    CU_add_test(s, "issuer and authorized parties", test_issuer_and_azp);
    CU_add_test(s, "alg none, HS256 with the public key, other algs", test_algorithm_attacks);
    CU_add_test(s, "bad signatures", test_bad_signature);
    CU_add_test(s, "garbage and oversized tokens", test_garbage_tokens);
    CU_add_test(s, "unknown kid: one refresh", test_unknown_kid_refreshes_once);
    CU_add_test(s, "key rotation", test_key_rotation);
    CU_add_test(s, "keys older than max age are refetched", test_old_keys_refetched);
    CU_add_test(s, "unusable jwks documents", test_unusable_jwks);
    CU_add_test(s, "jwks server down or hanging", test_jwks_down);
    CU_add_test(s, "refresh rate limit under concurrency", test_refresh_rate_limit);
    CU_add_test(s, "configuration checks", test_config_checks);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    unsigned failed = CU_get_number_of_failures();
    CU_cleanup_registry();
    return failed ? 1 : 0;
}
