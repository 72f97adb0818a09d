/* Message printers. Table and YAML views are built from the proto3 JSON of the message, so
 * timestamps, durations, enums and wrappers look the same in every format. */
#include "output.h"

#include <ctype.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "core/pbjson.h"

static const struct {
    const char *name;
    az_output_format fmt;
} formats[] = {
    {"table", AZ_OUTPUT_TABLE},
    {"json", AZ_OUTPUT_JSON},
    {"yaml", AZ_OUTPUT_YAML},
};

az_err az_output_parse_format(const char *flag, const char *s, az_output_format *out, char *msg)
{
    for (size_t i = 0; i < sizeof formats / sizeof formats[0]; i++)
        if (strcasecmp(s, formats[i].name) == 0) {
            *out = formats[i].fmt;
            return AZ_OK;
        }
    return az_fail(msg, AZ_ERR_INVALID, "%s: unknown format \"%s\" (table, json or yaml)", flag, s);
}

const char *az_output_enum(const ProtobufCEnumDescriptor *desc, const char *prefix, int v,
                           char *buf, size_t size)
{
    const ProtobufCEnumValue *ev = protobuf_c_enum_descriptor_get_value(desc, v);
    if (!ev) {
        snprintf(buf, size, "%d", v);
        return buf;
    }
    const char *name = ev->name;
    size_t plen = strlen(prefix);
    if (strncmp(name, prefix, plen) == 0) name += plen;
    size_t i = 0;
    for (; name[i] && i + 1 < size; i++) buf[i] = (char)tolower((unsigned char)name[i]);
    if (size) buf[i] = '\0';
    return buf;
}

const char *az_output_time(int64_t seconds, char *buf, size_t size)
{
    struct tm tm;
    time_t t = (time_t)seconds;
    if (!seconds || !gmtime_r(&t, &tm)) {
        if (size) buf[0] = '\0';
        return buf;
    }
    strftime(buf, size, "%Y-%m-%dT%H:%M:%SZ", &tm);
    return buf;
}

const char *az_output_age(int64_t seconds, int64_t now, char *buf, size_t size)
{
    static const struct {
        int64_t secs;
        const char *unit;
    } steps[] = {{86400, "d"}, {3600, "h"}, {60, "m"}, {1, "s"}};
    if (!seconds) {
        if (size) buf[0] = '\0';
        return buf;
    }
    int64_t d = now > seconds ? now - seconds : 0;
    for (size_t i = 0; i < sizeof steps / sizeof steps[0]; i++)
        if (d >= steps[i].secs || steps[i].secs == 1) {
            snprintf(buf, size, "%lld%s ago", (long long)(d / steps[i].secs), steps[i].unit);
            break;
        }
    return buf;
}

/* ---- "key: value" lines ---- */

typedef struct line {
    char *key;
    char *value;
} line;

typedef struct lines {
    line *v;
    size_t n, cap;
    int oom;
} lines;

static void add_line(lines *l, const char *key, char *value /* taken */)
{
    if (l->oom || !value) {
        free(value);
        l->oom = 1;
        return;
    }
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 32;
        line *v = realloc(l->v, cap * sizeof *v);
        if (!v) {
            free(value);
            l->oom = 1;
            return;
        }
        l->v = v;
        l->cap = cap;
    }
    char *k = strdup(key);
    if (!k) {
        free(value);
        l->oom = 1;
        return;
    }
    l->v[l->n++] = (line){k, value};
}

/* jansson prints reals with 17 digits (0.2 -> 0.20000000000000001); people want the shortest
 * text that reads back as the same double. */
static char *real_text(double d)
{
    char buf[40];
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(buf, sizeof buf, "%.*g", prec, d);
        if (strtod(buf, NULL) == d) break;
    }
    if (!strpbrk(buf, ".eEn")) strcat(buf, ".0"); /* stays a real, as in the JSON output */
    return strdup(buf);
}

/* A JSON scalar as plain text: strings unquoted, everything else as JSON. */
static char *scalar_text(const json_t *v)
{
    if (json_is_string(v)) return strdup(json_string_value(v));
    if (json_is_real(v)) return real_text(json_real_value(v));
    return json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT);
}

