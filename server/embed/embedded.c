/* The embedded default: a private PostgreSQL 15 cluster and redis-server under one data dir, started
 * (or reused after a crash) by agentzd and stopped by it. PostgreSQL refuses to run as root, so when
 * agentzd is root the cluster runs as the postgres system user through runuser. */
#include "embedded.h"

#include <errno.h>
#include <fcntl.h>
#include <hiredis/hiredis.h>
#include <libpq-fe.h>
#include <limits.h>
#include <locale.h>
#include <pwd.h>
#include <signal.h>
#include <spawn.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "../core/log.h"

extern char **environ;

#define PG_BIN "/usr/lib/postgresql/15/bin"
#define PG_PORT "5432"
#define PG_USER "agentz" /* the bootstrap superuser initdb creates; trust auth over a 0700 socket */
#define PG_DB "agentz"
#define PG_SOCK_NAME ".s.PGSQL." PG_PORT
#define REDIS_SOCK_NAME "redis.sock"
#define START_TIMEOUT_MS 10000 /* redis readiness */
#define STOP_TIMEOUT_MS 10000  /* each server's exit after it was asked to stop */
#define TAIL_LINES 5
#define TAIL_MAX 300 /* bytes of log tail in msg; the rest of AZ_MSG_MAX says what failed */
#define ARCHIVE_RECORD "wal_archive_dir" /* DATA/wal_archive_dir: where this cluster archives WAL */
#define ARCHIVE_TIMEOUT_DEFAULT_S 60     /* AGENTZ_WAL_ARCHIVE_TIMEOUT's default */

struct az_embed {
    char dir[PATH_MAX];       /* absolute data dir */
    char pg_dir[PATH_MAX];    /* DATA/pg: the cluster */
    char run_dir[PATH_MAX];   /* DATA/run: sockets (unless too long) and redis.pid */
    char log_dir[PATH_MAX];   /* DATA/log */
    char redis_dir[PATH_MAX]; /* DATA/redis: RDB and AOF */
    char sock_dir[PATH_MAX];  /* run_dir, or /tmp/agentz-<hash> when run_dir is too long */
    char redis_sock[PATH_MAX];
    char db_url[PATH_MAX * 3 + 64];
    char redis_url[PATH_MAX + 16];
    int lock_fd;
    int as_postgres; /* we are root: PostgreSQL programs run via runuser -u postgres */
    uid_t pg_uid;    /* the account PostgreSQL runs as */
    gid_t pg_gid;
    pid_t pg_pid;       /* postmaster, from postmaster.pid; 0 if unknown */
    int pg_running;     /* ours to stop */
    int pg_started;     /* started by this process (not reused) */
    pid_t redis_pid;    /* 0 if unknown */
    int redis_running;  /* ours to stop */
    int redis_is_child; /* spawned by us: reap with waitpid */
    int tmp_sock_dir;   /* sock_dir is our /tmp/agentz-<hash>, removed when empty at stop */
    char wal_dir[PATH_MAX]; /* WAL archive ("" = archiving off) */
    int archive_timeout_s;
};

/* Subdirectories of DATA, all 0700. Those PostgreSQL writes are owned by its account. */
static const struct subdir {
    const char *name;
    size_t off;
    int pg_owned;
} subdirs[] = {
    {"pg", offsetof(az_embed, pg_dir), 1},
    {"run", offsetof(az_embed, run_dir), 1},
    {"log", offsetof(az_embed, log_dir), 1},
    {"redis", offsetof(az_embed, redis_dir), 0},
};

/* Where runuser lives; root's PATH does not always include sbin. */
static const char *const runuser_paths[] = {"/usr/sbin/runuser", "/sbin/runuser", "/usr/bin/runuser"};

/* ---- small helpers ---- */

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* Writes a/b into dst (PATH_MAX); -1 if it does not fit. (Not snprintf: dst may live in the same
 * struct as a, which gcc -O2 flags as a possible overlap.) */
static int join(char *dst, const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    if (la + 1 + lb >= PATH_MAX) return -1;
    memmove(dst, a, la);
    dst[la] = '/';
    memmove(dst + la + 1, b, lb + 1);
    return 0;
}

static uint32_t fnv1a(const char *s)
{
    uint32_t h = 2166136261u;
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 16777619u;
    }
    return h;
}

static off_t file_size(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 ? st.st_size : 0;
}

/* Reads the first line of path as a pid; 0 if missing or malformed. */
static pid_t read_pid(const char *path)
{
    FILE *f = fopen(path, "re");
    if (!f) return 0;
    long pid = 0;
    if (fscanf(f, "%ld", &pid) != 1 || pid <= 0 || pid > INT_MAX) pid = 0;
    fclose(f);
    return (pid_t)pid;
}

/* Process state letter from /proc/PID/stat ('Z' zombie), or 0 if unreadable. */
static char proc_state(pid_t pid)
{
    char path[64], buf[512];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "re");
    if (!f) return 0;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    char *p = strrchr(buf, ')'); /* comm may contain spaces and parentheses */
    return p && p[1] == ' ' ? p[2] : 0;
}

/* A zombie has exited; whoever its parent is will reap it. */
static int alive(pid_t pid)
{
    if (pid <= 0) return 0;
    if (kill(pid, 0) != 0 && errno != EPERM) return 0;
    return proc_state(pid) != 'Z';
}

/* The command name of pid (/proc/PID/comm) into buf; "" if unknown. */
static void proc_comm(pid_t pid, char *buf, size_t cap)
{
    char path[64];
    buf[0] = '\0';
    snprintf(path, sizeof path, "/proc/%d/comm", (int)pid);
    FILE *f = fopen(path, "re");
    if (!f) return;
    if (fgets(buf, (int)cap, f)) buf[strcspn(buf, "\n")] = '\0';
    fclose(f);
}

/* The last TAIL_LINES non-empty lines written to path after offset `from`, joined with " | " and
 * cut from the front to fit TAIL_MAX, so a failure message carries the server's own reason. */
