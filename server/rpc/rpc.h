/* The gRPC runtime's public face: method tables, the call context handlers see, and streaming. */
#ifndef AZ_RPC_H
#define AZ_RPC_H

#include <protobuf-c/protobuf-c.h>
#include <stddef.h>
#include <stdint.h>

#include "../core/arena.h"
#include "../core/ctx.h"
#include "../core/err.h"

typedef struct az_call az_call; /* one RPC; owned by the runtime */

typedef enum az_rpc_kind {
    AZ_RPC_UNARY = 0,
    AZ_RPC_SERVER_STREAM,
    AZ_RPC_BIDI, /* also covers client streaming */
} az_rpc_kind;

/* Unary: req is unpacked into the call's arena. On AZ_OK set *resp to a message allocated
 * from az_call_arena(c) (or static); on error fill msg (AZ_MSG_MAX) naming the field. */
typedef az_err (*az_unary_fn)(az_call *c, const ProtobufCMessage *req, ProtobufCMessage **resp,
                              char *msg);

/* Server streaming: called once with the request. Return AZ_OK to keep the call open; the
 * handler (or any thread holding a reference from az_call_ref) then uses az_call_send and
 * finally az_call_finish. An error return ends the call at once with that status. */
typedef az_err (*az_stream_fn)(az_call *c, const ProtobufCMessage *req, char *msg);

/* Bidi/client streaming: called for every received message, and once with req == NULL when
 * the client half-closes. req lives until the callback returns. Return AZ_OK to go on; an
 * error ends the call. After the NULL call the handler must call az_call_finish (at once or
 * later). */
typedef az_err (*az_bidi_fn)(az_call *c, const ProtobufCMessage *req, char *msg);

typedef struct az_method {
    const char *path; /* "/agentz.v1.AgentService/CreateAgent" */
    az_rpc_kind kind;
    const ProtobufCMessageDescriptor *input;
    const ProtobufCMessageDescriptor *output;
    az_unary_fn unary;
    az_stream_fn stream;
    az_bidi_fn bidi;
    void *data; /* handed back by az_call_data(), e.g. the module's state */
} az_method;

/* ---- call context (valid inside handlers, and while a reference is held) ---- */

/* The method's `data` pointer from its table entry. */
void *az_call_data(const az_call *c);

/* Arena freed when the call ends; unary responses and their strings go here. */
az_arena *az_call_arena(az_call *c);

/* Milliseconds left before the client's deadline, or -1 for no deadline. 0 = expired. */
int64_t az_call_remaining_ms(const az_call *c);

/* 1 once the client cancelled, the deadline passed, or the server is shutting down. */
int az_call_cancelled(const az_call *c);

/* The method path, the peer ("ipv4:127.0.0.1:5432"), and the request id (the client's
 * x-request-id metadata, or one the server generated). Owned by the call. */
const char *az_call_method(const az_call *c);
const char *az_call_peer(const az_call *c);
const char *az_call_request_id(const az_call *c);

/* The first value of request metadata key (lowercase), copied into the call's arena; NULL
 * when absent. */
const char *az_call_metadata(az_call *c, const char *key);

/* Registers fn(arg) to run (once, on a runtime thread) when the call is cancelled while the
 * hook is set; az_call_set_cancel_hook(c, NULL, NULL) clears it, waiting for a running hook to
 * return. Used to cancel PostgreSQL statements. The hook runs under the call's lock: it must
 * not call az_call_* functions. */
void az_call_set_cancel_hook(az_call *c, void (*fn)(void *), void *arg);

/* Registers fn(arg) to run exactly once when the call is over (finished, cancelled or failed),
 * for streams kept in other modules' lists. Replaces an earlier hook. */
void az_call_on_done(az_call *c, void (*fn)(az_call *, void *), void *arg);

/* Fills *ctx for service calls: workspace, request id, the call's deadline, and a cancel
 * hook wired to az_call_set_cancel_hook. Valid while the call is. */
void az_call_ctx(az_call *c, az_ctx *ctx);

/* ---- streaming ---- */

/* Keeps c alive after the handler returns; pair with az_call_unref. */
void az_call_ref(az_call *c);
void az_call_unref(az_call *c);

