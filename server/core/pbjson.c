/* The proto3 JSON mapping (protobuf.dev/programming-guides/json) for any protobuf-c message, driven
 * by descriptor reflection: jansson parses and holds the tree, a small printer writes it out. */
#include "pbjson.h"

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

#include "text.h"

/* Objects and arrays nested deeper than this are refused both ways: it bounds our recursion
 * (and jansson's) and catches pointer cycles in hand-built messages. */
#define MAX_DEPTH 64

/* Timestamp range 0001-01-01T00:00:00Z .. 9999-12-31T23:59:59Z and the ±10000-year Duration limit,
 * both from the well-known type definitions. */
#define TS_MIN_SECONDS INT64_C(-62135596800)
#define TS_MAX_SECONDS INT64_C(253402300799)
#define DUR_MAX_SECONDS INT64_C(315576000000)
#define NANOS_MAX 999999999

/* ---- growable string buffer (output, paths, scratch); never a fixed-size buffer ---- */

typedef struct sbuf {
    char *buf;
    size_t len, cap;
    bool oom;
} sbuf;

static bool sb_reserve(sbuf *s, size_t extra)
{
    if (s->oom) return false;
    if (extra >= SIZE_MAX - s->len) return s->oom = true, false;
    size_t need = s->len + extra + 1;
    if (need <= s->cap) return true;
    size_t cap = s->cap ? s->cap : 64;
    while (cap < need) cap = cap > SIZE_MAX / 2 ? need : cap * 2;
    char *p = realloc(s->buf, cap);
    if (!p) return s->oom = true, false;
    s->buf = p;
    s->cap = cap;
    return true;
}

static void sb_putn(sbuf *s, const char *p, size_t n)
{
    if (!sb_reserve(s, n)) return;
    memcpy(s->buf + s->len, p, n);
    s->len += n;
    s->buf[s->len] = '\0';
}

static void sb_puts(sbuf *s, const char *p) { sb_putn(s, p, strlen(p)); }
static void sb_putc(sbuf *s, char ch) { sb_putn(s, &ch, 1); }

__attribute__((format(printf, 2, 3))) static void sb_printf(sbuf *s, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0 || !sb_reserve(s, (size_t)n)) return;
    va_start(ap, fmt);
    vsnprintf(s->buf + s->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    s->len += (size_t)n;
}

static void sb_truncate(sbuf *s, size_t len)
{
    if (len < s->len) s->len = len;
    if (s->buf) s->buf[s->len] = '\0';
}

static bool is_digit(char ch) { return ch >= '0' && ch <= '9'; }
static bool is_lower(char ch) { return ch >= 'a' && ch <= 'z'; }
static bool is_upper(char ch) { return ch >= 'A' && ch <= 'Z'; }

/* protoc's ToJsonName: drop each '_' and upper-case the character after it. */
static void sb_put_json_name(sbuf *s, const char *name)
{
    bool up = false;
    for (; *name; name++) {
        if (*name == '_') {
            up = true;
            continue;
        }
        sb_putc(s, up && is_lower(*name) ? (char)(*name - 'a' + 'A') : *name);
        up = false;
    }
}

static bool json_name_eq(const char *name, const char *key)
{
    bool up = false;
    for (; *name; name++) {
        if (*name == '_') {
            up = true;
            continue;
        }
        char ch = up && is_lower(*name) ? (char)(*name - 'a' + 'A') : *name;
        up = false;
        if (*key++ != ch) return false;
    }
    return *key == '\0';
}

/* ---- context: allocator, flags, depth and the field path that error messages name ---- */

typedef struct ctx {
    ProtobufCAllocator *alloc;
    int flags;
    int depth;
    sbuf path; /* "agent.llm.tools[2]"; if it cannot grow, messages show a shorter path */
    char *msg;
} ctx;

__attribute__((format(printf, 3, 4))) static az_err fail(ctx *c, az_err code, const char *fmt, ...)
{
    if (!c->msg) return code;
    int n = snprintf(c->msg, AZ_MSG_MAX, "%s: ", c->path.buf ? c->path.buf : "");
    if (n >= 0 && n < AZ_MSG_MAX) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(c->msg + n, AZ_MSG_MAX - (size_t)n, fmt, ap);
        va_end(ap);
    }
    return code;
}

static az_err nomem(ctx *c) { return fail(c, AZ_ERR_NOMEM, "out of memory"); }

static const char *const json_type_names[] = {
    [JSON_OBJECT] = "object",  [JSON_ARRAY] = "array", [JSON_STRING] = "string",
    [JSON_INTEGER] = "number", [JSON_REAL] = "number", [JSON_TRUE] = "boolean",
    [JSON_FALSE] = "boolean",  [JSON_NULL] = "null",
};

static az_err fail_type(ctx *c, const char *want, const json_t *j)
{
    return fail(c, AZ_ERR_INVALID, "expected %s, got %s", want, json_type_names[json_typeof(j)]);
}

static size_t path_field(ctx *c, const char *name)
{
    size_t mark = c->path.len;
    sb_putc(&c->path, '.');
    sb_put_json_name(&c->path, name);
    return mark;
}

static size_t path_key(ctx *c, const char *key)
{
    size_t mark = c->path.len;
    sb_printf(&c->path, ".%s", key);
    return mark;
}

static size_t path_index(ctx *c, size_t i)
{
    size_t mark = c->path.len;
    sb_printf(&c->path, "[%zu]", i);
    return mark;
}

static size_t path_map_key(ctx *c, const char *key)
{
    size_t mark = c->path.len;
    sb_printf(&c->path, "[\"%s\"]", key);
    return mark;
}

static void path_pop(ctx *c, size_t mark) { sb_truncate(&c->path, mark); }

/* The root of every path: the message's short name with a lower-case first letter ("agent"). */
static void path_root(ctx *c, const ProtobufCMessageDescriptor *desc)
{
    const char *n = desc->short_name ? desc->short_name : "message";
    sb_putc(&c->path, is_upper(n[0]) ? (char)(n[0] - 'A' + 'a') : n[0]);
    if (n[0]) sb_puts(&c->path, n + 1);
}

static az_err enter(ctx *c)
{
    if (c->depth >= MAX_DEPTH)
        return fail(c, AZ_ERR_INVALID, "nesting deeper than %d levels", MAX_DEPTH);
    c->depth++;
    return AZ_OK;
}

static void leave(ctx *c) { c->depth--; }

static void *pb_alloc(ctx *c, size_t n) { return c->alloc->alloc(c->alloc->allocator_data, n); }

static char *pb_strndup(ctx *c, const char *s, size_t n)
{
    char *p = pb_alloc(c, n + 1);
    if (!p) return NULL;
    memcpy(p, s, n);
    p[n] = '\0';
    return p;
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

/* Matches protobuf-c's own default, so protobuf_c_message_free_unpacked(m, NULL) frees it too. */
static ProtobufCAllocator sys_allocator = {sys_alloc, sys_free, NULL};

/* ---- descriptor helpers ---- */

#define SLOT(m, f) ((char *)(m) + (f)->offset)
#define CSLOT(m, f) ((const char *)(m) + (f)->offset)
#define QSLOT(m, f) ((char *)(m) + (f)->quantifier_offset)
#define CQSLOT(m, f) ((const char *)(m) + (f)->quantifier_offset)

static uint32_t oneof_case(const ProtobufCMessage *m, const ProtobufCFieldDescriptor *f)
{
    uint32_t v; /* the case member is a C enum; memcpy keeps the access well defined */
    memcpy(&v, CQSLOT(m, f), sizeof v);
    return v;
}

static void set_presence(ProtobufCMessage *m, const ProtobufCFieldDescriptor *f)
{
    if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) {
        uint32_t id = f->id;
        memcpy(QSLOT(m, f), &id, sizeof id);
    } else if (f->label == PROTOBUF_C_LABEL_OPTIONAL && f->type != PROTOBUF_C_TYPE_STRING &&
               f->type != PROTOBUF_C_TYPE_MESSAGE) {
        *(protobuf_c_boolean *)QSLOT(m, f) = 1; /* proto2 and proto3 optional has_ flag */
    }
}

static bool is_enum(const ProtobufCFieldDescriptor *f, const char *name)
{
    return f->type == PROTOBUF_C_TYPE_ENUM &&
           strcmp(((const ProtobufCEnumDescriptor *)f->descriptor)->name, name) == 0;
}

static bool is_msg(const ProtobufCFieldDescriptor *f, const char *name)
{
    return f->type == PROTOBUF_C_TYPE_MESSAGE &&
           strcmp(((const ProtobufCMessageDescriptor *)f->descriptor)->name, name) == 0;
}

