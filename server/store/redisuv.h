/* hiredis async contexts on a libuv loop: the adapter hiredis 0.14 ships (adapters/libuv.h),
 * fixed so that a socket error reaches hiredis. libuv reports POLLERR to a uv_poll_t as status
 * UV_EBADF and stops the handle; the stock adapter ignores any status, so a connect refused
 * asynchronously (Redis restarting) never completes nor fails and the context waits forever. */
#ifndef AZ_REDISUV_H
#define AZ_REDISUV_H

#include <hiredis/async.h>
#include <uv.h>

/* Attaches ac to loop (use instead of redisLibuvAttach). On a poll error the context is told
 * as if its socket were ready: a pending connect then fails through the connect callback
 * (REDIS_ERR) and an established connection through the disconnect callback. The events
 * structure belongs to ac and is freed when hiredis frees ac (after its uv_poll_t closed).
 * Returns REDIS_ERR when ac is already attached or out of memory. */
int az_redisuv_attach(redisAsyncContext *ac, uv_loop_t *loop);

#endif
