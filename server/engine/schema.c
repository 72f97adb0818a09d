/* The output guardrail's JSON Schema validator (the keyword subset in schema.h) and the
 * extraction of a JSON value from a model's free-text answer. */
#include "engine/schema.h"

#include <math.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_DEPTH 64
#define PTR_MAX 256

/* A JSON pointer built while descending; truncated (with "...") rather than overflowing. */
typedef struct ptr {
    char s[PTR_MAX];
    size_t len;
} ptr;

/* Appends "/" + token (escaped per RFC 6901) and returns the previous length to restore. */
static size_t ptr_push(ptr *p, const char *token)
{
    size_t old = p->len;
    char buf[PTR_MAX];
    size_t n = 0;
    buf[n++] = '/';
    for (const char *c = token; *c && n < sizeof buf - 3; c++) {
        if (*c == '~' || *c == '/') {
            buf[n++] = '~';
            buf[n++] = *c == '~' ? '0' : '1';
        } else {
            buf[n++] = *c;
        }
    }
    buf[n] = '\0';
    if (p->len + n + 4 >= sizeof p->s) {
        /* Too deep to name exactly: mark the cut once. */
        if (p->len + 4 < sizeof p->s && (p->len < 3 || strcmp(p->s + p->len - 3, "...") != 0)) {
            memcpy(p->s + p->len, "...", 4);
            p->len += 3;
        }
        return old;
    }
    memcpy(p->s + p->len, buf, n + 1);
    p->len += n;
    return old;
}

static size_t ptr_push_index(ptr *p, size_t i)
{
    char num[32];
    snprintf(num, sizeof num, "%zu", i);
    return ptr_push(p, num);
}

static void ptr_pop(ptr *p, size_t old)
{
    p->len = old;
    p->s[old] = '\0';
}

/* The root is "" as a JSON pointer; messages say "/" so the location is never blank. */
static const char *ptr_str(const ptr *p)
{
    return p->len ? p->s : "/";
}

static const char *type_name(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT: return "object";
    case JSON_ARRAY: return "array";
    case JSON_STRING: return "string";
    case JSON_INTEGER: return "integer";
    case JSON_REAL: return "number";
    case JSON_TRUE:
    case JSON_FALSE: return "boolean";
    case JSON_NULL: return "null";
    }
    return "unknown";
}

/* Whether v is of the JSON Schema type name; "integer" accepts integral reals (1.0). */
static int type_matches(const char *t, const json_t *v)
{
    if (strcmp(t, "object") == 0) return json_is_object(v);
    if (strcmp(t, "array") == 0) return json_is_array(v);
    if (strcmp(t, "string") == 0) return json_is_string(v);
    if (strcmp(t, "number") == 0) return json_is_number(v);
    if (strcmp(t, "boolean") == 0) return json_is_boolean(v);
    if (strcmp(t, "null") == 0) return json_is_null(v);
    if (strcmp(t, "integer") == 0) {
        if (json_is_integer(v)) return 1;
        if (!json_is_real(v)) return 0;
        double d = json_real_value(v);
        return isfinite(d) && d == floor(d);
    }
    return 0;
}

static int known_type(const char *t)
{
    static const char *const TYPES[] = {"object", "array",   "string", "number",
                                        "integer", "boolean", "null"};
    for (size_t i = 0; i < sizeof TYPES / sizeof TYPES[0]; i++)
        if (strcmp(t, TYPES[i]) == 0) return 1;
    return 0;
}

/* JSON Schema equality: numbers compare by value (1 == 1.0), containers recursively. */
static int values_equal(const json_t *a, const json_t *b)
{
    if (json_is_number(a) && json_is_number(b)) {
        if (json_is_integer(a) && json_is_integer(b))
            return json_integer_value(a) == json_integer_value(b);
        return json_number_value(a) == json_number_value(b);
    }
    if (json_typeof(a) != json_typeof(b)) return 0;
    if (json_is_array(a)) {
        if (json_array_size(a) != json_array_size(b)) return 0;
        for (size_t i = 0; i < json_array_size(a); i++)
            if (!values_equal(json_array_get(a, i), json_array_get(b, i))) return 0;
        return 1;
    }
    if (json_is_object(a)) {
        if (json_object_size(a) != json_object_size(b)) return 0;
        const char *k;
        json_t *va;
        json_object_foreach((json_t *)a, k, va) {
            json_t *vb = json_object_get(b, k);
            if (!vb || !values_equal(va, vb)) return 0;
        }
        return 1;
    }
    return json_equal((json_t *)a, (json_t *)b);
}

