/* CUnit suite running the whole agentz command line in-process (az_cli_main with temporary
 * files as stdout/stderr), without a server: help at every level, usage errors naming the flag
 * for every noun, `import crewai --dry-run` output, -f parsing, and UNAVAILABLE from an
 * unreachable server. */
#include <CUnit/Basic.h>
#include <jansson.h>
#include <libgen.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"

#define UNREACHABLE "--server=127.0.0.1:1"

static const char *fixture(const char *rel)
{
    static char buf[4][1024];
    static int next;
    char src[1024];
    snprintf(src, sizeof src, "%s", __FILE__);
    char *path = buf[next++ % 4];
    snprintf(path, 1024, "%s/fixtures/crewai/%s", dirname(src), rel);
    return path;
}

typedef struct result {
    int code;
    char *out, *err;
} result;

static char *slurp(FILE *f)
{
    fflush(f);
    long n = ftell(f);
    char *s = calloc(1, (size_t)(n > 0 ? n : 0) + 1);
    rewind(f);
    if (s && n > 0 && fread(s, 1, (size_t)n, f) != (size_t)n) s[0] = '\0';
    fclose(f);
    return s;
}

/* Runs "agentz ARGS..." (NULL-terminated). */
static result run(const char *first, ...)
{
    char *argv[64] = {"agentz"};
    int argc = 1;
    va_list ap;
    va_start(ap, first);
    for (const char *a = first; a && argc < 63; a = va_arg(ap, const char *)) argv[argc++] = (char *)a;
    va_end(ap);
    argv[argc] = NULL;
    FILE *out = tmpfile(), *err = tmpfile();
    CU_ASSERT_PTR_NOT_NULL_FATAL(out);
    CU_ASSERT_PTR_NOT_NULL_FATAL(err);
    result r;
    r.code = az_cli_main(argc, argv, out, err);
    fflush(err);
    r.out = slurp(out);
    r.err = slurp(err);
    return r;
}

static void done(result *r)
{
    free(r->out);
    free(r->err);
}

/* Expects exit code and a substring of stderr (and of stdout when want_out is set). */
static void expect(result r, int code, const char *want_err, const char *want_out)
{
    int ok = r.code == code && (!want_err || strstr(r.err, want_err)) &&
             (!want_out || strstr(r.out, want_out));
    if (!ok)
        fprintf(stderr, "\nexit %d (want %d)\nstdout: %s\nstderr: %s\nwant err: %s\nwant out: %s\n",
                r.code, code, r.out, r.err, want_err ? want_err : "", want_out ? want_out : "");
    CU_ASSERT_TRUE(ok);
    done(&r);
}

static void test_help(void)
{
    result r = run("--help", NULL);
    CU_ASSERT_EQUAL(r.code, 0);
    static const char *const nouns[] = {"agents", "tasks", "workflows", "runs", "templates", "import", "export",
                                         "system", "keys", "secrets", "audit"};
    for (size_t i = 0; i < sizeof nouns / sizeof *nouns; i++) CU_ASSERT_PTR_NOT_NULL(strstr(r.out, nouns[i]));
    done(&r);

    static const struct {
        const char *noun;
        const char *verbs[8];
    } cases[] = {
        {"tasks", {"create", "create-batch", "get", "list", "cancel", "retry", "attempts"}},
        {"workflows", {"create", "apply", "get", "list", "versions", "delete", "analytics"}},
        {"runs", {"start", "get", "list", "cancel", "resume"}},
        {"templates", {"list", "instantiate", "save"}},
        {"import", {"crewai"}},
        {"export", {"crewai"}},
        {"system", {"whoami"}},
        {"keys", {"create", "list", "revoke"}},
        {"secrets", {"create", "list", "delete"}},
        {"audit", {"list"}},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        r = run(cases[i].noun, "--help", NULL);
        CU_ASSERT_EQUAL(r.code, 0);
        for (size_t v = 0; cases[i].verbs[v]; v++) {
            char line[64];
            snprintf(line, sizeof line, "  %s", cases[i].verbs[v]);
            if (!strstr(r.out, line)) fprintf(stderr, "\n%s --help lacks %s:\n%s\n", cases[i].noun, line, r.out);
            CU_ASSERT_PTR_NOT_NULL(strstr(r.out, line));
        }
        done(&r);
        /* Without a command: the same list on stderr, exit 2. */
        r = run(cases[i].noun, NULL);
        CU_ASSERT_EQUAL(r.code, 2);
        CU_ASSERT_PTR_NOT_NULL(strstr(r.err, cases[i].verbs[0]));
        done(&r);
    }
    expect(run("tasks", "create", "--help", NULL), 0, NULL, "--timeout DURATION");
    expect(run("runs", "start", "-h", NULL), 0, NULL, "--inputs-file FILE");
    expect(run("import", "crewai", "--help", NULL), 0, NULL, "--manager-llm MODEL");
    expect(run("export", "crewai", "--help", NULL), 0, NULL, "Usage: agentz export crewai WORKFLOW_ID DIR [flags]");
    expect(run("workflows", "apply", "--help", NULL), 0, NULL, "update_mask");
    expect(run("keys", "create", "--help", NULL), 0, NULL, "--expires DURATION");
    expect(run("secrets", "create", "--help", NULL), 0, NULL, "visible in ps");
    expect(run("audit", "list", "--help", NULL), 0, NULL, "--principal P");
}

