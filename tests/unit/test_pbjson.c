/* CUnit suite for server/core/pbjson: the proto3 JSON mapping, both ways, on the messages of
 * tests/unit/pbjson_test.proto (every scalar, repeated, maps, oneof, well-known types). */
#include <CUnit/Basic.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/arena.h"
#include "core/pbjson.h"

/* The test protos are compiled in here so CMake needs no rule for them (see pbjson_test.proto). */
#include "gen/pbjson_test.pb-c.c"

/* ---- helpers ---- */

static char *enc(const void *m, int flags)
{
    char msg[AZ_MSG_MAX] = "";
    char *out = NULL;
    az_err err = az_pbjson_encode(m, flags, &out, msg);
    if (err) fprintf(stderr, "\nencode failed: %s\n", msg);
    CU_ASSERT_EQUAL(err, AZ_OK);
    CU_ASSERT_PTR_NOT_NULL(out);
    return out;
}

/* Encodes m and compares with want exactly. */
static void check_enc(const void *m, int flags, const char *want)
{
    char *got = enc(m, flags);
    if (got && strcmp(got, want) != 0) fprintf(stderr, "\n got: %s\nwant: %s\n", got, want);
    CU_ASSERT_STRING_EQUAL(got ? got : "", want);
    free(got);
}

static void check_enc_err(const void *m, az_err want, const char *want_msg)
{
    char msg[AZ_MSG_MAX] = "";
    char *out = (char *)1;
    az_err err = az_pbjson_encode(m, 0, &out, msg);
    CU_ASSERT_EQUAL(err, want);
    CU_ASSERT_PTR_NULL(out);
    if (strcmp(msg, want_msg) != 0) fprintf(stderr, "\n got: %s\nwant: %s\n", msg, want_msg);
    CU_ASSERT_STRING_EQUAL(msg, want_msg);
}

static void *dec(const ProtobufCMessageDescriptor *d, const char *json)
{
    char msg[AZ_MSG_MAX] = "";
    ProtobufCMessage *m = NULL;
    az_err err = az_pbjson_decode(d, json, strlen(json), NULL, &m, msg);
    if (err) fprintf(stderr, "\ndecode of %s failed: %s\n", json, msg);
    CU_ASSERT_EQUAL(err, AZ_OK);
    CU_ASSERT_PTR_NOT_NULL(m);
    return m;
}

static void check_dec_err(const ProtobufCMessageDescriptor *d, const char *json, az_err want,
                          const char *want_msg)
{
    char msg[AZ_MSG_MAX] = "";
    ProtobufCMessage *m = (ProtobufCMessage *)1;
    az_err err = az_pbjson_decode(d, json, strlen(json), NULL, &m, msg);
    CU_ASSERT_EQUAL(err, want);
    CU_ASSERT_PTR_NULL(m);
    if (strcmp(msg, want_msg) != 0)
        fprintf(stderr, "\ninput: %s\n  got: %s\n want: %s\n", json, msg, want_msg);
    CU_ASSERT_STRING_EQUAL(msg, want_msg);
}

static void pbfree(void *m) { protobuf_c_message_free_unpacked(m, NULL); }

/* Decodes json, re-encodes it and expects the same text back. */
static void check_round(const ProtobufCMessageDescriptor *d, const char *json)
{
    void *m = dec(d, json);
    if (m) check_enc(m, 0, json);
    pbfree(m);
}

/* Two messages are equal when their binary encodings are. */
static int same_message(const ProtobufCMessage *a, const ProtobufCMessage *b)
{
    size_t na = protobuf_c_message_get_packed_size(a), nb = protobuf_c_message_get_packed_size(b);
    if (na != nb) return 0;
    uint8_t *pa = malloc(na + 1), *pb = malloc(nb + 1);
    protobuf_c_message_pack(a, pa);
    protobuf_c_message_pack(b, pb);
    int same = memcmp(pa, pb, na) == 0;
    free(pa);
    free(pb);
    return same;
}

static const ProtobufCMessageDescriptor *const ALL = &aztest__all__descriptor;
static const ProtobufCMessageDescriptor *const SCALARS = &aztest__scalars__descriptor;

/* ---- scalars ---- */

static const char scalars_json[] =
    "{\"fInt32\":-5,\"fInt64\":\"-9223372036854775808\",\"fUint32\":4294967295,"
    "\"fUint64\":\"18446744073709551615\",\"fSint32\":-7,\"fSint64\":\"-8\",\"fFixed32\":9,"
    "\"fFixed64\":\"10\",\"fSfixed32\":-11,\"fSfixed64\":\"-12\",\"fFloat\":0.7,\"fDouble\":0.1,"
    "\"fBool\":true,\"fString\":\"h\xc3\xa9llo \\\"q\\\"\\n\\u0001\",\"fBytes\":\"AAH/\","
    "\"fEnum\":\"COLOR_GREEN\"}";

static void fill_scalars(Aztest__Scalars *s)
{
    static uint8_t bytes[] = {0x00, 0x01, 0xff};
    s->f_int32 = -5;
    s->f_int64 = INT64_MIN;
    s->f_uint32 = UINT32_MAX;
    s->f_uint64 = UINT64_MAX;
    s->f_sint32 = -7;
    s->f_sint64 = -8;
    s->f_fixed32 = 9;
    s->f_fixed64 = 10;
    s->f_sfixed32 = -11;
    s->f_sfixed64 = -12;
    s->f_float = 0.7f;
    s->f_double = 0.1;
    s->f_bool = 1;
    s->f_string = "h\xc3\xa9llo \"q\"\n\x01";
    s->f_bytes.len = 3;
    s->f_bytes.data = bytes;
    s->f_enum = AZTEST__COLOR__COLOR_GREEN;
}

static void test_scalars_encode(void)
{
    Aztest__Scalars s = AZTEST__SCALARS__INIT;
    fill_scalars(&s);
    check_enc(&s, 0, scalars_json);
}

static void test_scalars_decode(void)
{
    Aztest__Scalars want = AZTEST__SCALARS__INIT;
    fill_scalars(&want);
    Aztest__Scalars *s = dec(SCALARS, scalars_json);
    if (!s) return;
    CU_ASSERT_EQUAL(s->f_int64, INT64_MIN);
    CU_ASSERT_EQUAL(s->f_uint64, UINT64_MAX);
    CU_ASSERT_EQUAL(s->f_float, 0.7f);
    CU_ASSERT_EQUAL(s->f_double, 0.1);
    CU_ASSERT_STRING_EQUAL(s->f_string, want.f_string);
    CU_ASSERT_EQUAL(s->f_bytes.len, 3);
    CU_ASSERT_EQUAL(s->f_enum, AZTEST__COLOR__COLOR_GREEN);
    CU_ASSERT_TRUE(same_message(&s->base, &want.base));
    pbfree(s);
}

