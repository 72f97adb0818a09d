/* REST <-> protobuf transcoding (google.api.http): query and path values are converted by a
 * table of per-type string converters, bodies and the structured well-known types go through
 * pbjson, and errors name the parameter as the client wrote it. */
#include "transcode.h"

#include <float.h>
#include <inttypes.h>
#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/pbjson.h"
#include "core/text.h"

/* Longest query parameter name or value, and path value, accepted. */
#define MAX_TEXT 8192
/* Most dotted segments in one query parameter name ("agent.llm.model" has three). */
#define MAX_DEPTH 16
/* How much of a name or value error messages quote. */
#define SHOW_MAX 100
#define SHOW(p, n) (int)((n) > SHOW_MAX ? SHOW_MAX : (n)), (p), (n) > SHOW_MAX ? "..." : ""

#define SLOT(m, f) ((char *)(m) + (f)->offset)
#define QSLOT(m, f) ((char *)(m) + (f)->quantifier_offset)

/* What is being converted, for error messages: "query parameter pageSize: ...". */
typedef struct tc {
    ProtobufCAllocator *alloc;
    char *msg;
    const char *what; /* "query parameter" or "path parameter" */
    const char *name; /* as the client (or the template) wrote it */
    size_t name_len;
} tc;

__attribute__((format(printf, 2, 3))) static az_err bad(tc *c, const char *fmt, ...)
{
    if (!c->msg) return AZ_ERR_INVALID;
    int n = snprintf(c->msg, AZ_MSG_MAX, "%s %.*s%s: ", c->what, SHOW(c->name, c->name_len));
    if (n >= 0 && n < AZ_MSG_MAX) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(c->msg + n, AZ_MSG_MAX - (size_t)n, fmt, ap);
        va_end(ap);
    }
    return AZ_ERR_INVALID;
}

static az_err nomem(tc *c) { return az_fail(c->msg, AZ_ERR_NOMEM, "out of memory"); }

static void *pb_alloc(tc *c, size_t n) { return c->alloc->alloc(c->alloc->allocator_data, n); }

static void pb_free(tc *c, void *p)
{
    if (p) c->alloc->free(c->alloc->allocator_data, p);
}

static void *sys_alloc(void *data, size_t n)
{
    (void)data;
    return malloc(n ? n : 1);
}

static void sys_free(void *data, void *p)
{
    (void)data;
    free(p);
}

/* protobuf-c's own default, so protobuf_c_message_free_unpacked(m, NULL) frees what it made. */
static ProtobufCAllocator sys_allocator = {sys_alloc, sys_free, NULL};

static ProtobufCMessage *new_message(tc *c, const ProtobufCMessageDescriptor *d)
{
    ProtobufCMessage *m = pb_alloc(c, d->sizeof_message);
    if (m) protobuf_c_message_init(d, m);
    return m;
}

/* ---- text ---- */

static bool is_digit(char ch) { return ch >= '0' && ch <= '9'; }
static bool is_lower(char ch) { return ch >= 'a' && ch <= 'z'; }

/* Whether the C string name is exactly the n bytes at s (which may hold NULs). */
static bool span_is(const char *name, const char *s, size_t n)
{
    return strlen(name) == n && memcmp(name, s, n) == 0;
}

/* A field named by its .proto name or its lowerCamelCase JSON name, s being n bytes. */
static bool field_named(const ProtobufCFieldDescriptor *f, const char *s, size_t n)
{
    const char *name = f->name;
    if (span_is(name, s, n)) return true;
    size_t i = 0;
    bool up = false;
    for (; *name; name++) {
        if (*name == '_') {
            up = true;
            continue;
        }
        char ch = up && is_lower(*name) ? (char)(*name - 'a' + 'A') : *name;
        up = false;
        if (i == n || s[i++] != ch) return false;
    }
    return i == n;
}

static const ProtobufCFieldDescriptor *find_field(const ProtobufCMessageDescriptor *d,
                                                  const char *s, size_t n)
{
    for (unsigned i = 0; i < d->n_fields; i++)
        if (field_named(&d->fields[i], s, n)) return &d->fields[i];
    return NULL;
}

/* The JSON name of a .proto field name into buf (size bytes), for messages. */
static void json_name(const char *name, char *buf, size_t size)
{
    size_t o = 0;
    bool up = false;
    for (; *name && o + 1 < size; name++) {
        if (*name == '_' || *name == '.') {
            up = *name == '_';
            if (*name == '.') buf[o++] = '.';
            continue;
        }
        buf[o++] = up && is_lower(*name) ? (char)(*name - 'a' + 'A') : *name;
        up = false;
    }
    buf[o] = '\0';
}

/* ---- value converters: one per ProtobufCType, strings in, protobuf-c storage out ---- */

typedef az_err (*conv_fn)(tc *c, const ProtobufCFieldDescriptor *f, const char *v, size_t n,
                          void *slot);

/* Digits only (no sign, spaces, exponent or hex): what a URL should carry. */
typedef enum magnitude { MAG_OK, MAG_SYNTAX, MAG_TOO_BIG } magnitude;

static magnitude parse_magnitude(const char *v, size_t n, uint64_t *out)
{
    if (n == 0) return MAG_SYNTAX;
    uint64_t x = 0;
    bool big = false;
    for (size_t i = 0; i < n; i++) {
        if (!is_digit(v[i])) return MAG_SYNTAX;
        unsigned d = (unsigned)(v[i] - '0');
        if (x > (UINT64_MAX - d) / 10) big = true; /* keep reading: "1..9x" is still a syntax error */
        x = x * 10 + d;
    }
    *out = x;
    return big ? MAG_TOO_BIG : MAG_OK;
}

