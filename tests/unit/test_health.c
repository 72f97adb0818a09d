/* Unit tests for the health service: check aggregation, transitions, the checker thread and
 * shutdown; plus one end-to-end run of Check, Watch and reflection over a real server with
 * Debian's python3-grpcio as the client. */
#include <CUnit/Basic.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "descriptor_set.h"
#include "google/protobuf/descriptor.pb-c.h"
#include "grpc/reflection/v1/reflection.pb-c.h"
#include "rpc/health.h"
#include "rpc/reflection.h"

/* A dependency whose reachability the test flips. */
typedef struct fake {
    pthread_mutex_t mu;
    int ok;
    int calls;
} fake;

static az_err fake_check(void *arg, char *msg)
{
    fake *f = arg;
    pthread_mutex_lock(&f->mu);
    int ok = f->ok;
    f->calls++;
    pthread_mutex_unlock(&f->mu);
    if (ok) return AZ_OK;
    return az_fail(msg, AZ_ERR_UNAVAILABLE, "cannot connect to fake: connection refused");
}

static az_err silent_failure(void *arg, char *msg)
{
    (void)arg;
    (void)msg;
    return AZ_ERR_UNAVAILABLE; /* no message: the log falls back to the error name */
}

static void fake_set(fake *f, int ok)
{
    pthread_mutex_lock(&f->mu);
    f->ok = ok;
    pthread_mutex_unlock(&f->mu);
}

static int fake_calls(fake *f)
{
    pthread_mutex_lock(&f->mu);
    int n = f->calls;
    pthread_mutex_unlock(&f->mu);
    return n;
}

static fake *fake_new(int ok)
{
    fake *f = calloc(1, sizeof *f);
    pthread_mutex_init(&f->mu, NULL);
    f->ok = ok;
    return f;
}

