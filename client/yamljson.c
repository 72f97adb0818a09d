/* YAML <-> jansson with libyaml: the document loader resolves anchors and aliases, this file
 * types scalars (by the target protobuf field when known) and enforces the size limits; the
 * emitter side builds libyaml events so quoting is libyaml's, not printf's. */
#include "yamljson.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

#include "core/pbjson.h"
#include "core/file.h"

/* ---- plain scalar resolution (PyYAML's YAML 1.1 rules, without sexagesimal numbers) ---- */

static int word_in(const char *s, const char *const *words, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(s, words[i]) == 0) return 1;
    return 0;
}

static const char *const null_words[] = {"", "~", "null", "Null", "NULL"};
static const char *const true_words[] = {"true", "True", "TRUE", "yes", "Yes", "YES", "on", "On", "ON"};
static const char *const false_words[] = {"false", "False", "FALSE", "no",  "No",
                                          "NO",    "off",   "Off",   "OFF"};
#define NWORDS(a) (sizeof a / sizeof a[0])

/* Integer syntax with '_' separators in base 2, 8, 10 or 16; *out is the value. 0 when s is
 * not an integer or does not fit in json_int_t. */
static int parse_int(const char *s, json_int_t *out)
{
    int neg = 0, base = 10;
    if (*s == '-' || *s == '+') neg = *s++ == '-';
    if (!*s) return 0;
    if (s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) base = 16, s += 2;
    else if (s[0] == '0' && (s[1] == 'o' || s[1] == 'O')) base = 8, s += 2;
    else if (s[0] == '0' && (s[1] == 'b' || s[1] == 'B')) base = 2, s += 2;
    else if (s[0] == '0' && s[1]) base = 8, s += 1;
    uint64_t v = 0;
    int digits = 0;
    for (; *s; s++) {
        if (*s == '_') continue;
        int d = isdigit((unsigned char)*s) ? *s - '0'
                : isxdigit((unsigned char)*s) ? tolower((unsigned char)*s) - 'a' + 10
                                              : 99;
        if (d >= base) return 0;
        if (v > (UINT64_MAX - (uint64_t)d) / (uint64_t)base) return 0;
        v = v * (uint64_t)base + (uint64_t)d;
        digits++;
    }
    if (!digits || v > (uint64_t)INT64_MAX + (uint64_t)neg) return 0;
    *out = neg ? (json_int_t)(0 - v) : (json_int_t)v;
    return 1;
}

/* PyYAML floats need a '.': "1.5", "-.5", "1.e3", "6.02e+23"; not "1e3" (a string there). */
static int parse_float(const char *s, double *out)
{
    const char *p = s;
    int digits = 0, dot = 0;
    if (*p == '-' || *p == '+') p++;
    for (; *p && *p != 'e' && *p != 'E'; p++) {
        if (isdigit((unsigned char)*p)) digits++;
        else if (*p == '.' && !dot) dot = 1;
        else if (*p != '_' || !digits) return 0;
    }
    if (!dot || !digits) return 0;
    if (*p) {
        p++;
        if (*p == '-' || *p == '+') p++;
        if (!isdigit((unsigned char)*p)) return 0;
        while (isdigit((unsigned char)*p)) p++;
        if (*p) return 0;
    }
    char buf[128];
    size_t n = 0;
    for (const char *q = s; *q && n + 1 < sizeof buf; q++)
        if (*q != '_') buf[n++] = *q;
    buf[n] = '\0';
    errno = 0;
    *out = strtod(buf, NULL);
    return errno != ERANGE && isfinite(*out);
}

/* The JSON value of a plain scalar; NULL when out of memory. */
static json_t *resolve_plain(const char *s)
{
    json_int_t i;
    double d;
    if (word_in(s, null_words, NWORDS(null_words))) return json_null();
    if (word_in(s, true_words, NWORDS(true_words))) return json_true();
    if (word_in(s, false_words, NWORDS(false_words))) return json_false();
    if (parse_int(s, &i)) return json_integer(i);
    if (parse_float(s, &d)) return json_real(d);
    return json_string(s);
}

/* ---- YAML document -> jansson ---- */

