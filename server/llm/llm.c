/* LLM calls: defaults from the environment, request validation, provider dispatch by table,
 * and the libcurl easy handle that streams a response through the SSE parser into the
 * provider's event handler; finish turns transport, HTTP and stream outcomes into one result. */
#include "llm.h"

#include <ctype.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "core/log.h"
#include "llm/anthropic.h"
#include "llm/openai.h"
#include "llm/provider.h"
#include "system/prom.h"

#define ERR_BODY_MAX (64 * 1024) /* of a non-2xx body we keep for its message */

static const az_llm_provider *const PROVIDERS[] = {&az_llm_openai, &az_llm_anthropic};

struct az_llm_call {
    CURL *easy;
    struct curl_slist *headers;
    char *url, *body;
    char *key; /* copy, only to scrub it from messages; wiped on free */
    const az_llm_provider *prov;
    const az_llm_prices *prices;
    char model[128]; /* requested */
    az_sse *sse;
    az_llm_stream st;
    size_t events; /* SSE events parsed */
    long status;
    long retry_after_ms;
    az_llm_buf err_body;
    size_t received, max_response;
    int too_large;
    int cancelled; /* az_llm_complete saw *cancel */
    az_netguard_curl ng;      /* the outbound policy's record; ng.guard NULL = connect anywhere */
    az_err parse_err;
    char parse_msg[AZ_MSG_MAX];
    char errbuf[CURL_ERROR_SIZE];
    struct timespec start; /* for agentz_llm_request_duration_seconds */
    int inflight;          /* counted in agentz_worker_inflight_calls until freed */
    int observed;          /* az_llm_call_finish counted the call */
};

/* ---- configuration ---- */

static const char *env(const char *name)
{
    const char *v = name ? getenv(name) : NULL;
    return v && *v ? v : NULL;
}

static const char *nonempty(const char *s) { return s && *s ? s : NULL; }

/* AGENTZ_LLM_PROVIDER, else anthropic when its key is the only thing configured. */
static const char *default_provider(void)
{
    const char *p = env("AGENTZ_LLM_PROVIDER");
    if (p) return p;
    if (env("ANTHROPIC_API_KEY") && !env("AGENTZ_LLM_API_KEY") && !env("OPENAI_API_KEY") &&
        !env("AGENTZ_LLM_BASE_URL") && !env("OPENAI_BASE_URL"))
        return "anthropic";
    return "openai";
}

az_err az_llm_resolve(const az_llm_request *req, az_llm_endpoint *out, char *msg)
{
    *out = (az_llm_endpoint){0};
    const char *def = default_provider();
    const char *name = nonempty(req->provider) ? req->provider : def;
    const az_llm_provider *prov = NULL;
    for (size_t i = 0; i < sizeof PROVIDERS / sizeof PROVIDERS[0]; i++)
        if (strcasecmp(PROVIDERS[i]->name, name) == 0) prov = PROVIDERS[i];
    if (!prov)
        return az_fail(msg, AZ_ERR_INVALID, "llm.provider: unknown provider \"%.64s\" (want openai or anthropic)%s",
                       name, nonempty(req->provider) ? "" : " (from AGENTZ_LLM_PROVIDER)");
    /* AGENTZ_LLM_* describe the server's default provider; an agent that picks the other
     * provider gets only that provider's conventional variables. */
    int is_default = strcasecmp(prov->name, def) == 0;
    const char *base = nonempty(req->base_url);
    if (!base && is_default) base = env("AGENTZ_LLM_BASE_URL");
    if (!base) base = env(prov->base_env);
    const char *key = nonempty(req->api_key);
    if (!key && is_default) key = env("AGENTZ_LLM_API_KEY");
    if (!key) key = env(prov->key_env);
    const char *model = nonempty(req->model);
    if (!model && is_default) model = env("AGENTZ_LLM_MODEL");
    if (!model) model = prov->default_model;
    if (!base) {
        /* The public endpoint is useless without a key: say what to set instead of a 401. */
        if (!key) {
            if (is_default)
                return az_fail(msg, AZ_ERR_PRECONDITION,
                               "no LLM provider configured: set AGENTZ_LLM_API_KEY (or %s) or give "
                               "the agent llm.base_url, e.g. http://127.0.0.1:11434/v1 for Ollama",
                               prov->key_env);
            return az_fail(msg, AZ_ERR_PRECONDITION,
                           "no LLM provider configured for %s: set %s or give the agent "
                           "llm.api_key_secret or llm.base_url",
                           prov->name, prov->key_env);
        }
        base = prov->default_base_url;
    }
    if (strncasecmp(base, "http://", 7) != 0 && strncasecmp(base, "https://", 8) != 0)
        return az_fail(msg, AZ_ERR_INVALID, "llm.base_url: want an http:// or https:// URL, got \"%.100s\"",
                       base);
    /* These go into header lines and the request line: no CR/LF smuggling. The key itself is
     * never quoted back. */
    for (const char *k = key; k && *k; k++)
        if ((unsigned char)*k < 0x20 || *k == 0x7f)
            return az_fail(msg, AZ_ERR_INVALID, "llm api key contains control characters");
    for (const char *b = base; *b; b++)
        if ((unsigned char)*b <= 0x20 || *b == 0x7f)
            return az_fail(msg, AZ_ERR_INVALID, "llm.base_url: contains spaces or control characters");
    *out = (az_llm_endpoint){prov->name, base, key, model};
    return AZ_OK;
}

