/* The gateway's HTTP server: h2o (HTTP/1.1, HTTP/2 by ALPN and h2c, WebSocket through wslay) on a
 * libuv loop of its own thread. A request is read and classified here, then run as an exchange
 * (exchange.c) whose response chunks come back through a ready list and are written as h2o asks
 * for more (its generator's proceed), one chunk at a time. */
#include "gateway.h"

#include <ctype.h>
#include <netdb.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <uv.h>

#include <h2o.h>
#include <h2o/http2.h>
#include <h2o/websocket.h>
#include <wslay/wslay.h>

#include "agentz/v1/agent.pb-c.h"
#include "agentz/v1/system.pb-c.h"
#include "agentz/v1/task.pb-c.h"
#include "agentz/v1/workflow.pb-c.h"
#include "assets.h"
#include "core/log.h"
#include "cors.h"
#include "descriptor_set.h"
#include "exchange.h"
#include "grpc/health/v1/health.pb-c.h"
#include "openapi.h"
#include "routes.h"
#include "system/prom.h"
#include "upstream.h"

#ifndef AZ_VERSION
#define AZ_VERSION "0.1.0"
#endif

#define URI_MAX 8192           /* path + query; longer is 414 */
#define HEALTH_TIMEOUT_MS 2000 /* /readyz's upstream check */
#define TICK_MS 20             /* the timer that runs the watch list */
/* A stream whose call was accepted (headers came) but that has neither an event nor a status
 * this long later gets its 200 head: an error status comes right with the headers, so waiting
 * this little lets a failed call answer with a real HTTP status without holding idle streams. */
#define STREAM_HEAD_DELAY_MS 250
#define WS_CLOSE_WAIT_MS 2000  /* a WebSocket that does not answer our close frame is cut */
#define DRAIN_MS 1500          /* shutdown: connections get this long to finish, then are cut */
#define CUT_WAIT_MS 1000       /* ... and h2o this long to close the cut ones */
#define SWEEP_MS 250           /* how often slow HTTP/1 requests are looked for (408) */

/* The API's CSP: nothing may be loaded or framed from a JSON response. */
static const char CSP_API[] = "default-src 'none'; frame-ancestors 'none'";

typedef enum { M_GET, M_HEAD, M_POST, M_PUT, M_PATCH, M_DELETE, M_OPTIONS, M_OTHER } method;

static const char *const METHODS[] = {
    [M_GET] = "GET",     [M_HEAD] = "HEAD",     [M_POST] = "POST",       [M_PUT] = "PUT",
    [M_PATCH] = "PATCH", [M_DELETE] = "DELETE", [M_OPTIONS] = "OPTIONS", [M_OTHER] = "OTHER",
};

/* What the HTTP side keeps per exchange; x->http points at it. Plain HTTP requests live in the
 * request's memory pool (h2o frees them with the request); WebSockets outlive their upgrade
 * request and are allocated on their own. */
typedef struct side side;
struct side {
    az_gateway *g;
    az_xch *x; /* holds a reference */
    int is_ws;
    int watched;
    side *wprev, *wnext;
    int64_t head_due;  /* STREAM_HEAD_DELAY_MS deadline; 0 = none */
    int head_armed;    /* the delay was started once */
    method m;
    int status_sent;
    size_t bytes_out;
    int stream_kind;   /* az_prom_stream_kind + 1 while counted as an open stream; 0 = none */
};

typedef struct tcpconn tcpconn;
/* An accepted connection: h2o owns the handle (and closes it); we keep a list to cut, and
 * what the 408 sweep needs to know. */
struct tcpconn {
    uv_tcp_t tcp;        /* first, so the handle is the connection */
    tcpconn *next, *prev;
    h2o_socket_t *sock;  /* NULL once h2o disposed of it */
    void *h1;            /* plaintext: h2o's HTTP/1 connection, sock->data while it speaks HTTP/1 */
    int inflight;        /* requests handed to on_req and not yet disposed of */
    int64_t wait_since;  /* when the connection began waiting for its next request */
    int timed_out;       /* 408 sent */
    int stuck;           /* sweeps that saw h2o wait on a write libuv no longer has */
};

typedef struct hreq {
    side s;
    h2o_generator_t gen;
    h2o_req_t *req;       /* NULL once h2o disposed of it */
    az_chunk *inflight;   /* handed to h2o_send: kept until proceed (or disposal) */
    int sending;          /* waiting for proceed */
    int started;          /* h2o_start_response was called */
    int finished;         /* the final h2o_send was made */
    tcpconn *conn;        /* HTTP/1 requests: their connection, told when the request ends */
} hreq;

typedef struct wsconn wsconn;
struct wsconn {
    side s;
    h2o_websocket_conn_t *ws;
    int busy;             /* inside a call that may close the connection */
    int dead;             /* h2o closed it while busy: free when not */
    int stalled;          /* messages wait in wslay: ack them once it drained */
    int pending_acks;     /* stream messages handed to wslay and not yet acknowledged */
    int closing;          /* our close frame is queued */
    int close_code;       /* a close waiting for the data queued before it (wslay sends control
                             frames first, which would drop that data) */
    char close_reason[124];
    int64_t close_due;
    wsconn *all_next, *all_prev;
};

struct az_gateway {
    az_gateway_config cfg;
    az_routes *routes;
    az_upstream *up;
    az_cors *cors;
    az_assets *assets;
    char *csp_app;
    char *ui_config;
    size_t ui_config_len;
    az_xch_env env;
    atomic_int stopping;
    int tls;
    int port;

    uv_loop_t loop;
    uv_tcp_t listener;
    uv_async_t wakeup;
    uv_timer_t tick;
    int tick_running;
    h2o_globalconf_t config;
    h2o_context_t ctx;
    h2o_accept_ctx_t accept_ctx;
    SSL_CTX *ssl;
    pthread_t thread;
    int started;
    atomic_int draining; /* the loop is to close its listener and wind down */
    int64_t drain_until;
    int conns;           /* accepted TCP connections still open */
    tcpconn *tcpall;     /* ... all of them, so shutdown can cut those left */
    int cut;             /* the drain deadline passed and the rest were cut */
    uv_timer_t sweep;    /* answers HTTP/1 requests that do not arrive in time with 408 */
    side *watch;         /* exchanges waiting on time (head delay, WebSocket drain/close) */
    wsconn *wsall;       /* every open WebSocket */

    pthread_mutex_t mu;  /* guards ready and loop_alive */
    az_xch *ready;
    int loop_alive;
};

static void cut_connections(az_gateway *g);
static void conn_request_done(tcpconn *c);
static tcpconn *conn_of(h2o_req_t *req);

/* ------------------------------------------------------------------ small helpers */

static int64_t now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

static const char *reason_phrase(int status)
{
    static const struct {
        int status;
        const char *reason;
    } phrases[] = {
        {101, "Switching Protocols"}, {200, "OK"}, {204, "No Content"}, {304, "Not Modified"},
        {400, "Bad Request"}, {401, "Unauthorized"}, {403, "Forbidden"}, {404, "Not Found"},
        {405, "Method Not Allowed"}, {408, "Request Timeout"}, {409, "Conflict"},
        {413, "Payload Too Large"}, {414, "URI Too Long"}, {429, "Too Many Requests"},
        {431, "Request Header Fields Too Large"}, {499, "Client Closed Request"},
        {500, "Internal Server Error"}, {501, "Not Implemented"}, {503, "Service Unavailable"},
        {504, "Gateway Timeout"},
    };
    for (size_t i = 0; i < sizeof phrases / sizeof *phrases; i++)
        if (phrases[i].status == status) return phrases[i].reason;
    return status < 400 ? "OK" : status < 500 ? "Bad Request" : "Internal Server Error";
}

static void on_tick(uv_timer_t *t);

static void watch(side *s)
{
    az_gateway *g = s->g;
    if (!s->watched) {
        s->watched = 1;
        s->wprev = NULL;
        s->wnext = g->watch;
        if (g->watch) g->watch->wprev = s;
        g->watch = s;
    }
    if (!g->tick_running) {
        uv_timer_start(&g->tick, on_tick, TICK_MS, TICK_MS);
        g->tick_running = 1;
    }
}

static void unwatch(side *s)
{
    if (!s->watched) return;
    if (s->wprev) s->wprev->wnext = s->wnext;
    else s->g->watch = s->wnext;
    if (s->wnext) s->wnext->wprev = s->wprev;
    s->watched = 0;
    s->wprev = s->wnext = NULL;
}

/* ------------------------------------------------------------------ the ready list */

/* From any thread: x has chunks for us. */
static void on_wake(void *arg, az_xch *x)
{
    az_gateway *g = arg;
    pthread_mutex_lock(&g->mu);
    int alive = g->loop_alive;
    if (alive && !x->http_queued) {
        x->http_queued = 1;
        az_xch_ref(x);
        x->http_next = g->ready;
        g->ready = x;
    }
    pthread_mutex_unlock(&g->mu);
    if (alive) uv_async_send(&g->wakeup);
}

