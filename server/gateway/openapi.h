/* The OpenAPI 3.1 document of the gateway's REST API, generated from the route table and the
 * comments of the descriptor set; built into the binary at build time by agentz-openapi. */
#ifndef AZ_OPENAPI_H
#define AZ_OPENAPI_H

#include <stddef.h>
#include <stdint.h>

#include "core/err.h"
#include "routes.h"

/* The document as generated at build time from gen/agentz-docs.desc (pretty-printed JSON,
 * NUL-terminated; az_openapi_json_len bytes, not counting the NUL). Defined by the generated
 * openapi_data.c, so only programs linking azgateway have it; agentz-openapi does not. */
extern const char az_openapi_json[];
extern const size_t az_openapi_json_len;

/* Builds the document for every REST route of t (client-streaming methods left out, as the
 * gateway refuses them): paths and operations (operationId "<Service>_<Method>", with "_2",
 * "_3", ... for additional bindings), path and query parameters, request bodies, the response
 * (streaming methods as text/event-stream and application/x-ndjson), a google.rpc.Status
 * default response, components.schemas for every message and enum reachable from them per the
 * proto3 JSON mapping, and bearer / X-Api-Key security applied globally. descset (len bytes)
 * is the descriptor set the routes came from; with source info (gen/agentz-docs.desc) its
 * leading comments become summaries and descriptions; without (or NULL) there are none.
 * version is info.version. Objects whose order carries no meaning (paths, schemas) have sorted
 * keys, so the output is byte-for-byte reproducible.
 * On AZ_OK *out (NUL-terminated pretty-printed JSON ending in a newline, *len bytes) is freed by
 * the caller with free(). On failure *out is NULL and msg says why: AZ_ERR_INVALID for a
 * descriptor set that does not parse, AZ_ERR_NOMEM. */
az_err az_openapi_build(const az_routes *t, const uint8_t *descset, size_t len,
                        const char *version, char **out, size_t *out_len, char *msg);

#endif