static const az_llm_provider *provider_named(const char *name)
{
    for (size_t i = 0; i < sizeof PROVIDERS / sizeof PROVIDERS[0]; i++)
        if (strcmp(PROVIDERS[i]->name, name) == 0) return PROVIDERS[i];
    return NULL;
}

/* Checks what the providers' builders assume. */
static az_err validate(const az_llm_request *req, char *msg)
{
    if (req->n_messages == 0 || !req->messages)
        return az_fail(msg, AZ_ERR_INVALID, "messages: at least one message is required");
    for (size_t i = 0; i < req->n_messages; i++) {
        const az_llm_message *m = &req->messages[i];
        if ((unsigned)m->role > AZ_LLM_TOOL)
            return az_fail(msg, AZ_ERR_INVALID, "messages[%zu].role: unknown role %d", i, (int)m->role);
        if (m->role == AZ_LLM_TOOL && !nonempty(m->tool_call_id))
            return az_fail(msg, AZ_ERR_INVALID, "messages[%zu].tool_call_id is required", i);
        if (m->n_tool_calls && (m->role != AZ_LLM_ASSISTANT || !m->tool_calls))
            return az_fail(msg, AZ_ERR_INVALID, "messages[%zu].tool_calls: only assistant messages have them", i);
        for (size_t j = 0; j < m->n_tool_calls; j++)
            if (!nonempty(m->tool_calls[j].id) || !nonempty(m->tool_calls[j].name))
                return az_fail(msg, AZ_ERR_INVALID, "messages[%zu].tool_calls[%zu]: id and name are required", i, j);
    }
    if (req->n_tools && !req->tools) return az_fail(msg, AZ_ERR_INVALID, "tools: missing");
    for (size_t i = 0; i < req->n_tools; i++) {
        if (!nonempty(req->tools[i].name))
            return az_fail(msg, AZ_ERR_INVALID, "tools[%zu].name is required", i);
        if (req->tools[i].parameters && !json_is_object(req->tools[i].parameters))
            return az_fail(msg, AZ_ERR_INVALID, "tools[%zu].parameters: want a JSON Schema object", i);
    }
    if (req->timeout_ms < 0) return az_fail(msg, AZ_ERR_INVALID, "timeout: must not be negative");
    if (req->max_tokens < 0) return az_fail(msg, AZ_ERR_INVALID, "max_tokens: must not be negative");
    return AZ_OK;
}

/* ---- redaction ---- */

static const char *const SECRET_HEADERS[] = {"authorization", "proxy-authorization", "x-api-key",
                                             "api-key"};

void az_llm_redact_header(const char *line, size_t len, char *out, size_t n)
{
    if (n == 0) return;
    while (len > 0 && (line[len - 1] == '\r' || line[len - 1] == '\n')) len--;
    const char *colon = memchr(line, ':', len);
    if (colon) {
        size_t name_len = (size_t)(colon - line);
        for (size_t i = 0; i < sizeof SECRET_HEADERS / sizeof SECRET_HEADERS[0]; i++)
            if (strlen(SECRET_HEADERS[i]) == name_len && strncasecmp(line, SECRET_HEADERS[i], name_len) == 0) {
                snprintf(out, n, "%.*s: [redacted]", (int)name_len, line);
                return;
            }
    }
    snprintf(out, n, "%.*s", (int)len, line);
}

