// @ts-check
// An agent's long-term memory on its page against the real stack: an agent with memory on runs a
// standalone task to success (the fake LLM answers), its page shows the entry the server stored
// ("Task: …\nResult: …"), a viewer sees it with no clear control, and the owner clears it through
// the confirm dialog: the view is empty and GetAgentMemory over REST returns no entry.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { launch, shot } from "./browser.mjs";
import { startStack } from "./stack.mjs";

/** @type {Awaited<ReturnType<typeof startStack>>} */
let stack;
/** @type {Awaited<ReturnType<typeof launch>>} */
let b;
const tag = `${Date.now().toString(36)}${Math.floor(Math.random() * 1e4)}`;
const AGENT = `rememberer-${tag}`;
const DESCRIPTION = `Tell me the answer, ${tag}.`;
const ANSWER = "The answer is 42.";
const ids = { agentId: "", taskId: "" };
let viewerKey = "";

/** @param {number} ms */
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** GetAgentMemory over REST, with the given key. @param {string} [auth] @returns {Promise<any[]>} */
async function memoryEntries(auth) {
  const r = await stack.rest("GET", `/v1/agents/${ids.agentId}/memory`, undefined, auth);
  assert.equal(r.status, 200, JSON.stringify(r.json));
  return r.json?.entries ?? [];
}

before(async () => {
  stack = await startStack({ fakeArgs: ["--text", ANSWER, "--chunk-size", "4", "--chunk-delay-ms", "10"] });
  const a = await stack.rest("POST", "/v1/agents", { name: AGENT, role: "Answerer", goal: "Answer questions", backstory: "Remembers what it answered.", memory: true });
  assert.equal(a.status, 200, `CreateAgent: ${JSON.stringify(a.json)}`);
  assert.equal(a.json.memory, true);
  ids.agentId = a.json.id;
  const t = await stack.rest("POST", "/v1/tasks", { description: DESCRIPTION, expectedOutput: "The answer", agentId: ids.agentId });
  assert.equal(t.status, 200, `CreateTask: ${JSON.stringify(t.json)}`);
  ids.taskId = t.json.id;
  // the task to success, then its memory entry (written just after the task is completed)
  const deadline = Date.now() + 90_000;
  let status = "";
  while (Date.now() < deadline) {
    const g = await stack.rest("GET", `/v1/tasks/${ids.taskId}`);
    assert.equal(g.status, 200, JSON.stringify(g.json));
    status = g.json.status;
    if (status === "TASK_STATUS_SUCCEEDED") break;
    assert.ok(!/FAILED|CANCELLED/.test(status), `task ended ${status}: ${JSON.stringify(g.json.error)}`);
    await sleep(250);
  }
  assert.equal(status, "TASK_STATUS_SUCCEEDED", "the task succeeds within 90 s");
  /** @type {any[]} */
  let entries = [];
  while (Date.now() < deadline && entries.length === 0) {
    entries = await memoryEntries();
    if (entries.length === 0) await sleep(200);
  }
  assert.equal(entries.length, 1, "one memory entry after one successful task");
  assert.equal(entries[0].taskId, ids.taskId);
  assert.equal(entries[0].summary, `Task: ${DESCRIPTION}\nResult: ${ANSWER}`);
  const k = await stack.rest("POST", "/v1/apiKeys", { name: `viewer-${tag}`, role: "ROLE_VIEWER" });
  assert.equal(k.status, 200, JSON.stringify(k.json));
  viewerKey = k.json.key;
  b = await launch();
  b.page.setDefaultTimeout(20_000);
});
after(async () => {
  await b?.close();
  const code = await stack?.stop();
  assert.equal(code, 0, "agentzd exits 0 after SIGTERM");
});

/**
 * Opens the agent's page signed in with key (the #token= of agentzd's web UI line). A goto that
 * differs only in the fragment would not load the page again, so it starts from about:blank.
 * @param {import("playwright-core").Page} page @param {string} key @param {string} role
 */
async function openAgent(page, key, role) {
  await page.goto("about:blank");
  await page.goto(`${stack.origin}/agents/${ids.agentId}#token=${key}`);
  await page.getByRole("heading", { name: AGENT }).waitFor();
  await page.locator(".role-pill").getByText(role, { exact: true }).waitFor();
}

