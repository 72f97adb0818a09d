/* bench_engine: the execution engine measured through the real stack. It starts agentzd (API and
 * worker, embedded PostgreSQL and Redis in a fresh data directory) and an in-process fake LLM
 * (tests/fakellm), creates an agent whose llm.base_url is the fake, and runs one scenario:
 *
 *   throughput  N tasks (default 2000) created as fast as the clients can through gRPC, answered
 *               instantly by the fake; reports tasks/second end to end and the queue-to-start
 *               latency (start_time - create_time) p50/p99, plus the same latency on an idle
 *               system (one task at a time).
 *   drain       N tasks queued behind an API-only agentzd, then --workers worker-only agentzds
 *               started on the same data dir; reports their rate alone and the CPU seconds the
 *               workers, PostgreSQL and Redis spent per task.
 *   slowcalls   N tasks (default 5000) with AGENTZ_WORKER_CONCURRENCY=N whose model calls the fake
 *               holds open (delay before the first byte, or slow chunks); waits until the fake
 *               sees N requests in flight at once, samples agentzd's resident memory before and at
 *               the peak, reports memory per call, then cancels every task and times how long it
 *               takes until every call is aborted.
 *   bulk        N tasks (default 10000) created through CreateTasks in batches of --batch (default
 *               1000) from --clients threads, answered instantly by the fake; reports the creation
 *               rate (tasks/s from the first call to the last reply), tasks/s end to end and the
 *               queue-to-start latency p50/p99 as throughput does.
 *
 * Prints a human summary on stderr and, with --json, one JSON object on stdout. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <getopt.h>
#include <jansson.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "agentz/v1/agent.pb-c.h"
#include "agentz/v1/task.pb-c.h"
#include "conn.h"
#include "core/text.h"
#include "fakellm.h"

#define CALL_TIMEOUT_MS 60000
#define MAX_WORKERS 64

typedef enum scenario { SC_THROUGHPUT, SC_SLOWCALLS, SC_DRAIN, SC_BULK } scenario;
static const char *const SCENARIOS[] = {"throughput", "slowcalls", "drain", "bulk"};

static struct {
    scenario sc;
    const char *agentzd;
    const char *data_dir; /* NULL = a fresh temporary directory, removed at the end */
    int tasks;
    int clients;
    int idle_samples;
    int delay_ms, chunk_delay_ms;
    int worker_concurrency;
    int workers; /* drain: worker processes */
    int batch;   /* bulk: tasks per CreateTasks call */
    int timeout_s;
    int json;
    int keep;
} opt = {.tasks = -1, .clients = 16, .idle_samples = 20, .delay_ms = -1, .worker_concurrency = -1,
         .workers = 1, .batch = 1000, .timeout_s = 600};

static pid_t child;  /* agentzd with the API (and, but in drain, the worker) */
static pid_t workers[MAX_WORKERS]; /* drain: the worker-only agentzds */
static int n_workers;
static char target[64];
static char token[256];
static char base_dir[512];
static char model[96];
static fakellm *fake;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static double ts_s(const Google__Protobuf__Timestamp *t)
{
    return t ? (double)t->seconds + t->nanos / 1e9 : 0;
}

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

static void stop_proc(pid_t *pid, int sig, int timeout_s, int *status_out);
static void cleanup_dir(void);

static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "bench_engine: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    if (child > 0) {
        char log[600];
        snprintf(log, sizeof log, "%s/agentzd.log", base_dir);
        fprintf(stderr, "bench_engine: agentzd log: %s\n", log);
    }
    for (int i = 0; i < n_workers; i++) stop_proc(&workers[i], SIGTERM, 30, NULL);
    stop_proc(&child, SIGTERM, 30, NULL);
    if (fake) fakellm_stop(fake);
    if (!opt.keep && !opt.data_dir) cleanup_dir();
    exit(1);
}

/* ---------------------------------------------------------------- agentzd */

/* Resident memory of pid in kB for a /proc status field ("VmRSS", "VmHWM"); -1 if unknown. */
static long proc_kb(pid_t pid, const char *field)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    long v = -1;
    size_t fl = strlen(field);
    while (fgets(line, sizeof line, f))
        if (strncmp(line, field, fl) == 0 && line[fl] == ':') {
            v = strtol(line + fl + 1, NULL, 10);
            break;
        }
    fclose(f);
    return v;
}

static long proc_threads(pid_t pid) { return proc_kb(pid, "Threads"); }

/* CPU seconds (user + system) pid has used, its reaped children's too when children is set, and
 * its parent's pid into ppid; -1 if pid is gone. */
