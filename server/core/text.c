/* UTF-8 and identifier checks; the messages name the offending field so clients can fix it. */
#include "text.h"

#include "google/protobuf/duration.pb-c.h"

#include <ctype.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>

/* Returns the number of code points, or -1 when s is not valid UTF-8 (overlongs, surrogates
 * and code points past U+10FFFF included). */
static long utf8_count(const unsigned char *s, size_t len)
{
    long n = 0;
    for (size_t i = 0; i < len; n++) {
        unsigned c = s[i];
        size_t k;
        uint32_t cp;
        if (c < 0x80) {
            i++;
            continue;
        } else if ((c & 0xe0) == 0xc0) {
            k = 1, cp = c & 0x1f;
        } else if ((c & 0xf0) == 0xe0) {
            k = 2, cp = c & 0x0f;
        } else if ((c & 0xf8) == 0xf0) {
            k = 3, cp = c & 0x07;
        } else {
            return -1;
        }
        for (size_t j = 1; j <= k; j++) {
            if (i + j >= len || (s[i + j] & 0xc0) != 0x80) return -1;
            cp = cp << 6 | (s[i + j] & 0x3f);
        }
        static const uint32_t min[] = {0, 0x80, 0x800, 0x10000};
        if (cp < min[k] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return -1;
        i += k + 1;
    }
    return n;
}

int az_text_utf8_valid(const char *s, size_t len) { return utf8_count((const unsigned char *)s, len) >= 0; }

az_err az_text_check(const char *field, const char *s, size_t max, int flags, char *msg)
{
    if (!s) s = "";
    size_t len = strlen(s);
    if (len == 0) {
        if (flags & AZ_TEXT_REQUIRED) return az_fail(msg, AZ_ERR_INVALID, "%s is required", field);
        return AZ_OK;
    }
    long n = utf8_count((const unsigned char *)s, len);
    if (n < 0) return az_fail(msg, AZ_ERR_INVALID, "%s: not valid UTF-8", field);
    if ((size_t)n > max)
        return az_fail(msg, AZ_ERR_INVALID, "%s: longer than %zu characters", field, max);
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c != 0x7f) continue;
        if ((flags & AZ_TEXT_MULTILINE) && (c == '\n' || c == '\r' || c == '\t')) continue;
        return az_fail(msg, AZ_ERR_INVALID, "%s: control character 0x%02x at byte %zu", field, c,
                       i);
    }
    return AZ_OK;
}

int az_text_is_uuid(const char *s)
{
    if (!s || strlen(s) != 36) return 0;
    for (int i = 0; i < 36; i++) {
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (s[i] != '-') return 0;
        } else if (!isxdigit((unsigned char)s[i])) {
            return 0;
        }
    }
    return 1;
}

az_err az_text_uuid4(char out[37])
{
    unsigned char b[16];
    if (getrandom(b, sizeof b, 0) != (ssize_t)sizeof b) return AZ_ERR_IO;
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    snprintf(out, 37,
             "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0], b[1],
             b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14],
             b[15]);
    return AZ_OK;
}

int az_text_label_key_ok(const char *k)
{
    size_t n = strlen(k);
    if (n == 0 || n > AZ_TEXT_LABEL_KEY_MAX) return 0;
    for (const char *s = k; *s; s++) {
        char ch = *s;
        if (!((ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '_' || ch == '-' ||
              ch == '.' || ch == '/'))
            return 0;
    }
    return 1;
}

az_err az_text_check_url(const char *field, const char *u, int flags, char *msg)
{
    az_err err = az_text_check(field, u, AZ_TEXT_URL_MAX, flags & AZ_TEXT_REQUIRED, msg);
    if (err != AZ_OK || !u || !*u) return err;
    if (strncmp(u, "http://", 7) != 0 && strncmp(u, "https://", 8) != 0)
        return az_fail(msg, AZ_ERR_INVALID, "%s: must be an http:// or https:// URL", field);
    const char *host = strstr(u, "://") + 3;
    if (!*host || *host == '/') return az_fail(msg, AZ_ERR_INVALID, "%s: URL has no host", field);
    if (strchr(u, ' ')) return az_fail(msg, AZ_ERR_INVALID, "%s: URL contains a space", field);
    return AZ_OK;
}

az_err az_text_check_duration(const char *field, const Google__Protobuf__Duration *d, long max_s,
                              char *msg)
{
    if (!d) return AZ_OK;
    if (d->seconds < 0 || d->nanos < 0 || d->nanos > 999999999)
        return az_fail(msg, AZ_ERR_INVALID, "%s: must not be negative", field);
    if (d->seconds > max_s || (d->seconds == max_s && d->nanos > 0))
        return az_fail(msg, AZ_ERR_INVALID, "%s: must be at most %lds", field, max_s);
    return AZ_OK;
}
