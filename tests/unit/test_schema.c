/* CUnit suite for server/engine/schema: every supported keyword passing and failing with a
 * message naming the JSON pointer, malformed schemas, the recursion cap, and extracting JSON from
 * plain, fenced and prose-wrapped answers. */
#include <CUnit/Basic.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/schema.h"

static char msg[AZ_MSG_MAX];

static json_t *J(const char *text)
{
    json_error_t err;
    json_t *v = json_loads(text, JSON_DECODE_ANY, &err);
    if (!v) fprintf(stderr, "\n  bad test JSON %s: %s\n", text, err.text);
    return v;
}

/* Validates value against schema (both JSON text); returns the code, msg holds the message. */
static az_err V(const char *schema, const char *value)
{
    json_t *s = J(schema), *v = J(value);
    strcpy(msg, "(untouched)");
    az_err e = az_schema_validate(s, v, msg);
    json_decref(s);
    json_decref(v);
    return e;
}

/* Asserts that value fails with exactly the message want. */
#define FAILS(schema, value, want)                                                                 \
    do {                                                                                           \
        CU_ASSERT_EQUAL(V(schema, value), AZ_ERR_INVALID);                                         \
        if (strcmp(msg, want) != 0) fprintf(stderr, "\n  got \"%s\"\n want \"%s\"\n", msg, want); \
        CU_ASSERT_STRING_EQUAL(msg, want);                                                         \
    } while (0)

#define PASSES(schema, value)                                                          \
    do {                                                                               \
        az_err e_ = V(schema, value);                                                  \
        if (e_ != AZ_OK) fprintf(stderr, "\n  %s vs %s: %s\n", schema, value, msg);    \
        CU_ASSERT_EQUAL(e_, AZ_OK);                                                    \
    } while (0)

static void test_type(void)
{
    PASSES("{\"type\":\"string\"}", "\"x\"");
    FAILS("{\"type\":\"string\"}", "1", "/: expected string, got integer");
    PASSES("{\"type\":\"number\"}", "1.5");
    PASSES("{\"type\":\"number\"}", "2");
    FAILS("{\"type\":\"number\"}", "\"2\"", "/: expected number, got string");
    PASSES("{\"type\":\"integer\"}", "3");
    PASSES("{\"type\":\"integer\"}", "3.0"); /* integral reals are integers */
    FAILS("{\"type\":\"integer\"}", "3.5", "/: expected integer, got number");
    PASSES("{\"type\":\"boolean\"}", "false");
    FAILS("{\"type\":\"boolean\"}", "null", "/: expected boolean, got null");
    PASSES("{\"type\":\"null\"}", "null");
    PASSES("{\"type\":\"object\"}", "{}");
    FAILS("{\"type\":\"object\"}", "[]", "/: expected object, got array");
    PASSES("{\"type\":\"array\"}", "[]");
    PASSES("{\"type\":[\"string\",\"null\"]}", "null");
    FAILS("{\"type\":[\"string\",\"null\"]}", "7", "/: expected string or null, got integer");
    /* Nested location is a JSON pointer. */
    FAILS("{\"properties\":{\"items\":{\"items\":{\"properties\":{\"price\":{\"type\":\"number\"}}}}}}",
          "{\"items\":[{\"price\":1},{\"price\":2},{\"price\":\"3\"}]}",
          "/items/2/price: expected number, got string");
    /* Pointer escaping of '/' and '~' in keys (RFC 6901). */
    FAILS("{\"properties\":{\"a/b~c\":{\"type\":\"string\"}}}", "{\"a/b~c\":1}",
          "/a~1b~0c: expected string, got integer");
}

static void test_enum_const(void)
{
    PASSES("{\"enum\":[\"red\",\"green\",1]}", "\"green\"");
    PASSES("{\"enum\":[\"red\",\"green\",1]}", "1.0"); /* numbers compare by value */
    FAILS("{\"enum\":[\"red\",\"green\"]}", "\"blue\"", "/: must be one of [\"red\",\"green\"]");
    PASSES("{\"const\":{\"a\":[1,2]}}", "{\"a\":[1,2.0]}");
    FAILS("{\"properties\":{\"v\":{\"const\":3}}}", "{\"v\":4}", "/v: must equal 3");
}