static void fake_free(fake *f)
{
    pthread_mutex_destroy(&f->mu);
    free(f);
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

#define SVC "agentz.v1.AgentService"

/* ---------------------------------------------------------------- aggregation */

static void test_before_start(void)
{
    char msg[AZ_MSG_MAX] = "";
    az_health *h = az_health_new(0);
    CU_ASSERT_PTR_NOT_NULL_FATAL(h);
    CU_ASSERT_EQUAL(az_health_add_service(h, SVC, msg), AZ_OK);
    /* nothing has been checked yet: not serving, but the names are known */
    CU_ASSERT_EQUAL(az_health_status(h, ""), AZ_HEALTH_NOT_SERVING);
    CU_ASSERT_EQUAL(az_health_status(h, SVC), AZ_HEALTH_NOT_SERVING);
    CU_ASSERT_EQUAL(az_health_status(h, "agentz.v1.Nope"), AZ_HEALTH_SERVICE_UNKNOWN);
    az_health_run_checks(h); /* a no-op before start */
    CU_ASSERT_EQUAL(az_health_status(h, ""), AZ_HEALTH_NOT_SERVING);
    az_health_free(h);
    az_health_free(NULL);
}

static void test_no_checks_serves(void)
{
    char msg[AZ_MSG_MAX] = "";
    az_health *h = az_health_new(0);
    CU_ASSERT_EQUAL_FATAL(az_health_start(h, msg), AZ_OK);
    CU_ASSERT_EQUAL(az_health_status(h, ""), AZ_HEALTH_SERVING);
    CU_ASSERT_EQUAL(az_health_status(h, NULL), AZ_HEALTH_SERVING);
    CU_ASSERT_EQUAL(az_health_status(h, SVC), AZ_HEALTH_SERVICE_UNKNOWN);
    CU_ASSERT_EQUAL(az_health_start(h, msg), AZ_ERR_PRECONDITION);
    az_health_free(h);
}

static void test_aggregation_and_transitions(void)
{
    char msg[AZ_MSG_MAX] = "";
    fake *pg = fake_new(1), *redis = fake_new(1);
    az_health *h = az_health_new(60000); /* the thread stays asleep: runs are explicit */
    CU_ASSERT_EQUAL(az_health_add_check(h, "postgres", fake_check, pg, msg), AZ_OK);
    CU_ASSERT_EQUAL(az_health_add_check(h, "redis", fake_check, redis, msg), AZ_OK);
    CU_ASSERT_EQUAL(az_health_add_service(h, SVC, msg), AZ_OK);
    CU_ASSERT_EQUAL(az_health_add_service(h, SVC, msg), AZ_OK); /* again: no-op */
    CU_ASSERT_EQUAL_FATAL(az_health_start(h, msg), AZ_OK);
    CU_ASSERT_EQUAL(fake_calls(pg), 1); /* start ran the checks synchronously */
    CU_ASSERT_EQUAL(fake_calls(redis), 1);
    CU_ASSERT_EQUAL(az_health_status(h, ""), AZ_HEALTH_SERVING);
    CU_ASSERT_EQUAL(az_health_status(h, SVC), AZ_HEALTH_SERVING);

    fake_set(redis, 0); /* one failure is enough */
    az_health_run_checks(h);
    CU_ASSERT_EQUAL(az_health_status(h, ""), AZ_HEALTH_NOT_SERVING);
    CU_ASSERT_EQUAL(az_health_status(h, SVC), AZ_HEALTH_NOT_SERVING);
    CU_ASSERT_EQUAL(az_health_status(h, "x"), AZ_HEALTH_SERVICE_UNKNOWN);

    fake_set(pg, 0);
    az_health_run_checks(h);
    CU_ASSERT_EQUAL(az_health_status(h, ""), AZ_HEALTH_NOT_SERVING);

    fake_set(redis, 1);
    az_health_run_checks(h);
    CU_ASSERT_EQUAL(az_health_status(h, ""), AZ_HEALTH_NOT_SERVING); /* postgres still down */

    fake_set(pg, 1);
    az_health_run_checks(h);
    CU_ASSERT_EQUAL(az_health_status(h, ""), AZ_HEALTH_SERVING);
    CU_ASSERT_EQUAL(fake_calls(pg), 5);

    /* a service added after start follows the overall status at once */
    CU_ASSERT_EQUAL(az_health_add_service(h, "agentz.v1.TaskService", msg), AZ_OK);
    CU_ASSERT_EQUAL(az_health_status(h, "agentz.v1.TaskService"), AZ_HEALTH_SERVING);
    az_health_free(h);
    fake_free(pg);
    fake_free(redis);
}

static void test_failing_at_start(void)
{
    char msg[AZ_MSG_MAX] = "";
    az_health *h = az_health_new(60000);
    CU_ASSERT_EQUAL(az_health_add_check(h, "broken", silent_failure, NULL, msg), AZ_OK);
    /* a failing dependency does not fail the start; it makes the server NOT_SERVING */
    CU_ASSERT_EQUAL_FATAL(az_health_start(h, msg), AZ_OK);
    CU_ASSERT_EQUAL(az_health_status(h, ""), AZ_HEALTH_NOT_SERVING);
    az_health_free(h);
}

static void test_registration_errors(void)
{
    char msg[AZ_MSG_MAX] = "";
    fake *f = fake_new(1);
    az_health *h = az_health_new(0);
    CU_ASSERT_EQUAL(az_health_add_check(h, "", fake_check, f, msg), AZ_ERR_INVALID);
    CU_ASSERT_EQUAL(az_health_add_check(h, "x", NULL, f, msg), AZ_ERR_INVALID);
    CU_ASSERT_EQUAL(az_health_add_service(h, NULL, msg), AZ_ERR_INVALID);
    for (int i = 0; i < AZ_HEALTH_MAX_CHECKS; i++) {
        char name[16];
        snprintf(name, sizeof name, "dep%d", i);
        CU_ASSERT_EQUAL(az_health_add_check(h, name, fake_check, f, msg), AZ_OK);
    }
    CU_ASSERT_EQUAL(az_health_add_check(h, "one-too-many", fake_check, f, msg), AZ_ERR_EXHAUSTED);
    CU_ASSERT_PTR_NOT_NULL(strstr(msg, "one-too-many"));
    CU_ASSERT_EQUAL_FATAL(az_health_start(h, msg), AZ_OK);
    CU_ASSERT_EQUAL(fake_calls(f), AZ_HEALTH_MAX_CHECKS);
    CU_ASSERT_EQUAL(az_health_add_check(h, "late", fake_check, f, msg), AZ_ERR_PRECONDITION);
    az_health_free(h);
    fake_free(f);
}

/* ---------------------------------------------------------------- the thread */

static int wait_status(az_health *h, az_health_serving want, int timeout_ms)
{
    int64_t until = now_ms() + timeout_ms;
    while (now_ms() < until) {
        if (az_health_status(h, "") == want) return 1;
        usleep(5000);
    }
    return az_health_status(h, "") == want;
}

static void test_checker_thread(void)
{
    char msg[AZ_MSG_MAX] = "";
    fake *f = fake_new(1);
    az_health *h = az_health_new(20);
    CU_ASSERT_EQUAL(az_health_add_check(h, "postgres", fake_check, f, msg), AZ_OK);
    CU_ASSERT_EQUAL_FATAL(az_health_start(h, msg), AZ_OK);
    CU_ASSERT_EQUAL(az_health_status(h, ""), AZ_HEALTH_SERVING);
    fake_set(f, 0);
    CU_ASSERT(wait_status(h, AZ_HEALTH_NOT_SERVING, 3000));
    fake_set(f, 1);
    CU_ASSERT(wait_status(h, AZ_HEALTH_SERVING, 3000));
    CU_ASSERT(fake_calls(f) >= 3);
    az_health_free(h);
    fake_free(f);
}

/* free and shutdown wake the sleeping thread instead of waiting out the interval */
static void test_shutdown_and_prompt_free(void)
{
    char msg[AZ_MSG_MAX] = "";
    fake *f = fake_new(1);
    az_health *h = az_health_new(600000);
    CU_ASSERT_EQUAL(az_health_add_check(h, "postgres", fake_check, f, msg), AZ_OK);
    CU_ASSERT_EQUAL(az_health_add_service(h, SVC, msg), AZ_OK);
    CU_ASSERT_EQUAL_FATAL(az_health_start(h, msg), AZ_OK);
    CU_ASSERT_EQUAL(az_health_status(h, SVC), AZ_HEALTH_SERVING);
    az_health_shutdown(h);
    CU_ASSERT_EQUAL(az_health_status(h, ""), AZ_HEALTH_NOT_SERVING);
    CU_ASSERT_EQUAL(az_health_status(h, SVC), AZ_HEALTH_NOT_SERVING);
    CU_ASSERT_EQUAL(az_health_status(h, "nope"), AZ_HEALTH_SERVICE_UNKNOWN);
    az_health_shutdown(h); /* idempotent */
    int calls = fake_calls(f);
    az_health_run_checks(h); /* no-op after shutdown */
    CU_ASSERT_EQUAL(fake_calls(f), calls);
    CU_ASSERT_EQUAL(az_health_status(h, ""), AZ_HEALTH_NOT_SERVING);
    CU_ASSERT_EQUAL(az_health_start(h, msg), AZ_ERR_PRECONDITION);
    int64_t t0 = now_ms();
    az_health_free(h);
    CU_ASSERT(now_ms() - t0 < 1000);

    h = az_health_new(600000); /* free without shutdown */
    CU_ASSERT_EQUAL_FATAL(az_health_start(h, msg), AZ_OK);
    t0 = now_ms();
    az_health_free(h);
    CU_ASSERT(now_ms() - t0 < 1000);
    fake_free(f);
}

static void test_methods_table(void)
{
    az_health *h = az_health_new(0);
    size_t n = 0;
    const az_method *m = az_health_methods(h, &n);
    CU_ASSERT_EQUAL_FATAL(n, 2);
    CU_ASSERT_STRING_EQUAL(m[0].path, "/grpc.health.v1.Health/Check");
    CU_ASSERT_EQUAL(m[0].kind, AZ_RPC_UNARY);
    CU_ASSERT_PTR_NOT_NULL(m[0].unary);
    CU_ASSERT_STRING_EQUAL(m[1].path, "/grpc.health.v1.Health/Watch");
    CU_ASSERT_EQUAL(m[1].kind, AZ_RPC_SERVER_STREAM);
    CU_ASSERT_PTR_NOT_NULL(m[1].stream);
    CU_ASSERT_PTR_EQUAL(m[0].data, h);
    CU_ASSERT_PTR_EQUAL(m[1].data, h);
    az_health_free(h);
}

/* ---------------------------------------------------------------- end to end */

/* A client we did not write: grpcio with raw bytes in and out; the C side builds and parses
 * the messages. Prints one line per event. */
static const char *const client_py =
    "import sys\n"
    "try:\n"
    "    import grpc\n"
    "except ImportError:\n"
    "    print('skip no grpcio', flush=True); sys.exit(0)\n"
    "port = sys.argv[1]\n"
    "refl_reqs = [bytes.fromhex(x) for x in sys.argv[2:]]\n"
    "ident = lambda b: b\n"
    "ch = grpc.insecure_channel('127.0.0.1:' + port)\n"
    "def req(s):\n"
    "    b = s.encode()\n"
    "    return (b'\\x0a' + bytes([len(b)]) + b) if b else b''\n"
    "def status(b):\n"
    "    return b[1] if len(b) >= 2 and b[0] == 8 else 0\n"
    "check = ch.unary_unary('/grpc.health.v1.Health/Check', request_serializer=ident, response_deserializer=ident)\n"
    "print('check', status(check(req(''), timeout=10)), flush=True)\n"
    "try:\n"
    "    check(req('agentz.v1.Nope'), timeout=10)\n"
    "    print('check-unknown OK', flush=True)\n"
    "except grpc.RpcError as e:\n"
    "    print('check-unknown', e.code().name, e.details(), flush=True)\n"
    "for v in ('v1', 'v1alpha'):\n"
    "    refl = ch.stream_stream('/grpc.reflection.%s.ServerReflection/ServerReflectionInfo' % v, request_serializer=ident, response_deserializer=ident)\n"
    "    n = 0\n"
    "    for resp in refl(iter(refl_reqs), timeout=10):\n"
    "        print('refl', resp.hex(), flush=True); n += 1\n"
    "    print('refl-end', v, n, flush=True)\n"
    "watch = ch.unary_stream('/grpc.health.v1.Health/Watch', request_serializer=ident, response_deserializer=ident)\n"
    "later = watch(req('agentz.v1.Later'), timeout=60)\n"
    "for m in later:\n"
    "    print('later', status(m), flush=True)\n"
    "    if status(m) != 3: break\n"
    "later.cancel()\n"
    "try:\n"
    "    for m in watch(req('" SVC "'), timeout=60):\n"
    "        print('watch', status(m), flush=True)\n"
    "    print('watch-end OK', flush=True)\n"
    "except grpc.RpcError as e:\n"
    "    print('watch-end', e.code().name, e.details(), flush=True)\n";

static void to_hex(const unsigned char *b, size_t n, char *out)
{
    for (size_t i = 0; i < n; i++) sprintf(out + 2 * i, "%02x", b[i]);
    out[2 * n] = '\0';
}

static size_t from_hex(const char *s, unsigned char *out, size_t cap)
{
    size_t n = 0;
    unsigned v;
    while (n < cap && sscanf(s + 2 * n, "%2x", &v) == 1) out[n++] = (unsigned char)v;
    return n;
}

static void pack_hex(const Grpc__Reflection__V1__ServerReflectionRequest *q, char *out)
{
    unsigned char buf[256];
    size_t n = grpc__reflection__v1__server_reflection_request__pack(q, buf);
    to_hex(buf, n, out);
}

/* Reads one line from the client into line; 0 at EOF. */
static int next_line(FILE *p, char *line, size_t cap)
{
    if (!fgets(line, (int)cap, p)) return 0;
    line[strcspn(line, "\n")] = '\0';
    return 1;
}

static Grpc__Reflection__V1__ServerReflectionResponse *parse_refl(const char *line)
{
    static unsigned char buf[1 << 20];
    size_t n = from_hex(line + strlen("refl "), buf, sizeof buf);
    return grpc__reflection__v1__server_reflection_response__unpack(NULL, n, buf);
}

static void check_refl_lines(FILE *p, char *line, size_t cap)
{
    for (int round = 0; round < 2; round++) {
        /* 1: list_services */
        CU_ASSERT_FATAL(next_line(p, line, cap) && strncmp(line, "refl ", 5) == 0);
        Grpc__Reflection__V1__ServerReflectionResponse *r = parse_refl(line);
        CU_ASSERT_PTR_NOT_NULL_FATAL(r);
        CU_ASSERT_EQUAL_FATAL(r->message_response_case,
                              GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_LIST_SERVICES_RESPONSE);
        int found = 0;
        for (size_t i = 0; i < r->list_services_response->n_service; i++)
            found |= strcmp(r->list_services_response->service[i]->name, "grpc.health.v1.Health") == 0;
        CU_ASSERT(found);
        grpc__reflection__v1__server_reflection_response__free_unpacked(r, NULL);

        /* 2: file_containing_symbol for a method */
        CU_ASSERT_FATAL(next_line(p, line, cap) && strncmp(line, "refl ", 5) == 0);
        r = parse_refl(line);
        CU_ASSERT_PTR_NOT_NULL_FATAL(r);
        CU_ASSERT_STRING_EQUAL(r->valid_host, "e2e");
        CU_ASSERT_EQUAL_FATAL(r->message_response_case,
                              GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_FILE_DESCRIPTOR_RESPONSE);
        CU_ASSERT_FATAL(r->file_descriptor_response->n_file_descriptor_proto >= 1);
        Google__Protobuf__FileDescriptorProto *f = google__protobuf__file_descriptor_proto__unpack(
            NULL, r->file_descriptor_response->file_descriptor_proto[0].len,
            r->file_descriptor_response->file_descriptor_proto[0].data);
        CU_ASSERT_PTR_NOT_NULL_FATAL(f);
        CU_ASSERT_STRING_EQUAL(f->name, "grpc/health/v1/health.proto");
        google__protobuf__file_descriptor_proto__free_unpacked(f, NULL);
        grpc__reflection__v1__server_reflection_response__free_unpacked(r, NULL);

        /* 3: an unknown symbol is an error_response, not an RPC error */
        CU_ASSERT_FATAL(next_line(p, line, cap) && strncmp(line, "refl ", 5) == 0);
        r = parse_refl(line);
        CU_ASSERT_PTR_NOT_NULL_FATAL(r);
        CU_ASSERT_EQUAL_FATAL(r->message_response_case,
                              GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_ERROR_RESPONSE);
        CU_ASSERT_EQUAL(r->error_response->error_code, 5);
        grpc__reflection__v1__server_reflection_response__free_unpacked(r, NULL);

        CU_ASSERT_FATAL(next_line(p, line, cap));
        CU_ASSERT_STRING_EQUAL(line, round == 0 ? "refl-end v1 3" : "refl-end v1alpha 3");
    }
}

typedef struct e2e {
    az_health *h;
    az_reflection *r;
    az_server *s;
    fake *pg;
} e2e;

static void shutdown_hook(void *arg)
{
    az_health_shutdown(arg);
}

static void test_end_to_end(void)
{
    char msg[AZ_MSG_MAX] = "";
    if (access("/usr/bin/python3", X_OK) != 0) {
        fprintf(stderr, "\n  skipped: no /usr/bin/python3\n");
        return;
    }
    e2e t = {0};
    t.pg = fake_new(1);
    t.h = az_health_new(600000);
    CU_ASSERT_EQUAL(az_health_add_check(t.h, "postgres", fake_check, t.pg, msg), AZ_OK);
    CU_ASSERT_EQUAL(az_health_add_service(t.h, SVC, msg), AZ_OK);
    CU_ASSERT_EQUAL_FATAL(az_health_start(t.h, msg), AZ_OK);
    t.r = az_reflection_new(az_descriptor_set, az_descriptor_set_len, msg);
    CU_ASSERT_PTR_NOT_NULL_FATAL(t.r);

    size_t counts[2];
    const az_method *tables[2] = {az_health_methods(t.h, &counts[0]),
                                  az_reflection_methods(t.r, &counts[1])};
    az_server_config cfg = {.listen = "127.0.0.1:0", .threads = 4, .shutdown_grace_ms = 5000};
    t.s = az_server_new(&cfg, tables, counts, 2, msg);
    if (!t.s) fprintf(stderr, "\n  server: %s\n", msg);
    CU_ASSERT_PTR_NOT_NULL_FATAL(t.s);
    az_server_on_shutdown(t.s, shutdown_hook, t.h);
    CU_ASSERT_EQUAL_FATAL(az_server_start(t.s, msg), AZ_OK);

    char script[] = "/tmp/az_health_e2e_XXXXXX";
    int fd = mkstemp(script);
    CU_ASSERT_FATAL(fd >= 0);
    CU_ASSERT_FATAL(write(fd, client_py, strlen(client_py)) == (ssize_t)strlen(client_py));
    close(fd);

    Grpc__Reflection__V1__ServerReflectionRequest q = GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__INIT;
    char list_hex[512], sym_hex[512], bad_hex[512];
    q.message_request_case = GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_LIST_SERVICES;
    q.list_services = "*";
    pack_hex(&q, list_hex);
    q.host = "e2e";
    q.message_request_case = GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_CONTAINING_SYMBOL;
    q.file_containing_symbol = "grpc.health.v1.Health.Watch";
    pack_hex(&q, sym_hex);
    q.file_containing_symbol = "agentz.v1.NoSuchThing";
    pack_hex(&q, bad_hex);

    char cmd[2048];
    snprintf(cmd, sizeof cmd, "/usr/bin/python3 %s %d %s %s %s", script, az_server_port(t.s),
             list_hex, sym_hex, bad_hex);
    FILE *p = popen(cmd, "r");
    CU_ASSERT_PTR_NOT_NULL_FATAL(p);
    char line[1 << 16];
    CU_ASSERT_FATAL(next_line(p, line, sizeof line));
    if (strncmp(line, "skip", 4) == 0) {
        fprintf(stderr, "\n  skipped: %s\n", line);
    } else {
        CU_ASSERT_STRING_EQUAL(line, "check 1");
        CU_ASSERT_FATAL(next_line(p, line, sizeof line));
        CU_ASSERT_STRING_EQUAL(line, "check-unknown NOT_FOUND unknown service agentz.v1.Nope");
        check_refl_lines(p, line, sizeof line);

        /* Watch on an unknown name: SERVICE_UNKNOWN, kept open, then its status once known */
        CU_ASSERT_FATAL(next_line(p, line, sizeof line));
        CU_ASSERT_STRING_EQUAL(line, "later 3");
        CU_ASSERT_EQUAL(az_health_add_service(t.h, "agentz.v1.Later", msg), AZ_OK);
        CU_ASSERT_FATAL(next_line(p, line, sizeof line));
        CU_ASSERT_STRING_EQUAL(line, "later 1");

        /* Watch: the current status at once, then one message per change */
        CU_ASSERT_FATAL(next_line(p, line, sizeof line));
        CU_ASSERT_STRING_EQUAL(line, "watch 1");
        fake_set(t.pg, 0);
        az_health_run_checks(t.h);
        CU_ASSERT_FATAL(next_line(p, line, sizeof line));
        CU_ASSERT_STRING_EQUAL(line, "watch 2");
        az_health_run_checks(t.h); /* still failing: no message */
        fake_set(t.pg, 1);
        az_health_run_checks(t.h);
        CU_ASSERT_FATAL(next_line(p, line, sizeof line));
        CU_ASSERT_STRING_EQUAL(line, "watch 1");
    }
    /* shutdown: NOT_SERVING, then the stream ends UNAVAILABLE */
    int64_t t0 = now_ms();
    az_server_shutdown(t.s);
    CU_ASSERT(now_ms() - t0 < 4000); /* the watch did not hold the grace period */
    if (strncmp(line, "skip", 4) != 0) {
        CU_ASSERT(next_line(p, line, sizeof line));
        CU_ASSERT_STRING_EQUAL(line, "watch 2");
        CU_ASSERT(next_line(p, line, sizeof line));
        CU_ASSERT_STRING_EQUAL(line, "watch-end UNAVAILABLE server shutting down");
    }
    CU_ASSERT_EQUAL(pclose(p), 0);
    unlink(script);
    az_server_free(t.s);
    az_health_free(t.h);
    az_reflection_free(t.r);
    fake_free(t.pg);
}

/* ---------------------------------------------------------------- main */

int main(void)
{
    if (CU_initialize_registry() != CUE_SUCCESS) return 1;
    CU_pSuite s = CU_add_suite("health", NULL, NULL);
    if (!s) return 1;
    CU_add_test(s, "before start: known names, not serving", test_before_start);
    CU_add_test(s, "no checks: serving once started", test_no_checks_serves);
    CU_add_test(s, "aggregation and transitions", test_aggregation_and_transitions);
    CU_add_test(s, "failing dependency at start", test_failing_at_start);
    CU_add_test(s, "registration errors", test_registration_errors);
    CU_add_test(s, "checker thread notices changes", test_checker_thread);
    CU_add_test(s, "shutdown, and free wakes the thread", test_shutdown_and_prompt_free);
    CU_add_test(s, "method table", test_methods_table);
    CU_add_test(s, "end to end with python3-grpcio", test_end_to_end);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    unsigned failed = CU_get_number_of_failures();
    CU_cleanup_registry();
    return failed ? 1 : 0;
}
