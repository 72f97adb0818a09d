/* `agentz top`: a live dashboard of SystemService.StreamMetrics. On a terminal it redraws one
 * screen in place (requests, the busiest methods with their latency, queue, workers, health);
 * piped, it prints one block of plain lines per snapshot. It reconnects when the stream drops and
 * leaves the terminal as it found it on Ctrl-C. */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#include "agentz/v1/event.pb-c.h"
#include "agentz/v1/system.pb-c.h"
#include "cli.h"
#include "core/pbjson.h"
#include "google/protobuf/duration.pb-c.h"
#include "table.h"

#define METHOD "/agentz.v1.SystemService/StreamMetrics"
#define DEFAULT_INTERVAL_MS 2000
#define DEFAULT_LIMIT 10
#define BACKOFF_MIN_MS 500
#define BACKOFF_MAX_MS 5000

enum { T_INTERVAL, T_LIMIT, T_COUNT, T__COUNT };

static const az_flag top_flags[T__COUNT] = {
    [T_INTERVAL] = {"interval", 'n', AZ_FLAG_VALUE, "DURATION", "time between snapshots, 1s..60s (default 2s)", NULL},
    [T_LIMIT] = {"limit", 0, AZ_FLAG_VALUE, "N",
                 "methods shown, busiest first (default: what fits the terminal, else 10)", NULL},
    [T_COUNT] = {"count", 0, AZ_FLAG_VALUE, "N", "stop after N snapshots (default: until Ctrl-C)", NULL},
};

/* What the signal thread and the display loop share. */
typedef struct top_state {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int stop;            /* Ctrl-C or SIGTERM arrived */
    az_conn_stream *cur; /* the stream to cancel when it does */
} top_state;

typedef struct view {
    az_cli *cli;
    int tty;   /* redraw in place with colours */
    int limit; /* methods shown; 0 = fit the terminal */
    int64_t interval_ms;
} view;

/* ---- signals ---- */

/* Waits for SIGINT/SIGTERM (blocked everywhere else) and cancels the stream; SIGUSR1 from the
 * display loop just ends the thread. */
static void *signal_main(void *arg)
{
    top_state *st = arg;
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGUSR1);
    int sig = 0;
    while (sigwait(&set, &sig) != 0) {
    }
    pthread_mutex_lock(&st->mu);
    st->stop = 1;
    if (st->cur) az_conn_stream_cancel(st->cur);
    pthread_cond_broadcast(&st->cv);
    pthread_mutex_unlock(&st->mu);
    return NULL;
}

/* ---- drawing ---- */

/* "AgentService/GetAgent" for "/agentz.v1.AgentService/GetAgent"; other services keep their
 * package. */
static const char *short_method(const char *m)
{
    if (*m == '/') m++;
    return strncmp(m, "agentz.v1.", 10) == 0 ? m + 10 : m;
}

static int by_count_desc(const void *a, const void *b)
{
    const Agentz__V1__MethodStats *x = *(Agentz__V1__MethodStats *const *)a;
    const Agentz__V1__MethodStats *y = *(Agentz__V1__MethodStats *const *)b;
    if (x->count != y->count) return x->count > y->count ? -1 : 1;
    return strcmp(x->method, y->method);
}

static int terminal_rows(FILE *f)
{
    struct winsize ws;
    if (ioctl(fileno(f), TIOCGWINSZ, &ws) == 0 && ws.ws_row > 0) return ws.ws_row;
    return 24;
}

static const char *health_word(const view *v, int ok)
{
    if (!v->tty) return ok ? "ok" : "down";
    return ok ? "\033[32mok\033[0m" : "\033[1;31mDOWN\033[0m";
}

/* End of a redrawn line: clear what an earlier, longer line left. */
static const char *eol(const view *v) { return v->tty ? "\033[K\n" : "\n"; }