static void pump(side *s);

/* Counts s as an open stream of kind k (metrics). */
static void stream_opened(side *s, az_prom_stream_kind k)
{
    if (s->stream_kind) return;
    s->stream_kind = (int)k + 1;
    az_prom_http_stream(k, 1);
}

/* The request's route label: its REST template, gRPC path, local path, "static", or NULL. */
static const char *route_label(const az_xch *x)
{
    if (x->route) return az_httprule_template(x->route->rule);
    if (x->rpc) return x->rpc->grpc_path;
    return x->metrics_route;
}

/* Runs once per request (or WebSocket) when it is over: metrics, then the access log line. */
static void log_access(side *s)
{
    az_gateway *g = s->g;
    az_xch *x = s->x;
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    double ms = (double)(t.tv_sec - x->start.tv_sec) * 1e3 + (double)(t.tv_nsec - x->start.tv_nsec) / 1e6;
    if (s->stream_kind) az_prom_http_stream((az_prom_stream_kind)(s->stream_kind - 1), -1);
    s->stream_kind = 0;
    az_prom_http_request(route_label(x), s->is_ws ? "GET" : METHODS[s->m < M_OTHER ? s->m : M_OTHER],
                         s->status_sent, (int64_t)(ms * 1000));
    if (!g->cfg.access_log || !x->uri) return;
    char fields[1024];
    int n = snprintf(fields, sizeof fields,
             "method=%s path=%.300s status=%d duration_ms=%.3f bytes=%zu peer=%s request_id=%s",
             s->is_ws ? "WS" : s->m < M_OTHER ? METHODS[s->m] : "OTHER", x->uri, s->status_sent, ms,
             s->bytes_out, x->peer[0] ? x->peer : "-", x->request_id[0] ? x->request_id : "-");
    char trace[33], span[17];
    if (az_log_traceparent(x->hv[AZ_H_TRACEPARENT], x->hl[AZ_H_TRACEPARENT], trace, span) && n > 0 &&
        (size_t)n < sizeof fields)
        snprintf(fields + n, sizeof fields - (size_t)n, " trace_id=%s span_id=%s", trace, span);
    az_log_kv(s->status_sent >= 500 ? AZ_LOG_WARN : AZ_LOG_INFO, "http", fields);
}

/* ------------------------------------------------------------------ writing HTTP responses */

static void add_header(h2o_req_t *req, const char *name, const char *value)
{
    /* h2o keeps both pointers: they must live as long as the request. */
    h2o_iovec_t n = h2o_strdup(&req->pool, name, strlen(name));
    h2o_iovec_t v = h2o_strdup(&req->pool, value, strlen(value));
    h2o_add_header_by_str(&req->pool, &req->res.headers, n.base, n.len, 1, NULL, v.base, v.len);
}

/* Status, length, type, the security and CORS headers, then the chunk's own. */
static void start_response(hreq *h, az_chunk *c)
{
    az_gateway *g = h->s.g;
    az_xch *x = h->s.x;
    h2o_req_t *req = h->req;
    req->res.status = c->status;
    req->res.reason = reason_phrase(c->status);
    req->res.content_length = c->content_length < 0 ? SIZE_MAX : (size_t)c->content_length;
    if (c->ctype) add_header(req, "content-type", c->ctype);
    add_header(req, "x-content-type-options", "nosniff");
    add_header(req, "referrer-policy", "no-referrer");
    add_header(req, "x-frame-options", "DENY");
    add_header(req, "content-security-policy", c->asset_csp ? g->csp_app : CSP_API);
    add_header(req, "cache-control", c->cache ? c->cache : "no-store");
    if (c->asset_csp) {
        add_header(req, "cross-origin-opener-policy", "same-origin");
        add_header(req, "cross-origin-resource-policy", "same-origin");
    }
    if (g->tls) add_header(req, "strict-transport-security", "max-age=63072000; includeSubDomains");
    if (x->hv[AZ_H_ORIGIN] && az_cors_allowed(g->cors, x->hv[AZ_H_ORIGIN], x->hl[AZ_H_ORIGIN])) {
        add_header(req, "access-control-allow-origin", x->hv[AZ_H_ORIGIN]);
        add_header(req, "vary", "Origin");
        add_header(req, "access-control-expose-headers", AZ_CORS_EXPOSE_HEADERS);
    }
    for (int i = 0; i < c->nextra; i++) add_header(req, c->extra[i][0], c->extra[i][1]);
    pthread_mutex_lock(&x->mu);
    int close = x->close_after;
    pthread_mutex_unlock(&x->mu);
    if (close && req->version < 0x200) req->http1_is_persistent = 0;
    h->s.status_sent = c->status;
    h->started = 1;
    h2o_start_response(req, &h->gen);
}

/* Writes what x has queued, one h2o_send at a time. Must not touch h after an h2o_send (h2o
 * may dispose of the request from inside it). */
static void pump_http(hreq *h)
{
    while (h->req && !h->sending && !h->finished) {
        int next_is_end = 0;
        az_chunk *c = az_xch_take(h->s.x, &next_is_end);
        if (!c) return;
        switch (c->kind) {
        case AZ_CHUNK_HEAD:
            if (!h->started) start_response(h, c);
            az_chunk_free(c);
            break;
        case AZ_CHUNK_DATA: {
            if (!h->started || h->s.x->head_only) {
                /* HEAD: the length GET would send, no body. */
                az_chunk_free(c);
                break;
            }
            h2o_iovec_t buf = h2o_iovec_init(c->data, c->len);
            h->inflight = c;
            h->sending = 1;
            h->s.bytes_out += c->len;
            h2o_req_t *req = h->req;
            if (next_is_end) {
                az_chunk_free(az_xch_take(h->s.x, NULL));
                h->finished = 1;
                log_access(&h->s);
            }
            h2o_send(req, &buf, 1, next_is_end ? H2O_SEND_STATE_FINAL : H2O_SEND_STATE_IN_PROGRESS);
            return;
        }
        case AZ_CHUNK_END: {
            if (!h->started) {
                /* Only a failure to allocate the head gets here: answer something. */
                c->status = 500;
                c->content_length = 0;
                start_response(h, c);
            }
            az_chunk_free(c);
            h->finished = 1;
            log_access(&h->s);
            h2o_send(h->req, NULL, 0, H2O_SEND_STATE_FINAL);
            return;
        }
        }
    }
}

static void on_proceed(h2o_generator_t *gen, h2o_req_t *req)
{
    hreq *h = H2O_STRUCT_FROM_MEMBER(hreq, gen, gen);
    az_chunk *c = h->inflight;
    h->inflight = NULL;
    h->sending = 0;
    if (c && c->ack) az_xch_ack(h->s.x);
    az_chunk_free(c);
    pump_http(h);
}

/* The client went away while the response was under way. */
static void on_stop(h2o_generator_t *gen, h2o_req_t *req)
{
    hreq *h = H2O_STRUCT_FROM_MEMBER(hreq, gen, gen);
    az_xch_close(h->s.x);
}

/* h2o is done with the request (answered, or the connection is gone). */
static void on_hreq_dispose(void *p)
{
    hreq *h = p;
    az_xch *x = h->s.x;
    if (h->conn) conn_request_done(h->conn);
    h->conn = NULL;
    unwatch(&h->s);
    h->req = NULL;
    if (!x) return; /* the exchange went on as a WebSocket */
    if (!h->finished) {
        if (!h->s.status_sent) h->s.status_sent = 499; /* the client closed the request */
        log_access(&h->s);
    }
    if (x->http == h) x->http = NULL;
    az_xch_close(x);
    az_chunk_free(h->inflight);
    h->inflight = NULL;
    az_xch_unref(x);
}

/* ------------------------------------------------------------------ WebSockets */

static void ws_free(wsconn *w)
{
    az_gateway *g = w->s.g;
    unwatch(&w->s);
    if (w->all_prev) w->all_prev->all_next = w->all_next;
    else if (g->wsall == w) g->wsall = w->all_next;
    if (w->all_next) w->all_next->all_prev = w->all_prev;
    if (w->s.x) {
        log_access(&w->s);
        w->s.x->http = NULL;
        az_xch_close(w->s.x);
        az_xch_unref(w->s.x);
    }
    free(w);
}

/* A message from the client (ignored: the stream is one-way), or arg NULL when the connection
 * closed. */
static void on_ws_msg(h2o_websocket_conn_t *conn, const struct wslay_event_on_msg_recv_arg *arg)
{
    wsconn *w = conn->data;
    if (arg) return;
    h2o_websocket_close(conn);
    w->ws = NULL;
    if (w->busy) w->dead = 1;
    else ws_free(w);
}