static double proc_cpu_s(pid_t pid, int children, pid_t *ppid)
{
    char path[64], line[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    size_t n = fread(line, 1, sizeof line - 1, f);
    fclose(f);
    line[n] = '\0';
    /* The command name may hold spaces and parentheses: the fields start after the last ')'. */
    char *p = strrchr(line, ')');
    int pp = 0;
    unsigned long ut = 0, st = 0;
    long cut = 0, cst = 0;
    if (!p || sscanf(p + 1, " %*c %d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu %ld %ld", &pp, &ut,
                     &st, &cut, &cst) != 5)
        return -1;
    if (ppid) *ppid = pp;
    double tick = (double)sysconf(_SC_CLK_TCK);
    return (double)(ut + st + (children ? (unsigned long)(cut + cst) : 0)) / tick;
}

/* The pid in the first line of a pid file; 0 if unreadable. */
static pid_t pid_file(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    long v = 0;
    if (fscanf(f, "%ld", &v) != 1) v = 0;
    fclose(f);
    return (pid_t)v;
}

/* CPU seconds of the embedded PostgreSQL: the postmaster, the backends and background processes
 * alive now, and (through the postmaster's reaped-children counters) those that have exited. */
static double pg_cpu_s(void)
{
    char path[700];
    snprintf(path, sizeof path, "%s/data/pg/postmaster.pid", base_dir);
    pid_t pm = pid_file(path);
    if (pm <= 0) return -1;
    double sum = proc_cpu_s(pm, 1, NULL);
    if (sum < 0) return -1;
    DIR *d = opendir("/proc");
    if (!d) return -1;
    struct dirent *de;
    while ((de = readdir(d))) {
        char *end;
        long pid = strtol(de->d_name, &end, 10);
        if (*end || pid <= 0 || pid == pm) continue;
        pid_t pp = 0;
        double c = proc_cpu_s((pid_t)pid, 0, &pp);
        if (c >= 0 && pp == pm) sum += c;
    }
    closedir(d);
    return sum;
}

/* CPU seconds of the embedded redis-server (its pid file under data/run); -1 if unknown. */
static double redis_cpu_s(void)
{
    char path[700];
    snprintf(path, sizeof path, "%s/data/run/redis.pid", base_dir);
    pid_t pid = pid_file(path);
    return pid > 0 ? proc_cpu_s(pid, 1, NULL) : -1;
}

static int read_token(const char *data)
{
    char path[700];
    snprintf(path, sizeof path, "%s/admin.key", data);
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    size_t n = fread(token, 1, sizeof token - 1, f);
    fclose(f);
    while (n && strchr(" \t\r\n", token[n - 1])) n--;
    token[n] = '\0';
    return n > 0;
}

/* Starts agentzd with roles on 127.0.0.1:0 with data under base_dir/data and the log in
 * base_dir/<log>, its stdout into *out_fd; returns its pid. await_agentzd waits until it is up. */
static pid_t spawn_agentzd(const char *roles, int worker_concurrency, const char *log, int *out_fd)
{
    char data[600], logp[600];
    snprintf(data, sizeof data, "%s/data", base_dir);
    snprintf(logp, sizeof logp, "%s/%s", base_dir, log);
    int out[2];
    if (pipe(out) != 0) die("pipe: %s", strerror(errno));
    pid_t pid = fork();
    if (pid < 0) die("fork: %s", strerror(errno));
    if (pid == 0) {
        int log = open(logp, O_WRONLY | O_CREAT | O_APPEND, 0644);
        dup2(out[1], 1);
        if (log >= 0) dup2(log, 2);
        close(out[0]);
        char wc[16];
        snprintf(wc, sizeof wc, "%d", worker_concurrency);
        if (worker_concurrency > 0) setenv("AGENTZ_WORKER_CONCURRENCY", wc, 1);
        /* The benchmark is the only client and fires bursts: the per-caller limits would only
         * measure themselves. */
        setenv("AGENTZ_RATE_LIMIT", "0", 1);
        setenv("AGENTZ_RATE_LIMIT_WORKSPACE", "0", 1);
        setenv("AGENTZ_RATE_LIMIT_EXPENSIVE", "0", 1);
        execl(opt.agentzd, opt.agentzd, "--data-dir", data, "--listen", "127.0.0.1:0", "--roles",
              roles, (char *)NULL);
        fprintf(stderr, "cannot exec %s: %s\n", opt.agentzd, strerror(errno));
        _exit(127);
    }
    close(out[1]);
    *out_fd = out[0];
    return pid;
}

/* Reads pid's stdout (fd, closed here) until its "gRPC at" line (into where); dies if it does not
 * come within 180 s. */
static void await_agentzd(pid_t pid, int fd, const char *roles, const char *log, char where[64])
{
    char buf[1024];
    size_t len = 0;
    double until = now_s() + 180;
    where[0] = '\0';
    while (!where[0] && now_s() < until) {
        struct pollfd p = {fd, POLLIN, 0};
        if (poll(&p, 1, 1000) <= 0) continue;
        ssize_t n = read(fd, buf + len, sizeof buf - 1 - len);
        if (n <= 0) break;
        len += (size_t)n;
        buf[len] = '\0';
        char *at = strstr(buf, "gRPC at ");
        if (at && strchr(at, '\n')) sscanf(at + 8, "%63s", where);
        if (len >= sizeof buf - 1) len = 0;
    }
    close(fd);
    if (!where[0]) {
        int known = pid == child; /* so that die() stops it */
        for (int i = 0; i < n_workers; i++) known |= workers[i] == pid;
        if (!known && !child) child = pid;
        else if (!known && n_workers < MAX_WORKERS) workers[n_workers++] = pid;
        die("agentzd --roles %s did not become ready within 180 s (log %s/%s)", roles, base_dir, log);
    }
}

static pid_t start_agentzd(const char *roles, int worker_concurrency, const char *log, char where[64])
{
    int fd;
    pid_t pid = spawn_agentzd(roles, worker_concurrency, log, &fd);
    await_agentzd(pid, fd, roles, log, where);
    return pid;
}

/* The API process: also waits for the local admin key it writes. */
static void start_api(const char *roles, int worker_concurrency)
{
    child = start_agentzd(roles, worker_concurrency, "agentzd.log", target);
    char data[600];
    snprintf(data, sizeof data, "%s/data", base_dir);
    double until = now_s() + 30;
    while (!read_token(data) && now_s() < until) usleep(100 * 1000);
    if (!token[0]) die("agentzd wrote no %s/admin.key", data);
}

static void stop_proc(pid_t *pid, int sig, int timeout_s, int *status_out)
{
    if (*pid <= 0) return;
    kill(*pid, sig);
    int st = 0;
    for (int i = 0; i < timeout_s * 10; i++) {
        if (waitpid(*pid, &st, WNOHANG) == *pid) {
            *pid = 0;
            if (status_out) *status_out = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
            return;
        }
        usleep(100 * 1000);
    }
    kill(*pid, SIGKILL);
    waitpid(*pid, NULL, 0);
    *pid = 0;
    if (status_out) *status_out = -1;
}

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    return remove(path);
}

static void cleanup_dir(void)
{
    if (base_dir[0]) nftw(base_dir, rm_entry, 32, FTW_DEPTH | FTW_PHYS);
}

/* ---------------------------------------------------------------- calls */

static az_conn *connect_server(void)
{
    az_conn_opts o = {.target = target, .token = token};
    az_conn *c = NULL;
    char msg[AZ_MSG_MAX];
    if (az_conn_open(&o, &c, msg) != AZ_OK) die("cannot connect to %s: %s", target, msg);
    return c;
}

static void create_agent(az_conn *c, char id[40])
{
    Agentz__V1__LlmConfig llm = AGENTZ__V1__LLM_CONFIG__INIT;
    llm.provider = "openai";
    llm.model = model;
    llm.base_url = (char *)fakellm_base_url(fake);
    /* Slow calls must outlive the ramp-up (and the default 120 s call deadline). */
    Google__Protobuf__Duration call_timeout = GOOGLE__PROTOBUF__DURATION__INIT;
    call_timeout.seconds = 900;
    llm.timeout = &call_timeout;
    Agentz__V1__Agent a = AGENTZ__V1__AGENT__INIT;
    char name[128];
    snprintf(name, sizeof name, "bench-engine-%s", model);
    a.name = name;
    a.role = "Benchmark worker";
    a.goal = "Answer as fast as possible";
    a.backstory = "Created by bench_engine to measure the execution engine.";
    a.llm = &llm;
    Agentz__V1__CreateAgentRequest req = AGENTZ__V1__CREATE_AGENT_REQUEST__INIT;
    req.agent = &a;
    ProtobufCMessage *resp = NULL;
    int st = 0;
    char msg[AZ_MSG_MAX];
    if (az_conn_unary(c, "/agentz.v1.AgentService/CreateAgent", &req.base,
                      &agentz__v1__agent__descriptor, CALL_TIMEOUT_MS, NULL, &resp, &st, msg) != AZ_OK)
        die("CreateAgent failed: %s: %s", az_conn_status_name(st), msg);
    snprintf(id, 40, "%s", ((Agentz__V1__Agent *)resp)->id);
    protobuf_c_message_free_unpacked(resp, NULL);
}

static int create_task(az_conn *c, const char *agent_id, int i, char id_out[40], char *msg)
{
    char desc[128];
    snprintf(desc, sizeof desc, "Benchmark task %d: reply with one word.", i);
    Agentz__V1__Task t = AGENTZ__V1__TASK__INIT;
    t.description = desc;
    t.expected_output = "One word.";
    t.agent_id = (char *)agent_id;
    Agentz__V1__CreateTaskRequest req = AGENTZ__V1__CREATE_TASK_REQUEST__INIT;
    req.task = &t;
    ProtobufCMessage *resp = NULL;
    int st = 0;
    if (az_conn_unary(c, "/agentz.v1.TaskService/CreateTask", &req.base, &agentz__v1__task__descriptor,
                      CALL_TIMEOUT_MS, NULL, &resp, &st, msg) != AZ_OK)
        return -1;
    snprintf(id_out, 40, "%s", ((Agentz__V1__Task *)resp)->id);
    protobuf_c_message_free_unpacked(resp, NULL);
    return 0;
}