/* Length in code points: jansson strings are valid UTF-8, so count non-continuation bytes. */
static size_t code_points(const json_t *s)
{
    const unsigned char *p = (const unsigned char *)json_string_value(s);
    size_t n = json_string_length(s), cp = 0;
    for (size_t i = 0; i < n; i++)
        if ((p[i] & 0xC0) != 0x80) cp++;
    return cp;
}

/* JSON Schema patterns are ECMA-262; regcomp is POSIX ERE. Translate the common shorthand
 * classes (\d \w \s and their negations) so everyday schemas work; everything else is ERE. */
static int compile_pattern(regex_t *re, const char *pattern, char *err, size_t errn)
{
    size_t n = strlen(pattern);
    size_t cap = n * 16 + 1;
    char *out = malloc(cap);
    if (!out) {
        snprintf(err, errn, "out of memory");
        return -1;
    }
    size_t o = 0;
    int in_bracket = 0;
    for (size_t i = 0; i < n; i++) {
        char c = pattern[i];
        if (c == '\\' && i + 1 < n) {
            char e = pattern[i + 1];
            const char *rep = NULL;
            if (in_bracket) {
                switch (e) {
                case 'd': rep = "0-9"; break;
                case 'w': rep = "A-Za-z0-9_"; break;
                case 's': rep = "[:space:]"; break;
                default: break;
                }
            } else {
                switch (e) {
                case 'd': rep = "[0-9]"; break;
                case 'D': rep = "[^0-9]"; break;
                case 'w': rep = "[A-Za-z0-9_]"; break;
                case 'W': rep = "[^A-Za-z0-9_]"; break;
                case 's': rep = "[[:space:]]"; break;
                case 'S': rep = "[^[:space:]]"; break;
                default: break;
                }
            }
            if (rep) {
                size_t rl = strlen(rep);
                memcpy(out + o, rep, rl);
                o += rl;
                i++;
                continue;
            }
            out[o++] = c;
            out[o++] = e;
            i++;
            continue;
        }
        if (!in_bracket && c == '[') {
            in_bracket = 1;
            out[o++] = c;
            /* A leading '^' or ']' belongs to the bracket expression, not its end. */
            if (i + 1 < n && pattern[i + 1] == '^') out[o++] = pattern[++i];
            if (i + 1 < n && pattern[i + 1] == ']') out[o++] = pattern[++i];
            continue;
        }
        if (in_bracket && c == '[' && i + 1 < n && pattern[i + 1] == ':') {
            /* A POSIX class like [:alpha:] inside a bracket: copy it whole. */
            const char *end = strstr(pattern + i + 2, ":]");
            if (end) {
                size_t len = (size_t)(end + 2 - (pattern + i));
                memcpy(out + o, pattern + i, len);
                o += len;
                i += len - 1;
                continue;
            }
        }
        if (in_bracket && c == ']') in_bracket = 0;
        out[o++] = c;
    }
    out[o] = '\0';
    int rc = regcomp(re, out, REG_EXTENDED | REG_NOSUB);
    free(out);
    if (rc != 0) {
        regerror(rc, re, err, errn);
        return -1;
    }
    return 0;
}

/* Resolves "#", "#/$defs/<name>" or "#/definitions/<name>" against root; NULL when it does not. */
static const json_t *resolve_ref(const json_t *root, const char *ref)
{
    if (strcmp(ref, "#") == 0) return root;
    const char *name = NULL;
    const json_t *defs = NULL;
    if (strncmp(ref, "#/$defs/", 8) == 0) {
        name = ref + 8;
        defs = json_object_get(root, "$defs");
    } else if (strncmp(ref, "#/definitions/", 14) == 0) {
        name = ref + 14;
        defs = json_object_get(root, "definitions");
    }
    if (!name || !*name || !json_is_object(defs)) return NULL;
    /* Unescape ~1 and ~0 (RFC 6901); a further '/' would need a deeper pointer: unsupported. */
    char key[PTR_MAX];
    size_t k = 0;
    for (const char *c = name; *c; c++) {
        if (k + 1 >= sizeof key) return NULL;
        if (*c == '/') return NULL;
        if (*c == '~') {
            if (c[1] == '0') key[k++] = '~';
            else if (c[1] == '1') key[k++] = '/';
            else return NULL;
            c++;
        } else {
            key[k++] = *c;
        }
    }
    key[k] = '\0';
    const json_t *s = json_object_get(defs, key);
    return (json_is_object(s) || json_is_boolean(s)) ? s : NULL;
}

