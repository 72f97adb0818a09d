/* libcurl's multi interface on a libuv loop: curl tells us which sockets to watch
 * (CURLMOPT_SOCKETFUNCTION → one uv_poll_t per socket) and when to call it back
 * (CURLMOPT_TIMERFUNCTION → one uv_timer_t); readiness goes back through
 * curl_multi_socket_action, finished transfers come out of curl_multi_info_read. */
#include "engine/http.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"

/* One transfer we drive: the caller's easy handle and its done callback. Kept in a hash table
 * keyed by the easy pointer, so CURLOPT_PRIVATE stays the caller's. */
typedef struct xfer {
    CURL *easy;
    az_http_done_fn done;
    void *arg;
    int pending_add; /* added while curl was running a callback: curl_multi_add_handle deferred */
    struct xfer *next; /* hash chain */
    struct xfer *defer_next;
} xfer;

/* One socket curl asked us to watch (curl_multi_assign'ed to it). */
typedef struct sock {
    uv_poll_t poll;
    curl_socket_t fd;
    az_http *h;
    struct sock *prev, *next; /* every live sock, so az_http_free can close leftovers */
} sock;

struct az_http {
    uv_loop_t *loop;
    CURLM *multi;
    uv_timer_t timer;
    xfer **buckets;
    size_t nbuckets, n;
    sock *socks;
    int in_curl;       /* > 0 while curl_multi_socket_action runs (it may call back into us) */
    xfer *deferred;    /* transfers added while in_curl, started once curl returns */
    CURL **removals;   /* transfers removed while in_curl, removed from curl once it returns */
    size_t n_removals, cap_removals;
    int handles_open;  /* uv handles not yet closed: the struct is freed when this reaches 0 */
    int freeing;
};

/* ---------------------------------------------------------------- transfer table */

static size_t slot_of(const az_http *h, const CURL *easy)
{
    uintptr_t p = (uintptr_t)easy;
    p ^= p >> 17;
    p *= (uintptr_t)0x9E3779B97F4A7C15ull;
    return (size_t)(p >> 7) & (h->nbuckets - 1);
}

static xfer *find(const az_http *h, const CURL *easy)
{
    for (xfer *x = h->buckets[slot_of(h, easy)]; x; x = x->next)
        if (x->easy == easy) return x;
    return NULL;
}

/* Grows the table so chains stay short with thousands of transfers. */
static int grow(az_http *h)
{
    size_t nb = h->nbuckets * 2;
    xfer **b = calloc(nb, sizeof *b);
    if (!b) return -1;
    xfer **old = h->buckets;
    size_t on = h->nbuckets;
    h->buckets = b;
    h->nbuckets = nb;
    for (size_t i = 0; i < on; i++) {
        for (xfer *x = old[i], *nx; x; x = nx) {
            nx = x->next;
            size_t s = slot_of(h, x->easy);
            x->next = b[s];
            b[s] = x;
        }
    }
    free(old);
    return 0;
}

static void unlink_xfer(az_http *h, xfer *x)
{
    xfer **pp = &h->buckets[slot_of(h, x->easy)];
    while (*pp && *pp != x) pp = &(*pp)->next;
    if (*pp) *pp = x->next;
    h->n--;
    if (x->pending_add) {
        xfer **dp = &h->deferred;
        while (*dp && *dp != x) dp = &(*dp)->defer_next;
        if (*dp) *dp = x->defer_next;
    }
}

/* ---------------------------------------------------------------- handle lifetime */

static void maybe_free(az_http *h)
{
    if (h->freeing && h->handles_open == 0) {
        free(h->buckets);
        free(h->removals);
        free(h);
    }
}

static void on_sock_closed(uv_handle_t *hd)
{
    sock *s = hd->data;
    az_http *h = s->h;
    free(s);
    h->handles_open--;
    maybe_free(h);
}

static void on_timer_closed(uv_handle_t *hd)
{
    az_http *h = hd->data;
    h->handles_open--;
    maybe_free(h);
}

static void sock_close(az_http *h, sock *s)
{
    uv_poll_stop(&s->poll);
    if (s->prev) s->prev->next = s->next;
    else h->socks = s->next;
    if (s->next) s->next->prev = s->prev;
    uv_close((uv_handle_t *)&s->poll, on_sock_closed);
}

/* ---------------------------------------------------------------- driving curl */

static void start_deferred(az_http *h);

/* Removals curl refused because they came from inside one of its callbacks. */
static void finish_removals(az_http *h)
{
    for (size_t i = 0; i < h->n_removals; i++) curl_multi_remove_handle(h->multi, h->removals[i]);
    h->n_removals = 0;
}

/* Hands every finished transfer to its owner. The handle is removed first so the callee may
 * free it or start another transfer from the callback. */
