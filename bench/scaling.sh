#!/usr/bin/env bash
# The scaling curve of the task path: bench_engine's drain scenario (tasks queued behind an
# API-only agentzd, then worker processes started) with 1, 2 and 4 worker processes, and with
# 1,000 and 10,000 tasks queued (100,000 with --big) for one worker: tasks/s and CPU per task
# (workers, PostgreSQL, Redis) at each point, and after each backlog run the rows and on-disk sizes
# of tasks, task_attempts, events, event_queue and event_seqs and of each of their indexes (with
# their update and delete counts). Prints tables (--json: one JSON object). Everything it starts
# is stopped on exit and its data removed.
#
#   bench/scaling.sh [--tasks N] [--workers "1 2 4"] [--backlogs "1000 10000"] [--big] [--json]
#
#   --tasks N        tasks queued for each worker count (default 3000)
#   --workers LIST   worker process counts (default "1 2 4")
#   --backlogs LIST  queue depths drained by one worker (default "1000 10000"; "" skips them)
#   --big            adds a 100,000-task backlog (about an hour on a busy 2-core machine)
# Environment: BUILD_DIR=build, SKIP_BUILD=1, KEEP_BENCH_DIR=1, CLIENTS=16 (CreateTask threads).
# About 5 minutes with the defaults on a quiet machine, 13 on a loaded one. Exit status 0 when
# every run passed, 1 otherwise, 2 for bad usage.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
# shellcheck source=bench/compare/lib.sh
. bench/compare/lib.sh

TASKS=3000
WORKERS="1 2 4"
BACKLOGS="1000 10000"
JSON=
BUILD_DIR=${BUILD_DIR:-build}
CLIENTS=${CLIENTS:-16}
usage() { sed -n '9,15p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
while [[ $# -gt 0 ]]; do
    case $1 in
    --tasks) TASKS=${2:?}; shift 2 ;;
    --workers) WORKERS=$2; shift 2 ;;
    --backlogs) BACKLOGS=$2; shift 2 ;;
    --big) BACKLOGS="$BACKLOGS 100000"; shift ;;
    --json) JSON=1; shift ;;
    -h | --help) usage ;;
    *) echo "scaling.sh: unknown argument $1" >&2; usage ;;
    esac
done
for n in $TASKS $WORKERS $BACKLOGS; do
    [[ $n =~ ^[1-9][0-9]*$ ]] || { echo "scaling.sh: $n is not a positive integer" >&2; exit 2; }
done