/* What the schema says about the value being converted. */
typedef enum hint_kind {
    HINT_PLAIN,   /* no schema: PyYAML typing all the way down */
    HINT_MESSAGE, /* a mapping of the fields of msg */
    HINT_FIELD,   /* the value of field fd (a list when repeated, unless elem) */
} hint_kind;

typedef struct hint {
    hint_kind kind;
    const ProtobufCMessageDescriptor *msg;
    const ProtobufCFieldDescriptor *fd;
    int elem; /* converting one element of a repeated field */
} hint;

typedef struct conv {
    yaml_document_t *doc;
    const char *name;
    size_t values;
    char *msg;
} conv;

static az_err fail_at(conv *c, yaml_mark_t m, const char *what)
{
    return az_fail(c->msg, AZ_ERR_INVALID, "%s:%zu:%zu: %s", c->name, m.line + 1, m.column + 1,
                   what);
}

static int is_map_field(const ProtobufCFieldDescriptor *fd)
{
    if (fd->label != PROTOBUF_C_LABEL_REPEATED || fd->type != PROTOBUF_C_TYPE_MESSAGE) return 0;
    const ProtobufCMessageDescriptor *d = fd->descriptor;
    size_t len = strlen(d->name);
    return d->n_fields == 2 && len > 5 && strcmp(d->name + len - 5, "Entry") == 0;
}

/* The field named key in its proto name or its lowerCamelCase JSON name. */
static const ProtobufCFieldDescriptor *field_named(const ProtobufCMessageDescriptor *d,
                                                   const char *key)
{
    for (unsigned i = 0; i < d->n_fields; i++) {
        const char *n = d->fields[i].name, *k = key;
        if (strcmp(n, key) == 0) return &d->fields[i];
        while (*n && *k) {
            if (*n == '_' && n[1] && islower((unsigned char)n[1])) {
                if (*k != toupper((unsigned char)n[1])) break;
                n += 2;
            } else {
                if (*n != *k) break;
                n++;
            }
            k++;
        }
        if (!*n && !*k) return &d->fields[i];
    }
    return NULL;
}

/* Well-known message types whose JSON form is a string. */
static int string_message(const ProtobufCMessageDescriptor *d)
{
    static const char *const names[] = {"google.protobuf.Duration", "google.protobuf.Timestamp",
                                        "google.protobuf.FieldMask", "google.protobuf.StringValue",
                                        "google.protobuf.BytesValue"};
    return word_in(d->name, names, NWORDS(names));
}

/* The hint for the value of field fd (elem: one element of it). */
static hint field_hint(const ProtobufCFieldDescriptor *fd, int elem)
{
    if (fd->label == PROTOBUF_C_LABEL_REPEATED && !elem) return (hint){HINT_FIELD, NULL, fd, 0};
    if (fd->type == PROTOBUF_C_TYPE_MESSAGE) {
        const ProtobufCMessageDescriptor *d = fd->descriptor;
        if (string_message(d)) return (hint){HINT_FIELD, NULL, fd, 1};
        if (strncmp(d->name, "google.protobuf.", 16) == 0) return (hint){HINT_PLAIN, NULL, NULL, 0};
        return (hint){HINT_MESSAGE, d, NULL, 0};
    }
    return (hint){HINT_FIELD, NULL, fd, 1};
}

/* Whether a plain scalar for this hint stays a string verbatim. */
static int wants_string(hint h)
{
    if (h.kind != HINT_FIELD || !h.elem) return 0;
    const ProtobufCFieldDescriptor *fd = h.fd;
    return fd->type == PROTOBUF_C_TYPE_STRING || fd->type == PROTOBUF_C_TYPE_BYTES ||
           fd->type == PROTOBUF_C_TYPE_MESSAGE; /* the string-valued well-known types */
}

static az_err convert(conv *c, yaml_node_t *node, hint h, int depth, json_t **out);