/** The memory section of the agent page. @param {import("playwright-core").Page} page */
const memorySection = (page) => page.getByRole("region", { name: "Memory" });

test("the agent's page shows the memory entry of its task", async () => {
  const { page } = b;
  await openAgent(page, stack.token, "owner");
  const mem = memorySection(page);
  const items = mem.locator("ul.memory > li");
  await items.first().waitFor();
  assert.equal(await items.count(), 1);
  const text = (await items.first().locator("p.pre").textContent()) ?? "";
  assert.ok(text.includes(DESCRIPTION), `entry names the task: ${JSON.stringify(text)}`);
  assert.ok(text.includes(ANSWER), `entry holds the fake answer: ${JSON.stringify(text)}`);
  assert.equal(text, `Task: ${DESCRIPTION}\nResult: ${ANSWER}`);
  // the entry links to its task
  assert.equal(await items.first().getByRole("link", { name: ids.taskId.slice(0, 8) }).getAttribute("href"), `/tasks/${ids.taskId}`);
  // searching narrows it: a word the task does not have leaves none, a word it has brings it back
  const search = mem.getByRole("textbox", { name: "Search" });
  await search.fill(`nothing-${tag}`);
  await mem.getByRole("button", { name: "Search" }).click();
  await mem.getByText(`No memory entries matching "nothing-${tag}".`).waitFor();
  await search.fill(tag);
  await mem.getByRole("button", { name: "Search" }).click();
  await items.first().waitFor();
  assert.equal(await items.count(), 1);
  await search.fill("");
  await mem.getByRole("button", { name: "Search" }).click();
  await items.first().waitFor();
  assert.ok(await mem.getByRole("button", { name: "Clear memory" }).isEnabled());
  await mem.scrollIntoViewIfNeeded();
  await shot(page, "agent-memory");
});

test("a viewer sees the entry but no clear button, and the server refuses its clear", async () => {
  const { page } = b;
  await openAgent(page, viewerKey, "viewer");
  const mem = memorySection(page);
  await mem.locator("ul.memory > li").first().waitFor();
  assert.match((await mem.locator("ul.memory > li p.pre").first().textContent()) ?? "", new RegExp(ANSWER.replace(/\./g, "\\.")));
  assert.equal(await page.getByRole("button", { name: "Clear memory" }).count(), 0);
  const r = await stack.rest("POST", `/v1/agents/${ids.agentId}/memory:clear`, {}, viewerKey);
  assert.equal(r.status, 403, JSON.stringify(r.json));
  assert.equal((await memoryEntries()).length, 1, "the refused clear removed nothing");
});

test("the owner clears the memory through the confirm dialog", async () => {
  const { page } = b;
  await openAgent(page, stack.token, "owner");
  const mem = memorySection(page);
  await mem.locator("ul.memory > li").first().waitFor();
  // cancelling the dialog keeps the entry
  await mem.getByRole("button", { name: "Clear memory" }).click();
  let d = page.getByRole("dialog", { name: "Clear memory" });
  await d.getByText("Forget everything this agent remembered?").waitFor();
  await d.getByRole("button", { name: "Cancel" }).click();
  await d.waitFor({ state: "hidden" });
  assert.equal((await memoryEntries()).length, 1, "cancel removed nothing");
  assert.equal(await mem.locator("ul.memory > li").count(), 1);
  // confirming clears it
  await mem.getByRole("button", { name: "Clear memory" }).click();
  d = page.getByRole("dialog", { name: "Clear memory" });
  await d.getByRole("button", { name: "Clear memory" }).click();
  await d.waitFor({ state: "hidden" });
  await mem.getByText("No memory entries.", { exact: true }).waitFor();
  assert.equal(await mem.locator("ul.memory > li").count(), 0);
  assert.ok(await mem.getByRole("button", { name: "Clear memory" }).isDisabled(), "nothing left to clear");
  assert.deepEqual(await memoryEntries(), [], "GetAgentMemory returns no entry");
  // and a fresh load of the page agrees
  await page.reload();
  await page.getByRole("heading", { name: AGENT }).waitFor();
  await mem.getByText("No memory entries.", { exact: true }).waitFor();
  assert.deepEqual(b.problems.filter((p) => !/Failed to load resource/.test(p)), []);
});