static void test_usage_errors(void)
{
    /* tasks */
    expect(run("tasks", "create", "--description", "d", NULL), 2,
           "error: --agent is required (or give the task with -f FILE)", NULL);
    expect(run("tasks", "create", "--agent", "a", "--description", "d", "--max-attempts", "x", NULL), 2,
           "--max-attempts", NULL);
    expect(run("tasks", "create", "--agent", "a", "--description", "d", "--timeout", "3x", NULL), 2,
           "--timeout", NULL);
    expect(run("tasks", "create", "--agent", "a", "--description", "d", "--backoff-coefficient", "0.5", NULL),
           2, "--backoff-coefficient: must be at least 1", NULL);
    expect(run("tasks", "create", "--agent", "a", "--description", "d", "--label", "=v", NULL), 2, "--label", NULL);
    expect(run("tasks", "create", "--agent", "a", "--description", "d", "--output-schema", "/nonexistent.json", NULL),
           2, "--output-schema", NULL);
    expect(run("tasks", "list", "--status", "bogus", NULL), 2, "--status", NULL);
    expect(run("tasks", "list", "--page-size", "-1", NULL), 2, "--page-size", NULL);
    expect(run("tasks", "stats", "--since", "3x", NULL), 2, "--since", NULL);
    expect(run("tasks", "stats", "--since", "1h", "--start", "2026-01-01T00:00:00Z", NULL), 2,
           "--since cannot be combined with --start or --end", NULL);
    expect(run("tasks", "stats", "--start", "yesterday", NULL), 2, "--start: \"yesterday\" is not an RFC 3339 time", NULL);
    expect(run("tasks", "get", NULL), 2, "missing ID", NULL);
    expect(run("tasks", "cancel", "a", "b", NULL), 2, "unexpected argument \"b\"", NULL);
    expect(run("tasks", "frobnicate", NULL), 2, "unknown command \"frobnicate\" for tasks", NULL);
    /* workflows */
    expect(run("workflows", "create", NULL), 2, "-f FILE is required", NULL);
    expect(run("workflows", "apply", "-f", "-", NULL), 2, "give a file, not '-'", NULL);
    expect(run("workflows", "create", "-f", "/nonexistent.yaml", NULL), 2, "-f: cannot open /nonexistent.yaml", NULL);
    expect(run("workflows", "get", "w", "--version", "x", NULL), 2, "--version", NULL);
    expect(run("workflows", "list", "--selector", "bad", NULL), 2, "--selector", NULL);
    expect(run("workflows", "analytics", "w", "--since", "7x", NULL), 2, "--since", NULL);
    expect(run("workflows", "delete", NULL), 2, "missing ID", NULL);
    /* runs */
    expect(run("runs", "start", NULL), 2, "missing WORKFLOW_ID", NULL);
    expect(run("runs", "start", "w", "--input", "novalue", NULL), 2, "--input", NULL);
    expect(run("runs", "start", "w", "--inputs-file", "/nonexistent.yaml", NULL), 2, "--inputs-file", NULL);
    expect(run("runs", "list", "--status", "nope", NULL), 2, "--status", NULL);
    expect(run("runs", "cancel", "r", "--bogus", NULL), 2, "unknown flag --bogus", NULL);
    /* templates */
    expect(run("templates", "save", "w", NULL), 2, "--name is required", NULL);
    expect(run("templates", "instantiate", NULL), 2, "missing TEMPLATE_ID", NULL);
    expect(run("templates", "list", "--page-size", "x", NULL), 2, "--page-size", NULL);
    /* import / export */
    expect(run("import", "crewai", NULL), 2, "missing DIR", NULL);
    expect(run("import", "crewai", "/nonexistent", NULL), 2, "no agents.yaml and tasks.yaml in /nonexistent/config", NULL);
    expect(run("import", "crewai", fixture("latest_ai_development"), "--process", "sequential",
               "--manager-llm", "x", NULL), 2, "--manager-llm needs --process hierarchical", NULL);
    expect(run("import", "crewai", fixture("latest_ai_development"), "--process", "weird", "--dry-run", NULL), 2,
           "--process: unknown process \"weird\"", NULL);
    expect(run("import", "crewai", fixture("broken_syntax"), "--dry-run", NULL), 2,
           "tasks.yaml:6:1: found unexpected end of stream while scanning a quoted scalar (line 3)", NULL);
    expect(run("import", "crewai", fixture("broken_agent"), "--dry-run", NULL), 2,
           "task write_task: agent \"writer\" is not defined", NULL);
    expect(run("import", "nope", NULL), 2, "unknown command \"nope\" for import", NULL);
    expect(run("export", "crewai", "w", NULL), 2, "missing WORKFLOW_ID DIR", NULL);
    expect(run("export", "crewai", "w", "d", "--version", "0", NULL), 2, "--version", NULL);
    /* system, keys, secrets, audit: all fail before anything is sent (even to a dead server) */
    expect(run(UNREACHABLE, "system", "whoami", "x", NULL), 2, "unexpected argument \"x\"", NULL);
    expect(run(UNREACHABLE, "keys", "create", "--role", "admin", NULL), 2, "--name is required", NULL);
    expect(run(UNREACHABLE, "keys", "create", "--name", "ci", NULL), 2, "--role is required", NULL);
    expect(run(UNREACHABLE, "keys", "create", "--name", "ci", "--role", "god", NULL), 2, "--role", NULL);
    expect(run(UNREACHABLE, "keys", "create", "--name", "ci", "--role", "unspecified", NULL), 2,
           "--role: must be viewer, editor, admin or owner", NULL);
    expect(run(UNREACHABLE, "keys", "create", "--name", "ci", "--role", "viewer", "--expires", "30x", NULL), 2,
           "--expires", NULL);
    expect(run(UNREACHABLE, "keys", "create", "--name", "ci", "--role", "viewer", "--expires", "0s", NULL), 2,
           "--expires: must be more than 0", NULL);
    expect(run(UNREACHABLE, "keys", "list", "--page-size", "x", NULL), 2, "--page-size", NULL);
    expect(run(UNREACHABLE, "keys", "revoke", NULL), 2, "missing ID", NULL);
    expect(run(UNREACHABLE, "secrets", "create", "OPENAI_API_KEY", NULL), 2,
           "exactly one of --from-stdin, --from-file FILE or --value VALUE", NULL);
    expect(run(UNREACHABLE, "secrets", "create", "K", "--value", "v", "--from-stdin", NULL), 2,
           "exactly one of", NULL);
    expect(run(UNREACHABLE, "secrets", "create", "K", "--value", "", NULL), 2, "the secret value is empty", NULL);
    expect(run(UNREACHABLE, "secrets", "create", "K", "--from-file", "/nonexistent.key", NULL), 2,
           "--from-file: ", NULL);
    expect(run(UNREACHABLE, "secrets", "create", "--value", "v", NULL), 2, "missing NAME", NULL);
    expect(run(UNREACHABLE, "secrets", "delete", NULL), 2, "missing NAME", NULL);
    expect(run(UNREACHABLE, "audit", "list", "--since", "yesterday", NULL), 2, "--since", NULL);
}