static az_err convert_scalar(conv *c, yaml_node_t *node, hint h, json_t **out)
{
    const char *s = (const char *)node->data.scalar.value;
    if (strlen(s) != node->data.scalar.length)
        return fail_at(c, node->start_mark, "NUL character in a scalar");
    int plain = node->data.scalar.style == YAML_PLAIN_SCALAR_STYLE;
    if (!plain) {
        *out = json_string(s);
    } else if (wants_string(h) && !word_in(s, null_words, NWORDS(null_words))) {
        *out = json_string(s);
    } else {
        *out = resolve_plain(s);
    }
    if (!*out) {
        /* jansson refuses invalid UTF-8; libyaml has already checked it, so this is memory. */
        return az_fail(c->msg, AZ_ERR_NOMEM, "%s: out of memory", c->name);
    }
    return AZ_OK;
}

static az_err convert_sequence(conv *c, yaml_node_t *node, hint h, int depth, json_t **out)
{
    hint item = h.kind == HINT_FIELD && !h.elem ? field_hint(h.fd, 1) : (hint){HINT_PLAIN, 0, 0, 0};
    json_t *a = json_array();
    if (!a) return az_fail(c->msg, AZ_ERR_NOMEM, "%s: out of memory", c->name);
    for (yaml_node_item_t *it = node->data.sequence.items.start;
         it < node->data.sequence.items.top; it++) {
        json_t *v = NULL;
        az_err err = convert(c, yaml_document_get_node(c->doc, *it), item, depth + 1, &v);
        if (err || json_array_append_new(a, v)) {
            json_decref(a);
            return err ? err : az_fail(c->msg, AZ_ERR_NOMEM, "%s: out of memory", c->name);
        }
    }
    *out = a;
    return AZ_OK;
}

/* The hint for the value under key inside a mapping converted with h. */
static hint value_hint(hint h, const char *key)
{
    if (h.kind == HINT_MESSAGE) {
        const ProtobufCFieldDescriptor *fd = field_named(h.msg, key);
        if (fd) return field_hint(fd, 0);
    } else if (h.kind == HINT_FIELD && !h.elem && is_map_field(h.fd)) {
        const ProtobufCMessageDescriptor *entry = h.fd->descriptor;
        const ProtobufCFieldDescriptor *vfd = protobuf_c_message_descriptor_get_field(entry, 2);
        if (vfd) return field_hint(vfd, 1);
    }
    return (hint){HINT_PLAIN, NULL, NULL, 0};
}

static az_err convert_mapping(conv *c, yaml_node_t *node, hint h, int depth, json_t **out)
{
    json_t *o = json_object();
    if (!o) return az_fail(c->msg, AZ_ERR_NOMEM, "%s: out of memory", c->name);
    az_err err = AZ_OK;
    for (yaml_node_pair_t *p = node->data.mapping.pairs.start; p < node->data.mapping.pairs.top;
         p++) {
        yaml_node_t *k = yaml_document_get_node(c->doc, p->key);
        yaml_node_t *v = yaml_document_get_node(c->doc, p->value);
        if (k->type != YAML_SCALAR_NODE) {
            err = fail_at(c, k->start_mark, "mapping keys must be scalars");
            break;
        }
        const char *key = (const char *)k->data.scalar.value;
        if (k->data.scalar.style == YAML_PLAIN_SCALAR_STYLE && strcmp(key, "<<") == 0) {
            err = fail_at(c, k->start_mark, "merge keys (<<) are not supported");
            break;
        }
        if (strlen(key) != k->data.scalar.length) {
            err = fail_at(c, k->start_mark, "NUL character in a key");
            break;
        }
        if (json_object_get(o, key)) {
            char what[160];
            snprintf(what, sizeof what, "duplicate key \"%.100s\"", key);
            err = fail_at(c, k->start_mark, what);
            break;
        }
        json_t *jv = NULL;
        if ((err = convert(c, v, value_hint(h, key), depth + 1, &jv))) break;
        if (json_object_set_new(o, key, jv)) {
            err = az_fail(c->msg, AZ_ERR_NOMEM, "%s: out of memory", c->name);
            break;
        }
    }
    if (err) {
        json_decref(o);
        return err;
    }
    *out = o;
    return AZ_OK;
}

