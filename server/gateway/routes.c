/* The gateway's route table: reads the google.api.http option of every method of the proxied
 * services from the descriptor set, checks each binding against the request and response
 * messages once at start-up, and sorts the bindings so a request is routed by one linear,
 * allocation-free scan. */
#include "routes.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "google/api/http.pb-c.h"
#include "google/protobuf/descriptor.pb-c.h"

typedef Google__Protobuf__FileDescriptorSet FileSet;
typedef Google__Protobuf__ServiceDescriptorProto ServiceProto;
typedef Google__Protobuf__MethodDescriptorProto MethodProto;
typedef Google__Api__HttpRule HttpRule;

/* google.api.http: extension 72295728 of google.protobuf.MethodOptions. protobuf-c knows no
 * extensions, so the option arrives as an unknown field of MethodOptions. */
#define HTTP_OPTION_FIELD 72295728u

/* The HTTP methods a binding may use, in the order Allow lists them. */
static const struct http_kind {
    Google__Api__HttpRule__PatternCase pattern;
    const char *name;
} http_kinds[] = {
    {GOOGLE__API__HTTP_RULE__PATTERN_GET, "GET"},
    {GOOGLE__API__HTTP_RULE__PATTERN_POST, "POST"},
    {GOOGLE__API__HTTP_RULE__PATTERN_PUT, "PUT"},
    {GOOGLE__API__HTTP_RULE__PATTERN_PATCH, "PATCH"},
    {GOOGLE__API__HTTP_RULE__PATTERN_DELETE, "DELETE"},
};
#define NKINDS (sizeof http_kinds / sizeof http_kinds[0])

/* Well-known message types a single path or query value can spell ("2026-01-01T00:00:00Z",
 * "1.5s", "a,b", "42"); any other message is a structure, not a value. */
static const char *const value_types[] = {
    "google.protobuf.Timestamp",   "google.protobuf.Duration",    "google.protobuf.FieldMask",
    "google.protobuf.DoubleValue", "google.protobuf.FloatValue",  "google.protobuf.Int64Value",
    "google.protobuf.UInt64Value", "google.protobuf.Int32Value",  "google.protobuf.UInt32Value",
    "google.protobuf.BoolValue",   "google.protobuf.StringValue", "google.protobuf.BytesValue",
};

/* A route and its http_kinds index, so matching compares no strings. */
typedef struct entry {
    az_route r;
    unsigned char kind;
} entry;

struct az_routes {
    az_route_method *methods;
    size_t nmethods;
    const az_route_method **by_path; /* sorted by grpc_path, for az_routes_find_method */
    entry *routes;
    size_t nroutes, caproutes;
    void **owned; /* the strings the routes and methods point to */
    size_t nowned, capowned;
};

/* ---- ownership ---- */

static az_err nomem(char *msg) { return az_fail(msg, AZ_ERR_NOMEM, "out of memory"); }

/* Records p as owned by t (freed with t); frees p itself if that fails. */
static az_err own(az_routes *t, void *p, char *msg)
{
    if (!p) return nomem(msg);
    if (t->nowned == t->capowned) {
        size_t nc = t->capowned ? t->capowned * 2 : 64;
        void **n = realloc(t->owned, nc * sizeof *n);
        if (!n) {
            free(p);
            return nomem(msg);
        }
        t->owned = n;
        t->capowned = nc;
    }
    t->owned[t->nowned++] = p;
    return AZ_OK;
}

static az_err own_str(az_routes *t, const char *s, const char **out, char *msg)
{
    char *copy = strdup(s);
    az_err err = own(t, copy, msg);
    *out = err ? NULL : copy;
    return err;
}

void az_routes_free(az_routes *t)
{
    if (!t) return;
    for (size_t i = 0; i < t->nroutes; i++) az_httprule_free((az_httprule *)t->routes[i].r.rule);
    for (size_t i = 0; i < t->nowned; i++) free(t->owned[i]);
    free(t->owned);
    free(t->routes);
    free(t->by_path);
    free(t->methods);
    free(t);
}

/* ---- field paths ---- */

int az_routes_is_value_type(const ProtobufCMessageDescriptor *d)
{
    for (size_t i = 0; d && i < sizeof value_types / sizeof value_types[0]; i++)
        if (strcmp(d->name, value_types[i]) == 0) return 1;
    return 0;
}

