/* Unit tests for server reflection: indexing, symbol lookup, dependency closures and the
 * request-to-response logic, against a synthetic descriptor set and the embedded real one. */
#include <CUnit/Basic.h>
#include <stdlib.h>
#include <string.h>

#include "descriptor_set.h"
#include "google/protobuf/descriptor.pb-c.h"
#include "grpc/reflection/v1/reflection.pb-c.h"
#include "rpc/reflection.h"

typedef Google__Protobuf__FileDescriptorProto FileProto;
typedef Google__Protobuf__DescriptorProto MsgProto;
typedef Google__Protobuf__EnumDescriptorProto EnumProto;
typedef Google__Protobuf__EnumValueDescriptorProto ValueProto;
typedef Google__Protobuf__FieldDescriptorProto FieldProto;
typedef Google__Protobuf__ServiceDescriptorProto SvcProto;
typedef Google__Protobuf__MethodDescriptorProto MethodProto;
typedef Grpc__Reflection__V1__ServerReflectionRequest Req;
typedef Grpc__Reflection__V1__ServerReflectionResponse Resp;

/* ---------------------------------------------------------------- a synthetic set
 *
 *   d.proto  package t.d: message D { message Inner { message Deep {} } enum Kind { KIND_A } }
 *            enum Color { RED, GREEN }
 *   b.proto  package t.b, imports d.proto: message B
 *   c.proto  package t.c, imports d.proto: service CSvc { Do }, extend t.d.D { ext_opt = 100 }
 *   a.proto  package t.a, imports b.proto, c.proto: service ASvc { Get, List }, message A
 *
 * a's closure is a, b, c, d: the diamond through b and c yields d once. */

static unsigned char *g_set;
static size_t g_set_len;

/* Packs files into a FileDescriptorSet; the caller frees the result. */
static unsigned char *pack_set(FileProto **files, size_t n, size_t *len)
{
    Google__Protobuf__FileDescriptorSet set = GOOGLE__PROTOBUF__FILE_DESCRIPTOR_SET__INIT;
    set.n_file = n;
    set.file = files;
    *len = google__protobuf__file_descriptor_set__get_packed_size(&set);
    unsigned char *buf = malloc(*len ? *len : 1);
    google__protobuf__file_descriptor_set__pack(&set, buf);
    return buf;
}

