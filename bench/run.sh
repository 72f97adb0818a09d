#!/usr/bin/env bash
# Builds agentzd and bench_rpc (RelWithDebInfo), starts agentzd on loopback with a fresh embedded
# PostgreSQL + Redis under /tmp (or the stores named by AGENTZ_DATABASE_URL / AGENTZ_REDIS_URL),
# runs every operation at each concurrency, prints a markdown table, stops the server with
# SIGTERM (checking it exits 0) and removes the data directory. Then it runs the execution-engine
# scenarios with bench_engine, which starts its own agentzd (and an in-process fake LLM) per
# scenario in a subdirectory, and prints a second table.
#
# Environment (all optional):
#   OPS="create get rest-get list health unimplemented"   CONCURRENCY="1 8 32"   (OPS= skips the RPC
#       table; rest-get is GetAgent through the gateway, run right after get at each concurrency
#       so the two meet the same conditions, and a REST / gRPC ratio table follows)
#   DURATION=10s  WARMUP=1s   TIMEOUT_MS=10000   TRANSPORT=private|azconn
#   ENGINE="throughput drain slowcalls"   (ENGINE= skips the engine table)
#   ENGINE_TASKS=2000 (throughput, drain)  SLOWCALLS=5000 (tasks and AGENTZ_WORKER_CONCURRENCY)
#   ENGINE_CLIENTS=16   SLOWCALLS_ARGS="--chunk-delay-ms 10000" (extra bench_engine arguments)
#   EVENTS="latency fanout sse-latency sse-fanout"   (EVENTS= skips the real-time table;
#       bench_events starts its own agentzd; the sse- scenarios watch through an agentz-gateway)
#   EVENTS_RUNS=1000   EVENTS_WATCHERS=10 (fanout: streams = runs x watchers)
#   BUILD_DIR=build   SKIP_BUILD=1 (use the existing binaries)   KEEP_BENCH_DIR=1
# With the defaults the run takes about 5 minutes. Exit status: 0 when every run passed and the
# servers stopped cleanly, 1 otherwise.
set -euo pipefail

cd "$(dirname "$0")/.."
OPS=${OPS-"create get rest-get list health unimplemented"}
CONCURRENCY=${CONCURRENCY:-"1 8 32"}
DURATION=${DURATION:-10s}
WARMUP=${WARMUP:-1s}
TIMEOUT_MS=${TIMEOUT_MS:-10000}
TRANSPORT=${TRANSPORT:-private}
BUILD_DIR=${BUILD_DIR:-build}
ENGINE=${ENGINE-"throughput drain slowcalls"}
ENGINE_TASKS=${ENGINE_TASKS:-2000}
SLOWCALLS=${SLOWCALLS:-5000}
ENGINE_CLIENTS=${ENGINE_CLIENTS:-16}
SLOWCALLS_ARGS=${SLOWCALLS_ARGS:-}
EVENTS=${EVENTS-"latency fanout sse-latency sse-fanout"}
EVENTS_RUNS=${EVENTS_RUNS:-1000}
EVENTS_WATCHERS=${EVENTS_WATCHERS:-10}

if [[ -z ${SKIP_BUILD:-} ]]; then
    cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
    cmake --build "$BUILD_DIR" -j2 --target agentzd agentz-gateway bench_rpc bench_engine bench_events >/dev/null
fi
AGENTZD=$BUILD_DIR/bin/agentzd
BENCH=$BUILD_DIR/bin/bench_rpc
BENCH_ENGINE=$BUILD_DIR/bin/bench_engine
BENCH_EVENTS=$BUILD_DIR/bin/bench_events
for b in "$AGENTZD" "$BENCH" "$BENCH_ENGINE" "$BENCH_EVENTS"; do
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

field() { sed -n "s/.*\"$1\":\([0-9.]*\).*/\1/p" <<<"$2"; }
# field rounded to $3 decimals (default 0); empty when missing.
num() { local v; v=$(field "$1" "$2"); [[ -n $v ]] && printf "%.${3:-0}f" "$v"; }
status=0
rc=0

if [[ -n $OPS ]]; then
# API and gateway only (the table measures the API, not execution) and no rate limits (they
# would measure the limiter); calls carry the local admin key the embedded default writes.
AGENTZ_RATE_LIMIT=0 AGENTZ_RATE_LIMIT_WORKSPACE=0 AGENTZ_RATE_LIMIT_EXPENSIVE=0 \
    "$AGENTZD" --data-dir "$DIR/data" --listen 127.0.0.1:0 --roles api,gateway \
    --gateway-listen 127.0.0.1:0 >"$DIR/stdout" 2>"$DIR/agentzd.log" &