/* Queues the pending close frame once wslay has sent every data message before it. */
static void ws_close_when_drained(wsconn *w)
{
    if (!w->close_code || !w->ws || wslay_event_get_queued_msg_count(w->ws->ws_ctx) != 0) return;
    wslay_event_queue_close(w->ws->ws_ctx, (uint16_t)w->close_code, (const uint8_t *)w->close_reason,
                            strlen(w->close_reason));
    w->close_code = 0;
}

/* Tells the exchange that every message handed to wslay left its queue. */
static void ws_ack(wsconn *w)
{
    for (; w->pending_acks > 0; w->pending_acks--) az_xch_ack(w->s.x);
}

/* Hands queued chunks to wslay; their window slots are given back once wslay's queue ran
 * empty, so a client that does not read holds the stream at its window. */
static void pump_ws(wsconn *w)
{
    if (!w->ws || w->stalled || w->closing) return;
    if (!w->ws->sock) {
        /* The 101 is still on its way; the watch list tries again. */
        watch(&w->s);
        return;
    }
    w->busy = 1;
    int wrote = 0;
    az_chunk *c;
    while (!w->closing && (c = az_xch_take(w->s.x, NULL)) != NULL) {
        if (c->kind == AZ_CHUNK_DATA) {
            struct wslay_event_msg m = {WSLAY_TEXT_FRAME, c->data, c->len};
            if (wslay_event_queue_msg(w->ws->ws_ctx, &m) == 0) {
                w->s.bytes_out += c->len;
                wrote = 1;
            }
            w->pending_acks += c->ack;
        } else if (c->kind == AZ_CHUNK_END) {
            w->close_code = c->ws_close ? c->ws_close : 1000;
            snprintf(w->close_reason, sizeof w->close_reason, "%s", c->reason);
            w->closing = 1;
            w->close_due = now_ms() + WS_CLOSE_WAIT_MS;
        }
        az_chunk_free(c);
    }
    ws_close_when_drained(w);
    if (wrote) h2o_websocket_proceed(w->ws);
    w->busy = 0;
    if (w->dead) {
        ws_free(w);
        return;
    }
    if (w->closing) watch(&w->s);
    if (w->pending_acks && w->ws) {
        if (wslay_event_get_queued_msg_count(w->ws->ws_ctx) == 0) {
            ws_ack(w);
        } else {
            w->stalled = 1;
            watch(&w->s);
        }
    }
}

/* ------------------------------------------------------------------ timers and wakeups */

static void pump(side *s)
{
    if (s->is_ws) pump_ws((wsconn *)s);
    else pump_http((hreq *)s);
}

/* Runs the watch list: stream heads due, WebSockets drained or overdue to close. */
static void on_tick(uv_timer_t *t)
{
    az_gateway *g = t->data;
    int64_t now = now_ms();
    side *s = g->watch;
    while (s) {
        side *next = s->wnext;
        int keep = 0;
        if (s->head_due) {
            if (now >= s->head_due) {
                s->head_due = 0;
                az_xch_stream_head(s->x);
            } else {
                keep = 1;
            }
        }
        if (s->is_ws) {
            wsconn *w = (wsconn *)s;
            if (!w->ws) {
                keep = 0;
            } else if (w->closing) {
                if (w->close_code) {
                    ws_close_when_drained(w);
                    if (!w->close_code) {
                        w->busy = 1;
                        h2o_websocket_proceed(w->ws);
                        w->busy = 0;
                        if (w->dead) {
                            ws_free(w);
                            s = next;
                            continue;
                        }
                    }
                }
                if (now >= w->close_due) {
                    /* No close frame came back: cut the connection. */
                    h2o_websocket_close(w->ws);
                    w->ws = NULL;
                    ws_free(w);
                    s = next;
                    continue;
                }
                keep = 1;
            } else if (!w->ws->sock) {
                keep = 1; /* the 101 is still being written */
            } else if (w->stalled) {
                if (wslay_event_get_queued_msg_count(w->ws->ws_ctx) == 0) {
                    /* Drained: give the window back and write what came meanwhile (pump_ws
                     * watches again if needed, and may free w, so leave the list first). */
                    w->stalled = 0;
                    ws_ack(w);
                    unwatch(s);
                    pump_ws(w);
                    s = next;
                    continue;
                } else {
                    keep = 1;
                }
            } else {
                /* The upgrade completed: write what waited (pump_ws watches again if needed,
                 * and may free w, so leave the list first). */
                unwatch(s);
                pump_ws(w);
                s = next;
                continue;
            }
        }
        if (!keep) unwatch(s);
        s = next;
    }
    if (atomic_load(&g->draining)) {
        /* Idle HTTP/1.1 connections wait for their next request: end that wait now. */
        g->ctx.http1.req_timeout.timeout = 0;
        h2o_timeout_run(&g->loop, &g->ctx.http1.req_timeout, h2o_now(&g->loop));
        if (g->conns > 0 && now >= g->drain_until && !g->cut) {
            cut_connections(g);
            g->cut = 1;
        }
        if (g->conns == 0 || now >= g->drain_until + CUT_WAIT_MS) uv_stop(&g->loop);
        return;
    }
    if (!g->watch) {
        uv_timer_stop(&g->tick);
        g->tick_running = 0;
    }
}

static void begin_drain(az_gateway *g)
{
    if (g->drain_until) return;
    g->drain_until = now_ms() + DRAIN_MS;
    h2o_context_request_shutdown(&g->ctx);
    if (!uv_is_closing((uv_handle_t *)&g->listener)) uv_close((uv_handle_t *)&g->listener, NULL);
    /* WebSockets get a close frame; the tick cuts those that do not answer. */
    for (wsconn *w = g->wsall; w; w = w->all_next) {
        if (w->ws && w->ws->sock && !w->closing) {
            w->close_code = 4014;
            snprintf(w->close_reason, sizeof w->close_reason, "gateway shutting down");
            ws_close_when_drained(w);
            w->closing = 1;
            w->close_due = now_ms() + WS_CLOSE_WAIT_MS;
            watch(&w->s);
        }
    }
    for (wsconn *w = g->wsall, *n; w; w = n) {
        n = w->all_next;
        if (w->ws && w->closing) {
            w->busy = 1;
            h2o_websocket_proceed(w->ws);
            w->busy = 0;
            if (w->dead) ws_free(w);
        }
    }
    if (!g->tick_running) {
        uv_timer_start(&g->tick, on_tick, TICK_MS, TICK_MS);
        g->tick_running = 1;
    }
}

static void on_wakeup(uv_async_t *a)
{
    az_gateway *g = a->data;
    if (atomic_load(&g->draining)) begin_drain(g);
    pthread_mutex_lock(&g->mu);
    az_xch *list = g->ready;
    g->ready = NULL;
    for (az_xch *x = list; x; x = x->http_next) {
        x->http_queued = 0;
        x->http_drain = x->http_next;
    }
    pthread_mutex_unlock(&g->mu);
    while (list) {
        az_xch *x = list;
        list = x->http_drain;
        side *s = x->http;
        if (s) {
            /* An accepted stream waits a moment for its first event or error (see above). */
            pthread_mutex_lock(&x->mu);
            int arm = x->headers_in && !x->head_queued && !s->head_armed;
            pthread_mutex_unlock(&x->mu);
            if (arm) {
                s->head_armed = 1;
                s->head_due = now_ms() + STREAM_HEAD_DELAY_MS;
                watch(s);
            }
            pump(s);
        }
        az_xch_unref(x);
    }
}

/* ------------------------------------------------------------------ reading requests */

static int hexval(int c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* Percent-decodes s[0..n) into out (NUL-terminated); plus = 1 turns '+' into a space (query).
 * Returns the length, or -1 for a bad escape, a NUL, or (in paths) an encoded '/'. */
static long long pct_decode(const char *s, size_t n, int plus, char *out)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        int c = (unsigned char)s[i];
        if (c == '%') {
            if (i + 2 >= n) return -1;
            int hi = hexval(s[i + 1]), lo = hi < 0 ? -1 : hexval(s[i + 2]);
            if (lo < 0) return -1;
            c = hi << 4 | lo;
            if (c == 0 || (!plus && c == '/')) return -1;
            i += 2;
        } else if (c == '+' && plus) {
            c = ' ';
        }
        out[o++] = (char)c;
    }
    out[o] = '\0';
    return (long long)o;
}

/* The decoded path of a request; dot segments are refused rather than interpreted. 0, or -1
 * with a reason in why. */
static int decode_path(az_xch *x, const char *raw, size_t n, const char **why)
{
    if (!(x->uri = malloc(n + 1))) {
        *why = "out of memory";
        return -1;
    }
    long long len = pct_decode(raw, n, 0, x->uri);
    if (len < 0 || x->uri[0] != '/') {
        /* The access log shows the path as it came. */
        memcpy(x->uri, raw, n);
        x->uri[n] = '\0';
        x->uri_len = 0;
        *why = "the path is not a valid percent-encoded absolute path (an encoded '/' is not allowed)";
        return -1;
    }
    x->uri_len = (size_t)len;
    for (const char *p = x->uri; (p = strstr(p, "/.")) != NULL; p += 2) {
        if (p[2] == '/' || p[2] == '\0' || (p[2] == '.' && (p[3] == '/' || p[3] == '\0'))) {
            *why = "the path has a . or .. segment";
            return -1;
        }
    }
    return 0;
}