static unsigned char *build_synthetic(size_t *len, int with_d, int duplicate_d)
{
    /* d.proto */
    MsgProto deep = GOOGLE__PROTOBUF__DESCRIPTOR_PROTO__INIT;
    deep.name = "Deep";
    MsgProto *inner_nested[] = {&deep};
    MsgProto inner = GOOGLE__PROTOBUF__DESCRIPTOR_PROTO__INIT;
    inner.name = "Inner";
    inner.n_nested_type = 1;
    inner.nested_type = inner_nested;
    ValueProto kind_a = GOOGLE__PROTOBUF__ENUM_VALUE_DESCRIPTOR_PROTO__INIT;
    kind_a.name = "KIND_A";
    ValueProto *kind_values[] = {&kind_a};
    EnumProto kind = GOOGLE__PROTOBUF__ENUM_DESCRIPTOR_PROTO__INIT;
    kind.name = "Kind";
    kind.n_value = 1;
    kind.value = kind_values;
    MsgProto *d_nested[] = {&inner};
    EnumProto *d_enums[] = {&kind};
    MsgProto dmsg = GOOGLE__PROTOBUF__DESCRIPTOR_PROTO__INIT;
    dmsg.name = "D";
    dmsg.n_nested_type = 1;
    dmsg.nested_type = d_nested;
    dmsg.n_enum_type = 1;
    dmsg.enum_type = d_enums;
    ValueProto red = GOOGLE__PROTOBUF__ENUM_VALUE_DESCRIPTOR_PROTO__INIT, green = red;
    red.name = "RED";
    green.name = "GREEN";
    green.has_number = 1;
    green.number = 1;
    ValueProto *color_values[] = {&red, &green};
    EnumProto color = GOOGLE__PROTOBUF__ENUM_DESCRIPTOR_PROTO__INIT;
    color.name = "Color";
    color.n_value = 2;
    color.value = color_values;
    MsgProto *d_msgs[] = {&dmsg};
    EnumProto *d_top_enums[] = {&color};
    FileProto d = GOOGLE__PROTOBUF__FILE_DESCRIPTOR_PROTO__INIT;
    d.name = "d.proto";
    d.package = "t.d";
    d.n_message_type = 1;
    d.message_type = d_msgs;
    d.n_enum_type = 1;
    d.enum_type = d_top_enums;

    /* b.proto */
    char *b_deps[] = {"d.proto"};
    MsgProto bmsg = GOOGLE__PROTOBUF__DESCRIPTOR_PROTO__INIT;
    bmsg.name = "B";
    MsgProto *b_msgs[] = {&bmsg};
    FileProto b = GOOGLE__PROTOBUF__FILE_DESCRIPTOR_PROTO__INIT;
    b.name = "b.proto";
    b.package = "t.b";
    b.n_dependency = 1;
    b.dependency = b_deps;
    b.n_message_type = 1;
    b.message_type = b_msgs;

    /* c.proto */
    MethodProto cdo = GOOGLE__PROTOBUF__METHOD_DESCRIPTOR_PROTO__INIT;
    cdo.name = "Do";
    cdo.input_type = ".t.d.D";
    cdo.output_type = ".t.d.D";
    MethodProto *c_methods[] = {&cdo};
    SvcProto csvc = GOOGLE__PROTOBUF__SERVICE_DESCRIPTOR_PROTO__INIT;
    csvc.name = "CSvc";
    csvc.n_method = 1;
    csvc.method = c_methods;
    SvcProto *c_svcs[] = {&csvc};
    FieldProto ext = GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__INIT;
    ext.name = "ext_opt";
    ext.has_number = 1;
    ext.number = 100;
    ext.extendee = ".t.d.D";
    FieldProto *c_exts[] = {&ext};
    FileProto c = GOOGLE__PROTOBUF__FILE_DESCRIPTOR_PROTO__INIT;
    c.name = "c.proto";
    c.package = "t.c";
    c.n_dependency = 1;
    c.dependency = b_deps;
    c.n_service = 1;
    c.service = c_svcs;
    c.n_extension = 1;
    c.extension = c_exts;

    /* a.proto */
    char *a_deps[] = {"b.proto", "c.proto"};
    MethodProto aget = GOOGLE__PROTOBUF__METHOD_DESCRIPTOR_PROTO__INIT, alist = aget;
    aget.name = "Get";
    alist.name = "List";
    MethodProto *a_methods[] = {&aget, &alist};
    SvcProto asvc = GOOGLE__PROTOBUF__SERVICE_DESCRIPTOR_PROTO__INIT;
    asvc.name = "ASvc";
    asvc.n_method = 2;
    asvc.method = a_methods;
    SvcProto *a_svcs[] = {&asvc};
    MsgProto amsg = GOOGLE__PROTOBUF__DESCRIPTOR_PROTO__INIT;
    amsg.name = "A";
    MsgProto *a_msgs[] = {&amsg};
    FileProto a = GOOGLE__PROTOBUF__FILE_DESCRIPTOR_PROTO__INIT;
    a.name = "a.proto";
    a.package = "t.a";
    a.n_dependency = 2;
    a.dependency = a_deps;
    a.n_service = 1;
    a.service = a_svcs;
    a.n_message_type = 1;
    a.message_type = a_msgs;

    /* a second file defining t.d.D */
    FileProto d2 = d;
    d2.name = "d2.proto";
    d2.n_enum_type = 0;

    FileProto *files[5];
    size_t n = 0;
    if (with_d) files[n++] = &d;
    if (duplicate_d) files[n++] = &d2;
    files[n++] = &b;
    files[n++] = &c;
    files[n++] = &a;
    return pack_set(files, n, len);
}

static int suite_init(void)
{
    g_set = build_synthetic(&g_set_len, 1, 0);
    return g_set ? 0 : 1;
}

static int suite_clean(void)
{
    free(g_set);
    return 0;
}

