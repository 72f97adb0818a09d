/* LLM calls: the provider-neutral request/response model, configuration defaults, and a
 * streaming driver built on one libcurl easy handle that any event loop can run. */
#ifndef AZ_LLM_H
#define AZ_LLM_H

#include <curl/curl.h>
#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "core/err.h"
#include "llm/price.h"
#include "tools/netguard.h"

#define AZ_LLM_TIMEOUT_MS_DEFAULT 120000L
#define AZ_LLM_CONNECT_TIMEOUT_MS 10000L
#define AZ_LLM_MAX_RESPONSE_DEFAULT (64u * 1024u * 1024u)
#define AZ_LLM_RETRY_AFTER_MAX_MS 300000L /* a Retry-After beyond 5 minutes is clamped to this */
#define AZ_LLM_MAX_TOOL_CALLS 128         /* per response */

typedef enum az_llm_role {
    AZ_LLM_SYSTEM = 0,
    AZ_LLM_USER,
    AZ_LLM_ASSISTANT, /* text and/or tool calls the model made */
    AZ_LLM_TOOL,      /* the result of one tool call (tool_call_id) */
} az_llm_role;

/* A tool call the model made: id (provider-assigned), function name, arguments as JSON text
 * exactly as the model produced it ("{}" when it produced none; not validated). */
typedef struct az_llm_tool_call {
    char *id;
    char *name;
    char *arguments;
} az_llm_tool_call;

/* One conversation message; every pointer is borrowed by the request. */
typedef struct az_llm_message {
    az_llm_role role;
    const char *content;                /* text; may be NULL for an assistant message with tool calls */
    const az_llm_tool_call *tool_calls; /* AZ_LLM_ASSISTANT only */
    size_t n_tool_calls;
    const char *tool_call_id; /* AZ_LLM_TOOL: the call this answers */
    int is_error;             /* AZ_LLM_TOOL: the tool failed (Anthropic's is_error) */
} az_llm_message;

/* A tool the model may call; parameters is a JSON Schema object (borrowed; NULL = no arguments). */
typedef struct az_llm_tool {
    const char *name;
    const char *description;
    json_t *parameters;
} az_llm_tool;

/* One model call. provider/base_url/api_key/model: NULL or "" = the defaults (az_llm_resolve).
 * api_key is the key itself, already read from the agent's secret by the caller. */
typedef struct az_llm_request {
    const char *provider; /* "openai" (any OpenAI-compatible server) or "anthropic" */
    const char *base_url;
    const char *api_key;
    const char *model;
    const az_llm_message *messages;
    size_t n_messages;
    const az_llm_tool *tools;
    size_t n_tools;
    int has_temperature;
    double temperature;
    int max_tokens;            /* 0 = provider default (Anthropic requires one: 4096) */
    long timeout_ms;           /* whole call, connect to last byte; 0 = AZ_LLM_TIMEOUT_MS_DEFAULT */
    size_t max_response_bytes; /* 0 = AZ_LLM_MAX_RESPONSE_DEFAULT */
    const az_llm_prices *prices; /* NULL = az_llm_prices_default() */
    /* The outbound network policy (AGENTZ_ALLOW_PRIVATE_NETWORKS), checked on every address
     * the call connects to; borrowed, must outlive the call. NULL = no restriction (note: the
     * opposite of az_netguard_allowed's NULL, so that callers not setting it keep working). The
     * executor must always set it: base_url comes from agent definitions any editor writes. */
    const az_netguard *guard;
} az_llm_request;

/* Where a request goes after defaults are applied; strings point into the request, the
 * environment or static tables (valid while those are). */
typedef struct az_llm_endpoint {
    const char *provider;
    const char *base_url;
    const char *api_key; /* NULL = send none (local servers) */
    const char *model;
} az_llm_endpoint;

typedef enum az_llm_stop {
    AZ_LLM_STOP_UNKNOWN = 0, /* stream failed, or a reason we do not know (raw in stop_raw) */
    AZ_LLM_STOP_END,         /* natural end: "stop", "end_turn", "stop_sequence" */
    AZ_LLM_STOP_LENGTH,      /* max_tokens reached */
    AZ_LLM_STOP_TOOL_CALLS,  /* the model wants tool results */
    AZ_LLM_STOP_FILTER,      /* content filter / refusal */
} az_llm_stop;

/* Tokens and price; cost_usd is 0 when the model has no price. Maps 1:1 to TokenUsage. */
typedef struct az_llm_usage {
    int64_t prompt_tokens;
    int64_t completion_tokens;
    int64_t total_tokens;
    double cost_usd;
} az_llm_usage;

/* Why a call failed; type is empty on success. type is a TaskError.type ("llm_rate_limited",
 * "llm_timeout", ... see docs/llm.md), message is safe to show (never contains the key). */
typedef struct az_llm_error {
    char type[48];
    char message[AZ_MSG_MAX];
    int retryable;
    long retry_after_ms; /* the provider's Retry-After, clamped; 0 = none given */
    int http_status;     /* 0 = no HTTP response */
} az_llm_error;

/* The outcome of a call. Everything is owned by the result (az_llm_result_free). On failure the
 * text, tool calls and usage received before the failure are kept. */
