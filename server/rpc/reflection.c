/* gRPC server reflection: indexes the embedded FileDescriptorSet once, then answers
 * ServerReflectionInfo requests (v1 and v1alpha) from the index without allocating per file. */
#include "reflection.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "google/protobuf/descriptor.pb-c.h"
#include "grpc/reflection/v1/reflection.pb-c.h"

typedef Grpc__Reflection__V1__ServerReflectionRequest Req;
typedef Grpc__Reflection__V1__ServerReflectionResponse Resp;
typedef Google__Protobuf__FileDescriptorProto FileProto;
typedef Google__Protobuf__DescriptorProto MsgProto;
typedef Google__Protobuf__EnumDescriptorProto EnumProto;
typedef Google__Protobuf__FieldDescriptorProto FieldProto;

/* Reflection errors travel inside error_response with a gRPC status code. */
#define CODE_NOT_FOUND 5

typedef enum sym_kind {
    SYM_MESSAGE,
    SYM_ENUM,
    SYM_ENUM_VALUE,
    SYM_SERVICE,
    SYM_METHOD,
    SYM_EXTENSION,
} sym_kind;

typedef struct rfile {
    const char *name;        /* owned by fdp */
    const uint8_t *bytes;    /* the file's FileDescriptorProto, a slice of the borrowed set */
    size_t len;
    FileProto *fdp;          /* unpacked for indexing; freed with r */
    size_t *deps;            /* indexes of the files it imports, in import order */
    size_t ndeps;
} rfile;

typedef struct sym {
    char *name; /* fully qualified, no leading dot; owned */
    size_t file;
    sym_kind kind;
} sym;

typedef struct ext {
    const char *extendee; /* fully qualified message name, no leading dot; owned by the fdp */
    int32_t number;
    size_t file;
} ext;

struct az_reflection {
    rfile *files; /* in set order */
    size_t nfiles;
    struct byname {
        const char *name;
        size_t file;
    } *by_name; /* files sorted by name */
    sym *syms;       /* sorted by name after indexing */
    size_t nsyms, capsyms;
    ext *exts;
    size_t nexts, capexts;
    /* list_services answer, built once: names point into syms */
    Grpc__Reflection__V1__ServiceResponse *svc;
    Grpc__Reflection__V1__ServiceResponse **svcp;
    size_t nsvc, capsvc;
    az_method methods[2];
};

/* ---------------------------------------------------------------- set parsing */

static int read_varint(const uint8_t **p, const uint8_t *end, uint64_t *v)
{
    uint64_t x = 0;
    for (int shift = 0; shift < 64; shift += 7) {
        if (*p >= end) return -1;
        uint8_t b = *(*p)++;
        x |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) {
            *v = x;
            return 0;
        }
    }
    return -1;
}

/* Skips one field of wire type wt; -1 when truncated or a group (not used by descriptor sets). */
static int skip_field(const uint8_t **p, const uint8_t *end, unsigned wt)
{
    uint64_t n;
    switch (wt) {
    case 0: return read_varint(p, end, &n);
    case 1: n = 8; break;
    case 2:
        if (read_varint(p, end, &n) != 0) return -1;
        break;
    case 5: n = 4; break;
    default: return -1;
    }
    if (n > (uint64_t)(end - *p)) return -1;
    *p += n;
    return 0;
}

/* Appends one file: keeps the slice (no re-packing, so clients get protoc's exact bytes) and
 * unpacks it for indexing. */
static az_err add_file(az_reflection *r, size_t *cap, const uint8_t *bytes, size_t len, char *msg)
{
    if (r->nfiles == *cap) {
        size_t nc = *cap ? *cap * 2 : 16;
        rfile *nf = realloc(r->files, nc * sizeof *nf);
        if (!nf) return az_fail(msg, AZ_ERR_NOMEM, "out of memory");
        r->files = nf;
        *cap = nc;
    }
    FileProto *fdp = google__protobuf__file_descriptor_proto__unpack(NULL, len, bytes);
    if (!fdp)
        return az_fail(msg, AZ_ERR_INVALID,
                       "descriptor set: file %zu is not a valid FileDescriptorProto", r->nfiles);
    r->files[r->nfiles++] = (rfile){fdp->name, bytes, len, fdp, NULL, 0};
    if (!fdp->name || !fdp->name[0])
        return az_fail(msg, AZ_ERR_INVALID, "descriptor set: file %zu has no name", r->nfiles - 1);
    return AZ_OK;
}