static az_err get_signed(tc *c, const char *v, size_t n, int64_t min, int64_t max,
                         const char *type, int64_t *out)
{
    bool neg = n > 0 && v[0] == '-';
    uint64_t mag = 0;
    magnitude k = parse_magnitude(v + neg, n - neg, &mag);
    if (k == MAG_SYNTAX) return bad(c, "expected an integer, got \"%.*s%s\"", SHOW(v, n));
    uint64_t limit = neg ? (uint64_t)(-(min + 1)) + 1 : (uint64_t)max;
    if (k == MAG_TOO_BIG || mag > limit)
        return bad(c, "\"%.*s%s\" is out of range for %s", SHOW(v, n), type);
    *out = !neg ? (int64_t)mag : mag == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)mag;
    return AZ_OK;
}

static az_err get_unsigned(tc *c, const char *v, size_t n, uint64_t max, const char *type,
                           uint64_t *out)
{
    magnitude k = parse_magnitude(v, n, out);
    if (k == MAG_SYNTAX)
        return bad(c, "expected a non-negative integer, got \"%.*s%s\"", SHOW(v, n));
    if (k == MAG_TOO_BIG || *out > max)
        return bad(c, "\"%.*s%s\" is out of range for %s", SHOW(v, n), type);
    return AZ_OK;
}

static az_err conv_int32(tc *c, const ProtobufCFieldDescriptor *f, const char *v, size_t n,
                         void *slot)
{
    (void)f;
    int64_t x;
    az_err err = get_signed(c, v, n, INT32_MIN, INT32_MAX, "int32", &x);
    if (!err) *(int32_t *)slot = (int32_t)x;
    return err;
}

static az_err conv_int64(tc *c, const ProtobufCFieldDescriptor *f, const char *v, size_t n,
                         void *slot)
{
    (void)f;
    return get_signed(c, v, n, INT64_MIN, INT64_MAX, "int64", slot);
}

static az_err conv_uint32(tc *c, const ProtobufCFieldDescriptor *f, const char *v, size_t n,
                          void *slot)
{
    (void)f;
    uint64_t x;
    az_err err = get_unsigned(c, v, n, UINT32_MAX, "uint32", &x);
    if (!err) *(uint32_t *)slot = (uint32_t)x;
    return err;
}

static az_err conv_uint64(tc *c, const ProtobufCFieldDescriptor *f, const char *v, size_t n,
                          void *slot)
{
    (void)f;
    return get_unsigned(c, v, n, UINT64_MAX, "uint64", slot);
}

/* JSON number grammar, as the body accepts; strtod alone would also take "0x1p3" and " 1". */
static bool number_syntax(const char *s, size_t n)
{
    size_t i = s[0] == '-';
    if (i < n && s[i] == '0') {
        i++;
    } else if (i < n && is_digit(s[i])) {
        while (i < n && is_digit(s[i])) i++;
    } else {
        return false;
    }
    if (i < n && s[i] == '.') {
        if (++i == n || !is_digit(s[i])) return false;
        while (i < n && is_digit(s[i])) i++;
    }
    if (i < n && (s[i] == 'e' || s[i] == 'E')) {
        i++;
        if (i < n && (s[i] == '+' || s[i] == '-')) i++;
        if (i == n || !is_digit(s[i])) return false;
        while (i < n && is_digit(s[i])) i++;
    }
    return i == n;
}

static az_err get_real(tc *c, const char *v, size_t n, double *out)
{
    static const struct {
        const char *name;
        double value;
    } specials[] = {{"NaN", NAN}, {"Infinity", INFINITY}, {"-Infinity", -INFINITY}};
    for (size_t i = 0; i < sizeof specials / sizeof specials[0]; i++)
        if (strlen(specials[i].name) == n && memcmp(v, specials[i].name, n) == 0)
            return *out = specials[i].value, AZ_OK;
    char buf[400]; /* longer than any sensible number; strtod needs a terminator */
    if (n == 0 || n >= sizeof buf || !number_syntax(v, n))
        return bad(c, "expected a number, got \"%.*s%s\"", SHOW(v, n));
    memcpy(buf, v, n);
    buf[n] = '\0';
    *out = strtod(buf, NULL);
    if (isinf(*out)) return bad(c, "\"%.*s%s\" is out of range", SHOW(v, n));
    return AZ_OK;
}

static az_err conv_float(tc *c, const ProtobufCFieldDescriptor *f, const char *v, size_t n,
                         void *slot)
{
    (void)f;
    double d;
    az_err err = get_real(c, v, n, &d);
    if (err) return err;
    if (isfinite(d) && fabs(d) > FLT_MAX)
        return bad(c, "\"%.*s%s\" is out of range for float", SHOW(v, n));
    *(float *)slot = (float)d;
    return AZ_OK;
}

static az_err conv_double(tc *c, const ProtobufCFieldDescriptor *f, const char *v, size_t n,
                          void *slot)
{
    (void)f;
    return get_real(c, v, n, slot);
}