/* Splits and decodes the query string. 0, or the HTTP status of the problem (400). */
static int decode_query(az_xch *x, const char *q, size_t n, const char **why)
{
    if (!n) return 0;
    if (!(x->qbuf = malloc(n + 1))) {
        *why = "out of memory";
        return 400;
    }
    char *out = x->qbuf;
    size_t i = 0;
    while (i < n) {
        size_t j = i;
        while (j < n && q[j] != '&') j++;
        if (j > i) {
            if (x->nq >= AZ_TRANSCODE_MAX_PARAMS) {
                *why = "too many query parameters";
                return 400;
            }
            const char *eq = memchr(q + i, '=', j - i);
            size_t nl = eq ? (size_t)(eq - (q + i)) : j - i;
            long long dn = pct_decode(q + i, nl, 1, out);
            char *name = out;
            if (dn < 0) {
                *why = "a query parameter name is not validly percent-encoded";
                return 400;
            }
            out += dn + 1;
            char *value = out;
            long long dv = 0;
            if (eq) {
                dv = pct_decode(eq + 1, (size_t)(q + j - eq - 1), 1, out);
                if (dv < 0) {
                    *why = "a query parameter value is not validly percent-encoded";
                    return 400;
                }
            } else {
                *out = '\0';
            }
            out += dv + 1;
            if (dn == 12 && memcmp(name, "access_token", 12) == 0) {
                /* The credential of an EventSource or WebSocket, which cannot send headers. */
                free(x->access_token);
                x->access_token = strdup(value);
            } else {
                x->q[x->nq++] = (az_query_param){name, (size_t)dn, value, (size_t)dv};
            }
        }
        i = j + 1;
    }
    return 0;
}

/* Copies the headers the exchange reads into one block, and sums what all headers weigh. */
static int copy_headers(az_xch *x, h2o_req_t *req, size_t *weight)
{
    size_t total = 0;
    *weight = 0;
    for (size_t i = 0; i < req->headers.size; i++)
        *weight += req->headers.entries[i].name->len + req->headers.entries[i].value.len + 4;
    ssize_t at[AZ_NHDR];
    for (int i = 0; i < AZ_NHDR; i++) {
        at[i] = h2o_find_header_by_str(&req->headers, az_xch_header_names[i], strlen(az_xch_header_names[i]), -1);
        if (at[i] >= 0) total += req->headers.entries[at[i]].value.len + 1;
    }
    if (!total) return 0;
    if (!(x->hbuf = malloc(total))) return -1;
    char *p = x->hbuf;
    for (int i = 0; i < AZ_NHDR; i++) {
        if (at[i] < 0) continue;
        h2o_iovec_t v = req->headers.entries[at[i]].value;
        memcpy(p, v.base, v.len);
        p[v.len] = '\0';
        x->hv[i] = p;
        x->hl[i] = v.len;
        p += v.len + 1;
    }
    return 0;
}

static method method_of(h2o_iovec_t m)
{
    for (int i = 0; i < M_OTHER; i++)
        if (m.len == strlen(METHODS[i]) && memcmp(m.base, METHODS[i], m.len) == 0) return (method)i;
    return M_OTHER;
}

/* ------------------------------------------------------------------ local answers */

static void serve_asset(az_gateway *g, az_xch *x)
{
    if (!g->assets) {
        az_xch_fail(x, 0, 5, "no web UI is installed on this gateway (AGENTZ_GATEWAY_WEB_DIR)");
        return;
    }
    const az_asset *a = az_assets_find(g->assets, x->uri, x->uri_len);
    if (!a) {
        /* A path without an extension is a route of the single-page app. */
        const char *slash = strrchr(x->uri, '/');
        if (strchr(slash ? slash : x->uri, '.')) {
            az_xch_fail(x, 0, 5, "%s not found", x->uri);
            return;
        }
        a = az_assets_index(g->assets);
    }
    int gz = a->gzip && x->hv[AZ_H_ACCEPT_ENCODING] && strstr(x->hv[AZ_H_ACCEPT_ENCODING], "gzip");
    int not_modified = x->hv[AZ_H_IF_NONE_MATCH] && strcmp(x->hv[AZ_H_IF_NONE_MATCH], a->etag) == 0;
    az_chunk *h = az_chunk_new(AZ_CHUNK_HEAD), *e = az_chunk_new(AZ_CHUNK_END), *d = NULL;
    if (!not_modified && !x->head_only) d = az_chunk_new(AZ_CHUNK_DATA);
    if (!h || !e || (!not_modified && !x->head_only && !d)) {
        az_chunk_free(h);
        az_chunk_free(e);
        az_chunk_free(d);
        az_xch_fail(x, 0, 8, "out of memory");
        return;
    }
    h->status = not_modified ? 304 : 200;
    h->ctype = a->content_type;
    h->content_length = not_modified ? 0 : (long long)(gz ? a->gzip_len : a->len);
    h->asset_csp = 1;
    h->cache = a->immutable ? "public, max-age=31536000, immutable" : "no-cache";
    az_chunk_header(h, "etag", a->etag, strlen(a->etag));
    if (a->gzip) az_chunk_header(h, "vary", "Accept-Encoding", 15);
    if (gz) az_chunk_header(h, "content-encoding", "gzip", 4);
    az_xch_push(x, h);
    if (d) {
        d->data = (uint8_t *)(gz ? a->gzip : a->data);
        d->len = gz ? a->gzip_len : a->len;
        d->borrowed = 1;
        az_xch_push(x, d);
    }
    az_xch_push(x, e);
}

static void serve_healthz(az_gateway *g, az_xch *x)
{
    static const char ok[] = "{\"status\":\"ok\"}";
    az_xch_respond(x, 200, "application/json", (uint8_t *)ok, sizeof ok - 1, 1);
}

static void serve_readyz(az_gateway *g, az_xch *x)
{
    x->kind = AZ_XCH_HEALTH;
    x->fixed_timeout_ms = HEALTH_TIMEOUT_MS; /* the probe has its own deadline */
    az_xch_run(x);
}

static void serve_openapi(az_gateway *g, az_xch *x)
{
    az_xch_respond(x, 200, "application/json", (uint8_t *)az_openapi_json, az_openapi_json_len, 1);
}

static void serve_ui_config(az_gateway *g, az_xch *x)
{
    az_xch_respond(x, 200, "application/json", (uint8_t *)g->ui_config, g->ui_config_len, 1);
}

/* Fixed paths the gateway answers itself (GET and HEAD). */
static const struct {
    const char *path;
    void (*serve)(az_gateway *, az_xch *);
} LOCAL[] = {
    {"/healthz", serve_healthz},
    {"/readyz", serve_readyz},
    {"/openapi.json", serve_openapi},
    {"/ui/config.json", serve_ui_config},
};

/* Answers a CORS preflight. */
static void preflight(az_gateway *g, az_xch *x)
{
    if (!x->hv[AZ_H_ORIGIN] || !az_cors_allowed(g->cors, x->hv[AZ_H_ORIGIN], x->hl[AZ_H_ORIGIN])) {
        az_xch_fail(x, 403, 7, "origin %.200s is not allowed (AGENTZ_CORS_ORIGINS)",
                    x->hv[AZ_H_ORIGIN] ? x->hv[AZ_H_ORIGIN] : "(none)");
        return;
    }
    char bad[64];
    if (x->hv[AZ_H_AC_HEADERS] &&
        !az_cors_headers_allowed(x->hv[AZ_H_AC_HEADERS], x->hl[AZ_H_AC_HEADERS], bad, sizeof bad)) {
        az_xch_fail(x, 403, 7, "request header %s is not allowed cross-origin", bad);
        return;
    }
    az_chunk *h = az_chunk_new(AZ_CHUNK_HEAD), *e = az_chunk_new(AZ_CHUNK_END);
    if (!h || !e) {
        az_chunk_free(h);
        az_chunk_free(e);
        az_xch_fail(x, 0, 8, "out of memory");
        return;
    }
    h->status = 204;
    h->content_length = 0;
    az_chunk_header(h, "access-control-allow-methods", AZ_CORS_ALLOW_METHODS, sizeof AZ_CORS_ALLOW_METHODS - 1);
    az_chunk_header(h, "access-control-allow-headers", AZ_CORS_ALLOW_HEADERS, sizeof AZ_CORS_ALLOW_HEADERS - 1);
    az_chunk_header(h, "access-control-max-age", AZ_CORS_MAX_AGE, sizeof AZ_CORS_MAX_AGE - 1);
    az_xch_push(x, h);
    az_xch_push(x, e);
}

static int accepts(const az_xch *x, const char *type)
{
    return x->hv[AZ_H_ACCEPT] && strcasestr(x->hv[AZ_H_ACCEPT], type) != NULL;
}

