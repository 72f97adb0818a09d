/* The live view behind `agentz watch`: folds a stream of agentz.v1.Event into the state of a
 * run's steps, one task or the workspace's agents, and shows it either as a block redrawn in
 * place on a terminal (progress bars, status colours, elapsed times) or, elsewhere, as one
 * line per change, so logs and pipes get plain text. */
#ifndef AZ_WATCHVIEW_H
#define AZ_WATCHVIEW_H

#include <stdint.h>
#include <stdio.h>

#include "agentz/v1/agent.pb-c.h"
#include "agentz/v1/event.pb-c.h"
#include "agentz/v1/task.pb-c.h"
#include "agentz/v1/workflow.pb-c.h"
#include "core/err.h"

typedef enum az_watchview_kind {
    AZ_WATCHVIEW_RUN = 1,
    AZ_WATCHVIEW_TASK,
    AZ_WATCHVIEW_AGENTS,
} az_watchview_kind;

/* How a watched run or task ended (agents never end). */
typedef enum az_watchview_end {
    AZ_WATCHVIEW_OPEN = 0, /* not terminal yet */
    AZ_WATCHVIEW_SUCCEEDED,
    AZ_WATCHVIEW_FAILED,
    AZ_WATCHVIEW_CANCELLED,
} az_watchview_end;

typedef struct az_watchview_opts {
    int tty;    /* redraw a block in place (ANSI cursor movement); 0 = one line per change */
    int color;  /* ANSI colours for statuses */
    int tokens; /* show TokenDelta text */
    int width;  /* terminal columns (tty lines are cut to fit); <= 0 = 80 */
    int height; /* terminal rows (the tty block keeps below it); <= 0 = 24 */
} az_watchview_opts;

typedef struct az_watchview az_watchview;

/* 1 when f is a terminal and NO_COLOR is unset or empty (https://no-color.org). */
int az_watchview_want_color(FILE *f);

/* A view of kind writing to out (borrowed). NULL when out of memory. */
az_watchview *az_watchview_new(az_watchview_kind kind, const az_watchview_opts *opts, FILE *out);

/* Frees v; accepts NULL. Nothing is printed. */
void az_watchview_free(az_watchview *v);

/* Initial state from GetRun (RUN views), GetTask (TASK views) or ListAgents pages (AGENTS
 * views; call once per agent). The message is copied. For a run, steps_only takes just the
 * steps (ids and order) and leaves their statuses to the events: what a watch that replays the
 * whole history wants, so replayed lines read as they happened. AZ_ERR_NOMEM, or
 * AZ_ERR_INVALID when it does not fit the view's kind. */
az_err az_watchview_set_run(az_watchview *v, const Agentz__V1__WorkflowRun *run, int steps_only);
az_err az_watchview_set_task(az_watchview *v, const Agentz__V1__Task *task);
az_err az_watchview_add_agent(az_watchview *v, const Agentz__V1__Agent *agent);

/* Applies one event (now_ms: wall-clock milliseconds, for elapsed times): updates the state and
 * prints what changed (plain lines; on a tty, log lines above the block and a redrawn block).
 * Events of other runs or tasks are ignored. Returns AZ_OK or AZ_ERR_NOMEM. */
az_err az_watchview_apply(az_watchview *v, const Agentz__V1__Event *ev, int64_t now_ms);

/* Redraws the tty block (elapsed times move on); does nothing without a tty. */
void az_watchview_refresh(az_watchview *v, int64_t now_ms);

/* Prints a notice line ("connection lost: reconnecting") above the block. */
void az_watchview_note(az_watchview *v, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* How the run or task ended so far. */
az_watchview_end az_watchview_ended(const az_watchview *v);

/* Prints the final block (tty) and a summary line: "run ID succeeded in 12.3s (3/3 steps)",
 * with the error of a failed run or task. */
void az_watchview_finish(az_watchview *v, int64_t now_ms);

/* "850ms", "12.3s", "2m05s", "1h02m": writes into buf (at least 16 bytes) and returns it. */
const char *az_watchview_elapsed(int64_t ms, char *buf, size_t size);

/* "[########------------]" for fraction (clamped to 0..1) in width cells (inside the brackets),
 * into buf (at least width + 3 bytes). Returns buf. */
const char *az_watchview_bar(double fraction, int width, char *buf, size_t size);

#endif