/* Replaces every occurrence of key in s (NUL-terminated, size n) by "[redacted]": a provider
 * may echo the key in an error message. */
static void scrub(char *s, size_t n, const char *key)
{
    if (!key || strlen(key) < 4) return;
    static const char mark[] = "[redacted]";
    size_t kl = strlen(key), ml = sizeof mark - 1;
    char *from = s, *hit;
    while ((hit = strstr(from, key))) {
        size_t tail = strlen(hit + kl);
        size_t room = n - 1 - (size_t)(hit - s); /* bytes from hit to the last usable one */
        if (room < ml) {
            memcpy(hit, mark, room);
            hit[room] = '\0';
            return;
        }
        size_t keep = tail < room - ml ? tail : room - ml;
        memmove(hit + ml, hit + kl, keep);
        memcpy(hit, mark, ml);
        hit[ml + keep] = '\0';
        from = hit + ml;
    }
}

static int debug_cb(CURL *h, curl_infotype type, char *data, size_t size, void *arg)
{
    if (type != CURLINFO_HEADER_OUT && type != CURLINFO_HEADER_IN) return 0;
    const char *dir = type == CURLINFO_HEADER_OUT ? ">" : "<";
    while (size > 0) {
        char *nl = memchr(data, '\n', size);
        size_t n = nl ? (size_t)(nl - data) + 1 : size;
        char line[512];
        az_llm_redact_header(data, n, line, sizeof line);
        if (line[0]) az_debug("llm http %s %s", dir, line);
        data += n;
        size -= n;
    }
    return 0;
}

/* ---- transfer callbacks ---- */

static int is_2xx(long status) { return status >= 200 && status < 300; }

static az_err on_event(void *arg, const az_sse_event *ev, char *msg)
{
    az_llm_call *c = arg;
    c->events++;
    return c->prov->event(&c->st, ev, msg);
}

static size_t write_cb(char *ptr, size_t size, size_t nmemb, void *arg)
{
    az_llm_call *c = arg;
    size_t n = size * nmemb;
    c->received += n;
    if (c->received > c->max_response) {
        c->too_large = 1;
        return 0; /* CURLE_WRITE_ERROR */
    }
    if (!is_2xx(c->status)) {
        size_t room = ERR_BODY_MAX - c->err_body.len;
        if (n && room) az_llm_buf_add(&c->err_body, ptr, n < room ? n : room, NULL);
        return n;
    }
    if (c->parse_err) return 0;
    az_err e = az_sse_feed(c->sse, ptr, n, c->parse_msg);
    if (e) {
        c->parse_err = e;
        return 0;
    }
    return n;
}

static long clamp_ms(double ms)
{
    if (ms < 0) return 0;
    return ms > AZ_LLM_RETRY_AFTER_MAX_MS ? AZ_LLM_RETRY_AFTER_MAX_MS : (long)ms;
}

/* Retry-After: delay-seconds or an HTTP-date. */
static long parse_retry_after(const char *v)
{
    char *end;
    double secs = strtod(v, &end);
    if (end != v && (*end == '\0' || isspace((unsigned char)*end))) return clamp_ms(secs * 1000);
    time_t t = curl_getdate(v, NULL);
    if (t < 0) return 0;
    return clamp_ms(difftime(t, time(NULL)) * 1000);
}

static size_t header_cb(char *buf, size_t size, size_t nitems, void *arg)
{
    az_llm_call *c = arg;
    size_t n = size * nitems;
    char line[256];
    size_t len = n < sizeof line - 1 ? n : sizeof line - 1;
    memcpy(line, buf, len);
    line[len] = '\0';
    line[strcspn(line, "\r\n")] = '\0';
    if (strncmp(line, "HTTP/", 5) == 0) {
        /* A new status line (after 100 Continue, say) starts a new response. */
        long st = 0;
        if (sscanf(line, "HTTP/%*s %ld", &st) == 1) c->status = st;
        c->retry_after_ms = 0;
        return n;
    }
    char *colon = strchr(line, ':');
    if (!colon) return n;
    *colon = '\0';
    char *v = colon + 1;
    while (*v == ' ' || *v == '\t') v++;
    if (strcasecmp(line, "retry-after-ms") == 0) {
        c->retry_after_ms = clamp_ms(strtod(v, NULL));
    } else if (strcasecmp(line, "retry-after") == 0 && c->retry_after_ms == 0) {
        c->retry_after_ms = parse_retry_after(v);
    }
    return n;
}

