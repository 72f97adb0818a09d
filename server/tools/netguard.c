/* The outbound network policy: a table of special-purpose ranges refused by default and the
 * operator's allow list. IPv4 addresses are handled as IPv4-mapped IPv6 so one matcher serves
 * both families and ::ffff:127.0.0.1 cannot slip past a check written for 127.0.0.1. */
#include "netguard.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ENV_NAME "AGENTZ_ALLOW_PRIVATE_NETWORKS"

typedef struct range {
    uint8_t addr[16];
    unsigned prefix; /* 0-128, over the 16-byte (mapped) form */
} range;

struct az_netguard {
    int allow_all;
    size_t n;
    range entries[AZ_NETGUARD_MAX_ENTRIES];
};

/* Special-purpose ranges, most specific first so the name is the precise one. IPv4 ranges are
 * written in IPv4 form and widened to ::ffff:0:0/96 at lookup. */
static const struct blocked {
    int family;
    const char *cidr;
    const char *name;
} blocked[] = {
    {AF_INET, "169.254.169.254/32", "cloud metadata"},
    {AF_INET, "0.0.0.0/8", "this-network"},
    {AF_INET, "10.0.0.0/8", "private"},
    {AF_INET, "100.64.0.0/10", "shared (carrier-grade NAT)"},
    {AF_INET, "127.0.0.0/8", "loopback"},
    {AF_INET, "169.254.0.0/16", "link-local"},
    {AF_INET, "172.16.0.0/12", "private"},
    {AF_INET, "192.0.0.0/24", "IETF protocol assignments"},
    {AF_INET, "192.168.0.0/16", "private"},
    {AF_INET, "198.18.0.0/15", "benchmarking"},
    {AF_INET, "224.0.0.0/4", "multicast"},
    {AF_INET, "240.0.0.0/4", "reserved"},
    {AF_INET6, "::/128", "unspecified"},
    {AF_INET6, "::1/128", "loopback"},
    /* Deprecated IPv4-compatible addresses (::a.b.c.d): nothing legitimate uses them. */
    {AF_INET6, "::/96", "IPv4-compatible"},
    /* RFC 8215 local-use NAT64: translates to whatever the local network decides. */
    {AF_INET6, "64:ff9b:1::/48", "local-use NAT64"},
    {AF_INET6, "fc00::/7", "unique-local (private)"},
    {AF_INET6, "fe80::/10", "link-local"},
    {AF_INET6, "fec0::/10", "site-local"},
    {AF_INET6, "ff00::/8", "multicast"},
};

static const uint8_t mapped_prefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
static const uint8_t nat64_prefix[12] = {0, 0x64, 0xff, 0x9b, 0, 0, 0, 0, 0, 0, 0, 0};

static int in_range(const uint8_t a[16], const range *r)
{
    unsigned full = r->prefix / 8, rest = r->prefix % 8;
    if (memcmp(a, r->addr, full) != 0) return 0;
    if (rest == 0) return 1;
    uint8_t mask = (uint8_t)(0xff << (8 - rest));
    return (a[full] & mask) == (r->addr[full] & mask);
}

/* Parses "a.b.c.d[/p]" or "x::y[/p]" into r (IPv4 widened to mapped form). Returns NULL on
 * success or what is wrong with it. */
