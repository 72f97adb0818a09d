/* CUnit suite for server/llm: the SSE parser, the price table, configuration defaults, and
 * OpenAI / Anthropic streaming calls against a real HTTP/1.1 server on 127.0.0.1 (llm_fake.c)
 * that checks requests and replays scripted streams, errors, stalls and oversized events. */
#include <CUnit/Basic.h>
#include <jansson.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/log.h"
#include "llm/llm.h"
#include "llm/price.h"
#include "llm/sse.h"

#include "llm_fake.c" /* the test double: not globbed by CMake as a suite */

#define KEY "sk-test-0123456789abcdef"

static char msg[AZ_MSG_MAX];

static long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000L + ts.tv_nsec / 1000000L;
}

static const char *const ENV_VARS[] = {"AGENTZ_LLM_PROVIDER", "AGENTZ_LLM_BASE_URL", "AGENTZ_LLM_API_KEY",
                                       "AGENTZ_LLM_MODEL",    "OPENAI_API_KEY",      "OPENAI_BASE_URL",
                                       "ANTHROPIC_API_KEY",   "ANTHROPIC_BASE_URL",  "AGENTZ_LLM_PRICES",
                                       "AGENTZ_LLM_PRICES_FILE"};

static void clear_env(void)
{
    for (size_t i = 0; i < sizeof ENV_VARS / sizeof ENV_VARS[0]; i++) unsetenv(ENV_VARS[i]);
}

/* ---- SSE parser ---- */

typedef struct sse_log {
    char buf[4096];
    int n;
} sse_log;

static az_err log_event(void *arg, const az_sse_event *ev, char *m)
{
    sse_log *l = arg;
    size_t used = strlen(l->buf);
    snprintf(l->buf + used, sizeof l->buf - used, "[%s|%.*s]", ev->event, (int)ev->data_len, ev->data);
    CU_ASSERT_EQUAL(strlen(ev->data), ev->data_len);
    l->n++;
    return AZ_OK;
}

/* Feeds s split at every position (and byte by byte) and checks each gives want. */
static void sse_expect(const char *s, const char *want)
{
    size_t len = strlen(s);
    for (size_t split = 0; split <= len + 1; split++) {
        sse_log l = {0};
        az_sse *p;
        CU_ASSERT_EQUAL_FATAL(az_sse_new(0, log_event, &l, &p, msg), AZ_OK);
        if (split <= len) {
            CU_ASSERT_EQUAL(az_sse_feed(p, s, split, msg), AZ_OK);
            CU_ASSERT_EQUAL(az_sse_feed(p, s + split, len - split, msg), AZ_OK);
        } else {
            for (size_t i = 0; i < len; i++) CU_ASSERT_EQUAL(az_sse_feed(p, s + i, 1, msg), AZ_OK);
        }
        if (strcmp(l.buf, want) != 0) {
            fprintf(stderr, "\n  split %zu of %s: got %s want %s\n", split, s, l.buf, want);
            CU_FAIL("sse events differ");
            az_sse_free(p);
            return;
        }
        az_sse_free(p);
    }
}

static void test_sse_grammar(void)
{
    sse_expect("data: a\n\n", "[message|a]");
    sse_expect("data: a\r\n\r\n", "[message|a]");
    sse_expect("data: a\r\rdata: b\r\r", "[message|a][message|b]");
    /* Multi-line data joins with \n; only one leading space is stripped. */
    sse_expect("data: one\ndata:two\ndata:  three\n\n", "[message|one\ntwo\n three]");
    /* Comments, unknown fields, id/retry are ignored; event names apply to one event. */
    sse_expect(": keep-alive\nid: 7\nretry: 10\nfoo: bar\nevent: ping\ndata: {}\n\ndata: x\n\n",
               "[ping|{}][message|x]");
    /* A blank line without data dispatches nothing and forgets the event name. */
    sse_expect("event: lost\n\ndata: y\n\n", "[message|y]");
    /* "data" with no colon is an empty data line, which still dispatches. */
    sse_expect("data\n\n", "[message|]");
    /* A UTF-8 BOM at the start is skipped; multi-byte text passes through whole. */
    sse_expect("\xef\xbb\xbf" "data: h\xc3\xa9\xf0\x9f\x98\x80\n\n", "[message|h\xc3\xa9\xf0\x9f\x98\x80]");
    /* Mixed endings. */
    sse_expect("event: a\r\ndata: 1\n\r\ndata: 2\r\n\n", "[a|1][message|2]");
}

static void test_sse_pending_and_limits(void)
{
    sse_log l = {0};
    az_sse *p;
    CU_ASSERT_EQUAL_FATAL(az_sse_new(64, log_event, &l, &p, msg), AZ_OK);
    CU_ASSERT_EQUAL(az_sse_feed(p, "data: x\n", 8, msg), AZ_OK);
    CU_ASSERT_TRUE(az_sse_pending(p)); /* no blank line yet */
    CU_ASSERT_EQUAL(az_sse_feed(p, "\n", 1, msg), AZ_OK);
    CU_ASSERT_FALSE(az_sse_pending(p));
    CU_ASSERT_EQUAL(l.n, 1);
    char big[100];
    memset(big, 'a', sizeof big);
    CU_ASSERT_EQUAL(az_sse_feed(p, "data: ", 6, msg), AZ_OK);
    CU_ASSERT_EQUAL(az_sse_feed(p, big, sizeof big, msg), AZ_ERR_EXHAUSTED);
    CU_ASSERT_STRING_EQUAL(msg, "sse event larger than 64 bytes");
    CU_ASSERT_EQUAL(az_sse_feed(p, "\n\n", 2, msg), AZ_ERR_PRECONDITION);
    az_sse_free(p);
    /* The bound covers the sum of data lines, not just one line. */
    sse_log l2 = {0};
    CU_ASSERT_EQUAL_FATAL(az_sse_new(16, log_event, &l2, &p, msg), AZ_OK);
    CU_ASSERT_EQUAL(az_sse_feed(p, "data: 0123456\ndata: 0123456\n", 28, msg), AZ_ERR_EXHAUSTED);
    az_sse_free(p);
    az_sse_free(NULL);
}

/* ---- price table ---- */

