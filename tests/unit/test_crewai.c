/* CUnit suites for client/yamljson (YAML -> JSON typing, aliases, limits, errors with line
 * numbers, emitting) and client/crewai (the CrewAI mapping on the projects in
 * tests/unit/fixtures/crewai, dry-run output, export -> import round trips). No server. */
#include <CUnit/Basic.h>
#include <jansson.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "agentz/v1/workflow.pb-c.h"
#include "core/arena.h"
#include "core/pbjson.h"
#include "crewai.h"
#include "core/file.h"
#include "yamljson.h"

/* ---- helpers ---- */

/* tests/unit/fixtures/crewai/<rel>, found from this file's path so the suite runs from any
 * directory. */
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

static json_t *yaml(const char *text, const ProtobufCMessageDescriptor *desc, char *msg)
{
    json_t *v = NULL;
    az_err err = az_yaml_parse(text, strlen(text), "t.yaml", desc, &v, msg);
    if (err) fprintf(stderr, "\nparse failed: %s\n", msg);
    CU_ASSERT_EQUAL(err, AZ_OK);
    return v;
}

/* Parses text and compares it with the JSON want (key order ignored). */
static void check_yaml(const char *text, const char *want)
{
    char msg[AZ_MSG_MAX] = "";
    json_t *got = yaml(text, NULL, msg);
    json_t *w = json_loads(want, JSON_DECODE_ANY, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(w);
    if (!got || !json_equal(got, w)) {
        char *g = got ? json_dumps(got, JSON_SORT_KEYS | JSON_ENCODE_ANY) : NULL;
        fprintf(stderr, "\nyaml: %s\n got: %s\nwant: %s\n", text, g ? g : "(null)", want);
        free(g);
        CU_FAIL("yaml mismatch");
    }
    json_decref(got);
    json_decref(w);
}

/* Expects text to fail with exactly want_msg. */
static void check_yaml_err(const char *text, const char *want_msg)
{
    char msg[AZ_MSG_MAX] = "";
    json_t *v = (json_t *)1;
    az_err err = az_yaml_parse(text, strlen(text), "t.yaml", NULL, &v, msg);
    CU_ASSERT_EQUAL(err, AZ_ERR_INVALID);
    CU_ASSERT_PTR_NULL(v);
    if (strcmp(msg, want_msg) != 0) fprintf(stderr, "\n got: %s\nwant: %s\n", msg, want_msg);
    CU_ASSERT_STRING_EQUAL(msg, want_msg);
}

static char *read_all(const char *path, size_t *len)
{
    char msg[AZ_MSG_MAX], *text = NULL;
    az_err err = az_file_read(path, &text, len, msg);
    if (err) fprintf(stderr, "\n%s\n", msg);
    CU_ASSERT_EQUAL_FATAL(err, AZ_OK);
    return text;
}

static int has_note(const az_crewai_notes *n, const char *part)
{
    for (size_t i = 0; i < n->n; i++)
        if (strstr(n->lines[i], part)) return 1;
    return 0;
}

/* Imports a fixture project; *t lives in ar. */
static az_err import_dir(const char *rel, az_crewai_opts *opts, az_arena *ar,
                         Agentz__V1__Template **t, az_crewai_notes *notes, char *msg)
{
    char *ap, *tp;
    az_err err = az_crewai_find(fixture(rel), &ap, &tp, msg);
    if (err) return err;
    size_t alen, tlen;
    char *a = read_all(ap, &alen), *tx = read_all(tp, &tlen);
    err = az_crewai_import(a, alen, "agents.yaml", tx, tlen, "tasks.yaml", opts, ar, t, notes, msg);
    free(a);
    free(tx);
    free(ap);
    free(tp);
    return err;
}

/* Imports agents/tasks texts given inline. */
static az_err import_text(const char *agents, const char *tasks, az_crewai_opts *opts,
                          az_arena *ar, Agentz__V1__Template **t, az_crewai_notes *notes, char *msg)
{
    return az_crewai_import(agents, strlen(agents), "agents.yaml", tasks, strlen(tasks),
                            "tasks.yaml", opts, ar, t, notes, msg);
}

static char *encode(const void *m)
{
    char msg[AZ_MSG_MAX], *out = NULL;
    CU_ASSERT_EQUAL(az_pbjson_encode(m, AZ_PBJSON_PRETTY, &out, msg), AZ_OK);
    return out;
}

/* ---- YAML -> JSON ---- */

static void test_yaml_types(void)
{
    check_yaml("a: 1\nb: -1.5\nc: true\nd: yes\ne: ~\nf: \"1\"\ng: hello world\nh: 0x1f\n"
               "i: 1e3\nj: ''\nk: null\nl: 010\nm: [1, two, 'three']\nn: {x: Off}\no:\np: 1_000\n"
               "q: .5\nr: 'yes'\ns: 12:30\nt: \"\\u00e9t\\u00e9\"\n",
               "{\"a\":1,\"b\":-1.5,\"c\":true,\"d\":true,\"e\":null,\"f\":\"1\",\"g\":\"hello world\","
               "\"h\":31,\"i\":\"1e3\",\"j\":\"\",\"k\":null,\"l\":8,\"m\":[1,\"two\",\"three\"],"
               "\"n\":{\"x\":false},\"o\":null,\"p\":1000,\"q\":0.5,\"r\":\"yes\",\"s\":\"12:30\","
               "\"t\":\"\\u00e9t\\u00e9\"}");
    /* Block scalars are strings, whatever they contain. */
    check_yaml("a: |\n  12\nb: >-\n  line one\n  line two\n", "{\"a\":\"12\\n\",\"b\":\"line one line two\"}");
    check_yaml("", "null");
    check_yaml("- 1\n- [2, {a: b}]\n", "[1,[2,{\"a\":\"b\"}]]");
    check_yaml("99999999999999999999: big\n", "{\"99999999999999999999\":\"big\"}");
    check_yaml("n: 99999999999999999999\n", "{\"n\":\"99999999999999999999\"}");
}

/* With a descriptor, plain scalars under string fields stay strings, so pbjson accepts them. */
static void test_yaml_schema(void)
{
    const char *text = "name: 2024\n"
                       "description: yes\n"
                       "process: PROCESS_PARALLEL\n"
                       "labels: {team: 7, on: off}\n"
                       "webhook_urls: [http://x/1, 3]\n"
                       "steps:\n"
                       "  - id: 01\n"
                       "    agentId: 42\n"
                       "    description: true\n"
                       "    expected_output: 1.50\n"
                       "    timeout: 30s\n"
                       "    retry_policy: {max_attempts: 3, backoff_coefficient: 1.5, "
                       "initial_backoff: 2s}\n"
                       "    output_schema: {type: object, minimum: 0, required: [a]}\n"
                       "inputs:\n"
                       "  - {name: n, default_value: 10, required: yes}\n";
    char msg[AZ_MSG_MAX] = "";
    json_t *v = yaml(text, &agentz__v1__workflow__descriptor, msg);
    CU_ASSERT_PTR_NOT_NULL_FATAL(v);
    char *s = json_dumps(v, JSON_COMPACT);
    json_decref(v);
    ProtobufCMessage *m = NULL;
    az_err err = az_pbjson_decode(&agentz__v1__workflow__descriptor, s, strlen(s), NULL, &m, msg);
    if (err) fprintf(stderr, "\n%s\n%s\n", s, msg);
    free(s);
    CU_ASSERT_EQUAL_FATAL(err, AZ_OK);
    Agentz__V1__Workflow *w = (Agentz__V1__Workflow *)m;
    CU_ASSERT_STRING_EQUAL(w->name, "2024");
    CU_ASSERT_STRING_EQUAL(w->description, "yes");
    CU_ASSERT_EQUAL(w->process, AGENTZ__V1__PROCESS__PROCESS_PARALLEL);
    CU_ASSERT_EQUAL_FATAL(w->n_labels, 2);
    CU_ASSERT_STRING_EQUAL(w->labels[0]->value, "7");
    CU_ASSERT_STRING_EQUAL(w->labels[1]->key, "on");
    CU_ASSERT_STRING_EQUAL(w->labels[1]->value, "off");
    CU_ASSERT_STRING_EQUAL(w->webhook_urls[1], "3");
    CU_ASSERT_EQUAL_FATAL(w->n_steps, 1);
    const Agentz__V1__Step *st = w->steps[0];
    CU_ASSERT_STRING_EQUAL(st->id, "01");
    CU_ASSERT_STRING_EQUAL(st->agent_id, "42");
    CU_ASSERT_STRING_EQUAL(st->description, "true");
    CU_ASSERT_STRING_EQUAL(st->expected_output, "1.50");
    CU_ASSERT_EQUAL(st->timeout->seconds, 30);
    CU_ASSERT_EQUAL(st->retry_policy->max_attempts, 3);
    CU_ASSERT_EQUAL(st->retry_policy->initial_backoff->seconds, 2);
    CU_ASSERT_DOUBLE_EQUAL(st->retry_policy->backoff_coefficient, 1.5, 1e-9);
    /* Struct keeps YAML typing: minimum is a number. */
    CU_ASSERT_EQUAL_FATAL(st->output_schema->n_fields, 3);
    CU_ASSERT_STRING_EQUAL(w->inputs[0]->default_value, "10");
    CU_ASSERT_TRUE(w->inputs[0]->required);
    protobuf_c_message_free_unpacked(m, NULL);
}

static void test_yaml_aliases(void)
{
    check_yaml("base: &b {x: 1, y: [a]}\nuse: *b\nlist: [*b, *b]\n",
               "{\"base\":{\"x\":1,\"y\":[\"a\"]},\"use\":{\"x\":1,\"y\":[\"a\"]},"
               "\"list\":[{\"x\":1,\"y\":[\"a\"]},{\"x\":1,\"y\":[\"a\"]}]}");
    check_yaml_err("a: *nope\n", "t.yaml:1:4: found undefined alias");
    check_yaml_err("base: &b {x: 1}\nuse:\n  <<: *b\n", "t.yaml:3:3: merge keys (<<) are not supported");
    /* A node containing itself stops at the depth limit. */
    char msg[AZ_MSG_MAX] = "";
    json_t *v = NULL;
    const char *self = "a: &a [*a]\n";
    CU_ASSERT_EQUAL(az_yaml_parse(self, strlen(self), "t.yaml", NULL, &v, msg), AZ_ERR_INVALID);
    CU_ASSERT_PTR_NOT_NULL(strstr(msg, "nested deeper than 64 levels"));
    /* A billion laughs stops at the value limit. */
    char bomb[2048] = "a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n";
    for (int i = 1; i < 9; i++) {
        size_t n = strlen(bomb);
        snprintf(bomb + n, sizeof bomb - n, "a%d: &a%d [*a%d, *a%d, *a%d, *a%d, *a%d, *a%d, *a%d, *a%d, *a%d, *a%d]\n",
                 i, i, i - 1, i - 1, i - 1, i - 1, i - 1, i - 1, i - 1, i - 1, i - 1, i - 1);
    }
    v = NULL;
    CU_ASSERT_EQUAL(az_yaml_parse(bomb, strlen(bomb), "t.yaml", NULL, &v, msg), AZ_ERR_INVALID);
    CU_ASSERT_PTR_NOT_NULL(strstr(msg, "too many values"));
    CU_ASSERT_PTR_NULL(v);
}

static void test_yaml_errors(void)
{
    check_yaml_err("a: [1, 2\nb: 3\n",
                   "t.yaml:2:2: did not find expected ',' or ']' while parsing a flow sequence (line 1)");
    check_yaml_err("a: 1\nb:\n  c: 2\na: 3\n", "t.yaml:4:1: duplicate key \"a\"");
    check_yaml_err("a: 1\n---\nb: 2\n", "t.yaml:2:1: more than one document");
    check_yaml_err("? [a]\n: b\n", "t.yaml:1:3: mapping keys must be scalars");
    check_yaml_err("a:\n\tb: 1\n",
                   "t.yaml:2:1: found character that cannot start any token while scanning for "
                   "the next token (line 2)");
    /* 64 levels are fine, 65 are not. */
    char deep[400] = "";
    for (int i = 0; i < 63; i++) strcat(deep, "[");
    strcat(deep, "1");
    for (int i = 0; i < 63; i++) strcat(deep, "]");
    char msg[AZ_MSG_MAX];
    json_t *v = NULL;
    CU_ASSERT_EQUAL(az_yaml_parse(deep, strlen(deep), "t.yaml", NULL, &v, msg), AZ_OK);
    json_decref(v);
    char deeper[400] = "[";
    strcat(deeper, deep);
    strcat(deeper, "]");
    v = NULL;
    CU_ASSERT_EQUAL(az_yaml_parse(deeper, strlen(deeper), "t.yaml", NULL, &v, msg), AZ_ERR_INVALID);
    CU_ASSERT_STRING_EQUAL(msg, "t.yaml:1:65: nested deeper than 64 levels");
    /* The size limit. */
    size_t big = AZ_YAML_MAX_BYTES + 1;
    char *huge = malloc(big + 1);
    CU_ASSERT_PTR_NOT_NULL_FATAL(huge);
    memset(huge, '#', big);
    huge[big] = '\0';
    CU_ASSERT_EQUAL(az_yaml_parse(huge, big, "big.yaml", NULL, &v, msg), AZ_ERR_INVALID);
    CU_ASSERT_STRING_EQUAL(msg, "big.yaml: larger than 4194304 bytes");
    free(huge);
    /* Reading a missing file is an I/O error naming the file. */
    CU_ASSERT_EQUAL(az_yaml_read_file("/nonexistent/x.yaml", NULL, &v, msg), AZ_ERR_IO);
    CU_ASSERT_PTR_NOT_NULL(strstr(msg, "/nonexistent/x.yaml"));
}

static void test_yaml_read_message(void)
{
    char path[] = "/tmp/test_crewai_XXXXXX.yaml";
    int fd = mkstemps(path, 5);
    CU_ASSERT_FATAL(fd >= 0);
    const char *text = "name: wf\nsteps:\n  - id: a\n    bogus: 1\n";
    CU_ASSERT_EQUAL((size_t)write(fd, text, strlen(text)), strlen(text));
    close(fd);
    char msg[AZ_MSG_MAX];
    ProtobufCMessage *m = NULL;
    CU_ASSERT_EQUAL(az_yaml_read_message(path, &agentz__v1__workflow__descriptor, NULL, &m, msg),
                    AZ_ERR_INVALID);
    char want[AZ_MSG_MAX];
    snprintf(want, sizeof want, "%s: workflow.steps[0].bogus: unknown field", path);
    if (strcmp(msg, want) != 0) fprintf(stderr, "\n got: %s\nwant: %s\n", msg, want);
    CU_ASSERT_STRING_EQUAL(msg, want);
    /* JSON files go through jansson; errors carry line and column. */
    FILE *f = fopen(path, "w");
    fputs("{\"name\": \"wf\",\n \"steps\": [}", f);
    fclose(f);
    CU_ASSERT_EQUAL(az_yaml_read_message(path, &agentz__v1__workflow__descriptor, NULL, &m, msg),
                    AZ_ERR_INVALID);
    CU_ASSERT_PTR_NOT_NULL(strstr(msg, ":2:"));
    f = fopen(path, "w");
    fputs("{\"name\": \"wf\", \"process\": \"PROCESS_SEQUENTIAL\"}", f);
    fclose(f);
    CU_ASSERT_EQUAL(az_yaml_read_message(path, &agentz__v1__workflow__descriptor, NULL, &m, msg), AZ_OK);
    CU_ASSERT_STRING_EQUAL(((Agentz__V1__Workflow *)m)->name, "wf");
    protobuf_c_message_free_unpacked(m, NULL);
    unlink(path);
}

static void test_yaml_emit(void)
{
    const char *src = "{\"s\":\"plain text\",\"t\":\"true\",\"n\":\"12\",\"e\":\"\",\"nl\":\"a\\nb\\n\","
                      "\"i\":3,\"r\":2.0,\"b\":false,\"z\":null,\"o\":{},\"l\":[],"
                      "\"deep\":{\"list\":[{\"k\":\"v\"},\"x: y\",\"- dash\"]},\"yes\":\"on\","
                      "\"u\":\"\\u00e9\"}";
    json_t *v = json_loads(src, 0, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(v);
    char msg[AZ_MSG_MAX], *out = NULL;
    CU_ASSERT_EQUAL_FATAL(az_yaml_emit(v, &out, msg), AZ_OK);
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "s: plain text\n"));
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "t: \"true\"\n"));
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "n: \"12\"\n"));
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "nl: |\n  a\n  b\n"));
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "r: 2.0\n"));
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "o: {}\n"));
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "\"yes\": \"on\"\n"));
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "u: \xc3\xa9\n"));
    /* And it reads back as the same document. */
    json_t *back = NULL;
    CU_ASSERT_EQUAL(az_yaml_parse(out, strlen(out), "emitted", NULL, &back, msg), AZ_OK);
    if (!json_equal(v, back)) fprintf(stderr, "\nemitted:\n%s\n", out);
    CU_ASSERT_TRUE(json_equal(v, back));
    json_decref(back);
    json_decref(v);
    free(out);
}

