/* The tool registry agents call through: a table of {name, description, JSON schema, handler,
 * limits} holding the built-in tools (http_fetch, current_time, calculator) and whatever the
 * executor registers (delegation tools). Every call yields an observation string for the model;
 * bad arguments and failed fetches are observations, never crashes or RPC errors. */
#ifndef AZ_TOOLS_H
#define AZ_TOOLS_H

#include <jansson.h>
#include <stddef.h>

#include "core/err.h"
#include "tools/netguard.h"

typedef struct az_tools az_tools;

/* What a call produced. text is always a string the model can read (valid UTF-8, NUL-terminated,
 * malloc'd, owned by the result; "error: ..." when is_error). Free with az_tools_result_free. */
typedef struct az_tool_result {
    char *text;
    size_t len;
    int is_error;
} az_tool_result;

/* A tool handler. args is the parsed arguments object (never NULL; unknown keys already refused
 * by the registry only for built-ins, so handlers of registered tools check their own). A handler
 * sets *out with az_tools_result_set/_printf/_error and returns AZ_OK for everything the model
 * should see, failures included. It returns another code only for what the model cannot fix
 * (AZ_ERR_NOMEM, AZ_ERR_CANCELLED, AZ_ERR_INTERNAL, ...), with msg explaining it; *out may be
 * left empty then. arg is the pointer given to az_tools_register. */
typedef az_err (*az_tools_fn)(void *arg, const json_t *args, az_tool_result *out, char *msg);

/* Per-tool limits the registry enforces around the handler. */
typedef struct az_tool_limits {
    size_t max_args_bytes;   /* arguments JSON longer than this is an error observation */
    size_t max_output_bytes; /* observations are truncated to this with "…[truncated]" */
} az_tool_limits;

/* Defaults for tools registered by the executor. */
#define AZ_TOOLS_DEFAULT_MAX_ARGS (64 * 1024)
#define AZ_TOOLS_DEFAULT_MAX_OUTPUT (256 * 1024)
/* The most tools one registry holds, built-ins included. */
#define AZ_TOOLS_MAX 64
/* Tool names: [A-Za-z0-9_-], 1 to this many characters (what the OpenAI API accepts). */
#define AZ_TOOLS_NAME_MAX 64

/* http_fetch defaults; az_tools_config may override them (tests use shorter ones). */
#define AZ_TOOLS_FETCH_TIMEOUT_MS 15000
#define AZ_TOOLS_FETCH_CONNECT_TIMEOUT_MS 5000
#define AZ_TOOLS_FETCH_MAX_BYTES (2 * 1024 * 1024)
#define AZ_TOOLS_FETCH_MAX_REDIRECTS 5
#define AZ_TOOLS_FETCH_URL_MAX 2048
#define AZ_TOOLS_FETCH_CHARS_DEFAULT 20000
#define AZ_TOOLS_FETCH_CHARS_MAX 100000
#define AZ_TOOLS_FETCH_USER_AGENT "AGENTZ/0.1 (+http_fetch)"
#define AZ_TOOLS_CALC_EXPR_MAX 1000
#define AZ_TOOLS_CALC_DEPTH_MAX 64

/* How the built-in tools reach the outside world. Copied by az_tools_new; zero fields take the
 * defaults above. */
typedef struct az_tools_config {
    /* Network policy for http_fetch (az_netguard_new). Not copied: must outlive the registry.
     * NULL refuses every special-purpose range, as AGENTZ_ALLOW_PRIVATE_NETWORKS=0 does. */
    const az_netguard *guard;
    /* Proxy URL for http_fetch; NULL or "" connects directly. http_proxy/https_proxy/all_proxy
     * from the environment are never used. With a proxy the guard checks the proxy's address
     * and the proxy decides where requests may go. Copied. */
    const char *proxy;
    long fetch_timeout_ms;         /* total time per fetch, redirects included */
    long fetch_connect_timeout_ms; /* per connection */
    size_t fetch_max_bytes;        /* decoded response body; beyond it the fetch is aborted */
    /* Polled during fetches (about once a second and on every data chunk); when it returns
     * non-zero the fetch stops and az_tools_call returns AZ_ERR_CANCELLED. May be NULL. */
    int (*cancelled)(void *cancel_arg);
    void *cancel_arg;
} az_tools_config;