static void test_prices(void)
{
    az_llm_prices *p;
    CU_ASSERT_EQUAL_FATAL(az_llm_prices_new(&p, msg), AZ_OK);
    double in, out;
    CU_ASSERT_TRUE(az_llm_prices_lookup(p, "gpt-4o-mini-2024-07-18", &in, &out));
    CU_ASSERT_DOUBLE_EQUAL(in, 0.15, 1e-9);
    CU_ASSERT_DOUBLE_EQUAL(out, 0.60, 1e-9);
    CU_ASSERT_TRUE(az_llm_prices_lookup(p, "gpt-4o", &in, &out));
    CU_ASSERT_DOUBLE_EQUAL(in, 2.5, 1e-9);
    CU_ASSERT_TRUE(az_llm_prices_lookup(p, "openai/gpt-4o-mini", &in, &out)); /* OpenRouter */
    CU_ASSERT_DOUBLE_EQUAL(in, 0.15, 1e-9);
    CU_ASSERT_TRUE(az_llm_prices_lookup(p, "claude-3-5-haiku-20241022", &in, &out));
    CU_ASSERT_DOUBLE_EQUAL(out, 4.0, 1e-9);
    CU_ASSERT_FALSE(az_llm_prices_lookup(p, "llama3.2", &in, &out));
    CU_ASSERT_FALSE(az_llm_prices_lookup(p, "gpt-4oops", &in, &out)); /* prefix needs a separator */
    CU_ASSERT_DOUBLE_EQUAL(az_llm_prices_cost(p, "llama3.2", 1000, 1000), 0, 1e-12);
    /* 1M in at 0.15 + 0.5M out at 0.60 = 0.45 USD. */
    CU_ASSERT_DOUBLE_EQUAL(az_llm_prices_cost(p, "gpt-4o-mini", 1000000, 500000), 0.45, 1e-9);

    CU_ASSERT_EQUAL(az_llm_prices_parse(p, " llama3.2 = 0.1:0.2 , gpt-4o=1:2,", msg), AZ_OK);
    CU_ASSERT_TRUE(az_llm_prices_lookup(p, "llama3.2:8b", &in, &out));
    CU_ASSERT_DOUBLE_EQUAL(out, 0.2, 1e-9);
    CU_ASSERT_TRUE(az_llm_prices_lookup(p, "gpt-4o", &in, &out));
    CU_ASSERT_DOUBLE_EQUAL(in, 1.0, 1e-9);
    CU_ASSERT_EQUAL(az_llm_prices_parse(p, "bad", msg), AZ_ERR_INVALID);
    CU_ASSERT_PTR_NOT_NULL(strstr(msg, "price item \"bad\""));
    CU_ASSERT_EQUAL(az_llm_prices_parse(p, "m=1:x", msg), AZ_ERR_INVALID);
    CU_ASSERT_EQUAL(az_llm_prices_parse(p, "m=-1:2", msg), AZ_ERR_INVALID);
    CU_ASSERT_EQUAL(az_llm_prices_parse(p, "=1:2", msg), AZ_ERR_INVALID);

    char path[] = "/tmp/azllm-prices-XXXXXX";
    int fd = mkstemp(path);
    CU_ASSERT_FATAL(fd >= 0);
    const char *js = "{\"my-model\": {\"input\": 3, \"output\": 6}, \"other\": [1, 2]}";
    CU_ASSERT_EQUAL(write(fd, js, strlen(js)), (ssize_t)strlen(js));
    close(fd);
    CU_ASSERT_EQUAL(az_llm_prices_load_file(p, path, msg), AZ_OK);
    CU_ASSERT_DOUBLE_EQUAL(az_llm_prices_cost(p, "my-model", 1000000, 1000000), 9.0, 1e-9);
    CU_ASSERT_DOUBLE_EQUAL(az_llm_prices_cost(p, "other", 1000000, 0), 1.0, 1e-9);
    CU_ASSERT_EQUAL(az_llm_prices_load_file(p, "/nonexistent/prices.json", msg), AZ_ERR_IO);
    az_llm_prices_free(p);

    clear_env();
    setenv("AGENTZ_LLM_PRICES_FILE", path, 1);
    setenv("AGENTZ_LLM_PRICES", "my-model=5:5", 1);
    CU_ASSERT_EQUAL_FATAL(az_llm_prices_from_env(&p, msg), AZ_OK);
    CU_ASSERT_DOUBLE_EQUAL(az_llm_prices_cost(p, "my-model", 1000000, 0), 5.0, 1e-9); /* env wins */
    CU_ASSERT_DOUBLE_EQUAL(az_llm_prices_cost(p, "other", 0, 1000000), 2.0, 1e-9);
    CU_ASSERT_DOUBLE_EQUAL(az_llm_prices_cost(p, "gpt-4o", 1000000, 0), 2.5, 1e-9); /* defaults kept */
    az_llm_prices_free(p);
    setenv("AGENTZ_LLM_PRICES", "nope", 1);
    CU_ASSERT_EQUAL(az_llm_prices_from_env(&p, msg), AZ_ERR_INVALID);
    CU_ASSERT_PTR_NOT_NULL(strstr(msg, "AGENTZ_LLM_PRICES"));
    CU_ASSERT_PTR_NULL(p);
    clear_env();
    unlink(path);
    az_llm_prices_free(NULL);
}

/* ---- configuration ---- */

static void test_config_defaults(void)
{
    az_llm_message um = {AZ_LLM_USER, "hi"};
    az_llm_request req = {.messages = &um, .n_messages = 1};
    az_llm_endpoint ep;
    clear_env();
    CU_ASSERT_EQUAL(az_llm_resolve(&req, &ep, msg), AZ_ERR_PRECONDITION);
    CU_ASSERT_STRING_EQUAL(msg, "no LLM provider configured: set AGENTZ_LLM_API_KEY (or OPENAI_API_KEY) "
                                "or give the agent llm.base_url, e.g. http://127.0.0.1:11434/v1 for Ollama");
    /* The blocking call reports it as a non-retryable error. */
    az_llm_result r;
    CU_ASSERT_EQUAL(az_llm_complete(&req, NULL, NULL, NULL, &r, msg), AZ_ERR_PRECONDITION);
    CU_ASSERT_STRING_EQUAL(r.error.type, "llm_not_configured");
    CU_ASSERT_FALSE(r.error.retryable);
    CU_ASSERT_PTR_NOT_NULL(strstr(r.error.message, "AGENTZ_LLM_API_KEY"));
    az_llm_result_free(&r);

    setenv("OPENAI_API_KEY", KEY, 1);
    CU_ASSERT_EQUAL(az_llm_resolve(&req, &ep, msg), AZ_OK);
    CU_ASSERT_STRING_EQUAL(ep.provider, "openai");
    CU_ASSERT_STRING_EQUAL(ep.base_url, "https://api.openai.com/v1");
    CU_ASSERT_STRING_EQUAL(ep.api_key, KEY);
    CU_ASSERT_STRING_EQUAL(ep.model, "gpt-4o-mini");
    setenv("AGENTZ_LLM_API_KEY", "agentz-key", 1);
    setenv("AGENTZ_LLM_MODEL", "gpt-4.1", 1);
    setenv("OPENAI_BASE_URL", "http://127.0.0.1:1/v1", 1);
    CU_ASSERT_EQUAL(az_llm_resolve(&req, &ep, msg), AZ_OK);
    CU_ASSERT_STRING_EQUAL(ep.api_key, "agentz-key"); /* AGENTZ_ wins over the convention */
    CU_ASSERT_STRING_EQUAL(ep.model, "gpt-4.1");
    CU_ASSERT_STRING_EQUAL(ep.base_url, "http://127.0.0.1:1/v1");
    setenv("AGENTZ_LLM_BASE_URL", "http://127.0.0.1:11434/v1", 1);
    CU_ASSERT_EQUAL(az_llm_resolve(&req, &ep, msg), AZ_OK);
    CU_ASSERT_STRING_EQUAL(ep.base_url, "http://127.0.0.1:11434/v1");
    /* The agent's own settings win. */
    req.base_url = "http://10.0.0.1:8000/v1";
    req.model = "qwen2.5";
    req.api_key = "agent-key";
    CU_ASSERT_EQUAL(az_llm_resolve(&req, &ep, msg), AZ_OK);
    CU_ASSERT_STRING_EQUAL(ep.base_url, "http://10.0.0.1:8000/v1");
    CU_ASSERT_STRING_EQUAL(ep.model, "qwen2.5");
    CU_ASSERT_STRING_EQUAL(ep.api_key, "agent-key");

    /* A local base URL needs no key. */
    clear_env();
    az_llm_request local = {.base_url = "http://127.0.0.1:11434/v1", .messages = &um, .n_messages = 1};
    CU_ASSERT_EQUAL(az_llm_resolve(&local, &ep, msg), AZ_OK);
    CU_ASSERT_PTR_NULL(ep.api_key);

    /* Anthropic: its key alone makes it the default; AGENTZ_LLM_* do not leak to it otherwise. */
    az_llm_request plain = {.messages = &um, .n_messages = 1};
    setenv("ANTHROPIC_API_KEY", "ant-key", 1);
    CU_ASSERT_EQUAL(az_llm_resolve(&plain, &ep, msg), AZ_OK);
    CU_ASSERT_STRING_EQUAL(ep.provider, "anthropic");
    CU_ASSERT_STRING_EQUAL(ep.base_url, "https://api.anthropic.com");
    CU_ASSERT_STRING_EQUAL(ep.api_key, "ant-key");
    clear_env();
    setenv("AGENTZ_LLM_API_KEY", "openai-ish", 1);
    az_llm_request ant = {.provider = "anthropic", .messages = &um, .n_messages = 1};
    CU_ASSERT_EQUAL(az_llm_resolve(&ant, &ep, msg), AZ_ERR_PRECONDITION);
    CU_ASSERT_PTR_NOT_NULL(strstr(msg, "ANTHROPIC_API_KEY"));
    setenv("AGENTZ_LLM_PROVIDER", "anthropic", 1);
    CU_ASSERT_EQUAL(az_llm_resolve(&ant, &ep, msg), AZ_OK);
    CU_ASSERT_STRING_EQUAL(ep.api_key, "openai-ish");

    az_llm_request crlf = {.base_url = "http://127.0.0.1:1/v1", .api_key = "k\r\nX-Evil: 1",
                           .messages = &um, .n_messages = 1};
    CU_ASSERT_EQUAL(az_llm_resolve(&crlf, &ep, msg), AZ_ERR_INVALID);
    CU_ASSERT_PTR_NULL(strstr(msg, "X-Evil"));

    ant.provider = "cohere";
    CU_ASSERT_EQUAL(az_llm_resolve(&ant, &ep, msg), AZ_ERR_INVALID);
    CU_ASSERT_PTR_NOT_NULL(strstr(msg, "llm.provider"));
    ant.provider = NULL;
    ant.base_url = "ftp://x";
    CU_ASSERT_EQUAL(az_llm_resolve(&ant, &ep, msg), AZ_ERR_INVALID);
    CU_ASSERT_PTR_NOT_NULL(strstr(msg, "llm.base_url"));
    clear_env();
}

