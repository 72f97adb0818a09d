/* The gRPC runtime: one completion queue served by a pool of threads, calls dispatched from
 * method tables, unary/server-streaming/bidi handlers, bounded per-stream send queues. */
#include "rpc.h"

#include <errno.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "../core/file.h"
#include "../core/log.h"

#define ARMED_PER_METHOD 2
#define MAX_HOOKS 8
#define REQUEST_ID_MAX 128

typedef enum tag_kind {
    TAG_NEW_CALL,    /* a registered method's call arrived */
    TAG_NEW_GENERIC, /* an unregistered method's call arrived */
    TAG_RECV_CLOSE,  /* the client went away or the call ended */
    TAG_SEND,        /* a streamed message went out */
    TAG_STATUS,      /* the final status (maybe with the unary response) went out */
    TAG_RECV_MSG,    /* a bidi message arrived */
    TAG_SHUTDOWN,    /* grpc_server_shutdown_and_notify finished */
} tag_kind;

typedef struct tag {
    tag_kind kind;
    az_call *call;
} tag;

typedef struct reg {
    const az_method *m;
    void *handle; /* from grpc_server_register_method */
} reg;

struct az_call {
    az_server *srv;
    const reg *reg; /* NULL for generic (unknown-method) calls */
    grpc_call *call;
    gpr_timespec deadline;
    grpc_metadata_array md;
    grpc_call_details details; /* generic calls only */
    grpc_byte_buffer *payload; /* unary/server-streaming request */
    grpc_byte_buffer *recv_buf;
    az_arena *arena;
    tag t_new, t_close, t_send, t_status, t_recv;
    int close_cancelled; /* written by RECV_CLOSE_ON_SERVER */

    pthread_mutex_t mu;
    int refs;
    atomic_int cancelled;
    int done;            /* status sent, or client gone: no more sends */
    int done_hook_ran;
    int sent_initial_md; /* SEND_INITIAL_METADATA is in a started batch */
    int sending;         /* a TAG_SEND batch is in flight */
    grpc_byte_buffer *inflight;
    grpc_byte_buffer **queue; /* ring of waiting messages */
    int qcap, qhead, qlen;
    int finishing, status_started;
    az_err fin_code;
    char *fin_msg;
    grpc_slice status_details;
    grpc_metadata initial_md[1];
    grpc_byte_buffer *unary_resp;

    void (*cancel_fn)(void *);
    void *cancel_arg;
    void (*done_fn)(az_call *, void *);
    void *done_arg;

    char *peer;
    char *generic_path; /* the unknown method's path, for the log */
    char request_id[REQUEST_ID_MAX + 1];
    char trace_id[33], span_id[17]; /* from a valid W3C traceparent; "" when none */
    struct timespec start;
    int final_status; /* grpc status we sent, or CANCELLED */
    az_principal principal;
    char *target;
    az_call *prev, *next; /* live list */
};

struct az_server {
    az_server_config cfg;
    grpc_server *server;
    grpc_completion_queue *cq;
    int port;
    reg *regs;
    size_t nregs;
    pthread_t *threads;
    int nthreads, started;
    atomic_int shutting_down;
    tag t_shutdown;
    az_authorizer_fn authorize;
    void *authorize_arg;
    az_observer_fn observe;
    void *observe_arg;
    void (*hooks[MAX_HOOKS])(void *);
    void *hook_args[MAX_HOOKS];
    int nhooks;

    pthread_mutex_t mu;
    pthread_cond_t cv;
    az_call *live; /* calls whose handler started, until freed */
    int nlive;
    int shutdown_done;
};

static void call_unref(az_call *c);
static void arm(az_server *s, const reg *r);

static int64_t elapsed_us(const struct timespec *from)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (int64_t)(now.tv_sec - from->tv_sec) * 1000000 + (now.tv_nsec - from->tv_nsec) / 1000;
}

/* ---------------------------------------------------------------- call objects */

static az_call *call_new(az_server *s, const reg *r)
{
    az_call *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    c->srv = s;
    c->reg = r;
    c->refs = 1; /* dropped when the new-call tag fires (or fails) */
    grpc_metadata_array_init(&c->md);
    grpc_call_details_init(&c->details);
    pthread_mutex_init(&c->mu, NULL);
    c->t_new = (tag){r ? TAG_NEW_CALL : TAG_NEW_GENERIC, c};
    c->t_close = (tag){TAG_RECV_CLOSE, c};
    c->t_send = (tag){TAG_SEND, c};
    c->t_status = (tag){TAG_STATUS, c};
    c->t_recv = (tag){TAG_RECV_MSG, c};
    c->status_details = grpc_empty_slice();
    c->final_status = -1;
    return c;
}

