/* The gateway's asynchronous gRPC client: channels to agentzd, one completion-queue thread, and
 * calls that hand their initial metadata, messages and final status to a callback. Messages
 * travel as serialized bytes: the gateway transcodes, the upstream only moves them. */
#ifndef AZ_UPSTREAM_H
#define AZ_UPSTREAM_H

#include <grpc/grpc.h>
#include <stddef.h>
#include <stdint.h>

#include "core/err.h"

typedef struct az_upstream az_upstream;
typedef struct az_upcall az_upcall;

typedef struct az_upstream_config {
    const char *target;        /* "127.0.0.1:50051", "unix:/path", any gRPC target */
    int tls;                   /* non-zero: TLS (implied by ca_file, cert_file, key_file) */
    const char *ca_file;       /* PEM roots; NULL = gRPC's default roots */
    const char *cert_file;     /* client certificate for mTLS; needs key_file */
    const char *key_file;
    const char *server_name;   /* TLS name to verify instead of the target's host */
    int max_message_bytes;     /* receive limit; 0 = 4 MiB */
    int unary_channels;        /* connections shared by unary calls; 0 = 2 */
    int streams_per_channel;   /* server streams per connection; 0 = 100 */
    int max_streams;           /* streams at once; beyond: RESOURCE_EXHAUSTED; 0 = 100000 */
} az_upstream_config;

/* One header: key lowercase, value value_len bytes (not NUL-terminated). */
typedef struct az_upmd {
    const char *key;
    const char *value;
    size_t value_len;
} az_upmd;

typedef enum az_upev_kind {
    AZ_UPEV_HEADERS = 0, /* initial metadata arrived (md); empty for a trailers-only answer */
    AZ_UPEV_MESSAGE,     /* one response message (data, len) */
    AZ_UPEV_STATUS,      /* the call is over (status, details, md = trailing metadata) */
} az_upev_kind;

/* What the callback receives; everything it points at is valid only during the callback. */
typedef struct az_upev {
    az_upev_kind kind;
    const grpc_metadata_array *md;
    const uint8_t *data;
    size_t len;
    int status;          /* grpc_status_code */
    const char *details; /* NUL-terminated, "" when none */
} az_upev;

/* Runs on the completion-queue thread, one event at a time per call and in order: HEADERS (at
 * most once, before any MESSAGE), MESSAGE (unary: at most one; streaming: one per
 * az_upcall_read), then STATUS exactly once — also after cancellation or a failure to start,
 * and only after every message the server sent was delivered (unless the caller cancelled).
 * It may call az_upcall_read / az_upcall_cancel / az_upcall_release on its own call, and must
 * not block. */
typedef void (*az_upcall_fn)(void *arg, const az_upev *ev);

typedef struct az_upcall_opts {
    const char *method;     /* "/agentz.v1.AgentService/GetAgent"; copied */
    int streaming;          /* server streaming: messages one az_upcall_read at a time */
    const az_upmd *md;      /* request metadata, copied; keys must be legal gRPC keys */
    size_t nmd;
    int64_t timeout_ms;     /* deadline from now; <= 0 = none */
    const uint8_t *request; /* the serialized request message, copied */
    size_t request_len;
    az_upcall_fn fn;
    void *arg;
} az_upcall_opts;

/* Opens the channels (gRPC connects lazily: an unreachable upstream shows up as UNAVAILABLE on
 * calls) and starts the completion-queue thread. Initializes gRPC. On AZ_OK *out is freed with
 * az_upstream_free. On failure *out is NULL and msg says why: AZ_ERR_INVALID (cert without key),
 * AZ_ERR_IO (unreadable PEM file), AZ_ERR_NOMEM, AZ_ERR_INTERNAL (gRPC refused the target). */
az_err az_upstream_new(const az_upstream_config *cfg, az_upstream **out, char *msg);

/* Cancels every call still open, waits for their STATUS callbacks, stops the thread and closes
 * the channels. Accepts NULL. No az_upcall_* call may follow, except on calls whose STATUS was
 * already delivered, which may still be released. */
void az_upstream_free(az_upstream *u);

/* Starts a call. On AZ_OK *out is a handle the caller keeps until it calls az_upcall_release;
 * the callback then runs as described above, the first event possibly before this returns.
 * On error *out is NULL, no callback ever runs, and msg says why: AZ_ERR_INVALID (an illegal
 * metadata key or value, named), AZ_ERR_EXHAUSTED (max_streams reached), AZ_ERR_UNAVAILABLE
 * (the upstream is shutting down), AZ_ERR_NOMEM, AZ_ERR_INTERNAL. Thread-safe. */
az_err az_upcall_start(az_upstream *u, const az_upcall_opts *o, az_upcall **out, char *msg);

/* Streaming calls: asks for the next message (the first is asked for right after HEADERS).
 * At most one read is outstanding; a second before the MESSAGE callback is ignored. No-op
 * after STATUS. Thread-safe. */
void az_upcall_read(az_upcall *c);

/* Cancels the call; STATUS (CANCELLED, unless it already ended) follows. Idempotent,
 * thread-safe. */
void az_upcall_cancel(az_upcall *c);

/* Drops the caller's handle. The call is freed once its STATUS was delivered and gRPC holds
 * no batch; releasing before that does not cancel (call az_upcall_cancel first to stop it).
 * Accepts NULL. */
void az_upcall_release(az_upcall *c);

/* Calls started and open right now (for metrics and tests). */
int az_upstream_open_calls(az_upstream *u);

#endif
