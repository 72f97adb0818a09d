/* `agentz watch run|task|agents`: live views of WatchRun, WatchTask and WatchAgents that
 * reconnect when the stream drops and resume after the last sequence seen, and exit with the
 * outcome of the run or task. */
#include <errno.h>
#include <grpc/status.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#include "agentz/v1/agent.pb-c.h"
#include "agentz/v1/task.pb-c.h"
#include "agentz/v1/workflow.pb-c.h"
#include "cli.h"
#include "core/pbjson.h"
#include "watchview.h"

/* Exit codes beyond cli.h's: how the watched run or task ended. */
enum {
    WATCH_EXIT_FAILED = 3,    /* the run or task failed */
    WATCH_EXIT_CANCELLED = 4, /* the run or task was cancelled */
};

#define RECONNECT_FIRST_MS 250
#define RECONNECT_MAX_MS 5000
#define RECONNECT_TRIES 60 /* in a row without a message: about 5 minutes, then give up */

/* ---- flags ---- */

enum { R_TOKENS, R_AFTER, R__COUNT };

static const az_flag run_flags[R__COUNT] = {
    [R_TOKENS] = {"tokens", 0, AZ_FLAG_BOOL, NULL, "stream the model's text as it is written", NULL},
    [R_AFTER] = {"after-sequence", 0, AZ_FLAG_VALUE, "N",
                 "start after event N (default 0: replay the whole history first)", NULL},
};

enum { A_SELECTOR, A_AFTER, A_METRICS, A__COUNT };

static const az_flag agents_flags[A__COUNT] = {
    [A_SELECTOR] = {"selector", 'l', AZ_FLAG_VALUE, "K=V,...", "only agents having all these labels", NULL},
    [A_AFTER] = {"after-sequence", 0, AZ_FLAG_VALUE, "N", "first replay stored events after N", NULL},
    [A_METRICS] = {"metrics", 0, AZ_FLAG_BOOL, NULL,
                   "show per-agent metrics (running, done, failed, tokens), refreshed every 10s", NULL},
};

/* ---- the stream loop ---- */

typedef struct watch {
    az_cli *cli;
    const char *method;
    const ProtobufCMessage *req;
    int64_t *after; /* the request's after_sequence: moves with every durable event */
    az_watchview *view;
    int json; /* -o json: one event per line instead of the view */
    /* Re-reads the run or task when a stream ends without its terminal event. */
    int (*refetch)(struct watch *w);
    const char *id;
} watch;

static int64_t wall_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_REALTIME, &t);
    return (int64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

static void sleep_ms(int64_t ms)
{
    struct timespec t = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000};
    while (nanosleep(&t, &t) != 0 && errno == EINTR) {
    }
}

/* Statuses after which the watch resumes instead of failing: the server or the network went
 * away, the server cut a slow consumer off and asks it to resume from its last sequence, or a
 * server shutting down cancelled the call (this client never cancels its own watch). */
static int resumable(int status)
{
    return status == GRPC_STATUS_UNAVAILABLE || status == GRPC_STATUS_RESOURCE_EXHAUSTED ||
           status == GRPC_STATUS_CANCELLED;
}

static int exit_code(const watch *w)
{
    switch (az_watchview_ended(w->view)) {
    case AZ_WATCHVIEW_SUCCEEDED: return AZ_CLI_EXIT_OK;
    case AZ_WATCHVIEW_FAILED: return WATCH_EXIT_FAILED;
    case AZ_WATCHVIEW_CANCELLED: return WATCH_EXIT_CANCELLED;
    default: return AZ_CLI_EXIT_FAILED;
    }
}

static void show(watch *w, const Agentz__V1__Event *ev)
{
    if (w->json) {
        char *json, msg[AZ_MSG_MAX];
        if (az_pbjson_encode(&ev->base, 0, &json, msg) == AZ_OK) {
            fprintf(w->cli->out, "%s\n", json);
            fflush(w->cli->out);
            free(json);
        }
    }
    az_watchview_apply(w->view, ev, wall_ms());
}

