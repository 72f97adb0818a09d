/* gRPC C core client calls for protobuf-c messages. Every call gets its own pluck completion
 * queue, so calls are independent and the caller's thread does all the waiting. */
#include "conn.h"

#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/file.h"

struct az_conn {
    grpc_channel *channel;
    char *target;
    char *authorization; /* "Bearer <token>", or NULL; wiped before it is freed */
};

/* Everything one call owns. Tags are addresses of the tag_* members, one per batch kind, so
 * a pluck never confuses two batches. */
typedef struct call {
    grpc_call *call;
    grpc_completion_queue *cq;
    grpc_metadata_array initial_md;
    grpc_metadata_array trailing_md;
    grpc_status_code status;
    grpc_slice details;
    const char *error_string;
    char tag_send, tag_recv, tag_status;
} call;

struct az_conn_stream {
    call c;
    const ProtobufCMessageDescriptor *out_desc;
    int got_initial_md;
    int status_pending; /* the RECV_STATUS_ON_CLIENT batch has not been plucked */
    int finished;       /* final_* hold the call's outcome */
    az_err final_err;
    int final_status;
    char final_msg[AZ_MSG_MAX];
};



const char *az_conn_status_name(int grpc_status) { return az_grpc_status_name(grpc_status); }

az_err az_conn_err_from_status(int grpc_status) { return az_err_from_grpc_status(grpc_status); }

static pthread_once_t grpc_once = PTHREAD_ONCE_INIT;

/* gRPC stays initialized for the life of the process: integration tests open many
 * connections, and re-initializing gRPC between them costs threads and time. */
static void init_grpc(void) { grpc_init(); }

const char *az_conn_default_target(void)
{
    const char *env = getenv("AGENTZ_SERVER");
    return env && *env ? env : AZ_CONN_DEFAULT_TARGET;
}

/* Reports a failure that happened in this process as a gRPC status. */
static az_err local_fail(int code, int *grpc_status, char *msg, const char *text)
{
    if (grpc_status) *grpc_status = code;
    return az_fail(msg, az_conn_err_from_status(code), "%s", text);
}

/* Reads an optional PEM file; path NULL leaves *out NULL. */
static az_err read_pem(const char *path, const char *what, char **out, char *msg)
{
    char why[AZ_MSG_MAX];
    *out = NULL;
    if (!path) return AZ_OK;
    az_err err = az_file_read(path, out, NULL, why);
    return err ? az_fail(msg, err, "cannot read tls %s: %s", what, why) : AZ_OK;
}

static grpc_channel_credentials *tls_credentials(const az_conn_opts *o, char *msg, az_err *err)
{
    char *ca = NULL, *cert = NULL, *key = NULL;
    grpc_channel_credentials *creds = NULL;
    *err = AZ_OK;
    if ((*err = read_pem(o->ca_file, "ca file", &ca, msg)) != AZ_OK ||
        (*err = read_pem(o->cert_file, "certificate", &cert, msg)) != AZ_OK ||
        (*err = read_pem(o->key_file, "private key", &key, msg)) != AZ_OK)
        goto done;
    grpc_ssl_pem_key_cert_pair pair = {.private_key = key, .cert_chain = cert};
    /* gRPC copies the PEM strings, so ours can go right away. */
    creds = grpc_ssl_credentials_create(ca, cert ? &pair : NULL, NULL, NULL);
    if (!creds) *err = az_fail(msg, AZ_ERR_INVALID, "cannot create tls credentials");
done:
    free(ca);
    free(cert);
    free(key);
    return creds;
}

/* Keeps "Bearer <token>" for every call. A token gRPC would refuse as a header value (control
 * characters, a stray newline from a key file) is rejected here, once, instead of failing every
 * call; the message never includes the token itself. */
static az_err set_token(az_conn *c, const char *token, char *msg)
{
    if (!token || !*token) return AZ_OK;
    if (asprintf(&c->authorization, "Bearer %s", token) < 0) {
        c->authorization = NULL;
        return az_fail(msg, AZ_ERR_NOMEM, "cannot keep the token: out of memory");
    }
    grpc_slice v = grpc_slice_from_static_string(c->authorization);
    if (!grpc_header_nonbin_value_is_legal(v))
        return az_fail(msg, AZ_ERR_INVALID,
                       "the token contains characters not allowed in a header value");
    return AZ_OK;
}