static void check_done(az_http *h)
{
    CURLMsg *m;
    int left;
    while ((m = curl_multi_info_read(h->multi, &left))) {
        if (m->msg != CURLMSG_DONE) continue;
        CURL *easy = m->easy_handle;
        CURLcode code = m->data.result;
        curl_multi_remove_handle(h->multi, easy);
        xfer *x = find(h, easy);
        if (!x) continue; /* not ours any more */
        unlink_xfer(h, x);
        az_http_done_fn done = x->done;
        void *arg = x->arg;
        free(x);
        done(arg, easy, code);
    }
}

static void socket_action(az_http *h, curl_socket_t fd, int ev)
{
    int running;
    h->in_curl++;
    CURLMcode rc = curl_multi_socket_action(h->multi, fd, ev, &running);
    h->in_curl--;
    if (rc != CURLM_OK) az_warn("curl_multi_socket_action failed: %s", curl_multi_strerror(rc));
    finish_removals(h);
    start_deferred(h);
    check_done(h);
}

/* Transfers added from inside a curl callback (where curl refuses API calls) start now. A
 * refusal is reported through done, since az_http_add already returned AZ_OK. */
static void start_deferred(az_http *h)
{
    while (h->deferred && !h->in_curl) {
        xfer *x = h->deferred;
        h->deferred = x->defer_next;
        x->pending_add = 0;
        CURLMcode rc = curl_multi_add_handle(h->multi, x->easy);
        if (rc != CURLM_OK) {
            az_warn("cannot start deferred transfer: %s", curl_multi_strerror(rc));
            x->pending_add = 0;
            unlink_xfer(h, x);
            az_http_done_fn done = x->done;
            void *arg = x->arg;
            CURL *easy = x->easy;
            free(x);
            done(arg, easy, CURLE_FAILED_INIT);
        }
    }
}

static void on_poll(uv_poll_t *p, int status, int events)
{
    sock *s = p->data;
    int ev = 0;
    if (status < 0) ev = CURL_CSELECT_ERR;
    else {
        if (events & UV_READABLE) ev |= CURL_CSELECT_IN;
        if (events & UV_WRITABLE) ev |= CURL_CSELECT_OUT;
    }
    /* s may be closed (CURL_POLL_REMOVE) inside the call: read fd and h first. */
    socket_action(s->h, s->fd, ev);
}

static void on_timer(uv_timer_t *t)
{
    az_http *h = t->data;
    socket_action(h, CURL_SOCKET_TIMEOUT, 0);
}

/* CURLMOPT_SOCKETFUNCTION: watch, change or forget a socket. */
static int on_socket(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp)
{
    (void)easy;
    az_http *h = userp;
    sock *s = socketp;
    if (what == CURL_POLL_REMOVE) {
        if (s) {
            curl_multi_assign(h->multi, fd, NULL);
            sock_close(h, s);
        }
        return 0;
    }
    if (!s) {
        s = calloc(1, sizeof *s);
        if (!s) return -1;
        if (uv_poll_init_socket(h->loop, &s->poll, fd) != 0) {
            free(s);
            return -1;
        }
        s->fd = fd;
        s->h = h;
        s->poll.data = s;
        s->next = h->socks;
        if (h->socks) h->socks->prev = s;
        h->socks = s;
        h->handles_open++;
        curl_multi_assign(h->multi, fd, s);
    }
    int ev = 0;
    if (what == CURL_POLL_IN || what == CURL_POLL_INOUT) ev |= UV_READABLE;
    if (what == CURL_POLL_OUT || what == CURL_POLL_INOUT) ev |= UV_WRITABLE;
    if (uv_poll_start(&s->poll, ev, on_poll) != 0) return -1;
    return 0;
}

/* CURLMOPT_TIMERFUNCTION: curl wants socket_action(TIMEOUT) after timeout_ms (-1: never). It
 * must not be called from here (recursion), so the uv timer does it, even for 0. */
static int on_curl_timer(CURLM *multi, long timeout_ms, void *userp)
{
    (void)multi;
    az_http *h = userp;
    if (timeout_ms < 0) uv_timer_stop(&h->timer);
    else uv_timer_start(&h->timer, on_timer, (uint64_t)timeout_ms, 0);
    return 0;
}

/* ---------------------------------------------------------------- public */