/* ---- checking a schema ---- */

static int is_schema(const json_t *s)
{
    return json_is_object(s) || json_is_boolean(s);
}

static int nonneg_int(const json_t *v)
{
    if (json_is_integer(v)) return json_integer_value(v) >= 0;
    if (json_is_real(v)) {
        double d = json_real_value(v);
        return d >= 0 && d == floor(d) && d < 9.0e18;
    }
    return 0;
}

static az_err check_node(const json_t *root, const json_t *s, ptr *p, int depth, char *msg);

static az_err check_schema_array(const json_t *root, const json_t *arr, const char *kw, ptr *p,
                                 int depth, char *msg)
{
    if (!json_is_array(arr) || json_array_size(arr) == 0)
        return az_fail(msg, AZ_ERR_INVALID, "schema: %s/%s: must be a non-empty array of schemas",
                       p->s, kw);
    size_t old = ptr_push(p, kw);
    for (size_t i = 0; i < json_array_size(arr); i++) {
        size_t o2 = ptr_push_index(p, i);
        az_err e = check_node(root, json_array_get(arr, i), p, depth + 1, msg);
        ptr_pop(p, o2);
        if (e) return e;
    }
    ptr_pop(p, old);
    return AZ_OK;
}

static az_err check_sub(const json_t *root, const json_t *sub, const char *kw, ptr *p, int depth,
                        char *msg)
{
    size_t old = ptr_push(p, kw);
    az_err e = check_node(root, sub, p, depth + 1, msg);
    ptr_pop(p, old);
    return e;
}

static az_err check_schema_map(const json_t *root, const json_t *map, const char *kw, ptr *p,
                               int depth, char *msg)
{
    if (!json_is_object(map))
        return az_fail(msg, AZ_ERR_INVALID, "schema: %s/%s: must be an object of schemas", p->s,
                       kw);
    size_t old = ptr_push(p, kw);
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)map, k, v) {
        size_t o2 = ptr_push(p, k);
        az_err e = check_node(root, v, p, depth + 1, msg);
        ptr_pop(p, o2);
        if (e) return e;
    }
    ptr_pop(p, old);
    return AZ_OK;
}

