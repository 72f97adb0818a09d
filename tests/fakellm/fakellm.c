/* The scripted fake LLM provider (fakellm.h): an HTTP/1.1 server on one epoll thread with a
 * timer heap, so that thousands of slow streamed responses cost a few hundred bytes each and no
 * thread. Responses are planned in full when a request arrives (a list of byte segments, each
 * sent after its delay) and then paced out by timers. */
#include "fakellm.h"

#include <arpa/inet.h>
#include <errno.h>
#include <jansson.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_HEADER_BYTES (64 * 1024)
#define MAX_BODY_BYTES (16 * 1024 * 1024)
#define MAX_LOG 4096      /* request bodies kept (fakellm.h promises the last 4096) */
#define MAX_MODELS 256    /* distinct model names counted; later ones count only in the total */
#define MAX_RULES 1024    /* beyond this the oldest rule is dropped */
#define MAX_EVENTS 512

/* ---- small growable byte buffer ---- */

typedef struct buf {
    char *p;
    size_t len, cap;
} buf;

static int buf_add(buf *b, const void *s, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n + 1) cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) return -1;
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
    return 0;
}

static int buf_printf(buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int buf_printf(buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char tmp[1024];
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n < 0) return -1;
    if ((size_t)n < sizeof tmp) return buf_add(b, tmp, (size_t)n);
    char *big = malloc((size_t)n + 1);
    if (!big) return -1;
    va_start(ap, fmt);
    vsnprintf(big, (size_t)n + 1, fmt, ap);
    va_end(ap);
    int rc = buf_add(b, big, (size_t)n);
    free(big);
    return rc;
}

/* Drops the first n bytes. */
static void buf_consume(buf *b, size_t n)
{
    if (n >= b->len) {
        b->len = 0;
    } else {
        memmove(b->p, b->p + n, b->len - n);
        b->len -= n;
    }
    if (b->p) b->p[b->len] = '\0';
}

static void buf_free(buf *b)
{
    free(b->p);
    *b = (buf){0};
}

static char *dup_or_null(const char *s)
{
    return s ? strdup(s) : NULL;
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- rules and the request log ---- */

typedef struct rule {
    char *model, *match;
    fakellm_reply *replies; /* strings owned */
    size_t n, next;
    struct rule *next_rule; /* older */
} rule;

typedef struct logged {
    char *model; /* "" when the body had none */
    char *body;
    size_t seq_all;   /* arrival index among all requests */
    size_t seq_model; /* arrival index among requests for this model */
} logged;

typedef struct model_count {
    char *model;
    size_t n;
} model_count;

/* ---- connections ---- */

typedef struct seg {
    char *data;
    size_t len;
    int delay_ms; /* wait before sending this segment */
} seg;

typedef enum end_action { END_FINISH = 0, END_DROP, END_HANG } end_action;

typedef struct conn {
    int fd;
    int heap_idx; /* position in the timer heap, -1 when no timer */
    int64_t due_ms;
    buf in;
    buf out;
    size_t out_off;
    int epollout;   /* EPOLLOUT is armed */
    int responding; /* a request is being answered: its segments are in segs */
    int delay_done; /* the timer for segs[next] fired */
    int keep_alive;
    int sent_continue;
    seg *segs;
    size_t nsegs, next;
    end_action end;
    struct conn *prev, *nextc;
} conn;

struct fakellm {
    int listen_fd, epoll_fd, wake_fd, port;
    char base_url[64];
    pthread_t thread;
    int thread_started;
    atomic_int stop;
    atomic_size_t open_conns, in_flight;

    pthread_mutex_t mu; /* guards rules, log, counts, id */
    rule *rules;        /* newest first */
    size_t n_rules;
    logged log[MAX_LOG];
    size_t n_total; /* requests ever (since reset) */
    model_count models[MAX_MODELS];
    size_t n_models;
    uint64_t next_id;

    /* Loop-thread only. */
    conn *conns;
    conn **heap;
    size_t heap_len, heap_cap;
    int64_t accept_paused_until; /* EMFILE back-off */
};

static char LISTEN_TAG, WAKE_TAG; /* epoll data.ptr markers for the two non-connection fds */

/* ---- timer heap (min-heap on due_ms) ---- */

static void heap_swap(fakellm *f, size_t a, size_t b)
{
    conn *t = f->heap[a];
    f->heap[a] = f->heap[b];
    f->heap[b] = t;
    f->heap[a]->heap_idx = (int)a;
    f->heap[b]->heap_idx = (int)b;
}

static void heap_up(fakellm *f, size_t i)
{
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (f->heap[p]->due_ms <= f->heap[i]->due_ms) break;
        heap_swap(f, p, i);
        i = p;
    }
}

static void heap_down(fakellm *f, size_t i)
{
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < f->heap_len && f->heap[l]->due_ms < f->heap[m]->due_ms) m = l;
        if (r < f->heap_len && f->heap[r]->due_ms < f->heap[m]->due_ms) m = r;
        if (m == i) return;
        heap_swap(f, i, m);
        i = m;
    }
}

static void timer_cancel(fakellm *f, conn *c)
{
    if (c->heap_idx < 0) return;
    size_t i = (size_t)c->heap_idx;
    c->heap_idx = -1;
    f->heap_len--;
    if (i == f->heap_len) return;
    f->heap[i] = f->heap[f->heap_len];
    f->heap[i]->heap_idx = (int)i;
    heap_down(f, i);
    heap_up(f, i);
}

static int timer_set(fakellm *f, conn *c, int64_t due)
{
    timer_cancel(f, c);
    if (f->heap_len == f->heap_cap) {
        size_t cap = f->heap_cap ? f->heap_cap * 2 : 256;
        conn **h = realloc(f->heap, cap * sizeof *h);
        if (!h) return -1;
        f->heap = h;
        f->heap_cap = cap;
    }
    c->due_ms = due;
    c->heap_idx = (int)f->heap_len;
    f->heap[f->heap_len++] = c;
    heap_up(f, (size_t)c->heap_idx);
    return 0;
}

/* ---- response planning ---- */

typedef struct plan {
    seg *segs;
    size_t n, cap;
    end_action end;
    int close_after;
} plan;

/* Appends a segment (data: NUL-terminated, owned from now on; NULL = a failed allocation). */
static int plan_add(plan *p, char *data, int delay_ms)
{
    if (!data) return -1;
    size_t len = strlen(data);
    if (p->n == p->cap) {
        size_t cap = p->cap ? p->cap * 2 : 8;
        seg *s = realloc(p->segs, cap * sizeof *s);
        if (!s) {
            free(data);
            return -1;
        }
        p->segs = s;
        p->cap = cap;
    }
    p->segs[p->n++] = (seg){.data = data, .len = len, .delay_ms = delay_ms};
    return 0;
}

