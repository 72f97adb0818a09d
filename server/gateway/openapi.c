/* Builds the OpenAPI 3.1 document of the REST API from the route table (what the gateway really
 * serves) and the descriptor set's comments, schemas following the proto3 JSON mapping that
 * pbjson implements. Runs at build time (agentz-openapi); speed is not a concern, determinism is. */
#include "openapi.h"

#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/pbjson.h"
#include "google/protobuf/descriptor.pb-c.h"

typedef Google__Protobuf__FileDescriptorSet FileSet;
typedef Google__Protobuf__FileDescriptorProto FileProto;
typedef Google__Protobuf__DescriptorProto MsgProto;
typedef Google__Protobuf__EnumDescriptorProto EnumProto;
typedef Google__Protobuf__ServiceDescriptorProto ServiceProto;

/* SourceCodeInfo path components (descriptor.proto field numbers). */
enum {
    FILE_MESSAGE = 4,
    FILE_ENUM = 5,
    FILE_SERVICE = 6,
    MESSAGE_FIELD = 2,
    MESSAGE_NESTED = 3,
    MESSAGE_ENUM = 4,
    ENUM_VALUE = 2,
    SERVICE_METHOD = 2,
};

/* Deepest SourceCodeInfo path indexed (pairs of numbers per nesting level); deeper definitions
 * simply get no description. */
#define MAX_PATH 64
/* Query parameters are flattened through at most this many nested messages. */
#define MAX_QUERY_DEPTH 8

#define SCHEMA_REF "#/components/schemas/"
#define STATUS_SCHEMA "google.rpc.Status"

typedef enum def_kind { DEF_MESSAGE, DEF_ENUM, DEF_SERVICE } def_kind;

/* A named definition of the descriptor set and where its comments are. */
typedef struct def {
    char *name; /* fully qualified: "agentz.v1.Agent", "agentz.v1.AgentService" */
    def_kind kind;
    const FileProto *file;
    const void *proto; /* MsgProto, EnumProto or ServiceProto */
    int32_t path[MAX_PATH];
    size_t plen;
} def;

typedef struct doc {
    def *defs; /* sorted by name once indexed */
    size_t ndefs, capdefs;
    json_t *schemas; /* components.schemas being filled, in discovery order */
    bool oom;        /* a jansson or libc allocation failed somewhere */
    char *msg;
} doc;

/* ---- jansson helpers: failures only raise d->oom, checked once at the end ---- */

/* jansson's *_new setters take v's reference even when they fail (NULL obj included). */
static void set(doc *d, json_t *obj, const char *key, json_t *v)
{
    if (json_object_set_new(obj, key, v) != 0) d->oom = true;
}

static void push(doc *d, json_t *arr, json_t *v)
{
    if (json_array_append_new(arr, v) != 0) d->oom = true;
}

/* A growable string for descriptions assembled from several comments. */
typedef struct text {
    char *s;
    size_t len, cap;
} text;

static void add_text(doc *d, text *t, const char *s)
{
    size_t n = strlen(s);
    if (t->len + n + 1 > t->cap) {
        size_t nc = (t->len + n + 1) * 2;
        char *ns = realloc(t->s, nc);
        if (!ns) {
            d->oom = true;
            return;
        }
        t->s = ns;
        t->cap = nc;
    }
    memcpy(t->s + t->len, s, n + 1);
    t->len += n;
}

static void set_str(doc *d, json_t *obj, const char *key, const char *s)
{
    set(d, obj, key, json_string(s));
}

/* A schema from a JSON literal of the tables below (which are valid by construction). */
static json_t *literal(doc *d, const char *text)
{
    json_t *j = json_loads(text, 0, NULL);
    if (!j) d->oom = true;
    return j;
}

static json_t *ref(doc *d, const char *name)
{
    size_t n = strlen(SCHEMA_REF) + strlen(name) + 1;
    char *s = malloc(n);
    if (!s) {
        d->oom = true;
        return NULL;
    }
    snprintf(s, n, "%s%s", SCHEMA_REF, name);
    json_t *j = json_pack("{s:s}", "$ref", s);
    free(s);
    if (!j) d->oom = true;
    return j;
}

/* protoc's ToJsonName, as pbjson writes field names. */
static void put_json_name(char *buf, size_t size, size_t *o, const char *name)
{
    bool up = false;
    for (; *name && *o + 1 < size; name++) {
        if (*name == '_') {
            up = true;
            continue;
        }
        buf[(*o)++] = up && *name >= 'a' && *name <= 'z' ? (char)(*name - 'a' + 'A') : *name;
        up = false;
    }
    buf[*o] = '\0';
}

/* Copies o into a new object with its keys sorted (byte order), so the output does not depend
 * on the order definitions were found in. Consumes o. */