static az_err conv_bool(tc *c, const ProtobufCFieldDescriptor *f, const char *v, size_t n,
                        void *slot)
{
    (void)f;
    if (n == 4 && memcmp(v, "true", 4) == 0) return *(protobuf_c_boolean *)slot = 1, AZ_OK;
    if (n == 5 && memcmp(v, "false", 5) == 0) return *(protobuf_c_boolean *)slot = 0, AZ_OK;
    return bad(c, "expected true or false, got \"%.*s%s\"", SHOW(v, n));
}

/* A value name, or a number: proto3 enums are open, as in the JSON body. */
static az_err conv_enum(tc *c, const ProtobufCFieldDescriptor *f, const char *v, size_t n,
                        void *slot)
{
    const ProtobufCEnumDescriptor *ed = f->descriptor;
    for (unsigned i = 0; i < ed->n_values; i++) {
        if (span_is(ed->values[i].name, v, n)) {
            *(int32_t *)slot = ed->values[i].value;
            return AZ_OK;
        }
    }
    bool neg = n > 0 && v[0] == '-';
    uint64_t mag;
    if (parse_magnitude(v + neg, n - neg, &mag) != MAG_SYNTAX) return conv_int32(c, f, v, n, slot);
    return bad(c, "unknown value \"%.*s%s\" for enum %s", SHOW(v, n), ed->name);
}

static az_err conv_string(tc *c, const ProtobufCFieldDescriptor *f, const char *v, size_t n,
                          void *slot)
{
    (void)f;
    if (memchr(v, '\0', n)) return bad(c, "contains a NUL byte");
    if (!az_text_utf8_valid((const char *)v, n)) return bad(c, "not valid UTF-8");
    char *s = pb_alloc(c, n + 1);
    if (!s) return nomem(c);
    memcpy(s, v, n);
    s[n] = '\0';
    *(char **)slot = s;
    return AZ_OK;
}

/* bytes (base64) and Timestamp, Duration, FieldMask: their text form is the JSON string form,
 * so pbjson parses them exactly as it would in a body. */
static az_err conv_json_string(tc *c, const ProtobufCFieldDescriptor *f, const char *v, size_t n,
                               void *slot)
{
    if (memchr(v, '\0', n)) return bad(c, "contains a NUL byte");
    if (!az_text_utf8_valid((const char *)v, n)) return bad(c, "not valid UTF-8");
    json_t *j = json_stringn_nocheck(v, n);
    if (!j) return nomem(c);
    char root[SHOW_MAX + 64];
    snprintf(root, sizeof root, "%s %.*s%s", c->what, SHOW(c->name, c->name_len));
    az_err err = az_pbjson_decode_value(f, j, slot, root, c->alloc, c->msg);
    json_decref(j);
    return err;
}

static az_err conv_message(tc *c, const ProtobufCFieldDescriptor *f, const char *v, size_t n,
                           void *slot);

static const struct conv {
    size_t size;    /* of one value in protobuf-c storage */
    bool empty_ok;  /* "" is a value, not a missing one */
    conv_fn fn;
} convs[] = {
    [PROTOBUF_C_TYPE_INT32] = {sizeof(int32_t), false, conv_int32},
    [PROTOBUF_C_TYPE_SINT32] = {sizeof(int32_t), false, conv_int32},
    [PROTOBUF_C_TYPE_SFIXED32] = {sizeof(int32_t), false, conv_int32},
    [PROTOBUF_C_TYPE_INT64] = {sizeof(int64_t), false, conv_int64},
    [PROTOBUF_C_TYPE_SINT64] = {sizeof(int64_t), false, conv_int64},
    [PROTOBUF_C_TYPE_SFIXED64] = {sizeof(int64_t), false, conv_int64},
    [PROTOBUF_C_TYPE_UINT32] = {sizeof(uint32_t), false, conv_uint32},
    [PROTOBUF_C_TYPE_FIXED32] = {sizeof(uint32_t), false, conv_uint32},
    [PROTOBUF_C_TYPE_UINT64] = {sizeof(uint64_t), false, conv_uint64},
    [PROTOBUF_C_TYPE_FIXED64] = {sizeof(uint64_t), false, conv_uint64},
    [PROTOBUF_C_TYPE_FLOAT] = {sizeof(float), false, conv_float},
    [PROTOBUF_C_TYPE_DOUBLE] = {sizeof(double), false, conv_double},
    [PROTOBUF_C_TYPE_BOOL] = {sizeof(protobuf_c_boolean), false, conv_bool},
    [PROTOBUF_C_TYPE_ENUM] = {sizeof(int32_t), false, conv_enum},
    [PROTOBUF_C_TYPE_STRING] = {sizeof(char *), true, conv_string},
    [PROTOBUF_C_TYPE_BYTES] = {sizeof(ProtobufCBinaryData), true, conv_json_string},
    [PROTOBUF_C_TYPE_MESSAGE] = {sizeof(ProtobufCMessage *), false, conv_message},
};

/* Int32Value and friends: a message holding the value of its one field. */
static az_err conv_wrapper(tc *c, const ProtobufCFieldDescriptor *f, const char *v, size_t n,
                           void *slot)
{
    const ProtobufCMessageDescriptor *d = f->descriptor;
    const ProtobufCFieldDescriptor *vf = protobuf_c_message_descriptor_get_field_by_name(d, "value");
    if (!vf) return az_fail(c->msg, AZ_ERR_INTERNAL, "%s has no field value", d->name);
    if (n == 0 && !convs[vf->type].empty_ok) return bad(c, "empty value");
    ProtobufCMessage *w = new_message(c, d);
    if (!w) return nomem(c);
    az_err err = convs[vf->type].fn(c, vf, v, n, SLOT(w, vf));
    if (err) {
        protobuf_c_message_free_unpacked(w, c->alloc);
        return err;
    }
    *(ProtobufCMessage **)slot = w;
    return AZ_OK;
}

