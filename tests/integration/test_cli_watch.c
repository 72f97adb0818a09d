/* `agentz watch` end to end: the real agentzd runs workflows and tasks against the scripted fake
 * LLM while the real agentz binary ($AGENTZ_CLI) watches them as a subprocess; checked are what
 * it prints (steps, statuses, streamed tokens, the summary) and its exit code for a run that
 * succeeds (0), fails (3), is cancelled (4), does not exist (1), and a watch that must
 * reconnect because the server restarted mid-run. */
#include <CUnit/Basic.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "agentz/v1/agent.pb-c.h"
#include "agentz/v1/task.pb-c.h"
#include "agentz/v1/workflow.pb-c.h"
#include "core/pbjson.h"
#include "fakellm.h"
#include "harness.h"

#define AGENTS "/agentz.v1.AgentService/"
#define TASKS "/agentz.v1.TaskService/"
#define WORKFLOWS "/agentz.v1.WorkflowService/"
#define RPC_LINE "msg=\"rpc\""

static az_itest_server srv;
static az_conn *conn;
static fakellm *fake;
static char uniq[40];
static char last_msg[AZ_MSG_MAX];

/* ---------------------------------------------------------------- helpers */

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + t.tv_nsec / 1e9;
}

static int rpc(const char *method, const ProtobufCMessageDescriptor *in,
               const ProtobufCMessageDescriptor *out_desc, void **out, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
static int rpc(const char *method, const ProtobufCMessageDescriptor *in,
               const ProtobufCMessageDescriptor *out_desc, void **out, const char *fmt, ...)
{
    char json[8192];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(json, sizeof json, fmt, ap);
    va_end(ap);
    if (out) *out = NULL;
    ProtobufCMessage *req = NULL, *resp = NULL;
    if (az_pbjson_decode(in, json, strlen(json), NULL, &req, last_msg) != AZ_OK) {
        fprintf(stderr, "\n  test bug: %s\n  %s\n", last_msg, json);
        return -1;
    }
    int status = -1;
    az_conn_unary(conn, method, req, out_desc, 20000, NULL, &resp, &status, last_msg);
    protobuf_c_message_free_unpacked(req, NULL);
    if (out) *out = resp;
    else if (resp) protobuf_c_message_free_unpacked(resp, NULL);
    if (status != 0) fprintf(stderr, "\n  %s: status %d: %s\n", method, status, last_msg);
    return status;
}

static const char *model(const char *tag)
{
    static char ring[16][96];
    static int next;
    char *out = ring[next++ % 16];
    snprintf(out, 96, "%s-%s", tag, uniq);
    return out;
}

static void make_agent(char id[40], const char *m)
{
    Agentz__V1__Agent *a = NULL;
    CU_ASSERT_EQUAL_FATAL(rpc(AGENTS "CreateAgent", &agentz__v1__create_agent_request__descriptor,
                              &agentz__v1__agent__descriptor, (void **)&a,
                              "{\"agent\":{\"name\":\"%s\",\"role\":\"Role %s\",\"goal\":\"Goal\","
                              "\"backstory\":\"Backstory\",\"llm\":{\"provider\":\"openai\","
                              "\"model\":\"%s\",\"baseUrl\":\"%s\"}}}",
                              m, m, m, fakellm_base_url(fake)),
                          0);
    snprintf(id, 40, "%s", a->id);
    protobuf_c_message_free_unpacked(&a->base, NULL);
}

/* A sequential workflow research -> write (one agent each); returns the started run's id. */
static void start_run(char run_id[40], const char *m1, const char *m2)
{
    char a1[40], a2[40];
    make_agent(a1, m1);
    make_agent(a2, m2);
    Agentz__V1__Workflow *wf = NULL;
    CU_ASSERT_EQUAL_FATAL(
        rpc(WORKFLOWS "CreateWorkflow", &agentz__v1__create_workflow_request__descriptor,
            &agentz__v1__workflow__descriptor, (void **)&wf,
            "{\"workflow\":{\"name\":\"watch-%s-%s\",\"process\":\"PROCESS_SEQUENTIAL\",\"steps\":["
            "{\"id\":\"research\",\"agentId\":\"%s\",\"description\":\"Research\",\"expectedOutput\":\"Notes\"},"
            "{\"id\":\"write\",\"agentId\":\"%s\",\"description\":\"Write\",\"expectedOutput\":\"Text\"}]}}",
            m1, uniq, a1, a2),
        0);
    Agentz__V1__WorkflowRun *run = NULL;
    int st = rpc(WORKFLOWS "StartRun", &agentz__v1__start_run_request__descriptor,
                 &agentz__v1__workflow_run__descriptor, (void **)&run, "{\"workflowId\":\"%s\"}", wf->id);
    protobuf_c_message_free_unpacked(&wf->base, NULL);
    CU_ASSERT_EQUAL_FATAL(st, 0);
    snprintf(run_id, 40, "%s", run->id);
    protobuf_c_message_free_unpacked(&run->base, NULL);
}

/* A running `agentz ... watch ...` with its output in files. */
typedef struct cli_proc {
    pid_t pid;
    char out_path[700], err_path[700];
    char *out, *err;
    int code; /* exit code; -1 = killed after the timeout */
} cli_proc;

static void cli_start(cli_proc *p, const char *tag, const char *const *args)
{
    const char *cli = getenv("AGENTZ_CLI");
    CU_ASSERT_PTR_NOT_NULL_FATAL(cli);
    const char *dir = getenv("AGENTZ_TEST_DIR");
    snprintf(p->out_path, sizeof p->out_path, "%s/watch-%s-%s.out", dir ? dir : "/tmp", tag, uniq);
    snprintf(p->err_path, sizeof p->err_path, "%s/watch-%s-%s.err", dir ? dir : "/tmp", tag, uniq);
    char *argv[32];
    int n = 0;
    argv[n++] = (char *)cli;
    argv[n++] = "--server";
    argv[n++] = srv.target;
    for (; *args && n < 30; args++) argv[n++] = (char *)*args;
    argv[n] = NULL;
    p->pid = fork();
    CU_ASSERT_FATAL(p->pid >= 0);
    if (p->pid == 0) {
        int o = open(p->out_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        int e = open(p->err_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        if (o < 0 || e < 0) _exit(126);
        dup2(o, 1);
        dup2(e, 2);
        /* The local admin key authenticates; colours must not depend on the caller's env. */
        if (srv.admin_key[0]) setenv("AGENTZ_TOKEN", srv.admin_key, 1);
        setenv("NO_COLOR", "1", 1);
        execv(cli, argv);
        _exit(127);
    }
}

static char *slurp_path(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f) return strdup("");
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    rewind(f);
    char *s = calloc(1, (size_t)(n > 0 ? n : 0) + 1);
    if (n > 0 && fread(s, 1, (size_t)n, f) != (size_t)n) s[0] = '\0';
    fclose(f);
    return s;
}

/* Waits for the CLI to exit (killing it after timeout_s) and reads its output. */
static void cli_wait(cli_proc *p, double timeout_s)
{
    double until = now_s() + timeout_s;
    int status = 0;
    p->code = -1;
    for (;;) {
        pid_t r = waitpid(p->pid, &status, WNOHANG);
        if (r == p->pid) {
            p->code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
            break;
        }
        if (now_s() > until) {
            kill(p->pid, SIGKILL);
            waitpid(p->pid, &status, 0);
            break;
        }
        usleep(20000);
    }
    p->out = slurp_path(p->out_path);
    p->err = slurp_path(p->err_path);
}

static void cli_report(const cli_proc *p, int want)
{
    if (p->code == want) return;
    fprintf(stderr, "\n  agentz exited %d (want %d)\n  stdout:\n%s\n  stderr:\n%s\n", p->code, want,
            p->out, p->err);
    az_itest_dump_log_except(&srv, 20, RPC_LINE);
}

static void cli_free(cli_proc *p)
{
    free(p->out);
    free(p->err);
}

static void expect_has(const char *hay, const char *needle)
{
    int ok = hay && strstr(hay, needle) != NULL;
    if (!ok) fprintf(stderr, "\n  missing \"%s\" in:\n%s\n", needle, hay ? hay : "(null)");
    CU_ASSERT_TRUE(ok);
}

static void text_reply(fakellm_reply *r, const char *text, int chunk_delay_ms)
{
    memset(r, 0, sizeof *r);
    r->kind = FAKELLM_TEXT;
    r->text = text;
    r->chunk_size = 6;
    r->chunk_delay_ms = chunk_delay_ms;
}

/* ---------------------------------------------------------------- tests */

static void test_run_succeeds(void)
{
    const char *m1 = model("ok-research"), *m2 = model("ok-write");
    fakellm_reply r;
    text_reply(&r, "NOTES: widgets spin both ways.", 40);
    fakellm_on(fake, m1, NULL, &r, 1);
    text_reply(&r, "ARTICLE: the widgets that spin both ways.", 40);
    fakellm_on(fake, m2, NULL, &r, 1);
    char run_id[40];
    start_run(run_id, m1, m2);
    cli_proc p;
    const char *args[] = {"watch", "run", run_id, "--tokens", NULL};
    cli_start(&p, "ok", args);
    cli_wait(&p, 60);
    cli_report(&p, 0);
    CU_ASSERT_EQUAL(p.code, 0);
    /* One line per step and change; the model's text of the second step streamed whole (the
     * watch was connected long before it began); the summary last. */
    expect_has(p.out, "  research         running ");
    expect_has(p.out, "  research         succeeded  [####################] 100%");
    expect_has(p.out, "  write            succeeded  [####################] 100%");
    expect_has(p.out, "--- write output ---\nARTICLE: the widgets that spin both ways.");
    char want[128];
    snprintf(want, sizeof want, "run %s succeeded in ", run_id);
    expect_has(p.out, want);
    expect_has(p.out, "(2/2 steps)\n");
    CU_ASSERT_PTR_NULL(strchr(p.out, '\033')); /* not a terminal: no escapes */
    cli_free(&p);

    /* Watching the finished run replays its history and exits 0 at once; -o json prints one
     * event per line. */
    const char *json_args[] = {"-o", "json", "watch", "run", run_id, NULL};
    cli_start(&p, "json", json_args);
    cli_wait(&p, 30);
    cli_report(&p, 0);
    CU_ASSERT_EQUAL(p.code, 0);
    expect_has(p.out, "\"runStatus\":");
    expect_has(p.out, "\"RUN_STATUS_SUCCEEDED\"");
    expect_has(p.out, "\"taskStatus\":");
    int lines = 0;
    for (const char *s = p.out; *s; s++) lines += *s == '\n';
    CU_ASSERT(lines >= 6); /* run running/succeeded, each step queued/running/succeeded */
    cli_free(&p);
}

static void test_run_fails(void)
{
    const char *m1 = model("bad-research"), *m2 = model("bad-write");
    fakellm_reply r;
    memset(&r, 0, sizeof r);
    r.kind = FAKELLM_HTTP_ERROR;
    r.status = 400; /* not retryable: the step fails at once, the run fails fast */
    fakellm_on(fake, m1, NULL, &r, 1);
    char run_id[40];
    start_run(run_id, m1, m2);
    cli_proc p;
    const char *args[] = {"watch", "run", run_id, NULL};
    cli_start(&p, "fail", args);
    cli_wait(&p, 60);
    cli_report(&p, 3);
    CU_ASSERT_EQUAL(p.code, 3);
    expect_has(p.out, "  research         failed ");
    char want[128];
    snprintf(want, sizeof want, "run %s failed", run_id);
    expect_has(p.out, want);
    cli_free(&p);
}

static void test_task_cancelled(void)
{
    const char *m = model("slow");
    fakellm_reply r;
    text_reply(&r, "this answer takes a long while to arrive, chunk by chunk, slowly", 500);
    fakellm_on(fake, m, NULL, &r, 1);
    char agent[40];
    make_agent(agent, m);
    Agentz__V1__Task *t = NULL;
    CU_ASSERT_EQUAL_FATAL(rpc(TASKS "CreateTask", &agentz__v1__create_task_request__descriptor,
                              &agentz__v1__task__descriptor, (void **)&t,
                              "{\"task\":{\"description\":\"Slow work\",\"expectedOutput\":\"x\","
                              "\"agentId\":\"%s\"}}",
                              agent),
                          0);
    char task_id[40];
    snprintf(task_id, sizeof task_id, "%s", t->id);
    protobuf_c_message_free_unpacked(&t->base, NULL);
    cli_proc p;
    const char *args[] = {"watch", "task", task_id, "--tokens", NULL};
    cli_start(&p, "cancel", args);
    /* Cancel once the model is writing. */
    double until = now_s() + 20;
    while (fakellm_in_flight(fake) == 0 && now_s() < until) usleep(20000);
    usleep(1300000); /* two chunks of 6 characters, 500 ms apart */
    CU_ASSERT_EQUAL(rpc(TASKS "CancelTask", &agentz__v1__cancel_task_request__descriptor,
                        &agentz__v1__task__descriptor, NULL, "{\"id\":\"%s\"}", task_id),
                    0);
    cli_wait(&p, 30);
    cli_report(&p, 4);
    CU_ASSERT_EQUAL(p.code, 4);
    expect_has(p.out, "  task             running ");
    expect_has(p.out, "--- task output ---\nthis a"); /* the first chunks streamed */
    char want[128];
    snprintf(want, sizeof want, "task %s was cancelled", task_id);
    expect_has(p.out, want);
    cli_free(&p);
}

static void test_not_found(void)
{
    cli_proc p;
    const char *args[] = {"watch", "run", "7d1f0c52-1111-4222-8333-444455556666", NULL};
    cli_start(&p, "missing", args);
    cli_wait(&p, 30);
    cli_report(&p, 1);
    CU_ASSERT_EQUAL(p.code, 1);
    expect_has(p.err, "error: NOT_FOUND");
    cli_free(&p);
}

/* The server stops mid-run and comes back on the same port: the watch reconnects, resumes
 * after the last sequence it saw and still reports every step and the outcome. */
static void test_reconnects(void)
{
    const char *m1 = model("rc-research"), *m2 = model("rc-write");
    fakellm_reply r;
    text_reply(&r, "first step output, written slowly enough to restart the server meanwhile", 150);
    fakellm_on(fake, m1, NULL, &r, 1);
    text_reply(&r, "second step output", 10);
    fakellm_on(fake, m2, NULL, &r, 1);
    char run_id[40];
    start_run(run_id, m1, m2);
    cli_proc p;
    const char *args[] = {"watch", "run", run_id, NULL};
    cli_start(&p, "reconnect", args);
    double until = now_s() + 20;
    while (fakellm_in_flight(fake) == 0 && now_s() < until) usleep(20000);
    usleep(500000);
    /* Restart on the same port (the CLI keeps its target). */
    char listen[80];
    snprintf(listen, sizeof listen, "--listen=%s", srv.target);
    az_conn_free(conn);
    CU_ASSERT_EQUAL_FATAL(az_itest_stop(&srv, SIGTERM, 60), 0);
    const char *extra[] = {listen, NULL};
    CU_ASSERT_EQUAL_FATAL(az_itest_start(&srv, "cli_watch", extra), 0);
    conn = az_itest_connect(&srv);
    cli_wait(&p, 90);
    cli_report(&p, 0);
    CU_ASSERT_EQUAL(p.code, 0);
    expect_has(p.out, "connection lost (UNAVAILABLE");
    expect_has(p.out, "resuming after sequence ");
    expect_has(p.out, "  write            succeeded");
    char want[128];
    snprintf(want, sizeof want, "run %s succeeded in ", run_id);
    expect_has(p.out, want);
    cli_free(&p);
}

/* ---------------------------------------------------------------- suite */

static int suite_init(void)
{
    snprintf(uniq, sizeof uniq, "%s", az_itest_unique());
    if (!(fake = fakellm_start())) return -1;
    static const char *const unset[] = {"AGENTZ_LLM_BASE_URL", "AGENTZ_LLM_API_KEY", "OPENAI_API_KEY",
                                        "OPENAI_BASE_URL", "ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL",
                                        "AGENTZ_ALLOW_PRIVATE_NETWORKS", "AGENTZ_EMBEDDINGS_URL",
                                        "NO_COLOR", "AGENTZ_SERVER", "AGENTZ_TOKEN"};
    for (size_t i = 0; i < sizeof unset / sizeof *unset; i++) unsetenv(unset[i]);
    setenv("AGENTZ_RECONCILE_INTERVAL", "200ms", 1);
    setenv("AGENTZ_TASK_LEASE_SECONDS", "5", 1);
    if (az_itest_start(&srv, "cli_watch", NULL) != 0) return -1;
    conn = az_itest_connect(&srv);
    return 0;
}

static int suite_clean(void)
{
    az_conn_free(conn);
    int rc = az_itest_stop(&srv, SIGTERM, 30);
    if (rc != 0) {
        fprintf(stderr, "agentzd exited with %d\n", rc);
        az_itest_dump_log_except(&srv, 30, RPC_LINE);
    }
    fakellm_stop(fake);
    return rc == 0 ? 0 : -1;
}

int main(void)
{
    if (CU_initialize_registry() != CUE_SUCCESS) return 1;
    CU_pSuite s = CU_add_suite("agentz watch", suite_init, suite_clean);
    CU_add_test(s, "watch run: steps, tokens, summary, exit 0; -o json", test_run_succeeds);
    CU_add_test(s, "watch run of a failing run exits 3", test_run_fails);
    CU_add_test(s, "watch task of a cancelled task exits 4", test_task_cancelled);
    CU_add_test(s, "watch run of an unknown id exits 1", test_not_found);
    CU_add_test(s, "watch run reconnects across a server restart", test_reconnects);
    return az_itest_run_cunit();
}
