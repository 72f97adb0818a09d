/* A scripted fake LLM provider for integration tests and benchmarks: a real HTTP/1.1 server on
 * 127.0.0.1 speaking the OpenAI chat-completions API (POST /v1/chat/completions, streamed as
 * server-sent events when the request says "stream": true, else one JSON body) and the
 * Anthropic Messages API (POST /v1/messages, streamed events). One thread, epoll, keep-alive,
 * thousands of concurrent connections; replies are chosen per request by rules.
 * Requests may carry Content-Length or chunked bodies (Expect: 100-continue is answered). A body
 * that is not a JSON object, or lacks "model" or a non-empty "messages" array (or "max_tokens"
 * on /v1/messages), is answered 400 as the real APIs do: it is recorded and counted but uses up
 * no reply. OpenAI streams end with a usage chunk (choices []) unless the request sets
 * stream_options.include_usage to false, then "data: [DONE]". */
#ifndef FAKELLM_H
#define FAKELLM_H

#include <stddef.h>
#include <stdint.h>

typedef enum fakellm_kind {
    FAKELLM_TEXT = 0,   /* a final answer: text streamed in chunks, finish_reason "stop" */
    FAKELLM_TOOL_CALL,  /* one tool call (tool_name, tool_args), finish_reason "tool_calls" */
    FAKELLM_HTTP_ERROR, /* status with an error JSON body, optional Retry-After */
    FAKELLM_DROP,       /* close the connection after the headers and half the first chunk */
    FAKELLM_HANG,       /* send the headers, then nothing until the client goes away */
} fakellm_kind;

typedef struct fakellm_reply {
    fakellm_kind kind;
    const char *text;        /* FAKELLM_TEXT; NULL = "ok" */
    const char *tool_name;   /* FAKELLM_TOOL_CALL */
    const char *tool_args;   /* FAKELLM_TOOL_CALL: JSON object text; NULL = "{}" */
    int status;              /* FAKELLM_HTTP_ERROR, e.g. 429, 500, 400 */
    int retry_after_s;       /* FAKELLM_HTTP_ERROR: Retry-After header when > 0 */
    int delay_ms;            /* wait before the response headers */
    int chunk_delay_ms;      /* wait between streamed chunks */
    int chunk_size;          /* characters of text per chunk; 0 = 4 */
    int64_t prompt_tokens;   /* reported usage; 0 = 10 */
    int64_t completion_tokens; /* 0 = number of chunks */
} fakellm_reply;

typedef struct fakellm fakellm;

/* Starts the server thread on an ephemeral port (raising RLIMIT_NOFILE to its hard limit).
 * Returns NULL after printing why. */
fakellm *fakellm_start(void);

/* The same on a chosen port of 127.0.0.1 (0 = ephemeral), for the standalone agentz-fakellm. */
fakellm *fakellm_start_on(int port);

/* "http://127.0.0.1:PORT/v1" (the base URL an agent's llm.base_url takes) and the port. */
const char *fakellm_base_url(const fakellm *f);
int fakellm_port(const fakellm *f);

/* Adds a rule: a request whose "model" equals model (NULL = any) and whose raw body contains
 * match (NULL = any) gets replies[0], the next matching request replies[1], ...; after the
 * last, the last reply repeats. Rules are tried newest first. Copies everything. Thread-safe. */
void fakellm_on(fakellm *f, const char *model, const char *match, const fakellm_reply *replies,
                size_t n);

/* Forgets every rule and recorded request. Requests matching no rule get a TEXT reply "ok". */
void fakellm_reset(fakellm *f);

/* Requests received so far whose model equals model (NULL = all). */
size_t fakellm_count(fakellm *f, const char *model);

/* A copy of the raw body of the i-th (0-based, arrival order) request for model (NULL = any);
 * NULL when there is no such request. Caller frees with free(). At most the last 4096 requests
 * are kept. */
char *fakellm_body(fakellm *f, const char *model, size_t i);

/* Connections open now, and requests whose response is still in progress. */
size_t fakellm_open_connections(fakellm *f);
size_t fakellm_in_flight(fakellm *f);

/* Stops the thread and frees everything. Accepts NULL. */
void fakellm_stop(fakellm *f);

#endif