static void test_defaults(void)
{
    Aztest__Scalars s = AZTEST__SCALARS__INIT;
    check_enc(&s, 0, "{}");
    check_enc(
        &s, AZ_PBJSON_EMIT_DEFAULTS,
        "{\"fInt32\":0,\"fInt64\":\"0\",\"fUint32\":0,\"fUint64\":\"0\",\"fSint32\":0,"
        "\"fSint64\":\"0\",\"fFixed32\":0,\"fFixed64\":\"0\",\"fSfixed32\":0,\"fSfixed64\":\"0\","
        "\"fFloat\":0,\"fDouble\":0,\"fBool\":false,\"fString\":\"\",\"fBytes\":\"\","
        "\"fEnum\":\"COLOR_UNSPECIFIED\"}");
    Aztest__Inner in = AZTEST__INNER__INIT;
    check_enc(&in, AZ_PBJSON_EMIT_DEFAULTS, "{\"name\":\"\",\"count\":0,\"child\":null}");

    /* unset oneof members stay out; repeated and maps appear empty */
    Aztest__All a = AZTEST__ALL__INIT;
    char *got = enc(&a, AZ_PBJSON_EMIT_DEFAULTS);
    CU_ASSERT_PTR_NOT_NULL(strstr(got, "\"rInt32\":[],"));
    CU_ASSERT_PTR_NOT_NULL(strstr(got, "\"labels\":{},"));
    CU_ASSERT_PTR_NOT_NULL(strstr(got, "\"ts\":null,"));
    CU_ASSERT_PTR_NOT_NULL(strstr(got, "\"nullVal\":null,"));
    CU_ASSERT_PTR_NULL(strstr(got, "choice"));
    free(got);
    check_enc(&a, 0, "{}");

    /* -0.0 is not the default */
    s.f_double = -0.0;
    check_enc(&s, 0, "{\"fDouble\":-0}");
}

static void test_flags(void)
{
    Aztest__Inner child = AZTEST__INNER__INIT, in = AZTEST__INNER__INIT;
    child.count = 2;
    in.name = "x";
    in.child = &child;
    check_enc(&in, AZ_PBJSON_PRETTY,
              "{\n  \"name\": \"x\",\n  \"child\": {\n    \"count\": 2\n  }\n}");
    Aztest__Scalars s = AZTEST__SCALARS__INIT;
    s.f_int32 = 1;
    s.f_sfixed64 = 2;
    check_enc(&s, AZ_PBJSON_PROTO_NAMES, "{\"f_int32\":1,\"f_sfixed64\":\"2\"}");
    Aztest__All a = AZTEST__ALL__INIT;
    check_enc(&a, AZ_PBJSON_PRETTY, "{}");
}

static void test_integers(void)
{
    Aztest__Scalars *s = dec(SCALARS, "{\"fInt64\":-9223372036854775808,\"fUint64\":\"0\","
                                      "\"fInt32\":\"42\",\"fUint32\":1e2,\"fSint32\":-3.0,"
                                      "\"fFixed64\":1.8e19}");
    if (s) {
        CU_ASSERT_EQUAL(s->f_int64, INT64_MIN);
        CU_ASSERT_EQUAL(s->f_int32, 42);
        CU_ASSERT_EQUAL(s->f_uint32, 100);
        CU_ASSERT_EQUAL(s->f_sint32, -3);
        CU_ASSERT_EQUAL(s->f_fixed64, UINT64_C(18000000000000000000));
    }
    pbfree(s);
    s = dec(SCALARS, "{\"fInt64\":\"9223372036854775807\",\"fSfixed64\":\"-9223372036854775808\","
                     "\"fUint64\":\"18446744073709551615\",\"fInt32\":-2147483648,"
                     "\"fUint32\":\"4294967295\"}");
    if (s) {
        CU_ASSERT_EQUAL(s->f_int64, INT64_MAX);
        CU_ASSERT_EQUAL(s->f_sfixed64, INT64_MIN);
        CU_ASSERT_EQUAL(s->f_uint64, UINT64_MAX);
        CU_ASSERT_EQUAL(s->f_int32, INT32_MIN);
        CU_ASSERT_EQUAL(s->f_uint32, UINT32_MAX);
    }
    pbfree(s);

    check_dec_err(SCALARS, "{\"fInt32\":2147483648}", AZ_ERR_INVALID,
                  "scalars.fInt32: integer out of range");
    check_dec_err(SCALARS, "{\"fInt32\":\"-2147483649\"}", AZ_ERR_INVALID,
                  "scalars.fInt32: integer out of range");
    check_dec_err(SCALARS, "{\"fUint32\":-1}", AZ_ERR_INVALID,
                  "scalars.fUint32: integer out of range");
    check_dec_err(SCALARS, "{\"fInt64\":\"9223372036854775808\"}", AZ_ERR_INVALID,
                  "scalars.fInt64: integer out of range");
    check_dec_err(SCALARS, "{\"fUint64\":\"18446744073709551616\"}", AZ_ERR_INVALID,
                  "scalars.fUint64: integer out of range");
    check_dec_err(SCALARS, "{\"fUint64\":\"99999999999999999999999\"}", AZ_ERR_INVALID,
                  "scalars.fUint64: integer out of range");
    check_dec_err(SCALARS, "{\"fInt32\":1.5}", AZ_ERR_INVALID,
                  "scalars.fInt32: expected integer, got 1.5");
    check_dec_err(SCALARS, "{\"fInt32\":\"12abc\"}", AZ_ERR_INVALID,
                  "scalars.fInt32: expected integer, got \"12abc\"");
    check_dec_err(SCALARS, "{\"fInt32\":\" 1\"}", AZ_ERR_INVALID,
                  "scalars.fInt32: expected integer, got \" 1\"");
    check_dec_err(SCALARS, "{\"fInt64\":true}", AZ_ERR_INVALID,
                  "scalars.fInt64: expected integer, got boolean");
    check_dec_err(SCALARS, "{\"fFixed64\":18446744073709551615e0}", AZ_ERR_INVALID,
                  "scalars.fFixed64: integer out of range"); /* 2^64 as a double */
    check_dec_err(SCALARS, "{\"fInt64\":1e300}", AZ_ERR_INVALID,
                  "scalars.fInt64: integer out of range");
}

static void test_floats(void)
{
    Aztest__Scalars s = AZTEST__SCALARS__INIT;
    s.f_float = NAN;
    s.f_double = INFINITY;
    check_enc(&s, 0, "{\"fFloat\":\"NaN\",\"fDouble\":\"Infinity\"}");
    s.f_float = -INFINITY;
    s.f_double = 1e300;
    check_enc(&s, 0, "{\"fFloat\":\"-Infinity\",\"fDouble\":1e+300}");
    s.f_float = 3.4028235e38f;
    s.f_double = 0.30000000000000004;
    check_enc(&s, 0, "{\"fFloat\":3.4028235e+38,\"fDouble\":0.30000000000000004}");
    s.f_float = 1.0f;
    s.f_double = -2.5;
    check_enc(&s, 0, "{\"fFloat\":1,\"fDouble\":-2.5}");

    Aztest__Scalars *d = dec(SCALARS, "{\"fFloat\":\"NaN\",\"fDouble\":\"-Infinity\"}");
    if (d) {
        CU_ASSERT_TRUE(isnan(d->f_float));
        CU_ASSERT_TRUE(isinf(d->f_double) && d->f_double < 0);
    }
    pbfree(d);
    d = dec(SCALARS, "{\"fFloat\":\"Infinity\",\"fDouble\":\"1.25e2\"}");
    if (d) {
        CU_ASSERT_TRUE(isinf(d->f_float) && d->f_float > 0);
        CU_ASSERT_EQUAL(d->f_double, 125.0);
    }
    pbfree(d);
    d = dec(SCALARS, "{\"fFloat\":7,\"fDouble\":-0.5}");
    if (d) {
        CU_ASSERT_EQUAL(d->f_float, 7.0f);
        CU_ASSERT_EQUAL(d->f_double, -0.5);
    }
    pbfree(d);
    check_dec_err(SCALARS, "{\"fFloat\":1e39}", AZ_ERR_INVALID,
                  "scalars.fFloat: number out of float range");
    check_dec_err(SCALARS, "{\"fDouble\":\"1e999\"}", AZ_ERR_INVALID,
                  "scalars.fDouble: number out of range");
    check_dec_err(SCALARS, "{\"fDouble\":\"nan\"}", AZ_ERR_INVALID,
                  "scalars.fDouble: expected number, got \"nan\"");
    check_dec_err(SCALARS, "{\"fDouble\":[]}", AZ_ERR_INVALID,
                  "scalars.fDouble: expected number, got array");
    check_dec_err(SCALARS, "{\"fBool\":\"true\"}", AZ_ERR_INVALID,
                  "scalars.fBool: expected boolean, got string");
}

