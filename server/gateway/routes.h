/* The gateway's route table, built from the google.api.http annotations in the embedded
 * descriptor set (not a hand-written list): REST bindings for every annotated RPC, and every RPC
 * of the given services by its gRPC path (grpc-web and Connect). */
#ifndef AZ_ROUTES_H
#define AZ_ROUTES_H

#include <protobuf-c/protobuf-c.h>
#include <stddef.h>
#include <stdint.h>

#include "core/err.h"
#include "httprule.h"

/* One RPC of a service the gateway proxies. */
typedef struct az_route_method {
    const char *grpc_path;        /* "/agentz.v1.AgentService/GetAgent" */
    const char *service;          /* "agentz.v1.AgentService" */
    const char *name;             /* "GetAgent" */
    int server_streaming;         /* from the descriptor set */
    int client_streaming;         /* the gateway refuses these over HTTP */
    const ProtobufCMessageDescriptor *input, *output;
} az_route_method;

/* One HTTP binding (the rule itself or one of its additional_bindings). Strings are owned by
 * the table. */
typedef struct az_route {
    const char *http_method;   /* "GET", "POST", "PUT", "PATCH", "DELETE" (custom kinds refused) */
    const az_httprule *rule;   /* the path template */
    const char *body;          /* NULL: no body; "*": the whole request; else a field path */
    const char *response_body; /* NULL: the whole response; else a field path of the output */
    const az_route_method *method;
    size_t binding;            /* 0: the rule itself; k: its k-th additional binding */
} az_route;

typedef struct az_routes az_routes;

/* Builds the table from a serialized google.protobuf.FileDescriptorSet (descset, len bytes;
 * gen/descriptor_set.h's az_descriptor_set, or gen/agentz-docs.desc which adds source info)
 * for the methods of services[0..n) (protobuf-c service descriptors; their input/output
 * message descriptors are the ones requests are decoded with). Every method of those services
 * appears in the method list; those with a google.api.http option also get routes.
 * The bytes need not outlive the table.
 * On AZ_OK *out is a table the caller frees with az_routes_free. On failure *out is NULL and
 * msg says why: AZ_ERR_INVALID for a descriptor set that does not parse, a service or message
 * missing from it (or naming other input/output types than the service descriptor), a template
 * that does not parse, a body or path field that does not exist in the request message (names
 * the method and the field; a path variable must end at a singular scalar, enum or value type,
 * a body field be a top-level singular message), a custom HTTP method, nested
 * additional_bindings, two methods bound to the same HTTP method and template shape, a method
 * listed twice; AZ_ERR_NOMEM. */
az_err az_routes_new(const uint8_t *descset, size_t len,
                     const ProtobufCServiceDescriptor *const *services, size_t n,
                     az_routes **out, char *msg);

/* Frees t; accepts NULL. */
void az_routes_free(az_routes *t);

/* Every route, most specific first (the order az_routes_match tries them); owned by t. */
size_t az_routes_count(const az_routes *t);
const az_route *az_routes_at(const az_routes *t, size_t i);

/* Every method of the services, in service then declaration order; owned by t. */
size_t az_routes_method_count(const az_routes *t);
const az_route_method *az_routes_method_at(const az_routes *t, size_t i);

/* The method with gRPC path grpc_path (len bytes), or NULL. */
const az_route_method *az_routes_find_method(const az_routes *t, const char *grpc_path,
                                             size_t len);

/* 1 when one path or query value can spell a message of type d (google.protobuf.Timestamp,
 * Duration, FieldMask and the wrappers Int32Value, StringValue, ...), so a path variable or a
 * query parameter may name a field of that type; 0 for any other message (or NULL). */
int az_routes_is_value_type(const ProtobufCMessageDescriptor *d);

typedef enum az_route_result {
    AZ_ROUTE_FOUND = 0,      /* *route and the bindings are set */
    AZ_ROUTE_NO_PATH,        /* no template matches the path: 404 */
    AZ_ROUTE_BAD_METHOD,     /* templates match, but not for this HTTP method: 405 + Allow */
} az_route_result;

/* Finds the route for http_method ("GET"; "HEAD" matches GET routes) and path (len bytes,
 * percent-decoded, no query). On AZ_ROUTE_FOUND *route and b[0..*nb) are set (bindings point
 * into path); the route is the first (most specific) of that method whose template matches. On
 * AZ_ROUTE_BAD_METHOD allow (allow_size bytes, NUL-terminated) lists the methods that would
 * match, as for an Allow header, in the order GET, POST, PUT, PATCH, DELETE ("GET, PATCH,
 * DELETE"; HEAD is implied by GET and not listed; a name that does not fit is left out whole).
 * Any other method ("OPTIONS", "get") never matches. Never allocates; thread-safe. */
az_route_result az_routes_match(const az_routes *t, const char *http_method, const char *path,
                                size_t len, const az_route **route, az_httprule_binding *b,
                                size_t max, size_t *nb, char *allow, size_t allow_size);

#endif
