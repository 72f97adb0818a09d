/* CUnit suite for server/gateway/upstream, the gateway's asynchronous gRPC client, against a real
 * gRPC server started in-process with the project's runtime (rpc/rpc.h) on 127.0.0.1:0: the
 * order and thread of HEADERS / MESSAGE / STATUS for unary calls and errors, request metadata
 * reaching the handler, server streams delivering one message per az_upcall_read and STATUS only
 * after the last message (also when the stream ends with an error), cancellation, deadlines, an
 * unreachable upstream, the max_streams limit, illegal metadata, az_upstream_open_calls, and
 * az_upstream_free waiting for the STATUS of calls still open. Callbacks run on the upstream's
 * thread: they record into a mutex-protected log and the test thread asserts on it. */
#include <CUnit/Basic.h>
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "gateway/upstream.h"
#include "google/protobuf/empty.pb-c.h"
#include "google/protobuf/wrappers.pb-c.h"
#include "core/log.h"
#include "rpc/rpc.h"

#define SVC "/azup.Svc/"
typedef Google__Protobuf__StringValue StringValue;
typedef Google__Protobuf__Int64Value Int64Value;
typedef Google__Protobuf__Empty Empty;
#define STRING_DESC (&google__protobuf__string_value__descriptor)
#define INT64_DESC (&google__protobuf__int64_value__descriptor)
#define EMPTY_DESC (&google__protobuf__empty__descriptor)

/* gRPC status codes used here */
enum { ST_OK = 0, ST_CANCELLED = 1, ST_DEADLINE = 4, ST_NOT_FOUND = 5, ST_EXHAUSTED = 8,
       ST_UNAVAILABLE = 14 };

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

static int wait_atomic(atomic_int *v, int want, int timeout_ms)
{
    int64_t until = now_ms() + timeout_ms;
    while (atomic_load(v) < want) {
        if (now_ms() > until) return 0;
        sleep_ms(2);
    }
    return 1;
}

/* ---------------------------------------------------------------- the server */

static struct {
    atomic_int block_entered, block_ended;
    atomic_int hang_started, hang_done;
} g;

static az_err h_echo(az_call *c, const ProtobufCMessage *req, ProtobufCMessage **resp, char *msg)
{
    StringValue *out = az_arena_alloc(az_call_arena(c), sizeof *out);
    if (!out) return az_fail(msg, AZ_ERR_NOMEM, "out of memory");
    google__protobuf__string_value__init(out);
    out->value = az_arena_printf(az_call_arena(c), "echo:%s", ((const StringValue *)req)->value);
    *resp = &out->base;
    return out->value ? AZ_OK : az_fail(msg, AZ_ERR_NOMEM, "out of memory");
}

static az_err h_fail(az_call *c, const ProtobufCMessage *req, ProtobufCMessage **resp, char *msg)
{
    (void)c;
    (void)resp;
    return az_fail(msg, AZ_ERR_NOT_FOUND, "agent %s not found", ((const StringValue *)req)->value);
}

/* Reports the request metadata the handler sees. */
static az_err h_meta(az_call *c, const ProtobufCMessage *req, ProtobufCMessage **resp, char *msg)
{
    (void)req;
    const char *rid = az_call_metadata(c, "x-request-id");
    const char *custom = az_call_metadata(c, "x-custom");
    const char *absent = az_call_metadata(c, "x-absent");
    StringValue *out = az_arena_alloc(az_call_arena(c), sizeof *out);
    if (!out) return az_fail(msg, AZ_ERR_NOMEM, "out of memory");
    google__protobuf__string_value__init(out);
    out->value = az_arena_printf(az_call_arena(c), "rid=%s custom=%s absent=%s reqid=%s",
                                 rid ? rid : "(null)", custom ? custom : "(null)",
                                 absent ? absent : "(null)", az_call_request_id(c));
    *resp = &out->base;
    return out->value ? AZ_OK : az_fail(msg, AZ_ERR_NOMEM, "out of memory");
}

/* Blocks until the call is cancelled (deadline or client), at most 5 s. */
static az_err h_block(az_call *c, const ProtobufCMessage *req, ProtobufCMessage **resp, char *msg)
{
    (void)req;
    (void)resp;
    atomic_fetch_add(&g.block_entered, 1);
    int64_t until = now_ms() + 5000;
    while (!az_call_cancelled(c) && now_ms() < until) sleep_ms(2);
    atomic_fetch_add(&g.block_ended, 1);
    return az_fail(msg, AZ_ERR_CANCELLED, "gave up");
}

static az_err send_count(az_call *c, int64_t n, char *msg)
{
    for (int64_t i = 0; i < n; i++) {
        Int64Value v = GOOGLE__PROTOBUF__INT64_VALUE__INIT;
        v.value = i;
        az_err err = az_call_send(c, &v.base);
        if (err) return az_fail(msg, err, "send %d failed", (int)i);
    }
    return AZ_OK;
}

/* Sends 0..n-1, then OK. */
static az_err s_count(az_call *c, const ProtobufCMessage *req, char *msg)
{
    az_err err = send_count(c, ((const Int64Value *)req)->value, msg);
    if (err) return err;
    az_call_finish(c, AZ_OK, NULL);
    return AZ_OK;
}

/* Sends 0..n-1, then RESOURCE_EXHAUSTED. */
static az_err s_count_fail(az_call *c, const ProtobufCMessage *req, char *msg)
{
    az_err err = send_count(c, ((const Int64Value *)req)->value, msg);
    if (err) return err;
    az_call_finish(c, AZ_ERR_EXHAUSTED, "quota used up");
    return AZ_OK;
}

static void hang_done_hook(az_call *c, void *arg)
{
    (void)c;
    (void)arg;
    atomic_fetch_add(&g.hang_done, 1);
}

/* One message (42), then open until the client or the server ends it. */
static az_err s_hang(az_call *c, const ProtobufCMessage *req, char *msg)
{
    (void)req;
    az_call_on_done(c, hang_done_hook, NULL);
    atomic_fetch_add(&g.hang_started, 1);
    Int64Value v = GOOGLE__PROTOBUF__INT64_VALUE__INIT;
    v.value = 42;
    return az_call_send(c, &v.base) == AZ_OK ? AZ_OK
                                              : az_fail(msg, AZ_ERR_INTERNAL, "send failed");
}

static const az_method methods[] = {
    {SVC "Echo", AZ_RPC_UNARY, STRING_DESC, STRING_DESC, h_echo, NULL, NULL, NULL},
    {SVC "Fail", AZ_RPC_UNARY, STRING_DESC, STRING_DESC, h_fail, NULL, NULL, NULL},
    {SVC "Meta", AZ_RPC_UNARY, EMPTY_DESC, STRING_DESC, h_meta, NULL, NULL, NULL},
    {SVC "Block", AZ_RPC_UNARY, EMPTY_DESC, EMPTY_DESC, h_block, NULL, NULL, NULL},
    {SVC "Count", AZ_RPC_SERVER_STREAM, INT64_DESC, INT64_DESC, NULL, s_count, NULL, NULL},
    {SVC "CountFail", AZ_RPC_SERVER_STREAM, INT64_DESC, INT64_DESC, NULL, s_count_fail, NULL, NULL},
    {SVC "Hang", AZ_RPC_SERVER_STREAM, EMPTY_DESC, INT64_DESC, NULL, s_hang, NULL, NULL},
};