static Agentz__V1__TaskStats *task_stats(az_conn *c, const char *agent_id)
{
    Agentz__V1__GetTaskStatsRequest req = AGENTZ__V1__GET_TASK_STATS_REQUEST__INIT;
    req.agent_id = (char *)agent_id;
    ProtobufCMessage *resp = NULL;
    int st = 0;
    char msg[AZ_MSG_MAX];
    if (az_conn_unary(c, "/agentz.v1.TaskService/GetTaskStats", &req.base,
                      &agentz__v1__task_stats__descriptor, CALL_TIMEOUT_MS, NULL, &resp, &st, msg) != AZ_OK) {
        fprintf(stderr, "bench_engine: GetTaskStats failed: %s: %s\n", az_conn_status_name(st), msg);
        return NULL;
    }
    return (Agentz__V1__TaskStats *)resp;
}

static Agentz__V1__Task *get_task(az_conn *c, const char *id)
{
    Agentz__V1__GetTaskRequest req = AGENTZ__V1__GET_TASK_REQUEST__INIT;
    req.id = (char *)id;
    ProtobufCMessage *resp = NULL;
    int st = 0;
    char msg[AZ_MSG_MAX];
    if (az_conn_unary(c, "/agentz.v1.TaskService/GetTask", &req.base, &agentz__v1__task__descriptor,
                      CALL_TIMEOUT_MS, NULL, &resp, &st, msg) != AZ_OK)
        die("GetTask %s failed: %s: %s", id, az_conn_status_name(st), msg);
    return (Agentz__V1__Task *)resp;
}

/* Every task of the agent, through ListTasks pages; calls fn for each. */
static void list_tasks(az_conn *c, const char *agent_id, void (*fn)(void *, const Agentz__V1__Task *),
                       void *arg)
{
    char page[512] = "";
    do {
        Agentz__V1__ListTasksRequest req = AGENTZ__V1__LIST_TASKS_REQUEST__INIT;
        req.agent_id = (char *)agent_id;
        req.page_size = 1000;
        req.page_token = page;
        ProtobufCMessage *resp = NULL;
        int st = 0;
        char msg[AZ_MSG_MAX];
        if (az_conn_unary(c, "/agentz.v1.TaskService/ListTasks", &req.base,
                          &agentz__v1__list_tasks_response__descriptor, CALL_TIMEOUT_MS, NULL, &resp,
                          &st, msg) != AZ_OK)
            die("ListTasks failed: %s: %s", az_conn_status_name(st), msg);
        Agentz__V1__ListTasksResponse *r = (Agentz__V1__ListTasksResponse *)resp;
        for (size_t i = 0; i < r->n_tasks; i++) fn(arg, r->tasks[i]);
        snprintf(page, sizeof page, "%s", r->next_page_token ? r->next_page_token : "");
        protobuf_c_message_free_unpacked(resp, NULL);
    } while (page[0]);
}

/* ---------------------------------------------------------------- parallel creation */

typedef struct creator {
    pthread_t th;
    int from, to; /* task indices [from, to) */
    const char *agent_id;
    char (*ids)[40];
    int errors;
    char first_error[AZ_MSG_MAX];
} creator;

static void *creator_main(void *arg)
{
    creator *cr = arg;
    az_conn *c = connect_server();
    char msg[AZ_MSG_MAX];
    for (int i = cr->from; i < cr->to; i++) {
        if (create_task(c, cr->agent_id, i, cr->ids[i], msg) != 0) {
            if (!cr->errors++) snprintf(cr->first_error, sizeof cr->first_error, "%s", msg);
            cr->ids[i][0] = '\0';
        }
    }
    az_conn_free(c);
    return NULL;
}

/* Creates n tasks with opt.clients threads; returns the seconds it took. */
static double create_all(const char *agent_id, char (*ids)[40], int n)
{
    int k = opt.clients < n ? opt.clients : n;
    creator *cr = calloc((size_t)k, sizeof *cr);
    if (!cr) die("out of memory");
    double t0 = now_s();
    for (int i = 0; i < k; i++) {
        cr[i] = (creator){.from = (int)((long)n * i / k), .to = (int)((long)n * (i + 1) / k),
                          .agent_id = agent_id, .ids = ids};
        pthread_create(&cr[i].th, NULL, creator_main, &cr[i]);
    }
    int errors = 0;
    for (int i = 0; i < k; i++) {
        pthread_join(cr[i].th, NULL);
        if (cr[i].errors && !errors)
            fprintf(stderr, "bench_engine: CreateTask failed: %s\n", cr[i].first_error);
        errors += cr[i].errors;
    }
    free(cr);
    if (errors) die("%d of %d CreateTask calls failed", errors, n);
    return now_s() - t0;
}

/* ---------------------------------------------------------------- statistics */

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Nearest-rank percentile of sorted v[0..n). */
static double pct(const double *v, size_t n, double p)
{
    if (!n) return 0;
    size_t rank = (size_t)((p / 100.0) * (double)n + 0.999999);
    if (rank < 1) rank = 1;
    if (rank > n) rank = n;
    return v[rank - 1];
}

typedef struct times {
    double *q2s; /* queue-to-start, seconds */
    size_t n, cap;
    double min_create, min_start, max_end;
    size_t succeeded, other;
} times;

static void collect_times(void *arg, const Agentz__V1__Task *t)
{
    times *tm = arg;
    if (t->status != AGENTZ__V1__TASK_STATUS__TASK_STATUS_SUCCEEDED) {
        tm->other++;
        return;
    }
    tm->succeeded++;
    double c = ts_s(t->create_time), s = ts_s(t->start_time), e = ts_s(t->end_time);
    if (!tm->min_create || c < tm->min_create) tm->min_create = c;
    if (!tm->min_start || s < tm->min_start) tm->min_start = s;
    if (e > tm->max_end) tm->max_end = e;
    if (tm->n == tm->cap) {
        tm->cap = tm->cap ? tm->cap * 2 : 1024;
        tm->q2s = realloc(tm->q2s, tm->cap * sizeof *tm->q2s);
        if (!tm->q2s) die("out of memory");
    }
    tm->q2s[tm->n++] = s - c;
}

typedef struct idset {
    char (*ids)[40]; /* sorted */
    int n;
    times tm;
} idset;

static int cmp_id(const void *a, const void *b) { return strcmp(a, b); }

static void in_set(void *arg, const Agentz__V1__Task *t)
{
    idset *set = arg;
    if (bsearch(t->id, set->ids, (size_t)set->n, sizeof *set->ids, cmp_id)) collect_times(&set->tm, t);
}

/* ---------------------------------------------------------------- scenarios */

/* Polls GetTaskStats until total tasks have ended (or the timeout); returns the stats. */
static Agentz__V1__TaskStats *wait_finished(az_conn *c, const char *agent_id, long total,
                                            double timeout_s, const char *what)
{
    double start = now_s(), until = start + timeout_s, last_print = 0;
    for (;;) {
        Agentz__V1__TaskStats *s = task_stats(c, agent_id);
        long long ended = s ? (long long)(s->succeeded + s->failed + s->cancelled) : 0;
        if (s && ended >= total) return s;
        if (now_s() > until) {
            die("%s: only %lld of %ld tasks ended within %.0f s (queued %lld, running %lld, "
                "backoff %lld)",
                what, s ? (long long)(s->succeeded + s->failed + s->cancelled) : -1LL, total,
                timeout_s, s ? (long long)s->queued : -1LL, s ? (long long)s->running : -1LL,
                s ? (long long)s->backoff : -1LL);
        }
        if (s && now_s() - last_print > 5) {
            fprintf(stderr, "bench_engine: %s: %lld succeeded, %lld failed, %lld running, %lld queued\n",
                    what, (long long)s->succeeded, (long long)s->failed, (long long)s->running,
                    (long long)s->queued);
            last_print = now_s();
        }
        if (s) protobuf_c_message_free_unpacked(&s->base, NULL);
        /* GetTaskStats aggregates every task of the window (about 11 ms of PostgreSQL CPU at
         * 10,000 tasks): polled every 50 ms it took a fifth of a core from what is measured.
         * Sleep half the time the rest should take at the rate so far, 20 to 500 ms. */
        double elapsed = now_s() - start, wait = 0.5;
        if (ended > 0 && elapsed > 0) wait = 0.5 * (double)(total - ended) * elapsed / (double)ended;
        if (wait < 0.02) wait = 0.02;
        if (wait > 0.5) wait = 0.5;
        usleep((useconds_t)(wait * 1e6));
    }
}

