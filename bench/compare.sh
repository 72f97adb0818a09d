#!/usr/bin/env bash
# One run, one machine, fsync on: PostgreSQL's own single-row insert commit rate (pgbench on a
# throwaway cluster with agentzd's embedded settings), AGENTZ's durable end-to-end task throughput
# (bench_engine), and BullMQ and Celery running the same number of no-op jobs on a private
# redis-server; prints one table with the rates and the ratios of AGENTZ to each (--json: the
# same as one JSON object). Everything it starts is stopped on exit and its data removed.
#
#   bench/compare.sh [--tasks N] [--seconds S] [--only pgbench,agentz,bullmq,celery] [--json]
#
#   --tasks N      tasks or jobs per system (default 5000)
#   --seconds S    pgbench duration (default 10)
#   --only LIST    the systems to run, comma-separated (default all four)
#   --json         print JSON on stdout instead of the table
# Environment: BUILD_DIR=build, SKIP_BUILD=1 (use the binaries already built), KEEP_BENCH_DIR=1,
# CLIENTS=16 (producers and pgbench clients), BULLMQ_CONCURRENCY=16, CELERY_CONCURRENCY=2.
# Needs deploy/install-deps.sh --bench (Celery) and npm (BullMQ, installed into bench/compare/
# node_modules with npm ci); it runs both itself when something is missing. About 3 minutes with
# the defaults. Exit status 0 when every system ran, 1 if one failed, 2 for bad usage.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
# shellcheck source=bench/compare/lib.sh
. bench/compare/lib.sh

TASKS=5000
SECONDS_PG=10
ONLY=pgbench,agentz,bullmq,celery
JSON=
BUILD_DIR=${BUILD_DIR:-build}
CLIENTS=${CLIENTS:-16}
BULLMQ_CONCURRENCY=${BULLMQ_CONCURRENCY:-16}
CELERY_CONCURRENCY=${CELERY_CONCURRENCY:-2}
usage() { sed -n '8,13p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
while [[ $# -gt 0 ]]; do
    case $1 in
    --tasks) TASKS=${2:?}; shift 2 ;;
    --seconds) SECONDS_PG=${2:?}; shift 2 ;;
    --only) ONLY=${2:?}; shift 2 ;;
    --json) JSON=1; shift ;;
    -h | --help) usage ;;
    *) echo "compare.sh: unknown argument $1" >&2; usage ;;
    esac
done
[[ $TASKS =~ ^[1-9][0-9]*$ && $SECONDS_PG =~ ^[1-9][0-9]*$ ]] || { echo "compare.sh: --tasks and --seconds take positive integers" >&2; exit 2; }
for s in ${ONLY//,/ }; do
    case $s in pgbench | agentz | bullmq | celery) ;; *) echo "compare.sh: --only: unknown system $s" >&2; exit 2 ;; esac