/* Checks that path (proto field names, "agent.id") names one value in desc: every step but the
 * last a singular message field that is not a well-known type, the last a singular scalar,
 * enum or value-like well-known type. */
static az_err check_value_path(const az_route_method *m, const ProtobufCMessageDescriptor *desc,
                               const char *path, char *msg)
{
    const char *p = path;
    for (;;) {
        const char *dot = strchr(p, '.');
        size_t n = dot ? (size_t)(dot - p) : strlen(p);
        const ProtobufCFieldDescriptor *f = NULL;
        for (unsigned i = 0; i < desc->n_fields; i++)
            if (strncmp(desc->fields[i].name, p, n) == 0 && desc->fields[i].name[n] == '\0')
                f = &desc->fields[i];
        if (!f)
            return az_fail(msg, AZ_ERR_INVALID, "%s: path variable %s: %s has no field %.*s",
                           m->grpc_path, path, desc->name, (int)n, p);
        bool message = f->type == PROTOBUF_C_TYPE_MESSAGE;
        if (f->label == PROTOBUF_C_LABEL_REPEATED)
            return az_fail(msg, AZ_ERR_INVALID, "%s: path variable %s: %.*s is repeated",
                           m->grpc_path, path, (int)(p + n - path), path);
        if (!dot) {
            if (message && !az_routes_is_value_type(f->descriptor))
                return az_fail(msg, AZ_ERR_INVALID, "%s: path variable %s: is a message",
                               m->grpc_path, path);
            return AZ_OK;
        }
        if (!message || az_routes_is_value_type(f->descriptor) ||
            strncmp(((const ProtobufCMessageDescriptor *)f->descriptor)->name, "google.protobuf.",
                    16) == 0)
            return az_fail(msg, AZ_ERR_INVALID, "%s: path variable %s: %.*s has no fields",
                           m->grpc_path, path, (int)(p + n - path), path);
        desc = f->descriptor;
        p = dot + 1;
    }
}

/* The body is "*" or a top-level singular message field of the request; response_body any
 * top-level field of the response. */
static az_err check_body(const az_route_method *m, const char *body, const char *response_body,
                         char *msg)
{
    if (body && strcmp(body, "*") != 0) {
        const ProtobufCFieldDescriptor *f =
            protobuf_c_message_descriptor_get_field_by_name(m->input, body);
        if (!f)
            return az_fail(msg, AZ_ERR_INVALID, "%s: body field %s is not a field of %s",
                           m->grpc_path, body, m->input->name);
        if (f->label == PROTOBUF_C_LABEL_REPEATED || f->type != PROTOBUF_C_TYPE_MESSAGE)
            return az_fail(msg, AZ_ERR_INVALID, "%s: body field %s must be a singular message",
                           m->grpc_path, body);
    }
    if (response_body && !protobuf_c_message_descriptor_get_field_by_name(m->output, response_body))
        return az_fail(msg, AZ_ERR_INVALID, "%s: response_body %s is not a field of %s",
                       m->grpc_path, response_body, m->output->name);
    return AZ_OK;
}

/* ---- building ---- */

static az_err add_route(az_routes *t, const az_route_method *m, const HttpRule *hr,
                        size_t binding, char *msg)
{
    size_t kind = NKINDS;
    for (size_t k = 0; k < NKINDS; k++)
        if (http_kinds[k].pattern == hr->pattern_case) kind = k;
    if (hr->pattern_case == GOOGLE__API__HTTP_RULE__PATTERN_CUSTOM)
        return az_fail(msg, AZ_ERR_INVALID, "%s: custom HTTP method %s is not supported",
                       m->grpc_path, hr->custom && hr->custom->kind ? hr->custom->kind : "");
    if (kind == NKINDS)
        return az_fail(msg, AZ_ERR_INVALID, "%s: google.api.http binding without a method",
                       m->grpc_path);
    if (binding && hr->n_additional_bindings)
        return az_fail(msg, AZ_ERR_INVALID, "%s: additional_bindings may not nest", m->grpc_path);
    const char *body = hr->body && hr->body[0] ? hr->body : NULL;
    const char *response_body = hr->response_body && hr->response_body[0] ? hr->response_body : NULL;
    az_err err = check_body(m, body, response_body, msg);
    if (err) return err;

    az_httprule *rule;
    char why[AZ_MSG_MAX];
    /* pattern is a oneof of strings: get, put, post, delete and patch share the slot */
    err = az_httprule_parse(hr->get, &rule, why);
    if (err) return az_fail(msg, err, "%s: %s", m->grpc_path, why);
    for (size_t v = 0; !err && v < az_httprule_nvars(rule); v++)
        err = check_value_path(m, m->input, az_httprule_var(rule, v), msg);
    if (!err && t->nroutes == t->caproutes) {
        size_t nc = t->caproutes ? t->caproutes * 2 : 32;
        entry *nr = realloc(t->routes, nc * sizeof *nr);
        if (nr) {
            t->routes = nr;
            t->caproutes = nc;
        } else {
            err = nomem(msg);
        }
    }
    if (!err && body) err = own_str(t, body, &body, msg);
    if (!err && response_body) err = own_str(t, response_body, &response_body, msg);
    if (err) {
        az_httprule_free(rule);
        return err;
    }
    t->routes[t->nroutes++] =
        (entry){{http_kinds[kind].name, rule, body, response_body, m, binding}, (unsigned char)kind};
    return AZ_OK;
}