static int throughput(json_t *out)
{
    fakellm_reply r = {.kind = FAKELLM_TEXT, .text = "Done.", .chunk_size = 16};
    fakellm_on(fake, model, NULL, &r, 1);
    az_conn *c = connect_server();
    char agent_id[40];
    create_agent(c, agent_id);

    /* Idle latency: one task at a time, on a quiet system (also warms the worker up). */
    double *idle = calloc((size_t)opt.idle_samples + 1, sizeof *idle);
    char msg[AZ_MSG_MAX];
    for (int i = 0; i < opt.idle_samples; i++) {
        char id[40];
        if (create_task(c, agent_id, -1 - i, id, msg) != 0) die("CreateTask failed: %s", msg);
        double until = now_s() + 60;
        for (;;) {
            Agentz__V1__Task *t = get_task(c, id);
            int done = t->status == AGENTZ__V1__TASK_STATUS__TASK_STATUS_SUCCEEDED;
            if (t->status == AGENTZ__V1__TASK_STATUS__TASK_STATUS_FAILED)
                die("idle task %s failed: %s: %s", id, t->error ? t->error->type : "?",
                    t->error ? t->error->message : "?");
            if (done) idle[i] = ts_s(t->start_time) - ts_s(t->create_time);
            protobuf_c_message_free_unpacked(&t->base, NULL);
            if (done) break;
            if (now_s() > until) die("idle task %s did not finish within 60 s", id);
            usleep(2000);
        }
    }
    qsort(idle, (size_t)opt.idle_samples, sizeof *idle, cmp_double);
    long baseline = opt.idle_samples;

    /* The burst. */
    int n = opt.tasks;
    char(*ids)[40] = calloc((size_t)n, sizeof *ids);
    if (!ids) die("out of memory");
    double t0 = now_s();
    double create_s = create_all(agent_id, ids, n);
    fprintf(stderr, "bench_engine: created %d tasks in %.2f s (%.0f/s)\n", n, create_s, n / create_s);
    Agentz__V1__TaskStats *s = wait_finished(c, agent_id, baseline + n, opt.timeout_s, "throughput");
    double wall = now_s() - t0;
    long failed = (long)s->failed, cancelled = (long)s->cancelled;
    protobuf_c_message_free_unpacked(&s->base, NULL);

    /* Only the burst's tasks count (not the idle samples): filter ListTasks by the ids. */
    qsort(ids, (size_t)n, sizeof *ids, cmp_id);
    idset set = {.ids = ids, .n = n};
    list_tasks(c, agent_id, in_set, &set);
    times tm = set.tm;
    if (tm.succeeded != (size_t)n)
        die("%zu of %d burst tasks succeeded (%ld failed, %ld cancelled)", tm.succeeded, n, failed,
            cancelled);
    qsort(tm.q2s, tm.n, sizeof *tm.q2s, cmp_double);
    double server_span = tm.max_end - tm.min_create;
    double tps = n / wall, server_tps = server_span > 0 ? n / server_span : 0;
    fprintf(stderr,
            "bench_engine: throughput: %d tasks in %.2f s = %.0f tasks/s end to end "
            "(server clock, first create to last end: %.2f s = %.0f tasks/s)\n"
            "bench_engine: queue-to-start under the burst: p50 %.1f ms, p99 %.1f ms, max %.1f ms\n"
            "bench_engine: queue-to-start idle (%d samples): p50 %.1f ms, p99 %.1f ms\n"
            "bench_engine: CreateTask rate: %.0f/s with %d clients; fake LLM calls: %zu\n",
            n, wall, tps, server_span, server_tps, pct(tm.q2s, tm.n, 50) * 1000,
            pct(tm.q2s, tm.n, 99) * 1000, tm.q2s[tm.n - 1] * 1000, opt.idle_samples,
            pct(idle, (size_t)opt.idle_samples, 50) * 1000, pct(idle, (size_t)opt.idle_samples, 99) * 1000,
            n / create_s, opt.clients, fakellm_count(fake, model));
    json_object_set_new(out, "tasks", json_integer(n));
    json_object_set_new(out, "wall_s", json_real(wall));
    json_object_set_new(out, "tasks_per_s", json_real(tps));
    json_object_set_new(out, "server_span_s", json_real(server_span));
    json_object_set_new(out, "server_tasks_per_s", json_real(server_tps));
    json_object_set_new(out, "create_per_s", json_real(n / create_s));
    json_object_set_new(out, "clients", json_integer(opt.clients));
    json_object_set_new(out, "q2s_p50_ms", json_real(pct(tm.q2s, tm.n, 50) * 1000));
    json_object_set_new(out, "q2s_p99_ms", json_real(pct(tm.q2s, tm.n, 99) * 1000));
    json_object_set_new(out, "q2s_max_ms", json_real(tm.q2s[tm.n - 1] * 1000));
    json_object_set_new(out, "idle_q2s_p50_ms", json_real(pct(idle, (size_t)opt.idle_samples, 50) * 1000));
    json_object_set_new(out, "idle_q2s_p99_ms", json_real(pct(idle, (size_t)opt.idle_samples, 99) * 1000));
    json_object_set_new(out, "llm_calls", json_integer((json_int_t)fakellm_count(fake, model)));
    free(tm.q2s);
    free(ids);
    free(idle);
    az_conn_free(c);
    return 0;
}

/* ---------------------------------------------------------------- slow calls */

typedef struct canceller {
    pthread_t th;
    int from, to;
    char (*ids)[40];
    int errors;
    char first_error[AZ_MSG_MAX];
} canceller;

static void *canceller_main(void *arg)
{
    canceller *cc = arg;
    az_conn *c = connect_server();
    for (int i = cc->from; i < cc->to; i++) {
        Agentz__V1__CancelTaskRequest req = AGENTZ__V1__CANCEL_TASK_REQUEST__INIT;
        req.id = cc->ids[i];
        req.reason = "bench_engine: done measuring";
        ProtobufCMessage *resp = NULL;
        int st = 0;
        char msg[AZ_MSG_MAX];
        if (az_conn_unary(c, "/agentz.v1.TaskService/CancelTask", &req.base,
                          &agentz__v1__task__descriptor, CALL_TIMEOUT_MS, NULL, &resp, &st, msg) != AZ_OK) {
            if (!cc->errors++) snprintf(cc->first_error, sizeof cc->first_error, "%s: %.400s",
                                        az_conn_status_name(st), msg);
        } else {
            protobuf_c_message_free_unpacked(resp, NULL);
        }
    }
    az_conn_free(c);
    return NULL;
}

