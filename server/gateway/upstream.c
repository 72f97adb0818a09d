/* The gateway's gRPC client: calls on a shared completion queue drained by one thread, so
 * thousands of open streams cost no thread each. Unary calls share a few connections; server
 * streams get connections of their own, a bounded number per connection. */
#include "upstream.h"

#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc_security.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/file.h"
#include "core/log.h"

typedef enum { TAG_START, TAG_RECV, TAG_STATUS } tag_kind;

typedef struct tag {
    tag_kind kind;
    az_upcall *call;
} tag;

typedef struct channel {
    grpc_channel *ch;
    int streams; /* open streams on it (stream channels only) */
} channel;

struct az_upstream {
    az_upstream_config cfg;
    grpc_channel_credentials *creds;
    char *target;
    grpc_completion_queue *cq;
    pthread_t thread;
    int thread_started;

    pthread_mutex_t mu; /* guards everything below */
    pthread_cond_t cv;
    channel *unary;
    int nunary;
    unsigned next_unary;
    channel *streams;
    int nstreams, capstreams;
    int open_streams;
    int open_calls;
    int closing;
    az_upcall *live; /* every call not yet freed, for cancel-all at shutdown */
};

struct az_upcall {
    az_upstream *up;
    channel *chan; /* the stream channel it counts against; NULL for unary */
    grpc_call *call;
    int streaming;
    az_upcall_fn fn;
    void *arg;

    pthread_mutex_t mu;
    int refs;          /* caller handle + outstanding batches */
    int released;
    int recv_armed;    /* a RECV_MESSAGE batch is outstanding */
    int recv_ended;    /* a RECV_MESSAGE returned no message: nothing more will come */
    int start_done;    /* the first batch (sends, initial metadata) completed */
    int status_in;     /* RECV_STATUS_ON_CLIENT completed */
    int status_given;  /* the STATUS callback ran */
    int cancelled;     /* by the caller */
    int silent;        /* az_upcall_start failed after the call began: no callbacks */

    az_upcall *next, *prev;

    tag t_start, t_recv, t_status;
    grpc_metadata *send_md;
    size_t nsend_md;
    grpc_byte_buffer *send_bb;
    grpc_metadata_array initial_md, trailing_md;
    grpc_byte_buffer *recv_bb;
    grpc_status_code status;
    grpc_slice details;
    const char *error_string;
};

/* ------------------------------------------------------------------ channels */

/* stream: a channel for server streams, whose HTTP/2 windows stay small (no BDP probing, 64 KiB
 * read-ahead per stream). gRPC otherwise grows them to megabytes, and a client that stops reading
 * would park that much in this process instead of filling the server's per-stream queue, which is
 * what cuts a slow consumer off (with the sequence to resume from). */
static grpc_channel *open_channel(az_upstream *u, int ordinal, int stream)
{
    /* A distinct argument per channel keeps gRPC from sharing one connection among them. */
    grpc_arg args[4] = {
        {.type = GRPC_ARG_INTEGER, .key = (char *)GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, .value.integer = 1},
        {.type = GRPC_ARG_INTEGER, .key = (char *)"agentz.gateway.channel", .value.integer = ordinal},
        {.type = GRPC_ARG_INTEGER, .key = (char *)GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH,
         .value.integer = u->cfg.max_message_bytes},
        {.type = GRPC_ARG_STRING, .key = (char *)GRPC_ARG_PRIMARY_USER_AGENT_STRING,
         .value.string = (char *)"agentz-gateway/" AZ_VERSION},
    };
    grpc_arg all[8];
    memcpy(all, args, sizeof args);
    size_t n = 4;
    if (stream) {
        all[n++] = (grpc_arg){.type = GRPC_ARG_INTEGER, .key = (char *)GRPC_ARG_HTTP2_BDP_PROBE, .value.integer = 0};
        all[n++] = (grpc_arg){.type = GRPC_ARG_INTEGER, .key = (char *)GRPC_ARG_HTTP2_STREAM_LOOKAHEAD_BYTES,
                              .value.integer = 64 << 10};
    }
    if (u->cfg.server_name && *u->cfg.server_name)
        all[n++] = (grpc_arg){.type = GRPC_ARG_STRING, .key = (char *)GRPC_SSL_TARGET_NAME_OVERRIDE_ARG,
                              .value.string = (char *)u->cfg.server_name};
    grpc_channel_args chargs = {.num_args = n, .args = all};
    return grpc_channel_create(u->target, u->creds, &chargs);
}