/* JSON null is a value, not "unset", only for google.protobuf.Value and NullValue. */
static bool null_is_value(const ProtobufCFieldDescriptor *f)
{
    return is_msg(f, "google.protobuf.Value") || is_enum(f, "google.protobuf.NullValue");
}

/* protobuf-c marks nothing: a map is a repeated nested "<Name>Entry" message of key=1, value=2. */
static bool is_map(const ProtobufCMessageDescriptor *parent, const ProtobufCFieldDescriptor *f)
{
    if (f->label != PROTOBUF_C_LABEL_REPEATED || f->type != PROTOBUF_C_TYPE_MESSAGE) return false;
    const ProtobufCMessageDescriptor *e = f->descriptor;
    size_t sl = strlen(e->short_name), pl = strlen(parent->name);
    return sl > 5 && strcmp(e->short_name + sl - 5, "Entry") == 0 && e->n_fields == 2 &&
           e->fields[0].id == 1 && strcmp(e->fields[0].name, "key") == 0 && e->fields[1].id == 2 &&
           strcmp(e->fields[1].name, "value") == 0 && strncmp(e->name, parent->name, pl) == 0 &&
           e->name[pl] == '.' && strcmp(e->name + pl + 1, e->short_name) == 0;
}

static const ProtobufCFieldDescriptor *find_field(const ProtobufCMessageDescriptor *d,
                                                  const char *key)
{
    for (unsigned i = 0; i < d->n_fields; i++)
        if (strcmp(d->fields[i].name, key) == 0 || json_name_eq(d->fields[i].name, key))
            return &d->fields[i];
    return NULL;
}

/* A field of a well-known type, by name; NULL only if the descriptor is not the real one. */
static const ProtobufCFieldDescriptor *wkt_field(ctx *c, const ProtobufCMessageDescriptor *d,
                                                 const char *name)
{
    const ProtobufCFieldDescriptor *f = protobuf_c_message_descriptor_get_field_by_name(d, name);
    if (!f) fail(c, AZ_ERR_INTERNAL, "%s has no field %s", d->name, name);
    return f;
}

/* ---- text helpers: UTF-8, base64, numbers, calendar ---- */

static const char b64_chars[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static void b64_encode(sbuf *s, const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16;
        if (i + 1 < n) v |= (uint32_t)p[i + 1] << 8;
        if (i + 2 < n) v |= p[i + 2];
        char q[4] = {b64_chars[v >> 18 & 63], b64_chars[v >> 12 & 63],
                     i + 1 < n ? b64_chars[v >> 6 & 63] : '=', i + 2 < n ? b64_chars[v & 63] : '='};
        sb_putn(s, q, 4);
    }
}

/* Standard or URL-safe alphabet, padding optional, as the JSON mapping requires. */
static int b64_value(char ch)
{
    if (is_upper(ch)) return ch - 'A';
    if (is_lower(ch)) return ch - 'a' + 26;
    if (is_digit(ch)) return ch - '0' + 52;
    if (ch == '+' || ch == '-') return 62;
    if (ch == '/' || ch == '_') return 63;
    return -1;
}

/* Decodes s into out (at least n*3/4 bytes); returns the length or -1 if s is not base64. */
static long long b64_decode(const char *s, size_t n, uint8_t *out)
{
    size_t data = n;
    while (data > 0 && n - data < 2 && s[data - 1] == '=') data--;
    if ((data < n && n % 4 != 0) || data % 4 == 1) return -1;
    size_t o = 0;
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < data; i++) {
        int v = b64_value(s[i]);
        if (v < 0) return -1;
        acc = acc << 6 | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (uint8_t)(acc >> bits);
            acc &= (1u << bits) - 1;
        }
    }
    return (long long)o;
}

/* JSON number grammar; strtod alone would also take "0x1p3", "inf" and leading spaces. */
static bool number_syntax(const char *s, bool *integral)
{
    *integral = true;
    if (*s == '-') s++;
    if (*s == '0') {
        s++;
    } else if (is_digit(*s)) {
        while (is_digit(*s)) s++;
    } else {
        return false;
    }
    if (*s == '.') {
        *integral = false;
        if (!is_digit(*++s)) return false;
        while (is_digit(*s)) s++;
    }
    if (*s == 'e' || *s == 'E') {
        *integral = false;
        s++;
        if (*s == '+' || *s == '-') s++;
        if (!is_digit(*s)) return false;
        while (is_digit(*s)) s++;
    }
    return *s == '\0';
}

/* Shortest "%.*g" that reads back as the same value, so 0.7 prints as 0.7, not
 * 0.69999999999999996. Floats are judged at float precision. */
static double shortest(double v, bool is_float)
{
    char buf[64];
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(buf, sizeof buf, "%.*g", prec, v);
        if (is_float ? strtof(buf, NULL) == (float)v : strtod(buf, NULL) == v)
            return strtod(buf, NULL);
    }
    return v;
}

static void put_double(sbuf *s, double v)
{
    char buf[64];
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(buf, sizeof buf, "%.*g", prec, v);
        if (strtod(buf, NULL) == v) break;
    }
    sb_puts(s, buf);
}

static int64_t floor_div(int64_t a, int64_t b)
{
    return a / b - (a % b != 0 && (a < 0) != (b < 0));
}