static void draw_tty(const view *v, const Agentz__V1__Event *ev, const char *status)
{
    FILE *f = v->cli->out;
    const Agentz__V1__MetricsSnapshot *s = ev ? ev->metrics : NULL;
    int width = az_table_width(f);
    int rows = terminal_rows(f);
    char when[32] = "";
    if (ev && ev->time) az_output_time(ev->time->seconds, when, sizeof when);
    fputs("\033[H", f);
    const az_cli *cli = v->cli;
    const char *target = cli->conn ? az_conn_target(cli->conn)
                         : cli->conn_opts.target ? cli->conn_opts.target : az_conn_default_target();
    fprintf(f, "\033[1magentz top\033[0m  %s  every %.3gs  %s%s", target,
            (double)v->interval_ms / 1000.0, when, eol(v));
    if (status && *status) fprintf(f, "\033[33m%s\033[0m%s", status, eol(v));
    else fputs(eol(v), f);
    if (!s) {
        fprintf(f, "waiting for the first snapshot...%s", eol(v));
        fputs("\033[J", f);
        fflush(f);
        return;
    }
    fprintf(f, "requests  %9.1f/s   queue %6lld   running %6lld   tasks/min %7.1f   workers %3d%s",
            s->requests_per_second, (long long)s->queue_depth, (long long)s->tasks_running,
            s->tasks_per_minute, (int)s->workers, eol(v));
    fprintf(f, "health    postgresql %s   redis %s   fan-out lag %.1f ms%s", health_word(v, s->postgres_ok),
            health_word(v, s->redis_ok), s->fanout_lag_ms, eol(v));
    fputs(eol(v), f);
    int name_w = width - 54;
    if (name_w < 24) name_w = 24;
    if (name_w > 60) name_w = 60;
    fprintf(f, "\033[7m%-*s %8s %8s %9s %9s %9s\033[0m%s", name_w, "METHOD", "CALLS", "ERRORS", "REQ/S",
            "P50 MS", "P99 MS", eol(v));
    int limit = v->limit ? v->limit : rows - 8;
    if (limit < 1) limit = 1;
    double secs = (double)v->interval_ms / 1000.0;
    for (size_t i = 0; i < s->n_methods && (int)i < limit; i++) {
        const Agentz__V1__MethodStats *m = s->methods[i];
        char name[128];
        snprintf(name, sizeof name, "%s", short_method(m->method));
        if ((int)strlen(name) > name_w) name[name_w] = '\0';
        int err = m->errors > 0;
        fprintf(f, "%-*s %8lld %s%8lld%s %9.1f %9.2f %9.2f%s", name_w, name, (long long)m->count,
                err ? "\033[31m" : "", (long long)m->errors, err ? "\033[0m" : "",
                (double)m->count / secs, m->p50_ms, m->p99_ms, eol(v));
    }
    if (s->n_methods == 0) fprintf(f, "(no calls in the interval)%s", eol(v));
    else if ((int)s->n_methods > limit)
        fprintf(f, "... %zu more%s", s->n_methods - (size_t)limit, eol(v));
    fputs("\033[J", f);
    fflush(f);
}

static void draw_lines(const view *v, const Agentz__V1__Event *ev)
{
    FILE *f = v->cli->out;
    const Agentz__V1__MetricsSnapshot *s = ev->metrics;
    char when[32] = "";
    if (ev->time) az_output_time(ev->time->seconds, when, sizeof when);
    fprintf(f,
            "%s req/s=%.2f queue=%lld running=%lld tasks/min=%.1f workers=%d postgres=%s redis=%s "
            "lag_ms=%.1f\n",
            when, s->requests_per_second, (long long)s->queue_depth, (long long)s->tasks_running,
            s->tasks_per_minute, (int)s->workers, health_word(v, s->postgres_ok),
            health_word(v, s->redis_ok), s->fanout_lag_ms);
    int limit = v->limit ? v->limit : DEFAULT_LIMIT;
    for (size_t i = 0; i < s->n_methods && (int)i < limit; i++) {
        const Agentz__V1__MethodStats *m = s->methods[i];
        fprintf(f, "  %s calls=%lld errors=%lld p50_ms=%.2f p99_ms=%.2f\n", short_method(m->method),
                (long long)m->count, (long long)m->errors, m->p50_ms, m->p99_ms);
    }
    fflush(f);
}

/* Shows one snapshot in the invocation's format. */
static void show(const view *v, Agentz__V1__Event *ev)
{
    az_cli *cli = v->cli;
    char msg[AZ_MSG_MAX];
    if (cli->output == AZ_OUTPUT_JSON) {
        /* One compact document per line, so the output can be piped to jq. */
        char *json;
        if (az_pbjson_encode(&ev->base, 0, &json, msg) == AZ_OK) {
            fprintf(cli->out, "%s\n", json);
            free(json);
        }
        fflush(cli->out);
        return;
    }
    if (cli->output == AZ_OUTPUT_YAML) {
        fputs("---\n", cli->out);
        az_output_message(cli->out, &ev->base, AZ_OUTPUT_YAML, msg);
        fflush(cli->out);
        return;
    }
    if (ev->payload_case != AGENTZ__V1__EVENT__PAYLOAD_METRICS || !ev->metrics) return;
    Agentz__V1__MetricsSnapshot *s = ev->metrics;
    if (s->n_methods > 1) qsort(s->methods, s->n_methods, sizeof *s->methods, by_count_desc);
    if (v->tty) draw_tty(v, ev, NULL);
    else draw_lines(v, ev);
}