static void test_validation_and_redaction(void)
{
    az_llm_message bad[] = {{AZ_LLM_USER, "hi"}, {AZ_LLM_TOOL, "result"}};
    az_llm_request req = {.base_url = "http://127.0.0.1:1/v1", .messages = bad, .n_messages = 2};
    az_llm_call *c;
    CU_ASSERT_EQUAL(az_llm_call_new(&req, NULL, NULL, &c, msg), AZ_ERR_INVALID);
    CU_ASSERT_STRING_EQUAL(msg, "messages[1].tool_call_id is required");
    req.n_messages = 0;
    CU_ASSERT_EQUAL(az_llm_call_new(&req, NULL, NULL, &c, msg), AZ_ERR_INVALID);
    az_llm_tool t = {.name = ""};
    req.n_messages = 1;
    req.tools = &t;
    req.n_tools = 1;
    CU_ASSERT_EQUAL(az_llm_call_new(&req, NULL, NULL, &c, msg), AZ_ERR_INVALID);
    CU_ASSERT_STRING_EQUAL(msg, "tools[0].name is required");

    char out[128];
    az_llm_redact_header("Authorization: Bearer " KEY "\r\n", strlen("Authorization: Bearer " KEY "\r\n"),
                         out, sizeof out);
    CU_ASSERT_STRING_EQUAL(out, "Authorization: [redacted]");
    az_llm_redact_header("x-api-key: abc", 14, out, sizeof out);
    CU_ASSERT_STRING_EQUAL(out, "x-api-key: [redacted]");
    az_llm_redact_header("Content-Type: json\n", 19, out, sizeof out);
    CU_ASSERT_STRING_EQUAL(out, "Content-Type: json");
    az_llm_call_free(NULL);
    az_llm_result_free(NULL);
}

/* ---- streaming against the fake server ---- */

typedef struct sink {
    char text[8192];
    int n_text;
    char calls[4][256];
    int n_calls;
    volatile int *cancel_on_text; /* set *this on the first delta */
} sink;

static int on_text(void *arg, const char *d, size_t n)
{
    sink *s = arg;
    size_t used = strlen(s->text);
    CU_ASSERT_FATAL(used + n < sizeof s->text);
    memcpy(s->text + used, d, n);
    s->text[used + n] = '\0';
    s->n_text++;
    return 0;
}

static int on_tool_call(void *arg, const az_llm_tool_call *c)
{
    sink *s = arg;
    if (s->n_calls < 4)
        snprintf(s->calls[s->n_calls], sizeof s->calls[0], "%s|%s|%s", c->id, c->name, c->arguments);
    s->n_calls++;
    return 0;
}

static const az_llm_callbacks CB = {on_text, on_tool_call, NULL};

/* A conversation exercising every message kind. */
static const az_llm_tool_call PAST_CALLS[] = {{"call_0", "search", "{\"q\":\"crew\"}"}};
static const az_llm_message CONVO[] = {
    {AZ_LLM_SYSTEM, "You are a researcher."},
    {AZ_LLM_USER, "Find things."},
    {AZ_LLM_ASSISTANT, NULL, PAST_CALLS, 1},
    {AZ_LLM_TOOL, "found 3", NULL, 0, "call_0"},
};

static json_t *schema(void)
{
    return json_pack("{s:s, s:{s:{s:s}}, s:[s]}", "type", "object", "properties", "q", "type", "string",
                     "required", "q");
}

static fake_request *last_request(llm_fake *f)
{
    pthread_mutex_lock(&f->mu);
    fake_request *r = f->n_reqs ? &f->reqs[f->n_reqs - 1] : NULL;
    pthread_mutex_unlock(&f->mu);
    return r;
}

static char base_v1[96];

static az_llm_request openai_req(llm_fake *f, const az_llm_tool *tools, size_t n_tools)
{
    snprintf(base_v1, sizeof base_v1, "%s/v1/", f->base_url);
    return (az_llm_request){.provider = "openai", .base_url = base_v1, .api_key = KEY,
                            .model = "gpt-test", .messages = CONVO, .n_messages = 4,
                            .tools = tools, .n_tools = n_tools, .timeout_ms = 5000};
}

/* "héllo wörld 😀 日本" as OpenAI chunks, one or two characters each. */
static const char OPENAI_TEXT[] =
    "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"model\":\"gpt-test-2025\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null}]}\n\n"
    ": keep-alive comment\n\n"
    "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"h\xc3\xa9\"},\"finish_reason\":null}]}\n\n"
    "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"llo w\xc3\xb6\"},\"finish_reason\":null}]}\r\n\r\n"
    "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"rld \xf0\x9f\x98\x80\"},\"finish_reason\":null}]}\n\n"
    "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\" \xe6\x97\xa5\xe6\x9c\xac\"},\"finish_reason\":null}]}\n\n"
    "data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n"
    "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":1000000,\"completion_tokens\":500000,\"total_tokens\":1500000}}\n\n"
    "data: [DONE]\n\n";