static az_server *srv;
static char target[64];
static az_upstream *U; /* shared by most tests */
static pthread_t main_thread;

/* ---------------------------------------------------------------- the event log */

#define MAXEV 600

typedef struct rec {
    az_upev_kind kind;
    int status;
    char details[AZ_MSG_MAX];
    int64_t value;   /* Int64Value responses */
    char text[160];  /* StringValue responses */
    int parsed;      /* the MESSAGE parsed as resp_desc */
    char rid[64];    /* HEADERS: the x-request-id the server echoed, "" when absent */
    pthread_t thr;
} rec;

typedef struct cctx {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    rec *ev;
    int n;
    int statuses;
    int kind_bad; /* an event kind outside the enum */
    az_upcall *call;
    int auto_read;         /* ask for the next message from the MESSAGE callback */
    int release_on_status; /* release the handle from the STATUS callback */
    int released;
    int double_read;       /* on the second MESSAGE, call az_upcall_read twice from the callback */
    int messages;
    int no_cleanup;        /* its upstream is being freed: the test may not touch the call */
    const ProtobufCMessageDescriptor *resp_desc;
    struct cctx *next_ctx; /* the registry */
} cctx;

static void cctx_init(cctx *x, const ProtobufCMessageDescriptor *resp_desc)
{
    memset(x, 0, sizeof *x);
    pthread_mutex_init(&x->mu, NULL);
    pthread_condattr_t a;
    pthread_condattr_init(&a);
    pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
    pthread_cond_init(&x->cv, &a);
    pthread_condattr_destroy(&a);
    x->ev = calloc(MAXEV, sizeof *x->ev);
    x->resp_desc = resp_desc;
}

static void cctx_destroy(cctx *x)
{
    free(x->ev);
    pthread_mutex_destroy(&x->mu);
    pthread_cond_destroy(&x->cv);
    free(x);
}

/* Every context ever made, so that a test stopped by a failed assertion cannot leave a call
 * open behind it (the next tests and az_upstream_free would wait for it): see cleanup_calls. */
static pthread_mutex_t registry_mu = PTHREAD_MUTEX_INITIALIZER;
static cctx *registry;

static cctx *cctx_new(const ProtobufCMessageDescriptor *resp_desc)
{
    cctx *x = calloc(1, sizeof *x);
    if (!x) abort();
    cctx_init(x, resp_desc);
    if (!x->ev) abort();
    pthread_mutex_lock(&registry_mu);
    x->next_ctx = registry;
    registry = x;
    pthread_mutex_unlock(&registry_mu);
    return x;
}

static void md_value(const grpc_metadata_array *md, const char *key, char *out, size_t cap)
{
    out[0] = '\0';
    if (!md) return;
    for (size_t i = 0; i < md->count; i++) {
        if (grpc_slice_str_cmp(md->metadata[i].key, key) != 0) continue;
        size_t n = GRPC_SLICE_LENGTH(md->metadata[i].value);
        if (n >= cap) n = cap - 1;
        memcpy(out, GRPC_SLICE_START_PTR(md->metadata[i].value), n);
        out[n] = '\0';
        return;
    }
}

static void on_event(void *arg, const az_upev *ev)
{
    cctx *x = arg;
    pthread_mutex_lock(&x->mu);
    if (x->n < MAXEV && x->ev) {
        rec *r = &x->ev[x->n];
        r->kind = ev->kind;
        r->thr = pthread_self();
        if (ev->kind > AZ_UPEV_STATUS) x->kind_bad = 1;
        if (ev->kind == AZ_UPEV_HEADERS) md_value(ev->md, "x-request-id", r->rid, sizeof r->rid);
        if (ev->kind == AZ_UPEV_STATUS) {
            r->status = ev->status;
            snprintf(r->details, sizeof r->details, "%s", ev->details ? ev->details : "(null)");
        }
        if (ev->kind == AZ_UPEV_MESSAGE && x->resp_desc) {
            ProtobufCMessage *m = protobuf_c_message_unpack(x->resp_desc, NULL, ev->len, ev->data);
            if (m) {
                r->parsed = 1;
                if (x->resp_desc == INT64_DESC) r->value = ((Int64Value *)m)->value;
                if (x->resp_desc == STRING_DESC)
                    snprintf(r->text, sizeof r->text, "%s", ((StringValue *)m)->value);
                protobuf_c_message_free_unpacked(m, NULL);
            }
        }
    }
    x->n++;
    int rd = 0, rel = 0, dbl = 0;
    if (ev->kind == AZ_UPEV_MESSAGE && ++x->messages == 2 && x->double_read && x->call) dbl = 1;
    if (ev->kind == AZ_UPEV_STATUS) {
        x->statuses++;
        if (x->release_on_status && x->call && !x->released) rel = x->released = 1;
    }
    if (ev->kind == AZ_UPEV_MESSAGE && x->auto_read && x->call) rd = 1;
    az_upcall *c = x->call;
    pthread_cond_broadcast(&x->cv);
    pthread_mutex_unlock(&x->mu);
    if (rd) az_upcall_read(c);
    if (dbl) {
        /* two reads before the next MESSAGE callback can possibly run (callbacks are serial) */
        az_upcall_read(c);
        az_upcall_read(c);
    }
    if (rel) az_upcall_release(c);
}

/* Waits until the log holds at least n events; returns 1 when it does. */
static int wait_events(cctx *x, int n, int timeout_ms)
{
    struct timespec until;
    clock_gettime(CLOCK_MONOTONIC, &until);
    until.tv_sec += timeout_ms / 1000;
    until.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    if (until.tv_nsec >= 1000000000L) until.tv_sec++, until.tv_nsec -= 1000000000L;
    pthread_mutex_lock(&x->mu);
    while (x->n < n)
        if (pthread_cond_timedwait(&x->cv, &x->mu, &until) == ETIMEDOUT) break;
    int ok = x->n >= n;
    pthread_mutex_unlock(&x->mu);
    return ok;
}

static int wait_status(cctx *x, int timeout_ms)
{
    struct timespec until;
    clock_gettime(CLOCK_MONOTONIC, &until);
    until.tv_sec += timeout_ms / 1000;
    until.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    if (until.tv_nsec >= 1000000000L) until.tv_sec++, until.tv_nsec -= 1000000000L;
    pthread_mutex_lock(&x->mu);
    while (x->statuses < 1)
        if (pthread_cond_timedwait(&x->cv, &x->mu, &until) == ETIMEDOUT) break;
    int ok = x->statuses >= 1;
    pthread_mutex_unlock(&x->mu);
    return ok;
}

static int count_of(cctx *x)
{
    pthread_mutex_lock(&x->mu);
    int n = x->n;
    pthread_mutex_unlock(&x->mu);
    return n;
}

static int statuses_of(cctx *x)
{
    pthread_mutex_lock(&x->mu);
    int n = x->statuses;
    pthread_mutex_unlock(&x->mu);
    return n;
}

static const char *kind_name(az_upev_kind k)
{
    return k == AZ_UPEV_HEADERS ? "HEADERS" : k == AZ_UPEV_MESSAGE ? "MESSAGE" : "STATUS";
}

