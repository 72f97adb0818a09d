/* The embedded default: a private PostgreSQL 15 cluster and redis-server run under one data dir when
 * no external database or Redis is configured. Layout and behaviour: docs/embedded.md. */
#ifndef AZ_EMBEDDED_H
#define AZ_EMBEDDED_H

#include "core/err.h"

typedef struct az_embed az_embed;

/* Starts PostgreSQL and Redis under data_dir (created if missing; relative paths are made absolute),
 * or reuses servers left running there by an earlier agentzd that crashed, if they answer. Takes an
 * exclusive lock on data_dir/agentz.lock for the handle's lifetime.
 * On AZ_OK *out holds a handle the caller owns; release it with az_embed_stop.
 * On error *out is NULL, nothing this call started is left running, and msg (AZ_MSG_MAX) says why:
 * AZ_ERR_INVALID for a NULL/empty data_dir, AZ_ERR_PRECONDITION when another agentzd holds the data
 * dir or the postgres user cannot reach it, AZ_ERR_UNAVAILABLE when a server fails to start (msg
 * ends with the tail of its log), AZ_ERR_IO for file-system failures, AZ_ERR_NOMEM.
 * The servers run in their own sessions, so Ctrl-C on agentzd does not reach them. This module reaps
 * the children it spawns itself: the caller must not reap all children (waitpid(-1), SIGCHLD set to
 * SIG_IGN) while start or stop runs. */
az_err az_embed_start(const char *data_dir, az_embed **out, char *msg);

/* What az_embed_start_opts adds to az_embed_start. */
typedef struct az_embed_opts {
    /* Continuous WAL archiving: PostgreSQL copies every finished WAL segment into this directory
     * (created 0700 for PostgreSQL's account if missing; made absolute), with archive_mode=on and
     * a no-overwrite, fsync'ed archive_command. NULL or "" = no archiving. */
    const char *wal_archive_dir;
    int archive_timeout_s; /* archive_timeout: a segment is switched after this many seconds with
                            * writes (bounds the data a lost disk loses); 0 = never forced */
} az_embed_opts;

/* az_embed_start with opts (NULL = none). A reused PostgreSQL keeps the settings it was started
 * with. Errors as az_embed_start, plus AZ_ERR_IO when the archive dir cannot be created. */
az_err az_embed_start_opts(const char *data_dir, const az_embed_opts *opts, az_embed **out, char *msg);

/* Attaches to the PostgreSQL and Redis that another agentzd (the owner, holding the data-dir
 * lock) runs under data_dir, without taking the lock or starting anything: for extra worker
 * processes on the same machine. Finds the sockets the way the owner placed them (DATA/run, or
 * the directory DATA/run/socket_dir records) and checks that both servers answer.
 * On AZ_OK *out is a handle whose URLs and data dir work as for az_embed_start; az_embed_stop
 * only frees it (the owner stops the servers; if it does, this process's connections fail).
 * On error *out is NULL: AZ_ERR_INVALID (no data_dir), AZ_ERR_UNAVAILABLE when the dir does
 * not exist or nothing answers there, AZ_ERR_NOMEM. */
az_err az_embed_attach(const char *data_dir, az_embed **out, char *msg);

/* libpq connection URI for database "agentz" over the private unix socket, for PQconnectdb:
 * "postgresql:///agentz?host=<socket dir, percent-encoded>&port=5432&user=agentz".
 * Owned by e; valid until az_embed_stop. */
const char *az_embed_database_url(const az_embed *e);

/* "unix://<absolute socket path>" (the path is not encoded). Owned by e; valid until az_embed_stop. */
const char *az_embed_redis_url(const az_embed *e);

/* Absolute data dir. Owned by e; valid until az_embed_stop. */
const char *az_embed_data_dir(const az_embed *e);

/* Stops Redis (SHUTDOWN SAVE, else SIGTERM; SIGKILL after 10 s) and PostgreSQL (pg_ctl stop -m fast),
 * waits for both to exit, releases the data-dir lock and frees e. Failures are logged, not returned.
 * Accepts NULL. */
void az_embed_stop(az_embed *e);

#endif