static az_err convert(conv *c, yaml_node_t *node, hint h, int depth, json_t **out)
{
    *out = NULL;
    /* An alias can make a node its own descendant, and nested aliases multiply a small file:
     * depth and value count bound both. */
    if (depth > AZ_YAML_MAX_DEPTH) {
        char what[64];
        snprintf(what, sizeof what, "nested deeper than %d levels", AZ_YAML_MAX_DEPTH);
        return fail_at(c, node->start_mark, what);
    }
    if (++c->values > AZ_YAML_MAX_VALUES)
        return fail_at(c, node->start_mark, "too many values (aliases expand beyond the limit)");
    switch (node->type) {
    case YAML_SCALAR_NODE: return convert_scalar(c, node, h, out);
    case YAML_SEQUENCE_NODE: return convert_sequence(c, node, h, depth, out);
    case YAML_MAPPING_NODE: return convert_mapping(c, node, h, depth, out);
    default: return fail_at(c, node->start_mark, "empty node");
    }
}

static az_err parser_error(const yaml_parser_t *p, const char *name, char *msg)
{
    if (p->error == YAML_MEMORY_ERROR) return az_fail(msg, AZ_ERR_NOMEM, "%s: out of memory", name);
    const yaml_mark_t *m = &p->problem_mark;
    if (p->error == YAML_READER_ERROR)
        return az_fail(msg, AZ_ERR_INVALID, "%s: byte %zu: %s", name, p->problem_offset,
                       p->problem ? p->problem : "cannot read");
    if (p->context)
        return az_fail(msg, AZ_ERR_INVALID, "%s:%zu:%zu: %s %s (line %zu)", name, m->line + 1,
                       m->column + 1, p->problem ? p->problem : "syntax error", p->context,
                       p->context_mark.line + 1);
    return az_fail(msg, AZ_ERR_INVALID, "%s:%zu:%zu: %s", name, m->line + 1, m->column + 1,
                   p->problem ? p->problem : "syntax error");
}

az_err az_yaml_parse(const char *text, size_t len, const char *name,
                     const ProtobufCMessageDescriptor *desc, json_t **out, char *msg)
{
    *out = NULL;
    if (len > AZ_YAML_MAX_BYTES)
        return az_fail(msg, AZ_ERR_INVALID, "%s: larger than %u bytes", name, AZ_YAML_MAX_BYTES);
    yaml_parser_t p;
    if (!yaml_parser_initialize(&p)) return az_fail(msg, AZ_ERR_NOMEM, "%s: out of memory", name);
    yaml_parser_set_input_string(&p, (const unsigned char *)text, len);
    yaml_document_t doc;
    az_err err = AZ_OK;
    if (!yaml_parser_load(&p, &doc)) {
        err = parser_error(&p, name, msg);
        yaml_parser_delete(&p);
        return err;
    }
    yaml_node_t *root = yaml_document_get_root_node(&doc);
    conv c = {&doc, name, 0, msg};
    hint h = desc ? (hint){HINT_MESSAGE, desc, NULL, 0} : (hint){HINT_PLAIN, NULL, NULL, 0};
    json_t *v = NULL;
    if (root) err = convert(&c, root, h, 1, &v);
    else if (!(v = json_null())) err = az_fail(msg, AZ_ERR_NOMEM, "%s: out of memory", name);
    yaml_document_delete(&doc);

    /* A second document would be silently ignored by a loader that stops at the first. */
    if (!err && root) {
        yaml_document_t next;
        if (!yaml_parser_load(&p, &next)) {
            err = parser_error(&p, name, msg);
        } else {
            yaml_node_t *r2 = yaml_document_get_root_node(&next);
            if (r2)
                err = az_fail(msg, AZ_ERR_INVALID, "%s:%zu:%zu: more than one document", name,
                              next.start_mark.line + 1, next.start_mark.column + 1);
            yaml_document_delete(&next);
        }
    }
    yaml_parser_delete(&p);
    if (err) {
        json_decref(v);
        return err;
    }
    *out = v;
    return AZ_OK;
}

static int ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}

/* Reads path into *text (checked against the YAML limit). */
static az_err read_text(const char *path, const char **shown, char **text, size_t *len, char *msg)
{
    *shown = strcmp(path, "-") == 0 ? "stdin" : path;
    az_err err = az_file_read(path, text, len, msg);
    if (err) return err;
    if (*len > AZ_YAML_MAX_BYTES) {
        free(*text);
        *text = NULL;
        return az_fail(msg, AZ_ERR_INVALID, "%s: larger than %u bytes", *shown, AZ_YAML_MAX_BYTES);
    }
    return AZ_OK;
}