/* Walks the FileDescriptorSet's wire format: field 1 (repeated FileDescriptorProto) is all
 * it holds; anything else is skipped. */
static az_err split_set(az_reflection *r, const uint8_t *p, size_t len, char *msg)
{
    const uint8_t *end = p + len;
    size_t cap = 0;
    while (p < end) {
        uint64_t key, n;
        if (read_varint(&p, end, &key) != 0) goto bad;
        unsigned wt = (unsigned)(key & 7);
        if (key >> 3 != 1 || wt != 2) {
            if (skip_field(&p, end, wt) != 0) goto bad;
            continue;
        }
        if (read_varint(&p, end, &n) != 0 || n > (uint64_t)(end - p)) goto bad;
        az_err err = add_file(r, &cap, p, (size_t)n, msg);
        if (err != AZ_OK) return err;
        p += n;
    }
    return AZ_OK;
bad:
    return az_fail(msg, AZ_ERR_INVALID, "descriptor set: truncated or malformed at byte %zu",
                   len - (size_t)(end - p));
}

/* ---------------------------------------------------------------- indexing */

static char *join(const char *scope, const char *name)
{
    size_t a = strlen(scope), b = strlen(name);
    char *s = malloc(a + b + 2);
    if (!s) return NULL;
    if (a) {
        memcpy(s, scope, a);
        s[a++] = '.';
    }
    memcpy(s + a, name, b + 1);
    return s;
}

/* Adds scope.name as a symbol; the new name is returned through *full (owned by r) so nested
 * definitions can use it as their scope. */
static az_err add_sym(az_reflection *r, size_t file, sym_kind kind, const char *scope,
                      const char *name, const char **full, char *msg)
{
    if (!name || !name[0])
        return az_fail(msg, AZ_ERR_INVALID, "descriptor set: %s defines an unnamed symbol in '%s'",
                       r->files[file].name, scope);
    if (r->nsyms == r->capsyms) {
        size_t nc = r->capsyms ? r->capsyms * 2 : 256;
        sym *ns = realloc(r->syms, nc * sizeof *ns);
        if (!ns) return az_fail(msg, AZ_ERR_NOMEM, "out of memory");
        r->syms = ns;
        r->capsyms = nc;
    }
    char *s = join(scope, name);
    if (!s) return az_fail(msg, AZ_ERR_NOMEM, "out of memory");
    r->syms[r->nsyms++] = (sym){s, file, kind};
    if (full) *full = s;
    return AZ_OK;
}

static az_err add_service_name(az_reflection *r, const char *name, char *msg)
{
    if (r->nsvc == r->capsvc) {
        size_t nc = r->capsvc ? r->capsvc * 2 : 16;
        Grpc__Reflection__V1__ServiceResponse *ns = realloc(r->svc, nc * sizeof *ns);
        if (!ns) return az_fail(msg, AZ_ERR_NOMEM, "out of memory");
        r->svc = ns;
        r->capsvc = nc;
    }
    grpc__reflection__v1__service_response__init(&r->svc[r->nsvc]);
    r->svc[r->nsvc++].name = (char *)name;
    return AZ_OK;
}

/* Extensions are symbols too ("google.api.http"), and are indexed by (extendee, number) for
 * file_containing_extension and all_extension_numbers_of_type. */
