/* CUnit suite for server/engine/prompt: CrewAI's system and task prompts, placeholders, context
 * resolution (dependencies and @step markers), the delegation tools and the manager's prompt. */
#include <CUnit/Basic.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "core/arena.h"
#include "engine/prompt.h"

static az_arena *A;

static int has(const char *s, const char *needle)
{
    return s && needle && strstr(s, needle) != NULL;
}

static void test_system_prompt(void)
{
    char *s = az_prompt_system("Senior Researcher", "Find news about AI", "You read a lot.", A);
    CU_ASSERT_STRING_EQUAL(s, "You are Senior Researcher. You read a lot.\nYour personal goal is: "
                              "Find news about AI");
    /* NULLs are empty, never "(null)". */
    s = az_prompt_system(NULL, NULL, NULL, A);
    CU_ASSERT_STRING_EQUAL(s, "You are . \nYour personal goal is: ");
}

static void test_fill(void)
{
    az_prompt_input in[] = {{"topic", "AI agents"}, {"audience", "kids"}};
    CU_ASSERT_STRING_EQUAL(az_placeholder_fill_vars("Research {topic} for {audience}.", in, 2, A),
                           "Research AI agents for kids.");
    /* Unknown names stay, doubled braces are literal. */
    CU_ASSERT_STRING_EQUAL(az_placeholder_fill_vars("{unknown} {{topic}} {topic}", in, 2, A),
                           "{unknown} {topic} AI agents");
    CU_ASSERT_STRING_EQUAL(az_placeholder_fill_vars(NULL, in, 2, A), "");
    CU_ASSERT_STRING_EQUAL(az_placeholder_fill_vars("{topic}", NULL, 0, A), "{topic}");
    /* A name that is a prefix of another does not match it. */
    az_prompt_input in2[] = {{"top", "X"}};
    CU_ASSERT_STRING_EQUAL(az_placeholder_fill_vars("{topic}", in2, 1, A), "{topic}");
}

static void test_task_text(void)
{
    const char *ctx[] = {"first output", "second output"};
    const char *mem[] = {"remembered one"};
    az_prompt_task t = {.description = "Write a poem.",
                        .expected_output = "Four lines.",
                        .context = ctx,
                        .n_context = 2,
                        .memories = mem,
                        .n_memories = 1};
    char *s = az_prompt_task_text(&t, A);
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    CU_ASSERT_TRUE(strncmp(s, "Current Task: Write a poem.", 27) == 0);
    CU_ASSERT_TRUE(has(s, "This is the expected criteria for your final answer: Four lines.\nyou "
                          "MUST return the actual complete content as the final answer, not a "
                          "summary."));
    CU_ASSERT_TRUE(has(s, "This is the context you're working with:\nfirst output\n\n----------\n\n"
                          "second output"));
    CU_ASSERT_TRUE(has(s, "# Useful context: \n- remembered one"));
    CU_ASSERT_TRUE(has(s, "give your best Final Answer"));
    CU_ASSERT_FALSE(has(s, "JSON Schema"));
    /* Order: task, criteria, context, memory. */
    CU_ASSERT_TRUE(strstr(s, "expected criteria") < strstr(s, "context you're working with"));
    CU_ASSERT_TRUE(strstr(s, "context you're working with") < strstr(s, "# Useful context"));

    az_prompt_task bare = {.description = "Do it.", .output_schema_json = "{\"type\":\"object\"}"};
    s = az_prompt_task_text(&bare, A);
    CU_ASSERT_FALSE(has(s, "expected criteria"));
    CU_ASSERT_FALSE(has(s, "context you're working with"));
    CU_ASSERT_FALSE(has(s, "Useful context"));
    CU_ASSERT_TRUE(has(s, "JSON Schema:\n{\"type\":\"object\"}"));
}

static void test_markers(void)
{
    CU_ASSERT_STRING_EQUAL(az_prompt_marker("@step:research", "step"), "research");
    CU_ASSERT_STRING_EQUAL(az_prompt_marker("@assignee:abc", "assignee"), "abc");
    CU_ASSERT_PTR_NULL(az_prompt_marker("@steps:x", "step"));
    CU_ASSERT_PTR_NULL(az_prompt_marker("step:x", "step"));
    CU_ASSERT_PTR_NULL(az_prompt_marker("@coworker:x", "assignee"));
    CU_ASSERT_TRUE(az_prompt_is_marker("@coworker:x"));
    CU_ASSERT_FALSE(az_prompt_is_marker("@someone said hi"));
    CU_ASSERT_FALSE(az_prompt_is_marker(NULL));
}

