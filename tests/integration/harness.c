/* Starts and stops agentzd for integration suites, reading its ready line from stdout. */
#include "harness.h"

#include <CUnit/Basic.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <hiredis/hiredis.h>

#include "agentz/v1/agent.pb-c.h"
#include "agentz/v1/task.pb-c.h"
#include "agentz/v1/workflow.pb-c.h"
#include "core/text.h"

static const char *env_or(const char *k, const char *def)
{
    const char *v = getenv(k);
    return v && *v ? v : def;
}

static void mkdirs(const char *path)
{
    char buf[512];
    snprintf(buf, sizeof buf, "%s", path);
    for (char *p = buf + 1; *p; p++) {
        if (*p == '/') {
            *p = '\0';
            mkdir(buf, 0755);
            *p = '/';
        }
    }
    mkdir(buf, 0755);
    chmod(buf, 0755);
}

void az_itest_dump_log(const az_itest_server *s, int lines)
{
    az_itest_dump_log_except(s, lines, NULL);
}

void az_itest_dump_log_except(const az_itest_server *s, int lines, const char *skip)
{
    FILE *f = fopen(s->log_path, "r");
    if (!f) return;
    char *ring[200] = {0};
    if (lines > 200) lines = 200;
    if (lines < 1) lines = 1;
    char buf[4096];
    int n = 0;
    while (fgets(buf, sizeof buf, f)) {
        if (skip && *skip && strstr(buf, skip)) continue;
        free(ring[n % lines]);
        ring[n % lines] = strdup(buf);
        n++;
    }
    fclose(f);
    fprintf(stderr, "---- last lines of %s ----\n", s->log_path);
    for (int i = n > lines ? n - lines : 0; i < n; i++) fputs(ring[i % lines], stderr);
    for (int i = 0; i < lines; i++) free(ring[i]);
}

/* Reads <data_dir>/admin.key into s->admin_key (trailing whitespace removed); 1 when there
 * is a key. */
static int read_admin_key(az_itest_server *s)
{
    char path[600];
    snprintf(path, sizeof path, "%s/admin.key", s->data_dir);
    s->admin_key[0] = '\0';
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    size_t n = fread(s->admin_key, 1, sizeof s->admin_key - 1, f);
    fclose(f);
    while (n && strchr(" \t\r\n", s->admin_key[n - 1])) n--;
    s->admin_key[n] = '\0';
    return n > 0;
}

/* The key is written before the ready line, but a slow disk or a future server that writes it
 * later must not make suites flaky. Waiting only when the server refuses an unauthenticated
 * call keeps servers without authentication (no key, ever) from paying for the wait. */
static void load_admin_key(az_itest_server *s)
{
    if (read_admin_key(s)) return;
    az_conn *c = az_itest_connect_token(s, NULL);
    Agentz__V1__ListAgentsRequest req = AGENTZ__V1__LIST_AGENTS_REQUEST__INIT;
    req.page_size = 1;
    int status = 0;
    az_conn_unary(c, "/agentz.v1.AgentService/ListAgents", &req.base,
                  &agentz__v1__list_agents_response__descriptor, 10000, NULL, NULL, &status, NULL);
    az_conn_free(c);
    if (status != 16 /* UNAUTHENTICATED */) return;
    for (int i = 0; i < 100; i++) {
        usleep(50 * 1000);
        if (read_admin_key(s)) return;
    }
    fprintf(stderr, "agentzd enforces authentication but wrote no %s/admin.key within 5 s\n",
            s->data_dir);
}

int az_itest_start(az_itest_server *s, const char *name, const char *const *extra_args)
{
    return az_itest_start_on(s, name, NULL, extra_args);
}

