/* bench_rpc: a closed-loop load generator for one AGENTZ RPC. N threads, each with its own
 * channel and HTTP/2 connection, call one operation back to back for a fixed time; latencies go
 * into a fixed-size log-linear histogram, and one line of results is printed (or one JSON object).
 *
 * Why not az_conn for the load: gRPC core shares subchannels between channels created with
 * identical arguments, so N az_conns to one target are N channels over ONE TCP connection. The
 * default transport here is a minimal unary call on a channel with a private subchannel pool;
 * --transport azconn measures the CLI's transport (and its shared connection) instead.
 *
 * --op rest-get is GetAgent through the HTTP gateway (--gateway URL): each thread keeps one
 * libcurl handle, hence one keep-alive HTTP/1.1 connection, so it measures the same work as
 * --op get plus the gateway's hop and JSON. */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/support/time.h>

#include <curl/curl.h>

#include "agentz/v1/agent.pb-c.h"
#include "conn.h"
#include "core/text.h"
#include "google/protobuf/empty.pb-c.h"
#include "grpc/health/v1/health.pb-c.h"

/* ---------------------------------------------------------------- histogram */

/* Log-linear buckets over microseconds: values below 2^SUB_BITS are exact, every further
 * power of two is split into 2^(SUB_BITS-1) buckets (relative error < 1/64 with SUB_BITS=7).
 * Values are clamped at 2^MAX_BITS us (~38 h), so the table has a fixed size. */
#define SUB_BITS 7
#define SUB (1u << SUB_BITS)
#define HALF (SUB / 2)
#define MAX_BITS 37
#define NBUCKETS (SUB + (MAX_BITS - SUB_BITS + 1) * HALF)

typedef struct hist {
    uint64_t count[NBUCKETS];
    uint64_t total;
    uint64_t max_us;
    uint64_t sum_us;
} hist;

static size_t bucket_of(uint64_t v)
{
    if (v >= (1ull << MAX_BITS)) v = (1ull << MAX_BITS) - 1;
    if (v < SUB) return (size_t)v;
    int msb = 63 - __builtin_clzll(v);
    int shift = msb - (SUB_BITS - 1);
    return SUB + (size_t)(shift - 1) * HALF + (size_t)((v >> shift) - HALF);
}

/* The highest value bucket i holds: percentiles never under-report. */
static uint64_t bucket_high(size_t i)
{
    if (i < SUB) return i;
    size_t shift = (i - SUB) / HALF + 1;
    uint64_t m = (i - SUB) % HALF + HALF;
    return ((m + 1) << shift) - 1;
}

static void hist_add(hist *h, uint64_t us)
{
    h->count[bucket_of(us)]++;
    h->total++;
    h->sum_us += us;
    if (us > h->max_us) h->max_us = us;
}

static void hist_merge(hist *into, const hist *h)
{
    for (size_t i = 0; i < NBUCKETS; i++) into->count[i] += h->count[i];
    into->total += h->total;
    into->sum_us += h->sum_us;
    if (h->max_us > into->max_us) into->max_us = h->max_us;
}

static uint64_t hist_pct(const hist *h, double pct)
{
    if (!h->total) return 0;
    uint64_t want = (uint64_t)((double)h->total * pct / 100.0 + 0.5);
    if (want < 1) want = 1;
    uint64_t seen = 0;
    for (size_t i = 0; i < NBUCKETS; i++) {
        seen += h->count[i];
        if (seen >= want) {
            uint64_t v = bucket_high(i);
            return v < h->max_us ? v : h->max_us;
        }
    }
    return h->max_us;
}

/* ---------------------------------------------------------------- operations */

typedef enum { OP_CREATE, OP_GET, OP_LIST, OP_HEALTH, OP_UNIMPLEMENTED, OP_REST_GET } op_kind;

static const char *const op_names[] = {"create", "get", "list", "health", "unimplemented", "rest-get"};

#define GET_IDS 100    /* agents GetAgent cycles through */
#define LIST_AGENTS 200 /* agents carrying the label ListAgents selects */
#define LIST_PAGE 50

typedef struct config {
    const char *server;
    op_kind op;
    int concurrency;
    int64_t duration_us, warmup_us;
    int timeout_ms;
    int json;
    int azconn; /* --transport azconn */
    const char *token; /* --token: sent as "authorization: Bearer <token>" */
    const char *gateway; /* --gateway: base URL of the HTTP gateway for rest-get */
    char auth[600];    /* "Bearer <token>" */
    char run_id[16];
} config;

