/* CrewAI projects and AGENTZ: mapping a crew's config/agents.yaml and config/tasks.yaml to
 * AGENTZ agents and one workflow (as an agentz.v1.Template, agents referenced by name), and a
 * workflow with its agents back to those two files. Pure functions apart from the file helpers,
 * so the mapping is unit tested without a server. */
#ifndef AZ_CREWAI_H
#define AZ_CREWAI_H

#include <stddef.h>

#include "agentz/v1/workflow.pb-c.h"
#include "core/arena.h"
#include "core/err.h"

typedef struct az_crewai_opts {
    const char *name;        /* workflow name; required */
    const char *process;     /* NULL = sequential unless the tasks need parallel; or
                                "sequential", "parallel", "hierarchical" */
    const char *manager_llm; /* model of the manager agent; required with "hierarchical" */
    const char *source;      /* where the crew came from, for the workflow description; may be NULL */
} az_crewai_opts;

/* Warnings collected while mapping, one line each ("tasks.yaml: reporting_task: output_file is
 * not supported; ignored"). Zero-initialise; release with az_crewai_notes_free. */
typedef struct az_crewai_notes {
    char **lines;
    size_t n;
    int oom; /* a note could not be recorded */
} az_crewai_notes;

/* Frees every line and zeroes n; accepts NULL. */
void az_crewai_notes_free(az_crewai_notes *n);

/* Finds the two files of the crew in dir: dir/config/, dir itself, or dir/src/<package>/config/
 * (the layout of `crewai create crew`), each as agents.yaml/tasks.yaml (or .yml). On AZ_OK
 * *agents and *tasks are malloc'd paths the caller frees. AZ_ERR_NOT_FOUND (msg lists where it
 * looked), AZ_ERR_INVALID when several src/ packages have them, AZ_ERR_NOMEM. */
az_err az_crewai_find(const char *dir, char **agents, char **tasks, char *msg);

/* Maps the texts of agents.yaml and tasks.yaml (names used in messages) to a template whose
 * agents are named by their YAML keys and whose workflow steps (one per task, in file order)
 * name their agent in agent_id. Everything is allocated from ar. Unsupported or dropped CrewAI
 * settings are reported in notes, never dropped silently. On failure AZ_ERR_INVALID with msg
 * naming the file and key (YAML syntax errors with line:column), or AZ_ERR_NOMEM; *out NULL. */
az_err az_crewai_import(const char *agents_text, size_t agents_len, const char *agents_name,
                        const char *tasks_text, size_t tasks_len, const char *tasks_name,
                        const az_crewai_opts *opts, az_arena *ar, Agentz__V1__Template **out,
                        az_crewai_notes *notes, char *msg);

/* A 32-hex-digit digest of both texts and the options (and seed, may be NULL): the same crew
 * imported twice gets the same key. */
void az_crewai_key(const char *agents_text, size_t agents_len, const char *tasks_text,
                   size_t tasks_len, const az_crewai_opts *opts, const char *seed, char out[33]);

/* The idempotency key of one created object: "crewai-" + 32 hex digits of key, kind ("agent",
 * "workflow") and name. out has room for AZ_CREWAI_REQUEST_ID_SIZE bytes. */
#define AZ_CREWAI_REQUEST_ID_SIZE 40
void az_crewai_request_id(const char *key, const char *kind, const char *name,
                          char out[AZ_CREWAI_REQUEST_ID_SIZE]);

/* Maps a workflow and the agents its steps use (matched by id, or by name when the agent has no
 * id, as in a template) to the texts of agents.yaml and tasks.yaml, which az_crewai_import
 * reads back to the same agents and workflow. Settings CrewAI's YAML cannot express are
 * reported in notes. On AZ_OK the caller frees both texts; AZ_ERR_INVALID when a step's agent
 * is missing, AZ_ERR_NOMEM. */
az_err az_crewai_export(const Agentz__V1__Workflow *wf, Agentz__V1__Agent *const *agents,
                        size_t nagents, char **agents_yaml, char **tasks_yaml,
                        az_crewai_notes *notes, char *msg);

/* Writes dir/config/agents.yaml and dir/config/tasks.yaml, creating the directories. Existing
 * files are AZ_ERR_EXISTS unless force; AZ_ERR_IO names the path that failed. */
az_err az_crewai_write(const char *dir, const char *agents_yaml, const char *tasks_yaml, int force,
                       char *msg);

#endif