az_err az_conn_open(const az_conn_opts *opts, az_conn **out, char *msg)
{
    static const az_conn_opts none = {0};
    const az_conn_opts *o = opts ? opts : &none;
    *out = NULL;
    if (!o->cert_file != !o->key_file)
        return az_fail(msg, AZ_ERR_INVALID, "--cert and --key must be given together");
    const char *target = o->target && *o->target ? o->target : az_conn_default_target();

    pthread_once(&grpc_once, init_grpc);
    az_conn *c = calloc(1, sizeof *c);
    if (!c || !(c->target = strdup(target))) {
        free(c);
        return az_fail(msg, AZ_ERR_NOMEM, "cannot connect to %s: out of memory", target);
    }

    az_err err = AZ_OK;
    int tls = o->tls || o->ca_file || o->cert_file || o->key_file;
    grpc_channel_credentials *creds =
        tls ? tls_credentials(o, msg, &err) : grpc_insecure_credentials_create();
    if (!creds) {
        free(c->target);
        free(c);
        return err ? err : az_fail(msg, AZ_ERR_INTERNAL, "cannot create channel credentials");
    }

    grpc_arg args[2];
    size_t nargs = 0;
    args[nargs++] = (grpc_arg){.type = GRPC_ARG_STRING,
                               .key = (char *)GRPC_ARG_PRIMARY_USER_AGENT_STRING,
                               .value.string = (char *)"agentz/" AZ_VERSION};
    if (tls && o->server_name && *o->server_name)
        args[nargs++] = (grpc_arg){.type = GRPC_ARG_STRING,
                                   .key = (char *)GRPC_SSL_TARGET_NAME_OVERRIDE_ARG,
                                   .value.string = (char *)o->server_name};
    grpc_channel_args chargs = {.num_args = nargs, .args = args};
    c->channel = grpc_channel_create(c->target, creds, &chargs);
    grpc_channel_credentials_release(creds);
    if (!c->channel) {
        az_conn_free(c);
        return az_fail(msg, AZ_ERR_INTERNAL, "cannot create a channel to %s", target);
    }
    if ((err = set_token(c, o->token, msg)) != AZ_OK) {
        az_conn_free(c);
        return err;
    }
    *out = c;
    return AZ_OK;
}

void az_conn_free(az_conn *c)
{
    if (!c) return;
    if (c->channel) grpc_channel_destroy(c->channel);
    free(c->target);
    if (c->authorization) {
        /* The token is a credential: do not leave it in freed heap memory. */
        explicit_bzero(c->authorization, strlen(c->authorization));
        free(c->authorization);
    }
    free(c);
}

const char *az_conn_target(const az_conn *c) { return c->target; }

/* ---- one call ---- */

static az_err call_start(az_conn *conn, call *k, const char *method, int timeout_ms,
                         int *grpc_status, char *msg)
{
    memset(k, 0, sizeof *k);
    grpc_metadata_array_init(&k->initial_md);
    grpc_metadata_array_init(&k->trailing_md);
    k->details = grpc_empty_slice();
    k->cq = grpc_completion_queue_create_for_pluck(NULL);
    if (!k->cq) return local_fail(GRPC_STATUS_RESOURCE_EXHAUSTED, grpc_status, msg,
                                  "cannot create a completion queue");
    gpr_timespec deadline =
        timeout_ms > 0 ? gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC),
                                      gpr_time_from_millis(timeout_ms, GPR_TIMESPAN))
                       : gpr_inf_future(GPR_CLOCK_MONOTONIC);
    /* The call takes its own reference to the method slice. */
    grpc_slice m = grpc_slice_from_copied_string(method);
    k->call = grpc_channel_create_call(conn->channel, NULL, GRPC_PROPAGATE_DEFAULTS, k->cq, m,
                                       NULL, deadline, NULL);
    grpc_slice_unref(m);
    if (!k->call) return local_fail(GRPC_STATUS_INTERNAL, grpc_status, msg,
                                    "cannot create a call");
    return AZ_OK;
}

/* Releases everything; every batch must have been plucked. */
static void call_free(call *k)
{
    if (k->call) grpc_call_unref(k->call);
    grpc_metadata_array_destroy(&k->initial_md);
    grpc_metadata_array_destroy(&k->trailing_md);
    grpc_slice_unref(k->details);
    gpr_free((void *)k->error_string);
    if (k->cq) {
        grpc_completion_queue_shutdown(k->cq);
        grpc_completion_queue_destroy(k->cq);
    }
    memset(k, 0, sizeof *k);
}

static int pluck(call *k, void *tag)
{
    grpc_event ev = grpc_completion_queue_pluck(k->cq, tag, gpr_inf_future(GPR_CLOCK_REALTIME),
                                                NULL);
    return ev.type == GRPC_OP_COMPLETE && ev.success;
}