static void test_enums(void)
{
    Aztest__Scalars *s = dec(SCALARS, "{\"fEnum\":1}");
    if (s) CU_ASSERT_EQUAL(s->f_enum, AZTEST__COLOR__COLOR_RED);
    pbfree(s);
    s = dec(SCALARS, "{\"fEnum\":\"COLOR_RED\"}");
    if (s) CU_ASSERT_EQUAL(s->f_enum, AZTEST__COLOR__COLOR_RED);
    pbfree(s);
    /* proto3 enums are open: unknown numbers pass through both ways */
    check_round(SCALARS, "{\"fEnum\":42}");
    check_round(ALL, "{\"rEnum\":[\"COLOR_RED\",7,\"COLOR_UNSPECIFIED\"]}");
    check_dec_err(SCALARS, "{\"fEnum\":\"PURPLE\"}", AZ_ERR_INVALID,
                  "scalars.fEnum: unknown value \"PURPLE\" for enum aztest.Color");
    check_dec_err(SCALARS, "{\"fEnum\":2147483648}", AZ_ERR_INVALID,
                  "scalars.fEnum: integer out of range");
    check_dec_err(SCALARS, "{\"fEnum\":{}}", AZ_ERR_INVALID,
                  "scalars.fEnum: expected enum name or number, got object");
    check_dec_err(ALL, "{\"rEnum\":[1,\"NOPE\"]}", AZ_ERR_INVALID,
                  "all.rEnum[1]: unknown value \"NOPE\" for enum aztest.Color");
}

static void test_strings(void)
{
    Aztest__Scalars *s = dec(SCALARS, "{\"fString\":\"caf\\u00e9 \\ud83d\\ude00 \\\"\\\\\\/\"}");
    if (s) CU_ASSERT_STRING_EQUAL(s->f_string, "caf\xc3\xa9 \xf0\x9f\x98\x80 \"\\/");
    pbfree(s);
    check_round(SCALARS, "{\"fString\":\"caf\xc3\xa9 \xf0\x9f\x98\x80 \\\\ \\t\\r\\b\\f\\u001f\"}");
    check_dec_err(
        SCALARS, "{\"fString\":\"\\ud800\"}", AZ_ERR_INVALID,
        "scalars: invalid JSON at line 1 column 19: invalid Unicode '\\uD800' near '\"\\ud800\"'");
    check_dec_err(SCALARS, "{\"fString\":\"\\udc00\\ud800\"}", AZ_ERR_INVALID,
                  "scalars: invalid JSON at line 1 column 25: invalid Unicode '\\uDC00' near "
                  "'\"\\udc00\\ud800\"'");
    check_dec_err(
        SCALARS, "{\"fString\":\"\xff\"}", AZ_ERR_INVALID,
        "scalars: invalid JSON at line 1 column 12: unable to decode byte 0xff near '\"'");
    check_dec_err(
        SCALARS, "{\"fString\":\"\xc3\x28\"}", AZ_ERR_INVALID,
        "scalars: invalid JSON at line 1 column 12: unable to decode byte 0xc3 near '\"'");
    check_dec_err(
        SCALARS, "{\"fString\":\"a\\u0000b\"}", AZ_ERR_INVALID,
        "scalars: invalid JSON at line 1 column 21: \\u0000 is not allowed without JSON_ALLOW_NUL "
        "near '\"a\\u0000b\"'");
    check_dec_err(SCALARS, "{\"fString\":5}", AZ_ERR_INVALID,
                  "scalars.fString: expected string, got number");

    Aztest__Scalars bad = AZTEST__SCALARS__INIT;
    bad.f_string = "ok \xc3";
    check_enc_err(&bad, AZ_ERR_INVALID, "scalars.fString: string is not valid UTF-8");
    bad.f_string = "\xed\xa0\x80"; /* an encoded surrogate */
    check_enc_err(&bad, AZ_ERR_INVALID, "scalars.fString: string is not valid UTF-8");
}

static void test_bytes(void)
{
    Aztest__Scalars s = AZTEST__SCALARS__INIT;
    uint8_t data[] = {0xfb, 0xff, 0xbf, 'a'};
    s.f_bytes.data = data;
    for (size_t n = 1; n <= 4; n++) {
        static const char *const want[] = {NULL, "{\"fBytes\":\"+w==\"}", "{\"fBytes\":\"+/8=\"}",
                                           "{\"fBytes\":\"+/+/\"}", "{\"fBytes\":\"+/+/YQ==\"}"};
        s.f_bytes.len = n;
        check_enc(&s, 0, want[n]);
    }
    static const char *const inputs[] = {"+/+/YQ==", "-_-_YQ==", "+/+/YQ", "-_-_YQ"};
    for (size_t i = 0; i < 4; i++) {
        char json[64];
        snprintf(json, sizeof json, "{\"fBytes\":\"%s\"}", inputs[i]);
        Aztest__Scalars *d = dec(SCALARS, json);
        if (d) {
            CU_ASSERT_EQUAL(d->f_bytes.len, 4);
            CU_ASSERT_EQUAL(memcmp(d->f_bytes.data, data, 4), 0);
        }
        pbfree(d);
    }
    Aztest__Scalars *d = dec(SCALARS, "{\"fBytes\":\"\"}");
    if (d) CU_ASSERT_EQUAL(d->f_bytes.len, 0);
    pbfree(d);
    static const char *const bad[] = {"a", "abcde", "ab$=", "a===", "ab=c", "abc=d"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char json[64];
        snprintf(json, sizeof json, "{\"fBytes\":\"%s\"}", bad[i]);
        check_dec_err(SCALARS, json, AZ_ERR_INVALID, "scalars.fBytes: invalid base64");
    }
    check_dec_err(ALL, "{\"rBytes\":[\"AA==\",\"!\"]}", AZ_ERR_INVALID,
                  "all.rBytes[1]: invalid base64");
}

/* ---- repeated, maps, oneof ---- */