static int xferinfo_cb(void *arg, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal,
                       curl_off_t ulnow)
{
    az_llm_call *c = arg;
    if (c->st.cb && c->st.cb->on_progress && c->st.cb->on_progress(c->st.arg, c->received)) {
        c->st.aborted = 1;
        return 1;
    }
    return 0;
}

/* ---- call ---- */

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static void curl_init(void) { curl_global_init(CURL_GLOBAL_DEFAULT); }

az_err az_llm_call_new(const az_llm_request *req, const az_llm_callbacks *cb, void *arg,
                       az_llm_call **out, char *msg)
{
    *out = NULL;
    az_llm_endpoint ep;
    az_err e = az_llm_resolve(req, &ep, msg);
    if (e) return e;
    if ((e = validate(req, msg))) return e;
    pthread_once(&curl_once, curl_init);
    az_llm_call *c = calloc(1, sizeof *c);
    if (!c) return az_fail(msg, AZ_ERR_NOMEM, "cannot allocate llm call");
    c->prov = provider_named(ep.provider);
    c->prices = req->prices ? req->prices : az_llm_prices_default();
    snprintf(c->model, sizeof c->model, "%s", ep.model);
    c->st.cb = cb;
    c->st.arg = arg;
    c->max_response = req->max_response_bytes ? req->max_response_bytes : AZ_LLM_MAX_RESPONSE_DEFAULT;
    long timeout = req->timeout_ms > 0 ? req->timeout_ms : AZ_LLM_TIMEOUT_MS_DEFAULT;
    if (ep.api_key && !(c->key = strdup(ep.api_key))) {
        e = az_fail(msg, AZ_ERR_NOMEM, "cannot allocate llm call");
        goto fail;
    }
    if ((e = c->prov->build(req, &ep, &c->url, &c->headers, &c->body, msg))) goto fail;
    if ((e = az_sse_new(AZ_SSE_MAX_EVENT, on_event, c, &c->sse, msg))) goto fail;
    static const char *const COMMON[] = {"Content-Type: application/json",
                                         "Accept: text/event-stream",
                                         "Expect:"}; /* no 100-continue round trip */
    for (size_t i = 0; i < sizeof COMMON / sizeof COMMON[0]; i++) {
        struct curl_slist *l = curl_slist_append(c->headers, COMMON[i]);
        if (!l) {
            e = az_fail(msg, AZ_ERR_NOMEM, "cannot build llm headers");
            goto fail;
        }
        c->headers = l;
    }
    if (!(c->easy = curl_easy_init())) {
        e = az_fail(msg, AZ_ERR_NOMEM, "cannot create curl handle");
        goto fail;
    }
    CURL *h = c->easy;
    CURLcode cc = CURLE_OK;
#define SET(opt, val) \
    if (!cc) cc = curl_easy_setopt(h, opt, val)
    SET(CURLOPT_URL, c->url);
    SET(CURLOPT_PROTOCOLS_STR, "http,https");
    /* Provider APIs do not redirect; following one would also leave the configured endpoint. */
    SET(CURLOPT_FOLLOWLOCATION, 0L);
    SET(CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
    SET(CURLOPT_POST, 1L);
    SET(CURLOPT_POSTFIELDS, c->body);
    SET(CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)strlen(c->body));
    SET(CURLOPT_HTTPHEADER, c->headers);
    SET(CURLOPT_USERAGENT, "agentz/" AZ_VERSION);
    SET(CURLOPT_WRITEFUNCTION, write_cb);
    SET(CURLOPT_WRITEDATA, c);
    SET(CURLOPT_HEADERFUNCTION, header_cb);
    SET(CURLOPT_HEADERDATA, c);
    SET(CURLOPT_NOPROGRESS, 0L);
    SET(CURLOPT_XFERINFOFUNCTION, xferinfo_cb);
    SET(CURLOPT_XFERINFODATA, c);
    SET(CURLOPT_NOSIGNAL, 1L);
    SET(CURLOPT_TIMEOUT_MS, timeout);
    SET(CURLOPT_CONNECTTIMEOUT_MS, timeout < AZ_LLM_CONNECT_TIMEOUT_MS ? timeout : AZ_LLM_CONNECT_TIMEOUT_MS);
    SET(CURLOPT_TCP_KEEPALIVE, 1L);
    SET(CURLOPT_ERRORBUFFER, c->errbuf);
    SET(CURLOPT_PRIVATE, c);
    /* Checked on the address curl is about to connect to (az_netguard_curl_use says why). */
    if (req->guard) {
        c->ng.guard = req->guard;
        if (!cc) cc = az_netguard_curl_use(h, &c->ng);
    }
    if (az_log_enabled(AZ_LOG_DEBUG)) {
        SET(CURLOPT_DEBUGFUNCTION, debug_cb);
        SET(CURLOPT_VERBOSE, 1L);
    }
#undef SET
    if (cc) {
        e = az_fail(msg, AZ_ERR_INTERNAL, "cannot configure curl: %s", curl_easy_strerror(cc));
        goto fail;
    }
    az_debug("llm call provider=%s model=%s url=%s body_bytes=%zu", ep.provider, ep.model, c->url,
             strlen(c->body));
    clock_gettime(CLOCK_MONOTONIC, &c->start);
    c->inflight = 1;
    az_prom_llm_inflight(1);
    *out = c;
    return AZ_OK;
fail:
    az_llm_call_free(c);
    return e;
}