static void log_call(az_call *c)
{
    if (!c->call) return; /* never arrived */
    if (c->srv->observe)
        c->srv->observe(c->srv->observe_arg, c, az_call_method(c), c->final_status < 0 ? 2 : c->final_status,
                        elapsed_us(&c->start));
    char fields[1024];
    const char *method = az_call_method(c);
    int64_t us = elapsed_us(&c->start);
    int n = snprintf(fields, sizeof fields,
             "method=%s status=%s duration_ms=%.3f peer=%s request_id=%s workspace=%s", method,
             c->final_status < 0 ? "NONE" : az_grpc_status_name(c->final_status), (double)us / 1000.0, c->peer ? c->peer : "-",
             c->request_id, c->principal.workspace_id[0] ? c->principal.workspace_id : "-");
    if (c->trace_id[0] && n > 0 && (size_t)n < sizeof fields)
        snprintf(fields + n, sizeof fields - (size_t)n, " trace_id=%s span_id=%s", c->trace_id, c->span_id);
    az_log_level lvl = AZ_LOG_INFO;
    if (c->final_status == 13 || c->final_status == 2 || c->final_status == 15) lvl = AZ_LOG_ERROR;
    az_log_kv(lvl, "rpc", fields);
}

static void call_free(az_call *c)
{
    az_server *s = c->srv;
    if (c->call) {
        pthread_mutex_lock(&s->mu);
        if (c->prev || c->next || s->live == c) {
            if (c->prev) c->prev->next = c->next;
            else s->live = c->next;
            if (c->next) c->next->prev = c->prev;
            s->nlive--;
            pthread_cond_broadcast(&s->cv);
        }
        pthread_mutex_unlock(&s->mu);
        log_call(c);
        grpc_call_unref(c->call);
    }
    grpc_metadata_array_destroy(&c->md);
    grpc_call_details_destroy(&c->details);
    if (c->payload) grpc_byte_buffer_destroy(c->payload);
    if (c->recv_buf) grpc_byte_buffer_destroy(c->recv_buf);
    if (c->inflight) grpc_byte_buffer_destroy(c->inflight);
    if (c->unary_resp) grpc_byte_buffer_destroy(c->unary_resp);
    for (int i = 0; i < c->qlen; i++) grpc_byte_buffer_destroy(c->queue[(c->qhead + i) % c->qcap]);
    free(c->queue);
    free(c->fin_msg);
    grpc_slice_unref(c->status_details);
    if (c->peer) gpr_free(c->peer);
    if (c->generic_path) gpr_free(c->generic_path);
    free(c->target);
    az_arena_free(c->arena);
    pthread_mutex_destroy(&c->mu);
    free(c);
}

void az_call_ref(az_call *c)
{
    pthread_mutex_lock(&c->mu);
    c->refs++;
    pthread_mutex_unlock(&c->mu);
}

static void call_unref(az_call *c)
{
    pthread_mutex_lock(&c->mu);
    int left = --c->refs;
    pthread_mutex_unlock(&c->mu);
    if (left == 0) call_free(c);
}

void az_call_unref(az_call *c)
{
    if (c) call_unref(c);
}

/* Runs the done hook once, outside the call's lock: hooks take their own module's lock, and
 * those modules call az_call_send (call lock) while holding it. */
static void run_done_hook(az_call *c)
{
    pthread_mutex_lock(&c->mu);
    void (*fn)(az_call *, void *) = NULL;
    void *arg = NULL;
    if (!c->done_hook_ran) {
        c->done_hook_ran = 1;
        fn = c->done_fn;
        arg = c->done_arg;
    }
    pthread_mutex_unlock(&c->mu);
    if (fn) fn(c, arg);
}

/* ---------------------------------------------------------------- accessors */

void *az_call_data(const az_call *c) { return c->reg ? c->reg->m->data : NULL; }
az_arena *az_call_arena(az_call *c) { return c->arena; }
const char *az_call_peer(const az_call *c) { return c->peer ? c->peer : ""; }
const char *az_call_request_id(const az_call *c) { return c->request_id; }
/* Shutdown counts as cancellation (rpc.h), so long-running handlers wrap up within the grace
 * period; cancel hooks still fire only when gRPC cancels the call. */
int az_call_cancelled(const az_call *c)
{
    return atomic_load(&c->cancelled) || atomic_load(&c->srv->shutting_down);
}

int az_call_queued(az_call *c)
{
    pthread_mutex_lock(&c->mu);
    int n = c->qlen + c->sending;
    pthread_mutex_unlock(&c->mu);
    return n;
}

const char *az_call_method(const az_call *c)
{
    if (c->reg) return c->reg->m->path;
    return c->generic_path ? c->generic_path : "unknown";
}

int64_t az_call_remaining_ms(const az_call *c)
{
    gpr_timespec inf = gpr_inf_future(c->deadline.clock_type);
    if (gpr_time_cmp(c->deadline, inf) == 0) return -1;
    gpr_timespec left = gpr_time_sub(c->deadline, gpr_now(c->deadline.clock_type));
    int64_t ms = left.tv_sec * 1000 + left.tv_nsec / 1000000;
    return ms > 0 ? ms : 0;
}

const char *az_call_metadata(az_call *c, const char *key)
{
    for (size_t i = 0; i < c->md.count; i++) {
        if (grpc_slice_str_cmp(c->md.metadata[i].key, key) == 0) {
            grpc_slice v = c->md.metadata[i].value;
            return az_arena_strndup(c->arena, (const char *)GRPC_SLICE_START_PTR(v),
                                    GRPC_SLICE_LENGTH(v));
        }
    }
    return NULL;
}

const az_principal *az_call_principal(const az_call *c) { return &c->principal; }
const char *az_call_target(const az_call *c) { return c->target ? c->target : ""; }

void az_call_set_target(az_call *c, const char *id)
{
    free(c->target);
    c->target = id ? strdup(id) : NULL;
}

