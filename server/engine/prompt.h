/* CrewAI-style prompts for the agent executor: the system prompt from an agent's role, goal and
 * backstory, the task prompt (description, expected output, context, memories), the messages of
 * the agent loop (best final answer, guardrail retry), the delegation tools and the manager's
 * prompt in hierarchical runs. Pure functions over arena strings; thread-safe. */
#ifndef AZ_PROMPT_H
#define AZ_PROMPT_H

#include <jansson.h>
#include <stddef.h>

#include "core/arena.h"
#include "core/err.h"
#include "core/placeholder.h"

/* Function names the model sees for CrewAI's "Delegate work to coworker" and "Ask question to
 * coworker" tools (function names may not hold spaces). */
#define AZ_PROMPT_DELEGATE_TOOL "delegate_work_to_coworker"
#define AZ_PROMPT_ASK_TOOL "ask_question_to_coworker"

/* Every context piece (a dependency's output, an extra context string) is cut to this many bytes
 * (at a UTF-8 boundary, with a note) so one huge output cannot blow up every later prompt. */
#define AZ_PROMPT_CONTEXT_MAX (32 * 1024)
/* At most this many context pieces per task (a task has at most 100 dependencies and 20 extra
 * context strings). */
#define AZ_PROMPT_CONTEXT_ITEMS_MAX 128

/* CrewAI's "force_final_answer": sent (as a user message, with no tools offered) when an agent
 * used up max_iter model calls without a final answer. */
extern const char AZ_PROMPT_FORCE_FINAL[];
/* CrewAI's "manager_request": the expected output of a coworker's sub-task. */
extern const char AZ_PROMPT_MANAGER_REQUEST[];

/* One run input: a {name} placeholder's value; filled with az_placeholder_fill_vars
 * (core/placeholder.h). */
typedef az_placeholder_var az_prompt_input;

/* The system prompt, CrewAI's "role_playing": "You are {role}. {backstory}\nYour personal goal
 * is: {goal}" from already-filled strings (NULL = ""). In arena; NULL when out of memory. */
char *az_prompt_system(const char *role, const char *goal, const char *backstory, az_arena *arena);

/* What a task prompt is made of; every string already filled, all borrowed. */
typedef struct az_prompt_task {
    const char *description;
    const char *expected_output;    /* "" or NULL: no expected-criteria sentence */
    const char *const *context;     /* resolved context texts (az_prompt_context) */
    size_t n_context;
    const char *const *memories;    /* recalled memory summaries, best first */
    size_t n_memories;
    const char *output_schema_json; /* the JSON Schema the answer must match, or NULL */
} az_prompt_task;

/* The user message that starts the agent loop, CrewAI's wording:
 *   "Current Task: {description}\n\nThis is the expected criteria for your final answer:
 *   {expected_output}\nyou MUST return the actual complete content as the final answer, not a
 *   summary." + the output format when a schema is set + "\n\nThis is the context you're working
 *   with:\n{context pieces joined by ----------}" + "\n\n# Useful context: \n{memories}" +
 *   "\n\nBegin! This is VERY important to you, use the tools available and give your best Final
 *   Answer, your job depends on it!"
 * In arena; NULL when out of memory. */
char *az_prompt_task_text(const az_prompt_task *t, az_arena *arena);

/* One task of the same run (or a dependency of a standalone task), as context resolution and the
 * manager's step list see it. output is the succeeded task's raw output, else NULL. */
typedef struct az_prompt_sibling {
    const char *id;
    const char *step_id;
    const char *description;
    const char *output;
} az_prompt_sibling;

/* The value of a context marker entry: for entry "@assignee:X" and kind "assignee" returns "X";
 * NULL when entry is not a marker of that kind. */
const char *az_prompt_marker(const char *entry, const char *kind);

/* 1 when entry is an engine marker ("@step:", "@assignee:", "@coworker:"), not context text. */
int az_prompt_is_marker(const char *entry);

/* A task's context pieces, in order: when context holds "@step:<id>" markers, the outputs of the
 * siblings with those step ids (a step without output yet is skipped); otherwise the outputs of
 * the siblings whose ids are in depends_on, in depends_on order. Then every context entry that is
 * not a marker (extra context text). Each piece is capped at AZ_PROMPT_CONTEXT_MAX, and at most
 * AZ_PROMPT_CONTEXT_ITEMS_MAX pieces are kept. *out (in arena) may be empty. AZ_ERR_NOMEM. */
az_err az_prompt_context(const char *const *context, size_t n_context,
                         const char *const *depends_on, size_t n_depends_on,
                         const az_prompt_sibling *siblings, size_t n_siblings, az_arena *arena,
                         const char ***out, size_t *n, char *msg);

/* CrewAI's "validation_error", sent as a user message after a final answer failed the task's
 * output schema: quotes the validator's message and asks again. In arena; NULL when out of
 * memory. */
char *az_prompt_guardrail_retry(const char *error, az_arena *arena);

/* The description of the delegation tool (ask = 0: "Delegate work to coworker", ask = 1: "Ask
 * question to coworker"), CrewAI's text listing the coworkers' roles ("A, B"). In arena; NULL
 * when out of memory. */
char *az_prompt_delegation_description(int ask, const char *const *roles, size_t n_roles,
                                       az_arena *arena);

/* The JSON Schema of the delegation tool's arguments: {task|question, context, coworker}, all
 * strings, all required, with CrewAI's descriptions. A new reference the caller owns
 * (json_decref); NULL when out of memory. */
json_t *az_prompt_delegation_schema(int ask);

/* The delegation tool's arguments as the model sent them. */
typedef struct az_prompt_delegation {
    const char *task; /* the task, or the question for ask */
    const char *context;
    const char *coworker;
} az_prompt_delegation;

/* Parses arguments_json of a delegation tool call into *out (strings in arena). AZ_ERR_INVALID
 * with msg naming the problem (an observation for the model: "coworker is required") when the
 * JSON is not an object or a required string is missing or empty (context may be empty). */
az_err az_prompt_delegation_args(int ask, const char *arguments_json, az_arena *arena,
                                 az_prompt_delegation *out, char *msg);

/* Index of the role in roles[0..n) that wanted names: compared case-insensitively after trimming
 * white space and surrounding quotes from both. -1 when none. */
int az_prompt_match_role(const char *wanted, const char *const *roles, size_t n);

/* The observation for an unknown coworker, CrewAI's text listing the valid roles, one per line.
 * In arena; NULL when out of memory. */
char *az_prompt_unknown_coworker(const char *wanted, const char *const *roles, size_t n,
                                 az_arena *arena);

/* A member of a manager's team. */
typedef struct az_prompt_member {
    const char *role;
    const char *goal;
} az_prompt_member;

/* What a manager (hierarchical run) is told after its task prompt: the run's steps in order with
 * the current one marked (steps[current]; current >= n for none) and finished ones noted, the
 * team (roles and goals), the coworker the current step is assigned to (NULL = the manager
 * chooses), and that it delegates with the tools and its final answer is the step's result.
 * In arena; NULL when out of memory. */
char *az_prompt_manager(const az_prompt_sibling *steps, size_t n_steps, size_t current,
                        const az_prompt_member *team, size_t n_team, const char *assignee_role,
                        az_arena *arena);

#endif
