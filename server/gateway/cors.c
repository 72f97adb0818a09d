/* The gateway's CORS allow-list. Origins are normalised once (lowercase scheme and host, the
 * default port dropped) so a request's Origin is matched with one comparison per entry. */
#include "cors.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define ORIGIN_MAX 256

struct az_cors {
    int any;
    size_t n;
    char (*origins)[ORIGIN_MAX];
};

/* Writes the canonical form of an origin ("scheme://host[:port]") into out; returns 0, or -1
 * when it is not an origin (no scheme, a path, userinfo, too long). */
static int canonical(const char *s, size_t len, char *out)
{
    while (len && (s[len - 1] == ' ' || s[len - 1] == '\t')) len--;
    while (len && (*s == ' ' || *s == '\t')) s++, len--;
    const char *sep = len >= 3 ? memmem(s, len, "://", 3) : NULL;
    if (!sep || sep == s) return -1;
    size_t slen = (size_t)(sep - s), rest = len - slen - 3;
    const char *host = sep + 3;
    if (!rest || rest + slen + 3 >= ORIGIN_MAX) return -1;
    for (size_t i = 0; i < slen; i++)
        if (!isalpha((unsigned char)s[i]) && s[i] != '+' && s[i] != '-' && s[i] != '.') return -1;
    for (size_t i = 0; i < rest; i++)
        if (host[i] == '/' || host[i] == '@' || host[i] == '?' || host[i] == '#' ||
            (unsigned char)host[i] <= ' ' || (unsigned char)host[i] >= 0x7f)
            return -1;
    size_t o = 0;
    for (size_t i = 0; i < slen; i++) out[o++] = (char)tolower((unsigned char)s[i]);
    memcpy(out + o, "://", 3);
    o += 3;
    /* Drop the scheme's default port: "https://a:443" and "https://a" are one origin. */
    const char *colon = NULL;
    for (size_t i = rest; i > 0; i--) {
        if (host[i - 1] == ']') break;
        if (host[i - 1] == ':') {
            colon = host + i - 1;
            break;
        }
    }
    size_t hlen = rest;
    if (colon) {
        const char *port = colon + 1;
        size_t plen = rest - (size_t)(port - host);
        if ((plen == 3 && memcmp(port, "443", 3) == 0 && slen == 5 && strncasecmp(s, "https", 5) == 0) ||
            (plen == 2 && memcmp(port, "80", 2) == 0 && slen == 4 && strncasecmp(s, "http", 4) == 0))
            hlen = (size_t)(colon - host);
    }
    for (size_t i = 0; i < hlen; i++) out[o++] = (char)tolower((unsigned char)host[i]);
    out[o] = '\0';
    return 0;
}

az_err az_cors_new(const char *list, const char *origin, az_cors **out, char *msg)
{
    *out = NULL;
    az_cors *c = calloc(1, sizeof *c);
    if (!c) return az_fail(msg, AZ_ERR_NOMEM, "out of memory");
    const char *p = list ? list : "";
    size_t count = 0;
    for (const char *q = p; *q; q++) count += *q == ',';
    c->origins = calloc(count + 1, sizeof *c->origins);
    if (!c->origins) {
        free(c);
        return az_fail(msg, AZ_ERR_NOMEM, "out of memory");
    }
    while (*p) {
        size_t n = strcspn(p, ",");
        const char *e = p;
        size_t en = n;
        while (en && (*e == ' ' || *e == '\t')) e++, en--;
        while (en && (e[en - 1] == ' ' || e[en - 1] == '\t')) en--;
        if (en == 1 && *e == '*') {
            c->any = 1;
        } else if (en) {
            if (canonical(e, en, c->origins[c->n]) != 0) {
                az_fail(msg, AZ_ERR_INVALID,
                        "%s: \"%.*s\" is not an origin (scheme://host[:port], no path)",
                        origin ? origin : "AGENTZ_CORS_ORIGINS", (int)(en > 200 ? 200 : en), e);
                az_cors_free(c);
                return AZ_ERR_INVALID;
            }
            c->n++;
        }
        p += n;
        if (*p == ',') p++;
    }
    *out = c;
    return AZ_OK;
}

void az_cors_free(az_cors *c)
{
    if (!c) return;
    free(c->origins);
    free(c);
}

int az_cors_allowed(const az_cors *c, const char *origin, size_t len)
{
    if (!c || !len) return 0;
    char canon[ORIGIN_MAX];
    if (canonical(origin, len, canon) != 0) return 0;
    if (c->any) return 1;
    for (size_t i = 0; i < c->n; i++)
        if (strcmp(c->origins[i], canon) == 0) return 1;
    return 0;
}

int az_cors_same_origin(const char *origin, size_t olen, const char *host, size_t hlen, int tls)
{
    char a[ORIGIN_MAX], b[ORIGIN_MAX], built[ORIGIN_MAX];
    if (!olen || !hlen || hlen + 9 >= ORIGIN_MAX) return 0;
    size_t n = (size_t)snprintf(built, sizeof built, "%s://%.*s", tls ? "https" : "http", (int)hlen, host);
    if (canonical(origin, olen, a) != 0 || canonical(built, n, b) != 0) return 0;
    return strcmp(a, b) == 0;
}

int az_cors_headers_allowed(const char *requested, size_t len, char *bad, size_t bad_size)
{
    static const char allow[] = AZ_CORS_ALLOW_HEADERS;
    size_t i = 0;
    while (i < len) {
        while (i < len && (requested[i] == ' ' || requested[i] == ',' || requested[i] == '\t')) i++;
        size_t start = i;
        while (i < len && requested[i] != ',') i++;
        size_t end = i;
        while (end > start && (requested[end - 1] == ' ' || requested[end - 1] == '\t')) end--;
        if (end == start) continue;
        size_t n = end - start;
        int found = 0;
        for (const char *a = allow; *a && !found;) {
            size_t an = strcspn(a, ",");
            if (an == n && strncasecmp(a, requested + start, n) == 0) found = 1;
            a += an;
            while (*a == ',' || *a == ' ') a++;
        }
        if (!found) {
            if (bad_size) {
                size_t k = n < bad_size - 1 ? n : bad_size - 1;
                memcpy(bad, requested + start, k);
                bad[k] = '\0';
            }
            return 0;
        }
    }
    return 1;
}