void az_call_set_cancel_hook(az_call *c, void (*fn)(void *), void *arg)
{
    pthread_mutex_lock(&c->mu);
    c->cancel_fn = fn;
    c->cancel_arg = arg;
    int fire = fn && atomic_load(&c->cancelled);
    if (fire) fn(arg);
    pthread_mutex_unlock(&c->mu);
}

static void set_cancel(void *owner, void (*fn)(void *), void *arg)
{
    az_call_set_cancel_hook(owner, fn, arg);
}

void az_call_ctx(az_call *c, az_ctx *ctx)
{
    int64_t left = az_call_remaining_ms(c);
    ctx->workspace_id = c->principal.workspace_id[0] ? c->principal.workspace_id : AZ_DEFAULT_WORKSPACE;
    ctx->principal = c->principal.id;
    ctx->request_id = c->request_id;
    ctx->deadline_ms = left < 0 ? -1 : az_now_ms() + left;
    ctx->set_cancel = set_cancel;
    ctx->owner = c;
}

void az_call_on_done(az_call *c, void (*fn)(az_call *, void *), void *arg)
{
    pthread_mutex_lock(&c->mu);
    int already = c->done_hook_ran;
    c->done_fn = fn;
    c->done_arg = arg;
    pthread_mutex_unlock(&c->mu);
    if (already && fn) fn(c, arg);
}

/* ---------------------------------------------------------------- sending */

static grpc_byte_buffer *pack(const ProtobufCMessage *m, az_err *err)
{
    size_t n = protobuf_c_message_get_packed_size(m);
    grpc_slice sl = grpc_slice_malloc(n);
    protobuf_c_message_pack(m, GRPC_SLICE_START_PTR(sl));
    grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&sl, 1);
    grpc_slice_unref(sl);
    *err = bb ? AZ_OK : AZ_ERR_NOMEM;
    return bb;
}

static void fill_initial_md(az_call *c, grpc_op *op)
{
    op->op = GRPC_OP_SEND_INITIAL_METADATA;
    c->initial_md[0].key = grpc_slice_from_static_string("x-request-id");
    c->initial_md[0].value = grpc_slice_from_static_string(c->request_id);
    op->data.send_initial_metadata.count = 1;
    op->data.send_initial_metadata.metadata = c->initial_md;
    c->sent_initial_md = 1;
}

/* Starts a batch on c; on failure logs and returns 0 (the caller then drops its ref). */
static int start_batch(az_call *c, grpc_op *ops, size_t n, tag *t)
{
    grpc_call_error e = grpc_call_start_batch(c->call, ops, n, t, NULL);
    if (e != GRPC_CALL_OK) {
        az_error("cannot start grpc batch on %s: call error %d", az_call_method(c), (int)e);
        return 0;
    }
    return 1;
}

/* Call with c->mu held and no send in flight: sends the final status (plus the unary
 * response when there is one). */
static void start_status_locked(az_call *c)
{
    grpc_op ops[3];
    size_t n = 0;
    memset(ops, 0, sizeof ops);
    c->status_started = 1;
    if (!c->sent_initial_md) fill_initial_md(c, &ops[n++]);
    if (c->unary_resp) {
        ops[n].op = GRPC_OP_SEND_MESSAGE;
        ops[n].data.send_message.send_message = c->unary_resp;
        n++;
    }
    int code = az_err_grpc_status(c->fin_code);
    grpc_slice_unref(c->status_details);
    c->status_details = grpc_slice_from_copied_string(c->fin_msg ? c->fin_msg : "");
    ops[n].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
    ops[n].data.send_status_from_server.status = (grpc_status_code)code;
    ops[n].data.send_status_from_server.status_details =
        (c->fin_msg && c->fin_code != AZ_OK) ? &c->status_details : NULL;
    ops[n].data.send_status_from_server.trailing_metadata_count = 0;
    n++;
    c->final_status = code;
    c->refs++;
    if (!start_batch(c, ops, n, &c->t_status)) {
        c->refs--;
        c->done = 1;
    }
}

static void start_send_locked(az_call *c, grpc_byte_buffer *bb)
{
    grpc_op ops[2];
    size_t n = 0;
    memset(ops, 0, sizeof ops);
    if (!c->sent_initial_md) fill_initial_md(c, &ops[n++]);
    ops[n].op = GRPC_OP_SEND_MESSAGE;
    ops[n].data.send_message.send_message = bb;
    n++;
    c->inflight = bb;
    c->sending = 1;
    c->refs++;
    if (!start_batch(c, ops, n, &c->t_send)) {
        c->refs--;
        c->sending = 0;
        c->inflight = NULL;
        grpc_byte_buffer_destroy(bb);
        c->done = 1;
    }
}

/* A stream the handler accepted gets its initial metadata at once, before any event: the
 * client (and the HTTP gateway, which must choose between an HTTP error and a 200 stream) learns
 * the call was accepted even when the first event is seconds away. It travels as a send
 * without a message, so it still takes the one send slot in turn. */