/* The message types a single string can spell (those az_routes_is_value_type accepts), with
 * their converters; every other message is a structure. */
static const struct value_type {
    const char *name;
    bool empty_ok;
    conv_fn fn;
} value_types[] = {
    {"google.protobuf.Timestamp", false, conv_json_string},
    {"google.protobuf.Duration", false, conv_json_string},
    {"google.protobuf.FieldMask", true, conv_json_string},
    {"google.protobuf.DoubleValue", false, conv_wrapper},
    {"google.protobuf.FloatValue", false, conv_wrapper},
    {"google.protobuf.Int64Value", false, conv_wrapper},
    {"google.protobuf.UInt64Value", false, conv_wrapper},
    {"google.protobuf.Int32Value", false, conv_wrapper},
    {"google.protobuf.UInt32Value", false, conv_wrapper},
    {"google.protobuf.BoolValue", false, conv_wrapper},
    {"google.protobuf.StringValue", true, conv_wrapper},
    {"google.protobuf.BytesValue", true, conv_wrapper},
};

static const struct value_type *value_type(const ProtobufCFieldDescriptor *f)
{
    if (f->type != PROTOBUF_C_TYPE_MESSAGE) return NULL;
    const char *name = ((const ProtobufCMessageDescriptor *)f->descriptor)->name;
    for (size_t i = 0; i < sizeof value_types / sizeof value_types[0]; i++)
        if (strcmp(name, value_types[i].name) == 0) return &value_types[i];
    return NULL;
}

static az_err conv_message(tc *c, const ProtobufCFieldDescriptor *f, const char *v, size_t n,
                           void *slot)
{
    const struct value_type *vt = value_type(f);
    if (!vt) return bad(c, "is a message");
    return vt->fn(c, f, v, n, slot);
}

/* Converts one value of f into slot; the only entry to the table. */
static az_err convert(tc *c, const ProtobufCFieldDescriptor *f, const char *v, size_t n, void *slot)
{
    const struct value_type *vt = value_type(f);
    bool empty_ok = vt ? vt->empty_ok : convs[f->type].empty_ok;
    if (n == 0 && !empty_ok) return bad(c, "empty value");
    if (n > MAX_TEXT) return bad(c, "value longer than %d bytes", MAX_TEXT);
    return convs[f->type].fn(c, f, v, n, slot);
}

/* Frees what a converter stored in slot. */
static void free_value(tc *c, const ProtobufCFieldDescriptor *f, void *slot)
{
    if (f->type == PROTOBUF_C_TYPE_STRING) {
        pb_free(c, *(char **)slot);
    } else if (f->type == PROTOBUF_C_TYPE_BYTES) {
        pb_free(c, ((ProtobufCBinaryData *)slot)->data);
    } else if (f->type == PROTOBUF_C_TYPE_MESSAGE) {
        ProtobufCMessage *m = *(ProtobufCMessage **)slot;
        if (m) protobuf_c_message_free_unpacked(m, c->alloc);
    }
}

/* Frees what an unset field may still own (a body's "" string or empty bytes), as
 * protobuf_c_message_free_unpacked would: anything but the descriptor's default. */
static void clear_unset(tc *c, const ProtobufCFieldDescriptor *f, void *slot)
{
    if (f->type == PROTOBUF_C_TYPE_STRING) {
        char *s = *(char **)slot;
        if (s != f->default_value) pb_free(c, s);
        *(char **)slot = NULL;
    } else if (f->type == PROTOBUF_C_TYPE_BYTES) {
        ProtobufCBinaryData *d = slot;
        const ProtobufCBinaryData *def = f->default_value;
        if (!def || d->data != def->data) pb_free(c, d->data);
        d->data = NULL;
        d->len = 0;
    }
}

/* ---- presence ---- */

/* Whether f of m holds a value (as pbjson decides what to print). */
static bool is_set(const ProtobufCMessage *m, const ProtobufCFieldDescriptor *f)
{
    const char *slot = (const char *)m + f->offset;
    if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) return az_pbjson_oneof_case(m, f) == f->id;
    if (f->label == PROTOBUF_C_LABEL_REPEATED)
        return *(const size_t *)((const char *)m + f->quantifier_offset) > 0;
    if (f->type == PROTOBUF_C_TYPE_MESSAGE) return *(ProtobufCMessage *const *)slot != NULL;
    if (f->type == PROTOBUF_C_TYPE_STRING) {
        const char *s = *(const char *const *)slot;
        return s && *s;
    }
    if (f->label == PROTOBUF_C_LABEL_OPTIONAL)
        return *(const protobuf_c_boolean *)((const char *)m + f->quantifier_offset);
    if (f->type == PROTOBUF_C_TYPE_BYTES) return ((const ProtobufCBinaryData *)slot)->len > 0;
    for (size_t i = 0; i < convs[f->type].size; i++)
        if (slot[i]) return true;
    return false;
}

static bool same_fields(const ProtobufCMessage *x, const ProtobufCMessage *y);