static void test_dry_run(void)
{
    result r = run("import", "crewai", fixture("latest_ai_development"), "--dry-run", NULL);
    CU_ASSERT_EQUAL(r.code, 0);
    json_t *got = json_loads(r.out, 0, NULL);
    json_t *want = json_load_file(fixture("latest_ai_development.dry-run.json"), 0, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(want);
    if (!json_equal(got, want)) fprintf(stderr, "\ngot:\n%s\n", r.out);
    CU_ASSERT_TRUE(json_equal(got, want));
    /* Warnings go to stderr, one per dropped setting. */
    CU_ASSERT_PTR_NOT_NULL(strstr(r.err, "warning: "));
    CU_ASSERT_PTR_NOT_NULL(strstr(r.err, "tool SerperDevTool has no AGENTZ equivalent"));
    CU_ASSERT_PTR_NOT_NULL(strstr(r.err, "output_file is not supported"));
    json_decref(got);
    json_decref(want);
    done(&r);
    /* --name and -o yaml */
    expect(run("import", "crewai", fixture("market_research"), "--dry-run", "--name", "mr", "-o", "yaml", NULL),
           0, NULL, "process: PROCESS_PARALLEL");
}

static char *temp_file(const char *suffix, const char *text)
{
    char *path = NULL;
    if (asprintf(&path, "/tmp/test_cli_XXXXXX%s", suffix) < 0) return NULL;
    int fd = mkstemps(path, (int)strlen(suffix));
    CU_ASSERT_FATAL(fd >= 0);
    CU_ASSERT_EQUAL((size_t)write(fd, text, strlen(text)), strlen(text));
    close(fd);
    return path;
}

/* Files parse before anything is sent: good ones reach the (unreachable) server, bad ones are
 * usage errors naming file, line and column or the field. */
static void test_files(void)
{
    char *good = temp_file(".yaml", "name: research\nprocess: PROCESS_SEQUENTIAL\nsteps:\n"
                                    "  - id: s1\n    agent_id: 0190\n    description: Research {topic}\n"
                                    "    expected_output: notes\n    timeout: 90s\n"
                                    "inputs:\n  - {name: topic, required: true}\n");
    char *bad = temp_file(".yaml", "name: x\nsteps:\n  - id: [s1\n");
    char *unknown = temp_file(".yaml", "name: x\nstepz: []\n");
    char *task = temp_file(".json", "{\"agentId\": \"a\", \"description\": \"d\", \"expectedOutput\": \"e\"}");
    char *inputs = temp_file(".yaml", "topic: AI\nyear: 2026\n");
    expect(run(UNREACHABLE, "workflows", "create", "-f", good, NULL), 1, "error: UNAVAILABLE: ", NULL);
    expect(run(UNREACHABLE, "workflows", "apply", "-f", good, NULL), 1, "error: UNAVAILABLE: ", NULL);
    char want[256];
    snprintf(want, sizeof want, "error: INVALID_ARGUMENT: %s:4:1:", bad);
    expect(run(UNREACHABLE, "workflows", "create", "-f", bad, NULL), 2, want, NULL);
    snprintf(want, sizeof want, "error: INVALID_ARGUMENT: %s: workflow.stepz: unknown field", unknown);
    expect(run(UNREACHABLE, "workflows", "create", "-f", unknown, NULL), 2, want, NULL);
    expect(run(UNREACHABLE, "tasks", "create", "-f", task, "--label", "team=a", NULL), 1,
           "error: UNAVAILABLE: ", NULL);
    expect(run(UNREACHABLE, "runs", "start", "w", "--inputs-file", inputs, "--input", "topic=x", NULL), 1,
           "error: UNAVAILABLE: ", NULL);
    /* tasks create-batch: a JSON array, JSON lines, and each way of getting them wrong. */
    char *arr = temp_file(".json", "[{\"agentId\": \"a\", \"description\": \"d1\"},\n"
                                   " {\"task\": {\"agentId\": \"a\", \"description\": \"d2\"}, \"requestId\": \"k\"}]\n");
    char *lines = temp_file(".jsonl", "{\"agentId\": \"a\", \"description\": \"d1\"}\n\n"
                                      "{\"agentId\": \"a\", \"description\": \"d2\"}\n");
    char *bad_field = temp_file(".json", "[{\"agentId\": \"a\"}, {\"agentId\": \"a\", \"bogus\": 1}]");
    char *bad_line = temp_file(".jsonl", "{\"agentId\": \"a\"}\n{\"agentId\": \"a\",\n");
    char *not_obj = temp_file(".json", "[{\"agentId\": \"a\"}, 7]");
    char *empty = temp_file(".json", "[]");
    expect(run(UNREACHABLE, "tasks", "create-batch", "-f", arr, NULL), 1, "error: UNAVAILABLE: ", NULL);
    expect(run(UNREACHABLE, "--request-id", "r1", "tasks", "create-batch", "--file", lines, NULL), 1,
           "error: UNAVAILABLE: ", NULL);
    expect(run(UNREACHABLE, "tasks", "create-batch", NULL), 2, "-f FILE is required", NULL);
    expect(run(UNREACHABLE, "tasks", "create-batch", "-f", "/nonexistent.json", NULL), 2,
           "-f: /nonexistent.json: cannot open", NULL);
    snprintf(want, sizeof want, "error: INVALID_ARGUMENT: %s: [1].bogus: unknown field", bad_field);
    expect(run(UNREACHABLE, "tasks", "create-batch", "-f", bad_field, NULL), 2, want, NULL);
    snprintf(want, sizeof want, "error: INVALID_ARGUMENT: %s:2:", bad_line);
    expect(run(UNREACHABLE, "tasks", "create-batch", "-f", bad_line, NULL), 2, want, NULL);
    snprintf(want, sizeof want, "%s: [1]: expected a JSON object", not_obj);
    expect(run(UNREACHABLE, "tasks", "create-batch", "-f", not_obj, NULL), 2, want, NULL);
    expect(run(UNREACHABLE, "tasks", "create-batch", "-f", empty, NULL), 2, "holds no tasks", NULL);
    char *batch_files[] = {arr, lines, bad_field, bad_line, not_obj, empty};
    for (size_t i = 0; i < 6; i++) {
        unlink(batch_files[i]);
        free(batch_files[i]);
    }
    char *files[] = {good, bad, unknown, task, inputs};
    for (size_t i = 0; i < 5; i++) {
        unlink(files[i]);
        free(files[i]);
    }
}

/* Every noun reaches the transport: an unreachable server is UNAVAILABLE, exit 1. */
static void test_unavailable(void)
{
    expect(run(UNREACHABLE, "tasks", "get", "t", NULL), 1, "error: UNAVAILABLE: ", NULL);
    expect(run(UNREACHABLE, "tasks", "list", "--all", "--status", "running", NULL), 1, "error: UNAVAILABLE: ", NULL);
    expect(run(UNREACHABLE, "tasks", "create", "--agent", "a", "--description", "d", "--depends-on", "t1",
               "--max-attempts", "3", "--initial-backoff", "1s", "--maximum-backoff", "1m",
               "--non-retryable", "tool_error", "--webhook", "http://x", "--context", "c", NULL),
           1, "error: UNAVAILABLE: ", NULL);
    expect(run(UNREACHABLE, "tasks", "stats", "--since", "7d", "--agent", "a", NULL), 1, "error: UNAVAILABLE: ", NULL);
    expect(run(UNREACHABLE, "tasks", "attempts", "t", NULL), 1, "error: UNAVAILABLE: ", NULL);
    expect(run(UNREACHABLE, "workflows", "list", NULL), 1, "error: UNAVAILABLE: ", NULL);
    expect(run(UNREACHABLE, "workflows", "versions", "w", NULL), 1, "error: UNAVAILABLE: ", NULL);
    expect(run(UNREACHABLE, "workflows", "analytics", "w", "--since", "7d", NULL), 1, "error: UNAVAILABLE: ", NULL);
    expect(run(UNREACHABLE, "runs", "get", "r", NULL), 1, "error: UNAVAILABLE: ", NULL);
    expect(run(UNREACHABLE, "runs", "resume", "r", NULL), 1, "error: UNAVAILABLE: ", NULL);
    expect(run(UNREACHABLE, "templates", "list", NULL), 1, "error: UNAVAILABLE: ", NULL);
    expect(run(UNREACHABLE, "templates", "instantiate", "research-report", NULL), 1, "error: UNAVAILABLE: ", NULL);
    expect(run(UNREACHABLE, "import", "crewai", fixture("latest_ai_development"), NULL), 1,
           "error: UNAVAILABLE: ", NULL);
    expect(run(UNREACHABLE, "export", "crewai", "w", "/tmp/never-written", NULL), 1, "error: UNAVAILABLE: ", NULL);
    CU_ASSERT_NOT_EQUAL(access("/tmp/never-written", F_OK), 0);
    expect(run(UNREACHABLE, "system", "whoami", NULL), 1, "error: UNAVAILABLE: ", NULL);
    expect(run(UNREACHABLE, "keys", "create", "--name", "ci", "--role", "editor", "--expires", "30d", NULL), 1,
           "error: UNAVAILABLE: ", NULL);
    expect(run(UNREACHABLE, "keys", "list", "--all", NULL), 1, "error: UNAVAILABLE: ", NULL);
    expect(run(UNREACHABLE, "keys", "revoke", "k", NULL), 1, "error: UNAVAILABLE: ", NULL);
    expect(run(UNREACHABLE, "secrets", "create", "K", "--value", "v", NULL), 1, "error: UNAVAILABLE: ", NULL);
    char *value = temp_file(".key", "sk-test\n");
    expect(run(UNREACHABLE, "secrets", "create", "K", "--from-file", value, NULL), 1, "error: UNAVAILABLE: ", NULL);
    unlink(value);
    free(value);
    expect(run(UNREACHABLE, "secrets", "list", NULL), 1, "error: UNAVAILABLE: ", NULL);
    expect(run(UNREACHABLE, "secrets", "delete", "K", NULL), 1, "error: UNAVAILABLE: ", NULL);
    expect(run(UNREACHABLE, "audit", "list", "--principal", "anonymous", "--method",
               "/agentz.v1.AgentService/DeleteAgent", "--since", "24h", "--all", NULL), 1,
           "error: UNAVAILABLE: ", NULL);
}

/* agentz watch: arguments are checked before anything is sent; an unreachable server is a
 * failure of the watch (1), not a run outcome (3, 4). */
static void test_watch(void)
{
    result r = run("watch", "--help", NULL);
    CU_ASSERT_PTR_NOT_NULL(strstr(r.out, "Watch a workflow run live"));
    CU_ASSERT_PTR_NOT_NULL(strstr(r.out, "Watch one task live"));
    expect(r, 0, NULL, "Watch agents' statuses");
    expect(run("watch", "task", "--help", NULL), 0, NULL, "Exit codes: 0 the run/task succeeded");
    expect(run("watch", "run", "--help", NULL), 0, NULL, "--tokens");
    expect(run("watch", "agents", "--help", NULL), 0, NULL, "--metrics");
    expect(run("watch", NULL), 2, "run", NULL);
    expect(run("watch", "runs", "r", NULL), 2, "unknown command \"runs\" for watch", NULL);
    expect(run(UNREACHABLE, "watch", "run", NULL), 2, "missing ID", NULL);
    expect(run(UNREACHABLE, "watch", "task", NULL), 2, "missing ID", NULL);
    expect(run(UNREACHABLE, "watch", "run", "a", "b", NULL), 2, "unexpected argument \"b\"", NULL);
    expect(run(UNREACHABLE, "watch", "run", "", NULL), 2, "empty run id", NULL);
    expect(run(UNREACHABLE, "watch", "task", "", NULL), 2, "empty task id", NULL);
    expect(run(UNREACHABLE, "watch", "run", "r", "--bogus", NULL), 2, "--bogus", NULL);
    expect(run(UNREACHABLE, "watch", "run", "r", "--after-sequence", "-1", NULL), 2, "--after-sequence", NULL);
    expect(run(UNREACHABLE, "watch", "task", "t", "--after-sequence", "x", NULL), 2, "--after-sequence", NULL);
    expect(run(UNREACHABLE, "watch", "agents", "--selector", "=v", NULL), 2, "--selector", NULL);
    expect(run(UNREACHABLE, "watch", "agents", "--tokens", NULL), 2, "--tokens", NULL);
    expect(run(UNREACHABLE, "watch", "agents", "a", "", NULL), 2, "empty agent id", NULL);
    expect(run(UNREACHABLE, "watch", "run", "r", "--tokens", NULL), 1, "error: UNAVAILABLE: ", NULL);
    expect(run(UNREACHABLE, "watch", "task", "t", "--after-sequence", "7", NULL), 1, "error: UNAVAILABLE: ", NULL);
    expect(run(UNREACHABLE, "watch", "agents", "--metrics", NULL), 1, "error: UNAVAILABLE: ", NULL);
    expect(run(UNREACHABLE, "-o", "json", "watch", "run", "r", NULL), 1, "error: UNAVAILABLE: ", NULL);
}

int main(void)
{
    if (CU_initialize_registry() != CUE_SUCCESS) return 2;
    CU_pSuite s = CU_add_suite("cli", NULL, NULL);
    static const struct {
        const char *name;
        CU_TestFunc fn;
    } tests[] = {
        {"help at every level", test_help},
        {"usage errors name the flag", test_usage_errors},
        {"import crewai --dry-run", test_dry_run},
        {"-f files", test_files},
        {"unreachable server", test_unavailable},
        {"watch run|task|agents arguments", test_watch},
    };
    for (size_t i = 0; s && i < sizeof tests / sizeof tests[0]; i++)
        if (!CU_add_test(s, tests[i].name, tests[i].fn)) s = NULL;
    if (!s) {
        CU_cleanup_registry();
        return 2;
    }
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    unsigned failures = CU_get_number_of_failures();
    CU_cleanup_registry();
    return failures ? 1 : 0;
}