/* The google.api.http option of a method, or NULL (and AZ_OK) when it has none. */
static az_err http_option(const az_route_method *m, const MethodProto *mp, HttpRule **out,
                          char *msg)
{
    *out = NULL;
    if (!mp->options) return AZ_OK;
    const ProtobufCMessage *o = &mp->options->base;
    for (unsigned i = 0; i < o->n_unknown_fields; i++) {
        const ProtobufCMessageUnknownField *u = &o->unknown_fields[i];
        if (u->tag != HTTP_OPTION_FIELD) continue;
        if (u->wire_type != PROTOBUF_C_WIRE_TYPE_LENGTH_PREFIXED || *out) {
            google__api__http_rule__free_unpacked(*out, NULL);
            *out = NULL;
            return az_fail(msg, AZ_ERR_INVALID, "%s: malformed google.api.http option",
                           m->grpc_path);
        }
        /* protobuf-c keeps a length-delimited unknown field with its length prefix */
        size_t pre = 0, n = 0;
        for (unsigned shift = 0; pre < u->len && pre < 10; shift += 7) {
            n |= (size_t)(u->data[pre] & 0x7f) << shift;
            if (!(u->data[pre++] & 0x80)) break;
        }
        if (pre == 0 || (u->data[pre - 1] & 0x80) || n != u->len - pre)
            return az_fail(msg, AZ_ERR_INVALID, "%s: malformed google.api.http option",
                           m->grpc_path);
        *out = google__api__http_rule__unpack(NULL, n, u->data + pre);
        if (!*out)
            return az_fail(msg, AZ_ERR_INVALID, "%s: google.api.http option does not parse",
                           m->grpc_path);
    }
    return AZ_OK;
}

static const ServiceProto *find_service(const FileSet *fs, const char *full)
{
    for (size_t i = 0; i < fs->n_file; i++) {
        const Google__Protobuf__FileDescriptorProto *f = fs->file[i];
        const char *pkg = f->package ? f->package : "";
        size_t pl = strlen(pkg);
        if (pl && (strncmp(full, pkg, pl) != 0 || full[pl] != '.')) continue;
        const char *rest = pl ? full + pl + 1 : full;
        for (size_t s = 0; s < f->n_service; s++)
            if (f->service[s]->name && strcmp(f->service[s]->name, rest) == 0) return f->service[s];
    }
    return NULL;
}

/* The descriptor set writes type names fully qualified with a leading dot. */
static bool same_type(const char *set_name, const ProtobufCMessageDescriptor *d)
{
    return set_name && set_name[0] == '.' && strcmp(set_name + 1, d->name) == 0;
}

