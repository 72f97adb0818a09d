/* Printing protobuf-c messages for people and scripts: "key: value" lines, proto3 JSON, or
 * YAML, all derived from the proto3 JSON mapping so every resource prints the same way. */
#ifndef AZ_OUTPUT_H
#define AZ_OUTPUT_H

#include <protobuf-c/protobuf-c.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "core/err.h"

typedef enum az_output_format {
    AZ_OUTPUT_TABLE = 0, /* list: aligned columns; single resource: "key: value" lines */
    AZ_OUTPUT_JSON,      /* proto3 JSON, pretty-printed, lowerCamelCase names */
    AZ_OUTPUT_YAML,      /* the same document as YAML, snake_case names */
} az_output_format;

/* Parses "table", "json" or "yaml"; AZ_ERR_INVALID otherwise (msg names the flag). */
az_err az_output_parse_format(const char *flag, const char *s, az_output_format *out, char *msg);

/* Prints m in fmt to f, followed by a newline. TABLE prints one "key: value" line per field
 * (nested fields as "llm.model", lists comma-separated, maps as "k=v, k2=v2"; default values
 * included), aligned on the colon. Fails with the az_pbjson_encode error, or AZ_ERR_NOMEM;
 * nothing is printed then. */
az_err az_output_message(FILE *f, const ProtobufCMessage *m, az_output_format fmt, char *msg);

/* The short lowercase name of enum value v: with prefix "AGENT_STATUS_", 1 gives "idle".
 * Unknown values print as their number. Writes into buf (size bytes) and returns it. */
const char *az_output_enum(const ProtobufCEnumDescriptor *desc, const char *prefix, int v,
                           char *buf, size_t size);

/* Formats a Timestamp's seconds as RFC 3339 UTC ("2026-11-02T10:04:05Z"); "" when
 * seconds == 0 (unset). Writes into buf (at least 32 bytes) and returns it. */
const char *az_output_time(int64_t seconds, char *buf, size_t size);

/* Formats how long ago a Timestamp's seconds was, relative to now: "45s ago", "12m ago",
 * "5h ago", "3d ago" ("" when seconds == 0, "0s ago" for future times). Returns buf. */
const char *az_output_age(int64_t seconds, int64_t now, char *buf, size_t size);

#endif