static void plan_free(plan *p)
{
    for (size_t i = 0; i < p->n; i++) free(p->segs[i].data);
    free(p->segs);
    *p = (plan){0};
}

static const char *reason_phrase(int status)
{
    static const struct {
        int status;
        const char *text;
    } R[] = {{200, "OK"},
             {400, "Bad Request"},
             {401, "Unauthorized"},
             {403, "Forbidden"},
             {404, "Not Found"},
             {405, "Method Not Allowed"},
             {408, "Request Timeout"},
             {409, "Conflict"},
             {413, "Payload Too Large"},
             {422, "Unprocessable Entity"},
             {429, "Too Many Requests"},
             {431, "Request Header Fields Too Large"},
             {500, "Internal Server Error"},
             {502, "Bad Gateway"},
             {503, "Service Unavailable"},
             {504, "Gateway Timeout"},
             {529, "Overloaded"}};
    for (size_t i = 0; i < sizeof R / sizeof R[0]; i++)
        if (R[i].status == status) return R[i].text;
    return "Status";
}

/* The status line and headers; content_length < 0 means chunked transfer encoding. */
static char *head(int status, const char *ctype, long content_length, int keep_alive,
                  int retry_after_s, size_t *len)
{
    buf b = {0};
    buf_printf(&b, "HTTP/1.1 %d %s\r\nContent-Type: %s\r\n", status, reason_phrase(status), ctype);
    if (content_length < 0) buf_printf(&b, "Transfer-Encoding: chunked\r\nCache-Control: no-cache\r\n");
    else buf_printf(&b, "Content-Length: %ld\r\n", content_length);
    if (retry_after_s > 0) buf_printf(&b, "Retry-After: %d\r\n", retry_after_s);
    buf_printf(&b, "Connection: %s\r\n\r\n", keep_alive ? "keep-alive" : "close");
    *len = b.len;
    return b.p;
}

/* One HTTP chunk holding one server-sent event (name NULL = data only). Consumes payload. */
static char *sse_chunk(const char *event_name, json_t *payload)
{
    char *data = json_dumps(payload, JSON_COMPACT);
    json_decref(payload);
    if (!data) return NULL;
    buf ev = {0};
    if (event_name) buf_printf(&ev, "event: %s\n", event_name);
    buf_printf(&ev, "data: %s\n\n", data);
    free(data);
    buf b = {0};
    buf_printf(&b, "%zx\r\n", ev.len);
    buf_add(&b, ev.p, ev.len);
    buf_add(&b, "\r\n", 2);
    buf_free(&ev);
    return b.p;
}

static char *raw_chunk(const char *s)
{
    buf b = {0};
    buf_printf(&b, "%zx\r\n%s\r\n", strlen(s), s);
    return b.p;
}

/* Splits s into pieces of at most n code points (UTF-8 is never cut inside a character). */
static size_t split_pieces(const char *s, size_t n, size_t **starts_out)
{
    size_t len = strlen(s), count = 0, cap = 8;
    size_t *starts = malloc(cap * sizeof *starts);
    if (!starts) return 0;
    size_t i = 0;
    while (i < len) {
        if (count + 1 >= cap) {
            cap *= 2;
            size_t *t = realloc(starts, cap * sizeof *t);
            if (!t) break;
            starts = t;
        }
        starts[count++] = i;
        size_t cps = 0;
        while (i < len && cps < n) {
            i++;
            while (i < len && ((unsigned char)s[i] & 0xC0) == 0x80) i++;
            cps++;
        }
    }
    starts[count] = len;
    *starts_out = starts;
    return count;
}

typedef struct reqinfo {
    int anthropic; /* /v1/messages */
    int stream;
    int include_usage;
    const char *model;
    uint64_t id;
} reqinfo;

static json_t *openai_chunk_base(const reqinfo *ri, time_t created)
{
    char id[48];
    snprintf(id, sizeof id, "chatcmpl-fake%llu", (unsigned long long)ri->id);
    return json_pack("{s:s, s:s, s:I, s:s, s:s}", "id", id, "object", "chat.completion.chunk",
                     "created", (json_int_t)created, "model", ri->model, "system_fingerprint",
                     "fakellm");
}

static json_t *openai_choice_chunk(const reqinfo *ri, time_t created, json_t *delta,
                                   const char *finish)
{
    json_t *c = openai_chunk_base(ri, created);
    json_object_set_new(c, "choices",
                        json_pack("[{s:i, s:o, s:o}]", "index", 0, "delta", delta, "finish_reason",
                                  finish ? json_string(finish) : json_null()));
    return c;
}

static json_t *usage_json(const reqinfo *ri, int64_t prompt, int64_t completion)
{
    if (ri->anthropic)
        return json_pack("{s:I, s:I}", "input_tokens", (json_int_t)prompt, "output_tokens",
                         (json_int_t)completion);
    return json_pack("{s:I, s:I, s:I}", "prompt_tokens", (json_int_t)prompt, "completion_tokens",
                     (json_int_t)completion, "total_tokens", (json_int_t)(prompt + completion));
}

/* Streamed OpenAI body: role chunk, text or tool-call pieces, finish chunk, usage chunk, [DONE]. */
static int plan_openai_stream(plan *p, const reqinfo *ri, const fakellm_reply *r, size_t chunk,
                              int64_t prompt, int cd)
{
    time_t created = time(NULL);
    int tool = r->kind == FAKELLM_TOOL_CALL;
    const char *piece_src = tool ? (r->tool_args ? r->tool_args : "{}") : (r->text ? r->text : "ok");
    size_t *starts = NULL;
    size_t n = split_pieces(piece_src, chunk, &starts);
    int64_t completion = r->completion_tokens > 0 ? r->completion_tokens : (int64_t)(n ? n : 1);
    int rc = 0;
    json_t *first;
    if (tool) {
        char call_id[48];
        snprintf(call_id, sizeof call_id, "call_fake%llu", (unsigned long long)ri->id);
        first = json_pack("{s:s, s:n, s:[{s:i, s:s, s:s, s:{s:s, s:s}}]}", "role", "assistant",
                          "content", "tool_calls", "index", 0, "id", call_id, "type", "function",
                          "function", "name", r->tool_name ? r->tool_name : "tool", "arguments", "");
    } else {
        first = json_pack("{s:s, s:s}", "role", "assistant", "content", "");
    }
    rc |= plan_add(p, sse_chunk(NULL, openai_choice_chunk(ri, created, first, NULL)), 0);
    for (size_t i = 0; i < n; i++) {
        json_t *piece = json_stringn(piece_src + starts[i], starts[i + 1] - starts[i]);
        json_t *delta = tool ? json_pack("{s:[{s:i, s:{s:o}}]}", "tool_calls", "index", 0, "function",
                                         "arguments", piece)
                             : json_pack("{s:o}", "content", piece);
        rc |= plan_add(p, sse_chunk(NULL, openai_choice_chunk(ri, created, delta, NULL)), cd);
    }
    free(starts);
    rc |= plan_add(p,
                   sse_chunk(NULL, openai_choice_chunk(ri, created, json_object(), tool ? "tool_calls" : "stop")), cd);
    if (ri->include_usage) {
        json_t *u = openai_chunk_base(ri, created);
        json_object_set_new(u, "choices", json_array());
        json_object_set_new(u, "usage", usage_json(ri, prompt, completion));
        rc |= plan_add(p, sse_chunk(NULL, u), 0);
    }
    rc |= plan_add(p, raw_chunk("data: [DONE]\n\n"), 0);
    rc |= plan_add(p, strdup("0\r\n\r\n"), 0);
    return rc;
}

