/* bench_events: real-time delivery measured through the real stack. It starts agentzd (API role
 * only by default, so no worker moves the runs: every event comes from our own calls) with a
 * fresh embedded PostgreSQL and Redis, creates an agent and a one-step workflow, starts R runs
 * (they stay queued), opens W WatchRun streams per run from one completion queue spread over
 * several HTTP/2 connections, then cancels the runs and measures how the cancellation events
 * reach the watchers:
 *
 *   latency   R=1000 runs, W=1: cancels one run at a time, waits for its events and then
 *             --pause-ms (10), so each sample is an isolated state change. Reports the delay from CancelRun's return to
 *             the run's CANCELLED event at the watcher, and from each event's Event.time (the
 *             server's transaction clock) to its receipt, p50/p99/max.
 *   fanout    R=1000 runs, W=10: 10,000 streams held by one server process. Reports agentzd's
 *             VmRSS before and after opening them (memory per stream), then cancels every run
 *             from --clients threads at once and reports the delivery latency of every event
 *             to every stream, and checks each stream got its run's whole history (gap-free
 *             sequences from 1, the same count as a replay, ending with OK).
 *
 * --transport sse opens the same streams as Server-Sent Events through an agentz-gateway process
 * of their own (GET /v1/runs/{id}:watch, one HTTP/1.1 connection each, driven by libcurl's
 * multi interface on epoll) instead of gRPC, and reports the gateway's memory per stream.
 *
 * Prints a human summary on stderr and, with --json, one JSON object on stdout. */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <getopt.h>
#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>
#include <jansson.h>
#include <curl/curl.h>
#include <poll.h>
#include <sys/epoll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "agentz/v1/agent.pb-c.h"
#include "agentz/v1/event.pb-c.h"
#include "agentz/v1/workflow.pb-c.h"
#include "conn.h"

#define CALL_TIMEOUT_MS 60000
#define WATCH_METHOD "/agentz.v1.WorkflowService/WatchRun"
#define STREAMS_PER_CONN 100

typedef enum scenario { SC_LATENCY, SC_FANOUT } scenario;
static const char *const SCENARIOS[] = {"latency", "fanout"};
typedef enum transport { TR_GRPC, TR_SSE } transport;
static const char *const TRANSPORTS[] = {"grpc", "sse"};

static struct {
    scenario sc;
    const char *agentzd;
    const char *data_dir; /* NULL = a fresh temporary directory, removed at the end */
    const char *roles;
    int runs, watchers, clients, timeout_s, json, keep;
    int pause_ms; /* latency: quiet time between one run's delivery and the next cancellation */
    transport tr;
    const char *gateway; /* agentz-gateway binary for --transport sse */
} opt = {.runs = 1000, .watchers = -1, .clients = 16, .timeout_s = 300, .roles = "api", .pause_ms = 10};

static pid_t child, gw_child; /* agentzd; agentz-gateway (sse) */
static char gw_url[128];      /* "http://127.0.0.1:PORT" */
static char target[64];
static char token[256];
static char base_dir[512];

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static double wall_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void stop_child(int sig, int timeout_s, int *status_out);
static void cleanup_dir(void);

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "bench_events: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    if (child > 0) fprintf(stderr, "bench_events: agentzd log: %s/agentzd.log\n", base_dir);
    if (gw_child > 0) {
        kill(gw_child, SIGKILL);
        waitpid(gw_child, NULL, 0);
    }
    stop_child(SIGTERM, 30, NULL);
    if (!opt.keep && !opt.data_dir) cleanup_dir();
    exit(1);
}

/* ---------------------------------------------------------------- agentzd */

static long proc_kb(pid_t pid, const char *field)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    long v = -1;
    size_t fl = strlen(field);
    while (fgets(line, sizeof line, f))
        if (strncmp(line, field, fl) == 0 && line[fl] == ':') {
            v = strtol(line + fl + 1, NULL, 10);
            break;
        }
    fclose(f);
    return v;
}

/* The highest VmRSS of pid over a short window (RSS moves as allocator arenas settle). */
static long rss_settled(pid_t pid, double seconds)
{
    long best = -1;
    double until = now_s() + seconds;
    do {
        long v = proc_kb(pid, "VmRSS");
        if (v > best) best = v;
        usleep(100 * 1000);
    } while (now_s() < until);
    return best;
}

static int read_token(const char *data)
{
    char path[700];
    snprintf(path, sizeof path, "%s/admin.key", data);
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    size_t n = fread(token, 1, sizeof token - 1, f);
    fclose(f);
    while (n && strchr(" \t\r\n", token[n - 1])) n--;
    token[n] = '\0';
    return n > 0;
}

static void start_agentzd(void)
{
    char data[600], logp[600];
    snprintf(data, sizeof data, "%s/data", base_dir);
    snprintf(logp, sizeof logp, "%s/agentzd.log", base_dir);
    int out[2];
    if (pipe(out) != 0) die("pipe: %s", strerror(errno));
    pid_t pid = fork();
    if (pid < 0) die("fork: %s", strerror(errno));
    if (pid == 0) {
        int log = open(logp, O_WRONLY | O_CREAT | O_APPEND, 0644);
        dup2(out[1], 1);
        if (log >= 0) dup2(log, 2);
        close(out[0]);
        /* The benchmark is the only client and fires bursts. */
        setenv("AGENTZ_RATE_LIMIT", "0", 1);
        setenv("AGENTZ_RATE_LIMIT_WORKSPACE", "0", 1);
        setenv("AGENTZ_RATE_LIMIT_EXPENSIVE", "0", 1);
        unsetenv("AGENTZ_DATABASE_URL");
        unsetenv("AGENTZ_REDIS_URL");
        execl(opt.agentzd, opt.agentzd, "--data-dir", data, "--listen", "127.0.0.1:0", "--roles",
              opt.roles, (char *)NULL);
        fprintf(stderr, "cannot exec %s: %s\n", opt.agentzd, strerror(errno));
        _exit(127);
    }
    child = pid;
    close(out[1]);
    char buf[1024];
    size_t len = 0;
    double until = now_s() + 180;
    while (!target[0] && now_s() < until) {
        struct pollfd p = {out[0], POLLIN, 0};
        if (poll(&p, 1, 1000) <= 0) continue;
        ssize_t n = read(out[0], buf + len, sizeof buf - 1 - len);
        if (n <= 0) break;
        len += (size_t)n;
        buf[len] = '\0';
        char *at = strstr(buf, "gRPC at ");
        if (at && strchr(at, '\n')) sscanf(at + 8, "%63s", target);
        if (len >= sizeof buf - 1) len = 0;
    }
    close(out[0]);
    if (!target[0]) die("agentzd did not become ready within 180 s (log %s)", logp);
    until = now_s() + 30;
    while (!read_token(data) && now_s() < until) usleep(100 * 1000);
    if (!token[0]) die("agentzd wrote no %s/admin.key", data);
}