static void test_openai_text_stream(void)
{
    llm_fake f;
    CU_ASSERT_EQUAL_FATAL(fake_start(&f), 0);
    fake_script(&f, &(fake_response){.status = 200, .body = OPENAI_TEXT, .write_size = 3,
                                     .write_delay_us = 100});
    az_llm_prices *prices;
    CU_ASSERT_EQUAL_FATAL(az_llm_prices_new_empty(&prices, msg), AZ_OK);
    CU_ASSERT_EQUAL(az_llm_prices_parse(prices, "gpt-test=2:4", msg), AZ_OK);
    az_llm_tool tool = {"search", "Search the web", schema()};
    az_llm_request req = openai_req(&f, &tool, 1);
    req.prices = prices;
    req.has_temperature = 1;
    req.temperature = 0.25;
    req.max_tokens = 321;
    sink s = {0};

    /* Driven through the multi-handle API, as an event loop would. */
    az_llm_call *call;
    CU_ASSERT_EQUAL_FATAL(az_llm_call_new(&req, &CB, &s, &call, msg), AZ_OK);
    CURLM *m = curl_multi_init();
    curl_multi_add_handle(m, az_llm_call_easy(call));
    CURLcode code = CURLE_OK;
    for (int running = 1, done = 0; !done;) {
        curl_multi_perform(m, &running);
        CURLMsg *cm;
        int q;
        while ((cm = curl_multi_info_read(m, &q)))
            if (cm->msg == CURLMSG_DONE) code = cm->data.result, done = 1;
        if (!done) curl_multi_poll(m, NULL, 0, 100, NULL);
    }
    curl_multi_remove_handle(m, az_llm_call_easy(call));
    curl_multi_cleanup(m);
    az_llm_result r;
    CU_ASSERT_EQUAL(az_llm_call_finish(call, code, &r), AZ_OK);
    az_llm_call_free(call);

    const char *want = "h\xc3\xa9llo w\xc3\xb6rld \xf0\x9f\x98\x80 \xe6\x97\xa5\xe6\x9c\xac";
    CU_ASSERT_STRING_EQUAL(r.text, want);
    CU_ASSERT_EQUAL(r.text_len, strlen(want));
    CU_ASSERT_STRING_EQUAL(s.text, want);
    CU_ASSERT_EQUAL(s.n_text, 4); /* one callback per delta, as they arrived */
    CU_ASSERT_EQUAL(r.error.type[0], '\0');
    CU_ASSERT_EQUAL(r.stop, AZ_LLM_STOP_END);
    CU_ASSERT_STRING_EQUAL(r.stop_raw, "stop");
    CU_ASSERT_STRING_EQUAL(r.model, "gpt-test-2025");
    CU_ASSERT_EQUAL(r.usage.prompt_tokens, 1000000);
    CU_ASSERT_EQUAL(r.usage.completion_tokens, 500000);
    CU_ASSERT_EQUAL(r.usage.total_tokens, 1500000);
    CU_ASSERT_DOUBLE_EQUAL(r.usage.cost_usd, 2.0 + 2.0, 1e-9); /* priced by prefix */
    CU_ASSERT_EQUAL(r.n_tool_calls, 0);
    az_llm_result_free(&r);

    /* The request, as the server saw it. */
    fake_request *rq = last_request(&f);
    CU_ASSERT_PTR_NOT_NULL_FATAL(rq);
    char h[256];
    CU_ASSERT_STRING_EQUAL(rq->method, "POST");
    CU_ASSERT_STRING_EQUAL(rq->path, "/v1/chat/completions");
    CU_ASSERT_STRING_EQUAL(fake_header(rq, "authorization", h, sizeof h), "Bearer " KEY);
    CU_ASSERT_STRING_EQUAL(fake_header(rq, "content-type", h, sizeof h), "application/json");
    CU_ASSERT_STRING_EQUAL(fake_header(rq, "accept", h, sizeof h), "text/event-stream");
    CU_ASSERT_PTR_NULL(fake_header(rq, "x-api-key", h, sizeof h));
    json_t *b = json_loads(rq->body, 0, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(b);
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(b, "model")), "gpt-test");
    CU_ASSERT_TRUE(json_is_true(json_object_get(b, "stream")));
    CU_ASSERT_TRUE(json_is_true(json_object_get(json_object_get(b, "stream_options"), "include_usage")));
    CU_ASSERT_DOUBLE_EQUAL(json_number_value(json_object_get(b, "temperature")), 0.25, 1e-9);
    CU_ASSERT_EQUAL(json_integer_value(json_object_get(b, "max_tokens")), 321);
    json_t *msgs = json_object_get(b, "messages");
    CU_ASSERT_EQUAL(json_array_size(msgs), 4);
    const char *roles[] = {"system", "user", "assistant", "tool"};
    for (size_t i = 0; i < 4; i++)
        CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(json_array_get(msgs, i), "role")), roles[i]);
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(json_array_get(msgs, 0), "content")),
                           "You are a researcher.");
    json_t *asst = json_array_get(msgs, 2);
    CU_ASSERT_TRUE(json_is_null(json_object_get(asst, "content")));
    json_t *tc = json_array_get(json_object_get(asst, "tool_calls"), 0);
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(tc, "id")), "call_0");
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(tc, "type")), "function");
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(json_object_get(tc, "function"), "arguments")),
                           "{\"q\":\"crew\"}");
    json_t *tmsg = json_array_get(msgs, 3);
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(tmsg, "tool_call_id")), "call_0");
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(tmsg, "content")), "found 3");
    json_t *t0 = json_array_get(json_object_get(b, "tools"), 0);
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(t0, "type")), "function");
    json_t *fn = json_object_get(t0, "function");
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(fn, "name")), "search");
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(fn, "description")), "Search the web");
    CU_ASSERT_TRUE(json_equal(json_object_get(fn, "parameters"), tool.parameters));
    json_decref(b);
    json_decref(tool.parameters);
    az_llm_prices_free(prices);
    fake_stop(&f);
}