/* Streamed Anthropic body: message_start, one content block (text or tool_use) with its deltas,
 * message_delta with the stop reason and usage, message_stop. */
static int plan_anthropic_stream(plan *p, const reqinfo *ri, const fakellm_reply *r, size_t chunk,
                                 int64_t prompt, int cd)
{
    int tool = r->kind == FAKELLM_TOOL_CALL;
    const char *piece_src = tool ? (r->tool_args ? r->tool_args : "{}") : (r->text ? r->text : "ok");
    size_t *starts = NULL;
    size_t n = split_pieces(piece_src, chunk, &starts);
    int64_t completion = r->completion_tokens > 0 ? r->completion_tokens : (int64_t)(n ? n : 1);
    char id[48];
    snprintf(id, sizeof id, "msg_fake%llu", (unsigned long long)ri->id);
    int rc = 0;
    json_t *start = json_pack("{s:s, s:{s:s, s:s, s:s, s:s, s:[], s:n, s:n, s:o}}", "type",
                              "message_start", "message", "id", id, "type", "message", "role",
                              "assistant", "model", ri->model, "content", "stop_reason",
                              "stop_sequence", "usage", usage_json(ri, prompt, 1));
    rc |= plan_add(p, sse_chunk("message_start", start), 0);
    json_t *block;
    if (tool) {
        char tid[48];
        snprintf(tid, sizeof tid, "toolu_fake%llu", (unsigned long long)ri->id);
        block = json_pack("{s:s, s:s, s:s, s:{}}", "type", "tool_use", "id", tid, "name",
                          r->tool_name ? r->tool_name : "tool", "input");
    } else {
        block = json_pack("{s:s, s:s}", "type", "text", "text", "");
    }
    rc |= plan_add(p,
                   sse_chunk("content_block_start",
                             json_pack("{s:s, s:i, s:o}", "type", "content_block_start", "index", 0,
                                       "content_block", block)), 0);
    rc |= plan_add(p, sse_chunk("ping", json_pack("{s:s}", "type", "ping")), 0);
    for (size_t i = 0; i < n; i++) {
        json_t *piece = json_stringn(piece_src + starts[i], starts[i + 1] - starts[i]);
        json_t *delta = tool ? json_pack("{s:s, s:o}", "type", "input_json_delta", "partial_json", piece)
                             : json_pack("{s:s, s:o}", "type", "text_delta", "text", piece);
        rc |= plan_add(p,
                       sse_chunk("content_block_delta",
                                 json_pack("{s:s, s:i, s:o}", "type", "content_block_delta", "index",
                                           0, "delta", delta)), cd);
    }
    free(starts);
    rc |= plan_add(p,
                   sse_chunk("content_block_stop",
                             json_pack("{s:s, s:i}", "type", "content_block_stop", "index", 0)), cd);
    rc |= plan_add(p,
                   sse_chunk("message_delta",
                             json_pack("{s:s, s:{s:s, s:n}, s:{s:I}}", "type", "message_delta",
                                       "delta", "stop_reason", tool ? "tool_use" : "end_turn",
                                       "stop_sequence", "usage", "output_tokens",
                                       (json_int_t)completion)), 0);
    rc |= plan_add(p, sse_chunk("message_stop", json_pack("{s:s}", "type", "message_stop")), 0);
    rc |= plan_add(p, strdup("0\r\n\r\n"), 0);
    return rc;
}

/* The whole (non-streamed) JSON body. */
static json_t *complete_body(const reqinfo *ri, const fakellm_reply *r, size_t chunk, int64_t prompt)
{
    int tool = r->kind == FAKELLM_TOOL_CALL;
    const char *text = r->text ? r->text : "ok";
    const char *args = r->tool_args ? r->tool_args : "{}";
    size_t *starts = NULL;
    size_t n = split_pieces(tool ? args : text, chunk, &starts);
    free(starts);
    int64_t completion = r->completion_tokens > 0 ? r->completion_tokens : (int64_t)(n ? n : 1);
    const char *name = r->tool_name ? r->tool_name : "tool";
    if (ri->anthropic) {
        char id[48], tid[48];
        snprintf(id, sizeof id, "msg_fake%llu", (unsigned long long)ri->id);
        snprintf(tid, sizeof tid, "toolu_fake%llu", (unsigned long long)ri->id);
        json_t *input = json_loads(args, 0, NULL);
        if (!json_is_object(input)) {
            json_decref(input);
            input = json_object();
        }
        json_t *content;
        if (tool) {
            content = json_pack("[{s:s, s:s, s:s, s:o}]", "type", "tool_use", "id", tid, "name", name,
                                "input", input);
        } else {
            json_decref(input);
            content = json_pack("[{s:s, s:s}]", "type", "text", "text", text);
        }
        return json_pack("{s:s, s:s, s:s, s:s, s:o, s:s, s:n, s:o}", "id", id, "type", "message",
                         "role", "assistant", "model", ri->model, "content", content, "stop_reason",
                         tool ? "tool_use" : "end_turn", "stop_sequence", "usage",
                         usage_json(ri, prompt, completion));
    }
    char id[48], cid[48];
    snprintf(id, sizeof id, "chatcmpl-fake%llu", (unsigned long long)ri->id);
    snprintf(cid, sizeof cid, "call_fake%llu", (unsigned long long)ri->id);
    json_t *message = tool ? json_pack("{s:s, s:n, s:[{s:s, s:s, s:{s:s, s:s}}]}", "role", "assistant",
                                       "content", "tool_calls", "id", cid, "type", "function",
                                       "function", "name", name, "arguments", args)
                           : json_pack("{s:s, s:s}", "role", "assistant", "content", text);
    return json_pack("{s:s, s:s, s:I, s:s, s:[{s:i, s:o, s:s}], s:o}", "id", id, "object",
                     "chat.completion", "created", (json_int_t)time(NULL), "model", ri->model,
                     "choices", "index", 0, "message", message, "finish_reason",
                     tool ? "tool_calls" : "stop", "usage", usage_json(ri, prompt, completion));
}