/* Per-call metadata keys that carry credentials: when a call brings its own, the connection's
 * token is not added, so the server never sees two credentials that disagree. */
static const char *const credential_keys[] = {"authorization", "x-api-key"};

static int has_credential(const az_md *md)
{
    for (size_t i = 0; md && md[i].key; i++)
        for (size_t k = 0; k < sizeof credential_keys / sizeof credential_keys[0]; k++)
            if (strcasecmp(md[i].key, credential_keys[k]) == 0) return 1;
    return 0;
}

/* Builds the metadata array for md plus the connection's authorization; the slices borrow the
 * strings of md and conn, which outlive the batch because every caller waits for it. */
static az_err metadata(const az_conn *conn, const az_md *md, grpc_metadata **out, size_t *n,
                       int *grpc_status, char *msg)
{
    *out = NULL;
    *n = 0;
    size_t count = 0;
    while (md && md[count].key) count++;
    int add_auth = conn->authorization && !has_credential(md);
    if (!count && !add_auth) return AZ_OK;
    grpc_metadata *arr = calloc(count + 1, sizeof *arr);
    if (!arr) return local_fail(GRPC_STATUS_RESOURCE_EXHAUSTED, grpc_status, msg,
                                "out of memory");
    if (add_auth) {
        /* Checked legal by set_token. */
        arr[count].key = grpc_slice_from_static_string("authorization");
        arr[count].value = grpc_slice_from_static_string(conn->authorization);
    }
    for (size_t i = 0; i < count; i++) {
        arr[i].key = grpc_slice_from_static_string(md[i].key);
        arr[i].value = grpc_slice_from_static_string(md[i].value ? md[i].value : "");
        if (!grpc_header_key_is_legal(arr[i].key) ||
            !grpc_header_nonbin_value_is_legal(arr[i].value)) {
            free(arr);
            if (grpc_status) *grpc_status = GRPC_STATUS_INVALID_ARGUMENT;
            return az_fail(msg, AZ_ERR_INVALID, "metadata %s: illegal key or value",
                           md[i].key);
        }
    }
    *out = arr;
    *n = count + (size_t)add_auth;
    return AZ_OK;
}

static az_err pack(const ProtobufCMessage *req, grpc_byte_buffer **out, int *grpc_status,
                   char *msg)
{
    size_t size = protobuf_c_message_get_packed_size(req);
    uint8_t *buf = malloc(size ? size : 1);
    if (!buf) return local_fail(GRPC_STATUS_RESOURCE_EXHAUSTED, grpc_status, msg,
                                "out of memory");
    protobuf_c_message_pack(req, buf);
    grpc_slice s = grpc_slice_from_copied_buffer((const char *)buf, size);
    free(buf);
    *out = grpc_raw_byte_buffer_create(&s, 1);
    grpc_slice_unref(s);
    return AZ_OK;
}

static az_err unpack(grpc_byte_buffer *bb, const ProtobufCMessageDescriptor *desc,
                     ProtobufCMessage **out, int *grpc_status, char *msg)
{
    grpc_byte_buffer_reader r;
    if (!grpc_byte_buffer_reader_init(&r, bb))
        return local_fail(GRPC_STATUS_INTERNAL, grpc_status, msg, "cannot read the response");
    grpc_slice s = grpc_byte_buffer_reader_readall(&r);
    grpc_byte_buffer_reader_destroy(&r);
    *out = protobuf_c_message_unpack(desc, NULL, GRPC_SLICE_LENGTH(s), GRPC_SLICE_START_PTR(s));
    grpc_slice_unref(s);
    if (!*out) {
        if (grpc_status) *grpc_status = GRPC_STATUS_INTERNAL;
        return az_fail(msg, AZ_ERR_INTERNAL, "cannot parse the response as %s", desc->name);
    }
    return AZ_OK;
}

/* Turns the received status into the return value, copying the details into msg. */
static az_err status_result(const call *k, int *grpc_status, char *msg)
{
    if (grpc_status) *grpc_status = (int)k->status;
    if (k->status == GRPC_STATUS_OK) return AZ_OK;
    size_t len = GRPC_SLICE_LENGTH(k->details);
    if (len)
        az_fail(msg, AZ_ERR_INTERNAL, "%.*s", (int)len, (const char *)GRPC_SLICE_START_PTR(k->details));
    else
        az_fail(msg, AZ_ERR_INTERNAL, "%s", k->error_string ? k->error_string : "no details");
    return az_conn_err_from_status((int)k->status);
}

