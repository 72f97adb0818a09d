/* grpc.health.v1.Health backed by real dependency checks: a checker thread runs the registered
 * probes every interval, and Check/Watch report the aggregate (SERVING iff every probe passed its
 * last run and the server is not shutting down). */
#include "health.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../core/log.h"
#include "grpc/health/v1/health.pb-c.h"

#define DEFAULT_INTERVAL_MS 5000
#define CHECK_NAME_MAX 64

typedef struct check {
    char name[CHECK_NAME_MAX];
    az_health_check_fn fn;
    void *arg;
    int ran; /* has a result */
    int ok;
} check;

/* One open Watch stream. While in_list the list holds a reference on the call; the struct
 * itself is freed only by the call's done hook, the one party sure to run last. */
typedef struct watcher {
    struct watcher *prev, *next;
    az_health *h;
    az_call *c;
    int in_list;
    az_health_serving last; /* the status this stream saw last */
    char service[];
} watcher;

struct az_health {
    pthread_mutex_t mu; /* everything below; held while sending to watchers, which never blocks */
    pthread_cond_t cv;  /* wakes the checker thread early (shutdown, free) */
    pthread_mutex_t run_mu; /* one run of the checks at a time; taken before mu */
    int interval_ms;
    check checks[AZ_HEALTH_MAX_CHECKS];
    size_t nchecks;
    char **services;
    size_t nservices, capservices;
    int started, checked, checks_ok, shutting_down, stop;
    int thread_started;
    pthread_t thread;
    watcher *watchers;
    az_method methods[2];
};

/* ---------------------------------------------------------------- status */

static int known_locked(const az_health *h, const char *service)
{
    if (!service[0]) return 1;
    for (size_t i = 0; i < h->nservices; i++) {
        if (strcmp(h->services[i], service) == 0) return 1;
    }
    return 0;
}

static int serving_locked(const az_health *h)
{
    return h->checked && h->checks_ok && !h->shutting_down;
}

static az_health_serving status_locked(const az_health *h, const char *service)
{
    if (!known_locked(h, service)) return AZ_HEALTH_SERVICE_UNKNOWN;
    return serving_locked(h) ? AZ_HEALTH_SERVING : AZ_HEALTH_NOT_SERVING;
}

static az_err send_status(az_call *c, az_health_serving st)
{
    Grpc__Health__V1__HealthCheckResponse resp = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;
    resp.status = (Grpc__Health__V1__HealthCheckResponse__ServingStatus)st;
    return az_call_send(c, &resp.base);
}

/* Sends the new status to every watcher whose status changed. Sending under mu keeps each
 * stream's messages in the order the changes happened; az_call_send never blocks, and a
 * stream too slow to keep up is ended by the runtime (its done hook then removes it). */
static void notify_locked(az_health *h)
{
    for (watcher *w = h->watchers; w; w = w->next) {
        az_health_serving st = status_locked(h, w->service);
        if (st == w->last) continue;
        w->last = st;
        send_status(w->c, st);
    }
}

static void unlink_locked(az_health *h, watcher *w)
{
    if (w->prev) w->prev->next = w->next;
    else h->watchers = w->next;
    if (w->next) w->next->prev = w->prev;
    w->prev = w->next = NULL;
    w->in_list = 0;
}

/* ---------------------------------------------------------------- checks */

/* Runs the probes without holding mu (they may block on the network), then publishes the
 * results, logging each probe's transitions and the server's. */
static void run_checks(az_health *h)
{
    struct {
        az_err err;
        char msg[AZ_MSG_MAX];
    } res[AZ_HEALTH_MAX_CHECKS];

    pthread_mutex_lock(&h->run_mu);
    pthread_mutex_lock(&h->mu);
    int skip = h->shutting_down || !h->started;
    size_t n = h->nchecks; /* fixed once started */
    pthread_mutex_unlock(&h->mu);
    if (skip) {
        pthread_mutex_unlock(&h->run_mu);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        res[i].msg[0] = '\0';
        res[i].err = h->checks[i].fn(h->checks[i].arg, res[i].msg);
        if (res[i].err != AZ_OK && !res[i].msg[0])
            snprintf(res[i].msg, sizeof res[i].msg, "%s", az_err_name(res[i].err));
    }

    pthread_mutex_lock(&h->mu);
    int was = serving_locked(h);
    int all_ok = 1;
    for (size_t i = 0; i < n; i++) {
        check *k = &h->checks[i];
        int ok = res[i].err == AZ_OK;
        if (!ok && (!k->ran || k->ok)) az_warn("health: %s check failed: %s", k->name, res[i].msg);
        if (ok && k->ran && !k->ok) az_info("health: %s check recovered", k->name);
        k->ran = 1;
        k->ok = ok;
        all_ok &= ok;
    }
    h->checks_ok = all_ok;
    h->checked = 1;
    int now = serving_locked(h);
    if (now != was) {
        if (now) az_info("health: serving");
        else az_warn("health: not serving");
        notify_locked(h);
    }
    pthread_mutex_unlock(&h->mu);
    pthread_mutex_unlock(&h->run_mu);
}