/* The highest VmRSS over a short window (RSS moves as allocator arenas settle). */
static long rss_max_over(double seconds)
{
    long best = -1;
    double until = now_s() + seconds;
    do {
        long v = proc_kb(child, "VmRSS");
        if (v > best) best = v;
        usleep(100 * 1000);
    } while (now_s() < until);
    return best;
}

static int slowcalls(json_t *out)
{
    int n = opt.tasks;
    fakellm_reply slow = {.kind = FAKELLM_TEXT, .text = "Slowly done.", .delay_ms = opt.delay_ms,
                          .chunk_delay_ms = opt.chunk_delay_ms, .chunk_size = 1};
    fakellm_on(fake, model, NULL, &slow, 1);
    char warm_model[128];
    snprintf(warm_model, sizeof warm_model, "%s-warm", model);
    fakellm_reply instant = {.kind = FAKELLM_TEXT, .text = "Warm."};
    fakellm_on(fake, warm_model, NULL, &instant, 1);
    az_conn *c = connect_server();

    /* Warm-up through a second, instant agent so the worker's lazily built state exists before
     * the baseline is taken. */
    char warm_id[40], agent_id[40];
    char saved[96];
    snprintf(saved, sizeof saved, "%s", model);
    snprintf(model, sizeof model, "%.90s", warm_model);
    create_agent(c, warm_id);
    snprintf(model, sizeof model, "%s", saved);
    create_agent(c, agent_id);
    char(*warm_ids)[40] = calloc(20, sizeof *warm_ids);
    if (!warm_ids) die("out of memory");
    create_all(warm_id, warm_ids, 20);
    Agentz__V1__TaskStats *ws = wait_finished(c, warm_id, 20, 120, "warm-up");
    protobuf_c_message_free_unpacked(&ws->base, NULL);
    free(warm_ids);
    sleep(1);
    long base_rss = rss_max_over(1.0);
    long base_threads = proc_threads(child);
    fprintf(stderr, "bench_engine: agentzd idle: VmRSS %ld kB, %ld threads\n", base_rss, base_threads);

    char(*ids)[40] = calloc((size_t)n, sizeof *ids);
    if (!ids) die("out of memory");
    double t0 = now_s();
    double create_s = create_all(agent_id, ids, n);
    fprintf(stderr, "bench_engine: created %d tasks in %.2f s\n", n, create_s);
    double until = t0 + opt.timeout_s, last_print = 0;
    size_t peak_flight = 0;
    while (fakellm_in_flight(fake) < (size_t)n) {
        size_t f = fakellm_in_flight(fake);
        if (f > peak_flight) peak_flight = f;
        if (now_s() > until) {
            Agentz__V1__TaskStats *s = task_stats(c, agent_id);
            die("only %zu of %d model calls in flight at once after %d s (tasks running %lld, "
                "queued %lld, failed %lld)",
                peak_flight, n, opt.timeout_s, s ? (long long)s->running : -1LL,
                s ? (long long)s->queued : -1LL, s ? (long long)s->failed : -1LL);
        }
        if (now_s() - last_print > 2) {
            fprintf(stderr, "bench_engine: %zu calls in flight, agentzd VmRSS %ld kB\n", f,
                    proc_kb(child, "VmRSS"));
            last_print = now_s();
        }
        usleep(20 * 1000);
    }
    double ramp_s = now_s() - t0;
    long peak_rss = rss_max_over(2.0);
    long hwm = proc_kb(child, "VmHWM");
    long peak_threads = proc_threads(child);
    size_t in_flight = fakellm_in_flight(fake);
    size_t conns = fakellm_open_connections(fake);
    double per_call_kb = (double)(peak_rss - base_rss) / n;
    fprintf(stderr,
            "bench_engine: %zu model calls in flight on %zu connections %.1f s after the first "
            "CreateTask\n"
            "bench_engine: agentzd VmRSS %ld kB -> %ld kB (VmHWM %ld kB), threads %ld -> %ld: "
            "%.1f kB per in-flight call\n",
            in_flight, conns, ramp_s, base_rss, peak_rss, hwm, base_threads, peak_threads,
            per_call_kb);

    /* Cancel everything and time until every call is aborted. */
    int k = opt.clients < n ? opt.clients : n;
    canceller *cc = calloc((size_t)k, sizeof *cc);
    if (!cc) die("out of memory");
    double c0 = now_s();
    for (int i = 0; i < k; i++) {
        cc[i] = (canceller){.from = (int)((long)n * i / k), .to = (int)((long)n * (i + 1) / k), .ids = ids};
        pthread_create(&cc[i].th, NULL, canceller_main, &cc[i]);
    }
    int cerr = 0;
    for (int i = 0; i < k; i++) {
        pthread_join(cc[i].th, NULL);
        if (cc[i].errors && !cerr) fprintf(stderr, "bench_engine: CancelTask failed: %s\n", cc[i].first_error);
        cerr += cc[i].errors;
    }
    free(cc);
    double cancel_calls_s = now_s() - c0;
    double abort_until = now_s() + 60;
    while (fakellm_in_flight(fake) > 0 && now_s() < abort_until) usleep(10 * 1000);
    double aborted_s = now_s() - c0;
    size_t left = fakellm_in_flight(fake);
    Agentz__V1__TaskStats *s = wait_finished(c, agent_id, n, 120, "cancel");
    long cancelled = (long)s->cancelled;
    protobuf_c_message_free_unpacked(&s->base, NULL);
    fprintf(stderr,
            "bench_engine: cancelled %ld tasks: CancelTask calls took %.2f s; every model call "
            "aborted %.2f s after the first CancelTask (%zu left)\n",
            cancelled, cancel_calls_s, aborted_s, left);
    json_object_set_new(out, "tasks", json_integer(n));
    json_object_set_new(out, "worker_concurrency", json_integer(opt.worker_concurrency));
    json_object_set_new(out, "delay_ms", json_integer(opt.delay_ms));
    json_object_set_new(out, "chunk_delay_ms", json_integer(opt.chunk_delay_ms));
    json_object_set_new(out, "in_flight", json_integer((json_int_t)in_flight));
    json_object_set_new(out, "ramp_s", json_real(ramp_s));
    json_object_set_new(out, "rss_idle_kb", json_integer(base_rss));
    json_object_set_new(out, "rss_peak_kb", json_integer(peak_rss));
    json_object_set_new(out, "hwm_kb", json_integer(hwm));
    json_object_set_new(out, "threads_idle", json_integer(base_threads));
    json_object_set_new(out, "threads_peak", json_integer(peak_threads));
    json_object_set_new(out, "kb_per_call", json_real(per_call_kb));
    json_object_set_new(out, "cancel_calls_s", json_real(cancel_calls_s));
    json_object_set_new(out, "all_aborted_s", json_real(aborted_s));
    json_object_set_new(out, "cancelled", json_integer(cancelled));
    free(ids);
    az_conn_free(c);
    if (cerr) die("%d CancelTask calls failed", cerr);
    if (left) die("%zu model calls still open 60 s after cancelling", left);
    return 0;
}

/* ---------------------------------------------------------------- drain */

/* Tasks queued behind an API-only agentzd, then opt.workers worker processes started: their rate
 * alone, without the CreateTask rate in the way, and what each task cost in CPU. */
