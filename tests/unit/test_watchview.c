/* CUnit suite for client/watchview: formatting (elapsed times, bars), a run's steps folded from
 * events and printed as plain lines, the redrawn and coloured terminal block, streamed tokens,
 * task and agent views, and how a run or task ended. */
#include <CUnit/Basic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "google/protobuf/timestamp.pb-c.h"
#include "watchview.h"

#define T0 1780000000000LL /* a wall-clock base in ms */
#define RUN_ID "11111111-1111-4111-8111-111111111111"
#define T_RESEARCH "22222222-2222-4222-8222-222222222222"
#define T_WRITE "33333333-3333-4333-8333-333333333333"

/* ---------------------------------------------------------------- helpers */

static Google__Protobuf__Timestamp stamps[64];
static int nstamps;

static Google__Protobuf__Timestamp *at(int64_t ms)
{
    Google__Protobuf__Timestamp *t = &stamps[nstamps++ % 64];
    google__protobuf__timestamp__init(t);
    t->seconds = ms / 1000;
    t->nanos = (int32_t)(ms % 1000) * 1000000;
    return t;
}

static char *slurp(FILE *f)
{
    fflush(f);
    long n = ftell(f);
    char *s = calloc(1, (size_t)(n > 0 ? n : 0) + 1);
    rewind(f);
    if (n > 0 && fread(s, 1, (size_t)n, f) != (size_t)n) s[0] = '\0';
    fclose(f);
    return s;
}

static Agentz__V1__Event event(const char *run, const char *task, const char *step, int64_t ms)
{
    Agentz__V1__Event e = AGENTZ__V1__EVENT__INIT;
    e.run_id = (char *)(run ? run : "");
    e.task_id = (char *)(task ? task : "");
    e.step_id = (char *)(step ? step : "");
    e.time = at(ms);
    return e;
}

static void run_status(az_watchview *v, int to, int64_t ms)
{
    Agentz__V1__RunStatusChanged r = AGENTZ__V1__RUN_STATUS_CHANGED__INIT;
    r.to = to;
    Agentz__V1__Event e = event(RUN_ID, NULL, NULL, ms);
    e.payload_case = AGENTZ__V1__EVENT__PAYLOAD_RUN_STATUS;
    e.run_status = &r;
    CU_ASSERT_EQUAL(az_watchview_apply(v, &e, ms), AZ_OK);
}

static void task_status(az_watchview *v, const char *task, const char *step, int to, int attempt,
                        const char *err_type, int64_t ms)
{
    Agentz__V1__TaskStatusChanged t = AGENTZ__V1__TASK_STATUS_CHANGED__INIT;
    Agentz__V1__TaskError e = AGENTZ__V1__TASK_ERROR__INIT;
    t.to = to;
    t.attempt = attempt;
    if (err_type) {
        e.type = (char *)err_type;
        e.message = "the model gave up";
        t.error = &e;
    }
    Agentz__V1__Event ev = event(RUN_ID, task, step, ms);
    ev.payload_case = AGENTZ__V1__EVENT__PAYLOAD_TASK_STATUS;
    ev.task_status = &t;
    CU_ASSERT_EQUAL(az_watchview_apply(v, &ev, ms), AZ_OK);
}

static void progress(az_watchview *v, const char *task, double f, const char *msg, int64_t ms)
{
    Agentz__V1__Progress p = AGENTZ__V1__PROGRESS__INIT;
    p.fraction = f;
    p.message = (char *)msg;
    Agentz__V1__Event e = event(RUN_ID, task, NULL, ms);
    e.payload_case = AGENTZ__V1__EVENT__PAYLOAD_PROGRESS;
    e.progress = &p;
    CU_ASSERT_EQUAL(az_watchview_apply(v, &e, ms), AZ_OK);
}

static void token(az_watchview *v, const char *task, const char *text, int64_t ms)
{
    Agentz__V1__TokenDelta t = AGENTZ__V1__TOKEN_DELTA__INIT;
    t.text = (char *)text;
    t.attempt = 1;
    Agentz__V1__Event e = event(RUN_ID, task, NULL, ms);
    e.payload_case = AGENTZ__V1__EVENT__PAYLOAD_TOKEN;
    e.token = &t;
    CU_ASSERT_EQUAL(az_watchview_apply(v, &e, ms), AZ_OK);
}

