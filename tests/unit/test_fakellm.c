/* CUnit suite for tests/fakellm, the fake LLM provider the integration suites and benchmarks
 * rely on: driven by plain libcurl (wire format, keep-alive, chunked request bodies, raw HTTP)
 * and by the real client (az_llm_complete) for text, tool calls, 429 with Retry-After, 500,
 * dropped and hung responses, rules, recorded requests, and 2,000 connections held at once. */
#include <CUnit/Basic.h>
#include <arpa/inet.h>
#include <curl/curl.h>
#include <jansson.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "core/log.h"
#include "llm/llm.h"

/* The fake is a test double outside the server library; the unit suites do not link azfakellm. */
#include "../fakellm/fakellm.c"

static char msg[AZ_MSG_MAX];
static fakellm *F;

static long now_msl(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000L + ts.tv_nsec / 1000000L;
}

/* Polls cond for up to ms milliseconds. */
#define WAIT_FOR(cond, ms)                                                  \
    do {                                                                    \
        long until_ = now_msl() + (ms);                                     \
        while (!(cond) && now_msl() < until_) usleep(2000);                 \
    } while (0)

/* ---- plain libcurl ---- */

typedef struct http_resp {
    long status;
    buf headers;
    buf body;
    long connects; /* new connections this transfer opened */
} http_resp;

static size_t collect(char *p, size_t sz, size_t n, void *arg)
{
    buf_add(arg, p, sz * n);
    return sz * n;
}

static void resp_free(http_resp *r)
{
    buf_free(&r->headers);
    buf_free(&r->body);
}

/* POSTs body to path on the fake with easy (reused across calls for keep-alive); extra is an
 * optional header line. */
static CURLcode post(CURL *easy, const char *path, const char *body, const char *extra, http_resp *r)
{
    *r = (http_resp){0};
    char url[256];
    snprintf(url, sizeof url, "http://127.0.0.1:%d%s", fakellm_port(F), path);
    struct curl_slist *h = curl_slist_append(NULL, "Content-Type: application/json");
    if (extra) h = curl_slist_append(h, extra);
    curl_easy_setopt(easy, CURLOPT_URL, url);
    curl_easy_setopt(easy, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(easy, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, collect);
    curl_easy_setopt(easy, CURLOPT_WRITEDATA, &r->body);
    curl_easy_setopt(easy, CURLOPT_HEADERFUNCTION, collect);
    curl_easy_setopt(easy, CURLOPT_HEADERDATA, &r->headers);
    curl_easy_setopt(easy, CURLOPT_TIMEOUT_MS, 10000L);
    CURLcode c = curl_easy_perform(easy);
    curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &r->status);
    curl_easy_getinfo(easy, CURLINFO_NUM_CONNECTS, &r->connects);
    curl_slist_free_all(h);
    return c;
}

#define CHAT "{\"model\":\"m1\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]"

static void test_curl_openai_complete(void)
{
    fakellm_reset(F);
    fakellm_reply r = {.kind = FAKELLM_TEXT, .text = "hello there", .prompt_tokens = 7,
                       .completion_tokens = 3};
    fakellm_on(F, NULL, NULL, &r, 1);
    CURL *e = curl_easy_init();
    http_resp res;
    CU_ASSERT_EQUAL(post(e, "/v1/chat/completions", CHAT "}", NULL, &res), CURLE_OK);
    CU_ASSERT_EQUAL(res.status, 200);
    CU_ASSERT_PTR_NOT_NULL(strcasestr(res.headers.p, "content-type: application/json"));
    json_t *j = json_loads(res.body.p, 0, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(j);
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(j, "object")), "chat.completion");
    json_t *c0 = json_array_get(json_object_get(j, "choices"), 0);
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(json_object_get(c0, "message"), "content")),
                           "hello there");
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(c0, "finish_reason")), "stop");
    json_t *u = json_object_get(j, "usage");
    CU_ASSERT_EQUAL(json_integer_value(json_object_get(u, "prompt_tokens")), 7);
    CU_ASSERT_EQUAL(json_integer_value(json_object_get(u, "completion_tokens")), 3);
    CU_ASSERT_EQUAL(json_integer_value(json_object_get(u, "total_tokens")), 10);
    json_decref(j);
    resp_free(&res);
    /* Keep-alive: the second request reuses the connection. */
    CU_ASSERT_EQUAL(post(e, "/v1/chat/completions", CHAT "}", NULL, &res), CURLE_OK);
    CU_ASSERT_EQUAL(res.status, 200);
    CU_ASSERT_EQUAL(res.connects, 0);
    CU_ASSERT_EQUAL(fakellm_open_connections(F), 1u);
    resp_free(&res);
    curl_easy_cleanup(e);
    WAIT_FOR(fakellm_open_connections(F) == 0, 2000);
    CU_ASSERT_EQUAL(fakellm_open_connections(F), 0u);
}