/* ---- CrewAI ---- */

static void test_find(void)
{
    char msg[AZ_MSG_MAX], *a = NULL, *t = NULL;
    /* crewai create crew layout: src/<package>/config */
    CU_ASSERT_EQUAL_FATAL(az_crewai_find(fixture("latest_ai_development"), &a, &t, msg), AZ_OK);
    CU_ASSERT_PTR_NOT_NULL(strstr(a, "/src/latest_ai_development/config/agents.yaml"));
    CU_ASSERT_PTR_NOT_NULL(strstr(t, "/src/latest_ai_development/config/tasks.yaml"));
    free(a);
    free(t);
    CU_ASSERT_EQUAL_FATAL(az_crewai_find(fixture("market_research"), &a, &t, msg), AZ_OK);
    CU_ASSERT_PTR_NOT_NULL(strstr(a, "market_research/config/agents.yaml"));
    free(a);
    free(t);
    /* the two files in the directory itself */
    CU_ASSERT_EQUAL_FATAL(az_crewai_find(fixture("broken_syntax"), &a, &t, msg), AZ_OK);
    CU_ASSERT_PTR_NOT_NULL(strstr(t, "broken_syntax/tasks.yaml"));
    free(a);
    free(t);
    CU_ASSERT_EQUAL(az_crewai_find(fixture("nope"), &a, &t, msg), AZ_ERR_NOT_FOUND);
    CU_ASSERT_PTR_NULL(a);
    CU_ASSERT_PTR_NOT_NULL(strstr(msg, "no agents.yaml and tasks.yaml in"));
}