static void test_object_keywords(void)
{
    const char *s = "{\"type\":\"object\",\"required\":[\"title\",\"year\"],"
                    "\"properties\":{\"title\":{\"type\":\"string\"},\"year\":{\"type\":\"integer\"}},"
                    "\"additionalProperties\":false}";
    PASSES(s, "{\"title\":\"x\",\"year\":2024}");
    FAILS(s, "{\"year\":2024}", "/: missing required property \"title\"");
    FAILS(s, "{\"title\":\"x\",\"year\":1,\"extra\":true}",
          "/: property \"extra\" is not allowed (additionalProperties is false)");
    /* additionalProperties as a schema applies to the others only. */
    const char *m = "{\"properties\":{\"n\":{\"type\":\"string\"}},\"additionalProperties\":{\"type\":\"integer\"}}";
    PASSES(m, "{\"n\":\"s\",\"a\":1,\"b\":2}");
    FAILS(m, "{\"n\":\"s\",\"a\":\"x\"}", "/a: expected integer, got string");
    /* required on a non-object value does not apply. */
    PASSES("{\"required\":[\"a\"]}", "5");
    /* Nested required names the object's location. */
    FAILS("{\"properties\":{\"author\":{\"required\":[\"name\"]}}}", "{\"author\":{}}",
          "/author: missing required property \"name\"");
}

static void test_array_keywords(void)
{
    const char *s = "{\"type\":\"array\",\"items\":{\"type\":\"string\"},\"minItems\":1,\"maxItems\":3}";
    PASSES(s, "[\"a\"]");
    PASSES(s, "[\"a\",\"b\",\"c\"]");
    FAILS(s, "[]", "/: has 0 items, fewer than minItems 1");
    FAILS(s, "[\"a\",\"b\",\"c\",\"d\"]", "/: has 4 items, more than maxItems 3");
    FAILS(s, "[\"a\",2]", "/1: expected string, got integer");
    const char *u = "{\"uniqueItems\":true}";
    PASSES(u, "[1,2,3]");
    FAILS(u, "[1,2,1.0]", "/: items 0 and 2 are equal (uniqueItems)");
    FAILS(u, "[{\"a\":1},{\"a\":1}]", "/: items 0 and 1 are equal (uniqueItems)");
    PASSES("{\"uniqueItems\":false}", "[1,1]");
    PASSES("{\"items\":false}", "[]");
    FAILS("{\"items\":false}", "[0]", "/0: no value is allowed here (schema false)");
}

static void test_string_keywords(void)
{
    const char *s = "{\"minLength\":2,\"maxLength\":3}";
    PASSES(s, "\"ab\"");
    FAILS(s, "\"a\"", "/: shorter than minLength 2 (1 characters)");
    FAILS(s, "\"abcd\"", "/: longer than maxLength 3 (4 characters)");
    /* Lengths are code points: three 2-byte characters and an emoji are 3 and 1. */
    PASSES("{\"maxLength\":3}", "\"\\u00e9\\u00e9\\u00e9\"");
    PASSES("{\"maxLength\":1,\"minLength\":1}", "\"\\ud83d\\ude00\"");
    FAILS("{\"maxLength\":2}", "\"\\u00e9\\u00e9\\u00e9\"", "/: longer than maxLength 2 (3 characters)");
    /* Patterns are unanchored searches (ECMA semantics), ERE syntax, with \\d \\w \\s. */
    const char *p = "{\"pattern\":\"^[A-Z]{3}-\\\\d+$\"}";
    PASSES(p, "\"ABC-123\"");
    FAILS(p, "\"AB-123\"", "/: does not match pattern \"^[A-Z]{3}-\\d+$\"");
    PASSES("{\"pattern\":\"b+\"}", "\"aabbcc\"");
    FAILS("{\"properties\":{\"e\":{\"pattern\":\"^\\\\S+@\\\\S+$\"}}}", "{\"e\":\"no at sign\"}",
          "/e: does not match pattern \"^\\S+@\\S+$\"");
    PASSES("{\"pattern\":\"^[\\\\w.]+$\"}", "\"a_b.c9\"");
    FAILS("{\"pattern\":\"^[\\\\w.]+$\"}", "\"a-b\"", "/: does not match pattern \"^[\\w.]+$\"");
    /* String keywords ignore other types. */
    PASSES("{\"minLength\":5,\"pattern\":\"x\"}", "12");
}