/* Splits an SSE body into its data payloads. */
static size_t sse_datas(const char *body, char out[][2048], size_t max)
{
    size_t n = 0;
    for (const char *p = body; (p = strstr(p, "data: ")) && n < max;) {
        p += 6;
        const char *end = strstr(p, "\n\n");
        if (!end) break;
        snprintf(out[n++], 2048, "%.*s", (int)(end - p), p);
        p = end;
    }
    return n;
}

static void test_curl_openai_stream(void)
{
    fakellm_reset(F);
    fakellm_reply r = {.kind = FAKELLM_TEXT, .text = "abcdefgh", .chunk_size = 3};
    fakellm_on(F, NULL, NULL, &r, 1);
    CURL *e = curl_easy_init();
    http_resp res;
    CU_ASSERT_EQUAL(post(e, "/v1/chat/completions", CHAT ",\"stream\":true}", NULL, &res), CURLE_OK);
    CU_ASSERT_EQUAL(res.status, 200);
    CU_ASSERT_PTR_NOT_NULL(strcasestr(res.headers.p, "content-type: text/event-stream"));
    CU_ASSERT_PTR_NOT_NULL(strcasestr(res.headers.p, "transfer-encoding: chunked"));
    static char d[16][2048];
    size_t n = sse_datas(res.body.p, d, 16);
    /* role chunk, "abc" "def" "gh", finish, usage, [DONE] */
    CU_ASSERT_EQUAL_FATAL(n, 7u);
    CU_ASSERT_STRING_EQUAL(d[6], "[DONE]");
    const char *want[] = {"", "abc", "def", "gh"};
    for (int i = 0; i < 4; i++) {
        json_t *j = json_loads(d[i], 0, NULL);
        CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(j, "object")), "chat.completion.chunk");
        json_t *delta = json_object_get(json_array_get(json_object_get(j, "choices"), 0), "delta");
        CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(delta, "content")), want[i]);
        json_decref(j);
    }
    json_t *fin = json_loads(d[4], 0, NULL);
    CU_ASSERT_STRING_EQUAL(
        json_string_value(json_object_get(json_array_get(json_object_get(fin, "choices"), 0), "finish_reason")),
        "stop");
    json_decref(fin);
    json_t *usage = json_loads(d[5], 0, NULL);
    CU_ASSERT_EQUAL(json_array_size(json_object_get(usage, "choices")), 0u);
    CU_ASSERT_EQUAL(json_integer_value(json_object_get(json_object_get(usage, "usage"), "completion_tokens")), 3);
    CU_ASSERT_EQUAL(json_integer_value(json_object_get(json_object_get(usage, "usage"), "prompt_tokens")), 10);
    json_decref(usage);
    resp_free(&res);
    /* include_usage false: no usage chunk. */
    CU_ASSERT_EQUAL(post(e, "/v1/chat/completions",
                         CHAT ",\"stream\":true,\"stream_options\":{\"include_usage\":false}}", NULL, &res),
                    CURLE_OK);
    CU_ASSERT_EQUAL(sse_datas(res.body.p, d, 16), 6u);
    CU_ASSERT_PTR_NULL(strstr(res.body.p, "\"usage\""));
    resp_free(&res);
    curl_easy_cleanup(e);
}