static void *checker_main(void *arg)
{
    az_health *h = arg;
    pthread_mutex_lock(&h->mu);
    while (!h->stop && !h->shutting_down) {
        struct timespec until;
        clock_gettime(CLOCK_MONOTONIC, &until);
        until.tv_sec += h->interval_ms / 1000;
        until.tv_nsec += (long)(h->interval_ms % 1000) * 1000000L;
        if (until.tv_nsec >= 1000000000L) {
            until.tv_sec++;
            until.tv_nsec -= 1000000000L;
        }
        int rc = 0;
        while (!h->stop && !h->shutting_down && rc != ETIMEDOUT)
            rc = pthread_cond_timedwait(&h->cv, &h->mu, &until);
        if (h->stop || h->shutting_down) break;
        pthread_mutex_unlock(&h->mu);
        run_checks(h);
        pthread_mutex_lock(&h->mu);
    }
    pthread_mutex_unlock(&h->mu);
    return NULL;
}

/* ---------------------------------------------------------------- handlers */

static az_err health_check(az_call *c, const ProtobufCMessage *req, ProtobufCMessage **resp,
                           char *msg)
{
    az_health *h = az_call_data(c);
    const Grpc__Health__V1__HealthCheckRequest *q = (const Grpc__Health__V1__HealthCheckRequest *)req;
    az_health_serving st = az_health_status(h, q->service);
    if (st == AZ_HEALTH_SERVICE_UNKNOWN)
        return az_fail(msg, AZ_ERR_NOT_FOUND, "unknown service %s", q->service);
    Grpc__Health__V1__HealthCheckResponse *r = az_arena_alloc(az_call_arena(c), sizeof *r);
    if (!r) return az_fail(msg, AZ_ERR_NOMEM, "out of memory");
    grpc__health__v1__health_check_response__init(r);
    r->status = (Grpc__Health__V1__HealthCheckResponse__ServingStatus)st;
    *resp = &r->base;
    return AZ_OK;
}

/* Runs exactly once per Watch call, when it is over: drops the list's reference (unless
 * shutdown already did) and frees the watcher. */
static void watcher_done(az_call *c, void *arg)
{
    watcher *w = arg;
    az_health *h = w->h;
    pthread_mutex_lock(&h->mu);
    int listed = w->in_list;
    if (listed) unlink_locked(h, w);
    pthread_mutex_unlock(&h->mu);
    if (listed) az_call_unref(c);
    free(w);
}

static az_err health_watch(az_call *c, const ProtobufCMessage *req, char *msg)
{
    az_health *h = az_call_data(c);
    const Grpc__Health__V1__HealthCheckRequest *q = (const Grpc__Health__V1__HealthCheckRequest *)req;
    size_t len = strlen(q->service);
    watcher *w = calloc(1, sizeof *w + len + 1);
    if (!w) return az_fail(msg, AZ_ERR_NOMEM, "out of memory");
    memcpy(w->service, q->service, len + 1);
    w->h = h;
    w->c = c;

    pthread_mutex_lock(&h->mu);
    if (h->shutting_down) {
        pthread_mutex_unlock(&h->mu);
        free(w);
        return az_fail(msg, AZ_ERR_UNAVAILABLE, "server shutting down");
    }
    az_call_ref(c);
    w->next = h->watchers;
    if (h->watchers) h->watchers->prev = w;
    h->watchers = w;
    w->in_list = 1;
    /* The first message goes out under mu, so no change can overtake it. */
    w->last = status_locked(h, w->service);
    send_status(c, w->last);
    pthread_mutex_unlock(&h->mu);
    /* Registered outside mu: it runs at once, on this thread, if the call is already over.
     * Until then w stays valid even if shutdown unlinks it: only the hook frees it. */
    az_call_on_done(c, watcher_done, w);
    return AZ_OK;
}

/* ---------------------------------------------------------------- public */

az_health *az_health_new(int check_interval_ms)
{
    az_health *h = calloc(1, sizeof *h);
    if (!h) return NULL;
    h->interval_ms = check_interval_ms > 0 ? check_interval_ms : DEFAULT_INTERVAL_MS;
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    /* Interval timing must not jump with the wall clock. */
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&h->cv, &ca);
    pthread_condattr_destroy(&ca);
    pthread_mutex_init(&h->mu, NULL);
    pthread_mutex_init(&h->run_mu, NULL);
    h->methods[0] = (az_method){
        .path = "/grpc.health.v1.Health/Check",
        .kind = AZ_RPC_UNARY,
        .input = &grpc__health__v1__health_check_request__descriptor,
        .output = &grpc__health__v1__health_check_response__descriptor,
        .unary = health_check,
        .data = h,
    };
    h->methods[1] = (az_method){
        .path = "/grpc.health.v1.Health/Watch",
        .kind = AZ_RPC_SERVER_STREAM,
        .input = &grpc__health__v1__health_check_request__descriptor,
        .output = &grpc__health__v1__health_check_response__descriptor,
        .stream = health_watch,
        .data = h,
    };
    return h;
}