static int is_map_field(const ProtobufCFieldDescriptor *fd)
{
    if (!fd || fd->label != PROTOBUF_C_LABEL_REPEATED || fd->type != PROTOBUF_C_TYPE_MESSAGE)
        return 0;
    const ProtobufCMessageDescriptor *d = fd->descriptor;
    size_t len = strlen(d->name);
    return d->n_fields == 2 && len > 5 && strcmp(d->name + len - 5, "Entry") == 0;
}

/* Joins array elements or map entries into "a, b" or "k=v, k2=v2". */
static char *join(const json_t *v)
{
    size_t cap = 64, used = 0;
    char *out = malloc(cap);
    if (!out) return NULL;
    out[0] = '\0';
    size_t i = 0;
    const char *key;
    json_t *item;
    void *iter = json_is_object(v) ? json_object_iter((json_t *)v) : NULL;
    for (;;) {
        char *text;
        if (json_is_array(v)) {
            if (i >= json_array_size(v)) break;
            item = json_array_get(v, i);
            text = json_is_object(item) || json_is_array(item)
                       ? json_dumps(item, JSON_COMPACT)
                       : scalar_text(item);
        } else {
            if (!iter) break;
            key = json_object_iter_key(iter);
            item = json_object_iter_value(iter);
            char *val = scalar_text(item);
            text = NULL;
            if (val && asprintf(&text, "%s=%s", key, val) < 0) text = NULL;
            free(val);
            iter = json_object_iter_next((json_t *)v, iter);
        }
        if (!text) {
            free(out);
            return NULL;
        }
        size_t need = used + strlen(text) + 3;
        if (need > cap) {
            while (cap < need) cap *= 2;
            char *bigger = realloc(out, cap);
            if (!bigger) {
                free(text);
                free(out);
                return NULL;
            }
            out = bigger;
        }
        used += (size_t)sprintf(out + used, "%s%s", i ? ", " : "", text);
        free(text);
        i++;
    }
    return out;
}

static void flatten(lines *l, const char *prefix, const json_t *obj,
                    const ProtobufCMessageDescriptor *desc)
{
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)obj, key, v) {
        char path[512];
        snprintf(path, sizeof path, "%s%s%s", prefix, *prefix ? "." : "", key);
        const ProtobufCFieldDescriptor *fd =
            desc ? protobuf_c_message_descriptor_get_field_by_name(desc, key) : NULL;
        if (json_is_null(v)) continue;
        if (json_is_object(v) && !is_map_field(fd) && fd && fd->type == PROTOBUF_C_TYPE_MESSAGE &&
            strncmp(((const ProtobufCMessageDescriptor *)fd->descriptor)->package_name,
                    "google.protobuf", 15) != 0) {
            flatten(l, path, v, fd->descriptor);
        } else if (json_is_array(v) || (json_is_object(v) && is_map_field(fd))) {
            add_line(l, path, join(v));
        } else if (json_is_object(v)) {
            add_line(l, path, json_dumps(v, JSON_COMPACT)); /* Struct and unknown objects */
        } else {
            add_line(l, path, scalar_text(v));
        }
    }
}

static void print_lines(FILE *f, const lines *l)
{
    size_t width = 0;
    for (size_t i = 0; i < l->n; i++)
        if (strlen(l->v[i].key) > width) width = strlen(l->v[i].key);
    for (size_t i = 0; i < l->n; i++) {
        fprintf(f, "%s:%*s", l->v[i].key, (int)(width - strlen(l->v[i].key) + 1), "");
        /* Continuation lines of multi-line text line up under the value. */
        for (const char *p = l->v[i].value; *p; p++) {
            fputc(*p, f);
            if (*p == '\n' && p[1]) fprintf(f, "%*s", (int)(width + 2), "");
        }
        fputc('\n', f);
    }
}

static az_err print_table(FILE *f, json_t *root, const ProtobufCMessageDescriptor *desc,
                          char *msg)
{
    lines l = {0};
    flatten(&l, "", root, desc);
    if (!l.oom) print_lines(f, &l);
    for (size_t i = 0; i < l.n; i++) {
        free(l.v[i].key);
        free(l.v[i].value);
    }
    free(l.v);
    return l.oom ? az_fail(msg, AZ_ERR_NOMEM, "cannot print the result: out of memory") : AZ_OK;
}

/* ---- YAML ---- */