/* Howard Hinnant's days_from_civil / civil_from_days: proleptic Gregorian, no time_t or TZ. */
static int64_t days_from_civil(int64_t y, int m, int d)
{
    y -= m <= 2;
    int64_t era = floor_div(y, 400);
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

static void civil_from_days(int64_t z, int64_t *y, int *m, int *d)
{
    z += 719468;
    int64_t era = floor_div(z, 146097);
    int64_t doe = z - era * 146097;
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    int64_t mp = (5 * doy + 2) / 153;
    *d = (int)(doy - (153 * mp + 2) / 5 + 1);
    *m = (int)(mp < 10 ? mp + 3 : mp - 9);
    *y = yoe + era * 400 + (*m <= 2);
}

static int days_in_month(int64_t y, int m)
{
    static const int days[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    return m == 2 && leap ? 29 : days[m - 1];
}

/* Fractional seconds with 0, 3, 6 or 9 digits, as the mapping prescribes. */
static void put_nanos(sbuf *s, int32_t nanos)
{
    if (nanos == 0) return;
    if (nanos % 1000000 == 0)
        sb_printf(s, ".%03d", (int)(nanos / 1000000));
    else if (nanos % 1000 == 0)
        sb_printf(s, ".%06d", (int)(nanos / 1000));
    else
        sb_printf(s, ".%09d", (int)nanos);
}

/* Reads n digits at s into *v; false if any is not a digit. */
static bool digits(const char *s, int n, int *v)
{
    *v = 0;
    for (int i = 0; i < n; i++) {
        if (!is_digit(s[i])) return false;
        *v = *v * 10 + (s[i] - '0');
    }
    return true;
}

/* Reads ".d{1,9}" at s[*i] (if present) as nanoseconds. */
static bool frac_nanos(const char *s, size_t *i, int32_t *nanos)
{
    *nanos = 0;
    if (s[*i] != '.') return true;
    int n = 0;
    int32_t v = 0;
    for ((*i)++; is_digit(s[*i]); (*i)++, n++) {
        if (n == 9) return false;
        v = v * 10 + (s[*i] - '0');
    }
    if (n == 0) return false;
    for (; n < 9; n++) v *= 10;
    *nanos = v;
    return true;
}

/* ---- scalar codecs, one row per ProtobufCType ---- */

typedef az_err (*enc_fn)(ctx *c, const ProtobufCFieldDescriptor *f, const void *p, json_t **out);
typedef az_err (*dec_fn)(ctx *c, const ProtobufCFieldDescriptor *f, json_t *j, void *p);

static az_err encode_message(ctx *c, const ProtobufCMessageDescriptor *d, const ProtobufCMessage *m,
                             json_t **out);
static az_err decode_message(ctx *c, const ProtobufCMessageDescriptor *d, json_t *j,
                             ProtobufCMessage **out);

static az_err made(ctx *c, json_t *j, json_t **out)
{
    if (!j) return nomem(c);
    *out = j;
    return AZ_OK;
}

static az_err made_sbuf(ctx *c, sbuf *s, json_t **out)
{
    json_t *j = s->oom ? NULL : json_stringn_nocheck(s->buf ? s->buf : "", s->len);
    free(s->buf);
    return made(c, j, out);
}

static az_err enc_int32(ctx *c, const ProtobufCFieldDescriptor *f, const void *p, json_t **out)
{
    (void)f;
    return made(c, json_integer(*(const int32_t *)p), out);
}

static az_err enc_uint32(ctx *c, const ProtobufCFieldDescriptor *f, const void *p, json_t **out)
{
    (void)f;
    return made(c, json_integer(*(const uint32_t *)p), out);
}

/* 64-bit integers are strings: JavaScript numbers cannot hold them exactly. */
static az_err enc_int64(ctx *c, const ProtobufCFieldDescriptor *f, const void *p, json_t **out)
{
    (void)f;
    sbuf s = {0};
    sb_printf(&s, "%" PRId64, *(const int64_t *)p);
    return made_sbuf(c, &s, out);
}

static az_err enc_uint64(ctx *c, const ProtobufCFieldDescriptor *f, const void *p, json_t **out)
{
    (void)f;
    sbuf s = {0};
    sb_printf(&s, "%" PRIu64, *(const uint64_t *)p);
    return made_sbuf(c, &s, out);
}

static az_err enc_real(ctx *c, double v, bool is_float, json_t **out)
{
    if (isnan(v)) return made(c, json_string("NaN"), out);
    if (isinf(v)) return made(c, json_string(v > 0 ? "Infinity" : "-Infinity"), out);
    return made(c, json_real(shortest(v, is_float)), out);
}

static az_err enc_float(ctx *c, const ProtobufCFieldDescriptor *f, const void *p, json_t **out)
{
    (void)f;
    return enc_real(c, *(const float *)p, true, out);
}

static az_err enc_double(ctx *c, const ProtobufCFieldDescriptor *f, const void *p, json_t **out)
{
    (void)f;
    return enc_real(c, *(const double *)p, false, out);
}

static az_err enc_bool(ctx *c, const ProtobufCFieldDescriptor *f, const void *p, json_t **out)
{
    (void)f;
    return made(c, json_boolean(*(const protobuf_c_boolean *)p), out);
}

static az_err enc_enum(ctx *c, const ProtobufCFieldDescriptor *f, const void *p, json_t **out)
{
    if (is_enum(f, "google.protobuf.NullValue")) return made(c, json_null(), out);
    int32_t v = *(const int32_t *)p;
    const ProtobufCEnumValue *ev = protobuf_c_enum_descriptor_get_value(f->descriptor, v);
    return made(c, ev ? json_string(ev->name) : json_integer(v), out); /* unknown: the number */
}

static az_err enc_string(ctx *c, const ProtobufCFieldDescriptor *f, const void *p, json_t **out)
{
    (void)f;
    const char *s = *(const char *const *)p;
    if (!s) s = "";
    size_t n = strlen(s);
    if (!az_text_utf8_valid((const char *)s, n))
        return fail(c, AZ_ERR_INVALID, "string is not valid UTF-8");
    return made(c, json_stringn_nocheck(s, n), out);
}

static az_err enc_bytes(ctx *c, const ProtobufCFieldDescriptor *f, const void *p, json_t **out)
{
    (void)f;
    const ProtobufCBinaryData *b = p;
    sbuf s = {0};
    sb_puts(&s, "");
    b64_encode(&s, b->data, b->len);
    return made_sbuf(c, &s, out);
}

static az_err enc_message(ctx *c, const ProtobufCFieldDescriptor *f, const void *p, json_t **out)
{
    return encode_message(c, f->descriptor, *(const ProtobufCMessage *const *)p, out);
}

/* An integer as sign and magnitude, from a JSON number or a numeric string. */
static az_err get_integer(ctx *c, json_t *j, bool *neg, uint64_t *mag)
{
    double d = 0;
    if (json_is_integer(j)) {
        json_int_t v = json_integer_value(j);
        *neg = v < 0;
        *mag = v < 0 ? (uint64_t)(-(v + 1)) + 1 : (uint64_t)v;
        return AZ_OK;
    } else if (json_is_real(j)) {
        d = json_real_value(j);
    } else if (json_is_string(j)) {
        const char *s = json_string_value(j);
        bool integral;
        if (!number_syntax(s, &integral))
            return fail(c, AZ_ERR_INVALID, "expected integer, got \"%s\"", s);
        if (integral) {
            *neg = *s == '-';
            *mag = 0;
            for (s += *neg; *s; s++) {
                if (*mag > (UINT64_MAX - (uint64_t)(*s - '0')) / 10)
                    return fail(c, AZ_ERR_INVALID, "integer out of range");
                *mag = *mag * 10 + (uint64_t)(*s - '0');
            }
            return AZ_OK;
        }
        d = strtod(s, NULL);
    } else {
        return fail_type(c, "integer", j);
    }
    if (!isfinite(d) || d != trunc(d))
        return fail(c, AZ_ERR_INVALID, "expected integer, got %g", d);
    *neg = d < 0;
    d = fabs(d);
    if (d >= 18446744073709551616.0) return fail(c, AZ_ERR_INVALID, "integer out of range");
    *mag = (uint64_t)d;
    return AZ_OK;
}

static az_err get_int(ctx *c, json_t *j, int64_t min, int64_t max, int64_t *out)
{
    bool neg = false;
    uint64_t mag = 0;
    az_err err = get_integer(c, j, &neg, &mag);
    if (err) return err;
    uint64_t limit = neg ? (uint64_t)(-(min + 1)) + 1 : (uint64_t)max;
    if (mag > limit) return fail(c, AZ_ERR_INVALID, "integer out of range");
    *out = !neg ? (int64_t)mag : mag == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)mag;
    return AZ_OK;
}

static az_err get_uint(ctx *c, json_t *j, uint64_t max, uint64_t *out)
{
    bool neg = false;
    az_err err = get_integer(c, j, &neg, out);
    if (err) return err;
    if ((neg && *out != 0) || *out > max) return fail(c, AZ_ERR_INVALID, "integer out of range");
    return AZ_OK;
}

static az_err dec_int32(ctx *c, const ProtobufCFieldDescriptor *f, json_t *j, void *p)
{
    (void)f;
    int64_t v = 0;
    az_err err = get_int(c, j, INT32_MIN, INT32_MAX, &v);
    if (!err) *(int32_t *)p = (int32_t)v;
    return err;
}

static az_err dec_int64(ctx *c, const ProtobufCFieldDescriptor *f, json_t *j, void *p)
{
    (void)f;
    return get_int(c, j, INT64_MIN, INT64_MAX, p);
}

static az_err dec_uint32(ctx *c, const ProtobufCFieldDescriptor *f, json_t *j, void *p)
{
    (void)f;
    uint64_t v = 0;
    az_err err = get_uint(c, j, UINT32_MAX, &v);
    if (!err) *(uint32_t *)p = (uint32_t)v;
    return err;
}

static az_err dec_uint64(ctx *c, const ProtobufCFieldDescriptor *f, json_t *j, void *p)
{
    (void)f;
    return get_uint(c, j, UINT64_MAX, p);
}

static az_err get_double(ctx *c, json_t *j, double *out)
{
    static const struct {
        const char *name;
        double value;
    } specials[] = {{"NaN", NAN}, {"Infinity", INFINITY}, {"-Infinity", -INFINITY}};
    if (json_is_number(j)) {
        *out = json_number_value(j);
        return AZ_OK;
    }
    if (!json_is_string(j)) return fail_type(c, "number", j);
    const char *s = json_string_value(j);
    for (size_t i = 0; i < sizeof specials / sizeof specials[0]; i++)
        if (strcmp(s, specials[i].name) == 0) return *out = specials[i].value, AZ_OK;
    bool integral;
    if (!number_syntax(s, &integral))
        return fail(c, AZ_ERR_INVALID, "expected number, got \"%s\"", s);
    *out = strtod(s, NULL);
    if (isinf(*out)) return fail(c, AZ_ERR_INVALID, "number out of range");
    return AZ_OK;
}

static az_err dec_float(ctx *c, const ProtobufCFieldDescriptor *f, json_t *j, void *p)
{
    (void)f;
    double d = 0;
    az_err err = get_double(c, j, &d);
    if (err) return err;
    if (isfinite(d) && fabs(d) > FLT_MAX)
        return fail(c, AZ_ERR_INVALID, "number out of float range");
    *(float *)p = (float)d;
    return AZ_OK;
}

static az_err dec_double(ctx *c, const ProtobufCFieldDescriptor *f, json_t *j, void *p)
{
    (void)f;
    return get_double(c, j, p);
}

static az_err dec_bool(ctx *c, const ProtobufCFieldDescriptor *f, json_t *j, void *p)
{
    (void)f;
    if (!json_is_boolean(j)) return fail_type(c, "boolean", j);
    *(protobuf_c_boolean *)p = json_is_true(j);
    return AZ_OK;
}

static az_err dec_enum(ctx *c, const ProtobufCFieldDescriptor *f, json_t *j, void *p)
{
    const ProtobufCEnumDescriptor *ed = f->descriptor;
    if (json_is_null(j) && is_enum(f, "google.protobuf.NullValue")) {
        *(int32_t *)p = 0;
        return AZ_OK;
    }
    if (json_is_string(j)) {
        const ProtobufCEnumValue *ev =
            protobuf_c_enum_descriptor_get_value_by_name(ed, json_string_value(j));
        if (!ev)
            return fail(c, AZ_ERR_INVALID, "unknown value \"%s\" for enum %s", json_string_value(j),
                        ed->name);
        *(int32_t *)p = ev->value;
        return AZ_OK;
    }
    if (!json_is_number(j)) return fail_type(c, "enum name or number", j);
    int64_t v = 0;
    az_err err = get_int(c, j, INT32_MIN, INT32_MAX, &v); /* proto3 enums are open */
    if (!err) *(int32_t *)p = (int32_t)v;
    return err;
}

static az_err dec_string(ctx *c, const ProtobufCFieldDescriptor *f, json_t *j, void *p)
{
    (void)f;
    if (!json_is_string(j)) return fail_type(c, "string", j);
    /* jansson has already rejected invalid UTF-8, lone surrogates and \u0000 */
    char *s = pb_strndup(c, json_string_value(j), json_string_length(j));
    if (!s) return nomem(c);
    *(char **)p = s;
    return AZ_OK;
}

static az_err dec_bytes(ctx *c, const ProtobufCFieldDescriptor *f, json_t *j, void *p)
{
    (void)f;
    if (!json_is_string(j)) return fail_type(c, "base64 string", j);
    size_t n = json_string_length(j);
    ProtobufCBinaryData b = {0, NULL};
    if (n > 0) {
        b.data = pb_alloc(c, n / 4 * 3 + 3);
        if (!b.data) return nomem(c);
        long long len = b64_decode(json_string_value(j), n, b.data);
        if (len < 0) {
            c->alloc->free(c->alloc->allocator_data, b.data);
            return fail(c, AZ_ERR_INVALID, "invalid base64");
        }
        b.len = (size_t)len;
    }
    *(ProtobufCBinaryData *)p = b;
    return AZ_OK;
}

static az_err dec_message(ctx *c, const ProtobufCFieldDescriptor *f, json_t *j, void *p)
{
    ProtobufCMessage *sm;
    az_err err = decode_message(c, f->descriptor, j, &sm);
    if (!err) *(ProtobufCMessage **)p = sm;
    return err;
}

static const struct scalar {
    size_t size; /* of one element in a repeated array */
    enc_fn enc;
    dec_fn dec;
} scalars[] = {
    [PROTOBUF_C_TYPE_INT32] = {sizeof(int32_t), enc_int32, dec_int32},
    [PROTOBUF_C_TYPE_SINT32] = {sizeof(int32_t), enc_int32, dec_int32},
    [PROTOBUF_C_TYPE_SFIXED32] = {sizeof(int32_t), enc_int32, dec_int32},
    [PROTOBUF_C_TYPE_INT64] = {sizeof(int64_t), enc_int64, dec_int64},
    [PROTOBUF_C_TYPE_SINT64] = {sizeof(int64_t), enc_int64, dec_int64},
    [PROTOBUF_C_TYPE_SFIXED64] = {sizeof(int64_t), enc_int64, dec_int64},
    [PROTOBUF_C_TYPE_UINT32] = {sizeof(uint32_t), enc_uint32, dec_uint32},
    [PROTOBUF_C_TYPE_FIXED32] = {sizeof(uint32_t), enc_uint32, dec_uint32},
    [PROTOBUF_C_TYPE_UINT64] = {sizeof(uint64_t), enc_uint64, dec_uint64},
    [PROTOBUF_C_TYPE_FIXED64] = {sizeof(uint64_t), enc_uint64, dec_uint64},
    [PROTOBUF_C_TYPE_FLOAT] = {sizeof(float), enc_float, dec_float},
    [PROTOBUF_C_TYPE_DOUBLE] = {sizeof(double), enc_double, dec_double},
    [PROTOBUF_C_TYPE_BOOL] = {sizeof(protobuf_c_boolean), enc_bool, dec_bool},
    [PROTOBUF_C_TYPE_ENUM] = {sizeof(int32_t), enc_enum, dec_enum},
    [PROTOBUF_C_TYPE_STRING] = {sizeof(char *), enc_string, dec_string},
    [PROTOBUF_C_TYPE_BYTES] = {sizeof(ProtobufCBinaryData), enc_bytes, dec_bytes},
    [PROTOBUF_C_TYPE_MESSAGE] = {sizeof(ProtobufCMessage *), enc_message, dec_message},
};

/* ---- fields: presence, repeated, maps ---- */

static bool is_zero(const ProtobufCFieldDescriptor *f, const char *slot)
{
    if (f->type == PROTOBUF_C_TYPE_STRING) {
        const char *s = *(const char *const *)slot;
        return !s || !*s;
    }
    if (f->type == PROTOBUF_C_TYPE_BYTES) return ((const ProtobufCBinaryData *)slot)->len == 0;
    for (size_t i = 0; i < scalars[f->type].size; i++) /* -0.0 counts as set, as in protobuf */
        if (slot[i]) return false;
    return true;
}

static bool field_present(const ProtobufCMessage *m, const ProtobufCFieldDescriptor *f)
{
    if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) return oneof_case(m, f) == f->id;
    switch (f->label) {
    case PROTOBUF_C_LABEL_REQUIRED:
        return true;
    case PROTOBUF_C_LABEL_REPEATED:
        return *(const size_t *)CQSLOT(m, f) > 0;
    case PROTOBUF_C_LABEL_OPTIONAL:
        if (f->type == PROTOBUF_C_TYPE_STRING || f->type == PROTOBUF_C_TYPE_MESSAGE) {
            const void *p = *(const void *const *)CSLOT(m, f);
            return p && p != f->default_value; /* as protobuf-c decides when packing */
        }
        return *(const protobuf_c_boolean *)CQSLOT(m, f);
    case PROTOBUF_C_LABEL_NONE:
    default:
        return !is_zero(f, CSLOT(m, f));
    }
}