/* Fills the three client-side send ops; returns how many. */
static size_t send_ops(grpc_op *ops, grpc_metadata *md, size_t nmd, grpc_byte_buffer *bb)
{
    ops[0] = (grpc_op){.op = GRPC_OP_SEND_INITIAL_METADATA};
    ops[0].data.send_initial_metadata.count = nmd;
    ops[0].data.send_initial_metadata.metadata = md;
    ops[1] = (grpc_op){.op = GRPC_OP_SEND_MESSAGE};
    ops[1].data.send_message.send_message = bb;
    ops[2] = (grpc_op){.op = GRPC_OP_SEND_CLOSE_FROM_CLIENT};
    return 3;
}

static void status_op(grpc_op *op, call *k)
{
    *op = (grpc_op){.op = GRPC_OP_RECV_STATUS_ON_CLIENT};
    op->data.recv_status_on_client.trailing_metadata = &k->trailing_md;
    op->data.recv_status_on_client.status = &k->status;
    op->data.recv_status_on_client.status_details = &k->details;
    op->data.recv_status_on_client.error_string = &k->error_string;
}

az_err az_conn_unary(az_conn *conn, const char *method, const ProtobufCMessage *req,
                     const ProtobufCMessageDescriptor *out_desc, int timeout_ms,
                     const az_md *md, ProtobufCMessage **resp, int *grpc_status, char *msg)
{
    if (resp) *resp = NULL;
    call k;
    grpc_metadata *gmd = NULL;
    size_t nmd = 0;
    grpc_byte_buffer *send = NULL, *recv = NULL;
    az_err err = call_start(conn, &k, method, timeout_ms, grpc_status, msg);
    if (err) goto done;
    if ((err = metadata(conn, md, &gmd, &nmd, grpc_status, msg)) != AZ_OK) goto done;
    if ((err = pack(req, &send, grpc_status, msg)) != AZ_OK) goto done;

    grpc_op ops[6];
    size_t n = send_ops(ops, gmd, nmd, send);
    ops[n] = (grpc_op){.op = GRPC_OP_RECV_INITIAL_METADATA};
    ops[n++].data.recv_initial_metadata.recv_initial_metadata = &k.initial_md;
    ops[n] = (grpc_op){.op = GRPC_OP_RECV_MESSAGE};
    ops[n++].data.recv_message.recv_message = &recv;
    status_op(&ops[n++], &k);
    grpc_call_error ce = grpc_call_start_batch(k.call, ops, n, &k.tag_send, NULL);
    if (ce != GRPC_CALL_OK) {
        err = local_fail(GRPC_STATUS_INTERNAL, grpc_status, msg, "cannot start the call");
        goto done;
    }
    /* With RECV_STATUS_ON_CLIENT in the batch, the outcome is in the status, not in success. */
    pluck(&k, &k.tag_send);
    if ((err = status_result(&k, grpc_status, msg)) != AZ_OK) goto done;
    if (!recv) {
        err = local_fail(GRPC_STATUS_INTERNAL, grpc_status, msg,
                         "the server returned OK without a response message");
        goto done;
    }
    ProtobufCMessage *m = NULL;
    if ((err = unpack(recv, out_desc, &m, grpc_status, msg)) != AZ_OK) goto done;
    if (resp)
        *resp = m;
    else
        protobuf_c_message_free_unpacked(m, NULL);
done:
    free(gmd);
    if (send) grpc_byte_buffer_destroy(send);
    if (recv) grpc_byte_buffer_destroy(recv);
    call_free(&k);
    return err;
}

/* ---- server streaming ---- */

/* Waits for the final status (the call has ended or been cancelled) and records it. */
static void stream_finish(az_conn_stream *s)
{
    if (s->status_pending) {
        pluck(&s->c, &s->c.tag_status);
        s->status_pending = 0;
    }
    if (s->finished) return;
    s->finished = 1;
    s->final_err = status_result(&s->c, &s->final_status, s->final_msg);
}

static az_err stream_result(const az_conn_stream *s, int *grpc_status, char *msg)
{
    if (grpc_status) *grpc_status = s->final_status;
    if (s->final_err && msg) snprintf(msg, AZ_MSG_MAX, "%s", s->final_msg);
    return s->final_err;
}