static void stop_child(int sig, int timeout_s, int *status_out)
{
    if (child <= 0) return;
    kill(child, sig);
    int st = 0;
    for (int i = 0; i < timeout_s * 10; i++) {
        if (waitpid(child, &st, WNOHANG) == child) {
            child = 0;
            if (status_out) *status_out = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
            return;
        }
        usleep(100 * 1000);
    }
    kill(child, SIGKILL);
    waitpid(child, NULL, 0);
    child = 0;
    if (status_out) *status_out = -1;
}

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static void cleanup_dir(void)
{
    if (base_dir[0]) nftw(base_dir, rm_entry, 32, FTW_DEPTH | FTW_PHYS);
}

/* ---------------------------------------------------------------- unary calls */

static az_conn *connect_server(void)
{
    az_conn_opts o = {.target = target, .token = token};
    az_conn *c = NULL;
    char msg[AZ_MSG_MAX];
    if (az_conn_open(&o, &c, msg) != AZ_OK) die("cannot connect to %s: %s", target, msg);
    return c;
}

static ProtobufCMessage *call(az_conn *c, const char *method, const ProtobufCMessage *req,
                              const ProtobufCMessageDescriptor *out)
{
    ProtobufCMessage *resp = NULL;
    int st = 0;
    char msg[AZ_MSG_MAX];
    if (az_conn_unary(c, method, req, out, CALL_TIMEOUT_MS, NULL, &resp, &st, msg) != AZ_OK)
        die("%s failed: %s: %s", method, az_conn_status_name(st), msg);
    return resp;
}

static void create_workflow(az_conn *c, char wf_id[40])
{
    char suffix[40];
    snprintf(suffix, sizeof suffix, "%d-%ld", (int)getpid(), (long)time(NULL));
    Agentz__V1__LlmConfig llm = AGENTZ__V1__LLM_CONFIG__INIT;
    llm.provider = "openai";
    llm.model = "bench-events";
    /* Never called: with the api role alone no worker runs the steps. */
    llm.base_url = "http://127.0.0.1:9/v1";
    Agentz__V1__Agent a = AGENTZ__V1__AGENT__INIT;
    char name[96];
    snprintf(name, sizeof name, "bench-events-%s", suffix);
    a.name = name;
    a.role = "Benchmark agent";
    a.goal = "Be watched";
    a.backstory = "Created by bench_events.";
    a.llm = &llm;
    Agentz__V1__CreateAgentRequest areq = AGENTZ__V1__CREATE_AGENT_REQUEST__INIT;
    areq.agent = &a;
    Agentz__V1__Agent *agent = (Agentz__V1__Agent *)call(c, "/agentz.v1.AgentService/CreateAgent",
                                                         &areq.base, &agentz__v1__agent__descriptor);
    Agentz__V1__Step step = AGENTZ__V1__STEP__INIT;
    step.id = "only";
    step.agent_id = agent->id;
    step.description = "A step that waits for a worker.";
    step.expected_output = "Nothing.";
    Agentz__V1__Step *steps[1] = {&step};
    Agentz__V1__Workflow wf = AGENTZ__V1__WORKFLOW__INIT;
    snprintf(name, sizeof name, "bench-events-%s", suffix);
    wf.name = name;
    wf.process = AGENTZ__V1__PROCESS__PROCESS_SEQUENTIAL;
    wf.steps = steps;
    wf.n_steps = 1;
    Agentz__V1__CreateWorkflowRequest wreq = AGENTZ__V1__CREATE_WORKFLOW_REQUEST__INIT;
    wreq.workflow = &wf;
    Agentz__V1__Workflow *got = (Agentz__V1__Workflow *)call(
        c, "/agentz.v1.WorkflowService/CreateWorkflow", &wreq.base, &agentz__v1__workflow__descriptor);
    snprintf(wf_id, 40, "%s", got->id);
    protobuf_c_message_free_unpacked(&got->base, NULL);
    protobuf_c_message_free_unpacked(&agent->base, NULL);
}

/* ---------------------------------------------------------------- runs */

typedef struct run {
    char id[40];
    _Atomic long long cancelled_ns; /* CLOCK_MONOTONIC when CancelRun returned; 0 = not yet */
    _Atomic int seen;               /* watchers that got the run's CANCELLED event */
    _Atomic long long redis_ns;     /* when the Redis tap saw that event; 0 = not (yet) */
    _Atomic long long first_ns;     /* when the first watcher got it */
    int replay_durable;             /* durable events of a replay after the end */
} run;

static run *runs;
static char workflow_id[40];

typedef struct worker_arg {
    pthread_t th;
    int from, to, step;
    int cancel;
} worker_arg;

static void *starter_main(void *arg)
{
    worker_arg *w = arg;
    az_conn *c = connect_server();
    for (int i = w->from; i < w->to; i++) {
        Agentz__V1__StartRunRequest req = AGENTZ__V1__START_RUN_REQUEST__INIT;
        req.workflow_id = workflow_id;
        Agentz__V1__WorkflowRun *r = (Agentz__V1__WorkflowRun *)call(
            c, "/agentz.v1.WorkflowService/StartRun", &req.base, &agentz__v1__workflow_run__descriptor);
        snprintf(runs[i].id, sizeof runs[i].id, "%s", r->id);
        protobuf_c_message_free_unpacked(&r->base, NULL);
    }
    az_conn_free(c);
    return NULL;
}

static long long mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void cancel_run(az_conn *c, run *r)
{
    Agentz__V1__CancelRunRequest req = AGENTZ__V1__CANCEL_RUN_REQUEST__INIT;
    req.id = r->id;
    req.reason = "bench_events";
    ProtobufCMessage *resp = call(c, "/agentz.v1.WorkflowService/CancelRun", &req.base,
                                  &agentz__v1__workflow_run__descriptor);
    atomic_store(&r->cancelled_ns, mono_ns());
    protobuf_c_message_free_unpacked(resp, NULL);
}

static void *canceller_main(void *arg)
{
    worker_arg *w = arg;
    az_conn *c = connect_server();
    for (int i = w->from; i < w->to; i++) cancel_run(c, &runs[i]);
    az_conn_free(c);
    return NULL;
}

/* Runs fn over runs [0, n) from k threads. */
static double parallel(void *(*fn)(void *), int n, int k)
{
    if (k > n) k = n;
    worker_arg *w = calloc((size_t)k, sizeof *w);
    if (!w) die("out of memory");
    double t0 = now_s();
    for (int i = 0; i < k; i++) {
        w[i] = (worker_arg){.from = (int)((long)n * i / k), .to = (int)((long)n * (i + 1) / k)};
        pthread_create(&w[i].th, NULL, fn, &w[i]);
    }
    for (int i = 0; i < k; i++) pthread_join(w[i].th, NULL);
    free(w);
    return now_s() - t0;
}

/* ---------------------------------------------------------------- watch streams */

enum { TAG_START, TAG_RECV, TAG_STATUS };

typedef struct stream stream;
typedef struct tag {
    stream *s;
    int kind;
} tag;