/* ---- the loop ---- */

/* Codes worth reconnecting after: the server went away, restarted, or shed the stream. */
static int retryable(int status)
{
    switch (status) {
    case 1:  /* CANCELLED (not by us: we check stop first) */
    case 2:  /* UNKNOWN */
    case 4:  /* DEADLINE_EXCEEDED */
    case 8:  /* RESOURCE_EXHAUSTED */
    case 10: /* ABORTED */
    case 13: /* INTERNAL */
    case 14: /* UNAVAILABLE */
        return 1;
    default:
        return 0;
    }
}

/* Sleeps ms unless Ctrl-C comes first; returns st->stop. */
static int pause_ms(top_state *st, int ms)
{
    struct timespec until;
    clock_gettime(CLOCK_MONOTONIC, &until);
    until.tv_sec += ms / 1000;
    until.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&st->mu);
    while (!st->stop && pthread_cond_timedwait(&st->cv, &st->mu, &until) != ETIMEDOUT) {
    }
    int stop = st->stop;
    pthread_mutex_unlock(&st->mu);
    return stop;
}

static int stopped(top_state *st)
{
    pthread_mutex_lock(&st->mu);
    int stop = st->stop;
    pthread_mutex_unlock(&st->mu);
    return stop;
}

static int watch(const view *v, top_state *st, int64_t count)
{
    az_cli *cli = v->cli;
    Agentz__V1__StreamMetricsRequest req = AGENTZ__V1__STREAM_METRICS_REQUEST__INIT;
    Google__Protobuf__Duration d = GOOGLE__PROTOBUF__DURATION__INIT;
    d.seconds = v->interval_ms / 1000;
    d.nanos = (int32_t)(v->interval_ms % 1000) * 1000000;
    req.interval = &d;
    int backoff = BACKOFF_MIN_MS, shown = 0, first = 1, code = AZ_CLI_EXIT_OK;
    int64_t received = 0;
    if (v->tty) draw_tty(v, NULL, "connecting...");
    while (!stopped(st)) {
        az_conn_stream *s = NULL;
        char msg[AZ_MSG_MAX];
        int status = 0;
        if (first) {
            /* The first open goes through the CLI helper: it opens the connection (finding the
             * local admin key) and reports bad flags or credentials the usual way. */
            first = 0;
            code = az_cli_stream(cli, METHOD, &req.base, &agentz__v1__event__descriptor, &s);
            if (code) return code;
        } else {
            /* Later ones on a fresh channel: gRPC's own reconnect backoff would keep a restarted
             * server out of sight for up to two minutes. conn_opts holds the token by now. */
            az_conn_free(cli->conn);
            cli->conn = NULL;
            az_err err = az_conn_open(&cli->conn_opts, &cli->conn, msg);
            if (err) {
                fprintf(cli->err, "error: %s\n", msg);
                return AZ_CLI_EXIT_FAILED;
            }
            if (az_conn_stream_open(cli->conn, METHOD, &req.base, &agentz__v1__event__descriptor, 0,
                                    cli->md, &s, &status, msg) != AZ_OK)
                s = NULL;
        }
        if (s) {
            pthread_mutex_lock(&st->mu);
            st->cur = s;
            if (st->stop) az_conn_stream_cancel(s);
            pthread_mutex_unlock(&st->mu);
            for (;;) {
                ProtobufCMessage *m = NULL;
                az_err err = az_conn_stream_next(s, &m, &status, msg);
                if (err || !m) break;
                backoff = BACKOFF_MIN_MS;
                show(v, (Agentz__V1__Event *)m);
                protobuf_c_message_free_unpacked(m, NULL);
                shown = 1;
                if (count && ++received >= count) {
                    pthread_mutex_lock(&st->mu);
                    st->stop = 1;
                    pthread_mutex_unlock(&st->mu);
                    break;
                }
            }
            pthread_mutex_lock(&st->mu);
            st->cur = NULL;
            pthread_mutex_unlock(&st->mu);
            az_conn_stream_close(s);
        }
        if (stopped(st)) break;
        if (status != 0 && !retryable(status)) {
            if (v->tty) fputs("\033[?25h\033[?1049l", cli->out); /* the error must stay visible */
            fprintf(cli->err, "error: %s: %s\n", az_conn_status_name(status), msg);
            return AZ_CLI_EXIT_FAILED;
        }
        char note[AZ_MSG_MAX + 64];
        snprintf(note, sizeof note, "%s (%s); reconnecting in %.1fs", status ? az_conn_status_name(status) : "stream ended",
                 status ? msg : "server closed it", backoff / 1000.0);
        if (v->tty) draw_tty(v, NULL, note);
        else if (cli->output == AZ_OUTPUT_TABLE || !shown) fprintf(cli->err, "%s\n", note);
        if (pause_ms(st, backoff)) break;
        backoff = backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : backoff * 2;
    }
    return code;
}