static void test_curl_errors_and_routes(void)
{
    fakellm_reset(F);
    CURL *e = curl_easy_init();
    http_resp res;
    /* Malformed requests get the 400s the real APIs give, and are still counted. */
    CU_ASSERT_EQUAL(post(e, "/v1/chat/completions", "{\"messages\":[{}]}", NULL, &res), CURLE_OK);
    CU_ASSERT_EQUAL(res.status, 400);
    CU_ASSERT_PTR_NOT_NULL(strstr(res.body.p, "model is required"));
    resp_free(&res);
    CU_ASSERT_EQUAL(post(e, "/v1/chat/completions", "not json", NULL, &res), CURLE_OK);
    CU_ASSERT_EQUAL(res.status, 400);
    CU_ASSERT_PTR_NOT_NULL(strstr(res.body.p, "not a JSON object"));
    resp_free(&res);
    CU_ASSERT_EQUAL(post(e, "/v1/messages", CHAT ",\"stream\":true}", NULL, &res), CURLE_OK);
    CU_ASSERT_EQUAL(res.status, 400);
    CU_ASSERT_PTR_NOT_NULL(strstr(res.body.p, "max_tokens is required"));
    CU_ASSERT_PTR_NOT_NULL(strstr(res.body.p, "\"type\":\"error\""));
    resp_free(&res);
    CU_ASSERT_EQUAL(post(e, "/v1/embeddings", "{}", NULL, &res), CURLE_OK);
    CU_ASSERT_EQUAL(res.status, 404);
    resp_free(&res);
    CU_ASSERT_EQUAL(fakellm_count(F, NULL), 3u);
    /* Expect: 100-continue gets its interim response before the body is sent. */
    CU_ASSERT_EQUAL(post(e, "/v1/chat/completions", CHAT "}", "Expect: 100-continue", &res), CURLE_OK);
    CU_ASSERT_EQUAL(res.status, 200);
    CU_ASSERT_PTR_NOT_NULL(res.headers.p && strstr(res.headers.p, "HTTP/1.1 100 Continue"));
    resp_free(&res);
    CU_ASSERT_EQUAL(fakellm_count(F, NULL), 4u);
    /* Scripted errors: status, body and Retry-After, on both APIs. */
    fakellm_reply r = {.kind = FAKELLM_HTTP_ERROR, .status = 429, .retry_after_s = 7};
    fakellm_on(F, NULL, NULL, &r, 1);
    CU_ASSERT_EQUAL(post(e, "/v1/chat/completions", CHAT "}", NULL, &res), CURLE_OK);
    CU_ASSERT_EQUAL(res.status, 429);
    CU_ASSERT_PTR_NOT_NULL(strcasestr(res.headers.p, "retry-after: 7\r\n"));
    json_t *j = json_loads(res.body.p, 0, NULL);
    json_t *err = json_object_get(j, "error");
    CU_ASSERT_PTR_NOT_NULL(json_string_value(json_object_get(err, "message")));
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(err, "code")), "rate_limit_exceeded");
    json_decref(j);
    resp_free(&res);
    CU_ASSERT_EQUAL(post(e, "/v1/messages", CHAT ",\"max_tokens\":9}", NULL, &res), CURLE_OK);
    CU_ASSERT_EQUAL(res.status, 429);
    CU_ASSERT_PTR_NOT_NULL(strstr(res.body.p, "\"rate_limit_error\""));
    resp_free(&res);
    curl_easy_cleanup(e);
}

/* A chunked request body (libcurl sends one when given a read callback and no size). */
typedef struct reader {
    const char *s;
    size_t off, step;
} reader;

static size_t read_piece(char *out, size_t sz, size_t n, void *arg)
{
    reader *r = arg;
    size_t left = strlen(r->s) - r->off, k = r->step < sz * n ? r->step : sz * n;
    if (k > left) k = left;
    memcpy(out, r->s + r->off, k);
    r->off += k;
    return k;
}

static void test_curl_chunked_request(void)
{
    fakellm_reset(F);
    const char *body = "{\"model\":\"chunky\",\"messages\":[{\"role\":\"user\",\"content\":\"in pieces\"}]}";
    reader rd = {.s = body, .step = 7};
    CURL *e = curl_easy_init();
    buf out = {0};
    char url[128];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/v1/chat/completions", fakellm_port(F));
    struct curl_slist *h = curl_slist_append(NULL, "Transfer-Encoding: chunked");
    curl_easy_setopt(e, CURLOPT_URL, url);
    curl_easy_setopt(e, CURLOPT_POST, 1L);
    curl_easy_setopt(e, CURLOPT_READFUNCTION, read_piece);
    curl_easy_setopt(e, CURLOPT_READDATA, &rd);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, collect);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, &out);
    CU_ASSERT_EQUAL(curl_easy_perform(e), CURLE_OK);
    long status = 0;
    curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &status);
    CU_ASSERT_EQUAL(status, 200);
    CU_ASSERT_PTR_NOT_NULL(out.p && strstr(out.p, "\"content\":\"ok\""));
    char *got = fakellm_body(F, "chunky", 0);
    CU_ASSERT_PTR_NOT_NULL_FATAL(got);
    CU_ASSERT_STRING_EQUAL(got, body);
    free(got);
    buf_free(&out);
    curl_slist_free_all(h);
    curl_easy_cleanup(e);
}

/* Raw sockets: two pipelined requests on one connection, then garbage gets a 400 and a close. */
static int connect_fake(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)fakellm_port(F)),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        close(fd);
        return -1;
    }
    struct timeval tv = {.tv_sec = 5};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    return fd;
}

/* Reads until the peer closes or the text contains count occurrences of needle. */
static void read_until(int fd, buf *b, const char *needle, int count)
{
    char tmp[4096];
    for (;;) {
        int seen = 0;
        for (const char *p = b->p; p && (p = strstr(p, needle)); p++) seen++;
        if (seen >= count) return;
        ssize_t n = recv(fd, tmp, sizeof tmp, 0);
        if (n <= 0) return;
        buf_add(b, tmp, (size_t)n);
    }
}

