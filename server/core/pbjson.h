/* The proto3 JSON mapping for protobuf-c messages (protobuf-c has none): encode and decode. */
#ifndef AZ_PBJSON_H
#define AZ_PBJSON_H

#include <protobuf-c/protobuf-c.h>
#include <stddef.h>

#include "err.h"

enum {
    AZ_PBJSON_PRETTY = 1 << 0,         /* two-space indented output */
    AZ_PBJSON_EMIT_DEFAULTS = 1 << 1,  /* also print fields holding default values */
    AZ_PBJSON_PROTO_NAMES = 1 << 2,    /* snake_case field names instead of lowerCamelCase */
};

/* Encodes m as proto3 JSON (lowerCamelCase names, int64 as strings, enums by name,
 * Timestamp RFC 3339, Duration "1.5s", FieldMask "a.b,c", wrappers as their value, bytes
 * base64, Struct/Value/ListValue/Empty natively). On AZ_OK *out is a NUL-terminated string
 * the caller frees with free(). On error *out is NULL and msg says why. */
az_err az_pbjson_encode(const ProtobufCMessage *m, int flags, char **out, char *msg);

/* Decodes json (len bytes, not necessarily NUL-terminated) into a new message of type desc,
 * allocated with alloc (NULL = malloc; free with protobuf_c_message_free_unpacked(m, alloc)).
 * Accepts both lowerCamelCase and original field names, enums by name or number, int64 as
 * numbers or strings, null as default. Unknown fields are an error. On error returns
 * AZ_ERR_INVALID with msg naming the field path ("agent.llm.temperature: expected number")
 * and *out NULL. */
az_err az_pbjson_decode(const ProtobufCMessageDescriptor *desc, const char *json, size_t len,
                        ProtobufCAllocator *alloc, ProtobufCMessage **out, char *msg);

#endif