az_err az_conn_stream_open(az_conn *conn, const char *method, const ProtobufCMessage *req,
                           const ProtobufCMessageDescriptor *out_desc, int timeout_ms,
                           const az_md *md, az_conn_stream **out, int *grpc_status, char *msg)
{
    *out = NULL;
    az_conn_stream *s = calloc(1, sizeof *s);
    if (!s) return local_fail(GRPC_STATUS_RESOURCE_EXHAUSTED, grpc_status, msg, "out of memory");
    s->out_desc = out_desc;
    grpc_metadata *gmd = NULL;
    size_t nmd = 0;
    grpc_byte_buffer *send = NULL;
    az_err err = call_start(conn, &s->c, method, timeout_ms, grpc_status, msg);
    if (err) goto fail;
    if ((err = metadata(conn, md, &gmd, &nmd, grpc_status, msg)) != AZ_OK) goto fail;
    if ((err = pack(req, &send, grpc_status, msg)) != AZ_OK) goto fail;

    grpc_op ops[3];
    size_t n = send_ops(ops, gmd, nmd, send);
    if (grpc_call_start_batch(s->c.call, ops, n, &s->c.tag_send, NULL) != GRPC_CALL_OK) {
        err = local_fail(GRPC_STATUS_INTERNAL, grpc_status, msg, "cannot start the call");
        goto fail;
    }
    /* The status batch stays armed for the whole call; it is how a failure surfaces. */
    grpc_op st;
    status_op(&st, &s->c);
    int status_started = grpc_call_start_batch(s->c.call, &st, 1, &s->c.tag_status, NULL) ==
                         GRPC_CALL_OK;
    s->status_pending = status_started;
    int sent = pluck(&s->c, &s->c.tag_send);
    if (!status_started) {
        err = local_fail(GRPC_STATUS_INTERNAL, grpc_status, msg, "cannot start the call");
        goto fail;
    }
    if (!sent) {
        /* The call failed before the request left (e.g. no connection): report why. */
        stream_finish(s);
        err = stream_result(s, grpc_status, msg);
        if (!err) err = local_fail(GRPC_STATUS_UNAVAILABLE, grpc_status, msg,
                                   "cannot send the request");
        goto fail;
    }
    free(gmd);
    grpc_byte_buffer_destroy(send);
    *out = s;
    if (grpc_status) *grpc_status = 0;
    return AZ_OK;
fail:
    free(gmd);
    if (send) grpc_byte_buffer_destroy(send);
    az_conn_stream_close(s);
    return err;
}

az_err az_conn_stream_next(az_conn_stream *s, ProtobufCMessage **resp, int *grpc_status,
                           char *msg)
{
    *resp = NULL;
    if (s->finished) return stream_result(s, grpc_status, msg);

    grpc_byte_buffer *recv = NULL;
    grpc_op ops[2];
    size_t n = 0;
    if (!s->got_initial_md) {
        ops[n] = (grpc_op){.op = GRPC_OP_RECV_INITIAL_METADATA};
        ops[n++].data.recv_initial_metadata.recv_initial_metadata = &s->c.initial_md;
        s->got_initial_md = 1;
    }
    ops[n] = (grpc_op){.op = GRPC_OP_RECV_MESSAGE};
    ops[n++].data.recv_message.recv_message = &recv;
    if (grpc_call_start_batch(s->c.call, ops, n, &s->c.tag_recv, NULL) != GRPC_CALL_OK) {
        grpc_call_cancel(s->c.call, NULL);
        stream_finish(s);
        s->final_status = GRPC_STATUS_INTERNAL;
        s->final_err = az_fail(s->final_msg, AZ_ERR_INTERNAL, "cannot read from the stream");
        return stream_result(s, grpc_status, msg);
    }
    pluck(&s->c, &s->c.tag_recv);
    if (!recv) {
        /* No message: the server closed the stream or the call failed. */
        stream_finish(s);
        return stream_result(s, grpc_status, msg);
    }
    char umsg[AZ_MSG_MAX];
    int ustatus = 0;
    ProtobufCMessage *m = NULL;
    az_err err = unpack(recv, s->out_desc, &m, &ustatus, umsg);
    grpc_byte_buffer_destroy(recv);
    if (err) {
        /* A message we cannot parse ends the stream: later ones could not be trusted. */
        grpc_call_cancel(s->c.call, NULL);
        stream_finish(s);
        s->final_err = err;
        s->final_status = ustatus;
        snprintf(s->final_msg, sizeof s->final_msg, "%s", umsg);
        return stream_result(s, grpc_status, msg);
    }
    if (grpc_status) *grpc_status = 0;
    *resp = m;
    return AZ_OK;
}

void az_conn_stream_cancel(az_conn_stream *s)
{
    if (s && s->c.call) grpc_call_cancel(s->c.call, NULL);
}

void az_conn_stream_close(az_conn_stream *s)
{
    if (!s) return;
    if (s->status_pending) {
        grpc_call_cancel(s->c.call, NULL);
        pluck(&s->c, &s->c.tag_status);
        s->status_pending = 0;
    }
    call_free(&s->c);
    free(s);
}
