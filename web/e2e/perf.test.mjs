// @ts-check
// The run view holding 1,000+ live events without jank: a step whose model streams 1,500 token
// deltas (plus its durable events), measured in the browser: long tasks, frame intervals and the
// events applied. The figures go to e2e/out/performance.json (copied into docs/performance.md).
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { launch, OUT, ROOT } from "./browser.mjs";
import { makeWorkflow, runCounts, startRun } from "./fixtures.mjs";
import { startStack } from "./stack.mjs";

/** @type {Awaited<ReturnType<typeof startStack>>} */
let stack;
/** @type {Awaited<ReturnType<typeof launch>>} */
let b;
/** @type {import("node:child_process").ChildProcess | null} */
let fast = null;
let fastUrl = "";

before(async () => {
  stack = await startStack();
  // A second fake LLM for one agent: 1,500 one-character chunks, 2 ms apart.
  fast = spawn(join(process.env.AGENTZ_BIN ?? join(ROOT, "build", "bin"), "agentz-fakellm"), ["--text", "x".repeat(1500), "--chunk-size", "1", "--chunk-delay-ms", "2"], { stdio: ["ignore", "pipe", "inherit"] });
  fastUrl = await new Promise((resolve, reject) => {
    const rl = createInterface({ input: /** @type {import("node:stream").Readable} */ (fast?.stdout) });
    rl.on("line", (l) => {
      const m = /fakellm listening on (\S+)/.exec(l);
      if (m) resolve(m[1]);
    });
    fast?.on("exit", (c) => reject(new Error(`agentz-fakellm exited ${c}`)));
  });
  b = await launch();
  await b.page.goto(stack.uiUrl);
  await b.page.getByRole("heading", { name: "Agents" }).waitFor();
});
after(async () => {
  fast?.kill("SIGTERM");
  await b?.close();
  await stack?.stop();
});

test("1,000+ live events without jank", async () => {
  const { workflowId } = await makeWorkflow(stack, { name: "perf", steps: 2, llm: { provider: "openai", model: "fake", baseUrl: fastUrl } });
  const runId = await startRun(stack, workflowId);
  const { page } = b;
  await page.goto(new URL(`/runs/${runId}`, stack.origin).toString());
  await page.evaluate(() => {
    const w = /** @type {any} */ (window); // a measurement bag on window, read back below
    w.__perf = { longTasks: [], frames: [] };
    new PerformanceObserver((l) => {
      for (const e of l.getEntries()) w.__perf.longTasks.push(e.duration);
    }).observe({ type: "longtask", buffered: false });
    let last = performance.now();
    const tick = () => {
      const now = performance.now();
      w.__perf.frames.push(now - last);
      last = now;
      if (!w.__perf.stop) requestAnimationFrame(tick);
    };
    requestAnimationFrame(tick);
  });
  await page.locator('.run-view[data-run-status="succeeded"]').waitFor({ timeout: 120_000 });
  const counts = await runCounts(page);
  const perf = await page.evaluate(() => {
    const w = /** @type {any} */ (window);
    w.__perf.stop = true;
    /** @type {number[]} */
    const frames = [...w.__perf.frames].sort((x, y) => x - y);
    /** @param {number} p */
    const q = (p) => frames[Math.min(frames.length - 1, Math.floor(p * frames.length))] ?? 0;
    return { frames: frames.length, p50: q(0.5), p95: q(0.95), p99: q(0.99), max: frames.at(-1) ?? 0, longTasks: w.__perf.longTasks.length, longestTask: Math.max(0, ...w.__perf.longTasks) };
  });
  const result = { eventsApplied: counts.applied, lines: counts.lines, ...perf, when: new Date().toISOString() };
  mkdirSync(OUT, { recursive: true });
  writeFileSync(join(OUT, "performance.json"), JSON.stringify(result, null, 2));
  console.log(`run view: ${result.eventsApplied} events applied, frame p50 ${perf.p50.toFixed(1)} ms p95 ${perf.p95.toFixed(1)} ms p99 ${perf.p99.toFixed(1)} ms, ${perf.longTasks} long tasks (longest ${perf.longestTask.toFixed(0)} ms)`);
  assert.ok(counts.applied >= 1000, `at least 1,000 events applied (${counts.applied})`);
  assert.ok(perf.p95 < 50, `95% of frames within 50 ms (p95 ${perf.p95.toFixed(1)} ms)`);
  assert.ok(perf.longestTask < 200, `no task over 200 ms (longest ${perf.longestTask.toFixed(0)} ms)`);
});