static az_reflection *synthetic(void)
{
    char msg[AZ_MSG_MAX] = "";
    az_reflection *r = az_reflection_new(g_set, g_set_len, msg);
    CU_ASSERT_PTR_NOT_NULL_FATAL(r);
    return r;
}

static void expect_symbol(az_reflection *r, const char *symbol, const char *file)
{
    char msg[AZ_MSG_MAX] = "";
    const char *got = NULL;
    az_err err = az_reflection_lookup_symbol(r, symbol, &got, msg);
    CU_ASSERT_EQUAL(err, AZ_OK);
    if (err != AZ_OK) {
        fprintf(stderr, "\n  lookup %s: %s\n", symbol, msg);
        return;
    }
    CU_ASSERT_STRING_EQUAL(got, file);
}

static void expect_no_symbol(az_reflection *r, const char *symbol)
{
    char msg[AZ_MSG_MAX] = "";
    const char *got = NULL;
    CU_ASSERT_EQUAL(az_reflection_lookup_symbol(r, symbol, &got, msg), AZ_ERR_NOT_FOUND);
    CU_ASSERT_PTR_NOT_NULL(strstr(msg, symbol[0] ? symbol : "symbol not found"));
}

/* ---------------------------------------------------------------- symbols */

static void test_symbols(void)
{
    az_reflection *r = synthetic();
    expect_symbol(r, "t.d.D", "d.proto");
    expect_symbol(r, "t.d.D.Inner", "d.proto");
    expect_symbol(r, "t.d.D.Inner.Deep", "d.proto");
    expect_symbol(r, "t.d.D.Kind", "d.proto");
    expect_symbol(r, "t.d.D.KIND_A", "d.proto"); /* enum values are siblings of their enum */
    expect_symbol(r, "t.d.Color", "d.proto");
    expect_symbol(r, "t.d.GREEN", "d.proto");
    expect_symbol(r, "t.b.B", "b.proto");
    expect_symbol(r, "t.c.CSvc", "c.proto");
    expect_symbol(r, "t.c.CSvc.Do", "c.proto");
    expect_symbol(r, "t.c.ext_opt", "c.proto");
    expect_symbol(r, "t.a.ASvc", "a.proto");
    expect_symbol(r, "t.a.ASvc.Get", "a.proto");
    expect_symbol(r, "t.a.ASvc.List", "a.proto");
    expect_symbol(r, ".t.a.A", "a.proto"); /* fully-qualified with the leading dot */
    az_reflection_free(r);
}

static void test_unknown_symbols(void)
{
    az_reflection *r = synthetic();
    expect_no_symbol(r, "t.a.ASvc.Delete");
    expect_no_symbol(r, "t.d.D.Kind.KIND_A"); /* values are not children of the enum */
    expect_no_symbol(r, "t.d");               /* packages are not symbols */
    expect_no_symbol(r, "D");
    expect_no_symbol(r, "t.d.D.Inner.Deep.X");
    expect_no_symbol(r, "");
    az_reflection_free(r);
}

/* ---------------------------------------------------------------- closures */

static void expect_closure(az_reflection *r, const char *file, const char *const *want, size_t nwant)
{
    char msg[AZ_MSG_MAX] = "";
    const char *names[16];
    size_t n = 0;
    CU_ASSERT_EQUAL_FATAL(az_reflection_file_closure(r, file, names, 16, &n, msg), AZ_OK);
    CU_ASSERT_EQUAL_FATAL(n, nwant);
    for (size_t i = 0; i < n; i++) CU_ASSERT_STRING_EQUAL(names[i], want[i]);
}

static void test_closure_order(void)
{
    az_reflection *r = synthetic();
    expect_closure(r, "a.proto", (const char *const[]){"a.proto", "b.proto", "c.proto", "d.proto"}, 4);
    expect_closure(r, "c.proto", (const char *const[]){"c.proto", "d.proto"}, 2);
    expect_closure(r, "d.proto", (const char *const[]){"d.proto"}, 1);

    /* *n reports the full size even when names has less room */
    char msg[AZ_MSG_MAX] = "";
    const char *one[1];
    size_t n = 0;
    CU_ASSERT_EQUAL(az_reflection_file_closure(r, "a.proto", one, 1, &n, msg), AZ_OK);
    CU_ASSERT_EQUAL(n, 4);
    CU_ASSERT_STRING_EQUAL(one[0], "a.proto");

    CU_ASSERT_EQUAL(az_reflection_file_closure(r, "nope.proto", NULL, 0, &n, msg), AZ_ERR_NOT_FOUND);
    CU_ASSERT_PTR_NOT_NULL(strstr(msg, "nope.proto"));
    az_reflection_free(r);
}