/* A REST path: route it, or answer 404/405. Returns 1 when x is to run. */
static int route_rest(az_gateway *g, az_xch *x, method m)
{
    char allow[128];
    const char *name = m < M_OTHER ? METHODS[m] : "?";
    az_route_result r = az_routes_match(g->routes, name, x->uri, x->uri_len, &x->route, x->b,
                                        AZ_HTTPRULE_MAX_VARS, &x->nb, allow, sizeof allow);
    if (r == AZ_ROUTE_NO_PATH) {
        az_xch_fail(x, 0, 5, "no API route matches %s %s", name, x->uri);
        return 0;
    }
    if (r == AZ_ROUTE_BAD_METHOD) {
        char *json = NULL;
        size_t len = 0;
        char text[300];
        snprintf(text, sizeof text, "%s does not take %s (allowed: %s)", x->uri, name, allow);
        az_chunk *h = az_chunk_new(AZ_CHUNK_HEAD), *d = az_chunk_new(AZ_CHUNK_DATA), *e = az_chunk_new(AZ_CHUNK_END);
        if (!h || !d || !e || az_transcode_status_json(12, text, &json, &len) != AZ_OK) {
            az_chunk_free(h);
            az_chunk_free(d);
            az_chunk_free(e);
            az_xch_fail(x, 0, 8, "out of memory");
            return 0;
        }
        h->status = 405;
        h->ctype = "application/json";
        h->content_length = (long long)len;
        az_chunk_header(h, "allow", allow, strlen(allow));
        az_chunk_header(h, "x-request-id", x->request_id, strlen(x->request_id));
        d->data = (uint8_t *)json;
        d->len = len;
        az_xch_push(x, h);
        az_xch_push(x, d);
        az_xch_push(x, e);
        return 0;
    }
    const az_route_method *rm = x->route->method;
    if (rm->client_streaming) {
        az_xch_fail(x, 0, 12, "%s is client streaming, which REST cannot carry", rm->grpc_path);
        return 0;
    }
    if (rm->server_streaming) {
        x->kind = AZ_XCH_STREAM;
        x->fmt = accepts(x, "text/event-stream") ? AZ_EVENTFMT_SSE : AZ_EVENTFMT_NDJSON;
        return 1;
    }
    if (x->access_token) {
        /* Query credentials exist for EventSource and WebSocket only: keep keys out of URLs. */
        az_xch_fail(x, 0, 3, "access_token is accepted on streaming routes only; send an Authorization header");
        return 0;
    }
    x->kind = AZ_XCH_REST;
    return 1;
}

/* The Connect protocol's content types: application/proto and application/json for unary
 * calls, application/connect+proto and application/connect+json for streams. Sets x's codec;
 * returns 0 for anything else. */
static int connect_codec(az_xch *x, const char *ct)
{
    static const struct {
        const char *type;
        int json, stream;
    } types[] = {
        {"application/proto", 0, 0},         {"application/json", 1, 0},
        {"application/connect+proto", 0, 1}, {"application/connect+json", 1, 1},
    };
    size_t n = strcspn(ct, "; ");
    for (size_t i = 0; i < sizeof types / sizeof *types; i++) {
        if (strlen(types[i].type) != n || strncasecmp(ct, types[i].type, n) != 0) continue;
        x->json = types[i].json;
        x->connect_stream = types[i].stream;
        return 1;
    }
    return 0;
}

/* Classifies and runs (or answers) a request whose headers and body x holds. */
static void dispatch(az_gateway *g, az_xch *x, method m)
{
    const char *name = m < M_OTHER ? METHODS[m] : "?";
    if (atomic_load(&g->stopping)) {
        az_xch_fail(x, 0, 14, "gateway shutting down");
        return;
    }
    if (m == M_OTHER) {
        x->allow = "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS";
        az_xch_fail(x, 405, 12, "unsupported HTTP method");
        return;
    }
    if (m == M_OPTIONS) {
        if (x->hv[AZ_H_AC_METHOD]) preflight(g, x);
        else az_xch_fail(x, 0, 3, "OPTIONS without Access-Control-Request-Method is not a preflight");
        return;
    }
    const char *ct = x->hv[AZ_H_CTYPE];
    if (ct && strncasecmp(ct, "application/grpc-web", 20) == 0) {
        if (m != M_POST) {
            x->allow = "POST, OPTIONS";
            az_xch_fail(x, 405, 12, "grpc-web calls are POST, not %s", name);
            return;
        }
        x->kind = AZ_XCH_GRPCWEB;
        x->text = strncasecmp(ct + 20, "-text", 5) == 0;
        x->rpc = az_routes_find_method(g->routes, x->uri, x->uri_len);
        if (x->rpc && x->rpc->client_streaming) {
            az_xch_fail(x, 0, 12, "%s is client streaming, which grpc-web cannot carry", x->uri);
            return;
        }
        az_xch_run(x);
        return;
    }
    if (ct && m == M_POST && x->uri[0] == '/' && strncmp(x->uri, "/v1/", 4) != 0 &&
        connect_codec(x, ct)) {
        x->kind = AZ_XCH_CONNECT;
        x->rpc = az_routes_find_method(g->routes, x->uri, x->uri_len);
        if (!x->rpc) {
            az_xch_fail(x, 0, 12, "method %s is not served by this gateway", x->uri);
            return;
        }
        if (x->rpc->client_streaming) {
            az_xch_fail(x, 0, 12, "%s is client streaming, which the gateway cannot carry", x->uri);
            return;
        }
        az_xch_run(x);
        return;
    }
    for (size_t i = 0; i < sizeof LOCAL / sizeof *LOCAL; i++) {
        if (strcmp(x->uri, LOCAL[i].path) != 0) continue;
        if (m != M_GET && m != M_HEAD) {
            x->allow = "GET, HEAD";
            az_xch_fail(x, 405, 12, "%s takes GET, not %s", x->uri, name);
            return;
        }
        x->head_only = m == M_HEAD;
        x->metrics_route = LOCAL[i].path;
        LOCAL[i].serve(g, x);
        return;
    }
    if (strncmp(x->uri, "/v1/", 4) == 0 || strcmp(x->uri, "/v1") == 0) {
        x->head_only = m == M_HEAD;
        if (route_rest(g, x, m)) az_xch_run(x);
        return;
    }
    if (m != M_GET && m != M_HEAD) {
        az_xch_fail(x, 0, 5, "no route matches %s %s", name, x->uri);
        return;
    }
    x->head_only = m == M_HEAD;
    x->metrics_route = "static";
    serve_asset(g, x);
}

/* Reads a request into an exchange: peer, path, query, headers and limits. Returns 0, or the
 * HTTP status of a request refused here with why. */
static int read_request(az_gateway *g, az_xch *x, h2o_req_t *req, const char **why)
{
    struct sockaddr_storage sa;
    socklen_t sl = req->conn->callbacks->get_peername(req->conn, (struct sockaddr *)&sa);
    if (sl) h2o_socket_getnumerichost((struct sockaddr *)&sa, sl, x->peer);
    size_t weight = 0;
    if (copy_headers(x, req, &weight) != 0) {
        *why = "out of memory";
        return 500;
    }
    az_xch_request_id(x);
    size_t qat = req->query_at == SIZE_MAX ? req->path.len : req->query_at;
    if (req->path.len > URI_MAX) {
        *why = "the request URI is too long";
        return 414;
    }
    if (weight > (size_t)g->cfg.max_header_bytes) {
        *why = "the request headers are too large";
        return 431;
    }
    if (decode_path(x, req->path.base, qat, why) != 0) return 400;
    if (qat < req->path.len) {
        int st = decode_query(x, req->path.base + qat + 1, req->path.len - qat - 1, why);
        if (st) return st;
    }
    return 0;
}

/* The WebSocket subprotocol and credential: "agentz.v1" must be offered when any protocol is,
 * and "bearer.<token>" carries the token a browser cannot put in a header. */
static int ws_protocol(az_xch *x, int *offered_ours)
{
    *offered_ours = 0;
    const char *v = x->hv[AZ_H_WS_PROTOCOL];
    if (!v) return 0;
    int any = 0;
    for (const char *p = v; *p;) {
        while (*p == ' ' || *p == ',') p++;
        size_t n = strcspn(p, ", ");
        if (!n) break;
        any = 1;
        if (n == 9 && strncmp(p, "agentz.v1", 9) == 0) *offered_ours = 1;
        else if (n > 7 && strncmp(p, "bearer.", 7) == 0) {
            free(x->access_token);
            x->access_token = strndup(p + 7, n - 7);
        }
        p += n;
    }
    return any && !*offered_ours ? -1 : 0;
}