static az_err add_service(az_routes *t, const FileSet *fs, const ProtobufCServiceDescriptor *sd,
                          char *msg)
{
    const ServiceProto *sp = find_service(fs, sd->name);
    if (!sp)
        return az_fail(msg, AZ_ERR_INVALID, "service %s is not in the descriptor set", sd->name);
    const char *service;
    az_err err = own_str(t, sd->name, &service, msg);
    for (unsigned i = 0; !err && i < sd->n_methods; i++) {
        const ProtobufCMethodDescriptor *md = &sd->methods[i];
        az_route_method *m = &t->methods[t->nmethods];
        size_t n = strlen(sd->name) + strlen(md->name) + 3;
        char *path = malloc(n);
        if (path) snprintf(path, n, "/%s/%s", sd->name, md->name);
        if ((err = own(t, path, msg)) != AZ_OK) break;
        const char *name = path + strlen(sd->name) + 2;
        const MethodProto *mp = NULL;
        for (size_t k = 0; k < sp->n_method; k++)
            if (sp->method[k]->name && strcmp(sp->method[k]->name, md->name) == 0)
                mp = sp->method[k];
        if (!mp) return az_fail(msg, AZ_ERR_INVALID, "%s is not in the descriptor set", path);
        if (!same_type(mp->input_type, md->input) || !same_type(mp->output_type, md->output))
            return az_fail(msg, AZ_ERR_INVALID,
                           "%s: the descriptor set says %s -> %s, the service %s -> %s", path,
                           mp->input_type ? mp->input_type : "?",
                           mp->output_type ? mp->output_type : "?", md->input->name,
                           md->output->name);
        *m = (az_route_method){path,          service, name, mp->server_streaming,
                               mp->client_streaming, md->input, md->output};
        t->nmethods++;
        HttpRule *hr;
        if ((err = http_option(m, mp, &hr, msg)) != AZ_OK || !hr) continue;
        err = add_route(t, m, hr, 0, msg);
        for (size_t k = 0; !err && k < hr->n_additional_bindings; k++)
            err = add_route(t, m, hr->additional_bindings[k], k + 1, msg);
        google__api__http_rule__free_unpacked(hr, NULL);
    }
    return err;
}

/* Most specific template first; for one template, GET before POST ... (the Allow order); then
 * the method order, so the sort is total and the table the same on every start. */
static int route_order(const void *pa, const void *pb)
{
    const entry *a = pa, *b = pb;
    int c = az_httprule_compare(a->r.rule, b->r.rule);
    if (c) return c;
    if (a->kind != b->kind) return a->kind < b->kind ? -1 : 1;
    return a->r.method < b->r.method ? -1 : a->r.method > b->r.method;
}

static az_err check_duplicates(const az_routes *t, char *msg)
{
    for (size_t i = 0; i < t->nroutes; i++) {
        for (size_t j = i + 1; j < t->nroutes; j++) {
            const az_route *a = &t->routes[i].r, *b = &t->routes[j].r;
            if (t->routes[i].kind == t->routes[j].kind && az_httprule_same_paths(a->rule, b->rule))
                return az_fail(msg, AZ_ERR_INVALID, "%s %s of %s and %s %s of %s collide",
                               a->http_method, az_httprule_template(a->rule),
                               a->method->grpc_path, b->http_method,
                               az_httprule_template(b->rule), b->method->grpc_path);
        }
    }
    return AZ_OK;
}

static int path_order(const void *pa, const void *pb)
{
    const az_route_method *a = *(const az_route_method *const *)pa,
                          *b = *(const az_route_method *const *)pb;
    return strcmp(a->grpc_path, b->grpc_path);
}

static az_err build(az_routes *t, const FileSet *fs,
                    const ProtobufCServiceDescriptor *const *services, size_t n, char *msg)
{
    size_t total = 0;
    for (size_t i = 0; i < n; i++) {
        if (!services[i] || services[i]->magic != PROTOBUF_C__SERVICE_DESCRIPTOR_MAGIC)
            return az_fail(msg, AZ_ERR_INVALID, "services[%zu] is not a service descriptor", i);
        total += services[i]->n_methods;
    }
    /* methods never move once routes point at them: allocate them all up front */
    t->methods = calloc(total ? total : 1, sizeof *t->methods);
    t->by_path = calloc(total ? total : 1, sizeof *t->by_path);
    if (!t->methods || !t->by_path) return nomem(msg);
    for (size_t i = 0; i < n; i++) {
        az_err err = add_service(t, fs, services[i], msg);
        if (err) return err;
    }
    for (size_t i = 0; i < t->nmethods; i++) t->by_path[i] = &t->methods[i];
    qsort(t->by_path, t->nmethods, sizeof *t->by_path, path_order);
    for (size_t i = 1; i < t->nmethods; i++)
        if (strcmp(t->by_path[i - 1]->grpc_path, t->by_path[i]->grpc_path) == 0)
            return az_fail(msg, AZ_ERR_INVALID, "%s is listed twice", t->by_path[i]->grpc_path);
    if (t->nroutes) qsort(t->routes, t->nroutes, sizeof *t->routes, route_order);
    return check_duplicates(t, msg);
}