/* ---------------------------------------------------------------- bad sets */

static void test_bad_sets(void)
{
    char msg[AZ_MSG_MAX] = "";
    size_t len;

    unsigned char *missing = build_synthetic(&len, 0, 0);
    CU_ASSERT_PTR_NULL(az_reflection_new(missing, len, msg));
    CU_ASSERT_PTR_NOT_NULL(strstr(msg, "d.proto"));
    free(missing);

    msg[0] = '\0';
    unsigned char *dup = build_synthetic(&len, 1, 1);
    CU_ASSERT_PTR_NULL(az_reflection_new(dup, len, msg));
    CU_ASSERT_PTR_NOT_NULL(strstr(msg, "t.d.D"));
    free(dup);

    /* field 1, length 100, but only 2 bytes follow */
    const unsigned char truncated[] = {0x0a, 0x64, 0x0a, 0x00};
    msg[0] = '\0';
    CU_ASSERT_PTR_NULL(az_reflection_new(truncated, sizeof truncated, msg));
    CU_ASSERT_PTR_NOT_NULL(strstr(msg, "malformed"));

    /* a file without a name */
    const unsigned char nameless[] = {0x0a, 0x03, 0x12, 0x01, 'x'};
    msg[0] = '\0';
    CU_ASSERT_PTR_NULL(az_reflection_new(nameless, sizeof nameless, msg));
    CU_ASSERT_PTR_NOT_NULL(strstr(msg, "no name"));

    /* an empty set is valid: nothing to list */
    az_reflection *r = az_reflection_new((const unsigned char *)"", 0, msg);
    CU_ASSERT_PTR_NOT_NULL(r);
    az_reflection_free(r);
    az_reflection_free(NULL);
}

/* ---------------------------------------------------------------- answers */

/* Packs q, answers it and unpacks the response (free with ..._free_unpacked). */
static Resp *ask(az_reflection *r, const Req *q)
{
    size_t len = grpc__reflection__v1__server_reflection_request__get_packed_size(q);
    unsigned char *buf = malloc(len + 1);
    grpc__reflection__v1__server_reflection_request__pack(q, buf);
    unsigned char *out = NULL;
    size_t out_len = 0;
    char msg[AZ_MSG_MAX] = "";
    az_err err = az_reflection_answer(r, buf, len, &out, &out_len, msg);
    free(buf);
    CU_ASSERT_EQUAL_FATAL(err, AZ_OK);
    Resp *resp = grpc__reflection__v1__server_reflection_response__unpack(NULL, out_len, out);
    free(out);
    CU_ASSERT_PTR_NOT_NULL_FATAL(resp);
    return resp;
}

/* The names of the files in a file_descriptor_response, in order. */
static size_t response_files(const Resp *resp, char names[][64], size_t cap)
{
    CU_ASSERT_EQUAL_FATAL(resp->message_response_case,
                          GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_FILE_DESCRIPTOR_RESPONSE);
    const Grpc__Reflection__V1__FileDescriptorResponse *f = resp->file_descriptor_response;
    size_t n = 0;
    for (size_t i = 0; i < f->n_file_descriptor_proto && n < cap; i++) {
        FileProto *fp = google__protobuf__file_descriptor_proto__unpack(
            NULL, f->file_descriptor_proto[i].len, f->file_descriptor_proto[i].data);
        CU_ASSERT_PTR_NOT_NULL_FATAL(fp);
        snprintf(names[n++], 64, "%s", fp->name);
        google__protobuf__file_descriptor_proto__free_unpacked(fp, NULL);
    }
    return n;
}

