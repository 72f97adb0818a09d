/* The proto3 JSON mapping for protobuf-c messages (protobuf-c has none): encode and decode. */
#ifndef AZ_PBJSON_H
#define AZ_PBJSON_H

#include <jansson.h>
#include <protobuf-c/protobuf-c.h>
#include <stddef.h>
#include <stdint.h>

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

/* 1 when f, a field of parent, is a map<K, V> (which JSON writes as an object), else 0. protobuf-c
 * marks nothing, so this is the shape test the codec itself uses: a repeated nested message
 * "<Name>Entry" with exactly key = 1 and value = 2. */
int az_pbjson_is_map(const ProtobufCMessageDescriptor *parent, const ProtobufCFieldDescriptor *f);

/* The member a oneof holds: the field number in its case slot (0 = none); f is any member. */
uint32_t az_pbjson_oneof_case(const ProtobufCMessage *m, const ProtobufCFieldDescriptor *f);

/* Records that f of m was given a value: sets a oneof's case to f, or the has_ flag of an
 * optional scalar (strings and messages have none). Changes nothing else. */
void az_pbjson_mark_present(ProtobufCMessage *m, const ProtobufCFieldDescriptor *f);

/* Like az_pbjson_decode, from a value the caller has already parsed with jansson (j is not
 * modified and stays the caller's): a caller that must look at the JSON first (or report syntax
 * errors its own way) need not parse it twice. root is the start of every error path ("agent"
 * gives "agent.fooBar: unknown field"); NULL means the message's short name, as
 * az_pbjson_decode does. Same ownership and errors as az_pbjson_decode. */
az_err az_pbjson_decode_tree(const ProtobufCMessageDescriptor *desc, json_t *j, const char *root,
                             ProtobufCAllocator *alloc, ProtobufCMessage **out, char *msg);

/* Decodes j as one value of field f (one element when f is repeated; for a map, one entry
 * message) into slot, the storage protobuf-c uses for such a value: an int32_t, a char *, a
 * ProtobufCBinaryData, a ProtobufCMessage *, ... It sets no presence flag or oneof case and
 * never grows a repeated array: that is the caller's job. JSON null decodes only where the
 * mapping gives it a value (Value, NullValue); elsewhere it is an error. Strings, bytes and
 * messages are allocated with alloc (NULL = malloc). On error nothing has been allocated, *slot
 * may hold a partial scalar, and msg names the path from root (NULL = the field's JSON name):
 * "query parameter startTime: invalid timestamp ...". */
az_err az_pbjson_decode_value(const ProtobufCFieldDescriptor *f, json_t *j, void *slot,
                              const char *root, ProtobufCAllocator *alloc, char *msg);

/* Encodes field f of m as a JSON value, whether set or not (the zero value, [], {}; an unset
 * message field as its empty message: {}, or a well-known type's zero such as
 * "1970-01-01T00:00:00Z"): what appears under the field's name in az_pbjson_encode's output
 * with the same flags. f must be one of m's fields. On AZ_OK *out is a NUL-terminated string the
 * caller frees with free(); on error *out is NULL and msg names the path from the field's JSON
 * name. */
az_err az_pbjson_encode_field(const ProtobufCMessage *m, const ProtobufCFieldDescriptor *f,
                              int flags, char **out, char *msg);

#endif