PID=$!
TARGET=
for _ in $(seq 240); do
    TARGET=$(sed -n 's/.*gRPC at \([0-9.:]*\).*/\1/p' "$DIR/stdout" | head -1)
    GATEWAY=$(sed -n 's|^web UI: \(http://[0-9.:]*\)/.*|\1|p' "$DIR/stdout" | head -1)
    [[ -n $TARGET && -n $GATEWAY ]] && break
    kill -0 "$PID" 2>/dev/null || break
    sleep 0.5
done
if [[ -z $TARGET ]]; then
    echo "run.sh: agentzd did not become ready; last log lines:" >&2
    tail -20 "$DIR/agentzd.log" >&2
    exit 1
fi
TOKEN=
for _ in $(seq 20); do
    [[ -s $DIR/data/admin.key ]] && { TOKEN=$(tr -d '\n' <"$DIR/data/admin.key"); break; }
    sleep 0.25
done
[[ -n $TOKEN ]] || { echo "run.sh: no admin key in $DIR/data/admin.key" >&2; exit 1; }
case $TARGET in
127.0.0.1:*) ;;
*) echo "run.sh: refusing non-loopback target $TARGET" >&2; exit 1 ;;
esac

rows=()
declare -A rate
# rest-get runs right after get at each concurrency, so the pair meets the same conditions
# (PostgreSQL's background work, the VM's neighbours) and the ratio compares like with like.
pairs=()
for op in $OPS; do
    [[ $op == rest-get && " $OPS " == *" get "* ]] && continue
    for c in $CONCURRENCY; do
        pairs+=("$op $c")
        [[ $op == get && " $OPS " == *" rest-get "* ]] && pairs+=("rest-get $c")
    done
done
for pair in "${pairs[@]}"; do
    op=${pair% *} c=${pair#* }
    echo "run.sh: $op at concurrency $c for $DURATION" >&2
    extra=()
    [[ $op == rest-get ]] && extra=(--gateway "$GATEWAY")
    if ! out=$("$BENCH" --server "$TARGET" --op "$op" --concurrency "$c" --duration "$DURATION" \
        --warmup "$WARMUP" --timeout-ms "$TIMEOUT_MS" --transport "$TRANSPORT" --token "$TOKEN" \
        "${extra[@]}" --json); then
        status=1
        echo "run.sh: $op at concurrency $c failed" >&2
    fi
    [[ -n $out ]] || { rows+=("| $op | $c | failed | | | | | |"); continue; }
    rate[$op,$c]=$(field ops_per_s "$out")
    rows+=("$(printf '| %s | %s | %s | %s | %s | %s | %s | %s |' "$op" "$c" \
        "$(field ops_per_s "$out")" "$(field p50_ms "$out")" "$(field p90_ms "$out")" \
        "$(field p99_ms "$out")" "$(field max_ms "$out")" "$(field errors "$out")")")
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
if [[ " $OPS " == *" get "* && " $OPS " == *" rest-get "* ]]; then
    # The gateway's target: REST within 1.5x of direct gRPC, i.e. a ratio of at least 0.67.
    echo
    echo "| GetAgent at concurrency | gRPC ops/s | REST (gateway) ops/s | REST / gRPC |"
    echo "|---:|---:|---:|---:|"
    for c in $CONCURRENCY; do
        g=${rate[get,$c]:-} r=${rate[rest-get,$c]:-}
        [[ -n $g && -n $r ]] || continue
        printf '| %s | %s | %s | %s |\n' "$c" "$g" "$r" "$(awk -v g="$g" -v r="$r" 'BEGIN { printf "%.2f", r / g }')"
    done
fi
echo "agentzd stopped with exit status $rc" >&2
fi

# The execution engine: bench_engine starts agentzd (API + worker) and the fake LLM itself.
erows=()
for sc in $ENGINE; do
    case $sc in
    throughput | drain) args=(--tasks "$ENGINE_TASKS") ;;
    slowcalls) args=(--tasks "$SLOWCALLS" --worker-concurrency "$SLOWCALLS")
        # shellcheck disable=SC2206
        args+=($SLOWCALLS_ARGS) ;;
    *) echo "run.sh: unknown ENGINE scenario $sc (throughput, drain, slowcalls)" >&2; status=1; continue ;;
    esac
    echo "run.sh: engine scenario $sc" >&2
    if ! out=$("$BENCH_ENGINE" --scenario "$sc" --agentzd "$AGENTZD" --data-dir "$DIR/engine-$sc" \
        --clients "$ENGINE_CLIENTS" --json "${args[@]}"); then
        status=1
        echo "run.sh: engine scenario $sc failed; log in $DIR/engine-$sc/agentzd.log" >&2
        [[ -n ${KEEP_BENCH_DIR:-} ]] || tail -20 "$DIR/engine-$sc/agentzd.log" >&2 || true
    fi
    case $sc in
    throughput)
        erows+=("$(printf '| throughput | %s tasks created by %s clients, instant LLM | %s tasks/s end to end (CreateTask %s/s) | queue-to-start p50 %s ms, p99 %s ms; idle p50 %s ms, p99 %s ms |' \
            "$(num tasks "$out")" "$(num clients "$out")" "$(num tasks_per_s "$out")" \
            "$(num create_per_s "$out")" "$(num q2s_p50_ms "$out" 1)" "$(num q2s_p99_ms "$out" 1)" \
            "$(num idle_q2s_p50_ms "$out" 1)" "$(num idle_q2s_p99_ms "$out" 1)")") ;;
    drain)
        erows+=("$(printf '| drain | %s queued tasks, one worker process started, instant LLM | %s tasks/s from worker start (%s tasks/s first start to last end) | |' \
            "$(num tasks "$out")" "$(num tasks_per_s "$out")" "$(num exec_tasks_per_s "$out")")") ;;
    slowcalls)
        erows+=("$(printf '| slowcalls | %s LLM calls in flight in one worker | VmRSS %s MB idle, %s MB at peak = %s kB per call; threads %s -> %s | every call aborted %s s after the first CancelTask |' \
            "$(num in_flight "$out")" "$(num rss_idle_kb "$out" | awk '{printf "%.1f", $1/1024}')" \
            "$(num rss_peak_kb "$out" | awk '{printf "%.1f", $1/1024}')" "$(num kb_per_call "$out" 1)" \
            "$(num threads_idle "$out")" "$(num threads_peak "$out")" "$(num all_aborted_s "$out" 1)")") ;;
    esac