static void test_repeated(void)
{
    const char *json = "{\"rInt32\":[1,-2,3],\"rInt64\":[\"-9223372036854775808\",\"5\"],"
                       "\"rString\":[\"a\",\"\",\"c\"],\"rBytes\":[\"AQI=\",\"\"],"
                       "\"rEnum\":[\"COLOR_RED\"],\"rInner\":[{\"name\":\"a\"},{},{\"count\":3}],"
                       "\"rDouble\":[1.5,\"NaN\"],\"rBool\":[true,false]}";
    Aztest__All *a = dec(ALL, json);
    if (a) {
        CU_ASSERT_EQUAL(a->n_r_int32, 3);
        CU_ASSERT_EQUAL(a->r_int32[1], -2);
        CU_ASSERT_EQUAL(a->r_int64[0], INT64_MIN);
        CU_ASSERT_EQUAL(a->n_r_string, 3);
        CU_ASSERT_STRING_EQUAL(a->r_string[1], "");
        CU_ASSERT_EQUAL(a->n_r_inner, 3);
        CU_ASSERT_EQUAL(a->r_inner[2]->count, 3);
        CU_ASSERT_EQUAL(a->n_r_bool, 2);
        check_enc(a, 0, json);
    }
    pbfree(a);
    a = dec(ALL, "{\"rInt32\":[],\"rString\":null,\"rInner\":[]}");
    if (a) {
        CU_ASSERT_EQUAL(a->n_r_int32, 0);
        CU_ASSERT_PTR_NULL(a->r_int32);
        CU_ASSERT_EQUAL(a->n_r_string, 0);
        check_enc(a, 0, "{}");
    }
    pbfree(a);
    /* rInt32 is packed, rDouble is not: both map the same way */
    Aztest__All m = AZTEST__ALL__INIT;
    int32_t ints[] = {7};
    m.n_r_int32 = 1;
    m.r_int32 = ints;
    check_enc(&m, 0, "{\"rInt32\":[7]}");

    check_dec_err(ALL, "{\"rInt32\":[1,null]}", AZ_ERR_INVALID,
                  "all.rInt32[1]: null is not allowed in a list");
    check_dec_err(ALL, "{\"rInt32\":5}", AZ_ERR_INVALID, "all.rInt32: expected array, got number");
    check_dec_err(ALL, "{\"rInner\":[{},{\"name\":5}]}", AZ_ERR_INVALID,
                  "all.rInner[1].name: expected string, got number");
    check_dec_err(ALL, "{\"rInner\":[{\"child\":{\"bogus\":1}}]}", AZ_ERR_INVALID,
                  "all.rInner[0].child.bogus: unknown field");
}

static void test_maps(void)
{
    const char *json =
        "{\"labels\":{\"b\":\"2\",\"a\":\"\",\"\xc3\xa9\":\"x\"},"
        "\"inners\":{\"k\":{\"name\":\"n\"},\"e\":{}},"
        "\"byId\":{\"-1\":\"neg\",\"7\":\"seven\"},\"byFlag\":{\"true\":\"1\",\"false\":\"-2\"}}";
    Aztest__All *a = dec(ALL, json);
    if (a) {
        CU_ASSERT_EQUAL(a->n_labels, 3);
        CU_ASSERT_STRING_EQUAL(a->labels[0]->key, "b");
        CU_ASSERT_STRING_EQUAL(a->labels[0]->value, "2");
        CU_ASSERT_EQUAL(a->n_inners, 2);
        CU_ASSERT_STRING_EQUAL(a->inners[0]->value->name, "n");
        CU_ASSERT_PTR_NOT_NULL(a->inners[1]->value);
        CU_ASSERT_EQUAL(a->by_id[0]->key, -1);
        CU_ASSERT_EQUAL(a->by_flag[0]->key, 1);
        CU_ASSERT_EQUAL(a->by_flag[1]->value, -2);
        check_enc(a, 0, json);
    }
    pbfree(a);

    /* a missing value in a binary map entry is the empty message */
    Aztest__All m = AZTEST__ALL__INIT;
    Aztest__All__InnersEntry e = AZTEST__ALL__INNERS_ENTRY__INIT, *ep = &e;
    e.key = "k";
    m.n_inners = 1;
    m.inners = &ep;
    check_enc(&m, 0, "{\"inners\":{\"k\":{}}}");

    check_dec_err(ALL, "{\"labels\":[]}", AZ_ERR_INVALID, "all.labels: expected object, got array");
    check_dec_err(ALL, "{\"labels\":{\"a\":1}}", AZ_ERR_INVALID,
                  "all.labels[\"a\"]: expected string, got number");
    check_dec_err(ALL, "{\"labels\":{\"a\":null}}", AZ_ERR_INVALID,
                  "all.labels[\"a\"]: null is not allowed as a map value");
    check_dec_err(ALL, "{\"inners\":{\"k\":{\"count\":\"x\"}}}", AZ_ERR_INVALID,
                  "all.inners[\"k\"].count: expected integer, got \"x\"");
    check_dec_err(ALL, "{\"byId\":{\"x\":\"a\"}}", AZ_ERR_INVALID,
                  "all.byId[\"x\"]: expected integer, got \"x\"");
    check_dec_err(ALL, "{\"byId\":{\"2147483648\":\"a\"}}", AZ_ERR_INVALID,
                  "all.byId[\"2147483648\"]: integer out of range");
    check_dec_err(ALL, "{\"byFlag\":{\"yes\":\"1\"}}", AZ_ERR_INVALID,
                  "all.byFlag[\"yes\"]: map key must be true or false");
}

static void test_oneof(void)
{
    Aztest__All *a = dec(ALL, "{\"choiceNum\":\"12\"}");
    if (a) {
        CU_ASSERT_EQUAL(a->choice_case, AZTEST__ALL__CHOICE_CHOICE_NUM);
        CU_ASSERT_EQUAL(a->choice_num, 12);
    }
    pbfree(a);
    check_round(ALL, "{\"choiceText\":\"hi\"}");
    check_round(ALL, "{\"choiceInner\":{\"count\":1}}");
    /* a set member is printed even when it holds the default */
    check_round(ALL, "{\"choiceText\":\"\"}");
    check_round(ALL, "{\"choiceInner\":{}}");
    a = dec(ALL, "{\"choiceText\":null,\"choiceNum\":\"0\"}");
    if (a) CU_ASSERT_EQUAL(a->choice_case, AZTEST__ALL__CHOICE_CHOICE_NUM);
    pbfree(a);
    check_dec_err(ALL, "{\"choiceText\":\"a\",\"choiceInner\":{}}", AZ_ERR_INVALID,
                  "all.choiceInner: oneof already set by choiceText");
    check_dec_err(ALL, "{\"choiceInner\":{\"name\":\"x\"},\"choice_num\":1}", AZ_ERR_INVALID,
                  "all.choiceNum: oneof already set by choiceInner");
}

/* ---- well-known types ---- */

