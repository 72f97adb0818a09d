#!/usr/bin/env bash
# Regenerates the expected results of test/crewai/*/ with the CLI itself
# (`agentz import crewai --dry-run` and its warnings), so src/lib/crewai.test.ts checks that the
# UI's CrewAI mapping equals the CLI's. Needs build/bin/agentz (cmake --build build --target agentz).
set -euo pipefail
web=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cli="$web/../build/bin/agentz"
gen() { # dir, extra args...
    local d=$1
    shift
    (cd "$d" && "$cli" import crewai . --dry-run -o json "$@" >expected.json 2>stderr.txt) || true
    [ -s "$d/expected.json" ] || rm -f "$d/expected.json"
}
fixtures="$web/../tests/unit/fixtures/crewai"
for d in "$web"/test/crewai/*/; do
    d=${d%/}
    args=()
    name=$(node -e 'const a=require(process.argv[1]); process.stdout.write(a.name??"")' "$d/args.json")
    process=$(node -e 'const a=require(process.argv[1]); process.stdout.write(a.process??"")' "$d/args.json")
    llm=$(node -e 'const a=require(process.argv[1]); process.stdout.write(a.managerLlm??"")' "$d/args.json")
    [ -n "$name" ] && args+=(--name "$name")
    [ -n "$process" ] && args+=(--process "$process")
    [ -n "$llm" ] && args+=(--manager-llm "$llm")
    gen "$d" "${args[@]+"${args[@]}"}"
done
# The CLI's own fixtures, run where they are (their messages name the files' paths).
for p in latest_ai_development market_research broken_syntax broken_agent; do
    out="$web/test/crewai-cli/$p"
    mkdir -p "$out"
    (cd "$fixtures" && "$cli" import crewai "$p" --dry-run -o json >"$out/expected.json" 2>"$out/stderr.txt") || true
    [ -s "$out/expected.json" ] || rm -f "$out/expected.json"
done