static void test_import_sequential(void)
{
    char msg[AZ_MSG_MAX] = "";
    az_arena *ar = az_arena_new(0);
    az_crewai_notes notes = {0};
    az_crewai_opts opts = {.name = "latest_ai_development", .source = "latest_ai_development"};
    Agentz__V1__Template *t = NULL;
    az_err err = import_dir("latest_ai_development", &opts, ar, &t, &notes, msg);
    if (err) fprintf(stderr, "\n%s\n", msg);
    CU_ASSERT_EQUAL_FATAL(err, AZ_OK);
    CU_ASSERT_EQUAL_FATAL(t->n_agents, 2);
    const Agentz__V1__Agent *r = t->agents[0], *a = t->agents[1];
    CU_ASSERT_STRING_EQUAL(r->name, "researcher");
    CU_ASSERT_STRING_EQUAL(r->role, "{topic} Senior Data Researcher");
    CU_ASSERT_PTR_NULL(strchr(r->backstory, '\n')); /* folded, trailing newline trimmed */
    CU_ASSERT_STRING_EQUAL(r->llm->provider, "openai");
    CU_ASSERT_STRING_EQUAL(r->llm->model, "gpt-4o-mini");
    CU_ASSERT_EQUAL_FATAL(r->n_tools, 1);
    CU_ASSERT_STRING_EQUAL(r->tools[0], "http_fetch");
    CU_ASSERT_EQUAL(r->max_iter, 15);
    CU_ASSERT_EQUAL(r->max_execution_time->seconds, 300);
    CU_ASSERT_FALSE(r->allow_delegation);
    CU_ASSERT_STRING_EQUAL(a->llm->provider, "anthropic");
    CU_ASSERT_STRING_EQUAL(a->llm->model, "claude-3-5-sonnet-20241022");
    CU_ASSERT_TRUE(a->memory);
    CU_ASSERT_EQUAL(a->max_rpm, 0);

    const Agentz__V1__Workflow *w = t->workflow;
    CU_ASSERT_STRING_EQUAL(w->name, "latest_ai_development");
    CU_ASSERT_EQUAL(w->process, AGENTZ__V1__PROCESS__PROCESS_SEQUENTIAL);
    CU_ASSERT_EQUAL_FATAL(w->n_steps, 2);
    CU_ASSERT_STRING_EQUAL(w->steps[0]->id, "research_task");
    CU_ASSERT_STRING_EQUAL(w->steps[0]->agent_id, "researcher");
    CU_ASSERT_EQUAL(w->steps[0]->n_depends_on, 0);
    CU_ASSERT_STRING_EQUAL(w->steps[1]->agent_id, "reporting_analyst");
    CU_ASSERT_EQUAL_FATAL(w->steps[1]->n_context_from, 1);
    CU_ASSERT_STRING_EQUAL(w->steps[1]->context_from[0], "research_task");
    CU_ASSERT_EQUAL_FATAL(w->n_inputs, 2);
    CU_ASSERT_STRING_EQUAL(w->inputs[0]->name, "topic");
    CU_ASSERT_STRING_EQUAL(w->inputs[1]->name, "current_year");
    CU_ASSERT_TRUE(w->inputs[0]->required);

    /* Nothing CrewAI-specific disappears without a word; verbose does, by design. */
    CU_ASSERT_TRUE(has_note(&notes, "tool SerperDevTool has no AGENTZ equivalent"));
    CU_ASSERT_TRUE(has_note(&notes, "task reporting_task: output_file is not supported"));
    CU_ASSERT_FALSE(has_note(&notes, "verbose"));
    az_crewai_notes_free(&notes);
    az_arena_free(ar);
}