/* Checks one schema node; p is the schema location (for messages). */
static az_err check_node(const json_t *root, const json_t *s, ptr *p, int depth, char *msg)
{
    if (depth > MAX_DEPTH)
        return az_fail(msg, AZ_ERR_INVALID, "schema: %s: nested deeper than %d levels", ptr_str(p),
                       MAX_DEPTH);
    if (json_is_boolean(s)) return AZ_OK;
    if (!json_is_object(s))
        return az_fail(msg, AZ_ERR_INVALID, "schema: %s: a schema must be an object or a boolean, got %s",
                       ptr_str(p), type_name(s));
    json_t *v;
    az_err e;

    if ((v = json_object_get(s, "type"))) {
        if (json_is_string(v)) {
            if (!known_type(json_string_value(v)))
                return az_fail(msg, AZ_ERR_INVALID, "schema: %s/type: unknown type \"%s\"", p->s,
                               json_string_value(v));
        } else if (json_is_array(v) && json_array_size(v) > 0) {
            for (size_t i = 0; i < json_array_size(v); i++) {
                json_t *t = json_array_get(v, i);
                if (!json_is_string(t) || !known_type(json_string_value(t)))
                    return az_fail(msg, AZ_ERR_INVALID,
                                   "schema: %s/type/%zu: must be one of object, array, string, "
                                   "number, integer, boolean, null",
                                   p->s, i);
            }
        } else {
            return az_fail(msg, AZ_ERR_INVALID,
                           "schema: %s/type: must be a type name or a non-empty array of them", p->s);
        }
    }
    if ((v = json_object_get(s, "enum")) && !json_is_array(v))
        return az_fail(msg, AZ_ERR_INVALID, "schema: %s/enum: must be an array", p->s);
    if ((v = json_object_get(s, "properties")) && (e = check_schema_map(root, v, "properties", p, depth, msg)))
        return e;
    if ((v = json_object_get(s, "$defs")) && (e = check_schema_map(root, v, "$defs", p, depth, msg)))
        return e;
    if ((v = json_object_get(s, "definitions")) &&
        (e = check_schema_map(root, v, "definitions", p, depth, msg)))
        return e;
    if ((v = json_object_get(s, "required"))) {
        int ok = json_is_array(v);
        for (size_t i = 0; ok && i < json_array_size(v); i++) ok = json_is_string(json_array_get(v, i));
        if (!ok)
            return az_fail(msg, AZ_ERR_INVALID, "schema: %s/required: must be an array of strings",
                           p->s);
    }
    if ((v = json_object_get(s, "additionalProperties"))) {
        if (!is_schema(v))
            return az_fail(msg, AZ_ERR_INVALID,
                           "schema: %s/additionalProperties: must be a boolean or a schema", p->s);
        if ((e = check_sub(root, v, "additionalProperties", p, depth, msg))) return e;
    }
    if ((v = json_object_get(s, "items"))) {
        if (!is_schema(v))
            return az_fail(msg, AZ_ERR_INVALID, "schema: %s/items: must be a schema (an object or a boolean)",
                           p->s);
        if ((e = check_sub(root, v, "items", p, depth, msg))) return e;
    }
    static const char *const COUNTS[] = {"minItems", "maxItems", "minLength", "maxLength"};
    for (size_t i = 0; i < sizeof COUNTS / sizeof COUNTS[0]; i++)
        if ((v = json_object_get(s, COUNTS[i])) && !nonneg_int(v))
            return az_fail(msg, AZ_ERR_INVALID, "schema: %s/%s: must be a non-negative integer",
                           p->s, COUNTS[i]);
    if ((v = json_object_get(s, "uniqueItems")) && !json_is_boolean(v))
        return az_fail(msg, AZ_ERR_INVALID, "schema: %s/uniqueItems: must be a boolean", p->s);
    static const char *const BOUNDS[] = {"minimum", "maximum"};
    for (size_t i = 0; i < 2; i++)
        if ((v = json_object_get(s, BOUNDS[i])) && !json_is_number(v))
            return az_fail(msg, AZ_ERR_INVALID, "schema: %s/%s: must be a number", p->s, BOUNDS[i]);
    /* exclusiveMinimum/Maximum: a number (draft 6+) or a boolean modifying minimum (draft 4). */
    static const char *const EXCL[] = {"exclusiveMinimum", "exclusiveMaximum"};
    for (size_t i = 0; i < 2; i++)
        if ((v = json_object_get(s, EXCL[i])) && !json_is_number(v) && !json_is_boolean(v))
            return az_fail(msg, AZ_ERR_INVALID, "schema: %s/%s: must be a number", p->s, EXCL[i]);
    if ((v = json_object_get(s, "multipleOf")) && (!json_is_number(v) || json_number_value(v) <= 0))
        return az_fail(msg, AZ_ERR_INVALID, "schema: %s/multipleOf: must be a number greater than 0",
                       p->s);
    if ((v = json_object_get(s, "pattern"))) {
        if (!json_is_string(v))
            return az_fail(msg, AZ_ERR_INVALID, "schema: %s/pattern: must be a string", p->s);
        regex_t re;
        char err[128];
        if (compile_pattern(&re, json_string_value(v), err, sizeof err) != 0)
            return az_fail(msg, AZ_ERR_INVALID, "schema: %s/pattern: does not compile: %s", p->s,
                           err);
        regfree(&re);
    }
    static const char *const COMBINERS[] = {"anyOf", "oneOf", "allOf"};
    for (size_t i = 0; i < 3; i++)
        if ((v = json_object_get(s, COMBINERS[i])) &&
            (e = check_schema_array(root, v, COMBINERS[i], p, depth, msg)))
            return e;
    if ((v = json_object_get(s, "not"))) {
        if (!is_schema(v))
            return az_fail(msg, AZ_ERR_INVALID, "schema: %s/not: must be a schema", p->s);
        if ((e = check_sub(root, v, "not", p, depth, msg))) return e;
    }
    if ((v = json_object_get(s, "$ref"))) {
        if (!json_is_string(v))
            return az_fail(msg, AZ_ERR_INVALID, "schema: %s/$ref: must be a string", p->s);
        if (!resolve_ref(root, json_string_value(v)))
            return az_fail(msg, AZ_ERR_INVALID,
                           "schema: %s/$ref: \"%s\" does not resolve (supported: \"#\", "
                           "\"#/$defs/<name>\", \"#/definitions/<name>\")",
                           p->s, json_string_value(v));
    }
    return AZ_OK;
}