static void dump(cctx *x, const char *what)
{
    pthread_mutex_lock(&x->mu);
    fprintf(stderr, "\n  %s: %d events:", what, x->n);
    for (int i = 0; i < x->n && i < MAXEV && i < 40; i++) {
        rec *r = &x->ev[i];
        if (r->kind == AZ_UPEV_STATUS) fprintf(stderr, " STATUS(%d,%s)", r->status, r->details);
        else if (r->kind == AZ_UPEV_MESSAGE) fprintf(stderr, " MESSAGE(%lld)", (long long)r->value);
        else fprintf(stderr, " %s", kind_name(r->kind));
    }
    fprintf(stderr, "\n");
    pthread_mutex_unlock(&x->mu);
}

/* The status of the log's STATUS event (-1 when none), checking it is the last and only one. */
static int final_status(cctx *x)
{
    pthread_mutex_lock(&x->mu);
    int st = -1, where = -1, count = 0;
    for (int i = 0; i < x->n && i < MAXEV; i++)
        if (x->ev[i].kind == AZ_UPEV_STATUS) st = x->ev[i].status, where = i, count++;
    int n = x->n;
    pthread_mutex_unlock(&x->mu);
    CU_ASSERT_EQUAL(count, 1);
    CU_ASSERT_EQUAL(where, n - 1);
    return st;
}

/* Every event ran on one thread that is not the test thread; also the same thread as other's
 * (NULL: no comparison) when both have events. */
static void check_thread(cctx *x, cctx *other)
{
    pthread_mutex_lock(&x->mu);
    int same = 1, on_main = 0;
    for (int i = 0; i < x->n && i < MAXEV; i++) {
        if (!pthread_equal(x->ev[i].thr, x->ev[0].thr)) same = 0;
        if (pthread_equal(x->ev[i].thr, main_thread)) on_main = 1;
    }
    pthread_t t = x->ev[0].thr;
    int n = x->n;
    pthread_mutex_unlock(&x->mu);
    CU_ASSERT(n > 0);
    CU_ASSERT(same);
    CU_ASSERT(!on_main);
    if (other && n > 0) {
        pthread_mutex_lock(&other->mu);
        if (other->n > 0) CU_ASSERT(pthread_equal(other->ev[0].thr, t));
        pthread_mutex_unlock(&other->mu);
    }
}

/* Starts a call recording into x. */
static az_err start(az_upstream *u, cctx *x, const char *method, int streaming,
                    const ProtobufCMessage *req, const az_upmd *md, size_t nmd, int64_t timeout_ms,
                    char *msg)
{
    uint8_t buf[256];
    size_t len = req ? protobuf_c_message_pack(req, buf) : 0;
    az_upcall_opts o = {.method = method, .streaming = streaming, .md = md, .nmd = nmd,
                        .timeout_ms = timeout_ms, .request = buf, .request_len = len,
                        .fn = on_event, .arg = x};
    az_upcall *c = (az_upcall *)1;
    msg[0] = '\0';
    az_err err = az_upcall_start(u, &o, &c, msg);
    if (err) {
        CU_ASSERT_PTR_NULL(c);
        return err;
    }
    CU_ASSERT_PTR_NOT_NULL(c);
    /* events may have come before the handle was known: catch up on what the callback could
     * not do */
    pthread_mutex_lock(&x->mu);
    x->call = c;
    int rd = x->auto_read && x->n > 0 && x->n <= MAXEV && x->ev[x->n - 1].kind == AZ_UPEV_MESSAGE;
    int rel = x->release_on_status && x->statuses > 0 && !x->released;
    if (rel) x->released = 1;
    pthread_mutex_unlock(&x->mu);
    if (rd) az_upcall_read(c);
    if (rel) az_upcall_release(c);
    return AZ_OK;
}

static void release(cctx *x)
{
    pthread_mutex_lock(&x->mu);
    az_upcall *c = x->released ? NULL : x->call;
    x->released = 1;
    pthread_mutex_unlock(&x->mu);
    az_upcall_release(c);
}

/* Cancels and releases every call a test left behind (it failed half-way). */
static void cleanup_calls(void)
{
    pthread_mutex_lock(&registry_mu);
    cctx *list = registry;
    pthread_mutex_unlock(&registry_mu);
    for (cctx *x = list; x; x = x->next_ctx) {
        pthread_mutex_lock(&x->mu);
        az_upcall *c = x->call && !x->released && !x->no_cleanup ? x->call : NULL;
        int has_status = x->statuses > 0;
        pthread_mutex_unlock(&x->mu);
        if (!c) continue;
        if (!has_status) {
            fprintf(stderr, "\n  (cleanup: a call left open is cancelled)\n");
            az_upcall_cancel(c);
            wait_status(x, 3000);
        }
        release(x);
    }
}

static int wait_open_calls(az_upstream *u, int want, int timeout_ms)
{
    int64_t until = now_ms() + timeout_ms;
    while (az_upstream_open_calls(u) != want) {
        if (now_ms() > until) return 0;
        sleep_ms(2);
    }
    return 1;
}

static void *free_upstream_thread(void *arg)
{
    az_upstream_free(arg);
    return NULL;
}

/* az_upstream_free bounded by timeout_ms; returns 1 when it returned in time (otherwise the
 * thread is left stuck). */
static int free_within(az_upstream *u, int timeout_ms)
{
    pthread_t t;
    if (pthread_create(&t, NULL, free_upstream_thread, u) != 0) return 0;
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += timeout_ms / 1000;
    until.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    if (until.tv_nsec >= 1000000000L) until.tv_sec++, until.tv_nsec -= 1000000000L;
    if (pthread_timedjoin_np(t, NULL, &until) == 0) return 1;
    pthread_detach(t);
    return 0;
}

/* Frees a test's own upstream once its calls are over; a call the test left open (it failed)
 * is cancelled first, so a failure cannot turn into a hang. */
static void free_upstream(az_upstream *u)
{
    cleanup_calls();
    int ok = free_within(u, 10000);
    if (!ok) fprintf(stderr, "\n  az_upstream_free is stuck\n");
    CU_ASSERT(ok);
}

static az_upstream *upstream(az_upstream_config cfg)
{
    char msg[AZ_MSG_MAX] = "";
    if (!cfg.target) cfg.target = target;
    az_upstream *u = NULL;
    az_err err = az_upstream_new(&cfg, &u, msg);
    if (err) fprintf(stderr, "\n  az_upstream_new: %s\n", msg);
    CU_ASSERT_EQUAL(err, AZ_OK);
    return u;
}

static int suite_init(void)
{
    main_thread = pthread_self();
    char msg[AZ_MSG_MAX] = "";
    const az_method *tables[1] = {methods};
    size_t counts[1] = {sizeof methods / sizeof *methods};
    az_server_config cfg = {.listen = "127.0.0.1:0", .threads = 4, .shutdown_grace_ms = 1000};
    srv = az_server_new(&cfg, tables, counts, 1, msg);
    if (!srv) {
        fprintf(stderr, "\n  az_server_new: %s\n", msg);
        return 1;
    }
    if (az_server_start(srv, msg) != AZ_OK) {
        fprintf(stderr, "\n  az_server_start: %s\n", msg);
        return 1;
    }
    snprintf(target, sizeof target, "127.0.0.1:%d", az_server_port(srv));
    az_upstream_config ucfg = {.target = target};
    if (az_upstream_new(&ucfg, &U, msg) != AZ_OK) {
        fprintf(stderr, "\n  az_upstream_new: %s\n", msg);
        return 1;
    }
    return 0;
}