int az_itest_start_on(az_itest_server *s, const char *name, const char *data_dir,
                      const char *const *extra_args)
{
    memset(s, 0, sizeof *s);
    const char *bin = env_or("AGENTZD", "build/bin/agentzd");
    const char *root = env_or("AGENTZ_TEST_DIR", "build/itest");
    mkdirs(root);
    if (data_dir) snprintf(s->data_dir, sizeof s->data_dir, "%s", data_dir);
    else snprintf(s->data_dir, sizeof s->data_dir, "%s/%s", root, name);
    snprintf(s->log_path, sizeof s->log_path, "%s/%s.log", root, name);
    int out[2];
    if (pipe(out) != 0) return -1;
    pid_t pid = fork();
    if (pid < 0) return -1;
    if (pid == 0) {
        int log = open(s->log_path, O_WRONLY | O_CREAT | O_APPEND, 0644);
        dup2(out[1], 1);
        if (log >= 0) dup2(log, 2);
        close(out[0]);
        const char *argv[32] = {bin, "--data-dir", s->data_dir, "--listen", "127.0.0.1:0"};
        int argc = 5;
        for (int i = 0; extra_args && extra_args[i] && argc < 31; i++) argv[argc++] = extra_args[i];
        argv[argc] = NULL;
        /* Tests always use the embedded stack, whatever the caller's environment says. */
        unsetenv("AGENTZ_DATABASE_URL");
        unsetenv("AGENTZ_REDIS_URL");
        /* Suites fire bursts of calls; rate limits are tested where a suite sets them itself. */
        setenv("AGENTZ_RATE_LIMIT", "0", 0);
        setenv("AGENTZ_RATE_LIMIT_WORKSPACE", "0", 0);
        setenv("AGENTZ_RATE_LIMIT_EXPENSIVE", "0", 0);
        execv(bin, (char *const *)argv);
        fprintf(stderr, "cannot exec %s: %s\n", bin, strerror(errno));
        _exit(127);
    }
    close(out[1]);
    s->pid = pid;
    char line[512];
    size_t len = 0;
    time_t until = time(NULL) + 120;
    while (time(NULL) < until) {
        struct pollfd p = {out[0], POLLIN, 0};
        if (poll(&p, 1, 1000) <= 0) continue;
        ssize_t n = read(out[0], line + len, sizeof line - 1 - len);
        if (n <= 0) break;
        len += (size_t)n;
        line[len] = '\0';
        char *at = strstr(line, "gRPC at ");
        if (at && strchr(at, '\n')) {
            sscanf(at + 8, "%63s", s->target);
            close(out[0]);
            load_admin_key(s);
            return 0;
        }
        if (len >= sizeof line - 1) len = 0;
    }
    close(out[0]);
    fprintf(stderr, "agentzd did not become ready\n");
    az_itest_dump_log(s, 40);
    az_itest_stop(s, SIGKILL, 10);
    return -1;
}

int az_itest_stop(az_itest_server *s, int sig, int timeout_s)
{
    if (s->pid <= 0) return -1;
    kill(s->pid, sig);
    for (int i = 0; i < timeout_s * 10; i++) {
        int st;
        pid_t r = waitpid(s->pid, &st, WNOHANG);
        if (r == s->pid) {
            s->pid = 0;
            if (WIFEXITED(st)) return WEXITSTATUS(st);
            return 128 + WTERMSIG(st);
        }
        usleep(100 * 1000);
    }
    kill(s->pid, SIGKILL);
    waitpid(s->pid, NULL, 0);
    s->pid = 0;
    return -1;
}

az_conn *az_itest_connect(const az_itest_server *s)
{
    return az_itest_connect_token(s, az_itest_admin_key(s));
}

const char *az_itest_admin_key(const az_itest_server *s)
{
    return s->admin_key[0] ? s->admin_key : NULL;
}

az_conn *az_itest_connect_token(const az_itest_server *s, const char *token)
{
    az_conn_opts o = {.target = s->target, .token = token};
    az_conn *c;
    char msg[AZ_MSG_MAX];
    if (az_conn_open(&o, &c, msg) != AZ_OK) {
        fprintf(stderr, "cannot connect to %s: %s\n", s->target, msg);
        abort();
    }
    return c;
}

az_redis *az_itest_redis(const az_itest_server *s)
{
    char path[700], dir[600] = "";
    snprintf(path, sizeof path, "%s/run/socket_dir", s->data_dir);
    FILE *f = fopen(path, "r");
    if (f) {
        if (!fgets(dir, sizeof dir, f)) dir[0] = '\0';
        fclose(f);
        dir[strcspn(dir, "\n")] = '\0';
    }
    char url[800];
    if (*dir) snprintf(url, sizeof url, "unix://%s/redis.sock", dir);
    else snprintf(url, sizeof url, "unix://%s/run/redis.sock", s->data_dir);
    az_redis *r = NULL;
    char msg[AZ_MSG_MAX];
    if (az_redis_new(url, 5000, &r, msg) != AZ_OK) fprintf(stderr, "redis %s: %s\n", url, msg);
    return r;
}

const char *az_itest_unique(void)
{
    static char buf[16][40];
    static int next;
    char *out = buf[next++ % 16];
    char uuid[37];
    az_text_uuid4(uuid);
    snprintf(out, 40, "%.8s%.4s", uuid, uuid + 9);
    return out;
}

int az_itest_run_cunit(void)
{
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    int failures = (int)CU_get_number_of_failures();
    int errors = CU_get_error();
    CU_cleanup_registry();
    return failures || errors ? 1 : 0;
}