static void test_raw_pipelining_and_garbage(void)
{
    fakellm_reset(F);
    int fd = connect_fake();
    CU_ASSERT_TRUE_FATAL(fd >= 0);
    const char *b1 = "{\"model\":\"p\",\"messages\":[{\"role\":\"user\",\"content\":\"one\"}]}";
    const char *b2 = "{\"model\":\"p\",\"messages\":[{\"role\":\"user\",\"content\":\"two\"}]}";
    char req[1024];
    int n = snprintf(req, sizeof req,
                     "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: %zu\r\n\r\n%s"
                     "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: %zu\r\n\r\n%s",
                     strlen(b1), b1, strlen(b2), b2);
    CU_ASSERT_EQUAL(send(fd, req, (size_t)n, 0), n);
    buf got = {0};
    read_until(fd, &got, "HTTP/1.1 200 OK", 2);
    int oks = 0;
    for (const char *p = got.p; p && (p = strstr(p, "HTTP/1.1 200 OK")); p++) oks++;
    CU_ASSERT_EQUAL(oks, 2);
    CU_ASSERT_EQUAL(fakellm_count(F, "p"), 2u);
    char *second = fakellm_body(F, "p", 1);
    CU_ASSERT_PTR_NOT_NULL(second && strstr(second, "two"));
    free(second);
    buf_free(&got);
    /* Garbage: 400 and the connection closes. */
    const char *bad = "NONSENSE\r\n\r\n";
    CU_ASSERT_EQUAL(send(fd, bad, strlen(bad), 0), (ssize_t)strlen(bad));
    read_until(fd, &got, "never appears", 1);
    CU_ASSERT_PTR_NOT_NULL(got.p && strstr(got.p, "HTTP/1.1 400"));
    CU_ASSERT_PTR_NOT_NULL(got.p && strstr(got.p, "Connection: close"));
    buf_free(&got);
    close(fd);
    /* HTTP/1.0 without keep-alive closes after the answer. */
    fd = connect_fake();
    n = snprintf(req, sizeof req, "POST /v1/chat/completions HTTP/1.0\r\nContent-Length: %zu\r\n\r\n%s",
                 strlen(b1), b1);
    CU_ASSERT_EQUAL(send(fd, req, (size_t)n, 0), n);
    read_until(fd, &got, "never appears", 1); /* returns at close */
    CU_ASSERT_PTR_NOT_NULL(got.p && strstr(got.p, "\"content\":\"ok\""));
    buf_free(&got);
    close(fd);
}

/* ---- the real client ---- */

typedef struct seen {
    buf text;
    int tool_calls;
    char tool_name[64];
    char tool_args[256];
} seen;

static int on_text(void *arg, const char *d, size_t n)
{
    buf_add(&((seen *)arg)->text, d, n);
    return 0;
}

static int on_tool(void *arg, const az_llm_tool_call *c)
{
    seen *s = arg;
    s->tool_calls++;
    snprintf(s->tool_name, sizeof s->tool_name, "%s", c->name);
    snprintf(s->tool_args, sizeof s->tool_args, "%s", c->arguments);
    return 0;
}

static const az_llm_callbacks CB = {.on_text = on_text, .on_tool_call = on_tool};

/* One call through the real client to provider ("openai" / "anthropic") with model. */
static az_err call(const char *provider, const char *model, volatile int *cancel, seen *s,
                   az_llm_result *r)
{
    static const az_llm_message M[] = {{.role = AZ_LLM_SYSTEM, .content = "You are terse."},
                                       {.role = AZ_LLM_USER, .content = "What time is it?"}};
    json_t *params = json_pack("{s:s, s:{s:{s:s}}}", "type", "object", "properties", "tz", "type", "string");
    az_llm_tool tools[] = {{.name = "current_time", .description = "the time", .parameters = params}};
    az_llm_request req = {.provider = provider, .base_url = fakellm_base_url(F), .api_key = "sk-fake",
                          .model = model, .messages = M, .n_messages = 2, .tools = tools, .n_tools = 1,
                          .timeout_ms = 20000};
    *s = (seen){0};
    az_err e = az_llm_complete(&req, &CB, s, cancel, r, msg);
    json_decref(params);
    return e;
}

