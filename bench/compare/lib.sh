# shellcheck shell=bash
# Shared by bench/compare.sh and bench/scaling.sh (sourced, not run): the temporary directory and
# its cleanup, stages run in their own process group so that a stop reaches everything they
# started, and a PostgreSQL 15 cluster started with agentzd's embedded settings.

PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
# The settings agentzd's embedded cluster runs with (server/embed/embedded.c, pg_start; listed in
# docs/embedded.md). Keep the two in step: the comparison is only fair with the same cluster.
PG_SETTINGS="-c listen_addresses='' -c unix_socket_permissions=0700 -c max_connections=100 -c shared_buffers=128MB -c fsync=on"

BENCH_DIR=
STAGE_PID=
PG_DIRS=()

say() { printf '%s: %s\n' "$BENCH_NAME" "$*" >&2; }
loadavg() { cut -d' ' -f1-3 /proc/loadavg; }

# as_pg CMD...: runs a PostgreSQL program as the cluster's owner: postgres when we are root (PostgreSQL refuses
# to run as root), ourselves otherwise.
PG_AS=()
[[ $(id -u) -eq 0 ]] && PG_AS=(runuser -u postgres --)
as_pg() { "${PG_AS[@]}" "$@"; }

# The embedded cluster's locale: C.UTF-8 where the system has it, else C (embedded.c, pg_locale).
pg_locale() {
    if locale -a 2>/dev/null | grep -qix 'c\.utf-\?8'; then echo C.UTF-8; else echo C; fi
}

# pg_up DATADIR SOCKDIR: starts the cluster in DATADIR (initdb first when it is empty) on a unix
# socket in SOCKDIR only, and remembers it for cleanup.
pg_up() {
    local data=$1 sock=$2
    mkdir -p "$sock"
    [[ $(id -u) -eq 0 ]] && chown postgres: "$sock"
    chmod 700 "$sock"
    if [[ ! -f $data/PG_VERSION ]]; then
        mkdir -p "$data"
        [[ $(id -u) -eq 0 ]] && chown postgres: "$data"
        as_pg "$PG_BIN/initdb" -D "$data" -U agentz --auth=trust -E UTF8 --locale="$(pg_locale)" \
            --no-instructions >"$BENCH_DIR/initdb.log" 2>&1 ||
            { say "initdb failed:"; tail -5 "$BENCH_DIR/initdb.log" >&2; return 1; }
    fi
    PG_DIRS+=("$data")
    as_pg "$PG_BIN/pg_ctl" start -w -t 60 -D "$data" -l "$sock/postgres.log" \
        -o "-p 5432 -k $sock $PG_SETTINGS" >/dev/null ||
        { say "postgresql did not start in $data:"; tail -5 "$sock/postgres.log" >&2; return 1; }
}

pg_down() {
    [[ -f $1/postmaster.pid ]] || return 0
    as_pg "$PG_BIN/pg_ctl" stop -w -t 60 -m fast -D "$1" >/dev/null 2>&1 ||
        as_pg "$PG_BIN/pg_ctl" stop -m immediate -D "$1" >/dev/null 2>&1 || true
}

# stage OUT CMD...: runs CMD in its own session (so cleanup can signal the whole group: a
# bench_engine and the agentzd it forked), stdout into OUT, stderr through; returns its status.
stage() {
    local out=$1
    shift
    setsid "$@" >"$out" &
    STAGE_PID=$!
    local rc=0
    wait "$STAGE_PID" || rc=$?
    STAGE_PID=
    return $rc
}