/* Two parallel tool calls whose argument fragments interleave by index. */
static const char OPENAI_TOOLS[] =
    "data: {\"model\":\"gpt-test\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":null,\"tool_calls\":[{\"index\":0,\"id\":\"call_a\",\"type\":\"function\",\"function\":{\"name\":\"search\",\"arguments\":\"\"}}]},\"finish_reason\":null}]}\n\n"
    "data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"{\\\"q\\\":\"}}]},\"finish_reason\":null}]}\n\n"
    "data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":1,\"id\":\"call_b\",\"type\":\"function\",\"function\":{\"name\":\"fetch\",\"arguments\":\"{\\\"url\\\"\"}}]},\"finish_reason\":null}]}\n\n"
    "data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\" \\\"caf\xc3\xa9\\\"}\"}}]},\"finish_reason\":null}]}\n\n"
    "data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":1,\"function\":{\"arguments\":\": \\\"http://x\\\"}\"}}]},\"finish_reason\":null}]}\n\n"
    "data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"tool_calls\"}]}\n\n"
    "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":10,\"completion_tokens\":20,\"total_tokens\":30}}\n\n"
    "data: [DONE]\n\n";

static void test_openai_parallel_tool_calls(void)
{
    llm_fake f;
    CU_ASSERT_EQUAL_FATAL(fake_start(&f), 0);
    fake_script(&f, &(fake_response){.status = 200, .body = OPENAI_TOOLS, .write_size = 5});
    az_llm_request req = openai_req(&f, NULL, 0);
    sink s = {0};
    az_llm_result r;
    CU_ASSERT_EQUAL(az_llm_complete(&req, &CB, &s, NULL, &r, msg), AZ_OK);
    CU_ASSERT_EQUAL(r.stop, AZ_LLM_STOP_TOOL_CALLS);
    CU_ASSERT_EQUAL_FATAL(r.n_tool_calls, 2);
    CU_ASSERT_STRING_EQUAL(r.tool_calls[0].id, "call_a");
    CU_ASSERT_STRING_EQUAL(r.tool_calls[0].name, "search");
    CU_ASSERT_STRING_EQUAL(r.tool_calls[0].arguments, "{\"q\": \"caf\xc3\xa9\"}");
    CU_ASSERT_STRING_EQUAL(r.tool_calls[1].id, "call_b");
    CU_ASSERT_STRING_EQUAL(r.tool_calls[1].name, "fetch");
    CU_ASSERT_STRING_EQUAL(r.tool_calls[1].arguments, "{\"url\": \"http://x\"}");
    CU_ASSERT_EQUAL(s.n_calls, 2); /* each reported once, complete */
    CU_ASSERT_STRING_EQUAL(s.calls[0], "call_a|search|{\"q\": \"caf\xc3\xa9\"}");
    CU_ASSERT_STRING_EQUAL(s.calls[1], "call_b|fetch|{\"url\": \"http://x\"}");
    CU_ASSERT_STRING_EQUAL(r.text, "");
    CU_ASSERT_EQUAL(r.usage.total_tokens, 30);
    CU_ASSERT_DOUBLE_EQUAL(r.usage.cost_usd, 0, 1e-12); /* unpriced model */
    az_llm_result_free(&r);
    fake_stop(&f);
}

static const char ANTHROPIC_STREAM[] =
    "event: message_start\n"
    "data: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"content\":[],\"model\":\"claude-3-5-haiku-20241022\",\"stop_reason\":null,\"usage\":{\"input_tokens\":1000,\"cache_read_input_tokens\":24,\"output_tokens\":1}}}\n\n"
    "event: content_block_start\n"
    "data: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n"
    "event: ping\ndata: {\"type\":\"ping\"}\n\n"
    "event: content_block_delta\n"
    "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Let me \xe2\x82\xac\"}}\n\n"
    "event: content_block_delta\n"
    "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"search.\"}}\n\n"
    "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n"
    "event: content_block_start\n"
    "data: {\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":\"tool_use\",\"id\":\"toolu_01\",\"name\":\"search\",\"input\":{}}}\n\n"
    "event: content_block_delta\n"
    "data: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"\"}}\n\n"
    "event: content_block_delta\n"
    "data: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"q\\\": \\\"cr\"}}\n\n"
    "event: content_block_delta\n"
    "data: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"ew\\\"}\"}}\n\n"
    "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":1}\n\n"
    "event: message_delta\n"
    "data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":1000000}}\n\n"
    "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n";

static void test_anthropic_stream(void)
{
    llm_fake f;
    CU_ASSERT_EQUAL_FATAL(fake_start(&f), 0);
    fake_script(&f, &(fake_response){.status = 200, .body = ANTHROPIC_STREAM, .write_size = 4,
                                     .write_delay_us = 50});
    static const az_llm_message convo[] = {
        {AZ_LLM_SYSTEM, "Be brief."},
        {AZ_LLM_USER, "Find things."},
        {AZ_LLM_ASSISTANT, "Searching.", PAST_CALLS, 1},
        {AZ_LLM_TOOL, "found 3", NULL, 0, "call_0"},
        {AZ_LLM_TOOL, "boom", NULL, 0, "call_1", 1},
        {AZ_LLM_SYSTEM, "Cite sources."},
    };
    az_llm_tool tool = {"search", "Search", schema()};
    az_llm_request req = {.provider = "anthropic", .base_url = f.base_url, .api_key = KEY,
                          .model = "claude-3-5-haiku-latest", .messages = convo, .n_messages = 6,
                          .tools = &tool, .n_tools = 1, .timeout_ms = 5000};
    sink s = {0};
    az_llm_result r;
    CU_ASSERT_EQUAL(az_llm_complete(&req, &CB, &s, NULL, &r, msg), AZ_OK);
    CU_ASSERT_STRING_EQUAL(r.text, "Let me \xe2\x82\xac" "search.");
    CU_ASSERT_STRING_EQUAL(s.text, r.text);
    CU_ASSERT_EQUAL(r.stop, AZ_LLM_STOP_TOOL_CALLS);
    CU_ASSERT_STRING_EQUAL(r.stop_raw, "tool_use");
    CU_ASSERT_EQUAL_FATAL(r.n_tool_calls, 1);
    CU_ASSERT_STRING_EQUAL(r.tool_calls[0].id, "toolu_01");
    CU_ASSERT_STRING_EQUAL(r.tool_calls[0].name, "search");
    CU_ASSERT_STRING_EQUAL(r.tool_calls[0].arguments, "{\"q\": \"crew\"}");
    CU_ASSERT_EQUAL(s.n_calls, 1);
    CU_ASSERT_EQUAL(r.usage.prompt_tokens, 1024);
    CU_ASSERT_EQUAL(r.usage.completion_tokens, 1000000);
    CU_ASSERT_EQUAL(r.usage.total_tokens, 1001024);
    /* Default price of claude-3-5-haiku: 0.80 in, 4.00 out per million. */
    CU_ASSERT_DOUBLE_EQUAL(r.usage.cost_usd, 1024 * 0.8 / 1e6 + 4.0, 1e-9);
    CU_ASSERT_STRING_EQUAL(r.model, "claude-3-5-haiku-20241022");
    az_llm_result_free(&r);

    fake_request *rq = last_request(&f);
    CU_ASSERT_PTR_NOT_NULL_FATAL(rq);
    char h[256];
    CU_ASSERT_STRING_EQUAL(rq->path, "/v1/messages");
    CU_ASSERT_STRING_EQUAL(fake_header(rq, "x-api-key", h, sizeof h), KEY);
    CU_ASSERT_STRING_EQUAL(fake_header(rq, "anthropic-version", h, sizeof h), "2023-06-01");
    CU_ASSERT_PTR_NULL(fake_header(rq, "authorization", h, sizeof h));
    json_t *b = json_loads(rq->body, 0, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(b);
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(b, "system")), "Be brief.\n\nCite sources.");
    CU_ASSERT_EQUAL(json_integer_value(json_object_get(b, "max_tokens")), 4096);
    CU_ASSERT_TRUE(json_is_true(json_object_get(b, "stream")));
    json_t *msgs = json_object_get(b, "messages");
    CU_ASSERT_EQUAL_FATAL(json_array_size(msgs), 3); /* user, assistant, user(tool results) */
    json_t *asst = json_array_get(msgs, 1);
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(asst, "role")), "assistant");
    json_t *blocks = json_object_get(asst, "content");
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(json_array_get(blocks, 0), "text")), "Searching.");
    json_t *tu = json_array_get(blocks, 1);
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(tu, "type")), "tool_use");
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(json_object_get(tu, "input"), "q")), "crew");
    json_t *results = json_object_get(json_array_get(msgs, 2), "content");
    CU_ASSERT_EQUAL(json_array_size(results), 2);
    json_t *tr = json_array_get(results, 1);
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(tr, "type")), "tool_result");
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(tr, "tool_use_id")), "call_1");
    CU_ASSERT_TRUE(json_is_true(json_object_get(tr, "is_error")));
    json_t *t0 = json_array_get(json_object_get(b, "tools"), 0);
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(t0, "name")), "search");
    CU_ASSERT_TRUE(json_equal(json_object_get(t0, "input_schema"), tool.parameters));
    json_decref(b);
    json_decref(tool.parameters);
    fake_stop(&f);
}