static void expect_error(const Resp *resp, int code, const char *needle)
{
    CU_ASSERT_EQUAL_FATAL(resp->message_response_case,
                          GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_ERROR_RESPONSE);
    CU_ASSERT_EQUAL(resp->error_response->error_code, code);
    CU_ASSERT_PTR_NOT_NULL(strstr(resp->error_response->error_message, needle));
}

static void test_answer_list_services(void)
{
    az_reflection *r = synthetic();
    Req q = GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__INIT;
    q.host = "localhost:1";
    q.message_request_case = GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_LIST_SERVICES;
    q.list_services = "*";
    Resp *resp = ask(r, &q);
    CU_ASSERT_STRING_EQUAL(resp->valid_host, "localhost:1");
    CU_ASSERT_PTR_NOT_NULL_FATAL(resp->original_request);
    CU_ASSERT_STRING_EQUAL(resp->original_request->list_services, "*");
    CU_ASSERT_EQUAL_FATAL(resp->message_response_case,
                          GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_LIST_SERVICES_RESPONSE);
    CU_ASSERT_EQUAL_FATAL(resp->list_services_response->n_service, 2);
    CU_ASSERT_STRING_EQUAL(resp->list_services_response->service[0]->name, "t.c.CSvc");
    CU_ASSERT_STRING_EQUAL(resp->list_services_response->service[1]->name, "t.a.ASvc");
    grpc__reflection__v1__server_reflection_response__free_unpacked(resp, NULL);
    az_reflection_free(r);
}

static void test_answer_files(void)
{
    az_reflection *r = synthetic();
    char names[8][64];
    Req q = GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__INIT;

    q.message_request_case = GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_BY_FILENAME;
    q.file_by_filename = "c.proto";
    Resp *resp = ask(r, &q);
    CU_ASSERT_STRING_EQUAL(resp->original_request->file_by_filename, "c.proto");
    CU_ASSERT_EQUAL_FATAL(response_files(resp, names, 8), 2);
    CU_ASSERT_STRING_EQUAL(names[0], "c.proto");
    CU_ASSERT_STRING_EQUAL(names[1], "d.proto");
    grpc__reflection__v1__server_reflection_response__free_unpacked(resp, NULL);

    q.message_request_case = GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_CONTAINING_SYMBOL;
    q.file_containing_symbol = "t.a.ASvc.List";
    resp = ask(r, &q);
    CU_ASSERT_EQUAL_FATAL(response_files(resp, names, 8), 4);
    CU_ASSERT_STRING_EQUAL(names[0], "a.proto");
    CU_ASSERT_STRING_EQUAL(names[3], "d.proto");
    grpc__reflection__v1__server_reflection_response__free_unpacked(resp, NULL);

    q.file_containing_symbol = "t.d.D.Inner.Deep";
    resp = ask(r, &q);
    CU_ASSERT_EQUAL_FATAL(response_files(resp, names, 8), 1);
    CU_ASSERT_STRING_EQUAL(names[0], "d.proto");
    grpc__reflection__v1__server_reflection_response__free_unpacked(resp, NULL);
    az_reflection_free(r);
}

static void test_answer_errors(void)
{
    az_reflection *r = synthetic();
    Req q = GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__INIT;

    q.message_request_case = GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_CONTAINING_SYMBOL;
    q.file_containing_symbol = "t.a.Missing";
    Resp *resp = ask(r, &q);
    expect_error(resp, 5, "t.a.Missing");
    CU_ASSERT_STRING_EQUAL(resp->original_request->file_containing_symbol, "t.a.Missing");
    grpc__reflection__v1__server_reflection_response__free_unpacked(resp, NULL);

    q.message_request_case = GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_BY_FILENAME;
    q.file_by_filename = "missing.proto";
    resp = ask(r, &q);
    expect_error(resp, 5, "missing.proto");
    grpc__reflection__v1__server_reflection_response__free_unpacked(resp, NULL);

    q.message_request_case = GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST__NOT_SET;
    resp = ask(r, &q);
    expect_error(resp, 12, "unsupported");
    grpc__reflection__v1__server_reflection_response__free_unpacked(resp, NULL);

    /* not a request at all */
    unsigned char *out = NULL;
    size_t out_len = 0;
    char msg[AZ_MSG_MAX] = "";
    const unsigned char junk[] = {0xff, 0xff, 0xff};
    CU_ASSERT_EQUAL(az_reflection_answer(r, junk, sizeof junk, &out, &out_len, msg), AZ_ERR_INVALID);
    CU_ASSERT_PTR_NULL(out);
    az_reflection_free(r);
}