static void send_headers(az_call *c)
{
    pthread_mutex_lock(&c->mu);
    if (!c->sent_initial_md && !c->sending && !c->finishing && !c->done) {
        grpc_op op;
        memset(&op, 0, sizeof op);
        fill_initial_md(c, &op);
        c->inflight = NULL;
        c->sending = 1;
        c->refs++;
        if (!start_batch(c, &op, 1, &c->t_send)) {
            c->refs--;
            c->sending = 0;
            c->done = 1;
        }
    }
    pthread_mutex_unlock(&c->mu);
}

static void drop_queue_locked(az_call *c)
{
    for (int i = 0; i < c->qlen; i++) grpc_byte_buffer_destroy(c->queue[(c->qhead + i) % c->qcap]);
    c->qlen = 0;
    c->qhead = 0;
}

static void finish_locked(az_call *c, az_err code, const char *msg)
{
    if (c->finishing) return;
    c->finishing = 1;
    c->fin_code = code;
    c->fin_msg = msg ? strdup(msg) : NULL;
    if (!c->sending && !c->done) start_status_locked(c);
}

az_err az_call_send(az_call *c, const ProtobufCMessage *m)
{
    az_err err;
    pthread_mutex_lock(&c->mu);
    if (c->done || c->finishing || atomic_load(&c->cancelled)) {
        pthread_mutex_unlock(&c->mu);
        return AZ_ERR_CANCELLED;
    }
    pthread_mutex_unlock(&c->mu);
    /* Serialize outside the lock: packing can be the expensive part. */
    grpc_byte_buffer *bb = pack(m, &err);
    if (!bb) return err;
    pthread_mutex_lock(&c->mu);
    if (c->done || c->finishing) {
        pthread_mutex_unlock(&c->mu);
        grpc_byte_buffer_destroy(bb);
        return AZ_ERR_CANCELLED;
    }
    if (!c->sending) {
        start_send_locked(c, bb);
        err = c->done ? AZ_ERR_CANCELLED : AZ_OK;
    } else if (c->qlen >= c->srv->cfg.stream_queue_limit) {
        grpc_byte_buffer_destroy(bb);
        drop_queue_locked(c);
        char msg[160];
        snprintf(msg, sizeof msg,
                 "stream consumer too slow: more than %d messages waiting; resume from the last "
                 "sequence received",
                 c->srv->cfg.stream_queue_limit);
        finish_locked(c, AZ_ERR_EXHAUSTED, msg);
        err = AZ_ERR_EXHAUSTED;
    } else {
        if (!c->queue) {
            c->qcap = c->srv->cfg.stream_queue_limit;
            c->queue = calloc((size_t)c->qcap, sizeof *c->queue);
            if (!c->queue) {
                pthread_mutex_unlock(&c->mu);
                grpc_byte_buffer_destroy(bb);
                return AZ_ERR_NOMEM;
            }
        }
        c->queue[(c->qhead + c->qlen) % c->qcap] = bb;
        c->qlen++;
        err = AZ_OK;
    }
    pthread_mutex_unlock(&c->mu);
    return err;
}

void az_call_finish(az_call *c, az_err code, const char *msg)
{
    pthread_mutex_lock(&c->mu);
    finish_locked(c, code, msg);
    pthread_mutex_unlock(&c->mu);
}

/* ---------------------------------------------------------------- completions */

static void on_send_done(az_call *c, int ok)
{
    pthread_mutex_lock(&c->mu);
    if (c->inflight) grpc_byte_buffer_destroy(c->inflight);
    c->inflight = NULL;
    c->sending = 0;
    if (!ok) {
        /* The call is broken (client gone); nothing more can be sent. */
        c->done = 1;
        drop_queue_locked(c);
    } else if (c->qlen > 0) {
        grpc_byte_buffer *bb = c->queue[c->qhead];
        c->qhead = (c->qhead + 1) % c->qcap;
        c->qlen--;
        start_send_locked(c, bb);
    } else if (c->finishing && !c->status_started && !c->done) {
        start_status_locked(c);
    }
    pthread_mutex_unlock(&c->mu);
    call_unref(c);
}

static void on_status_done(az_call *c, int ok)
{
    pthread_mutex_lock(&c->mu);
    c->done = 1;
    pthread_mutex_unlock(&c->mu);
    run_done_hook(c);
    call_unref(c);
}

static void on_close(az_call *c, int ok)
{
    pthread_mutex_lock(&c->mu);
    if (c->close_cancelled) {
        atomic_store(&c->cancelled, 1);
        c->done = 1;
        drop_queue_locked(c);
        if (!c->status_started) c->final_status = 1; /* CANCELLED, as seen by the log */
        if (c->cancel_fn) c->cancel_fn(c->cancel_arg);
    }
    int gone = c->done;
    pthread_mutex_unlock(&c->mu);
    if (gone) run_done_hook(c);
    call_unref(c);
}

static az_err decode(az_call *c, grpc_byte_buffer *bb, az_arena *arena,
                  const ProtobufCMessageDescriptor *desc, ProtobufCMessage **out, char *msg)
{
    grpc_byte_buffer_reader rd;
    if (!grpc_byte_buffer_reader_init(&rd, bb))
        return az_fail(msg, AZ_ERR_INVALID, "cannot read request message");
    grpc_slice all = grpc_byte_buffer_reader_readall(&rd);
    grpc_byte_buffer_reader_destroy(&rd);
    *out = protobuf_c_message_unpack(desc, az_arena_allocator(arena), GRPC_SLICE_LENGTH(all),
                                     GRPC_SLICE_START_PTR(all));
    grpc_slice_unref(all);
    if (!*out)
        return az_fail(msg, AZ_ERR_INVALID, "request is not a valid %s message", desc->name);
    return AZ_OK;
}