static int upgrade_ws(az_gateway *g, az_xch *x, h2o_req_t *req, const char *key)
{
    int ours = 0;
    if (atomic_load(&g->stopping)) return 503;
    if (ws_protocol(x, &ours) != 0) return 400;
    /* Browsers do not apply CORS to WebSockets: the gateway checks the origin itself. */
    if (x->hv[AZ_H_ORIGIN] && !az_cors_allowed(g->cors, x->hv[AZ_H_ORIGIN], x->hl[AZ_H_ORIGIN]) &&
        !az_cors_same_origin(x->hv[AZ_H_ORIGIN], x->hl[AZ_H_ORIGIN], req->authority.base, req->authority.len, g->tls))
        return 403;
    if (strncmp(x->uri, "/v1/", 4) != 0) {
        az_xch_fail(x, 0, 5, "no stream route matches %s", x->uri);
        return -1;
    }
    if (!route_rest(g, x, M_GET)) return -1; /* answered */
    if (x->kind != AZ_XCH_STREAM) {
        x->kind = AZ_XCH_LOCAL;
        az_xch_fail(x, 400, 3, "%s is not a stream: WebSocket is for the :watch and :stream routes", x->uri);
        return -1;
    }
    x->kind = AZ_XCH_WS;
    x->fmt = AZ_EVENTFMT_WS;
    wsconn *w = calloc(1, sizeof *w);
    if (!w) return 500;
    w->s.g = g;
    w->s.x = x;
    w->s.is_ws = 1;
    w->s.m = M_GET;
    w->s.status_sent = 101;
    stream_opened(&w->s, AZ_PROM_STREAM_WEBSOCKET);
    w->all_next = g->wsall;
    if (g->wsall) g->wsall->all_prev = w;
    g->wsall = w;
    x->http = w; /* the request's reference to x passes to w (on_req drops its own) */
    if (ours) add_header(req, "sec-websocket-protocol", "agentz.v1");
    w->ws = h2o_upgrade_to_websocket(req, key, w, on_ws_msg);
    az_xch_run(x);
    return 0;
}

static int on_req(h2o_handler_t *self, h2o_req_t *req)
{
    az_gateway *g = *(az_gateway **)(self + 1);
    hreq *h = h2o_mem_alloc_shared(&req->pool, sizeof *h, on_hreq_dispose);
    az_xch *x = az_xch_new(&g->env);
    memset(h, 0, sizeof *h);
    h->gen.proceed = on_proceed;
    h->gen.stop = on_stop;
    h->req = req;
    h->s.g = g;
    h->s.m = method_of(req->method);
    if ((h->conn = conn_of(req)) != NULL) h->conn->inflight++;
    if (!x) {
        h2o_send_error_generic(req, 503, "Service Unavailable", "out of memory", 0);
        return 0;
    }
    h->s.x = x;
    x->http = h;
    const char *why = "";
    int st = read_request(g, x, req, &why);
    if (st) {
        x->close_after = st == 431 || st == 414;
        az_xch_fail(x, st, st >= 500 ? 13 : st == 431 || st == 414 ? 8 : 3, "%s", why);
        pump_http(h);
        return 0;
    }
    const char *key = NULL;
    if (req->version < 0x200 && h2o_is_websocket_handshake(req, &key) == 0 && key) {
        int r = upgrade_ws(g, x, req, key);
        if (r == 0) {
            h->s.x = NULL; /* x is the WebSocket's now; h goes with the request */
            return 0;
        }
        if (r > 0) az_xch_fail(x, r, r == 403 ? 7 : r == 503 ? 14 : r == 400 ? 3 : 13, "%s",
                               r == 403 ? "this origin may not open a WebSocket here (AGENTZ_CORS_ORIGINS)"
                               : r == 400 ? "Sec-WebSocket-Protocol must offer agentz.v1"
                               : r == 503 ? "gateway shutting down" : "out of memory");
        pump_http(h);
        return 0;
    }
    x->body = (const uint8_t *)req->entity.base;
    x->body_len = req->entity.base ? req->entity.len : 0;
    if (x->body_len > (size_t)g->cfg.max_body_bytes) {
        x->close_after = 1;
        az_xch_fail(x, 413, 3, "the request body is larger than %d bytes", g->cfg.max_body_bytes);
        pump_http(h);
        return 0;
    }
    dispatch(g, x, h->s.m);
    if (x->kind == AZ_XCH_STREAM) stream_opened(&h->s, AZ_PROM_STREAM_SSE);
    else if ((x->kind == AZ_XCH_GRPCWEB && x->rpc && x->rpc->server_streaming) ||
             (x->kind == AZ_XCH_CONNECT && x->connect_stream))
        stream_opened(&h->s, AZ_PROM_STREAM_GRPCWEB);
    x->body = NULL;
    x->body_len = 0;
    pump_http(h);
    return 0;
}

/* ------------------------------------------------------------------ listening */


static void on_sock_close(void *data) { ((tcpconn *)data)->sock = NULL; }

static void conn_request_done(tcpconn *c)
{
    c->inflight--;
    c->wait_since = now_ms();
}

/* The connection behind an HTTP/1 request (NULL for HTTP/2 and for sockets not ours). */
static tcpconn *conn_of(h2o_req_t *req)
{
    if (req->version >= 0x200 || !req->conn->callbacks->get_socket) return NULL;
    h2o_socket_t *sock = req->conn->callbacks->get_socket(req->conn);
    return sock && sock->on_close.cb == on_sock_close ? sock->on_close.data : NULL;
}

/* h2o closes an HTTP/1 connection whose request is too slow without a word (its req_timeout,
 * set a second later as a backstop). The gateway answers first: a plaintext HTTP/1 connection
 * with part of a request read, none being handled, nothing being written, and the request
 * timeout passed since it began waiting gets a 408 and has its socket shut down, which h2o
 * sees as the end of input and closes the connection itself. Over TLS the bytes would need
 * h2o's TLS state, so those connections are closed by h2o only. */
static void on_sweep(uv_timer_t *t)
{
    az_gateway *g = t->data;
    int64_t now = now_ms();
    for (tcpconn *c = g->tcpall; c; c = c->next) {
        h2o_socket_t *sock = c->sock;
        if (sock && h2o_socket_is_writing(sock) && !uv_is_writable((uv_stream_t *)&c->tcp) &&
            uv_stream_get_write_queue_size((uv_stream_t *)&c->tcp) == 0) {
            /* h2o 2.2 ignores uv_write's own failure: after a read error (a client's RST) libuv
             * refuses writes at once, and h2o waits forever for the completion of the write it
             * tried (over TLS, always the close_notify of its shutdown), leaking the socket and
             * its descriptor. Seen on two sweeps in a row (a completion libuv has queued runs
             * within one loop turn), give h2o the completion it missed, as the failure it was. */
            if (c->stuck++ >= 1) {
                h2o_socket_cb cb = sock->_cb.write;
                sock->_cb.write = NULL;
                cb(sock, h2o_socket_error_io);
            }
            continue;
        }
        c->stuck = 0;
        if (!sock || !c->h1 || sock->data != c->h1 || c->inflight > 0 || c->timed_out) continue;
        if (sock->input->size == 0 || h2o_socket_is_writing(sock)) continue;
        if (now - c->wait_since < g->cfg.request_timeout_ms) continue;
        char body[200], head[400];
        int bl = snprintf(body, sizeof body,
                          "{\"code\":4,\"message\":\"the request did not arrive within %d ms "
                          "(AGENTZ_GATEWAY_REQUEST_TIMEOUT)\",\"details\":[]}",
                          g->cfg.request_timeout_ms);
        int hl = snprintf(head, sizeof head,
                          "HTTP/1.1 408 Request Timeout\r\nContent-Type: application/json\r\n"
                          "Content-Length: %d\r\nConnection: close\r\nCache-Control: no-store\r\n"
                          "X-Content-Type-Options: nosniff\r\n\r\n",
                          bl);
        uv_os_fd_t fd;
        if (uv_fileno((uv_handle_t *)&c->tcp, &fd) != 0) continue;
        struct iovec iov[2] = {{head, (size_t)hl}, {body, (size_t)bl}};
        struct msghdr mh = {.msg_iov = iov, .msg_iovlen = 2};
        /* A few hundred bytes into an idle socket's send buffer: this does not block. */
        ssize_t w = sendmsg(fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
        (void)w;
        shutdown(fd, SHUT_RDWR);
        c->timed_out = 1;
        if (g->cfg.access_log) {
            char peer[64] = "-";
            struct sockaddr_storage sa;
            int sl = sizeof sa;
            if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&sa, &sl) == 0)
                h2o_socket_getnumerichost((struct sockaddr *)&sa, (socklen_t)sl, peer);
            char fields[200];
            snprintf(fields, sizeof fields, "method=- path=- status=408 bytes=%zu peer=%s",
                     (size_t)sock->input->size, peer);
            az_log_kv(AZ_LOG_INFO, "http", fields);
        }
    }
}

static void on_conn_closed(uv_handle_t *handle)
{
    az_gateway *g = handle->loop->data;
    tcpconn *c = (tcpconn *)handle;
    if (c->prev) c->prev->next = c->next;
    else if (g->tcpall == c) g->tcpall = c->next;
    if (c->next) c->next->prev = c->prev;
    g->conns--;
    free(c);
}