static int suite_clean(void)
{
    cleanup_calls();
    /* a stuck az_upstream_free fails the suite instead of hanging it */
    int stuck = 0;
    if (U && !free_within(U, 10000)) {
        fprintf(stderr, "\n  az_upstream_free of the shared upstream is stuck\n");
        stuck = 1;
    }
    U = NULL;
    if (srv && !stuck) {
        az_server_shutdown(srv);
        az_server_free(srv);
    }
    srv = NULL;
    /* contexts whose call is over (the others may still be called back) */
    pthread_mutex_lock(&registry_mu);
    cctx **pp = &registry;
    while (*pp) {
        cctx *x = *pp;
        pthread_mutex_lock(&x->mu);
        int over = !x->call || (x->statuses > 0 && x->released);
        pthread_mutex_unlock(&x->mu);
        if (over && !stuck) {
            *pp = x->next_ctx;
            cctx_destroy(x);
        } else {
            pp = &x->next_ctx;
        }
    }
    pthread_mutex_unlock(&registry_mu);
    return stuck;
}

/* ---------------------------------------------------------------- unary */

static void test_unary_ok(void)
{
    cctx *x = cctx_new(STRING_DESC);
    StringValue req = GOOGLE__PROTOBUF__STRING_VALUE__INIT;
    req.value = "hi";
    char msg[AZ_MSG_MAX];
    CU_ASSERT_EQUAL_FATAL(start(U, x, SVC "Echo", 0, &req.base, NULL, 0, 5000, msg), AZ_OK);
    CU_ASSERT(wait_status(x, 5000));
    sleep_ms(50); /* nothing may follow STATUS */
    if (count_of(x) != 3) dump(x, "unary");
    CU_ASSERT_EQUAL_FATAL(count_of(x), 3);
    CU_ASSERT_EQUAL(x->ev[0].kind, AZ_UPEV_HEADERS);
    CU_ASSERT_EQUAL(x->ev[1].kind, AZ_UPEV_MESSAGE);
    CU_ASSERT_EQUAL(x->ev[1].parsed, 1);
    CU_ASSERT_STRING_EQUAL(x->ev[1].text, "echo:hi");
    CU_ASSERT_EQUAL(x->ev[2].kind, AZ_UPEV_STATUS);
    CU_ASSERT_EQUAL(x->ev[2].status, ST_OK);
    CU_ASSERT_STRING_EQUAL(x->ev[2].details, "");
    CU_ASSERT_EQUAL(x->kind_bad, 0);
    check_thread(x, NULL);
    release(x);
    CU_ASSERT(wait_open_calls(U, 0, 2000));

    /* an empty request and response text */
    cctx *y = cctx_new(STRING_DESC);
    req.value = "";
    CU_ASSERT_EQUAL_FATAL(start(U, y, SVC "Echo", 0, &req.base, NULL, 0, 5000, msg), AZ_OK);
    CU_ASSERT(wait_status(y, 5000));
    CU_ASSERT_EQUAL(final_status(y), ST_OK);
    CU_ASSERT_EQUAL(count_of(y), 3);
    CU_ASSERT_STRING_EQUAL(y->ev[1].text, "echo:");
    check_thread(y, x); /* one completion-queue thread for every call */
    release(y);
}

static void test_unary_error(void)
{
    cctx *x = cctx_new(STRING_DESC);
    StringValue req = GOOGLE__PROTOBUF__STRING_VALUE__INIT;
    req.value = "x";
    char msg[AZ_MSG_MAX];
    CU_ASSERT_EQUAL_FATAL(start(U, x, SVC "Fail", 0, &req.base, NULL, 0, 5000, msg), AZ_OK);
    CU_ASSERT(wait_status(x, 5000));
    sleep_ms(30);
    CU_ASSERT_EQUAL(final_status(x), ST_NOT_FOUND);
    pthread_mutex_lock(&x->mu);
    int messages = 0, headers = 0, headers_first = 1;
    for (int i = 0; i < x->n; i++) {
        if (x->ev[i].kind == AZ_UPEV_MESSAGE) messages++;
        if (x->ev[i].kind == AZ_UPEV_HEADERS) headers++, headers_first &= i == 0;
    }
    char details[AZ_MSG_MAX];
    snprintf(details, sizeof details, "%s", x->n ? x->ev[x->n - 1].details : "");
    pthread_mutex_unlock(&x->mu);
    CU_ASSERT_EQUAL(messages, 0);
    CU_ASSERT(headers <= 1);
    CU_ASSERT(headers_first);
    CU_ASSERT_STRING_EQUAL(details, "agent x not found");
    check_thread(x, NULL);
    release(x);

    /* an unknown method is an error status too, not a failed start */
    cctx *y = cctx_new(STRING_DESC);
    CU_ASSERT_EQUAL_FATAL(start(U, y, "/azup.Svc/Nope", 0, &req.base, NULL, 0, 5000, msg), AZ_OK);
    CU_ASSERT(wait_status(y, 5000));
    CU_ASSERT_EQUAL(final_status(y), 12);
    release(y);
}

static void test_metadata(void)
{
    cctx *x = cctx_new(STRING_DESC);
    const az_upmd md[] = {
        {"x-request-id", "req-42", 6},
        {"x-custom", "hello world", 11},
        {"x-trace-bin", "\x00\x01\xff", 3}, /* binary values are legal on -bin keys */
    };
    Empty req = GOOGLE__PROTOBUF__EMPTY__INIT;
    char msg[AZ_MSG_MAX];
    az_err err = start(U, x, SVC "Meta", 0, &req.base, md, 3, 5000, msg);
    if (err) fprintf(stderr, "\n  start: %s\n", msg);
    CU_ASSERT_EQUAL_FATAL(err, AZ_OK);
    CU_ASSERT(wait_status(x, 5000));
    CU_ASSERT_EQUAL(final_status(x), ST_OK);
    CU_ASSERT_EQUAL_FATAL(count_of(x), 3);
    CU_ASSERT_STRING_EQUAL(x->ev[1].text,
                           "rid=req-42 custom=hello world absent=(null) reqid=req-42");
    /* the server's initial metadata (its x-request-id) came with HEADERS */
    CU_ASSERT_EQUAL(x->ev[0].kind, AZ_UPEV_HEADERS);
    CU_ASSERT_STRING_EQUAL(x->ev[0].rid, "req-42");
    release(x);

    /* value_len bounds the value */
    cctx *y = cctx_new(STRING_DESC);
    const az_upmd md2[] = {{"x-custom", "abcdef", 3}};
    CU_ASSERT_EQUAL_FATAL(start(U, y, SVC "Meta", 0, &req.base, md2, 1, 5000, msg), AZ_OK);
    CU_ASSERT(wait_status(y, 5000));
    CU_ASSERT_EQUAL(final_status(y), ST_OK);
    CU_ASSERT_PTR_NOT_NULL(strstr(y->ev[1].text, "custom=abc absent"));
    release(y);
}

/* ---------------------------------------------------------------- server streams */