static int drain(json_t *out)
{
    fakellm_reply r = {.kind = FAKELLM_TEXT, .text = "Done.", .chunk_size = 16};
    fakellm_on(fake, model, NULL, &r, 1);
    az_conn *c = connect_server();
    char agent_id[40];
    create_agent(c, agent_id);
    /* A worker creates the consumer group at the stream's end ("$") the first time one starts:
     * start and stop one first so that the tasks queued next are delivered to the group rather
     * than waiting for the reconciler to republish them. */
    char wtarget[64];
    workers[0] = start_agentzd("worker", opt.worker_concurrency, "worker-prime.log", wtarget);
    n_workers = 1;
    int pexit = 0;
    stop_proc(&workers[0], SIGTERM, 60, &pexit);
    n_workers = 0;
    if (pexit != 0) die("the priming worker exited %d", pexit);
    int n = opt.tasks;
    char(*ids)[40] = calloc((size_t)n, sizeof *ids);
    if (!ids) die("out of memory");
    double create_s = create_all(agent_id, ids, n);
    Agentz__V1__TaskStats *s = task_stats(c, agent_id);
    if (!s) die("GetTaskStats failed");
    long queued = (long)s->queued;
    protobuf_c_message_free_unpacked(&s->base, NULL);
    fprintf(stderr, "bench_engine: created %d tasks in %.2f s (%.0f/s); %ld queued, no worker yet\n",
            n, create_s, n / create_s, queued);
    if (queued != n) die("expected %d queued tasks, GetTaskStats says %ld", n, queued);
    /* What PostgreSQL and Redis burn with the queue full and no worker (the API process's own
     * loops): the floor under the per-task figures below, which include it. */
    double idle0 = now_s(), pg_idle0 = pg_cpu_s(), redis_idle0 = redis_cpu_s();
    sleep(3);
    double idle_s = now_s() - idle0;
    double pg_idle = (pg_cpu_s() - pg_idle0) / idle_s, redis_idle = (redis_cpu_s() - redis_idle0) / idle_s;
    /* CPU is counted from here: the API process answers the polls below, the stores do the work. */
    double pg0 = pg_cpu_s(), redis0 = redis_cpu_s(), api0 = proc_cpu_s(child, 1, NULL);
    /* All at once, then wait for each: started one after another, the first would run alone for
     * the others' start-up. */
    double t0 = now_s();
    int fds[MAX_WORKERS];
    char logs[MAX_WORKERS][32];
    for (int i = 0; i < opt.workers; i++) {
        snprintf(logs[i], sizeof logs[i], i ? "worker-%d.log" : "worker.log", i + 1);
        workers[n_workers] = spawn_agentzd("worker", opt.worker_concurrency, logs[i], &fds[i]);
        n_workers++;
    }
    for (int i = 0; i < opt.workers; i++) await_agentzd(workers[i], fds[i], "worker", logs[i], wtarget);
    double ready_s = now_s() - t0;
    s = wait_finished(c, agent_id, n, opt.timeout_s, "drain");
    double wall = now_s() - t0;
    /* Before the workers stop: their counters go with them. */
    double worker_cpu = 0;
    for (int i = 0; i < n_workers; i++) worker_cpu += proc_cpu_s(workers[i], 1, NULL);
    double pg_cpu = pg_cpu_s() - pg0, redis_cpu = redis_cpu_s() - redis0;
    double api_cpu = proc_cpu_s(child, 1, NULL) - api0;
    long failed = (long)s->failed;
    protobuf_c_message_free_unpacked(&s->base, NULL);
    qsort(ids, (size_t)n, sizeof *ids, cmp_id);
    idset set = {.ids = ids, .n = n};
    list_tasks(c, agent_id, in_set, &set);
    if (set.tm.succeeded != (size_t)n) die("%zu of %d tasks succeeded (%ld failed)", set.tm.succeeded, n, failed);
    /* Server clock: first start to last end, i.e. without the worker's start-up. */
    double exec_span = set.tm.max_end - set.tm.min_start;
    int wexit = 0;
    for (int i = 0; i < n_workers; i++) {
        int e = 0;
        stop_proc(&workers[i], SIGTERM, 60, &e);
        if (e && !wexit) wexit = e;
    }
    n_workers = 0;
    fprintf(stderr,
            "bench_engine: drain: %d worker(s) ran %d queued tasks in %.2f s from their start = %.0f "
            "tasks/s (ready after %.2f s; first start to last end on the server clock %.2f s = "
            "%.0f tasks/s); workers exited %d\n"
            "bench_engine: CPU per task: workers %.0f us, postgresql %.0f us, redis %.0f us, api "
            "process %.0f us; with no worker running postgresql used %.0f ms and redis %.0f ms of "
            "CPU per second\n",
            opt.workers, n, wall, n / wall, ready_s, exec_span, exec_span > 0 ? n / exec_span : 0,
            wexit, worker_cpu * 1e6 / n, pg_cpu * 1e6 / n, redis_cpu * 1e6 / n, api_cpu * 1e6 / n,
            pg_idle * 1e3, redis_idle * 1e3);
    json_object_set_new(out, "tasks", json_integer(n));
    json_object_set_new(out, "workers", json_integer(opt.workers));
    json_object_set_new(out, "wall_s", json_real(wall));
    json_object_set_new(out, "tasks_per_s", json_real(n / wall));
    json_object_set_new(out, "worker_ready_s", json_real(ready_s));
    json_object_set_new(out, "exec_span_s", json_real(exec_span));
    json_object_set_new(out, "exec_tasks_per_s", json_real(exec_span > 0 ? n / exec_span : 0));
    json_object_set_new(out, "worker_exit", json_integer(wexit));
    /* CPU seconds over the drain (-1 where a process could not be read). */
    json_object_set_new(out, "worker_cpu_s", json_real(worker_cpu));
    json_object_set_new(out, "pg_cpu_s", json_real(pg0 < 0 ? -1 : pg_cpu));
    json_object_set_new(out, "redis_cpu_s", json_real(redis0 < 0 ? -1 : redis_cpu));
    json_object_set_new(out, "api_cpu_s", json_real(api_cpu));
    json_object_set_new(out, "pg_idle_cpu_per_s", json_real(pg_idle0 < 0 ? -1 : pg_idle));
    json_object_set_new(out, "redis_idle_cpu_per_s", json_real(redis_idle0 < 0 ? -1 : redis_idle));
    json_object_set_new(out, "cpu_us_per_task",
                        json_real((worker_cpu + (pg0 < 0 ? 0 : pg_cpu) + (redis0 < 0 ? 0 : redis_cpu)) * 1e6 / n));
    free(set.tm.q2s);
    free(ids);
    az_conn_free(c);
    return wexit == 0 ? 0 : 1;
}

/* ---------------------------------------------------------------- bulk */

/* The bulk path: batches of opt.batch tasks through CreateTasks, taken from a shared counter by
 * opt.clients threads, so the last batch may be short and no thread idles while batches remain. */
typedef struct bulker {
    pthread_t th;
    const char *agent_id;
    char (*ids)[40];
    atomic_int *next; /* the next batch's index */
    int n;
    int calls, errors;
    char first_error[AZ_MSG_MAX];
} bulker;