static void test_context_resolution(void)
{
    az_prompt_sibling sib[] = {
        {"id-a", "research", "Research", "A out"},
        {"id-b", "write", "Write", "B out"},
        {"id-c", "review", "Review", NULL}, /* not finished */
    };
    const char **out;
    size_t n;
    char msg[AZ_MSG_MAX];
    /* Default: outputs of the dependencies, in depends_on order, plus extra text. */
    const char *deps[] = {"id-b", "id-a"};
    const char *extra[] = {"be nice"};
    CU_ASSERT_EQUAL_FATAL(az_prompt_context(extra, 1, deps, 2, sib, 3, A, &out, &n, msg), AZ_OK);
    CU_ASSERT_EQUAL_FATAL(n, 3);
    CU_ASSERT_STRING_EQUAL(out[0], "B out");
    CU_ASSERT_STRING_EQUAL(out[1], "A out");
    CU_ASSERT_STRING_EQUAL(out[2], "be nice");
    /* @step markers replace the dependencies; hierarchical markers are not context text. */
    const char *marks[] = {"@step:research", "@assignee:x", "@coworker:y", "@step:review", "note"};
    CU_ASSERT_EQUAL_FATAL(az_prompt_context(marks, 5, deps, 2, sib, 3, A, &out, &n, msg), AZ_OK);
    CU_ASSERT_EQUAL_FATAL(n, 2);
    CU_ASSERT_STRING_EQUAL(out[0], "A out"); /* review has no output yet: skipped */
    CU_ASSERT_STRING_EQUAL(out[1], "note");
    /* Nothing. */
    CU_ASSERT_EQUAL(az_prompt_context(NULL, 0, NULL, 0, NULL, 0, A, &out, &n, msg), AZ_OK);
    CU_ASSERT_EQUAL(n, 0);
    /* A huge output is capped at a UTF-8 boundary with a note. */
    size_t big = AZ_PROMPT_CONTEXT_MAX + 100;
    char *huge = malloc(big + 1);
    for (size_t i = 0; i < big; i += 2) memcpy(huge + i, "\xc3\xa9", 2); /* é */
    huge[big] = '\0';
    az_prompt_sibling hs[] = {{"id-h", "h", "H", huge}};
    const char *hd[] = {"id-h"};
    CU_ASSERT_EQUAL_FATAL(az_prompt_context(NULL, 0, hd, 1, hs, 1, A, &out, &n, msg), AZ_OK);
    CU_ASSERT_EQUAL_FATAL(n, 1);
    CU_ASSERT_TRUE(strlen(out[0]) <= AZ_PROMPT_CONTEXT_MAX + 32);
    CU_ASSERT_TRUE(has(out[0], "[... truncated]"));
    CU_ASSERT_EQUAL(((unsigned char)out[0][strlen(out[0]) - strlen("\n[... truncated]") - 1]), 0xa9);
    free(huge);
}

static void test_guardrail_and_final(void)
{
    char *s = az_prompt_guardrail_retry("/: missing required property \"title\"", A);
    CU_ASSERT_TRUE(has(s, "Previous attempt failed validation: /: missing required property "
                          "\"title\""));
    CU_ASSERT_TRUE(has(s, "Try again"));
    CU_ASSERT_TRUE(has(AZ_PROMPT_FORCE_FINAL, "absolute BEST Final answer"));
}

static void test_delegation_tools(void)
{
    const char *roles[] = {"Researcher", "Writer"};
    char *d = az_prompt_delegation_description(0, roles, 2, A);
    CU_ASSERT_TRUE(has(d, "Delegate work to coworker"));
    CU_ASSERT_TRUE(has(d, "one of the following coworkers: Researcher, Writer\n"));
    d = az_prompt_delegation_description(1, roles, 2, A);
    CU_ASSERT_TRUE(has(d, "Ask question to coworker"));
    CU_ASSERT_TRUE(has(d, "the question you have for them"));

    json_t *s = az_prompt_delegation_schema(0);
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(s, "type")), "object");
    json_t *props = json_object_get(s, "properties");
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(json_object_get(props, "task"),
                                                             "description")),
                           "The task to delegate");
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(json_object_get(props, "coworker"),
                                                             "description")),
                           "The role/name of the coworker to delegate to");
    CU_ASSERT_EQUAL(json_array_size(json_object_get(s, "required")), 3);
    json_decref(s);
    s = az_prompt_delegation_schema(1);
    props = json_object_get(s, "properties");
    CU_ASSERT_PTR_NOT_NULL(json_object_get(props, "question"));
    CU_ASSERT_PTR_NULL(json_object_get(props, "task"));
    CU_ASSERT_STRING_EQUAL(json_string_value(json_array_get(json_object_get(s, "required"), 0)),
                           "question");
    json_decref(s);
}