/* Streams until the run or task ends (agents: until an error that is not resumable). */
static int stream_loop(watch *w)
{
    az_cli *cli = w->cli;
    int tries = 0;
    int64_t backoff = RECONNECT_FIRST_MS;
    for (;;) {
        char msg[AZ_MSG_MAX] = "";
        int status = 0;
        az_conn_stream *s = NULL;
        az_err err = az_conn_stream_open(cli->conn, w->method, w->req, &agentz__v1__event__descriptor,
                                         0, cli->md, &s, &status, msg);
        while (err == AZ_OK) {
            ProtobufCMessage *m = NULL;
            if ((err = az_conn_stream_next(s, &m, &status, msg)) != AZ_OK || !m) break;
            const Agentz__V1__Event *ev = (const Agentz__V1__Event *)m;
            tries = 0;
            backoff = RECONNECT_FIRST_MS;
            /* Durable events are numbered: one already seen (before a reconnect) is skipped. */
            int fresh = ev->sequence == 0 || ev->sequence > *w->after;
            if (ev->sequence > *w->after) *w->after = ev->sequence;
            if (fresh) show(w, ev);
            protobuf_c_message_free_unpacked(m, NULL);
            if (az_watchview_ended(w->view) != AZ_WATCHVIEW_OPEN) {
                az_conn_stream_close(s);
                return exit_code(w);
            }
        }
        az_conn_stream_close(s);
        if (err == AZ_OK) {
            /* Ended with OK but before the terminal event (a server going away politely): ask
             * where things stand, then resume. */
            if (w->refetch) {
                int code = w->refetch(w);
                if (code) return code;
                if (az_watchview_ended(w->view) != AZ_WATCHVIEW_OPEN) return exit_code(w);
            }
            status = GRPC_STATUS_UNAVAILABLE;
            snprintf(msg, sizeof msg, "the server ended the stream");
        } else if (!resumable(status)) {
            fprintf(cli->err, "error: %s: %s\n", az_conn_status_name(status), msg);
            return AZ_CLI_EXIT_FAILED;
        }
        if (++tries > RECONNECT_TRIES) {
            fprintf(cli->err, "error: %s: %s (gave up after %d reconnection attempts)\n",
                    az_conn_status_name(status), msg, RECONNECT_TRIES);
            return AZ_CLI_EXIT_FAILED;
        }
        /* One notice per outage and a reminder every 10 attempts, not one per attempt. */
        int tell = tries % 10 == 1;
        if (tell && !w->json)
            az_watchview_note(w->view, "connection lost (%s: %s): resuming after sequence %lld",
                              az_conn_status_name(status), msg, (long long)*w->after);
        else if (tell)
            fprintf(cli->err, "warning: connection lost (%s: %s): resuming after sequence %lld\n",
                    az_conn_status_name(status), msg, (long long)*w->after);
        sleep_ms(backoff);
        backoff = backoff * 2 > RECONNECT_MAX_MS ? RECONNECT_MAX_MS : backoff * 2;
    }
}

/* The view's terminal options: redraw in place only on a terminal, colours unless NO_COLOR. */
static az_watchview *new_view(az_cli *cli, az_watchview_kind kind, int tokens, FILE **sink)
{
    az_watchview_opts o = {.tokens = tokens};
    FILE *out = cli->out;
    *sink = NULL;
    if (cli->output == AZ_OUTPUT_JSON) {
        /* Events go out as JSON lines; the view only tracks the outcome. */
        if (!(*sink = fopen("/dev/null", "we"))) return NULL;
        out = *sink;
    } else {
        o.tty = isatty(fileno(cli->out));
        o.color = az_watchview_want_color(cli->out);
        struct winsize ws;
        if (o.tty && ioctl(fileno(cli->out), TIOCGWINSZ, &ws) == 0) {
            o.width = ws.ws_col;
            o.height = ws.ws_row;
        }
        const char *cols = getenv("COLUMNS");
        if (o.width <= 0 && cols) o.width = atoi(cols);
    }
    return az_watchview_new(kind, &o, out);
}

static int finish(watch *w, int code, FILE *sink)
{
    if (!w->json && (code == AZ_CLI_EXIT_OK || code == WATCH_EXIT_FAILED || code == WATCH_EXIT_CANCELLED))
        az_watchview_finish(w->view, wall_ms());
    az_watchview_free(w->view);
    if (sink) fclose(sink);
    return code;
}

/* ---- watch run ---- */

/* GetRun into the view: every step with its state, or (steps_only, before replaying the whole
 * history) the steps alone. */