static void test_timestamp(void)
{
    static const struct {
        int64_t s;
        int32_t n;
        const char *json;
    } ok[] = {
        {0, 0, "\"1970-01-01T00:00:00Z\""},
        {1795497212, 123000000, "\"2026-11-24T05:13:32.123Z\""},
        {1795497212, 123456000, "\"2026-11-24T05:13:32.123456Z\""},
        {1795497212, 123456789, "\"2026-11-24T05:13:32.123456789Z\""},
        {1795497212, 1, "\"2026-11-24T05:13:32.000000001Z\""},
        {-1, 999999999, "\"1969-12-31T23:59:59.999999999Z\""},
        {-62135596800, 0, "\"0001-01-01T00:00:00Z\""},
        {253402300799, 999999999, "\"9999-12-31T23:59:59.999999999Z\""},
        {951782400, 0, "\"2000-02-29T00:00:00Z\""},
    };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        Google__Protobuf__Timestamp t = GOOGLE__PROTOBUF__TIMESTAMP__INIT;
        t.seconds = ok[i].s;
        t.nanos = ok[i].n;
        check_enc(&t, 0, ok[i].json);
        Google__Protobuf__Timestamp *d = dec(&google__protobuf__timestamp__descriptor, ok[i].json);
        if (d) {
            CU_ASSERT_EQUAL(d->seconds, ok[i].s);
            CU_ASSERT_EQUAL(d->nanos, ok[i].n);
        }
        pbfree(d);
    }
    /* offsets, and fractions of any length up to 9 */
    Aztest__All *a = dec(
        ALL, "{\"ts\":\"2026-11-24T06:13:32.5+01:00\",\"rTs\":[\"1970-01-01T00:00:00-00:30\"]}");
    if (a) {
        CU_ASSERT_EQUAL(a->ts->seconds, 1795497212);
        CU_ASSERT_EQUAL(a->ts->nanos, 500000000);
        CU_ASSERT_EQUAL(a->r_ts[0]->seconds, 1800);
        check_enc(a, 0, "{\"ts\":\"2026-11-24T05:13:32.500Z\",\"rTs\":[\"1970-01-01T00:30:00Z\"]}");
    }
    pbfree(a);

    static const char *const bad[] = {
        "\"2026-11-24T05:13:32\"",      "\"2026-11-24 05:13:32Z\"",
        "\"2026-13-01T00:00:00Z\"",     "\"2023-02-29T00:00:00Z\"",
        "\"2026-11-24T24:00:00Z\"",     "\"2026-11-24T05:13:60Z\"",
        "\"2026-11-24T05:13:32.Z\"",    "\"2026-11-24T05:13:32.1234567890Z\"",
        "\"0000-12-31T00:00:00Z\"",     "\"2026-11-24T05:13:32Zjunk\"",
        "\"2026-11-24T05:13:32+0100\"", "\"26-11-24T05:13:32Z\"",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char json[128], want[256];
        snprintf(json, sizeof json, "{\"ts\":%s}", bad[i]);
        snprintf(want, sizeof want,
                 "all.ts: invalid timestamp %s (want RFC 3339 like 2026-11-24T05:13:32.123Z)",
                 bad[i]);
        check_dec_err(ALL, json, AZ_ERR_INVALID, want);
    }
    check_dec_err(ALL, "{\"ts\":\"0001-01-01T00:00:00+00:01\"}", AZ_ERR_INVALID,
                  "all.ts: timestamp \"0001-01-01T00:00:00+00:01\" outside 0001-01-01..9999-12-31");
    check_dec_err(ALL, "{\"ts\":1}", AZ_ERR_INVALID,
                  "all.ts: expected RFC 3339 timestamp string, got number");
    check_dec_err(
        ALL, "{\"rTs\":[\"x\"]}", AZ_ERR_INVALID,
        "all.rTs[0]: invalid timestamp \"x\" (want RFC 3339 like 2026-11-24T05:13:32.123Z)");

    Google__Protobuf__Timestamp t = GOOGLE__PROTOBUF__TIMESTAMP__INIT;
    t.seconds = 253402300800;
    check_enc_err(&t, AZ_ERR_INVALID,
                  "timestamp: timestamp out of range (seconds 253402300800, nanos 0)");
    t.seconds = 0;
    t.nanos = -1;
    check_enc_err(&t, AZ_ERR_INVALID, "timestamp: timestamp out of range (seconds 0, nanos -1)");
}

static void test_duration(void)
{
    static const struct {
        int64_t s;
        int32_t n;
        const char *json;
    } ok[] = {
        {0, 0, "\"0s\""},
        {1, 500000000, "\"1.500s\""},
        {-1, -500000000, "\"-1.500s\""},
        {0, -500000000, "\"-0.500s\""},
        {3, 1000, "\"3.000001s\""},
        {3, 1, "\"3.000000001s\""},
        {315576000000, 999999999, "\"315576000000.999999999s\""},
        {-315576000000, -999999999, "\"-315576000000.999999999s\""},
    };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        Google__Protobuf__Duration d = GOOGLE__PROTOBUF__DURATION__INIT;
        d.seconds = ok[i].s;
        d.nanos = ok[i].n;
        check_enc(&d, 0, ok[i].json);
        Google__Protobuf__Duration *g = dec(&google__protobuf__duration__descriptor, ok[i].json);
        if (g) {
            CU_ASSERT_EQUAL(g->seconds, ok[i].s);
            CU_ASSERT_EQUAL(g->nanos, ok[i].n);
        }
        pbfree(g);
    }
    Aztest__All *a = dec(ALL, "{\"dur\":\"1.5s\"}");
    if (a) {
        CU_ASSERT_EQUAL(a->dur->seconds, 1);
        CU_ASSERT_EQUAL(a->dur->nanos, 500000000);
    }
    pbfree(a);
    static const char *const bad[] = {
        "\"1.5\"",           "\"s\"",   "\"-s\"",   "\"--1s\"", "\"1.s\"",
        "\"1.1234567890s\"", "\"+1s\"", "\"1e3s\"", "\"1s \"",  "\"\""};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char json[128], want[256];
        snprintf(json, sizeof json, "{\"dur\":%s}", bad[i]);
        snprintf(want, sizeof want, "all.dur: invalid duration %s (want e.g. \"1.5s\")", bad[i]);
        check_dec_err(ALL, json, AZ_ERR_INVALID, want);
    }
    check_dec_err(ALL, "{\"dur\":\"315576000001s\"}", AZ_ERR_INVALID,
                  "all.dur: duration \"315576000001s\" beyond ±315576000000s");
    check_dec_err(ALL, "{\"dur\":\"99999999999999999999999s\"}", AZ_ERR_INVALID,
                  "all.dur: duration \"99999999999999999999999s\" beyond ±315576000000s");
    Google__Protobuf__Duration d = GOOGLE__PROTOBUF__DURATION__INIT;
    d.seconds = 1;
    d.nanos = -1;
    check_enc_err(&d, AZ_ERR_INVALID, "duration: duration out of range (seconds 1, nanos -1)");
    d.seconds = 315576000001;
    d.nanos = 0;
    check_enc_err(&d, AZ_ERR_INVALID,
                  "duration: duration out of range (seconds 315576000001, nanos 0)");
}

static void test_field_mask(void)
{
    Aztest__All *a = dec(ALL, "{\"mask\":\"a.b,cD,displayName.fooBarBaz\"}");
    if (a) {
        CU_ASSERT_EQUAL(a->mask->n_paths, 3);
        CU_ASSERT_STRING_EQUAL(a->mask->paths[0], "a.b");
        CU_ASSERT_STRING_EQUAL(a->mask->paths[1], "c_d");
        CU_ASSERT_STRING_EQUAL(a->mask->paths[2], "display_name.foo_bar_baz");
        check_enc(a, 0, "{\"mask\":\"a.b,cD,displayName.fooBarBaz\"}");
    }
    pbfree(a);
    a = dec(ALL, "{\"mask\":\"\"}");
    if (a) {
        CU_ASSERT_EQUAL(a->mask->n_paths, 0);
        check_enc(a, 0, "{\"mask\":\"\"}");
    }
    pbfree(a);
    check_dec_err(ALL, "{\"mask\":\"a,foo_bar\"}", AZ_ERR_INVALID,
                  "all.mask: field mask path \"foo_bar\" is not lowerCamelCase");
    check_dec_err(ALL, "{\"mask\":\"a,,b\"}", AZ_ERR_INVALID,
                  "all.mask: empty path in field mask \"a,,b\"");
    check_dec_err(ALL, "{\"mask\":[\"a\"]}", AZ_ERR_INVALID,
                  "all.mask: expected field mask string like \"a.b,cD\", got array");
    Google__Protobuf__FieldMask fm = GOOGLE__PROTOBUF__FIELD_MASK__INIT;
    char *paths[] = {"ok", "fooBar"};
    fm.n_paths = 2;
    fm.paths = paths;
    check_enc_err(&fm, AZ_ERR_INVALID, "fieldMask: field mask path \"fooBar\" has no JSON form");
    paths[1] = "foo__bar";
    check_enc_err(&fm, AZ_ERR_INVALID, "fieldMask: field mask path \"foo__bar\" has no JSON form");
}

