/* Clock helpers for az_ctx deadlines. */
#include "ctx.h"

#include <time.h>

int64_t az_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t az_ctx_remaining_ms(const az_ctx *ctx)
{
    if (!ctx || ctx->deadline_ms < 0) return -1;
    int64_t left = ctx->deadline_ms - az_now_ms();
    return left > 0 ? left : 0;
}