static void log_tail(const char *path, off_t from, char *out, size_t cap)
{
    char chunk[4097], joined[4200];
    out[0] = '\0';
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return;
    struct stat st;
    off_t start = 0;
    if (fstat(fd, &st) == 0) start = st.st_size - (off_t)(sizeof chunk - 1);
    if (start < from) start = from;
    if (start < 0) start = 0;
    ssize_t n = pread(fd, chunk, sizeof chunk - 1, start);
    close(fd);
    if (n <= 0) return;
    chunk[n] = '\0';
    char *p = chunk;
    if (start > from) { /* began mid-line */
        char *nl = strchr(p, '\n');
        p = nl ? nl + 1 : p + n;
    }
    char *lines[TAIL_LINES];
    size_t count = 0;
    for (char *save = NULL, *line = strtok_r(p, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        for (char *c = line; *c; c++)
            if ((unsigned char)*c < 0x20) *c = ' ';
        if (line[strspn(line, " ")] == '\0') continue;
        lines[count % TAIL_LINES] = line;
        count++;
    }
    size_t first = count > TAIL_LINES ? count - TAIL_LINES : 0, len = 0;
    joined[0] = '\0';
    for (size_t i = first; i < count; i++) {
        int w = snprintf(joined + len, sizeof joined - len, "%s%s", i > first ? " | " : "",
                         lines[i % TAIL_LINES]);
        if (w < 0 || (size_t)w >= sizeof joined - len) break;
        len += (size_t)w;
    }
    size_t limit = cap - 1 < TAIL_MAX ? cap - 1 : TAIL_MAX;
    if (len > limit)
        snprintf(out, cap, "...%s", joined + len - (limit - 3));
    else
        snprintf(out, cap, "%s", joined);
}

/* mkdir -p with mode for the directories it creates. */
static int mkdir_p(const char *path, mode_t mode)
{
    char buf[PATH_MAX];
    if (snprintf(buf, sizeof buf, "%s", path) >= (int)sizeof buf) {
        errno = ENAMETOOLONG;
        return -1;
    }
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/') continue;
        *p = '\0';
        if (mkdir(buf, mode) != 0 && errno != EEXIST) return -1;
        *p = '/';
    }
    if (mkdir(buf, mode) != 0 && errno != EEXIST) return -1;
    struct stat st;
    if (stat(buf, &st) != 0) return -1;
    if (!S_ISDIR(st.st_mode)) {
        errno = ENOTDIR;
        return -1;
    }
    return 0;
}

/* ---- running programs ---- */

/* A NULL-terminated argv built in place; strings are borrowed. */
typedef struct argv_buf {
    const char *v[40];
    size_t n;
} argv_buf;

/* Appends a NULL-terminated list of arguments. */
static void args(argv_buf *a, const char *const *list)
{
    for (; *list; list++)
        if (a->n + 1 < sizeof a->v / sizeof a->v[0]) a->v[a->n++] = *list;
    a->v[a->n] = NULL;
}

/* Starts argv (PATH search) in its own session, so the terminal's Ctrl-C reaches agentzd only and
 * agentzd stops the servers itself, in order. stdin is /dev/null, stdout and stderr append to
 * out_path, the working directory is "/" (the postgres user may not be able to read ours), no fd
 * above 2 is inherited (the data-dir lock must die with agentzd), and signal dispositions and mask
 * are reset. Returns 0 or an errno value. */
static int spawn(const argv_buf *a, const char *out_path, pid_t *pid)
{
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t at;
    sigset_t none, all;
    int rc = posix_spawn_file_actions_init(&fa);
    if (rc) return rc;
    rc = posix_spawnattr_init(&at);
    if (rc) {
        posix_spawn_file_actions_destroy(&fa);
        return rc;
    }
    sigemptyset(&none);
    sigfillset(&all);
    if (!rc) rc = posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    if (!rc) rc = posix_spawn_file_actions_addopen(&fa, 1, out_path, O_WRONLY | O_CREAT | O_APPEND, 0600);
    if (!rc) rc = posix_spawn_file_actions_adddup2(&fa, 1, 2);
    if (!rc) rc = posix_spawn_file_actions_addchdir_np(&fa, "/");
    if (!rc) rc = posix_spawn_file_actions_addclosefrom_np(&fa, 3);
    if (!rc) rc = posix_spawnattr_setsigmask(&at, &none);
    if (!rc) rc = posix_spawnattr_setsigdefault(&at, &all);
    if (!rc)
        rc = posix_spawnattr_setflags(&at,
                                      POSIX_SPAWN_SETSID | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
    if (!rc) rc = posix_spawnp(pid, a->v[0], &fa, &at, (char *const *)a->v, environ);
    posix_spawnattr_destroy(&at);
    posix_spawn_file_actions_destroy(&fa);
    return rc;
}

static int wait_child(pid_t pid, int *status)
{
    for (;;) {
        if (waitpid(pid, status, 0) == pid) return 0;
        if (errno != EINTR) return -1;
    }
}

/* Runs argv to completion; *code is its exit code (128+signal if killed). */
static az_err run(const argv_buf *a, const char *out_path, int *code, char *msg)
{
    pid_t pid;
    int rc = spawn(a, out_path, &pid);
    if (rc) return az_fail(msg, AZ_ERR_UNAVAILABLE, "cannot run %s: %s", a->v[0], strerror(rc));
    int status = 0;
    if (wait_child(pid, &status) != 0)
        return az_fail(msg, AZ_ERR_INTERNAL, "cannot wait for %s: %s", a->v[0], strerror(errno));
    *code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + (WIFSIGNALED(status) ? WTERMSIG(status) : 0);
    return AZ_OK;
}

static const char *runuser_path(void)
{
    for (size_t i = 0; i < sizeof runuser_paths / sizeof runuser_paths[0]; i++)
        if (access(runuser_paths[i], X_OK) == 0) return runuser_paths[i];
    return "runuser";
}

/* An argv that runs list as PostgreSQL's account: prefixed with runuser when we are root. */
static void pg_cmd(const az_embed *e, argv_buf *a, const char *const *list)
{
    a->n = 0;
    if (e->as_postgres) args(a, (const char *const[]){runuser_path(), "-u", "postgres", "--", NULL});
    args(a, list);
}

/* Waits up to timeout_ms for pid to exit; 0 once gone. Reaps it if it is our child: the spawned
 * redis, or an orphaned postmaster when agentzd is PID 1 in a container (waitpid on a pid that is
 * not our child just fails with ECHILD). */
static int wait_gone(pid_t pid, int is_child, long long timeout_ms)
{
    long long deadline = now_ms() + timeout_ms;
    for (;;) {
        int status;
        pid_t r = waitpid(pid, &status, WNOHANG);
        if (r == pid || (is_child && r < 0 && errno == ECHILD)) return 0;
        if (!is_child && !alive(pid)) return 0;
        if (now_ms() >= deadline) return -1;
        sleep_ms(50);
    }
}

/* Makes sure pid is gone: after timeout_ms, SIGKILL. */
static void reap(pid_t pid, int is_child, const char *what)
{
    if (pid <= 0 || wait_gone(pid, is_child, STOP_TIMEOUT_MS) == 0) return;
    az_warn("%s (pid %d) did not exit within %d s, killing it", what, (int)pid, STOP_TIMEOUT_MS / 1000);
    kill(pid, SIGKILL);
    if (wait_gone(pid, is_child, STOP_TIMEOUT_MS) != 0)
        az_error("%s (pid %d) survived SIGKILL", what, (int)pid);
}

/* ---- data dir: layout, lock, identity, sockets ---- */

static az_err lock_dir(az_embed *e, char *msg)
{
    char path[PATH_MAX];
    if (join(path, e->dir, "agentz.lock") != 0)
        return az_fail(msg, AZ_ERR_INVALID, "data dir path is too long: %s", e->dir);
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) return az_fail(msg, AZ_ERR_IO, "cannot open %s: %s", path, strerror(errno));
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        int err = errno;
        char holder[32] = "";
        ssize_t n = pread(fd, holder, sizeof holder - 1, 0);
        close(fd);
        if (err != EWOULDBLOCK) return az_fail(msg, AZ_ERR_IO, "cannot lock %s: %s", path, strerror(err));
        holder[n > 0 ? n : 0] = '\0';
        holder[strcspn(holder, "\n")] = '\0';
        return az_fail(msg, AZ_ERR_PRECONDITION, "data dir %s is in use by another agentzd (pid %s)", e->dir,
                       holder[0] ? holder : "unknown");
    }
    char pid[32];
    int len = snprintf(pid, sizeof pid, "%d\n", (int)getpid());
    if (ftruncate(fd, 0) != 0 || pwrite(fd, pid, (size_t)len, 0) != len)
        az_warn("cannot record pid in %s: %s", path, strerror(errno));
    e->lock_fd = fd;
    return AZ_OK;
}