static void arm_recv_locked(az_call *c)
{
    grpc_op op;
    memset(&op, 0, sizeof op);
    op.op = GRPC_OP_RECV_MESSAGE;
    op.data.recv_message.recv_message = &c->recv_buf;
    c->refs++;
    if (!start_batch(c, &op, 1, &c->t_recv)) {
        c->refs--;
        finish_locked(c, AZ_ERR_INTERNAL, "cannot read from stream");
    }
}

static void on_recv(az_call *c, int ok)
{
    char msg[AZ_MSG_MAX] = "";
    const az_method *m = c->reg->m;
    grpc_byte_buffer *bb = c->recv_buf;
    c->recv_buf = NULL;
    if (!ok || az_call_cancelled(c)) {
        if (bb) grpc_byte_buffer_destroy(bb);
        call_unref(c);
        return;
    }
    az_err err;
    if (!bb) {
        err = m->bidi(c, NULL, msg); /* half-close */
        if (err != AZ_OK) az_call_finish(c, err, msg);
        call_unref(c);
        return;
    }
    az_arena *arena = az_arena_new((size_t)c->srv->cfg.max_message_bytes * 4 + 65536);
    ProtobufCMessage *req = NULL;
    err = arena ? decode(c, bb, arena, m->input, &req, msg)
                : az_fail(msg, AZ_ERR_NOMEM, "out of memory");
    grpc_byte_buffer_destroy(bb);
    if (err == AZ_OK) err = m->bidi(c, req, msg);
    az_arena_free(arena);
    pthread_mutex_lock(&c->mu);
    if (err != AZ_OK) finish_locked(c, err, msg);
    else if (!c->finishing && !c->done) arm_recv_locked(c);
    pthread_mutex_unlock(&c->mu);
    call_unref(c);
}

static void set_request_id(az_call *c)
{
    for (size_t i = 0; i < c->md.count; i++) {
        if (grpc_slice_str_cmp(c->md.metadata[i].key, "x-request-id") != 0) continue;
        grpc_slice v = c->md.metadata[i].value;
        size_t n = GRPC_SLICE_LENGTH(v);
        const unsigned char *p = GRPC_SLICE_START_PTR(v);
        int okid = n > 0 && n <= REQUEST_ID_MAX;
        for (size_t k = 0; okid && k < n; k++) okid = p[k] > 0x20 && p[k] < 0x7f && p[k] != '"';
        if (okid) {
            memcpy(c->request_id, p, n);
            c->request_id[n] = '\0';
            return;
        }
    }
    static atomic_uint_fast64_t counter;
    uint64_t r = atomic_fetch_add(&counter, 1) + 1;
    unsigned long long salt = (unsigned long long)getpid() << 32 ^ (unsigned long long)time(NULL);
    snprintf(c->request_id, sizeof c->request_id, "%016llx%08llx", salt,
             (unsigned long long)r & 0xffffffffull);
}

/* The trace context of a W3C traceparent metadata entry, for the call's log line; an invalid
 * one is ignored (az_log_traceparent). */
static void set_trace(az_call *c)
{
    for (size_t i = 0; i < c->md.count; i++) {
        if (grpc_slice_str_cmp(c->md.metadata[i].key, "traceparent") != 0) continue;
        grpc_slice v = c->md.metadata[i].value;
        az_log_traceparent((const char *)GRPC_SLICE_START_PTR(v), GRPC_SLICE_LENGTH(v), c->trace_id, c->span_id);
        return;
    }
}

static void start_recv_close(az_call *c)
{
    grpc_op op;
    memset(&op, 0, sizeof op);
    op.op = GRPC_OP_RECV_CLOSE_ON_SERVER;
    op.data.recv_close_on_server.cancelled = &c->close_cancelled;
    pthread_mutex_lock(&c->mu);
    c->refs++;
    if (!start_batch(c, &op, 1, &c->t_close)) c->refs--;
    pthread_mutex_unlock(&c->mu);
}

static void track(az_call *c)
{
    az_server *s = c->srv;
    pthread_mutex_lock(&s->mu);
    c->next = s->live;
    if (s->live) s->live->prev = c;
    s->live = c;
    s->nlive++;
    pthread_mutex_unlock(&s->mu);
}