static void test_import_parallel(void)
{
    char msg[AZ_MSG_MAX] = "";
    az_arena *ar = az_arena_new(0);
    az_crewai_notes notes = {0};
    az_crewai_opts opts = {.name = "market"};
    Agentz__V1__Template *t = NULL;
    az_err err = import_dir("market_research", &opts, ar, &t, &notes, msg);
    if (err) fprintf(stderr, "\n%s\n", msg);
    CU_ASSERT_EQUAL_FATAL(err, AZ_OK);
    CU_ASSERT_STRING_EQUAL(t->agents[0]->llm->provider, "openai");
    CU_ASSERT_STRING_EQUAL(t->agents[0]->llm->base_url, "http://localhost:11434/v1");
    CU_ASSERT_STRING_EQUAL(t->agents[0]->llm->model, "llama3");
    CU_ASSERT_EQUAL(t->agents[0]->n_tools, 2);
    CU_ASSERT_STRING_EQUAL(t->agents[1]->llm->provider, "openai"); /* bare gpt-4o */
    CU_ASSERT_STRING_EQUAL(t->agents[1]->backstory, "Former product manager.\nKnows every competitor by heart.");
    CU_ASSERT_STRING_EQUAL(t->agents[2]->llm->provider, "anthropic"); /* bare claude-... */
    const Agentz__V1__Workflow *w = t->workflow;
    CU_ASSERT_EQUAL(w->process, AGENTZ__V1__PROCESS__PROCESS_PARALLEL);
    CU_ASSERT_EQUAL_FATAL(w->n_steps, 4);
    CU_ASSERT_STRING_EQUAL(w->steps[1]->id, "competitors"); /* "Competitors" sanitized */
    CU_ASSERT_EQUAL(w->steps[0]->n_depends_on, 0);          /* async tasks start at once */
    CU_ASSERT_EQUAL(w->steps[1]->n_depends_on, 0);
    CU_ASSERT_EQUAL_FATAL(w->steps[2]->n_depends_on, 2);    /* waits for both async tasks */
    CU_ASSERT_STRING_EQUAL(w->steps[2]->depends_on[0], "market_size");
    CU_ASSERT_STRING_EQUAL(w->steps[2]->depends_on[1], "competitors");
    CU_ASSERT_EQUAL_FATAL(w->steps[3]->n_depends_on, 2);    /* after brief, reads market_size */
    CU_ASSERT_STRING_EQUAL(w->steps[3]->depends_on[0], "brief");
    CU_ASSERT_STRING_EQUAL(w->steps[3]->depends_on[1], "market_size");
    CU_ASSERT_EQUAL_FATAL(w->steps[3]->n_context_from, 1);
    CU_ASSERT_STRING_EQUAL(w->steps[3]->context_from[0], "market_size");
    /* Placeholders follow the server's rule ([a-zA-Z_][a-zA-Z0-9_]*), capitals included. */
    CU_ASSERT_EQUAL_FATAL(w->n_inputs, 2);
    CU_ASSERT_STRING_EQUAL(w->inputs[0]->name, "product");
    CU_ASSERT_STRING_EQUAL(w->inputs[1]->name, "Region");
    CU_ASSERT_TRUE(has_note(&notes, "task review: human_input is not supported"));
    CU_ASSERT_TRUE(has_note(&notes, "agent writer: cache is not supported"));
    az_crewai_notes_free(&notes);

    /* Forcing sequential keeps context as context_from and says what is lost. */
    opts.process = "sequential";
    CU_ASSERT_EQUAL_FATAL(import_dir("market_research", &opts, ar, &t, &notes, msg), AZ_OK);
    CU_ASSERT_EQUAL(t->workflow->process, AGENTZ__V1__PROCESS__PROCESS_SEQUENTIAL);
    CU_ASSERT_EQUAL(t->workflow->steps[2]->n_depends_on, 0);
    CU_ASSERT_EQUAL(t->workflow->steps[2]->n_context_from, 2);
    CU_ASSERT_TRUE(has_note(&notes, "async_execution is ignored"));
    az_crewai_notes_free(&notes);
    az_arena_free(ar);
}