/* PostgreSQL runs as us, or as postgres when we are root (it refuses root). */
static az_err pick_account(az_embed *e, char *msg)
{
    if (geteuid() != 0) {
        e->pg_uid = geteuid();
        e->pg_gid = getegid();
        return AZ_OK;
    }
    struct passwd pw, *res = NULL;
    char buf[4096];
    if (getpwnam_r("postgres", &pw, buf, sizeof buf, &res) != 0 || !res)
        return az_fail(msg, AZ_ERR_PRECONDITION,
                       "cannot run postgresql as root and there is no postgres user: install postgresql-15 "
                       "(deploy/install-deps.sh) or set AGENTZ_DATABASE_URL");
    e->as_postgres = 1;
    e->pg_uid = pw.pw_uid;
    e->pg_gid = pw.pw_gid;

    argv_buf a;
    int code = 0;
    pg_cmd(e, &a, (const char *const[]){"true", NULL});
    az_err err = run(&a, "/dev/null", &code, msg);
    if (err) return err;
    if (code != 0)
        return az_fail(msg, AZ_ERR_PRECONDITION, "cannot run programs as postgres with %s (exit %d)", a.v[0],
                       code);

    /* Every parent of DATA must be searchable by postgres; /root is 0700 on Debian. */
    pg_cmd(e, &a, (const char *const[]){"test", "-x", e->dir, NULL});
    err = run(&a, "/dev/null", &code, msg);
    if (err) return err;
    if (code != 0)
        return az_fail(
            msg, AZ_ERR_PRECONDITION,
            "the postgres user cannot reach data dir %s (postgresql refuses to run as root, so the "
            "embedded cluster runs as postgres): set AGENTZ_DATA_DIR to a path it can reach, e.g. "
            "/var/lib/agentz, or configure AGENTZ_DATABASE_URL",
            e->dir);
    return AZ_OK;
}

/* Creates DATA's subdirectories 0700, owned by the account that writes them. Root may hand a
 * directory to that account, except an initialised cluster: its files would keep their old owner. */
static az_err make_layout(az_embed *e, char *msg)
{
    for (size_t i = 0; i < sizeof subdirs / sizeof subdirs[0]; i++) {
        char *path = (char *)e + subdirs[i].off;
        if (join(path, e->dir, subdirs[i].name) != 0)
            return az_fail(msg, AZ_ERR_INVALID, "data dir path is too long: %s", e->dir);
        if (mkdir(path, 0700) != 0 && errno != EEXIST)
            return az_fail(msg, AZ_ERR_IO, "cannot create %s: %s", path, strerror(errno));
        struct stat st;
        if (stat(path, &st) != 0 || !S_ISDIR(st.st_mode))
            return az_fail(msg, AZ_ERR_IO, "cannot use %s: not a directory", path);
        uid_t owner = subdirs[i].pg_owned ? e->pg_uid : geteuid();
        gid_t group = subdirs[i].pg_owned ? e->pg_gid : getegid();
        if (st.st_uid != owner) {
            char version[PATH_MAX];
            int cluster =
                path == e->pg_dir && join(version, path, "PG_VERSION") == 0 && access(version, F_OK) == 0;
            if (geteuid() != 0 || cluster)
                return az_fail(msg, AZ_ERR_PRECONDITION,
                               "%s belongs to uid %d but would be used as uid %d: run agentzd as the account "
                               "that created it (as root, postgresql runs as postgres) or use another "
                               "AGENTZ_DATA_DIR",
                               path, (int)st.st_uid, (int)owner);
            if (chown(path, owner, group) != 0)
                return az_fail(msg, AZ_ERR_IO, "cannot chown %s to uid %d: %s", path, (int)owner,
                               strerror(errno));
        }
        if ((st.st_mode & 0777) != 0700 && chmod(path, 0700) != 0)
            return az_fail(msg, AZ_ERR_IO, "cannot chmod %s: %s", path, strerror(errno));
    }
    return AZ_OK;
}