/* The provider's error type for a status, as the real APIs name them (and as server/llm maps). */
static void error_types(int anthropic, int status, const char **type, const char **code)
{
    *code = NULL;
    if (anthropic) {
        *type = status == 429   ? "rate_limit_error"
                : status == 529 ? "overloaded_error"
                : status == 401 ? "authentication_error"
                : status == 403 ? "permission_error"
                : status == 404 ? "not_found_error"
                : status == 413 ? "request_too_large"
                : status >= 500 ? "api_error"
                                : "invalid_request_error";
        return;
    }
    if (status == 429) {
        *type = "requests";
        *code = "rate_limit_exceeded";
    } else if (status >= 500) {
        *type = "server_error";
    } else if (status == 401) {
        *type = "invalid_request_error";
        *code = "invalid_api_key";
    } else {
        *type = "invalid_request_error";
    }
}

static json_t *error_json(int anthropic, int status, const char *message)
{
    const char *type, *code;
    error_types(anthropic, status, &type, &code);
    if (anthropic)
        return json_pack("{s:s, s:{s:s, s:s}}", "type", "error", "error", "type", type, "message",
                         message);
    return json_pack("{s:{s:s, s:s, s:n, s:o}}", "error", "message", message, "type", type, "param",
                     "code", code ? json_string(code) : json_null());
}

/* A complete JSON response (errors, non-streamed answers). Consumes body. */
static int plan_json(plan *p, int status, json_t *body, int keep_alive, int retry_after_s,
                     int delay_ms)
{
    char *text = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    if (!text) return -1;
    size_t tl = strlen(text), hl;
    char *h = head(status, "application/json", (long)tl, keep_alive, retry_after_s, &hl);
    buf b = {0};
    if (!h || buf_add(&b, h, hl) || buf_add(&b, text, tl)) {
        free(h);
        free(text);
        buf_free(&b);
        return -1;
    }
    free(h);
    free(text);
    return plan_add(p, b.p, delay_ms);
}

/* Turns the plan into a dropped response: the first segment (headers) plus half of the next
 * one (or half of the body for a one-piece response) in one write, then the connection closes. */
static void make_drop(plan *p)
{
    if (p->n == 0) return;
    buf b = {0};
    size_t keep;
    if (p->n >= 2) {
        buf_add(&b, p->segs[0].data, p->segs[0].len);
        keep = p->segs[1].len / 2;
        buf_add(&b, p->segs[1].data, keep ? keep : 1);
    } else {
        /* One segment: headers and body together; keep the headers and half the body. */
        const char *end = strstr(p->segs[0].data, "\r\n\r\n");
        size_t hl = end ? (size_t)(end + 4 - p->segs[0].data) : 0;
        keep = hl + (p->segs[0].len - hl) / 2;
        buf_add(&b, p->segs[0].data, keep);
    }
    int delay = p->segs[0].delay_ms;
    for (size_t i = 0; i < p->n; i++) free(p->segs[i].data);
    p->n = 0;
    plan_add(p, b.p, delay);
    p->end = END_DROP;
    p->close_after = 1;
}

/* Builds the response for a chat request with reply r (copied from a rule under the lock). */
static int plan_reply(plan *p, const reqinfo *ri, const fakellm_reply *r, int keep_alive)
{
    size_t chunk = r->chunk_size > 0 ? (size_t)r->chunk_size : 4;
    int64_t prompt = r->prompt_tokens > 0 ? r->prompt_tokens : 10;
    int delay = r->delay_ms > 0 ? r->delay_ms : 0;
    int cd = r->chunk_delay_ms > 0 ? r->chunk_delay_ms : 0;
    if (r->kind == FAKELLM_HTTP_ERROR) {
        int status = r->status >= 100 && r->status <= 599 ? r->status : 500;
        char m[96];
        snprintf(m, sizeof m, "fakellm: scripted HTTP %d", status);
        return plan_json(p, status, error_json(ri->anthropic, status, m), keep_alive,
                         r->retry_after_s, delay);
    }
    fakellm_reply answer = *r;
    if (r->kind == FAKELLM_DROP || r->kind == FAKELLM_HANG) answer.kind = FAKELLM_TEXT;
    int rc;
    if (ri->stream) {
        size_t hl;
        char *h = head(200, "text/event-stream", -1, keep_alive, 0, &hl);
        rc = plan_add(p, h, delay);
        if (r->kind == FAKELLM_HANG) {
            p->end = END_HANG;
            return rc;
        }
        rc |= ri->anthropic ? plan_anthropic_stream(p, ri, &answer, chunk, prompt, cd)
                            : plan_openai_stream(p, ri, &answer, chunk, prompt, cd);
    } else {
        json_t *body = complete_body(ri, &answer, chunk, prompt);
        if (r->kind == FAKELLM_HANG) {
            /* Headers promising a body that never comes. */
            char *text = json_dumps(body, JSON_COMPACT);
            json_decref(body);
            size_t hl;
            char *h = head(200, "application/json", text ? (long)strlen(text) : 100, keep_alive, 0, &hl);
            free(text);
            p->end = END_HANG;
            return plan_add(p, h, delay);
        }
        rc = plan_json(p, 200, body, keep_alive, 0, delay);
    }
    if (r->kind == FAKELLM_DROP) make_drop(p);
    return rc;
}

/* ---- requests ---- */

static void rule_free(rule *r)
{
    if (!r) return;
    free(r->model);
    free(r->match);
    for (size_t i = 0; i < r->n; i++) {
        free((char *)r->replies[i].text);
        free((char *)r->replies[i].tool_name);
        free((char *)r->replies[i].tool_args);
    }
    free(r->replies);
    free(r);
}