static void test_number_keywords(void)
{
    const char *s = "{\"minimum\":1,\"maximum\":10}";
    PASSES(s, "1");
    PASSES(s, "10");
    FAILS(s, "0", "/: 0 is less than minimum 1");
    FAILS(s, "10.5", "/: 10.5 is greater than maximum 10");
    const char *x = "{\"exclusiveMinimum\":0,\"exclusiveMaximum\":1}";
    PASSES(x, "0.5");
    FAILS(x, "0", "/: 0 must be greater than exclusiveMinimum 0");
    FAILS(x, "1", "/: 1 must be less than exclusiveMaximum 1");
    /* Draft-4 boolean form. */
    FAILS("{\"minimum\":5,\"exclusiveMinimum\":true}", "5", "/: 5 is less than exclusive minimum 5");
    PASSES("{\"multipleOf\":5}", "15");
    FAILS("{\"multipleOf\":5}", "16", "/: 16 is not a multiple of 5");
    PASSES("{\"multipleOf\":0.1}", "0.3"); /* 0.3 / 0.1 is 2.9999999999999996 in binary */
    FAILS("{\"multipleOf\":0.25}", "0.3", "/: 0.3 is not a multiple of 0.25");
    PASSES("{\"minimum\":3}", "\"strings are not numbers\"");
}

static void test_combiners(void)
{
    const char *any = "{\"anyOf\":[{\"type\":\"string\"},{\"type\":\"integer\",\"minimum\":0}]}";
    PASSES(any, "\"s\"");
    PASSES(any, "4");
    FAILS(any, "-1", "/: matches no schema in anyOf (first: /: expected string, got integer)");
    const char *one = "{\"oneOf\":[{\"type\":\"integer\"},{\"minimum\":2}]}";
    PASSES(one, "1");
    PASSES(one, "2.5");
    FAILS(one, "3", "/: matches 2 schemas in oneOf, expected exactly one");
    FAILS(one, "1.5", "/: matches no schema in oneOf (first: /: expected integer, got number)");
    const char *all = "{\"properties\":{\"n\":{\"allOf\":[{\"type\":\"integer\"},{\"maximum\":9}]}}}";
    PASSES(all, "{\"n\":9}");
    FAILS(all, "{\"n\":10}", "/n: 10 is greater than maximum 9");
    FAILS("{\"not\":{\"type\":\"null\"}}", "null", "/: must not match the schema in \"not\"");
    PASSES("{\"not\":{\"type\":\"null\"}}", "0");
}

static void test_ref(void)
{
    const char *s = "{\"$defs\":{\"pos\":{\"type\":\"integer\",\"minimum\":1}},"
                    "\"properties\":{\"a\":{\"$ref\":\"#/$defs/pos\"}}}";
    PASSES(s, "{\"a\":3}");
    FAILS(s, "{\"a\":0}", "/a: 0 is less than minimum 1");
    const char *d = "{\"definitions\":{\"s\":{\"type\":\"string\"}},\"items\":{\"$ref\":\"#/definitions/s\"}}";
    PASSES(d, "[\"x\"]");
    FAILS(d, "[\"x\",null]", "/1: expected string, got null");
    /* A recursive schema: a tree of nodes. */
    const char *tree = "{\"type\":\"object\",\"required\":[\"v\"],\"properties\":{\"v\":{\"type\":\"integer\"},"
                       "\"kids\":{\"type\":\"array\",\"items\":{\"$ref\":\"#\"}}}}";
    PASSES(tree, "{\"v\":1,\"kids\":[{\"v\":2,\"kids\":[{\"v\":3}]}]}");
    FAILS(tree, "{\"v\":1,\"kids\":[{\"v\":2,\"kids\":[{}]}]}",
          "/kids/0/kids/0: missing required property \"v\"");
}

