/* YAML for the CLI: YAML documents to jansson values (optionally guided by the protobuf message
 * they describe, so `workflows create -f x.yaml` and `import crewai` read YAML the same way) and
 * jansson values back to YAML with libyaml's emitter. */
#ifndef AZ_YAMLJSON_H
#define AZ_YAMLJSON_H

#include <jansson.h>
#include <protobuf-c/protobuf-c.h>
#include <stddef.h>

#include "core/err.h"

/* Largest YAML or JSON input accepted, and deepest nesting of mappings and sequences. */
#define AZ_YAML_MAX_BYTES (4u << 20)
#define AZ_YAML_MAX_DEPTH 64
/* Most values one document may expand to (aliases can multiply a small file). */
#define AZ_YAML_MAX_VALUES (1u << 20)

/* Parses text (len bytes) as one YAML 1.1 document into a new jansson value (*out, a new
 * reference; an empty document gives JSON null). name prefixes every message
 * ("workflow.yaml:3:7: found undefined alias").
 *
 * Without desc, plain scalars are typed as PyYAML does: null (~, null, empty), booleans (true,
 * false, yes, no, on, off in any of their three casings), integers (decimal, 0x, 0o, 0b, leading
 * 0 octal, '_' separators) and floats (with a '.'); quoted and block scalars are strings. With
 * desc the document is the proto3 JSON of that message and plain scalars under string, bytes,
 * Duration, Timestamp and FieldMask fields (also list items and map values) stay strings
 * verbatim, so `name: 2024` or `default_value: 10` are not turned into numbers pbjson rejects;
 * Struct/Value fields use the plain rules.
 *
 * Aliases are resolved; merge keys (<<), non-scalar keys, duplicate keys, more than one
 * document, nesting deeper than AZ_YAML_MAX_DEPTH, more than AZ_YAML_MAX_VALUES values and
 * inputs over AZ_YAML_MAX_BYTES are AZ_ERR_INVALID with the line and column. AZ_ERR_NOMEM when
 * out of memory. On failure *out is NULL. */
az_err az_yaml_parse(const char *text, size_t len, const char *name,
                     const ProtobufCMessageDescriptor *desc, json_t **out, char *msg);

/* Reads path ("-" = standard input; at most AZ_YAML_MAX_BYTES) and parses it: as JSON when the
 * name ends in ".json" or the text starts with '{' or '[' and is valid JSON, else as YAML with
 * az_yaml_parse. AZ_ERR_IO when the file cannot be read, else as az_yaml_parse. */
az_err az_yaml_read_file(const char *path, const ProtobufCMessageDescriptor *desc, json_t **out,
                         char *msg);

/* Reads path like az_yaml_read_file and decodes it as a message of type desc with pbjson,
 * allocating with alloc (NULL = malloc). On AZ_OK *out is the message; on failure NULL with
 * msg starting with the file's name ("wf.yaml: workflow.steps[0].bogus: unknown field"):
 * AZ_ERR_IO, AZ_ERR_INVALID or AZ_ERR_NOMEM. */
az_err az_yaml_read_message(const char *path, const ProtobufCMessageDescriptor *desc,
                            ProtobufCAllocator *alloc, ProtobufCMessage **out, char *msg);

/* Emits v as one block-style YAML document: strings with line breaks as literal blocks (|),
 * strings that would read back as another type ("true", "12", "") quoted, empty objects and
 * arrays as {} and [], no line folding. On AZ_OK *out is a NUL-terminated malloc'd string the
 * caller frees; AZ_ERR_NOMEM or AZ_ERR_INTERNAL (emitter failure) otherwise. */
az_err az_yaml_emit(const json_t *v, char **out, char *msg);

#endif
