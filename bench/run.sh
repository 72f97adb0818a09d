#!/usr/bin/env bash
# Builds agentzd and bench_rpc (RelWithDebInfo), starts agentzd on loopback with a fresh embedded
# PostgreSQL + Redis under /tmp (or the stores named by AGENTZ_DATABASE_URL / AGENTZ_REDIS_URL),
# runs every operation at each concurrency, prints a markdown table, stops the server with
# SIGTERM (checking it exits 0) and removes the data directory.
#
# Environment (all optional):
#   OPS="create get list health unimplemented"   CONCURRENCY="1 8 32"
#   DURATION=10s  WARMUP=1s   TIMEOUT_MS=10000   TRANSPORT=private|azconn
#   BUILD_DIR=build   SKIP_BUILD=1 (use the existing binaries)   KEEP_BENCH_DIR=1
# With the defaults the run takes about 3 minutes. Exit status: 0 when every run passed and the
# server stopped cleanly, 1 otherwise.
set -euo pipefail

cd "$(dirname "$0")/.."
OPS=${OPS:-"create get list health unimplemented"}
CONCURRENCY=${CONCURRENCY:-"1 8 32"}
DURATION=${DURATION:-10s}
WARMUP=${WARMUP:-1s}
TIMEOUT_MS=${TIMEOUT_MS:-10000}
TRANSPORT=${TRANSPORT:-private}
BUILD_DIR=${BUILD_DIR:-build}

if [[ -z ${SKIP_BUILD:-} ]]; then
    cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
    cmake --build "$BUILD_DIR" -j2 --target agentzd bench_rpc >/dev/null
fi
AGENTZD=$BUILD_DIR/bin/agentzd
BENCH=$BUILD_DIR/bin/bench_rpc
for b in "$AGENTZD" "$BENCH"; do
    [[ -x $b ]] || { echo "run.sh: $b is missing (build failed?)" >&2; exit 1; }
done

# The embedded PostgreSQL runs as the postgres user when we are root: it must reach the dir.
DIR=$(mktemp -d /tmp/agentz-bench.XXXXXX)
chmod 755 "$DIR"
PID=
cleanup() {
    if [[ -n $PID ]] && kill -0 "$PID" 2>/dev/null; then
        kill -TERM "$PID" 2>/dev/null || true
        wait "$PID" 2>/dev/null || true
    fi
    if [[ -z ${KEEP_BENCH_DIR:-} ]]; then rm -rf "$DIR"; else echo "kept $DIR" >&2; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

"$AGENTZD" --data-dir "$DIR/data" --listen 127.0.0.1:0 >"$DIR/stdout" 2>"$DIR/agentzd.log" &
PID=$!
TARGET=
for _ in $(seq 240); do
    TARGET=$(sed -n 's/.*gRPC at \([0-9.:]*\).*/\1/p' "$DIR/stdout" | head -1)
    [[ -n $TARGET ]] && break
    kill -0 "$PID" 2>/dev/null || break
    sleep 0.5
done
if [[ -z $TARGET ]]; then
    echo "run.sh: agentzd did not become ready; last log lines:" >&2
    tail -20 "$DIR/agentzd.log" >&2
    exit 1
fi
case $TARGET in
127.0.0.1:*) ;;
*) echo "run.sh: refusing non-loopback target $TARGET" >&2; exit 1 ;;
esac

field() { sed -n "s/.*\"$1\":\([0-9.]*\).*/\1/p" <<<"$2"; }

status=0
rows=()
for op in $OPS; do
    for c in $CONCURRENCY; do
        echo "run.sh: $op at concurrency $c for $DURATION" >&2
        if ! out=$("$BENCH" --server "$TARGET" --op "$op" --concurrency "$c" --duration "$DURATION" \
            --warmup "$WARMUP" --timeout-ms "$TIMEOUT_MS" --transport "$TRANSPORT" --json); then
            status=1
            echo "run.sh: $op at concurrency $c failed" >&2
        fi
        [[ -n $out ]] || { rows+=("| $op | $c | failed | | | | | |"); continue; }
        rows+=("$(printf '| %s | %s | %s | %s | %s | %s | %s | %s |' "$op" "$c" \
            "$(field ops_per_s "$out")" "$(field p50_ms "$out")" "$(field p90_ms "$out")" \
            "$(field p99_ms "$out")" "$(field max_ms "$out")" "$(field errors "$out")")")
    done
done

kill -TERM "$PID"
rc=0
wait "$PID" || rc=$?
PID=
if [[ $rc -ne 0 ]]; then
    echo "run.sh: agentzd exited $rc after SIGTERM; last log lines:" >&2
    tail -20 "$DIR/agentzd.log" >&2
    status=1
fi

echo
echo "agentzd $(git rev-parse --short HEAD 2>/dev/null || echo '?'), $(nproc) cores," \
    "$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)," \
    "duration $DURATION after $WARMUP warm-up, deadline ${TIMEOUT_MS} ms, transport $TRANSPORT"
echo
echo "| op | concurrency | ops/s | p50 ms | p90 ms | p99 ms | max ms | errors |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|"
printf '%s\n' "${rows[@]}"
echo "agentzd stopped with exit status $rc" >&2
exit $status