az_err az_routes_new(const uint8_t *descset, size_t len,
                     const ProtobufCServiceDescriptor *const *services, size_t n,
                     az_routes **out, char *msg)
{
    if (!out) return az_fail(msg, AZ_ERR_INTERNAL, "az_routes_new: no output");
    *out = NULL;
    if ((!descset && len) || (!services && n))
        return az_fail(msg, AZ_ERR_INTERNAL, "az_routes_new: no descriptor set or services");
    FileSet *fs = google__protobuf__file_descriptor_set__unpack(NULL, len, descset);
    if (!fs) return az_fail(msg, AZ_ERR_INVALID, "the descriptor set does not parse");
    az_routes *t = calloc(1, sizeof *t);
    az_err err = t ? build(t, fs, services, n, msg) : nomem(msg);
    google__protobuf__file_descriptor_set__free_unpacked(fs, NULL);
    if (err) {
        az_routes_free(t);
        return err;
    }
    *out = t;
    return AZ_OK;
}

size_t az_routes_count(const az_routes *t) { return t ? t->nroutes : 0; }

const az_route *az_routes_at(const az_routes *t, size_t i)
{
    return t && i < t->nroutes ? &t->routes[i].r : NULL;
}

size_t az_routes_method_count(const az_routes *t) { return t ? t->nmethods : 0; }

const az_route_method *az_routes_method_at(const az_routes *t, size_t i)
{
    return t && i < t->nmethods ? &t->methods[i] : NULL;
}

const az_route_method *az_routes_find_method(const az_routes *t, const char *grpc_path,
                                             size_t len)
{
    if (!t || !grpc_path) return NULL;
    size_t lo = 0, hi = t->nmethods;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        const char *p = t->by_path[mid]->grpc_path;
        size_t pl = strlen(p);
        /* the order strcmp sorted by: bytes, then the shorter first */
        int c = memcmp(p, grpc_path, pl < len ? pl : len);
        if (c == 0) c = pl < len ? -1 : pl > len;
        if (c == 0) return t->by_path[mid];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

/* The http_kinds index of an HTTP method; HEAD is served by GET routes. NKINDS if none. */
static size_t kind_of(const char *http_method)
{
    if (strcmp(http_method, "HEAD") == 0) return 0;
    for (size_t k = 0; k < NKINDS; k++)
        if (strcmp(http_method, http_kinds[k].name) == 0) return k;
    return NKINDS;
}

/* "GET, PATCH, DELETE" into allow; a name that does not fit is left out whole. */
static void write_allow(unsigned seen, char *allow, size_t size)
{
    if (!allow || size == 0) return;
    size_t len = 0;
    allow[0] = '\0';
    for (size_t k = 0; k < NKINDS; k++) {
        if (!(seen & 1u << k)) continue;
        const char *sep = len ? ", " : "";
        size_t need = strlen(sep) + strlen(http_kinds[k].name);
        if (len + need >= size) break;
        len += (size_t)snprintf(allow + len, size - len, "%s%s", sep, http_kinds[k].name);
    }
}

az_route_result az_routes_match(const az_routes *t, const char *http_method, const char *path,
                                size_t len, const az_route **route, az_httprule_binding *b,
                                size_t max, size_t *nb, char *allow, size_t allow_size)
{
    if (allow && allow_size) allow[0] = '\0';
    if (!t || !http_method || !path || !route || (!b && max) || !nb) return AZ_ROUTE_NO_PATH;
    size_t want = kind_of(http_method);
    unsigned seen = 0;
    for (size_t i = 0; i < t->nroutes; i++) {
        const entry *e = &t->routes[i];
        /* once a method is known to be allowed, its other templates can only say so again */
        if (e->kind != want && (seen & 1u << e->kind)) continue;
        if (!az_httprule_match(e->r.rule, path, len, b, max, nb)) continue;
        if (e->kind == want) {
            *route = &e->r;
            return AZ_ROUTE_FOUND;
        }
        seen |= 1u << e->kind;
    }
    if (!seen) return AZ_ROUTE_NO_PATH;
    write_allow(seen, allow, allow_size);
    return AZ_ROUTE_BAD_METHOD;
}
