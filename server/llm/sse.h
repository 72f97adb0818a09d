/* An incremental server-sent-events parser (the WHATWG event-stream grammar): bytes arrive in
 * arbitrary chunks, complete events come out through a callback. */
#ifndef AZ_SSE_H
#define AZ_SSE_H

#include <stddef.h>

#include "core/err.h"

/* Default bound on one event (its data lines plus the line being read), in bytes. */
#define AZ_SSE_MAX_EVENT (1024 * 1024)

/* One dispatched event. event is the `event:` field ("message" when absent); data is the
 * `data:` lines joined by '\n', NUL-terminated, data_len bytes long. Both are owned by the
 * parser and valid only during the callback. */
typedef struct az_sse_event {
    const char *event;
    const char *data;
    size_t data_len;
} az_sse_event;

/* Handles one event. A non-AZ_OK return (with msg filled) stops the parser: az_sse_feed returns
 * the same code and message, and the parser refuses further input. */
typedef az_err (*az_sse_event_fn)(void *arg, const az_sse_event *ev, char *msg);

typedef struct az_sse az_sse;

/* Creates a parser calling fn(arg, ...) per event; max_event 0 = AZ_SSE_MAX_EVENT.
 * On AZ_OK *out is the caller's (az_sse_free); AZ_ERR_NOMEM otherwise. */
az_err az_sse_new(size_t max_event, az_sse_event_fn fn, void *arg, az_sse **out, char *msg);

/* Consumes len bytes. Lines end in CRLF, LF or CR (a CRLF split across two calls counts once);
 * lines starting with ':' are comments; `data`, `event` are used, `id` and `retry` ignored, other
 * fields ignored as the spec says; a UTF-8 BOM at the very start is skipped; an empty line
 * dispatches the event when it has data. Returns AZ_ERR_EXHAUSTED ("sse event larger than N
 * bytes") when an event outgrows max_event, the callback's error when it fails, AZ_ERR_NOMEM.
 * After an error every later call returns AZ_ERR_PRECONDITION. */
az_err az_sse_feed(az_sse *p, const char *buf, size_t len, char *msg);

/* 1 when bytes of an unfinished event are buffered (the stream ended mid-event). The spec
 * discards such an event at end of stream; callers use this to tell a truncated stream. */
int az_sse_pending(const az_sse *p);

/* Frees p; accepts NULL. */
void az_sse_free(az_sse *p);

#endif
