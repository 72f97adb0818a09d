/* REST <-> protobuf transcoding per the google.api.http rules: builds a request message from
 * path variables, query parameters and a JSON body, encodes responses and errors as proto3
 * JSON, and maps gRPC status codes to HTTP status codes. Pure functions; no I/O. */
#ifndef AZ_TRANSCODE_H
#define AZ_TRANSCODE_H

#include <protobuf-c/protobuf-c.h>
#include <stddef.h>

#include "core/err.h"
#include "httprule.h"
#include "routes.h"

/* One query parameter, already percent-decoded ('+' as space) by the HTTP layer. Not
 * NUL-terminated; name_len/value_len bytes. */
typedef struct az_query_param {
    const char *name;
    size_t name_len;
    const char *value;
    size_t value_len;
} az_query_param;

/* Most query parameters one request may carry; more is INVALID_ARGUMENT. */
#define AZ_TRANSCODE_MAX_PARAMS 64

/* Builds the request message of route r from the path bindings b[0..nb) (from az_routes_match),
 * the query parameters q[0..nq) and the body (body_len bytes of JSON; may be NULL/0).
 *
 * Mapping (google.api.http): r->body "*" decodes the body as the whole request (and query
 * parameters are then an error); a field path decodes it into that field; NULL means no body
 * is read (a non-empty body is then an error). An empty body (no bytes, or only whitespace)
 * with "*" or a field is the empty message: "{}".
 * Query parameters fill any field not bound by the path or the body: "pageSize" or "page_size",
 * dotted paths into nested messages ("agent.llm.model"), repeated scalar fields by repeating the
 * parameter, each value converted by the field's type (bool "true"/"false", integers, floats,
 * enum names or numbers, Timestamp/Duration/FieldMask strings, wrappers by their inner type).
 * Path bindings set their field last (as strings converted the same way); a body that gives the
 * same field a different value is an error.
 *
 * On AZ_OK *out is a message of r->method->input allocated with alloc (NULL = malloc; free with
 * protobuf_c_message_free_unpacked(*out, alloc)). On error *out is NULL, nothing leaks, and
 * msg names what is wrong as the client wrote it:
 *   AZ_ERR_INVALID "query parameter pageSize: expected an integer, got \"ten\"",
 *                  "unknown query parameter \"colour\"", "query parameter agent: is a message;
 *                  set its fields (agent.id=...)", "query parameter id: bound by the path",
 *                  "query parameter pageSize: given more than once", "... empty value",
 *                  "query parameter labels: labels is a map; maps cannot be set from the
 *                  query", "more than 64 query parameters", names or values over 8 KiB,
 *                  "path parameter id: ...", "agent.fooBar: unknown field" (body errors keep
 *                  pbjson's field paths rooted at the body field, or at the request for "*"),
 *                  "body: invalid JSON at line 1 column 9: ...", "this method takes no body",
 *                  "agent.id: the body says \"x\" but the path says \"y\"";
 *   AZ_ERR_NOMEM; AZ_ERR_INTERNAL for a binding that is not a field of the request or a
 *   missing argument (a caller bug). docs/gateway-routes.md lists every case. */
az_err az_transcode_request(const az_route *r, const az_httprule_binding *b, size_t nb,
                            const az_query_param *q, size_t nq, const char *body, size_t body_len,
                            ProtobufCAllocator *alloc, ProtobufCMessage **out, char *msg);

/* Encodes m (a message of r->method->output) as the REST response body: the whole message, or
 * only r->response_body when set. On AZ_OK *out (NUL-terminated, *len bytes) is freed by the
 * caller with free(). On error *out is NULL and msg says why (AZ_ERR_INVALID for a message
 * that cannot be encoded, e.g. invalid UTF-8). */
az_err az_transcode_response(const az_route *r, const ProtobufCMessage *m, char **out, size_t *len,
                             char *msg);

/* The HTTP status for a gRPC status code, per the standard mapping (google.rpc.Code):
 * OK 200, CANCELLED 499, UNKNOWN 500, INVALID_ARGUMENT 400, DEADLINE_EXCEEDED 504, NOT_FOUND 404,
 * ALREADY_EXISTS 409, PERMISSION_DENIED 403, RESOURCE_EXHAUSTED 429, FAILED_PRECONDITION 400,
 * ABORTED 409, OUT_OF_RANGE 400, UNIMPLEMENTED 501, INTERNAL 500, UNAVAILABLE 503, DATA_LOSS 500,
 * UNAUTHENTICATED 401; anything else 500. */
int az_transcode_http_status(int grpc_code);

/* The google.rpc.Status JSON body {"code":5,"message":"...","details":[]} for code and message
 * (message may be NULL = ""; invalid UTF-8 in it is replaced, so the result is always valid
 * JSON). On AZ_OK *out (NUL-terminated, *len bytes) is freed with free(); AZ_ERR_NOMEM
 * otherwise. */
az_err az_transcode_status_json(int grpc_code, const char *message, char **out, size_t *len);

#endif