static config cfg = {.concurrency = 1, .duration_us = 10000000, .warmup_us = 2000000,
                     .timeout_ms = 10000};
static char get_ids[GET_IDS][37];
static char list_selector[64];

typedef struct worker {
    pthread_t th;
    int index;
    az_conn *conn;              /* --transport azconn */
    grpc_channel *channel;      /* --transport private */
    grpc_completion_queue *cq;  /* private: one pluck queue, one call at a time */
    hist h;
    uint64_t ops, errors;
    int first_status;
    char first_error[AZ_MSG_MAX];
    uint64_t seq;
    CURL *curl;                 /* rest-get: one keep-alive connection per thread */
    struct curl_slist *headers;
    char *body;                 /* the response being read */
    size_t body_len, body_cap;
} worker;

static int64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* One unary call on w's private channel: the same batches az_conn_unary starts, in one batch.
 * Results as for az_conn_unary. */
static az_err raw_unary(worker *w, const char *method, const ProtobufCMessage *req,
                        const ProtobufCMessageDescriptor *out_desc, ProtobufCMessage **resp,
                        int *status, char *msg)
{
    *resp = NULL;
    gpr_timespec deadline =
        cfg.timeout_ms > 0 ? gpr_time_add(gpr_now(GPR_CLOCK_REALTIME),
                                          gpr_time_from_millis(cfg.timeout_ms, GPR_TIMESPAN))
                           : gpr_inf_future(GPR_CLOCK_REALTIME);
    grpc_slice m = grpc_slice_from_static_string(method);
    grpc_call *call = grpc_channel_create_call(w->channel, NULL, GRPC_PROPAGATE_DEFAULTS, w->cq, m,
                                               NULL, deadline, NULL);
    size_t n = protobuf_c_message_get_packed_size(req);
    grpc_slice body = grpc_slice_malloc(n);
    protobuf_c_message_pack(req, GRPC_SLICE_START_PTR(body));
    grpc_byte_buffer *send = grpc_raw_byte_buffer_create(&body, 1);
    grpc_slice_unref(body);
    grpc_byte_buffer *recv = NULL;
    grpc_metadata_array initial, trailing;
    grpc_metadata_array_init(&initial);
    grpc_metadata_array_init(&trailing);
    grpc_status_code st = GRPC_STATUS_UNKNOWN;
    grpc_slice details = grpc_empty_slice();
    grpc_op ops[6];
    memset(ops, 0, sizeof ops);
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    grpc_metadata md;
    if (cfg.token) {
        md.key = grpc_slice_from_static_string("authorization");
        md.value = grpc_slice_from_static_string(cfg.auth);
        ops[0].data.send_initial_metadata.count = 1;
        ops[0].data.send_initial_metadata.metadata = &md;
    }
    ops[1].op = GRPC_OP_SEND_MESSAGE;
    ops[1].data.send_message.send_message = send;
    ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[3].data.recv_initial_metadata.recv_initial_metadata = &initial;
    ops[4].op = GRPC_OP_RECV_MESSAGE;
    ops[4].data.recv_message.recv_message = &recv;
    ops[5].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    ops[5].data.recv_status_on_client.trailing_metadata = &trailing;
    ops[5].data.recv_status_on_client.status = &st;
    ops[5].data.recv_status_on_client.status_details = &details;
    az_err err = AZ_OK;
    if (grpc_call_start_batch(call, ops, 6, w, NULL) != GRPC_CALL_OK) {
        st = GRPC_STATUS_INTERNAL;
        snprintf(msg, AZ_MSG_MAX, "cannot start the call");
    } else {
        grpc_completion_queue_pluck(w->cq, w, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
        if (st != GRPC_STATUS_OK) {
            snprintf(msg, AZ_MSG_MAX, "%.*s", (int)GRPC_SLICE_LENGTH(details),
                     (const char *)GRPC_SLICE_START_PTR(details));
        } else if (recv) {
            grpc_byte_buffer_reader rd;
            if (grpc_byte_buffer_reader_init(&rd, recv)) {
                grpc_slice all = grpc_byte_buffer_reader_readall(&rd);
                grpc_byte_buffer_reader_destroy(&rd);
                *resp = protobuf_c_message_unpack(out_desc, NULL, GRPC_SLICE_LENGTH(all),
                                                  GRPC_SLICE_START_PTR(all));
                grpc_slice_unref(all);
            }
        }
        if (st == GRPC_STATUS_OK && !*resp) {
            st = GRPC_STATUS_INTERNAL;
            snprintf(msg, AZ_MSG_MAX, "response does not parse as %s", out_desc->name);
        }
    }
    *status = (int)st;
    if (st != GRPC_STATUS_OK) err = az_conn_err_from_status((int)st);
    if (recv) grpc_byte_buffer_destroy(recv);
    grpc_byte_buffer_destroy(send);
    grpc_slice_unref(details);
    grpc_metadata_array_destroy(&initial);
    grpc_metadata_array_destroy(&trailing);
    grpc_call_unref(call);
    return err;
}

static az_err unary(worker *w, const char *method, const ProtobufCMessage *req,
                    const ProtobufCMessageDescriptor *out_desc, ProtobufCMessage **resp,
                    int *status, char *msg)
{
    if (w->conn)
        return az_conn_unary(w->conn, method, req, out_desc, cfg.timeout_ms, NULL, resp, status,
                             msg);
    return raw_unary(w, method, req, out_desc, resp, status, msg);
}

static az_err create_one(worker *w, const char *name, const char *label_key, const char *label_value,
                         char id_out[37], int *status, char *msg)
{
    Agentz__V1__Agent a = AGENTZ__V1__AGENT__INIT;
    a.name = (char *)name;
    a.role = "benchmark";
    a.goal = "measure the server";
    a.backstory = "created by bench_rpc";
    Agentz__V1__Agent__LabelsEntry e = AGENTZ__V1__AGENT__LABELS_ENTRY__INIT;
    Agentz__V1__Agent__LabelsEntry *labels[1] = {&e};
    e.key = (char *)label_key;
    e.value = (char *)label_value;
    a.labels = labels;
    a.n_labels = 1;
    Agentz__V1__CreateAgentRequest req = AGENTZ__V1__CREATE_AGENT_REQUEST__INIT;
    req.agent = &a;
    ProtobufCMessage *resp = NULL;
    az_err err = unary(w, "/agentz.v1.AgentService/CreateAgent", &req.base,
                       &agentz__v1__agent__descriptor, &resp, status, msg);
    if (err == AZ_OK) {
        if (id_out) snprintf(id_out, 37, "%s", ((Agentz__V1__Agent *)resp)->id);
        protobuf_c_message_free_unpacked(resp, NULL);
    }
    return err;
}

static size_t on_body(char *p, size_t size, size_t n, void *arg)
{
    worker *w = arg;
    size_t len = size * n;
    if (w->body_len + len + 1 > w->body_cap) {
        size_t cap = (w->body_len + len + 1) * 2;
        char *nb = realloc(w->body, cap);
        if (!nb) return 0;
        w->body = nb;
        w->body_cap = cap;
    }
    memcpy(w->body + w->body_len, p, len);
    w->body_len += len;
    w->body[w->body_len] = '\0';
    return len;
}

/* GetAgent as GET {gateway}/v1/agents/{id}: 200 and a body naming the id is a success. */
static int rest_get(worker *w, int *status, char *msg)
{
    const char *id = get_ids[(w->seq++ + (uint64_t)w->index * 7) % GET_IDS];
    char url[512];
    snprintf(url, sizeof url, "%s/v1/agents/%s", cfg.gateway, id);
    curl_easy_setopt(w->curl, CURLOPT_URL, url);
    w->body_len = 0;
    CURLcode rc = curl_easy_perform(w->curl);
    long code = 0;
    curl_easy_getinfo(w->curl, CURLINFO_RESPONSE_CODE, &code);
    *status = code == 200 ? 0 : (int)code;
    if (rc != CURLE_OK) {
        snprintf(msg, AZ_MSG_MAX, "GET %.300s: %s", url, curl_easy_strerror(rc));
        *status = -1;
        return 0;
    }
    if (code != 200 || !w->body || !strstr(w->body, id)) {
        snprintf(msg, AZ_MSG_MAX, "GET %.200s: HTTP %ld: %.200s", url, code, w->body ? w->body : "");
        return 0;
    }
    return 1;
}

/* One call of the configured operation. Returns 1 on success. */
static int run_op(worker *w, int *status, char *msg)
{
    ProtobufCMessage *resp = NULL;
    az_err err;
    *status = 0;
    switch (cfg.op) {
    case OP_CREATE: {
        char name[96];
        snprintf(name, sizeof name, "bench-%s-%d-%" PRIu64, cfg.run_id, w->index, w->seq++);
        return create_one(w, name, "bench", cfg.run_id, NULL, status, msg) == AZ_OK;
    }
    case OP_GET: {
        Agentz__V1__GetAgentRequest req = AGENTZ__V1__GET_AGENT_REQUEST__INIT;
        req.id = get_ids[(w->seq++ + (uint64_t)w->index * 7) % GET_IDS];
        err = unary(w, "/agentz.v1.AgentService/GetAgent", &req.base,
                            &agentz__v1__agent__descriptor, &resp, status, msg);
        break;
    }
    case OP_LIST: {
        Agentz__V1__ListAgentsRequest req = AGENTZ__V1__LIST_AGENTS_REQUEST__INIT;
        req.page_size = LIST_PAGE;
        req.label_selector = list_selector;
        err = unary(w, "/agentz.v1.AgentService/ListAgents", &req.base,
                            &agentz__v1__list_agents_response__descriptor, &resp, status, msg);
        if (err == AZ_OK && ((Agentz__V1__ListAgentsResponse *)resp)->n_agents != LIST_PAGE) {
            snprintf(msg, AZ_MSG_MAX, "ListAgents returned %zu agents, expected %d",
                     ((Agentz__V1__ListAgentsResponse *)resp)->n_agents, LIST_PAGE);
            err = AZ_ERR_INTERNAL;
        }
        break;
    }
    case OP_HEALTH: {
        Grpc__Health__V1__HealthCheckRequest req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
        err = unary(w, "/grpc.health.v1.Health/Check", &req.base,
                            &grpc__health__v1__health_check_response__descriptor, &resp, status,
                            msg);
        break;
    }
    case OP_UNIMPLEMENTED: {
        /* The server's generic path: the expected answer is UNIMPLEMENTED. */
        Google__Protobuf__Empty req = GOOGLE__PROTOBUF__EMPTY__INIT;
        err = unary(w, "/agentz.v1.AgentService/NoSuchMethod", &req.base,
                            &google__protobuf__empty__descriptor, &resp, status, msg);
        if (err != AZ_OK && *status == 12) return 1;
        if (err == AZ_OK) {
            snprintf(msg, AZ_MSG_MAX, "unknown method succeeded");
            err = AZ_ERR_INTERNAL;
        }
        break;
    }
    case OP_REST_GET: return rest_get(w, status, msg);
    default:
        return 0;
    }
    if (resp) protobuf_c_message_free_unpacked(resp, NULL);
    return err == AZ_OK;
}

static int64_t t_measure, t_end;

static void *worker_main(void *arg)
{
    worker *w = arg;
    char msg[AZ_MSG_MAX];
    for (;;) {
        int64_t t0 = now_us();
        if (t0 >= t_end) break;
        int status;
        int ok = run_op(w, &status, msg);
        int64_t t1 = now_us();
        if (t0 < t_measure) continue; /* warm-up: connections, caches, plans */
        w->ops++;
        if (!ok) {
            if (!w->errors) {
                w->first_status = status;
                snprintf(w->first_error, sizeof w->first_error, "%s", msg);
            }
            w->errors++;
        }
        hist_add(&w->h, (uint64_t)(t1 - t0));
    }
    return NULL;
}

/* ---------------------------------------------------------------- setup */

static int setup(worker *c)
{
    char msg[AZ_MSG_MAX], name[96];
    int status;
    if (cfg.op == OP_GET || cfg.op == OP_REST_GET) {
        for (int i = 0; i < GET_IDS; i++) {
            snprintf(name, sizeof name, "bench-%s-get-%d", cfg.run_id, i);
            if (create_one(c, name, "bench", cfg.run_id, get_ids[i], &status, msg) != AZ_OK) {
                fprintf(stderr, "bench_rpc: setup: cannot create agent: %s (%s)\n", msg,
                        az_conn_status_name(status));
                return -1;
            }
        }
    } else if (cfg.op == OP_LIST) {
        for (int i = 0; i < LIST_AGENTS; i++) {
            snprintf(name, sizeof name, "bench-%s-list-%d", cfg.run_id, i);
            if (create_one(c, name, "bench-list", cfg.run_id, NULL, &status, msg) != AZ_OK) {
                fprintf(stderr, "bench_rpc: setup: cannot create agent: %s (%s)\n", msg,
                        az_conn_status_name(status));
                return -1;
            }
        }
        snprintf(list_selector, sizeof list_selector, "bench-list=%s", cfg.run_id);
    }
    return 0;
}

/* ---------------------------------------------------------------- command line */

/* "10s", "500ms", "2m", "1.5s", or a bare number of seconds. */
static int parse_duration(const char *s, int64_t *us)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || v < 0) return -1;
    double mult;
    if (!*end || strcmp(end, "s") == 0) mult = 1e6;
    else if (strcmp(end, "ms") == 0) mult = 1e3;
    else if (strcmp(end, "m") == 0) mult = 60e6;
    else return -1;
    *us = (int64_t)(v * mult);
    return 0;
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: bench_rpc --server HOST:PORT --op create|get|list|health|unimplemented|rest-get\n"
            "                 [--concurrency N] [--duration 10s] [--warmup 2s]\n"
            "                 [--timeout-ms MS] [--transport private|azconn] [--token T] [--json]\n"
            "  --token T         bearer token (an API key, e.g. DATA/admin.key's content)\n"
            "  --concurrency N   client threads, each with its own connection (default 1)\n"
            "  --duration D      measured time (default 10s)\n"
            "  --warmup D        unmeasured time before it (default 2s)\n"
            "  --timeout-ms MS   per-call deadline; 0 = none (default 10000)\n"
            "  --transport T     private (default): one channel and TCP connection per thread;\n"
            "                    azconn: one az_conn per thread (gRPC shares their connection)\n"
            "  --json            print one JSON object instead of the text line\n"
            "  --gateway URL     the HTTP gateway for --op rest-get (http://127.0.0.1:8080);\n"
            "                    --server still names agentzd, which creates the agents\n"
            "Exits 1 when more than 1%% of the calls failed, 2 on bad usage or setup failure.\n");
}