static void test_client_text(void)
{
    fakellm_reset(F);
    fakellm_reply r = {.kind = FAKELLM_TEXT, .text = "It is n\xc3\xb6on.", .chunk_size = 2,
                       .chunk_delay_ms = 20, .prompt_tokens = 12, .completion_tokens = 5};
    fakellm_on(F, NULL, NULL, &r, 1);
    const char *providers[] = {"openai", "anthropic"};
    for (int i = 0; i < 2; i++) {
        seen s;
        az_llm_result res;
        long t0 = now_msl();
        CU_ASSERT_EQUAL(call(providers[i], "gpt-fake", NULL, &s, &res), AZ_OK);
        /* 6 chunks (2 code points each; the ö is not split) 20 ms apart. */
        CU_ASSERT_TRUE(now_msl() - t0 >= 100);
        CU_ASSERT_STRING_EQUAL(res.text, "It is n\xc3\xb6on.");
        CU_ASSERT_STRING_EQUAL(s.text.p, "It is n\xc3\xb6on.");
        CU_ASSERT_EQUAL(res.stop, AZ_LLM_STOP_END);
        CU_ASSERT_EQUAL(res.usage.prompt_tokens, 12);
        CU_ASSERT_EQUAL(res.usage.completion_tokens, 5);
        CU_ASSERT_STRING_EQUAL(res.model, "gpt-fake");
        CU_ASSERT_EQUAL(res.n_tool_calls, 0u);
        if (res.error.type[0]) fprintf(stderr, "\n  %s: %s\n", providers[i], res.error.message);
        az_llm_result_free(&res);
        buf_free(&s.text);
    }
    /* What the real client sent: model, messages, tools, stream. */
    char *body = fakellm_body(F, "gpt-fake", 0);
    json_t *j = json_loads(body, 0, NULL);
    CU_ASSERT_TRUE(json_is_true(json_object_get(j, "stream")));
    CU_ASSERT_EQUAL(json_array_size(json_object_get(j, "messages")), 2u);
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(json_array_get(json_object_get(j, "tools"), 0), "type")),
                           "function");
    json_decref(j);
    free(body);
    body = fakellm_body(F, "gpt-fake", 1); /* anthropic: system on top, one user message */
    j = json_loads(body, 0, NULL);
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(j, "system")), "You are terse.");
    CU_ASSERT_EQUAL(json_array_size(json_object_get(j, "messages")), 1u);
    json_decref(j);
    free(body);
    CU_ASSERT_EQUAL(fakellm_count(F, "gpt-fake"), 2u);
}

static void test_client_tool_call(void)
{
    fakellm_reset(F);
    fakellm_reply r = {.kind = FAKELLM_TOOL_CALL, .tool_name = "current_time",
                       .tool_args = "{\"tz\":\"Europe/Paris\"}", .chunk_size = 5};
    fakellm_on(F, NULL, NULL, &r, 1);
    const char *providers[] = {"openai", "anthropic"};
    for (int i = 0; i < 2; i++) {
        seen s;
        az_llm_result res;
        CU_ASSERT_EQUAL(call(providers[i], "m", NULL, &s, &res), AZ_OK);
        CU_ASSERT_EQUAL(res.stop, AZ_LLM_STOP_TOOL_CALLS);
        CU_ASSERT_EQUAL_FATAL(res.n_tool_calls, 1u);
        CU_ASSERT_STRING_EQUAL(res.tool_calls[0].name, "current_time");
        CU_ASSERT_STRING_EQUAL(res.tool_calls[0].arguments, "{\"tz\":\"Europe/Paris\"}");
        CU_ASSERT_TRUE(strlen(res.tool_calls[0].id) > 0);
        CU_ASSERT_EQUAL(s.tool_calls, 1);
        CU_ASSERT_STRING_EQUAL(s.tool_args, "{\"tz\":\"Europe/Paris\"}");
        az_llm_result_free(&res);
        buf_free(&s.text);
    }
}

static void test_client_errors(void)
{
    fakellm_reset(F);
    fakellm_reply r429 = {.kind = FAKELLM_HTTP_ERROR, .status = 429, .retry_after_s = 3};
    fakellm_reply r500 = {.kind = FAKELLM_HTTP_ERROR, .status = 500};
    fakellm_reply r400 = {.kind = FAKELLM_HTTP_ERROR, .status = 400};
    fakellm_on(F, "limited", NULL, &r429, 1);
    fakellm_on(F, "broken", NULL, &r500, 1);
    fakellm_on(F, "bad", NULL, &r400, 1);
    const char *providers[] = {"openai", "anthropic"};
    for (int i = 0; i < 2; i++) {
        seen s;
        az_llm_result res;
        CU_ASSERT_EQUAL(call(providers[i], "limited", NULL, &s, &res), AZ_ERR_EXHAUSTED);
        CU_ASSERT_STRING_EQUAL(res.error.type, "llm_rate_limited");
        CU_ASSERT_TRUE(res.error.retryable);
        CU_ASSERT_EQUAL(res.error.retry_after_ms, 3000);
        CU_ASSERT_EQUAL(res.error.http_status, 429);
        CU_ASSERT_PTR_NOT_NULL(strstr(res.error.message, "fakellm: scripted HTTP 429"));
        az_llm_result_free(&res);
        CU_ASSERT_EQUAL(call(providers[i], "broken", NULL, &s, &res), AZ_ERR_UNAVAILABLE);
        CU_ASSERT_STRING_EQUAL(res.error.type, "llm_unavailable");
        CU_ASSERT_TRUE(res.error.retryable);
        CU_ASSERT_EQUAL(res.error.http_status, 500);
        az_llm_result_free(&res);
        CU_ASSERT_EQUAL(call(providers[i], "bad", NULL, &s, &res), AZ_ERR_INVALID);
        CU_ASSERT_STRING_EQUAL(res.error.type, "llm_bad_request");
        CU_ASSERT_FALSE(res.error.retryable);
        az_llm_result_free(&res);
    }
}