done
if [[ ${#erows[@]} -gt 0 ]]; then
    echo
    echo "| scenario | load | result | latency / cancellation |"
    echo "|---|---|---|---|"
    printf '%s\n' "${erows[@]}"
fi

# Real time: bench_events starts an api-only agentzd per scenario and watches runs it cancels.
vrows=()
for sc in $EVENTS; do
    case $sc in
    latency) args=(--scenario latency --runs "$EVENTS_RUNS" --watchers 1) ;;
    fanout) args=(--scenario fanout --runs "$EVENTS_RUNS" --watchers "$EVENTS_WATCHERS") ;;
    sse-latency) args=(--scenario latency --transport sse --runs "$EVENTS_RUNS" --watchers 1) ;;
    sse-fanout) args=(--scenario fanout --transport sse --runs "$EVENTS_RUNS" --watchers "$EVENTS_WATCHERS") ;;
    *) echo "run.sh: unknown EVENTS scenario $sc (latency, fanout, sse-latency, sse-fanout)" >&2; status=1; continue ;;
    esac
    echo "run.sh: events scenario $sc" >&2
    if ! out=$("$BENCH_EVENTS" --agentzd "$AGENTZD" --data-dir "$DIR/events-$sc" --json "${args[@]}"); then
        status=1
        echo "run.sh: events scenario $sc failed; log in $DIR/events-$sc/agentzd.log" >&2
        [[ -n ${KEEP_BENCH_DIR:-} ]] || tail -20 "$DIR/events-$sc/agentzd.log" >&2 || true
    fi
    vrows+=("$(printf '| %s | %s streams (%s runs x %s) on %s connections | VmRSS +%s kB per stream; %s of %s streams ended OK with the whole history | Event.time to watcher p50 %s ms, p99 %s ms (%s events); CancelRun return to watcher p50 %s ms, p99 %s ms = to Redis p50 %s / p99 %s + Redis to watcher p50 %s / p99 %s |' \
        "$sc" "$(num streams "$out")" "$(num runs "$out")" "$(num watchers_per_run "$out")" \
        "$(num connections "$out")" "$(num kb_per_stream "$out" 2)" "$(num ended_ok "$out")" \
        "$(num streams "$out")" "$(num event_lat_p50_ms "$out" 2)" "$(num event_lat_p99_ms "$out" 2)" \
        "$(num event_lat_samples "$out")" "$(num cancel_lat_p50_ms "$out" 2)" "$(num cancel_lat_p99_ms "$out" 2)" \
        "$(num to_redis_p50_ms "$out" 2)" "$(num to_redis_p99_ms "$out" 2)" \
        "$(num redis_to_watcher_p50_ms "$out" 2)" "$(num redis_to_watcher_p99_ms "$out" 2)")")
done
if [[ ${#vrows[@]} -gt 0 ]]; then
    echo
    echo "| scenario | streams | memory, completeness | delivery latency |"
    echo "|---|---|---|---|"
    printf '%s\n' "${vrows[@]}"
fi
exit $status