[[ $BUILD_DIR == /* ]] || BUILD_DIR=$ROOT/$BUILD_DIR
bench_init scaling
ensure_build "$BUILD_DIR" agentzd bench_engine || exit 1
BE=$BUILD_DIR/bin/bench_engine
AGENTZD=$BUILD_DIR/bin/agentzd
RESULTS=$BENCH_DIR/results.jsonl
: >"$RESULTS"
status=0

# drain KIND WORKERS TASKS: one drain run; appends its JSON (with the load average and, for a
# backlog run, the table sizes) to RESULTS.
drain() {
    local kind=$1 w=$2 n=$3 dir=$BENCH_DIR/$1-$2-$3 load0
    say "drain: $n queued tasks, $w worker process(es)"
    load0=$(loadavg)
    # The create phase is not under the timeout; the drain of a big backlog may take a while.
    if ! stage "$dir.json" "$BE" --scenario drain --agentzd "$AGENTZD" --data-dir "$dir" --tasks "$n" \
        --workers "$w" --clients "$CLIENTS" --timeout-s 3600 --json; then
        say "drain with $w worker(s), $n tasks failed (log $dir/agentzd.log, $dir/worker*.log)"
        status=1
        return 0
    fi
    : >"$dir.sizes"
    if [[ $kind == backlog ]] && ! pg_sizes "$dir/data/pg" "$dir.sizes"; then status=1; fi
    /usr/bin/python3 - "$kind" "$dir.json" "$dir.sizes" "$load0" >>"$RESULTS" <<'EOF'
import json, sys
kind, path, sizes, load0 = sys.argv[1:5]
d = json.loads(open(path).read().strip().splitlines()[-1])
d.update(kind=kind, load_before=load0.split(), load_after=open("/proc/loadavg").read().split()[:3],
         tables=[json.loads(l) for l in open(sizes) if l.strip()])
print(json.dumps(d))
EOF
    # A 100,000-task data dir is large; its figures are in RESULTS.
    [[ -n ${KEEP_BENCH_DIR:-} ]] || rm -rf "$dir"
}

for w in $WORKERS; do drain workers "$w" "$TASKS"; done
for b in $BACKLOGS; do drain backlog 1 "$b"; done

# The commit measured (BENCH_COMMIT names it for a tree that is not a git checkout), marked when
# the server's sources had uncommitted changes.
commit=${BENCH_COMMIT:-$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')}
if [[ -z ${BENCH_COMMIT:-} && -n $(git -C "$ROOT" status --porcelain -- server proto CMakeLists.txt 2>/dev/null) ]]; then
    commit+=" + uncommitted changes in server/"
fi
/usr/bin/python3 - "$RESULTS" "$JSON" "$commit" "$(nproc)" <<'EOF'
import datetime, json, sys
path, as_json, commit, nproc = sys.argv[1:5]
rows = [json.loads(l) for l in open(path) if l.strip()]
now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
if as_json:
    print(json.dumps({"date": now, "commit": commit, "nproc": int(nproc), "runs": rows}))
    sys.exit(0)
def us(r, k):
    v = r.get(k, -1)
    return f"{v * 1e6 / r['tasks']:,.0f}" if v is not None and v >= 0 else "?"
def idle(r):
    v = r.get("pg_idle_cpu_per_s")
    return f"{v * 1e3:,.0f}" if v is not None and v >= 0 else ""
print(f"\n{now}, commit {commit}, {nproc} cores; drain = tasks queued first, then the workers started\n")
print("| run | workers | tasks queued | tasks/s from worker start | tasks/s first start → last end | "
      "CPU µs per task: workers / PostgreSQL / Redis / total | PostgreSQL CPU with no worker, ms/s | "
      "load average before → after |")
print("|---|---:|---:|---:|---:|---|---:|---|")
for r in rows:
    print(f"| {r['kind']} | {r['workers']} | {r['tasks']:,} | {r['tasks_per_s']:,.0f} | {r['exec_tasks_per_s']:,.0f} | "
          f"{us(r, 'worker_cpu_s')} / {us(r, 'pg_cpu_s')} / {us(r, 'redis_cpu_s')} / {r['cpu_us_per_task']:,.0f} | "
          f"{idle(r)} | {' '.join(r['load_before'])} → {' '.join(r['load_after'])} |")
sized = [r for r in rows if r.get("tables")]
if sized:
    print("\n| tasks queued and run | table | rows | total MB | heap MB | indexes MB | bytes per task (total) | "
          "updates (HOT) | deletes | largest indexes (MB) |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|---|")
    for r in sized:
        for t in r["tables"]:
            idx = sorted((t.get("indexes") or {}).items(), key=lambda kv: -kv[1])[:4]
            st = t.get("stats") or {}
            mb = lambda b: f"{b / 1048576:,.2f}"
            print(f"| {r['tasks']:,} | {t['table']} | {t['rows']:,} | {mb(t['total_bytes'])} | {mb(t['heap_bytes'])} | "
                  f"{mb(t['index_bytes'])} | {t['total_bytes'] / r['tasks']:,.0f} | "
                  f"{st.get('updates', 0):,} ({st.get('hot_updates', 0):,}) | {st.get('deletes', 0):,} | "
                  f"{', '.join(f'{k} {mb(v)}' for k, v in idx)} |")
EOF
exit $status