static az_err add_extensions(az_reflection *r, size_t file, const char *scope, FieldProto **fields,
                             size_t n, char *msg)
{
    for (size_t i = 0; i < n; i++) {
        const FieldProto *f = fields[i];
        az_err err = add_sym(r, file, SYM_EXTENSION, scope, f->name, NULL, msg);
        if (err != AZ_OK) return err;
        if (!f->extendee || !f->has_number) continue;
        if (r->nexts == r->capexts) {
            size_t nc = r->capexts ? r->capexts * 2 : 16;
            ext *ne = realloc(r->exts, nc * sizeof *ne);
            if (!ne) return az_fail(msg, AZ_ERR_NOMEM, "out of memory");
            r->exts = ne;
            r->capexts = nc;
        }
        const char *e = f->extendee[0] == '.' ? f->extendee + 1 : f->extendee;
        r->exts[r->nexts++] = (ext){e, f->number, file};
    }
    return AZ_OK;
}

/* Enum values are scoped like protoc scopes them: siblings of their enum, not children. */
static az_err add_enums(az_reflection *r, size_t file, const char *scope, EnumProto **enums,
                        size_t n, char *msg)
{
    for (size_t i = 0; i < n; i++) {
        az_err err = add_sym(r, file, SYM_ENUM, scope, enums[i]->name, NULL, msg);
        for (size_t v = 0; err == AZ_OK && v < enums[i]->n_value; v++)
            err = add_sym(r, file, SYM_ENUM_VALUE, scope, enums[i]->value[v]->name, NULL, msg);
        if (err != AZ_OK) return err;
    }
    return AZ_OK;
}

static az_err add_message(az_reflection *r, size_t file, const char *scope, const MsgProto *m,
                          char *msg)
{
    const char *full;
    az_err err = add_sym(r, file, SYM_MESSAGE, scope, m->name, &full, msg);
    if (err == AZ_OK) err = add_enums(r, file, full, m->enum_type, m->n_enum_type, msg);
    if (err == AZ_OK) err = add_extensions(r, file, full, m->extension, m->n_extension, msg);
    for (size_t i = 0; err == AZ_OK && i < m->n_nested_type; i++)
        err = add_message(r, file, full, m->nested_type[i], msg);
    return err;
}

static az_err index_file(az_reflection *r, size_t file, char *msg)
{
    const FileProto *f = r->files[file].fdp;
    const char *pkg = f->package ? f->package : "";
    az_err err = add_enums(r, file, pkg, f->enum_type, f->n_enum_type, msg);
    if (err == AZ_OK) err = add_extensions(r, file, pkg, f->extension, f->n_extension, msg);
    for (size_t i = 0; err == AZ_OK && i < f->n_message_type; i++)
        err = add_message(r, file, pkg, f->message_type[i], msg);
    for (size_t i = 0; err == AZ_OK && i < f->n_service; i++) {
        const Google__Protobuf__ServiceDescriptorProto *s = f->service[i];
        const char *full;
        err = add_sym(r, file, SYM_SERVICE, pkg, s->name, &full, msg);
        if (err == AZ_OK) err = add_service_name(r, full, msg);
        for (size_t k = 0; err == AZ_OK && k < s->n_method; k++)
            err = add_sym(r, file, SYM_METHOD, full, s->method[k]->name, NULL, msg);
    }
    return err;
}

static int sym_cmp(const void *a, const void *b)
{
    return strcmp(((const sym *)a)->name, ((const sym *)b)->name);
}

static int byname_cmp(const void *a, const void *b)
{
    return strcmp(((const struct byname *)a)->name, ((const struct byname *)b)->name);
}

/* Binary search by name; SIZE_MAX when absent. */
static size_t find_file(const az_reflection *r, const char *name)
{
    struct byname key = {name, 0};
    const struct byname *b = bsearch(&key, r->by_name, r->nfiles, sizeof *r->by_name, byname_cmp);
    return b ? b->file : SIZE_MAX;
}

static const sym *find_sym(const az_reflection *r, const char *name)
{
    if (name[0] == '.') name++;
    if (!r->nsyms) return NULL;
    sym key = {(char *)name, 0, SYM_MESSAGE};
    return bsearch(&key, r->syms, r->nsyms, sizeof *r->syms, sym_cmp);
}