struct stream {
    run *r;
    grpc_call *call;
    grpc_metadata_array imd, tmd;
    grpc_status_code status;
    grpc_slice details;
    grpc_byte_buffer *recv;
    tag t_start, t_recv, t_status;
    int64_t last_seq;
    int durable, bad_order, ended;
    /* --transport sse */
    CURL *easy;
    struct curl_slist *hdr;
    char *buf;
    size_t blen, bcap;
};

static stream *streams;
static size_t nstreams;
static grpc_channel **channels;
static size_t nchannels;
static grpc_completion_queue *cq;
static pthread_t cq_thread;

/* Counters written by the completion-queue thread only. */
static struct {
    size_t opened_with_event; /* streams that got at least one durable event */
    size_t ended, ended_ok;
    size_t events;
    double *lat; /* Event.time -> receipt, seconds, for events after measure_from */
    size_t nlat, caplat;
    double *cancel_lat; /* CancelRun return -> CANCELLED receipt */
    size_t ncancel, capcancel;
    char first_error[AZ_MSG_MAX];
} st;
static _Atomic double measure_from; /* wall-clock seconds; events older are replay */
static atomic_size_t a_opened, a_ended;

static void push(double **v, size_t *n, size_t *cap, double x)
{
    if (*n == *cap) {
        *cap = *cap ? *cap * 2 : 4096;
        *v = realloc(*v, *cap * sizeof **v);
        if (!*v) die("out of memory");
    }
    (*v)[(*n)++] = x;
}

static void arm_recv(stream *s)
{
    grpc_op op = {.op = GRPC_OP_RECV_MESSAGE};
    op.data.recv_message.recv_message = &s->recv;
    if (grpc_call_start_batch(s->call, &op, 1, &s->t_recv, NULL) != GRPC_CALL_OK)
        die("cannot arm a receive");
}

/* Accounts one received event of s, whatever the transport: order, replay, latencies. */
static void count_event(stream *s, int64_t seq, double t, int cancelled, double recv_wall,
                        long long recv_mono)
{
    st.events++;
    if (seq <= 0) return;
    if (seq != s->last_seq + 1) s->bad_order++;
    s->last_seq = seq;
    if (s->durable++ == 0) {
        st.opened_with_event++;
        atomic_fetch_add(&a_opened, 1);
    }
    double from = atomic_load(&measure_from);
    if (from > 0 && t >= from) push(&st.lat, &st.nlat, &st.caplat, recv_wall - t);
    if (cancelled) {
        long long c = atomic_load(&s->r->cancelled_ns);
        /* The event can beat CancelRun's response to the client: that is a zero delay. */
        double d = c ? (double)(recv_mono - c) / 1e9 : 0;
        push(&st.cancel_lat, &st.ncancel, &st.capcancel, d > 0 ? d : 0);
        long long zero = 0;
        atomic_compare_exchange_strong(&s->r->first_ns, &zero, recv_mono);
        atomic_fetch_add(&s->r->seen, 1);
    }
}

/* The stream is over with status (0 = OK); from the transport's thread. */
static void count_end(stream *s, int status, const char *details)
{
    s->ended = 1;
    s->status = (grpc_status_code)status;
    st.ended++;
    if (status == 0) st.ended_ok++;
    else if (!st.first_error[0])
        snprintf(st.first_error, sizeof st.first_error, "status %d: %s", status, details);
    atomic_fetch_add(&a_ended, 1);
}

static void on_message(stream *s)
{
    double recv_wall = wall_s();
    long long recv_mono = mono_ns();
    grpc_byte_buffer_reader rd;
    grpc_byte_buffer_reader_init(&rd, s->recv);
    grpc_slice all = grpc_byte_buffer_reader_readall(&rd);
    grpc_byte_buffer_reader_destroy(&rd);
    grpc_byte_buffer_destroy(s->recv);
    s->recv = NULL;
    Agentz__V1__Event *e =
        agentz__v1__event__unpack(NULL, GRPC_SLICE_LENGTH(all), GRPC_SLICE_START_PTR(all));
    grpc_slice_unref(all);
    if (!e) die("a watch message does not parse as agentz.v1.Event");
    double t = e->time ? (double)e->time->seconds + e->time->nanos / 1e9 : 0;
    int cancelled = e->payload_case == AGENTZ__V1__EVENT__PAYLOAD_RUN_STATUS &&
                    e->run_status->to == AGENTZ__V1__RUN_STATUS__RUN_STATUS_CANCELLED;
    count_event(s, e->sequence, t, cancelled, recv_wall, recv_mono);
    protobuf_c_message_free_unpacked(&e->base, NULL);
    arm_recv(s);
}

static void *cq_main(void *arg)
{
    (void)arg;
    for (;;) {
        grpc_event ev = grpc_completion_queue_next(
            cq, gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC), gpr_time_from_millis(200, GPR_TIMESPAN)),
            NULL);
        if (ev.type == GRPC_QUEUE_SHUTDOWN) break;
        if (ev.type != GRPC_OP_COMPLETE) continue;
        tag *t = ev.tag;
        stream *s = t->s;
        switch (t->kind) {
        case TAG_START:
            if (ev.success) arm_recv(s);
            break;
        case TAG_RECV:
            if (s->recv) on_message(s);
            break;
        case TAG_STATUS: {
            char *d = grpc_slice_to_c_string(s->details);
            count_end(s, (int)s->status, d);
            gpr_free(d);
            break;
        }
        }
    }
    return NULL;
}

static void open_channels(size_t n)
{
    channels = calloc(n, sizeof *channels);
    nchannels = n;
    for (size_t i = 0; i < n; i++) {
        /* A distinct argument per channel gives each its own connection. */
        grpc_arg args[3] = {
            {.type = GRPC_ARG_INTEGER, .key = (char *)GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, .value.integer = 1},
            {.type = GRPC_ARG_INTEGER, .key = "agentz.bench.channel", .value.integer = (int)i},
            {.type = GRPC_ARG_INTEGER, .key = (char *)GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH,
             .value.integer = 8 << 20},
        };
        grpc_channel_args chargs = {3, args};
        grpc_channel_credentials *creds = grpc_insecure_credentials_create();
        channels[i] = grpc_channel_create(target, creds, &chargs);
        grpc_channel_credentials_release(creds);
    }
}

