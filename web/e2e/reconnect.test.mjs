// @ts-check
// The live run view survives a dropped connection and a page reload: it resumes by sequence and
// ends with exactly the event lines a fresh page (a replay from sequence 0) shows, none twice.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { launch, shot } from "./browser.mjs";
import { makeWorkflow, runCounts, startRun } from "./fixtures.mjs";
import { startStack } from "./stack.mjs";
import { tcpProxy } from "./tcp-proxy.mjs";

/** @type {Awaited<ReturnType<typeof startStack>>} */
let stack;
/** @type {Awaited<ReturnType<typeof launch>>} */
let b;
/** @type {Awaited<ReturnType<typeof tcpProxy>>} */
let proxy;

before(async () => {
  // Slow answers (600 characters, 4 per chunk, 25 ms apart: about 4 s a step) so the run is
  // still going while the connection drops.
  stack = await startStack({ fakeArgs: ["--text", "word ".repeat(120), "--chunk-size", "4", "--chunk-delay-ms", "25"] });
  // The browser reaches the gateway through a relay the test can cut.
  proxy = await tcpProxy(stack.origin);
  b = await launch();
  b.page.setDefaultTimeout(20_000);
  await b.page.goto(`${proxy.origin}/#token=${stack.token}`);
  await b.page.getByRole("heading", { name: "Agents" }).waitFor();
});
after(async () => {
  await b?.close();
  await proxy?.close();
  await stack?.stop();
});

/** Every line's sequence in the store, read from the virtualised list by scrolling it. @param {import("playwright-core").Page} page */
async function allSequences(page) {
  return page.evaluate(async () => {
    const list = /** @type {HTMLElement} */ (document.querySelector(".vlist"));
    const seen = new Map();
    list.scrollTop = 0;
    for (;;) {
      await new Promise((r) => requestAnimationFrame(() => r(null)));
      for (const el of list.querySelectorAll(".event[data-seq]")) {
        const s = el.getAttribute("data-seq") ?? "0";
        if (s !== "0") seen.set(s, (seen.get(s) ?? 0) + 1);
      }
      if (list.scrollTop + list.clientHeight >= list.scrollHeight - 1) break;
      list.scrollTop += list.clientHeight;
    }
    return [...seen.keys()].map(Number);
  });
}

test("a dropped connection reconnects and resumes by sequence, no line twice", async () => {
  const { workflowId } = await makeWorkflow(stack, { name: "reconnect", steps: 3 });
  const runId = await startRun(stack, workflowId);
  const { page } = b;
  await page.goto(new URL(`/runs/${runId}`, proxy.origin).toString());
  await page.locator('.step-live[data-status="running"]').first().waitFor({ timeout: 60_000 });
  // the snapshot can show a running step before the watch is open: wait for its first event
  await page.locator('.stream[data-phase="live"]').waitFor();
  assert.ok(proxy.dropAll() > 0, "the page had a connection open");
  await page.waitForFunction(() => {
    const s = document.querySelector(".stream");
    const phase = s?.getAttribute("data-phase");
    return phase === "reconnecting" || phase === "failed" || Number(s?.getAttribute("data-reconnects")) >= 1;
  });
  assert.notEqual(await page.locator(".stream").getAttribute("data-phase"), "failed", (await page.locator(".stream").textContent()) ?? "");
  await shot(page, "run-reconnecting");
  // and once more while it is reconnecting or just back
  proxy.dropAll();
  await page.locator('.run-view[data-run-status="succeeded"]').waitFor({ timeout: 120_000 });
  assert.ok(Number(await page.locator(".stream").getAttribute("data-reconnects")) >= 1, "the stream was reopened");
  const live = await runCounts(page);
  const liveSeqs = await allSequences(page);
  // a fresh page replays the whole history from sequence 0
  await page.reload();
  await page.locator('.run-view[data-run-status="succeeded"]').waitFor({ timeout: 30_000 });
  await page.locator('.stream[data-phase="ended"]').waitFor();
  const fresh = await runCounts(page);
  const freshSeqs = await allSequences(page);
  assert.equal(live.lines, fresh.lines, "as many lines as a replay from 0");
  assert.deepEqual(liveSeqs, freshSeqs);
  assert.deepEqual(freshSeqs, [...freshSeqs].sort((x, y) => x - y), "in sequence order");
  assert.equal(new Set(freshSeqs).size, freshSeqs.length);
});

test("a reload in the middle of a run picks the run up again", async () => {
  const { workflowId } = await makeWorkflow(stack, { name: "reload", steps: 3 });
  const runId = await startRun(stack, workflowId);
  const { page } = b;
  await page.goto(new URL(`/runs/${runId}`, proxy.origin).toString());
  await page.locator('.step-live[data-step="s2"][data-status="running"]').waitFor({ timeout: 60_000 });
  await page.reload();
  // after the reload: s1 is still shown finished (no step moves back), s2 continues live
  await page.locator('.step-live[data-step="s1"][data-status="succeeded"]').waitFor({ timeout: 10_000 });
  await page.locator('.run-view[data-run-status="succeeded"]').waitFor({ timeout: 120_000 });
  const seqs = await allSequences(page);
  assert.equal(new Set(seqs).size, seqs.length, "no line twice");
  assert.deepEqual(seqs, seqs.map((_, i) => i + 1), "every durable event from 1 on, none missing");
});
