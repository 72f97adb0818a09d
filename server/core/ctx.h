/* The request context services receive from the API layer: tenancy, deadline, cancellation.
 * Keeps services free of gRPC: the API layer fills it from the call. */
#ifndef AZ_CTX_H
#define AZ_CTX_H

#include <stdint.h>

/* The single workspace every row belongs to until authentication brings tenancy. */
#define AZ_DEFAULT_WORKSPACE "00000000-0000-0000-0000-000000000001"

typedef struct az_ctx {
    const char *workspace_id; /* uuid text; every query is scoped to it */
    const char *principal;    /* who asks; "" until authentication exists */
    const char *request_id;
    int64_t deadline_ms; /* CLOCK_MONOTONIC milliseconds, or -1 for none */
    /* Installs (fn != NULL) or clears (fn == NULL) a hook run when the caller goes away, so
     * a running database statement can be cancelled. NULL when the caller cannot cancel. */
    void (*set_cancel)(void *owner, void (*fn)(void *), void *arg);
    void *owner;
} az_ctx;

/* Monotonic clock in milliseconds. */
int64_t az_now_ms(void);

/* Milliseconds left before ctx's deadline: -1 when none, 0 when passed. */
int64_t az_ctx_remaining_ms(const az_ctx *ctx);

#endif
