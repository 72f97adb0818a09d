/* The output guardrail's JSON Schema validator: the subset of JSON Schema (2020-12 / draft-07
 * keywords) that task output_schema uses, over jansson values. Pure and thread-safe. */
#ifndef AZ_SCHEMA_H
#define AZ_SCHEMA_H

#include <jansson.h>

#include "core/err.h"

/* Keywords: type (string or array; "integer" accepts integral reals), enum, const, properties,
 * required, additionalProperties (bool or schema), items (schema), minItems, maxItems,
 * uniqueItems, minLength, maxLength (in code points), pattern (POSIX ERE via regcomp),
 * minimum, maximum, exclusiveMinimum, exclusiveMaximum, multipleOf, anyOf, oneOf, allOf, not,
 * $ref to "#/$defs/<name>" or "#/definitions/<name>". Unknown keywords (title, description,
 * format, ...) are ignored, as the specification allows.
 * Returns AZ_OK when value matches schema. AZ_ERR_INVALID when it does not: msg (AZ_MSG_MAX)
 * names the first failing location as a JSON pointer and the rule, e.g.
 * "/items/2/price: expected number, got string" or "/: missing required property \"title\"".
 * AZ_ERR_INVALID with "schema: ..." when the schema itself is malformed (bad pattern, unknown
 * $ref). Recursion is capped at 64 levels (then AZ_ERR_INVALID). */
az_err az_schema_validate(const json_t *schema, const json_t *value, char *msg);

/* Checks that schema is usable by az_schema_validate (an object; every keyword it knows has the
 * right type; patterns compile; $refs resolve). AZ_ERR_INVALID naming the keyword otherwise. */
az_err az_schema_check(const json_t *schema, char *msg);

/* Extracts the JSON value from a model's final answer: the whole text when it parses, else the
 * first ```json ... ``` (or ``` ... ```) fenced block, else the span from the first '{' or '['
 * to its matching last '}' or ']'. The caller owns the result (json_decref). NULL when nothing
 * parses; msg then says why ("the answer is not JSON: ..."). */
json_t *az_schema_extract_json(const char *text, char *msg);

#endif