static void test_import_hierarchical(void)
{
    char msg[AZ_MSG_MAX] = "";
    az_arena *ar = az_arena_new(0);
    az_crewai_notes notes = {0};
    az_crewai_opts opts = {.name = "crew", .process = "hierarchical"};
    Agentz__V1__Template *t = NULL;
    const char *agents = "a:\n  role: R\n  goal: G\n  backstory: B\n";
    const char *tasks = "t1:\n  description: D\n  expected_output: E\n";
    CU_ASSERT_EQUAL(import_text(agents, tasks, &opts, ar, &t, &notes, msg), AZ_ERR_INVALID);
    CU_ASSERT_STRING_EQUAL(msg, "--process hierarchical needs --manager-llm MODEL (the manager agent's model)");
    opts.manager_llm = "openai/gpt-4o";
    CU_ASSERT_EQUAL_FATAL(import_text(agents, tasks, &opts, ar, &t, &notes, msg), AZ_OK);
    CU_ASSERT_EQUAL(t->workflow->process, AGENTZ__V1__PROCESS__PROCESS_HIERARCHICAL);
    CU_ASSERT_EQUAL_FATAL(t->n_agents, 2);
    CU_ASSERT_STRING_EQUAL(t->agents[1]->name, "crew-manager");
    CU_ASSERT_STRING_EQUAL(t->agents[1]->llm->model, "gpt-4o");
    CU_ASSERT_TRUE(t->agents[1]->allow_delegation);
    CU_ASSERT_STRING_EQUAL(t->workflow->manager_agent_id, "crew-manager");
    CU_ASSERT_STRING_EQUAL(t->workflow->steps[0]->agent_id, ""); /* the manager delegates */
    az_crewai_notes_free(&notes);
    az_arena_free(ar);
}

