/* Exchanges: the request of an HTTP client becomes one upstream gRPC call, and the call's events
 * (headers, messages, status) become response chunks for the HTTP side. Events arrive on the
 * upstream's completion-queue thread, so decoding and JSON encoding happen there, off the HTTP
 * loop. A stream holds at most AZ_XCH_WINDOW messages the client has not taken yet: below that the
 * completion-queue thread asks for the next message itself, at the window the stream waits for the
 * HTTP side to take one (az_xch_ack). So a slow client slows its own gRPC stream, and the server's
 * slow-consumer bound applies to it, nothing else — and the HTTP loop rarely enters gRPC, whose
 * calls run other calls' pending transport work on the caller's thread. */
#include "exchange.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "core/log.h"
#include "core/pbjson.h"
#include "grpc/health/v1/health.pb-c.h"
#include "grpcweb.h"

const char *const az_xch_header_names[AZ_NHDR] = {
    [AZ_H_AUTH] = "authorization",
    [AZ_H_APIKEY] = "x-api-key",
    [AZ_H_REQID] = "x-request-id",
    [AZ_H_TRACEPARENT] = "traceparent",
    [AZ_H_TRACESTATE] = "tracestate",
    [AZ_H_ORIGIN] = "origin",
    [AZ_H_LAST_EVENT_ID] = "last-event-id",
    [AZ_H_CTYPE] = "content-type",
    [AZ_H_ACCEPT] = "accept",
    [AZ_H_TIMEOUT] = "x-request-timeout",
    [AZ_H_GRPC_TIMEOUT] = "grpc-timeout",
    [AZ_H_XFF] = "x-forwarded-for",
    [AZ_H_ACCEPT_ENCODING] = "accept-encoding",
    [AZ_H_IF_NONE_MATCH] = "if-none-match",
    [AZ_H_AC_METHOD] = "access-control-request-method",
    [AZ_H_AC_HEADERS] = "access-control-request-headers",
    [AZ_H_WS_PROTOCOL] = "sec-websocket-protocol",
    [AZ_H_CONNECT_TIMEOUT] = "connect-timeout-ms",
};

#define HEALTH_METHOD "/grpc.health.v1.Health/Check"

/* ------------------------------------------------------------------ chunks and queue */

az_chunk *az_chunk_new(az_chunk_kind k)
{
    az_chunk *c = calloc(1, sizeof *c);
    if (c) c->kind = k;
    return c;
}

void az_chunk_free(az_chunk *c)
{
    if (!c) return;
    for (int i = 0; i < c->nextra; i++) {
        free(c->extra[i][0]);
        free(c->extra[i][1]);
    }
    if (!c->borrowed) free(c->data);
    free(c);
}

int az_chunk_header(az_chunk *c, const char *name, const char *value, size_t vlen)
{
    if (!c || c->nextra >= AZ_XCH_MAX_EXTRA) return -1;
    char *n = strdup(name), *v = malloc(vlen + 1);
    if (!n || !v) {
        free(n);
        free(v);
        return -1;
    }
    memcpy(v, value, vlen);
    v[vlen] = '\0';
    c->extra[c->nextra][0] = n;
    c->extra[c->nextra][1] = v;
    c->nextra++;
    return 0;
}

void az_xch_request_id(az_xch *x)
{
    const char *v = x->hv[AZ_H_REQID];
    size_t n = x->hl[AZ_H_REQID];
    int ok = v && n > 0 && n <= 64;
    for (size_t i = 0; ok && i < n; i++) ok = v[i] > 0x20 && v[i] < 0x7f && v[i] != '"';
    if (ok) {
        memcpy(x->request_id, v, n);
        x->request_id[n] = '\0';
        return;
    }
    /* Unique across gateways and restarts without coordination: time, pid, a counter. */
    static atomic_uint_fast64_t counter;
    uint64_t k = atomic_fetch_add(&counter, 1) + 1;
    snprintf(x->request_id, sizeof x->request_id, "gw%012llx%06x%08llx",
             (unsigned long long)time(NULL) & 0xffffffffffffull, (unsigned)getpid() & 0xffffff,
             (unsigned long long)k & 0xffffffffull);
}

az_xch *az_xch_new(az_xch_env *env)
{
    az_xch *x = calloc(1, sizeof *x);
    if (!x) return NULL;
    x->env = env;
    atomic_init(&x->refs, 1);
    pthread_mutex_init(&x->mu, NULL);
    clock_gettime(CLOCK_MONOTONIC, &x->start);
    return x;
}

void az_xch_ref(az_xch *x) { atomic_fetch_add(&x->refs, 1); }

void az_xch_unref(az_xch *x)
{
    if (!x || atomic_fetch_sub(&x->refs, 1) != 1) return;
    for (az_chunk *c = x->out_head; c;) {
        az_chunk *n = c->next;
        az_chunk_free(c);
        c = n;
    }
    free(x->uri);
    free(x->hbuf);
    free(x->qbuf);
    if (x->access_token) {
        /* A credential: do not leave it in freed memory. */
        explicit_bzero(x->access_token, strlen(x->access_token));
        free(x->access_token);
    }
    free(x->resp);
    pthread_mutex_destroy(&x->mu);
    free(x);
}

static void wake(az_xch *x) { x->env->wake(x->env->wake_arg, x); }

/* Call with x->mu held. */
static void push_locked(az_xch *x, az_chunk *c)
{
    if (x->closed) {
        az_chunk_free(c);
        return;
    }
    c->next = NULL;
    if (x->out_tail) x->out_tail->next = c;
    else x->out_head = c;
    x->out_tail = c;
}

void az_xch_push(az_xch *x, az_chunk *c)
{
    pthread_mutex_lock(&x->mu);
    push_locked(x, c);
    pthread_mutex_unlock(&x->mu);
}