/* JSON input goes to jansson (and so pbjson) untouched: YAML 1.1 is not quite a superset. */
static int looks_like_json(const char *path, const char *text)
{
    if (ends_with(path, ".json")) return 1;
    while (isspace((unsigned char)*text)) text++;
    return *text == '{' || *text == '[';
}

az_err az_yaml_read_file(const char *path, const ProtobufCMessageDescriptor *desc, json_t **out,
                         char *msg)
{
    *out = NULL;
    const char *shown;
    char *text;
    size_t len;
    az_err err = read_text(path, &shown, &text, &len, msg);
    if (err) return err;
    if (looks_like_json(path, text)) {
        json_error_t je;
        json_t *v = json_loadb(text, len, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES, &je);
        if (v || ends_with(path, ".json")) {
            free(text);
            if (!v)
                return az_fail(msg, AZ_ERR_INVALID, "%s:%d:%d: %s", shown, je.line, je.column,
                               je.text);
            *out = v;
            return AZ_OK;
        }
    }
    err = az_yaml_parse(text, len, shown, desc, out, msg);
    free(text);
    return err;
}

az_err az_yaml_read_message(const char *path, const ProtobufCMessageDescriptor *desc,
                            ProtobufCAllocator *alloc, ProtobufCMessage **out, char *msg)
{
    *out = NULL;
    json_t *v = NULL;
    az_err err = az_yaml_read_file(path, desc, &v, msg);
    if (err) return err;
    const char *shown = strcmp(path, "-") == 0 ? "stdin" : path;
    if (!json_is_object(v)) {
        json_decref(v);
        return az_fail(msg, AZ_ERR_INVALID, "%s: expected a mapping (an %s)", shown, desc->name);
    }
    char *text = json_dumps(v, JSON_COMPACT);
    json_decref(v);
    if (!text) return az_fail(msg, AZ_ERR_NOMEM, "%s: out of memory", shown);
    char why[AZ_MSG_MAX];
    err = az_pbjson_decode(desc, text, strlen(text), alloc, out, why);
    free(text);
    if (err) return az_fail(msg, err, "%s: %s", shown, why);
    return AZ_OK;
}

/* ---- jansson -> YAML ---- */

typedef struct sbuf {
    char *p;
    size_t n, cap;
    int oom;
} sbuf;

static int write_cb(void *data, unsigned char *buffer, size_t size)
{
    sbuf *b = data;
    if (b->n + size + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 1024;
        while (cap < b->n + size + 1) cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) {
            b->oom = 1;
            return 0;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->n, buffer, size);
    b->n += size;
    b->p[b->n] = '\0';
    return 1;
}

/* Shortest text that reads back as the same double, always with a '.' so YAML keeps it a float. */
static void real_text(double d, char *buf, size_t size)
{
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(buf, size, "%.*g", prec, d);
        if (strtod(buf, NULL) == d) break;
    }
    char *e = strpbrk(buf, "eE");
    if (!strchr(buf, '.')) {
        char tail[40] = "";
        if (e) {
            snprintf(tail, sizeof tail, "%s", e);
            *e = '\0';
        }
        size_t n = strlen(buf);
        snprintf(buf + n, size - n, ".0%s", tail);
    }
}

static int emit_scalar(yaml_emitter_t *e, const char *s, yaml_scalar_style_t style)
{
    yaml_event_t ev;
    if (!yaml_scalar_event_initialize(&ev, NULL, NULL, (yaml_char_t *)s, (int)strlen(s), 1, 1,
                                      style))
        return 0;
    return yaml_emitter_emit(e, &ev);
}

static int emit_string(yaml_emitter_t *e, const char *s)
{
    yaml_scalar_style_t style = YAML_PLAIN_SCALAR_STYLE;
    if (strchr(s, '\n')) {
        style = YAML_LITERAL_SCALAR_STYLE;
    } else {
        /* A plain scalar that would read back as null, a bool or a number must be quoted. */
        json_t *r = resolve_plain(s);
        if (!r) return 0;
        if (!json_is_string(r)) style = YAML_DOUBLE_QUOTED_SCALAR_STYLE;
        json_decref(r);
    }
    return emit_scalar(e, s, style);
}