static void test_wrappers(void)
{
    const char *json = "{\"wDouble\":1.5,\"wFloat\":\"NaN\",\"wInt64\":\"-9223372036854775808\","
                       "\"wUint64\":\"18446744073709551615\",\"wInt32\":-3,\"wUint32\":4294967295,"
                       "\"wBool\":true,\"wString\":\"s\",\"wBytes\":\"AQ==\"}";
    check_round(ALL, json);
    /* a present wrapper prints its value even when it is the default */
    const char *zeros =
        "{\"wDouble\":0,\"wFloat\":0,\"wInt64\":\"0\",\"wUint64\":\"0\",\"wInt32\":0,"
        "\"wUint32\":0,\"wBool\":false,\"wString\":\"\",\"wBytes\":\"\"}";
    Aztest__All *a = dec(ALL, zeros);
    if (a) {
        CU_ASSERT_PTR_NOT_NULL(a->w_bool);
        CU_ASSERT_PTR_NOT_NULL(a->w_string);
        check_enc(a, 0, zeros);
    }
    pbfree(a);
    a = dec(ALL, "{\"wInt32\":null,\"wString\":null,\"wUint64\":7}");
    if (a) {
        CU_ASSERT_PTR_NULL(a->w_int32);
        CU_ASSERT_PTR_NULL(a->w_string);
        CU_ASSERT_EQUAL(a->w_uint64->value, 7);
    }
    pbfree(a);
    Google__Protobuf__Int64Value *v = dec(&google__protobuf__int64_value__descriptor, "\"-5\"");
    if (v) CU_ASSERT_EQUAL(v->value, -5);
    pbfree(v);
    check_dec_err(ALL, "{\"wInt32\":{\"value\":1}}", AZ_ERR_INVALID,
                  "all.wInt32: expected integer, got object");
    check_dec_err(ALL, "{\"wBool\":1}", AZ_ERR_INVALID, "all.wBool: expected boolean, got number");
    check_dec_err(ALL, "{\"wBytes\":\"*\"}", AZ_ERR_INVALID, "all.wBytes: invalid base64");
}

static void test_struct_value(void)
{
    const char *json = "{\"st\":{\"a\":1,\"b\":[true,null,\"x\",{\"c\":{}},[]],\"d\":-0.25},"
                       "\"val\":{\"k\":\"v\"},\"list\":[1,\"2\",false],\"rVal\":[null,3,\"s\"]}";
    Aztest__All *a = dec(ALL, json);
    if (a) {
        CU_ASSERT_EQUAL(a->st->n_fields, 3);
        Google__Protobuf__Value *b = a->st->fields[1]->value;
        CU_ASSERT_EQUAL(b->kind_case, GOOGLE__PROTOBUF__VALUE__KIND_LIST_VALUE);
        CU_ASSERT_EQUAL(b->list_value->n_values, 5);
        CU_ASSERT_EQUAL(b->list_value->values[1]->kind_case,
                        GOOGLE__PROTOBUF__VALUE__KIND_NULL_VALUE);
        CU_ASSERT_EQUAL(a->val->kind_case, GOOGLE__PROTOBUF__VALUE__KIND_STRUCT_VALUE);
        CU_ASSERT_EQUAL(a->n_r_val, 3);
        check_enc(a, 0, json);
    }
    pbfree(a);
    /* null for a Value field is the null value, not "unset" */
    a = dec(ALL, "{\"val\":null,\"st\":{}}");
    if (a) {
        CU_ASSERT_PTR_NOT_NULL(a->val);
        if (a->val) CU_ASSERT_EQUAL(a->val->kind_case, GOOGLE__PROTOBUF__VALUE__KIND_NULL_VALUE);
        check_enc(a, 0, "{\"st\":{},\"val\":null}");
    }
    pbfree(a);
    check_round(&google__protobuf__value__descriptor, "[1,{\"a\":null}]");
    check_round(&google__protobuf__struct__descriptor, "{\"x\":{\"y\":[]}}");
    check_round(&google__protobuf__list_value__descriptor, "[]");

    check_dec_err(ALL, "{\"st\":[]}", AZ_ERR_INVALID, "all.st: expected object, got array");
    check_dec_err(ALL, "{\"list\":{}}", AZ_ERR_INVALID, "all.list: expected array, got object");
    check_dec_err(&google__protobuf__struct__descriptor, "5", AZ_ERR_INVALID,
                  "struct: expected object, got number");

    Google__Protobuf__Value v = GOOGLE__PROTOBUF__VALUE__INIT;
    check_enc_err(&v, AZ_ERR_INVALID, "value: google.protobuf.Value has no kind set");
    v.kind_case = GOOGLE__PROTOBUF__VALUE__KIND_NUMBER_VALUE;
    v.number_value = NAN;
    check_enc_err(&v, AZ_ERR_INVALID, "value: google.protobuf.Value cannot hold NaN or Infinity");
    v.number_value = 2;
    check_enc(&v, 0, "2");
    v.kind_case = GOOGLE__PROTOBUF__VALUE__KIND_NULL_VALUE;
    v.null_value = GOOGLE__PROTOBUF__NULL_VALUE__NULL_VALUE;
    check_enc(&v, 0, "null");
}

static void test_empty_null_value(void)
{
    Aztest__All *a = dec(ALL, "{\"empty\":{},\"nullVal\":null}");
    if (a) {
        CU_ASSERT_PTR_NOT_NULL(a->empty);
        check_enc(a, 0, "{\"empty\":{}}");
    }
    pbfree(a);
    a = dec(ALL, "{\"nullVal\":\"NULL_VALUE\"}");
    pbfree(a);
    check_dec_err(ALL, "{\"empty\":{\"x\":1}}", AZ_ERR_INVALID, "all.empty.x: unknown field");
    check_dec_err(ALL, "{\"empty\":[]}", AZ_ERR_INVALID, "all.empty: expected object, got array");
    Google__Protobuf__Empty e = GOOGLE__PROTOBUF__EMPTY__INIT;
    check_enc(&e, 0, "{}");
    check_round(&google__protobuf__empty__descriptor, "{}");
}

static void test_any_unimplemented(void)
{
    /* gen/ has no Any; a copy of Empty's descriptor under Any's name reaches the same code */
    ProtobufCMessageDescriptor any = google__protobuf__empty__descriptor;
    any.name = "google.protobuf.Any";
    Google__Protobuf__Empty m = GOOGLE__PROTOBUF__EMPTY__INIT;
    m.base.descriptor = &any;
    check_enc_err(&m, AZ_ERR_UNIMPLEMENTED, "empty: google.protobuf.Any is not supported");
    check_dec_err(&any, "{\"@type\":\"x\"}", AZ_ERR_UNIMPLEMENTED,
                  "empty: google.protobuf.Any is not supported");
}

/* ---- decoding rules and errors ---- */

