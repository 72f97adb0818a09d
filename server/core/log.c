/* logfmt lines on stderr. One write(2) per line so lines from threads never interleave. */
#include "log.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

static atomic_int min_level = AZ_LOG_INFO;
static const char *names[] = {"debug", "info", "warn", "error"};

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

static void emit(az_log_level level, const char *msg, const char *fields)
{
    char line[4096];
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
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

void az_log_kv(az_log_level level, const char *msg, const char *fields)
{
    if (!az_log_enabled(level)) return;
    emit(level, msg, fields);
}