/* Records the request (counts and the body log) and returns its id. */
static uint64_t record(fakellm *f, const char *model, const char *body)
{
    pthread_mutex_lock(&f->mu);
    uint64_t id = ++f->next_id;
    size_t seq_model = 0;
    size_t mi;
    for (mi = 0; mi < f->n_models; mi++)
        if (strcmp(f->models[mi].model, model) == 0) break;
    if (mi == f->n_models && f->n_models < MAX_MODELS) {
        char *m = strdup(model);
        if (m) f->models[f->n_models++] = (model_count){.model = m, .n = 0};
    }
    if (mi < f->n_models) seq_model = f->models[mi].n++;
    logged *slot = &f->log[f->n_total % MAX_LOG];
    free(slot->model);
    free(slot->body);
    *slot = (logged){.model = strdup(model), .body = strdup(body), .seq_all = f->n_total,
                     .seq_model = seq_model};
    f->n_total++;
    pthread_mutex_unlock(&f->mu);
    return id;
}

/* Picks the reply for a request; its strings are copied into strs (the caller frees them) so
 * that a concurrent fakellm_reset cannot free them under the planner. */
static void choose(fakellm *f, const char *model, const char *body, fakellm_reply *out,
                   char *strs[3])
{
    pthread_mutex_lock(&f->mu);
    *out = (fakellm_reply){.kind = FAKELLM_TEXT};
    strs[0] = strs[1] = strs[2] = NULL;
    for (rule *r = f->rules; r; r = r->next_rule) {
        if (r->model && strcmp(r->model, model) != 0) continue;
        if (r->match && !strstr(body, r->match)) continue;
        const fakellm_reply *rep = &r->replies[r->next];
        if (r->next + 1 < r->n) r->next++;
        *out = *rep;
        strs[0] = dup_or_null(rep->text);
        strs[1] = dup_or_null(rep->tool_name);
        strs[2] = dup_or_null(rep->tool_args);
        out->text = strs[0];
        out->tool_name = strs[1];
        out->tool_args = strs[2];
        break;
    }
    pthread_mutex_unlock(&f->mu);
}

typedef struct request {
    char method[16];
    char path[512];
    char *body;
    size_t body_len;
    int keep_alive;
} request;

static int plan_error(plan *p, int anthropic, int status, const char *message, int keep_alive)
{
    return plan_json(p, status, error_json(anthropic, status, message), keep_alive, 0, 0);
}

/* Answers one parsed request. */
static int handle_request(fakellm *f, const request *rq, plan *p)
{
    char path[512];
    snprintf(path, sizeof path, "%s", rq->path);
    path[strcspn(path, "?")] = '\0';
    int chat = strcmp(path, "/v1/chat/completions") == 0 || strcmp(path, "/chat/completions") == 0;
    int messages = strcmp(path, "/v1/messages") == 0 || strcmp(path, "/messages") == 0;
    int ka = rq->keep_alive;
    if (strcmp(path, "/v1/models") == 0 || strcmp(path, "/models") == 0) {
        if (strcmp(rq->method, "GET") != 0) return plan_error(p, 0, 405, "use GET", ka);
        return plan_json(p, 200,
                         json_pack("{s:s, s:[{s:s, s:s, s:s}]}", "object", "list", "data", "id",
                                   "fake-model", "object", "model", "owned_by", "fakellm"),
                         ka, 0, 0);
    }
    if (!chat && !messages) {
        char m[600];
        snprintf(m, sizeof m, "fakellm: no route for %s %s", rq->method, rq->path);
        return plan_error(p, 0, 404, m, ka);
    }
    if (strcmp(rq->method, "POST") != 0)
        return plan_error(p, messages, 405, "fakellm: use POST", ka);

    json_error_t jerr;
    json_t *root = json_loadb(rq->body, rq->body_len, 0, &jerr);
    const char *model = json_string_value(json_object_get(root, "model"));
    char *strs[3] = {NULL, NULL, NULL};
    fakellm_reply r;
    reqinfo ri = {.anthropic = messages, .model = model ? model : ""};
    ri.id = record(f, ri.model, rq->body);
    int rc;
    char m[300];
    /* The checks the real APIs make, so that a client sending a malformed request notices. */
    if (!json_is_object(root)) {
        snprintf(m, sizeof m, "fakellm: request body is not a JSON object: %s", jerr.text);
        rc = plan_error(p, messages, 400, m, ka);
    } else if (!model || !*model) {
        rc = plan_error(p, messages, 400, "fakellm: model is required", ka);
    } else if (!json_is_array(json_object_get(root, "messages")) ||
               json_array_size(json_object_get(root, "messages")) == 0) {
        rc = plan_error(p, messages, 400, "fakellm: messages must be a non-empty array", ka);
    } else if (messages && !json_is_integer(json_object_get(root, "max_tokens"))) {
        rc = plan_error(p, messages, 400, "fakellm: max_tokens is required", ka);
    } else if (json_object_get(root, "tools") && !json_is_array(json_object_get(root, "tools"))) {
        rc = plan_error(p, messages, 400, "fakellm: tools must be an array", ka);
    } else {
        ri.stream = json_is_true(json_object_get(root, "stream"));
        json_t *so = json_object_get(root, "stream_options");
        /* OpenAI sends the usage chunk only when asked; so do we (unless explicitly refused). */
        ri.include_usage = !ri.anthropic && !json_is_false(json_object_get(so, "include_usage"));
        choose(f, ri.model, rq->body, &r, strs);
        rc = plan_reply(p, &ri, &r, ka);
    }
    for (int i = 0; i < 3; i++) free(strs[i]);
    json_decref(root);
    return rc;
}

/* ---- HTTP parsing ---- */

typedef enum parse_rc { PARSE_MORE = 0, PARSE_OK, PARSE_ERR } parse_rc;

static const char *find_header_end(const char *s, size_t len)
{
    for (size_t i = 0; i + 3 < len; i++)
        if (s[i] == '\r' && s[i + 1] == '\n' && s[i + 2] == '\r' && s[i + 3] == '\n') return s + i;
    return NULL;
}

/* Decodes a chunked body starting at s (len bytes available). PARSE_MORE when incomplete;
 * on PARSE_OK *used is the bytes consumed and out holds the body. */