/* Past the drain deadline: shut the sockets down under h2o, so each of its connections sees
 * the end of its stream and closes itself the usual way (closing a handle h2o owns behind its
 * back would make it close the handle twice). */
static void cut_connections(az_gateway *g)
{
    for (tcpconn *c = g->tcpall; c; c = c->next) {
        uv_os_fd_t fd;
        if (uv_fileno((uv_handle_t *)&c->tcp, &fd) == 0) shutdown(fd, SHUT_RDWR);
    }
}

static void on_accept(uv_stream_t *listener, int status)
{
    az_gateway *g = listener->loop->data;
    if (status != 0) return;
    tcpconn *c = calloc(1, sizeof *c);
    if (!c) return;
    uv_tcp_init(listener->loop, &c->tcp);
    if (uv_accept(listener, (uv_stream_t *)&c->tcp) != 0) {
        uv_close((uv_handle_t *)&c->tcp, (uv_close_cb)free);
        return;
    }
    c->next = g->tcpall;
    if (c->next) c->next->prev = c;
    g->tcpall = c;
    g->conns++;
    c->wait_since = now_ms();
    uv_tcp_nodelay(&c->tcp, 1);
    h2o_socket_t *sock = h2o_uv_socket_create((uv_stream_t *)&c->tcp, on_conn_closed);
    if (!sock) {
        uv_close((uv_handle_t *)&c->tcp, on_conn_closed);
        return;
    }
    c->sock = sock;
    sock->on_close.cb = on_sock_close;
    sock->on_close.data = c;
    h2o_accept(&g->accept_ctx, sock);
    /* Plaintext: h2o made its HTTP/1 connection synchronously (TLS ones wait for the handshake). */
    if (!g->tls && c->sock) c->h1 = c->sock->data;
}

static az_err make_ssl(az_gateway *g, char *msg)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx) return az_fail(msg, AZ_ERR_INTERNAL, "cannot create a TLS context");
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_CIPHER_SERVER_PREFERENCE);
    if (SSL_CTX_use_certificate_chain_file(ctx, g->cfg.tls_cert_file) != 1 ||
        SSL_CTX_use_PrivateKey_file(ctx, g->cfg.tls_key_file, SSL_FILETYPE_PEM) != 1 ||
        SSL_CTX_check_private_key(ctx) != 1) {
        char why[256];
        ERR_error_string_n(ERR_get_error(), why, sizeof why);
        SSL_CTX_free(ctx);
        return az_fail(msg, AZ_ERR_IO, "cannot load the gateway's TLS certificate %s and key %s: %s",
                       g->cfg.tls_cert_file, g->cfg.tls_key_file, why);
    }
    h2o_ssl_register_alpn_protocols(ctx, h2o_http2_alpn_protocols);
    g->ssl = ctx;
    g->tls = 1;
    return AZ_OK;
}

/* Binds host:port (host an IP literal or a name resolved once here). */
static az_err bind_listener(az_gateway *g, char *msg)
{
    const char *listen = g->cfg.listen;
    const char *colon = listen ? strrchr(listen, ':') : NULL;
    if (!colon || !colon[1])
        return az_fail(msg, AZ_ERR_INVALID, "gateway listen address \"%s\" must be host:port", listen ? listen : "");
    char host[256];
    size_t hl = (size_t)(colon - listen);
    if (hl >= sizeof host) return az_fail(msg, AZ_ERR_INVALID, "gateway listen host is too long");
    memcpy(host, listen, hl);
    host[hl] = '\0';
    if (hl >= 2 && host[0] == '[' && host[hl - 1] == ']') {
        memmove(host, host + 1, hl - 2);
        host[hl - 2] = '\0';
    }
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE}, *ai = NULL;
    int rc = getaddrinfo(*host ? host : NULL, colon + 1, &hints, &ai);
    if (rc != 0)
        return az_fail(msg, AZ_ERR_INVALID, "gateway listen address %s: %s", listen, gai_strerror(rc));
    uv_tcp_init(&g->loop, &g->listener);
    int err = uv_tcp_bind(&g->listener, ai->ai_addr, 0);
    freeaddrinfo(ai);
    if (err == 0) err = uv_listen((uv_stream_t *)&g->listener, 1024, on_accept);
    if (err != 0) return az_fail(msg, AZ_ERR_UNAVAILABLE, "cannot listen on %s: %s", listen, uv_strerror(err));
    struct sockaddr_storage sa;
    int sl = sizeof sa;
    uv_tcp_getsockname(&g->listener, (struct sockaddr *)&sa, &sl);
    g->port = sa.ss_family == AF_INET6 ? ntohs(((struct sockaddr_in6 *)&sa)->sin6_port)
                                       : ntohs(((struct sockaddr_in *)&sa)->sin_port);
    return AZ_OK;
}

/* The Clerk frontend API host of a publishable key: pk_test_<base64("host$")>. */
static int clerk_host(const char *pk, char *out, size_t size)
{
    if (!pk || (strncmp(pk, "pk_test_", 8) != 0 && strncmp(pk, "pk_live_", 8) != 0)) return -1;
    const char *b = pk + 8;
    size_t n = strlen(b);
    char padded[512];
    if (n == 0 || n + 4 >= sizeof padded) return -1;
    memcpy(padded, b, n);
    while (n % 4) padded[n++] = '=';
    padded[n] = '\0';
    unsigned char dec[400];
    int dl = EVP_DecodeBlock(dec, (const unsigned char *)padded, (int)n);
    if (dl <= 0) return -1;
    while (dl > 0 && dec[dl - 1] == '\0') dl--;
    if (dl > 0 && dec[dl - 1] == '$') dl--;
    if (dl <= 0 || (size_t)dl >= size) return -1;
    for (int i = 0; i < dl; i++)
        if (!isalnum(dec[i]) && dec[i] != '.' && dec[i] != '-') return -1;
    memcpy(out, dec, (size_t)dl);
    out[dl] = '\0';
    return 0;
}

/* The web app's CSP (with Clerk's origin when configured) and /ui/config.json. */
static az_err build_ui(az_gateway *g, char *msg)
{
    char host[300] = "";
    const char *pk = g->cfg.clerk_publishable_key;
    if (pk && *pk && clerk_host(pk, host, sizeof host) != 0)
        return az_fail(msg, AZ_ERR_INVALID,
                       "AGENTZ_CLERK_PUBLISHABLE_KEY: not a Clerk publishable key (pk_test_... or pk_live_...)");
    char extra[400] = "";
    if (*host) snprintf(extra, sizeof extra, " https://%s", host);
    if (asprintf(&g->csp_app,
                 "default-src 'self'; script-src 'self'%s; style-src 'self' 'unsafe-inline'; "
                 "img-src 'self' data:%s%s; connect-src 'self'%s; font-src 'self'; frame-src 'self'%s; "
                 "worker-src 'self' blob:; object-src 'none'; base-uri 'none'; form-action 'self'; "
                 "frame-ancestors 'none'",
                 extra, extra, *host ? " https://img.clerk.com" : "", extra, extra) < 0) {
        g->csp_app = NULL;
        return az_fail(msg, AZ_ERR_NOMEM, "out of memory");
    }
    int n = *host ? asprintf(&g->ui_config, "{\"version\":\"%s\",\"clerkPublishableKey\":\"%s\"}", AZ_VERSION, pk)
                  : asprintf(&g->ui_config, "{\"version\":\"%s\",\"clerkPublishableKey\":null}", AZ_VERSION);
    if (n < 0) {
        g->ui_config = NULL;
        return az_fail(msg, AZ_ERR_NOMEM, "out of memory");
    }
    g->ui_config_len = (size_t)n;
    return AZ_OK;
}

static void *loop_main(void *arg)
{
    az_gateway *g = arg;
    uv_run(&g->loop, UV_RUN_DEFAULT);
    return NULL;
}