az_err az_schema_check(const json_t *schema, char *msg)
{
    if (!json_is_object(schema))
        return az_fail(msg, AZ_ERR_INVALID, "schema: must be a JSON object, got %s",
                       schema ? type_name(schema) : "nothing");
    ptr p = {.len = 0};
    p.s[0] = '\0';
    return check_node(schema, schema, &p, 0, msg);
}

/* ---- validating a value ---- */

typedef struct vctx {
    const json_t *root;
    ptr at; /* where in the value we are */
} vctx;

static az_err validate_node(vctx *c, const json_t *s, const json_t *v, int depth, char *msg);

static az_err check_type(vctx *c, const json_t *t, const json_t *v, char *msg)
{
    if (json_is_string(t)) {
        if (type_matches(json_string_value(t), v)) return AZ_OK;
        return az_fail(msg, AZ_ERR_INVALID, "%s: expected %s, got %s", ptr_str(&c->at),
                       json_string_value(t), type_name(v));
    }
    char names[160] = "";
    size_t n = 0;
    for (size_t i = 0; i < json_array_size(t); i++) {
        const char *name = json_string_value(json_array_get(t, i));
        if (type_matches(name, v)) return AZ_OK;
        int w = snprintf(names + n, sizeof names - n, "%s%s", i ? " or " : "", name);
        if (w > 0 && (size_t)w < sizeof names - n) n += (size_t)w;
    }
    return az_fail(msg, AZ_ERR_INVALID, "%s: expected %s, got %s", ptr_str(&c->at), names,
                   type_name(v));
}

static az_err check_number(vctx *c, const json_t *s, const json_t *v, char *msg)
{
    double d = json_number_value(v);
    const json_t *k;
    const json_t *emin = json_object_get(s, "exclusiveMinimum");
    const json_t *emax = json_object_get(s, "exclusiveMaximum");
    if ((k = json_object_get(s, "minimum"))) {
        double m = json_number_value(k);
        if (json_is_true(emin) ? !(d > m) : d < m)
            return az_fail(msg, AZ_ERR_INVALID, "%s: %g is less than %sminimum %g", ptr_str(&c->at),
                           d, json_is_true(emin) ? "exclusive " : "", m);
    }
    if ((k = json_object_get(s, "maximum"))) {
        double m = json_number_value(k);
        if (json_is_true(emax) ? !(d < m) : d > m)
            return az_fail(msg, AZ_ERR_INVALID, "%s: %g is greater than %smaximum %g",
                           ptr_str(&c->at), d, json_is_true(emax) ? "exclusive " : "", m);
    }
    if (json_is_number(emin) && !(d > json_number_value(emin)))
        return az_fail(msg, AZ_ERR_INVALID, "%s: %g must be greater than exclusiveMinimum %g",
                       ptr_str(&c->at), d, json_number_value(emin));
    if (json_is_number(emax) && !(d < json_number_value(emax)))
        return az_fail(msg, AZ_ERR_INVALID, "%s: %g must be less than exclusiveMaximum %g",
                       ptr_str(&c->at), d, json_number_value(emax));
    if ((k = json_object_get(s, "multipleOf"))) {
        int ok;
        if (json_is_integer(k) && json_is_integer(v)) {
            ok = json_integer_value(v) % json_integer_value(k) == 0;
        } else {
            /* Floating division is inexact (0.3 / 0.1 = 2.9999...): allow a relative epsilon. */
            double q = d / json_number_value(k);
            ok = isfinite(q) && fabs(q - round(q)) <= 1e-9 * fmax(1.0, fabs(q));
        }
        if (!ok)
            return az_fail(msg, AZ_ERR_INVALID, "%s: %g is not a multiple of %g", ptr_str(&c->at),
                           d, json_number_value(k));
    }
    return AZ_OK;
}

