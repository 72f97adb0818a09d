// @ts-check
// End to end against the real stack (agentzd with the gateway, the fake LLM): create an agent
// (with a server validation error on the way), build a two-step workflow on the canvas, save a
// second version and diff it, run it and watch it finish live, and see it in analytics; then
// the admin screens. Saves a screenshot of every screen to e2e/screenshots/.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { launch, shot } from "./browser.mjs";
import { startStack } from "./stack.mjs";

/** @type {Awaited<ReturnType<typeof startStack>>} */
let stack;
/** @type {Awaited<ReturnType<typeof launch>>} */
let b;
const state = { agentId: "", workflowId: "", runId: "" };
// Names unique per run, so the suite also passes against a stack that has seen it before.
const tag = Date.now().toString(36);
const AGENT = `researcher-${tag}`;
const WF = `e2e-crew-${tag}`;

before(async () => {
  stack = await startStack();
  b = await launch();
  b.page.setDefaultTimeout(15_000);
});
after(async () => {
  await b?.close();
  const code = await stack?.stop();
  assert.equal(code, 0, "agentzd exits 0 after SIGTERM");
});

test("signs in with the #token= of agentzd's web UI line", async () => {
  const { page } = b;
  await page.goto(stack.uiUrl);
  await page.getByRole("heading", { name: "Agents" }).waitFor();
  assert.equal(new URL(page.url()).hash, "");
  await page.getByText("owner", { exact: true }).waitFor();
  await shot(page, "agents-empty");
});

test("creates an agent; a server field error is shown at its field", async () => {
  const { page } = b;
  await page.getByRole("link", { name: "New agent" }).click();
  await page.getByRole("textbox", { name: "Name" }).fill(AGENT);
  await page.getByRole("textbox", { name: "Goal" }).fill("Find facts about {topic}");
  await page.getByRole("textbox", { name: "Backstory" }).fill("A careful researcher.");
  await page.getByRole("button", { name: "Create agent" }).click();
  // role is required: the server says "agent.role is required" and the form puts it at Role
  const role = page.getByRole("textbox", { name: "Role" });
  await page.waitForFunction(() => document.querySelector('input[aria-invalid="true"]') !== null);
  assert.equal(await role.getAttribute("aria-invalid"), "true");
  assert.match((await page.locator(".field.invalid .field-error").first().textContent()) ?? "", /role/);
  await shot(page, "agent-form-error");
  await role.fill("Senior {topic} Researcher");
  await page.getByRole("checkbox", { name: "calculator" }).check();
  await page.getByRole("switch", { name: /Allow delegation/ }).check();
  await page.getByRole("button", { name: "Create agent" }).click();
  await page.waitForURL((u) => /^\/agents\/[^/]+$/.test(u.pathname) && u.pathname !== "/agents/new");
  state.agentId = page.url().split("/").pop() ?? "";
  await page.getByRole("heading", { name: AGENT }).waitFor();
  await page.getByText("idle").first().waitFor();
  await shot(page, "agent-detail");
  await page.getByRole("link", { name: "Agents" }).click();
  await page.locator(`tr[data-agent="${state.agentId}"]`).waitFor();
  await shot(page, "agents");
});

