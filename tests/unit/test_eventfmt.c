/* CUnit suite for server/gateway/eventfmt: agentz.v1.Event messages built with protobuf-c and
 * packed, then formatted for Server-Sent Events (an id: line only for durable events, heartbeats
 * as comments, the proto3 JSON as data), NDJSON ({"result":...} lines) and WebSocket (bare JSON);
 * the sequence reported back; bytes that are not the message type; JSON the mapping refuses;
 * and how each format ends a stream with OK and with an error. */
#include <CUnit/Basic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agentz/v1/event.pb-c.h"
#include "gateway/eventfmt.h"
#include "google/protobuf/timestamp.pb-c.h"
#include "google/protobuf/wrappers.pb-c.h"

#define EVENT_DESC (&agentz__v1__event__descriptor)

/* ---- helpers ---- */

/* Packs m into a malloc'ed buffer. */
static uint8_t *pack(const ProtobufCMessage *m, size_t *len)
{
    *len = protobuf_c_message_get_packed_size(m);
    uint8_t *buf = malloc(*len ? *len : 1);
    CU_ASSERT_PTR_NOT_NULL_FATAL(buf);
    CU_ASSERT_EQUAL(protobuf_c_message_pack(m, buf), *len);
    return buf;
}

/* Formats m (packed) for f and compares with want exactly, including the length, and the
 * reported sequence with want_seq (INT64_MIN: not checked); then again with no sequence asked
 * for. */
static void check_fmt_seq(az_eventfmt f, const ProtobufCMessage *m, const char *want,
                          int64_t want_seq)
{
    size_t len;
    uint8_t *data = pack(m, &len);
    char *out = (char *)1, msg[AZ_MSG_MAX] = "";
    size_t out_len = 99999;
    int64_t seq = -777;
    az_err err = az_eventfmt_message(f, m->descriptor, data, len, &out, &out_len, &seq, msg);
    if (err) fprintf(stderr, "\n  az_eventfmt_message: %s\n", msg);
    if (want_seq != INT64_MIN) CU_ASSERT_EQUAL(seq, want_seq);
    CU_ASSERT_EQUAL(err, AZ_OK);
    CU_ASSERT_PTR_NOT_NULL_FATAL(out);
    CU_ASSERT_FATAL(out != (char *)1);
    if (strcmp(out, want) != 0) fprintf(stderr, "\n  got: [%s]\n want: [%s]\n", out, want);
    CU_ASSERT_STRING_EQUAL(out, want);
    CU_ASSERT_EQUAL(out_len, strlen(want));
    CU_ASSERT_EQUAL(out[out_len], '\0');
    free(out);
    /* sequence may be NULL: the same text */
    out = NULL;
    out_len = 0;
    CU_ASSERT_EQUAL(az_eventfmt_message(f, m->descriptor, data, len, &out, &out_len, NULL, msg),
                    AZ_OK);
    if (out) CU_ASSERT_STRING_EQUAL(out, want);
    CU_ASSERT_EQUAL(out_len, strlen(want));
    free(out);
    free(data);
}

/* For messages whose sequence is 0 (ephemeral events, other types). */
static void check_fmt(az_eventfmt f, const ProtobufCMessage *m, const char *want)
{
    check_fmt_seq(f, m, want, 0);
}

static void check_end(az_eventfmt f, int status, const char *message, const char *want)
{
    char *out = (char *)1;
    size_t out_len = 99999;
    CU_ASSERT_EQUAL(az_eventfmt_end(f, status, message, &out, &out_len), AZ_OK);
    if (!want) {
        CU_ASSERT_EQUAL(out_len, 0);
        CU_ASSERT_PTR_NULL(out);
        if (out && out != (char *)1) free(out);
        return;
    }
    CU_ASSERT_PTR_NOT_NULL_FATAL(out);
    CU_ASSERT_FATAL(out != (char *)1);
    if (strcmp(out, want) != 0) fprintf(stderr, "\n  got: [%s]\n want: [%s]\n", out, want);
    CU_ASSERT_STRING_EQUAL(out, want);
    CU_ASSERT_EQUAL(out_len, strlen(want));
    free(out);
}

/* A durable run status change: sequence 7. */
static void run_event(Agentz__V1__Event *ev, Google__Protobuf__Timestamp *ts,
                      Agentz__V1__RunStatusChanged *rs)
{
    agentz__v1__event__init(ev);
    google__protobuf__timestamp__init(ts);
    agentz__v1__run_status_changed__init(rs);
    ts->seconds = 1700000000;
    ts->nanos = 500000000;
    rs->from = AGENTZ__V1__RUN_STATUS__RUN_STATUS_PENDING;
    rs->to = AGENTZ__V1__RUN_STATUS__RUN_STATUS_RUNNING;
    ev->sequence = 7;
    ev->time = ts;
    ev->run_id = "run-1";
    ev->payload_case = AGENTZ__V1__EVENT__PAYLOAD_RUN_STATUS;
    ev->run_status = rs;
}

