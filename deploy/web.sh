#!/usr/bin/env bash
# Builds the web UI (web/ -> web/dist, which the gateway serves at /): npm ci when
# package-lock.json changed since the last install, then the build when any input is newer than
# the last build. `deploy/web.sh --test` also runs the unit tests (vitest). Quick when nothing
# changed. Needs Node.js >= 20.19 and npm (deploy/install-deps.sh checks them).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
web=$root/web
say() { printf 'web: %s\n' "$*"; }

[[ -f $web/package.json ]] || { say "no web/ in this tree: nothing to build"; exit 0; }
cd "$web"

# npm ci only when the lock file changed: it deletes and rewrites node_modules (~30 s).
stamp=node_modules/.agentz-lock.sha256
want=$(sha256sum package-lock.json | cut -d' ' -f1)
if [[ ! -f $stamp || $(cat "$stamp") != "$want" ]]; then
    say "installing npm packages (npm ci)"
    npm ci --no-audit --no-fund --loglevel=error </dev/null
    printf '%s\n' "$want" >"$stamp"
fi

# Rebuild when a source, the protos or the build configuration is newer than the last build.
built=dist/.agentz-built
if [[ ! -f $built ]] || [[ -n $(find src index.html package.json package-lock.json vite.config.ts \
        tsconfig.json scripts "$root/proto" -newer "$built" -type f 2>/dev/null | grep -v '^src/gen/' | head -n 1) ]]; then
    say "building the web UI (npm run build)"
    npm run --silent build </dev/null
    touch "$built"
else
    say "web/dist is up to date"
fi

if [[ ${1:-} == --test ]]; then
    say "unit tests (vitest)"
    npm test --silent </dev/null
fi