CURL *az_llm_call_easy(az_llm_call *call) { return call->easy; }

void az_llm_call_free(az_llm_call *c)
{
    if (!c) return;
    if (c->inflight) az_prom_llm_inflight(-1);
    if (c->easy) curl_easy_cleanup(c->easy);
    curl_slist_free_all(c->headers);
    free(c->url);
    free(c->body);
    if (c->key) {
        memset(c->key, 0, strlen(c->key));
        free(c->key);
    }
    az_sse_free(c->sse);
    az_llm_buf_free(&c->st.text);
    for (size_t i = 0; i < AZ_LLM_MAX_TOOL_CALLS; i++) {
        az_llm_buf_free(&c->st.calls[i].id);
        az_llm_buf_free(&c->st.calls[i].name);
        az_llm_buf_free(&c->st.calls[i].args);
    }
    az_llm_buf_free(&c->err_body);
    free(c);
}

/* ---- outcome ---- */

static const struct {
    long lo, hi;
    const char *type;
} STATUS_CLASSES[] = {
    {408, 408, "llm_timeout"},
    {409, 409, "llm_unavailable"}, /* conflict: a concurrent-request lock, try again */
    {429, 429, "llm_rate_limited"},
    {401, 401, "llm_auth"},
    {403, 403, "llm_permission"},
    {404, 404, "llm_not_found"},
    {400, 499, "llm_bad_request"},
    {500, 599, "llm_unavailable"},
    {0, 999, "llm_bad_response"}, /* 1xx/3xx as final: redirects are not followed */
};

static const struct {
    CURLcode code;
    const char *type;
} CURL_CLASSES[] = {
    {CURLE_OPERATION_TIMEDOUT, "llm_timeout"},
    {CURLE_ABORTED_BY_CALLBACK, "llm_cancelled"},
    {CURLE_UNSUPPORTED_PROTOCOL, "llm_bad_request"},
    {CURLE_URL_MALFORMAT, "llm_bad_request"},
    {CURLE_PEER_FAILED_VERIFICATION, "llm_tls"},
    {CURLE_SSL_CERTPROBLEM, "llm_tls"},
    {CURLE_SSL_CACERT_BADFILE, "llm_tls"},
    /* everything else (refused, reset, DNS, TLS handshake, truncated): llm_network */
};