static void test_client_drop(void)
{
    fakellm_reset(F);
    fakellm_reply r = {.kind = FAKELLM_DROP, .text = "this will be cut off"};
    fakellm_on(F, NULL, NULL, &r, 1);
    const char *providers[] = {"openai", "anthropic"};
    for (int i = 0; i < 2; i++) {
        seen s;
        az_llm_result res;
        CU_ASSERT_EQUAL(call(providers[i], "m", NULL, &s, &res), AZ_ERR_UNAVAILABLE);
        CU_ASSERT_STRING_EQUAL(res.error.type, "llm_network");
        CU_ASSERT_TRUE(res.error.retryable);
        CU_ASSERT_EQUAL(res.n_tool_calls, 0u);
        az_llm_result_free(&res);
    }
    WAIT_FOR(fakellm_open_connections(F) == 0, 2000);
    CU_ASSERT_EQUAL(fakellm_open_connections(F), 0u);
    CU_ASSERT_EQUAL(fakellm_in_flight(F), 0u);
}

typedef struct hang_arg {
    volatile int cancel;
    az_err e;
    az_llm_result res;
    seen s;
} hang_arg;

static void *hang_thread(void *p)
{
    hang_arg *h = p;
    h->e = call("openai", "slow", &h->cancel, &h->s, &h->res);
    return NULL;
}

static void test_client_hang_and_cancel(void)
{
    fakellm_reset(F);
    fakellm_reply r = {.kind = FAKELLM_HANG};
    fakellm_on(F, "slow", NULL, &r, 1);
    hang_arg h = {0};
    pthread_t t;
    pthread_create(&t, NULL, hang_thread, &h);
    WAIT_FOR(fakellm_in_flight(F) == 1, 3000);
    CU_ASSERT_EQUAL(fakellm_in_flight(F), 1u);
    usleep(300 * 1000);
    CU_ASSERT_EQUAL(fakellm_in_flight(F), 1u); /* still hanging */
    long t0 = now_msl();
    h.cancel = 1;
    pthread_join(t, NULL);
    CU_ASSERT_TRUE(now_msl() - t0 < 1000);
    CU_ASSERT_EQUAL(h.e, AZ_ERR_CANCELLED);
    CU_ASSERT_STRING_EQUAL(h.res.error.type, "llm_cancelled");
    az_llm_result_free(&h.res);
    buf_free(&h.s.text);
    /* The fake notices the client went away. */
    WAIT_FOR(fakellm_in_flight(F) == 0 && fakellm_open_connections(F) == 0, 2000);
    CU_ASSERT_EQUAL(fakellm_in_flight(F), 0u);
    CU_ASSERT_EQUAL(fakellm_open_connections(F), 0u);
}

static void test_delay(void)
{
    fakellm_reset(F);
    fakellm_reply r = {.kind = FAKELLM_TEXT, .text = "late", .delay_ms = 300};
    fakellm_on(F, NULL, NULL, &r, 1);
    seen s;
    az_llm_result res;
    long t0 = now_msl();
    CU_ASSERT_EQUAL(call("openai", "m", NULL, &s, &res), AZ_OK);
    long took = now_msl() - t0;
    CU_ASSERT_TRUE(took >= 300 && took < 2000);
    CU_ASSERT_STRING_EQUAL(res.text, "late");
    az_llm_result_free(&res);
    buf_free(&s.text);
}