static void open_stream(stream *s, grpc_channel *ch)
{
    grpc_slice method = grpc_slice_from_static_string(WATCH_METHOD);
    s->call = grpc_channel_create_call(ch, NULL, GRPC_PROPAGATE_DEFAULTS, cq, method, NULL,
                                       gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
    grpc_metadata_array_init(&s->imd);
    grpc_metadata_array_init(&s->tmd);
    s->t_start = (tag){s, TAG_START};
    s->t_recv = (tag){s, TAG_RECV};
    s->t_status = (tag){s, TAG_STATUS};
    static char auth[300];
    if (!auth[0]) snprintf(auth, sizeof auth, "Bearer %s", token);
    grpc_metadata md = {.key = grpc_slice_from_static_string("authorization"),
                        .value = grpc_slice_from_static_string(auth)};
    Agentz__V1__WatchRunRequest req = AGENTZ__V1__WATCH_RUN_REQUEST__INIT;
    req.run_id = s->r->id;
    uint8_t buf[128];
    size_t len = agentz__v1__watch_run_request__pack(&req, buf);
    grpc_slice body = grpc_slice_from_copied_buffer((const char *)buf, len);
    grpc_byte_buffer *send = grpc_raw_byte_buffer_create(&body, 1);
    grpc_slice_unref(body);
    grpc_op ops[4] = {{0}};
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[0].data.send_initial_metadata.count = 1;
    ops[0].data.send_initial_metadata.metadata = &md;
    ops[1].op = GRPC_OP_SEND_MESSAGE;
    ops[1].data.send_message.send_message = send;
    ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[3].data.recv_initial_metadata.recv_initial_metadata = &s->imd;
    if (grpc_call_start_batch(s->call, ops, 4, &s->t_start, NULL) != GRPC_CALL_OK)
        die("cannot start a WatchRun call");
    grpc_byte_buffer_destroy(send);
    grpc_op sop = {.op = GRPC_OP_RECV_STATUS_ON_CLIENT};
    sop.data.recv_status_on_client.trailing_metadata = &s->tmd;
    sop.data.recv_status_on_client.status = &s->status;
    sop.data.recv_status_on_client.status_details = &s->details;
    if (grpc_call_start_batch(s->call, &sop, 1, &s->t_status, NULL) != GRPC_CALL_OK)
        die("cannot arm a status receive");
}

static void free_streams(void)
{
    for (size_t i = 0; i < nstreams; i++) {
        stream *s = &streams[i];
        if (!s->call) continue;
        grpc_metadata_array_destroy(&s->imd);
        grpc_metadata_array_destroy(&s->tmd);
        grpc_slice_unref(s->details);
        grpc_call_unref(s->call);
    }
    for (size_t i = 0; i < nchannels; i++) grpc_channel_destroy(channels[i]);
    free(channels);
    free(streams);
}

/* ---------------------------------------------------------------- SSE through the gateway */

static CURLM *multi;
static int epfd = -1;
static long curl_wait_ms = -1;
static pthread_t sse_thread;
static atomic_int sse_stop;

/* "2026-12-06T22:06:56.069875Z" as seconds since the epoch. */
static double rfc3339(const char *t)
{
    struct tm tm = {0};
    int n = 0;
    if (!t || sscanf(t, "%d-%d-%dT%d:%d:%d%n", &tm.tm_year, &tm.tm_mon, &tm.tm_mday, &tm.tm_hour,
                     &tm.tm_min, &tm.tm_sec, &n) != 6)
        return 0;
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    double frac = t[n] == '.' ? strtod(t + n, NULL) : 0;
    return (double)timegm(&tm) + frac;
}

/* One SSE block (lines up to a blank line) of s. */
static void sse_block(stream *s, char *block)
{
    double recv_wall = wall_s();
    long long recv_mono = mono_ns();
    int end = 0;
    char *data = NULL;
    for (char *line = strtok(block, "\n"); line; line = strtok(NULL, "\n")) {
        if (strcmp(line, "event: end") == 0) end = 1;
        else if (strncmp(line, "data: ", 6) == 0) data = line + 6;
    }
    if (!data) return; /* comments, retry */
    json_t *j = json_loads(data, 0, NULL);
    if (!j) die("an SSE event of run %s is not JSON: %.200s", s->r->id, data);
    if (end) {
        count_end(s, (int)json_integer_value(json_object_get(j, "code")),
                  json_string_value(json_object_get(j, "message")) ? json_string_value(json_object_get(j, "message")) : "");
    } else {
        const char *seq = json_string_value(json_object_get(j, "sequence"));
        const char *to = json_string_value(json_object_get(json_object_get(j, "runStatus"), "to"));
        count_event(s, seq ? strtoll(seq, NULL, 10) : 0, rfc3339(json_string_value(json_object_get(j, "time"))),
                    to && strcmp(to, "RUN_STATUS_CANCELLED") == 0, recv_wall, recv_mono);
    }
    json_decref(j);
}

static atomic_size_t a_bytes; /* SSE streams that received any bytes (tells stuck from slow) */
static size_t sse_write(char *p, size_t size, size_t n, void *arg)
{
    stream *s = arg;
    size_t len = size * n;
    if (!s->bcap) atomic_fetch_add(&a_bytes, 1);
    if (s->blen + len + 1 > s->bcap) {
        s->bcap = (s->blen + len + 1) * 2;
        s->buf = realloc(s->buf, s->bcap);
        if (!s->buf) die("out of memory");
    }
    memcpy(s->buf + s->blen, p, len);
    s->blen += len;
    s->buf[s->blen] = '\0';
    char *sep;
    size_t used = 0;
    while ((sep = strstr(s->buf + used, "\n\n")) != NULL) {
        *sep = '\0';
        sse_block(s, s->buf + used);
        used = (size_t)(sep - s->buf) + 2;
    }
    memmove(s->buf, s->buf + used, s->blen - used + 1);
    s->blen -= used;
    return len;
}

static int sse_socket(CURL *e, curl_socket_t fd, int what, void *u, void *sp)
{
    (void)e, (void)u, (void)sp;
    if (what == CURL_POLL_REMOVE) {
        epoll_ctl(epfd, EPOLL_CTL_DEL, fd, NULL);
        return 0;
    }
    struct epoll_event ev = {.events = (what & CURL_POLL_IN ? EPOLLIN : 0u) | (what & CURL_POLL_OUT ? EPOLLOUT : 0u),
                             .data.fd = fd};
    if (epoll_ctl(epfd, EPOLL_CTL_MOD, fd, &ev) != 0) epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev);
    return 0;
}

static int sse_timer(CURLM *m, long ms, void *u)
{
    (void)m, (void)u;
    curl_wait_ms = ms;
    return 0;
}