static parse_rc dechunk(const char *s, size_t len, buf *out, size_t *used, int *status)
{
    size_t i = 0;
    for (;;) {
        const char *nl = memchr(s + i, '\n', len - i);
        if (!nl) return len - i > 64 ? (*status = 400, PARSE_ERR) : PARSE_MORE;
        char *end;
        unsigned long long sz = strtoull(s + i, &end, 16);
        if (end == s + i) {
            *status = 400;
            return PARSE_ERR;
        }
        i = (size_t)(nl - s) + 1;
        if (sz == 0) {
            /* Trailers until an empty line. */
            for (;;) {
                const char *tl = memchr(s + i, '\n', len - i);
                if (!tl) return PARSE_MORE;
                size_t linelen = (size_t)(tl - (s + i));
                i = (size_t)(tl - s) + 1;
                if (linelen == 0 || (linelen == 1 && s[i - 2] == '\r')) {
                    *used = i;
                    return PARSE_OK;
                }
            }
        }
        if (sz > MAX_BODY_BYTES || out->len + sz > MAX_BODY_BYTES) {
            *status = 413;
            return PARSE_ERR;
        }
        if (len - i < sz + 2) return PARSE_MORE;
        if (buf_add(out, s + i, (size_t)sz)) {
            *status = 500;
            return PARSE_ERR;
        }
        i += (size_t)sz;
        if (s[i] == '\r') i++;
        if (i >= len) return PARSE_MORE;
        if (s[i] != '\n') {
            *status = 400;
            return PARSE_ERR;
        }
        i++;
    }
}

/* Parses one request from in. PARSE_OK: rq filled (rq->body malloc'd), *used bytes consumed.
 * PARSE_ERR: *status to answer with (then the connection closes). *expect_continue is set when
 * the client waits for "100 Continue" before sending the body. */
static parse_rc parse_request(const buf *in, request *rq, size_t *used, int *status,
                              int *expect_continue)
{
    *expect_continue = 0;
    const char *he = find_header_end(in->p ? in->p : "", in->len);
    if (!he) {
        if (in->len > MAX_HEADER_BYTES) {
            *status = 431;
            return PARSE_ERR;
        }
        return PARSE_MORE;
    }
    size_t hlen = (size_t)(he - in->p) + 4;
    if (hlen > MAX_HEADER_BYTES) {
        *status = 431;
        return PARSE_ERR;
    }
    char *h = strndup(in->p, hlen - 4);
    if (!h) {
        *status = 500;
        return PARSE_ERR;
    }
    *rq = (request){0};
    char version[16] = "";
    char *save = NULL;
    char *line = strtok_r(h, "\r\n", &save);
    if (!line || sscanf(line, "%15s %511s %15s", rq->method, rq->path, version) != 3 ||
        strncmp(version, "HTTP/1.", 7) != 0) {
        free(h);
        *status = 400;
        return PARSE_ERR;
    }
    rq->keep_alive = strcmp(version, "HTTP/1.0") != 0;
    long long content_length = -1;
    int chunked = 0;
    while ((line = strtok_r(NULL, "\r\n", &save))) {
        char *colon = strchr(line, ':');
        if (!colon) continue;
        *colon = '\0';
        char *v = colon + 1;
        while (*v == ' ' || *v == '\t') v++;
        if (strcasecmp(line, "Content-Length") == 0) {
            char *end;
            content_length = strtoll(v, &end, 10);
            if (end == v || content_length < 0) {
                free(h);
                *status = 400;
                return PARSE_ERR;
            }
        } else if (strcasecmp(line, "Transfer-Encoding") == 0) {
            chunked = strcasestr(v, "chunked") != NULL;
        } else if (strcasecmp(line, "Connection") == 0) {
            if (strcasestr(v, "close")) rq->keep_alive = 0;
            else if (strcasestr(v, "keep-alive")) rq->keep_alive = 1;
        } else if (strcasecmp(line, "Expect") == 0) {
            *expect_continue = strcasecmp(v, "100-continue") == 0;
        }
    }
    free(h);
    if (content_length > MAX_BODY_BYTES) {
        *status = 413;
        return PARSE_ERR;
    }
    if (chunked) {
        buf body = {0};
        size_t bused = 0;
        parse_rc pr = dechunk(in->p + hlen, in->len - hlen, &body, &bused, status);
        if (pr != PARSE_OK) {
            buf_free(&body);
            return pr;
        }
        if (!body.p && buf_add(&body, "", 0)) {
            *status = 500;
            return PARSE_ERR;
        }
        rq->body = body.p;
        rq->body_len = body.len;
        *used = hlen + bused;
        *expect_continue = 0;
        return PARSE_OK;
    }
    size_t cl = content_length > 0 ? (size_t)content_length : 0;
    if (in->len - hlen < cl) return PARSE_MORE;
    rq->body = malloc(cl + 1);
    if (!rq->body) {
        *status = 500;
        return PARSE_ERR;
    }
    memcpy(rq->body, in->p + hlen, cl);
    rq->body[cl] = '\0';
    rq->body_len = cl;
    *used = hlen + cl;
    *expect_continue = 0;
    return PARSE_OK;
}

/* ---- connection I/O ---- */

static void conn_close(fakellm *f, conn *c)
{
    timer_cancel(f, c);
    epoll_ctl(f->epoll_fd, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    if (c->responding) atomic_fetch_sub(&f->in_flight, 1);
    for (size_t i = c->next; i < c->nsegs; i++) free(c->segs[i].data);
    free(c->segs);
    buf_free(&c->in);
    buf_free(&c->out);
    if (c->prev) c->prev->nextc = c->nextc;
    else f->conns = c->nextc;
    if (c->nextc) c->nextc->prev = c->prev;
    atomic_fetch_sub(&f->open_conns, 1);
    free(c);
}

static void set_epollout(fakellm *f, conn *c, int on)
{
    if (c->epollout == on) return;
    struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP | (on ? EPOLLOUT : 0), .data.ptr = c};
    epoll_ctl(f->epoll_fd, EPOLL_CTL_MOD, c->fd, &ev);
    c->epollout = on;
}

/* Writes what is pending. 0 = all written, 1 = the socket is full (EPOLLOUT armed), -1 = the
 * connection failed (and is closed). */
