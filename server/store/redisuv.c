/* hiredis async contexts on a libuv loop (see redisuv.h): hiredis 0.14's libuv adapter with
 * poll errors passed on instead of dropped. */
#include "redisuv.h"

#include <stdlib.h>

typedef struct events {
    redisAsyncContext *ac; /* NULL once hiredis cleaned up: the handle is closing */
    uv_poll_t handle;
    int events;
} events;

static void on_poll(uv_poll_t *handle, int status, int ready)
{
    events *p = handle->data;
    if (status < 0) {
        /* POLLERR: libuv stopped the handle. Let hiredis look at the socket: a connect in
         * progress reads SO_ERROR and fails, an established connection's read fails. */
        if (!p->ac) return;
        if (!(p->ac->c.flags & REDIS_CONNECTED)) redisAsyncHandleWrite(p->ac);
        else redisAsyncHandleRead(p->ac);
        /* Still alive (the error was transient): watch again what hiredis asked for. */
        if (p->ac && p->events) uv_poll_start(&p->handle, p->events, on_poll);
        return;
    }
    if (p->ac && (ready & UV_READABLE)) redisAsyncHandleRead(p->ac);
    if (p->ac && (ready & UV_WRITABLE)) redisAsyncHandleWrite(p->ac);
}

static void update(events *p)
{
    if (p->events) uv_poll_start(&p->handle, p->events, on_poll);
    else uv_poll_stop(&p->handle);
}

static void add_read(void *arg)
{
    events *p = arg;
    p->events |= UV_READABLE;
    update(p);
}

static void del_read(void *arg)
{
    events *p = arg;
    p->events &= ~UV_READABLE;
    update(p);
}

static void add_write(void *arg)
{
    events *p = arg;
    p->events |= UV_WRITABLE;
    update(p);
}

static void del_write(void *arg)
{
    events *p = arg;
    p->events &= ~UV_WRITABLE;
    update(p);
}

static void on_closed(uv_handle_t *h) { free(h->data); }

static void cleanup(void *arg)
{
    events *p = arg;
    p->ac = NULL; /* hiredis is freeing the context */
    uv_close((uv_handle_t *)&p->handle, on_closed);
}

int az_redisuv_attach(redisAsyncContext *ac, uv_loop_t *loop)
{
    if (ac->ev.data) return REDIS_ERR;
    events *p = calloc(1, sizeof *p);
    if (!p) return REDIS_ERR;
    if (uv_poll_init(loop, &p->handle, ac->c.fd) != 0) {
        free(p);
        return REDIS_ERR;
    }
    p->handle.data = p;
    p->ac = ac;
    ac->ev.addRead = add_read;
    ac->ev.delRead = del_read;
    ac->ev.addWrite = add_write;
    ac->ev.delWrite = del_write;
    ac->ev.cleanup = cleanup;
    ac->ev.data = p;
    return REDIS_OK;
}