static az_err check_string(vctx *c, const json_t *s, const json_t *v, char *msg)
{
    const json_t *k;
    size_t len = code_points(v);
    if ((k = json_object_get(s, "minLength")) && len < (size_t)json_number_value(k))
        return az_fail(msg, AZ_ERR_INVALID, "%s: shorter than minLength %lld (%zu characters)",
                       ptr_str(&c->at), (long long)json_number_value(k), len);
    if ((k = json_object_get(s, "maxLength")) && len > (size_t)json_number_value(k))
        return az_fail(msg, AZ_ERR_INVALID, "%s: longer than maxLength %lld (%zu characters)",
                       ptr_str(&c->at), (long long)json_number_value(k), len);
    if ((k = json_object_get(s, "pattern"))) {
        regex_t re;
        char err[128];
        if (compile_pattern(&re, json_string_value(k), err, sizeof err) != 0)
            return az_fail(msg, AZ_ERR_INVALID, "schema: pattern does not compile: %s", err);
        int rc = regexec(&re, json_string_value(v), 0, NULL, 0);
        regfree(&re);
        if (rc != 0)
            return az_fail(msg, AZ_ERR_INVALID, "%s: does not match pattern \"%s\"",
                           ptr_str(&c->at), json_string_value(k));
    }
    return AZ_OK;
}

static az_err check_array(vctx *c, const json_t *s, const json_t *v, int depth, char *msg)
{
    const json_t *k;
    size_t n = json_array_size(v);
    if ((k = json_object_get(s, "minItems")) && n < (size_t)json_number_value(k))
        return az_fail(msg, AZ_ERR_INVALID, "%s: has %zu items, fewer than minItems %lld",
                       ptr_str(&c->at), n, (long long)json_number_value(k));
    if ((k = json_object_get(s, "maxItems")) && n > (size_t)json_number_value(k))
        return az_fail(msg, AZ_ERR_INVALID, "%s: has %zu items, more than maxItems %lld",
                       ptr_str(&c->at), n, (long long)json_number_value(k));
    if (json_is_true(json_object_get(s, "uniqueItems"))) {
        /* Quadratic, but answers are small and the pair named is what the model needs. */
        for (size_t i = 0; i < n; i++)
            for (size_t j = i + 1; j < n; j++)
                if (values_equal(json_array_get(v, i), json_array_get(v, j)))
                    return az_fail(msg, AZ_ERR_INVALID,
                                   "%s: items %zu and %zu are equal (uniqueItems)", ptr_str(&c->at),
                                   i, j);
    }
    if ((k = json_object_get(s, "items"))) {
        for (size_t i = 0; i < n; i++) {
            size_t old = ptr_push_index(&c->at, i);
            az_err e = validate_node(c, k, json_array_get(v, i), depth + 1, msg);
            ptr_pop(&c->at, old);
            if (e) return e;
        }
    }
    return AZ_OK;
}

static az_err check_object(vctx *c, const json_t *s, const json_t *v, int depth, char *msg)
{
    const json_t *req = json_object_get(s, "required");
    for (size_t i = 0; i < json_array_size(req); i++) {
        const char *name = json_string_value(json_array_get(req, i));
        if (name && !json_object_get(v, name))
            return az_fail(msg, AZ_ERR_INVALID, "%s: missing required property \"%s\"",
                           ptr_str(&c->at), name);
    }
    const json_t *props = json_object_get(s, "properties");
    const json_t *addl = json_object_get(s, "additionalProperties");
    const char *key;
    json_t *val;
    json_object_foreach((json_t *)v, key, val) {
        const json_t *sub = json_object_get(props, key);
        if (!sub) {
            if (!addl) continue;
            if (json_is_false(addl))
                return az_fail(msg, AZ_ERR_INVALID,
                               "%s: property \"%s\" is not allowed (additionalProperties is false)",
                               ptr_str(&c->at), key);
            sub = addl;
        }
        size_t old = ptr_push(&c->at, key);
        az_err e = validate_node(c, sub, val, depth + 1, msg);
        ptr_pop(&c->at, old);
        if (e) return e;
    }
    return AZ_OK;
}