/* Recursion through $ref stops at 64 levels with a clear message instead of exhausting the stack. */
static void test_depth_cap(void)
{
    const char *s = "{\"type\":\"array\",\"items\":{\"$ref\":\"#\"}}";
    /* 20 levels pass. */
    char v[4096] = "";
    for (int i = 0; i < 20; i++) strcat(v, "[");
    for (int i = 0; i < 20; i++) strcat(v, "]");
    PASSES(s, v);
    /* 200 levels hit the cap. */
    v[0] = '\0';
    for (int i = 0; i < 200; i++) strcat(v, "[");
    for (int i = 0; i < 200; i++) strcat(v, "]");
    CU_ASSERT_EQUAL(V(s, v), AZ_ERR_INVALID);
    CU_ASSERT_PTR_NOT_NULL(strstr(msg, "deeper than 64 levels"));
    CU_ASSERT_EQUAL(strncmp(msg, "/0/0/0/", 7), 0);
    /* A schema nested more than 64 levels deep is rejected as a schema. */
    char sch[8192] = "";
    for (int i = 0; i < 70; i++) strcat(sch, "{\"items\":");
    strcat(sch, "true");
    for (int i = 0; i < 70; i++) strcat(sch, "}");
    json_t *js = J(sch);
    CU_ASSERT_EQUAL(az_schema_check(js, msg), AZ_ERR_INVALID);
    CU_ASSERT_EQUAL(strncmp(msg, "schema: /items/items/", 21), 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(msg, "nested deeper than 64 levels"));
    json_decref(js);
}

static void expect_bad_schema(const char *schema, const char *want)
{
    json_t *s = J(schema);
    strcpy(msg, "(untouched)");
    CU_ASSERT_EQUAL(az_schema_check(s, msg), AZ_ERR_INVALID);
    if (strcmp(msg, want) != 0) fprintf(stderr, "\n  got \"%s\"\n want \"%s\"\n", msg, want);
    CU_ASSERT_STRING_EQUAL(msg, want);
    /* validate reports the same, whatever the value. */
    json_t *v = json_integer(1);
    char m2[AZ_MSG_MAX];
    CU_ASSERT_EQUAL(az_schema_validate(s, v, m2), AZ_ERR_INVALID);
    CU_ASSERT_STRING_EQUAL(m2, want);
    json_decref(v);
    json_decref(s);
}

static void test_malformed(void)
{
    json_t *arr = J("[]");
    CU_ASSERT_EQUAL(az_schema_check(arr, msg), AZ_ERR_INVALID);
    CU_ASSERT_STRING_EQUAL(msg, "schema: must be a JSON object, got array");
    json_decref(arr);
    CU_ASSERT_EQUAL(az_schema_check(NULL, msg), AZ_ERR_INVALID);
    expect_bad_schema("{\"type\":\"strng\"}", "schema: /type: unknown type \"strng\"");
    expect_bad_schema("{\"type\":5}", "schema: /type: must be a type name or a non-empty array of them");
    expect_bad_schema("{\"type\":[\"string\",1]}",
                      "schema: /type/1: must be one of object, array, string, number, integer, boolean, null");
}