static void test_answer_extensions(void)
{
    az_reflection *r = synthetic();
    char names[8][64];
    Grpc__Reflection__V1__ExtensionRequest e = GRPC__REFLECTION__V1__EXTENSION_REQUEST__INIT;
    Req q = GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__INIT;
    q.message_request_case =
        GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_CONTAINING_EXTENSION;
    q.file_containing_extension = &e;

    e.containing_type = "t.d.D";
    e.extension_number = 100;
    Resp *resp = ask(r, &q);
    CU_ASSERT_EQUAL_FATAL(response_files(resp, names, 8), 2);
    CU_ASSERT_STRING_EQUAL(names[0], "c.proto");
    grpc__reflection__v1__server_reflection_response__free_unpacked(resp, NULL);

    e.extension_number = 101;
    resp = ask(r, &q);
    expect_error(resp, 5, "101");
    grpc__reflection__v1__server_reflection_response__free_unpacked(resp, NULL);

    e.containing_type = "t.d.Nope";
    resp = ask(r, &q);
    expect_error(resp, 5, "t.d.Nope");
    grpc__reflection__v1__server_reflection_response__free_unpacked(resp, NULL);

    q.message_request_case =
        GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_ALL_EXTENSION_NUMBERS_OF_TYPE;
    q.all_extension_numbers_of_type = "t.d.D";
    resp = ask(r, &q);
    CU_ASSERT_EQUAL_FATAL(resp->message_response_case,
                          GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_ALL_EXTENSION_NUMBERS_RESPONSE);
    CU_ASSERT_STRING_EQUAL(resp->all_extension_numbers_response->base_type_name, "t.d.D");
    CU_ASSERT_EQUAL_FATAL(resp->all_extension_numbers_response->n_extension_number, 1);
    CU_ASSERT_EQUAL(resp->all_extension_numbers_response->extension_number[0], 100);
    grpc__reflection__v1__server_reflection_response__free_unpacked(resp, NULL);

    q.all_extension_numbers_of_type = "t.b.B"; /* a known message without extensions */
    resp = ask(r, &q);
    CU_ASSERT_EQUAL_FATAL(resp->message_response_case,
                          GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_ALL_EXTENSION_NUMBERS_RESPONSE);
    CU_ASSERT_EQUAL(resp->all_extension_numbers_response->n_extension_number, 0);
    grpc__reflection__v1__server_reflection_response__free_unpacked(resp, NULL);

    q.all_extension_numbers_of_type = "t.c.CSvc"; /* a service is not a message */
    resp = ask(r, &q);
    expect_error(resp, 5, "t.c.CSvc");
    grpc__reflection__v1__server_reflection_response__free_unpacked(resp, NULL);
    az_reflection_free(r);
}

static void test_methods_table(void)
{
    az_reflection *r = synthetic();
    size_t n = 0;
    const az_method *m = az_reflection_methods(r, &n);
    CU_ASSERT_EQUAL_FATAL(n, 2);
    CU_ASSERT_STRING_EQUAL(m[0].path, "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo");
    CU_ASSERT_STRING_EQUAL(m[1].path,
                           "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo");
    for (size_t i = 0; i < n; i++) {
        CU_ASSERT_EQUAL(m[i].kind, AZ_RPC_BIDI);
        CU_ASSERT_PTR_NOT_NULL(m[i].bidi);
        CU_ASSERT_PTR_EQUAL(m[i].data, r);
    }
    az_reflection_free(r);
}

/* ---------------------------------------------------------------- the embedded set */

