/* One HTTP request proxied as one gRPC call: the request as the HTTP side parsed it, the upstream
 * call, and the queue of response chunks the upstream's events turn into. The HTTP side
 * (gateway.c) fills the request and writes chunks; this module (exchange.c) starts the call and
 * produces chunks on the completion-queue thread. Internal to server/gateway. */
#ifndef AZ_EXCHANGE_H
#define AZ_EXCHANGE_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "eventfmt.h"
#include "httprule.h"
#include "routes.h"
#include "transcode.h"
#include "upstream.h"

#define AZ_XCH_MAX_EXTRA 8 /* extra response headers per head */
/* Stream messages an exchange holds for its client at most (see exchange.c). */
#define AZ_XCH_WINDOW 8

typedef enum az_xch_kind {
    AZ_XCH_LOCAL = 0, /* answered by the gateway itself */
    AZ_XCH_REST,      /* unary REST call */
    AZ_XCH_STREAM,    /* REST server stream as SSE or NDJSON */
    AZ_XCH_WS,        /* REST server stream over WebSocket */
    AZ_XCH_GRPCWEB,   /* grpc-web, unary or server streaming */
    AZ_XCH_HEALTH,    /* /readyz: an upstream health check */
    AZ_XCH_CONNECT,   /* the Connect protocol: unary (application/proto|json) or streaming
                         (application/connect+proto|json) */
} az_xch_kind;

/* The request headers the gateway reads. */
enum {
    AZ_H_AUTH,
    AZ_H_APIKEY,
    AZ_H_REQID,
    AZ_H_TRACEPARENT,
    AZ_H_TRACESTATE,
    AZ_H_ORIGIN,
    AZ_H_LAST_EVENT_ID,
    AZ_H_CTYPE,
    AZ_H_ACCEPT,
    AZ_H_TIMEOUT,
    AZ_H_GRPC_TIMEOUT,
    AZ_H_XFF,
    AZ_H_ACCEPT_ENCODING,
    AZ_H_IF_NONE_MATCH,
    AZ_H_AC_METHOD,
    AZ_H_AC_HEADERS,
    AZ_H_WS_PROTOCOL,
    AZ_H_CONNECT_TIMEOUT,
    AZ_NHDR
};

/* Lowercase names of the headers above, in order. */
extern const char *const az_xch_header_names[AZ_NHDR];

typedef enum az_chunk_kind { AZ_CHUNK_HEAD, AZ_CHUNK_DATA, AZ_CHUNK_END } az_chunk_kind;

typedef struct az_chunk {
    struct az_chunk *next;
    az_chunk_kind kind;
    /* HEAD */
    int status;
    const char *ctype;        /* a literal or an asset's type */
    long long content_length; /* -1: streamed */
    int nextra;
    char *extra[AZ_XCH_MAX_EXTRA][2]; /* owned: name, value */
    int asset_csp;            /* the web app's CSP rather than the API's */
    const char *cache;        /* cache-control; NULL = no-store */
    /* DATA */
    uint8_t *data;
    size_t len;
    int borrowed; /* data is not ours to free (an asset, a literal) */
    int ack;      /* once written, the upstream may send the next message */
    /* END, for WebSockets: the close code and reason */
    int ws_close;
    char reason[124];
} az_chunk;

typedef struct az_xch az_xch;

/* Called (from any thread) when x has new chunks for the HTTP side. */
typedef void (*az_xch_wake_fn)(void *arg, az_xch *x);

/* What every exchange of one gateway shares. */
typedef struct az_xch_env {
    az_upstream *up;
    az_xch_wake_fn wake;
    void *wake_arg;
    int call_timeout_ms, max_call_timeout_ms;
    atomic_int *stopping; /* the gateway is shutting down: cut streams say so */
    pthread_mutex_t mu;   /* guards live and unary_inflight */
    pthread_cond_t cv;
    az_xch *live;         /* exchanges with an upstream call */
    int unary_inflight;
} az_xch_env;

