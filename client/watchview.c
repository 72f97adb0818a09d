/* The state and rendering of `agentz watch`: events update items (steps, the task, agents);
 * a terminal gets a block redrawn in place below any log output, anything else gets a line
 * whenever something changes. */
#include "watchview.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define ESC "\033["
#define LABEL_W 16
#define STATUS_W 10
#define BAR_W 20
#define TOKEN_LINE_MAX 1024 /* a token line longer than this is wrapped */
#define MSG_MAX 200         /* progress messages, errors, tool arguments kept per item */

enum { C_NONE, C_DIM, C_RED, C_GREEN, C_YELLOW, C_CYAN, C_MAGENTA };
static const char *const COLOR_CODE[] = {
    [C_NONE] = "", [C_DIM] = "2", [C_RED] = "31", [C_GREEN] = "32",
    [C_YELLOW] = "33", [C_CYAN] = "36", [C_MAGENTA] = "35",
};

/* Status names and colours by enum value, one table per status enum. */
typedef struct status_style {
    const char *name;
    int color;
} status_style;

static const status_style TASK_STYLE[] = {
    [0] = {"unknown", C_DIM},
    [AGENTZ__V1__TASK_STATUS__TASK_STATUS_PENDING] = {"pending", C_DIM},
    [AGENTZ__V1__TASK_STATUS__TASK_STATUS_QUEUED] = {"queued", C_DIM},
    [AGENTZ__V1__TASK_STATUS__TASK_STATUS_RUNNING] = {"running", C_CYAN},
    [AGENTZ__V1__TASK_STATUS__TASK_STATUS_BACKOFF] = {"backoff", C_YELLOW},
    [AGENTZ__V1__TASK_STATUS__TASK_STATUS_SUCCEEDED] = {"succeeded", C_GREEN},
    [AGENTZ__V1__TASK_STATUS__TASK_STATUS_FAILED] = {"failed", C_RED},
    [AGENTZ__V1__TASK_STATUS__TASK_STATUS_CANCELLED] = {"cancelled", C_MAGENTA},
};
static const status_style RUN_STYLE[] = {
    [0] = {"unknown", C_DIM},
    [AGENTZ__V1__RUN_STATUS__RUN_STATUS_PENDING] = {"pending", C_DIM},
    [AGENTZ__V1__RUN_STATUS__RUN_STATUS_RUNNING] = {"running", C_CYAN},
    [AGENTZ__V1__RUN_STATUS__RUN_STATUS_SUCCEEDED] = {"succeeded", C_GREEN},
    [AGENTZ__V1__RUN_STATUS__RUN_STATUS_FAILED] = {"failed", C_RED},
    [AGENTZ__V1__RUN_STATUS__RUN_STATUS_CANCELLED] = {"cancelled", C_MAGENTA},
};
static const status_style AGENT_STYLE[] = {
    [0] = {"unknown", C_DIM},
    [AGENTZ__V1__AGENT_STATUS__AGENT_STATUS_IDLE] = {"idle", C_NONE},
    [AGENTZ__V1__AGENT_STATUS__AGENT_STATUS_BUSY] = {"busy", C_CYAN},
    [AGENTZ__V1__AGENT_STATUS__AGENT_STATUS_DISABLED] = {"disabled", C_DIM},
    [AGENTZ__V1__AGENT_STATUS__AGENT_STATUS_ERROR] = {"error", C_RED},
};
#define NSTYLE(t) (sizeof t / sizeof *t)

static status_style style_of(const status_style *t, size_t n, int v)
{
    return v >= 0 && (size_t)v < n && t[v].name ? t[v] : t[0];
}

/* One line of the view: a run's step, the watched task, or an agent. */
typedef struct item {
    char *id;    /* task or agent id */
    char *label; /* step id, "task", or the agent's name */
    int status;
    int attempt;
    double fraction;
    char message[MSG_MAX];
    int64_t start_ms, end_ms; /* wall clock; 0 = unknown */
    char error[MSG_MAX];
    int has_metrics;
    int64_t running, succeeded, failed, tokens;
} item;

