#!/usr/bin/env bash
# Builds the libFuzzer targets (clang, -DAZ_FUZZ=ON, in build-fuzz/) and runs each for
# FUZZ_SECONDS (default 20), two at a time on two cores or more. A crash, leak, sanitizer report or
# broken invariant fails the run; the input that caused it is kept in build-fuzz/artifacts/<target>/.
# New coverage found during a run goes to build-fuzz/corpus/<target>/ (never into tests/fuzz/corpus:
# promote small interesting inputs there by hand). See docs/fuzzing.md.
#
#   deploy/fuzz.sh                        # every target, 20 s each (what deploy/test.sh runs)
#   FUZZ_SECONDS=600 deploy/fuzz.sh       # longer runs on demand
#   deploy/fuzz.sh fuzz_yaml fuzz_crewai  # only these targets
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
seconds=${FUZZ_SECONDS:-20}
build=${FUZZ_BUILD_DIR:-build-fuzz}
parallel=${FUZZ_JOBS:-$(nproc 2>/dev/null || echo 2)}
[ "$parallel" -ge 1 ] || parallel=1

say() { printf 'fuzz: %s\n' "$*"; }

if ! command -v clang >/dev/null 2>&1; then
    say "clang is not installed (deploy/install-deps.sh installs it); nothing to do" >&2
    exit 1
fi

# -Werror stays with the gcc builds: this build is about crashes, not clang-only warnings.
CC=clang cmake -S . -B "$build" -DAZ_FUZZ=ON -DAZ_WERROR=OFF -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$build" -j"$parallel" --target fuzz

if [ "$#" -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <(cd tests/fuzz && ls fuzz_*.c | sed 's/\.c$//')
fi

# halt_on_error: the first report ends the target; detect_leaks: leaks are findings too.
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:halt_on_error=1:abort_on_error=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"

run_one() { # target
    local t=$1 bin="$build/bin/$1"
    if [ ! -x "$bin" ]; then
        say "$t: not built (its code may not exist yet); skipped"
        return 0
    fi
    mkdir -p "$build/corpus/$t" "$build/artifacts/$t"
    # The first corpus directory receives new inputs; the committed seeds are only read.
    if "$bin" -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=25 -print_final_stats=1 \
        -artifact_prefix="$build/artifacts/$t/" "$build/corpus/$t" "tests/fuzz/corpus/$t" \
        >"$build/$t.log" 2>&1; then
        say "$t: ok ($(grep -o 'stat::number_of_executed_units: *[0-9]*' "$build/$t.log" | grep -o '[0-9]*$') runs in ${seconds}s)"
        return 0
    fi
    say "$t: FAILED; reproduce with: $bin $build/artifacts/$t/<file>" >&2
    grep -E 'ERROR|invariant|SUMMARY|#[0-9]+ 0x' "$build/$t.log" | head -n 40 >&2 || true
    ls "$build/artifacts/$t" >&2 || true
    return 1
}

failed=0
pids=()
for t in "${targets[@]}"; do
    run_one "$t" &
    pids+=($!)
    if [ "${#pids[@]}" -ge "$parallel" ]; then
        wait "${pids[0]}" || failed=$((failed + 1))
        pids=("${pids[@]:1}")
    fi
done
for p in "${pids[@]}"; do
    wait "$p" || failed=$((failed + 1))
done
if [ "$failed" -ne 0 ]; then
    say "$failed target(s) failed; logs in $build/<target>.log"
    exit 1
fi
say "all ${#targets[@]} targets ran ${seconds}s without a finding"
