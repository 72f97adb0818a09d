/* What a provider module (openai, anthropic) implements for llm.c, and the stream state it
 * fills while events arrive. Internal to server/llm. */
#ifndef AZ_PROVIDER_H
#define AZ_PROVIDER_H

#include <curl/curl.h>
#include <jansson.h>

#include "llm/llm.h"
#include "llm/sse.h"

#define AZ_LLM_MAX_BLOCKS 512 /* anthropic content blocks per response we can map to calls */

/* A growable byte buffer, always NUL-terminated once anything was appended. */
typedef struct az_llm_buf {
    char *p;
    size_t len, cap;
} az_llm_buf;

/* Appends n bytes of s; AZ_ERR_NOMEM leaves b as it was. */
az_err az_llm_buf_add(az_llm_buf *b, const char *s, size_t n, char *msg);
/* Frees b's bytes and zeroes it. */
void az_llm_buf_free(az_llm_buf *b);

/* One tool call being assembled. */
typedef struct az_llm_pending_call {
    int slot_used;
    int reported; /* passed to on_tool_call */
    az_llm_buf id, name, args;
} az_llm_pending_call;

/* Everything a provider's event handler reads and writes. */
typedef struct az_llm_stream {
    const az_llm_callbacks *cb;
    void *arg;
    az_llm_buf text;
    az_llm_pending_call calls[AZ_LLM_MAX_TOOL_CALLS]; /* in the provider's index order */
    int block_call[AZ_LLM_MAX_BLOCKS]; /* anthropic: content block index -> call index + 1 */
    size_t n_calls;
    char stop_raw[32];
    char model[128];
    int64_t prompt_tokens, completion_tokens, total_tokens;
    int done;      /* the provider said the response is complete */
    int aborted;   /* a callback asked to stop */
    az_llm_error error; /* a provider error event (type set) */
} az_llm_stream;

/* Appends a text delta to the result and reports it to on_text. */
az_err az_llm_stream_text(az_llm_stream *st, const char *s, size_t n, char *msg);

/* Reports call i to on_tool_call unless already reported (arguments "" become "{}"). */
az_err az_llm_stream_report_call(az_llm_stream *st, size_t i, char *msg);

/* Records an in-stream provider error by its type ("overloaded_error", "server_error", ...):
 * the error class table decides retryability. Returns AZ_ERR_UNAVAILABLE to stop parsing. */
az_err az_llm_stream_fail(az_llm_stream *st, const char *type, const char *message, char *msg);

/* Sets e: type (one of the classes in provider.c's table, see docs/llm.md), retryable from
 * the table, message from fmt. */
void az_llm_error_set(az_llm_error *e, const char *type, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Our class for a provider's error type ("overloaded_error" -> "llm_unavailable"); NULL when
 * the type is not in the table. */
const char *az_llm_provider_error_class(const char *provider_type);

/* The az_err of an error class (AZ_ERR_INTERNAL for an unknown one). */
az_err az_llm_error_code(const char *type);

/* A string member of obj or NULL. */
const char *az_llm_json_str(json_t *obj, const char *key);

/* Joins base (trailing '/' dropped) and path into a malloc'd URL; NULL when out of memory. */
char *az_llm_url(const char *base, const char *path);

typedef struct az_llm_provider {
    const char *name;
    const char *default_base_url;
    const char *default_model;
    const char *key_env;  /* the provider's conventional key variable */
    const char *base_env; /* the provider's conventional base URL variable, or NULL */
    /* Builds the URL, the headers (besides Content-Type / Accept / Expect) and the JSON body
     * (all malloc'd, the caller's) for req sent to ep. AZ_ERR_INVALID names a bad field. */
    az_err (*build)(const az_llm_request *req, const az_llm_endpoint *ep, char **url,
                    struct curl_slist **headers, char **body, char *msg);
    /* Handles one SSE event of a 2xx response. */
    az_err (*event)(az_llm_stream *st, const az_sse_event *ev, char *msg);
} az_llm_provider;

#endif