az_err az_http_new(uv_loop_t *loop, long max_connections, az_http **out, char *msg)
{
    *out = NULL;
    az_http *h = calloc(1, sizeof *h);
    if (!h) return az_fail(msg, AZ_ERR_NOMEM, "out of memory");
    h->loop = loop;
    h->nbuckets = 64;
    h->buckets = calloc(h->nbuckets, sizeof *h->buckets);
    h->multi = curl_multi_init();
    if (!h->buckets || !h->multi) {
        if (h->multi) curl_multi_cleanup(h->multi);
        free(h->buckets);
        free(h);
        return az_fail(msg, AZ_ERR_INTERNAL, "cannot create the curl multi handle");
    }
    if (uv_timer_init(loop, &h->timer) != 0) {
        curl_multi_cleanup(h->multi);
        free(h->buckets);
        free(h);
        return az_fail(msg, AZ_ERR_INTERNAL, "cannot create the http timer");
    }
    h->timer.data = h;
    h->handles_open = 1;
    curl_multi_setopt(h->multi, CURLMOPT_SOCKETFUNCTION, on_socket);
    curl_multi_setopt(h->multi, CURLMOPT_SOCKETDATA, h);
    curl_multi_setopt(h->multi, CURLMOPT_TIMERFUNCTION, on_curl_timer);
    curl_multi_setopt(h->multi, CURLMOPT_TIMERDATA, h);
    if (max_connections > 0)
        curl_multi_setopt(h->multi, CURLMOPT_MAX_TOTAL_CONNECTIONS, max_connections);
    *out = h;
    return AZ_OK;
}

az_err az_http_add(az_http *h, CURL *easy, az_http_done_fn done, void *arg, char *msg)
{
    if (!easy || !done) return az_fail(msg, AZ_ERR_INTERNAL, "az_http_add needs a handle and a callback");
    if (find(h, easy)) return az_fail(msg, AZ_ERR_INTERNAL, "transfer already running");
    if (h->n + 1 > h->nbuckets * 2 && grow(h) != 0)
        return az_fail(msg, AZ_ERR_NOMEM, "out of memory");
    xfer *x = calloc(1, sizeof *x);
    if (!x) return az_fail(msg, AZ_ERR_NOMEM, "out of memory");
    x->easy = easy;
    x->done = done;
    x->arg = arg;
    if (h->in_curl) {
        /* Called from a curl callback (a write callback starting a transfer): curl would answer
         * CURLM_RECURSIVE_API_CALL, so start it once curl returns. */
        x->pending_add = 1;
        xfer **dp = &h->deferred;
        while (*dp) dp = &(*dp)->defer_next;
        *dp = x;
    } else {
        CURLMcode rc = curl_multi_add_handle(h->multi, easy);
        if (rc != CURLM_OK) {
            free(x);
            return az_fail(msg, AZ_ERR_INTERNAL, "curl refused the transfer: %s",
                           curl_multi_strerror(rc));
        }
    }
    size_t s = slot_of(h, easy);
    x->next = h->buckets[s];
    h->buckets[s] = x;
    h->n++;
    return AZ_OK;
}

void az_http_remove(az_http *h, CURL *easy)
{
    if (!h || !easy) return;
    xfer *x = find(h, easy);
    if (!x) return;
    int was_pending = x->pending_add;
    unlink_xfer(h, x);
    free(x);
    if (was_pending) return;
    if (h->in_curl) {
        /* From inside a curl callback curl refuses the removal (CURLM_RECURSIVE_API_CALL): the
         * transfer is forgotten now (done will not run) and leaves curl as soon as curl returns,
         * so the easy handle must live until the callback that called us has returned. */
        if (h->n_removals == h->cap_removals) {
            size_t cap = h->cap_removals ? h->cap_removals * 2 : 16;
            CURL **r = realloc(h->removals, cap * sizeof *r);
            if (!r) {
                az_error("cannot defer a transfer removal: out of memory");
                return;
            }
            h->removals = r;
            h->cap_removals = cap;
        }
        h->removals[h->n_removals++] = easy;
        return;
    }
    CURLMcode rc = curl_multi_remove_handle(h->multi, easy);
    if (rc != CURLM_OK) az_warn("curl_multi_remove_handle failed: %s", curl_multi_strerror(rc));
}

size_t az_http_active(const az_http *h)
{
    return h ? h->n : 0;
}

void az_http_free(az_http *h)
{
    if (!h) return;
    for (size_t i = 0; i < h->nbuckets; i++) {
        for (xfer *x = h->buckets[i], *nx; x; x = nx) {
            nx = x->next;
            if (!x->pending_add) curl_multi_remove_handle(h->multi, x->easy);
            free(x);
        }
        h->buckets[i] = NULL;
    }
    h->n = 0;
    h->deferred = NULL;
    curl_multi_cleanup(h->multi); /* closes cached connections, may call on_socket(REMOVE) */
    h->multi = NULL;
    while (h->socks) sock_close(h, h->socks);
    h->freeing = 1;
    uv_timer_stop(&h->timer);
    uv_close((uv_handle_t *)&h->timer, on_timer_closed);
}