/* Runs one call against a single scripted response; fills *r (caller frees). */
static az_err run_one(const fake_response *resp, const char *provider, long timeout_ms, az_llm_result *r,
                      sink *s)
{
    llm_fake f;
    CU_ASSERT_EQUAL_FATAL(fake_start(&f), 0);
    fake_script(&f, resp);
    static const az_llm_message um[] = {{AZ_LLM_USER, "hi"}};
    snprintf(base_v1, sizeof base_v1, "%s/v1", f.base_url);
    az_llm_request req = {.provider = provider, .base_url = base_v1, .api_key = KEY, .model = "m",
                          .messages = um, .n_messages = 1, .timeout_ms = timeout_ms};
    az_err e = az_llm_complete(&req, &CB, s, NULL, r, msg);
    fake_stop(&f);
    return e;
}

static void test_anthropic_error_event(void)
{
    const char *overloaded =
        "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":5}}}\n\n"
        "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n"
        "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"par\"}}\n\n"
        "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n";
    az_llm_result r;
    sink s = {0};
    CU_ASSERT_EQUAL(run_one(&(fake_response){.status = 200, .body = overloaded}, "anthropic", 5000, &r, &s),
                    AZ_ERR_UNAVAILABLE);
    CU_ASSERT_STRING_EQUAL(r.error.type, "llm_unavailable");
    CU_ASSERT_TRUE(r.error.retryable);
    CU_ASSERT_PTR_NOT_NULL(strstr(r.error.message, "Overloaded"));
    CU_ASSERT_STRING_EQUAL(r.text, "par"); /* partial text kept */
    CU_ASSERT_EQUAL(r.usage.prompt_tokens, 5);
    az_llm_result_free(&r);

    const char *invalid =
        "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"invalid_request_error\",\"message\":\"bad\"}}\n\n";
    CU_ASSERT_EQUAL(run_one(&(fake_response){.status = 200, .body = invalid}, "anthropic", 5000, &r, &s),
                    AZ_ERR_INVALID);
    CU_ASSERT_STRING_EQUAL(r.error.type, "llm_bad_request");
    CU_ASSERT_FALSE(r.error.retryable);
    az_llm_result_free(&r);

    /* An OpenAI-compatible server's mid-stream error object. */
    const char *oai = "data: {\"error\":{\"message\":\"upstream died\",\"type\":\"server_error\"}}\n\n";
    CU_ASSERT_EQUAL(run_one(&(fake_response){.status = 200, .body = oai}, "openai", 5000, &r, &s),
                    AZ_ERR_UNAVAILABLE);
    CU_ASSERT_TRUE(r.error.retryable);
    CU_ASSERT_PTR_NOT_NULL(strstr(r.error.message, "upstream died"));
    az_llm_result_free(&r);
}

static void test_http_errors(void)
{
    az_llm_result r;
    sink s = {0};
    /* 429 with Retry-After in seconds. */
    CU_ASSERT_EQUAL(run_one(&(fake_response){.status = 429, .headers = "Retry-After: 2\r\n",
                                             .body = "{\"error\":{\"message\":\"Rate limit reached\",\"type\":\"requests\"}}"},
                            "openai", 5000, &r, &s),
                    AZ_ERR_EXHAUSTED);
    CU_ASSERT_STRING_EQUAL(r.error.type, "llm_rate_limited");
    CU_ASSERT_TRUE(r.error.retryable);
    CU_ASSERT_EQUAL(r.error.retry_after_ms, 2000);
    CU_ASSERT_EQUAL(r.error.http_status, 429);
    CU_ASSERT_PTR_NOT_NULL(strstr(r.error.message, "Rate limit reached"));
    az_llm_result_free(&r);

    /* Retry-After as an HTTP-date, and a huge one clamped. */
    char hdr[128];
    time_t t = time(NULL) + 4;
    strftime(hdr, sizeof hdr, "Retry-After: %a, %d %b %Y %H:%M:%S GMT\r\n", gmtime(&t));
    CU_ASSERT_EQUAL(run_one(&(fake_response){.status = 429, .headers = hdr, .body = "{}"}, "openai", 5000, &r, &s),
                    AZ_ERR_EXHAUSTED);
    CU_ASSERT(r.error.retry_after_ms >= 2000 && r.error.retry_after_ms <= 4000);
    az_llm_result_free(&r);
    CU_ASSERT_EQUAL(run_one(&(fake_response){.status = 429, .headers = "retry-after: 86400\r\n", .body = ""},
                            "anthropic", 5000, &r, &s),
                    AZ_ERR_EXHAUSTED);
    CU_ASSERT_EQUAL(r.error.retry_after_ms, AZ_LLM_RETRY_AFTER_MAX_MS);
    az_llm_result_free(&r);

    /* OpenAI's exhausted quota is a 429 no retry fixes. */
    CU_ASSERT_EQUAL(run_one(&(fake_response){.status = 429,
                                             .body = "{\"error\":{\"message\":\"You exceeded your current quota\",\"type\":\"insufficient_quota\",\"code\":\"insufficient_quota\"}}"},
                            "openai", 5000, &r, &s),
                    AZ_ERR_EXHAUSTED);
    CU_ASSERT_STRING_EQUAL(r.error.type, "llm_quota_exceeded");
    CU_ASSERT_FALSE(r.error.retryable);
    az_llm_result_free(&r);

    CU_ASSERT_EQUAL(run_one(&(fake_response){.status = 500, .body = "upstream exploded"}, "openai", 5000, &r, &s),
                    AZ_ERR_UNAVAILABLE);
    CU_ASSERT_STRING_EQUAL(r.error.type, "llm_unavailable");
    CU_ASSERT_TRUE(r.error.retryable);
    CU_ASSERT_PTR_NOT_NULL(strstr(r.error.message, "HTTP 500"));
    CU_ASSERT_PTR_NOT_NULL(strstr(r.error.message, "upstream exploded"));
    az_llm_result_free(&r);

    CU_ASSERT_EQUAL(run_one(&(fake_response){.status = 400,
                                             .body = "{\"error\":{\"message\":\"Invalid value for 'temperature'\",\"type\":\"invalid_request_error\"}}"},
                            "openai", 5000, &r, &s),
                    AZ_ERR_INVALID);
    CU_ASSERT_STRING_EQUAL(r.error.type, "llm_bad_request");
    CU_ASSERT_FALSE(r.error.retryable);
    CU_ASSERT_STRING_EQUAL(r.error.message, "openai: HTTP 400: Invalid value for 'temperature'");
    az_llm_result_free(&r);

    /* 401: not retryable, names the key variables, never repeats the key. */
    CU_ASSERT_EQUAL(run_one(&(fake_response){.status = 401,
                                             .body = "{\"type\":\"error\",\"error\":{\"type\":\"authentication_error\",\"message\":\"invalid x-api-key " KEY "\"}}"},
                            "anthropic", 5000, &r, &s),
                    AZ_ERR_UNAUTHENTICATED);
    CU_ASSERT_STRING_EQUAL(r.error.type, "llm_auth");
    CU_ASSERT_FALSE(r.error.retryable);
    CU_ASSERT_PTR_NOT_NULL(strstr(r.error.message, "API key"));
    CU_ASSERT_PTR_NOT_NULL(strstr(r.error.message, "ANTHROPIC_API_KEY"));
    CU_ASSERT_PTR_NOT_NULL(strstr(r.error.message, "invalid x-api-key [redacted]"));
    CU_ASSERT_PTR_NULL(strstr(r.error.message, KEY));
    az_llm_result_free(&r);
}