static void *bulker_main(void *arg)
{
    bulker *b = arg;
    az_conn *c = connect_server();
    int per = opt.batch;
    Agentz__V1__Task *t = calloc((size_t)per, sizeof *t);
    Agentz__V1__CreateTaskRequest *items = calloc((size_t)per, sizeof *items);
    Agentz__V1__CreateTaskRequest **ptrs = calloc((size_t)per, sizeof *ptrs);
    char(*desc)[64] = calloc((size_t)per, sizeof *desc);
    if (!t || !items || !ptrs || !desc) die("out of memory");
    for (;;) {
        int k = atomic_fetch_add(b->next, 1);
        long from = (long)k * per;
        if (from >= b->n) break;
        int m = (int)(b->n - from < per ? b->n - from : per);
        for (int i = 0; i < m; i++) {
            snprintf(desc[i], sizeof desc[i], "Benchmark task %ld: reply with one word.", from + i);
            agentz__v1__task__init(&t[i]);
            t[i].description = desc[i];
            t[i].expected_output = "One word.";
            t[i].agent_id = (char *)b->agent_id;
            agentz__v1__create_task_request__init(&items[i]);
            items[i].task = &t[i];
            ptrs[i] = &items[i];
        }
        Agentz__V1__CreateTasksRequest req = AGENTZ__V1__CREATE_TASKS_REQUEST__INIT;
        req.n_requests = (size_t)m;
        req.requests = ptrs;
        ProtobufCMessage *resp = NULL;
        int st = 0;
        char msg[AZ_MSG_MAX];
        b->calls++;
        if (az_conn_unary(c, "/agentz.v1.TaskService/CreateTasks", &req.base,
                          &agentz__v1__create_tasks_response__descriptor, CALL_TIMEOUT_MS, NULL, &resp,
                          &st, msg) != AZ_OK) {
            if (!b->errors++)
                snprintf(b->first_error, sizeof b->first_error, "%s: %.400s", az_conn_status_name(st), msg);
            continue;
        }
        Agentz__V1__CreateTasksResponse *r = (Agentz__V1__CreateTasksResponse *)resp;
        if (r->n_tasks != (size_t)m) die("CreateTasks returned %zu tasks for %d", r->n_tasks, m);
        for (int i = 0; i < m; i++) snprintf(b->ids[from + i], 40, "%s", r->tasks[i]->id);
        protobuf_c_message_free_unpacked(resp, NULL);
    }
    free(desc);
    free(ptrs);
    free(items);
    free(t);
    az_conn_free(c);
    return NULL;
}

static int bulk(json_t *out)
{
    fakellm_reply r = {.kind = FAKELLM_TEXT, .text = "Done.", .chunk_size = 16};
    fakellm_on(fake, model, NULL, &r, 1);
    az_conn *c = connect_server();
    char agent_id[40];
    create_agent(c, agent_id);
    /* One task end to end first, so the worker's lazily built state exists before the clock runs. */
    char warm[40], msg[AZ_MSG_MAX];
    if (create_task(c, agent_id, -1, warm, msg) != 0) die("CreateTask failed: %s", msg);
    Agentz__V1__TaskStats *ws = wait_finished(c, agent_id, 1, 60, "warm-up");
    protobuf_c_message_free_unpacked(&ws->base, NULL);

    int n = opt.tasks;
    char(*ids)[40] = calloc((size_t)n, sizeof *ids);
    if (!ids) die("out of memory");
    int batches = (n + opt.batch - 1) / opt.batch;
    int k = opt.clients < batches ? opt.clients : batches;
    bulker *b = calloc((size_t)k, sizeof *b);
    if (!b) die("out of memory");
    atomic_int next = 0;
    double t0 = now_s();
    for (int i = 0; i < k; i++) {
        b[i] = (bulker){.agent_id = agent_id, .ids = ids, .next = &next, .n = n};
        pthread_create(&b[i].th, NULL, bulker_main, &b[i]);
    }
    int errors = 0, calls = 0;
    for (int i = 0; i < k; i++) {
        pthread_join(b[i].th, NULL);
        if (b[i].errors && !errors) fprintf(stderr, "bench_engine: CreateTasks failed: %s\n", b[i].first_error);
        errors += b[i].errors;
        calls += b[i].calls;
    }
    double create_s = now_s() - t0;
    free(b);
    if (errors) die("%d of %d CreateTasks calls failed", errors, calls);
    fprintf(stderr,
            "bench_engine: bulk: created %d tasks in %.3f s with %d CreateTasks calls of up to %d "
            "from %d clients = %.0f tasks/s created (%.1f ms per call)\n",
            n, create_s, calls, opt.batch, k, n / create_s, create_s * 1000 * k / calls);
    Agentz__V1__TaskStats *s = wait_finished(c, agent_id, 1 + n, opt.timeout_s, "bulk");
    double wall = now_s() - t0;
    long failed = (long)s->failed, cancelled = (long)s->cancelled;
    protobuf_c_message_free_unpacked(&s->base, NULL);
    qsort(ids, (size_t)n, sizeof *ids, cmp_id);
    idset set = {.ids = ids, .n = n};
    list_tasks(c, agent_id, in_set, &set);
    times tm = set.tm;
    if (tm.succeeded != (size_t)n)
        die("%zu of %d bulk tasks succeeded (%ld failed, %ld cancelled)", tm.succeeded, n, failed,
            cancelled);
    qsort(tm.q2s, tm.n, sizeof *tm.q2s, cmp_double);
    double server_span = tm.max_end - tm.min_create;
    double tps = n / wall, server_tps = server_span > 0 ? n / server_span : 0;
    fprintf(stderr,
            "bench_engine: bulk: %d tasks in %.2f s = %.0f tasks/s end to end "
            "(server clock, first create to last end: %.2f s = %.0f tasks/s)\n"
            "bench_engine: queue-to-start under the burst: p50 %.1f ms, p99 %.1f ms, max %.1f ms\n"
            "bench_engine: CreateTasks rate: %.0f tasks/s; fake LLM calls: %zu\n",
            n, wall, tps, server_span, server_tps, pct(tm.q2s, tm.n, 50) * 1000,
            pct(tm.q2s, tm.n, 99) * 1000, tm.q2s[tm.n - 1] * 1000, n / create_s,
            fakellm_count(fake, model));
    json_object_set_new(out, "tasks", json_integer(n));
    json_object_set_new(out, "batch", json_integer(opt.batch));
    json_object_set_new(out, "clients", json_integer(k));
    json_object_set_new(out, "calls", json_integer(calls));
    json_object_set_new(out, "create_s", json_real(create_s));
    json_object_set_new(out, "create_per_s", json_real(n / create_s));
    json_object_set_new(out, "wall_s", json_real(wall));
    json_object_set_new(out, "tasks_per_s", json_real(tps));
    json_object_set_new(out, "server_span_s", json_real(server_span));
    json_object_set_new(out, "server_tasks_per_s", json_real(server_tps));
    json_object_set_new(out, "q2s_p50_ms", json_real(pct(tm.q2s, tm.n, 50) * 1000));
    json_object_set_new(out, "q2s_p99_ms", json_real(pct(tm.q2s, tm.n, 99) * 1000));
    json_object_set_new(out, "q2s_max_ms", json_real(tm.q2s[tm.n - 1] * 1000));
    json_object_set_new(out, "llm_calls", json_integer((json_int_t)fakellm_count(fake, model)));
    free(tm.q2s);
    free(ids);
    az_conn_free(c);
    return 0;
}

/* ---------------------------------------------------------------- main */