static az_err link_deps(az_reflection *r, size_t file, char *msg)
{
    rfile *f = &r->files[file];
    if (f->fdp->n_dependency == 0) return AZ_OK;
    f->deps = malloc(f->fdp->n_dependency * sizeof *f->deps);
    if (!f->deps) return az_fail(msg, AZ_ERR_NOMEM, "out of memory");
    for (size_t i = 0; i < f->fdp->n_dependency; i++) {
        size_t d = find_file(r, f->fdp->dependency[i]);
        if (d == SIZE_MAX)
            return az_fail(msg, AZ_ERR_INVALID,
                           "descriptor set: %s imports %s, which is not in the set (build it with "
                           "--include_imports)",
                           f->name, f->fdp->dependency[i]);
        f->deps[f->ndeps++] = d;
    }
    return AZ_OK;
}

static az_err build_index(az_reflection *r, char *msg)
{
    r->by_name = malloc((r->nfiles ? r->nfiles : 1) * sizeof *r->by_name);
    if (!r->by_name) return az_fail(msg, AZ_ERR_NOMEM, "out of memory");
    for (size_t i = 0; i < r->nfiles; i++) r->by_name[i] = (struct byname){r->files[i].name, i};
    qsort(r->by_name, r->nfiles, sizeof *r->by_name, byname_cmp);
    for (size_t i = 1; i < r->nfiles; i++) {
        if (strcmp(r->by_name[i - 1].name, r->by_name[i].name) == 0)
            return az_fail(msg, AZ_ERR_INVALID, "descriptor set: file %s appears twice",
                           r->by_name[i].name);
    }
    for (size_t i = 0; i < r->nfiles; i++) {
        az_err err = link_deps(r, i, msg);
        if (err == AZ_OK) err = index_file(r, i, msg);
        if (err != AZ_OK) return err;
    }
    if (r->nsyms) qsort(r->syms, r->nsyms, sizeof *r->syms, sym_cmp);
    for (size_t i = 1; i < r->nsyms; i++) {
        if (strcmp(r->syms[i - 1].name, r->syms[i].name) == 0)
            return az_fail(msg, AZ_ERR_INVALID, "descriptor set: symbol %s defined in %s and %s",
                           r->syms[i].name, r->files[r->syms[i - 1].file].name,
                           r->files[r->syms[i].file].name);
    }
    r->svcp = malloc((r->nsvc ? r->nsvc : 1) * sizeof *r->svcp);
    if (!r->svcp) return az_fail(msg, AZ_ERR_NOMEM, "out of memory");
    for (size_t i = 0; i < r->nsvc; i++) r->svcp[i] = &r->svc[i];
    return AZ_OK;
}

/* ---------------------------------------------------------------- closures */

/* Writes file f and its transitive imports into out (room for r->nfiles), f first, then
 * breadth-first in import order, each once; returns the count. seen has r->nfiles bytes. */
static size_t closure(const az_reflection *r, size_t f, size_t *out, unsigned char *seen)
{
    memset(seen, 0, r->nfiles);
    size_t n = 0;
    out[n++] = f;
    seen[f] = 1;
    for (size_t head = 0; head < n; head++) {
        const rfile *cur = &r->files[out[head]];
        for (size_t i = 0; i < cur->ndeps; i++) {
            size_t d = cur->deps[i];
            if (!seen[d]) {
                seen[d] = 1;
                out[n++] = d;
            }
        }
    }
    return n;
}

/* ---------------------------------------------------------------- answers */

/* Everything one response points at besides r's own data; freed after it is sent. */
typedef struct reply {
    Resp resp;
    Req echo; /* the request as echoed back: known fields only */
    Grpc__Reflection__V1__FileDescriptorResponse files;
    Grpc__Reflection__V1__ListServiceResponse list;
    Grpc__Reflection__V1__ExtensionNumberResponse numbers;
    Grpc__Reflection__V1__ErrorResponse error;
    ProtobufCBinaryData *blobs;
    int32_t *nums;
    char errmsg[AZ_MSG_MAX];
} reply;