void az_health_free(az_health *h)
{
    if (!h) return;
    az_health_shutdown(h);
    pthread_mutex_lock(&h->mu);
    h->stop = 1;
    pthread_cond_broadcast(&h->cv);
    int joinable = h->thread_started;
    pthread_mutex_unlock(&h->mu);
    if (joinable) pthread_join(h->thread, NULL);
    for (size_t i = 0; i < h->nservices; i++) free(h->services[i]);
    free(h->services);
    pthread_mutex_destroy(&h->mu);
    pthread_mutex_destroy(&h->run_mu);
    pthread_cond_destroy(&h->cv);
    free(h);
}

az_err az_health_add_check(az_health *h, const char *name, az_health_check_fn fn, void *arg,
                           char *msg)
{
    if (!fn || !name || !name[0])
        return az_fail(msg, AZ_ERR_INVALID, "health check needs a name and a function");
    az_err err = AZ_OK;
    pthread_mutex_lock(&h->mu);
    if (h->started || h->shutting_down)
        err = az_fail(msg, AZ_ERR_PRECONDITION, "health check %s added after start", name);
    else if (h->nchecks == AZ_HEALTH_MAX_CHECKS)
        err = az_fail(msg, AZ_ERR_EXHAUSTED, "health check %s: at most %d checks", name,
                      AZ_HEALTH_MAX_CHECKS);
    else {
        check *k = &h->checks[h->nchecks++];
        snprintf(k->name, sizeof k->name, "%s", name);
        k->fn = fn;
        k->arg = arg;
    }
    pthread_mutex_unlock(&h->mu);
    return err;
}

az_err az_health_add_service(az_health *h, const char *service, char *msg)
{
    if (!service) return az_fail(msg, AZ_ERR_INVALID, "health service name is NULL");
    char *copy = strdup(service);
    if (!copy) return az_fail(msg, AZ_ERR_NOMEM, "out of memory");
    pthread_mutex_lock(&h->mu);
    if (known_locked(h, service)) {
        pthread_mutex_unlock(&h->mu);
        free(copy);
        return AZ_OK;
    }
    if (h->nservices == h->capservices) {
        size_t nc = h->capservices ? h->capservices * 2 : 8;
        char **ns = realloc(h->services, nc * sizeof *ns);
        if (!ns) {
            pthread_mutex_unlock(&h->mu);
            free(copy);
            return az_fail(msg, AZ_ERR_NOMEM, "out of memory");
        }
        h->services = ns;
        h->capservices = nc;
    }
    h->services[h->nservices++] = copy;
    notify_locked(h); /* watchers of a so far unknown name learn its status */
    pthread_mutex_unlock(&h->mu);
    return AZ_OK;
}

az_err az_health_start(az_health *h, char *msg)
{
    pthread_mutex_lock(&h->mu);
    if (h->started || h->shutting_down) {
        pthread_mutex_unlock(&h->mu);
        return az_fail(msg, AZ_ERR_PRECONDITION, "health already started or shut down");
    }
    h->started = 1;
    pthread_mutex_unlock(&h->mu);

    run_checks(h);

    pthread_mutex_lock(&h->mu);
    int rc = pthread_create(&h->thread, NULL, checker_main, h);
    if (rc == 0) h->thread_started = 1;
    pthread_mutex_unlock(&h->mu);
    if (rc != 0)
        return az_fail(msg, AZ_ERR_INTERNAL, "cannot start health checker thread: %s", strerror(rc));
    return AZ_OK;
}

void az_health_shutdown(az_health *h)
{
    pthread_mutex_lock(&h->mu);
    if (h->shutting_down) {
        pthread_mutex_unlock(&h->mu);
        return;
    }
    h->shutting_down = 1;
    pthread_cond_broadcast(&h->cv);
    notify_locked(h); /* every known service turns NOT_SERVING */
    int was_started = h->started;
    pthread_mutex_unlock(&h->mu);
    if (was_started) az_info("health: shutting down, not serving");

    /* Finish outside mu, one stream at a time: the list's reference keeps each call alive
     * after unlinking, while its done hook may free the watcher concurrently. */
    for (;;) {
        pthread_mutex_lock(&h->mu);
        watcher *w = h->watchers;
        az_call *c = NULL;
        if (w) {
            c = w->c;
            unlink_locked(h, w);
        }
        pthread_mutex_unlock(&h->mu);
        if (!c) break;
        az_call_finish(c, AZ_ERR_UNAVAILABLE, "server shutting down");
        az_call_unref(c);
    }
}

const az_method *az_health_methods(az_health *h, size_t *n)
{
    *n = 2;
    return h->methods;
}

az_health_serving az_health_status(az_health *h, const char *service)
{
    pthread_mutex_lock(&h->mu);
    az_health_serving st = status_locked(h, service ? service : "");
    pthread_mutex_unlock(&h->mu);
    return st;
}

void az_health_run_checks(az_health *h)
{
    run_checks(h);
}
