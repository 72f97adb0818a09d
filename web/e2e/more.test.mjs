// @ts-check
// The rest of the screens against the real stack: a CrewAI crew imported in the UI
// (the CLI's own fixture; importing it again returns the same objects), a template
// instantiated, a standalone task created and watched, and a run cancelled and resumed.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { launch, ROOT, shot } from "./browser.mjs";
import { makeWorkflow, startRun } from "./fixtures.mjs";
import { startStack } from "./stack.mjs";

/** @type {Awaited<ReturnType<typeof startStack>>} */
let stack;
/** @type {Awaited<ReturnType<typeof launch>>} */
let b;
const tag = Date.now().toString(36);

before(async () => {
  // answers slow enough (about 2 s a step) to cancel a run while it goes
  stack = await startStack({ fakeArgs: ["--text", "The answer is 42. ".repeat(25), "--chunk-size", "4", "--chunk-delay-ms", "18"] });
  b = await launch();
  b.page.setDefaultTimeout(20_000);
  await b.page.goto(stack.uiUrl);
  await b.page.getByRole("heading", { name: "Agents" }).waitFor();
});
after(async () => {
  await b?.close();
  await stack?.stop();
});

test("imports a CrewAI crew with its warnings; the same files again give the same workflow", async () => {
  const dir = join(ROOT, "tests/unit/fixtures/crewai/latest_ai_development/src/latest_ai_development/config");
  const agents = readFileSync(join(dir, "agents.yaml"), "utf8");
  const tasks = readFileSync(join(dir, "tasks.yaml"), "utf8");
  const { page } = b;
  /** @returns {Promise<string>} the workflow id the import lands on */
  const importOnce = async () => {
    await page.goto(new URL("/workflows", stack.origin).toString());
    await page.getByRole("button", { name: "Import CrewAI" }).click();
    const d = page.getByRole("dialog");
    await d.getByRole("textbox", { name: "agents.yaml text" }).fill(agents);
    await d.getByRole("textbox", { name: "tasks.yaml text" }).fill(tasks);
    await d.getByRole("textbox", { name: /Project \(directory\) name/ }).fill("latest_ai_development");
    await d.getByRole("textbox", { name: /Workflow name/ }).fill(`ai-news-${tag}`);
    await d.getByRole("button", { name: "Preview" }).click();
    await d.getByText("2 agents, 2 steps, process sequential, inputs: topic, current_year").waitFor();
    const warnings = await d.locator(".warnings li").allTextContents();
    assert.deepEqual(warnings, [
      "tasks.yaml: task reporting_task: output_file is not supported (read the step's output from the run instead); ignored",
      "agents.yaml: agent researcher: tool SerperDevTool has no AGENTZ equivalent (http_fetch, current_time, calculator); dropped",
    ]);
    await shot(page, "crewai-import");
    await d.getByRole("button", { name: "Import", exact: true }).click();
    await page.waitForURL((u) => /^\/workflows\/[^/]+$/.test(u.pathname) && u.pathname !== "/workflows/new");
    await page.getByRole("heading", { name: `ai-news-${tag} · v1` }).waitFor();
    return page.url().split("/").pop() ?? "";
  };
  const first = await importOnce();
  await page.waitForFunction(() => document.querySelectorAll(".step-node").length === 2);
  assert.deepEqual(await page.locator(".step-node").evaluateAll((e) => e.map((x) => x.getAttribute("data-step"))), ["research_task", "reporting_task"]);
  await page.getByRole("link", { name: "Agents" }).click();
  await page.getByRole("link", { name: `ai-news-${tag}/researcher` }).waitFor();
  const second = await importOnce();
  assert.equal(second, first, "the same import returns the workflow created the first time");
});

test("the builder shows the server's error on the step it names", async () => {
  const { page } = b;
  await page.goto(new URL("/workflows", stack.origin).toString());
  await page.getByRole("link", { name: `ai-news-${tag}` }).click();
  await page.waitForFunction(() => document.querySelectorAll(".step-node").length === 2);
  // drop the declared inputs: the steps' {topic} placeholders are then undeclared
  await page.getByRole("button", { name: "remove input topic" }).click();
  await page.getByRole("button", { name: "remove input current_year" }).click();
  await page.getByRole("button", { name: "Save as new version" }).click();
  const err = page.getByTestId("save-error");
  await err.waitFor();
  assert.match((await err.textContent()) ?? "", /^INVALID_ARGUMENT: workflow\.steps\[0\] \("research_task"\)\.description: placeholder \{topic\} is not declared in inputs/);
  await page.locator('.step-node.has-issue[data-step="research_task"]').waitFor();
  await shot(page, "builder-error");
});

test("instantiates a built-in template", async () => {
  const { page } = b;
  await page.goto(new URL("/workflows", stack.origin).toString());
  const card = page.locator(".card", { hasText: "research-write-review" });
  await card.getByRole("button", { name: "Use template" }).click();
  await page.getByRole("dialog").getByRole("textbox", { name: "Workflow name" }).fill(`team-${tag}`);
  await page.getByRole("button", { name: "Create agents and workflow" }).click();
  await page.getByRole("heading", { name: `team-${tag} · v1` }).waitFor();
  await page.waitForFunction(() => document.querySelectorAll(".step-node").length === 3);
});

test("creates a standalone task with a retry policy and watches it to its output", async () => {
  const { page } = b;
  await page.goto(new URL("/tasks", stack.origin).toString());
  await page.getByRole("button", { name: "New task" }).click();
  const d = page.getByRole("dialog");
  await d.getByRole("textbox", { name: "Description" }).fill("Say the answer.");
  await d.getByRole("textbox", { name: "Expected output" }).fill("The answer");
  await d.getByRole("combobox", { name: "Agent" }).selectOption({ index: 1 });
  await d.getByRole("textbox", { name: "Max attempts" }).fill("3");
  await d.getByRole("textbox", { name: "Initial backoff" }).fill("2s");
  await d.getByRole("button", { name: "Create task" }).click();
  await page.waitForURL(/\/tasks\/[^/]+$/);
  await page.getByTestId("task-output").waitFor({ timeout: 60_000 });
  assert.match((await page.getByTestId("task-output").textContent()) ?? "", /The answer is 42/);
  assert.match((await page.locator(".kv").textContent()) ?? "", /initial 2\.00 s, ×2, max .*, 3 attempts/);
  await page.getByRole("cell", { name: "1", exact: true }).first().waitFor();
  await shot(page, "task-created");
});

test("cancels a run, then resumes it to success", async () => {
  const { workflowId } = await makeWorkflow(stack, { name: "cancel", steps: 3 });
  const runId = await startRun(stack, workflowId);
  const { page } = b;
  await page.goto(new URL(`/runs/${runId}`, stack.origin).toString());
  await page.locator('.step-live[data-status="running"]').first().waitFor({ timeout: 60_000 });
  await page.getByRole("button", { name: "Cancel run" }).click();
  await page.locator('.run-view[data-run-status="cancelled"]').waitFor();
  await shot(page, "run-cancelled");
  await page.getByRole("button", { name: "Resume" }).click();
  await page.locator('.run-view[data-run-status="succeeded"]').waitFor({ timeout: 120_000 });
  for (const s of await page.locator(".step-live").all()) assert.equal(await s.getAttribute("data-status"), "succeeded");
});