/* A socket dir only PostgreSQL's account may enter; refuses one someone else prepared. */
static az_err private_dir(const az_embed *e, const char *path, char *msg)
{
    int created = mkdir(path, 0700) == 0;
    if (!created && errno != EEXIST)
        return az_fail(msg, AZ_ERR_IO, "cannot create %s: %s", path, strerror(errno));
    struct stat st;
    if (lstat(path, &st) != 0) return az_fail(msg, AZ_ERR_IO, "cannot stat %s: %s", path, strerror(errno));
    if (!S_ISDIR(st.st_mode))
        return az_fail(msg, AZ_ERR_PRECONDITION, "socket dir %s is not a directory", path);
    if (st.st_uid != e->pg_uid) {
        if (!(e->as_postgres && st.st_uid == 0))
            return az_fail(msg, AZ_ERR_PRECONDITION, "socket dir %s belongs to uid %d, not %d: remove it",
                           path, (int)st.st_uid, (int)e->pg_uid);
        if (chown(path, e->pg_uid, e->pg_gid) != 0)
            return az_fail(msg, AZ_ERR_IO, "cannot chown %s to postgres: %s", path, strerror(errno));
    }
    if ((st.st_mode & 0777) != 0700 && chmod(path, 0700) != 0)
        return az_fail(msg, AZ_ERR_IO, "cannot chmod %s: %s", path, strerror(errno));
    return AZ_OK;
}

/* Unix socket paths hold at most 107 bytes; a deep data dir gets a short dir under /tmp instead,
 * named by a hash of the data dir so a restart finds the same one. Recorded in DATA/run/socket_dir. */
static az_err make_urls(az_embed *e, char *msg);

static az_err pick_sockets(az_embed *e, char *msg)
{
    const size_t max = sizeof(((struct sockaddr_un *)0)->sun_path) - 1;
    const size_t longest =
        strlen(PG_SOCK_NAME) > strlen(REDIS_SOCK_NAME) ? strlen(PG_SOCK_NAME) : strlen(REDIS_SOCK_NAME);
    char record[PATH_MAX];
    if (join(record, e->run_dir, "socket_dir") != 0)
        return az_fail(msg, AZ_ERR_INVALID, "data dir path is too long: %s", e->dir);
    if (strlen(e->run_dir) + 1 + longest <= max) {
        snprintf(e->sock_dir, sizeof e->sock_dir, "%s", e->run_dir);
        unlink(record);
    } else {
        snprintf(e->sock_dir, sizeof e->sock_dir, "/tmp/agentz-%08x", (unsigned)fnv1a(e->dir));
        az_err err = private_dir(e, e->sock_dir, msg);
        if (err) return err;
        e->tmp_sock_dir = 1;
        FILE *f = fopen(record, "we");
        if (f) {
            fprintf(f, "%s\n", e->sock_dir);
            fclose(f);
        }
        az_info("data dir path is too long for unix sockets, using socket dir %s", e->sock_dir);
    }
    return make_urls(e, msg);
}

