/* Integration-test harness: starts the real agentzd (embedded PostgreSQL and Redis under the
 * test directory) on a free port and stops it; plus small helpers for CUnit suites. */
#ifndef AZ_HARNESS_H
#define AZ_HARNESS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "agentz/v1/event.pb-c.h"
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

/* ---- watch streams (the real-time suites) ---- */

/* One server-streaming Watch call and everything it delivered. Zero it before the first open. */
typedef struct az_itest_watch {
    az_conn_stream *stream;
    Agentz__V1__Event **ev; /* every message, in arrival order; owned */
    double *at;             /* CLOCK_MONOTONIC seconds at which ev[i] arrived */
    size_t n, cap;
    size_t durable;         /* messages with sequence > 0 */
    int64_t last_seq;       /* sequence of the last durable message; 0 = none yet */
    int ended;              /* the stream is over; status and msg say how */
    int status;             /* the final gRPC status (0 = OK) once ended */
    char msg[AZ_MSG_MAX];   /* its details */
} az_itest_watch;

/* Starts method (e.g. "/agentz.v1.WorkflowService/WatchRun") with req and a deadline of
 * timeout_ms on c. Returns 0, or the gRPC status of a call that could not start (w->ended set,
 * w->msg says why). Events already in w are kept: a resumed stream appends to them. */
int az_itest_watch_open(az_itest_watch *w, az_conn *c, const char *method,
                        const ProtobufCMessage *req, int timeout_ms);

/* WatchRun / WatchTask / WatchAgents (agent_id NULL = every agent) through
 * az_itest_watch_open. */
int az_itest_watch_run(az_itest_watch *w, az_conn *c, const char *run_id, int64_t after,
                       int include_tokens, int timeout_ms);
int az_itest_watch_task(az_itest_watch *w, az_conn *c, const char *task_id, int64_t after,
                        int include_tokens, int timeout_ms);
int az_itest_watch_agents(az_itest_watch *w, az_conn *c, const char *agent_id, int64_t after,
                          int timeout_ms);

/* Blocks for one message: 1 when one was appended, 0 when the stream ended (w->ended). */
int az_itest_watch_next(az_itest_watch *w);

/* Reads until the stream ends or w->durable reaches until_durable (0 = until the end).
 * Returns w->ended. */
int az_itest_watch_read(az_itest_watch *w, size_t until_durable);

/* Cancels the call (when still open) so another can be opened on w; keeps the events. */
void az_itest_watch_cancel(az_itest_watch *w);

/* Cancels the call and frees every event; w is zeroed. Accepts a zeroed w. */
void az_itest_watch_free(az_itest_watch *w);

/* ---- the embedded Redis, stopped and started under a running agentzd ---- */

/* How the embedded redis-server of s runs, read from it with CONFIG GET. */
typedef struct az_itest_redis_conf {
    char sock[512], dir[512], logfile[512], pidfile[512], appendonly[8], save[128];
} az_itest_redis_conf;

/* Reads the configuration of s's Redis into conf and stops it with SHUTDOWN SAVE (agentzd
 * keeps running); returns once the socket refuses connections. 0, or -1 after printing why. */
int az_itest_redis_stop(const az_itest_server *s, az_itest_redis_conf *conf);

/* Starts redis-server again (daemonized, so not our child) with conf; waits up to 10 s for
 * PING. agentzd stops it at its own shutdown as usual. 0, or -1 after printing why. */
int az_itest_redis_start(const az_itest_redis_conf *conf);

/* Runs every registered CUnit suite verbosely; returns the process exit code. */
int az_itest_run_cunit(void);

#endif