static void map_key_string(sbuf *s, const ProtobufCFieldDescriptor *kf, const char *p)
{
    switch (kf->type) {
    case PROTOBUF_C_TYPE_STRING:
        sb_puts(s, *(const char *const *)p ? *(const char *const *)p : "");
        break;
    case PROTOBUF_C_TYPE_BOOL:
        sb_puts(s, *(const protobuf_c_boolean *)p ? "true" : "false");
        break;
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
        sb_printf(s, "%" PRId64, *(const int64_t *)p);
        break;
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64:
        sb_printf(s, "%" PRIu64, *(const uint64_t *)p);
        break;
    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_FIXED32:
        sb_printf(s, "%" PRIu32, *(const uint32_t *)p);
        break;
    default: /* int32, sint32, sfixed32; other types cannot be map keys */
        sb_printf(s, "%" PRId32, *(const int32_t *)p);
        break;
    }
}

static az_err encode_map(ctx *c, const ProtobufCFieldDescriptor *f, const ProtobufCMessage *m,
                         json_t **out)
{
    const ProtobufCMessageDescriptor *ed = f->descriptor;
    const ProtobufCFieldDescriptor *kf = &ed->fields[0], *vf = &ed->fields[1];
    size_t n = *(const size_t *)CQSLOT(m, f);
    ProtobufCMessage *const *entries = *(ProtobufCMessage *const *const *)CSLOT(m, f);
    az_err err = enter(c);
    if (err) return err;
    json_t *obj = json_object();
    sbuf key = {0};
    if (!obj) err = nomem(c);
    for (size_t i = 0; !err && i < n; i++) {
        if (!entries[i]) continue;
        key.len = 0;
        sb_puts(&key, "");
        map_key_string(&key, kf, CSLOT(entries[i], kf));
        if (key.oom) {
            err = nomem(c);
            break;
        }
        size_t mark = path_map_key(c, key.buf);
        json_t *v = NULL;
        if (!az_text_utf8_valid((const char *)key.buf, key.len))
            err = fail(c, AZ_ERR_INVALID, "map key is not valid UTF-8");
        else
            err = scalars[vf->type].enc(c, vf, CSLOT(entries[i], vf), &v);
        if (!err && json_object_set_new_nocheck(obj, key.buf, v) != 0) err = nomem(c);
        path_pop(c, mark);
    }
    free(key.buf);
    leave(c);
    if (err) {
        json_decref(obj);
        return err;
    }
    *out = obj;
    return AZ_OK;
}