/* A run of two pending steps, as GetRun returns it. */
static void set_two_steps(az_watchview *v)
{
    Agentz__V1__StepRun a = AGENTZ__V1__STEP_RUN__INIT, b = AGENTZ__V1__STEP_RUN__INIT;
    a.step_id = "research";
    a.task_id = T_RESEARCH;
    a.status = AGENTZ__V1__TASK_STATUS__TASK_STATUS_PENDING;
    b.step_id = "write";
    b.task_id = T_WRITE;
    b.status = AGENTZ__V1__TASK_STATUS__TASK_STATUS_PENDING;
    Agentz__V1__StepRun *steps[] = {&a, &b};
    Agentz__V1__WorkflowRun r = AGENTZ__V1__WORKFLOW_RUN__INIT;
    r.id = RUN_ID;
    r.status = AGENTZ__V1__RUN_STATUS__RUN_STATUS_PENDING;
    r.n_steps = 2;
    r.steps = steps;
    CU_ASSERT_EQUAL(az_watchview_set_run(v, &r, 0), AZ_OK);
}

/* Plays a whole successful run: research 8.1 s with progress, write with streamed text. */
static void play_run(az_watchview *v)
{
    run_status(v, AGENTZ__V1__RUN_STATUS__RUN_STATUS_RUNNING, T0);
    task_status(v, T_RESEARCH, "research", AGENTZ__V1__TASK_STATUS__TASK_STATUS_QUEUED, 0, NULL, T0);
    task_status(v, T_RESEARCH, "research", AGENTZ__V1__TASK_STATUS__TASK_STATUS_RUNNING, 1, NULL, T0 + 100);
    progress(v, T_RESEARCH, 0.5, "searching the web", T0 + 2000);
    progress(v, T_RESEARCH, 0.52, "searching the web", T0 + 2100); /* same bucket: no new line */
    task_status(v, T_RESEARCH, "research", AGENTZ__V1__TASK_STATUS__TASK_STATUS_SUCCEEDED, 1, NULL, T0 + 8200);
    task_status(v, T_WRITE, "write", AGENTZ__V1__TASK_STATUS__TASK_STATUS_RUNNING, 1, NULL, T0 + 8300);
    token(v, T_WRITE, "Hello\nWor", T0 + 8400);
    token(v, T_WRITE, "ld", T0 + 8500);
    task_status(v, T_WRITE, "write", AGENTZ__V1__TASK_STATUS__TASK_STATUS_SUCCEEDED, 1, NULL, T0 + 9300);
    run_status(v, AGENTZ__V1__RUN_STATUS__RUN_STATUS_SUCCEEDED, T0 + 9400);
}

static int count(const char *s, const char *needle)
{
    int n = 0;
    for (const char *p = s; (p = strstr(p, needle)); p += strlen(needle)) n++;
    return n;
}

/* ---------------------------------------------------------------- tests */

static void test_formatting(void)
{
    char b[32];
    CU_ASSERT_STRING_EQUAL(az_watchview_elapsed(850, b, sizeof b), "850ms");
    CU_ASSERT_STRING_EQUAL(az_watchview_elapsed(12345, b, sizeof b), "12.3s");
    CU_ASSERT_STRING_EQUAL(az_watchview_elapsed(125000, b, sizeof b), "2m05s");
    CU_ASSERT_STRING_EQUAL(az_watchview_elapsed(3720000, b, sizeof b), "1h02m");
    CU_ASSERT_STRING_EQUAL(az_watchview_elapsed(-5, b, sizeof b), "0ms");
    CU_ASSERT_STRING_EQUAL(az_watchview_bar(0.5, 10, b, sizeof b), "[#####-----]");
    CU_ASSERT_STRING_EQUAL(az_watchview_bar(0, 4, b, sizeof b), "[----]");
    CU_ASSERT_STRING_EQUAL(az_watchview_bar(7, 4, b, sizeof b), "[####]");   /* clamped */
    CU_ASSERT_STRING_EQUAL(az_watchview_bar(0.0 / 0.0, 3, b, sizeof b), "[---]"); /* NaN */
    CU_ASSERT_STRING_EQUAL(az_watchview_bar(0.5, 50, b, 8), "[###--]"); /* fits the buffer */
    FILE *f = tmpfile();
    CU_ASSERT_FALSE(az_watchview_want_color(f)); /* not a terminal */
    fclose(f);
}