static const char *parse_cidr(const char *s, size_t len, range *r, int *family)
{
    char buf[INET6_ADDRSTRLEN + 8];
    if (len >= sizeof buf) return "not an address or CIDR range";
    memcpy(buf, s, len);
    buf[len] = '\0';
    char *slash = strchr(buf, '/');
    long prefix = -1;
    if (slash) {
        *slash = '\0';
        const char *p = slash + 1;
        if (!*p || strlen(p) > 3) return "prefix length must be a number";
        for (const char *q = p; *q; q++) {
            if (!isdigit((unsigned char)*q)) return "prefix length must be a number";
        }
        prefix = strtol(p, NULL, 10);
    }
    struct in_addr v4;
    struct in6_addr v6;
    memset(r, 0, sizeof *r);
    if (inet_pton(AF_INET, buf, &v4) == 1) {
        if (prefix > 32) return "prefix length must be 0-32";
        memcpy(r->addr, mapped_prefix, 12);
        memcpy(r->addr + 12, &v4, 4);
        r->prefix = 96 + (unsigned)(prefix < 0 ? 32 : prefix);
        *family = AF_INET;
    } else if (inet_pton(AF_INET6, buf, &v6) == 1) {
        if (prefix > 128) return "prefix length must be 0-128";
        memcpy(r->addr, &v6, 16);
        r->prefix = (unsigned)(prefix < 0 ? 128 : prefix);
        *family = AF_INET6;
    } else {
        return "not an address or CIDR range";
    }
    /* Host bits past the prefix are almost always a typo ("10.1.0.0/8" meant /16): refuse
     * rather than silently widen what the operator allowed. */
    for (unsigned bit = r->prefix; bit < 128; bit++) {
        if (r->addr[bit / 8] & (0x80 >> (bit % 8))) return "has bits set past the prefix length";
    }
    return NULL;
}

az_err az_netguard_new(const char *policy, az_netguard **out, char *msg)
{
    *out = NULL;
    az_netguard *g = calloc(1, sizeof *g);
    if (!g) return az_fail(msg, AZ_ERR_NOMEM, "out of memory");
    if (!policy) policy = "";
    /* Trim the whole value so "1 " and " 0" mean what they look like. */
    while (isspace((unsigned char)*policy)) policy++;
    size_t plen = strlen(policy);
    while (plen && isspace((unsigned char)policy[plen - 1])) plen--;
    if (plen == 1 && (policy[0] == '0' || policy[0] == '1')) {
        g->allow_all = policy[0] == '1';
        *out = g;
        return AZ_OK;
    }
    const char *p = policy, *end = policy + plen;
    while (p < end) {
        const char *comma = memchr(p, ',', (size_t)(end - p));
        const char *e = comma ? comma : end;
        const char *a = p, *b = e;
        while (a < b && isspace((unsigned char)*a)) a++;
        while (b > a && isspace((unsigned char)b[-1])) b--;
        if (b > a) {
            if (g->n == AZ_NETGUARD_MAX_ENTRIES) {
                free(g);
                return az_fail(msg, AZ_ERR_INVALID, ENV_NAME ": at most %d entries",
                               AZ_NETGUARD_MAX_ENTRIES);
            }
            int family;
            const char *why = parse_cidr(a, (size_t)(b - a), &g->entries[g->n], &family);
            if (why) {
                int shown = (int)(b - a > 64 ? 64 : b - a);
                free(g);
                return az_fail(msg, AZ_ERR_INVALID, ENV_NAME ": entry \"%.*s\": %s", shown, a, why);
            }
            g->n++;
        }
        p = comma ? comma + 1 : end;
    }
    *out = g;
    return AZ_OK;
}

void az_netguard_free(az_netguard *g)
{
    free(g);
}

/* Puts sa's address into a[16] (IPv4 as mapped). 0 for families other than IPv4/IPv6. */
static int to16(const struct sockaddr *sa, uint8_t a[16])
{
    if (!sa) return 0;
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *s4 = (const struct sockaddr_in *)sa;
        memcpy(a, mapped_prefix, 12);
        memcpy(a + 12, &s4->sin_addr, 4);
        return 1;
    }
    if (sa->sa_family == AF_INET6) {
        memcpy(a, &((const struct sockaddr_in6 *)sa)->sin6_addr, 16);
        return 1;
    }
    return 0;
}

/* The blocked table in matcher form, parsed once per process. */
static range blocked_ranges[sizeof blocked / sizeof *blocked];
static pthread_once_t blocked_once = PTHREAD_ONCE_INIT;