static az_reflection *embedded(void)
{
    char msg[AZ_MSG_MAX] = "";
    az_reflection *r = az_reflection_new(az_descriptor_set, az_descriptor_set_len, msg);
    if (!r) fprintf(stderr, "\n  embedded set: %s\n", msg);
    CU_ASSERT_PTR_NOT_NULL_FATAL(r);
    return r;
}

/* Every service and method of every file in the set resolves to that file, and every file's
 * closure starts with the file, holds each direct import and repeats nothing. */
static void test_embedded_consistency(void)
{
    az_reflection *r = embedded();
    Google__Protobuf__FileDescriptorSet *set =
        google__protobuf__file_descriptor_set__unpack(NULL, az_descriptor_set_len, az_descriptor_set);
    CU_ASSERT_PTR_NOT_NULL_FATAL(set);
    char msg[AZ_MSG_MAX];
    char full[512];
    for (size_t i = 0; i < set->n_file; i++) {
        const FileProto *f = set->file[i];
        for (size_t s = 0; s < f->n_service; s++) {
            snprintf(full, sizeof full, "%s.%s", f->package, f->service[s]->name);
            expect_symbol(r, full, f->name);
            for (size_t m = 0; m < f->service[s]->n_method; m++) {
                snprintf(full, sizeof full, "%s.%s.%s", f->package, f->service[s]->name,
                         f->service[s]->method[m]->name);
                expect_symbol(r, full, f->name);
            }
        }
        for (size_t m = 0; m < f->n_message_type; m++) {
            snprintf(full, sizeof full, "%s.%s", f->package, f->message_type[m]->name);
            expect_symbol(r, full, f->name);
        }
        const char *names[64];
        size_t n = 0;
        CU_ASSERT_EQUAL_FATAL(az_reflection_file_closure(r, f->name, names, 64, &n, msg), AZ_OK);
        CU_ASSERT_FATAL(n >= 1 && n <= 64);
        CU_ASSERT_STRING_EQUAL(names[0], f->name);
        for (size_t d = 0; d < f->n_dependency; d++) {
            int found = 0;
            for (size_t k = 1; k < n; k++) found |= strcmp(names[k], f->dependency[d]) == 0;
            CU_ASSERT(found);
        }
        for (size_t a = 0; a < n; a++) {
            for (size_t b = a + 1; b < n; b++) CU_ASSERT(strcmp(names[a], names[b]) != 0);
        }
    }
    google__protobuf__file_descriptor_set__free_unpacked(set, NULL);
    az_reflection_free(r);
}

static void test_embedded_standard_services(void)
{
    az_reflection *r = embedded();
    expect_symbol(r, "grpc.health.v1.Health", "grpc/health/v1/health.proto");
    expect_symbol(r, "grpc.health.v1.Health.Watch", "grpc/health/v1/health.proto");
    expect_symbol(r, "grpc.health.v1.HealthCheckResponse.ServingStatus", "grpc/health/v1/health.proto");
    expect_symbol(r, "grpc.health.v1.HealthCheckResponse.SERVICE_UNKNOWN",
                  "grpc/health/v1/health.proto");
    expect_symbol(r, "grpc.reflection.v1.ServerReflection.ServerReflectionInfo",
                  "grpc/reflection/v1/reflection.proto");
    expect_symbol(r, "grpc.reflection.v1alpha.ServerReflection",
                  "grpc/reflection/v1alpha/reflection.proto");
    expect_no_symbol(r, "grpc.health.v1.HealthCheckRequest.service"); /* fields are not served */

    Req q = GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__INIT;
    q.message_request_case = GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_LIST_SERVICES;
    q.list_services = "";
    Resp *resp = ask(r, &q);
    CU_ASSERT_EQUAL_FATAL(resp->message_response_case,
                          GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_LIST_SERVICES_RESPONSE);
    static const char *const want[] = {
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
        "agentz.v1.AgentService",
        "agentz.v1.TaskService",
        "agentz.v1.WorkflowService",
        "agentz.v1.SystemService",
    };
    for (size_t w = 0; w < sizeof want / sizeof want[0]; w++) {
        int found = 0;
        for (size_t i = 0; i < resp->list_services_response->n_service; i++)
            found |= strcmp(resp->list_services_response->service[i]->name, want[w]) == 0;
        if (!found) fprintf(stderr, "\n  list_services lacks %s\n", want[w]);
        CU_ASSERT(found);
    }
    grpc__reflection__v1__server_reflection_response__free_unpacked(resp, NULL);
    az_reflection_free(r);
}