bench_cleanup() {
    local pid
    if [[ -n $STAGE_PID ]] && kill -0 "$STAGE_PID" 2>/dev/null; then
        kill -TERM -- "-$STAGE_PID" 2>/dev/null || true
        for _ in $(seq 100); do kill -0 "$STAGE_PID" 2>/dev/null || break; sleep 0.3; done
        kill -KILL -- "-$STAGE_PID" 2>/dev/null || true
    fi
    [[ -n $BENCH_DIR && -d $BENCH_DIR ]] || return 0
    # Whatever a stage left behind (an agentzd killed before it stopped its stores): our own
    # clusters, and the embedded PostgreSQL and Redis under our directory.
    local d
    for d in "${PG_DIRS[@]}" "$BENCH_DIR"/*/data/pg; do pg_down "$d"; done
    # Redis 7 refuses SIGTERM when its final save fails, and the save would race the rm below:
    # SIGKILL, the data being thrown away anyway.
    for d in "$BENCH_DIR"/*/data/run/redis.pid "$BENCH_DIR"/redis/redis.pid; do
        [[ -f $d ]] || continue
        pid=$(cat "$d" 2>/dev/null) || continue
        # Only while the pid is still a redis-server on our socket (the file may be stale).
        if [[ -n $pid ]] && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q "redis-server.*$BENCH_DIR"; then
            kill -KILL "$pid" 2>/dev/null || true
        fi
    done
    if [[ -n ${KEEP_BENCH_DIR:-} ]]; then say "kept $BENCH_DIR"; else rm -rf "$BENCH_DIR"; fi
}

# bench_init NAME: the temporary directory (0755: PostgreSQL runs as postgres when we are root)
# and the traps that clean it up on any exit.
bench_init() {
    BENCH_NAME=$1
    BENCH_DIR=$(mktemp -d "/tmp/agentz-$1.XXXXXX")
    chmod 755 "$BENCH_DIR"
    trap bench_cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
}

# ensure_build BUILD_DIR TARGET...: builds the targets unless SKIP_BUILD is set (a tree that was
# never configured is configured RelWithDebInfo, as bench/run.sh does).
ensure_build() {
    local dir=$1
    shift
    if [[ -z ${SKIP_BUILD:-} ]]; then
        [[ -f $dir/CMakeCache.txt ]] || cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
        say "building $* in $dir"
        cmake --build "$dir" -j2 --target "$@" >"$BENCH_DIR/build.log" 2>&1 ||
            { say "build failed:"; tail -20 "$BENCH_DIR/build.log" >&2; return 1; }
    fi
    local t
    for t in "$@"; do
        [[ -x $dir/bin/$t ]] || { say "$dir/bin/$t is missing: run cmake --build $dir -j2 --target $t"; return 1; }
    done
}

# pg_sizes DATADIR OUT: the rows and sizes of the task tables and of each of their indexes in an
# agentzd data dir's embedded cluster (started here on a private socket, agentzd being stopped),
# with the cumulative row statistics (a clean shutdown keeps them), as JSON lines.
pg_sizes() {
    local data=$1 out=$2 sock
    sock=$(mktemp -d "$BENCH_DIR/sock.XXXXXX")
    pg_up "$data" "$sock" || return 1
    local q='' t
    for t in tasks task_attempts events event_queue event_seqs; do
        [[ -n $q ]] && q+=" UNION ALL "
        q+="SELECT json_build_object('table', '$t', 'rows', (SELECT count(*) FROM $t),
            'total_bytes', pg_total_relation_size('$t'), 'heap_bytes', pg_relation_size('$t'),
            'index_bytes', pg_indexes_size('$t'),
            'stats', (SELECT json_build_object('inserts', n_tup_ins, 'updates', n_tup_upd,
                             'hot_updates', n_tup_hot_upd, 'deletes', n_tup_del, 'dead', n_dead_tup)
                      FROM pg_stat_user_tables WHERE relid = '$t'::regclass),
            'indexes', (SELECT json_object_agg(i.relname, pg_relation_size(i.oid) ORDER BY i.relname)
                        FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid
                        WHERE x.indrelid = '$t'::regclass))::text"
    done
    local rc=0
    as_pg "$PG_BIN/psql" -X -q -A -t -h "$sock" -U agentz -d agentz -c "$q" >"$out" 2>"$sock/psql.err" || rc=$?
    [[ $rc -eq 0 ]] || { say "cannot read table sizes:"; cat "$sock/psql.err" >&2; }
    pg_down "$data"
    return $rc
}
