// Runs the end-to-end suite against the real stack (build/bin/agentzd with the gateway, the fake
// LLM), one file at a time: node's test runner, which prints its "# pass N / # fail N" summary.
// Needs the built app (npm run build) and the C build (cmake --build build).
import { spawnSync } from "node:child_process";
import { existsSync, readdirSync } from "node:fs";
import { join } from "node:path";
import { ROOT, WEB } from "./browser.mjs";

const bin = process.env.AGENTZ_BIN ?? join(ROOT, "build", "bin");
for (const need of [join(WEB, "dist", "index.html"), join(bin, "agentzd"), join(bin, "agentz-fakellm")]) {
  if (!existsSync(need)) {
    console.error(`e2e: ${need} is missing (npm run build; cmake --build build)`);
    process.exit(1);
  }
}
const only = process.argv.slice(2);
const files = readdirSync(join(WEB, "e2e"))
  .filter((f) => f.endsWith(".test.mjs"))
  .filter((f) => only.length === 0 || only.some((o) => f.includes(o)))
  .sort()
  .map((f) => join("e2e", f));
const r = spawnSync(process.execPath, ["--test", "--test-concurrency=1", "--test-timeout=600000", ...files], { cwd: WEB, stdio: "inherit" });
process.exit(r.status ?? 1);