struct az_watchview {
    az_watchview_kind kind;
    az_watchview_opts o;
    FILE *out;
    char *id;   /* the run or task watched */
    int status; /* RUN: the run's RunStatus; TASK: mirrors items[0] */
    int64_t start_ms, end_ms;
    int completed, total; /* run progress: steps done / all */
    char error[MSG_MAX];
    item *items;
    size_t n, cap;
    int drawn;                   /* lines of the tty block now on screen */
    char tok_task[40];           /* whose tokens are streaming now */
    int tok_attempt;
    char tok[TOKEN_LINE_MAX + 1]; /* tty: the unfinished token line; plain: unused */
    size_t ntok;
    int mid_line;                /* plain: the last output ended inside a token line */
};

int az_watchview_want_color(FILE *f)
{
    const char *nc = getenv("NO_COLOR");
    return f && isatty(fileno(f)) && !(nc && *nc);
}

/* ---------------------------------------------------------------- formatting */

const char *az_watchview_elapsed(int64_t ms, char *buf, size_t size)
{
    if (ms < 0) ms = 0;
    if (ms < 1000) snprintf(buf, size, "%dms", (int)ms);
    else if (ms < 60000) snprintf(buf, size, "%.1fs", (double)ms / 1000.0);
    else if (ms < 3600000) snprintf(buf, size, "%dm%02ds", (int)(ms / 60000), (int)(ms / 1000 % 60));
    else snprintf(buf, size, "%dh%02dm", (int)(ms / 3600000), (int)(ms / 60000 % 60));
    return buf;
}

const char *az_watchview_bar(double fraction, int width, char *buf, size_t size)
{
    if (!(fraction >= 0)) fraction = 0; /* also NaN */
    if (fraction > 1) fraction = 1;
    if (width < 1) width = 1;
    if ((size_t)width + 3 > size) width = (int)size - 3;
    int full = (int)(fraction * width + 0.5);
    buf[0] = '[';
    for (int i = 0; i < width; i++) buf[1 + i] = i < full ? '#' : '-';
    buf[width + 1] = ']';
    buf[width + 2] = '\0';
    return buf;
}

static int64_t ts_ms(const Google__Protobuf__Timestamp *t)
{
    return t ? (int64_t)t->seconds * 1000 + t->nanos / 1000000 : 0;
}

/* Copies s into a fixed buffer on one line: control characters become spaces. */
static void set_text(char *dst, size_t cap, const char *s)
{
    size_t i = 0;
    for (; s && s[i] && i + 1 < cap; i++) dst[i] = (unsigned char)s[i] < 0x20 ? ' ' : s[i];
    dst[i] = '\0';
}

/* Byte length of the longest prefix of s showing at most cols code points. */
static size_t fit(const char *s, size_t len, int cols)
{
    size_t i = 0;
    int shown = 0;
    while (i < len) {
        if (((unsigned char)s[i] & 0xC0) != 0x80) {
            if (shown == cols) break;
            shown++;
        }
        i++;
    }
    return i;
}

/* Writes one line: plain text with the status word at [so, so + sl) coloured, cut to the
 * terminal's width on a tty so the block's line count stays exact. */
static void put_line(az_watchview *v, const char *plain, size_t so, size_t sl, int color)
{
    size_t len = strlen(plain);
    if (v->o.tty) len = fit(plain, len, (v->o.width > 1 ? v->o.width : 80) - 1);
    if (!v->o.color || color == C_NONE || so >= len) {
        fprintf(v->out, "%.*s\n", (int)len, plain);
        return;
    }
    size_t end = so + sl < len ? so + sl : len;
    fprintf(v->out, "%.*s" ESC "%sm%.*s" ESC "0m%.*s\n", (int)so, plain, COLOR_CODE[color],
            (int)(end - so), plain + so, (int)(len - end), plain + end);
}