static int get_run(watch *w, int steps_only)
{
    Agentz__V1__GetRunRequest req = AGENTZ__V1__GET_RUN_REQUEST__INIT;
    req.id = (char *)w->id;
    ProtobufCMessage *m;
    int code = az_cli_call(w->cli, "/agentz.v1.WorkflowService/GetRun", &req.base,
                           &agentz__v1__workflow_run__descriptor, &m);
    if (code) return code;
    az_err err = az_watchview_set_run(w->view, (const Agentz__V1__WorkflowRun *)m, steps_only);
    protobuf_c_message_free_unpacked(m, NULL);
    return err ? az_cli_out_of_memory(w->cli) : AZ_CLI_EXIT_OK;
}

static int refetch_run(watch *w) { return get_run(w, 0); }

static int parse_after(az_cli *cli, const az_flag_value *f, int64_t *after)
{
    char msg[AZ_MSG_MAX];
    if (f->count && az_args_int64("--after-sequence", f->value, 0, INT64_MAX, after, msg))
        return az_cli_usage_error(cli, "%s", msg);
    return AZ_CLI_EXIT_OK;
}

static int run_run(az_cli *cli, const az_flag_value *v, const char *const *args, size_t nargs)
{
    (void)nargs;
    if (!*args[0]) return az_cli_usage_error(cli, "ID: empty run id");
    Agentz__V1__WatchRunRequest req = AGENTZ__V1__WATCH_RUN_REQUEST__INIT;
    req.run_id = (char *)args[0];
    req.include_tokens = az_args_bool(&v[R_TOKENS]);
    int code = parse_after(cli, &v[R_AFTER], &req.after_sequence);
    if (code) return code;
    FILE *sink;
    watch w = {.cli = cli, .method = "/agentz.v1.WorkflowService/WatchRun", .req = &req.base,
               .after = &req.after_sequence, .json = cli->output == AZ_OUTPUT_JSON,
               .refetch = refetch_run, .id = args[0]};
    if (!(w.view = new_view(cli, AZ_WATCHVIEW_RUN, req.include_tokens, &sink)))
        return az_cli_out_of_memory(cli);
    /* GetRun first: the steps to show before any event, and NOT_FOUND before streaming. */
    if ((code = get_run(&w, req.after_sequence == 0)) != AZ_CLI_EXIT_OK) return finish(&w, code, sink);
    return finish(&w, stream_loop(&w), sink);
}

/* ---- watch task ---- */

static int refetch_task(watch *w)
{
    Agentz__V1__GetTaskRequest req = AGENTZ__V1__GET_TASK_REQUEST__INIT;
    req.id = (char *)w->id;
    ProtobufCMessage *m;
    int code = az_cli_call(w->cli, "/agentz.v1.TaskService/GetTask", &req.base,
                           &agentz__v1__task__descriptor, &m);
    if (code) return code;
    az_err err = az_watchview_set_task(w->view, (const Agentz__V1__Task *)m);
    protobuf_c_message_free_unpacked(m, NULL);
    return err ? az_cli_out_of_memory(w->cli) : AZ_CLI_EXIT_OK;
}

static int run_task(az_cli *cli, const az_flag_value *v, const char *const *args, size_t nargs)
{
    (void)nargs;
    if (!*args[0]) return az_cli_usage_error(cli, "ID: empty task id");
    Agentz__V1__WatchTaskRequest req = AGENTZ__V1__WATCH_TASK_REQUEST__INIT;
    req.task_id = (char *)args[0];
    req.include_tokens = az_args_bool(&v[R_TOKENS]);
    int code = parse_after(cli, &v[R_AFTER], &req.after_sequence);
    if (code) return code;
    FILE *sink;
    watch w = {.cli = cli, .method = "/agentz.v1.TaskService/WatchTask", .req = &req.base,
               .after = &req.after_sequence, .json = cli->output == AZ_OUTPUT_JSON,
               .refetch = refetch_task, .id = args[0]};
    if (!(w.view = new_view(cli, AZ_WATCHVIEW_TASK, req.include_tokens, &sink)))
        return az_cli_out_of_memory(cli);
    if ((code = refetch_task(&w)) != AZ_CLI_EXIT_OK) return finish(&w, code, sink);
    return finish(&w, stream_loop(&w), sink);
}

/* ---- watch agents ---- */