az_err az_gateway_new(const az_gateway_config *cfg, az_gateway **out, char *msg)
{
    *out = NULL;
    az_gateway *g = calloc(1, sizeof *g);
    if (!g) return az_fail(msg, AZ_ERR_NOMEM, "out of memory");
    g->cfg = *cfg;
    az_gateway_config *c = &g->cfg;
    if (c->max_body_bytes <= 0) c->max_body_bytes = 4 << 20;
    if (c->max_header_bytes <= 0) c->max_header_bytes = 16 << 10;
    if (c->request_timeout_ms <= 0) c->request_timeout_ms = 30000;
    if (c->call_timeout_ms <= 0) c->call_timeout_ms = 60000;
    if (c->max_call_timeout_ms <= 0) c->max_call_timeout_ms = 600000;
    if (c->max_message_bytes <= 0) c->max_message_bytes = 4 << 20;
    if (c->shutdown_grace_ms <= 0) c->shutdown_grace_ms = 10000;
    pthread_mutex_init(&g->mu, NULL);
    atomic_init(&g->stopping, 0);
    atomic_init(&g->draining, 0);
    g->env = (az_xch_env){.wake = on_wake, .wake_arg = g, .call_timeout_ms = c->call_timeout_ms,
                          .max_call_timeout_ms = c->max_call_timeout_ms, .stopping = &g->stopping};
    pthread_mutex_init(&g->env.mu, NULL);
    pthread_cond_init(&g->env.cv, NULL);
    if (uv_loop_init(&g->loop) != 0) {
        pthread_mutex_destroy(&g->mu);
        pthread_mutex_destroy(&g->env.mu);
        pthread_cond_destroy(&g->env.cv);
        free(g);
        return az_fail(msg, AZ_ERR_INTERNAL, "cannot create the gateway's event loop");
    }
    g->loop.data = g;
    g->loop_alive = 1;
    uv_async_init(&g->loop, &g->wakeup, on_wakeup);
    g->wakeup.data = g;
    uv_timer_init(&g->loop, &g->tick);
    g->tick.data = g;
    uv_timer_init(&g->loop, &g->sweep);
    g->sweep.data = g;
    uv_timer_start(&g->sweep, on_sweep, SWEEP_MS, SWEEP_MS);

    az_err err;
    static const ProtobufCServiceDescriptor *const services[] = {
        &agentz__v1__agent_service__descriptor, &agentz__v1__task_service__descriptor,
        &agentz__v1__workflow_service__descriptor, &agentz__v1__system_service__descriptor,
        &grpc__health__v1__health__descriptor,
    };
    if ((err = az_routes_new(az_descriptor_set, az_descriptor_set_len, services,
                             sizeof services / sizeof *services, &g->routes, msg)) != AZ_OK)
        goto fail;
    if ((err = az_cors_new(c->cors_origins, "AGENTZ_CORS_ORIGINS", &g->cors, msg)) != AZ_OK) goto fail;
    if (c->web_dir && *c->web_dir && (err = az_assets_load(c->web_dir, &g->assets, msg)) != AZ_OK) goto fail;
    if ((err = build_ui(g, msg)) != AZ_OK) goto fail;
    if ((c->tls_cert_file || c->tls_key_file) && (!c->tls_cert_file || !c->tls_key_file)) {
        err = az_fail(msg, AZ_ERR_INVALID, "the gateway's TLS certificate and key must be given together");
        goto fail;
    }
    if (c->tls_cert_file && (err = make_ssl(g, msg)) != AZ_OK) goto fail;
    az_upstream_config ucfg = {.target = c->upstream, .tls = c->upstream_tls, .ca_file = c->upstream_ca_file,
                               .cert_file = c->upstream_cert_file, .key_file = c->upstream_key_file,
                               .server_name = c->upstream_server_name,
                               .max_message_bytes = c->max_message_bytes, .max_streams = c->max_streams};
    if ((err = az_upstream_new(&ucfg, &g->up, msg)) != AZ_OK) goto fail;
    g->env.up = g->up;

    h2o_config_init(&g->config);
    g->config.server_name = h2o_iovec_init(H2O_STRLIT("agentz-gateway"));
    /* h2o refuses bodies past its own limit bluntly (an HTTP/2 stream reset): give it room, so
     * the gateway answers bodies over max_body_bytes with its JSON 413 itself. */
    g->config.max_request_entity_size = (size_t)c->max_body_bytes * 2;
    /* A backstop a second later than the gateway's own 408 (see on_sweep). */
    g->config.http1.req_timeout = (uint64_t)c->request_timeout_ms + 1000;
    g->config.http1.upgrade_to_http2 = 1; /* h2c: prior knowledge and Upgrade */
    g->config.http2.idle_timeout = 60000;
    g->config.http2.graceful_shutdown_timeout = DRAIN_MS;
    h2o_hostconf_t *host = h2o_config_register_host(&g->config, h2o_iovec_init(H2O_STRLIT("default")), 65535);
    h2o_pathconf_t *path = h2o_config_register_path(host, "/", 0);
    h2o_handler_t *handler = h2o_create_handler(path, sizeof *handler + sizeof(az_gateway *));
    handler->on_req = on_req;
    *(az_gateway **)(handler + 1) = g;
    h2o_context_init(&g->ctx, &g->loop, &g->config);
    g->accept_ctx.ctx = &g->ctx;
    g->accept_ctx.hosts = g->config.hosts;
    g->accept_ctx.ssl_ctx = g->ssl;
    g->started = 0;
    if ((err = bind_listener(g, msg)) != AZ_OK) goto fail;
    *out = g;
    return AZ_OK;
fail:
    az_gateway_free(g);
    return err;
}

int az_gateway_port(const az_gateway *g) { return g->port; }

az_err az_gateway_start(az_gateway *g, char *msg)
{
    if (pthread_create(&g->thread, NULL, loop_main, g) != 0)
        return az_fail(msg, AZ_ERR_INTERNAL, "cannot start the gateway thread");
    g->started = 1;
    return AZ_OK;
}

void az_gateway_stop(az_gateway *g)
{
    if (!g || atomic_exchange(&g->stopping, 1)) return;
    /* Streams end now (their clients resume elsewhere); unary calls get the grace period. */
    az_xch_env_cancel(&g->env, 1);
    az_xch_env_wait_unary(&g->env, g->cfg.shutdown_grace_ms);
    az_xch_env_cancel(&g->env, 0);
    /* Let the last chunks go out, then the loop closes the listener and its connections. */
    for (int i = 0; i < 100 && az_xch_env_busy(&g->env); i++) {
        struct timespec ts = {0, 10 * 1000000};
        nanosleep(&ts, NULL);
    }
    atomic_store(&g->draining, 1);
    if (g->started) {
        uv_async_send(&g->wakeup);
        pthread_join(g->thread, NULL);
        g->started = 0;
    }
}

/* Our own handles and h2o's timers; connections are h2o's to close (see cut_connections). */
static void close_handle(uv_handle_t *h, void *arg)
{
    if (!uv_is_closing(h) && (h->type != UV_TCP || h == arg)) uv_close(h, NULL);
}

void az_gateway_free(az_gateway *g)
{
    if (!g) return;
    az_gateway_stop(g);
    pthread_mutex_lock(&g->mu);
    g->loop_alive = 0;
    pthread_mutex_unlock(&g->mu);
    if (g->ctx.loop) {
        /* Connections still open at this point are cut; h2o's state of those goes with the
         * process (disposing of the context under them would trip its assertions). */
        if (g->conns == 0) {
            for (wsconn *w = g->wsall, *n; w; w = n) {
                n = w->all_next;
                if (w->ws) h2o_websocket_close(w->ws);
                w->ws = NULL;
                ws_free(w);
            }
            /* The shutdown request arms a context-wide graceful-shutdown timer of its own;
             * with every connection gone it has nothing left to do. */
            if (h2o_timeout_is_linked(&g->ctx.http2._graceful_shutdown_timeout))
                h2o_timeout_unlink(&g->ctx.http2._graceful_shutdown_timeout);
            h2o_timeout_t *ts[] = {&g->ctx.zero_timeout, &g->ctx.one_sec_timeout, &g->ctx.hundred_ms_timeout,
                                   &g->ctx.handshake_timeout, &g->ctx.http1.req_timeout,
                                   &g->ctx.http2.idle_timeout, &g->ctx.http2.graceful_shutdown_timeout,
                                   &g->ctx.proxy.io_timeout};
            int idle = 1;
            for (size_t i = 0; i < sizeof ts / sizeof *ts; i++) idle &= h2o_linklist_is_empty(&ts[i]->_entries);
            /* h2o asserts that nothing waits on its timers when the context goes. */
            if (idle) {
                h2o_context_dispose(&g->ctx);
                h2o_config_dispose(&g->config);
            } else {
                az_warn("gateway shutdown: h2o still has timers armed; leaving its context to the process exit");
            }
        }
    }
    if (g->conns == 0) {
        uv_walk(&g->loop, close_handle, &g->listener);
        uv_run(&g->loop, UV_RUN_DEFAULT);
        uv_loop_close(&g->loop);
    } else {
        az_warn("gateway shutdown: %d connection(s) did not close after being cut; leaving them to the process exit",
                g->conns);
    }
    /* The upstream waits for every call's STATUS, which drops the exchanges' last references. */
    az_upstream_free(g->up);
    for (az_xch *x = g->ready, *n; x; x = n) {
        n = x->http_next;
        az_xch_unref(x);
    }
    if (g->ssl) SSL_CTX_free(g->ssl);
    az_routes_free(g->routes);
    az_cors_free(g->cors);
    az_assets_free(g->assets);
    free(g->csp_app);
    free(g->ui_config);
    pthread_mutex_destroy(&g->mu);
    pthread_mutex_destroy(&g->env.mu);
    pthread_cond_destroy(&g->env.cv);
    free(g);
}
