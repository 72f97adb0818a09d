/* logfmt or JSON lines on stderr. One write(2) per line so lines from threads never interleave.
 * JSON lines carry az_log_kv's logfmt fields as members, parsed back from the logfmt text so every
 * caller gets both formats from one call. */
#include "log.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

static atomic_int min_level = AZ_LOG_INFO;
static atomic_int log_format = AZ_LOG_TEXT;
static const char *names[] = {"debug", "info", "warn", "error"};

void az_log_set_format(az_log_format format) { atomic_store(&log_format, (int)format); }

int az_log_parse_format(const char *s, az_log_format *out)
{
    if (s && strcasecmp(s, "text") == 0) *out = AZ_LOG_TEXT;
    else if (s && strcasecmp(s, "json") == 0) *out = AZ_LOG_JSON;
    else return -1;
    return 0;
}

void az_log_set_level(az_log_level level) { atomic_store(&min_level, (int)level); }
int az_log_enabled(az_log_level level) { return (int)level >= atomic_load(&min_level); }

int az_log_parse_level(const char *s, az_log_level *out)
{
    for (int i = 0; i < 4; i++) {
        if (s && strcasecmp(s, names[i]) == 0) {
            *out = (az_log_level)i;
            return 0;
        }
    }
    if (s && strcasecmp(s, "warning") == 0) {
        *out = AZ_LOG_WARN;
        return 0;
    }
    return -1;
}

/* Appends s to buf as a logfmt quoted value, escaping quotes, backslashes and controls. */
static size_t put_quoted(char *buf, size_t off, size_t cap, const char *s)
{
    if (off < cap) buf[off++] = '"';
    for (; *s && off + 4 < cap; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\') {
            buf[off++] = '\\';
            buf[off++] = (char)ch;
        } else if (ch == '\n') {
            buf[off++] = '\\';
            buf[off++] = 'n';
        } else if (ch < 0x20) {
            buf[off++] = ' ';
        } else {
            buf[off++] = (char)ch;
        }
    }
    if (off < cap) buf[off++] = '"';
    return off;
}

/* ---- JSON lines ---- */

typedef struct jbuf {
    char *p;
    size_t off, cap; /* cap leaves room for the closing "}\n" */
} jbuf;

static void jraw(jbuf *b, const char *s, size_t n)
{
    if (b->off + n > b->cap) n = b->off < b->cap ? b->cap - b->off : 0;
    memcpy(b->p + b->off, s, n);
    b->off += n;
}

/* The length of the well-formed UTF-8 sequence at s (n bytes left), or 0 when it is not one. */
static size_t utf8_len(const unsigned char *s, size_t n)
{
    unsigned char c = s[0];
    size_t len;
    unsigned char lo = 0x80, hi = 0xbf;
    if (c >= 0xc2 && c <= 0xdf) len = 2;
    else if (c >= 0xe0 && c <= 0xef) {
        len = 3;
        if (c == 0xe0) lo = 0xa0;     /* overlong */
        else if (c == 0xed) hi = 0x9f; /* surrogates */
    } else if (c >= 0xf0 && c <= 0xf4) {
        len = 4;
        if (c == 0xf0) lo = 0x90;
        else if (c == 0xf4) hi = 0x8f; /* past U+10FFFF */
    } else {
        return 0;
    }
    if (n < len || s[1] < lo || s[1] > hi) return 0;
    for (size_t i = 2; i < len; i++)
        if (s[i] < 0x80 || s[i] > 0xbf) return 0;
    return len;
}

/* s (n bytes) as a JSON string: quotes, backslashes and controls escaped, bytes that are not
 * UTF-8 replaced by U+FFFD, cut short (still quoted) when the line is full. */
static void jstr(jbuf *b, const char *s, size_t n)
{
    jraw(b, "\"", 1);
    const unsigned char *u = (const unsigned char *)s;
    for (size_t i = 0; i < n && b->off + 8 < b->cap;) {
        unsigned char c = u[i];
        char esc[8];
        if (c == '"' || c == '\\') {
            esc[0] = '\\', esc[1] = (char)c;
            jraw(b, esc, 2);
            i++;
        } else if (c == '\n') {
            jraw(b, "\\n", 2), i++;
        } else if (c == '\t') {
            jraw(b, "\\t", 2), i++;
        } else if (c < 0x20 || c == 0x7f) {
            snprintf(esc, sizeof esc, "\\u%04x", c);
            jraw(b, esc, 6);
            i++;
        } else if (c < 0x80) {
            jraw(b, (const char *)&u[i], 1), i++;
        } else {
            size_t l = utf8_len(u + i, n - i);
            if (l) jraw(b, (const char *)&u[i], l), i += l;
            else jraw(b, "\\ufffd", 6), i++;
        }
    }
    if (b->off < b->cap) jraw(b, "\"", 1);
    else b->p[b->cap - 1] = '"';
}

