/* Leveled logging to stderr, logfmt (`ts=... level=info msg="..." key=value`) or JSON lines.
 * Thread-safe. */
#ifndef AZ_LOG_H
#define AZ_LOG_H

#include <stddef.h>

typedef enum az_log_level {
    AZ_LOG_DEBUG = 0,
    AZ_LOG_INFO,
    AZ_LOG_WARN,
    AZ_LOG_ERROR,
} az_log_level;

/* How lines are written: logfmt (default), or one JSON object per line ({"time", "level",
 * "msg", then the fields of az_log_kv: numbers as JSON numbers, except keys ending in "id"}). */
typedef enum az_log_format {
    AZ_LOG_TEXT = 0,
    AZ_LOG_JSON,
} az_log_format;

void az_log_set_format(az_log_format format);

/* Parses "text|json" into *out; returns 0, or -1 and leaves *out unchanged. */
int az_log_parse_format(const char *s, az_log_format *out);

/* Sets the minimum level written; default AZ_LOG_INFO. */
void az_log_set_level(az_log_level level);
int az_log_enabled(az_log_level level);

/* Parses "debug|info|warn|error" into *out; returns 0, or -1 and leaves *out unchanged. */
int az_log_parse_level(const char *s, az_log_level *out);

/* Writes one line. fmt produces the message text (lowercase, what failed first); it is
 * quoted and escaped. Use az_log_kv for structured lines whose fields are preformatted. */
void az_log(az_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Writes one line whose body is `msg="<msg>" <fields>`, fields already in logfmt form. */
void az_log_kv(az_log_level level, const char *msg, const char *fields);

/* The trace context of a W3C traceparent value v (n bytes): "00-<32 hex trace id>-<16 hex parent
 * id>-<2 hex flags>", 55 characters, lowercase hex, neither id all zeros. On success copies the
 * ids into trace_id (33 bytes) and span_id (17 bytes) and returns 1; anything else (another
 * version, upper case, a NULL v) returns 0 with both set to "" — an invalid header is ignored,
 * as the recommendation says. */
int az_log_traceparent(const char *v, size_t n, char *trace_id, char *span_id);

#define az_debug(...) az_log(AZ_LOG_DEBUG, __VA_ARGS__)
#define az_info(...) az_log(AZ_LOG_INFO, __VA_ARGS__)
#define az_warn(...) az_log(AZ_LOG_WARN, __VA_ARGS__)
#define az_error(...) az_log(AZ_LOG_ERROR, __VA_ARGS__)

#endif
