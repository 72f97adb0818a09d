/* Page tokens: base64url text (core/b64), so they survive URLs (the REST mapping) and look opaque. */
#include "pagetoken.h"

#include <string.h>

#include "b64.h"

/* Longest token whose text fits AZ_PAGETOKEN_RAW_MAX: 4 characters per 3 bytes, no padding. */
#define TOKEN_MAX (4 * ((AZ_PAGETOKEN_RAW_MAX + 2) / 3))

char *az_pagetoken_encode(az_arena *a, const char *raw)
{
    size_t n = strlen(raw);
    if (n > AZ_PAGETOKEN_RAW_MAX) return NULL;
    char *out = az_arena_alloc(a, 4 * ((n + 2) / 3) + 1);
    if (!out) return NULL;
    az_b64url_encode((const unsigned char *)raw, n, out);
    return out;
}

az_err az_pagetoken_decode(const char *token, char raw[AZ_PAGETOKEN_RAW_MAX + 1], char *msg)
{
    size_t n = strnlen(token, TOKEN_MAX + 1);
    if (n == 0 || n > TOKEN_MAX) return az_fail(msg, AZ_ERR_INVALID, "page_token is invalid");
    unsigned char buf[AZ_PAGETOKEN_RAW_MAX];
    int len = az_b64url_decode(token, buf, sizeof buf);
    /* A NUL inside would cut the text short of what was signed by the hash: not ours. */
    if (len <= 0 || memchr(buf, '\0', (size_t)len))
        return az_fail(msg, AZ_ERR_INVALID, "page_token is invalid");
    memcpy(raw, buf, (size_t)len);
    raw[len] = '\0';
    return AZ_OK;
}

unsigned long az_pagetoken_hash(unsigned long h, const char *s)
{
    for (s = s ? s : ""; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ul;
    return (h ^ '|') * 1099511628211ul;
}