static const struct {
    const char *raw;
    az_llm_stop stop;
} STOPS[] = {
    {"stop", AZ_LLM_STOP_END},          {"end_turn", AZ_LLM_STOP_END},
    {"stop_sequence", AZ_LLM_STOP_END}, {"length", AZ_LLM_STOP_LENGTH},
    {"max_tokens", AZ_LLM_STOP_LENGTH}, {"tool_calls", AZ_LLM_STOP_TOOL_CALLS},
    {"tool_use", AZ_LLM_STOP_TOOL_CALLS}, {"function_call", AZ_LLM_STOP_TOOL_CALLS},
    {"content_filter", AZ_LLM_STOP_FILTER}, {"refusal", AZ_LLM_STOP_FILTER},
};

/* Hints appended to an HTTP error message, by class. */
static const struct {
    const char *type;
    const char *hint;
} HINTS[] = {
    {"llm_auth", "the API key was rejected; check AGENTZ_LLM_API_KEY / %s or the agent's llm.api_key_secret"},
    {"llm_permission", "the API key may not use this model or endpoint (%s)"},
    {"llm_not_found", "check the agent's llm.model and llm.base_url (%s)"},
};

/* The provider's message from an error body: {"error": {"message": ...}}, {"error": "..."},
 * {"message": ...}, else the body text itself; the provider's error type into *ptype. */
static void body_message(const az_llm_buf *b, char *out, size_t n, char *ptype, size_t tn)
{
    out[0] = ptype[0] = '\0';
    if (!b->len) return;
    json_t *root = json_loadb(b->p, b->len, 0, NULL);
    json_t *err = json_object_get(root, "error");
    const char *m = json_is_string(err) ? json_string_value(err) : az_llm_json_str(err, "message");
    if (!m) m = az_llm_json_str(root, "message");
    const char *t = az_llm_json_str(err, "code");
    if (!t || !az_llm_provider_error_class(t)) t = az_llm_json_str(err, "type");
    if (t) snprintf(ptype, tn, "%s", t);
    if (m) snprintf(out, n, "%s", m);
    else snprintf(out, n, "%.*s", (int)(b->len < 300 ? b->len : 300), b->p);
    json_decref(root);
    for (char *p = out; *p; p++)
        if ((unsigned char)*p < 0x20) *p = ' ';
}

static void http_error(az_llm_call *c, az_llm_error *err)
{
    const char *type = "llm_bad_response";
    for (size_t i = 0; i < sizeof STATUS_CLASSES / sizeof STATUS_CLASSES[0]; i++)
        if (c->status >= STATUS_CLASSES[i].lo && c->status <= STATUS_CLASSES[i].hi) {
            type = STATUS_CLASSES[i].type;
            break;
        }
    char pm[300], ptype[64];
    body_message(&c->err_body, pm, sizeof pm, ptype, sizeof ptype);
    /* A 429 for an exhausted quota will not pass by waiting. */
    const char *refined = az_llm_provider_error_class(ptype);
    if (refined && strcmp(refined, "llm_quota_exceeded") == 0) type = refined;
    char hint[200] = "";
    for (size_t i = 0; i < sizeof HINTS / sizeof HINTS[0]; i++)
        if (strcmp(HINTS[i].type, type) == 0) {
            char h[160];
            snprintf(h, sizeof h, HINTS[i].hint, c->prov->key_env);
            snprintf(hint, sizeof hint, " (%s)", h);
        }
    az_llm_error_set(err, type, "%s: HTTP %ld%s: %s", c->prov->name, c->status, hint,
                     pm[0] ? pm : "(empty body)");
    err->retry_after_ms = c->retry_after_ms;
}


/* The guard refused every address the host resolved to. */
static void refused_error(az_llm_call *c, az_llm_error *err)
{
    if (c->ng.refused_range)
        az_llm_error_set(err, "llm_address_refused",
                         "%s: %s: connection to %s refused: %s addresses are not allowed by the "
                         "outbound network policy (allow them with AGENTZ_ALLOW_PRIVATE_NETWORKS)",
                         c->prov->name, c->url, c->ng.refused_addr, c->ng.refused_range);
    else
        az_llm_error_set(err, "llm_address_refused",
                         "%s: %s: connection to %s refused by the outbound network policy "
                         "(AGENTZ_ALLOW_PRIVATE_NETWORKS)",
                         c->prov->name, c->url, c->ng.refused_addr);
}