static az_err encode_array(ctx *c, const ProtobufCFieldDescriptor *f, const ProtobufCMessage *m,
                           json_t **out)
{
    size_t n = *(const size_t *)CQSLOT(m, f), size = scalars[f->type].size;
    const char *arr = *(const char *const *)CSLOT(m, f);
    az_err err = enter(c);
    if (err) return err;
    json_t *a = json_array();
    if (!a) err = nomem(c);
    for (size_t i = 0; !err && i < n; i++) {
        size_t mark = path_index(c, i);
        json_t *v = NULL;
        err = scalars[f->type].enc(c, f, arr + i * size, &v);
        if (!err && json_array_append_new(a, v) != 0) err = nomem(c);
        path_pop(c, mark);
    }
    leave(c);
    if (err) {
        json_decref(a);
        return err;
    }
    *out = a;
    return AZ_OK;
}

/* Encodes field f of m whether or not it is set. */
static az_err encode_field(ctx *c, const ProtobufCFieldDescriptor *f, const ProtobufCMessage *m,
                           json_t **out)
{
    if (f->label == PROTOBUF_C_LABEL_REPEATED)
        return is_map(m->descriptor, f) ? encode_map(c, f, m, out) : encode_array(c, f, m, out);
    return scalars[f->type].enc(c, f, CSLOT(m, f), out);
}

static az_err encode_fields(ctx *c, const ProtobufCMessage *m, json_t **out)
{
    const ProtobufCMessageDescriptor *d = m->descriptor;
    az_err err = enter(c);
    if (err) return err;
    json_t *obj = json_object();
    sbuf key = {0};
    if (!obj) err = nomem(c);
    for (unsigned i = 0; !err && i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &d->fields[i];
        bool present = field_present(m, f);
        /* unset oneof members stay out even with EMIT_DEFAULTS: they would look set */
        if (!present &&
            (!(c->flags & AZ_PBJSON_EMIT_DEFAULTS) || (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF)))
            continue;
        size_t mark = path_field(c, f->name);
        json_t *v = NULL;
        if (!present && f->type == PROTOBUF_C_TYPE_MESSAGE && f->label != PROTOBUF_C_LABEL_REPEATED)
            err = made(c, json_null(), &v);
        else
            err = encode_field(c, f, m, &v);
        if (!err) {
            key.len = 0;
            sb_puts(&key, "");
            if (c->flags & AZ_PBJSON_PROTO_NAMES)
                sb_puts(&key, f->name);
            else
                sb_put_json_name(&key, f->name);
            if (key.oom || json_object_set_new_nocheck(obj, key.buf, v) != 0) err = nomem(c);
        }
        path_pop(c, mark);
    }
    free(key.buf);
    leave(c);
    if (err) {
        json_decref(obj);
        return err;
    }
    *out = obj;
    return AZ_OK;
}

static az_err decode_array(ctx *c, const ProtobufCFieldDescriptor *f, json_t *j,
                           ProtobufCMessage *m)
{
    if (!json_is_array(j)) return fail_type(c, "array", j);
    size_t n = json_array_size(j), size = scalars[f->type].size;
    if (n == 0) return AZ_OK;
    az_err err = enter(c);
    if (err) return err;
    char *arr = n > SIZE_MAX / size ? NULL : pb_alloc(c, n * size);
    if (!arr) {
        leave(c);
        return nomem(c);
    }
    memset(arr, 0, n * size);
    /* owned by m from here; the count grows per decoded element so a failure frees exactly those */
    *(char **)SLOT(m, f) = arr;
    size_t *count = (size_t *)QSLOT(m, f);
    *count = 0;
    for (size_t i = 0; !err && i < n; i++) {
        json_t *el = json_array_get(j, i);
        size_t mark = path_index(c, i);
        if (json_is_null(el) && !null_is_value(f))
            err = fail(c, AZ_ERR_INVALID, "null is not allowed in a list");
        else
            err = scalars[f->type].dec(c, f, el, arr + i * size);
        path_pop(c, mark);
        if (!err) (*count)++;
    }
    leave(c);
    return err;
}

static az_err decode_map_key(ctx *c, const ProtobufCFieldDescriptor *kf, const char *key, void *p)
{
    if (kf->type == PROTOBUF_C_TYPE_BOOL) {
        if (strcmp(key, "true") != 0 && strcmp(key, "false") != 0)
            return fail(c, AZ_ERR_INVALID, "map key must be true or false");
        *(protobuf_c_boolean *)p = strcmp(key, "true") == 0;
        return AZ_OK;
    }
    /* numeric keys arrive as strings, which the integer decoders accept */
    json_t *k = json_string_nocheck(key);
    if (!k) return nomem(c);
    az_err err = scalars[kf->type].dec(c, kf, k, p);
    json_decref(k);
    return err;
}

static az_err decode_map(ctx *c, const ProtobufCFieldDescriptor *f, json_t *j, ProtobufCMessage *m)
{
    if (!json_is_object(j)) return fail_type(c, "object", j);
    const ProtobufCMessageDescriptor *ed = f->descriptor;
    const ProtobufCFieldDescriptor *kf = &ed->fields[0], *vf = &ed->fields[1];
    size_t n = json_object_size(j);
    if (n == 0) return AZ_OK;
    az_err err = enter(c);
    if (err) return err;
    ProtobufCMessage **arr = n > SIZE_MAX / sizeof *arr ? NULL : pb_alloc(c, n * sizeof *arr);
    if (!arr) {
        leave(c);
        return nomem(c);
    }
    *(ProtobufCMessage ***)SLOT(m, f) = arr;
    size_t *count = (size_t *)QSLOT(m, f);
    *count = 0;
    const char *key;
    json_t *val;
    json_object_foreach(j, key, val)
    {
        size_t mark = path_map_key(c, key);
        ProtobufCMessage *e = pb_alloc(c, ed->sizeof_message);
        if (!e)
            err = nomem(c);
        else {
            protobuf_c_message_init(ed, e);
            arr[(*count)++] = e; /* owned by m before anything can fail */
            err = decode_map_key(c, kf, key, SLOT(e, kf));
            if (!err) {
                set_presence(e, kf);
                if (json_is_null(val) && !null_is_value(vf))
                    err = fail(c, AZ_ERR_INVALID, "null is not allowed as a map value");
                else
                    err = scalars[vf->type].dec(c, vf, val, SLOT(e, vf));
            }
            if (!err) set_presence(e, vf);
        }
        path_pop(c, mark);
        if (err) break;
    }
    leave(c);
    return err;
}

static az_err decode_field(ctx *c, const ProtobufCFieldDescriptor *f, json_t *j,
                           ProtobufCMessage *m)
{
    if (f->label == PROTOBUF_C_LABEL_REPEATED) {
        if (json_is_null(j)) return AZ_OK;
        return is_map(m->descriptor, f) ? decode_map(c, f, j, m) : decode_array(c, f, j, m);
    }
    if (json_is_null(j) && !null_is_value(f)) return AZ_OK; /* null means default */
    if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) {
        uint32_t set = oneof_case(m, f);
        if (set != 0 && set != f->id) {
            const ProtobufCFieldDescriptor *other =
                protobuf_c_message_descriptor_get_field(m->descriptor, set);
            sbuf name = {0};
            sb_put_json_name(&name, other ? other->name : "?");
            az_err err = fail(c, AZ_ERR_INVALID, "oneof already set by %s",
                              name.buf ? name.buf : "another field");
            free(name.buf);
            return err;
        }
    }
    az_err err = scalars[f->type].dec(c, f, j, SLOT(m, f));
    if (!err) set_presence(m, f);
    return err;
}