static int flush_out(fakellm *f, conn *c)
{
    while (c->out_off < c->out.len) {
        ssize_t n = send(c->fd, c->out.p + c->out_off, c->out.len - c->out_off, MSG_NOSIGNAL);
        if (n > 0) {
            c->out_off += (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            set_epollout(f, c, 1);
            return 1;
        }
        conn_close(f, c);
        return -1;
    }
    c->out.len = c->out_off = 0;
    set_epollout(f, c, 0);
    return 0;
}

static int try_parse(fakellm *f, conn *c);

/* Moves the response forward as far as timers and the socket allow. Returns -1 when c is gone. */
static int advance(fakellm *f, conn *c)
{
    while (c->responding && c->out_off == c->out.len) {
        if (c->next == c->nsegs) {
            if (c->end == END_HANG) return 0; /* until the client goes away */
            free(c->segs);
            c->segs = NULL;
            c->nsegs = c->next = 0;
            c->responding = 0;
            atomic_fetch_sub(&f->in_flight, 1);
            if (c->end == END_DROP || !c->keep_alive) {
                conn_close(f, c);
                return -1;
            }
            return try_parse(f, c); /* a pipelined request may be waiting */
        }
        seg *s = &c->segs[c->next];
        if (s->delay_ms > 0 && !c->delay_done) {
            if (timer_set(f, c, now_ms() + s->delay_ms)) {
                conn_close(f, c);
                return -1;
            }
            return 0;
        }
        c->delay_done = 0;
        int rc = buf_add(&c->out, s->data, s->len);
        free(s->data);
        s->data = NULL;
        c->next++;
        if (rc) {
            conn_close(f, c);
            return -1;
        }
        int fr = flush_out(f, c);
        if (fr < 0) return -1;
        if (fr > 0) return 0;
    }
    return 0;
}

/* Sends a final error response for a request we cannot parse, then closes. -1 when c is gone. */
static int reject(fakellm *f, conn *c, int status)
{
    plan p = {0};
    char m[80];
    snprintf(m, sizeof m, "fakellm: cannot parse the request (HTTP %d)", status);
    if (plan_error(&p, 0, status, m, 0) != 0) {
        plan_free(&p);
        conn_close(f, c);
        return -1;
    }
    c->segs = p.segs;
    c->nsegs = p.n;
    c->next = 0;
    c->end = END_FINISH;
    c->keep_alive = 0;
    c->responding = 1;
    atomic_fetch_add(&f->in_flight, 1);
    return advance(f, c);
}

/* Starts answering the next buffered request, if complete. -1 when c is gone. */
static int try_parse(fakellm *f, conn *c)
{
    if (c->responding || c->in.len == 0) return 0;
    request rq;
    size_t used = 0;
    int status = 0, expect = 0;
    parse_rc pr = parse_request(&c->in, &rq, &used, &status, &expect);
    if (pr == PARSE_MORE) {
        if (expect && !c->sent_continue) {
            c->sent_continue = 1;
            if (buf_add(&c->out, "HTTP/1.1 100 Continue\r\n\r\n", 25)) {
                conn_close(f, c);
                return -1;
            }
            return flush_out(f, c) < 0 ? -1 : 0;
        }
        return 0;
    }
    if (pr == PARSE_ERR) {
        c->in.len = 0;
        return reject(f, c, status);
    }
    buf_consume(&c->in, used);
    c->sent_continue = 0;
    plan p = {0};
    int rc = handle_request(f, &rq, &p);
    free(rq.body);
    if (rc != 0 || p.n == 0) {
        plan_free(&p);
        conn_close(f, c);
        return -1;
    }
    c->segs = p.segs;
    c->nsegs = p.n;
    c->next = 0;
    c->end = p.end;
    c->keep_alive = rq.keep_alive && !p.close_after;
    c->delay_done = 0;
    c->responding = 1;
    atomic_fetch_add(&f->in_flight, 1);
    return advance(f, c);
}

static void on_readable(fakellm *f, conn *c)
{
    char tmp[16384];
    for (;;) {
        ssize_t n = recv(c->fd, tmp, sizeof tmp, 0);
        if (n > 0) {
            if (c->in.len + (size_t)n > MAX_HEADER_BYTES + MAX_BODY_BYTES + 64 || buf_add(&c->in, tmp, (size_t)n)) {
                conn_close(f, c);
                return;
            }
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
        conn_close(f, c); /* the client went away (n == 0) or failed */
        return;
    }
    try_parse(f, c);
}

static void accept_all(fakellm *f)
{
    for (;;) {
        int fd = accept4(f->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR) continue;
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                /* Out of descriptors: stop accepting for a moment rather than spin. */
                fprintf(stderr, "fakellm: accept failed: %s; pausing accepts for 100 ms\n",
                        strerror(errno));
                struct epoll_event ev = {.events = 0, .data.ptr = &LISTEN_TAG};
                epoll_ctl(f->epoll_fd, EPOLL_CTL_MOD, f->listen_fd, &ev);
                f->accept_paused_until = now_ms() + 100;
            }
            return;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        conn *c = calloc(1, sizeof *c);
        if (!c) {
            close(fd);
            continue;
        }
        c->fd = fd;
        c->heap_idx = -1;
        struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP, .data.ptr = c};
        if (epoll_ctl(f->epoll_fd, EPOLL_CTL_ADD, fd, &ev) != 0) {
            close(fd);
            free(c);
            continue;
        }
        c->nextc = f->conns;
        if (f->conns) f->conns->prev = c;
        f->conns = c;
        atomic_fetch_add(&f->open_conns, 1);
    }
}

static void run_timers(fakellm *f)
{
    int64_t now = now_ms();
    while (f->heap_len && f->heap[0]->due_ms <= now) {
        conn *c = f->heap[0];
        timer_cancel(f, c);
        c->delay_done = 1;
        advance(f, c);
    }
    if (f->accept_paused_until && f->accept_paused_until <= now) {
        f->accept_paused_until = 0;
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &LISTEN_TAG};
        epoll_ctl(f->epoll_fd, EPOLL_CTL_MOD, f->listen_fd, &ev);
        accept_all(f);
    }
}

static void *loop(void *arg)
{
    fakellm *f = arg;
    struct epoll_event evs[MAX_EVENTS];
    while (!atomic_load(&f->stop)) {
        int timeout = -1;
        int64_t now = now_ms();
        int64_t due = f->heap_len ? f->heap[0]->due_ms : INT64_MAX;
        if (f->accept_paused_until && f->accept_paused_until < due) due = f->accept_paused_until;
        if (due != INT64_MAX) timeout = due <= now ? 0 : (int)(due - now > 60000 ? 60000 : due - now);
        int n = epoll_wait(f->epoll_fd, evs, MAX_EVENTS, timeout);
        if (n < 0) {
            if (errno == EINTR) continue;
            fprintf(stderr, "fakellm: epoll_wait failed: %s\n", strerror(errno));
            break;
        }
        for (int i = 0; i < n; i++) {
            void *tag = evs[i].data.ptr;
            if (tag == &WAKE_TAG) {
                uint64_t v;
                if (read(f->wake_fd, &v, sizeof v) < 0) { /* drained either way */ }
                continue;
            }
            if (tag == &LISTEN_TAG) {
                accept_all(f);
                continue;
            }
            conn *c = tag;
            uint32_t e = evs[i].events;
            if (e & EPOLLOUT) {
                int fr = flush_out(f, c);
                if (fr < 0) continue;
                if (fr == 0 && advance(f, c) < 0) continue;
            }
            if (e & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) on_readable(f, c);
        }
        run_timers(f);
    }
    while (f->conns) conn_close(f, f->conns);
    return NULL;
}