/* Rules: by model, by body match, newest first, a sequence whose last reply repeats. */
static void test_rules(void)
{
    fakellm_reset(F);
    fakellm_reply seq[] = {{.kind = FAKELLM_HTTP_ERROR, .status = 503},
                           {.kind = FAKELLM_TEXT, .text = "second"},
                           {.kind = FAKELLM_TEXT, .text = "third"}};
    fakellm_on(F, "seq", NULL, seq, 3);
    fakellm_reply older = {.kind = FAKELLM_TEXT, .text = "older"};
    fakellm_reply newer = {.kind = FAKELLM_TEXT, .text = "newer"};
    fakellm_on(F, "any", NULL, &older, 1);
    fakellm_on(F, "any", "What time", &newer, 1);
    seen s;
    az_llm_result res;
    CU_ASSERT_EQUAL(call("openai", "seq", NULL, &s, &res), AZ_ERR_UNAVAILABLE);
    CU_ASSERT_EQUAL(res.error.http_status, 503);
    az_llm_result_free(&res);
    const char *want[] = {"second", "third", "third"};
    for (int i = 0; i < 3; i++) {
        CU_ASSERT_EQUAL(call("openai", "seq", NULL, &s, &res), AZ_OK);
        CU_ASSERT_STRING_EQUAL(res.text, want[i]);
        az_llm_result_free(&res);
        buf_free(&s.text);
    }
    /* The newer rule matches the body ("What time is it?"); the older one is shadowed. */
    CU_ASSERT_EQUAL(call("openai", "any", NULL, &s, &res), AZ_OK);
    CU_ASSERT_STRING_EQUAL(res.text, "newer");
    az_llm_result_free(&res);
    buf_free(&s.text);
    fakellm_on(F, "any", "no such words", &newer, 1);
    fakellm_on(F, "any", NULL, &older, 1);
    CU_ASSERT_EQUAL(call("openai", "any", NULL, &s, &res), AZ_OK);
    CU_ASSERT_STRING_EQUAL(res.text, "older");
    az_llm_result_free(&res);
    buf_free(&s.text);
    /* No rule for the model: "ok". */
    CU_ASSERT_EQUAL(call("openai", "unknown", NULL, &s, &res), AZ_OK);
    CU_ASSERT_STRING_EQUAL(res.text, "ok");
    az_llm_result_free(&res);
    buf_free(&s.text);
    /* Counts and bodies. */
    CU_ASSERT_EQUAL(fakellm_count(F, "seq"), 4u);
    CU_ASSERT_EQUAL(fakellm_count(F, "any"), 2u);
    CU_ASSERT_EQUAL(fakellm_count(F, "unknown"), 1u);
    CU_ASSERT_EQUAL(fakellm_count(F, "never"), 0u);
    CU_ASSERT_EQUAL(fakellm_count(F, NULL), 7u);
    char *b = fakellm_body(F, NULL, 6);
    CU_ASSERT_PTR_NOT_NULL(b && strstr(b, "\"unknown\""));
    free(b);
    CU_ASSERT_PTR_NULL(fakellm_body(F, NULL, 7));
    CU_ASSERT_PTR_NULL(fakellm_body(F, "any", 2));
    b = fakellm_body(F, "any", 1);
    CU_ASSERT_PTR_NOT_NULL(b && strstr(b, "What time is it?"));
    free(b);
    /* Reset forgets rules and requests. */
    fakellm_reset(F);
    CU_ASSERT_EQUAL(fakellm_count(F, NULL), 0u);
    CU_ASSERT_PTR_NULL(fakellm_body(F, NULL, 0));
    CU_ASSERT_EQUAL(call("openai", "seq", NULL, &s, &res), AZ_OK);
    CU_ASSERT_STRING_EQUAL(res.text, "ok");
    az_llm_result_free(&res);
    buf_free(&s.text);
}

/* The log keeps the last 4096 bodies; counts keep counting. */
static void test_log_bound(void)
{
    fakellm_reset(F);
    CURL *e = curl_easy_init();
    for (int i = 0; i < 4100; i++) {
        char body[160];
        snprintf(body, sizeof body,
                 "{\"model\":\"bulk\",\"messages\":[{\"role\":\"user\",\"content\":\"n%d\"}]}", i);
        http_resp res;
        post(e, "/v1/chat/completions", body, NULL, &res);
        if (res.status != 200) CU_FAIL("bulk request failed");
        resp_free(&res);
    }
    curl_easy_cleanup(e);
    CU_ASSERT_EQUAL(fakellm_count(F, "bulk"), 4100u);
    CU_ASSERT_PTR_NULL(fakellm_body(F, "bulk", 3)); /* evicted */
    char *b = fakellm_body(F, "bulk", 4); /* the oldest kept */
    CU_ASSERT_PTR_NOT_NULL(b && strstr(b, "\"n4\""));
    free(b);
    b = fakellm_body(F, "bulk", 4099);
    CU_ASSERT_PTR_NOT_NULL(b && strstr(b, "\"n4099\""));
    free(b);
}