#define RUN_JSON                                                                                   \
    "{\"sequence\":\"7\",\"time\":\"2023-11-14T22:13:20.500Z\",\"runId\":\"run-1\","             \
    "\"runStatus\":{\"from\":\"RUN_STATUS_PENDING\",\"to\":\"RUN_STATUS_RUNNING\"}}"

/* ---- messages ---- */

static void test_sse_durable_event(void)
{
    Agentz__V1__Event ev;
    Google__Protobuf__Timestamp ts;
    Agentz__V1__RunStatusChanged rs;
    run_event(&ev, &ts, &rs);
    check_fmt_seq(AZ_EVENTFMT_SSE, &ev.base, "id: 7\ndata: " RUN_JSON "\n\n", 7);

    /* a large sequence, in full */
    Agentz__V1__LogLine log = AGENTZ__V1__LOG_LINE__INIT;
    log.level = AGENTZ__V1__LOG_LEVEL__LOG_LEVEL_WARN;
    log.message = "disk at 91%";
    Agentz__V1__Event lev = AGENTZ__V1__EVENT__INIT;
    lev.sequence = INT64_C(9007199254740993);
    lev.task_id = "t-9";
    lev.payload_case = AGENTZ__V1__EVENT__PAYLOAD_LOG;
    lev.log = &log;
    check_fmt_seq(AZ_EVENTFMT_SSE, &lev.base,
              "id: 9007199254740993\n"
              "data: {\"sequence\":\"9007199254740993\",\"taskId\":\"t-9\","
              "\"log\":{\"level\":\"LOG_LEVEL_WARN\",\"message\":\"disk at 91%\"}}\n\n",
              INT64_C(9007199254740993));
    lev.sequence = 1;
    check_fmt_seq(AZ_EVENTFMT_SSE, &lev.base,
              "id: 1\n"
              "data: {\"sequence\":\"1\",\"taskId\":\"t-9\","
              "\"log\":{\"level\":\"LOG_LEVEL_WARN\",\"message\":\"disk at 91%\"}}\n\n",
              1);
}

static void test_sse_ephemeral_event(void)
{
    /* sequence 0: no id line, so Last-Event-ID keeps the last durable one */
    Agentz__V1__TokenDelta tok = AGENTZ__V1__TOKEN_DELTA__INIT;
    tok.text = "Hel\"lo\n";
    tok.attempt = 2;
    Agentz__V1__Event ev = AGENTZ__V1__EVENT__INIT;
    ev.task_id = "t1";
    ev.payload_case = AGENTZ__V1__EVENT__PAYLOAD_TOKEN;
    ev.token = &tok;
    const char *json = "{\"taskId\":\"t1\",\"token\":{\"text\":\"Hel\\\"lo\\n\",\"attempt\":2}}";
    char want[256];
    snprintf(want, sizeof want, "data: %s\n\n", json);
    check_fmt(AZ_EVENTFMT_SSE, &ev.base, want);
    /* (the newline in the text is escaped: the JSON stays on its one data: line) */
    /* negative sequences are not durable either */
    ev.sequence = -3;
    snprintf(want, sizeof want, "data: {\"sequence\":\"-3\",\"taskId\":\"t1\",\"token\":"
                                "{\"text\":\"Hel\\\"lo\\n\",\"attempt\":2}}\n\n");
    check_fmt_seq(AZ_EVENTFMT_SSE, &ev.base, want, INT64_MIN); /* (no contract for < 0) */
}

static void test_sse_heartbeat(void)
{
    Agentz__V1__Heartbeat hb = AGENTZ__V1__HEARTBEAT__INIT;
    Google__Protobuf__Timestamp ts = GOOGLE__PROTOBUF__TIMESTAMP__INIT;
    ts.seconds = 1700000123;
    Agentz__V1__Event ev = AGENTZ__V1__EVENT__INIT;
    ev.time = &ts;
    ev.payload_case = AGENTZ__V1__EVENT__PAYLOAD_HEARTBEAT;
    ev.heartbeat = &hb;
    check_fmt(AZ_EVENTFMT_SSE, &ev.base, ": heartbeat 1700000123\n\n");
    ts.seconds = 1;
    ts.nanos = 999999999;
    check_fmt(AZ_EVENTFMT_SSE, &ev.base, ": heartbeat 1\n\n");
    /* in the JSON formats a heartbeat is an ordinary message */
    ts.seconds = 1700000123;
    ts.nanos = 0;
    check_fmt(AZ_EVENTFMT_NDJSON, &ev.base,
              "{\"result\":{\"time\":\"2023-11-14T22:15:23Z\",\"heartbeat\":{}}}\n");
    check_fmt(AZ_EVENTFMT_WS, &ev.base, "{\"time\":\"2023-11-14T22:15:23Z\",\"heartbeat\":{}}");
}