static az_err decode_fields(ctx *c, json_t *j, ProtobufCMessage *m)
{
    const ProtobufCMessageDescriptor *d = m->descriptor;
    if (!json_is_object(j)) return fail_type(c, "object", j);
    az_err err = enter(c);
    if (err) return err;
    unsigned char *seen = calloc(d->n_fields + 1, 1);
    if (!seen) {
        leave(c);
        return nomem(c);
    }
    const char *key;
    json_t *val;
    json_object_foreach(j, key, val)
    {
        const ProtobufCFieldDescriptor *f = find_field(d, key);
        size_t mark;
        if (!f) {
            mark = path_key(c, key);
            err = fail(c, AZ_ERR_INVALID, "unknown field");
        } else {
            mark = path_field(c, f->name);
            if (seen[f - d->fields]) /* jansson rejects exact duplicates; this is name + jsonName */
                err = fail(c, AZ_ERR_INVALID, "field given twice");
            else
                err = decode_field(c, f, val, m);
            seen[f - d->fields] = 1;
        }
        path_pop(c, mark);
        if (err) break;
    }
    free(seen);
    leave(c);
    return err;
}

/* ---- well-known types ---- */

static az_err enc_any(ctx *c, const ProtobufCMessage *m, json_t **out)
{
    (void)m, (void)out;
    return fail(c, AZ_ERR_UNIMPLEMENTED, "google.protobuf.Any is not supported");
}

static az_err dec_any(ctx *c, json_t *j, ProtobufCMessage *m)
{
    (void)j, (void)m;
    return fail(c, AZ_ERR_UNIMPLEMENTED, "google.protobuf.Any is not supported");
}

static az_err enc_timestamp(ctx *c, const ProtobufCMessage *m, json_t **out)
{
    const ProtobufCFieldDescriptor *fs = wkt_field(c, m->descriptor, "seconds"),
                                   *fn = wkt_field(c, m->descriptor, "nanos");
    if (!fs || !fn) return AZ_ERR_INTERNAL;
    int64_t secs = *(const int64_t *)CSLOT(m, fs);
    int32_t nanos = *(const int32_t *)CSLOT(m, fn);
    if (secs < TS_MIN_SECONDS || secs > TS_MAX_SECONDS || nanos < 0 || nanos > NANOS_MAX)
        return fail(c, AZ_ERR_INVALID,
                    "timestamp out of range (seconds %" PRId64 ", nanos %" PRId32 ")", secs, nanos);
    int64_t days = floor_div(secs, 86400), rem = secs - days * 86400, y;
    int mo, d;
    civil_from_days(days, &y, &mo, &d);
    sbuf s = {0};
    sb_printf(&s, "%04d-%02d-%02dT%02d:%02d:%02d", (int)y, mo, d, (int)(rem / 3600),
              (int)(rem / 60 % 60), (int)(rem % 60));
    put_nanos(&s, nanos);
    sb_putc(&s, 'Z');
    return made_sbuf(c, &s, out);
}

/* RFC 3339: YYYY-MM-DDTHH:MM:SS[.f{1,9}](Z|±HH:MM). */
static az_err dec_timestamp(ctx *c, json_t *j, ProtobufCMessage *m)
{
    if (!json_is_string(j)) return fail_type(c, "RFC 3339 timestamp string", j);
    const char *s = json_string_value(j);
    size_t len = json_string_length(j), i = 19;
    int y, mo, d, h, mi, sec, oh = 0, om = 0, sign = 0;
    int32_t nanos;
    bool ok = len >= 20 && digits(s, 4, &y) && s[4] == '-' && digits(s + 5, 2, &mo) &&
              s[7] == '-' && digits(s + 8, 2, &d) && s[10] == 'T' && digits(s + 11, 2, &h) &&
              s[13] == ':' && digits(s + 14, 2, &mi) && s[16] == ':' && digits(s + 17, 2, &sec) &&
              frac_nanos(s, &i, &nanos);
    if (ok && s[i] == 'Z') {
        i++;
    } else if (ok && (s[i] == '+' || s[i] == '-') && len - i >= 6) {
        sign = s[i] == '-' ? -1 : 1;
        ok = digits(s + i + 1, 2, &oh) && s[i + 3] == ':' && digits(s + i + 4, 2, &om) &&
             oh <= 23 && om <= 59;
        i += 6;
    } else {
        ok = false;
    }
    ok = ok && i == len && y >= 1 && mo >= 1 && mo <= 12 && d >= 1 && d <= days_in_month(y, mo) &&
         h <= 23 && mi <= 59 && sec <= 59;
    if (!ok)
        return fail(c, AZ_ERR_INVALID,
                    "invalid timestamp \"%s\" (want RFC 3339 like 2026-11-24T05:13:32.123Z)", s);
    int64_t secs =
        days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + sec - sign * (oh * 3600 + om * 60);
    if (secs < TS_MIN_SECONDS || secs > TS_MAX_SECONDS)
        return fail(c, AZ_ERR_INVALID, "timestamp \"%s\" outside 0001-01-01..9999-12-31", s);
    const ProtobufCFieldDescriptor *fs = wkt_field(c, m->descriptor, "seconds"),
                                   *fn = wkt_field(c, m->descriptor, "nanos");
    if (!fs || !fn) return AZ_ERR_INTERNAL;
    *(int64_t *)SLOT(m, fs) = secs;
    *(int32_t *)SLOT(m, fn) = nanos;
    return AZ_OK;
}

static az_err enc_duration(ctx *c, const ProtobufCMessage *m, json_t **out)
{
    const ProtobufCFieldDescriptor *fs = wkt_field(c, m->descriptor, "seconds"),
                                   *fn = wkt_field(c, m->descriptor, "nanos");
    if (!fs || !fn) return AZ_ERR_INTERNAL;
    int64_t secs = *(const int64_t *)CSLOT(m, fs);
    int32_t nanos = *(const int32_t *)CSLOT(m, fn);
    if (secs < -DUR_MAX_SECONDS || secs > DUR_MAX_SECONDS || nanos < -NANOS_MAX ||
        nanos > NANOS_MAX || (secs > 0 && nanos < 0) || (secs < 0 && nanos > 0))
        return fail(c, AZ_ERR_INVALID,
                    "duration out of range (seconds %" PRId64 ", nanos %" PRId32 ")", secs, nanos);
    sbuf s = {0};
    sb_printf(&s, "%s%" PRId64, secs < 0 || nanos < 0 ? "-" : "", secs < 0 ? -secs : secs);
    put_nanos(&s, nanos < 0 ? -nanos : nanos);
    sb_putc(&s, 's');
    return made_sbuf(c, &s, out);
}

/* "-?\d+(\.\d{1,9})?s" */
static az_err dec_duration(ctx *c, json_t *j, ProtobufCMessage *m)
{
    if (!json_is_string(j)) return fail_type(c, "duration string like \"1.5s\"", j);
    const char *s = json_string_value(j);
    size_t len = json_string_length(j), i = s[0] == '-';
    bool neg = i == 1, ok = is_digit(s[i]);
    int64_t secs = 0;
    int32_t nanos = 0;
    for (; ok && is_digit(s[i]); i++) {
        secs = secs * 10 + (s[i] - '0');
        if (secs > DUR_MAX_SECONDS) break;
    }
    if (secs > DUR_MAX_SECONDS)
        return fail(c, AZ_ERR_INVALID, "duration \"%s\" beyond ±%" PRId64 "s", s, DUR_MAX_SECONDS);
    ok = ok && frac_nanos(s, &i, &nanos) && s[i] == 's' && i + 1 == len;
    if (!ok) return fail(c, AZ_ERR_INVALID, "invalid duration \"%s\" (want e.g. \"1.5s\")", s);
    const ProtobufCFieldDescriptor *fs = wkt_field(c, m->descriptor, "seconds"),
                                   *fn = wkt_field(c, m->descriptor, "nanos");
    if (!fs || !fn) return AZ_ERR_INTERNAL;
    *(int64_t *)SLOT(m, fs) = neg ? -secs : secs;
    *(int32_t *)SLOT(m, fn) = neg ? -nanos : nanos;
    return AZ_OK;
}

static az_err enc_field_mask(ctx *c, const ProtobufCMessage *m, json_t **out)
{
    const ProtobufCFieldDescriptor *f = wkt_field(c, m->descriptor, "paths");
    if (!f) return AZ_ERR_INTERNAL;
    size_t n = *(const size_t *)CQSLOT(m, f);
    char *const *paths = *(char *const *const *)CSLOT(m, f);
    sbuf s = {0};
    sb_puts(&s, "");
    for (size_t i = 0; i < n; i++) {
        const char *p = paths[i] ? paths[i] : "";
        /* only snake_case paths survive the trip to lowerCamelCase and back */
        for (const char *q = p; *q; q++) {
            if (is_upper(*q) || (*q == '_' && !is_lower(q[1]))) {
                free(s.buf);
                return fail(c, AZ_ERR_INVALID, "field mask path \"%s\" has no JSON form", p);
            }
        }
        if (i) sb_putc(&s, ',');
        sb_put_json_name(&s, p);
    }
    return made_sbuf(c, &s, out);
}

