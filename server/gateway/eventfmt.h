/* How server-stream messages go on the wire of the HTTP streaming formats: Server-Sent Events,
 * newline-delimited JSON and WebSocket text messages, and how each format ends a stream. */
#ifndef AZ_EVENTFMT_H
#define AZ_EVENTFMT_H

#include <protobuf-c/protobuf-c.h>
#include <stddef.h>
#include <stdint.h>

#include "core/err.h"

typedef enum az_eventfmt {
    AZ_EVENTFMT_SSE = 0, /* text/event-stream */
    AZ_EVENTFMT_NDJSON,  /* application/x-ndjson: {"result":…} lines, {"error":…} at the end */
    AZ_EVENTFMT_WS,      /* one JSON text message per event, {"error":…} before a failed close */
} az_eventfmt;

/* What an SSE stream starts with: the reconnection delay for EventSource and a comment, so
 * proxies pass the headers on at once. A literal. */
#define AZ_EVENTFMT_SSE_PREAMBLE "retry: 3000\n: stream open\n\n"

/* Formats one message of type desc (serialized, len bytes) for f. For agentz.v1.Event: SSE
 * gives durable events (sequence > 0) an "id:" line, so EventSource's Last-Event-ID resumes
 * exactly; heartbeats become SSE comments (": heartbeat <time>"); *sequence (may be NULL) is
 * set to the event's sequence (0 for ephemeral events and other message types). On AZ_OK *out
 * (*out_len bytes, NUL-terminated) is freed with free(). On error *out is NULL and msg says why:
 * AZ_ERR_INTERNAL for bytes that are not a desc, AZ_ERR_INVALID for a message pbjson cannot
 * encode, AZ_ERR_NOMEM. */
az_err az_eventfmt_message(az_eventfmt f, const ProtobufCMessageDescriptor *desc,
                           const uint8_t *data, size_t len, char **out, size_t *out_len,
                           int64_t *sequence, char *msg);

/* The end of a stream with gRPC status (and message): SSE "event: end" with the
 * google.rpc.Status JSON as data (also for OK, so EventSource clients know not to reconnect);
 * NDJSON and WS {"error": Status} for a failure and nothing (*out_len 0) for OK. On AZ_OK *out
 * is freed with free() (NULL when *out_len is 0); AZ_ERR_NOMEM otherwise. */
az_err az_eventfmt_end(az_eventfmt f, int status, const char *message, char **out, size_t *out_len);

#endif