/* ---------------------------------------------------------------- watch streams */

static double mono_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

int az_itest_watch_open(az_itest_watch *w, az_conn *c, const char *method,
                        const ProtobufCMessage *req, int timeout_ms)
{
    az_itest_watch_cancel(w);
    w->ended = 0;
    w->status = 0;
    w->msg[0] = '\0';
    int st = 0;
    if (az_conn_stream_open(c, method, req, &agentz__v1__event__descriptor, timeout_ms, NULL,
                            &w->stream, &st, w->msg) != AZ_OK) {
        w->stream = NULL;
        w->ended = 1;
        w->status = st ? st : 2 /* UNKNOWN */;
        return w->status;
    }
    return 0;
}

int az_itest_watch_run(az_itest_watch *w, az_conn *c, const char *run_id, int64_t after,
                       int include_tokens, int timeout_ms)
{
    Agentz__V1__WatchRunRequest req = AGENTZ__V1__WATCH_RUN_REQUEST__INIT;
    req.run_id = (char *)run_id;
    req.after_sequence = after;
    req.include_tokens = include_tokens;
    return az_itest_watch_open(w, c, "/agentz.v1.WorkflowService/WatchRun", &req.base, timeout_ms);
}

int az_itest_watch_task(az_itest_watch *w, az_conn *c, const char *task_id, int64_t after,
                        int include_tokens, int timeout_ms)
{
    Agentz__V1__WatchTaskRequest req = AGENTZ__V1__WATCH_TASK_REQUEST__INIT;
    req.task_id = (char *)task_id;
    req.after_sequence = after;
    req.include_tokens = include_tokens;
    return az_itest_watch_open(w, c, "/agentz.v1.TaskService/WatchTask", &req.base, timeout_ms);
}

int az_itest_watch_agents(az_itest_watch *w, az_conn *c, const char *agent_id, int64_t after,
                          int timeout_ms)
{
    Agentz__V1__WatchAgentsRequest req = AGENTZ__V1__WATCH_AGENTS_REQUEST__INIT;
    char *ids[1] = {(char *)agent_id};
    if (agent_id) {
        req.agent_ids = ids;
        req.n_agent_ids = 1;
    }
    req.after_sequence = after;
    return az_itest_watch_open(w, c, "/agentz.v1.AgentService/WatchAgents", &req.base, timeout_ms);
}

int az_itest_watch_next(az_itest_watch *w)
{
    if (w->ended || !w->stream) return 0;
    ProtobufCMessage *m = NULL;
    int st = 0;
    char msg[AZ_MSG_MAX] = "";
    az_conn_stream_next(w->stream, &m, &st, msg);
    if (!m) {
        w->ended = 1;
        w->status = st;
        snprintf(w->msg, sizeof w->msg, "%s", msg);
        az_conn_stream_close(w->stream);
        w->stream = NULL;
        return 0;
    }
    if (w->n == w->cap) {
        size_t cap = w->cap ? w->cap * 2 : 64;
        Agentz__V1__Event **ev = realloc(w->ev, cap * sizeof *ev);
        double *at = ev ? realloc(w->at, cap * sizeof *at) : NULL;
        if (!ev || !at) {
            fprintf(stderr, "watch: out of memory\n");
            abort();
        }
        w->ev = ev;
        w->at = at;
        w->cap = cap;
    }
    Agentz__V1__Event *e = (Agentz__V1__Event *)m;
    w->at[w->n] = mono_s();
    w->ev[w->n++] = e;
    if (e->sequence > 0) {
        w->durable++;
        w->last_seq = e->sequence;
    }
    return 1;
}

int az_itest_watch_read(az_itest_watch *w, size_t until_durable)
{
    while (!w->ended && (!until_durable || w->durable < until_durable))
        if (!az_itest_watch_next(w)) break;
    return w->ended;
}

void az_itest_watch_cancel(az_itest_watch *w)
{
    if (!w->stream) return;
    az_conn_stream_close(w->stream);
    w->stream = NULL;
}

void az_itest_watch_free(az_itest_watch *w)
{
    az_itest_watch_cancel(w);
    for (size_t i = 0; i < w->n; i++) protobuf_c_message_free_unpacked(&w->ev[i]->base, NULL);
    free(w->ev);
    free(w->at);
    memset(w, 0, sizeof *w);
}

/* ---------------------------------------------------------------- the embedded Redis */