/* ---- public ---- */

static void raise_nofile(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
            fprintf(stderr, "fakellm: cannot raise RLIMIT_NOFILE: %s\n", strerror(errno));
    }
}

fakellm *fakellm_start_on(int port)
{
    raise_nofile();
    fakellm *f = calloc(1, sizeof *f);
    if (!f) {
        fprintf(stderr, "fakellm: out of memory\n");
        return NULL;
    }
    f->listen_fd = f->epoll_fd = f->wake_fd = -1;
    pthread_mutex_init(&f->mu, NULL);
    f->listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof a;
    if (f->listen_fd < 0 ||
        setsockopt(f->listen_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
        bind(f->listen_fd, (struct sockaddr *)&a, sizeof a) != 0 ||
        listen(f->listen_fd, 65535) != 0 ||
        getsockname(f->listen_fd, (struct sockaddr *)&a, &al) != 0) {
        fprintf(stderr, "fakellm: cannot listen on 127.0.0.1:%d: %s\n", port, strerror(errno));
        fakellm_stop(f);
        return NULL;
    }
    f->port = ntohs(a.sin_port);
    snprintf(f->base_url, sizeof f->base_url, "http://127.0.0.1:%d/v1", f->port);
    f->epoll_fd = epoll_create1(EPOLL_CLOEXEC);
    f->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    struct epoll_event le = {.events = EPOLLIN, .data.ptr = &LISTEN_TAG};
    struct epoll_event we = {.events = EPOLLIN, .data.ptr = &WAKE_TAG};
    if (f->epoll_fd < 0 || f->wake_fd < 0 ||
        epoll_ctl(f->epoll_fd, EPOLL_CTL_ADD, f->listen_fd, &le) != 0 ||
        epoll_ctl(f->epoll_fd, EPOLL_CTL_ADD, f->wake_fd, &we) != 0) {
        fprintf(stderr, "fakellm: cannot set up epoll: %s\n", strerror(errno));
        fakellm_stop(f);
        return NULL;
    }
    int rc = pthread_create(&f->thread, NULL, loop, f);
    if (rc != 0) {
        fprintf(stderr, "fakellm: cannot start its thread: %s\n", strerror(rc));
        fakellm_stop(f);
        return NULL;
    }
    f->thread_started = 1;
    return f;
}

fakellm *fakellm_start(void)
{
    return fakellm_start_on(0);
}

const char *fakellm_base_url(const fakellm *f) { return f->base_url; }

int fakellm_port(const fakellm *f) { return f->port; }

void fakellm_on(fakellm *f, const char *model, const char *match, const fakellm_reply *replies,
                size_t n)
{
    if (!f || !replies || n == 0) return;
    rule *r = calloc(1, sizeof *r);
    if (!r || !(r->replies = calloc(n, sizeof *r->replies))) {
        free(r);
        fprintf(stderr, "fakellm: out of memory adding a rule\n");
        return;
    }
    r->n = n;
    r->model = dup_or_null(model);
    r->match = dup_or_null(match);
    for (size_t i = 0; i < n; i++) {
        r->replies[i] = replies[i];
        r->replies[i].text = dup_or_null(replies[i].text);
        r->replies[i].tool_name = dup_or_null(replies[i].tool_name);
        r->replies[i].tool_args = dup_or_null(replies[i].tool_args);
    }
    pthread_mutex_lock(&f->mu);
    r->next_rule = f->rules;
    f->rules = r;
    if (++f->n_rules > MAX_RULES) {
        /* Drop the oldest (the list's tail). */
        rule *prev = f->rules;
        while (prev->next_rule && prev->next_rule->next_rule) prev = prev->next_rule;
        rule_free(prev->next_rule);
        prev->next_rule = NULL;
        f->n_rules--;
        fprintf(stderr, "fakellm: more than %d rules; dropped the oldest\n", MAX_RULES);
    }
    pthread_mutex_unlock(&f->mu);
}

/* Frees rules and the log; caller holds f->mu. */
static void forget_all(fakellm *f)
{
    while (f->rules) {
        rule *r = f->rules;
        f->rules = r->next_rule;
        rule_free(r);
    }
    f->n_rules = 0;
    for (size_t i = 0; i < MAX_LOG; i++) {
        free(f->log[i].model);
        free(f->log[i].body);
        f->log[i] = (logged){0};
    }
    for (size_t i = 0; i < f->n_models; i++) free(f->models[i].model);
    f->n_models = 0;
    f->n_total = 0;
}

void fakellm_reset(fakellm *f)
{
    if (!f) return;
    pthread_mutex_lock(&f->mu);
    forget_all(f);
    pthread_mutex_unlock(&f->mu);
}

size_t fakellm_count(fakellm *f, const char *model)
{
    pthread_mutex_lock(&f->mu);
    size_t n = 0;
    if (!model) {
        n = f->n_total;
    } else {
        for (size_t i = 0; i < f->n_models; i++)
            if (strcmp(f->models[i].model, model) == 0) n = f->models[i].n;
    }
    pthread_mutex_unlock(&f->mu);
    return n;
}

char *fakellm_body(fakellm *f, const char *model, size_t i)
{
    char *out = NULL;
    pthread_mutex_lock(&f->mu);
    size_t kept = f->n_total < MAX_LOG ? f->n_total : MAX_LOG;
    for (size_t k = 0; k < kept && !out; k++) {
        const logged *l = &f->log[(f->n_total - kept + k) % MAX_LOG];
        if (model ? (l->model && strcmp(l->model, model) == 0 && l->seq_model == i) : l->seq_all == i)
            out = dup_or_null(l->body);
    }
    pthread_mutex_unlock(&f->mu);
    return out;
}

size_t fakellm_open_connections(fakellm *f) { return atomic_load(&f->open_conns); }

size_t fakellm_in_flight(fakellm *f) { return atomic_load(&f->in_flight); }

void fakellm_stop(fakellm *f)
{
    if (!f) return;
    if (f->thread_started) {
        atomic_store(&f->stop, 1);
        uint64_t one = 1;
        if (write(f->wake_fd, &one, sizeof one) < 0)
            fprintf(stderr, "fakellm: cannot wake its thread: %s\n", strerror(errno));
        pthread_join(f->thread, NULL);
    }
    if (f->listen_fd >= 0) close(f->listen_fd);
    if (f->epoll_fd >= 0) close(f->epoll_fd);
    if (f->wake_fd >= 0) close(f->wake_fd);
    forget_all(f);
    free(f->heap);
    pthread_mutex_destroy(&f->mu);
    free(f);
}