static az_err check_combiners(vctx *c, const json_t *s, const json_t *v, int depth, char *msg)
{
    const json_t *k;
    char sub[AZ_MSG_MAX];
    if ((k = json_object_get(s, "allOf"))) {
        for (size_t i = 0; i < json_array_size(k); i++) {
            az_err e = validate_node(c, json_array_get(k, i), v, depth + 1, msg);
            if (e) return e;
        }
    }
    if ((k = json_object_get(s, "anyOf"))) {
        char first[AZ_MSG_MAX] = "";
        int ok = 0;
        for (size_t i = 0; i < json_array_size(k) && !ok; i++) {
            az_err e = validate_node(c, json_array_get(k, i), v, depth + 1, sub);
            if (e == AZ_OK) ok = 1;
            else if (strncmp(sub, "schema:", 7) == 0) return az_fail(msg, e, "%s", sub);
            else if (!first[0]) snprintf(first, sizeof first, "%s", sub);
        }
        if (!ok)
            return az_fail(msg, AZ_ERR_INVALID, "%s: matches no schema in anyOf (first: %s)",
                           ptr_str(&c->at), first);
    }
    if ((k = json_object_get(s, "oneOf"))) {
        size_t matched = 0;
        char first[AZ_MSG_MAX] = "";
        for (size_t i = 0; i < json_array_size(k); i++) {
            az_err e = validate_node(c, json_array_get(k, i), v, depth + 1, sub);
            if (e == AZ_OK) matched++;
            else if (strncmp(sub, "schema:", 7) == 0) return az_fail(msg, e, "%s", sub);
            else if (!first[0]) snprintf(first, sizeof first, "%s", sub);
        }
        if (matched == 0)
            return az_fail(msg, AZ_ERR_INVALID, "%s: matches no schema in oneOf (first: %s)",
                           ptr_str(&c->at), first);
        if (matched > 1)
            return az_fail(msg, AZ_ERR_INVALID,
                           "%s: matches %zu schemas in oneOf, expected exactly one",
                           ptr_str(&c->at), matched);
    }
    if ((k = json_object_get(s, "not"))) {
        az_err e = validate_node(c, k, v, depth + 1, sub);
        if (e == AZ_OK)
            return az_fail(msg, AZ_ERR_INVALID, "%s: must not match the schema in \"not\"",
                           ptr_str(&c->at));
        if (strncmp(sub, "schema:", 7) == 0) return az_fail(msg, e, "%s", sub);
    }
    return AZ_OK;
}

static az_err validate_node(vctx *c, const json_t *s, const json_t *v, int depth, char *msg)
{
    if (depth > MAX_DEPTH)
        return az_fail(msg, AZ_ERR_INVALID, "%s: schema recursion deeper than %d levels",
                       ptr_str(&c->at), MAX_DEPTH);
    if (json_is_true(s)) return AZ_OK;
    if (json_is_false(s))
        return az_fail(msg, AZ_ERR_INVALID, "%s: no value is allowed here (schema false)",
                       ptr_str(&c->at));
    az_err e;
    const json_t *k;
    if ((k = json_object_get(s, "$ref"))) {
        const json_t *target = resolve_ref(c->root, json_string_value(k));
        if (!target)
            return az_fail(msg, AZ_ERR_INVALID, "schema: $ref \"%s\" does not resolve",
                           json_string_value(k));
        if ((e = validate_node(c, target, v, depth + 1, msg))) return e;
    }
    if ((k = json_object_get(s, "type")) && (e = check_type(c, k, v, msg))) return e;
    if ((k = json_object_get(s, "enum"))) {
        int found = 0;
        for (size_t i = 0; i < json_array_size(k) && !found; i++)
            found = values_equal(json_array_get(k, i), v);
        if (!found) {
            char *allowed = json_dumps(k, JSON_COMPACT | JSON_ENCODE_ANY);
            az_fail(msg, AZ_ERR_INVALID, "%s: must be one of %.200s", ptr_str(&c->at),
                    allowed ? allowed : "the enum");
            free(allowed);
            return AZ_ERR_INVALID;
        }
    }
    if ((k = json_object_get(s, "const")) && !values_equal(k, v)) {
        char *want = json_dumps(k, JSON_COMPACT | JSON_ENCODE_ANY);
        az_fail(msg, AZ_ERR_INVALID, "%s: must equal %.200s", ptr_str(&c->at),
                want ? want : "the const value");
        free(want);
        return AZ_ERR_INVALID;
    }
    if (json_is_number(v) && (e = check_number(c, s, v, msg))) return e;
    if (json_is_string(v) && (e = check_string(c, s, v, msg))) return e;
    if (json_is_array(v) && (e = check_array(c, s, v, depth, msg))) return e;
    if (json_is_object(v) && (e = check_object(c, s, v, depth, msg))) return e;
    return check_combiners(c, s, v, depth, msg);
}