/* Two values of f, each in protobuf-c storage, are the same value. */
static bool same_value(const ProtobufCFieldDescriptor *f, const void *a, const void *b)
{
    switch (f->type) {
    case PROTOBUF_C_TYPE_STRING:
        return strcmp(*(const char *const *)a, *(const char *const *)b) == 0;
    case PROTOBUF_C_TYPE_BYTES: {
        const ProtobufCBinaryData *x = a, *y = b;
        return x->len == y->len && (x->len == 0 || memcmp(x->data, y->data, x->len) == 0);
    }
    case PROTOBUF_C_TYPE_MESSAGE: {
        const ProtobufCMessage *x = *(ProtobufCMessage *const *)a,
                               *y = *(ProtobufCMessage *const *)b;
        return x && y ? same_fields(x, y) : x == y;
    }
    default:
        return memcmp(a, b, convs[f->type].size) == 0;
    }
}

/* Field by field, so comparing a path's Timestamp with the body's needs no allocation (the
 * value types nest no deeper than FieldMask's list of strings). */
static bool same_fields(const ProtobufCMessage *x, const ProtobufCMessage *y)
{
    const ProtobufCMessageDescriptor *d = x->descriptor;
    if (y->descriptor != d) return false;
    for (unsigned i = 0; i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *g = &d->fields[i];
        if (g->label != PROTOBUF_C_LABEL_REPEATED) {
            if (!same_value(g, (const char *)x + g->offset, (const char *)y + g->offset))
                return false;
            continue;
        }
        size_t n = *(const size_t *)((const char *)x + g->quantifier_offset), size = convs[g->type].size;
        if (n != *(const size_t *)((const char *)y + g->quantifier_offset)) return false;
        const char *ax = *(const char *const *)((const char *)x + g->offset),
                   *ay = *(const char *const *)((const char *)y + g->offset);
        for (size_t k = 0; k < n; k++)
            if (!same_value(g, ax + k * size, ay + k * size)) return false;
    }
    return true;
}

/* ---- query parameters ---- */

/* A query parameter resolved to its field path: chain[0] is a field of the request. */
typedef struct qref {
    const ProtobufCFieldDescriptor *chain[MAX_DEPTH];
    size_t depth;
    bool done; /* a repeated field's values are all set at its first parameter */
} qref;

static bool same_chain(const qref *a, const qref *b)
{
    return a->depth == b->depth && memcmp(a->chain, b->chain, a->depth * sizeof a->chain[0]) == 0;
}

/* Resolves the dotted name of a query parameter (every segment lowerCamelCase or snake_case)
 * to a field that takes one value, or a list of them, outside the body field. */
static az_err resolve_query(tc *c, const ProtobufCMessageDescriptor *d,
                            const ProtobufCFieldDescriptor *body_field, qref *q)
{
    const char *s = c->name, *end = s + c->name_len;
    q->depth = 0;
    for (;;) {
        const char *dot = memchr(s, '.', (size_t)(end - s));
        size_t n = dot ? (size_t)(dot - s) : (size_t)(end - s);
        const ProtobufCFieldDescriptor *f = d ? find_field(d, s, n) : NULL;
        if (!f)
            return az_fail(c->msg, AZ_ERR_INVALID, "unknown query parameter \"%.*s%s\"",
                           SHOW(c->name, c->name_len));
        if (q->depth == 0 && f == body_field) return bad(c, "set by the body");
        if (q->depth == MAX_DEPTH) return bad(c, "nested deeper than %d fields", MAX_DEPTH);
        q->chain[q->depth++] = f;
        bool repeated = f->label == PROTOBUF_C_LABEL_REPEATED;
        bool structure = f->type == PROTOBUF_C_TYPE_MESSAGE && !value_type(f);
        const ProtobufCMessageDescriptor *sd = structure ? f->descriptor : NULL;
        size_t upto = (size_t)(s + n - c->name); /* the name up to this field, as written */
        if (repeated && structure) {
            if (az_pbjson_is_map(d, f))
                return bad(c, "%.*s%s is a map; maps cannot be set from the query",
                           SHOW(c->name, upto));
            return bad(c, "%.*s%s is a list of messages; it cannot be set from the query",
                       SHOW(c->name, upto));
        }
        /* Struct, Value, ListValue, Empty, Any: JSON shapes, not fields to fill one by one */
        if (sd && strncmp(sd->name, "google.protobuf.", 16) == 0)
            return bad(c, "%.*s%s is a %s; it cannot be set from the query", SHOW(c->name, upto),
                       sd->name);
        if (!dot) {
            if (!sd) return AZ_OK;
            char first[128];
            json_name(sd->n_fields ? sd->fields[0].name : "", first, sizeof first);
            if (!first[0]) return bad(c, "is a message without fields");
            return bad(c, "is a message; set its fields (%.*s%s.%s=...)",
                       SHOW(c->name, c->name_len), first);
        }
        d = sd; /* a scalar or a value type has no fields: the next segment is unknown */
        s = dot + 1;
    }
}

/* The message at chain[0..depth-1) below m, created as needed; NULL after an error. */
static ProtobufCMessage *descend(tc *c, ProtobufCMessage *m, const qref *q, size_t depth,
                                 az_err *err)
{
    for (size_t k = 0; k < depth; k++) {
        const ProtobufCFieldDescriptor *f = q->chain[k];
        if ((f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) && az_pbjson_oneof_case(m, f) != 0 &&
            az_pbjson_oneof_case(m, f) != f->id) {
            *err = bad(c, "another member of its oneof is already set");
            return NULL;
        }
        ProtobufCMessage **sub = (ProtobufCMessage **)SLOT(m, f);
        if (!*sub) {
            if (!(*sub = new_message(c, f->descriptor))) {
                *err = nomem(c);
                return NULL;
            }
            az_pbjson_mark_present(m, f);
        }
        m = *sub;
    }
    return m;
}