static void on_new_call(az_call *c, int ok)
{
    az_server *s = c->srv;
    if (!ok) { /* shutting down: the request was never matched */
        call_unref(c);
        return;
    }
    /* Re-arm even while shutting down: a call that reached the transport before the listeners
     * closed would otherwise wait unmatched until the grace period ends, and its client until
     * its deadline. It is matched and refused below instead. */
    arm(s, c->reg);
    clock_gettime(CLOCK_MONOTONIC, &c->start);
    c->peer = grpc_call_get_peer(c->call);
    set_request_id(c);
    set_trace(c);
    track(c);
    start_recv_close(c);

    char msg[AZ_MSG_MAX] = "";
    az_err err = AZ_OK;
    const az_method *m = c->reg ? c->reg->m : NULL;
    c->arena = az_arena_new(0);
    if (!c->arena) err = az_fail(msg, AZ_ERR_NOMEM, "out of memory");
    if (!m) c->generic_path = grpc_slice_to_c_string(c->details.method);
    if (err == AZ_OK && atomic_load(&s->shutting_down))
        err = az_fail(msg, AZ_ERR_UNAVAILABLE, "server shutting down");
    if (err == AZ_OK && s->authorize) {
        strcpy(c->principal.auth_method, "none");
        err = s->authorize(s->authorize_arg, c, az_call_method(c), &c->principal, msg);
    }
    if (err != AZ_OK) {
        /* refused before the handler: the status below carries why */
    } else if (!m) {
        err = az_fail(msg, AZ_ERR_UNIMPLEMENTED, "method %s is not implemented by this server",
                      c->generic_path);
    } else if (err == AZ_OK && m->kind == AZ_RPC_UNARY) {
        ProtobufCMessage *req = NULL, *resp = NULL;
        if (!c->payload) err = az_fail(msg, AZ_ERR_INVALID, "request message missing");
        else err = decode(c, c->payload, c->arena, m->input, &req, msg);
        if (err == AZ_OK) err = m->unary(c, req, &resp, msg);
        if (err == AZ_OK && !resp) err = az_fail(msg, AZ_ERR_INTERNAL, "handler returned no response");
        if (err == AZ_OK) c->unary_resp = pack(resp, &err);
        pthread_mutex_lock(&c->mu);
        if (err != AZ_OK && c->unary_resp) {
            grpc_byte_buffer_destroy(c->unary_resp);
            c->unary_resp = NULL;
        }
        if (!c->done) finish_locked(c, err, err == AZ_OK ? NULL : msg);
        /* The buffer belongs to the status batch now and is freed in call_free. */
        pthread_mutex_unlock(&c->mu);
        call_unref(c);
        return;
    } else if (err == AZ_OK && m->kind == AZ_RPC_SERVER_STREAM) {
        ProtobufCMessage *req = NULL;
        if (!c->payload) err = az_fail(msg, AZ_ERR_INVALID, "request message missing");
        else err = decode(c, c->payload, c->arena, m->input, &req, msg);
        if (err == AZ_OK) err = m->stream(c, req, msg);
        if (err == AZ_OK) send_headers(c);
    } else if (err == AZ_OK) {
        pthread_mutex_lock(&c->mu);
        arm_recv_locked(c);
        pthread_mutex_unlock(&c->mu);
    }
    if (err != AZ_OK) az_call_finish(c, err, msg);
    call_unref(c);
}

