/* gRPC server reflection (grpc.reflection.v1 and v1alpha ServerReflectionInfo), answered from
 * an embedded serialized FileDescriptorSet (gen/descriptor_set.h). */
#ifndef AZ_REFLECTION_H
#define AZ_REFLECTION_H

#include <stddef.h>

#include "../core/err.h"
#include "rpc.h"

typedef struct az_reflection az_reflection;

/* Parses the serialized google.protobuf.FileDescriptorSet set[0..len) and indexes its files,
 * symbols and extensions. The bytes are borrowed (responses slice them) and must outlive r.
 * Returns NULL with msg filled when the set is malformed, a file lacks a name, a name or symbol
 * is defined twice, an import is missing from the set (build it with --include_imports), or
 * memory runs out. Free with az_reflection_free. */
az_reflection *az_reflection_new(const unsigned char *set, size_t len, char *msg);

/* Frees r; accepts NULL. The method table from az_reflection_methods dies with it, so free r
 * only after the server that serves the table is freed. */
void az_reflection_free(az_reflection *r);

/* The method table bound to r: /grpc.reflection.v1.ServerReflection/ServerReflectionInfo and
 * /grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo, both AZ_RPC_BIDI; *n = 2.
 * Owned by r. Unknown files and symbols are answered inside error_response (code 5 NOT_FOUND),
 * never as an RPC status; the stream ends with OK when the client half-closes. */
const az_method *az_reflection_methods(az_reflection *r, size_t *n);

/* ---- exported for tests (tests/unit/test_reflection.c); not for production callers ---- */

/* Finds the file defining symbol: a fully-qualified service, method ("pkg.Svc.Method"),
 * message (nested: "pkg.Msg.Inner"), enum, enum value (scoped like protoc: "pkg.VALUE" or
 * "pkg.Msg.VALUE") or extension ("google.api.http"). A leading '.' is accepted. AZ_OK with
 * *file_name (owned by r), or AZ_ERR_NOT_FOUND with msg. */
az_err az_reflection_lookup_symbol(const az_reflection *r, const char *symbol,
                                   const char **file_name, char *msg);

/* Fills names (room for cap entries; may be NULL when cap is 0) with file_name and every file
 * it imports transitively, each once, file_name first, then breadth-first in import order.
 * *n is the full closure size even when it exceeds cap. AZ_ERR_NOT_FOUND with msg for an
 * unknown file. Names are owned by r. */
az_err az_reflection_file_closure(const az_reflection *r, const char *file_name,
                                  const char **names, size_t cap, size_t *n, char *msg);

/* Answers one serialized grpc.reflection.v1 ServerReflectionRequest exactly as the stream
 * handler does. On AZ_OK *out is a malloc'd serialized ServerReflectionResponse of *out_len
 * bytes (free it); AZ_ERR_INVALID when req is not a valid request, AZ_ERR_NOMEM. */
az_err az_reflection_answer(const az_reflection *r, const unsigned char *req, size_t req_len,
                            unsigned char **out, size_t *out_len, char *msg);

#endif
