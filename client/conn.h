/* The client transport: a gRPC channel to an AGENTZ server and blocking unary and
 * server-streaming calls that take and return protobuf-c messages. */
#ifndef AZ_CONN_H
#define AZ_CONN_H

#include <protobuf-c/protobuf-c.h>

#include "core/err.h"

#ifndef AZ_VERSION
#define AZ_VERSION "0.1.0"
#endif

/* The target used when none is given: $AGENTZ_SERVER when set and non-empty, else this. */
#define AZ_CONN_DEFAULT_TARGET "127.0.0.1:50051"

typedef struct az_conn az_conn;
typedef struct az_conn_stream az_conn_stream;

/* One request metadata entry. Arrays of these end with an entry whose key is NULL.
 * Keys must be lowercase gRPC header names ("x-request-id", "authorization"). */
typedef struct az_md {
    const char *key;
    const char *value;
} az_md;

typedef struct az_conn_opts {
    const char *target;      /* "host:port" or any gRPC target URI; NULL = az_conn_default_target() */
    int tls;                 /* non-zero: TLS; implied by ca_file, cert_file or key_file */
    const char *ca_file;     /* PEM roots; NULL = gRPC's default roots */
    const char *cert_file;   /* PEM client certificate for mTLS; needs key_file */
    const char *key_file;    /* PEM private key for mTLS; needs cert_file */
    const char *server_name; /* TLS name to verify instead of the target's host; NULL = host */
    const char *token;       /* when set, every call sends "authorization: Bearer <token>" unless
                                its own metadata has an authorization entry; copied */
} az_conn_opts;

/* $AGENTZ_SERVER when set and non-empty, else AZ_CONN_DEFAULT_TARGET. Never NULL; points at
 * the environment or a literal, so do not free it. */
const char *az_conn_default_target(void);

/* Opens a channel (gRPC connects lazily, so an unreachable server shows up on the first call
 * as UNAVAILABLE). Initializes gRPC once per process. On AZ_OK *out is a connection the
 * caller frees with az_conn_free. On failure *out is NULL and msg names the problem:
 * AZ_ERR_INVALID for inconsistent options (cert without key), AZ_ERR_IO for unreadable
 * certificate files or a token that is not a legal header value (msg never shows the token),
 * AZ_ERR_NOMEM, AZ_ERR_INTERNAL if gRPC refuses the target. */
az_err az_conn_open(const az_conn_opts *opts, az_conn **out, char *msg);

/* Closes the channel; accepts NULL. Streams opened on c must be closed first. */
void az_conn_free(az_conn *c);

/* The target c was opened with; owned by c. */
const char *az_conn_target(const az_conn *c);

/* Makes one unary call of method ("/agentz.v1.AgentService/GetAgent") with req and waits
 * for it. timeout_ms <= 0 means no deadline; md may be NULL. The connection's token is sent as
 * "authorization: Bearer <token>" unless md has an "authorization" entry (md wins).
 *
 * On AZ_OK *resp is a message of type out_desc that the caller frees with
 * protobuf_c_message_free_unpacked(*resp, NULL), and *grpc_status is 0.
 * On failure *resp is NULL, msg holds the status details (or a local reason), and
 * *grpc_status holds the raw grpc_status_code: the server's status, or the status gRPC
 * reports for transport failures (UNAVAILABLE when the server cannot be reached,
 * DEADLINE_EXCEEDED on timeout). Failures that happen in this process use INTERNAL
 * (response does not parse), INVALID_ARGUMENT (bad metadata) or RESOURCE_EXHAUSTED (out of
 * memory). The return value is az_conn_err_from_status(*grpc_status). resp, grpc_status and
 * msg may each be NULL when the caller does not want them. */
az_err az_conn_unary(az_conn *c, const char *method, const ProtobufCMessage *req,
                     const ProtobufCMessageDescriptor *out_desc, int timeout_ms,
                     const az_md *md, ProtobufCMessage **resp, int *grpc_status, char *msg);

/* Starts a server-streaming call: sends req and half-closes. timeout_ms <= 0 means no
 * deadline (what watch commands want). Metadata as for az_conn_unary. On AZ_OK *out is a stream to read with
 * az_conn_stream_next and release with az_conn_stream_close. On failure *out is NULL and
 * *grpc_status / msg are as for az_conn_unary. */
az_err az_conn_stream_open(az_conn *c, const char *method, const ProtobufCMessage *req,
                           const ProtobufCMessageDescriptor *out_desc, int timeout_ms,
                           const az_md *md, az_conn_stream **out, int *grpc_status, char *msg);

/* Blocks for the next message. Returns AZ_OK with *resp set (free it with
 * protobuf_c_message_free_unpacked(*resp, NULL)) for a message; AZ_OK with *resp NULL and
 * *grpc_status 0 when the server ended the stream with OK; or the error for the final
 * non-OK status with *grpc_status and msg set and *resp NULL. Once the final status has been
 * returned every further call returns it again. */
az_err az_conn_stream_next(az_conn_stream *s, ProtobufCMessage **resp, int *grpc_status,
                           char *msg);

/* Cancels the call; the pending or next az_conn_stream_next returns CANCELLED. Safe to call
 * from another thread (not from a signal handler). Accepts NULL. */
void az_conn_stream_cancel(az_conn_stream *s);

/* Cancels the call if it is still running and frees everything; accepts NULL. */
void az_conn_stream_close(az_conn_stream *s);

/* The az_err for a raw grpc_status_code (0 = AZ_OK; unknown codes = AZ_ERR_INTERNAL). */
az_err az_conn_err_from_status(int grpc_status);

/* "OK", "NOT_FOUND", ... for a raw grpc_status_code; "UNKNOWN" for codes out of range.
 * Never NULL; a literal. */
const char *az_conn_status_name(int grpc_status);

#endif