/* Serializes m and queues it. Thread-safe; at most one send is in flight, the rest wait in a
 * queue bounded by the server's stream_queue_limit. Returns AZ_OK; AZ_ERR_CANCELLED when the
 * call is over or finishing; AZ_ERR_EXHAUSTED when the queue was full, in which case the call
 * is ended with RESOURCE_EXHAUSTED. Never blocks. */
az_err az_call_send(az_call *c, const ProtobufCMessage *m);

/* Messages queued or in flight on c: lets a fast producer pace itself below the limit. */
int az_call_queued(az_call *c);

/* Ends the call with code and message once queued messages are sent. Idempotent: the
 * first finish wins. Thread-safe. */
void az_call_finish(az_call *c, az_err code, const char *msg);

/* ---- authentication, authorization and auditing hooks ---- */

/* Who is calling. Filled by the server's authorizer before the handler runs. */
typedef struct az_principal {
    char id[160];          /* "user:<sub>", "key:<id>", "local-admin"; "" = anonymous */
    char workspace_id[37]; /* uuid; every service query is scoped to it */
    int role;              /* Agentz__V1__Role value; 0 = none */
    char auth_method[16];  /* "clerk", "api_key", "admin_key", "none" */
} az_principal;

/* The caller; never NULL (anonymous until an authorizer sets it). */
const az_principal *az_call_principal(const az_call *c);

/* Records the resource id a call acted on (for the audit log); copied. */
void az_call_set_target(az_call *c, const char *id);
const char *az_call_target(const az_call *c);

/* Runs before every call's handler (unknown methods included, m == NULL) on a runtime thread.
 * Return AZ_OK after filling *p, or an error (UNAUTHENTICATED, PERMISSION_DENIED,
 * RESOURCE_EXHAUSTED...) with msg, which ends the call at once without running the handler. */
typedef az_err (*az_authorizer_fn)(void *arg, az_call *c, const char *method, az_principal *p,
                                   char *msg);

/* Runs once per call after its final status is known (for audit logs and metrics). status is
 * the grpc status code sent (1 when the client cancelled). Must not call az_call_send. */
typedef void (*az_observer_fn)(void *arg, az_call *c, const char *method, int status,
                               int64_t duration_us);

/* ---- the server ---- */

typedef struct az_server_config {
    const char *listen;        /* "127.0.0.1:50051" */
    const char *local_listen;  /* a second, plaintext listener for this host only (the
                                  in-process gateway's "unix:/path"); NULL = none */
    const char *tls_cert_file; /* PEM; NULL = plaintext */
    const char *tls_key_file;
    const char *tls_client_ca_file; /* when set, client certificates are required (mTLS) */
    int threads;                    /* completion-queue threads; 0 = 4 x cores, at least 4 */
    int max_message_bytes;          /* receive and send limit; 0 = 4 MiB */
    int stream_queue_limit;         /* queued messages per stream; 0 = 256 */
    int shutdown_grace_ms;          /* in-flight calls get this long at shutdown; 0 = 10000 */
} az_server_config;

typedef struct az_server az_server;

/* Creates the server, registers methods (tables of n each; tables must outlive the server)
 * and binds the port. On error returns NULL with msg filled and nothing left running. */
az_server *az_server_new(const az_server_config *cfg, const az_method *const *tables,
                         const size_t *counts, size_t ntables, char *msg);

/* The bound port (useful with ":0"). */
int az_server_port(const az_server *s);

/* Starts the completion-queue threads. */
az_err az_server_start(az_server *s, char *msg);

/* Installs the authorizer / observer (one each; before az_server_start). */
void az_server_set_authorizer(az_server *s, az_authorizer_fn fn, void *arg);
void az_server_set_observer(az_server *s, az_observer_fn fn, void *arg);

/* Registers fn(arg) to run when shutdown begins (before calls are drained), e.g. to turn
 * health NOT_SERVING and end watch streams. At most 8 hooks. */
void az_server_on_shutdown(az_server *s, void (*fn)(void *), void *arg);

/* Graceful shutdown: runs the hooks, refuses new calls, waits up to the grace period for
 * in-flight calls, cancels the rest, joins the threads. Blocks; call once. */
void az_server_shutdown(az_server *s);

/* Frees a shut-down server; accepts NULL. */
void az_server_free(az_server *s);

#endif