static void curl_error(az_llm_call *c, CURLcode code, az_llm_error *err)
{
    const char *type = "llm_network";
    for (size_t i = 0; i < sizeof CURL_CLASSES / sizeof CURL_CLASSES[0]; i++)
        if (CURL_CLASSES[i].code == code) type = CURL_CLASSES[i].type;
    az_llm_error_set(err, type, "%s: %s: %s", c->prov->name, c->url,
                     c->errbuf[0] ? c->errbuf : curl_easy_strerror(code));
}

/* Decides the outcome; err->type stays empty on success. */
static void classify(az_llm_call *c, CURLcode code, az_llm_error *err)
{
    err->http_status = (int)c->status;
    if (c->cancelled || c->st.aborted || code == CURLE_ABORTED_BY_CALLBACK)
        az_llm_error_set(err, "llm_cancelled", "%s: call cancelled", c->prov->name);
    else if (c->too_large)
        az_llm_error_set(err, "llm_response_too_large", "%s: response larger than %zu bytes",
                         c->prov->name, c->max_response);
    else if (c->status && !is_2xx(c->status))
        http_error(c, err);
    else if (c->st.error.type[0]) {
        *err = c->st.error;
        err->http_status = (int)c->status;
    } else if (c->parse_err)
        az_llm_error_set(err, c->parse_err == AZ_ERR_EXHAUSTED ? "llm_response_too_large" : "llm_bad_response",
                         "%s: bad event stream: %s", c->prov->name, c->parse_msg);
    else if (c->ng.refused && !c->ng.opened && code == CURLE_COULDNT_CONNECT)
        refused_error(c, err);
    else if (code != CURLE_OK)
        curl_error(c, code, err);
    else if (!c->st.done && !c->st.stop_raw[0])
    {
        /* Closed before [DONE] / message_stop and before any stop reason: cut off, unless what
         * came was no event stream at all (a JSON body from a server ignoring stream: true). */
        if (c->events == 0 && c->received > 0)
            az_llm_error_set(err, "llm_bad_response", "%s: response is not an event stream (%zu bytes)",
                             c->prov->name, c->received);
        else
            az_llm_error_set(err, "llm_network",
                             "%s: stream ended before the response was complete (%zu bytes received)",
                             c->prov->name, c->received);
    }
    if (err->type[0]) scrub(err->message, sizeof err->message, c->key);
}

static char *take(az_llm_buf *b)
{
    char *p = b->p ? b->p : strdup("");
    *b = (az_llm_buf){0};
    return p;
}

az_err az_llm_call_finish(az_llm_call *c, CURLcode code, az_llm_result *out)
{
    *out = (az_llm_result){0};
    classify(c, code, &out->error);
    int ok = out->error.type[0] == '\0';
    /* Calls the model finished but the stream did not announce (no [DONE]): report now. */
    for (size_t i = 0; ok && i < c->st.n_calls; i++) {
        char m[AZ_MSG_MAX];
        if (az_llm_stream_report_call(&c->st, i, m)) {
            az_llm_error_set(&out->error, "llm_cancelled", "%s: %s", c->prov->name, m);
            ok = 0;
        }
    }
    out->text_len = c->st.text.len;
    out->text = take(&c->st.text);
    size_t n = 0;
    for (size_t i = 0; i < c->st.n_calls; i++) n += c->st.calls[i].reported;
    out->tool_calls = n ? calloc(n, sizeof *out->tool_calls) : NULL;
    for (size_t i = 0, k = 0; out->tool_calls && i < c->st.n_calls; i++) {
        az_llm_pending_call *pc = &c->st.calls[i];
        if (!pc->reported) continue;
        out->tool_calls[k++] = (az_llm_tool_call){take(&pc->id), take(&pc->name), take(&pc->args)};
        out->n_tool_calls = k;
    }
    snprintf(out->stop_raw, sizeof out->stop_raw, "%s", c->st.stop_raw);
    for (size_t i = 0; i < sizeof STOPS / sizeof STOPS[0]; i++)
        if (strcmp(STOPS[i].raw, out->stop_raw) == 0) out->stop = STOPS[i].stop;
    snprintf(out->model, sizeof out->model, "%s", c->st.model[0] ? c->st.model : c->model);
    az_llm_usage *u = &out->usage;
    u->prompt_tokens = c->st.prompt_tokens;
    u->completion_tokens = c->st.completion_tokens;
    u->total_tokens = c->st.total_tokens ? c->st.total_tokens : u->prompt_tokens + u->completion_tokens;
    /* The reported model is usually a dated variant; the requested name may be the one priced. */
    double in, o;
    const char *priced = az_llm_prices_lookup(c->prices, out->model, &in, &o) ? out->model : c->model;
    u->cost_usd = az_llm_prices_cost(c->prices, priced, u->prompt_tokens, u->completion_tokens);
    if (!out->text || (n && !out->tool_calls))
        az_llm_error_set(&out->error, "llm_bad_response", "%s: out of memory", c->prov->name);
    if (out->error.type[0])
        az_debug("llm call failed provider=%s model=%s type=%s: %s", c->prov->name, out->model,
                 out->error.type, out->error.message);
    if (!c->observed) {
        c->observed = 1;
        struct timespec now;
        clock_gettime(CLOCK_MONOTONIC, &now);
        int64_t us = (int64_t)(now.tv_sec - c->start.tv_sec) * 1000000 + (now.tv_nsec - c->start.tv_nsec) / 1000;
        az_prom_llm_call(c->prov->name, us, u->prompt_tokens, u->completion_tokens, u->cost_usd,
                         out->error.type[0] && strcmp(out->error.type, "llm_cancelled") != 0);
    }
    return out->error.type[0] ? az_llm_error_code(out->error.type) : AZ_OK;
}