static az_err reply_files(const az_reflection *r, size_t f, reply *rep, char *msg)
{
    size_t *idx = malloc(r->nfiles * sizeof *idx);
    unsigned char *seen = malloc(r->nfiles);
    rep->blobs = malloc(r->nfiles * sizeof *rep->blobs);
    if (!idx || !seen || !rep->blobs) {
        free(idx);
        free(seen);
        return az_fail(msg, AZ_ERR_NOMEM, "out of memory");
    }
    size_t n = closure(r, f, idx, seen);
    for (size_t i = 0; i < n; i++)
        rep->blobs[i] = (ProtobufCBinaryData){r->files[idx[i]].len, (uint8_t *)r->files[idx[i]].bytes};
    free(idx);
    free(seen);
    grpc__reflection__v1__file_descriptor_response__init(&rep->files);
    rep->files.n_file_descriptor_proto = n;
    rep->files.file_descriptor_proto = rep->blobs;
    rep->resp.message_response_case =
        GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_FILE_DESCRIPTOR_RESPONSE;
    rep->resp.file_descriptor_response = &rep->files;
    return AZ_OK;
}

static az_err answer_file_by_filename(const az_reflection *r, const Req *q, reply *rep, char *msg)
{
    size_t f = find_file(r, q->file_by_filename);
    if (f == SIZE_MAX) return az_fail(msg, AZ_ERR_NOT_FOUND, "file not found: %s", q->file_by_filename);
    return reply_files(r, f, rep, msg);
}

static az_err answer_file_containing_symbol(const az_reflection *r, const Req *q, reply *rep,
                                            char *msg)
{
    const sym *s = find_sym(r, q->file_containing_symbol);
    if (!s) return az_fail(msg, AZ_ERR_NOT_FOUND, "symbol not found: %s", q->file_containing_symbol);
    return reply_files(r, s->file, rep, msg);
}

/* The extendee must be a known message, as in gRPC's own implementations. */
static const char *known_message(const az_reflection *r, const char *name)
{
    const sym *s = find_sym(r, name);
    return s && s->kind == SYM_MESSAGE ? s->name : NULL;
}

static az_err answer_file_containing_extension(const az_reflection *r, const Req *q, reply *rep,
                                               char *msg)
{
    const Grpc__Reflection__V1__ExtensionRequest *e = q->file_containing_extension;
    const char *type = e && e->containing_type ? e->containing_type : "";
    const char *full = known_message(r, type);
    if (!full) return az_fail(msg, AZ_ERR_NOT_FOUND, "type not found: %s", type);
    for (size_t i = 0; i < r->nexts; i++) {
        if (r->exts[i].number == e->extension_number && strcmp(r->exts[i].extendee, full) == 0)
            return reply_files(r, r->exts[i].file, rep, msg);
    }
    return az_fail(msg, AZ_ERR_NOT_FOUND, "extension %d of %s not found", (int)e->extension_number,
                   full);
}

static az_err answer_all_extension_numbers(const az_reflection *r, const Req *q, reply *rep,
                                           char *msg)
{
    const char *full = known_message(r, q->all_extension_numbers_of_type);
    if (!full)
        return az_fail(msg, AZ_ERR_NOT_FOUND, "type not found: %s", q->all_extension_numbers_of_type);
    rep->nums = malloc((r->nexts ? r->nexts : 1) * sizeof *rep->nums);
    if (!rep->nums) return az_fail(msg, AZ_ERR_NOMEM, "out of memory");
    size_t n = 0;
    for (size_t i = 0; i < r->nexts; i++) {
        if (strcmp(r->exts[i].extendee, full) == 0) rep->nums[n++] = r->exts[i].number;
    }
    grpc__reflection__v1__extension_number_response__init(&rep->numbers);
    rep->numbers.base_type_name = (char *)full;
    rep->numbers.n_extension_number = n;
    rep->numbers.extension_number = rep->nums;
    rep->resp.message_response_case =
        GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_ALL_EXTENSION_NUMBERS_RESPONSE;
    rep->resp.all_extension_numbers_response = &rep->numbers;
    return AZ_OK;
}

