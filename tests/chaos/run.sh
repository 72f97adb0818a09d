#!/usr/bin/env bash
# Runs the fault-injection suite (tests/chaos/chaos.py) with Debian's python3 and grpcio:
#   tests/chaos/run.sh --short            CI: every fault once, light load (budget 4 min)
#   tests/chaos/run.sh --long             release check: more load, every fault 3 times
#   tests/chaos/run.sh --soak [--minutes 60]
# Data and logs go to $AGENTZ_TEST_DIR/chaos (default build/chaos); AGENTZD picks the binary.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
export AGENTZD="${AGENTZD:-$repo/build/bin/agentzd}"
if [[ -z "${AGENTZ_TEST_DIR:-}" ]]; then
    export AGENTZ_TEST_DIR="$repo/build"
fi
mkdir -p "$AGENTZ_TEST_DIR"
chmod 755 "$AGENTZ_TEST_DIR"
exec /usr/bin/python3 "$here/chaos.py" "$@"