void az_llm_result_free(az_llm_result *r)
{
    if (!r) return;
    free(r->text);
    for (size_t i = 0; i < r->n_tool_calls; i++) {
        free(r->tool_calls[i].id);
        free(r->tool_calls[i].name);
        free(r->tool_calls[i].arguments);
    }
    free(r->tool_calls);
    *r = (az_llm_result){0};
}

/* ---- blocking convenience ---- */

static const struct {
    az_err code;
    const char *type;
} SETUP_CLASSES[] = {
    {AZ_ERR_PRECONDITION, "llm_not_configured"},
    {AZ_ERR_INVALID, "llm_bad_request"},
};

az_err az_llm_complete(const az_llm_request *req, const az_llm_callbacks *cb, void *arg,
                       volatile int *cancel, az_llm_result *out, char *msg)
{
    *out = (az_llm_result){0};
    az_llm_call *c;
    az_err e = az_llm_call_new(req, cb, arg, &c, msg);
    if (e) {
        const char *type = "llm_bad_request";
        for (size_t i = 0; i < sizeof SETUP_CLASSES / sizeof SETUP_CLASSES[0]; i++)
            if (SETUP_CLASSES[i].code == e) type = SETUP_CLASSES[i].type;
        az_llm_error_set(&out->error, type, "%s", msg ? msg : az_err_name(e));
        out->text = strdup("");
        return e;
    }
    CURLM *m = curl_multi_init();
    CURLcode result = CURLE_OK;
    if (!m || curl_multi_add_handle(m, c->easy) != CURLM_OK) {
        if (m) curl_multi_cleanup(m);
        az_llm_call_free(c);
        az_llm_error_set(&out->error, "llm_network", "cannot create curl multi handle");
        out->text = strdup("");
        return az_fail(msg, AZ_ERR_NOMEM, "cannot create curl multi handle");
    }
    for (;;) {
        if (cancel && *cancel) {
            c->cancelled = 1;
            result = CURLE_ABORTED_BY_CALLBACK;
            break;
        }
        int running = 0, done = 0, queued;
        CURLMcode mc = curl_multi_perform(m, &running);
        CURLMsg *cm;
        while ((cm = curl_multi_info_read(m, &queued)))
            if (cm->msg == CURLMSG_DONE) {
                result = cm->data.result;
                done = 1;
            }
        if (done) break;
        if (mc == CURLM_OK) mc = curl_multi_poll(m, NULL, 0, 100, NULL);
        if (mc != CURLM_OK) {
            result = CURLE_RECV_ERROR;
            snprintf(c->errbuf, sizeof c->errbuf, "curl multi: %s", curl_multi_strerror(mc));
            break;
        }
    }
    curl_multi_remove_handle(m, c->easy);
    curl_multi_cleanup(m);
    e = az_llm_call_finish(c, result, out);
    az_llm_call_free(c);
    if (e) az_fail(msg, e, "%s", out->error.message);
    return e;
}