static az_err read_pem(const char *path, const char *what, char **out, char *msg)
{
    char why[AZ_MSG_MAX];
    *out = NULL;
    if (!path) return AZ_OK;
    az_err err = az_file_read(path, out, NULL, why);
    return err ? az_fail(msg, err, "cannot read upstream tls %s: %s", what, why) : AZ_OK;
}

static grpc_channel_credentials *make_creds(const az_upstream_config *c, char *msg, az_err *err)
{
    *err = AZ_OK;
    if (!(c->tls || c->ca_file || c->cert_file || c->key_file))
        return grpc_insecure_credentials_create();
    char *ca = NULL, *cert = NULL, *key = NULL;
    grpc_channel_credentials *creds = NULL;
    if ((*err = read_pem(c->ca_file, "ca file", &ca, msg)) == AZ_OK &&
        (*err = read_pem(c->cert_file, "certificate", &cert, msg)) == AZ_OK &&
        (*err = read_pem(c->key_file, "private key", &key, msg)) == AZ_OK) {
        grpc_ssl_pem_key_cert_pair pair = {.private_key = key, .cert_chain = cert};
        creds = grpc_ssl_credentials_create(ca, cert ? &pair : NULL, NULL, NULL);
        if (!creds) *err = az_fail(msg, AZ_ERR_INVALID, "cannot create upstream tls credentials");
    }
    free(ca);
    free(cert);
    if (key) {
        explicit_bzero(key, strlen(key));
        free(key);
    }
    return creds;
}

/* ------------------------------------------------------------------ calls */

static void call_free(az_upcall *c)
{
    az_upstream *u = c->up;
    pthread_mutex_lock(&u->mu);
    if (c->prev) c->prev->next = c->next;
    else if (u->live == c) u->live = c->next;
    if (c->next) c->next->prev = c->prev;
    if (c->chan) {
        c->chan->streams--;
        u->open_streams--;
    }
    u->open_calls--;
    pthread_cond_broadcast(&u->cv);
    pthread_mutex_unlock(&u->mu);

    if (c->call) grpc_call_unref(c->call);
    for (size_t i = 0; i < c->nsend_md; i++) {
        grpc_slice_unref(c->send_md[i].key);
        grpc_slice_unref(c->send_md[i].value);
    }
    free(c->send_md);
    if (c->send_bb) grpc_byte_buffer_destroy(c->send_bb);
    if (c->recv_bb) grpc_byte_buffer_destroy(c->recv_bb);
    grpc_metadata_array_destroy(&c->initial_md);
    grpc_metadata_array_destroy(&c->trailing_md);
    grpc_slice_unref(c->details);
    gpr_free((void *)c->error_string);
    pthread_mutex_destroy(&c->mu);
    free(c);
}

/* Call with c->mu held; returns 1 when the last reference went (free after unlocking). */
static int unref_locked(az_upcall *c) { return --c->refs == 0; }

static void unref(az_upcall *c)
{
    pthread_mutex_lock(&c->mu);
    int last = unref_locked(c);
    pthread_mutex_unlock(&c->mu);
    if (last) call_free(c);
}

static void deliver(az_upcall *c, const az_upev *ev)
{
    pthread_mutex_lock(&c->mu);
    int silent = c->silent;
    pthread_mutex_unlock(&c->mu);
    if (!silent) c->fn(c->arg, ev);
}