static void test_ndjson_and_ws(void)
{
    Agentz__V1__Event ev;
    Google__Protobuf__Timestamp ts;
    Agentz__V1__RunStatusChanged rs;
    run_event(&ev, &ts, &rs);
    check_fmt_seq(AZ_EVENTFMT_NDJSON, &ev.base, "{\"result\":" RUN_JSON "}\n", 7);
    check_fmt_seq(AZ_EVENTFMT_WS, &ev.base, RUN_JSON, 7);

    /* the empty Event (no bytes at all) */
    Agentz__V1__Event empty = AGENTZ__V1__EVENT__INIT;
    check_fmt(AZ_EVENTFMT_NDJSON, &empty.base, "{\"result\":{}}\n");
    check_fmt(AZ_EVENTFMT_WS, &empty.base, "{}");
    check_fmt(AZ_EVENTFMT_SSE, &empty.base, "data: {}\n\n");
}

static void test_other_message_types(void)
{
    /* only agentz.v1.Event gets id: lines (and a sequence); an Int64Value of 7 is just data */
    Google__Protobuf__Int64Value v = GOOGLE__PROTOBUF__INT64_VALUE__INIT;
    v.value = 7;
    check_fmt(AZ_EVENTFMT_SSE, &v.base, "data: \"7\"\n\n");
    check_fmt(AZ_EVENTFMT_NDJSON, &v.base, "{\"result\":\"7\"}\n");
    check_fmt(AZ_EVENTFMT_WS, &v.base, "\"7\"");
    Google__Protobuf__StringValue s = GOOGLE__PROTOBUF__STRING_VALUE__INIT;
    s.value = "a\nb";
    check_fmt(AZ_EVENTFMT_SSE, &s.base, "data: \"a\\nb\"\n\n");
}

static void check_fmt_err(az_eventfmt f, const ProtobufCMessageDescriptor *d, const uint8_t *data,
                          size_t len, az_err want)
{
    char *out = (char *)1, msg[AZ_MSG_MAX] = "";
    size_t out_len = 99999;
    az_err err = az_eventfmt_message(f, d, data, len, &out, &out_len, NULL, msg);
    CU_ASSERT_EQUAL(err, want);
    CU_ASSERT_PTR_NULL(out);
    CU_ASSERT(msg[0] != '\0');
    if (out && out != (char *)1) free(out);
}

static void test_not_an_event(void)
{
    static const uint8_t truncated_varint[] = {0x08, 0x80};
    static const uint8_t truncated_string[] = {0x1a, 0x05, 'a'};
    static const uint8_t bad_wire_type[] = {0x0f, 0x01};
    static const uint8_t runaway[] = {0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
                                      0xff, 0xff, 0xff, 0xff, 0xff, 0x01};
    for (int f = AZ_EVENTFMT_SSE; f <= AZ_EVENTFMT_WS; f++) {
        check_fmt_err((az_eventfmt)f, EVENT_DESC, truncated_varint, sizeof truncated_varint,
                      AZ_ERR_INTERNAL);
        check_fmt_err((az_eventfmt)f, EVENT_DESC, truncated_string, sizeof truncated_string,
                      AZ_ERR_INTERNAL);
        check_fmt_err((az_eventfmt)f, EVENT_DESC, bad_wire_type, sizeof bad_wire_type,
                      AZ_ERR_INTERNAL);
        check_fmt_err((az_eventfmt)f, EVENT_DESC, runaway, sizeof runaway, AZ_ERR_INTERNAL);
    }
}

static void test_unencodable(void)
{
    /* protobuf-c unpacks a string that is not UTF-8; proto3 JSON cannot carry it */
    Agentz__V1__Event ev = AGENTZ__V1__EVENT__INIT;
    ev.sequence = 3;
    ev.run_id = "bad\xff";
    size_t len;
    uint8_t *data = pack(&ev.base, &len);
    for (int f = AZ_EVENTFMT_SSE; f <= AZ_EVENTFMT_WS; f++)
        check_fmt_err((az_eventfmt)f, EVENT_DESC, data, len, AZ_ERR_INVALID);
    free(data);

    /* a time past year 9999 */
    Google__Protobuf__Timestamp ts = GOOGLE__PROTOBUF__TIMESTAMP__INIT;
    ts.seconds = INT64_C(253402300800);
    Agentz__V1__Event tev = AGENTZ__V1__EVENT__INIT;
    tev.sequence = 4;
    tev.time = &ts;
    data = pack(&tev.base, &len);
    check_fmt_err(AZ_EVENTFMT_SSE, EVENT_DESC, data, len, AZ_ERR_INVALID);
    check_fmt_err(AZ_EVENTFMT_NDJSON, EVENT_DESC, data, len, AZ_ERR_INVALID);
    free(data);
}