/* Opens every stream and drives them on one epoll loop until told to stop. */
static void *sse_main(void *arg)
{
    (void)arg;
    static char auth[300];
    snprintf(auth, sizeof auth, "Authorization: Bearer %s", token);
    for (size_t i = 0; i < nstreams; i++) {
        stream *s = &streams[i];
        char url[256];
        snprintf(url, sizeof url, "%s/v1/runs/%s:watch", gw_url, s->r->id);
        s->easy = curl_easy_init();
        s->hdr = curl_slist_append(curl_slist_append(NULL, "Accept: text/event-stream"), auth);
        curl_easy_setopt(s->easy, CURLOPT_URL, url);
        curl_easy_setopt(s->easy, CURLOPT_HTTPHEADER, s->hdr);
        curl_easy_setopt(s->easy, CURLOPT_WRITEFUNCTION, sse_write);
        curl_easy_setopt(s->easy, CURLOPT_WRITEDATA, s);
        curl_easy_setopt(s->easy, CURLOPT_PRIVATE, s);
        curl_easy_setopt(s->easy, CURLOPT_NOSIGNAL, 1L);
        curl_multi_add_handle(multi, s->easy);
    }
    int running = 0;
    curl_multi_socket_action(multi, CURL_SOCKET_TIMEOUT, 0, &running);
    struct epoll_event evs[256];
    while (!atomic_load(&sse_stop)) {
        int wait = curl_wait_ms < 0 || curl_wait_ms > 200 ? 200 : (int)curl_wait_ms;
        int n = epoll_wait(epfd, evs, 256, wait);
        if (n <= 0) curl_multi_socket_action(multi, CURL_SOCKET_TIMEOUT, 0, &running);
        for (int i = 0; i < n; i++)
            curl_multi_socket_action(multi, evs[i].data.fd,
                                     (evs[i].events & EPOLLIN ? CURL_CSELECT_IN : 0) |
                                         (evs[i].events & EPOLLOUT ? CURL_CSELECT_OUT : 0) |
                                         (evs[i].events & (EPOLLERR | EPOLLHUP) ? CURL_CSELECT_ERR : 0),
                                     &running);
        CURLMsg *m;
        int left;
        while ((m = curl_multi_info_read(multi, &left)) != NULL) {
            if (m->msg != CURLMSG_DONE) continue;
            stream *s = NULL;
            curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&s);
            long code = 0;
            curl_easy_getinfo(m->easy_handle, CURLINFO_RESPONSE_CODE, &code);
            if (s && !s->ended) {
                char why[160];
                snprintf(why, sizeof why, "the SSE connection closed without an end event (HTTP %ld, %s)",
                         code, curl_easy_strerror(m->data.result));
                count_end(s, 2, why);
            }
        }
    }
    return NULL;
}

static void sse_open(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
    multi = curl_multi_init();
    epfd = epoll_create1(EPOLL_CLOEXEC);
    if (!multi || epfd < 0) die("cannot set up the SSE client");
    curl_multi_setopt(multi, CURLMOPT_SOCKETFUNCTION, sse_socket);
    curl_multi_setopt(multi, CURLMOPT_TIMERFUNCTION, sse_timer);
    pthread_create(&sse_thread, NULL, sse_main, NULL);
}

static void sse_close(void)
{
    atomic_store(&sse_stop, 1);
    pthread_join(sse_thread, NULL);
    for (size_t i = 0; i < nstreams; i++) {
        if (!streams[i].easy) continue;
        curl_multi_remove_handle(multi, streams[i].easy);
        curl_easy_cleanup(streams[i].easy);
        curl_slist_free_all(streams[i].hdr);
        free(streams[i].buf);
    }
    curl_multi_cleanup(multi);
    close(epfd);
    curl_global_cleanup();
}

/* Starts agentz-gateway in front of agentzd and waits for its "is running" line. */
static void start_gateway(void)
{
    char logp[600];
    snprintf(logp, sizeof logp, "%s/gateway.log", base_dir);
    int out[2];
    if (pipe(out) != 0) die("pipe: %s", strerror(errno));
    pid_t pid = fork();
    if (pid < 0) die("fork: %s", strerror(errno));
    if (pid == 0) {
        int log = open(logp, O_WRONLY | O_CREAT | O_APPEND, 0644);
        dup2(out[1], 1);
        if (log >= 0) dup2(log, 2);
        close(out[0]);
        execl(opt.gateway, opt.gateway, "--listen", "127.0.0.1:0", "--upstream", target, "--access-log",
              "off", (char *)NULL);
        fprintf(stderr, "cannot exec %s: %s\n", opt.gateway, strerror(errno));
        _exit(127);
    }
    gw_child = pid;
    close(out[1]);
    char buf[1024];
    size_t len = 0;
    double until = now_s() + 30;
    while (!gw_url[0] && now_s() < until) {
        struct pollfd p = {out[0], POLLIN, 0};
        if (poll(&p, 1, 1000) <= 0) continue;
        ssize_t n = read(out[0], buf + len, sizeof buf - 1 - len);
        if (n <= 0) break;
        len += (size_t)n;
        buf[len] = '\0';
        char *at = strstr(buf, "is running: ");
        if (at && strchr(at, '\n')) sscanf(at + 12, "%127s", gw_url);
    }
    close(out[0]);
    if (!gw_url[0]) die("agentz-gateway did not start within 30 s (log %s)", logp);
}

static int stop_gateway(void)
{
    if (gw_child <= 0) return 0;
    kill(gw_child, SIGTERM);
    int st = 0;
    for (int i = 0; i < 300; i++) {
        if (waitpid(gw_child, &st, WNOHANG) == gw_child) {
            gw_child = 0;
            return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
        }
        usleep(100 * 1000);
    }
    kill(gw_child, SIGKILL);
    waitpid(gw_child, NULL, 0);
    gw_child = 0;
    return -1;
}

/* Waits until counter reaches want or the timeout; returns whether it did. */
static int wait_count(atomic_size_t *counter, size_t want, double timeout_s, const char *what)
{
    double until = now_s() + timeout_s, last = now_s();
    while (atomic_load(counter) < want) {
        if (now_s() > until) return 0;
        if (now_s() - last > 5) {
            if (opt.tr == TR_SSE)
                fprintf(stderr, "bench_events: %s: %zu of %zu (%zu with bytes)\n", what, atomic_load(counter),
                        want, atomic_load(&a_bytes));
            else
                fprintf(stderr, "bench_events: %s: %zu of %zu\n", what, atomic_load(counter), want);
            last = now_s();
        }
        usleep(10 * 1000);
    }
    return 1;
}

/* ---------------------------------------------------------------- the Redis tap */

/* A plain PSUBSCRIBE on the embedded Redis next to agentzd's own subscription: when the
 * relay's PUBLISH of a run's CANCELLED event reaches Redis subscribers. Splits the delivery
 * time into commit -> Redis (outbox and relay) and Redis -> watcher (hub and gRPC stream).
 * Speaks just enough RESP for pmessage arrays of bulk strings. */
static int tap_fd = -1;
static pthread_t tap_thread;
static int *run_order; /* indices of runs sorted by id, for lookups by Event.run_id */

static int cmp_run_idx(const void *a, const void *b)
{
    return strcmp(runs[*(const int *)a].id, runs[*(const int *)b].id);
}

static run *find_run(const char *id)
{
    int lo = 0, hi = opt.runs - 1;
    while (lo <= hi) {
        int mid = (lo + hi) / 2, c = strcmp(runs[run_order[mid]].id, id);
        if (c == 0) return &runs[run_order[mid]];
        if (c < 0) lo = mid + 1;
        else hi = mid - 1;
    }
    return NULL;
}

typedef struct rbuf {
    char *b;
    size_t len, pos, cap;
} rbuf;