static int key_order(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static json_t *sorted(doc *d, json_t *o)
{
    size_t n = json_object_size(o), i = 0;
    const char **keys = malloc((n ? n : 1) * sizeof *keys);
    json_t *out = json_object();
    if (!keys || !out) {
        d->oom = true;
        free(keys);
        json_decref(out);
        json_decref(o);
        return NULL;
    }
    const char *k;
    json_t *v;
    json_object_foreach(o, k, v) keys[i++] = k;
    qsort(keys, n, sizeof *keys, key_order);
    for (i = 0; i < n; i++) set(d, out, keys[i], json_incref(json_object_get(o, keys[i])));
    free(keys);
    json_decref(o);
    return out;
}

/* ---- the descriptor set's definitions and comments ---- */

/* Adds scope.name; returns its full name (stable: the string does not move with defs), or NULL
 * when it cannot be indexed. */
static const char *add_def(doc *d, const char *scope, const char *name, def_kind kind,
                           const FileProto *f, const void *proto, const int32_t *path,
                           size_t plen)
{
    if (!name || plen > MAX_PATH) return NULL;
    if (d->ndefs == d->capdefs) {
        size_t nc = d->capdefs ? d->capdefs * 2 : 256;
        def *nd = realloc(d->defs, nc * sizeof *nd);
        if (!nd) {
            d->oom = true;
            return NULL;
        }
        d->defs = nd;
        d->capdefs = nc;
    }
    size_t n = strlen(scope) + strlen(name) + 2;
    char *full = malloc(n);
    if (!full) {
        d->oom = true;
        return NULL;
    }
    snprintf(full, n, "%s%s%s", scope, *scope ? "." : "", name);
    def *e = &d->defs[d->ndefs++];
    e->name = full;
    e->kind = kind;
    e->file = f;
    e->proto = proto;
    memcpy(e->path, path, plen * sizeof *path);
    e->plen = plen;
    return full;
}

static void index_message(doc *d, const FileProto *f, const char *scope, const MsgProto *m,
                          int32_t *path, size_t plen)
{
    const char *full = add_def(d, scope, m->name, DEF_MESSAGE, f, m, path, plen);
    if (!full || plen + 2 > MAX_PATH) return;
    for (size_t j = 0; j < m->n_enum_type; j++) {
        path[plen] = MESSAGE_ENUM, path[plen + 1] = (int32_t)j;
        add_def(d, full, m->enum_type[j]->name, DEF_ENUM, f, m->enum_type[j], path, plen + 2);
    }
    for (size_t j = 0; j < m->n_nested_type && !d->oom; j++) {
        path[plen] = MESSAGE_NESTED, path[plen + 1] = (int32_t)j;
        index_message(d, f, full, m->nested_type[j], path, plen + 2);
    }
}

static int def_order(const void *a, const void *b)
{
    return strcmp(((const def *)a)->name, ((const def *)b)->name);
}

static void index_set(doc *d, const FileSet *fs)
{
    int32_t path[MAX_PATH];
    for (size_t i = 0; i < fs->n_file && !d->oom; i++) {
        const FileProto *f = fs->file[i];
        const char *pkg = f->package ? f->package : "";
        for (size_t j = 0; j < f->n_message_type && !d->oom; j++) {
            path[0] = FILE_MESSAGE, path[1] = (int32_t)j;
            index_message(d, f, pkg, f->message_type[j], path, 2);
        }
        for (size_t j = 0; j < f->n_enum_type; j++) {
            path[0] = FILE_ENUM, path[1] = (int32_t)j;
            add_def(d, pkg, f->enum_type[j]->name, DEF_ENUM, f, f->enum_type[j], path, 2);
        }
        for (size_t j = 0; j < f->n_service; j++) {
            path[0] = FILE_SERVICE, path[1] = (int32_t)j;
            add_def(d, pkg, f->service[j]->name, DEF_SERVICE, f, f->service[j], path, 2);
        }
    }
    if (d->ndefs) qsort(d->defs, d->ndefs, sizeof *d->defs, def_order);
}

static const def *find_def(const doc *d, const char *name, def_kind kind)
{
    def key = {.name = (char *)name};
    const def *e = d->ndefs ? bsearch(&key, d->defs, d->ndefs, sizeof *d->defs, def_order) : NULL;
    return e && e->kind == kind ? e : NULL;
}

/* The leading comment of definition e, or with sub_kind >= 0 of its part (sub_kind, sub_index):
 * a field, enum value or method. NULL when there is none. */
static const char *comment(const def *e, int32_t sub_kind, int32_t sub_index)
{
    if (!e || !e->file->source_code_info) return NULL;
    size_t plen = e->plen + (sub_kind >= 0 ? 2 : 0);
    const Google__Protobuf__SourceCodeInfo *sci = e->file->source_code_info;
    for (size_t i = 0; i < sci->n_location; i++) {
        const Google__Protobuf__SourceCodeInfo__Location *l = sci->location[i];
        if (l->n_path != plen || memcmp(l->path, e->path, e->plen * sizeof *l->path) != 0)
            continue;
        if (sub_kind >= 0 && (l->path[e->plen] != sub_kind || l->path[e->plen + 1] != sub_index))
            continue;
        return l->leading_comments && l->leading_comments[0] ? l->leading_comments : NULL;
    }
    return NULL;
}

/* A comment as protoc keeps it (" First line.\n second line.\n") as text: one leading space per
 * line and the trailing newline dropped. NULL for none; malloc'ed. */
static char *clean(doc *d, const char *raw)
{
    if (!raw) return NULL;
    size_t n = strlen(raw);
    char *s = malloc(n + 1), *o = s;
    if (!s) {
        d->oom = true;
        return NULL;
    }
    bool line_start = true;
    for (const char *p = raw; *p; p++) {
        if (line_start && *p == ' ') {
            line_start = false;
            continue;
        }
        line_start = *p == '\n';
        *o++ = *p;
    }
    while (o > s && (o[-1] == '\n' || o[-1] == ' ' || o[-1] == '\t' || o[-1] == '\r')) o--;
    *o = '\0';
    if (!*s) {
        free(s);
        return NULL;
    }
    return s;
}

static void set_description(doc *d, json_t *obj, const char *raw)
{
    char *s = clean(d, raw);
    if (s) set_str(d, obj, "description", s);
    free(s);
}

/* The first sentence of a comment, on one line: an operation's summary. */
static void set_summary(doc *d, json_t *obj, const char *raw)
{
    char *s = clean(d, raw);
    if (!s) return;
    char *end = s;
    /* a '.' before a space ends the sentence, unless it closes "e.g." or "i.e." */
    while (*end && !(*end == '.' && (end[1] == '\0' || end[1] == ' ' || end[1] == '\n') &&
                     !(end - s >= 3 && (memcmp(end - 3, "e.g", 3) == 0 ||
                                        memcmp(end - 3, "i.e", 3) == 0))))
        end++;
    if (*end) end[1] = '\0';
    for (char *p = s; *p; p++)
        if (*p == '\n') *p = ' ';
    set_str(d, obj, "summary", s);
    free(s);
}

/* ---- schemas ---- */

static const struct wkt {
    const char *name;
    const char *schema;
} wkts[] = {
    {"google.protobuf.Timestamp",
     "{\"type\": \"string\", \"format\": \"date-time\", \"description\": \"An RFC 3339 time; "
     "the server writes UTC with 0, 3, 6 or 9 fraction digits, e.g. "
     "\\\"2026-11-24T05:13:32.123Z\\\".\"}"},
    {"google.protobuf.Duration",
     "{\"type\": \"string\", \"pattern\": \"^-?[0-9]+(\\\\.[0-9]{1,9})?s$\", \"description\": "
     "\"Seconds with up to nine fraction digits and the suffix s, e.g. \\\"1.5s\\\".\"}"},
    {"google.protobuf.FieldMask",
     "{\"type\": \"string\", \"description\": \"Comma-separated field paths in lowerCamelCase, "
     "e.g. \\\"goal,llm.model\\\".\"}"},
    {"google.protobuf.Struct",
     "{\"type\": \"object\", \"additionalProperties\": true, \"description\": \"Any JSON "
     "object.\"}"},
    {"google.protobuf.Value", "{\"description\": \"Any JSON value.\"}"},
    {"google.protobuf.ListValue",
     "{\"type\": \"array\", \"items\": {}, \"description\": \"Any JSON array.\"}"},
    {"google.protobuf.Empty",
     "{\"type\": \"object\", \"additionalProperties\": false, \"description\": \"An empty "
     "object.\"}"},
    {"google.protobuf.Any",
     "{\"type\": \"object\", \"properties\": {\"@type\": {\"type\": \"string\"}}, \"required\": "
     "[\"@type\"], \"additionalProperties\": true}"},
    {"google.protobuf.DoubleValue", "{\"type\": [\"number\", \"null\"], \"format\": \"double\"}"},
    {"google.protobuf.FloatValue", "{\"type\": [\"number\", \"null\"], \"format\": \"float\"}"},
    {"google.protobuf.Int64Value", "{\"type\": [\"string\", \"null\"], \"format\": \"int64\"}"},
    {"google.protobuf.UInt64Value", "{\"type\": [\"string\", \"null\"], \"format\": \"uint64\"}"},
    {"google.protobuf.Int32Value", "{\"type\": [\"integer\", \"null\"], \"format\": \"int32\"}"},
    {"google.protobuf.UInt32Value",
     "{\"type\": [\"integer\", \"null\"], \"format\": \"uint32\", \"minimum\": 0}"},
    {"google.protobuf.BoolValue", "{\"type\": [\"boolean\", \"null\"]}"},
    {"google.protobuf.StringValue", "{\"type\": [\"string\", \"null\"]}"},
    {"google.protobuf.BytesValue", "{\"type\": [\"string\", \"null\"], \"format\": \"byte\"}"},
};

/* How each scalar type looks in proto3 JSON: 64-bit integers are strings (JavaScript numbers
 * cannot hold them), bytes are base64. */
static const char *const scalar_schemas[] = {
    [PROTOBUF_C_TYPE_INT32] = "{\"type\": \"integer\", \"format\": \"int32\"}",
    [PROTOBUF_C_TYPE_SINT32] = "{\"type\": \"integer\", \"format\": \"int32\"}",
    [PROTOBUF_C_TYPE_SFIXED32] = "{\"type\": \"integer\", \"format\": \"int32\"}",
    [PROTOBUF_C_TYPE_UINT32] = "{\"type\": \"integer\", \"format\": \"uint32\", \"minimum\": 0}",
    [PROTOBUF_C_TYPE_FIXED32] = "{\"type\": \"integer\", \"format\": \"uint32\", \"minimum\": 0}",
    [PROTOBUF_C_TYPE_INT64] = "{\"type\": \"string\", \"format\": \"int64\"}",
    [PROTOBUF_C_TYPE_SINT64] = "{\"type\": \"string\", \"format\": \"int64\"}",
    [PROTOBUF_C_TYPE_SFIXED64] = "{\"type\": \"string\", \"format\": \"int64\"}",
    [PROTOBUF_C_TYPE_UINT64] = "{\"type\": \"string\", \"format\": \"uint64\"}",
    [PROTOBUF_C_TYPE_FIXED64] = "{\"type\": \"string\", \"format\": \"uint64\"}",
    [PROTOBUF_C_TYPE_FLOAT] = "{\"type\": \"number\", \"format\": \"float\"}",
    [PROTOBUF_C_TYPE_DOUBLE] = "{\"type\": \"number\", \"format\": \"double\"}",
    [PROTOBUF_C_TYPE_BOOL] = "{\"type\": \"boolean\"}",
    [PROTOBUF_C_TYPE_STRING] = "{\"type\": \"string\"}",
    [PROTOBUF_C_TYPE_BYTES] = "{\"type\": \"string\", \"format\": \"byte\"}",
};

/* The error body of every failed call (transcode.h's az_transcode_status_json). */
static const char status_schema[] =
    "{\"type\": \"object\", \"description\": \"The error of a failed call (google.rpc.Status).\", "
    "\"properties\": {"
    "\"code\": {\"type\": \"integer\", \"format\": \"int32\", \"description\": \"The gRPC status "
    "code, e.g. 5 for NOT_FOUND.\"}, "
    "\"message\": {\"type\": \"string\", \"description\": \"What went wrong, for a developer.\"}, "
    "\"details\": {\"type\": \"array\", \"items\": {\"type\": \"object\", \"properties\": "
    "{\"@type\": {\"type\": \"string\"}}, \"additionalProperties\": true}}}}";

static const struct wkt *find_wkt(const char *name)
{
    for (size_t i = 0; i < sizeof wkts / sizeof wkts[0]; i++)
        if (strcmp(wkts[i].name, name) == 0) return &wkts[i];
    return NULL;
}

static void add_message(doc *d, const ProtobufCMessageDescriptor *md);
static void add_enum(doc *d, const ProtobufCEnumDescriptor *ed);

/* The schema of one value of f (one element, for repeated fields). */
static json_t *value_schema(doc *d, const ProtobufCFieldDescriptor *f)
{
    if (f->type == PROTOBUF_C_TYPE_MESSAGE) {
        const ProtobufCMessageDescriptor *md = f->descriptor;
        add_message(d, md);
        return ref(d, md->name);
    }
    if (f->type == PROTOBUF_C_TYPE_ENUM) {
        const ProtobufCEnumDescriptor *ed = f->descriptor;
        add_enum(d, ed);
        return ref(d, ed->name);
    }
    if ((unsigned)f->type >= sizeof scalar_schemas / sizeof scalar_schemas[0] ||
        !scalar_schemas[f->type]) {
        d->oom = true; /* no such protobuf-c type: the descriptor is corrupt */
        return NULL;
    }
    return literal(d, scalar_schemas[f->type]);
}

/* The schema of field f of parent: a value, an array of them, or a map as an object. */
static json_t *field_schema(doc *d, const ProtobufCMessageDescriptor *parent,
                            const ProtobufCFieldDescriptor *f)
{
    if (az_pbjson_is_map(parent, f)) {
        const ProtobufCMessageDescriptor *entry = f->descriptor;
        json_t *s = json_pack("{s:s}", "type", "object");
        set(d, s, "additionalProperties", value_schema(d, &entry->fields[1]));
        return s;
    }
    json_t *v = value_schema(d, f);
    if (f->label != PROTOBUF_C_LABEL_REPEATED) return v;
    json_t *s = json_pack("{s:s}", "type", "array");
    set(d, s, "items", v);
    return s;
}

/* The index of field name in a message's DescriptorProto, for its comment; -1 if unknown. */
static int32_t field_index(const def *e, const char *name)
{
    const MsgProto *mp = e ? e->proto : NULL;
    for (size_t k = 0; mp && k < mp->n_field; k++)
        if (mp->field[k]->name && strcmp(mp->field[k]->name, name) == 0) return (int32_t)k;
    return -1;
}

static bool field_deprecated(const def *e, int32_t k)
{
    const MsgProto *mp = e ? e->proto : NULL;
    return mp && k >= 0 && mp->field[k]->options && mp->field[k]->options->deprecated;
}

/* True when f is the first member of a real oneof (protobuf-c flags each member; a lone
 * member is a proto3 optional field, not a choice). */
static bool first_of_oneof(const ProtobufCMessageDescriptor *md, unsigned i)
{
    const ProtobufCFieldDescriptor *f = &md->fields[i];
    if (!(f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF)) return false;
    bool more = false;
    for (unsigned k = 0; k < md->n_fields; k++) {
        const ProtobufCFieldDescriptor *g = &md->fields[k];
        if (!(g->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) || g->quantifier_offset != f->quantifier_offset)
            continue;
        if (k < i) return false;
        if (k > i) more = true;
    }
    return more;
}

/* The message's comment, then "Set at most one of a, b." for each oneof. */
static void describe_message(doc *d, json_t *schema, const ProtobufCMessageDescriptor *md,
                             const char *raw)
{
    char *base = clean(d, raw);
    text t = {0};
    add_text(d, &t, base ? base : "");
    free(base);
    for (unsigned i = 0; i < md->n_fields; i++) {
        if (!first_of_oneof(md, i)) continue;
        add_text(d, &t, t.len ? "\n\nSet at most one of " : "Set at most one of ");
        for (unsigned k = i; k < md->n_fields; k++) {
            const ProtobufCFieldDescriptor *g = &md->fields[k];
            if (!(g->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) ||
                g->quantifier_offset != md->fields[i].quantifier_offset)
                continue;
            char name[256];
            size_t o = 0;
            put_json_name(name, sizeof name, &o, g->name);
            if (k != i) add_text(d, &t, ", ");
            add_text(d, &t, name);
        }
        add_text(d, &t, ".");
    }
    if (t.len) set_str(d, schema, "description", t.s);
    free(t.s);
}

static void add_message(doc *d, const ProtobufCMessageDescriptor *md)
{
    if (json_object_get(d->schemas, md->name)) return;
    json_t *s = json_object();
    set(d, d->schemas, md->name, s); /* before the fields: a cycle ends here */
    if (!s || d->oom) return;
    const struct wkt *w = find_wkt(md->name);
    if (w) {
        json_t *lit = literal(d, w->schema);
        if (lit && json_object_update(s, lit) != 0) d->oom = true;
        json_decref(lit);
        return;
    }
    const def *e = find_def(d, md->name, DEF_MESSAGE);
    set_str(d, s, "type", "object");
    describe_message(d, s, md, comment(e, -1, -1));
    json_t *props = json_object();
    set(d, s, "properties", props);
    for (unsigned i = 0; i < md->n_fields && !d->oom; i++) {
        const ProtobufCFieldDescriptor *f = &md->fields[i];
        char name[256];
        size_t o = 0;
        put_json_name(name, sizeof name, &o, f->name);
        json_t *fs = field_schema(d, md, f);
        int32_t k = field_index(e, f->name);
        set_description(d, fs, k >= 0 ? comment(e, MESSAGE_FIELD, k) : NULL);
        if (field_deprecated(e, k)) set(d, fs, "deprecated", json_true());
        set(d, props, name, fs);
    }
}

static void add_enum(doc *d, const ProtobufCEnumDescriptor *ed)
{
    if (json_object_get(d->schemas, ed->name)) return;
    if (strcmp(ed->name, "google.protobuf.NullValue") == 0) {
        set(d, d->schemas, ed->name, json_pack("{s:s}", "type", "null"));
        return;
    }
    const def *e = find_def(d, ed->name, DEF_ENUM);
    const EnumProto *ep = e ? e->proto : NULL;
    json_t *s = json_pack("{s:s}", "type", "string"), *names = json_array();
    set(d, d->schemas, ed->name, s);
    set(d, s, "enum", names);
    /* the description lists what each value means, which a bare list of names cannot say */
    char *head = clean(d, comment(e, -1, -1));
    text t = {0};
    add_text(d, &t, head ? head : "");
    free(head);
    bool listed = false;
    for (unsigned i = 0; i < ed->n_values; i++) {
        push(d, names, json_string(ed->values[i].name));
        int32_t k = -1;
        for (size_t j = 0; ep && j < ep->n_value; j++)
            if (ep->value[j]->name && strcmp(ep->value[j]->name, ed->values[i].name) == 0)
                k = (int32_t)j;
        char *vc = k >= 0 ? clean(d, comment(e, ENUM_VALUE, k)) : NULL;
        if (!vc) continue;
        for (char *p = vc; *p; p++)
            if (*p == '\n') *p = ' ';
        add_text(d, &t, !t.len ? "- `" : listed ? "\n- `" : "\n\n- `");
        add_text(d, &t, ed->values[i].name);
        add_text(d, &t, "`: ");
        add_text(d, &t, vc);
        listed = true;
        free(vc);
    }
    if (t.len) set_str(d, s, "description", t.s);
    free(t.s);
}

/* ---- operations ---- */

/* The field of desc a proto-name path ("agent.id") ends at, and its parent message, or NULL. */
static const ProtobufCFieldDescriptor *path_field(const ProtobufCMessageDescriptor *desc,
                                                  const char *path,
                                                  const ProtobufCMessageDescriptor **parent)
{
    const ProtobufCFieldDescriptor *f = NULL;
    for (const char *p = path; desc;) {
        const char *dot = strchr(p, '.');
        size_t n = dot ? (size_t)(dot - p) : strlen(p);
        f = NULL;
        for (unsigned i = 0; i < desc->n_fields; i++)
            if (strncmp(desc->fields[i].name, p, n) == 0 && desc->fields[i].name[n] == '\0')
                f = &desc->fields[i];
        if (!f || !dot) break;
        desc = f->type == PROTOBUF_C_TYPE_MESSAGE ? f->descriptor : NULL;
        p = dot + 1;
    }
    if (f && parent) *parent = desc;
    return f;
}

static const char *field_comment(const doc *d, const ProtobufCMessageDescriptor *parent,
                                 const ProtobufCFieldDescriptor *f)
{
    const def *e = find_def(d, parent->name, DEF_MESSAGE);
    int32_t k = field_index(e, f->name);
    return k >= 0 ? comment(e, MESSAGE_FIELD, k) : NULL;
}

static json_t *parameter(doc *d, const char *name, const char *in, json_t *schema,
                         const char *raw_comment)
{
    json_t *p = json_object();
    set_str(d, p, "name", name);
    set_str(d, p, "in", in);
    set_description(d, p, raw_comment);
    if (strcmp(in, "path") == 0) set(d, p, "required", json_true());
    if (json_is_object(schema) && json_is_string(json_object_get(schema, "type")) &&
        strcmp(json_string_value(json_object_get(schema, "type")), "array") == 0) {
        set_str(d, p, "style", "form"); /* ?tools=a&tools=b, as the gateway reads lists */
        set(d, p, "explode", json_true());
    }
    set(d, p, "schema", schema);
    return p;
}

/* Whether the proto-name path prefix.name is bound by a variable of rule. */
static bool path_bound(const az_httprule *rule, const char *prefix, const char *name)
{
    size_t pl = strlen(prefix);
    for (size_t v = 0; v < az_httprule_nvars(rule); v++) {
        const char *var = az_httprule_var(rule, v);
        if (pl ? strncmp(var, prefix, pl) == 0 && var[pl] == '.' && strcmp(var + pl + 1, name) == 0
               : strcmp(var, name) == 0)
            return true;
    }
    return false;
}

static bool value_like(const ProtobufCFieldDescriptor *f)
{
    return f->type != PROTOBUF_C_TYPE_MESSAGE || az_routes_is_value_type(f->descriptor);
}

/* The query parameters of desc: every field the path and body leave, that a query string can
 * spell (scalars, enums, value-like well-known types, lists of those), nested messages
 * flattened with dots, in lowerCamelCase: what az_transcode_request accepts. */
static void query_params(doc *d, json_t *params, const az_route *r,
                         const ProtobufCMessageDescriptor *desc, const char *proto_prefix,
                         const char *json_prefix, const ProtobufCMessageDescriptor **stack,
                         size_t depth)
{
    for (size_t i = 0; i < depth; i++)
        if (stack[i] == desc) return; /* a recursive message: its fields are listed already */
    if (depth == MAX_QUERY_DEPTH) return;
    stack[depth] = desc;
    for (unsigned i = 0; i < desc->n_fields && !d->oom; i++) {
        const ProtobufCFieldDescriptor *f = &desc->fields[i];
        if (depth == 0 && r->body && strcmp(f->name, r->body) == 0) continue;
        if (path_bound(r->rule, proto_prefix, f->name)) continue;
        char proto_name[512], json_name[512];
        size_t o = (size_t)snprintf(json_name, sizeof json_name, "%s%s", json_prefix,
                                    *json_prefix ? "." : "");
        if (o >= sizeof json_name) continue;
        put_json_name(json_name, sizeof json_name, &o, f->name);
        if ((size_t)snprintf(proto_name, sizeof proto_name, "%s%s%s", proto_prefix,
                             *proto_prefix ? "." : "", f->name) >= sizeof proto_name)
            continue;
        bool repeated = f->label == PROTOBUF_C_LABEL_REPEATED;
        if (value_like(f)) {
            push(d, params, parameter(d, json_name, "query", field_schema(d, desc, f),
                                      field_comment(d, desc, f)));
        } else if (!repeated &&
                   strncmp(((const ProtobufCMessageDescriptor *)f->descriptor)->name,
                           "google.protobuf.", 16) != 0) {
            query_params(d, params, r, f->descriptor, proto_name, json_name, stack, depth + 1);
        }
    }
}

/* The OpenAPI form of a template: each variable by its name alone, "{name=**}" as "{name}". */
static char *openapi_path(doc *d, const az_httprule *rule)
{
    const char *t = az_httprule_template(rule);
    char *s = malloc(strlen(t) + 1), *o = s;
    if (!s) {
        d->oom = true;
        return NULL;
    }
    for (const char *p = t; *p; p++) {
        *o++ = *p;
        if (*p != '{') continue;
        while (p[1] && p[1] != '=' && p[1] != '}') *o++ = *++p;
        while (p[1] && p[1] != '}') p++;
    }
    *o = '\0';
    return s;
}

static const char *short_name(const char *full)
{
    const char *dot = strrchr(full, '.');
    return dot ? dot + 1 : full;
}

static json_t *request_body(doc *d, const az_route *r)
{
    const ProtobufCMessageDescriptor *in = r->method->input;
    json_t *rb = json_object(), *content = json_object(), *media = json_object(), *schema;
    if (strcmp(r->body, "*") == 0) {
        /* fields the path binds are not in the body: list the rest */
        bool bound = false;
        for (size_t v = 0; v < az_httprule_nvars(r->rule); v++)
            bound = bound || !strchr(az_httprule_var(r->rule, v), '.');
        if (!bound) {
            add_message(d, in);
            schema = ref(d, in->name);
        } else {
            schema = json_pack("{s:s}", "type", "object");
            json_t *props = json_object();
            for (unsigned i = 0; i < in->n_fields; i++) {
                const ProtobufCFieldDescriptor *f = &in->fields[i];
                if (path_bound(r->rule, "", f->name)) continue;
                char name[256];
                size_t o = 0;
                put_json_name(name, sizeof name, &o, f->name);
                json_t *fs = field_schema(d, in, f);
                set_description(d, fs, field_comment(d, in, f));
                set(d, props, name, fs);
            }
            set(d, schema, "properties", props);
        }
        set_description(d, rb, comment(find_def(d, in->name, DEF_MESSAGE), -1, -1));
    } else {
        const ProtobufCFieldDescriptor *f =
            protobuf_c_message_descriptor_get_field_by_name(in, r->body);
        schema = f ? field_schema(d, in, f) : NULL;
        if (f) set_description(d, rb, field_comment(d, in, f));
    }
    set(d, media, "schema", schema);
    set(d, content, "application/json", media);
    set(d, rb, "content", content);
    return rb;
}

static json_t *responses(doc *d, const az_route *r)
{
    const az_route_method *m = r->method;
    json_t *all = json_object(), *ok = json_object(), *content = json_object(), *schema;
    if (r->response_body) {
        const ProtobufCFieldDescriptor *f =
            protobuf_c_message_descriptor_get_field_by_name(m->output, r->response_body);
        schema = f ? field_schema(d, m->output, f) : NULL;
    } else {
        add_message(d, m->output);
        schema = ref(d, m->output->name);
    }
    if (m->server_streaming) {
        char text[512];
        snprintf(text, sizeof text,
                 "A stream: each server-sent event (text/event-stream) or line "
                 "(application/x-ndjson) is one %s in proto3 JSON, until the stream ends or the "
                 "client disconnects.",
                 m->output->name);
        set_str(d, ok, "description", text);
        set(d, content, "text/event-stream", json_pack("{s:O}", "schema", schema));
        set(d, content, "application/x-ndjson", json_pack("{s:O}", "schema", schema));
        json_decref(schema);
    } else {
        set_str(d, ok, "description", m->output->name);
        set(d, content, "application/json", json_pack("{s:o}", "schema", schema));
    }
    set(d, ok, "content", content);
    set(d, all, "200", ok);
    json_t *err = json_object(), *econtent = json_object();
    set_str(d, err, "description", "An error: a google.rpc.Status with the gRPC status code.");
    set(d, econtent, "application/json", json_pack("{s:o}", "schema", ref(d, STATUS_SCHEMA)));
    set(d, err, "content", econtent);
    set(d, all, "default", err);
    return all;
}

static void add_operation(doc *d, json_t *paths, const az_route *r)
{
    const az_route_method *m = r->method;
    char *key = openapi_path(d, r->rule);
    if (!key) return;
    json_t *item = json_object_get(paths, key);
    if (!item) {
        item = json_object();
        set(d, paths, key, item);
    }
    free(key);
    if (!item || d->oom) return;

    json_t *op = json_object();
    char lower[8];
    size_t k = 0;
    for (; r->http_method[k] && k + 1 < sizeof lower; k++)
        lower[k] = (char)(r->http_method[k] - 'A' + 'a');
    lower[k] = '\0';
    set(d, item, lower, op);

    const char *service = short_name(m->service);
    set(d, op, "tags", json_pack("[s]", service));
    const def *sd = find_def(d, m->service, DEF_SERVICE);
    const ServiceProto *sp = sd ? sd->proto : NULL;
    const char *mc = NULL;
    for (size_t i = 0; sp && i < sp->n_method; i++)
        if (sp->method[i]->name && strcmp(sp->method[i]->name, m->name) == 0)
            mc = comment(sd, SERVICE_METHOD, (int32_t)i);
    set_summary(d, op, mc);
    set_description(d, op, mc);
    /* a one-sentence comment is all summary */
    if (json_equal(json_object_get(op, "summary"), json_object_get(op, "description")))
        json_object_del(op, "description");
    char id[256];
    if (r->binding)
        snprintf(id, sizeof id, "%s_%s_%zu", service, m->name, r->binding + 1);
    else
        snprintf(id, sizeof id, "%s_%s", service, m->name);
    set_str(d, op, "operationId", id);

    json_t *params = json_array();
    for (size_t v = 0; v < az_httprule_nvars(r->rule); v++) {
        const char *var = az_httprule_var(r->rule, v);
        const ProtobufCMessageDescriptor *parent = NULL;
        const ProtobufCFieldDescriptor *f = path_field(m->input, var, &parent);
        if (!f) continue; /* the route table checked every variable */
        push(d, params,
             parameter(d, var, "path", field_schema(d, parent, f), field_comment(d, parent, f)));
    }
    if (!r->body || strcmp(r->body, "*") != 0) {
        const ProtobufCMessageDescriptor *stack[MAX_QUERY_DEPTH];
        query_params(d, params, r, m->input, "", "", stack, 0);
    }
    if (json_array_size(params))
        set(d, op, "parameters", params);
    else
        json_decref(params);
    if (r->body) set(d, op, "requestBody", request_body(d, r));
    set(d, op, "responses", responses(d, r));
    /* EventSource and WebSocket cannot send headers: streams also take ?access_token= */
    if (m->server_streaming)
        set(d, op, "security",
            json_pack("[{s:[]},{s:[]},{s:[]}]", "bearer", "apiKey", "accessToken"));
}

static json_t *tags(doc *d, const az_routes *t)
{
    json_t *list = json_array();
    const char *last = NULL;
    for (size_t i = 0; i < az_routes_method_count(t); i++) {
        const az_route_method *m = az_routes_method_at(t, i);
        if (last && strcmp(last, m->service) == 0) continue;
        last = m->service;
        json_t *tag = json_object();
        set_str(d, tag, "name", short_name(m->service));
        set_description(d, tag, comment(find_def(d, m->service, DEF_SERVICE), -1, -1));
        push(d, list, tag);
    }
    return list;
}

static json_t *components(doc *d)
{
    json_t *c = json_object();
    set(d, d->schemas, STATUS_SCHEMA, literal(d, status_schema));
    set(d, c, "schemas", sorted(d, json_incref(d->schemas)));
    set(d, c, "securitySchemes",
        json_pack("{s:{s:s,s:s,s:s,s:s},s:{s:s,s:s,s:s,s:s},s:{s:s,s:s,s:s,s:s}}", "bearer",
                  "type", "http", "scheme", "bearer", "bearerFormat", "JWT or AGENTZ API key",
                  "description",
                  "Authorization: Bearer <token>, the token being a Clerk session JWT or an "
                  "AGENTZ API key.",
                  "apiKey", "type", "apiKey", "in", "header", "name", "X-Api-Key", "description",
                  "An AGENTZ API key in the X-Api-Key header.", "accessToken", "type", "apiKey",
                  "in", "query", "name", "access_token", "description",
                  "The bearer token as a query parameter, for clients that cannot send headers "
                  "(EventSource, WebSocket); accepted on streaming operations only."));
    return c;
}

static json_t *document(doc *d, const az_routes *t, const char *version)
{
    json_t *root = json_object(), *paths = json_object();
    set_str(d, root, "openapi", "3.1.0");
    set(d, root, "info",
        json_pack("{s:s,s:s,s:s}", "title", "AGENTZ API", "version", version, "description",
                  "The AGENTZ API over HTTP/JSON, transcoded to gRPC by agentz-gateway per the "
                  "google.api.http annotations of proto/agentz/v1. Bodies and responses are "
                  "proto3 JSON; errors are google.rpc.Status objects."));
    set(d, root, "tags", tags(d, t));
    set(d, root, "security", json_pack("[{s:[]},{s:[]}]", "bearer", "apiKey"));
    for (size_t i = 0; i < az_routes_count(t) && !d->oom; i++) {
        const az_route *r = az_routes_at(t, i);
        if (!r->method->client_streaming) add_operation(d, paths, r);
    }
    set(d, root, "paths", sorted(d, paths));
    set(d, root, "components", components(d));
    return root;
}

az_err az_openapi_build(const az_routes *t, const uint8_t *descset, size_t len,
                        const char *version, char **out, size_t *out_len, char *msg)
{
    if (out) *out = NULL;
    if (out_len) *out_len = 0;
    if (!t || !version || !out || !out_len || (!descset && len))
        return az_fail(msg, AZ_ERR_INTERNAL, "az_openapi_build: missing argument");
    FileSet *fs = NULL;
    if (descset) {
        fs = google__protobuf__file_descriptor_set__unpack(NULL, len, descset);
        if (!fs) return az_fail(msg, AZ_ERR_INVALID, "the descriptor set does not parse");
    }
    doc d = {.schemas = json_object(), .msg = msg};
    if (!d.schemas) d.oom = true;
    if (fs) index_set(&d, fs);
    json_t *root = d.oom ? NULL : document(&d, t, version);
    char *text = root && !d.oom ? json_dumps(root, JSON_INDENT(2)) : NULL;
    json_decref(root);
    json_decref(d.schemas);
    for (size_t i = 0; i < d.ndefs; i++) free(d.defs[i].name);
    free(d.defs);
    google__protobuf__file_descriptor_set__free_unpacked(fs, NULL);
    if (!text) return az_fail(msg, AZ_ERR_NOMEM, "out of memory");
    size_t n = strlen(text);
    char *s = realloc(text, n + 2);
    if (!s) {
        free(text);
        return az_fail(msg, AZ_ERR_NOMEM, "out of memory");
    }
    s[n] = '\n';
    s[n + 1] = '\0';
    *out = s;
    *out_len = n + 1;
    return AZ_OK;
}