static void test_names(void)
{
    Aztest__All *a = dec(ALL, "{\"r_int32\":[1],\"scalars\":{\"f_sfixed64\":\"3\",\"fInt32\":2}}");
    if (a) {
        CU_ASSERT_EQUAL(a->n_r_int32, 1);
        CU_ASSERT_EQUAL(a->scalars->f_sfixed64, 3);
        CU_ASSERT_EQUAL(a->scalars->f_int32, 2);
    }
    pbfree(a);
    check_dec_err(ALL, "{\"fooBar\":1}", AZ_ERR_INVALID, "all.fooBar: unknown field");
    check_dec_err(ALL, "{\"inner\":{\"child\":{\"nope\":null}}}", AZ_ERR_INVALID,
                  "all.inner.child.nope: unknown field");
    check_dec_err(ALL, "{\"RInt32\":[]}", AZ_ERR_INVALID, "all.RInt32: unknown field");
    check_dec_err(ALL, "{\"rInt32\":[1],\"r_int32\":[2]}", AZ_ERR_INVALID,
                  "all.rInt32: field given twice");
    check_dec_err(ALL, "{\"inner\":{},\"inner\":{}}", AZ_ERR_INVALID,
                  "all: invalid JSON at line 1 column 19: duplicate object key near '\"inner\"'");
}

static void test_nulls_and_types(void)
{
    Aztest__All *a = dec(ALL, "{\"scalars\":null,\"inner\":{\"name\":null,\"count\":null},"
                              "\"labels\":null,\"ts\":null,\"choiceInner\":null}");
    if (a) {
        CU_ASSERT_PTR_NULL(a->scalars);
        CU_ASSERT_PTR_NOT_NULL(a->inner);
        CU_ASSERT_PTR_EQUAL(a->inner->name, protobuf_c_empty_string);
        CU_ASSERT_PTR_NULL(a->ts);
        CU_ASSERT_EQUAL(a->choice_case, AZTEST__ALL__CHOICE__NOT_SET);
        check_enc(a, 0, "{\"inner\":{}}");
    }
    pbfree(a);
    check_dec_err(ALL, "{\"scalars\":5}", AZ_ERR_INVALID,
                  "all.scalars: expected object, got number");
    check_dec_err(ALL, "{\"inner\":{\"count\":\"x\"}}", AZ_ERR_INVALID,
                  "all.inner.count: expected integer, got \"x\"");
    check_dec_err(ALL, "{\"inner\":{\"child\":{\"child\":{\"name\":[]}}}}", AZ_ERR_INVALID,
                  "all.inner.child.child.name: expected string, got array");
    check_dec_err(ALL, "[]", AZ_ERR_INVALID, "all: expected object, got array");
    check_dec_err(ALL, "{", AZ_ERR_INVALID,
                  "all: invalid JSON at line 1 column 1: string or '}' expected near end of file");
    check_dec_err(ALL, "{} x", AZ_ERR_INVALID,
                  "all: invalid JSON at line 1 column 4: end of file expected near 'x'");
    check_dec_err(ALL, "", AZ_ERR_INVALID,
                  "all: invalid JSON at line 1 column 0: unexpected token near end of file");

    /* input need not be NUL-terminated */
    const char buf[] = {'{', '}', 'x'};
    ProtobufCMessage *m = NULL;
    char msg[AZ_MSG_MAX];
    CU_ASSERT_EQUAL(az_pbjson_decode(ALL, buf, 2, NULL, &m, msg), AZ_OK);
    pbfree(m);
}

/* Builds "{"inner":{"child":{...}}}" with n child levels, or a Value of n nested arrays. */
static char *nested(int n, int arrays)
{
    size_t cap = (size_t)n * 16 + 64;
    char *s = malloc(cap), *p = s;
    p += sprintf(p, arrays ? "{\"val\":" : "{\"inner\":");
    for (int i = 0; i < n; i++) p += sprintf(p, arrays ? "[" : "{\"child\":");
    p += sprintf(p, arrays ? "[]" : "{}");
    for (int i = 0; i < n; i++) *p++ = arrays ? ']' : '}';
    sprintf(p, "}");
    return s;
}

static void test_depth(void)
{
    /* the root object, "inner" and 62 children make 64 levels: the limit */
    char *s = nested(62, 0);
    Aztest__All *a = dec(ALL, s);
    if (a) {
        char *out = enc(a, 0);
        CU_ASSERT_STRING_EQUAL(out ? out : "", s);
        free(out);
    }
    pbfree(a);
    free(s);
    s = nested(63, 0);
    char msg[AZ_MSG_MAX];
    ProtobufCMessage *m = NULL;
    CU_ASSERT_EQUAL(az_pbjson_decode(ALL, s, strlen(s), NULL, &m, msg), AZ_ERR_INVALID);
    CU_ASSERT_PTR_NULL(m);
    CU_ASSERT_PTR_NOT_NULL(strstr(msg, "nesting deeper than 64 levels"));
    CU_ASSERT_EQUAL(strncmp(msg, "all.inner.child.child.", 22), 0);
    free(s);
    s = nested(1000, 1);
    CU_ASSERT_EQUAL(az_pbjson_decode(ALL, s, strlen(s), NULL, &m, msg), AZ_ERR_INVALID);
    CU_ASSERT_PTR_NOT_NULL(strstr(msg, "nesting deeper than 64 levels"));
    CU_ASSERT_EQUAL(strncmp(msg, "all.val[0][0][0]", 16), 0);
    free(s);
    s = nested(10, 1);
    a = dec(ALL, s);
    pbfree(a);
    free(s);

    /* encode: a chain longer than the limit, and a cycle, fail instead of recursing */
    Aztest__Inner chain[70];
    for (int i = 0; i < 70; i++) {
        aztest__inner__init(&chain[i]);
        chain[i].child = i + 1 < 70 ? &chain[i + 1] : NULL;
    }
    char *out = NULL;
    CU_ASSERT_EQUAL(az_pbjson_encode(&chain[6].base, 0, &out, msg), AZ_OK); /* 64 levels */
    free(out);
    CU_ASSERT_EQUAL(az_pbjson_encode(&chain[5].base, 0, &out, msg), AZ_ERR_INVALID);
    CU_ASSERT_PTR_NULL(out);
    CU_ASSERT_PTR_NOT_NULL(strstr(msg, "nesting deeper than 64 levels"));
    chain[69].child = &chain[0];
    CU_ASSERT_EQUAL(az_pbjson_encode(&chain[0].base, 0, &out, msg), AZ_ERR_INVALID);
}

/* ---- allocation ---- */

typedef struct counting {
    ProtobufCAllocator pc;
    long budget; /* allocations left before failing; < 0 = unlimited */
    long live;
} counting;

static void *count_alloc(void *ud, size_t n)
{
    counting *c = ud;
    if (c->budget == 0) return NULL;
    if (c->budget > 0) c->budget--;
    void *p = malloc(n ? n : 1);
    if (p) c->live++;
    return p;
}

static void count_free(void *ud, void *p)
{
    counting *c = ud;
    if (p) c->live--;
    free(p);
}

static const char big_json[] =
    "{\"scalars\":{\"fInt64\":\"1\",\"fString\":\"s\",\"fBytes\":\"AAH/"
    "\"},\"rString\":[\"a\",\"b\"],"
    "\"rBytes\":[\"AQ==\"],\"rInner\":[{\"name\":\"n\",\"child\":{}}],\"labels\":{\"a\":\"b\"},"
    "\"inners\":{\"x\":{\"name\":\"y\"}},\"choiceInner\":{\"name\":\"c\"},\"ts\":\"2026-01-01T00:"
    "00:00Z\","
    "\"mask\":\"a,bC\",\"wString\":\"w\",\"wBytes\":\"AQ==\",\"st\":{\"a\":[1,{\"b\":\"c\"}]},"
    "\"val\":\"v\",\"list\":[null],\"empty\":{},\"rTs\":[\"1970-01-01T00:00:00Z\"],\"rVal\":[{}]}";