static void test_run_plain(void)
{
    FILE *f = tmpfile();
    az_watchview_opts o = {.tokens = 1};
    az_watchview *v = az_watchview_new(AZ_WATCHVIEW_RUN, &o, f);
    set_two_steps(v);
    CU_ASSERT_EQUAL(az_watchview_ended(v), AZ_WATCHVIEW_OPEN);
    play_run(v);
    CU_ASSERT_EQUAL(az_watchview_ended(v), AZ_WATCHVIEW_SUCCEEDED);
    az_watchview_finish(v, T0 + 10000);
    az_watchview_free(v);
    char *out = slurp(f);
    CU_ASSERT_PTR_NULL(strchr(out, '\033')); /* no escapes off a terminal */
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "run " RUN_ID " running  0/2 steps"));
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "  research         queued     [--------------------]   0%"));
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "  research         running    [##########----------]  50%    1.9s  searching the web"));
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "  research         succeeded  [####################] 100%    8.1s"));
    /* One progress line per 10 %: the 52 % tick printed nothing. */
    CU_ASSERT_EQUAL(count(out, "searching the web"), 2); /* the 50 % line and the succeeded line */
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "--- write output ---\nHello\nWorld\n  write            succeeded"));
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "  write            succeeded  [####################] 100%    1.0s"));
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "run " RUN_ID " succeeded  2/2 steps  9.4s\n"));
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "run " RUN_ID " succeeded in 9.4s (2/2 steps)\n"));
    free(out);
}

static void test_run_tty(void)
{
    FILE *f = tmpfile();
    az_watchview_opts o = {.tty = 1, .color = 1, .tokens = 1, .width = 60, .height = 20};
    az_watchview *v = az_watchview_new(AZ_WATCHVIEW_RUN, &o, f);
    set_two_steps(v);
    play_run(v);
    az_watchview_finish(v, T0 + 10000);
    az_watchview_free(v);
    char *out = slurp(f);
    /* The block (header + 2 steps, + the token line while one is open) is erased and redrawn. */
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "\r\033[3A\033[J"));
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "\r\033[4A\033[J"));
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "\033[32msucceeded\033[0m")); /* green */
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "\033[36mrunning\033[0m"));   /* cyan */
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "\033[2mpending\033[0m"));    /* dim */
    /* The unfinished token line is shown in the block, finished ones above it. */
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "  > Wor\n"));
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "Hello\n"));
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "World\n"));
    /* Every drawn line fits in 59 columns (escapes aside), so the cursor arithmetic holds. */
    for (char *line = out, *nl; (nl = strchr(line, '\n')); line = nl + 1) {
        int cols = 0;
        for (char *p = line; p < nl; p++) {
            if (*p == '\033') {
                while (p < nl && *p != 'm' && *p != 'A' && *p != 'J') p++;
                continue;
            }
            if (*p != '\r') cols++;
        }
        *nl = '\0'; /* look inside this line only */
        if (!strstr(line, " in 9.4s (2/2 steps)")) CU_ASSERT(cols <= 59); /* the summary is whole */
        *nl = '\n';
    }
    free(out);
}

static void test_task_failed(void)
{
    FILE *f = tmpfile();
    az_watchview_opts o = {0};
    az_watchview *v = az_watchview_new(AZ_WATCHVIEW_TASK, &o, f);
    Agentz__V1__Task t = AGENTZ__V1__TASK__INIT;
    t.id = T_RESEARCH;
    t.status = AGENTZ__V1__TASK_STATUS__TASK_STATUS_QUEUED;
    CU_ASSERT_EQUAL(az_watchview_set_task(v, &t), AZ_OK);
    CU_ASSERT_EQUAL(az_watchview_set_run(v, NULL, 0), AZ_ERR_INVALID); /* wrong kind */
    task_status(v, T_RESEARCH, NULL, AGENTZ__V1__TASK_STATUS__TASK_STATUS_RUNNING, 1, NULL, T0);
    task_status(v, T_RESEARCH, NULL, AGENTZ__V1__TASK_STATUS__TASK_STATUS_BACKOFF, 1, "llm_timeout", T0 + 1000);
    CU_ASSERT_EQUAL(az_watchview_ended(v), AZ_WATCHVIEW_OPEN);
    task_status(v, T_RESEARCH, NULL, AGENTZ__V1__TASK_STATUS__TASK_STATUS_RUNNING, 2, NULL, T0 + 2000);
    /* Another task's event changes nothing. */
    task_status(v, T_WRITE, NULL, AGENTZ__V1__TASK_STATUS__TASK_STATUS_SUCCEEDED, 1, NULL, T0 + 2500);
    CU_ASSERT_EQUAL(az_watchview_ended(v), AZ_WATCHVIEW_OPEN);
    task_status(v, T_RESEARCH, NULL, AGENTZ__V1__TASK_STATUS__TASK_STATUS_FAILED, 2, "max_iterations", T0 + 5000);
    CU_ASSERT_EQUAL(az_watchview_ended(v), AZ_WATCHVIEW_FAILED);
    az_watchview_note(v, "connection lost (UNAVAILABLE: x): resuming after sequence %d", 7);
    az_watchview_finish(v, T0 + 6000);
    az_watchview_free(v);
    char *out = slurp(f);
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "backoff    [--------------------]   0%    1.0s  llm_timeout: the model gave up"));
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "running    [--------------------]   0%    2.0s (attempt 2)"));
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "failed     [--------------------]   0%    5.0s (attempt 2)  max_iterations: the model gave up"));
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "connection lost (UNAVAILABLE: x): resuming after sequence 7\n"));
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "task " T_RESEARCH " failed in 5.0s: max_iterations: the model gave up\n"));
    CU_ASSERT_PTR_NULL(strstr(out, "succeeded"));
    free(out);
}