static void *cq_thread(void *arg)
{
    az_server *s = arg;
    for (;;) {
        grpc_event ev = grpc_completion_queue_next(s->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
        if (ev.type == GRPC_QUEUE_SHUTDOWN) break;
        if (ev.type != GRPC_OP_COMPLETE) continue;
        tag *t = ev.tag;
        switch (t->kind) {
        case TAG_NEW_CALL:
        case TAG_NEW_GENERIC: on_new_call(t->call, ev.success); break;
        case TAG_RECV_CLOSE: on_close(t->call, ev.success); break;
        case TAG_SEND: on_send_done(t->call, ev.success); break;
        case TAG_STATUS: on_status_done(t->call, ev.success); break;
        case TAG_RECV_MSG: on_recv(t->call, ev.success); break;
        case TAG_SHUTDOWN:
            pthread_mutex_lock(&s->mu);
            s->shutdown_done = 1;
            pthread_cond_broadcast(&s->cv);
            pthread_mutex_unlock(&s->mu);
            break;
        }
    }
    return NULL;
}

/* Asks gRPC for the next call of r's method (r == NULL: any unregistered method). */
static void arm(az_server *s, const reg *r)
{
    az_call *c = call_new(s, r);
    if (!c) {
        az_error("cannot arm a call for %s: out of memory", r ? r->m->path : "unknown methods");
        return;
    }
    grpc_call_error e;
    if (r) {
        int with_payload = r->m->kind != AZ_RPC_BIDI;
        e = grpc_server_request_registered_call(s->server, r->handle, &c->call, &c->deadline,
                                                &c->md, with_payload ? &c->payload : NULL, s->cq,
                                                s->cq, &c->t_new);
    } else {
        e = grpc_server_request_call(s->server, &c->call, &c->details, &c->md, s->cq, s->cq,
                                     &c->t_new);
        c->deadline = gpr_inf_future(GPR_CLOCK_MONOTONIC);
    }
    if (e != GRPC_CALL_OK) {
        az_error("cannot request a call for %s: call error %d", r ? r->m->path : "unknown methods",
                 (int)e);
        call_free(c);
    }
}

/* ---------------------------------------------------------------- the server */

/* A PEM file as a NUL-terminated string, or NULL with msg naming the path. */
static char *read_pem(const char *path, char *msg)
{
    char *buf = NULL;
    return az_file_read(path, &buf, NULL, msg) == AZ_OK ? buf : NULL;
}

static grpc_server_credentials *make_creds(const az_server_config *cfg, char *msg)
{
    if (!cfg->tls_cert_file && !cfg->tls_key_file) return grpc_insecure_server_credentials_create();
    if (!cfg->tls_cert_file || !cfg->tls_key_file) {
        az_fail(msg, AZ_ERR_INVALID, "--tls-cert and --tls-key must be given together");
        return NULL;
    }
    char *cert = read_pem(cfg->tls_cert_file, msg);
    if (!cert) return NULL;
    char *key = read_pem(cfg->tls_key_file, msg);
    if (!key) {
        free(cert);
        return NULL;
    }
    char *ca = NULL;
    if (cfg->tls_client_ca_file && !(ca = read_pem(cfg->tls_client_ca_file, msg))) {
        free(cert);
        free(key);
        return NULL;
    }
    grpc_ssl_pem_key_cert_pair pair = {key, cert};
    grpc_server_credentials *creds = grpc_ssl_server_credentials_create_ex(
        ca, &pair, 1,
        ca ? GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY
           : GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE,
        NULL);
    free(cert);
    free(key);
    free(ca);
    if (!creds) az_fail(msg, AZ_ERR_INVALID, "cannot create tls credentials from %s and %s",
                        cfg->tls_cert_file, cfg->tls_key_file);
    return creds;
}

az_server *az_server_new(const az_server_config *cfg, const az_method *const *tables,
                         const size_t *counts, size_t ntables, char *msg)
{
    grpc_init();
    az_server *s = calloc(1, sizeof *s);
    if (!s) {
        grpc_shutdown();
        az_fail(msg, AZ_ERR_NOMEM, "out of memory");
        return NULL;
    }
    s->cfg = *cfg;
    if (s->cfg.threads <= 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        s->cfg.threads = n > 0 ? (int)n * 4 : 4;
        if (s->cfg.threads < 4) s->cfg.threads = 4;
    }
    if (s->cfg.max_message_bytes <= 0) s->cfg.max_message_bytes = 4 << 20;
    if (s->cfg.stream_queue_limit <= 0) s->cfg.stream_queue_limit = 256;
    if (s->cfg.shutdown_grace_ms <= 0) s->cfg.shutdown_grace_ms = 10000;
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    s->t_shutdown.kind = TAG_SHUTDOWN;

    grpc_arg args[5];
    args[0].type = GRPC_ARG_INTEGER;
    args[0].key = GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH;
    args[0].value.integer = s->cfg.max_message_bytes;
    args[1].type = GRPC_ARG_INTEGER;
    args[1].key = GRPC_ARG_MAX_SEND_MESSAGE_LENGTH;
    args[1].value.integer = s->cfg.max_message_bytes;
    /* Idle watch streams stay up through proxies and NATs. */
    args[2].type = GRPC_ARG_INTEGER;
    args[2].key = GRPC_ARG_KEEPALIVE_TIME_MS;
    args[2].value.integer = 60000;
    args[3].type = GRPC_ARG_INTEGER;
    args[3].key = GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS;
    args[3].value.integer = 10000;
    /* gRPC sets SO_REUSEPORT by default: a second agentzd on a busy port would start without
     * error and the kernel would split new connections between the two. */
    args[4].type = GRPC_ARG_INTEGER;
    args[4].key = GRPC_ARG_ALLOW_REUSEPORT;
    args[4].value.integer = 0;
    grpc_channel_args chargs = {5, args};
    s->server = grpc_server_create(&chargs, NULL);
    s->cq = grpc_completion_queue_create_for_next(NULL);
    grpc_server_register_completion_queue(s->server, s->cq, NULL);

    size_t total = 0;
    for (size_t t = 0; t < ntables; t++) total += counts[t];
    s->regs = calloc(total ? total : 1, sizeof *s->regs);
    if (!s->regs) goto nomem;
    for (size_t t = 0; t < ntables; t++) {
        for (size_t i = 0; i < counts[t]; i++) {
            const az_method *m = &tables[t][i];
            reg *r = &s->regs[s->nregs++];
            r->m = m;
            r->handle = grpc_server_register_method(
                s->server, m->path, NULL,
                m->kind == AZ_RPC_BIDI ? GRPC_SRM_PAYLOAD_NONE
                                       : GRPC_SRM_PAYLOAD_READ_INITIAL_BYTE_BUFFER,
                0);
            if (!r->handle) {
                az_fail(msg, AZ_ERR_INTERNAL, "cannot register method %s (duplicate?)", m->path);
                goto fail;
            }
        }
    }
    grpc_server_credentials *creds = make_creds(&s->cfg, msg);
    if (!creds) goto fail;
    s->port = grpc_server_add_http2_port(s->server, s->cfg.listen, creds);
    grpc_server_credentials_release(creds);
    if (s->port == 0) {
        az_fail(msg, AZ_ERR_UNAVAILABLE, "cannot listen on %s: address invalid or in use",
                s->cfg.listen);
        goto fail;
    }
    if (s->cfg.local_listen) {
        grpc_server_credentials *local = grpc_insecure_server_credentials_create();
        int ok = grpc_server_add_http2_port(s->server, s->cfg.local_listen, local) != 0;
        grpc_server_credentials_release(local);
        if (!ok) {
            az_fail(msg, AZ_ERR_UNAVAILABLE, "cannot listen on %s", s->cfg.local_listen);
            goto fail;
        }
    }
    return s;
nomem:
    az_fail(msg, AZ_ERR_NOMEM, "out of memory");
fail:
    grpc_server_destroy(s->server);
    grpc_completion_queue_shutdown(s->cq);
    while (grpc_completion_queue_next(s->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL).type !=
           GRPC_QUEUE_SHUTDOWN) {
    }
    grpc_completion_queue_destroy(s->cq);
    free(s->regs);
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->cv);
    free(s);
    grpc_shutdown();
    return NULL;
}