static int parse_args(int argc, char **argv)
{
    static const struct option opts[] = {
        {"server", required_argument, 0, 's'},     {"op", required_argument, 0, 'o'},
        {"concurrency", required_argument, 0, 'c'}, {"duration", required_argument, 0, 'd'},
        {"warmup", required_argument, 0, 'w'},     {"timeout-ms", required_argument, 0, 't'},
        {"json", no_argument, 0, 'j'},             {"help", no_argument, 0, 'h'},
        {"transport", required_argument, 0, 'T'}, {"token", required_argument, 0, 'k'},
        {"gateway", required_argument, 0, 'g'},
        {0, 0, 0, 0},
    };
    int have_op = 0, ch;
    while ((ch = getopt_long(argc, argv, "s:o:c:d:w:t:jh", opts, NULL)) != -1) {
        char *end;
        switch (ch) {
        case 's': cfg.server = optarg; break;
        case 'o':
            have_op = 0;
            for (size_t i = 0; i < sizeof op_names / sizeof *op_names; i++) {
                if (strcmp(optarg, op_names[i]) == 0) {
                    cfg.op = (op_kind)i;
                    have_op = 1;
                }
            }
            if (!have_op) {
                fprintf(stderr, "bench_rpc: --op: unknown operation \"%s\"\n", optarg);
                return -1;
            }
            break;
        case 'c':
            cfg.concurrency = (int)strtol(optarg, &end, 10);
            if (*end || cfg.concurrency < 1 || cfg.concurrency > 1024) {
                fprintf(stderr, "bench_rpc: --concurrency: must be 1..1024\n");
                return -1;
            }
            break;
        case 'd':
            if (parse_duration(optarg, &cfg.duration_us) || cfg.duration_us <= 0) {
                fprintf(stderr, "bench_rpc: --duration: \"%s\" is not a duration like 10s\n", optarg);
                return -1;
            }
            break;
        case 'w':
            if (parse_duration(optarg, &cfg.warmup_us)) {
                fprintf(stderr, "bench_rpc: --warmup: \"%s\" is not a duration like 2s\n", optarg);
                return -1;
            }
            break;
        case 't':
            cfg.timeout_ms = (int)strtol(optarg, &end, 10);
            if (*end || cfg.timeout_ms < 0) {
                fprintf(stderr, "bench_rpc: --timeout-ms: must be a number >= 0\n");
                return -1;
            }
            break;
        case 'j': cfg.json = 1; break;
        case 'k':
            if (strlen(optarg) + 8 >= sizeof cfg.auth) {
                fprintf(stderr, "bench_rpc: --token: too long\n");
                return -1;
            }
            cfg.token = optarg;
            snprintf(cfg.auth, sizeof cfg.auth, "Bearer %s", optarg);
            break;
        case 'T':
            if (strcmp(optarg, "azconn") == 0) cfg.azconn = 1;
            else if (strcmp(optarg, "private") == 0) cfg.azconn = 0;
            else {
                fprintf(stderr, "bench_rpc: --transport: use private or azconn\n");
                return -1;
            }
            break;
        case 'g': cfg.gateway = optarg; break;
        case 'h': usage(stdout); exit(0);
        default: usage(stderr); return -1;
        }
    }
    if (!cfg.server || optind < argc) {
        usage(stderr);
        return -1;
    }
    if (!have_op) {
        fprintf(stderr, "bench_rpc: --op is required\n");
        return -1;
    }
    if ((cfg.op == OP_REST_GET) != !!cfg.gateway) {
        fprintf(stderr, "bench_rpc: --gateway goes with --op rest-get, and only with it\n");
        return -1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    if (parse_args(argc, argv)) return 2;
    char uuid[37];
    if (az_text_uuid4(uuid) != AZ_OK) {
        fprintf(stderr, "bench_rpc: cannot generate a run id\n");
        return 2;
    }
    snprintf(cfg.run_id, sizeof cfg.run_id, "%.8s%.4s", uuid, uuid + 9);

    worker *ws = calloc((size_t)cfg.concurrency, sizeof *ws);
    if (!ws) return 2;
    char msg[AZ_MSG_MAX];
    grpc_init();
    for (int i = 0; i < cfg.concurrency; i++) {
        ws[i].index = i;
        if (cfg.azconn) {
            az_conn_opts o = {.target = cfg.server, .token = cfg.token};
            if (az_conn_open(&o, &ws[i].conn, msg) != AZ_OK) {
                fprintf(stderr, "bench_rpc: cannot connect to %s: %s\n", cfg.server, msg);
                return 2;
            }
            continue;
        }
        /* A private subchannel pool: this channel gets its own TCP connection. */
        grpc_arg args[2] = {
            {.type = GRPC_ARG_INTEGER, .key = (char *)GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL,
             .value.integer = 1},
            {.type = GRPC_ARG_STRING, .key = (char *)GRPC_ARG_PRIMARY_USER_AGENT_STRING,
             .value.string = (char *)"agentz-bench/" AZ_VERSION},
        };
        grpc_channel_args chargs = {.num_args = 2, .args = args};
        grpc_channel_credentials *creds = grpc_insecure_credentials_create();
        ws[i].channel = grpc_channel_create(cfg.server, creds, &chargs);
        grpc_channel_credentials_release(creds);
        ws[i].cq = grpc_completion_queue_create_for_pluck(NULL);
        if (!ws[i].channel || !ws[i].cq) {
            fprintf(stderr, "bench_rpc: cannot create a channel to %s\n", cfg.server);
            return 2;
        }
    }
    /* Connect every channel before the clock starts: a call on a channel still connecting
     * fails fast with UNAVAILABLE, and 32 of those in a tight loop would be all we measured. */
    for (int i = 0; i < cfg.concurrency && !cfg.azconn; i++) {
        int64_t until = now_us() + 15000000;
        grpc_connectivity_state st;
        while ((st = grpc_channel_check_connectivity_state(ws[i].channel, 1)) != GRPC_CHANNEL_READY) {
            if (now_us() >= until) {
                fprintf(stderr, "bench_rpc: channel %d to %s did not connect within 15 s\n", i,
                        cfg.server);
                return 2;
            }
            gpr_timespec d = gpr_time_add(gpr_now(GPR_CLOCK_REALTIME),
                                          gpr_time_from_millis(500, GPR_TIMESPAN));
            grpc_channel_watch_connectivity_state(ws[i].channel, st, d, ws[i].cq, &ws[i].ops);
            grpc_completion_queue_pluck(ws[i].cq, &ws[i].ops, gpr_inf_future(GPR_CLOCK_REALTIME),
                                        NULL);
        }
    }
    if (setup(&ws[0])) return 2;
    if (cfg.op == OP_REST_GET) {
        curl_global_init(CURL_GLOBAL_DEFAULT);
        for (int i = 0; i < cfg.concurrency; i++) {
            worker *w = &ws[i];
            if (!(w->curl = curl_easy_init())) return 2;
            char h[700];
            snprintf(h, sizeof h, "Authorization: %s", cfg.auth);
            w->headers = cfg.token ? curl_slist_append(NULL, h) : NULL;
            curl_easy_setopt(w->curl, CURLOPT_HTTPHEADER, w->headers);
            curl_easy_setopt(w->curl, CURLOPT_WRITEFUNCTION, on_body);
            curl_easy_setopt(w->curl, CURLOPT_WRITEDATA, w);
            curl_easy_setopt(w->curl, CURLOPT_TCP_NODELAY, 1L);
            curl_easy_setopt(w->curl, CURLOPT_NOSIGNAL, 1L);
            if (cfg.timeout_ms > 0) curl_easy_setopt(w->curl, CURLOPT_TIMEOUT_MS, (long)cfg.timeout_ms);
        }
    }

    int64_t t0 = now_us();
    t_measure = t0 + cfg.warmup_us;
    t_end = t_measure + cfg.duration_us;
    for (int i = 0; i < cfg.concurrency; i++) {
        if (pthread_create(&ws[i].th, NULL, worker_main, &ws[i]) != 0) {
            fprintf(stderr, "bench_rpc: cannot start thread %d\n", i);
            return 2;
        }
    }
    static hist all;
    uint64_t ops = 0, errors = 0;
    const worker *first_err = NULL;
    for (int i = 0; i < cfg.concurrency; i++) {
        pthread_join(ws[i].th, NULL);
        hist_merge(&all, &ws[i].h);
        ops += ws[i].ops;
        errors += ws[i].errors;
        if (ws[i].errors && !first_err) first_err = &ws[i];
    }
    double secs = (double)cfg.duration_us / 1e6;
    double rate = (double)ops / secs;
    double p50 = hist_pct(&all, 50) / 1000.0, p90 = hist_pct(&all, 90) / 1000.0,
           p99 = hist_pct(&all, 99) / 1000.0, mx = all.max_us / 1000.0;
    double mean = all.total ? (double)all.sum_us / (double)all.total / 1000.0 : 0;
    if (cfg.json) {
        printf("{\"op\":\"%s\",\"concurrency\":%d,\"duration_s\":%.3f,\"ops\":%" PRIu64
               ",\"errors\":%" PRIu64 ",\"ops_per_s\":%.1f,\"mean_ms\":%.3f,\"p50_ms\":%.3f,"
               "\"p90_ms\":%.3f,\"p99_ms\":%.3f,\"max_ms\":%.3f}\n",
               op_names[cfg.op], cfg.concurrency, secs, ops, errors, rate, mean, p50, p90, p99, mx);
    } else {
        printf("op=%s concurrency=%d ops=%" PRIu64 " errors=%" PRIu64
               " ops/s=%.1f p50=%.3fms p90=%.3fms p99=%.3fms max=%.3fms\n",
               op_names[cfg.op], cfg.concurrency, ops, errors, rate, p50, p90, p99, mx);
    }
    if (first_err)
        fprintf(stderr, "bench_rpc: first error: %s: %s\n",
                az_conn_status_name(first_err->first_status), first_err->first_error);
    for (int i = 0; i < cfg.concurrency; i++) {
        if (ws[i].curl) curl_easy_cleanup(ws[i].curl);
        curl_slist_free_all(ws[i].headers);
        free(ws[i].body);
        az_conn_free(ws[i].conn);
        if (ws[i].channel) grpc_channel_destroy(ws[i].channel);
        if (ws[i].cq) {
            grpc_completion_queue_shutdown(ws[i].cq);
            while (grpc_completion_queue_pluck(ws[i].cq, NULL, gpr_inf_future(GPR_CLOCK_REALTIME),
                                               NULL).type != GRPC_QUEUE_SHUTDOWN) {
            }
            grpc_completion_queue_destroy(ws[i].cq);
        }
    }
    free(ws);
    grpc_shutdown();
    if (ops == 0) {
        fprintf(stderr, "bench_rpc: no call completed in the measured time\n");
        return 1;
    }
    if ((double)errors > (double)ops * 0.01) {
        fprintf(stderr, "bench_rpc: error rate %.2f%% is above 1%%\n",
                100.0 * (double)errors / (double)ops);
        return 1;
    }
    return 0;
}