static void item_line(az_watchview *v, const item *it, int64_t now)
{
    char line[1024], el[16], bar[BAR_W + 3];
    if (v->kind == AZ_WATCHVIEW_AGENTS) {
        status_style st = style_of(AGENT_STYLE, NSTYLE(AGENT_STYLE), it->status);
        int so = snprintf(line, sizeof line, "  %-*.*s ", LABEL_W, LABEL_W, it->label);
        int n = snprintf(line + so, sizeof line - (size_t)so, "%-*s", STATUS_W, st.name);
        size_t off = (size_t)(so + n);
        if (it->has_metrics)
            off += (size_t)snprintf(line + off, sizeof line - off,
                                    " running %lld  done %lld  failed %lld  tokens %lld",
                                    (long long)it->running, (long long)it->succeeded,
                                    (long long)it->failed, (long long)it->tokens);
        if (it->error[0] && off < sizeof line) snprintf(line + off, sizeof line - off, "  %s", it->error);
        put_line(v, line, (size_t)so, strlen(st.name), st.color);
        return;
    }
    status_style st = style_of(TASK_STYLE, NSTYLE(TASK_STYLE), it->status);
    double f = it->status == AGENTZ__V1__TASK_STATUS__TASK_STATUS_SUCCEEDED ? 1.0 : it->fraction;
    const char *time = "";
    /* Waiting steps have no elapsed time yet (a replayed "queued" line must not show one). */
    if (it->start_ms && it->status >= AGENTZ__V1__TASK_STATUS__TASK_STATUS_RUNNING)
        time = az_watchview_elapsed((it->end_ms ? it->end_ms : now) - it->start_ms, el, sizeof el);
    const char *detail = it->error[0] ? it->error : it->message;
    char att[24] = "";
    if (it->attempt > 1) snprintf(att, sizeof att, " (attempt %d)", it->attempt);
    int so = snprintf(line, sizeof line, "  %-*.*s ", LABEL_W, LABEL_W, it->label);
    snprintf(line + so, sizeof line - (size_t)so, "%-*s %s %3d%% %7s%s%s%s", STATUS_W, st.name,
             az_watchview_bar(f, BAR_W, bar, sizeof bar), (int)(f * 100 + 0.5), time, att,
             *detail ? "  " : "", detail);
    put_line(v, line, (size_t)so, strlen(st.name), st.color);
}

static void header_line(az_watchview *v, int64_t now)
{
    char line[512], el[16];
    const char *time = "";
    if (v->start_ms) time = az_watchview_elapsed((v->end_ms ? v->end_ms : now) - v->start_ms, el, sizeof el);
    if (v->kind == AZ_WATCHVIEW_RUN) {
        status_style st = style_of(RUN_STYLE, NSTYLE(RUN_STYLE), v->status);
        int so = snprintf(line, sizeof line, "run %s ", v->id ? v->id : "");
        snprintf(line + so, sizeof line - (size_t)so, "%s  %d/%d steps  %s", st.name, v->completed,
                 v->total, time);
        put_line(v, line, (size_t)so, strlen(st.name), st.color);
    } else if (v->kind == AZ_WATCHVIEW_AGENTS) {
        snprintf(line, sizeof line, "agents (%zu)", v->n);
        put_line(v, line, 0, 0, C_NONE);
    }
}

/* ---------------------------------------------------------------- the tty block */

static int block_lines(const az_watchview *v)
{
    int rows = (v->o.height > 4 ? v->o.height : 24) - 2;
    int items = (int)v->n, extra = v->kind != AZ_WATCHVIEW_TASK; /* header */
    int tok = v->o.tokens && v->ntok ? 1 : 0;
    if (items + extra + tok > rows) items = rows - extra - tok - 1; /* one for "... and N more" */
    if (items < 0) items = 0;
    return items;
}