test("builds a two-step workflow on the canvas and saves it", async () => {
  const { page } = b;
  await page.goto(new URL("/workflows/new", stack.origin).toString());
  await page.getByRole("region", { name: "Workflow canvas" }).waitFor();
  const item = page.locator(`.palette-item[data-agent="${state.agentId}"]`);
  const canvas = page.locator(".canvas");
  // drag the agent onto the canvas twice: two steps
  await item.dragTo(canvas, { targetPosition: { x: 120, y: 120 } });
  await page.locator(".step-node").first().waitFor();
  await page.getByRole("textbox", { name: "Description" }).fill("Research {topic} and list three facts.");
  await page.getByRole("textbox", { name: "Expected output" }).fill("Three facts");
  await item.dragTo(canvas, { targetPosition: { x: 520, y: 160 } });
  await page.waitForFunction(() => document.querySelectorAll(".step-node").length === 2);
  await page.getByRole("textbox", { name: "Step id" }).fill("write");
  await page.getByRole("textbox", { name: "Step id" }).blur();
  await page.getByRole("textbox", { name: "Description" }).fill("Write a paragraph from the facts.");
  await page.getByRole("textbox", { name: "Expected output" }).fill("A paragraph");
  // draw the dependency: from the first step's right handle to the second step's left handle
  const first = page.locator(".step-node").first();
  const ids = await page.locator(".step-node").evaluateAll((els) => els.map((e) => e.getAttribute("data-step")));
  assert.equal(ids.length, 2);
  await first.locator(".react-flow__handle-right").dragTo(page.locator('.step-node[data-step="write"] .react-flow__handle-left'));
  await page.locator(".react-flow__edge").first().waitFor();
  // workflow settings: name, inputs from the placeholders
  await page.getByRole("tab", { name: "Workflow" }).click();
  await page.getByRole("textbox", { name: "Name" }).fill(WF);
  await page.getByRole("button", { name: /Add inputs used as/ }).click();
  assert.equal(await page.getByRole("textbox", { name: "input 1 name" }).inputValue(), "topic");
  await page.getByRole("textbox", { name: "input 1 default" }).fill("octopuses");
  await shot(page, "builder");
  await page.getByRole("button", { name: "Create workflow" }).click();
  await page.waitForURL((u) => /^\/workflows\/[^/]+$/.test(u.pathname) && u.pathname !== "/workflows/new");
  state.workflowId = page.url().split("/").pop() ?? "";
  await page.getByRole("heading", { name: `${WF} · v1` }).waitFor();
  // the saved graph has both steps and the edge
  await page.waitForFunction(() => document.querySelectorAll(".step-node").length === 2 && document.querySelectorAll(".react-flow__edge").length === 1);
});

test("saves a second version and shows the difference", async () => {
  const { page } = b;
  await page.getByRole("combobox", { name: "Process" }).selectOption({ label: "parallel (DAG)" });
  await page.getByRole("button", { name: "Save as new version" }).click();
  await page.getByRole("heading", { name: `${WF} · v2` }).waitFor();
  await page.getByRole("link", { name: "Versions" }).click();
  await page.getByTestId("diff").waitFor();
  const diff = (await page.getByTestId("diff").textContent()) ?? "";
  assert.match(diff, /process/);
  assert.match(diff, /PROCESS_SEQUENTIAL/);
  assert.match(diff, /PROCESS_PARALLEL/);
  assert.match(diff, /dependsOn/);
  await shot(page, "versions");
});

test("runs the workflow and watches it finish live", async () => {
  const { page } = b;
  await page.goto(new URL(`/workflows/${state.workflowId}`, stack.origin).toString());
  await page.getByRole("button", { name: "Run" }).click();
  await page.getByRole("textbox", { name: /topic/ }).waitFor();
  await page.getByRole("button", { name: "Start run" }).click();
  await page.waitForURL(/\/runs\/[^/]+$/);
  state.runId = page.url().split("/").pop() ?? "";
  // live: the first step streams tokens before the run is done
  await page.locator('.step-live[data-status="running"]').first().waitFor({ timeout: 60_000 });
  await shot(page, "run-live");
  await page.locator('.run-view[data-run-status="succeeded"]').waitFor({ timeout: 120_000 });
  for (const s of await page.locator(".step-live").all()) assert.equal(await s.getAttribute("data-status"), "succeeded");
  await page.getByTestId("run-output").waitFor();
  assert.match((await page.getByTestId("run-output").textContent()) ?? "", /The answer is 42/);
  const seqs = await page.locator(".event[data-seq]").evaluateAll((els) => els.map((e) => e.getAttribute("data-seq")).filter((s) => s !== "0"));
  assert.equal(new Set(seqs).size, seqs.length, "no event line twice");
  assert.equal(await page.getByTestId("run-progress").textContent(), "2/2 steps");
  await page.waitForTimeout(400); // let the progress bars' transitions end before the picture
  await shot(page, "run-done");
});