static void test_connection_refused(void)
{
    static const az_llm_message um[] = {{AZ_LLM_USER, "hi"}};
    char url[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/v1", fake_closed_port());
    az_llm_request req = {.base_url = url, .messages = um, .n_messages = 1, .timeout_ms = 3000};
    az_llm_result r;
    clear_env();
    CU_ASSERT_EQUAL(az_llm_complete(&req, NULL, NULL, NULL, &r, msg), AZ_ERR_UNAVAILABLE);
    CU_ASSERT_STRING_EQUAL(r.error.type, "llm_network");
    CU_ASSERT_TRUE(r.error.retryable);
    CU_ASSERT_EQUAL(r.error.http_status, 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(r.error.message, url));
    CU_ASSERT_PTR_NOT_NULL(strstr(msg, "openai"));
    az_llm_result_free(&r);
}

static size_t requests_seen(llm_fake *f)
{
    pthread_mutex_lock(&f->mu);
    size_t n = f->n_reqs;
    pthread_mutex_unlock(&f->mu);
    return n;
}

/* The outbound network policy is checked on the address connected to: a policy without
 * loopback refuses the fake on 127.0.0.1 before anything is sent; the loopback policy lets the
 * same call through; a redirect is not followed. */
static void test_network_guard(void)
{
    static const az_llm_message um[] = {{AZ_LLM_USER, "hi"}};
    az_netguard *none, *loopback;
    CU_ASSERT_EQUAL_FATAL(az_netguard_new("", &none, msg), AZ_OK);
    CU_ASSERT_EQUAL_FATAL(az_netguard_new(AZ_NETGUARD_LOOPBACK, &loopback, msg), AZ_OK);
    llm_fake f;
    CU_ASSERT_EQUAL_FATAL(fake_start(&f), 0);
    fake_script(&f, &(fake_response){.status = 200, .body = OPENAI_TEXT});
    snprintf(base_v1, sizeof base_v1, "%s/v1", f.base_url);
    az_llm_request req = {.provider = "openai", .base_url = base_v1, .api_key = KEY, .model = "m",
                          .messages = um, .n_messages = 1, .timeout_ms = 5000, .guard = none};
    az_llm_result r;
    sink s = {0};
    CU_ASSERT_EQUAL(az_llm_complete(&req, &CB, &s, NULL, &r, msg), AZ_ERR_PERMISSION);
    CU_ASSERT_STRING_EQUAL(r.error.type, "llm_address_refused");
    CU_ASSERT_FALSE(r.error.retryable);
    CU_ASSERT_EQUAL(r.error.http_status, 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(r.error.message, "connection to 127.0.0.1 refused"));
    CU_ASSERT_PTR_NOT_NULL(strstr(r.error.message, "loopback addresses are not allowed"));
    CU_ASSERT_PTR_NOT_NULL(strstr(r.error.message, "AGENTZ_ALLOW_PRIVATE_NETWORKS"));
    CU_ASSERT_PTR_NULL(strstr(r.error.message, KEY));
    CU_ASSERT_STRING_EQUAL(msg, r.error.message);
    CU_ASSERT_EQUAL(s.n_text, 0);
    CU_ASSERT_EQUAL(requests_seen(&f), 0);
    az_llm_result_free(&r);

    req.guard = loopback;
    memset(&s, 0, sizeof s);
    CU_ASSERT_EQUAL(az_llm_complete(&req, &CB, &s, NULL, &r, msg), AZ_OK);
    CU_ASSERT_EQUAL(r.error.type[0], '\0');
    CU_ASSERT_STRING_EQUAL(r.text, "h\xc3\xa9llo w\xc3\xb6rld \xf0\x9f\x98\x80 \xe6\x97\xa5\xe6\x9c\xac");
    CU_ASSERT_EQUAL(requests_seen(&f), 1);
    az_llm_result_free(&r);

    /* A redirect, even to an allowed address on the same server, is an error, not followed. */
    char loc[160];
    snprintf(loc, sizeof loc, "Location: %s/v1/chat/completions\r\n", f.base_url);
    fake_script(&f, &(fake_response){.status = 307, .headers = loc, .body = "{}"});
    fake_script(&f, &(fake_response){.status = 200, .body = OPENAI_TEXT});
    CU_ASSERT_EQUAL(az_llm_complete(&req, &CB, &s, NULL, &r, msg), AZ_ERR_INTERNAL);
    CU_ASSERT_STRING_EQUAL(r.error.type, "llm_bad_response");
    CU_ASSERT_EQUAL(r.error.http_status, 307);
    CU_ASSERT_EQUAL(requests_seen(&f), 2);
    az_llm_result_free(&r);
    fake_stop(&f);
    az_netguard_free(none);
    az_netguard_free(loopback);
}

static const char ONE_DELTA[] =
    "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"partial\"},\"finish_reason\":null}]}\n\n";

static void test_stall_times_out(void)
{
    az_llm_result r;
    sink s = {0};
    /* Headers and one delta, then silence. */
    long t0 = now_ms();
    CU_ASSERT_EQUAL(run_one(&(fake_response){.status = 200, .body = ONE_DELTA, .stall_after = (long)strlen(ONE_DELTA) - 1},
                            "openai", 600, &r, &s),
                    AZ_ERR_DEADLINE);
    long took = now_ms() - t0;
    CU_ASSERT(took >= 550 && took < 1500);
    CU_ASSERT_STRING_EQUAL(r.error.type, "llm_timeout");
    CU_ASSERT_TRUE(r.error.retryable);
    az_llm_result_free(&r);
    /* A server that accepts and never answers at all. */
    t0 = now_ms();
    CU_ASSERT_EQUAL(run_one(&(fake_response){.status = 0}, "openai", 400, &r, &s), AZ_ERR_DEADLINE);
    CU_ASSERT(now_ms() - t0 < 1300);
    az_llm_result_free(&r);
}

static void test_truncated_stream(void)
{
    az_llm_result r;
    sink s = {0};
    CU_ASSERT_EQUAL(run_one(&(fake_response){.status = 200, .body = ONE_DELTA}, "openai", 5000, &r, &s),
                    AZ_ERR_UNAVAILABLE);
    CU_ASSERT_STRING_EQUAL(r.error.type, "llm_network");
    CU_ASSERT_TRUE(r.error.retryable);
    CU_ASSERT_STRING_EQUAL(r.text, "partial");
    az_llm_result_free(&r);
    /* A server that ignores stream: true and answers with plain JSON. */
    CU_ASSERT_EQUAL(run_one(&(fake_response){.status = 200, .body = "{\"choices\":[]}"}, "openai", 5000, &r, &s),
                    AZ_ERR_INTERNAL);
    CU_ASSERT_STRING_EQUAL(r.error.type, "llm_bad_response");
    CU_ASSERT_PTR_NOT_NULL(strstr(r.error.message, "not an event stream"));
    az_llm_result_free(&r);
    /* A malformed chunk is not retried. */
    CU_ASSERT_EQUAL(run_one(&(fake_response){.status = 200, .body = "data: {not json\n\n"}, "openai", 5000, &r, &s),
                    AZ_ERR_INTERNAL);
    CU_ASSERT_STRING_EQUAL(r.error.type, "llm_bad_response");
    CU_ASSERT_FALSE(r.error.retryable);
    az_llm_result_free(&r);
}

static void test_oversized_event(void)
{
    size_t n = AZ_SSE_MAX_EVENT + 4096;
    char *body = malloc(n + 16);
    memcpy(body, "data: \"", 7);
    memset(body + 7, 'a', n);
    memcpy(body + 7 + n, "\"\n\n", 4);
    az_llm_result r;
    sink s = {0};
    CU_ASSERT_EQUAL(run_one(&(fake_response){.status = 200, .body = body}, "openai", 5000, &r, &s),
                    AZ_ERR_EXHAUSTED);
    CU_ASSERT_STRING_EQUAL(r.error.type, "llm_response_too_large");
    CU_ASSERT_FALSE(r.error.retryable);
    CU_ASSERT_PTR_NOT_NULL(strstr(r.error.message, "sse event larger than 1048576 bytes"));
    az_llm_result_free(&r);
    free(body);
}

typedef struct canceller {
    volatile int *flag;
    long at;
} canceller;

static void *cancel_later(void *arg)
{
    canceller *c = arg;
    usleep(250 * 1000);
    c->at = now_ms();
    *c->flag = 1;
    return NULL;
}

static void test_cancel_mid_stream(void)
{
    llm_fake f;
    CU_ASSERT_EQUAL_FATAL(fake_start(&f), 0);
    fake_script(&f, &(fake_response){.status = 200, .body = ONE_DELTA, .stall_after = (long)strlen(ONE_DELTA) - 1});
    static const az_llm_message um[] = {{AZ_LLM_USER, "hi"}};
    az_llm_request req = {.provider = "openai", .base_url = f.base_url, .messages = um, .n_messages = 1,
                          .timeout_ms = 10000};
    volatile int cancel = 0;
    canceller c = {&cancel, 0};
    pthread_t th;
    pthread_create(&th, NULL, cancel_later, &c);
    sink s = {0};
    az_llm_result r;
    az_err e = az_llm_complete(&req, &CB, &s, &cancel, &r, msg);
    long done = now_ms();
    pthread_join(th, NULL);
    CU_ASSERT_EQUAL(e, AZ_ERR_CANCELLED);
    CU_ASSERT(done - c.at < 300);
    CU_ASSERT_STRING_EQUAL(r.error.type, "llm_cancelled");
    CU_ASSERT_FALSE(r.error.retryable);
    az_llm_result_free(&r);
    fake_stop(&f);
}

static int stop_on_text(void *arg, const char *d, size_t n) { return 1; }

static void test_callback_abort(void)
{
    az_llm_callbacks cb = {stop_on_text, NULL, NULL};
    llm_fake f;
    CU_ASSERT_EQUAL_FATAL(fake_start(&f), 0);
    fake_script(&f, &(fake_response){.status = 200, .body = OPENAI_TEXT});
    static const az_llm_message um[] = {{AZ_LLM_USER, "hi"}};
    az_llm_request req = {.provider = "openai", .base_url = f.base_url, .messages = um, .n_messages = 1};
    az_llm_result r;
    CU_ASSERT_EQUAL(az_llm_complete(&req, &cb, NULL, NULL, &r, msg), AZ_ERR_CANCELLED);
    CU_ASSERT_STRING_EQUAL(r.error.type, "llm_cancelled");
    az_llm_result_free(&r);
    fake_stop(&f);
}

/* With debug logging on, headers are logged but the key never is. */
static void test_debug_log_redacts_key(void)
{
    char path[] = "/tmp/azllm-log-XXXXXX";
    int fd = mkstemp(path);
    CU_ASSERT_FATAL(fd >= 0);
    fflush(stderr);
    int saved = dup(2);
    dup2(fd, 2);
    az_log_set_level(AZ_LOG_DEBUG);
    az_llm_result r;
    sink s = {0};
    CU_ASSERT_EQUAL(run_one(&(fake_response){.status = 200, .body = OPENAI_TEXT}, "openai", 5000, &r, &s), AZ_OK);
    az_llm_result_free(&r);
    CU_ASSERT_EQUAL(run_one(&(fake_response){.status = 200, .body = ANTHROPIC_STREAM}, "anthropic", 5000, &r, &s),
                    AZ_OK);
    az_llm_result_free(&r);
    az_log_set_level(AZ_LOG_INFO);
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    char buf[65536] = "";
    ssize_t n = pread(fd, buf, sizeof buf - 1, 0);
    close(fd);
    unlink(path);
    CU_ASSERT_FATAL(n > 0);
    buf[n] = '\0';
    CU_ASSERT_PTR_NOT_NULL(strstr(buf, "Authorization: [redacted]"));
    CU_ASSERT_PTR_NOT_NULL(strstr(buf, "x-api-key: [redacted]"));
    CU_ASSERT_PTR_NOT_NULL(strstr(buf, "HTTP/1.1 200 OK"));
    CU_ASSERT_PTR_NULL(strstr(buf, KEY));
}

int main(void)
{
    clear_env();
    if (CU_initialize_registry() != CUE_SUCCESS) return 1;
    CU_pSuite s = CU_add_suite("llm_units", NULL, NULL);
    if (!s) return 1;
    CU_add_test(s, "sse grammar at every split", test_sse_grammar);
    CU_add_test(s, "sse pending and size limit", test_sse_pending_and_limits);
    CU_add_test(s, "price table", test_prices);
    CU_add_test(s, "config defaults from env", test_config_defaults);
    CU_add_test(s, "validation and redaction", test_validation_and_redaction);
    CU_pSuite n = CU_add_suite("llm_http", NULL, NULL);
    if (!n) return 1;
    CU_add_test(n, "openai text stream in tiny writes", test_openai_text_stream);
    CU_add_test(n, "openai parallel tool calls", test_openai_parallel_tool_calls);
    CU_add_test(n, "anthropic text and tool_use", test_anthropic_stream);
    CU_add_test(n, "provider error events", test_anthropic_error_event);
    CU_add_test(n, "http errors and retry-after", test_http_errors);
    CU_add_test(n, "connection refused", test_connection_refused);
    CU_add_test(n, "outbound network policy", test_network_guard);
    CU_add_test(n, "stalled server times out", test_stall_times_out);
    CU_add_test(n, "truncated and malformed streams", test_truncated_stream);
    CU_add_test(n, "oversized event", test_oversized_event);
    CU_add_test(n, "cancel mid-stream", test_cancel_mid_stream);
    CU_add_test(n, "callback abort", test_callback_abort);
    CU_add_test(n, "debug log redacts the key", test_debug_log_redacts_key);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    unsigned failures = CU_get_number_of_failures() + CU_get_number_of_tests_failed() +
                        CU_get_number_of_suites_failed();
    CU_cleanup_registry();
    curl_global_cleanup();
    return failures ? 1 : 0;
}