static void test_stream_one_message_per_read(void)
{
    cctx *x = cctx_new(INT64_DESC);
    x->double_read = 1;
    Int64Value req = GOOGLE__PROTOBUF__INT64_VALUE__INIT;
    req.value = 5;
    char msg[AZ_MSG_MAX];
    CU_ASSERT_EQUAL_FATAL(start(U, x, SVC "Count", 1, &req.base, NULL, 0, 10000, msg), AZ_OK);
    /* HEADERS, then the first message without a read */
    CU_ASSERT_FATAL(wait_events(x, 2, 5000));
    sleep_ms(100); /* the server has sent all five: only one may be delivered */
    if (count_of(x) != 2) dump(x, "before the first read");
    CU_ASSERT_EQUAL_FATAL(count_of(x), 2);
    CU_ASSERT_EQUAL(x->ev[0].kind, AZ_UPEV_HEADERS);
    CU_ASSERT_EQUAL(x->ev[1].kind, AZ_UPEV_MESSAGE);
    CU_ASSERT_EQUAL(x->ev[1].value, 0);
    /* one read, one message; its callback then reads twice, which asks for one more message
     * only (no other MESSAGE callback can come between two calls made inside a callback) */
    az_upcall_read(x->call);
    CU_ASSERT_FATAL(wait_events(x, 4, 5000));
    sleep_ms(100);
    if (count_of(x) != 4) dump(x, "after a double read in the callback");
    CU_ASSERT_EQUAL_FATAL(count_of(x), 4);
    CU_ASSERT_EQUAL(x->ev[2].kind, AZ_UPEV_MESSAGE);
    CU_ASSERT_EQUAL(x->ev[2].value, 1);
    CU_ASSERT_EQUAL(x->ev[3].kind, AZ_UPEV_MESSAGE);
    CU_ASSERT_EQUAL(x->ev[3].value, 2);
    for (int i = 3; i < 5; i++) {
        az_upcall_read(x->call);
        CU_ASSERT_FATAL(wait_events(x, 2 + i, 5000));
        sleep_ms(20);
        CU_ASSERT_EQUAL(count_of(x), 2 + i);
        CU_ASSERT_EQUAL(x->ev[1 + i].kind, AZ_UPEV_MESSAGE);
        CU_ASSERT_EQUAL(x->ev[1 + i].value, i);
    }
    /* the read after the last message finds the end */
    az_upcall_read(x->call);
    CU_ASSERT(wait_status(x, 5000));
    CU_ASSERT_EQUAL(final_status(x), ST_OK);
    CU_ASSERT_EQUAL(count_of(x), 7);
    /* reads after STATUS are no-ops */
    az_upcall_read(x->call);
    az_upcall_read(x->call);
    sleep_ms(50);
    CU_ASSERT_EQUAL(count_of(x), 7);
    check_thread(x, NULL);
    release(x);
    CU_ASSERT(wait_open_calls(U, 0, 2000));
}

/* Checks a log of HEADERS, n MESSAGEs 0..n-1 in order and a last STATUS of want. */
static void check_stream_log(cctx *x, int n, int want_status, const char *want_details)
{
    pthread_mutex_lock(&x->mu);
    int ok = x->n == n + 2 && x->ev[0].kind == AZ_UPEV_HEADERS;
    for (int i = 0; ok && i < n; i++)
        ok = x->ev[1 + i].kind == AZ_UPEV_MESSAGE && x->ev[1 + i].parsed && x->ev[1 + i].value == i;
    if (ok) ok = x->ev[n + 1].kind == AZ_UPEV_STATUS && x->ev[n + 1].status == want_status;
    if (ok && want_details) ok = strcmp(x->ev[n + 1].details, want_details) == 0;
    pthread_mutex_unlock(&x->mu);
    if (!ok) dump(x, "stream");
    CU_ASSERT(ok);
}

static void test_stream_many_in_order(void)
{
    /* several streams at once, each reading from its callback */
    enum { STREAMS = 4, N = 150 };
    cctx *x[STREAMS];
    Int64Value req = GOOGLE__PROTOBUF__INT64_VALUE__INIT;
    req.value = N;
    char msg[AZ_MSG_MAX];
    for (int s = 0; s < STREAMS; s++) {
        x[s] = cctx_new(INT64_DESC);
        x[s]->auto_read = 1;
        CU_ASSERT_EQUAL(start(U, x[s], SVC "Count", 1, &req.base, NULL, 0, 20000, msg), AZ_OK);
    }
    for (int s = 0; s < STREAMS; s++) {
        CU_ASSERT(wait_status(x[s], 10000));
        sleep_ms(10);
        check_stream_log(x[s], N, ST_OK, "");
        check_thread(x[s], x[0]);
        release(x[s]);
    }
    CU_ASSERT(wait_open_calls(U, 0, 2000));
    
    /* an empty stream: HEADERS, then STATUS */
    cctx *e = cctx_new(INT64_DESC);
    e->auto_read = 1;
    req.value = 0;
    CU_ASSERT_EQUAL_FATAL(start(U, e, SVC "Count", 1, &req.base, NULL, 0, 5000, msg), AZ_OK);
    CU_ASSERT(wait_status(e, 5000));
    sleep_ms(10);
    check_stream_log(e, 0, ST_OK, "");
    release(e);
}

static void test_stream_error_after_messages(void)
{
    Int64Value req = GOOGLE__PROTOBUF__INT64_VALUE__INIT;
    req.value = 7;
    char msg[AZ_MSG_MAX];
    /* reading from the callback, several times over (a STATUS overtaking a message is a race) */
    for (int round = 0; round < 8; round++) {
        cctx *x = cctx_new(INT64_DESC);
        x->auto_read = 1;
        CU_ASSERT_EQUAL_FATAL(start(U, x, SVC "CountFail", 1, &req.base, NULL, 0, 5000, msg),
                              AZ_OK);
        CU_ASSERT(wait_status(x, 5000));
        sleep_ms(5);
        check_stream_log(x, 7, ST_EXHAUSTED, "quota used up");
        release(x);
    }
    /* a slow reader: the status is in long before the messages are read */
    cctx *y = cctx_new(INT64_DESC);
    CU_ASSERT_EQUAL_FATAL(start(U, y, SVC "CountFail", 1, &req.base, NULL, 0, 10000, msg), AZ_OK);
    CU_ASSERT_FATAL(wait_events(y, 2, 5000));
    sleep_ms(100);
    for (int i = 1; i < 7; i++) {
        CU_ASSERT_EQUAL(statuses_of(y), 0);
        az_upcall_read(y->call);
        CU_ASSERT(wait_events(y, 2 + i, 5000));
        sleep_ms(10);
    }
    az_upcall_read(y->call);
    CU_ASSERT(wait_status(y, 5000));
    sleep_ms(10);
    check_stream_log(y, 7, ST_EXHAUSTED, "quota used up");
    release(y);
}

/* ---------------------------------------------------------------- cancel, deadline */