static az_err dec_field_mask(ctx *c, json_t *j, ProtobufCMessage *m)
{
    if (!json_is_string(j)) return fail_type(c, "field mask string like \"a.b,cD\"", j);
    const ProtobufCFieldDescriptor *f = wkt_field(c, m->descriptor, "paths");
    if (!f) return AZ_ERR_INTERNAL;
    const char *s = json_string_value(j);
    if (!*s) return AZ_OK;
    size_t n = 1;
    for (const char *q = s; *q; q++) n += *q == ',';
    char **paths = pb_alloc(c, n * sizeof *paths);
    if (!paths) return nomem(c);
    *(char ***)SLOT(m, f) = paths;
    size_t *count = (size_t *)QSLOT(m, f);
    *count = 0;
    for (const char *start = s;; start++) {
        const char *end = strchr(start, ',');
        size_t len = end ? (size_t)(end - start) : strlen(start), upper = 0;
        for (size_t k = 0; k < len; k++) {
            if (start[k] == '_')
                return fail(c, AZ_ERR_INVALID, "field mask path \"%.*s\" is not lowerCamelCase",
                            (int)len, start);
            upper += is_upper(start[k]);
        }
        if (len == 0) return fail(c, AZ_ERR_INVALID, "empty path in field mask \"%s\"", s);
        char *p = pb_alloc(c, len + upper + 1), *o = p;
        if (!p) return nomem(c);
        for (size_t k = 0; k < len; k++) {
            if (is_upper(start[k]))
                *o++ = '_', *o++ = (char)(start[k] - 'A' + 'a');
            else
                *o++ = start[k];
        }
        *o = '\0';
        paths[(*count)++] = p;
        if (!end) break;
        start = end;
    }
    return AZ_OK;
}

/* DoubleValue, StringValue, ...: the bare value of their one field. */
static az_err enc_wrapper(ctx *c, const ProtobufCMessage *m, json_t **out)
{
    const ProtobufCFieldDescriptor *f = wkt_field(c, m->descriptor, "value");
    if (!f) return AZ_ERR_INTERNAL;
    return scalars[f->type].enc(c, f, CSLOT(m, f), out);
}

static az_err dec_wrapper(ctx *c, json_t *j, ProtobufCMessage *m)
{
    const ProtobufCFieldDescriptor *f = wkt_field(c, m->descriptor, "value");
    if (!f) return AZ_ERR_INTERNAL;
    return scalars[f->type].dec(c, f, j, SLOT(m, f));
}

/* Struct is its map<string, Value> "fields"; ListValue its repeated Value "values". */
static az_err enc_struct(ctx *c, const ProtobufCMessage *m, json_t **out)
{
    const ProtobufCFieldDescriptor *f = wkt_field(c, m->descriptor, "fields");
    return f ? encode_field(c, f, m, out) : AZ_ERR_INTERNAL;
}

static az_err dec_struct(ctx *c, json_t *j, ProtobufCMessage *m)
{
    const ProtobufCFieldDescriptor *f = wkt_field(c, m->descriptor, "fields");
    if (!f) return AZ_ERR_INTERNAL;
    return json_is_object(j) ? decode_field(c, f, j, m) : fail_type(c, "object", j);
}

static az_err enc_list(ctx *c, const ProtobufCMessage *m, json_t **out)
{
    const ProtobufCFieldDescriptor *f = wkt_field(c, m->descriptor, "values");
    return f ? encode_field(c, f, m, out) : AZ_ERR_INTERNAL;
}

static az_err dec_list(ctx *c, json_t *j, ProtobufCMessage *m)
{
    const ProtobufCFieldDescriptor *f = wkt_field(c, m->descriptor, "values");
    if (!f) return AZ_ERR_INTERNAL;
    return json_is_array(j) ? decode_field(c, f, j, m) : fail_type(c, "array", j);
}

static az_err enc_value(ctx *c, const ProtobufCMessage *m, json_t **out)
{
    const ProtobufCMessageDescriptor *d = m->descriptor;
    for (unsigned i = 0; i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &d->fields[i];
        if (!(f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) || oneof_case(m, f) != f->id) continue;
        if (f->type == PROTOBUF_C_TYPE_DOUBLE && !isfinite(*(const double *)CSLOT(m, f)))
            return fail(c, AZ_ERR_INVALID, "google.protobuf.Value cannot hold NaN or Infinity");
        return encode_field(c, f, m, out);
    }
    return fail(c, AZ_ERR_INVALID, "google.protobuf.Value has no kind set");
}

static az_err dec_value(ctx *c, json_t *j, ProtobufCMessage *m)
{
    static const char *const kinds[] = {
        [JSON_NULL] = "null_value",     [JSON_INTEGER] = "number_value",
        [JSON_REAL] = "number_value",   [JSON_STRING] = "string_value",
        [JSON_TRUE] = "bool_value",     [JSON_FALSE] = "bool_value",
        [JSON_OBJECT] = "struct_value", [JSON_ARRAY] = "list_value",
    };
    const ProtobufCFieldDescriptor *f = wkt_field(c, m->descriptor, kinds[json_typeof(j)]);
    if (!f) return AZ_ERR_INTERNAL;
    az_err err = scalars[f->type].dec(c, f, j, SLOT(m, f));
    if (!err) set_presence(m, f);
    return err;
}

static const struct wkt {
    const char *name;
    az_err (*enc)(ctx *c, const ProtobufCMessage *m, json_t **out);
    az_err (*dec)(ctx *c, json_t *j, ProtobufCMessage *m);
} wkts[] = {
    {"google.protobuf.Any", enc_any, dec_any},
    {"google.protobuf.Timestamp", enc_timestamp, dec_timestamp},
    {"google.protobuf.Duration", enc_duration, dec_duration},
    {"google.protobuf.FieldMask", enc_field_mask, dec_field_mask},
    {"google.protobuf.Struct", enc_struct, dec_struct},
    {"google.protobuf.ListValue", enc_list, dec_list},
    {"google.protobuf.Value", enc_value, dec_value},
    {"google.protobuf.DoubleValue", enc_wrapper, dec_wrapper},
    {"google.protobuf.FloatValue", enc_wrapper, dec_wrapper},
    {"google.protobuf.Int64Value", enc_wrapper, dec_wrapper},
    {"google.protobuf.UInt64Value", enc_wrapper, dec_wrapper},
    {"google.protobuf.Int32Value", enc_wrapper, dec_wrapper},
    {"google.protobuf.UInt32Value", enc_wrapper, dec_wrapper},
    {"google.protobuf.BoolValue", enc_wrapper, dec_wrapper},
    {"google.protobuf.StringValue", enc_wrapper, dec_wrapper},
    {"google.protobuf.BytesValue", enc_wrapper, dec_wrapper},
    /* Empty needs no row: as an ordinary message without fields it already maps to {} */
};

static const struct wkt *find_wkt(const ProtobufCMessageDescriptor *d)
{
    if (strncmp(d->name, "google.protobuf.", 16) != 0) return NULL;
    for (size_t i = 0; i < sizeof wkts / sizeof wkts[0]; i++)
        if (strcmp(d->name, wkts[i].name) == 0) return &wkts[i];
    return NULL;
}

/* ---- messages ---- */

static az_err encode_message(ctx *c, const ProtobufCMessageDescriptor *d, const ProtobufCMessage *m,
                             json_t **out)
{
    ProtobufCMessage *tmp = NULL;
    if (!m) { /* a NULL element or map value stands for the empty message */
        tmp = calloc(1, d->sizeof_message);
        if (!tmp) return nomem(c);
        protobuf_c_message_init(d, tmp);
        m = tmp;
    }
    const struct wkt *w = find_wkt(d);
    az_err err = w ? w->enc(c, m, out) : encode_fields(c, m, out);
    free(tmp);
    return err;
}

static az_err decode_message(ctx *c, const ProtobufCMessageDescriptor *d, json_t *j,
                             ProtobufCMessage **out)
{
    *out = NULL;
    ProtobufCMessage *m = pb_alloc(c, d->sizeof_message);
    if (!m) return nomem(c);
    protobuf_c_message_init(d, m);
    const struct wkt *w = find_wkt(d);
    az_err err = w ? w->dec(c, j, m) : decode_fields(c, j, m);
    if (err) {
        protobuf_c_message_free_unpacked(m, c->alloc);
        return err;
    }
    *out = m;
    return AZ_OK;
}