static void test_allocator(void)
{
    counting c = {{count_alloc, count_free, NULL}, -1, 0};
    c.pc.allocator_data = &c;
    char msg[AZ_MSG_MAX];
    ProtobufCMessage *m = NULL;
    CU_ASSERT_EQUAL(az_pbjson_decode(ALL, big_json, strlen(big_json), &c.pc, &m, msg), AZ_OK);
    CU_ASSERT_TRUE(c.live > 20);
    char *out = enc(m, 0);
    CU_ASSERT_STRING_EQUAL(out ? out : "", big_json);
    free(out);
    protobuf_c_message_free_unpacked(m, &c.pc);
    CU_ASSERT_EQUAL(c.live, 0);

    /* a failure late in the input frees everything allocated before it */
    const char *late =
        "{\"rString\":[\"a\"],\"inners\":{\"x\":{\"name\":\"y\"}},\"st\":{\"a\":[1]},"
        "\"choiceText\":\"t\",\"choiceNum\":1}";
    CU_ASSERT_EQUAL(az_pbjson_decode(ALL, late, strlen(late), &c.pc, &m, msg), AZ_ERR_INVALID);
    CU_ASSERT_PTR_NULL(m);
    CU_ASSERT_EQUAL(c.live, 0);

    /* every allocation failing in turn: NOMEM, no output, nothing leaked */
    for (long budget = 0;; budget++) {
        c.budget = budget;
        az_err err = az_pbjson_decode(ALL, big_json, strlen(big_json), &c.pc, &m, msg);
        if (err == AZ_OK) {
            protobuf_c_message_free_unpacked(m, &c.pc);
            CU_ASSERT_EQUAL(c.live, 0);
            CU_ASSERT_TRUE(budget > 20);
            break;
        }
        CU_ASSERT_EQUAL(err, AZ_ERR_NOMEM);
        CU_ASSERT_PTR_NULL(m);
        CU_ASSERT_EQUAL(c.live, 0);
        if (err != AZ_ERR_NOMEM || budget > 10000) break;
    }
}

static void test_arena(void)
{
    az_arena *ar = az_arena_new(0);
    char msg[AZ_MSG_MAX];
    ProtobufCMessage *m = NULL;
    CU_ASSERT_EQUAL(
        az_pbjson_decode(ALL, big_json, strlen(big_json), az_arena_allocator(ar), &m, msg), AZ_OK);
    CU_ASSERT_TRUE(az_arena_used(ar) > 0);
    char *out = enc(m, 0);
    CU_ASSERT_STRING_EQUAL(out ? out : "", big_json);
    free(out);
    az_arena_free(ar);

    /* an arena too small for the message: NOMEM, not a crash */
    ar = az_arena_new(64);
    CU_ASSERT_EQUAL(
        az_pbjson_decode(ALL, big_json, strlen(big_json), az_arena_allocator(ar), &m, msg),
        AZ_ERR_NOMEM);
    CU_ASSERT_PTR_NULL(m);
    az_arena_free(ar);
}

static void test_round_trip_binary(void)
{
    /* a message built in C, through JSON and back, is the same message */
    Aztest__Scalars s = AZTEST__SCALARS__INIT;
    fill_scalars(&s);
    Aztest__Inner child = AZTEST__INNER__INIT, in = AZTEST__INNER__INIT, *ins[] = {&in, &child};
    child.name = "c";
    in.child = &child;
    in.count = -1;
    Google__Protobuf__Timestamp ts = GOOGLE__PROTOBUF__TIMESTAMP__INIT;
    ts.seconds = 1795497212;
    ts.nanos = 7;
    Google__Protobuf__Duration du = GOOGLE__PROTOBUF__DURATION__INIT;
    du.seconds = -3;
    Aztest__All__LabelsEntry l1 = AZTEST__ALL__LABELS_ENTRY__INIT, *ls[] = {&l1};
    l1.key = "k";
    l1.value = "v";
    int64_t i64[] = {INT64_MAX, 0, -1};
    double dbl[] = {0.1, -1e-300, 5e-324};
    Aztest__All a = AZTEST__ALL__INIT;
    a.scalars = &s;
    a.inner = &in;
    a.n_r_inner = 2;
    a.r_inner = ins;
    a.ts = &ts;
    a.dur = &du;
    a.n_labels = 1;
    a.labels = ls;
    a.n_r_int64 = 3;
    a.r_int64 = i64;
    a.n_r_double = 3;
    a.r_double = dbl;
    a.choice_case = AZTEST__ALL__CHOICE_CHOICE_NUM;
    a.choice_num = -42;
    char *json = enc(&a, 0);
    if (!json) return;
    Aztest__All *b = dec(ALL, json);
    if (b) {
        CU_ASSERT_TRUE(same_message(&a.base, &b->base));
        char *again = enc(b, AZ_PBJSON_PRETTY);
        Aztest__All *c = dec(ALL, again);
        if (c) CU_ASSERT_TRUE(same_message(&a.base, &c->base));
        pbfree(c);
        free(again);
    }
    pbfree(b);
    free(json);
}

static void test_bad_arguments(void)
{
    char msg[AZ_MSG_MAX];
    char *out = NULL;
    ProtobufCMessage *m = NULL;
    CU_ASSERT_EQUAL(az_pbjson_encode(NULL, 0, &out, msg), AZ_ERR_INTERNAL);
    CU_ASSERT_EQUAL(az_pbjson_decode(NULL, "{}", 2, NULL, &m, msg), AZ_ERR_INTERNAL);
    CU_ASSERT_EQUAL(az_pbjson_decode(ALL, NULL, 2, NULL, &m, msg), AZ_ERR_INTERNAL);
    CU_ASSERT_PTR_NULL(m);
    /* msg may be NULL */
    CU_ASSERT_EQUAL(az_pbjson_decode(ALL, "{\"x\":1}", 7, NULL, &m, NULL), AZ_ERR_INVALID);
}

int main(void)
{
    if (CU_initialize_registry() != CUE_SUCCESS) return 2;
    CU_pSuite s = CU_add_suite("pbjson", NULL, NULL);
    static const struct {
        const char *name;
        CU_TestFunc fn;
    } tests[] = {
        {"scalars encode", test_scalars_encode},
        {"scalars decode", test_scalars_decode},
        {"defaults", test_defaults},
        {"flags", test_flags},
        {"integers", test_integers},
        {"floats", test_floats},
        {"enums", test_enums},
        {"strings and unicode", test_strings},
        {"bytes base64", test_bytes},
        {"repeated", test_repeated},
        {"maps", test_maps},
        {"oneof", test_oneof},
        {"timestamp", test_timestamp},
        {"duration", test_duration},
        {"field mask", test_field_mask},
        {"wrappers", test_wrappers},
        {"struct and value", test_struct_value},
        {"empty and null value", test_empty_null_value},
        {"any is unimplemented", test_any_unimplemented},
        {"field names", test_names},
        {"nulls and type errors", test_nulls_and_types},
        {"nesting depth", test_depth},
        {"allocator", test_allocator},
        {"arena", test_arena},
        {"binary round trip", test_round_trip_binary},
        {"bad arguments", test_bad_arguments},
    };
    for (size_t i = 0; s && i < sizeof tests / sizeof tests[0]; i++)
        if (!CU_add_test(s, tests[i].name, tests[i].fn)) s = NULL;
    if (!s) {
        CU_cleanup_registry();
        return 2;
    }
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    unsigned failures = CU_get_number_of_failures();
    CU_cleanup_registry();
    return failures ? 1 : 0;
}