/* Sets the field of q[i] from its parameter, or, for a repeated field, from every parameter
 * naming it, in order. */
static az_err apply_query(tc *c, ProtobufCMessage *m, const az_query_param *qp, qref *q,
                          size_t nq, size_t i)
{
    az_err err = AZ_OK;
    ProtobufCMessage *parent = descend(c, m, &q[i], q[i].depth - 1, &err);
    if (!parent) return err;
    const ProtobufCFieldDescriptor *f = q[i].chain[q[i].depth - 1];
    if (f->label != PROTOBUF_C_LABEL_REPEATED) {
        /* the field is still at its default: the body and the path never set query fields */
        if ((f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) && az_pbjson_oneof_case(parent, f) != 0)
            return bad(c, "another member of its oneof is already set");
        err = convert(c, f, qp[i].value, qp[i].value_len, SLOT(parent, f));
        if (!err) az_pbjson_mark_present(parent, f);
        return err;
    }
    size_t count = 0, size = convs[f->type].size;
    for (size_t j = i; j < nq; j++) count += same_chain(&q[i], &q[j]);
    char *arr = pb_alloc(c, count * size);
    if (!arr) return nomem(c);
    memset(arr, 0, count * size);
    /* owned by the message from here; the count grows per converted value, so an error frees
     * exactly those */
    *(char **)SLOT(parent, f) = arr;
    size_t *n = (size_t *)QSLOT(parent, f);
    *n = 0;
    for (size_t j = i; j < nq; j++) {
        if (!same_chain(&q[i], &q[j])) continue;
        q[j].done = true;
        c->name = qp[j].name;
        c->name_len = qp[j].name_len;
        if ((err = convert(c, f, qp[j].value, qp[j].value_len, arr + *n * size)) != AZ_OK)
            return err;
        (*n)++;
    }
    return AZ_OK;
}

/* ---- request ---- */

static bool blank(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (s[i] != ' ' && s[i] != '\t' && s[i] != '\r' && s[i] != '\n') return false;
    return true;
}

/* The request message with the body decoded into it per r->body. */
static az_err decode_body(tc *c, const az_route *r, const char *body, size_t len,
                          ProtobufCMessage **out)
{
    const ProtobufCMessageDescriptor *in = r->method->input;
    *out = NULL;
    bool empty = !body || blank(body, len);
    if (!r->body) {
        if (!empty) return az_fail(c->msg, AZ_ERR_INVALID, "this method takes no body");
    } else if (!empty) {
        json_error_t jerr;
        json_t *j = json_loadb(body, len, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES, &jerr);
        if (!j)
            return az_fail(c->msg, AZ_ERR_INVALID, "body: invalid JSON at line %d column %d: %s",
                           jerr.line, jerr.column, jerr.text);
        az_err err;
        if (strcmp(r->body, "*") == 0) {
            err = az_pbjson_decode_tree(in, j, NULL, c->alloc, out, c->msg);
        } else {
            const ProtobufCFieldDescriptor *f =
                protobuf_c_message_descriptor_get_field_by_name(in, r->body);
            char root[128];
            json_name(r->body, root, sizeof root);
            ProtobufCMessage *sub = NULL;
            err = f ? az_pbjson_decode_tree(f->descriptor, j, root, c->alloc, &sub, c->msg)
                    : az_fail(c->msg, AZ_ERR_INTERNAL, "body field %s not in %s", r->body,
                              in->name);
            if (!err && !(*out = new_message(c, in))) err = nomem(c);
            if (err) {
                if (sub) protobuf_c_message_free_unpacked(sub, c->alloc);
            } else {
                *(ProtobufCMessage **)SLOT(*out, f) = sub;
                az_pbjson_mark_present(*out, f);
            }
        }
        json_decref(j);
        return err;
    }
    if (!(*out = new_message(c, in))) return nomem(c);
    if (r->body && strcmp(r->body, "*") != 0) {
        /* an empty body still means the body message, empty: "{}" */
        const ProtobufCFieldDescriptor *f =
            protobuf_c_message_descriptor_get_field_by_name(in, r->body);
        ProtobufCMessage *sub = f ? new_message(c, f->descriptor) : NULL;
        if (!sub) {
            protobuf_c_message_free_unpacked(*out, c->alloc);
            *out = NULL;
            return f ? nomem(c)
                     : az_fail(c->msg, AZ_ERR_INTERNAL, "body field %s not in %s", r->body,
                               in->name);
        }
        *(ProtobufCMessage **)SLOT(*out, f) = sub;
        az_pbjson_mark_present(*out, f);
    }
    return AZ_OK;
}

/* Resolves a path variable's field path (proto names, checked when the route was built). */
static az_err resolve_path(tc *c, const ProtobufCMessageDescriptor *d, const char *field, qref *q)
{
    q->depth = 0;
    for (const char *s = field;;) {
        const char *dot = strchr(s, '.');
        size_t n = dot ? (size_t)(dot - s) : strlen(s);
        const ProtobufCFieldDescriptor *f = NULL;
        for (unsigned i = 0; d && i < d->n_fields; i++)
            if (span_is(d->fields[i].name, s, n)) f = &d->fields[i];
        if (!f || q->depth == MAX_DEPTH || f->label == PROTOBUF_C_LABEL_REPEATED)
            return az_fail(c->msg, AZ_ERR_INTERNAL, "path variable %s does not fit the request",
                           field);
        q->chain[q->depth++] = f;
        if (!dot) return AZ_OK;
        d = f->type == PROTOBUF_C_TYPE_MESSAGE ? f->descriptor : NULL;
        s = dot + 1;
    }
}

