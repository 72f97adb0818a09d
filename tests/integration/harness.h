/* Integration-test harness: starts the real agentzd (embedded PostgreSQL and Redis under the
 * test directory) on a free port and stops it; plus small helpers for CUnit suites. */
#ifndef AZ_HARNESS_H
#define AZ_HARNESS_H

#include <sys/types.h>

#include "conn.h"
#include "store/redis.h"

typedef struct az_itest_server {
    pid_t pid;
    char target[64];   /* "127.0.0.1:PORT" once ready */
    char data_dir[512];
    char log_path[600]; /* agentzd's stderr */
    char admin_key[512]; /* <data_dir>/admin.key without its newline; "" = none */
} az_itest_server;

/* Starts $AGENTZD with data dir $AGENTZ_TEST_DIR/<name> (kept between runs, so only the first
 * start pays for initdb), listening on 127.0.0.1:0, plus extra_args (NULL-terminated, may be
 * NULL). Waits up to 120 s for the ready line, then loads <data_dir>/admin.key into
 * s->admin_key: at once when it exists; when it does not and the server refuses an
 * unauthenticated call, it waits up to 5 s for the file; a server that does not enforce
 * authentication gets no key and no wait. Returns 0, or -1 after printing why (and the log's
 * tail). */
int az_itest_start(az_itest_server *s, const char *name, const char *const *extra_args);

/* As az_itest_start, but with data dir data_dir (NULL = $AGENTZ_TEST_DIR/<name>, exactly
 * az_itest_start) and the log at $AGENTZ_TEST_DIR/<name>.log: a second process (say a
 * worker-only agentzd) on the data dir of a running one attaches to its embedded PostgreSQL
 * and Redis. */
int az_itest_start_on(az_itest_server *s, const char *name, const char *data_dir,
                      const char *const *extra_args);

/* Sends sig (SIGTERM for a graceful stop) and waits up to timeout_s; returns the exit status
 * (0..255), 128+signal when killed by one, or -1 on timeout (the process is then killed). */
int az_itest_stop(az_itest_server *s, int sig, int timeout_s);

/* Prints the last lines of the server's log to stderr. */
void az_itest_dump_log(const az_itest_server *s, int lines);

/* The same, leaving out lines that contain skip (NULL or "" = none), e.g. the per-call
 * "msg=\"rpc\"" lines of a suite that polls. */
void az_itest_dump_log_except(const az_itest_server *s, int lines, const char *skip);

/* A connection to s carrying s's admin key (when it has one) as its bearer token, so every
 * call is authenticated as the local owner. Aborts the test program when it cannot be opened.
 * Free with az_conn_free. */
az_conn *az_itest_connect(const az_itest_server *s);

/* A connection to s with token as its bearer token; NULL = no credentials (for tests of
 * UNAUTHENTICATED). Aborts the test program when it cannot be opened. */
az_conn *az_itest_connect_token(const az_itest_server *s, const char *token);

/* The admin key loaded by az_itest_start (owned by s), or NULL when the server wrote none
 * (it does not enforce authentication). */
const char *az_itest_admin_key(const az_itest_server *s);

/* A synchronous connection to the Redis of s's embedded instance (DATA/run/redis.sock, or the
 * directory DATA/run/socket_dir names), for suites that check or inject queue traffic. NULL
 * after printing why. Free with az_redis_free. */
az_redis *az_itest_redis(const az_itest_server *s);

/* A fresh random suffix for names and labels, so suites never collide. */
const char *az_itest_unique(void);

/* Runs every registered CUnit suite verbosely; returns the process exit code. */
int az_itest_run_cunit(void);

#endif