static void test_agents(void)
{
    FILE *f = tmpfile();
    az_watchview_opts o = {0};
    az_watchview *v = az_watchview_new(AZ_WATCHVIEW_AGENTS, &o, f);
    Agentz__V1__Agent a = AGENTZ__V1__AGENT__INIT;
    a.id = "a1";
    a.name = "researcher";
    a.status = AGENTZ__V1__AGENT_STATUS__AGENT_STATUS_IDLE;
    CU_ASSERT_EQUAL(az_watchview_add_agent(v, &a), AZ_OK);
    Agentz__V1__AgentStatusChanged s = AGENTZ__V1__AGENT_STATUS_CHANGED__INIT;
    s.to = AGENTZ__V1__AGENT_STATUS__AGENT_STATUS_BUSY;
    Agentz__V1__Event e = event(NULL, NULL, NULL, T0);
    e.agent_id = "a1";
    e.payload_case = AGENTZ__V1__EVENT__PAYLOAD_AGENT_STATUS;
    e.agent_status = &s;
    CU_ASSERT_EQUAL(az_watchview_apply(v, &e, T0), AZ_OK);
    Agentz__V1__TokenUsage u = AGENTZ__V1__TOKEN_USAGE__INIT;
    u.total_tokens = 1234;
    Agentz__V1__AgentMetrics m = AGENTZ__V1__AGENT_METRICS__INIT;
    m.agent_id = "a1";
    m.tasks_running = 1;
    m.tasks_succeeded = 4;
    m.usage = &u;
    e.payload_case = AGENTZ__V1__EVENT__PAYLOAD_AGENT_METRICS;
    e.agent_metrics = &m;
    CU_ASSERT_EQUAL(az_watchview_apply(v, &e, T0), AZ_OK);
    CU_ASSERT_EQUAL(az_watchview_apply(v, &e, T0), AZ_OK); /* unchanged: no new line */
    /* An agent created after the watch started gets its own line. */
    e.agent_id = "a2";
    e.payload_case = AGENTZ__V1__EVENT__PAYLOAD_AGENT_STATUS;
    e.agent_status = &s; /* the payload is a union: metrics took its place */
    s.to = AGENTZ__V1__AGENT_STATUS__AGENT_STATUS_ERROR;
    s.reason = "missing secret";
    CU_ASSERT_EQUAL(az_watchview_apply(v, &e, T0), AZ_OK);
    CU_ASSERT_EQUAL(az_watchview_ended(v), AZ_WATCHVIEW_OPEN); /* agents never end */
    az_watchview_free(v);
    char *out = slurp(f);
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "  researcher       busy      \n"));
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "  researcher       busy       running 1  done 4  failed 0  tokens 1234\n"));
    CU_ASSERT_EQUAL(count(out, "tokens 1234"), 1);
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "  a2               error       missing secret\n"));
    free(out);
}