/* Makes at least n unread bytes available; 0 on EOF. */
static int rb_need(rbuf *r, size_t n)
{
    while (r->len - r->pos < n) {
        if (r->pos) {
            memmove(r->b, r->b + r->pos, r->len - r->pos);
            r->len -= r->pos;
            r->pos = 0;
        }
        if (r->len + 65536 > r->cap) {
            r->cap = (r->len + 65536) * 2;
            r->b = realloc(r->b, r->cap);
            if (!r->b) die("out of memory");
        }
        ssize_t got = read(tap_fd, r->b + r->len, r->cap - r->len);
        if (got <= 0) return 0;
        r->len += (size_t)got;
    }
    return 1;
}

/* One RESP line ("*4", "$123", ...) without its CRLF, as a number after the type byte. */
static int rb_line(rbuf *r, char *type, long *num)
{
    for (;;) {
        char *crlf = r->len > r->pos ? memmem(r->b + r->pos, r->len - r->pos, "\r\n", 2) : NULL;
        if (crlf) {
            *type = r->b[r->pos];
            *num = strtol(r->b + r->pos + 1, NULL, 10);
            r->pos = (size_t)(crlf - r->b) + 2;
            return 1;
        }
        if (!rb_need(r, r->len - r->pos + 1)) return 0;
    }
}

static void *tap_main(void *arg)
{
    (void)arg;
    rbuf r = {0};
    char type;
    long n;
    while (rb_line(&r, &type, &n)) {
        if (type != '*' || n != 4) continue; /* the psubscribe confirmation has 3 elements */
        char *parts[4] = {0};
        size_t lens[4] = {0};
        int ok = 1;
        for (int i = 0; i < 4 && ok; i++) {
            long bl;
            if (!rb_line(&r, &type, &bl) || type != '$' || bl < 0 || !rb_need(&r, (size_t)bl + 2)) {
                ok = 0;
                break;
            }
            parts[i] = malloc((size_t)bl + 1);
            memcpy(parts[i], r.b + r.pos, (size_t)bl);
            parts[i][bl] = '\0';
            lens[i] = (size_t)bl;
            r.pos += (size_t)bl + 2;
        }
        long long at = mono_ns();
        if (ok && strcmp(parts[0], "pmessage") == 0) {
            Agentz__V1__Event *e =
                agentz__v1__event__unpack(NULL, lens[3], (const uint8_t *)parts[3]);
            if (e && e->payload_case == AGENTZ__V1__EVENT__PAYLOAD_RUN_STATUS &&
                e->run_status->to == AGENTZ__V1__RUN_STATUS__RUN_STATUS_CANCELLED) {
                run *x = find_run(e->run_id);
                if (x) atomic_store(&x->redis_ns, at);
            }
            if (e) protobuf_c_message_free_unpacked(&e->base, NULL);
        }
        for (int i = 0; i < 4; i++) free(parts[i]);
        if (!ok) break;
    }
    free(r.b);
    return NULL;
}

/* Connects to the embedded Redis of the data dir and subscribes to every run channel. */
static void tap_start(void)
{
    run_order = malloc((size_t)opt.runs * sizeof *run_order);
    if (!run_order) die("out of memory");
    for (int i = 0; i < opt.runs; i++) run_order[i] = i;
    qsort(run_order, (size_t)opt.runs, sizeof *run_order, cmp_run_idx);
    char path[700], dir[600] = "";
    snprintf(path, sizeof path, "%s/data/run/socket_dir", base_dir);
    FILE *f = fopen(path, "r");
    if (f) {
        if (!fgets(dir, sizeof dir, f)) dir[0] = '\0';
        fclose(f);
        dir[strcspn(dir, "\n")] = '\0';
    }
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    if (*dir) snprintf(a.sun_path, sizeof a.sun_path, "%.90s/redis.sock", dir);
    else snprintf(a.sun_path, sizeof a.sun_path, "%.80s/data/run/redis.sock", base_dir);
    tap_fd = socket(AF_UNIX, SOCK_STREAM, 0);
    if (tap_fd < 0 || connect(tap_fd, (struct sockaddr *)&a, sizeof a) != 0)
        die("cannot connect to the embedded redis at %s: %s", a.sun_path, strerror(errno));
    static const char pattern[] = "agentz:events:run:*";
    char cmd[128];
    int n = snprintf(cmd, sizeof cmd, "*2\r\n$10\r\nPSUBSCRIBE\r\n$%zu\r\n%s\r\n", sizeof pattern - 1,
                     pattern);
    if (write(tap_fd, cmd, (size_t)n) != n) die("cannot subscribe");
    pthread_create(&tap_thread, NULL, tap_main, NULL);
}

static void tap_stop(void)
{
    if (tap_fd < 0) return;
    shutdown(tap_fd, SHUT_RDWR);
    pthread_join(tap_thread, NULL);
    close(tap_fd);
    free(run_order);
}

/* ---------------------------------------------------------------- statistics */

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double pct(const double *v, size_t n, double p)
{
    if (!n) return 0;
    size_t rank = (size_t)((p / 100.0) * (double)n + 0.999999);
    if (rank < 1) rank = 1;
    if (rank > n) rank = n;
    return v[rank - 1];
}

static void report_lat(json_t *out, const char *key, double *v, size_t n, const char *what)
{
    qsort(v, n, sizeof *v, cmp_double);
    double p50 = pct(v, n, 50) * 1000, p99 = pct(v, n, 99) * 1000, max = n ? v[n - 1] * 1000 : 0;
    fprintf(stderr, "bench_events: %s: %zu samples, p50 %.2f ms, p99 %.2f ms, max %.2f ms\n", what,
            n, p50, p99, max);
    char k[96];
    snprintf(k, sizeof k, "%s_samples", key);
    json_object_set_new(out, k, json_integer((json_int_t)n));
    snprintf(k, sizeof k, "%s_p50_ms", key);
    json_object_set_new(out, k, json_real(p50));
    snprintf(k, sizeof k, "%s_p99_ms", key);
    json_object_set_new(out, k, json_real(p99));
    snprintf(k, sizeof k, "%s_max_ms", key);
    json_object_set_new(out, k, json_real(max));
}

/* Durable events of a replay of r (the run has ended, so the stream ends). */
static int replay_count(az_conn *c, const run *r)
{
    Agentz__V1__WatchRunRequest req = AGENTZ__V1__WATCH_RUN_REQUEST__INIT;
    req.run_id = (char *)r->id;
    az_conn_stream *s = NULL;
    int stc = 0;
    char msg[AZ_MSG_MAX];
    if (az_conn_stream_open(c, WATCH_METHOD, &req.base, &agentz__v1__event__descriptor, 30000, NULL,
                            &s, &stc, msg) != AZ_OK)
        die("WatchRun replay failed: %s: %s", az_conn_status_name(stc), msg);
    int n = 0;
    for (;;) {
        ProtobufCMessage *m = NULL;
        if (az_conn_stream_next(s, &m, &stc, msg) != AZ_OK)
            die("WatchRun replay of %s ended with %s: %s", r->id, az_conn_status_name(stc), msg);
        if (!m) break;
        if (((Agentz__V1__Event *)m)->sequence > 0) n++;
        protobuf_c_message_free_unpacked(m, NULL);
    }
    az_conn_stream_close(s);
    return n;
}