static int emit_value(yaml_emitter_t *e, const json_t *v)
{
    yaml_event_t ev;
    char buf[64];
    switch (json_typeof(v)) {
    case JSON_OBJECT: {
        int flow = json_object_size(v) == 0;
        if (!yaml_mapping_start_event_initialize(&ev, NULL, NULL, 1,
                                                 flow ? YAML_FLOW_MAPPING_STYLE
                                                      : YAML_BLOCK_MAPPING_STYLE) ||
            !yaml_emitter_emit(e, &ev))
            return 0;
        const char *key;
        json_t *item;
        json_object_foreach((json_t *)v, key, item) {
            if (!emit_string(e, key) || !emit_value(e, item)) return 0;
        }
        return yaml_mapping_end_event_initialize(&ev) && yaml_emitter_emit(e, &ev);
    }
    case JSON_ARRAY: {
        int flow = json_array_size(v) == 0;
        if (!yaml_sequence_start_event_initialize(&ev, NULL, NULL, 1,
                                                  flow ? YAML_FLOW_SEQUENCE_STYLE
                                                       : YAML_BLOCK_SEQUENCE_STYLE) ||
            !yaml_emitter_emit(e, &ev))
            return 0;
        size_t i;
        json_t *item;
        json_array_foreach(v, i, item) {
            if (!emit_value(e, item)) return 0;
        }
        return yaml_sequence_end_event_initialize(&ev) && yaml_emitter_emit(e, &ev);
    }
    case JSON_STRING: return emit_string(e, json_string_value(v));
    case JSON_INTEGER:
        snprintf(buf, sizeof buf, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
        return emit_scalar(e, buf, YAML_PLAIN_SCALAR_STYLE);
    case JSON_REAL:
        real_text(json_real_value(v), buf, sizeof buf);
        return emit_scalar(e, buf, YAML_PLAIN_SCALAR_STYLE);
    case JSON_TRUE: return emit_scalar(e, "true", YAML_PLAIN_SCALAR_STYLE);
    case JSON_FALSE: return emit_scalar(e, "false", YAML_PLAIN_SCALAR_STYLE);
    default: return emit_scalar(e, "null", YAML_PLAIN_SCALAR_STYLE);
    }
}

az_err az_yaml_emit(const json_t *v, char **out, char *msg)
{
    *out = NULL;
    yaml_emitter_t e;
    if (!yaml_emitter_initialize(&e)) return az_fail(msg, AZ_ERR_NOMEM, "yaml: out of memory");
    sbuf b = {0};
    yaml_emitter_set_output(&e, write_cb, &b);
    yaml_emitter_set_unicode(&e, 1);
    yaml_emitter_set_width(&e, -1); /* never fold long lines */
    yaml_emitter_set_indent(&e, 2);
    yaml_event_t ev;
    int ok = yaml_stream_start_event_initialize(&ev, YAML_UTF8_ENCODING) &&
             yaml_emitter_emit(&e, &ev) &&
             yaml_document_start_event_initialize(&ev, NULL, NULL, NULL, 1) &&
             yaml_emitter_emit(&e, &ev) && emit_value(&e, v) &&
             yaml_document_end_event_initialize(&ev, 1) && yaml_emitter_emit(&e, &ev) &&
             yaml_stream_end_event_initialize(&ev) && yaml_emitter_emit(&e, &ev) &&
             yaml_emitter_flush(&e);
    az_err err = AZ_OK;
    if (b.oom || e.error == YAML_MEMORY_ERROR)
        err = az_fail(msg, AZ_ERR_NOMEM, "yaml: out of memory");
    else if (!ok)
        err = az_fail(msg, AZ_ERR_INTERNAL, "yaml: %s", e.problem ? e.problem : "emitter failed");
    yaml_emitter_delete(&e);
    if (err) {
        free(b.p);
        return err;
    }
    *out = b.p ? b.p : strdup("");
    if (!*out) return az_fail(msg, AZ_ERR_NOMEM, "yaml: out of memory");
    return AZ_OK;
}