static void test_delegation_args(void)
{
    az_prompt_delegation d;
    char msg[AZ_MSG_MAX];
    CU_ASSERT_EQUAL(az_prompt_delegation_args(0, "{\"task\":\"t\",\"context\":\"c\",\"coworker\":\"W\"}",
                                              A, &d, msg),
                    AZ_OK);
    CU_ASSERT_STRING_EQUAL(d.task, "t");
    CU_ASSERT_STRING_EQUAL(d.context, "c");
    CU_ASSERT_STRING_EQUAL(d.coworker, "W");
    /* context may be missing. */
    CU_ASSERT_EQUAL(az_prompt_delegation_args(1, "{\"question\":\"q?\",\"coworker\":\"W\"}", A, &d, msg),
                    AZ_OK);
    CU_ASSERT_STRING_EQUAL(d.task, "q?");
    CU_ASSERT_STRING_EQUAL(d.context, "");
    CU_ASSERT_EQUAL(az_prompt_delegation_args(1, "{\"task\":\"q?\",\"coworker\":\"W\"}", A, &d, msg),
                    AZ_ERR_INVALID);
    CU_ASSERT_TRUE(has(msg, "question is required"));
    CU_ASSERT_EQUAL(az_prompt_delegation_args(0, "{\"task\":\"t\"}", A, &d, msg), AZ_ERR_INVALID);
    CU_ASSERT_TRUE(has(msg, "coworker is required"));
    CU_ASSERT_EQUAL(az_prompt_delegation_args(0, "[1]", A, &d, msg), AZ_ERR_INVALID);
    CU_ASSERT_EQUAL(az_prompt_delegation_args(0, "{nope", A, &d, msg), AZ_ERR_INVALID);
    CU_ASSERT_TRUE(has(msg, "not valid JSON"));
    CU_ASSERT_EQUAL(az_prompt_delegation_args(0, "{\"task\":1,\"coworker\":\"W\"}", A, &d, msg),
                    AZ_ERR_INVALID);
    CU_ASSERT_TRUE(has(msg, "task must be a string"));
}

static void test_match_role(void)
{
    const char *roles[] = {"Senior Researcher", " Writer\n", "Editor"};
    CU_ASSERT_EQUAL(az_prompt_match_role("senior researcher", roles, 3), 0);
    CU_ASSERT_EQUAL(az_prompt_match_role("  WRITER ", roles, 3), 1);
    CU_ASSERT_EQUAL(az_prompt_match_role("\"Editor\"", roles, 3), 2);
    CU_ASSERT_EQUAL(az_prompt_match_role("Researcher", roles, 3), -1);
    CU_ASSERT_EQUAL(az_prompt_match_role("", roles, 3), -1);
    CU_ASSERT_EQUAL(az_prompt_match_role(NULL, roles, 3), -1);
    char *s = az_prompt_unknown_coworker("Pilot", roles, 3, A);
    CU_ASSERT_TRUE(has(s, "coworker \"Pilot\" mentioned not found"));
    CU_ASSERT_TRUE(has(s, "\n- Senior Researcher\n- "));
    CU_ASSERT_TRUE(has(s, "\n- Editor"));
}

static void test_manager(void)
{
    az_prompt_sibling steps[] = {
        {"t1", "classify", "Classify the ticket.\nMore details here.", "billing"},
        {"t2", "research", "Research the answer.", NULL},
        {"t3", "respond", "Write the response.", NULL},
    };
    az_prompt_member team[] = {{"Classifier", "Sort tickets"}, {"Responder", "Answer kindly"}};
    char *s = az_prompt_manager(steps, 3, 1, team, 2, "Classifier", A);
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    CU_ASSERT_TRUE(has(s, "1. [classify] Classify the ticket.... (done)"));
    CU_ASSERT_TRUE(has(s, "2. [research] Research the answer. (the current step"));
    CU_ASSERT_TRUE(has(s, "3. [respond] Write the response."));
    CU_ASSERT_FALSE(has(s, "More details here"));
    CU_ASSERT_TRUE(has(s, "- Classifier: Sort tickets\n- Responder: Answer kindly"));
    CU_ASSERT_TRUE(has(s, "This step is assigned to Classifier"));
    CU_ASSERT_TRUE(has(s, "Delegate work to coworker"));
    s = az_prompt_manager(steps, 3, 99, NULL, 0, NULL, A);
    CU_ASSERT_FALSE(has(s, "current step"));
    CU_ASSERT_TRUE(has(s, "best suited"));
}

int main(void)
{
    A = az_arena_new(0);
    if (!A || CU_initialize_registry() != CUE_SUCCESS) return 1;
    CU_pSuite s = CU_add_suite("prompt", NULL, NULL);
    CU_add_test(s, "system prompt", test_system_prompt);
    CU_add_test(s, "placeholders", test_fill);
    CU_add_test(s, "task prompt", test_task_text);
    CU_add_test(s, "markers", test_markers);
    CU_add_test(s, "context resolution", test_context_resolution);
    CU_add_test(s, "guardrail and final answer", test_guardrail_and_final);
    CU_add_test(s, "delegation tools", test_delegation_tools);
    CU_add_test(s, "delegation arguments", test_delegation_args);
    CU_add_test(s, "coworker matching", test_match_role);
    CU_add_test(s, "manager prompt", test_manager);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    unsigned failed = CU_get_number_of_failures() + CU_get_number_of_tests_failed();
    CU_cleanup_registry();
    az_arena_free(A);
    return failed ? 1 : 0;
}