/* ---- stream ends ---- */

static void test_end_sse(void)
{
    /* always an end event, OK included, so EventSource does not reconnect */
    check_end(AZ_EVENTFMT_SSE, 0, NULL,
              "event: end\ndata: {\"code\":0,\"message\":\"\",\"details\":[]}\n\n");
    check_end(AZ_EVENTFMT_SSE, 0, "",
              "event: end\ndata: {\"code\":0,\"message\":\"\",\"details\":[]}\n\n");
    check_end(AZ_EVENTFMT_SSE, 5, "run r1 not found",
              "event: end\ndata: {\"code\":5,\"message\":\"run r1 not found\",\"details\":[]}\n\n");
    /* the message stays on one data: line */
    check_end(AZ_EVENTFMT_SSE, 8, "slow\nconsumer \"x\"",
              "event: end\ndata: {\"code\":8,\"message\":\"slow\\nconsumer \\\"x\\\"\","
              "\"details\":[]}\n\n");
}

static void test_end_ndjson_ws(void)
{
    /* nothing at all for OK */
    check_end(AZ_EVENTFMT_NDJSON, 0, NULL, NULL);
    check_end(AZ_EVENTFMT_NDJSON, 0, "ignored", NULL);
    check_end(AZ_EVENTFMT_WS, 0, NULL, NULL);
    check_end(AZ_EVENTFMT_WS, 0, "ignored", NULL);
    /* an error object otherwise */
    check_end(AZ_EVENTFMT_NDJSON, 8, "too slow",
              "{\"error\":{\"code\":8,\"message\":\"too slow\",\"details\":[]}}\n");
    check_end(AZ_EVENTFMT_WS, 13, "boom",
              "{\"error\":{\"code\":13,\"message\":\"boom\",\"details\":[]}}");
    check_end(AZ_EVENTFMT_NDJSON, 1, NULL,
              "{\"error\":{\"code\":1,\"message\":\"\",\"details\":[]}}\n");
    check_end(AZ_EVENTFMT_WS, 14, "a\"b\\c",
              "{\"error\":{\"code\":14,\"message\":\"a\\\"b\\\\c\",\"details\":[]}}");
}

static void test_sse_preamble(void)
{
    const char *p = AZ_EVENTFMT_SSE_PREAMBLE;
    size_t n = strlen(p);
    /* one complete block (blank-line terminated) that dispatches no event: a retry: field and
     * a comment, no data: */
    CU_ASSERT(n > 2 && strcmp(p + n - 2, "\n\n") == 0);
    CU_ASSERT(strstr(p, "\n\n") == p + n - 2);
    CU_ASSERT(strncmp(p, "retry: ", 7) == 0);
    CU_ASSERT(atoi(p + 7) > 0);
    CU_ASSERT_PTR_NULL(strstr(p, "data:"));
    CU_ASSERT_PTR_NOT_NULL(strstr(p, "\n:"));
    CU_ASSERT_STRING_EQUAL(p, "retry: 3000\n: stream open\n\n");
}

int main(void)
{
    if (CU_initialize_registry() != CUE_SUCCESS) return 1;
    CU_pSuite s = CU_add_suite("eventfmt", NULL, NULL);
    if (!s) return 1;
    CU_add_test(s, "SSE durable event", test_sse_durable_event);
    CU_add_test(s, "SSE ephemeral event", test_sse_ephemeral_event);
    CU_add_test(s, "SSE heartbeat", test_sse_heartbeat);
    CU_add_test(s, "NDJSON and WS", test_ndjson_and_ws);
    CU_add_test(s, "other message types", test_other_message_types);
    CU_add_test(s, "bytes that are not an Event", test_not_an_event);
    CU_add_test(s, "messages JSON cannot carry", test_unencodable);
    CU_add_test(s, "SSE end", test_end_sse);
    CU_add_test(s, "NDJSON and WS end", test_end_ndjson_ws);
    CU_add_test(s, "SSE preamble", test_sse_preamble);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    unsigned failures = CU_get_number_of_failures() + CU_get_number_of_tests_failed() +
                        CU_get_number_of_suites_failed();
    CU_cleanup_registry();
    return failures ? 1 : 0;
}