static void test_embedded_agentz(void)
{
    az_reflection *r = embedded();
    expect_symbol(r, "agentz.v1.AgentService.CreateAgent", "agentz/v1/agent.proto");
    expect_symbol(r, "agentz.v1.CreateAgentRequest", "agentz/v1/agent.proto");
    expect_no_symbol(r, "agentz.v1.AgentService.Fly");

    /* agent.proto's closure reaches descriptor.proto only through annotations.proto */
    const char *names[64];
    size_t n = 0;
    char msg[AZ_MSG_MAX] = "";
    CU_ASSERT_EQUAL_FATAL(az_reflection_file_closure(r, "agentz/v1/agent.proto", names, 64, &n, msg), AZ_OK);
    CU_ASSERT_STRING_EQUAL(names[0], "agentz/v1/agent.proto");
    int annotations = -1, descriptor = -1;
    for (size_t i = 0; i < n && i < 64; i++) {
        if (strcmp(names[i], "google/api/annotations.proto") == 0) annotations = (int)i;
        if (strcmp(names[i], "google/protobuf/descriptor.proto") == 0) descriptor = (int)i;
    }
    CU_ASSERT(annotations > 0);
    CU_ASSERT(descriptor > annotations); /* breadth-first: direct imports come first */
    az_reflection_free(r);
}

/* google.api.http (72295728) extends google.protobuf.MethodOptions in google/api/annotations.proto,
 * which the agentz protos import. */
static void test_embedded_http_extension(void)
{
    az_reflection *r = embedded();
    char names[8][64];
    expect_symbol(r, "google.api.http", "google/api/annotations.proto");
    Grpc__Reflection__V1__ExtensionRequest e = GRPC__REFLECTION__V1__EXTENSION_REQUEST__INIT;
    e.containing_type = "google.protobuf.MethodOptions";
    e.extension_number = 72295728;
    Req q = GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__INIT;
    q.message_request_case =
        GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_CONTAINING_EXTENSION;
    q.file_containing_extension = &e;
    Resp *resp = ask(r, &q);
    size_t n = response_files(resp, names, 8);
    CU_ASSERT_FATAL(n >= 3);
    CU_ASSERT_STRING_EQUAL(names[0], "google/api/annotations.proto");
    grpc__reflection__v1__server_reflection_response__free_unpacked(resp, NULL);
    az_reflection_free(r);
}

/* ---------------------------------------------------------------- main */

int main(void)
{
    if (CU_initialize_registry() != CUE_SUCCESS) return 1;
    CU_pSuite s = CU_add_suite("reflection", suite_init, suite_clean);
    if (!s) return 1;
    CU_add_test(s, "symbols: messages, nested, enums, values, services, methods", test_symbols);
    CU_add_test(s, "unknown symbols", test_unknown_symbols);
    CU_add_test(s, "closure order: file first, each dependency once", test_closure_order);
    CU_add_test(s, "malformed, incomplete and duplicate sets are refused", test_bad_sets);
    CU_add_test(s, "answer: list_services echoes host and request", test_answer_list_services);
    CU_add_test(s, "answer: file_by_filename and file_containing_symbol", test_answer_files);
    CU_add_test(s, "answer: errors go in error_response", test_answer_errors);
    CU_add_test(s, "answer: extensions", test_answer_extensions);
    CU_add_test(s, "method table", test_methods_table);
    CU_add_test(s, "embedded set: every file, service and method", test_embedded_consistency);
    CU_add_test(s, "embedded set: standard services", test_embedded_standard_services);
    CU_add_test(s, "embedded set: agentz.v1", test_embedded_agentz);
    CU_add_test(s, "embedded set: google.api.http extension", test_embedded_http_extension);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    unsigned failed = CU_get_number_of_failures();
    CU_cleanup_registry();
    return failed ? 1 : 0;
}