/* Sets a path variable's field last: a body that gave it another value is an error. */
static az_err apply_path(tc *c, ProtobufCMessage *m, const az_httprule_binding *b, const qref *q)
{
    az_err err = AZ_OK;
    ProtobufCMessage *parent = descend(c, m, q, q->depth - 1, &err);
    if (!parent) return err;
    const ProtobufCFieldDescriptor *f = q->chain[q->depth - 1];
    union {
        int64_t i;
        double d;
        void *p;
        ProtobufCBinaryData b;
    } value;
    memset(&value, 0, sizeof value);
    if ((err = convert(c, f, b->value, b->len, &value)) != AZ_OK) return err;
    if (!is_set(parent, f)) {
        if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) {
            if (az_pbjson_oneof_case(parent, f) != 0) { /* the slot is another member's */
                free_value(c, f, &value);
                return bad(c, "another member of its oneof is already set");
            }
        } else {
            clear_unset(c, f, SLOT(parent, f)); /* the body may have written "" */
        }
        memcpy(SLOT(parent, f), &value, convs[f->type].size);
        az_pbjson_mark_present(parent, f);
        return AZ_OK;
    }
    bool same = same_value(f, SLOT(parent, f), &value);
    free_value(c, f, &value);
    if (same) return AZ_OK;
    char where[256], *said = NULL;
    json_name(b->field, where, sizeof where);
    if (az_pbjson_encode_field(parent, f, 0, &said, NULL) != AZ_OK) said = NULL;
    const char *shown = said ? said : "another value";
    size_t shown_len = strlen(shown);
    err = az_fail(c->msg, AZ_ERR_INVALID, "%s: the body says %.*s%s but the path says \"%.*s%s\"",
                  where, SHOW(shown, shown_len), SHOW(b->value, b->len));
    free(said);
    return err;
}

static az_err check_query(tc *c, const az_route *r, const az_query_param *q, size_t nq,
                          const qref *paths, size_t nb, const ProtobufCFieldDescriptor *body_field,
                          qref *refs)
{
    if (nq > AZ_TRANSCODE_MAX_PARAMS)
        return az_fail(c->msg, AZ_ERR_INVALID, "more than %d query parameters",
                       AZ_TRANSCODE_MAX_PARAMS);
    for (size_t i = 0; i < nq; i++) {
        c->name = q[i].name;
        c->name_len = q[i].name_len;
        if (!q[i].name || (!q[i].value && q[i].value_len))
            return az_fail(c->msg, AZ_ERR_INTERNAL, "query parameter %zu has no name", i);
        if (q[i].name_len > MAX_TEXT)
            return az_fail(c->msg, AZ_ERR_INVALID, "query parameter name longer than %d bytes",
                           MAX_TEXT);
        if (q[i].value_len > MAX_TEXT) return bad(c, "value longer than %d bytes", MAX_TEXT);
        if (r->body && strcmp(r->body, "*") == 0)
            return bad(c, "not allowed: the body carries the whole request");
        az_err err = resolve_query(c, r->method->input, body_field, &refs[i]);
        if (err) return err;
        refs[i].done = false;
        for (size_t k = 0; k < nb; k++)
            if (same_chain(&refs[i], &paths[k])) return bad(c, "bound by the path");
        const ProtobufCFieldDescriptor *leaf = refs[i].chain[refs[i].depth - 1];
        if (leaf->label == PROTOBUF_C_LABEL_REPEATED) continue;
        for (size_t k = 0; k < i; k++)
            if (same_chain(&refs[i], &refs[k])) return bad(c, "given more than once");
    }
    return AZ_OK;
}

az_err az_transcode_request(const az_route *r, const az_httprule_binding *b, size_t nb,
                            const az_query_param *q, size_t nq, const char *body, size_t body_len,
                            ProtobufCAllocator *alloc, ProtobufCMessage **out, char *msg)
{
    if (out) *out = NULL;
    if (!r || !r->method || !r->method->input || !out || (!b && nb) || (!q && nq) ||
        (!body && body_len))
        return az_fail(msg, AZ_ERR_INTERNAL, "az_transcode_request: missing argument");
    if (nb > AZ_HTTPRULE_MAX_VARS)
        return az_fail(msg, AZ_ERR_INTERNAL, "az_transcode_request: %zu path bindings", nb);
    tc c = {alloc ? alloc : &sys_allocator, msg, "query parameter", "", 0};
    const ProtobufCMessageDescriptor *in = r->method->input;
    const ProtobufCFieldDescriptor *body_field =
        r->body && strcmp(r->body, "*") != 0
            ? protobuf_c_message_descriptor_get_field_by_name(in, r->body)
            : NULL;
    qref paths[AZ_HTTPRULE_MAX_VARS];
    for (size_t k = 0; k < nb; k++) {
        az_err err = resolve_path(&c, in, b[k].field, &paths[k]);
        if (err) return err;
    }
    qref refs[AZ_TRANSCODE_MAX_PARAMS];
    az_err err = check_query(&c, r, q, nq, paths, nb, body_field, refs);
    if (err) return err;

    ProtobufCMessage *m;
    if ((err = decode_body(&c, r, body, body_len, &m)) != AZ_OK) return err;
    for (size_t i = 0; !err && i < nq; i++) {
        if (refs[i].done) continue;
        c.name = q[i].name;
        c.name_len = q[i].name_len;
        err = apply_query(&c, m, q, refs, nq, i);
    }
    c.what = "path parameter";
    for (size_t k = 0; !err && k < nb; k++) {
        c.name = b[k].field;
        c.name_len = strlen(b[k].field);
        err = apply_path(&c, m, &b[k], &paths[k]);
    }
    if (err) {
        protobuf_c_message_free_unpacked(m, c.alloc);
        return err;
    }
    *out = m;
    return AZ_OK;
}

