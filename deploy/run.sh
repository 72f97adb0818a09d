#!/usr/bin/env bash
# Runs AGENTZ: installs what is missing, builds the server and the web UI, and starts agentzd with
# the api, worker and gateway roles (gRPC on 127.0.0.1:50051, HTTP and the web UI on
# 127.0.0.1:8080). Without AGENTZ_DATABASE_URL and AGENTZ_REDIS_URL it runs its own PostgreSQL and
# Redis under ./.agentz (kept across restarts). AGENTZ_ROLES picks other roles; extra arguments go
# to agentzd (see build/bin/agentzd --help). Ctrl-C stops it all.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

deploy/install-deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j"$(nproc 2>/dev/null || echo 2)" --target agentzd agentz agentz-gateway
deploy/web.sh
exec build/bin/agentzd --roles "${AGENTZ_ROLES:-api,worker,gateway}" "$@"