static void usage(FILE *f)
{
    fprintf(f,
            "usage: bench_engine --scenario throughput|slowcalls|drain|bulk [--agentzd PATH] [--data-dir DIR]\n"
            "                    [--tasks N] [--clients N] [--batch N] [--idle-samples N]\n"
            "                    [--delay-ms MS] [--chunk-delay-ms MS] [--worker-concurrency N]\n"
            "                    [--workers N] [--timeout-s S] [--json] [--keep]\n"
            "  --agentzd PATH           the server binary (default $AGENTZD, else build/bin/agentzd)\n"
            "  --data-dir DIR           where agentzd keeps its data and log (default: a fresh\n"
            "                           /tmp/agentz-bench-engine.* removed at the end)\n"
            "  --tasks N                tasks in the burst (throughput and drain 2000, slowcalls 5000,\n"
            "                           bulk 10000)\n"
            "  --clients N              gRPC client threads creating and cancelling (default 16)\n"
            "  --batch N                bulk: tasks per CreateTasks call, 1..1000 (default 1000)\n"
            "  --idle-samples N         throughput: tasks run one at a time first (default 20)\n"
            "  --delay-ms MS            slowcalls: the fake waits this long before the response\n"
            "                           headers (default 180000: longer than creating the\n"
            "                           tasks takes; 0 with --chunk-delay-ms)\n"
            "  --chunk-delay-ms MS      slowcalls: pause between streamed chunks (default 0)\n"
            "  --worker-concurrency N   AGENTZ_WORKER_CONCURRENCY (slowcalls default: --tasks)\n"
            "  --workers N              drain: worker processes started on the queue (default 1)\n"
            "  --timeout-s S            give up after S seconds (default 600)\n"
            "Exits 0 when the scenario completed, 1 otherwise.\n");
}

static int int_opt(const char *name, const char *v, int min)
{
    char *end;
    long n = strtol(v, &end, 10);
    if (*end || end == v || n < min || n > 100000000L) {
        fprintf(stderr, "bench_engine: --%s: must be an integer >= %d\n", name, min);
        exit(2);
    }
    return (int)n;
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"scenario", required_argument, 0, 's'},   {"agentzd", required_argument, 0, 'a'},
        {"data-dir", required_argument, 0, 'd'},   {"tasks", required_argument, 0, 'n'},
        {"clients", required_argument, 0, 'c'},    {"idle-samples", required_argument, 0, 'i'},
        {"delay-ms", required_argument, 0, 'D'},   {"chunk-delay-ms", required_argument, 0, 'C'},
        {"worker-concurrency", required_argument, 0, 'w'}, {"workers", required_argument, 0, 'W'},
        {"timeout-s", required_argument, 0, 't'},  {"json", no_argument, 0, 'j'},
        {"batch", required_argument, 0, 'b'},
        {"keep", no_argument, 0, 'k'},             {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    int have_sc = 0, ch;
    while ((ch = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (ch) {
        case 's':
            for (size_t i = 0; i < sizeof SCENARIOS / sizeof *SCENARIOS; i++)
                if (strcmp(optarg, SCENARIOS[i]) == 0) {
                    opt.sc = (scenario)i;
                    have_sc = 1;
                }
            if (!have_sc) {
                fprintf(stderr, "bench_engine: --scenario: use throughput, slowcalls, drain or bulk\n");
                return 2;
            }
            break;
        case 'a': opt.agentzd = optarg; break;
        case 'd': opt.data_dir = optarg; break;
        case 'n': opt.tasks = int_opt("tasks", optarg, 1); break;
        case 'c': opt.clients = int_opt("clients", optarg, 1); break;
        case 'i': opt.idle_samples = int_opt("idle-samples", optarg, 1); break;
        case 'D': opt.delay_ms = int_opt("delay-ms", optarg, 0); break;
        case 'C': opt.chunk_delay_ms = int_opt("chunk-delay-ms", optarg, 0); break;
        case 'w': opt.worker_concurrency = int_opt("worker-concurrency", optarg, 1); break;
        case 'W': opt.workers = int_opt("workers", optarg, 1); break;
        case 'b': opt.batch = int_opt("batch", optarg, 1); break;
        case 't': opt.timeout_s = int_opt("timeout-s", optarg, 1); break;
        case 'j': opt.json = 1; break;
        case 'k': opt.keep = 1; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (opt.batch > 1000) {
        fprintf(stderr, "bench_engine: --batch: at most 1000 (CreateTasks' limit)\n");
        return 2;
    }
    if (opt.workers > MAX_WORKERS) {
        fprintf(stderr, "bench_engine: --workers: at most %d\n", MAX_WORKERS);
        return 2;
    }
    if (!have_sc || optind < argc) {
        usage(stderr);
        return 2;
    }
    if (!opt.agentzd) opt.agentzd = getenv("AGENTZD") ? getenv("AGENTZD") : "build/bin/agentzd";
    if (access(opt.agentzd, X_OK) != 0) {
        fprintf(stderr, "bench_engine: %s is not executable (build agentzd or pass --agentzd)\n",
                opt.agentzd);
        return 2;
    }
    if (opt.tasks < 0) opt.tasks = opt.sc == SC_SLOWCALLS ? 5000 : opt.sc == SC_BULK ? 10000 : 2000;
    if (opt.delay_ms < 0) opt.delay_ms = opt.sc == SC_SLOWCALLS && !opt.chunk_delay_ms ? 180000 : 0;
    if (opt.worker_concurrency < 0 && opt.sc == SC_SLOWCALLS) opt.worker_concurrency = opt.tasks;

    /* Thousands of sockets on both sides: agentzd inherits the raised limit. */
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    signal(SIGPIPE, SIG_IGN);

    if (opt.data_dir) {
        snprintf(base_dir, sizeof base_dir, "%s", opt.data_dir);
        mkdir(base_dir, 0755);
    } else {
        snprintf(base_dir, sizeof base_dir, "/tmp/agentz-bench-engine.XXXXXX");
        if (!mkdtemp(base_dir)) {
            fprintf(stderr, "bench_engine: mkdtemp: %s\n", strerror(errno));
            return 1;
        }
    }
    /* The embedded PostgreSQL runs as the postgres user when we are root: it must reach in. */
    chmod(base_dir, 0755);

    char uuid[37];
    if (az_text_uuid4(uuid) != AZ_OK) die("cannot generate a run id");
    snprintf(model, sizeof model, "bench-%.8s", uuid);
    if (!(fake = fakellm_start())) die("cannot start the fake LLM");
    start_api(opt.sc == SC_DRAIN ? "api" : "api,worker", opt.worker_concurrency);
    fprintf(stderr, "bench_engine: agentzd pid %d at %s, fake LLM at %s, data in %s\n", (int)child,
            target, fakellm_base_url(fake), base_dir);

    json_t *out = json_pack("{s:s}", "scenario", SCENARIOS[opt.sc]);
    static int (*const run[])(json_t *) = {
        [SC_THROUGHPUT] = throughput, [SC_SLOWCALLS] = slowcalls, [SC_DRAIN] = drain, [SC_BULK] = bulk};
    int rc = run[opt.sc](out);

    int exit_status = 0;
    stop_proc(&child, SIGTERM, 60, &exit_status);
    json_object_set_new(out, "agentzd_exit", json_integer(exit_status));
    if (exit_status != 0) {
        fprintf(stderr, "bench_engine: agentzd exited %d after SIGTERM (log in %s/agentzd.log)\n",
                exit_status, base_dir);
        rc = 1;
    }
    fakellm_stop(fake);
    fake = NULL;
    if (opt.json) {
        char *s = json_dumps(out, JSON_COMPACT | JSON_REAL_PRECISION(6));
        printf("%s\n", s);
        free(s);
    }
    json_decref(out);
    if (!opt.keep && !opt.data_dir) cleanup_dir();
    else if (opt.keep) fprintf(stderr, "bench_engine: kept %s\n", base_dir);
    return rc;
}