/* ---- responses and errors ---- */

az_err az_transcode_response(const az_route *r, const ProtobufCMessage *m, char **out, size_t *len,
                             char *msg)
{
    if (out) *out = NULL;
    if (len) *len = 0;
    if (!r || !r->method || !m || !out || !len)
        return az_fail(msg, AZ_ERR_INTERNAL, "az_transcode_response: missing argument");
    if (m->descriptor != r->method->output)
        return az_fail(msg, AZ_ERR_INTERNAL, "%s returns %s, not %s", r->method->grpc_path,
                       r->method->output->name, m->descriptor ? m->descriptor->name : "?");
    az_err err;
    if (r->response_body) {
        const ProtobufCFieldDescriptor *f =
            protobuf_c_message_descriptor_get_field_by_name(m->descriptor, r->response_body);
        err = f ? az_pbjson_encode_field(m, f, 0, out, msg)
                : az_fail(msg, AZ_ERR_INTERNAL, "response_body %s not in %s", r->response_body,
                          m->descriptor->name);
    } else {
        err = az_pbjson_encode(m, 0, out, msg);
    }
    if (!err) *len = strlen(*out);
    return err;
}

int az_transcode_http_status(int grpc_code)
{
    static const int http[] = {
        200, /* OK */
        499, /* CANCELLED: the client closed the request */
        500, /* UNKNOWN */
        400, /* INVALID_ARGUMENT */
        504, /* DEADLINE_EXCEEDED */
        404, /* NOT_FOUND */
        409, /* ALREADY_EXISTS */
        403, /* PERMISSION_DENIED */
        429, /* RESOURCE_EXHAUSTED */
        400, /* FAILED_PRECONDITION: not 412, which is about HTTP conditional headers */
        409, /* ABORTED */
        400, /* OUT_OF_RANGE */
        501, /* UNIMPLEMENTED */
        500, /* INTERNAL */
        503, /* UNAVAILABLE */
        500, /* DATA_LOSS */
        401, /* UNAUTHENTICATED */
    };
    if (grpc_code < 0 || (size_t)grpc_code >= sizeof http / sizeof http[0]) return 500;
    return http[grpc_code];
}

/* Length of the valid UTF-8 sequence at s (n bytes left), 0 if there is none. */
static size_t utf8_seq(const unsigned char *s, size_t n)
{
    size_t k = s[0] < 0x80 ? 1 : (s[0] & 0xE0) == 0xC0 ? 2 : (s[0] & 0xF0) == 0xE0 ? 3
                                : (s[0] & 0xF8) == 0xF0 ? 4 : 0;
    return k && k <= n && az_text_utf8_valid((const char *)s, k) ? k : 0;
}

az_err az_transcode_status_json(int grpc_code, const char *message, char **out, size_t *len)
{
    if (out) *out = NULL;
    if (len) *len = 0;
    if (!out || !len) return AZ_ERR_INTERNAL;
    const unsigned char *s = (const unsigned char *)(message ? message : "");
    size_t n = strlen((const char *)s);
    /* every byte becomes at most six ("\u001f"); a bad byte three (U+FFFD) */
    if (n > (SIZE_MAX - 64) / 6) return AZ_ERR_NOMEM;
    char *buf = malloc(n * 6 + 64), *o = buf;
    if (!buf) return AZ_ERR_NOMEM;
    o += sprintf(o, "{\"code\":%d,\"message\":\"", grpc_code);
    static const char hex[] = "0123456789abcdef";
    static const char short_esc[0x20] = {['\b'] = 'b', ['\f'] = 'f', ['\n'] = 'n', ['\r'] = 'r',
                                          ['\t'] = 't'};
    for (size_t i = 0; i < n;) {
        unsigned char ch = s[i];
        if (ch == '"' || ch == '\\') {
            *o++ = '\\', *o++ = (char)ch, i++;
        } else if (ch < 0x20) {
            if (short_esc[ch])
                *o++ = '\\', *o++ = short_esc[ch];
            else
                o += sprintf(o, "\\u00%c%c", hex[ch >> 4], hex[ch & 15]);
            i++;
        } else {
            size_t k = utf8_seq(s + i, n - i);
            if (k) {
                memcpy(o, s + i, k);
                o += k, i += k;
            } else {
                memcpy(o, "\xEF\xBF\xBD", 3); /* U+FFFD for each byte that starts no character */
                o += 3, i++;
            }
        }
    }
    o += sprintf(o, "\",\"details\":[]}");
    *out = buf;
    *len = (size_t)(o - buf);
    return AZ_OK;
}