int az_server_port(const az_server *s) { return s->port; }

az_err az_server_start(az_server *s, char *msg)
{
    grpc_server_start(s->server);
    for (size_t i = 0; i < s->nregs; i++) {
        for (int k = 0; k < ARMED_PER_METHOD; k++) arm(s, &s->regs[i]);
    }
    arm(s, NULL);
    s->threads = calloc((size_t)s->cfg.threads, sizeof *s->threads);
    if (!s->threads) return az_fail(msg, AZ_ERR_NOMEM, "out of memory");
    for (int i = 0; i < s->cfg.threads; i++) {
        if (pthread_create(&s->threads[i], NULL, cq_thread, s) != 0) {
            /* The threads already running drain the queue; shutdown joins them. */
            s->started = s->nthreads > 0;
            return az_fail(msg, AZ_ERR_INTERNAL, "cannot start completion-queue thread %d", i);
        }
        s->nthreads++;
    }
    s->started = 1;
    return AZ_OK;
}

void az_server_set_authorizer(az_server *s, az_authorizer_fn fn, void *arg)
{
    s->authorize = fn;
    s->authorize_arg = arg;
}

void az_server_set_observer(az_server *s, az_observer_fn fn, void *arg)
{
    s->observe = fn;
    s->observe_arg = arg;
}

void az_server_on_shutdown(az_server *s, void (*fn)(void *), void *arg)
{
    if (s->nhooks >= MAX_HOOKS) return;
    s->hooks[s->nhooks] = fn;
    s->hook_args[s->nhooks] = arg;
    s->nhooks++;
}

/* Finishes every live streaming call: at shutdown they would otherwise hold the grace period. */
static void end_streams(az_server *s)
{
    pthread_mutex_lock(&s->mu);
    for (az_call *c = s->live; c; c = c->next) {
        if (c->reg && c->reg->m->kind != AZ_RPC_UNARY)
            az_call_finish(c, AZ_ERR_UNAVAILABLE, "server shutting down");
    }
    pthread_mutex_unlock(&s->mu);
}

void az_server_shutdown(az_server *s)
{
    if (atomic_exchange(&s->shutting_down, 1)) return;
    for (int i = 0; i < s->nhooks; i++) s->hooks[i](s->hook_args[i]);
    grpc_server_shutdown_and_notify(s->server, s->cq, &s->t_shutdown);
    end_streams(s);

    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += s->cfg.shutdown_grace_ms / 1000;
    until.tv_nsec += (long)(s->cfg.shutdown_grace_ms % 1000) * 1000000L;
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    /* The grace is for the calls this server is handling (tracked before shutting_down was set,
     * so counted in nlive). Once they are over, whatever keeps the shutdown from completing is a
     * call the gRPC core accepted but will never hand over: one that reached its pending list
     * just after shutdown_and_notify emptied it. Cancelling ends those (the client gets
     * UNAVAILABLE) instead of leaving them to the grace period or the client's deadline. */
    pthread_mutex_lock(&s->mu);
    while (!s->shutdown_done && s->started && s->nlive > 0) {
        if (pthread_cond_timedwait(&s->cv, &s->mu, &until) == ETIMEDOUT) break;
    }
    int pending = !s->shutdown_done && s->started;
    int nlive = s->nlive;
    pthread_mutex_unlock(&s->mu);
    if (pending && nlive > 0)
        az_warn("shutdown grace period of %d ms over: cancelling %d calls", s->cfg.shutdown_grace_ms,
                nlive);
    if (pending) grpc_server_cancel_all_calls(s->server);
    if (!s->started) {
        /* No threads drain the queue (and nothing was armed): wait for the tag here. */
        for (;;) {
            grpc_event ev = grpc_completion_queue_next(s->cq, gpr_inf_future(GPR_CLOCK_REALTIME),
                                                       NULL);
            if (ev.type == GRPC_OP_COMPLETE && ev.tag == &s->t_shutdown) break;
        }
    } else {
        pthread_mutex_lock(&s->mu);
        while (!s->shutdown_done) pthread_cond_wait(&s->cv, &s->mu);
        /* Calls finish their batches on the queue threads; wait for the last free. */
        while (s->nlive > 0) pthread_cond_wait(&s->cv, &s->mu);
        pthread_mutex_unlock(&s->mu);
    }
    grpc_server_destroy(s->server);
    s->server = NULL;
    grpc_completion_queue_shutdown(s->cq);
    for (int i = 0; i < s->nthreads; i++) pthread_join(s->threads[i], NULL);
    if (!s->started) {
        while (grpc_completion_queue_next(s->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL).type !=
               GRPC_QUEUE_SHUTDOWN) {
        }
    }
}

void az_server_free(az_server *s)
{
    if (!s) return;
    if (s->server) az_server_shutdown(s);
    grpc_completion_queue_destroy(s->cq);
    free(s->threads);
    free(s->regs);
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->cv);
    free(s);
    grpc_shutdown();
}