done
want() { [[ ",$ONLY," == *",$1,"* ]]; }
[[ $BUILD_DIR == /* ]] || BUILD_DIR=$ROOT/$BUILD_DIR

bench_init compare
RESULTS=$BENCH_DIR/results.jsonl
: >"$RESULTS"
status=0
fail() { say "$*"; status=1; }
# record SYSTEM MODE MEASURE JSON-FILE LOAD-BEFORE: one result line (the driver's JSON, plus ours).
record() {
    /usr/bin/python3 - "$@" >>"$RESULTS" <<'EOF'
import json, sys
system, mode, measure, path, load0 = sys.argv[1:6]
with open(path) as f:
    text = f.read().strip().splitlines()
d = json.loads(text[-1]) if text else {}
d.update(system=system, mode=mode, measure=measure, load_before=load0.split(),
         load_after=open("/proc/loadavg").read().split()[:3])
print(json.dumps(d))
EOF
}

# with_rate FIELD IN OUT: the last JSON line of IN with "rate" set from its FIELD, into OUT;
# fails when the line or the field is missing.
with_rate() {
    /usr/bin/python3 -c 'import json, sys
d = json.loads(open(sys.argv[2]).read().strip().splitlines()[-1])
d["rate"] = d[sys.argv[1]]
print(json.dumps(d))' "$1" "$2" >"$3" 2>/dev/null
}

# --- what the systems need
if want agentz; then ensure_build "$BUILD_DIR" agentzd bench_engine || exit 1; fi
if want celery && ! /usr/bin/python3 -c 'import celery, redis' 2>/dev/null; then
    say "Celery is missing: running deploy/install-deps.sh --bench"
    deploy/install-deps.sh --bench >&2 || { say "install Celery with deploy/install-deps.sh --bench"; exit 1; }
fi
if want bullmq && [[ ! -d bench/compare/node_modules/bullmq || bench/compare/package-lock.json -nt bench/compare/node_modules/.package-lock.json ]]; then
    say "installing BullMQ into bench/compare/node_modules (npm ci)"
    (cd bench/compare && npm ci --no-audit --no-fund --loglevel=error >&2) || { say "npm ci in bench/compare failed"; exit 1; }
fi
if want pgbench; then [[ -x $PG_BIN/pgbench ]] || { say "$PG_BIN/pgbench is missing (postgresql-15: deploy/install-deps.sh)"; exit 1; }; fi
if want bullmq || want celery; then command -v redis-server >/dev/null || { say "redis-server is missing (deploy/install-deps.sh)"; exit 1; }; fi

# --- 1. PostgreSQL: one single-row INSERT per transaction, shaped like a small task row
if want pgbench; then
    say "pgbench: $CLIENTS clients, one single-row insert per transaction, ${SECONDS_PG} s"
    load0=$(loadavg)
    if pg_up "$BENCH_DIR/pg" "$BENCH_DIR/pgsock"; then
        as_pg "$PG_BIN/psql" -X -q -h "$BENCH_DIR/pgsock" -U agentz -d postgres -c 'CREATE DATABASE bench' >/dev/null
        as_pg "$PG_BIN/psql" -X -q -h "$BENCH_DIR/pgsock" -U agentz -d bench -c \
            'CREATE TABLE task_rows (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), description text NOT NULL,
                                     create_time timestamptz NOT NULL DEFAULT now())' >/dev/null
        echo "INSERT INTO task_rows (description) VALUES ('Benchmark task: reply with one word.');" >"$BENCH_DIR/insert.sql"
        chmod 644 "$BENCH_DIR/insert.sql"
        if stage "$BENCH_DIR/pgbench.out" "${PG_AS[@]}" "$PG_BIN/pgbench" -h "$BENCH_DIR/pgsock" -U agentz -n \
            -c "$CLIENTS" -j 2 -T "$SECONDS_PG" -f "$BENCH_DIR/insert.sql" bench; then
            tps=$(sed -n 's/^tps = \([0-9.]*\) (without initial connection time).*/\1/p' "$BENCH_DIR/pgbench.out")
            lat=$(sed -n 's/^latency average = \([0-9.]*\) ms.*/\1/p' "$BENCH_DIR/pgbench.out")
            rows=$(as_pg "$PG_BIN/psql" -X -q -A -t -h "$BENCH_DIR/pgsock" -U agentz -d bench -c 'SELECT count(*) FROM task_rows')
            if [[ -n $tps ]]; then
                printf '{"rate":%s,"latency_avg_ms":%s,"rows":%s,"clients":%s,"seconds":%s}\n' \
                    "$tps" "${lat:-null}" "${rows:-null}" "$CLIENTS" "$SECONDS_PG" >"$BENCH_DIR/pgbench.json"
                record pgbench insert "single-row INSERT commits, $CLIENTS clients, fsync on" "$BENCH_DIR/pgbench.json" "$load0"
            else fail "pgbench printed no tps:"; cat "$BENCH_DIR/pgbench.out" >&2; fi
        else fail "pgbench failed:"; cat "$BENCH_DIR/pgbench.out" >&2; fi
        pg_down "$BENCH_DIR/pg"
    else fail "the pgbench cluster did not start"; fi
fi

# --- 2. AGENTZ: durable tasks end to end (create -> claimed -> succeeded, instant fake LLM)
if want agentz; then
    BE=$BUILD_DIR/bin/bench_engine
    scenarios=(throughput)
    # The bulk path (a CreateTasks batch), once bench_engine has a scenario for it.
    "$BE" --help 2>&1 | grep -qE -- '--scenario [a-z|]*bulk' && scenarios+=(bulk)
    for sc in "${scenarios[@]}"; do
        say "agentz: bench_engine --scenario $sc --tasks $TASKS --clients $CLIENTS"
        load0=$(loadavg)
        if stage "$BENCH_DIR/agentz-$sc.json" "$BE" --scenario "$sc" --agentzd "$BUILD_DIR/bin/agentzd" \
            --data-dir "$BENCH_DIR/agentz-$sc" --tasks "$TASKS" --clients "$CLIENTS" --json; then
            measure="durable tasks end to end, CreateTask from $CLIENTS clients, instant LLM"
            [[ $sc == bulk ]] && measure="durable tasks end to end, bulk path (bench_engine --scenario bulk)"
            if with_rate tasks_per_s "$BENCH_DIR/agentz-$sc.json" "$BENCH_DIR/agentz-$sc.rec"; then
                record agentz "$sc" "$measure" "$BENCH_DIR/agentz-$sc.rec" "$load0"
            else fail "bench_engine --scenario $sc printed no tasks_per_s"; fi
        else fail "bench_engine --scenario $sc failed (log $BENCH_DIR/agentz-$sc/agentzd.log)"; fi
    done
fi

# --- 3./4. BullMQ and Celery on a private redis-server with the embedded one's persistence
if want bullmq || want celery; then
    mkdir -p "$BENCH_DIR/redis"
    REDIS_SOCK=$BENCH_DIR/redis/redis.sock
    redis-server --port 0 --unixsocket "$REDIS_SOCK" --unixsocketperm 700 --dir "$BENCH_DIR/redis" \
        --appendonly yes --save "900 1" --daemonize yes --logfile "$BENCH_DIR/redis/redis.log" \
        --pidfile "$BENCH_DIR/redis/redis.pid" >/dev/null
    for _ in $(seq 100); do redis-cli -s "$REDIS_SOCK" ping >/dev/null 2>&1 && break; sleep 0.1; done
    redis-cli -s "$REDIS_SOCK" ping >/dev/null || { say "redis-server did not start"; exit 1; }
fi
if want bullmq; then
    for mode in add bulk; do
        say "bullmq: $TASKS no-op jobs, $CLIENTS producers ($mode), Worker concurrency $BULLMQ_CONCURRENCY"
        redis-cli -s "$REDIS_SOCK" flushall >/dev/null
        load0=$(loadavg)
        if stage "$BENCH_DIR/bullmq-$mode.json" node bench/compare/bullmq.mjs --redis "$REDIS_SOCK" --jobs "$TASKS" \
            --producers "$CLIENTS" --concurrency "$BULLMQ_CONCURRENCY" --mode "$mode"; then
            what="no-op jobs, $CLIENTS producers with queue.add, first add to last completion"
            [[ $mode == bulk ]] && what="no-op jobs, $CLIENTS producers with addBulk (1,000 a call), first add to last completion"
            if with_rate jobs_per_s "$BENCH_DIR/bullmq-$mode.json" "$BENCH_DIR/bullmq-$mode.rec"; then
                record bullmq "$mode" "$what" "$BENCH_DIR/bullmq-$mode.rec" "$load0"
            else fail "bullmq.mjs printed no jobs_per_s"; fi
        else fail "bullmq ($mode) failed"; fi
    done
fi
if want celery; then
    say "celery: $TASKS no-op tasks, $CLIENTS producer threads, one worker (prefork, concurrency $CELERY_CONCURRENCY)"
    redis-cli -s "$REDIS_SOCK" flushall >/dev/null
    load0=$(loadavg)
    if stage "$BENCH_DIR/celery.json" /usr/bin/python3 bench/compare/celery_bench.py --redis "$REDIS_SOCK" \
        --tasks "$TASKS" --producers "$CLIENTS" --concurrency "$CELERY_CONCURRENCY" --log "$BENCH_DIR/celery-worker.log"; then
        if with_rate tasks_per_s "$BENCH_DIR/celery.json" "$BENCH_DIR/celery.rec"; then
            record celery apply_async "no-op tasks, $CLIENTS producer threads, Redis broker and results, first send to last result" \
                "$BENCH_DIR/celery.rec" "$load0"
        else fail "celery_bench.py printed no tasks_per_s"; fi
    else fail "celery failed (worker log $BENCH_DIR/celery-worker.log)"; fi
fi

# --- the table (or JSON) with the ratios
# The commit measured (BENCH_COMMIT names it for a tree that is not a git checkout), marked when
# the server's sources had uncommitted changes.
commit=${BENCH_COMMIT:-$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')}
if [[ -z ${BENCH_COMMIT:-} && -n $(git -C "$ROOT" status --porcelain -- server proto CMakeLists.txt 2>/dev/null) ]]; then
    commit+=" + uncommitted changes in server/"
fi
cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)
/usr/bin/python3 - "$RESULTS" "$JSON" "$commit" "$(nproc)" "$cpu" "$TASKS" <<'EOF'
import datetime, json, sys
path, as_json, commit, nproc, cpu, tasks = sys.argv[1:7]
rows = [json.loads(l) for l in open(path) if l.strip()]
def rate(system, mode=None):
    for r in rows:
        if r["system"] == system and (mode is None or r["mode"] == mode):
            return r["rate"]
    return None
agentz, bulk, pg = rate("agentz", "throughput"), rate("agentz", "bulk"), rate("pgbench")
bull, celery = rate("bullmq", "add"), rate("celery")
ratios = []
def ratio(name, a, b, target=None):
    if a and b:
        ratios.append({"ratio": name, "value": a / b, "target": target})
ratio("AGENTZ end to end / pgbench", agentz, pg, 0.3)
ratio("AGENTZ bulk / pgbench", bulk, pg, 1.0)
ratio("AGENTZ end to end / BullMQ (add)", agentz, bull)
ratio("AGENTZ bulk / BullMQ (addBulk)", bulk, rate("bullmq", "bulk"))
ratio("AGENTZ end to end / Celery", agentz, celery)
now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
out = {"date": now, "commit": commit, "nproc": int(nproc), "cpu": cpu, "tasks": int(tasks),
       "results": rows, "ratios": ratios}
if as_json:
    print(json.dumps(out))
    sys.exit(0)
names = {"pgbench": "PostgreSQL 15 (pgbench)", "agentz": "AGENTZ", "bullmq": "BullMQ", "celery": "Celery"}
print(f"\n{now}, commit {commit}, {nproc} cores, {cpu}, {tasks} tasks or jobs per system\n")
print("| system | what is measured | rate/s | latency | load average before → after |")
print("|---|---|---:|---|---|")
for r in rows:
    lat = ""
    if r["system"] == "agentz" and "q2s_p50_ms" in r:
        lat = f"queue-to-start p50 {r['q2s_p50_ms']:.1f} ms, p99 {r['q2s_p99_ms']:.1f} ms"
        if "create_per_s" in r:
            call = "CreateTasks" if r["mode"] == "bulk" else "CreateTask"
            lat += f"; {call} {r['create_per_s']:,.0f}/s"
    elif r["system"] == "pgbench" and r.get("latency_avg_ms") is not None:
        lat = f"commit latency avg {r['latency_avg_ms']:.2f} ms"
    sysname = names[r["system"]] + (f" ({r['mode']})" if r["system"] in ("agentz", "bullmq") else "")
    print(f"| {sysname} | {r['measure']} | {r['rate']:,.0f} | {lat} | {' '.join(r['load_before'])} → {' '.join(r['load_after'])} |")
if ratios:
    print("\n| ratio | value | target (issue 12) |")
    print("|---|---:|---:|")
    for x in ratios:
        t = f"≥ {x['target']:.1f}x" if x["target"] else ""
        print(f"| {x['ratio']} | {x['value']:.3f}x | {t} |")
EOF
exit $status