static int yaml_plain(const char *s)
{
    static const char *reserved[] = {"true", "false", "null", "yes", "no", "on", "off", "y", "n", "~"};
    if (!isalpha((unsigned char)s[0])) return 0;
    for (const char *p = s; *p; p++)
        if (!isalnum((unsigned char)*p) && !strchr("_./@-", *p)) return 0;
    for (size_t i = 0; i < sizeof reserved / sizeof reserved[0]; i++)
        if (strcasecmp(s, reserved[i]) == 0) return 0;
    return 1;
}

static void yaml_scalar(FILE *f, const json_t *v)
{
    if (json_is_string(v) && yaml_plain(json_string_value(v))) {
        fputs(json_string_value(v), f);
        return;
    }
    /* JSON scalars (quoted strings included) are valid YAML flow scalars. */
    char *s = json_is_real(v) ? real_text(json_real_value(v)) : json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT);
    if (s) fputs(s, f);
    free(s);
}

static int yaml_empty_or_scalar(const json_t *v)
{
    return (!json_is_object(v) && !json_is_array(v)) ||
           (json_is_object(v) && json_object_size(v) == 0) ||
           (json_is_array(v) && json_array_size(v) == 0);
}

static void yaml_value(FILE *f, const json_t *v, int indent, int inline_first);

static void yaml_inline_or_nested(FILE *f, const json_t *v, int indent)
{
    if (json_is_object(v) && json_object_size(v) == 0) {
        fputs(" {}\n", f);
    } else if (json_is_array(v) && json_array_size(v) == 0) {
        fputs(" []\n", f);
    } else if (yaml_empty_or_scalar(v)) {
        fputc(' ', f);
        yaml_scalar(f, v);
        fputc('\n', f);
    } else {
        fputc('\n', f);
        yaml_value(f, v, indent, 0);
    }
}

/* Prints an object or array at indent; with inline_first the first line continues the
 * current line (after "- "). */
static void yaml_value(FILE *f, const json_t *v, int indent, int inline_first)
{
    int first = 1;
    if (json_is_object(v)) {
        const char *key;
        json_t *item;
        json_object_foreach((json_t *)v, key, item) {
            if (!(first && inline_first)) fprintf(f, "%*s", indent, "");
            first = 0;
            json_t *k = json_string(key);
            yaml_scalar(f, k);
            json_decref(k);
            fputc(':', f);
            yaml_inline_or_nested(f, item, indent + 2);
        }
    } else if (json_is_array(v)) {
        size_t i;
        json_t *item;
        json_array_foreach(v, i, item) {
            if (!(first && inline_first)) fprintf(f, "%*s", indent, "");
            first = 0;
            fputs("-", f);
            if (yaml_empty_or_scalar(item)) {
                yaml_inline_or_nested(f, item, indent + 2);
            } else {
                fputc(' ', f);
                yaml_value(f, item, indent + 2, 1);
            }
        }
    }
}

az_err az_output_message(FILE *f, const ProtobufCMessage *m, az_output_format fmt, char *msg)
{
    static const int encode_flags[] = {
        [AZ_OUTPUT_TABLE] = AZ_PBJSON_PROTO_NAMES | AZ_PBJSON_EMIT_DEFAULTS,
        [AZ_OUTPUT_JSON] = AZ_PBJSON_PRETTY,
        [AZ_OUTPUT_YAML] = AZ_PBJSON_PROTO_NAMES,
    };
    char *text = NULL;
    az_err err = az_pbjson_encode(m, encode_flags[fmt], &text, msg);
    if (err) return err;
    if (fmt == AZ_OUTPUT_JSON) {
        fprintf(f, "%s\n", text);
        free(text);
        return AZ_OK;
    }
    json_error_t jerr;
    json_t *root = json_loads(text, JSON_DECODE_ANY, &jerr);
    free(text);
    if (!root)
        return az_fail(msg, AZ_ERR_INTERNAL, "cannot print the result: %s", jerr.text);
    if (fmt == AZ_OUTPUT_TABLE) {
        err = json_is_object(root) ? print_table(f, root, m->descriptor, msg) : AZ_OK;
    } else if (yaml_empty_or_scalar(root)) {
        yaml_scalar(f, root);
        fputc('\n', f);
    } else {
        yaml_value(f, root, 0, 0);
    }
    json_decref(root);
    return err;
}