static void test_malformed_more(void)
{
    /* The regcomp message is libc's; check the prefix. */
    json_t *s = J("{\"properties\":{\"a\":{\"pattern\":\"(\"}}}");
    CU_ASSERT_EQUAL(az_schema_check(s, msg), AZ_ERR_INVALID);
    CU_ASSERT_EQUAL(strncmp(msg, "schema: /properties/a/pattern: does not compile: ", 49), 0);
    json_decref(s);
    expect_bad_schema("{\"required\":\"a\"}", "schema: /required: must be an array of strings");
    expect_bad_schema("{\"minLength\":-1}", "schema: /minLength: must be a non-negative integer");
    expect_bad_schema("{\"maxItems\":1.5}", "schema: /maxItems: must be a non-negative integer");
    expect_bad_schema("{\"multipleOf\":0}", "schema: /multipleOf: must be a number greater than 0");
    expect_bad_schema("{\"minimum\":\"1\"}", "schema: /minimum: must be a number");
    expect_bad_schema("{\"enum\":{}}", "schema: /enum: must be an array");
    expect_bad_schema("{\"anyOf\":[]}", "schema: /anyOf: must be a non-empty array of schemas");
    expect_bad_schema("{\"allOf\":[{\"type\":\"x\"}]}", "schema: /allOf/0/type: unknown type \"x\"");
    expect_bad_schema("{\"items\":[{}]}", "schema: /items: must be a schema (an object or a boolean)");
    expect_bad_schema("{\"additionalProperties\":1}",
                      "schema: /additionalProperties: must be a boolean or a schema");
    expect_bad_schema("{\"properties\":{\"a\":{\"$ref\":\"#/$defs/missing\"}}}",
                      "schema: /properties/a/$ref: \"#/$defs/missing\" does not resolve (supported: "
                      "\"#\", \"#/$defs/<name>\", \"#/definitions/<name>\")");
    expect_bad_schema("{\"$ref\":\"http://example.com/s.json\"}",
                      "schema: /$ref: \"http://example.com/s.json\" does not resolve (supported: "
                      "\"#\", \"#/$defs/<name>\", \"#/definitions/<name>\")");
    expect_bad_schema("{\"properties\":{\"a\":7}}",
                      "schema: /properties/a: a schema must be an object or a boolean, got integer");
    /* Unknown keywords are ignored. */
    json_t *ok = J("{\"title\":\"T\",\"description\":\"d\",\"format\":\"email\",\"x-custom\":[1]}");
    CU_ASSERT_EQUAL(az_schema_check(ok, msg), AZ_OK);
    json_decref(ok);
}

/* ---- extract_json ---- */

static json_t *X(const char *text)
{
    strcpy(msg, "(untouched)");
    return az_schema_extract_json(text, msg);
}

static void test_extract_plain(void)
{
    json_t *v = X("  {\"a\": 1}\n");
    CU_ASSERT_PTR_NOT_NULL_FATAL(v);
    CU_ASSERT_EQUAL(json_integer_value(json_object_get(v, "a")), 1);
    json_decref(v);
    v = X("[1,2,3]");
    CU_ASSERT_PTR_NOT_NULL_FATAL(v);
    CU_ASSERT_EQUAL(json_array_size(v), 3u);
    json_decref(v);
    v = X("42");
    CU_ASSERT_PTR_NOT_NULL_FATAL(v);
    CU_ASSERT_TRUE(json_is_integer(v));
    json_decref(v);
}

static void test_extract_fenced(void)
{
    json_t *v = X("Here is the result:\n```json\n{\"title\": \"x\", \"n\": [1, 2]}\n```\nDone.");
    CU_ASSERT_PTR_NOT_NULL_FATAL(v);
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(v, "title")), "x");
    json_decref(v);
    /* Bare fence, no info string. */
    v = X("```\n[\"a\"]\n```");
    CU_ASSERT_PTR_NOT_NULL_FATAL(v);
    CU_ASSERT_STRING_EQUAL(json_string_value(json_array_get(v, 0)), "a");
    json_decref(v);
    /* A first fence with code that is not JSON is skipped for the next one. */
    v = X("```python\nprint(1)\n```\nand\n```json\n{\"ok\":true}\n```");
    CU_ASSERT_PTR_NOT_NULL_FATAL(v);
    CU_ASSERT_TRUE(json_is_true(json_object_get(v, "ok")));
    json_decref(v);
}