static void test_cancel(void)
{
    Empty req = GOOGLE__PROTOBUF__EMPTY__INIT;
    char msg[AZ_MSG_MAX];
    /* a stream that stays open after its first message */
    cctx *x = cctx_new(INT64_DESC);
    int done_before = atomic_load(&g.hang_done);
    CU_ASSERT_EQUAL_FATAL(start(U, x, SVC "Hang", 1, &req.base, NULL, 0, 0, msg), AZ_OK);
    CU_ASSERT_FATAL(wait_events(x, 2, 5000));
    CU_ASSERT_EQUAL(x->ev[1].kind, AZ_UPEV_MESSAGE);
    CU_ASSERT_EQUAL(x->ev[1].value, 42);
    az_upcall_read(x->call); /* a read outstanding while it is cancelled */
    sleep_ms(20);
    CU_ASSERT_EQUAL(count_of(x), 2);
    int64_t t0 = now_ms();
    az_upcall_cancel(x->call);
    CU_ASSERT(wait_status(x, 3000));
    int64_t took = now_ms() - t0;
    CU_ASSERT(took < 1000);
    az_upcall_cancel(x->call); /* idempotent */
    az_upcall_read(x->call);
    sleep_ms(50);
    CU_ASSERT_EQUAL(final_status(x), ST_CANCELLED);
    CU_ASSERT_EQUAL(count_of(x), 3);
    CU_ASSERT(wait_atomic(&g.hang_done, done_before + 1, 3000)); /* the server saw it */
    check_thread(x, NULL);
    release(x);

    /* a unary call blocked in its handler */
    cctx *y = cctx_new(EMPTY_DESC);
    int entered = atomic_load(&g.block_entered), ended = atomic_load(&g.block_ended);
    CU_ASSERT_EQUAL_FATAL(start(U, y, SVC "Block", 0, &req.base, NULL, 0, 0, msg), AZ_OK);
    CU_ASSERT(wait_atomic(&g.block_entered, entered + 1, 3000));
    t0 = now_ms();
    az_upcall_cancel(y->call);
    CU_ASSERT(wait_status(y, 3000));
    CU_ASSERT(now_ms() - t0 < 1000);
    sleep_ms(20);
    CU_ASSERT_EQUAL(final_status(y), ST_CANCELLED);
    CU_ASSERT(wait_atomic(&g.block_ended, ended + 1, 3000));
    release(y);

    /* cancelled right after the start: STATUS CANCELLED, once */
    cctx *z = cctx_new(INT64_DESC);
    CU_ASSERT_EQUAL_FATAL(start(U, z, SVC "Hang", 1, &req.base, NULL, 0, 0, msg), AZ_OK);
    az_upcall_cancel(z->call);
    CU_ASSERT(wait_status(z, 3000));
    sleep_ms(50);
    CU_ASSERT_EQUAL(final_status(z), ST_CANCELLED);
    release(z);
    CU_ASSERT(wait_open_calls(U, 0, 3000));
}

static void test_deadline(void)
{
    Empty req = GOOGLE__PROTOBUF__EMPTY__INIT;
    char msg[AZ_MSG_MAX];
    cctx *x = cctx_new(EMPTY_DESC);
    int64_t t0 = now_ms();
    CU_ASSERT_EQUAL_FATAL(start(U, x, SVC "Block", 0, &req.base, NULL, 0, 300, msg), AZ_OK);
    CU_ASSERT(wait_status(x, 5000));
    int64_t took = now_ms() - t0;
    if (took < 250 || took > 3000) fprintf(stderr, "\n  deadline after %lld ms\n", (long long)took);
    CU_ASSERT(took >= 250);
    CU_ASSERT(took < 3000);
    sleep_ms(20);
    CU_ASSERT_EQUAL(final_status(x), ST_DEADLINE);
    release(x);

    /* a stream past its deadline, after its message */
    cctx *y = cctx_new(INT64_DESC);
    y->auto_read = 1;
    t0 = now_ms();
    CU_ASSERT_EQUAL_FATAL(start(U, y, SVC "Hang", 1, &req.base, NULL, 0, 300, msg), AZ_OK);
    CU_ASSERT(wait_status(y, 5000));
    took = now_ms() - t0;
    CU_ASSERT(took >= 250 && took < 3000);
    sleep_ms(20);
    CU_ASSERT_EQUAL(final_status(y), ST_DEADLINE);
    CU_ASSERT_EQUAL(count_of(y), 3);
    CU_ASSERT_EQUAL(y->ev[1].kind, AZ_UPEV_MESSAGE);
    CU_ASSERT_EQUAL(y->ev[1].value, 42);
    release(y);
    CU_ASSERT(wait_open_calls(U, 0, 3000));
}

/* ---------------------------------------------------------------- an unreachable upstream */

/* A 127.0.0.1 port nothing listens on: bound, then closed. */
static int closed_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) return -1;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = 0};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t al = sizeof a;
    int port = -1;
    if (bind(fd, (struct sockaddr *)&a, sizeof a) == 0 &&
        getsockname(fd, (struct sockaddr *)&a, &al) == 0)
        port = ntohs(a.sin_port);
    close(fd);
    return port;
}

static void test_unreachable(void)
{
    int port = closed_port();
    CU_ASSERT_FATAL(port > 0);
    char t[64];
    snprintf(t, sizeof t, "127.0.0.1:%d", port);
    az_upstream *u = upstream((az_upstream_config){.target = t});
    CU_ASSERT_PTR_NOT_NULL_FATAL(u);
    char msg[AZ_MSG_MAX];
    cctx *x, *y;
    x = cctx_new(STRING_DESC);
    y = cctx_new(INT64_DESC);
    y->auto_read = 1;
    StringValue sreq = GOOGLE__PROTOBUF__STRING_VALUE__INIT;
    sreq.value = "x";
    Int64Value ireq = GOOGLE__PROTOBUF__INT64_VALUE__INIT;
    ireq.value = 3;
    /* the start succeeds: the failure is the call's status */
    CU_ASSERT_EQUAL(start(u, x, SVC "Echo", 0, &sreq.base, NULL, 0, 20000, msg), AZ_OK);
    CU_ASSERT(wait_status(x, 10000));
    CU_ASSERT_EQUAL(start(u, y, SVC "Count", 1, &ireq.base, NULL, 0, 20000, msg), AZ_OK);
    CU_ASSERT(wait_status(y, 10000));
    sleep_ms(20);
    CU_ASSERT_EQUAL(final_status(x), ST_UNAVAILABLE);
    CU_ASSERT_EQUAL(final_status(y), ST_UNAVAILABLE);
    for (int i = 0; i < x->n; i++) CU_ASSERT_NOT_EQUAL(x->ev[i].kind, AZ_UPEV_MESSAGE);
    for (int i = 0; i < y->n; i++) CU_ASSERT_NOT_EQUAL(y->ev[i].kind, AZ_UPEV_MESSAGE);
    release(x);
    release(y);
    free_upstream(u);
}

/* ---------------------------------------------------------------- limits and bad input */

static void test_max_streams(void)
{
    az_upstream *u = upstream((az_upstream_config){.max_streams = 2});
    CU_ASSERT_PTR_NOT_NULL_FATAL(u);
    Empty req = GOOGLE__PROTOBUF__EMPTY__INIT;
    char msg[AZ_MSG_MAX];
    cctx *a, *b, *c, *d;
    a = cctx_new(INT64_DESC);
    b = cctx_new(INT64_DESC);
    c = cctx_new(INT64_DESC);
    d = cctx_new(STRING_DESC);
    CU_ASSERT_EQUAL_FATAL(start(u, a, SVC "Hang", 1, &req.base, NULL, 0, 0, msg), AZ_OK);
    CU_ASSERT_EQUAL_FATAL(start(u, b, SVC "Hang", 1, &req.base, NULL, 0, 0, msg), AZ_OK);
    CU_ASSERT_EQUAL(az_upstream_open_calls(u), 2);
    /* the third stream is refused at once, and never called back */
    CU_ASSERT_EQUAL(start(u, c, SVC "Hang", 1, &req.base, NULL, 0, 0, msg), AZ_ERR_EXHAUSTED);
    CU_ASSERT(msg[0] != '\0');
    CU_ASSERT_EQUAL(az_upstream_open_calls(u), 2);
    /* unary calls are not streams */
    StringValue sreq = GOOGLE__PROTOBUF__STRING_VALUE__INIT;
    sreq.value = "u";
    CU_ASSERT_EQUAL(start(u, d, SVC "Echo", 0, &sreq.base, NULL, 0, 5000, msg), AZ_OK);
    CU_ASSERT(wait_status(d, 5000));
    CU_ASSERT_EQUAL(final_status(d), ST_OK);
    release(d);
    CU_ASSERT(wait_events(a, 2, 5000));
    CU_ASSERT(wait_events(b, 2, 5000));
    /* one ends: room for another */
    az_upcall_cancel(a->call);
    CU_ASSERT(wait_status(a, 3000));
    release(a);
    CU_ASSERT(wait_open_calls(u, 1, 3000));
    cctx *e = cctx_new(INT64_DESC);
    CU_ASSERT_EQUAL(start(u, e, SVC "Hang", 1, &req.base, NULL, 0, 0, msg), AZ_OK);
    CU_ASSERT(wait_events(e, 2, 5000));
    az_upcall_cancel(b->call);
    az_upcall_cancel(e->call);
    CU_ASSERT(wait_status(b, 3000));
    CU_ASSERT(wait_status(e, 3000));
    release(b);
    release(e);
    CU_ASSERT(wait_open_calls(u, 0, 3000));
    CU_ASSERT_EQUAL(count_of(c), 0);
    free_upstream(u);
    CU_ASSERT_EQUAL(count_of(c), 0);
}