/* The STATUS event, once: only when no message can still be delivered (the last read found the
 * end) or the caller gave up on the messages. Call with c->mu held; returns 1 when the caller
 * must deliver it now (after unlocking). */
static int status_due_locked(az_upcall *c)
{
    if (c->status_given || !c->status_in || !c->start_done || c->recv_armed) return 0;
    if (!c->recv_ended && !c->cancelled) return 0;
    c->status_given = 1;
    return 1;
}

static void deliver_status(az_upcall *c)
{
    char details[AZ_MSG_MAX];
    size_t n = GRPC_SLICE_LENGTH(c->details);
    if (n) {
        if (n >= sizeof details) n = sizeof details - 1;
        memcpy(details, GRPC_SLICE_START_PTR(c->details), n);
        details[n] = '\0';
    } else {
        snprintf(details, sizeof details, "%s",
                 c->status == GRPC_STATUS_OK ? "" : c->error_string ? c->error_string : "");
    }
    az_upev ev = {.kind = AZ_UPEV_STATUS, .md = &c->trailing_md, .status = (int)c->status,
                  .details = details};
    deliver(c, &ev);
}

/* Starts a RECV_MESSAGE batch; call with c->mu held. */
static void arm_recv_locked(az_upcall *c)
{
    if (c->recv_armed || c->recv_ended || c->status_given) return;
    grpc_op op;
    memset(&op, 0, sizeof op);
    op.op = GRPC_OP_RECV_MESSAGE;
    op.data.recv_message.recv_message = &c->recv_bb;
    c->refs++;
    c->recv_armed = 1;
    if (grpc_call_start_batch(c->call, &op, 1, &c->t_recv, NULL) != GRPC_CALL_OK) {
        c->refs--;
        c->recv_armed = 0;
        c->recv_ended = 1;
        grpc_call_cancel(c->call, NULL);
    }
}

/* Marks c cancelled; returns 1 the first time. Call with c->mu held. A stream the caller was
 * not reading (at its window) may have had its status in already, held back for messages no
 * one will now read: a read on it completes at once on the completion-queue thread, which
 * delivers STATUS there (never on the caller's thread, which may hold its own locks). */
static int cancel_locked(az_upcall *c)
{
    int first = !c->cancelled;
    c->cancelled = 1;
    if (c->start_done) arm_recv_locked(c);
    return first;
}

/* Hands a received byte buffer to the callback as one contiguous message. */
static void deliver_message(az_upcall *c, grpc_byte_buffer *bb)
{
    grpc_byte_buffer_reader r;
    if (!grpc_byte_buffer_reader_init(&r, bb)) {
        grpc_call_cancel_with_status(c->call, GRPC_STATUS_INTERNAL, "cannot read a response", NULL);
        return;
    }
    grpc_slice s = grpc_byte_buffer_reader_readall(&r);
    grpc_byte_buffer_reader_destroy(&r);
    az_upev ev = {.kind = AZ_UPEV_MESSAGE, .data = GRPC_SLICE_START_PTR(s),
                  .len = GRPC_SLICE_LENGTH(s)};
    deliver(c, &ev);
    grpc_slice_unref(s);
}

static void on_start(az_upcall *c, int ok)
{
    /* For unary calls this batch also holds the response and the status. */
    if (!c->streaming) {
        az_upev hev = {.kind = AZ_UPEV_HEADERS, .md = &c->initial_md};
        deliver(c, &hev);
        if (c->recv_bb && c->status == GRPC_STATUS_OK) deliver_message(c, c->recv_bb);
        pthread_mutex_lock(&c->mu);
        c->start_done = c->status_in = c->recv_ended = 1;
        int due = status_due_locked(c);
        pthread_mutex_unlock(&c->mu);
        if (due) deliver_status(c);
        unref(c);
        return;
    }
    if (ok) {
        az_upev hev = {.kind = AZ_UPEV_HEADERS, .md = &c->initial_md};
        deliver(c, &hev);
    }
    pthread_mutex_lock(&c->mu);
    c->start_done = 1;
    if (!ok) c->recv_ended = 1; /* the request never left: no message can come */
    /* The first read starts only now, so no MESSAGE can overtake HEADERS. */
    else if (!c->cancelled) arm_recv_locked(c);
    int due = status_due_locked(c);
    pthread_mutex_unlock(&c->mu);
    if (due) deliver_status(c);
    unref(c);
}