/* ---------------------------------------------------------------- the scenario */

static int run_bench(json_t *out)
{
    int R = opt.runs, W = opt.watchers;
    az_conn *c = connect_server();
    create_workflow(c, workflow_id);
    runs = calloc((size_t)R, sizeof *runs);
    if (!runs) die("out of memory");
    double t_start = parallel(starter_main, R, opt.clients);
    fprintf(stderr, "bench_events: started %d runs in %.2f s\n", R, t_start);

    tap_start();
    nstreams = (size_t)R * (size_t)W;
    streams = calloc(nstreams, sizeof *streams);
    if (!streams) die("out of memory");
    for (size_t i = 0; i < nstreams; i++) streams[i].r = &runs[i % (size_t)R];
    if (opt.tr == TR_GRPC) {
        cq = grpc_completion_queue_create_for_next(NULL);
        pthread_create(&cq_thread, NULL, cq_main, NULL);
        open_channels((nstreams + STREAMS_PER_CONN - 1) / STREAMS_PER_CONN);
    }
    /* Connect every channel before measuring, so connections are not counted per stream. */
    for (size_t i = 0; i < nchannels; i++) {
        grpc_connectivity_state s = grpc_channel_check_connectivity_state(channels[i], 1);
        double until = now_s() + 10;
        while (s != GRPC_CHANNEL_READY && now_s() < until) {
            usleep(10 * 1000);
            s = grpc_channel_check_connectivity_state(channels[i], 1);
        }
    }
    pid_t measured = opt.tr == TR_SSE ? gw_child : child;
    long rss0 = rss_settled(measured, 2.0);
    long threads0 = proc_kb(measured, "Threads");
    double t0 = now_s();
    if (opt.tr == TR_SSE)
        sse_open();
    else
        for (size_t i = 0; i < nstreams; i++) open_stream(&streams[i], channels[i / STREAMS_PER_CONN]);
    /* Every stream has replayed its run's first events (so its subscription is live). */
    if (!wait_count(&a_opened, nstreams, opt.timeout_s, "streams with their replay"))
        die("only %zu of %zu streams got their replay within %d s (first error: %s)",
            atomic_load(&a_opened), nstreams, opt.timeout_s, st.first_error);
    double open_s = now_s() - t0;
    long rss1 = rss_settled(measured, 3.0);
    long threads1 = proc_kb(measured, "Threads");
    double kb_per_stream = (double)(rss1 - rss0) / (double)nstreams;
    fprintf(stderr,
            "bench_events: %zu %s streams (%d runs x %d) on %zu connections open and replayed in %.2f s; "
            "%s VmRSS %.1f MB -> %.1f MB = %.2f kB per stream; threads %ld -> %ld\n",
            nstreams, TRANSPORTS[opt.tr], R, W, opt.tr == TR_SSE ? nstreams : nchannels, open_s,
            opt.tr == TR_SSE ? "agentz-gateway" : "agentzd", rss0 / 1024.0, rss1 / 1024.0, kb_per_stream,
            threads0, threads1);
    if (atomic_load(&a_ended))
        die("%zu streams ended before their run did (first: %s)", atomic_load(&a_ended), st.first_error);

    /* The state changes. */
    atomic_store(&measure_from, wall_s());
    double tc0 = now_s();
    if (opt.sc == SC_LATENCY) {
        for (int i = 0; i < R; i++) {
            cancel_run(c, &runs[i]);
            double until = now_s() + 30;
            while (atomic_load(&runs[i].seen) < W) {
                if (now_s() > until) die("run %s: its CANCELLED event did not arrive within 30 s", runs[i].id);
                usleep(100);
            }
            if (opt.pause_ms > 0) usleep((useconds_t)opt.pause_ms * 1000);
        }
    } else {
        parallel(canceller_main, R, opt.clients);
    }
    double cancel_s = now_s() - tc0;
    if (!wait_count(&a_ended, nstreams, opt.timeout_s, "streams ended"))
        die("only %zu of %zu streams ended within %d s of the cancellations", atomic_load(&a_ended),
            nstreams, opt.timeout_s);
    double deliver_s = now_s() - tc0;
    if (opt.tr == TR_GRPC) {
        grpc_completion_queue_shutdown(cq);
        pthread_join(cq_thread, NULL);
    }

    /* Every stream got its run's whole history: a replay has as many durable events. */
    size_t bad = 0;
    for (int i = 0; i < R; i++) runs[i].replay_durable = replay_count(c, &runs[i]);
    for (size_t i = 0; i < nstreams; i++) {
        stream *s = &streams[i];
        if (s->status != GRPC_STATUS_OK || s->bad_order || s->durable != s->r->replay_durable) {
            if (!bad)
                fprintf(stderr, "bench_events: stream %zu of run %s: status %d, %d durable events "
                        "(%d out of order), replay has %d\n", i, s->r->id, (int)s->status, s->durable,
                        s->bad_order, s->r->replay_durable);
            bad++;
        }
    }
    fprintf(stderr, "bench_events: %zu streams ended OK of %zu; %zu with a wrong history; %zu messages; "
            "cancellations took %.2f s, last stream ended %.2f s after the first cancellation\n",
            st.ended_ok, nstreams, bad, st.events, cancel_s, deliver_s);
    report_lat(out, "event_lat", st.lat, st.nlat, "Event.time -> receipt at a watcher");
    report_lat(out, "cancel_lat", st.cancel_lat, st.ncancel, "CancelRun return -> CANCELLED at a watcher");
    /* The split, per run: CancelRun's return -> the Redis tap -> the run's first watcher. */
    tap_stop();
    double *to_redis = calloc((size_t)R, sizeof *to_redis), *to_watcher = calloc((size_t)R, sizeof *to_watcher);
    size_t nsplit = 0;
    for (int i = 0; i < R; i++) {
        long long c = atomic_load(&runs[i].cancelled_ns), rd = atomic_load(&runs[i].redis_ns),
                  w1 = atomic_load(&runs[i].first_ns);
        if (!c || !rd || !w1) continue;
        to_redis[nsplit] = rd > c ? (double)(rd - c) / 1e9 : 0;
        to_watcher[nsplit++] = w1 > rd ? (double)(w1 - rd) / 1e9 : 0;
    }
    report_lat(out, "to_redis", to_redis, nsplit, "CancelRun return -> PUBLISH seen on Redis (outbox, relay)");
    report_lat(out, "redis_to_watcher", to_watcher, nsplit, "Redis -> first watcher (hub, stream)");
    free(to_redis);
    free(to_watcher);
    json_object_set_new(out, "scenario", json_string(SCENARIOS[opt.sc]));
    json_object_set_new(out, "transport", json_string(TRANSPORTS[opt.tr]));
    json_object_set_new(out, "runs", json_integer(R));
    json_object_set_new(out, "pause_ms", json_integer(opt.sc == SC_LATENCY ? opt.pause_ms : 0));
    json_object_set_new(out, "watchers_per_run", json_integer(W));
    json_object_set_new(out, "streams", json_integer((json_int_t)nstreams));
    json_object_set_new(out, "connections", json_integer((json_int_t)(opt.tr == TR_SSE ? nstreams : nchannels)));
    json_object_set_new(out, "open_s", json_real(open_s));
    json_object_set_new(out, "rss_before_kb", json_integer(rss0));
    json_object_set_new(out, "rss_streams_kb", json_integer(rss1));
    json_object_set_new(out, "kb_per_stream", json_real(kb_per_stream));
    json_object_set_new(out, "threads_before", json_integer(threads0));
    json_object_set_new(out, "threads_streams", json_integer(threads1));
    json_object_set_new(out, "cancel_s", json_real(cancel_s));
    json_object_set_new(out, "deliver_s", json_real(deliver_s));
    json_object_set_new(out, "messages", json_integer((json_int_t)st.events));
    json_object_set_new(out, "ended_ok", json_integer((json_int_t)st.ended_ok));
    json_object_set_new(out, "bad_streams", json_integer((json_int_t)bad));
    if (opt.tr == TR_SSE) sse_close();
    free_streams();
    az_conn_free(c);
    free(runs);
    free(st.lat);
    free(st.cancel_lat);
    return bad == 0 && st.ended_ok == nstreams ? 0 : 1;
}