/* A watch replaying the whole history takes only the steps from GetRun. */
static void test_steps_only(void)
{
    Agentz__V1__StepRun a = AGENTZ__V1__STEP_RUN__INIT;
    a.step_id = "research";
    a.task_id = T_RESEARCH;
    a.status = AGENTZ__V1__TASK_STATUS__TASK_STATUS_SUCCEEDED;
    Agentz__V1__StepRun *steps[] = {&a};
    Agentz__V1__WorkflowRun r = AGENTZ__V1__WORKFLOW_RUN__INIT;
    r.id = RUN_ID;
    r.status = AGENTZ__V1__RUN_STATUS__RUN_STATUS_SUCCEEDED;
    r.n_steps = 1;
    r.steps = steps;
    for (int steps_only = 0; steps_only <= 1; steps_only++) {
        FILE *f = tmpfile();
        az_watchview_opts o = {.tty = 1, .width = 100};
        az_watchview *v = az_watchview_new(AZ_WATCHVIEW_RUN, &o, f);
        CU_ASSERT_EQUAL(az_watchview_set_run(v, &r, steps_only), AZ_OK);
        CU_ASSERT_EQUAL(az_watchview_ended(v), steps_only ? AZ_WATCHVIEW_OPEN : AZ_WATCHVIEW_SUCCEEDED);
        az_watchview_refresh(v, T0);
        az_watchview_free(v);
        char *out = slurp(f);
        CU_ASSERT_PTR_NOT_NULL(strstr(out, steps_only ? "research         pending" : "research         succeeded"));
        CU_ASSERT_PTR_NOT_NULL(strstr(out, steps_only ? "0/1 steps" : "1/1 steps"));
        free(out);
    }
}

/* Resumed at an old sequence over a snapshot of a finished run: the replayed history (running,
 * an earlier failed attempt) does not move a finished step back. */
static void test_resume_over_snapshot(void)
{
    Agentz__V1__StepRun a = AGENTZ__V1__STEP_RUN__INIT;
    a.step_id = "research";
    a.task_id = T_RESEARCH;
    a.status = AGENTZ__V1__TASK_STATUS__TASK_STATUS_SUCCEEDED;
    a.attempt = 2;
    Agentz__V1__StepRun *steps[] = {&a};
    Agentz__V1__WorkflowRun r = AGENTZ__V1__WORKFLOW_RUN__INIT;
    r.id = RUN_ID;
    r.status = AGENTZ__V1__RUN_STATUS__RUN_STATUS_RUNNING;
    r.n_steps = 1;
    r.steps = steps;
    FILE *f = tmpfile();
    az_watchview_opts o = {.width = 100};
    az_watchview *v = az_watchview_new(AZ_WATCHVIEW_RUN, &o, f);
    CU_ASSERT_EQUAL(az_watchview_set_run(v, &r, 0), AZ_OK);
    task_status(v, T_RESEARCH, "research", AGENTZ__V1__TASK_STATUS__TASK_STATUS_FAILED, 1, "llm_timeout", T0);
    task_status(v, T_RESEARCH, "research", AGENTZ__V1__TASK_STATUS__TASK_STATUS_RUNNING, 2, NULL, T0 + 10);
    task_status(v, T_RESEARCH, "research", AGENTZ__V1__TASK_STATUS__TASK_STATUS_SUCCEEDED, 2, NULL, T0 + 20);
    run_status(v, AGENTZ__V1__RUN_STATUS__RUN_STATUS_SUCCEEDED, T0 + 30);
    CU_ASSERT_EQUAL(az_watchview_ended(v), AZ_WATCHVIEW_SUCCEEDED);
    az_watchview_finish(v, T0 + 40);
    az_watchview_free(v);
    char *out = slurp(f);
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "(1/1 steps)"));
    CU_ASSERT_PTR_NULL(strstr(out, "research         failed"));
    CU_ASSERT_PTR_NULL(strstr(out, "research         running"));
    free(out);
}

int main(void)
{
    if (CU_initialize_registry() != CUE_SUCCESS) return 1;
    CU_pSuite s = CU_add_suite("watchview", NULL, NULL);
    CU_add_test(s, "elapsed times and bars", test_formatting);
    CU_add_test(s, "a run as plain lines, with tokens", test_run_plain);
    CU_add_test(s, "a run on a terminal: redrawn, coloured, cut to width", test_run_tty);
    CU_add_test(s, "a task that fails after a retry", test_task_failed);
    CU_add_test(s, "agents: status, metrics, new agents", test_agents);
    CU_add_test(s, "steps only, for a replay of the whole history", test_steps_only);
    CU_add_test(s, "resumed over a snapshot: history does not move steps back", test_resume_over_snapshot);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    unsigned failed = CU_get_number_of_failures() + CU_get_number_of_tests_failed();
    if (CU_get_number_of_suites_failed()) failed++;
    CU_cleanup_registry();
    return failed ? 1 : 0;
}
