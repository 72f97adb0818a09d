/* libcurl's multi interface driven by a libuv loop: one az_http per loop runs any number of
 * concurrent transfers (LLM calls) without a thread per transfer. Every function must be called
 * on the loop's thread, and every callback runs there. */
#ifndef AZ_HTTP_H
#define AZ_HTTP_H

#include <curl/curl.h>
#include <stddef.h>
#include <uv.h>

#include "core/err.h"

typedef struct az_http az_http;

/* Called once when a transfer added with az_http_add ends (code from CURLMsg.data.result). The
 * easy handle has already been removed from the multi handle: the callee may free it. */
typedef void (*az_http_done_fn)(void *arg, CURL *easy, CURLcode code);

/* Creates a driver on loop (borrowed; must outlive it). max_connections (0 = unlimited) caps
 * CURLMOPT_MAX_TOTAL_CONNECTIONS. On error *out is NULL: AZ_ERR_NOMEM, AZ_ERR_INTERNAL. */
az_err az_http_new(uv_loop_t *loop, long max_connections, az_http **out, char *msg);

/* Starts easy (owned by the caller, who must keep it alive until done runs or az_http_remove).
 * done and arg must stay valid as long. AZ_ERR_INTERNAL when curl refuses the handle. */
az_err az_http_add(az_http *h, CURL *easy, az_http_done_fn done, void *arg, char *msg);

/* Aborts a running transfer at once; done is not called. A handle not (or no longer) added is
 * ignored. */
void az_http_remove(az_http *h, CURL *easy);

/* Transfers running now. */
size_t az_http_active(const az_http *h);

/* Closes the driver; every transfer must have ended or been removed. Its uv handles close
 * asynchronously: run the loop once more (uv_run UV_RUN_DEFAULT / NOWAIT) after this before
 * uv_loop_close. Accepts NULL. */
void az_http_free(az_http *h);

#endif