static void test_import_errors(void)
{
    static const struct {
        const char *agents, *tasks, *want;
    } cases[] = {
        {"a:\n  role: R\n  goal: G\n", "t:\n  description: D\n  expected_output: E\n  agent: a\n",
         "agents.yaml: agent a: backstory is required"},
        {"a:\n  role: R\n  goal: G\n  backstory: B\n", "t:\n  description: D\n  expected_output: E\n  agent: b\n",
         "tasks.yaml: task t: agent \"b\" is not defined in agents.yaml"},
        {"a:\n  role: R\n  goal: G\n  backstory: B\n", "t:\n  description: D\n  expected_output: E\n",
         "tasks.yaml: task t: agent is required (or import with --process hierarchical)"},
        {"a:\n  role: R\n  goal: G\n  backstory: B\n",
         "t:\n  description: D\n  expected_output: E\n  agent: a\n  context: [u]\n"
         "u:\n  description: D\n  expected_output: E\n  agent: a\n",
         "tasks.yaml: task t: context names \"u\", which does not come before it; move it earlier"},
        {"a:\n  role: R\n  goal: G\n  backstory: B\n",
         "t:\n  description: D\n  expected_output: E\n  agent: a\n  context: [zz]\n",
         "tasks.yaml: task t: context names \"zz\", which is not a task of this file"},
        {"a:\n  role: R\n  goal: G\n  backstory: B\n  max_iter: many\n",
         "t:\n  description: D\n  expected_output: E\n  agent: a\n",
         "agents.yaml: agent a: max_iter: expected a whole number >= 0"},
        {"a:\n  role: R\n  goal: G\n  backstory: B\n",
         "T 1:\n  description: D\n  expected_output: E\n  agent: a\nt_1:\n  description: D\n"
         "  expected_output: E\n  agent: a\n",
         "tasks.yaml: tasks T 1 and t_1 both become step id \"t_1\""},
        {"- a\n", "t: {}\n", "agents.yaml: expected a mapping of agent names to agents"},
        {"a:\n  role: R\n  goal: G\n  backstory: B\n", "t:\n  description: [D\n",
         "tasks.yaml:3:1: did not find expected ',' or ']' while parsing a flow sequence (line 2)"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char msg[AZ_MSG_MAX] = "";
        az_arena *ar = az_arena_new(0);
        az_crewai_notes notes = {0};
        az_crewai_opts opts = {.name = "x"};
        Agentz__V1__Template *t = (Agentz__V1__Template *)1;
        CU_ASSERT_EQUAL(import_text(cases[i].agents, cases[i].tasks, &opts, ar, &t, &notes, msg),
                        AZ_ERR_INVALID);
        CU_ASSERT_PTR_NULL(t);
        if (strcmp(msg, cases[i].want) != 0)
            fprintf(stderr, "\ncase %zu\n got: %s\nwant: %s\n", i, msg, cases[i].want);
        CU_ASSERT_STRING_EQUAL(msg, cases[i].want);
        az_crewai_notes_free(&notes);
        az_arena_free(ar);
    }
    /* The broken fixtures: a YAML syntax error with its position, an unknown agent. */
    char msg[AZ_MSG_MAX] = "";
    az_arena *ar = az_arena_new(0);
    az_crewai_notes notes = {0};
    az_crewai_opts opts = {.name = "x"};
    Agentz__V1__Template *t;
    CU_ASSERT_EQUAL(import_dir("broken_syntax", &opts, ar, &t, &notes, msg), AZ_ERR_INVALID);
    CU_ASSERT_STRING_EQUAL(msg, "tasks.yaml:6:1: found unexpected end of stream while scanning a "
                                "quoted scalar (line 3)");
    CU_ASSERT_EQUAL(import_dir("broken_agent", &opts, ar, &t, &notes, msg), AZ_ERR_INVALID);
    CU_ASSERT_STRING_EQUAL(msg, "tasks.yaml: task write_task: agent \"writer\" is not defined in agents.yaml");
    az_crewai_notes_free(&notes);
    az_arena_free(ar);
}

/* What --dry-run prints: the Template as proto3 JSON, compared with the checked-in file. */
static void test_dry_run_output(void)
{
    char msg[AZ_MSG_MAX] = "";
    az_arena *ar = az_arena_new(0);
    az_crewai_notes notes = {0};
    az_crewai_opts opts = {.name = "latest_ai_development", .source = "latest_ai_development"};
    Agentz__V1__Template *t = NULL;
    CU_ASSERT_EQUAL_FATAL(import_dir("latest_ai_development", &opts, ar, &t, &notes, msg), AZ_OK);
    char *got = encode(t);
    json_t *g = json_loads(got, 0, NULL);
    json_t *w = json_load_file(fixture("latest_ai_development.dry-run.json"), 0, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(w);
    if (!json_equal(g, w)) fprintf(stderr, "\ngot:\n%s\n", got);
    CU_ASSERT_TRUE(json_equal(g, w));
    json_decref(g);
    json_decref(w);
    free(got);
    az_crewai_notes_free(&notes);
    az_arena_free(ar);
}

/* Export, then import what was exported: for the realistic crew the template comes back equal. */
static void test_round_trip(void)
{
    static const char *const projects[] = {"latest_ai_development", "market_research"};
    for (size_t p = 0; p < 2; p++) {
        char msg[AZ_MSG_MAX] = "";
        az_arena *ar = az_arena_new(0);
        az_crewai_notes notes = {0};
        az_crewai_opts opts = {.name = projects[p], .source = projects[p]};
        Agentz__V1__Template *t1 = NULL, *t2 = NULL;
        CU_ASSERT_EQUAL_FATAL(import_dir(projects[p], &opts, ar, &t1, &notes, msg), AZ_OK);
        char *a1, *k1, *a2, *k2;
        az_err err = az_crewai_export(t1->workflow, t1->agents, t1->n_agents, &a1, &k1, &notes, msg);
        if (err) fprintf(stderr, "\n%s\n", msg);
        CU_ASSERT_EQUAL_FATAL(err, AZ_OK);
        err = import_text(a1, k1, &opts, ar, &t2, &notes, msg);
        if (err) fprintf(stderr, "\n%s\n%s\n%s\n", msg, a1, k1);
        CU_ASSERT_EQUAL_FATAL(err, AZ_OK);
        CU_ASSERT_EQUAL_FATAL(az_crewai_export(t2->workflow, t2->agents, t2->n_agents, &a2, &k2,
                                               &notes, msg), AZ_OK);
        /* The files are a fixed point after one trip... */
        CU_ASSERT_STRING_EQUAL(a1, a2);
        CU_ASSERT_STRING_EQUAL(k1, k2);
        /* ...and for the sequential crew the template itself survives unchanged. */
        if (getenv("SHOW_EXPORT")) fprintf(stderr, "\n%s---\n%s", a1, k1);
        if (p == 0) {
            char *e1 = encode(t1), *e2 = encode(t2);
            if (strcmp(e1, e2) != 0) fprintf(stderr, "\nfirst:\n%s\nsecond:\n%s\n", e1, e2);
            CU_ASSERT_STRING_EQUAL(e1, e2);
            free(e1);
            free(e2);
            CU_ASSERT_PTR_NOT_NULL(strstr(a1, "researcher:\n  role: '{topic} Senior Data Researcher'\n"));
            CU_ASSERT_PTR_NOT_NULL(strstr(a1, "  llm: openai/gpt-4o-mini\n"));
            CU_ASSERT_PTR_NOT_NULL(strstr(a1, "  max_execution_time: 300\n"));
            CU_ASSERT_PTR_NOT_NULL(strstr(k1, "  context:\n  - research_task\n"));
        } else {
            CU_ASSERT_PTR_NOT_NULL(strstr(a1, "  llm: ollama/llama3\n"));
            CU_ASSERT_TRUE(has_note(&notes, "parallel process"));
        }
        free(a1);
        free(k1);
        free(a2);
        free(k2);
        az_crewai_notes_free(&notes);
        az_arena_free(ar);
    }
}

/* Steps naming agents by id (as GetWorkflow returns them) export under the agents' names. */
static void test_export_by_id(void)
{
    Agentz__V1__Agent a = AGENTZ__V1__AGENT__INIT, *agents[] = {&a};
    a.id = "0190-aaaa";
    a.name = "writer";
    a.role = "Writer";
    a.goal = "Write";
    a.backstory = "Line one.\nLine two.";
    Agentz__V1__LlmConfig llm = AGENTZ__V1__LLM_CONFIG__INIT;
    llm.provider = "openai";
    llm.model = "gpt-4o";
    llm.base_url = "https://example.com/v1";
    a.llm = &llm;
    Agentz__V1__Step s = AGENTZ__V1__STEP__INIT, *steps[] = {&s};
    s.id = "draft";
    s.agent_id = "0190-aaaa";
    s.description = "Draft it";
    s.expected_output = "A draft";
    Google__Protobuf__Duration d = GOOGLE__PROTOBUF__DURATION__INIT;
    s.timeout = &d;
    Agentz__V1__Workflow w = AGENTZ__V1__WORKFLOW__INIT;
    w.name = "w";
    w.steps = steps;
    w.n_steps = 1;
    char msg[AZ_MSG_MAX], *ay, *ty;
    az_crewai_notes notes = {0};
    CU_ASSERT_EQUAL_FATAL(az_crewai_export(&w, agents, 1, &ay, &ty, &notes, msg), AZ_OK);
    CU_ASSERT_STRING_EQUAL(ay, "writer:\n  role: Writer\n  goal: Write\n  backstory: |-\n    Line one.\n"
                               "    Line two.\n  llm: openai/gpt-4o\n");
    CU_ASSERT_STRING_EQUAL(ty, "draft:\n  description: Draft it\n  expected_output: A draft\n  agent: writer\n");
    CU_ASSERT_TRUE(has_note(&notes, "llm.base_url https://example.com/v1 cannot be written"));
    CU_ASSERT_TRUE(has_note(&notes, "step draft: retry_policy, timeout and output_schema"));
    free(ay);
    free(ty);
    az_crewai_notes_free(&notes);
    /* An agent that was not given is an error, not a silent gap. */
    CU_ASSERT_EQUAL(az_crewai_export(&w, agents, 0, &ay, &ty, &notes, msg), AZ_ERR_INVALID);
    CU_ASSERT_STRING_EQUAL(msg, "step draft: agent 0190-aaaa was not given");
    az_crewai_notes_free(&notes);
}

static void test_write(void)
{
    char dir[] = "/tmp/test_crewai_XXXXXX";
    CU_ASSERT_PTR_NOT_NULL_FATAL(mkdtemp(dir));
    char out[300], msg[AZ_MSG_MAX];
    snprintf(out, sizeof out, "%s/crew", dir);
    CU_ASSERT_EQUAL(az_crewai_write(out, "a: 1\n", "t: 2\n", 0, msg), AZ_OK);
    CU_ASSERT_EQUAL(az_crewai_write(out, "a: 1\n", "t: 2\n", 0, msg), AZ_ERR_EXISTS);
    CU_ASSERT_PTR_NOT_NULL(strstr(msg, "agents.yaml already exists (use --force to overwrite)"));
    CU_ASSERT_EQUAL(az_crewai_write(out, "a: 3\n", "t: 4\n", 1, msg), AZ_OK);
    char path[400], *a, *t;
    snprintf(path, sizeof path, "%s/config/agents.yaml", out);
    size_t n;
    a = read_all(path, &n);
    CU_ASSERT_STRING_EQUAL(a, "a: 3\n");
    unlink(path);
    snprintf(path, sizeof path, "%s/config/tasks.yaml", out);
    t = read_all(path, &n);
    CU_ASSERT_STRING_EQUAL(t, "t: 4\n");
    unlink(path);
    free(a);
    free(t);
    snprintf(path, sizeof path, "%s/config", out);
    rmdir(path);
    rmdir(out);
    rmdir(dir);
}

static void test_request_ids(void)
{
    az_crewai_opts o1 = {.name = "a"}, o2 = {.name = "b"};
    char k1[33], k2[33], k3[33], r1[AZ_CREWAI_REQUEST_ID_SIZE], r2[AZ_CREWAI_REQUEST_ID_SIZE];
    az_crewai_key("x", 1, "y", 1, &o1, NULL, k1);
    az_crewai_key("x", 1, "y", 1, &o1, NULL, k2);
    az_crewai_key("x", 1, "y", 1, &o2, NULL, k3);
    CU_ASSERT_STRING_EQUAL(k1, k2);
    CU_ASSERT_STRING_NOT_EQUAL(k1, k3);
    CU_ASSERT_EQUAL(strlen(k1), 32);
    az_crewai_request_id(k1, "agent", "researcher", r1);
    az_crewai_request_id(k1, "agent", "writer", r2);
    CU_ASSERT_STRING_NOT_EQUAL(r1, r2);
    CU_ASSERT_EQUAL(strlen(r1), 39);
    CU_ASSERT_EQUAL(strncmp(r1, "crewai-", 7), 0);
}

int main(void)
{
    if (CU_initialize_registry() != CUE_SUCCESS) return 2;
    static const struct {
        const char *suite, *name;
        CU_TestFunc fn;
    } tests[] = {
        {"yamljson", "scalar types", test_yaml_types},
        {"yamljson", "schema-guided strings", test_yaml_schema},
        {"yamljson", "anchors and aliases", test_yaml_aliases},
        {"yamljson", "errors and limits", test_yaml_errors},
        {"yamljson", "read message", test_yaml_read_message},
        {"yamljson", "emit", test_yaml_emit},
        {"crewai", "find files", test_find},
        {"crewai", "import sequential crew", test_import_sequential},
        {"crewai", "import parallel crew", test_import_parallel},
        {"crewai", "import hierarchical", test_import_hierarchical},
        {"crewai", "import errors", test_import_errors},
        {"crewai", "dry-run output", test_dry_run_output},
        {"crewai", "export import round trip", test_round_trip},
        {"crewai", "export by agent id", test_export_by_id},
        {"crewai", "write files", test_write},
        {"crewai", "request ids", test_request_ids},
    };
    CU_pSuite s = NULL;
    const char *current = NULL;
    for (size_t i = 0; i < sizeof tests / sizeof tests[0]; i++) {
        if (!current || strcmp(current, tests[i].suite) != 0) {
            current = tests[i].suite;
            if (!(s = CU_add_suite(current, NULL, NULL))) break;
        }
        if (!CU_add_test(s, tests[i].name, tests[i].fn)) {
            s = NULL;
            break;
        }
    }
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
