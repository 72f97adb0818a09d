#!/usr/bin/env bash
# Runs AGENTZ: installs what is missing, builds, and starts agentzd. Without AGENTZ_DATABASE_URL
# and AGENTZ_REDIS_URL it runs its own PostgreSQL and Redis under ./.agentz (kept across
# restarts). Extra arguments go to agentzd (see build/bin/agentzd --help). Ctrl-C stops it all.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

deploy/install-deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j"$(nproc 2>/dev/null || echo 2)" --target agentzd agentz
exec build/bin/agentzd "$@"