az_err az_schema_validate(const json_t *schema, const json_t *value, char *msg)
{
    /* Checking first means a malformed schema is always reported as such ("schema: ..."),
     * never as a confusing verdict about the value. Schemas are small; the cost is noise. */
    az_err e = az_schema_check(schema, msg);
    if (e) return e;
    if (!value) return az_fail(msg, AZ_ERR_INVALID, "/: no value");
    vctx c = {.root = schema};
    c.at.len = 0;
    c.at.s[0] = '\0';
    return validate_node(&c, schema, value, 0, msg);
}

/* ---- extracting JSON from an answer ---- */

static json_t *parse_span(const char *s, size_t len, json_error_t *err)
{
    return json_loadb(s, len, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES, err);
}

static int only_space(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (s[i] != ' ' && s[i] != '\t' && s[i] != '\n' && s[i] != '\r') return 0;
    return 1;
}

/* Tries each ``` fenced block in order; the opening fence's info string ("json") is skipped. */
static json_t *from_fences(const char *text, json_error_t *err, int *saw_fence)
{
    const char *p = text;
    for (;;) {
        const char *open = strstr(p, "```");
        if (!open) return NULL;
        const char *body = open + 3;
        const char *nl = strchr(body, '\n');
        const char *close = strstr(body, "```");
        if (!close) return NULL;
        /* The info string runs to the end of the fence line, if that line ends before the close. */
        if (nl && nl < close) body = nl + 1;
        *saw_fence = 1;
        json_t *v = parse_span(body, (size_t)(close - body), err);
        if (v) return v;
        p = close + 3;
    }
}

/* The index of the bracket matching text[start] ('{' or '['), skipping strings; -1 if none. */
static long balanced_end(const char *text, size_t start)
{
    int depth = 0, in_str = 0;
    for (size_t i = start; text[i]; i++) {
        char ch = text[i];
        if (in_str) {
            if (ch == '\\' && text[i + 1]) i++;
            else if (ch == '"') in_str = 0;
            continue;
        }
        if (ch == '"') in_str = 1;
        else if (ch == '{' || ch == '[') depth++;
        else if (ch == '}' || ch == ']') {
            if (--depth == 0) return (long)i;
        }
    }
    return -1;
}

json_t *az_schema_extract_json(const char *text, char *msg)
{
    if (!text || only_space(text, strlen(text))) {
        az_fail(msg, AZ_ERR_INVALID, "the answer is not JSON: it is empty");
        return NULL;
    }
    json_error_t err, first_err;
    size_t n = strlen(text);
    json_t *v = parse_span(text, n, &first_err);
    if (v) return v;

    int saw_fence = 0;
    if ((v = from_fences(text, &err, &saw_fence))) return v;
    if (saw_fence) first_err = err;

    size_t start = strcspn(text, "{[");
    if (text[start]) {
        char closer = text[start] == '{' ? '}' : ']';
        const char *last = strrchr(text + start, closer);
        if (last && (v = parse_span(text + start, (size_t)(last - (text + start)) + 1, &err)))
            return v;
        if (last) first_err = err;
        /* Prose after the object may contain the same closer ("... {x} ... }"): try the
         * balanced span too. */
        long end = balanced_end(text, start);
        if (end > 0 && (v = parse_span(text + start, (size_t)end - start + 1, &err))) return v;
    } else if (!saw_fence) {
        az_fail(msg, AZ_ERR_INVALID, "the answer is not JSON: no JSON object or array in it");
        return NULL;
    }
    az_fail(msg, AZ_ERR_INVALID, "the answer is not JSON: %s (line %d, column %d)", first_err.text,
            first_err.line, first_err.column);
    return NULL;
}