az_chunk *az_xch_take(az_xch *x, int *next_is_end)
{
    pthread_mutex_lock(&x->mu);
    az_chunk *c = x->out_head;
    if (c) {
        x->out_head = c->next;
        if (!x->out_head) x->out_tail = NULL;
        c->next = NULL;
    }
    if (next_is_end) *next_is_end = c && x->out_head && x->out_head->kind == AZ_CHUNK_END;
    pthread_mutex_unlock(&x->mu);
    return c;
}

void az_xch_ack(az_xch *x)
{
    pthread_mutex_lock(&x->mu);
    if (x->window > 0) x->window--;
    if (x->throttled && x->window < AZ_XCH_WINDOW) {
        x->throttled = 0;
        az_upcall_read(x->up);
    }
    pthread_mutex_unlock(&x->mu);
}

/* After a stream message was queued: read the next one now, or wait for the client at the
 * window. Call with x->mu held, on the completion-queue thread. */
static void next_message_locked(az_xch *x)
{
    if (++x->window < AZ_XCH_WINDOW) az_upcall_read(x->up);
    else x->throttled = 1;
}

void az_xch_close(az_xch *x)
{
    pthread_mutex_lock(&x->mu);
    x->closed = 1;
    az_chunk *c = x->out_head;
    x->out_head = x->out_tail = NULL;
    az_upcall_cancel(x->up);
    pthread_mutex_unlock(&x->mu);
    while (c) {
        az_chunk *n = c->next;
        az_chunk_free(c);
        c = n;
    }
}

/* ------------------------------------------------------------------ responses */

/* Queues head, body and end; call with x->mu held. Takes body unless borrowed. */
static void respond_locked(az_xch *x, int status, const char *ctype, uint8_t *body, size_t len,
                           int borrowed)
{
    az_chunk *h = az_chunk_new(AZ_CHUNK_HEAD), *e = az_chunk_new(AZ_CHUNK_END);
    az_chunk *d = body && len ? az_chunk_new(AZ_CHUNK_DATA) : NULL;
    if (!h || !e || (body && len && !d)) {
        az_chunk_free(h);
        az_chunk_free(e);
        az_chunk_free(d);
        if (!borrowed) free(body);
        x->close_after = 1;
        return;
    }
    h->status = status;
    h->ctype = ctype;
    h->content_length = (long long)len;
    if (x->request_id[0]) az_chunk_header(h, "x-request-id", x->request_id, strlen(x->request_id));
    if (status == 405 && x->allow) az_chunk_header(h, "allow", x->allow, strlen(x->allow));
    push_locked(x, h);
    if (d) {
        d->data = body;
        d->len = len;
        d->borrowed = borrowed;
        push_locked(x, d);
    } else if (!borrowed) {
        free(body);
    }
    push_locked(x, e);
    x->head_queued = 1;
}

void az_xch_respond(az_xch *x, int status, const char *ctype, uint8_t *body, size_t len, int borrowed)
{
    pthread_mutex_lock(&x->mu);
    respond_locked(x, status, ctype, body, len, borrowed);
    pthread_mutex_unlock(&x->mu);
    wake(x);
}

static void push_data_locked(az_xch *x, uint8_t *data, size_t len, int ack)
{
    az_chunk *d = az_chunk_new(AZ_CHUNK_DATA);
    if (!d) {
        free(data);
        x->close_after = 1;
        return;
    }
    d->data = data;
    d->len = len;
    d->ack = ack;
    push_locked(x, d);
}

/* A WebSocket close reason must be at most 123 bytes of valid UTF-8. */
static void close_reason(char *out, size_t size, const char *reason)
{
    size_t n = reason ? strlen(reason) : 0;
    if (n > size - 1) {
        n = size - 1;
        while (n > 0 && ((unsigned char)reason[n] & 0xc0) == 0x80) n--;
    }
    if (n) memcpy(out, reason, n);
    out[n] = '\0';
}

static void push_end_locked(az_xch *x, int ws_close, const char *reason)
{
    az_chunk *e = az_chunk_new(AZ_CHUNK_END);
    if (!e) {
        x->close_after = 1;
        return;
    }
    e->ws_close = ws_close;
    close_reason(e->reason, sizeof e->reason, reason);
    push_locked(x, e);
}

/* An error for an HTTP client; call with x->mu held. */
static void connect_error_locked(az_xch *x, int code, const char *message);

static void error_locked(az_xch *x, int http_status, int code, const char *message)
{
    if (x->kind == AZ_XCH_CONNECT) {
        connect_error_locked(x, code, message);
        return;
    }
    if (x->kind == AZ_XCH_WS) {
        char *out = NULL;
        size_t n = 0;
        if (az_eventfmt_end(AZ_EVENTFMT_WS, code, message, &out, &n) == AZ_OK && n)
            push_data_locked(x, (uint8_t *)out, n, 0);
        push_end_locked(x, 4000 + code, message);
        return;
    }
    char *json = NULL;
    size_t len = 0;
    if (az_transcode_status_json(code, message, &json, &len) != AZ_OK) {
        x->close_after = 1;
        respond_locked(x, 500, "application/json", NULL, 0, 0);
        return;
    }
    respond_locked(x, http_status ? http_status : az_transcode_http_status(code), "application/json",
                   (uint8_t *)json, len, 0);
}