/* 1 when v (n bytes) is a JSON number. */
static int is_number(const char *v, size_t n)
{
    size_t i = 0;
    if (i < n && v[i] == '-') i++;
    if (i == n) return 0;
    if (v[i] == '0') i++;
    else if (v[i] >= '1' && v[i] <= '9')
        while (i < n && v[i] >= '0' && v[i] <= '9') i++;
    else return 0;
    if (i < n && v[i] == '.') {
        size_t d = ++i;
        while (i < n && v[i] >= '0' && v[i] <= '9') i++;
        if (i == d) return 0;
    }
    if (i < n && (v[i] == 'e' || v[i] == 'E')) {
        i++;
        if (i < n && (v[i] == '+' || v[i] == '-')) i++;
        size_t d = i;
        while (i < n && v[i] >= '0' && v[i] <= '9') i++;
        if (i == d) return 0;
    }
    return i == n;
}

/* Adds the members of logfmt fields: key=bare or key="quoted \" \\ \n" pairs, separated by
 * spaces; words without '=' are skipped. A value is a JSON number when it spells one and its
 * key does not end in "id" (request ids, trace ids stay strings whatever they look like). */
static void jfields(jbuf *b, const char *f)
{
    char val[4096];
    while (*f && b->off + 32 < b->cap) { /* room for a member's quotes: the line stays JSON */
        while (*f == ' ') f++;
        const char *k = f;
        while (*f && *f != '=' && *f != ' ') f++;
        size_t kl = (size_t)(f - k);
        if (*f != '=' || kl == 0) {
            while (*f && *f != ' ') f++;
            continue;
        }
        f++;
        size_t vl = 0;
        int quoted = *f == '"';
        if (quoted) {
            for (f++; *f && *f != '"'; f++) {
                char ch = *f;
                if (ch == '\\' && f[1]) {
                    f++;
                    ch = *f == 'n' ? '\n' : *f;
                }
                if (vl < sizeof val) val[vl++] = ch;
            }
            if (*f == '"') f++;
        } else {
            while (*f && *f != ' ') {
                if (vl < sizeof val) val[vl++] = *f;
                f++;
            }
        }
        jraw(b, ",", 1);
        jstr(b, k, kl);
        jraw(b, ":", 1);
        int id = kl >= 2 && k[kl - 2] == 'i' && k[kl - 1] == 'd';
        if (!quoted && !id && is_number(val, vl) && b->off + vl < b->cap) jraw(b, val, vl);
        else jstr(b, val, vl);
    }
}

static void emit_json(az_log_level level, const struct timespec *ts, const struct tm *tm,
                      const char *msg, const char *fields)
{
    char line[8192];
    jbuf b = {line, 0, sizeof line - 2};
    int n = snprintf(line, sizeof line, "{\"time\":\"%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ\",\"level\":\"%s\",\"msg\":",
                     tm->tm_year + 1900, tm->tm_mon + 1, tm->tm_mday, tm->tm_hour, tm->tm_min,
                     tm->tm_sec, ts->tv_nsec / 1000000, names[level]);
    b.off = (size_t)n;
    jstr(&b, msg, strlen(msg));
    if (fields) jfields(&b, fields);
    line[b.off++] = '}';
    line[b.off++] = '\n';
    ssize_t w = write(STDERR_FILENO, line, b.off);
    (void)w;
}

static void emit(az_log_level level, const char *msg, const char *fields)
{
    char line[4096];
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    if (atomic_load(&log_format) == AZ_LOG_JSON) {
        emit_json(level, &ts, &tm, msg, fields);
        return;
    }
    size_t cap = sizeof line - 2;
    int n = snprintf(line, cap, "ts=%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ level=%s msg=",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
                     tm.tm_sec, ts.tv_nsec / 1000000, names[level]);
    size_t off = put_quoted(line, (size_t)n, cap, msg);
    if (fields && *fields) {
        n = snprintf(line + off, cap - off, " %s", fields);
        if (n > 0) off += (size_t)n < cap - off ? (size_t)n : cap - off - 1;
    }
    line[off++] = '\n';
    ssize_t w = write(STDERR_FILENO, line, off);
    (void)w;
}

void az_log(az_log_level level, const char *fmt, ...)
{
    if (!az_log_enabled(level)) return;
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    emit(level, msg, NULL);
}

/* 1 when v is n lowercase hex digits, not all zero. */
static int hex_id(const char *v, size_t n)
{
    int nonzero = 0;
    for (size_t i = 0; i < n; i++) {
        if (!((v[i] >= '0' && v[i] <= '9') || (v[i] >= 'a' && v[i] <= 'f'))) return 0;
        nonzero |= v[i] != '0';
    }
    return nonzero;
}

int az_log_traceparent(const char *v, size_t n, char *trace_id, char *span_id)
{
    trace_id[0] = span_id[0] = '\0';
    if (!v || n != 55 || v[0] != '0' || v[1] != '0' || v[2] != '-' || v[35] != '-' || v[52] != '-' ||
        !hex_id(v + 3, 32) || !hex_id(v + 36, 16) || !(hex_id(v + 53, 2) || (v[53] == '0' && v[54] == '0')))
        return 0;
    memcpy(trace_id, v + 3, 32);
    trace_id[32] = '\0';
    memcpy(span_id, v + 36, 16);
    span_id[16] = '\0';
    return 1;
}

void az_log_kv(az_log_level level, const char *msg, const char *fields)
{
    if (!az_log_enabled(level)) return;
    emit(level, msg, fields);
}