static void parse_blocked(void)
{
    for (size_t i = 0; i < sizeof blocked / sizeof *blocked; i++) {
        int family;
        /* The table is ours and known good; a bad entry would match nothing, which the tests'
         * walk over every range catches. */
        parse_cidr(blocked[i].cidr, strlen(blocked[i].cidr), &blocked_ranges[i], &family);
    }
}

/* The name of the blocked range a (16-byte form) lies in, or NULL. */
static const char *range_name16(const uint8_t a[16])
{
    pthread_once(&blocked_once, parse_blocked);
    uint8_t embedded[16];
    /* NAT64 (64:ff9b::/96) reaches the IPv4 address it carries: judge that address. */
    if (memcmp(a, nat64_prefix, 12) == 0) {
        memcpy(embedded, mapped_prefix, 12);
        memcpy(embedded + 12, a + 12, 4);
        a = embedded;
    }
    for (size_t i = 0; i < sizeof blocked / sizeof *blocked; i++) {
        if (in_range(a, &blocked_ranges[i])) return blocked[i].name;
    }
    return NULL;
}

const char *az_netguard_range_name(const struct sockaddr *sa)
{
    uint8_t a[16];
    if (!to16(sa, a)) return "unsupported address family";
    return range_name16(a);
}

int az_netguard_allowed(const az_netguard *g, const struct sockaddr *sa)
{
    uint8_t a[16];
    if (!to16(sa, a)) return 0;
    if (!range_name16(a)) return 1;
    if (!g) return 0;
    if (g->allow_all) return 1;
    uint8_t embedded[16];
    int nat64 = memcmp(a, nat64_prefix, 12) == 0;
    if (nat64) {
        memcpy(embedded, mapped_prefix, 12);
        memcpy(embedded + 12, a + 12, 4);
    }
    for (size_t i = 0; i < g->n; i++) {
        if (in_range(a, &g->entries[i])) return 1;
        if (nat64 && in_range(embedded, &g->entries[i])) return 1;
    }
    return 0;
}

char *az_netguard_addr_text(const struct sockaddr *sa, char *buf, size_t len)
{
    const void *src = NULL;
    if (sa && sa->sa_family == AF_INET) src = &((const struct sockaddr_in *)sa)->sin_addr;
    if (sa && sa->sa_family == AF_INET6) src = &((const struct sockaddr_in6 *)sa)->sin6_addr;
    if (!src || !inet_ntop(sa->sa_family, src, buf, (socklen_t)len)) snprintf(buf, len, "?");
    return buf;
}

static curl_socket_t curl_open(void *arg, curlsocktype purpose, struct curl_sockaddr *a)
{
    az_netguard_curl *st = arg;
    int inet = (a->family == AF_INET && a->addrlen >= sizeof(struct sockaddr_in)) ||
               (a->family == AF_INET6 && a->addrlen >= sizeof(struct sockaddr_in6));
    if (purpose != CURLSOCKTYPE_IPCXN || !inet || !az_netguard_allowed(st->guard, &a->addr)) {
        if (!st->refused++) {
            az_netguard_addr_text(&a->addr, st->refused_addr, sizeof st->refused_addr);
            st->refused_range = inet ? az_netguard_range_name(&a->addr) : "unsupported address family";
            if (!st->refused_range) st->refused_range = "public";
        }
        return CURL_SOCKET_BAD;
    }
    curl_socket_t fd = socket(a->family, a->socktype | SOCK_CLOEXEC, a->protocol);
    if (fd != CURL_SOCKET_BAD) st->opened++;
    return fd;
}

CURLcode az_netguard_curl_use(CURL *h, az_netguard_curl *st)
{
    CURLcode cc = curl_easy_setopt(h, CURLOPT_OPENSOCKETFUNCTION, curl_open);
    if (cc == CURLE_OK) cc = curl_easy_setopt(h, CURLOPT_OPENSOCKETDATA, st);
    return cc;
}