static void test_many_stream_channels(void)
{
    /* one stream per connection: more connections than the first channel array holds */
    enum { N = 12 };
    az_upstream *u = upstream((az_upstream_config){.streams_per_channel = 1});
    CU_ASSERT_PTR_NOT_NULL_FATAL(u);
    Empty req = GOOGLE__PROTOBUF__EMPTY__INIT;
    char msg[AZ_MSG_MAX];
    cctx *x[N];
    for (int i = 0; i < N; i++) {
        x[i] = cctx_new(INT64_DESC);
        CU_ASSERT_EQUAL(start(u, x[i], SVC "Hang", 1, &req.base, NULL, 0, 0, msg), AZ_OK);
    }
    CU_ASSERT_EQUAL(az_upstream_open_calls(u), N);
    for (int i = 0; i < N; i++) {
        CU_ASSERT(wait_events(x[i], 2, 5000));
        CU_ASSERT_EQUAL(x[i]->ev[1].value, 42);
    }
    for (int i = 0; i < N; i++) az_upcall_cancel(x[i]->call);
    for (int i = 0; i < N; i++) {
        CU_ASSERT(wait_status(x[i], 3000));
        sleep_ms(2);
        CU_ASSERT_EQUAL(final_status(x[i]), ST_CANCELLED);
        release(x[i]);
    }
    CU_ASSERT(wait_open_calls(u, 0, 3000));
    free_upstream(u);
    }

static void check_start_refused(int streaming, const az_upmd *md, size_t nmd, const char *named)
{
    cctx *x = cctx_new(STRING_DESC);
    StringValue req = GOOGLE__PROTOBUF__STRING_VALUE__INIT;
    req.value = "m";
    char msg[AZ_MSG_MAX];
    int before = az_upstream_open_calls(U);
    az_err err = start(U, x, streaming ? SVC "Hang" : SVC "Echo", streaming, &req.base, md, nmd,
                       5000, msg);
    CU_ASSERT_EQUAL(err, AZ_ERR_INVALID);
    if (!strstr(msg, named)) fprintf(stderr, "\n  msg [%s] should name [%s]\n", msg, named);
    CU_ASSERT_PTR_NOT_NULL(strstr(msg, named));
    CU_ASSERT_EQUAL(az_upstream_open_calls(U), before);
    sleep_ms(50);
    CU_ASSERT_EQUAL(count_of(x), 0); /* no callback, ever */
    if (err == AZ_OK) {
        az_upcall_cancel(x->call);
        wait_status(x, 3000);
        release(x);
    }
}

static void test_illegal_metadata(void)
{
    const az_upmd space[] = {{"x-ok", "1", 1}, {"Bad Key", "v", 1}};
    check_start_refused(0, space, 2, "Bad Key");
    check_start_refused(1, space, 2, "Bad Key");
    const az_upmd upper[] = {{"X-Upper", "v", 1}};
    check_start_refused(0, upper, 1, "X-Upper");
    const az_upmd colon[] = {{"a:b", "v", 1}};
    check_start_refused(0, colon, 1, "a:b");
    const az_upmd empty[] = {{"", "v", 1}, {"x-after-empty", "v", 1}};
    check_start_refused(0, empty, 2, "header");
    const az_upmd newline[] = {{"x-value", "line\nbreak", 10}};
    check_start_refused(0, newline, 1, "x-value");
    check_start_refused(1, newline, 1, "x-value");
    /* the refused calls left nothing behind: a good one still works */
    cctx *x = cctx_new(STRING_DESC);
    StringValue req = GOOGLE__PROTOBUF__STRING_VALUE__INIT;
    req.value = "ok";
    char msg[AZ_MSG_MAX];
    CU_ASSERT_EQUAL_FATAL(start(U, x, SVC "Echo", 0, &req.base, NULL, 0, 5000, msg), AZ_OK);
    CU_ASSERT(wait_status(x, 5000));
    CU_ASSERT_EQUAL(final_status(x), ST_OK);
    release(x);
    CU_ASSERT(wait_open_calls(U, 0, 3000));
}

static void test_open_calls(void)
{
    az_upstream *u = upstream((az_upstream_config){0});
    CU_ASSERT_PTR_NOT_NULL_FATAL(u);
    CU_ASSERT_EQUAL(az_upstream_open_calls(u), 0);
    Empty req = GOOGLE__PROTOBUF__EMPTY__INIT;
    char msg[AZ_MSG_MAX];
    cctx *h1, *h2, *bl;
    h1 = cctx_new(INT64_DESC);
    h2 = cctx_new(INT64_DESC);
    bl = cctx_new(EMPTY_DESC);
    CU_ASSERT_EQUAL_FATAL(start(u, h1, SVC "Hang", 1, &req.base, NULL, 0, 0, msg), AZ_OK);
    CU_ASSERT_EQUAL(az_upstream_open_calls(u), 1);
    CU_ASSERT_EQUAL_FATAL(start(u, h2, SVC "Hang", 1, &req.base, NULL, 0, 0, msg), AZ_OK);
    CU_ASSERT_EQUAL(az_upstream_open_calls(u), 2);
    CU_ASSERT_EQUAL_FATAL(start(u, bl, SVC "Block", 0, &req.base, NULL, 0, 0, msg), AZ_OK);
    CU_ASSERT_EQUAL(az_upstream_open_calls(u), 3);
    CU_ASSERT(wait_events(h1, 2, 5000));
    /* a call stays open after STATUS until it is released */
    az_upcall_cancel(h1->call);
    CU_ASSERT(wait_status(h1, 3000));
    sleep_ms(30);
    CU_ASSERT_EQUAL(az_upstream_open_calls(u), 3);
    release(h1);
    CU_ASSERT(wait_open_calls(u, 2, 3000));
    az_upcall_cancel(bl->call);
    CU_ASSERT(wait_status(bl, 3000));
    release(bl);
    CU_ASSERT(wait_open_calls(u, 1, 3000));
    /* releasing before STATUS does not cancel: the call runs to its end and is then freed */
    cctx *ec = cctx_new(STRING_DESC);
    StringValue sreq = GOOGLE__PROTOBUF__STRING_VALUE__INIT;
    sreq.value = "after release";
    CU_ASSERT_EQUAL_FATAL(start(u, ec, SVC "Echo", 0, &sreq.base, NULL, 0, 5000, msg), AZ_OK);
    release(ec);
    CU_ASSERT(wait_status(ec, 5000));
    CU_ASSERT_EQUAL(final_status(ec), ST_OK);
    CU_ASSERT_EQUAL(count_of(ec), 3);
    CU_ASSERT_STRING_EQUAL(ec->ev[1].text, "echo:after release");
    az_upcall_cancel(h2->call);
    CU_ASSERT(wait_status(h2, 3000));
    release(h2);
    CU_ASSERT(wait_open_calls(u, 0, 3000));
    free_upstream(u);
}

