/* Fuzzes REST transcoding (server/gateway/transcode) over the real route table: the input is
 * "METHOD PATH" on the first line, a query string ("a=1&b=2", already decoded) on the second and
 * the body after it, routed by az_routes_match and built by az_transcode_request as the gateway
 * does. Invariants: a failed request leaves nothing and says why (never an internal error: the
 * route and bindings come from the table); whatever decodes encodes with pbjson, and that JSON
 * decodes again as the request type; the error text always makes a valid google.rpc.Status body. */
#include <jansson.h>
#include <string.h>

#include "agentz/v1/agent.pb-c.h"
#include "agentz/v1/system.pb-c.h"
#include "agentz/v1/task.pb-c.h"
#include "agentz/v1/workflow.pb-c.h"
#include "core/pbjson.h"
#include "descriptor_set.h"
#include "fuzz.h"
#include "gateway/routes.h"
#include "gateway/transcode.h"

static const az_routes *routes(void)
{
    static az_routes *t;
    if (!t) {
        static const ProtobufCServiceDescriptor *const services[] = {
            &agentz__v1__agent_service__descriptor,
            &agentz__v1__task_service__descriptor,
            &agentz__v1__workflow_service__descriptor,
            &agentz__v1__system_service__descriptor,
        };
        char msg[AZ_MSG_MAX];
        az_err err = az_routes_new(az_descriptor_set, az_descriptor_set_len, services,
                                   sizeof services / sizeof services[0], &t, msg);
        AZ_FUZZ_CHECK(err == AZ_OK, "the real route table does not build: %s", msg);
    }
    return t;
}

/* The next line of [*p, end): returns its start, sets *n, moves *p past the newline. */
static const char *line(const char **p, const char *end, size_t *n)
{
    const char *s = *p, *nl = memchr(s, '\n', (size_t)(end - s));
    *n = (size_t)((nl ? nl : end) - s);
    *p = nl ? nl + 1 : end;
    return s;
}

static size_t split_query(const char *s, size_t len, az_query_param *q, size_t max)
{
    size_t n = 0;
    const char *end = s + len;
    while (s < end && n < max) {
        const char *amp = memchr(s, '&', (size_t)(end - s)), *stop = amp ? amp : end;
        const char *eq = memchr(s, '=', (size_t)(stop - s));
        q[n].name = s;
        q[n].name_len = (size_t)((eq ? eq : stop) - s);
        q[n].value = eq ? eq + 1 : stop;
        q[n].value_len = (size_t)(stop - q[n].value);
        n++;
        s = amp ? amp + 1 : end;
    }
    return n;
}

/* The status body for msg must be JSON carrying msg (exactly, when msg is valid UTF-8). */
static void check_status(const char *msg)
{
    char *out = NULL;
    size_t len = 0;
    if (az_transcode_status_json(3, msg, &out, &len) != AZ_OK) return;
    json_error_t jerr;
    json_t *j = json_loadb(out, len, 0, &jerr);
    AZ_FUZZ_CHECK(j != NULL, "status body is not JSON (%s): %s", jerr.text, out);
    json_t *utf8 = json_string(msg); /* NULL when msg is not valid UTF-8 */
    if (utf8)
        AZ_FUZZ_CHECK(json_equal(json_object_get(j, "message"), utf8), "status message changed");
    json_decref(utf8);
    json_decref(j);
    free(out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *p = (const char *)data, *end = p + size;
    size_t n;
    const char *first = line(&p, end, &n);
    const char *sp = memchr(first, ' ', n);
    char method[16];
    size_t mlen = sp ? (size_t)(sp - first) : 0;
    if (!sp || mlen >= sizeof method) return 0;
    memcpy(method, first, mlen);
    method[mlen] = '\0';
    const char *path = sp + 1;
    size_t plen = n - mlen - 1;
    const char *query = line(&p, end, &n);
    size_t qlen = n;
    const char *body = p;
    size_t blen = (size_t)(end - p);

    /* any bytes as an error message (up to a NUL, as C strings go) */
    char *text = malloc(blen + 1);
    if (text) {
        memcpy(text, body, blen);
        text[blen] = '\0';
        check_status(text);
        free(text);
    }

    const az_route *r = NULL;
    az_httprule_binding b[AZ_HTTPRULE_MAX_VARS];
    size_t nb = 0;
    if (az_routes_match(routes(), method, path, plen, &r, b, AZ_HTTPRULE_MAX_VARS, &nb, NULL, 0) !=
        AZ_ROUTE_FOUND)
        return 0;
    az_query_param q[AZ_TRANSCODE_MAX_PARAMS + 4];
    size_t nq = split_query(query, qlen, q, sizeof q / sizeof q[0]);

    char msg[AZ_MSG_MAX] = "";
    ProtobufCMessage *m = (ProtobufCMessage *)1;
    az_err err = az_transcode_request(r, b, nb, q, nq, blen ? body : NULL, blen, NULL, &m, msg);
    if (err) {
        AZ_FUZZ_CHECK(m == NULL, "failed request left a message");
        AZ_FUZZ_CHECK(err == AZ_ERR_INVALID || err == AZ_ERR_NOMEM || err == AZ_ERR_UNIMPLEMENTED,
                      "%s: error %d: %s", r->method->grpc_path, err, msg);
        AZ_FUZZ_CHECK(msg[0] != '\0', "failed request says nothing");
        check_status(msg);
        return 0;
    }
    AZ_FUZZ_CHECK(m && m->descriptor == r->method->input, "request of the wrong type");
    char *json = NULL;
    err = az_pbjson_encode(m, 0, &json, msg);
    if (err != AZ_ERR_NOMEM) {
        AZ_FUZZ_CHECK(err == AZ_OK, "%s: a transcoded request does not encode: %s",
                      r->method->grpc_path, msg);
        ProtobufCMessage *again = NULL;
        err = az_pbjson_decode(m->descriptor, json, strlen(json), NULL, &again, msg);
        AZ_FUZZ_CHECK(err == AZ_OK || err == AZ_ERR_NOMEM, "%s: its encoding does not decode: %s\n%s",
                      r->method->grpc_path, msg, json);
        if (again) protobuf_c_message_free_unpacked(again, NULL);
    }
    free(json);
    protobuf_c_message_free_unpacked(m, NULL);
    return 0;
}