/* ---- printer: jansson's own prints 0.1 as 0.10000000000000001 ---- */

static void dump_string(sbuf *s, const char *p, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    sb_putc(s, '"');
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)p[i];
        if (ch == '"' || ch == '\\') {
            char e[2] = {'\\', (char)ch};
            sb_putn(s, e, 2);
        } else if (ch < 0x20) {
            char e[6] = {'\\', 'u', '0', '0', hex[ch >> 4], hex[ch & 15]};
            static const char short_esc[] = {
                ['\b'] = 'b', ['\f'] = 'f', ['\n'] = 'n', ['\r'] = 'r', ['\t'] = 't'};
            if (ch < sizeof short_esc && short_esc[ch])
                sb_putn(s, (char[]){'\\', short_esc[ch]}, 2);
            else
                sb_putn(s, e, 6);
        } else {
            sb_putc(s, (char)ch);
        }
    }
    sb_putc(s, '"');
}

static void dump_indent(sbuf *s, bool pretty, int level)
{
    if (!pretty) return;
    sb_putc(s, '\n');
    for (int i = 0; i < level; i++) sb_puts(s, "  ");
}

/* Recursion is bounded: the tree was built under the MAX_DEPTH check. */
static void dump(sbuf *s, const json_t *j, bool pretty, int level)
{
    switch (json_typeof(j)) {
    case JSON_OBJECT: {
        if (json_object_size(j) == 0) {
            sb_puts(s, "{}");
            break;
        }
        sb_putc(s, '{');
        const char *key;
        json_t *v;
        bool first = true;
        json_object_foreach((json_t *)j, key, v)
        {
            if (!first) sb_putc(s, ',');
            first = false;
            dump_indent(s, pretty, level + 1);
            dump_string(s, key, strlen(key));
            sb_puts(s, pretty ? ": " : ":");
            dump(s, v, pretty, level + 1);
        }
        dump_indent(s, pretty, level);
        sb_putc(s, '}');
        break;
    }
    case JSON_ARRAY:
        if (json_array_size(j) == 0) {
            sb_puts(s, "[]");
            break;
        }
        sb_putc(s, '[');
        for (size_t i = 0; i < json_array_size(j); i++) {
            if (i) sb_putc(s, ',');
            dump_indent(s, pretty, level + 1);
            dump(s, json_array_get(j, i), pretty, level + 1);
        }
        dump_indent(s, pretty, level);
        sb_putc(s, ']');
        break;
    case JSON_STRING:
        dump_string(s, json_string_value(j), json_string_length(j));
        break;
    case JSON_INTEGER:
        sb_printf(s, "%" JSON_INTEGER_FORMAT, json_integer_value(j));
        break;
    case JSON_REAL:
        put_double(s, json_real_value(j));
        break;
    case JSON_TRUE:
        sb_puts(s, "true");
        break;
    case JSON_FALSE:
        sb_puts(s, "false");
        break;
    case JSON_NULL:
        sb_puts(s, "null");
        break;
    }
}

/* ---- API ---- */

az_err az_pbjson_encode(const ProtobufCMessage *m, int flags, char **out, char *msg)
{
    if (out) *out = NULL;
    if (!m || !out || !m->descriptor ||
        m->descriptor->magic != PROTOBUF_C__MESSAGE_DESCRIPTOR_MAGIC)
        return az_fail(msg, AZ_ERR_INTERNAL, "az_pbjson_encode: no message or no output");
    ctx c = {.alloc = &sys_allocator, .flags = flags, .msg = msg};
    path_root(&c, m->descriptor);
    json_t *j = NULL;
    az_err err = encode_message(&c, m->descriptor, m, &j);
    if (!err) {
        sbuf s = {0};
        dump(&s, j, flags & AZ_PBJSON_PRETTY, 0);
        if (s.oom) {
            free(s.buf);
            err = nomem(&c);
        } else {
            *out = s.buf;
        }
    }
    json_decref(j);
    free(c.path.buf);
    return err;
}

az_err az_pbjson_decode(const ProtobufCMessageDescriptor *desc, const char *json, size_t len,
                        ProtobufCAllocator *alloc, ProtobufCMessage **out, char *msg)
{
    if (out) *out = NULL;
    if (!desc || !out || (!json && len) || desc->magic != PROTOBUF_C__MESSAGE_DESCRIPTOR_MAGIC)
        return az_fail(msg, AZ_ERR_INTERNAL, "az_pbjson_decode: no descriptor, input or output");
    json_error_t jerr;
    /* DECODE_ANY: a well-known type at the top level may be a bare string or number */
    json_t *j = json_loadb(json ? json : "", len, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES, &jerr);
    if (!j) {
        ctx c = {.msg = msg};
        path_root(&c, desc);
        az_err err = fail(&c, AZ_ERR_INVALID, "invalid JSON at line %d column %d: %s", jerr.line,
                          jerr.column, jerr.text);
        free(c.path.buf);
        return err;
    }
    az_err err = az_pbjson_decode_tree(desc, j, NULL, alloc, out, msg);
    json_decref(j);
    return err;
}

int az_pbjson_is_map(const ProtobufCMessageDescriptor *parent, const ProtobufCFieldDescriptor *f)
{
    return parent && f && is_map(parent, f);
}

uint32_t az_pbjson_oneof_case(const ProtobufCMessage *m, const ProtobufCFieldDescriptor *f)
{
    return oneof_case(m, f);
}

void az_pbjson_mark_present(ProtobufCMessage *m, const ProtobufCFieldDescriptor *f) { set_presence(m, f); }

/* Error paths start at root, or at the message's short name. */
static void path_start(ctx *c, const char *root, const ProtobufCMessageDescriptor *desc)
{
    if (root)
        sb_puts(&c->path, root);
    else
        path_root(c, desc);
}

az_err az_pbjson_decode_tree(const ProtobufCMessageDescriptor *desc, json_t *j, const char *root,
                             ProtobufCAllocator *alloc, ProtobufCMessage **out, char *msg)
{
    if (out) *out = NULL;
    if (!desc || !out || !j || desc->magic != PROTOBUF_C__MESSAGE_DESCRIPTOR_MAGIC)
        return az_fail(msg, AZ_ERR_INTERNAL, "az_pbjson_decode_tree: no descriptor, input or output");
    ctx c = {.alloc = alloc ? alloc : &sys_allocator, .msg = msg};
    path_start(&c, root, desc);
    az_err err = decode_message(&c, desc, j, out);
    free(c.path.buf);
    return err;
}

az_err az_pbjson_decode_value(const ProtobufCFieldDescriptor *f, json_t *j, void *slot,
                              const char *root, ProtobufCAllocator *alloc, char *msg)
{
    if (!f || !j || !slot || (unsigned)f->type >= sizeof scalars / sizeof scalars[0] ||
        !scalars[f->type].dec)
        return az_fail(msg, AZ_ERR_INTERNAL, "az_pbjson_decode_value: no field, input or slot");
    ctx c = {.alloc = alloc ? alloc : &sys_allocator, .msg = msg};
    if (root)
        sb_puts(&c.path, root);
    else
        sb_put_json_name(&c.path, f->name);
    az_err err = json_is_null(j) && !null_is_value(f)
                     ? fail(&c, AZ_ERR_INVALID, "null is not a value here")
                     : scalars[f->type].dec(&c, f, j, slot);
    free(c.path.buf);
    return err;
}

az_err az_pbjson_encode_field(const ProtobufCMessage *m, const ProtobufCFieldDescriptor *f,
                              int flags, char **out, char *msg)
{
    if (out) *out = NULL;
    if (!m || !f || !out || !m->descriptor ||
        m->descriptor->magic != PROTOBUF_C__MESSAGE_DESCRIPTOR_MAGIC ||
        f < m->descriptor->fields || f >= m->descriptor->fields + m->descriptor->n_fields)
        return az_fail(msg, AZ_ERR_INTERNAL, "az_pbjson_encode_field: no message or not its field");
    ctx c = {.alloc = &sys_allocator, .flags = flags, .msg = msg};
    sb_put_json_name(&c.path, f->name);
    json_t *j = NULL;
    az_err err = encode_field(&c, f, m, &j);
    if (!err) {
        sbuf s = {0};
        dump(&s, j, flags & AZ_PBJSON_PRETTY, 0);
        if (s.oom) {
            free(s.buf);
            err = nomem(&c);
        } else {
            *out = s.buf;
        }
    }
    json_decref(j);
    free(c.path.buf);
    return err;
}