static void erase_block(az_watchview *v)
{
    if (!v->o.tty || !v->drawn) return;
    fprintf(v->out, "\r" ESC "%dA" ESC "J", v->drawn);
    v->drawn = 0;
}

static void draw_block(az_watchview *v, int64_t now)
{
    if (!v->o.tty) return;
    int lines = 0;
    if (v->kind != AZ_WATCHVIEW_TASK) {
        header_line(v, now);
        lines++;
    }
    int shown = block_lines(v);
    for (int i = 0; i < shown; i++) item_line(v, &v->items[i], now);
    lines += shown;
    if ((size_t)shown < v->n) {
        fprintf(v->out, "  ... and %zu more\n", v->n - (size_t)shown);
        lines++;
    }
    if (v->o.tokens && v->ntok) {
        char line[TOKEN_LINE_MAX + 8];
        snprintf(line, sizeof line, "  > %.*s", (int)v->ntok, v->tok);
        put_line(v, line, 0, 0, C_NONE);
        lines++;
    }
    v->drawn = lines;
    fflush(v->out);
}

/* Prints a log line: above the block on a tty, after ending a token line elsewhere. */
static void log_line(az_watchview *v, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void log_line(az_watchview *v, const char *fmt, ...)
{
    erase_block(v);
    if (v->mid_line) {
        fputc('\n', v->out);
        v->mid_line = 0;
    }
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    put_line(v, line, 0, 0, C_NONE);
}

void az_watchview_note(az_watchview *v, const char *fmt, ...)
{
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    log_line(v, "%s", line);
    fflush(v->out);
}

void az_watchview_refresh(az_watchview *v, int64_t now_ms)
{
    if (!v->o.tty) return;
    erase_block(v);
    draw_block(v, now_ms);
}

/* ---------------------------------------------------------------- state */

az_watchview *az_watchview_new(az_watchview_kind kind, const az_watchview_opts *opts, FILE *out)
{
    az_watchview *v = calloc(1, sizeof *v);
    if (!v) return NULL;
    v->kind = kind;
    if (opts) v->o = *opts;
    v->out = out;
    return v;
}

void az_watchview_free(az_watchview *v)
{
    if (!v) return;
    for (size_t i = 0; i < v->n; i++) {
        free(v->items[i].id);
        free(v->items[i].label);
    }
    free(v->items);
    free(v->id);
    free(v);
}

static item *find(az_watchview *v, const char *id)
{
    for (size_t i = 0; id && *id && i < v->n; i++)
        if (strcmp(v->items[i].id, id) == 0) return &v->items[i];
    return NULL;
}

static item *add(az_watchview *v, const char *id, const char *label)
{
    if (v->n == v->cap) {
        size_t cap = v->cap ? v->cap * 2 : 8;
        item *bigger = realloc(v->items, cap * sizeof *bigger);
        if (!bigger) return NULL;
        v->items = bigger;
        v->cap = cap;
    }
    item *it = &v->items[v->n];
    memset(it, 0, sizeof *it);
    it->id = strdup(id ? id : "");
    it->label = strdup(label && *label ? label : id ? id : "");
    if (!it->id || !it->label) {
        free(it->id);
        free(it->label);
        return NULL;
    }
    v->n++;
    return it;
}

static int task_terminal(int s)
{
    return s == AGENTZ__V1__TASK_STATUS__TASK_STATUS_SUCCEEDED ||
           s == AGENTZ__V1__TASK_STATUS__TASK_STATUS_FAILED ||
           s == AGENTZ__V1__TASK_STATUS__TASK_STATUS_CANCELLED;
}

static void count_done(az_watchview *v)
{
    if (v->kind != AZ_WATCHVIEW_RUN) return;
    int done = 0;
    for (size_t i = 0; i < v->n; i++) done += v->items[i].status == AGENTZ__V1__TASK_STATUS__TASK_STATUS_SUCCEEDED;
    v->completed = done;
    if (v->total < (int)v->n) v->total = (int)v->n;
}

static void error_text(char *dst, size_t cap, const Agentz__V1__TaskError *e)
{
    if (!e || (!*e->type && !*e->message)) {
        dst[0] = '\0';
        return;
    }
    char buf[MSG_MAX];
    snprintf(buf, sizeof buf, "%s%s%s", e->type, *e->type && *e->message ? ": " : "", e->message);
    set_text(dst, cap, buf);
}

az_err az_watchview_set_run(az_watchview *v, const Agentz__V1__WorkflowRun *run, int steps_only)
{
    if (v->kind != AZ_WATCHVIEW_RUN) return AZ_ERR_INVALID;
    free(v->id);
    if (!(v->id = strdup(run->id))) return AZ_ERR_NOMEM;
    if (steps_only) {
        for (size_t i = 0; i < run->n_steps; i++)
            if (!find(v, run->steps[i]->task_id)) {
                item *it = add(v, run->steps[i]->task_id, run->steps[i]->step_id);
                if (!it) return AZ_ERR_NOMEM;
                it->status = AGENTZ__V1__TASK_STATUS__TASK_STATUS_PENDING;
            }
        v->total = (int)run->n_steps;
        return AZ_OK;
    }
    v->status = run->status;
    v->start_ms = ts_ms(run->start_time);
    v->end_ms = ts_ms(run->end_time);
    error_text(v->error, sizeof v->error, run->error);
    for (size_t i = 0; i < run->n_steps; i++) {
        const Agentz__V1__StepRun *s = run->steps[i];
        item *it = find(v, s->task_id);
        if (!it && !(it = add(v, s->task_id, s->step_id))) return AZ_ERR_NOMEM;
        it->status = s->status;
        it->attempt = s->attempt;
        it->start_ms = ts_ms(s->start_time);
        it->end_ms = ts_ms(s->end_time);
        error_text(it->error, sizeof it->error, s->error);
    }
    v->total = (int)run->n_steps;
    count_done(v);
    return AZ_OK;
}

az_err az_watchview_set_task(az_watchview *v, const Agentz__V1__Task *t)
{
    if (v->kind != AZ_WATCHVIEW_TASK) return AZ_ERR_INVALID;
    free(v->id);
    if (!(v->id = strdup(t->id))) return AZ_ERR_NOMEM;
    item *it = find(v, t->id);
    if (!it && !(it = add(v, t->id, *t->step_id ? t->step_id : "task"))) return AZ_ERR_NOMEM;
    it->status = v->status = t->status;
    it->attempt = t->attempt;
    it->fraction = t->progress;
    it->start_ms = v->start_ms = ts_ms(t->start_time);
    it->end_ms = v->end_ms = ts_ms(t->end_time);
    error_text(it->error, sizeof it->error, t->error);
    memcpy(v->error, it->error, sizeof v->error);
    return AZ_OK;
}

az_err az_watchview_add_agent(az_watchview *v, const Agentz__V1__Agent *a)
{
    if (v->kind != AZ_WATCHVIEW_AGENTS) return AZ_ERR_INVALID;
    item *it = find(v, a->id);
    if (!it && !(it = add(v, a->id, a->name))) return AZ_ERR_NOMEM;
    it->status = a->status;
    return AZ_OK;
}

/* Streams token text: raw on a plain output, through the block's last line on a tty. */
static void tokens(az_watchview *v, item *it, const Agentz__V1__Event *ev)
{
    const Agentz__V1__TokenDelta *t = ev->token;
    const char *label = it ? it->label : ev->task_id;
    if (strcmp(v->tok_task, ev->task_id) != 0 || v->tok_attempt != t->attempt) {
        /* Another task's or attempt's text begins: finish the current line, name the source. */
        if (v->o.tty && v->ntok) {
            erase_block(v);
            fprintf(v->out, "%.*s\n", (int)v->ntok, v->tok);
            v->ntok = 0;
        }
        snprintf(v->tok_task, sizeof v->tok_task, "%s", ev->task_id);
        v->tok_attempt = t->attempt;
        if (t->attempt > 1) log_line(v, "--- %s output (attempt %d) ---", label, t->attempt);
        else log_line(v, "--- %s output ---", label);
    }
    if (!v->o.tty) {
        fputs(t->text, v->out);
        size_t n = strlen(t->text);
        if (n) v->mid_line = t->text[n - 1] != '\n';
        fflush(v->out);
        return;
    }
    /* Completed lines go above the block; the unfinished one is shown inside it. */
    for (const char *p = t->text; *p; p++) {
        if (*p == '\n' || v->ntok == TOKEN_LINE_MAX) {
            erase_block(v);
            fprintf(v->out, "%.*s\n", (int)v->ntok, v->tok);
            v->ntok = 0;
            if (*p == '\n') continue;
        }
        v->tok[v->ntok++] = *p == '\t' || (unsigned char)*p >= 0x20 ? *p : ' ';
    }
}

/* The item an event is about, added when new (a run's task the first GetRun did not list). */
static item *item_for(az_watchview *v, const Agentz__V1__Event *ev)
{
    const char *id = v->kind == AZ_WATCHVIEW_AGENTS ? ev->agent_id : ev->task_id;
    if (!id || !*id) return NULL;
    item *it = find(v, id);
    if (it || v->kind == AZ_WATCHVIEW_TASK) return it;
    return add(v, id, v->kind == AZ_WATCHVIEW_RUN ? ev->step_id : id);
}

az_err az_watchview_apply(az_watchview *v, const Agentz__V1__Event *ev, int64_t now)
{
    /* Only the watched run or task (a stream carries nothing else; be strict anyway). */
    if (v->kind == AZ_WATCHVIEW_RUN && v->id && *ev->run_id && strcmp(ev->run_id, v->id) != 0) return AZ_OK;
    if (v->kind == AZ_WATCHVIEW_TASK && v->id && *ev->task_id && strcmp(ev->task_id, v->id) != 0) return AZ_OK;
    int64_t at = ts_ms(ev->time);
    if (!at) at = now;
    item *it = NULL;
    if (ev->payload_case != AGENTZ__V1__EVENT__PAYLOAD_RUN_STATUS &&
        ev->payload_case != AGENTZ__V1__EVENT__PAYLOAD_HEARTBEAT && !(it = item_for(v, ev)) &&
        ((v->kind == AZ_WATCHVIEW_AGENTS && *ev->agent_id) || (v->kind == AZ_WATCHVIEW_RUN && *ev->task_id)))
        return AZ_ERR_NOMEM;
    int changed = 0; /* print the item's line (plain) */
    switch (ev->payload_case) {
    case AGENTZ__V1__EVENT__PAYLOAD_RUN_STATUS: {
        const Agentz__V1__RunStatusChanged *r = ev->run_status;
        if (v->kind != AZ_WATCHVIEW_RUN) break;
        v->status = r->to;
        if (r->to == AGENTZ__V1__RUN_STATUS__RUN_STATUS_RUNNING && !v->start_ms) v->start_ms = at;
        if (r->to >= AGENTZ__V1__RUN_STATUS__RUN_STATUS_SUCCEEDED) v->end_ms = at;
        else v->end_ms = 0; /* resumed */
        error_text(v->error, sizeof v->error, r->error);
        if (!v->o.tty) {
            if (v->mid_line) fputc('\n', v->out), v->mid_line = 0;
            header_line(v, at);
        }
        break;
    }
    case AGENTZ__V1__EVENT__PAYLOAD_TASK_STATUS: {
        const Agentz__V1__TaskStatusChanged *t = ev->task_status;
        if (!it) break;
        /* A view seeded from GetRun/GetTask and resumed at an older sequence replays changes
         * the snapshot already holds: an earlier attempt, or "running" for an attempt that has
         * finished, is history and must not move the step back. */
        if (t->attempt && (t->attempt < it->attempt ||
                           (t->attempt == it->attempt && task_terminal(it->status) &&
                            t->to == AGENTZ__V1__TASK_STATUS__TASK_STATUS_RUNNING)))
            break;
        it->status = t->to;
        if (t->attempt) it->attempt = t->attempt;
        if (t->to == AGENTZ__V1__TASK_STATUS__TASK_STATUS_RUNNING) {
            it->start_ms = it->start_ms && it->end_ms == 0 ? it->start_ms : at;
            it->end_ms = 0;
            it->error[0] = '\0';
        } else if (task_terminal(t->to)) {
            it->end_ms = at;
            if (!it->start_ms) it->start_ms = at;
        }
        if (t->to == AGENTZ__V1__TASK_STATUS__TASK_STATUS_PENDING ||
            t->to == AGENTZ__V1__TASK_STATUS__TASK_STATUS_QUEUED)
            it->fraction = 0;
        error_text(it->error, sizeof it->error, t->error);
        if (v->kind == AZ_WATCHVIEW_TASK) {
            v->status = it->status;
            v->start_ms = it->start_ms;
            v->end_ms = it->end_ms;
            memcpy(v->error, it->error, sizeof v->error);
        }
        count_done(v);
        changed = 1;
        break;
    }
    case AGENTZ__V1__EVENT__PAYLOAD_PROGRESS: {
        const Agentz__V1__Progress *p = ev->progress;
        if (!*ev->task_id) { /* the run's own progress */
            if (p->total_steps) v->total = p->total_steps, v->completed = p->completed_steps;
            break;
        }
        if (!it) break;
        /* Plain output: a line per 10 % or new message, not per tick. */
        int bucket = (int)(p->fraction * 10), old = (int)(it->fraction * 10);
        changed = bucket != old || strncmp(it->message, p->message, sizeof it->message - 1) != 0;
        it->fraction = p->fraction;
        set_text(it->message, sizeof it->message, p->message);
        break;
    }
    case AGENTZ__V1__EVENT__PAYLOAD_AGENT_STATUS:
        if (!it) break;
        it->status = ev->agent_status->to;
        set_text(it->error, sizeof it->error, ev->agent_status->reason);
        changed = 1;
        break;
    case AGENTZ__V1__EVENT__PAYLOAD_AGENT_METRICS: {
        const Agentz__V1__AgentMetrics *m = ev->agent_metrics;
        if (!it) break;
        changed = !it->has_metrics || it->running != m->tasks_running ||
                  it->succeeded != m->tasks_succeeded || it->failed != m->tasks_failed;
        it->has_metrics = 1;
        it->running = m->tasks_running;
        it->succeeded = m->tasks_succeeded;
        it->failed = m->tasks_failed;
        it->tokens = m->usage ? m->usage->total_tokens : 0;
        break;
    }
    case AGENTZ__V1__EVENT__PAYLOAD_TOKEN:
        if (v->o.tokens && ev->token) tokens(v, it, ev);
        break;
    case AGENTZ__V1__EVENT__PAYLOAD_TOOL_CALL:
        log_line(v, "  %s: tool %s %.160s", it ? it->label : ev->task_id, ev->tool_call->tool,
                 ev->tool_call->arguments_json);
        break;
    case AGENTZ__V1__EVENT__PAYLOAD_TOOL_RESULT:
        log_line(v, "  %s: tool %s (%zu bytes)", it ? it->label : ev->task_id,
                 ev->tool_result->is_error ? "failed" : "returned", strlen(ev->tool_result->output));
        break;
    case AGENTZ__V1__EVENT__PAYLOAD_LOG: {
        static const char *const LEVEL[] = {"", "debug", "info", "warn", "error"};
        int l = ev->log->level;
        log_line(v, "  %s: [%s] %.300s", it ? it->label : ev->task_id,
                 l >= 0 && l <= 4 ? LEVEL[l] : "", ev->log->message);
        break;
    }
    default: /* heartbeats, metrics: only the clock moves */
        break;
    }
    if (v->o.tty) {
        erase_block(v);
        draw_block(v, now);
    } else if (changed && it) {
        if (v->mid_line) {
            fputc('\n', v->out);
            v->mid_line = 0;
        }
        item_line(v, it, at); /* elapsed as of the event: replayed history reads true */
        fflush(v->out);
    }
    return AZ_OK;
}

az_watchview_end az_watchview_ended(const az_watchview *v)
{
    if (v->kind == AZ_WATCHVIEW_RUN) {
        switch (v->status) {
        case AGENTZ__V1__RUN_STATUS__RUN_STATUS_SUCCEEDED: return AZ_WATCHVIEW_SUCCEEDED;
        case AGENTZ__V1__RUN_STATUS__RUN_STATUS_FAILED: return AZ_WATCHVIEW_FAILED;
        case AGENTZ__V1__RUN_STATUS__RUN_STATUS_CANCELLED: return AZ_WATCHVIEW_CANCELLED;
        default: return AZ_WATCHVIEW_OPEN;
        }
    }
    if (v->kind == AZ_WATCHVIEW_TASK) {
        switch (v->status) {
        case AGENTZ__V1__TASK_STATUS__TASK_STATUS_SUCCEEDED: return AZ_WATCHVIEW_SUCCEEDED;
        case AGENTZ__V1__TASK_STATUS__TASK_STATUS_FAILED: return AZ_WATCHVIEW_FAILED;
        case AGENTZ__V1__TASK_STATUS__TASK_STATUS_CANCELLED: return AZ_WATCHVIEW_CANCELLED;
        default: return AZ_WATCHVIEW_OPEN;
        }
    }
    return AZ_WATCHVIEW_OPEN;
}

void az_watchview_finish(az_watchview *v, int64_t now)
{
    if (v->o.tty) {
        if (v->ntok) {
            erase_block(v);
            fprintf(v->out, "%.*s\n", (int)v->ntok, v->tok);
            v->ntok = 0;
        }
        az_watchview_refresh(v, now);
        v->drawn = 0; /* the final block stays on screen */
    } else if (v->mid_line) {
        fputc('\n', v->out);
        v->mid_line = 0;
    }
    if (v->kind == AZ_WATCHVIEW_AGENTS) {
        fflush(v->out);
        return;
    }
    static const char *const END[] = {"has not finished", "succeeded", "failed", "was cancelled"};
    char el[16], line[512];
    az_watchview_end e = az_watchview_ended(v);
    int so = snprintf(line, sizeof line, "%s %s ", v->kind == AZ_WATCHVIEW_RUN ? "run" : "task",
                      v->id ? v->id : "");
    int n = snprintf(line + so, sizeof line - (size_t)so, "%s", END[e]);
    int m = 0;
    if (v->start_ms)
        m = snprintf(line + so + n, sizeof line - (size_t)(so + n), " in %s",
                     az_watchview_elapsed((v->end_ms ? v->end_ms : now) - v->start_ms, el, sizeof el));
    size_t off = (size_t)(so + n + m);
    if (off < sizeof line && v->kind == AZ_WATCHVIEW_RUN)
        off += (size_t)snprintf(line + off, sizeof line - off, " (%d/%d steps)", v->completed, v->total);
    if (off < sizeof line && v->error[0] && e != AZ_WATCHVIEW_SUCCEEDED)
        snprintf(line + off, sizeof line - off, ": %s", v->error);
    static const int END_COLOR[] = {C_NONE, C_GREEN, C_RED, C_MAGENTA};
    int saved = v->o.tty;
    v->o.tty = 0; /* the summary is never cut */
    put_line(v, line, (size_t)so, (size_t)n, END_COLOR[e]);
    v->o.tty = saved;
    fflush(v->out);
}