static void test_extract_prose(void)
{
    json_t *v = X("Sure! The answer is {\"city\": \"Paris\", \"tags\": [\"a\", \"}\"]} as requested.");
    CU_ASSERT_PTR_NOT_NULL_FATAL(v);
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(v, "city")), "Paris");
    json_decref(v);
    /* A stray closer in the trailing prose: the balanced span still parses. */
    v = X("Result: {\"a\": 1} (note: ignore the brace }).");
    CU_ASSERT_PTR_NOT_NULL_FATAL(v);
    CU_ASSERT_EQUAL(json_integer_value(json_object_get(v, "a")), 1);
    json_decref(v);
    v = X("List: [1, 2] end");
    CU_ASSERT_PTR_NOT_NULL_FATAL(v);
    CU_ASSERT_EQUAL(json_array_size(v), 2u);
    json_decref(v);
}

static void test_extract_failures(void)
{
    CU_ASSERT_PTR_NULL(X("I could not find anything."));
    CU_ASSERT_STRING_EQUAL(msg, "the answer is not JSON: no JSON object or array in it");
    CU_ASSERT_PTR_NULL(X("   "));
    CU_ASSERT_STRING_EQUAL(msg, "the answer is not JSON: it is empty");
    CU_ASSERT_PTR_NULL(X(NULL));
    CU_ASSERT_PTR_NULL(X("Almost: {\"a\": 1,}"));
    CU_ASSERT_EQUAL(strncmp(msg, "the answer is not JSON: ", 24), 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(msg, "line"));
    /* Duplicate keys are refused rather than silently resolved. */
    CU_ASSERT_PTR_NULL(X("{\"a\":1,\"a\":2}"));
}

/* The guardrail's path end to end: extract, then validate. */
static void test_extract_then_validate(void)
{
    json_t *schema = J("{\"type\":\"object\",\"required\":[\"score\"],\"properties\":{\"score\":"
                       "{\"type\":\"number\",\"minimum\":0,\"maximum\":1}}}");
    json_t *v = X("```json\n{\"score\": 1.5}\n```");
    CU_ASSERT_PTR_NOT_NULL_FATAL(v);
    CU_ASSERT_EQUAL(az_schema_validate(schema, v, msg), AZ_ERR_INVALID);
    CU_ASSERT_STRING_EQUAL(msg, "/score: 1.5 is greater than maximum 1");
    json_decref(v);
    json_decref(schema);
}

int main(void)
{
    if (CU_initialize_registry() != CUE_SUCCESS) return 1;
    CU_pSuite s = CU_add_suite("schema_validate", NULL, NULL);
    if (!s) return 1;
    CU_add_test(s, "type", test_type);
    CU_add_test(s, "enum and const", test_enum_const);
    CU_add_test(s, "object keywords", test_object_keywords);
    CU_add_test(s, "array keywords", test_array_keywords);
    CU_add_test(s, "string keywords", test_string_keywords);
    CU_add_test(s, "number keywords", test_number_keywords);
    CU_add_test(s, "anyOf oneOf allOf not", test_combiners);
    CU_add_test(s, "$ref", test_ref);
    CU_add_test(s, "depth cap", test_depth_cap);
    CU_add_test(s, "malformed schemas", test_malformed);
    CU_add_test(s, "malformed schemas, more", test_malformed_more);
    CU_pSuite x = CU_add_suite("schema_extract_json", NULL, NULL);
    if (!x) return 1;
    CU_add_test(x, "plain", test_extract_plain);
    CU_add_test(x, "fenced", test_extract_fenced);
    CU_add_test(x, "prose around", test_extract_prose);
    CU_add_test(x, "failures", test_extract_failures);
    CU_add_test(x, "extract then validate", test_extract_then_validate);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    unsigned failures = CU_get_number_of_failures() + CU_get_number_of_tests_failed() +
                        CU_get_number_of_suites_failed();
    CU_cleanup_registry();
    return failures ? 1 : 0;
}
