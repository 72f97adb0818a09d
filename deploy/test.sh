#!/usr/bin/env bash
# The whole test suite, exactly as CI runs it (.ci/run calls this): installs what is missing,
# checks gen/ is fresh, builds with -Werror, runs the unit, integration and Python suites
# (python3-grpcio, and the HTTP gateway through http.client and curl), builds the web UI and runs
# its unit tests, npm's Connect clients against the gateway and the browser suite (Chromium),
# then builds with AddressSanitizer + UBSan and runs the unit, integration and gateway suites
# again, and finally runs every fuzz target under libFuzzer for a bounded time (deploy/fuzz.sh).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
jobs=$(nproc 2>/dev/null || echo 2)

step() { printf '\n==== %s\n' "$*"; }

step "dependencies"
deploy/install-deps.sh --test

step "gen/ is up to date with proto/"
deploy/gen.sh --check

# Integration suites run PostgreSQL as the postgres user when we are root, so their data lives
# where that user can reach it, fresh for every run.
export AGENTZ_TEST_DIR="${AGENTZ_TEST_DIR:-$(mktemp -d /tmp/agentz-test.XXXXXX)}"
chmod 755 "$AGENTZ_TEST_DIR"
cleanup() {
    # Stop anything a failed suite left running, then drop the data.
    pkill -f "agentzd --data-dir $AGENTZ_TEST_DIR" 2>/dev/null || true
    sleep 1
    for d in "$AGENTZ_TEST_DIR"/*/pg "$AGENTZ_TEST_DIR"/*/*/pg; do
        [ -d "$d" ] || continue
        if [ "$(id -u)" = 0 ]; then
            runuser -u postgres -- /usr/lib/postgresql/15/bin/pg_ctl -D "$d" stop -m immediate >/dev/null 2>&1 || true
        else
            /usr/lib/postgresql/15/bin/pg_ctl -D "$d" stop -m immediate >/dev/null 2>&1 || true
        fi
    done
    pkill -f "redis-server.*$AGENTZ_TEST_DIR" 2>/dev/null || true
    [ -n "${KEEP_TEST_DIR:-}" ] || rm -rf "$AGENTZ_TEST_DIR"
}
trap cleanup EXIT

passed=0
failed=0
run_suite() { # name, command...
    local name=$1
    shift
    if "$@"; then
        passed=$((passed + 1))
    else
        failed=$((failed + 1))
        printf 'FAILED: %s\n' "$name"
    fi
}

step "build (-Werror)"
cmake -S . -B build -DAZ_WERROR=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j"$jobs"

step "unit and integration suites"
run_suite "ctest" ctest --test-dir build --output-on-failure --timeout 600

step "Python suites: python3-grpcio, and the HTTP gateway through http.client and curl"
run_suite "python" env AGENTZD="$root/build/bin/agentzd" /usr/bin/python3 -m unittest discover -s tests/python -v

step "chaos: faults injected under load, nothing lost (tests/chaos, short mode)"
run_suite "chaos" tests/chaos/run.sh --short

step "web UI: npm ci, build, unit tests (vitest), bundle budget"
if deploy/web.sh --test; then
    run_suite "web size" bash -c 'cd web && npm run --silent size'
    step "npm's Connect clients (grpc-web, Connect JSON and binary) against the gateway"
    run_suite "web clients" bash -c 'cd web && npm run --silent test:clients </dev/null'
    step "web UI end to end in Chromium against agentzd with the gateway"
    run_suite "web e2e" bash -c 'cd web && npm run --silent e2e </dev/null'
else
    failed=$((failed + 1))
    printf 'FAILED: web build or unit tests\n'
fi

step "build with AddressSanitizer + UndefinedBehaviorSanitizer"
cmake -S . -B build-asan -DAZ_SANITIZE=ON -DAZ_WERROR=ON -DCMAKE_BUILD_TYPE=Debug >/dev/null
cmake --build build-asan -j"$jobs"

step "unit and integration suites under ASan + UBSan"
export ASAN_OPTIONS="detect_leaks=1:abort_on_error=0:halt_on_error=1:exitcode=23"
export LSAN_OPTIONS="suppressions=$root/tests/lsan.supp:print_suppressions=0"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
run_suite "ctest (asan)" ctest --test-dir build-asan --output-on-failure --timeout 900

step "the HTTP gateway suite under ASan + UBSan"
mkdir -p "$AGENTZ_TEST_DIR/asan" && chmod 755 "$AGENTZ_TEST_DIR/asan"
run_suite "python gateway (asan)" env AGENTZD="$root/build-asan/bin/agentzd" AGENTZ_TEST_DIR="$AGENTZ_TEST_DIR/asan" \
    /usr/bin/python3 -m unittest tests/python/test_gateway.py

# The seed corpora were replayed by both ctest runs above (label fuzz); this step mutates them.
step "fuzz targets under libFuzzer (${FUZZ_SECONDS:-20} s each)"
if command -v clang >/dev/null 2>&1; then
    run_suite "fuzz" env FUZZ_SECONDS="${FUZZ_SECONDS:-20}" deploy/fuzz.sh
else
    printf 'clang is not installed: fuzzing skipped\n'
fi

printf '\ntest: %d passed, %d failed\n' "$passed" "$failed"
[ "$failed" -eq 0 ]