struct az_xch {
    az_xch_env *env;
    atomic_int refs;
    az_xch_kind kind;
    az_eventfmt fmt;
    int text;             /* grpc-web-text */
    int json;             /* Connect: the JSON codec (else binary protobuf) */
    int connect_stream;   /* Connect: the enveloped streaming form */
    int head_only;        /* HEAD: headers without a body */
    const char *allow;    /* static: the Allow header of a 405 answer */
    int64_t fixed_timeout_ms;
    /* the request, set by the HTTP side before az_xch_run */
    char *uri;            /* decoded path, NUL-terminated */
    size_t uri_len;
    char *hv[AZ_NHDR];    /* header values (NUL-terminated, in hbuf) or NULL */
    size_t hl[AZ_NHDR];
    char *hbuf;
    char *qbuf;           /* decoded query parameters */
    az_query_param q[AZ_TRANSCODE_MAX_PARAMS];
    size_t nq;
    char *access_token;   /* ?access_token= or a bearer.<token> WebSocket subprotocol */
    const az_route *route;
    const az_route_method *rpc;
    const char *metrics_route; /* static: the route label of a local path or asset (metrics) */
    az_httprule_binding b[AZ_HTTPRULE_MAX_VARS];
    size_t nb;
    const uint8_t *body;  /* borrowed from the HTTP side until az_xch_run returns */
    size_t body_len;
    char peer[64];
    struct timespec start;
    /* the HTTP side's: its state for x, and its ready list (guarded by its own lock); a drained
     * list is walked through http_drain, since a wake may requeue x (and rewrite http_next)
     * while the list is being worked through */
    void *http;
    int http_queued;
    az_xch *http_next, *http_drain;

    pthread_mutex_t mu;   /* guards everything below */
    az_upcall *up;
    az_chunk *out_head, *out_tail;
    int closed;           /* the HTTP side is gone: chunks are dropped */
    int head_queued;
    int headers_in;       /* STREAM: accepted upstream, head not sent yet */
    int close_after;      /* close the connection after this response */
    int messages;
    int window;           /* stream messages queued or being written, not yet taken */
    int throttled;        /* at the window: the next read waits for az_xch_ack */
    int unary_counted;
    char request_id[80];
    char *resp;           /* a unary answer kept for the status */
    size_t resp_len;
    az_err resp_err;
    char resp_msg[AZ_MSG_MAX];
    int health;
    int64_t last_seq;     /* Event streams: the last durable sequence queued for the client (or
                             the request's after_sequence): where a cut stream resumes */
    char final_msg[160];
    az_xch *live_next, *live_prev;
};

/* Sets x->request_id: the client's X-Request-Id when it is a valid id (1..64 printable ASCII
 * characters without spaces or quotes), else a new unique one; sent upstream as x-request-id and
 * on every response. Call once the headers are set. */
void az_xch_request_id(az_xch *x);

/* A new exchange with one reference (the HTTP side's); NULL when out of memory. */
az_xch *az_xch_new(az_xch_env *env);
void az_xch_ref(az_xch *x);
/* Drops a reference; the last frees x. */
void az_xch_unref(az_xch *x);

/* Runs the request (kind, route/rpc, headers, query and body set): transcodes it and starts the
 * upstream call, or queues an error response. The body is not used after it returns. */
void az_xch_run(az_xch *x);

/* Queues an error response: a google.rpc.Status JSON body with http_status (0 = the standard
 * mapping of code), or for WebSockets {"error": Status} and close code 4000 + code. */
void az_xch_fail(az_xch *x, int http_status, int code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Queues a whole response; takes ownership of body (NULL for none) unless borrowed. */
void az_xch_respond(az_xch *x, int status, const char *ctype, uint8_t *body, size_t len,
                    int borrowed);

/* Queues the 200 head of a stream now (the delay after accepted headers has passed). */
void az_xch_stream_head(az_xch *x);

/* New chunk of kind k, or NULL when out of memory; az_chunk_free frees it (accepts NULL). */
az_chunk *az_chunk_new(az_chunk_kind k);
void az_chunk_free(az_chunk *c);
/* Adds an extra header ("name:" form not needed; plain name) to a head; -1 when full. */
int az_chunk_header(az_chunk *c, const char *name, const char *value, size_t vlen);

/* Appends c to x's queue (dropped when x is closed); takes x->mu. */
void az_xch_push(az_xch *x, az_chunk *c);

/* Takes the next chunk off x's queue (NULL when none); *next_is_end tells whether the END
 * chunk follows it directly, so the last write can carry the end. */
az_chunk *az_xch_take(az_xch *x, int *next_is_end);

/* A data chunk with ack set was written: the stream's window has room again. */
void az_xch_ack(az_xch *x);

/* The HTTP side is gone: drop queued chunks, cancel the upstream call. */
void az_xch_close(az_xch *x);

/* Shutdown, in two steps: cancel every stream now; then, after the unary calls had
 * grace_ms to finish (az_xch_env_wait_unary), cancel the rest. */
void az_xch_env_cancel(az_xch_env *env, int streams_only);
void az_xch_env_wait_unary(az_xch_env *env, int grace_ms);
int az_xch_env_busy(az_xch_env *env);

#endif