/* The request's list_services string is meant to be ignored ("*" by convention). */
static az_err answer_list_services(const az_reflection *r, const Req *q, reply *rep, char *msg)
{
    (void)q;
    (void)msg;
    grpc__reflection__v1__list_service_response__init(&rep->list);
    rep->list.n_service = r->nsvc;
    rep->list.service = r->svcp;
    rep->resp.message_response_case =
        GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_LIST_SERVICES_RESPONSE;
    rep->resp.list_services_response = &rep->list;
    return AZ_OK;
}

typedef az_err (*answer_fn)(const az_reflection *r, const Req *q, reply *rep, char *msg);

static const struct {
    Grpc__Reflection__V1__ServerReflectionRequest__MessageRequestCase kind;
    answer_fn fn;
} answers[] = {
    {GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_BY_FILENAME,
     answer_file_by_filename},
    {GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_CONTAINING_SYMBOL,
     answer_file_containing_symbol},
    {GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_CONTAINING_EXTENSION,
     answer_file_containing_extension},
    {GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_ALL_EXTENSION_NUMBERS_OF_TYPE,
     answer_all_extension_numbers},
    {GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_LIST_SERVICES,
     answer_list_services},
};

/* Fills rep for q. Never fails: every problem becomes an error_response, so one bad request
 * does not end the client's stream. Call reply_free afterwards. */
static void answer(const az_reflection *r, const Req *q, reply *rep)
{
    memset(rep, 0, sizeof *rep);
    grpc__reflection__v1__server_reflection_response__init(&rep->resp);
    rep->resp.valid_host = q->host;
    /* Unknown fields are echoed by protobuf-c as they came, and a malformed one (field number
     * 0, found by fuzzing) would make the whole response unparseable: echo known fields only. */
    rep->echo = *q;
    rep->echo.base.n_unknown_fields = 0;
    rep->echo.base.unknown_fields = NULL;
    rep->resp.original_request = &rep->echo;
    answer_fn fn = NULL;
    for (size_t i = 0; i < sizeof answers / sizeof answers[0]; i++) {
        if (answers[i].kind == q->message_request_case) fn = answers[i].fn;
    }
    az_err err = fn ? fn(r, q, rep, rep->errmsg)
                    : az_fail(rep->errmsg, AZ_ERR_UNIMPLEMENTED,
                              "unsupported reflection request (message_request %d)",
                              (int)q->message_request_case);
    if (err == AZ_OK) return;
    grpc__reflection__v1__error_response__init(&rep->error);
    rep->error.error_code = az_err_grpc_status(err);
    rep->error.error_message = rep->errmsg;
    rep->resp.message_response_case =
        GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_ERROR_RESPONSE;
    rep->resp.error_response = &rep->error;
}

static void reply_free(reply *rep)
{
    free(rep->blobs);
    free(rep->nums);
}

/* ---------------------------------------------------------------- the stream */

static az_err reflection_info(az_call *c, const ProtobufCMessage *req, char *msg)
{
    if (!req) { /* client half-closed: every request has been answered */
        az_call_finish(c, AZ_OK, NULL);
        return AZ_OK;
    }
    const az_reflection *r = az_call_data(c);
    if (req->descriptor != &grpc__reflection__v1__server_reflection_request__descriptor)
        return az_fail(msg, AZ_ERR_INTERNAL, "reflection: unexpected request type %s",
                       req->descriptor->name);
    reply rep;
    answer(r, (const Req *)req, &rep);
    az_err err = az_call_send(c, &rep.resp.base);
    reply_free(&rep);
    if (err != AZ_OK)
        return az_fail(msg, err, "cannot send reflection response: %s", az_err_name(err));
    return AZ_OK;
}