static int run_top(az_cli *cli, const az_flag_value *fv, const char *const *args, size_t nargs)
{
    (void)args;
    (void)nargs;
    char msg[AZ_MSG_MAX];
    view v = {.cli = cli, .interval_ms = DEFAULT_INTERVAL_MS};
    if (fv[T_INTERVAL].count) {
        int64_t sec;
        int32_t ns;
        if (az_args_duration("--interval", fv[T_INTERVAL].value, &sec, &ns, msg))
            return az_cli_usage_error(cli, "%s", msg);
        if (sec > 60 || sec * 1000 + ns / 1000000 < 1000 || (sec == 60 && ns > 0))
            return az_cli_usage_error(cli, "--interval: must be between 1s and 60s");
        v.interval_ms = sec * 1000 + ns / 1000000;
    }
    int32_t limit = 0;
    if (fv[T_LIMIT].count && az_args_int32("--limit", fv[T_LIMIT].value, 1, 1000, &limit, msg))
        return az_cli_usage_error(cli, "%s", msg);
    v.limit = limit;
    int64_t count = 0;
    if (fv[T_COUNT].count && az_args_int64("--count", fv[T_COUNT].value, 1, INT64_MAX, &count, msg))
        return az_cli_usage_error(cli, "%s", msg);
    v.tty = cli->output == AZ_OUTPUT_TABLE && isatty(fileno(cli->out));

    /* Ctrl-C goes to a thread of ours rather than killing the process, so the terminal is
     * restored and the stream cancelled. Blocked before the connection exists, so gRPC's
     * threads inherit the mask too. */
    top_state st = {.stop = 0};
    pthread_mutex_init(&st.mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&st.cv, &ca);
    pthread_condattr_destroy(&ca);
    sigset_t set, old;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGUSR1);
    pthread_sigmask(SIG_BLOCK, &set, &old);
    pthread_t sig_thread;
    int have_thread = pthread_create(&sig_thread, NULL, signal_main, &st) == 0;

    if (v.tty) fputs("\033[?1049h\033[?25l\033[2J", cli->out); /* alternate screen, no cursor */
    int code = watch(&v, &st, count);
    if (v.tty) {
        fputs("\033[?25h\033[?1049l", cli->out);
        fflush(cli->out);
    }

    if (have_thread) {
        pthread_kill(sig_thread, SIGUSR1); /* a no-op for the thread if a signal already came */
        pthread_join(sig_thread, NULL);
    }
    /* A second signal that arrived meanwhile stays pending: consume it rather than let it kill
     * us once unblocked. */
    struct timespec zero = {0, 0};
    while (sigtimedwait(&set, NULL, &zero) > 0) {
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    pthread_cond_destroy(&st.cv);
    pthread_mutex_destroy(&st.mu);
    return code;
}

static const az_cli_verb top_verbs[] = {
    {"", "", "Live dashboard of the server's metrics",
     "Streams SystemService.StreamMetrics and shows, every interval: requests per second, the\n"
     "busiest methods with calls, errors and p50/p99 latency, tasks queued and running, tasks\n"
     "finished per minute, workers, PostgreSQL and Redis health and the event fan-out lag.\n"
     "On a terminal the screen is redrawn in place; otherwise one block of lines per snapshot\n"
     "(-o json: one JSON event per line). Reconnects when the stream drops; Ctrl-C exits.",
     top_flags, T__COUNT, 0, 0, run_top},
};

const az_cli_noun az_cli_top = {"top", NULL, "Live dashboard of server metrics (requests, latency, queue, workers, health)",
                                top_verbs, 1};