/* ---------------------------------------------------------------- az_upstream_free */

typedef struct freer {
    az_upstream *u;
    atomic_int done;
} freer;

static void *free_thread(void *arg)
{
    freer *f = arg;
    az_upstream_free(f->u);
    atomic_store(&f->done, 1);
    return NULL;
}

/* Starts NH Hang streams (reading from their callback when reading) and one blocked unary call
 * on a fresh upstream, then frees it with all of them open: free must cancel them, wait for
 * each STATUS (the callbacks release the handles) and return. */
static void check_free_waits(int reading)
{
    az_upstream *u = upstream((az_upstream_config){0});
    CU_ASSERT_PTR_NOT_NULL_FATAL(u);
    Empty req = GOOGLE__PROTOBUF__EMPTY__INIT;
    char msg[AZ_MSG_MAX];
    enum { NH = 3 }; /* (all[] below lists them) */
    cctx *h[NH], *bl;
    int done_before = atomic_load(&g.hang_done), ended_before = atomic_load(&g.block_ended);
    int entered = atomic_load(&g.block_entered);
    for (int i = 0; i < NH; i++) {
        h[i] = cctx_new(INT64_DESC);
        h[i]->release_on_status = 1;
        CU_ASSERT_EQUAL_FATAL(start(u, h[i], SVC "Hang", 1, &req.base, NULL, 0, 0, msg), AZ_OK);
    }
    bl = cctx_new(EMPTY_DESC);
    bl->release_on_status = 1;
    CU_ASSERT_EQUAL_FATAL(start(u, bl, SVC "Block", 0, &req.base, NULL, 0, 0, msg), AZ_OK);
    for (int i = 0; i < NH; i++) {
        CU_ASSERT(wait_events(h[i], 2, 5000)); /* HEADERS and the message */
        if (reading) az_upcall_read(h[i]->call); /* a read outstanding; none otherwise */
    }
    CU_ASSERT(wait_atomic(&g.block_entered, entered + 1, 3000));
    CU_ASSERT_EQUAL(az_upstream_open_calls(u), NH + 1);

    /* from here on the calls belong to az_upstream_free: no cleanup may touch them */
    cctx *all[NH + 1] = {h[0], h[1], h[2], bl};
    for (int i = 0; i < NH + 1; i++) {
        pthread_mutex_lock(&all[i]->mu);
        all[i]->no_cleanup = 1;
        pthread_mutex_unlock(&all[i]->mu);
    }
    static freer f; /* static: a stuck free thread still points at it after this returns */
    f.u = u;
    atomic_store(&f.done, 0);
    pthread_t t;
    CU_ASSERT_EQUAL_FATAL(pthread_create(&t, NULL, free_thread, &f), 0);
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += 5;
    int joined = pthread_timedjoin_np(t, NULL, &until) == 0;
    if (!joined) {
        for (int i = 0; i < NH; i++) dump(h[i], "stream while az_upstream_free is stuck");
        dump(bl, "unary while az_upstream_free is stuck");
    }
    CU_ASSERT_FATAL(joined); /* (stuck: the thread and the upstream are left behind) */
    /* every call got its STATUS (CANCELLED) exactly once before free returned */
    for (int i = 0; i < NH; i++) {
        CU_ASSERT_EQUAL(h[i]->statuses, 1);
        CU_ASSERT_EQUAL(h[i]->released, 1);
        CU_ASSERT_EQUAL(final_status(h[i]), ST_CANCELLED);
    }
    CU_ASSERT_EQUAL(bl->statuses, 1);
    CU_ASSERT_EQUAL(final_status(bl), ST_CANCELLED);
    /* and the server saw them go */
    CU_ASSERT(wait_atomic(&g.hang_done, done_before + NH, 3000));
    CU_ASSERT(wait_atomic(&g.block_ended, ended_before + 1, 6000));
}

static void test_free_waits_reading(void) { check_free_waits(1); }

/* The streams sit between reads (a consumer applying back-pressure): no read is outstanding. */
static void test_free_waits_idle_streams(void) { check_free_waits(0); }

static void test_new_errors(void)
{
    char msg[AZ_MSG_MAX] = "";
    az_upstream *u = (az_upstream *)1;
    az_upstream_config c = {.target = target, .cert_file = "/tmp/azup-cert.pem"};
    CU_ASSERT_EQUAL(az_upstream_new(&c, &u, msg), AZ_ERR_INVALID);
    CU_ASSERT_PTR_NULL(u);
    CU_ASSERT(msg[0] != '\0');
    u = (az_upstream *)1;
    msg[0] = '\0';
    c = (az_upstream_config){.target = target, .ca_file = "/nonexistent/azup/ca.pem"};
    CU_ASSERT_EQUAL(az_upstream_new(&c, &u, msg), AZ_ERR_IO);
    CU_ASSERT_PTR_NULL(u);
    CU_ASSERT(msg[0] != '\0');
    az_upstream_free(NULL);
}

int main(void)
{
    az_log_set_level(AZ_LOG_WARN); /* no line per RPC */
    if (CU_initialize_registry() != CUE_SUCCESS) return 1;
    CU_pSuite s = CU_add_suite("upstream", suite_init, suite_clean);
    if (!s) return 1;
    CU_add_test(s, "unary: HEADERS, MESSAGE, STATUS on one thread", test_unary_ok);
    CU_add_test(s, "unary error status", test_unary_error);
    CU_add_test(s, "request metadata", test_metadata);
    CU_add_test(s, "stream: one message per read", test_stream_one_message_per_read);
    CU_add_test(s, "streams: every message in order", test_stream_many_in_order);
    CU_add_test(s, "stream error after its messages", test_stream_error_after_messages);
    CU_add_test(s, "cancel", test_cancel);
    CU_add_test(s, "deadline", test_deadline);
    CU_add_test(s, "unreachable upstream", test_unreachable);
    CU_add_test(s, "max_streams", test_max_streams);
    CU_add_test(s, "many stream channels", test_many_stream_channels);
    CU_add_test(s, "illegal metadata", test_illegal_metadata);
    CU_add_test(s, "open calls", test_open_calls);
    CU_add_test(s, "free waits for open calls (reads outstanding)", test_free_waits_reading);
    CU_add_test(s, "free waits for open calls (streams between reads)",
                test_free_waits_idle_streams);
    CU_add_test(s, "az_upstream_new errors", test_new_errors);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    unsigned failures = CU_get_number_of_failures() + CU_get_number_of_tests_failed() +
                        CU_get_number_of_suites_failed();
    CU_cleanup_registry();
    return failures ? 1 : 0;
}