/* The agents to show before any event: every page of ListAgents (names and statuses). */
static int load_agents(watch *w, const char *selector)
{
    Agentz__V1__ListAgentsRequest req = AGENTZ__V1__LIST_AGENTS_REQUEST__INIT;
    req.page_size = 1000;
    req.label_selector = (char *)(selector ? selector : "");
    char *token = "";
    ProtobufCMessage **pages;
    size_t npages;
    req.page_token = token;
    int code = az_cli_fetch_pages(w->cli, "/agentz.v1.AgentService/ListAgents", &req.base,
                                  &req.page_token, &agentz__v1__list_agents_response__descriptor, 1,
                                  &pages, &npages);
    if (code) return code;
    for (size_t p = 0; p < npages && !code; p++) {
        const Agentz__V1__ListAgentsResponse *r = (const Agentz__V1__ListAgentsResponse *)pages[p];
        for (size_t i = 0; i < r->n_agents && !code; i++)
            if (az_watchview_add_agent(w->view, r->agents[i]) != AZ_OK) code = az_cli_out_of_memory(w->cli);
    }
    az_cli_free_pages(pages, npages);
    return code;
}

static int run_agents(az_cli *cli, const az_flag_value *v, const char *const *args, size_t nargs)
{
    char msg[AZ_MSG_MAX];
    Agentz__V1__WatchAgentsRequest req = AGENTZ__V1__WATCH_AGENTS_REQUEST__INIT;
    req.agent_ids = (char **)args;
    req.n_agent_ids = nargs;
    for (size_t i = 0; i < nargs; i++)
        if (!*args[i]) return az_cli_usage_error(cli, "ID: empty agent id");
    if (v[A_SELECTOR].count && *v[A_SELECTOR].value) {
        if (az_args_selector("--selector", v[A_SELECTOR].value, msg))
            return az_cli_usage_error(cli, "%s", msg);
        req.label_selector = (char *)v[A_SELECTOR].value;
    }
    int code = parse_after(cli, &v[A_AFTER], &req.after_sequence);
    if (code) return code;
    req.include_metrics = az_args_bool(&v[A_METRICS]);
    FILE *sink;
    watch w = {.cli = cli, .method = "/agentz.v1.AgentService/WatchAgents", .req = &req.base,
               .after = &req.after_sequence, .json = cli->output == AZ_OUTPUT_JSON};
    if (!(w.view = new_view(cli, AZ_WATCHVIEW_AGENTS, 0, &sink))) return az_cli_out_of_memory(cli);
    /* Named agents are shown as their events arrive; otherwise list them all first. */
    if (!nargs && (code = load_agents(&w, req.label_selector)) != AZ_CLI_EXIT_OK)
        return finish(&w, code, sink);
    az_watchview_refresh(w.view, wall_ms());
    return finish(&w, stream_loop(&w), sink);
}

/* ---- the noun ---- */

#define EXIT_CODES                                                                              \
    "Exit codes: 0 the run/task succeeded, 1 the watch failed (not found, permission, gave up\n" \
    "reconnecting), 2 usage error, 3 the run/task failed, 4 it was cancelled."

static const az_cli_verb verbs[] = {
    {"run", "ID", "Watch a workflow run live until it finishes",
     "One line per step: status, progress bar, elapsed time and the latest progress message;\n"
     "on a terminal the block is redrawn in place (colours unless NO_COLOR is set), otherwise\n"
     "a line is printed per change. --tokens streams each step's text as the model writes it.\n"
     "The whole history is replayed first. If the connection drops (UNAVAILABLE) or the server\n"
     "cuts a slow reader off (RESOURCE_EXHAUSTED), the watch reconnects and resumes after the\n"
     "last event it saw, without gaps or repeats. With -o json every event is printed as one\n"
     "JSON line instead.\n" EXIT_CODES,
     run_flags, R__COUNT, 1, 1, run_run},
    {"task", "ID", "Watch one task live until it finishes",
     "Status, attempt, progress bar, elapsed time, tool calls and (--tokens) the model's text\n"
     "as it streams. Reconnects and resumes like 'watch run'; -o json prints events as JSON\n"
     "lines.\n" EXIT_CODES,
     run_flags, R__COUNT, 1, 1, run_task},
    {"agents", "[ID...]", "Watch agents' statuses (and --metrics) live until interrupted",
     "One line per agent of the workspace (or the IDs given): status and, with --metrics, tasks\n"
     "running, done, failed and tokens used. Runs until interrupted (Ctrl-C); reconnects and\n"
     "resumes like 'watch run'. Exit code 1 when the watch fails.",
     agents_flags, A__COUNT, 0, 1000, run_agents},
};

const az_cli_noun az_cli_watch = {
    .name = "watch",
    .alias = NULL,
    .summary = "Live views of a run, a task or the agents (progress, statuses, tokens)",
    .verbs = verbs,
    .nverbs = sizeof verbs / sizeof verbs[0],
};