/* 2,000 connections held open at once by slow responses, on the fake's one thread. */
static void test_many_connections(void)
{
    enum { N = 2000 };
    fakellm_reset(F);
    fakellm_reply r = {.kind = FAKELLM_TEXT, .text = "slow but sure", .delay_ms = 1500,
                       .chunk_delay_ms = 100, .chunk_size = 5};
    fakellm_on(F, NULL, NULL, &r, 1);
    CURLM *m = curl_multi_init();
    curl_multi_setopt(m, CURLMOPT_MAX_TOTAL_CONNECTIONS, 0L);
    static CURL *easy[N];
    static buf bodies[N];
    char url[128];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/v1/chat/completions", fakellm_port(F));
    const char *body = CHAT ",\"stream\":true}";
    for (int i = 0; i < N; i++) {
        easy[i] = curl_easy_init();
        bodies[i] = (buf){0};
        curl_easy_setopt(easy[i], CURLOPT_URL, url);
        curl_easy_setopt(easy[i], CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(easy[i], CURLOPT_WRITEFUNCTION, collect);
        curl_easy_setopt(easy[i], CURLOPT_WRITEDATA, &bodies[i]);
        curl_easy_setopt(easy[i], CURLOPT_TIMEOUT_MS, 30000L);
        curl_multi_add_handle(m, easy[i]);
    }
    int running = 1;
    size_t peak_open = 0, peak_flight = 0;
    long t0 = now_msl();
    while (running && now_msl() - t0 < 30000) {
        curl_multi_perform(m, &running);
        size_t o = fakellm_open_connections(F), fl = fakellm_in_flight(F);
        if (o > peak_open) peak_open = o;
        if (fl > peak_flight) peak_flight = fl;
        curl_multi_poll(m, NULL, 0, 50, NULL);
    }
    long took = now_msl() - t0;
    CU_ASSERT_EQUAL(running, 0);
    CU_ASSERT_EQUAL(peak_open, (size_t)N);
    CU_ASSERT_EQUAL(peak_flight, (size_t)N);
    /* All concurrent: one response takes ~1.5 s + 3 chunks x 100 ms; N in sequence would take
     * about an hour. */
    CU_ASSERT_TRUE(took < 15000);
    int ok = 0;
    CURLMsg *cm;
    int left;
    while ((cm = curl_multi_info_read(m, &left)))
        if (cm->msg == CURLMSG_DONE && cm->data.result == CURLE_OK) ok++;
    CU_ASSERT_EQUAL(ok, N);
    int complete = 0;
    for (int i = 0; i < N; i++) {
        if (bodies[i].p && strstr(bodies[i].p, "data: [DONE]") && strstr(bodies[i].p, "\"slow \""))
            complete++;
        curl_multi_remove_handle(m, easy[i]);
        curl_easy_cleanup(easy[i]);
        buf_free(&bodies[i]);
    }
    CU_ASSERT_EQUAL(complete, N);
    curl_multi_cleanup(m);
    WAIT_FOR(fakellm_open_connections(F) == 0, 5000);
    CU_ASSERT_EQUAL(fakellm_open_connections(F), 0u);
    CU_ASSERT_EQUAL(fakellm_in_flight(F), 0u);
    CU_ASSERT_EQUAL(fakellm_count(F, NULL), (size_t)N);
}

static int setup(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
    F = fakellm_start();
    return F ? 0 : 1;
}

static int teardown(void)
{
    fakellm_stop(F);
    curl_global_cleanup();
    return 0;
}

int main(void)
{
    az_log_set_level(AZ_LOG_WARN);
    if (CU_initialize_registry() != CUE_SUCCESS) return 1;
    CU_pSuite s = CU_add_suite("fakellm", setup, teardown);
    if (!s) return 1;
    CU_add_test(s, "curl: openai complete, keep-alive", test_curl_openai_complete);
    CU_add_test(s, "curl: openai stream", test_curl_openai_stream);
    CU_add_test(s, "curl: errors and routes", test_curl_errors_and_routes);
    CU_add_test(s, "curl: chunked request body", test_curl_chunked_request);
    CU_add_test(s, "raw: pipelining, garbage, HTTP/1.0", test_raw_pipelining_and_garbage);
    CU_add_test(s, "client: text (openai, anthropic)", test_client_text);
    CU_add_test(s, "client: tool call", test_client_tool_call);
    CU_add_test(s, "client: 429 Retry-After, 500, 400", test_client_errors);
    CU_add_test(s, "client: dropped connection", test_client_drop);
    CU_add_test(s, "client: hang then cancel", test_client_hang_and_cancel);
    CU_add_test(s, "client: delay", test_delay);
    CU_add_test(s, "rules, counts, bodies", test_rules);
    CU_add_test(s, "request log bound", test_log_bound);
    CU_add_test(s, "2,000 concurrent connections", test_many_connections);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    unsigned failures = CU_get_number_of_failures() + CU_get_number_of_tests_failed() +
                        CU_get_number_of_suites_failed();
    CU_cleanup_registry();
    return failures ? 1 : 0;
}