test("the run is in the runs list, the tasks, and analytics", async () => {
  const { page } = b;
  await page.getByRole("link", { name: "Runs" }).first().click();
  await page.getByRole("link", { name: state.runId.slice(0, 8) }).waitFor();
  await shot(page, "runs");
  await page.getByRole("link", { name: "Tasks" }).click();
  await page.getByRole("table").waitFor();
  await shot(page, "tasks");
  await page.locator("tbody tr a").first().click();
  await page.getByTestId("task-output").waitFor();
  await shot(page, "task-detail");
  await page.goto(new URL(`/analytics?workflow=${state.workflowId}&agent=${state.agentId}&window=24h`, stack.origin).toString());
  const stats = page.getByTestId("workflow-stats");
  await stats.waitFor();
  await page.waitForFunction(() => /1\s*runs/.test(document.querySelector('[data-testid="workflow-stats"]')?.textContent ?? ""));
  assert.match((await stats.textContent()) ?? "", /100\.0%\s*success rate/);
  await page.locator(".chart canvas").first().waitFor();
  await shot(page, "analytics");
  await page.getByRole("link", { name: "System" }).click();
  await page.getByTestId("system-stats").waitFor({ timeout: 20_000 });
  assert.match((await page.getByTestId("system-stats").textContent()) ?? "", /okPostgreSQL/);
  await shot(page, "system");
});

test("admin screens: API keys, audit log, secrets that are never shown back", async () => {
  const { page } = b;
  await page.getByRole("link", { name: "Secrets" }).click();
  await page.getByRole("textbox", { name: "Name" }).fill(`openai-key-${tag}`);
  await page.getByLabel("Value").fill("sk-not-a-real-key");
  await page.getByRole("button", { name: "Save secret" }).click();
  await page.getByText(`Stored openai-key-${tag}.`).waitFor();
  assert.equal(await page.getByText("sk-not-a-real-key").count(), 0, "the value is never shown");
  await shot(page, "secrets");
  await page.getByRole("link", { name: "API keys" }).click();
  await page.getByRole("button", { name: "New key" }).click();
  await page.getByRole("dialog").getByRole("textbox", { name: "Name" }).fill(`ci-viewer-${tag}`);
  await page.getByRole("button", { name: "Create key" }).click();
  await page.getByTestId("new-key").waitFor();
  assert.match((await page.getByTestId("new-key").textContent()) ?? "", /^agz_/);
  await page.keyboard.press("Escape");
  await page.getByRole("cell", { name: `ci-viewer-${tag}` }).waitFor();
  await shot(page, "api-keys");
  await page.getByRole("link", { name: "Audit log" }).click();
  await page.getByRole("cell", { name: /CreateAgent/ }).first().waitFor();
  await shot(page, "audit");
});

test("workflow list, templates, and CrewAI export", async () => {
  const { page } = b;
  await page.getByRole("link", { name: "Workflows" }).click();
  await page.getByRole("link", { name: WF }).waitFor();
  await shot(page, "workflows");
  await page.getByRole("row", { name: new RegExp(WF) }).getByRole("button", { name: "Export CrewAI" }).click();
  const dialog = page.getByRole("dialog");
  await dialog.getByText("config/agents.yaml").waitFor();
  assert.match((await dialog.textContent()) ?? "", new RegExp(`${AGENT}:`));
  await shot(page, "crewai-export");
  await page.keyboard.press("Escape");
});

test("dark theme and a phone width", async () => {
  const { page } = b;
  await page.getByRole("combobox", { name: "Theme" }).selectOption("dark");
  await page.goto(new URL(`/runs/${state.runId}`, stack.origin).toString());
  await page.locator('.run-view[data-run-status="succeeded"]').waitFor();
  await shot(page, "run-dark");
  await page.setViewportSize({ width: 375, height: 812 });
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth);
  assert.ok(overflow <= 0, `no horizontal scroll at 375 px (overflow ${overflow})`);
  await page.getByRole("button", { name: "Menu" }).click();
  await page.getByRole("link", { name: "Agents" }).waitFor();
  await shot(page, "phone");
  await page.setViewportSize({ width: 1280, height: 800 });
  assert.deepEqual(b.problems.filter((p) => !/Failed to load resource/.test(p)), []);
});