/* Creates a registry holding the built-in tools, configured by cfg (NULL: all defaults).
 * Registries are cheap (built-in schemas are parsed once per process and shared), so the executor
 * may make one per run to register that run's delegation tools. Initialises libcurl once per
 * process. The caller owns *out and frees it with az_tools_free. AZ_ERR_NOMEM on allocation
 * failure, AZ_ERR_INTERNAL when libcurl cannot be initialised; *out is then NULL. */
az_err az_tools_new(const az_tools_config *cfg, az_tools **out, char *msg);

/* Frees reg and drops its references to registered schemas; accepts NULL. */
void az_tools_free(az_tools *reg);

/* The built-in tool names ("http_fetch", "current_time", "calculator"), for validating an
 * agent's tools field. Static storage; *n receives the count. */
const char *const *az_tools_builtin_names(size_t *n);

/* Adds a tool (the executor's delegation tools). name: [A-Za-z0-9_-]{1,64}; description:
 * non-empty UTF-8; schema: a JSON object with "type":"object" describing the arguments. The
 * registry takes its own reference to schema (the caller keeps theirs) and keeps arg as is; the
 * handler is called with it. Limits are the AZ_TOOLS_DEFAULT_* ones. Errors: AZ_ERR_INVALID (bad
 * name, description or schema), AZ_ERR_EXISTS (name taken, built-ins included),
 * AZ_ERR_EXHAUSTED (AZ_TOOLS_MAX reached), AZ_ERR_NOMEM; the registry is then unchanged.
 * Not thread-safe against concurrent calls on the same registry: register first, then call. */
az_err az_tools_register(az_tools *reg, const char *name, const char *description,
                         json_t *schema, az_tools_fn handler, void *arg, char *msg);

/* 1 when reg holds a tool of that name. */
int az_tools_has(const az_tools *reg, const char *name);

/* Runs tool name with arguments_json (a JSON object; NULL or "" means {}), filling *out (which the
 * caller frees with az_tools_result_free even on failure; *out is overwritten, not freed, so free
 * a previous result first). Returns AZ_OK with an observation in
 * *out for every outcome the model can act on: unknown tool, malformed or oversized arguments,
 * tool errors ("error: url must be http or https"), all with is_error set. Returns another code
 * only when the handler did (AZ_ERR_CANCELLED, AZ_ERR_NOMEM, ...), with msg set; *out then
 * still holds a generic "error: ..." observation when memory allowed. Observations are valid
 * UTF-8 (invalid bytes replaced by U+FFFD) and capped at the tool's max_output_bytes. Safe to
 * call from several threads at once on one registry. */
az_err az_tools_call(const az_tools *reg, const char *name, const char *arguments_json,
                     az_tool_result *out, char *msg);

/* az_tools_call restricted to the tools an agent lists: a name outside allowed[0..n_allowed) is
 * answered like an unknown tool, and the observation lists only allowed tools. The executor calls
 * this with the agent's tools field (plus its delegation tools), so a model cannot reach a
 * registered tool its agent was not given. allowed == NULL means every tool in reg. */
az_err az_tools_call_as(const az_tools *reg, const char *const *allowed, size_t n_allowed,
                        const char *name, const char *arguments_json, az_tool_result *out,
                        char *msg);

/* Builds the OpenAI-style tools array for an agent's tools:
 *   [{"type":"function","function":{"name":...,"description":...,"parameters":{...}}}, ...]
 * in the order of names. The caller owns *out (json_decref). AZ_ERR_INVALID naming
 * "tools[i]" when a name is not in reg; AZ_ERR_NOMEM. *out is NULL on failure. */
az_err az_tools_schema_json(const az_tools *reg, const char *const *names, size_t n, json_t **out,
                            char *msg);

/* Result helpers for handlers. _set copies text, _printf formats it, _error formats
 * "error: <fmt>" with is_error set. Any previous text is freed. AZ_ERR_NOMEM on failure. */
az_err az_tools_result_set(az_tool_result *out, int is_error, const char *text);
az_err az_tools_result_printf(az_tool_result *out, int is_error, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
az_err az_tools_result_error(az_tool_result *out, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Frees r->text and zeroes r; accepts NULL. */
void az_tools_result_free(az_tool_result *r);

#endif
