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

#include "agentz/v1/agent.pb-c.h"
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