/* ---------------------------------------------------------------- main */

static void usage(void)
{
    fprintf(stderr,
            "usage: bench_events --scenario latency|fanout [--agentzd PATH] [--data-dir DIR]\n"
            "                    [--runs N] [--watchers W] [--clients N] [--roles api|api,worker]\n"
            "                    [--pause-ms MS] [--timeout-s S] [--json] [--keep]\n"
            "                    [--transport grpc|sse] [--gateway PATH]\n"
            "  latency: N=1000 runs, W=1, runs cancelled one at a time, MS=10 apart after delivery\n"
            "  fanout:  N=1000 runs, W=10 (10,000 streams), runs cancelled all at once\n"
            "  sse:     the streams as Server-Sent Events through an agentz-gateway (PATH, default\n"
            "           next to agentzd) started in front of agentzd; memory is the gateway's\n");
    exit(2);
}

int main(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"scenario", required_argument, NULL, 's'}, {"agentzd", required_argument, NULL, 'a'},
        {"data-dir", required_argument, NULL, 'd'}, {"runs", required_argument, NULL, 'r'},
        {"watchers", required_argument, NULL, 'w'}, {"clients", required_argument, NULL, 'c'},
        {"roles", required_argument, NULL, 'R'},    {"timeout-s", required_argument, NULL, 't'},
        {"pause-ms", required_argument, NULL, 'p'}, {"transport", required_argument, NULL, 'T'},
        {"gateway", required_argument, NULL, 'g'},
        {"json", no_argument, NULL, 'j'},           {"keep", no_argument, NULL, 'k'},
        {"help", no_argument, NULL, 'h'},           {NULL, 0, NULL, 0}};
    int have_sc = 0, ch;
    opt.agentzd = getenv("AGENTZD") ? getenv("AGENTZD") : "build/bin/agentzd";
    while ((ch = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (ch) {
        case 's':
            have_sc = 0;
            for (size_t i = 0; i < sizeof SCENARIOS / sizeof *SCENARIOS; i++)
                if (strcmp(optarg, SCENARIOS[i]) == 0) {
                    opt.sc = (scenario)i;
                    have_sc = 1;
                }
            if (!have_sc) usage();
            break;
        case 'a': opt.agentzd = optarg; break;
        case 'd': opt.data_dir = optarg; break;
        case 'r': opt.runs = atoi(optarg); break;
        case 'w': opt.watchers = atoi(optarg); break;
        case 'c': opt.clients = atoi(optarg); break;
        case 'R': opt.roles = optarg; break;
        case 't': opt.timeout_s = atoi(optarg); break;
        case 'p': opt.pause_ms = atoi(optarg); break;
        case 'T':
            if (strcmp(optarg, "sse") == 0) opt.tr = TR_SSE;
            else if (strcmp(optarg, "grpc") == 0) opt.tr = TR_GRPC;
            else usage();
            break;
        case 'g': opt.gateway = optarg; break;
        case 'j': opt.json = 1; break;
        case 'k': opt.keep = 1; break;
        default: usage();
        }
    }
    if (!have_sc || opt.runs < 1 || opt.clients < 1) usage();
    if (opt.watchers < 1) opt.watchers = opt.sc == SC_FANOUT ? 10 : 1;
    signal(SIGPIPE, SIG_IGN);
    /* 10,000 streams need no more sockets than connections, but agentzd inherits this limit
     * and holds a descriptor per connection plus its own. */
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    if (opt.data_dir) {
        snprintf(base_dir, sizeof base_dir, "%s", opt.data_dir);
        mkdir(base_dir, 0755);
    } else {
        snprintf(base_dir, sizeof base_dir, "/tmp/agentz-bench-events.XXXXXX");
        if (!mkdtemp(base_dir)) die("mkdtemp: %s", strerror(errno));
    }
    /* The embedded PostgreSQL runs as the postgres user when we are root. */
    chmod(base_dir, 0755);
    static char gwpath[600];
    if (opt.tr == TR_SSE && !opt.gateway) {
        /* agentz-gateway is built next to agentzd. */
        snprintf(gwpath, sizeof gwpath, "%s", opt.agentzd);
        char *slash = strrchr(gwpath, '/');
        snprintf(slash ? slash + 1 : gwpath, sizeof gwpath - (size_t)(slash ? slash + 1 - gwpath : 0), "agentz-gateway");
        opt.gateway = gwpath;
    }
    grpc_init();
    start_agentzd();
    if (opt.tr == TR_SSE) start_gateway();
    json_t *out = json_object();
    int rc = run_bench(out);
    int gw_status = stop_gateway();
    if (gw_status != 0) {
        fprintf(stderr, "bench_events: agentz-gateway exited with %d after SIGTERM (log %s/gateway.log)\n",
                gw_status, base_dir);
        rc = 1;
    }
    int exit_status = 0;
    stop_child(SIGTERM, 60, &exit_status);
    if (exit_status != 0) {
        fprintf(stderr, "bench_events: agentzd exited with %d after SIGTERM (log %s/agentzd.log)\n",
                exit_status, base_dir);
        rc = 1;
    }
    json_object_set_new(out, "agentzd_exit", json_integer(exit_status));
    if (opt.json) {
        char *s = json_dumps(out, JSON_COMPACT);
        printf("%s\n", s);
        free(s);
    }
    json_decref(out);
    if (!opt.keep && !opt.data_dir) cleanup_dir();
    else if (opt.keep) fprintf(stderr, "bench_events: kept %s\n", base_dir);
    return rc;
}