static void on_recv(az_upcall *c, int ok)
{
    grpc_byte_buffer *bb = c->recv_bb;
    c->recv_bb = NULL;
    pthread_mutex_lock(&c->mu);
    c->recv_armed = 0;
    if (!bb || !ok) c->recv_ended = 1;
    int deliver_it = bb && ok && !c->cancelled;
    pthread_mutex_unlock(&c->mu);
    if (deliver_it) deliver_message(c, bb);
    if (bb) grpc_byte_buffer_destroy(bb);
    pthread_mutex_lock(&c->mu);
    int due = status_due_locked(c);
    pthread_mutex_unlock(&c->mu);
    if (due) deliver_status(c);
    unref(c);
}

static void on_status(az_upcall *c)
{
    pthread_mutex_lock(&c->mu);
    c->status_in = 1;
    int due = status_due_locked(c);
    pthread_mutex_unlock(&c->mu);
    if (due) deliver_status(c);
    unref(c);
}

static void *cq_main(void *arg)
{
    az_upstream *u = arg;
    for (;;) {
        grpc_event ev = grpc_completion_queue_next(u->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
        if (ev.type == GRPC_QUEUE_SHUTDOWN) break;
        if (ev.type != GRPC_OP_COMPLETE) continue;
        tag *t = ev.tag;
        switch (t->kind) {
        case TAG_START: on_start(t->call, ev.success); break;
        case TAG_RECV: on_recv(t->call, ev.success); break;
        case TAG_STATUS: on_status(t->call); break;
        }
    }
    return NULL;
}

/* ------------------------------------------------------------------ public */

az_err az_upstream_new(const az_upstream_config *cfg, az_upstream **out, char *msg)
{
    *out = NULL;
    if (!cfg->target || !*cfg->target) return az_fail(msg, AZ_ERR_INVALID, "upstream target is empty");
    if (!cfg->cert_file != !cfg->key_file)
        return az_fail(msg, AZ_ERR_INVALID, "the upstream client certificate and key must be given together");
    az_upstream *u = calloc(1, sizeof *u);
    if (!u) return az_fail(msg, AZ_ERR_NOMEM, "out of memory");
    u->cfg = *cfg;
    if (u->cfg.max_message_bytes <= 0) u->cfg.max_message_bytes = 4 << 20;
    if (u->cfg.unary_channels <= 0) u->cfg.unary_channels = 2;
    if (u->cfg.streams_per_channel <= 0) u->cfg.streams_per_channel = 100;
    if (u->cfg.max_streams <= 0) u->cfg.max_streams = 100000;
    pthread_mutex_init(&u->mu, NULL);
    pthread_cond_init(&u->cv, NULL);
    grpc_init();
    az_err err = AZ_OK;
    if (!(u->target = strdup(cfg->target))) {
        err = az_fail(msg, AZ_ERR_NOMEM, "out of memory");
        goto fail;
    }
    u->creds = make_creds(cfg, msg, &err);
    if (!u->creds) {
        if (!err) err = az_fail(msg, AZ_ERR_INTERNAL, "cannot create channel credentials");
        goto fail;
    }
    u->cfg.target = u->cfg.ca_file = u->cfg.cert_file = u->cfg.key_file = NULL; /* not kept */
    if (cfg->server_name && !(u->cfg.server_name = strdup(cfg->server_name))) {
        err = az_fail(msg, AZ_ERR_NOMEM, "out of memory");
        goto fail;
    }
    u->unary = calloc((size_t)u->cfg.unary_channels, sizeof *u->unary);
    if (!u->unary) {
        err = az_fail(msg, AZ_ERR_NOMEM, "out of memory");
        goto fail;
    }
    for (int i = 0; i < u->cfg.unary_channels; i++) {
        if (!(u->unary[i].ch = open_channel(u, i, 0))) {
            err = az_fail(msg, AZ_ERR_INTERNAL, "cannot create a channel to %s", u->target);
            goto fail;
        }
        u->nunary++;
    }
    u->cq = grpc_completion_queue_create_for_next(NULL);
    if (pthread_create(&u->thread, NULL, cq_main, u) != 0) {
        err = az_fail(msg, AZ_ERR_INTERNAL, "cannot start the upstream thread");
        goto fail;
    }
    u->thread_started = 1;
    *out = u;
    return AZ_OK;
fail:
    az_upstream_free(u);
    return err;
}

void az_upstream_free(az_upstream *u)
{
    if (!u) return;
    pthread_mutex_lock(&u->mu);
    u->closing = 1;
    for (az_upcall *c = u->live; c; c = c->next) {
        pthread_mutex_lock(&c->mu);
        cancel_locked(c);
        pthread_mutex_unlock(&c->mu);
        grpc_call_cancel(c->call, NULL);
    }
    /* Every call's STATUS follows its cancellation; wait until the callers released them. */
    while (u->open_calls > 0) pthread_cond_wait(&u->cv, &u->mu);
    pthread_mutex_unlock(&u->mu);
    for (int i = 0; i < u->nunary; i++) grpc_channel_destroy(u->unary[i].ch);
    for (int i = 0; i < u->nstreams; i++) grpc_channel_destroy(u->streams[i].ch);
    if (u->cq) {
        grpc_completion_queue_shutdown(u->cq);
        if (u->thread_started) pthread_join(u->thread, NULL);
        grpc_completion_queue_destroy(u->cq);
    }
    if (u->creds) grpc_channel_credentials_release(u->creds);
    free(u->unary);
    free(u->streams);
    free(u->target);
    free((char *)u->cfg.server_name);
    pthread_mutex_destroy(&u->mu);
    pthread_cond_destroy(&u->cv);
    free(u);
    grpc_shutdown();
}

int az_upstream_open_calls(az_upstream *u)
{
    pthread_mutex_lock(&u->mu);
    int n = u->open_calls;
    pthread_mutex_unlock(&u->mu);
    return n;
}

/* Picks the channel for a new call and registers it; call with u->mu held. */
static az_err place_locked(az_upstream *u, az_upcall *c, grpc_channel **ch, char *msg)
{
    if (u->closing) return az_fail(msg, AZ_ERR_UNAVAILABLE, "the gateway is shutting down");
    if (!c->streaming) {
        *ch = u->unary[u->next_unary++ % (unsigned)u->nunary].ch;
    } else {
        if (u->open_streams >= u->cfg.max_streams)
            return az_fail(msg, AZ_ERR_EXHAUSTED, "too many open streams (%d)", u->cfg.max_streams);
        channel *pick = NULL;
        for (int i = 0; i < u->nstreams && !pick; i++)
            if (u->streams[i].streams < u->cfg.streams_per_channel) pick = &u->streams[i];
        if (!pick) {
            if (u->nstreams == u->capstreams) {
                int cap = u->capstreams ? u->capstreams * 2 : 8;
                channel *grown = realloc(u->streams, (size_t)cap * sizeof *grown);
                if (!grown) return az_fail(msg, AZ_ERR_NOMEM, "out of memory");
                /* Calls point at their channel: move them with the array. */
                for (az_upcall *k = u->live; k; k = k->next)
                    if (k->chan) k->chan = grown + (k->chan - u->streams);
                u->streams = grown;
                u->capstreams = cap;
            }
            grpc_channel *nc = open_channel(u, u->cfg.unary_channels + u->nstreams, 1);
            if (!nc) return az_fail(msg, AZ_ERR_INTERNAL, "cannot create a channel to %s", u->target);
            u->streams[u->nstreams] = (channel){.ch = nc, .streams = 0};
            pick = &u->streams[u->nstreams++];
        }
        pick->streams++;
        u->open_streams++;
        c->chan = pick;
        *ch = pick->ch;
    }
    u->open_calls++;
    c->next = u->live;
    if (u->live) u->live->prev = c;
    u->live = c;
    return AZ_OK;
}

static az_err copy_md(az_upcall *c, const az_upcall_opts *o, char *msg)
{
    if (!o->nmd) return AZ_OK;
    c->send_md = calloc(o->nmd, sizeof *c->send_md);
    if (!c->send_md) return az_fail(msg, AZ_ERR_NOMEM, "out of memory");
    for (size_t i = 0; i < o->nmd; i++) {
        grpc_slice k = grpc_slice_from_copied_string(o->md[i].key);
        grpc_slice v = grpc_slice_from_copied_buffer(o->md[i].value, o->md[i].value_len);
        c->send_md[i].key = k;
        c->send_md[i].value = v;
        c->nsend_md++;
        int bin = strlen(o->md[i].key) > 4 &&
                  strcmp(o->md[i].key + strlen(o->md[i].key) - 4, "-bin") == 0;
        if (!grpc_header_key_is_legal(k) || (!bin && !grpc_header_nonbin_value_is_legal(v)))
            return az_fail(msg, AZ_ERR_INVALID, "header %s: not a legal gRPC metadata key or value",
                           o->md[i].key);
    }
    return AZ_OK;
}

az_err az_upcall_start(az_upstream *u, const az_upcall_opts *o, az_upcall **out, char *msg)
{
    *out = NULL;
    az_upcall *c = calloc(1, sizeof *c);
    if (!c) return az_fail(msg, AZ_ERR_NOMEM, "out of memory");
    c->up = u;
    c->streaming = o->streaming;
    c->fn = o->fn;
    c->arg = o->arg;
    c->t_start = (tag){TAG_START, c};
    c->t_recv = (tag){TAG_RECV, c};
    c->t_status = (tag){TAG_STATUS, c};
    pthread_mutex_init(&c->mu, NULL);
    grpc_metadata_array_init(&c->initial_md);
    grpc_metadata_array_init(&c->trailing_md);
    c->details = grpc_empty_slice();

    az_err err = copy_md(c, o, msg);
    if (err) goto fail_unplaced;
    grpc_slice body = grpc_slice_from_copied_buffer((const char *)o->request, o->request_len);
    c->send_bb = grpc_raw_byte_buffer_create(&body, 1);
    grpc_slice_unref(body);

    grpc_channel *ch = NULL;
    pthread_mutex_lock(&u->mu);
    err = place_locked(u, c, &ch, msg);
    pthread_mutex_unlock(&u->mu);
    if (err) goto fail_unplaced;

    gpr_timespec deadline =
        o->timeout_ms > 0 ? gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC),
                                         gpr_time_from_millis(o->timeout_ms, GPR_TIMESPAN))
                          : gpr_inf_future(GPR_CLOCK_MONOTONIC);
    grpc_slice method = grpc_slice_from_copied_string(o->method);
    c->call = grpc_channel_create_call(ch, NULL, GRPC_PROPAGATE_DEFAULTS, u->cq, method, NULL,
                                       deadline, NULL);
    grpc_slice_unref(method);
    if (!c->call) {
        call_free(c);
        return az_fail(msg, AZ_ERR_INTERNAL, "cannot create a call to %s", o->method);
    }

    grpc_op ops[6];
    size_t n = 0;
    memset(ops, 0, sizeof ops);
    ops[n].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[n].data.send_initial_metadata.count = c->nsend_md;
    ops[n++].data.send_initial_metadata.metadata = c->send_md;
    ops[n].op = GRPC_OP_SEND_MESSAGE;
    ops[n++].data.send_message.send_message = c->send_bb;
    ops[n++].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    ops[n].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[n++].data.recv_initial_metadata.recv_initial_metadata = &c->initial_md;
    grpc_op st;
    memset(&st, 0, sizeof st);
    st.op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    st.data.recv_status_on_client.trailing_metadata = &c->trailing_md;
    st.data.recv_status_on_client.status = &c->status;
    st.data.recv_status_on_client.status_details = &c->details;
    st.data.recv_status_on_client.error_string = &c->error_string;
    if (!c->streaming) {
        ops[n].op = GRPC_OP_RECV_MESSAGE;
        ops[n++].data.recv_message.recv_message = &c->recv_bb;
        ops[n++] = st;
    }

    /* The caller's handle, the start batch, and (streaming) the status and first read. */
    pthread_mutex_lock(&c->mu);
    c->refs = 2;
    grpc_call_error ce = grpc_call_start_batch(c->call, ops, n, &c->t_start, NULL);
    if (ce == GRPC_CALL_OK && c->streaming) {
        c->refs++;
        ce = grpc_call_start_batch(c->call, &st, 1, &c->t_status, NULL);
        if (ce != GRPC_CALL_OK) {
            /* The start batch is out: cancel it and let its completion clean up, unheard. */
            c->refs--;
            c->silent = 1;
            grpc_call_cancel(c->call, NULL);
        }
    }
    if (ce != GRPC_CALL_OK && c->refs == 2 && !c->streaming) {
        pthread_mutex_unlock(&c->mu);
        call_free(c);
        return az_fail(msg, AZ_ERR_INTERNAL, "cannot start a call to %s (call error %d)",
                       o->method, (int)ce);
    }
    pthread_mutex_unlock(&c->mu);
    if (ce != GRPC_CALL_OK && c->streaming) {
        /* No status batch: the call can never report. Give up on it synchronously. */
        az_upcall_release(c);
        return az_fail(msg, AZ_ERR_INTERNAL, "cannot start a call to %s (call error %d)",
                       o->method, (int)ce);
    }
    *out = c;
    return AZ_OK;