void az_xch_fail(az_xch *x, int http_status, int code, const char *fmt, ...)
{
    char message[AZ_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(message, sizeof message, fmt, ap);
    va_end(ap);
    pthread_mutex_lock(&x->mu);
    error_locked(x, http_status, code, message);
    pthread_mutex_unlock(&x->mu);
    wake(x);
}

static const char *stream_ctype(const az_xch *x)
{
    if (x->kind == AZ_XCH_CONNECT)
        return x->connect_stream ? (x->json ? "application/connect+json" : "application/connect+proto")
                                 : (x->json ? "application/json" : "application/proto");
    if (x->kind == AZ_XCH_GRPCWEB)
        return x->text ? "application/grpc-web-text+proto" : "application/grpc-web+proto";
    return x->fmt == AZ_EVENTFMT_SSE ? "text/event-stream; charset=utf-8" : "application/x-ndjson";
}

/* The 200 head of a streamed answer; call with x->mu held. */
static void stream_head_locked(az_xch *x)
{
    if (x->head_queued || x->kind == AZ_XCH_WS) return;
    az_chunk *h = az_chunk_new(AZ_CHUNK_HEAD);
    if (!h) {
        x->close_after = 1;
        return;
    }
    h->status = 200;
    h->ctype = stream_ctype(x);
    h->content_length = -1;
    if (x->request_id[0]) az_chunk_header(h, "x-request-id", x->request_id, strlen(x->request_id));
    int sse = x->kind == AZ_XCH_STREAM && x->fmt == AZ_EVENTFMT_SSE;
    /* Proxies that buffer (nginx) must pass events on as they come. */
    if (sse) az_chunk_header(h, "x-accel-buffering", "no", 2);
    push_locked(x, h);
    x->head_queued = 1;
    if (sse) {
        az_chunk *d = az_chunk_new(AZ_CHUNK_DATA);
        if (d) {
            d->data = (uint8_t *)AZ_EVENTFMT_SSE_PREAMBLE;
            d->len = sizeof AZ_EVENTFMT_SSE_PREAMBLE - 1;
            d->borrowed = 1;
            push_locked(x, d);
        }
    }
}

void az_xch_stream_head(az_xch *x)
{
    pthread_mutex_lock(&x->mu);
    if (!x->closed) stream_head_locked(x);
    pthread_mutex_unlock(&x->mu);
    wake(x);
}

/* ------------------------------------------------------------------ upstream events */

static void live_remove_locked(az_xch_env *env, az_xch *x)
{
    if (x->live_prev) x->live_prev->live_next = x->live_next;
    else if (env->live == x) env->live = x->live_next;
    if (x->live_next) x->live_next->live_prev = x->live_prev;
    x->live_next = x->live_prev = NULL;
}

/* The call is over: release it and the upstream's reference to x. On the CQ thread. */
static void upstream_done(az_xch *x)
{
    az_xch_env *env = x->env;
    pthread_mutex_lock(&x->mu);
    az_upcall *c = x->up;
    x->up = NULL;
    int counted = x->unary_counted;
    pthread_mutex_unlock(&x->mu);
    pthread_mutex_lock(&env->mu);
    live_remove_locked(env, x);
    if (counted) env->unary_inflight--;
    pthread_cond_broadcast(&env->cv);
    pthread_mutex_unlock(&env->mu);
    az_upcall_release(c);
    az_xch_unref(x);
}

static void copy_request_id(az_xch *x, const grpc_metadata_array *md)
{
    for (size_t i = 0; md && i < md->count; i++) {
        if (grpc_slice_str_cmp(md->metadata[i].key, "x-request-id") != 0) continue;
        size_t n = GRPC_SLICE_LENGTH(md->metadata[i].value);
        if (n >= sizeof x->request_id) n = sizeof x->request_id - 1;
        memcpy(x->request_id, GRPC_SLICE_START_PTR(md->metadata[i].value), n);
        x->request_id[n] = '\0';
    }
}

/* A stream the gateway cut at shutdown ends UNAVAILABLE, so its client resumes elsewhere: for
 * Event streams from the last sequence it was given. Call with x->mu held. */
static int final_status(az_xch *x, const az_upev *ev, const char **message)
{
    *message = ev->details;
    if (ev->status == 1 && atomic_load(x->env->stopping)) {
        if (x->kind == AZ_XCH_STREAM || x->kind == AZ_XCH_WS)
            snprintf(x->final_msg, sizeof x->final_msg,
                     "gateway shutting down; resume with after_sequence = %lld", (long long)x->last_seq);
        else
            snprintf(x->final_msg, sizeof x->final_msg, "gateway shutting down; reconnect and resume");
        *message = x->final_msg;
        return 14;
    }
    return ev->status;
}

static void on_rest(az_xch *x, const az_upev *ev)
{
    switch (ev->kind) {
    case AZ_UPEV_HEADERS:
        pthread_mutex_lock(&x->mu);
        copy_request_id(x, ev->md);
        pthread_mutex_unlock(&x->mu);
        return;
    case AZ_UPEV_MESSAGE: {
        const ProtobufCMessageDescriptor *out = x->route->method->output;
        ProtobufCMessage *m = protobuf_c_message_unpack(out, NULL, ev->len, ev->data);
        pthread_mutex_lock(&x->mu);
        if (!m)
            x->resp_err = az_fail(x->resp_msg, AZ_ERR_INTERNAL, "the server's response is not a %s", out->name);
        else
            x->resp_err = az_transcode_response(x->route, m, &x->resp, &x->resp_len, x->resp_msg);
        pthread_mutex_unlock(&x->mu);
        protobuf_c_message_free_unpacked(m, NULL);
        return;
    }
    case AZ_UPEV_STATUS: {
        const char *message;
        pthread_mutex_lock(&x->mu);
        int status = final_status(x, ev, &message);
        copy_request_id(x, ev->md);
        if (status != 0) {
            error_locked(x, 0, status, message);
        } else if (x->resp_err != AZ_OK) {
            error_locked(x, 0, az_err_grpc_status(x->resp_err), x->resp_msg);
        } else if (!x->resp) {
            error_locked(x, 0, 13, "the server returned OK without a response");
        } else {
            respond_locked(x, 200, "application/json", (uint8_t *)x->resp, x->resp_len, 0);
            x->resp = NULL;
        }
        pthread_mutex_unlock(&x->mu);
        wake(x);
        upstream_done(x);
        return;
    }
    }
}

static void on_stream(az_xch *x, const az_upev *ev)
{
    switch (ev->kind) {
    case AZ_UPEV_HEADERS:
        pthread_mutex_lock(&x->mu);
        copy_request_id(x, ev->md);
        /* The head waits a moment for an error status that may follow right behind, so a call
         * that fails answers with a real HTTP status; the HTTP side times the wait. Empty initial
         * metadata is a trailers-only answer: surely an error, so no wait either. */
        if (ev->md && ev->md->count > 0 && x->kind == AZ_XCH_STREAM) x->headers_in = 1;
        pthread_mutex_unlock(&x->mu);
        wake(x);
        return;
    case AZ_UPEV_MESSAGE: {
        char msg[AZ_MSG_MAX];
        char *out = NULL;
        size_t n = 0;
        int64_t seq = 0;
        az_err err = az_eventfmt_message(x->fmt, x->route->method->output, ev->data, ev->len, &out, &n,
                                         &seq, msg);
        pthread_mutex_lock(&x->mu);
        if (seq > x->last_seq) x->last_seq = seq;
        stream_head_locked(x);
        x->messages++;
        if (err == AZ_OK) {
            push_data_locked(x, (uint8_t *)out, n, 1);
            next_message_locked(x);
        } else {
            /* An event that cannot be shown ends the stream rather than vanish silently. */
            az_warn("cannot encode a stream message of %s: %s", x->route->method->grpc_path, msg);
            x->close_after = 1;
            az_upcall_cancel(x->up);
        }
        pthread_mutex_unlock(&x->mu);
        wake(x);
        return;
    }
    case AZ_UPEV_STATUS: {
        const char *message;
        pthread_mutex_lock(&x->mu);
        int status = final_status(x, ev, &message);
        copy_request_id(x, ev->md);
        if (!x->head_queued && x->kind != AZ_XCH_WS && status != 0) {
            /* Nothing was streamed yet: a plain HTTP error says it best. */
            error_locked(x, 0, status, message);
        } else {
            stream_head_locked(x);
            char *out = NULL;
            size_t n = 0;
            if (az_eventfmt_end(x->fmt, status, message, &out, &n) == AZ_OK && n)
                push_data_locked(x, (uint8_t *)out, n, 0);
            /* WebSocket close codes: 1000 for a clean end, 4000 + the gRPC status otherwise. */
            push_end_locked(x, status == 0 ? 1000 : 4000 + status, status == 0 ? "" : message);
        }
        pthread_mutex_unlock(&x->mu);
        wake(x);
        upstream_done(x);
        return;
    }
    }
}

/* grpc-web trailers-only answer: the status as headers of an empty 200; call with x->mu held. */
static void grpcweb_trailers_only_locked(az_xch *x, int status, const char *message)
{
    az_chunk *h = az_chunk_new(AZ_CHUNK_HEAD);
    if (!h) {
        x->close_after = 1;
        return;
    }
    char st[16], esc[AZ_MSG_MAX * 3 + 1];
    snprintf(st, sizeof st, "%d", status);
    h->status = 200;
    h->ctype = stream_ctype(x);
    h->content_length = 0;
    az_chunk_header(h, "grpc-status", st, strlen(st));
    size_t el = az_grpcweb_escape(message, esc, sizeof esc);
    if (el) az_chunk_header(h, "grpc-message", esc, el);
    if (x->request_id[0]) az_chunk_header(h, "x-request-id", x->request_id, strlen(x->request_id));
    push_locked(x, h);
    x->head_queued = 1;
    push_end_locked(x, 0, NULL);
}

/* grpc-web: messages become frames, the status a trailer frame, or a trailers-only answer when
 * no message came. Unary answers go out whole with a Content-Length, so HTTP/1.1 connections
 * stay open. */
static void on_grpcweb(az_xch *x, const az_upev *ev)
{
    int streaming = x->rpc && x->rpc->server_streaming;
    switch (ev->kind) {
    case AZ_UPEV_HEADERS:
        pthread_mutex_lock(&x->mu);
        copy_request_id(x, ev->md);
        if (streaming && ev->md && ev->md->count > 0) stream_head_locked(x);
        pthread_mutex_unlock(&x->mu);
        if (streaming) wake(x);
        return;
    case AZ_UPEV_MESSAGE: {
        uint8_t *out = NULL;
        size_t n = 0;
        az_err err = az_grpcweb_frame(0, ev->data, ev->len, x->text, &out, &n);
        pthread_mutex_lock(&x->mu);
        x->messages++;
        if (err) x->close_after = 1;
        if (!streaming) {
            free(x->resp); /* kept for the status, which sends it with the trailers */
            x->resp = (char *)out;
            x->resp_len = n;
            pthread_mutex_unlock(&x->mu);
            return;
        }
        stream_head_locked(x);
        if (out) {
            push_data_locked(x, out, n, 1);
            next_message_locked(x);
        }
        pthread_mutex_unlock(&x->mu);
        wake(x);
        return;
    }
    case AZ_UPEV_STATUS: {
        const char *message;
        pthread_mutex_lock(&x->mu);
        int status = final_status(x, ev, &message);
        pthread_mutex_unlock(&x->mu);
        /* Trailing metadata rides in the trailer frame; keys are slices, so copy them out. */
        az_upmd md[32];
        char keys[32][64];
        size_t nmd = 0;
        for (size_t i = 0; ev->md && i < ev->md->count && nmd < 32; i++) {
            size_t kl = GRPC_SLICE_LENGTH(ev->md->metadata[i].key);
            if (kl == 0 || kl >= sizeof keys[nmd]) continue;
            memcpy(keys[nmd], GRPC_SLICE_START_PTR(ev->md->metadata[i].key), kl);
            keys[nmd][kl] = '\0';
            md[nmd] = (az_upmd){keys[nmd], (const char *)GRPC_SLICE_START_PTR(ev->md->metadata[i].value),
                                GRPC_SLICE_LENGTH(ev->md->metadata[i].value)};
            nmd++;
        }
        pthread_mutex_lock(&x->mu);
        copy_request_id(x, ev->md);
        uint8_t *tr = NULL;
        size_t tn = 0;
        if (!x->head_queued && !x->resp) {
            grpcweb_trailers_only_locked(x, status, message);
        } else if (az_grpcweb_trailers(status, message, md, nmd, x->text, &tr, &tn) != AZ_OK) {
            x->close_after = 1;
            if (!x->head_queued) respond_locked(x, 500, stream_ctype(x), NULL, 0, 0);
            else push_end_locked(x, 0, NULL);
        } else if (!streaming) {
            uint8_t *body = malloc(x->resp_len + tn);
            if (body) {
                memcpy(body, x->resp, x->resp_len);
                memcpy(body + x->resp_len, tr, tn);
                respond_locked(x, 200, stream_ctype(x), body, x->resp_len + tn, 0);
            } else {
                x->close_after = 1;
                respond_locked(x, 500, stream_ctype(x), NULL, 0, 0);
            }
            free(tr);
        } else {
            push_data_locked(x, tr, tn, 0);
            push_end_locked(x, 0, NULL);
        }
        pthread_mutex_unlock(&x->mu);
        wake(x);
        upstream_done(x);
        return;
    }
    }
}

/* ------------------------------------------------------------------ the Connect protocol */

/* Connect's names of the gRPC codes (connectrpc.com/docs/protocol#error-codes). */
static const char *const CONNECT_CODES[] = {
    "ok",          "canceled",          "unknown",        "invalid_argument", "deadline_exceeded",
    "not_found",   "already_exists",    "permission_denied", "resource_exhausted",
    "failed_precondition", "aborted",   "out_of_range",   "unimplemented",    "internal",
    "unavailable", "data_loss",         "unauthenticated",
};

static const char *connect_code(int status)
{
    return status >= 0 && (size_t)status < sizeof CONNECT_CODES / sizeof *CONNECT_CODES
               ? CONNECT_CODES[status] : "unknown";
}

/* {"code":"not_found","message":"..."} (a streaming end wraps it in {"error": …}). */
static char *connect_error_json(int status, const char *message, int wrap)
{
    json_t *e = json_pack("{s:s,s:s}", "code", connect_code(status), "message", message ? message : "");
    if (!e) return NULL;
    json_t *root = wrap ? json_pack("{s:o}", "error", e) : e;
    char *out = root ? json_dumps(root, JSON_COMPACT | JSON_ENSURE_ASCII) : NULL;
    json_decref(root ? root : e);
    return out;
}

/* A Connect envelope: flags, 4-byte big-endian length, payload. */
static uint8_t *envelope(uint8_t flags, const uint8_t *data, size_t len, size_t *out_len)
{
    uint8_t *e = malloc(5 + len);
    if (!e) return NULL;
    e[0] = flags;
    e[1] = (uint8_t)(len >> 24);
    e[2] = (uint8_t)(len >> 16);
    e[3] = (uint8_t)(len >> 8);
    e[4] = (uint8_t)len;
    if (len) memcpy(e + 5, data, len);
    *out_len = 5 + len;
    return e;
}

/* One response message in x's codec: the bytes as they came, or their JSON. */
static uint8_t *connect_message(az_xch *x, const az_upev *ev, size_t *len, char *msg)
{
    if (!x->json) {
        uint8_t *b = malloc(ev->len ? ev->len : 1);
        if (b && ev->len) memcpy(b, ev->data, ev->len);
        *len = ev->len;
        if (!b) az_fail(msg, AZ_ERR_NOMEM, "out of memory");
        return b;
    }
    const ProtobufCMessageDescriptor *d = x->rpc ? x->rpc->output : NULL;
    ProtobufCMessage *m = d ? protobuf_c_message_unpack(d, NULL, ev->len, ev->data) : NULL;
    char *json = NULL;
    if (!m) az_fail(msg, AZ_ERR_INTERNAL, "the server's response does not decode");
    else if (az_pbjson_encode(m, 0, &json, msg) != AZ_OK) json = NULL;
    protobuf_c_message_free_unpacked(m, NULL);
    if (json) *len = strlen(json);
    return (uint8_t *)json;
}

static void on_connect(az_xch *x, const az_upev *ev)
{
    switch (ev->kind) {
    case AZ_UPEV_HEADERS:
        pthread_mutex_lock(&x->mu);
        copy_request_id(x, ev->md);
        if (x->connect_stream && ev->md && ev->md->count > 0) stream_head_locked(x);
        pthread_mutex_unlock(&x->mu);
        if (x->connect_stream) wake(x);
        return;
    case AZ_UPEV_MESSAGE: {
        char msg[AZ_MSG_MAX];
        size_t n = 0;
        uint8_t *body = connect_message(x, ev, &n, msg);
        pthread_mutex_lock(&x->mu);
        x->messages++;
        if (!x->connect_stream) {
            free(x->resp);
            x->resp = (char *)body;
            x->resp_len = n;
            if (!body) x->resp_err = az_fail(x->resp_msg, AZ_ERR_INTERNAL, "%s", msg);
            pthread_mutex_unlock(&x->mu);
            return;
        }
        stream_head_locked(x);
        size_t en = 0;
        uint8_t *e = body ? envelope(0, body, n, &en) : NULL;
        free(body);
        if (e) {
            push_data_locked(x, e, en, 1);
            next_message_locked(x);
        } else {
            x->close_after = 1;
            az_upcall_cancel(x->up);
        }
        pthread_mutex_unlock(&x->mu);
        wake(x);
        return;
    }
    case AZ_UPEV_STATUS: {
        const char *message;
        pthread_mutex_lock(&x->mu);
        int status = final_status(x, ev, &message);
        copy_request_id(x, ev->md);
        if (x->connect_stream && status == 0) {
            /* Streams always answer 200; the end-of-stream message says how it went. */
            stream_head_locked(x);
            size_t en = 0;
            uint8_t *e = envelope(0x02, (const uint8_t *)"{}", 2, &en);
            if (e) push_data_locked(x, e, en, 0);
            else x->close_after = 1;
            push_end_locked(x, 0, NULL);
        } else if (!x->connect_stream && status == 0 && x->resp_err == AZ_OK && x->resp) {
            respond_locked(x, 200, stream_ctype(x), (uint8_t *)x->resp, x->resp_len, 0);
            x->resp = NULL;
        } else {
            if (status == 0) {
                status = x->resp ? az_err_grpc_status(x->resp_err) : 13;
                message = x->resp ? x->resp_msg : "the server returned OK without a response";
            }
            connect_error_locked(x, status, message);
        }
        pthread_mutex_unlock(&x->mu);
        wake(x);
        upstream_done(x);
        return;
    }
    }
}

/* A Connect error: the unary JSON error with its HTTP status, or (streaming) a 200 stream that
 * only ends; call with x->mu held. */
static void connect_error_locked(az_xch *x, int status, const char *message)
{
    if (x->connect_stream) {
        stream_head_locked(x);
        char *json = connect_error_json(status, message, 1);
        size_t en = 0;
        uint8_t *e = json ? envelope(0x02, (const uint8_t *)json, strlen(json), &en) : NULL;
        free(json);
        if (e) push_data_locked(x, e, en, 0);
        push_end_locked(x, 0, NULL);
    } else {
        char *json = connect_error_json(status, message, 0);
        respond_locked(x, az_transcode_http_status(status), "application/json", (uint8_t *)json,
                       json ? strlen(json) : 0, 0);
    }
}

static void connect_fail(az_xch *x, int status, const char *message)
{
    pthread_mutex_lock(&x->mu);
    connect_error_locked(x, status, message);
    pthread_mutex_unlock(&x->mu);
    wake(x);
}

static void on_health(az_xch *x, const az_upev *ev)
{
    if (ev->kind == AZ_UPEV_MESSAGE) {
        Grpc__Health__V1__HealthCheckResponse *r =
            grpc__health__v1__health_check_response__unpack(NULL, ev->len, ev->data);
        pthread_mutex_lock(&x->mu);
        x->health = r ? (int)r->status : 0;
        pthread_mutex_unlock(&x->mu);
        if (r) grpc__health__v1__health_check_response__free_unpacked(r, NULL);
        return;
    }
    if (ev->kind != AZ_UPEV_STATUS) return;
    int serving = ev->status == 0 &&
                  x->health == GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING;
    const char *state = serving ? "SERVING" : ev->status == 0 ? "NOT_SERVING" : "UNAVAILABLE";
    char *json = NULL;
    size_t len = 0;
    az_transcode_status_json(ev->status, ev->status ? ev->details : "", &json, &len);
    char *body = NULL;
    int n = asprintf(&body, "{\"status\":\"%s\",\"upstream\":%s}", state, json ? json : "{}");
    free(json);
    pthread_mutex_lock(&x->mu);
    if (n < 0) respond_locked(x, 503, "application/json", NULL, 0, 0);
    else respond_locked(x, serving ? 200 : 503, "application/json", (uint8_t *)body, (size_t)n, 0);
    pthread_mutex_unlock(&x->mu);
    wake(x);
    upstream_done(x);
}

static void on_upstream(void *arg, const az_upev *ev)
{
    az_xch *x = arg;
    switch (x->kind) {
    case AZ_XCH_REST: on_rest(x, ev); break;
    case AZ_XCH_STREAM:
    case AZ_XCH_WS: on_stream(x, ev); break;
    case AZ_XCH_GRPCWEB: on_grpcweb(x, ev); break;
    case AZ_XCH_HEALTH: on_health(x, ev); break;
    case AZ_XCH_CONNECT: on_connect(x, ev); break;
    case AZ_XCH_LOCAL: break;
    }
}

/* ------------------------------------------------------------------ starting calls */

/* "5s", "250ms", "1.5s", "2m", or a bare number of seconds; -1 when malformed. */
static int64_t parse_timeout(const char *s)
{
    char *end;
    double v = strtod(s, &end);
    if (end == s || !(v >= 0)) return -1;
    static const struct {
        const char *unit;
        double ms;
    } units[] = {{"", 1000}, {"s", 1000}, {"ms", 1}, {"m", 60000}, {"h", 3600000}};
    for (size_t i = 0; i < sizeof units / sizeof *units; i++)
        if (strcmp(end, units[i].unit) == 0) {
            double ms = v * units[i].ms;
            if (ms > 9e15) return -1;
            int64_t whole = (int64_t)ms;
            return whole + (ms > (double)whole); /* 0.5ms is 1 ms, not an expired 0 */
        }
    return -1;
}

/* The gRPC "grpc-timeout" form: up to 8 digits and a unit H, M, S, m, u or n. */
static int64_t parse_grpc_timeout(const char *s, size_t n)
{
    if (n < 2 || n > 9) return -1;
    int64_t v = 0;
    for (size_t i = 0; i + 1 < n; i++) {
        if (!isdigit((unsigned char)s[i])) return -1;
        v = v * 10 + (s[i] - '0');
    }
    switch (s[n - 1]) {
    case 'H': return v * 3600000;
    case 'M': return v * 60000;
    case 'S': return v * 1000;
    case 'm': return v;
    case 'u': return v / 1000 + (v % 1000 != 0);
    case 'n': return v / 1000000 + (v % 1000000 != 0);
    }
    return -1;
}

#define TIMEOUT_EXPIRED (-2)

/* The upstream deadline: X-Request-Timeout (grpc-timeout for grpc-web), capped; else the
 * default for unary calls and none for streams. -1 = a malformed header, TIMEOUT_EXPIRED = a
 * timeout of zero ("0s", "0m"): the deadline has passed before the call could start. */
static int64_t call_timeout(const az_xch *x, int streaming)
{
    const az_xch_env *env = x->env;
    int64_t ms = 0;
    int given = 0;
    if (x->fixed_timeout_ms > 0) return x->fixed_timeout_ms;
    if (x->hv[AZ_H_TIMEOUT]) {
        if ((ms = parse_timeout(x->hv[AZ_H_TIMEOUT])) < 0) return -1;
        given = 1;
    } else if (x->kind == AZ_XCH_GRPCWEB && x->hv[AZ_H_GRPC_TIMEOUT]) {
        if ((ms = parse_grpc_timeout(x->hv[AZ_H_GRPC_TIMEOUT], x->hl[AZ_H_GRPC_TIMEOUT])) < 0) return -1;
        given = 1;
    } else if (x->kind == AZ_XCH_CONNECT && x->hv[AZ_H_CONNECT_TIMEOUT]) {
        char *end;
        long long v = strtoll(x->hv[AZ_H_CONNECT_TIMEOUT], &end, 10);
        if (*end || v < 0 || x->hl[AZ_H_CONNECT_TIMEOUT] > 10) return -1;
        ms = v;
        given = 1;
    } else if (!streaming) {
        ms = env->call_timeout_ms;
    }
    if (ms > env->max_call_timeout_ms) ms = env->max_call_timeout_ms;
    if (given && ms == 0) return TIMEOUT_EXPIRED; /* "0s" is an expired deadline, not none */
    return ms;
}

static void add_md(az_upmd *md, size_t *n, size_t max, const char *key, const char *v, size_t len)
{
    if (v && *n < max) md[(*n)++] = (az_upmd){key, v, len};
}

/* Starts the upstream call with the serialized request; answers the client on failure. */
static void start_call(az_xch *x, const char *method, int streaming, const uint8_t *req, size_t len)
{
    az_xch_env *env = x->env;
    int64_t timeout = call_timeout(x, streaming);
    if (timeout == TIMEOUT_EXPIRED) {
        /* As gRPC does with an expired deadline: DEADLINE_EXCEEDED, the call never starts. */
        az_xch_fail(x, 0, 4, "deadline exceeded: a timeout of 0 expired before the call started");
        return;
    }
    if (timeout < 0) {
        az_xch_fail(x, 0, 3, "header %s: not a valid timeout",
                    x->hv[AZ_H_TIMEOUT] ? "X-Request-Timeout (a duration like 5s, 250ms or 2m)"
                    : x->kind == AZ_XCH_CONNECT ? "Connect-Timeout-Ms (milliseconds, at most 10 digits)"
                                                : "grpc-timeout");
        return;
    }
    az_upmd md[8];
    size_t n = 0;
    char *bearer = NULL;
    if (x->hv[AZ_H_AUTH]) {
        add_md(md, &n, 8, "authorization", x->hv[AZ_H_AUTH], x->hl[AZ_H_AUTH]);
    } else if (x->access_token) {
        int bl = asprintf(&bearer, "Bearer %s", x->access_token);
        if (bl > 0) add_md(md, &n, 8, "authorization", bearer, (size_t)bl);
        else bearer = NULL;
    }
    add_md(md, &n, 8, "x-api-key", x->hv[AZ_H_APIKEY], x->hl[AZ_H_APIKEY]);
    add_md(md, &n, 8, "x-request-id", x->request_id[0] ? x->request_id : NULL, strlen(x->request_id));
    add_md(md, &n, 8, "traceparent", x->hv[AZ_H_TRACEPARENT], x->hl[AZ_H_TRACEPARENT]);
    add_md(md, &n, 8, "tracestate", x->hv[AZ_H_TRACESTATE], x->hl[AZ_H_TRACESTATE]);
    /* The client's address, after the proxies in front of us. */
    char xff[1024];
    int xl = x->hv[AZ_H_XFF]
                 ? snprintf(xff, sizeof xff, "%.*s, %s", (int)x->hl[AZ_H_XFF], x->hv[AZ_H_XFF], x->peer)
                 : snprintf(xff, sizeof xff, "%s", x->peer);
    if (x->peer[0] && xl > 0 && (size_t)xl < sizeof xff) add_md(md, &n, 8, "x-forwarded-for", xff, (size_t)xl);

    az_upcall_opts o = {.method = method, .streaming = streaming, .md = md, .nmd = n,
                        .timeout_ms = timeout, .request = req, .request_len = len,
                        .fn = on_upstream, .arg = x};
    char msg[AZ_MSG_MAX];
    az_xch_ref(x); /* the upstream's reference, dropped by upstream_done */
    pthread_mutex_lock(&env->mu);
    x->live_next = env->live;
    if (env->live) env->live->live_prev = x;
    env->live = x;
    if (!streaming) {
        env->unary_inflight++;
        x->unary_counted = 1;
    }
    pthread_mutex_unlock(&env->mu);
    /* x->mu is held across the start so the first event cannot find x->up unset. */
    pthread_mutex_lock(&x->mu);
    az_err err = az_upcall_start(env->up, &o, &x->up, msg);
    pthread_mutex_unlock(&x->mu);
    if (bearer) {
        explicit_bzero(bearer, strlen(bearer));
        free(bearer);
    }
    if (err) {
        pthread_mutex_lock(&env->mu);
        live_remove_locked(env, x);
        if (x->unary_counted) env->unary_inflight--;
        x->unary_counted = 0;
        pthread_mutex_unlock(&env->mu);
        az_xch_unref(x);
        az_xch_fail(x, 0, az_err_grpc_status(err), "%s", msg);
    }
}

/* Sets after_sequence from Last-Event-ID for requests that have it (the Watch methods). */
static az_err apply_last_event_id(az_xch *x, ProtobufCMessage *m, char *msg)
{
    if (!x->hv[AZ_H_LAST_EVENT_ID] || !x->hl[AZ_H_LAST_EVENT_ID]) return AZ_OK;
    const ProtobufCFieldDescriptor *f =
        protobuf_c_message_descriptor_get_field_by_name(m->descriptor, "after_sequence");
    if (!f || f->type != PROTOBUF_C_TYPE_INT64) return AZ_OK;
    char *end;
    long long v = strtoll(x->hv[AZ_H_LAST_EVENT_ID], &end, 10);
    if (*end || v < 0)
        return az_fail(msg, AZ_ERR_INVALID, "header Last-Event-ID: \"%.40s\" is not an event sequence",
                       x->hv[AZ_H_LAST_EVENT_ID]);
    *(int64_t *)((char *)m + f->offset) = v;
    return AZ_OK;
}

static void run_rest(az_xch *x)
{
    char msg[AZ_MSG_MAX];
    ProtobufCMessage *m = NULL;
    az_err err = az_transcode_request(x->route, x->b, x->nb, x->q, x->nq, (const char *)x->body,
                                      x->body_len, NULL, &m, msg);
    if (err == AZ_OK && x->route->method->server_streaming) {
        err = apply_last_event_id(x, m, msg);
        const ProtobufCFieldDescriptor *f =
            protobuf_c_message_descriptor_get_field_by_name(m->descriptor, "after_sequence");
        if (err == AZ_OK && f && f->type == PROTOBUF_C_TYPE_INT64)
            x->last_seq = *(const int64_t *)((const char *)m + f->offset);
    }
    if (err) {
        protobuf_c_message_free_unpacked(m, NULL);
        az_xch_fail(x, 0, az_err_grpc_status(err), "%s", msg);
        return;
    }
    size_t len = protobuf_c_message_get_packed_size(m);
    uint8_t stackbuf[1024];
    uint8_t *buf = len <= sizeof stackbuf ? stackbuf : malloc(len);
    if (!buf) {
        protobuf_c_message_free_unpacked(m, NULL);
        az_xch_fail(x, 0, 8, "out of memory");
        return;
    }
    protobuf_c_message_pack(m, buf);
    protobuf_c_message_free_unpacked(m, NULL);
    start_call(x, x->route->method->grpc_path, x->route->method->server_streaming, buf, len);
    if (buf != stackbuf) free(buf);
}

static void run_grpcweb(az_xch *x)
{
    char msg[AZ_MSG_MAX];
    uint8_t *req = NULL;
    size_t len = 0;
    az_err err = az_grpcweb_request(x->body, x->body_len, x->text, &req, &len, msg);
    if (err) {
        /* grpc-web clients read errors from grpc-status, even for malformed requests. */
        pthread_mutex_lock(&x->mu);
        grpcweb_trailers_only_locked(x, az_err_grpc_status(err), msg);
        pthread_mutex_unlock(&x->mu);
        wake(x);
        return;
    }
    start_call(x, x->uri, x->rpc ? x->rpc->server_streaming : 0, req, len);
    free(req);
}

/* A Connect request: the body as a message (unary), or its one envelope (streaming), in JSON
 * or binary protobuf. */
static void run_connect(az_xch *x)
{
    char msg[AZ_MSG_MAX];
    const uint8_t *body = x->body;
    size_t len = x->body_len;
    if (x->connect_stream) {
        if (len < 5 || (body[0] & 0x01) || ((size_t)body[1] << 24 | (size_t)body[2] << 16 |
                                            (size_t)body[3] << 8 | body[4]) != len - 5) {
            connect_fail(x, (len >= 5 && (body[0] & 0x01)) ? 12 : 3,
                         (len >= 5 && (body[0] & 0x01)) ? "compressed Connect messages are not supported"
                                                         : "the request is not one Connect envelope");
            return;
        }
        body += 5;
        len -= 5;
    }
    if (!x->rpc) {
        connect_fail(x, 12, "no such method");
        return;
    }
    uint8_t *packed = NULL;
    if (x->json) {
        ProtobufCMessage *m = NULL;
        if (az_pbjson_decode(x->rpc->input, (const char *)body, len, NULL, &m, msg) != AZ_OK) {
            connect_fail(x, 3, msg);
            return;
        }
        len = protobuf_c_message_get_packed_size(m);
        packed = malloc(len ? len : 1);
        if (packed) protobuf_c_message_pack(m, packed);
        protobuf_c_message_free_unpacked(m, NULL);
        if (!packed) {
            connect_fail(x, 8, "out of memory");
            return;
        }
        body = packed;
    }
    start_call(x, x->rpc->grpc_path, x->rpc->server_streaming, body, len);
    free(packed);
}

void az_xch_run(az_xch *x)
{
    switch (x->kind) {
    case AZ_XCH_REST:
    case AZ_XCH_STREAM:
    case AZ_XCH_WS: run_rest(x); break;
    case AZ_XCH_GRPCWEB: run_grpcweb(x); break;
    case AZ_XCH_HEALTH: start_call(x, HEALTH_METHOD, 0, (const uint8_t *)"", 0); break;
    case AZ_XCH_CONNECT: run_connect(x); break;
    case AZ_XCH_LOCAL: break;
    }
}

/* ------------------------------------------------------------------ shutdown */

void az_xch_env_cancel(az_xch_env *env, int streams_only)
{
    pthread_mutex_lock(&env->mu);
    for (az_xch *x = env->live; x; x = x->live_next) {
        if (streams_only && x->unary_counted) continue;
        pthread_mutex_lock(&x->mu);
        az_upcall_cancel(x->up);
        pthread_mutex_unlock(&x->mu);
    }
    pthread_mutex_unlock(&env->mu);
}

void az_xch_env_wait_unary(az_xch_env *env, int grace_ms)
{
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += grace_ms / 1000;
    until.tv_nsec += (long)(grace_ms % 1000) * 1000000;
    if (until.tv_nsec >= 1000000000) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000;
    }
    pthread_mutex_lock(&env->mu);
    while (env->unary_inflight > 0 && pthread_cond_timedwait(&env->cv, &env->mu, &until) == 0) {
    }
    pthread_mutex_unlock(&env->mu);
}

int az_xch_env_busy(az_xch_env *env)
{
    pthread_mutex_lock(&env->mu);
    int busy = env->live != NULL;
    pthread_mutex_unlock(&env->mu);
    return busy;
}