/* The Redis socket of s, as az_itest_redis finds it. */
static void redis_sock_path(const az_itest_server *s, char *out, size_t len)
{
    char path[700], dir[600] = "";
    snprintf(path, sizeof path, "%s/run/socket_dir", s->data_dir);
    FILE *f = fopen(path, "r");
    if (f) {
        if (!fgets(dir, sizeof dir, f)) dir[0] = '\0';
        fclose(f);
        dir[strcspn(dir, "\n")] = '\0';
    }
    if (*dir) snprintf(out, len, "%s/redis.sock", dir);
    else snprintf(out, len, "%s/run/redis.sock", s->data_dir);
}

static int config_get(redisContext *c, const char *key, char *out, size_t len)
{
    redisReply *r = redisCommand(c, "CONFIG GET %s", key);
    int ok = r && r->type == REDIS_REPLY_ARRAY && r->elements == 2 &&
             r->element[1]->type == REDIS_REPLY_STRING;
    if (ok) snprintf(out, len, "%s", r->element[1]->str);
    else fprintf(stderr, "redis: CONFIG GET %s failed\n", key);
    freeReplyObject(r);
    return ok ? 0 : -1;
}

int az_itest_redis_stop(const az_itest_server *s, az_itest_redis_conf *conf)
{
    memset(conf, 0, sizeof *conf);
    char sock[700];
    redis_sock_path(s, sock, sizeof sock);
    struct timeval tv = {5, 0};
    redisContext *c = redisConnectUnixWithTimeout(sock, tv);
    if (!c || c->err) {
        fprintf(stderr, "redis: cannot connect to %s: %s\n", sock, c ? c->errstr : "out of memory");
        redisFree(c);
        return -1;
    }
    redisSetTimeout(c, tv);
    if (config_get(c, "unixsocket", conf->sock, sizeof conf->sock) ||
        config_get(c, "dir", conf->dir, sizeof conf->dir) ||
        config_get(c, "logfile", conf->logfile, sizeof conf->logfile) ||
        config_get(c, "pidfile", conf->pidfile, sizeof conf->pidfile) ||
        config_get(c, "appendonly", conf->appendonly, sizeof conf->appendonly) ||
        config_get(c, "save", conf->save, sizeof conf->save)) {
        redisFree(c);
        return -1;
    }
    /* On success Redis closes the connection without a reply. */
    redisReply *r = redisCommand(c, "SHUTDOWN SAVE");
    int ok = !r && c->err == REDIS_ERR_EOF;
    if (!ok) fprintf(stderr, "redis: SHUTDOWN SAVE was not accepted: %s\n",
                     r && r->type == REDIS_REPLY_ERROR ? r->str : c->errstr);
    freeReplyObject(r);
    redisFree(c);
    if (!ok) return -1;
    for (int i = 0; i < 100; i++) {
        redisContext *p = redisConnectUnixWithTimeout(conf->sock, tv);
        int refused = !p || p->err;
        redisFree(p);
        if (refused) return 0;
        usleep(50 * 1000);
    }
    fprintf(stderr, "redis: %s still accepts connections 5 s after SHUTDOWN\n", conf->sock);
    return -1;
}

int az_itest_redis_start(const az_itest_redis_conf *conf)
{
    pid_t pid = fork();
    if (pid < 0) return -1;
    if (pid == 0) {
        int devnull = open("/dev/null", O_RDWR);
        if (devnull >= 0) {
            dup2(devnull, 0);
            dup2(devnull, 1);
        }
        execlp("redis-server", "redis-server", "--port", "0", "--unixsocket", conf->sock,
               "--unixsocketperm", "700", "--dir", conf->dir, "--appendonly", conf->appendonly,
               "--save", conf->save, "--daemonize", "yes", "--logfile", conf->logfile,
               "--pidfile", conf->pidfile, (char *)NULL);
        fprintf(stderr, "cannot exec redis-server: %s\n", strerror(errno));
        _exit(127);
    }
    int st = 0;
    waitpid(pid, &st, 0);
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        fprintf(stderr, "redis-server --daemonize yes exited with status %d\n", st);
        return -1;
    }
    struct timeval tv = {2, 0};
    for (int i = 0; i < 200; i++) {
        redisContext *c = redisConnectUnixWithTimeout(conf->sock, tv);
        if (c && !c->err) {
            redisSetTimeout(c, tv);
            redisReply *r = redisCommand(c, "PING");
            int up = r && r->type == REDIS_REPLY_STATUS && strcmp(r->str, "PONG") == 0;
            freeReplyObject(r);
            redisFree(c);
            if (up) return 0;
        } else {
            redisFree(c);
        }
        usleep(50 * 1000);
    }
    fprintf(stderr, "redis on %s did not answer PING within 10 s of its restart\n", conf->sock);
    return -1;
}