fail_unplaced:
    /* Not registered with the upstream yet: free without touching its counters. */
    for (size_t i = 0; i < c->nsend_md; i++) {
        grpc_slice_unref(c->send_md[i].key);
        grpc_slice_unref(c->send_md[i].value);
    }
    free(c->send_md);
    if (c->send_bb) grpc_byte_buffer_destroy(c->send_bb);
    grpc_metadata_array_destroy(&c->initial_md);
    grpc_metadata_array_destroy(&c->trailing_md);
    grpc_slice_unref(c->details);
    pthread_mutex_destroy(&c->mu);
    free(c);
    return err;
}

void az_upcall_read(az_upcall *c)
{
    if (!c || !c->streaming) return;
    pthread_mutex_lock(&c->mu);
    if (!c->cancelled) arm_recv_locked(c); /* no-op while a read is outstanding */
    pthread_mutex_unlock(&c->mu);
}

void az_upcall_cancel(az_upcall *c)
{
    if (!c) return;
    pthread_mutex_lock(&c->mu);
    int first = cancel_locked(c);
    pthread_mutex_unlock(&c->mu);
    if (first) grpc_call_cancel(c->call, NULL);
}

void az_upcall_release(az_upcall *c)
{
    if (!c) return;
    pthread_mutex_lock(&c->mu);
    int last = 0;
    if (!c->released) {
        c->released = 1;
        last = unref_locked(c);
    }
    pthread_mutex_unlock(&c->mu);
    if (last) call_free(c);
}
