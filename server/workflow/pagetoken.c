/* Page tokens: base64url text, so they survive URLs (the REST mapping) and look opaque. */
#include "pagetoken.h"

#include <openssl/evp.h>
#include <string.h>

char *az_pagetoken_encode(az_arena *a, const char *raw)
{
    size_t n = strlen(raw);
    if (n > AZ_PAGETOKEN_RAW_MAX) return NULL;
    char *out = az_arena_alloc(a, 4 * ((n + 2) / 3) + 1);
    if (!out) return NULL;
    int len = EVP_EncodeBlock((unsigned char *)out, (const unsigned char *)raw, (int)n);
    for (int i = 0; i < len; i++) {
        if (out[i] == '+') out[i] = '-';
        else if (out[i] == '/') out[i] = '_';
        else if (out[i] == '=') {
            out[i] = '\0';
            break;
        }
    }
    return out;
}

az_err az_pagetoken_decode(const char *token, char raw[AZ_PAGETOKEN_RAW_MAX + 1], char *msg)
{
    size_t n = strlen(token);
    if (n == 0 || n > 4 * (AZ_PAGETOKEN_RAW_MAX / 3) + 4)
        return az_fail(msg, AZ_ERR_INVALID, "page_token is invalid");
    char b64[4 * (AZ_PAGETOKEN_RAW_MAX / 3) + 8];
    size_t k = 0;
    for (; k < n; k++) {
        char ch = token[k];
        if (!((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
              ch == '-' || ch == '_'))
            return az_fail(msg, AZ_ERR_INVALID, "page_token is invalid");
        b64[k] = ch == '-' ? '+' : ch == '_' ? '/' : ch;
    }
    while (k % 4) b64[k++] = '=';
    b64[k] = '\0';
    unsigned char buf[4 * (AZ_PAGETOKEN_RAW_MAX / 3) + 8];
    int len = EVP_DecodeBlock(buf, (const unsigned char *)b64, (int)k);
    if (len <= 0) return az_fail(msg, AZ_ERR_INVALID, "page_token is invalid");
    /* EVP_DecodeBlock keeps the zero bytes standing for padding: the text ends at the first. */
    size_t m = strnlen((const char *)buf, (size_t)len);
    if (m == 0 || m > AZ_PAGETOKEN_RAW_MAX) return az_fail(msg, AZ_ERR_INVALID, "page_token is invalid");
    memcpy(raw, buf, m);
    raw[m] = '\0';
    return AZ_OK;
}

unsigned long az_pagetoken_hash(unsigned long h, const char *s)
{
    for (s = s ? s : ""; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ul;
    return (h ^ '|') * 1099511628211ul;
}