typedef struct az_llm_result {
    char *text; /* never NULL after az_llm_call_finish / az_llm_complete */
    size_t text_len;
    az_llm_tool_call *tool_calls;
    size_t n_tool_calls;
    az_llm_stop stop;
    char stop_raw[32]; /* the provider's word, e.g. "end_turn" */
    char model[128];   /* the model that answered as reported, else the requested one */
    az_llm_usage usage;
    az_llm_error error;
} az_llm_result;

/* Streaming callbacks, all optional, all called on the thread driving the transfer.
 * on_text gets each text delta as it arrives (valid UTF-8, not NUL-terminated). on_tool_call
 * gets each tool call once complete (borrowed for the call). on_progress is called at least
 * every second while the transfer runs. A non-zero return from any of them aborts the call,
 * which then fails with type "llm_cancelled" (AZ_ERR_CANCELLED). */
typedef struct az_llm_callbacks {
    int (*on_text)(void *arg, const char *delta, size_t len);
    int (*on_tool_call)(void *arg, const az_llm_tool_call *call);
    int (*on_progress)(void *arg, size_t bytes_received);
} az_llm_callbacks;

/* Applies the defaults to req (see docs/llm.md): provider from req or AGENTZ_LLM_PROVIDER (else
 * "anthropic" when only ANTHROPIC_API_KEY is set, else "openai"); base URL, key and model from
 * req, then AGENTZ_LLM_BASE_URL / AGENTZ_LLM_API_KEY / AGENTZ_LLM_MODEL (for the default
 * provider only), then OPENAI_BASE_URL / OPENAI_API_KEY or ANTHROPIC_API_KEY, then the
 * provider's public endpoint and default model. Reads the environment on every call.
 * AZ_ERR_INVALID for an unknown provider; AZ_ERR_PRECONDITION ("no LLM provider configured: set
 * ...") when the public endpoint would be used without a key. */
az_err az_llm_resolve(const az_llm_request *req, az_llm_endpoint *out, char *msg);

typedef struct az_llm_call az_llm_call;

/* Prepares one streaming call: resolves the endpoint, builds the provider's JSON body, and
 * configures a CURL easy handle (POST, streaming write callback feeding the SSE parser, header
 * callback for status and Retry-After, connect/total timeouts, CURLOPT_NOSIGNAL, response size
 * cap, http/https only, no redirects, and with req->guard a CURLOPT_OPENSOCKETFUNCTION refusing
 * addresses the policy does not allow: the call then fails with "llm_address_refused"). req is
 * only read during this call, except req->guard, which must outlive the call; cb and arg must
 * outlive the call. A multi handle shares its connections between calls, and a reused
 * connection is not checked again: calls with different guards need different multi handles.
 * On AZ_OK *out is the caller's: add az_llm_call_easy(*out) to a multi handle, and when the
 * multi reports it done call az_llm_call_finish, then az_llm_call_free. Errors: AZ_ERR_PRECONDITION (no provider
 * configured: not retryable, msg says what to set), AZ_ERR_INVALID (bad request field, named
 * in msg), AZ_ERR_NOMEM. */
az_err az_llm_call_new(const az_llm_request *req, const az_llm_callbacks *cb, void *arg,
                       az_llm_call **out, char *msg);

/* The easy handle, owned by call. To cancel, remove it from the multi handle
 * (curl_multi_remove_handle) and then either free the call or finish it with
 * CURLE_ABORTED_BY_CALLBACK to get the partial result. */
CURL *az_llm_call_easy(az_llm_call *call);

/* Completes a call whose transfer ended with code (from CURLMsg.data.result). Fills *out
 * (which the caller then owns: az_llm_result_free) with text, tool calls, stop reason, usage
 * with cost, and on failure out->error; tool calls not yet reported are passed to on_tool_call.
 * Returns AZ_OK on success, else the az_err of the error class: AZ_ERR_UNAVAILABLE (network,
 * 5xx, overloaded), AZ_ERR_DEADLINE (timeout), AZ_ERR_EXHAUSTED (429), AZ_ERR_UNAUTHENTICATED
 * (401), AZ_ERR_PERMISSION (403, llm_address_refused), AZ_ERR_INVALID (other 4xx, malformed
 * stream), AZ_ERR_CANCELLED.
 * Call once per call. */
az_err az_llm_call_finish(az_llm_call *call, CURLcode code, az_llm_result *out);

/* Frees the call and its easy handle (remove it from any multi handle first); accepts NULL. */
void az_llm_call_free(az_llm_call *call);

/* Runs one call to completion on a private multi handle, polling every 100 ms so that setting
 * *cancel (may be NULL) non-zero stops it within about 100 ms with AZ_ERR_CANCELLED. Fills *out
 * as az_llm_call_finish does, including out->error for set-up failures (then msg also holds
 * the message); the caller frees it with az_llm_result_free in every case. */
az_err az_llm_complete(const az_llm_request *req, const az_llm_callbacks *cb, void *arg,
                       volatile int *cancel, az_llm_result *out, char *msg);

/* Frees what *r owns and zeroes it; accepts NULL. */
void az_llm_result_free(az_llm_result *r);

/* Copies a header line into out (size n) with the value of Authorization, Proxy-Authorization,
 * x-api-key and api-key replaced by "[redacted]"; for debug output. */
void az_llm_redact_header(const char *line, size_t len, char *out, size_t n);

#endif
