#!/usr/bin/env bash
# Installs every Debian 12 package needed to build and run AGENTZ (and, with --test, to test it:
# Chromium for the web UI's browser tests; with --bench, Celery for bench/compare.sh). Idempotent
# and quick when everything is present (dpkg-query only; apt-get update runs only when something is
# missing). Checks that Node.js and npm are recent enough for the web UI. Never prompts: CI runs this
# with no standard input.
set -euo pipefail

PACKAGES=(
    # build
    build-essential cmake pkg-config git
    # gRPC and protobuf (C core, protobuf-c, protoc for the descriptor set)
    libgrpc-dev protobuf-c-compiler libprotobuf-c-dev protobuf-compiler libprotobuf-dev
    grpc-proto golang-github-grpc-ecosystem-grpc-gateway-dev
    # libraries the server and CLI link
    libpq-dev libhiredis-dev libcurl4-openssl-dev libssl-dev libjwt-dev libjansson-dev libyaml-dev
    libuv1-dev
    # the HTTP gateway: h2o (HTTP/1.1, HTTP/2, WebSocket through wslay) and zlib for the web UI's files
    libh2o-dev libwslay-dev zlib1g-dev
    # tests
    libcunit1-dev python3-grpcio python3-protobuf
    # fuzzing: clang with libFuzzer and the sanitizer runtimes (deploy/fuzz.sh)
    clang libclang-rt-14-dev
    # the embedded default runs a private PostgreSQL 15 cluster and redis-server
    postgresql-15 postgresql-client-15 redis-server
    # pgrep/kill and runuser (used to run PostgreSQL as the postgres user when agentzd is root)
    procps util-linux
    # test certificates for the TLS and mTLS tests
    openssl
    # the gateway suites drive it with curl as well as with python's http.client
    curl
    # the web UI is built with Node.js and npm (npm ships with the machine's nodejs)
    nodejs
)
# Only the test command needs these: the browser the web UI's end-to-end tests drive (Playwright
# launches Debian's chromium; browsers are never downloaded).
TEST_PACKAGES=(chromium fonts-dejavu-core
    # tests/chaos finds which process owns a PostgreSQL connection with ss
    iproute2
    # tests/python/test_deploy.py: parses the manifests, lints deploy/compose.yaml
    python3-yaml docker-compose)
# and renders deploy/k8s with kubectl kustomize: Debian's kubectl, unless another package (the
# Google Cloud SDK's "kubectl") already owns /usr/bin/kubectl, which kubernetes-client would clash with.
command -v kubectl >/dev/null 2>&1 || TEST_PACKAGES+=(kubernetes-client)
# Only bench/compare.sh needs these: Celery with its Redis broker and result backend, run side by
# side with AGENTZ (pgbench ships with postgresql-15; BullMQ comes from npm in bench/compare/).
BENCH_PACKAGES=(python3-celery python3-redis)
NODE_MIN=20.19

say() { printf 'install-deps: %s\n' "$*"; }

# One dpkg-query for all packages keeps the already-installed case fast. It prints a line only for
# packages it knows (and exits 1 if any is unknown), so anything not listed as installed is missing.
missing_from() {
    local -A have=()
    local name status
    while read -r name status; do
        [[ "$status" == "installed" ]] && have[$name]=1
    done < <(dpkg-query -W -f='${Package} ${db:Status-Status}\n' "$@" 2>/dev/null || true)
    for name in "$@"; do
        [[ -n "${have[$name]:-}" ]] || printf '%s\n' "$name"
    done
}

case "${1:-}" in
    "") ;;
    --test) PACKAGES+=("${TEST_PACKAGES[@]}") ;;
    --bench) PACKAGES+=("${BENCH_PACKAGES[@]}") ;;
    *) printf 'usage: deploy/install-deps.sh [--test | --bench]\n' >&2; exit 2 ;;
esac

# Vite needs Node.js >= 20.19; Debian 12's own nodejs is 18, so a machine needs a newer one.
check_node() {
    local v
    if ! v=$(node --version 2>/dev/null); then
        say "node is not installed" >&2
        return 1
    fi
    v=${v#v}
    if [[ $(printf '%s\n%s\n' "$NODE_MIN" "$v" | sort -V | head -n 1) != "$NODE_MIN" ]]; then
        say "node $v is older than $NODE_MIN, which the web UI's build needs" >&2
        return 1
    fi
    if ! command -v npm >/dev/null 2>&1; then
        say "npm is not installed (it ships with Node.js $NODE_MIN+)" >&2
        return 1
    fi
}

mapfile -t missing < <(missing_from "${PACKAGES[@]}")

if [[ ${#missing[@]} -eq 0 ]]; then
    check_node
    say "all ${#PACKAGES[@]} packages already installed, nothing to do"
    exit 0
fi

SUDO=()
if [[ $(id -u) -ne 0 ]]; then
    if ! command -v sudo >/dev/null 2>&1; then
        say "cannot install ${missing[*]}: not root and sudo is not installed" >&2
        exit 1
    fi
    # -n: fail instead of asking for a password we could never read in CI.
    SUDO=(sudo -n)
fi

export DEBIAN_FRONTEND=noninteractive
APT_OPTS=(-y -q -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold)

say "missing ${#missing[@]} packages: ${missing[*]}"
say "running apt-get update"
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q </dev/null
say "running apt-get install ${missing[*]}"
# The postgresql-15 package creates and starts a "main" cluster on port 5432, and redis-server starts
# a system redis on 6379. AGENTZ does not use either (it runs private instances under
# AGENTZ_DATA_DIR); they are left as Debian set them up.
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install "${APT_OPTS[@]}" "${missing[@]}" </dev/null

mapfile -t still_missing < <(missing_from "${missing[@]}")
if [[ ${#still_missing[@]} -ne 0 ]]; then
    say "packages still not installed after apt-get: ${still_missing[*]}" >&2
    exit 1
fi
say "installed ${missing[*]}"
check_node