/* ---------------------------------------------------------------- public */

az_reflection *az_reflection_new(const unsigned char *set, size_t len, char *msg)
{
    az_reflection *r = calloc(1, sizeof *r);
    if (!r) {
        az_fail(msg, AZ_ERR_NOMEM, "out of memory");
        return NULL;
    }
    az_err err = split_set(r, set, len, msg);
    if (err == AZ_OK) err = build_index(r, msg);
    if (err != AZ_OK) {
        az_reflection_free(r);
        return NULL;
    }
    /* v1alpha's messages are v1's under another package name (same fields and numbers), so
     * both methods decode and encode with the v1 C types and share one handler. */
    for (size_t i = 0; i < 2; i++) {
        r->methods[i] = (az_method){
            .path = i == 0 ? "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"
                           : "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
            .kind = AZ_RPC_BIDI,
            .input = &grpc__reflection__v1__server_reflection_request__descriptor,
            .output = &grpc__reflection__v1__server_reflection_response__descriptor,
            .bidi = reflection_info,
            .data = r,
        };
    }
    return r;
}

void az_reflection_free(az_reflection *r)
{
    if (!r) return;
    for (size_t i = 0; i < r->nfiles; i++) {
        google__protobuf__file_descriptor_proto__free_unpacked(r->files[i].fdp, NULL);
        free(r->files[i].deps);
    }
    for (size_t i = 0; i < r->nsyms; i++) free(r->syms[i].name);
    free(r->files);
    free(r->by_name);
    free(r->syms);
    free(r->exts);
    free(r->svc);
    free(r->svcp);
    free(r);
}

const az_method *az_reflection_methods(az_reflection *r, size_t *n)
{
    *n = 2;
    return r->methods;
}

az_err az_reflection_lookup_symbol(const az_reflection *r, const char *symbol,
                                   const char **file_name, char *msg)
{
    const sym *s = find_sym(r, symbol);
    if (!s) return az_fail(msg, AZ_ERR_NOT_FOUND, "symbol not found: %s", symbol);
    *file_name = r->files[s->file].name;
    return AZ_OK;
}

az_err az_reflection_file_closure(const az_reflection *r, const char *file_name,
                                  const char **names, size_t cap, size_t *n, char *msg)
{
    size_t f = find_file(r, file_name);
    if (f == SIZE_MAX) return az_fail(msg, AZ_ERR_NOT_FOUND, "file not found: %s", file_name);
    size_t *idx = malloc(r->nfiles * sizeof *idx);
    unsigned char *seen = malloc(r->nfiles);
    if (!idx || !seen) {
        free(idx);
        free(seen);
        return az_fail(msg, AZ_ERR_NOMEM, "out of memory");
    }
    *n = closure(r, f, idx, seen);
    for (size_t i = 0; i < *n && i < cap; i++) names[i] = r->files[idx[i]].name;
    free(idx);
    free(seen);
    return AZ_OK;
}

az_err az_reflection_answer(const az_reflection *r, const unsigned char *req, size_t req_len,
                            unsigned char **out, size_t *out_len, char *msg)
{
    Req *q = grpc__reflection__v1__server_reflection_request__unpack(NULL, req_len, req);
    if (!q) return az_fail(msg, AZ_ERR_INVALID, "request is not a valid ServerReflectionRequest");
    reply rep;
    answer(r, q, &rep);
    az_err err = AZ_OK;
    *out_len = grpc__reflection__v1__server_reflection_response__get_packed_size(&rep.resp);
    *out = malloc(*out_len ? *out_len : 1);
    if (*out) grpc__reflection__v1__server_reflection_response__pack(&rep.resp, *out);
    else err = az_fail(msg, AZ_ERR_NOMEM, "out of memory");
    reply_free(&rep);
    grpc__reflection__v1__server_reflection_request__free_unpacked(q, NULL);
    return err;
}