/* The socket path and both URLs from e->sock_dir. */
static az_err make_urls(az_embed *e, char *msg)
{
    if (join(e->redis_sock, e->sock_dir, REDIS_SOCK_NAME) != 0)
        return az_fail(msg, AZ_ERR_INTERNAL, "socket path is too long: %s", e->sock_dir);

    /* libpq decodes percent-escapes in URI parameters; '/' may stay as is. */
    static const char hex[] = "0123456789ABCDEF";
    char host[PATH_MAX * 3];
    size_t n = 0;
    for (const unsigned char *c = (const unsigned char *)e->sock_dir; *c && n + 4 < sizeof host; c++) {
        if ((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') ||
            strchr("-._~/", *c)) {
            host[n++] = (char)*c;
        } else {
            host[n++] = '%';
            host[n++] = hex[*c >> 4];
            host[n++] = hex[*c & 15];
        }
    }
    host[n] = '\0';
    snprintf(e->db_url, sizeof e->db_url, "postgresql:///" PG_DB "?host=%s&port=" PG_PORT "&user=" PG_USER,
             host);
    snprintf(e->redis_url, sizeof e->redis_url, "unix://%s", e->redis_sock);
    return AZ_OK;
}

/* ---- PostgreSQL ---- */

static PGPing pg_ping(const az_embed *e)
{
    const char *keys[] = {"host", "port", "dbname", "user", "connect_timeout", NULL};
    const char *vals[] = {e->sock_dir, PG_PORT, "postgres", PG_USER, "3", NULL};
    return PQpingParams(keys, vals, 0);
}

/* PostgreSQL refuses to start while its lock files (postmaster.pid, the socket's .lock) name a pid
 * that exists. In containers that pid can belong to an unrelated process after a restart, or to a
 * zombie postmaster that nobody reaps (no init in the container); such lock files are removed.
 * Called only after nothing answered on our socket. */
static void drop_foreign_lock(const char *lock_path)
{
    pid_t pid = read_pid(lock_path);
    if (pid <= 0 || (kill(pid, 0) != 0 && errno == ESRCH)) return; /* missing or dead: PostgreSQL copes */
    char comm[64];
    proc_comm(pid, comm, sizeof comm);
    int zombie = proc_state(pid) == 'Z';
    if (!zombie && (comm[0] == '\0' || strncmp(comm, "postgres", 8) == 0)) return;
    az_warn("removing stale %s: pid %d is %s", lock_path, (int)pid,
            zombie ? "an exited process nobody reaped" : comm);
    unlink(lock_path);
}

static void pg_log_paths(const az_embed *e, char *server_log, char *ctl_log)
{
    join(server_log, e->log_dir, "postgres.log");
    join(ctl_log, e->log_dir, "pg_ctl.log");
}

static const char *pg_locale(void)
{
    locale_t l = newlocale(LC_ALL_MASK, "C.UTF-8", (locale_t)0);
    if (!l) return "C";
    freelocale(l);
    return "C.UTF-8";
}

static az_err pg_initdb(const az_embed *e, char *msg)
{
    char log[PATH_MAX], locale_opt[32];
    if (join(log, e->log_dir, "initdb.log") != 0)
        return az_fail(msg, AZ_ERR_INVALID, "data dir path is too long");
    snprintf(locale_opt, sizeof locale_opt, "--locale=%s", pg_locale());
    off_t from = file_size(log);
    az_info("initialising embedded postgresql cluster in %s", e->pg_dir);
    argv_buf a;
    pg_cmd(e, &a,
           (const char *const[]){PG_BIN "/initdb", "-D", e->pg_dir, "-U", PG_USER, "--auth=trust", "-E",
                                 "UTF8", locale_opt, "--no-instructions", NULL});
    int code = 0;
    az_err err = run(&a, log, &code, msg);
    if (err) return err;
    if (code != 0) {
        char tail[TAIL_MAX + 1];
        log_tail(log, from, tail, sizeof tail);
        return az_fail(msg, AZ_ERR_UNAVAILABLE,
                       "cannot initialise postgresql cluster %s (initdb exit %d): %s", e->pg_dir, code, tail);
    }
    return AZ_OK;
}

/* Appends s to dst single-quoted for /bin/sh: pg_ctl passes -o through a shell. */
static void shell_quote(char *dst, size_t cap, const char *s)
{
    size_t n = strlen(dst);
    if (n + 1 < cap) dst[n++] = '\'';
    for (; *s && n + 5 < cap; s++) {
        if (*s == '\'') {
            memcpy(dst + n, "'\\''", 4);
            n += 4;
        } else {
            dst[n++] = *s;
        }
    }
    if (n + 1 < cap) dst[n++] = '\'';
    dst[n < cap ? n : cap - 1] = '\0';
}

/* Appends the WAL archiving settings to pg_ctl's -o. archive_command runs under /bin/sh: it never
 * overwrites a segment (an existing one with the same bytes is success, so a retry after a crash
 * between copy and report passes, different bytes fail), copies under a temporary name, fsyncs the
 * file, renames it into place and fsyncs the directory, so an archived segment is complete and
 * durable before PostgreSQL recycles it. */
static void archive_opts(const az_embed *e, char *opts, size_t cap)
{
    char dir[PATH_MAX * 4 + 4] = "", cmd[PATH_MAX * 5 + 256], num[64];
    shell_quote(dir, sizeof dir, e->wal_dir);
    snprintf(cmd, sizeof cmd,
             "D=%s; if test -f \"$D/%%f\"; then cmp -s \"%%p\" \"$D/%%f\"; else"
             " cp \"%%p\" \"$D/%%f.tmp\" && sync \"$D/%%f.tmp\" && mv \"$D/%%f.tmp\" \"$D/%%f\""
             " && sync \"$D\"; fi",
             dir);
    snprintf(num, sizeof num, " -c archive_timeout=%d", e->archive_timeout_s);
    strncat(opts, " -c wal_level=replica -c archive_mode=on", cap - strlen(opts) - 1);
    strncat(opts, num, cap - strlen(opts) - 1);
    strncat(opts, " -c archive_command=", cap - strlen(opts) - 1);
    shell_quote(opts, cap, cmd);
}

/* Creates the WAL archive dir (0700, PostgreSQL's account) and makes it absolute. */
static az_err prepare_archive(az_embed *e, const char *dir, char *msg)
{
    /* Parents 0755: PostgreSQL's account must be able to reach the archive. */
    if (mkdir_p(dir, 0755) != 0)
        return az_fail(msg, AZ_ERR_IO, "cannot create wal archive dir %s: %s", dir, strerror(errno));
    if (!realpath(dir, e->wal_dir))
        return az_fail(msg, AZ_ERR_IO, "cannot resolve wal archive dir %s: %s", dir, strerror(errno));
    struct stat st;
    if (stat(e->wal_dir, &st) != 0)
        return az_fail(msg, AZ_ERR_IO, "cannot use wal archive dir %s: %s", e->wal_dir, strerror(errno));
    if (st.st_uid != e->pg_uid && chown(e->wal_dir, e->pg_uid, e->pg_gid) != 0)
        return az_fail(msg, AZ_ERR_IO, "cannot chown wal archive dir %s to uid %d: %s", e->wal_dir,
                       (int)e->pg_uid, strerror(errno));
    if ((st.st_mode & 0777) != 0700 && chmod(e->wal_dir, 0700) != 0)
        return az_fail(msg, AZ_ERR_IO, "cannot chmod wal archive dir %s: %s", e->wal_dir, strerror(errno));
    argv_buf a;
    int code = 0;
    pg_cmd(e, &a, (const char *const[]){"test", "-w", e->wal_dir, "-a", "-x", e->wal_dir, NULL});
    az_err err = run(&a, "/dev/null", &code, msg);
    if (err) return err;
    if (code != 0)
        return az_fail(msg, AZ_ERR_PRECONDITION,
                       "postgresql's account cannot write to wal archive dir %s: every parent "
                       "directory needs x for it",
                       e->wal_dir);
    return AZ_OK;
}

/* Archiving, once on, stays on for this data dir: DATA/wal_archive_dir records the archive, and a
 * start without one (agentzd without the setting, an admin command) keeps archiving there. A
 * start with archive_mode off would let finished WAL segments be recycled unarchived, leaving a
 * gap in the archive that no point-in-time recovery can cross. Deleting the file turns it off. */
static az_err pick_archive(az_embed *e, const az_embed_opts *opts, char *msg)
{
    char record[PATH_MAX], kept[PATH_MAX] = "";
    if (join(record, e->dir, ARCHIVE_RECORD) != 0)
        return az_fail(msg, AZ_ERR_INVALID, "data dir path is too long: %s", e->dir);
    const char *dir = opts && opts->wal_archive_dir && opts->wal_archive_dir[0] ? opts->wal_archive_dir : NULL;
    e->archive_timeout_s = opts ? (opts->archive_timeout_s > 0 ? opts->archive_timeout_s : 0)
                                : ARCHIVE_TIMEOUT_DEFAULT_S;
    FILE *f = fopen(record, "re");
    if (f) {
        if (fgets(kept, sizeof kept, f)) kept[strcspn(kept, "\n")] = '\0';
        fclose(f);
    }
    if (!dir && kept[0] == '/') {
        dir = kept;
        az_warn("this data dir archives wal to %s (recorded in %s) though no wal archive dir is set: "
                "archiving continues there; delete that file to stop it",
                kept, record);
    }
    if (!dir) return AZ_OK;
    az_err err = prepare_archive(e, dir, msg);
    if (err) return err;
    if (strcmp(kept, e->wal_dir) != 0) {
        char tmp[PATH_MAX + 8];
        snprintf(tmp, sizeof tmp, "%s.tmp", record);
        f = fopen(tmp, "we");
        if (!f || fprintf(f, "%s\n", e->wal_dir) < 0 || fflush(f) != 0 || fsync(fileno(f)) != 0) {
            if (f) fclose(f);
            unlink(tmp);
            return az_fail(msg, AZ_ERR_IO, "cannot write %s: %s", tmp, strerror(errno));
        }
        fclose(f);
        if (rename(tmp, record) != 0)
            return az_fail(msg, AZ_ERR_IO, "cannot write %s: %s", record, strerror(errno));
    }
    az_info("embedded postgresql archives wal to %s", e->wal_dir);
    return AZ_OK;
}

static az_err pg_start(az_embed *e, char *msg)
{
    char server_log[PATH_MAX], ctl_log[PATH_MAX], pidfile[PATH_MAX], socklock[PATH_MAX];
    pg_log_paths(e, server_log, ctl_log);
    if (join(pidfile, e->pg_dir, "postmaster.pid") != 0 ||
        join(socklock, e->sock_dir, PG_SOCK_NAME ".lock") != 0)
        return az_fail(msg, AZ_ERR_INVALID, "data dir path is too long");

    if (pg_ping(e) == PQPING_OK) {
        e->pg_pid = read_pid(pidfile);
        e->pg_running = 1;
        az_info("reusing embedded postgresql already running on %s (pid %d)", e->sock_dir, (int)e->pg_pid);
        return AZ_OK;
    }
    drop_foreign_lock(pidfile);
    drop_foreign_lock(socklock);

    char opts[PATH_MAX * 12 + 512] = "-p " PG_PORT " -k ";
    shell_quote(opts, sizeof opts, e->sock_dir);
    strncat(opts,
            " -c listen_addresses='' -c unix_socket_permissions=0700 -c max_connections=100"
            " -c shared_buffers=128MB -c fsync=on",
            sizeof opts - strlen(opts) - 1);
    if (e->wal_dir[0]) archive_opts(e, opts, sizeof opts);

    off_t from_server = file_size(server_log), from_ctl = file_size(ctl_log);
    az_info("starting embedded postgresql in %s", e->pg_dir);
    argv_buf a;
    pg_cmd(e, &a,
           (const char *const[]){PG_BIN "/pg_ctl", "start", "-w", "-t", "60", "-D", e->pg_dir, "-l",
                                 server_log, "-o", opts, NULL});
    int code = 0;
    az_err err = run(&a, ctl_log, &code, msg);
    if (err) return err;
    if (code != 0) {
        char tail[TAIL_MAX + 1];
        log_tail(server_log, from_server, tail, sizeof tail);
        if (!tail[0]) log_tail(ctl_log, from_ctl, tail, sizeof tail);
        /* pg_ctl -w gives up after its timeout but leaves a slow server running. */
        pid_t pid = read_pid(pidfile);
        if (pid > 0 && alive(pid)) {
            e->pg_pid = pid;
            e->pg_running = e->pg_started = 1;
        }
        return az_fail(msg, AZ_ERR_UNAVAILABLE, "cannot start postgresql (pg_ctl exit %d, log %s): %s", code,
                       server_log, tail);
    }
    e->pg_pid = read_pid(pidfile);
    e->pg_running = e->pg_started = 1;
    return AZ_OK;
}

/* Creates database agentz on every start, so a crash between initdb and here heals itself. */
static az_err pg_create_db(const az_embed *e, char *msg)
{
    const char *keys[] = {"host", "port", "dbname", "user", "connect_timeout", NULL};
    const char *vals[] = {e->sock_dir, PG_PORT, "postgres", PG_USER, "10", NULL};
    PGconn *c = PQconnectdbParams(keys, vals, 0);
    if (!c || PQstatus(c) != CONNECTION_OK) {
        az_err err = az_fail(msg, AZ_ERR_UNAVAILABLE, "cannot connect to embedded postgresql on %s: %s",
                             e->sock_dir, c ? PQerrorMessage(c) : "out of memory");
        PQfinish(c);
        return err;
    }
    PGresult *r = PQexec(c, "CREATE DATABASE " PG_DB);
    const char *state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
    az_err err = AZ_OK;
    if (PQresultStatus(r) == PGRES_COMMAND_OK)
        az_info("created database " PG_DB " in embedded postgresql");
    else if (!state || strcmp(state, "42P04") != 0) /* 42P04: duplicate_database */
        err = az_fail(msg, AZ_ERR_UNAVAILABLE, "cannot create database " PG_DB ": %s", PQerrorMessage(c));
    PQclear(r);
    PQfinish(c);
    return err;
}

static void pg_stop(az_embed *e)
{
    if (!e->pg_running) return;
    e->pg_running = 0;
    char server_log[PATH_MAX], ctl_log[PATH_MAX], msg[AZ_MSG_MAX];
    pg_log_paths(e, server_log, ctl_log);
    off_t from = file_size(ctl_log);
    argv_buf a;
    pg_cmd(e, &a,
           (const char *const[]){PG_BIN "/pg_ctl", "stop", "-m", "fast", "-w", "-t", "60", "-D", e->pg_dir,
                                 NULL});
    int code = 0;
    if (run(&a, ctl_log, &code, msg) != AZ_OK) {
        az_error("cannot stop embedded postgresql: %s", msg);
    } else if (code != 0) {
        char tail[TAIL_MAX + 1];
        log_tail(ctl_log, from, tail, sizeof tail);
        az_error("cannot stop embedded postgresql (pg_ctl exit %d): %s", code, tail);
        if (alive(e->pg_pid)) kill(e->pg_pid, SIGQUIT); /* immediate shutdown; crash recovery on next start */
    }
    /* pg_ctl returns once postmaster.pid is gone; the process itself exits just after. */
    reap(e->pg_pid, 0, "postgresql");
    az_info("stopped embedded postgresql");
}

/* ---- Redis ---- */

enum { REDIS_DOWN, REDIS_LOADING, REDIS_UP };

/* Probes the socket with PING; on REDIS_UP *pid is the server's process_id. */
static int redis_probe(const char *sock, pid_t *pid)
{
    struct timeval tv = {1, 0};
    redisContext *c = redisConnectUnixWithTimeout(sock, tv);
    if (!c || c->err) {
        redisFree(c);
        return REDIS_DOWN;
    }
    redisSetTimeout(c, tv);
    int state = REDIS_DOWN;
    redisReply *r = redisCommand(c, "PING");
    if (r && r->type == REDIS_REPLY_STATUS && strcmp(r->str, "PONG") == 0)
        state = REDIS_UP;
    else if (r && r->type == REDIS_REPLY_ERROR && strncmp(r->str, "LOADING", 7) == 0)
        state = REDIS_LOADING;
    freeReplyObject(r);
    if (state == REDIS_UP && pid) {
        *pid = 0;
        r = redisCommand(c, "INFO server");
        const char *p = r && r->type == REDIS_REPLY_STRING ? strstr(r->str, "process_id:") : NULL;
        if (p) *pid = (pid_t)strtol(p + strlen("process_id:"), NULL, 10);
        freeReplyObject(r);
    }
    redisFree(c);
    return state;
}

/* Waits until Redis answers PING; fails early if our child exits. */
static int redis_wait_up(az_embed *e, int *exited)
{
    long long deadline = now_ms() + START_TIMEOUT_MS;
    *exited = 0;
    for (;;) {
        pid_t pid = 0;
        if (redis_probe(e->redis_sock, &pid) == REDIS_UP) {
            if (pid > 0) e->redis_pid = pid;
            return 0;
        }
        if (e->redis_is_child) {
            int status;
            if (waitpid(e->redis_pid, &status, WNOHANG) == e->redis_pid) {
                *exited = 1;
                return -1;
            }
        }
        if (now_ms() >= deadline) return -1;
        sleep_ms(50);
    }
}

static void redis_stop(az_embed *e);

static az_err redis_start(az_embed *e, char *msg)
{
    char log[PATH_MAX], pidfile[PATH_MAX];
    if (join(log, e->log_dir, "redis.log") != 0 || join(pidfile, e->run_dir, "redis.pid") != 0)
        return az_fail(msg, AZ_ERR_INVALID, "data dir path is too long");

    pid_t pid = 0;
    int state = redis_probe(e->redis_sock, &pid);
    if (state != REDIS_DOWN) {
        int exited;
        e->redis_pid = pid;
        e->redis_running = 1;
        if (state == REDIS_UP || redis_wait_up(e, &exited) == 0) {
            az_info("reusing embedded redis already running on %s (pid %d)", e->redis_sock,
                    (int)e->redis_pid);
            return AZ_OK;
        }
        e->redis_running = 0;
        return az_fail(msg, AZ_ERR_UNAVAILABLE, "redis on %s is still loading after %d s", e->redis_sock,
                       START_TIMEOUT_MS / 1000);
    }

    off_t from = file_size(log);
    az_info("starting embedded redis on %s", e->redis_sock);
    argv_buf a = {.n = 0};
    args(&a, (const char *const[]){"redis-server",
                                   "--port", "0", /* unix socket only */
                                   "--unixsocket", e->redis_sock,
                                   "--unixsocketperm", "700",
                                   "--dir", e->redis_dir,
                                   "--appendonly", "yes", /* the queue survives restarts and crashes */
                                   "--save", "900 1",
                                   "--daemonize", "no", /* our child: we reap it and see it exit early */
                                   "--logfile", log,
                                   "--pidfile", pidfile,
                                   NULL});
    int rc = spawn(&a, log, &pid);
    if (rc)
        return az_fail(msg, AZ_ERR_UNAVAILABLE,
                       "cannot run redis-server: %s (install redis-server: deploy/install-deps.sh)",
                       strerror(rc));
    e->redis_pid = pid;
    e->redis_is_child = 1;
    e->redis_running = 1;

    int exited = 0;
    if (redis_wait_up(e, &exited) != 0) {
        char tail[TAIL_MAX + 1];
        if (!exited) redis_stop(e);
        e->redis_running = 0;
        log_tail(log, from, tail, sizeof tail);
        return az_fail(msg, AZ_ERR_UNAVAILABLE, "cannot start redis on %s (%s, log %s): %s", e->redis_sock,
                       exited ? "it exited" : "no answer to PING within 10 s", log, tail);
    }
    return AZ_OK;
}

static void redis_stop(az_embed *e)
{
    if (!e->redis_running) return;
    e->redis_running = 0;
    int asked = 0;
    struct timeval tv = {STOP_TIMEOUT_MS / 1000, 0};
    redisContext *c = redisConnectUnixWithTimeout(e->redis_sock, tv);
    if (c && !c->err) {
        redisSetTimeout(c, tv);
        /* On success the server closes the connection without a reply. */
        redisReply *r = redisCommand(c, "SHUTDOWN SAVE");
        if (!r && c->err == REDIS_ERR_EOF)
            asked = 1;
        else if (r && r->type == REDIS_REPLY_ERROR)
            az_warn("redis refused SHUTDOWN SAVE, sending SIGTERM: %s", r->str);
        else
            az_warn("redis did not answer SHUTDOWN SAVE, sending SIGTERM: %s",
                    r ? "unexpected reply" : c->errstr);
        freeReplyObject(r);
    }
    redisFree(c);
    if (!asked && e->redis_pid > 0) kill(e->redis_pid, SIGTERM); /* Redis saves on SIGTERM too */
    reap(e->redis_pid, e->redis_is_child, "redis");
    az_info("stopped embedded redis");
}

/* ---- API ---- */

static void teardown(az_embed *e)
{
    redis_stop(e);
    pg_stop(e);
    /* Both servers remove their sockets on exit; an empty /tmp socket dir need not outlive them. */
    if (e->tmp_sock_dir) rmdir(e->sock_dir);
    if (e->lock_fd >= 0) close(e->lock_fd);
    free(e);
}

static az_err prepare(az_embed *e, const char *data_dir, char *msg)
{
    if (mkdir_p(data_dir, 0755) != 0)
        return az_fail(msg, AZ_ERR_IO, "cannot create data dir %s: %s", data_dir, strerror(errno));
    if (!realpath(data_dir, e->dir))
        return az_fail(msg, AZ_ERR_IO, "cannot resolve data dir %s: %s", data_dir, strerror(errno));
    az_err err = lock_dir(e, msg);
    if (!err) err = pick_account(e, msg);
    if (!err) err = make_layout(e, msg);
    if (!err) err = pick_sockets(e, msg);
    return err;
}

az_err az_embed_start(const char *data_dir, az_embed **out, char *msg)
{
    return az_embed_start_opts(data_dir, NULL, out, msg);
}

az_err az_embed_start_opts(const char *data_dir, const az_embed_opts *opts, az_embed **out, char *msg)
{
    if (!out) return az_fail(msg, AZ_ERR_INVALID, "out is required");
    *out = NULL;
    if (!data_dir || !*data_dir) return az_fail(msg, AZ_ERR_INVALID, "data_dir is required");
    az_embed *e = calloc(1, sizeof *e);
    if (!e) return az_fail(msg, AZ_ERR_NOMEM, "cannot allocate embedded server state");
    e->lock_fd = -1;

    char pgversion[PATH_MAX];
    az_err err = prepare(e, data_dir, msg);
    if (!err) err = pick_archive(e, opts, msg);
    if (!err && join(pgversion, e->pg_dir, "PG_VERSION") == 0 && access(pgversion, F_OK) != 0)
        err = pg_initdb(e, msg);
    if (!err) err = pg_start(e, msg);
    if (!err) err = pg_create_db(e, msg);
    if (!err) err = redis_start(e, msg);
    if (err) {
        /* Reused servers were not started by this call; leave them as they were. */
        if (!e->pg_started) e->pg_running = 0;
        if (!e->redis_is_child) e->redis_running = 0;
        teardown(e);
        return err;
    }
    az_info("embedded postgresql and redis ready in %s", e->dir);
    *out = e;
    return AZ_OK;
}

az_err az_embed_attach(const char *data_dir, az_embed **out, char *msg)
{
    if (!out) return az_fail(msg, AZ_ERR_INVALID, "out is required");
    *out = NULL;
    if (!data_dir || !*data_dir) return az_fail(msg, AZ_ERR_INVALID, "data_dir is required");
    az_embed *e = calloc(1, sizeof *e);
    if (!e) return az_fail(msg, AZ_ERR_NOMEM, "cannot allocate embedded server state");
    e->lock_fd = -1; /* the owner holds the lock; we never take it */
    if (!realpath(data_dir, e->dir)) {
        az_err err = az_fail(msg, AZ_ERR_UNAVAILABLE, "cannot attach to data dir %s: %s", data_dir,
                             strerror(errno));
        free(e);
        return err;
    }
    char record[PATH_MAX];
    az_err err = AZ_OK;
    if (join(e->run_dir, e->dir, "run") != 0 || join(record, e->run_dir, "socket_dir") != 0)
        err = az_fail(msg, AZ_ERR_INVALID, "data dir path is too long: %s", e->dir);
    /* Where the owner put its sockets: DATA/run, or the directory DATA/run/socket_dir names
     * when DATA/run is too long for a unix socket path (pick_sockets). */
    snprintf(e->sock_dir, sizeof e->sock_dir, "%s", e->run_dir);
    FILE *f = err ? NULL : fopen(record, "re");
    if (f) {
        char line[PATH_MAX];
        if (fgets(line, sizeof line, f)) {
            line[strcspn(line, "\n")] = '\0';
            if (line[0] == '/') snprintf(e->sock_dir, sizeof e->sock_dir, "%s", line);
        }
        fclose(f);
    }
    if (!err) err = make_urls(e, msg);
    if (!err && pg_ping(e) != PQPING_OK)
        err = az_fail(msg, AZ_ERR_UNAVAILABLE,
                      "no embedded postgresql answers in %s (is an agentzd running on this data dir?)",
                      e->sock_dir);
    if (!err && redis_probe(e->redis_sock, NULL) != REDIS_UP)
        err = az_fail(msg, AZ_ERR_UNAVAILABLE,
                      "no embedded redis answers on %s (is an agentzd running on this data dir?)",
                      e->redis_sock);
    if (err) {
        free(e);
        return err;
    }
    /* pg_running, redis_running and tmp_sock_dir stay 0: az_embed_stop only frees. */
    az_info("attached to the embedded postgresql and redis of the agentzd running in %s", e->dir);
    *out = e;
    return AZ_OK;
}

const char *az_embed_database_url(const az_embed *e) { return e ? e->db_url : NULL; }

const char *az_embed_redis_url(const az_embed *e) { return e ? e->redis_url : NULL; }

const char *az_embed_data_dir(const az_embed *e) { return e ? e->dir : NULL; }

void az_embed_stop(az_embed *e)
{
    if (!e) return;
    teardown(e);
}
